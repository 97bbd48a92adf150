//! A driver-side vhost-user-blk client for tests: it plays the guest and QEMU at once.
//!
//! - `GuestMem`: "guest RAM", a memfd mapped into this process; its guest physical
//!   addresses start at `GPA_BASE` so that GPA 0 lies outside guest memory.
//! - `VirtQueue`: a split virtqueue laid out by hand in guest memory (descriptor table,
//!   available ring, used ring). Tests write any descriptor they like, including invalid ones.
//! - `Heap`: a bump allocator for request buffers over a region filled with a known pattern,
//!   so a test can prove that the device wrote nothing outside the buffers it was given.
//! - `Client`: the vhost-user handshake through `vhost::vhost_user::Frontend` (owner,
//!   features, protocol features, memory table, ring set-up) and small helpers for well-formed
//!   virtio-blk requests.
//!
//! Everything waits with a deadline, so a misbehaving device makes a test fail rather than hang.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{fence, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Descriptor continues via `next`.
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Descriptor is device-writable.
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Descriptor points at an indirect descriptor table.
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Used ring flag: the device does not want kicks.
pub const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;

/// virtio-blk request types.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// Write.
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// Flush.
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Device id.
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// Discard.
pub const VIRTIO_BLK_T_DISCARD: u32 = 11;
/// Write zeroes.
pub const VIRTIO_BLK_T_WRITE_ZEROES: u32 = 13;
/// Status: success.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Status: I/O error.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Status: unsupported request.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Feature bit: VIRTIO_F_VERSION_1.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Feature bit: VIRTIO_RING_F_INDIRECT_DESC.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// Feature bit: VIRTIO_RING_F_EVENT_IDX.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// Feature bit: VIRTIO_BLK_F_RO.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;

/// Guest physical address of the first byte of guest memory.
pub const GPA_BASE: u64 = 0x10_0000;
/// Bytes reserved at the start of guest memory for the rings.
pub const RING_AREA: u64 = 0x1_0000;
/// Bytes after the rings used by [`Client::io`] for its header, data and status.
pub const SCRATCH_AREA: u64 = (1 << 20) + 0x1000;

/// Deadline for one well-formed request.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// "Guest RAM": a memfd shared with the backend, mapped here at least once.
pub struct GuestMem {
    file: File,
    base: *mut u8,
    size: usize,
    gpa: u64,
    /// Further mappings of the same memfd (memory tables sent again at other addresses).
    extra: Mutex<Vec<usize>>,
}

// SAFETY: `base` points to a shared mapping owned by this value for its whole life; every
// access goes through methods that copy bytes in or out (or use atomics for ring indices), and
// the same memory is concurrently written by another process anyway, so no thread-local
// assumption is made about it.
unsafe impl Send for GuestMem {}
// SAFETY: see `Send`: no method hands out references that assume exclusive access.
unsafe impl Sync for GuestMem {}

fn map_shared(file: &File, size: usize) -> *mut u8 {
    // SAFETY: a new MAP_SHARED mapping of `size` bytes of a file at least that long, at an
    // address the kernel chooses; it does not alias or affect any existing Rust object.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert!(
        p != libc::MAP_FAILED,
        "mmap guest memory: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

impl GuestMem {
    /// Creates `size` bytes of zeroed guest memory at `GPA_BASE`.
    pub fn new(size: usize) -> GuestMem {
        Self::new_at(size, GPA_BASE)
    }

    /// Creates `size` bytes of zeroed guest memory at guest physical address `gpa` (a further
    /// region, for ADD_MEM_REG).
    pub fn new_at(size: usize, gpa: u64) -> GuestMem {
        // SAFETY: memfd_create with a NUL-terminated name; the result is checked below.
        let fd = unsafe { libc::memfd_create(c"plexd-test-guest".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size as u64).expect("size guest memory");
        let base = map_shared(&file, size);
        GuestMem {
            file,
            base,
            size,
            gpa,
            extra: Mutex::new(Vec::new()),
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// First guest physical address.
    pub fn start(&self) -> u64 {
        self.gpa
    }

    /// One past the last guest physical address.
    pub fn end(&self) -> u64 {
        self.gpa + self.size as u64
    }

    /// This process's address of the first byte (the "front-end virtual address").
    pub fn user_addr(&self) -> u64 {
        self.base as u64
    }

    /// Front-end virtual address of `gpa` in the first mapping.
    pub fn vva(&self, gpa: u64) -> u64 {
        assert!(
            gpa >= self.gpa && gpa < self.end(),
            "{gpa:#x} not in guest memory"
        );
        self.user_addr() + (gpa - self.gpa)
    }

    /// Maps the memfd again; returns the new mapping's address (unmapped on drop).
    pub fn remap(&self) -> u64 {
        let p = map_shared(&self.file, self.size);
        self.extra
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(p as usize);
        p as u64
    }

    /// Shrinks the memfd to `len` bytes (a hostile front-end; the pages past `len` must not
    /// be touched afterwards, here or in the backend).
    pub fn truncate(&self, len: u64) {
        self.file.set_len(len).expect("truncate guest memory");
    }

    /// The region to send in a memory table: `size` bytes from the start, as mapped at
    /// `user_addr`.
    pub fn region(&self, user_addr: u64, size: u64) -> VhostUserMemoryRegionInfo {
        VhostUserMemoryRegionInfo {
            guest_phys_addr: self.gpa,
            memory_size: size,
            userspace_addr: user_addr,
            mmap_offset: 0,
            mmap_handle: self.file.as_raw_fd(),
        }
    }

    fn ptr(&self, gpa: u64, len: usize) -> *mut u8 {
        let ok = gpa >= self.gpa
            && (gpa - self.gpa)
                .checked_add(len as u64)
                .is_some_and(|e| e <= self.size as u64);
        assert!(ok, "[{gpa:#x}, +{len}) is not inside guest memory");
        // SAFETY: the offset is inside the mapping (checked above).
        unsafe { self.base.add((gpa - self.gpa) as usize) }
    }

    /// Copies `data` to `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) {
        let p = self.ptr(gpa, data.len());
        // SAFETY: `p` is valid for `data.len()` bytes of our mapping (checked by `ptr`), and
        // `data` is ordinary process memory, not inside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
    }

    /// Copies bytes at `gpa` into `out`.
    pub fn read(&self, gpa: u64, out: &mut [u8]) {
        let p = self.ptr(gpa, out.len());
        // SAFETY: `p` is valid for `out.len()` bytes (checked by `ptr`); `out` is not inside
        // the mapping.
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
    }

    /// Reads `len` bytes at `gpa`.
    pub fn read_vec(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.read(gpa, &mut v);
        v
    }

    /// Fills `len` bytes at `gpa` with `byte`.
    pub fn fill(&self, gpa: u64, len: usize, byte: u8) {
        let p = self.ptr(gpa, len);
        // SAFETY: `p` is valid for `len` bytes (checked by `ptr`).
        unsafe { std::ptr::write_bytes(p, byte, len) };
    }

    /// Reads one byte.
    pub fn byte(&self, gpa: u64) -> u8 {
        let p = self.ptr(gpa, 1);
        // SAFETY: `p` is valid for one byte; volatile because the device writes it.
        unsafe { std::ptr::read_volatile(p) }
    }

    /// Writes a little-endian u16.
    pub fn put_u16(&self, gpa: u64, v: u16) {
        self.write(gpa, &v.to_le_bytes());
    }

    /// Reads a little-endian u16.
    pub fn get_u16(&self, gpa: u64) -> u16 {
        let mut b = [0u8; 2];
        self.read(gpa, &mut b);
        u16::from_le_bytes(b)
    }

    /// Reads a little-endian u32.
    pub fn get_u32(&self, gpa: u64) -> u32 {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b);
        u32::from_le_bytes(b)
    }

    /// The u16 at `gpa` as an atomic (ring indices); `gpa` must be 2-aligned.
    fn atomic_u16(&self, gpa: u64) -> &AtomicU16 {
        let p = self.ptr(gpa, 2);
        assert_eq!(p as usize % 2, 0, "unaligned ring index at {gpa:#x}");
        // SAFETY: `p` is 2-aligned and valid for 2 bytes for as long as `self` lives (the
        // mapping is only removed on drop); AtomicU16 has the size and alignment of u16.
        unsafe { &*(p as *const AtomicU16) }
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        let extra = std::mem::take(&mut *self.extra.lock().unwrap_or_else(|p| p.into_inner()));
        for p in extra.into_iter().chain(std::iter::once(self.base as usize)) {
            // SAFETY: each address is a mapping of `self.size` bytes made by `map_shared`
            // and not unmapped before; nothing refers to it after drop.
            unsafe { libc::munmap(p as *mut libc::c_void, self.size) };
        }
    }
}

/// A descriptor as laid out in a descriptor table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Desc {
    /// Guest physical address of the buffer.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// `VIRTQ_DESC_F_*`.
    pub flags: u16,
    /// Next descriptor index (if `VIRTQ_DESC_F_NEXT`).
    pub next: u16,
}

impl Desc {
    /// A device-readable buffer.
    pub fn ro(addr: u64, len: u32) -> Desc {
        Desc {
            addr,
            len,
            flags: 0,
            next: 0,
        }
    }

    /// A device-writable buffer.
    pub fn wo(addr: u64, len: u32) -> Desc {
        Desc {
            addr,
            len,
            flags: VIRTQ_DESC_F_WRITE,
            next: 0,
        }
    }

    /// A descriptor referring to an indirect table of `entries` descriptors at `addr`.
    pub fn indirect(addr: u64, entries: u32) -> Desc {
        Desc {
            addr,
            len: entries * 16,
            flags: VIRTQ_DESC_F_INDIRECT,
            next: 0,
        }
    }

    /// Whether the device may write the buffer.
    pub fn writable(&self) -> bool {
        self.flags & VIRTQ_DESC_F_WRITE != 0
    }

    fn bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// Links `descs` into one chain whose entries sit at `first, first+1, ...` (mod `size`);
/// returns them with `NEXT` flags and indices filled in.
pub fn link(descs: &[Desc], first: u16, size: u16) -> Vec<Desc> {
    let n = descs.len();
    descs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut d = *d;
            if i + 1 < n {
                d.flags |= VIRTQ_DESC_F_NEXT;
                d.next = ((first as usize + i + 1) % size as usize) as u16;
            }
            d
        })
        .collect()
}

/// A used ring element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    /// Head descriptor index.
    pub id: u32,
    /// Bytes the device wrote.
    pub len: u32,
}

/// A split virtqueue laid out in guest memory, driven from the driver side.
pub struct VirtQueue {
    /// Queue index.
    pub index: u16,
    /// Number of entries.
    pub size: u16,
    /// Descriptor table (GPA).
    pub desc: u64,
    /// Available ring (GPA).
    pub avail: u64,
    /// Used ring (GPA).
    pub used: u64,
    /// Driver → device notifications.
    pub kick: EventFd,
    /// Device → driver notifications.
    pub call: EventFd,
    /// Device → front-end error notifications (SET_VRING_ERR).
    pub err: EventFd,
    /// EVENT_IDX negotiated.
    pub event_idx: bool,
    /// Kick after every publication (otherwise only when the device asks for it).
    pub always_kick: bool,
    avail_idx: u16,
    last_used: u16,
}

impl VirtQueue {
    /// Bytes a ring of `size` entries occupies.
    pub fn footprint(size: u16) -> u64 {
        let s = size as u64;
        let used_off = (16 * s + 6 + 2 * s).next_multiple_of(64);
        used_off + 6 + 8 * s
    }

    /// Lays out a queue of `size` entries at `gpa` (zeroing it).
    pub fn new(mem: &GuestMem, index: u16, size: u16, gpa: u64, event_idx: bool) -> VirtQueue {
        assert!(size.is_power_of_two());
        let s = size as u64;
        let desc = gpa;
        let avail = desc + 16 * s;
        let used = (avail + 6 + 2 * s).next_multiple_of(64);
        mem.fill(gpa, Self::footprint(size) as usize, 0);
        VirtQueue {
            index,
            size,
            desc,
            avail,
            used,
            kick: EventFd::new(EFD_NONBLOCK).expect("kick eventfd"),
            call: EventFd::new(EFD_NONBLOCK).expect("call eventfd"),
            err: EventFd::new(EFD_NONBLOCK).expect("err eventfd"),
            event_idx,
            always_kick: true,
            avail_idx: 0,
            last_used: 0,
        }
    }

    /// Writes descriptor `i` (any index: tests may write past the table on purpose only
    /// through `write_table`).
    pub fn set_desc(&self, mem: &GuestMem, i: u16, d: Desc) {
        assert!(i < self.size);
        mem.write(self.desc + 16 * i as u64, &d.bytes());
    }

    /// Writes `descs` as one chain starting at index `first`; returns the head (`first`).
    pub fn set_chain(&self, mem: &GuestMem, first: u16, descs: &[Desc]) -> u16 {
        for (i, d) in link(descs, first, self.size).into_iter().enumerate() {
            self.set_desc(mem, ((first as usize + i) % self.size as usize) as u16, d);
        }
        first
    }

    /// The driver's next available index.
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// The next used index the driver expects.
    pub fn last_used(&self) -> u16 {
        self.last_used
    }

    /// Puts `heads` in the available ring and publishes them with one index update, then
    /// kicks (see [`VirtQueue::always_kick`]).
    pub fn push_many(&mut self, mem: &GuestMem, heads: &[u16]) {
        let old = self.avail_idx;
        for (k, h) in heads.iter().enumerate() {
            let slot = (old.wrapping_add(k as u16) % self.size) as u64;
            mem.put_u16(self.avail + 4 + 2 * slot, *h);
        }
        let new = old.wrapping_add(heads.len() as u16);
        self.publish(mem, new, old);
    }

    /// Publishes one head.
    pub fn push(&mut self, mem: &GuestMem, head: u16) {
        self.push_many(mem, &[head]);
    }

    /// Sets `avail.idx` to any value (hostile) and kicks.
    pub fn set_avail_idx(&mut self, mem: &GuestMem, idx: u16) {
        let old = self.avail_idx;
        self.publish(mem, idx, old);
    }

    fn publish(&mut self, mem: &GuestMem, new: u16, old: u16) {
        // Ring entries before the index (Release), and the index before reading the
        // device's event index (SeqCst), as virtio requires.
        mem.atomic_u16(self.avail + 2).store(new, Ordering::Release);
        fence(Ordering::SeqCst);
        self.avail_idx = new;
        let kick = if self.always_kick {
            true
        } else if self.event_idx {
            let event = mem
                .atomic_u16(self.used + 4 + 8 * self.size as u64)
                .load(Ordering::Acquire);
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            mem.atomic_u16(self.used).load(Ordering::Acquire) & VIRTQ_USED_F_NO_NOTIFY == 0
        };
        if kick {
            self.kick();
        }
    }

    /// Notifies the device.
    pub fn kick(&self) {
        self.kick.write(1).expect("kick");
    }

    /// The device's used index.
    pub fn used_idx(&self, mem: &GuestMem) -> u16 {
        mem.atomic_u16(self.used + 2).load(Ordering::Acquire)
    }

    /// Takes the next used element, if any.
    pub fn pop_used(&mut self, mem: &GuestMem) -> Option<Used> {
        if self.used_idx(mem) == self.last_used {
            return None;
        }
        let slot = (self.last_used % self.size) as u64;
        let e = self.used + 4 + 8 * slot;
        let u = Used {
            id: mem.get_u32(e),
            len: mem.get_u32(e + 4),
        };
        self.last_used = self.last_used.wrapping_add(1);
        Some(u)
    }

    /// Waits up to `timeout` for the next used element (sleeping on the call eventfd).
    pub fn wait_used(&mut self, mem: &GuestMem, timeout: Duration) -> Option<Used> {
        let end = Instant::now() + timeout;
        loop {
            if self.event_idx {
                // used_event: interrupt me when the next element is used.
                mem.atomic_u16(self.avail + 4 + 2 * self.size as u64)
                    .store(self.last_used, Ordering::Release);
                fence(Ordering::SeqCst);
            }
            if let Some(u) = self.pop_used(mem) {
                return Some(u);
            }
            let now = Instant::now();
            if now >= end {
                return None;
            }
            let ms = (end - now).as_millis().clamp(1, 5) as i32;
            let mut pfd = libc::pollfd {
                fd: self.call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd on the stack, count 1.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            let _ = self.call.read();
        }
    }

    /// Bytes of the descriptor table and available ring (the device must never write them).
    pub fn driver_area(&self, mem: &GuestMem) -> Vec<u8> {
        // Everything from the table to the end of the avail ring, minus used_event (which the
        // driver itself updates while waiting).
        mem.read_vec(
            self.desc,
            (self.avail + 4 + 2 * self.size as u64 - self.desc) as usize,
        )
    }
}

/// Bytes left untouched around every heap buffer.
pub const GUARD: u64 = 256;

/// The byte the heap holds at `gpa` until something writes it. Always ≥ 0x80, so neither a
/// status value nor a zero-filled disk block can be mistaken for it.
pub fn pattern(gpa: u64) -> u8 {
    ((gpa.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 57) as u8) | 0x80
}

/// A bump allocator over `[start, end)` of guest memory, pre-filled with [`pattern`].
pub struct Heap {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    next: u64,
    /// The pattern, as filled in.
    fresh: Vec<u8>,
    /// What the heap should hold: the pattern plus what the driver wrote since.
    expected: Vec<u8>,
}

impl Heap {
    /// A heap over `[start, end)`, filled with the pattern.
    pub fn new(mem: &GuestMem, start: u64, end: u64) -> Heap {
        let fresh: Vec<u8> = (start..end).map(pattern).collect();
        let h = Heap {
            start,
            end,
            next: start,
            expected: fresh.clone(),
            fresh,
        };
        mem.write(start, &h.expected);
        h
    }

    /// Refills the pattern and frees everything.
    pub fn reset(&mut self, mem: &GuestMem) {
        self.expected.copy_from_slice(&self.fresh);
        mem.write(self.start, &self.expected);
        self.next = self.start;
    }

    /// Writes `data` at `gpa` (inside the heap) as the driver, so [`Heap::check`] expects it.
    pub fn write(&mut self, mem: &GuestMem, gpa: u64, data: &[u8]) {
        assert!(gpa >= self.start && gpa + data.len() as u64 <= self.end);
        let off = (gpa - self.start) as usize;
        self.expected[off..off + data.len()].copy_from_slice(data);
        mem.write(gpa, data);
    }

    /// Reserves `len` bytes (64-aligned, with guard bands on both sides); returns the GPA.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let a = (self.next + GUARD).next_multiple_of(64);
        self.next = a + len;
        assert!(self.next + GUARD <= self.end, "test heap exhausted");
        a
    }

    /// Reserves room for `data` and copies it there.
    pub fn put(&mut self, mem: &GuestMem, data: &[u8]) -> u64 {
        let a = self.alloc(data.len() as u64);
        self.write(mem, a, data);
        a
    }

    /// Reserves room for a descriptor table and writes it.
    pub fn put_table(&mut self, mem: &GuestMem, descs: &[Desc]) -> u64 {
        let mut b = Vec::with_capacity(descs.len() * 16);
        for d in descs {
            b.extend_from_slice(&d.bytes());
        }
        self.put(mem, &b)
    }

    /// Checks that every heap byte outside `allowed` (GPA, length) ranges still holds the
    /// pattern; describes the first difference otherwise.
    pub fn check(&self, mem: &GuestMem, allowed: &[(u64, u64)]) -> Result<(), String> {
        let actual = mem.read_vec(self.start, (self.end - self.start) as usize);
        let mut ranges: Vec<(u64, u64)> = allowed
            .iter()
            .map(|(a, l)| {
                let s = (*a).clamp(self.start, self.end);
                let e = a.saturating_add(*l).clamp(self.start, self.end);
                (s - self.start, e - self.start)
            })
            .collect();
        ranges.sort_unstable();
        let mut pos = 0u64;
        let mut segments = Vec::new();
        for (s, e) in ranges {
            if s > pos {
                segments.push((pos, s));
            }
            pos = pos.max(e);
        }
        segments.push((pos, self.end - self.start));
        for (s, e) in segments {
            let (s, e) = (s as usize, e as usize);
            if actual[s..e] != self.expected[s..e] {
                let i = (s..e).find(|&i| actual[i] != self.expected[i]).unwrap_or(s);
                return Err(format!(
                    "guest memory outside the request's writable buffers changed at {:#x}: {:#04x} instead of {:#04x}",
                    self.start + i as u64,
                    actual[i],
                    self.expected[i]
                ));
            }
        }
        Ok(())
    }
}

/// A virtio-blk request header.
pub fn blk_header(t: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&t.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    h
}

/// Handshake options.
#[derive(Debug, Clone)]
pub struct ClientOpts {
    /// Guest memory size.
    pub mem_size: usize,
    /// Entries in queue 0.
    pub queue_size: u16,
    /// Device features to accept (ANDed with what the device offers).
    pub accept_features: u64,
    /// Read/write timeout on the vhost-user socket.
    pub socket_timeout: Duration,
    /// Protocol features to negotiate besides the usual ones (if the device offers them).
    pub extra_protocol: VhostUserProtocolFeatures,
}

impl Default for ClientOpts {
    fn default() -> Self {
        ClientOpts {
            mem_size: 8 << 20,
            queue_size: 16,
            accept_features: u64::MAX,
            socket_timeout: Duration::from_secs(40),
            extra_protocol: VhostUserProtocolFeatures::empty(),
        }
    }
}

/// Ring addresses as the front-end sends them (its virtual addresses).
#[derive(Debug, Clone, Copy)]
pub struct VringAddrs {
    /// Descriptor table.
    pub desc: u64,
    /// Available ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
}

/// A connected vhost-user-blk front-end with one started queue (queue 0).
pub struct Client {
    /// The protocol endpoint.
    pub fe: Frontend,
    /// Guest memory.
    pub mem: Arc<GuestMem>,
    /// Queue 0.
    pub vq: VirtQueue,
    /// Request buffers (after the rings and the scratch area).
    pub heap: Heap,
    /// Acked virtio features.
    pub features: u64,
    /// Acked protocol features.
    pub protocol: VhostUserProtocolFeatures,
    /// GET_QUEUE_NUM.
    pub num_queues: u64,
}

fn vu<T>(what: &str, r: vhost::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

impl Client {
    /// Connects to `socket`, negotiates, sends the memory table and starts queue 0.
    pub fn connect(socket: &Path, opts: &ClientOpts) -> Result<Client, String> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| format!("connect {}: {e}", socket.display()))?;
        stream
            .set_read_timeout(Some(opts.socket_timeout))
            .and_then(|_| stream.set_write_timeout(Some(opts.socket_timeout)))
            .map_err(|e| format!("socket timeouts: {e}"))?;
        let mut fe = Frontend::from_stream(stream, 1);
        vu("SET_OWNER", fe.set_owner())?;
        let offered = vu("GET_FEATURES", fe.get_features())?;
        let proto_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if offered & proto_bit == 0 {
            return Err("the device does not offer VHOST_USER_F_PROTOCOL_FEATURES".into());
        }
        let features = (offered & opts.accept_features) | proto_bit;
        vu("SET_FEATURES", fe.set_features(features))?;
        let pf = vu("GET_PROTOCOL_FEATURES", fe.get_protocol_features())?;
        let want = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
            | opts.extra_protocol;
        let protocol = pf & want;
        vu("SET_PROTOCOL_FEATURES", fe.set_protocol_features(protocol))?;
        if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            // Every message is answered: errors surface at the call that caused them.
            fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        let num_queues = if protocol.contains(VhostUserProtocolFeatures::MQ) {
            vu("GET_QUEUE_NUM", fe.get_queue_num())?
        } else {
            1
        };
        let mem = Arc::new(GuestMem::new(opts.mem_size));
        vu(
            "SET_MEM_TABLE",
            fe.set_mem_table(&[mem.region(mem.user_addr(), mem.size() as u64)])
                .map(|_| ()),
        )?;
        let event_idx = features & VIRTIO_RING_F_EVENT_IDX != 0;
        assert!(VirtQueue::footprint(opts.queue_size) <= RING_AREA);
        let vq = VirtQueue::new(&mem, 0, opts.queue_size, GPA_BASE, event_idx);
        let heap_start = GPA_BASE + RING_AREA + SCRATCH_AREA;
        let heap = Heap::new(&mem, heap_start, mem.end().min(heap_start + (4 << 20)));
        let mut c = Client {
            fe,
            mem,
            vq,
            heap,
            features,
            protocol,
            num_queues,
        };
        c.start_queue()?;
        Ok(c)
    }

    /// Sends SET_VRING_NUM/ADDR/BASE/CALL/KICK/ENABLE for queue 0 as laid out in `vq`
    /// (the device resumes at the driver's current available index).
    pub fn start_queue(&mut self) -> Result<(), String> {
        let addrs = VringAddrs {
            desc: self.mem.vva(self.vq.desc),
            avail: self.mem.vva(self.vq.avail),
            used: self.mem.vva(self.vq.used),
        };
        self.fe_set_vring_num(self.vq.size)?;
        self.fe_start_with_addrs(&addrs)
    }

    /// SET_VRING_NUM for queue 0 (any value: tests send invalid ones).
    pub fn fe_set_vring_num(&self, num: u16) -> Result<(), String> {
        vu(
            "SET_VRING_NUM",
            self.fe.set_vring_num(self.vq.index as usize, num),
        )
    }

    /// SET_VRING_ENABLE for queue 0.
    pub fn fe_set_vring_enable(&mut self, enable: bool) -> Result<(), String> {
        let i = self.vq.index as usize;
        vu("SET_VRING_ENABLE", self.fe.set_vring_enable(i, enable))
    }

    /// SET_VRING_ADDR (any addresses), BASE, CALL, KICK and ENABLE for queue 0.
    pub fn fe_start_with_addrs(&mut self, addrs: &VringAddrs) -> Result<(), String> {
        let q = &self.vq;
        let i = q.index as usize;
        let cfg = VringConfigData {
            queue_max_size: q.size,
            queue_size: q.size,
            flags: 0,
            desc_table_addr: addrs.desc,
            used_ring_addr: addrs.used,
            avail_ring_addr: addrs.avail,
            log_addr: None,
        };
        vu("SET_VRING_ADDR", self.fe.set_vring_addr(i, &cfg))?;
        vu("SET_VRING_BASE", self.fe.set_vring_base(i, q.avail_idx()))?;
        vu("SET_VRING_CALL", self.fe.set_vring_call(i, &q.call))?;
        vu("SET_VRING_ERR", self.fe.set_vring_err(i, &q.err))?;
        vu("SET_VRING_KICK", self.fe.set_vring_kick(i, &q.kick))?;
        self.fe_set_vring_enable(true)
    }

    /// GET_VRING_BASE for queue 0 (stops it; the device drains it first).
    pub fn stop_queue(&mut self) -> Result<u32, String> {
        vu(
            "GET_VRING_BASE",
            self.fe.get_vring_base(self.vq.index as usize),
        )
    }

    /// Sends the memory table again: the first `size` bytes, mapped at `user_addr`.
    pub fn set_mem_table(&self, user_addr: u64, size: u64) -> Result<(), String> {
        vu(
            "SET_MEM_TABLE",
            self.fe
                .set_mem_table(&[self.mem.region(user_addr, size)])
                .map(|_| ()),
        )
    }

    /// ADD_MEM_REG: adds all of `region` (at its own guest physical address) to the table.
    pub fn add_mem_region(&mut self, region: &GuestMem) -> Result<(), String> {
        vu(
            "ADD_MEM_REG",
            self.fe
                .add_mem_region(&region.region(region.user_addr(), region.size() as u64))
                .map(|_| ()),
        )
    }

    /// REM_MEM_REG: removes `region` (added with [`Client::add_mem_region`]).
    pub fn remove_mem_region(&mut self, region: &GuestMem) -> Result<(), String> {
        vu(
            "REM_MEM_REG",
            self.fe
                .remove_mem_region(&region.region(region.user_addr(), region.size() as u64)),
        )
    }

    /// Whether the device offered read-only.
    pub fn readonly(&self) -> bool {
        self.features & VIRTIO_BLK_F_RO != 0
    }

    /// One well-formed request through the scratch area (header, data, status in three
    /// descriptors at the end of the table): `data` is sent for writes and filled for
    /// reads. Returns (status, used length).
    pub fn io(&mut self, t: u32, sector: u64, data: &mut [u8]) -> Result<(u8, u32), String> {
        assert!(data.len() as u64 <= SCRATCH_AREA - 0x1000);
        let mem = self.mem.clone();
        let base = GPA_BASE + RING_AREA;
        let (hdr, st, buf) = (base, base + 64, base + 0x1000);
        mem.write(hdr, &blk_header(t, sector));
        mem.write(st, &[0xEE]);
        let dev_writes =
            t != VIRTIO_BLK_T_OUT && t != VIRTIO_BLK_T_DISCARD && t != VIRTIO_BLK_T_WRITE_ZEROES;
        if dev_writes {
            mem.fill(buf, data.len(), 0xCC);
        } else {
            mem.write(buf, data);
        }
        let mut descs = vec![Desc::ro(hdr, 16)];
        if !data.is_empty() {
            descs.push(if dev_writes {
                Desc::wo(buf, data.len() as u32)
            } else {
                Desc::ro(buf, data.len() as u32)
            });
        }
        descs.push(Desc::wo(st, 1));
        let first = self.vq.size - descs.len() as u16;
        let head = self.vq.set_chain(&mem, first, &descs);
        self.vq.push(&mem, head);
        let u = self.vq.wait_used(&mem, IO_TIMEOUT).ok_or_else(|| {
            format!("request type {t} at sector {sector}: no completion within {IO_TIMEOUT:?}")
        })?;
        if u.id != head as u32 {
            return Err(format!(
                "completion for descriptor {} while waiting for {head}",
                u.id
            ));
        }
        if dev_writes {
            mem.read(buf, data);
        }
        Ok((mem.byte(st), u.len))
    }

    /// Writes `data` at `sector` and reads it back; errors unless both succeed and match.
    pub fn write_read_check(&mut self, sector: u64, data: &[u8]) -> Result<(), String> {
        let mut w = data.to_vec();
        let (s, _) = self.io(VIRTIO_BLK_T_OUT, sector, &mut w)?;
        if s != VIRTIO_BLK_S_OK {
            return Err(format!("write at sector {sector}: status {s}"));
        }
        let mut r = vec![0u8; data.len()];
        let (s, len) = self.io(VIRTIO_BLK_T_IN, sector, &mut r)?;
        if s != VIRTIO_BLK_S_OK || len != data.len() as u32 + 1 {
            return Err(format!(
                "read at sector {sector}: status {s}, used length {len}"
            ));
        }
        if r != data {
            return Err(format!("read at sector {sector} returned other data"));
        }
        Ok(())
    }
}

/// Deterministic test data: `len` bytes from `seed`.
pub fn data_pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
