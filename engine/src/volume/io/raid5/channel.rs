//! A RAID-5 volume's queue on one reactor: the I/O path from a volume request to its columns.
//!
//! - **Reads** of present columns go straight from the disks into the request's buffers, one
//!   child per data piece (no lock, no copy). A piece of the missing column (the map's, or one
//!   whose read just failed) is rebuilt by a *reconstruct* stripe operation: it holds its
//!   stripe, reads the same unit offsets of every other column (parity included) into its row
//!   buffer, XORs them and copies the result into the request. A read error on a column is
//!   answered by reconstructing the whole request without that column (counted in
//!   `read_errors`), and each rebuilt range is written back to that column while its
//!   operation still holds the stripe (md's read-error rewrite; `read_repairs`; a failed
//!   rewrite reports the column like a failed write). In rows a parity resync has not reached
//!   the parity is unverified, so a read error there fails the read (EIO) instead. A second
//!   failure fails the read.
//! - **Writes** (write-zeroes and unmaps too: they write zeroes, so parity stays right) are one
//!   *write* stripe operation per row: it holds its stripe (`StripeLock`), reads what its
//!   [`WritePlan`] needs into its row buffer, copies the new data in, computes the parity
//!   ([`super::compute::apply_write`]) and writes data and parity. A request covering more rows
//!   than there are free operations continues as operations come back. With the volume's
//!   `skip_copy` (md's option of that name; off by default) and no log, a full-stripe write
//!   skips the row buffer: its data goes to the columns from the request's own buffers and its
//!   parity is computed from them, read a block at a time into a scratch block. That saves a
//!   copy, but a client that changes a buffer while its write is in flight leaves parity that
//!   does not match the data written (which a later degraded read or rebuild would turn into
//!   wrong data): hence opt-in.
//! - **Failures**: a read a write needs that fails on one column first switches the write to
//!   its other plan (read-modify-write ⇄ reconstruct-write), which reads other ranges; after
//!   read-modify-write the failed range is rewritten by the write itself. A column that fails
//!   a write, a flush, or the read of that second plan too is reported
//!   ([`VolumeEvent::ColumnFailed`]); the operation keeps its stripe and its request waits until
//!   the manager has recorded the column stale and published a map without it, exactly as a
//!   mirror write waits for a plex detach. Then the write is acknowledged: the column's contents
//!   are implied by the others. A write that lost two columns (or one beside the missing one)
//!   fails with EIO, and the manager takes the volume offline.
//! - **Flushes** go to every disk of a present column.
//!
//! - **Region log**: with a dirty region log in the map (`VolumeMap::drl`; only volumes without
//!   a log plex get one, since the log replay covers their crashes), a write (write-zeroes,
//!   unmap) enters the regions of the whole request before its first row starts: when their
//!   bits are durable (the steady state) that is one atomic per region and its rows start at
//!   once; otherwise it waits in the channel's `DrlPort` and its rows start once a batch made
//!   them durable (from `poll` or `submit`). It leaves its regions when it completes, whatever
//!   its outcome. The port's own I/O (page writes, flushes) carries `DRL_TAG`.
//!
//! Steady state takes no lock and allocates nothing: stripe operations and their row buffers
//! are allocated with the channel (their number bounded by a memory budget), parents wait in
//! preallocated slots, a request that finds no free operation (or its barrier chunk raised by a
//! copy) waits in a queue and is taken up from the channel's poll.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::bdev::{
    BdevError, BdevIo, DriverChannel, IoBuf, IoChannel, IoCompletion, IoStatus, IoType,
};
use crate::reactor::{tsc, Poller};
use crate::volume::drl::regions::Entered;
use crate::volume::io::channel::push_range;
use crate::volume::io::driver::{Raid5Map, VolumeEvent, VolumeMap, VolumeShared};
use crate::volume::io::drl_port::{self, ClockTarget, DrlClock, DrlPort, PortView, Waiter};
use crate::volume::io::raid5::compute::{apply_write, reconstruct};
use crate::volume::io::raid5::parity::{xor_into, BLOCK as XOR_BLOCK};
use crate::volume::io::raid5::stripe_lock::{StripeHeld, StripeWaiters};
use crate::volume::model::raid5::{StripeSpan, WritePlan};
use crate::volume::model::raid5_log::{
    encode_header, slot_blocks, LogHeader, LogRange, MAX_LOG_SLOTS,
};

/// Preallocated parent slots per channel.
const PARENTS: usize = 256;
/// Row-buffer memory per channel: the number of stripe operations is this over one row
/// buffer (`ncol` stripe units), within [`MIN_OPS`, `MAX_OPS`].
const OP_BUDGET_BYTES: usize = 16 << 20;
/// Fewest stripe operations per channel, whatever the row size.
const MIN_OPS: usize = 4;
/// Most stripe operations per channel (more only wastes memory at queue depth 128).
const MAX_OPS: usize = 128;
/// Tag bit of a stripe operation's child (else the child belongs to a parent directly).
const OP_TAG: u64 = 1 << 63;
/// With [`OP_TAG`]: the child is a log write or flush (its index is a log plex's).
const LOG_TAG: u64 = 1 << 62;
/// Tag of a channel's flush of the column disks before log entries are retired.
const RETIRE_TAG: u64 = 1 << 61;
/// Tag of a channel's flush of the log disks (its index is a log plex's).
const LOG_FLUSH_TAG: u64 = 1 << 60;
/// Tag bit of the region log port's I/O ([`DrlPort`]: `DRL_TAG | kind << 32 | index`, kind
/// below 256). The channel's own tags never set it: they use the bits above (the tags just
/// above) and an index below 64 (column or log plex) in bits 32–37.
const DRL_TAG: u64 = 1 << 59;
const _: () = assert!(DRL_TAG & (OP_TAG | LOG_TAG | RETIRE_TAG | LOG_FLUSH_TAG) == 0);
const _: () = assert!(DRL_TAG > 0xff << 32);
/// Segments of a log entry write at most: the header and a range per data unit and parity
/// range (within what a pooled request holds without allocating).
const MAX_LOG_IOVS: usize = 30;

/// Creates a channel for RAID-5 volume `shared` on the calling reactor.
pub(crate) fn create(shared: &Arc<VolumeShared>) -> Result<Box<dyn DriverChannel>, BdevError> {
    let map = shared.map();
    let Some(r5) = map.raid5.as_ref() else {
        return Err(BdevError::InvalidParam(format!(
            "volume {} has no RAID-5 plex in its map",
            shared.name()
        )));
    };
    let bs = map.disks.first().map_or(512, |d| d.block_size()) as usize;
    let (ncol, su) = (r5.geometry.ncol(), r5.geometry.stripe_unit() as usize);
    let unit = su * bs;
    let row = ncol * unit;
    let nops = (OP_BUDGET_BYTES / row).clamp(MIN_OPS, MAX_OPS);
    let ops = (0..nops).map(|_| Op::new(IoBuf::new(row), bs)).collect();
    let view = View::load(map.clone())?;
    let core = Rc::new_cyclic(|me| Core {
        me: me.clone(),
        shared: shared.clone(),
        st: RefCell::new(State {
            views: vec![Some(view)],
            cur: 0,
            broken: false,
            parents: Vec::with_capacity(PARENTS),
            free_parents: Vec::with_capacity(PARENTS),
            ops,
            free_ops: (0..nops as u32).rev().collect(),
            waiters: StripeWaiters::with_capacity(nops),
            want_ops: VecDeque::with_capacity(PARENTS),
            held: VecDeque::with_capacity(nops + 16),
            deferred: VecDeque::with_capacity(16),
            scratch: Vec::with_capacity(64),
            log_waiters: VecDeque::with_capacity(nops),
            log_flush_waiting: Vec::with_capacity(nops),
            log_flushing: Vec::with_capacity(nops),
            log_flush_remaining: 0,
            log_flush_failed: 0,
            pending_retire: Vec::with_capacity(2 * MAX_LOG_SLOTS as usize),
            retiring: Vec::with_capacity(2 * MAX_LOG_SLOTS as usize),
            retire_remaining: 0,
            retire_view: 0,
            retire_failed: 0,
            retire_held: false,
            xor_scratch: vec![0; XOR_BLOCK],
            ncol,
            su: su as u64,
            bs,
            port: DrlPort::new(DRL_TAG, PARENTS),
            port_view: None,
            clock: None,
        }),
    });
    core.st.borrow_mut().view_loaded(&core);
    Ok(Box::new(Raid5Channel { core }))
}

/// One published map as this channel uses it.
struct View {
    map: Arc<VolumeMap>,
    bases: Vec<Rc<IoChannel>>,
    /// The disks a guest flush reaches (what a region log's clear pass flushes); empty
    /// without a region log.
    flush_disks: Vec<u32>,
    /// Parents and operations in flight bound to this view.
    users: u32,
}

impl View {
    fn load(map: Arc<VolumeMap>) -> Result<View, BdevError> {
        let bases = map
            .disks
            .iter()
            .map(|d| d.get_io_channel())
            .collect::<Result<Vec<_>, _>>()?;
        let mut flush_disks = Vec::new();
        if let (Some(r5), Some(_)) = (map.raid5.as_ref(), map.drl.as_ref()) {
            for (_, t) in written_disks(r5) {
                if !flush_disks.contains(&t) {
                    flush_disks.push(t);
                }
            }
        }
        Ok(View {
            map,
            bases,
            flush_disks,
            users: 0,
        })
    }

    fn raid5(&self) -> Option<&Raid5Map> {
        self.map.raid5.as_ref()
    }

    /// Builds into `scratch` a request of type `op` (a flush or a reset) for each distinct
    /// disk of `targets` (`(tag, disk)` pairs, bound to view `v`) that takes `op`; returns how
    /// many.
    fn disk_requests(
        &self,
        v: usize,
        op: IoType,
        targets: impl Iterator<Item = (u64, u32)>,
        cb: &Rc<dyn IoCompletion>,
        scratch: &mut Vec<(usize, u32, BdevIo)>,
    ) -> u32 {
        let first = scratch.len();
        let mut n = 0;
        for (tag, t) in targets {
            let dup = scratch[first..].iter().any(|(_, d, _)| *d == t);
            let takes = self
                .map
                .disks
                .get(t as usize)
                .is_some_and(|d| d.io_types().contains(op));
            if dup || !takes {
                continue;
            }
            let mut child = BdevIo::alloc();
            child.prep(op, 0, 0);
            child.set_callback(cb.clone(), tag);
            scratch.push((v, t, child));
            n += 1;
        }
        n
    }
}

/// The disks written to in `r5` as `(column, disk)`: every column but the missing one (which
/// counts while it is rebuilt: it takes writes below the rebuild's progress).
fn written_disks(r5: &Raid5Map) -> impl Iterator<Item = (usize, u32)> + '_ {
    r5.geometry
        .columns()
        .iter()
        .enumerate()
        .filter(|(c, _)| Some(*c) != r5.missing || r5.rebuilding)
        .flat_map(|(c, col)| col.extents.iter().map(move |e| (c, e.target)))
}

/// The disks of `r5`'s log plexes as `(log index, disk)`.
fn log_disks(r5: &Raid5Map) -> impl Iterator<Item = (usize, u32)> + '_ {
    r5.logs.iter().enumerate().take(63).flat_map(|(li, log)| {
        log.geometry
            .columns()
            .iter()
            .flat_map(|c| c.extents.iter())
            .map(move |e| (li, e.target))
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Read,
    /// A write; `op` is what goes into the row buffers' data: `Write` copies the request's
    /// data, `WriteZeroes` (and unmaps) zeroes.
    Write,
    WriteZeroes,
    /// A flush or reset sent to every disk of a present column.
    Flush(IoType),
}

/// A volume request waiting for its children and stripe operations.
struct Parent {
    io: Option<BdevIo>,
    kind: Kind,
    /// The view its direct children use.
    view: usize,
    /// Request-relative block of the next row to start.
    cursor: u64,
    /// Children and stripe operations in flight.
    remaining: u32,
    /// A column whose read failed: the request is read again around it (beside the map's
    /// missing column of each row).
    missing: Option<usize>,
    /// Columns whose direct children failed.
    failed: u64,
    /// First error to return (0: none).
    errno: i32,
    /// Whether it counted itself into the copy barrier (writes).
    in_barrier: bool,
    /// The regions it entered in its view's region log (`first..=last`), left when it
    /// completes.
    drl: Option<(u32, u32)>,
}

impl Parent {
    fn empty() -> Parent {
        Parent {
            io: None,
            kind: Kind::Read,
            view: 0,
            cursor: 0,
            remaining: 0,
            missing: None,
            failed: 0,
            errno: 0,
            in_barrier: false,
            drl: None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Free,
    /// Has a ticket, waits for its stripe in `waiters`.
    Waiting,
    Reading,
    /// Has its log sequence number, waits for its log slot to be retired (`log_waiters`).
    LogWait,
    /// Writing its log entry.
    Logging,
    /// Flushing the log disks.
    LogFlush,
    Writing,
    /// A column or log failed: waits for the manager to record it (in `held`).
    Held,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OpKind {
    /// The row part of a write.
    Write,
    /// Rebuild unit offsets `[lo, hi)` of the missing column (a degraded read), into the
    /// parent at request block `req`.
    Reconstruct { lo: u64, hi: u64, req: u64 },
}

/// One stripe operation: one row of one request, with its row buffer.
struct Op {
    stage: Stage,
    kind: OpKind,
    parent: u32,
    span: Option<StripeSpan>,
    plan: WritePlan,
    missing: Option<usize>,
    view: usize,
    held: Option<StripeHeld>,
    remaining: u32,
    /// Columns whose children failed in the current stage.
    failed: u64,
    /// Columns that must be recorded stale before the request completes.
    lost: u64,
    /// The request cannot succeed (EIO once the stripe is released).
    fatal: bool,
    /// The row's parity may be wrong (a parity resync has not reached it): never
    /// read-modify-write.
    parity_suspect: bool,
    /// `ncol` stripe units.
    buf: IoBuf,
    /// What it writes to the columns (and first to the log): capacity allocated once.
    ranges: Vec<LogRange>,
    /// Its log entry's sequence number (0: none), retired once its columns are flushed.
    seq: u64,
    /// One block for its log entry's header.
    header: IoBuf,
    /// Its data goes to the columns straight from the request's buffers (a full-stripe write
    /// with `skip_copy`): only the parity unit of the row buffer is used.
    direct: bool,
    /// A reconstruct around a column that failed a read (not the map's missing one): the
    /// rebuilt range is written back to that column (md's read-error rewrite). For a write,
    /// the column that failed its read is rewritten by the write itself.
    repair: bool,
    /// The plan a write switched to after one column failed a read (the other plan reads
    /// other ranges), so the column need not be given up.
    replan: Option<WritePlan>,
}

impl Op {
    fn new(buf: IoBuf, bs: usize) -> Op {
        Op {
            ranges: Vec::with_capacity(MAX_LOG_IOVS),
            seq: 0,
            header: IoBuf::new(bs),
            direct: false,
            repair: false,
            replan: None,
            stage: Stage::Free,
            kind: OpKind::Write,
            parent: 0,
            span: None,
            plan: WritePlan::ReadModifyWrite,
            missing: None,
            view: 0,
            held: None,
            remaining: 0,
            failed: 0,
            lost: 0,
            fatal: false,
            parity_suspect: false,
            buf,
        }
    }
}

/// What waits for the manager to record failed columns: an operation (holding its stripe)
/// or a parent (a flush).
#[derive(Clone, Copy)]
enum Held {
    Op(u32),
    /// An operation whose log write failed: once recorded, it writes its columns.
    OpLog(u32),
    Parent(u32),
    /// The channel's retire flush, which a column disk failed: its entries are retired once
    /// that column is recorded stale (its disk may have lost the rows they cover).
    Retire,
}

struct State {
    views: Vec<Option<View>>,
    cur: usize,
    broken: bool,
    parents: Vec<Parent>,
    free_parents: Vec<u32>,
    ops: Vec<Op>,
    free_ops: Vec<u32>,
    /// Operations with a ticket whose turn has not come.
    waiters: StripeWaiters<u32>,
    /// Parents with rows left to start, waiting for a free operation, oldest first.
    want_ops: VecDeque<u32>,
    /// Waiting for an event to be acknowledged: (what, event id).
    held: VecDeque<(Held, u64)>,
    /// Requests not started yet (a copy holds their chunk, or earlier ones wait), in order.
    deferred: VecDeque<BdevIo>,
    /// Children built for launch: (view, disk, child).
    scratch: Vec<(usize, u32, BdevIo)>,
    /// Operations waiting for their log slot, oldest first.
    log_waiters: VecDeque<u32>,
    /// Operations whose log entry is written, waiting for the next log flush.
    log_flush_waiting: Vec<u32>,
    /// Operations whose entry the log flush in flight makes durable.
    log_flushing: Vec<u32>,
    /// Children of that flush still in flight (0: none).
    log_flush_remaining: u32,
    /// Log plexes (bits) whose flush failed.
    log_flush_failed: u64,
    /// Log entries whose column writes completed, to retire after the next column flush.
    pending_retire: Vec<u64>,
    /// Log entries retired when the column flush in flight completes.
    retiring: Vec<u64>,
    /// Children of that flush still in flight (0: none).
    retire_remaining: u32,
    /// The view that flush uses.
    retire_view: usize,
    /// Columns (bits) whose disks failed that flush.
    retire_failed: u64,
    /// That flush failed and waits in `held` for the manager to record the columns.
    retire_held: bool,
    /// One [`XOR_BLOCK`] the parity of a `skip_copy` write reads the request's bytes into.
    xor_scratch: Vec<u8>,
    ncol: usize,
    su: u64,
    bs: usize,
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
    st: RefCell<State>,
    me: std::rc::Weak<Core>,
}

struct Raid5Channel {
    core: Rc<Core>,
}

fn parent_tag(p: u32, column: usize) -> u64 {
    debug_assert!(
        column < 64,
        "column {column} would reach the region log's tag bit"
    );
    u64::from(p) | ((column as u64) << 32)
}

fn op_tag(op: u32, column: usize) -> u64 {
    debug_assert!(
        column < 64,
        "column {column} would reach the region log's tag bit"
    );
    OP_TAG | u64::from(op) | ((column as u64) << 32)
}

fn log_tag(op: u32, log: usize) -> u64 {
    debug_assert!(log < 64, "log {log} would reach the region log's tag bit");
    OP_TAG | LOG_TAG | u64::from(op) | ((log as u64) << 32)
}

/// Copies the request's bytes `[off, off + dst.len())` into `dst`.
fn copy_from_request(io: &BdevIo, mut off: usize, dst: &mut [u8]) {
    let mut done = 0;
    for seg in io.segments() {
        if done == dst.len() {
            break;
        }
        if off >= seg.len() {
            off -= seg.len();
            continue;
        }
        done += seg.copy_to(off, &mut dst[done..]);
        off = 0;
    }
}

/// Computes `parity` (`parity.len()` bytes) as the XOR of the request's bytes at each of
/// `offs` (byte offsets), a [`XOR_BLOCK`] at a time through `scratch` so the parity block
/// stays in L1. The request's memory is only copied from (a client may change it meanwhile:
/// see `bdev::segment`), never borrowed as a slice.
fn parity_from_request(
    io: &BdevIo,
    offs: impl Iterator<Item = usize> + Clone,
    parity: &mut [u8],
    scratch: &mut [u8],
) {
    for (i, block) in parity.chunks_mut(scratch.len()).enumerate() {
        let at = i * scratch.len();
        let tmp = &mut scratch[..block.len()];
        for (j, off) in offs.clone().enumerate() {
            if j == 0 {
                copy_from_request(io, off + at, block);
            } else {
                copy_from_request(io, off + at, tmp);
                xor_into(block, tmp);
            }
        }
    }
}

/// Copies `src` into the request's bytes from `off` on.
fn copy_to_request(io: &BdevIo, mut off: usize, src: &[u8]) {
    let mut done = 0;
    for seg in io.segments() {
        if done == src.len() {
            break;
        }
        if off >= seg.len() {
            off -= seg.len();
            continue;
        }
        done += seg.copy_from(off, &src[done..]);
        off = 0;
    }
}

impl State {
    fn view(&self, i: usize) -> &View {
        match self.views.get(i).and_then(Option::as_ref) {
            Some(v) => v,
            // Parents and operations only point at views they keep alive (users > 0), and
            // `cur` is never freed.
            None => unreachable!("RAID-5 channel view {i} is gone"),
        }
    }

    fn view_mut(&mut self, i: usize) -> &mut View {
        match self.views.get_mut(i).and_then(Option::as_mut) {
            Some(v) => v,
            None => unreachable!("RAID-5 channel view {i} is gone"),
        }
    }

    /// Picks up a newer map.
    fn refresh(&mut self, core: &Rc<Core>) {
        let shared = &*core.shared;
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
                    tracing::error!(volume = %shared.name(), "cannot open a disk channel for the new map: {e}; failing requests until it can");
                }
                self.broken = true;
            }
        }
    }

    fn bind(&mut self) -> usize {
        let cur = self.cur;
        self.view_mut(cur).users += 1;
        cur
    }

    fn unbind(&mut self, v: usize) {
        let view = self.view_mut(v);
        view.users = view.users.saturating_sub(1);
        if view.users == 0 && v != self.cur {
            self.views[v] = None;
        }
    }

    /// Whether the current view can serve requests with this channel's row buffers.
    fn usable(&self) -> Result<(), i32> {
        if self.broken {
            return Err(libc::EIO);
        }
        let view = self.view(self.cur);
        if !view.map.enabled {
            return Err(libc::ENXIO);
        }
        match view.raid5() {
            Some(r) if r.geometry.ncol() == self.ncol && r.geometry.stripe_unit() == self.su => {
                Ok(())
            }
            _ => Err(libc::EIO),
        }
    }

    fn alloc_parent(&mut self, io: BdevIo, kind: Kind) -> u32 {
        let idx = match self.free_parents.pop() {
            Some(i) => i,
            None => {
                self.parents.push(Parent::empty());
                (self.parents.len() - 1) as u32
            }
        };
        let view = self.bind();
        let p = &mut self.parents[idx as usize];
        *p = Parent::empty();
        p.io = Some(io);
        p.kind = kind;
        p.view = view;
        idx
    }

    /// Submits the children built in `scratch`.
    fn launch(&mut self) {
        let State { scratch, views, .. } = self;
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

    /// Completes parent `p` if nothing of it is in flight or left to start.
    fn parent_step(&mut self, p: u32, core: &Rc<Core>) {
        let pr = &self.parents[p as usize];
        let total = pr.io.as_ref().map_or(0, |io| io.num_blocks());
        if pr.remaining > 0 || (pr.cursor < total && pr.errno == 0) {
            return;
        }
        if pr.kind == Kind::Read && pr.failed != 0 && pr.errno == 0 {
            // A column failed a read: read the request again around it (once).
            let f = pr.failed.trailing_zeros() as usize;
            core.shared.read_errors.fetch_add(1, Ordering::Relaxed);
            if pr.missing.is_none() && pr.failed.count_ones() == 1 {
                let pr = &mut self.parents[p as usize];
                pr.missing = Some(f);
                pr.failed = 0;
                pr.cursor = 0;
                self.start_rows(p, core);
                return;
            }
            self.parents[p as usize].errno = libc::EIO;
        }
        let pr = &self.parents[p as usize];
        if let Kind::Flush(_) = pr.kind {
            if pr.failed != 0 && pr.errno == 0 {
                let failed = pr.failed;
                let v = pr.view;
                match self.report(core, v, failed) {
                    Some(id) => {
                        self.held.push_back((Held::Parent(p), id));
                        return;
                    }
                    None => self.parents[p as usize].errno = libc::EIO,
                }
            }
        }
        self.finish_parent(p, core);
    }

    fn finish_parent(&mut self, p: u32, core: &Rc<Core>) {
        if !self.want_ops.is_empty() {
            // Only a parent that failed part-way can still be queued: it starts no more rows.
            self.want_ops.retain(|&q| q != p);
        }
        self.leave_regions(p);
        let pr = &mut self.parents[p as usize];
        let io = pr.io.take();
        let (errno, v, in_barrier) = (pr.errno, pr.view, pr.in_barrier);
        pr.in_barrier = false;
        self.unbind(v);
        self.free_parents.push(p);
        if let Some(io) = io {
            if in_barrier {
                core.shared
                    .barrier()
                    .leave(io.offset_blocks(), io.num_blocks());
            }
            io.complete(if errno == 0 {
                IoStatus::Success
            } else {
                IoStatus::Failed(errno)
            });
        }
    }

    /// Sends a `ColumnFailed` event for `columns` of view `v`'s map; the id to wait for, or
    /// `None` if nobody can record it.
    fn report(&self, core: &Rc<Core>, v: usize, columns: u64) -> Option<u64> {
        core.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        self.send_event(core, |volume, id| VolumeEvent::ColumnFailed {
            volume,
            map: self.view(v).map.clone(),
            columns,
            id,
        })
    }

    /// Sends a `LogFailed` event for log plexes `logs` (bits) of view `v`'s map.
    fn report_logs(&self, core: &Rc<Core>, v: usize, logs: u64) -> Option<u64> {
        self.send_event(core, |volume, id| VolumeEvent::LogFailed {
            volume,
            map: self.view(v).map.clone(),
            logs,
            id,
        })
    }

    /// Takes the next event id and sends `event(volume, id)` in one step (under the event
    /// lock, failure path only), so an acknowledgement of id N covers every event before it;
    /// `None` if nobody can record it.
    fn send_event(
        &self,
        core: &Rc<Core>,
        event: impl FnOnce(Arc<VolumeShared>, u64) -> VolumeEvent,
    ) -> Option<u64> {
        let shared = &core.shared;
        let _order = shared.event_lock.lock().unwrap_or_else(|p| p.into_inner());
        let id = shared.next_event.fetch_add(1, Ordering::AcqRel);
        shared
            .events
            .send(event(shared.clone(), id))
            .ok()
            .map(|_| id)
    }

    /// Starts as many of parent `p`'s remaining rows as free operations allow; queues it in
    /// `want_ops` if rows are left.
    fn start_rows(&mut self, p: u32, core: &Rc<Core>) {
        let (v, kind, forced) = {
            let pr = &self.parents[p as usize];
            (pr.view, pr.kind, pr.missing)
        };
        let Some((offset, num)) = self.parents[p as usize]
            .io
            .as_ref()
            .map(|io| (io.offset_blocks(), io.num_blocks()))
        else {
            return;
        };
        let bs = self.bs;
        let cb: Rc<dyn IoCompletion> = core.clone();
        while self.parents[p as usize].cursor < num {
            let cursor = self.parents[p as usize].cursor;
            let Some(r5) = self.view(v).raid5() else {
                self.parents[p as usize].errno = libc::EIO;
                break;
            };
            let span = r5.geometry.stripe_at(offset + cursor, num - cursor, cursor);
            let row_missing = core.shared.raid5_missing(r5, span.row);
            let missing = forced.or(row_missing);
            // The missing column's data unit in this row, if the request reads it.
            let rebuild = missing.and_then(|m| {
                let k = span.unit_of(m)?;
                let (lo, hi) = span.written(k);
                (lo < hi).then_some((k, lo, hi))
            });
            let needs_op = kind != Kind::Read || rebuild.is_some();
            if needs_op && self.free_ops.is_empty() {
                self.want_ops.push_back(p);
                break;
            }
            if kind == Kind::Read {
                let State {
                    views,
                    parents,
                    scratch,
                    ..
                } = self;
                let Some(view) = views.get(v).and_then(Option::as_ref) else {
                    break;
                };
                let pr = &mut parents[p as usize];
                let Some(io) = pr.io.as_ref() else {
                    break;
                };
                let mut built = 0;
                if let Some(r5) = view.raid5() {
                    r5.geometry.data_segments(&span, |seg| {
                        if Some(seg.column) == missing || Some(seg.column) == row_missing {
                            return;
                        }
                        let mut c = BdevIo::alloc();
                        c.prep(IoType::Read, seg.target_offset, seg.len);
                        push_range(
                            &mut c,
                            io.iovs(),
                            seg.req_offset as usize * bs,
                            seg.len as usize * bs,
                        );
                        c.set_callback(cb.clone(), parent_tag(p, seg.column));
                        scratch.push((v, seg.target, c));
                        built += 1;
                    });
                }
                pr.remaining += built;
            }
            if needs_op {
                let kind = match rebuild {
                    Some((k, lo, hi)) if kind == Kind::Read => OpKind::Reconstruct {
                        lo,
                        hi,
                        req: span.req_offset + k as u64 * self.su + lo - span.start,
                    },
                    _ => OpKind::Write,
                };
                self.start_op(p, span, kind, core);
            }
            self.parents[p as usize].cursor += span.len;
        }
        self.launch();
    }

    /// Takes a free operation for `span` of parent `p` and asks for its stripe.
    fn start_op(&mut self, p: u32, span: StripeSpan, kind: OpKind, core: &Rc<Core>) {
        let Some(o) = self.free_ops.pop() else {
            return;
        };
        let Some(lock) = core.shared.stripe_lock() else {
            self.free_ops.push(o);
            self.parents[p as usize].errno = libc::EIO;
            return;
        };
        self.parents[p as usize].remaining += 1;
        let op = &mut self.ops[o as usize];
        op.stage = Stage::Waiting;
        op.kind = kind;
        op.parent = p;
        op.span = Some(span);
        op.failed = 0;
        op.lost = 0;
        op.fatal = false;
        match lock.ticket(span.row).hold(lock) {
            Ok(held) => {
                op.held = Some(held);
                self.begin_op(o, core);
            }
            Err(ticket) => {
                // Room is certain: one place per operation.
                if let Err((ticket, o)) = self.waiters.push(ticket, o) {
                    // Unreachable (a bug): wait for the turn here rather than lose the ticket.
                    tracing::error!("RAID-5 stripe waiter queue full; taking the stripe late");
                    let mut t = ticket;
                    loop {
                        match t.hold(lock) {
                            Ok(h) => {
                                self.ops[o as usize].held = Some(h);
                                break;
                            }
                            Err(back) => {
                                t = back;
                                std::hint::spin_loop();
                            }
                        }
                    }
                    self.begin_op(o, core);
                }
            }
        }
    }

    /// Operation `o` holds its stripe: bind it to the newest map and issue its reads.
    fn begin_op(&mut self, o: u32, core: &Rc<Core>) {
        self.refresh(core);
        let usable = self.usable();
        let v = self.bind();
        let row = self.ops[o as usize].span.map_or(0, |s| s.row);
        let view_missing = self
            .view(v)
            .raid5()
            .and_then(|r| core.shared.raid5_missing(r, row));
        let suspect = self
            .view(v)
            .raid5()
            .is_some_and(|r| core.shared.raid5_parity_suspect(r, row));
        let op = &mut self.ops[o as usize];
        op.parity_suspect = suspect;
        op.view = v;
        op.stage = Stage::Reading;
        if let Err(e) = usable {
            op.fatal = true;
            let p = op.parent;
            if self.parents[p as usize].errno == 0 {
                self.parents[p as usize].errno = e;
            }
            self.end_op(o, core);
            return;
        }
        let parent_missing = self.parents[op.parent as usize].missing;
        let read_error = matches!(op.kind, OpKind::Reconstruct { .. })
            && parent_missing.is_some()
            && view_missing.is_none();
        op.repair = read_error;
        op.replan = None;
        if read_error && suspect {
            // A column failed a read in a row whose parity a resync has not reached: what the
            // parity would rebuild may be wrong, and a read never returns guessed data.
            op.fatal = true;
            self.end_op(o, core);
            return;
        }
        op.missing = match (op.kind, parent_missing, view_missing) {
            (OpKind::Reconstruct { .. }, Some(a), Some(b)) if a != b => {
                op.fatal = true;
                self.end_op(o, core);
                return;
            }
            (OpKind::Reconstruct { .. }, a, b) => a.or(b),
            (OpKind::Write, _, m) => m,
        };
        self.issue_reads(o, core);
    }

    /// Issues operation `o`'s reads (after a plan change too); goes on at once if none.
    fn issue_reads(&mut self, o: u32, core: &Rc<Core>) {
        if !self.op_mapped(o) {
            self.ops[o as usize].fatal = true;
            self.end_op(o, core);
            return;
        }
        let cb: Rc<dyn IoCompletion> = core.clone();
        let (bs, su) = (self.bs, self.su);
        let unit = su as usize * bs;
        let State {
            ops,
            views,
            scratch,
            ..
        } = self;
        let op = &mut ops[o as usize];
        let Some(span) = op.span else {
            return;
        };
        let Some(r5) = views
            .get(op.view)
            .and_then(Option::as_ref)
            .and_then(View::raid5)
        else {
            return;
        };
        op.stage = Stage::Reading;
        op.failed = 0;
        let base = op.buf.as_mut_ptr();
        let v = op.view;
        let mut n = 0;
        let mut read = |c: usize, lo: u64, hi: u64| {
            r5.geometry.locate(span.row, c, lo, hi - lo, |piece| {
                let mut child = BdevIo::alloc();
                child.prep(IoType::Read, piece.target_offset, piece.len);
                let at = c * unit + (lo + piece.piece_offset) as usize * bs;
                // SAFETY: `base` is the operation's row buffer of `ncol * unit` bytes and
                // `at + piece.len * bs <= (c + 1) * unit` (unit offsets stay below `su`). The
                // buffer lives as long as the channel and is not touched again until every
                // child of this stage has completed (the operation waits for them).
                unsafe { child.push_iov(base.add(at), piece.len as usize * bs) };
                child.set_callback(cb.clone(), op_tag(o, c));
                scratch.push((v, piece.target, child));
                n += 1;
            });
        };
        match op.kind {
            OpKind::Write => {
                op.plan = match (op.replan, op.missing) {
                    (Some(p), None) => p,
                    _ => span.plan(op.missing),
                };
                if op.parity_suspect
                    && op.missing.is_none()
                    && op.plan == WritePlan::ReadModifyWrite
                {
                    op.plan = WritePlan::ReconstructWrite;
                }
                let missing = op.missing;
                span.reads(op.plan, missing, |r| read(r.column, r.lo, r.hi));
            }
            OpKind::Reconstruct { lo, hi, .. } => {
                let m = op.missing;
                for c in (0..span.ncol()).filter(|&c| Some(c) != m) {
                    read(c, lo, hi);
                }
            }
        }
        op.remaining = n;
        if n == 0 {
            self.after_reads(o, core);
        } else {
            self.launch();
        }
    }

    /// Whether operation `o` has a span and its view a RAID-5 map (always, once it began).
    fn op_mapped(&self, o: u32) -> bool {
        let op = &self.ops[o as usize];
        op.span.is_some()
            && self
                .views
                .get(op.view)
                .and_then(Option::as_ref)
                .and_then(View::raid5)
                .is_some()
            && self.parents[op.parent as usize].io.is_some()
    }

    /// Every read of operation `o` is back.
    fn after_reads(&mut self, o: u32, core: &Rc<Core>) {
        let op = &mut self.ops[o as usize];
        if op.failed != 0 {
            core.shared.read_errors.fetch_add(1, Ordering::Relaxed);
            let failed = op.failed;
            if let OpKind::Reconstruct { .. } = op.kind {
                // Every column but the missing one was read: a second one is unreadable.
                op.fatal = true;
                self.end_op(o, core);
                return;
            }
            if op.missing.is_none() && failed.count_ones() == 1 && op.replan.is_none() {
                // One column failed a read the plan needed: the other plan does not read that
                // range (read-modify-write reads the written ranges and the parity, which a
                // reconstruct-write overwrites; reconstruct-write reads the unwritten ranges,
                // which read-modify-write leaves alone), so try it before giving the column up.
                let other = match op.plan {
                    WritePlan::ReadModifyWrite => Some(WritePlan::ReconstructWrite),
                    WritePlan::ReconstructWrite if !op.parity_suspect => {
                        Some(WritePlan::ReadModifyWrite)
                    }
                    _ => None,
                };
                if let Some(plan) = other {
                    // After read-modify-write, the failed range is rewritten by this write.
                    op.repair = op.plan == WritePlan::ReadModifyWrite;
                    op.replan = Some(plan);
                    op.failed = 0;
                    self.issue_reads(o, core);
                    return;
                }
            }
            op.lost |= failed;
            if op.missing.is_none() && failed.count_ones() == 1 {
                // Go around the column that failed; it is recorded stale before the request
                // completes (a write must not leave it behind as if current).
                op.missing = Some(failed.trailing_zeros() as usize);
                self.issue_reads(o, core);
                return;
            }
            op.fatal = true;
            op.failed = 0;
            self.after_writes(o, core);
            return;
        }
        match op.kind {
            OpKind::Reconstruct { lo, hi, req } => {
                let (ncol, unit, bs) = (self.ncol, self.su as usize * self.bs, self.bs);
                let State { ops, parents, .. } = self;
                let op = &mut ops[o as usize];
                if let Some(m) = op.missing {
                    let row = &mut op.buf.as_mut_slice()[..ncol * unit];
                    reconstruct(row, ncol, m, lo, hi, unit, bs);
                    let from = m * unit + lo as usize * bs;
                    let len = (hi - lo) as usize * bs;
                    if let Some(io) = parents[op.parent as usize].io.as_ref() {
                        copy_to_request(io, req as usize * bs, &row[from..from + len]);
                    }
                }
                if op.repair {
                    self.repair_column(o, core);
                } else {
                    self.end_op(o, core);
                }
            }
            OpKind::Write => self.issue_writes(o, core),
        }
    }

    /// Computes operation `o`'s parity and what it writes; logs it first if the plex has a
    /// log, else writes the columns.
    fn issue_writes(&mut self, o: u32, core: &Rc<Core>) {
        if !self.op_mapped(o) {
            self.ops[o as usize].fatal = true;
            self.end_op(o, core);
            return;
        }
        let (ncol, bs, su) = (self.ncol, self.bs, self.su);
        let unit = su as usize * bs;
        let State {
            ops,
            views,
            parents,
            xor_scratch,
            ..
        } = self;
        let op = &mut ops[o as usize];
        let Some(span) = op.span else {
            return;
        };
        let pr = &parents[op.parent as usize];
        let zeroes = pr.kind == Kind::WriteZeroes;
        let Some(io) = pr.io.as_ref() else {
            return;
        };
        let (plan, missing) = (op.plan, op.missing);
        // skip_copy: a full stripe of request data, and no log (whose entry is written from
        // the row buffer).
        op.direct = plan == WritePlan::FullStripe
            && !zeroes
            && views
                .get(op.view)
                .and_then(Option::as_ref)
                .and_then(View::raid5)
                .is_some_and(|r| r.skip_copy && r.logs.is_empty());
        if op.direct {
            let pc = span.parity_column;
            if Some(pc) != missing {
                let ndata = span.ncol() - 1;
                let offs = (0..ndata).map(|k| {
                    let (lo, _) = span.written(k);
                    (span.req_offset + k as u64 * su + lo - span.start) as usize * bs
                });
                let parity = &mut op.buf.as_mut_slice()[pc * unit..(pc + 1) * unit];
                parity_from_request(io, offs, parity, xor_scratch);
            }
        } else {
            let row = &mut op.buf.as_mut_slice()[..ncol * unit];
            apply_write(&span, plan, missing, row, unit, bs, |k, x, dst| {
                if zeroes {
                    dst.fill(0);
                } else {
                    let req = span.req_offset + k as u64 * su + x - span.start;
                    copy_from_request(io, req as usize * bs, dst);
                }
            });
        }
        // What goes to the columns (and first to the log): the data written, the parity.
        op.ranges.clear();
        let (first, last) = span.units();
        for k in first..=last {
            let c = span.data_column(k);
            let (lo, hi) = span.written(k);
            if Some(c) != missing && lo < hi {
                op.ranges.push(LogRange {
                    column: c as u32,
                    lo: lo as u32,
                    hi: hi as u32,
                });
            }
        }
        if Some(span.parity_column) != missing {
            let ranges = &mut op.ranges;
            span.parity_writes(plan, |r| {
                ranges.push(LogRange {
                    column: r.column as u32,
                    lo: r.lo as u32,
                    hi: r.hi as u32,
                })
            });
        }
        let logged = views
            .get(op.view)
            .and_then(Option::as_ref)
            .and_then(View::raid5)
            .is_some_and(|r| {
                !r.logs.is_empty()
                    && core
                        .shared
                        .log_ring()
                        .is_some_and(|ring| ring.slots() <= r.log_slots)
            })
            && !op.ranges.is_empty()
            && op.ranges.len() < MAX_LOG_IOVS;
        match core.shared.log_ring().filter(|_| logged) {
            Some(ring) => {
                op.seq = ring.take();
                if ring.is_free_for(op.seq) {
                    self.issue_log(o, core);
                } else {
                    op.stage = Stage::LogWait;
                    self.log_waiters.push_back(o);
                }
            }
            None => self.write_columns(o, core),
        }
    }

    /// Writes operation `o`'s log entry (header and ranges) to every log plex of its map.
    fn issue_log(&mut self, o: u32, core: &Rc<Core>) {
        let cb: Rc<dyn IoCompletion> = core.clone();
        let (ncol, bs, su) = (self.ncol, self.bs, self.su);
        let unit = su as usize * bs;
        let State {
            ops,
            views,
            scratch,
            ..
        } = self;
        let op = &mut ops[o as usize];
        let (Some(span), Some(r5)) = (
            op.span,
            views
                .get(op.view)
                .and_then(Option::as_ref)
                .and_then(View::raid5),
        ) else {
            return;
        };
        let row = op.buf.as_slice();
        let mut crc = 0u32;
        let mut payload = 0u64;
        for r in &op.ranges {
            let at = r.column as usize * unit + r.lo as usize * bs;
            let len = r.blocks() as usize * bs;
            crc = crc32c::crc32c_append(crc, &row[at..at + len]);
            payload += r.blocks();
        }
        let header = LogHeader {
            epoch: r5.log_epoch,
            seq: op.seq,
            row: span.row,
            ncol: ncol as u32,
            su,
            payload_crc: crc,
            payload_blocks: payload as u32,
            slots: core.shared.log_ring().map_or(0, |r| r.slots()),
        };
        encode_header(&mut op.header.as_mut_slice()[..bs], &header, &op.ranges);
        // The entry as one list of segments: the header block, then each range.
        let base = op.buf.as_mut_ptr();
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_LOG_IOVS];
        iovs[0] = libc::iovec {
            iov_base: op.header.as_mut_ptr().cast(),
            iov_len: bs,
        };
        let mut n_iov = 1;
        for r in &op.ranges {
            let at = r.column as usize * unit + r.lo as usize * bs;
            // SAFETY: `at` lies inside the row buffer (a column below `ncol`, a unit offset
            // below `su`), so the pointer stays within its allocation.
            let ptr = unsafe { base.add(at) };
            iovs[n_iov] = libc::iovec {
                iov_base: ptr.cast(),
                iov_len: r.blocks() as usize * bs,
            };
            n_iov += 1;
        }
        let total = 1 + payload;
        let Some(ring) = core.shared.log_ring() else {
            return;
        };
        let start = ring.slot(op.seq) * slot_blocks(ncol as u32, su);
        let v = op.view;
        let mut n = 0;
        for (li, log) in r5.logs.iter().enumerate().take(63) {
            let _ = log.geometry.map(start, total, |seg| {
                let mut child = BdevIo::alloc();
                child.prep(IoType::Write, seg.target_offset, seg.len);
                // The header buffer and the row buffer stay untouched until every write of
                // this stage has completed (the operation waits for them).
                push_range(
                    &mut child,
                    &iovs[..n_iov],
                    seg.req_offset as usize * bs,
                    seg.len as usize * bs,
                );
                child.set_callback(cb.clone(), log_tag(o, li));
                scratch.push((v, seg.target, child));
                n += 1;
            });
        }
        op.stage = Stage::Logging;
        op.failed = 0;
        op.remaining = n;
        if n == 0 {
            self.after_log(o, core);
        } else {
            self.launch();
        }
    }

    /// The log writes (or the log flush) of operation `o` are back.
    fn after_log(&mut self, o: u32, core: &Rc<Core>) {
        let op = &mut self.ops[o as usize];
        if op.failed != 0 {
            // The entry may be missing from these logs: they must be recorded bad (never
            // replayed) before any column is written.
            let (v, bad) = (op.view, op.failed);
            op.failed = 0;
            match self.report_logs(core, v, bad) {
                Some(id) => {
                    self.ops[o as usize].stage = Stage::Held;
                    self.held.push_back((Held::OpLog(o), id));
                }
                None => {
                    self.ops[o as usize].fatal = true;
                    self.end_op(o, core);
                }
            }
            return;
        }
        // Written: made durable by the next flush of the log disks, shared with every
        // other entry written meanwhile (group commit).
        op.stage = Stage::LogFlush;
        self.log_flush_waiting.push(o);
        self.start_log_flush(core);
    }

    /// Flushes the log disks for the entries written and not yet flushed (those of one view;
    /// one such flush in flight per channel).
    fn start_log_flush(&mut self, core: &Rc<Core>) {
        if self.log_flush_remaining > 0 || self.log_flush_waiting.is_empty() {
            return;
        }
        let v = self.ops[self.log_flush_waiting[0] as usize].view;
        let State {
            ops,
            views,
            scratch,
            log_flush_waiting,
            log_flushing,
            ..
        } = self;
        log_flushing.clear();
        let mut i = 0;
        while i < log_flush_waiting.len() {
            let o = log_flush_waiting[i];
            if ops[o as usize].view == v {
                log_flushing.push(o);
                log_flush_waiting.swap_remove(i);
            } else {
                i += 1;
            }
        }
        let cb: Rc<dyn IoCompletion> = core.clone();
        let n = views.get(v).and_then(Option::as_ref).map_or(0, |view| {
            let targets = view.raid5().into_iter().flat_map(log_disks);
            let tagged = targets.map(|(li, t)| (LOG_FLUSH_TAG | ((li as u64) << 32), t));
            view.disk_requests(v, IoType::Flush, tagged, &cb, scratch)
        });
        self.log_flush_remaining = n;
        self.log_flush_failed = 0;
        if n == 0 {
            self.end_log_flush(core);
        } else {
            self.launch();
        }
    }

    /// The log flush is done: its entries are durable and their operations write their
    /// columns (or, if a log disk failed the flush, report that log first).
    fn end_log_flush(&mut self, core: &Rc<Core>) {
        let failed = self.log_flush_failed;
        let batch = std::mem::take(&mut self.log_flushing);
        for &o in &batch {
            if failed != 0 {
                self.ops[o as usize].failed = failed;
                self.after_log(o, core);
            } else {
                self.write_columns(o, core);
            }
        }
        // Keep the (empty) vector's capacity for the next batch.
        self.log_flushing = batch;
        self.log_flushing.clear();
        self.start_log_flush(core);
    }

    /// Writes operation `o`'s ranges (computed by `issue_writes`) to the columns.
    fn write_columns(&mut self, o: u32, core: &Rc<Core>) {
        let cb: Rc<dyn IoCompletion> = core.clone();
        let (bs, su) = (self.bs, self.su);
        let unit = su as usize * bs;
        let State {
            ops,
            views,
            parents,
            scratch,
            ..
        } = self;
        let op = &mut ops[o as usize];
        let (Some(span), Some(r5)) = (
            op.span,
            views
                .get(op.view)
                .and_then(Option::as_ref)
                .and_then(View::raid5),
        ) else {
            return;
        };
        // A direct (skip_copy) write's data comes from the request itself.
        let request = parents[op.parent as usize]
            .io
            .as_ref()
            .filter(|_| op.direct)
            .map(|io| io.iovs());
        op.stage = Stage::Writing;
        op.failed = 0;
        let base = op.buf.as_mut_ptr();
        let v = op.view;
        let mut n = 0;
        for r in &op.ranges {
            let (c, lo, hi) = (r.column as usize, u64::from(r.lo), u64::from(r.hi));
            let from_request = request.zip(span.unit_of(c));
            r5.geometry.locate(span.row, c, lo, hi - lo, |piece| {
                let mut child = BdevIo::alloc();
                child.prep(IoType::Write, piece.target_offset, piece.len);
                let x = lo + piece.piece_offset;
                if let Some((iovs, k)) = from_request {
                    let req = span.req_offset + k as u64 * su + x - span.start;
                    push_range(&mut child, iovs, req as usize * bs, piece.len as usize * bs);
                } else {
                    let at = c * unit + x as usize * bs;
                    // SAFETY: as for the reads: inside the row buffer, which stays untouched
                    // until every write of this stage has completed.
                    unsafe { child.push_iov(base.add(at), piece.len as usize * bs) };
                }
                child.set_callback(cb.clone(), op_tag(o, c));
                scratch.push((v, piece.target, child));
                n += 1;
            });
        }
        op.remaining = n;
        if n == 0 {
            self.after_writes(o, core);
        } else {
            self.launch();
        }
    }

    /// Writes the range a reconstruct op rebuilt back to the column that failed to read it
    /// (still holding the stripe, so no write to the row comes between). A failed rewrite
    /// reports the column like any failed write; the read has its data either way.
    fn repair_column(&mut self, o: u32, core: &Rc<Core>) {
        let cb: Rc<dyn IoCompletion> = core.clone();
        let (bs, su) = (self.bs, self.su);
        let unit = su as usize * bs;
        let State {
            ops,
            views,
            scratch,
            ..
        } = self;
        let op = &mut ops[o as usize];
        let (Some(span), Some(r5), Some(m), OpKind::Reconstruct { lo, hi, .. }) = (
            op.span,
            views
                .get(op.view)
                .and_then(Option::as_ref)
                .and_then(View::raid5),
            op.missing,
            op.kind,
        ) else {
            self.end_op(o, core);
            return;
        };
        op.stage = Stage::Writing;
        op.failed = 0;
        let base = op.buf.as_mut_ptr();
        let v = op.view;
        let mut n = 0;
        r5.geometry.locate(span.row, m, lo, hi - lo, |piece| {
            let mut child = BdevIo::alloc();
            child.prep(IoType::Write, piece.target_offset, piece.len);
            let at = m * unit + (lo + piece.piece_offset) as usize * bs;
            // SAFETY: as for the reads: inside the row buffer, which stays untouched until
            // every write of this stage has completed.
            unsafe { child.push_iov(base.add(at), piece.len as usize * bs) };
            child.set_callback(cb.clone(), op_tag(o, m));
            scratch.push((v, piece.target, child));
            n += 1;
        });
        op.remaining = n;
        if n == 0 {
            self.after_writes(o, core);
        } else {
            self.launch();
        }
    }

    /// Every write of operation `o` is back (or it gave up): report lost columns or finish.
    fn after_writes(&mut self, o: u32, core: &Rc<Core>) {
        let op = &mut self.ops[o as usize];
        if op.repair && op.failed == 0 {
            core.shared.read_repairs.fetch_add(1, Ordering::Relaxed);
        }
        op.lost |= op.failed;
        let gone = op.lost | op.missing.map_or(0, |m| 1 << m);
        if gone.count_ones() > 1 {
            op.fatal = true;
        }
        if op.lost != 0 {
            let (v, lost) = (op.view, op.lost);
            match self.report(core, v, lost) {
                Some(id) => {
                    self.ops[o as usize].stage = Stage::Held;
                    self.held.push_back((Held::Op(o), id));
                    return;
                }
                None => self.ops[o as usize].fatal = true,
            }
        }
        self.end_op(o, core);
    }

    /// Releases operation `o`'s stripe, accounts it to its parent and frees it; starts rows
    /// of parents waiting for an operation.
    fn end_op(&mut self, o: u32, core: &Rc<Core>) {
        let op = &mut self.ops[o as usize];
        if let (Some(h), Some(lock)) = (op.held.take(), core.shared.stripe_lock()) {
            lock.release(h);
        }
        let (p, v, fatal) = (op.parent, op.view, op.fatal);
        // Every operation that ends began (`begin_op` bound it to a view).
        debug_assert!(!matches!(op.stage, Stage::Free | Stage::Waiting));
        op.stage = Stage::Free;
        op.span = None;
        let seq = std::mem::take(&mut op.seq);
        if seq != 0 {
            self.pending_retire.push(seq);
        }
        self.unbind(v);
        self.free_ops.push(o);
        let pr = &mut self.parents[p as usize];
        pr.remaining = pr.remaining.saturating_sub(1);
        if fatal && pr.errno == 0 {
            pr.errno = libc::EIO;
        }
        self.parent_step(p, core);
        if seq != 0 {
            self.start_retire(core);
        }
        self.serve_want_ops(core);
    }

    /// Flushes the column disks so the log entries whose column writes completed can be
    /// retired (their slots reused); one such flush in flight per channel.
    fn start_retire(&mut self, core: &Rc<Core>) {
        if self.retire_remaining > 0 || self.retire_held || self.pending_retire.is_empty() {
            return;
        }
        std::mem::swap(&mut self.pending_retire, &mut self.retiring);
        let cb: Rc<dyn IoCompletion> = core.clone();
        let v = self.bind();
        self.retire_view = v;
        let State { views, scratch, .. } = self;
        let n = views.get(v).and_then(Option::as_ref).map_or(0, |view| {
            let targets = view.raid5().into_iter().flat_map(written_disks);
            let tagged = targets.map(|(c, t)| (RETIRE_TAG | ((c as u64) << 32), t));
            view.disk_requests(v, IoType::Flush, tagged, &cb, scratch)
        });
        self.retire_remaining = n;
        self.retire_failed = 0;
        if n == 0 {
            self.end_retire(core);
        } else {
            self.launch();
        }
    }

    /// The column flush is done: its entries are retired. If a column disk failed it, that
    /// disk may have lost rows the entries cover, so the column is reported first and the
    /// entries are retired only once the manager has recorded it stale (until then they stay
    /// in the log, and a crash replays them).
    fn end_retire(&mut self, core: &Rc<Core>) {
        let failed = std::mem::take(&mut self.retire_failed);
        if failed != 0 {
            let v = self.retire_view;
            match self.report(core, v, failed) {
                Some(id) => {
                    self.retire_held = true;
                    self.held.push_back((Held::Retire, id));
                }
                None => {
                    // No manager to record it (shutting down): keep the entries.
                    tracing::error!(
                        volume = %core.shared.name(),
                        "a RAID-5 column disk failed a flush and the failure cannot be recorded; its log entries are kept"
                    );
                    self.retiring.clear();
                    self.unbind(v);
                }
            }
            return;
        }
        self.retire_entries(core);
    }

    /// Retires the entries of the channel's last column flush and starts the next one.
    fn retire_entries(&mut self, core: &Rc<Core>) {
        if let Some(ring) = core.shared.log_ring() {
            for &seq in &self.retiring {
                ring.retire(seq);
            }
        }
        self.retiring.clear();
        let v = self.retire_view;
        self.unbind(v);
        self.start_retire(core);
        self.serve_log_waiters(core);
    }

    /// Operations whose log slot is free write their entry.
    fn serve_log_waiters(&mut self, core: &Rc<Core>) -> usize {
        let Some(ring) = core.shared.log_ring() else {
            return 0;
        };
        let mut n = 0;
        let mut i = 0;
        while i < self.log_waiters.len() {
            let o = self.log_waiters[i];
            if ring.is_free_for(self.ops[o as usize].seq) {
                self.log_waiters.remove(i);
                self.issue_log(o, core);
                n += 1;
            } else {
                i += 1;
            }
        }
        n
    }

    /// Starts rows of parents waiting for free operations, oldest first.
    fn serve_want_ops(&mut self, core: &Rc<Core>) -> usize {
        let mut n = 0;
        while !self.free_ops.is_empty() {
            let Some(p) = self.want_ops.pop_front() else {
                break;
            };
            n += 1;
            if self.parents[p as usize].errno != 0 {
                self.parent_step(p, core);
                continue;
            }
            self.start_rows(p, core);
            self.parent_step(p, core);
        }
        n
    }

    /// Operations whose stripe turn has come begin.
    fn serve_waiters(&mut self, core: &Rc<Core>) -> usize {
        let Some(lock) = core.shared.stripe_lock() else {
            return 0;
        };
        let mut n = 0;
        while let Some((held, o)) = self.waiters.pop_ready(lock) {
            self.ops[o as usize].held = Some(held);
            self.begin_op(o, core);
            n += 1;
        }
        n
    }

    /// Completes what waited for recorded failures (or fails it if the volume went offline).
    fn release_held(&mut self, core: &Rc<Core>) -> usize {
        if self.held.is_empty() {
            return 0;
        }
        let shared = &core.shared;
        let acked = shared.acked_event.load(Ordering::Acquire);
        let enabled = shared.map.load().enabled;
        let mut n = 0;
        while let Some(&(what, id)) = self.held.front() {
            if id > acked && enabled {
                break;
            }
            self.held.pop_front();
            n += 1;
            match what {
                Held::Op(o) => {
                    if !enabled {
                        self.ops[o as usize].fatal = true;
                    }
                    self.end_op(o, core);
                }
                Held::OpLog(o) => {
                    let read_only = shared
                        .map
                        .load()
                        .raid5
                        .as_ref()
                        .is_some_and(|r| r.read_only);
                    if enabled && !read_only {
                        self.write_columns(o, core);
                    } else if read_only {
                        // The last log failed and the volume refuses unprotected writes.
                        let p = self.ops[o as usize].parent;
                        self.parents[p as usize].errno = libc::EROFS;
                        self.end_op(o, core);
                    } else {
                        self.ops[o as usize].fatal = true;
                        self.end_op(o, core);
                    }
                }
                Held::Parent(p) => {
                    if !enabled {
                        self.parents[p as usize].errno = libc::EIO;
                    }
                    self.finish_parent(p, core);
                }
                Held::Retire => {
                    self.retire_held = false;
                    if enabled {
                        self.retire_entries(core);
                    } else {
                        // Offline: the entries stay for the replay at the next start.
                        self.retiring.clear();
                        let v = self.retire_view;
                        self.unbind(v);
                    }
                }
            }
        }
        n
    }

    /// Starts one request, or hands it back if it must wait.
    fn start(&mut self, io: BdevIo, core: &Rc<Core>) -> Option<BdevIo> {
        let op = io.io_type();
        let is_write = matches!(op, IoType::Write | IoType::WriteZeroes | IoType::Unmap);
        if io.num_blocks() == 0 && matches!(op, IoType::WriteZeroes | IoType::Unmap) {
            let status = if op == IoType::Unmap {
                IoStatus::Failed(libc::EINVAL)
            } else {
                IoStatus::Success
            };
            io.complete(status);
            return None;
        }
        if is_write {
            if !self.deferred.is_empty() || !self.want_ops.is_empty() {
                return Some(io);
            }
            if !core
                .shared
                .barrier()
                .enter(io.offset_blocks(), io.num_blocks())
            {
                return Some(io);
            }
        }
        self.refresh(core);
        let read_only = is_write && self.view(self.cur).raid5().is_some_and(|r| r.read_only);
        if let Err(e) = self
            .usable()
            .and(if read_only { Err(libc::EROFS) } else { Ok(()) })
        {
            if is_write {
                core.shared
                    .barrier()
                    .leave(io.offset_blocks(), io.num_blocks());
            }
            io.complete(IoStatus::Failed(e));
            return None;
        }
        let kind = match op {
            IoType::Read => Kind::Read,
            IoType::Write => Kind::Write,
            IoType::WriteZeroes | IoType::Unmap => Kind::WriteZeroes,
            IoType::Flush | IoType::Reset => Kind::Flush(op),
        };
        let p = self.alloc_parent(io, kind);
        self.parents[p as usize].in_barrier = is_write;
        match kind {
            Kind::Flush(op) => self.start_flush(p, op, core),
            Kind::Read => self.start_rows(p, core),
            Kind::Write | Kind::WriteZeroes => self.start_logged(p, core),
        }
        self.parent_step(p, core);
        None
    }

    /// Starts write parent `p`'s rows once its regions are durable in its view's region log:
    /// at once when they are (or the view has no log), else after the port made them so (the
    /// parent then waits in the port, and the caller's `parent_step` leaves it be: no row
    /// started). A write past the log's regions fails (EIO) rather than go unlogged.
    fn start_logged(&mut self, p: u32, core: &Rc<Core>) {
        let entered = {
            let pr = &self.parents[p as usize];
            match (self.view(pr.view).map.drl.as_ref(), pr.io.as_ref()) {
                (Some(d), Some(io)) if io.num_blocks() > 0 => Some((
                    drl_port::enter(d, io.offset_blocks(), io.num_blocks()),
                    io.io_type(),
                )),
                _ => None,
            }
        };
        match entered {
            None => self.start_rows(p, core),
            Some((Ok((first, last, e)), op)) => {
                self.parents[p as usize].drl = Some((first, last));
                match e {
                    Entered::Go => self.start_rows(p, core),
                    Entered::Wait(ticket) => {
                        self.port.wait(Waiter {
                            slot: p,
                            op,
                            first,
                            last,
                            ticket,
                        });
                        self.drive_port(core);
                    }
                }
            }
            Some((Err(()), _)) => {
                tracing::error!(volume = %core.shared.name(), "a write past the regions of the volume's region log was failed (the map does not cover the volume)");
                self.parents[p as usize].errno = libc::EIO;
            }
        }
    }

    /// Leaves the regions parent `p` entered in its view's region log (once).
    fn leave_regions(&mut self, p: u32) {
        let pr = &mut self.parents[p as usize];
        if let Some((first, last)) = pr.drl.take() {
            let v = pr.view;
            if let Some(d) = self.view(v).map.drl.as_ref() {
                d.state.leave(first, last);
            }
        }
    }

    /// Moves parent `p` to the newest view.
    fn rebind(&mut self, p: u32) {
        let old = self.parents[p as usize].view;
        if old == self.cur {
            return;
        }
        let v = self.bind();
        self.parents[p as usize].view = v;
        self.unbind(old);
    }

    /// A new current view was loaded: if it has a region log, size the port's page buffer for
    /// it and make sure the channel's clock runs (both allocate, here and not on the I/O path).
    fn view_loaded(&mut self, core: &Rc<Core>) {
        let State {
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

    /// Starts the rows of the waiting writes whose regions became durable; a waiter whose
    /// view's log is no longer the current one (the manager replaced or dropped it) enters
    /// the current view's log instead. Returns how many went on.
    fn serve_log_regions(&mut self, core: &Rc<Core>) -> usize {
        if self.port.waiting() == 0 {
            return 0;
        }
        self.refresh(core);
        let mut n = 0;
        loop {
            let due = {
                let State {
                    views,
                    parents,
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
                port.take_due(|slot| log(parents[slot as usize].view), log(*cur))
            };
            let Some((w, stale)) = due else {
                break;
            };
            n += 1;
            let p = w.slot;
            if stale {
                self.leave_regions(p);
                self.rebind(p);
                self.start_logged(p, core);
            } else {
                self.rebind(p);
                self.start_rows(p, core);
            }
            self.parent_step(p, core);
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
        let State { views, port, .. } = self;
        let Some(view) = views.get(cur).and_then(Option::as_ref) else {
            return;
        };
        let Some(pv) = PortView::of(
            &view.map,
            &view.bases,
            &view.flush_disks,
            &cb,
            core.shared.name(),
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
            tracing::error!(volume = %core.shared.name(), tag = t, "region log: a completion arrived with no log I/O in flight; ignored");
            return;
        };
        let cb: Rc<dyn IoCompletion> = core.clone();
        let ended = {
            let State { views, port, .. } = &mut *self;
            let Some(view) = views.get(v).and_then(Option::as_ref) else {
                return;
            };
            let Some(pv) = PortView::of(
                &view.map,
                &view.bases,
                &view.flush_disks,
                &cb,
                core.shared.name(),
            ) else {
                return;
            };
            port.io_done(t, status, &pv, tsc::ticks())
        };
        if ended {
            self.port_view = None;
            self.unbind(v);
            self.drive_port(core);
            self.serve_log_regions(core);
        }
    }

    /// Sends a flush (or reset) to every disk of a present column.
    fn start_flush(&mut self, p: u32, op: IoType, core: &Rc<Core>) {
        let cb: Rc<dyn IoCompletion> = core.clone();
        let State {
            views,
            parents,
            scratch,
            ..
        } = self;
        let pr = &mut parents[p as usize];
        let v = pr.view;
        pr.remaining = views.get(v).and_then(Option::as_ref).map_or(0, |view| {
            let targets = view.raid5().into_iter().flat_map(written_disks);
            let tagged = targets.map(|(c, t)| (parent_tag(p, c), t));
            view.disk_requests(v, op, tagged, &cb, scratch)
        });
        self.launch();
    }

    /// Retries deferred requests in order; returns how many started.
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

impl IoCompletion for Core {
    fn io_done(&self, child: BdevIo) {
        let t = child.tag();
        let status = child.status();
        drop(child);
        let Some(core) = self.me.upgrade() else {
            return;
        };
        let mut st = self.st.borrow_mut();
        if st.port.owns_tag(t) {
            st.port_io_done(t, status, &core);
            return;
        }
        let idx = (t & 0xffff_ffff) as u32;
        let column = ((t >> 32) & 0xffff) as usize;
        let bit = if column < 64 { 1u64 << column } else { 0 };
        if t & LOG_FLUSH_TAG != 0 {
            if let IoStatus::Failed(_) = status {
                st.log_flush_failed |= bit;
            }
            st.log_flush_remaining = st.log_flush_remaining.saturating_sub(1);
            if st.log_flush_remaining == 0 {
                st.end_log_flush(&core);
            }
        } else if t & RETIRE_TAG != 0 {
            if let IoStatus::Failed(_) = status {
                st.retire_failed |= bit;
            }
            st.retire_remaining = st.retire_remaining.saturating_sub(1);
            if st.retire_remaining == 0 {
                st.end_retire(&core);
            }
        } else if t & OP_TAG != 0 {
            let Some(op) = st.ops.get_mut(idx as usize) else {
                return;
            };
            if let IoStatus::Failed(_) = status {
                op.failed |= bit;
            }
            op.remaining = op.remaining.saturating_sub(1);
            if op.remaining == 0 {
                match op.stage {
                    Stage::Reading => st.after_reads(idx, &core),
                    Stage::Logging => st.after_log(idx, &core),
                    Stage::Writing => st.after_writes(idx, &core),
                    _ => {}
                }
            }
        } else {
            let Some(pr) = st.parents.get_mut(idx as usize) else {
                return;
            };
            if let IoStatus::Failed(_) = status {
                pr.failed |= bit;
            }
            pr.remaining = pr.remaining.saturating_sub(1);
            if pr.remaining == 0 {
                st.parent_step(idx, &core);
            }
        }
    }
}

impl DriverChannel for Raid5Channel {
    fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo> {
        let core = &self.core;
        let mut st = core.st.borrow_mut();
        st.release_held(core);
        st.serve_log_regions(core);
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
                let mut n = st.release_held(core);
                if !st.waiters.is_empty() {
                    n += st.serve_waiters(core);
                }
                if st.port.waiting() > 0 {
                    st.drive_port(core);
                    n += st.serve_log_regions(core);
                }
                if !st.log_waiters.is_empty() {
                    n += st.serve_log_waiters(core);
                }
                if !st.want_ops.is_empty() {
                    n += st.serve_want_ops(core);
                }
                if !st.deferred.is_empty() {
                    n += st.retry_deferred(core);
                }
                n
            }
            Err(_) => 0,
        }
    }

    fn must_poll(&self) -> bool {
        self.core.st.try_borrow().map_or(true, |st| {
            !st.held.is_empty()
                || !st.waiters.is_empty()
                || !st.log_waiters.is_empty()
                || !st.want_ops.is_empty()
                || !st.deferred.is_empty()
                || st.port.must_poll()
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
