//! What a sparse copy copies: a set of regions (the dirty map after a crash, the regions a
//! returning plex missed) over the volume's region geometry, and the block arithmetic the copy
//! engine needs on it.
//!
//! A copy with a todo walks the whole volume like a full copy, and its frontier
//! ([`crate::volume::io::driver::CopyProgress`]) still means "every block below is equal on
//! every plex". It jumps from the frontier to the next region of the todo and, inside a barrier
//! chunk, copies only the blocks of todo regions. Regions outside the todo are passed without a
//! copy: whoever built the todo promises they are already equal.

use std::ops::Range;
use std::sync::Arc;

use crate::volume::model::region_set::{RegionGeometry, RegionSet};

/// Why a copy copies only some regions (`TaskInfo.mode`); a copy without a todo is `full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseMode {
    /// Crash recovery: the regions of the dirty map.
    Drl,
    /// A returning plex (FastResync): the regions it missed and the dirty ones.
    Delta,
}

impl SparseMode {
    /// The name the task reports: `drl` or `delta`.
    pub fn as_str(self) -> &'static str {
        match self {
            SparseMode::Drl => "drl",
            SparseMode::Delta => "delta",
        }
    }
}

/// The regions a copy copies, and how regions map to blocks.
#[derive(Debug, Clone)]
pub struct CopyTodo {
    regions: Arc<RegionSet>,
    geometry: RegionGeometry,
    mode: SparseMode,
}

impl CopyTodo {
    /// A todo of `regions` over `geometry`. Fails (and says why) if the set is not over the
    /// geometry's regions: a region outside the set would be skipped without being promised
    /// equal.
    pub fn new(
        regions: Arc<RegionSet>,
        geometry: RegionGeometry,
        mode: SparseMode,
    ) -> Result<CopyTodo, String> {
        if regions.nregions() != geometry.nregions() {
            return Err(format!(
                "the copy's region set has {} regions, but {} blocks in regions of {} blocks make {}",
                regions.nregions(),
                geometry.volume_blocks(),
                geometry.region_blocks(),
                geometry.nregions()
            ));
        }
        Ok(CopyTodo {
            regions,
            geometry,
            mode,
        })
    }

    /// The regions to copy.
    pub fn regions(&self) -> &RegionSet {
        &self.regions
    }

    /// How regions map to blocks.
    pub fn geometry(&self) -> &RegionGeometry {
        &self.geometry
    }

    /// Why the copy is sparse.
    pub fn mode(&self) -> SparseMode {
        self.mode
    }

    /// The first block at or after `at` that lies in a todo region, if any below the
    /// volume's end (which may be `at` itself).
    pub(crate) fn next_block(&self, at: u64) -> Option<u64> {
        let g = &self.geometry;
        if at >= g.volume_blocks() {
            return None;
        }
        let r = self.regions.next_set(at / g.region_blocks())?;
        Some(g.blocks_of(r).start.max(at))
    }

    /// The maximal runs of todo blocks inside `blocks`, in ascending order.
    pub(crate) fn runs_in(&self, blocks: Range<u64>) -> Vec<Range<u64>> {
        let g = &self.geometry;
        let mut runs = Vec::new();
        let regions = g.regions_of(blocks.clone());
        let mut r = regions.start;
        while let Some(first) = self.regions.next_set(r).filter(|f| *f < regions.end) {
            let end = self
                .regions
                .next_clear(first)
                .unwrap_or(self.regions.nregions())
                .min(regions.end);
            let b = g.blocks_of_regions(first..end);
            let run = b.start.max(blocks.start)..b.end.min(blocks.end);
            if run.start < run.end {
                runs.push(run);
            }
            r = end;
        }
        runs
    }

    /// The number of todo blocks in `blocks`.
    pub(crate) fn blocks_in(&self, blocks: Range<u64>) -> u64 {
        self.runs_in(blocks).iter().map(|r| r.end - r.start).sum()
    }

    /// Todo regions that hold a block of `blocks` (a region cut by the range counts).
    pub(crate) fn regions_touching(&self, blocks: Range<u64>) -> u64 {
        self.regions.count_in(self.geometry.regions_of(blocks))
    }

    /// Todo regions that hold a block at or past `start` and whose every block lies below
    /// `frontier`: the regions a copy that began at `start` has finished at `frontier`.
    pub(crate) fn regions_done(&self, start: u64, frontier: u64) -> u64 {
        let done = self.passed(start, frontier);
        if done.is_empty() {
            return 0;
        }
        self.regions.count_in(done)
    }

    /// The runs `[first, end)` of the regions [`CopyTodo::regions_done`] counts, in
    /// ascending order, at most `max` of them.
    pub(crate) fn ranges_done(&self, start: u64, frontier: u64, max: usize) -> Vec<Range<u64>> {
        let done = self.passed(start, frontier);
        let mut out = Vec::new();
        let mut r = done.start;
        while out.len() < max {
            let Some(first) = self.regions.next_set(r).filter(|f| *f < done.end) else {
                break;
            };
            let end = self
                .regions
                .next_clear(first)
                .unwrap_or(self.regions.nregions())
                .min(done.end);
            out.push(first..end);
            r = end;
        }
        out
    }

    /// The regions that hold a block at or past `start` and whose every block lies below
    /// `frontier` (empty if none).
    fn passed(&self, start: u64, frontier: u64) -> Range<u64> {
        let g = &self.geometry;
        let first = g.regions_of(start..g.volume_blocks()).start;
        let passed = if frontier >= g.volume_blocks() {
            g.nregions()
        } else {
            frontier / g.region_blocks()
        };
        first..passed.max(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regions of 100 blocks over 1050 blocks (11 regions, the last of 50), todo {1, 2, 5, 10}.
    fn todo() -> CopyTodo {
        let g = RegionGeometry::new(100, 1050).unwrap();
        let mut s = RegionSet::new(g.nregions());
        for r in [1, 2, 5, 10] {
            s.insert(r);
        }
        CopyTodo::new(Arc::new(s), g, SparseMode::Drl).unwrap()
    }

    #[test]
    fn a_set_over_other_regions_is_refused() {
        let g = RegionGeometry::new(100, 1050).unwrap();
        let e = CopyTodo::new(Arc::new(RegionSet::new(10)), g, SparseMode::Delta).unwrap_err();
        assert!(e.contains("10 regions") && e.contains("make 11"), "{e}");
    }

    #[test]
    fn next_block_jumps_to_the_next_todo_region() {
        let t = todo();
        assert_eq!(t.next_block(0), Some(100));
        assert_eq!(t.next_block(150), Some(150), "inside a todo region");
        assert_eq!(t.next_block(300), Some(500));
        assert_eq!(t.next_block(600), Some(1000));
        assert_eq!(t.next_block(1049), Some(1049));
        assert_eq!(t.next_block(1050), None);
        let g = RegionGeometry::new(100, 1050).unwrap();
        let none = CopyTodo::new(Arc::new(RegionSet::new(11)), g, SparseMode::Drl).unwrap();
        assert_eq!(none.next_block(0), None);
    }

    #[test]
    fn runs_are_cut_to_the_range() {
        let t = todo();
        assert_eq!(t.runs_in(0..1050), vec![100..300, 500..600, 1000..1050]);
        assert_eq!(t.runs_in(150..520), vec![150..300, 500..520]);
        assert_eq!(t.runs_in(300..500), Vec::<Range<u64>>::new());
        assert_eq!(t.runs_in(1020..2000), vec![1020..1050]);
        assert_eq!(t.blocks_in(0..1050), 350);
        assert_eq!(t.blocks_in(250..1025), 50 + 100 + 25);
    }

    #[test]
    fn regions_count_once_passed() {
        let t = todo();
        assert_eq!(t.regions_touching(0..1050), 4);
        assert_eq!(
            t.regions_touching(150..1050),
            4,
            "a region cut by the start counts"
        );
        assert_eq!(t.regions_touching(201..1050), 3);
        assert_eq!(t.regions_done(0, 0), 0);
        assert_eq!(t.regions_done(0, 299), 1, "region 2 not finished");
        assert_eq!(t.regions_done(0, 300), 2);
        assert_eq!(
            t.regions_done(150, 300),
            2,
            "region 1 finished from its middle"
        );
        assert_eq!(t.regions_done(0, 1049), 3);
        assert_eq!(
            t.regions_done(0, 1050),
            4,
            "the short last region at the end"
        );
        assert_eq!(t.regions_done(600, 600), 0);
        assert_eq!(t.ranges_done(0, 1050, 10), vec![1..3, 5..6, 10..11]);
        assert_eq!(
            t.ranges_done(150, 550, 10),
            vec![1..3],
            "region 5 not finished"
        );
        assert_eq!(t.ranges_done(250, 1050, 2), vec![2..3, 5..6], "at most 2");
        assert_eq!(t.ranges_done(600, 600, 10), Vec::<Range<u64>>::new());
    }
}
