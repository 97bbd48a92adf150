//! I/O channels: one per bdev per reactor, so two reactors never share a queue.
//!
//! A channel validates requests, hands them to the driver's per-reactor queue, keeps requests
//! the driver cannot take yet (queue full, out of resources) in arrival order and retries them
//! as completions free room, and accounts completions in its statistics.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use super::io::{BdevIo, IoStatus};
use super::stat::ChannelStats;
use super::{Bdev, DriverChannel};
use crate::reactor::{tsc, Poller};

/// One bdev's queue on one reactor.
pub struct IoChannel {
    bdev: Arc<Bdev>,
    driver: RefCell<Box<dyn DriverChannel>>,
    waiting: RefCell<VecDeque<BdevIo>>,
    stats: Arc<ChannelStats>,
    inflight: Cell<u64>,
    wake_fd: Option<i32>,
}

impl IoChannel {
    pub(crate) fn new(
        bdev: Arc<Bdev>,
        driver: Box<dyn DriverChannel>,
        stats: Arc<ChannelStats>,
    ) -> Self {
        let wake_fd = driver.wake_fd();
        IoChannel {
            bdev,
            driver: RefCell::new(driver),
            waiting: RefCell::new(VecDeque::with_capacity(256)),
            stats,
            inflight: Cell::new(0),
            wake_fd,
        }
    }

    /// The bdev this channel serves.
    pub fn bdev(&self) -> &Arc<Bdev> {
        &self.bdev
    }

    /// Requests submitted and not yet completed.
    pub fn inflight(&self) -> u64 {
        self.inflight.get()
    }

    /// Submits a request. It always completes through its callback: invalid requests complete
    /// with an error, and requests the driver cannot take yet wait in order, never dropped.
    pub fn submit(self: &Rc<Self>, mut io: BdevIo) {
        io.channel = Some(self.clone());
        io.submit_tick = tsc::ticks();
        self.inflight.set(self.inflight.get() + 1);
        if let Err(errno) = self.validate(&io) {
            io.complete(IoStatus::Failed(errno));
            return;
        }
        if !self.waiting.borrow().is_empty() {
            self.waiting.borrow_mut().push_back(io);
            return;
        }
        let rejected = self.driver.borrow_mut().submit(io);
        if let Err(io) = rejected {
            self.waiting.borrow_mut().push_back(io);
        }
    }

    fn validate(&self, io: &BdevIo) -> Result<(), i32> {
        let b = &self.bdev;
        if !b.io_types().contains(io.io_type) {
            return Err(libc::ENOTSUP);
        }
        if io.io_type.has_data() || io.num_blocks > 0 {
            let end = io
                .offset_blocks
                .checked_add(io.num_blocks)
                .ok_or(libc::EINVAL)?;
            if end > b.num_blocks() {
                return Err(libc::EINVAL);
            }
        }
        if io.io_type.has_data() {
            let want = io
                .num_blocks
                .checked_mul(b.block_size() as u64)
                .ok_or(libc::EINVAL)?;
            if io.num_blocks == 0 || io.iov_len() as u64 != want {
                return Err(libc::EINVAL);
            }
        }
        Ok(())
    }

    pub(crate) fn account_completion(&self, io: &BdevIo) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
        let lat = tsc::ticks().wrapping_sub(io.submit_tick);
        let bytes = io.num_blocks * self.bdev.block_size() as u64;
        self.stats
            .record(io.io_type, bytes, lat, io.status.is_success());
    }

    fn retry_waiting(&self) -> usize {
        let mut n = 0;
        loop {
            let io = match self.waiting.borrow_mut().pop_front() {
                Some(io) => io,
                None => break,
            };
            let rejected = self.driver.borrow_mut().submit(io);
            match rejected {
                Ok(()) => n += 1,
                Err(io) => {
                    self.waiting.borrow_mut().push_front(io);
                    break;
                }
            }
        }
        n
    }
}

impl Poller for IoChannel {
    fn poll(&self) -> usize {
        if self.inflight.get() == 0 {
            return 0;
        }
        let mut work = match self.driver.try_borrow_mut() {
            Ok(mut d) => d.poll(),
            Err(_) => 0,
        };
        if !self.waiting.borrow().is_empty() {
            work += self.retry_waiting();
            // Submissions made from here still need the driver to push them out.
            if let Ok(mut d) = self.driver.try_borrow_mut() {
                work += d.poll();
            }
        }
        work
    }

    fn wake_fd(&self) -> Option<i32> {
        self.wake_fd
    }

    fn next_deadline(&self) -> Option<u64> {
        self.driver
            .try_borrow()
            .ok()
            .and_then(|d| d.next_deadline())
    }

    fn busy(&self) -> bool {
        !self.waiting.borrow().is_empty()
            || self
                .driver
                .try_borrow()
                .map(|d| d.must_poll())
                .unwrap_or(true)
    }
}
