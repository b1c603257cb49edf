#!/usr/bin/env bash
# What an attacker costs a release ting and the meeting beside it. Starts ting on one
# core with systemd's default file-descriptor soft limit (1024), a 10-person ting-bench
# meeting, and one ting-attack kind against it; samples ting's memory, file descriptors and
# /healthz (from another loopback address) every half second; prints one line of figures.
# Runs in a network namespace of its own (only loopback) when started as root.
#
# Usage: scripts/attack.sh KIND [COUNT] [SECONDS]   one attack (see ting-attack --help)
#        scripts/attack.sh sigterm                   stop ting during a meeting
#        scripts/attack.sh join-leave 10000 900      a soak: join/offer/leave cycles
#        scripts/attack.sh all                       every attack at the scale of the table
#                                                    in docs/reliability.md
# TING_BIN=path/to/ting attacks another build (to compare before and after a change);
# TING_ARGS adds flags to ting, ATTACK_ARGS to ting-attack (e.g. ATTACK_ARGS="--mlines 250").
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${TING_ATTACK_NETNS:-}" != 1 ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null \
  && command -v ip >/dev/null; then
  exec unshare --net env TING_ATTACK_NETNS=1 bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
fi

kind=${1:?usage: scripts/attack.sh KIND [COUNT] [SECONDS] | sigterm | all}
if [ "$kind" = all ]; then
  for spec in "ping-flood 4 20" "never-read 10 30" "huge-offers 2 20" "idle-tcp 996 20" \
              "idle-ws 5000 40" "slowloris 3000 61" "rooms 1000 20" "sigterm"; do
    # shellcheck disable=SC2086
    "$0" $spec
  done
  exit 0
fi
count=${2:-10}
seconds=${3:-20}

cargo build --locked --release -p ting-server -p ting-bench >&2
ting_bin=${TING_BIN:-target/release/ting}
out="target/attack/$kind"
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # the attacker's own sockets

pin_server=(); pin_clients=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_server=(taskset -c 1); pin_clients=(taskset -c 0)
fi
( ulimit -Sn 1024; exec "${pin_server[@]}" "$ting_bin" --http-listen 127.0.0.1:0 \
    --media-port 0 --media-workers 1 ${TING_ARGS:-} >"$out/ting.out" 2>"$out/ting.log" ) &
ting=$!
cleanup() { kill "$ting" 2>/dev/null || true; wait "$ting" 2>/dev/null || true; }
trap cleanup EXIT
url=
for _ in $(seq 1 100); do
  url=$(grep -o 'http://[0-9.:]*' "$out/ting.out" 2>/dev/null | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "ting did not start; see $out/ting.log" >&2; exit 1; }

health() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 --interface 127.0.0.2 "$url/$1" || true; }
participants() { curl -s --max-time 2 --interface 127.0.0.2 "$url/readyz" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin).get("participants",0))' 2>/dev/null || echo 0; }

meeting_secs=$((seconds + 10))
if [ "$kind" = join-leave ]; then meeting_secs=20; fi
[ "$kind" = sigterm ] && meeting_secs=60
"${pin_clients[@]}" target/release/ting-bench meeting --target "$url" --participants 10 \
  --duration "$meeting_secs" --ramp 10 --room meeting --max-loss 100 -q \
  --json "$out/meeting.json" >"$out/meeting.log" 2>&1 &
bench=$!
for _ in $(seq 1 300); do
  [ "$(participants)" -ge 10 ] && break
  sleep 0.1
done
sleep 2   # media flowing before the attack

rss0=$(awk '/VmRSS/{print $2}' "/proc/$ting/status")
fds0=$(find "/proc/$ting/fd" -mindepth 1 2>/dev/null | wc -l)
threads0=$(find "/proc/$ting/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
peak_rss=$rss0; peak_fds=$fds0; checks=0; failed=0

sample() {
  local rss fds code
  rss=$(awk '/VmRSS/{print $2}' "/proc/$ting/status" 2>/dev/null || echo 0)
  fds=$(find "/proc/$ting/fd" -mindepth 1 2>/dev/null | wc -l)
  [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
  [ "$fds" -gt "$peak_fds" ] && peak_fds=$fds
  code=$(health healthz)
  checks=$((checks + 1))
  [ "$code" = 200 ] || failed=$((failed + 1))
}

if [ "$kind" = sigterm ]; then
  "${pin_clients[@]}" target/release/ting-attack slowloris --target "$url" --count 1 \
    --duration 60 >"$out/attack.json" &
  attack=$!
  sleep 1
  started=$(date +%s.%N)
  kill -TERM "$ting"
  ready503=
  while kill -0 "$ting" 2>/dev/null; do
    if [ -z "$ready503" ] && [ "$(health readyz)" = 503 ]; then
      ready503=$(python3 -c "import time; print(round(time.time() - $started, 2))")
    fi
    now=$(python3 -c "import time; print(time.time() - $started)")
    python3 -c "import sys; sys.exit(0 if $now < 60 else 1)" || break
    sleep 0.1
  done
  gone=$(python3 -c "import time; print(round(time.time() - $started, 2))")
  alive=no; kill -0 "$ting" 2>/dev/null && alive=yes
  kill "$attack" "$bench" 2>/dev/null || true
  wait "$attack" "$bench" 2>/dev/null || true
  echo "sigterm: /readyz 503 after ${ready503:-never} s; process gone after ${gone} s (still alive at 60 s: $alive)"
  exit 0
fi

"${pin_clients[@]}" target/release/ting-attack "$kind" --target "$url" --count "$count" \
  --duration "$seconds" --room meeting ${ATTACK_ARGS:-} >"$out/attack.json" 2>"$out/attack.log" &
attack=$!
while kill -0 "$attack" 2>/dev/null; do
  sample
  sleep 0.5
done
wait "$attack" || true
# What remains after the attack ends.
sleep 2
sample
rss_after=$(awk '/VmRSS/{print $2}' "/proc/$ting/status" 2>/dev/null || echo 0)
fds_after=$(find "/proc/$ting/fd" -mindepth 1 2>/dev/null | wc -l)
threads_after=$(find "/proc/$ting/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
wait "$bench" || true
python3 - "$out" "$kind" "$count" "$seconds" "$rss0" "$peak_rss" "$rss_after" "$fds0" \
  "$peak_fds" "$fds_after" "$checks" "$failed" "$threads0" "$threads_after" <<'EOF'
import json, sys
(out, kind, count, seconds, rss0, peak, after, fds0, peak_fds, fds_after, checks, failed,
 threads0, threads_after) = sys.argv[1:]
try:
    m = json.load(open(f"{out}/meeting.json"))
    loss = f"{100 * m['loss_ratio']:.2f} %"
    p99 = f"{m['latency_ms']['p99']:.0f} ms"
    nomedia = sum(1 for f in m.get("failures", []) if "no media" in f)
except Exception as e:  # a meeting that did not finish is the finding
    loss, p99, nomedia = f"meeting report missing ({e.__class__.__name__})", "-", "-"
try:
    a = json.loads(open(f"{out}/attack.json").read().strip().splitlines()[-1])
except Exception:
    a = {}
mb = lambda kb: int(kb) / 1024
print(f"{kind} x{count} for {seconds} s: meeting loss {loss}, p99 {p99}; "
      f"ting RSS {mb(rss0):.0f} -> peak {mb(peak):.0f} -> {mb(after):.0f} MB after; "
      f"fds {fds0} -> peak {peak_fds} -> {fds_after}; threads {threads0} -> {threads_after}; "
      f"/healthz failed {failed} of {checks}; "
      f"attack: opened {a.get('opened')}, refused {a.get('refused_or_failed')}, "
      f"closed by server {a.get('closed_by_server')} (median {a.get('closed_median_s')} s), "
      f"welcomed {a.get('welcomed')}, answered {a.get('answered')}, "
      f"reply median {a.get('reply_median_ms')} ms, errors {a.get('errors')}")
EOF
