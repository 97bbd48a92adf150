//! Read repairs: after a read failed on one mirror and was served by another, the range is
//! rewritten on the failing plex (`VolumeManager::repair_read`, which the manager hands to
//! the queue as the function to run, so this layer does not import the manager). Repairs run
//! on one worker thread per volume manager, fed by a bounded queue, so a burst of read errors
//! cannot start a thread each.
//!
//! The queue is filled by the event thread, which must never block (a write held for a
//! detach waits for it, and a repair may wait for that write under the barrier). When the
//! queue is full the repair is dropped, counted and logged. That is safe for the guest: the
//! read that asked for it was served from an in-sync plex, and the failing plex's range is
//! left as it was, so the next read that lands there fails again, is served from another
//! plex again and asks for the repair again. Nothing wrong is ever returned; the cost is that
//! a dropped repair does not count toward the plex's read-error budget.
//!
//! A job may wait in the queue while its volume changes. It keeps only names: each chunk is
//! rewritten with the volume's *current* map, taken under the chunk's raised barrier bucket
//! (a subdisk move swaps under every bucket), and not at all once the volume is no longer the
//! running one (checked under the group lock where the repair registers as a task; a stop
//! cancels the repairs registered before it). A repair is cancelled like a copy
//! (detach, dissociate, stop, shutdown), and a write of it the disk does not answer is fenced
//! (`volume::io::fence`): its chunk stays locked and its disk range is not allocated again until
//! it lands.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::volume::io::driver::{VolumeMap, VolumeShared};

/// Repairs that may wait for the worker; more are dropped (and counted).
pub const REPAIR_QUEUE: usize = 64;

/// One range to rewrite, as the I/O path reported it.
pub(crate) struct RepairJob {
    /// The volume.
    pub(crate) volume: Arc<VolumeShared>,
    /// The map the read used (only to name the plexes: the rewrite uses the current map).
    pub(crate) map: Arc<VolumeMap>,
    /// Indices into `map.plexes` whose read failed.
    pub(crate) bad: u64,
    /// Index of the plex that served the read.
    pub(crate) good: usize,
    /// First block.
    pub(crate) offset: u64,
    /// Blocks.
    pub(crate) num: u64,
}

/// Counts of a volume manager's read repairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Repairs the I/O path asked for.
    pub requested: u64,
    /// Repairs dropped because the queue was full (or no worker could be started).
    pub dropped: u64,
    /// Repairs run (whatever their outcome: rewritten, detached, or no longer needed).
    pub done: u64,
    /// Repair threads running now.
    pub threads: u64,
}

/// What the worker runs for each job (the manager's `repair_read`).
type RunRepair = Arc<dyn Fn(&RepairJob) + Send + Sync>;

/// The repair worker and its queue.
pub(crate) struct RepairQueue {
    run: RunRepair,
    /// Started with the first repair (most managers never need one).
    tx: OnceLock<Option<crossbeam::channel::Sender<RepairJob>>>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    requested: AtomicU64,
    dropped: AtomicU64,
    done: AtomicU64,
    threads: AtomicU64,
}

impl RepairQueue {
    /// A queue whose worker calls `run` for each job.
    pub(crate) fn new(run: impl Fn(&RepairJob) + Send + Sync + 'static) -> RepairQueue {
        RepairQueue {
            run: Arc::new(run),
            tx: OnceLock::new(),
            counts: Arc::default(),
        }
    }

    /// Queues a repair; never blocks. A full queue drops it (see the module docs).
    /// `requested` is counted last, so a reader that sees it also sees the drop.
    pub(crate) fn submit(&self, job: RepairJob) {
        let tx = self.tx.get_or_init(|| self.start_worker());
        let refused = match tx {
            Some(tx) => match tx.try_send(job) {
                Ok(()) => {
                    self.counts.requested.fetch_add(1, Ordering::Release);
                    return;
                }
                Err(e) => e.into_inner(),
            },
            None => job,
        };
        let v = &refused.volume;
        v.read_repairs_dropped.fetch_add(1, Ordering::Relaxed);
        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        self.counts.requested.fetch_add(1, Ordering::Release);
        tracing::warn!(
            volume = %v.name(),
            "read repair of blocks {}+{} dropped: {REPAIR_QUEUE} repairs already wait; the range is left as it is and repaired when a read fails there again",
            refused.offset,
            refused.num
        );
    }

    /// Starts the worker; `None` (every repair dropped) if no thread can be started.
    fn start_worker(&self) -> Option<crossbeam::channel::Sender<RepairJob>> {
        let (tx, rx) = crossbeam::channel::bounded::<RepairJob>(REPAIR_QUEUE);
        let run = self.run.clone();
        let counts = self.counts.clone();
        counts.threads.fetch_add(1, Ordering::Relaxed);
        let worker = counts.clone();
        let spawned = std::thread::Builder::new()
            .name("volume-repair".into())
            .spawn(move || {
                // Ends when the manager (holding the sender) is gone.
                while let Ok(job) = rx.recv() {
                    run(&job);
                    worker.done.fetch_add(1, Ordering::Relaxed);
                }
                worker.threads.fetch_sub(1, Ordering::Relaxed);
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                counts.threads.fetch_sub(1, Ordering::Relaxed);
                tracing::error!(
                    "cannot start the read-repair worker: {e}; read errors will not be repaired"
                );
                None
            }
        }
    }

    /// The counts so far.
    pub(crate) fn stats(&self) -> RepairStats {
        let c = &self.counts;
        RepairStats {
            requested: c.requested.load(Ordering::Acquire),
            dropped: c.dropped.load(Ordering::Relaxed),
            done: c.done.load(Ordering::Relaxed),
            threads: c.threads.load(Ordering::Relaxed),
        }
    }
}
