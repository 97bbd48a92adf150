//! Volume and plex operations: create, delete, start, stop, detach; building the I/O map
//! from the configuration; cleaning up half-done operations at import.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::bdev::blocking::{start_io, BlockingIoError, PendingIo};
use crate::bdev::{BdevSpec, IoType, IoTypeSet};
use crate::volume::error::VolumeError;
use crate::volume::io::driver::{
    self, MapReadPolicy, PlexMap, Raid5Map, VolumeBdev, VolumeMap, VolumeShared,
};
use crate::volume::io::fence::FenceList;
use crate::volume::manager::{check_name, group_mut, was_running, Group, VolumeManager};
use crate::volume::model::alloc::{self, AllocRequest, DiskSpace};
use crate::volume::model::layout::{Column, Extent, PlexGeometry};
use crate::volume::model::objects::{
    DgConfig, DiskCondition, KernelState, PlexLayout, PlexRecord, PlexState, ReadPolicy,
    SubdiskRecord, VolumeRecord, VolumeState, DEFAULT_STRIPE_UNIT_BYTES, MAX_PLEXES,
};
use crate::volume::model::raid5::Raid5Geometry;

/// The layouts `volume_create` accepts.
pub const LAYOUTS: &str = "concat, stripe, mirror, mirror-stripe, stripe-mirror, raid5";

/// What `volume_create` is asked for.
#[derive(Debug, Clone, Default)]
pub struct VolumeCreate {
    /// Disk group.
    pub dg: String,
    /// Volume name.
    pub name: String,
    /// Size in bytes (rounded up to the block size).
    pub size: u64,
    /// Layout (see [`LAYOUTS`]).
    pub layout: String,
    /// Columns for striped and RAID-5 layouts.
    pub ncol: Option<u32>,
    /// Plexes.
    pub nmirror: Option<u32>,
    /// Stripe unit in KiB (default 64; 16 for RAID-5).
    pub stripe_unit_kb: Option<u64>,
    /// Read policy (`round`, `select`, `prefer`).
    pub read_policy: Option<String>,
    /// Plex for the `prefer` policy.
    pub prefer_plex: Option<String>,
    /// Disks (names in the group or bdev names) to allocate from.
    pub alloc: Option<Vec<String>>,
    /// RAID-5: log plexes (default 1 when a disk the columns do not use has room, else 0).
    pub nlog: Option<u32>,
    /// RAID-5: `continue` (default) or `readonly` once no log plex works.
    pub log_failure: Option<String>,
    /// RAID-5: full-stripe writes skip the copy into the row buffer (see
    /// `VolumeRecord::skip_copy`); refused for other layouts.
    pub skip_copy: Option<bool>,
}

/// Free space on the group's usable disks (present, condition OK) in `cfg`, as the allocator
/// sees it: less the ranges under copy writes still in flight from cancelled copies
/// (`fences`), which a new subdisk there would get overwritten by (see `volume::io::fence`).
pub(crate) fn usable_space(g: &Group, cfg: &DgConfig, fences: &FenceList) -> Vec<DiskSpace> {
    cfg.disks
        .iter()
        .filter(|d| d.condition == DiskCondition::Ok)
        .filter_map(|d| {
            let m = g.members.get(&d.name)?;
            let bs = u64::from(cfg.block_size.max(1));
            let reserved: Vec<(u64, u64)> = fences
                .reserved(m.bdev.name())
                .into_iter()
                .map(|(off, len)| {
                    let first = (off / bs).saturating_sub(d.public_offset);
                    let last = (off + len).div_ceil(bs).saturating_sub(d.public_offset);
                    (first, last - first)
                })
                .collect();
            if !reserved.is_empty() {
                tracing::warn!(disk = %d.name, "{} range(s) under copy writes still in flight are not allocated until the disk answers", reserved.len());
            }
            Some(DiskSpace {
                disk: d.name.clone(),
                free: crate::volume::io::fence::subtract(&cfg.free_space(&d.name), &reserved),
                spare: d.spare,
                nohotuse: d.nohotuse,
            })
        })
        .collect()
}

/// The group's disk names for `names`, each a disk name or the bdev it is on.
pub(crate) fn resolve_disks(cfg: &DgConfig, names: &[String]) -> Result<Vec<String>, VolumeError> {
    names
        .iter()
        .map(|d| {
            cfg.disks
                .iter()
                .find(|r| &r.name == d || &r.device == d)
                .map(|r| r.name.clone())
                .ok_or_else(|| {
                    VolumeError::Invalid(format!(
                        "'{d}' is not a disk of disk group '{}'",
                        cfg.name
                    ))
                })
        })
        .collect()
}

/// A volume whose subdisks are chosen, for [`VolumeManager::create_from_plan`].
pub(crate) struct NewVolume<'a> {
    pub(crate) name: &'a str,
    pub(crate) len: u64,
    pub(crate) plan: Vec<alloc::PlexAlloc>,
    pub(crate) layout: PlexLayout,
    pub(crate) layout_name: &'static str,
    pub(crate) read_policy: ReadPolicy,
    pub(crate) uuid: Option<Uuid>,
    pub(crate) bdev_name: Option<String>,
    pub(crate) raid_level: Option<String>,
    /// Log plexes (RAID-5), one subdisk list each, recorded LOG with the volume.
    pub(crate) logs: Vec<alloc::PlexAlloc>,
}

/// Builds the geometry of plex `plex` from its subdisks, with `swap` = (old subdisk, new
/// subdisk) substituted (a subdisk move's shadow plex). Disks are added to `disks`.
pub(crate) fn plex_geometry(
    engine: &crate::Engine,
    g: &Group,
    plex: &PlexRecord,
    swap: Option<(&str, &SubdiskRecord)>,
    disks: &mut Vec<Arc<crate::bdev::Bdev>>,
) -> Result<Option<PlexGeometry>, String> {
    let cfg = &g.cfg;
    let mut sds: Vec<SubdiskRecord> = cfg.subdisks_of(&plex.name).into_iter().cloned().collect();
    if let Some((old, new)) = swap {
        for s in sds.iter_mut().filter(|s| s.name == old) {
            let (column, column_offset, plex) = (s.column, s.column_offset, s.plex.clone());
            *s = new.clone();
            s.column = column;
            s.column_offset = column_offset;
            s.plex = plex;
        }
    }
    // Each piece's bdev and where the piece starts on it: a disk's public region, or a
    // started sub-volume (layered volumes).
    let mut placed = Vec::with_capacity(sds.len());
    for s in &sds {
        let at = match &s.subvolume {
            Some(sv) => g
                .volumes
                .get(sv)
                .and_then(|shared| engine.bdevs().get(shared.name()).ok())
                .map(|b| (b, s.disk_offset)),
            None => match (g.members.get(&s.disk), cfg.disk(&s.disk)) {
                (Some(m), Some(d)) if d.condition == DiskCondition::Ok => {
                    Some((m.bdev.clone(), d.public_offset + s.disk_offset))
                }
                _ => None,
            },
        };
        match at {
            Some(a) => placed.push(a),
            None => return Ok(None),
        }
    }
    if sds.is_empty() {
        return Ok(None);
    }
    let mut columns = vec![Column::default(); plex.layout.ncol() as usize];
    for (s, (bdev, offset)) in sds.iter().zip(placed) {
        let target = match disks.iter().position(|b| b.id() == bdev.id()) {
            Some(i) => i,
            None => {
                disks.push(bdev);
                disks.len() - 1
            }
        };
        columns
            .get_mut(s.column as usize)
            .ok_or_else(|| format!("subdisk {} is in a column plex {} lacks", s.name, plex.name))?
            .extents
            .push(Extent {
                target: target as u32,
                offset,
                len: s.len,
            });
    }
    match plex.layout {
        PlexLayout::Concat => PlexGeometry::concat(columns.remove(0)),
        PlexLayout::Stripe { stripe_unit, .. } => PlexGeometry::stripe(columns, stripe_unit),
        PlexLayout::Raid5 { .. } => {
            return Err(format!(
                "plex {} is a RAID-5 plex: it has no mirror-path geometry",
                plex.name
            ))
        }
    }
    .map(Some)
    .map_err(|e| format!("plex {}: {e}", plex.name))
}

/// Builds the I/O map of volume `vol` from the group's configuration. Plexes that cannot do
/// I/O (detached, on missing disks) are left out; a subdisk move in progress adds its shadow
/// plex (write-only).
pub(crate) fn build_map(
    engine: &crate::Engine,
    g: &Group,
    vol: &str,
    generation: u64,
) -> Result<VolumeMap, String> {
    let cfg = &g.cfg;
    let v = cfg.volume(vol).ok_or_else(|| format!("no volume {vol}"))?;
    let mut disks: Vec<Arc<crate::bdev::Bdev>> = Vec::new();
    if let Some(p) = cfg
        .plexes_of(vol)
        .into_iter()
        .find(|p| matches!(p.layout, PlexLayout::Raid5 { .. }))
    {
        let raid5 = raid5_map(g, p, v.len, &mut disks)?;
        return Ok(VolumeMap {
            generation,
            disks,
            plexes: Vec::new(),
            read_policy: MapReadPolicy::RoundRobin,
            read_source: None,
            enabled: p.kstate == KernelState::Enabled && !g.disabled.contains(vol),
            raid5: Some(raid5),
            drl: None,
        });
    }
    let mut plexes = Vec::new();
    for p in cfg.plexes_of(vol) {
        if p.kstate != KernelState::Enabled {
            continue;
        }
        let Some(geometry) = plex_geometry(engine, g, p, None, &mut disks)? else {
            continue;
        };
        if geometry.len() < v.len {
            return Err(format!(
                "plex {} holds {} blocks, less than the volume's {}",
                p.name,
                geometry.len(),
                v.len
            ));
        }
        let attaching = p.sync_offset.is_some();
        let in_sync = p.state.is_in_sync() && !attaching;
        if let Some(mv) = g.moves.get(vol).filter(|m| m.plex == p.name && in_sync) {
            if let Some(shadow) = plex_geometry(engine, g, p, Some((&mv.old, &mv.new)), &mut disks)?
            {
                plexes.push(PlexMap {
                    name: format!(
                        "{}{}",
                        p.name,
                        crate::volume::manager::reshape::SHADOW_SUFFIX
                    ),
                    geometry: shadow,
                    readable: false,
                    writable: true,
                });
            }
        }
        plexes.push(PlexMap {
            name: p.name.clone(),
            geometry,
            readable: in_sync,
            writable: p.state.is_in_sync() || attaching,
        });
    }
    let read_policy = match &v.read_policy {
        ReadPolicy::Prefer(name) => match plexes.iter().position(|p| &p.name == name) {
            Some(i) => MapReadPolicy::Prefer(i),
            None => MapReadPolicy::RoundRobin,
        },
        _ => MapReadPolicy::RoundRobin,
    };
    let read_source = if v.state == VolumeState::Sync {
        plexes.iter().position(|p| p.readable)
    } else {
        None
    };
    let enabled = plexes.iter().any(|p| p.readable) && !g.disabled.contains(vol);
    Ok(VolumeMap {
        generation,
        disks,
        plexes,
        read_policy,
        read_source,
        enabled,
        raid5: None,
        drl: None,
    })
}

/// Builds the I/O view of RAID-5 plex `plex` of a volume of `len` blocks. A column is
/// missing when it is recorded stale or one of its subdisks is on a disk that is not present
/// and usable; its extents then get targets at or above `disks.len()` (never used). Fails
/// when two columns are missing: the plex cannot serve its data.
pub(crate) fn raid5_map(
    g: &Group,
    plex: &PlexRecord,
    len: u64,
    disks: &mut Vec<Arc<crate::bdev::Bdev>>,
) -> Result<Raid5Map, String> {
    let cfg = &g.cfg;
    let PlexLayout::Raid5 { ncol, stripe_unit } = plex.layout else {
        return Err(format!("plex {} is not a RAID-5 plex", plex.name));
    };
    let sds = cfg.subdisks_of(&plex.name);
    let mut missing: Vec<usize> = plex.stale_columns.iter().map(|&c| c as usize).collect();
    let mut columns = vec![Column::default(); ncol as usize];
    let mut absent = Vec::new();
    for s in &sds {
        let col = columns
            .get_mut(s.column as usize)
            .ok_or_else(|| format!("subdisk {} is in a column plex {} lacks", s.name, plex.name))?;
        let at = match (g.members.get(&s.disk), cfg.disk(&s.disk)) {
            (Some(m), Some(d)) if d.condition == DiskCondition::Ok => {
                Some((m.bdev.clone(), d.public_offset + s.disk_offset))
            }
            _ => None,
        };
        match at {
            Some((bdev, offset)) => {
                let target = match disks.iter().position(|b| b.id() == bdev.id()) {
                    Some(i) => i,
                    None => {
                        disks.push(bdev);
                        disks.len() - 1
                    }
                };
                col.extents.push(Extent {
                    target: target as u32,
                    offset,
                    len: s.len,
                });
            }
            None => {
                if !missing.contains(&(s.column as usize)) {
                    missing.push(s.column as usize);
                }
                absent.push((s.column as usize, col.extents.len(), s.disk_offset, s.len));
                col.extents.push(Extent {
                    target: 0,
                    offset: s.disk_offset,
                    len: s.len,
                });
            }
        }
    }
    // The logs' disks first: the targets below are past every disk of the map.
    let (logs, log_epoch, log_slots) = raid5_logs(g, plex, ncol, stripe_unit, disks);
    // Extents on absent disks: a target per column above every present disk, so no two
    // columns share one and none is a real disk.
    for (c, i, _, _) in absent {
        columns[c].extents[i].target = (disks.len() + c) as u32;
    }
    missing.sort_unstable();
    missing.dedup();
    if missing.len() > 1 {
        return Err(format!(
            "RAID-5 plex {} has {} columns without current data (columns {:?}): it cannot serve its data; replace the failed disks or force a start",
            plex.name,
            missing.len(),
            missing
        ));
    }
    let geometry =
        Raid5Geometry::new(columns, stripe_unit).map_err(|e| format!("plex {}: {e}", plex.name))?;
    if geometry.len() < len {
        return Err(format!(
            "plex {} holds {} blocks, less than the volume's {len}",
            plex.name,
            geometry.len()
        ));
    }
    let missing = missing.first().copied();
    let had_logs = plex.volume.as_deref().is_some_and(|v| {
        cfg.plexes_of(v)
            .iter()
            .any(|p| matches!(p.state, PlexState::Log | PlexState::Badlog))
    });
    let record = plex.volume.as_deref().and_then(|v| cfg.volume(v));
    let read_only = had_logs
        && logs.is_empty()
        && record
            .is_some_and(|v| v.log_failure == crate::volume::model::objects::LogFailure::Readonly);
    // The volume's choice, which does not apply while a log plex works (see
    // `VolumeRecord::skip_copy`).
    let skip_copy = logs.is_empty() && record.is_some_and(|v| v.skip_copy);
    Ok(Raid5Map {
        read_only,
        skip_copy,
        logs,
        log_epoch,
        log_slots,
        plex: plex.name.clone(),
        geometry,
        // A stale column whose disks are all present is rebuilt in place (its checkpoint,
        // in rows, is the plex's `sync_offset`).
        rebuilding: missing.is_some() && plex.sync_offset.is_some(),
        resyncing: missing.is_none()
            && cfg.volumes.iter().any(|v| {
                Some(v.name.as_str()) == plex.volume.as_deref() && v.state == VolumeState::Sync
            }),
        missing,
    })
}

/// The usable log plexes of RAID-5 plex `plex` (state LOG, enabled, every subdisk on a
/// present disk, at least a whole log long) and the epoch to write, adding their disks to
/// `disks`.
fn raid5_logs(
    g: &Group,
    plex: &PlexRecord,
    ncol: u32,
    su: u64,
    disks: &mut Vec<Arc<crate::bdev::Bdev>>,
) -> (Vec<driver::Raid5Log>, u64, u64) {
    use crate::volume::model::raid5_log::{slots_in, MIN_LOG_SLOTS};
    let cfg = &g.cfg;
    let mut logs = Vec::new();
    let mut slots = u64::MAX;
    let Some(vol) = plex.volume.as_deref() else {
        return (logs, plex.log_epoch, 0);
    };
    for lp in cfg.plexes_of(vol) {
        if lp.state != PlexState::Log || lp.kstate != KernelState::Enabled {
            continue;
        }
        let mut col = Column::default();
        let mut ok = true;
        for s in cfg.subdisks_of(&lp.name) {
            match (g.members.get(&s.disk), cfg.disk(&s.disk)) {
                (Some(m), Some(d)) if d.condition == DiskCondition::Ok => {
                    let target = match disks.iter().position(|b| b.id() == m.bdev.id()) {
                        Some(i) => i,
                        None => {
                            disks.push(m.bdev.clone());
                            disks.len() - 1
                        }
                    };
                    col.extents.push(Extent {
                        target: target as u32,
                        offset: d.public_offset + s.disk_offset,
                        len: s.len,
                    });
                }
                _ => ok = false,
            }
        }
        match PlexGeometry::concat(col) {
            Ok(geometry) if ok && slots_in(geometry.len(), ncol, su) >= MIN_LOG_SLOTS => {
                slots = slots.min(slots_in(geometry.len(), ncol, su));
                logs.push(driver::Raid5Log {
                    plex: lp.name.clone(),
                    geometry,
                })
            }
            _ => {}
        }
    }
    if logs.is_empty() {
        slots = 0;
    }
    (logs, plex.log_epoch, slots)
}

/// Cleans up what a crash left half done, before the imported configuration is committed:
/// creations that never finished are rolled back, removals rolled forward, plexes on
/// missing disks detached and marked STALE (a disk that comes back is never trusted as in
/// sync).
pub(crate) fn recover_at_import(cfg: &mut DgConfig, _lagging: &[String], g: &Group) {
    // Volumes whose creation did not finish.
    let unfinished: Vec<String> = cfg
        .volumes
        .iter()
        .filter(|v| {
            v.state == VolumeState::Empty
                && cfg
                    .plexes_of(&v.name)
                    .iter()
                    .any(|p| p.state == PlexState::Temp)
        })
        .map(|v| v.name.clone())
        .collect();
    for v in unfinished {
        tracing::warn!(dg = %cfg.name, volume = %v, "rolling back a volume creation that did not finish");
        remove_volume(cfg, &v);
    }
    // Log plexes whose attach did not finish (still TEMP next to a RAID-5 plex): removed.
    let half_logs: Vec<String> = cfg
        .plexes
        .iter()
        .filter(|p| p.state == PlexState::Temp && p.layout == PlexLayout::Concat)
        .filter(|p| {
            p.volume.as_deref().is_some_and(|v| {
                cfg.plexes_of(v)
                    .iter()
                    .any(|q| matches!(q.layout, PlexLayout::Raid5 { .. }))
            }) && cfg
                .volume(p.volume.as_deref().unwrap_or_default())
                .is_some_and(|v| v.state != VolumeState::Empty)
        })
        .map(|p| p.name.clone())
        .collect();
    for p in half_logs {
        tracing::warn!(dg = %cfg.name, plex = %p, "removing a RAID-5 log plex whose attach did not finish");
        remove_plex(cfg, &p, true);
    }
    // Plex removals in progress: finish them.
    let removing: Vec<(String, PlexState)> = cfg
        .plexes
        .iter()
        .filter(|p| matches!(p.state, PlexState::Temprm | PlexState::Temprmsd))
        .map(|p| (p.name.clone(), p.state))
        .collect();
    for (p, st) in removing {
        tracing::warn!(dg = %cfg.name, plex = %p, "finishing a plex removal that did not finish");
        remove_plex(cfg, &p, st == PlexState::Temprmsd);
    }
    // Subdisks no plex owns are what an unfinished grow or move left behind.
    let orphans: Vec<String> = cfg
        .subdisks
        .iter()
        .filter(|s| s.plex.is_none())
        .map(|s| s.name.clone())
        .collect();
    for sd in &orphans {
        tracing::warn!(dg = %cfg.name, subdisk = %sd, "removing a subdisk an unfinished grow or move left behind");
    }
    cfg.subdisks.retain(|s| s.plex.is_some());
    // Plexes on disks that are missing or failed.
    let bad_disks: Vec<String> = cfg
        .disks
        .iter()
        .filter(|d| d.condition != DiskCondition::Ok || !g.members.contains_key(&d.name))
        .map(|d| d.name.clone())
        .collect();
    let hit: Vec<(String, u32)> = cfg
        .subdisks
        .iter()
        .filter(|s| bad_disks.contains(&s.disk))
        .filter_map(|s| s.plex.clone().map(|p| (p, s.column)))
        .collect();
    // A RAID-5 plex keeps running without the column (degraded; two such columns and it
    // cannot start): the column is stale for good, a disk that comes back missed writes.
    for p in cfg
        .plexes
        .iter_mut()
        .filter(|p| matches!(p.layout, PlexLayout::Raid5 { .. }))
    {
        for (_, c) in hit.iter().filter(|(n, _)| *n == p.name) {
            if !p.stale_columns.contains(c) {
                tracing::warn!(dg = %cfg.name, plex = %p.name, column = c, "RAID-5 column on a missing disk: recorded stale");
                p.stale_columns.push(*c);
            }
        }
    }
    let hit: Vec<String> = hit.into_iter().map(|(p, _)| p).collect();
    for p in cfg
        .plexes
        .iter_mut()
        .filter(|p| hit.contains(&p.name) && !matches!(p.layout, PlexLayout::Raid5 { .. }))
    {
        if p.kstate == KernelState::Enabled {
            tracing::warn!(dg = %cfg.name, plex = %p.name, "plex has subdisks on a missing disk: detached, STALE");
            p.kstate = KernelState::Detached;
        }
        if p.state.is_in_sync() {
            p.state = PlexState::Stale;
        }
        p.sync_offset = None;
    }
}

/// Removes a volume, its plexes and their subdisks from `cfg`.
pub(crate) fn remove_volume(cfg: &mut DgConfig, vol: &str) {
    let subs: Vec<String> = cfg
        .volumes
        .iter()
        .filter(|v| v.parent.as_deref() == Some(vol))
        .map(|v| v.name.clone())
        .collect();
    for sv in subs {
        remove_volume(cfg, &sv);
    }
    let plexes: Vec<String> = cfg.plexes_of(vol).iter().map(|p| p.name.clone()).collect();
    for p in plexes {
        remove_plex(cfg, &p, true);
    }
    cfg.volumes.retain(|v| v.name != vol);
}

/// Removes a plex from `cfg`, deleting its subdisks (`with_subdisks`) or leaving them
/// dissociated.
fn remove_plex(cfg: &mut DgConfig, plex: &str, with_subdisks: bool) {
    if with_subdisks {
        cfg.subdisks.retain(|s| s.plex.as_deref() != Some(plex));
    } else {
        for s in cfg.subdisks.iter_mut() {
            if s.plex.as_deref() == Some(plex) {
                s.plex = None;
            }
        }
    }
    cfg.plexes.retain(|p| p.name != plex);
}

fn parse_read_policy(p: Option<&str>, prefer: Option<&str>) -> Result<ReadPolicy, VolumeError> {
    match (p.unwrap_or("select"), prefer) {
        ("select", None) => Ok(ReadPolicy::Select),
        ("round", None) => Ok(ReadPolicy::Round),
        ("prefer", Some(pl)) => Ok(ReadPolicy::Prefer(pl.to_string())),
        ("prefer", None) => Err(VolumeError::Invalid(
            "read_policy prefer needs prefer_plex, the plex to read from".into(),
        )),
        (_, Some(_)) => Err(VolumeError::Invalid(
            "prefer_plex is only meaningful with read_policy prefer".into(),
        )),
        (other, _) => Err(VolumeError::Invalid(format!(
            "unknown read_policy '{other}': use round, select or prefer"
        ))),
    }
}

impl VolumeManager {
    /// Creates a volume: allocates its subdisks, records it (plexes TEMP), zeroes them (a new
    /// volume never shows an old one's data, and mirrors start identical), records it CLEAN
    /// and starts it as bdev `<dg>/<name>`.
    pub fn volume_create(&self, req: &VolumeCreate) -> Result<String, VolumeError> {
        check_name("volume", &req.name)?;
        let mut groups = self.lock();
        let g = group_mut(&mut groups, &req.dg)?;
        let cfg0 = g.cfg.clone();
        if cfg0.name_taken(&req.name) {
            return Err(VolumeError::Exists {
                kind: "object",
                name: format!("{}/{}", req.dg, req.name),
            });
        }
        self.engine
            .bdevs()
            .check_free(&format!("{}/{}", req.dg, req.name))?;
        let bs = cfg0.block_size as u64;
        if req.size == 0 {
            return Err(VolumeError::Invalid("size must be greater than 0".into()));
        }
        let len = req.size.div_ceil(bs);
        let (striped, default_mirrors) = match req.layout.as_str() {
            "concat" => (false, 1),
            "stripe" => (true, 1),
            "mirror" => (false, 2),
            "mirror-stripe" => (true, 2),
            "stripe-mirror" => (true, 2),
            "raid5" => return self.create_raid5(g, req, len),
            other => {
                return Err(VolumeError::Invalid(format!(
                    "unknown layout '{other}': use one of {LAYOUTS}"
                )))
            }
        };
        if req.skip_copy == Some(true) {
            return Err(skip_copy_not_raid5(&req.layout));
        }
        let nmirror = req.nmirror.unwrap_or(default_mirrors);
        if nmirror == 0 || nmirror as usize > MAX_PLEXES {
            return Err(VolumeError::Invalid(format!(
                "nmirror {nmirror} is out of range: a volume has 1 to {MAX_PLEXES} plexes"
            )));
        }
        if !striped && req.ncol.is_some_and(|n| n != 1) {
            return Err(VolumeError::Invalid(format!(
                "ncol is for striped layouts; layout {} has one column",
                req.layout
            )));
        }
        let usable_disks = cfg0
            .disks
            .iter()
            .filter(|d| d.condition == DiskCondition::Ok && !d.spare)
            .count() as u32;
        let ncol = if striped {
            req.ncol
                .unwrap_or_else(|| (usable_disks / nmirror).clamp(2, 8))
        } else {
            1
        };
        if striped && ncol < 2 {
            return Err(VolumeError::Invalid(format!(
                "a stripe needs at least 2 columns, not {ncol}"
            )));
        }
        let su_bytes = req
            .stripe_unit_kb
            .map_or(DEFAULT_STRIPE_UNIT_BYTES, |k| k.saturating_mul(1024));
        if striped && (su_bytes == 0 || !su_bytes.is_multiple_of(bs)) {
            return Err(VolumeError::Invalid(format!(
                "stripe_unit_kb must be a non-zero multiple of the block size ({bs} bytes)"
            )));
        }
        let stripe_unit = su_bytes / bs;
        let read_policy =
            parse_read_policy(req.read_policy.as_deref(), req.prefer_plex.as_deref())?;
        let alloc_disks = req
            .alloc
            .as_deref()
            .map(|l| resolve_disks(&cfg0, l))
            .transpose()?;
        let space = usable_space(g, &cfg0, self.tasks.fences());
        let plan = alloc::allocate(
            &space,
            &AllocRequest {
                len,
                nmirror,
                ncol,
                stripe_unit: if striped { stripe_unit } else { 1 },
                disks: alloc_disks,
                exclude: Vec::new(),
            },
        )?;
        if req.layout == "stripe-mirror" {
            return self.create_layered(g, &req.name, len, plan, stripe_unit, read_policy);
        }
        let layout_name = match (striped, nmirror > 1) {
            (false, false) => "concat",
            (true, false) => "stripe",
            (false, true) => "mirror",
            (true, true) => "mirror-stripe",
        };
        self.create_from_plan(
            g,
            NewVolume {
                name: &req.name,
                len,
                plan,
                layout: if striped {
                    PlexLayout::Stripe { ncol, stripe_unit }
                } else {
                    PlexLayout::Concat
                },
                layout_name,
                read_policy,
                uuid: None,
                bdev_name: None,
                raid_level: None,
                logs: Vec::new(),
            },
        )
    }

    /// Records, zeroes and starts a volume whose subdisks are already chosen.
    pub(crate) fn create_from_plan(
        &self,
        g: &mut Group,
        nv: NewVolume<'_>,
    ) -> Result<String, VolumeError> {
        let dg = g.cfg.name.clone();
        let name = nv.name;
        let mut read_policy = nv.read_policy;
        // Record the volume with its plexes TEMP: a crash before it is finished rolls it back.
        let mut cfg = g.cfg.clone();
        let mut plex_names = Vec::new();
        for pa in &nv.plan {
            plex_names.push(cfg.add_plex(
                name,
                nv.layout,
                PlexState::Temp,
                KernelState::Disabled,
                &pa.columns,
            ));
        }
        let mut log_names = Vec::new();
        for la in &nv.logs {
            log_names.push(cfg.add_plex(
                name,
                PlexLayout::Concat,
                PlexState::Temp,
                KernelState::Disabled,
                &la.columns,
            ));
        }
        if let ReadPolicy::Prefer(p) = &read_policy {
            // Accept "01" style shorthands as well as full plex names.
            if !plex_names.contains(p) {
                let full = format!("{name}-{p}");
                if plex_names.contains(&full) {
                    read_policy = ReadPolicy::Prefer(full);
                } else {
                    return Err(VolumeError::Invalid(format!(
                        "prefer_plex '{p}' is not one of the new volume's plexes ({})",
                        plex_names.join(", ")
                    )));
                }
            }
        }
        let record = VolumeRecord {
            name: name.to_string(),
            uuid: nv.uuid.unwrap_or_else(Uuid::new_v4),
            len: nv.len,
            state: VolumeState::Empty,
            kstate: KernelState::Disabled,
            read_policy,
            layout: nv.layout_name.to_string(),
            autostart: false,
            resync_offset: None,
            bdev_name: nv.bdev_name,
            raid_slots: nv.raid_level.as_ref().map(|_| g.cfg.disks.len() as u32),
            raid_level: nv.raid_level,
            parent: None,
            log_failure: Default::default(),
            skip_copy: false,
            drl: None,
            resync_mode: Default::default(),
        };
        let bdev_name = record.bdev(&dg);
        self.engine.bdevs().check_free(&bdev_name)?;
        if self
            .engine
            .bdevs()
            .list()
            .iter()
            .any(|b| b.uuid() == record.uuid)
        {
            return Err(VolumeError::Exists {
                kind: "bdev with uuid",
                name: record.uuid.to_string(),
            });
        }
        cfg.volumes.push(record);
        g.commit(&self.engine, cfg.clone())?;
        // A new volume reads as zeroes (never as an old volume's data), and mirrors start
        // identical.
        let zeroed: Vec<String> = plex_names.iter().chain(&log_names).cloned().collect();
        if let Err(f) = self.zero_subdisks(g, &zeroed) {
            return Err(self.zeroing_failed(g, f, |back| remove_volume(back, name)));
        }
        for p in cfg.plexes.iter_mut() {
            if plex_names.contains(&p.name) {
                p.state = PlexState::Clean;
                p.kstate = KernelState::Enabled;
            }
            if log_names.contains(&p.name) {
                p.state = PlexState::Log;
                p.kstate = KernelState::Enabled;
            }
        }
        if let Some(v) = cfg.volume_mut(name) {
            v.state = VolumeState::Clean;
            v.autostart = true;
        }
        g.commit(&self.engine, cfg)?;
        self.start_volume(g, name)?;
        tracing::info!(dg = %dg, volume = %name, layout = nv.layout_name, blocks = nv.len, "volume created");
        Ok(bdev_name)
    }

    /// Zeroes the subdisks of `plexes` (see [`VolumeManager::zero_extents`]).
    pub(crate) fn zero_subdisks(&self, g: &Group, plexes: &[String]) -> Result<(), ZeroFailed> {
        let sds: Vec<SubdiskRecord> = plexes
            .iter()
            .flat_map(|p| g.cfg.subdisks_of(p))
            .cloned()
            .collect();
        self.zero_extents(g, &sds)
    }

    /// Writes zeroes over the given subdisks (write-zeroes where the disk has it), waiting
    /// [`VolumeManager::zero_wait`] at most for each write; one that did not complete by then
    /// is handed back in the error (it may still land).
    pub(crate) fn zero_extents(&self, g: &Group, sds: &[SubdiskRecord]) -> Result<(), ZeroFailed> {
        const CHUNK: u64 = 64 << 20;
        #[cfg(test)]
        if let Some(f) = self
            .before_zeroing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            f();
        }
        let bs = g.cfg.block_size as u64;
        // Only for disks without write-zeroes: one buffer of zeroes, written chunk by chunk.
        let mut zeroes: Vec<u8> = Vec::new();
        for s in sds {
            let (Some(m), Some(d)) = (g.members.get(&s.disk), g.cfg.disk(&s.disk)) else {
                return Err(VolumeError::NotFound {
                    kind: "disk",
                    name: s.disk.clone(),
                }
                .into());
            };
            let start = (d.public_offset + s.disk_offset) * bs;
            let end = start + s.len * bs;
            let native = m.bdev.io_types().contains(IoType::WriteZeroes);
            let mut at = start;
            while at < end {
                let n = (end - at).min(CHUNK);
                let (op, data) = if native {
                    (IoType::WriteZeroes, None)
                } else {
                    zeroes.resize(n as usize, 0);
                    (IoType::Write, Some(&zeroes[..n as usize]))
                };
                let io = start_io(&self.engine, 0, &m.bdev, op, at, n, data)
                    .map_err(|e| VolumeError::Disk(e.into()))?;
                match io.wait(self.zero_wait()) {
                    Ok(_) => {}
                    Err(e @ BlockingIoError::TimedOut(_)) => {
                        return Err(ZeroFailed {
                            error: VolumeError::Disk(e.into()),
                            pending: Some(Box::new((io, s.clone()))),
                        })
                    }
                    Err(e) => return Err(VolumeError::Disk(e.into()).into()),
                }
                at += n;
            }
        }
        // The zeroes are on the media before a commit says the space is zeroed.
        crate::volume::manager::flush_disks(
            &self.engine,
            sds.iter()
                .filter_map(|s| g.members.get(&s.disk).map(|m| &m.bdev)),
        )
        .map_err(ZeroFailed::from)
    }

    /// Undoes a create or grow whose zeroing failed: `rollback` removes what it added from a
    /// copy of the configuration, which is committed. A subdisk under a zero write that did
    /// not complete stays allocated (an orphan) until that write has, so the late zeroes
    /// never land in space given to another volume; then it is freed (or at the next import).
    pub(crate) fn zeroing_failed(
        &self,
        g: &mut Group,
        f: ZeroFailed,
        rollback: impl FnOnce(&mut DgConfig),
    ) -> VolumeError {
        let dg = g.cfg.name.clone();
        let mut back = g.cfg.clone();
        rollback(&mut back);
        let mut kept = None;
        if let Some((io, sd)) = f.pending.map(|b| *b) {
            back.subdisks.retain(|s| s.name != sd.name);
            let orphan = SubdiskRecord { plex: None, ..sd };
            back.subdisks.push(orphan.clone());
            kept = Some((io, orphan));
        }
        if let Err(e) = g.commit(&self.engine, back) {
            tracing::error!(dg = %dg, "cannot roll back after the zeroing failed ({}): {e}; the next import rolls it back", f.error);
            return f.error;
        }
        if let Some((io, sd)) = kept {
            tracing::warn!(dg = %dg, subdisk = %sd.name, disk = %sd.disk, "a zeroing write did not complete within {:?}; the subdisk stays allocated until it does", self.zero_wait());
            self.free_when_zeroed(dg, io, sd);
        }
        f.error
    }

    /// Frees orphan subdisk `sd` of group `dg` once the zero write `io` completed.
    fn free_when_zeroed(&self, dg: String, io: PendingIo, sd: SubdiskRecord) {
        let me = self.me.clone();
        let spawned = std::thread::Builder::new()
            .name("volume-zeroing".into())
            .spawn(move || {
                while let Err(BlockingIoError::TimedOut(_)) = io.wait(Duration::from_secs(60)) {
                    tracing::warn!(dg = %dg, subdisk = %sd.name, disk = %sd.disk, "a zeroing write still has not completed; the subdisk stays allocated");
                }
                let Some(vm) = me.upgrade() else {
                    return;
                };
                let mut groups = vm.lock();
                let Some(g) = groups.get_mut(&dg) else {
                    return;
                };
                let mut cfg = g.cfg.clone();
                cfg.subdisks.retain(|s| {
                    !(s.plex.is_none()
                        && s.name == sd.name
                        && s.disk == sd.disk
                        && s.disk_offset == sd.disk_offset)
                });
                if cfg.subdisks.len() == g.cfg.subdisks.len() {
                    return;
                }
                match g.commit(&vm.engine, cfg) {
                    Ok(()) => tracing::info!(dg = %dg, subdisk = %sd.name, "the late zeroing write completed; subdisk freed"),
                    Err(e) => tracing::warn!(dg = %dg, subdisk = %sd.name, "cannot free the subdisk after its late zeroing write: {e}; the next import frees it"),
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the thread that frees a subdisk after a late zeroing write: {e}; the next import frees it");
        }
    }

    /// Starts a volume: registers bdev `<dg>/<name>`. A volume that was running when plexd
    /// died (state ACTIVE) with more than one in-sync plex is started in SYNC: reads come from
    /// one plex while a resync makes the others equal to it.
    pub fn volume_start(&self, dg: &str, name: &str) -> Result<(), VolumeError> {
        self.volume_start_with(dg, name, false)
    }

    /// [`VolumeManager::volume_start`]; `force` also starts a RAID-5 volume that crashed
    /// while degraded (its parity cannot be resynchronised without the missing column, so the
    /// reconstructed column may be wrong where the crash tore a write).
    pub fn volume_start_with(&self, dg: &str, name: &str, force: bool) -> Result<(), VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        if g.cfg.volume(name).is_none() {
            return Err(not_found_volume(dg, name));
        }
        refuse_subvolume(g, name, "start")?;
        if g.volumes.contains_key(name) {
            return Err(VolumeError::Busy(format!(
                "volume {dg}/{name} is already started"
            )));
        }
        self.start_volume_with(g, name, force)
    }

    /// Stops a volume (refused while it is exported): its bdev goes away and it is not started
    /// at the next import. It is recorded CLEAN only if its requests in flight finished within
    /// the stop wait (see [`VolumeManager::set_stop_wait`]), every write failure was recorded
    /// and its disks were flushed; otherwise it stays ACTIVE and resyncs at its next start.
    pub fn volume_stop(&self, dg: &str, name: &str) -> Result<(), VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        if g.cfg.volume(name).is_none() {
            return Err(not_found_volume(dg, name));
        }
        refuse_subvolume(g, name, "stop")?;
        if !g.volumes.contains_key(name) {
            return Err(VolumeError::Invalid(format!(
                "volume {dg}/{name} is not started"
            )));
        }
        self.stop_volume(g, name, false)
    }

    pub(crate) fn start_volume(&self, g: &mut Group, name: &str) -> Result<(), VolumeError> {
        self.start_volume_with(g, name, false)
    }

    /// Starts a volume; `force` starts a RAID-5 volume that crashed while degraded (its
    /// parity cannot be resynchronised without the missing column, so the reconstructed
    /// column may be wrong where a write was torn).
    pub(crate) fn start_volume_with(
        &self,
        g: &mut Group,
        name: &str,
        force: bool,
    ) -> Result<(), VolumeError> {
        let dg = g.cfg.name.clone();
        let raid5 = crate::volume::manager::raid5_tasks::raid5_plex(g, name);
        if let (true, Some(p)) = (force, raid5.as_deref()) {
            self.trust_last_failed_column(g, name, p)?;
        }
        let raid5_degraded = raid5
            .as_deref()
            .is_some_and(|p| crate::volume::manager::raid5_tasks::raid5_degraded(g, p));
        // A RAID-5 volume that crashed with a log: its log makes every torn row whole again,
        // before anything else touches the volume.
        let replayed = match (&raid5, g.cfg.volume(name)) {
            (Some(_), Some(v)) if was_running(v.state) && v.kstate == KernelState::Enabled => {
                self.replay_raid5_log(g, name)?
            }
            _ => None,
        };
        let mut cfg = g.cfg.clone();
        let readable: Vec<String> = cfg
            .plexes_of(name)
            .iter()
            .filter(|p| p.state.is_in_sync() && p.kstate == KernelState::Enabled)
            .map(|p| p.name.clone())
            .collect();
        if readable.is_empty() {
            return Err(VolumeError::Invalid(format!(
                "volume {dg}/{name} has no plex with current data (every plex is stale, detached or on a missing disk); attach or recover a plex first"
            )));
        }
        let Some(v) = cfg.volume_mut(name) else {
            return Err(not_found_volume(&dg, name));
        };
        let mut needs_sync = was_running(v.state) && (readable.len() > 1 || raid5.is_some());
        if replayed.is_some() {
            // The log covered the crash: only a resync an earlier crash left unfinished
            // remains (which needs every column).
            needs_sync = v.state == VolumeState::Sync && !raid5_degraded;
        }
        // Still ENABLED means plexd died while the volume ran: writes after the last
        // checkpoint may have reached only some plexes, so copies start over. After a clean
        // stop (DISABLED) they resume from their checkpoints.
        let crashed = v.kstate == KernelState::Enabled;
        if needs_sync && raid5_degraded && replayed.is_none() {
            // A RAID-5 volume's parity resync needs every column; without one, a row whose
            // write was torn by the crash reconstructs the missing column wrongly.
            if !force {
                return Err(VolumeError::Invalid(format!(
                    "RAID-5 volume {dg}/{name} was not stopped cleanly and has a column without current data: a write torn by the crash would make that column read back wrong, and its parity cannot be resynchronised without it; bring the missing disk back, or start it with force to accept that risk"
                )));
            }
            tracing::warn!(dg = %dg, volume = %name, "starting a crashed, degraded RAID-5 volume by force: rows whose writes the crash tore may read back wrong in the missing column");
            needs_sync = false;
            v.resync_offset = None;
        }
        v.state = if needs_sync {
            VolumeState::Sync
        } else {
            VolumeState::Active
        };
        if needs_sync && (crashed || v.resync_offset.is_none()) {
            v.resync_offset = Some(0);
        }
        v.kstate = KernelState::Enabled;
        v.autostart = true;
        let (uuid, len) = (v.uuid, v.len);
        for p in cfg.plexes.iter_mut() {
            if p.volume.as_deref() == Some(name) && p.state == PlexState::Clean {
                p.state = PlexState::Active;
            }
            // Log entries of earlier runs are never replayed again.
            if p.volume.as_deref() == Some(name) && matches!(p.layout, PlexLayout::Raid5 { .. }) {
                p.log_epoch += 1;
            }
            if p.volume.as_deref() == Some(name) && crashed && p.sync_offset.is_some() {
                p.sync_offset = Some(0);
            }
        }
        // Restarting is the administrator's way back from a disabled volume.
        g.disabled.remove(name);
        // The volume is recorded ACTIVE (dirty) before any write can reach it.
        g.commit(&self.engine, cfg)?;
        // A layered volume's columns are sub-volumes: they run first, and stop again if the
        // volume itself cannot start (nothing else would stop them).
        if let Err(e) = self.start_subvolumes(g, name) {
            self.abandon_subvolumes(g, name);
            return Err(e);
        }
        g.generation += 1;
        let map = match build_map(&self.engine, g, name, g.generation) {
            Ok(m) => m,
            Err(e) => {
                self.abandon_subvolumes(g, name);
                return Err(VolumeError::Invalid(e));
            }
        };
        let io_types = volume_io_types(&map);
        let bdev_name = g
            .cfg
            .volume(name)
            .map_or_else(|| format!("{dg}/{name}"), |v| v.bdev(&dg));
        let shared = VolumeShared::new(
            bdev_name.clone(),
            &dg,
            name,
            map,
            g.cfg.block_size,
            self.events.clone(),
        );
        // Copy writes fenced before a restart still hold their chunks (before any I/O).
        self.tasks.fences().carry_over(&dg, name, shared.barrier());
        let spec = BdevSpec {
            name: bdev_name,
            aliases: Vec::new(),
            uuid: Some(uuid),
            block_size: g.cfg.block_size,
            num_blocks: len,
            io_types,
        };
        if let Err(e) = self.engine.add_bdev(
            spec,
            Box::new(VolumeBdev::new(
                shared.clone(),
                crate::volume::manager::raid_config::saved_config(g, name),
            )),
        ) {
            self.abandon_subvolumes(g, name);
            return Err(e.into());
        }
        g.volumes.insert(name.to_string(), shared);
        if raid5.is_some() {
            self.start_raid5_tasks(g, name);
        } else {
            if needs_sync {
                self.start_resync(g, name);
            }
            self.resume_attaches(g, name);
        }
        Ok(())
    }

    pub(crate) fn stop_volume(
        &self,
        g: &mut Group,
        name: &str,
        shutting_down: bool,
    ) -> Result<(), VolumeError> {
        let dg = g.cfg.name.clone();
        let bdev_name = g
            .cfg
            .volume(name)
            .map_or_else(|| format!("{dg}/{name}"), |v| v.bdev(&dg));
        // Requests in flight hold the bdev: while it lives after the stop, they have not
        // completed.
        let mut bdev = std::sync::Weak::new();
        if let Ok(b) = self.engine.bdevs().get(&bdev_name) {
            if let Some(owner) = b.claimed_by() {
                return Err(VolumeError::Busy(format!(
                    "volume {bdev_name} is in use by {owner}; release it first"
                )));
            }
            bdev = Arc::downgrade(&b);
        }
        self.tasks.cancel_volume(&dg, name);
        let deadline = std::time::Instant::now() + self.stop_wait();
        let drained = self.engine.delete_bdev_within(
            &bdev_name,
            Some(driver::PRODUCT_NAME),
            self.stop_wait(),
        )?;
        let shared = g.volumes.remove(name);
        // Copy writes of cancelled copies still in flight (bounded by the same wait).
        let fenced = self.tasks.fences().wait_volume(&dg, name, deadline);
        // Queued read repairs of this volume do nothing from now on (they check that their
        // volume still runs); a running one was cancelled with the volume's tasks, its write
        // fenced if the disk had not answered.
        if let (false, Some(s)) = (drained, &shared) {
            g.lingering
                .entry(name.to_string())
                .or_default()
                .push(Lingering::of(s, bdev));
        }
        // CLEAN vouches for every plex holding every write: only once every request finished,
        // every failure was recorded and every disk is flushed.
        let unclean = if !drained {
            Some("requests were still in flight when the stop stopped waiting".to_string())
        } else if !fenced.is_empty() {
            Some(format!(
                "copy writes to {} were still in flight when the stop stopped waiting",
                fenced.join(", ")
            ))
        } else if g.disabled.contains(name) {
            Some("a failure could not be recorded (the volume is disabled)".to_string())
        } else if shared.as_ref().is_some_and(|s| !s.events_handled()) {
            Some("a write failure was not recorded yet".to_string())
        } else {
            let disks = shared.as_ref().map(|s| s.map().disks.clone());
            crate::volume::manager::flush_disks(&self.engine, disks.iter().flatten())
                .err()
                .map(|e| e.to_string())
        };
        if let Some(why) = &unclean {
            tracing::warn!(dg = %dg, volume = %name, "{why}: the volume stays ACTIVE and resyncs at its next start");
        }
        let clean = unclean.is_none();
        // Its map holds its sub-volumes' bdevs: let go before they are stopped below.
        drop(shared);
        let mut cfg = g.cfg.clone();
        let syncing = cfg
            .volume(name)
            .is_some_and(|v| v.state == VolumeState::Sync);
        if let Some(v) = cfg.volume_mut(name) {
            if clean && !syncing {
                v.state = VolumeState::Clean;
            }
            // Not clean: left as a crash leaves it (ENABLED), so copies start over.
            if clean {
                v.kstate = KernelState::Disabled;
            }
            if !shutting_down {
                v.autostart = false;
            }
        }
        if clean && !syncing {
            for p in cfg.plexes.iter_mut() {
                if p.volume.as_deref() == Some(name) && p.state == PlexState::Active {
                    p.state = PlexState::Clean;
                }
            }
        }
        g.commit(&self.engine, cfg)?;
        self.stop_subvolumes(g, name, shutting_down)?;
        tracing::info!(dg = %dg, volume = %name, "volume stopped");
        Ok(())
    }

    /// Deletes a volume with its plexes and subdisks (refused while it is exported).
    pub fn volume_delete(&self, dg: &str, name: &str) -> Result<(), VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        if g.cfg.volume(name).is_none() {
            return Err(not_found_volume(dg, name));
        }
        refuse_subvolume(g, name, "delete")?;
        if g.volumes.contains_key(name) {
            self.stop_volume(g, name, false)?;
        }
        refuse_lingering(g, name, &format!("volume {dg}/{name} cannot be deleted"))?;
        let mut cfg = g.cfg.clone();
        remove_volume(&mut cfg, name);
        g.commit(&self.engine, cfg)?;
        tracing::info!(dg = %dg, volume = %name, "volume deleted");
        Ok(())
    }

    /// Detaches a plex (no more I/O; state OFFLINE), or with `dissociate` removes it from its
    /// volume and deletes its subdisks. The last plex with current data cannot be detached.
    pub fn plex_detach(&self, dg: &str, plex: &str, dissociate: bool) -> Result<(), VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        let p = g
            .cfg
            .plex(plex)
            .cloned()
            .ok_or_else(|| VolumeError::NotFound {
                kind: "plex",
                name: format!("{dg}/{plex}"),
            })?;
        let vol = p.volume.clone().unwrap_or_default();
        let others_in_sync = g
            .cfg
            .plexes_of(&vol)
            .iter()
            .filter(|o| o.name != plex && o.state.is_in_sync() && o.kstate == KernelState::Enabled)
            .count();
        let this_in_sync = p.state.is_in_sync() && p.kstate == KernelState::Enabled;
        if this_in_sync && others_in_sync == 0 && !vol.is_empty() {
            return Err(VolumeError::Busy(format!(
                "plex {plex} is the last plex of volume {dg}/{vol} with current data; it cannot be detached"
            )));
        }
        // Writes of a stopped run of the volume still in flight keep its space. A read repair
        // of the plex is cancelled below like a copy (its write fenced); a later one registers
        // under the group lock and sees the plex gone from the map.
        if dissociate && !vol.is_empty() {
            refuse_lingering(g, &vol, &format!("plex {plex} cannot be dissociated"))?;
        }
        // Copies (and read repairs) reading or writing the plex stop before the map changes.
        let stopped = self
            .tasks
            .cancel_using(dg, &vol, std::slice::from_ref(&plex.to_string()));
        let mut cfg = g.cfg.clone();
        if dissociate {
            remove_plex(&mut cfg, plex, true);
        } else if let Some(pl) = cfg.plex_mut(plex) {
            pl.kstate = KernelState::Detached;
            if pl.state.is_in_sync() {
                pl.state = PlexState::Offline;
            }
            pl.sync_offset = None;
        }
        let committed = g.commit(&self.engine, cfg);
        if !vol.is_empty() {
            self.publish(g, &vol);
            self.restart_copies(g, &vol, &[plex.to_string()], stopped);
        }
        committed
    }
}

/// Sub-volumes are started, stopped and deleted with their layered volume only.
/// A zeroing that failed. A write in `pending` did not complete in time and may still land
/// on its subdisk: that space must stay allocated until it has.
pub(crate) struct ZeroFailed {
    /// Why it failed.
    pub(crate) error: VolumeError,
    /// The write still in flight and the subdisk it zeroes.
    pending: Option<Box<(PendingIo, SubdiskRecord)>>,
}

impl From<VolumeError> for ZeroFailed {
    fn from(error: VolumeError) -> Self {
        ZeroFailed {
            error,
            pending: None,
        }
    }
}

/// Writes of a stopped volume that had not completed when its stop stopped waiting: the
/// volume's space stays allocated until they have.
pub(crate) struct Lingering {
    /// The volume's bdev, alive while requests that started on it have not completed.
    bdev: std::sync::Weak<crate::bdev::Bdev>,
    /// The volume's disks (bdev names), for the error message.
    disks: String,
}

impl Lingering {
    fn of(s: &VolumeShared, bdev: std::sync::Weak<crate::bdev::Bdev>) -> Lingering {
        Lingering {
            bdev,
            disks: disk_names(&s.map()),
        }
    }

    /// What has not completed yet, if anything.
    fn busy(&self) -> Option<String> {
        (self.bdev.strong_count() > 0)
            .then(|| format!("requests to its disks {} are still in flight", self.disks))
    }
}

fn disk_names(map: &VolumeMap) -> String {
    let names: Vec<&str> = map.disks.iter().map(|d| d.name()).collect();
    names.join(", ")
}

/// Refuses (EBUSY) to free volume `vol`'s space while writes of an earlier run of it are
/// still in flight; forgets those that completed.
fn refuse_lingering(g: &mut Group, vol: &str, what: &str) -> Result<(), VolumeError> {
    let Some(l) = g.lingering.get_mut(vol) else {
        return Ok(());
    };
    l.retain(|l| l.busy().is_some());
    let Some(busy) = l.first().and_then(Lingering::busy) else {
        g.lingering.remove(vol);
        return Ok(());
    };
    Err(VolumeError::Busy(format!(
        "{what}: volume {}/{vol} was stopped but {busy}, and its space stays allocated until they complete; retry then, or fail the disk that does not answer",
        g.cfg.name
    )))
}

/// The refusal of `skip_copy` for a volume of layout `layout`, which is not RAID-5.
pub(crate) fn skip_copy_not_raid5(layout: &str) -> VolumeError {
    VolumeError::Invalid(format!(
        "skip_copy applies to RAID-5 volumes only: it lets full-stripe writes compute parity from the client's buffers, and a {layout} volume has no parity"
    ))
}

/// Refuses `what` on volume `name` if it is a sub-volume of a layered volume, naming the
/// volume to ask instead.
pub(crate) fn refuse_subvolume(g: &Group, name: &str, what: &str) -> Result<(), VolumeError> {
    match g.cfg.volume(name).and_then(|v| v.parent.clone()) {
        Some(parent) => Err(VolumeError::Invalid(format!(
            "{name} is a sub-volume (a column) of layered volume {parent}; {what} {parent} instead"
        ))),
        None => Ok(()),
    }
}

/// The error for volume `name` of group `dg` not existing.
pub(crate) fn not_found_volume(dg: &str, name: &str) -> VolumeError {
    VolumeError::NotFound {
        kind: "volume",
        name: format!("{dg}/{name}"),
    }
}

/// What a volume supports: data, flush and reset always; write-zeroes and unmap when every
/// disk can (unmap becomes write-zeroes on mirrors).
fn volume_io_types(map: &VolumeMap) -> IoTypeSet {
    let mut t = vec![IoType::Read, IoType::Write, IoType::Flush, IoType::Reset];
    let all = |op| map.disks.iter().all(|d| d.io_types().contains(op));
    if all(IoType::WriteZeroes) {
        t.push(IoType::WriteZeroes);
        if all(IoType::Unmap) {
            t.push(IoType::Unmap);
        }
    }
    IoTypeSet::of(&t)
}
