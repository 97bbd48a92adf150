//! RAID-5 volumes across a crash of the real daemon (failure scenarios 5 and 6): plexd is
//! killed with SIGKILL while a client has writes in flight to two RAID-5 volumes of 4 columns
//! (16 KiB stripe unit) on five file disks, `r5l` with a log plex and `r5n` without, then
//! started again on the same files.
//!
//! Before the kill each volume is filled with tagged data, then a writer thread per volume
//! keeps up to [`QD`] writes in flight over its own vhost-user-blk queue: 4 KiB writes at any
//! sector (read-modify-write, or reconstruct-write when they cross a unit boundary), aligned
//! full-stripe writes (48 KiB) and writes of 1 to 128 sectors anywhere (all three kinds,
//! crossing rows). In-flight writes never overlap each other. The writer records every write
//! plexd acknowledged and the ones still in flight when plexd died.
//!
//! Every sector the client writes is tagged: its first bytes are the write's id and the
//! sector's own number, the rest a stream derived from both, so a sector read back names the
//! write it came from. The rule checked after the restart, per 512-byte block: a block that
//! no in-flight write covered holds exactly the last acknowledged write to it; a block an
//! in-flight write covered holds either that (old) or the in-flight write's (new) data, whole.
//! SIGKILL keeps the kernel's page cache, so an acknowledged write is on the files without a
//! flush.
//!
//! - Scenario 5 (clean restart): both volumes come back started; `r5n` gets a
//!   `parity_resync` task (waited for), `r5l` none (its log was replayed); `volume_check` then
//!   finds no row whose parity disagrees with its data, and every block obeys the rule.
//! - Scenario 6 (restart with a column's disk missing): the disk (a column of both volumes,
//!   not the log) is left out of the bdev config. `r5l` replays its log and starts degraded
//!   (`vm_print` DEGRADED, the column's subdisk NDEV, the disk NODEVICE, one stale column),
//!   and every block obeys the rule, the missing column's blocks read reconstructed; those
//!   include the blocks of rows being written that the in-flight writes did not cover, where
//!   a torn row's stale parity would show (the write hole). `r5n` is not started at import;
//!   `volume_start` refuses (EINVAL, a message that says to force it) and `force` starts it
//!   degraded; every block obeys the rule except, possibly, blocks of the missing column in
//!   rows an in-flight write touched (the write hole a log closes; counted and printed).
//!
//! A SIGKILL tears a row only when plexd dies between submitting the row's column writes (the
//! kernel finishes the file writes it was given), so the hole rarely shows here even without
//! a log; `engine/src/volume/tests/raid5_log.rs` tears rows deterministically in-process.
//! `the_check_rejects_wrong_blocks` shows the rule catches stale, misplaced and garbled blocks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use plexd_tests::rig::{tasks_of, Rig, SECTOR};
use plexd_tests::vhost_client::{
    blk_header, Client, ClientOpts, Desc, GPA_BASE, RING_AREA, SCRATCH_AREA, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use plexd_tests::Plexd;
use serde_json::{json, Value};

const DISKS: [&str; 5] = ["d0", "d1", "d2", "d3", "d4"];
const DG: &str = "cdg";
const NCOL: u64 = 4;
/// The default RAID-5 stripe unit, 16 KiB, in sectors.
const SU: u64 = 32;
/// Data sectors per row (3 data units).
const ROW: u64 = SU * (NCOL - 1);
const ROWS: u64 = 64;
/// 3 MiB.
const VOL_SECTORS: u64 = ROW * ROWS;
/// Writes each writer keeps in flight.
const QD: usize = 4;
/// The longest random write, in sectors (64 KiB).
const MAX_WRITE: u64 = 128;
/// Random writes each writer has had acknowledged before the kill.
const ACKED_BEFORE_KILL: u64 = 150;

/// A volume of the test: name, number of log plexes, vhost controller, writer seed.
#[derive(Clone, Copy)]
struct Vol {
    name: &'static str,
    nlog: u32,
    ctrlr: &'static str,
    seed: u64,
}

const LOGGED: Vol = Vol {
    name: "r5l",
    nlog: 1,
    ctrlr: "vl",
    seed: 0x5eed_0001,
};
const UNLOGGED: Vol = Vol {
    name: "r5n",
    nlog: 0,
    ctrlr: "vn",
    seed: 0x5eed_0002,
};

// ---------------------------------------------------------------------------------------------
// Tagged data and the rule.

/// The 512 bytes write `id` puts in volume sector `lba`: id, lba, then a stream from both.
fn sector_data(id: u64, lba: u64) -> [u8; SECTOR as usize] {
    let mut out = [0u8; SECTOR as usize];
    out[0..8].copy_from_slice(&id.to_le_bytes());
    out[8..16].copy_from_slice(&lba.to_le_bytes());
    let mut x =
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ lba.wrapping_mul(0xD1B5_4A32_D192_ED03)) | 1;
    for w in out[16..].chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
    out
}

/// What write `id` puts in `n` sectors from `lba`.
fn write_data(id: u64, lba: u64, n: u64) -> Vec<u8> {
    (lba..lba + n).flat_map(|s| sector_data(id, s)).collect()
}

/// One write: id, first sector, length in sectors.
#[derive(Debug, Clone, Copy)]
struct Write {
    id: u64,
    sector: u64,
    n: u64,
}

impl Write {
    fn covers(&self, lba: u64) -> bool {
        (self.sector..self.sector + self.n).contains(&lba)
    }

    fn overlaps(&self, sector: u64, n: u64) -> bool {
        sector < self.sector + self.n && self.sector < sector + n
    }

    /// The rows it touches.
    fn rows(&self) -> std::ops::RangeInclusive<u64> {
        self.sector / ROW..=(self.sector + self.n - 1) / ROW
    }
}

/// What a writer knows when plexd died.
#[derive(Debug, Default)]
struct Outcome {
    /// Per sector, the id of the last acknowledged write to it.
    last: Vec<u64>,
    /// Writes submitted and not acknowledged when plexd died.
    inflight: Vec<Write>,
    /// Random writes acknowledged, by kind (small, full-stripe, any).
    acked: [u64; 3],
}

impl Outcome {
    /// The ids a sector may hold: the last acknowledged write's, or an in-flight write's.
    fn allowed(&self, lba: u64) -> Vec<u64> {
        let mut ids = vec![self.last[lba as usize]];
        ids.extend(self.inflight.iter().filter(|w| w.covers(lba)).map(|w| w.id));
        ids
    }

    /// The rows an in-flight write touches.
    fn inflight_rows(&self) -> BTreeSet<u64> {
        self.inflight.iter().flat_map(Write::rows).collect()
    }
}

/// A block that breaks the rule.
#[derive(Debug)]
struct Bad {
    lba: u64,
    allowed: Vec<u64>,
    found: String,
}

/// Says which write's data `got` (sector `lba`) is, or that it is no write's.
fn describe(got: &[u8], lba: u64) -> String {
    let id = u64::from_le_bytes(got[0..8].try_into().expect("8 bytes"));
    let at = u64::from_le_bytes(got[8..16].try_into().expect("8 bytes"));
    if at < VOL_SECTORS && got == sector_data(id, at).as_slice() {
        if at == lba {
            format!("write {id}'s data")
        } else {
            format!("write {id}'s data for sector {at}")
        }
    } else {
        format!("data of no write (starts {:02x?})", &got[..16])
    }
}

/// The blocks of `bytes` (volume sectors from `lba0`) that break the rule.
fn bad_blocks(o: &Outcome, lba0: u64, bytes: &[u8]) -> Vec<Bad> {
    let mut bad = Vec::new();
    for (i, got) in bytes.chunks_exact(SECTOR as usize).enumerate() {
        let lba = lba0 + i as u64;
        let allowed = o.allowed(lba);
        if !allowed
            .iter()
            .any(|&id| got == sector_data(id, lba).as_slice())
        {
            bad.push(Bad {
                lba,
                allowed,
                found: describe(got, lba),
            });
        }
    }
    bad
}

/// The column holding volume sector `lba` (left-symmetric rotation, as in `model::raid5`).
fn column_of(lba: u64) -> u64 {
    let row = lba / ROW;
    let unit = (lba % ROW) / SU;
    let parity = NCOL - 1 - row % NCOL;
    (parity + 1 + unit) % NCOL
}

/// Reads the whole volume through `c` and returns the blocks that break the rule.
fn read_and_check(c: &mut Client, o: &Outcome, what: &str) -> Vec<Bad> {
    let chunk = 4 * ROW;
    let mut bad = Vec::new();
    for lba in (0..VOL_SECTORS).step_by(chunk as usize) {
        let mut r = vec![0u8; (chunk * SECTOR) as usize];
        let (st, _) = c
            .io(VIRTIO_BLK_T_IN, lba, &mut r)
            .unwrap_or_else(|e| panic!("{what}: read at sector {lba}: {e}"));
        assert_eq!(st, VIRTIO_BLK_S_OK, "{what}: read at sector {lba}: status");
        bad.extend(bad_blocks(o, lba, &r));
    }
    bad
}

/// Panics listing `bad` (the first 20) unless it is empty.
fn assert_none_bad(bad: &[Bad], what: &str, o: &Outcome) {
    if bad.is_empty() {
        return;
    }
    let list: Vec<String> = bad
        .iter()
        .take(20)
        .map(|b| {
            format!(
                "sector {} (row {}, column {}): {}, expected write {:?}",
                b.lba,
                b.lba / ROW,
                column_of(b.lba),
                b.found,
                b.allowed
            )
        })
        .collect();
    panic!(
        "{what}: {} blocks read back other than the last acknowledged write (or, under a write \
         in flight at the kill, that write); writes in flight: {:?}\n{}",
        bad.len(),
        o.inflight,
        list.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The writer.

/// A small xorshift generator: the same writes every run (their timing varies).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the main thread and a writer share.
#[derive(Default)]
struct Shared {
    /// Random writes acknowledged so far.
    acked: AtomicU64,
    /// Set once plexd is dead: reap the last completions and return.
    stop: AtomicBool,
}

/// Guest addresses of slot `k`'s request header, status byte and data (after the scratch area,
/// where `Client::io` puts its own requests).
fn slot_addrs(k: usize) -> (u64, u64, u64) {
    let base = GPA_BASE + RING_AREA + SCRATCH_AREA + k as u64 * (MAX_WRITE * SECTOR + 4096);
    (base, base + 64, base + 4096)
}

/// Picks the next random write: (kind, sector, length), not overlapping `busy`.
fn pick(rng: &mut Rng, busy: &[Option<Write>]) -> Option<(usize, u64, u64)> {
    for _ in 0..16 {
        let r = rng.below(100);
        let (kind, sector, n) = if r < 45 {
            (0, rng.below(VOL_SECTORS - 8 + 1), 8)
        } else if r < 75 {
            (1, rng.below(ROWS) * ROW, ROW)
        } else {
            let n = 1 + rng.below(MAX_WRITE);
            (2, rng.below(VOL_SECTORS - n + 1), n)
        };
        if !busy.iter().flatten().any(|w| w.overlaps(sector, n)) {
            return Some((kind, sector, n));
        }
    }
    None
}

/// Connects to `socket`, fills the volume with tagged data (acknowledged one by one), then
/// keeps [`QD`] random writes in flight until `shared.stop`; returns what it knows.
fn writer(socket: PathBuf, seed: u64, shared: Arc<Shared>) -> Outcome {
    let mut c = Client::connect(&socket, &ClientOpts::default())
        .unwrap_or_else(|e| panic!("vhost client on {}: {e}", socket.display()));
    let mut next_id = 1u64;
    let mut o = Outcome {
        last: vec![0; VOL_SECTORS as usize],
        ..Default::default()
    };
    let fill = 4 * ROW;
    for lba in (0..VOL_SECTORS).step_by(fill as usize) {
        let mut data = write_data(next_id, lba, fill);
        let (st, _) = c
            .io(VIRTIO_BLK_T_OUT, lba, &mut data)
            .unwrap_or_else(|e| panic!("fill at sector {lba}: {e}"));
        assert_eq!(st, VIRTIO_BLK_S_OK, "fill at sector {lba}: status");
        o.last[lba as usize..(lba + fill) as usize].fill(next_id);
        next_id += 1;
    }

    let mem = c.mem.clone();
    let mut rng = Rng(seed);
    let mut slots: [Option<Write>; QD] = [None; QD];
    let mut kinds = [0usize; QD];
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        while let Some(u) = c.vq.pop_used(&mem) {
            let k = u.id as usize / 3;
            let w = slots.get_mut(k).and_then(Option::take).unwrap_or_else(|| {
                panic!("completion of descriptor {} that is not in flight", u.id)
            });
            let st = mem.byte(slot_addrs(k).1);
            assert_eq!(st, VIRTIO_BLK_S_OK, "write {w:?}: status");
            o.last[w.sector as usize..(w.sector + w.n) as usize].fill(w.id);
            o.acked[kinds[k]] += 1;
            shared.acked.fetch_add(1, Ordering::Release);
        }
        if stopping {
            break;
        }
        let mut heads = Vec::new();
        for k in 0..QD {
            if slots[k].is_some() {
                continue;
            }
            let Some((kind, sector, n)) = pick(&mut rng, &slots) else {
                continue;
            };
            let w = Write {
                id: next_id,
                sector,
                n,
            };
            next_id += 1;
            let (hdr, st, buf) = slot_addrs(k);
            mem.write(hdr, &blk_header(VIRTIO_BLK_T_OUT, sector));
            mem.write(st, &[0xEE]);
            mem.write(buf, &write_data(w.id, sector, n));
            let descs = [
                Desc::ro(hdr, 16),
                Desc::ro(buf, (n * SECTOR) as u32),
                Desc::wo(st, 1),
            ];
            heads.push(c.vq.set_chain(&mem, 3 * k as u16, &descs));
            slots[k] = Some(w);
            kinds[k] = kind;
        }
        if heads.is_empty() {
            std::thread::sleep(Duration::from_micros(200));
        } else {
            c.vq.push_many(&mem, &heads);
        }
    }
    o.inflight = slots.into_iter().flatten().collect();
    o
}

// ---------------------------------------------------------------------------------------------
// The crash.

/// What the first plexd left: the rig, each volume's writer outcome, and where things were.
struct Crashed {
    rig: Rig,
    outcomes: BTreeMap<&'static str, Outcome>,
    /// Each volume's column disks (bdev names), by column.
    columns: BTreeMap<&'static str, Vec<String>>,
    /// The log plex's disk (bdev) of `r5l`.
    log_disk: String,
}

/// Creates `vol` and checks its log plexes.
fn create(plexd: &Plexd, vol: Vol) -> Vec<String> {
    plexd.call(
        "volume_create",
        json!({"dg": DG, "name": vol.name, "size": VOL_SECTORS * SECTOR, "layout": "raid5",
               "ncol": NCOL, "nlog": vol.nlog}),
    );
    let v = &plexd.call("volume_list", json!({"dg": DG, "name": vol.name}))[0];
    let plexes = v["plexes"].as_array().expect("plexes");
    let logs = plexes.iter().filter(|p| p["state"] == "LOG").count();
    assert_eq!(logs, vol.nlog as usize, "{}: log plexes: {v}", vol.name);
    let data = plexes
        .iter()
        .find(|p| p["layout"] == "raid")
        .unwrap_or_else(|| panic!("{}: no RAID plex: {v}", vol.name));
    let mut cols = vec![String::new(); NCOL as usize];
    for sd in data["subdisks"].as_array().expect("subdisks") {
        let c = sd["column"].as_u64().expect("column") as usize;
        assert!(cols[c].is_empty(), "one subdisk per column here: {data}");
        cols[c] = sd["device"].as_str().expect("device").to_string();
    }
    cols
}

/// Starts plexd on five disks, creates `r5l` and `r5n`, runs a writer on each and kills plexd
/// (SIGKILL) once each writer has had [`ACKED_BEFORE_KILL`] random writes acknowledged.
fn crash() -> Crashed {
    let rig = Rig::new(&DISKS);
    let mut plexd = rig.start();
    plexd.call("dg_create", json!({"name": DG, "disks": DISKS}));
    let mut columns = BTreeMap::new();
    for vol in [LOGGED, UNLOGGED] {
        columns.insert(vol.name, create(&plexd, vol));
    }
    let v = &plexd.call("volume_list", json!({"dg": DG, "name": LOGGED.name}))[0];
    let log_disk = v["plexes"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["state"] == "LOG"))
        .map(|p| {
            p["subdisks"][0]["device"]
                .as_str()
                .expect("device")
                .to_string()
        })
        .unwrap_or_else(|| panic!("no log plex: {v}"));

    let mut writers: Vec<(Vol, Arc<Shared>, JoinHandle<Outcome>)> = Vec::new();
    for vol in [LOGGED, UNLOGGED] {
        plexd.call(
            "vhost_create_blk_controller",
            json!({"ctrlr": vol.ctrlr, "dev_name": format!("{DG}/{}", vol.name)}),
        );
        let shared = Arc::new(Shared::default());
        let socket = rig.sockets().join(vol.ctrlr);
        let s = shared.clone();
        let h = std::thread::spawn(move || writer(socket, vol.seed, s));
        writers.push((vol, shared, h));
    }
    let end = Instant::now() + Duration::from_secs(120);
    while writers
        .iter()
        .any(|(_, s, _)| s.acked.load(Ordering::Acquire) < ACKED_BEFORE_KILL)
    {
        if let Some((vol, _, _)) = writers.iter().find(|(_, _, h)| h.is_finished()) {
            panic!("the writer of {} ended before the kill", vol.name);
        }
        assert!(
            Instant::now() < end,
            "the writers did not get {ACKED_BEFORE_KILL} writes acknowledged within 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    plexd.stop(libc::SIGKILL);
    drop(plexd);

    let mut outcomes = BTreeMap::new();
    for (vol, shared, h) in writers {
        shared.stop.store(true, Ordering::Release);
        let o = h
            .join()
            .unwrap_or_else(|_| panic!("the writer of {} panicked", vol.name));
        eprintln!(
            "{}: acknowledged {:?} (small, full-stripe, any) random writes; in flight at the kill: {:?}",
            vol.name, o.acked, o.inflight
        );
        outcomes.insert(vol.name, o);
    }
    let inflight: usize = outcomes.values().map(|o| o.inflight.len()).sum();
    assert!(
        inflight > 0,
        "no write was in flight when plexd died: the test did not test a crash mid-write"
    );
    Crashed {
        rig,
        outcomes,
        columns,
        log_disk,
    }
}

/// The volume's `volume_list` entry.
fn volume(plexd: &Plexd, name: &str) -> Value {
    plexd.call("volume_list", json!({"dg": DG, "name": name}))[0].clone()
}

/// Waits for task `id` and returns it, asserting it is done.
fn wait_done(plexd: &Plexd, id: u64, what: &str) -> Value {
    let t = plexd.call("task_wait", json!({"id": id, "timeout_ms": 120_000}));
    assert_eq!(t["state"], "done", "{what}: {t}");
    t
}

/// Runs `volume_check` on `name` and asserts it finds no mismatching row.
fn assert_parity_right(plexd: &Plexd, name: &str, when: &str) {
    let r = plexd.call("volume_check", json!({"dg": DG, "name": name}));
    let id = r["task"]
        .as_u64()
        .unwrap_or_else(|| panic!("volume_check: {r}"));
    let t = wait_done(plexd, id, &format!("{name}: volume_check {when}"));
    assert_eq!(
        t["result"]["mismatch_rows"], 0,
        "{name} {when}: rows whose parity is not the XOR of their data: {t}"
    );
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Scenario 5: SIGKILL during partial- and full-stripe writes, restart with every disk.
#[test]
fn raid5_crash_mid_write_clean_restart() {
    let t0 = Instant::now();
    let c = crash();
    let killed = t0.elapsed();
    let plexd = c.rig.start();
    for vol in [LOGGED, UNLOGGED] {
        let v = volume(&plexd, vol.name);
        assert_eq!(v["started"], true, "{} did not come back: {v}", vol.name);
        assert!(
            v["plexes"][0].get("stale_columns").is_none(),
            "{}: a column is stale after a clean restart: {v}",
            vol.name
        );
    }
    let resyncs = tasks_of(&plexd, "parity_resync");
    assert_eq!(
        resyncs.keys().collect::<Vec<_>>(),
        [UNLOGGED.name],
        "only the volume without a log gets a parity resync (the log's was replayed)"
    );
    wait_done(&plexd, resyncs[UNLOGGED.name], "parity_resync of r5n");
    for vol in [LOGGED, UNLOGGED] {
        assert_parity_right(&plexd, vol.name, "after the crash");
        let o = &c.outcomes[vol.name];
        let mut client = c
            .rig
            .export(&plexd, vol.ctrlr, &format!("{DG}/{}", vol.name));
        let what = format!("{} after SIGKILL and a clean restart", vol.name);
        assert_none_bad(&read_and_check(&mut client, o, &what), &what, o);
        assert_eq!(
            volume(&plexd, vol.name)["state"],
            "ACTIVE",
            "{}: ACTIVE once resynced",
            vol.name
        );
    }
    eprintln!(
        "crash after {killed:?}, restart and checks {:?}",
        t0.elapsed() - killed
    );
}

/// Scenario 6: SIGKILL during writes, restart with a disk holding a column of both volumes
/// missing.
#[test]
fn raid5_crash_mid_write_restart_with_a_column_disk_missing() {
    let t0 = Instant::now();
    let c = crash();
    let killed = t0.elapsed();
    let missing = c.columns[LOGGED.name]
        .iter()
        .find(|d| c.columns[UNLOGGED.name].contains(d) && **d != c.log_disk)
        .expect("a disk holding a column of both volumes")
        .clone();
    let col = |vol: Vol| {
        c.columns[vol.name]
            .iter()
            .position(|d| *d == missing)
            .expect("column on the missing disk") as u64
    };
    let plexd = c.rig.start_without(&[&missing]);
    let disks = plexd.call("disk_list", json!({"dg": DG}));
    let gone: Vec<&Value> = disks
        .as_array()
        .expect("disk_list")
        .iter()
        .filter(|d| d["condition"] == "NODEVICE")
        .collect();
    assert_eq!(gone.len(), 1, "one disk NODEVICE: {disks}");
    let gone_name = gone[0]["name"].as_str().expect("disk name").to_string();

    // With the log: replayed, started degraded, every block right.
    let v = volume(&plexd, LOGGED.name);
    assert_eq!(v["started"], true, "r5l (with a log) did not start: {v}");
    assert_eq!(
        v["plexes"][0]["stale_columns"],
        json!([col(LOGGED)]),
        "r5l: the missing disk's column is the stale one: {v}"
    );
    let print = plexd.call("vm_print", json!({"dg": DG}));
    let print = print.as_str().expect("vm_print text");
    let vline = print
        .lines()
        .find(|l| l.starts_with("v  r5l") || l.starts_with("v r5l"))
        .unwrap_or_else(|| panic!("no v line for r5l: {print}"));
    assert!(vline.contains("DEGRADED"), "r5l: {vline}\n{print}");
    let ndev: Vec<&str> = print
        .lines()
        .filter(|l| l.starts_with("sd") && l.contains("r5l") && l.contains(&gone_name))
        .collect();
    assert!(
        !ndev.is_empty() && ndev.iter().all(|l| l.contains("NDEV")),
        "r5l: the subdisk on {gone_name} is NDEV: {ndev:?}\n{print}"
    );
    assert!(
        !tasks_of(&plexd, "parity_resync").contains_key(LOGGED.name),
        "r5l needs no parity resync (its log was replayed)"
    );
    let o = &c.outcomes[LOGGED.name];
    let hole_blocks = o
        .inflight_rows()
        .iter()
        .flat_map(|r| r * ROW..(r + 1) * ROW)
        .filter(|&lba| column_of(lba) == col(LOGGED) && !o.inflight.iter().any(|w| w.covers(lba)))
        .count();
    let mut client = c
        .rig
        .export(&plexd, LOGGED.ctrlr, &format!("{DG}/{}", LOGGED.name));
    let what = format!(
        "r5l degraded (column {} missing) after SIGKILL",
        col(LOGGED)
    );
    assert_none_bad(&read_and_check(&mut client, o, &what), &what, o);
    eprintln!(
        "r5l: {hole_blocks} blocks of the missing column in rows being written (not written \
         themselves) read back right"
    );

    // Without a log: refused, then forced.
    let v = volume(&plexd, UNLOGGED.name);
    assert_eq!(
        v["started"], false,
        "r5n (no log, crashed, a column missing) was started at import: {v}"
    );
    let (code, msg) = plexd.call_err("volume_start", json!({"dg": DG, "name": UNLOGGED.name}));
    assert_eq!(code, -(libc::EINVAL as i64), "{msg}");
    assert!(msg.contains("force"), "the refusal says to force it: {msg}");
    assert_eq!(volume(&plexd, UNLOGGED.name)["started"], false);
    plexd.call(
        "volume_start",
        json!({"dg": DG, "name": UNLOGGED.name, "force": true}),
    );
    let v = volume(&plexd, UNLOGGED.name);
    assert_eq!(v["started"], true, "r5n forced: {v}");
    assert_eq!(
        v["plexes"][0]["stale_columns"],
        json!([col(UNLOGGED)]),
        "r5n: {v}"
    );
    let o = &c.outcomes[UNLOGGED.name];
    let rows = o.inflight_rows();
    let mut client = c
        .rig
        .export(&plexd, UNLOGGED.ctrlr, &format!("{DG}/{}", UNLOGGED.name));
    let what = format!("r5n forced, degraded (column {} missing)", col(UNLOGGED));
    let (hole, bad): (Vec<Bad>, Vec<Bad>) = read_and_check(&mut client, o, &what)
        .into_iter()
        .partition(|b| rows.contains(&(b.lba / ROW)) && column_of(b.lba) == col(UNLOGGED));
    assert_none_bad(&bad, &what, o);
    eprintln!(
        "r5n (no log, forced): {} blocks of the missing column in rows being written read back \
         wrong (the write hole)",
        hole.len()
    );
    eprintln!(
        "crash after {killed:?}, restart and checks {:?}",
        t0.elapsed() - killed
    );
}

/// The rule catches what it should: old data under no in-flight write, another sector's or
/// another write's data, and bytes of no write; it takes old or new under an in-flight write.
#[test]
fn the_check_rejects_wrong_blocks() {
    let mut o = Outcome {
        last: vec![1; VOL_SECTORS as usize],
        inflight: vec![Write {
            id: 9,
            sector: 10,
            n: 2,
        }],
        ..Default::default()
    };
    o.last[3] = 5;
    // Sectors 0..12 as they should be: 3 holds write 5, 10 the old data, 11 the new.
    let mut good: Vec<u8> = (0..12).flat_map(|s| sector_data(1, s)).collect();
    good[3 * 512..4 * 512].copy_from_slice(&sector_data(5, 3));
    good[11 * 512..12 * 512].copy_from_slice(&sector_data(9, 11));
    assert!(bad_blocks(&o, 0, &good).is_empty());

    let mut stale = good.clone();
    stale[3 * 512..4 * 512].copy_from_slice(&sector_data(1, 3));
    let mut moved = good.clone();
    moved[4 * 512..5 * 512].copy_from_slice(&sector_data(1, 7));
    let mut noise = good.clone();
    noise[10 * 512 + 100] ^= 1;
    for (what, bytes, lba) in [("old", stale, 3), ("moved", moved, 4), ("noise", noise, 10)] {
        let bad = bad_blocks(&o, 0, &bytes);
        assert_eq!(bad.len(), 1, "{what}: {bad:?}");
        assert_eq!(bad[0].lba, lba, "{what}: {bad:?}");
    }
    // Left-symmetric: row 0 puts unit 0 on column 0, row 1 on column 3 (parity on 2).
    assert_eq!(
        [
            column_of(0),
            column_of(SU),
            column_of(ROW),
            column_of(ROW + SU)
        ],
        [0, 1, 3, 0]
    );
}
