//! Parsing virtio-blk requests from a descriptor chain flattened into host memory pieces,
//! safely against hostile guests.
//!
//! A request is: a 16-byte header `{type: u32, reserved: u32, sector: u64}` (device-readable),
//! optional data, and one status byte, the last byte of the device-writable part. plexd's own
//! walker ([`super::chain::flatten_head`], bounded, from a head index) turns the chain into
//! [`Piece`]s; this module never assumes header, data and status sit in separate descriptors:
//! [`parse`] cuts the pieces by byte count into header, data pieces and status byte, with
//! checked arithmetic. [`read_range_seg`] and [`write_id`] serve discard/write-zeroes and
//! GET_ID from the data pieces.
//!
//! Guest memory is shared with a guest that may change it at any time, so a [`Piece`] is a raw
//! pointer and a length, never a Rust slice: its bytes are only copied through raw pointers and
//! written with volatile stores. A piece can only be made by `unsafe` code that vouches for the
//! memory ([`Piece::new`]), so the functions that read and write through pieces are safe.
//!
//! Parsing allocates nothing: the caller passes scratch vectors that keep their capacity.

use virtio_bindings::virtio_blk;

/// Read sectors into the data buffers.
pub const VIRTIO_BLK_T_IN: u32 = virtio_blk::VIRTIO_BLK_T_IN;
/// Write the data buffers to sectors.
pub const VIRTIO_BLK_T_OUT: u32 = virtio_blk::VIRTIO_BLK_T_OUT;
/// Flush the write cache.
pub const VIRTIO_BLK_T_FLUSH: u32 = virtio_blk::VIRTIO_BLK_T_FLUSH;
/// Return the device id string (20 bytes).
pub const VIRTIO_BLK_T_GET_ID: u32 = virtio_blk::VIRTIO_BLK_T_GET_ID;
/// Discard ranges.
pub const VIRTIO_BLK_T_DISCARD: u32 = virtio_blk::VIRTIO_BLK_T_DISCARD;
/// Zero ranges.
pub const VIRTIO_BLK_T_WRITE_ZEROES: u32 = virtio_blk::VIRTIO_BLK_T_WRITE_ZEROES;
/// Success.
pub const VIRTIO_BLK_S_OK: u8 = virtio_blk::VIRTIO_BLK_S_OK as u8;
/// Device or driver error.
pub const VIRTIO_BLK_S_IOERR: u8 = virtio_blk::VIRTIO_BLK_S_IOERR as u8;
/// Request type not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = virtio_blk::VIRTIO_BLK_S_UNSUPP as u8;

/// Most host memory pieces one request may flatten into.
pub const MAX_PIECES: usize = 1024;
/// Length of the GET_ID answer.
pub const ID_LEN: usize = virtio_blk::VIRTIO_BLK_ID_BYTES as usize;

/// One contiguous piece of a request in host memory (inside a mapping of guest memory).
///
/// Invariant (vouched for by whoever calls [`Piece::new`]): the memory is valid for reads, and
/// for writes if the piece is writable, for as long as the piece, its copies, or anything
/// derived from it here (data pieces, the status pointer) is used. The guest may change it at
/// any time, so it is only accessed through raw pointers.
#[derive(Debug, Clone, Copy)]
pub struct Piece {
    ptr: *mut u8,
    len: usize,
    writable: bool,
}

impl Piece {
    /// A piece of `len` bytes at host address `ptr`, device-writable if `writable`.
    ///
    /// # Safety
    /// `ptr` must be valid for reads (and, if `writable`, writes) of `len` bytes for as long
    /// as the piece, any copy of it, or anything this module derives from it is used; nothing
    /// may hold a Rust reference to those bytes meanwhile (another party, the guest, may
    /// change them at any time).
    pub unsafe fn new(ptr: *mut u8, len: usize, writable: bool) -> Piece {
        Piece { ptr, len, writable }
    }

    /// Host address of the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the piece has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the device may write it (a write-only descriptor).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Host address of the last byte (where a status byte goes), if the piece has one.
    pub fn last_byte(&self) -> Option<*mut u8> {
        // `wrapping_add` computes an address without touching memory; `len - 1 < len` keeps
        // it inside the piece.
        self.len.checked_sub(1).map(|k| self.ptr.wrapping_add(k))
    }
}

/// The request kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Read.
    In,
    /// Write.
    Out,
    /// Flush.
    Flush,
    /// Device id.
    GetId,
    /// Discard.
    Discard,
    /// Write zeroes.
    WriteZeroes,
    /// Anything else (answered UNSUPP).
    Unsupported(u32),
}

/// A parsed request. Data pieces are in the caller's `data` vector.
#[derive(Debug, Clone, Copy)]
pub struct Parsed {
    /// What to do.
    pub kind: Kind,
    /// First 512-byte sector.
    pub sector: u64,
    /// Total bytes of data.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: *mut u8,
}

/// Why a chain is not a valid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A descriptor points outside guest memory or overflows.
    #[error("descriptor points outside guest memory")]
    BadAddress,
    /// More pieces than [`MAX_PIECES`].
    #[error("descriptor chain too long")]
    TooLong,
    /// Fewer than 16 readable bytes before any writable byte.
    #[error("request header missing or not device-readable")]
    NoHeader,
    /// No device-writable byte at the end for the status.
    #[error("no device-writable status byte")]
    NoStatus,
    /// Data buffers have the wrong direction for the request type.
    #[error("data buffers have the wrong direction for the request type")]
    WrongDirection,
    /// More than 4 GiB in total: virtio forbids it, and the used length could not say it.
    #[error("request larger than 4 GiB")]
    TooLarge,
}

impl ParseError {
    /// Whether a status byte could be located (the request can be answered IOERR).
    pub fn has_status(self) -> bool {
        !matches!(
            self,
            ParseError::NoStatus | ParseError::BadAddress | ParseError::TooLong
        )
    }
}

/// Copies `out.len()` bytes from the start of `pieces`; returns how many pieces (and bytes of
/// the last) were consumed, or None if there were not enough readable bytes.
fn read_prefix(pieces: &[Piece], out: &mut [u8]) -> Option<(usize, usize)> {
    let mut done = 0;
    for (i, p) in pieces.iter().enumerate() {
        if p.writable {
            return None;
        }
        let n = p.len.min(out.len() - done);
        // SAFETY: the piece is valid for reads of `p.len >= n` bytes (the invariant of
        // `Piece`), `out` has room for `n` more bytes, and the two cannot overlap: `out` is a
        // slice the caller owns, and no Rust reference covers a piece's bytes. The guest may
        // change the bytes concurrently; any value is acceptable for what we read here (a
        // header or range we validate).
        unsafe { std::ptr::copy_nonoverlapping(p.ptr, out.as_mut_ptr().add(done), n) };
        done += n;
        if done == out.len() {
            return Some((i, n));
        }
    }
    None
}

/// Parses flattened `pieces` into a request; the data pieces (header and status removed)
/// are written to `data` (cleared first).
pub fn parse(pieces: &[Piece], data: &mut Vec<Piece>) -> Result<Parsed, ParseError> {
    data.clear();
    let status = pieces
        .last()
        .filter(|last| last.writable)
        .and_then(Piece::last_byte)
        .ok_or(ParseError::NoStatus)?;
    // The used length (data + status) is a u32, and virtio caps a chain at 4 GiB: a larger
    // request cannot be answered (its used length would wrap, or overflow).
    pieces
        .iter()
        .try_fold(0u64, |total, p| total.checked_add(p.len as u64))
        .filter(|total| *total <= u32::MAX as u64)
        .ok_or(ParseError::TooLarge)?;
    let mut header = [0u8; 16];
    let (hi, hused) = read_prefix(pieces, &mut header).ok_or(ParseError::NoHeader)?;
    let t = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let sector = u64::from_le_bytes([
        header[8], header[9], header[10], header[11], header[12], header[13], header[14],
        header[15],
    ]);
    let kind = match t {
        VIRTIO_BLK_T_IN => Kind::In,
        VIRTIO_BLK_T_OUT => Kind::Out,
        VIRTIO_BLK_T_FLUSH => Kind::Flush,
        VIRTIO_BLK_T_GET_ID => Kind::GetId,
        VIRTIO_BLK_T_DISCARD => Kind::Discard,
        VIRTIO_BLK_T_WRITE_ZEROES => Kind::WriteZeroes,
        other => Kind::Unsupported(other),
    };
    // The data lies between the header's end and the status byte.
    let n = pieces.len();
    let mut data_len: u64 = 0;
    for (i, p) in pieces.iter().enumerate().skip(hi) {
        let start = if i == hi { hused } else { 0 };
        let end = if i == n - 1 { p.len - 1 } else { p.len };
        if end <= start {
            continue;
        }
        // A sub-range of `p` (`start < end <= p.len`), so it keeps `p`'s invariant.
        data.push(Piece {
            ptr: p.ptr.wrapping_add(start),
            len: end - start,
            writable: p.writable,
        });
        data_len += (end - start) as u64;
    }
    let want_writable = match kind {
        Kind::In | Kind::GetId => Some(true),
        Kind::Out | Kind::Discard | Kind::WriteZeroes => Some(false),
        Kind::Flush | Kind::Unsupported(_) => None,
    };
    if let Some(w) = want_writable {
        if data.iter().any(|p| p.writable != w) {
            return Err(ParseError::WrongDirection);
        }
    }
    Ok(Parsed {
        kind,
        sector,
        data_len,
        status,
    })
}

/// One discard / write-zeroes segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeSeg {
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub num_sectors: u32,
    /// Flags (bit 0: unmap allowed, for write-zeroes).
    pub flags: u32,
}

/// Reads the first discard/write-zeroes segment from the data pieces; the request must carry
/// exactly one (plexd advertises `max_discard_seg = 1`).
pub fn read_range_seg(data: &[Piece], data_len: u64) -> Option<RangeSeg> {
    if data_len != 16 {
        return None;
    }
    let mut b = [0u8; 16];
    read_prefix(data, &mut b)?;
    Some(RangeSeg {
        sector: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        num_sectors: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        flags: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
    })
}

/// Writes the device id (`name`, NUL-padded, at most 20 bytes) into the data pieces, stopping
/// at the first one the device may not write; returns the bytes written.
pub fn write_id(data: &[Piece], name: &[u8]) -> usize {
    let mut id = [0u8; ID_LEN];
    let n = name.len().min(ID_LEN);
    id[..n].copy_from_slice(&name[..n]);
    let mut done = 0;
    for p in data {
        if !p.writable {
            break;
        }
        let k = p.len.min(ID_LEN - done);
        // SAFETY: the piece is writable, so valid for writes of `p.len >= k` bytes (the
        // invariant of `Piece`); `id` is on our stack, so no overlap.
        unsafe { std::ptr::copy_nonoverlapping(id.as_ptr().add(done), p.ptr, k) };
        done += k;
        if done == ID_LEN {
            break;
        }
    }
    done
}

/// Writes the status byte.
///
/// # Safety
/// `status` must be valid for a one-byte write: from [`parse`] or [`Piece::last_byte`] of a
/// writable piece, with the guest memory mapping the piece came from still held.
pub unsafe fn write_status(status: *mut u8, value: u8) {
    // SAFETY: guaranteed by the caller; a volatile write because the guest shares the memory.
    unsafe { std::ptr::write_volatile(status, value) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(buf: &mut [u8], writable: bool) -> Piece {
        // SAFETY: every test's buffers outlive its pieces and are not borrowed while the
        // pieces are used.
        unsafe { Piece::new(buf.as_mut_ptr(), buf.len(), writable) }
    }

    fn header(t: u32, sector: u64) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&t.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        h
    }

    #[test]
    fn separate_descriptors() {
        let mut h = header(VIRTIO_BLK_T_IN, 8);
        let mut d = [0u8; 4096];
        let mut s = [0xffu8; 1];
        let pieces = vec![
            piece(&mut h, false),
            piece(&mut d, true),
            piece(&mut s, true),
        ];
        let mut data = Vec::new();
        let p = parse(&pieces, &mut data).unwrap();
        assert_eq!(p.kind, Kind::In);
        assert_eq!(p.sector, 8);
        assert_eq!(p.data_len, 4096);
        assert_eq!(data.len(), 1);
        assert_eq!(p.status, s.as_mut_ptr());
    }

    #[test]
    fn header_data_status_in_shared_descriptors() {
        // Header and write data in one readable buffer; status in its own writable byte.
        let mut buf = vec![0u8; 16 + 512];
        buf[..16].copy_from_slice(&header(VIRTIO_BLK_T_OUT, 3));
        let mut s = [9u8; 1];
        let pieces = vec![piece(&mut buf, false), piece(&mut s, true)];
        let mut data = Vec::new();
        let p = parse(&pieces, &mut data).unwrap();
        assert_eq!((p.kind, p.sector, p.data_len), (Kind::Out, 3, 512));
        // Read: data and status share one writable buffer; header split over two pieces.
        let mut h = header(VIRTIO_BLK_T_IN, 1);
        let (h1, h2) = h.split_at_mut(7);
        let mut ds = vec![0u8; 1024 + 1];
        let pieces = vec![piece(h1, false), piece(h2, false), piece(&mut ds, true)];
        let p = parse(&pieces, &mut data).unwrap();
        assert_eq!((p.kind, p.sector, p.data_len), (Kind::In, 1, 1024));
        assert_eq!(p.status, ds[1024..].as_mut_ptr());
    }

    #[test]
    fn malformed_requests_are_rejected() {
        let mut data = Vec::new();
        let mut h = header(VIRTIO_BLK_T_IN, 0);
        let mut d = [0u8; 512];
        let mut s = [0u8; 1];
        // No status: last piece readable.
        let pieces = vec![piece(&mut h, false), piece(&mut d, false)];
        assert_eq!(parse(&pieces, &mut data).unwrap_err(), ParseError::NoStatus);
        // Header shorter than 16 bytes.
        let pieces = vec![piece(&mut h[..10], false), piece(&mut s, true)];
        assert_eq!(parse(&pieces, &mut data).unwrap_err(), ParseError::NoHeader);
        // A read whose data buffer is device-readable.
        let pieces = vec![
            piece(&mut h, false),
            piece(&mut d, false),
            piece(&mut s, true),
        ];
        assert_eq!(
            parse(&pieces, &mut data).unwrap_err(),
            ParseError::WrongDirection
        );
        // Empty chain.
        assert_eq!(parse(&[], &mut data).unwrap_err(), ParseError::NoStatus);
    }

    #[test]
    fn get_id_and_ranges() {
        let mut id = [0u8; 20];
        let pieces = vec![piece(&mut id, true)];
        assert_eq!(write_id(&pieces, b"Malloc0"), 20);
        assert_eq!(&id[..8], b"Malloc0\0");
        let mut seg = [0u8; 16];
        seg[0..8].copy_from_slice(&100u64.to_le_bytes());
        seg[8..12].copy_from_slice(&8u32.to_le_bytes());
        let pieces = vec![piece(&mut seg, false)];
        assert_eq!(
            read_range_seg(&pieces, 16),
            Some(RangeSeg {
                sector: 100,
                num_sectors: 8,
                flags: 0
            })
        );
        assert_eq!(read_range_seg(&pieces, 32), None);
    }
}
