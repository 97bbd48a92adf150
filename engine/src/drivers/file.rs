//! What the two file-backed drivers (`aio`, `uring`) share: opening a regular file or block
//! device on the control path, and the per-channel bookkeeping of requests in flight.
//!
//! # Opening
//! [`open_backing`] runs on the RPC thread, never on a reactor. It opens the path twice when it
//! can: once with `O_DIRECT` (bypassing the page cache, the normal path) and once without (the
//! *buffered* descriptor). If the file system refuses `O_DIRECT` (`EINVAL`), or the block size
//! is not a multiple of its direct-I/O alignment, or a probe read fails, only the buffered
//! descriptor is used and a warning names the file.
//!
//! # Alignment
//! `O_DIRECT` needs every buffer address aligned to the device's memory alignment and every
//! segment length (and the file offset) to a multiple of its offset alignment (`statx`
//! `STATX_DIOALIGN`, or the logical block size where the kernel does not report it). Requests
//! whose iovecs are not aligned are sent to the buffered descriptor instead of being bounced:
//! no copy buffer to size or preallocate, any request size works, and Linux keeps the two
//! views coherent (direct I/O writes back and invalidates the page cache over its range). One
//! `fsync` covers both descriptors, since they share the inode.
//!
//! # Requests in flight
//! [`Slots`] is a fixed table, sized at channel creation, of the requests a channel has handed
//! to the kernel, indexed by the `user_data`/`aio_data` the kernel echoes back. [`Transfer`]
//! tracks one request's progress: short reads/writes are resubmitted for the remainder (a
//! transfer that makes no progress fails with `EIO`), `EAGAIN`/`EINTR` are retried, an
//! `EINVAL` from the direct descriptor is retried on the buffered one, and an unsupported
//! `fallocate` mode is retried with the other mode that gives the same guarantee.
//! [`ResetGate`] completes resets once the channel has nothing in flight.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};

use crate::bdev::{validate_block_size, BdevError, BdevIo, IoBuf, IoStatus, IoType};

/// Largest iovec count one readv/writev accepts (Linux `UIO_MAXIOV`); longer requests are sent
/// in several pieces.
pub(crate) const IOV_MAX: usize = 1024;

/// Transient errors retried per request before giving up.
const MAX_RETRIES: u8 = 8;

/// `_IOR(0x12, 114, u64)`: size of a block device in bytes.
#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
const BLKGETSIZE64: libc::Ioctl = 0x4008_1272u32 as libc::Ioctl;
#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
const BLKGETSIZE64: libc::Ioctl = 0x8008_1272u32 as libc::Ioctl;

/// What the path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A regular file.
    Regular,
    /// A block device node.
    BlockDevice,
}

/// Alignment `O_DIRECT` requires on this file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirectAlign {
    /// Buffer addresses must be multiples of this.
    pub(crate) mem: usize,
    /// Segment lengths and file offsets must be multiples of this.
    pub(crate) len: usize,
}

impl DirectAlign {
    /// Whether a request at `offset` with these segments can go to the direct descriptor.
    pub(crate) fn fits(&self, offset: u64, iovs: &[libc::iovec]) -> bool {
        offset.is_multiple_of(self.len as u64)
            && iovs.iter().all(|v| {
                (v.iov_base as usize).is_multiple_of(self.mem) && v.iov_len.is_multiple_of(self.len)
            })
    }
}

/// An open file or block device, shared (in an `Arc`) by every channel of one bdev. The
/// descriptors close when the last reference drops.
pub(crate) struct FileBacking {
    path: String,
    kind: FileKind,
    readonly: bool,
    size: u64,
    logical_block_size: u32,
    buffered: File,
    direct: Option<(File, DirectAlign)>,
}

impl std::fmt::Debug for FileBacking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBacking")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("size", &self.size)
            .field("direct", &self.direct.as_ref().map(|d| d.1))
            .finish()
    }
}

/// A file opened for a bdev, with the geometry chosen for it.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The descriptors.
    pub(crate) backing: FileBacking,
    /// Bytes per block.
    pub(crate) block_size: u32,
    /// Whole blocks in the file.
    pub(crate) num_blocks: u64,
    /// Whether the caller chose the block size (SPDK's `block_size_override`).
    pub(crate) block_size_override: bool,
}

/// Opens `path` for a bdev (control path only: this blocks). `block_size` `None` or `Some(0)`
/// means the device's logical block size. On error nothing stays open.
pub(crate) fn open_backing(
    path: &str,
    block_size: Option<u32>,
    readonly: bool,
) -> Result<Opened, BdevError> {
    let mut backing = FileBacking::open(path, readonly)?;
    let requested = block_size.filter(|&b| b != 0);
    let block_size = backing.choose_block_size(requested)?;
    let num_blocks = backing.size / block_size as u64;
    if num_blocks == 0 {
        return Err(BdevError::InvalidParam(format!(
            "'{path}' holds {} bytes, less than one block of {block_size} bytes: \
             grow the file or choose a smaller block_size",
            backing.size
        )));
    }
    backing.enable_direct(block_size);
    Ok(Opened {
        backing,
        block_size,
        num_blocks,
        block_size_override: requested.is_some(),
    })
}

fn io_err(what: &'static str, path: &str, source: io::Error) -> BdevError {
    BdevError::Io {
        what,
        path: path.to_string(),
        source,
    }
}

fn kind_of(path: &str, ft: std::fs::FileType) -> Result<FileKind, BdevError> {
    if ft.is_file() {
        Ok(FileKind::Regular)
    } else if ft.is_block_device() {
        Ok(FileKind::BlockDevice)
    } else if ft.is_dir() {
        Err(io_err(
            "cannot use directory",
            path,
            io::Error::from_raw_os_error(libc::EISDIR),
        ))
    } else {
        Err(BdevError::InvalidParam(format!(
            "cannot use '{path}': it is neither a regular file nor a block device"
        )))
    }
}

fn open_fd(path: &str, readonly: bool, flags: i32) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(!readonly)
        .custom_flags(flags)
        .open(path)
}

impl FileBacking {
    /// Opens the buffered descriptor and reads the geometry.
    fn open(path: &str, readonly: bool) -> Result<FileBacking, BdevError> {
        if path.is_empty() {
            return Err(BdevError::InvalidParam(
                "filename is empty: give the path of a file or block device".into(),
            ));
        }
        // Look before opening: opening a FIFO would block the RPC thread.
        let meta = std::fs::metadata(path).map_err(|e| io_err("cannot open", path, e))?;
        kind_of(path, meta.file_type())?;
        let buffered = open_fd(path, readonly, 0).map_err(|e| io_err("cannot open", path, e))?;
        // Check again on what was actually opened (the path may have changed meanwhile).
        let meta = buffered
            .metadata()
            .map_err(|e| io_err("cannot stat", path, e))?;
        let kind = kind_of(path, meta.file_type())?;
        let (size, logical_block_size) = match kind {
            FileKind::Regular => (meta.len(), 512),
            FileKind::BlockDevice => (
                blkdev_size(&buffered).map_err(|e| io_err("cannot read the size of", path, e))?,
                blkdev_logical_block_size(&buffered)
                    .map_err(|e| io_err("cannot read the block size of", path, e))?,
            ),
        };
        Ok(FileBacking {
            path: path.to_string(),
            kind,
            readonly,
            size,
            logical_block_size,
            buffered,
            direct: None,
        })
    }

    /// The block size to use: `requested`, checked, or the logical block size.
    fn choose_block_size(&self, requested: Option<u32>) -> Result<u32, BdevError> {
        let lbs = self.logical_block_size;
        let Some(bs) = requested else {
            validate_block_size(lbs)?;
            return Ok(lbs);
        };
        validate_block_size(bs)?;
        if bs < lbs || !bs.is_multiple_of(lbs) {
            return Err(BdevError::InvalidParam(format!(
                "block_size {bs} does not fit '{}', whose logical block size is {lbs}: \
                 use {lbs} or a multiple of it",
                self.path
            )));
        }
        Ok(bs)
    }

    /// Opens the `O_DIRECT` descriptor if the file system and `block_size` allow it; otherwise
    /// warns and keeps buffered I/O only.
    fn enable_direct(&mut self, block_size: u32) {
        let path = &self.path;
        let file = match open_fd(path, self.readonly, libc::O_DIRECT) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(
                    file = %path,
                    "O_DIRECT is not supported for '{path}'; using buffered I/O through the page cache"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(
                    file = %path,
                    "cannot open '{path}' with O_DIRECT ({e}); using buffered I/O through the page cache"
                );
                return;
            }
        };
        let align = match direct_alignment(&file, self.kind, self.logical_block_size) {
            Some(a) => a,
            None => {
                tracing::warn!(
                    file = %path,
                    "the file system does not support direct I/O on '{path}'; using buffered I/O"
                );
                return;
            }
        };
        if !(block_size as usize).is_multiple_of(align.len) {
            tracing::warn!(
                file = %path,
                "block_size {block_size} is not a multiple of the direct I/O alignment {} of \
                 '{path}'; using buffered I/O (choose block_size {} for direct I/O)",
                align.len,
                align.len
            );
            return;
        }
        // Probe: one aligned read proves the descriptor and the alignment work.
        let mut probe = IoBuf::new(block_size as usize);
        if let Err(e) = file.read_at(probe.as_mut_slice(), 0) {
            tracing::warn!(
                file = %path,
                "direct read from '{path}' failed ({e}); using buffered I/O"
            );
            return;
        }
        self.direct = Some((file, align));
    }

    /// The path as given by the user.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The alignment direct I/O needs, if the direct descriptor is open.
    pub(crate) fn direct_align(&self) -> Option<DirectAlign> {
        self.direct.as_ref().map(|d| d.1)
    }

    /// The descriptor for a transfer: direct or buffered.
    pub(crate) fn fd(&self, direct: bool) -> RawFd {
        match (&self.direct, direct) {
            (Some((f, _)), true) => f.as_raw_fd(),
            _ => self.buffered.as_raw_fd(),
        }
    }

    /// Makes everything written so far durable (control path: blocks).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.buffered.sync_all()
    }

    /// `fallocate(2)` on the file, synchronously; returns 0 or a negative errno, like a
    /// completion.
    pub(crate) fn fallocate(&self, mode: i32, offset: u64, len: u64) -> i64 {
        let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return -(libc::EINVAL as i64);
        };
        // SAFETY: fallocate takes no pointers; the descriptor is open for as long as `self`.
        let rc = unsafe { libc::fallocate(self.buffered.as_raw_fd(), mode, off, len) };
        if rc == 0 {
            0
        } else {
            -(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO) as i64)
        }
    }
}

fn blkdev_size(f: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to a live local.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

fn blkdev_logical_block_size(f: &File) -> io::Result<u32> {
    let mut lbs: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points to a live local.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::BLKSSZGET, &mut lbs as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(lbs)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `statx(STATX_DIOALIGN)` on an open descriptor: `Some((mem, offset))`, where offset 0 means
/// "no direct I/O on this file"; `None` if the kernel or file system does not say.
fn statx_dio_align(f: &File) -> Option<(u32, u32)> {
    // SAFETY: `statx` is plain integers, for which all-zero bytes are a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid empty C string and `stx` is a live, writable statx buffer;
    // AT_EMPTY_PATH makes the call describe the descriptor itself.
    let rc = unsafe {
        libc::statx(
            f.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    Some((stx.stx_dio_mem_align, stx.stx_dio_offset_align))
}

/// The alignment direct I/O needs on `f`, or `None` if it cannot do direct I/O.
fn direct_alignment(f: &File, kind: FileKind, lbs: u32) -> Option<DirectAlign> {
    match statx_dio_align(f) {
        Some((_, 0)) => None,
        Some((mem, off)) => Some(DirectAlign {
            mem: (mem as usize).max(1),
            len: off as usize,
        }),
        // Not reported: be conservative. Block devices need their logical block size; on a
        // file system the block size (st_blksize) is at least the device's.
        None => {
            let a = match kind {
                FileKind::BlockDevice => lbs as usize,
                FileKind::Regular => f
                    .metadata()
                    .map(|m| m.blksize() as usize)
                    .unwrap_or(4096)
                    .clamp(512, 4096),
            };
            Some(DirectAlign { mem: a, len: a })
        }
    }
}

/// `fallocate` modes for unmap and write-zeroes. Each has a fallback giving the same
/// guarantee when the file system or device lacks the first: punching a hole reads back as
/// zeroes (so it can stand in for zeroing) and zeroing is a valid unmap.
pub(crate) const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
/// See [`PUNCH_HOLE`].
pub(crate) const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;

/// What a request asks of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// readv.
    Read,
    /// writev.
    Write,
    /// fdatasync.
    Flush,
    /// fallocate with `mode`; `alt` is tried once if `mode` is not supported.
    Fallocate {
        /// The mode tried first.
        mode: i32,
        /// The fallback mode, if not used yet.
        alt: Option<i32>,
    },
}

impl Op {
    /// The operation for a request type (`None` for reset, which touches no file).
    pub(crate) fn of(t: IoType) -> Option<Op> {
        match t {
            IoType::Read => Some(Op::Read),
            IoType::Write => Some(Op::Write),
            IoType::Flush => Some(Op::Flush),
            IoType::Unmap => Some(Op::Fallocate {
                mode: PUNCH_HOLE,
                alt: Some(ZERO_RANGE),
            }),
            IoType::WriteZeroes => Some(Op::Fallocate {
                mode: ZERO_RANGE,
                alt: Some(PUNCH_HOLE),
            }),
            IoType::Reset => None,
        }
    }
}

/// What to do after the kernel answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Complete the request with this status.
    Done(IoStatus),
    /// Submit the request again (for its remainder, or on the other descriptor or mode).
    Resubmit,
}

/// One request's progress.
pub(crate) struct Transfer {
    /// The operation.
    pub(crate) op: Op,
    /// Byte offset of the request in the file.
    pub(crate) offset: u64,
    /// Bytes in the request.
    pub(crate) len: u64,
    /// Bytes transferred so far.
    pub(crate) done: u64,
    /// Whether the next submission uses the direct descriptor.
    pub(crate) direct: bool,
    retries: u8,
    scratch: Vec<libc::iovec>,
}

impl Transfer {
    fn new() -> Self {
        Transfer {
            op: Op::Flush,
            offset: 0,
            len: 0,
            done: 0,
            direct: false,
            retries: 0,
            scratch: Vec::with_capacity(8),
        }
    }

    /// Starts a new request. `direct` is whether its buffers suit the direct descriptor.
    pub(crate) fn begin(&mut self, op: Op, offset: u64, len: u64, direct: bool) {
        self.op = op;
        self.offset = offset;
        self.len = len;
        self.done = 0;
        self.direct = direct;
        self.retries = 0;
    }

    /// The iovecs and file offset for the next readv/writev: the untransferred rest of `iovs`,
    /// at most [`IOV_MAX`] segments. Switches to the buffered descriptor if the rest is not
    /// aligned for direct I/O. The returned pointer stays valid until the next call (it points
    /// into `iovs` or into this transfer's own scratch array).
    pub(crate) fn segments(
        &mut self,
        iovs: &[libc::iovec],
        align: Option<DirectAlign>,
    ) -> (*const libc::iovec, usize, u64) {
        let offset = self.offset + self.done;
        let mut skip = usize::try_from(self.done).unwrap_or(usize::MAX);
        let mut first = 0;
        while first < iovs.len() && skip >= iovs[first].iov_len {
            skip -= iovs[first].iov_len;
            first += 1;
        }
        let rest = &iovs[first.min(iovs.len())..];
        let count = rest.len().min(IOV_MAX);
        let segs: &[libc::iovec] = if skip == 0 {
            &rest[..count]
        } else {
            self.scratch.clear();
            for (i, v) in rest[..count].iter().enumerate() {
                self.scratch.push(if i == 0 {
                    libc::iovec {
                        iov_base: (v.iov_base as *mut u8).wrapping_add(skip).cast(),
                        iov_len: v.iov_len - skip,
                    }
                } else {
                    *v
                });
            }
            &self.scratch
        };
        if self.direct && !align.is_some_and(|a| a.fits(offset, segs)) {
            self.direct = false;
        }
        (segs.as_ptr(), segs.len(), offset)
    }

    /// Digests a kernel result (bytes transferred, or a negative errno).
    pub(crate) fn on_result(&mut self, res: i64) -> Outcome {
        if res < 0 {
            let errno = i32::try_from(-res).unwrap_or(libc::EIO);
            let rw = matches!(self.op, Op::Read | Op::Write);
            if (errno == libc::EAGAIN || errno == libc::EINTR) && self.retries < MAX_RETRIES {
                self.retries += 1;
                return Outcome::Resubmit;
            }
            if errno == libc::EINVAL && rw && self.direct {
                self.direct = false;
                return Outcome::Resubmit;
            }
            if errno == libc::EOPNOTSUPP {
                if let Op::Fallocate { alt: Some(m), .. } = self.op {
                    self.op = Op::Fallocate { mode: m, alt: None };
                    return Outcome::Resubmit;
                }
            }
            return Outcome::Done(IoStatus::Failed(errno));
        }
        match self.op {
            Op::Read | Op::Write => {
                let n = res as u64;
                if n == 0 {
                    // No progress (end of file: the file shrank under us): never report a
                    // partial transfer as success.
                    return Outcome::Done(IoStatus::Failed(libc::EIO));
                }
                self.done = self.done.saturating_add(n).min(self.len);
                if self.done >= self.len {
                    Outcome::Done(IoStatus::Success)
                } else {
                    Outcome::Resubmit
                }
            }
            Op::Flush | Op::Fallocate { .. } => Outcome::Done(IoStatus::Success),
        }
    }
}

/// A request the kernel holds, and its progress.
pub(crate) struct Slot {
    /// The request (None: free slot).
    pub(crate) io: Option<BdevIo>,
    /// Its progress.
    pub(crate) xfer: Transfer,
}

/// A fixed table of requests in flight, indexed by the id the kernel echoes back. Allocated
/// once per channel; taking and releasing slots never allocates.
pub(crate) struct Slots {
    slots: Box<[Slot]>,
    free: Vec<u32>,
}

impl Slots {
    /// A table of `n` slots.
    pub(crate) fn new(n: usize) -> Self {
        let slots: Box<[Slot]> = (0..n)
            .map(|_| Slot {
                io: None,
                xfer: Transfer::new(),
            })
            .collect();
        let free = (0..n as u32).rev().collect();
        Slots { slots, free }
    }

    /// Number of slots.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Slots in use.
    pub(crate) fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Stores `io` in a free slot and returns its index, or gives `io` back if all are taken.
    pub(crate) fn insert(&mut self, io: BdevIo) -> Result<u32, BdevIo> {
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize].io = Some(io);
                Ok(i)
            }
            None => Err(io),
        }
    }

    /// The occupied slot `id`, if `id` names one (ids come back from the kernel: check them).
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Slot> {
        let s = self.slots.get_mut(usize::try_from(id).ok()?)?;
        s.io.is_some().then_some(s)
    }

    /// Empties slot `id` and returns its request.
    pub(crate) fn remove(&mut self, id: u64) -> Option<BdevIo> {
        let i = u32::try_from(id).ok()?;
        let io = self.slots.get_mut(i as usize)?.io.take()?;
        self.free.push(i);
        Some(io)
    }

    /// Takes every request still held (channel teardown).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = BdevIo> + '_ {
        self.free.clear();
        self.free.extend((0..self.slots.len() as u32).rev());
        self.slots.iter_mut().filter_map(|s| s.io.take())
    }
}

/// How [`ResetGate::admit`] dealt with a request.
pub(crate) enum Admit {
    /// Go ahead and submit it.
    Go(BdevIo),
    /// The gate took it (a reset), and completes it.
    Taken,
    /// Not now: give it back to the channel to retry.
    Later(BdevIo),
}

/// Resets complete once everything submitted before them has completed. While a reset waits,
/// new requests are turned away (the channel queues them in order), so the reset is a barrier.
/// Per channel: each reactor's channel settles its own requests.
pub(crate) struct ResetGate {
    waiting: Vec<BdevIo>,
}

impl ResetGate {
    /// A gate holding up to 8 resets.
    pub(crate) fn new() -> Self {
        ResetGate {
            waiting: Vec::with_capacity(8),
        }
    }

    /// Routes a request, given how many the channel has in flight.
    pub(crate) fn admit(&mut self, io: BdevIo, inflight: usize) -> Admit {
        if io.io_type() != IoType::Reset {
            return if self.waiting.is_empty() {
                Admit::Go(io)
            } else {
                Admit::Later(io)
            };
        }
        if inflight == 0 && self.waiting.is_empty() {
            io.complete(IoStatus::Success);
            Admit::Taken
        } else if self.waiting.len() < self.waiting.capacity() {
            self.waiting.push(io);
            Admit::Taken
        } else {
            Admit::Later(io)
        }
    }

    /// Completes waiting resets if nothing is in flight; returns how many.
    pub(crate) fn settle(&mut self, inflight: usize) -> usize {
        if inflight > 0 {
            return 0;
        }
        let n = self.waiting.len();
        for io in self.waiting.drain(..) {
            io.complete(IoStatus::Success);
        }
        n
    }

    /// Whether resets wait and nothing is in flight (a poll would complete them).
    pub(crate) fn ready(&self, inflight: usize) -> bool {
        inflight == 0 && !self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(base: usize, len: usize) -> libc::iovec {
        libc::iovec {
            iov_base: base as *mut libc::c_void,
            iov_len: len,
        }
    }

    #[test]
    fn short_transfer_resubmits_the_exact_remainder() {
        let iovs = [iov(0x10000, 4096), iov(0x20000, 4096), iov(0x30000, 8192)];
        let align = Some(DirectAlign { mem: 512, len: 512 });
        let mut x = Transfer::new();
        x.begin(Op::Read, 1 << 20, 16384, true);
        let (p, n, off) = x.segments(&iovs, align);
        assert_eq!((p, n, off), (iovs.as_ptr(), 3, 1 << 20));
        // 6144 bytes done: the rest starts 2048 bytes into the second segment.
        assert_eq!(x.on_result(6144), Outcome::Resubmit);
        let (p, n, off) = x.segments(&iovs, align);
        // SAFETY: `p` points to `n` iovecs in the transfer's scratch array, alive until the
        // next call.
        let segs = unsafe { std::slice::from_raw_parts(p, n) };
        assert_eq!(off, (1 << 20) + 6144);
        assert_eq!(n, 2);
        assert_eq!(segs[0].iov_base as usize, 0x20000 + 2048);
        assert_eq!(segs[0].iov_len, 2048);
        assert_eq!(segs[1].iov_base as usize, 0x30000);
        assert!(x.direct, "a 512-aligned remainder stays direct");
        // 2048 more: exactly at a segment boundary, so the original array is reused.
        assert_eq!(x.on_result(2048), Outcome::Resubmit);
        let (p, n, _) = x.segments(&iovs, align);
        assert_eq!((p, n), (iovs[2..].as_ptr(), 1));
        assert_eq!(x.len - x.done, 8192);
        // An unaligned cut moves the rest to the buffered descriptor.
        assert_eq!(x.on_result(100), Outcome::Resubmit);
        x.segments(&iovs, align);
        assert!(!x.direct);
        assert_eq!(x.on_result(8092), Outcome::Done(IoStatus::Success));
    }

    #[test]
    fn no_progress_is_eio_and_errors_are_reported() {
        let mut x = Transfer::new();
        x.begin(Op::Write, 0, 4096, false);
        assert_eq!(x.on_result(0), Outcome::Done(IoStatus::Failed(libc::EIO)));
        x.begin(Op::Write, 0, 4096, false);
        assert_eq!(
            x.on_result(-(libc::ENOSPC as i64)),
            Outcome::Done(IoStatus::Failed(libc::ENOSPC))
        );
        // EAGAIN is retried, but not forever.
        x.begin(Op::Read, 0, 4096, false);
        let mut n = 0;
        while x.on_result(-(libc::EAGAIN as i64)) == Outcome::Resubmit {
            n += 1;
            assert!(n < 100);
        }
        assert_eq!(n, MAX_RETRIES as usize);
        // EINVAL on the direct descriptor retries once on the buffered one.
        x.begin(Op::Read, 0, 4096, true);
        assert_eq!(x.on_result(-(libc::EINVAL as i64)), Outcome::Resubmit);
        assert!(!x.direct);
        assert_eq!(
            x.on_result(-(libc::EINVAL as i64)),
            Outcome::Done(IoStatus::Failed(libc::EINVAL))
        );
    }

    #[test]
    fn unsupported_fallocate_mode_falls_back_once() {
        let mut x = Transfer::new();
        x.begin(Op::of(IoType::Unmap).unwrap(), 0, 4096, false);
        assert_eq!(x.on_result(-(libc::EOPNOTSUPP as i64)), Outcome::Resubmit);
        assert_eq!(
            x.op,
            Op::Fallocate {
                mode: ZERO_RANGE,
                alt: None
            }
        );
        assert_eq!(
            x.on_result(-(libc::EOPNOTSUPP as i64)),
            Outcome::Done(IoStatus::Failed(libc::EOPNOTSUPP))
        );
    }

    #[test]
    fn long_iovec_lists_go_in_iov_max_pieces() {
        let iovs: Vec<libc::iovec> = (0..IOV_MAX + 10)
            .map(|i| iov(0x1000 * (i + 1), 512))
            .collect();
        let total = (iovs.len() * 512) as u64;
        let mut x = Transfer::new();
        x.begin(Op::Write, 0, total, false);
        let (_, n, _) = x.segments(&iovs, None);
        assert_eq!(n, IOV_MAX);
        assert_eq!(x.on_result((IOV_MAX * 512) as i64), Outcome::Resubmit);
        let (p, n, off) = x.segments(&iovs, None);
        assert_eq!(
            (p, n, off),
            (iovs[IOV_MAX..].as_ptr(), 10, (IOV_MAX * 512) as u64)
        );
        assert_eq!(x.on_result(10 * 512), Outcome::Done(IoStatus::Success));
    }

    #[test]
    fn alignment_check_covers_address_length_and_offset() {
        let a = DirectAlign {
            mem: 512,
            len: 4096,
        };
        assert!(a.fits(8192, &[iov(0x1000, 4096), iov(0x2200, 8192)]));
        assert!(!a.fits(8192, &[iov(0x1001, 4096)]));
        assert!(!a.fits(8192, &[iov(0x1000, 512)]));
        assert!(!a.fits(512, &[iov(0x1000, 4096)]));
    }

    #[test]
    fn slots_hand_out_and_take_back_ids() {
        let mut s = Slots::new(2);
        let a = s.insert(BdevIo::alloc()).ok().unwrap();
        let b = s.insert(BdevIo::alloc()).ok().unwrap();
        assert_ne!(a, b);
        assert!(s.insert(BdevIo::alloc()).is_err());
        assert_eq!(s.in_use(), 2);
        assert!(s.get_mut(7).is_none());
        assert!(s.remove(a as u64).is_some());
        assert!(s.remove(a as u64).is_none(), "a stale id finds nothing");
        assert!(s.get_mut(a as u64).is_none());
        assert_eq!(s.in_use(), 1);
        assert_eq!(s.drain().count(), 1);
        assert_eq!(s.in_use(), 0);
    }

    #[test]
    fn direct_io_is_used_where_the_file_system_allows_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path).unwrap().set_len(1 << 20).unwrap();
        let p = path.to_str().unwrap();
        // Ask the file system directly, independently of `open_backing`.
        let supported = open_fd(p, false, libc::O_DIRECT).is_ok_and(|f| {
            let mut b = IoBuf::new(4096);
            f.read_at(b.as_mut_slice(), 0).is_ok()
        });
        let o = open_backing(p, Some(4096), false).unwrap();
        assert_eq!(o.backing.direct_align().is_some(), supported);
        match o.backing.direct_align() {
            Some(a) => {
                assert!(a.mem <= IoBuf::ALIGN && a.len <= 4096, "{a:?}");
                assert_ne!(o.backing.fd(true), o.backing.fd(false));
            }
            None => assert_eq!(o.backing.fd(true), o.backing.fd(false)),
        }
    }

    #[test]
    fn open_reports_errno_and_geometry() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = open_backing(missing.to_str().unwrap(), None, false).unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT);
        assert!(e.to_string().contains("nope"), "{e}");
        let e = open_backing(dir.path().to_str().unwrap(), None, false).unwrap_err();
        assert_eq!(e.errno(), libc::EISDIR);
        let e = open_backing("/dev/null", None, false).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL, "{e}");

        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        f.set_len(10 * 4096 + 100).unwrap();
        let p = path.to_str().unwrap();
        let o = open_backing(p, None, false).unwrap();
        assert_eq!((o.block_size, o.num_blocks), (512, 80));
        assert!(!o.block_size_override);
        let o = open_backing(p, Some(4096), false).unwrap();
        assert_eq!((o.block_size, o.num_blocks), (4096, 10));
        assert!(o.block_size_override);
        let o = open_backing(p, Some(0), true).unwrap();
        assert_eq!(o.block_size, 512);
        for bad in [1000, 256, 1 << 20] {
            let e = open_backing(p, Some(bad), false).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "{bad}: {e}");
        }
        f.set_len(100).unwrap();
        let e = open_backing(p, None, false).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
        assert!(e.to_string().contains("less than one block"), "{e}");
    }
}

/// Scenarios both file drivers must pass, run from each driver's own tests.
#[cfg(test)]
pub(crate) mod test_support {
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
        let e =
            (d.create)(&engine, d.params("E0", &path, json!({"block_size": 1000}))).unwrap_err();
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
            let e =
                (d.create)(&engine, d.params("B0", path, json!({"block_size": 512}))).unwrap_err();
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
}
