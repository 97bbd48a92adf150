//! The in-memory state of one volume's region log, shared by every reactor of the volume: one
//! word per region, the page images of the two bitmaps and the sequence numbers that say what
//! is durable. No I/O: whoever holds the log's token ([`DrlOwner`]) takes the changed pages
//! ([`DrlOwner::take_batch`]), writes and flushes them, and reports back
//! ([`DrlOwner::finish_batch`]).
//!
//! Two bitmaps: **D** (dirty: a write may be in flight or not yet flushed on every plex; cleared
//! lazily) and **M** (missed: a plex that left may lack the region; kept while tracking).
//!
//! The protocol, md's write-intent bitmap made lock-free (`docs/on-disk-format.md` and the DRL
//! section of `volume/DESIGN.md` state the invariants):
//!
//! - A writer calls [`Drl::enter`] for its regions. When every region's bits are durable
//!   already, that is one `fetch_add` per region and the write goes on ([`Entered::Go`]). For a
//!   region whose bit is not durable the first writer sets the bit's request flag and the bit
//!   in the page image, then takes a request sequence number; it and every later writer to the
//!   region wait ([`Entered::Wait`]) until a flushed batch made the bit durable
//!   ([`Drl::poll_wait`]). The write calls [`Drl::leave`] when it completed.
//! - The owner's batch marks a bit durable only if a flushed page write held it and no earlier
//!   one did; then it publishes the durable sequence number, so the waiters look again.
//! - A D bit is cleared ([`DrlOwner::arm_quiet`], then a flush of the data disks, then
//!   [`DrlOwner::commit_clears`]) only when the region had no writer for a whole clear interval,
//!   lies below [`Drl::pin_from`], and, while M is tracked, its M bit is durable. A writer that
//!   enters after the arming defeats the clear.
//!
//! Invariant (what a crash relies on), for every version of each page a crash can leave on a
//! log copy: a region has its D bit there if a write to it is in flight, if a write to it
//! completed and no data flush has covered it yet, or if it was loaded dirty and a copy
//! pinning it has not passed it; a region written since tracking started has its bit in D or
//! in M there.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8};
use std::sync::Arc;

/// Writes in flight in the region (bits 0–15 of a region's word).
const COUNT: u32 = 0xFFFF;
/// The region's D bit is durable: writers go straight through.
const D_DUR: u32 = 1 << 16;
/// The region's D bit was requested (in the image, with a sequence number) but is not durable.
const D_REQ: u32 = 1 << 17;
/// The region's M bit is durable.
const M_DUR: u32 = 1 << 18;
/// The region's M bit was requested but is not durable.
const M_REQ: u32 = 1 << 19;
/// A clear pass armed the region: the data flush that lets it clear the D bit is under way.
const ARMED: u32 = 1 << 20;
/// The wrapping write ticker (bits 24–31), for the quiet heuristic only.
const TICK_SHIFT: u32 = 24;
/// What a writer adds to the word of each of its regions: one in flight, one tick.
const ENTER: u32 = 1 | (1 << TICK_SHIFT);

/// [`Drl::pin_from`] when no copy pins any region.
pub const NO_PIN: u64 = u64::MAX;

/// One of the two bitmaps of a region log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bitmap {
    /// D: regions that may differ between the plexes after a crash.
    Dirty,
    /// M: regions a plex that left may lack.
    Missed,
}

impl Bitmap {
    fn index(self) -> usize {
        match self {
            Bitmap::Dirty => 0,
            Bitmap::Missed => 1,
        }
    }

    fn dur(self) -> u32 {
        match self {
            Bitmap::Dirty => D_DUR,
            Bitmap::Missed => M_DUR,
        }
    }

    fn req(self) -> u32 {
        match self {
            Bitmap::Dirty => D_REQ,
            Bitmap::Missed => M_REQ,
        }
    }
}

/// The shape of a region log: how many regions, and how many bits one bitmap page holds (the
/// on-disk format's `(page − trailer) × 8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Regions of the volume.
    pub regions: u32,
    /// Bits of one bitmap page: a positive multiple of 64.
    pub bits_per_page: u32,
}

impl Geometry {
    /// Pages of one bitmap.
    pub fn pages(&self) -> u32 {
        self.regions.div_ceil(self.bits_per_page)
    }

    /// Bytes of bitmap at the start of each page ([`DrlOwner::take_batch`] writes these).
    pub fn bitmap_bytes(&self) -> usize {
        self.bits_per_page as usize / 8
    }

    fn words_per_page(&self) -> usize {
        self.bits_per_page as usize / 64
    }
}

/// A region log geometry that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// No regions.
    #[error("a region log needs at least one region")]
    NoRegions,
    /// Bits per page not a positive multiple of 64.
    #[error("a region log page must hold a positive multiple of 64 bits, not {0}")]
    BitsPerPage(u32),
}

/// Where [`DrlOwner::take_batch`] puts the pages in the caller's buffer: page `p` of D at byte
/// `(d_page0 + p) × page_bytes`, page `p` of M at `(m_page0 + p) × page_bytes` (the map copy's
/// layout: header, D pages, M pages). Only the first [`Geometry::bitmap_bytes`] of each page
/// are written; the trailer is the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLayout {
    /// Bytes per page (at least [`Geometry::bitmap_bytes`]).
    pub page_bytes: usize,
    /// Page index of D's page 0 in the buffer.
    pub d_page0: usize,
    /// Page index of M's page 0 in the buffer.
    pub m_page0: usize,
}

/// Pages `[first, end)` of one bitmap (empty when `first == end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageSpan {
    /// First page.
    pub first: u32,
    /// One past the last page.
    pub end: u32,
}

impl PageSpan {
    /// No page.
    pub fn is_empty(&self) -> bool {
        self.first >= self.end
    }
}

/// A set batch taken by the token holder: the pages to write (already copied into its buffer)
/// and the request sequence number it covers once written and flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Every request with a sequence number up to this one is covered.
    pub seq: u64,
    /// D pages to write.
    pub d: PageSpan,
    /// M pages to write.
    pub m: PageSpan,
}

impl Batch {
    /// Nothing to write: finish it at once (it only publishes `seq`).
    pub fn is_empty(&self) -> bool {
        self.d.is_empty() && self.m.is_empty()
    }
}

/// What a writer does after [`Drl::enter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Entered {
    /// Every bit the write needs is durable: issue it.
    Go,
    /// Wait until [`Drl::poll_wait`] says go (look again whenever the durable sequence moves).
    Wait(WaitTicket),
}

/// A waiting writer's place: the durable sequence number it last looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTicket {
    seen: u64,
}

/// The state the token holder alone reads and writes (relaxed atomics: the token's
/// acquire/release orders them between holders).
struct Owned {
    /// Per bitmap, the image of the last flushed batch: what the owner promised is durable.
    dur: [Box<[AtomicU64]>; 2],
    /// Per bitmap, the pages of the batch being written, as taken.
    written: [Box<[AtomicU64]>; 2],
    /// Per region, the ticker seen by the last clear pass.
    snap: Box<[AtomicU8]>,
    /// Regions `[armed_lo, armed_hi)` hold every armed region.
    armed_lo: AtomicU32,
    armed_hi: AtomicU32,
    /// A batch was taken and not finished (its pages' promise is being changed).
    batch_open: AtomicBool,
    /// The open batch's page spans per bitmap (`first << 32 | end`), given back to `changed`
    /// if its owner is dropped without finishing it.
    open_spans: [AtomicU64; 2],
}

/// The region log state of one volume, shared by its reactors (`Arc<Drl>`). See the module
/// documentation for the protocol.
pub struct Drl {
    geom: Geometry,
    /// One word per region: in-flight count, D/M durable and requested flags, armed, ticker.
    words: Box<[AtomicU32]>,
    /// Per bitmap, the page images (region order: page `p` is words `p × wpp ..`), always a
    /// superset of what must be durable.
    image: [Box<[AtomicU64]>; 2],
    /// Per bitmap, one bit per page: the image changed since the page was last taken.
    changed: [Box<[AtomicU64]>; 2],
    /// Requests taken (the last sequence number handed out).
    req: AtomicU64,
    /// The highest request sequence number covered by a finished, flushed batch.
    durable: AtomicU64,
    /// Held by the one owner of the log's buffer and I/O.
    token: AtomicBool,
    /// M is maintained: writers also need their M bit.
    tracking: AtomicBool,
    /// First region a copy has not passed: no D bit at or above it is cleared.
    pin_from: AtomicU64,
    /// Regions with a D bit durable or requested.
    dirty: AtomicU32,
    /// Time between clear passes, in the caller's ticks.
    clear_interval: AtomicU64,
    /// When the next clear pass is due.
    next_clear_at: AtomicU64,
    owned: Owned,
}

fn atomics64(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

fn bit_of(r: u32) -> (usize, u64) {
    ((r / 64) as usize, 1u64 << (r % 64))
}

impl Drl {
    /// A log with every region clean, pinned from region 0 (nothing is cleared until the owner
    /// of the volume's copies says which regions are settled: [`Drl::set_pin_from`],
    /// [`Drl::unpin`]). A clear pass runs at most every `clear_interval` ticks of the clock the
    /// caller passes to [`DrlOwner::arm_quiet`].
    pub fn new(geom: Geometry, clear_interval: u64) -> Result<Drl, GeometryError> {
        if geom.regions == 0 {
            return Err(GeometryError::NoRegions);
        }
        if geom.bits_per_page == 0 || !geom.bits_per_page.is_multiple_of(64) {
            return Err(GeometryError::BitsPerPage(geom.bits_per_page));
        }
        let regions = geom.regions as usize;
        let image_words = geom.pages() as usize * geom.words_per_page();
        let page_words = (geom.pages() as usize).div_ceil(64);
        Ok(Drl {
            geom,
            words: (0..regions).map(|_| AtomicU32::new(0)).collect(),
            image: [atomics64(image_words), atomics64(image_words)],
            changed: [atomics64(page_words), atomics64(page_words)],
            req: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            token: AtomicBool::new(false),
            tracking: AtomicBool::new(false),
            pin_from: AtomicU64::new(0),
            dirty: AtomicU32::new(0),
            clear_interval: AtomicU64::new(clear_interval),
            next_clear_at: AtomicU64::new(0),
            owned: Owned {
                dur: [atomics64(image_words), atomics64(image_words)],
                written: [atomics64(image_words), atomics64(image_words)],
                snap: (0..regions).map(|_| AtomicU8::new(0)).collect(),
                armed_lo: AtomicU32::new(0),
                armed_hi: AtomicU32::new(0),
                batch_open: AtomicBool::new(false),
                open_spans: [AtomicU64::new(0), AtomicU64::new(0)],
            },
        })
    }

    /// Marks `regions` durable in `map`, as read from disk at start (after a crash: D; for
    /// plexes that became stale there: M as well). Before the log is shared. Regions past the
    /// end are ignored (a page that read as all ones covers them). Nothing is written: the bits
    /// are on disk already.
    pub fn load(&mut self, map: Bitmap, regions: impl IntoIterator<Item = u32>) {
        let m = map.index();
        for r in regions {
            if r >= self.geom.regions {
                continue;
            }
            let word = self.words[r as usize].get_mut();
            if *word & map.dur() != 0 {
                continue;
            }
            *word |= map.dur();
            if map == Bitmap::Dirty {
                *self.dirty.get_mut() += 1;
            }
            let (w, bit) = bit_of(r);
            *self.image[m][w].get_mut() |= bit;
            *self.owned.dur[m][w].get_mut() |= bit;
        }
    }

    /// The log's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geom
    }

    /// A writer enters regions `first..=last` (inclusive) before it issues its write. In the
    /// steady state (every region's bits durable) this is one `fetch_add` per region. Pair it
    /// with [`Drl::leave`] when the write completed, whatever the answer.
    ///
    /// # Panics
    /// If `last` is not a region of the log (the caller maps blocks to regions of this map).
    #[inline]
    pub fn enter(&self, first: u32, last: u32) -> Entered {
        let mut have = D_DUR | M_DUR;
        for r in first..=last {
            let word = &self.words[r as usize];
            let old = word.fetch_add(ENTER, SeqCst);
            debug_assert!(old & COUNT < COUNT, "region {r}: in-flight count overflows");
            if old & ARMED != 0 {
                // Defeats the clear pass: its data flush may not cover this write.
                word.fetch_and(!ARMED, SeqCst);
            }
            have &= old;
        }
        let need = self.need();
        if have & need == need {
            return Entered::Go;
        }
        self.enter_slow(first, last, need)
    }

    #[cold]
    fn enter_slow(&self, first: u32, last: u32, need: u32) -> Entered {
        let mut requested = false;
        for r in first..=last {
            requested |= self.request(r, Bitmap::Dirty);
            if need & M_DUR != 0 {
                requested |= self.request(r, Bitmap::Missed);
            }
        }
        if requested {
            // After the image and `changed` stores: a batch that sees this number sees them.
            self.req.fetch_add(1, SeqCst);
        }
        // Read before the words: a batch that makes them durable publishes after, so the
        // waiter sees the sequence move.
        let seen = self.durable.load(SeqCst);
        if self.ready(first, last) {
            Entered::Go
        } else {
            Entered::Wait(WaitTicket { seen })
        }
    }

    /// Requests `map`'s bit of region `r` if it is neither durable nor requested: sets the
    /// request flag, the image bit and the page's changed bit. True if this call requested it
    /// (the caller then takes a sequence number).
    fn request(&self, r: u32, map: Bitmap) -> bool {
        let word = &self.words[r as usize];
        let mut cur = word.load(SeqCst);
        loop {
            if cur & (map.dur() | map.req()) != 0 {
                return false;
            }
            match word.compare_exchange_weak(cur, cur | map.req(), SeqCst, SeqCst) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if map == Bitmap::Dirty {
            self.dirty.fetch_add(1, Relaxed);
        }
        self.set_image_bit(map, r);
        true
    }

    fn set_image_bit(&self, map: Bitmap, r: u32) {
        let (w, bit) = bit_of(r);
        self.image[map.index()][w].fetch_or(bit, SeqCst);
        let page = r / self.geom.bits_per_page;
        self.mark_changed(map, page);
    }

    fn mark_changed(&self, map: Bitmap, page: u32) {
        let (w, bit) = bit_of(page);
        self.changed[map.index()][w].fetch_or(bit, SeqCst);
    }

    /// The bits a write needs durable now.
    fn need(&self) -> u32 {
        if self.tracking.load(SeqCst) {
            D_DUR | M_DUR
        } else {
            D_DUR
        }
    }

    /// Every bit a write to `first..=last` needs is durable.
    pub fn ready(&self, first: u32, last: u32) -> bool {
        let need = self.need();
        (first..=last).all(|r| self.words[r as usize].load(SeqCst) & need == need)
    }

    /// A waiting writer looks again: true when it may issue its write. It reads the words only
    /// when the durable sequence moved since it last looked, so polling costs one load.
    /// Liveness: every request takes a sequence number, and the owner keeps taking batches
    /// while [`Drl::batch_pending`], so the sequence moves until the waiter goes.
    #[inline]
    pub fn poll_wait(&self, first: u32, last: u32, ticket: &mut WaitTicket) -> bool {
        let d = self.durable.load(SeqCst);
        if d == ticket.seen {
            return false;
        }
        ticket.seen = d;
        self.ready(first, last)
    }

    /// A writer that entered `first..=last` completed (or gave up).
    #[inline]
    pub fn leave(&self, first: u32, last: u32) {
        for r in first..=last {
            let old = self.words[r as usize].fetch_sub(1, SeqCst);
            debug_assert!(old & COUNT != 0, "region {r}: leave without enter");
        }
    }

    /// Requests are waiting for a batch, or pages changed (clears) since the last one: the
    /// token holder should take a batch.
    pub fn batch_pending(&self) -> bool {
        self.req.load(SeqCst) > self.durable.load(SeqCst)
            || self
                .changed
                .iter()
                .any(|c| c.iter().any(|w| w.load(SeqCst) != 0))
    }

    /// The last request sequence number handed out.
    pub fn requested_seq(&self) -> u64 {
        self.req.load(SeqCst)
    }

    /// The highest request sequence number a flushed batch covers.
    pub fn durable_seq(&self) -> u64 {
        self.durable.load(SeqCst)
    }

    /// Regions whose D bit is durable or requested (the `dirty_regions` of a listing).
    pub fn dirty(&self) -> u32 {
        self.dirty.load(Relaxed)
    }

    /// Whether region `r`'s bit is in `map`'s image (a superset of what is durable).
    pub fn is_set(&self, map: Bitmap, r: u32) -> bool {
        let (w, bit) = bit_of(r);
        self.image[map.index()][w].load(SeqCst) & bit != 0
    }

    /// Regions set in `map`'s image.
    pub fn count(&self, map: Bitmap) -> u64 {
        self.image[map.index()]
            .iter()
            .map(|w| u64::from(w.load(SeqCst).count_ones()))
            .sum()
    }

    /// Copies `map`'s image into `out`, region `r` at bit `r % 64` of word `r / 64` (for a copy's
    /// todo set). `out` is cut to the image's length if longer; words it lacks are not copied.
    pub fn copy_image(&self, map: Bitmap, out: &mut [u64]) {
        for (o, w) in out.iter_mut().zip(self.image[map.index()].iter()) {
            *o = w.load(SeqCst);
        }
    }

    /// Words [`Drl::copy_image`] fills.
    pub fn image_words(&self) -> usize {
        self.image[0].len()
    }

    /// The first region a running copy has not passed: no D bit at or above it is cleared.
    pub fn pin_from(&self) -> u64 {
        self.pin_from.load(SeqCst)
    }

    /// Sets [`Drl::pin_from`]. A copy raises it only once its writes below `region` completed
    /// (the clear pass's data flush then covers them). Lowering it holds for every clear
    /// decided after this returns: a pass racing with it either decided before (the region was
    /// quiet and flushed: no copy needs it) or gives its bit back.
    pub fn set_pin_from(&self, region: u64) {
        self.pin_from.store(region, SeqCst);
    }

    /// No copy pins any region ([`NO_PIN`]).
    pub fn unpin(&self) {
        self.set_pin_from(NO_PIN);
    }

    /// Whether M is being tracked.
    pub fn is_tracking(&self) -> bool {
        self.tracking.load(SeqCst)
    }

    /// Starts tracking M (a plex stops receiving writes): from now on every writer also needs
    /// its region's M bit durable, and every region with a write in flight or a D bit is put
    /// into M now (through the next batch, which the owner takes since this takes a sequence
    /// number). Until its M bit is durable a region's D bit is not cleared. Returns the
    /// regions put into M. Not concurrently with [`DrlOwner::reset_m`].
    pub fn start_tracking(&self) -> u32 {
        // Dekker with `enter`: a writer's `fetch_add` and its `tracking` load against this
        // store and the word loads below. Either the writer sees tracking, or this sees it.
        self.tracking.store(true, SeqCst);
        let mut seeded = 0;
        for r in 0..self.geom.regions {
            let w = self.words[r as usize].load(SeqCst);
            // M_REQ alone: a request left behind by a writer racing `reset_m`, whose image bit
            // the reset may have wiped; a writer now would wait on it forever.
            if w & M_DUR == 0 && (w & COUNT != 0 || w & (D_DUR | D_REQ | M_REQ) != 0) {
                self.set_image_bit(Bitmap::Missed, r);
                seeded += 1;
            }
        }
        if seeded > 0 {
            self.req.fetch_add(1, SeqCst);
        }
        seeded
    }

    /// When the next clear pass is due (for a reactor's next deadline; meaningful while
    /// [`Drl::dirty`] is above 0).
    pub fn next_clear_at(&self) -> u64 {
        self.next_clear_at.load(Relaxed)
    }

    /// Sets the time between clear passes (the caller's ticks).
    pub fn set_clear_interval(&self, ticks: u64) {
        self.clear_interval.store(ticks, Relaxed);
    }

    /// Whether a clear pass is due at `now`.
    pub fn clear_due(&self, now: u64) -> bool {
        self.dirty() > 0 && now >= self.next_clear_at()
    }

    /// Takes the log's token: the one owner of its buffer and I/O, until the returned owner
    /// is dropped. None if another holds it.
    pub fn try_own(self: &Arc<Self>) -> Option<DrlOwner> {
        self.token
            .compare_exchange(false, true, SeqCst, SeqCst)
            .ok()
            .map(|_| DrlOwner {
                drl: Arc::clone(self),
            })
    }
}

/// The holder of a log's token: takes and finishes batches and runs clear passes. Dropping it
/// gives the token back (a batch taken and not finished then counts as failed: its pages are
/// taken again by the next one). It may be kept across I/O (in a reactor's state) and moved
/// between threads.
pub struct DrlOwner {
    drl: Arc<Drl>,
}

impl Drop for DrlOwner {
    fn drop(&mut self) {
        if self.drl.owned.batch_open.load(Relaxed) {
            // Dropped with a batch in flight (its I/O abandoned): its pages go out again.
            let span = |m: usize| {
                let v = self.drl.owned.open_spans[m].load(Relaxed);
                PageSpan {
                    first: (v >> 32) as u32,
                    end: v as u32,
                }
            };
            let (d, m) = (span(0), span(1));
            self.finish_batch(Batch { seq: 0, d, m }, false);
        }
        self.drl.token.store(false, SeqCst);
    }
}

impl DrlOwner {
    /// The log this owns.
    pub fn drl(&self) -> &Arc<Drl> {
        &self.drl
    }

    /// Takes a set batch: the pages changed since the last batch, their images copied into
    /// `buf` at `layout`. None when there is nothing to do. Write the pages (D span and M span)
    /// to every live copy, flush those disks, then call [`DrlOwner::finish_batch`]; an empty
    /// batch needs no I/O. Until then no other owner step (another batch, a clear commit,
    /// [`DrlOwner::reset_m`]) may run: they change the promise the batch is about to keep. Pages with cleared bits ride in the same batch (this changes the
    /// design, which wrote clears without a flush: it costs one flush per clear pass and needs
    /// no second kind of batch).
    ///
    /// # Panics
    /// If `buf` does not hold the batch's pages at `layout`, or a page is shorter than
    /// [`Geometry::bitmap_bytes`].
    #[must_use = "a batch must be finished (DrlOwner::finish_batch), or its pages are never retried"]
    pub fn take_batch(&mut self, buf: &mut [u8], layout: PageLayout) -> Option<Batch> {
        let drl = &*self.drl;
        assert!(
            layout.page_bytes >= drl.geom.bitmap_bytes(),
            "page too short"
        );
        // The sequence first: a request numbered up to `seq` set its image bit and its page's
        // changed bit before its number, so the swaps and copies below see them.
        let seq = drl.req.load(SeqCst);
        self.open_batch(true);
        let d = self.take_span(Bitmap::Dirty, buf, layout.d_page0, layout.page_bytes);
        let m = self.take_span(Bitmap::Missed, buf, layout.m_page0, layout.page_bytes);
        if d.is_empty() && m.is_empty() && seq <= drl.durable.load(SeqCst) {
            self.open_batch(false);
            return None;
        }
        for (slot, span) in self.drl.owned.open_spans.iter().zip([d, m]) {
            slot.store(u64::from(span.first) << 32 | u64::from(span.end), Relaxed);
        }
        Some(Batch { seq, d, m })
    }

    /// Marks a batch open or finished; checks (in debug builds) that owner steps do not
    /// interleave with an open batch.
    fn open_batch(&self, open: bool) {
        let was = self.drl.owned.batch_open.swap(open, Relaxed);
        debug_assert_ne!(was, open, "DRL batches must not overlap");
    }

    fn assert_no_batch(&self) {
        debug_assert!(
            !self.drl.owned.batch_open.load(Relaxed),
            "a DRL owner step ran while a batch was open"
        );
    }

    /// Takes `map`'s changed pages: the span from the first to the last changed page, copied
    /// into `buf` and into `written`.
    fn take_span(&self, map: Bitmap, buf: &mut [u8], page0: usize, page_bytes: usize) -> PageSpan {
        let drl = &*self.drl;
        let m = map.index();
        let (mut first, mut end) = (u32::MAX, 0u32);
        for (i, c) in drl.changed[m].iter().enumerate() {
            let bits = c.swap(0, SeqCst);
            if bits != 0 {
                let lo = i as u32 * 64 + bits.trailing_zeros();
                let hi = i as u32 * 64 + 63 - bits.leading_zeros();
                first = first.min(lo);
                end = end.max(hi + 1);
            }
        }
        if first >= end {
            return PageSpan::default();
        }
        let wpp = drl.geom.words_per_page();
        for p in first..end {
            let at = (page0 + p as usize) * page_bytes;
            let page = &mut buf[at..at + drl.geom.bitmap_bytes()];
            let words = p as usize * wpp..(p as usize + 1) * wpp;
            for ((chunk, img), wr) in page
                .chunks_exact_mut(8)
                .zip(&drl.image[m][words.clone()])
                .zip(&self.drl.owned.written[m][words.clone()])
            {
                let v = img.load(SeqCst);
                wr.store(v, Relaxed);
                chunk.copy_from_slice(&v.to_le_bytes());
            }
        }
        PageSpan { first, end }
    }

    /// Finishes `batch`. `ok`: at least one copy wrote every page and flushed. Then every bit
    /// of its pages not promised before becomes durable, and the durable sequence moves to
    /// `batch.seq`, so the waiters look again. Not ok: nothing becomes durable and the pages
    /// are taken again by the next batch. Returns the bits that became durable.
    pub fn finish_batch(&mut self, batch: Batch, ok: bool) -> u32 {
        let drl = &*self.drl;
        self.open_batch(false);
        let mut newly = 0;
        for (map, span) in [(Bitmap::Dirty, batch.d), (Bitmap::Missed, batch.m)] {
            for p in span.first..span.end {
                if ok {
                    newly += self.grant_page(map, p);
                } else {
                    drl.mark_changed(map, p);
                }
            }
        }
        if ok {
            drl.durable.fetch_max(batch.seq, SeqCst);
        }
        newly
    }

    /// Makes durable every bit of `map`'s page `p` that the batch wrote and no earlier flushed
    /// batch did.
    fn grant_page(&self, map: Bitmap, p: u32) -> u32 {
        let drl = &*self.drl;
        let m = map.index();
        let wpp = drl.geom.words_per_page();
        let mut newly = 0;
        for k in p as usize * wpp..(p as usize + 1) * wpp {
            let written = drl.owned.written[m][k].load(Relaxed);
            let dur = &drl.owned.dur[m][k];
            let mut bits = written & !dur.load(Relaxed);
            dur.store(written, Relaxed);
            while bits != 0 {
                let r = k * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let word = &drl.words[r];
                word.fetch_or(map.dur(), SeqCst);
                word.fetch_and(!map.req(), SeqCst);
                newly += 1;
            }
        }
        newly
    }

    /// The first half of a clear pass, when it is due at `now` (else 0): arms every region
    /// below [`Drl::pin_from`] whose D bit is durable, with no write in flight and none since
    /// the previous pass, and (while tracking) its M bit durable. Returns the regions armed.
    /// If any: flush the data disks (the writes a guest flush would), then
    /// [`DrlOwner::commit_clears`], or [`DrlOwner::disarm`] if the flush failed. Keep the token
    /// from here to the commit: another pass's arming must not ride on this pass's flush.
    pub fn arm_quiet(&mut self, now: u64) -> u32 {
        let drl = &*self.drl;
        if now < drl.next_clear_at() {
            return 0;
        }
        let interval = drl.clear_interval.load(Relaxed);
        drl.next_clear_at
            .store(now.saturating_add(interval), Relaxed);
        if drl.dirty() == 0 {
            return 0;
        }
        self.arm(true)
    }

    /// As [`DrlOwner::arm_quiet`], but now and for every idle region, quiet or not (a clean
    /// stop empties D this way).
    pub fn arm_idle(&mut self) -> u32 {
        self.arm(false)
    }

    fn arm(&self, quiet_only: bool) -> u32 {
        let drl = &*self.drl;
        let pin = drl.pin_from();
        let tracking = drl.is_tracking();
        let (mut lo, mut hi, mut armed) = (u32::MAX, 0u32, 0u32);
        for r in 0..drl.geom.regions {
            let word = &drl.words[r as usize];
            let w = word.load(SeqCst);
            let tick = (w >> TICK_SHIFT) as u8;
            let quiet = drl.owned.snap[r as usize].swap(tick, Relaxed) == tick;
            let idle = w & (COUNT | D_REQ | ARMED) == 0 && w & D_DUR != 0;
            let m_ok = !tracking || w & M_DUR != 0;
            if !idle || !m_ok || (quiet_only && !quiet) || u64::from(r) >= pin {
                continue;
            }
            if word.compare_exchange(w, w | ARMED, SeqCst, SeqCst).is_ok() {
                lo = lo.min(r);
                hi = r + 1;
                armed += 1;
            }
        }
        if armed > 0 {
            self.drl.owned.armed_lo.store(lo, Relaxed);
            self.drl.owned.armed_hi.store(hi, Relaxed);
        }
        armed
    }

    /// Gives up an armed pass (its data flush failed): clears nothing.
    pub fn disarm(&mut self) {
        let drl = &*self.drl;
        for r in self.armed_range() {
            drl.words[r as usize].fetch_and(!ARMED, SeqCst);
        }
    }

    fn armed_range(&self) -> std::ops::Range<u32> {
        let owned = &self.drl.owned;
        let lo = owned.armed_lo.swap(0, Relaxed);
        let hi = owned.armed_hi.swap(0, Relaxed);
        lo..hi
    }

    /// The second half of a clear pass, after the data flush that followed
    /// [`DrlOwner::arm_quiet`] succeeded: clears the D bit of every region still armed (no
    /// writer entered since), still below [`Drl::pin_from`] and (while tracking) with its M bit
    /// durable. The pages with cleared bits go out with the next batch
    /// ([`Drl::batch_pending`] is then true). Returns the regions cleared.
    pub fn commit_clears(&mut self) -> u32 {
        self.assert_no_batch();
        let mut cleared = 0;
        for r in self.armed_range() {
            if self.try_clear(r) && self.settle_clear(r) {
                cleared += 1;
            }
        }
        cleared
    }

    /// Clears region `r`'s D bit in its word if it is still armed and may be cleared.
    fn try_clear(&self, r: u32) -> bool {
        let drl = &*self.drl;
        let word = &drl.words[r as usize];
        let mut w = word.load(SeqCst);
        loop {
            if w & ARMED == 0 {
                return false; // a writer entered since the arming
            }
            let may = w & (COUNT | D_REQ) == 0
                && w & D_DUR != 0
                && u64::from(r) < drl.pin_from()
                && (!drl.is_tracking() || w & M_DUR != 0);
            if !may {
                word.fetch_and(!ARMED, SeqCst);
                return false;
            }
            match word.compare_exchange(w, w & !(D_DUR | ARMED), SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }

    /// After [`DrlOwner::try_clear`] took `r`'s D_DUR away: takes the bit out of the image and
    /// of the promise, then looks again. A writer that entered meanwhile may have requested
    /// the bit (its image store may have come before ours), a copy may have pinned the region
    /// or tracking may have started without the M bit: then the bit is given back, which is
    /// safe because the page write that would clear it on disk is built after this, by this
    /// owner. True if the bit stays cleared.
    fn settle_clear(&self, r: u32) -> bool {
        let drl = &*self.drl;
        let (k, bit) = bit_of(r);
        let word = &drl.words[r as usize];
        drl.image[0][k].fetch_and(!bit, SeqCst);
        drl.owned.dur[0][k].fetch_and(!bit, Relaxed);
        let w = word.load(SeqCst);
        let raced = w & (COUNT | D_REQ) != 0
            || u64::from(r) >= drl.pin_from()
            || (drl.is_tracking() && w & M_DUR == 0);
        if !raced {
            drl.dirty.fetch_sub(1, Relaxed);
            drl.mark_changed(Bitmap::Dirty, r / drl.geom.bits_per_page);
            return true;
        }
        drl.image[0][k].fetch_or(bit, SeqCst);
        drl.owned.dur[0][k].fetch_or(bit, Relaxed);
        let old = word.fetch_update(SeqCst, SeqCst, |cur| Some((cur | D_DUR) & !D_REQ));
        // A writer's request counted the region once more: that count is now this one.
        if old.is_ok_and(|cur| cur & D_REQ != 0) {
            drl.dirty.fetch_sub(1, Relaxed);
        }
        false
    }

    /// Stops tracking M and forgets it (no plex is missing any more; the manager then moves
    /// the M epoch so the M pages on disk read as zero). A writer that raced with this may
    /// leave an M bit (extra, never missing) or a bare M request behind; the next
    /// [`Drl::start_tracking`] requests the latter again.
    pub fn reset_m(&mut self) {
        self.assert_no_batch();
        let drl = &*self.drl;
        drl.tracking.store(false, SeqCst);
        for word in drl.words.iter() {
            word.fetch_and(!(M_DUR | M_REQ), SeqCst);
        }
        let m = Bitmap::Missed.index();
        for (img, dur) in drl.image[m].iter().zip(drl.owned.dur[m].iter()) {
            img.store(0, SeqCst);
            dur.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
#[path = "regions_tests.rs"]
mod tests;
