//! The state a reactor keeps for its own thread: registered pollers, the queue of completed
//! requests waiting for their callbacks, the request pool and the per-bdev I/O channels.
//!
//! Everything here is touched only by the owning thread, so it uses `Cell`/`RefCell` and no
//! locks. Borrows are kept short and never held across a callback, so callbacks may submit
//! new requests, create channels or register pollers.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

use super::poller::Poller;
use super::wake::{drain_fd, Epoll};
use crate::bdev::channel::IoChannel;
use crate::bdev::io::{BdevIo, IoPool};

/// Requests preallocated per reactor. More are created on demand and then kept.
const IO_POOL_SIZE: usize = 1024;

/// Per-thread reactor context.
pub(crate) struct Local {
    /// Reactor index (0-based position in the reactor set).
    pub(crate) index: usize,
    /// The core this reactor runs on.
    pub(crate) core: u32,
    pollers: RefCell<Vec<PollerSlot>>,
    completions: RefCell<VecDeque<BdevIo>>,
    pub(crate) pool: RefCell<IoPool>,
    channels: RefCell<HashMap<u64, Rc<IoChannel>>>,
    pub(crate) epoll: Epoll,
    dirty_pollers: Cell<bool>,
}

struct PollerSlot {
    poller: Weak<dyn Poller>,
    fd: Option<i32>,
}

thread_local! {
    static LOCAL: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

impl Local {
    /// Creates the context and installs it as this thread's.
    pub(crate) fn install(index: usize, core: u32) -> std::io::Result<Rc<Local>> {
        let local = Rc::new(Local {
            index,
            core,
            pollers: RefCell::new(Vec::with_capacity(64)),
            completions: RefCell::new(VecDeque::with_capacity(IO_POOL_SIZE * 2)),
            pool: RefCell::new(IoPool::new(IO_POOL_SIZE)),
            channels: RefCell::new(HashMap::new()),
            epoll: Epoll::new()?,
            dirty_pollers: Cell::new(false),
        });
        LOCAL.with(|l| *l.borrow_mut() = Some(local.clone()));
        Ok(local)
    }

    /// Removes this thread's context: drops its channels, pollers and pending completions.
    pub(crate) fn uninstall() {
        let local = LOCAL.with(|l| l.borrow_mut().take());
        if let Some(local) = local {
            local.channels.borrow_mut().clear();
            local.pollers.borrow_mut().clear();
            let pending: Vec<BdevIo> = local.completions.borrow_mut().drain(..).collect();
            drop(pending);
        }
    }

    /// Runs `f` with this thread's context, if it has one.
    pub(crate) fn with<R>(f: impl FnOnce(&Rc<Local>) -> R) -> Option<R> {
        LOCAL
            .try_with(|l| {
                let guard = l.borrow();
                guard.as_ref().map(f)
            })
            .ok()
            .flatten()
    }

    /// This thread's context (clone of the `Rc`), if any.
    pub(crate) fn current() -> Option<Rc<Local>> {
        Self::with(|l| l.clone())
    }

    /// Registers a poller; it stays registered until the last strong reference to it drops.
    pub(crate) fn register_poller(&self, poller: &Rc<dyn Poller>) {
        let fd = poller.wake_fd();
        if let Some(fd) = fd {
            if let Err(e) = self.epoll.add(fd, fd as u64) {
                tracing::warn!(
                    "reactor {}: cannot watch fd {fd}: {e}; falling back to polling",
                    self.core
                );
            }
        }
        self.pollers.borrow_mut().push(PollerSlot {
            poller: Rc::downgrade(poller),
            fd,
        });
    }

    /// Runs every live poller once; returns the total work done.
    pub(crate) fn run_pollers(&self) -> usize {
        let mut work = 0;
        let mut i = 0;
        loop {
            let p = {
                let pollers = self.pollers.borrow();
                match pollers.get(i) {
                    None => break,
                    Some(slot) => slot.poller.upgrade(),
                }
            };
            match p {
                Some(p) => work += p.poll(),
                None => self.dirty_pollers.set(true),
            }
            i += 1;
        }
        if self.dirty_pollers.replace(false) {
            let mut pollers = self.pollers.borrow_mut();
            let dead_fds: Vec<i32> = pollers
                .iter()
                .filter(|s| s.poller.strong_count() == 0)
                .filter_map(|s| s.fd)
                .collect();
            pollers.retain(|s| s.poller.strong_count() > 0);
            for fd in dead_fds {
                // A new poller may already have been given the same fd number: keep it watched.
                if !pollers.iter().any(|s| s.fd == Some(fd)) {
                    self.epoll.remove(fd);
                }
            }
        }
        work
    }

    /// The earliest deadline of any poller, and whether any poller is busy (must not sleep).
    pub(crate) fn sleep_constraints(&self) -> (Option<u64>, bool) {
        let pollers = self.pollers.borrow();
        let mut deadline: Option<u64> = None;
        let mut busy = false;
        for slot in pollers.iter() {
            if let Some(p) = slot.poller.upgrade() {
                busy |= p.busy();
                if let Some(d) = p.next_deadline() {
                    deadline = Some(deadline.map_or(d, |x| x.min(d)));
                }
            }
        }
        (deadline, busy || !self.completions.borrow().is_empty())
    }

    /// Number of registered pollers: (active, timed).
    pub(crate) fn poller_counts(&self) -> (usize, usize) {
        let pollers = self.pollers.borrow();
        let mut active = 0;
        let mut timed = 0;
        for slot in pollers.iter() {
            if let Some(p) = slot.poller.upgrade() {
                if p.is_timed() {
                    timed += 1;
                } else {
                    active += 1;
                }
            }
        }
        (active, timed)
    }

    /// Drains a fired wake fd (token = fd).
    pub(crate) fn drain_wake_fd(&self, fd: u64) {
        drain_fd(fd as i32);
    }

    /// Queues a finished request; its callback runs from the reactor loop, never inline.
    pub(crate) fn push_completion(&self, io: BdevIo) {
        self.completions.borrow_mut().push_back(io);
    }

    /// Runs the callbacks of the requests that were complete when this call started.
    pub(crate) fn run_completions(&self) -> usize {
        let n = self.completions.borrow().len();
        for _ in 0..n {
            let io = self.completions.borrow_mut().pop_front();
            match io {
                Some(io) => io.finish(),
                None => break,
            }
        }
        n
    }

    /// The cached channel of bdev `id` on this reactor.
    pub(crate) fn channel(&self, id: u64) -> Option<Rc<IoChannel>> {
        self.channels.borrow().get(&id).cloned()
    }

    /// Caches a channel.
    pub(crate) fn insert_channel(&self, id: u64, ch: Rc<IoChannel>) {
        self.channels.borrow_mut().insert(id, ch);
    }

    /// Drops the cached channel of bdev `id` (requests in flight keep it alive until they end).
    pub(crate) fn remove_channel(&self, id: u64) -> Option<Rc<IoChannel>> {
        self.channels.borrow_mut().remove(&id)
    }

    /// Requests in flight on this reactor: on every live channel (cached or not) plus those
    /// waiting for their callbacks.
    pub(crate) fn inflight(&self) -> u64 {
        let pollers = self.pollers.borrow();
        let on_pollers: u64 = pollers
            .iter()
            .filter_map(|s| s.poller.upgrade())
            .map(|p| p.inflight())
            .sum();
        on_pollers + self.completions.borrow().len() as u64
    }

    /// Drops every cached channel.
    pub(crate) fn clear_channels(&self) {
        let chans: Vec<Rc<IoChannel>> =
            self.channels.borrow_mut().drain().map(|(_, c)| c).collect();
        drop(chans);
    }
}
