//! The error bdev's per-reactor channel. It decides each request's fate (an injected error, the
//! crash mode, or straight through) and passes surviving requests down to the base bdev's
//! channel on the same reactor as pooled child requests.
//!
//! Requests held by a `pending` injection stay in this channel until the bdev's generation
//! changes (clear, reset), the channel is detached from its reactor (bdev deleted) or dropped;
//! they then fail with ECANCELED. Requests held by a `hold` injection are passed down to the
//! base instead when the generation changes (they land late).

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::crash::{CrashMode, FlushOp, OverlayRead};
use super::inject::{ErrorKind, Hit};
use super::ErrorState;
use crate::bdev::thread::BdevThread;
use crate::bdev::{
    Bdev, BdevError, BdevIo, DriverChannel, IoChannel, IoCompletion, IoData, IoStatus, IoType,
};
use crate::reactor::tsc;

/// Child tags: what to do when the base completes the child.
const TAG_PLAIN: u64 = 0;
/// Flip the armed byte of the data read (if the read succeeded).
const TAG_CORRUPT_READ: u64 = 1;
/// Flip the armed byte back: the write was corrupted in the caller's buffer before going down.
const TAG_RESTORE_WRITE: u64 = 2;

/// Marks a held request (in `driver_ctx`, above the generation) as `hold`: passed down, not
/// failed, when released by a clear or a reset.
const HOLD_FLAG: u64 = 1 << 63;

/// Initial room for held requests (grows only if more are held at once).
const PENDING_CAPACITY: usize = 64;

/// How often a channel holding requests re-checks for a clear when nothing wakes its reactor.
const RECHECK: Duration = Duration::from_millis(10);

/// Offsets at or past this cannot be packed into `driver_ctx`; they lie past any request's
/// data anyway, so the corruption is a no-op there (as in SPDK).
const MAX_CORRUPT_OFFSET: u64 = 1 << 56;

/// What child completions need: the bdev's shared state and the base channel.
pub(super) struct Link {
    state: Arc<ErrorState>,
    base: Rc<IoChannel>,
    block_size: usize,
}

impl Link {
    fn pass_down(&self, io: BdevIo, cb: Rc<dyn IoCompletion>, tag: u64) {
        let mut child = BdevIo::alloc();
        child.copy_request_from(&io);
        child.set_parent(io);
        child.set_callback(cb, tag);
        self.base.submit(child);
    }
}

impl IoCompletion for Link {
    fn io_done(&self, mut child: BdevIo) {
        let status = child.status();
        let tag = child.tag();
        let parent = child.take_parent();
        drop(child);
        if let Some(parent) = parent {
            finish_parent(parent, tag, status);
        }
    }
}

/// Completes `parent` with its child's `status`, applying or undoing a corruption.
pub(super) fn finish_parent(mut parent: BdevIo, tag: u64, status: IoStatus) {
    match tag {
        TAG_CORRUPT_READ if status.is_success() => apply_corruption(&mut parent),
        TAG_RESTORE_WRITE => apply_corruption(&mut parent),
        _ => {}
    }
    parent.complete(status);
}

/// One error bdev's queue on one reactor.
pub(super) struct ErrorChannel {
    link: Rc<Link>,
    pending: VecDeque<BdevIo>,
    seen_gen: u64,
    bdev_id: u64,
    recheck_ticks: u64,
}

impl ErrorChannel {
    /// Creates the channel on the calling reactor, with the base's channel for it.
    pub(super) fn new(state: Arc<ErrorState>, bdev: &Bdev) -> Result<Self, BdevError> {
        let base = state.base.get_io_channel()?;
        let seen_gen = state.injections.generation();
        Ok(ErrorChannel {
            link: Rc::new(Link {
                block_size: bdev.block_size() as usize,
                state,
                base,
            }),
            pending: VecDeque::with_capacity(PENDING_CAPACITY),
            seen_gen,
            bdev_id: bdev.id(),
            recheck_ticks: tsc::duration_to_ticks(RECHECK).max(1),
        })
    }

    fn pass_down(&self, io: BdevIo, tag: u64) {
        let cb: Rc<dyn IoCompletion> = self.link.clone();
        self.link.pass_down(io, cb, tag);
    }

    /// Lets go of the held requests that `release` selects (by the generation they were held
    /// in): `hold` ones go down to the base if `pass`, every other one fails.
    fn release(&mut self, release: impl Fn(u64) -> bool, pass: bool) -> usize {
        let mut n = 0;
        for _ in 0..self.pending.len() {
            let Some(mut io) = self.pending.pop_front() else {
                break;
            };
            if release(io.driver_ctx & !HOLD_FLAG) {
                if pass && io.driver_ctx & HOLD_FLAG != 0 {
                    io.driver_ctx = 0;
                    self.pass_down(io, TAG_PLAIN);
                } else {
                    io.complete(IoStatus::Failed(libc::ECANCELED));
                }
                n += 1;
            } else {
                self.pending.push_back(io);
            }
        }
        n
    }

    /// Whether this channel's bdev was deleted (its channels are detached from the reactors
    /// first; held requests keep the channel itself alive).
    fn detached(&self) -> bool {
        BdevThread::with(|l| l.channel(self.bdev_id).is_none()).unwrap_or(true)
    }

    /// volatile_cache mode: the cache serves writes, overlays reads, and is written down by
    /// flushes. Takes the cache lock and allocates (test mode).
    fn submit_volatile(&mut self, mut io: BdevIo, tag: u64) -> Result<(), BdevIo> {
        let state = self.link.state.clone();
        let bs = self.link.block_size;
        match io.io_type() {
            IoType::Write => {
                let mut cache = state.crash.lock();
                if state.crash.mode() != CrashMode::VolatileCache {
                    // The mode changed since it was read: go straight through.
                    drop(cache);
                    self.pass_down(io, tag);
                    return Ok(());
                }
                let mut data = vec![0u8; io.iov_len()];
                io.copy_out(&mut data);
                cache.store(io.offset_blocks(), bs, &data);
                drop(cache);
                if tag == TAG_RESTORE_WRITE {
                    apply_corruption(&mut io);
                }
                io.complete(IoStatus::Success);
            }
            IoType::Read => {
                let snapshot = state
                    .crash
                    .lock()
                    .snapshot(io.offset_blocks(), io.num_blocks());
                if snapshot.is_empty() {
                    self.pass_down(io, tag);
                } else {
                    let cb: Rc<dyn IoCompletion> = Rc::new(OverlayRead {
                        snapshot,
                        block_size: bs,
                    });
                    self.link.pass_down(io, cb, tag);
                }
            }
            IoType::Flush => {
                let mut cache = state.crash.lock();
                if cache.flushing() {
                    // One flush at a time per bdev; the bdev layer retries this one.
                    return Err(io);
                }
                if cache.len() == 0 {
                    drop(cache);
                    self.pass_down(io, tag);
                    return Ok(());
                }
                let runs = cache.begin_flush(bs);
                drop(cache);
                FlushOp::start(state, self.link.base.clone(), io, runs);
            }
            IoType::Unmap | IoType::WriteZeroes => {
                let mut cache = state.crash.lock();
                if cache.flushing() {
                    // A running flush may still write old cached data over this range.
                    return Err(io);
                }
                cache.discard(io.offset_blocks(), io.num_blocks());
                drop(cache);
                self.pass_down(io, tag);
            }
            IoType::Reset => self.pass_down(io, tag),
        }
        Ok(())
    }
}

impl DriverChannel for ErrorChannel {
    fn submit(&mut self, mut io: BdevIo) -> Result<(), BdevIo> {
        let t = io.io_type();
        let state = &self.link.state;
        if t == IoType::Reset {
            // As SPDK: a reset aborts the requests every channel holds, then goes down.
            let gen = state.injections.bump();
            self.seen_gen = gen;
            self.release(|g| g != gen, true);
            self.pass_down(io, TAG_PLAIN);
            return Ok(());
        }
        // Read before taking a hit: a clear racing with this request then releases it.
        let gen = state.injections.generation();
        let mut tag = TAG_PLAIN;
        let id = self.bdev_id;
        if let Some(hit) = state.injections.take(t, || outstanding(id)) {
            match hit.kind {
                ErrorKind::Failure => {
                    io.complete(IoStatus::Failed(libc::EIO));
                    return Ok(());
                }
                ErrorKind::Pending => {
                    io.driver_ctx = gen;
                    self.pending.push_back(io);
                    return Ok(());
                }
                ErrorKind::Hold => {
                    io.driver_ctx = gen | HOLD_FLAG;
                    self.pending.push_back(io);
                    return Ok(());
                }
                ErrorKind::Nomem => return Err(io),
                ErrorKind::CorruptData => tag = arm_corruption(&mut io, hit),
            }
        }
        match state.crash.mode() {
            CrashMode::None => {}
            CrashMode::DropWritesAfter => {
                let changes_data = matches!(t, IoType::Write | IoType::Unmap | IoType::WriteZeroes);
                if changes_data && !state.crash.allow_write() {
                    if tag == TAG_RESTORE_WRITE {
                        apply_corruption(&mut io);
                    }
                    io.complete(IoStatus::Success);
                    return Ok(());
                }
            }
            CrashMode::VolatileCache => return self.submit_volatile(io, tag),
        }
        self.pass_down(io, tag);
        Ok(())
    }

    fn poll(&mut self) -> usize {
        if self.pending.is_empty() {
            return 0;
        }
        let gen = self.link.state.injections.generation();
        let mut n = 0;
        if gen != self.seen_gen {
            self.seen_gen = gen;
            n += self.release(|g| g != gen, true);
        }
        if !self.pending.is_empty() && self.detached() {
            n += self.release(|_| true, false);
        }
        n
    }

    fn next_deadline(&self) -> Option<u64> {
        // Held requests wait for a clear made on another thread: look again soon even if no
        // message wakes this reactor.
        (!self.pending.is_empty()).then(|| tsc::ticks() + self.recheck_ticks)
    }
}

impl Drop for ErrorChannel {
    fn drop(&mut self) {
        self.release(|_| true, false);
    }
}

/// Requests outstanding on this reactor's channel of bdev `id`, besides the one being
/// submitted (for SPDK's `queue_depth`; only asked when one is armed).
fn outstanding(id: u64) -> u64 {
    BdevThread::with(|l| l.channel(id).map(|c| c.inflight().saturating_sub(1)))
        .flatten()
        .unwrap_or(0)
}

/// Arms a corrupt_data hit on `io`: the offset and value go to `driver_ctx`; writes are
/// corrupted now (and restored on completion), reads on completion. Returns the child tag.
fn arm_corruption(io: &mut BdevIo, hit: Hit) -> u64 {
    if hit.offset >= MAX_CORRUPT_OFFSET {
        return TAG_PLAIN;
    }
    io.driver_ctx = hit.offset << 8 | hit.value as u64;
    match io.io_type() {
        IoType::Read => TAG_CORRUPT_READ,
        IoType::Write => {
            apply_corruption(io);
            TAG_RESTORE_WRITE
        }
        _ => TAG_PLAIN,
    }
}

/// XORs the byte armed in `driver_ctx` (offset into the data, as in SPDK; nothing happens if
/// it lies past the end). Applying it twice restores the data.
fn apply_corruption(io: &mut IoData) {
    let Ok(mut off) = usize::try_from(io.driver_ctx >> 8) else {
        return;
    };
    let value = io.driver_ctx as u8;
    for seg in io.segments() {
        if off < seg.len() {
            let mut b = [0u8; 1];
            seg.copy_to(off, &mut b);
            seg.copy_from(off, &[b[0] ^ value]);
            return;
        }
        off -= seg.len();
    }
}

/// Copies `src` into the request's data at byte `offset` (across segments).
pub(super) fn copy_at(io: &mut IoData, offset: usize, src: &[u8]) {
    let end = offset + src.len();
    let mut seg_start = 0usize;
    for seg in io.segments() {
        let seg_end = seg_start + seg.len();
        let a = offset.max(seg_start);
        let b = end.min(seg_end);
        if a < b {
            seg.copy_from(a - seg_start, &src[a - offset..b - offset]);
        }
        seg_start = seg_end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_segment_io(a: &mut [u8; 3], b: &mut [u8; 5]) -> BdevIo {
        let mut io = BdevIo::alloc();
        io.prep(IoType::Read, 0, 1);
        // SAFETY: both arrays outlive `io` in every caller and are not touched meanwhile.
        unsafe {
            io.push_iov(a.as_mut_ptr(), a.len());
            io.push_iov(b.as_mut_ptr(), b.len());
        }
        io
    }

    #[test]
    fn corruption_crosses_segments_and_undoes_itself() {
        let (mut a, mut b) = ([0u8; 3], [0u8; 5]);
        let mut io = two_segment_io(&mut a, &mut b);
        io.driver_ctx = 4 << 8 | 0x5a;
        apply_corruption(&mut io);
        let mut out = [0u8; 8];
        io.copy_out(&mut out);
        assert_eq!(out, [0, 0, 0, 0, 0x5a, 0, 0, 0]);
        apply_corruption(&mut io);
        io.copy_out(&mut out);
        assert_eq!(out, [0; 8]);
        // Past the end: nothing happens.
        io.driver_ctx = 8 << 8 | 0x5a;
        apply_corruption(&mut io);
        io.copy_out(&mut out);
        assert_eq!(out, [0; 8]);
    }

    #[test]
    fn copy_at_spans_segments() {
        let (mut a, mut b) = ([0u8; 3], [0u8; 5]);
        let mut io = two_segment_io(&mut a, &mut b);
        copy_at(&mut io, 2, &[1, 2, 3]);
        let mut out = [0u8; 8];
        io.copy_out(&mut out);
        assert_eq!(out, [0, 0, 1, 2, 3, 0, 0, 0]);
    }
}
