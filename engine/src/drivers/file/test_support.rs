//! Scenarios both file drivers must pass, run from each driver's own tests.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use plexd_control::RpcError;
use serde_json::{json, Value};

use crate::bdev::blocking::{self, BlockingIoError};
use crate::bdev::{BdevIo, IoBuf, IoCompletion, IoStatus, IoType};
use crate::reactor::{InlineReactor, PollMode, Poller};
use crate::Engine;

/// An RPC handler.
pub(crate) type RpcFn = fn(&Engine, Value) -> Result<Value, RpcError>;

/// The driver under test.
pub(crate) struct Driver {
    pub(crate) create: RpcFn,
    pub(crate) delete: RpcFn,
    pub(crate) method: &'static str,
    pub(crate) product: &'static str,
    pub(crate) key: &'static str,
    /// Extra create parameters (aio needs `fallocate` for unmap).
    pub(crate) extra: fn() -> Value,
}

impl Driver {
    pub(crate) fn params(&self, name: &str, path: &Path, more: Value) -> Value {
        let mut p = json!({"name": name, "filename": path.to_str().unwrap()});
        for src in [(self.extra)(), more] {
            if let Value::Object(m) = src {
                for (k, v) in m {
                    p[k] = v;
                }
            }
        }
        p
    }
}

/// Deterministic pseudo-random bytes.
pub(crate) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Asserts `got == want` without printing megabytes when they differ.
#[track_caller]
pub(crate) fn same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i}: {} != {}",
            got[i], want[i]
        );
    }
}

/// A sparse scratch file of `len` bytes.
pub(crate) fn scratch_file(len: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::File::create(&path).unwrap().set_len(len).unwrap();
    (dir, path)
}

fn run(
    engine: &Engine,
    b: &std::sync::Arc<crate::bdev::Bdev>,
    t: IoType,
    off: u64,
    len: u64,
) -> Result<Vec<u8>, BlockingIoError> {
    blocking::run_io(engine, 0, b, t, off, len, None, Duration::from_secs(30))
}

/// Writes at several offsets and sizes, reads back, flushes, deletes and recreates the
/// bdev from its saved config, reads back again and checks the file's bytes.
pub(crate) fn round_trip_and_restart(d: &Driver) {
    // Not a multiple of the block size: the tail is not part of the bdev.
    let (_dir, path) = scratch_file((4 << 20) + 100);
    let engine = Engine::start(&[0], PollMode::Adaptive).unwrap();
    assert_eq!(
        (d.create)(&engine, d.params("F0", &path, json!({}))).unwrap(),
        json!("F0")
    );
    let b = engine.bdevs().get("F0").unwrap();
    assert_eq!((b.block_size(), b.num_blocks()), (512, 8192));
    assert_eq!(b.driver().product_name(), d.product);
    let (key, ds) = b.driver().driver_specific().unwrap();
    assert_eq!(key, d.key);
    assert_eq!(ds["filename"], json!(path.to_str().unwrap()));
    let cfg = b.driver().config(&b).unwrap();
    assert_eq!(cfg["method"], json!(d.method));
    assert_eq!(cfg["params"]["uuid"], json!(b.uuid().to_string()));

    let writes: [(u64, usize); 7] = [
        (0, 512),
        (4096, 4096),
        (512 * 17, 512 * 3),
        (1 << 20, 128 << 10),
        ((2 << 20) + 512, (64 << 10) + 512),
        (3 << 20, 1 << 20), // to the last block
        (512 * 20, 512),
    ];
    for (i, &(off, len)) in writes.iter().enumerate() {
        blocking::write(&engine, &b, off, &pattern(i as u64, len)).unwrap();
    }
    for (i, &(off, len)) in writes.iter().enumerate() {
        assert_eq!(
            blocking::read(&engine, &b, off, len as u64).unwrap(),
            pattern(i as u64, len),
            "write {i}"
        );
    }
    // Untouched blocks read as zeroes; the range check still holds.
    assert!(blocking::read(&engine, &b, 512, 512)
        .unwrap()
        .iter()
        .all(|&x| x == 0));
    assert!(blocking::read(&engine, &b, 8192 * 512, 512).is_err());
    run(&engine, &b, IoType::Flush, 0, 0).unwrap();
    run(&engine, &b, IoType::Reset, 0, 0).unwrap();
    let st = b.iostat();
    assert_eq!(st.num_write_ops, writes.len() as u64);
    drop(b);

    // Restart: delete, recreate from the saved config, read back.
    assert_eq!(
        (d.delete)(&engine, json!({"name": "F0"})).unwrap(),
        json!(true)
    );
    assert!(engine.bdevs().get("F0").is_err());
    assert_eq!(
        (d.create)(&engine, cfg["params"].clone()).unwrap(),
        json!("F0")
    );
    let b = engine.bdevs().get("F0").unwrap();
    assert_eq!(cfg["params"]["uuid"], json!(b.uuid().to_string()));
    assert_eq!(b.num_blocks(), 8192);
    for (i, &(off, len)) in writes.iter().enumerate() {
        assert_eq!(
            blocking::read(&engine, &b, off, len as u64).unwrap(),
            pattern(i as u64, len),
            "after restart, write {i}"
        );
    }
    drop(b);
    (d.delete)(&engine, json!({"name": "F0"})).unwrap();
    engine.shutdown();

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), (4 << 20) + 100);
    for (i, &(off, len)) in writes.iter().enumerate() {
        assert_eq!(
            &bytes[off as usize..off as usize + len],
            &pattern(i as u64, len)[..],
            "file bytes of write {i}"
        );
    }
    assert!(bytes[512..1024].iter().all(|&x| x == 0));
}

struct Catch(RefCell<Option<BdevIo>>);

impl IoCompletion for Catch {
    fn io_done(&self, io: BdevIo) {
        *self.0.borrow_mut() = Some(io);
    }
}

fn submit_segments(
    r: &InlineReactor,
    b: &std::sync::Arc<crate::bdev::Bdev>,
    t: IoType,
    block: u64,
    segs: &[(*mut u8, usize)],
) -> IoStatus {
    let total: usize = segs.iter().map(|s| s.1).sum();
    let mut io = BdevIo::alloc();
    io.prep(t, block, (total / 512) as u64);
    for &(p, len) in segs {
        // SAFETY: the caller's buffers outlive the request, which completes before
        // `submit_inline` returns.
        unsafe { io.push_iov(p, len) };
    }
    let done = blocking::submit_inline(r, b, io).expect("request completes");
    done.status()
}

/// Requests with several iovecs: aligned (direct), unaligned (buffered), and more than
/// IOV_MAX segments; each path reads what the others wrote.
pub(crate) fn multi_iovec(d: &Driver) {
    let (_dir, path) = scratch_file(4 << 20);
    let engine = Engine::start(&[0], PollMode::Adaptive).unwrap();
    (d.create)(&engine, d.params("F1", &path, json!({}))).unwrap();
    let b = engine.bdevs().get("F1").unwrap();
    let r = InlineReactor::new().unwrap();

    // Aligned, two segments, at block 16.
    let mut a = IoBuf::new(4096);
    let mut c = IoBuf::new(8192);
    a.as_mut_slice().copy_from_slice(&pattern(1, 4096));
    c.as_mut_slice().copy_from_slice(&pattern(2, 8192));
    let st = submit_segments(
        &r,
        &b,
        IoType::Write,
        16,
        &[(a.as_mut_ptr(), 4096), (c.as_mut_ptr(), 8192)],
    );
    assert_eq!(st, IoStatus::Success);

    // Unaligned addresses and lengths, at block 100.
    let mut w = vec![0u8; 1537];
    let data = pattern(3, 1536);
    w[1..].copy_from_slice(&data);
    let base = w.as_mut_ptr().wrapping_add(1);
    let st = submit_segments(
        &r,
        &b,
        IoType::Write,
        100,
        &[
            (base, 100),
            (base.wrapping_add(100), 924),
            (base.wrapping_add(1024), 512),
        ],
    );
    assert_eq!(st, IoStatus::Success);

    // Read the aligned write back through unaligned segments, and vice versa.
    let mut rd = vec![0u8; 12288 + 3];
    let rb = rd.as_mut_ptr().wrapping_add(3);
    let st = submit_segments(
        &r,
        &b,
        IoType::Read,
        16,
        &[
            (rb, 300),
            (rb.wrapping_add(300), 9000),
            (rb.wrapping_add(9300), 2988),
        ],
    );
    assert_eq!(st, IoStatus::Success);
    let mut want = pattern(1, 4096);
    want.extend(pattern(2, 8192));
    same(&rd[3..], &want, "unaligned read of the aligned write");
    same(
        &blocking::read(&engine, &b, 100 * 512, 1536).unwrap(),
        &data,
        "aligned read of the unaligned write",
    );

    // More segments than one readv takes: 1100 aligned 512-byte pieces at block 1000.
    let n = super::IOV_MAX + 76;
    let mut big = IoBuf::new(n * 512);
    big.as_mut_slice().copy_from_slice(&pattern(4, n * 512));
    let p = big.as_mut_ptr();
    let segs: Vec<(*mut u8, usize)> = (0..n).map(|i| (p.wrapping_add(i * 512), 512)).collect();
    assert_eq!(
        submit_segments(&r, &b, IoType::Write, 1000, &segs),
        IoStatus::Success
    );
    let mut back = IoBuf::new(n * 512);
    let q = back.as_mut_ptr();
    let segs: Vec<(*mut u8, usize)> = (0..n)
        .rev()
        .map(|i| (q.wrapping_add(i * 512), 512))
        .collect();
    assert_eq!(
        submit_segments(&r, &b, IoType::Read, 1000, &segs),
        IoStatus::Success
    );
    // Segments were given in reverse order: block k landed in piece n-1-k.
    let src = pattern(4, n * 512);
    for k in 0..n {
        assert_eq!(
            &back.as_slice()[(n - 1 - k) * 512..(n - k) * 512],
            &src[k * 512..(k + 1) * 512],
            "block {k}"
        );
    }
    assert_eq!(
        submit_segments(&r, &b, IoType::Flush, 0, &[]),
        IoStatus::Success
    );
    drop(r);
    drop(b);
    (d.delete)(&engine, json!({"name": "F1"})).unwrap();
    engine.shutdown();

    let bytes = std::fs::read(&path).unwrap();
    same(
        &bytes[16 * 512..16 * 512 + 12288],
        &want,
        "file bytes, aligned write",
    );
    same(
        &bytes[100 * 512..100 * 512 + 1536],
        &data,
        "file bytes, unaligned write",
    );
    same(
        &bytes[1000 * 512..(1000 + n) * 512],
        &src,
        "file bytes, long write",
    );
}

struct Count(std::cell::Cell<usize>, std::cell::Cell<usize>);

impl IoCompletion for Count {
    fn io_done(&self, io: BdevIo) {
        self.0.set(self.0.get() + 1);
        if !io.status().is_success() {
            self.1.set(self.1.get() + 1);
        }
    }
}

/// More requests at once than the channel has slots (and a reset among them): the extra
/// ones wait in the channel, and every one completes with the right data.
pub(crate) fn deep_queue(d: &Driver) {
    const N: usize = 1500;
    let (_dir, path) = scratch_file((N * 4096) as u64);
    let engine = Engine::start(&[0], PollMode::Adaptive).unwrap();
    (d.create)(&engine, d.params("F6", &path, json!({"block_size": 4096}))).unwrap();
    let b = engine.bdevs().get("F6").unwrap();
    let r = InlineReactor::new().unwrap();
    let ch = b.get_io_channel().unwrap();
    let count = Rc::new(Count(Default::default(), Default::default()));
    let mut bufs: Vec<IoBuf> = (0..N).map(|_| IoBuf::new(4096)).collect();
    let submit_all = |bufs: &mut Vec<IoBuf>, t: IoType| {
        count.0.set(0);
        for (i, buf) in bufs.iter_mut().enumerate() {
            // Every 500th request is a reset: a barrier in the middle of the stream.
            if i % 500 == 250 {
                let mut io = BdevIo::alloc();
                io.prep(IoType::Reset, 0, 0);
                io.set_callback(count.clone(), 0);
                ch.submit(io);
            }
            let mut io = BdevIo::alloc();
            io.prep(t, ((i * 7) % N) as u64, 1);
            // SAFETY: `bufs` outlives every request (all complete before it is touched).
            unsafe { io.push_iov(buf.as_mut_ptr(), 4096) };
            io.set_callback(count.clone(), i as u64);
            ch.submit(io);
        }
        let total = N + N.div_ceil(500);
        assert!(r.poll_until(Duration::from_secs(30), || count.0.get() == total));
        assert_eq!(count.1.get(), 0, "failed requests");
    };
    for (i, buf) in bufs.iter_mut().enumerate() {
        buf.as_mut_slice()
            .copy_from_slice(&pattern(1000 + i as u64, 4096));
    }
    submit_all(&mut bufs, IoType::Write);
    for buf in bufs.iter_mut() {
        buf.as_mut_slice().fill(0);
    }
    submit_all(&mut bufs, IoType::Read);
    for (i, buf) in bufs.iter().enumerate() {
        same(
            buf.as_slice(),
            &pattern(1000 + i as u64, 4096),
            &format!("request {i}"),
        );
    }
    assert_eq!(ch.inflight(), 0);
    drop(ch);
    drop(r);
    drop(b);
    (d.delete)(&engine, json!({"name": "F6"})).unwrap();
    engine.shutdown();
}

/// Unmap and write-zeroes leave zeroes in their range and nothing else changed.
pub(crate) fn unmap_and_write_zeroes(d: &Driver) {
    let (_dir, path) = scratch_file(1 << 20);
    let engine = Engine::start(&[0], PollMode::Adaptive).unwrap();
    (d.create)(&engine, d.params("F2", &path, json!({"block_size": 4096}))).unwrap();
    let b = engine.bdevs().get("F2").unwrap();
    let data = pattern(5, 256 << 10);
    blocking::write(&engine, &b, 0, &data).unwrap();
    run(&engine, &b, IoType::Unmap, 16 << 10, 32 << 10).unwrap();
    run(&engine, &b, IoType::WriteZeroes, 128 << 10, 8 << 10).unwrap();
    run(&engine, &b, IoType::Flush, 0, 0).unwrap();
    let mut want = data.clone();
    want[16 << 10..48 << 10].fill(0);
    want[128 << 10..136 << 10].fill(0);
    same(
        &blocking::read(&engine, &b, 0, 256 << 10).unwrap(),
        &want,
        "after unmap",
    );
    drop(b);
    (d.delete)(&engine, json!({"name": "F2"})).unwrap();
    engine.shutdown();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 1 << 20, "unmap must not change the file size");
    same(&bytes[..256 << 10], &want, "file bytes after unmap");
}

/// A reactor that sleeps whenever it is idle still completes requests: completions wake it.
pub(crate) fn interrupt_mode(d: &Driver) {
    let (_dir, path) = scratch_file(2 << 20);
    let engine = Engine::start(&[0], PollMode::Interrupt).unwrap();
    (d.create)(&engine, d.params("F3", &path, json!({}))).unwrap();
    let b = engine.bdevs().get("F3").unwrap();
    for i in 0..32u64 {
        let off = (i * 7919 % 4000) * 512;
        let len = 512 * (1 + (i as usize % 16));
        let data = pattern(100 + i, len);
        blocking::write(&engine, &b, off, &data).unwrap();
        same(
            &blocking::read(&engine, &b, off, len as u64).unwrap(),
            &data,
            "interrupt mode",
        );
    }
    run(&engine, &b, IoType::Flush, 0, 0).unwrap();
    drop(b);
    (d.delete)(&engine, json!({"name": "F3"})).unwrap();
    engine.shutdown();
}

fn readable(fd: i32, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one live pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    n == 1 && p.revents & libc::POLLIN != 0
}

/// The channel's wake fd becomes readable when a completion arrives.
pub(crate) fn wake_fd_fires(d: &Driver) {
    let (_dir, path) = scratch_file(1 << 20);
    let engine = Engine::start(&[0], PollMode::Adaptive).unwrap();
    (d.create)(&engine, d.params("F4", &path, json!({}))).unwrap();
    let b = engine.bdevs().get("F4").unwrap();
    let r = InlineReactor::new().unwrap();
    let ch = b.get_io_channel().unwrap();
    let fd = ch.wake_fd().expect("the channel has a wake fd");
    crate::reactor::wake::drain_fd(fd);
    assert!(!readable(fd, 0));
    let catch = Rc::new(Catch(RefCell::new(None)));
    let mut io = BdevIo::alloc();
    io.prep(IoType::Read, 8, 8);
    io.set_buf(IoBuf::new(4096), 4096);
    io.set_callback(catch.clone(), 0);
    ch.submit(io);
    r.poll(); // pushes the request to the kernel
    assert!(readable(fd, 10_000), "no wake-up for a completion");
    assert!(r.poll_until(Duration::from_secs(10), || catch.0.borrow().is_some()));
    assert_eq!(
        catch.0.borrow().as_ref().unwrap().status(),
        IoStatus::Success
    );
    drop(ch);
    drop(r);
    drop(b);
    (d.delete)(&engine, json!({"name": "F4"})).unwrap();
    engine.shutdown();
}

/// A file that shrinks under the bdev: reads past its end fail with EIO, never succeed
/// with a partial transfer.
pub(crate) fn shrunk_file_reads_fail(d: &Driver) {
    let (_dir, path) = scratch_file(1 << 20);
    let engine = Engine::start(&[0], PollMode::Adaptive).unwrap();
    (d.create)(&engine, d.params("F5", &path, json!({}))).unwrap();
    let b = engine.bdevs().get("F5").unwrap();
    let data = pattern(6, 8192);
    blocking::write(&engine, &b, (512 << 10) - 4096, &data).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(512 << 10)
        .unwrap();
    // Straddles the new end: the first 4096 bytes arrive, the rest cannot.
    let e = blocking::read(&engine, &b, (512 << 10) - 4096, 8192).unwrap_err();
    assert!(
        matches!(
            e,
            BlockingIoError::Failed {
                errno: libc::EIO,
                ..
            }
        ),
        "{e}"
    );
    let e = blocking::read(&engine, &b, 768 << 10, 4096).unwrap_err();
    assert!(
        matches!(
            e,
            BlockingIoError::Failed {
                errno: libc::EIO,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        blocking::read(&engine, &b, (512 << 10) - 4096, 4096).unwrap(),
        data[..4096]
    );
    drop(b);
    (d.delete)(&engine, json!({"name": "F5"})).unwrap();
    engine.shutdown();
}

/// Failed creates say why, with the right errno, and leave nothing behind.
pub(crate) fn create_errors(d: &Driver) {
    let engine = Engine::start(&[0], PollMode::Interrupt).unwrap();
    let (dir, path) = scratch_file(1 << 20);
    let missing = dir.path().join("missing.img");
    let e = (d.create)(&engine, d.params("E0", &missing, json!({}))).unwrap_err();
    assert_eq!(e.code.code(), -(libc::ENOENT as i64), "{e}");
    assert!(e.message.contains(missing.to_str().unwrap()), "{e}");
    let e = (d.create)(&engine, d.params("E0", dir.path(), json!({}))).unwrap_err();
    assert_eq!(e.code.code(), -(libc::EISDIR as i64), "{e}");
    let e = (d.create)(&engine, d.params("E0", &path, json!({"block_size": 1000}))).unwrap_err();
    assert_eq!(e.code.code(), -(libc::EINVAL as i64), "{e}");
    assert!(e.message.contains("1000"), "{e}");
    let e = (d.create)(
        &engine,
        d.params("E0", &path, json!({"block_size": 2 << 20})),
    )
    .unwrap_err();
    assert_eq!(e.code.code(), -(libc::EINVAL as i64), "{e}");
    let e = (d.create)(
        &engine,
        d.params("E0", &path, json!({"uuid": "not-a-uuid"})),
    )
    .unwrap_err();
    assert_eq!(e.code.code(), -32602, "{e}");
    let e = (d.create)(&engine, json!({"name": "E0"})).unwrap_err();
    assert_eq!(e.code.code(), -32602, "{e}");
    let tiny = dir.path().join("tiny.img");
    std::fs::write(&tiny, [1u8; 100]).unwrap();
    let e = (d.create)(&engine, d.params("E0", &tiny, json!({}))).unwrap_err();
    assert_eq!(e.code.code(), -(libc::EINVAL as i64), "{e}");
    assert!(
        engine.bdevs().list().is_empty(),
        "a failed create left a bdev"
    );

    (d.create)(&engine, d.params("E1", &path, json!({}))).unwrap();
    let e = (d.create)(&engine, d.params("E1", &path, json!({}))).unwrap_err();
    assert_eq!(e.code.code(), -(libc::EEXIST as i64), "{e}");
    let e = (d.delete)(&engine, json!({"name": "nope"})).unwrap_err();
    assert_eq!(e.code.code(), -(libc::ENODEV as i64), "{e}");
    // Another driver's bdev is not ours to delete.
    crate::drivers::malloc::rpc::create(
        &engine,
        json!({"name": "M0", "block_size": 512, "num_blocks": 8}),
    )
    .unwrap();
    assert!((d.delete)(&engine, json!({"name": "M0"})).is_err());
    assert_eq!(engine.bdevs().list().len(), 2);
    engine.shutdown();
}

/// On a real block device (named by `PLEXD_TEST_BLOCK_DEVICE`; its contents are
/// destroyed): geometry from the device, data round trip, unmap/write-zeroes through
/// the block layer, and the device's bytes read back with std::fs.
pub(crate) fn block_device(d: &Driver) {
    let Ok(dev) = std::env::var("PLEXD_TEST_BLOCK_DEVICE") else {
        panic!("set PLEXD_TEST_BLOCK_DEVICE to a scratch block device (its data is destroyed)");
    };
    let path = Path::new(&dev);
    let f = std::fs::File::open(path).unwrap();
    let lbs = super::blkdev_logical_block_size(&f).unwrap();
    let size = super::blkdev_size(&f).unwrap();
    drop(f);
    let engine = Engine::start(&[0], PollMode::Interrupt).unwrap();
    if lbs > 512 {
        let e = (d.create)(&engine, d.params("B0", path, json!({"block_size": 512}))).unwrap_err();
        assert_eq!(e.code.code(), -(libc::EINVAL as i64), "{e}");
    }
    (d.create)(&engine, d.params("B0", path, json!({}))).unwrap();
    let b = engine.bdevs().get("B0").unwrap();
    assert_eq!(b.block_size(), lbs);
    assert_eq!(b.num_blocks(), size / lbs as u64);
    let bs = lbs as u64;
    let data = pattern(11, 64 * bs as usize);
    blocking::write(&engine, &b, 8 * bs, &data).unwrap();
    same(
        &blocking::read(&engine, &b, 8 * bs, 64 * bs).unwrap(),
        &data,
        "device round trip",
    );
    let last = (b.num_blocks() - 1) * bs;
    blocking::write(&engine, &b, last, &pattern(12, bs as usize)).unwrap();
    let mut want = data.clone();
    if b.io_types().contains(IoType::Unmap) {
        run(&engine, &b, IoType::WriteZeroes, 16 * bs, 8 * bs).unwrap();
        run(&engine, &b, IoType::Unmap, 32 * bs, 8 * bs).unwrap();
        want[8 * bs as usize..16 * bs as usize].fill(0);
        want[24 * bs as usize..32 * bs as usize].fill(0);
    }
    run(&engine, &b, IoType::Flush, 0, 0).unwrap();
    same(
        &blocking::read(&engine, &b, 8 * bs, 64 * bs).unwrap(),
        &want,
        "device after zeroing",
    );
    drop(b);
    (d.delete)(&engine, json!({"name": "B0"})).unwrap();
    engine.shutdown();
    let bytes = std::fs::read(path).unwrap();
    same(
        &bytes[8 * bs as usize..72 * bs as usize],
        &want,
        "device bytes",
    );
    same(
        &bytes[last as usize..],
        &pattern(12, bs as usize),
        "device last block",
    );
}

/// A ramfs, a file system without any `fallocate` mode, mounted on a fresh directory and
/// unmounted on drop.
pub(crate) struct Ramfs {
    dir: tempfile::TempDir,
}

impl Ramfs {
    /// Mounts one, or says why it cannot (mounting needs `CAP_SYS_ADMIN`).
    pub(crate) fn mount() -> Result<Ramfs, std::io::Error> {
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
        Ok(Ramfs { dir })
    }

    /// Where it is mounted.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(target) = std::ffi::CString::new(self.dir.path().as_os_str().as_bytes()) {
            // SAFETY: `target` is a valid NUL-terminated path alive for the call.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// On a file system without `fallocate` (a real one in `dir`, or one stood in for by
/// `inject`): write-zeroes succeed and read back as zeroes (across more than one piece of the
/// shared zero buffer), unmaps succeed, later requests go straight to the fallback (no
/// fallocate attempted again), the driver info says so, and nothing else changes.
pub(crate) fn write_zeroes_without_fallocate(
    d: &Driver,
    dir: &Path,
    inject: Option<super::inject::Scope>,
) {
    const MIB: usize = 1 << 20;
    let path = dir.join("nofalloc.img");
    let mut want = pattern(21, 4 * MIB);
    std::fs::write(&path, &want).unwrap();
    let p = path.to_str().unwrap();
    if let Some(scope) = inject {
        super::inject::no_fallocate(p, scope);
    }
    let engine = Engine::start(&[0], PollMode::Adaptive).unwrap();
    (d.create)(&engine, d.params("Z0", &path, json!({"block_size": 4096}))).unwrap();
    let b = engine.bdevs().get("Z0").unwrap();
    assert!(b.io_types().contains(IoType::WriteZeroes));
    assert!(b.io_types().contains(IoType::Unmap));
    let (_, before) = b.driver().driver_specific().unwrap();

    let (zoff, zlen) = (64 << 10, MIB + MIB / 2 + 4096);
    run(&engine, &b, IoType::WriteZeroes, zoff as u64, zlen as u64)
        .expect("write-zeroes on a file system without fallocate");
    // The probe at create time finds what it can see; the rest is found by the first request.
    let found_at_create = if inject == Some(super::inject::Scope::RunTime) {
        "fallocate"
    } else {
        "emulated"
    };
    assert_eq!(before["write_zeroes"], json!(found_at_create), "{before}");
    want[zoff..zoff + zlen].fill(0);
    let after_first = inject.map(|_| super::inject::attempts(p));
    // Found by the probe: one refused call, none by the request. Found by the request: both
    // modes refused once, then the zeroes were written.
    let calls = if found_at_create == "emulated" { 1 } else { 2 };
    assert_eq!(after_first.unwrap_or(calls), calls, "fallocate calls");
    let (_, ds) = b.driver().driver_specific().unwrap();
    assert_eq!(ds["write_zeroes"], json!("emulated"), "{ds}");
    assert_eq!(ds["unmap"], json!("ignored"), "{ds}");

    run(&engine, &b, IoType::WriteZeroes, 3 * MIB as u64, 8192).unwrap();
    want[3 * MIB..3 * MIB + 8192].fill(0);
    // Unmap promises nothing about what the range reads back as: only that it succeeds.
    let (uoff, ulen) = (2 * MIB + 4096, 16 << 10);
    run(&engine, &b, IoType::Unmap, uoff as u64, ulen as u64).unwrap();
    run(&engine, &b, IoType::Flush, 0, 0).unwrap();
    if let Some(n) = after_first {
        assert_eq!(
            super::inject::attempts(p),
            n,
            "later requests must not try fallocate again"
        );
    }
    let mut got = blocking::read(&engine, &b, 0, 4 * MIB as u64).unwrap();
    want[uoff..uoff + ulen].copy_from_slice(&got[uoff..uoff + ulen]);
    same(&got, &want, "after emulated write-zeroes");
    drop(b);
    (d.delete)(&engine, json!({"name": "Z0"})).unwrap();
    engine.shutdown();
    got = std::fs::read(&path).unwrap();
    same(&got, &want, "file bytes after emulated write-zeroes");
}

/// [`write_zeroes_without_fallocate`] on a real ramfs, if this process may mount one.
pub(crate) fn write_zeroes_on_ramfs(d: &Driver) {
    match Ramfs::mount() {
        Ok(fs) => write_zeroes_without_fallocate(d, fs.path(), None),
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a ramfs here ({e}); the injected tests cover it")
        }
    }
}

/// What a user of a volume sees: a mirror over two file bdevs, one of them on a file system
/// whose fallocate the kernel starts refusing once the volume runs (the create-time probe and
/// the volume's zeroing passed, so the bdev and the volume both offer write-zeroes and unmap).
/// The guest's write-zeroes and discards must not detach that plex, and the volume holds
/// zeroes where write-zeroes went.
pub(crate) fn mirror_on_a_bdev_without_fallocate_keeps_both_plexes(d: &Driver) {
    use crate::volume::manager::ops::VolumeCreate;
    use crate::volume::manager::VolumeManager;
    use crate::volume::model::objects::{KernelState, PlexState};

    const MIB: u64 = 1 << 20;
    const SIZE: u64 = 8 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.img");
    let bad = dir.path().join("nofalloc.img");
    for p in [&good, &bad] {
        std::fs::File::create(p).unwrap().set_len(16 * MIB).unwrap();
    }
    let engine = Engine::start(&[0], PollMode::Adaptive).unwrap();
    (d.create)(&engine, d.params("FG", &good, json!({}))).unwrap();
    (d.create)(&engine, d.params("FB", &bad, json!({}))).unwrap();
    let vm = VolumeManager::new(engine.clone());
    vm.dg_create("dg01", &["FG".into(), "FB".into()], false)
        .unwrap();
    let name = vm
        .volume_create(&VolumeCreate {
            dg: "dg01".into(),
            name: "vol01".into(),
            size: SIZE,
            layout: "mirror".into(),
            ..Default::default()
        })
        .unwrap();
    let vol = engine.bdevs().get(&name).unwrap();
    assert!(vol.io_types().contains(IoType::WriteZeroes));
    assert!(vol.io_types().contains(IoType::Unmap));
    let mut want = pattern(31, SIZE as usize);
    blocking::write(&engine, &vol, 0, &want).unwrap();
    super::inject::no_fallocate(bad.to_str().unwrap(), super::inject::Scope::RunTime);

    let plexes = || {
        let (cfg, _) = vm.config("dg01").unwrap();
        cfg.plexes_of("vol01")
            .iter()
            .map(|p| (p.name.clone(), p.state, p.kstate))
            .collect::<Vec<_>>()
    };
    run(&engine, &vol, IoType::WriteZeroes, MIB, 2 * MIB + 4096).expect("the guest's write-zeroes");
    want[MIB as usize..(3 * MIB + 4096) as usize].fill(0);
    run(&engine, &vol, IoType::Unmap, 5 * MIB, 64 << 10).expect("the guest's discard");
    // On a mirror the volume turns an unmap into write-zeroes, so the copies stay equal.
    want[5 * MIB as usize..(5 * MIB + (64 << 10)) as usize].fill(0);
    for (p, state, kstate) in plexes() {
        assert_eq!(
            (state, kstate),
            (PlexState::Active, KernelState::Enabled),
            "plex {p} after the guest's write-zeroes and discard"
        );
    }
    same(
        &blocking::read(&engine, &vol, 0, SIZE).unwrap(),
        &want,
        "volume after write-zeroes",
    );
    drop(vol);
    vm.shutdown();
    (d.delete)(&engine, json!({"name": "FG"})).unwrap();
    (d.delete)(&engine, json!({"name": "FB"})).unwrap();
    engine.shutdown();
}
