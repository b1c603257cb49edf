#!/usr/bin/env python3
"""Paired comparison of two ting builds from ting-bench JSON reports.

Usage: ab-stats.py DIR PAIRS            (reads DIR/a-K.json and DIR/b-K.json, K = 1..PAIRS)
       ab-stats.py --self-test

A run counts only if its report exists and says the run passed (no failures); a pair
counts only if both of its runs do. The figure is the server's CPU microseconds per
forwarded packet; each pair gives the ratio B/A, and the verdict is the median of those
ratios with their range. Exits 1 when fewer than half of the pairs count.
"""
import json
import os
import statistics
import sys


def run_figures(path):
    """(µs per forward, server CPU %, loss %, harness ratio) of a passing run, else the reason."""
    try:
        with open(path) as f:
            r = json.load(f)
    except FileNotFoundError:
        return "no report (the run did not finish)"
    except (OSError, ValueError) as e:
        return f"unreadable report: {e}"
    if r.get("failures"):
        return "failed: " + "; ".join(r["failures"])
    us = (r.get("headline") or {}).get("cpu_us_per_forwarded_packet")
    if not us:
        return "no server CPU figure (the server's metrics were not read)"
    server = r.get("server") or {}
    harness = r.get("harness_cpu_us_per_received_packet")
    return (us, server.get("cpu_percent", 0.0), 100.0 * r.get("loss_ratio", 0.0),
            (harness / us) if harness else None, server.get("rss_end_bytes", 0) / 1e6)


def compare(runs):
    """runs: list of (a, b) per pair, each a tuple of figures or a reason string.
    Returns (lines, ratios)."""
    lines, ratios = [], []
    for k, (a, b) in enumerate(runs, 1):
        def show(x):
            if isinstance(x, str):
                return x
            return (f"{x[0]:.2f} µs/forward, {x[1]:.0f} % of a core, loss {x[2]:.3f} %, "
                    f"RSS {x[4]:.0f} MB")
        line = f"pair {k}: A {show(a)} | B {show(b)}"
        if not isinstance(a, str) and not isinstance(b, str):
            ratios.append(b[0] / a[0])
            line += f" | B/A {b[0] / a[0]:.3f}"
        lines.append(line)
    return lines, ratios


def verdict(ratios, pairs):
    if len(ratios) * 2 < pairs or not ratios:
        return 1, f"only {len(ratios)} of {pairs} pairs ran cleanly: no verdict"
    med = statistics.median(ratios)
    return 0, (f"B/A server CPU per forwarded packet: median {med:.3f} "
               f"({(med - 1) * 100:+.1f} %), range {min(ratios):.3f}-{max(ratios):.3f} "
               f"over {len(ratios)} pairs; B was cheaper in "
               f"{sum(1 for r in ratios if r < 1)} of them")


def self_test():
    ok = (10.0, 80.0, 0.0, 0.8, 250.0)
    lines, ratios = compare([(ok, (9.0, 72.0, 0.0, 0.8, 240.0)), (ok, (11.0, 88.0, 0.0, 0.8, 1)),
                             (ok, (9.5, 76.0, 0.0, 0.8, 1))])
    assert ratios == [0.9, 1.1, 0.95], ratios
    assert "RSS 250 MB" in lines[0] and "RSS 240 MB" in lines[0], lines
    code, text = verdict(ratios, 3)
    assert code == 0 and "median 0.950" in text and "cheaper in 2 of them" in text, text
    # A run that died is reported with its reason and leaves its pair out.
    lines, ratios = compare([(ok, "no report (the run did not finish)"), (ok, ok)])
    assert ratios == [1.0] and "did not finish" in lines[0], lines
    # Too few clean pairs: no verdict, and a failing exit.
    code, text = verdict([1.0], 3)
    assert code == 1 and "no verdict" in text, text
    code, text = verdict([], 0)
    assert code == 1, text
    # Reports: a failed run, a missing one, a passing one.
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "r.json")
        with open(p, "w") as f:
            json.dump({"failures": ["loss 12 % is above the limit"],
                       "headline": {"cpu_us_per_forwarded_packet": 9.0}}, f)
        assert run_figures(p).startswith("failed: loss 12 %")
        assert run_figures(os.path.join(d, "none.json")).startswith("no report")
        with open(p, "w") as f:
            json.dump({"failures": [], "loss_ratio": 0.001,
                       "server": {"cpu_percent": 70.0, "rss_end_bytes": 300e6},
                       "harness_cpu_us_per_received_packet": 4.0,
                       "headline": {"cpu_us_per_forwarded_packet": 8.0}}, f)
        assert run_figures(p) == (8.0, 70.0, 0.1, 0.5, 300.0), run_figures(p)
    print("ab-stats self-test passed")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return 0
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    d, pairs = sys.argv[1], int(sys.argv[2])
    runs = [(run_figures(os.path.join(d, f"a-{k}.json")),
             run_figures(os.path.join(d, f"b-{k}.json"))) for k in range(1, pairs + 1)]
    lines, ratios = compare(runs)
    print("\n".join(lines))
    code, text = verdict(ratios, pairs)
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
