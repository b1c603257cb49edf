#!/usr/bin/env bash
# A short ting-bench run against a real ting: a meeting of a few simulated participants
# for a few seconds, with the JSON report and the plot. Fails when ting-bench fails (joins,
# media, loss) or writes no report. Called by scripts/test.sh.
#
# Usage: scripts/bench-smoke.sh [profile]   (debug by default; "release" for release builds)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-debug}
flag=""; [ "$profile" = release ] && flag="--release"
cargo build --locked $flag -p ting-server -p ting-bench
bin="target/$profile"
out="target/bench-smoke"
mkdir -p "$out"

"$bin/ting" --http-listen 127.0.0.1:0 --media-port 0 --media-workers 2 >"$out/ting.out" 2>"$out/ting.log" &
ting=$!
trap 'kill $ting 2>/dev/null; wait $ting 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  url=$(grep -o 'http://[0-9.:]*' "$out/ting.out" 2>/dev/null | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "${url:-}" ] || { echo "ting did not start:"; cat "$out/ting.log"; exit 1; }

"$bin/ting-bench" meeting --target "$url" --participants 4 --duration 5 --ramp 20 \
  --speaking 0.5 --max-loss 1 --json "$out/report.json" --plot "$out/report.svg"
python3 -c "
import json, sys
r = json.load(open('$out/report.json'))
assert r['joins']['succeeded'] == 4, r['joins']
assert r['window']['received_packets'][1] > 0, 'no video received'
assert r['headline']['cpu_us_per_forwarded_packet'], 'no CPU figure'
# ting's own counters reach the report: load shedding (none in a meeting of four).
assert r['server']['load_sheds'] == 0, r['server']
assert r['server']['shedding_workers_at_end'] == 0, r['server']
print('smoke run: %d forwarded packets/s, %.1f us server CPU per forwarded packet' % (
    r['headline']['forwarded_per_second'], r['headline']['cpu_us_per_forwarded_packet']))
"
grep -q '<polyline' "$out/report.svg"

# A 5x5 grid page, in a room with a name a person could open: every tile is small, so
# viewers receive only the low camera layer. (Publishers are told to pause the upper
# layers 3 s after the last viewer stops receiving them, inside this short window; the
# pausing itself is tested in ting-media and in the browser.)
"$bin/ting-bench" meeting --target "$url" --participants 4 --duration 5 --ramp 20 \
  --layout grid --video-slots 25 --room smoke-grid --speaking 0.5 --max-loss 1 \
  -q --json "$out/grid.json"
python3 -c "
import json
r = json.load(open('$out/grid.json'))
assert r['joins']['succeeded'] == 4, r['joins']
assert r['options']['layout'] == 'grid', r['options']
low, mid, top = r['window']['received_layer_packets']
assert low > 0 and mid == 0 and top == 0, ('grid tiles got upper layers', low, mid, top)
print('grid smoke run: received camera layers %d / %d / %d' % (low, mid, top))
"
echo "report and plot in $out/"
