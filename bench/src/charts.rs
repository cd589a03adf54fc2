//! The benchmark draws what it measures: SVG charts, beside the table,
//! from the same medians (plotters, its SVG backend: no fonts needed).
//!
//! - `open-loop-N.svg`, one for each connection count N: p50 and p99
//!   latency against offered load, a line for each server;
//! - `round-trips.svg`: closed-loop round trips a second for each load, a
//!   bar for each server.

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// One server's line: its name, and (offered %, p50 µs, p99 µs) points.
pub struct Latencies<'a> {
    pub server: &'a str,
    pub points: Vec<(f64, f64, f64)>,
}

const COLOURS: [RGBColor; 5] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
];

fn failed<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e:?}")
}

/// Latency against offered load, for `conns` connections: p99 solid, p50
/// dashed, a log scale of microseconds.
pub fn open_loop(path: &Path, conns: usize, lines: &[Latencies<'_>]) -> Result<()> {
    let all = lines.iter().flat_map(|l| l.points.iter().flat_map(|p| [p.1, p.2]));
    let (low, high) = all.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if high <= 0.0 {
        return Ok(());
    }
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let title =
        format!("open loop, {conns} connection{}: latency", if conns == 1 { "" } else { "s" });
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..100f64, ((low * 0.7).max(1.0)..high * 1.5).log_scale())
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("offered load, % of native tokio's saturation (closed loop)")
        .y_desc("latency (µs; p99 solid, p50 dashed)")
        .x_label_formatter(&|x| format!("{x:.0}%"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(failed)?;
    for (line, colour) in lines.iter().zip(COLOURS.iter().cycle()) {
        let p99: Vec<(f64, f64)> = line.points.iter().map(|p| (p.0, p.2)).collect();
        let p50: Vec<(f64, f64)> = line.points.iter().map(|p| (p.0, p.1)).collect();
        let style = colour.stroke_width(2);
        chart
            .draw_series(LineSeries::new(p99.clone(), style))
            .map_err(failed)?
            .label(format!("{} p99", line.server))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart
            .draw_series(p99.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(failed)?;
        chart
            .draw_series(DashedLineSeries::new(p50.clone(), 6, 4, colour.stroke_width(1)))
            .map_err(failed)?
            .label(format!("{} p50", line.server))
            .legend(move |(x, y)| {
                // Dashed, as the line: two short strokes.
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (8, 0)], colour.stroke_width(1))
                    + PathElement::new(vec![(12, 0), (20, 0)], colour.stroke_width(1))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(failed)?;
    root.present().map_err(failed)
}

/// Closed-loop round trips a second: for each load, a bar for each server.
pub fn round_trips(path: &Path, loads: &[&str], servers: &[(&str, Vec<f64>)]) -> Result<()> {
    let high = servers.iter().flat_map(|(_, v)| v.iter().copied()).fold(0f64, f64::max);
    if high <= 0.0 || loads.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("closed loop: round trips a second", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..loads.len() as f64, 0f64..high * 1.15)
        .map_err(failed)?;
    let names: Vec<String> = loads.iter().map(|l| l.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(loads.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = (x - 0.5).round();
            match (x - 0.5 - i).abs() < 0.01 && i >= 0.0 {
                true => names.get(i as usize).cloned().unwrap_or_default(),
                false => String::new(),
            }
        })
        .y_desc("round trips / s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(failed)?;
    let width = 0.8 / servers.len().max(1) as f64;
    for (s, ((server, values), colour)) in servers.iter().zip(COLOURS.iter().cycle()).enumerate() {
        let bars = values.iter().enumerate().map(|(i, &v)| {
            let x = i as f64 + 0.1 + s as f64 * width;
            Rectangle::new([(x, 0.0), (x + width * 0.9, v)], colour.filled())
        });
        chart
            .draw_series(bars)
            .map_err(failed)?
            .label(server.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(failed)?;
    root.present().map_err(failed)
}
