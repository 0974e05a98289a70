//! The sweep's trade-off chart: decoded top-1 against the file's compression ratio, one marker per
//! point, the Pareto front drawn as a line through the points no other point beats on both axes.
//!
//! Drawn with `plotters`' SVG backend only: text is written as SVG `<text>` elements (the viewer picks
//! the font), so no font file or system library is needed.

use plotters::prelude::*;

/// One point of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeoffPoint {
    /// The short text drawn beside the point (the sweep uses its row number in `sweep.md`).
    pub label: String,
    /// `ratio.file`.
    pub ratio: f64,
    /// Decoded top-1.
    pub accuracy: f64,
}

/// Indices of the Pareto-optimal points (larger ratio and larger accuracy are both better), by
/// increasing ratio: a point is on the front unless another one is at least as good on both axes and
/// better on one. Points with a non-finite coordinate are never on it.
pub fn pareto_front(points: &[TradeoffPoint]) -> Vec<usize> {
    let ok = |p: &TradeoffPoint| p.ratio.is_finite() && p.accuracy.is_finite();
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let p = &points[i];
            ok(p)
                && !points.iter().any(|q| {
                    ok(q)
                        && q.ratio >= p.ratio
                        && q.accuracy >= p.accuracy
                        && (q.ratio > p.ratio || q.accuracy > p.accuracy)
                })
        })
        .collect();
    front.sort_by(|&a, &b| points[a].ratio.total_cmp(&points[b].ratio));
    // Equal points: keep one.
    front.dedup_by(|a, b| {
        points[*a].ratio == points[*b].ratio && points[*a].accuracy == points[*b].accuracy
    });
    front
}

/// An axis range around `values`: `below` and `above` times the span of the values as margins (a
/// span under `min_span` counts as `min_span`).
fn range(values: impl Iterator<Item = f64>, min_span: f64, below: f64, above: f64) -> (f64, f64) {
    let v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (0.0, 1.0);
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = (hi - lo).max(min_span);
    let mid = (lo + hi) / 2.0;
    (mid - (0.5 + below) * span, mid + (0.5 + above) * span)
}

/// The chart as SVG text.
pub fn tradeoff_svg(title: &str, points: &[TradeoffPoint]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, 560)).into_drawing_area();
        draw(&root, title, points).map_err(|e| format!("tradeoff plot: {e}"))?;
        root.present().map_err(|e| format!("tradeoff plot: {e}"))?;
    }
    Ok(svg)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    points: &[TradeoffPoint],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (x0, x1) = range(points.iter().map(|p| p.ratio), 1.0, 0.1, 0.1);
    // Headroom above the points for the legend, so it covers none of them.
    let (y0, y1) = range(points.iter().map(|p| p.accuracy), 0.01, 0.1, 0.45);
    let (x0, y0) = (x0.max(0.0), y0.max(0.0));
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("compression ratio (ratio.file: dense fp32 bytes / .dcz bytes)")
        .y_desc("decoded top-1")
        .x_label_formatter(&|x| format!("{x:.0}×"))
        .y_label_formatter(&|y| format!("{y:.3}"))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;

    let blue = RGBColor(31, 119, 180);
    let red = RGBColor(214, 39, 40);
    let ok: Vec<&TradeoffPoint> = points
        .iter()
        .filter(|p| p.ratio.is_finite() && p.accuracy.is_finite())
        .collect();
    chart
        .draw_series(
            ok.iter()
                .map(|p| Circle::new((p.ratio, p.accuracy), 5, blue.filled())),
        )?
        .label("sweep point")
        .legend(move |(x, y)| Circle::new((x + 10, y), 5, blue.filled()));

    let front = pareto_front(points);
    let line: Vec<(f64, f64)> = front
        .iter()
        .map(|&i| (points[i].ratio, points[i].accuracy))
        .collect();
    let names: Vec<&str> = front.iter().map(|&i| points[i].label.as_str()).collect();
    chart
        .draw_series(LineSeries::new(line.clone(), red.stroke_width(2)))?
        .label(format!(
            "Pareto front: {} (no other point has both a higher ratio and a higher top-1)",
            names.join(", ")
        ))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
    chart.draw_series(
        line.iter()
            .map(|&(x, y)| Circle::new((x, y), 7, red.stroke_width(2))),
    )?;
    // Every point's label above and right of its marker.
    chart.draw_series(ok.iter().map(|p| {
        EmptyElement::at((p.ratio, p.accuracy))
            + Text::new(
                p.label.clone(),
                (7, -16),
                ("sans-serif", 12).into_font().color(&RGBColor(60, 60, 60)),
            )
    }))?;
    // A trade-off leaves the upper right (high ratio and high accuracy) empty: the legend goes there.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(label: &str, ratio: f64, accuracy: f64) -> TradeoffPoint {
        TradeoffPoint {
            label: label.into(),
            ratio,
            accuracy,
        }
    }

    #[test]
    fn the_front_holds_exactly_the_undominated_points() {
        let pts = [
            p("a", 10.0, 0.90),
            p("b", 20.0, 0.88),
            p("c", 15.0, 0.85), // beaten by b on both
            p("d", 30.0, 0.80),
            p("e", 5.0, 0.90), // beaten by a (same accuracy, larger ratio)
            p("f", f64::NAN, 0.99),
        ];
        assert_eq!(pareto_front(&pts), vec![0, 1, 3]);
        assert!(pareto_front(&[]).is_empty());
    }

    #[test]
    fn svg_has_axes_legend_and_labels() {
        let pts = [p("1", 40.0, 0.81), p("2", 30.0, 0.84)];
        let svg = tradeoff_svg("sweep of ci", &pts).unwrap();
        for want in [
            "<svg",
            "sweep of ci",
            "decoded top-1",
            "compression ratio",
            "Pareto front: 2, 1",
            "<circle",
        ] {
            assert!(svg.contains(want), "no `{want}` in the SVG");
        }
        // One point, or none: still a chart.
        tradeoff_svg("one", &pts[..1]).unwrap();
        tradeoff_svg("none", &[]).unwrap();
    }
}
