#!/usr/bin/env bash
# Shows that ting serves a meeting and sends nothing anywhere but to its clients: ting runs
# in a network namespace of its own with only loopback, under strace recording every
# connect and send call of every thread, while a ting-bench meeting of four runs against it.
# Fails when any call names an address outside 127.0.0.0/8 and ::1, when a call names a
# local (unix) socket, or when the trace shows no media sent at all (so a trace that
# recorded nothing cannot pass). Needs root (for the namespace) and strace.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${TING_NO_EGRESS_NETNS:-}" != 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "scripts/no-egress.sh needs root for a network namespace" >&2; exit 1; }
  exec unshare --net env TING_NO_EGRESS_NETNS=1 bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
fi

cargo build --locked --release -p ting-server -p ting-bench
out=target/no-egress
rm -rf "$out"; mkdir -p "$out"
strace -f -qq -s 64 -e trace=connect,sendto,sendmsg,sendmmsg -e signal=none \
  -o "$out/strace.txt" \
  target/release/ting --http-listen 127.0.0.1:0 --media-port 0 --media-workers 1 \
  >"$out/ting.out" 2>"$out/ting.log" &
ting=$!
trap 'pkill -KILL -P $ting 2>/dev/null; kill -KILL $ting 2>/dev/null; wait $ting 2>/dev/null || true' EXIT
url=
for _ in $(seq 1 200); do
  url=$(grep -o 'http://[0-9.:]*' "$out/ting.out" 2>/dev/null | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "ting did not start; see $out/ting.log" >&2; exit 1; }

target/release/ting-bench meeting --target "$url" --participants 4 --duration 10 \
  --max-loss 100 -q >"$out/bench.log" 2>&1 || { cat "$out/bench.log" >&2; exit 1; }
# Stop ting itself (strace's child); strace ends with it.
kill -TERM "$(pgrep -P "$ting" | head -1)" 2>/dev/null || kill -TERM "$ting"
for _ in $(seq 1 150); do kill -0 "$ting" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$ting" 2>/dev/null || true
wait "$ting" 2>/dev/null || true
trap - EXIT

python3 - "$out/strace.txt" <<'EOF'
import ipaddress, re, sys
calls = open(sys.argv[1]).read().splitlines()
v4 = re.compile(r'inet_addr\("([0-9.]+)"\)')
v6 = re.compile(r'inet_pton\(AF_INET6, "([0-9a-fA-F:.]+)"')
bad, media = [], 0
for line in calls:
    if "AF_UNIX" in line or "AF_NETLINK" in line:
        bad.append(line)
        continue
    addrs = [ipaddress.ip_address(a) for a in v4.findall(line) + v6.findall(line)]
    if any(not a.is_loopback for a in addrs):
        bad.append(line)
    # (Each simulated participant has a loopback address of its own.)
    if "sendmmsg(" in line and addrs:
        media += 1
if media == 0:
    sys.exit(f"no media sends in the trace ({len(calls)} calls recorded): the trace is not trustworthy")
if bad:
    print("ting tried to reach somewhere else than its clients:", *bad[:10], sep="\n  ")
    sys.exit(1)
print(f"no egress: {len(calls)} connect/send calls recorded, {media} media sends, all to loopback")
EOF
