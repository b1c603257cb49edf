#!/usr/bin/env bash
# Server CPU, forwarded packets, loss and harness CPU against room size: one ting-bench
# meeting per size against a fresh release ting (server on core 1, harness on core 0), and
# an SVG plot of the curve. Long: about a minute per size.
#
# Usage: scripts/bench-curve.sh [--layout speaker|grid] [sizes…]   (default 25 50 100 150 200 250)
set -euo pipefail
cd "$(dirname "$0")/.."
layout=speaker
if [ "${1:-}" = "--layout" ]; then layout=$2; shift 2; fi
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(25 50 100 150 200 250)
slots=10; [ "$layout" = grid ] && slots=25
cargo build --locked --release -p ting-server -p ting-bench
out="target/bench-curve-$layout"
mkdir -p "$out"
for n in "${sizes[@]}"; do
  taskset -c 1 target/release/ting --http-listen 127.0.0.1:0 --media-port 0 --media-workers 1 \
    >"$out/ting-$n.out" 2>"$out/ting-$n.log" &
  ting=$!
  for _ in $(seq 1 100); do
    url=$(grep -o 'http://[0-9.:]*' "$out/ting-$n.out" 2>/dev/null | head -1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  if [ -z "$url" ]; then echo "ting did not start; see $out/ting-$n.log" >&2; kill $ting; exit 1; fi
  echo "== $n participants, $layout layout"
  taskset -c 0 target/release/ting-bench meeting --target "$url" --participants "$n" \
    --duration 20 --ramp 20 --layout "$layout" --video-slots "$slots" --sample-every 32 \
    --screen -q --json "$out/report-$n.json" 2>&1 | grep -E "^(joins|received|loss|server|harness|HEADLINE|FAILED)" || true
  kill $ting; wait $ting 2>/dev/null || true
done
python3 scripts/plot-curve.py "$out" "$layout" "${sizes[@]}" > "$out/curve.svg"
echo "curve in $out/curve.svg"
