#!/usr/bin/env python3
"""Plots ting-bench reports of one layout at several room sizes as an SVG (stdout).

Usage: plot-curve.py DIR LAYOUT SIZE...   (reads DIR/report-SIZE.json)

Left axis: server and harness CPU in percent of one core. Right axis: forwarded packets per
second (thousands). Loss is printed under each size. No dependencies beyond Python.
"""

import json
import sys
from pathlib import Path

W, H = 760, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 80, 50, 80


def load(directory, sizes):
    rows = []
    for n in sizes:
        path = Path(directory) / f"report-{n}.json"
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            print(f"skipping {path}: {e}", file=sys.stderr)
            continue
        server = r.get("server") or {}
        rows.append(
            {
                "n": int(n),
                "server": server.get("cpu_percent", 0.0),
                "harness": r.get("harness_cpu_percent", 0.0),
                "kpps": r.get("headline", {}).get("forwarded_per_second", 0.0) / 1000.0,
                "loss": r.get("loss_ratio", 0.0) * 100.0,
                "rss": server.get("rss_end_bytes", 0) / 1e6,
            }
        )
    return rows


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: plot-curve.py DIR LAYOUT SIZE...")
    directory, layout, sizes = sys.argv[1], sys.argv[2], sys.argv[3:]
    rows = load(directory, sizes)
    if not rows:
        sys.exit("no reports to plot")
    max_n = max(r["n"] for r in rows)
    max_cpu = max(100.0, max(max(r["server"], r["harness"]) for r in rows))
    max_kpps = max(1.0, max(r["kpps"] for r in rows)) * 1.1
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(n):
        return LEFT + pw * n / max_n

    def y_cpu(v):
        return TOP + ph * (1 - v / max_cpu)

    def y_kpps(v):
        return TOP + ph * (1 - v / max_kpps)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">'
        f"ting: cost against room size ({layout} layout, one screen share)</text>",
        f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" stroke="black"/>',
        f'<line x1="{LEFT + pw}" y1="{TOP}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="black"/>',
    ]
    for v in range(0, int(max_cpu) + 1, 25):
        y = y_cpu(v)
        out.append(f'<line x1="{LEFT}" y1="{y}" x2="{LEFT + pw}" y2="{y}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4}" text-anchor="end">{v} %</text>')
    step = next((s for s in (1, 2, 5, 10, 20, 25, 50, 100) if max_kpps / s <= 6), 200)
    for v in range(0, int(max_kpps) + 1, step):
        out.append(
            f'<text x="{LEFT + pw + 6}" y="{y_kpps(v) + 4}" fill="#2a7">{v} k</text>'
        )
    for r in rows:
        out.append(
            f'<text x="{x(r["n"])}" y="{TOP + ph + 16}" text-anchor="middle">{r["n"]}</text>'
        )
        out.append(
            f'<text x="{x(r["n"])}" y="{TOP + ph + 30}" text-anchor="middle" fill="#c33" '
            f'font-size="10">{r["loss"]:.2f} %</text>'
        )
    out.append(
        f'<text x="{LEFT + pw / 2}" y="{H - 28}" text-anchor="middle">participants '
        f'(loss under each)</text>'
    )
    out.append(
        f'<text x="16" y="{TOP + ph / 2}" transform="rotate(-90 16 {TOP + ph / 2})" '
        f'text-anchor="middle">CPU, % of one core</text>'
    )
    out.append(
        f'<text x="{W - 14}" y="{TOP + ph / 2}" transform="rotate(90 {W - 14} {TOP + ph / 2})" '
        f'text-anchor="middle" fill="#2a7">forwarded packets/s</text>'
    )
    for key, color, scale, label in [
        ("server", "#36c", y_cpu, "server CPU"),
        ("harness", "#999", y_cpu, "harness CPU"),
        ("kpps", "#2a7", y_kpps, "forwarded packets/s"),
    ]:
        points = " ".join(f"{x(r['n'])},{scale(r[key])}" for r in rows)
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        for r in rows:
            out.append(f'<circle cx="{x(r["n"])}" cy="{scale(r[key])}" r="3" fill="{color}"/>')
    for i, (color, label) in enumerate(
        [("#36c", "server CPU"), ("#999", "harness CPU"), ("#2a7", "forwarded packets/s")]
    ):
        lx = LEFT + 10 + i * 150
        out.append(f'<line x1="{lx}" y1="{TOP + 10}" x2="{lx + 20}" y2="{TOP + 10}" '
                   f'stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{lx + 26}" y="{TOP + 14}">{label}</text>')
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
