//! SVG pictures of a run: plain line charts written by hand (no plotting dependency),
//! readable in any browser.

use std::fmt::Write as _;

use crate::report::Report;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub y_log: bool,
    pub series: Vec<Series>,
    /// Vertical reference lines: (x, label).
    pub marks: Vec<(f64, String)>,
}

const W: f64 = 720.0;
const H: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 64.0;

impl Chart {
    pub fn to_svg(&self) -> String {
        let pts = self.series.iter().flat_map(|s| s.points.iter().copied());
        let usable = |v: f64, log: bool| v.is_finite() && (!log || v > 0.0);
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in pts.filter(|&(x, y)| usable(x, self.x_log) && usable(y, self.y_log)) {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        for (x, _) in &self.marks {
            (x0, x1) = (x0.min(*x), x1.max(*x));
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if !self.y_log {
            y0 = y0.min(0.0);
        }
        let axis = Axis::new(x0, x1, self.x_log, LEFT, W - RIGHT);
        let yaxis = Axis::new(y0, y1, self.y_log, H - BOTTOM, TOP);

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="20" font-size="16" text-anchor="middle">{}</text>"#,
            W / 2.0,
            esc(&self.title)
        );
        // Grid and tick labels.
        for (v, label) in axis.ticks() {
            let x = axis.map(v);
            let _ = writeln!(svg, r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#eee"/>"##, H - BOTTOM);
            let _ = writeln!(svg, r#"<text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#, H - BOTTOM + 16.0);
        }
        for (v, label) in yaxis.ticks() {
            let y = yaxis.map(v);
            let _ = writeln!(svg, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/>"##, W - RIGHT);
            let _ = writeln!(svg, r#"<text x="{}" y="{:.1}" text-anchor="end">{label}</text>"#, LEFT - 6.0, y + 4.0);
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
            W - LEFT - RIGHT,
            H - TOP - BOTTOM
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            W / 2.0,
            H - 20.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            svg,
            r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{}</text>"#,
            H / 2.0,
            H / 2.0,
            esc(&self.y_label)
        );
        for (i, (x, label)) in self.marks.iter().enumerate() {
            let px = axis.map(*x);
            // Labels go left of their line near the right edge.
            let (tx, anchor) = if px > W * 0.75 { (px - 4.0, "end") } else { (px + 4.0, "start") };
            let _ = writeln!(
                svg,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{}" stroke="#c00" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{}" fill="#c00" text-anchor="{anchor}">{}</text>"##,
                H - BOTTOM,
                H - BOTTOM - 10.0 - 16.0 * i as f64,
                esc(label)
            );
        }
        for (i, s) in self.series.iter().enumerate() {
            let path: Vec<String> = s
                .points
                .iter()
                .filter(|&&(x, y)| usable(x, self.x_log) && usable(y, self.y_log))
                .map(|&(x, y)| format!("{:.1},{:.1}", axis.map(x), yaxis.map(y)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                s.color,
                path.join(" ")
            );
            // Legend in a row above the plot.
            let lx = LEFT + 260.0 * i as f64;
            let ly = TOP - 8.0;
            let _ = writeln!(
                svg,
                r#"<rect x="{lx}" y="{}" width="12" height="3" fill="{}"/><text x="{}" y="{ly}">{}</text>"#,
                ly - 4.0,
                s.color,
                lx + 18.0,
                esc(&s.name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    from: f64,
    to: f64,
}

impl Axis {
    fn new(lo: f64, hi: f64, log: bool, from: f64, to: f64) -> Self {
        let (lo, hi) =
            if log { (lo.log10().floor(), hi.log10().ceil().max(lo.log10().floor() + 1.0)) } else { (lo, hi) };
        let hi = if hi <= lo { lo + 1.0 } else { hi };
        Axis { lo, hi, log, from, to }
    }

    fn map(&self, v: f64) -> f64 {
        let v = if self.log { v.max(f64::MIN_POSITIVE).log10() } else { v };
        self.from + (v - self.lo) / (self.hi - self.lo) * (self.to - self.from)
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        if self.log {
            return (self.lo as i32..=self.hi as i32)
                .map(|e| {
                    let v = 10f64.powi(e);
                    (v, if e < 0 { format!("{:.*}", e.unsigned_abs() as usize, v) } else { si(v) })
                })
                .collect();
        }
        let span = self.hi - self.lo;
        let raw = span / 6.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 7.0).unwrap_or(mag * 10.0);
        let mut v = (self.lo / step).ceil() * step;
        let mut out = Vec::new();
        while v <= self.hi + step * 1e-9 {
            out.push((v, si(v)));
            v += step;
        }
        out
    }
}

fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{}G", trim(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Cumulative distribution of the latency samples, with the targets marked.
pub fn latency_cdf(r: &Report) -> Chart {
    let mut samples = r.latency_samples_ms.clone();
    samples.sort_unstable();
    let n = samples.len().max(1) as f64;
    // At most ~500 points: the curve, not every sample.
    let step = (samples.len() / 500).max(1);
    let mut points: Vec<(f64, f64)> =
        samples.iter().enumerate().step_by(step).map(|(i, &v)| (f64::from(v), (i + 1) as f64 / n)).collect();
    if let Some(&last) = samples.last() {
        points.push((f64::from(last), 1.0));
    }
    Chart {
        title: format!("Latency ingest → viewer, {} ({} viewers)", r.scenario, r.viewers),
        x_label: "latency (ms)".into(),
        y_label: "share of (viewer, piece) pairs".into(),
        series: vec![Series { name: "viewers".into(), color: "#1f77b4", points }],
        marks: vec![(800.0, "p50 target".into()), (1500.0, "p99 target / playout".into())],
        ..Chart::default()
    }
}

/// What the seeds sent each second, against what a CDN would send.
pub fn seed_egress_over_time(r: &Report) -> Chart {
    // The last second is partial (the run ends inside it): leave it out.
    let full = r.seed_egress_per_s.len().saturating_sub(1);
    let seeds: Vec<(f64, f64)> =
        r.seed_egress_per_s[..full].iter().enumerate().map(|(s, &b)| (s as f64, b as f64 * 8.0 / 1e6)).collect();
    let cdn: Vec<(f64, f64)> = r
        .viewers_per_s
        .iter()
        .enumerate()
        .map(|(s, &v)| (s as f64, f64::from(v) * f64::from(r.bitrate_kbps) / 1e3))
        .collect();
    Chart {
        title: format!("Broadcaster egress over time, {} ({} viewers)", r.scenario, r.viewers),
        x_label: "simulated time (s)".into(),
        y_label: "Mbit/s".into(),
        y_log: true,
        series: vec![
            Series { name: "Shoal seeds".into(), color: "#2ca02c", points: seeds },
            Series { name: "a CDN serving every viewer".into(), color: "#d62728", points: cdn },
        ],
        ..Chart::default()
    }
}

/// Seed egress against audience size, from a sweep of runs.
pub fn seed_egress_vs_viewers(runs: &[Report]) -> Chart {
    let window_mbps = |r: &Report| r.seed_upload_bytes as f64 * 8.0 / 1e6 / f64::from(r.window_s.max(1));
    let seeds = runs.iter().map(|r| (f64::from(r.viewers), window_mbps(r))).collect();
    let cdn =
        runs.iter().map(|r| (f64::from(r.viewers), f64::from(r.viewers) * f64::from(r.bitrate_kbps) / 1e3)).collect();
    Chart {
        title: "Broadcaster egress vs audience".into(),
        x_label: "viewers".into(),
        y_label: "Mbit/s (mean over the window)".into(),
        x_log: true,
        y_log: true,
        series: vec![
            Series { name: "Shoal seeds".into(), color: "#2ca02c", points: seeds },
            Series { name: "a CDN serving every viewer".into(), color: "#d62728", points: cdn },
        ],
        ..Chart::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_well_formed_svg_with_every_series() {
        let c = Chart {
            title: "t <&>".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_log: true,
            y_log: true,
            series: vec![
                Series { name: "a".into(), color: "red", points: vec![(100.0, 1.0), (1e5, 10.0)] },
                Series { name: "b".into(), color: "blue", points: vec![(100.0, 300.0), (1e5, 3e5), (0.0, -1.0)] },
            ],
            marks: vec![(1000.0, "m".into())],
        };
        let svg = c.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert!(svg.contains(">100k<"), "log ticks label 1e5 as 100k: {svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
