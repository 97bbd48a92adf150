//! Blocking I/O helpers for the control path and tests: run one request on a reactor and wait
//! for it from an ordinary thread. Never used on the hot path (they allocate and block).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Bdev, BdevIo, IoBuf, IoCompletion, IoStatus, IoType};
use crate::reactor::InlineReactor;
use crate::Engine;

/// Why a blocking request did not succeed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockingIoError {
    /// The request completed with an error.
    #[error("{op} of {len} bytes at byte {offset} on '{bdev}' failed: {}", std::io::Error::from_raw_os_error(*.errno))]
    Failed {
        /// Operation.
        op: &'static str,
        /// The bdev.
        bdev: String,
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
        /// errno.
        errno: i32,
    },
    /// Offset or length is not a multiple of the block size.
    #[error("offset {offset} and length {len} must be multiples of the block size {block_size}")]
    Unaligned {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u64,
        /// Block size.
        block_size: u32,
    },
    /// No reactor answered in time.
    #[error("the request did not complete within {0:?}")]
    TimedOut(Duration),
}

/// What to do with a request's completion: hand it to the waiter (the default), or, once the
/// waiter handed the request over ([`PendingIo::hand_over`]), run the new owner's callback.
enum Handoff {
    /// Someone may still wait for the result.
    Waiting,
    /// The completion came (its result is in the channel, or was handed to the callback).
    Completed,
    /// Handed over: called with the request's status when it completes.
    Then(Box<dyn FnOnce(IoStatus) + Send>),
}

/// The completion of a request started by [`start_io`]. It owns the request's buffer until
/// the request completes, so a waiter may go away (or hand the request over) at any time:
/// the disk always has the buffer to read from or write into.
struct Sender {
    tx: crossbeam::channel::Sender<(IoStatus, Option<IoBuf>)>,
    handoff: Arc<Mutex<Handoff>>,
}

impl Sender {
    /// Delivers the request's result to whoever owns it now.
    fn finish(&self, status: IoStatus, buf: impl FnOnce() -> Option<IoBuf>) {
        let mut h = self.handoff.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *h, Handoff::Completed) {
            Handoff::Then(f) => {
                drop(h);
                f(status);
            }
            // Sent under the lock: a waiter that sees `Completed` finds the result queued.
            _ => {
                let _ = self.tx.send((status, buf()));
            }
        }
    }
}

impl IoCompletion for Sender {
    fn io_done(&self, mut io: BdevIo) {
        self.finish(io.status(), || io.take_buf());
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // Dropped unanswered (its reactor went away): the request will never reach the disk.
        let mut h = self.handoff.lock().unwrap_or_else(|p| p.into_inner());
        if let Handoff::Then(f) = std::mem::replace(&mut *h, Handoff::Completed) {
            drop(h);
            f(IoStatus::Failed(libc::ECANCELED));
        }
    }
}

/// Runs one request on reactor `reactor` and waits (up to `timeout`). For reads, returns the
/// data; for writes, `data` is written. On a timeout the request may still complete later:
/// callers that must know when it did use [`start_io`].
#[allow(clippy::too_many_arguments)]
pub fn run_io(
    engine: &Engine,
    reactor: usize,
    bdev: &Arc<Bdev>,
    io_type: IoType,
    offset: u64,
    len: u64,
    data: Option<&[u8]>,
    timeout: Duration,
) -> Result<Vec<u8>, BlockingIoError> {
    start_io(engine, reactor, bdev, io_type, offset, len, data)?.wait(timeout)
}

/// A request started by [`start_io`], to wait for (as often as needed) with
/// [`PendingIo::wait`], or to hand over with [`PendingIo::hand_over`]. Dropping it is safe:
/// the request keeps its own buffer until the disk answers.
pub struct PendingIo {
    rx: crossbeam::channel::Receiver<(IoStatus, Option<IoBuf>)>,
    handoff: Arc<Mutex<Handoff>>,
    io_type: IoType,
    bdev: Arc<Bdev>,
    offset: u64,
    len: u64,
}

impl PendingIo {
    /// Waits up to `timeout` for the request: its data (reads) or `()` once it completed,
    /// [`BlockingIoError::TimedOut`] if it still runs (wait again), or its error.
    pub fn wait(&self, timeout: Duration) -> Result<Vec<u8>, BlockingIoError> {
        let (t, b, offset, len) = (self.io_type, &self.bdev, self.offset, self.len);
        match self.rx.recv_timeout(timeout) {
            Ok((IoStatus::Success, buf)) => Ok(buf
                .map(|b| b.as_slice()[..len as usize].to_vec())
                .unwrap_or_default()),
            Ok((IoStatus::Failed(e), _)) => Err(fail(t, b, offset, len, e)),
            Ok((IoStatus::Pending, _)) => Err(fail(t, b, offset, len, libc::EIO)),
            Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                Err(BlockingIoError::TimedOut(timeout))
            }
            // The completion was dropped unanswered: it will never come.
            Err(crossbeam::channel::RecvTimeoutError::Disconnected) => {
                Err(fail(t, b, offset, len, libc::EIO))
            }
        }
    }

    /// Stops waiting for the request and hands its completion to `then`, which is called
    /// with the request's status when it completes (on the reactor thread that completes it,
    /// so it must be quick and must not block), or with `ECANCELED` if the request is dropped
    /// unanswered. If the request already completed, `then` is not called and its result is
    /// returned instead (as [`PendingIo::wait`] would).
    pub fn hand_over(
        self,
        then: impl FnOnce(IoStatus) + Send + 'static,
    ) -> Option<Result<Vec<u8>, BlockingIoError>> {
        let mut h = self.handoff.lock().unwrap_or_else(|p| p.into_inner());
        match &*h {
            Handoff::Waiting => {
                *h = Handoff::Then(Box::new(then));
                None
            }
            _ => {
                drop(h);
                Some(self.wait(Duration::ZERO))
            }
        }
    }
}

/// Starts one request on reactor `reactor` (for writes, `data` is written) without waiting.
pub fn start_io(
    engine: &Engine,
    reactor: usize,
    bdev: &Arc<Bdev>,
    io_type: IoType,
    offset: u64,
    len: u64,
    data: Option<&[u8]>,
) -> Result<PendingIo, BlockingIoError> {
    let bs = bdev.block_size() as u64;
    if !offset.is_multiple_of(bs) || !len.is_multiple_of(bs) {
        return Err(BlockingIoError::Unaligned {
            offset,
            len,
            block_size: bdev.block_size(),
        });
    }
    let (tx, rx) = crossbeam::channel::bounded(1);
    let handoff = Arc::new(Mutex::new(Handoff::Waiting));
    let done = Sender {
        tx,
        handoff: handoff.clone(),
    };
    let mut buf = if io_type.has_data() {
        Some(IoBuf::new(len as usize))
    } else {
        None
    };
    if let (Some(b), Some(d)) = (buf.as_mut(), data) {
        let n = d.len().min(b.len());
        b.as_mut_slice()[..n].copy_from_slice(&d[..n]);
    }
    let b2 = bdev.clone();
    let sent = engine.reactors().send_msg(reactor, move || {
        let ch = match b2.get_io_channel() {
            Ok(c) => c,
            Err(_) => {
                done.finish(IoStatus::Failed(libc::ENODEV), || None);
                return;
            }
        };
        let mut io = BdevIo::alloc();
        io.prep(io_type, offset / bs, len / bs);
        if let Some(b) = buf {
            io.set_buf(b, len as usize);
        }
        io.set_callback(Rc::new(done), 0);
        ch.submit(io);
    });
    if !sent {
        return Err(fail(io_type, bdev, offset, len, libc::ENODEV));
    }
    Ok(PendingIo {
        rx,
        handoff,
        io_type,
        bdev: bdev.clone(),
        offset,
        len,
    })
}

fn fail(t: IoType, bdev: &Bdev, offset: u64, len: u64, errno: i32) -> BlockingIoError {
    BlockingIoError::Failed {
        op: t.name(),
        bdev: bdev.name().to_string(),
        offset,
        len,
        errno,
    }
}

/// Writes `data` at byte `offset` through reactor 0.
pub fn write(
    engine: &Engine,
    bdev: &Arc<Bdev>,
    offset: u64,
    data: &[u8],
) -> Result<(), BlockingIoError> {
    run_io(
        engine,
        0,
        bdev,
        IoType::Write,
        offset,
        data.len() as u64,
        Some(data),
        Duration::from_secs(30),
    )
    .map(|_| ())
}

/// Reads `len` bytes at byte `offset` through reactor 0.
pub fn read(
    engine: &Engine,
    bdev: &Arc<Bdev>,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, BlockingIoError> {
    run_io(
        engine,
        0,
        bdev,
        IoType::Read,
        offset,
        len,
        None,
        Duration::from_secs(30),
    )
}

struct Slot(RefCell<Option<BdevIo>>);

impl IoCompletion for Slot {
    fn io_done(&self, io: BdevIo) {
        *self.0.borrow_mut() = Some(io);
    }
}

/// Submits `io` on this thread's inline reactor and polls until it completes.
pub fn submit_inline(reactor: &InlineReactor, bdev: &Arc<Bdev>, mut io: BdevIo) -> Option<BdevIo> {
    let slot = Rc::new(Slot(RefCell::new(None)));
    io.set_callback(slot.clone(), 0);
    bdev.get_io_channel().ok()?.submit(io);
    reactor.poll_until(Duration::from_secs(30), || slot.0.borrow().is_some());
    let done = slot.0.borrow_mut().take();
    done
}
