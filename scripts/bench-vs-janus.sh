#!/usr/bin/env bash
# ting and Janus side by side: the same ting-bench scenarios (fanout 1->N and a meeting of
# M) against Janus's VideoRoom and against ting, each server pinned to the same CPU cores
# with as many event loops / media workers as cores, the harness pinned to the others.
# Prints each server's CPU per forwarded packet and their ratio; reports and plots go to
# reports/vs-janus-<time>/.
#
# Needs root: it installs Janus from Debian if missing and puts two loopback addresses on
# a veth pair (Janus does not gather candidates on loopback interfaces; the addresses stay
# on this machine). Both servers and all clients use those addresses, so both see the same
# network path.
#
# Usage: scripts/bench-vs-janus.sh [--duration S] [--fanout N] [--meeting M]
#                                   [--server-cores LIST] [--bench-cores LIST] [--ramp R]
#                                   [--bench-args "more ting-bench options"]
set -euo pipefail
cd "$(dirname "$0")/.."

duration=30 fanout=50 meeting=20 server_cores=1 bench_cores=0 ramp=10 bench_args=
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --fanout) fanout=$2; shift 2 ;;
    --meeting) meeting=$2; shift 2 ;;
    --server-cores) server_cores=$2; shift 2 ;;
    --bench-cores) bench_cores=$2; shift 2 ;;
    --ramp) ramp=$2; shift 2 ;;
    --bench-args) bench_args=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root (veth set-up, Janus install)" >&2; exit 2; }
ncores=$(echo "$server_cores" | tr ',' '\n' | wc -l)

SERVER_IP=127.0.0.2
CLIENT_IP=127.0.0.3
out="reports/vs-janus-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
work=$(mktemp -d)
janus_pid="" ting_pid=""
cleanup() {
  [ -n "$janus_pid" ] && kill "$janus_pid" 2>/dev/null && wait "$janus_pid" 2>/dev/null
  [ -n "$ting_pid" ] && kill "$ting_pid" 2>/dev/null && wait "$ting_pid" 2>/dev/null
  rm -rf "$work"
  return 0
}
trap cleanup EXIT

if ! command -v janus >/dev/null; then
  apt-get -o DPkg::Lock::Timeout=600 install -y janus ||
    { apt-get -o DPkg::Lock::Timeout=600 update && apt-get -o DPkg::Lock::Timeout=600 install -y janus; }
fi
cargo build --locked --release -p ting-server -p ting-bench

# Two addresses on a veth pair: Janus skips loopback interfaces when gathering, and its
# libnice pins sockets to the interface, so clients must sit on the same one.
ip link show tingv0 >/dev/null 2>&1 || ip link add tingv0 type veth peer name tingv1
sysctl -qw net.ipv6.conf.tingv0.disable_ipv6=1 net.ipv6.conf.tingv1.disable_ipv6=1
for a in $SERVER_IP $CLIENT_IP; do
  ip addr show dev tingv0 | grep -q "inet $a/" || ip addr add "$a/32" dev tingv0
done
ip link set tingv1 up
ip link set tingv0 up

# Janus: only the VideoRoom plugin and the HTTP transport, on the server address.
lib=$(dirname "$(dirname "$(find /usr/lib -path '*janus/plugins/libjanus_videoroom.so' | head -1)")")
conf="$work/conf"
mkdir -p "$conf"
disable_plugins=$(cd "$lib/plugins" && ls *.so | grep -v videoroom | paste -sd, -)
disable_transports=$(cd "$lib/transports" && ls *.so | grep -v '_http' | paste -sd, -)
cat >"$conf/janus.jcfg" <<EOF
general: {
  configs_folder = "$conf"
  plugins_folder = "$lib/plugins"
  transports_folder = "$lib/transports"
  events_folder = "$lib/events"
  loggers_folder = "$lib/loggers"
  debug_level = 4
  session_timeout = 60
  event_loops = $ncores
}
media: {
  ipv6 = false
  rtp_port_range = "20000-40000"
}
nat: {
  full_trickle = false
  ice_lite = false
  ice_tcp = false
  ignore_mdns = true
  ice_enforce_list = "$SERVER_IP"
}
plugins: { disable = "$disable_plugins" }
transports: { disable = "$disable_transports" }
events: { broadcast = false }
EOF
cat >"$conf/janus.transport.http.jcfg" <<EOF
general: { json = "compact", base_path = "/janus", http = true, port = 8088, ip = "127.0.0.1", https = false }
admin: { admin_http = false }
EOF
cat >"$conf/janus.plugin.videoroom.jcfg" <<EOF
general: { }
EOF

# Every silent microphone sends 50 packets a second against both servers (--no-dtx): Janus's
# rooms here do not ask for Opus DTX and ting's answer does, which would leave ting fewer
# packets to receive per forwarded packet than Janus.
bench() { # label target server-pid scenario participants
  local label=$1 target=$2 pid=$3 scenario=$4 n=$5
  echo "== $label: $scenario $n" >&2
  RUST_LOG=warn,dimpl=debug taskset -c "$bench_cores" target/release/ting-bench "$scenario" \
    --target "$target" --participants "$n" --duration "$duration" --ramp "$ramp" \
    --local-ip $CLIENT_IP --server-pid "$pid" --max-loss 100 --settle 20 \
    --json "$out/$label-$scenario.json" --plot "$out/$label-$scenario.svg" --no-dtx $bench_args \
    2> >(tee "$out/$label-$scenario.log" | grep -v 'dimpl' >&2) || true
  grep -o 'Negotiated SRTP profile: [A-Z0-9_]*' "$out/$label-$scenario.log" | sort | uniq -c \
    > "$out/$label-$scenario.srtp" || true
}

echo "== starting Janus on cores $server_cores" >&2
taskset -c "$server_cores" janus -C "$conf/janus.jcfg" -F "$conf" >"$out/janus.log" 2>&1 &
janus_pid=$!
for _ in $(seq 1 100); do
  curl -s -m1 -XPOST 127.0.0.1:8088/janus -d '{"janus":"info","transaction":"x"}' >/dev/null && break
  sleep 0.2
done
bench janus "janus://127.0.0.1:8088/janus" "$janus_pid" fanout "$fanout"
bench janus "janus://127.0.0.1:8088/janus" "$janus_pid" meeting "$meeting"
kill "$janus_pid"; wait "$janus_pid" 2>/dev/null || true; janus_pid=""

echo "== starting ting on cores $server_cores" >&2
taskset -c "$server_cores" target/release/ting --http-listen 127.0.0.1:8089 \
  --media-bind-ip $SERVER_IP --media-advertise-ip $SERVER_IP --media-port 0 \
  --media-workers "$ncores" >"$out/ting.out" 2>"$out/ting.log" &
ting_pid=$!
for _ in $(seq 1 100); do curl -s -m1 127.0.0.1:8089/readyz >/dev/null && break; sleep 0.1; done
bench ting "http://127.0.0.1:8089" "$ting_pid" fanout "$fanout"
bench ting "http://127.0.0.1:8089" "$ting_pid" meeting "$meeting"

python3 - "$out" "$server_cores" <<'PY'
import json, os, sys
out, cores = sys.argv[1], sys.argv[2]
floor = None
if os.path.exists("target/floor.json"):
    floor = json.load(open("target/floor.json"))
def load(label, scenario):
    try:
        return json.load(open(f"{out}/{label}-{scenario}.json"))
    except FileNotFoundError:
        return None
def srtp(label, scenario):
    try:
        lines = open(f"{out}/{label}-{scenario}.srtp").read().split("\n")
        return ", ".join(sorted({l.split(": ")[-1] for l in lines if l.strip()})) or "?"
    except FileNotFoundError:
        return "?"
def ms(v):
    # A quantile beyond a histogram's last bucket is infinite, which JSON writes as null.
    return f"{v:.2f}" if v is not None else ">1000"
rows = []
print(f"\nserver pinned to cores {cores}; figures from one run, same machine, same scenario\n")
print(f"{'scenario':<10} {'server':<6} {'joins':>7} {'fwd pkt/s':>10} {'CPU us/pkt':>10} {'pkt/s/core':>11} "
      f"{'loss %':>7} {'p50 ms':>7} {'p99 ms':>7} {'inside p99':>10} {'vs floor':>8}  srtp")
for scenario in ("fanout", "meeting"):
    figures = {}
    for label in ("janus", "ting"):
        r = load(label, scenario)
        if not r:
            print(f"{scenario:<10} {label:<6} no report")
            continue
        h = r["headline"]
        us = h.get("cpu_us_per_forwarded_packet")
        figures[label] = us
        fan = None
        sent = sum(r["window"]["sent_packets"])
        recv = sum(r["window"]["received_packets"])
        vs = ""
        if floor and us and sent:
            n = max(1.0, recv / sent)
            f = (floor["aes256gcm_seal_ns"] + floor["send_ns"]
                 + (floor["recv_ns"] + floor["aes256gcm_open_ns"]) / n) / 1000
            vs = f"{us / f:.2f}x"
        j = r["joins"]
        inner = (r.get("server") or {}).get("internal_latency_ms")
        inside = ms(inner["p99"]) if inner else "-"
        print(f"{scenario:<10} {label:<6} {j['succeeded']:>3}/{j['attempted']:<3} {h['forwarded_per_second']:>10.0f} "
              f"{(us or 0):>10.2f} {(h.get('forwarded_per_core_second') or 0):>11.0f} "
              f"{r['loss_ratio']*100:>7.3f} {ms(r['latency_ms']['p50']):>7} {ms(r['latency_ms']['p99']):>7} {inside:>10} {vs:>8}  {srtp(label, scenario)}")
    if figures.get("ting") and figures.get("janus"):
        print(f"{'':<10} ting / janus CPU per forwarded packet: {figures['ting'] / figures['janus']:.2f}")
print(f"\nreports, plots and logs: {out}/")
PY
