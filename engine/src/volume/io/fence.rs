//! Fences: copy and repair writes still in flight after their copy was cancelled.
//!
//! A copier holds its chunk under the [`SyncBarrier`] until each of its I/Os really completed,
//! however long the disk takes: a copy write that landed after the chunk was released could
//! overwrite a newer guest write. But a copy must also stop promptly when it is cancelled
//! (plex detach, volume stop, deport, shutdown), or one disk that never answers would freeze
//! every operation that cancels it, and with it the whole control plane.
//!
//! So a cancelled copier that still waits for a write hands that write to a fence and
//! returns. The fence keeps the chunk raised (guest writes to it wait in their channels,
//! other copiers wait to take it) until the disk answers; the write's completion, on the
//! reactor that completes it, lowers the chunk. Everything else goes on: other chunks, other
//! volumes, every RPC, shutdown.
//!
//! While a fence is pending:
//! - the disk range under the write is not allocated again (the allocator skips it), so a
//!   subdisk freed by a dissociate or delete cannot hand that range to a new volume that the
//!   late write would then overwrite; the configuration no longer has the subdisk, so after
//!   plexd restarts (the write died with the process) the space is free again;
//! - a stop waits for it within the stop's bounded wait, and records the volume CLEAN only if
//!   it landed (otherwise the volume stays ACTIVE and resyncs at its next start);
//! - a restart of the volume in this plexd raises the chunk on the new barrier too, so the
//!   late write cannot land over a write made after the restart.
//!
//! Reads need no fence: a late read changes nothing on disk, and the request owns its buffer
//! until it completes, so a copier that stops waiting for one just drops it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bdev::blocking::{BlockingIoError, PendingIo};
use crate::bdev::{Bdev, IoStatus};
use crate::volume::io::barrier::SyncBarrier;

/// A copy write about to be fenced: a write of `len` bytes at byte `offset` of `disk` by a
/// copier holding chunk `chunk` of `barrier` (volume `dg`/`volume`).
pub(crate) struct FencedWrite<'a> {
    /// The disk group.
    pub(crate) dg: &'a str,
    /// The volume.
    pub(crate) volume: &'a str,
    /// The volume's barrier.
    pub(crate) barrier: &'a Arc<SyncBarrier>,
    /// The chunk the copier holds.
    pub(crate) chunk: u64,
    /// The disk written.
    pub(crate) disk: &'a Arc<Bdev>,
    /// Byte offset on the disk.
    pub(crate) offset: u64,
    /// Bytes.
    pub(crate) len: u64,
}

/// One copy write handed to a fence.
pub(crate) struct Fenced {
    dg: String,
    volume: String,
    chunk: u64,
    disk: Arc<Bdev>,
    /// Byte offset of the write on `disk`.
    offset: u64,
    /// Byte length of the write.
    len: u64,
    since: Instant,
    state: Mutex<FenceState>,
}

struct FenceState {
    landed: bool,
    /// Barriers whose chunk `chunk` this fence holds (the volume's, and its successors' if
    /// the volume was restarted meanwhile).
    held: Vec<Arc<SyncBarrier>>,
}

impl Fenced {
    fn lock(&self) -> std::sync::MutexGuard<'_, FenceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn landed(&self) -> bool {
        self.lock().landed
    }

    /// The write completed (or can no longer reach the disk): the chunk is released.
    fn land(&self, status: IoStatus) {
        let held = {
            let mut st = self.lock();
            st.landed = true;
            std::mem::take(&mut st.held)
        };
        for b in held {
            b.fence_release(self.chunk);
        }
        tracing::info!(
            disk = %self.disk.name(),
            volume = %format!("{}/{}", self.dg, self.volume),
            "fenced copy write of {} bytes at byte {} completed ({status:?}) after {:?}; its chunk is released",
            self.len,
            self.offset,
            self.since.elapsed()
        );
    }
}

/// The fences of one volume manager.
#[derive(Default)]
pub struct FenceList {
    list: Mutex<Vec<Arc<Fenced>>>,
}

impl FenceList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Fenced>>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fences still pending (landed ones are dropped from the list here).
    fn pending(&self) -> Vec<Arc<Fenced>> {
        let mut l = self.lock();
        l.retain(|f| !f.landed());
        l.clone()
    }

    /// Copy writes still in flight after their copy was cancelled.
    pub fn count(&self) -> usize {
        self.pending().len()
    }

    /// Hands `io`, the write `w` describes, to a fence: the chunk stays raised (the copier
    /// may lower its own hold) until the write completes. Returns `None` once fenced, or the
    /// write's result if it completed meanwhile (nothing was fenced).
    pub(crate) fn fence(
        &self,
        w: FencedWrite<'_>,
        io: PendingIo,
    ) -> Option<Result<Vec<u8>, BlockingIoError>> {
        let FencedWrite {
            dg,
            volume,
            barrier,
            chunk,
            disk,
            offset,
            len,
        } = w;
        let f = Arc::new(Fenced {
            dg: dg.to_string(),
            volume: volume.to_string(),
            chunk,
            disk: disk.clone(),
            offset,
            len,
            since: Instant::now(),
            state: Mutex::new(FenceState {
                landed: false,
                held: vec![barrier.clone()],
            }),
        });
        // Held before the copier lowers its own hold: writers never see the chunk free.
        barrier.fence_hold(chunk);
        let done = f.clone();
        if let Some(r) = io.hand_over(move |st| done.land(st)) {
            let mut st = f.lock();
            st.landed = true;
            st.held.clear();
            drop(st);
            barrier.fence_release(chunk);
            return Some(r);
        }
        tracing::warn!(
            disk = %disk.name(),
            volume = %format!("{dg}/{volume}"),
            "copy cancelled while its write of {len} bytes at byte {offset} is still in flight: the write is fenced (guest writes to its chunk wait, and that disk range is not allocated again) until the disk answers"
        );
        self.lock().push(f);
        None
    }

    /// A volume `dg`/`volume` starts with a new barrier: its chunks under pending fences are
    /// raised on it too, until their writes complete.
    pub(crate) fn carry_over(&self, dg: &str, volume: &str, barrier: &Arc<SyncBarrier>) {
        for f in self.pending() {
            if f.dg != dg || f.volume != volume {
                continue;
            }
            let mut st = f.lock();
            if !st.landed {
                barrier.fence_hold(f.chunk);
                st.held.push(barrier.clone());
                tracing::warn!(
                    disk = %f.disk.name(),
                    volume = %format!("{dg}/{volume}"),
                    "a copy write fenced before the restart is still in flight: its chunk stays locked until the disk answers"
                );
            }
        }
    }

    /// Waits until no fence of volume `dg`/`volume` is pending, or `deadline`; returns the
    /// disks of the fences still pending then (empty: none).
    pub(crate) fn wait_volume(&self, dg: &str, volume: &str, deadline: Instant) -> Vec<String> {
        loop {
            let left: Vec<String> = self
                .pending()
                .iter()
                .filter(|f| f.dg == dg && f.volume == volume)
                .map(|f| f.disk.name().to_string())
                .collect();
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Byte ranges `(offset, len)` of bdev `disk` under pending fences: not to be allocated.
    pub(crate) fn reserved(&self, disk: &str) -> Vec<(u64, u64)> {
        self.pending()
            .iter()
            .filter(|f| f.disk.name() == disk)
            .map(|f| (f.offset, f.len))
            .collect()
    }
}

/// `free` extents `(offset, len)` less the ranges in `holes` (same unit), sorted.
pub(crate) fn subtract(free: &[(u64, u64)], holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = free.to_vec();
    for &(h, hl) in holes {
        let he = h.saturating_add(hl);
        out = out
            .into_iter()
            .flat_map(|(o, l)| {
                let e = o + l;
                if he <= o || h >= e {
                    return vec![(o, l)];
                }
                let mut v = Vec::new();
                if h > o {
                    v.push((o, h - o));
                }
                if he < e {
                    v.push((he, e - he));
                }
                v
            })
            .collect();
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::subtract;

    #[test]
    fn subtract_cuts_holes_out_of_extents() {
        let free = [(0, 100), (200, 50)];
        assert_eq!(subtract(&free, &[]), free.to_vec());
        assert_eq!(
            subtract(&free, &[(10, 20)]),
            vec![(0, 10), (30, 70), (200, 50)]
        );
        assert_eq!(subtract(&free, &[(0, 100)]), vec![(200, 50)]);
        assert_eq!(subtract(&free, &[(90, 120)]), vec![(0, 90), (210, 40)]);
        assert_eq!(subtract(&free, &[(300, 10)]), free.to_vec());
    }
}
