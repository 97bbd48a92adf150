//! The logic of the `request_parse` fuzz target: arbitrary bytes become a guest's memory
//! (descriptor table included) and a head index; the chain is walked by virtio-queue's
//! `DescriptorChain` into [`flatten`] (the reference walker, kept here because only the
//! differential tests use it) and by plexd's own walker `plexd::vhost::chain::flatten_head`,
//! then parsed with `plexd::vhost::request::parse`.
//!
//! Shared with `target/tests/request_props.rs` (which includes this file with `#[path]`), so
//! `cargo test -p plexd` runs it on seeds and on random bytes even where cargo-fuzz is absent.
//!
//! Checked on every input (a violation panics, which is what the fuzzer looks for):
//! - every piece either walker returns lies inside guest memory, has a length, and there are
//!   at most `MAX_PIECES`;
//! - when plexd's walker accepts a chain, virtio-queue's walk yields the very same pieces;
//! - when `parse` accepts, its result equals a simple byte-position model: the first 16
//!   bytes (all device-readable) are the header, the last byte (device-writable) the status,
//!   everything between is data, in order, with the direction the type requires; the chain is
//!   at most 4 GiB;
//! - the GET_ID / discard helpers never write or read outside the data pieces.
//!
//! Input layout: byte 0 selects the queue size (`1 << (b & 7)`) and, with bit 3, folds every
//! descriptor of the table and of the conventional indirect table at [`INDIRECT`] into guest
//! memory (address mod 0x24000, length mod 0x3000, next mod size + 2) so that random bytes
//! make long chains rather than immediate address errors; bytes 1..3 are the head index
//! (little-endian), the rest is copied to guest physical address 0 onward. Guest memory is two
//! adjacent regions `[0, 32K)` and `[32K, 64K)` (buffers may straddle two mappings) and a
//! third region `[128K, 136K)` after a hole. The descriptor table is at GPA 0; the available
//! ring (one entry: the head) at [`AVAIL`] overwrites whatever the input put there.

use plexd::vhost::chain::flatten_head;
use plexd::vhost::request::{parse, read_range_seg, write_id, Kind, ParseError, Piece, MAX_PIECES};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Guest memory regions: (first GPA, size).
pub const REGIONS: [(u64, usize); 3] = [(0, 0x8000), (0x8000, 0x8000), (0x2_0000, 0x2000)];
/// Where the available ring is placed (after the largest descriptor table, 128 entries).
pub const AVAIL: u64 = 0x1800;
/// Where folded indirect tables are expected (64 entries).
pub const INDIRECT: u64 = 0x1000;
/// Where the used ring is placed (unused: nothing is completed).
pub const USED: u64 = 0x1c00;

/// What a run found (for tests; the fuzzer only cares that nothing panicked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// [`flatten`] over virtio-queue's chain: number of pieces, or the error.
    pub flatten: Result<usize, ParseError>,
    /// `chain::flatten_head`: number of pieces, or the error.
    pub walker: Result<usize, ParseError>,
    /// `parse` of the pieces from plexd's walker (the hot path), if it accepted the chain.
    pub request: Option<Result<Request, ParseError>>,
}

/// A parsed request, in guest terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Request kind.
    pub kind: Kind,
    /// First sector.
    pub sector: u64,
    /// The data bytes, gathered from the data pieces in order.
    pub data: Vec<u8>,
    /// Whether the data pieces are device-writable (None without data).
    pub data_writable: Option<bool>,
    /// Guest physical address of the status byte.
    pub status_gpa: u64,
}

/// Flattens a chain into host memory pieces (cleared first), as plexd's walker does but built
/// on virtio-queue's iterator: the independent reference `chain::flatten_head` is compared
/// with. Returns an error if any descriptor cannot be mapped or the chain is too long.
///
/// virtio-queue's iterator ends a malformed chain silently (a loop or an over-long chain
/// when its TTL runs out, a next index past the table, a nested indirect table, an unreadable
/// descriptor, more than 4 GiB); the last descriptor it yielded then still says NEXT. Such a
/// chain is refused rather than served as the prefix it yielded.
///
/// # Safety
/// The pieces point into `mem` without borrowing it: the caller must keep `mem` alive while
/// it uses them.
pub unsafe fn flatten<M>(
    chain: DescriptorChain<M>,
    mem: &GuestMemoryMmap,
    pieces: &mut Vec<Piece>,
) -> Result<(), ParseError>
where
    M: std::ops::Deref,
    M::Target: vm_memory::GuestMemory,
{
    pieces.clear();
    let mut cut_short = false;
    for desc in chain {
        cut_short = desc.has_next();
        let len = desc.len() as usize;
        if len == 0 {
            continue;
        }
        desc.addr()
            .0
            .checked_add(len as u64)
            .ok_or(ParseError::BadAddress)?;
        for slice in mem.get_slices(GuestAddress(desc.addr().0), len) {
            let slice = slice.map_err(|_| ParseError::BadAddress)?;
            if pieces.len() >= MAX_PIECES {
                return Err(ParseError::TooLong);
            }
            // SAFETY: `slice` lies in a mapping of `mem`, valid for reads and writes of its
            // length; the caller keeps `mem` alive while the pieces are used.
            pieces.push(unsafe {
                Piece::new(
                    slice.ptr_guard_mut().as_ptr(),
                    slice.len(),
                    desc.is_write_only(),
                )
            });
        }
    }
    if cut_short {
        return Err(ParseError::TooLong);
    }
    Ok(())
}

/// The piece as (host address, length, writable), for comparisons.
pub fn raw(p: &Piece) -> (usize, usize, bool) {
    (p.as_ptr() as usize, p.len(), p.is_writable())
}

/// Guest memory holding `image` from GPA 0 on (as far as the first two regions reach).
pub fn guest_memory(image: &[u8]) -> GuestMemoryMmap {
    let ranges: Vec<(GuestAddress, usize)> = REGIONS
        .iter()
        .map(|(a, l)| (GuestAddress(*a), *l))
        .collect();
    let mem = GuestMemoryMmap::from_ranges(&ranges).expect("guest memory");
    let n = image.len().min(0x1_0000);
    mem.write_slice(&image[..n], GuestAddress(0))
        .expect("copy image");
    mem
}

/// (host start, length, first GPA) of every region.
fn host_regions(mem: &GuestMemoryMmap) -> Vec<(usize, usize, u64)> {
    REGIONS
        .iter()
        .map(|(gpa, len)| {
            let p = mem
                .get_host_address(GuestAddress(*gpa))
                .expect("region host address");
            (p as usize, *len, *gpa)
        })
        .collect()
}

/// The guest physical address of a host pointer into `regions`, if any.
fn gpa_of(regions: &[(usize, usize, u64)], p: usize) -> Option<u64> {
    regions
        .iter()
        .find(|(h, l, _)| p >= *h && p < h + l)
        .map(|(h, _, g)| g + (p - h) as u64)
}

fn check_pieces(regions: &[(usize, usize, u64)], pieces: &[Piece], who: &str) {
    assert!(pieces.len() <= MAX_PIECES, "{who}: {} pieces", pieces.len());
    for p in pieces {
        let (start, len, _) = raw(p);
        assert!(len > 0, "{who}: empty piece");
        let inside = regions
            .iter()
            .any(|(h, l, _)| start >= *h && start.checked_add(len).is_some_and(|e| e <= h + l));
        assert!(inside, "{who}: piece {p:?} outside guest memory");
    }
}

/// The model of a parsed request: data pieces as (ptr, len, writable), status pointer.
type Model = (u32, u64, Vec<(usize, usize, bool)>, usize);

/// Byte-position model of `parse`: None where the request is malformed.
pub fn model_parse(pieces: &[Piece]) -> Option<Model> {
    let last = raw(pieces.last()?);
    if !last.2 || last.1 == 0 {
        return None;
    }
    let total: u64 = pieces.iter().map(|p| p.len() as u64).sum();
    if total > u32::MAX as u64 || total < 17 {
        return None;
    }
    // Cut the byte stream at 16 (end of the header) and total - 1 (the status byte).
    let mut header = Vec::with_capacity(16);
    let mut data: Vec<(usize, usize, bool)> = Vec::new();
    let mut pos = 0u64;
    for p in pieces {
        let (ptr, len, writable) = raw(p);
        let (s, e) = (pos, pos + len as u64);
        if s < 16 {
            if writable {
                return None;
            }
            for k in 0..(e.min(16) - s) as usize {
                // SAFETY: `k < len`, and the piece is valid for reads (invariant of `Piece`).
                header.push(unsafe { std::ptr::read_volatile(p.as_ptr().add(k)) });
            }
        }
        let (ds, de) = (s.max(16), e.min(total - 1));
        if ds < de {
            data.push((ptr + (ds - s) as usize, (de - ds) as usize, writable));
        }
        pos = e;
    }
    let t = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let sector = u64::from_le_bytes([
        header[8], header[9], header[10], header[11], header[12], header[13], header[14],
        header[15],
    ]);
    let want = match t {
        0 | 8 => Some(true),
        1 | 11 | 13 => Some(false),
        _ => None,
    };
    if let Some(w) = want {
        if data.iter().any(|d| d.2 != w) {
            return None;
        }
    }
    let status = last.0 + last.1 - 1;
    Some((t, sector, data, status))
}

/// Runs `parse` on `pieces` and checks it against [`model_parse`]; returns the request.
pub fn parse_checked(pieces: &[Piece], gpa: impl Fn(usize) -> u64) -> Result<Request, ParseError> {
    let mut data = Vec::new();
    let parsed = parse(pieces, &mut data);
    let model = model_parse(pieces);
    let p = match (parsed, &model) {
        (Err(e), None) => return Err(e),
        (Err(e), Some(m)) => panic!("parse refused ({e}) a request the model accepts: {m:?}"),
        (Ok(p), None) => panic!("parse accepted a request the model refuses: {p:?}"),
        (Ok(p), Some(_)) => p,
    };
    let (t, sector, model_data, status) = model.expect("checked above");
    let got: Vec<(usize, usize, bool)> = data.iter().map(raw).collect();
    assert_eq!(got, model_data, "data pieces differ from the model");
    assert_eq!(
        p.data_len,
        model_data.iter().map(|d| d.1 as u64).sum::<u64>(),
        "data_len"
    );
    assert_eq!(p.status as usize, status, "status location");
    assert_eq!(p.sector, sector, "sector");
    let kind_type = match p.kind {
        Kind::In => 0,
        Kind::Out => 1,
        Kind::Flush => 4,
        Kind::GetId => 8,
        Kind::Discard => 11,
        Kind::WriteZeroes => 13,
        Kind::Unsupported(x) => {
            assert!(
                ![0, 1, 4, 8, 11, 13].contains(&x),
                "known type {x} unsupported"
            );
            x
        }
    };
    assert_eq!(kind_type, t, "kind");
    let mut bytes = Vec::with_capacity(p.data_len as usize);
    for d in &data {
        for k in 0..d.len() {
            // SAFETY: `k < d.len()`, and a data piece is valid for reads (invariant of
            // `Piece`); read byte by byte, never as a slice of guest memory.
            bytes.push(unsafe { std::ptr::read_volatile(d.as_ptr().add(k)) });
        }
    }
    // The helpers that touch data pieces stay inside them.
    match p.kind {
        Kind::GetId => {
            let n = write_id(&data, b"fuzz-device-name-that-is-long");
            assert!(
                n <= 20 && n as u64 <= p.data_len,
                "write_id wrote {n} bytes"
            );
        }
        Kind::Discard | Kind::WriteZeroes => {
            let seg = read_range_seg(&data, p.data_len);
            assert_eq!(seg.is_some(), p.data_len == 16, "read_range_seg");
        }
        _ => {}
    }
    Ok(Request {
        kind: p.kind,
        sector: p.sector,
        data: bytes,
        data_writable: data.first().map(Piece::is_writable),
        status_gpa: gpa(p.status as usize),
    })
}

/// Rewrites `n` descriptors at `table` so their buffers mostly fall in guest memory.
fn fold(mem: &GuestMemoryMmap, table: u64, n: u64, size: u16) {
    for i in 0..n {
        let at = GuestAddress(table + 16 * i);
        let mut d = [0u8; 16];
        mem.read_slice(&mut d, at).expect("descriptor");
        let addr = u64::from_le_bytes(d[0..8].try_into().expect("8 bytes")) % 0x2_4000;
        let len = u32::from_le_bytes(d[8..12].try_into().expect("4 bytes")) % 0x3000;
        let next = u16::from_le_bytes([d[14], d[15]]) % (size + 2);
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&d, at).expect("descriptor");
    }
}

/// Runs one input through both walkers and the parser, checking every invariant above.
pub fn run(input: &[u8]) -> Outcome {
    let (size, head, image) = match input {
        [b, h0, h1, rest @ ..] => (1u16 << (b & 7), u16::from_le_bytes([*h0, *h1]), rest),
        _ => (1, 0, &[][..]),
    };
    let mem = guest_memory(image);
    if input.first().is_some_and(|b| b & 8 != 0) {
        fold(&mem, 0, size as u64, size);
        fold(&mem, INDIRECT, 64, size);
    }
    let regions = host_regions(&mem);
    // Avail ring: flags 0, idx 1, ring[0] = head.
    mem.write_obj(0u16, GuestAddress(AVAIL))
        .expect("avail flags");
    mem.write_obj(1u16, GuestAddress(AVAIL + 2))
        .expect("avail idx");
    mem.write_obj(head.to_le(), GuestAddress(AVAIL + 4))
        .expect("avail ring");
    let mut q = Queue::new(size).expect("queue");
    q.set_size(size);
    q.set_desc_table_address(Some(0), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_ready(true);
    assert!(q.is_valid(&mem), "queue layout");

    let mut pieces = Vec::new();
    let chain = q.iter(&mem).expect("avail ring").next().expect("one chain");
    assert_eq!(chain.head_index(), head);
    // SAFETY: `mem` lives until the end of this function, past every use of the pieces.
    let flat = unsafe { flatten(chain, &mem, &mut pieces) }.map(|()| pieces.len());
    if flat.is_ok() {
        check_pieces(&regions, &pieces, "request_parse::flatten");
    }
    let vq_pieces: Vec<(usize, usize, bool)> = pieces.iter().map(raw).collect();

    // SAFETY: as for `flatten`.
    let walked = unsafe { flatten_head(&mem, 0, size, head, &mut pieces) }.map(|()| pieces.len());
    let mut request = None;
    if walked.is_ok() {
        check_pieces(&regions, &pieces, "chain::flatten_head");
        let mine: Vec<(usize, usize, bool)> = pieces.iter().map(raw).collect();
        assert!(
            flat.is_ok(),
            "virtio-queue refused a chain plexd's walker accepted"
        );
        assert_eq!(mine, vq_pieces, "the two walkers disagree");
        let gpa = |p: usize| gpa_of(&regions, p).expect("status inside guest memory");
        request = Some(parse_checked(&pieces, gpa));
    }
    Outcome {
        flatten: flat,
        walker: walked,
        request,
    }
}
