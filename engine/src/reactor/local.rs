//! The state a reactor keeps for its own thread: its registered pollers and the epoll set it
//! sleeps on.
//!
//! Everything here is touched only by the owning thread, so it uses `Cell`/`RefCell` and no
//! locks. Borrows are kept short and never held across a poller call, so pollers may register
//! other pollers.
//!
//! Owned pollers (per-thread state of other layers, see [`Local::register_owned_poller`]) run
//! twice in every iteration, so they are kept apart from the others, in a small fixed table
//! that is walked without a borrow flag or a reference count.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
    /// state of other layers), run at both ends of every iteration. The first `owned_len`
    /// entries are filled; an entry is empty only while its poller runs.
    owned: [Cell<Option<Rc<dyn Poller>>>; MAX_OWNED_POLLERS],
    owned_len: Cell<usize>,
    pub(crate) epoll: Epoll,
    /// The duplicates of owned pollers' wake fds (see [`Local::watch`]).
    owned_fds: RefCell<Vec<OwnedFd>>,
    dirty_pollers: Cell<bool>,
}

/// Most owned pollers one reactor takes: one per layer with per-thread state (today only the
/// bdev layer has one).
pub(crate) const MAX_OWNED_POLLERS: usize = 4;

struct PollerSlot {
    poller: Weak<dyn Poller>,
    /// The reactor's own duplicate of the poller's wake fd (see [`Local::watch`]).
    fd: Option<OwnedFd>,
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
            owned: Default::default(),
            owned_len: Cell::new(0),
            epoll: Epoll::new()?,
            owned_fds: RefCell::new(Vec::new()),
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
            let slots: Vec<PollerSlot> = local.pollers.borrow_mut().drain(..).collect();
            for fd in slots.into_iter().filter_map(|s| s.fd) {
                local.unwatch(fd);
            }
            let fds: Vec<OwnedFd> = local.owned_fds.borrow_mut().drain(..).collect();
            for fd in fds {
                local.unwatch(fd);
            }
            let n = local.owned_len.replace(0);
            let owned: Vec<Rc<dyn Poller>> =
                local.owned[..n].iter().filter_map(Cell::take).collect();
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
        let fd = self.watch(poller.as_ref());
        self.pollers.borrow_mut().push(PollerSlot {
            poller: Rc::downgrade(poller),
            fd,
        });
    }

    /// Watches the poller's wake fd, if any: the reactor duplicates it and adds its own
    /// duplicate to the epoll set, with the duplicate's number as the token. The duplicate
    /// stays open until [`Local::unwatch`] has taken it out of the set, so a token always names
    /// the file it was registered for. (Watching the poller's own fd would not do: the poller
    /// may close it while another descriptor keeps the file open, e.g. a vhost kick fd, and
    /// epoll keeps such an entry, firing under a number the process may have reused for a
    /// socket that draining would then read from and block on.)
    fn watch(&self, poller: &dyn Poller) -> Option<OwnedFd> {
        let fd = poller.wake_fd()?;
        // SAFETY: `fd` is open (the poller keeps it for as long as it is alive, and we hold a
        // reference to it); F_DUPFD_CLOEXEC only creates a new descriptor.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!(
                "reactor {}: cannot duplicate wake fd {fd}: {e}; falling back to polling",
                self.core
            );
            return None;
        }
        // SAFETY: `dup` is a descriptor fcntl just created; nothing else owns it.
        let dup = unsafe { OwnedFd::from_raw_fd(dup) };
        if let Err(e) = self.epoll.add(dup.as_raw_fd(), dup.as_raw_fd() as u64) {
            tracing::warn!(
                "reactor {}: cannot watch fd {fd}: {e}; falling back to polling",
                self.core
            );
        }
        Some(dup)
    }

    /// Takes a duplicate made by [`Local::watch`] out of the epoll set, then closes it.
    fn unwatch(&self, fd: OwnedFd) {
        self.epoll.remove(fd.as_raw_fd());
        drop(fd);
    }

    /// Registers a poller and keeps it alive until this thread stops being a reactor; returns
    /// false (dropping it) when the reactor already owns [`MAX_OWNED_POLLERS`].
    pub(crate) fn register_owned_poller(&self, poller: Rc<dyn Poller>) -> bool {
        let n = self.owned_len.get();
        let Some(slot) = self.owned.get(n) else {
            tracing::error!(
                "reactor {}: cannot own more than {MAX_OWNED_POLLERS} per-thread pollers",
                self.core
            );
            return false;
        };
        if let Some(fd) = self.watch(poller.as_ref()) {
            self.owned_fds.borrow_mut().push(fd);
        }
        slot.set(Some(poller));
        self.owned_len.set(n + 1);
        true
    }

    /// Runs every owned poller once; returns the total work done. The loop runs them before
    /// and after the other pollers, so work they queue during an iteration (the bdev layer's
    /// completed requests) is done within it. Inlined: it runs twice per iteration, on the
    /// I/O path.
    #[inline(always)]
    pub(crate) fn run_owned_pollers(&self) -> usize {
        let mut work = 0;
        let mut i = 0;
        while let Some(slot) = self.owned[..self.owned_len.get()].get(i) {
            // Out of its entry while it runs (no borrow to hold across the call), then back.
            if let Some(p) = slot.take() {
                work += p.poll();
                slot.set(Some(p));
            }
            i += 1;
        }
        work
    }

    /// Runs `f` on every owned poller that is not running right now.
    fn each_owned(&self, mut f: impl FnMut(&dyn Poller)) {
        for slot in &self.owned[..self.owned_len.get()] {
            if let Some(p) = slot.take() {
                f(p.as_ref());
                slot.set(Some(p));
            }
        }
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
            let mut i = 0;
            while i < pollers.len() {
                if pollers[i].poller.strong_count() > 0 {
                    i += 1;
                    continue;
                }
                // Out of the set before it closes (see `watch`); order of the rest is kept.
                if let Some(fd) = pollers.remove(i).fd {
                    self.unwatch(fd);
                }
            }
        }
        work
    }

    /// The earliest deadline of any poller, and whether any poller is busy (must not sleep).
    pub(crate) fn sleep_constraints(&self) -> (Option<u64>, bool) {
        let mut deadline: Option<u64> = None;
        let mut busy = false;
        let mut constrain = |p: &dyn Poller| {
            busy |= p.busy();
            if let Some(d) = p.next_deadline() {
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
        };
        for slot in self.pollers.borrow().iter() {
            if let Some(p) = slot.poller.upgrade() {
                constrain(p.as_ref());
            }
        }
        self.each_owned(constrain);
        (deadline, busy)
    }

    /// Number of registered pollers: (active, timed).
    pub(crate) fn poller_counts(&self) -> (usize, usize) {
        let mut active = 0;
        let mut timed = 0;
        let mut count = |p: &dyn Poller| {
            if p.is_timed() {
                timed += 1;
            } else {
                active += 1;
            }
        };
        for slot in self.pollers.borrow().iter() {
            if let Some(p) = slot.poller.upgrade() {
                count(p.as_ref());
            }
        }
        self.each_owned(count);
        (active, timed)
    }

    /// Drains a fired wake fd (token = fd).
    pub(crate) fn drain_wake_fd(&self, fd: u64) {
        drain_fd(fd as i32);
    }

    /// Work in flight on this reactor, summed over its live pollers.
    pub(crate) fn inflight(&self) -> u64 {
        let mut inflight: u64 = self
            .pollers
            .borrow()
            .iter()
            .filter_map(|s| s.poller.upgrade())
            .map(|p| p.inflight())
            .sum();
        self.each_owned(|p| inflight += p.inflight());
        inflight
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
        self.each_owned(|p| p.quiesce());
    }
}
