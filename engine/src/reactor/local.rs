//! The state a reactor keeps for its own thread: its registered pollers and the epoll set it
//! sleeps on.
//!
//! Everything here is touched only by the owning thread, so it uses `Cell`/`RefCell` and no
//! locks. Borrows are kept short and never held across a poller call, so pollers may register
//! other pollers.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use super::poller::Poller;
use super::wake::{drain_fd, Epoll};

/// Per-thread reactor context.
pub(crate) struct Local {
    /// Reactor index (0-based position in the reactor set).
    pub(crate) index: usize,
    /// The core this reactor runs on.
    pub(crate) core: u32,
    pollers: RefCell<Vec<PollerSlot>>,
    /// Pollers the reactor keeps alive until the thread stops being a reactor (per-thread
    /// state of other layers). They are in `pollers` too, for sleeping, shutdown and counts,
    /// but run from here, at both ends of every iteration.
    owned: RefCell<Vec<Rc<dyn Poller>>>,
    pub(crate) epoll: Epoll,
    dirty_pollers: Cell<bool>,
}

struct PollerSlot {
    poller: Weak<dyn Poller>,
    fd: Option<i32>,
    /// Also in `owned`, which runs it.
    owned: bool,
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
            owned: RefCell::new(Vec::new()),
            epoll: Epoll::new()?,
            dirty_pollers: Cell::new(false),
        });
        LOCAL.with(|l| *l.borrow_mut() = Some(local.clone()));
        Ok(local)
    }

    /// Removes this thread's context, then drops its pollers and the ones it owns (which see
    /// no reactor on the thread any more while they drop).
    pub(crate) fn uninstall() {
        let local = LOCAL.with(|l| l.borrow_mut().take());
        if let Some(local) = local {
            local.pollers.borrow_mut().clear();
            let owned: Vec<Rc<dyn Poller>> = local.owned.borrow_mut().drain(..).collect();
            drop(owned);
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

    /// Registers a poller; it stays registered until the last strong reference to it drops.
    pub(crate) fn register_poller(&self, poller: &Rc<dyn Poller>) {
        self.add_slot(poller, false);
    }

    fn add_slot(&self, poller: &Rc<dyn Poller>, owned: bool) {
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
            owned,
        });
    }

    /// Registers a poller and keeps it alive until this thread stops being a reactor.
    pub(crate) fn register_owned_poller(&self, poller: Rc<dyn Poller>) {
        self.add_slot(&poller, true);
        self.owned.borrow_mut().push(poller);
    }

    /// Runs every owned poller once; returns the total work done. The loop runs them before
    /// and after the other pollers, so work they queue during an iteration (the bdev layer's
    /// completed requests) is done within it.
    pub(crate) fn run_owned_pollers(&self) -> usize {
        let mut work = 0;
        let mut i = 0;
        loop {
            let p = self.owned.borrow().get(i).cloned();
            match p {
                Some(p) => work += p.poll(),
                None => break,
            }
            i += 1;
        }
        work
    }

    /// The live poller at position `i`, if any; `Err` past the end.
    fn poller_at(&self, i: usize) -> Result<Option<Rc<dyn Poller>>, ()> {
        let pollers = self.pollers.borrow();
        match pollers.get(i) {
            None => Err(()),
            Some(slot) => Ok(slot.poller.upgrade()),
        }
    }

    /// Runs every live poller that is not owned once; returns the total work done.
    pub(crate) fn run_pollers(&self) -> usize {
        let mut work = 0;
        let mut i = 0;
        loop {
            let p = {
                let pollers = self.pollers.borrow();
                let Some(slot) = pollers.get(i) else { break };
                i += 1;
                if slot.owned {
                    continue;
                }
                slot.poller.upgrade()
            };
            match p {
                Some(p) => work += p.poll(),
                None => self.dirty_pollers.set(true),
            }
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
        (deadline, busy)
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

    /// Work in flight on this reactor, summed over its live pollers.
    pub(crate) fn inflight(&self) -> u64 {
        let pollers = self.pollers.borrow();
        pollers
            .iter()
            .filter_map(|s| s.poller.upgrade())
            .map(|p| p.inflight())
            .sum()
    }

    /// Tells every live poller that the reactor is stopping (see [`Poller::quiesce`]).
    pub(crate) fn quiesce(&self) {
        let mut i = 0;
        while let Ok(p) = self.poller_at(i) {
            if let Some(p) = p {
                p.quiesce();
            }
            i += 1;
        }
    }
}
