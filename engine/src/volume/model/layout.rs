//! The block mapping of one plex onto its targets (disks, or later sub-volumes).
//!
//! A plex is one copy of a volume's data, built from [`Extent`]s of targets. A concat plex lays
//! its extents end to end; a stripe plex (RAID-0, as in VxVM) deals stripe units round-robin over
//! its columns, each column being extents laid end to end. All quantities are in blocks of the
//! volume's block size.
//!
//! [`PlexGeometry`] is built once on the control path (validating the layout and precomputing
//! prefix sums); [`PlexGeometry::map`] is the hot path: it splits a request into [`Segment`]s
//! without allocating or locking.

/// A contiguous piece of a target (a disk, or later a sub-volume), `len` blocks at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// The target (disk or sub-volume) index the extent lies on.
    pub target: u32,
    /// The first block of the extent on the target.
    pub offset: u64,
    /// The number of blocks in the extent (at least 1).
    pub len: u64,
}

/// Extents laid end to end (a column of a stripe, or the whole of a concat plex).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Column {
    /// The extents, in column order.
    pub extents: Vec<Extent>,
}

/// How a plex's blocks are spread over its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Geometry {
    /// One column; plex blocks follow the extents in order.
    Concat,
    /// Stripe units of `stripe_unit` blocks dealt round-robin over the columns.
    Stripe {
        /// The stripe unit (chunk) size in blocks, at least 1.
        stripe_unit: u64,
    },
}

/// Why a plex layout could not be built or a request could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A stripe was given no columns.
    #[error("a striped plex needs at least one column; none were given")]
    NoColumns,
    /// A column (or a concat plex) has no extents.
    #[error("column {column} has no extents; every column (and a concat plex) needs at least one")]
    EmptyColumn {
        /// The column index.
        column: usize,
    },
    /// A stripe unit of 0 blocks was given.
    #[error("the stripe unit must be at least 1 block; 0 was given")]
    ZeroStripeUnit,
    /// An extent has length 0.
    #[error("extent {index} of column {column} has length 0; remove it or give it a length")]
    EmptyExtent {
        /// The column index.
        column: usize,
        /// The extent index within the column.
        index: usize,
    },
    /// An extent's end (`offset + len`) does not fit in 64 bits.
    #[error(
        "extent {index} of column {column} (offset {offset}, length {len}) runs past the largest \
         addressable block; shorten it or move it"
    )]
    ExtentOverflow {
        /// The column index.
        column: usize,
        /// The extent index within the column.
        index: usize,
        /// The extent's offset.
        offset: u64,
        /// The extent's length.
        len: u64,
    },
    /// Two extents of the plex share blocks of the same target.
    #[error(
        "two extents of the plex overlap on target {target} (blocks {first_offset}+{first_len} \
         and {second_offset}+{second_len}); every block of a target may be used only once"
    )]
    Overlap {
        /// The target both extents lie on.
        target: u32,
        /// The offset of the first extent (lower offset).
        first_offset: u64,
        /// The length of the first extent.
        first_len: u64,
        /// The offset of the second extent.
        second_offset: u64,
        /// The length of the second extent.
        second_len: u64,
    },
    /// The plex would have more than `u64::MAX` blocks.
    #[error("the plex would be longer than 2^64-1 blocks; use fewer or shorter extents")]
    TooLong,
    /// A request reaches beyond the end of the plex.
    #[error(
        "request of {num} blocks at block {offset} is beyond the end of the plex ({len} blocks)"
    )]
    OutOfRange {
        /// The request's first block.
        offset: u64,
        /// The request's length in blocks.
        num: u64,
        /// The plex's length in blocks.
        len: u64,
    },
}

/// A piece of a request mapped to a target: `len` blocks starting `req_offset` blocks into the
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Where the piece starts, in blocks from the start of the request.
    pub req_offset: u64,
    /// The target the piece lies on.
    pub target: u32,
    /// Where the piece starts on the target.
    pub target_offset: u64,
    /// The piece's length in blocks (at least 1).
    pub len: u64,
}

/// An extent with its position in the column, flattened for the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placed {
    /// First column offset covered by the extent.
    start: u64,
    /// One past the last column offset covered by the extent.
    end: u64,
    /// The target.
    target: u32,
    /// The target offset of column offset `start`.
    offset: u64,
}

/// One plex's mapping. Concat has exactly one column. Built once on the control path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlexGeometry {
    geometry: Geometry,
    columns: Vec<Column>,
    /// Usable plex length in blocks.
    len: u64,
    /// Usable length of each column (concat: the whole column).
    col_len: u64,
    /// Number of columns, as a `u64` for the arithmetic.
    ncol: u64,
    /// `log2(stripe_unit)` when the stripe unit is a power of two (shift/mask fast path).
    su_shift: Option<u32>,
    /// Every extent of every column, column after column, with its column prefix sum.
    placed: Vec<Placed>,
    /// `placed[col_first[c]..col_first[c + 1]]` are column `c`'s extents (`ncol + 1` entries).
    col_first: Vec<usize>,
}

impl PlexGeometry {
    /// Builds a concat plex: the extents of `col` laid end to end.
    ///
    /// Fails if the column has no extents, an extent is empty or overflows, extents overlap on a
    /// target, or the total length overflows.
    pub fn concat(col: Column) -> Result<Self, LayoutError> {
        Self::build(Geometry::Concat, vec![col])
    }

    /// Builds a stripe plex over `columns` with a stripe unit of `stripe_unit` blocks.
    ///
    /// The usable length is `ncol * (shortest column rounded down to stripe_unit)`; space beyond
    /// that in longer columns is unused. Fails if there are no columns, a column has no extents,
    /// `stripe_unit` is 0, an extent is empty or overflows, extents overlap on a target, or the
    /// length overflows.
    pub fn stripe(columns: Vec<Column>, stripe_unit: u64) -> Result<Self, LayoutError> {
        if stripe_unit == 0 {
            return Err(LayoutError::ZeroStripeUnit);
        }
        Self::build(Geometry::Stripe { stripe_unit }, columns)
    }

    fn build(geometry: Geometry, columns: Vec<Column>) -> Result<Self, LayoutError> {
        if columns.is_empty() {
            return Err(LayoutError::NoColumns);
        }
        let mut placed = Vec::new();
        let mut col_first = Vec::with_capacity(columns.len() + 1);
        let mut col_totals = Vec::with_capacity(columns.len());
        for (c, col) in columns.iter().enumerate() {
            if col.extents.is_empty() {
                return Err(LayoutError::EmptyColumn { column: c });
            }
            col_first.push(placed.len());
            let mut start = 0u64;
            for (i, e) in col.extents.iter().enumerate() {
                if e.len == 0 {
                    return Err(LayoutError::EmptyExtent {
                        column: c,
                        index: i,
                    });
                }
                if e.offset.checked_add(e.len).is_none() {
                    return Err(LayoutError::ExtentOverflow {
                        column: c,
                        index: i,
                        offset: e.offset,
                        len: e.len,
                    });
                }
                let end = start.checked_add(e.len).ok_or(LayoutError::TooLong)?;
                placed.push(Placed {
                    start,
                    end,
                    target: e.target,
                    offset: e.offset,
                });
                start = end;
            }
            col_totals.push(start);
        }
        col_first.push(placed.len());
        check_overlap(&columns)?;

        let ncol = columns.len() as u64;
        let (col_len, len, su_shift) = match geometry {
            Geometry::Concat => {
                if columns.len() != 1 {
                    // Only reachable through a bug in this module; concat() passes one column.
                    return Err(LayoutError::NoColumns);
                }
                (col_totals[0], col_totals[0], None)
            }
            Geometry::Stripe { stripe_unit } => {
                let shortest = col_totals.iter().copied().min().unwrap_or(0);
                let col_len = shortest - shortest % stripe_unit;
                let len = col_len.checked_mul(ncol).ok_or(LayoutError::TooLong)?;
                let shift = stripe_unit
                    .is_power_of_two()
                    .then(|| stripe_unit.trailing_zeros());
                (col_len, len, shift)
            }
        };
        Ok(Self {
            geometry,
            columns,
            len,
            col_len,
            ncol,
            su_shift,
            placed,
            col_first,
        })
    }

    /// The usable length of the plex in blocks: for a concat, the sum of the extent lengths; for
    /// a stripe, `ncol` times the shortest column rounded down to a multiple of the stripe unit.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the plex has no usable blocks (a stripe whose shortest column is shorter than one
    /// stripe unit).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The plex's geometry (concat, or stripe with its stripe unit).
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The number of columns (1 for a concat).
    pub fn ncol(&self) -> usize {
        self.columns.len()
    }

    /// The columns as given when the plex was built.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Column `c`'s extents with their prefix sums.
    #[inline]
    fn col(&self, c: usize) -> &[Placed] {
        &self.placed[self.col_first[c]..self.col_first[c + 1]]
    }

    /// Index within `col` of the extent holding column offset `off` (which must be covered).
    #[inline]
    fn find(col: &[Placed], off: u64) -> usize {
        if col.len() == 1 {
            0
        } else {
            col.partition_point(|p| p.end <= off)
        }
    }

    /// Plex block → (column, column offset, offset within its stripe unit), for a block below
    /// `len`. For a concat the last is the column offset.
    #[inline]
    fn split(&self, block: u64) -> (usize, u64, u64) {
        match self.geometry {
            Geometry::Concat => (0, block, block),
            Geometry::Stripe { stripe_unit } => {
                let (unit, within) = match self.su_shift {
                    Some(s) => (block >> s, block & (stripe_unit - 1)),
                    None => (block / stripe_unit, block % stripe_unit),
                };
                let (row, c) = if self.ncol == 1 {
                    (unit, 0)
                } else {
                    (unit / self.ncol, unit % self.ncol)
                };
                (c as usize, row * stripe_unit + within, within)
            }
        }
    }

    /// Emits segments for `num` blocks starting at column offset `off` of column `c`, the first
    /// one at request offset `req_offset`. The range must lie within the column.
    #[inline]
    fn emit(&self, c: usize, off: u64, num: u64, req_offset: u64, f: &mut impl FnMut(Segment)) {
        let col = self.col(c);
        let mut i = Self::find(col, off);
        let mut off = off;
        let mut done = 0;
        while done < num {
            let p = col[i];
            let len = (p.end - off).min(num - done);
            f(Segment {
                req_offset: req_offset + done,
                target: p.target,
                target_offset: p.offset + (off - p.start),
                len,
            });
            done += len;
            off += len;
            i += 1;
        }
    }

    /// Calls `f` for each segment of blocks `[offset, offset + num)` in request order. Segments
    /// never cross an extent boundary or (for stripes) a stripe-unit boundary; adjacent pieces
    /// are not merged. A request of 0 blocks at or below `len()` maps to no segments.
    ///
    /// Returns [`LayoutError::OutOfRange`] if the range reaches beyond `len()`. Does not
    /// allocate.
    #[inline]
    pub fn map(
        &self,
        offset: u64,
        num: u64,
        mut f: impl FnMut(Segment),
    ) -> Result<(), LayoutError> {
        match offset.checked_add(num) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(LayoutError::OutOfRange {
                    offset,
                    num,
                    len: self.len,
                })
            }
        }
        match self.geometry {
            Geometry::Concat => self.emit(0, offset, num, 0, &mut f),
            Geometry::Stripe { stripe_unit } => {
                let mut done = 0;
                while done < num {
                    let block = offset + done;
                    let (c, off, within) = self.split(block);
                    let chunk = (stripe_unit - within).min(num - done);
                    self.emit(c, off, chunk, done, &mut f);
                    done += chunk;
                }
            }
        }
        Ok(())
    }

    /// Where one plex block lives: `(target, target offset)`, or `None` beyond `len()`.
    pub fn locate(&self, block: u64) -> Option<(u32, u64)> {
        if block >= self.len {
            return None;
        }
        let (c, off, _) = self.split(block);
        let col = self.col(c);
        let p = col[Self::find(col, off)];
        Some((p.target, p.offset + (off - p.start)))
    }

    /// The inverse of [`locate`](Self::locate): which plex block maps to `(target,
    /// target_offset)`, or `None` if the plex does not use that block (not in any extent, or in
    /// a stripe column's unused tail).
    pub fn reverse(&self, target: u32, target_offset: u64) -> Option<u64> {
        let c = (0..self.columns.len()).find_map(|c| {
            self.col(c)
                .iter()
                .find(|p| {
                    p.target == target
                        && target_offset >= p.offset
                        && target_offset - p.offset < p.end - p.start
                })
                .map(|p| (c, p.start + (target_offset - p.offset)))
        });
        let (c, off) = c?;
        if off >= self.col_len {
            return None;
        }
        match self.geometry {
            Geometry::Concat => Some(off),
            Geometry::Stripe { stripe_unit } => {
                let row = off / stripe_unit;
                let within = off % stripe_unit;
                // Fits: the result is below len, which fits in u64.
                Some((row * self.ncol + c as u64) * stripe_unit + within)
            }
        }
    }
}

/// Rejects layouts in which two extents share blocks of a target.
fn check_overlap(columns: &[Column]) -> Result<(), LayoutError> {
    let mut all: Vec<Extent> = columns
        .iter()
        .flat_map(|c| c.extents.iter().copied())
        .collect();
    all.sort_unstable_by_key(|e| (e.target, e.offset));
    for w in all.windows(2) {
        let (a, b) = (w[0], w[1]);
        // Extent ends were checked for overflow before.
        if a.target == b.target && b.offset < a.offset + a.len {
            return Err(LayoutError::Overlap {
                target: a.target,
                first_offset: a.offset,
                first_len: a.len,
                second_offset: b.offset,
                second_len: b.len,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// An extent of `len` blocks at `offset` on `target` (also used by the RAID-5 tests).
    pub(crate) fn ext(target: u32, offset: u64, len: u64) -> Extent {
        Extent {
            target,
            offset,
            len,
        }
    }

    /// A column made of `extents` (also used by the RAID-5 tests).
    pub(crate) fn col(extents: &[Extent]) -> Column {
        Column {
            extents: extents.to_vec(),
        }
    }

    fn segments(g: &PlexGeometry, offset: u64, num: u64) -> Vec<Segment> {
        let mut v = Vec::new();
        g.map(offset, num, |s| v.push(s)).unwrap();
        v
    }

    fn seg(req_offset: u64, target: u32, target_offset: u64, len: u64) -> Segment {
        Segment {
            req_offset,
            target,
            target_offset,
            len,
        }
    }

    #[test]
    fn stripe_two_columns_hand_computed() {
        let g = PlexGeometry::stripe(
            vec![col(&[ext(0, 1000, 1024)]), col(&[ext(1, 0, 1024)])],
            128,
        )
        .unwrap();
        assert_eq!(g.len(), 2048);
        assert_eq!(g.ncol(), 2);
        assert_eq!(g.geometry(), Geometry::Stripe { stripe_unit: 128 });
        assert_eq!(g.locate(0), Some((0, 1000)));
        assert_eq!(g.locate(128), Some((1, 0)));
        assert_eq!(g.locate(256), Some((0, 1128)));
        assert_eq!(g.locate(383), Some((0, 1255)));
        assert_eq!(g.locate(511), Some((1, 255)));
        assert_eq!(g.locate(2047), Some((1, 1023)));
        assert_eq!(g.locate(2048), None);
        assert_eq!(g.reverse(0, 1128), Some(256));
        assert_eq!(g.reverse(0, 999), None);
        assert_eq!(g.reverse(2, 0), None);
        // A request straddling a stripe-unit boundary splits there.
        assert_eq!(
            segments(&g, 120, 16),
            vec![seg(0, 0, 1120, 8), seg(8, 1, 0, 8)]
        );
        // Same column in consecutive rows: not merged.
        assert_eq!(
            segments(&g, 0, 384),
            vec![
                seg(0, 0, 1000, 128),
                seg(128, 1, 0, 128),
                seg(256, 0, 1128, 128)
            ]
        );
    }

    #[test]
    fn stripe_uneven_columns_and_multiple_extents() {
        // Column 0: 100 + 200 blocks; column 1: 250 blocks. Shortest 250 -> 192 with su 64.
        let g = PlexGeometry::stripe(
            vec![
                col(&[ext(0, 0, 100), ext(2, 50, 200)]),
                col(&[ext(1, 10, 250)]),
            ],
            64,
        )
        .unwrap();
        assert_eq!(g.len(), 384);
        // Block 128 -> unit 2 -> column 0 row 1 -> column offset 64..128, crossing the extent
        // boundary at 100.
        assert_eq!(
            segments(&g, 128, 64),
            vec![seg(0, 0, 64, 36), seg(36, 2, 50, 28)]
        );
        // Column 1's tail beyond 192 is unused.
        assert_eq!(g.reverse(1, 10 + 191), Some(383));
        assert_eq!(g.reverse(1, 10 + 192), None);
        // Column 0's tail beyond 192 too.
        assert_eq!(g.reverse(2, 50 + 91), Some(319));
        assert_eq!(g.reverse(2, 50 + 92), None);
    }

    #[test]
    fn concat_hand_computed() {
        let g = PlexGeometry::concat(col(&[ext(3, 500, 10), ext(1, 0, 5), ext(3, 0, 20)])).unwrap();
        assert_eq!(g.len(), 35);
        assert_eq!(g.geometry(), Geometry::Concat);
        assert_eq!(g.ncol(), 1);
        assert_eq!(
            segments(&g, 8, 10),
            vec![seg(0, 3, 508, 2), seg(2, 1, 0, 5), seg(7, 3, 0, 3)]
        );
        assert_eq!(g.locate(15), Some((3, 0)));
        assert_eq!(g.reverse(3, 19), Some(34));
        assert_eq!(g.reverse(3, 20), None);
        assert!(segments(&g, 35, 0).is_empty());
    }

    #[test]
    fn stripe_shorter_than_one_unit_is_empty() {
        let g =
            PlexGeometry::stripe(vec![col(&[ext(0, 0, 10)]), col(&[ext(1, 0, 100)])], 16).unwrap();
        assert!(g.is_empty());
        assert_eq!(g.locate(0), None);
        assert_eq!(g.reverse(1, 0), None);
        assert!(g.map(0, 1, |_| {}).is_err());
    }

    #[test]
    fn non_power_of_two_stripe_unit() {
        let g = PlexGeometry::stripe(
            vec![
                col(&[ext(0, 0, 30)]),
                col(&[ext(1, 0, 30)]),
                col(&[ext(2, 0, 30)]),
            ],
            10,
        )
        .unwrap();
        assert_eq!(g.len(), 90);
        assert_eq!(g.locate(35), Some((0, 15)));
        assert_eq!(g.locate(89), Some((2, 29)));
    }

    #[test]
    fn invalid_layouts_are_rejected() {
        assert_eq!(
            PlexGeometry::concat(Column::default()),
            Err(LayoutError::EmptyColumn { column: 0 })
        );
        assert_eq!(PlexGeometry::stripe(vec![], 8), Err(LayoutError::NoColumns));
        assert_eq!(
            PlexGeometry::stripe(vec![col(&[ext(0, 0, 8)])], 0),
            Err(LayoutError::ZeroStripeUnit)
        );
        assert_eq!(
            PlexGeometry::stripe(vec![col(&[ext(0, 0, 8)]), Column::default()], 8),
            Err(LayoutError::EmptyColumn { column: 1 })
        );
        assert_eq!(
            PlexGeometry::concat(col(&[ext(0, 0, 8), ext(1, 0, 0)])),
            Err(LayoutError::EmptyExtent {
                column: 0,
                index: 1
            })
        );
        assert!(matches!(
            PlexGeometry::concat(col(&[ext(0, u64::MAX, 2)])),
            Err(LayoutError::ExtentOverflow { .. })
        ));
        assert!(matches!(
            PlexGeometry::stripe(vec![col(&[ext(0, 0, 8)]), col(&[ext(0, 7, 8)])], 4),
            Err(LayoutError::Overlap { target: 0, .. })
        ));
        assert_eq!(
            PlexGeometry::concat(col(&[ext(0, 0, u64::MAX), ext(1, 0, 1)])),
            Err(LayoutError::TooLong)
        );
        // Adjacent extents on a target are fine.
        assert!(PlexGeometry::concat(col(&[ext(0, 8, 8), ext(0, 0, 8)])).is_ok());
    }

    #[test]
    fn out_of_range_requests_error() {
        let g = PlexGeometry::concat(col(&[ext(0, 0, 100)])).unwrap();
        assert_eq!(
            g.map(90, 11, |_| {}),
            Err(LayoutError::OutOfRange {
                offset: 90,
                num: 11,
                len: 100
            })
        );
        assert!(g.map(101, 0, |_| {}).is_err());
        assert!(g.map(u64::MAX, 2, |_| {}).is_err());
        assert!(g.map(0, 100, |_| {}).is_ok());
        assert!(!g.map(0, 101, |_| {}).unwrap_err().to_string().is_empty());
    }

    /// A random geometry: concat or stripe, with non-overlapping extents.
    #[derive(Debug, Clone)]
    struct Spec {
        stripe: bool,
        su: u64,
        columns: Vec<Column>,
    }

    fn spec() -> impl Strategy<Value = Spec> {
        let extent = (0u32..4, 0u64..10, 1u64..60);
        let column = prop::collection::vec(extent, 1..=3);
        (
            any::<bool>(),
            1u64..20,
            prop::collection::vec(column, 1..=8),
        )
            .prop_map(|(stripe, su, raw)| {
                let mut cursor = [0u64; 4];
                let mut columns: Vec<Column> = raw
                    .into_iter()
                    .map(|c| Column {
                        extents: c
                            .into_iter()
                            .map(|(t, gap, len)| {
                                let offset = cursor[t as usize] + gap;
                                cursor[t as usize] = offset + len;
                                Extent {
                                    target: t,
                                    offset,
                                    len,
                                }
                            })
                            .collect(),
                    })
                    .collect();
                if !stripe {
                    let all = columns.drain(..).flat_map(|c| c.extents).collect();
                    columns.push(Column { extents: all });
                }
                Spec {
                    stripe,
                    su,
                    columns,
                }
            })
    }

    fn build(s: &Spec) -> PlexGeometry {
        if s.stripe {
            PlexGeometry::stripe(s.columns.clone(), s.su).unwrap()
        } else {
            PlexGeometry::concat(s.columns[0].clone()).unwrap()
        }
    }

    /// Naive reference: expand every column block by block, then deal stripe units.
    fn reference(s: &Spec) -> Vec<(u32, u64)> {
        let cols: Vec<Vec<(u32, u64)>> = s
            .columns
            .iter()
            .map(|c| {
                c.extents
                    .iter()
                    .flat_map(|e| (0..e.len).map(move |i| (e.target, e.offset + i)))
                    .collect()
            })
            .collect();
        if !s.stripe {
            return cols[0].clone();
        }
        let shortest = cols.iter().map(Vec::len).min().unwrap() as u64;
        let rows = shortest / s.su;
        let mut out = Vec::new();
        for r in 0..rows {
            for c in &cols {
                for i in 0..s.su {
                    out.push(c[(r * s.su + i) as usize]);
                }
            }
        }
        out
    }

    fn spec_and_request() -> impl Strategy<Value = (Spec, u64, u64)> {
        spec().prop_flat_map(|s| {
            let len = reference(&s).len() as u64;
            (Just(s), 0..=len).prop_flat_map(move |(s, off)| (Just(s), Just(off), 0..=len - off))
        })
    }

    proptest! {
        #[test]
        fn map_covers_request_and_agrees_with_reference((s, off, num) in spec_and_request()) {
            let g = build(&s);
            let reference = reference(&s);
            prop_assert_eq!(g.len(), reference.len() as u64);
            let mut next = 0;
            let mut ok = true;
            g.map(off, num, |seg| {
                ok &= seg.req_offset == next && seg.len >= 1;
                for i in 0..seg.len {
                    let b = off + seg.req_offset + i;
                    let at = (seg.target, seg.target_offset + i);
                    ok &= g.locate(b) == Some(at);
                    ok &= reference[b as usize] == at;
                }
                if let Geometry::Stripe { stripe_unit } = g.geometry() {
                    let first = off + seg.req_offset;
                    ok &= first / stripe_unit == (first + seg.len - 1) / stripe_unit;
                }
                next += seg.len;
            }).unwrap();
            prop_assert!(ok);
            prop_assert_eq!(next, num);
        }

        #[test]
        fn mapping_is_injective_and_reversible(s in spec()) {
            let g = build(&s);
            let mut seen = HashSet::new();
            for b in 0..g.len() {
                let at = g.locate(b).unwrap();
                prop_assert!(seen.insert(at), "block {} maps to {:?} twice", b, at);
                prop_assert_eq!(g.reverse(at.0, at.1), Some(b));
            }
            // Every target block the plex does not use reverses to None.
            for c in g.columns() {
                for e in &c.extents {
                    for o in e.offset..e.offset + e.len {
                        if !seen.contains(&(e.target, o)) {
                            prop_assert_eq!(g.reverse(e.target, o), None);
                        }
                    }
                }
            }
        }

        #[test]
        fn out_of_range_requests_fail(s in spec(), off in 0u64..2000, num in 1u64..2000) {
            let g = build(&s);
            let res = g.map(off, num, |_| {});
            prop_assert_eq!(res.is_err(), off + num > g.len());
            prop_assert_eq!(g.locate(g.len()), None);
        }
    }
}
