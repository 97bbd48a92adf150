//! Reading and writing a VM disk's private region (labels, config copies) through the bdev
//! layer. Control path only: these block the calling thread on a reactor's completion.

use std::sync::Arc;
use std::time::Duration;

use crate::bdev::blocking::{run_io, BlockingIoError};
use crate::bdev::{Bdev, IoType};
use crate::volume::ondisk::format::{
    self, ConfigCopyError, ConfigHeader, DiskState, Label, LabelError, RegionLayout, LABEL_SIZE,
    SLOT_HEADER_SIZE,
};
use crate::Engine;

/// How long one private-region request may take.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a private-region operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The label could not be used.
    #[error("bdev '{bdev}': {source}")]
    Label {
        /// The bdev.
        bdev: String,
        /// What is wrong with its label.
        #[source]
        source: LabelError,
    },
    /// Reading or writing the disk failed.
    #[error(transparent)]
    Io(#[from] BlockingIoError),
    /// Formatting failed (disk too small, name too long...).
    #[error("bdev '{bdev}': {source}")]
    Format {
        /// The bdev.
        bdev: String,
        /// Why.
        #[source]
        source: format::OnDiskError,
    },
    /// The bdev's block size cannot hold a private region.
    #[error(
        "bdev '{bdev}' has block size {block_size}; VM disks need a power-of-two block size from {} to {} bytes",
        format::MIN_BLOCK_SIZE,
        format::MAX_BLOCK_SIZE
    )]
    BlockSize {
        /// The bdev.
        bdev: String,
        /// Its block size.
        block_size: u32,
    },
    /// The bdev already carries something that initialising would destroy.
    #[error("bdev '{bdev}' {what}; pass force to overwrite it")]
    InUse {
        /// The bdev.
        bdev: String,
        /// What is on it.
        what: String,
    },
}

/// The unit the private region is read and written in: a 4096-byte record, or the whole
/// block holding it when blocks are larger (the rest of that block is zero).
fn record_unit(bdev: &Bdev) -> u64 {
    (LABEL_SIZE as u64).max(u64::from(bdev.block_size()))
}

/// `len` rounded up to a whole number of `bdev`'s blocks.
fn whole_blocks(bdev: &Bdev, len: u64) -> u64 {
    len.next_multiple_of(u64::from(bdev.block_size()))
}

fn io(
    engine: &Engine,
    bdev: &Arc<Bdev>,
    t: IoType,
    offset: u64,
    len: u64,
    data: Option<&[u8]>,
) -> Result<Vec<u8>, DiskError> {
    Ok(run_io(engine, 0, bdev, t, offset, len, data, IO_TIMEOUT)?)
}

/// Makes completed writes durable (skipped for bdevs without flush).
pub fn flush(engine: &Engine, bdev: &Arc<Bdev>) -> Result<(), DiskError> {
    if bdev.io_types().contains(IoType::Flush) {
        io(engine, bdev, IoType::Flush, 0, 0, None)?;
    }
    Ok(())
}

/// Reads both label copies and returns the valid one with the higher serial; if neither is
/// valid, the primary's error.
pub fn read_label(engine: &Engine, bdev: &Arc<Bdev>) -> Result<Label, DiskError> {
    check_block_size(bdev)?;
    let mut best: Option<Label> = None;
    let mut first_err = None;
    let unit = record_unit(bdev);
    for off in format::label_probe_offsets(bdev.block_size()) {
        if off + unit > bdev.num_blocks() * bdev.block_size() as u64 {
            continue;
        }
        let buf = io(engine, bdev, IoType::Read, off, unit, None)?;
        match Label::decode(&buf) {
            Ok(l) => {
                if best.as_ref().is_none_or(|b| l.serial > b.serial) {
                    best = Some(l);
                }
            }
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    best.ok_or_else(|| DiskError::Label {
        bdev: bdev.name().to_string(),
        source: first_err.unwrap_or(LabelError::Blank),
    })
}

/// Writes both label copies (primary, flush, backup, flush), so a torn write leaves one.
pub fn write_label(engine: &Engine, bdev: &Arc<Bdev>, label: &Label) -> Result<(), DiskError> {
    let mut buf = label.encode().map_err(|source| DiskError::Format {
        bdev: bdev.name().to_string(),
        source,
    })?;
    buf.resize(record_unit(bdev) as usize, 0);
    for off in label.layout.label_offsets {
        io(
            engine,
            bdev,
            IoType::Write,
            off,
            buf.len() as u64,
            Some(&buf),
        )?;
        flush(engine, bdev)?;
    }
    Ok(())
}

fn check_block_size(bdev: &Bdev) -> Result<(), DiskError> {
    let bs = bdev.block_size();
    if !format::block_size_supported(bs) {
        return Err(DiskError::BlockSize {
            bdev: bdev.name().to_string(),
            block_size: bs,
        });
    }
    Ok(())
}

/// Describes what is on a bdev that initialising would destroy, or `None` if it is blank or a
/// free VM disk.
pub fn occupant(engine: &Engine, bdev: &Arc<Bdev>) -> Result<Option<String>, DiskError> {
    match read_label(engine, bdev) {
        Ok(l) if l.state == DiskState::Free => Ok(None),
        Ok(l) => Ok(Some(format!(
            "belongs to disk group '{}' (id {}) as {}",
            l.dg_name, l.dg_id, l.disk_name
        ))),
        Err(DiskError::Label {
            source: LabelError::Blank,
            ..
        }) => Ok(None),
        Err(DiskError::Label { source, .. }) => {
            Ok(Some(format!("has an unusable label ({source})")))
        }
        Err(e) => Err(e),
    }
}

/// Initialises `bdev` as a free VM disk: a fresh label, empty config slots and a zeroed log
/// area. Refuses a bdev that holds a foreign, corrupt, other-version or group member label
/// unless `force`.
pub fn init(engine: &Engine, bdev: &Arc<Bdev>, force: bool) -> Result<Label, DiskError> {
    check_block_size(bdev)?;
    if !force {
        if let Some(what) = occupant(engine, bdev)? {
            return Err(DiskError::InUse {
                bdev: bdev.name().to_string(),
                what,
            });
        }
    }
    let len = bdev.num_blocks() * bdev.block_size() as u64;
    let layout =
        RegionLayout::for_disk(len, bdev.block_size()).map_err(|source| DiskError::Format {
            bdev: bdev.name().to_string(),
            source,
        })?;
    let zeros = vec![0u8; record_unit(bdev) as usize];
    for s in 0..layout.config_slots {
        io(
            engine,
            bdev,
            IoType::Write,
            layout.slot_offset(s),
            zeros.len() as u64,
            Some(&zeros),
        )?;
    }
    let log = vec![0u8; layout.log_len as usize];
    io(
        engine,
        bdev,
        IoType::Write,
        layout.log_offset,
        log.len() as u64,
        Some(&log),
    )?;
    let label = Label {
        version: format::FORMAT_VERSION,
        block_size: bdev.block_size(),
        disk_id: uuid::Uuid::new_v4(),
        dg_id: uuid::Uuid::nil(),
        dg_name: String::new(),
        disk_name: String::new(),
        state: DiskState::Free,
        serial: 0,
        hostname: hostname(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        layout,
    };
    write_label(engine, bdev, &label)?;
    Ok(label)
}

/// This host's name (for labels).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let mut h = String::from_utf8_lossy(&buf[..end]).into_owned();
    while h.len() > format::HOST_MAX {
        h.pop();
    }
    h
}

/// One config copy read from a slot.
#[derive(Debug, Clone)]
pub struct RawCopy {
    /// The slot.
    pub slot: u32,
    /// Its header.
    pub header: ConfigHeader,
    /// Its payload (verified against the header's crc).
    pub payload: Vec<u8>,
}

/// Reads every config slot of a disk: a valid copy or why the slot is not one.
pub fn read_copies(
    engine: &Engine,
    bdev: &Arc<Bdev>,
    label: &Label,
) -> Vec<(u32, Result<RawCopy, ConfigCopyError>)> {
    let mut out = Vec::new();
    for slot in 0..label.layout.config_slots {
        out.push((slot, read_copy(engine, bdev, label, slot)));
    }
    out
}

fn read_copy(
    engine: &Engine,
    bdev: &Arc<Bdev>,
    label: &Label,
    slot: u32,
) -> Result<RawCopy, ConfigCopyError> {
    let at = label.layout.slot_offset(slot);
    let hdr = io(engine, bdev, IoType::Read, at, record_unit(bdev), None)
        .map_err(|e| ConfigCopyError::Invalid(format!("cannot read: {e}")))?;
    let header = format::decode_config_header(&hdr)?;
    if header.payload_len > label.layout.max_payload() {
        return Err(ConfigCopyError::Invalid(format!(
            "payload of {} bytes does not fit the slot",
            header.payload_len
        )));
    }
    let mut payload = if header.payload_len == 0 {
        Vec::new()
    } else if bdev.block_size() as usize <= SLOT_HEADER_SIZE {
        // The payload starts on a block boundary: read just it.
        let padded = whole_blocks(bdev, header.payload_len);
        io(
            engine,
            bdev,
            IoType::Read,
            at + SLOT_HEADER_SIZE as u64,
            padded,
            None,
        )
        .map_err(|e| ConfigCopyError::Invalid(format!("cannot read: {e}")))?
    } else {
        // It shares its first block with the header: read both, keep the payload.
        let len = whole_blocks(bdev, SLOT_HEADER_SIZE as u64 + header.payload_len);
        let mut b = io(engine, bdev, IoType::Read, at, len, None)
            .map_err(|e| ConfigCopyError::Invalid(format!("cannot read: {e}")))?;
        b.drain(..SLOT_HEADER_SIZE);
        b
    };
    payload.truncate(header.payload_len as usize);
    format::verify_config_payload(&header, &payload)?;
    Ok(RawCopy {
        slot,
        header,
        payload,
    })
}

/// Writes an encoded config copy (from [`format::encode_config_copy`]) into `slot` and
/// flushes.
pub fn write_copy(
    engine: &Engine,
    bdev: &Arc<Bdev>,
    label: &Label,
    slot: u32,
    encoded: &[u8],
) -> Result<(), DiskError> {
    // In pieces, as a large write reaches a real disk: a crash can leave any prefix of them,
    // which the payload crc then rejects (the other slot still holds the previous copy).
    // A piece is 4096 bytes, or one block when blocks are larger; the copy is zero-padded to
    // whole blocks (it ends 4096-aligned, and the slot is a whole number of blocks).
    let piece_len = record_unit(bdev) as usize;
    let whole = whole_blocks(bdev, encoded.len() as u64) as usize;
    let padded;
    let encoded = if whole == encoded.len() {
        encoded
    } else {
        let mut v = encoded.to_vec();
        v.resize(whole, 0);
        padded = v;
        &padded[..]
    };
    let base = label.layout.slot_offset(slot);
    for (i, piece) in encoded.chunks(piece_len).enumerate() {
        io(
            engine,
            bdev,
            IoType::Write,
            base + (i * piece_len) as u64,
            piece.len() as u64,
            Some(piece),
        )?;
    }
    flush(engine, bdev)
}
