//! Results as bdevperf's table (plus percentiles) or as JSON.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::job::JobResult;

/// Derived figures of one job.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Seconds.
    pub runtime_s: f64,
    /// Requests per second.
    pub iops: f64,
    /// MiB per second.
    pub mibps: f64,
    /// Failed requests per second.
    pub fail_per_s: f64,
    /// Mean latency, µs.
    pub avg_us: f64,
    /// Minimum latency, µs.
    pub min_us: f64,
    /// Maximum latency, µs.
    pub max_us: f64,
    /// Percentiles 50, 90, 99, 99.9, µs.
    pub pct_us: [f64; 4],
}

/// All jobs' latencies in one histogram, with its tick rate (the first job's).
pub fn merged(results: &[JobResult]) -> Option<(Histogram<u64>, u64)> {
    let first = results.first()?;
    let mut h = first.latency_ticks.clone();
    for r in &results[1..] {
        h.add(&r.latency_ticks).ok()?;
    }
    Some((h, first.tick_rate.max(1)))
}

/// Percentiles 50, 90, 99, 99.9 (µs) over every job's requests.
pub fn total_percentiles(results: &[JobResult]) -> [f64; 4] {
    match merged(results) {
        Some((h, rate)) if !h.is_empty() => [50.0, 90.0, 99.0, 99.9]
            .map(|q| h.value_at_quantile(q / 100.0) as f64 * 1e6 / rate as f64),
        _ => [0.0; 4],
    }
}

/// Computes the figures of a job.
pub fn figures(r: &JobResult) -> Figures {
    let s = r.runtime.as_secs_f64().max(1e-9);
    let us = |ticks: u64| ticks as f64 * 1e6 / r.tick_rate.max(1) as f64;
    let h = &r.latency_ticks;
    let empty = h.is_empty();
    Figures {
        runtime_s: s,
        iops: r.ios as f64 / s,
        mibps: r.bytes as f64 / s / (1024.0 * 1024.0),
        fail_per_s: r.errors as f64 / s,
        avg_us: if empty {
            0.0
        } else {
            h.mean() * 1e6 / r.tick_rate.max(1) as f64
        },
        min_us: if empty { 0.0 } else { us(h.min()) },
        max_us: if empty { 0.0 } else { us(h.max()) },
        pct_us: [50.0, 90.0, 99.0, 99.9].map(|q| {
            if empty {
                0.0
            } else {
                us(h.value_at_quantile(q / 100.0))
            }
        }),
    }
}

/// bdevperf's table with p50/p90/p99/p99.9 columns.
pub fn table(results: &[JobResult], depth: u32, io_size: usize) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<28}: {:>10} {:>12} {:>10} {:>10} {:>8} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}\n",
        " Device Information",
        "runtime(s)",
        "IOPS",
        "MiB/s",
        "Fail/s",
        "TO/s",
        "Average",
        "min",
        "max",
        "p50",
        "p90",
        "p99",
        "p99.9"
    ));
    let (mut iops, mut mibps, mut fails) = (0.0, 0.0, 0.0);
    let mut wavg = 0.0;
    for r in results {
        let f = figures(r);
        match r.queue {
            Some(q) => out.push_str(&format!(
                " Job: {} (vhost-user queue {q}, workload: {}, depth: {depth}, IO size: {io_size})\n",
                r.bdev,
                r.workload.name()
            )),
            None => out.push_str(&format!(
                " Job: {} (Core Mask 0x{:x}, workload: {}, depth: {depth}, IO size: {io_size})\n",
                r.bdev,
                1u128 << r.core.min(127),
                r.workload.name()
            )),
        }
        out.push_str(&format!(
            "\t {:<20}: {:>10.2} {:>12.2} {:>10.2} {:>10.2} {:>8.2} {:>10.2} {:>10.2} {:>10.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
            r.bdev, f.runtime_s, f.iops, f.mibps, f.fail_per_s, 0.0, f.avg_us, f.min_us, f.max_us,
            f.pct_us[0], f.pct_us[1], f.pct_us[2], f.pct_us[3]
        ));
        if r.miscompares > 0 {
            out.push_str(&format!("\t {} verify miscompares\n", r.miscompares));
        }
        iops += f.iops;
        mibps += f.mibps;
        fails += f.fail_per_s;
        wavg += f.avg_us * f.iops;
    }
    out.push_str(&format!(" {}\n", "=".repeat(150)));
    let p = total_percentiles(results);
    out.push_str(&format!(
        "{:<28}: {:>10} {:>12.2} {:>10.2} {:>10.2} {:>8.2} {:>10.2} {:>10} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
        " Total",
        "",
        iops,
        mibps,
        fails,
        0.0,
        if iops > 0.0 { wavg / iops } else { 0.0 },
        "",
        "",
        p[0],
        p[1],
        p[2],
        p[3]
    ));
    out
}

/// The same results as JSON for scripts.
pub fn json(results: &[JobResult], cpu_seconds: f64) -> Value {
    let jobs: Vec<Value> = results
        .iter()
        .map(|r| {
            let f = figures(r);
            json!({
                "bdev": r.bdev, "core": r.core, "queue": r.queue, "workload": r.workload.name(),
                "runtime_s": f.runtime_s, "ios": r.ios, "iops": f.iops, "mibps": f.mibps,
                "errors": r.errors, "miscompares": r.miscompares,
                "latency_us": {"avg": f.avg_us, "min": f.min_us, "max": f.max_us,
                    "p50": f.pct_us[0], "p90": f.pct_us[1], "p99": f.pct_us[2], "p99_9": f.pct_us[3]},
            })
        })
        .collect();
    let total_ios: u64 = results.iter().map(|r| r.ios).sum();
    let p = total_percentiles(results);
    json!({
        "jobs": jobs,
        "total_iops": results.iter().map(|r| figures(r).iops).sum::<f64>(),
        "total_errors": results.iter().map(|r| r.errors).sum::<u64>(),
        "total_miscompares": results.iter().map(|r| r.miscompares).sum::<u64>(),
        "total_latency_us": {"p50": p[0], "p90": p[1], "p99": p[2], "p99_9": p[3]},
        "cpu_seconds": cpu_seconds,
        "cpu_seconds_per_million_ios": if total_ios > 0 { cpu_seconds * 1e6 / total_ios as f64 } else { 0.0 },
    })
}
