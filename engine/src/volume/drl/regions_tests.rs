//! Tests of the region log state: the state machine of one region step by step, the races the
//! protocol closes (each forced in a fixed order), and a stress test that checks the crash
//! invariant against a fake disk at every step while writers, an owner and a clearer run.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// Bits per page in these tests: small, so a few hundred regions span several pages.
const BPP: u32 = 128;
/// Bytes of a trailer after each page's bitmap (left alone by `take_batch`).
const TRAILER: usize = 32;

fn geom(regions: u32, bits_per_page: u32) -> Geometry {
    Geometry {
        regions,
        bits_per_page,
    }
}

/// A log of `regions` regions, unpinned, clear interval 10.
fn log(regions: u32) -> Arc<Drl> {
    let drl = Drl::new(geom(regions, BPP), 10).expect("geometry");
    drl.unpin();
    Arc::new(drl)
}

fn layout(g: Geometry) -> PageLayout {
    PageLayout {
        page_bytes: g.bitmap_bytes() + TRAILER,
        d_page0: 1,
        m_page0: 1 + g.pages() as usize,
    }
}

/// A map copy's buffer: header, D pages, M pages; filled with 0xAA to see what is written.
fn buffer(g: Geometry) -> Vec<u8> {
    vec![0xAA; (1 + 2 * g.pages() as usize) * layout(g).page_bytes]
}

fn buf_bit(g: Geometry, buf: &[u8], map: Bitmap, r: u32) -> bool {
    let l = layout(g);
    let page0 = match map {
        Bitmap::Dirty => l.d_page0,
        Bitmap::Missed => l.m_page0,
    };
    let at = (page0 + (r / g.bits_per_page) as usize) * l.page_bytes;
    let i = (r % g.bits_per_page) as usize;
    buf[at + i / 8] & (1 << (i % 8)) != 0
}

/// Takes a batch and finishes it as written and flushed; returns it with the buffer.
fn flush_batch(drl: &Arc<Drl>) -> Option<(Batch, Vec<u8>)> {
    let g = drl.geometry();
    let mut owner = drl.try_own().expect("token free");
    let mut buf = buffer(g);
    let batch = owner.take_batch(&mut buf, layout(g))?;
    owner.finish_batch(batch, true);
    Some((batch, buf))
}

fn ticket(e: Entered) -> WaitTicket {
    match e {
        Entered::Wait(t) => t,
        Entered::Go => panic!("expected to wait"),
    }
}

/// Makes region `r` dirty and durable (a write, its batch, the write completing).
fn dirty(drl: &Arc<Drl>, r: u32) {
    let mut t = ticket(drl.enter(r, r));
    flush_batch(drl).expect("a batch");
    assert!(drl.poll_wait(r, r, &mut t));
    drl.leave(r, r);
}

/// One full clear pass at `now` with a successful data flush; returns (armed, cleared).
fn clear_pass(drl: &Arc<Drl>, now: u64) -> (u32, u32) {
    let mut owner = drl.try_own().expect("token free");
    let armed = owner.arm_quiet(now);
    (armed, owner.commit_clears())
}

fn word(drl: &Drl, r: u32) -> u32 {
    drl.words[r as usize].load(SeqCst)
}

#[test]
fn first_write_waits_for_one_shared_batch_then_writes_go_straight_through() {
    let drl = log(300);
    let g = drl.geometry();
    let mut a = ticket(drl.enter(130, 130));
    let mut b = ticket(drl.enter(130, 130));
    assert_eq!(
        drl.requested_seq(),
        1,
        "the second writer shares the first one's request"
    );
    assert!(!drl.poll_wait(130, 130, &mut a));

    let mut owner = drl.try_own().expect("token");
    let mut buf = buffer(g);
    let batch = owner.take_batch(&mut buf, layout(g)).expect("a batch");
    assert_eq!(batch.d, PageSpan { first: 1, end: 2 });
    assert!(batch.m.is_empty());
    assert_eq!(batch.seq, 1);
    assert!(buf_bit(g, &buf, Bitmap::Dirty, 130));
    assert!(!buf_bit(g, &buf, Bitmap::Dirty, 131));
    let l = layout(g);
    let trailer = (l.d_page0 + 1) * l.page_bytes + g.bitmap_bytes();
    assert_eq!(
        &buf[trailer..trailer + TRAILER],
        &[0xAA; TRAILER],
        "trailer untouched"
    );
    assert!(
        buf[..l.page_bytes].iter().all(|&b| b == 0xAA),
        "header untouched"
    );

    assert!(
        !drl.poll_wait(130, 130, &mut a),
        "not durable before the batch is finished"
    );
    assert_eq!(owner.finish_batch(batch, true), 1);
    drop(owner);
    assert_eq!(drl.durable_seq(), 1);
    assert!(drl.poll_wait(130, 130, &mut a));
    assert!(drl.poll_wait(130, 130, &mut b));

    assert_eq!(drl.enter(130, 130), Entered::Go);
    assert!(!drl.batch_pending());
    assert!(flush_batch(&drl).is_none());
    for _ in 0..3 {
        drl.leave(130, 130);
    }
    assert_eq!(drl.dirty(), 1);
    assert_eq!(word(&drl, 130) & (COUNT | D_REQ), 0);
}

#[test]
fn a_failed_batch_grants_nothing_and_its_pages_are_taken_again() {
    let drl = log(300);
    let g = drl.geometry();
    let mut t = ticket(drl.enter(7, 7));
    let mut owner = drl.try_own().expect("token");
    let mut buf = buffer(g);
    let batch = owner.take_batch(&mut buf, layout(g)).expect("a batch");
    assert_eq!(owner.finish_batch(batch, false), 0);
    assert!(!drl.poll_wait(7, 7, &mut t));
    assert_eq!(drl.durable_seq(), 0);
    assert!(drl.batch_pending());

    let retry = owner.take_batch(&mut buf, layout(g)).expect("retried");
    assert_eq!(retry.d, batch.d);
    assert!(buf_bit(g, &buf, Bitmap::Dirty, 7));
    assert_eq!(owner.finish_batch(retry, true), 1);
    assert!(drl.poll_wait(7, 7, &mut t));
    drl.leave(7, 7);
}

#[test]
fn an_owner_dropped_with_a_batch_in_flight_gives_its_pages_back() {
    let drl = log(300);
    let g = drl.geometry();
    let mut t = ticket(drl.enter(200, 200));
    let mut owner = drl.try_own().expect("token");
    let mut buf = buffer(g);
    let _abandoned = owner.take_batch(&mut buf, layout(g)).expect("a batch");
    drop(owner);
    assert!(drl.batch_pending());
    let (batch, buf) = flush_batch(&drl).expect("taken again");
    assert_eq!(batch.d, PageSpan { first: 1, end: 2 });
    assert!(buf_bit(g, &buf, Bitmap::Dirty, 200));
    assert!(drl.poll_wait(200, 200, &mut t));
    drl.leave(200, 200);
}

#[test]
fn a_write_over_several_regions_waits_until_every_one_is_durable() {
    let drl = log(300);
    dirty(&drl, 127);
    // 127 is durable, 128 (the next page) is not.
    let mut t = ticket(drl.enter(127, 129));
    let (batch, buf) = flush_batch(&drl).expect("a batch");
    assert_eq!(batch.d, PageSpan { first: 1, end: 2 });
    let g = drl.geometry();
    assert!(buf_bit(g, &buf, Bitmap::Dirty, 128) && buf_bit(g, &buf, Bitmap::Dirty, 129));
    assert!(drl.poll_wait(127, 129, &mut t));
    assert_eq!(drl.enter(127, 129), Entered::Go);
    drl.leave(127, 129);
    drl.leave(127, 129);
    assert_eq!(drl.dirty(), 3);
}

#[test]
fn a_quiet_region_is_cleared_after_a_whole_interval_and_dirtied_again() {
    let drl = log(300);
    dirty(&drl, 42);
    assert_eq!(
        clear_pass(&drl, 0),
        (0, 0),
        "written since the last pass: not quiet"
    );
    assert_eq!(clear_pass(&drl, 5), (0, 0), "not due before the interval");
    assert!(drl.clear_due(10));
    assert_eq!(clear_pass(&drl, 10), (1, 1));
    assert_eq!(drl.dirty(), 0);
    assert!(!drl.is_set(Bitmap::Dirty, 42));
    assert!(!drl.clear_due(100), "nothing dirty: no pass due");

    let (batch, buf) = flush_batch(&drl).expect("the cleared page goes out");
    assert_eq!(batch.d, PageSpan { first: 0, end: 1 });
    assert!(!buf_bit(drl.geometry(), &buf, Bitmap::Dirty, 42));
    assert_eq!(word(&drl, 42) & !(0xFF << TICK_SHIFT), 0, "clean again");

    let mut t = ticket(drl.enter(42, 42));
    let (_, buf) = flush_batch(&drl).expect("set again");
    assert!(buf_bit(drl.geometry(), &buf, Bitmap::Dirty, 42));
    assert!(drl.poll_wait(42, 42, &mut t));
    drl.leave(42, 42);
}

#[test]
fn a_write_during_arming_defeats_the_clear() {
    let drl = log(300);
    dirty(&drl, 3);
    dirty(&drl, 4);
    clear_pass(&drl, 0);
    let mut owner = drl.try_own().expect("token");
    assert_eq!(owner.arm_quiet(10), 2);
    // Region 3: a write comes and goes during the data flush; region 4: one is still in
    // flight at the commit. Both go straight through (their bits are still durable).
    assert_eq!(drl.enter(3, 3), Entered::Go);
    drl.leave(3, 3);
    assert_eq!(drl.enter(4, 4), Entered::Go);
    assert_eq!(owner.commit_clears(), 0);
    assert_eq!(drl.dirty(), 2);
    assert!(drl.is_set(Bitmap::Dirty, 3) && drl.is_set(Bitmap::Dirty, 4));
    assert_eq!(word(&drl, 3) & ARMED, 0);
    assert_eq!(word(&drl, 4) & ARMED, 0);
    drl.leave(4, 4);
    assert_eq!(owner.arm_quiet(20), 0, "both written since the last pass");
    assert_eq!(owner.arm_quiet(30), 2);
    assert_eq!(owner.commit_clears(), 2);
}

#[test]
fn a_failed_data_flush_disarms_and_clears_nothing() {
    let drl = log(300);
    dirty(&drl, 9);
    clear_pass(&drl, 0);
    let mut owner = drl.try_own().expect("token");
    assert_eq!(owner.arm_quiet(10), 1);
    owner.disarm();
    assert_eq!(word(&drl, 9) & ARMED, 0);
    assert_eq!(owner.commit_clears(), 0);
    assert_eq!(drl.dirty(), 1);
}

#[test]
fn a_writer_racing_the_commit_gets_the_bit_given_back() {
    let drl = log(300);
    let g = drl.geometry();
    dirty(&drl, 5);
    clear_pass(&drl, 0);
    let mut owner = drl.try_own().expect("token");
    assert_eq!(owner.arm_quiet(10), 1);
    assert!(owner.try_clear(5));
    // The writer enters between the word's CAS and the image update: it requests the bit.
    let mut t = ticket(drl.enter(5, 5));
    assert!(!owner.settle_clear(5), "the clear is given up");
    assert!(drl.is_set(Bitmap::Dirty, 5), "the image keeps the bit");
    assert_eq!(
        word(&drl, 5) & (D_DUR | D_REQ),
        D_DUR,
        "durable again (still on disk)"
    );
    assert_eq!(drl.dirty(), 1);
    // Its request still took a number: the next batch publishes it and the writer goes.
    let mut buf = buffer(g);
    let batch = owner.take_batch(&mut buf, layout(g)).expect("a batch");
    assert!(buf_bit(g, &buf, Bitmap::Dirty, 5));
    assert_eq!(
        owner.finish_batch(batch, true),
        0,
        "promised before: nothing new"
    );
    assert!(drl.poll_wait(5, 5, &mut t));
    drl.leave(5, 5);
}

#[test]
fn a_writer_entering_right_after_the_commit_requests_a_new_bit() {
    let drl = log(300);
    dirty(&drl, 5);
    clear_pass(&drl, 0);
    assert_eq!(clear_pass(&drl, 10), (1, 1));
    let mut t = ticket(drl.enter(5, 5));
    assert_eq!(drl.dirty(), 1);
    let (batch, buf) = flush_batch(&drl).expect("a batch");
    assert_eq!(batch.d, PageSpan { first: 0, end: 1 });
    assert!(buf_bit(drl.geometry(), &buf, Bitmap::Dirty, 5));
    assert!(drl.poll_wait(5, 5, &mut t));
    drl.leave(5, 5);
}

#[test]
fn no_region_at_or_above_pin_from_is_cleared() {
    let drl = Arc::new(Drl::new(geom(300, BPP), 10).expect("geometry"));
    assert_eq!(
        drl.pin_from(),
        0,
        "a new log is pinned until told otherwise"
    );
    for r in [3, 12, 200] {
        dirty(&drl, r);
    }
    clear_pass(&drl, 0);
    assert_eq!(clear_pass(&drl, 10), (0, 0));

    drl.set_pin_from(12);
    assert_eq!(clear_pass(&drl, 20), (1, 1), "only region 3");
    assert!(drl.is_set(Bitmap::Dirty, 12) && drl.is_set(Bitmap::Dirty, 200));

    // Pinned between the arming and the commit.
    drl.unpin();
    let mut owner = drl.try_own().expect("token");
    assert_eq!(owner.arm_quiet(30), 2);
    drl.set_pin_from(13);
    assert_eq!(owner.commit_clears(), 1, "12 clears, 200 is pinned now");
    assert!(drl.is_set(Bitmap::Dirty, 200));

    // Pinned between the word's CAS and the image update: the bit comes back.
    drl.unpin();
    assert_eq!(owner.arm_quiet(40), 1);
    assert!(owner.try_clear(200));
    drl.set_pin_from(100);
    assert!(!owner.settle_clear(200));
    assert!(drl.is_set(Bitmap::Dirty, 200));
    assert_eq!(word(&drl, 200) & D_DUR, D_DUR);
    assert_eq!(drl.dirty(), 1);
}

#[test]
fn loaded_bits_are_durable_and_stay_pinned_until_released() {
    let mut drl = Drl::new(geom(300, BPP), 10).expect("geometry");
    drl.load(Bitmap::Dirty, [1, 5, 5, 299, 300, 4000]);
    drl.load(Bitmap::Missed, [5]);
    let drl = Arc::new(drl);
    assert_eq!(
        drl.dirty(),
        3,
        "out-of-range regions are ignored, duplicates counted once"
    );
    for now in [0, 10, 20] {
        assert_eq!(clear_pass(&drl, now), (0, 0));
    }
    assert_eq!(drl.enter(5, 5), Entered::Go);
    drl.leave(5, 5);
    assert!(
        flush_batch(&drl).is_none(),
        "loaded bits are on disk already"
    );
    drl.unpin();
    assert_eq!(
        clear_pass(&drl, 30).1,
        2,
        "1 and 299 (5 was written since the last pass)"
    );
    assert_eq!(clear_pass(&drl, 40).1, 1);
    assert!(
        drl.is_set(Bitmap::Missed, 5),
        "M is never cleared by a clear pass"
    );
}

#[test]
fn tracking_keeps_m_and_holds_d_until_m_is_durable() {
    let drl = log(300);
    let g = drl.geometry();
    dirty(&drl, 1);
    // A write in flight when tracking starts (its D bit durable, it needed no M).
    dirty(&drl, 150);
    assert_eq!(drl.enter(150, 150), Entered::Go);
    assert_eq!(drl.start_tracking(), 2);
    assert!(drl.is_tracking());
    assert!(
        drl.batch_pending(),
        "the seeded bits take a sequence number"
    );
    drl.leave(150, 150);
    clear_pass(&drl, 0);
    assert_eq!(clear_pass(&drl, 10), (0, 0), "M not durable: D stays");

    let (batch, buf) = flush_batch(&drl).expect("the M batch");
    assert!(batch.d.is_empty());
    assert_eq!(batch.m, PageSpan { first: 0, end: 2 });
    assert!(buf_bit(g, &buf, Bitmap::Missed, 1) && buf_bit(g, &buf, Bitmap::Missed, 150));

    // A new write while tracking needs both bits.
    let mut t = ticket(drl.enter(2, 2));
    let (batch, buf) = flush_batch(&drl).expect("a batch");
    assert!(!batch.d.is_empty() && !batch.m.is_empty());
    assert!(buf_bit(g, &buf, Bitmap::Dirty, 2) && buf_bit(g, &buf, Bitmap::Missed, 2));
    assert!(drl.poll_wait(2, 2, &mut t));
    drl.leave(2, 2);

    // Now D may clear (1 and 150 were quiet already, 2 one pass later); M keeps them all.
    assert_eq!(clear_pass(&drl, 20), (2, 2));
    assert_eq!(clear_pass(&drl, 30), (1, 1));
    assert_eq!(drl.dirty(), 0);
    assert_eq!(drl.count(Bitmap::Missed), 3);
    // A write to a region whose M bit is durable only waits for D.
    let mut t = ticket(drl.enter(1, 1));
    let (batch, _) = flush_batch(&drl).expect("a batch");
    assert!(batch.m.is_empty());
    assert!(drl.poll_wait(1, 1, &mut t));
    drl.leave(1, 1);

    let mut owner = drl.try_own().expect("token");
    owner.reset_m();
    drop(owner);
    assert!(!drl.is_tracking());
    assert_eq!(drl.count(Bitmap::Missed), 0);
    assert_eq!(drl.enter(1, 1), Entered::Go, "D alone is enough again");
    drl.leave(1, 1);
    assert!(flush_batch(&drl).is_none());
}

#[test]
fn tracking_started_during_a_commit_keeps_the_d_bit() {
    let drl = log(300);
    dirty(&drl, 8);
    clear_pass(&drl, 0);
    let mut owner = drl.try_own().expect("token");
    assert_eq!(owner.arm_quiet(10), 1);
    assert!(owner.try_clear(8));
    // Tracking starts between the CAS and the image update: the word has no D_DUR and no
    // writer, so 8 is not put into M; then the clear must not go on.
    assert_eq!(drl.start_tracking(), 0);
    assert!(!owner.settle_clear(8));
    assert!(drl.is_set(Bitmap::Dirty, 8));
    assert_eq!(drl.dirty(), 1);
    // Tracking started before the commit: the armed region stays.
    owner.reset_m();
    assert_eq!(owner.arm_quiet(20), 1);
    assert_eq!(drl.start_tracking(), 1);
    assert_eq!(owner.commit_clears(), 0);
}

#[test]
fn an_m_request_left_by_a_writer_racing_reset_m_does_not_block_later_writers() {
    let drl = log(300);
    // The racing writer read `tracking` before the reset, set M_REQ after the reset cleared
    // the words, and its image bit was wiped with the image.
    drl.words[20].fetch_or(M_REQ, SeqCst);
    assert_eq!(drl.start_tracking(), 1);
    let mut t = ticket(drl.enter(20, 20));
    flush_batch(&drl).expect("a batch");
    assert!(
        drl.poll_wait(20, 20, &mut t),
        "the M bit was requested again"
    );
    drl.leave(20, 20);
    assert!(drl.is_set(Bitmap::Missed, 20));
}

#[test]
fn arm_idle_empties_d_except_pinned_and_busy_regions() {
    let drl = log(300);
    for r in [1, 2, 250] {
        dirty(&drl, r);
    }
    assert_eq!(drl.enter(2, 2), Entered::Go);
    drl.set_pin_from(200);
    let mut owner = drl.try_own().expect("token");
    assert_eq!(owner.arm_idle(), 1);
    assert_eq!(owner.commit_clears(), 1);
    drl.leave(2, 2);
    drl.unpin();
    assert_eq!(owner.arm_idle(), 2);
    assert_eq!(owner.commit_clears(), 2);
    assert_eq!(drl.dirty(), 0);
    assert_eq!(drl.count(Bitmap::Dirty), 0);
}

#[test]
fn the_token_has_one_holder() {
    let drl = log(10);
    let owner = drl.try_own().expect("token");
    assert!(drl.try_own().is_none());
    drop(owner);
    assert!(drl.try_own().is_some());
}

#[test]
fn copy_image_gives_regions_in_order() {
    let drl = log(300);
    for r in [0, 64, 129, 299] {
        dirty(&drl, r);
    }
    let mut out = vec![0u64; drl.image_words()];
    drl.copy_image(Bitmap::Dirty, &mut out);
    let set: Vec<u32> = (0..300)
        .filter(|&r| out[(r / 64) as usize] & (1 << (r % 64)) != 0)
        .collect();
    assert_eq!(set, [0, 64, 129, 299]);
    assert_eq!(drl.count(Bitmap::Dirty), 4);
}

#[test]
fn a_bad_geometry_is_refused() {
    assert_eq!(
        Drl::new(geom(0, 64), 1).err(),
        Some(GeometryError::NoRegions)
    );
    let e = Drl::new(geom(10, 100), 1).err().expect("refused");
    assert_eq!(e, GeometryError::BitsPerPage(100));
    assert!(e.to_string().contains("multiple of 64"));
    assert!(Drl::new(geom(10, 0), 1).is_err());
    assert_eq!(geom(32_512 * 3 + 1, 32_512).pages(), 4);
}

// ---- stress ------------------------------------------------------------------------------

/// xorshift64*: a small deterministic generator per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The fake world: data writes, data flushes and one log copy on a disk with a volatile
/// cache. Every change to it happens under its mutex, and the crash invariant is checked
/// after each one, so every state a crash could hit is checked.
struct World {
    /// Data writes issued and not completed, per region.
    in_flight: Vec<u32>,
    /// The data epoch in which the region's last write completed.
    done_epoch: Vec<u64>,
    /// Completions in this epoch are not flushed yet.
    data_epoch: u64,
    /// Completions up to this epoch are flushed.
    flushed_upto: u64,
    /// Tracking (a plex is missing) as the manager knows it.
    tracking: bool,
    /// Regions written since tracking started (or in flight then).
    tracked: Vec<bool>,
    /// Regions left dirty by an earlier crash that the resync has not passed yet.
    leftover: Vec<bool>,
    /// The resync's progress: regions below it are resynced.
    progress: u64,
    /// The log copy: per bitmap, what was written (cache) and what was flushed.
    cache: [Vec<u64>; 2],
    durable: [Vec<u64>; 2],
    stats: Stats,
}

#[derive(Default, Debug)]
struct Stats {
    waits: u64,
    writes: u64,
    batches: u64,
    failed_batches: u64,
    armed: u64,
    cleared: u64,
    tracking_starts: u64,
}

fn get(bits: &[u64], r: usize) -> bool {
    bits[r / 64] & (1 << (r % 64)) != 0
}

impl World {
    fn new(regions: usize, image_words: usize) -> World {
        World {
            in_flight: vec![0; regions],
            done_epoch: vec![0; regions],
            data_epoch: 1,
            flushed_upto: 0,
            tracking: false,
            tracked: vec![false; regions],
            leftover: vec![false; regions],
            progress: 0,
            cache: [vec![0; image_words], vec![0; image_words]],
            durable: [vec![0; image_words], vec![0; image_words]],
            stats: Stats::default(),
        }
    }

    /// The crash invariant for region `r`, whichever page versions (flushed or only written)
    /// a crash leaves.
    fn check(&self, r: usize, when: &str) {
        let (dd, cd) = (get(&self.durable[0], r), get(&self.cache[0], r));
        let (dm, cm) = (get(&self.durable[1], r), get(&self.cache[1], r));
        let unflushed = self.in_flight[r] > 0 || self.done_epoch[r] > self.flushed_upto;
        let unsynced = self.leftover[r] && r as u64 >= self.progress;
        if unflushed || unsynced {
            assert!(
                dd && cd,
                "{when}: region {r} (in flight {}, done in epoch {}, flushed up to {}, \
                 leftover {unsynced}) lacks its D bit (flushed {dd}, written {cd})",
                self.in_flight[r],
                self.done_epoch[r],
                self.flushed_upto
            );
        }
        // Whichever version of each page a crash leaves: in D on both, or in M on both.
        if self.tracked[r] {
            assert!(
                (dd && cd) || (dm && cm),
                "{when}: region {r} written while tracking is in neither D nor M \
                 (D {dd}/{cd}, M {dm}/{cm})"
            );
        }
    }

    fn check_all(&self, when: &str) {
        for r in 0..self.in_flight.len() {
            self.check(r, when);
        }
    }
}

struct Rig {
    drl: Arc<Drl>,
    world: Mutex<World>,
    /// Stops the writers, the tracker and the copier.
    stop: AtomicBool,
    /// Stops the owner and the clearer, once no writer waits on them any more.
    stop_owner: AtomicBool,
}

impl Rig {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().expect("a test thread panicked")
    }

    /// The owner's set batch: take, write the pages to the cache, flush (or fail).
    fn batch(&self, owner: &mut DrlOwner, buf: &mut [u8], rng: &mut Rng) {
        let g = self.drl.geometry();
        let l = layout(g);
        let Some(batch) = owner.take_batch(buf, l) else {
            return;
        };
        let wpp = g.words_per_page();
        let fail = rng.below(8) == 0;
        {
            let mut w = self.world();
            for (m, span, page0) in [(0, batch.d, l.d_page0), (1, batch.m, l.m_page0)] {
                for p in span.first..span.end {
                    let at = (page0 + p as usize) * l.page_bytes;
                    for k in 0..wpp {
                        let bytes = &buf[at + 8 * k..at + 8 * k + 8];
                        w.cache[m][p as usize * wpp + k] =
                            u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
                    }
                }
            }
            w.check_all("page write");
        }
        thread::yield_now();
        let mut w = self.world();
        if fail {
            w.stats.failed_batches += 1;
            drop(w);
            owner.finish_batch(batch, false);
            return;
        }
        w.durable = w.cache.clone();
        w.check_all("log flush");
        w.stats.batches += 1;
        drop(w);
        owner.finish_batch(batch, true);
    }

    fn writer(&self, seed: u64) {
        let regions = u64::from(self.drl.geometry().regions);
        let mut rng = Rng(seed);
        while !self.stop.load(SeqCst) {
            // Half the writes go to a few hot regions.
            let first = if rng.below(2) == 0 {
                rng.below(8) * 29 % regions
            } else {
                rng.below(regions)
            } as u32;
            let last = (first + rng.below(3) as u32).min(regions as u32 - 1);
            if let Entered::Wait(mut t) = self.drl.enter(first, last) {
                self.world().stats.waits += 1;
                let since = Instant::now();
                while !self.drl.poll_wait(first, last, &mut t) {
                    if since.elapsed() > Duration::from_secs(20) {
                        let d = &self.drl;
                        let words: Vec<String> = (first..=last)
                            .map(|r| {
                                format!(
                                    "{r}: word {:#010x} D {} M {}",
                                    word(d, r),
                                    d.is_set(Bitmap::Dirty, r),
                                    d.is_set(Bitmap::Missed, r)
                                )
                            })
                            .collect();
                        panic!(
                            "writer stuck: {t:?}, req {} durable {} pending {} tracking {}; {}",
                            d.requested_seq(),
                            d.durable_seq(),
                            d.batch_pending(),
                            d.is_tracking(),
                            words.join(", ")
                        );
                    }
                    thread::yield_now();
                }
            }
            {
                let mut w = self.world();
                for r in first..=last {
                    let r = r as usize;
                    w.in_flight[r] += 1;
                    if w.tracking {
                        w.tracked[r] = true;
                    }
                    w.check(r, "write issued");
                }
                w.stats.writes += 1;
            }
            if rng.below(4) == 0 {
                thread::sleep(Duration::from_micros(50));
            }
            {
                let mut w = self.world();
                let epoch = w.data_epoch;
                for r in first..=last {
                    w.in_flight[r as usize] -= 1;
                    w.done_epoch[r as usize] = epoch;
                }
            }
            self.drl.leave(first, last);
        }
    }

    fn owner(&self, seed: u64) {
        let mut rng = Rng(seed);
        let mut buf = buffer(self.drl.geometry());
        while !self.stop_owner.load(SeqCst) {
            if self.drl.batch_pending() {
                if let Some(mut owner) = self.drl.try_own() {
                    self.batch(&mut owner, &mut buf, &mut rng);
                }
            }
            thread::yield_now();
        }
    }

    /// One clear pass at `now`: arm, flush the data, commit, write the cleared pages.
    fn clear_pass(&self, owner: &mut DrlOwner, now: u64, buf: &mut [u8], rng: &mut Rng) {
        let armed = owner.arm_quiet(now);
        if armed == 0 {
            return;
        }
        self.world().stats.armed += u64::from(armed);
        // The data flush is slow: writers come meanwhile.
        thread::sleep(Duration::from_micros(rng.below(200)));
        if rng.below(10) == 0 {
            owner.disarm();
            return;
        }
        {
            let mut w = self.world();
            w.flushed_upto = w.data_epoch;
            w.data_epoch += 1;
        }
        // Writes also come between the flush and the commit.
        thread::sleep(Duration::from_micros(rng.below(100)));
        let cleared = owner.commit_clears();
        self.world().stats.cleared += u64::from(cleared);
        self.batch(owner, buf, rng);
    }

    fn clearer(&self, seed: u64) {
        let mut rng = Rng(seed);
        let mut buf = buffer(self.drl.geometry());
        let mut now = 0;
        while !self.stop_owner.load(SeqCst) {
            thread::sleep(Duration::from_micros(300));
            if let Some(mut owner) = self.drl.try_own() {
                now += 1;
                self.clear_pass(&mut owner, now, &mut buf, &mut rng);
            }
        }
    }

    /// Starts and stops tracking M (a plex leaves and comes back).
    fn tracker(&self) {
        while !self.stop.load(SeqCst) {
            thread::sleep(Duration::from_millis(40));
            let mut w = self.world();
            self.drl.start_tracking();
            w.tracking = true;
            for r in 0..w.in_flight.len() {
                if w.in_flight[r] > 0 {
                    w.tracked[r] = true;
                }
            }
            w.stats.tracking_starts += 1;
            drop(w);
            thread::sleep(Duration::from_millis(60));
            let mut owner = loop {
                if let Some(o) = self.drl.try_own() {
                    break o;
                }
                thread::yield_now();
            };
            let mut w = self.world();
            owner.reset_m();
            w.tracking = false;
            w.tracked.iter_mut().for_each(|t| *t = false);
        }
    }

    /// The crash resync of the leftover regions: moves its progress, then the pin.
    fn copier(&self) {
        let regions = u64::from(self.drl.geometry().regions);
        for r in 0..regions {
            if self.stop.load(SeqCst) {
                return;
            }
            thread::sleep(Duration::from_micros(2_000));
            self.world().progress = r + 1;
            self.drl.set_pin_from(r + 1);
        }
        self.drl.unpin();
    }
}

#[test]
fn stress_the_crash_invariant_holds_at_every_step() {
    // 3 pages of 64 regions (the last one partly used).
    let g = geom(160, 64);
    let mut drl = Drl::new(g, 1).expect("geometry");
    // An earlier crash left every 7th region dirty; the resync below works through them.
    let leftover: Vec<u32> = (0..g.regions).step_by(7).collect();
    drl.load(Bitmap::Dirty, leftover.iter().copied());
    let mut world = World::new(g.regions as usize, drl.image_words());
    for &r in &leftover {
        world.leftover[r as usize] = true;
        world.cache[0][(r / 64) as usize] |= 1 << (r % 64);
    }
    world.durable = world.cache.clone();
    world.check_all("start");
    let rig = Arc::new(Rig {
        drl: Arc::new(drl),
        world: Mutex::new(world),
        stop: AtomicBool::new(false),
        stop_owner: AtomicBool::new(false),
    });

    let mut threads = Vec::new();
    let mut services = Vec::new();
    for i in 0..3 {
        let rig = Arc::clone(&rig);
        threads.push(thread::spawn(move || rig.writer(0x9E37_79B9 + i)));
    }
    let spawn = |f: fn(&Rig)| {
        let rig = Arc::clone(&rig);
        thread::spawn(move || f(&rig))
    };
    services.push(spawn(|rig| rig.owner(7)));
    services.push(spawn(|rig| rig.clearer(11)));
    threads.push(spawn(Rig::tracker));
    threads.push(spawn(Rig::copier));
    thread::sleep(Duration::from_millis(2_500));
    rig.stop.store(true, SeqCst);
    for t in threads {
        t.join().expect("a stress thread failed");
    }
    rig.stop_owner.store(true, SeqCst);
    for t in services {
        t.join().expect("the owner or the clearer failed");
    }

    // Quiet: once tracking stops and nothing is pinned, clear passes empty D on disk.
    let drl = &rig.drl;
    let mut owner = drl.try_own().expect("token");
    owner.reset_m();
    drl.unpin();
    let mut buf = buffer(g);
    let mut rng = Rng(3);
    rig.world().progress = u64::from(g.regions);
    for now in 1_000_000..1_000_100 {
        while drl.batch_pending() {
            rig.batch(&mut owner, &mut buf, &mut rng);
        }
        if drl.dirty() == 0 {
            break;
        }
        rig.clear_pass(&mut owner, now, &mut buf, &mut rng);
    }
    while drl.batch_pending() {
        rig.batch(&mut owner, &mut buf, &mut rng);
    }
    let w = rig.world();
    eprintln!("drl stress: {:?}", w.stats);
    assert_eq!(drl.dirty(), 0);
    assert!(
        w.durable[0].iter().all(|&b| b == 0),
        "D on disk is empty when all is quiet"
    );
    assert!((0..g.regions).all(|r| word(drl, r) & (COUNT | D_REQ | M_REQ | ARMED) == 0));
    let s = &w.stats;
    assert!(s.writes > 1000 && s.waits > 0 && s.batches > 0 && s.failed_batches > 0);
    assert!(s.cleared > 0 && s.tracking_starts > 0);
}
