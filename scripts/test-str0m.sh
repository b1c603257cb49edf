#!/usr/bin/env bash
# Runs str0m's own unit tests (888, in its sources) against ting's patched copy in
# crates/patched/str0m, plus the tests the patches add. The workspace builds str0m as a
# dependency, which never compiles its tests; this builds it on its own, with the
# dev-dependencies those tests use, in target/str0m-tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=target/str0m-tests
rm -rf "$dir/crate"
mkdir -p "$dir/crate"
cp -r crates/patched/str0m/src crates/patched/str0m/docs "$dir/crate/"
# The published manifest, less the crypto back-ends ting does not build (their crates need
# not be in the registry) and with the unit tests' dev-dependencies.
python3 - crates/patched/str0m/Cargo.toml "$dir/crate/Cargo.toml" "$root" <<'PY'
import sys
src, dst = sys.argv[1], sys.argv[2]
out, skip, in_list = [], False, False
backends = ("openssl", "rust-crypto", "apple-crypto", "wincrypto", "vendored")
for line in open(src).read().splitlines():
    if in_list:
        in_list = line.strip() != "]"
        continue
    if line.startswith("[target."):
        skip = True
    elif line.startswith("["):
        skip = False
    if skip:
        continue
    name = line.split("=")[0].strip()
    if any(b in name for b in backends):
        in_list = line.rstrip().endswith("[")
        continue
    out.append(line)
text = "\n".join(out)
text += """

[dev-dependencies]
serde_json = "1"
systemstat = "0.2.2"
tracing-subscriber = { version = "0.3.16", features = ["env-filter"] }

[patch.crates-io]
dimpl = { path = "%s/crates/patched/dimpl" }

[workspace]
""" % sys.argv[3]
open(dst, "w").write(text)
PY
cp Cargo.lock "$dir/crate/Cargo.lock"
cd "$dir/crate"
# (Warnings about cfgs of the removed back-ends are left out of the output.)
CARGO_TARGET_DIR="$root/$dir/target" cargo test --lib -q "$@" 2>&1 |
  { grep -v "^warning\|^ *|\|^ *=\|^$" || true; }
