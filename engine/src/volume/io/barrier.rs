//! The copy barrier: keeps copies and guest writes to the same chunk apart (md's resync
//! barrier).
//!
//! Guest writers (on the reactors) count themselves in their chunk's bucket with
//! [`SyncBarrier::enter`] before they look at the map and leave with [`SyncBarrier::leave`]
//! when the write completed; a copier (resync, attach, read repair, subdisk move) raises a
//! chunk (`SyncBarrier::raise`) and waits for the count to drain; a writer that finds
//! its chunk raised waits in its channel. Fences ([`super::fence`]) hold a chunk for a copy
//! write still in flight after its copy was cancelled. The writer side is lock-free: two
//! atomics per write, on padded buckets.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Number of barrier buckets per volume (blocks hash onto them by chunk).
const BUCKETS: usize = 1024;

#[repr(align(64))]
#[derive(Default)]
struct Bucket {
    pending: AtomicU32,
    raised: AtomicU32,
    /// Held by the one copier working on the chunk (copiers exclude each other).
    copier: AtomicU32,
    /// Fences holding the chunk (each also counts in `raised`): no copier takes it meanwhile.
    fenced: AtomicU32,
}

/// Keeps copies and guest writes to the same chunk apart (md's resync barrier): writers count
/// themselves in the chunk's bucket before they look at the map, the copier raises the
/// bucket's barrier and waits for the count to drain. Lock-free on the writer side.
pub struct SyncBarrier {
    /// Blocks per chunk.
    chunk: u64,
    /// `log2(chunk)` when the chunk is a power of two (the common case: a shift, no division).
    shift: Option<u32>,
    buckets: Box<[Bucket]>,
    /// How long a copier waits for one of its I/Os before it warns (and waits on: the chunk
    /// stays raised until the disk answers), in ms.
    io_timeout_ms: AtomicU64,
    /// Copy I/Os that outlived that timeout.
    slow_ios: AtomicU64,
}

/// Default of [`SyncBarrier::io_timeout`].
const COPY_IO_TIMEOUT: Duration = Duration::from_secs(60);

impl SyncBarrier {
    /// A barrier whose buckets cover `chunk_blocks` blocks each (any number: a RAID-5
    /// volume's chunks are a whole number of rows).
    pub fn new(chunk_blocks: u64) -> SyncBarrier {
        let chunk = chunk_blocks.max(1);
        SyncBarrier {
            chunk,
            shift: chunk.is_power_of_two().then(|| chunk.trailing_zeros()),
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
            io_timeout_ms: AtomicU64::new(COPY_IO_TIMEOUT.as_millis() as u64),
            slow_ios: AtomicU64::new(0),
        }
    }

    /// How long a copier waits for one I/O before it logs that the disk is slow (it keeps
    /// waiting, with the chunk locked: a copy write that landed after the chunk was released
    /// could overwrite a newer guest write; if its task is cancelled meanwhile, a fence keeps
    /// the chunk locked instead, see `volume::io::fence`).
    pub fn io_timeout(&self) -> Duration {
        Duration::from_millis(self.io_timeout_ms.load(Ordering::Relaxed))
    }

    /// Sets [`SyncBarrier::io_timeout`] (at least 1 ms).
    pub fn set_io_timeout(&self, t: Duration) {
        self.io_timeout_ms
            .store((t.as_millis() as u64).max(1), Ordering::Relaxed);
    }

    /// Copy I/Os that outlived [`SyncBarrier::io_timeout`] (each time it elapsed).
    pub fn slow_ios(&self) -> u64 {
        self.slow_ios.load(Ordering::Relaxed)
    }

    /// Counts one copy I/O that outlived [`SyncBarrier::io_timeout`].
    pub(crate) fn count_slow_io(&self) {
        self.slow_ios.fetch_add(1, Ordering::Relaxed);
    }

    /// Blocks per chunk.
    pub fn chunk_blocks(&self) -> u64 {
        self.chunk
    }

    /// The chunk holding `block`.
    pub fn chunk_of(&self, block: u64) -> u64 {
        match self.shift {
            Some(s) => block >> s,
            None => block / self.chunk,
        }
    }

    fn range(&self, offset: u64, num: u64) -> (u64, u64) {
        let first = self.chunk_of(offset);
        let last = self.chunk_of(offset + num.max(1) - 1);
        (first, last.min(first + BUCKETS as u64 - 1))
    }

    fn bucket(&self, chunk: u64) -> &Bucket {
        &self.buckets[(chunk % BUCKETS as u64) as usize]
    }

    /// A writer enters `[offset, offset + num)`: returns false (and leaves) if a copy holds
    /// part of it; the writer must retry later.
    pub fn enter(&self, offset: u64, num: u64) -> bool {
        let (first, last) = self.range(offset, num);
        for c in first..=last {
            self.bucket(c).pending.fetch_add(1, Ordering::SeqCst);
        }
        let blocked = (first..=last).any(|c| self.bucket(c).raised.load(Ordering::SeqCst) != 0);
        if blocked {
            self.leave(offset, num);
        }
        !blocked
    }

    /// A writer that entered leaves.
    pub fn leave(&self, offset: u64, num: u64) {
        let (first, last) = self.range(offset, num);
        for c in first..=last {
            self.bucket(c).pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The copier takes chunk `chunk`: raises its barrier and waits until no writer is
    /// inside (or `cancel` is set; then it returns false with the barrier lowered).
    pub(crate) fn raise(&self, chunk: u64, cancel: &AtomicBool) -> bool {
        let b = self.bucket(chunk);
        // One copier per chunk at a time (a resync and a read repair must not cross-copy).
        // Nor over a copy write still in flight from a cancelled copy (see `volume::io::fence`).
        let took = || {
            b.fenced.load(Ordering::SeqCst) == 0
                && b.copier
                    .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
        };
        if !wait_until(took, cancel) {
            return false;
        }
        b.raised.fetch_add(1, Ordering::SeqCst);
        if !wait_until(|| b.pending.load(Ordering::SeqCst) == 0, cancel) {
            self.lower(chunk);
            return false;
        }
        true
    }

    pub(crate) fn lower(&self, chunk: u64) {
        let b = self.bucket(chunk);
        b.raised.fetch_sub(1, Ordering::SeqCst);
        b.copier.store(0, Ordering::SeqCst);
    }

    /// A fence holds chunk `chunk` (writers and copiers keep away) until
    /// [`SyncBarrier::fence_release`]. Called by the copier holding the chunk before it lowers
    /// its own hold, or on a barrier no copier uses yet. Any thread may call it.
    pub(crate) fn fence_hold(&self, chunk: u64) {
        let b = self.bucket(chunk);
        b.fenced.fetch_add(1, Ordering::SeqCst);
        b.raised.fetch_add(1, Ordering::SeqCst);
    }

    /// Ends a [`SyncBarrier::fence_hold`]. Only atomics: safe on a reactor thread.
    pub(crate) fn fence_release(&self, chunk: u64) {
        let b = self.bucket(chunk);
        b.raised.fetch_sub(1, Ordering::SeqCst);
        b.fenced.fetch_sub(1, Ordering::SeqCst);
    }

    /// Takes every chunk of the volume, as [`SyncBarrier::raise`] does one: returns once no
    /// write is in flight anywhere (writes held until their failure is recorded included),
    /// with new writes waiting in their channels until the guard drops. `None` (nothing
    /// raised) if `cancel` is set meanwhile.
    pub(crate) fn raise_all<'a>(&'a self, cancel: &AtomicBool) -> Option<AllRaised<'a>> {
        for c in 0..BUCKETS as u64 {
            if !self.raise(c, cancel) {
                (0..c).for_each(|k| self.lower(k));
                return None;
            }
        }
        Some(AllRaised(self))
    }

    /// Whether a copier holds some chunk (tests watch a quiesce with it).
    #[cfg(test)]
    pub(crate) fn any_raised(&self) -> bool {
        self.buckets
            .iter()
            .any(|b| b.raised.load(Ordering::SeqCst) != 0)
    }
}

/// Every chunk of a volume held by one copier ([`SyncBarrier::raise_all`]); lowered on drop.
pub(crate) struct AllRaised<'a>(&'a SyncBarrier);

impl Drop for AllRaised<'_> {
    fn drop(&mut self) {
        (0..BUCKETS as u64).for_each(|c| self.0.lower(c));
    }
}

/// Spins briefly, then sleeps in 50 µs steps, until `done` holds (true) or `cancel` is set
/// (false).
fn wait_until(mut done: impl FnMut() -> bool, cancel: &AtomicBool) -> bool {
    let mut spins = 0u32;
    while !done() {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        spins += 1;
        if spins < 100 {
            std::hint::spin_loop();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barrier_turns_writers_away_only_from_raised_chunks() {
        let b = SyncBarrier::new(2048);
        let cancel = AtomicBool::new(false);
        assert!(b.raise(1, &cancel));
        assert!(b.enter(0, 8), "chunk 0 is free");
        assert!(!b.enter(2048, 8), "chunk 1 is being copied");
        assert!(
            !b.enter(2040, 16),
            "a write spanning into chunk 1 waits too"
        );
        b.lower(1);
        assert!(b.enter(2048, 8));
        b.leave(2048, 8);
        // A writer inside makes the copier wait until it leaves (cancel ends the wait).
        cancel.store(true, Ordering::Relaxed);
        assert!(!b.raise(0, &cancel), "writer still inside chunk 0");
        b.leave(0, 8);
        cancel.store(false, Ordering::Relaxed);
        assert!(b.raise(0, &cancel));
        b.lower(0);
    }
}
