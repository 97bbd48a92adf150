//! vxassist-style space allocation: choosing disk extents for the plexes of a new volume (or
//! for a plex being attached or relocated).
//!
//! The allocator works on a snapshot of the disk group's free space ([`DiskSpace`]) and returns
//! the extents chosen for each plex ([`PlexAlloc`]); it mutates nothing, the caller applies the
//! result. The rules, after vxassist:
//!
//! - Every column of every plex (a concat plex is one column) draws on its own set of disks: no
//!   two plexes and no two columns share a disk, so losing one disk costs at most one column of
//!   one plex.
//! - A concat plex needs `len` blocks; each stripe column needs `ceil(len / ncol)` rounded up to
//!   a multiple of the stripe unit. A column may span several disks when no single one has room.
//! - Spare disks are only used when named in [`AllocRequest::disks`]; excluded disks never are.
//! - Fewest extents first: the smallest single free extent that fits is taken (best fit); when
//!   none fits, a disk with enough free space in several extents; else the disk with the most
//!   free space is used up and the search repeats for the remainder.
//! - Deterministic: ties are broken by disk name, then offset.

use std::cmp::Reverse;

/// The most plexes a volume may have.
pub const MAX_MIRRORS: u32 = 32;

/// One disk's free space as the allocator sees it.
#[derive(Debug, Clone)]
pub struct DiskSpace {
    /// The disk's name in the disk group.
    pub disk: String,
    /// Free extents `(offset, len)` in blocks of the public region, sorted, non-overlapping.
    pub free: Vec<(u64, u64)>,
    /// A hot-relocation spare: used only when named in [`AllocRequest::disks`].
    pub spare: bool,
    /// Not to be used by hot relocation; does not affect normal allocation.
    pub nohotuse: bool,
}

/// What to allocate.
#[derive(Debug, Clone)]
pub struct AllocRequest {
    /// Usable blocks per plex (the volume length).
    pub len: u64,
    /// Number of plexes, 1 to [`MAX_MIRRORS`].
    pub nmirror: u32,
    /// Number of columns: 1 for a concat, 2 or more for a stripe.
    pub ncol: u32,
    /// The stripe unit in blocks (stripes only; ignored for a concat).
    pub stripe_unit: u64,
    /// Restrict allocation to these disks (the `alloc` list); spare disks are only used if
    /// listed here.
    pub disks: Option<Vec<String>>,
    /// Never use these disks (e.g. disks already holding another plex of the volume).
    pub exclude: Vec<String>,
}

/// The extents `(disk, offset, len)` chosen for one plex, column by column (concat: one column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlexAlloc {
    /// Each column's extents, in column order.
    pub columns: Vec<Vec<(String, u64, u64)>>,
}

/// Why an allocation could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The request itself is malformed.
    #[error("invalid allocation request: {0}")]
    InvalidRequest(String),
    /// Fewer usable disks than columns in all plexes together.
    #[error(
        "{layout} needs at least {need} disks with free space (no two columns or plexes may share \
         a disk); the group has {have} usable (spare, excluded and unlisted disks do not count). \
         Add disks, name spare disks in the disk list, or use fewer mirrors or columns"
    )]
    NotEnoughDisks {
        /// What was asked for, e.g. "a 4-column stripe with 2 mirrors".
        layout: String,
        /// Disks needed.
        need: usize,
        /// Usable disks with free space.
        have: usize,
    },
    /// Enough disks, but not enough free space on them.
    #[error(
        "{layout} needs {need} blocks per {unit} but only {largest} are free on the usable disks \
         left for {unit} {index}. Free space, add disks, or ask for a shorter volume or fewer \
         mirrors"
    )]
    NotEnoughSpace {
        /// What was asked for, e.g. "a 4-column stripe with 2 mirrors".
        layout: String,
        /// Blocks needed per column (stripe) or plex (concat).
        need: u64,
        /// "column" or "plex".
        unit: &'static str,
        /// The failing column or plex, counted over all plexes from 0.
        index: usize,
        /// Blocks that could be found for it.
        largest: u64,
    },
}

impl AllocError {
    /// The same error naming the thing allocated as `layout` (a caller that allocates a
    /// RAID-5 column or log through a concat request says so, not "a concat volume").
    pub fn for_layout(self, layout: impl Into<String>) -> AllocError {
        match self {
            AllocError::NotEnoughDisks { need, have, .. } => AllocError::NotEnoughDisks {
                layout: layout.into(),
                need,
                have,
            },
            AllocError::NotEnoughSpace {
                need,
                unit,
                index,
                largest,
                ..
            } => AllocError::NotEnoughSpace {
                layout: layout.into(),
                need,
                unit,
                index,
                largest,
            },
            other => other,
        }
    }
}

/// A usable disk during allocation.
struct Candidate<'a> {
    name: &'a str,
    /// Free extents sorted by offset, without empty ones.
    free: Vec<(u64, u64)>,
    total: u64,
    used: bool,
}

impl Candidate<'_> {
    /// The smallest free extent of at least `need` blocks (lowest offset on ties).
    fn best_fit(&self, need: u64) -> Option<(u64, u64)> {
        self.free
            .iter()
            .copied()
            .filter(|&(_, len)| len >= need)
            .min_by_key(|&(off, len)| (len, off))
    }

    /// Takes `need` blocks (at most `total`) from this disk: best fit when one extent suffices,
    /// else largest extents first. Returns the extents taken.
    fn take(&self, need: u64) -> Vec<(u64, u64)> {
        let mut taken = Vec::new();
        let mut left: Vec<(u64, u64)> = self.free.clone();
        let mut rem = need;
        while rem > 0 {
            let pick = left
                .iter()
                .enumerate()
                .filter(|(_, e)| e.1 >= rem)
                .min_by_key(|(_, e)| (e.1, e.0))
                .or_else(|| {
                    left.iter()
                        .enumerate()
                        .max_by_key(|(_, e)| (e.1, Reverse(e.0)))
                })
                .map(|(i, _)| i);
            let Some(i) = pick else { break };
            let (off, len) = left.swap_remove(i);
            let n = len.min(rem);
            taken.push((off, n));
            rem -= n;
        }
        taken
    }
}

/// Chooses extents for `req.nmirror` plexes of `req.len` blocks each from `space`.
///
/// Returns one [`PlexAlloc`] per plex. Mutates nothing; the caller applies the result. Fails with
/// [`AllocError::InvalidRequest`] for a malformed request (no plexes or more than
/// [`MAX_MIRRORS`], no columns, length 0, stripe unit 0 for a stripe, unknown or duplicate disk
/// names, overlapping free extents), [`AllocError::NotEnoughDisks`] when there are fewer usable
/// disks than columns in all plexes, and [`AllocError::NotEnoughSpace`] when the free space does
/// not suffice.
pub fn allocate(space: &[DiskSpace], req: &AllocRequest) -> Result<Vec<PlexAlloc>, AllocError> {
    let need = validate(space, req)?;
    let layout = describe(req);
    let unit = if req.ncol == 1 { "plex" } else { "column" };

    let mut cands = candidates(space, req)?;
    let units = req.nmirror as usize * req.ncol as usize;
    if cands.len() < units {
        return Err(AllocError::NotEnoughDisks {
            layout,
            need: units,
            have: cands.len(),
        });
    }

    let mut plexes = Vec::with_capacity(req.nmirror as usize);
    for p in 0..req.nmirror as usize {
        let mut columns = Vec::with_capacity(req.ncol as usize);
        for c in 0..req.ncol as usize {
            let index = p * req.ncol as usize + c;
            let column = fill(&mut cands, need).map_err(|largest| AllocError::NotEnoughSpace {
                layout: layout.clone(),
                need,
                unit,
                index,
                largest,
            })?;
            columns.push(column);
        }
        plexes.push(PlexAlloc { columns });
    }
    Ok(plexes)
}

/// Checks the request and returns the blocks each column (concat: each plex) needs.
fn validate(space: &[DiskSpace], req: &AllocRequest) -> Result<u64, AllocError> {
    let invalid = |m: String| Err(AllocError::InvalidRequest(m));
    if req.nmirror == 0 || req.nmirror > MAX_MIRRORS {
        return invalid(format!(
            "a volume has 1 to {MAX_MIRRORS} plexes; {} were asked for",
            req.nmirror
        ));
    }
    if req.ncol == 0 {
        return invalid("the number of columns must be at least 1 (1 for a concat)".into());
    }
    if req.len == 0 {
        return invalid("the volume length must be at least 1 block".into());
    }
    let mut names: Vec<&str> = space.iter().map(|d| d.disk.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return invalid(format!(
            "disk '{}' appears twice in the free-space list",
            w[0]
        ));
    }
    if let Some(list) = &req.disks {
        if let Some(unknown) = list
            .iter()
            .find(|n| names.binary_search(&n.as_str()).is_err())
        {
            return invalid(format!("disk '{unknown}' is not in the disk group"));
        }
    }
    if req.ncol == 1 {
        return Ok(req.len);
    }
    if req.stripe_unit == 0 {
        return invalid("a stripe needs a stripe unit of at least 1 block".into());
    }
    req.len
        .div_ceil(u64::from(req.ncol))
        .checked_next_multiple_of(req.stripe_unit)
        .map_or_else(
            || invalid(format!("a volume of {} blocks is too large", req.len)),
            Ok,
        )
}

/// The usable disks with free space, sorted by name, with their free extents checked.
fn candidates<'a>(
    space: &'a [DiskSpace],
    req: &AllocRequest,
) -> Result<Vec<Candidate<'a>>, AllocError> {
    let mut cands = Vec::new();
    for d in space {
        let listed = req.disks.as_ref().map(|l| l.contains(&d.disk));
        let usable = match listed {
            Some(listed) => listed,
            None => !d.spare,
        } && !req.exclude.contains(&d.disk);
        if !usable {
            continue;
        }
        let mut free: Vec<(u64, u64)> = d.free.iter().copied().filter(|e| e.1 > 0).collect();
        free.sort_unstable();
        let mut total = 0u64;
        let mut end = 0u64;
        for &(off, len) in &free {
            let e = off.checked_add(len);
            if off < end || e.is_none() {
                return Err(AllocError::InvalidRequest(format!(
                    "disk '{}' has overlapping or out-of-range free extents; rebuild its \
                     free-space map",
                    d.disk
                )));
            }
            end = e.unwrap_or(u64::MAX);
            // Non-overlapping extents below 2^64 sum to less than 2^64.
            total += len;
        }
        if total > 0 {
            cands.push(Candidate {
                name: &d.disk,
                free,
                total,
                used: false,
            });
        }
    }
    cands.sort_by(|a, b| a.name.cmp(b.name));
    Ok(cands)
}

/// Fills one column of `need` blocks from unused disks, marking them used. On failure, returns
/// the blocks that could be found (and marks nothing).
fn fill(cands: &mut [Candidate<'_>], need: u64) -> Result<Vec<(String, u64, u64)>, u64> {
    let mut chosen: Vec<(usize, Vec<(u64, u64)>)> = Vec::new();
    let mut rem = need;
    while rem > 0 {
        let free = || {
            cands
                .iter()
                .enumerate()
                .filter(|(i, c)| !c.used && chosen.iter().all(|(j, _)| j != i))
        };
        // 1. Best fit: the smallest single extent that holds the rest (name, then offset on
        //    ties: candidates are in name order, min_by_key keeps the first minimum, and
        //    best_fit takes the lowest offset).
        let single = free()
            .filter_map(|(i, c)| c.best_fit(rem).map(|(off, len)| (i, off, len)))
            .min_by_key(|&(_, _, len)| len);
        if let Some((i, off, _)) = single {
            chosen.push((i, vec![(off, rem)]));
            break;
        }
        // 2. A disk that holds the rest in several extents: the one with the least free space.
        let several = free()
            .filter(|(_, c)| c.total >= rem)
            .min_by_key(|(_, c)| c.total);
        // 3. Else use up the disk with the most free space and go on.
        let pick = several.or_else(|| free().max_by_key(|(i, c)| (c.total, Reverse(*i))));
        let Some((i, c)) = pick else {
            return Err(need - rem);
        };
        let taken = c.take(rem);
        rem -= taken.iter().map(|e| e.1).sum::<u64>();
        chosen.push((i, taken));
    }
    let mut out = Vec::new();
    for (i, extents) in chosen {
        cands[i].used = true;
        out.extend(
            extents
                .into_iter()
                .map(|(off, len)| (cands[i].name.to_string(), off, len)),
        );
    }
    Ok(out)
}

/// "a concat volume", "a 4-column stripe with 2 mirrors", ...
fn describe(req: &AllocRequest) -> String {
    let base = if req.ncol == 1 {
        "a concat volume".to_string()
    } else {
        format!("a {}-column stripe", req.ncol)
    };
    match req.nmirror {
        1 => base,
        n => format!("{base} with {n} mirrors"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn disk(name: &str, free: &[(u64, u64)]) -> DiskSpace {
        DiskSpace {
            disk: name.into(),
            free: free.to_vec(),
            spare: false,
            nohotuse: false,
        }
    }

    fn spare(name: &str, free: &[(u64, u64)]) -> DiskSpace {
        DiskSpace {
            spare: true,
            ..disk(name, free)
        }
    }

    fn req(len: u64, nmirror: u32, ncol: u32, stripe_unit: u64) -> AllocRequest {
        AllocRequest {
            len,
            nmirror,
            ncol,
            stripe_unit,
            disks: None,
            exclude: Vec::new(),
        }
    }

    fn e(name: &str, off: u64, len: u64) -> (String, u64, u64) {
        (name.to_string(), off, len)
    }

    #[test]
    fn concat_best_fit_single_extent() {
        let space = [
            disk("d1", &[(0, 500), (1000, 120)]),
            disk("d2", &[(0, 100), (200, 110)]),
        ];
        let got = allocate(&space, &req(100, 1, 1, 0)).unwrap();
        assert_eq!(got.len(), 1);
        // d2's 100-block extent fits exactly.
        assert_eq!(got[0].columns, vec![vec![e("d2", 0, 100)]]);
        let got = allocate(&space, &req(105, 1, 1, 0)).unwrap();
        assert_eq!(got[0].columns, vec![vec![e("d2", 200, 105)]]);
    }

    #[test]
    fn concat_spans_extents_then_disks() {
        // No single extent holds 300, d1 holds it in two extents.
        let space = [disk("d1", &[(0, 200), (500, 150)]), disk("d2", &[(0, 250)])];
        let got = allocate(&space, &req(300, 1, 1, 0)).unwrap();
        assert_eq!(
            got[0].columns,
            vec![vec![e("d1", 0, 200), e("d1", 500, 100)]]
        );
        // 500 needs both disks: the largest (d1, 350) is used up, then the rest best-fits d2.
        let got = allocate(&space, &req(500, 1, 1, 0)).unwrap();
        assert_eq!(
            got[0].columns,
            vec![vec![e("d1", 0, 200), e("d1", 500, 150), e("d2", 0, 150)]]
        );
    }

    #[test]
    fn mirrors_and_columns_never_share_disks() {
        let space = [
            disk("a", &[(0, 1000)]),
            disk("b", &[(0, 1000)]),
            disk("c", &[(0, 1000)]),
            disk("d", &[(0, 1000)]),
        ];
        let got = allocate(&space, &req(1000, 2, 2, 64)).unwrap();
        // column_len = ceil(1000 / 2) = 500 rounded up to 64 = 512.
        assert_eq!(
            got,
            vec![
                PlexAlloc {
                    columns: vec![vec![e("a", 0, 512)], vec![e("b", 0, 512)]]
                },
                PlexAlloc {
                    columns: vec![vec![e("c", 0, 512)], vec![e("d", 0, 512)]]
                },
            ]
        );
        // A third mirror would need six disks even though a and b have room left.
        let err = allocate(&space, &req(1000, 3, 2, 64)).unwrap_err();
        assert_eq!(
            err,
            AllocError::NotEnoughDisks {
                layout: "a 2-column stripe with 3 mirrors".into(),
                need: 6,
                have: 4
            }
        );
    }

    #[test]
    fn spanning_columns_pair_large_with_small() {
        // Greedy "largest first" for both would give a+b then c+d (too small); pairing the
        // largest with the best fit for the rest succeeds.
        let space = [
            disk("a", &[(0, 100)]),
            disk("b", &[(0, 100)]),
            disk("c", &[(0, 50)]),
            disk("d", &[(0, 50)]),
        ];
        let got = allocate(&space, &req(150, 2, 1, 0)).unwrap();
        assert_eq!(got[0].columns, vec![vec![e("a", 0, 100), e("c", 0, 50)]]);
        assert_eq!(got[1].columns, vec![vec![e("b", 0, 100), e("d", 0, 50)]]);
    }

    #[test]
    fn spare_disks_only_when_listed() {
        let space = [disk("d1", &[(0, 100)]), spare("s1", &[(0, 1000)])];
        let got = allocate(&space, &req(500, 1, 1, 0));
        assert!(matches!(
            got,
            Err(AllocError::NotEnoughSpace {
                need: 500,
                largest: 100,
                ..
            })
        ));
        let mut r = req(500, 1, 1, 0);
        r.disks = Some(vec!["s1".into()]);
        assert_eq!(
            allocate(&space, &r).unwrap()[0].columns,
            vec![vec![e("s1", 0, 500)]]
        );
    }

    #[test]
    fn nohotuse_does_not_matter_for_normal_allocation() {
        let mut d = disk("d1", &[(0, 100)]);
        d.nohotuse = true;
        assert!(allocate(&[d], &req(100, 1, 1, 0)).is_ok());
    }

    #[test]
    fn excluded_disks_are_never_used() {
        let space = [disk("d1", &[(0, 100)]), disk("d2", &[(0, 1000)])];
        let mut r = req(100, 1, 1, 0);
        r.exclude = vec!["d1".into()];
        assert_eq!(
            allocate(&space, &r).unwrap()[0].columns,
            vec![vec![e("d2", 0, 100)]]
        );
        r.disks = Some(vec!["d1".into()]);
        assert_eq!(
            allocate(&space, &r),
            Err(AllocError::NotEnoughDisks {
                layout: "a concat volume".into(),
                need: 1,
                have: 0
            })
        );
    }

    #[test]
    fn disk_list_restricts() {
        let space = [disk("d1", &[(0, 100)]), disk("d2", &[(0, 1000)])];
        let mut r = req(100, 1, 1, 0);
        r.disks = Some(vec!["d2".into()]);
        assert_eq!(
            allocate(&space, &r).unwrap()[0].columns,
            vec![vec![e("d2", 0, 100)]]
        );
    }

    #[test]
    fn ties_break_by_name_and_result_is_deterministic() {
        let space = [
            disk("z", &[(0, 100)]),
            disk("m", &[(0, 100)]),
            disk("b", &[(500, 100), (0, 100)]),
        ];
        let r = req(100, 2, 1, 0);
        let got = allocate(&space, &r).unwrap();
        assert_eq!(got[0].columns, vec![vec![e("b", 0, 100)]]);
        assert_eq!(got[1].columns, vec![vec![e("m", 0, 100)]]);
        assert_eq!(allocate(&space, &r).unwrap(), got);
    }

    #[test]
    fn not_enough_space_says_what_is_missing() {
        let space = [disk("a", &[(0, 1024)]), disk("b", &[(0, 4096)])];
        let err = allocate(&space, &req(4096, 1, 2, 128)).unwrap_err();
        assert_eq!(
            err,
            AllocError::NotEnoughSpace {
                layout: "a 2-column stripe".into(),
                need: 2048,
                unit: "column",
                index: 1,
                largest: 1024
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("2048 blocks per column"), "{msg}");
        assert!(msg.contains("only 1024 are free"), "{msg}");
        let err = allocate(&[disk("a", &[])], &req(1, 1, 1, 0)).unwrap_err();
        assert!(err.to_string().contains("the group has 0 usable"), "{err}");
    }

    #[test]
    fn stripe_column_length_rounds_up() {
        let space = [
            disk("a", &[(0, 1000)]),
            disk("b", &[(0, 1000)]),
            disk("c", &[(0, 1000)]),
        ];
        // ceil(1000 / 3) = 334 -> 384 with su 128.
        let got = allocate(&space, &req(1000, 1, 3, 128)).unwrap();
        for col in &got[0].columns {
            assert_eq!(col.iter().map(|x| x.2).sum::<u64>(), 384);
        }
    }

    #[test]
    fn invalid_requests() {
        let space = [disk("a", &[(0, 1000)])];
        let bad =
            |r: AllocRequest| matches!(allocate(&space, &r), Err(AllocError::InvalidRequest(_)));
        assert!(bad(req(10, 0, 1, 0)));
        assert!(bad(req(10, 33, 1, 0)));
        assert!(bad(req(10, 1, 0, 0)));
        assert!(bad(req(0, 1, 1, 0)));
        assert!(bad(req(10, 1, 2, 0)));
        let mut r = req(10, 1, 1, 0);
        r.disks = Some(vec!["nope".into()]);
        assert!(bad(r));
        assert!(matches!(
            allocate(&[disk("a", &[]), disk("a", &[])], &req(10, 1, 1, 0)),
            Err(AllocError::InvalidRequest(_))
        ));
        assert!(matches!(
            allocate(&[disk("a", &[(0, 10), (5, 10)])], &req(10, 1, 1, 0)),
            Err(AllocError::InvalidRequest(_))
        ));
        assert!(matches!(
            allocate(&[disk("a", &[(u64::MAX, 10)])], &req(10, 1, 1, 0)),
            Err(AllocError::InvalidRequest(_))
        ));
        // 32 mirrors is the limit, not beyond it.
        let many: Vec<DiskSpace> = (0..32)
            .map(|i| disk(&format!("d{i:02}"), &[(0, 10)]))
            .collect();
        assert_eq!(allocate(&many, &req(10, 32, 1, 0)).unwrap().len(), 32);
    }

    /// Random disks with sorted, non-overlapping free extents.
    fn disks() -> impl Strategy<Value = Vec<DiskSpace>> {
        let free = prop::collection::vec((0u64..50, 1u64..600), 0..4);
        prop::collection::vec((free, prop::bool::weighted(0.2), any::<bool>()), 1..16).prop_map(
            |ds| {
                ds.into_iter()
                    .enumerate()
                    .map(|(i, (raw, spare, nohotuse))| {
                        let mut at = 0;
                        let free = raw
                            .into_iter()
                            .map(|(gap, len)| {
                                let off = at + gap;
                                at = off + len;
                                (off, len)
                            })
                            .collect();
                        DiskSpace {
                            disk: format!("d{i}"),
                            free,
                            spare,
                            nohotuse,
                        }
                    })
                    .collect()
            },
        )
    }

    fn request(ndisks: usize) -> impl Strategy<Value = AllocRequest> {
        let names = |max: usize| prop::collection::vec(0..ndisks, 0..=max);
        (
            1u64..1000,
            1u32..4,
            1u32..5,
            1u64..64,
            prop::option::weighted(0.25, names(ndisks)),
            names(2),
        )
            .prop_map(|(len, nmirror, ncol, su, disks, exclude)| {
                let name = |i: usize| format!("d{i}");
                AllocRequest {
                    len,
                    nmirror,
                    ncol,
                    stripe_unit: su,
                    disks: disks.map(|d| d.into_iter().map(name).collect()),
                    exclude: exclude.into_iter().map(name).collect(),
                }
            })
    }

    fn case() -> impl Strategy<Value = (Vec<DiskSpace>, AllocRequest)> {
        disks().prop_flat_map(|d| {
            let n = d.len();
            (Just(d), request(n))
        })
    }

    fn usable(d: &DiskSpace, r: &AllocRequest) -> bool {
        let listed = match &r.disks {
            Some(l) => l.contains(&d.disk),
            None => !d.spare,
        };
        listed && !r.exclude.contains(&d.disk)
    }

    fn column_need(r: &AllocRequest) -> u64 {
        if r.ncol == 1 {
            r.len
        } else {
            r.len
                .div_ceil(u64::from(r.ncol))
                .next_multiple_of(r.stripe_unit)
        }
    }

    proptest! {
        #[test]
        fn allocations_respect_the_rules((space, r) in case()) {
            let by_name: HashMap<&str, &DiskSpace> =
                space.iter().map(|d| (d.disk.as_str(), d)).collect();
            let need = column_need(&r);
            match allocate(&space, &r) {
                Ok(plexes) => {
                    prop_assert_eq!(plexes.len(), r.nmirror as usize);
                    let mut owner: HashMap<&str, (usize, usize)> = HashMap::new();
                    let mut used: Vec<(&str, u64, u64)> = Vec::new();
                    for (p, plex) in plexes.iter().enumerate() {
                        prop_assert_eq!(plex.columns.len(), r.ncol as usize);
                        for (c, col) in plex.columns.iter().enumerate() {
                            let total: u64 = col.iter().map(|x| x.2).sum();
                            if r.ncol == 1 {
                                prop_assert!(total >= r.len);
                            } else {
                                prop_assert_eq!(total, need);
                            }
                            for (name, off, len) in col {
                                prop_assert!(*len > 0);
                                // (2) one column per disk.
                                let o = owner.entry(name).or_insert((p, c));
                                prop_assert_eq!(*o, (p, c), "disk {} shared", name);
                                // (4) spare / excluded / listed.
                                let d = by_name[name.as_str()];
                                prop_assert!(usable(d, &r), "disk {} not usable", name);
                                // (1) within free space.
                                prop_assert!(d.free.iter().any(|&(fo, fl)| *off >= fo
                                    && off + len <= fo + fl));
                                used.push((name, *off, *len));
                            }
                        }
                    }
                    // (1) no overlap between chosen extents.
                    used.sort_unstable();
                    for w in used.windows(2) {
                        prop_assert!(w[0].0 != w[1].0 || w[0].1 + w[0].2 <= w[1].1);
                    }
                }
                Err(AllocError::InvalidRequest(m)) => {
                    prop_assert!(false, "unexpected invalid request: {}", m);
                }
                Err(_) => {
                    // Must not fail when enough usable disks each have a big enough extent.
                    let fitting = space
                        .iter()
                        .filter(|d| usable(d, &r) && d.free.iter().any(|e| e.1 >= need))
                        .count();
                    prop_assert!(fitting < (r.nmirror * r.ncol) as usize);
                    // Nor when the usable space would not even hold it in total is it a surprise;
                    // but with enough disks and total space, a 1-column 1-mirror request fits.
                    if r.nmirror == 1 && r.ncol == 1 {
                        let total: u64 = space
                            .iter()
                            .filter(|d| usable(d, &r))
                            .flat_map(|d| d.free.iter().map(|e| e.1))
                            .sum();
                        prop_assert!(total < r.len);
                    }
                }
            }
        }

        #[test]
        fn allocation_is_deterministic((space, r) in case()) {
            prop_assert_eq!(allocate(&space, &r), allocate(&space, &r));
            let disks: HashSet<&str> = space.iter().map(|d| d.disk.as_str()).collect();
            prop_assert_eq!(disks.len(), space.len());
        }
    }
}
