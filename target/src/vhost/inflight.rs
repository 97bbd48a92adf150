//! Inflight I/O tracking (vhost-user INFLIGHT_SHMFD, split rings): a shared-memory area the
//! front-end keeps for us. Every request fetched from the ring is marked in it before it is
//! submitted and unmarked after its used entry is written, so a plexd that is killed and
//! restarted can resubmit exactly the requests the guest is still waiting for.
//!
//! Layout per queue (as QEMU and libvhost-user expect), aligned to 64 bytes:
//! `{features: u64, version: u16, desc_num: u16, last_batch_head: u16, used_idx: u16}` followed
//! by `desc_num` entries of `{inflight: u8, padding: [u8; 5], next: u16, counter: u64}`.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::ptr::NonNull;
use std::sync::Arc;

const HEADER: usize = 16;
const DESC: usize = 16;
const ALIGN: usize = 64;

/// Bytes one queue's area takes.
pub fn queue_region_size(queue_size: u16) -> usize {
    (HEADER + DESC * queue_size as usize).div_ceil(ALIGN) * ALIGN
}

/// A mapping of the shared inflight area.
pub struct InflightMap {
    ptr: NonNull<u8>,
    len: usize,
    guard: Option<super::sigbus::Guard>,
    queue_size: u16,
    num_queues: u16,
}

// SAFETY: the mapping is plain shared memory; each queue's part is written by the one reactor
// serving that queue (volatile accesses), and the front-end only stores it.
unsafe impl Send for InflightMap {}
// SAFETY: see `Send`; no references into the mapping are handed out.
unsafe impl Sync for InflightMap {}

impl Drop for InflightMap {
    fn drop(&mut self) {
        // Unregister from the SIGBUS guard before the address range is given back.
        drop(self.guard.take());
        // SAFETY: unmaps exactly the region mapped in `map`, which nothing uses any more (every
        // user holds an `Arc` to this map).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl InflightMap {
    /// Creates a zeroed area for `num_queues` queues of `queue_size` in a new memfd; returns
    /// the map and the file to hand to the front-end.
    pub fn create(num_queues: u16, queue_size: u16) -> std::io::Result<(Arc<InflightMap>, File)> {
        let len = queue_region_size(queue_size) * num_queues as usize;
        let name = c"plexd-inflight";
        // SAFETY: memfd_create with a valid NUL-terminated name; the result is checked.
        let fd = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64)?;
        // The front-end gets this fd: sealed, it cannot shrink the area under our mapping
        // (touching a page past the end of the file would raise SIGBUS here).
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor we own; the result is checked.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let map = Self::map(&file, 0, len, num_queues, queue_size)?;
        for q in 0..num_queues {
            let base = map.queue_base(q);
            // SAFETY: `base` points at the start of queue q's area inside the mapping; the
            // header's version (offset 8) and desc_num (offset 10) fields are in bounds.
            unsafe {
                std::ptr::write_volatile(base.add(8).cast::<u16>(), 1u16.to_le());
                std::ptr::write_volatile(base.add(10).cast::<u16>(), queue_size.to_le());
            }
        }
        Ok((map, file))
    }

    /// Maps an area the front-end hands back (SET_INFLIGHT_FD).
    pub fn map(
        file: &File,
        offset: u64,
        len: usize,
        num_queues: u16,
        queue_size: u16,
    ) -> std::io::Result<Arc<InflightMap>> {
        let need = queue_region_size(queue_size) * num_queues as usize;
        if len < need || queue_size == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("inflight area of {len} bytes is too small for {num_queues} queues of {queue_size}"),
            ));
        }
        // A mapping may extend past the end of its file, but touching a page wholly past it
        // raises SIGBUS: refuse an area its file does not hold (the file's size as of now; a
        // front-end that shrinks it later is the SIGBUS guard's business).
        let end = offset
            .checked_add(len as u64)
            .filter(|&e| e <= i64::MAX as u64)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("inflight area at offset {offset} of {len} bytes overflows"),
                )
            })?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the inflight area's fd is not a regular file (memfd or shared-memory file)",
            ));
        }
        if end > meta.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "inflight area of {len} bytes at offset {offset} ends past the end of its file ({} bytes)",
                    meta.len()
                ),
            ));
        }
        // SAFETY: a shared mapping of `len` bytes of the caller's fd at `offset`, inside the
        // file (checked above); the result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        // The front-end's file may still shrink later (ours is sealed).
        let guard = match super::sigbus::register(ptr.as_ptr(), len, None) {
            Ok(g) => g,
            Err(e) => {
                // SAFETY: unmapping the mapping made above, which nothing uses.
                unsafe { libc::munmap(p, len) };
                return Err(std::io::Error::other(e.to_string()));
            }
        };
        Ok(Arc::new(InflightMap {
            ptr,
            len,
            guard: Some(guard),
            queue_size,
            num_queues,
        }))
    }

    /// Queue size the area was made for.
    pub fn queue_size(&self) -> u16 {
        self.queue_size
    }

    /// Number of queues.
    pub fn num_queues(&self) -> u16 {
        self.num_queues
    }

    fn queue_base(&self, q: u16) -> *mut u8 {
        // SAFETY: q < num_queues (checked by callers), so the offset is inside the mapping.
        unsafe {
            self.ptr
                .as_ptr()
                .add(queue_region_size(self.queue_size) * q as usize)
        }
    }

    /// The tracker for queue `q`, if it exists.
    pub fn queue(self: &Arc<Self>, q: u16) -> Option<InflightQueue> {
        (q < self.num_queues).then(|| InflightQueue {
            base: self.queue_base(q),
            size: self.queue_size,
            _map: self.clone(),
        })
    }
}

/// One queue's part of the area.
pub struct InflightQueue {
    base: *mut u8,
    size: u16,
    _map: Arc<InflightMap>,
}

// SAFETY: `base` points into the mapping kept alive by `_map`; an InflightQueue is moved to
// the one reactor that serves its queue and used only there.
unsafe impl Send for InflightQueue {}

impl InflightQueue {
    fn desc(&self, head: u16) -> Option<*mut u8> {
        // SAFETY: head < size, so the entry lies inside this queue's area.
        (head < self.size).then(|| unsafe { self.base.add(HEADER + DESC * head as usize) })
    }

    /// Marks `head` in flight with ordering `counter`.
    #[inline]
    pub fn begin(&self, head: u16, counter: u64) {
        if let Some(d) = self.desc(head) {
            // SAFETY: `d` points at a 16-byte entry inside the mapping; counter at offset 8 is
            // 8-byte aligned (areas are 64-byte aligned, entries 16 bytes).
            unsafe {
                std::ptr::write_volatile(d.add(8).cast::<u64>(), counter.to_le());
                std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                std::ptr::write_volatile(d, 1u8);
            }
        }
    }

    /// Records `head` as the completion being published (before the used ring is written).
    #[inline]
    pub fn pre_complete(&self, head: u16) {
        // SAFETY: last_batch_head (offset 12) is inside the header.
        unsafe { std::ptr::write_volatile(self.base.add(12).cast::<u16>(), head.to_le()) };
    }

    /// Clears `head` after its used entry is published, and records the used index.
    #[inline]
    pub fn post_complete(&self, head: u16, used_idx: u16) {
        if let Some(d) = self.desc(head) {
            // SAFETY: as in `begin`; used_idx (offset 14) is inside the header.
            unsafe {
                std::ptr::write_volatile(d, 0u8);
                std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                std::ptr::write_volatile(self.base.add(14).cast::<u16>(), used_idx.to_le());
            }
        }
    }

    /// The area's recorded used index (diagnostics).
    pub fn area_used_idx(&self) -> u16 {
        // SAFETY: used_idx field inside the header.
        unsafe { u16::from_le(std::ptr::read_volatile(self.base.add(14).cast::<u16>())) }
    }

    /// After a restart: reconciles with the guest's used index and returns the heads still in
    /// flight in submission order, plus the highest counter seen.
    pub fn recover(&self, guest_used_idx: u16) -> (Vec<u16>, u64) {
        // SAFETY: header fields at offsets 12 and 14 are inside the mapping.
        let (last_batch, used) = unsafe {
            (
                u16::from_le(std::ptr::read_volatile(self.base.add(12).cast::<u16>())),
                u16::from_le(std::ptr::read_volatile(self.base.add(14).cast::<u16>())),
            )
        };
        if used != guest_used_idx {
            // The used entry of the last batch was published but not yet cleared here.
            if let Some(d) = self.desc(last_batch) {
                // SAFETY: entry inside the mapping.
                unsafe { std::ptr::write_volatile(d, 0u8) };
            }
            // SAFETY: used_idx field inside the header.
            unsafe {
                std::ptr::write_volatile(self.base.add(14).cast::<u16>(), guest_used_idx.to_le())
            };
        }
        let mut pending: Vec<(u64, u16)> = Vec::new();
        let mut max_counter = 0;
        for head in 0..self.size {
            if let Some(d) = self.desc(head) {
                // SAFETY: entry inside the mapping.
                let (flag, counter) = unsafe {
                    (
                        std::ptr::read_volatile(d),
                        u64::from_le(std::ptr::read_volatile(d.add(8).cast::<u64>())),
                    )
                };
                max_counter = max_counter.max(counter);
                if flag == 1 {
                    pending.push((counter, head));
                }
            }
        }
        pending.sort_unstable();
        tracing::debug!(
            guest_used_idx,
            area_used_idx = used,
            last_batch,
            in_flight = pending.len(),
            "inflight area recovered"
        );
        (pending.into_iter().map(|(_, h)| h).collect(), max_counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_and_recovers_in_order() {
        let (map, file) = InflightMap::create(2, 8).unwrap();
        let q = map.queue(1).unwrap();
        q.begin(5, 1);
        q.begin(2, 2);
        q.begin(7, 3);
        q.pre_complete(2);
        q.post_complete(2, 1);
        // Completion of 7 published in the used ring (guest used idx 2) but not cleared here.
        q.pre_complete(7);
        // Re-map as a restarted plexd would.
        let map2 = InflightMap::map(&file, 0, queue_region_size(8) * 2, 2, 8).unwrap();
        let (pending, max) = map2.queue(1).unwrap().recover(2);
        assert_eq!(pending, vec![5]);
        assert_eq!(max, 3);
        assert!(map.queue(2).is_none());
        let (none, _) = map2.queue(0).unwrap().recover(0);
        assert!(none.is_empty());
    }

    fn tempfile_with_len(len: u64) -> File {
        // SAFETY: memfd_create with a valid name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"inflight-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor nothing else owns.
        let f = unsafe { File::from_raw_fd(fd) };
        f.set_len(len).unwrap();
        f
    }

    #[test]
    fn refuses_an_area_past_the_end_of_its_file() {
        let (_, file) = InflightMap::create(1, 256).unwrap();
        let len = queue_region_size(256);
        assert!(InflightMap::map(&file, 0, len, 1, 256).is_ok());
        // The area plexd creates cannot be shrunk by the front-end.
        assert!(file.set_len(64).is_err());
        let file = tempfile_with_len(len as u64);
        assert!(InflightMap::map(&file, 0, len, 1, 256).is_ok());
        file.set_len(64).unwrap();
        let e = InflightMap::map(&file, 0, len, 1, 256)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("past the end of its file"), "{e}");
        assert!(InflightMap::map(&file, u64::MAX - 8, len, 1, 256).is_err());
    }
}
