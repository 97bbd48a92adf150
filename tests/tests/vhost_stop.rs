//! Control operations that meet requests in flight on a vhost-user-blk ring: stopping a ring
//! whose requests are held in a slow bdev, and changing the memory table while a reactor
//! serves the ring. plexd's engine and a vhost controller run in this process (so the tests
//! can hold requests with the error bdev and shorten the controller's stop wait), and the
//! test plays QEMU and the guest with `plexd_tests::vhost_client`.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexd::vhost::controller::{Controller, Controllers};
use plexd_control::MethodTable;
use plexd_engine::reactor::PollMode;
use plexd_engine::volume::VolumeManager;
use plexd_engine::Engine;
use plexd_tests::vhost_client::*;
use serde_json::{json, Value};
use vhost::VhostBackend;

/// plexd in this process: one reactor, the RPC methods, the vhost controllers.
struct InProc {
    engine: Arc<Engine>,
    methods: MethodTable,
    ctrls: Arc<Controllers>,
    dir: tempfile::TempDir,
}

impl InProc {
    fn start(stop_wait: Duration) -> InProc {
        let engine = Engine::start(&[0], PollMode::Adaptive).expect("engine");
        let mut methods = MethodTable::new();
        let volumes = VolumeManager::new(engine.clone());
        plexd_engine::register_rpcs(&mut methods, &engine, &volumes);
        let dir = tempfile::tempdir().expect("socket dir");
        let ctrls = Controllers::new(engine.clone(), dir.path().to_path_buf());
        ctrls.set_stop_wait(stop_wait);
        InProc {
            engine,
            methods,
            ctrls,
            dir,
        }
    }

    fn call(&self, method: &str, params: Value) -> Value {
        let m = self
            .methods
            .get(method)
            .unwrap_or_else(|| panic!("no method {method}"));
        (m.handler)(Some(params)).unwrap_or_else(|e| panic!("{method}: {}", e.message))
    }

    fn export(&self, ctrlr: &str, bdev: &str) -> Arc<Controller> {
        self.ctrls
            .create(ctrlr, bdev, false, None, "0x1".into())
            .expect("create controller")
    }

    fn connect(&self, ctrlr: &str) -> Client {
        Client::connect(&self.dir.path().join(ctrlr), &ClientOpts::default()).expect("connect")
    }

    fn stop(self) {
        self.ctrls.shutdown_all();
        self.engine.shutdown();
    }
}

/// Restarts queue 0 at `base` (what QEMU does after GET_VRING_BASE: SET_VRING_BASE with the
/// base it got, then the kick fd and enable).
fn restart_at(c: &mut Client, base: u32) -> Result<(), String> {
    let i = c.vq.index as usize;
    c.fe.set_vring_base(i, base as u16)
        .map_err(|e| format!("SET_VRING_BASE: {e}"))?;
    c.fe.set_vring_kick(i, &c.vq.kick)
        .map_err(|e| format!("SET_VRING_KICK: {e}"))?;
    c.fe_set_vring_enable(true)
}

/// A ring stop that outlasts the stop wait must not hand back a base while the old worker
/// still owns the ring: otherwise the front-end restarts the ring at a stale base, a second
/// worker runs the same heads again and both write the used ring.
#[test]
fn ring_stop_waits_for_held_request() {
    let p = InProc::start(Duration::from_millis(100));
    p.call(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 16384, "block_size": 512}),
    );
    p.call("bdev_error_create", json!({"base_name": "M0"}));
    let ctrl = p.export("held", "EE_M0");
    let mut c = p.connect("held");
    let mem = c.mem.clone();
    // The next write is held in the error bdev until the injection is cleared.
    p.call(
        "bdev_error_inject_error",
        json!({"name": "EE_M0", "io_type": "write", "error_type": "pending", "num": 1}),
    );
    let h = c.heap.put(&mem, &blk_header(VIRTIO_BLK_T_OUT, 0));
    let d = c.heap.put(&mem, &data_pattern(1, 4096));
    let s = c.heap.alloc(1);
    mem.write(s, &[0xEE]);
    let write = c.vq.set_chain(
        &mem,
        0,
        &[Desc::ro(h, 16), Desc::ro(d, 4096), Desc::wo(s, 1)],
    );
    let gh = c.heap.put(&mem, &blk_header(VIRTIO_BLK_T_GET_ID, 0));
    let id = c.heap.alloc(20);
    let gs = c.heap.alloc(1);
    let get_id = c.vq.set_chain(
        &mem,
        3,
        &[Desc::ro(gh, 16), Desc::wo(id, 20), Desc::wo(gs, 1)],
    );
    // Requests are fetched in ring order: once GET_ID completed, the write is held.
    c.vq.push_many(&mem, &[write, get_id]);
    let u = c.vq.wait_used(&mem, IO_TIMEOUT).expect("GET_ID completes");
    assert_eq!(u.id, get_id as u32, "first completion");

    // QEMU stops the ring (GET_VRING_BASE) and restarts it at the base it was given.
    let (tx, rx) = mpsc::channel();
    let fe = std::thread::spawn(move || {
        let r = c
            .stop_queue()
            .and_then(|base| restart_at(&mut c, base).map(|()| base));
        let _ = tx.send(());
        (c, r)
    });
    // Wait until the stop has outlasted its wait twice (a fixed plexd keeps waiting), or
    // until the front-end got a base and restarted the ring (what the old code allowed).
    let end = Instant::now() + Duration::from_secs(10);
    while ctrl.stop_overruns() < 2 && rx.try_recv().is_err() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let overruns = ctrl.stop_overruns();
    p.call(
        "bdev_error_inject_error",
        json!({"name": "EE_M0", "io_type": "clear"}),
    );
    let (mut c, r) = fe.join().expect("front-end thread");
    let base = r.expect("GET_VRING_BASE and restart");
    // One more request after the restart; then look at everything the device published.
    let fh = c.heap.put(&mem, &blk_header(VIRTIO_BLK_T_GET_ID, 0));
    let fid = c.heap.alloc(20);
    let fs = c.heap.alloc(1);
    let fence = c.vq.set_chain(
        &mem,
        6,
        &[Desc::ro(fh, 16), Desc::wo(fid, 20), Desc::wo(fs, 1)],
    );
    c.vq.push(&mem, fence);
    let mut seen = Vec::new();
    while let Some(u) = c.vq.wait_used(&mem, IO_TIMEOUT) {
        seen.push(u);
        if u.id == fence as u32 || seen.len() > 8 {
            break;
        }
    }
    let used_idx = c.vq.used_idx(&mem);
    let status = mem.byte(s);
    drop(c);
    p.stop();
    let expected = vec![
        Used {
            id: write as u32,
            len: 1,
        },
        Used {
            id: fence as u32,
            len: 21,
        },
    ];
    assert!(
        overruns >= 1,
        "the stop never outlasted its wait: the write was not held"
    );
    assert!(
        base == 2 && seen == expected && used_idx == 3 && status == VIRTIO_BLK_S_IOERR,
        "GET_VRING_BASE returned {base} (want 2: both requests were fetched); after the \
         restart the device published {seen:?} (want the held write once, then the fence: \
         {expected:?}), used index {used_idx} (want 3), write status {status} (want IOERR: \
         the held write was cancelled)"
    );
}

/// Reads `data.len()` bytes at `sector` into `buf` (in guest memory `bufmem`) with the header
/// and status in the client's heap; the status byte is pre-zeroed, as drivers that read a
/// zero status as success do. Returns (used element, status byte).
fn read_into(c: &mut Client, sector: u64, bufmem: &GuestMem, buf: u64, len: u32) -> (u16, u64) {
    let mem = c.mem.clone();
    bufmem.fill(buf, len as usize, 0);
    let h = c.heap.put(&mem, &blk_header(VIRTIO_BLK_T_IN, sector));
    let s = c.heap.alloc(1);
    mem.write(s, &[VIRTIO_BLK_S_OK]);
    let head = c.vq.set_chain(
        &mem,
        0,
        &[Desc::ro(h, 16), Desc::wo(buf, len), Desc::wo(s, 1)],
    );
    (head, s)
}

/// A memory region added with ADD_MEM_REG is used by every request the front-end submits
/// after the device acknowledged it. The reactor is held right after it applied its pending
/// commands (before it reads the available ring), the front-end adds a region and, once
/// acknowledged, submits a read into it. The old code acknowledged before the reactor had
/// the new table, so the request was parsed against the old one and returned with used
/// length 0 and no status: "success" with nothing read for a driver that pre-zeroes status.
#[test]
fn request_after_add_mem_reg_uses_the_new_region() {
    use plexd::vhost::vring::hooks::AFTER_CMDS;
    let p = InProc::start(Duration::from_secs(5));
    p.call(
        "bdev_malloc_create",
        json!({"name": "M1", "num_blocks": 16384, "block_size": 512}),
    );
    p.export("memadd", "M1");
    let mut c = p.connect("memadd");
    let data = data_pattern(7, 65536);
    c.write_read_check(64, &data).expect("write the data");
    let extra = Arc::new(GuestMem::new_at(1 << 20, c.mem.end() + (1 << 20)));

    AFTER_CMDS.arm("memadd");
    // Wake the reactor (it may sleep on the kick fd): every iteration polls every worker.
    p.engine.reactors().send_msg(0, || {});
    assert!(
        AFTER_CMDS.wait_held(Duration::from_secs(10)),
        "the reactor never reached the hook"
    );
    let (tx, rx) = mpsc::channel();
    let x = extra.clone();
    let fe = std::thread::spawn(move || {
        let r = c.add_mem_region(&x);
        let (head, s) = read_into(&mut c, 64, &x, x.start(), 65536);
        let mem = c.mem.clone();
        c.vq.push(&mem, head);
        let _ = tx.send(());
        (c, r, head, s)
    });
    // The old code lets the front-end publish while the reactor is held; a fixed plexd
    // acknowledges only once the reactor applied the table, i.e. after the release. The
    // bound only costs time with the fix; it does not decide the outcome.
    let published_while_held = rx.recv_timeout(Duration::from_secs(1)).is_ok();
    AFTER_CMDS.release();
    let (mut c, r, head, s) = fe.join().expect("front-end thread");
    r.expect("ADD_MEM_REG");
    let mem = c.mem.clone();
    let u = c.vq.wait_used(&mem, IO_TIMEOUT);
    let status = mem.byte(s);
    let got = extra.read_vec(extra.start(), 65536);
    drop(c);
    p.stop();
    assert!(
        u == Some(Used {
            id: head as u32,
            len: 65537
        }) && status == VIRTIO_BLK_S_OK
            && got == data,
        "read into the added region: completion {u:?} (want id {head} len 65537), status \
         {status}, data {} (ADD_MEM_REG acknowledged while the reactor was held: \
         {published_while_held})",
        if got == data {
            "correct"
        } else if got.iter().all(|&b| b == 0) {
            "all zero"
        } else {
            "wrong"
        }
    );
}

/// Rounds of: connect, ADD_MEM_REG a fresh region, read 64 KiB into it at once, check data,
/// status and used length, REM_MEM_REG, disconnect; while another connection keeps the same
/// reactor busy. Returns the first failure.
fn memory_region_rounds(rounds: u32) -> Result<(), String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let p = InProc::start(Duration::from_secs(5));
    for (name, ctrlr) in [("S0", "soak"), ("L0", "load")] {
        p.call(
            "bdev_malloc_create",
            json!({"name": name, "num_blocks": 16384, "block_size": 512}),
        );
        p.export(ctrlr, name);
    }
    let chunks: Vec<Vec<u8>> = (0..8).map(|i| data_pattern(100 + i, 65536)).collect();
    {
        let mut c = p.connect("soak");
        for (i, d) in chunks.iter().enumerate() {
            c.write_read_check(i as u64 * 128, d)?;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = p.connect("load");
    let s2 = stop.clone();
    let loader = std::thread::spawn(move || -> Result<u64, String> {
        let mut n = 0u64;
        while !s2.load(Ordering::Relaxed) {
            load.write_read_check((n % 64) * 8, &data_pattern(n, 4096))?;
            n += 1;
        }
        Ok(n)
    });
    let mut result = Ok(());
    for round in 0..rounds {
        let r = (|| -> Result<(), String> {
            // Small guest memory: the client fills its heap with a pattern at every connect.
            let opts = ClientOpts {
                mem_size: 2 << 20,
                ..ClientOpts::default()
            };
            let mut c = Client::connect(&p.dir.path().join("soak"), &opts)?;
            // A new region each round, at an address the table never had.
            let gpa = c.mem.end() + (1 << 20) + (round as u64 % 16) * (1 << 20);
            let region = GuestMem::new_at(128 << 10, gpa);
            c.add_mem_region(&region)?;
            let i = round as usize % chunks.len();
            let (head, s) = read_into(&mut c, i as u64 * 128, &region, region.start(), 65536);
            let mem = c.mem.clone();
            c.vq.push(&mem, head);
            let u = c.vq.wait_used(&mem, IO_TIMEOUT);
            let status = mem.byte(s);
            let got = region.read_vec(region.start(), 65536);
            if u != Some(Used {
                id: head as u32,
                len: 65537,
            }) || status != VIRTIO_BLK_S_OK
                || got != chunks[i]
            {
                return Err(format!(
                    "completion {u:?}, status {status}, data {}",
                    if got == chunks[i] {
                        "correct"
                    } else if got.iter().all(|&b| b == 0) {
                        "all zero"
                    } else {
                        "wrong"
                    }
                ));
            }
            if round % 2 == 0 {
                c.remove_mem_region(&region)?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            result = Err(format!("round {round}: {e}"));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let loaded = loader.join().expect("loader thread");
    p.stop();
    result?;
    let n = loaded.map_err(|e| format!("the loading connection failed: {e}"))?;
    if n == 0 {
        return Err("the loading connection made no progress".into());
    }
    Ok(())
}

/// Short soak (runs by default): 300 connect / ADD_MEM_REG / read rounds under load.
#[test]
fn memory_region_rounds_under_load() {
    memory_region_rounds(300).unwrap_or_else(|e| panic!("{e}"));
}

/// Long soak: `PLEXD_SOAK_ROUNDS` rounds (default 3000).
#[test]
#[ignore = "soak: several minutes"]
fn memory_region_rounds_under_load_long() {
    let rounds = std::env::var("PLEXD_SOAK_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    memory_region_rounds(rounds).unwrap_or_else(|e| panic!("{e}"));
}
