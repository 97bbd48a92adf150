//! `plexperf`: bdevperf's flags against plexd's engine running in this process, or against
//! any vhost-user-blk back-end through its socket (`--vhost-user`).
//!
//! Examples:
//! `plexperf --json demo.json -T Malloc0 -q 128 -o 4096 -w randread -t 5`;
//! `plexperf --vhost-user /var/tmp/vhost.0 --queues 2 -q 64 -w randrw -t 5`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use plexd_control::MethodTable;
use plexd_engine::reactor::{parse_cpumask, PollMode};
use plexd_engine::volume::manager::VolumeManager;
use plexd_engine::Engine;
use plexd_perf::vhost::{self, BufferPlacement, VhostSpec};
use plexd_perf::{plot, report, run_jobs, JobResult, JobSpec, Workload};
use serde_json::{json, Value};

/// A bdevperf-class benchmark running plexd's engine in-process, or a vhost-user client.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Queue depth per job (per virtqueue with --vhost-user).
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
    /// Reactor cpumask (default 0x1). With --vhost-user: the CPUs the queue threads are pinned
    /// to, round-robin (default: not pinned).
    #[arg(short = 'm')]
    cpumask: Option<String>,
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
    /// Stop each job (each queue) after this many requests instead of after -t.
    #[arg(long)]
    ios: Option<u64>,
    /// Drive a vhost-user-blk back-end through this socket instead of in-process bdevs.
    #[arg(long = "vhost-user", value_name = "SOCKET")]
    vhost_user: Option<PathBuf>,
    /// Virtqueues to drive with --vhost-user, one thread each.
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// Virtqueue size with --vhost-user (default: 3 descriptors per request of -q, ≤ 1024).
    #[arg(long)]
    queue_size: Option<u32>,
    /// With --vhost-user, sleep on the call eventfd instead of busy-polling the used ring.
    #[arg(long)]
    vhost_interrupt: bool,
    /// Where the shared buffer region is mapped: above-rings or anywhere.
    #[arg(long, default_value = "above-rings", hide = true)]
    buffer_placement: BufferPlacement,
    /// Draw the latency distribution into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Count heap allocations on the I/O threads (reactors, or the vhost queue threads) over
    /// the run after a warm-up, and report them per I/O.
    #[arg(long)]
    count_allocs: bool,
    /// Never print the live progress line (it is shown only when stdout is a terminal).
    #[arg(long)]
    no_progress: bool,
}

// ---- allocation accounting -------------------------------------------------------------

/// Counts allocations made on threads marked as I/O threads (`--count-allocs`).
#[global_allocator]
static GLOBAL: plexd_perf::alloc_count::CountingAllocator =
    plexd_perf::alloc_count::CountingAllocator;

fn mark_io_thread() {
    plexd_perf::alloc_count::mark_this_thread();
}

fn no_mark() {}

/// Allocations seen on I/O threads over a window of completed requests.
#[derive(Debug, Clone, Copy)]
struct AllocWindow {
    allocations: u64,
    ios: u64,
}

// ---- the run -----------------------------------------------------------------------------

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the provided, properly sized struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn load_config(
    engine: &Arc<Engine>,
    vm: &Arc<VolumeManager>,
    path: &PathBuf,
) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let root: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut table = MethodTable::new();
    plexd_engine::register_rpcs(&mut table, engine, vm);
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

/// What the main thread watches while the jobs run.
struct Watch {
    /// Completed requests so far (all jobs).
    progress: Arc<AtomicU64>,
    /// Set when the jobs have returned.
    done: Arc<AtomicBool>,
    /// Planned run time, if time-bound.
    time: Option<f64>,
    /// Planned request count over all jobs, if count-bound.
    total_ios: Option<u64>,
    show_progress: bool,
    count_allocs: bool,
}

/// Shows the progress line and takes the allocation window until the jobs are done.
fn watch(w: &Watch) -> Option<AllocWindow> {
    let t0 = Instant::now();
    // Allocation window: from 20% to 85% of the run (by time or by requests), so start-up and
    // the end of the run (results, histograms) stay outside.
    let at = |f: f64| -> (Option<f64>, Option<u64>) {
        (
            w.time.map(|t| t * f),
            w.total_ios.map(|n| (n as f64 * f) as u64),
        )
    };
    let reached = |(t, n): (Option<f64>, Option<u64>), now: f64, p: u64| {
        t.is_some_and(|t| now >= t) || n.is_some_and(|n| p >= n)
    };
    let (from, to) = (at(0.2), at(0.85));
    let mut first: Option<(u64, u64)> = None;
    let mut window = None;
    let mut last_print = (0.0f64, 0u64);
    let mut out = std::io::stdout();
    while !w.done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(if w.count_allocs { 1 } else { 50 }));
        let now = t0.elapsed().as_secs_f64();
        let p = w.progress.load(Ordering::Relaxed);
        if w.count_allocs {
            if first.is_none() && reached(from, now, p) {
                first = Some((p, plexd_perf::alloc_count::allocations()));
            } else if let (Some((p0, a0)), None) = (first, window) {
                if reached(to, now, p) {
                    window = Some(AllocWindow {
                        allocations: plexd_perf::alloc_count::allocations() - a0,
                        ios: p - p0,
                    });
                }
            }
        }
        if w.show_progress && now - last_print.0 >= 1.0 {
            let rate = (p - last_print.1) as f64 / (now - last_print.0);
            let of = match (w.time, w.total_ios) {
                (Some(t), _) => format!("{now:5.1}/{t:.1} s"),
                (None, Some(n)) => format!("{p}/{n} I/Os"),
                _ => format!("{now:5.1} s"),
            };
            let _ = write!(
                out,
                "\r\x1b[K[{of}] {:>12.0} IOPS (last second), {p} I/Os done",
                rate
            );
            let _ = out.flush();
            last_print = (now, p);
        }
    }
    if w.show_progress {
        let _ = write!(out, "\r\x1b[K");
        let _ = out.flush();
    }
    window
}

/// A run's results and what is printed around them.
struct Outcome {
    results: Vec<JobResult>,
    cpu: f64,
    allocs: Option<AllocWindow>,
    extra: Value,
    title: String,
}

fn duration(args: &Args) -> Option<Duration> {
    if args.ios.is_some() {
        None
    } else {
        Some(Duration::from_secs_f64(args.time))
    }
}

fn show_progress(args: &Args) -> bool {
    !args.no_progress && std::io::stdout().is_terminal()
}

fn run_local(args: &Args) -> Result<Outcome, String> {
    let cores =
        parse_cpumask(args.cpumask.as_deref().unwrap_or("0x1")).map_err(|e| e.to_string())?;
    let engine = Engine::start(&cores, args.poll_mode).map_err(|e| e.to_string())?;
    // Configs may build disk groups and volumes (dg_create, volume_create) to measure them.
    let vm = VolumeManager::new(engine.clone());
    let created = match &args.config {
        Some(p) => load_config(&engine, &vm, p)?,
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
                duration: duration(args),
                max_ios: args.ios,
                seed: 0x5eed + specs.len() as u64,
            });
        }
    }
    if args.count_allocs {
        for i in 0..engine.reactors().len() {
            engine
                .reactors()
                .call(i, mark_io_thread)
                .ok_or("could not mark a reactor thread")?;
        }
    }
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let w = Watch {
        progress: progress.clone(),
        done: done.clone(),
        time: args.ios.is_none().then_some(args.time),
        total_ios: args.ios.map(|n| n * specs.len() as u64),
        show_progress: show_progress(args),
        count_allocs: args.count_allocs,
    };
    let cpu0 = cpu_seconds();
    let (results, allocs) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let r = run_jobs(&engine, &specs, progress.clone());
            done.store(true, Ordering::Release);
            r
        });
        let allocs = watch(&w);
        (h.join(), allocs)
    });
    let cpu = cpu_seconds() - cpu0;
    vm.shutdown();
    engine.shutdown();
    let results = results
        .map_err(|_| "the job runner panicked".to_string())?
        .map_err(|e| e.to_string())?;
    let title = format!(
        "plexperf: {} -w {} -q {} -o {} -m {}",
        targets.join(","),
        args.workload.name(),
        args.queue_depth,
        args.io_size,
        args.cpumask.as_deref().unwrap_or("0x1")
    );
    Ok(Outcome {
        results,
        cpu,
        allocs,
        extra: json!({"mode": "in-process", "cpumask": args.cpumask.as_deref().unwrap_or("0x1")}),
        title,
    })
}

fn run_vhost(args: &Args, socket: &Path) -> Result<Outcome, String> {
    let cpus: Vec<usize> = match &args.cpumask {
        Some(m) => parse_cpumask(m)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|c| c as usize)
            .collect(),
        None => Vec::new(),
    };
    let spec = VhostSpec {
        socket: socket.to_path_buf(),
        queues: args.queues.max(1),
        workload: args.workload,
        io_size: args.io_size,
        queue_depth: args.queue_depth,
        read_pct: args.read_pct.min(100),
        duration: duration(args),
        max_ios: args.ios,
        seed: 0x5eed,
        poll: !args.vhost_interrupt,
        queue_size: args.queue_size,
        cpus,
        placement: args.buffer_placement,
        stop: None,
    };
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let w = Watch {
        progress: progress.clone(),
        done: done.clone(),
        time: args.ios.is_none().then_some(args.time),
        total_ios: args.ios.map(|n| n * spec.queues as u64),
        show_progress: show_progress(args),
        count_allocs: args.count_allocs,
    };
    let hook: fn() = if args.count_allocs {
        mark_io_thread
    } else {
        no_mark
    };
    let cpu0 = cpu_seconds();
    let (r, allocs) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let r = vhost::run(&spec, progress.clone(), hook);
            done.store(true, Ordering::Release);
            r
        });
        let allocs = watch(&w);
        (h.join(), allocs)
    });
    let cpu = cpu_seconds() - cpu0;
    let (info, results) = r
        .map_err(|_| "the vhost-user client panicked".to_string())?
        .map_err(|e| e.to_string())?;
    let title = format!(
        "plexperf --vhost-user {} --queues {} -w {} -q {} -o {}",
        socket.display(),
        spec.queues,
        args.workload.name(),
        args.queue_depth,
        args.io_size
    );
    Ok(Outcome {
        results,
        cpu,
        allocs,
        extra: json!({
            "mode": "vhost-user", "socket": socket.display().to_string(), "queues": spec.queues,
            "poll": spec.poll, "device": {"capacity": info.capacity, "block_size": info.block_size,
            "max_queues": info.max_queues, "queue_size": info.queue_size},
        }),
        title,
    })
}

fn run(args: Args) -> Result<bool, String> {
    let o = match &args.vhost_user {
        Some(sock) => run_vhost(&args, sock)?,
        None => run_local(&args)?,
    };
    let ios: u64 = o.results.iter().map(|r| r.ios).sum();
    if let Some(p) = &args.plot {
        plot::latency_svg(&o.results, p, &o.title)?;
    }
    if args.output == "json" {
        let mut v = report::json(&o.results, o.cpu);
        if let Value::Object(m) = &mut v {
            if let Value::Object(extra) = o.extra {
                m.extend(extra);
            }
            if args.count_allocs {
                m.insert(
                    "allocations".into(),
                    match o.allocs {
                        Some(a) => json!({
                            "count": a.allocations, "ios": a.ios,
                            "per_io": a.allocations as f64 / a.ios.max(1) as f64,
                        }),
                        None => Value::Null,
                    },
                );
            }
        }
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!(
            "{}",
            report::table(&o.results, args.queue_depth, args.io_size)
        );
        if ios > 0 {
            println!(
                " CPU: {:.2} s ({:.3} s per million I/Os)",
                o.cpu,
                o.cpu * 1e6 / ios as f64
            );
        }
        if args.count_allocs {
            match o.allocs {
                Some(a) => println!(
                    " Allocations on I/O threads: {} over {} I/Os after warm-up ({:.4} per I/O)",
                    a.allocations,
                    a.ios,
                    a.allocations as f64 / a.ios.max(1) as f64
                ),
                None => println!(" Allocations: the run was too short to measure a window"),
            }
        }
    }
    Ok(o.results
        .iter()
        .all(|r| r.errors == 0 && r.miscompares == 0))
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
