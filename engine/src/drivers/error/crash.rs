//! Crash simulation (a plexd extension): writes that are acknowledged but lost.
//!
//! - `drop_writes_after N`: N more data-changing requests (write, unmap, write_zeroes) reach the
//!   base; every later one is acknowledged and silently dropped, as if power failed right then.
//! - `volatile_cache`: writes are acknowledged from an in-memory write-back cache and reach the
//!   base only when a flush writes them down; reads see the cache; `crash` throws away whatever
//!   was not flushed yet.
//!
//! The mode is one atomic read on the I/O path. Only `volatile_cache` takes a lock (the cache's
//! `Mutex`, on every request in that mode) and allocates: it is a test tool, not a data path.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, MutexGuard};

use serde_json::{json, Map, Value};

use super::channel::{copy_at, finish_parent};
use super::ErrorState;
use crate::bdev::{BdevIo, IoBuf, IoChannel, IoCompletion, IoStatus, IoType};

/// How an error bdev simulates a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every request reaches the base (default).
    None,
    /// After `count` more data-changing requests, the rest are acknowledged but dropped.
    DropWritesAfter,
    /// Writes wait in a volatile write-back cache until a flush.
    VolatileCache,
}

impl CrashMode {
    /// The accepted names, for error messages.
    pub const NAMES: &'static str = "none, drop_writes_after, volatile_cache";

    /// Parses the RPC name.
    pub fn parse(s: &str) -> Option<CrashMode> {
        match s {
            "none" => Some(CrashMode::None),
            "drop_writes_after" => Some(CrashMode::DropWritesAfter),
            "volatile_cache" => Some(CrashMode::VolatileCache),
            _ => None,
        }
    }

    /// The RPC name.
    pub fn name(self) -> &'static str {
        match self {
            CrashMode::None => "none",
            CrashMode::DropWritesAfter => "drop_writes_after",
            CrashMode::VolatileCache => "volatile_cache",
        }
    }

    fn from_u8(v: u8) -> CrashMode {
        match v {
            1 => CrashMode::DropWritesAfter,
            2 => CrashMode::VolatileCache,
            _ => CrashMode::None,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            CrashMode::None => 0,
            CrashMode::DropWritesAfter => 1,
            CrashMode::VolatileCache => 2,
        }
    }
}

/// A cached block: its data and the sequence number of the write that stored it.
struct CachedBlock {
    seq: u64,
    data: Box<[u8]>,
}

/// The volatile write-back cache of one error bdev.
#[derive(Default)]
pub(super) struct WriteCache {
    blocks: BTreeMap<u64, CachedBlock>,
    next_seq: u64,
    /// A flush is writing blocks down; other flushes, unmaps and write-zeroes wait for it.
    flushing: bool,
}

/// Contiguous cached blocks being written down by a flush.
pub(super) struct FlushRun {
    start: u64,
    /// Sequence number of each block, to retire only blocks not overwritten meanwhile.
    seqs: Vec<u64>,
    buf: Option<IoBuf>,
}

/// Largest write a flush issues (bytes).
const FLUSH_RUN_BYTES: usize = 1 << 20;

impl WriteCache {
    /// Stores `data` (whole blocks) from block `first` on.
    pub(super) fn store(&mut self, first: u64, block_size: usize, data: &[u8]) {
        for (i, chunk) in data.chunks_exact(block_size).enumerate() {
            self.next_seq += 1;
            self.blocks.insert(
                first + i as u64,
                CachedBlock {
                    seq: self.next_seq,
                    data: chunk.into(),
                },
            );
        }
    }

    /// Copies of the cached blocks in `[first, first + n)`.
    pub(super) fn snapshot(&self, first: u64, n: u64) -> Vec<(u64, Box<[u8]>)> {
        self.blocks
            .range(first..first.saturating_add(n))
            .map(|(b, c)| (*b, c.data.clone()))
            .collect()
    }

    /// Drops the cached blocks in `[first, first + n)`.
    pub(super) fn discard(&mut self, first: u64, n: u64) {
        let mut tail = self.blocks.split_off(&first);
        let mut after = tail.split_off(&first.saturating_add(n));
        self.blocks.append(&mut after);
    }

    /// Number of cached blocks.
    pub(super) fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether a flush is writing blocks down.
    pub(super) fn flushing(&self) -> bool {
        self.flushing
    }

    /// Copies every cached block into runs of contiguous blocks to write down, and marks a
    /// flush as running.
    pub(super) fn begin_flush(&mut self, block_size: usize) -> Vec<FlushRun> {
        self.flushing = true;
        let max_blocks = (FLUSH_RUN_BYTES / block_size).max(1);
        let mut runs: Vec<(u64, Vec<u64>)> = Vec::new();
        for (&b, c) in &self.blocks {
            match runs.last_mut() {
                Some((start, seqs))
                    if *start + seqs.len() as u64 == b && seqs.len() < max_blocks =>
                {
                    seqs.push(c.seq)
                }
                _ => runs.push((b, vec![c.seq])),
            }
        }
        runs.into_iter()
            .map(|(start, seqs)| {
                let mut buf = IoBuf::new(seqs.len() * block_size);
                for (i, (_, c)) in self
                    .blocks
                    .range(start..start + seqs.len() as u64)
                    .enumerate()
                {
                    buf.as_mut_slice()[i * block_size..(i + 1) * block_size]
                        .copy_from_slice(&c.data);
                }
                FlushRun {
                    start,
                    seqs,
                    buf: Some(buf),
                }
            })
            .collect()
    }

    /// Forgets the blocks of `run` that reached the base, unless rewritten since.
    fn retire(&mut self, run: &FlushRun) {
        for (i, seq) in run.seqs.iter().enumerate() {
            let b = run.start + i as u64;
            if self.blocks.get(&b).is_some_and(|c| c.seq == *seq) {
                self.blocks.remove(&b);
            }
        }
    }
}

/// Crash-simulation state of one error bdev.
#[derive(Default)]
pub(super) struct CrashState {
    /// `CrashMode` as u8; changed only with the cache lock held.
    mode: AtomicU8,
    writes_left: AtomicU64,
    dropped: AtomicU64,
    cache: std::sync::Mutex<WriteCache>,
}

impl CrashState {
    /// The current mode (one atomic load).
    #[inline]
    pub(super) fn mode(&self) -> CrashMode {
        CrashMode::from_u8(self.mode.load(Ordering::Acquire))
    }

    /// In `drop_writes_after`: whether this data-changing request still reaches the base.
    /// Counts the dropped ones.
    pub(super) fn allow_write(&self) -> bool {
        let ok = self
            .writes_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if !ok {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Locks the volatile cache (volatile_cache mode and control path only).
    pub(super) fn lock(&self) -> MutexGuard<'_, WriteCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Switches mode. Leaving `volatile_cache` needs an empty cache: returns the number of
    /// unflushed blocks otherwise, and changes nothing.
    pub(super) fn set_mode(&self, mode: CrashMode, count: u64) -> Result<(), usize> {
        let cache = self.lock();
        if self.mode() == CrashMode::VolatileCache
            && mode != CrashMode::VolatileCache
            && cache.len() > 0
        {
            return Err(cache.len());
        }
        self.writes_left.store(count, Ordering::Release);
        self.dropped.store(0, Ordering::Relaxed);
        self.mode.store(mode.as_u8(), Ordering::Release);
        Ok(())
    }

    /// Discards every unflushed cached block; returns how many.
    pub(super) fn crash(&self) -> usize {
        let mut cache = self.lock();
        let n = cache.blocks.len();
        cache.blocks.clear();
        n
    }

    /// Marks the running flush finished.
    fn end_flush(&self) {
        self.lock().flushing = false;
    }

    /// Mode details for `driver_specific`.
    pub(super) fn to_json(&self, m: &mut Map<String, Value>) {
        let mode = self.mode();
        m.insert("crash_mode".into(), json!(mode.name()));
        match mode {
            CrashMode::None => {}
            CrashMode::DropWritesAfter => {
                m.insert(
                    "writes_before_drop".into(),
                    json!(self.writes_left.load(Ordering::Acquire)),
                );
                m.insert(
                    "dropped_writes".into(),
                    json!(self.dropped.load(Ordering::Relaxed)),
                );
            }
            CrashMode::VolatileCache => {
                m.insert("cached_blocks".into(), json!(self.lock().len()));
            }
        }
    }
}

/// A read in volatile_cache mode: the base's data with the cached blocks (copied when the read
/// was submitted) laid over it.
pub(super) struct OverlayRead {
    pub(super) snapshot: Vec<(u64, Box<[u8]>)>,
    pub(super) block_size: usize,
}

impl IoCompletion for OverlayRead {
    fn io_done(&self, mut child: BdevIo) {
        let status = child.status();
        let tag = child.tag();
        let parent = child.take_parent();
        drop(child);
        let Some(mut parent) = parent else {
            return;
        };
        if status.is_success() {
            let first = parent.offset_blocks();
            for (b, data) in &self.snapshot {
                let off = (b - first) as usize * self.block_size;
                copy_at(&mut parent, off, data);
            }
        }
        finish_parent(parent, tag, status);
    }
}

/// Tag of the final base flush of a [`FlushOp`] (the writes are tagged with their run index).
const FINAL_FLUSH: u64 = u64::MAX;

/// A flush in volatile_cache mode: writes the cached blocks down, then flushes the base, then
/// completes the parent flush.
pub(super) struct FlushOp {
    me: Weak<FlushOp>,
    state: Arc<ErrorState>,
    base: Rc<IoChannel>,
    parent: RefCell<Option<BdevIo>>,
    runs: RefCell<Vec<FlushRun>>,
    remaining: Cell<usize>,
    error: Cell<Option<i32>>,
    done: Cell<bool>,
}

impl FlushOp {
    /// Starts writing `runs` down for the flush `parent`.
    pub(super) fn start(
        state: Arc<ErrorState>,
        base: Rc<IoChannel>,
        parent: BdevIo,
        mut runs: Vec<FlushRun>,
    ) {
        let block_size = state.base.block_size() as usize;
        let mut children = Vec::with_capacity(runs.len());
        let op = Rc::new_cyclic(|me| FlushOp {
            me: me.clone(),
            state,
            base,
            parent: RefCell::new(Some(parent)),
            runs: RefCell::new(Vec::new()),
            remaining: Cell::new(0),
            error: Cell::new(None),
            done: Cell::new(false),
        });
        let cb: Rc<dyn IoCompletion> = op.clone();
        for (i, run) in runs.iter_mut().enumerate() {
            let Some(buf) = run.buf.take() else {
                continue;
            };
            let mut child = BdevIo::alloc();
            child.prep(IoType::Write, run.start, run.seqs.len() as u64);
            child.set_buf(buf, run.seqs.len() * block_size);
            child.set_callback(cb.clone(), i as u64);
            children.push(child);
        }
        *op.runs.borrow_mut() = runs;
        op.remaining.set(children.len());
        if children.is_empty() {
            op.submit_final();
        }
        // Completions are never delivered inside `submit`, so `op` is fully set up first.
        for child in children {
            op.base.submit(child);
        }
    }

    fn submit_final(&self) {
        let parent = self.parent.borrow_mut().take();
        let (Some(parent), Some(me)) = (parent, self.me.upgrade()) else {
            return;
        };
        let mut child = BdevIo::alloc();
        child.copy_request_from(&parent);
        child.set_parent(parent);
        child.set_callback(me, FINAL_FLUSH);
        self.base.submit(child);
    }

    fn finish(&self, parent: Option<BdevIo>, status: IoStatus) {
        self.done.set(true);
        self.state.crash.end_flush();
        if let Some(p) = parent {
            p.complete(status);
        }
    }
}

impl IoCompletion for FlushOp {
    fn io_done(&self, mut child: BdevIo) {
        let status = child.status();
        let tag = child.tag();
        if tag == FINAL_FLUSH {
            let parent = child.take_parent();
            drop(child);
            self.finish(parent, status);
            return;
        }
        drop(child);
        match status {
            IoStatus::Success => {
                if let Some(run) = self.runs.borrow().get(tag as usize) {
                    self.state.crash.lock().retire(run);
                }
            }
            IoStatus::Failed(e) => self.error.set(Some(e)),
            IoStatus::Pending => self.error.set(Some(libc::EIO)),
        }
        let left = self.remaining.get().saturating_sub(1);
        self.remaining.set(left);
        if left > 0 {
            return;
        }
        match self.error.get() {
            Some(e) => {
                let parent = self.parent.borrow_mut().take();
                self.finish(parent, IoStatus::Failed(e));
            }
            None => self.submit_final(),
        }
    }
}

impl Drop for FlushOp {
    fn drop(&mut self) {
        // Torn down with its requests (reactor stopping): never leave the flag set.
        if !self.done.get() {
            let parent = self.parent.get_mut().take();
            self.finish(parent, IoStatus::Failed(libc::ECANCELED));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_runs_snapshot_discard_and_retire() {
        let mut c = WriteCache::default();
        c.store(4, 2, &[1, 1, 2, 2]);
        c.store(9, 2, &[3, 3]);
        assert_eq!(c.snapshot(0, 5).len(), 1);
        assert_eq!(&*c.snapshot(5, 10)[0].1, &[2, 2]);
        let runs = c.begin_flush(2);
        assert!(c.flushing());
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].start, runs[0].seqs.len()), (4, 2));
        assert_eq!(
            runs[0].buf.as_ref().map(|b| b.as_slice().to_vec()),
            Some(vec![1, 1, 2, 2])
        );
        // Block 5 is rewritten while the flush runs: it must survive the retire.
        c.store(5, 2, &[7, 7]);
        c.retire(&runs[0]);
        assert_eq!(c.len(), 2);
        assert_eq!(&*c.snapshot(5, 1)[0].1, &[7, 7]);
        c.discard(0, 9);
        assert_eq!(c.len(), 1);
        c.discard(9, 1);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn leaving_volatile_needs_a_clean_cache() {
        let s = CrashState::default();
        s.set_mode(CrashMode::VolatileCache, 0).unwrap();
        s.lock().store(0, 512, &[0u8; 512]);
        assert_eq!(s.set_mode(CrashMode::None, 0), Err(1));
        assert_eq!(s.crash(), 1);
        s.set_mode(CrashMode::DropWritesAfter, 1).unwrap();
        assert!(s.allow_write());
        assert!(!s.allow_write());
        assert_eq!(s.dropped.load(Ordering::Relaxed), 1);
    }
}
