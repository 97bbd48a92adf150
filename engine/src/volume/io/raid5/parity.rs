//! XOR parity over stripe units.
//!
//! # Which bytes parity is computed over
//!
//! A guest's request data may live in guest memory that the guest can change while the request
//! is in flight (see [`crate::bdev::segment`]). Parity computed straight from that memory could
//! disagree with the bytes the data disk actually receives, which is silent corruption on the
//! next reconstruction. So, as Linux md copies every write into its stripe cache, the RAID-5
//! path first copies the guest's bytes into the stripe operation's own row buffer
//! ([`crate::bdev::VolatileSegment::copy_to`], allocated with the channel), computes parity
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
            xor_into(&mut p, &units[lost]);
            xor_into(&mut p, &new);
            units[lost] = new;
            let mut full = vec![0u8; len];
            parity_into(&mut full, units.iter().map(|u| u.as_slice()));
            prop_assert_eq!(p, full);
        }
    }
}
