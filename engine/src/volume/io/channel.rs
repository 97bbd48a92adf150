//! A volume's queue on one reactor: the I/O path from a volume request to its disks.
//!
//! Each request is bound, for its whole life, to the map that was current when it started (a
//! view: the map, its flush targets and this reactor's channels to its disks). Plex
//! indices in its masks, its children and the events it sends all refer to that map, so a map
//! published meanwhile (a plex detached, attached, a move's shadow added) cannot make a
//! completion count the wrong plex. Views are kept while requests use them and dropped after;
//! loading a new one allocates, but only when the manager publishes a change.
//!
//! Steady state takes no lock and allocates nothing: the parent waits in a preallocated slot
//! while its children (one per segment per plex) run on the disks.
//!
//! The volume's request types are fixed when it starts, but a plex attached, moved or grown
//! later may sit on a disk without write-zeroes or unmap. There, write-zeroes become writes
//! from one shared buffer of zeroes (allocated once, at the first channel's creation), and an
//! unmap (sent to disks only when one plex takes writes; mirrors get write-zeroes) is a no-op:
//! a volume promises nothing about what an unmapped range reads back as.
//!
//! With a dirty region log (`VolumeMap::drl`), a write (write-zeroes, unmap) enters its
//! regions right after it got its slot: when their bits are durable already (the steady
//! state) that is one atomic per region and the write goes on; otherwise it waits in the
//! channel's `DrlPort` until a batch made them durable, started from `poll` or `submit`.
//! It leaves its regions when its slot is released, whatever its outcome.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use crate::bdev::{
    BdevError, BdevIo, DriverChannel, IoBuf, IoChannel, IoCompletion, IoStatus, IoType,
};
use crate::reactor::{tsc, Poller};
use crate::volume::drl::regions::Entered;
use crate::volume::io::barrier::SyncBarrier;
use crate::volume::io::driver::{VolumeEvent, VolumeMap, VolumeShared};
use crate::volume::io::drl_port::{
    self, ClockTarget, DrlClock, DrlPort, PortView, Waiter, MIRROR_DRL_TAG,
};
use crate::volume::model::layout::Segment;

/// Preallocated parent slots per channel.
const SLOTS: usize = 256;

/// Creates a channel for the volume on the calling reactor.
pub(crate) fn create(shared: &Arc<VolumeShared>) -> Result<Box<dyn DriverChannel>, BdevError> {
    // Allocated here, off the I/O path, for write-zeroes emulated later.
    zeroes();
    let view = View::load(shared.map())?;
    let core = Rc::new_cyclic(|me| Core {
        me: me.clone(),
        shared: shared.clone(),
        st: RefCell::new(ChanState {
            views: vec![Some(view)],
            cur: 0,
            broken: false,
            slots: Vec::with_capacity(SLOTS),
            free: Vec::with_capacity(SLOTS),
            scratch: Vec::with_capacity(64),
            held: VecDeque::with_capacity(16),
            deferred: VecDeque::with_capacity(16),
            rr: 0,
            port: DrlPort::new(MIRROR_DRL_TAG, SLOTS),
            port_view: None,
            clock: None,
        }),
    });
    core.st.borrow_mut().view_loaded(&core);
    Ok(Box::new(VolumeChannel { core }))
}

/// One published map as this channel uses it.
struct View {
    map: Arc<VolumeMap>,
    flush_targets: Vec<(u32, u64)>,
    /// The disks of `flush_targets` (what a region log's clear pass flushes).
    flush_disks: Vec<u32>,
    bases: Vec<Rc<IoChannel>>,
    /// Plexes that may serve reads / take writes (bit per plex).
    readable: u64,
    writable: u64,
    block_size: usize,
    /// Requests in flight started on this view.
    users: u32,
}

impl View {
    fn load(map: Arc<VolumeMap>) -> Result<View, BdevError> {
        let bases = map
            .disks
            .iter()
            .map(|d| d.get_io_channel())
            .collect::<Result<Vec<_>, _>>()?;
        let flush_targets = map.flush_targets();
        Ok(View {
            flush_disks: flush_targets.iter().map(|(d, _)| *d).collect(),
            flush_targets,
            readable: map.readable_mask(),
            writable: map.writable_mask(),
            block_size: map.disks.first().map_or(512, |d| d.block_size()) as usize,
            map,
            bases,
            users: 0,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
}

/// A parent request waiting for its children.
struct ParentSlot {
    parent: Option<BdevIo>,
    kind: Kind,
    /// Index of the view the request is bound to.
    view: usize,
    remaining: u32,
    /// Plexes (of the slot's view) with at least one failed piece.
    failed: u64,
    /// Plexes that received pieces.
    touched: u64,
    /// Plexes already tried (reads).
    tried: u64,
    errno: i32,
    /// The regions `first..=last` a write entered in its view's region log.
    drl: Option<(u32, u32)>,
}

impl ParentSlot {
    fn empty() -> ParentSlot {
        ParentSlot {
            parent: None,
            kind: Kind::Read,
            view: 0,
            remaining: 0,
            failed: 0,
            touched: 0,
            tried: 0,
            errno: 0,
            drl: None,
        }
    }
}

struct ChanState {
    /// Views in use; `cur` is the newest. Freed entries are `None` and reused.
    views: Vec<Option<View>>,
    cur: usize,
    /// The newest map could not be loaded (a disk channel failed): requests fail until it can.
    broken: bool,
    slots: Vec<ParentSlot>,
    free: Vec<u32>,
    /// Children built for the current request: (view, disk index, child).
    scratch: Vec<(usize, u32, BdevIo)>,
    /// Writes waiting for the manager to record a detach: (slot, event id).
    held: VecDeque<(u32, u64)>,
    /// Writes waiting for a copy to leave their chunk, in arrival order.
    deferred: VecDeque<BdevIo>,
    rr: usize,
    /// Writes waiting for their region log bits, and the log's I/O when this channel holds
    /// its token.
    port: DrlPort,
    /// The view the port's I/O in flight was issued on (kept alive until it ends).
    port_view: Option<usize>,
    /// Runs the log's clear passes while the channel is idle (once it loaded a log).
    clock: Option<Rc<dyn Poller>>,
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

/// A child's tag: its slot in the low 32 bits, its plex (or flush target) above. The bits from
/// 60 up are left free for the region log port's own I/O ([`MIRROR_DRL_TAG`]).
fn tag(slot: u32, piece: usize) -> u64 {
    debug_assert!(
        piece < 1 << 28,
        "piece {piece} would reach the region log's tag bits"
    );
    (slot as u64) | ((piece as u64) << 32)
}

impl ChanState {
    fn view(&self, i: usize) -> &View {
        match self.views.get(i).and_then(Option::as_ref) {
            Some(v) => v,
            // Slots only point at views they keep alive (users > 0), and `cur` is never freed.
            None => unreachable!("volume channel view {i} is gone"),
        }
    }

    fn view_mut(&mut self, i: usize) -> &mut View {
        match self.views.get_mut(i).and_then(Option::as_mut) {
            Some(v) => v,
            None => unreachable!("volume channel view {i} is gone"),
        }
    }

    /// Picks up a newer map.
    fn refresh(&mut self, core: &Rc<Core>) {
        let shared = &core.shared;
        let gen = shared.generation.load(Ordering::Acquire);
        if gen == self.view(self.cur).map.generation && !self.broken {
            return;
        }
        match View::load(shared.map()) {
            Ok(v) => {
                self.broken = false;
                if self.view(self.cur).users == 0 {
                    self.views[self.cur] = Some(v);
                } else {
                    match self.views.iter().position(Option::is_none) {
                        Some(i) => {
                            self.views[i] = Some(v);
                            self.cur = i;
                        }
                        None => {
                            self.views.push(Some(v));
                            self.cur = self.views.len() - 1;
                        }
                    }
                }
                self.view_loaded(core);
            }
            Err(e) => {
                if !self.broken {
                    tracing::error!(volume = %shared.name, "cannot open a disk channel for the new map: {e}; failing requests until it can");
                }
                self.broken = true;
            }
        }
    }

    fn alloc_slot(&mut self, parent: BdevIo, kind: Kind) -> u32 {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(ParentSlot::empty());
                (self.slots.len() - 1) as u32
            }
        };
        let cur = self.cur;
        self.view_mut(cur).users += 1;
        let s = &mut self.slots[idx as usize];
        *s = ParentSlot::empty();
        s.parent = Some(parent);
        s.kind = kind;
        s.view = cur;
        idx
    }

    /// A new current view was loaded: if it has a region log, size the port's page buffer for
    /// it and make sure the channel's clock runs (both allocate, here and not on the I/O path).
    fn view_loaded(&mut self, core: &Rc<Core>) {
        let ChanState {
            views, cur, port, ..
        } = self;
        let Some(map) = views[*cur].as_ref().and_then(|v| v.map.drl.as_ref()) else {
            return;
        };
        port.prepare(map);
        if self.clock.is_none() {
            let me: Weak<dyn ClockTarget> = core.me.clone();
            let clock: Rc<dyn Poller> = Rc::new(DrlClock::new(me));
            if crate::reactor::register_poller(&clock) {
                self.clock = Some(clock);
            }
        }
    }

    /// Stops counting one user of view `v` (dropping the view if it is old and unused).
    fn release_view(&mut self, v: usize) {
        let view = self.view_mut(v);
        view.users = view.users.saturating_sub(1);
        if view.users == 0 && v != self.cur {
            self.views[v] = None;
        }
    }

    /// Stops counting slot `idx` as a user of its view (dropping the view if it is old and
    /// unused).
    fn unbind(&mut self, idx: u32) {
        self.release_view(self.slots[idx as usize].view);
    }

    /// Moves slot `idx` to the newest view.
    fn rebind(&mut self, idx: u32) {
        if self.slots[idx as usize].view == self.cur {
            return;
        }
        self.unbind(idx);
        let cur = self.cur;
        self.view_mut(cur).users += 1;
        self.slots[idx as usize].view = cur;
    }

    /// Leaves the regions slot `idx`'s write entered in its view's region log.
    fn leave_regions(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        if let Some((first, last)) = s.drl.take() {
            let v = s.view;
            if let Some(d) = self.view(v).map.drl.as_ref() {
                d.state.leave(first, last);
            }
        }
    }

    /// Frees slot `idx` and returns its parent; a write leaves the barrier and its regions.
    fn release_slot(&mut self, idx: u32, barrier: &SyncBarrier) -> Option<BdevIo> {
        self.leave_regions(idx);
        self.unbind(idx);
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

    fn complete_slot(&mut self, idx: u32, status: IoStatus, barrier: &SyncBarrier) {
        if let Some(p) = self.release_slot(idx, barrier) {
            p.complete(status);
        }
    }

    /// Moves a read's slot to the newest view, translating the plexes it tried by name (a
    /// retry must never read a plex that was detached meanwhile).
    fn rebind_read(&mut self, idx: u32) {
        let old = self.slots[idx as usize].view;
        if old == self.cur {
            return;
        }
        let tried = self.slots[idx as usize].tried;
        let translated = {
            let (o, n) = (&self.view(old).map, &self.view(self.cur).map);
            n.plexes
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    o.plexes
                        .iter()
                        .enumerate()
                        .any(|(i, q)| tried & (1 << i) != 0 && q.name == p.name)
                })
                .fold(0u64, |m, (i, _)| m | 1 << i)
        };
        self.unbind(idx);
        let cur = self.cur;
        self.view_mut(cur).users += 1;
        let s = &mut self.slots[idx as usize];
        s.view = cur;
        s.tried = translated;
    }

    /// Picks a readable plex of view `v` not in `tried`, by policy.
    fn pick_read_plex(&mut self, v: usize, tried: u64) -> Option<usize> {
        let view = self.view(v);
        let map = &view.map;
        let readable = view.readable & !tried;
        if readable == 0 {
            return None;
        }
        if let Some(src) = map.read_source {
            if readable & (1 << src) != 0 {
                return Some(src);
            }
        }
        if let crate::volume::io::driver::MapReadPolicy::Prefer(p) = map.read_policy {
            if readable & (1 << p) != 0 {
                return Some(p);
            }
        }
        let n = map.plexes.len();
        for k in 0..n {
            let i = (self.rr + k) % n;
            if readable & (1 << i) != 0 {
                self.rr = i + 1;
                return Some(i);
            }
        }
        None
    }

    /// Builds the children of slot `idx` on plex `plex` (of the slot's view) into `scratch`.
    fn split(&mut self, idx: u32, plex: usize, op: IoType, core: &Rc<Core>) -> Result<(), i32> {
        let ChanState {
            views,
            slots,
            scratch,
            ..
        } = self;
        let slot = &mut slots[idx as usize];
        let v = slot.view;
        let Some(view) = views.get(v).and_then(Option::as_ref) else {
            return Err(libc::EIO);
        };
        let map = &view.map;
        let bs = view.block_size;
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
                    let native = !matches!(op, IoType::WriteZeroes | IoType::Unmap)
                        || map
                            .disks
                            .get(seg.target as usize)
                            .is_some_and(|d| d.io_types().contains(op));
                    if !native {
                        if op == IoType::WriteZeroes {
                            built += zero_writes(seg, bs, v, tag(idx, plex), &cb, scratch);
                        }
                        // An unmap the disk lacks: nothing to do (see the module doc).
                        return;
                    }
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
                    scratch.push((v, seg.target, c));
                    built += 1;
                },
            )
            .map_err(|_| libc::EINVAL)?;
        slot.remaining += built;
        slot.touched |= 1 << plex;
        Ok(())
    }

    /// Submits the children built in `scratch` on their view's disk channels.
    fn launch(&mut self) {
        let ChanState { scratch, views, .. } = self;
        for (v, disk, c) in scratch.drain(..) {
            let ch = views
                .get(v)
                .and_then(Option::as_ref)
                .and_then(|view| view.bases.get(disk as usize));
            match ch {
                Some(ch) => ch.submit(c),
                None => c.complete(IoStatus::Failed(libc::EIO)),
            }
        }
    }

    /// Drops built children (a split failed part-way) and fails the request.
    fn abort(&mut self, idx: u32, errno: i32, barrier: &SyncBarrier) {
        self.scratch.clear();
        self.complete_slot(idx, IoStatus::Failed(errno), barrier);
    }

    fn start_read(&mut self, idx: u32, core: &Rc<Core>) {
        let (tried, v) = {
            let s = &self.slots[idx as usize];
            (s.tried, s.view)
        };
        let Some(plex) = self.pick_read_plex(v, tried) else {
            let errno = match self.slots[idx as usize].errno {
                0 => libc::EIO,
                e => e,
            };
            self.abort(idx, errno, core.shared.barrier());
            return;
        };
        let s = &mut self.slots[idx as usize];
        s.tried |= 1 << plex;
        s.failed = 0;
        s.touched = 0;
        match self.split(idx, plex, IoType::Read, core) {
            Ok(()) => self.launch(),
            Err(e) => self.abort(idx, e, core.shared.barrier()),
        }
    }

    fn start_write(&mut self, idx: u32, op: IoType, core: &Rc<Core>) {
        let v = self.slots[idx as usize].view;
        let (writable, n) = {
            let view = self.view(v);
            (view.writable, view.map.plexes.len())
        };
        if writable == 0 {
            self.abort(idx, libc::EIO, core.shared.barrier());
            return;
        }
        for plex in (0..n).filter(|p| writable & (1 << p) != 0) {
            if let Err(e) = self.split(idx, plex, op, core) {
                self.abort(idx, e, core.shared.barrier());
                return;
            }
        }
        if self.slots[idx as usize].remaining == 0 {
            // Only unmaps on disks without them: nothing went down.
            self.complete_slot(idx, IoStatus::Success, core.shared.barrier());
            return;
        }
        self.launch();
    }

    fn start_flush(&mut self, idx: u32, op: IoType, core: &Rc<Core>) {
        let cb: Rc<dyn IoCompletion> = core.clone();
        let v = self.slots[idx as usize].view;
        let ChanState {
            views,
            scratch,
            slots,
            ..
        } = self;
        if let Some(view) = views.get(v).and_then(Option::as_ref) {
            for (i, (disk, _)) in view.flush_targets.iter().enumerate() {
                let supported = view
                    .map
                    .disks
                    .get(*disk as usize)
                    .is_some_and(|d| d.io_types().contains(op));
                if !supported {
                    continue;
                }
                let mut c = BdevIo::alloc();
                c.prep(op, 0, 0);
                c.set_callback(cb.clone(), tag(idx, i));
                scratch.push((v, *disk, c));
            }
        }
        let n = scratch.len() as u32;
        slots[idx as usize].remaining = n;
        if n == 0 {
            self.complete_slot(idx, IoStatus::Success, core.shared.barrier());
            return;
        }
        self.launch();
    }

    /// All children of slot `idx` are done: finish, retry or hold the parent.
    fn finish(&mut self, idx: u32, core: &Rc<Core>) {
        let s = &self.slots[idx as usize];
        let (kind, failed, touched, errno, v) = (s.kind, s.failed, s.touched, s.errno, s.view);
        let shared = &core.shared;
        if failed == 0 {
            let mut bad = s.tried & !touched;
            // A resync's source is never rewritten from another plex: nothing here can prove
            // that plex still in sync when the repair runs (one that failed a copy write may
            // hold older data until it is detached). The source's range stays as it is; a
            // read there fails over again, and is repaired once the resync has ended.
            if let Some(src) = self.view(v).map.read_source {
                bad &= !(1u64 << src);
            }
            if kind == Kind::Read && bad != 0 {
                // Served by another plex after a failure: have the failed ones repaired.
                if let Some(p) = s.parent.as_ref() {
                    let _ = shared.events.send(VolumeEvent::ReadRepair {
                        volume: shared.clone(),
                        map: self.view(v).map.clone(),
                        bad,
                        good: touched.trailing_zeros() as usize,
                        offset: p.offset_blocks(),
                        num: p.num_blocks(),
                    });
                }
            }
            self.complete_slot(idx, IoStatus::Success, shared.barrier());
            return;
        }
        match kind {
            Kind::Read => {
                shared.read_errors.fetch_add(1, Ordering::Relaxed);
                self.rebind_read(idx);
                // During a resync only the source holds current data where the resync has
                // not been yet: no other plex may serve that range (nor repair the source).
                let syncing = self.view(self.cur).map.read_source.is_some();
                let end = request_end(&self.slots[idx as usize]);
                if syncing && !shared.resynced_through(end) {
                    let e = if errno == 0 { libc::EIO } else { errno };
                    self.complete_slot(idx, IoStatus::Failed(e), shared.barrier());
                    return;
                }
                self.start_read(idx, core);
            }
            Kind::Write | Kind::Flush => {
                let map = self.view(v).map.clone();
                let survivors = touched & !failed & self.view(v).readable;
                shared.write_errors.fetch_add(1, Ordering::Relaxed);
                if survivors == 0 {
                    let e = if errno == 0 { libc::EIO } else { errno };
                    self.complete_slot(idx, IoStatus::Failed(e), shared.barrier());
                    return;
                }
                // Ids are taken and sent in one step, so an acknowledgement of id N means
                // every event up to N was handled.
                let (id, sent) = {
                    let _order = shared.event_lock.lock().unwrap_or_else(|p| p.into_inner());
                    let id = shared.next_event.fetch_add(1, Ordering::AcqRel);
                    let sent = shared.events.send(VolumeEvent::WriteFailed {
                        volume: shared.clone(),
                        map,
                        plexes: failed,
                        id,
                    });
                    (id, sent)
                };
                if sent.is_err() {
                    // Nobody can record the detach: failing the write is the only honest answer.
                    self.complete_slot(idx, IoStatus::Failed(libc::EIO), shared.barrier());
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
            self.complete_slot(idx, status, shared.barrier());
            n += 1;
        }
        n
    }

    /// Issues write slot `idx` (`op`) once its regions are durable in the view's region log:
    /// at once when they are (or the view has no log), else after the port made them so.
    fn start_logged(&mut self, idx: u32, op: IoType, core: &Rc<Core>) {
        let entered = {
            let s = &self.slots[idx as usize];
            match (self.view(s.view).map.drl.as_ref(), s.parent.as_ref()) {
                (Some(d), Some(p)) => Some(drl_port::enter(d, p.offset_blocks(), p.num_blocks())),
                _ => None,
            }
        };
        match entered {
            None => self.start_write(idx, op, core),
            Some(Ok((first, last, e))) => {
                self.slots[idx as usize].drl = Some((first, last));
                match e {
                    Entered::Go => self.start_write(idx, op, core),
                    Entered::Wait(ticket) => {
                        self.port.wait(Waiter {
                            slot: idx,
                            op,
                            first,
                            last,
                            ticket,
                        });
                        self.drive_port(core);
                    }
                }
            }
            Some(Err(())) => {
                tracing::error!(volume = %core.shared.name, "a write past the regions of the volume's region log was failed (the map does not cover the volume)");
                self.abort(idx, libc::EIO, core.shared.barrier());
            }
        }
    }

    /// Starts the waiting writes whose regions became durable; a waiter whose view's log is
    /// no longer the current one (the manager replaced or dropped it) enters the current
    /// view's log instead. Returns how many went on.
    fn serve_waiters(&mut self, core: &Rc<Core>) -> usize {
        if self.port.waiting() == 0 {
            return 0;
        }
        self.refresh(core);
        let mut n = 0;
        loop {
            let due = {
                let ChanState {
                    views,
                    slots,
                    cur,
                    port,
                    ..
                } = self;
                let log = |v: usize| {
                    views
                        .get(v)
                        .and_then(Option::as_ref)
                        .and_then(|view| view.map.drl.as_ref())
                        .map(|d| &*d.state)
                };
                port.take_due(|slot| log(slots[slot as usize].view), log(*cur))
            };
            let Some((w, stale)) = due else {
                break;
            };
            n += 1;
            let several = self.view(self.cur).writable.count_ones() > 1;
            let op = if w.op == IoType::Unmap && several {
                IoType::WriteZeroes
            } else {
                w.op
            };
            if stale {
                self.leave_regions(w.slot);
                self.rebind(w.slot);
                self.start_logged(w.slot, op, core);
            } else {
                self.rebind(w.slot);
                self.start_write(w.slot, op, core);
            }
        }
        n
    }

    /// Lets the port do the log's work that is due, on the current view.
    fn drive_port(&mut self, core: &Rc<Core>) {
        if self.port.busy() {
            return;
        }
        let cur = self.cur;
        let cb: Rc<dyn IoCompletion> = core.clone();
        let ChanState { views, port, .. } = self;
        let Some(view) = views.get(cur).and_then(Option::as_ref) else {
            return;
        };
        let Some(pv) = PortView::of(
            &view.map,
            &view.bases,
            &view.flush_disks,
            &cb,
            &core.shared.name,
        ) else {
            port.release();
            return;
        };
        if port.drive(&pv, tsc::ticks()) {
            self.view_mut(cur).users += 1;
            self.port_view = Some(cur);
        }
    }

    /// A completion of the port's I/O (tag `t`).
    fn port_io_done(&mut self, t: u64, status: IoStatus, core: &Rc<Core>) {
        let Some(v) = self.port_view else {
            tracing::error!(volume = %core.shared.name, tag = t, "region log: a completion arrived with no log I/O in flight; ignored");
            return;
        };
        let cb: Rc<dyn IoCompletion> = core.clone();
        let ended = {
            let ChanState { views, port, .. } = &mut *self;
            let Some(view) = views.get(v).and_then(Option::as_ref) else {
                return;
            };
            let Some(pv) = PortView::of(
                &view.map,
                &view.bases,
                &view.flush_disks,
                &cb,
                &core.shared.name,
            ) else {
                return;
            };
            port.io_done(t, status, &pv, tsc::ticks())
        };
        if ended {
            self.port_view = None;
            self.release_view(v);
            self.drive_port(core);
            self.serve_waiters(core);
        }
    }

    /// Starts one request, or hands it back if it must wait (a copy holds its chunk, or
    /// earlier requests are already waiting).
    fn start(&mut self, io: BdevIo, core: &Rc<Core>) -> Option<BdevIo> {
        let op = io.io_type();
        let is_write = matches!(op, IoType::Write | IoType::WriteZeroes | IoType::Unmap);
        let barrier = core.shared.barrier();
        if io.num_blocks() == 0 && matches!(op, IoType::WriteZeroes | IoType::Unmap) {
            // No block to touch: nothing to split, so no child would ever complete it. As
            // SPDK's bdev layer does, a zero-length unmap is invalid and a zero-length
            // write-zeroes is done; neither enters the barrier.
            let status = if op == IoType::Unmap {
                IoStatus::Failed(libc::EINVAL)
            } else {
                IoStatus::Success
            };
            io.complete(status);
            return None;
        }
        if is_write {
            // Count in before looking at the map, so a copy that raises the barrier after
            // this either waits for this write or is seen by it (see `io::barrier::SyncBarrier`).
            if !self.deferred.is_empty() || !barrier.enter(io.offset_blocks(), io.num_blocks()) {
                return Some(io);
            }
        }
        self.refresh(core);
        let usable = !self.broken && self.view(self.cur).map.enabled;
        if !usable {
            if is_write {
                barrier.leave(io.offset_blocks(), io.num_blocks());
            }
            let e = if self.broken { libc::EIO } else { libc::ENXIO };
            io.complete(IoStatus::Failed(e));
            return None;
        }
        let several = self.view(self.cur).writable.count_ones() > 1;
        match op {
            IoType::Read => {
                let idx = self.alloc_slot(io, Kind::Read);
                self.start_read(idx, core);
            }
            IoType::Write | IoType::WriteZeroes => {
                let idx = self.alloc_slot(io, Kind::Write);
                self.start_logged(idx, op, core);
            }
            IoType::Unmap => {
                // Mirrors must stay identical, and an unmapped block reads back as anything.
                let op = if several {
                    IoType::WriteZeroes
                } else {
                    IoType::Unmap
                };
                let idx = self.alloc_slot(io, Kind::Write);
                self.start_logged(idx, op, core);
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

/// The block after the last one slot `s`'s request covers.
fn request_end(s: &ParentSlot) -> u64 {
    s.parent
        .as_ref()
        .map_or(u64::MAX, |p| p.offset_blocks() + p.num_blocks())
}

/// Bytes in the shared buffer of zeroes.
const ZERO_BUF_BYTES: usize = 1 << 20;
/// Segments per emulated write-zeroes child; within the iovec capacity a pooled request keeps
/// (32), so building one never allocates.
const ZERO_IOVS: usize = 16;

/// The shared buffer of zeroes: [`ZERO_BUF_BYTES`] of a leaked, never freed [`IoBuf`].
struct Zeroes(*mut u8);

// SAFETY: the pointer is to a heap buffer that is leaked (lives for the whole process) and
// that this module only ever hands to disks as the data of write requests, which they read
// (an error bdev's `corrupt_data` injection on such a write flips one byte and flips it back
// on completion, as on any caller's buffer); sharing it between threads shares memory that
// is only read.
unsafe impl Send for Zeroes {}
// SAFETY: as for `Send`.
unsafe impl Sync for Zeroes {}

static ZEROES: OnceLock<Zeroes> = OnceLock::new();

/// The shared buffer of zeroes (allocated by the first call; channel creation makes it).
fn zeroes() -> *mut u8 {
    ZEROES
        .get_or_init(|| Zeroes(Box::leak(Box::new(IoBuf::new(ZERO_BUF_BYTES))).as_mut_ptr()))
        .0
}

/// Builds into `scratch` the writes of zeroes that stand for a write-zeroes of `seg` on a disk
/// without it: children of up to [`ZERO_IOVS`] × [`ZERO_BUF_BYTES`], every segment the shared
/// buffer of zeroes. Returns how many.
fn zero_writes(
    seg: Segment,
    bs: usize,
    view: usize,
    tag: u64,
    cb: &Rc<dyn IoCompletion>,
    scratch: &mut Vec<(usize, u32, BdevIo)>,
) -> u32 {
    let zeroes = zeroes();
    let per_child = ((ZERO_IOVS * ZERO_BUF_BYTES) / bs.max(1)).max(1) as u64;
    let mut built = 0;
    let mut done = 0;
    while done < seg.len {
        let n = (seg.len - done).min(per_child);
        let mut c = BdevIo::alloc();
        c.prep(IoType::Write, seg.target_offset + done, n);
        let mut left = n as usize * bs;
        while left > 0 {
            let k = left.min(ZERO_BUF_BYTES);
            // SAFETY: `zeroes` is valid for `ZERO_BUF_BYTES >= k` bytes for the rest of the
            // process (leaked), and the child is a write, so the disk only reads them; other
            // requests reading the same zeroes meanwhile is sharing, not conflicting access.
            unsafe { c.push_iov(zeroes, k) };
            left -= k;
        }
        c.set_callback(cb.clone(), tag);
        scratch.push((view, seg.target, c));
        built += 1;
        done += n;
    }
    built
}

/// Appends to `child` the bytes `[off, off + len)` of the data described by `iovs` (the
/// segments of a parent request that waits until `child` completed).
pub(crate) fn push_range(child: &mut BdevIo, iovs: &[libc::iovec], mut off: usize, mut len: usize) {
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
        if st.port.owns_tag(t) {
            st.port_io_done(t, status, &core);
            return;
        }
        let ChanState { slots, views, .. } = &mut *st;
        let Some(s) = slots.get_mut(idx as usize) else {
            return;
        };
        let plexes = match s.kind {
            Kind::Flush => views
                .get(s.view)
                .and_then(Option::as_ref)
                .and_then(|v| v.flush_targets.get(piece))
                .map_or(0, |(_, m)| *m),
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

impl DriverChannel for VolumeChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo> {
        let core = &self.core;
        let mut st = core.st.borrow_mut();
        st.release_held(&core.shared);
        st.serve_waiters(core);
        if let Some(io) = st.start(io, core) {
            #[cfg(test)]
            core.shared
                .writes_deferred
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            st.deferred.push_back(io);
        }
        Ok(())
    }

    fn poll(&mut self) -> usize {
        let core = &self.core;
        match core.st.try_borrow_mut() {
            Ok(mut st) => {
                let mut n = st.release_held(&core.shared);
                if st.port.waiting() > 0 {
                    st.drive_port(core);
                    n += st.serve_waiters(core);
                }
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
        self.core.st.try_borrow().map_or(true, |st| {
            !st.held.is_empty() || !st.deferred.is_empty() || st.port.must_poll()
        })
    }
}

impl ClockTarget for Core {
    fn clock(&self, now: u64) -> u64 {
        let (Some(core), Ok(mut st)) = (self.me.upgrade(), self.st.try_borrow_mut()) else {
            return DrlClock::next_look(None, now);
        };
        st.refresh(&core);
        st.drive_port(&core);
        let cur = st.cur;
        let drl = st.view(cur).map.drl.as_ref().map(|d| &*d.state);
        DrlClock::next_look(drl, now)
    }
}
