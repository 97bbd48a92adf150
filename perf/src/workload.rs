//! Workload kinds (bdevperf's `-w`) and the per-job offset generator.

/// A bdevperf workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Uniform random reads.
    RandRead,
    /// Uniform random writes.
    RandWrite,
    /// Sequential mix of reads and writes (`-M` read percentage).
    Rw,
    /// Random mix of reads and writes.
    RandRw,
    /// Write a pattern, read it back, compare (sequential, so requests in flight never overlap).
    Verify,
    /// Sequential unmaps.
    Unmap,
    /// Flushes.
    Flush,
    /// Sequential write-zeroes.
    WriteZeroes,
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "read" => Workload::Read,
            "write" => Workload::Write,
            "randread" => Workload::RandRead,
            "randwrite" => Workload::RandWrite,
            "rw" => Workload::Rw,
            "randrw" => Workload::RandRw,
            "verify" => Workload::Verify,
            "unmap" => Workload::Unmap,
            "flush" => Workload::Flush,
            "write_zeroes" => Workload::WriteZeroes,
            other => {
                return Err(format!(
                    "unknown workload '{other}': use read, write, randread, randwrite, rw, randrw, verify, unmap, flush or write_zeroes"
                ))
            }
        })
    }
}

impl Workload {
    /// bdevperf's name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::RandRead => "randread",
            Workload::RandWrite => "randwrite",
            Workload::Rw => "rw",
            Workload::RandRw => "randrw",
            Workload::Verify => "verify",
            Workload::Unmap => "unmap",
            Workload::Flush => "flush",
            Workload::WriteZeroes => "write_zeroes",
        }
    }

    /// Whether requests carry data (everything but flush, unmap and write-zeroes).
    pub fn has_data_transfer(self) -> bool {
        !matches!(
            self,
            Workload::Unmap | Workload::Flush | Workload::WriteZeroes
        )
    }

    /// Whether offsets are random.
    pub fn random(self) -> bool {
        matches!(
            self,
            Workload::RandRead | Workload::RandWrite | Workload::RandRw
        )
    }
}

/// xorshift64*: a tiny, allocation-free PRNG.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator (0 is replaced by a constant).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Next value.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// The data pattern bdevperf-style verify writes: every 8-byte word encodes the block, the
/// word's position and a per-write seed, so misplaced or stale data is detected.
pub fn fill_pattern(buf: &mut [u8], first_block: u64, block_size: usize, seed: u64) {
    for (i, word) in buf.chunks_exact_mut(8).enumerate() {
        let v = pattern_word(first_block, block_size, seed, i);
        word.copy_from_slice(&v.to_le_bytes());
    }
}

/// Returns the index of the first 8-byte word of `buf` that does not hold the pattern.
pub fn check_pattern(buf: &[u8], first_block: u64, block_size: usize, seed: u64) -> Option<usize> {
    buf.chunks_exact(8).enumerate().find_map(|(i, word)| {
        let v = pattern_word(first_block, block_size, seed, i);
        (word != v.to_le_bytes()).then_some(i)
    })
}

#[inline]
fn pattern_word(first_block: u64, block_size: usize, seed: u64, i: usize) -> u64 {
    let block = first_block + (i * 8 / block_size) as u64;
    (block << 20) ^ (i as u64) ^ seed.rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_detects_misplacement() {
        let mut b = vec![0u8; 4096];
        fill_pattern(&mut b, 10, 512, 7);
        assert_eq!(check_pattern(&b, 10, 512, 7), None);
        assert!(check_pattern(&b, 11, 512, 7).is_some());
        assert!(check_pattern(&b, 10, 512, 8).is_some());
        b[1000] ^= 1;
        assert_eq!(check_pattern(&b, 10, 512, 7), Some(125));
    }

    #[test]
    fn rng_below_is_in_range() {
        let mut r = Rng::new(1);
        assert!((0..10_000).all(|_| r.below(17) < 17));
    }
}
