//! The volume bdev: the I/O path from a volume request to its disks.
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
//!   plex that failed (from the one that served it).
//! - Writes (and write-zeroes; unmaps become write-zeroes on mirrors so the copies stay
//!   identical) go to every writable plex in parallel and complete when all have. If a plex
//!   fails but an in-sync plex succeeded, the request is held until the manager has durably
//!   recorded that plex as detached (IOFAIL/DETACHED) and published a map without it; only
//!   then is the write acknowledged. If no in-sync plex succeeded, the write fails.
//! - Flushes go to every disk the writable plexes use.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{json, Value};

use super::layout::{PlexGeometry, Segment};
use super::task::SyncBarrier;
use crate::bdev::{
    Bdev, BdevDriver, BdevError, BdevIo, DriverChannel, IoChannel, IoCompletion, IoStatus, IoType,
};

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
}

impl VolumeMap {
    fn readable_mask(&self) -> u64 {
        mask_of(self.plexes.iter().map(|p| p.readable))
    }

    fn writable_mask(&self) -> u64 {
        mask_of(self.plexes.iter().map(|p| p.writable))
    }

    /// Disks used by writable plexes, and for each disk the plexes on it.
    fn flush_targets(&self) -> Vec<(u32, u64)> {
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
}

/// The state of one volume shared by its channels and the volume manager.
pub struct VolumeShared {
    name: String,
    dg: String,
    volume: String,
    map: ArcSwap<VolumeMap>,
    generation: AtomicU64,
    events: crossbeam::channel::Sender<VolumeEvent>,
    next_event: AtomicU64,
    acked_event: AtomicU64,
    read_errors: AtomicU64,
    write_errors: AtomicU64,
    barrier: SyncBarrier,
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
        Arc::new(VolumeShared {
            dg: dg.to_string(),
            volume: volume.to_string(),
            barrier: SyncBarrier::new(COPY_CHUNK_BYTES / block_size.max(1) as u64),
            name,
            generation: AtomicU64::new(map.generation),
            map: ArcSwap::from_pointee(map),
            events,
            next_event: AtomicU64::new(1),
            acked_event: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        })
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

    /// Marks events up to `id` handled: writes held for them complete.
    pub fn ack_event(&self, id: u64) {
        self.acked_event.fetch_max(id, Ordering::AcqRel);
    }

    /// The barrier that keeps copies (resync, attach) and guest writes apart.
    pub fn barrier(&self) -> &SyncBarrier {
        &self.barrier
    }

    /// Read errors seen (each retried on another plex when one was left).
    pub fn read_errors(&self) -> u64 {
        self.read_errors.load(Ordering::Relaxed)
    }

    /// Plex write failures seen.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
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
        let map = self.shared.map();
        let bases = channels_for(&map)?;
        let core = Rc::new_cyclic(|me| Core {
            me: me.clone(),
            shared: self.shared.clone(),
            st: RefCell::new(ChanState {
                flush_targets: map.flush_targets(),
                map,
                bases,
                slots: Vec::with_capacity(SLOTS),
                free: Vec::with_capacity(SLOTS),
                scratch: Vec::with_capacity(64),
                held: VecDeque::with_capacity(16),
                deferred: VecDeque::with_capacity(16),
                rr: 0,
            }),
        });
        Ok(Box::new(VolumeChannel { core }))
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
            }),
        ))
    }

    fn config(&self, _bdev: &Bdev) -> Option<Value> {
        // Volumes come back from their disk group's configuration, not from saved RPCs; only
        // raid bdevs are recreated (re-assembled from their disks) by SPDK's method.
        self.saved.clone()
    }
}

fn channels_for(map: &VolumeMap) -> Result<Vec<Rc<IoChannel>>, BdevError> {
    map.disks.iter().map(|d| d.get_io_channel()).collect()
}

/// The unit of resync and attach copies (and of the write barrier's buckets).
pub const COPY_CHUNK_BYTES: u64 = 1 << 20;

/// Preallocated parent slots per channel.
const SLOTS: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
}

/// A parent request waiting for its children.
struct Slot {
    parent: Option<BdevIo>,
    kind: Kind,
    remaining: u32,
    /// Plexes (reads, writes) or disks' plex masks (flushes) with at least one failed piece.
    failed: u64,
    /// Plexes that received pieces.
    touched: u64,
    /// Plexes already tried (reads).
    tried: u64,
    errno: i32,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            parent: None,
            kind: Kind::Read,
            remaining: 0,
            failed: 0,
            touched: 0,
            tried: 0,
            errno: 0,
        }
    }
}

struct ChanState {
    map: Arc<VolumeMap>,
    flush_targets: Vec<(u32, u64)>,
    bases: Vec<Rc<IoChannel>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Children built for the current request: (disk index, child).
    scratch: Vec<(u32, BdevIo)>,
    /// Writes waiting for the manager to record a detach: (slot, event id).
    held: VecDeque<(u32, u64)>,
    /// Writes waiting for a copy to leave their chunk, in arrival order.
    deferred: VecDeque<BdevIo>,
    rr: usize,
}

/// The part of a channel children complete into.
struct Core {
    shared: Arc<VolumeShared>,
    st: RefCell<ChanState>,
    /// Itself, for handing to children as their completion (weak: no cycle).
    me: std::rc::Weak<Core>,
}

struct VolumeChannel {
    core: Rc<Core>,
}

fn tag(slot: u32, piece: usize) -> u64 {
    (slot as u64) | ((piece as u64) << 32)
}

impl ChanState {
    /// Picks up a newer map (allocates, but only when the manager published a change).
    fn refresh(&mut self, shared: &VolumeShared) {
        if shared.generation.load(Ordering::Acquire) == self.map.generation {
            return;
        }
        let map = shared.map();
        match channels_for(&map) {
            Ok(bases) => {
                self.flush_targets = map.flush_targets();
                self.bases = bases;
                self.map = map;
            }
            Err(e) => tracing::error!(volume = %shared.name, "cannot open a disk channel: {e}"),
        }
    }

    fn alloc_slot(&mut self, parent: BdevIo, kind: Kind) -> u32 {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::empty());
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[idx as usize];
        *s = Slot::empty();
        s.parent = Some(parent);
        s.kind = kind;
        idx
    }

    /// Frees slot `idx` and returns its parent; a write leaves the barrier.
    fn release_slot(&mut self, idx: u32, barrier: &SyncBarrier) -> Option<BdevIo> {
        let s = &mut self.slots[idx as usize];
        let p = s.parent.take();
        if s.kind == Kind::Write {
            if let Some(p) = &p {
                barrier.leave(p.offset_blocks(), p.num_blocks());
            }
        }
        self.free.push(idx);
        p
    }

    /// Picks a readable plex not in `tried`, by policy.
    fn pick_read_plex(&mut self, tried: u64) -> Option<usize> {
        let readable = self.map.readable_mask() & !tried;
        if readable == 0 {
            return None;
        }
        if let Some(src) = self.map.read_source {
            if readable & (1 << src) != 0 {
                return Some(src);
            }
        }
        if let MapReadPolicy::Prefer(p) = self.map.read_policy {
            if readable & (1 << p) != 0 {
                return Some(p);
            }
        }
        let n = self.map.plexes.len();
        for k in 0..n {
            let i = (self.rr + k) % n;
            if readable & (1 << i) != 0 {
                self.rr = i + 1;
                return Some(i);
            }
        }
        None
    }

    /// Builds the children of slot `idx` on plex `plex` into `scratch`.
    fn split(&mut self, idx: u32, plex: usize, op: IoType, core: &Rc<Core>) -> Result<(), i32> {
        let bs = self.map.disks.first().map_or(512, |d| d.block_size()) as usize;
        let ChanState {
            map,
            slots,
            scratch,
            ..
        } = self;
        let slot = &mut slots[idx as usize];
        let Some(parent) = slot.parent.as_ref() else {
            return Err(libc::EIO);
        };
        let cb: Rc<dyn IoCompletion> = core.clone();
        let mut built = 0u32;
        map.plexes[plex]
            .geometry
            .map(
                parent.offset_blocks(),
                parent.num_blocks(),
                |seg: Segment| {
                    let mut c = BdevIo::alloc();
                    c.prep(op, seg.target_offset, seg.len);
                    if op.has_data() {
                        push_range(
                            &mut c,
                            parent.iovs(),
                            seg.req_offset as usize * bs,
                            seg.len as usize * bs,
                        );
                    }
                    c.set_callback(cb.clone(), tag(idx, plex));
                    scratch.push((seg.target, c));
                    built += 1;
                },
            )
            .map_err(|_| libc::EINVAL)?;
        slot.remaining += built;
        slot.touched |= 1 << plex;
        Ok(())
    }

    /// Submits the children built in `scratch`.
    fn launch(&mut self) {
        let ChanState { scratch, bases, .. } = self;
        for (disk, c) in scratch.drain(..) {
            match bases.get(disk as usize) {
                Some(ch) => ch.submit(c),
                None => c.complete(IoStatus::Failed(libc::EIO)),
            }
        }
    }

    /// Drops built children (a split failed part-way) and fails the request.
    fn abort(&mut self, idx: u32, errno: i32, barrier: &SyncBarrier) {
        self.scratch.clear();
        if let Some(p) = self.release_slot(idx, barrier) {
            p.complete(IoStatus::Failed(errno));
        }
    }

    fn start_read(&mut self, idx: u32, core: &Rc<Core>) {
        let tried = self.slots[idx as usize].tried;
        let Some(plex) = self.pick_read_plex(tried) else {
            let errno = match self.slots[idx as usize].errno {
                0 => libc::EIO,
                e => e,
            };
            self.abort(idx, errno, &core.shared.barrier);
            return;
        };
        let s = &mut self.slots[idx as usize];
        s.tried |= 1 << plex;
        s.failed = 0;
        s.touched = 0;
        match self.split(idx, plex, IoType::Read, core) {
            Ok(()) => self.launch(),
            Err(e) => self.abort(idx, e, &core.shared.barrier),
        }
    }

    fn start_write(&mut self, idx: u32, op: IoType, core: &Rc<Core>) {
        let writable = self.map.writable_mask();
        if writable == 0 {
            self.abort(idx, libc::EIO, &core.shared.barrier);
            return;
        }
        for plex in 0..self.map.plexes.len() {
            if writable & (1 << plex) == 0 {
                continue;
            }
            if let Err(e) = self.split(idx, plex, op, core) {
                self.abort(idx, e, &core.shared.barrier);
                return;
            }
        }
        self.launch();
    }

    fn start_flush(&mut self, idx: u32, op: IoType, core: &Rc<Core>) {
        let cb: Rc<dyn IoCompletion> = core.clone();
        let ChanState {
            flush_targets,
            scratch,
            slots,
            map,
            ..
        } = self;
        for (i, (disk, _)) in flush_targets.iter().enumerate() {
            let supported = map
                .disks
                .get(*disk as usize)
                .is_some_and(|d| d.io_types().contains(op));
            if !supported {
                continue;
            }
            let mut c = BdevIo::alloc();
            c.prep(op, 0, 0);
            c.set_callback(cb.clone(), tag(idx, i));
            scratch.push((*disk, c));
        }
        let n = scratch.len() as u32;
        slots[idx as usize].remaining = n;
        if n == 0 {
            if let Some(p) = self.release_slot(idx, &core.shared.barrier) {
                p.complete(IoStatus::Success);
            }
            return;
        }
        self.launch();
    }

    /// All children of slot `idx` are done: finish, retry or hold the parent.
    fn finish(&mut self, idx: u32, core: &Rc<Core>) {
        let s = &self.slots[idx as usize];
        let (kind, failed, touched, errno) = (s.kind, s.failed, s.touched, s.errno);
        if failed == 0 {
            let bad = s.tried & !touched;
            if kind == Kind::Read && bad != 0 {
                // Served by another plex after a failure: have the failed ones repaired.
                if let Some(p) = s.parent.as_ref() {
                    let _ = core.shared.events.send(VolumeEvent::ReadRepair {
                        volume: core.shared.clone(),
                        map: self.map.clone(),
                        bad,
                        good: touched.trailing_zeros() as usize,
                        offset: p.offset_blocks(),
                        num: p.num_blocks(),
                    });
                }
            }
            if let Some(p) = self.release_slot(idx, &core.shared.barrier) {
                p.complete(IoStatus::Success);
            }
            return;
        }
        match kind {
            Kind::Read => {
                core.shared.read_errors.fetch_add(1, Ordering::Relaxed);
                self.start_read(idx, core);
            }
            Kind::Write | Kind::Flush => {
                let survivors = touched & !failed & self.map.readable_mask();
                core.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                if survivors == 0 {
                    if let Some(p) = self.release_slot(idx, &core.shared.barrier) {
                        p.complete(IoStatus::Failed(if errno == 0 { libc::EIO } else { errno }));
                    }
                    return;
                }
                let id = core.shared.next_event.fetch_add(1, Ordering::AcqRel);
                let sent = core.shared.events.send(VolumeEvent::WriteFailed {
                    volume: core.shared.clone(),
                    map: self.map.clone(),
                    plexes: failed,
                    id,
                });
                if sent.is_err() {
                    // Nobody can record the detach: failing the write is the only honest answer.
                    if let Some(p) = self.release_slot(idx, &core.shared.barrier) {
                        p.complete(IoStatus::Failed(libc::EIO));
                    }
                    return;
                }
                self.held.push_back((idx, id));
            }
        }
    }

    /// Completes held writes whose detach is recorded (or fails them if the volume was
    /// disabled instead).
    fn release_held(&mut self, shared: &VolumeShared) -> usize {
        if self.held.is_empty() {
            return 0;
        }
        let acked = shared.acked_event.load(Ordering::Acquire);
        let enabled = shared.map.load().enabled;
        let mut n = 0;
        while let Some(&(idx, id)) = self.held.front() {
            if id > acked && enabled {
                break;
            }
            self.held.pop_front();
            let status = if enabled {
                IoStatus::Success
            } else {
                IoStatus::Failed(libc::EIO)
            };
            if let Some(p) = self.release_slot(idx, &shared.barrier) {
                p.complete(status);
            }
            n += 1;
        }
        n
    }
}

/// Appends to `child` the bytes `[off, off + len)` of the data described by `iovs`.
fn push_range(child: &mut BdevIo, iovs: &[libc::iovec], mut off: usize, mut len: usize) {
    for v in iovs {
        if len == 0 {
            break;
        }
        if off >= v.iov_len {
            off -= v.iov_len;
            continue;
        }
        let n = (v.iov_len - off).min(len);
        // SAFETY: `v` is a segment of the parent request, valid for reads and writes of
        // `iov_len` bytes until the parent completes (contract of `BdevIo::push_iov`); the
        // parent waits in a slot until every child has completed, and `off + n <= iov_len`.
        unsafe { child.push_iov((v.iov_base as *mut u8).add(off), n) };
        len -= n;
        off = 0;
    }
}

impl IoCompletion for Core {
    fn io_done(&self, child: BdevIo) {
        let t = child.tag();
        let status = child.status();
        drop(child);
        let idx = (t & 0xffff_ffff) as u32;
        let piece = (t >> 32) as usize;
        let Some(core) = self.me.upgrade() else {
            return;
        };
        let mut st = self.st.borrow_mut();
        let ChanState {
            slots,
            flush_targets,
            ..
        } = &mut *st;
        let Some(s) = slots.get_mut(idx as usize) else {
            return;
        };
        let plexes = match s.kind {
            Kind::Flush => flush_targets.get(piece).map_or(0, |(_, m)| *m),
            _ => 1 << piece,
        };
        if let IoStatus::Failed(e) = status {
            s.errno = e;
            s.failed |= plexes;
        }
        if s.kind == Kind::Flush {
            s.touched |= plexes;
        }
        s.remaining = s.remaining.saturating_sub(1);
        if s.remaining == 0 {
            st.finish(idx, &core);
        }
    }
}

impl ChanState {
    /// Starts one request, or hands it back if it must wait (a copy holds its chunk, or
    /// earlier requests are already waiting).
    fn start(&mut self, io: BdevIo, core: &Rc<Core>) -> Option<BdevIo> {
        let op = io.io_type();
        let is_write = matches!(op, IoType::Write | IoType::WriteZeroes | IoType::Unmap);
        if is_write {
            // Count in before looking at the map, so a copy that raises the barrier after
            // this either waits for this write or is seen by it (see `task::SyncBarrier`).
            if !self.deferred.is_empty()
                || !core
                    .shared
                    .barrier
                    .enter(io.offset_blocks(), io.num_blocks())
            {
                return Some(io);
            }
        }
        self.refresh(&core.shared);
        if !self.map.enabled {
            if is_write {
                core.shared
                    .barrier
                    .leave(io.offset_blocks(), io.num_blocks());
            }
            io.complete(IoStatus::Failed(libc::ENXIO));
            return None;
        }
        let several = self.map.writable_mask().count_ones() > 1;
        match op {
            IoType::Read => {
                let idx = self.alloc_slot(io, Kind::Read);
                self.start_read(idx, core);
            }
            IoType::Write | IoType::WriteZeroes => {
                let idx = self.alloc_slot(io, Kind::Write);
                self.start_write(idx, op, core);
            }
            IoType::Unmap => {
                // Mirrors must stay identical, and an unmapped block reads back as anything.
                let op = if several {
                    IoType::WriteZeroes
                } else {
                    IoType::Unmap
                };
                let idx = self.alloc_slot(io, Kind::Write);
                self.start_write(idx, op, core);
            }
            IoType::Flush | IoType::Reset => {
                let idx = self.alloc_slot(io, Kind::Flush);
                self.start_flush(idx, op, core);
            }
        }
        None
    }

    /// Retries deferred writes in order; returns how many started.
    fn retry_deferred(&mut self, core: &Rc<Core>) -> usize {
        let mut n = 0;
        while let Some(io) = self.deferred.pop_front() {
            let q = std::mem::take(&mut self.deferred);
            let back = self.start(io, core);
            self.deferred = q;
            match back {
                Some(io) => {
                    self.deferred.push_front(io);
                    break;
                }
                None => n += 1,
            }
        }
        n
    }
}

impl DriverChannel for VolumeChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo> {
        let core = &self.core;
        let mut st = core.st.borrow_mut();
        st.release_held(&core.shared);
        if let Some(io) = st.start(io, core) {
            st.deferred.push_back(io);
        }
        Ok(())
    }

    fn poll(&mut self) -> usize {
        let core = &self.core;
        match core.st.try_borrow_mut() {
            Ok(mut st) => {
                let n = st.release_held(&core.shared);
                if st.deferred.is_empty() {
                    n
                } else {
                    n + st.retry_deferred(core)
                }
            }
            Err(_) => 0,
        }
    }

    fn must_poll(&self) -> bool {
        self.core
            .st
            .try_borrow()
            .map_or(true, |st| !st.held.is_empty() || !st.deferred.is_empty())
    }
}
