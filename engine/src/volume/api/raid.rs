//! SPDK's `bdev_raid_create / delete / get_bdevs / add_base_bdev / remove_base_bdev` for
//! raid0, raid1, raid5f and concat, mapped onto the volume manager: a raid bdev `R` is disk
//! group `R` (one VM disk per base bdev, in order) holding one volume `R` whose bdev is named
//! `R`:
//!
//! - raid0: one striped plex, one column per base bdev, `strip_size_kb` stripe unit;
//! - raid1: one concat plex per base bdev (a mirror), rebuilt by plex attach;
//! - raid5f: one RAID-5 plex, column `i` on base bdev `i`, `strip_size_kb` stripe unit (unlike
//!   SPDK's raid5f it takes writes of any size, not only full stripes);
//! - concat: one concat plex over every base bdev in order.
//!
//! The group's labels play the part of SPDK's superblock: deleting the raid resets them, and
//! `bdev_raid_create` on bdevs that already carry raid `R` re-assembles it instead of
//! formatting them (so a saved config loads again).

use std::time::Duration;

use plexd_control::api::raid::{
    BdevRaidAddBaseBdev, BdevRaidCreate, BdevRaidDelete, BdevRaidGetBdevs, BdevRaidRemoveBaseBdev,
    RaidBaseBdev, RaidInfo,
};

use crate::volume::error::VolumeError;
use crate::volume::manager::ops::NewVolume;
use crate::volume::manager::raid5_ops::{
    self, MAX_RAID5_STRIPE_UNIT_BYTES, MIN_RAID5_COLUMNS, MIN_RAID5_STRIPE_UNIT_BYTES,
};
use crate::volume::manager::{group_mut, Group, VolumeManager};
use crate::volume::model::alloc::PlexAlloc;
use crate::volume::model::objects::{
    DiskCondition, KernelState, PlexLayout, PlexRecord, ReadPolicy,
};
use plexd_control::MethodTable;

/// A raid level as SPDK names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaidLevel {
    /// Striping.
    Raid0,
    /// Mirroring.
    Raid1,
    /// Striping with rotating parity (plexd's RAID-5 engine).
    Raid5f,
    /// Concatenation.
    Concat,
}

impl RaidLevel {
    /// Parses SPDK's names (`raid0`/`0`, `raid1`/`1`, `raid5f`/`5f`, `concat`).
    pub fn parse(s: &str) -> Result<RaidLevel, VolumeError> {
        match s {
            "raid0" | "0" => Ok(RaidLevel::Raid0),
            "raid1" | "1" => Ok(RaidLevel::Raid1),
            "raid5f" | "5f" => Ok(RaidLevel::Raid5f),
            "concat" => Ok(RaidLevel::Concat),
            other => Err(VolumeError::Invalid(format!(
                "unknown raid_level '{other}': use raid0, raid1, raid5f or concat"
            ))),
        }
    }

    /// SPDK's name.
    pub fn name(self) -> &'static str {
        match self {
            RaidLevel::Raid0 => "raid0",
            RaidLevel::Raid1 => "raid1",
            RaidLevel::Raid5f => "raid5f",
            RaidLevel::Concat => "concat",
        }
    }
}

/// The raid0 strip size when `strip_size_kb` is not given (SPDK's default).
const DEFAULT_STRIP_KB: u64 = 64;

/// Checks a raid5f's strip size before anything is looked up, as SPDK does: a power of two
/// (SPDK has no default for raid5f) within what plexd's RAID-5 engine takes.
fn check_raid5f_strip(strip_size_kb: Option<u64>) -> Result<(), VolumeError> {
    let kb = strip_size_kb.unwrap_or(0);
    let (min_kb, max_kb) = (
        MIN_RAID5_STRIPE_UNIT_BYTES >> 10,
        MAX_RAID5_STRIPE_UNIT_BYTES >> 10,
    );
    if !kb.is_power_of_two() {
        let what = if strip_size_kb.is_none() {
            "strip_size_kb is required for raid5f".to_string()
        } else {
            format!("strip_size_kb {kb} is not a power of two")
        };
        return Err(VolumeError::Invalid(format!(
            "Invalid strip size {kb}: {what}; give {min_kb}, 8, 16, ... {max_kb} (KiB)"
        )));
    }
    if !(min_kb..=max_kb).contains(&kb) {
        return Err(VolumeError::Invalid(format!(
            "Invalid strip size {kb}: plexd's raid5f takes strip_size_kb {min_kb} to {max_kb}"
        )));
    }
    Ok(())
}

/// The most base bdevs a raid5f takes (the RAID-5 engine reports failed columns as bits of a
/// 64-bit word).
const MAX_RAID5F_BASE_BDEVS: usize = 64;

/// Checks the number of base bdevs of a new raid5f: at least 3 (SPDK's minimum), at most 64.
fn check_raid5f_count(base_bdevs: &[String]) -> Result<(), VolumeError> {
    let n = base_bdevs.len();
    if n < MIN_RAID5_COLUMNS as usize {
        return Err(VolumeError::Invalid(format!(
            "At least {MIN_RAID5_COLUMNS} base devices required for raid5f (two data strips and one parity strip per stripe); {n} given"
        )));
    }
    if n > MAX_RAID5F_BASE_BDEVS {
        return Err(VolumeError::Invalid(format!(
            "plexd's raid5f takes at most {MAX_RAID5F_BASE_BDEVS} base bdevs; {n} given"
        )));
    }
    Ok(())
}

/// Refuses a base bdev listed twice (before anything is looked up or re-assembled).
fn check_distinct(base_bdevs: &[String]) -> Result<(), VolumeError> {
    for (i, b) in base_bdevs.iter().enumerate() {
        if base_bdevs[..i].contains(b) {
            return Err(VolumeError::Invalid(format!(
                "base bdev '{b}' is listed twice: each base bdev holds one slot of the raid"
            )));
        }
    }
    Ok(())
}

/// A strip size in bytes, refused if it does not fit in 64 bits.
fn strip_bytes(kb: u64) -> Result<u64, VolumeError> {
    kb.checked_mul(1024).ok_or_else(|| {
        VolumeError::Invalid(format!(
            "strip_size_kb {kb} is too large: at most {} KiB",
            u64::MAX / 1024
        ))
    })
}

impl VolumeManager {
    /// `bdev_raid_create`: builds (or re-assembles) raid bdev `name` over `base_bdevs`. A
    /// raid5f needs at least 3 base bdevs and a `strip_size_kb` that is a power of two from 4
    /// to 1024; its size is (base bdevs - 1) × the smallest base bdev's data area rounded
    /// down to whole strips, as SPDK computes it.
    pub fn raid_create(
        &self,
        name: &str,
        level: RaidLevel,
        base_bdevs: &[String],
        strip_size_kb: Option<u64>,
        uuid: Option<uuid::Uuid>,
    ) -> Result<String, VolumeError> {
        if base_bdevs.is_empty() {
            return Err(VolumeError::Invalid(
                "base_bdevs must name at least one bdev".into(),
            ));
        }
        if level == RaidLevel::Raid0 && strip_size_kb == Some(0) {
            return Err(VolumeError::Invalid(
                "strip_size_kb must be greater than 0".into(),
            ));
        }
        if level == RaidLevel::Raid5f {
            check_raid5f_strip(strip_size_kb)?;
        }
        check_distinct(base_bdevs)?;
        if self.group_names().iter().any(|g| g == name) {
            return Err(VolumeError::Exists {
                kind: "raid bdev",
                name: name.into(),
            });
        }
        // Bdevs that already carry this raid are re-assembled, not formatted.
        if self.carries_group(name, base_bdevs) {
            self.dg_import(Some(name), Some(base_bdevs), None)?;
            tracing::info!(raid = %name, "raid bdev re-assembled from its base bdevs");
            return Ok(name.to_string());
        }
        // Counted after re-assembly: a degraded raid's saved config lists fewer base bdevs.
        if level == RaidLevel::Raid1 && base_bdevs.len() < 2 {
            return Err(VolumeError::Invalid(
                "raid1 needs at least 2 base bdevs".into(),
            ));
        }
        if level == RaidLevel::Raid5f {
            check_raid5f_count(base_bdevs)?;
        }
        if matches!(level, RaidLevel::Raid0 | RaidLevel::Raid5f) {
            // Everything checked before the disks are labelled: a failure past this point
            // rolls back, but a group that was never made leaves the base bdevs untouched.
            self.check_strip(base_bdevs, strip_size_kb)?;
        }
        self.engine.bdevs().check_free(name)?;
        self.dg_create(name, base_bdevs, false)?;
        let r = self.raid_volume(name, level, strip_size_kb, uuid);
        if r.is_err() {
            let _ = self.dg_destroy(name);
        }
        r
    }

    /// Checks a raid0 or raid5f strip size against every base bdev that exists: its byte
    /// count fits in 64 bits, is a multiple of the bdev's block size, and fits the bdev's
    /// public region.
    fn check_strip(
        &self,
        base_bdevs: &[String],
        strip_size_kb: Option<u64>,
    ) -> Result<(), VolumeError> {
        let kb = strip_size_kb.unwrap_or(DEFAULT_STRIP_KB);
        let bytes = strip_bytes(kb)?;
        for name in base_bdevs {
            // A missing bdev is reported by the group creation, with its own message.
            let Ok(b) = self.engine.bdevs().get(name) else {
                continue;
            };
            let bs = u64::from(b.block_size());
            if !bytes.is_multiple_of(bs) {
                return Err(VolumeError::Invalid(format!(
                    "strip_size_kb {kb} is not a multiple of base bdev '{name}''s block size ({bs} bytes)"
                )));
            }
            let len = b.num_blocks().saturating_mul(bs);
            if let Ok(layout) =
                crate::volume::ondisk::format::RegionLayout::for_disk(len, b.block_size())
            {
                if bytes > layout.public_len {
                    return Err(VolumeError::Invalid(format!(
                        "strip_size_kb {kb} is larger than the {} KiB base bdev '{name}' has for data",
                        layout.public_len / 1024
                    )));
                }
            }
        }
        Ok(())
    }

    fn carries_group(&self, name: &str, bdevs: &[String]) -> bool {
        bdevs.iter().all(|b| {
            self.engine.bdevs().get(b).ok().is_some_and(|b| {
                b.claimed_by().is_none()
                    && crate::volume::ondisk::disk::read_label(&self.engine, &b)
                        .is_ok_and(|l| !l.dg_id.is_nil() && l.dg_name == name)
            })
        })
    }

    fn raid_volume(
        &self,
        name: &str,
        level: RaidLevel,
        strip_size_kb: Option<u64>,
        uuid: Option<uuid::Uuid>,
    ) -> Result<String, VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, name)?;
        let bs = g.cfg.block_size as u64;
        let disks: Vec<(String, u64)> = g
            .cfg
            .disks
            .iter()
            .map(|d| (d.name.clone(), d.public_len))
            .collect();
        let min = disks.iter().map(|(_, l)| *l).min().unwrap_or(0);
        // raid0 and raid5f: one column per base bdev, as long as the smallest base bdev's
        // data area rounded down to whole strips (SPDK's size for both).
        let columns = |kb: u64| -> Result<(u64, u64, Vec<PlexAlloc>), VolumeError> {
            let su_bytes = strip_bytes(kb)?;
            if !su_bytes.is_multiple_of(bs) {
                return Err(VolumeError::Invalid(format!(
                    "strip_size_kb must be a multiple of the block size ({bs} bytes)"
                )));
            }
            let su = su_bytes / bs;
            let col = min / su * su;
            if col == 0 {
                return Err(VolumeError::Invalid(
                    "the base bdevs are smaller than one strip".into(),
                ));
            }
            let plan = vec![PlexAlloc {
                columns: disks
                    .iter()
                    .map(|(d, _)| vec![(d.clone(), 0, col)])
                    .collect(),
            }];
            Ok((su, col, plan))
        };
        let ncol = disks.len() as u32;
        let (plan, len, layout, layout_name) = match level {
            RaidLevel::Raid0 => {
                let (su, col, plan) = columns(strip_size_kb.unwrap_or(DEFAULT_STRIP_KB))?;
                let layout = if ncol == 1 {
                    PlexLayout::Concat
                } else {
                    PlexLayout::Stripe {
                        ncol,
                        stripe_unit: su,
                    }
                };
                (plan, col * u64::from(ncol), layout, "stripe")
            }
            RaidLevel::Raid5f => {
                // `check_raid5f_strip` and `check_raid5f_count` made sure of the strip size
                // and of ncol >= 3.
                let (su, col, plan) = columns(strip_size_kb.unwrap_or(0))?;
                let layout = PlexLayout::Raid5 {
                    ncol,
                    stripe_unit: su,
                };
                (
                    plan,
                    col * u64::from(ncol.saturating_sub(1)),
                    layout,
                    "raid5",
                )
            }
            RaidLevel::Raid1 => {
                let plan = disks
                    .iter()
                    .map(|(d, _)| PlexAlloc {
                        columns: vec![vec![(d.clone(), 0, min)]],
                    })
                    .collect();
                (plan, min, PlexLayout::Concat, "mirror")
            }
            RaidLevel::Concat => {
                let plan = vec![PlexAlloc {
                    columns: vec![disks.iter().map(|(d, l)| (d.clone(), 0, *l)).collect()],
                }];
                let len = disks.iter().map(|(_, l)| l).sum();
                (plan, len, PlexLayout::Concat, "concat")
            }
        };
        self.create_from_plan(
            g,
            NewVolume {
                name,
                len,
                plan,
                layout,
                layout_name,
                read_policy: ReadPolicy::Select,
                uuid,
                bdev_name: Some(name.to_string()),
                raid_level: Some(level.name().to_string()),
                logs: Vec::new(),
            },
        )
    }

    /// `bdev_raid_delete`: removes raid bdev `name` and frees its base bdevs.
    pub fn raid_delete(&self, name: &str) -> Result<(), VolumeError> {
        self.raid_group(name)?;
        self.volume_delete(name, name)?;
        self.dg_destroy(name)
    }

    fn raid_group(&self, name: &str) -> Result<(), VolumeError> {
        let groups = self.lock();
        let is_raid = groups
            .get(name)
            .and_then(|g| g.cfg.volume(name))
            .is_some_and(|v| v.raid_level.is_some());
        if is_raid {
            Ok(())
        } else {
            Err(VolumeError::NotFound {
                kind: "raid bdev",
                name: name.into(),
            })
        }
    }

    /// `bdev_raid_get_bdevs`: raid bdevs in `category` (all, online, configuring, offline).
    pub fn raid_list(&self, category: &str) -> Result<Vec<RaidInfo>, VolumeError> {
        if !matches!(category, "all" | "online" | "configuring" | "offline") {
            return Err(VolumeError::Invalid(format!(
                "unknown category '{category}': use all, online, configuring or offline"
            )));
        }
        let groups = self.lock();
        let mut out = Vec::new();
        for g in groups.values() {
            for v in g.cfg.volumes.iter().filter(|v| v.raid_level.is_some()) {
                let plexes = g.cfg.plexes_of(&v.name);
                let (operational, serving) = operational_disks(g, &v.name);
                let started = g.volumes.contains_key(&v.name);
                let state = if started && serving {
                    "online"
                } else {
                    "offline"
                };
                if category != "all" && category != state {
                    continue;
                }
                let bs = g.cfg.block_size as u64;
                let strip = plexes
                    .first()
                    .and_then(|p| p.layout.stripe_unit())
                    .map(|su| su * bs / 1024)
                    .unwrap_or(0);
                let mut base: Vec<RaidBaseBdev> = g
                    .cfg
                    .disks
                    .iter()
                    .map(|d| {
                        if d.condition == DiskCondition::Removed {
                            // A raid5f base bdev removed: its slot is empty, as in SPDK.
                            return RaidBaseBdev::default();
                        }
                        let m = g.members.get(&d.name);
                        RaidBaseBdev {
                            name: Some(m.map_or(d.device.clone(), |m| m.bdev.name().to_string())),
                            uuid: m.map(|m| m.bdev.uuid().to_string()),
                            is_configured: m.is_some()
                                && d.condition == DiskCondition::Ok
                                && operational.contains(&d.name),
                            data_offset: d.public_offset,
                            data_size: d.public_len,
                        }
                    })
                    .collect();
                let slots = (v.raid_slots.unwrap_or(0) as usize).max(g.cfg.disks.len());
                // A removed base bdev leaves an empty slot (as SPDK reports it).
                base.resize(slots, RaidBaseBdev::default());
                let discovered = g.members.len();
                out.push(RaidInfo {
                    name: v.bdev(&g.cfg.name),
                    uuid: v.uuid.to_string(),
                    strip_size_kb: strip,
                    state: state.to_string(),
                    raid_level: v.raid_level.clone(),
                    superblock: true,
                    num_base_bdevs: slots as u64,
                    num_base_bdevs_discovered: discovered as u64,
                    num_base_bdevs_operational: operational.len() as u64,
                    base_bdevs_list: base,
                });
            }
        }
        Ok(out)
    }

    /// `bdev_raid_add_base_bdev`: adds `base` to raid1 `raid` as a new mirror, rebuilt in the
    /// background (see `task_list`).
    pub fn raid_add_base(&self, raid: &str, base: &str) -> Result<u64, VolumeError> {
        self.raid_group(raid)?;
        let level = {
            let groups = self.lock();
            groups
                .get(raid)
                .and_then(|g| g.cfg.volume(raid))
                .and_then(|v| v.raid_level.clone())
        };
        if level.as_deref() != Some("raid1") {
            return Err(VolumeError::Invalid(format!(
                "base bdevs can be added only to raid1 bdevs; '{raid}' is {}",
                level.unwrap_or_default()
            )));
        }
        let disk = self.dg_add_disk(raid, base, None, false)?;
        match self.plex_attach(
            raid,
            raid,
            None,
            Some(std::slice::from_ref(&disk)),
            Duration::ZERO,
        ) {
            Ok(id) => Ok(id),
            Err(e) => {
                let _ = self.dg_remove_disk(raid, &disk);
                Err(e)
            }
        }
    }

    /// `bdev_raid_remove_base_bdev`: removes base bdev `base` from the raid1 or raid5f holding
    /// it (refused for raid0 and concat base bdevs).
    pub fn raid_remove_base(&self, base: &str) -> Result<(), VolumeError> {
        // (raid, its level, the disk on `base`, the first plex with a subdisk on it)
        let (raid, level, disk, plex) = {
            let groups = self.lock();
            groups
                .values()
                .find_map(|g| {
                    let level = g.cfg.volumes.iter().find_map(|v| v.raid_level.clone())?;
                    let d = g.cfg.disks.iter().find(|d| {
                        g.members
                            .get(&d.name)
                            .is_some_and(|m| m.bdev.name() == base)
                    })?;
                    let plex = g
                        .cfg
                        .subdisks_on(&d.name)
                        .first()
                        .and_then(|s| s.plex.clone());
                    Some((g.cfg.name.clone(), level, d.name.clone(), plex))
                })
                .ok_or_else(|| VolumeError::NotFound {
                    kind: "raid base bdev",
                    name: base.into(),
                })?
        };
        match level.as_str() {
            "raid1" => {
                if let Some(p) = plex {
                    self.plex_detach(&raid, &p, true)?;
                }
                self.dg_remove_disk(&raid, &disk)
            }
            "raid5f" => self.raid5f_remove_base(&raid, &disk, base),
            other => Err(VolumeError::Invalid(format!(
                "'{base}' belongs to {other} bdev '{raid}', which has no redundancy; only raid1 and raid5f base bdevs can be removed"
            ))),
        }
    }

    /// Removes base bdev `base` (disk `disk`) from raid5f `raid`, as SPDK does: its column is
    /// recorded stale first (the raid goes on degraded, reads of the column reconstructed),
    /// then the bdev leaves the group with its label reset, its slot left empty. Refused when
    /// another column is already missing: the raid would go offline.
    fn raid5f_remove_base(&self, raid: &str, disk: &str, base: &str) -> Result<(), VolumeError> {
        {
            let mut groups = self.lock();
            let g = group_mut(&mut groups, raid)?;
            let plex = raid5_ops::raid5_plex(&g.cfg, raid)
                .cloned()
                .ok_or_else(|| VolumeError::NotFound {
                    kind: "RAID-5 plex of raid bdev",
                    name: raid.into(),
                })?;
            let column = g
                .cfg
                .subdisks_on(disk)
                .iter()
                .find(|s| s.plex.as_deref() == Some(plex.name.as_str()))
                .map(|s| s.column)
                .ok_or_else(|| {
                    VolumeError::Invalid(format!(
                        "base bdev '{base}' holds no column of raid5f '{raid}'"
                    ))
                })?;
            let missing = raid5_ops::missing_columns(g, &plex);
            if let Some(other) = missing.iter().find(|&&c| c != column) {
                return Err(VolumeError::Invalid(format!(
                    "removing '{base}' would take raid5f '{raid}' offline: the base bdev of column {other} is already missing or stale, and a raid5f serves with at most one missing"
                )));
            }
            let bit = 1u64.checked_shl(column).ok_or_else(|| {
                VolumeError::Invalid(format!(
                    "column {column} of raid5f '{raid}' is beyond the 64 plexd tracks"
                ))
            })?;
            self.record_stale_columns(g, raid, &plex.name, bit)?;
        }
        self.dg_release_disk(raid, disk)?;
        tracing::info!(raid = %raid, base = %base, "raid5f base bdev removed: degraded");
        Ok(())
    }
}

/// The disks of raid volume `vol` that hold current data, and whether its data can be served
/// from them. A mirror's disks are those of its in-sync enabled plexes. A RAID-5 plex's are
/// those of its columns with current data (a stale column, or one on a missing disk, is not
/// operational); it serves with one column missing (degraded, as SPDK's raid5f stays online
/// with fewer operational base bdevs) but not with two.
fn operational_disks(g: &Group, vol: &str) -> (Vec<String>, bool) {
    let in_sync = |p: &PlexRecord| p.state.is_in_sync() && p.kstate == KernelState::Enabled;
    if let Some(p) = raid5_ops::raid5_plex(&g.cfg, vol) {
        if !in_sync(p) {
            return (Vec::new(), false);
        }
        let missing = raid5_ops::missing_columns(g, p);
        let disks = g
            .cfg
            .subdisks_of(&p.name)
            .iter()
            .filter(|s| !missing.contains(&s.column))
            .map(|s| s.disk.clone())
            .collect();
        return (disks, missing.len() <= 1);
    }
    let disks: Vec<String> = g
        .cfg
        .plexes_of(vol)
        .iter()
        .filter(|p| in_sync(p))
        .flat_map(|p| g.cfg.subdisks_of(&p.name))
        .map(|s| s.disk.clone())
        .collect();
    (disks, true)
}

/// Registers the `bdev_raid_*` methods.
pub fn register(t: &mut MethodTable, vm: &std::sync::Arc<VolumeManager>) {
    let m = vm.clone();
    t.runtime_typed::<BdevRaidCreate, _>(move |p| {
        if p.superblock == Some(false) {
            tracing::info!(raid = %p.name, "superblock=false: plexd always keeps its configuration on the base bdevs");
        }
        let level = RaidLevel::parse(&p.raid_level)?;
        let base = p.base_bdevs.names();
        let uuid = crate::drivers::params::parse_uuid(p.uuid.as_deref())?;
        m.raid_create(&p.name, level, &base, p.strip_size_kb, uuid)?;
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<BdevRaidDelete, _>(move |p| {
        // `clear_sb` is SPDK's "wipe the superblock": plexd always resets the labels on delete.
        m.raid_delete(&p.name)?;
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<BdevRaidGetBdevs, _>(move |p| {
        Ok(m.raid_list(p.category.as_deref().unwrap_or("all"))?)
    });
    let m = vm.clone();
    t.runtime_typed::<BdevRaidAddBaseBdev, _>(move |p| {
        m.raid_add_base(&p.raid_bdev, &p.base_bdev)?;
        Ok(true)
    });
    let m = vm.clone();
    t.runtime_typed::<BdevRaidRemoveBaseBdev, _>(move |p| {
        m.raid_remove_base(&p.name)?;
        Ok(true)
    });
}
