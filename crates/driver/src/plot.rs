//! Small, dependency-free SVG charts for the reports: histograms, bar charts and line charts.
//!
//! The output is plain SVG 1.1 text (viewable in any browser) with axes, tick labels and a legend; no
//! JavaScript, no external fonts. Values are escaped; non-finite values are skipped.

use std::fmt::Write as _;

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// A named series of (x, y) points for a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points, drawn in order.
    pub points: Vec<(f64, f64)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn header(title: &str, xlabel: &str, ylabel: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{cx}" y="20" text-anchor="middle" font-size="15">{t}</text>
<text x="{cx}" y="{yl}" text-anchor="middle">{xl}</text>
<text transform="translate(14,{cy}) rotate(-90)" text-anchor="middle">{yla}</text>
"#,
        cx = (LEFT + W - RIGHT) / 2.0,
        cy = (TOP + H - BOTTOM) / 2.0,
        yl = H - 8.0,
        t = esc(title),
        xl = esc(xlabel),
        yla = esc(ylabel),
    );
    s
}

/// "Nice" tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 && out.len() < 50 {
        out.push(v);
        v += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 || v.abs() < 0.01 {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x0) / (self.x1 - self.x0).max(f64::MIN_POSITIVE) * (W - LEFT - RIGHT)
    }
    fn py(&self, y: f64) -> f64 {
        H - BOTTOM - (y - self.y0) / (self.y1 - self.y0).max(f64::MIN_POSITIVE) * (H - TOP - BOTTOM)
    }
    fn axes(&self, s: &mut String) {
        for t in ticks(self.x0, self.x1, 8) {
            let x = self.px(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{b}" x2="{x:.1}" y2="{b2}" stroke="#333"/><text x="{x:.1}" y="{ty}" text-anchor="middle">{l}</text>"##,
                b = H - BOTTOM,
                b2 = H - BOTTOM + 4.0,
                ty = H - BOTTOM + 16.0,
                l = fmt_tick(t)
            );
        }
        for t in ticks(self.y0, self.y1, 6) {
            let y = self.py(t);
            let _ = writeln!(
                s,
                r##"<line x1="{l0}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{l}</text>"##,
                l0 = LEFT,
                r = W - RIGHT,
                tx = LEFT - 4.0,
                ty = y + 4.0,
                l = fmt_tick(t)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{w}" height="{h}" fill="none" stroke="#333"/>"##,
            w = W - LEFT - RIGHT,
            h = H - TOP - BOTTOM
        );
    }
}

fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    if lo == hi {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return Some((lo - pad, hi + pad));
    }
    Some((lo, hi))
}

/// Histograms of several value sets over a shared x range, overlaid (e.g. a layer's nonzero weights before
/// and after quantization). `bins` equal-width bins; counts on a linear axis.
pub fn histogram(title: &str, xlabel: &str, sets: &[(&str, &[f32])], bins: usize) -> String {
    let bins = bins.max(1);
    let mut s = header(title, xlabel, "count");
    let Some((lo, hi)) = range(sets.iter().flat_map(|(_, v)| v.iter().map(|x| *x as f64))) else {
        s.push_str("<text x=\"320\" y=\"180\" text-anchor=\"middle\">no data</text></svg>\n");
        return s;
    };
    let width = (hi - lo) / bins as f64;
    let counts: Vec<Vec<u64>> = sets
        .iter()
        .map(|(_, vals)| {
            let mut c = vec![0u64; bins];
            for v in vals.iter().map(|x| *x as f64).filter(|x| x.is_finite()) {
                let i = (((v - lo) / width) as usize).min(bins - 1);
                c[i] += 1;
            }
            c
        })
        .collect();
    let ymax = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let f = Frame {
        x0: lo,
        x1: hi,
        y0: 0.0,
        y1: ymax * 1.05,
    };
    f.axes(&mut s);
    for (k, c) in counts.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        for (i, &n) in c.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let x = f.px(lo + i as f64 * width);
            let x2 = f.px(lo + (i + 1) as f64 * width);
            let y = f.py(n as f64);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}" fill="{color}" fill-opacity="0.55"/>"#,
                w = (x2 - x).max(0.5),
                h = f.py(0.0) - y
            );
        }
    }
    legend(&mut s, sets.iter().map(|(l, _)| *l));
    s.push_str("</svg>\n");
    s
}

/// A bar chart of labelled values (e.g. accuracy per stage), with the value written above each bar.
pub fn bars(title: &str, ylabel: &str, items: &[(&str, f64)]) -> String {
    let mut s = header(title, "", ylabel);
    let vals = items.iter().map(|(_, v)| *v).filter(|v| v.is_finite());
    let (lo, hi) = range(vals.chain(std::iter::once(0.0))).unwrap_or((0.0, 1.0));
    let f = Frame {
        x0: 0.0,
        x1: items.len().max(1) as f64,
        y0: lo.min(0.0),
        y1: hi * 1.1,
    };
    for t in ticks(f.y0, f.y1, 6) {
        let y = f.py(t);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{l}</text>"##,
            r = W - RIGHT,
            tx = LEFT - 4.0,
            ty = y + 4.0,
            l = fmt_tick(t)
        );
    }
    for (i, (label, v)) in items.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        let x = f.px(i as f64 + 0.15);
        let x2 = f.px(i as f64 + 0.85);
        let y = f.py(*v);
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"/><text x="{cx:.1}" y="{ty:.1}" text-anchor="middle">{val}</text><text x="{cx:.1}" y="{ly}" text-anchor="middle">{l}</text>"#,
            w = x2 - x,
            h = (f.py(0.0) - y).max(0.0),
            c = COLORS[0],
            cx = (x + x2) / 2.0,
            ty = y - 4.0,
            val = fmt_value(*v),
            ly = H - BOTTOM + 16.0,
            l = esc(label)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/>"##,
        b = f.py(0.0),
        r = W - RIGHT
    );
    s.push_str("</svg>\n");
    s
}

fn fmt_value(v: f64) -> String {
    if v.abs() < 10.0 {
        format!("{v:.4}")
    } else {
        format!("{v:.1}")
    }
}

/// A line chart with markers, one line per series (e.g. accuracy vs pruning level per layer).
pub fn lines(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    let mut s = header(title, xlabel, ylabel);
    let xs = range(series.iter().flat_map(|se| se.points.iter().map(|p| p.0)));
    let ys = range(series.iter().flat_map(|se| se.points.iter().map(|p| p.1)));
    let (Some((x0, x1)), Some((y0, y1))) = (xs, ys) else {
        s.push_str("<text x=\"320\" y=\"180\" text-anchor=\"middle\">no data</text></svg>\n");
        return s;
    };
    let pad = (y1 - y0) * 0.05;
    let f = Frame {
        x0,
        x1,
        y0: y0 - pad,
        y1: y1 + pad,
    };
    f.axes(&mut s);
    for (k, se) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let pts: Vec<String> = se
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", f.px(*x), f.py(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            pts.join(" ")
        );
        for p in &pts {
            if let Some((x, y)) = p.split_once(',') {
                let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
            }
        }
    }
    legend(&mut s, series.iter().map(|se| se.label.as_str()));
    s.push_str("</svg>\n");
    s
}

fn legend<'a>(s: &mut String, labels: impl Iterator<Item = &'a str>) {
    for (k, label) in labels.enumerate() {
        let y = TOP + 14.0 + 16.0 * k as f64;
        let x = W - RIGHT - 150.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{ry}" width="10" height="10" fill="{c}"/><text x="{tx}" y="{y}">{l}</text>"#,
            ry = y - 9.0,
            c = COLORS[k % COLORS.len()],
            tx = x + 14.0,
            l = esc(label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_wellformed_svg_with_all_bins_counted() {
        let a: Vec<f32> = (0..1000).map(|i| (i as f32 / 100.0).sin()).collect();
        let b: Vec<f32> = a.iter().map(|x| (x * 4.0).round() / 4.0).collect();
        let svg = histogram(
            "fc1 <weights>",
            "value",
            &[("before", &a), ("after", &b)],
            40,
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("fc1 &lt;weights&gt;"), "title escaped");
        assert!(svg.contains("before") && svg.contains("after"));
        assert!(svg.matches("<rect").count() > 10);
    }

    #[test]
    fn empty_and_constant_inputs_do_not_panic() {
        assert!(histogram("t", "x", &[("none", &[])], 10).contains("no data"));
        assert!(histogram("t", "x", &[("c", &[1.0, 1.0])], 10).contains("<rect"));
        assert!(lines("t", "x", "y", &[]).contains("no data"));
        let svg = lines(
            "t",
            "x",
            "y",
            &[Series {
                label: "a".into(),
                points: vec![(0.5, 0.9)],
            }],
        );
        assert!(svg.contains("<circle"));
    }

    #[test]
    fn bars_write_their_values() {
        let svg = bars(
            "accuracy",
            "top-1",
            &[("dense", 0.9012), ("decoded", 0.8999)],
        );
        assert!(svg.contains("0.9012") && svg.contains("0.8999") && svg.contains("decoded"));
    }

    #[test]
    fn ticks_cover_the_range() {
        let t = ticks(0.0, 1.0, 5);
        assert_eq!(t.first().copied(), Some(0.0));
        assert!((t.last().copied().unwrap() - 1.0).abs() < 1e-9);
        assert!(ticks(-0.13, 0.21, 6).len() >= 3);
    }
}
