//! The run over time as an SVG: throughput, loss, latency and server CPU, one panel each.
//!
//! Written by hand rather than with a plotting crate: SVG needs no fonts or bitmaps, and
//! the output is plain text a test can read.

use std::fmt::Write as _;

use crate::report::{Point, Report};

const WIDTH: f64 = 960.0;
const PANEL: f64 = 190.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const GAP: f64 = 45.0;

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    value: fn(&Point) -> f64,
}

struct Panel<'a> {
    title: &'a str,
    unit: &'a str,
    series: Vec<Series<'a>>,
}

/// Rounds up to 1, 2 or 5 times a power of ten.
pub fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p * (1.0 + 1e-9) {
            return m * p;
        }
    }
    10.0 * p
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG document for a report's series.
pub fn svg(report: &Report) -> String {
    let panels = [
        Panel {
            title: "Received by the simulated participants",
            unit: "Mbit/s",
            series: vec![Series {
                name: "throughput",
                color: "#1f77b4",
                value: |p| p.received_mbps,
            }],
        },
        Panel {
            title: "Loss (packets that never arrived)",
            unit: "%",
            series: vec![Series {
                name: "loss",
                color: "#d62728",
                value: |p| p.loss_ratio * 100.0,
            }],
        },
        Panel {
            title: "One-way latency, sender to receiver",
            unit: "ms",
            series: vec![
                Series {
                    name: "p50",
                    color: "#2ca02c",
                    value: |p| p.latency_p50_ms,
                },
                Series {
                    name: "p99",
                    color: "#ff7f0e",
                    value: |p| p.latency_p99_ms,
                },
            ],
        },
        Panel {
            title: "Server CPU",
            unit: "% of a core",
            series: vec![Series {
                name: "cpu",
                color: "#9467bd",
                value: |p| p.server_cpu_percent,
            }],
        },
    ];
    let height = TOP + panels.len() as f64 * (PANEL + GAP) + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="24" font-size="16">{}</text>"#,
        esc(&format!(
            "ting-bench {}: {} participant(s) x {} room(s), {:.0} s, {}",
            report.scenario,
            report.participants_per_room,
            report.rooms,
            report.duration_s,
            report.target
        ))
    );
    let t_max = report
        .series
        .iter()
        .map(|p| p.t)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let x_of = |t: f64| LEFT + t / t_max * (WIDTH - LEFT - RIGHT);
    for (i, panel) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL + GAP);
        let bottom = top + PANEL;
        let y_max = nice_ceiling(
            panel
                .series
                .iter()
                .flat_map(|se| report.series.iter().map(se.value))
                .fold(0.0f64, f64::max),
        );
        let y_of = |v: f64| bottom - (v / y_max).clamp(0.0, 1.0) * PANEL;
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="{}" font-weight="bold">{} ({})</text>"##,
            top - 8.0,
            esc(panel.title),
            esc(panel.unit)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#888"/>"##,
            WIDTH - LEFT - RIGHT
        );
        for k in 0..=4 {
            let v = y_max * f64::from(k) / 4.0;
            let y = y_of(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                trim_number(v)
            );
        }
        let step = nice_ceiling(t_max / 8.0);
        let mut t = 0.0;
        while t <= t_max + 1e-9 {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#555">{}s</text>"##,
                x_of(t),
                bottom + 15.0,
                trim_number(t)
            );
            t += step;
        }
        for (n, se) in panel.series.iter().enumerate() {
            let points: Vec<String> = report
                .series
                .iter()
                .map(|p| format!("{:.1},{:.1}", x_of(p.t), y_of((se.value)(p))))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline class="{}" fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
                se.name,
                se.color,
                points.join(" ")
            );
            let lx = WIDTH - RIGHT - 90.0;
            let ly = top + 16.0 + n as f64 * 16.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                lx + 18.0,
                se.color,
                lx + 24.0,
                ly + 4.0,
                esc(se.name)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn trim_number(v: f64) -> String {
    if v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(1.2), 2.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(7.5), 10.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }

    #[test]
    fn svg_has_a_line_per_series_through_every_point() {
        let report = Report {
            scenario: "fanout".into(),
            target: "ting <local>".into(),
            duration_s: 3.0,
            series: (1..=3)
                .map(|i| Point {
                    t: f64::from(i),
                    received_mbps: 10.0 * f64::from(i),
                    latency_p50_ms: 0.5,
                    latency_p99_ms: 2.0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let svg = svg(&report);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("ting &lt;local&gt;"), "text is escaped");
        for class in ["throughput", "loss", "p50", "p99", "cpu"] {
            let line = svg
                .lines()
                .find(|l| l.contains(&format!("class=\"{class}\"")))
                .unwrap_or_else(|| panic!("no {class} line"));
            let points = line.split("points=\"").nth(1).unwrap();
            assert_eq!(points.split_whitespace().count(), 3, "{class}: {line}");
        }
        // The throughput panel's top reaches the highest value: 30 Mbit/s -> scale 50.
        assert!(svg.contains(">50</text>"));
    }
}
