//! Property tests for virtio-blk request parsing (`plexd::vhost::request`) and the
//! descriptor-chain walkers, against a byte-position model, plus the `request_parse` fuzz
//! target's logic on seeds and random inputs (so the suite exercises it without cargo-fuzz).
//!
//! - A valid request (header, data, status) split over any layout of pieces parses to the same
//!   kind, sector, data bytes and status location.
//! - The same through real descriptor chains in guest memory (direct or indirect tables,
//!   buffers straddling two memory regions, zero-length descriptors), walked by virtio-queue
//!   and by plexd's own walker.
//! - Garbage pieces and garbage descriptor tables never panic, never yield a piece outside the
//!   input, and agree with the model.
//! - A request of more than 4 GiB is refused (its used length would not fit in a u32).

#[path = "../../fuzz/src/request_parse.rs"]
mod request_parse;

use plexd::vhost::request::{parse, Kind, ParseError, Piece};
use proptest::prelude::*;
use request_parse::{parse_checked, run, Outcome, Request, AVAIL};

const CASES: u32 = 2000;

fn kind_of(t: u32) -> Kind {
    match t {
        0 => Kind::In,
        1 => Kind::Out,
        4 => Kind::Flush,
        8 => Kind::GetId,
        11 => Kind::Discard,
        13 => Kind::WriteZeroes,
        x => Kind::Unsupported(x),
    }
}

/// Whether the device writes the data of a request of type `t` (None: either is accepted).
fn device_writes(t: u32) -> Option<bool> {
    match t {
        0 | 8 => Some(true),
        1 | 11 | 13 => Some(false),
        _ => None,
    }
}

fn header(t: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&t.to_le_bytes());
    h[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    h
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A request and how to cut it.
#[derive(Debug, Clone)]
struct Shape {
    t: u32,
    sector: u64,
    data_len: usize,
    /// Data direction for types that accept either.
    data_writable: bool,
    /// Chunk sizes for the device-readable and device-writable byte streams (cycled).
    read_cuts: Vec<usize>,
    write_cuts: Vec<usize>,
    /// Gaps between chunks (cycled).
    gaps: Vec<usize>,
    seed: u64,
}

impl Shape {
    fn writes_data(&self) -> bool {
        device_writes(self.t).unwrap_or(self.data_writable)
    }

    fn data(&self) -> Vec<u8> {
        bytes(self.seed, self.data_len)
    }

    /// The two byte streams: (device-readable, device-writable); the status byte (0xEE) is
    /// the last writable byte.
    fn streams(&self) -> (Vec<u8>, Vec<u8>) {
        let mut r = header(self.t, self.sector).to_vec();
        let mut w = Vec::new();
        if self.writes_data() {
            w.extend(self.data());
        } else {
            r.extend(self.data());
        }
        w.push(0xEE);
        (r, w)
    }

    /// Chunks of both streams: (bytes, writable), at most about `max` per stream.
    fn chunks(&self, max: usize) -> Vec<(Vec<u8>, bool)> {
        let (r, w) = self.streams();
        let mut out = Vec::new();
        for (stream, cuts, writable) in [(r, &self.read_cuts, false), (w, &self.write_cuts, true)] {
            let min = stream.len().div_ceil(max);
            let mut pos = 0;
            let mut k = 0;
            while pos < stream.len() {
                let n = cuts[k % cuts.len()].max(min).min(stream.len() - pos);
                out.push((stream[pos..pos + n].to_vec(), writable));
                pos += n;
                k += 1;
            }
        }
        out
    }
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        prop_oneof![
            Just(0u32),
            Just(1u32),
            Just(4u32),
            Just(8u32),
            Just(11u32),
            Just(13u32),
            any::<u32>()
        ],
        any::<u64>(),
        0usize..3000,
        any::<bool>(),
        prop::collection::vec(1usize..600, 1..12),
        prop::collection::vec(1usize..600, 1..12),
        prop::collection::vec(0usize..64, 1..8),
        any::<u64>(),
    )
        .prop_map(
            |(t, sector, data_len, data_writable, read_cuts, write_cuts, gaps, seed)| Shape {
                t,
                sector,
                data_len,
                data_writable,
                read_cuts,
                write_cuts,
                gaps,
                seed,
            },
        )
}

/// Checks a parsed request against its shape.
fn check_request(s: &Shape, got: &Request, status_gpa: u64) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.kind, kind_of(s.t));
    prop_assert_eq!(got.sector, s.sector);
    prop_assert!(got.data == s.data(), "data bytes differ");
    if s.data_len > 0 {
        prop_assert_eq!(got.data_writable, Some(s.writes_data()));
    } else {
        prop_assert_eq!(got.data_writable, None);
    }
    prop_assert_eq!(got.status_gpa, status_gpa);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Pieces over a host buffer: any split of a valid request parses the same.
    #[test]
    fn valid_request_split_any_way_parses_the_same(s in shape()) {
        let chunks = s.chunks(usize::MAX);
        // Lay the chunks out in one arena with gaps (filled with 0x5A) between them.
        let mut arena = Vec::new();
        let mut offsets = Vec::new();
        for (k, (c, _)) in chunks.iter().enumerate() {
            arena.resize(arena.len() + s.gaps[k % s.gaps.len()], 0x5A);
            offsets.push(arena.len());
            arena.extend_from_slice(c);
        }
        arena.resize(arena.len() + 16, 0x5A);
        let base = arena.as_mut_ptr();
        let pieces: Vec<Piece> = chunks
            .iter()
            .zip(&offsets)
            // SAFETY: `off + c.len() <= arena.len()`: the chunk was copied there; `arena`
            // stays alive and unmoved, and is not borrowed, while the pieces are used.
            .map(|((c, w), off)| unsafe { Piece::new(base.add(*off), c.len(), *w) })
            .collect();
        let status_off = offsets.last().copied().unwrap_or(0) + chunks.last().map_or(1, |c| c.0.len()) - 1;
        let arena_range = base as usize..base as usize + arena.len();
        let r = parse_checked(&pieces, |p| (p - base as usize) as u64);
        let req = r.map_err(|e| TestCaseError::fail(format!("valid request refused: {e}")))?;
        check_request(&s, &req, status_off as u64)?;
        // And the raw API: data pieces inside the arena, data_len right.
        let mut data = Vec::new();
        let p = parse(&pieces, &mut data).expect("parsed above");
        prop_assert_eq!(p.data_len, s.data_len as u64);
        for d in &data {
            prop_assert!(arena_range.contains(&(d.as_ptr() as usize)));
            prop_assert!(d.as_ptr() as usize + d.len() <= arena_range.end);
        }
    }

    /// Garbage pieces over a host buffer never panic and never point outside it.
    #[test]
    fn garbage_pieces_never_panic(
        buf in prop::collection::vec(any::<u8>(), 1..512),
        raw in prop::collection::vec((any::<u16>(), any::<u16>(), any::<bool>()), 0..12),
    ) {
        let mut buf = buf;
        let n = buf.len();
        let base = buf.as_mut_ptr();
        let pieces: Vec<Piece> = raw
            .iter()
            .map(|(o, l, w)| {
                let off = *o as usize % n;
                let len = 1 + *l as usize % (n - off);
                // SAFETY: `off + len <= n`, inside `buf`, which stays alive and is not
                // borrowed while the pieces are used.
                unsafe { Piece::new(base.add(off), len, *w) }
            })
            .collect();
        let r = parse_checked(&pieces, |p| (p - base as usize) as u64);
        let mut data = Vec::new();
        if let Ok(req) = &r {
            prop_assert!(req.status_gpa < n as u64);
            let _ = parse(&pieces, &mut data);
            for d in &data {
                prop_assert!(d.as_ptr() as usize >= base as usize);
                prop_assert!(d.as_ptr() as usize + d.len() <= base as usize + n);
            }
        }
    }

    /// Valid requests as real descriptor chains in guest memory.
    #[test]
    fn chains_in_guest_memory_parse_the_same(
        s in shape(),
        size_exp in 3u8..8,
        head in any::<u16>(),
        indirect in any::<bool>(),
        zero_len in prop::collection::vec(any::<bool>(), 1..8),
        start in 0x2000u64..0x7c00,
    ) {
        let size = 1u16 << size_exp;
        let head = head % size;
        // At most 2 x 21 chunks (+ zero-length descriptors): fits a 64-entry indirect table.
        let chunks = s.chunks(20);
        // Descriptors: the chunks, with a zero-length descriptor now and then.
        let mut descs: Vec<(u64, u32, bool)> = Vec::new();
        let mut image = vec![0u8; 0x1_0000];
        let mut at = start;
        let mut status_gpa = 0;
        for (k, (c, w)) in chunks.iter().enumerate() {
            if zero_len[k % zero_len.len()] && k % 3 == 1 {
                descs.push((at, 0, !*w));
            }
            at += s.gaps[k % s.gaps.len()] as u64;
            prop_assume!(at + c.len() as u64 <= image.len() as u64);
            image[at as usize..at as usize + c.len()].copy_from_slice(c);
            descs.push((at, c.len() as u32, *w));
            at += c.len() as u64;
            status_gpa = at - 1;
        }
        let n = descs.len();
        let desc_bytes = |addr: u64, len: u32, flags: u16, next: u16| {
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..16].copy_from_slice(&next.to_le_bytes());
            d
        };
        let flags = |w: bool, more: bool| (if w { 2 } else { 0 }) | (if more { 1 } else { 0 });
        if indirect || n > size as usize {
            prop_assert!(n <= 64);
            let table = 0x1000u64;
            for (i, (a, l, w)) in descs.iter().enumerate() {
                let d = desc_bytes(*a, *l, flags(*w, i + 1 < n), (i + 1) as u16);
                image[table as usize + 16 * i..table as usize + 16 * (i + 1)].copy_from_slice(&d);
            }
            let d = desc_bytes(table, 16 * n as u32, 4, 0);
            image[16 * head as usize..16 * head as usize + 16].copy_from_slice(&d);
        } else {
            // Chain through distinct indices: head, then a stride walk of the table.
            let idx = |i: usize| ((head as usize + i * 5) % size as usize) as u16;
            for (i, (a, l, w)) in descs.iter().enumerate() {
                let d = desc_bytes(*a, *l, flags(*w, i + 1 < n), idx(i + 1));
                let at = 16 * idx(i) as usize;
                image[at..at + 16].copy_from_slice(&d);
            }
        }
        prop_assert!(start >= AVAIL + 0x400, "buffers above the rings");
        let mut input = vec![size_exp, head as u8, (head >> 8) as u8];
        input.extend_from_slice(&image);
        let out = run(&input);
        prop_assert_eq!(out.walker, out.flatten, "the walkers disagree");
        let req = match out.request {
            Some(Ok(r)) => r,
            other => return Err(TestCaseError::fail(format!("valid chain refused: {other:?}"))),
        };
        check_request(&s, &req, status_gpa)?;
    }

    /// The fuzz target's logic on random bytes.
    #[test]
    fn fuzz_logic_on_random_bytes(input in prop::collection::vec(any::<u8>(), 0..2048)) {
        run(&input);
    }

    /// The fuzz target's logic on random descriptor tables whose addresses mostly fall in
    /// guest memory (so chains get long, loop, nest and straddle regions).
    #[test]
    fn fuzz_logic_on_random_tables(
        size_exp in 0u8..8,
        head in 0u16..140,
        descs in prop::collection::vec((0u64..0x2_4000, 0u32..0x3000, 0u16..8, 0u16..140), 1..128),
    ) {
        let mut image = vec![0u8; 0x800];
        for (i, (a, l, f, n)) in descs.iter().enumerate().take(128) {
            let at = 16 * i;
            image[at..at + 8].copy_from_slice(&a.to_le_bytes());
            image[at + 8..at + 12].copy_from_slice(&l.to_le_bytes());
            image[at + 12..at + 14].copy_from_slice(&f.to_le_bytes());
            image[at + 14..at + 16].copy_from_slice(&n.to_le_bytes());
        }
        let mut input = vec![size_exp, head as u8, (head >> 8) as u8];
        input.extend_from_slice(&image);
        run(&input);
    }
}

/// Builds a fuzz input: queue size `1 << exp`, `head`, and descriptors (addr, len, flags,
/// next) at the start of the table; `extra` is (GPA, bytes) to place in memory.
fn seed(exp: u8, head: u16, descs: &[(u64, u32, u16, u16)], extra: &[(usize, &[u8])]) -> Vec<u8> {
    let mut image = vec![0u8; 0x1_0000];
    for (i, (a, l, f, n)) in descs.iter().enumerate() {
        let at = 16 * i;
        image[at..at + 8].copy_from_slice(&a.to_le_bytes());
        image[at + 8..at + 12].copy_from_slice(&l.to_le_bytes());
        image[at + 12..at + 14].copy_from_slice(&f.to_le_bytes());
        image[at + 14..at + 16].copy_from_slice(&n.to_le_bytes());
    }
    for (at, b) in extra {
        image[*at..*at + b.len()].copy_from_slice(b);
    }
    let mut v = vec![exp, head as u8, (head >> 8) as u8];
    v.extend_from_slice(&image);
    v
}

#[test]
fn fuzz_logic_on_seeds() {
    const N: u16 = 1;
    const W: u16 = 2;
    const I: u16 = 4;
    let h = header(0, 7);
    let read = seed(
        4,
        0,
        &[
            (0x2000, 16, N, 1),
            (0x7f00, 512, W | N, 2),
            (0x3000, 1, W, 0),
        ],
        &[(0x2000, &h[..])],
    );
    // A valid read whose data straddles the two memory regions.
    let out = run(&read);
    assert_eq!(out.walker, Ok(4), "{out:?}");
    let req = out.request.expect("walked").expect("parsed");
    assert_eq!((req.kind, req.sector, req.data.len()), (Kind::In, 7, 512));
    assert_eq!(req.status_gpa, 0x3000);
    // The same through an indirect table at 0x1000.
    let mut ind = seed(4, 5, &[], &[(0x2000, &h[..])]);
    let table: Vec<u8> = [
        (0x2000u64, 16u32, N, 1u16),
        (0x7f00, 512, W | N, 2),
        (0x3000, 1, W, 0),
    ]
    .iter()
    .flat_map(|(a, l, f, n)| {
        let mut d = a.to_le_bytes().to_vec();
        d.extend(l.to_le_bytes());
        d.extend(f.to_le_bytes());
        d.extend(n.to_le_bytes());
        d
    })
    .collect();
    ind[3 + 0x1000..3 + 0x1000 + 48].copy_from_slice(&table);
    let head5 = [0x00u8, 0x10, 0, 0, 0, 0, 0, 0, 48, 0, 0, 0, 4, 0, 0, 0];
    ind[3 + 80..3 + 96].copy_from_slice(&head5);
    let out = run(&ind);
    assert!(
        matches!(out.request, Some(Ok(ref r)) if r.kind == Kind::In && r.data.len() == 512),
        "{out:?}"
    );

    // Refused by plexd's walker, and by the reference walker `request_parse::flatten` with
    // `flatten` (Ok(0) is an empty chain, which `parse` then refuses).
    let refused = |name: &str, input: Vec<u8>, flatten: Result<usize, ParseError>| {
        let out: Outcome = run(&input);
        assert!(
            out.walker.is_err(),
            "{name}: plexd's walker accepted: {out:?}"
        );
        assert!(out.request.is_none(), "{name}: {out:?}");
        assert_eq!(out.flatten, flatten, "{name}: request_parse::flatten");
    };
    let too_long = || Err(ParseError::TooLong);
    let bad_address = || Err(ParseError::BadAddress);
    // Loop back to the header; status loops on itself; chain longer than the queue.
    refused(
        "loop",
        seed(
            4,
            0,
            &[
                (0x2000, 16, N, 1),
                (0x3000, 512, W | N, 2),
                (0x4000, 1, W | N, 0),
            ],
            &[(0x2000, &h[..])],
        ),
        too_long(),
    );
    refused(
        "self loop",
        seed(
            4,
            0,
            &[(0x2000, 16, N, 1), (0x3000, 239, W | N, 1)],
            &[(0x2000, &h[..])],
        ),
        too_long(),
    );
    let mut long: Vec<(u64, u32, u16, u16)> =
        (0..16).map(|i| (0x3000, 512, W | N, i + 1)).collect();
    long[0] = (0x2000, 16, N, 1);
    long[15].3 = 0;
    refused(
        "longer than the queue",
        seed(4, 0, &long, &[(0x2000, &h[..])]),
        too_long(),
    );
    // Next index past the queue; head past the queue.
    refused(
        "next past the queue",
        seed(4, 0, &[(0x2000, 16, N, 200)], &[(0x2000, &h[..])]),
        too_long(),
    );
    refused(
        "head past the queue",
        seed(4, 16, &[(0x2000, 16, 0, 0)], &[(0x2000, &h[..])]),
        Ok(0),
    );
    // Nested indirect: table at 0x1000 whose second entry is itself indirect.
    refused(
        "nested indirect",
        seed(
            4,
            0,
            &[(0x1000, 32, I, 0)],
            &[
                (
                    0x1000,
                    &[
                        0x00u8, 0x20, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 1, 0, 1, 0, 0x00, 0x11, 0, 0,
                        0, 0, 0, 0, 16, 0, 0, 0, 4, 0, 0, 0,
                    ][..],
                ),
                (0x2000, &h[..]),
            ],
        ),
        too_long(),
    );
    // Buffers in the hole between regions, past the end, wrapping.
    refused(
        "in the hole",
        seed(
            4,
            0,
            &[(0x2000, 16, N, 1), (0x1_8000, 1, W, 0)],
            &[(0x2000, &h[..])],
        ),
        bad_address(),
    );
    refused(
        "wrapping",
        seed(
            4,
            0,
            &[(0x2000, 16, N, 1), (u64::MAX - 3, 16, W, 0)],
            &[(0x2000, &h[..])],
        ),
        bad_address(),
    );
    refused(
        "straddling the hole",
        seed(
            4,
            0,
            &[(0x2000, 16, N, 1), (0xff00, 0x200, W, 0)],
            &[(0x2000, &h[..])],
        ),
        bad_address(),
    );
    // Short inputs.
    for n in 0..4 {
        run(&read[..n]);
    }
}

#[test]
fn request_larger_than_4gib_is_refused() {
    const GIB: usize = 1 << 30;
    // One GiB of address space (nothing but the header page is ever touched); pieces alias it.
    // SAFETY: a fresh private anonymous mapping; it affects no existing object.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            GIB,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let base = p.cast::<u8>();
    let h = header(0, 0);
    // SAFETY: the mapping is at least 16 bytes long and writable.
    unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), base, 16) };
    // SAFETY: every piece lies in the mapping (at most 1 GiB from its start), which stays
    // mapped, and is not borrowed, while the pieces are used.
    let piece = |len: usize, writable: bool| unsafe { Piece::new(base, len, writable) };
    let mut data = Vec::new();
    // 16 + 4 x 1 GiB - 17 = u32::MAX bytes in all: the largest request that can be answered.
    let mut pieces = vec![
        piece(16, false),
        piece(GIB, true),
        piece(GIB, true),
        piece(GIB, true),
        piece(GIB - 17, true),
    ];
    let ok = parse(&pieces, &mut data).expect("a chain of u32::MAX bytes");
    assert_eq!(ok.data_len, u32::MAX as u64 - 17);
    // One byte more: refused (before, a read of 4 GiB - 1 bytes overflowed the used length).
    pieces[4] = piece(GIB - 16, true);
    assert_eq!(parse(&pieces, &mut data).unwrap_err(), ParseError::TooLarge);
    pieces.push(piece(GIB, true));
    assert_eq!(parse(&pieces, &mut data).unwrap_err(), ParseError::TooLarge);
    // SAFETY: unmapping the mapping made above; nothing refers to it any more.
    unsafe { libc::munmap(p, GIB) };
}
