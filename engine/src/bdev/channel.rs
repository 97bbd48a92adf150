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

    fn inflight(&self) -> u64 {
        self.inflight.get()
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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::Arc;

    use super::*;
    use crate::bdev::{
        BdevDriver, BdevError, BdevRegistry, BdevSpec, IoBuf, IoCompletion, IoType, IoTypeSet,
    };
    use crate::reactor::InlineReactor;

    /// A driver whose queue holds 2 requests; it completes them one per poll.
    struct TinyQueue;
    struct TinyChannel {
        held: Vec<BdevIo>,
    }

    impl BdevDriver for TinyQueue {
        fn product_name(&self) -> &'static str {
            "tiny"
        }
        fn create_channel(&self, _b: &Arc<Bdev>) -> Result<Box<dyn DriverChannel>, BdevError> {
            Ok(Box::new(TinyChannel { held: Vec::new() }))
        }
        fn config(&self, _b: &Bdev) -> Option<serde_json::Value> {
            None
        }
    }

    impl DriverChannel for TinyChannel {
        fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo> {
            if self.held.len() >= 2 {
                return Err(io);
            }
            self.held.push(io);
            Ok(())
        }
        fn poll(&mut self) -> usize {
            if self.held.is_empty() {
                return 0;
            }
            self.held.remove(0).complete(IoStatus::Success);
            1
        }
    }

    struct Order(RefCell<Vec<(u64, IoStatus)>>);
    impl IoCompletion for Order {
        fn io_done(&self, io: BdevIo) {
            self.0.borrow_mut().push((io.tag(), io.status()));
        }
    }

    #[test]
    fn queue_full_requeues_in_order_and_bad_requests_fail_cleanly() {
        let reactor = InlineReactor::new().unwrap();
        let reg = BdevRegistry::new();
        let spec = BdevSpec {
            name: "tiny".into(),
            aliases: vec![],
            uuid: None,
            block_size: 512,
            num_blocks: 16,
            io_types: IoTypeSet::of(&[IoType::Read, IoType::Flush]),
        };
        let bdev = reg.register(spec, Box::new(TinyQueue)).unwrap();
        let ch = bdev.get_io_channel().unwrap();
        let order = Rc::new(Order(RefCell::new(Vec::new())));
        for tag in 0..10 {
            let mut io = BdevIo::alloc();
            io.prep(IoType::Flush, 0, 0);
            io.set_callback(order.clone(), tag);
            ch.submit(io);
        }
        // Out of range, wrong type, wrong iovec length: each fails, none reaches the driver.
        let mut bad = BdevIo::alloc();
        bad.prep(IoType::Read, 15, 2);
        bad.set_buf(IoBuf::new(1024), 1024);
        bad.set_callback(order.clone(), 100);
        ch.submit(bad);
        let mut bad = BdevIo::alloc();
        bad.prep(IoType::Unmap, 0, 1);
        bad.set_callback(order.clone(), 101);
        ch.submit(bad);
        let mut bad = BdevIo::alloc();
        bad.prep(IoType::Read, 0, 2);
        bad.set_buf(IoBuf::new(512), 512);
        bad.set_callback(order.clone(), 102);
        ch.submit(bad);
        assert!(
            order.0.borrow().is_empty(),
            "callbacks never run inside submit"
        );
        assert!(
            reactor.poll_until(std::time::Duration::from_secs(5), || order.0.borrow().len()
                == 13)
        );
        let got = order.0.borrow().clone();
        let ok: Vec<u64> = got
            .iter()
            .filter(|(_, s)| s.is_success())
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            ok,
            (0..10).collect::<Vec<_>>(),
            "every queued request completes, in order"
        );
        let failed: Vec<(u64, IoStatus)> =
            got.into_iter().filter(|(_, s)| !s.is_success()).collect();
        assert_eq!(
            failed,
            vec![
                (100, IoStatus::Failed(libc::EINVAL)),
                (101, IoStatus::Failed(libc::ENOTSUP)),
                (102, IoStatus::Failed(libc::EINVAL)),
            ]
        );
        assert_eq!(ch.inflight(), 0);
        let st = bdev.iostat();
        assert_eq!(st.num_flush_ops, 10);
        assert_eq!(st.num_io_errors, 3);
    }
}
