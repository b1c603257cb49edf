#!/usr/bin/env bash
# Runs a patched dependency's own unit tests (in its sources) against ting's copy in
# crates/patched/<crate>, with the tests its patch adds. The workspace builds the crate as
# a dependency, which never compiles its tests; this builds it on its own, with the
# dev-dependencies its unit tests use (not those of its integration tests), in
# target/<crate>-tests. str0m has its own script (scripts/test-str0m.sh): its manifest
# needs more rewriting.
#
# Usage: scripts/test-patched.sh dimpl|tungstenite [cargo test arguments…]
set -euo pipefail
usage=$(sed -n '2,9p' "$0")
cd "$(dirname "$0")/.."
crate=${1:-}
case "$crate" in
  # dimpl's integration tests build OpenSSL and wolfSSL from source; its unit tests need
  # none of that.
  dimpl) dev='bytes = "1"\nenv_logger = "0.11"\nlibc = "0.2"\nx509-parser = "0.18"' ;;
  tungstenite) dev='env_logger = "0.11"\nrand = "0.9"' ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
shift
root=$PWD
dir=target/$crate-tests
rm -rf "$dir/crate"
mkdir -p "$dir/crate"
cp -r "crates/patched/$crate/src" "$dir/crate/"
cp "crates/patched/$crate/Cargo.toml" "$dir/crate/Cargo.toml"
printf '\n[dev-dependencies]\n%b\n\n[workspace]\n' "$dev" >> "$dir/crate/Cargo.toml"
cp Cargo.lock "$dir/crate/Cargo.lock"
cd "$dir/crate"
CARGO_TARGET_DIR="$root/$dir/target" cargo test --lib -q "$@" 2>&1 |
  { grep -v "^warning\|^ *|\|^ *=\|^$" || true; }
