//! A request's data segment as memory that someone else may change at any time.
//!
//! A request's iovecs may point straight into a guest's memory (vhost-user-blk is zero copy),
//! which the guest can read and write while the request is in flight. Rust's `&[u8]` and
//! `&mut [u8]` promise that nobody else writes (or, for `&mut`, even reads) the bytes, so the
//! engine never makes one over request data: it hands out a [`VolatileSegment`], a pointer and a
//! length whose bytes are only ever copied through raw pointers, as rust-vmm's
//! `vm_memory::VolatileSlice` does. The engine does not depend on vm-memory for this: a segment
//! needs only the two copies below, and the bdev layer has no guest-memory map to offer.

use std::marker::PhantomData;

/// `len` bytes of a request's data at a host address, which a third party (a guest) may change
/// concurrently; only copied, never borrowed as a Rust slice.
///
/// Borrowed from the request ([`super::IoData::segments`]): it cannot outlive the request's
/// completion, which is what keeps the memory valid.
#[derive(Debug, Clone, Copy)]
pub struct VolatileSegment<'a> {
    ptr: *mut u8,
    len: usize,
    _request: PhantomData<&'a ()>,
}

impl VolatileSegment<'_> {
    /// A segment over `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` bytes for the segment's lifetime. The
    /// bytes may be changed by others at any time; nothing may hold a Rust reference to them.
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        VolatileSegment {
            ptr,
            len,
            _request: PhantomData,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the segment has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Host address of the first byte (for drivers that hand it to the kernel).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Copies bytes from `offset` on into `dst`, as many as both have; returns how many.
    ///
    /// Bytes a third party changes during the copy may be seen old or new, each independently.
    pub fn copy_to(&self, offset: usize, dst: &mut [u8]) -> usize {
        let n = self.len.saturating_sub(offset).min(dst.len());
        if n > 0 {
            // SAFETY: `offset + n <= len`, so the source lies inside the segment, valid for
            // reads (contract of `new`); `dst` is a slice the caller owns exclusively, so it
            // cannot overlap memory no Rust reference may cover. Raw copies create no
            // reference to the shared bytes; concurrent changes only affect which values land
            // in `dst`.
            unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), dst.as_mut_ptr(), n) };
        }
        n
    }

    /// Copies `src` into the segment from `offset` on, as much as fits; returns how many bytes.
    ///
    /// A third party writing the same bytes concurrently may win, byte by byte.
    pub fn copy_from(&self, offset: usize, src: &[u8]) -> usize {
        let n = self.len.saturating_sub(offset).min(src.len());
        if n > 0 {
            // SAFETY: `offset + n <= len`, so the destination lies inside the segment, valid
            // for writes (contract of `new`); `src` is a caller's slice, which cannot overlap
            // memory no Rust reference may cover.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(offset), n) };
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_stay_inside_the_segment() {
        let mut buf = [0u8; 8];
        // SAFETY: `buf` outlives the segment and is only accessed through it meanwhile.
        let seg = unsafe { VolatileSegment::new(buf.as_mut_ptr().add(2), 4) };
        assert_eq!(seg.copy_from(1, &[1, 2, 3, 4, 5]), 3);
        assert_eq!(seg.copy_from(4, &[9]), 0);
        let mut out = [0u8; 6];
        assert_eq!(seg.copy_to(0, &mut out), 4);
        assert_eq!(out, [0, 1, 2, 3, 0, 0]);
        assert_eq!(seg.copy_to(7, &mut out), 0);
        assert_eq!(buf, [0, 0, 0, 1, 2, 3, 0, 0]);
    }
}
