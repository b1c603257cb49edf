#!/usr/bin/env bash
# Two ting builds against each other: alternating runs of one ting-bench meeting (A B, then
# B A, and so on, so a machine that speeds up or slows down during the comparison favours
# neither), each against a fresh server on core 1 with the harness on core 0, then the median
# of the pairs' ratios of server CPU per forwarded packet. This machine's speed drifts by
# 10 % and more between runs; a change smaller than the spread of the ratios is not shown.
#
# Usage: scripts/bench-ab.sh TING_A TING_B [pairs] [participants] [more ting-bench options…]
#   e.g. scripts/bench-ab.sh /tmp/ting-before target/release/ting 6 150 --layout speaker
# Defaults: 4 pairs of 150 participants, speaker layout with 10 video slots (grid:
# `--layout grid --video-slots 25`), 20 s after a 20 s ramp (about six minutes). Exits 1 when fewer than half of the pairs ran cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
a=$1; b=$2; pairs=${3:-4}; participants=${4:-150}
shift $(( $# > 4 ? 4 : $# ))
for bin in "$a" "$b"; do
  [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
done
cargo build --locked --release -p ting-bench
out="target/bench-ab"
rm -rf "$out"; mkdir -p "$out"

server_cpu=(); bench_cpu=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  server_cpu=(taskset -c 1); bench_cpu=(taskset -c 0)
fi

run() { # run NAME BINARY [ting-bench options…]
  local name=$1 bin=$2 url="" ting
  shift 2
  "${server_cpu[@]}" "$bin" --http-listen 127.0.0.1:0 --media-port 0 --media-workers 1 \
    >"$out/$name.out" 2>"$out/$name.log" &
  ting=$!
  for _ in $(seq 1 100); do
    url=$(grep -o 'http://[0-9.:]*' "$out/$name.out" 2>/dev/null | head -1 || true)
    [ -n "$url" ] && break
    kill -0 $ting 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$url" ]; then
    echo "$name: $bin did not start; see $out/$name.log" >&2
    kill $ting 2>/dev/null || true; wait $ting 2>/dev/null || true
    return
  fi
  local slots=(--video-slots 10)
  [[ " $* " == *" --video-slots "* ]] && slots=()
  "${bench_cpu[@]}" target/release/ting-bench meeting --target "$url" \
    --participants "$participants" --duration 20 --ramp 20 "${slots[@]}" \
    --sample-every 32 --screen -q --json "$out/$name.json" "$@" >"$out/$name.txt" 2>&1 || true
  echo "$name: $(grep -h HEADLINE "$out/$name.txt" || echo "no headline (see $out/$name.txt)")"
  kill $ting 2>/dev/null || true; wait $ting 2>/dev/null || true
}

for k in $(seq 1 "$pairs"); do
  if [ $((k % 2)) -eq 1 ]; then
    run "a-$k" "$a" "$@"; run "b-$k" "$b" "$@"
  else
    run "b-$k" "$b" "$@"; run "a-$k" "$a" "$@"
  fi
done
python3 scripts/ab-stats.py "$out" "$pairs"
