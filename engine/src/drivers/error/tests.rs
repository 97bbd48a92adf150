//! Tests of the error driver on a malloc base, through the RPC handlers.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::bdev::blocking::{self, BlockingIoError};
use crate::bdev::{BdevIo, IoBuf, IoCompletion, IoStatus, IoType};
use crate::drivers::malloc;
use crate::reactor::{InlineReactor, PollMode};

const BS: u64 = 512;

fn engine_with_ee(mode: PollMode) -> Arc<Engine> {
    let engine = Engine::start(&[0], mode).unwrap();
    malloc::rpc::create(
        &engine,
        json!({"name": "M0", "block_size": BS, "num_blocks": 256}),
    )
    .unwrap();
    let name = rpc::create(&engine, json!({"base_name": "M0"})).unwrap();
    assert_eq!(name, json!("EE_M0"));
    engine
}

fn bdevs(engine: &Engine) -> (Arc<Bdev>, Arc<Bdev>) {
    (
        engine.bdevs().get("EE_M0").unwrap(),
        engine.bdevs().get("M0").unwrap(),
    )
}

fn inject(engine: &Engine, p: Value) -> Result<Value, plexd_control::RpcError> {
    let mut p = p;
    p["name"] = json!("EE_M0");
    rpc::inject_error(engine, p)
}

fn crash_mode(engine: &Engine, mode: &str, count: Option<u64>) {
    let mut p = json!({"name": "EE_M0", "mode": mode});
    if let Some(c) = count {
        p["count"] = json!(c);
    }
    assert_eq!(rpc::set_crash_mode(engine, p).unwrap(), json!(true));
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}

fn errno(r: Result<Vec<u8>, BlockingIoError>) -> i32 {
    match r {
        Err(BlockingIoError::Failed { errno, .. }) => errno,
        other => panic!("expected a failed request, got {other:?}"),
    }
}

fn flush(engine: &Engine, b: &Arc<Bdev>) -> Result<Vec<u8>, BlockingIoError> {
    blocking::run_io(
        engine,
        0,
        b,
        IoType::Flush,
        0,
        b.num_blocks() * BS,
        None,
        Duration::from_secs(30),
    )
}

#[test]
fn writes_pass_through_and_read_back_from_both() {
    let engine = engine_with_ee(PollMode::Adaptive);
    let (ee, m) = bdevs(&engine);
    assert_eq!(ee.block_size(), m.block_size());
    assert_eq!(ee.num_blocks(), m.num_blocks());
    assert_eq!(ee.driver().product_name(), "Error Injection Disk");
    assert_eq!(m.claimed_by().as_deref(), Some("error bdev EE_M0"));
    let data = pattern(4096, 1);
    blocking::write(&engine, &ee, 2048, &data).unwrap();
    assert_eq!(blocking::read(&engine, &m, 2048, 4096).unwrap(), data);
    assert_eq!(blocking::read(&engine, &ee, 2048, 4096).unwrap(), data);
    flush(&engine, &ee).unwrap();
    let (key, info) = ee.driver().driver_specific().unwrap();
    assert_eq!(key, "error_disk");
    assert_eq!(
        info,
        json!({"base_bdev": "M0", "crash_mode": "none", "injections": {}})
    );
    let cfg = ee.driver().config(&ee).unwrap();
    assert_eq!(
        cfg,
        json!({"method": "bdev_error_create",
               "params": {"base_name": "M0", "uuid": ee.uuid().to_string()}})
    );
    assert_eq!(ee.iostat().num_write_ops, 1);
    assert_eq!(m.iostat().num_write_ops, 1);
    drop((ee, m));
    engine.shutdown();
}

#[test]
fn read_failures_hit_exactly_num_reads() {
    let engine = engine_with_ee(PollMode::Adaptive);
    let (ee, _m) = bdevs(&engine);
    inject(
        &engine,
        json!({"io_type": "read", "error_type": "failure", "num": 2}),
    )
    .unwrap();
    assert_eq!(errno(blocking::read(&engine, &ee, 0, 512)), libc::EIO);
    assert_eq!(errno(blocking::read(&engine, &ee, 0, 512)), libc::EIO);
    blocking::read(&engine, &ee, 0, 512).unwrap();
    drop(_m);
    drop(ee);
    engine.shutdown();
}

#[test]
fn write_injection_leaves_reads_alone() {
    let engine = engine_with_ee(PollMode::Adaptive);
    let (ee, m) = bdevs(&engine);
    let data = pattern(1024, 2);
    blocking::write(&engine, &ee, 0, &data).unwrap();
    inject(
        &engine,
        json!({"io_type": "write", "error_type": "failure"}),
    )
    .unwrap();
    assert_eq!(blocking::read(&engine, &ee, 0, 1024).unwrap(), data);
    let info = ee.driver().driver_specific().unwrap().1;
    assert_eq!(info["injections"]["write"]["remaining"], 1);
    let r = blocking::write(&engine, &ee, 0, &pattern(1024, 9));
    assert!(
        matches!(
            r,
            Err(BlockingIoError::Failed {
                errno: libc::EIO,
                ..
            })
        ),
        "{r:?}"
    );
    // The failed write never reached the base.
    assert_eq!(blocking::read(&engine, &m, 0, 1024).unwrap(), data);
    drop((ee, m));
    engine.shutdown();
}

#[test]
fn corrupt_read_flips_exactly_one_byte_and_leaves_the_base_alone() {
    let engine = engine_with_ee(PollMode::Adaptive);
    let (ee, m) = bdevs(&engine);
    let data = pattern(2048, 3);
    blocking::write(&engine, &ee, 0, &data).unwrap();
    inject(
        &engine,
        json!({"io_type": "read", "error_type": "corrupt_data",
               "corrupt_offset": 700, "corrupt_value": 0x41}),
    )
    .unwrap();
    let got = blocking::read(&engine, &ee, 0, 2048).unwrap();
    let diffs: Vec<usize> = (0..data.len()).filter(|&i| got[i] != data[i]).collect();
    assert_eq!(diffs, [700]);
    assert_eq!(got[700], data[700] ^ 0x41);
    assert_eq!(blocking::read(&engine, &ee, 0, 2048).unwrap(), data);
    assert_eq!(blocking::read(&engine, &m, 0, 2048).unwrap(), data);
    drop((ee, m));
    engine.shutdown();
}

#[test]
fn corrupt_write_reaches_the_base_but_not_the_callers_buffer() {
    let engine = engine_with_ee(PollMode::Interrupt);
    let (ee, m) = bdevs(&engine);
    inject(
        &engine,
        json!({"io_type": "write", "error_type": "corrupt_data",
               "corrupt_offset": 5, "corrupt_value": 0xff}),
    )
    .unwrap();
    let data = pattern(512, 4);
    {
        let reactor = InlineReactor::new().unwrap();
        let mut buf = IoBuf::new(512);
        buf.as_mut_slice().copy_from_slice(&data);
        let mut io = BdevIo::alloc();
        io.prep(IoType::Write, 1, 1);
        io.set_buf(buf, 512);
        let done = blocking::submit_inline(&reactor, &ee, io).unwrap();
        assert!(done.status().is_success());
        assert_eq!(done.buf().unwrap().as_slice(), &data[..]);
    }
    let stored = blocking::read(&engine, &m, 512, 512).unwrap();
    let diffs: Vec<usize> = (0..512).filter(|&i| stored[i] != data[i]).collect();
    assert_eq!(diffs, [5]);
    drop((ee, m));
    engine.shutdown();
}

#[test]
fn nomem_requests_are_retried_and_succeed() {
    let engine = engine_with_ee(PollMode::Interrupt);
    let (ee, _) = bdevs(&engine);
    let data = pattern(512, 5);
    inject(
        &engine,
        json!({"io_type": "all", "error_type": "nomem", "num": 3}),
    )
    .unwrap();
    blocking::write(&engine, &ee, 0, &data).unwrap();
    assert_eq!(blocking::read(&engine, &ee, 0, 512).unwrap(), data);
    // Every retry of the write and of the read was refused again until their slots ran out;
    // the other types stay armed.
    let info = ee.driver().driver_specific().unwrap().1;
    assert_eq!(info["injections"]["write"], Value::Null);
    assert_eq!(info["injections"]["read"], Value::Null);
    assert_eq!(info["injections"]["unmap"]["remaining"], 3);
    assert!(ee.iostat().num_io_errors == 0);
    drop(ee);
    engine.shutdown();
}

struct Tx(crossbeam::channel::Sender<IoStatus>);

impl IoCompletion for Tx {
    fn io_done(&self, io: BdevIo) {
        let _ = self.0.send(io.status());
    }
}

/// Submits a one-block read on reactor 0 without waiting for it.
fn read_async(engine: &Engine, b: &Arc<Bdev>) -> crossbeam::channel::Receiver<IoStatus> {
    read_async_on(engine, 0, b)
}

/// Submits a one-block read on reactor `r` without waiting for it.
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
        io.set_buf(IoBuf::new(BS as usize), BS as usize);
        io.set_callback(Rc::new(Tx(tx)), 0);
        ch.submit(io);
    });
    rx
}

#[test]
fn pending_requests_wait_for_clear_then_fail() {
    for mode in [PollMode::Adaptive, PollMode::Interrupt] {
        let engine = engine_with_ee(mode);
        let (ee, _) = bdevs(&engine);
        inject(
            &engine,
            json!({"io_type": "read", "error_type": "pending", "num": 2}),
        )
        .unwrap();
        let a = read_async(&engine, &ee);
        let b = read_async(&engine, &ee);
        assert!(a.recv_timeout(Duration::from_millis(100)).is_err());
        assert!(b.try_recv().is_err());
        // Writes are not held.
        blocking::write(&engine, &ee, 0, &[0u8; 512]).unwrap();
        assert!(a.try_recv().is_err());
        inject(
            &engine,
            json!({"io_type": "clear", "error_type": "pending"}),
        )
        .unwrap();
        for rx in [a, b] {
            let st = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(st, IoStatus::Failed(libc::ECANCELED));
        }
        blocking::read(&engine, &ee, 0, 512).unwrap();
        drop(ee);
        engine.shutdown();
    }
}

/// `hold` keeps a write from the base until a clear, then lets it land (late, but whole).
#[test]
fn held_writes_land_when_cleared() {
    let engine = engine_with_ee(PollMode::Adaptive);
    let (ee, base) = bdevs(&engine);
    inject(
        &engine,
        json!({"io_type": "write", "error_type": "hold", "num": 1}),
    )
    .unwrap();
    let data = pattern(512, 7);
    let io = blocking::start_io(&engine, 0, &ee, IoType::Write, 0, 512, Some(&data)).unwrap();
    assert!(matches!(
        io.wait(Duration::from_millis(100)),
        Err(BlockingIoError::TimedOut(_))
    ));
    assert_eq!(
        blocking::read(&engine, &base, 0, 512).unwrap(),
        vec![0u8; 512]
    );
    inject(&engine, json!({"io_type": "clear", "error_type": "hold"})).unwrap();
    io.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(blocking::read(&engine, &base, 0, 512).unwrap(), data);
    drop((ee, base));
    engine.shutdown();
}

/// A blocking request handed over (`PendingIo::hand_over`) reports its completion to the new
/// owner, and one whose waiter went away still completes into its own buffer: a held read
/// dropped and a held write handed over both land once cleared, without the waiter.
#[test]
fn held_requests_handed_over_or_dropped_complete_safely() {
    let engine = engine_with_ee(PollMode::Adaptive);
    let (ee, base) = bdevs(&engine);
    inject(
        &engine,
        json!({"io_type": "write", "error_type": "hold", "num": 1}),
    )
    .unwrap();
    inject(
        &engine,
        json!({"io_type": "read", "error_type": "hold", "num": 1}),
    )
    .unwrap();
    let data = pattern(512, 9);
    let write = blocking::start_io(&engine, 0, &ee, IoType::Write, 0, 512, Some(&data)).unwrap();
    let read = blocking::start_io(&engine, 0, &ee, IoType::Read, 512, 512, None).unwrap();
    assert!(matches!(
        write.wait(Duration::from_millis(50)),
        Err(BlockingIoError::TimedOut(_))
    ));
    let (tx, rx) = std::sync::mpsc::channel();
    assert!(write.hand_over(move |st| tx.send(st).unwrap()).is_none());
    drop(read);
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "still held"
    );
    inject(&engine, json!({"io_type": "clear", "error_type": "hold"})).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        IoStatus::Success
    );
    assert_eq!(blocking::read(&engine, &base, 0, 512).unwrap(), data);
    // The dropped read completed too (the bdev drains: nothing is left in flight).
    blocking::read(&engine, &ee, 512, 512).unwrap();
    // Handing over a request that already completed returns its result instead.
    let done = blocking::start_io(&engine, 0, &ee, IoType::Read, 0, 512, None).unwrap();
    // A later request on the same reactor completes after it.
    blocking::read(&engine, &ee, 0, 512).unwrap();
    let got = done.hand_over(|_| panic!("already completed: not handed over"));
    assert_eq!(got.expect("completed").unwrap(), data);
    drop((ee, base));
    engine.shutdown();
}

#[test]
fn deleting_the_error_bdev_fails_its_pending_requests() {
    let engine = engine_with_ee(PollMode::Interrupt);
    let (ee, _) = bdevs(&engine);
    inject(&engine, json!({"io_type": "read", "error_type": "pending"})).unwrap();
    let rx = read_async(&engine, &ee);
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    drop(ee);
    assert_eq!(
        rpc::delete(&engine, json!({"name": "EE_M0"})).unwrap(),
        json!(true)
    );
    let st = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(st, IoStatus::Failed(libc::ECANCELED));
    engine.delete_bdev("M0", Some("Malloc disk")).unwrap();
    engine.shutdown();
}

#[test]
fn base_is_busy_until_the_error_bdev_is_deleted() {
    let engine = engine_with_ee(PollMode::Adaptive);
    let e = engine.delete_bdev("M0", Some("Malloc disk")).unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY);
    let e = malloc_delete_rpc(&engine, "M0");
    assert_eq!(e, -(libc::EBUSY as i64));
    // A second error bdev on the same base is refused, and so is an error bdev on nothing.
    let e = rpc::create(&engine, json!({"base_name": "M0"})).unwrap_err();
    assert_eq!(e.code.code(), -(libc::EEXIST as i64));
    let e = rpc::create(&engine, json!({"base_name": "nope"})).unwrap_err();
    assert_eq!(e.code.code(), -(libc::ENODEV as i64));
    // bdev_error_delete deletes only error bdevs.
    let e = rpc::delete(&engine, json!({"name": "M0"})).unwrap_err();
    assert_eq!(e.code.code(), -(libc::ENODEV as i64));
    assert_eq!(
        rpc::delete(&engine, json!({"name": "EE_M0"})).unwrap(),
        json!(true)
    );
    assert!(engine.bdevs().get("M0").unwrap().claimed_by().is_none());
    engine.delete_bdev("M0", Some("Malloc disk")).unwrap();
    assert!(engine.bdevs().list().is_empty());
    engine.shutdown();
}

fn malloc_delete_rpc(engine: &Arc<Engine>, name: &str) -> i64 {
    let mut table = plexd_control::MethodTable::new();
    malloc::rpc::register(&mut table, engine);
    let m = table.get("bdev_malloc_delete").unwrap();
    (m.handler)(Some(json!({"name": name})))
        .unwrap_err()
        .code
        .code()
}

#[test]
fn inject_validation() {
    let engine = engine_with_ee(PollMode::Interrupt);
    let code = |p: Value| inject(&engine, p).unwrap_err().code.code();
    assert_eq!(
        code(json!({"io_type": "trim", "error_type": "failure"})),
        -32602
    );
    assert_eq!(
        code(json!({"io_type": "read", "error_type": "explode"})),
        -32602
    );
    assert_eq!(code(json!({"io_type": "read"})), -32602);
    let inval = -(libc::EINVAL as i64);
    assert_eq!(
        code(json!({"io_type": "read", "error_type": "corrupt_data"})),
        inval
    );
    assert_eq!(
        code(json!({"io_type": "read", "error_type": "corrupt_data", "corrupt_value": 0})),
        inval
    );
    assert_eq!(
        code(json!({"io_type": "read", "error_type": "corrupt_data", "corrupt_value": 256})),
        inval
    );
    assert_eq!(
        code(json!({"io_type": "read", "error_type": "failure", "num": MAX_NUM + 1})),
        inval
    );
    assert_eq!(
        code(json!({"io_type": "read", "error_type": "nvme_failure", "nvme_sct": 0, "nvme_sc": 1})),
        -(libc::ENOTSUP as i64)
    );
    let msg = inject(&engine, json!({"io_type": "trim", "error_type": "failure"}))
        .unwrap_err()
        .message;
    assert!(
        msg.contains("clear, read, write, unmap, flush, all"),
        "{msg}"
    );
    // Unknown bdev; a bdev that is not an error bdev.
    let e = rpc::inject_error(
        &engine,
        json!({"name": "nope", "io_type": "read", "error_type": "failure"}),
    )
    .unwrap_err();
    assert_eq!(e.code.code(), -(libc::ENODEV as i64));
    let e = rpc::inject_error(
        &engine,
        json!({"name": "M0", "io_type": "read", "error_type": "failure"}),
    )
    .unwrap_err();
    assert_eq!(e.code.code(), -(libc::ENODEV as i64));
    // Crash-mode parameters.
    let e = rpc::set_crash_mode(&engine, json!({"name": "EE_M0", "mode": "meteor"})).unwrap_err();
    assert_eq!(e.code.code(), -32602);
    let e = rpc::set_crash_mode(
        &engine,
        json!({"name": "EE_M0", "mode": "volatile_cache", "count": 3}),
    )
    .unwrap_err();
    assert_eq!(e.code.code(), inval);
    engine.shutdown();
}

#[test]
fn drop_writes_after_acknowledges_but_loses_later_writes() {
    let engine = engine_with_ee(PollMode::Adaptive);
    let (ee, m) = bdevs(&engine);
    let old = pattern(512, 6);
    blocking::write(&engine, &ee, 3 * BS, &old).unwrap();
    crash_mode(&engine, "drop_writes_after", Some(2));
    blocking::write(&engine, &ee, 0, &pattern(512, 7)).unwrap();
    blocking::write(&engine, &ee, BS, &pattern(512, 8)).unwrap();
    // The third write is acknowledged, but the power was already cut.
    blocking::write(&engine, &ee, 3 * BS, &pattern(512, 9)).unwrap();
    assert_eq!(
        blocking::read(&engine, &m, 0, 512).unwrap(),
        pattern(512, 7)
    );
    assert_eq!(
        blocking::read(&engine, &m, BS, 512).unwrap(),
        pattern(512, 8)
    );
    assert_eq!(blocking::read(&engine, &m, 3 * BS, 512).unwrap(), old);
    assert_eq!(blocking::read(&engine, &ee, 3 * BS, 512).unwrap(), old);
    let info = ee.driver().driver_specific().unwrap().1;
    assert_eq!(info["crash_mode"], "drop_writes_after");
    assert_eq!(info["dropped_writes"], 1);
    assert_eq!(info["writes_before_drop"], 0);
    assert_eq!(
        rpc::crash(&engine, json!({"name": "EE_M0"})).unwrap(),
        json!(true)
    );
    crash_mode(&engine, "none", None);
    blocking::write(&engine, &ee, 3 * BS, &pattern(512, 9)).unwrap();
    assert_eq!(
        blocking::read(&engine, &m, 3 * BS, 512).unwrap(),
        pattern(512, 9)
    );
    drop((ee, m));
    engine.shutdown();
}

#[test]
fn volatile_cache_holds_writes_until_flush() {
    let engine = engine_with_ee(PollMode::Adaptive);
    let (ee, m) = bdevs(&engine);
    let old = pattern(4096, 10);
    blocking::write(&engine, &ee, 0, &old).unwrap();
    crash_mode(&engine, "volatile_cache", None);
    // Blocks 2-3 and 6 are rewritten: two separate runs for the flush.
    let a = pattern(1024, 11);
    let b = pattern(512, 12);
    blocking::write(&engine, &ee, 2 * BS, &a).unwrap();
    blocking::write(&engine, &ee, 6 * BS, &b).unwrap();
    let mut expect = old.clone();
    expect[1024..2048].copy_from_slice(&a);
    expect[3072..3584].copy_from_slice(&b);
    assert_eq!(blocking::read(&engine, &ee, 0, 4096).unwrap(), expect);
    assert_eq!(blocking::read(&engine, &m, 0, 4096).unwrap(), old);
    // Leaving the mode with unflushed data is refused.
    let e = rpc::set_crash_mode(&engine, json!({"name": "EE_M0", "mode": "none"})).unwrap_err();
    assert_eq!(e.code.code(), -(libc::EBUSY as i64));
    assert_eq!(
        ee.driver().driver_specific().unwrap().1["cached_blocks"],
        json!(3)
    );
    flush(&engine, &ee).unwrap();
    assert_eq!(blocking::read(&engine, &m, 0, 4096).unwrap(), expect);
    assert_eq!(
        ee.driver().driver_specific().unwrap().1["cached_blocks"],
        json!(0)
    );
    // Nothing left to lose.
    assert_eq!(ee_state(&ee).crash(), 0);
    assert_eq!(blocking::read(&engine, &ee, 0, 4096).unwrap(), expect);
    // An unmap drops cached blocks in its range and goes down.
    blocking::write(&engine, &ee, 0, &pattern(512, 13)).unwrap();
    blocking::run_io(
        &engine,
        0,
        &ee,
        IoType::Unmap,
        0,
        1024,
        None,
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(
        blocking::read(&engine, &ee, 0, 1024).unwrap(),
        vec![0u8; 1024]
    );
    crash_mode(&engine, "none", None);
    drop((ee, m));
    engine.shutdown();
}

fn ee_state(ee: &Bdev) -> Arc<ErrorState> {
    state_of(ee).unwrap()
}

#[test]
fn crash_discards_unflushed_writes() {
    let engine = engine_with_ee(PollMode::Interrupt);
    let (ee, m) = bdevs(&engine);
    let old = pattern(1024, 14);
    blocking::write(&engine, &ee, 0, &old).unwrap();
    crash_mode(&engine, "volatile_cache", None);
    let flushed = pattern(512, 15);
    blocking::write(&engine, &ee, 0, &flushed).unwrap();
    flush(&engine, &ee).unwrap();
    blocking::write(&engine, &ee, BS, &pattern(512, 16)).unwrap();
    assert_eq!(
        blocking::read(&engine, &ee, BS, 512).unwrap(),
        pattern(512, 16)
    );
    assert_eq!(ee_state(&ee).crash_mode(), CrashMode::VolatileCache);
    assert_eq!(
        rpc::crash(&engine, json!({"name": "EE_M0"})).unwrap(),
        json!(true)
    );
    // The flushed write survived; the unflushed one is gone, through either bdev.
    let mut expect = old.clone();
    expect[..512].copy_from_slice(&flushed);
    assert_eq!(blocking::read(&engine, &ee, 0, 1024).unwrap(), expect);
    assert_eq!(blocking::read(&engine, &m, 0, 1024).unwrap(), expect);
    crash_mode(&engine, "none", None);
    drop((ee, m));
    engine.shutdown();
}

#[test]
fn injected_flush_failure_keeps_the_cache() {
    let engine = engine_with_ee(PollMode::Adaptive);
    let (ee, m) = bdevs(&engine);
    crash_mode(&engine, "volatile_cache", None);
    let data = pattern(512, 17);
    blocking::write(&engine, &ee, 0, &data).unwrap();
    inject(
        &engine,
        json!({"io_type": "flush", "error_type": "failure"}),
    )
    .unwrap();
    assert_eq!(errno(flush(&engine, &ee)), libc::EIO);
    assert_eq!(blocking::read(&engine, &m, 0, 512).unwrap(), vec![0u8; 512]);
    flush(&engine, &ee).unwrap();
    assert_eq!(blocking::read(&engine, &m, 0, 512).unwrap(), data);
    drop((ee, m));
    engine.shutdown();
}

#[test]
fn sleeping_reactor_notices_a_clear_nobody_announced() {
    let engine = engine_with_ee(PollMode::Interrupt);
    let (ee, _) = bdevs(&engine);
    inject(&engine, json!({"io_type": "read", "error_type": "pending"})).unwrap();
    let rx = read_async(&engine, &ee);
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    // Straight on the state: no message wakes reactor 0, only the channel's own deadline.
    ee_state(&ee).clear();
    let st = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(st, IoStatus::Failed(libc::ECANCELED));
    drop(ee);
    engine.shutdown();
}

#[test]
fn reset_aborts_pending_requests_but_keeps_injections() {
    let engine = engine_with_ee(PollMode::Adaptive);
    let (ee, _) = bdevs(&engine);
    inject(
        &engine,
        json!({"io_type": "read", "error_type": "pending", "num": 2}),
    )
    .unwrap();
    let rx = read_async(&engine, &ee);
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    blocking::run_io(
        &engine,
        0,
        &ee,
        IoType::Reset,
        0,
        0,
        None,
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        IoStatus::Failed(libc::ECANCELED)
    );
    // The second armed read is still held.
    let rx = read_async(&engine, &ee);
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    inject(&engine, json!({"io_type": "clear"})).unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(10)).is_ok());
    drop(ee);
    engine.shutdown();
}

/// Two reactors: cores 0 and 1, or twice core 0 on a one-CPU machine.
fn two_reactor_cores() -> [u32; 2] {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    [0, if n > 1 { 1 } else { 0 }]
}

#[test]
fn reset_on_one_reactor_aborts_requests_held_on_another() {
    let engine = Engine::start(&two_reactor_cores(), PollMode::Interrupt).unwrap();
    malloc::rpc::create(
        &engine,
        json!({"name": "M0", "block_size": BS, "num_blocks": 64}),
    )
    .unwrap();
    rpc::create(&engine, json!({"base_name": "M0"})).unwrap();
    let (ee, _) = bdevs(&engine);
    inject(&engine, json!({"io_type": "read", "error_type": "pending"})).unwrap();
    let rx = read_async_on(&engine, 1, &ee);
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    blocking::run_io(
        &engine,
        0,
        &ee,
        IoType::Reset,
        0,
        0,
        None,
        Duration::from_secs(30),
    )
    .unwrap();
    let st = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(st, IoStatus::Failed(libc::ECANCELED));
    drop(ee);
    engine.shutdown();
}

#[test]
fn queue_depth_hits_only_busy_channels() {
    let engine = engine_with_ee(PollMode::Interrupt);
    let (ee, _) = bdevs(&engine);
    inject(
        &engine,
        json!({"io_type": "read", "error_type": "failure", "queue_depth": 1}),
    )
    .unwrap();
    // Alone on its channel: spared, and the injection stays armed.
    blocking::read(&engine, &ee, 0, 512).unwrap();
    let info = ee.driver().driver_specific().unwrap().1;
    assert_eq!(info["injections"]["read"]["queue_depth"], 1);
    // Two reads submitted back to back: the second finds one outstanding and is hit.
    let reactor = InlineReactor::new().unwrap();
    let ch = ee.get_io_channel().unwrap();
    let done = Rc::new(std::cell::RefCell::new(Vec::new()));
    struct Push(Rc<std::cell::RefCell<Vec<(u64, IoStatus)>>>);
    impl IoCompletion for Push {
        fn io_done(&self, io: BdevIo) {
            self.0.borrow_mut().push((io.tag(), io.status()));
        }
    }
    let cb = Rc::new(Push(done.clone()));
    for tag in 0..2 {
        let mut io = BdevIo::alloc();
        io.prep(IoType::Read, 0, 1);
        io.set_buf(IoBuf::new(512), 512);
        io.set_callback(cb.clone(), tag);
        ch.submit(io);
    }
    assert!(reactor.poll_until(Duration::from_secs(10), || done.borrow().len() == 2));
    let mut got = done.borrow().clone();
    got.sort_by_key(|(t, _)| *t);
    assert_eq!(
        got,
        [(0, IoStatus::Success), (1, IoStatus::Failed(libc::EIO))]
    );
    drop((ch, reactor, ee));
    engine.shutdown();
}
