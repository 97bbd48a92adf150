//! The block mapping of a RAID-5 plex: left-symmetric parity rotation, the per-request split
//! into stripes, and the write plan of each stripe. Pure: no I/O, no allocation per request.
//!
//! A RAID-5 plex has `ncol` ≥ 3 [`Column`]s (each one or more extents laid end to end, as in a
//! stripe plex; no disk holds extents of two columns) and a stripe unit of `su` blocks, a power
//! of two. Column offset `row * su + x` (`x < su`) of every column belongs to stripe (row)
//! `row`. In each row one column holds parity and the other `ncol - 1` hold data units
//! `0..ncol - 1`, which follow each other in the volume's logical address space:
//! logical block `(row * (ncol - 1) + k) * su + x` is data unit `k` of row `row`, offset `x`.
//!
//! # Rotation: left-symmetric
//!
//! As in VxVM and in Linux md's default `ALGORITHM_LEFT_SYMMETRIC` (`drivers/md/raid5.c`,
//! `raid5_compute_sector`: `pd_idx = data_disks - stripe % raid_disks; dd_idx = (pd_idx + 1 +
//! dd_idx) % raid_disks`), for row `r`:
//!
//! - parity column `p = (ncol - 1) - (r mod ncol)`;
//! - data unit `k` lives in column `(p + 1 + k) mod ncol`.
//!
//! With 4 columns (`P` = parity, `Dn` = logical stripe unit `n`):
//!
//! | row | col 0 | col 1 | col 2 | col 3 |
//! |-----|-------|-------|-------|-------|
//! | 0   | D0    | D1    | D2    | P     |
//! | 1   | D4    | D5    | P     | D3    |
//! | 2   | D8    | P     | D6    | D7    |
//! | 3   | P     | D9    | D10   | D11   |
//! | 4   | D12   | D13   | D14   | P     |
//!
//! So consecutive logical units visit every column before one repeats, and a sequential read
//! of `ncol` units touches every disk once.
//!
//! # Write plans
//!
//! [`StripeSpan::plan`] classifies the part of a write that falls in one row; the reads each
//! plan needs are given by [`StripeSpan::reads`] and the parity it writes by
//! [`StripeSpan::parity_writes`], as ranges of unit offsets `[lo, hi)` per column (the same
//! offsets in every column of the row; [`Raid5Geometry::locate`] turns them into disk pieces).
//! See [`WritePlan`] for the rule.

use super::layout::{Column, LayoutError, PlexGeometry};

/// Why a RAID-5 plex layout could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Raid5Error {
    /// Fewer than 3 columns were given.
    #[error("a RAID-5 plex needs at least 3 columns; {ncol} were given")]
    TooFewColumns {
        /// The number of columns given.
        ncol: usize,
    },
    /// The stripe unit is 0 or not a power of two.
    #[error(
        "the RAID-5 stripe unit must be a power of two number of blocks; {stripe_unit} was given"
    )]
    StripeUnit {
        /// The stripe unit given, in blocks.
        stripe_unit: u64,
    },
    /// Two columns have extents on the same disk (one disk failure would lose two columns).
    #[error(
        "columns {first_column} and {second_column} both use target {target}; every column of a \
         RAID-5 plex must be on disks no other column uses"
    )]
    SharedTarget {
        /// The target both columns use.
        target: u32,
        /// The lower column index.
        first_column: usize,
        /// The higher column index.
        second_column: usize,
    },
    /// The columns' extents are invalid (empty, overlapping, overflowing).
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

/// A piece of a column on its target: `len` blocks at `target_offset`, starting `piece_offset`
/// blocks into the located range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskPiece {
    /// Where the piece starts, in blocks from the start of the located range.
    pub piece_offset: u64,
    /// The target (disk) the piece lies on.
    pub target: u32,
    /// Where the piece starts on the target.
    pub target_offset: u64,
    /// The piece's length in blocks (at least 1).
    pub len: u64,
}

/// A piece of a request that lies in one data unit and one extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSegment {
    /// The stripe (row).
    pub row: u64,
    /// The data unit index within the row (`0..ncol - 1`).
    pub unit: usize,
    /// The column holding the unit.
    pub column: usize,
    /// Where the piece starts within its stripe unit (`0..su`).
    pub unit_offset: u64,
    /// Where the piece starts, in blocks from the start of the request.
    pub req_offset: u64,
    /// The target (disk) the piece lies on.
    pub target: u32,
    /// Where the piece starts on the target.
    pub target_offset: u64,
    /// The piece's length in blocks (at least 1).
    pub len: u64,
}

/// A range of unit offsets `[lo, hi)` of one column of a row (column offset `row * su + lo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnRange {
    /// The column.
    pub column: usize,
    /// First unit offset.
    pub lo: u64,
    /// One past the last unit offset (`lo < hi <= su`).
    pub hi: u64,
}

/// What a column holds in a given row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The row's parity.
    Parity,
    /// Data unit `k` of the row.
    Data(usize),
}

/// What a disk block of the plex holds (the inverse mapping, for rebuild and scrub).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reverse {
    /// Logical block `block` of the plex.
    Data {
        /// The row.
        row: u64,
        /// The column.
        column: usize,
        /// The logical block.
        block: u64,
    },
    /// Parity of row `row` at unit offset `unit_offset`.
    Parity {
        /// The row.
        row: u64,
        /// The column.
        column: usize,
        /// The offset within the stripe unit.
        unit_offset: u64,
    },
}

/// How one stripe's part of a write is carried out (md's `handle_stripe_dirtying`, VxVM's
/// RAID-5 write paths).
///
/// Let `ndata = ncol - 1`, and `t` the number of data units of the row the request writes at
/// least one block of ("touched", fully or partially). `W_k` is the set of unit offsets written
/// in data unit `k` (one interval, possibly empty or `[0, su)`). Without a missing column:
///
/// - [`FullStripe`](Self::FullStripe): every data unit is written completely. No reads; parity
///   is the XOR of the new data, written over `[0, su)`.
/// - [`ReconstructWrite`](Self::ReconstructWrite): `2 * t >= ndata` (at least half the data
///   units touched, a partial unit counting as touched). Reads, for every data unit `k`, the
///   offsets it does not write (`[0, su) \ W_k`: whole untouched units, and the untouched head
///   and/or tail of partial ones); parity is not read. New parity = XOR over `k` of (new data
///   where written, old data elsewhere).
/// - [`ReadModifyWrite`](Self::ReadModifyWrite): otherwise. Reads the old data of each written
///   range (`W_k`) and the old parity over `∪ W_k`. New parity = old parity XOR old data XOR new
///   data, over `∪ W_k`.
///
/// (md counts blocks to read instead and takes reconstruct-write on a tie, which for full units
/// means `2 * t >= ndata - 1`; this module follows the "at least half" rule.)
///
/// Parity is written over `∪ W_k` in every plan (`[0, su)` for a full stripe), see
/// [`StripeSpan::parity_writes`]. Data is written where the request says.
///
/// With one column missing (degraded), the missing column is never read nor written:
///
/// - the missing column is the row's parity: [`DataOnly`](Self::DataOnly), write the data, no
///   reads, no parity;
/// - a full-stripe write stays [`FullStripe`](Self::FullStripe) (the missing unit's write and
///   the reads are skipped; parity from the new data including the missing unit's);
/// - the missing data unit `m` is not touched: [`ReadModifyWrite`](Self::ReadModifyWrite)
///   whatever `t` (reconstruct-write would need `m`); the parity keeps `m`'s contents implied;
/// - `m` is written completely: [`ReconstructWrite`](Self::ReconstructWrite) (it needs no old
///   data of `m`);
/// - `m` is written partially: [`Degraded`](Self::Degraded), reconstruct-write at the offsets
///   `m` writes and read-modify-write elsewhere, offset by offset: data unit `k ≠ m` is read
///   over `W_k Δ W_m` (symmetric difference), parity over `(∪_{k≠m} W_k) \ W_m`. New parity at
///   offset `x`: if `x ∈ W_m`, XOR of all new-or-old data (the new data of `m`); otherwise old
///   parity XOR (old XOR new) of the units written at `x`.
///
/// The last rule is the general one: with `m` untouched it is read-modify-write, with `m` full
/// it is reconstruct-write, so the I/O path may implement the three with one per-offset rule:
/// "parity was read at `x`" ⇔ "compute `x` by read-modify-write".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePlan {
    /// Every data unit written completely: no reads.
    FullStripe,
    /// Read the unwritten parts of the data units; parity from all data.
    ReconstructWrite,
    /// Read old data of the written ranges and old parity; parity updated by XOR.
    ReadModifyWrite,
    /// Degraded, the parity column missing: write data only, no reads.
    DataOnly,
    /// Degraded, the missing data unit partially written: mixed, per offset (see above).
    Degraded,
}

/// The part of a request that falls in one row, in the row's data space (data unit `k` covers
/// row-local blocks `[k * su, (k + 1) * su)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeSpan {
    /// The stripe (row).
    pub row: u64,
    /// The row's parity column.
    pub parity_column: usize,
    /// The first row-local data block the request touches.
    pub start: u64,
    /// The number of blocks (at least 1).
    pub len: u64,
    /// Where the span starts, in blocks from the start of the request.
    pub req_offset: u64,
    ncol: usize,
    su: u64,
}

impl StripeSpan {
    /// The number of data units per row.
    fn ndata(&self) -> usize {
        self.ncol - 1
    }

    /// The column holding data unit `k` of this row.
    pub fn data_column(&self, k: usize) -> usize {
        (self.parity_column + 1 + k) % self.ncol
    }

    /// The data unit held by column `c` of this row, or `None` for the parity column (and for
    /// a column index that is not below `ncol`).
    pub fn unit_of(&self, c: usize) -> Option<usize> {
        (c != self.parity_column && c < self.ncol)
            .then(|| (c + self.ncol - self.parity_column - 1) % self.ncol)
    }

    /// The written unit offsets `[lo, hi)` of data unit `k` (`lo == hi` when not touched).
    pub fn written(&self, k: usize) -> (u64, u64) {
        let base = k as u64 * self.su;
        let lo = self.start.max(base);
        let hi = (self.start + self.len).min(base + self.su);
        if lo >= hi {
            (0, 0)
        } else {
            (lo - base, hi - base)
        }
    }

    /// The first and last data unit touched.
    pub fn units(&self) -> (usize, usize) {
        (
            (self.start / self.su) as usize,
            ((self.start + self.len - 1) / self.su) as usize,
        )
    }

    /// The number of columns.
    pub fn ncol(&self) -> usize {
        self.ncol
    }

    /// The stripe unit in blocks.
    pub fn stripe_unit(&self) -> u64 {
        self.su
    }

    /// Whether data unit `k` is written at unit offset `x`.
    pub fn writes_at(&self, k: usize, x: u64) -> bool {
        self.w(k, x)
    }

    /// Calls `f(lo, hi)` for the (at most three) ranges of unit offsets between the
    /// breakpoints of the span, in order, covering `[0, su)`: within each range which units
    /// are written, and what every plan reads, is the same at every offset.
    pub fn intervals(&self, mut f: impl FnMut(u64, u64)) {
        let br = self.breaks();
        for i in 0..3 {
            if br[i] < br[i + 1] {
                f(br[i], br[i + 1]);
            }
        }
    }

    /// Whether data unit `k` is written at unit offset `x`.
    fn w(&self, k: usize, x: u64) -> bool {
        let b = k as u64 * self.su + x;
        b >= self.start && b < self.start + self.len
    }

    /// Whether every data unit is written completely.
    pub fn is_full(&self) -> bool {
        self.start == 0 && self.len == self.ndata() as u64 * self.su
    }

    /// The write plan of this span, `missing` being the column that is missing (degraded), if
    /// any (a column index not below `ncol` counts as none). See [`WritePlan`] for the rule.
    pub fn plan(&self, missing: Option<usize>) -> WritePlan {
        if missing == Some(self.parity_column) {
            return WritePlan::DataOnly;
        }
        if self.is_full() {
            return WritePlan::FullStripe;
        }
        let (first, last) = self.units();
        let m = missing.and_then(|c| self.unit_of(c));
        match m {
            None => {
                let t = last - first + 1;
                if 2 * t >= self.ndata() {
                    WritePlan::ReconstructWrite
                } else {
                    WritePlan::ReadModifyWrite
                }
            }
            Some(m) => match self.written(m) {
                (lo, hi) if lo == hi => WritePlan::ReadModifyWrite,
                (0, hi) if hi == self.su => WritePlan::ReconstructWrite,
                _ => WritePlan::Degraded,
            },
        }
    }

    /// The unit-offset breakpoints where "written" can change in any unit of the row.
    fn breaks(&self) -> [u64; 4] {
        let a = self.start % self.su;
        let b = (self.start + self.len - 1) % self.su + 1;
        let mut br = [0, a, b, self.su];
        br.sort_unstable();
        br
    }

    /// Calls `f(lo, hi)` for the maximal ranges of unit offsets where `pred` holds; `pred` is
    /// constant between breakpoints.
    fn ranges(&self, pred: impl Fn(u64) -> bool, mut f: impl FnMut(u64, u64)) {
        let br = self.breaks();
        let mut open: Option<u64> = None;
        for i in 0..3 {
            let (p, q) = (br[i], br[i + 1]);
            if p == q {
                continue;
            }
            match (pred(p), open) {
                (true, None) => open = Some(p),
                (false, Some(lo)) => {
                    f(lo, p);
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(lo) = open {
            f(lo, self.su);
        }
    }

    /// Whether column `c` must be read at unit offset `x` under `plan` (see [`WritePlan`]).
    pub fn reads_at(&self, plan: WritePlan, missing: Option<usize>, c: usize, x: u64) -> bool {
        if Some(c) == missing {
            return false;
        }
        let n = self.ndata();
        let any = |skip: Option<usize>| (0..n).any(|k| Some(k) != skip && self.w(k, x));
        let m = missing.and_then(|c| self.unit_of(c));
        match (plan, self.unit_of(c)) {
            (WritePlan::FullStripe | WritePlan::DataOnly, _) => false,
            (WritePlan::ReconstructWrite, Some(k)) => !self.w(k, x),
            (WritePlan::ReconstructWrite, None) => false,
            (WritePlan::ReadModifyWrite, Some(k)) => self.w(k, x),
            (WritePlan::ReadModifyWrite, None) => any(None),
            (WritePlan::Degraded, Some(k)) => {
                let wm = m.is_some_and(|m| self.w(m, x));
                self.w(k, x) != wm
            }
            (WritePlan::Degraded, None) => !m.is_some_and(|m| self.w(m, x)) && any(m),
        }
    }

    /// Calls `f` for each range to read before writing under `plan` (from
    /// [`plan`](Self::plan) with the same `missing`), column by column in column order, then
    /// by offset. Never names the missing column. Does not allocate.
    pub fn reads(&self, plan: WritePlan, missing: Option<usize>, mut f: impl FnMut(ColumnRange)) {
        for c in 0..self.ncol {
            self.ranges(
                |x| self.reads_at(plan, missing, c, x),
                |lo, hi| f(ColumnRange { column: c, lo, hi }),
            );
        }
    }

    /// Calls `f` for each range of the parity column to write under `plan`: the offsets some
    /// data unit (the missing one included) writes; none for [`WritePlan::DataOnly`].
    pub fn parity_writes(&self, plan: WritePlan, mut f: impl FnMut(ColumnRange)) {
        if plan == WritePlan::DataOnly {
            return;
        }
        let c = self.parity_column;
        self.ranges(
            |x| (0..self.ndata()).any(|k| self.w(k, x)),
            |lo, hi| f(ColumnRange { column: c, lo, hi }),
        );
    }
}

/// One RAID-5 plex's mapping. Built once on the control path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raid5Geometry {
    /// The columns as a stripe plex: column `c`, offset `o` is stripe block
    /// `((o / su) * ncol + c) * su + o % su`.
    stripe: PlexGeometry,
    ncol: usize,
    su: u64,
    su_shift: u32,
    rows: u64,
    len: u64,
}

impl Raid5Geometry {
    /// Builds a RAID-5 plex over `columns` with a stripe unit of `stripe_unit` blocks.
    ///
    /// Rows = shortest column / `stripe_unit` (rounded down; longer columns' tails unused),
    /// length = `(ncol - 1) * rows * stripe_unit`. Fails with fewer than 3 columns, a stripe
    /// unit that is not a power of two, two columns on one target, or invalid extents.
    pub fn new(columns: Vec<Column>, stripe_unit: u64) -> Result<Self, Raid5Error> {
        if columns.len() < 3 {
            return Err(Raid5Error::TooFewColumns {
                ncol: columns.len(),
            });
        }
        if !stripe_unit.is_power_of_two() {
            return Err(Raid5Error::StripeUnit { stripe_unit });
        }
        for (i, a) in columns.iter().enumerate() {
            for (j, b) in columns.iter().enumerate().skip(i + 1) {
                if let Some(e) = a
                    .extents
                    .iter()
                    .find(|e| b.extents.iter().any(|f| f.target == e.target))
                {
                    return Err(Raid5Error::SharedTarget {
                        target: e.target,
                        first_column: i,
                        second_column: j,
                    });
                }
            }
        }
        let ncol = columns.len();
        let stripe = PlexGeometry::stripe(columns, stripe_unit)?;
        let rows = stripe.len() / stripe_unit / ncol as u64;
        let len = rows
            .checked_mul(stripe_unit)
            .and_then(|l| l.checked_mul(ncol as u64 - 1))
            .ok_or(LayoutError::TooLong)?;
        Ok(Self {
            stripe,
            ncol,
            su: stripe_unit,
            su_shift: stripe_unit.trailing_zeros(),
            rows,
            len,
        })
    }

    /// The usable (data) length in blocks: `(ncol - 1) * rows * stripe_unit`.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the plex has no usable blocks (shortest column below one stripe unit).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of stripes (rows).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The number of columns.
    pub fn ncol(&self) -> usize {
        self.ncol
    }

    /// The stripe unit in blocks.
    pub fn stripe_unit(&self) -> u64 {
        self.su
    }

    /// The columns as given.
    pub fn columns(&self) -> &[Column] {
        self.stripe.columns()
    }

    /// The parity column of `row`: `(ncol - 1) - row mod ncol`.
    pub fn parity_column(&self, row: u64) -> usize {
        self.ncol - 1 - (row % self.ncol as u64) as usize
    }

    /// What column `c` (below `ncol`) holds in `row`.
    pub fn role(&self, row: u64, c: usize) -> Role {
        debug_assert!(c < self.ncol);
        let p = self.parity_column(row);
        if c == p {
            Role::Parity
        } else {
            Role::Data((c + self.ncol - p - 1) % self.ncol)
        }
    }

    /// Calls `f` for the disk pieces of unit offsets `[lo, lo + len)` of column `c` in `row`
    /// (`lo + len <= su`), in order; pieces split only at extent boundaries. Does not allocate.
    /// Arguments out of range map to nothing (and fail a debug assertion).
    pub fn locate(&self, row: u64, c: usize, lo: u64, len: u64, mut f: impl FnMut(DiskPiece)) {
        debug_assert!(row < self.rows && c < self.ncol && lo + len <= self.su);
        let block = ((row * self.ncol as u64 + c as u64) << self.su_shift) + lo;
        // In range: row < rows and lo + len <= su.
        let _ = self.stripe.map(block, len, |s| {
            f(DiskPiece {
                piece_offset: s.req_offset,
                target: s.target,
                target_offset: s.target_offset,
                len: s.len,
            })
        });
    }

    /// Checks that `[offset, offset + num)` lies within the plex.
    fn check(&self, offset: u64, num: u64) -> Result<(), LayoutError> {
        match offset.checked_add(num) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(LayoutError::OutOfRange {
                offset,
                num,
                len: self.len,
            }),
        }
    }

    /// The part of `[offset, offset + num)` that falls in the row holding `offset`, as a span
    /// starting `req_offset` blocks into its request (`num` at least 1; the range must lie
    /// within the plex: callers check with [`Raid5Geometry::for_each_stripe`] or by length).
    pub fn stripe_at(&self, offset: u64, num: u64, req_offset: u64) -> StripeSpan {
        debug_assert!(num > 0 && offset + num <= self.len);
        let row_len = (self.ncol as u64 - 1) << self.su_shift;
        let row = offset / row_len;
        let start = offset % row_len;
        StripeSpan {
            row,
            parity_column: self.parity_column(row),
            start,
            len: (row_len - start).min(num),
            req_offset,
            ncol: self.ncol,
            su: self.su,
        }
    }

    /// Data blocks per row: `(ncol - 1) * su`.
    pub fn row_blocks(&self) -> u64 {
        (self.ncol as u64 - 1) << self.su_shift
    }

    /// Calls `f` once per stripe that `[offset, offset + num)` touches, in request order.
    ///
    /// Returns [`LayoutError::OutOfRange`] if the range reaches beyond `len()`. Does not
    /// allocate.
    pub fn for_each_stripe(
        &self,
        offset: u64,
        num: u64,
        mut f: impl FnMut(&StripeSpan),
    ) -> Result<(), LayoutError> {
        self.check(offset, num)?;
        let row_len = (self.ncol as u64 - 1) << self.su_shift;
        let mut done = 0;
        while done < num {
            let block = offset + done;
            let row = block / row_len;
            let start = block % row_len;
            let len = (row_len - start).min(num - done);
            f(&StripeSpan {
                row,
                parity_column: self.parity_column(row),
                start,
                len,
                req_offset: done,
                ncol: self.ncol,
                su: self.su,
            });
            done += len;
        }
        Ok(())
    }

    /// Calls `f` for each data piece of the stripe span `s`, in request order (data unit by
    /// data unit, split at extent boundaries).
    pub fn data_segments(&self, s: &StripeSpan, mut f: impl FnMut(DataSegment)) {
        let (first, last) = s.units();
        for k in first..=last {
            let (lo, hi) = s.written(k);
            let column = s.data_column(k);
            let req = s.req_offset + (k as u64 * self.su + lo - s.start);
            self.locate(s.row, column, lo, hi - lo, |p| {
                f(DataSegment {
                    row: s.row,
                    unit: k,
                    column,
                    unit_offset: lo + p.piece_offset,
                    req_offset: req + p.piece_offset,
                    target: p.target,
                    target_offset: p.target_offset,
                    len: p.len,
                })
            });
        }
    }

    /// Calls `f` for every data piece of `[offset, offset + num)` in request order (the read
    /// path of a healthy plex). Returns [`LayoutError::OutOfRange`] beyond `len()`. Does not
    /// allocate.
    pub fn map(
        &self,
        offset: u64,
        num: u64,
        mut f: impl FnMut(DataSegment),
    ) -> Result<(), LayoutError> {
        self.for_each_stripe(offset, num, |s| self.data_segments(s, &mut f))
    }

    /// What disk block `(target, target_offset)` holds, or `None` if the plex does not use it.
    pub fn reverse(&self, target: u32, target_offset: u64) -> Option<Reverse> {
        let b = self.stripe.reverse(target, target_offset)?;
        let unit = b >> self.su_shift;
        let x = b & (self.su - 1);
        let row = unit / self.ncol as u64;
        let column = (unit % self.ncol as u64) as usize;
        Some(match self.role(row, column) {
            Role::Parity => Reverse::Parity {
                row,
                column,
                unit_offset: x,
            },
            Role::Data(k) => Reverse::Data {
                row,
                column,
                block: ((row * (self.ncol as u64 - 1) + k as u64) << self.su_shift) + x,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::tests::{col, ext};
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    /// `ncol` columns of `len` blocks, column `c` on target `c` at offset `100 * c`.
    fn simple(ncol: usize, len: u64, su: u64) -> Raid5Geometry {
        let cols = (0..ncol)
            .map(|c| col(&[ext(c as u32, 100 * c as u64, len)]))
            .collect();
        Raid5Geometry::new(cols, su).unwrap()
    }

    fn spans(g: &Raid5Geometry, offset: u64, num: u64) -> Vec<StripeSpan> {
        let mut v = Vec::new();
        g.for_each_stripe(offset, num, |s| v.push(*s)).unwrap();
        v
    }

    fn segments(g: &Raid5Geometry, offset: u64, num: u64) -> Vec<DataSegment> {
        let mut v = Vec::new();
        g.map(offset, num, |s| v.push(s)).unwrap();
        v
    }

    fn reads(s: &StripeSpan, missing: Option<usize>) -> (WritePlan, Vec<(usize, u64, u64)>) {
        let plan = s.plan(missing);
        let mut v = Vec::new();
        s.reads(plan, missing, |r| v.push((r.column, r.lo, r.hi)));
        (plan, v)
    }

    #[test]
    fn left_symmetric_rotation_four_columns() {
        // The table in the module documentation: logical unit in each (row, column), P = None.
        let table: [[Option<u64>; 4]; 5] = [
            [Some(0), Some(1), Some(2), None],
            [Some(4), Some(5), None, Some(3)],
            [Some(8), None, Some(6), Some(7)],
            [None, Some(9), Some(10), Some(11)],
            [Some(12), Some(13), Some(14), None],
        ];
        let g = simple(4, 5 * 8, 8);
        assert_eq!(g.rows(), 5);
        assert_eq!(g.len(), 3 * 5 * 8);
        for (row, cols) in table.iter().enumerate() {
            for (c, want) in cols.iter().enumerate() {
                let got = match g.role(row as u64, c) {
                    Role::Parity => None,
                    Role::Data(k) => Some(row as u64 * 3 + k as u64),
                };
                assert_eq!(got, *want, "row {row} column {c}");
            }
        }
        // Logical unit 3 (blocks 24..32) is row 1, column 3, disk 3 at 300 + 8.
        assert_eq!(
            segments(&g, 24, 8),
            vec![DataSegment {
                row: 1,
                unit: 0,
                column: 3,
                unit_offset: 0,
                req_offset: 0,
                target: 3,
                target_offset: 308,
                len: 8
            }]
        );
        assert_eq!(
            g.reverse(3, 308),
            Some(Reverse::Data {
                row: 1,
                column: 3,
                block: 24
            })
        );
        assert_eq!(
            g.reverse(2, 200 + 8 + 5),
            Some(Reverse::Parity {
                row: 1,
                column: 2,
                unit_offset: 5
            })
        );
        assert_eq!(g.reverse(3, 300 + 40), None);
        assert_eq!(g.reverse(4, 0), None);
    }

    #[test]
    fn three_columns_hand_computed() {
        // Rows: 0 = D0 D1 P, 1 = D3 P D2, 2 = P D4 D5.
        let g = simple(3, 3 * 4, 4);
        assert_eq!(g.len(), 24);
        assert_eq!(
            (0..3).map(|r| g.parity_column(r)).collect::<Vec<_>>(),
            [2, 1, 0]
        );
        // Blocks 6..14: unit 1 [2, 4), unit 2 [0, 4), unit 3 [0, 2).
        let got: Vec<_> = segments(&g, 6, 8)
            .iter()
            .map(|s| (s.row, s.column, s.req_offset, s.target_offset, s.len))
            .collect();
        assert_eq!(
            got,
            vec![(0, 1, 0, 102, 2), (1, 2, 2, 204, 4), (1, 0, 6, 4, 2)]
        );
        let sp = spans(&g, 6, 8);
        assert_eq!(sp.len(), 2);
        assert_eq!((sp[0].row, sp[0].start, sp[0].len), (0, 6, 2));
        assert_eq!(
            (sp[1].row, sp[1].start, sp[1].len, sp[1].req_offset),
            (1, 0, 6, 2)
        );
        // 3 columns: one touched unit of two is half: reconstruct-write, reading the rest of
        // unit 1 ([0, 2) of column 1) and the whole of unit 0 (column 0).
        assert_eq!(
            reads(&sp[0], None),
            (WritePlan::ReconstructWrite, vec![(0, 0, 4), (1, 0, 2)])
        );
        // Row 1: unit 0 (column 2) whole, unit 1 (column 0) [0, 2): read column 0 [2, 4).
        assert_eq!(
            reads(&sp[1], None),
            (WritePlan::ReconstructWrite, vec![(0, 2, 4)])
        );
        let mut pw = Vec::new();
        sp[1].parity_writes(WritePlan::ReconstructWrite, |r| pw.push(r));
        assert_eq!(
            pw,
            vec![ColumnRange {
                column: 1,
                lo: 0,
                hi: 4
            }]
        );
        // A full row.
        let sp = spans(&g, 8, 8);
        assert_eq!(reads(&sp[0], None), (WritePlan::FullStripe, vec![]));
        // Degraded: parity column of row 1 missing.
        assert_eq!(reads(&sp[0], Some(1)), (WritePlan::DataOnly, vec![]));
    }

    #[test]
    fn plans_with_five_data_units() {
        // 6 columns, su 4: row 0 = D0..D4 in columns 0..4, parity column 5.
        let g = simple(6, 8, 4);
        // One partial unit: read-modify-write, old data and old parity over [1, 3).
        let sp = spans(&g, 1, 2);
        assert_eq!(
            reads(&sp[0], None),
            (WritePlan::ReadModifyWrite, vec![(0, 1, 3), (5, 1, 3)])
        );
        // Two partial units (unit 1 [3, 4), unit 2 [0, 1)): parity over [0, 1) and [3, 4).
        let sp = spans(&g, 7, 2);
        assert_eq!(
            reads(&sp[0], None),
            (
                WritePlan::ReadModifyWrite,
                vec![(1, 3, 4), (2, 0, 1), (5, 0, 1), (5, 3, 4)]
            )
        );
        // Three units touched of five: reconstruct-write.
        let sp = spans(&g, 3, 6);
        assert_eq!(sp[0].plan(None), WritePlan::ReconstructWrite);
        // Degraded, missing unit 4 (column 4) untouched: read-modify-write even so.
        assert_eq!(sp[0].plan(Some(4)), WritePlan::ReadModifyWrite);
        // Missing unit 0 (column 0), written [3, 4) only: mixed.
        let (plan, r) = reads(&sp[0], Some(0));
        assert_eq!(plan, WritePlan::Degraded);
        // W0 = [3, 4). Unit 1 written whole: read [0, 3) (W1 Δ W0); unit 2 written [0, 1):
        // read [0, 1) and [3, 4); units 3, 4 untouched: read [3, 4); parity: (W1 ∪ W2) \ W0
        // = [0, 3).
        assert_eq!(
            r,
            vec![
                (1, 0, 3),
                (2, 0, 1),
                (2, 3, 4),
                (3, 3, 4),
                (4, 3, 4),
                (5, 0, 3)
            ]
        );
        // Missing unit 1 written whole: reconstruct-write without it.
        assert_eq!(sp[0].plan(Some(1)), WritePlan::ReconstructWrite);
    }

    #[test]
    fn invalid_layouts_are_rejected() {
        let c = |t: u32| col(&[ext(t, 0, 64)]);
        assert_eq!(
            Raid5Geometry::new(vec![c(0), c(1)], 8),
            Err(Raid5Error::TooFewColumns { ncol: 2 })
        );
        assert_eq!(
            Raid5Geometry::new(vec![c(0), c(1), c(2)], 12),
            Err(Raid5Error::StripeUnit { stripe_unit: 12 })
        );
        assert_eq!(
            Raid5Geometry::new(vec![c(0), c(1), c(2)], 0),
            Err(Raid5Error::StripeUnit { stripe_unit: 0 })
        );
        assert_eq!(
            Raid5Geometry::new(vec![c(0), c(1), col(&[ext(3, 0, 8), ext(0, 64, 8)])], 8),
            Err(Raid5Error::SharedTarget {
                target: 0,
                first_column: 0,
                second_column: 2
            })
        );
        assert!(matches!(
            Raid5Geometry::new(vec![c(0), c(1), Column::default()], 8),
            Err(Raid5Error::Layout(LayoutError::EmptyColumn { column: 2 }))
        ));
        // Two extents of one column on one disk are fine.
        let g =
            Raid5Geometry::new(vec![c(0), c(1), col(&[ext(2, 0, 8), ext(2, 100, 8)])], 8).unwrap();
        assert_eq!((g.rows(), g.len()), (2, 32));
        let short = Raid5Geometry::new(vec![c(0), c(1), col(&[ext(2, 0, 7)])], 8).unwrap();
        assert!(short.is_empty());
        assert!(short.map(0, 1, |_| {}).is_err());
        assert!(g.map(30, 3, |_| {}).is_err());
        assert!(g.map(u64::MAX, 2, |_| {}).is_err());
    }

    /// A random RAID-5 layout: columns of 1-3 extents, column `c` on targets `2c` and `2c + 1`.
    #[derive(Debug, Clone)]
    struct Spec {
        su: u64,
        columns: Vec<Column>,
    }

    fn spec() -> impl Strategy<Value = Spec> {
        let extent = (0u32..2, 0u64..5, 1u64..30);
        let column = prop::collection::vec(extent, 1..=3);
        (0u32..4, prop::collection::vec(column, 3..=7)).prop_map(|(shift, raw)| {
            let columns = raw
                .into_iter()
                .enumerate()
                .map(|(c, exts)| {
                    let mut cursor = [0u64; 2];
                    Column {
                        extents: exts
                            .into_iter()
                            .map(|(t, gap, len)| {
                                let offset = cursor[t as usize] + gap;
                                cursor[t as usize] = offset + len;
                                ext(2 * c as u32 + t, offset, len)
                            })
                            .collect(),
                    }
                })
                .collect();
            Spec {
                su: 1 << shift,
                columns,
            }
        })
    }

    /// Every column expanded block by block.
    fn expand(s: &Spec) -> Vec<Vec<(u32, u64)>> {
        s.columns
            .iter()
            .map(|c| {
                c.extents
                    .iter()
                    .flat_map(|e| (0..e.len).map(move |i| (e.target, e.offset + i)))
                    .collect()
            })
            .collect()
    }

    /// Naive reference: logical block -> (row, column, column offset), from the formula.
    fn reference(s: &Spec, g: &Raid5Geometry, block: u64) -> (u64, usize, u64) {
        let n = s.columns.len() as u64;
        let unit = block / s.su;
        let (row, k) = (unit / (n - 1), unit % (n - 1));
        let p = (n - 1) - row % n;
        let c = (p + 1 + k) % n;
        assert!(block < g.len());
        (row, c as usize, row * s.su + block % s.su)
    }

    fn spec_and_request() -> impl Strategy<Value = (Spec, u64, u64)> {
        spec().prop_flat_map(|s| {
            let len = Raid5Geometry::new(s.columns.clone(), s.su).unwrap().len();
            (Just(s), 0..=len).prop_flat_map(move |(s, off)| (Just(s), Just(off), 0..=len - off))
        })
    }

    /// Brute-force plan: counts touched units over a set of written (unit, offset) pairs.
    fn brute_plan(ndata: usize, su: u64, w: &HashSet<(usize, u64)>, m: Option<Role>) -> WritePlan {
        let full = |k: usize| (0..su).all(|x| w.contains(&(k, x)));
        let touched = |k: usize| (0..su).any(|x| w.contains(&(k, x)));
        match m {
            Some(Role::Parity) => WritePlan::DataOnly,
            _ if (0..ndata).all(full) => WritePlan::FullStripe,
            None => {
                let t = (0..ndata).filter(|&k| touched(k)).count();
                if 2 * t >= ndata {
                    WritePlan::ReconstructWrite
                } else {
                    WritePlan::ReadModifyWrite
                }
            }
            Some(Role::Data(m)) if !touched(m) => WritePlan::ReadModifyWrite,
            Some(Role::Data(m)) if full(m) => WritePlan::ReconstructWrite,
            Some(Role::Data(_)) => WritePlan::Degraded,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn map_covers_request_once_in_order((s, off, num) in spec_and_request()) {
            let g = Raid5Geometry::new(s.columns.clone(), s.su).unwrap();
            let cols = expand(&s);
            let mut next = 0;
            let mut ok = true;
            g.map(off, num, |seg| {
                ok &= seg.req_offset == next && seg.len >= 1;
                ok &= seg.unit_offset + seg.len <= s.su;
                for i in 0..seg.len {
                    let (row, c, o) = reference(&s, &g, off + seg.req_offset + i);
                    ok &= (seg.row, seg.column) == (row, c);
                    ok &= o == row * s.su + seg.unit_offset + i;
                    ok &= cols[c][o as usize] == (seg.target, seg.target_offset + i);
                }
                next += seg.len;
            }).unwrap();
            prop_assert!(ok);
            prop_assert_eq!(next, num);
            // Stripes come in order, contiguous, one per row touched.
            let mut at = 0;
            g.for_each_stripe(off, num, |sp| {
                ok &= sp.req_offset == at && sp.len >= 1;
                ok &= sp.row * g.len() / g.rows().max(1) + sp.start == off + at;
                at += sp.len;
            }).unwrap();
            prop_assert!(ok);
            prop_assert_eq!(at, num);
        }

        #[test]
        fn mapping_is_injective_parity_apart_and_reversible(s in spec()) {
            let g = Raid5Geometry::new(s.columns.clone(), s.su).unwrap();
            let n = s.columns.len();
            prop_assert_eq!(g.len(), (n as u64 - 1) * g.rows() * s.su);
            let cols = expand(&s);
            let mut seen = HashSet::new();
            for b in 0..g.len() {
                let (row, c, o) = reference(&s, &g, b);
                prop_assert!(seen.insert((c, o)), "block {} maps to ({}, {}) twice", b, c, o);
                prop_assert!(g.role(row, c) != Role::Parity);
                let (t, to) = cols[c][o as usize];
                prop_assert_eq!(g.reverse(t, to), Some(Reverse::Data { row, column: c, block: b }));
            }
            for row in 0..g.rows() {
                // Each row: one parity column, the data units 0..n-1 once each.
                let p = g.parity_column(row);
                let mut units: Vec<usize> = (0..n)
                    .filter_map(|c| match g.role(row, c) { Role::Data(k) => Some(k), _ => None })
                    .collect();
                units.sort_unstable();
                prop_assert_eq!(units, (0..n - 1).collect::<Vec<_>>());
                for x in 0..s.su {
                    let o = row * s.su + x;
                    prop_assert!(!seen.contains(&(p, o)));
                    let (t, to) = cols[p][o as usize];
                    prop_assert_eq!(
                        g.reverse(t, to),
                        Some(Reverse::Parity { row, column: p, unit_offset: x })
                    );
                    let mut pieces = Vec::new();
                    g.locate(row, p, x, 1, |d| pieces.push((d.target, d.target_offset)));
                    prop_assert_eq!(pieces, vec![(t, to)]);
                }
            }
            // Unused blocks (column tails) reverse to None.
            for (c, blocks) in cols.iter().enumerate() {
                for (o, &(t, to)) in blocks.iter().enumerate() {
                    if o as u64 >= g.rows() * s.su {
                        prop_assert_eq!(g.reverse(t, to), None, "column {}", c);
                    }
                }
            }
        }

        /// The plan matches a brute-force reference, the reads follow the documented sets and
        /// never name the missing column, and applying the plan to random data (with only what
        /// it read) leaves parity equal to the XOR of the data.
        #[test]
        fn plans_match_reference_and_keep_parity(
            (s, off, num) in spec_and_request(),
            missing in prop::option::of(0usize..7),
            seed in any::<u64>(),
        ) {
            let g = Raid5Geometry::new(s.columns.clone(), s.su).unwrap();
            let n = s.columns.len();
            let missing = missing.filter(|&c| c < n);
            let ndata = n - 1;
            let su = s.su;
            let mut ok = true;
            g.for_each_stripe(off, num, |sp| {
                // Written (unit, offset) pairs, from the request directly.
                let row_base = sp.row * ndata as u64 * su;
                let w: HashSet<(usize, u64)> = (off + sp.req_offset..off + sp.req_offset + sp.len)
                    .map(|b| (((b - row_base) / su) as usize, (b - row_base) % su))
                    .collect();
                let m = missing.map(|c| g.role(sp.row, c));
                let plan = sp.plan(missing);
                ok &= plan == brute_plan(ndata, su, &w, m);
                // Reads per the documented sets.
                let mut got = HashSet::new();
                sp.reads(plan, missing, |r| {
                    ok &= r.lo < r.hi && r.hi <= su && Some(r.column) != missing;
                    for x in r.lo..r.hi {
                        ok &= got.insert((r.column, x));
                    }
                });
                let unit_at = |c: usize| match g.role(sp.row, c) { Role::Data(k) => Some(k), _ => None };
                let mu = match m { Some(Role::Data(k)) => Some(k), _ => None };
                let mut want = HashSet::new();
                for c in 0..n {
                    for x in 0..su {
                        let wk = |k: usize| w.contains(&(k, x));
                        let any_but = |skip: Option<usize>| (0..ndata).any(|k| Some(k) != skip && wk(k));
                        let r = match (plan, unit_at(c)) {
                            (WritePlan::FullStripe | WritePlan::DataOnly, _) => false,
                            (WritePlan::ReconstructWrite, Some(k)) => !wk(k) && Some(k) != mu,
                            (WritePlan::ReconstructWrite, None) => false,
                            (WritePlan::ReadModifyWrite, Some(k)) => wk(k),
                            (WritePlan::ReadModifyWrite, None) => any_but(None),
                            (WritePlan::Degraded, Some(k)) => Some(k) != mu && wk(k) != wk(mu.unwrap()),
                            (WritePlan::Degraded, None) => !wk(mu.unwrap()) && any_but(mu),
                        };
                        if r {
                            want.insert((c, x));
                        }
                    }
                }
                ok &= got == want;
                // Simulate: old data from the seed, parity consistent; compute new parity
                // from the reads only, per the documented per-offset rule.
                if plan == WritePlan::DataOnly {
                    return;
                }
                let old = |k: usize, x: u64| (seed ^ (k as u64 * 7919 + x * 104_729)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56;
                let new = |k: usize, x: u64| old(k, x) ^ 0x5a ^ x;
                let old_p = |x: u64| (0..ndata).fold(0, |a, k| a ^ old(k, x));
                let read: HashMap<(usize, u64), u64> = got.iter().map(|&(c, x)| {
                    let v = match unit_at(c) { Some(k) => old(k, x), None => old_p(x) };
                    ((c, x), v)
                }).collect();
                let p = sp.parity_column;
                let mut pw = HashSet::new();
                sp.parity_writes(plan, |r| {
                    ok &= r.column == p;
                    pw.extend(r.lo..r.hi);
                });
                for x in 0..su {
                    let final_x = (0..ndata).fold(0, |a, k| a ^ if w.contains(&(k, x)) { new(k, x) } else { old(k, x) });
                    if !pw.contains(&x) {
                        ok &= final_x == old_p(x);
                        continue;
                    }
                    let get = |k: usize| read.get(&(sp.data_column(k), x)).copied();
                    let computed = if let Some(&op) = read.get(&(p, x)) {
                        (0..ndata).filter(|&k| w.contains(&(k, x))).try_fold(op, |a, k| Some(a ^ get(k)? ^ new(k, x)))
                    } else {
                        (0..ndata).try_fold(0, |a, k| Some(a ^ if w.contains(&(k, x)) { new(k, x) } else { get(k)? }))
                    };
                    ok &= computed == Some(final_x);
                }
            }).unwrap();
            prop_assert!(ok);
        }
    }
}
