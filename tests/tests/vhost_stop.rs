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
        plexd_engine::register_rpcs(&mut methods, &engine);
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
