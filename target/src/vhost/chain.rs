//! Walking a descriptor chain from its head index (the walker plexd uses for every request,
//! including requests resubmitted after a restart, which no longer sit in the avail ring).
//!
//! Bounded like the virtio spec demands: at most `queue_size` descriptors in the main table,
//! at most `len / 16` in an indirect table, no indirect table inside an indirect table, every
//! descriptor and data address checked against guest memory with overflow-checked arithmetic.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::request::{ParseError, Piece, MAX_PIECES};

const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;
const VIRTQ_DESC_F_INDIRECT: u16 = 4;

/// Largest indirect table accepted (entries).
pub const MAX_INDIRECT: u32 = 1024;

/// Walks the chain starting at `head`, calling `visit(addr, len, flags)` for every
/// descriptor that is not an indirect-table pointer; stops at the first error.
#[inline]
fn walk(
    mem: &GuestMemoryMmap,
    desc_table: u64,
    queue_size: u16,
    head: u16,
    mut visit: impl FnMut(u64, u32, u16) -> Result<(), ParseError>,
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
        let raw: [u8; 16] = mem
            .read_obj(GuestAddress(at))
            .map_err(|_| ParseError::BadAddress)?;
        let addr = u64::from_le_bytes([
            raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
        ]);
        let len = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
        let flags = u16::from_le_bytes([raw[12], raw[13]]);
        let next = u16::from_le_bytes([raw[14], raw[15]]);
        if flags & VIRTQ_DESC_F_INDIRECT != 0 {
            if in_indirect || len == 0 || !len.is_multiple_of(16) || len / 16 > MAX_INDIRECT {
                return Err(ParseError::TooLong);
            }
            table = addr;
            table_len = len / 16;
            ttl = table_len;
            idx = 0;
            in_indirect = true;
            continue;
        }
        visit(addr, len, flags)?;
        if flags & VIRTQ_DESC_F_NEXT == 0 {
            return Ok(());
        }
        idx = next as u32;
    }
}

/// Flattens the chain starting at `head` into host memory pieces (cleared first).
pub fn flatten_head(
    mem: &GuestMemoryMmap,
    desc_table: u64,
    queue_size: u16,
    head: u16,
    pieces: &mut Vec<Piece>,
) -> Result<(), ParseError> {
    pieces.clear();
    walk(mem, desc_table, queue_size, head, |addr, len, flags| {
        if len > 0 {
            addr.checked_add(len as u64).ok_or(ParseError::BadAddress)?;
            for slice in mem.get_slices(GuestAddress(addr), len as usize) {
                let slice = slice.map_err(|_| ParseError::BadAddress)?;
                if pieces.len() >= MAX_PIECES {
                    return Err(ParseError::TooLong);
                }
                pieces.push(Piece {
                    ptr: slice.ptr_guard_mut().as_ptr(),
                    len: slice.len(),
                    writable: flags & VIRTQ_DESC_F_WRITE != 0,
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
    let mut last: Option<(u64, u32, u16)> = None;
    walk(mem, desc_table, queue_size, head, |addr, len, flags| {
        if len > 0 {
            last = Some((addr, len, flags));
        }
        Ok(())
    })
    .ok()?;
    let (addr, len, flags) = last?;
    if flags & VIRTQ_DESC_F_WRITE == 0 {
        return None;
    }
    let at = addr.checked_add(len as u64 - 1)?;
    let slice = mem.get_slice(GuestAddress(at), 1).ok()?;
    Some(slice.ptr_guard_mut().as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn put(m: &GuestMemoryMmap, table: u64, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        m.write_obj(d, GuestAddress(table + i * 16)).unwrap();
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
        assert_eq!((p[1].len, p[1].writable), (512, true));
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
