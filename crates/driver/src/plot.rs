//! The report's charts, drawn with the `plotters` crate on its SVG backend.
//!
//! Three kinds, each a self-contained SVG 1.1 document (text as `<text>` elements, no fonts embedded, no
//! system font library needed to write them):
//!
//! - [`weight_distribution`]: one layer's weights, paper-style (Han et al. 2016, Fig. 4/5): the dense
//!   distribution on top; below it the nonzero weights left after pruning and masked finetuning, with
//!   the shared values (the k-means centroids after centroid finetuning) as vertical lines.
//! - [`stage_accuracy`]: top-1 after each stage on a zoomed y axis ([`zoomed_range`]), each point
//!   annotated with its value and a compression ratio.
//! - [`lines`]: one line per series (the sensitivity scan).
//!
//! Tick labels are rounded to the precision of the axis ([`fmt_tick`]), so 0 is written `0`, never
//! `-2.8e-17`. Non-finite values are skipped; empty inputs give a chart that says "no data".

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::error::{DriverError, Result};

const W: u32 = 760;
const H: u32 = 440;
const FONT: &str = "sans-serif";
const PALETTE: &[RGBColor] = &[
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// A named series of (x, y) points for a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points, drawn in order.
    pub points: Vec<(f64, f64)>,
}

/// One point of the accuracy-per-stage chart.
#[derive(Debug, Clone)]
pub struct StagePoint {
    /// Short stage name, the x-axis label.
    pub stage: String,
    /// Top-1 in [0, 1]; a non-finite value leaves the stage without a point.
    pub accuracy: f64,
    /// Written under the point (e.g. the compression ratio at that stage); may be empty.
    pub note: String,
}

fn plot_err(title: &str, e: impl std::fmt::Display) -> DriverError {
    DriverError::msg(format!("plot `{title}`: {e}"))
}

/// The smallest and largest finite values, if any.
fn finite_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo <= hi).then_some((lo, hi))
}

/// An axis range around the finite `values`: their min..max padded by `pad` × the span on each side
/// (a span under `min_span` counts as `min_span`, so equal values still get an axis), then clamped to
/// `clamp` when given. The axis does not start at 0 unless the data comes near it: accuracies in
/// 0.86..0.90 get an axis around 0.85..0.91, where their differences are visible. `None` without
/// finite values.
pub fn zoomed_range(
    values: impl IntoIterator<Item = f64>,
    pad: f64,
    min_span: f64,
    clamp: Option<(f64, f64)>,
) -> Option<(f64, f64)> {
    let (lo, hi) = finite_range(values)?;
    let span = (hi - lo).max(min_span).max(f64::MIN_POSITIVE);
    let extra = (span - (hi - lo)) / 2.0;
    let (mut a, mut b) = (lo - extra - pad * span, hi + extra + pad * span);
    if let Some((c0, c1)) = clamp {
        if a < c0 {
            b = (b + (c0 - a)).min(c1);
            a = c0;
        }
        if b > c1 {
            a = (a - (b - c1)).max(c0);
            b = c1;
        }
    }
    Some((a, b))
}

/// A tick label for `v` on an axis spanning `span`: as many decimals as the span needs (about
/// three significant digits of the span), trailing zeros kept equal along an axis, and anything that
/// rounds to zero written `0`. Very large or very small spans use exponent notation.
pub fn fmt_tick(v: f64, span: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let span = span.abs();
    if span > 0.0 && v.abs() < span * 1e-9 {
        return "0".into();
    }
    let mag = v.abs().max(span);
    if mag >= 1e6 || (mag > 0.0 && mag < 1e-3) {
        return format!("{v:.2e}");
    }
    // Two significant digits of the span, or more when the tick itself needs them (0.025).
    let mut decimals = if span > 0.0 {
        (1.0 - span.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        3
    };
    let mut s = format!("{v:.decimals$}");
    while decimals < 6 && s.parse::<f64>().is_ok_and(|r| (r - v).abs() > span * 1e-6) {
        decimals += 1;
        s = format!("{v:.decimals$}");
    }
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        "0".into()
    } else {
        s
    }
}

/// A count on a y axis: an integer, thousands as `k`.
fn fmt_count(v: f64) -> String {
    if v.abs() < 0.5 {
        "0".into()
    } else if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

/// Counts of `values` in `bins` equal bins over [lo, hi].
fn bin_counts(values: &[f32], lo: f64, hi: f64, bins: usize) -> Vec<u64> {
    let width = (hi - lo) / bins as f64;
    let mut c = vec![0u64; bins];
    for v in values.iter().map(|x| *x as f64).filter(|x| x.is_finite()) {
        let i = (((v - lo) / width).floor().max(0.0) as usize).min(bins - 1);
        c[i] += 1;
    }
    c
}

/// A chart area that only says "no data".
fn no_data<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (w, h) = area.dim_in_pixel();
    area.titled(title, (FONT, 18))
        .map_err(|e| plot_err(title, e))?;
    area.draw(&Text::new(
        "no data",
        (w as i32 / 2 - 25, h as i32 / 2),
        (FONT, 16).into_font(),
    ))
    .map_err(|e| plot_err(title, e))?;
    Ok(())
}

/// One histogram panel on `area`: bars of `values` in `bins` bins over [lo, hi], optional vertical
/// lines at `marks`, legend inside the frame.
fn histogram_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    (lo, hi): (f64, f64),
    values: &[f32],
    bins: usize,
    bar_label: &str,
    color: RGBColor,
    marks: Option<(&[f32], &str)>,
    legend_at: SeriesLabelPosition,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let e = |e| plot_err(caption, e);
    let counts = bin_counts(values, lo, hi, bins);
    // Headroom above the highest bar for the legend.
    let ymax = counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.3;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 15))
        .margin(8)
        .margin_right(20)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(lo..hi, 0.0..ymax)
        .map_err(e)?;
    let span = hi - lo;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(9)
        .y_labels(5)
        .x_desc("weight value")
        .y_desc("count")
        .x_label_formatter(&|v| fmt_tick(*v, span))
        .y_label_formatter(&|v| fmt_count(*v))
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.12))
        .axis_desc_style((FONT, 13))
        .label_style((FONT, 12))
        .draw()
        .map_err(e)?;
    let width = span / bins as f64;
    chart
        .draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| {
                    let x0 = lo + i as f64 * width;
                    Rectangle::new(
                        [(x0, 0.0), (x0 + width, *n as f64)],
                        color.mix(0.6).filled(),
                    )
                }),
        )
        .map_err(e)?
        .label(bar_label)
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.mix(0.6).filled())
        });
    if let Some((marks, label)) = marks {
        let red = PALETTE[1];
        let mut first = true;
        for m in marks.iter().map(|m| *m as f64).filter(|m| m.is_finite()) {
            let s = chart
                .draw_series(LineSeries::new([(m, 0.0), (m, ymax)], red.stroke_width(1)))
                .map_err(e)?;
            if first {
                s.label(label).legend(move |(x, y)| {
                    PathElement::new(vec![(x + 6, y - 6), (x + 6, y + 6)], red.stroke_width(2))
                });
                first = false;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 12))
        .draw()
        .map_err(e)?;
    Ok(())
}

/// One layer's weight distribution through the pipeline, paper-style: top, the `dense` weights
/// (all of them); bottom, the nonzero weights after pruning and masked finetuning (`pruned`, zeros
/// dropped here) with the shared values `centroids` as vertical lines. Both panels share the x range.
pub fn weight_distribution(
    layer: &str,
    dense: &[f32],
    pruned: &[f32],
    centroids: &[f32],
    bins: usize,
) -> Result<String> {
    let bins = bins.max(1);
    let title = format!("{layer}: weight distribution");
    let nonzero: Vec<f32> = pruned.iter().copied().filter(|v| *v != 0.0).collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, 2 * H - 80)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(&title, e))?;
        let xr = zoomed_range(
            dense
                .iter()
                .chain(&nonzero)
                .chain(centroids)
                .map(|v| *v as f64),
            0.02,
            1e-6,
            None,
        );
        let Some(xr) = xr else {
            no_data(&root, &title)?;
            root.present().map_err(|e| plot_err(&title, e))?;
            drop(root);
            return Ok(svg);
        };
        let area = root
            .titled(&title, (FONT, 18))
            .map_err(|e| plot_err(&title, e))?;
        let (top, bottom) = area.split_vertically(area.dim_in_pixel().1 / 2);
        histogram_panel(
            &top,
            &format!("dense: all {} weights", dense.len()),
            xr,
            dense,
            bins,
            "dense weights",
            PALETTE[7],
            None,
            SeriesLabelPosition::UpperRight,
        )?;
        let kept = if dense.is_empty() {
            String::new()
        } else {
            format!(
                " ({:.1} % kept)",
                100.0 * nonzero.len() as f64 / dense.len() as f64
            )
        };
        let centroid_label = format!("{} shared values (centroids)", centroids.len());
        histogram_panel(
            &bottom,
            &format!(
                "after pruning + finetune: {} nonzero weights{kept}, and the shared values",
                nonzero.len()
            ),
            xr,
            &nonzero,
            bins,
            "nonzero weights after pruning",
            PALETTE[0],
            Some((centroids, &centroid_label)),
            // Pruning empties the middle of the axis: the legend goes there.
            SeriesLabelPosition::UpperMiddle,
        )?;
        root.present().map_err(|e| plot_err(&title, e))?;
    }
    Ok(svg)
}

/// Top-1 after each stage on a zoomed y axis (see [`zoomed_range`]): a line through the stages, each
/// point labelled with its value above and its `note` below (one line per `\n`); `footnote`, if not
/// empty, is written under the chart (one line per `\n`).
pub fn stage_accuracy(title: &str, points: &[StagePoint], footnote: &str) -> Result<String> {
    let mut svg = String::new();
    {
        let e = |e| plot_err(title, e);
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let Some((y0, y1)) = zoomed_range(
            points.iter().map(|p| p.accuracy),
            0.35,
            0.01,
            Some((0.0, 1.0)),
        ) else {
            no_data(&root, title)?;
            root.present().map_err(e)?;
            drop(root);
            return Ok(svg);
        };
        let (main, foot) = if footnote.is_empty() {
            (root.clone(), None)
        } else {
            let lines = footnote.lines().count() as u32;
            let (m, f) = root.split_vertically(H - 10 - 14 * lines);
            (m, Some(f))
        };
        let n = points.len();
        let names: Vec<String> = points.iter().map(|p| p.stage.clone()).collect();
        let mut chart = ChartBuilder::on(&main)
            .caption(title, (FONT, 18))
            .margin(10)
            .margin_right(24)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), y0..y1)
            .map_err(e)?;
        let span = y1 - y0;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_desc("top-1 (test split)")
            .y_label_formatter(&|v| fmt_tick(*v, span))
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.12))
            .axis_desc_style((FONT, 13))
            .label_style((FONT, 12))
            .draw()
            .map_err(e)?;
        // Stage names under the plotting area, one per point (the category axis).
        let blue = PALETTE[0];
        let xy: Vec<(f64, f64)> = points
            .iter()
            .enumerate()
            .filter(|(_, p)| p.accuracy.is_finite())
            .map(|(i, p)| (i as f64, p.accuracy))
            .collect();
        chart
            .draw_series(LineSeries::new(xy.iter().copied(), blue.stroke_width(2)))
            .map_err(e)?;
        chart
            .draw_series(
                xy.iter()
                    .map(|&(x, y)| Circle::new((x, y), 4, blue.filled())),
            )
            .map_err(e)?;
        let font = (FONT, 12).into_font();
        let small = (FONT, 11).into_font().color(&PALETTE[1]);
        chart
            .draw_series(
                points
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.accuracy.is_finite())
                    .map(|(i, p)| {
                        let label = format!("{:.4}", p.accuracy);
                        EmptyElement::at((i as f64, p.accuracy))
                            + Text::new(label, (-20, -20), font.clone())
                    }),
            )
            .map_err(e)?;
        // Notes under each point, one text per line, centred (by an estimate of the text width).
        for (i, p) in points.iter().enumerate() {
            if !p.accuracy.is_finite() {
                continue;
            }
            for (k, line) in p.note.lines().enumerate() {
                chart
                    .draw_series(std::iter::once(
                        EmptyElement::at((i as f64, p.accuracy))
                            + Text::new(
                                line.to_string(),
                                (-(3 * line.chars().count() as i32), 10 + 14 * k as i32),
                                small.clone(),
                            ),
                    ))
                    .map_err(e)?;
            }
        }
        let (px, _) = chart.plotting_area().get_pixel_range();
        let (_, py) = chart.plotting_area().get_pixel_range();
        let step = (px.end - px.start) as f64 / n.max(1) as f64;
        for (i, name) in names.iter().enumerate() {
            let cx = px.start as f64 + step * (i as f64 + 0.5);
            main.draw(&Text::new(
                name.clone(),
                (cx as i32 - (3.3 * name.len() as f64) as i32, py.end + 10),
                (FONT, 12).into_font(),
            ))
            .map_err(e)?;
        }
        main.draw(&PathElement::new(
            vec![(px.start, py.end), (px.end, py.end)],
            BLACK,
        ))
        .map_err(e)?;
        if let Some(f) = foot {
            for (k, line) in footnote.lines().enumerate() {
                f.draw(&Text::new(
                    line,
                    (12, 2 + 14 * k as i32),
                    (FONT, 11).into_font(),
                ))
                .map_err(e)?;
            }
        }
        root.present().map_err(e)?;
    }
    Ok(svg)
}

/// Series with more points than this are drawn without markers.
const MARKER_LIMIT: usize = 60;

/// The series' points with both coordinates finite (what is drawn).
fn finite_points(s: &Series) -> Vec<(f64, f64)> {
    s.points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// The corner of the plot area whose legend-sized box the lines cross least: every point and eight
/// evenly spaced points of every segment between neighbours are counted. The box is about a third of the
/// width and a line of height per series; ties go to lower-left, lower-right, upper-right, upper-left, in
/// that order.
pub fn legend_corner(
    series: &[Series],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> SeriesLabelPosition {
    let (w, h) = ((x1 - x0).max(1e-300), (y1 - y0).max(1e-300));
    let bw = 0.36;
    let bh = (0.08 + 0.065 * series.len() as f64).min(0.9);
    // Corners in normalized coordinates: (x from the left, y from the bottom) ranges.
    let corners = [
        (SeriesLabelPosition::LowerLeft, (0.0, bw), (0.0, bh)),
        (SeriesLabelPosition::LowerRight, (1.0 - bw, 1.0), (0.0, bh)),
        (
            SeriesLabelPosition::UpperRight,
            (1.0 - bw, 1.0),
            (1.0 - bh, 1.0),
        ),
        (SeriesLabelPosition::UpperLeft, (0.0, bw), (1.0 - bh, 1.0)),
    ];
    let mut counts = [0usize; 4];
    let mut add = |x: f64, y: f64| {
        let (u, v) = ((x - x0) / w, (y - y0) / h);
        for (c, (_, xr, yr)) in counts.iter_mut().zip(&corners) {
            if (xr.0..=xr.1).contains(&u) && (yr.0..=yr.1).contains(&v) {
                *c += 1;
            }
        }
    };
    for s in series {
        let pts = finite_points(s);
        for (i, &(x, y)) in pts.iter().enumerate() {
            add(x, y);
            if let Some(&(nx, ny)) = pts.get(i + 1) {
                for k in 1..=8 {
                    let t = k as f64 / 9.0;
                    add(x + t * (nx - x), y + t * (ny - y));
                }
            }
        }
    }
    let best = (0..4).min_by_key(|&i| (counts[i], i)).unwrap_or(0);
    corners
        .into_iter()
        .nth(best)
        .map_or(SeriesLabelPosition::LowerLeft, |c| c.0)
}

/// A line chart with markers, one line per series (e.g. top-1 against pruned % per layer), the legend
/// inside the frame, the y axis zoomed to the data.
pub fn lines(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> Result<String> {
    let mut svg = String::new();
    {
        let e = |e| plot_err(title, e);
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let xs = zoomed_range(
            series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
            0.03,
            1e-9,
            None,
        );
        let ys = zoomed_range(
            series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
            0.08,
            0.01,
            None,
        );
        let (Some((x0, x1)), Some((y0, y1))) = (xs, ys) else {
            no_data(&root, title)?;
            root.present().map_err(e)?;
            drop(root);
            return Ok(svg);
        };
        let mut chart: ChartContext<'_, _, Cartesian2d<RangedCoordf64, RangedCoordf64>> =
            ChartBuilder::on(&root)
                .caption(title, (FONT, 18))
                .margin(10)
                .margin_right(24)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(e)?;
        let (xspan, yspan) = (x1 - x0, y1 - y0);
        chart
            .configure_mesh()
            .x_labels(10)
            .y_labels(6)
            .x_desc(xlabel)
            .y_desc(ylabel)
            .x_label_formatter(&|v| fmt_tick(*v, xspan))
            .y_label_formatter(&|v| fmt_tick(*v, yspan))
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.12))
            .axis_desc_style((FONT, 13))
            .label_style((FONT, 12))
            .draw()
            .map_err(e)?;
        for (k, s) in series.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            // Earlier series get larger markers, so where a later one coincides with them (layers
            // equally insensitive, or all at chance at 100 %) their colours still ring its points.
            let wider = (series.len() - 1 - k).min(3) as i32;
            let pts = finite_points(s);
            // Long trajectories (optimization steps) are drawn as lines alone, earlier series
            // wider for the same reason; markers would merge into a band.
            let long = pts.len() > MARKER_LIMIT;
            let width = if long { 2 + 2 * wider as u32 } else { 2 };
            chart
                .draw_series(LineSeries::new(
                    pts.iter().copied(),
                    color.stroke_width(width),
                ))
                .map_err(e)?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            if !long {
                chart
                    .draw_series(
                        pts.iter()
                            .map(|&p| Circle::new(p, 3 + 2 * wider, color.filled())),
                    )
                    .map_err(e)?;
            }
        }
        chart
            .configure_series_labels()
            .position(legend_corner(series, (x0, x1), (y0, y1)))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 12))
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos_name(p: SeriesLabelPosition) -> &'static str {
        match p {
            SeriesLabelPosition::LowerLeft => "lower-left",
            SeriesLabelPosition::LowerRight => "lower-right",
            SeriesLabelPosition::UpperRight => "upper-right",
            SeriesLabelPosition::UpperLeft => "upper-left",
            _ => "other",
        }
    }

    #[test]
    fn the_legend_goes_where_the_lines_are_not() {
        let line = |pts: Vec<(f64, f64)>| Series {
            label: "s".into(),
            points: pts,
        };
        // A falling loss curve: high on the left, low on the right → the upper-right corner is free.
        let falling = line(
            (0..200)
                .map(|i| (i as f64, (-0.03 * i as f64).exp()))
                .collect(),
        );
        let at = legend_corner(std::slice::from_ref(&falling), (0.0, 199.0), (0.0, 1.0));
        assert_eq!(pos_name(at), "upper-right");
        // A rising accuracy curve: lower-right and upper-left are free; lower-right wins the tie.
        let rising = line((0..50).map(|i| (i as f64, i as f64 / 49.0)).collect());
        let at = legend_corner(std::slice::from_ref(&rising), (0.0, 49.0), (0.0, 1.0));
        assert_eq!(pos_name(at), "lower-right");
        // Sensitivity curves: flat at the top, then falling at the right → lower-left is free.
        let sens = line(vec![
            (0.0, 0.9),
            (50.0, 0.9),
            (80.0, 0.85),
            (90.0, 0.5),
            (100.0, 0.1),
        ]);
        let at = legend_corner(std::slice::from_ref(&sens), (0.0, 100.0), (0.1, 0.9));
        assert_eq!(pos_name(at), "lower-left");
        // Segments count, not only the points: two points outside every box, their line across the
        // lower-left one.
        let diag = line(vec![(0.0, 0.4), (0.4, 0.0)]);
        let at = legend_corner(std::slice::from_ref(&diag), (0.0, 1.0), (0.0, 1.0));
        assert_eq!(pos_name(at), "lower-right");
    }

    #[test]
    fn weight_distribution_is_svg_with_both_panels_and_the_centroids() {
        let dense: Vec<f32> = (0..2000)
            .map(|i| ((i as f32) / 300.0).sin() * 0.2)
            .collect();
        let pruned: Vec<f32> = dense
            .iter()
            .map(|v| if v.abs() < 0.1 { 0.0 } else { *v })
            .collect();
        let centroids = [-0.18f32, -0.12, 0.12, 0.18];
        let svg = weight_distribution("fc1.weight <x>", &dense, &pruned, &centroids, 40).unwrap();
        assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("fc1.weight &lt;x&gt;: weight distribution"),
            "title escaped"
        );
        assert!(svg.contains("dense: all 2000 weights"));
        assert!(svg.contains("4 shared values (centroids)"));
        assert!(svg.matches("<rect").count() > 20);
    }

    #[test]
    fn empty_and_constant_inputs_do_not_panic() {
        assert!(weight_distribution("t", &[], &[], &[], 10)
            .unwrap()
            .contains("no data"));
        assert!(
            weight_distribution("t", &[1.0, 1.0], &[1.0, 1.0], &[1.0], 10)
                .unwrap()
                .contains("<rect")
        );
        assert!(lines("t", "x", "y", &[]).unwrap().contains("no data"));
        let one = Series {
            label: "a".into(),
            points: vec![(0.5, 0.9)],
        };
        assert!(lines("t", "x", "y", &[one]).unwrap().contains("<circle"));
        assert!(stage_accuracy("t", &[], "").unwrap().contains("no data"));
        let nan = StagePoint {
            stage: "dense".into(),
            accuracy: f64::NAN,
            note: String::new(),
        };
        assert!(stage_accuracy("t", &[nan], "").unwrap().contains("no data"));
    }

    #[test]
    fn stage_accuracy_writes_values_notes_and_stage_names() {
        let p = |s: &str, a: f64, n: &str| StagePoint {
            stage: s.into(),
            accuracy: a,
            note: n.into(),
        };
        let svg = stage_accuracy(
            "accuracy",
            &[p("dense", 0.9012, "1×"), p("decoded", 0.8999, "file 40.1×")],
            "footnote here",
        )
        .unwrap();
        for want in [
            "0.9012",
            "0.8999",
            "dense",
            "decoded",
            "file 40.1×",
            "footnote here",
        ] {
            assert!(svg.contains(want), "{want} missing");
        }
    }

    #[test]
    fn accuracy_axis_is_zoomed_not_from_zero() {
        let (lo, hi) = zoomed_range([0.86, 0.88, 0.90], 0.35, 0.01, Some((0.0, 1.0))).unwrap();
        assert!(lo > 0.8 && lo < 0.86, "lo {lo}");
        assert!(hi > 0.90 && hi <= 1.0, "hi {hi}");
        // Equal values still get a span; the clamp keeps the axis inside [0, 1] with its width.
        let (lo, hi) = zoomed_range([0.995, 0.995], 0.35, 0.01, Some((0.0, 1.0))).unwrap();
        assert!(lo < 0.995 && hi == 1.0 && hi - lo > 0.01 - 1e-12);
        assert!(zoomed_range([f64::NAN], 0.1, 0.01, None).is_none());
    }

    #[test]
    fn ticks_are_clean() {
        assert_eq!(fmt_tick(-2.8e-17, 0.1), "0");
        assert_eq!(fmt_tick(0.0, 0.1), "0");
        assert_eq!(fmt_tick(0.875, 0.06), "0.875");
        assert_eq!(fmt_tick(0.9, 0.06), "0.900");
        assert_eq!(fmt_tick(0.84, 0.11), "0.84");
        assert_eq!(fmt_tick(50.0, 80.0), "50");
        assert_eq!(fmt_tick(-0.15, 0.5), "-0.15");
        assert_eq!(fmt_tick(0.025, 0.4), "0.025");
        assert_eq!(fmt_count(12_000.0), "12k");
        assert_eq!(fmt_count(0.2), "0");
    }
}
