//! The hot path makes no heap allocation: a counting global allocator watches the reactor
//! thread (where every request is submitted, driven and completed) over a window of 100k (and
//! then 200k) requests through every driver and through striped and mirrored volumes in
//! steady state (and write-zeroes and unmaps on a mirror whose new plex is on a disk without
//! them, so they are written as zero buffers; and, where a ramfs can be mounted, write-zeroes
//! and unmaps on uring and aio bdevs on a file system without fallocate) and must see none.
//! RAID-5 volumes (4 columns over RAM bdevs) are measured the same way: 4 KiB random writes
//! (read-modify-write), 4 KiB random reads, full-stripe sequential writes and a verify pass, in
//! full health and again degraded (one column failed by an error bdev failing its writes).
//! Threads of the test harness itself are not counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexd_control::MethodTable;
use plexd_engine::reactor::PollMode;
use plexd_engine::volume::manager::VolumeManager;
use plexd_engine::Engine;
use plexd_perf::{run_jobs, JobSpec, Workload};
use serde_json::json;

/// Counts allocations on marked (reactor) threads.
#[global_allocator]
static GLOBAL: plexd_perf::alloc_count::CountingAllocator =
    plexd_perf::alloc_count::CountingAllocator;

/// Runs `warmup + window*2 + tail` requests of `io_size` bytes and returns the allocations
/// seen while the middle `window` requests ran, for two consecutive windows.
fn allocations_in_windows(
    engine: &Arc<Engine>,
    bdev: &str,
    workload: Workload,
    io_size: usize,
    window: u64,
) -> (u64, u64, u64) {
    let warmup = 20_000;
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spec = JobSpec {
        bdev: bdev.to_string(),
        reactor: 0,
        workload,
        io_size,
        queue_depth: 64,
        read_pct: 50,
        duration: Some(Duration::from_secs(600)),
        max_ios: None,
        seed: 42,
        region: (0, 1),
        stop: Some(stop.clone()),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let e = engine.clone();
    let p = progress.clone();
    let runner = std::thread::spawn(move || {
        let r = run_jobs(&e, &[spec], p);
        let _ = tx.send(());
        r
    });
    let wait_for = |target: u64| {
        let end = Instant::now() + Duration::from_secs(120);
        while progress.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < end,
                "{bdev}: stuck below {target} requests"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        (
            progress.load(Ordering::Relaxed),
            plexd_perf::alloc_count::allocations(),
        )
    };
    let (p0, a0) = wait_for(warmup);
    let (p1, a1) = wait_for(p0 + window);
    let (p2, a2) = wait_for(p1 + 2 * window);
    stop.store(true, Ordering::Relaxed);
    let _ = rx.recv_timeout(Duration::from_secs(120));
    let results = runner.join().expect("runner thread").expect("job ran");
    assert_eq!(results[0].errors, 0, "{bdev}: requests failed");
    assert_eq!(results[0].miscompares, 0, "{bdev}: verify miscompared");
    eprintln!(
        "{bdev:>8} {:>9} {:>6}: {} allocations over {} requests, {} over {} requests",
        workload.name(),
        io_size,
        a1 - a0,
        p1 - p0,
        a2 - a1,
        p2 - p1
    );
    (a1 - a0, a2 - a1, p2 - p1)
}

/// 4 KiB: the small requests.
const SMALL: usize = 4096;
/// The RAID-5 volumes' stripe unit.
const STRIPE_UNIT_KB: usize = 16;
/// A full stripe of a 4-column RAID-5 volume: the data of one row (3 units), so each such
/// write, aligned, covers its row and computes parity without reading anything.
const FULL_STRIPE: usize = 3 * STRIPE_UNIT_KB * 1024;

/// `params` with `"dg": dg` added.
fn with_dg(params: &serde_json::Value, dg: &str) -> serde_json::Value {
    let mut p = params.clone();
    p["dg"] = json!(dg);
    p
}

/// The number of stale columns of volume `r5` of group `dg` (its RAID-5 plex).
fn stale_columns(call: &dyn Fn(&str, serde_json::Value) -> serde_json::Value, dg: &str) -> usize {
    let v = call("volume_list", json!({"dg": dg, "name": "r5"}));
    v[0]["plexes"][0]["stale_columns"]
        .as_array()
        .map_or(0, Vec::len)
}

/// Runs `n` 4 KiB random writes on `bdev` (outside any measured window) and checks none failed.
fn write_some(engine: &Arc<Engine>, bdev: &str, n: u64) {
    let spec = JobSpec {
        bdev: bdev.to_string(),
        reactor: 0,
        workload: Workload::RandWrite,
        io_size: SMALL,
        queue_depth: 8,
        read_pct: 0,
        duration: None,
        max_ios: Some(n),
        seed: 7,
        region: (0, 1),
        stop: None,
    };
    let r = run_jobs(engine, &[spec], Arc::new(AtomicU64::new(0))).expect("writes ran");
    assert_eq!(r[0].errors, 0, "{bdev}: writes failed");
}

/// A ramfs (a file system without any fallocate mode) mounted on a fresh directory and
/// unmounted on drop.
struct Ramfs(tempfile::TempDir);

impl Ramfs {
    /// Mounts one, or says why it cannot (mounting needs `CAP_SYS_ADMIN`).
    fn mount() -> Result<Ramfs, std::io::Error> {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir()?;
        let target = std::ffi::CString::new(dir.path().as_os_str().as_bytes())?;
        // SAFETY: every pointer is a valid NUL-terminated string alive for the call; ramfs
        // takes no mount data.
        let rc = unsafe {
            libc::mount(
                c"ramfs".as_ptr(),
                target.as_ptr(),
                c"ramfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Ramfs(dir))
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(target) = std::ffi::CString::new(self.0.path().as_os_str().as_bytes()) {
            // SAFETY: `target` is a valid NUL-terminated path alive for the call.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[test]
fn steady_state_io_makes_no_heap_allocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |n: &str| {
        let p = dir.path().join(n);
        let f = std::fs::File::create(&p).expect("create backing file");
        f.set_len(64 << 20).expect("size backing file");
        p.display().to_string()
    };
    let (uring_file, aio_file) = (file("uring.img"), file("aio.img"));
    let plain_file = file("plain.img");
    let ramfs = Ramfs::mount()
        .map_err(|e| eprintln!("SKIPPED the cases without fallocate: cannot mount a ramfs ({e})"))
        .ok();
    let engine = Engine::start(&[0], PollMode::Adaptive).expect("engine");
    engine
        .reactors()
        .call(0, plexd_perf::alloc_count::mark_this_thread)
        .expect("mark the reactor thread");
    // The counter must be live, or a zero below would prove nothing.
    let before = plexd_perf::alloc_count::allocations();
    engine
        .reactors()
        .call(0, || drop(std::hint::black_box(vec![1u8; 64])))
        .expect("allocate on the reactor");
    assert!(
        plexd_perf::alloc_count::allocations() > before,
        "the counting allocator is not installed"
    );
    let vm = VolumeManager::new(engine.clone());
    let mut t = MethodTable::new();
    plexd_engine::register_rpcs(&mut t, &engine, &vm);
    let call = |m: &str, p: serde_json::Value| {
        let method = t.get(m).unwrap_or_else(|| panic!("no method {m}"));
        (method.handler)(Some(p)).unwrap_or_else(|e| panic!("{m}: {}", e.message))
    };
    call(
        "bdev_null_create",
        json!({"name": "Null0", "num_blocks": 262144, "block_size": 512}),
    );
    call(
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": 32768, "block_size": 512}),
    );
    call(
        "bdev_malloc_create",
        json!({"name": "Malloc1", "num_blocks": 32768, "block_size": 512}),
    );
    call(
        "bdev_malloc_create",
        json!({"name": "Malloc2", "num_blocks": 32768, "block_size": 512}),
    );
    call(
        "bdev_uring_create",
        json!({"name": "Uring0", "filename": uring_file}),
    );
    call(
        "bdev_aio_create",
        json!({"name": "Aio0", "filename": aio_file}),
    );
    call("bdev_error_create", json!({"base_name": "Malloc1"}));
    call(
        "bdev_delay_create",
        json!({"name": "Delay0", "base_bdev_name": "Malloc2", "avg_read_latency": 5,
               "p99_read_latency": 10, "avg_write_latency": 5, "p99_write_latency": 10}),
    );
    for i in 0..4 {
        call(
            "bdev_malloc_create",
            json!({"name": format!("Disk{i}"), "num_blocks": 49152, "block_size": 512}),
        );
    }
    call(
        "dg_create",
        json!({"name": "dg", "disks": ["Disk0", "Disk1", "Disk2", "Disk3"]}),
    );
    call(
        "volume_create",
        json!({"dg": "dg", "name": "stripe", "size": "16M", "layout": "stripe", "ncol": 4}),
    );
    call(
        "volume_create",
        json!({"dg": "dg", "name": "mirror", "size": "16M", "layout": "mirror-stripe", "ncol": 2}),
    );
    // A mirror whose second plex is on an aio disk without fallocate (no write-zeroes, no
    // unmap): the volume keeps offering both, emulated on that disk.
    call(
        "bdev_malloc_create",
        json!({"name": "Disk4", "num_blocks": 49152, "block_size": 512}),
    );
    call(
        "bdev_aio_create",
        json!({"name": "Plain0", "filename": plain_file}),
    );
    call(
        "dg_create",
        json!({"name": "zdg", "disks": ["Disk4", "Plain0"]}),
    );
    call(
        "volume_create",
        json!({"dg": "zdg", "name": "zv", "size": "16M", "layout": "concat", "alloc": ["Disk4"]}),
    );
    let task = call(
        "plex_attach",
        json!({"dg": "zdg", "volume": "zv", "alloc": ["Plain0"]}),
    );
    let done = call("task_wait", json!({"id": task["task"]}));
    assert_eq!(done["state"], "done", "{done}");
    // RAID-5: 4 columns of 16 KiB stripe units over RAM bdevs (r5dg/r5), and the same over
    // error bdevs (r5f/r5) with one column failed: its disk fails every write, a few writes
    // make the volume record that column stale, and from then on it serves degraded.
    for i in 0..4 {
        call(
            "bdev_malloc_create",
            json!({"name": format!("R{i}"), "num_blocks": 49152, "block_size": 512}),
        );
        call(
            "bdev_malloc_create",
            json!({"name": format!("F{i}"), "num_blocks": 49152, "block_size": 512}),
        );
        call("bdev_error_create", json!({"base_name": format!("F{i}")}));
    }
    let raid5 = json!({"name": "r5", "size": "16M", "layout": "raid5", "ncol": 4,
                       "stripe_unit_kb": STRIPE_UNIT_KB});
    call(
        "dg_create",
        json!({"name": "r5dg", "disks": ["R0", "R1", "R2", "R3"]}),
    );
    call("volume_create", with_dg(&raid5, "r5dg"));
    // The same volume with skip_copy: full stripes go from the request's buffers.
    let mut raid5s = raid5.clone();
    raid5s["name"] = json!("r5s");
    raid5s["skip_copy"] = json!(true);
    call("volume_create", with_dg(&raid5s, "r5dg"));
    call(
        "dg_create",
        json!({"name": "r5f", "disks": ["EE_F0", "EE_F1", "EE_F2", "EE_F3"]}),
    );
    call("volume_create", with_dg(&raid5, "r5f"));
    call(
        "bdev_error_inject_error",
        json!({"name": "EE_F3", "io_type": "write", "error_type": "failure", "num": 1u64 << 40}),
    );
    write_some(&engine, "r5f/r5", 1000);
    assert_eq!(stale_columns(&call, "r5f"), 1, "r5f/r5 is not degraded");
    let mut cases = vec![
        ("Null0", Workload::RandRead, SMALL),
        ("Malloc0", Workload::RandRw, SMALL),
        ("Malloc0", Workload::Verify, SMALL),
        ("Uring0", Workload::RandRw, SMALL),
        ("Aio0", Workload::RandRw, SMALL),
        ("EE_Malloc1", Workload::RandRw, SMALL),
        ("Delay0", Workload::RandRw, SMALL),
        ("dg/stripe", Workload::RandRw, SMALL),
        ("dg/mirror", Workload::RandRw, SMALL),
        ("dg/mirror", Workload::Verify, SMALL),
        ("zdg/zv", Workload::WriteZeroes, SMALL),
        ("zdg/zv", Workload::Unmap, SMALL),
        ("r5dg/r5", Workload::RandWrite, SMALL),
        ("r5dg/r5", Workload::RandRead, SMALL),
        ("r5dg/r5", Workload::Write, FULL_STRIPE),
        ("r5dg/r5", Workload::Verify, SMALL),
        ("r5dg/r5s", Workload::Write, FULL_STRIPE),
        ("r5f/r5", Workload::RandWrite, SMALL),
        ("r5f/r5", Workload::RandRead, SMALL),
        ("r5f/r5", Workload::Write, FULL_STRIPE),
        ("r5f/r5", Workload::Verify, SMALL),
    ];
    if let Some(fs) = &ramfs {
        for (method, name) in [
            ("bdev_uring_create", "UringNoFalloc"),
            ("bdev_aio_create", "AioNoFalloc"),
        ] {
            let path = fs.0.path().join(format!("{name}.img"));
            std::fs::File::create(&path)
                .and_then(|f| f.set_len(16 << 20))
                .expect("file on the ramfs");
            let aio = method == "bdev_aio_create";
            let mut params = json!({"name": name, "filename": path.display().to_string()});
            if aio {
                params["fallocate"] = json!(true);
            }
            call(method, params);
            let b = call("bdev_get_bdevs", json!({"name": name}));
            let key = if aio { "aio" } else { "uring" };
            assert_eq!(
                b[0]["driver_specific"][key]["write_zeroes"], "emulated",
                "{b}"
            );
            cases.push((name, Workload::WriteZeroes, SMALL));
            cases.push((name, Workload::Unmap, SMALL));
        }
    }
    let mut failures = Vec::new();
    for (bdev, w, io_size) in cases {
        let (first, second, n) = allocations_in_windows(&engine, bdev, w, io_size, 100_000);
        assert!(n >= 200_000, "{bdev}: window too small ({n})");
        if first != 0 || second != 0 {
            failures.push(format!(
                "{bdev}/{}/{io_size}: {first} then {second}",
                w.name()
            ));
        }
    }
    // What was measured is what was meant: the healthy RAID-5 lost no column on the way, the
    // degraded one no second.
    assert_eq!(stale_columns(&call, "r5dg"), 0, "r5dg/r5 lost a column");
    assert_eq!(
        stale_columns(&call, "r5f"),
        1,
        "r5f/r5 lost a second column"
    );
    let plexes = call("volume_list", json!({"dg": "zdg", "name": "zv"}));
    for p in plexes[0]["plexes"].as_array().expect("plexes") {
        assert_eq!(p["state"], "ACTIVE", "write-zeroes detached a plex: {p}");
    }
    vm.shutdown();
    engine.shutdown();
    assert!(
        failures.is_empty(),
        "heap allocations on the I/O path: {failures:?}"
    );
}
