//! Arbitrary bytes as a dirty region log's header page and as the copies of one bitmap page,
//! through `plexd_engine::volume::drl::format`: no panic; a header that decodes is canonical;
//! a merge is what the read rules say (OR of the current copies, zeros for an older M epoch,
//! all ones when no copy is valid, nothing past the last region).
//!
//! Input: byte 0 picks the page size (`4096 << (b % 5)`, capped at 65536) and the page kind,
//! bytes 1–8 the map's region count and the expected epoch, the rest is cut into two page
//! copies (zero-padded). Each copy is tried as is and "sealed" (a correct trailer and crc, the
//! trailer's index and epoch from the input), so that merges reach the OR and epoch rules that
//! the checksum otherwise keeps the fuzzer from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use plexd_engine::volume::drl::format::{
    bits_per_page, get_bit, merge_pages, read_trailer, seal_page, DrlGeometry, DrlHeader,
    MergeSource, PageKind, PageTrailer, DRL_MAGIC, DRL_VERSION, HEADER_CRC_OFFSET, HEADER_LEN,
    MAX_PAGE_SIZE, TRAILER_LEN,
};
use plexd_engine::volume::ondisk::format::crc32c;

fn check_header(data: &[u8]) {
    if let Ok(h) = DrlHeader::decode(data) {
        let mut again = vec![0; h.geometry.page_size() as usize];
        h.encode(&mut again).expect("a decoded header encodes");
        assert_eq!(
            &again[..HEADER_LEN],
            &data[..HEADER_LEN],
            "header decode is not canonical"
        );
        h.check_matches(&h).expect("a header matches itself");
    }
}

/// `data` zero-padded to a header, with the right magic, version and crc.
fn sealed_header(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    if b.len() < HEADER_LEN {
        b.resize(HEADER_LEN, 0);
    }
    b[..8].copy_from_slice(&DRL_MAGIC);
    b[8..12].copy_from_slice(&DRL_VERSION.to_le_bytes());
    let crc = crc32c(&b[..HEADER_CRC_OFFSET]);
    b[HEADER_CRC_OFFSET..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    b
}

fn check_merge(data: &[u8]) {
    let Some((&b0, rest)) = data.split_first() else {
        return;
    };
    let page = (4096usize << (b0 % 5)).min(MAX_PAGE_SIZE);
    let kind = if b0 & 0x80 == 0 {
        PageKind::Dirty
    } else {
        PageKind::Missed
    };
    let mut word = [0u8; 8];
    let n = rest.len().min(8);
    word[..n].copy_from_slice(&rest[..n]);
    let rest = &rest[n..];
    // Up to two bitmaps' worth of regions, so that the last page is sometimes partial.
    let bpp = bits_per_page(page) as u64;
    let nregions = 1 + u64::from(u32::from_le_bytes([word[0], word[1], word[2], 0])) % (2 * bpp);
    let epoch = u64::from(word[3] % 4);
    let g = DrlGeometry::new(1, nregions, page as u32).expect("a valid geometry");
    let expected = PageTrailer {
        kind,
        index: u32::from(word[4] % 2).min(g.pages() - 1),
        epoch,
    };
    let half = rest.len().div_ceil(2);
    let mut copies = [rest[..half].to_vec(), rest[half..].to_vec()];
    let mut out = vec![0; page];
    // As is (mostly the wrong length or no valid trailer), then padded and sealed.
    let o = merge_pages(&g, &expected, copies.iter().map(|c| &c[..]), &mut out)
        .expect("merge of any copies");
    check_outcome(&g, &expected, &copies, &out, o.source);
    for (i, c) in copies.iter_mut().enumerate() {
        c.resize(page, 0);
        let t = PageTrailer {
            kind: if word[5 + i] & 1 == 0 {
                kind
            } else {
                PageKind::Missed
            },
            index: expected.index,
            epoch: u64::from(word[6 + i] % 4),
        };
        seal_page(c, &t).expect("a page of a page size seals");
    }
    let o = merge_pages(&g, &expected, copies.iter().map(|c| &c[..]), &mut out)
        .expect("merge of any copies");
    check_outcome(&g, &expected, &copies, &out, o.source);
}

/// The merged page is what the read rules say.
fn check_outcome(
    g: &DrlGeometry,
    expected: &PageTrailer,
    copies: &[Vec<u8>],
    out: &[u8],
    source: MergeSource,
) {
    let bits = out.len() - TRAILER_LEN;
    assert!(out[bits..].iter().all(|&b| b == 0), "the trailer is zeroed");
    let regions = g.regions_in_page(expected.index);
    assert!(
        (regions..bits * 8).all(|i| !get_bit(out, i)),
        "a bit past the last region"
    );
    let current: Vec<&Vec<u8>> = copies
        .iter()
        .filter(|c| c.len() == out.len() && read_trailer(c).ok() == Some(*expected))
        .collect();
    let older_m = copies.iter().any(|c| {
        c.len() == out.len()
            && read_trailer(c).is_ok_and(|t| {
                t.kind == PageKind::Missed
                    && expected.kind == PageKind::Missed
                    && t.index == expected.index
                    && t.epoch < expected.epoch
            })
    });
    for i in 0..regions {
        let want = if !current.is_empty() {
            current.iter().any(|c| get_bit(c, i))
        } else {
            !older_m
        };
        assert_eq!(get_bit(out, i), want, "region {i} of {source:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    check_header(data);
    check_header(&sealed_header(data));
    check_merge(data);
});
