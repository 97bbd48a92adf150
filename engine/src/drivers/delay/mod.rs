//! `delay`: a bdev that adds latency to another (SPDK's `bdev_delay`).
//!
//! Each request goes down to the base at once; when the base completes it, the request is held
//! until `submit tick + latency`, where the latency is the p99 value for about one request in
//! 100 (a cheap per-channel xorshift draw) and the average otherwise. Reads use the read
//! latencies; writes, flushes, unmaps and write-zeroes the write latencies. (SPDK starts the
//! wait when the base completes, so its requests take base latency + configured latency; here
//! they take the larger of the two, which is what "this device has 2 ms latency" means.)
//!
//! A reset is not delayed: it lets every held request of every channel complete at once with
//! the base's status (the data did reach the base; SPDK reports them aborted instead).
//!
//! Held requests wait in four per-channel queues (average/p99 × read/write), each kept in
//! deadline order, so completing the due ones only looks at queue heads. The channel reports the
//! earliest deadline to its reactor, so a sleeping reactor wakes in time. Nothing on the I/O path
//! locks or allocates (the queues are preallocated and only grow past their capacity).

pub mod rpc;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::bdev::thread::BdevThread;
use crate::bdev::{
    Bdev, BdevDriver, BdevError, BdevIo, BdevSpec, DriverChannel, IoChannel, IoCompletion, IoType,
};
use crate::reactor::tsc;
use crate::Engine;

/// The delay bdev's `product_name` (as SPDK's).
pub const PRODUCT_NAME: &str = "delay";

/// The largest latency accepted, in µs (one hour).
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One of the four latencies of a delay bdev.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyType {
    /// Average read latency.
    AvgRead,
    /// 99th-percentile read latency.
    P99Read,
    /// Average write latency (also flush, unmap, write-zeroes).
    AvgWrite,
    /// 99th-percentile write latency.
    P99Write,
}

impl LatencyType {
    /// The accepted names, for error messages.
    pub const NAMES: &'static str = "avg_read, p99_read, avg_write, p99_write";

    /// Parses SPDK's `latency_type` name.
    pub fn parse(s: &str) -> Option<LatencyType> {
        match s {
            "avg_read" => Some(LatencyType::AvgRead),
            "p99_read" => Some(LatencyType::P99Read),
            "avg_write" => Some(LatencyType::AvgWrite),
            "p99_write" => Some(LatencyType::P99Write),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            LatencyType::AvgRead => 0,
            LatencyType::P99Read => 1,
            LatencyType::AvgWrite => 2,
            LatencyType::P99Write => 3,
        }
    }
}

/// A delay bdev's latencies, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    /// Average read latency.
    pub avg_read: u64,
    /// 99th-percentile read latency (at least `avg_read`).
    pub p99_read: u64,
    /// Average write latency.
    pub avg_write: u64,
    /// 99th-percentile write latency (at least `avg_write`).
    pub p99_write: u64,
}

impl Latencies {
    /// Checks that each p99 is at least its average and nothing exceeds [`MAX_LATENCY_US`].
    pub fn validate(&self) -> Result<(), BdevError> {
        if let Some(l) = self.as_array().into_iter().find(|l| *l > MAX_LATENCY_US) {
            return Err(BdevError::InvalidParam(format!(
                "latency {l} µs is too large: the limit is {MAX_LATENCY_US} µs (one hour)"
            )));
        }
        for (kind, avg, p99) in [
            ("read", self.avg_read, self.p99_read),
            ("write", self.avg_write, self.p99_write),
        ] {
            if p99 < avg {
                return Err(BdevError::InvalidParam(format!(
                    "p99 {kind} latency ({p99} µs) is below the average {kind} latency ({avg} µs); \
                     it must be at least the average"
                )));
            }
        }
        Ok(())
    }

    fn as_array(&self) -> [u64; 4] {
        [self.avg_read, self.p99_read, self.avg_write, self.p99_write]
    }

    fn set(&mut self, t: LatencyType, us: u64) {
        match t {
            LatencyType::AvgRead => self.avg_read = us,
            LatencyType::P99Read => self.p99_read = us,
            LatencyType::AvgWrite => self.avg_write = us,
            LatencyType::P99Write => self.p99_write = us,
        }
    }
}

fn us_to_ticks(us: u64) -> u64 {
    tsc::duration_to_ticks(Duration::from_micros(us))
}

/// The state of one delay bdev shared by its reactors and the control plane.
pub struct DelayState {
    name: String,
    base: Arc<Bdev>,
    /// The configured values (control path; updates are validated under this lock).
    latencies: Mutex<Latencies>,
    /// The same in ticks, indexed by `LatencyType::index` (I/O path).
    ticks: [AtomicU64; 4],
    /// Bumped by resets: every channel then lets go of the requests it holds.
    resets: AtomicU64,
}

impl DelayState {
    /// The delay bdev's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bdev it is stacked on.
    pub fn base(&self) -> &Arc<Bdev> {
        &self.base
    }

    /// The current latencies.
    pub fn latencies(&self) -> Latencies {
        *self.latencies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes one latency; requests submitted from now on use it. Keeps p99 ≥ average.
    pub fn update_latency(&self, t: LatencyType, us: u64) -> Result<(), BdevError> {
        let mut cur = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = *cur;
        next.set(t, us);
        next.validate()?;
        *cur = next;
        self.ticks[t.index()].store(us_to_ticks(us), Ordering::Relaxed);
        tracing::info!(bdev = %self.name, latency_type = ?t, latency_us = us, "latency updated");
        Ok(())
    }

    fn info_json(&self) -> Value {
        let l = self.latencies();
        json!({
            "name": self.name,
            "base_bdev_name": self.base.name(),
            "avg_read_latency": l.avg_read,
            "p99_read_latency": l.p99_read,
            "avg_write_latency": l.avg_write,
            "p99_write_latency": l.p99_write,
        })
    }
}

/// The delay state behind `bdev`, or `None` if it is not a delay bdev.
pub fn state_of(bdev: &Bdev) -> Option<Arc<DelayState>> {
    bdev.driver()
        .as_any()
        .downcast_ref::<DelayBdev>()
        .map(|d| d.state.clone())
}

/// The delay driver's bdev.
pub struct DelayBdev {
    state: Arc<DelayState>,
}

impl DelayBdev {
    /// The shared state.
    pub fn state(&self) -> &Arc<DelayState> {
        &self.state
    }
}

impl BdevDriver for DelayBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    fn create_channel(&self, bdev: &Arc<Bdev>) -> Result<Box<dyn DriverChannel>, BdevError> {
        let base = self.state.base.get_io_channel()?;
        Ok(Box::new(DelayChannel {
            held: Rc::new(Held {
                base,
                queues: RefCell::new(std::array::from_fn(|_| {
                    VecDeque::with_capacity(QUEUE_CAPACITY)
                })),
            }),
            state: self.state.clone(),
            bdev_id: bdev.id(),
            rng: (tsc::ticks() ^ bdev.id().rotate_left(32)) | 1,
            seen_resets: self.state.resets.load(Ordering::Acquire),
            recheck_ticks: tsc::duration_to_ticks(RECHECK).max(1),
        }))
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        Some(("delay", self.state.info_json()))
    }

    fn config(&self, bdev: &Bdev) -> Option<Value> {
        let mut params = self.state.info_json();
        params["uuid"] = json!(bdev.uuid().to_string());
        Some(json!({"method": "bdev_delay_create", "params": params}))
    }

    fn base_bdevs(&self) -> Vec<Arc<Bdev>> {
        vec![self.state.base.clone()]
    }
}

/// Creates delay bdev `name` on the bdev named `base_name` (claiming it) and returns it.
pub fn create(
    engine: &Engine,
    name: &str,
    base_name: &str,
    latencies: Latencies,
    uuid: Option<uuid::Uuid>,
) -> Result<Arc<Bdev>, BdevError> {
    latencies.validate()?;
    let base = engine.bdevs().get(base_name)?;
    engine.bdevs().check_free(name)?;
    base.claim(&format!("delay bdev {name}"))?;
    let ticks = latencies
        .as_array()
        .map(|us| AtomicU64::new(us_to_ticks(us)));
    let state = Arc::new(DelayState {
        name: name.to_string(),
        base: base.clone(),
        latencies: Mutex::new(latencies),
        ticks,
        resets: AtomicU64::new(0),
    });
    let driver = Box::new(DelayBdev {
        state: state.clone(),
    });
    let spec = BdevSpec {
        name: name.to_string(),
        aliases: Vec::new(),
        uuid,
        block_size: base.block_size(),
        num_blocks: base.num_blocks(),
        io_types: base.io_types(),
    };
    engine
        .add_bdev(spec, driver)
        .inspect_err(|_| base.release_claim())
}

/// Preallocated room in each held-request queue.
const QUEUE_CAPACITY: usize = 256;
/// How often a channel holding requests looks for a reset made on another reactor.
const RECHECK: Duration = Duration::from_millis(10);
/// Child tag of requests that are not delayed (resets); others carry their queue index.
const NO_DELAY: u64 = u64::MAX;

/// The per-channel part child completions need: the base channel and the held requests.
/// A held request's `driver_ctx` is its deadline (ticks) and its status is the base's.
struct Held {
    base: Rc<IoChannel>,
    queues: RefCell<[VecDeque<BdevIo>; 4]>,
}

impl Held {
    /// Completes, in deadline order across the queues, every held request due by `now`
    /// (with the base's status); returns how many.
    fn complete_due(&self, now: u64) -> usize {
        let mut queues = self.queues.borrow_mut();
        let mut n = 0;
        loop {
            let next = queues
                .iter()
                .enumerate()
                .filter_map(|(i, q)| q.front().map(|io| (io.driver_ctx, i)))
                .min();
            let Some((deadline, i)) = next else {
                break;
            };
            if deadline > now {
                break;
            }
            if let Some(io) = queues[i].pop_front() {
                let status = io.status();
                io.complete(status);
                n += 1;
            }
        }
        n
    }

    /// Completes every held request now, in deadline order.
    fn release_all(&self) -> usize {
        self.complete_due(u64::MAX)
    }
}

impl IoCompletion for Held {
    fn io_done(&self, mut child: BdevIo) {
        let status = child.status();
        let q = child.tag();
        let parent = child.take_parent();
        drop(child);
        let Some(mut parent) = parent else {
            return;
        };
        let deadline = parent.driver_ctx;
        let mut queues = self.queues.borrow_mut();
        let queue = match queues.get_mut(q as usize) {
            Some(queue) if deadline > tsc::ticks() => queue,
            _ => {
                parent.complete(status);
                return;
            }
        };
        parent.status = status;
        // Deadlines in a queue share one latency, so this is almost always the tail; base
        // completions out of order or a latency update only move it a few places.
        let pos = queue
            .iter()
            .rposition(|io| io.driver_ctx <= deadline)
            .map_or(0, |p| p + 1);
        queue.insert(pos, parent);
    }
}

/// One delay bdev's queue on one reactor.
struct DelayChannel {
    held: Rc<Held>,
    state: Arc<DelayState>,
    bdev_id: u64,
    rng: u64,
    seen_resets: u64,
    recheck_ticks: u64,
}

impl DelayChannel {
    /// xorshift64: plenty for "one in a hundred".
    fn next_rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn pass_down(&self, io: BdevIo, tag: u64) {
        let mut child = BdevIo::alloc();
        child.copy_request_from(&io);
        child.set_parent(io);
        child.set_callback(self.held.clone(), tag);
        self.held.base.submit(child);
    }

    /// Whether this channel's bdev was deleted (its channels are detached from the reactors
    /// first; held requests keep the channel itself alive).
    fn detached(&self) -> bool {
        BdevThread::with(|l| l.channel(self.bdev_id).is_none()).unwrap_or(true)
    }
}

impl DriverChannel for DelayChannel {
    fn submit(&mut self, mut io: BdevIo) -> Result<(), BdevIo> {
        let class = match io.io_type() {
            IoType::Reset => {
                // A reset ends the artificial wait of every held request, on every channel.
                self.seen_resets = self.state.resets.fetch_add(1, Ordering::AcqRel) + 1;
                self.held.release_all();
                self.pass_down(io, NO_DELAY);
                return Ok(());
            }
            IoType::Read => LatencyType::AvgRead.index(),
            _ => LatencyType::AvgWrite.index(),
        };
        let q = class + usize::from(self.next_rand().is_multiple_of(100));
        let latency = self.state.ticks[q].load(Ordering::Relaxed);
        io.driver_ctx = io.submit_tick.saturating_add(latency);
        self.pass_down(io, q as u64);
        Ok(())
    }

    fn poll(&mut self) -> usize {
        let resets = self.state.resets.load(Ordering::Acquire);
        let reset = resets != self.seen_resets;
        self.seen_resets = resets;
        let idle = self.held.queues.borrow().iter().all(|q| q.is_empty());
        if idle {
            return 0;
        }
        if reset || self.detached() {
            return self.held.release_all();
        }
        self.held.complete_due(tsc::ticks())
    }

    fn next_deadline(&self) -> Option<u64> {
        let earliest = self
            .held
            .queues
            .try_borrow()
            .ok()?
            .iter()
            .filter_map(|q| q.front().map(|io| io.driver_ctx))
            .min()?;
        // A reset on another reactor releases these early: look again soon even if the
        // earliest deadline is far away and nothing else wakes this reactor.
        Some(earliest.min(tsc::ticks().saturating_add(self.recheck_ticks)))
    }
}

impl Drop for DelayChannel {
    fn drop(&mut self) {
        self.held.release_all();
    }
}

#[cfg(test)]
mod tests;
