//! XOR parity over stripe units, and the pool of aligned buffers it runs on.
//!
//! # Which bytes parity is computed over
//!
//! A guest's request data may live in guest memory that the guest can change while the request
//! is in flight (see [`crate::bdev::segment`]). Parity computed straight from that memory could
//! disagree with the bytes the data disk actually receives, which is silent corruption on the
//! next reconstruction. So, as Linux md copies every write into its stripe cache, the RAID-5
//! path first copies the guest's bytes into plexd-owned stripe buffers
//! ([`crate::bdev::VolatileSegment::copy_to`]) taken from a [`StripeBufPool`], computes parity
//! over those buffers, and writes *those same buffers* to the data and parity disks. Every
//! kernel here therefore takes ordinary `&[u8]` / `&mut [u8]` slices of plexd-owned memory; none
//! of them ever touches guest memory.
//!
//! # Kernels
//!
//! The kernels work on 64-bit words (`as_chunks::<8>`) with a byte loop for the tail, a shape
//! LLVM vectorises (SSE2/AVX2/NEON as the target allows) without `unsafe` or intrinsics.
//! [`parity_into`] and [`reconstruct_into`] walk the destination in [`BLOCK`]-byte blocks and
//! fold every source into one block before moving on, so the destination block stays in L1
//! however many columns there are.
//!
//! # Buffers
//!
//! [`StripeBufPool`] allocates a fixed number of stripe-unit buffers once (per channel, when it
//! is created), each 4 KiB aligned for `O_DIRECT` disks; [`StripeBufPool::take`] and
//! [`StripeBufPool::give`] move them in and out without allocating, and an exhausted pool
//! answers `None`, on which the caller defers its request as the channel defers writes a copy
//! holds back.

use thiserror::Error;

use crate::bdev::IoBuf;

/// Bytes of destination the multi-source kernels finish before moving to the next block (fits
/// L1 together with one block of each source being read).
pub const BLOCK: usize = 4096;

/// `dst ^= src`, byte for byte.
///
/// # Panics
/// If the lengths differ (a caller bug: stripe units of one stripe all have the same size).
pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "xor_into: unit sizes differ");
    let (dw, dt) = dst.as_chunks_mut::<8>();
    let (sw, st) = src.as_chunks::<8>();
    for (d, s) in dw.iter_mut().zip(sw) {
        *d = (u64::from_ne_bytes(*d) ^ u64::from_ne_bytes(*s)).to_ne_bytes();
    }
    for (d, s) in dt.iter_mut().zip(st) {
        *d ^= *s;
    }
}

/// `dst ^= a ^ b` in one pass over `dst` (the read-modify-write parity update: `a` the old
/// data, `b` the new).
///
/// # Panics
/// If the lengths differ.
pub fn xor2_into(dst: &mut [u8], a: &[u8], b: &[u8]) {
    assert!(
        dst.len() == a.len() && dst.len() == b.len(),
        "xor2_into: unit sizes differ"
    );
    let (dw, dt) = dst.as_chunks_mut::<8>();
    let (aw, at) = a.as_chunks::<8>();
    let (bw, bt) = b.as_chunks::<8>();
    for ((d, a), b) in dw.iter_mut().zip(aw).zip(bw) {
        *d = (u64::from_ne_bytes(*d) ^ u64::from_ne_bytes(*a) ^ u64::from_ne_bytes(*b))
            .to_ne_bytes();
    }
    for ((d, a), b) in dt.iter_mut().zip(at).zip(bt) {
        *d ^= *a ^ *b;
    }
}

/// Read-modify-write: updates `parity` in place for one data unit changing from `old_data` to
/// `new_data` (`P' = P ^ D_old ^ D_new`).
///
/// # Panics
/// If the lengths differ.
pub fn rmw_update(parity: &mut [u8], old_data: &[u8], new_data: &[u8]) {
    xor2_into(parity, old_data, new_data);
}

/// `dst = XOR of every source` (a stripe's parity from its data units). No source leaves `dst`
/// zeroed. The iterator is cloned once per [`BLOCK`], so pass a cheap one, e.g.
/// `bufs.iter().map(|b| b.as_slice())`: nothing is allocated.
///
/// # Panics
/// If a source's length differs from `dst`'s.
pub fn parity_into<'a, I>(dst: &mut [u8], sources: I)
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: Clone,
{
    let sources = sources.into_iter();
    let len = dst.len();
    for (i, block) in dst.chunks_mut(BLOCK).enumerate() {
        let start = i * BLOCK;
        let end = start + block.len();
        let mut srcs = sources.clone();
        match srcs.next() {
            Some(first) => {
                assert_eq!(first.len(), len, "parity_into: unit sizes differ");
                block.copy_from_slice(&first[start..end]);
            }
            None => block.fill(0),
        }
        for s in srcs {
            assert_eq!(s.len(), len, "parity_into: unit sizes differ");
            xor_into(block, &s[start..end]);
        }
    }
}

/// Rebuilds the one missing unit of a stripe into `dst` from every surviving unit, the parity
/// unit included (the same XOR as [`parity_into`]: parity is what makes the XOR of a whole
/// stripe zero).
///
/// # Panics
/// If a survivor's length differs from `dst`'s.
pub fn reconstruct_into<'a, I>(dst: &mut [u8], survivors: I)
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: Clone,
{
    parity_into(dst, survivors);
}

/// Whether `parity` is the XOR of `data` (a scrub's check), without a scratch buffer. Returns
/// the offset of the first mismatching 8-byte word (or tail byte), `None` when they agree.
///
/// # Panics
/// If a data unit's length differs from `parity`'s.
pub fn parity_mismatch<'a, I>(parity: &[u8], data: I) -> Option<usize>
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: Clone,
{
    let data = data.into_iter();
    let mut acc = [0u8; BLOCK];
    for (i, p) in parity.chunks(BLOCK).enumerate() {
        let start = i * BLOCK;
        let block = &mut acc[..p.len()];
        block.copy_from_slice(p);
        for d in data.clone() {
            assert_eq!(d.len(), parity.len(), "parity_mismatch: unit sizes differ");
            xor_into(block, &d[start..start + p.len()]);
        }
        if let Some(k) = block.iter().position(|&b| b != 0) {
            return Some(start + k - k % 8);
        }
    }
    None
}

/// Why a [`StripeBufPool`] could not be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StripeBufError {
    /// A unit of zero bytes.
    #[error("stripe unit of 0 bytes: the stripe unit must be at least one block")]
    ZeroUnit,
    /// A pool of no buffers.
    #[error("stripe buffer pool of 0 buffers: a RAID-5 channel needs at least one")]
    ZeroCount,
    /// More bytes than the address space.
    #[error("stripe buffer pool of {count} x {unit_bytes} bytes is too large")]
    TooLarge {
        /// Bytes per buffer asked for.
        unit_bytes: usize,
        /// Buffers asked for.
        count: usize,
    },
}

/// One stripe unit's worth of plexd-owned memory, 4 KiB aligned ([`IoBuf::ALIGN`]), taken from
/// a [`StripeBufPool`] and given back to it. Its bytes are whatever the last user left: fill it
/// before reading it.
pub struct StripeBuf(IoBuf);

impl StripeBuf {
    /// Length in bytes (the pool's unit).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the buffer is empty (never: units hold at least one byte).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }

    /// Address of the first byte, to hand to a disk as a request's data (valid while the
    /// buffer is neither dropped nor given back).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr()
    }
}

/// A fixed set of stripe-unit buffers, allocated once; taking and giving back never allocates.
/// One per channel (it is not `Sync`: a reactor owns it).
pub struct StripeBufPool {
    unit_bytes: usize,
    /// Buffers not taken; its capacity is the pool's size, so `give` never grows it.
    free: Vec<StripeBuf>,
}

impl StripeBufPool {
    /// A pool of `count` buffers of `unit_bytes` bytes each (allocated now, zero-filled).
    pub fn new(unit_bytes: usize, count: usize) -> Result<StripeBufPool, StripeBufError> {
        if unit_bytes == 0 {
            return Err(StripeBufError::ZeroUnit);
        }
        if count == 0 {
            return Err(StripeBufError::ZeroCount);
        }
        let too_large = StripeBufError::TooLarge { unit_bytes, count };
        let total = unit_bytes.checked_mul(count).ok_or(too_large)?;
        if total > isize::MAX as usize - IoBuf::ALIGN {
            return Err(StripeBufError::TooLarge { unit_bytes, count });
        }
        let mut free = Vec::with_capacity(count);
        free.extend((0..count).map(|_| StripeBuf(IoBuf::new(unit_bytes))));
        Ok(StripeBufPool { unit_bytes, free })
    }

    /// Bytes per buffer.
    pub fn unit_bytes(&self) -> usize {
        self.unit_bytes
    }

    /// Buffers the pool was built with.
    pub fn capacity(&self) -> usize {
        self.free.capacity()
    }

    /// Buffers ready to take.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Takes a buffer; `None` when every buffer is in use (defer the request and retry when
    /// one comes back).
    pub fn take(&mut self) -> Option<StripeBuf> {
        self.free.pop()
    }

    /// Whether `n` buffers can be taken now (check before starting a stripe operation that
    /// needs `n`, so it never stops half-way for want of one).
    pub fn has(&self, n: usize) -> bool {
        self.free.len() >= n
    }

    /// Gives a buffer back. Hands it back unchanged if it is not one of this pool's (wrong
    /// size, or the pool already holds all its buffers): the pool never grows.
    pub fn give(&mut self, buf: StripeBuf) -> Result<(), StripeBuf> {
        if buf.len() != self.unit_bytes || self.free.len() == self.free.capacity() {
            return Err(buf);
        }
        self.free.push(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).rotate_left(3))
            .collect()
    }

    #[test]
    fn xor_identities() {
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 4095, 4096, 4097, 12345] {
            let a = pattern(len, 1);
            let b = pattern(len, 77);
            // x ^ x = 0
            let mut x = a.clone();
            xor_into(&mut x, &a);
            assert!(x.iter().all(|&v| v == 0), "len {len}");
            // x ^ 0 = x
            let mut x = a.clone();
            xor_into(&mut x, &vec![0; len]);
            assert_eq!(x, a);
            // a ^ b = b ^ a, and ^ b again restores a
            let mut ab = a.clone();
            xor_into(&mut ab, &b);
            let mut ba = b.clone();
            xor_into(&mut ba, &a);
            assert_eq!(ab, ba);
            let want: Vec<u8> = a.iter().zip(&b).map(|(x, y)| x ^ y).collect();
            assert_eq!(ab, want, "len {len}: word path and tail agree with bytes");
            xor_into(&mut ab, &b);
            assert_eq!(ab, a);
            // xor2 = two xors
            let c = pattern(len, 200);
            let mut one = c.clone();
            xor2_into(&mut one, &a, &b);
            let mut two = c.clone();
            xor_into(&mut two, &a);
            xor_into(&mut two, &b);
            assert_eq!(one, two);
        }
    }

    #[test]
    #[should_panic(expected = "unit sizes differ")]
    fn xor_of_different_lengths_is_a_bug() {
        xor_into(&mut [0u8; 8], &[0u8; 9]);
    }

    #[test]
    fn parity_of_no_source_is_zero() {
        let mut p = vec![0xffu8; 100];
        parity_into(&mut p, std::iter::empty());
        assert!(p.iter().all(|&v| v == 0));
    }

    #[test]
    fn mismatch_points_at_the_corrupt_word() {
        let units: Vec<Vec<u8>> = (0..4).map(|k| pattern(9000, k)).collect();
        let mut p = vec![0u8; 9000];
        parity_into(&mut p, units.iter().map(|u| u.as_slice()));
        assert_eq!(
            parity_mismatch(&p, units.iter().map(|u| u.as_slice())),
            None
        );
        p[5003] ^= 0x10;
        assert_eq!(
            parity_mismatch(&p, units.iter().map(|u| u.as_slice())),
            Some(5000)
        );
        p[5003] ^= 0x10;
        p[8999] ^= 1;
        assert_eq!(
            parity_mismatch(&p, units.iter().map(|u| u.as_slice())),
            Some(8992)
        );
    }

    proptest! {
        /// Parity of N units, then any one unit lost: rebuilt from the others and the parity,
        /// it is the lost unit again; the stripe XORs to zero; an RMW update equals a full
        /// recompute.
        #[test]
        fn parity_then_reconstruct_recovers_any_unit(
            len in prop_oneof![0usize..=80, 4090usize..=4110, 8185usize..=8200],
            n in 2usize..=16,
            seed in any::<u64>(),
            lost in any::<prop::sample::Index>(),
            new_seed in any::<u8>(),
        ) {
            let mut rng = seed;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            };
            let mut units: Vec<Vec<u8>> = (0..n).map(|_| (0..len).map(|_| next()).collect()).collect();
            let mut p = vec![0xa5u8; len];
            parity_into(&mut p, units.iter().map(|u| u.as_slice()));
            for i in 0..len {
                let want = units.iter().fold(0u8, |acc, u| acc ^ u[i]);
                prop_assert_eq!(p[i], want);
            }
            prop_assert_eq!(parity_mismatch(&p, units.iter().map(|u| u.as_slice())), None);

            let lost = lost.index(n);
            let mut rebuilt = vec![0x5au8; len];
            reconstruct_into(
                &mut rebuilt,
                units
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| *k != lost)
                    .map(|(_, u)| u.as_slice())
                    .chain(std::iter::once(p.as_slice())),
            );
            prop_assert_eq!(&rebuilt, &units[lost]);

            // Read-modify-write of the lost unit's column keeps parity right.
            let new = pattern(len, new_seed);
            rmw_update(&mut p, &units[lost], &new);
            units[lost] = new;
            let mut full = vec![0u8; len];
            parity_into(&mut full, units.iter().map(|u| u.as_slice()));
            prop_assert_eq!(p, full);
        }
    }

    #[test]
    fn pool_take_give_and_exhaustion() {
        let mut pool = StripeBufPool::new(16 << 10, 3).expect("pool");
        assert_eq!((pool.capacity(), pool.available()), (3, 3));
        assert_eq!(pool.unit_bytes(), 16 << 10);
        let mut a = pool.take().expect("a");
        let b = pool.take().expect("b");
        assert!(pool.has(1) && !pool.has(2));
        let c = pool.take().expect("c");
        assert!(pool.take().is_none(), "exhausted: the caller defers");
        assert_eq!(a.len(), 16 << 10);
        assert_eq!(a.as_mut_ptr() as usize % IoBuf::ALIGN, 0, "4 KiB aligned");
        a.as_mut_slice().fill(7);
        assert!(
            b.as_slice().iter().all(|&v| v == 0),
            "zero-filled at creation"
        );
        let pa = a.as_mut_ptr();
        assert!(pool.give(a).is_ok());
        let mut again = pool.take().expect("given back");
        assert_eq!(
            again.as_mut_ptr(),
            pa,
            "the same memory comes back: no allocation"
        );
        assert!(pool.give(again).is_ok());
        assert!(pool.give(b).is_ok());
        assert!(pool.give(c).is_ok());
        assert_eq!(pool.available(), 3);
        // A foreign buffer is handed back: the pool never grows.
        let mut other = StripeBufPool::new(16 << 10, 1).expect("other");
        let stray = other.take().expect("stray");
        assert!(pool.give(stray).is_err(), "pool already full");
        let mut small = StripeBufPool::new(4096, 1).expect("small");
        let _x = pool.take().expect("x");
        assert!(pool.give(small.take().expect("s")).is_err(), "wrong size");
        assert_eq!(pool.capacity(), 3);
    }

    #[test]
    fn pool_rejects_bad_sizes() {
        assert_eq!(
            StripeBufPool::new(0, 4).err(),
            Some(StripeBufError::ZeroUnit)
        );
        assert_eq!(
            StripeBufPool::new(4096, 0).err(),
            Some(StripeBufError::ZeroCount)
        );
        assert!(matches!(
            StripeBufPool::new(usize::MAX / 2, 4),
            Err(StripeBufError::TooLarge { .. })
        ));
    }
}
