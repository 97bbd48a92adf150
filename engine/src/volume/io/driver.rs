//! The volume bdev: its published map, the state it shares with the volume manager, and the
//! events the I/O path sends; the per-reactor I/O path itself is in [`super::channel`].
//!
//! The volume manager publishes a read-only [`VolumeMap`] (plexes, their geometry, which disks
//! they use, which plexes may serve reads or take writes) through an `ArcSwap`. Each reactor's
//! channel keeps the map it last loaded plus its own channels to the disks, and reloads only when
//! the generation changes, so the steady-state path takes no lock and allocates nothing: the
//! parent request waits in a preallocated per-channel slot while its children (one per
//! segment per plex, from [`PlexGeometry::map`]) run on the disks.
//!
//! - Reads go to one readable plex (read policy); if any piece fails, the whole read is
//!   retried on another readable plex, and the manager is told to rewrite the range on the
//!   plex that failed (from the one that served it). During a resync reads come from the
//!   resync source, and a failed one is retried elsewhere only in the range the resync has
//!   already made equal; past it the read fails (the other plexes may hold older data).
//! - Writes (and write-zeroes; unmaps become write-zeroes on mirrors so the copies stay
//!   identical) go to every writable plex in parallel and complete when all have. On a disk
//!   without write-zeroes or unmap (a plex attached, moved or grown there after the volume
//!   started with them) the channel emulates them (see [`super::channel`]). If a plex
//!   fails but an in-sync plex succeeded, the request is held until the manager has durably
//!   recorded that plex as detached (IOFAIL/DETACHED) and published a map without it; only
//!   then is the write acknowledged. If no in-sync plex succeeded, the write fails.
//! - Flushes go to every disk the writable plexes use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{json, Value};

use crate::bdev::{Bdev, BdevDriver, BdevError, DriverChannel};
use crate::volume::drl::format::DrlGeometry;
use crate::volume::drl::regions::Drl;
use crate::volume::io::barrier::SyncBarrier;
use crate::volume::io::drl_port::DrlShared;
use crate::volume::io::raid5::stripe_lock::StripeLock;
use crate::volume::model::layout::PlexGeometry;
use crate::volume::model::raid5::Raid5Geometry;

/// The volume bdev's `product_name`.
pub const PRODUCT_NAME: &str = "plexd volume";

/// One plex as the I/O path sees it.
#[derive(Debug, Clone)]
pub struct PlexMap {
    /// The plex's name (for events and listings).
    pub name: String,
    /// Where its blocks are; targets index [`VolumeMap::disks`], offsets are absolute blocks.
    pub geometry: PlexGeometry,
    /// In sync and enabled: may serve reads.
    pub readable: bool,
    /// Enabled: receives writes (in-sync plexes and plexes being attached).
    pub writable: bool,
}

/// A RAID-5 volume's data plex as the I/O path sees it (the I/O goes through
/// `io::raid5::channel` instead of the mirror path).
#[derive(Debug, Clone)]
pub struct Raid5Map {
    /// The RAID-5 plex's name (for events and listings).
    pub plex: String,
    /// Where its blocks are; targets index [`VolumeMap::disks`], offsets are absolute blocks.
    /// A missing column's extents have targets at or above `disks.len()`: never used.
    pub geometry: Raid5Geometry,
    /// The column that is neither read nor written (its disk failed or is missing, or its
    /// contents are stale): reads of it are reconstructed from the others.
    pub missing: Option<usize>,
    /// The missing column is being rebuilt: in the rows below the rebuild's progress
    /// (`VolumeShared::rebuilt_rows`) it is current, read and written like the others.
    pub rebuilding: bool,
    /// A parity resync runs (after a crash): rows at or past its progress may have parity
    /// that does not match their data, so writes there reconstruct the parity from the data
    /// (reconstruct-write) instead of updating it (read-modify-write would keep it wrong).
    pub resyncing: bool,
    /// The log plexes that take entries (enabled, on present disks); every write is logged
    /// to each of them before any column is written. Empty: no log.
    pub logs: Vec<Raid5Log>,
    /// The epoch written into log entries (the plex's `log_epoch`).
    pub log_epoch: u64,
    /// Slots every log in `logs` holds (the fewest of them).
    pub log_slots: u64,
    /// Writes are refused (EROFS): the volume had log plexes, none works any more, and its
    /// policy is `readonly`.
    pub read_only: bool,
    /// Full-stripe writes go from the request's buffers to the data columns, with parity
    /// computed from those buffers, instead of through the row buffer (md's `skip_copy`; the
    /// volume's `skip_copy`). Only while the volume has no working log plex.
    pub skip_copy: bool,
}

/// One RAID-5 log plex as the I/O path sees it.
#[derive(Debug, Clone)]
pub struct Raid5Log {
    /// The log plex's name (for events).
    pub plex: String,
    /// Its blocks (a concat of its subdisks); targets index [`VolumeMap::disks`].
    pub geometry: PlexGeometry,
}

/// How a read picks its plex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapReadPolicy {
    /// Alternate between readable plexes.
    RoundRobin,
    /// Use this plex (index into `plexes`) while readable, else round-robin.
    Prefer(usize),
}

/// The immutable layout of a volume published to the reactors.
#[derive(Debug)]
pub struct VolumeMap {
    /// Bumped at every publication.
    pub generation: u64,
    /// The disks (bdevs) the plexes use, by target index.
    pub disks: Vec<Arc<Bdev>>,
    /// The plexes (at most 64 are addressable here; the volume manager allows 32).
    pub plexes: Vec<PlexMap>,
    /// Read policy.
    pub read_policy: MapReadPolicy,
    /// While set, reads come only from this plex (a resync is making the others equal to it).
    pub read_source: Option<usize>,
    /// False when the volume cannot do I/O (every plex failed, or a failure could not be
    /// recorded): every request fails with ENXIO.
    pub enabled: bool,
    /// For a RAID-5 volume, its data plex (then `plexes` is empty and `read_source` `None`).
    pub raid5: Option<Raid5Map>,
    /// The volume's dirty region log, when it has one: every write enters its regions there
    /// first (see `io::drl_port`).
    pub drl: Option<DrlMap>,
}

/// One copy of a region log map as the I/O path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrlCopy {
    /// The disk holding it: an index into [`VolumeMap::disks`].
    pub target: u32,
    /// The block of that disk where the copy's header page starts; page `k` of the copy is
    /// `k × page_blocks` further (see [`DrlMap::page_blocks`]).
    pub first_block: u64,
}

/// A volume's dirty region log as the I/O path sees it: the region state every reactor shares
/// and where the map's copies are. Carry the same `state` (and `shared`, while the copies stay
/// where they are) into every new map of the volume: waiters and the token live there.
#[derive(Clone)]
pub struct DrlMap {
    /// The region state shared by every reactor of the volume.
    pub state: Arc<Drl>,
    /// The map's geometry (region size, regions, page size, pages per bitmap).
    pub geometry: DrlGeometry,
    /// The copies, by copy index (at most 64; normally 2, on different disks).
    pub copies: Vec<DrlCopy>,
    /// Blocks of a copy's disk per map page (the page size over the disks' block size).
    pub page_blocks: u64,
    /// The epoch sealed into D pages (`DrlRecord::epoch`).
    pub epoch: u64,
    /// The epoch sealed into M pages (`DrlRecord::m_epoch`).
    pub m_epoch: u64,
    /// What the reactors' ports share about the copies (the dead ones: later batches skip
    /// them; the manager relocates them).
    pub shared: Arc<DrlShared>,
}

impl DrlMap {
    /// The map of `state` with `geometry`, its copies on disks of `block_size`-byte blocks, its
    /// pages sealed with `epoch` (D) and `m_epoch` (M). Fails if the state was built for
    /// another geometry, the page is not a whole number of blocks, or there are no copies or
    /// more than 64.
    pub fn new(
        state: Arc<Drl>,
        geometry: DrlGeometry,
        copies: Vec<DrlCopy>,
        block_size: u32,
        epoch: u64,
        m_epoch: u64,
    ) -> Result<DrlMap, String> {
        let g = state.geometry();
        if g.regions != geometry.nregions() || g.bits_per_page != geometry.bits_per_page() {
            return Err(format!(
                "the region state has {} regions of {} per page, the map {} of {}",
                g.regions,
                g.bits_per_page,
                geometry.nregions(),
                geometry.bits_per_page()
            ));
        }
        let page = u64::from(geometry.page_size());
        let bs = u64::from(block_size);
        if bs == 0 || !page.is_multiple_of(bs) {
            return Err(format!(
                "a map page of {page} bytes is not a whole number of {bs}-byte blocks"
            ));
        }
        if copies.is_empty() || copies.len() > 64 {
            return Err(format!(
                "a region log needs 1 to 64 copies, not {}",
                copies.len()
            ));
        }
        Ok(DrlMap {
            state,
            geometry,
            copies,
            page_blocks: page / bs,
            epoch,
            m_epoch,
            shared: Arc::new(DrlShared::default()),
        })
    }

    /// The regions `first..=last` that blocks `[offset, offset + num)` of the volume touch;
    /// `None` for an empty range or one past the map's last region.
    #[inline]
    pub fn regions(&self, offset: u64, num: u64) -> Option<(u32, u32)> {
        let rb = self.geometry.region_blocks();
        let end = offset.checked_add(num)?;
        if num == 0 || end.div_ceil(rb) > u64::from(self.geometry.nregions()) {
            return None;
        }
        Some(((offset / rb) as u32, ((end - 1) / rb) as u32))
    }
}

impl std::fmt::Debug for DrlMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrlMap")
            .field("geometry", &self.geometry)
            .field("copies", &self.copies)
            .field("page_blocks", &self.page_blocks)
            .field("epoch", &self.epoch)
            .field("m_epoch", &self.m_epoch)
            .field("dirty", &self.state.dirty())
            .field("shared", &self.shared)
            .finish()
    }
}

impl VolumeMap {
    /// This map with every request refused (`enabled` false), as generation `generation`:
    /// what is published when a volume must go offline and no new map can be built.
    pub fn disabled(&self, generation: u64) -> VolumeMap {
        VolumeMap {
            generation,
            disks: self.disks.clone(),
            plexes: self.plexes.clone(),
            read_policy: self.read_policy,
            read_source: self.read_source,
            enabled: false,
            raid5: self.raid5.clone(),
            drl: self.drl.clone(),
        }
    }

    pub(crate) fn readable_mask(&self) -> u64 {
        mask_of(self.plexes.iter().map(|p| p.readable))
    }

    pub(crate) fn writable_mask(&self) -> u64 {
        mask_of(self.plexes.iter().map(|p| p.writable))
    }

    /// Disks used by writable plexes, and for each disk the plexes on it.
    pub(crate) fn flush_targets(&self) -> Vec<(u32, u64)> {
        let mut out: Vec<(u32, u64)> = Vec::new();
        for (i, p) in self.plexes.iter().enumerate().filter(|(_, p)| p.writable) {
            for col in p.geometry.columns() {
                for e in &col.extents {
                    match out.iter_mut().find(|(t, _)| *t == e.target) {
                        Some((_, m)) => *m |= 1 << i,
                        None => out.push((e.target, 1 << i)),
                    }
                }
            }
        }
        out
    }
}

fn mask_of(bits: impl Iterator<Item = bool>) -> u64 {
    bits.enumerate()
        .filter(|(i, b)| *b && *i < 64)
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// What the I/O path tells the volume manager.
pub enum VolumeEvent {
    /// Writes to these plexes failed while an in-sync plex took them: record the plexes
    /// IOFAIL/DETACHED, publish a map without them, then call [`VolumeShared::ack_event`].
    WriteFailed {
        /// The volume.
        volume: Arc<VolumeShared>,
        /// The map the writes used.
        map: Arc<VolumeMap>,
        /// Indices into `map.plexes`.
        plexes: u64,
        /// Id to acknowledge.
        id: u64,
    },
    /// Reads of `[offset, offset + num)` failed on the `bad` plexes and succeeded on `good`:
    /// rewrite the range on the bad plexes from the good one (under the write barrier), and
    /// count the errors.
    ReadRepair {
        /// The volume.
        volume: Arc<VolumeShared>,
        /// The map the read used.
        map: Arc<VolumeMap>,
        /// Indices into `map.plexes` whose read failed.
        bad: u64,
        /// Index of the plex that served the read.
        good: usize,
        /// First block.
        offset: u64,
        /// Blocks.
        num: u64,
    },
    /// RAID-5: writes to these log plexes (bits into `map.raid5`'s `logs`) failed: record
    /// them BADLOG (the volume runs without their protection), publish the new map, then call
    /// [`VolumeShared::ack_event`].
    LogFailed {
        /// The volume.
        volume: Arc<VolumeShared>,
        /// The map the request used.
        map: Arc<VolumeMap>,
        /// Log plex bits.
        logs: u64,
        /// Id to acknowledge.
        id: u64,
    },
    /// RAID-5: these columns (bit per column of `map.raid5`'s plex) failed a write, a read a
    /// write needed, or a flush: record them stale (one left: degraded; two: the volume goes
    /// offline), publish the new map, then call [`VolumeShared::ack_event`].
    ColumnFailed {
        /// The volume.
        volume: Arc<VolumeShared>,
        /// The map the request used.
        map: Arc<VolumeMap>,
        /// Column bits.
        columns: u64,
        /// Id to acknowledge.
        id: u64,
    },
}

/// The state of one volume shared by its channels and the volume manager.
pub struct VolumeShared {
    pub(crate) name: String,
    dg: String,
    volume: String,
    pub(crate) map: ArcSwap<VolumeMap>,
    pub(crate) generation: AtomicU64,
    pub(crate) events: crossbeam::channel::Sender<VolumeEvent>,
    /// Event ids are taken and sent under this lock (failure path only), so the manager sees
    /// them in id order and an acknowledgement covers exactly the events before it.
    pub(crate) event_lock: std::sync::Mutex<()>,
    pub(crate) next_event: AtomicU64,
    pub(crate) acked_event: AtomicU64,
    pub(crate) read_errors: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    pub(crate) read_repairs_dropped: AtomicU64,
    /// RAID-5: ranges rebuilt after a column's read error and written back to it.
    pub(crate) read_repairs: AtomicU64,
    /// Writes a channel deferred because a copy (or a fence) held their chunk (tests wait
    /// for a write to be parked with it).
    #[cfg(test)]
    pub(crate) writes_deferred: AtomicU64,
    barrier: Arc<SyncBarrier>,
    /// The progress of the resync running while the map has a read source: below it every
    /// writable plex equals the source (failure path only reads it).
    pub(crate) resync: arc_swap::ArcSwapOption<CopyProgress>,
    /// RAID-5 volumes: the per-stripe lock every reactor's channel shares.
    stripes: Option<StripeLock>,
    /// RAID-5 volumes: the log's slots every reactor's channel shares.
    log_ring: Option<crate::volume::io::raid5::log_ring::LogRing>,
}

/// How far a copy has come: every block below it is copied. The copy (a task on its own
/// thread) advances it; the I/O path reads it (`VolumeShared::resynced_through`) without
/// knowing about tasks.
#[derive(Debug, Default)]
pub struct CopyProgress(AtomicU64);

impl CopyProgress {
    /// Progress starting at block `start`.
    pub fn new(start: u64) -> CopyProgress {
        CopyProgress(AtomicU64::new(start))
    }

    /// The first block not yet copied.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Records that every block below `done` is copied.
    pub(crate) fn set(&self, done: u64) {
        self.0.store(done, Ordering::Relaxed);
    }
}

impl VolumeShared {
    /// Shared state for volume `volume` of group `dg`, bdev `name`, with its first map.
    pub fn new(
        name: String,
        dg: &str,
        volume: &str,
        map: VolumeMap,
        block_size: u32,
        events: crossbeam::channel::Sender<VolumeEvent>,
    ) -> Arc<VolumeShared> {
        let chunk = COPY_CHUNK_BYTES / block_size.max(1) as u64;
        // A RAID-5 volume's chunks are whole rows: a row task (rebuild, parity resync, scrub)
        // holds exactly the rows it works on.
        let chunk = match &map.raid5 {
            Some(r5) => {
                let row = r5.geometry.row_blocks().max(1);
                row * (chunk / row).max(1)
            }
            None => chunk,
        };
        Arc::new(VolumeShared {
            dg: dg.to_string(),
            volume: volume.to_string(),
            barrier: Arc::new(SyncBarrier::new(chunk)),
            name,
            generation: AtomicU64::new(map.generation),
            stripes: map.raid5.is_some().then(StripeLock::new),
            log_ring: map.raid5.as_ref().map(|r| {
                crate::volume::io::raid5::log_ring::LogRing::new(
                    r.log_slots
                        .max(crate::volume::model::raid5_log::MIN_LOG_SLOTS),
                )
            }),
            map: ArcSwap::from_pointee(map),
            events,
            event_lock: std::sync::Mutex::new(()),
            next_event: AtomicU64::new(1),
            acked_event: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            read_repairs_dropped: AtomicU64::new(0),
            read_repairs: AtomicU64::new(0),
            #[cfg(test)]
            writes_deferred: AtomicU64::new(0),
            resync: arc_swap::ArcSwapOption::empty(),
        })
    }

    /// The per-stripe lock (RAID-5 volumes only).
    pub(crate) fn stripe_lock(&self) -> Option<&StripeLock> {
        self.stripes.as_ref()
    }

    /// The log's slots (RAID-5 volumes only).
    pub(crate) fn log_ring(&self) -> Option<&crate::volume::io::raid5::log_ring::LogRing> {
        self.log_ring.as_ref()
    }

    /// The bdev name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The disk group.
    pub fn dg(&self) -> &str {
        &self.dg
    }

    /// The volume's name in its group.
    pub fn volume(&self) -> &str {
        &self.volume
    }

    /// The current map.
    pub fn map(&self) -> Arc<VolumeMap> {
        self.map.load_full()
    }

    /// Publishes a new map (its generation must be higher); reactors switch at their next
    /// request.
    pub fn publish(&self, map: VolumeMap) {
        let g = map.generation;
        self.map.store(Arc::new(map));
        self.generation.store(g, Ordering::Release);
    }

    /// Whether every failure event sent so far was handled (acknowledged).
    pub fn events_handled(&self) -> bool {
        let sent = self.next_event.load(Ordering::Acquire).saturating_sub(1);
        self.acked_event.load(Ordering::Acquire) >= sent
    }

    /// Marks events up to `id` handled: writes held for them complete.
    pub fn ack_event(&self, id: u64) {
        self.acked_event.fetch_max(id, Ordering::AcqRel);
    }

    /// The barrier that keeps copies (resync, attach) and guest writes apart (shared with
    /// the fences of copy writes that outlived their copy: see `volume::io::fence`).
    pub fn barrier(&self) -> &Arc<SyncBarrier> {
        &self.barrier
    }

    /// Whether `[0, end)` is already resynced (every writable plex equals the read source
    /// there). Only meaningful while the map has a read source.
    pub(crate) fn resynced_through(&self, end: u64) -> bool {
        self.resync.load().as_ref().is_some_and(|p| p.get() >= end)
    }

    /// Rows below which a RAID-5 rebuild has made its column current (0 when none runs).
    pub(crate) fn rebuilt_rows(&self, row_blocks: u64) -> u64 {
        self.resync
            .load()
            .as_ref()
            .map_or(0, |p| p.get() / row_blocks.max(1))
    }

    /// The column missing in `row` of RAID-5 map `r5` (none below a rebuild's progress).
    pub(crate) fn raid5_missing(&self, r5: &Raid5Map, row: u64) -> Option<usize> {
        if r5.rebuilding && row < self.rebuilt_rows(r5.geometry.row_blocks()) {
            None
        } else {
            r5.missing
        }
    }

    /// Whether a write to `row` of RAID-5 map `r5` must not trust the row's parity (a parity
    /// resync has not reached it yet).
    pub(crate) fn raid5_parity_suspect(&self, r5: &Raid5Map, row: u64) -> bool {
        r5.resyncing && row >= self.rebuilt_rows(r5.geometry.row_blocks())
    }

    /// Read errors seen (each retried on another plex when one was left).
    pub fn read_errors(&self) -> u64 {
        self.read_errors.load(Ordering::Relaxed)
    }

    /// Plex write failures seen.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// RAID-5 read errors repaired in place: the range was rebuilt from the other columns and
    /// written back to the column that failed to read it.
    pub fn read_repairs(&self) -> u64 {
        self.read_repairs.load(Ordering::Relaxed)
    }

    /// Read repairs not run because the repair queue was full (the failing range is left as
    /// it was; the next read there fails over and asks again).
    pub fn read_repairs_dropped(&self) -> u64 {
        self.read_repairs_dropped.load(Ordering::Relaxed)
    }
}

/// The volume's bdev driver.
pub struct VolumeBdev {
    shared: Arc<VolumeShared>,
    saved: Option<Value>,
}

impl VolumeBdev {
    /// A driver for `shared`; `saved` is the `{method, params}` that recreates it in a saved
    /// config (volumes made with `bdev_raid_create`), `None` for volumes that come back from
    /// their disk group's own configuration.
    pub fn new(shared: Arc<VolumeShared>, saved: Option<Value>) -> Self {
        VolumeBdev { shared, saved }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<VolumeShared> {
        &self.shared
    }
}

/// The volume state behind `bdev`, or `None` if it is not a volume.
pub fn shared_of(bdev: &Bdev) -> Option<Arc<VolumeShared>> {
    bdev.driver()
        .as_any()
        .downcast_ref::<VolumeBdev>()
        .map(|v| v.shared.clone())
}

impl BdevDriver for VolumeBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    fn create_channel(&self, _bdev: &Arc<Bdev>) -> Result<Box<dyn DriverChannel>, BdevError> {
        if self.shared.stripe_lock().is_some() {
            crate::volume::io::raid5::channel::create(&self.shared)
        } else {
            crate::volume::io::channel::create(&self.shared)
        }
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        let m = self.shared.map();
        Some((
            "volume",
            json!({
                "name": self.shared.name,
                "plexes": m.plexes.iter().map(|p| json!({
                    "name": p.name, "readable": p.readable, "writable": p.writable,
                })).collect::<Vec<_>>(),
                "read_errors": self.shared.read_errors(),
                "write_errors": self.shared.write_errors(),
                "read_repairs_dropped": self.shared.read_repairs_dropped(),
                "read_repairs": self.shared.read_repairs(),
            }),
        ))
    }

    fn config(&self, _bdev: &Bdev) -> Option<Value> {
        // Volumes come back from their disk group's configuration, not from saved RPCs; only
        // raid bdevs are recreated (re-assembled from their disks) by SPDK's method.
        self.saved.clone()
    }
}

/// The unit of resync and attach copies (and of the write barrier's buckets).
pub const COPY_CHUNK_BYTES: u64 = 1 << 20;
