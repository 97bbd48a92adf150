//! A RAID-5 volume of the volume manager under a real guest: QEMU (TCG) boots the test guest
//! of `tests/guest/` against plexd's vhost-user-blk export of a 4-column RAID-5 volume (16 KiB
//! stripe unit) on four error bdevs over malloc bdevs, and `tests/guest/raid5-check.sh` runs
//! fio crc32c write + verify passes (4k-128k blocks, so read-modify-write, reconstruct-write
//! and full-stripe writes all happen) while the host:
//!
//! 1. fails every write to one disk while fio writes: its column is recorded stale, the volume
//!    serves degraded (`vm_print` DEGRADED), the guest sees no error, later writes are degraded
//!    writes and fio's verify pass reads the missing column reconstructed;
//! 2. clears the failure and rebuilds the column (`volume_recover` with a throttle, a `rebuild`
//!    task) while the guest writes and verifies a second region and re-verifies the first
//!    again and again; guest writes land both before and after the rebuild's midpoint;
//! 3. once the task is done: no stale column, the volume ACTIVE, a scrub (`volume_check`) finds
//!    every row's parity right, and the guest's verify-only passes of both regions (now read
//!    from the rebuilt column) pass.
//!
//! One guest boot: the guest prints markers on its console, the host answers on its second
//! serial port (`GUEST_CTL_SOCKET`). A failing step fails the test with the guest's serial log
//! and plexd's log. Needs `qemu-system-x86_64` and the guest image:
//! `scripts/install-test-deps.sh` (or `tests/guest/build-guest.sh`) provides both.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use plexd_tests::error_chain;
use plexd_tests::guest::{guest_command, one_guest_at_a_time, BackgroundGuest, Target, CTRLR};
use serde_json::{json, Value};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Each malloc disk: room for one 32 MiB column and the private region.
const DISK: u64 = 64 * MIB;
const NDISK: usize = 4;
const DG: &str = "dg01";
const VOL: &str = "r5";
const VOL_BDEV: &str = "dg01/r5";
/// 96 MiB: 3 data columns of 32 MiB.
const VOL_LEN: u64 = 96 * MIB;
const STRIPE_UNIT: u64 = 16 * KIB;
const SECTOR: u64 = 512;
/// The error bdev whose writes fail.
const FAILING: &str = "EE_Malloc2";
/// Region A, written across the failure, and region C, written during the rebuild.
const REGION_A: (u64, u64) = (0, 48 * MIB);
const REGION_C: (u64, u64) = (48 * MIB, 48 * MIB);
/// fio's write rate limit in the guest: each region's writes last at least 12 s, longer than
/// the host's injection (~2 s) and the rebuild.
const RATE: &str = "4m";
/// The rebuild's sleep between barrier chunks (~1 MiB of rows each, ~100 chunks): ~4 s of
/// sleep, well inside fio C's 12 s of writes.
const REBUILD_DELAY_MS: u64 = 40;
/// How long the host waits for a state change it caused.
const STATE_TIMEOUT: Duration = Duration::from_secs(60);

/// A JSON number field (panics naming the object if it is missing).
fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number '{key}' in {v}"))
}

/// The running test: plexd, the guest, and the line to the guest's second serial port.
struct Run {
    t: Target,
    guest: Option<BackgroundGuest>,
    ctl: Option<UnixStream>,
}

impl Run {
    /// Ends the guest and plexd, and panics with `msg`, the guest's serial log and plexd's log.
    fn fail(&mut self, msg: &str) -> ! {
        drop(self.ctl.take());
        let log = self.guest.take().map(|g| g.kill().log).unwrap_or_default();
        let plexd_log = self.t.stop_for_log();
        panic!("{msg}\n--- guest serial log ---\n{log}\n--- plexd log ---\n{plexd_log}");
    }

    /// Waits for the guest's console line `marker`; fails if the guest ends first.
    fn expect_marker(&mut self, marker: &str) {
        let seen = self
            .guest
            .as_mut()
            .is_some_and(|g| g.collect_until(Some(marker)));
        if !seen {
            let g = self.guest.take().map(BackgroundGuest::finish);
            let (status, log) = g.map_or((None, String::new()), |g| (g.status, g.log));
            let plexd_log = self.t.stop_for_log();
            panic!(
                "the guest ended (status {status:?}) without printing {marker}\n--- guest serial \
                 log ---\n{log}\n--- plexd log ---\n{plexd_log}"
            );
        }
    }

    /// Sends `line` to the guest's /dev/ttyS1.
    fn tell(&mut self, line: &str) {
        if self.ctl.is_none() {
            let path = self.t.sockets.path().join("ctl.sock");
            match UnixStream::connect(&path) {
                Ok(s) => self.ctl = Some(s),
                Err(e) => self.fail(&format!("connect to the guest's control serial port: {e}")),
            }
        }
        let sent = self
            .ctl
            .as_mut()
            .map(|s| s.write_all(format!("{line}\n").as_bytes()));
        if let Some(Err(e)) = sent {
            self.fail(&format!("write '{line}' to the guest: {e}"));
        }
    }

    /// Checks `ok`, failing the run with `msg` otherwise.
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            let m = msg();
            self.fail(&m);
        }
    }

    /// Calls `method`; an error fails the run (with plexd's log).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let r = self.t.plexd.client().call(method, Some(params));
        r.unwrap_or_else(|e| self.fail(&format!("{method}: {}", error_chain(&e))))
    }

    /// `bdev_get_iostat` of one bdev.
    fn iostat(&mut self, bdev: &str) -> Value {
        self.call("bdev_get_iostat", json!({"name": bdev}))["bdevs"][0].clone()
    }

    /// The volume's `volume_list` entry.
    fn volume(&mut self) -> Value {
        self.call("volume_list", json!({"dg": DG, "name": VOL}))[0].clone()
    }

    /// The stale columns of the volume's RAID-5 plex (empty when there are none).
    fn stale_columns(&mut self) -> Vec<u64> {
        let vol = self.volume();
        vol["plexes"][0]["stale_columns"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    }

    /// The volume's (kernel state, state) on its `vm_print` `v` line.
    fn printed_state(&mut self) -> (String, String) {
        let print = self.call("vm_print", json!({"dg": DG}));
        let print = print.as_str().unwrap_or_default().to_string();
        print
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|r| r.len() > 4 && r[0] == "v" && r[1] == VOL)
            .map(|r| (r[3].to_string(), r[4].to_string()))
            .unwrap_or_else(|| panic!("no 'v {VOL}' line in vm_print:\n{print}"))
    }

    /// The volume bdev's completed write requests.
    fn writes(&mut self) -> u64 {
        num(&self.iostat(VOL_BDEV), "num_write_ops")
    }

    /// `task_wait` for task `id`; returns it once it ended.
    fn task_wait(&mut self, id: u64) -> Value {
        // Below the RPC client's 60 s timeout, so a stuck task shows as ETIMEDOUT.
        let task = self.call("task_wait", json!({"id": id, "timeout_ms": 50_000}));
        self.check(task["state"] == "done", || {
            format!("task {id} did not end done: {task}")
        });
        task
    }
}

#[test]
fn raid5_volume_passes_fio_verify_degraded_and_during_rebuild() {
    let _one = one_guest_at_a_time();
    let started = Instant::now();
    let t = Target::start();
    let mut disks = Vec::new();
    for i in 0..NDISK {
        let base = format!("Malloc{i}");
        t.call(
            "bdev_malloc_create",
            json!({"name": base, "num_blocks": DISK / SECTOR, "block_size": SECTOR}),
        );
        let ee = t.call("bdev_error_create", json!({"base_name": base}));
        assert_eq!(ee, json!(format!("EE_{base}")));
        disks.push(format!("EE_{base}"));
    }
    t.call("dg_create", json!({"name": DG, "disks": disks}));
    let bdev = t.call(
        "volume_create",
        json!({"dg": DG, "name": VOL, "size": VOL_LEN, "layout": "raid5", "ncol": NDISK,
               "stripe_unit_kb": STRIPE_UNIT / KIB}),
    );
    assert_eq!(bdev, json!(VOL_BDEV));
    t.call(
        "vhost_create_blk_controller",
        json!({"ctrlr": CTRLR, "dev_name": VOL_BDEV}),
    );

    // The column on the disk that will fail.
    let vol = t.call("volume_list", json!({"dg": DG, "name": VOL}))[0].clone();
    assert_eq!(num(&vol, "num_blocks") * SECTOR, VOL_LEN, "{vol}");
    let plex = &vol["plexes"][0];
    assert_eq!(plex["layout"], "raid", "{vol}");
    assert_eq!(num(plex, "ncol"), NDISK as u64, "{vol}");
    assert_eq!(
        num(plex, "stripe_unit_blocks"),
        STRIPE_UNIT / SECTOR,
        "{vol}"
    );
    let failing_column = plex["subdisks"]
        .as_array()
        .expect("subdisks")
        .iter()
        .find(|sd| sd["device"] == FAILING)
        .map(|sd| num(sd, "column"))
        .unwrap_or_else(|| panic!("no subdisk on {FAILING}: {vol}"));

    let append = format!(
        "plexd_disk_size={VOL_LEN} plexd_r5_a={}:{} plexd_r5_c={}:{} plexd_r5_rate={RATE}",
        REGION_A.0, REGION_A.1, REGION_C.0, REGION_C.1
    );
    let mut cmd = guest_command("raid5-check.sh", &append, &t.vhost_socket());
    cmd.env("GUEST_CTL_SOCKET", t.sockets.path().join("ctl.sock"));
    let guest = BackgroundGuest::spawn(cmd, t.sockets.path().join("qemu.pid"));
    let mut r = Run {
        t,
        guest: Some(guest),
        ctl: None,
    };

    // 1. A disk fails while fio writes region A: its column goes stale, the volume degraded.
    r.expect_marker("R5-A-WRITING");
    std::thread::sleep(Duration::from_secs(1));
    let healthy_writes = r.writes();
    r.check(healthy_writes > 0, || {
        "no guest write before the failure".into()
    });
    r.call(
        "bdev_error_inject_error",
        json!({"name": FAILING, "io_type": "write", "error_type": "failure",
               "num": 1_000_000_000u64}),
    );
    let end = Instant::now() + STATE_TIMEOUT;
    while r.stale_columns().is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stale = r.stale_columns();
    r.check(stale == [failing_column], || {
        format!(
            "after {FAILING} failed writes: stale columns {stale:?}, expected [{failing_column}]"
        )
    });
    let state = r.printed_state();
    r.check(state == ("ENABLED".into(), "DEGRADED".into()), || {
        format!("degraded volume in vm_print: {state:?}")
    });
    let ee = r.iostat(FAILING);
    r.check(num(&ee, "io_error") > 0, || {
        format!("no failed write on {FAILING}: {ee}")
    });
    let stale_writes = r.writes();
    r.tell("stale");
    r.expect_marker("R5-A-DONE");
    let degraded_writes = r.writes() - stale_writes;
    r.check(degraded_writes > 0, || {
        "no guest write reached the volume after its column went stale".into()
    });
    let stale = r.stale_columns();
    r.check(stale == [failing_column], || {
        format!("stale columns after fio A: {stale:?}")
    });
    let vs = r.iostat(VOL_BDEV);
    r.check(vs["io_error"] == 0, || {
        format!("the volume failed a request: {vs}")
    });

    // 2. The disk works again; the column is rebuilt while the guest writes region C.
    r.call(
        "bdev_error_inject_error",
        json!({"name": FAILING, "io_type": "clear", "error_type": "failure"}),
    );
    r.tell("go-rebuild");
    r.expect_marker("R5-C-WRITING");
    let task = r.call(
        "volume_recover",
        json!({"dg": DG, "name": VOL, "delay_ms": REBUILD_DELAY_MS}),
    );
    let id = num(&task, "task");
    let rebuild_start = Instant::now();
    let writes_at_start = r.writes();
    // Guest writes before and after the rebuild's midpoint (ahead of and behind its progress).
    let mut writes_at_half = None;
    let end = Instant::now() + Duration::from_secs(120);
    let last = loop {
        let tasks = r.call("task_list", json!({}));
        let Some(task) = tasks
            .as_array()
            .and_then(|a| a.iter().find(|k| k["id"] == id))
            .cloned()
        else {
            r.fail(&format!("task {id} not in task_list: {tasks}"));
        };
        let writes = r.writes();
        if task["state"] != "running" {
            break (task, writes);
        }
        if writes_at_half.is_none() && task["percent"].as_f64().unwrap_or(0.0) >= 50.0 {
            writes_at_half = Some(writes);
        }
        r.check(Instant::now() < end, || {
            format!("the rebuild still runs after 120 s: {task}")
        });
        std::thread::sleep(Duration::from_millis(100));
    };
    let rebuild_secs = rebuild_start.elapsed().as_secs_f64();
    let (task, writes_at_end) = last;
    let task_done = r.task_wait(id);
    println!(
        "rebuild: {rebuild_secs:.1} s, guest writes {writes_at_start} at its start, \
         {writes_at_half:?} at 50%, {writes_at_end} at its end; {task_done}"
    );
    r.check(task["kind"] == "rebuild", || {
        format!("volume_recover started {task}")
    });
    let half = writes_at_half.unwrap_or(writes_at_end);
    r.check(half > writes_at_start && writes_at_end > half, || {
        format!(
            "guest writes during the rebuild: {writes_at_start} at its start, {half} at 50%, \
             {writes_at_end} at its end ({rebuild_secs:.1} s): the guest's writes did not span \
             the rebuild"
        )
    });
    let stale = r.stale_columns();
    r.check(stale.is_empty(), || {
        format!("stale columns after the rebuild: {stale:?}")
    });
    let state = r.printed_state();
    r.check(state == ("ENABLED".into(), "ACTIVE".into()), || {
        format!("rebuilt volume in vm_print: {state:?}")
    });
    r.expect_marker("R5-C-DONE");

    // 3. Every row's parity agrees with its data; the guest verifies both regions.
    let check = r.call("volume_check", json!({"dg": DG, "name": VOL}));
    let scrub = r.task_wait(num(&check, "task"));
    r.check(scrub["result"]["mismatch_rows"] == 0, || {
        format!("the scrub after the rebuild found parity mismatches: {scrub}")
    });
    r.tell("rebuilt");
    drop(r.ctl.take());
    let g = r.guest.take().map(BackgroundGuest::finish);
    let g = g.unwrap_or_else(|| r.fail("no guest"));
    r.t.expect_pass("raid5-check.sh", &g);
    assert!(g.log.contains("raid5-check: PASS"), "{}", g.log);
    let vs = r.iostat(VOL_BDEV);
    assert_eq!(vs["io_error"], 0, "the volume failed a request: {vs}");
    assert_eq!(r.t.plexd.stop(libc::SIGTERM), Some(0), "plexd exit status");
    println!(
        "vhost_raid5: {:.1} s in all, rebuild {rebuild_secs:.1} s",
        started.elapsed().as_secs_f64()
    );
}
