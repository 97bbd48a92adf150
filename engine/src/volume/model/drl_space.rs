//! How big a volume's dirty region log (DRL) regions are and where its map copies go. Pure:
//! the manager gives the configuration and each disk's log-area size and applies the result.
//!
//! - **Region size.** [`default_region_blocks`]: the smallest power of two that keeps the map
//!   at [`DEFAULT_MAX_REGIONS`] regions or fewer, between [`MIN_REGION_BYTES`] and
//!   [`MAX_REGION_BYTES`]. [`check_region_bytes`] checks a size the user gave. A RAID-5
//!   volume's region is a power-of-two number of rows (of data), so a region never splits a
//!   row's parity; [`RegionRule`] carries what the rules need.
//! - **Pages.** A map copy is a header page, then the `P` pages of the dirty map D, then the
//!   `P` pages of the missed-writes map M; a page is [`page_bytes`] long and holds
//!   [`bits_per_page`] regions (its last [`PAGE_TRAILER_BYTES`] bytes are its trailer).
//! - **Placement.** [`place_map`] puts two copies, first fit, into the disks' log areas
//!   ([`log_areas`] derives which pages are taken from the copies the configuration records,
//!   so no other directory is kept). It prefers disks of the volume's own plexes, the two
//!   copies on disks of different plexes, then any other working disk, never a spare; a
//!   default region size is doubled until the map fits. [`place_copy`] finds a place for one
//!   more copy, when one is relocated.

use std::ops::Range;

use plexd_control::size::format_size;

use super::objects::{
    DgConfig, DiskCondition, DiskRecord, DrlCopyRecord, DrlMode, DrlRecord, PlexLayout, PlexState,
};

/// The smallest region: 64 KiB.
pub const MIN_REGION_BYTES: u64 = 64 << 10;

/// The largest region: 64 MiB.
pub const MAX_REGION_BYTES: u64 = 64 << 20;

/// The default region size keeps a map at this many regions or fewer (until the size reaches
/// [`MAX_REGION_BYTES`]): 9 pages per bitmap of 4 KiB pages.
pub const DEFAULT_MAX_REGIONS: u64 = 1 << 18;

/// The smallest map page; a page is the larger of this and the block size.
pub const MIN_PAGE_BYTES: u64 = 4096;

/// Bytes at the end of every bitmap page that hold its trailer, not bits. `drl/format.rs`
/// defines the same size for the pages it encodes; the two must agree.
pub const PAGE_TRAILER_BYTES: u64 = 32;

/// How many copies of a map [`place_map`] places, each on its own disk.
pub const MAP_COPIES: usize = 2;

/// Default interval after which a quiet region is cleared, in milliseconds (md's
/// `daemon_sleep`).
pub const DEFAULT_CLEAR_MS: u32 = 5000;

/// Default target of dirty regions in sequential mode.
pub const DEFAULT_MAX_DIRTY: u32 = 4;

/// Why a region size or a map placement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrlSpaceError {
    /// A region size the user gave does not follow the rules.
    #[error("{0}")]
    RegionSize(String),
    /// Too few disks could hold a copy.
    #[error(
        "a region log needs {need} working disks that are not spares in {dg}, to keep its \
         copies on different disks; it has {}",
        name_list(have)
    )]
    NotEnoughDisks {
        /// The disk group.
        dg: String,
        /// Disks needed.
        need: usize,
        /// The disks that could hold a copy.
        have: Vec<String>,
    },
    /// No disk (or too few) has a free run of log pages large enough.
    #[error(
        "no room in {dg} for {} ({}free log pages in one run: {}); {hint}",
        copies_str(*copies, *pages),
        region_str(*region_bytes),
        free_list(free)
    )]
    NoRoom {
        /// The disk group.
        dg: String,
        /// Copies still needed.
        copies: usize,
        /// Log pages per copy.
        pages: u64,
        /// The region size tried last, if a new map was being placed.
        region_bytes: Option<u64>,
        /// Each usable disk with its longest free run of log pages.
        free: Vec<(String, u64)>,
        /// What the user can do.
        hint: &'static str,
    },
}

fn name_list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        format!("{} ({})", names.len(), names.join(", "))
    }
}

fn copies_str(copies: usize, pages: u64) -> String {
    if copies == 1 {
        format!("another region log copy of {pages} log pages")
    } else {
        format!("{copies} region log copies of {pages} log pages each")
    }
}

fn region_str(region_bytes: Option<u64>) -> String {
    region_bytes.map_or(String::new(), |b| format!("{} regions; ", format_size(b)))
}

fn free_list(free: &[(String, u64)]) -> String {
    if free.is_empty() {
        return "no usable disk".to_string();
    }
    free.iter()
        .map(|(d, n)| format!("{d} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the region-size rules of one volume depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionRule {
    /// The group's block size in bytes.
    pub block_size: u32,
    /// The volume's length in blocks.
    pub volume_blocks: u64,
    /// RAID-5: data blocks per row (`(ncol − 1) × stripe_unit`); a region is then a
    /// power-of-two number of rows. `None` for other volumes: a power-of-two number of bytes.
    pub row_blocks: Option<u64>,
}

impl RegionRule {
    /// The rule of volume `volume` of `cfg` (a RAID-5 rule if one of its plexes is RAID-5);
    /// `None` if there is no such volume.
    pub fn for_volume(cfg: &DgConfig, volume: &str) -> Option<RegionRule> {
        let v = cfg.volume(volume)?;
        let row_blocks = cfg.plexes_of(volume).iter().find_map(|p| match p.layout {
            PlexLayout::Raid5 { ncol, stripe_unit } => {
                Some(u64::from(ncol.saturating_sub(1)).saturating_mul(stripe_unit))
            }
            _ => None,
        });
        Some(RegionRule {
            block_size: cfg.block_size,
            volume_blocks: v.len,
            row_blocks,
        })
    }

    fn block_bytes(&self) -> u64 {
        u64::from(self.block_size).max(1)
    }

    /// The unit a region is a power-of-two multiple of, in blocks: a row for RAID-5, a block
    /// otherwise.
    fn unit_blocks(&self) -> u64 {
        self.row_blocks.unwrap_or(1).max(1)
    }

    fn unit_bytes(&self) -> u64 {
        self.unit_blocks().saturating_mul(self.block_bytes())
    }

    /// The smallest region in blocks: the fewest (power-of-two many) units that hold
    /// [`MIN_REGION_BYTES`], at least one.
    pub fn min_region_blocks(&self) -> u64 {
        let units = MIN_REGION_BYTES
            .div_ceil(self.unit_bytes())
            .next_power_of_two();
        self.unit_blocks().saturating_mul(units)
    }

    /// The largest region in blocks: the most (power-of-two many) units within
    /// [`MAX_REGION_BYTES`], but never below [`RegionRule::min_region_blocks`].
    pub fn max_region_blocks(&self) -> u64 {
        let units = prev_power_of_two(MAX_REGION_BYTES / self.unit_bytes());
        self.unit_blocks()
            .saturating_mul(units)
            .max(self.min_region_blocks())
    }
}

/// The largest power of two at or below `n`, or 0 for 0.
fn prev_power_of_two(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        1 << n.ilog2()
    }
}

/// The default region size of a volume, in blocks: `clamp(next_pow2(ceil(len_bytes / 2^18)),
/// 64 KiB, 64 MiB)`, so at most [`DEFAULT_MAX_REGIONS`] regions until the cap; for RAID-5
/// rounded up to a power-of-two number of rows within the rule's limits.
pub fn default_region_blocks(rule: &RegionRule) -> u64 {
    let len_bytes = u128::from(rule.volume_blocks) * u128::from(rule.block_bytes());
    let target = len_bytes
        .div_ceil(u128::from(DEFAULT_MAX_REGIONS))
        .clamp(u128::from(MIN_REGION_BYTES), u128::from(MAX_REGION_BYTES));
    // In range of u64 after the clamp.
    let target = u64::try_from(target).unwrap_or(MAX_REGION_BYTES);
    let units = target.div_ceil(rule.unit_bytes()).next_power_of_two();
    rule.unit_blocks()
        .saturating_mul(units)
        .clamp(rule.min_region_blocks(), rule.max_region_blocks())
}

/// Checks a region size given in bytes and returns it in blocks: a power of two from
/// [`MIN_REGION_BYTES`] to [`MAX_REGION_BYTES`]; for RAID-5 a power-of-two number of rows
/// within [`RegionRule::min_region_blocks`] and [`RegionRule::max_region_blocks`].
pub fn check_region_bytes(rule: &RegionRule, region_bytes: u64) -> Result<u64, DrlSpaceError> {
    let bs = rule.block_bytes();
    let (min, max) = (
        rule.min_region_blocks().saturating_mul(bs),
        rule.max_region_blocks().saturating_mul(bs),
    );
    let given = format_size(region_bytes);
    let err = |why: String| Err(DrlSpaceError::RegionSize(why));
    if let Some(row) = rule.row_blocks {
        let unit = rule.unit_bytes();
        let units = region_bytes / unit;
        if !region_bytes.is_multiple_of(unit) || !units.is_power_of_two() || region_bytes < min {
            let mut sizes: Vec<String> = (0..3)
                .map(|i| min << i)
                .take_while(|s| *s <= max)
                .map(format_size)
                .collect();
            if min << 3 <= max {
                sizes.push("…".to_string());
            }
            return err(format!(
                "DRL region size {given} does not fit this RAID-5 volume: a region is a \
                 power-of-two number of its rows (a row holds {} of data); give one of {} up \
                 to {}",
                format_size(row.saturating_mul(bs)),
                sizes.join(", "),
                format_size(max)
            ));
        }
        if region_bytes > max {
            return err(format!(
                "DRL region size {given} is above {} for this RAID-5 volume (rows of {})",
                format_size(max),
                format_size(unit)
            ));
        }
        return Ok(region_bytes / bs);
    }
    let range = format!(
        "give a power of two from {} to {}",
        format_size(min),
        format_size(max)
    );
    if !region_bytes.is_power_of_two() {
        return err(format!(
            "DRL region size {given} is not a power of two; {range}"
        ));
    }
    if region_bytes < min {
        return err(format!(
            "DRL region size {given} is below {}; {range}",
            format_size(min)
        ));
    }
    if region_bytes > max {
        return err(format!(
            "DRL region size {given} is above {}; {range}",
            format_size(max)
        ));
    }
    Ok(region_bytes / bs)
}

/// The size of a map page for a group of `block_size`-byte blocks: the larger of 4 KiB and a
/// block (the unit the private region is written in).
pub fn page_bytes(block_size: u32) -> u64 {
    MIN_PAGE_BYTES.max(u64::from(block_size))
}

/// Regions per bitmap page of `page_bytes` bytes: `(page_bytes − 32) × 8` (a multiple of 64
/// for every page size a group uses).
pub fn bits_per_page(page_bytes: u64) -> u64 {
    page_bytes.saturating_sub(PAGE_TRAILER_BYTES) * 8
}

/// Pages per bitmap (D or M) of a map of `nregions` regions, at least one.
pub fn bitmap_pages(nregions: u64, bits_per_page: u64) -> u64 {
    nregions.div_ceil(bits_per_page.max(1)).max(1)
}

/// Log-area pages one copy of a map with `pages` pages per bitmap takes: the header, D and M.
pub fn copy_pages(pages: u64) -> u64 {
    pages.saturating_mul(2).saturating_add(1)
}

/// Whole pages of `page_bytes` bytes in a log area of `log_len` bytes.
pub fn log_pages(log_len: u64, page_bytes: u64) -> u64 {
    log_len / page_bytes.max(1)
}

/// One disk's log area as the map placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogArea {
    /// The disk's name in the group.
    pub disk: String,
    /// Pages in its log area.
    pub pages: u64,
    /// Whether a copy may go there: the disk works and is not a spare.
    pub usable: bool,
    /// Page ranges `[first, end)` that copies already take, sorted by start.
    pub used: Vec<Range<u64>>,
}

impl LogArea {
    /// The first page of the first free run of `n` pages (first fit).
    pub fn first_fit(&self, n: u64) -> Option<u64> {
        let mut at: u64 = 0;
        for r in &self.used {
            if r.start >= at.saturating_add(n) {
                break;
            }
            at = at.max(r.end);
        }
        (at.saturating_add(n) <= self.pages).then_some(at)
    }

    /// The longest run of free pages.
    pub fn largest_free(&self) -> u64 {
        let mut at: u64 = 0;
        let mut best: u64 = 0;
        for r in &self.used {
            best = best.max(r.start.min(self.pages).saturating_sub(at));
            at = at.max(r.end);
        }
        best.max(self.pages.saturating_sub(at))
    }
}

/// Every disk of `cfg` with its log area of `log_pages(disk)` pages (from the disk's label;
/// 0 when unknown) and the pages the recorded copies of every volume's map take there.
pub fn log_areas(cfg: &DgConfig, log_pages: impl Fn(&DiskRecord) -> u64) -> Vec<LogArea> {
    cfg.disks
        .iter()
        .map(|d| {
            let mut used: Vec<Range<u64>> = cfg
                .volumes
                .iter()
                .filter_map(|v| v.drl.as_ref())
                .flat_map(|drl| {
                    drl.copies
                        .iter()
                        .filter(|c| c.disk == d.name)
                        .map(|c| u64::from(c.page)..u64::from(c.page) + drl.copy_pages())
                })
                .collect();
            used.sort_by_key(|r| (r.start, r.end));
            LogArea {
                disk: d.name.clone(),
                pages: log_pages(d),
                usable: d.condition == DiskCondition::Ok && !d.spare,
                used,
            }
        })
        .collect()
}

/// The disks of each data plex of `volume` (log plexes left out), each disk once per plex in
/// the order of the plex's subdisks.
pub fn plex_disks(cfg: &DgConfig, volume: &str) -> Vec<Vec<String>> {
    cfg.plexes_of(volume)
        .iter()
        .filter(|p| !matches!(p.state, PlexState::Log | PlexState::Badlog))
        .map(|p| {
            let mut disks: Vec<String> = Vec::new();
            for sd in cfg.subdisks_of(&p.name) {
                if sd.subvolume.is_none() && !disks.contains(&sd.disk) {
                    disks.push(sd.disk.clone());
                }
            }
            disks
        })
        .collect()
}

/// What [`place_map`] places.
#[derive(Debug, Clone, Copy)]
pub struct MapRequest<'a> {
    /// The volume's region rules (its length, block size, rows).
    pub rule: RegionRule,
    /// The region size to start from, in blocks.
    pub region_blocks: u64,
    /// Whether the region size may be doubled (up to [`RegionRule::max_region_blocks`]) until
    /// the map fits: for a default size; a size the user gave is kept.
    pub may_grow: bool,
    /// The disks of each plex of the volume ([`plex_disks`]).
    pub plex_disks: &'a [Vec<String>],
}

/// Where a new map goes and how big it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapPlacement {
    /// Volume blocks per region (the request's, or doubled).
    pub region_blocks: u64,
    /// Regions of the volume.
    pub nregions: u64,
    /// Pages per bitmap.
    pub pages: u32,
    /// The copies, on [`MAP_COPIES`] different disks.
    pub copies: Vec<DrlCopyRecord>,
}

impl MapPlacement {
    /// The configuration record of a new map placed here, with generation `epoch` (one no
    /// earlier map of the volume had), normal mode, the default clear interval and
    /// sequential target, M at generation 1 and not tracking.
    pub fn into_record(self, epoch: u64) -> DrlRecord {
        DrlRecord {
            region_blocks: self.region_blocks,
            mode: DrlMode::Normal,
            max_dirty: DEFAULT_MAX_DIRTY,
            clear_ms: DEFAULT_CLEAR_MS,
            epoch,
            m_epoch: 1,
            tracking: false,
            valid: true,
            pages: self.pages,
            copies: self.copies,
        }
    }
}

/// Places a new map of the volume [`MapRequest`] describes in the log areas of disk group
/// `dg` (see the module doc for the order of preference). Fails if fewer than
/// [`MAP_COPIES`] disks can hold a copy, or none of the region sizes it may try fits.
pub fn place_map(
    dg: &str,
    areas: &[LogArea],
    req: &MapRequest<'_>,
) -> Result<MapPlacement, DrlSpaceError> {
    let usable: Vec<String> = areas
        .iter()
        .filter(|a| a.usable)
        .map(|a| a.disk.clone())
        .collect();
    if usable.len() < MAP_COPIES {
        return Err(DrlSpaceError::NotEnoughDisks {
            dg: dg.to_string(),
            need: MAP_COPIES,
            have: usable,
        });
    }
    let bpp = bits_per_page(page_bytes(req.rule.block_size));
    let max_region = req.rule.max_region_blocks();
    let mut region_blocks = req.region_blocks.max(1);
    loop {
        let nregions = req.rule.volume_blocks.div_ceil(region_blocks);
        let pages = bitmap_pages(nregions, bpp);
        let need = copy_pages(pages);
        if let (Ok(pages32), Some((a, b))) = (
            u32::try_from(pages),
            choose_pair(areas, req.plex_disks, need),
        ) {
            return Ok(MapPlacement {
                region_blocks,
                nregions,
                pages: pages32,
                copies: vec![a, b],
            });
        }
        let next = region_blocks.saturating_mul(2);
        if !req.may_grow || pages == 1 || next > max_region {
            return Err(DrlSpaceError::NoRoom {
                dg: dg.to_string(),
                copies: MAP_COPIES,
                pages: need,
                region_bytes: Some(region_blocks.saturating_mul(u64::from(req.rule.block_size))),
                free: free_runs(areas, &[]),
                hint: if req.may_grow {
                    "add a disk, or turn DRL off on another volume of the group"
                } else {
                    "use a larger region size, or add a disk"
                },
            });
        }
        region_blocks = next;
    }
}

/// Places one more copy of a map of `copy_pages` pages per copy, on a disk other than `keep`
/// (the copy that stays) and `avoid` (e.g. the disk whose copy failed), preferring a disk of
/// a plex `keep` is not on.
pub fn place_copy(
    dg: &str,
    areas: &[LogArea],
    plex_disks: &[Vec<String>],
    copy_pages: u64,
    keep: &str,
    avoid: &[&str],
) -> Result<DrlCopyRecord, DrlSpaceError> {
    let mut skip: Vec<&str> = avoid.to_vec();
    skip.push(keep);
    if let Some(c) = choose_partner(areas, plex_disks, copy_pages, keep, &skip) {
        return Ok(c);
    }
    Err(DrlSpaceError::NoRoom {
        dg: dg.to_string(),
        copies: 1,
        pages: copy_pages,
        region_bytes: None,
        free: free_runs(areas, &skip),
        hint: "add a disk, or turn DRL off on another volume of the group",
    })
}

/// The usable disks not in `skip` with their longest free run, for an error message.
fn free_runs(areas: &[LogArea], skip: &[&str]) -> Vec<(String, u64)> {
    areas
        .iter()
        .filter(|a| a.usable && !skip.contains(&a.disk.as_str()))
        .map(|a| (a.disk.clone(), a.largest_free()))
        .collect()
}

/// A disk that has room for a copy.
struct Candidate<'a> {
    /// The disk's name.
    disk: &'a str,
    /// The first page of its first free run that is long enough.
    page: u64,
    /// The plexes (indices into the plex disks) it holds a piece of.
    plexes: Vec<usize>,
}

impl Candidate<'_> {
    fn record(&self) -> Option<DrlCopyRecord> {
        Some(DrlCopyRecord {
            disk: self.disk.to_string(),
            page: u32::try_from(self.page).ok()?,
        })
    }
}

/// The plexes `disk` holds a piece of.
fn plexes_of(plex_disks: &[Vec<String>], disk: &str) -> Vec<usize> {
    (0..plex_disks.len())
        .filter(|&i| plex_disks[i].iter().any(|d| d == disk))
        .collect()
}

/// The usable disks not in `skip` with a free run of `need` pages, in order of preference:
/// plex disks in plex and subdisk order first, then the others by name.
fn candidates<'a>(
    areas: &'a [LogArea],
    plex_disks: &[Vec<String>],
    need: u64,
    skip: &[&str],
) -> Vec<Candidate<'a>> {
    let order_key = |disk: &str| -> (usize, usize) {
        plex_disks
            .iter()
            .enumerate()
            .find_map(|(i, ds)| ds.iter().position(|d| d == disk).map(|j| (i, j)))
            .unwrap_or((usize::MAX, 0))
    };
    let mut cands: Vec<Candidate<'a>> = areas
        .iter()
        .filter(|a| a.usable && !skip.contains(&a.disk.as_str()))
        .filter_map(|a| {
            a.first_fit(need).map(|page| Candidate {
                disk: &a.disk,
                page,
                plexes: plexes_of(plex_disks, &a.disk),
            })
        })
        .collect();
    cands.sort_by(|x, y| (order_key(x.disk), x.disk).cmp(&(order_key(y.disk), y.disk)));
    cands
}

/// How good two copies on disks holding pieces of plexes `a` and `b` are: both on the
/// volume's plexes and no plex in common 3, both on its plexes 2, one 1, none 0.
fn score(a: &[usize], b: &[usize]) -> u8 {
    match (a.is_empty(), b.is_empty()) {
        (false, false) if !a.iter().any(|p| b.contains(p)) => 3,
        (false, false) => 2,
        (false, true) | (true, false) => 1,
        (true, true) => 0,
    }
}

/// The best two places for copies of `need` pages: the pair with the highest [`score`], the
/// first such pair in the order of [`candidates`].
fn choose_pair(
    areas: &[LogArea],
    plex_disks: &[Vec<String>],
    need: u64,
) -> Option<(DrlCopyRecord, DrlCopyRecord)> {
    let cands = candidates(areas, plex_disks, need, &[]);
    let mut best: Option<(u8, usize, usize)> = None;
    for i in 0..cands.len() {
        for j in i + 1..cands.len() {
            let s = score(&cands[i].plexes, &cands[j].plexes);
            if best.is_none_or(|b| s > b.0) {
                best = Some((s, i, j));
            }
        }
    }
    let (_, i, j) = best?;
    Some((cands[i].record()?, cands[j].record()?))
}

/// The best place for a copy of `need` pages next to the copy on `keep` (whose disk, like
/// those in `skip`, is not chosen).
fn choose_partner(
    areas: &[LogArea],
    plex_disks: &[Vec<String>],
    need: u64,
    keep: &str,
    skip: &[&str],
) -> Option<DrlCopyRecord> {
    let kept = plexes_of(plex_disks, keep);
    let cands = candidates(areas, plex_disks, need, skip);
    let mut best: Option<(u8, usize)> = None;
    for (j, c) in cands.iter().enumerate() {
        let s = score(&kept, &c.plexes);
        if best.is_none_or(|b| s > b.0) {
            best = Some((s, j));
        }
    }
    cands[best?.1].record()
}

#[cfg(test)]
// Page ranges in use are written as `[2..5]`: a list of one range, not a range of pages.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    fn mirror(len_bytes: u64) -> RegionRule {
        RegionRule {
            block_size: 512,
            volume_blocks: len_bytes / 512,
            row_blocks: None,
        }
    }

    fn raid5(len_bytes: u64, ncol: u64, su_bytes: u64) -> RegionRule {
        RegionRule {
            block_size: 512,
            volume_blocks: len_bytes / 512,
            row_blocks: Some((ncol - 1) * su_bytes / 512),
        }
    }

    fn default_bytes(rule: &RegionRule) -> u64 {
        default_region_blocks(rule) * u64::from(rule.block_size)
    }

    /// The design's table: volume size → default region → regions → pages per bitmap.
    #[test]
    fn default_region_follows_the_table() {
        let bpp = bits_per_page(page_bytes(512));
        assert_eq!(bpp, 32_512);
        for (len, region, regions, pages) in [
            (256 * MIB, 64 * KIB, 4096, 1),
            (4 * GIB, 64 * KIB, 65_536, 3),
            (16 * GIB, 64 * KIB, 262_144, 9),
            (100 * GIB, 512 * KIB, 204_800, 7),
            (TIB, 4 * MIB, 262_144, 9),
            (64 * TIB, 64 * MIB, 1_048_576, 33),
        ] {
            let rule = mirror(len);
            let rb = default_region_blocks(&rule);
            assert_eq!(rb * 512, region, "{len}");
            let n = rule.volume_blocks.div_ceil(rb);
            assert_eq!(n, regions, "{len}");
            assert_eq!(bitmap_pages(n, bpp), pages, "{len}");
        }
        // Just above a power of two: the map never exceeds 2^18 regions below the cap.
        let rule = mirror(16 * GIB + 512);
        let n = rule.volume_blocks.div_ceil(default_region_blocks(&rule));
        assert!(n <= DEFAULT_MAX_REGIONS, "{n}");
        assert_eq!(default_bytes(&mirror(4096)), 64 * KIB);
        assert_eq!(default_bytes(&mirror(1 << 60)), 64 * MIB);
        // A 4 KiB-block group: same bytes, fewer blocks.
        let big = RegionRule {
            block_size: 4096,
            volume_blocks: GIB / 4096,
            row_blocks: None,
        };
        assert_eq!(default_region_blocks(&big), 16);
    }

    #[test]
    fn raid5_default_is_a_power_of_two_number_of_rows() {
        // 4 columns of 16 KiB: rows of 48 KiB.
        let rule = raid5(4 * GIB, 4, 16 * KIB);
        assert_eq!(default_bytes(&rule), 96 * KIB, "2 rows hold 64 KiB");
        // 100 GiB wants 400 KiB regions: 16 rows (768 KiB).
        let rule = raid5(100 * GIB, 4, 16 * KIB);
        assert_eq!(default_bytes(&rule), 768 * KIB);
        // The cap: 1024 rows of 48 KiB, not 2048 (96 MiB).
        let rule = raid5(64 * TIB, 4, 16 * KIB);
        assert_eq!(default_bytes(&rule), 48 * MIB);
        // Rows of 64 KiB (5 columns of 16 KiB) are powers of two themselves.
        assert_eq!(default_bytes(&raid5(GIB, 5, 16 * KIB)), 64 * KIB);
        // A row above 64 MiB: one row.
        let huge = raid5(TIB, 3, 48 * MIB);
        assert_eq!(default_bytes(&huge), 96 * MIB);
        for rule in [rule, huge, raid5(3 * GIB, 6, 64 * KIB)] {
            let rb = default_region_blocks(&rule);
            let rows = rb / rule.row_blocks.unwrap();
            assert_eq!(rb % rule.row_blocks.unwrap(), 0);
            assert!(rows.is_power_of_two());
        }
    }

    #[test]
    fn region_sizes_given_are_checked() {
        let rule = mirror(GIB);
        assert_eq!(check_region_bytes(&rule, 64 * KIB), Ok(128));
        assert_eq!(check_region_bytes(&rule, 64 * MIB), Ok(128 * KIB));
        let msg = |r: &RegionRule, b| match check_region_bytes(r, b) {
            Err(DrlSpaceError::RegionSize(m)) => m,
            other => panic!("{b}: {other:?}"),
        };
        assert_eq!(
            msg(&rule, 100 * KIB),
            "DRL region size 100 KiB is not a power of two; give a power of two from 64 KiB \
             to 64 MiB"
        );
        assert!(msg(&rule, 32 * KIB).contains("is below 64 KiB"));
        assert!(msg(&rule, 128 * MIB).contains("is above 64 MiB"));
        assert!(msg(&rule, 0).contains("not a power of two"));
        // RAID-5, rows of 48 KiB: 96 KiB … 48 MiB.
        let r5 = raid5(GIB, 4, 16 * KIB);
        assert_eq!(check_region_bytes(&r5, 96 * KIB), Ok(192));
        assert_eq!(check_region_bytes(&r5, 48 * MIB), Ok(96 * KIB));
        assert_eq!(
            msg(&r5, 64 * KIB),
            "DRL region size 64 KiB does not fit this RAID-5 volume: a region is a \
             power-of-two number of its rows (a row holds 48 KiB of data); give one of 96 KiB, \
             192 KiB, 384 KiB, … up to 48 MiB"
        );
        assert!(
            msg(&r5, 48 * KIB).contains("give one of 96 KiB"),
            "below the minimum"
        );
        assert!(
            msg(&r5, 144 * KIB).contains("power-of-two number"),
            "3 rows"
        );
        assert!(msg(&r5, 96 * MIB).contains("is above 48 MiB"));
    }

    #[test]
    fn pages_and_footprints() {
        assert_eq!(page_bytes(512), 4096);
        assert_eq!(page_bytes(8192), 8192);
        assert_eq!(bits_per_page(4096), 32_512);
        assert_eq!(bits_per_page(8192), 65_280);
        assert_eq!(bits_per_page(64 * 1024), 524_032);
        for p in [4096, 8192, 65536] {
            assert_eq!(bits_per_page(p) % 64, 0);
        }
        assert_eq!(bitmap_pages(0, 32_512), 1);
        assert_eq!(bitmap_pages(32_512, 32_512), 1);
        assert_eq!(bitmap_pages(32_513, 32_512), 2);
        assert_eq!(copy_pages(9), 19);
        assert_eq!(log_pages(960 * KIB, 4096), 240);
        assert_eq!(log_pages(896 * KIB, 64 * KIB), 14);
    }

    fn area(disk: &str, pages: u64, used: &[Range<u64>]) -> LogArea {
        LogArea {
            disk: disk.into(),
            pages,
            usable: true,
            used: used.to_vec(),
        }
    }

    #[test]
    fn first_fit_and_free_runs() {
        let a = area("d", 20, &[2..5, 5..8, 12..14]);
        assert_eq!(a.first_fit(2), Some(0));
        assert_eq!(a.first_fit(3), Some(8));
        assert_eq!(a.first_fit(4), Some(8));
        assert_eq!(a.first_fit(5), Some(14));
        assert_eq!(a.first_fit(6), Some(14));
        assert_eq!(a.first_fit(7), None);
        assert_eq!(a.largest_free(), 6);
        assert_eq!(area("e", 3, &[]).first_fit(3), Some(0));
        assert_eq!(area("e", 3, &[]).first_fit(4), None);
        assert_eq!(area("f", 10, &[0..12]).largest_free(), 0);
        assert_eq!(area("f", 10, &[0..12]).first_fit(1), None);
    }

    fn request(rule: RegionRule, plexes: &[Vec<String>], may_grow: bool) -> MapRequest<'_> {
        MapRequest {
            rule,
            region_blocks: default_region_blocks(&rule),
            may_grow,
            plex_disks: plexes,
        }
    }

    fn disks(names: &[&[&str]]) -> Vec<Vec<String>> {
        names
            .iter()
            .map(|p| p.iter().map(|d| d.to_string()).collect())
            .collect()
    }

    fn placed(p: &MapPlacement) -> Vec<(&str, u32)> {
        p.copies.iter().map(|c| (c.disk.as_str(), c.page)).collect()
    }

    #[test]
    fn copies_go_to_different_plexes_first() {
        let areas = vec![
            area("disk01", 240, &[]),
            area("disk02", 240, &[0..3]),
            area("disk03", 240, &[]),
            area("disk04", 240, &[]),
        ];
        // Plex A on disk03 and disk01 (striped), plex B on disk02.
        let plexes = disks(&[&["disk03", "disk01"], &["disk02"]]);
        let p = place_map("dg01", &areas, &request(mirror(4 * GIB), &plexes, true)).unwrap();
        assert_eq!(placed(&p), vec![("disk03", 0), ("disk02", 3)]);
        assert_eq!((p.region_blocks, p.nregions, p.pages), (128, 65_536, 3));
        let rec = p.into_record(5);
        assert_eq!(
            (rec.epoch, rec.region_blocks, rec.copy_pages()),
            (5, 128, 7)
        );
        assert!(rec.valid && !rec.tracking);
        assert_eq!(rec.copies[1].page, 3);
        // disk02 full: both copies on plex A's disks rather than on disk04.
        let mut full = areas.clone();
        full[1].used = vec![0..240];
        let p = place_map("dg01", &full, &request(mirror(4 * GIB), &plexes, true)).unwrap();
        assert_eq!(placed(&p), vec![("disk03", 0), ("disk01", 0)]);
        // A one-disk volume: its own disk and the first other.
        let one = disks(&[&["disk04"]]);
        let p = place_map("dg01", &areas, &request(mirror(GIB), &one, true)).unwrap();
        assert_eq!(placed(&p), vec![("disk04", 0), ("disk01", 0)]);
        // No plex disk usable: the first two others by name.
        let p = place_map("dg01", &areas, &request(mirror(GIB), &[], true)).unwrap();
        assert_eq!(placed(&p), vec![("disk01", 0), ("disk02", 3)]);
    }

    #[test]
    fn spares_and_failed_disks_are_never_used() {
        let mut areas = vec![
            area("disk01", 240, &[]),
            area("disk02", 240, &[]),
            area("disk03", 240, &[]),
        ];
        areas[0].usable = false;
        let plexes = disks(&[&["disk01"], &["disk02"]]);
        let p = place_map("dg01", &areas, &request(mirror(GIB), &plexes, true)).unwrap();
        assert_eq!(placed(&p), vec![("disk02", 0), ("disk03", 0)]);
        areas[2].usable = false;
        let e = place_map("dg01", &areas, &request(mirror(GIB), &plexes, true)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a region log needs 2 working disks that are not spares in dg01, to keep its \
             copies on different disks; it has 1 (disk02)"
        );
    }

    #[test]
    fn log_areas_come_from_the_config() {
        let mut cfg: DgConfig = serde_json::from_value(serde_json::json!({
            "name": "dg01", "id": uuid::Uuid::nil(), "block_size": 512, "nconfig": 0,
            "disks": [], "subdisks": [], "plexes": [], "volumes": []}))
        .unwrap();
        for (name, spare, condition) in [
            ("disk01", false, DiskCondition::Ok),
            ("disk02", true, DiskCondition::Ok),
            ("disk03", false, DiskCondition::Failed),
        ] {
            cfg.disks.push(DiskRecord {
                name: name.into(),
                disk_id: uuid::Uuid::nil(),
                device: name.into(),
                expected_serial: 1,
                public_len: 1 << 20,
                public_offset: 2048,
                spare,
                nohotuse: false,
                condition,
            });
        }
        let vol = |name: &str, len: u64| {
            serde_json::from_value::<crate::volume::model::objects::VolumeRecord>(
                serde_json::json!({"name": name, "uuid": uuid::Uuid::nil(), "len": len,
                "state": "CLEAN", "kstate": "DISABLED", "read_policy": {"policy": "select"},
                "layout": "mirror", "autostart": false, "resync_offset": null}),
            )
            .unwrap()
        };
        let drl = |pages: u32, copies: &[(&str, u32)]| DrlRecord {
            region_blocks: 128,
            mode: Default::default(),
            max_dirty: DEFAULT_MAX_DIRTY,
            clear_ms: DEFAULT_CLEAR_MS,
            epoch: 1,
            m_epoch: 1,
            tracking: false,
            valid: true,
            pages,
            copies: copies
                .iter()
                .map(|&(d, page)| DrlCopyRecord {
                    disk: d.into(),
                    page,
                })
                .collect(),
        };
        let mut v1 = vol("vol01", 1 << 21);
        v1.drl = Some(drl(3, &[("disk01", 10), ("disk03", 0)]));
        let mut v2 = vol("vol02", 1 << 21);
        v2.drl = Some(drl(1, &[("disk01", 0)]));
        cfg.volumes.extend([v1, v2, vol("vol03", 100)]);
        cfg.plexes.push(crate::volume::model::objects::PlexRecord {
            name: "vol01-01".into(),
            volume: Some("vol01".into()),
            layout: PlexLayout::Concat,
            state: PlexState::Active,
            kstate: crate::volume::model::objects::KernelState::Enabled,
            sync_offset: None,
            stale_columns: Vec::new(),
            log_epoch: 0,
            drl_missed: None,
            sync_mode: Default::default(),
        });
        let areas = log_areas(&cfg, |d| if d.name == "disk01" { 240 } else { 120 });
        assert_eq!(
            areas,
            vec![
                area("disk01", 240, &[0..3, 10..17]),
                LogArea {
                    usable: false,
                    ..area("disk02", 120, &[])
                },
                LogArea {
                    usable: false,
                    ..area("disk03", 120, &[0..7])
                },
            ]
        );
        assert_eq!(areas[0].first_fit(7), Some(3));
        assert_eq!(areas[0].first_fit(8), Some(17));
        let rule = RegionRule::for_volume(&cfg, "vol01").unwrap();
        assert_eq!(rule.row_blocks, None);
        assert_eq!(rule.volume_blocks, 1 << 21);
        assert!(RegionRule::for_volume(&cfg, "nosuch").is_none());
        cfg.plexes[0].layout = PlexLayout::Raid5 {
            ncol: 4,
            stripe_unit: 32,
        };
        assert_eq!(
            RegionRule::for_volume(&cfg, "vol01").unwrap().row_blocks,
            Some(96)
        );
        // plex_disks: data plexes only, each disk once.
        cfg.add_plex(
            "vol01",
            PlexLayout::Concat,
            PlexState::Active,
            crate::volume::model::objects::KernelState::Enabled,
            &[vec![
                ("disk03".into(), 0, 10),
                ("disk01".into(), 0, 10),
                ("disk03".into(), 20, 10),
            ]],
        );
        cfg.add_plex(
            "vol01",
            PlexLayout::Concat,
            PlexState::Log,
            crate::volume::model::objects::KernelState::Enabled,
            &[vec![("disk02".into(), 0, 10)]],
        );
        assert_eq!(
            plex_disks(&cfg, "vol01"),
            disks(&[&[], &["disk03", "disk01"]])
        );
    }

    #[test]
    fn region_doubles_until_the_map_fits() {
        // 16 GiB default: 9 pages per bitmap, 19 per copy; only 10 free pages per disk.
        let areas = vec![area("disk01", 10, &[]), area("disk02", 12, &[0..2])];
        let plexes = disks(&[&["disk01"], &["disk02"]]);
        let p = place_map("dg01", &areas, &request(mirror(16 * GIB), &plexes, true)).unwrap();
        // 256 KiB regions: 65,536 regions, 3 pages, 7 per copy (128 KiB would need 11).
        assert_eq!(
            (p.region_blocks * 512, p.nregions, p.pages),
            (256 * KIB, 65_536, 3)
        );
        assert_eq!(placed(&p), vec![("disk01", 0), ("disk02", 2)]);
        // A size the user gave is kept: the error says what is free and what to do.
        let e = place_map("dg01", &areas, &request(mirror(16 * GIB), &plexes, false)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no room in dg01 for 2 region log copies of 19 log pages each (64 KiB regions; free \
             log pages in one run: disk01 10, disk02 10); use a larger region size, or add a \
             disk"
        );
        // Doubling stops at one page per bitmap.
        let tiny = vec![area("disk01", 2, &[]), area("disk02", 240, &[])];
        let e = place_map("dg01", &tiny, &request(mirror(16 * GIB), &plexes, true)).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "no room in dg01 for 2 region log copies of 3 log pages each (1 MiB regions;"
            ),
            "{e}"
        );
        assert!(e
            .to_string()
            .ends_with("add a disk, or turn DRL off on another volume of the group"));
        // And at the largest region: 64 TiB at 64 MiB still needs 67 pages.
        let small = vec![area("disk01", 60, &[]), area("disk02", 240, &[])];
        let e = place_map("dg01", &small, &request(mirror(64 * TIB), &plexes, true)).unwrap_err();
        assert!(
            e.to_string().contains("67 log pages each (64 MiB regions;"),
            "{e}"
        );
    }

    #[test]
    fn a_relocated_copy_avoids_the_kept_and_failed_disks() {
        let areas = vec![
            area("disk01", 240, &[0..3]),
            area("disk02", 240, &[0..3]),
            area("disk03", 240, &[]),
            area("disk04", 240, &[]),
        ];
        let plexes = disks(&[&["disk01"], &["disk02", "disk04"]]);
        // disk02's copy failed; disk01 keeps one: plex B's other disk is best.
        let c = place_copy("dg01", &areas, &plexes, 3, "disk01", &["disk02"]).unwrap();
        assert_eq!((c.disk.as_str(), c.page), ("disk04", 0));
        // disk01's copy failed; disk02 keeps one: plex A's disk01 is avoided, disk04 shares
        // plex B, so it still beats disk03 (on no plex).
        let c = place_copy("dg01", &areas, &plexes, 3, "disk02", &["disk01"]).unwrap();
        assert_eq!((c.disk.as_str(), c.page), ("disk04", 0));
        let c = place_copy("dg01", &areas, &plexes, 3, "disk02", &["disk01", "disk04"]).unwrap();
        assert_eq!((c.disk.as_str(), c.page), ("disk03", 0));
        let e = place_copy("dg01", &areas, &plexes, 241, "disk02", &["disk01"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no room in dg01 for another region log copy of 241 log pages (free log pages in \
             one run: disk03 240, disk04 240); add a disk, or turn DRL off on another volume \
             of the group"
        );
    }

    fn arb_area(i: usize) -> impl Strategy<Value = LogArea> {
        (
            0u64..60,
            any::<bool>(),
            proptest::collection::vec((0u64..6, 1u64..8), 0..5),
        )
            .prop_map(move |(pages, usable, runs)| {
                let mut used = Vec::new();
                let mut at = 0;
                for (gap, len) in runs {
                    used.push(at + gap..at + gap + len);
                    at += gap + len;
                }
                LogArea {
                    disk: format!("disk{i:02}"),
                    pages,
                    usable: usable || i < 2,
                    used,
                }
            })
    }

    fn arb_case() -> impl Strategy<Value = (Vec<LogArea>, Vec<Vec<String>>, u64, bool)> {
        (1usize..6).prop_flat_map(|n| {
            (
                (0..n).map(arb_area).collect::<Vec<_>>(),
                proptest::collection::vec(proptest::collection::vec(0..n, 1..3), 0..3),
                1u64..(1 << 36),
                any::<bool>(),
            )
                .prop_map(|(areas, plexes, len, grow)| {
                    let plexes = plexes
                        .into_iter()
                        .map(|p| p.into_iter().map(|d| format!("disk{d:02}")).collect())
                        .collect();
                    (areas, plexes, len, grow)
                })
        })
    }

    proptest! {
        #[test]
        fn placements_respect_the_log_areas((areas, plexes, len, grow) in arb_case()) {
            for a in &areas {
                for n in 1..12 {
                    prop_assert_eq!(a.first_fit(n).is_some(), a.largest_free() >= n);
                }
            }
            let rule = mirror(len * 512);
            let req = request(rule, &plexes, grow);
            match place_map("dg01", &areas, &req) {
                Ok(p) => {
                    prop_assert_eq!(p.copies.len(), MAP_COPIES);
                    prop_assert!(p.copies[0].disk != p.copies[1].disk);
                    prop_assert_eq!(p.nregions, rule.volume_blocks.div_ceil(p.region_blocks));
                    prop_assert_eq!(u64::from(p.pages), bitmap_pages(p.nregions, 32_512));
                    prop_assert!(p.region_blocks >= req.region_blocks);
                    prop_assert!((p.region_blocks / req.region_blocks).is_power_of_two());
                    prop_assert!(grow || p.region_blocks == req.region_blocks);
                    let need = copy_pages(u64::from(p.pages));
                    for c in &p.copies {
                        let a = areas.iter().find(|a| a.disk == c.disk).unwrap();
                        prop_assert!(a.usable);
                        let r = u64::from(c.page)..u64::from(c.page) + need;
                        prop_assert!(r.end <= a.pages);
                        prop_assert!(a.used.iter().all(|u| u.end <= r.start || r.end <= u.start));
                    }
                    prop_assert_eq!(place_map("dg01", &areas, &req), Ok(p));
                }
                Err(DrlSpaceError::NoRoom { pages, .. }) => {
                    let fitting = areas
                        .iter()
                        .filter(|a| a.usable && a.largest_free() >= pages)
                        .count();
                    prop_assert!(fitting < MAP_COPIES);
                }
                Err(DrlSpaceError::NotEnoughDisks { have, .. }) => {
                    prop_assert!(have.len() < MAP_COPIES);
                    prop_assert_eq!(have.len(), areas.iter().filter(|a| a.usable).count());
                }
                Err(e) => prop_assert!(false, "unexpected {}", e),
            }
        }
    }
}
