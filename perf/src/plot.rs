//! `--plot FILE.svg`: the latency distribution of a run as an SVG picture (plotters' SVG
//! back-end only: no fonts, no bitmaps, no system libraries).
//!
//! Top: the share of requests per latency bin (log-spaced bins, log latency axis), for all
//! jobs together. Bottom: the cumulative distribution per job (and the total), with the
//! total's p50, p99 and p99.9 marked.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::job::JobResult;
use crate::report::merged;

/// Bins per decade of latency in the histogram panel.
const BINS_PER_DECADE: f64 = 20.0;

/// (latency µs, count) of every recorded value.
fn points_us(h: &Histogram<u64>, rate: u64) -> Vec<(f64, u64)> {
    h.iter_recorded()
        .map(|v| {
            (
                v.value_iterated_to() as f64 * 1e6 / rate as f64,
                v.count_at_value(),
            )
        })
        .collect()
}

/// Cumulative share (percent) at each recorded latency.
fn cdf(h: &Histogram<u64>, rate: u64) -> Vec<(f64, f64)> {
    let total = h.len().max(1) as f64;
    let mut acc = 0u64;
    points_us(h, rate)
        .into_iter()
        .map(|(us, c)| {
            acc += c;
            (us, acc as f64 * 100.0 / total)
        })
        .collect()
}

/// Share of requests (percent) per log-spaced bin, as (bin centre µs, percent).
fn density(h: &Histogram<u64>, rate: u64, lo: f64) -> Vec<(f64, f64)> {
    let total = h.len().max(1) as f64;
    let mut bins: Vec<f64> = Vec::new();
    for (us, c) in points_us(h, rate) {
        let b = ((us / lo).log10() * BINS_PER_DECADE).floor().max(0.0) as usize;
        if bins.len() <= b {
            bins.resize(b + 1, 0.0);
        }
        bins[b] += c as f64;
    }
    bins.iter()
        .enumerate()
        .map(|(i, c)| {
            let centre = lo * 10f64.powf((i as f64 + 0.5) / BINS_PER_DECADE);
            (centre, c * 100.0 / total)
        })
        .collect()
}

/// Writes the picture to `path`.
pub fn latency_svg(results: &[JobResult], path: &Path, title: &str) -> Result<(), String> {
    let (total, rate) = merged(results).ok_or("no results to plot")?;
    if total.is_empty() {
        return Err("no completed requests to plot".into());
    }
    let us = |t: u64| t as f64 * 1e6 / rate as f64;
    let lo = 10f64.powf(us(total.min().max(1)).log10().floor());
    let hi = 10f64.powf(us(total.max()).log10().ceil()).max(lo * 10.0);
    let dens = density(&total, rate, lo);
    let dmax = dens.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.1;

    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|x| format!("{}: {x}", path.display()))?;
    let (top, bottom) = root.split_vertically(330);

    let mut c = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .caption("requests per latency bin (all jobs)", ("sans-serif", 15))
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..dmax)
        .map_err(|x| format!("{}: {x}", path.display()))?;
    c.configure_mesh()
        .x_desc("latency (µs)")
        .y_desc("% of requests")
        .x_label_formatter(&|v| fmt_us(*v))
        .draw()
        .map_err(|x| format!("{}: {x}", path.display()))?;
    c.draw_series(AreaSeries::new(dens.iter().copied(), 0.0, BLUE.mix(0.25)).border_style(BLUE))
        .map_err(|x| format!("{}: {x}", path.display()))?;

    let mut c = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .caption("cumulative distribution", ("sans-serif", 15))
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)
        .map_err(|x| format!("{}: {x}", path.display()))?;
    c.configure_mesh()
        .x_desc("latency (µs)")
        .y_desc("% of requests at or below")
        .x_label_formatter(&|v| fmt_us(*v))
        .draw()
        .map_err(|x| format!("{}: {x}", path.display()))?;
    let colours = [RED, GREEN, MAGENTA, CYAN, YELLOW, BLACK];
    if results.len() > 1 && results.len() <= colours.len() {
        for (i, r) in results.iter().enumerate() {
            let col = colours[i];
            let label = match r.queue {
                Some(q) => format!("{} queue {q}", r.bdev),
                None => format!("{} core {}", r.bdev, r.core),
            };
            c.draw_series(LineSeries::new(cdf(&r.latency_ticks, rate), col))
                .map_err(|x| format!("{}: {x}", path.display()))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col));
        }
    }
    c.draw_series(LineSeries::new(cdf(&total, rate), BLUE.stroke_width(2)))
        .map_err(|x| format!("{}: {x}", path.display()))?
        .label("all jobs")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
    for q in [50.0, 99.0, 99.9] {
        let v = us(total.value_at_quantile(q / 100.0));
        c.draw_series(std::iter::once(Circle::new((v, q), 4, BLUE.filled())))
            .map_err(|x| format!("{}: {x}", path.display()))?
            .label(format!("p{q} = {v:.1} µs"))
            .legend(|(x, y)| Circle::new((x + 9, y), 4, BLUE.filled()));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| format!("{}: {x}", path.display()))?;
    root.present()
        .map_err(|x| format!("{}: {x}", path.display()))?;
    Ok(())
}

/// Axis label for a latency in µs: 0.5, 20, 300, 4k, 50k.
fn fmt_us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}
