//! Blocking I/O helpers for the control path and tests: run one request on a reactor and wait
//! for it from an ordinary thread. Never used on the hot path (they allocate and block).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
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

struct Sender(crossbeam::channel::Sender<(IoStatus, Option<IoBuf>)>);

impl IoCompletion for Sender {
    fn io_done(&self, mut io: BdevIo) {
        let buf = io.take_buf();
        let _ = self.0.send((io.status(), buf));
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
/// [`PendingIo::wait`].
pub struct PendingIo {
    rx: crossbeam::channel::Receiver<(IoStatus, Option<IoBuf>)>,
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
                let _ = tx.send((IoStatus::Failed(libc::ENODEV), None));
                return;
            }
        };
        let mut io = BdevIo::alloc();
        io.prep(io_type, offset / bs, len / bs);
        if let Some(b) = buf {
            io.set_buf(b, len as usize);
        }
        io.set_callback(Rc::new(Sender(tx)), 0);
        ch.submit(io);
    });
    if !sent {
        return Err(fail(io_type, bdev, offset, len, libc::ENODEV));
    }
    Ok(PendingIo {
        rx,
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
