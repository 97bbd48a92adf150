//! RAID-5 volumes on the control side: the checks and allocation of `volume_create` with
//! layout `raid5`, the columns of a RAID-5 plex without current data (for the listings), and
//! the refusal of operations RAID-5 plexes do not support (yet).
//!
//! A RAID-5 volume has exactly one plex, of layout [`PlexLayout::Raid5`]: `ncol` ≥ 3 columns,
//! each on disks no other column uses, each `ceil(len / (ncol - 1) / su) * su` blocks long, so
//! the plex holds at least the volume's `len` blocks of data. Its subdisks are zeroed at
//! create like every new volume's, and zeroes are their own parity (the XOR of zeroes), so
//! the plex is consistent from the start.

use crate::volume::error::VolumeError;
use crate::volume::manager::ops::{resolve_disks, usable_space, NewVolume, VolumeCreate};
use crate::volume::manager::{Group, VolumeManager};
use crate::volume::model::alloc::{self, AllocError, AllocRequest};
use crate::volume::model::objects::{
    DgConfig, DiskCondition, PlexLayout, PlexRecord, ReadPolicy, DEFAULT_RAID5_STRIPE_UNIT_BYTES,
};

/// The fewest columns a RAID-5 plex has: two data units and one parity unit per stripe.
pub const MIN_RAID5_COLUMNS: u32 = 3;

/// The most columns the default `ncol` gives (more are allowed when asked for; VxVM
/// discourages more than 8).
pub const DEFAULT_MAX_RAID5_COLUMNS: u32 = 8;

/// The smallest RAID-5 stripe unit in bytes.
pub const MIN_RAID5_STRIPE_UNIT_BYTES: u64 = 4 << 10;

/// The largest RAID-5 stripe unit in bytes.
pub const MAX_RAID5_STRIPE_UNIT_BYTES: u64 = 1 << 20;

/// The shape of a new RAID-5 plex, checked against the disk group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raid5Shape {
    /// Columns.
    pub(crate) ncol: u32,
    /// Stripe unit in blocks (a power of two).
    pub(crate) stripe_unit: u64,
    /// Blocks per column: whole stripe units, enough for the volume's data.
    pub(crate) col_len: u64,
}

impl Raid5Shape {
    /// Checks `req` (layout `raid5`) for a volume of `len` blocks in group `cfg`: one plex,
    /// no read policy, `ncol` (default: the usable disks, 3 to 8) at least 3 and at most the
    /// usable disks, a stripe unit of 4 KiB to 1 MiB that is a power of two and a multiple of
    /// the block size (default 16 KiB, or the block size if larger).
    pub(crate) fn check(cfg: &DgConfig, req: &VolumeCreate, len: u64) -> Result<Self, VolumeError> {
        if let Some(n) = req.nmirror.filter(|&n| n != 1) {
            return Err(VolumeError::Invalid(format!(
                "a RAID-5 volume has exactly one RAID-5 plex and is not mirrored; nmirror {n} is not possible (leave nmirror out)"
            )));
        }
        if req.read_policy.as_deref().is_some_and(|p| p != "select") || req.prefer_plex.is_some() {
            return Err(VolumeError::Invalid(
                "a RAID-5 volume has one plex and reads each block from the column holding it; read_policy and prefer_plex are for mirrored volumes".into(),
            ));
        }
        let (usable, among) = usable_disks(cfg, req.alloc.as_deref())?;
        let ncol = req
            .ncol
            .unwrap_or_else(|| usable.clamp(MIN_RAID5_COLUMNS, DEFAULT_MAX_RAID5_COLUMNS));
        if ncol < MIN_RAID5_COLUMNS {
            return Err(VolumeError::Invalid(format!(
                "a RAID-5 volume needs at least {MIN_RAID5_COLUMNS} columns (two data units and one parity unit per stripe); ncol {ncol} was asked for"
            )));
        }
        if ncol > usable {
            return Err(VolumeError::Invalid(format!(
                "a RAID-5 volume of {ncol} columns needs {ncol} disks (no two columns may share a disk), but {among}; add disks or ask for fewer columns (ncol)"
            )));
        }
        if ncol > DEFAULT_MAX_RAID5_COLUMNS {
            tracing::warn!(dg = %cfg.name, volume = %req.name, "a RAID-5 volume of {ncol} columns: more than {DEFAULT_MAX_RAID5_COLUMNS} is discouraged (every partial-stripe write and every reconstruction reads more disks)");
        }
        let bs = u64::from(cfg.block_size.max(1));
        let su_bytes = match req.stripe_unit_kb {
            Some(kb) => kb.saturating_mul(1024),
            None => DEFAULT_RAID5_STRIPE_UNIT_BYTES.max(bs),
        };
        let shown = req.stripe_unit_kb.map_or_else(
            || format!("{} KiB", su_bytes >> 10),
            |kb| format!("{kb} KiB"),
        );
        if !(MIN_RAID5_STRIPE_UNIT_BYTES..=MAX_RAID5_STRIPE_UNIT_BYTES).contains(&su_bytes) {
            return Err(VolumeError::Invalid(format!(
                "the RAID-5 stripe unit must be 4 KiB to 1 MiB (stripe_unit_kb 4 to 1024); {shown} was asked for"
            )));
        }
        if !su_bytes.is_power_of_two() {
            return Err(VolumeError::Invalid(format!(
                "the RAID-5 stripe unit must be a power of two (4, 8, 16, ... 1024 KiB); {shown} was asked for"
            )));
        }
        if !su_bytes.is_multiple_of(bs) {
            return Err(VolumeError::Invalid(format!(
                "the RAID-5 stripe unit must be a multiple of the disk group's block size ({bs} bytes); {shown} is not: ask for {} KiB or more",
                bs.div_ceil(1024)
            )));
        }
        let stripe_unit = su_bytes / bs;
        let too_large = || {
            VolumeError::Invalid(format!(
                "a RAID-5 volume of {len} blocks with {ncol} columns is too large"
            ))
        };
        let data_cols = u64::from(ncol - 1);
        let col_len = data_cols
            .checked_mul(stripe_unit)
            .map(|row| len.div_ceil(row))
            .and_then(|rows| rows.checked_mul(stripe_unit))
            .ok_or_else(too_large)?;
        col_len.checked_mul(u64::from(ncol)).ok_or_else(too_large)?;
        Ok(Raid5Shape {
            ncol,
            stripe_unit,
            col_len,
        })
    }

    /// The allocation of the plex: `ncol` columns of `col_len` blocks each (the allocator
    /// gives each column `plex len / ncol` rounded up to the stripe unit), on disks no other
    /// column uses.
    fn alloc_request(&self, disks: Option<Vec<String>>) -> AllocRequest {
        AllocRequest {
            len: self.col_len * u64::from(self.ncol),
            nmirror: 1,
            ncol: self.ncol,
            stripe_unit: self.stripe_unit,
            disks,
            exclude: Vec::new(),
        }
    }

    /// The plex layout.
    pub(crate) fn layout(&self) -> PlexLayout {
        PlexLayout::Raid5 {
            ncol: self.ncol,
            stripe_unit: self.stripe_unit,
        }
    }
}

/// How many disks a RAID-5 volume may put columns on, and a phrase saying so for an error
/// message: the group's usable disks (condition OK, not spare), or those of the `alloc` list
/// (condition OK; spares count there, as the allocator uses spares it is given by name).
fn usable_disks(cfg: &DgConfig, alloc: Option<&[String]>) -> Result<(u32, String), VolumeError> {
    let ok = |name: &str| {
        cfg.disk(name)
            .is_some_and(|d| d.condition == DiskCondition::Ok)
    };
    Ok(match alloc {
        Some(list) => {
            let mut names = resolve_disks(cfg, list)?;
            names.sort_unstable();
            names.dedup();
            let n = names.iter().filter(|d| ok(d)).count() as u32;
            (n, format!("the alloc list names only {n} usable disk(s)"))
        }
        None => {
            let n = cfg.disks.iter().filter(|d| !d.spare && ok(&d.name)).count() as u32;
            (
                n,
                format!(
                    "disk group '{}' has only {n} usable disk(s) (not spare, not failed)",
                    cfg.name
                ),
            )
        }
    })
}

/// Allocates log plexes of `len` blocks (`request(len)`), each preferably on one disk: when
/// that does not fit a single disk per log, logs of `small` blocks (the fewest slots) that
/// do, and only then `len` spread over several disks, then `small` spread.
pub(crate) fn allocate_log(
    space: &[alloc::DiskSpace],
    len: u64,
    small: u64,
    request: impl Fn(u64) -> AllocRequest,
) -> Result<Vec<alloc::PlexAlloc>, AllocError> {
    let one_disk = |plan: &Vec<alloc::PlexAlloc>| {
        plan.iter().all(|p| {
            let mut disks = p.columns.iter().flatten().map(|(d, _, _)| d);
            let first = disks.next();
            disks.all(|d| Some(d) == first)
        })
    };
    let allocate =
        |len| alloc::allocate(space, &request(len)).map_err(|e| e.for_layout("a RAID-5 log plex"));
    let big = allocate(len);
    if big.as_ref().is_ok_and(one_disk) {
        return big;
    }
    match allocate(small) {
        Ok(p) if one_disk(&p) => Ok(p),
        other => big.or(other),
    }
}

/// The RAID-5 plex of volume `vol`, if it is a RAID-5 volume.
pub(crate) fn raid5_plex<'a>(cfg: &'a DgConfig, vol: &str) -> Option<&'a PlexRecord> {
    cfg.plexes_of(vol)
        .into_iter()
        .find(|p| matches!(p.layout, PlexLayout::Raid5 { .. }))
}

/// Refuses `what` on volume `vol` of `g` if it is a RAID-5 volume, with `why` as the reason.
pub(crate) fn refuse_raid5(g: &Group, vol: &str, why: &str) -> Result<(), VolumeError> {
    match raid5_plex(&g.cfg, vol) {
        Some(_) => Err(VolumeError::Invalid(format!(
            "{}/{vol} is a RAID-5 volume: {why}",
            g.cfg.name
        ))),
        None => Ok(()),
    }
}

/// Whether disk `disk` of `g` is present and usable (condition OK).
pub(crate) fn disk_usable(g: &Group, disk: &str) -> bool {
    g.members.contains_key(disk)
        && g.cfg
            .disk(disk)
            .is_some_and(|d| d.condition == DiskCondition::Ok)
}

/// The disks of column `column` of RAID-5 plex `plex` that are missing or not usable.
pub(crate) fn absent_column_disks(g: &Group, plex: &str, column: u32) -> Vec<String> {
    g.cfg
        .subdisks_of(plex)
        .iter()
        .filter(|s| s.column == column && !disk_usable(g, &s.disk))
        .map(|s| s.disk.clone())
        .collect()
}

/// The columns of RAID-5 plex `plex` without current data, in ascending order: those
/// recorded stale and those with a subdisk on a disk that is missing or not usable (as the
/// I/O map sees them).
pub(crate) fn missing_columns(g: &Group, plex: &PlexRecord) -> Vec<u32> {
    let mut cols = plex.stale_columns.clone();
    cols.extend(
        g.cfg
            .subdisks_of(&plex.name)
            .iter()
            .filter(|s| !disk_usable(g, &s.disk))
            .map(|s| s.column),
    );
    cols.sort_unstable();
    cols.dedup();
    cols
}

impl VolumeManager {
    /// `volume_create` with layout `raid5` for a volume of `len` blocks (see
    /// [`Raid5Shape::check`]): checks everything before anything is allocated or recorded.
    pub(crate) fn create_raid5(
        &self,
        g: &mut Group,
        req: &VolumeCreate,
        len: u64,
    ) -> Result<String, VolumeError> {
        let shape = Raid5Shape::check(&g.cfg, req, len)?;
        let log_failure = match req.log_failure.as_deref() {
            None => crate::volume::model::objects::LogFailure::Continue,
            Some(s) => crate::volume::model::objects::LogFailure::parse(s).ok_or_else(|| {
                VolumeError::Invalid(format!(
                    "unknown log_failure '{s}': use continue (write on without the log's protection) or readonly (refuse writes until a log plex is added)"
                ))
            })?,
        };
        let skip_copy = req.skip_copy.unwrap_or(false);
        let disks = req
            .alloc
            .as_deref()
            .map(|l| resolve_disks(&g.cfg, l))
            .transpose()?;
        let space = usable_space(g, &g.cfg, self.tasks.fences());
        let plan = alloc::allocate(&space, &shape.alloc_request(disks.clone()))
            .map_err(|e| e.for_layout(format!("a {}-column RAID-5 volume", shape.ncol)))?;
        let logs = self.allocate_logs(g, req, &shape, &plan, disks, &space)?;
        let bdev = self.create_from_plan(
            g,
            NewVolume {
                name: &req.name,
                len,
                plan,
                layout: shape.layout(),
                layout_name: "raid5",
                read_policy: ReadPolicy::Select,
                uuid: None,
                bdev_name: None,
                raid_level: None,
                logs,
            },
        )?;
        if log_failure != crate::volume::model::objects::LogFailure::Continue || skip_copy {
            let mut cfg = g.cfg.clone();
            if let Some(v) = cfg.volume_mut(&req.name) {
                v.log_failure = log_failure;
                v.skip_copy = skip_copy;
            }
            g.commit(&self.engine, cfg)?;
            self.publish(g, &req.name);
        }
        Ok(bdev)
    }

    /// The log plexes of a new RAID-5 volume: `req.nlog` of them (default 1 if there is room,
    /// else none, with a warning), each on a disk that no column and no other log uses.
    fn allocate_logs(
        &self,
        g: &Group,
        req: &VolumeCreate,
        shape: &Raid5Shape,
        plan: &[alloc::PlexAlloc],
        disks: Option<Vec<String>>,
        space: &[alloc::DiskSpace],
    ) -> Result<Vec<alloc::PlexAlloc>, VolumeError> {
        let bs = g.cfg.block_size as usize;
        if shape.ncol as usize + 2 > crate::volume::model::raid5_log::max_ranges(bs) {
            if req.nlog.is_some_and(|n| n > 0) {
                return Err(VolumeError::Invalid(format!(
                    "a RAID-5 log holds rows of at most {} columns with {bs}-byte blocks; {} columns cannot have a log",
                    crate::volume::model::raid5_log::max_ranges(bs) - 2,
                    shape.ncol
                )));
            }
            return Ok(Vec::new());
        }
        let used: Vec<String> = plan
            .iter()
            .flat_map(|p| p.columns.iter().flatten().map(|(d, _, _)| d.clone()))
            .collect();
        let want = req.nlog.unwrap_or(1);
        if want == 0 {
            return Ok(Vec::new());
        }
        use crate::volume::model::raid5_log::{log_blocks, slot_blocks, MIN_LOG_SLOTS};
        // The columns' disks are left out altogether (the space they took is not yet gone
        // from `space`). The default size first (room for every write in flight); where the
        // disks lack it, the smallest log.
        let request = |len| AllocRequest {
            len,
            nmirror: want,
            ncol: 1,
            stripe_unit: 1,
            disks: disks.clone(),
            exclude: used.clone(),
        };
        let len = log_blocks(shape.ncol, shape.stripe_unit, u64::from(g.cfg.block_size));
        let small = MIN_LOG_SLOTS * slot_blocks(shape.ncol, shape.stripe_unit);
        let r = allocate_log(space, len, small, request);
        match r {
            Ok(logs) => Ok(logs),
            Err(e) if req.nlog.is_none() => {
                tracing::warn!(dg = %g.cfg.name, volume = %req.name, "no room for a RAID-5 log on a disk the columns do not use ({e}): the volume has no log, so a crash leaves it to a full parity resync, and a crash while degraded to a forced start");
                Ok(Vec::new())
            }
            Err(e) => Err(VolumeError::Invalid(format!(
                "{want} RAID-5 log plex(es) of {small} blocks at least need disks that no column uses: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::model::objects::DiskRecord;

    fn group(ndisks: usize, block_size: u32) -> DgConfig {
        DgConfig {
            name: "dg01".into(),
            id: uuid::Uuid::nil(),
            block_size,
            nconfig: 0,
            disks: (0..ndisks)
                .map(|i| DiskRecord {
                    name: format!("disk{:02}", i + 1),
                    disk_id: uuid::Uuid::nil(),
                    device: format!("M{i}"),
                    expected_serial: 1,
                    public_len: 1 << 20,
                    public_offset: 8192,
                    spare: false,
                    nohotuse: false,
                    condition: DiskCondition::Ok,
                })
                .collect(),
            subdisks: Vec::new(),
            plexes: Vec::new(),
            volumes: Vec::new(),
        }
    }

    fn shape(cfg: &DgConfig, req: VolumeCreate, len: u64) -> Result<Raid5Shape, String> {
        Raid5Shape::check(cfg, &req, len).map_err(|e| e.to_string())
    }

    #[test]
    fn columns_hold_the_data_in_whole_stripe_units() {
        // 4 columns of 16 KiB units (32 blocks): 3 data units per row, 1000 blocks need 11
        // rows (10 rows hold 960).
        let s = shape(
            &group(4, 512),
            VolumeCreate {
                ncol: Some(4),
                ..Default::default()
            },
            1000,
        );
        assert_eq!(
            s,
            Ok(Raid5Shape {
                ncol: 4,
                stripe_unit: 32,
                col_len: 11 * 32
            })
        );
        // Exactly whole rows: no extra row.
        let s = shape(&group(3, 512), VolumeCreate::default(), 2 * 32 * 5).unwrap();
        assert_eq!((s.ncol, s.col_len), (3, 5 * 32));
    }

    #[test]
    fn default_columns_follow_the_usable_disks_between_3_and_8() {
        for (disks, want) in [(3, 3), (5, 5), (8, 8), (12, 8)] {
            let s = shape(&group(disks, 512), VolumeCreate::default(), 4096).unwrap();
            assert_eq!(s.ncol, want, "{disks} disks");
        }
        let mut cfg = group(5, 512);
        cfg.disks[0].spare = true;
        cfg.disks[1].condition = DiskCondition::Failed;
        assert_eq!(shape(&cfg, VolumeCreate::default(), 4096).unwrap().ncol, 3);
        // Two disks: the default 3 columns do not fit, and the error says so.
        let e = shape(&group(2, 512), VolumeCreate::default(), 4096).unwrap_err();
        assert!(
            e.contains("3 columns needs 3 disks") && e.contains("only 2"),
            "{e}"
        );
    }

    #[test]
    fn the_default_stripe_unit_is_16k_or_the_block_size() {
        let s = shape(&group(3, 4096), VolumeCreate::default(), 4096).unwrap();
        assert_eq!(s.stripe_unit, 4);
        let s = shape(&group(3, 65536), VolumeCreate::default(), 4096).unwrap();
        assert_eq!(s.stripe_unit, 1);
    }
}
