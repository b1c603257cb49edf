#!/usr/bin/env bash
# Runs tungstenite's own unit tests (in its sources) against ting's patched copy in
# crates/patched/tungstenite, with the test its patch adds. The workspace builds tungstenite
# as a dependency, which never compiles its tests; this builds it on its own, with the
# dev-dependencies those tests use, in target/tungstenite-tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=target/tungstenite-tests
rm -rf "$dir/crate"
mkdir -p "$dir/crate"
cp -r crates/patched/tungstenite/src "$dir/crate/"
cp crates/patched/tungstenite/Cargo.toml "$dir/crate/Cargo.toml"
printf '\n[dev-dependencies]\nenv_logger = "0.11"\nrand = "0.9"\n\n[workspace]\n' >> "$dir/crate/Cargo.toml"
cp Cargo.lock "$dir/crate/Cargo.lock"
cd "$dir/crate"
CARGO_TARGET_DIR="$root/$dir/target" cargo test --lib -q "$@" 2>&1 |
  { grep -v "^warning\|^ *|\|^ *=\|^$" || true; }
