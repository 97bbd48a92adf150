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
//!
//! # Without fallocate
//! Some file systems (ramfs, vfat, NFSv3, many FUSE file systems) have neither
//! `FALLOC_FL_ZERO_RANGE` nor `FALLOC_FL_PUNCH_HOLE`. A bdev on such a file still offers
//! write-zeroes and unmap, and keeps its word: write-zeroes are written as zeroes, from one
//! shared buffer ([`zeroes`], allocated once on the control path) in pieces of at most
//! [`ZERO_CHUNK`] bytes, and unmaps do nothing (an unmap is advisory: these bdevs promise
//! nothing about what an unmapped range reads back as; a volume mirror sends write-zeroes
//! where it needs zeroes). [`FileBacking::probe_fallocate`] finds this out at create time
//! where it can without changing the file; otherwise the first request the kernel refuses
//! (`EOPNOTSUPP`, `ENOSYS` or `EINVAL` for both modes) falls back and the bdev remembers it,
//! so later requests go straight to the fallback. The change is logged once per bdev and shown
//! in `bdev_get_bdevs` (`driver_specific`: `write_zeroes: "emulated"`, `unmap: "ignored"`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::bdev::{validate_block_size, BdevError, BdevIo, IoBuf, IoStatus, IoType};

/// Largest iovec count one readv/writev accepts (Linux `UIO_MAXIOV`); longer requests are sent
/// in several pieces.
pub(crate) const IOV_MAX: usize = 1024;

/// Transient errors retried per request before giving up.
const MAX_RETRIES: u8 = 8;

/// Bytes of zeroes an emulated write-zeroes writes per system call (the size of the shared
/// zero buffer). A power of two above every direct-I/O alignment, so each piece starts
/// aligned if the request did.
pub(crate) const ZERO_CHUNK: usize = 1 << 20;

/// The buffer of zeroes every emulated write-zeroes writes from, shared by all bdevs and never
/// written to. The first call allocates it: [`open_backing`] makes that call, on the control
/// path, so the I/O path only reads the pointer.
pub(crate) fn zeroes() -> &'static [u8] {
    static ZEROES: OnceLock<&'static [u8]> = OnceLock::new();
    ZEROES.get_or_init(|| Box::leak(Box::new(IoBuf::new(ZERO_CHUNK))).as_slice())
}

/// Whether `errno`, from fallocate on a valid range, means the file system or device cannot
/// do that mode (FUSE answers `ENOSYS`, some file systems `EINVAL`).
fn fallocate_unsupported(errno: i32) -> bool {
    matches!(errno, libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
}

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
    /// Set once fallocate is known not to work here: write-zeroes are written as zeroes and
    /// unmaps do nothing.
    no_fallocate: AtomicBool,
}

impl std::fmt::Debug for FileBacking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBacking")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("size", &self.size)
            .field("direct", &self.direct.as_ref().map(|d| d.1))
            .field("no_fallocate", &self.no_fallocate.load(Ordering::Relaxed))
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
    // Allocated here, off the I/O path, for write-zeroes emulated later.
    zeroes();
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
            no_fallocate: AtomicBool::new(false),
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
        self.fallocate_call(mode, offset, len, false)
    }

    /// Finds out at create time (control path: blocks), without changing the file, whether
    /// fallocate works on it; if it does not, write-zeroes and unmap fall back from the start.
    /// Only regular files opened for writing are probed: on a block device Linux zeroes
    /// ranges itself when the device cannot (`ZERO_RANGE` never fails for lack of support),
    /// and a file system that refuses only `ZERO_RANGE` (which cannot be probed without
    /// allocating) is found by the first request.
    pub(crate) fn probe_fallocate(&self) {
        if self.kind != FileKind::Regular || self.readonly {
            return;
        }
        // Punching a hole past the end of the file (the size kept) changes nothing: there is
        // no data there. The size is read now, not at open, so nothing written since is hit.
        let end = match self.buffered.metadata() {
            Ok(m) => m.len(),
            Err(_) => return,
        };
        let res = self.fallocate_call(PUNCH_HOLE, end, 4096, true);
        match i32::try_from(-res) {
            Ok(0) => {}
            Ok(errno) if fallocate_unsupported(errno) => self.note_no_fallocate(errno),
            Ok(errno) => tracing::debug!(
                file = %self.path,
                "fallocate probe on '{}' failed ({}); deciding on the first request",
                self.path,
                io::Error::from_raw_os_error(errno)
            ),
            Err(_) => {}
        }
    }

    /// Records that fallocate does not work here (the kernel answered `errno` for every mode)
    /// and warns, once per bdev. Later requests go straight to the fallback.
    pub(crate) fn note_no_fallocate(&self, errno: i32) {
        if !self.no_fallocate.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                file = %self.path,
                "'{}' cannot zero or punch ranges with fallocate ({}): write-zeroes are \
                 written as zeroes (slower, and the space is allocated) and unmaps do nothing",
                self.path,
                io::Error::from_raw_os_error(errno)
            );
        }
    }

    /// The operation for a request type on this file (`None`: nothing to do on the file,
    /// complete the request at once: resets, and unmaps where fallocate does not work).
    pub(crate) fn op(&self, t: IoType) -> Option<Op> {
        if self.no_fallocate.load(Ordering::Relaxed) {
            match t {
                IoType::WriteZeroes => return Some(Op::ZeroFill),
                IoType::Unmap => return None,
                _ => {}
            }
        }
        Op::of(t)
    }

    /// How write-zeroes reach the file, for the driver info: `"fallocate"` or `"emulated"`.
    pub(crate) fn write_zeroes_mode(&self) -> &'static str {
        if self.no_fallocate.load(Ordering::Relaxed) {
            "emulated"
        } else {
            "fallocate"
        }
    }

    /// How unmaps reach the file, for the driver info: `"fallocate"` or `"ignored"`.
    pub(crate) fn unmap_mode(&self) -> &'static str {
        if self.no_fallocate.load(Ordering::Relaxed) {
            "ignored"
        } else {
            "fallocate"
        }
    }

    fn fallocate_call(&self, mode: i32, offset: u64, len: u64, probe: bool) -> i64 {
        let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return -(libc::EINVAL as i64);
        };
        // Tests stand in for a file system without fallocate (see `inject`).
        #[cfg(test)]
        if inject::refused(&self.path, probe, true) {
            return -(libc::EOPNOTSUPP as i64);
        }
        #[cfg(not(test))]
        let _ = probe;
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
    /// fallocate with `mode`; `alt` is tried once if `mode` is not supported. If neither is,
    /// a write-zeroes becomes [`Op::ZeroFill`] and an unmap succeeds without doing anything.
    Fallocate {
        /// The mode tried first.
        mode: i32,
        /// The fallback mode, if not used yet.
        alt: Option<i32>,
        /// Whether the range must read back as zeroes (write-zeroes, not unmap).
        zeroes: bool,
    },
    /// writev of zeroes from the shared buffer, [`ZERO_CHUNK`] bytes at a time: write-zeroes
    /// where fallocate does not work.
    ZeroFill,
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
                zeroes: false,
            }),
            IoType::WriteZeroes => Some(Op::Fallocate {
                mode: ZERO_RANGE,
                alt: Some(PUNCH_HOLE),
                zeroes: true,
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
    /// The errno with which the kernel refused both fallocate modes, until taken.
    refused: Option<i32>,
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
            refused: None,
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
        self.refused = None;
    }

    /// The errno with which the kernel refused fallocate (both modes) for this request, once:
    /// the channel then records that fallocate does not work on the file.
    pub(crate) fn take_refused(&mut self) -> Option<i32> {
        self.refused.take()
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
        if self.op == Op::ZeroFill {
            let z = zeroes();
            // Both fit: `done < len` while the request runs, and the piece is at most the
            // buffer's length.
            let piece = usize::try_from(self.len - self.done.min(self.len))
                .unwrap_or(usize::MAX)
                .min(z.len());
            self.scratch.clear();
            self.scratch.push(libc::iovec {
                // The kernel only reads from it (writev).
                iov_base: z.as_ptr() as *mut libc::c_void,
                iov_len: piece,
            });
            if self.direct && !align.is_some_and(|a| a.fits(offset, &self.scratch)) {
                self.direct = false;
            }
            return (self.scratch.as_ptr(), 1, offset);
        }
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
            let rw = matches!(self.op, Op::Read | Op::Write | Op::ZeroFill);
            if (errno == libc::EAGAIN || errno == libc::EINTR) && self.retries < MAX_RETRIES {
                self.retries += 1;
                return Outcome::Resubmit;
            }
            if errno == libc::EINVAL && rw && self.direct {
                self.direct = false;
                return Outcome::Resubmit;
            }
            if let Op::Fallocate { alt, zeroes, .. } = self.op {
                if fallocate_unsupported(errno) {
                    if let Some(m) = alt {
                        self.op = Op::Fallocate {
                            mode: m,
                            alt: None,
                            zeroes,
                        };
                        return Outcome::Resubmit;
                    }
                    self.refused = Some(errno);
                    if !zeroes {
                        // An unmap is advisory: nothing to do.
                        return Outcome::Done(IoStatus::Success);
                    }
                    self.op = Op::ZeroFill;
                    self.done = 0;
                    self.retries = 0;
                    // `segments` keeps it only where the alignment allows.
                    self.direct = true;
                    return Outcome::Resubmit;
                }
            }
            return Outcome::Done(IoStatus::Failed(errno));
        }
        match self.op {
            Op::Read | Op::Write | Op::ZeroFill => {
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
pub(crate) struct RequestSlot {
    /// The request (None: free slot).
    pub(crate) io: Option<BdevIo>,
    /// Its progress.
    pub(crate) xfer: Transfer,
}

/// A fixed table of requests in flight, indexed by the id the kernel echoes back. Allocated
/// once per channel; taking and releasing slots never allocates.
pub(crate) struct Slots {
    slots: Box<[RequestSlot]>,
    free: Vec<u32>,
}

impl Slots {
    /// A table of `n` slots.
    pub(crate) fn new(n: usize) -> Self {
        let slots: Box<[RequestSlot]> = (0..n)
            .map(|_| RequestSlot {
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
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut RequestSlot> {
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
pub(crate) mod inject;

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod test_support;
