//! Walking a descriptor chain from its head index (the walker plexd uses for every request,
//! including requests resubmitted after a restart, which no longer sit in the avail ring).
//!
//! Bounded like the virtio spec demands: at most `queue_size` descriptors in the main table,
//! at most `len / 16` in an indirect table, no indirect table inside an indirect table, every
//! descriptor and data address checked against guest memory with overflow-checked arithmetic.
//! Descriptors are read as virtio-queue's `Descriptor` (the split-ring layout, little-endian).
//!
//! virtio-queue's own `DescriptorChain` iterator only walks chains popped from the available
//! ring, and ends a malformed chain silently; the fuzz target (`fuzz/src/request_parse.rs`)
//! keeps a walker built on it as the independent reference this one is compared with.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::request::{ParseError, Piece, MAX_PIECES};

/// Largest indirect table accepted (entries).
pub const MAX_INDIRECT: u32 = 1024;

/// Walks the chain starting at `head`, calling `visit` for every descriptor that is not an
/// indirect-table pointer; stops at the first error.
#[inline]
fn walk(
    mem: &GuestMemoryMmap,
    desc_table: u64,
    queue_size: u16,
    head: u16,
    mut visit: impl FnMut(&Descriptor) -> Result<(), ParseError>,
) -> Result<(), ParseError> {
    let mut table = desc_table;
    let mut table_len = queue_size as u32;
    let mut idx = head as u32;
    let mut ttl = queue_size as u32;
    let mut in_indirect = false;
    loop {
        if idx >= table_len || ttl == 0 {
            return Err(ParseError::TooLong);
        }
        ttl -= 1;
        let at = table
            .checked_add(idx as u64 * 16)
            .ok_or(ParseError::BadAddress)?;
        let desc: Descriptor = mem
            .read_obj(GuestAddress(at))
            .map_err(|_| ParseError::BadAddress)?;
        if desc.refers_to_indirect_table() {
            let len = desc.len();
            if in_indirect || len == 0 || !len.is_multiple_of(16) || len / 16 > MAX_INDIRECT {
                return Err(ParseError::TooLong);
            }
            table = desc.addr().0;
            table_len = len / 16;
            ttl = table_len;
            idx = 0;
            in_indirect = true;
            continue;
        }
        visit(&desc)?;
        if !desc.has_next() {
            return Ok(());
        }
        idx = desc.next() as u32;
    }
}

/// Flattens the chain starting at `head` into host memory pieces (cleared first), none of
/// them empty.
///
/// # Safety
/// The pieces point into `mem`'s mappings without borrowing it: the caller must keep those
/// mappings alive for as long as it uses the pieces or anything parsed from them (data pieces
/// handed to a bdev request, the status pointer), e.g. by holding an `Arc` of `mem` until the
/// request completes.
pub unsafe fn flatten_head(
    mem: &GuestMemoryMmap,
    desc_table: u64,
    queue_size: u16,
    head: u16,
    pieces: &mut Vec<Piece>,
) -> Result<(), ParseError> {
    pieces.clear();
    walk(mem, desc_table, queue_size, head, |desc| {
        let (addr, len) = (desc.addr(), desc.len() as usize);
        if len > 0 {
            addr.0
                .checked_add(len as u64)
                .ok_or(ParseError::BadAddress)?;
            for slice in mem.get_slices(addr, len) {
                let slice = slice.map_err(|_| ParseError::BadAddress)?;
                if pieces.len() >= MAX_PIECES {
                    return Err(ParseError::TooLong);
                }
                // SAFETY: `slice` lies inside a mapping of `mem`, valid for reads and writes of
                // its length; the caller keeps the mapping alive while the piece is used
                // (contract of this function), and no Rust reference to guest memory is made.
                pieces.push(unsafe {
                    Piece::new(
                        slice.ptr_guard_mut().as_ptr(),
                        slice.len(),
                        desc.is_write_only(),
                    )
                });
            }
        }
        Ok(())
    })
}

/// Locates the status byte of a chain that [`flatten_head`] refused (a descriptor outside
/// guest memory, too many pieces): the last byte of the chain's last non-empty descriptor,
/// if that descriptor is device-writable and its last byte lies in guest memory. The chain
/// itself must still be well formed (bounded, no bad indirect table); data descriptors are
/// not mapped. Returns the host address of the byte.
pub fn find_status(
    mem: &GuestMemoryMmap,
    desc_table: u64,
    queue_size: u16,
    head: u16,
) -> Option<*mut u8> {
    let mut last: Option<Descriptor> = None;
    walk(mem, desc_table, queue_size, head, |desc| {
        if desc.len() > 0 {
            last = Some(*desc);
        }
        Ok(())
    })
    .ok()?;
    let last = last.filter(Descriptor::is_write_only)?;
    let at = last.addr().0.checked_add(last.len() as u64 - 1)?;
    let slice = mem.get_slice(GuestAddress(at), 1).ok()?;
    Some(slice.ptr_guard_mut().as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    const VIRTQ_DESC_F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const VIRTQ_DESC_F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
    const VIRTQ_DESC_F_INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

    fn put(m: &GuestMemoryMmap, table: u64, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let d = Descriptor::new(addr, len, flags, next);
        m.write_obj(d, GuestAddress(table + i * 16)).unwrap();
    }

    /// `flatten_head` over `m`, which outlives every use of the pieces in these tests.
    fn flatten_head(
        m: &GuestMemoryMmap,
        table: u64,
        size: u16,
        head: u16,
        p: &mut Vec<Piece>,
    ) -> Result<(), ParseError> {
        // SAFETY: `m` outlives the pieces, which the tests only inspect.
        unsafe { super::flatten_head(m, table, size, head, p) }
    }

    #[test]
    fn plain_and_indirect_chains() {
        let m = mem();
        put(&m, 0, 0, 0x1000, 16, VIRTQ_DESC_F_NEXT, 1);
        put(
            &m,
            0,
            1,
            0x2000,
            512,
            VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
            2,
        );
        put(&m, 0, 2, 0x3000, 1, VIRTQ_DESC_F_WRITE, 0);
        let mut p = Vec::new();
        flatten_head(&m, 0, 8, 0, &mut p).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[1].len(), p[1].is_writable()), (512, true));
        // Indirect: head 3 points at a table of two entries at 0x800.
        put(&m, 0, 3, 0x800, 32, VIRTQ_DESC_F_INDIRECT, 0);
        put(&m, 0x800, 0, 0x1000, 16, VIRTQ_DESC_F_NEXT, 1);
        put(&m, 0x800, 1, 0x3000, 1, VIRTQ_DESC_F_WRITE, 0);
        flatten_head(&m, 0, 8, 3, &mut p).unwrap();
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn hostile_chains_fail() {
        let m = mem();
        let mut p = Vec::new();
        // Loop: 0 -> 1 -> 0.
        put(&m, 0, 0, 0x1000, 16, VIRTQ_DESC_F_NEXT, 1);
        put(&m, 0, 1, 0x1000, 16, VIRTQ_DESC_F_NEXT, 0);
        assert_eq!(flatten_head(&m, 0, 8, 0, &mut p), Err(ParseError::TooLong));
        // Outside memory, and wrapping.
        put(&m, 0, 2, 0xffff_0000, 16, 0, 0);
        assert_eq!(
            flatten_head(&m, 0, 8, 2, &mut p),
            Err(ParseError::BadAddress)
        );
        put(&m, 0, 3, u64::MAX - 4, 16, 0, 0);
        assert_eq!(
            flatten_head(&m, 0, 8, 3, &mut p),
            Err(ParseError::BadAddress)
        );
        // Nested indirect.
        put(&m, 0, 4, 0x800, 16, VIRTQ_DESC_F_INDIRECT, 0);
        put(&m, 0x800, 0, 0x900, 16, VIRTQ_DESC_F_INDIRECT, 0);
        assert_eq!(flatten_head(&m, 0, 8, 4, &mut p), Err(ParseError::TooLong));
        // Head beyond the queue; next beyond the queue.
        assert_eq!(flatten_head(&m, 0, 8, 9, &mut p), Err(ParseError::TooLong));
        put(&m, 0, 5, 0x1000, 16, VIRTQ_DESC_F_NEXT, 100);
        assert_eq!(flatten_head(&m, 0, 8, 5, &mut p), Err(ParseError::TooLong));
        // A data descriptor outside memory: the status byte is still found.
        put(&m, 0, 6, 0x1000, 16, VIRTQ_DESC_F_NEXT, 7);
        put(
            &m,
            0,
            7,
            0xffff_0000,
            512,
            VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
            0,
        );
        put(&m, 0, 0, 0x3000, 1, VIRTQ_DESC_F_WRITE, 0);
        assert_eq!(
            flatten_head(&m, 0, 8, 6, &mut p),
            Err(ParseError::BadAddress)
        );
        let st = find_status(&m, 0, 8, 6).expect("status found");
        assert_eq!(st, m.get_host_address(GuestAddress(0x3000)).unwrap());
        // ... but not when the last descriptor is readable, or itself outside memory.
        put(&m, 0, 0, 0x3000, 1, 0, 0);
        assert_eq!(find_status(&m, 0, 8, 6), None);
        put(&m, 0, 0, 0xffff_f000, 1, VIRTQ_DESC_F_WRITE, 0);
        assert_eq!(find_status(&m, 0, 8, 6), None);
        // Descriptor table itself outside memory.
        assert_eq!(
            flatten_head(&m, 0xffff_fff0, 8, 0, &mut p),
            Err(ParseError::BadAddress)
        );
    }
}
