//! RAID-5 row tasks: parity resync after a crash, rebuild of a stale column, and scrub
//! (check, or check and repair), row batch by row batch under the copy barrier.
//!
//! A RAID-5 volume's barrier chunks are a whole number of rows (see `io::driver`), so one
//! batch is exactly one chunk: the task raises it, waits until no guest write to those rows is
//! in flight, reads the columns it needs over the batch (one read per column and extent),
//! works row by row on the buffers and writes back, then lowers the chunk. Guest writes to the
//! batch wait in their channels meanwhile; reads go on (a degraded read of a missing column
//! holds its stripe, never the columns the task writes).
//!
//! - **Resync** (after a crash without a log): parity := XOR of the data units, for every row.
//! - **Rebuild** of column `c`: unit := XOR of every other column (data and parity). The
//!   I/O path treats `c` as present in the rows below the task's progress.
//! - **Check**: counts rows whose parity is not the XOR of their data; with `repair`,
//!   rewrites their parity (md's `check` and `repair`).
//!
//! Every wait for a disk ends if the task is cancelled (a write still in flight is fenced on
//! its chunk, see `io::fence`), as for mirror copies.
//!
//! A resync or check given a todo (regions of a whole, power-of-two number of rows) works
//! only on the rows of todo regions; its progress passes the other rows, whose parity the
//! caller promises is current. A rebuild cannot be sparse: the I/O path leaves the rebuilt
//! column alone in rows past the progress, so a row the rebuild skipped would keep missing
//! the writes made there while it ran.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bdev::{Bdev, IoType};
use crate::volume::copy::task::{plex_io_in, CopyIo, CopyPlex, PlexIoError};
use crate::volume::io::raid5::parity::{parity_into, parity_mismatch, reconstruct_into};
use crate::volume::model::layout::PlexGeometry;
use crate::volume::model::raid5::Raid5Geometry;

/// What a row task does to each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowWork {
    /// Parity from data (every column present).
    Resync,
    /// Column `0` from the others.
    Rebuild(usize),
    /// Compare parity with the data; rewrite it where they differ if `repair`.
    Check {
        /// Rewrite mismatching parity.
        repair: bool,
    },
}

/// Rows whose parity did not match their data (scrub).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Mismatches {
    /// Rows found.
    pub(crate) rows: u64,
    /// A column whose read failed (the task stopped there): the caller records it stale.
    pub(crate) failed_read: Option<usize>,
    /// The first mismatching row ranges `[first, end)` (at most [`Mismatches::MAX_RANGES`]).
    pub(crate) ranges: Vec<(u64, u64)>,
}

impl Mismatches {
    /// How many ranges are kept.
    pub(crate) const MAX_RANGES: usize = 32;

    fn add(&mut self, row: u64) {
        self.rows += 1;
        if let Some((_, end)) = self.ranges.last_mut().filter(|(_, e)| *e == row) {
            *end = row + 1;
        } else if self.ranges.len() < Self::MAX_RANGES {
            self.ranges.push((row, row + 1));
        }
    }
}

/// The columns of a RAID-5 plex as copy plexes (column offsets).
pub(crate) struct RowPlex {
    /// The plex's mapping.
    pub(crate) geometry: Raid5Geometry,
    /// Column `c` as a concat plex of its extents.
    columns: Vec<CopyPlex>,
}

impl RowPlex {
    /// The columns of `geometry` over `disks` (the map's disks).
    pub(crate) fn new(geometry: Raid5Geometry, disks: &[Arc<Bdev>]) -> Result<RowPlex, String> {
        let columns = geometry
            .columns()
            .iter()
            .map(|c| {
                PlexGeometry::concat(c.clone())
                    .map(|g| CopyPlex {
                        geometry: g,
                        disks: disks.to_vec(),
                    })
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RowPlex { geometry, columns })
    }

    /// The disks of column `c` (for flushes).
    pub(crate) fn column(&self, c: usize) -> Option<&CopyPlex> {
        self.columns.get(c)
    }
}

/// Runs `work` from the task's progress (a logical block at a chunk boundary) to row
/// `end_row`, chunk by chunk under the barrier. `checkpoint(block)` is called about once a
/// second with the progress reached; `delay` is slept between chunks (throttle). Returns
/// Ok(false) if the task was cancelled. A sparse task (resync or check only) jumps to the
/// next row of a todo region and works only on such rows.
pub(crate) fn run_rows(
    io: &CopyIo<'_>,
    plex: &RowPlex,
    work: RowWork,
    end_row: u64,
    delay: Duration,
    found: &mut Mismatches,
    mut checkpoint: impl FnMut(u64),
) -> Result<bool, String> {
    let CopyIo {
        task,
        barrier,
        block_size: bs,
        ..
    } = *io;
    let g = &plex.geometry;
    let (ncol, su) = (g.ncol(), g.stripe_unit());
    let row_blocks = g.row_blocks();
    let chunk = barrier.chunk_blocks();
    if chunk % row_blocks != 0 {
        return Err(format!(
            "the barrier chunk ({chunk} blocks) is not a whole number of rows ({row_blocks} blocks)"
        ));
    }
    let rows_per_chunk = chunk / row_blocks;
    if let Some(t) = task.todo() {
        if let RowWork::Rebuild(_) = work {
            return Err(
                "a column rebuild copies every row: it cannot be limited to some regions".into(),
            );
        }
        let region = t.geometry().region_blocks();
        if region % row_blocks != 0 {
            return Err(format!(
                "a region ({region} blocks) is not a whole number of rows ({row_blocks} blocks)"
            ));
        }
    }
    let unit = (su * bs) as usize;
    let mut bufs: Vec<Vec<u8>> = (0..ncol)
        .map(|_| vec![0u8; rows_per_chunk as usize * unit])
        .collect();
    let mut acc = vec![0u8; unit];
    let mut last_ck = Instant::now();
    loop {
        if task.cancelled() {
            return Ok(false);
        }
        // Rows outside a sparse task's todo have current parity: the progress passes them.
        // Regions are whole rows, so the progress stays at a row boundary.
        let at = task.skip_to_todo(task.done(), end_row * row_blocks);
        let r0 = at / row_blocks;
        if r0 >= end_row {
            return Ok(true);
        }
        let c = barrier.chunk_of(at);
        let r1 = ((c + 1) * rows_per_chunk).min(end_row);
        // The runs of rows to work on (a region cut short at the volume's end ends in a row).
        let row_runs: Vec<(u64, u64)> = task
            .runs_in(r0 * row_blocks..r1 * row_blocks)
            .into_iter()
            .map(|b| (b.start / row_blocks, b.end.div_ceil(row_blocks).min(r1)))
            .collect();
        #[cfg(test)]
        task.hook(crate::volume::copy::task::HookPoint::Chunk { task, at });
        let _g = task.chunk_lock();
        if task.cancelled() {
            return Ok(false);
        }
        if !barrier.raise(c, task.cancel_flag()) {
            return Ok(false);
        }
        let failed_read = std::cell::Cell::new(None);
        let r = row_runs
            .iter()
            .try_for_each(|&(r0, r1)| -> Result<(), PlexIoError> {
                let n = (r1 - r0) as usize;
                let col_io = |bufs: &mut Vec<Vec<u8>>, col: usize, op: IoType| {
                    plex_io_in(
                        io,
                        &plex.columns[col],
                        r0 * su,
                        (r1 - r0) * su,
                        op,
                        &mut bufs[col][..n * unit],
                        c,
                    )
                };
                // A column whose read fails is named to the caller (it records it stale).
                let read_col = |bufs: &mut Vec<Vec<u8>>, col: usize| {
                    col_io(bufs, col, IoType::Read).inspect_err(|e| {
                        if let PlexIoError::Failed(_) = e {
                            failed_read.set(Some(col));
                        }
                    })
                };
                let unit_io = |buf: &mut [u8], col: usize, row: u64, op: IoType| {
                    plex_io_in(io, &plex.columns[col], row * su, su, op, buf, c)
                };
                match work {
                    RowWork::Rebuild(target) => {
                        for col in (0..ncol).filter(|&k| k != target) {
                            read_col(&mut bufs, col)?;
                        }
                        let (dst, rest) = take_column(&mut bufs, target);
                        reconstruct_into(&mut dst[..n * unit], rest.iter().map(|b| &b[..n * unit]));
                        col_io(&mut bufs, target, IoType::Write)?;
                    }
                    RowWork::Resync | RowWork::Check { .. } => {
                        for col in 0..ncol {
                            read_col(&mut bufs, col)?;
                        }
                        for i in 0..n {
                            let row = r0 + i as u64;
                            let p = g.parity_column(row);
                            let data = bufs
                                .iter()
                                .enumerate()
                                .filter(|(k, _)| *k != p)
                                .map(|(_, b)| unit_at(b, i, unit));
                            if parity_mismatch(unit_at(&bufs[p], i, unit), data.clone()).is_none() {
                                continue;
                            }
                            parity_into(&mut acc, data);
                            let rewrite = match work {
                                RowWork::Check { repair } => {
                                    found.add(row);
                                    repair
                                }
                                _ => true,
                            };
                            if rewrite {
                                unit_io(&mut acc, p, row, IoType::Write)?;
                            }
                        }
                    }
                }
                Ok(())
            });
        if r.is_ok() {
            // Before the chunk is lowered: a guest write to these rows planned after it must
            // see the rebuilt column as present (and write it).
            let worked: u64 = row_runs.iter().map(|(a, b)| b - a).sum();
            task.chunk_done(r1 * row_blocks, (r1 - r0) * row_blocks, worked * row_blocks);
        }
        // A write still in flight keeps the chunk raised through its fence.
        barrier.lower(c);
        match r {
            Ok(()) => {}
            Err(PlexIoError::Stopped) => return Ok(false),
            Err(PlexIoError::Failed(e)) => {
                found.failed_read = failed_read.get();
                return Err(e);
            }
        }
        drop(_g);
        if last_ck.elapsed() >= Duration::from_secs(1) {
            checkpoint(r1 * row_blocks);
            last_ck = Instant::now();
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
}

/// Unit `i` (of `unit` bytes) of a column buffer.
fn unit_at(b: &[u8], i: usize, unit: usize) -> &[u8] {
    &b[i * unit..(i + 1) * unit]
}

/// Column `target`'s buffer, mutably, and the others.
fn take_column(bufs: &mut [Vec<u8>], target: usize) -> (&mut Vec<u8>, Vec<&Vec<u8>>) {
    let (a, b) = bufs.split_at_mut(target);
    let (t, c) = b.split_at_mut(1);
    let rest = a.iter().chain(c.iter()).collect();
    (&mut t[0], rest)
}
