//! Sets of a volume's regions (the units of dirty region logging) and the mapping between
//! regions and blocks.
//!
//! - [`RegionSet`]: a fixed-size bitset of regions, built once by the control side (a map read
//!   from disk, the todo list of a copy) and then only read. Not for the I/O path, which keeps
//!   its own atomic words.
//! - [`RegionGeometry`]: which blocks region `r` covers: `[r·region_blocks, (r+1)·region_blocks)`,
//!   the last region cut short at the volume's end.
//!
//! The on-disk bitmap that [`RegionSet::from_pages`] and [`RegionSet::write_page`] read and
//! write is the dirty region log's page format without its trailer: pages of `bits_per_page`
//! bits, region `r` in page `r / bits_per_page`, byte `(r % bits_per_page) / 8`, bit `r % 8`
//! counted from the least significant bit. Word `i` of [`RegionSet::words`] holds regions
//! `64·i .. 64·i+64`, bit `j` being region `64·i + j`; as `bits_per_page` is a multiple of 64
//! for every page size the log uses, those words are the pages' bytes read as little-endian
//! `u64`s, page after page.

use std::ops::Range;

/// Regions per word.
const WORD_BITS: u64 = 64;

/// A set of regions `0..nregions`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegionSet {
    /// Bit `r % 64` of word `r / 64` is region `r`; bits at or beyond `nregions` are zero.
    words: Vec<u64>,
    /// The number of regions the set is over.
    nregions: u64,
}

/// Why a bitmap could not be read into (or written from) a [`RegionSet`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapError {
    /// The page size gives no usable bit count.
    #[error("a bitmap page must hold a positive multiple of 8 bits, not {0}")]
    BitsPerPage(u64),
    /// Fewer pages than the regions need.
    #[error("the bitmap of {nregions} regions needs {need} pages; only {have} were given")]
    MissingPages {
        /// Regions of the map.
        nregions: u64,
        /// Pages needed.
        need: u64,
        /// Pages given.
        have: u64,
    },
    /// A page shorter than its bits.
    #[error("bitmap page {page} has {len} bytes; its bits need {need}")]
    ShortPage {
        /// Page index.
        page: u64,
        /// Bytes given.
        len: usize,
        /// Bytes needed.
        need: u64,
    },
}

impl RegionSet {
    /// An empty set over `nregions` regions.
    pub fn new(nregions: u64) -> RegionSet {
        RegionSet {
            words: vec![0; word_count(nregions)],
            nregions,
        }
    }

    /// The set of every region `0..nregions`.
    pub fn full(nregions: u64) -> RegionSet {
        let mut s = RegionSet {
            words: vec![u64::MAX; word_count(nregions)],
            nregions,
        };
        s.mask_tail();
        s
    }

    /// The set whose word `i` bit `j` is region `64·i + j` (see the module doc). Words missing
    /// from `words` read as zero; bits at or beyond `nregions` are dropped.
    pub fn from_words(nregions: u64, words: &[u64]) -> RegionSet {
        let mut s = RegionSet::new(nregions);
        let n = s.words.len().min(words.len());
        s.words[..n].copy_from_slice(&words[..n]);
        s.mask_tail();
        s
    }

    /// The set read from the bit bytes of a bitmap's pages, in page order (see the module doc).
    /// Each page must hold at least the bytes of its regions; anything after them (the rest of
    /// the page, a trailer) is ignored, and so are pages beyond the last one needed.
    pub fn from_pages<'a>(
        nregions: u64,
        bits_per_page: u64,
        pages: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<RegionSet, BitmapError> {
        check_bits_per_page(bits_per_page)?;
        let need = nregions.div_ceil(bits_per_page);
        let mut s = RegionSet::new(nregions);
        let mut have = 0;
        for (page, bytes) in (0..need).zip(pages) {
            have += 1;
            let first = page * bits_per_page;
            let nbytes = page_bytes_needed(nregions, bits_per_page, page);
            if (bytes.len() as u64) < nbytes {
                return Err(BitmapError::ShortPage {
                    page,
                    len: bytes.len(),
                    need: nbytes,
                });
            }
            for (i, &b) in bytes.iter().take(nbytes as usize).enumerate() {
                if b != 0 {
                    // `first` is a multiple of 8, so a byte never straddles two words.
                    let r = first + 8 * i as u64;
                    s.words[(r / WORD_BITS) as usize] |= u64::from(b) << (r % WORD_BITS);
                }
            }
        }
        if have < need {
            return Err(BitmapError::MissingPages {
                nregions,
                need,
                have,
            });
        }
        s.mask_tail();
        Ok(s)
    }

    /// Writes page `page` of the bitmap (pages of `bits_per_page` bits) into the first
    /// `bits_per_page / 8` bytes of `out`; bits of regions at or beyond `nregions` are zero.
    /// The rest of `out` is left alone.
    pub fn write_page(
        &self,
        page: u64,
        bits_per_page: u64,
        out: &mut [u8],
    ) -> Result<(), BitmapError> {
        check_bits_per_page(bits_per_page)?;
        let nbytes = bits_per_page / 8;
        if (out.len() as u64) < nbytes {
            return Err(BitmapError::ShortPage {
                page,
                len: out.len(),
                need: nbytes,
            });
        }
        let first = page.saturating_mul(bits_per_page);
        for (i, b) in out.iter_mut().take(nbytes as usize).enumerate() {
            let r = first + 8 * i as u64;
            *b = if r < self.nregions {
                (self.words[(r / WORD_BITS) as usize] >> (r % WORD_BITS)) as u8
            } else {
                0
            };
        }
        Ok(())
    }

    /// The number of regions the set is over (not the number in it: see [`RegionSet::count`]).
    pub fn nregions(&self) -> u64 {
        self.nregions
    }

    /// The words of the set (see the module doc); the bits beyond `nregions` are zero.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Adds region `r`; returns whether it was not in the set yet.
    ///
    /// # Panics
    /// If `r >= nregions`: a region outside the volume is a caller's bug, and dropping it
    /// silently could leave a dirty region out of a resync.
    pub fn insert(&mut self, r: u64) -> bool {
        assert!(
            r < self.nregions,
            "region {r} is outside a set of {} regions",
            self.nregions
        );
        let (w, bit) = locate(r);
        let was = self.words[w] & bit != 0;
        self.words[w] |= bit;
        !was
    }

    /// Adds every region of `range`; regions at or beyond `nregions` are ignored.
    pub fn insert_range(&mut self, range: Range<u64>) {
        self.apply_range(range, |w, mask| *w |= mask);
    }

    /// Removes every region of `range`; regions at or beyond `nregions` are ignored.
    pub fn clear_range(&mut self, range: Range<u64>) {
        self.apply_range(range, |w, mask| *w &= !mask);
    }

    /// Whether region `r` is in the set (never for `r >= nregions`).
    pub fn contains(&self, r: u64) -> bool {
        if r >= self.nregions {
            return false;
        }
        let (w, bit) = locate(r);
        self.words[w] & bit != 0
    }

    /// Adds every region of `other`. Regions of `other` at or beyond this set's `nregions`
    /// are dropped (both sets normally describe the same volume).
    pub fn union_with(&mut self, other: &RegionSet) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
        self.mask_tail();
    }

    /// Whether no region is in the set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The number of regions in the set.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The number of regions of `range` in the set.
    pub fn count_in(&self, range: Range<u64>) -> u64 {
        let mut n = 0;
        self.for_range(range, |w, mask| n += u64::from((w & mask).count_ones()));
        n
    }

    /// The first region at or after `from` in the set.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        self.next_with(from, |w| w)
    }

    /// The first region at or after `from` (and below `nregions`) not in the set.
    pub fn next_clear(&self, from: u64) -> Option<u64> {
        self.next_with(from, |w| !w)
    }

    /// The regions in the set, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let r = self.next_set(at)?;
            at = r + 1;
            Some(r)
        })
    }

    /// The maximal runs `[first, end)` of regions in the set, in ascending order.
    pub fn iter_ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let first = self.next_set(at)?;
            let end = self.next_clear(first).unwrap_or(self.nregions);
            at = end;
            Some(first..end)
        })
    }

    /// The first region at or after `from` whose bit, after `view` (identity or negation),
    /// is set.
    fn next_with(&self, from: u64, view: impl Fn(u64) -> u64) -> Option<u64> {
        if from >= self.nregions {
            return None;
        }
        let mut w = (from / WORD_BITS) as usize;
        let mut bits = view(self.words[w]) & (u64::MAX << (from % WORD_BITS));
        loop {
            if bits != 0 {
                let r = w as u64 * WORD_BITS + u64::from(bits.trailing_zeros());
                return (r < self.nregions).then_some(r);
            }
            w += 1;
            bits = view(*self.words.get(w)?);
        }
    }

    /// Calls `f` with each word overlapping `range` (clamped to `nregions`) and the mask of
    /// the range's bits in it.
    fn for_range(&self, range: Range<u64>, mut f: impl FnMut(u64, u64)) {
        for (w, mask) in word_masks(range, self.nregions) {
            f(self.words[w], mask);
        }
    }

    /// [`RegionSet::for_range`], mutably.
    fn apply_range(&mut self, range: Range<u64>, mut f: impl FnMut(&mut u64, u64)) {
        for (w, mask) in word_masks(range, self.nregions) {
            f(&mut self.words[w], mask);
        }
    }

    /// Clears the bits at or beyond `nregions` in the last word.
    fn mask_tail(&mut self) {
        let rem = self.nregions % WORD_BITS;
        if rem != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << rem) - 1;
            }
        }
    }
}

/// Words needed for `nregions` bits.
fn word_count(nregions: u64) -> usize {
    nregions.div_ceil(WORD_BITS) as usize
}

/// The word index and bit mask of region `r`.
fn locate(r: u64) -> (usize, u64) {
    ((r / WORD_BITS) as usize, 1u64 << (r % WORD_BITS))
}

/// The words overlapping `range ∩ [0, nregions)` with the mask of its bits in each.
fn word_masks(range: Range<u64>, nregions: u64) -> impl Iterator<Item = (usize, u64)> {
    let start = range.start.min(nregions);
    let end = range.end.min(nregions).max(start);
    let (first_w, last_w) = (start / WORD_BITS, end.div_ceil(WORD_BITS));
    (first_w..last_w).map(move |w| {
        let lo = (w * WORD_BITS).max(start) - w * WORD_BITS;
        let hi = ((w + 1) * WORD_BITS).min(end) - w * WORD_BITS;
        let high = if hi == WORD_BITS {
            u64::MAX
        } else {
            (1u64 << hi) - 1
        };
        (w as usize, high & (u64::MAX << lo))
    })
}

/// Checks that pages of `bits_per_page` bits can be read and written bytewise.
fn check_bits_per_page(bits_per_page: u64) -> Result<(), BitmapError> {
    if bits_per_page == 0 || !bits_per_page.is_multiple_of(8) {
        return Err(BitmapError::BitsPerPage(bits_per_page));
    }
    Ok(())
}

/// Bytes of page `page` that hold regions below `nregions`.
fn page_bytes_needed(nregions: u64, bits_per_page: u64, page: u64) -> u64 {
    let first = page * bits_per_page;
    nregions
        .saturating_sub(first)
        .min(bits_per_page)
        .div_ceil(8)
}

/// How a volume of `volume_blocks` blocks is cut into regions of `region_blocks` blocks (the
/// last one may be shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionGeometry {
    /// Blocks per region (positive; a power of two for mirrors, a power-of-two number of rows
    /// for RAID-5, so not always a power of two).
    region_blocks: u64,
    /// The volume's length in blocks.
    volume_blocks: u64,
}

impl RegionGeometry {
    /// The geometry of regions of `region_blocks` blocks over `volume_blocks` blocks; `None`
    /// when `region_blocks` is 0.
    pub fn new(region_blocks: u64, volume_blocks: u64) -> Option<RegionGeometry> {
        (region_blocks > 0).then_some(RegionGeometry {
            region_blocks,
            volume_blocks,
        })
    }

    /// Blocks per region.
    pub fn region_blocks(&self) -> u64 {
        self.region_blocks
    }

    /// The volume's length in blocks.
    pub fn volume_blocks(&self) -> u64 {
        self.volume_blocks
    }

    /// The number of regions: `ceil(volume_blocks / region_blocks)`.
    pub fn nregions(&self) -> u64 {
        self.volume_blocks.div_ceil(self.region_blocks)
    }

    /// The blocks of region `r`: `[r·region_blocks, (r+1)·region_blocks)` cut at the volume's
    /// end (empty for a region beyond it).
    pub fn blocks_of(&self, r: u64) -> Range<u64> {
        self.blocks_of_regions(r..r.saturating_add(1))
    }

    /// The blocks of the regions `regions`, cut at the volume's end.
    pub fn blocks_of_regions(&self, regions: Range<u64>) -> Range<u64> {
        let start = regions
            .start
            .saturating_mul(self.region_blocks)
            .min(self.volume_blocks);
        let end = regions
            .end
            .saturating_mul(self.region_blocks)
            .min(self.volume_blocks)
            .max(start);
        start..end
    }

    /// The regions that hold any block of `blocks` (cut at the volume's end): the regions a
    /// write of those blocks dirties.
    pub fn regions_of(&self, blocks: Range<u64>) -> Range<u64> {
        let end = blocks.end.min(self.volume_blocks);
        if blocks.start >= end {
            let r = self.nregions().min(blocks.start / self.region_blocks);
            return r..r;
        }
        blocks.start / self.region_blocks..end.div_ceil(self.region_blocks)
    }

    /// The number of blocks the regions of `set` cover (the last region counts only its
    /// blocks inside the volume).
    pub fn blocks_in(&self, set: &RegionSet) -> u64 {
        set.iter_ranges()
            .map(|r| {
                let b = self.blocks_of_regions(r);
                b.end - b.start
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn new_and_full() {
        let e = RegionSet::new(130);
        assert!(e.is_empty());
        assert_eq!(e.count(), 0);
        assert_eq!(e.next_set(0), None);
        assert_eq!(e.next_clear(129), Some(129));
        let f = RegionSet::full(130);
        assert_eq!(f.count(), 130);
        assert!(f.contains(129));
        assert!(!f.contains(130));
        assert_eq!(f.next_clear(0), None);
        assert_eq!(f.words()[2], 0b11, "no bit beyond nregions");
        assert_eq!(f.iter_ranges().collect::<Vec<_>>(), vec![0..130]);
        assert_eq!(RegionSet::full(0).count(), 0);
        assert_eq!(RegionSet::full(64).words(), &[u64::MAX]);
    }

    #[test]
    fn insert_contains_and_runs() {
        let mut s = RegionSet::new(200);
        assert!(s.insert(3));
        assert!(!s.insert(3));
        for r in [4, 5, 63, 64, 65, 199] {
            s.insert(r);
        }
        assert!(s.contains(64));
        assert!(!s.contains(6));
        assert_eq!(s.count(), 7);
        assert_eq!(s.count_in(4..65), 4);
        assert_eq!(s.count_in(150..1000), 1);
        assert_eq!(s.next_set(6), Some(63));
        assert_eq!(s.next_set(200), None);
        assert_eq!(s.next_clear(63), Some(66));
        assert_eq!(
            s.iter_ranges().collect::<Vec<_>>(),
            vec![3..6, 63..66, 199..200]
        );
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 4, 5, 63, 64, 65, 199]);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn insert_outside_panics() {
        RegionSet::new(10).insert(10);
    }

    #[test]
    fn ranges_clamp_to_the_set() {
        let mut s = RegionSet::new(100);
        s.insert_range(90..1000);
        assert_eq!(s.count(), 10);
        s.clear_range(95..u64::MAX);
        assert_eq!(s.iter_ranges().collect::<Vec<_>>(), vec![90..95]);
        let (from, to) = (50, 40);
        s.insert_range(from..to);
        assert_eq!(s.count(), 5, "a reversed range adds nothing");
        let mut t = RegionSet::full(300);
        t.clear_range(0..128);
        t.clear_range(190..191);
        assert_eq!(
            t.iter_ranges().collect::<Vec<_>>(),
            vec![128..190, 191..300]
        );
    }

    #[test]
    fn union_drops_regions_outside() {
        let mut a = RegionSet::new(70);
        a.insert(1);
        let mut b = RegionSet::new(200);
        b.insert(2);
        b.insert(69);
        b.insert(70);
        b.insert(150);
        a.union_with(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![1, 2, 69]);
        let mut c = RegionSet::new(200);
        c.union_with(&a);
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![1, 2, 69]);
    }

    #[test]
    fn from_words_masks_and_fills() {
        let s = RegionSet::from_words(70, &[1 << 5, u64::MAX, 7]);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![5, 64, 65, 66, 67, 68, 69]
        );
        let short = RegionSet::from_words(200, &[1]);
        assert_eq!(short.iter().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn pages_use_the_on_disk_bit_order() {
        // 16 bits per page: region 9 is page 0, byte 1, bit 1; region 16 is page 1 byte 0 bit 0.
        let p0 = [0b0000_0001u8, 0b0000_0010];
        let p1 = [0b1000_0001u8, 0xff, 0xde, 0xad];
        let s = RegionSet::from_pages(24, 16, [&p0[..], &p1[..]]).unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 9, 16, 23]);
        // Bytes past the last region (p1[1..]) are not regions.
        assert_eq!(s.count(), 4);
        let mut out = [0xaau8; 3];
        s.write_page(1, 16, &mut out).unwrap();
        assert_eq!(out, [0b1000_0001, 0, 0xaa], "bits beyond nregions are 0");
        // A 26-region set: the last page's second byte holds regions 24 and 25 only.
        let p1 = [0u8, 0xff];
        let s = RegionSet::from_pages(26, 16, [&p0[..], &p1[..]]).unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 9, 24, 25]);
    }

    #[test]
    fn pages_are_words_in_little_endian() {
        let bpp = (4096 - 32) * 8;
        let mut s = RegionSet::new(3 * bpp);
        for r in [0, 7, 8, 63, 64, bpp - 1, bpp, 2 * bpp + 100] {
            s.insert(r);
        }
        let mut bytes = vec![0u8; 3 * 4096];
        for (p, page) in bytes.chunks_mut(4096).enumerate() {
            s.write_page(p as u64, bpp, page).unwrap();
        }
        let back = RegionSet::from_pages(3 * bpp, bpp, bytes.chunks(4096)).unwrap();
        assert_eq!(back, s);
        let words: Vec<u64> = bytes
            .chunks(4096)
            .flat_map(|p| p[..bpp as usize / 8].chunks(8))
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(words, s.words());
    }

    #[test]
    fn bad_pages_are_errors() {
        let p = [0u8; 2];
        assert_eq!(
            RegionSet::from_pages(40, 16, [&p[..], &p[..]]),
            Err(BitmapError::MissingPages {
                nregions: 40,
                need: 3,
                have: 2
            })
        );
        assert_eq!(
            RegionSet::from_pages(26, 16, [&p[..], &p[..1]]),
            Err(BitmapError::ShortPage {
                page: 1,
                len: 1,
                need: 2
            })
        );
        // A page needs only the bytes of its regions.
        assert!(RegionSet::from_pages(20, 16, [&p[..], &p[..1]]).is_ok());
        assert_eq!(
            RegionSet::from_pages(40, 12, [&p[..]]),
            Err(BitmapError::BitsPerPage(12))
        );
        assert!(RegionSet::from_pages(40, 0, [&p[..]]).is_err());
        assert!(RegionSet::from_pages(0, 16, std::iter::empty())
            .unwrap()
            .is_empty());
        let mut out = [0u8; 1];
        assert!(matches!(
            RegionSet::new(8).write_page(0, 16, &mut out),
            Err(BitmapError::ShortPage { .. })
        ));
    }

    #[test]
    fn geometry_maps_regions_to_blocks() {
        assert!(RegionGeometry::new(0, 10).is_none());
        // 10 regions of 128 blocks and a short last one of 40.
        let g = RegionGeometry::new(128, 1320).unwrap();
        assert_eq!(g.nregions(), 11);
        assert_eq!(g.blocks_of(0), 0..128);
        assert_eq!(g.blocks_of(10), 1280..1320);
        assert_eq!(g.blocks_of(11), 1320..1320);
        assert_eq!(g.blocks_of(u64::MAX), 1320..1320);
        assert_eq!(g.blocks_of_regions(2..4), 256..512);
        assert_eq!(g.regions_of(0..1), 0..1);
        assert_eq!(g.regions_of(127..129), 0..2);
        assert_eq!(g.regions_of(128..256), 1..2);
        assert_eq!(g.regions_of(1300..5000), 10..11);
        assert_eq!(g.regions_of(200..200), 1..1);
        assert_eq!(g.regions_of(5000..6000), 11..11);
        let mut s = RegionSet::new(g.nregions());
        s.insert(1);
        s.insert(2);
        s.insert(10);
        assert_eq!(g.blocks_in(&s), 256 + 40);
        // RAID-5 regions need not be a power of two: 2 rows of 3 × 32 blocks.
        let r5 = RegionGeometry::new(192, 1000).unwrap();
        assert_eq!(r5.nregions(), 6);
        assert_eq!(r5.regions_of(190..200), 0..2);
        assert_eq!(r5.blocks_of(5), 960..1000);
    }

    fn model_case() -> impl Strategy<Value = (u64, Vec<(u8, u64, u64)>)> {
        (0u64..300).prop_flat_map(|n| {
            (
                Just(n),
                proptest::collection::vec((0u8..4, 0..n + 70, 0..n + 70), 0..40),
            )
        })
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreeset((n, ops) in model_case()) {
            let mut s = RegionSet::new(n);
            let mut m = BTreeSet::new();
            for (op, a, b) in ops {
                match op {
                    0 => {
                        if a < n {
                            prop_assert_eq!(s.insert(a), m.insert(a));
                        }
                    }
                    1 => {
                        s.insert_range(a..b);
                        m.extend((a..b).filter(|&r| r < n));
                    }
                    2 => {
                        s.clear_range(a..b);
                        m.retain(|&r| !(a..b).contains(&r));
                    }
                    _ => {
                        let mut o = RegionSet::new(n + a % 3);
                        o.insert_range(b..b + 5);
                        s.union_with(&o);
                        m.extend((b..b + 5).filter(|&r| r < n));
                    }
                }
                prop_assert_eq!(s.count(), m.len() as u64);
                prop_assert_eq!(s.count_in(a..b), m.range(a..b.max(a)).count() as u64);
                prop_assert_eq!(s.contains(a), m.contains(&a));
                prop_assert_eq!(s.next_set(a), m.range(a..).next().copied());
                prop_assert_eq!(
                    s.next_clear(a),
                    (a..n).find(|r| !m.contains(r))
                );
                prop_assert_eq!(s.iter().collect::<Vec<_>>(), m.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(s.is_empty(), m.is_empty());
            }
            // Runs: maximal, ascending, and exactly the members.
            let runs: Vec<Range<u64>> = s.iter_ranges().collect();
            for w in runs.windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
            let flat: Vec<u64> = runs.iter().flat_map(|r| r.clone()).collect();
            prop_assert_eq!(flat, m.iter().copied().collect::<Vec<_>>());
            // Pages round trip for any page size that is a multiple of 8 bits.
            for bpp in [8u64, 24, 64, 136] {
                let pages = n.div_ceil(bpp);
                let mut bytes = vec![0u8; (pages * bpp / 8) as usize];
                for (p, page) in bytes.chunks_mut((bpp / 8) as usize).enumerate() {
                    s.write_page(p as u64, bpp, page).unwrap();
                }
                let back = RegionSet::from_pages(n, bpp, bytes.chunks((bpp / 8) as usize)).unwrap();
                prop_assert_eq!(&back, &s);
                prop_assert_eq!(RegionSet::from_words(n, s.words()), s.clone());
            }
        }
    }
}
