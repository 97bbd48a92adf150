//! Tests of the delay driver on a malloc base. Timings are checked as lower bounds only.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::bdev::{blocking, IoStatus};
use crate::drivers::malloc;
use crate::reactor::{InlineReactor, PollMode};

fn engine_with_delay(mode: PollMode, read_us: u64, write_us: u64) -> Arc<Engine> {
    let engine = Engine::start(&[0], mode).unwrap();
    malloc::rpc::create(
        &engine,
        json!({"name": "M0", "block_size": 512, "num_blocks": 256}),
    )
    .unwrap();
    let name = rpc::create(
        &engine,
        json!({
            "name": "D0", "base_bdev_name": "M0",
            "avg_read_latency": read_us, "p99_read_latency": read_us,
            "avg_write_latency": write_us, "p99_write_latency": write_us,
        }),
    )
    .unwrap();
    assert_eq!(name, json!("D0"));
    engine
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn reads_take_at_least_the_average_latency_and_return_the_data() {
    let engine = engine_with_delay(PollMode::Adaptive, 2000, 1000);
    let d = engine.bdevs().get("D0").unwrap();
    let m = engine.bdevs().get("M0").unwrap();
    let data = pattern(4096, 7);
    let t = Instant::now();
    blocking::write(&engine, &d, 8192, &data).unwrap();
    assert!(
        t.elapsed() >= Duration::from_micros(1000),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_eq!(blocking::read(&engine, &d, 8192, 4096).unwrap(), data);
    assert!(
        t.elapsed() >= Duration::from_micros(2000),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(blocking::read(&engine, &m, 8192, 4096).unwrap(), data);
    drop((d, m));
    engine.shutdown();
}

#[test]
fn interrupt_mode_reactor_wakes_for_the_deadline() {
    let engine = engine_with_delay(PollMode::Interrupt, 3000, 3000);
    let d = engine.bdevs().get("D0").unwrap();
    let data = pattern(1024, 3);
    blocking::write(&engine, &d, 0, &data).unwrap();
    for _ in 0..3 {
        // Nothing but the channel's deadline wakes the sleeping reactor to complete the read.
        let t = Instant::now();
        assert_eq!(blocking::read(&engine, &d, 0, 1024).unwrap(), data);
        assert!(
            t.elapsed() >= Duration::from_micros(3000),
            "{:?}",
            t.elapsed()
        );
    }
    drop(d);
    engine.shutdown();
}

#[test]
fn p99_below_average_is_rejected() {
    let engine = Engine::start(&[0], PollMode::Interrupt).unwrap();
    malloc::rpc::create(
        &engine,
        json!({"name": "M0", "block_size": 512, "num_blocks": 64}),
    )
    .unwrap();
    let params = |avg_r: u64, p99_r: u64, avg_w: u64, p99_w: u64| {
        json!({
            "name": "D0", "base_bdev_name": "M0",
            "avg_read_latency": avg_r, "p99_read_latency": p99_r,
            "avg_write_latency": avg_w, "p99_write_latency": p99_w,
        })
    };
    for bad in [params(100, 50, 10, 10), params(10, 10, 100, 99)] {
        let e = rpc::create(&engine, bad).unwrap_err();
        assert_eq!(e.code.code(), -(libc::EINVAL as i64), "{e}");
    }
    let e = rpc::create(
        &engine,
        params(MAX_LATENCY_US + 1, MAX_LATENCY_US + 1, 0, 0),
    )
    .unwrap_err();
    assert_eq!(e.code.code(), -(libc::EINVAL as i64), "{e}");
    // Nothing was created and the base was not left claimed.
    assert!(engine.bdevs().get("D0").is_err());
    assert!(engine.bdevs().get("M0").unwrap().claimed_by().is_none());

    rpc::create(&engine, params(100, 200, 10, 20)).unwrap();
    let upd = |t: &str, us: u64| {
        rpc::update_latency(
            &engine,
            json!({"delay_bdev_name": "D0", "latency_type": t, "latency_us": us}),
        )
    };
    let e = upd("p99_read", 50).unwrap_err();
    assert_eq!(e.code.code(), -(libc::EINVAL as i64), "{e}");
    let e = upd("avg_write", 21).unwrap_err();
    assert_eq!(e.code.code(), -(libc::EINVAL as i64), "{e}");
    let e = upd("median", 1).unwrap_err();
    assert_eq!(e.code.code(), -32602, "{e}");
    assert_eq!(upd("p99_read", 300).unwrap(), json!(true));
    assert_eq!(upd("avg_read", 300).unwrap(), json!(true));

    let d = engine.bdevs().get("D0").unwrap();
    let (key, info) = d.driver().driver_specific().unwrap();
    assert_eq!(key, "delay");
    assert_eq!(
        info,
        json!({"name": "D0", "base_bdev_name": "M0", "avg_read_latency": 300,
               "p99_read_latency": 300, "avg_write_latency": 10, "p99_write_latency": 20})
    );
    let cfg = d.driver().config(&d).unwrap();
    assert_eq!(cfg["method"], "bdev_delay_create");
    assert_eq!(cfg["params"]["p99_write_latency"], 20);
    assert_eq!(cfg["params"]["uuid"], json!(d.uuid().to_string()));
    drop(d);

    // Not a delay bdev / no such bdev.
    let e = rpc::update_latency(
        &engine,
        json!({"delay_bdev_name": "M0", "latency_type": "avg_read", "latency_us": 1}),
    )
    .unwrap_err();
    assert_eq!(e.code.code(), -(libc::EINVAL as i64), "{e}");
    let e = rpc::update_latency(
        &engine,
        json!({"delay_bdev_name": "nope", "latency_type": "avg_read", "latency_us": 1}),
    )
    .unwrap_err();
    assert_eq!(e.code.code(), -(libc::ENODEV as i64), "{e}");
    engine.shutdown();
}

#[test]
fn base_stays_claimed_until_the_delay_bdev_is_deleted() {
    let engine = engine_with_delay(PollMode::Adaptive, 10, 10);
    let e = engine.delete_bdev("M0", Some("Malloc disk")).unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY);
    // The delete method only deletes delay bdevs.
    let e = rpc::delete(&engine, json!({"name": "M0"})).unwrap_err();
    assert_eq!(e.code.code(), -(libc::ENODEV as i64));
    assert_eq!(
        rpc::delete(&engine, json!({"name": "D0"})).unwrap(),
        json!(true)
    );
    engine.delete_bdev("M0", Some("Malloc disk")).unwrap();
    assert!(engine.bdevs().list().is_empty());
    engine.shutdown();
}

struct Collect(RefCell<Vec<(u64, IoStatus)>>);

impl IoCompletion for Collect {
    fn io_done(&self, io: BdevIo) {
        self.0.borrow_mut().push((io.tag(), io.status()));
    }
}

#[test]
fn held_requests_complete_in_deadline_order_and_a_reset_releases_them() {
    let engine = engine_with_delay(PollMode::Interrupt, 5_000_000, 5_000_000);
    let d = engine.bdevs().get("D0").unwrap();
    let reactor = InlineReactor::new().unwrap();
    let ch = d.get_io_channel().unwrap();
    let done = Rc::new(Collect(RefCell::new(Vec::new())));
    for tag in 0..3 {
        let mut io = BdevIo::alloc();
        io.prep(IoType::Read, tag, 1);
        io.set_buf(crate::bdev::IoBuf::new(512), 512);
        io.set_callback(done.clone(), tag);
        ch.submit(io);
    }
    for _ in 0..100 {
        reactor.poll();
    }
    // Held for 5 s: nothing completed, and the channel asks to be woken by then.
    assert!(done.0.borrow().is_empty());
    let wake = crate::reactor::Poller::next_deadline(ch.as_ref()).unwrap();
    assert!(wake > tsc::ticks());
    let mut reset = BdevIo::alloc();
    reset.prep(IoType::Reset, 0, 0);
    reset.set_callback(done.clone(), 99);
    ch.submit(reset);
    assert!(reactor.poll_until(Duration::from_secs(10), || done.0.borrow().len() == 4));
    let got = done.0.borrow().clone();
    assert!(got.iter().all(|(_, s)| s.is_success()), "{got:?}");
    assert_eq!(
        got.iter()
            .map(|(t, _)| *t)
            .filter(|t| *t < 3)
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    drop((ch, reactor, d));
    engine.shutdown();
}

#[test]
fn reset_on_one_reactor_releases_requests_held_on_another() {
    // Cores 0 and 1, or twice core 0 on a one-CPU machine.
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let engine = Engine::start(&[0, u32::from(n > 1)], PollMode::Interrupt).unwrap();
    malloc::rpc::create(
        &engine,
        json!({"name": "M0", "block_size": 512, "num_blocks": 64}),
    )
    .unwrap();
    let minute = 60_000_000;
    rpc::create(
        &engine,
        json!({
            "name": "D0", "base_bdev_name": "M0",
            "avg_read_latency": minute, "p99_read_latency": minute,
            "avg_write_latency": 0, "p99_write_latency": 0,
        }),
    )
    .unwrap();
    let d = engine.bdevs().get("D0").unwrap();
    let data = pattern(512, 5);
    blocking::write(&engine, &d, 0, &data).unwrap();
    let rx = read_async_on(&engine, 1, &d);
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    // Resets are not delayed; the held read (due in a minute) is let go with its data.
    blocking::run_io(
        &engine,
        0,
        &d,
        IoType::Reset,
        0,
        0,
        None,
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        IoStatus::Success
    );
    drop(d);
    engine.shutdown();
}

struct Tx(crossbeam::channel::Sender<IoStatus>);

impl IoCompletion for Tx {
    fn io_done(&self, io: BdevIo) {
        let _ = self.0.send(io.status());
    }
}

/// Submits a one-block read of block 0 on reactor `r` without waiting for it.
fn read_async_on(
    engine: &Engine,
    r: usize,
    b: &Arc<Bdev>,
) -> crossbeam::channel::Receiver<IoStatus> {
    let (tx, rx) = crossbeam::channel::bounded(1);
    let b = b.clone();
    engine.reactors().send_msg(r, move || {
        let ch = b.get_io_channel().unwrap();
        let mut io = BdevIo::alloc();
        io.prep(IoType::Read, 0, 1);
        io.set_buf(crate::bdev::IoBuf::new(512), 512);
        io.set_callback(Rc::new(Tx(tx)), 0);
        ch.submit(io);
    });
    rx
}
