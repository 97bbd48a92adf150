//! One benchmark job: a workload driven against one bdev from one reactor at a fixed queue
//! depth. Each completion resubmits its request from the completion callback, so the steady
//! state makes no heap allocation (requests, buffers and the histogram are all reused).

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use plexd_engine::bdev::{BdevIo, IoBuf, IoChannel, IoCompletion, IoStatus, IoType};
use plexd_engine::reactor::tsc;

use crate::workload::{check_pattern, fill_pattern, Rng, Workload};

/// Where a finished job sends its result: (job index, result or error).
pub type ResultSender = crossbeam::channel::Sender<(usize, Result<JobResult, String>)>;

/// Completions reported to the shared progress counter at a time.
const PROGRESS_BATCH: u64 = 64;

/// What a job does.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Bdev name.
    pub bdev: String,
    /// Reactor index (position in the cpumask) that runs the job.
    pub reactor: usize,
    /// Workload.
    pub workload: Workload,
    /// Bytes per request (a multiple of the block size).
    pub io_size: usize,
    /// Requests kept in flight.
    pub queue_depth: u32,
    /// Read percentage for rw/randrw.
    pub read_pct: u32,
    /// Run time (None: until `max_ios`).
    pub duration: Option<Duration>,
    /// Stop after this many requests (None: until `duration`).
    pub max_ios: Option<u64>,
    /// PRNG seed.
    pub seed: u64,
    /// Set to true to end the job early (checked before each new request).
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// This job's share of the bdev when several jobs drive it: (index, count). Jobs work on
    /// disjoint ranges so verify never races with itself.
    pub region: (u32, u32),
}

/// What a job measured.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// Bdev name.
    pub bdev: String,
    /// Core the job ran on.
    pub core: u32,
    /// The virtqueue it drove (vhost-user runs), None for in-process jobs.
    pub queue: Option<u32>,
    /// Workload.
    pub workload: Workload,
    /// Requests completed successfully.
    pub ios: u64,
    /// Bytes moved by successful requests.
    pub bytes: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Verify reads whose data did not match what was written.
    pub miscompares: u64,
    /// Wall time from first submission to last completion.
    pub runtime: Duration,
    /// Latency histogram, in ticks (see `tick_rate`).
    pub latency_ticks: Histogram<u64>,
    /// Ticks per second.
    pub tick_rate: u64,
}

/// One of the job's `queue_depth` requests: where it starts and what it writes or expects.
struct JobRequest {
    start: u64,
    seed: u64,
    verify_reading: bool,
}

struct State {
    rng: Rng,
    next_block: u64,
    started: u64,
    inflight: u32,
    ios: u64,
    bytes: u64,
    errors: u64,
    miscompares: u64,
    hist: Histogram<u64>,
    slots: Vec<JobRequest>,
    first_tick: u64,
    stopping: bool,
    /// Completions not yet added to the shared progress counter (batched so that jobs on
    /// different reactors do not bounce one cache line on every request).
    unreported: u64,
    done: Option<ResultSender>,
}

/// A running job (lives on its reactor).
pub struct Job {
    spec: JobSpec,
    core: u32,
    ch: Rc<IoChannel>,
    block_size: usize,
    io_blocks: u64,
    span_blocks: u64,
    base_unit: u64,
    deadline: u64,
    progress: Arc<AtomicU64>,
    state: RefCell<State>,
    me: Weak<Job>,
    index: usize,
}

/// Why a job could not start.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The bdev layer refused.
    #[error("bdev '{bdev}': {message}")]
    Bdev {
        /// The bdev.
        bdev: String,
        /// What went wrong.
        message: String,
    },
}

impl Job {
    /// Creates and starts a job on the current reactor; `done` receives the result.
    pub fn start(
        spec: JobSpec,
        ch: Rc<IoChannel>,
        core: u32,
        progress: Arc<AtomicU64>,
        index: usize,
        done: ResultSender,
    ) -> Result<Rc<Job>, JobError> {
        let bdev = ch.bdev().clone();
        let bs = bdev.block_size() as usize;
        let err = |m: String| JobError::Bdev {
            bdev: spec.bdev.clone(),
            message: m,
        };
        if spec.io_size == 0 || !spec.io_size.is_multiple_of(bs) {
            return Err(err(format!(
                "I/O size {} is not a multiple of the block size {bs}",
                spec.io_size
            )));
        }
        let io_blocks = (spec.io_size / bs) as u64;
        if io_blocks > bdev.num_blocks() {
            return Err(err(format!("I/O size {} exceeds the bdev", spec.io_size)));
        }
        let (ri, rc) = (spec.region.0 as u64, spec.region.1.max(1) as u64);
        let units = bdev.num_blocks() / io_blocks;
        let span_blocks = units / rc;
        let base_unit = ri.min(rc - 1) * span_blocks;
        if span_blocks == 0
            || (spec.workload == Workload::Verify && span_blocks < spec.queue_depth as u64)
        {
            return Err(err(format!(
                "the bdev is too small for {} jobs of queue depth {} and I/O size {}",
                rc, spec.queue_depth, spec.io_size
            )));
        }
        let tick_rate = tsc::tick_rate();
        let hist = Histogram::new_with_bounds(1, tick_rate.saturating_mul(60).max(2), 3)
            .map_err(|e| err(format!("histogram: {e}")))?;
        let qd = spec.queue_depth.max(1);
        let now = tsc::ticks();
        let deadline = match spec.duration {
            Some(d) => now + tsc::duration_to_ticks(d),
            None => u64::MAX,
        };
        let job = Rc::new_cyclic(|me| Job {
            core,
            ch,
            block_size: bs,
            io_blocks,
            span_blocks,
            base_unit,
            deadline,
            progress,
            index,
            me: me.clone(),
            state: RefCell::new(State {
                rng: Rng::new(spec.seed ^ (core as u64 + 1)),
                next_block: 0,
                started: 0,
                inflight: 0,
                ios: 0,
                bytes: 0,
                errors: 0,
                miscompares: 0,
                hist,
                slots: (0..qd)
                    .map(|i| JobRequest {
                        start: 0,
                        seed: i as u64,
                        verify_reading: false,
                    })
                    .collect(),
                first_tick: now,
                stopping: false,
                unreported: 0,
                done: Some(done),
            }),
            spec,
        });
        for slot in 0..qd {
            let mut io = BdevIo::alloc();
            io.set_buf(IoBuf::new(job.spec.io_size), job.spec.io_size);
            if !job.issue(io, slot as u64, tsc::ticks()) {
                break;
            }
        }
        job.maybe_finish();
        Ok(job)
    }

    fn more_allowed(&self, st: &State, now: u64) -> bool {
        !st.stopping
            && now < self.deadline
            && self.spec.max_ios.is_none_or(|m| st.started < m)
            && !self
                .spec
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// Prepares and submits the next request in `io`, stamped as started at `now` (the
    /// completion time of the request it replaces: one clock read per request, not two);
    /// returns false (dropping `io`) when the job is over.
    fn issue(&self, mut io: BdevIo, slot: u64, now: u64) -> bool {
        let (io_type, block, verify_seed) = {
            let mut st = self.state.borrow_mut();
            if !self.more_allowed(&st, now) {
                st.stopping = true;
                return false;
            }
            st.started += 1;
            st.inflight += 1;
            let w = self.spec.workload;
            let unit = if w.random() {
                st.rng.below(self.span_blocks)
            } else {
                let b = st.next_block;
                st.next_block = (b + 1) % self.span_blocks;
                b
            };
            let block = (self.base_unit + unit) * self.io_blocks;
            let io_type = match w {
                Workload::Read | Workload::RandRead => IoType::Read,
                Workload::Write | Workload::RandWrite | Workload::Verify => IoType::Write,
                Workload::Rw | Workload::RandRw => {
                    if (st.rng.below(100) as u32) < self.spec.read_pct {
                        IoType::Read
                    } else {
                        IoType::Write
                    }
                }
                Workload::Unmap => IoType::Unmap,
                Workload::Flush => IoType::Flush,
                Workload::WriteZeroes => IoType::WriteZeroes,
            };
            let seed = st.rng.next_u64();
            let s = &mut st.slots[slot as usize];
            s.start = now;
            s.seed = seed;
            s.verify_reading = false;
            (io_type, block, seed)
        };
        let (off, n) = if io_type == IoType::Flush {
            (0, 0)
        } else {
            (block, self.io_blocks)
        };
        io.prep(io_type, off, n);
        if io_type.has_data() {
            io.use_buf(self.spec.io_size);
            if self.spec.workload == Workload::Verify {
                if let Some(b) = io.buf_mut() {
                    fill_pattern(b.as_mut_slice(), block, self.block_size, verify_seed);
                }
            }
        }
        self.submit(io, slot);
        true
    }

    fn submit(&self, mut io: BdevIo, slot: u64) {
        if let Some(me) = self.me.upgrade() {
            io.set_callback(me, slot);
            self.ch.submit(io);
        }
    }

    fn maybe_finish(&self) {
        let mut st = self.state.borrow_mut();
        if st.inflight > 0 || !st.stopping {
            return;
        }
        let Some(done) = st.done.take() else { return };
        if st.unreported > 0 {
            self.progress.fetch_add(st.unreported, Ordering::Relaxed);
            st.unreported = 0;
        }
        let runtime = tsc::ticks_to_duration(tsc::ticks().wrapping_sub(st.first_tick));
        let r = JobResult {
            bdev: self.spec.bdev.clone(),
            core: self.core,
            queue: None,
            workload: self.spec.workload,
            ios: st.ios,
            bytes: st.bytes,
            errors: st.errors,
            miscompares: st.miscompares,
            runtime,
            latency_ticks: st.hist.clone(),
            tick_rate: tsc::tick_rate(),
        };
        drop(st);
        let _ = done.send((self.index, Ok(r)));
    }
}

impl IoCompletion for Job {
    fn io_done(&self, mut io: BdevIo) {
        let slot = io.tag();
        let now = tsc::ticks();
        let ok = io.status() == IoStatus::Success;
        let mut read_back = false;
        {
            let mut st = self.state.borrow_mut();
            st.inflight -= 1;
            let s = &st.slots[slot as usize];
            let (start, seed, reading) = (s.start, s.seed, s.verify_reading);
            if !ok {
                st.errors += 1;
            } else if self.spec.workload == Workload::Verify {
                if reading {
                    let first = io.offset_blocks();
                    let bad = io
                        .buf()
                        .and_then(|b| check_pattern(b.as_slice(), first, self.block_size, seed));
                    if bad.is_some() {
                        st.miscompares += 1;
                    }
                    st.ios += 1;
                    st.bytes += self.spec.io_size as u64;
                } else {
                    read_back = true;
                }
            } else {
                st.ios += 1;
                st.bytes += io.num_blocks() * self.block_size as u64;
            }
            if !read_back {
                st.hist.saturating_record(now.wrapping_sub(start).max(1));
                st.unreported += 1;
                if st.unreported >= PROGRESS_BATCH {
                    self.progress.fetch_add(st.unreported, Ordering::Relaxed);
                    st.unreported = 0;
                }
            }
        }
        if read_back {
            // Verify: read the range just written into the same (cleared) buffer.
            let (off, n) = (io.offset_blocks(), io.num_blocks());
            io.prep(IoType::Read, off, n);
            io.use_buf(self.spec.io_size);
            if let Some(b) = io.buf_mut() {
                b.as_mut_slice().fill(0);
            }
            {
                let mut st = self.state.borrow_mut();
                st.inflight += 1;
                st.slots[slot as usize].verify_reading = true;
            }
            self.submit(io, slot);
            return;
        }
        if !self.issue(io, slot, now) {
            self.maybe_finish();
        }
    }
}
