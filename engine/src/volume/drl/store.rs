//! A volume's region log map on its disks: making a copy, reading every copy back into the D
//! and M sets recovery uses, and writing bitmap pages to every copy. For the manager thread
//! only: every function blocks on the private-region I/O of `ondisk::disk` (each request with
//! its timeout) and allocates freely; a reactor never calls them (its page writes are its
//! own, from a preallocated buffer).
//!
//! - [`MapSpec`]: the map a volume's configuration describes (owner ids, epochs, geometry,
//!   where the copies are), checked once. Copy `i` of a map is `DrlRecord::copies[i]`, and
//!   its header carries `i` as its copy index.
//! - [`CopyDisk`]: a present disk (name, bdev, label) that may hold a copy; disks of the
//!   group that are absent are simply not passed.
//! - [`init_map`] / [`init_all`]: write a whole copy (header, D and M pages, sealed) and
//!   flush it, before the configuration records the copy (data before metadata).
//! - [`read_map`]: read every copy (no more than the map's pages) and merge them as
//!   `drl::format` says (OR of the valid copies, all ones for a page valid on none, zeros
//!   for an M page of an older epoch), with a report a user can act on ([`MapRead`]).
//! - [`write_pages`]: write sealed D/M pages from a caller's image of a copy
//!   ([`encode_image`]) to every copy, flushing each; [`zero_d`] clears D everywhere (clean
//!   stop). Both report the copies that failed ([`WriteReport`]) and fail only when no copy
//!   took the pages.
//!
//! None of these take the volume's DRL token: while the volume runs, the caller holds it, so
//! that no reactor writes pages of the same map at the same time (`../DESIGN.md`, "One writer
//! per map").

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use uuid::Uuid;

use crate::bdev::Bdev;
use crate::volume::drl::format::{
    self, merge_pages, seal_page, DrlFormatError, DrlGeometry, DrlHeader, MergeSource, PageKind,
    PageTrailer, COPIES,
};
use crate::volume::model::drl_space;
use crate::volume::model::objects::{DgConfig, DrlMode, DrlRecord};
use crate::volume::model::region_set::RegionSet;
use crate::volume::ondisk::disk::{self, DiskError};
use crate::volume::ondisk::format::Label;
use crate::Engine;

/// Why a map could not be made, read or written as asked. Nothing was written when one of
/// these is returned, except for [`StoreError::Disk`] from [`init_map`] (a copy may be
/// partly written; the configuration does not point at it yet) and
/// [`StoreError::NoCopyWritten`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The configuration does not describe a map that can be used.
    #[error("the region log of {volume}: {why}")]
    Config {
        /// `dg/volume`.
        volume: String,
        /// What is wrong.
        why: String,
    },
    /// The caller's arguments contradict the map (an image of the wrong size, a page that is
    /// not sealed for its place, a set of another size).
    #[error("the region log of {volume}: {why}; nothing was written")]
    Invalid {
        /// `dg/volume`.
        volume: String,
        /// What is wrong.
        why: String,
    },
    /// A copy's disk is not among the present disks.
    #[error("the region log of {volume}: copy {copy} is on disk {disk}, which is not present")]
    Missing {
        /// `dg/volume`.
        volume: String,
        /// The copy's index.
        copy: usize,
        /// Its disk.
        disk: String,
    },
    /// Reading or writing a copy failed, or it lies outside its disk's log area.
    #[error("the region log of {volume}: copy {copy}: {source}")]
    Disk {
        /// `dg/volume`.
        volume: String,
        /// The copy's index.
        copy: usize,
        /// The disk error (names the disk and the pages).
        #[source]
        source: DiskError,
    },
    /// No copy took a write: nothing of it is durable.
    #[error(
        "the region log of {volume} could not be written on any copy ({}); the pages are not \
         durable",
        .report
    )]
    NoCopyWritten {
        /// `dg/volume`.
        volume: String,
        /// Why each copy failed.
        report: WriteReport,
    },
}

/// The map a volume's configuration describes, checked: what every copy's header must say and
/// where the copies are. Build it with [`MapSpec::new`] from the configuration the map belongs
/// to (after a commit that changes `drl`, build a new one).
#[derive(Debug, Clone)]
pub struct MapSpec {
    /// `dg/volume`, for messages.
    name: String,
    dg_id: Uuid,
    volume: Uuid,
    record: DrlRecord,
    geometry: DrlGeometry,
}

impl MapSpec {
    /// The map of volume `volume` of `cfg`. Fails if there is no such volume, it has no region
    /// log, or its record contradicts itself (a region size, length and page size that make
    /// another number of pages than recorded, more than [`COPIES`] copies).
    pub fn new(cfg: &DgConfig, volume: &str) -> Result<MapSpec, StoreError> {
        let name = format!("{}/{volume}", cfg.name);
        let err = |why: String| StoreError::Config {
            volume: name.clone(),
            why,
        };
        let v = cfg
            .volume(volume)
            .ok_or_else(|| err("no such volume".to_string()))?;
        let record = v
            .drl
            .clone()
            .ok_or_else(|| err("the volume has no region log".to_string()))?;
        let page_size = u32::try_from(drl_space::page_bytes(cfg.block_size))
            .map_err(|_| err(format!("block size {} is too large", cfg.block_size)))?;
        let geometry = DrlGeometry::new(record.region_blocks, v.len, page_size)
            .map_err(|e| err(e.to_string()))?;
        if geometry.pages() != record.pages {
            return Err(err(format!(
                "the configuration records {} pages per bitmap, but {} regions of {} blocks \
                 need {}",
                record.pages,
                geometry.nregions(),
                record.region_blocks,
                geometry.pages()
            )));
        }
        if record.copies.len() > COPIES as usize {
            return Err(err(format!(
                "the configuration records {} copies; a map has at most {COPIES}",
                record.copies.len()
            )));
        }
        Ok(MapSpec {
            name,
            dg_id: cfg.id,
            volume: v.uuid,
            record,
            geometry,
        })
    }

    /// The map's geometry (regions, pages).
    pub fn geometry(&self) -> &DrlGeometry {
        &self.geometry
    }

    /// The configuration record the map was built from.
    pub fn record(&self) -> &DrlRecord {
        &self.record
    }

    /// Bytes of one page.
    pub fn page_size(&self) -> usize {
        self.geometry.page_size() as usize
    }

    /// Bytes of one copy: `(1 + 2P)` pages; the size of an image ([`encode_image`]).
    pub fn image_len(&self) -> usize {
        self.geometry.map_pages() as usize * self.page_size()
    }

    /// The header copy `copy` must carry (`created` is not compared when reading).
    fn header(&self, copy: u32, created: u64) -> DrlHeader {
        DrlHeader {
            dg_id: self.dg_id,
            volume: self.volume,
            epoch: self.record.epoch,
            geometry: self.geometry,
            copy,
            sequential: self.record.mode == DrlMode::Sequential,
            created,
        }
    }

    /// The trailer page `index` of bitmap `kind` must carry: the map's epoch for D, the M
    /// epoch for M.
    fn trailer(&self, kind: PageKind, index: u32) -> PageTrailer {
        let epoch = match kind {
            PageKind::Dirty => self.record.epoch,
            PageKind::Missed => self.record.m_epoch,
        };
        PageTrailer { kind, index, epoch }
    }

    /// Byte range of page `index` of bitmap `kind` in an image.
    fn page_range(&self, kind: PageKind, index: u32) -> Range<usize> {
        let at = self.geometry.page_offset(kind, index) as usize * self.page_size();
        at..at + self.page_size()
    }

    fn invalid(&self, why: String) -> StoreError {
        StoreError::Invalid {
            volume: self.name.clone(),
            why,
        }
    }

    /// The regions page `index` of a bitmap holds.
    fn regions_of_page(&self, index: u32) -> Range<u64> {
        let first = u64::from(index) * u64::from(self.geometry.bits_per_page());
        first..first + self.geometry.regions_in_page(index) as u64
    }
}

/// A present disk that may hold a copy of a map: its name in the group, its bdev and its
/// label (which places its log area).
#[derive(Debug, Clone, Copy)]
pub struct CopyDisk<'a> {
    /// The disk's name in the group (`DrlCopyRecord::disk`).
    pub name: &'a str,
    /// Its bdev.
    pub bdev: &'a Arc<Bdev>,
    /// Its label.
    pub label: &'a Label,
}

/// The present disk of copy `copy`, checked to have pages of the map's size and room for the
/// whole copy in its log area, and the byte offset of the copy on it.
fn copy_disk<'a>(
    map: &MapSpec,
    disks: &[CopyDisk<'a>],
    copy: usize,
) -> Result<(CopyDisk<'a>, u64), StoreError> {
    let rec = map
        .record
        .copies
        .get(copy)
        .ok_or_else(|| StoreError::Config {
            volume: map.name.clone(),
            why: format!(
                "there is no copy {copy} (the configuration records {})",
                map.record.copies.len()
            ),
        })?;
    let d = disks
        .iter()
        .find(|d| d.name == rec.disk)
        .copied()
        .ok_or_else(|| StoreError::Missing {
            volume: map.name.clone(),
            copy,
            disk: rec.disk.clone(),
        })?;
    let page = disk::log_page_size(d.bdev);
    if page != map.page_size() as u64 {
        return Err(StoreError::Config {
            volume: map.name.clone(),
            why: format!(
                "disk {} has log pages of {page} bytes, but the map's pages are {} bytes",
                d.name,
                map.page_size()
            ),
        });
    }
    let first = u64::from(rec.page);
    let offset = disk::log_span(d.bdev, d.label, first, u64::from(map.geometry.map_pages()))
        .map_err(|source| StoreError::Disk {
            volume: map.name.clone(),
            copy,
            source,
        })?;
    Ok((d, offset))
}

/// The byte offset on its disk of copy `copy`'s first page (its header; page `k` of the copy
/// is `k × page_size` further), checked as the other functions check a copy: its disk is
/// among `disks`, has pages of the map's size and holds the whole copy in its log area. For
/// building the I/O path's view of the copies, which writes pages itself.
pub fn copy_offset(map: &MapSpec, disks: &[CopyDisk<'_>], copy: usize) -> Result<u64, StoreError> {
    Ok(copy_disk(map, disks, copy)?.1)
}

/// An image of one copy of `map` with bitmaps `d` and `m`: `(1 + 2P)` pages, map page `k` at
/// byte `k × page_size`, the D and M pages sealed with their trailers (the map's epoch for D,
/// the M epoch for M) and the header page left zero (it differs per copy; [`init_map`] fills
/// it). This is the buffer [`write_pages`] takes. `d` and `m` must be over the map's regions.
pub fn encode_image(map: &MapSpec, d: &RegionSet, m: &RegionSet) -> Result<Vec<u8>, StoreError> {
    let n = u64::from(map.geometry.nregions());
    for (what, set) in [("D", d), ("M", m)] {
        if set.nregions() != n {
            return Err(map.invalid(format!(
                "the {what} set is over {} regions, the map has {n}",
                set.nregions()
            )));
        }
    }
    let mut image = vec![0u8; map.image_len()];
    let bpp = u64::from(map.geometry.bits_per_page());
    for (kind, set) in [(PageKind::Dirty, d), (PageKind::Missed, m)] {
        for index in 0..map.geometry.pages() {
            let page = &mut image[map.page_range(kind, index)];
            set.write_page(u64::from(index), bpp, page)
                .map_err(|e| map.invalid(e.to_string()))?;
            seal_page(page, &map.trailer(kind, index)).map_err(|e| map.invalid(e.to_string()))?;
        }
    }
    Ok(image)
}

/// Unix seconds now (0 if the clock is before 1970).
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes copy `copy` of `map` whole (its header, then D = `d` and M = `m`, sealed) into its
/// disk's log area in one request, and flushes the disk. For a new map (zero `d` and `m`), a
/// map enabled on a running volume (`d` all ones) or a relocated copy (the images in memory).
/// Call it before committing a configuration that records the copy. Fails without writing if
/// the copy's disk is not among `disks`, its place lies outside that disk's log area, or the
/// sets are not over the map's regions; an I/O error names the disk and pages.
pub fn init_map(
    engine: &Engine,
    map: &MapSpec,
    disks: &[CopyDisk<'_>],
    copy: usize,
    d: &RegionSet,
    m: &RegionSet,
) -> Result<(), StoreError> {
    let (target, _) = copy_disk(map, disks, copy)?;
    let mut image = encode_image(map, d, m)?;
    // At most COPIES (2) copies, checked by MapSpec::new.
    let header = map.header(copy as u32, now_secs());
    header
        .encode(&mut image[..map.page_size()])
        .map_err(|e| map.invalid(e.to_string()))?;
    let first = u64::from(map.record.copies[copy].page);
    let disk_err = |source| StoreError::Disk {
        volume: map.name.clone(),
        copy,
        source,
    };
    disk::write_log_pages(engine, target.bdev, target.label, first, &image).map_err(disk_err)?;
    disk::flush_log(engine, target.bdev, target.label).map_err(disk_err)
}

/// [`init_map`] for every copy the configuration records, in order; stops at the first that
/// fails. Writes nothing unless every copy's disk is present and has room for it.
pub fn init_all(
    engine: &Engine,
    map: &MapSpec,
    disks: &[CopyDisk<'_>],
    d: &RegionSet,
    m: &RegionSet,
) -> Result<(), StoreError> {
    for copy in 0..map.record.copies.len() {
        copy_disk(map, disks, copy)?;
    }
    for copy in 0..map.record.copies.len() {
        init_map(engine, map, disks, copy, d, m)?;
    }
    Ok(())
}

/// A run of pages of one bitmap: pages `pages` (indexes within the bitmap, `0..P`) of `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSpan {
    /// D or M.
    pub kind: PageKind,
    /// The pages, by index within the bitmap.
    pub pages: Range<u32>,
}

/// A copy a write did not reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFailure {
    /// The copy's index in `DrlRecord::copies`.
    pub copy: usize,
    /// Its disk.
    pub disk: String,
    /// Why (names the disk and pages).
    pub reason: String,
}

impl fmt::Display for CopyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "copy {} on {}: {}", self.copy, self.disk, self.reason)
    }
}

/// Which copies a write of pages reached (written and flushed) and which it did not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// The copies written and flushed, by index.
    pub written: Vec<usize>,
    /// The copies that failed.
    pub failed: Vec<CopyFailure>,
}

impl fmt::Display for WriteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.failed.is_empty() {
            return write!(f, "every copy written");
        }
        let failed: Vec<String> = self.failed.iter().map(|c| c.to_string()).collect();
        write!(f, "{}", failed.join("; "))
    }
}

/// Writes the pages `spans` name from `image` (an image of one copy, as [`encode_image`]
/// makes: map page `k` at byte `k × page_size`) to every copy of `map`, each copy's spans
/// then a flush of its disk. Every page written must be sealed for its place (its trailer's
/// kind, index and epoch those of the map; checked with `format::check_page`), so a page
/// image built for another map or epoch is refused. The header is never written here.
///
/// Refuses, writing nothing: an image of the wrong length, a span past the bitmap's pages
/// or empty, a page not sealed for its place, and a copy whose place lies outside its disk's
/// log area. A copy whose disk is absent or whose write or flush fails is reported in the
/// [`WriteReport`] (not logged: the caller says what it means); the pages are durable once
/// one copy is written. Fails with [`StoreError::NoCopyWritten`] when no copy is. No spans
/// only flushes the copies' disks.
pub fn write_pages(
    engine: &Engine,
    map: &MapSpec,
    disks: &[CopyDisk<'_>],
    image: &[u8],
    spans: &[PageSpan],
) -> Result<WriteReport, StoreError> {
    if image.len() != map.image_len() {
        return Err(map.invalid(format!(
            "an image of {} bytes was given; one copy of the map is {} bytes",
            image.len(),
            map.image_len()
        )));
    }
    let pages = map.geometry.pages();
    for s in spans {
        if s.pages.is_empty() || s.pages.end > pages {
            return Err(map.invalid(format!(
                "{} pages {}..{} were asked for; the map has {pages} pages per bitmap",
                s.kind, s.pages.start, s.pages.end
            )));
        }
        for index in s.pages.clone() {
            let page = &image[map.page_range(s.kind, index)];
            format::check_page(page, &map.trailer(s.kind, index)).map_err(|e| {
                map.invalid(format!(
                    "{} page {index} of the image is not sealed for this map: {e}",
                    s.kind
                ))
            })?;
        }
    }
    // Every present copy's place is checked before anything is written.
    let mut targets = Vec::new();
    let mut report = WriteReport::default();
    for (copy, rec) in map.record.copies.iter().enumerate() {
        match copy_disk(map, disks, copy) {
            Ok((d, _)) => targets.push((copy, d)),
            Err(StoreError::Missing { .. }) => report.failed.push(CopyFailure {
                copy,
                disk: rec.disk.clone(),
                reason: "the disk is not present".to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    for (copy, d) in targets {
        let base = u64::from(map.record.copies[copy].page);
        let done = spans
            .iter()
            .try_for_each(|s| {
                let first = map.geometry.page_offset(s.kind, s.pages.start);
                let bytes = map.page_range(s.kind, s.pages.start).start
                    ..map.page_range(s.kind, s.pages.end - 1).end;
                disk::write_log_pages(
                    engine,
                    d.bdev,
                    d.label,
                    base + u64::from(first),
                    &image[bytes],
                )
            })
            .and_then(|()| disk::flush_log(engine, d.bdev, d.label));
        match done {
            Ok(()) => report.written.push(copy),
            Err(e) => {
                report.failed.push(CopyFailure {
                    copy,
                    disk: d.name.to_string(),
                    reason: e.to_string(),
                });
            }
        }
    }
    report.failed.sort_by_key(|f| f.copy);
    if report.written.is_empty() {
        return Err(StoreError::NoCopyWritten {
            volume: map.name.clone(),
            report,
        });
    }
    Ok(report)
}

/// Clears D on every copy of `map` (all its pages written zero, sealed with the map's epoch,
/// then flushed), leaving M alone: the last step of a clean stop, once the data disks are
/// flushed. Reports as [`write_pages`] does.
pub fn zero_d(
    engine: &Engine,
    map: &MapSpec,
    disks: &[CopyDisk<'_>],
) -> Result<WriteReport, StoreError> {
    let n = u64::from(map.geometry.nregions());
    let image = encode_image(map, &RegionSet::new(n), &RegionSet::new(n))?;
    let span = PageSpan {
        kind: PageKind::Dirty,
        pages: 0..map.geometry.pages(),
    };
    write_pages(engine, map, disks, &image, &[span])
}

/// What became of one copy when a map was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyState {
    /// Its header is the one the configuration expects; its pages were merged (pages that
    /// failed their checks are in [`MapRead::pages`]).
    Valid,
    /// Its disk is not present.
    Missing,
    /// Its header could not be read (an I/O error, or a place outside the disk's log area).
    Unreadable(String),
    /// Its header was read but is not this map's (blank, damaged, another volume's or
    /// epoch's): the copy is ignored.
    Refused(DrlFormatError),
}

/// One copy of a map as [`read_map`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRead {
    /// The copy's index in `DrlRecord::copies`.
    pub copy: usize,
    /// Its disk.
    pub disk: String,
    /// Its first log-area page.
    pub page: u32,
    /// What was found.
    pub state: CopyState,
}

impl fmt::Display for CopyRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "copy {} on {}: ", self.copy, self.disk)?;
        match &self.state {
            CopyState::Valid => write!(f, "valid"),
            CopyState::Missing => write!(f, "the disk is not present"),
            CopyState::Unreadable(why) => write!(f, "unreadable ({why}): ignored"),
            CopyState::Refused(e) => write!(f, "{e}"),
        }
    }
}

/// What a bitmap page read as when not every copy agreed on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOutcome {
    /// Some copies failed their checks; the others' bits were used.
    OtherCopy,
    /// No copy was valid: every region of the page counts as set (resynced, or copied to a
    /// returning plex).
    AllOnes,
    /// M only: no copy was current, one was of an older M epoch, so the page reads as empty
    /// (M was reset since).
    Reset,
}

/// A bitmap page that was not valid on every copy with a valid header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageNote {
    /// D or M.
    pub kind: PageKind,
    /// The page's index within its bitmap.
    pub index: u32,
    /// The regions it holds.
    pub regions: Range<u64>,
    /// What it read as.
    pub outcome: PageOutcome,
    /// Each copy (by disk) whose page was not used, and why.
    pub bad: Vec<(String, String)>,
}

impl fmt::Display for PageNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (k, i, r) = (self.kind, self.index, &self.regions);
        write!(f, "{k} page {i} (regions {}..{}): ", r.start, r.end)?;
        let bad: Vec<String> = self
            .bad
            .iter()
            .map(|(d, why)| format!("{d}: {why}"))
            .collect();
        let bad = if bad.is_empty() {
            "no copy was read".to_string()
        } else {
            bad.join("; ")
        };
        let what = match self.kind {
            PageKind::Dirty => "dirty",
            PageKind::Missed => "missed",
        };
        match self.outcome {
            PageOutcome::OtherCopy => write!(f, "read from the other copy ({bad})"),
            PageOutcome::AllOnes => write!(
                f,
                "valid on no copy ({bad}): all {} of its regions count as {what}",
                r.end - r.start
            ),
            PageOutcome::Reset => {
                write!(f, "of an older M epoch: read as empty (M was reset since)")
            }
        }
    }
}

/// A map as [`read_map`] read it: the merged sets and what was found on the way.
#[derive(Debug, Clone)]
pub struct MapRead {
    /// The dirty map D: regions that may differ between plexes. Every region when the map is
    /// not usable.
    pub d: RegionSet,
    /// The missed map M: regions a tracked plex may have missed. Every region when the map is
    /// not usable.
    pub m: RegionSet,
    /// Every copy the configuration records, in order.
    pub copies: Vec<CopyRead>,
    /// Pages not valid on every copy with a valid header (and M pages read as empty).
    pub pages: Vec<PageNote>,
    /// Why the map cannot be used at all (no valid copy, or recorded failed); `None` when it
    /// can.
    pub unusable: Option<String>,
}

impl MapRead {
    /// Whether the map can be used: at least one copy with a valid header was read and the
    /// configuration does not record the map failed. When it cannot, `d` and `m` hold every
    /// region, so a caller that uses them anyway copies everything.
    pub fn usable(&self) -> bool {
        self.unusable.is_none()
    }

    /// One line per thing a user should know: each copy that is not valid, each page that
    /// was not valid everywhere, and why the map is unusable. Empty when all is well.
    pub fn messages(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .copies
            .iter()
            .filter(|c| c.state != CopyState::Valid)
            .map(|c| c.to_string())
            .collect();
        out.extend(self.pages.iter().map(|p| p.to_string()));
        out.extend(self.unusable.clone());
        out
    }
}

/// The bitmap pages of one copy with a valid header: page `k` (in `1..1+2P` order, D then M)
/// read, or why not.
type CopyPages = Vec<Result<Vec<u8>, String>>;

/// Reads the bitmap pages of a copy whose header is valid: in one request, or page by page if
/// that fails, so one bad page does not lose the others.
fn read_bitmaps(engine: &Engine, map: &MapSpec, d: &CopyDisk<'_>, base: u64) -> CopyPages {
    let page = map.page_size();
    let n = 2 * u64::from(map.geometry.pages());
    match disk::read_log_pages(engine, d.bdev, d.label, base + 1, n) {
        Ok(all) => all.chunks(page).map(|p| Ok(p.to_vec())).collect(),
        Err(_) => (0..n)
            .map(|k| {
                disk::read_log_pages(engine, d.bdev, d.label, base + 1 + k, 1)
                    .map_err(|e| e.to_string())
            })
            .collect(),
    }
}

/// Reads copy `copy` of `map`: its header, and if the header is this map's, its bitmap
/// pages.
fn read_copy(
    engine: &Engine,
    map: &MapSpec,
    disks: &[CopyDisk<'_>],
    copy: usize,
) -> (CopyState, Option<CopyPages>) {
    let d = match copy_disk(map, disks, copy) {
        Ok((d, _)) => d,
        Err(StoreError::Missing { .. }) => return (CopyState::Missing, None),
        Err(e) => return (CopyState::Unreadable(e.to_string()), None),
    };
    let base = u64::from(map.record.copies[copy].page);
    let page = match disk::read_log_pages(engine, d.bdev, d.label, base, 1) {
        Ok(page) => page,
        Err(e) => return (CopyState::Unreadable(e.to_string()), None),
    };
    // Copy indexes are below COPIES, checked by MapSpec::new.
    let expected = map.header(copy as u32, 0);
    match DrlHeader::decode(&page).and_then(|h| h.check_matches(&expected)) {
        Err(e) => (CopyState::Refused(e), None),
        Ok(()) => (CopyState::Valid, Some(read_bitmaps(engine, map, &d, base))),
    }
}

/// Merges bitmap `kind` of the copies with a valid header (`valid`: disk name and bitmap
/// pages) into a set, noting each page not valid on every one of them in `notes`.
fn merge_bitmap(
    map: &MapSpec,
    valid: &[(String, CopyPages)],
    kind: PageKind,
    notes: &mut Vec<PageNote>,
) -> RegionSet {
    let n = u64::from(map.geometry.nregions());
    let mut merged: Vec<Vec<u8>> = Vec::new();
    for index in 0..map.geometry.pages() {
        let k = (map.geometry.page_offset(kind, index) - 1) as usize;
        let expected = map.trailer(kind, index);
        let copies: Vec<&[u8]> = valid
            .iter()
            .filter_map(|(_, p)| p[k].as_deref().ok())
            .collect();
        let mut page = vec![0u8; map.page_size()];
        // The page is a page of the map and `page` a page of its size, so this never fails;
        // if it did, the page would count as torn.
        let source = match merge_pages(&map.geometry, &expected, copies, &mut page) {
            Ok(o) => o.source,
            Err(_) => {
                page.fill(0xff);
                MergeSource::Torn
            }
        };
        let bad: Vec<(String, String)> = valid
            .iter()
            .filter_map(|(disk, p)| {
                let why = match &p[k] {
                    Err(e) => e.clone(),
                    Ok(page) => format::check_page(page, &expected).err()?.to_string(),
                };
                Some((disk.clone(), why))
            })
            .collect();
        let outcome = match source {
            MergeSource::Copies if bad.is_empty() => None,
            MergeSource::Copies => Some(PageOutcome::OtherCopy),
            MergeSource::Torn => Some(PageOutcome::AllOnes),
            MergeSource::Reset => Some(PageOutcome::Reset),
        };
        if let Some(outcome) = outcome {
            notes.push(PageNote {
                kind,
                index,
                regions: map.regions_of_page(index),
                outcome,
                bad,
            });
        }
        merged.push(page);
    }
    let bpp = u64::from(map.geometry.bits_per_page());
    // P whole pages: never an error; if it were, every region would count as set.
    RegionSet::from_pages(n, bpp, merged.iter().map(Vec::as_slice))
        .unwrap_or_else(|_| RegionSet::full(n))
}

/// Reads every copy of `map` from the present `disks` and merges them into the D and M sets
/// recovery must assume, with a report ([`MapRead`]). Reads the header page of each copy,
/// then, for a copy whose header is this map's (`DrlHeader::check_matches`: group, volume,
/// epoch, geometry, copy index, mode), its `2P` bitmap pages: never more than the map's pages
/// (a page is read again alone only when the read of all of them failed).
///
/// Per page, the OR of the copies where it is valid; all ones where it is valid on no copy;
/// empty for an M page of an older M epoch (`format::merge_pages`). The map is unusable, and
/// both sets are full, when the configuration records it failed (`DrlRecord::valid` false;
/// nothing is read) or no copy has a valid header.
pub fn read_map(engine: &Engine, map: &MapSpec, disks: &[CopyDisk<'_>]) -> MapRead {
    let n = u64::from(map.geometry.nregions());
    let mut out = MapRead {
        d: RegionSet::full(n),
        m: RegionSet::full(n),
        copies: Vec::new(),
        pages: Vec::new(),
        unusable: None,
    };
    if !map.record.valid {
        out.unusable = Some(format!(
            "the region log of {} was recorded as failed: it is not used (a crash resyncs the \
             whole volume) until DRL is enabled again",
            map.name
        ));
        return out;
    }
    let mut valid: Vec<(String, CopyPages)> = Vec::new();
    for (copy, rec) in map.record.copies.iter().enumerate() {
        let (state, pages) = read_copy(engine, map, disks, copy);
        if let Some(pages) = pages {
            valid.push((rec.disk.clone(), pages));
        }
        out.copies.push(CopyRead {
            copy,
            disk: rec.disk.clone(),
            page: rec.page,
            state,
        });
    }
    if valid.is_empty() {
        let why: Vec<String> = out.copies.iter().map(|c| c.to_string()).collect();
        out.unusable = Some(format!(
            "no copy of the region log of {} is usable ({}): a crash resyncs the whole volume \
             and a returning plex gets a full copy",
            map.name,
            if why.is_empty() {
                "the configuration records none".to_string()
            } else {
                why.join("; ")
            }
        ));
        return out;
    }
    out.d = merge_bitmap(map, &valid, PageKind::Dirty, &mut out.pages);
    out.m = merge_bitmap(map, &valid, PageKind::Missed, &mut out.pages);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::error::InjectTarget;
    use crate::volume::model::objects::DrlCopyRecord;
    use crate::volume::ondisk::disk::LogAreaError;
    use crate::volume::tests::{engine, err_state, error_disks, inject};

    /// Regions of the test map: 70,000 regions of 128 blocks, so 3 pages per bitmap (the
    /// last holding 4,976 regions) and 7 pages per copy.
    const NREGIONS: u64 = 70_000;
    const BPP: u64 = 32_512;
    const VOL_UUID: u128 = 0x1111;

    /// Two error-injecting disks, each with a fresh private region and its group name.
    struct Rig {
        engine: Arc<Engine>,
        bdevs: Vec<Arc<Bdev>>,
        labels: Vec<Label>,
        names: Vec<String>,
    }

    impl Rig {
        fn new() -> Rig {
            let engine = engine();
            let bdevs = error_disks(&engine, 2, 8)
                .iter()
                .map(|b| engine.bdevs().get(b).unwrap())
                .collect();
            Rig::of(engine, bdevs)
        }

        /// Two 8 MiB RAM disks of `block_size`-byte blocks.
        fn with_blocks(block_size: u32) -> Rig {
            let engine = engine();
            let bdevs = (0..2)
                .map(|i| {
                    let spec = crate::bdev::BdevSpec {
                        name: format!("B{i}"),
                        aliases: vec![],
                        uuid: None,
                        block_size,
                        num_blocks: (8 << 20) / u64::from(block_size),
                        io_types: crate::bdev::IoTypeSet::all(),
                    };
                    let ram = crate::drivers::malloc::MallocBdev::new(8 << 20).unwrap();
                    engine.add_bdev(spec, Box::new(ram)).unwrap()
                })
                .collect();
            Rig::of(engine, bdevs)
        }

        fn of(engine: Arc<Engine>, disks: Vec<Arc<Bdev>>) -> Rig {
            let mut bdevs = Vec::new();
            let mut labels = Vec::new();
            let mut names = Vec::new();
            for (i, bdev) in disks.into_iter().enumerate() {
                let mut label = disk::init(&engine, &bdev, false).unwrap();
                label.disk_name = format!("disk0{}", i + 1);
                names.push(label.disk_name.clone());
                bdevs.push(bdev);
                labels.push(label);
            }
            Rig {
                engine,
                bdevs,
                labels,
                names,
            }
        }

        fn disks(&self) -> Vec<CopyDisk<'_>> {
            (0..2).map(|i| self.disk(i)).collect()
        }

        fn disk(&self, i: usize) -> CopyDisk<'_> {
            CopyDisk {
                name: &self.names[i],
                bdev: &self.bdevs[i],
                label: &self.labels[i],
            }
        }

        /// The whole log area of disk `i`.
        fn log_area(&self, i: usize) -> Vec<u8> {
            let n = disk::log_area_pages(&self.bdevs[i], &self.labels[i]);
            disk::read_log_pages(&self.engine, &self.bdevs[i], &self.labels[i], 0, n).unwrap()
        }

        /// XORs byte `at` of log page `page` of disk `i` with 0x40.
        fn damage(&self, i: usize, page: u64, at: usize) {
            let (e, b, l) = (&self.engine, &self.bdevs[i], &self.labels[i]);
            let mut p = disk::read_log_pages(e, b, l, page, 1).unwrap();
            p[at] ^= 0x40;
            disk::write_log_pages(e, b, l, page, &p).unwrap();
        }

        fn read(&self, map: &MapSpec) -> MapRead {
            read_map(&self.engine, map, &self.disks())
        }
    }

    /// A configuration of group dg01 with volume vol01 whose map has copies on disk01 at page
    /// 0 and disk02 at page 5.
    fn config() -> DgConfig {
        let mut cfg: DgConfig = serde_json::from_value(serde_json::json!({
            "name": "dg01", "id": Uuid::from_u128(0xd9), "block_size": 512, "nconfig": 0,
            "disks": [], "subdisks": [], "plexes": [],
            "volumes": [{"name": "vol01", "uuid": Uuid::from_u128(VOL_UUID),
                "len": NREGIONS * 128, "state": "ACTIVE", "kstate": "ENABLED",
                "read_policy": {"policy": "select"}, "layout": "mirror", "autostart": true,
                "resync_offset": null}]
        }))
        .unwrap();
        cfg.volumes[0].drl = Some(DrlRecord {
            region_blocks: 128,
            mode: DrlMode::Normal,
            max_dirty: 4,
            clear_ms: 5000,
            epoch: 3,
            m_epoch: 1,
            tracking: false,
            valid: true,
            pages: 3,
            copies: vec![
                DrlCopyRecord {
                    disk: "disk01".into(),
                    page: 0,
                },
                DrlCopyRecord {
                    disk: "disk02".into(),
                    page: 5,
                },
            ],
        });
        cfg
    }

    fn spec_with(f: impl FnOnce(&mut DgConfig)) -> MapSpec {
        let mut cfg = config();
        f(&mut cfg);
        MapSpec::new(&cfg, "vol01").unwrap()
    }

    fn spec() -> MapSpec {
        spec_with(|_| {})
    }

    fn set(regions: &[u64]) -> RegionSet {
        let mut s = RegionSet::new(NREGIONS);
        for &r in regions {
            s.insert(r);
        }
        s
    }

    fn regions(s: &RegionSet) -> Vec<u64> {
        s.iter().collect()
    }

    /// A map initialised empty on both disks, then `d` and `m` written to every copy.
    fn written(rig: &Rig, map: &MapSpec, d: &[u64], m: &[u64]) {
        let empty = RegionSet::new(NREGIONS);
        init_all(&rig.engine, map, &rig.disks(), &empty, &empty).unwrap();
        let image = encode_image(map, &set(d), &set(m)).unwrap();
        let spans = [
            PageSpan {
                kind: PageKind::Dirty,
                pages: 0..3,
            },
            PageSpan {
                kind: PageKind::Missed,
                pages: 0..3,
            },
        ];
        let r = write_pages(&rig.engine, map, &rig.disks(), &image, &spans).unwrap();
        assert_eq!((r.written, r.failed), (vec![0, 1], vec![]));
    }

    const D: [u64; 6] = [0, 5, 32_511, 32_512, 65_024, 69_999];
    const M: [u64; 2] = [1, 40_000];

    #[test]
    fn a_new_map_reads_back_empty_and_writes_only_its_own_pages() {
        let rig = Rig::new();
        let map = spec();
        assert_eq!(map.geometry().pages(), 3);
        let empty = RegionSet::new(NREGIONS);
        init_all(&rig.engine, &map, &rig.disks(), &empty, &empty).unwrap();
        let r = rig.read(&map);
        assert!(r.usable(), "{:?}", r.messages());
        assert!(r.d.is_empty() && r.m.is_empty());
        assert_eq!(r.d.nregions(), NREGIONS);
        assert!(r.messages().is_empty(), "{:?}", r.messages());
        assert!(r.copies.iter().all(|c| c.state == CopyState::Valid));
        // Each copy's header carries its copy index; nothing outside the 7 pages is written.
        for (i, first) in [(0usize, 0usize), (1, 5)] {
            let area = rig.log_area(i);
            let h = DrlHeader::decode(&area[first * 4096..]).unwrap();
            assert_eq!(
                (h.copy, h.epoch, h.volume),
                (i as u32, 3, Uuid::from_u128(VOL_UUID))
            );
            let outside = area[..first * 4096]
                .iter()
                .chain(&area[(first + 7) * 4096..]);
            assert!(outside.into_iter().all(|&b| b == 0), "disk {i}");
        }
    }

    #[test]
    fn pages_are_as_large_as_a_block_when_blocks_are_larger_than_4k() {
        let rig = Rig::with_blocks(8192);
        // 70,000 regions of 64 KiB (8 blocks); 65,280 bits a page, so P = 2, 5 pages a copy.
        let map = spec_with(|c| {
            c.block_size = 8192;
            c.volumes[0].len = NREGIONS * 8;
            let drl = c.volumes[0].drl.as_mut().unwrap();
            drl.region_blocks = 8;
            drl.pages = 2;
        });
        assert_eq!((map.page_size(), map.image_len()), (8192, 5 * 8192));
        let log = rig.labels[1].layout.log_offset;
        assert_eq!(copy_offset(&map, &rig.disks(), 1).unwrap(), log + 5 * 8192);
        let empty = RegionSet::new(NREGIONS);
        init_all(&rig.engine, &map, &rig.disks(), &empty, &empty).unwrap();
        let d = [0, 65_279, 65_280, 69_999];
        let image = encode_image(&map, &set(&d), &set(&M)).unwrap();
        let spans = [
            PageSpan {
                kind: PageKind::Dirty,
                pages: 0..2,
            },
            PageSpan {
                kind: PageKind::Missed,
                pages: 0..2,
            },
        ];
        write_pages(&rig.engine, &map, &rig.disks(), &image, &spans).unwrap();
        let r = rig.read(&map);
        assert!(r.usable() && r.messages().is_empty(), "{:?}", r.messages());
        assert_eq!((regions(&r.d), regions(&r.m)), (d.to_vec(), M.to_vec()));
        // On disk: copy 1's header at page 5 of disk02's log area, of 8 KiB pages.
        let area = rig.log_area(1);
        let h = DrlHeader::decode(&area[5 * 8192..]).unwrap();
        assert_eq!((h.copy, h.geometry.page_size()), (1, 8192));
        // A map of 4 KiB pages does not fit these disks.
        let e = copy_offset(&spec(), &rig.disks(), 0).unwrap_err();
        assert!(
            e.to_string()
                .contains("disk disk01 has log pages of 8192 bytes, but the map's pages are 4096"),
            "{e}"
        );
    }

    #[test]
    fn written_pages_read_back() {
        let rig = Rig::new();
        let map = spec();
        let empty = RegionSet::new(NREGIONS);
        init_all(&rig.engine, &map, &rig.disks(), &empty, &empty).unwrap();
        // All of D; of M only page 1: region 1 of M (page 0) stays unwritten.
        let image = encode_image(&map, &set(&D), &set(&M)).unwrap();
        let spans = [
            PageSpan {
                kind: PageKind::Dirty,
                pages: 0..3,
            },
            PageSpan {
                kind: PageKind::Missed,
                pages: 1..2,
            },
        ];
        let w = write_pages(&rig.engine, &map, &rig.disks(), &image, &spans).unwrap();
        assert_eq!(w.written, vec![0, 1]);
        let r = rig.read(&map);
        assert!(r.usable() && r.messages().is_empty(), "{:?}", r.messages());
        assert_eq!(regions(&r.d), D);
        assert_eq!(regions(&r.m), vec![40_000]);

        // A clean stop clears D and keeps M.
        let z = zero_d(&rig.engine, &map, &rig.disks()).unwrap();
        assert_eq!(z.written, vec![0, 1]);
        let r = rig.read(&map);
        assert!(r.d.is_empty(), "{:?}", regions(&r.d));
        assert_eq!(regions(&r.m), vec![40_000]);
    }

    #[test]
    fn a_page_damaged_on_one_copy_is_read_from_the_other() {
        let rig = Rig::new();
        let map = spec();
        written(&rig, &map, &D, &M);
        // D page 1 (map page 2) of copy 0 on disk01 at page 0.
        rig.damage(0, 2, 100);
        let r = rig.read(&map);
        assert!(r.usable());
        assert_eq!(
            regions(&r.d),
            D,
            "not all ones: the other copy's page is used"
        );
        assert_eq!(regions(&r.m), M);
        assert_eq!(r.pages.len(), 1, "{:?}", r.messages());
        let p = &r.pages[0];
        assert_eq!(
            (p.kind, p.index, p.outcome, p.regions.clone()),
            (PageKind::Dirty, 1, PageOutcome::OtherCopy, BPP..2 * BPP)
        );
        let msg = p.to_string();
        assert!(
            msg.contains("disk01") && msg.contains("checksum mismatch"),
            "{msg}"
        );
    }

    #[test]
    fn a_page_damaged_on_every_copy_reads_as_all_ones() {
        let rig = Rig::new();
        let map = spec();
        written(&rig, &map, &D, &M);
        // D page 1 on both copies; M page 2 (map page 6) on both.
        rig.damage(0, 2, 7);
        rig.damage(1, 5 + 2, 4090);
        rig.damage(0, 6, 0);
        rig.damage(1, 5 + 6, 4070);
        let r = rig.read(&map);
        assert!(r.usable());
        let mut want = set(&D);
        want.insert_range(BPP..2 * BPP);
        assert_eq!(r.d, want, "page 1's regions all set, the others as written");
        let mut want_m = set(&M);
        want_m.insert_range(2 * BPP..NREGIONS);
        assert_eq!(r.m, want_m);
        assert_eq!(r.m.count(), 2 + (NREGIONS - 2 * BPP));
        let notes: Vec<_> = r
            .pages
            .iter()
            .map(|p| (p.kind, p.index, p.outcome))
            .collect();
        assert_eq!(
            notes,
            vec![
                (PageKind::Dirty, 1, PageOutcome::AllOnes),
                (PageKind::Missed, 2, PageOutcome::AllOnes)
            ]
        );
        let msg = r.pages[0].to_string();
        assert!(
            msg.contains("valid on no copy") && msg.contains("all 32512 of its regions"),
            "{msg}"
        );
    }

    #[test]
    fn a_missing_or_unreadable_disk_leaves_the_other_copy() {
        let rig = Rig::new();
        let map = spec();
        written(&rig, &map, &D, &M);
        // disk01 absent.
        let r = read_map(&rig.engine, &map, &[rig.disk(1)]);
        assert!(r.usable());
        assert_eq!((regions(&r.d), regions(&r.m)), (D.to_vec(), M.to_vec()));
        assert_eq!(r.copies[0].state, CopyState::Missing);
        assert_eq!(
            r.messages(),
            vec!["copy 0 on disk01: the disk is not present".to_string()]
        );
        // disk01 present, but every read fails.
        inject(&rig.engine, rig.bdevs[0].name(), InjectTarget::Read, 1000);
        let r = rig.read(&map);
        assert!(r.usable());
        assert_eq!((regions(&r.d), regions(&r.m)), (D.to_vec(), M.to_vec()));
        match &r.copies[0].state {
            CopyState::Unreadable(why) => {
                assert!(
                    why.contains("disk01") && why.contains("log pages 0..1"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Both unreadable: the map is unusable and everything counts as dirty.
        inject(&rig.engine, rig.bdevs[1].name(), InjectTarget::Read, 1000);
        let r = rig.read(&map);
        assert!(!r.usable());
        assert_eq!((r.d.count(), r.m.count()), (NREGIONS, NREGIONS));
        let why = r.unusable.clone().unwrap();
        assert!(
            why.contains("no copy of the region log of dg01/vol01 is usable")
                && why.contains("disk02")
                && why.contains("resyncs the whole volume"),
            "{why}"
        );
    }

    /// Requests of `kind` ("read", "write", ...) still armed on error bdev `name`.
    fn armed(e: &Engine, name: &str, kind: &str) -> u64 {
        let b = e.bdevs().get(name).unwrap();
        let (_, info) = b.driver().driver_specific().unwrap();
        info["injections"][kind]["remaining"].as_u64().unwrap_or(0)
    }

    #[test]
    fn a_failed_bitmap_read_loses_only_the_pages_that_fail() {
        use crate::drivers::error::{Arming, ErrorKind};
        let rig = Rig::new();
        let map = spec();
        written(&rig, &map, &D, &M);
        // Only copy 0 is present. Its header read is held until the next two reads are armed
        // to fail: the read of all 6 bitmap pages, then the read of D page 0 alone.
        let name = rig.bdevs[0].name();
        let state = err_state(&rig.engine, name);
        state
            .inject(InjectTarget::Read, &Arming::new(ErrorKind::Hold, 1))
            .unwrap();
        let d0 = [rig.disk(0)];
        let r = std::thread::scope(|s| {
            let reader = s.spawn(|| read_map(&rig.engine, &map, &d0));
            crate::volume::tests::wait_until("the header read is held", || {
                armed(&rig.engine, name, "read") == 0
            });
            state
                .inject(InjectTarget::Read, &Arming::new(ErrorKind::Failure, 2))
                .unwrap();
            // A reset lets the held read through; the failures stay armed.
            crate::bdev::blocking::run_io(
                &rig.engine,
                0,
                &rig.bdevs[0],
                crate::bdev::IoType::Reset,
                0,
                0,
                None,
                std::time::Duration::from_secs(10),
            )
            .unwrap();
            reader.join().unwrap()
        });
        assert!(r.usable(), "{:?}", r.messages());
        assert_eq!(r.copies[0].state, CopyState::Valid);
        let mut want = set(&D);
        want.insert_range(0..BPP);
        assert_eq!(r.d, want, "D page 0 all ones, pages 1 and 2 as written");
        assert_eq!(regions(&r.m), M);
        assert_eq!(r.pages.len(), 1);
        let msg = r.pages[0].to_string();
        assert!(
            msg.starts_with("D page 0 (regions 0..32512): valid on no copy")
                && msg.contains("disk01")
                && msg.contains("reading log pages 1..2"),
            "{msg}"
        );
    }

    #[test]
    fn a_copy_of_another_volume_or_epoch_is_refused_with_the_reason() {
        let rig = Rig::new();
        let map = spec();
        written(&rig, &map, &D, &M);
        // Copy 1's place now holds another volume's map (same placement, other uuid).
        let other = spec_with(|c| c.volumes[0].uuid = Uuid::from_u128(0x2222));
        let empty = RegionSet::new(NREGIONS);
        init_map(&rig.engine, &other, &rig.disks(), 1, &empty, &empty).unwrap();
        let r = rig.read(&map);
        assert!(r.usable());
        assert_eq!(regions(&r.d), D, "copy 0 alone");
        assert!(matches!(
            r.copies[1].state,
            CopyState::Refused(DrlFormatError::WrongOwner { what: "volume", .. })
        ));
        let msg = r.messages().join("\n");
        assert!(
            msg.contains("copy 1 on disk02")
                && msg.contains("belongs to another volume")
                && msg.contains("ignored"),
            "{msg}"
        );

        // A map of a newer epoch (the copies on disk are of epoch 3): no copy is its.
        let newer = spec_with(|c| c.volumes[0].drl.as_mut().unwrap().epoch = 4);
        let r = rig.read(&newer);
        assert!(!r.usable());
        assert_eq!(r.d.count(), NREGIONS);
        let msg = r.unusable.unwrap();
        assert!(
            msg.contains("its epoch is 3, expected 4") && msg.contains("copy 0 on disk01"),
            "{msg}"
        );
    }

    #[test]
    fn m_pages_of_an_older_m_epoch_read_as_empty() {
        let rig = Rig::new();
        let map = spec();
        written(&rig, &map, &D, &M);
        let reset = spec_with(|c| c.volumes[0].drl.as_mut().unwrap().m_epoch = 2);
        let r = rig.read(&reset);
        assert!(r.usable());
        assert_eq!(regions(&r.d), D);
        assert!(r.m.is_empty());
        assert!(r.pages.iter().all(|p| p.outcome == PageOutcome::Reset));
        assert_eq!(r.pages.len(), 3);
    }

    #[test]
    fn a_map_recorded_failed_is_not_read() {
        let rig = Rig::new();
        let map = spec_with(|c| c.volumes[0].drl.as_mut().unwrap().valid = false);
        inject(&rig.engine, rig.bdevs[0].name(), InjectTarget::All, 1);
        let r = rig.read(&map);
        assert!(!r.usable());
        assert_eq!(r.d.count(), NREGIONS);
        assert!(r.unusable.unwrap().contains("recorded as failed"));
        // The armed failure is still there: nothing was read.
        let e = disk::read_log_pages(&rig.engine, &rig.bdevs[0], &rig.labels[0], 0, 1);
        assert!(e.is_err());
    }

    #[test]
    fn failed_copies_are_reported_and_no_copy_written_is_an_error() {
        let rig = Rig::new();
        let map = spec();
        written(&rig, &map, &D, &[]);
        let image = encode_image(&map, &set(&[7]), &set(&[])).unwrap();
        let span = [PageSpan {
            kind: PageKind::Dirty,
            pages: 0..1,
        }];
        inject(&rig.engine, rig.bdevs[0].name(), InjectTarget::Write, 1);
        let w = write_pages(&rig.engine, &map, &rig.disks(), &image, &span).unwrap();
        assert_eq!(w.written, vec![1]);
        assert_eq!(w.failed.len(), 1);
        let f = w.failed[0].to_string();
        assert!(
            f.starts_with("copy 0 on disk01: ") && f.contains("writing log pages 1..2"),
            "{f}"
        );
        // Copy 0 kept its old page 0 ({0, 5, 32511}), copy 1 has {7}: the OR of both.
        let r = rig.read(&map);
        assert_eq!(regions(&r.d), vec![0, 5, 7, 32_511, 32_512, 65_024, 69_999]);

        // A flush failure fails the copy too; an absent disk is reported.
        inject(&rig.engine, rig.bdevs[1].name(), InjectTarget::Flush, 1);
        let e = write_pages(&rig.engine, &map, &[rig.disk(1)], &image, &span).unwrap_err();
        let StoreError::NoCopyWritten { report, .. } = &e else {
            panic!("{e}");
        };
        assert!(report.written.is_empty());
        let msg = e.to_string();
        assert!(
            msg.contains("copy 0 on disk01: the disk is not present")
                && msg.contains("copy 1 on disk02")
                && msg.contains("flushing the log area"),
            "{msg}"
        );
    }

    #[test]
    fn bad_requests_are_refused_without_writing_anything() {
        let rig = Rig::new();
        let map = spec();
        let before = [rig.log_area(0), rig.log_area(1)];
        let unchanged = |what: &str| {
            assert!(
                rig.log_area(0) == before[0] && rig.log_area(1) == before[1],
                "{what} wrote something"
            )
        };
        let empty = RegionSet::new(NREGIONS);
        let (e, b, l) = (&rig.engine, &rig.bdevs[0], &rig.labels[0]);
        let pages = disk::log_area_pages(b, l);
        assert_eq!(pages, 240, "960 KiB of 4 KiB pages");

        // The disk layer: pages past the log area, a buffer that is not whole pages.
        let err = disk::write_log_pages(e, b, l, pages - 1, &[1; 8192]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "disk disk01 (bdev '{}'): log pages 239..241 are outside its log area of 240 \
                 pages of 4096 bytes; nothing was read or written",
                b.name()
            )
        );
        assert!(disk::write_log_pages(e, b, l, u64::MAX, &[1; 4096]).is_err());
        assert!(disk::read_log_pages(e, b, l, 200, 41).is_err());
        let err = disk::write_log_pages(e, b, l, 0, &[1; 4000]).unwrap_err();
        assert!(
            err.to_string()
                .contains("4000 bytes are not a whole number"),
            "{err}"
        );
        unchanged("the disk layer");

        // A copy placed past its disk's log area (pages 236..243 of 240): neither copy is
        // written, by init or by a page write.
        let far = spec_with(|c| c.volumes[0].drl.as_mut().unwrap().copies[1].page = 236);
        let err = init_all(e, &far, &rig.disks(), &empty, &empty).unwrap_err();
        assert!(
            matches!(
                &err,
                StoreError::Disk {
                    copy: 1,
                    source: DiskError::Log(e),
                    ..
                } if matches!(**e, LogAreaError::Bounds { .. })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("log pages 236..243"), "{err}");
        let image = encode_image(&far, &set(&D), &empty).unwrap();
        let d_all = [PageSpan {
            kind: PageKind::Dirty,
            pages: 0..3,
        }];
        assert!(write_pages(e, &far, &rig.disks(), &image, &d_all).is_err());
        unchanged("a map out of bounds");

        // Page writes that contradict the map: a span past P or empty, an image of the wrong
        // size, pages sealed for another epoch or not sealed at all.
        let image = encode_image(&map, &set(&D), &empty).unwrap();
        for span in [0..4, 2..2] {
            let s = [PageSpan {
                kind: PageKind::Missed,
                pages: span,
            }];
            let err = write_pages(e, &map, &rig.disks(), &image, &s).unwrap_err();
            assert!(err.to_string().contains("nothing was written"), "{err}");
        }
        assert!(write_pages(e, &map, &rig.disks(), &image[4096..], &d_all).is_err());
        let old = spec_with(|c| c.volumes[0].drl.as_mut().unwrap().epoch = 2);
        let stale = encode_image(&old, &set(&D), &empty).unwrap();
        let err = write_pages(e, &map, &rig.disks(), &stale, &d_all).unwrap_err();
        assert!(
            err.to_string()
                .contains("D page 0 of the image is not sealed for this map"),
            "{err}"
        );
        let mut unsealed = image.clone();
        unsealed[4096 + 3] ^= 1;
        assert!(write_pages(e, &map, &rig.disks(), &unsealed, &d_all).is_err());
        // Sets over another number of regions.
        let small = RegionSet::new(10);
        assert!(init_all(e, &map, &rig.disks(), &small, &empty).is_err());
        unchanged("refused page writes");
    }

    #[test]
    fn a_record_that_contradicts_itself_is_refused() {
        let mut cfg = config();
        cfg.volumes[0].drl.as_mut().unwrap().pages = 2;
        let e = MapSpec::new(&cfg, "vol01").unwrap_err();
        assert!(
            e.to_string()
                .contains("records 2 pages per bitmap, but 70000 regions of 128 blocks need 3"),
            "{e}"
        );
        let mut cfg = config();
        cfg.volumes[0].drl = None;
        assert!(MapSpec::new(&cfg, "vol01").is_err());
        assert!(MapSpec::new(&config(), "vol02").is_err());
    }
}
