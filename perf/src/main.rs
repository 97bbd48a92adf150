//! `plexperf`: bdevperf's flags against plexd's engine running in this process.
//!
//! Example: `plexperf --json demo.json -T Malloc0 -q 128 -o 4096 -w randread -t 5`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use plexd_control::MethodTable;
use plexd_engine::reactor::{parse_cpumask, PollMode};
use plexd_engine::Engine;
use plexd_perf::{report, run_jobs, JobSpec, Workload};
use serde_json::Value;

/// A bdevperf-class benchmark running plexd's engine in-process.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Queue depth per job.
    #[arg(short = 'q', default_value_t = 128)]
    queue_depth: u32,
    /// I/O size in bytes.
    #[arg(short = 'o', default_value_t = 4096)]
    io_size: usize,
    /// Workload: read, write, randread, randwrite, rw, randrw, verify, unmap, flush, write_zeroes.
    #[arg(short = 'w', default_value = "randread")]
    workload: Workload,
    /// Run time in seconds.
    #[arg(short = 't', default_value_t = 5.0)]
    time: f64,
    /// Read percentage for rw/randrw.
    #[arg(short = 'M', default_value_t = 50)]
    read_pct: u32,
    /// Reactor cpumask.
    #[arg(short = 'm', default_value = "0x1")]
    cpumask: String,
    /// SPDK-format JSON config creating the bdevs.
    #[arg(long = "json")]
    config: Option<PathBuf>,
    /// Bdevs to test (default: every bdev in the config).
    #[arg(short = 'T')]
    targets: Vec<String>,
    /// Every reactor drives every bdev (default: bdevs are spread over reactors).
    #[arg(short = 'C')]
    all_cores: bool,
    /// Reactor idle policy.
    #[arg(long, default_value = "busy")]
    poll_mode: PollMode,
    /// Output format: table or json.
    #[arg(long, default_value = "table")]
    output: String,
    /// Stop each job after this many requests instead of after -t.
    #[arg(long)]
    ios: Option<u64>,
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the provided, properly sized struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn load_config(engine: &Arc<Engine>, path: &PathBuf) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let root: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut table = MethodTable::new();
    plexd_engine::register_rpcs(&mut table, engine);
    let mut created = Vec::new();
    for sub in root
        .get("subsystems")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for e in sub
            .get("config")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let method = e.get("method").and_then(Value::as_str).unwrap_or_default();
            let Some(m) = table.get(method) else {
                continue;
            };
            let r = (m.handler)(e.get("params").cloned())
                .map_err(|e| format!("{method}: {}", e.message))?;
            if let Some(name) = r.as_str() {
                created.push(name.to_string());
            }
        }
    }
    Ok(created)
}

fn run(args: Args) -> Result<bool, String> {
    let cores = parse_cpumask(&args.cpumask).map_err(|e| e.to_string())?;
    let engine = Engine::start(&cores, args.poll_mode).map_err(|e| e.to_string())?;
    let created = match &args.config {
        Some(p) => load_config(&engine, p)?,
        None => Vec::new(),
    };
    let targets = if args.targets.is_empty() {
        created
    } else {
        args.targets.clone()
    };
    if targets.is_empty() {
        return Err("no bdev to test: pass --json CONFIG and/or -T NAME".into());
    }
    let mut specs = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let reactors: Vec<usize> = if args.all_cores {
            (0..cores.len()).collect()
        } else {
            vec![i % cores.len()]
        };
        let count = reactors.len() as u32;
        for (k, r) in reactors.into_iter().enumerate() {
            specs.push(JobSpec {
                region: (k as u32, count),
                stop: None,
                bdev: t.clone(),
                reactor: r,
                workload: args.workload,
                io_size: args.io_size,
                queue_depth: args.queue_depth,
                read_pct: args.read_pct.min(100),
                duration: if args.ios.is_some() {
                    None
                } else {
                    Some(Duration::from_secs_f64(args.time))
                },
                max_ios: args.ios,
                seed: 0x5eed + specs.len() as u64,
            });
        }
    }
    let progress = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_seconds();
    let results = run_jobs(&engine, &specs, progress.clone()).map_err(|e| e.to_string())?;
    let cpu = cpu_seconds() - cpu0;
    let _ = progress.load(Ordering::Relaxed);
    engine.shutdown();
    if args.output == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::json(&results, cpu)).unwrap_or_default()
        );
    } else {
        print!(
            "{}",
            report::table(&results, args.queue_depth, args.io_size)
        );
        let ios: u64 = results.iter().map(|r| r.ios).sum();
        if ios > 0 {
            println!(
                " CPU: {cpu:.2} s ({:.3} s per million I/Os)",
                cpu * 1e6 / ios as f64
            );
        }
    }
    Ok(results.iter().all(|r| r.errors == 0 && r.miscompares == 0))
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("plexperf: some requests failed or miscompared");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("plexperf: {e}");
            ExitCode::FAILURE
        }
    }
}
