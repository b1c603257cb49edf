#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (or the TARGETs named) for SECONDS each (default 60),
# one after another.
#
#   scripts/fuzz.sh [SECONDS [TARGET...]]
#
# Each target starts from its seed inputs (fuzz/corpus/<target>/), copied afresh to
# fuzz/target/corpus/<target>/ so that what the fuzzer adds stays out of the repository.
# Exits non-zero when a target crashes (a panic, an overflow, a failed property), naming
# the target and the crashing input, which libFuzzer keeps in fuzz/artifacts/<target>/;
# `cargo fuzz run <target> <input>` replays it. Logs go to fuzz/target/fuzz-logs/.
#
# With a nightly toolchain installed the targets run under AddressSanitizer. Otherwise they
# run on stable without a sanitizer (`-s none`; RUSTC_BOOTSTRAP=1 lets any unstable flag
# of cargo-fuzz through): panics, overflows and properties are checked all the same.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS [TARGET...]]" >&2
    exit 2
    ;;
esac
shift $(($# > 0 ? 1 : 0))

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

if command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
    sanitizer=()
    echo "fuzzing with nightly and AddressSanitizer"
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
    sanitizer=(-s none)
    echo "fuzzing with stable, no sanitizer"
fi

if (($#)); then
    targets="$*"
else
    targets=$("${fuzz[@]}" list)
fi
for target in $targets; do
    "${fuzz[@]}" build ${sanitizer[@]+"${sanitizer[@]}"} "$target"
done

logs=fuzz/target/fuzz-logs
mkdir -p "$logs"
failed=()
for target in $targets; do
    corpus="fuzz/target/corpus/$target"
    rm -rf "$corpus"
    mkdir -p "$corpus"
    cp fuzz/corpus/"$target"/* "$corpus"/
    log="$logs/$target.log"
    echo "== $target: ${seconds} s"
    if "${fuzz[@]}" run ${sanitizer[@]+"${sanitizer[@]}"} "$target" "$corpus" -- \
        -max_total_time="$seconds" >"$log" 2>&1; then
        grep -E '^Done [0-9]+ runs' "$log" || true
    else
        failed+=("$target")
        input=$(grep -o 'Test unit written to .*' "$log" | sed 's/Test unit written to //' | tail -1)
        grep -E -m 3 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" || true
        echo "$target CRASHED; input: ${input:-see $log}; log: $log"
    fi
done

if ((${#failed[@]})); then
    echo "crashed: ${failed[*]}"
    exit 1
fi
echo "no crashes: $(echo $targets | wc -w) targets, ${seconds} s each"
