//! Injected errors: one slot per request type (read, write, unmap, flush, as in SPDK), each a
//! single atomic word holding the kind, the XOR value and the number of requests still to hit.
//! The I/O path consumes a hit with one atomic read-modify-write, and when nothing is injected
//! with one plain load: no lock.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Map, Value};

use crate::bdev::IoType;

/// What happens to a request hit by an injected error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request completes with EIO without reaching the base bdev.
    Failure,
    /// The request never completes until the injection is cleared, the bdev is reset or
    /// deleted; it then fails with ECANCELED.
    Pending,
    /// One byte of the data is XORed with the corrupt value: before a write is passed down,
    /// after a read comes back. Other request types pass unchanged.
    CorruptData,
    /// The request is refused as "no resources now"; the bdev layer queues and retries it.
    Nomem,
    /// Like `Pending`, but a clear or a reset passes the request down to the base instead
    /// of failing it: it lands late (a disk that answers after its caller gave up).
    Hold,
}

impl ErrorKind {
    /// The accepted names, for error messages.
    pub const NAMES: &'static str = "failure, pending, corrupt_data, nomem, hold";

    /// Parses SPDK's `error_type` name.
    pub fn parse(s: &str) -> Option<ErrorKind> {
        match s {
            "failure" => Some(ErrorKind::Failure),
            "pending" => Some(ErrorKind::Pending),
            "corrupt_data" => Some(ErrorKind::CorruptData),
            "nomem" => Some(ErrorKind::Nomem),
            "hold" => Some(ErrorKind::Hold),
            _ => None,
        }
    }

    /// SPDK's name for the kind.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Failure => "failure",
            ErrorKind::Pending => "pending",
            ErrorKind::CorruptData => "corrupt_data",
            ErrorKind::Nomem => "nomem",
            ErrorKind::Hold => "hold",
        }
    }

    fn code(self) -> u64 {
        match self {
            ErrorKind::Failure => 1,
            ErrorKind::Pending => 2,
            ErrorKind::CorruptData => 3,
            ErrorKind::Nomem => 4,
            ErrorKind::Hold => 5,
        }
    }

    fn from_code(c: u64) -> Option<ErrorKind> {
        match c {
            1 => Some(ErrorKind::Failure),
            2 => Some(ErrorKind::Pending),
            3 => Some(ErrorKind::CorruptData),
            4 => Some(ErrorKind::Nomem),
            5 => Some(ErrorKind::Hold),
            _ => None,
        }
    }
}

/// Which requests an injection applies to (SPDK's `io_type`, without `clear`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectTarget {
    /// Reads.
    Read,
    /// Writes.
    Write,
    /// Unmaps.
    Unmap,
    /// Flushes.
    Flush,
    /// Reads, writes, unmaps and flushes.
    All,
}

impl InjectTarget {
    /// The accepted `io_type` names (with `clear`), for error messages.
    pub const NAMES: &'static str = "clear, read, write, unmap, flush, all";

    /// Parses SPDK's `io_type` name; `clear` is not a target and gives `None`.
    pub fn parse(s: &str) -> Option<InjectTarget> {
        match s {
            "read" => Some(InjectTarget::Read),
            "write" => Some(InjectTarget::Write),
            "unmap" => Some(InjectTarget::Unmap),
            "flush" => Some(InjectTarget::Flush),
            "all" => Some(InjectTarget::All),
            _ => None,
        }
    }

    fn slots(self) -> std::ops::Range<usize> {
        match self {
            InjectTarget::Read => 0..1,
            InjectTarget::Write => 1..2,
            InjectTarget::Unmap => 2..3,
            InjectTarget::Flush => 3..4,
            InjectTarget::All => 0..SLOTS,
        }
    }
}

/// Request types that can be hit, in slot order.
const SLOT_TYPES: [IoType; SLOTS] = [IoType::Read, IoType::Write, IoType::Unmap, IoType::Flush];
const SLOTS: usize = 4;

/// The largest `num` one injection can carry.
pub const MAX_NUM: u64 = (1 << 48) - 1;
const COUNT_MASK: u64 = MAX_NUM;
const VALUE_SHIFT: u32 = 48;
const KIND_SHIFT: u32 = 56;

#[inline]
fn slot_of(t: IoType) -> Option<usize> {
    match t {
        IoType::Read => Some(0),
        IoType::Write => Some(1),
        IoType::Unmap => Some(2),
        IoType::Flush => Some(3),
        IoType::WriteZeroes | IoType::Reset => None,
    }
}

/// The injection rule of one request type: `kind << 56 | value << 48 | remaining`, plus the
/// offset and the queue depth under which requests are spared.
#[derive(Default)]
struct InjectRule {
    word: AtomicU64,
    corrupt_offset: AtomicU64,
    queue_depth: AtomicU64,
}

/// What `bdev_error_inject_error` arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arming {
    /// What happens to the requests hit.
    pub kind: ErrorKind,
    /// How many requests to hit (at most [`MAX_NUM`]).
    pub num: u64,
    /// Byte offset in the data of the byte to corrupt ([`ErrorKind::CorruptData`]).
    pub corrupt_offset: u64,
    /// Value XORed into that byte; must be non-zero for [`ErrorKind::CorruptData`].
    pub corrupt_value: u8,
    /// Spare requests while fewer than this many others are outstanding on their channel
    /// (SPDK's `queue_depth`; 0 hits regardless).
    pub queue_depth: u64,
}

impl Arming {
    /// `num` hits of `kind`, no corruption parameters, no queue depth.
    pub fn new(kind: ErrorKind, num: u64) -> Arming {
        Arming {
            kind,
            num,
            corrupt_offset: 0,
            corrupt_value: 0,
            queue_depth: 0,
        }
    }
}

/// A request chosen to be hit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hit {
    pub(super) kind: ErrorKind,
    pub(super) offset: u64,
    pub(super) value: u8,
}

impl InjectRule {
    fn set(&self, a: &Arming) {
        let (kind, num, offset, value) = (a.kind, a.num, a.corrupt_offset, a.corrupt_value);
        // Offset and depth are published before the word that makes them reachable.
        self.corrupt_offset.store(offset, Ordering::Release);
        self.queue_depth.store(a.queue_depth, Ordering::Release);
        let word = kind.code() << KIND_SHIFT | (value as u64) << VALUE_SHIFT | num.min(MAX_NUM);
        self.word.store(word, Ordering::Release);
    }

    #[inline]
    fn take(&self, outstanding: impl FnOnce() -> u64) -> Option<Hit> {
        if self.word.load(Ordering::Acquire) & COUNT_MASK == 0 {
            return None;
        }
        let qd = self.queue_depth.load(Ordering::Acquire);
        if qd > 0 && outstanding() < qd {
            return None;
        }
        let prev = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                if w & COUNT_MASK == 0 {
                    None
                } else {
                    Some(w - 1)
                }
            })
            .ok()?;
        Some(Hit {
            kind: ErrorKind::from_code(prev >> KIND_SHIFT)?,
            offset: self.corrupt_offset.load(Ordering::Acquire),
            value: (prev >> VALUE_SHIFT) as u8,
        })
    }
}

/// The injections of one error bdev, shared by every reactor.
#[derive(Default)]
pub(super) struct Injections {
    slots: [InjectRule; SLOTS],
    /// Bumped by `clear` and by resets: channels then release the requests they hold.
    generation: AtomicU64,
}

impl Injections {
    /// Consumes one hit for a request of type `t`, if one is armed and the channel has enough
    /// requests `outstanding` (asked only when a queue depth is armed).
    #[inline]
    pub(super) fn take(&self, t: IoType, outstanding: impl FnOnce() -> u64) -> Option<Hit> {
        self.slots[slot_of(t)?].take(outstanding)
    }

    /// Arms `target` as `a` says, replacing what was armed there.
    pub(super) fn set(&self, target: InjectTarget, a: &Arming) {
        for i in target.slots() {
            self.slots[i].set(a);
        }
    }

    /// Disarms everything and tells every channel to release the requests it holds.
    pub(super) fn clear(&self) {
        for s in &self.slots {
            s.word.store(0, Ordering::Release);
        }
        self.bump();
    }

    /// Tells every channel to release the requests it holds (injections stay armed).
    pub(super) fn bump(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The current generation; a held request remembers the one it was held in.
    #[inline]
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The armed injections, for `driver_specific`.
    pub(super) fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (t, s) in SLOT_TYPES.iter().zip(self.slots.iter()) {
            let w = s.word.load(Ordering::Acquire);
            let Some(kind) = ErrorKind::from_code(w >> KIND_SHIFT) else {
                continue;
            };
            if w & COUNT_MASK == 0 {
                continue;
            }
            let mut e = json!({"error_type": kind.name(), "remaining": w & COUNT_MASK});
            if kind == ErrorKind::CorruptData {
                e["corrupt_offset"] = json!(s.corrupt_offset.load(Ordering::Acquire));
                e["corrupt_value"] = json!((w >> VALUE_SHIFT) as u8);
            }
            let qd = s.queue_depth.load(Ordering::Acquire);
            if qd > 0 {
                e["queue_depth"] = json!(qd);
            }
            m.insert(t.name().to_string(), e);
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_counted_down_and_typed() {
        let inj = Injections::default();
        let none = || 0;
        assert!(inj.take(IoType::Read, none).is_none());
        let a = Arming {
            corrupt_offset: 7,
            corrupt_value: 0xff,
            ..Arming::new(ErrorKind::CorruptData, 2)
        };
        inj.set(InjectTarget::Read, &a);
        let h = inj.take(IoType::Read, none).unwrap();
        assert_eq!(
            (h.kind, h.offset, h.value),
            (ErrorKind::CorruptData, 7, 0xff)
        );
        assert!(inj.take(IoType::Write, none).is_none());
        assert!(inj.take(IoType::Read, none).is_some());
        assert!(inj.take(IoType::Read, none).is_none());
    }

    #[test]
    fn queue_depth_spares_requests_on_quiet_channels() {
        let inj = Injections::default();
        let a = Arming {
            queue_depth: 4,
            ..Arming::new(ErrorKind::Failure, 1)
        };
        inj.set(InjectTarget::Write, &a);
        assert!(inj.take(IoType::Write, || 3).is_none());
        assert_eq!(inj.to_json()["write"]["queue_depth"], 4);
        assert!(inj.take(IoType::Write, || 4).is_some());
        assert!(inj.take(IoType::Write, || 9).is_none());
    }

    #[test]
    fn all_skips_write_zeroes_and_clear_disarms() {
        let inj = Injections::default();
        inj.set(InjectTarget::All, &Arming::new(ErrorKind::Failure, 1));
        assert!(inj.take(IoType::WriteZeroes, || 0).is_none());
        assert!(inj.take(IoType::Reset, || 0).is_none());
        assert!(inj.take(IoType::Unmap, || 0).is_some());
        let g = inj.generation();
        inj.clear();
        assert_eq!(inj.generation(), g + 1);
        assert!(inj.take(IoType::Flush, || 0).is_none());
        assert_eq!(inj.to_json(), json!({}));
    }
}
