#!/usr/bin/env bash
# Runs every test of ting, the way CI does:
#   1. the gate: formatting and clippy with warnings as errors;
#   2. the Rust tests: unit tests, the virtual-time meeting of 50, the end-to-end tests
#      against a real server over loopback UDP;
#   3. str0m's, dimpl's and tungstenite's own unit tests, run against the patched copies in
#      crates/patched/;
#   4. the browser tests in headless Chromium through the real web client: three pages
#      meet (meeting), four pages with simulcast get the layers their tiles call for and
#      pause what nobody watches (layers), one page copes with a room of 250 (crowd),
#      join links, the lobby, removing, locking and chat in a room closed to all but
#      token holders, with nothing of the chat in the store (control), a page that
#      reloads or loses its socket comes back as the same participant (reconnect), a page
#      in a network namespace whose network is cut for 10 s and whose address changes
#      comes back on the same connection (network; needs root, as no-egress does); an
#      aiortc client written from docs/protocol.md and a Chromium page decode each
#      other's camera and the page its screen share, an aiortc WHIP publisher shows in the
#      page's meeting and an aiortc WHEP viewer follows the active speaker, and GStreamer's
#      webrtcbin publishes (WHIP) and watches (WHEP) from a network namespace (interop;
#      root); two clients on aiortc, an independent WebRTC stack, meet through ting using
#      nothing but docs/protocol.md (tests/interop/meeting.py), and publish and watch over
#      WHIP and WHEP (tests/interop/whip.py);
#   5. every fuzz target for 10 s from its seeds (scripts/fuzz.sh; longer runs by hand), and
#      a meeting served from a network namespace with only loopback, under strace, that
#      must show no connection or send anywhere but to its clients (scripts/no-egress.sh);
#   6. a short ting-bench run against a real ting (report and plot included), and a meeting
#      of 100 simulated participants against a release build for 20 s, which fails on a
#      missing join or media, loss above 0.5 %, or more than a quarter of the publishers
#      still sending a camera layer at the end (pausing).
# It installs what the tests need when it is missing (Debian's chromium, strace, iproute2,
# python3-venv and GStreamer with webrtcbin, playwright-core from npm, aiortc from PyPI
# into tests/interop/.venv,
# cargo-fuzz from crates.io); it never downloads a browser of its
# own. It runs as root (network namespaces, a raw socket in tests/spoof.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

# Debian packages, from the package lists as they are or, failing that, refreshed ones.
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y "$@" ||
    { as_root apt-get -o DPkg::Lock::Timeout=600 update &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y "$@"; }
}

if ! command -v chromium >/dev/null 2>&1; then
  step "installing Debian's chromium"
  apt_install chromium
fi
if ! command -v strace >/dev/null 2>&1; then
  step "installing strace"
  apt_install strace
fi
if ! command -v ip >/dev/null 2>&1; then
  step "installing iproute2"
  apt_install iproute2
fi
if ! command -v python3 >/dev/null 2>&1; then
  step "installing python3"
  apt_install python3
fi
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  step "installing python3-venv"
  apt_install python3-venv
fi
if ! tests/interop/.venv/bin/python -c 'import aiortc, websockets, numpy' >/dev/null 2>&1; then
  step "installing aiortc for the interop tests (tests/interop/.venv, from PyPI)"
  rm -rf tests/interop/.venv
  python3 -m venv tests/interop/.venv
  tests/interop/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
fi
if ! /usr/bin/python3 -c 'import gi; gi.require_version("GstWebRTC", "1.0"); from gi.repository import GstWebRTC' >/dev/null 2>&1 ||
  ! command -v gst-inspect-1.0 >/dev/null 2>&1 || ! gst-inspect-1.0 vp8enc >/dev/null 2>&1 ||
  ! gst-inspect-1.0 nicesrc >/dev/null 2>&1; then
  step "installing GStreamer's webrtcbin for the interop tests (Debian packages)"
  apt_install --no-install-recommends gstreamer1.0-plugins-bad gstreamer1.0-plugins-good gstreamer1.0-plugins-base \
    gstreamer1.0-nice gstreamer1.0-tools python3-gst-1.0 gir1.2-gst-plugins-bad-1.0
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  step "installing playwright-core (no browser download)"
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --locked --workspace --lib --bins --tests

step "str0m's own unit tests against the patched copy"
scripts/test-str0m.sh

step "dimpl's own unit tests against the patched copy"
scripts/test-patched.sh dimpl

step "tungstenite's own unit tests against the patched copy"
scripts/test-patched.sh tungstenite

step "end-to-end encryption: the web client's frame format and key exchange (Node)"
node --test tests/browser/e2ee-frame.test.mjs

step "browser tests"
cargo build --locked -p ting-server
for t in meeting layers crowd control reconnect network interop e2ee; do
  TING_BIN="$PWD/target/debug/ting" node "tests/browser/$t.test.mjs"
done

step "interop: two aiortc clients meet through ting by docs/protocol.md alone"
tests/interop/.venv/bin/python tests/interop/meeting.py "$PWD/target/debug/ting"
step "interop: aiortc publishes over WHIP and watches over WHEP"
tests/interop/.venv/bin/python tests/interop/whip.py "$PWD/target/debug/ting"

step "fuzz targets, 10 s each"
scripts/fuzz.sh 10

step "no egress: ting in a namespace with only loopback, every connect and send traced"
scripts/no-egress.sh

step "ting-bench smoke run"
scripts/bench-smoke.sh

step "bench-ab's paired statistics (a run that died counts as no figure, not as zero)"
python3 scripts/ab-stats.py --self-test

step "ting-bench: a meeting of 100 (release build, 20 s)"
scripts/bench-meeting.sh 100 20
# Pausing, end to end: in speaker view (one large tile, nine thumbnails) each layer is
# wanted from a few publishers only; the rest must have been told to stop sending it.
python3 -c "
import json
r = json.load(open('target/bench-meeting/report.json'))
n, sending = r['camera_publishers'], r['camera_layers_sending_at_end']
assert n == 100, r['camera_publishers']
assert all(k <= n // 4 for k in sending), ('layers nobody watches still sent upstream', sending, n)
print('publishers sending camera layers at the end (low / mid / top): %d / %d / %d of %d' % (*sending, n))
"

step "all tests passed"
