#!/usr/bin/env bash
# A big meeting of simulated participants against a release ting, as scripts/test.sh runs
# it: 100 people (speaker layout, three-layer simulcast, 10 % speaking) for 20 s. Fails when
# a join fails, someone receives no media, or loss is above 0.5 %. The server gets one
# media worker on one core and ting-bench the other when the machine has two.
#
# Usage: scripts/bench-meeting.sh [participants] [seconds] [more ting-bench options…]
set -euo pipefail
cd "$(dirname "$0")/.."
participants=${1:-100}
seconds=${2:-20}
shift $(( $# > 2 ? 2 : $# ))
cargo build --locked --release -p ting-server -p ting-bench
out="target/bench-meeting"
mkdir -p "$out"

server_cpu=(); bench_cpu=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  server_cpu=(taskset -c 1); bench_cpu=(taskset -c 0)
fi

"${server_cpu[@]}" target/release/ting --http-listen 127.0.0.1:0 --media-port 0 \
  --media-workers 1 >"$out/ting.out" 2>"$out/ting.log" &
ting=$!
trap 'kill $ting 2>/dev/null; wait $ting 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  url=$(grep -o 'http://[0-9.:]*' "$out/ting.out" 2>/dev/null | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "${url:-}" ] || { echo "ting did not start:"; cat "$out/ting.log"; exit 1; }

"${bench_cpu[@]}" target/release/ting-bench meeting --target "$url" \
  --participants "$participants" --duration "$seconds" --ramp 20 --video-slots 10 \
  --sample-every 32 --max-loss 0.5 --json "$out/report.json" --plot "$out/report.svg" "$@"
echo "report and plot in $out/"
