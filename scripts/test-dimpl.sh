#!/usr/bin/env bash
# Runs dimpl's own unit tests (in its sources) against ting's patched copy in
# crates/patched/dimpl, with the tests its patch adds. The workspace builds dimpl as str0m's
# dependency, which never compiles its tests; this builds it on its own, without the
# integration tests' dev-dependencies (OpenSSL and wolfSSL built from source), in
# target/dimpl-tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=target/dimpl-tests
rm -rf "$dir/crate"
mkdir -p "$dir/crate"
cp -r crates/patched/dimpl/src "$dir/crate/"
cp crates/patched/dimpl/Cargo.toml "$dir/crate/Cargo.toml"
printf '\n[dev-dependencies]\nbytes = "1"\nenv_logger = "0.11"\nlibc = "0.2"\nx509-parser = "0.18"\n\n[workspace]\n' >> "$dir/crate/Cargo.toml"
cp Cargo.lock "$dir/crate/Cargo.lock"
cd "$dir/crate"
CARGO_TARGET_DIR="$root/$dir/target" cargo test --lib -q "$@" 2>&1 |
  { grep -v "^warning\|^ *|\|^ *=\|^$" || true; }
