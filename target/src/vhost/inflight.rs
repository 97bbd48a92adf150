//! Inflight I/O tracking (vhost-user INFLIGHT_SHMFD, split rings): a shared-memory area the
//! front-end keeps for us. Every request fetched from the ring is marked in it before it is
//! submitted and unmarked after its used entry is written, so a plexd that is killed and
//! restarted can resubmit exactly the requests the guest is still waiting for.
//!
//! Layout per queue (as QEMU and libvhost-user expect), aligned to 64 bytes: the `vhost`
//! crate's `QueueRegionSplit` header `{features: u64, version: u16, desc_num: u16,
//! last_batch_head: u16, used_idx: u16}` followed by `desc_num` `DescStateSplit` entries
//! `{inflight: u8, padding: [u8; 5], next: u16, counter: u64}`. Both are packed structs, so
//! fields are read and written one at a time, at their `offset_of!`, through a
//! `vm_memory::VolatileSlice` over the queue's part (the front-end shares the memory).

use std::fs::File;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vhost::vhost_user::message::{DescStateSplit, QueueRegionSplit};
use vm_memory::{Bytes, VolatileSlice};

/// Size of a queue's header: its `desc` field is where the C struct's entry array begins.
const HEADER: usize = offset_of!(QueueRegionSplit, desc);
const DESC: usize = size_of::<DescStateSplit>();
const ALIGN: usize = 64;
const VERSION: usize = offset_of!(QueueRegionSplit, version);
const DESC_NUM: usize = offset_of!(QueueRegionSplit, desc_num);
const LAST_BATCH_HEAD: usize = offset_of!(QueueRegionSplit, last_batch_head);
const USED_IDX: usize = offset_of!(QueueRegionSplit, used_idx);
const INFLIGHT: usize = offset_of!(DescStateSplit, inflight);
const COUNTER: usize = offset_of!(DescStateSplit, counter);
// The layout QEMU and libvhost-user use; a change in the crate's types must not move it.
const _: () = assert!(HEADER == 16 && DESC == 16 && USED_IDX == 14 && COUNTER == 8);

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
        for q in (0..num_queues).filter_map(|q| map.queue(q)) {
            let area = q.area();
            put(area.store(1u16.to_le(), VERSION, Ordering::Relaxed));
            put(area.store(queue_size.to_le(), DESC_NUM, Ordering::Relaxed));
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

    /// The tracker for queue `q`, if it exists.
    pub fn queue(self: &Arc<Self>, q: u16) -> Option<InflightQueue> {
        (q < self.num_queues).then(|| InflightQueue {
            // Inside the mapping since q < num_queues; `wrapping_add` only computes the address.
            base: self
                .ptr
                .as_ptr()
                .wrapping_add(queue_region_size(self.queue_size) * q as usize),
            size: self.queue_size,
            _map: self.clone(),
        })
    }
}

/// Checks (in debug builds) an access to a queue's area: in bounds and aligned by construction.
#[inline]
fn put(r: Result<(), vm_memory::volatile_memory::Error>) {
    debug_assert!(r.is_ok(), "inflight area access: {r:?}");
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
    /// This queue's part of the area, shared with the front-end.
    #[inline]
    fn area(&self) -> VolatileSlice<'_> {
        // SAFETY: `base` is the start of this queue's part of the mapping, which spans
        // `queue_region_size(size)` bytes inside it; `_map` keeps the mapping alive for as long
        // as `self` is borrowed. Nothing makes a Rust reference to it (the front-end shares it).
        unsafe { VolatileSlice::new(self.base, queue_region_size(self.size)) }
    }

    /// Offset of `head`'s entry in the area, if `head` is a descriptor of this queue.
    fn desc(&self, head: u16) -> Option<usize> {
        (head < self.size).then(|| HEADER + DESC * head as usize)
    }

    /// Marks `head` in flight with ordering `counter`.
    #[inline]
    pub fn begin(&self, head: u16, counter: u64) {
        if let Some(d) = self.desc(head) {
            let area = self.area();
            put(area.store(counter.to_le(), d + COUNTER, Ordering::Relaxed));
            put(area.store(1u8, d + INFLIGHT, Ordering::Release));
        }
    }

    /// Records `head` as the completion being published (before the used ring is written).
    #[inline]
    pub fn pre_complete(&self, head: u16) {
        put(self
            .area()
            .store(head.to_le(), LAST_BATCH_HEAD, Ordering::Relaxed));
    }

    /// Clears `head` after its used entry is published, and records the used index.
    #[inline]
    pub fn post_complete(&self, head: u16, used_idx: u16) {
        if let Some(d) = self.desc(head) {
            let area = self.area();
            put(area.store(0u8, d + INFLIGHT, Ordering::Relaxed));
            put(area.store(used_idx.to_le(), USED_IDX, Ordering::Release));
        }
    }

    fn load_u16(&self, offset: usize) -> u16 {
        u16::from_le(self.area().load(offset, Ordering::Relaxed).unwrap_or(0))
    }

    /// The area's recorded used index (diagnostics).
    pub fn area_used_idx(&self) -> u16 {
        self.load_u16(USED_IDX)
    }

    /// After a restart: reconciles with the guest's used index and returns the heads still in
    /// flight in submission order, plus the highest counter seen.
    pub fn recover(&self, guest_used_idx: u16) -> (Vec<u16>, u64) {
        let area = self.area();
        let (last_batch, used) = (self.load_u16(LAST_BATCH_HEAD), self.load_u16(USED_IDX));
        if used != guest_used_idx {
            // The used entry of the last batch was published but not yet cleared here.
            if let Some(d) = self.desc(last_batch) {
                put(area.store(0u8, d + INFLIGHT, Ordering::Relaxed));
            }
            put(area.store(guest_used_idx.to_le(), USED_IDX, Ordering::Relaxed));
        }
        let mut pending: Vec<(u64, u16)> = Vec::new();
        let mut max_counter = 0;
        for head in 0..self.size {
            if let Some(d) = self.desc(head) {
                let flag: u8 = area.load(d + INFLIGHT, Ordering::Relaxed).unwrap_or(0);
                let counter = u64::from_le(area.load(d + COUNTER, Ordering::Relaxed).unwrap_or(0));
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
