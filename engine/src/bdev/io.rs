//! Block requests (`BdevIo`), the per-reactor pool they come from, and aligned data buffers.
//!
//! A `BdevIo` is a handle to a pooled request. Dropping it returns the request to its reactor's
//! pool, so steady-state I/O never touches the heap: the request, its iovec array (which keeps
//! its capacity) and its completion queue slot are all reused.

use std::alloc::Layout;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::rc::Rc;

use super::channel::IoChannel;
use super::segment::VolatileSegment;
use super::thread::BdevThread;

/// The kinds of block request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoType {
    /// Read blocks into the iovecs.
    Read,
    /// Write the iovecs to blocks.
    Write,
    /// Make completed writes durable.
    Flush,
    /// Discard blocks (contents become unspecified, typically zero).
    Unmap,
    /// Set blocks to zero.
    WriteZeroes,
    /// Abort/settle outstanding work; completes when the device is quiescent.
    Reset,
}

impl IoType {
    /// All types, in SPDK's `supported_io_types` order.
    pub const ALL: [IoType; 6] = [
        IoType::Read,
        IoType::Write,
        IoType::Flush,
        IoType::Unmap,
        IoType::WriteZeroes,
        IoType::Reset,
    ];

    /// SPDK's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            IoType::Read => "read",
            IoType::Write => "write",
            IoType::Flush => "flush",
            IoType::Unmap => "unmap",
            IoType::WriteZeroes => "write_zeroes",
            IoType::Reset => "reset",
        }
    }

    /// Whether the request carries data buffers.
    pub fn has_data(self) -> bool {
        matches!(self, IoType::Read | IoType::Write)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of supported request types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoTypeSet(u8);

impl IoTypeSet {
    /// Every type.
    pub fn all() -> Self {
        IoTypeSet(0x3f)
    }

    /// A set made of `types`.
    pub fn of(types: &[IoType]) -> Self {
        IoTypeSet(types.iter().fold(0, |a, t| a | t.bit()))
    }

    /// Whether `t` is in the set.
    pub fn contains(self, t: IoType) -> bool {
        self.0 & t.bit() != 0
    }

    /// The set without `t`.
    pub fn without(self, t: IoType) -> Self {
        IoTypeSet(self.0 & !t.bit())
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStatus {
    /// Not completed yet.
    Pending,
    /// Completed successfully.
    Success,
    /// Failed; the value is a positive errno (EIO, EINVAL, ENOSPC, ...).
    Failed(i32),
}

impl IoStatus {
    /// Whether the request succeeded.
    pub fn is_success(self) -> bool {
        self == IoStatus::Success
    }
}

/// Receives finished requests. Implemented by whatever submits I/O (a benchmark job, a
/// virtqueue, a volume splitting a request); it gets the request back and may resubmit it.
pub trait IoCompletion {
    /// Called on the submitting reactor, from the reactor loop (never inside `submit`).
    fn io_done(&self, io: BdevIo);
}

/// The request data behind a [`BdevIo`] handle.
pub struct IoData {
    pub(crate) io_type: IoType,
    pub(crate) offset_blocks: u64,
    pub(crate) num_blocks: u64,
    pub(crate) iovs: Vec<libc::iovec>,
    pub(crate) buf: Option<IoBuf>,
    pub(crate) status: IoStatus,
    pub(crate) cb: Option<Rc<dyn IoCompletion>>,
    pub(crate) tag: u64,
    pub(crate) parent: Option<BdevIo>,
    pub(crate) channel: Option<Rc<IoChannel>>,
    pub(crate) submit_tick: u64,
    /// Scratch space for the driver handling the request.
    pub driver_ctx: u64,
}

impl IoData {
    fn new() -> Self {
        IoData {
            io_type: IoType::Read,
            offset_blocks: 0,
            num_blocks: 0,
            iovs: Vec::with_capacity(32),
            buf: None,
            status: IoStatus::Pending,
            cb: None,
            tag: 0,
            parent: None,
            channel: None,
            submit_tick: 0,
            driver_ctx: 0,
        }
    }

    fn reset(&mut self) {
        self.iovs.clear();
        self.buf = None;
        self.status = IoStatus::Pending;
        self.cb = None;
        self.tag = 0;
        self.parent = None;
        self.channel = None;
        self.driver_ctx = 0;
    }

    /// The request type.
    pub fn io_type(&self) -> IoType {
        self.io_type
    }

    /// First block.
    pub fn offset_blocks(&self) -> u64 {
        self.offset_blocks
    }

    /// Number of blocks.
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks
    }

    /// How the request ended.
    pub fn status(&self) -> IoStatus {
        self.status
    }

    /// The caller's tag, set with [`BdevIo::set_callback`].
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// The data segments.
    pub fn iovs(&self) -> &[libc::iovec] {
        &self.iovs
    }

    /// Total bytes in the iovecs.
    pub fn iov_len(&self) -> usize {
        self.iovs.iter().map(|v| v.iov_len).sum()
    }

    /// The attached buffer, if the request owns one.
    pub fn buf(&self) -> Option<&IoBuf> {
        self.buf.as_ref()
    }

    /// The attached buffer, mutably.
    pub fn buf_mut(&mut self) -> Option<&mut IoBuf> {
        self.buf.as_mut()
    }

    /// Takes the parent request stored by a layered driver.
    pub fn take_parent(&mut self) -> Option<BdevIo> {
        self.parent.take()
    }

    /// The data segments, in order. They may be guest memory that the guest changes while
    /// the request is in flight, so they are only ever copied, never borrowed as slices.
    pub fn segments(&self) -> impl Iterator<Item = VolatileSegment<'_>> {
        self.iovs.iter().map(|v| {
            // SAFETY: every iovec was declared valid for reads and writes of `iov_len` bytes
            // until the request completes by whoever pushed it (`BdevIo::push_iov`, or the
            // request's own buffer); completion consumes the `BdevIo`, so it cannot happen
            // while this borrow of the request lives. No Rust reference to the bytes exists:
            // `VolatileSegment` only copies through raw pointers.
            unsafe { VolatileSegment::new(v.iov_base.cast(), v.iov_len) }
        })
    }

    /// Copies the request's data (its segments, in order) into `dst`; returns bytes copied.
    pub fn copy_out(&self, dst: &mut [u8]) -> usize {
        let mut done = 0;
        for seg in self.segments() {
            if done == dst.len() {
                break;
            }
            done += seg.copy_to(0, &mut dst[done..]);
        }
        done
    }

    /// Copies `src` into the request's segments, in order; returns bytes copied.
    pub fn copy_in(&mut self, src: &[u8]) -> usize {
        let mut done = 0;
        for seg in self.segments() {
            if done == src.len() {
                break;
            }
            done += seg.copy_from(0, &src[done..]);
        }
        done
    }
}

/// A handle to a pooled request. Dropping it returns the request to the reactor's pool.
pub struct BdevIo {
    data: ManuallyDrop<Box<IoData>>,
}

impl BdevIo {
    /// Takes a request from this reactor's pool (or the heap off a reactor).
    pub fn alloc() -> BdevIo {
        // The state is made on first use on a reactor; after that, no reference count moves.
        let data = match BdevThread::with(|t| t.pool.borrow_mut().take()) {
            Some(data) => data,
            None => BdevThread::current().and_then(|t| t.pool.borrow_mut().take()),
        };
        BdevIo {
            data: ManuallyDrop::new(data.unwrap_or_else(|| Box::new(IoData::new()))),
        }
    }

    /// Sets type and range, clearing any previous iovecs and status.
    pub fn prep(&mut self, io_type: IoType, offset_blocks: u64, num_blocks: u64) -> &mut Self {
        self.data.io_type = io_type;
        self.data.offset_blocks = offset_blocks;
        self.data.num_blocks = num_blocks;
        self.data.iovs.clear();
        self.data.status = IoStatus::Pending;
        self
    }

    /// Appends a data segment.
    ///
    /// # Safety
    /// `base` must be valid for reads and writes of `len` bytes from now until the request
    /// completes (its callback runs). The bytes may be changed concurrently by a third party
    /// that Rust does not see (a guest); the bdev layer and its drivers only ever reach them
    /// through raw pointers, volatile copies ([`VolatileSegment`]) or the kernel, never through a
    /// Rust reference. Within the process, the caller orders other requests on the same bytes.
    pub unsafe fn push_iov(&mut self, base: *mut u8, len: usize) {
        self.data.iovs.push(libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        });
    }

    /// Attaches an owned buffer and makes its first `len` bytes the request's only segment.
    pub fn set_buf(&mut self, mut buf: IoBuf, len: usize) {
        let len = len.min(buf.len());
        self.data.iovs.clear();
        let ptr = buf.as_mut_ptr();
        self.data.buf = Some(buf);
        // SAFETY: the buffer is owned by this request, so it lives until the request is
        // dropped or `take_buf` is called (which clears the iovecs first); `len` is in bounds.
        unsafe { self.push_iov(ptr, len) };
    }

    /// Points the single segment at `len` bytes of the attached buffer (after `prep`).
    pub fn use_buf(&mut self, len: usize) {
        self.data.iovs.clear();
        if let Some(buf) = self.data.buf.as_mut() {
            let len = len.min(buf.len());
            let ptr = buf.as_mut_ptr();
            self.data.iovs.push(libc::iovec {
                iov_base: ptr.cast(),
                iov_len: len,
            });
        }
    }

    /// Detaches the owned buffer (the request's iovecs are cleared).
    pub fn take_buf(&mut self) -> Option<IoBuf> {
        self.data.iovs.clear();
        self.data.buf.take()
    }

    /// Sets who is told when the request completes, and a tag they can read back.
    pub fn set_callback(&mut self, cb: Rc<dyn IoCompletion>, tag: u64) -> &mut Self {
        self.data.cb = Some(cb);
        self.data.tag = tag;
        self
    }

    /// Stores a parent request inside this (child) request until it completes.
    pub fn set_parent(&mut self, parent: BdevIo) {
        self.data.parent = Some(parent);
    }

    /// Copies type, range and iovecs of `other` (a layered driver building a child request).
    pub fn copy_request_from(&mut self, other: &IoData) {
        self.data.io_type = other.io_type;
        self.data.offset_blocks = other.offset_blocks;
        self.data.num_blocks = other.num_blocks;
        self.data.iovs.clear();
        self.data.iovs.extend_from_slice(&other.iovs);
        self.data.status = IoStatus::Pending;
    }

    /// Marks the request finished with `status` and queues its callback on this reactor.
    /// Drivers call this; the callback runs from the reactor loop.
    pub fn complete(mut self, status: IoStatus) {
        self.data.status = status;
        // As in `alloc`: no reference count moves once the thread's state exists.
        let mut io = Some(self);
        BdevThread::with(|t| {
            if let Some(io) = io.take() {
                t.push_completion(io);
            }
        });
        let Some(io) = io else { return };
        match BdevThread::current() {
            Some(t) => t.push_completion(io),
            None => io.finish(),
        }
    }

    /// Runs completion accounting and the callback (reactor loop only).
    pub(crate) fn finish(mut self) {
        if let Some(ch) = self.data.channel.take() {
            ch.account_completion(&self);
        }
        match self.data.cb.take() {
            Some(cb) => cb.io_done(self),
            None => drop(self),
        }
    }
}

impl Deref for BdevIo {
    type Target = IoData;
    fn deref(&self) -> &IoData {
        &self.data
    }
}

impl DerefMut for BdevIo {
    fn deref_mut(&mut self) -> &mut IoData {
        &mut self.data
    }
}

impl Drop for BdevIo {
    fn drop(&mut self) {
        // SAFETY: `data` is never used again after this point; ManuallyDrop::take moves the box
        // out exactly once.
        let mut data = unsafe { ManuallyDrop::take(&mut self.data) };
        data.reset();
        let leftover = BdevThread::with(|t| match t.pool.try_borrow_mut() {
            Ok(mut p) => p.give(data),
            Err(_) => Some(data),
        });
        // Off a reactor (or while the pool is borrowed) the request simply goes back to the heap.
        drop(leftover);
    }
}

/// A reactor's free requests.
pub(crate) struct IoPool {
    // Boxed on purpose: a request keeps its address while it travels as a handle.
    #[allow(clippy::vec_box)]
    free: Vec<Box<IoData>>,
}

impl IoPool {
    /// A pool with `n` requests preallocated.
    pub(crate) fn new(n: usize) -> Self {
        let mut free = Vec::with_capacity(n * 4);
        free.extend((0..n).map(|_| Box::new(IoData::new())));
        IoPool { free }
    }

    fn take(&mut self) -> Option<Box<IoData>> {
        self.free.pop()
    }

    /// Returns a request; hands it back if the pool is at capacity.
    fn give(&mut self, d: Box<IoData>) -> Option<Box<IoData>> {
        if self.free.len() < self.free.capacity() {
            self.free.push(d);
            None
        } else {
            Some(d)
        }
    }
}

/// A heap buffer aligned for O_DIRECT (4096 bytes), zero-filled at creation.
pub struct IoBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: IoBuf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for IoBuf {}

impl IoBuf {
    /// Alignment of every buffer.
    pub const ALIGN: usize = 4096;

    /// Allocates `len` zeroed bytes (at least 1).
    pub fn new(len: usize) -> IoBuf {
        let layout = match Layout::from_size_align(len.max(1), Self::ALIGN) {
            Ok(l) => l,
            Err(_) => panic!("IoBuf of {len} bytes is too large"),
        };
        // SAFETY: the layout has non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        IoBuf { ptr, layout }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Whether the buffer is empty (never: buffers hold at least one byte).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Raw pointer to the first byte.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes (zeroed at allocation) and borrowed
        // immutably through &self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len()) }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len initialised bytes and borrowed exclusively through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len()) }
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout and not freed before.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iobuf_is_aligned_and_zeroed() {
        let mut b = IoBuf::new(8192);
        assert_eq!(b.as_mut_ptr() as usize % IoBuf::ALIGN, 0);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        b.as_mut_slice()[5] = 9;
        assert_eq!(b.as_slice()[5], 9);
    }

    #[test]
    fn copy_in_and_out_span_segments() {
        let mut io = BdevIo::alloc();
        let mut a = [0u8; 3];
        let mut b = [0u8; 5];
        io.prep(IoType::Write, 0, 1);
        // SAFETY: a and b outlive io's use here.
        unsafe {
            io.push_iov(a.as_mut_ptr(), a.len());
            io.push_iov(b.as_mut_ptr(), b.len());
        }
        assert_eq!(io.copy_in(&[1, 2, 3, 4, 5, 6, 7, 8]), 8);
        let mut out = [0u8; 8];
        assert_eq!(io.copy_out(&mut out), 8);
        drop(io);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(a, [1, 2, 3]);
        assert_eq!(b, [4, 5, 6, 7, 8]);
    }

    #[test]
    fn typeset() {
        let s = IoTypeSet::of(&[IoType::Read, IoType::Write]);
        assert!(s.contains(IoType::Read) && !s.contains(IoType::Unmap));
        assert!(!IoTypeSet::all()
            .without(IoType::Unmap)
            .contains(IoType::Unmap));
    }
}
