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
//! kernel finishes the file writes it was given), so the hole rarely shows in those two tests
//! even without a log. `raid5_torn_row_restart_with_a_column_disk_missing` makes it certain:
//! the disks are error bdevs over the files, and once the random writes are drained each
//! volume gets one 4 KiB write whose parity write the error bdev holds for ever (`pending`)
//! while its data lands (seen in the file); then SIGKILL, and a restart (on the plain files)
//! without the disk that holds the torn row's untouched unit. With the log every block obeys
//! the rule; without it (forced) exactly the 8 blocks of the missing column under the torn
//! write's offsets read back wrong, reconstructed from the stale parity.
//! `the_check_rejects_wrong_blocks` shows the rule catches stale, misplaced, garbled and
//! rebuilt-from-stale-parity blocks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
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

/// The 512 bytes write `id` puts in volume sector `lba`: id, lba, then a splitmix64 stream
/// seeded from both. Not linear over XOR (unlike xorshift), so a block reconstructed from
/// stale parity (an XOR of other blocks) never looks like a block some write made.
fn sector_data(id: u64, lba: u64) -> [u8; SECTOR as usize] {
    let mut out = [0u8; SECTOR as usize];
    out[0..8].copy_from_slice(&id.to_le_bytes());
    out[8..16].copy_from_slice(&lba.to_le_bytes());
    let mut x = id
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(lba)
        .wrapping_mul(0xD1B5_4A32_D192_ED03);
    for w in out[16..].chunks_exact_mut(8) {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        w.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
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

/// A writer's phase, set by the main thread: keep random writes in flight.
const RUN: u8 = 0;
/// Submit nothing new; set `drained` once nothing is in flight.
const DRAIN: u8 = 1;
/// Submit the writer's tear write (once) and set `torn`.
const TEAR: u8 = 2;
/// plexd is dead: reap the last completions and return.
const STOP: u8 = 3;

/// What the main thread and a writer share.
#[derive(Default)]
struct Shared {
    /// Random writes acknowledged so far.
    acked: AtomicU64,
    /// [`RUN`], [`DRAIN`], [`TEAR`] or [`STOP`].
    phase: AtomicU8,
    /// Nothing in flight (in [`DRAIN`]).
    drained: AtomicBool,
    /// The tear write was submitted (in [`TEAR`]).
    torn: AtomicBool,
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

/// Lays out write `w` in slot `k` (descriptors `3k..3k+3`) and returns its head.
fn prepare(c: &mut Client, k: usize, w: &Write) -> u16 {
    let mem = c.mem.clone();
    let (hdr, st, buf) = slot_addrs(k);
    mem.write(hdr, &blk_header(VIRTIO_BLK_T_OUT, w.sector));
    mem.write(st, &[0xEE]);
    mem.write(buf, &write_data(w.id, w.sector, w.n));
    let descs = [
        Desc::ro(hdr, 16),
        Desc::ro(buf, (w.n * SECTOR) as u32),
        Desc::wo(st, 1),
    ];
    c.vq.set_chain(&mem, 3 * k as u16, &descs)
}

/// Connects to `socket`, fills the volume with tagged data (acknowledged one by one), then
/// keeps [`QD`] random writes in flight while `shared.phase` is [`RUN`], drains, submits the
/// `tear` write (sector, length) in [`TEAR`], and returns what it knows at [`STOP`].
fn writer(socket: PathBuf, seed: u64, tear: Option<(u64, u64)>, shared: Arc<Shared>) -> Outcome {
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
        let phase = shared.phase.load(Ordering::Acquire);
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
        let mut heads = Vec::new();
        match phase {
            RUN => {
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
                    heads.push(prepare(&mut c, k, &w));
                    slots[k] = Some(w);
                    kinds[k] = kind;
                }
            }
            DRAIN => {
                if slots.iter().all(Option::is_none) {
                    shared.drained.store(true, Ordering::Release);
                }
            }
            TEAR => {
                if let (Some((sector, n)), false) = (tear, shared.torn.load(Ordering::Acquire)) {
                    let w = Write {
                        id: next_id,
                        sector,
                        n,
                    };
                    next_id += 1;
                    heads.push(prepare(&mut c, 0, &w));
                    slots[0] = Some(w);
                    shared.torn.store(true, Ordering::Release);
                }
            }
            _ => break,
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

/// A column of a volume: its disk (the rig's name) and where its subdisk starts in the disk's
/// file (bytes).
#[derive(Debug, Clone)]
struct Column {
    disk: String,
    start: u64,
}

impl Column {
    /// The disk file's bytes at `unit_sector` sectors into the column.
    fn read(&self, rig: &Rig, unit_sector: u64, len: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(rig.file(&self.disk)).expect("open disk file");
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, self.start + unit_sector * SECTOR)
            .expect("read disk file");
        b
    }
}

/// Where the volumes live.
struct Layout {
    /// Each volume's columns, by column index.
    columns: BTreeMap<&'static str, Vec<Column>>,
    /// The disk of `r5l`'s log plex.
    log_disk: String,
}

impl Layout {
    /// A disk holding a column of both volumes and not the log.
    fn common_disk(&self) -> String {
        let cols = |v: Vol| self.columns[v.name].iter().map(|c| c.disk.clone());
        cols(LOGGED)
            .find(|d| cols(UNLOGGED).any(|e| e == *d) && *d != self.log_disk)
            .expect("a disk holding a column of both volumes")
    }

    /// The column of `vol` on `disk`.
    fn column_on(&self, vol: Vol, disk: &str) -> u64 {
        self.columns[vol.name]
            .iter()
            .position(|c| c.disk == disk)
            .unwrap_or_else(|| panic!("{} has no column on {disk}", vol.name)) as u64
    }
}

/// The rig's disk under a group disk's bdev (`d0` or the error bdev `EE_d0` over it).
fn rig_disk(bdev: &str) -> String {
    bdev.strip_prefix("EE_").unwrap_or(bdev).to_string()
}

/// Creates `vol`, checks its log plexes and returns its columns.
fn create(plexd: &Plexd, vol: Vol) -> Vec<Column> {
    plexd.call(
        "volume_create",
        json!({"dg": DG, "name": vol.name, "size": VOL_SECTORS * SECTOR, "layout": "raid5",
               "ncol": NCOL, "nlog": vol.nlog}),
    );
    let disks = plexd.call("disk_list", json!({"dg": DG}));
    let public = |name: &Value| {
        disks
            .as_array()
            .and_then(|l| l.iter().find(|d| d["name"] == *name))
            .and_then(|d| d["public_offset_blocks"].as_u64())
            .unwrap_or_else(|| panic!("no public offset of disk {name}: {disks}"))
    };
    let v = &plexd.call("volume_list", json!({"dg": DG, "name": vol.name}))[0];
    let plexes = v["plexes"].as_array().expect("plexes");
    let logs = plexes.iter().filter(|p| p["state"] == "LOG").count();
    assert_eq!(logs, vol.nlog as usize, "{}: log plexes: {v}", vol.name);
    let data = plexes
        .iter()
        .find(|p| p["layout"] == "raid")
        .unwrap_or_else(|| panic!("{}: no RAID plex: {v}", vol.name));
    let mut cols: Vec<Option<Column>> = vec![None; NCOL as usize];
    for sd in data["subdisks"].as_array().expect("subdisks") {
        let c = sd["column"].as_u64().expect("column") as usize;
        assert!(cols[c].is_none(), "one subdisk per column here: {data}");
        let offset = sd["disk_offset"].as_u64().expect("disk_offset");
        cols[c] = Some(Column {
            disk: rig_disk(sd["device"].as_str().expect("device")),
            start: (public(&sd["disk"]) + offset) * SECTOR,
        });
    }
    cols.into_iter()
        .map(|c| c.unwrap_or_else(|| panic!("a column without a subdisk: {data}")))
        .collect()
}

/// Starts plexd on five disks (under error bdevs if `error_bdevs`) and creates `r5l` and
/// `r5n` in one group.
fn setup(error_bdevs: bool) -> (Rig, Plexd, Layout) {
    let rig = Rig::new(&DISKS);
    let plexd = rig.start();
    let bdevs: Vec<String> = DISKS
        .iter()
        .map(|d| {
            if error_bdevs {
                let r = plexd.call("bdev_error_create", json!({"base_name": d}));
                r.as_str().expect("error bdev name").to_string()
            } else {
                d.to_string()
            }
        })
        .collect();
    plexd.call("dg_create", json!({"name": DG, "disks": bdevs}));
    let mut columns = BTreeMap::new();
    for vol in [LOGGED, UNLOGGED] {
        columns.insert(vol.name, create(&plexd, vol));
    }
    let v = &plexd.call("volume_list", json!({"dg": DG, "name": LOGGED.name}))[0];
    let log_disk = v["plexes"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["state"] == "LOG"))
        .and_then(|p| p["subdisks"][0]["device"].as_str())
        .map(rig_disk)
        .unwrap_or_else(|| panic!("no log plex: {v}"));
    (rig, plexd, Layout { columns, log_disk })
}

/// A running writer.
struct Writer {
    vol: Vol,
    shared: Arc<Shared>,
    handle: JoinHandle<Outcome>,
}

/// Exports both volumes and starts a writer on each (with its tear write, if any).
fn start_writers(rig: &Rig, plexd: &Plexd, tears: &BTreeMap<&str, (u64, u64)>) -> Vec<Writer> {
    let mut writers = Vec::new();
    for vol in [LOGGED, UNLOGGED] {
        plexd.call(
            "vhost_create_blk_controller",
            json!({"ctrlr": vol.ctrlr, "dev_name": format!("{DG}/{}", vol.name)}),
        );
        let shared = Arc::new(Shared::default());
        let socket = rig.sockets().join(vol.ctrlr);
        let s = shared.clone();
        let tear = tears.get(vol.name).copied();
        let handle = std::thread::spawn(move || writer(socket, vol.seed, tear, s));
        writers.push(Writer {
            vol,
            shared,
            handle,
        });
    }
    writers
}

/// Waits (up to 120 s) until `done` holds for every writer; panics if a writer ended.
fn wait_writers(writers: &[Writer], what: &str, done: impl Fn(&Shared) -> bool) {
    let end = Instant::now() + Duration::from_secs(120);
    while !writers.iter().all(|w| done(&w.shared)) {
        if let Some(w) = writers.iter().find(|w| w.handle.is_finished()) {
            panic!("the writer of {} ended early", w.vol.name);
        }
        assert!(Instant::now() < end, "writers: {what}: not within 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops the writers (plexd is dead) and returns what each knows.
fn finish(writers: Vec<Writer>) -> BTreeMap<&'static str, Outcome> {
    let mut outcomes = BTreeMap::new();
    for w in writers {
        w.shared.phase.store(STOP, Ordering::Release);
        let o = w
            .handle
            .join()
            .unwrap_or_else(|_| panic!("the writer of {} panicked", w.vol.name));
        eprintln!(
            "{}: acknowledged {:?} (small, full-stripe, any) random writes; in flight at the \
             kill: {:?}",
            w.vol.name, o.acked, o.inflight
        );
        outcomes.insert(w.vol.name, o);
    }
    outcomes
}

/// What the first plexd left: the rig, where the volumes are, each writer's outcome.
struct Crashed {
    rig: Rig,
    layout: Layout,
    outcomes: BTreeMap<&'static str, Outcome>,
}

/// [`setup`], a writer on each volume, and SIGKILL once each writer has had
/// [`ACKED_BEFORE_KILL`] random writes acknowledged (with writes in flight).
fn crash() -> Crashed {
    let (rig, mut plexd, layout) = setup(false);
    let writers = start_writers(&rig, &plexd, &BTreeMap::new());
    wait_writers(&writers, "writes acknowledged", |s| {
        s.acked.load(Ordering::Acquire) >= ACKED_BEFORE_KILL
    });
    plexd.stop(libc::SIGKILL);
    drop(plexd);
    let outcomes = finish(writers);
    let inflight: usize = outcomes.values().map(|o| o.inflight.len()).sum();
    assert!(
        inflight > 0,
        "no write was in flight when plexd died: the test did not test a crash mid-write"
    );
    Crashed {
        rig,
        layout,
        outcomes,
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

/// After a restart without `missing`: the disk is NODEVICE, and `r5l` (its log replayed) is
/// started with the disk's column stale, DEGRADED in `vm_print` with its subdisk NDEV, and
/// no parity resync.
fn assert_logged_started_degraded(plexd: &Plexd, layout: &Layout, missing: &str) {
    let col = layout.column_on(LOGGED, missing);
    let disks = plexd.call("disk_list", json!({"dg": DG}));
    let gone: Vec<&Value> = disks
        .as_array()
        .expect("disk_list")
        .iter()
        .filter(|d| d["condition"] == "NODEVICE")
        .collect();
    assert_eq!(gone.len(), 1, "one disk NODEVICE: {disks}");
    let gone_name = gone[0]["name"].as_str().expect("disk name").to_string();
    let v = volume(plexd, LOGGED.name);
    assert_eq!(v["started"], true, "r5l (with a log) did not start: {v}");
    assert_eq!(
        v["plexes"][0]["stale_columns"],
        json!([col]),
        "r5l: the missing disk's column is the stale one: {v}"
    );
    let print = plexd.call("vm_print", json!({"dg": DG}));
    let print = print.as_str().expect("vm_print text");
    let vline = print
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["v", "r5l"]))
        .unwrap_or_else(|| panic!("no v line for r5l: {print}"));
    assert!(vline.contains("DEGRADED"), "r5l: {vline}\n{print}");
    let sd: Vec<&str> = print
        .lines()
        .filter(|l| l.starts_with("sd") && l.contains("r5l") && l.contains(&gone_name))
        .collect();
    assert!(
        !sd.is_empty() && sd.iter().all(|l| l.contains("NDEV")),
        "r5l: the subdisk on {gone_name} is NDEV: {sd:?}\n{print}"
    );
    assert!(
        !tasks_of(plexd, "parity_resync").contains_key(LOGGED.name),
        "r5l needs no parity resync (its log was replayed)"
    );
}

/// `r5n` (no log, crashed, a column missing) was not started at import; `volume_start`
/// refuses with a message that says to force it, and `force` starts it degraded.
fn force_unlogged(plexd: &Plexd, layout: &Layout, missing: &str) {
    let v = volume(plexd, UNLOGGED.name);
    assert_eq!(
        v["started"], false,
        "r5n (no log, crashed, a column missing) was started at import: {v}"
    );
    let (code, msg) = plexd.call_err("volume_start", json!({"dg": DG, "name": UNLOGGED.name}));
    assert_eq!(code, -(libc::EINVAL as i64), "{msg}");
    assert!(msg.contains("force"), "the refusal says to force it: {msg}");
    assert_eq!(volume(plexd, UNLOGGED.name)["started"], false);
    plexd.call(
        "volume_start",
        json!({"dg": DG, "name": UNLOGGED.name, "force": true}),
    );
    let v = volume(plexd, UNLOGGED.name);
    assert_eq!(v["started"], true, "r5n forced: {v}");
    assert_eq!(
        v["plexes"][0]["stale_columns"],
        json!([layout.column_on(UNLOGGED, missing)]),
        "r5n: {v}"
    );
}

/// Exports `vol` and reads it whole; returns the blocks that break the rule.
fn export_and_check(plexd: &Plexd, c: &Crashed, vol: Vol, what: &str) -> Vec<Bad> {
    let mut client = c
        .rig
        .export(plexd, vol.ctrlr, &format!("{DG}/{}", vol.name));
    read_and_check(&mut client, &c.outcomes[vol.name], what)
}

/// Scenario 6: SIGKILL during writes, restart with a disk holding a column of both volumes
/// missing.
#[test]
fn raid5_crash_mid_write_restart_with_a_column_disk_missing() {
    let t0 = Instant::now();
    let c = crash();
    let killed = t0.elapsed();
    let missing = c.layout.common_disk();
    let plexd = c.rig.start_without(&[&missing]);

    // With the log: replayed, started degraded, every block right.
    assert_logged_started_degraded(&plexd, &c.layout, &missing);
    let col = c.layout.column_on(LOGGED, &missing);
    let o = &c.outcomes[LOGGED.name];
    let hole_blocks = o
        .inflight_rows()
        .iter()
        .flat_map(|r| r * ROW..(r + 1) * ROW)
        .filter(|&lba| column_of(lba) == col && !o.inflight.iter().any(|w| w.covers(lba)))
        .count();
    let what = format!("r5l degraded (column {col} missing) after SIGKILL");
    assert_none_bad(&export_and_check(&plexd, &c, LOGGED, &what), &what, o);
    eprintln!(
        "r5l: {hole_blocks} blocks of the missing column in rows being written (not written \
         themselves) read back right"
    );

    // Without a log: refused, then forced; only the missing column of rows being written may
    // read back wrong.
    force_unlogged(&plexd, &c.layout, &missing);
    let col = c.layout.column_on(UNLOGGED, &missing);
    let o = &c.outcomes[UNLOGGED.name];
    let rows = o.inflight_rows();
    let what = format!("r5n forced, degraded (column {col} missing)");
    let (hole, bad): (Vec<Bad>, Vec<Bad>) = export_and_check(&plexd, &c, UNLOGGED, &what)
        .into_iter()
        .partition(|b| rows.contains(&(b.lba / ROW)) && column_of(b.lba) == col);
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

/// A write torn on purpose: its data reaches a column, its parity never does.
#[derive(Debug, Clone)]
struct Tear {
    /// The row, its parity column and the written unit's column.
    row: u64,
    parity: u64,
    data: u64,
    /// The write: 8 sectors from 8 sectors into the row's first data unit.
    sector: u64,
    /// Sectors of the missing column in that row at the same unit offsets as the write: its
    /// parity covers them, so they read back wrong if the parity is stale.
    hole: std::ops::Range<u64>,
}

impl Tear {
    /// A tear in a row where `missing` (a column index) holds a data unit the write leaves
    /// alone: the row whose parity is on the column after `missing`, so the write's unit
    /// (the row's first) is two after it and `missing` holds the row's third unit.
    fn for_missing(missing: u64) -> Tear {
        let parity = (missing + 1) % NCOL;
        let row = (8..ROWS)
            .find(|r| NCOL - 1 - r % NCOL == parity)
            .expect("a row with that parity column");
        let sector = row * ROW + 8;
        let hole = row * ROW + 2 * SU + 8..row * ROW + 2 * SU + 16;
        let t = Tear {
            row,
            parity,
            data: (missing + 2) % NCOL,
            sector,
            hole,
        };
        assert_eq!(column_of(t.sector), t.data, "{t:?}");
        assert_eq!(column_of(t.hole.start), missing, "{t:?}");
        t
    }
}

/// Scenario 6 with the write hole made certain: after random writes, each volume's writer
/// issues one 4 KiB write (read-modify-write) whose parity write is held for ever by an error
/// bdev while its data lands; plexd is killed and restarted with a disk missing that holds
/// the torn row's untouched unit in both volumes. With the log the replay rewrites the row's
/// parity and that unit reads back right; without it (forced) exactly the blocks under the
/// torn write's offsets read back wrong: the write hole, shown where the log closes it.
#[test]
fn raid5_torn_row_restart_with_a_column_disk_missing() {
    let t0 = Instant::now();
    let (rig, mut plexd, layout) = setup(true);
    let missing = layout.common_disk();
    let tears: BTreeMap<&str, Tear> = [LOGGED, UNLOGGED]
        .iter()
        .map(|v| (v.name, Tear::for_missing(layout.column_on(*v, &missing))))
        .collect();
    let plans = tears.iter().map(|(v, t)| (*v, (t.sector, 8))).collect();
    let writers = start_writers(&rig, &plexd, &plans);
    wait_writers(&writers, "writes acknowledged", |s| {
        s.acked.load(Ordering::Acquire) >= ACKED_BEFORE_KILL / 3
    });
    for w in &writers {
        w.shared.phase.store(DRAIN, Ordering::Release);
    }
    wait_writers(&writers, "drained", |s| s.drained.load(Ordering::Acquire));
    let mut parity_before = BTreeMap::new();
    for w in &writers {
        let t = &tears[w.vol.name];
        let cols = &layout.columns[w.vol.name];
        let unit_sector = t.row * SU + 8;
        let data_before = cols[t.data as usize].read(&rig, unit_sector, 4096);
        parity_before.insert(
            w.vol.name,
            cols[t.parity as usize].read(&rig, unit_sector, 4096),
        );
        plexd.call(
            "bdev_error_inject_error",
            json!({"name": format!("EE_{}", cols[t.parity as usize].disk), "io_type": "write",
                   "error_type": "pending", "num": 1}),
        );
        w.shared.phase.store(TEAR, Ordering::Release);
        let end = Instant::now() + Duration::from_secs(20);
        while cols[t.data as usize].read(&rig, unit_sector, 4096) == data_before {
            assert!(
                Instant::now() < end,
                "{}: the torn write's data did not reach column {} within 20 s",
                w.vol.name,
                t.data
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    plexd.stop(libc::SIGKILL);
    drop(plexd);
    let outcomes = finish(writers);
    for (vol, t) in &tears {
        let o = &outcomes[vol];
        assert!(
            o.inflight.iter().any(|w| w.sector == t.sector),
            "{vol}: the torn write was acknowledged (its parity write was held): {:?}",
            o.inflight
        );
        let cols = &layout.columns[vol];
        assert_eq!(
            cols[t.parity as usize].read(&rig, t.row * SU + 8, 4096),
            parity_before[vol],
            "{vol}: the held parity write reached the disk"
        );
    }
    let c = Crashed {
        rig,
        layout,
        outcomes,
    };
    let plexd = c.rig.start_without(&[&missing]);

    assert_logged_started_degraded(&plexd, &c.layout, &missing);
    let t = &tears[LOGGED.name];
    let what = format!(
        "r5l degraded after a torn write in row {} (column {} missing)",
        t.row,
        c.layout.column_on(LOGGED, &missing)
    );
    let o = &c.outcomes[LOGGED.name];
    assert_none_bad(&export_and_check(&plexd, &c, LOGGED, &what), &what, o);

    force_unlogged(&plexd, &c.layout, &missing);
    let t = &tears[UNLOGGED.name];
    let what = format!("r5n forced after a torn write in row {}", t.row);
    let bad: Vec<u64> = export_and_check(&plexd, &c, UNLOGGED, &what)
        .iter()
        .map(|b| b.lba)
        .collect();
    assert_eq!(
        bad,
        t.hole.clone().collect::<Vec<_>>(),
        "{what}: without a log exactly the missing column's blocks under the torn write's \
         offsets read back wrong (reconstructed with the stale parity)"
    );
    eprintln!("torn rows: {tears:?}; total {:?}", t0.elapsed());
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
    // A block rebuilt from stale parity (old ^ old' ^ new') names write 9 and sector 10 in
    // its header, but is neither write's data: rejected.
    let mut rebuilt = good.clone();
    let xor: Vec<u8> = sector_data(1, 10)
        .iter()
        .zip(sector_data(1, 11))
        .zip(sector_data(9, 11))
        .map(|((a, b), c)| a ^ b ^ c)
        .collect();
    rebuilt[10 * 512..11 * 512].copy_from_slice(&xor);
    let bad = bad_blocks(&o, 0, &rebuilt);
    assert_eq!(bad.len(), 1, "rebuilt: {bad:?}");
    assert_eq!(bad[0].lba, 10, "rebuilt: {bad:?}");
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
