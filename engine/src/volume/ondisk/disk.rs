//! Reading and writing a VM disk's private region (labels, config copies, pages of the log area)
//! through the bdev layer. Control path only: these block the calling thread on a reactor's
//! completion.

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
    /// Reading or writing the disk's log area failed or was refused.
    #[error(transparent)]
    Log(Box<LogAreaError>),
}

/// Why reading, writing or flushing pages of a disk's log area failed (boxed in
/// [`DiskError::Log`], which stays small). Each names the disk and the pages.
#[derive(Debug, thiserror::Error)]
pub enum LogAreaError {
    /// Log-area pages outside the disk's log area were asked for (nothing was read or
    /// written): the configuration places something where this disk has no log area.
    #[error(
        "disk {disk} (bdev '{bdev}'): log pages {first}..{end} are outside its log area of \
         {pages} pages of {page_size} bytes; nothing was read or written"
    )]
    Bounds {
        /// The disk's name in its group (from its label).
        disk: String,
        /// The bdev.
        bdev: String,
        /// First page asked for, from the start of the log area.
        first: u64,
        /// One past the last page asked for.
        end: u64,
        /// Whole pages in the log area.
        pages: u64,
        /// Bytes per page.
        page_size: u64,
    },
    /// A write of log-area pages whose buffer is not a whole number of pages (nothing was
    /// written).
    #[error(
        "disk {disk} (bdev '{bdev}'): {len} bytes are not a whole number of {page_size}-byte \
         log pages; nothing was written"
    )]
    Length {
        /// The disk's name in its group (from its label).
        disk: String,
        /// The bdev.
        bdev: String,
        /// Bytes given.
        len: usize,
        /// Bytes per page.
        page_size: u64,
    },
    /// Reading, writing or flushing log-area pages failed.
    #[error("disk {disk} (bdev '{bdev}'): {what} failed: {source}")]
    Io {
        /// The disk's name in its group (from its label).
        disk: String,
        /// The bdev.
        bdev: String,
        /// What was done, naming the pages ("writing log pages 3..10").
        what: String,
        /// The I/O error.
        #[source]
        source: BlockingIoError,
    },
}

impl From<LogAreaError> for DiskError {
    fn from(e: LogAreaError) -> DiskError {
        DiskError::Log(Box::new(e))
    }
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

/// Bytes of one page of a disk's log area: the private region's record unit, 4096 bytes or
/// one block when blocks are larger (the page of the dirty region log,
/// `model::drl_space::page_bytes`).
pub(crate) fn log_page_size(bdev: &Bdev) -> u64 {
    record_unit(bdev)
}

/// Whole pages in the log area of a disk with `label` (its `log_len` over
/// [`log_page_size`]; a partial page at the end is not counted).
pub(crate) fn log_area_pages(bdev: &Bdev, label: &Label) -> u64 {
    label.layout.log_len / log_page_size(bdev)
}

/// The disk's name for messages: its name in the group, or its bdev's while it has none.
fn disk_name(bdev: &Bdev, label: &Label) -> String {
    if label.disk_name.is_empty() {
        bdev.name().to_string()
    } else {
        label.disk_name.clone()
    }
}

/// The error of a failed log-area request: what was done (naming the pages) and on which disk.
fn log_io_error(bdev: &Bdev, label: &Label, what: String, source: BlockingIoError) -> DiskError {
    DiskError::from(LogAreaError::Io {
        disk: disk_name(bdev, label),
        bdev: bdev.name().to_string(),
        what,
        source,
    })
}

/// The byte offset on the disk of log pages `first..first + count` (of [`log_page_size`]
/// bytes, from the start of the log area `label` places), after checking that they lie
/// inside the log area ([`LogAreaError::Bounds`] if not).
pub(crate) fn log_span(
    bdev: &Bdev,
    label: &Label,
    first: u64,
    count: u64,
) -> Result<u64, DiskError> {
    let page = log_page_size(bdev);
    let pages = log_area_pages(bdev, label);
    let end = first.checked_add(count);
    match end {
        Some(end) if end <= pages => Ok(label.layout.log_offset + first * page),
        _ => Err(DiskError::from(LogAreaError::Bounds {
            disk: disk_name(bdev, label),
            bdev: bdev.name().to_string(),
            first,
            end: end.unwrap_or(u64::MAX),
            pages,
            page_size: page,
        })),
    }
}

/// Reads log pages `first..first + count` of a disk (pages of [`log_page_size`] bytes,
/// counted from the start of its log area, as `label` places it) in one request, waiting up
/// to the private region's timeout. Refuses pages outside the log area without reading
/// anything ([`LogAreaError::Bounds`]); an I/O error names the disk and the pages
/// ([`LogAreaError::Io`]). Reading 0 pages reads nothing and returns no bytes.
pub(crate) fn read_log_pages(
    engine: &Engine,
    bdev: &Arc<Bdev>,
    label: &Label,
    first: u64,
    count: u64,
) -> Result<Vec<u8>, DiskError> {
    let at = log_span(bdev, label, first, count)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let len = count * log_page_size(bdev);
    run_io(engine, 0, bdev, IoType::Read, at, len, None, IO_TIMEOUT).map_err(|source| {
        let what = format!("reading log pages {first}..{}", first + count);
        log_io_error(bdev, label, what, source)
    })
}

/// Writes `data`, a whole number of log pages, to the log area of a disk from page `first`
/// on, in one request (not flushed: see [`flush_log`]). Refuses a buffer that is not whole
/// pages ([`LogAreaError::Length`]) or pages outside the log area ([`LogAreaError::Bounds`])
/// without writing anything; an I/O error names the disk and the pages. An empty `data`
/// writes nothing.
pub(crate) fn write_log_pages(
    engine: &Engine,
    bdev: &Arc<Bdev>,
    label: &Label,
    first: u64,
    data: &[u8],
) -> Result<(), DiskError> {
    let page = log_page_size(bdev);
    let len = data.len() as u64;
    if !len.is_multiple_of(page) {
        return Err(DiskError::from(LogAreaError::Length {
            disk: disk_name(bdev, label),
            bdev: bdev.name().to_string(),
            len: data.len(),
            page_size: page,
        }));
    }
    let count = len / page;
    let at = log_span(bdev, label, first, count)?;
    if count == 0 {
        return Ok(());
    }
    run_io(
        engine,
        0,
        bdev,
        IoType::Write,
        at,
        len,
        Some(data),
        IO_TIMEOUT,
    )
    .map(|_| ())
    .map_err(|source| {
        let what = format!("writing log pages {first}..{}", first + count);
        log_io_error(bdev, label, what, source)
    })
}

/// Makes the log pages written to a disk durable ([`flush`], with an error that names the
/// disk and its log area).
pub(crate) fn flush_log(engine: &Engine, bdev: &Arc<Bdev>, label: &Label) -> Result<(), DiskError> {
    if !bdev.io_types().contains(IoType::Flush) {
        return Ok(());
    }
    run_io(engine, 0, bdev, IoType::Flush, 0, 0, None, IO_TIMEOUT)
        .map(|_| ())
        .map_err(|source| log_io_error(bdev, label, "flushing the log area".to_string(), source))
}
