//! The framework: start-up vs runtime state, subsystems and their saved configuration, and
//! the framework RPCs (`spdk_get_version`, `rpc_get_methods`, `framework_*`,
//! `thread_get_stats`, `spdk_kill_instance`). Implements the RPC server's dispatch.

use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use plexd_control::api::framework::{
    BdevSetOptions, BdevWaitForExamine, FrameworkGetConfig, FrameworkGetReactors,
    FrameworkGetSubsystems, FrameworkStartInit, FrameworkWaitInit, LwThread, ReactorInfo, Reactors,
    RpcGetMethods, SpdkGetVersion, SpdkKillInstance, SubsystemInfo, ThreadGetStats, ThreadStat,
    ThreadStats, Version, VersionFields,
};
use plexd_control::api::NoParams;
use plexd_control::{ErrorCode, MethodTable, RpcError, RpcHandler, RpcState};
use plexd_engine::reactor::tsc;
use plexd_engine::Engine;
use serde_json::Value;

/// A subsystem as `framework_get_subsystems` lists it, with the source of its saved config.
pub struct Subsystem {
    /// Name (`bdev`, `vhost_blk`, ...).
    pub name: &'static str,
    /// Subsystems whose config must load first.
    pub depends_on: &'static [&'static str],
    /// The `{method, params}` entries that recreate the subsystem's current state.
    pub config: Box<dyn Fn() -> Vec<Value> + Send + Sync>,
}

type InitHook = Box<dyn FnOnce() -> Result<(), RpcError> + Send>;
type LoadedHook = (&'static str, Arc<dyn Fn() + Send + Sync>);

/// Framework state shared by every RPC connection.
pub struct Framework {
    engine: Arc<Engine>,
    methods: RwLock<MethodTable>,
    state: Mutex<RpcState>,
    init_done: Condvar,
    subsystems: RwLock<Vec<Subsystem>>,
    init_hooks: Mutex<Vec<InitHook>>,
    loaded_hooks: Mutex<Vec<LoadedHook>>,
    fatal: Mutex<Option<String>>,
}

impl Framework {
    /// A framework in `state`, with no methods yet (see [`Framework::install_methods`]).
    pub fn new(engine: Arc<Engine>, state: RpcState) -> Arc<Framework> {
        Arc::new(Framework {
            engine,
            methods: RwLock::new(MethodTable::new()),
            state: Mutex::new(state),
            init_done: Condvar::new(),
            subsystems: RwLock::new(Vec::new()),
            init_hooks: Mutex::new(Vec::new()),
            loaded_hooks: Mutex::new(Vec::new()),
            fatal: Mutex::new(None),
        })
    }

    /// The current state.
    pub fn state(&self) -> RpcState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a subsystem.
    pub fn add_subsystem(&self, s: Subsystem) {
        self.subsystems
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(s);
    }

    /// Registers work to run when the framework enters the runtime state (e.g. the runtime
    /// half of a config file loaded with `--wait-for-rpc`).
    pub fn on_init(&self, hook: impl FnOnce() -> Result<(), RpcError> + Send + 'static) {
        self.init_hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(hook));
    }

    /// Registers work to run when a config file's entries of subsystem `name` have all been
    /// applied, before the next subsystem's (e.g. importing disk groups from the bdevs the
    /// `bdev` entries created, before `vhost_blk` entries export their volumes).
    pub fn on_subsystem_loaded(&self, name: &'static str, hook: impl Fn() + Send + Sync + 'static) {
        self.loaded_hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name, Arc::new(hook)));
    }

    /// Runs the hooks registered for subsystem `name` (see [`Framework::on_subsystem_loaded`]).
    pub fn subsystem_loaded(&self, name: &str) {
        let hooks: Vec<Arc<dyn Fn() + Send + Sync>> = self
            .loaded_hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, h)| h.clone())
            .collect();
        for h in hooks {
            h();
        }
    }

    /// Records an error that must stop plexd and asks the main thread to stop (as SPDK stops
    /// the app when its config fails to load).
    pub fn fail_fatally(&self, message: String) {
        *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
        // SAFETY: kill(2) on our own pid with a valid signal; the main thread collects it.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    }

    /// The error recorded by [`Framework::fail_fatally`], if any.
    pub fn fatal_error(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Moves from start-up to runtime (idempotent): runs the init hooks, then wakes waiters.
    pub fn start_init(&self) -> Result<(), RpcError> {
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if *st == RpcState::Runtime {
                return Err(RpcError::errno(
                    libc::EINVAL,
                    "the framework is already initialised",
                ));
            }
            *st = RpcState::Runtime;
        }
        let hooks: Vec<InitHook> = self
            .init_hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        let mut result = Ok(());
        for h in hooks {
            if let Err(e) = h() {
                tracing::error!("framework init: {}", e.message);
                result = Err(e);
                break;
            }
        }
        self.init_done.notify_all();
        result
    }

    /// Blocks until the runtime state is reached.
    pub fn wait_init(&self, timeout: Duration) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (st, _) = self
            .init_done
            .wait_timeout_while(st, timeout, |s| *s != RpcState::Runtime)
            .unwrap_or_else(|p| p.into_inner());
        *st == RpcState::Runtime
    }

    /// Fills the method table: framework methods plus everything `extra` registers.
    pub fn install_methods(self: &Arc<Self>, extra: impl FnOnce(&mut MethodTable)) {
        let mut t = MethodTable::new();
        register_framework_methods(&mut t, self);
        extra(&mut t);
        *self.methods.write().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// Calls a method as the RPC server would, checking the state.
    pub fn dispatch(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
        let m = {
            let table = self.methods.read().unwrap_or_else(|p| p.into_inner());
            table.get(method).cloned()
        };
        let m = m.ok_or_else(|| {
            RpcError::new(
                ErrorCode::MethodNotFound,
                format!("Method not found: {method}"),
            )
        })?;
        match self.state() {
            RpcState::Startup if !m.startup => Err(RpcError::new(
                ErrorCode::MethodNotFound,
                format!("Method '{method}' may only be called after the framework is initialized using framework_start_init"),
            )),
            RpcState::Runtime if !m.runtime => Err(RpcError::new(
                ErrorCode::MethodNotFound,
                format!("Method '{method}' may only be called before framework_start_init (start plexd with --wait-for-rpc)"),
            )),
            _ => {
                let r = (m.handler)(params);
                if let Err(e) = &r {
                    tracing::warn!(method, code = e.code.code(), "{}", e.message);
                }
                r
            }
        }
    }

    /// Whether `method` may only run before `framework_start_init`.
    pub fn is_startup_only(&self, method: &str) -> bool {
        let table = self.methods.read().unwrap_or_else(|p| p.into_inner());
        table.get(method).is_some_and(|m| m.startup && !m.runtime)
    }

    fn subsystems_info(&self) -> Vec<SubsystemInfo> {
        let subs = self.subsystems.read().unwrap_or_else(|p| p.into_inner());
        subs.iter()
            .map(|s| SubsystemInfo {
                subsystem: s.name.into(),
                depends_on: s.depends_on.iter().map(|d| d.to_string()).collect(),
            })
            .collect()
    }

    fn subsystem_config(&self, name: &str) -> Result<Vec<Value>, RpcError> {
        let subs = self.subsystems.read().unwrap_or_else(|p| p.into_inner());
        let s = subs
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| RpcError::errno(libc::ENOENT, format!("no subsystem named '{name}'")))?;
        Ok((s.config)())
    }
}

impl RpcHandler for Framework {
    fn call(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
        self.dispatch(method, params)
    }
}

fn cpumask_of(core: u32) -> String {
    format!("{:x}", 1u128 << core.min(127))
}

fn register_framework_methods(t: &mut MethodTable, fw: &Arc<Framework>) {
    t.always_typed::<SpdkGetVersion, _>(|NoParams {}| {
        let v = env!("CARGO_PKG_VERSION");
        let mut parts = v.split('.').map(|x| x.parse::<u64>().unwrap_or(0));
        Ok(Version {
            version: format!("plexd v{v}").into(),
            fields: VersionFields {
                major: parts.next().unwrap_or(0),
                minor: parts.next().unwrap_or(0),
                patch: parts.next().unwrap_or(0),
                suffix: String::new(),
            },
        })
    });
    let f = Arc::downgrade(fw);
    t.always_typed::<RpcGetMethods, _>(move |p| {
        let _ = p.include_aliases;
        let fw = f
            .upgrade()
            .ok_or_else(|| RpcError::internal("shutting down"))?;
        let state = if p.current.unwrap_or(false) {
            Some(fw.state())
        } else {
            None
        };
        let names = fw
            .methods
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .names(state);
        Ok(names)
    });
    let f = Arc::downgrade(fw);
    t.typed::<FrameworkStartInit, _>(true, false, move |NoParams {}| {
        let fw = f
            .upgrade()
            .ok_or_else(|| RpcError::internal("shutting down"))?;
        fw.start_init()?;
        Ok(true)
    });
    let f = Arc::downgrade(fw);
    t.always_typed::<FrameworkWaitInit, _>(move |NoParams {}| {
        let fw = f
            .upgrade()
            .ok_or_else(|| RpcError::internal("shutting down"))?;
        if fw.wait_init(Duration::from_secs(3600)) {
            Ok(true)
        } else {
            Err(RpcError::errno(
                libc::ETIMEDOUT,
                "framework_start_init was not called within an hour",
            ))
        }
    });
    let f = Arc::downgrade(fw);
    t.runtime_typed::<FrameworkGetSubsystems, _>(move |NoParams {}| {
        let fw = f
            .upgrade()
            .ok_or_else(|| RpcError::internal("shutting down"))?;
        Ok(fw.subsystems_info())
    });
    let f = Arc::downgrade(fw);
    t.runtime_typed::<FrameworkGetConfig, _>(move |p| {
        let fw = f
            .upgrade()
            .ok_or_else(|| RpcError::internal("shutting down"))?;
        fw.subsystem_config(&p.name)
    });
    let e = fw.engine.clone();
    t.runtime_typed::<FrameworkGetReactors, _>(move |NoParams {}| {
        use std::sync::atomic::Ordering::Relaxed;
        let reactors = e
            .reactors()
            .reactors()
            .iter()
            .map(|r| ReactorInfo {
                lcore: r.core.into(),
                tid: i64::from(r.tid.load(Relaxed)).into(),
                busy: r.busy_ticks.load(Relaxed).into(),
                idle: r.idle_ticks.load(Relaxed).into(),
                in_interrupt: r.in_interrupt.load(Relaxed).into(),
                irq_counter: 0,
                sys_stat: 0,
                usr_stat: 0,
                lw_threads: vec![LwThread {
                    name: format!("reactor_{}", r.core).into(),
                    id: r.index as u64 + 1,
                    cpumask: cpumask_of(r.core),
                    elapsed: r.busy_ticks.load(Relaxed) + r.idle_ticks.load(Relaxed),
                }],
            })
            .collect();
        Ok(Reactors {
            tick_rate: tsc::tick_rate().into(),
            pid: u64::from(std::process::id()).into(),
            poll_mode: e.reactors().mode().as_str().to_string(),
            reactors,
        })
    });
    let e = fw.engine.clone();
    t.runtime_typed::<ThreadGetStats, _>(move |NoParams {}| {
        use std::sync::atomic::Ordering::Relaxed;
        let threads = e
            .reactors()
            .reactors()
            .iter()
            .map(|r| ThreadStat {
                name: format!("reactor_{}", r.core).into(),
                id: (r.index as u64 + 1).into(),
                cpumask: cpumask_of(r.core).into(),
                busy: r.busy_ticks.load(Relaxed).into(),
                idle: r.idle_ticks.load(Relaxed).into(),
                active_pollers_count: r.active_pollers.load(Relaxed).into(),
                timed_pollers_count: r.timed_pollers.load(Relaxed).into(),
                paused_pollers_count: 0,
            })
            .collect();
        Ok(ThreadStats {
            tick_rate: tsc::tick_rate(),
            threads,
        })
    });
    t.always_typed::<SpdkKillInstance, _>(|p| {
        let name = p.sig_name.unwrap_or_else(|| "SIGTERM".into());
        let sig = match name.as_str() {
            "SIGINT" | "INT" => libc::SIGINT,
            "SIGTERM" | "TERM" => libc::SIGTERM,
            "SIGKILL" | "KILL" => libc::SIGKILL,
            "SIGQUIT" | "QUIT" => libc::SIGQUIT,
            other => {
                return Err(RpcError::invalid_params(format!(
                    "unknown signal '{other}': use SIGINT, SIGTERM, SIGQUIT or SIGKILL"
                )))
            }
        };
        // Let the reply reach the client before the signal takes effect.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: kill(2) on our own pid with a valid signal number.
            unsafe { libc::kill(libc::getpid(), sig) };
        });
        Ok(true)
    });
    t.runtime_typed::<BdevWaitForExamine, _>(|NoParams {}| Ok(true));
    // Accepted with any params for compatibility with SPDK configs; plexd sizes its pools
    // itself.
    t.typed::<BdevSetOptions, _>(true, false, |_| Ok(true));
}
