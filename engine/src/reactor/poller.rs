//! Pollers: the units of work a reactor runs on every loop iteration.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;

use super::tsc;

/// Something a reactor polls. Implementations use interior mutability: pollers are shared
/// (`Rc`) between the reactor and the object that owns them, all on one thread.
pub trait Poller {
    /// Does whatever work is ready; returns how many units of work were done (0 means idle).
    fn poll(&self) -> usize;

    /// An eventfd that becomes readable when this poller has work (io_uring/AIO completions,
    /// a guest's kick). A reactor about to sleep waits on it. The reactor drains it when it fires.
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }

    /// The tick (see [`tsc::ticks`]) at which this poller must run again even without a wake-up.
    fn next_deadline(&self) -> Option<u64> {
        None
    }

    /// Whether a sleeping reactor must keep polling this poller (work is outstanding that no
    /// fd will announce, e.g. requests waiting for a free submission slot).
    fn busy(&self) -> bool {
        false
    }

    /// Requests this poller has in flight (I/O channels), for orderly shutdown.
    fn inflight(&self) -> u64 {
        0
    }

    /// The reactor is stopping: release what is cached so that the work in flight can finish
    /// (the bdev layer drops its cached I/O channels). Called on the reactor thread, before it
    /// waits for [`Poller::inflight`] to reach zero and again when its loop ends.
    fn quiesce(&self) {}

    /// Whether this poller runs only when its deadline passes (SPDK's timed poller).
    fn is_timed(&self) -> bool {
        false
    }
}

/// A poller that runs a closure every `period` (SPDK's timed poller).
pub struct TimedPoller<F: FnMut() -> usize> {
    period_ticks: u64,
    next: Cell<u64>,
    f: RefCell<F>,
}

impl<F: FnMut() -> usize> TimedPoller<F> {
    /// Runs `f` every `period`.
    pub fn new(period: std::time::Duration, f: F) -> Self {
        let period_ticks = tsc::duration_to_ticks(period).max(1);
        TimedPoller {
            period_ticks,
            next: Cell::new(tsc::ticks() + period_ticks),
            f: RefCell::new(f),
        }
    }
}

impl<F: FnMut() -> usize> Poller for TimedPoller<F> {
    fn poll(&self) -> usize {
        let now = tsc::ticks();
        if now < self.next.get() {
            return 0;
        }
        self.next.set(now + self.period_ticks);
        match self.f.try_borrow_mut() {
            Ok(mut f) => f(),
            Err(_) => 0,
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        Some(self.next.get())
    }

    fn is_timed(&self) -> bool {
        true
    }
}
