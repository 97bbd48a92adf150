//! The RAID-5 log's slots as every reactor of a volume shares them: who writes the next
//! entry where, and when a slot may be written again.
//!
//! Entry `seq` goes to slot `seq % slots` (see `model::raid5_log`). A slot may take entry
//! `seq` once its previous entry, `seq - slots`, is *retired*: its column writes completed
//! and the column disks were flushed since, so a crash can no longer tear that row and the
//! entry is not needed. Taking a number is one `fetch_add`, checking a slot one load, retiring
//! one store: no lock. A stripe operation takes its number only once it holds its stripe and
//! has computed what it writes, so the entry it waits for belongs to an operation that is
//! already writing: the wait always ends.

use std::sync::atomic::{AtomicU64, Ordering};

/// The log slots of one RAID-5 volume (in its shared state).
pub struct LogRing {
    /// The last sequence number handed out.
    next: AtomicU64,
    /// Per slot: the last entry retired there (0: none yet).
    retired: Box<[AtomicU64]>,
}

impl LogRing {
    /// A ring of `slots` (at least 1) free slots, numbering from 1.
    pub fn new(slots: u64) -> LogRing {
        LogRing {
            next: AtomicU64::new(0),
            retired: (0..slots.max(1)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Its slots.
    pub fn slots(&self) -> u64 {
        self.retired.len() as u64
    }

    /// The next sequence number (from 1).
    pub fn take(&self) -> u64 {
        self.next.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The slot of entry `seq`.
    pub fn slot(&self, seq: u64) -> u64 {
        seq % self.slots()
    }

    /// Whether entry `seq` may be written: the slot's previous entry is retired.
    pub fn is_free_for(&self, seq: u64) -> bool {
        // Acquire: the retirement (after the columns' flush) happens before the overwrite.
        self.retired[self.slot(seq) as usize].load(Ordering::Acquire) + self.slots() >= seq
    }

    /// Entry `seq` is no longer needed (its rows are on the disks).
    pub fn retire(&self, seq: u64) {
        self.retired[self.slot(seq) as usize].fetch_max(seq, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_reused_only_after_its_entry_retired() {
        const LOG_SLOTS: u64 = 64;
        let r = LogRing::new(LOG_SLOTS);
        let seqs: Vec<u64> = (0..LOG_SLOTS).map(|_| r.take()).collect();
        assert!(
            seqs.iter().all(|&s| r.is_free_for(s)),
            "a fresh ring is free"
        );
        let next = r.take();
        assert_eq!(next, LOG_SLOTS + 1);
        assert!(!r.is_free_for(next), "slot 1 still holds entry 1");
        r.retire(2);
        assert!(
            !r.is_free_for(next),
            "retiring another slot frees nothing here"
        );
        r.retire(1);
        assert!(r.is_free_for(next));
    }
}
