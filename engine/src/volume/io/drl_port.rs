//! A channel's part of its volume's dirty region log: the writes of this channel waiting for
//! their regions' bits, and, while this channel holds the log's token, the page writes that
//! make those bits durable and the lazy clear pass. The region state itself (marks, batches,
//! clears) is `drl::regions`; this module only issues the I/O it asks for, from the channel's
//! reactor, and hands the outcome back.
//!
//! - **Waiters.** A write whose regions are not durable yet ([`Entered::Wait`]) keeps its slot
//!   and waits here (`DrlPort::wait`); the channel looks at its waiters from `poll` and
//!   `submit` ([`Drl::poll_wait`] costs one load until the durable sequence moves) and issues
//!   each write once its bits are durable. The queue is preallocated.
//! - **Set batches.** Whichever channel of the volume takes the token ([`Drl::try_own`]) takes
//!   a batch of changed pages into its page buffer (allocated when a view with the log is
//!   loaded, sized for the map; never per I/O), seals them (trailer and crc, the map's epochs),
//!   writes them to every live copy, flushes the copy disks, then finishes the batch: durable
//!   if at least one copy wrote and flushed every page. It keeps taking batches while
//!   [`Drl::batch_pending`], so every waiter of every channel gets its bits.
//! - **Clear passes.** When [`Drl::clear_due`], the token holder arms the quiet regions,
//!   flushes the data disks (the ones a guest flush reaches), commits the clears (or disarms
//!   if a flush failed), and the next set batch writes the cleared pages.
//! - **Failures.** A copy whose write or flush fails while another copy took the batch is
//!   dead: later batches skip it ([`DrlShared::dead_copies`]) and the error is logged once.
//!   When every copy fails, nothing becomes durable, the waiters keep waiting, and the batch
//!   is retried after [`RETRY_MS`].
//!
//! One batch or clear pass at a time, under the token; its I/O is tagged with the port's tag
//! bit (the channel's `DrlPort::owns_tag` routes completions here) and the kind and copy in
//! the bits below: `tag | kind << 32 | index`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::bdev::{Bdev, BdevIo, IoBuf, IoChannel, IoCompletion, IoStatus, IoType};
use crate::reactor::{tsc, Poller};
use crate::volume::drl::format::{seal_page, PageKind, PageTrailer};
use crate::volume::drl::regions::{Batch, Drl, DrlOwner, Entered, PageLayout, WaitTicket};
use crate::volume::io::driver::{DrlMap, VolumeMap};

/// The tag bit of the port's I/O in the mirror channel (whose slot tags use the low 32 bits
/// for the slot and bits 32–37 for the plex or flush target).
pub(crate) const MIRROR_DRL_TAG: u64 = 1 << 62;

/// How long after every copy failed a batch is tried again.
pub const RETRY_MS: u64 = 100;

/// How often an idle channel looks whether a clear pass is due, at most (it also looks at the
/// log's own deadline).
const CLOCK_IDLE_MS: u64 = 100;

/// Kinds of port I/O (bits 32–39 of the tag).
const PAGE_WRITE: u64 = 1;
const COPY_FLUSH: u64 = 2;
const DATA_FLUSH: u64 = 3;

/// What the reactors' ports share about a map's copies, beyond the region state. Carried into
/// every new map of the volume while its copies stay where they are.
#[derive(Debug, Default)]
pub struct DrlShared {
    /// Copies whose write or flush failed while another copy took the batch (bit per copy):
    /// later batches skip them.
    pub dead_copies: AtomicU64,
    /// Every copy failed the last batch: no batch before this tick.
    retry_at: AtomicU64,
}

/// A write waiting for its regions' bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiter {
    /// The channel's slot holding the request.
    pub(crate) slot: u32,
    /// The request type to issue (an unmap may have become write-zeroes).
    pub(crate) op: IoType,
    /// The regions it entered.
    pub(crate) first: u32,
    pub(crate) last: u32,
    /// Where it last looked.
    pub(crate) ticket: WaitTicket,
}

/// What the port needs of the channel's view to issue its I/O.
pub(crate) struct PortView<'a> {
    /// The view's log.
    pub(crate) map: &'a DrlMap,
    /// The view's disks and this reactor's channels to them (same indexes).
    pub(crate) disks: &'a [Arc<Bdev>],
    pub(crate) bases: &'a [Rc<IoChannel>],
    /// The data disks a clear pass flushes (what a guest flush reaches).
    pub(crate) data_disks: &'a [u32],
    /// Where the port's I/O completes (the channel, which routes tagged completions back).
    pub(crate) cb: &'a Rc<dyn IoCompletion>,
    /// The volume's name, for the log.
    pub(crate) volume: &'a str,
}

impl<'a> PortView<'a> {
    /// The port's view of a channel's view of `map` (`bases` its channels to `map.disks`,
    /// `data_disks` what a guest flush reaches), or `None` when the map has no region log.
    pub(crate) fn of(
        map: &'a VolumeMap,
        bases: &'a [Rc<IoChannel>],
        data_disks: &'a [u32],
        cb: &'a Rc<dyn IoCompletion>,
        volume: &'a str,
    ) -> Option<PortView<'a>> {
        Some(PortView {
            map: map.drl.as_ref()?,
            disks: &map.disks,
            bases,
            data_disks,
            cb,
            volume,
        })
    }
}

/// The port's I/O in flight.
enum Op {
    Idle,
    /// A set batch's page writes: `live` copies written to, `failed` those that failed.
    Pages {
        batch: Batch,
        pending: u32,
        live: u64,
        failed: u64,
        errno: i32,
    },
    /// Its flushes of the copies that wrote every page (`written`).
    CopyFlush {
        batch: Batch,
        pending: u32,
        live: u64,
        written: u64,
        failed: u64,
        errno: i32,
    },
    /// A clear pass's flush of the data disks.
    DataFlush {
        pending: u32,
        failed: bool,
        errno: i32,
    },
}

/// The per-channel part of a volume's region log (see the module documentation).
pub(crate) struct DrlPort {
    tag: u64,
    waiters: VecDeque<Waiter>,
    owner: Option<DrlOwner>,
    buf: Option<IoBuf>,
    op: Op,
    retry_ticks: u64,
    /// Every copy failed the last batch (logged once until one works again).
    failing: bool,
}

impl DrlPort {
    /// A port whose I/O carries tag bit `tag`, with room for `waiters` waiting writes.
    pub(crate) fn new(tag: u64, waiters: usize) -> DrlPort {
        DrlPort {
            tag,
            waiters: VecDeque::with_capacity(waiters),
            owner: None,
            buf: None,
            op: Op::Idle,
            retry_ticks: tsc::duration_to_ticks(std::time::Duration::from_millis(RETRY_MS)),
            failing: false,
        }
    }

    /// Makes the page buffer big enough for `map` (when a view with it is loaded, so a batch
    /// never allocates). Not while a batch uses the buffer: then the next batch does it.
    pub(crate) fn prepare(&mut self, map: &DrlMap) {
        if matches!(self.op, Op::Idle) {
            self.ensure_buf(map);
        }
    }

    fn ensure_buf(&mut self, map: &DrlMap) {
        let len = buf_len(map);
        if self.buf.as_ref().is_none_or(|b| b.len() < len) {
            self.buf = Some(IoBuf::new(len));
        }
    }

    /// Whether `tag` is one of this port's completions.
    #[inline]
    pub(crate) fn owns_tag(&self, tag: u64) -> bool {
        tag & self.tag != 0
    }

    /// Queues a write that must wait for its bits.
    pub(crate) fn wait(&mut self, w: Waiter) {
        self.waiters.push_back(w);
    }

    /// Writes waiting.
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Takes out the next waiting write that may go on: its regions became durable in the log
    /// it entered (`(w, false)`), or that log is no longer the current one (`(w, true)`: the
    /// manager replaced or dropped it, and the write must leave its regions and enter the
    /// current log, if any). `log_of(slot)` is the log of the view a waiter's request is bound
    /// to, `current` the current view's. Waiters that must still wait keep their place (their
    /// ticket updated); the order among those that go on does not matter.
    pub(crate) fn take_due<'a>(
        &mut self,
        log_of: impl Fn(u32) -> Option<&'a Drl>,
        current: Option<&'a Drl>,
    ) -> Option<(Waiter, bool)> {
        let mut i = 0;
        while let Some(w) = self.waiters.get_mut(i) {
            let stale = match (log_of(w.slot), current) {
                (Some(old), Some(cur)) if std::ptr::eq(old, cur) => {
                    if !ready(old, w) {
                        i += 1;
                        continue;
                    }
                    false
                }
                _ => true,
            };
            return self.waiters.swap_remove_back(i).map(|w| (w, stale));
        }
        None
    }

    /// A batch or clear pass of this port is in flight.
    pub(crate) fn busy(&self) -> bool {
        !matches!(self.op, Op::Idle)
    }

    /// The reactor must keep polling: writes wait here, or the port's I/O is in flight.
    pub(crate) fn must_poll(&self) -> bool {
        !self.waiters.is_empty() || self.busy()
    }

    /// Gives the token back if this port holds it and is idle (its view lost the log).
    pub(crate) fn release(&mut self) {
        if !self.busy() {
            self.owner = None;
        }
    }

    /// Does the log's work that is due, if this port can take the token: set batches while
    /// any is pending, then a clear pass if one is due at `now`. True if it started I/O (the
    /// caller keeps `v`'s view alive until [`DrlPort::io_done`] says the port is idle again).
    pub(crate) fn drive(&mut self, v: &PortView<'_>, now: u64) -> bool {
        if self.busy() {
            return false;
        }
        let drl = &v.map.state;
        if self
            .owner
            .as_ref()
            .is_some_and(|o| !Arc::ptr_eq(o.drl(), drl))
        {
            self.owner = None;
        }
        // Each round either starts I/O, finishes something without I/O, or stops.
        for _ in 0..8 {
            let retry_ok = now >= v.map.shared.retry_at.load(Ordering::Relaxed);
            let batch = retry_ok && drl.batch_pending();
            let clear = retry_ok && drl.clear_due(now);
            if !batch && !clear {
                break;
            }
            if self.owner.is_none() {
                self.owner = drl.try_own();
                if self.owner.is_none() {
                    return false;
                }
            }
            if batch {
                match self.start_batch(v, now) {
                    Step::Started => return true,
                    Step::Done => continue,
                    Step::Nothing => {}
                }
            }
            if clear {
                match self.start_clear(v, now) {
                    Step::Started => return true,
                    Step::Done => continue,
                    Step::Nothing => {}
                }
            }
            break;
        }
        // Nothing in flight: the token goes back, so another channel's writers can be served.
        self.owner = None;
        false
    }

    /// Takes a set batch and writes its pages to every live copy.
    fn start_batch(&mut self, v: &PortView<'_>, now: u64) -> Step {
        let map = v.map;
        self.ensure_buf(map);
        let (Some(owner), Some(buf)) = (self.owner.as_mut(), self.buf.as_mut()) else {
            return Step::Nothing;
        };
        let page = map.geometry.page_size() as usize;
        let pages = map.geometry.pages() as usize;
        let layout = PageLayout {
            page_bytes: page,
            d_page0: 0,
            m_page0: pages,
        };
        let Some(batch) = owner.take_batch(buf.as_mut_slice(), layout) else {
            return Step::Nothing;
        };
        if batch.is_empty() {
            owner.finish_batch(batch, true);
            return Step::Done;
        }
        let bytes = buf.as_mut_slice();
        let spans = [
            (PageKind::Dirty, batch.d, 0, map.epoch),
            (PageKind::Missed, batch.m, pages, map.m_epoch),
        ];
        for (kind, span, page0, epoch) in spans {
            for index in span.first..span.end {
                let at = (page0 + index as usize) * page;
                let trailer = PageTrailer { kind, index, epoch };
                if let Err(e) = seal_page(&mut bytes[at..at + page], &trailer) {
                    // The map's page size was checked when it was built: not reached.
                    tracing::error!(volume = %v.volume, "region log page {trailer} cannot be sealed: {e}");
                    owner.finish_batch(batch, false);
                    self.batch_failed(v, now);
                    return Step::Nothing;
                }
            }
        }
        let base = bytes.as_mut_ptr();
        let dead = map.shared.dead_copies.load(Ordering::Relaxed);
        let (mut pending, mut live, mut failed) = (0u32, 0u64, 0u64);
        for (i, copy) in map.copies.iter().enumerate() {
            let bit = 1u64 << i;
            if dead & bit != 0 {
                continue;
            }
            live |= bit;
            let Some(ch) = v.bases.get(copy.target as usize) else {
                failed |= bit;
                continue;
            };
            for (span, page0) in [(batch.d, 0), (batch.m, pages)] {
                if span.is_empty() {
                    continue;
                }
                let first = page0 + span.first as usize;
                let n = (span.end - span.first) as usize;
                let mut c = BdevIo::alloc();
                c.prep(
                    IoType::Write,
                    copy.first_block + (1 + first as u64) * map.page_blocks,
                    n as u64 * map.page_blocks,
                );
                // SAFETY: `base` is the port's page buffer, valid for `buf_len(map)` bytes,
                // which holds pages `first..first + n` (the layout above, `ensure_buf`). The
                // buffer is neither freed nor written until this batch ends (`op` is not idle
                // until every child completed, and `ensure_buf`/`take_batch` run only when it
                // is), and the channel outlives its children (they hold it as their callback).
                unsafe { c.push_iov(base.add(first * page), n * page) };
                c.set_callback(v.cb.clone(), self.tag | PAGE_WRITE << 32 | i as u64);
                ch.submit(c);
                pending += 1;
            }
        }
        if pending == 0 {
            // No live copy could be written to.
            owner.finish_batch(batch, false);
            self.batch_failed(v, now);
            return Step::Nothing;
        }
        self.op = Op::Pages {
            batch,
            pending,
            live,
            failed,
            errno: libc::EIO,
        };
        Step::Started
    }

    /// Arms the quiet regions and flushes the data disks (a clear pass's first half).
    fn start_clear(&mut self, v: &PortView<'_>, now: u64) -> Step {
        let Some(owner) = self.owner.as_mut() else {
            return Step::Nothing;
        };
        if owner.arm_quiet(now) == 0 {
            return Step::Nothing;
        }
        let mut pending = 0;
        for &d in v.data_disks {
            let (Some(disk), Some(ch)) = (v.disks.get(d as usize), v.bases.get(d as usize)) else {
                continue;
            };
            if !disk.io_types().contains(IoType::Flush) {
                continue;
            }
            let mut c = BdevIo::alloc();
            c.prep(IoType::Flush, 0, 0);
            c.set_callback(v.cb.clone(), self.tag | DATA_FLUSH << 32 | u64::from(d));
            ch.submit(c);
            pending += 1;
        }
        if pending == 0 {
            // Nothing caches writes: every completed write is already on the data disks.
            owner.commit_clears();
            return Step::Done;
        }
        self.op = Op::DataFlush {
            pending,
            failed: false,
            errno: 0,
        };
        Step::Started
    }

    /// A port I/O completed (`tag` passed [`DrlPort::owns_tag`]). True when the port's
    /// batch or clear pass ended with it: the caller lets go of the view it issued on, then
    /// drives again.
    pub(crate) fn io_done(
        &mut self,
        tag: u64,
        status: IoStatus,
        v: &PortView<'_>,
        now: u64,
    ) -> bool {
        let kind = (tag >> 32) & 0xff;
        let index = (tag & 0xffff_ffff) as u32;
        let err = match status {
            IoStatus::Failed(e) => Some(e),
            _ => None,
        };
        match (&mut self.op, kind) {
            (
                Op::Pages {
                    pending,
                    failed,
                    errno,
                    ..
                },
                PAGE_WRITE,
            ) => {
                if let Some(e) = err {
                    *failed |= 1 << index;
                    *errno = e;
                }
                *pending -= 1;
                if *pending > 0 {
                    return false;
                }
                self.pages_written(v, now)
            }
            (
                Op::CopyFlush {
                    pending,
                    failed,
                    errno,
                    ..
                },
                COPY_FLUSH,
            ) => {
                if let Some(e) = err {
                    *failed |= 1 << index;
                    *errno = e;
                }
                *pending -= 1;
                if *pending > 0 {
                    return false;
                }
                self.copies_flushed(v, now);
                true
            }
            (
                Op::DataFlush {
                    pending,
                    failed,
                    errno,
                },
                DATA_FLUSH,
            ) => {
                if let Some(e) = err {
                    *failed = true;
                    *errno = e;
                }
                *pending -= 1;
                if *pending > 0 {
                    return false;
                }
                let (failed, e) = (*failed, *errno);
                self.op = Op::Idle;
                if let Some(owner) = self.owner.as_mut() {
                    if failed {
                        owner.disarm();
                        tracing::warn!(volume = %v.volume, "region log: flushing the data disks for a clear pass failed (errno {e}); no region is cleared this time");
                    } else {
                        owner.commit_clears();
                    }
                }
                true
            }
            _ => {
                tracing::error!(volume = %v.volume, tag, "region log: a completion that matches no I/O in flight was ignored");
                false
            }
        }
    }

    /// Every page write of the batch is back: flush the copies that took them all.
    fn pages_written(&mut self, v: &PortView<'_>, now: u64) -> bool {
        let Op::Pages {
            batch,
            live,
            failed,
            errno,
            ..
        } = self.op
        else {
            return false;
        };
        let written = live & !failed;
        if written == 0 {
            self.op = Op::Idle;
            self.fail_batch(batch, v, now, errno);
            return true;
        }
        let mut pending = 0;
        let mut unflushed = 0u64;
        for (i, copy) in v.map.copies.iter().enumerate() {
            if written & (1 << i) == 0 {
                continue;
            }
            let (Some(disk), Some(ch)) = (
                v.disks.get(copy.target as usize),
                v.bases.get(copy.target as usize),
            ) else {
                unflushed |= 1 << i;
                continue;
            };
            if !disk.io_types().contains(IoType::Flush) {
                // No volatile cache: the completed write is durable.
                continue;
            }
            let mut c = BdevIo::alloc();
            c.prep(IoType::Flush, 0, 0);
            c.set_callback(v.cb.clone(), self.tag | COPY_FLUSH << 32 | i as u64);
            ch.submit(c);
            pending += 1;
        }
        self.op = Op::CopyFlush {
            batch,
            pending,
            live,
            written,
            failed: unflushed,
            errno,
        };
        if pending == 0 {
            self.copies_flushed(v, now);
            return true;
        }
        false
    }

    /// The batch's flushes are back: it is durable if one copy wrote and flushed it.
    fn copies_flushed(&mut self, v: &PortView<'_>, now: u64) {
        let Op::CopyFlush {
            batch,
            live,
            written,
            failed,
            errno,
            ..
        } = self.op
        else {
            return;
        };
        self.op = Op::Idle;
        let durable = written & !failed;
        if durable == 0 {
            self.fail_batch(batch, v, now, errno);
            return;
        }
        if let Some(owner) = self.owner.as_mut() {
            owner.finish_batch(batch, true);
        }
        if self.failing {
            self.failing = false;
            tracing::info!(volume = %v.volume, "region log: a batch was written again; writes waiting for their regions go on");
        }
        let lost = live & !durable;
        if lost != 0 {
            let before = v.map.shared.dead_copies.fetch_or(lost, Ordering::Relaxed);
            for i in 0..v.map.copies.len() {
                if (lost & !before) & (1 << i) != 0 {
                    tracing::error!(
                        volume = %v.volume,
                        copy = i,
                        disk = %copy_disk(v, i),
                        "region log copy {i} on {} failed (errno {errno}); the volume's region log goes on with its other copies",
                        copy_disk(v, i)
                    );
                }
            }
        }
    }

    /// No copy took the batch: nothing of it is durable; its pages go out again later.
    fn fail_batch(&mut self, batch: Batch, v: &PortView<'_>, now: u64, errno: i32) {
        if let Some(owner) = self.owner.as_mut() {
            owner.finish_batch(batch, false);
        }
        self.batch_failed(v, now);
        if !self.failing {
            self.failing = true;
            tracing::error!(
                volume = %v.volume,
                "region log: no copy could write its pages (errno {errno}); writes into regions not yet marked wait, and the pages are retried every {RETRY_MS} ms"
            );
        }
    }

    fn batch_failed(&mut self, v: &PortView<'_>, now: u64) {
        v.map
            .shared
            .retry_at
            .store(now.saturating_add(self.retry_ticks), Ordering::Relaxed);
    }
}

/// What a step of [`DrlPort::drive`] did.
enum Step {
    /// Started I/O.
    Started,
    /// Finished something without I/O: look again.
    Done,
    /// Nothing to do.
    Nothing,
}

/// Bytes of the page buffer for `map`: both bitmaps (D pages, then M pages), no header.
fn buf_len(map: &DrlMap) -> usize {
    2 * map.geometry.pages() as usize * map.geometry.page_size() as usize
}

/// The name of copy `i`'s disk, for the log.
fn copy_disk<'a>(v: &'a PortView<'_>, i: usize) -> &'a str {
    v.map
        .copies
        .get(i)
        .and_then(|c| v.disks.get(c.target as usize))
        .map_or("?", |d| d.name())
}

/// Looks at a waiter of `drl`: true when its write may go (its bits are durable).
#[inline]
pub(crate) fn ready(drl: &Drl, w: &mut Waiter) -> bool {
    drl.poll_wait(w.first, w.last, &mut w.ticket)
}

/// Enters the regions of a write into `map`: `Ok(Go)`/`Ok(Wait)` as [`Drl::enter`], with the
/// regions entered; `Err` if the write lies past the map's regions (a map that does not cover
/// its volume: the write must fail rather than go unlogged).
#[inline]
pub(crate) fn enter(map: &DrlMap, offset: u64, num: u64) -> Result<(u32, u32, Entered), ()> {
    let (first, last) = map.regions(offset, num).ok_or(())?;
    Ok((first, last, map.state.enter(first, last)))
}

/// The channel side of a [`DrlClock`].
pub(crate) trait ClockTarget {
    /// Does the log's work that is due at `now` (a clear pass, a batch nobody else took);
    /// returns the tick to look again.
    fn clock(&self, now: u64) -> u64;
}

/// A timed poller that lets an idle channel run its volume's clear passes: the reactor polls a
/// volume's channel only while it has requests in flight, but a clear is due precisely when
/// the volume went quiet. Registered (weakly) once per channel, when it first loads a view
/// with a log; it lives as long as the channel.
pub(crate) struct DrlClock {
    target: Weak<dyn ClockTarget>,
    next: Cell<u64>,
}

impl DrlClock {
    /// A clock for `target`, first due now.
    pub(crate) fn new(target: Weak<dyn ClockTarget>) -> DrlClock {
        DrlClock {
            target,
            next: Cell::new(tsc::ticks()),
        }
    }

    /// When to look again: the log's clear deadline while it has dirty regions (but not
    /// sooner than a few ms, in case another channel holds the token), else in
    /// [`CLOCK_IDLE_MS`] (a write on another reactor may dirty a region meanwhile).
    pub(crate) fn next_look(drl: Option<&Drl>, now: u64) -> u64 {
        let idle = tsc::duration_to_ticks(std::time::Duration::from_millis(CLOCK_IDLE_MS));
        match drl {
            Some(d) if d.dirty() > 0 => d.next_clear_at().max(now + idle / 16),
            _ => now + idle,
        }
    }
}

impl Poller for DrlClock {
    fn poll(&self) -> usize {
        let now = tsc::ticks();
        if now < self.next.get() {
            return 0;
        }
        match self.target.upgrade() {
            Some(t) => {
                self.next.set(t.clock(now));
                1
            }
            None => {
                self.next.set(u64::MAX);
                0
            }
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        (self.next.get() != u64::MAX).then(|| self.next.get())
    }

    fn is_timed(&self) -> bool {
        true
    }
}
