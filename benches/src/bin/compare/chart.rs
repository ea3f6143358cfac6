//! The chart of the report: each scenario's server cost relative to ours,
//! a bar per server, on a log scale.

use crate::report::medians;
use crate::{SCENARIOS, Samples, Server};
use plotters::prelude::*;
use std::path::Path;
use ws_benches::Failure;

/// The bars of a group take this share of a scenario's width.
const GROUP_WIDTH: f64 = 0.8;

pub(crate) fn draw(path: &Path, samples: &Samples) -> Result<(), Failure> {
    let root = SVGBackend::new(path, (1600, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = SCENARIOS.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("Server cost relative to ours (log scale; below 1 a server costs less than ours)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..n - 0.5, (0.05f64..1000f64).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(SCENARIOS.len() * 2 + 1)
        .x_label_formatter(&|x| label(*x))
        .y_desc("cost / ours")
        .draw()?;
    let width = GROUP_WIDTH / Server::ALL.len() as f64;
    for (k, server) in Server::ALL.into_iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let bars = SCENARIOS.iter().enumerate().filter_map(|(i, _)| {
            let first = |s: &crate::Sample| s.figures.first().copied();
            let ours = medians(samples, i, Server::Ours, first)?;
            let cost = medians(samples, i, server, first)? / ours;
            let left = i as f64 - GROUP_WIDTH / 2.0 + k as f64 * width;
            Some(Rectangle::new([(left, 0.05), (left + width * 0.9, cost)], color.filled()))
        });
        chart
            .draw_series(bars)?
            .label(server.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperRight).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// A scenario's name under its group, nothing between groups.
fn label(x: f64) -> String {
    let index = x.round();
    if (x - index).abs() > 0.01 || index < 0.0 {
        return String::new();
    }
    SCENARIOS.get(index as usize).map_or(String::new(), |s| s.short.to_owned())
}
