//! The RAID-5 log (VxVM's RAID-5 log plex): what a log entry looks like on disk and where it
//! goes. Pure: no I/O.
//!
//! Every write to a RAID-5 plex that has a log is first written, whole, to the log: the new
//! contents of every range it will write (data units and parity), durably, before any column
//! is written. After a crash the entries are written again to the columns (replay), so a row
//! whose write the crash tore (some columns written, not the others) gets all of them, and its
//! parity agrees with its data again, also when a column is missing at restart: its contents
//! are implied by the others and the replayed parity. This closes the write hole.
//!
//! # Layout
//!
//! A log plex is `slots` slots of [`slot_blocks`] blocks each (its length over the slot size;
//! [`default_log_slots`] at creation): room for one entry of the largest write a stripe
//! operation makes (a header block and `ncol` stripe units). Entry `seq` (1, 2, ...) goes to
//! slot `seq % slots`; a slot is reused only once its previous entry's column writes are on
//! the disks (the slot's previous sequence number is retired).
//!
//! An entry is a header block followed by its payload: the ranges' blocks, range after range.
//! The header (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `PLXR5LOG` |
//! | 8..12 | version (1) |
//! | 12..16 | crc32c of the header block with this field zero |
//! | 16..24 | epoch (the plex's `log_epoch`: entries of another epoch are ignored) |
//! | 24..32 | sequence number |
//! | 32..40 | row |
//! | 40..44 | ncol |
//! | 44..48 | number of ranges |
//! | 48..56 | stripe unit in blocks |
//! | 56..60 | crc32c of the payload |
//! | 60..64 | payload blocks |
//! | 64..72 | slots of the ring that placed it (`seq % slots` is its slot) |
//! | 72.. | ranges: column (u32), first unit offset (u32), end unit offset (u32) |
//!
//! A torn entry fails its checksums and is ignored: its operation never wrote a column (it
//! waits for the entry to be durable), so nothing needs it.
//!
//! # Replay
//!
//! Entries of the current epoch are replayed in sequence order, each range written to its
//! column (a missing column skipped). Entries whose column writes had completed are replayed
//! too: in sequence order, every range ends up with its last logged contents, which is what
//! the columns held (every write to the columns of a logged plex goes through the log).

/// Fewest slots a log plex has (a plex shorter than that is not used as a log).
pub const MIN_LOG_SLOTS: u64 = 64;

/// Most slots a new log plex gets.
pub const MAX_LOG_SLOTS: u64 = 1024;

/// What a new log plex is sized for: as many slots as fit, within the bounds above.
pub const LOG_BUDGET_BYTES: u64 = 16 << 20;

/// The header's magic.
pub const LOG_MAGIC: [u8; 8] = *b"PLXR5LOG";

/// The format version.
pub const LOG_VERSION: u32 = 1;

/// Bytes of the header before the ranges.
const FIXED: usize = 72;

/// Bytes per range in the header.
const RANGE: usize = 12;

/// Blocks per slot of a plex with `ncol` columns of `su`-block stripe units: a header block
/// and `ncol` units.
pub fn slot_blocks(ncol: u32, su: u64) -> u64 {
    1 + u64::from(ncol) * su
}

/// Slots of a new log plex for `ncol` columns of `su`-block stripe units and blocks of
/// `block_size` bytes: as many as fit in [`LOG_BUDGET_BYTES`], [`MIN_LOG_SLOTS`] to
/// [`MAX_LOG_SLOTS`] (enough for every write in flight at a queue depth of 128 not to wait for
/// a slot).
pub fn default_log_slots(ncol: u32, su: u64, block_size: u64) -> u64 {
    (LOG_BUDGET_BYTES / (slot_blocks(ncol, su) * block_size.max(1)))
        .clamp(MIN_LOG_SLOTS, MAX_LOG_SLOTS)
}

/// Blocks of a new log plex (see [`default_log_slots`]).
pub fn log_blocks(ncol: u32, su: u64, block_size: u64) -> u64 {
    default_log_slots(ncol, su, block_size) * slot_blocks(ncol, su)
}

/// Slots a log plex of `len` blocks holds (the rest of it unused).
pub fn slots_in(len: u64, ncol: u32, su: u64) -> u64 {
    len / slot_blocks(ncol, su)
}

/// The most ranges a header block of `block_size` bytes holds.
pub fn max_ranges(block_size: usize) -> usize {
    block_size.saturating_sub(FIXED) / RANGE
}

/// One range of a log entry: unit offsets `[lo, hi)` of column `column` in the entry's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRange {
    /// The column.
    pub column: u32,
    /// First unit offset (blocks).
    pub lo: u32,
    /// End unit offset (blocks).
    pub hi: u32,
}

impl LogRange {
    /// Blocks in the range.
    pub fn blocks(&self) -> u64 {
        u64::from(self.hi.saturating_sub(self.lo))
    }
}

/// A log entry's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHeader {
    /// The plex's log epoch when it was written.
    pub epoch: u64,
    /// Sequence number (from 1).
    pub seq: u64,
    /// The row written.
    pub row: u64,
    /// Columns of the plex.
    pub ncol: u32,
    /// Stripe unit in blocks.
    pub su: u64,
    /// crc32c of the payload.
    pub payload_crc: u32,
    /// Payload blocks (the sum of the ranges' blocks).
    pub payload_blocks: u32,
    /// Slots of the ring that placed the entry (it sits in slot `seq % slots`).
    pub slots: u64,
}

/// Why a header block is not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// Not a log entry (never written, or zeroes).
    #[error("no log entry here (bad magic)")]
    Magic,
    /// A version this plexd does not know.
    #[error("log entry version {0} is not known")]
    Version(u32),
    /// The header's checksum does not match (torn or corrupt).
    #[error("log entry header checksum mismatch")]
    HeaderCrc,
    /// The ranges do not fit the header or the row.
    #[error("log entry ranges are invalid: {0}")]
    Ranges(String),
}

/// Writes the header of an entry with `ranges` into `block` (the whole block is written:
/// zeroes after the ranges). `block` must hold the ranges ([`max_ranges`]).
pub fn encode_header(block: &mut [u8], h: &LogHeader, ranges: &[LogRange]) {
    debug_assert!(ranges.len() <= max_ranges(block.len()));
    block.fill(0);
    block[0..8].copy_from_slice(&LOG_MAGIC);
    block[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
    block[16..24].copy_from_slice(&h.epoch.to_le_bytes());
    block[24..32].copy_from_slice(&h.seq.to_le_bytes());
    block[32..40].copy_from_slice(&h.row.to_le_bytes());
    block[40..44].copy_from_slice(&h.ncol.to_le_bytes());
    block[44..48].copy_from_slice(&(ranges.len() as u32).to_le_bytes());
    block[48..56].copy_from_slice(&h.su.to_le_bytes());
    block[56..60].copy_from_slice(&h.payload_crc.to_le_bytes());
    block[60..64].copy_from_slice(&h.payload_blocks.to_le_bytes());
    block[64..72].copy_from_slice(&h.slots.to_le_bytes());
    for (i, r) in ranges.iter().enumerate() {
        let at = FIXED + i * RANGE;
        block[at..at + 4].copy_from_slice(&r.column.to_le_bytes());
        block[at + 4..at + 8].copy_from_slice(&r.lo.to_le_bytes());
        block[at + 8..at + 12].copy_from_slice(&r.hi.to_le_bytes());
    }
    let crc = crc32c::crc32c(block);
    block[12..16].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Reads the header in `block`: the header and its ranges, each checked to lie within a row
/// of its `ncol` columns and `su`-block units, and to add up to its payload.
pub fn decode_header(block: &[u8]) -> Result<(LogHeader, Vec<LogRange>), LogError> {
    if block.len() < FIXED || block[0..8] != LOG_MAGIC {
        return Err(LogError::Magic);
    }
    let version = u32_at(block, 8);
    if version != LOG_VERSION {
        return Err(LogError::Version(version));
    }
    let stored = u32_at(block, 12);
    let mut copy = block.to_vec();
    copy[12..16].fill(0);
    if crc32c::crc32c(&copy) != stored {
        return Err(LogError::HeaderCrc);
    }
    let h = LogHeader {
        epoch: u64_at(block, 16),
        seq: u64_at(block, 24),
        row: u64_at(block, 32),
        ncol: u32_at(block, 40),
        su: u64_at(block, 48),
        payload_crc: u32_at(block, 56),
        payload_blocks: u32_at(block, 60),
        slots: u64_at(block, 64),
    };
    let n = u32_at(block, 44) as usize;
    if n > max_ranges(block.len()) {
        return Err(LogError::Ranges(format!("{n} ranges do not fit a header")));
    }
    let mut ranges = Vec::with_capacity(n);
    let mut total = 0u64;
    for i in 0..n {
        let at = FIXED + i * RANGE;
        let r = LogRange {
            column: u32_at(block, at),
            lo: u32_at(block, at + 4),
            hi: u32_at(block, at + 8),
        };
        if r.column >= h.ncol || r.lo >= r.hi || u64::from(r.hi) > h.su {
            return Err(LogError::Ranges(format!(
                "range {i} ({r:?}) is outside a row of {} columns of {} blocks",
                h.ncol, h.su
            )));
        }
        total += r.blocks();
        ranges.push(r);
    }
    if total != u64::from(h.payload_blocks) {
        return Err(LogError::Ranges(format!(
            "the ranges hold {total} blocks, the header says {}",
            h.payload_blocks
        )));
    }
    Ok((h, ranges))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> (LogHeader, Vec<LogRange>) {
        (
            LogHeader {
                epoch: 3,
                seq: 77,
                row: 12345,
                ncol: 4,
                su: 32,
                payload_crc: 0xdead_beef,
                payload_blocks: 24,
                slots: 254,
            },
            vec![
                LogRange {
                    column: 1,
                    lo: 0,
                    hi: 8,
                },
                LogRange {
                    column: 3,
                    lo: 16,
                    hi: 32,
                },
            ],
        )
    }

    #[test]
    fn a_header_reads_back_as_written() {
        let (h, r) = header();
        let mut b = vec![0u8; 512];
        encode_header(&mut b, &h, &r);
        assert_eq!(decode_header(&b), Ok((h, r)));
    }

    #[test]
    fn torn_or_foreign_headers_are_refused() {
        let (h, r) = header();
        let mut b = vec![0u8; 512];
        assert_eq!(decode_header(&b), Err(LogError::Magic));
        encode_header(&mut b, &h, &r);
        let mut torn = b.clone();
        torn[300] ^= 1;
        assert_eq!(decode_header(&torn), Err(LogError::HeaderCrc));
        let mut bad = h.clone();
        bad.payload_blocks = 25;
        encode_header(&mut b, &bad, &r);
        assert!(matches!(decode_header(&b), Err(LogError::Ranges(_))));
        let out = [LogRange {
            column: 4,
            lo: 0,
            hi: 1,
        }];
        encode_header(
            &mut b,
            &LogHeader {
                payload_blocks: 1,
                ..h
            },
            &out,
        );
        assert!(matches!(decode_header(&b), Err(LogError::Ranges(_))));
    }

    #[test]
    fn sizes() {
        assert_eq!(slot_blocks(4, 32), 129);
        // 16 MiB of 64.5 KiB slots.
        assert_eq!(default_log_slots(4, 32, 512), 254);
        assert_eq!(log_blocks(4, 32, 512), 254 * 129);
        assert_eq!(slots_in(254 * 129 + 5, 4, 32), 254);
        // Huge rows still get the minimum, tiny ones the maximum.
        assert_eq!(default_log_slots(8, 2048, 512), 64);
        assert_eq!(default_log_slots(3, 8, 512), 1024);
        assert_eq!(max_ranges(512), 36);
    }
}
