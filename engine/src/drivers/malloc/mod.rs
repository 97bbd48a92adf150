//! `malloc`: a RAM bdev. Requests are served by copying between the guest's buffers and an
//! anonymous memory mapping, on the submitting reactor, with no lock.

pub mod rpc;

use std::ptr::NonNull;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::bdev::{Bdev, BdevDriver, BdevError, BdevIo, DriverChannel, IoStatus, IoType};

/// Anonymous memory backing a RAM bdev.
pub(crate) struct RamRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain bytes with no interior invariants. Reactors read and write it
// concurrently through raw pointers, exactly like a disk's medium: overlapping concurrent
// requests from a client give unspecified byte contents (as on real hardware), never invalid
// values, since every byte pattern is a valid u8.
unsafe impl Send for RamRegion {}
// SAFETY: see `Send`; no references into the region are handed out, only copies.
unsafe impl Sync for RamRegion {}

impl RamRegion {
    /// Maps `len` zeroed bytes, populated up front so no request pays for a page fault.
    pub(crate) fn new(len: usize) -> Result<RamRegion, BdevError> {
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(BdevError::Io {
                what: "allocate memory for",
                path: format!("{len} bytes"),
                source: std::io::Error::last_os_error(),
            });
        }
        let ptr =
            NonNull::new(p.cast()).ok_or(BdevError::InvalidParam("mmap returned null".into()))?;
        Ok(RamRegion { ptr, len })
    }

    /// Copies `len` bytes at `off` into `dst`.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes and not overlap the region.
    unsafe fn read_to(&self, off: usize, dst: *mut u8, len: usize) {
        debug_assert!(off + len <= self.len);
        // SAFETY: the channel validated `off + len <= self.len`; the caller vouches for `dst`.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst, len) };
    }

    /// Copies `len` bytes from `src` to offset `off`.
    ///
    /// # Safety
    /// `src` must be valid for reads of `len` bytes and not overlap the region.
    unsafe fn write_from(&self, off: usize, src: *const u8, len: usize) {
        debug_assert!(off + len <= self.len);
        // SAFETY: bounds validated by the channel; the caller vouches for `src`.
        unsafe { std::ptr::copy_nonoverlapping(src, self.ptr.as_ptr().add(off), len) };
    }

    fn zero(&self, off: usize, len: usize) {
        if off.checked_add(len).is_none_or(|end| end > self.len) {
            return;
        }
        // SAFETY: the range was checked to lie inside the mapping.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(off), 0, len) };
    }
}

impl Drop for RamRegion {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`, which nothing references now.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The malloc driver's bdev state.
pub struct MallocBdev {
    mem: Arc<RamRegion>,
}

impl MallocBdev {
    /// Allocates `len` bytes of zeroed memory.
    pub fn new(len: u64) -> Result<MallocBdev, BdevError> {
        let len =
            usize::try_from(len).map_err(|_| BdevError::InvalidParam("size too large".into()))?;
        Ok(MallocBdev {
            mem: Arc::new(RamRegion::new(len)?),
        })
    }
}

impl BdevDriver for MallocBdev {
    fn product_name(&self) -> &'static str {
        "Malloc disk"
    }

    fn create_channel(&self, bdev: &Arc<Bdev>) -> Result<Box<dyn DriverChannel>, BdevError> {
        Ok(Box::new(MallocChannel {
            mem: self.mem.clone(),
            block_size: bdev.block_size() as usize,
        }))
    }

    fn config(&self, bdev: &Bdev) -> Option<Value> {
        Some(json!({
            "method": "bdev_malloc_create",
            "params": {
                "name": bdev.name(),
                "num_blocks": bdev.num_blocks(),
                "block_size": bdev.block_size(),
                "uuid": bdev.uuid().to_string(),
            }
        }))
    }
}

struct MallocChannel {
    mem: Arc<RamRegion>,
    block_size: usize,
}

impl DriverChannel for MallocChannel {
    fn submit(&mut self, mut io: BdevIo) -> Result<(), BdevIo> {
        let mut off = io.offset_blocks() as usize * self.block_size;
        let len = io.num_blocks() as usize * self.block_size;
        match io.io_type() {
            IoType::Read => {
                for v in io.iovs() {
                    // SAFETY: the iovec is valid for writes (contract of `BdevIo::push_iov`)
                    // and the channel checked the whole range lies inside the bdev.
                    unsafe { self.mem.read_to(off, v.iov_base.cast(), v.iov_len) };
                    off += v.iov_len;
                }
            }
            IoType::Write => {
                for v in io.iovs() {
                    // SAFETY: as for reads, with the iovec valid for reads.
                    unsafe { self.mem.write_from(off, v.iov_base as *const u8, v.iov_len) };
                    off += v.iov_len;
                }
            }
            IoType::Unmap | IoType::WriteZeroes => self.mem.zero(off, len),
            IoType::Flush | IoType::Reset => {}
        }
        io.driver_ctx = 0;
        io.complete(IoStatus::Success);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::blocking;
    use crate::reactor::PollMode;
    use crate::Engine;

    #[test]
    fn pattern_round_trips_on_reactors() {
        let engine = Engine::start(&[0], PollMode::Adaptive).unwrap();
        rpc::create(
            &engine,
            json!({"name": "M0", "block_size": 512, "num_blocks": 2048}),
        )
        .unwrap();
        let b = engine.bdevs().get("M0").unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
        blocking::write(&engine, &b, 4096, &data).unwrap();
        assert_eq!(blocking::read(&engine, &b, 4096, 8192).unwrap(), data);
        // Neighbouring blocks stay zero.
        assert!(blocking::read(&engine, &b, 0, 4096)
            .unwrap()
            .iter()
            .all(|&x| x == 0));
        // Out of range fails with EINVAL and changes nothing.
        let err = blocking::read(&engine, &b, 2048 * 512, 512).unwrap_err();
        assert!(matches!(
            err,
            blocking::BlockingIoError::Failed {
                errno: libc::EINVAL,
                ..
            }
        ));
        let st = b.iostat();
        assert_eq!(st.num_read_ops, 2);
        assert_eq!(st.num_write_ops, 1);
        assert_eq!(st.bytes_written, 8192);
        drop(b);
        engine.delete_bdev("M0", Some("Malloc disk")).unwrap();
        assert!(engine.bdevs().get("M0").is_err());
        engine.shutdown();
    }

    #[test]
    fn duplicate_and_bad_block_size_create_nothing() {
        let engine = Engine::start(&[0], PollMode::Interrupt).unwrap();
        rpc::create(
            &engine,
            json!({"name": "M0", "block_size": 512, "num_blocks": 8}),
        )
        .unwrap();
        let e = rpc::create(
            &engine,
            json!({"name": "M0", "block_size": 512, "num_blocks": 8}),
        )
        .unwrap_err();
        assert_eq!(e.code.code(), -(libc::EEXIST as i64));
        let e = rpc::create(
            &engine,
            json!({"name": "M1", "block_size": 700, "num_blocks": 8}),
        )
        .unwrap_err();
        assert_eq!(e.code.code(), -(libc::EINVAL as i64));
        assert_eq!(engine.bdevs().list().len(), 1);
        engine.shutdown();
    }
}
