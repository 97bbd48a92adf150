//! `plexd`: the storage target daemon. Starts the reactors, the JSON-RPC socket and the
//! subsystems, loads a config, and shuts down cleanly on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use plexd_control::{RpcServer, RpcState, ServerLimits};
use plexd_engine::reactor::{parse_cpumask, PollMode};
use plexd_engine::volume::manager::VolumeManager;
use plexd_engine::Engine;
use serde_json::Value;

use plexd::framework::{Framework, Subsystem};
use plexd::vhost::controller::Controllers;
use plexd::{config, signals};

/// plexd: a userspace storage target with per-core polling reactors.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Cores to run reactors on: a hex mask (0x3) or a list ([0,2-3]).
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    cpumask: String,
    /// What an idle reactor does: busy (spin), adaptive (spin briefly, then sleep) or
    /// interrupt (sleep at once).
    #[arg(long, default_value = "adaptive")]
    poll_mode: PollMode,
    /// The JSON-RPC Unix socket.
    #[arg(
        short = 'r',
        long = "rpc-socket",
        default_value = "/var/tmp/plexd.sock"
    )]
    rpc_socket: PathBuf,
    /// Directory for vhost-user sockets (`<dir>/<controller>`).
    #[arg(short = 'S', long = "vhost-socket-dir", default_value = "/var/tmp")]
    vhost_socket_dir: PathBuf,
    /// An SPDK-format JSON config to load at start-up.
    #[arg(short = 'c', long = "config", alias = "json")]
    config: Option<PathBuf>,
    /// Start in the start-up state and wait for `framework_start_init`.
    #[arg(long)]
    wait_for_rpc: bool,
    /// Log failing config entries and go on instead of stopping.
    #[arg(long)]
    ignore_config_errors: bool,
    /// Largest JSON-RPC request, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    rpc_max_request: usize,
    /// Most JSON-RPC connections open at once.
    #[arg(long, default_value_t = 128)]
    rpc_max_connections: usize,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive); also PLEXD_LOG.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn init_logging(level: &str) {
    let filter = std::env::var("PLEXD_LOG").unwrap_or_else(|_| level.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn bdev_subsystem(engine: &Arc<Engine>) -> Subsystem {
    let e = engine.clone();
    Subsystem {
        name: "bdev",
        depends_on: &[],
        config: Box::new(move || {
            e.bdevs()
                .list()
                .iter()
                .filter_map(|b| b.driver().config(b))
                .collect::<Vec<Value>>()
        }),
    }
}

/// An error with its chain of causes, for messages that say why (e.g. "No such file").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}

/// Imports every disk group found on the bdevs that exist now (failures are logged: a group
/// in split brain waits for `dg_import select_copy`, the rest of plexd starts).
fn import_disk_groups(vm: &VolumeManager) {
    match vm.dg_import(None, None, None) {
        Ok(groups) if !groups.is_empty() => tracing::info!("imported disk groups: {groups:?}"),
        Ok(_) => {}
        Err(e) => tracing::error!("disk group import at start-up: {}", with_causes(&e)),
    }
}

fn run(args: Args) -> Result<(), String> {
    let cores = parse_cpumask(&args.cpumask).map_err(|e| with_causes(&e))?;
    let engine = Engine::start(&cores, args.poll_mode).map_err(|e| with_causes(&e))?;
    tracing::info!(
        "{} reactor(s) on cores {:?}, poll mode {}",
        cores.len(),
        cores,
        args.poll_mode.as_str()
    );
    let state = if args.wait_for_rpc {
        RpcState::Startup
    } else {
        RpcState::Runtime
    };
    // Start in the start-up state while the config's start-up methods run.
    let fw = Framework::new(engine.clone(), RpcState::Startup);
    let vhost = Controllers::new(engine.clone(), args.vhost_socket_dir.clone());
    let vm = VolumeManager::new(engine.clone());
    fw.install_methods(|t| {
        plexd_engine::register_rpcs(t, &engine, &vm);
        plexd::vhost::rpc::register(t, &vhost, cores.clone());
    });
    fw.add_subsystem(bdev_subsystem(&engine));
    let v = vhost.clone();
    fw.add_subsystem(Subsystem {
        name: "vhost_blk",
        depends_on: &["bdev"],
        config: Box::new(move || plexd::vhost::rpc::saved_config(&v)),
    });

    // Disk groups live on the bdevs a config creates: import them as soon as the config's
    // bdev entries are applied, so its vhost entries can export volumes.
    let v = vm.clone();
    fw.on_subsystem_loaded("bdev", move || import_disk_groups(&v));

    if let Some(path) = &args.config {
        let entries = match config::read(path) {
            Ok(e) => e,
            Err(e) => {
                engine.shutdown();
                return Err(with_causes(&e));
            }
        };
        if let Err(e) = config::apply(&fw, entries, args.wait_for_rpc, args.ignore_config_errors) {
            vhost.shutdown_all();
            engine.shutdown();
            return Err(with_causes(&e));
        }
    } else if state == RpcState::Runtime {
        let _ = fw.start_init();
    }
    // And whatever else exists once the framework runs (no config, or no bdev entries).
    if fw.state() == RpcState::Runtime {
        import_disk_groups(&vm);
    } else {
        let v = vm.clone();
        fw.on_init(move || {
            import_disk_groups(&v);
            Ok(())
        });
    }

    let limits = ServerLimits {
        max_request_bytes: args.rpc_max_request,
        max_connections: args.rpc_max_connections,
    };
    let server = match RpcServer::bind(&args.rpc_socket, limits, fw.clone()) {
        Ok(s) => s,
        Err(e) => {
            vhost.shutdown_all();
            engine.shutdown();
            return Err(with_causes(&e));
        }
    };
    tracing::info!(
        "plexd {} listening on {}",
        env!("CARGO_PKG_VERSION"),
        args.rpc_socket.display()
    );

    let sig = signals::wait_for_stop_signal();
    let fatal = fw.fatal_error();
    match &fatal {
        Some(e) => tracing::error!("stopping: {e}"),
        None => tracing::info!("{sig}: shutting down"),
    }
    server.shutdown();
    vhost.shutdown_all();
    vm.shutdown();
    engine.shutdown();
    tracing::info!("plexd stopped");
    fatal.map_or(Ok(()), Err)
}

fn main() -> ExitCode {
    signals::block_stop_signals();
    let args = Args::parse();
    init_logging(&args.log_level);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("plexd: {e}");
            ExitCode::FAILURE
        }
    }
}
