//! The vhost-user-blk hot path makes no heap allocation: plexd's engine and a vhost
//! controller run in this process, a client thread drives 4 KiB random reads and writes at
//! queue depth 32 through one virtqueue (EVENT_IDX, kicks only when the device asks), and a
//! counting global allocator watches the reactor thread (which fetches, parses, submits and
//! completes every request) over a window of 100k requests in steady state, then a second
//! one. Both must see none. Threads of the test itself and the vhost control thread are not
//! counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexd::vhost::controller::Controllers;
use plexd_control::MethodTable;
use plexd_engine::reactor::PollMode;
use plexd_engine::volume::VolumeManager;
use plexd_engine::Engine;
use plexd_tests::vhost_client::*;

/// Counts allocations on marked (reactor) threads.
#[global_allocator]
static GLOBAL: plexd_perf::alloc_count::CountingAllocator =
    plexd_perf::alloc_count::CountingAllocator;
use serde_json::json;

const QD: u16 = 32;
const IO: u32 = 4096;
const BLOCKS_4K: u64 = 8192; // 32 MiB malloc bdev

/// What the client thread reports.
#[derive(Debug, Default)]
struct Outcome {
    completed: u64,
    errors: Vec<String>,
}

/// Drives QD random 4 KiB reads/writes until `stop`; counts completions in `progress`.
fn drive(mut c: Client, progress: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Outcome {
    let mem = c.mem.clone();
    c.vq.always_kick = false;
    let mut out = Outcome::default();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Per slot: header, 4 KiB data, status, in descriptors 3i, 3i+1, 3i+2.
    let slots: Vec<(u64, u64, u64)> = (0..QD)
        .map(|_| {
            let h = c.heap.alloc(16);
            let d = c.heap.alloc(IO as u64);
            let s = c.heap.alloc(1);
            (h, d, s)
        })
        .collect();
    let mut is_read = vec![false; QD as usize];
    // Writes a fresh random request into slot `i`; returns its head.
    let prepare = |i: u16, c: &mut Client, is_read: &mut [bool], r: u64| -> u16 {
        let (h, d, s) = slots[i as usize];
        let read = r & 1 == 0;
        is_read[i as usize] = read;
        let sector = (r >> 8) % BLOCKS_4K * 8;
        let t = if read {
            VIRTIO_BLK_T_IN
        } else {
            VIRTIO_BLK_T_OUT
        };
        mem.write(h, &blk_header(t, sector));
        mem.write(s, &[0xEE]);
        let data = if read {
            Desc::wo(d, IO)
        } else {
            Desc::ro(d, IO)
        };
        c.vq.set_chain(&mem, i * 3, &[Desc::ro(h, 16), data, Desc::wo(s, 1)])
    };
    let heads: Vec<u16> = (0..QD)
        .map(|i| prepare(i, &mut c, &mut is_read, next()))
        .collect();
    c.vq.push_many(&mem, &heads);
    let mut again = Vec::with_capacity(QD as usize);
    let mut idle_since = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        again.clear();
        while let Some(u) = c.vq.pop_used(&mem) {
            let i = (u.id / 3) as u16;
            if u.id % 3 != 0 || i >= QD {
                out.errors
                    .push(format!("completion for descriptor {}", u.id));
                return out;
            }
            let (_, _, s) = slots[i as usize];
            let want_len = if is_read[i as usize] { IO + 1 } else { 1 };
            let st = mem.byte(s);
            if st != VIRTIO_BLK_S_OK || u.len != want_len {
                out.errors.push(format!(
                    "request in slot {i}: status {st}, used length {} (want {want_len})",
                    u.len
                ));
                if out.errors.len() > 10 {
                    return out;
                }
            }
            out.completed += 1;
            again.push(prepare(i, &mut c, &mut is_read, next()));
        }
        if again.is_empty() {
            if idle_since.elapsed() > Duration::from_secs(10) {
                out.errors.push("no completion for 10 s".into());
                return out;
            }
            std::hint::spin_loop();
            continue;
        }
        idle_since = Instant::now();
        progress.store(out.completed, Ordering::Relaxed);
        c.vq.push_many(&mem, &again);
    }
    // Drain what is in flight before disconnecting.
    let end = Instant::now() + Duration::from_secs(10);
    while c.vq.last_used() != c.vq.avail_idx() && Instant::now() < end {
        let _ = c.vq.pop_used(&mem);
    }
    out
}

#[test]
fn vhost_hot_path_makes_no_heap_allocation() {
    let engine = Engine::start(&[0], PollMode::Adaptive).expect("engine");
    engine
        .reactors()
        .call(0, plexd_perf::alloc_count::mark_this_thread)
        .expect("mark the reactor thread");
    let mut t = MethodTable::new();
    let volumes = VolumeManager::new(engine.clone());
    plexd_engine::register_rpcs(&mut t, &engine, &volumes);
    let create = t.get("bdev_malloc_create").expect("bdev_malloc_create");
    (create.handler)(Some(
        json!({"name": "Malloc0", "num_blocks": BLOCKS_4K * 8, "block_size": 512}),
    ))
    .unwrap_or_else(|e| panic!("bdev_malloc_create: {}", e.message));
    let dir = tempfile::tempdir().expect("socket dir");
    let ctrls = Controllers::new(engine.clone(), dir.path().to_path_buf());
    ctrls
        .create("vhost.alloc", "Malloc0", false, None, "0x1".into())
        .expect("create controller");

    let opts = ClientOpts {
        queue_size: 128,
        ..ClientOpts::default()
    };
    let client = Client::connect(&dir.path().join("vhost.alloc"), &opts).expect("connect");
    assert_ne!(
        client.features & VIRTIO_RING_F_EVENT_IDX,
        0,
        "EVENT_IDX not negotiated"
    );
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (progress.clone(), stop.clone());
    let runner = std::thread::spawn(move || drive(client, p, s));

    let wait_for = |target: u64| {
        let end = Instant::now() + Duration::from_secs(300);
        while progress.load(Ordering::Relaxed) < target {
            if runner.is_finished() || Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Some((
            progress.load(Ordering::Relaxed),
            plexd_perf::alloc_count::allocations(),
            Instant::now(),
        ))
    };
    let window = 100_000;
    let marks = wait_for(20_000).and_then(|m0| {
        let m1 = wait_for(m0.0 + window)?;
        let m2 = wait_for(m1.0 + window)?;
        Some((m0, m1, m2))
    });
    stop.store(true, Ordering::Relaxed);
    let outcome = runner.join().expect("client thread");
    assert!(
        outcome.errors.is_empty(),
        "requests failed: {:?}",
        outcome.errors
    );
    let ((p0, a0, t0), (p1, a1, t1), (p2, a2, t2)) =
        marks.expect("the client stalled before finishing both windows");
    let iops = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    eprintln!(
        "vhost-user-blk QD{QD} 4k randrw: {a0} allocations on the reactor during set-up and warm-up; {} allocations over {} requests ({:.0} IOPS), {} over {} requests ({:.0} IOPS); {} requests in all",
        a1 - a0,
        p1 - p0,
        iops(p1 - p0, t1 - t0),
        a2 - a1,
        p2 - p1,
        iops(p2 - p1, t2 - t1),
        outcome.completed
    );
    ctrls.shutdown_all();
    engine.shutdown();
    assert!(p1 - p0 >= window && p2 - p1 >= window);
    // Starting the queue allocated on the reactor: zero below means "none", not "not counted".
    assert!(
        a0 > 0,
        "no allocation was ever counted on the reactor: the counter is not watching it"
    );
    assert_eq!(
        (a1 - a0, a2 - a1),
        (0, 0),
        "heap allocations on the reactor while serving the virtqueue"
    );
}
