//! Per-core polling reactors (SPDK's `reactor`/`spdk_thread` in one).
//!
//! One reactor thread runs per core of the cpumask, pinned to it and named `reactor_N`. Each
//! loop iteration drains the reactor's lock-free message queue and runs its pollers (owned
//! pollers, see below, at both ends of the iteration). When
//! nothing happened for a while (adaptive mode) or at all (interrupt mode), the reactor sleeps
//! on one epoll set that wakes on messages, I/O completion eventfds and the earliest poller
//! deadline.
//!
//! The reactor knows nothing of what its pollers do. Layers that keep per-thread state (the bdev
//! layer's request pool, completion queue and channel cache) hand it to the reactor as an owned
//! poller ([`register_owned_poller`]), which lives as long as the thread is a reactor and is
//! told through [`Poller::quiesce`] when the reactor stops.

mod cpumask;
mod local;
mod poller;
pub mod tsc;
pub mod wake;

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::queue::SegQueue;

pub use cpumask::{parse_cpumask, CpuMaskError};
pub(crate) use local::Local;
pub use poller::{Poller, TimedPoller};
use wake::EventFd;

/// A message: a closure run on a chosen reactor.
pub type Msg = Box<dyn FnOnce() + Send>;

/// How a reactor behaves when it has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollMode {
    /// Never sleep: lowest latency, one full core per reactor.
    Busy,
    /// Poll while work keeps arriving; sleep after a short idle spell (default).
    #[default]
    Adaptive,
    /// Sleep whenever an iteration finds no work.
    Interrupt,
}

impl std::str::FromStr for PollMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "busy" => Ok(PollMode::Busy),
            "adaptive" => Ok(PollMode::Adaptive),
            "interrupt" => Ok(PollMode::Interrupt),
            other => Err(format!(
                "unknown poll mode '{other}': use busy, adaptive or interrupt"
            )),
        }
    }
}

impl PollMode {
    /// The name used on the command line and in RPC output.
    pub fn as_str(self) -> &'static str {
        match self {
            PollMode::Busy => "busy",
            PollMode::Adaptive => "adaptive",
            PollMode::Interrupt => "interrupt",
        }
    }
}

/// How long an adaptive reactor keeps spinning with no work before it sleeps.
const ADAPTIVE_IDLE: Duration = Duration::from_micros(200);

/// Errors starting reactors.
#[derive(Debug, thiserror::Error)]
pub enum ReactorError {
    /// The cpumask names no usable core.
    #[error(transparent)]
    CpuMask(#[from] CpuMaskError),
    /// A core in the mask does not exist on this machine.
    #[error("core {core} is not available on this machine (it has {available} cores); choose a cpumask within them")]
    NoSuchCore {
        /// The requested core.
        core: u32,
        /// How many cores the machine has.
        available: usize,
    },
    /// The OS refused a thread or an fd.
    #[error("cannot start reactor on core {core}")]
    Spawn {
        /// The core.
        core: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The cross-thread half of a reactor: its message queue, wake-up fd and counters.
pub struct ReactorShared {
    /// Position in the reactor set.
    pub index: usize,
    /// Core id (`lcore`).
    pub core: u32,
    msgs: SegQueue<Msg>,
    wake: EventFd,
    sleeping: AtomicBool,
    stop: AtomicBool,
    exited: AtomicBool,
    /// Kernel thread id.
    pub tid: AtomicI32,
    /// Ticks spent in iterations that did work.
    pub busy_ticks: AtomicU64,
    /// Ticks spent in iterations that did none (including sleep).
    pub idle_ticks: AtomicU64,
    /// Whether the reactor is sleeping (interrupt) right now.
    pub in_interrupt: AtomicBool,
    /// Active pollers registered (updated every ~1k iterations).
    pub active_pollers: AtomicU64,
    /// Timed pollers registered.
    pub timed_pollers: AtomicU64,
}

impl ReactorShared {
    fn new(index: usize, core: u32) -> std::io::Result<Self> {
        Ok(ReactorShared {
            index,
            core,
            msgs: SegQueue::new(),
            wake: wake::new_eventfd()?,
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            tid: AtomicI32::new(0),
            busy_ticks: AtomicU64::new(0),
            idle_ticks: AtomicU64::new(0),
            in_interrupt: AtomicBool::new(false),
            active_pollers: AtomicU64::new(0),
            timed_pollers: AtomicU64::new(0),
        })
    }

    /// Queues `msg` to run on this reactor and wakes it if it sleeps.
    pub fn send(&self, msg: Msg) {
        self.msgs.push(msg);
        if self.sleeping.load(Ordering::SeqCst) {
            self.wake_up();
        }
    }

    /// Wakes the reactor. A full counter (EAGAIN) already means "readable", which is all a
    /// waker needs, so errors are ignored.
    fn wake_up(&self) {
        let _ = self.wake.write(1);
    }
}

/// The running reactors of one engine.
pub struct ReactorSet {
    reactors: Vec<Arc<ReactorShared>>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
    mode: PollMode,
}

impl ReactorSet {
    /// Starts one pinned reactor thread per core in `cores`.
    pub fn start(cores: &[u32], mode: PollMode) -> Result<Arc<ReactorSet>, ReactorError> {
        let available = core_affinity::get_core_ids().unwrap_or_default();
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut shared = Vec::new();
        for (index, &core) in cores.iter().enumerate() {
            if core as usize >= ncpu.max(available.len()) {
                return Err(ReactorError::NoSuchCore {
                    core,
                    available: ncpu,
                });
            }
            shared.push(Arc::new(
                ReactorShared::new(index, core)
                    .map_err(|source| ReactorError::Spawn { core, source })?,
            ));
        }
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) =
            crossbeam::channel::bounded::<Result<(), std::io::Error>>(cores.len());
        for shared_one in &shared {
            let sh = shared_one.clone();
            let core = sh.core;
            let ready = ready_tx.clone();
            let core_id = available.iter().find(|c| c.id == sh.core as usize).copied();
            let handle = std::thread::Builder::new()
                .name(format!("reactor_{}", sh.core))
                .spawn(move || {
                    if let Some(c) = core_id {
                        if !core_affinity::set_for_current(c) {
                            tracing::warn!("reactor_{}: could not pin to core {}", sh.core, c.id);
                        }
                    }
                    // SAFETY: gettid has no preconditions.
                    sh.tid.store(unsafe { libc::gettid() }, Ordering::Relaxed);
                    let local = match Local::install(sh.index, sh.core) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    drop(ready);
                    run_loop(&sh, &local, mode);
                    Local::uninstall();
                    sh.exited.store(true, Ordering::SeqCst);
                    // Messages that arrived too late are dropped, which disconnects anyone
                    // waiting for their answer.
                    while sh.msgs.pop().is_some() {}
                })
                .map_err(|source| ReactorError::Spawn { core, source })?;
            threads.push(handle);
        }
        drop(ready_tx);
        for sh in &shared {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    return Err(ReactorError::Spawn {
                        core: sh.core,
                        source,
                    })
                }
                Err(_) => {
                    return Err(ReactorError::Spawn {
                        core: sh.core,
                        source: std::io::Error::other("reactor thread exited during start-up"),
                    })
                }
            }
        }
        Ok(Arc::new(ReactorSet {
            reactors: shared,
            threads: std::sync::Mutex::new(threads),
            mode,
        }))
    }

    /// The reactors, in cpumask order.
    pub fn reactors(&self) -> &[Arc<ReactorShared>] {
        &self.reactors
    }

    /// The idle policy.
    pub fn mode(&self) -> PollMode {
        self.mode
    }

    /// Number of reactors.
    pub fn len(&self) -> usize {
        self.reactors.len()
    }

    /// Always false: a set has at least one reactor.
    pub fn is_empty(&self) -> bool {
        self.reactors.is_empty()
    }

    /// Queues `f` on the reactor at `index` (position in the set, not core id).
    pub fn send_msg(&self, index: usize, f: impl FnOnce() + Send + 'static) -> bool {
        match self.reactors.get(index) {
            Some(r) => {
                r.send(Box::new(f));
                true
            }
            None => false,
        }
    }

    /// Runs `f` on reactor `index` and waits for its result (control path only: never call
    /// this from a reactor thread).
    pub fn call<R: Send + 'static>(
        &self,
        index: usize,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        if self.reactors.get(index)?.stop.load(Ordering::SeqCst) {
            return None;
        }
        let (tx, rx) = crossbeam::channel::bounded(1);
        if !self.send_msg(index, move || {
            let _ = tx.send(f());
        }) {
            return None;
        }
        let r = &self.reactors[index];
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(v) => return Some(v),
                Err(crossbeam::channel::RecvTimeoutError::Disconnected) => return None,
                Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                    if r.exited.load(Ordering::SeqCst) {
                        while r.msgs.pop().is_some() {}
                        return None;
                    }
                }
            }
        }
    }

    /// Runs `f` on every reactor, one after another, waiting for each.
    pub fn call_all<R: Send + 'static>(
        &self,
        f: impl Fn() -> R + Send + Sync + Clone + 'static,
    ) -> Vec<R> {
        (0..self.len())
            .filter_map(|i| self.call(i, f.clone()))
            .collect()
    }

    /// Stops every reactor after letting in-flight requests finish (up to `grace`), then joins
    /// the threads. Idempotent.
    pub fn stop(&self, grace: Duration) {
        let deadline = std::time::Instant::now() + grace;
        // Quiesce first: pollers release what they cache (the bdev layer its channels), so
        // the work in flight can finish.
        for i in 0..self.reactors.len() {
            self.call(i, || Local::with(|l| l.quiesce()));
        }
        for (i, r) in self.reactors.iter().enumerate() {
            if r.stop.load(Ordering::SeqCst) {
                continue;
            }
            loop {
                let inflight = self.call(i, || Local::with(|l| l.inflight()).unwrap_or(0));
                match inflight {
                    Some(n) if n > 0 && std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Some(n) if n > 0 => {
                        tracing::warn!(
                            "reactor_{}: {n} requests still in flight at shutdown",
                            r.core
                        );
                        break;
                    }
                    _ => break,
                }
            }
            r.stop.store(true, Ordering::SeqCst);
            r.wake_up();
        }
        let threads: Vec<JoinHandle<()>> = match self.threads.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(p) => p.into_inner().drain(..).collect(),
        };
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for ReactorSet {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Registers `poller` with the current thread's reactor; it stays registered until the last
/// strong reference to it drops. Returns false off a reactor thread.
pub fn register_poller(poller: &Rc<dyn Poller>) -> bool {
    Local::with(|l| l.register_poller(poller)).is_some()
}

/// Registers `poller` with the current thread's reactor, which keeps it alive until the thread
/// stops being a reactor (SPDK's per-thread io_device channel) and runs it before and after
/// the other pollers of every iteration. Returns false (dropping it) off a reactor thread or
/// when the reactor already owns as many as it takes (a few: one per layer).
pub fn register_owned_poller(poller: Rc<dyn Poller>) -> bool {
    Local::with(|l| l.register_owned_poller(poller)) == Some(true)
}

/// The core id of the reactor running this thread, if any.
pub fn current_core() -> Option<u32> {
    Local::with(|l| l.core)
}

/// The index of the reactor running this thread, if any.
pub fn current_index() -> Option<usize> {
    Local::with(|l| l.index)
}

/// One iteration: messages, owned pollers, the other pollers, owned pollers again. Returns the
/// work done.
fn run_once(sh: &ReactorShared, local: &Local) -> usize {
    let mut work = 0;
    // `is_empty` is two plain loads; `pop` on an empty queue also pays a full memory fence,
    // which every idle-for-messages iteration would pay. A message pushed meanwhile is seen
    // next iteration (the sleep path re-checks the queue itself).
    if !sh.msgs.is_empty() {
        for _ in 0..64 {
            match sh.msgs.pop() {
                Some(m) => {
                    m();
                    work += 1;
                }
                None => break,
            }
        }
    }
    work += local.run_owned_pollers();
    work += local.run_pollers();
    work + local.run_owned_pollers()
}

fn run_loop(sh: &ReactorShared, local: &Local, mode: PollMode) {
    let idle_limit = tsc::duration_to_ticks(ADAPTIVE_IDLE);
    let mut last = tsc::ticks();
    let mut idle_since = last;
    let mut iterations: u64 = 0;
    let mut tokens = [0u64; 32];
    if let Err(e) = local.epoll.add(sh.wake.as_raw_fd(), u64::MAX) {
        tracing::error!("reactor_{}: cannot watch its wake-up fd: {e}", sh.core);
    }
    loop {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        let work = run_once(sh, local);
        let now = tsc::ticks();
        let dt = now.wrapping_sub(last);
        last = now;
        if work > 0 {
            sh.busy_ticks.store(
                sh.busy_ticks.load(Ordering::Relaxed) + dt,
                Ordering::Relaxed,
            );
            idle_since = now;
        } else {
            sh.idle_ticks.store(
                sh.idle_ticks.load(Ordering::Relaxed) + dt,
                Ordering::Relaxed,
            );
        }
        iterations += 1;
        if iterations.is_multiple_of(1024) {
            let (a, t) = local.poller_counts();
            sh.active_pollers.store(a as u64, Ordering::Relaxed);
            sh.timed_pollers.store(t as u64, Ordering::Relaxed);
        }
        let want_sleep = match mode {
            PollMode::Busy => false,
            PollMode::Interrupt => work == 0,
            PollMode::Adaptive => work == 0 && now.wrapping_sub(idle_since) > idle_limit,
        };
        if !want_sleep {
            continue;
        }
        let (deadline, busy) = local.sleep_constraints();
        if busy {
            continue;
        }
        sh.sleeping.store(true, Ordering::SeqCst);
        // Re-check after announcing the sleep: a sender that saw `sleeping == false` pushed
        // before this load, so nothing is stranded.
        if !sh.msgs.is_empty() || sh.stop.load(Ordering::SeqCst) {
            sh.sleeping.store(false, Ordering::SeqCst);
            continue;
        }
        let timeout = deadline.map(|d| tsc::ticks_to_duration(d.saturating_sub(tsc::ticks())));
        sh.in_interrupt.store(true, Ordering::Relaxed);
        let n = local.epoll.wait(&mut tokens, timeout);
        sh.in_interrupt.store(false, Ordering::Relaxed);
        sh.sleeping.store(false, Ordering::SeqCst);
        for &t in &tokens[..n] {
            if t == u64::MAX {
                let _ = sh.wake.read();
            } else {
                local.drain_wake_fd(t);
            }
        }
        let now = tsc::ticks();
        sh.idle_ticks.store(
            sh.idle_ticks.load(Ordering::Relaxed) + now.wrapping_sub(last),
            Ordering::Relaxed,
        );
        last = now;
        idle_since = now;
    }
    local.quiesce();
}

/// A reactor driven by hand on the calling thread, for tests and tools that want pollers (and
/// the layers built on them, such as the bdev layer) without spawning threads. Drop it to
/// uninstall.
pub struct InlineReactor {
    local: Rc<Local>,
}

impl InlineReactor {
    /// Installs a reactor context on this thread.
    pub fn new() -> std::io::Result<Self> {
        Ok(InlineReactor {
            local: Local::install(0, 0)?,
        })
    }

    /// Runs every poller once (owned pollers before and after the others); returns the work
    /// done.
    pub fn poll(&self) -> usize {
        self.local.run_owned_pollers() + self.local.run_pollers() + self.local.run_owned_pollers()
    }

    /// Polls until `done()` is true or `timeout` passes; returns `done()`.
    pub fn poll_until(&self, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
        let end = std::time::Instant::now() + timeout;
        while !done() {
            if std::time::Instant::now() > end {
                return false;
            }
            if self.poll() == 0 {
                std::thread::yield_now();
            }
        }
        true
    }
}

impl Drop for InlineReactor {
    fn drop(&mut self) {
        Local::uninstall();
    }
}

#[cfg(test)]
mod tests;
