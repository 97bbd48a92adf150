//! A virtqueue served by a reactor: the reactor owns the `Queue` and polls it, turns each
//! request into a bdev request whose iovecs point straight into guest memory (zero copy),
//! and completes it into the used ring. No lock and no allocation per request: request slots,
//! scratch vectors and the bdev request pool are all reused.
//!
//! Notifications: while requests keep arriving the queue polls with guest kicks suppressed
//! (EVENT_IDX). After a few empty polls it re-enables kicks, re-checking the ring
//! (`enable_notification` returns true if requests slipped in) so none is stranded, and only
//! then lets its reactor sleep on the kick eventfd. Completions are batched: one interrupt per
//! reactor iteration at most, and only if the guest asked for one (`needs_notification`).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use plexd_engine::bdev::{Bdev, BdevIo, IoChannel, IoCompletion, IoType};
use plexd_engine::reactor::{register_poller, Poller};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::chain::{find_status, flatten_head};
use super::inflight::InflightQueue;
use super::request::{
    parse, read_range_seg, write_id, write_status, Kind, ParseError, Piece, VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
};

/// Interleaving hooks for tests (feature `test-hooks`, off in normal builds): a test can hold
/// a reactor at a chosen point of a worker's poll to force an interleaving deterministically.
#[cfg(feature = "test-hooks")]
pub mod hooks {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Phase {
        Idle,
        Armed,
        Held,
    }

    /// A point in the worker's poll where a test can hold the reactor once.
    pub struct Gate {
        armed: AtomicBool,
        state: Mutex<(Phase, String)>,
        cv: Condvar,
    }

    /// In `poll`, after the commands from the control thread were applied and before the
    /// available ring is read.
    pub static AFTER_CMDS: Gate = Gate::new();

    impl Gate {
        const fn new() -> Gate {
            Gate {
                armed: AtomicBool::new(false),
                state: Mutex::new((Phase::Idle, String::new())),
                cv: Condvar::new(),
            }
        }

        /// Holds the next worker of controller `ctrlr` that reaches this point.
        pub fn arm(&self, ctrlr: &str) {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            *s = (Phase::Armed, ctrlr.to_string());
            self.armed.store(true, Ordering::SeqCst);
        }

        /// Waits until a worker is held here; false after `timeout`.
        pub fn wait_held(&self, timeout: Duration) -> bool {
            let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let (s, _) = self
                .cv
                .wait_timeout_while(s, timeout, |s| s.0 != Phase::Held)
                .unwrap_or_else(|p| p.into_inner());
            s.0 == Phase::Held
        }

        /// Lets the held worker go on (or disarms the gate).
        pub fn release(&self) {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.0 = Phase::Idle;
            self.armed.store(false, Ordering::SeqCst);
            self.cv.notify_all();
        }

        pub(super) fn pass(&self, ctrlr: &str) {
            if !self.armed.load(Ordering::Relaxed) {
                return;
            }
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.0 != Phase::Armed || s.1 != ctrlr {
                return;
            }
            s.0 = Phase::Held;
            self.cv.notify_all();
            while s.0 == Phase::Held {
                s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

/// At most one log line per queue per interval for requests a guest got wrong.
const GUEST_ERROR_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Empty polls before guest kicks are re-enabled.
const IDLE_POLLS_BEFORE_ARMING: u32 = 32;

/// Commands from the connection's control thread.
pub enum Cmd {
    /// Stop fetching, finish requests in flight, answer with `next_avail`, and go away.
    Stop(crossbeam::channel::Sender<u16>),
    /// Use a new guest memory snapshot for every request fetched from now on, then answer
    /// (the control thread acknowledges the front-end only after that answer).
    /// The counter is the table's SIGBUS fault counter (see [`VringSpec::faults`]).
    SetMem(
        Arc<GuestMemoryMmap>,
        Arc<AtomicU64>,
        crossbeam::channel::Sender<()>,
    ),
}

/// Everything a reactor needs to start serving a queue.
pub struct VringSpec {
    /// Controller name, for logs.
    pub ctrlr: String,
    /// Queue index.
    pub index: u16,
    /// The configured ring.
    pub queue: Queue,
    /// Guest memory.
    pub mem: Arc<GuestMemoryMmap>,
    /// SIGBUS faults survived in `mem`'s mappings (the front-end shrank their files): a
    /// request that sees it move lost guest memory and answers IOERR.
    pub faults: Arc<AtomicU64>,
    /// Guest → device notifications.
    pub kick: File,
    /// Device → guest interrupts.
    pub call: Option<File>,
    /// Device → front-end error notifications (SET_VRING_ERR): signalled when the queue
    /// stops because the guest broke it.
    pub err: Option<File>,
    /// The exported bdev.
    pub bdev: Arc<Bdev>,
    /// Refuse writes.
    pub readonly: bool,
    /// Commands.
    pub cmds: crossbeam::channel::Receiver<Cmd>,
    /// Inflight tracking area for this queue (INFLIGHT_SHMFD), if negotiated.
    pub inflight: Option<InflightQueue>,
    /// Heads to resubmit first (in flight when a previous plexd stopped), in order.
    pub resubmit: Vec<u16>,
    /// Continue inflight ordering counters from here.
    pub counter_start: u64,
}

/// What a request in flight needs at completion, kept in a table indexed by its descriptor
/// head (one slot per queue entry; `mem` is `Some` while the head is in flight).
struct HeadSlot {
    mem: Option<Arc<GuestMemoryMmap>>,
    /// The fault counter of `mem`'s mappings, and its value when the request was parsed.
    faults: Option<Arc<AtomicU64>>,
    faults_seen: u64,
    status: *mut u8,
    used_len: u32,
}

struct State {
    queue: Queue,
    mem: Arc<GuestMemoryMmap>,
    /// `mem`'s fault counter (fresh, at 0, for every SET_MEM_TABLE): once it moved, guest
    /// memory was lost and the snapshot is poisoned.
    faults: Arc<AtomicU64>,
    desc_table: u64,
    slots: Vec<HeadSlot>,
    heads: Vec<u16>,
    pieces: Vec<Piece>,
    data: Vec<Piece>,
    inflight_track: Option<InflightQueue>,
    counter: u64,
    resubmit: Vec<u16>,
    inflight: u32,
    need_signal: bool,
    armed: bool,
    idle: u32,
    broken: bool,
    stopping: Option<crossbeam::channel::Sender<u16>>,
}

impl State {
    /// Publishes `head` as used with `len` bytes written, keeping the inflight area in step.
    fn complete_head(&mut self, head: u16, len: u32) {
        if let Some(t) = &self.inflight_track {
            t.pre_complete(head);
        }
        let m = self.mem.clone();
        let _ = self.queue.add_used(&*m, head, len);
        if let Some(t) = &self.inflight_track {
            t.post_complete(head, self.queue.next_used());
        }
        self.need_signal = true;
    }
}

/// A queue being served.
pub struct VringWorker {
    ctrlr: String,
    index: u16,
    state: RefCell<State>,
    channel: Rc<IoChannel>,
    kick: File,
    call: Option<File>,
    err: Option<File>,
    cmds: crossbeam::channel::Receiver<Cmd>,
    block_size: u64,
    capacity_bytes: u64,
    readonly: bool,
    id: Vec<u8>,
    me: Weak<VringWorker>,
    keep: RefCell<Option<Rc<VringWorker>>>,
    /// Last guest-error log line and how many were suppressed since.
    log_limit: Cell<(Option<std::time::Instant>, u32)>,
}

/// Starts serving `spec` on the calling reactor thread.
pub fn start_on_this_reactor(spec: VringSpec) -> Result<(), String> {
    let channel = spec.bdev.get_io_channel().map_err(|e| e.to_string())?;
    let size = spec.queue.size() as usize;
    let desc_table = spec.queue.desc_table();
    let w = Rc::new_cyclic(|me| VringWorker {
        ctrlr: spec.ctrlr,
        index: spec.index,
        channel,
        kick: spec.kick,
        call: spec.call,
        err: spec.err,
        cmds: spec.cmds,
        block_size: spec.bdev.block_size() as u64,
        capacity_bytes: spec.bdev.num_blocks() * spec.bdev.block_size() as u64,
        readonly: spec.readonly,
        id: spec.bdev.name().as_bytes().to_vec(),
        me: me.clone(),
        keep: RefCell::new(None),
        log_limit: Cell::new((None, 0)),
        state: RefCell::new(State {
            queue: spec.queue,
            mem: spec.mem,
            faults: spec.faults,
            desc_table,
            slots: (0..size)
                .map(|_| HeadSlot {
                    mem: None,
                    faults: None,
                    faults_seen: 0,
                    status: std::ptr::null_mut(),
                    used_len: 0,
                })
                .collect(),
            heads: Vec::with_capacity(size),
            pieces: Vec::with_capacity(256),
            data: Vec::with_capacity(256),
            inflight_track: spec.inflight,
            counter: spec.counter_start,
            resubmit: spec.resubmit,
            inflight: 0,
            need_signal: false,
            armed: false,
            idle: 0,
            broken: false,
            stopping: None,
        }),
    });
    {
        let st = &mut *w.state.borrow_mut();
        let mem = st.mem.clone();
        let _ = st.queue.disable_notification(&*mem);
    }
    let poller: Rc<dyn Poller> = w.clone();
    if !register_poller(&poller) {
        return Err("not on a reactor thread".into());
    }
    *w.keep.borrow_mut() = Some(w.clone());
    let resubmitted = w.resubmit_inflight();
    if resubmitted > 0 {
        tracing::info!(ctrlr = %w.ctrlr, queue = w.index, resubmitted, "resubmitted requests in flight before the restart");
    }
    // The previous back-end of this ring (a plexd killed between publishing used entries and
    // interrupting the guest) may have left completions the guest was never told about.
    // With EVENT_IDX nothing later would tell it: `needs_notification` fires only for
    // completions that cross the guest's used_event, which those entries already crossed, so
    // a guest waiting on them would hang. One interrupt at every start makes it look at the
    // used ring (a spurious one is harmless); libvhost-user does the same on SET_VRING_CALL.
    w.signal_guest();
    tracing::debug!(ctrlr = %w.ctrlr, queue = w.index, "virtqueue started");
    Ok(())
}

impl VringWorker {
    fn handle_cmds(&self) {
        while let Ok(cmd) = self.cmds.try_recv() {
            let mut st = self.state.borrow_mut();
            match cmd {
                Cmd::Stop(reply) => st.stopping = Some(reply),
                Cmd::SetMem(m, faults, applied) => {
                    st.mem = m;
                    // ADD/REM_MEM_REG keep the table's counter (regions kept from it may
                    // have lost memory); SET_MEM_TABLE brings a fresh one.
                    st.faults = faults;
                    let _ = applied.send(());
                }
            }
        }
    }

    fn finish_stop_if_idle(&self) -> bool {
        let reply = {
            let mut st = self.state.borrow_mut();
            if st.stopping.is_none() || st.inflight > 0 {
                return false;
            }
            if st.need_signal {
                st.need_signal = false;
                self.signal_guest();
            }
            let next = st.queue.next_avail();
            st.stopping.take().map(|r| (r, next))
        };
        if let Some((r, next)) = reply {
            let _ = r.send(next);
            tracing::debug!(ctrlr = %self.ctrlr, queue = self.index, next_avail = next, "virtqueue stopped");
            self.keep.borrow_mut().take();
        }
        true
    }

    /// Logs a request refused as malformed, at most once a second per queue (a guest can
    /// trigger it at will); `status` says whether IOERR could be written, otherwise the head
    /// went back with used length 0 and its status byte untouched.
    #[cold]
    fn guest_error(&self, head: u16, e: ParseError, status: bool) {
        let now = std::time::Instant::now();
        let (last, suppressed) = self.log_limit.get();
        if last.is_some_and(|t| now.duration_since(t) < GUEST_ERROR_LOG_INTERVAL) {
            self.log_limit.set((last, suppressed + 1));
            return;
        }
        self.log_limit.set((Some(now), 0));
        if status {
            tracing::warn!(ctrlr = %self.ctrlr, queue = self.index, head, suppressed, "malformed request answered IOERR: {e}");
        } else {
            tracing::warn!(ctrlr = %self.ctrlr, queue = self.index, head, suppressed, "malformed request returned without a status (no device-writable status byte in guest memory): {e}");
        }
    }

    fn signal_guest(&self) {
        if let Some(call) = &self.call {
            let _ = (&*call).write(&1u64.to_ne_bytes());
        }
    }

    /// Resubmits the requests a previous plexd left in flight (INFLIGHT_SHMFD).
    fn resubmit_inflight(&self) -> usize {
        let Some(me) = self.me.upgrade() else {
            return 0;
        };
        let mut st = self.state.borrow_mut();
        let heads = std::mem::take(&mut st.resubmit);
        let m = st.mem.clone();
        for &head in &heads {
            self.start_request(&mut st, head, &m, &me, false);
        }
        heads.len()
    }

    /// Fetches and starts every available request; returns how many.
    fn process_avail(&self) -> usize {
        let Some(me) = self.me.upgrade() else {
            return 0;
        };
        let mut st = self.state.borrow_mut();
        if st.broken {
            return 0;
        }
        let m = st.mem.clone();
        {
            let State {
                queue,
                heads,
                broken,
                ..
            } = &mut *st;
            heads.clear();
            match queue.iter(&*m) {
                Ok(iter) => heads.extend(iter.map(|chain| chain.head_index())),
                Err(e) => {
                    tracing::error!(ctrlr = %self.ctrlr, queue = self.index, "guest broke the available ring ({e}); queue stopped until reset");
                    *broken = true;
                    self.signal_error();
                    return 0;
                }
            }
        }
        let n = st.heads.len();
        for i in 0..n {
            let head = st.heads[i];
            if !self.start_request(&mut st, head, &m, &me, true) {
                // The queue stopped at entry i: it and the entries after it stay in the
                // ring, unfetched, so the base a stop reports is the bad entry's position
                // and no fetched request is left unanswered.
                let next = st.queue.next_avail().wrapping_sub((n - i) as u16);
                st.queue.set_next_avail(next);
                return i;
            }
        }
        n
    }

    /// Stops the queue until a reset (the guest broke it) and tells the front-end through
    /// the error eventfd, if it gave one: vhost-user's way to report a device that needs a
    /// reset (QEMU logs it).
    #[cold]
    fn mark_broken(&self, st: &mut State) {
        st.broken = true;
        self.signal_error();
    }

    /// The front-end shrank guest memory under a request (a SIGBUS was survived in it):
    /// the queue stops until a reset, and the front-end is told through the error eventfd.
    #[cold]
    fn memory_lost(&self, st: &mut State) {
        if !st.broken {
            tracing::error!(ctrlr = %self.ctrlr, queue = self.index, "the front-end shrank shared guest memory under a request; it answered IOERR and the queue stopped until a new memory table or reset");
            self.mark_broken(st);
        }
    }

    fn signal_error(&self) {
        if let Some(err) = &self.err {
            let _ = (&*err).write(&1u64.to_ne_bytes());
        }
    }

    /// Parses and starts one request; returns false if the queue had to stop.
    fn start_request(
        &self,
        st: &mut State,
        head: u16,
        m: &Arc<GuestMemoryMmap>,
        me: &Rc<VringWorker>,
        track: bool,
    ) -> bool {
        match st.slots.get(head as usize) {
            None => {
                // No descriptor has this index: there is nothing to answer (a used element
                // with this id would break the driver's ring), and no inflight entry to mark.
                // As QEMU (virtio_error) and libvhost-user (vu_panic): the queue needs a reset.
                tracing::error!(ctrlr = %self.ctrlr, queue = self.index, head, size = st.queue.size(), "guest made a head index past the queue size available; queue stopped until reset");
                self.mark_broken(st);
                return false;
            }
            Some(slot) if slot.mem.is_some() => {
                tracing::error!(ctrlr = %self.ctrlr, queue = self.index, head, "guest reused a descriptor still in flight; queue stopped until reset");
                self.mark_broken(st);
                return false;
            }
            Some(_) => {}
        }
        if track {
            st.counter += 1;
            if let Some(t) = &st.inflight_track {
                t.begin(head, st.counter);
            }
        }
        let size = st.queue.size();
        // SAFETY: `m` is held for this call, and a request that outlives it keeps a clone in
        // its slot until it completes; the pieces are refilled before every use.
        let flat = unsafe { flatten_head(m, st.desc_table, size, head, &mut st.pieces) };
        if let Err(e) = flat {
            // Some descriptor cannot be mapped (outside the memory table) or the chain is
            // malformed. Answer IOERR if the status byte can still be located.
            match find_status(m, st.desc_table, size, head) {
                Some(status) => {
                    // SAFETY: `status` is a device-writable byte inside `m`, which is alive
                    // for this call.
                    unsafe { write_status(status, VIRTIO_BLK_S_IOERR) };
                    st.complete_head(head, 1);
                    self.guest_error(head, e, true);
                }
                None => {
                    st.complete_head(head, 0);
                    self.guest_error(head, e, false);
                }
            }
            return true;
        }
        let parsed = match parse(&st.pieces, &mut st.data) {
            Ok(p) => p,
            Err(e) => {
                match st
                    .pieces
                    .last()
                    .filter(|p| p.is_writable())
                    .and_then(Piece::last_byte)
                {
                    Some(status) => {
                        // SAFETY: the last byte of a mapped, device-writable piece inside `m`,
                        // which is alive for this call.
                        unsafe { write_status(status, VIRTIO_BLK_S_IOERR) };
                        st.complete_head(head, 1);
                        self.guest_error(head, e, true);
                    }
                    None => {
                        st.complete_head(head, 0);
                        self.guest_error(head, e, false);
                    }
                }
                return true;
            }
        };
        let immediate = |st: &mut State, status: u8, used: u32| {
            // SAFETY: `parsed.status` points into `m`, alive for this call.
            unsafe { write_status(parsed.status, status) };
            st.complete_head(head, used);
            true
        };
        let bs = self.block_size;
        let (io_type, offset, len, used_len) = match parsed.kind {
            Kind::Unsupported(_) => return immediate(st, VIRTIO_BLK_S_UNSUPP, 1),
            Kind::GetId => {
                let w = write_id(&st.data, &self.id);
                return immediate(st, VIRTIO_BLK_S_OK, w as u32 + 1);
            }
            Kind::Flush => (IoType::Flush, Some(0), 0, 1),
            Kind::In | Kind::Out => {
                let t = if parsed.kind == Kind::In {
                    IoType::Read
                } else {
                    IoType::Write
                };
                let used = if t == IoType::Read {
                    u32::try_from(parsed.data_len).map_or(u32::MAX, |n| n.saturating_add(1))
                } else {
                    1
                };
                (t, parsed.sector.checked_mul(512), parsed.data_len, used)
            }
            Kind::Discard | Kind::WriteZeroes => match read_range_seg(&st.data, parsed.data_len) {
                Some(seg) => {
                    let t = if parsed.kind == Kind::Discard {
                        IoType::Unmap
                    } else {
                        IoType::WriteZeroes
                    };
                    (
                        t,
                        seg.sector.checked_mul(512),
                        seg.num_sectors as u64 * 512,
                        1,
                    )
                }
                None => return immediate(st, VIRTIO_BLK_S_IOERR, 1),
            },
        };
        let Some(offset) = offset else {
            return immediate(st, VIRTIO_BLK_S_IOERR, 1);
        };
        let writes = !matches!(io_type, IoType::Read | IoType::Flush);
        if io_type != IoType::Flush {
            let in_range = offset
                .checked_add(len)
                .is_some_and(|end| end <= self.capacity_bytes);
            let aligned = offset % bs == 0 && len % bs == 0;
            if !in_range || !aligned || len == 0 {
                return immediate(st, VIRTIO_BLK_S_IOERR, 1);
            }
        }
        if writes && self.readonly {
            return immediate(st, VIRTIO_BLK_S_IOERR, 1);
        }
        let faults_seen = st.faults.load(Ordering::SeqCst);
        if faults_seen != 0 {
            // Guest memory of this snapshot was lost (replaced by zero pages): no request
            // through it may claim success.
            immediate(st, VIRTIO_BLK_S_IOERR, 1);
            self.memory_lost(st);
            return false;
        }
        let mut io = BdevIo::alloc();
        if io_type == IoType::Flush {
            io.prep(io_type, 0, 0);
        } else {
            io.prep(io_type, offset / bs, len / bs);
        }
        if io_type.has_data() {
            for p in st.data.iter() {
                // SAFETY: each piece lies in a mapping of `m`; the slot keeps a clone of `m`
                // until the request completes, so the memory stays mapped for the whole
                // request. The guest owns these buffers until we return the head.
                unsafe { io.push_iov(p.as_ptr(), p.len()) };
            }
        }
        let faults = st.faults.clone();
        let slot = &mut st.slots[head as usize];
        slot.mem = Some(m.clone());
        slot.faults = Some(faults);
        slot.faults_seen = faults_seen;
        slot.status = parsed.status;
        slot.used_len = used_len;
        st.inflight += 1;
        io.set_callback(me.clone(), head as u64);
        self.channel.submit(io);
        true
    }

    /// Re-enables guest kicks; returns true if requests arrived meanwhile (keep polling).
    fn arm(&self) -> bool {
        let st = &mut *self.state.borrow_mut();
        let m = st.mem.clone();
        match st.queue.enable_notification(&*m) {
            Ok(true) => {
                let _ = st.queue.disable_notification(&*m);
                true
            }
            Ok(false) => {
                st.armed = true;
                false
            }
            Err(_) => {
                self.mark_broken(st);
                false
            }
        }
    }
}

impl Poller for VringWorker {
    fn poll(&self) -> usize {
        self.handle_cmds();
        if self.state.borrow().stopping.is_some() {
            self.finish_stop_if_idle();
            return 0;
        }
        #[cfg(feature = "test-hooks")]
        hooks::AFTER_CMDS.pass(&self.ctrlr);
        {
            let st = &mut *self.state.borrow_mut();
            if st.armed {
                // A kick (or a spurious wake-up) brought us here: poll with kicks suppressed.
                let m = st.mem.clone();
                let _ = st.queue.disable_notification(&*m);
                st.armed = false;
            }
        }
        let n = self.process_avail();
        {
            let st = &mut *self.state.borrow_mut();
            if st.need_signal {
                st.need_signal = false;
                let m = st.mem.clone();
                if st.queue.needs_notification(&*m).unwrap_or(true) {
                    self.signal_guest();
                }
            }
            if n > 0 {
                st.idle = 0;
                return n;
            }
            if st.broken {
                // Nothing to fetch until a reset; only completions (and their interrupts)
                // remain. Re-arming would find the bad entries pending and spin.
                return 0;
            }
            st.idle += 1;
            if st.idle < IDLE_POLLS_BEFORE_ARMING {
                return 0;
            }
        }
        if self.arm() {
            1
        } else {
            0
        }
    }

    fn wake_fd(&self) -> Option<i32> {
        Some(self.kick.as_raw_fd())
    }

    fn busy(&self) -> bool {
        let st = self.state.borrow();
        !st.armed && !st.broken
    }

    fn inflight(&self) -> u64 {
        self.state.borrow().inflight as u64
    }
}

impl IoCompletion for VringWorker {
    fn io_done(&self, io: BdevIo) {
        let head = io.tag() as usize;
        let ok = io.status().is_success();
        drop(io);
        let released = {
            let st = &mut *self.state.borrow_mut();
            let Some(slot) = st.slots.get_mut(head) else {
                return;
            };
            let Some(slot_mem) = slot.mem.take() else {
                return;
            };
            // A plain load/compare: did a SIGBUS replace guest memory while this request
            // used it (reads landed in a zero page, writes read zeros)?
            let lost = slot
                .faults
                .take()
                .is_some_and(|f| f.load(Ordering::SeqCst) != slot.faults_seen);
            let ok = ok && !lost;
            // SAFETY: `slot.status` points into `slot_mem`, which is still mapped (we hold it).
            unsafe {
                write_status(
                    slot.status,
                    if ok {
                        VIRTIO_BLK_S_OK
                    } else {
                        VIRTIO_BLK_S_IOERR
                    },
                )
            };
            let used = if ok { slot.used_len } else { 1 };
            st.inflight = st.inflight.saturating_sub(1);
            st.complete_head(head as u16, used);
            if lost {
                self.memory_lost(st);
            }
            slot_mem
        };
        drop(released);
        self.finish_stop_if_idle();
    }
}
