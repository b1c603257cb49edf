#!/usr/bin/env bash
# The floor of this machine for forwarding one packet, from benches/floor.rs:
#
#   floor(N) = seal + send + (receive + open) / N      (per forwarded packet, fan-out N)
#
# (medians, in thread CPU time) with sendmmsg/recvmmsg batches of 32 datagrams of 1200
# bytes on loopback and the AEAD of
# SRTP (AES-GCM, aws-lc-rs, as str0m uses). Prints a table and writes target/floor.json,
# which scripts/bench-vs-janus.sh reads to express ting's figure as a ratio to the floor.
#
# Usage: scripts/floor.sh [criterion options, e.g. --measurement-time 5]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench --locked --bench floor -- --noplot "$@" >&2

python3 - <<'PY'
import json, os
base = "target/criterion/floor"
def ns(name, per):
    with open(os.path.join(base, name, "new", "estimates.json")) as f:
        return json.load(f)["median"]["point_estimate"] / per
send = ns("sendmmsg_32x1200", 32)
recv = ns("recvmmsg_32x1200", 32)
out = {"send_ns": send, "recv_ns": recv}
for alg in ("aes128gcm", "aes256gcm"):
    out[f"{alg}_seal_ns"] = ns(f"{alg}_seal_1200", 1)
    out[f"{alg}_open_ns"] = ns(f"{alg}_open_1200", 1)
seal, open_ = out["aes256gcm_seal_ns"], out["aes256gcm_open_ns"]
floor = lambda n: seal + send + (recv + open_) / n
out["floor_ns"] = {str(n): floor(n) for n in (1, 2, 5, 10, 20, 50, 250)}
with open("target/floor.json", "w") as f:
    json.dump(out, f, indent=2)
print("operation (1200-byte packet)          ns")
print(f"sendmmsg x32, per datagram       {send:8.0f}")
print(f"recvmmsg x32, per datagram       {recv:8.0f}")
for alg in ("aes128gcm", "aes256gcm"):
    print(f"{alg} seal / open            {out[alg + '_seal_ns']:5.0f} / {out[alg + '_open_ns']:.0f}")
print()
print("floor per forwarded packet (AES-256-GCM, as negotiated by str0m):")
for n, v in out["floor_ns"].items():
    print(f"  fan-out {n:>3}: {v:7.0f} ns  = {1e9 / v / 1000:6.0f} k forwarded packets/s per core")
print("written to target/floor.json")
PY
