//! The byte work of one stripe operation, on its row buffer: parity of a write once its planned
//! reads have landed, and the reconstruction of a missing unit for a degraded read.
//!
//! A stripe operation owns a row buffer of `ncol` stripe units: column `c`'s unit is bytes
//! `[c * unit, (c + 1) * unit)` (`unit` = stripe unit in bytes), unit offset `x` (in blocks)
//! at `x * bs` within it. The planned reads ([`StripeSpan::reads`]) fill it where the plan
//! needs old data or old parity; [`apply_write`] then places the new data and computes the
//! parity over every offset some unit writes, with one rule per offset (see
//! [`WritePlan`]): where the plan read the parity, read-modify-write (parity ^= old ^ new of
//! each unit written there); elsewhere reconstruct-write (parity = XOR of every data unit).
//! The new data is copied in from the request (as md copies into its stripe cache), so the
//! parity is computed over exactly the bytes that go to the disks even if a guest changes its
//! buffer meanwhile.

use crate::volume::io::raid5::parity::xor_into;
use crate::volume::model::raid5::{StripeSpan, WritePlan};

/// Splits `buf` into the `len` bytes at `dst` (mutable) and the `len` bytes at `src`; the two
/// ranges must not overlap (they are different columns' units).
fn pair(buf: &mut [u8], dst: usize, src: usize, len: usize) -> (&mut [u8], &[u8]) {
    debug_assert!(dst + len <= src || src + len <= dst);
    if dst < src {
        let (a, b) = buf.split_at_mut(src);
        (&mut a[dst..dst + len], &b[..len])
    } else {
        let (a, b) = buf.split_at_mut(dst);
        (&mut b[..len], &a[src..src + len])
    }
}

/// Places the new data of `span` in `row` and computes its parity under `plan`, once the
/// plan's reads (with the same `missing` column) are in `row`. `new_data(k, x, dst)` fills
/// `dst` with the request's bytes for data unit `k` from unit offset `x` on. `unit` is the
/// stripe unit in bytes, `bs` the block size. Does not allocate.
pub fn apply_write(
    span: &StripeSpan,
    plan: WritePlan,
    missing: Option<usize>,
    row: &mut [u8],
    unit: usize,
    bs: usize,
    mut new_data: impl FnMut(usize, u64, &mut [u8]),
) {
    let ndata = span.ncol() - 1;
    let pc = span.parity_column;
    span.intervals(|lo, hi| {
        if !(0..ndata).any(|k| span.writes_at(k, lo)) {
            return;
        }
        let (from, len) = (lo as usize * bs, (hi - lo) as usize * bs);
        let p_at = pc * unit + from;
        let rmw = plan != WritePlan::DataOnly && span.reads_at(plan, missing, pc, lo);
        let written = |k: usize| span.writes_at(k, lo);
        // Read-modify-write here: take the old data of each written unit out of the parity.
        if rmw {
            for k in (0..ndata).filter(|&k| written(k)) {
                let (p, d) = pair(row, p_at, span.data_column(k) * unit + from, len);
                xor_into(p, d);
            }
        }
        for k in (0..ndata).filter(|&k| written(k)) {
            let at = span.data_column(k) * unit + from;
            new_data(k, lo, &mut row[at..at + len]);
        }
        if plan == WritePlan::DataOnly {
            return;
        }
        if rmw {
            for k in (0..ndata).filter(|&k| written(k)) {
                let (p, d) = pair(row, p_at, span.data_column(k) * unit + from, len);
                xor_into(p, d);
            }
        } else {
            // Reconstruct-write: every data unit holds new data or the old data read.
            {
                let (p, a) = pair(row, p_at, span.data_column(0) * unit + from, len);
                p.copy_from_slice(a);
            }
            for k in 1..ndata {
                let (p, d) = pair(row, p_at, span.data_column(k) * unit + from, len);
                xor_into(p, d);
            }
        }
    });
}

/// Reconstructs unit offsets `[lo, hi)` of column `missing` in `row` from every other column
/// (data and parity) read there. `unit` is the stripe unit in bytes, `bs` the block size.
pub fn reconstruct(
    row: &mut [u8],
    ncol: usize,
    missing: usize,
    lo: u64,
    hi: u64,
    unit: usize,
    bs: usize,
) {
    let (from, len) = (lo as usize * bs, (hi - lo) as usize * bs);
    let dst = missing * unit + from;
    let mut first = true;
    for c in (0..ncol).filter(|&c| c != missing) {
        let (m, s) = pair(row, dst, c * unit + from, len);
        if first {
            m.copy_from_slice(s);
            first = false;
        } else {
            xor_into(m, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::model::layout::tests::{col, ext};
    use crate::volume::model::raid5::Raid5Geometry;
    use proptest::prelude::*;

    const BS: usize = 8;

    /// Disk contents of a row: `ncol` units of `su` blocks, consistent parity.
    fn disks(g: &Raid5Geometry, row: u64, seed: u8) -> Vec<Vec<u8>> {
        let (ncol, su) = (g.ncol(), g.stripe_unit() as usize);
        let mut d: Vec<Vec<u8>> = (0..ncol)
            .map(|c| {
                (0..su * BS)
                    .map(|i| {
                        (i as u8)
                            .wrapping_mul(31)
                            .wrapping_add(seed ^ (c as u8 * 17))
                    })
                    .collect()
            })
            .collect();
        let p = g.parity_column(row);
        d[p] = vec![0; su * BS];
        for c in (0..ncol).filter(|&c| c != p) {
            let src = d[c].clone();
            xor_into(&mut d[p], &src);
        }
        d
    }

    fn parity_ok(d: &[Vec<u8>]) -> bool {
        let mut acc = vec![0u8; d[0].len()];
        for u in d {
            xor_into(&mut acc, u);
        }
        acc.iter().all(|&b| b == 0)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every plan, applied with only its planned reads (the rest of the buffer garbage),
        /// leaves data = what was written and parity = XOR of the data, also through a missing
        /// column (checked by reconstructing it).
        #[test]
        fn writes_keep_parity_and_data(
            ncol in 3usize..7,
            su_shift in 0u32..4,
            row in 0u64..12,
            a in 0u64..1000,
            b in 0u64..1000,
            missing_pick in 0usize..10,
            seed in any::<u8>(),
        ) {
            let su = 1u64 << su_shift;
            let g = Raid5Geometry::new((0..ncol).map(|c| col(&[ext(c as u32, 0, su * 12)])).collect(), su).unwrap();
            let row_len = g.row_blocks();
            let (start, len) = { let s = a % row_len; (s, 1 + b % (row_len - s)) };
            let span = g.stripe_at(row * row_len + start, len, 0);
            let missing = (missing_pick < ncol).then_some(missing_pick);
            let plan = span.plan(missing);
            let mut d = disks(&g, row, seed);
            let unit = su as usize * BS;
            let mut buf = vec![0xA5u8; ncol * unit];
            span.reads(plan, missing, |r| {
                let (lo, hi) = (r.lo as usize * BS, r.hi as usize * BS);
                buf[r.column * unit + lo..r.column * unit + hi].copy_from_slice(&d[r.column][lo..hi]);
            });
            let newb = |k: usize, x: u64, i: usize| (k as u8).wrapping_mul(7) ^ (x as u8) ^ (i as u8).wrapping_add(seed);
            apply_write(&span, plan, missing, &mut buf, unit, BS, |k, x, dst| {
                for (i, v) in dst.iter_mut().enumerate() {
                    *v = newb(k, x + (i / BS) as u64, i % BS);
                }
            });
            // What the disks hold afterwards: the expected data everywhere (missing included).
            let mut want = d.clone();
            for k in 0..ncol - 1 {
                let c = span.data_column(k);
                for x in 0..su {
                    if span.writes_at(k, x) {
                        for i in 0..BS {
                            want[c][x as usize * BS + i] = newb(k, x, i);
                        }
                    }
                }
            }
            // Apply the writes: data where written, parity where the plan writes it.
            for k in 0..ncol - 1 {
                let c = span.data_column(k);
                if Some(c) == missing { continue; }
                for x in 0..su as usize {
                    if span.writes_at(k, x as u64) {
                        d[c][x * BS..(x + 1) * BS].copy_from_slice(&buf[c * unit + x * BS..c * unit + (x + 1) * BS]);
                    }
                }
            }
            let pc = span.parity_column;
            span.parity_writes(plan, |r| {
                if Some(pc) != missing {
                    let (lo, hi) = (r.lo as usize * BS, r.hi as usize * BS);
                    d[pc][lo..hi].copy_from_slice(&buf[pc * unit + lo..pc * unit + hi]);
                }
            });
            if let Some(m) = missing {
                // The missing column's contents are implied by the others.
                let mut rb = vec![0u8; ncol * unit];
                for c in 0..ncol { rb[c * unit..(c + 1) * unit].copy_from_slice(&d[c]); }
                reconstruct(&mut rb, ncol, m, 0, su, unit, BS);
                d[m].copy_from_slice(&rb[m * unit..(m + 1) * unit]);
                if m != pc {
                    prop_assert_eq!(&d[m], &want[m]);
                }
            }
            prop_assert!(parity_ok(&d));
            for k in 0..ncol - 1 {
                let c = span.data_column(k);
                prop_assert_eq!(&d[c], &want[c], "column {}", c);
            }
        }
    }
}
