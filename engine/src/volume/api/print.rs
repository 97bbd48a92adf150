//! Read-only views of the volume manager: `dg_list`, `disk_list`, `volume_list` (the
//! `plexd_control::api` types, converted here from the configuration records) and `vm_print`
//! (the object tree in `vxprint -ht` columns; lengths and offsets in 512-byte sectors, as VxVM
//! prints).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plexd_control::api::dg::DgInfo;
use plexd_control::api::disk::DiskInfo;
use plexd_control::api::volume::{PlexInfo, SubdiskInfo, VolumeInfo};

use crate::volume::error::VolumeError;
use crate::volume::manager::{raid5_ops, Group, VolumeManager};
use crate::volume::model::objects::{
    DiskCondition, KernelState, PlexLayout, ReadPolicy, VolumeRecord, VolumeState,
};

/// The `vxprint -ht` header block.
pub const HEADER: &str = "\
DG NAME         NCONFIG      NLOG     MINORS   GROUP-ID
DM NAME         DEVICE       TYPE     PRIVLEN  PUBLEN   STATE
V  NAME         RVG/VSET/CO  KSTATE   STATE    LENGTH   READPOL   PREFPLEX UTYPE
PL NAME         VOLUME       KSTATE   STATE    LENGTH   LAYOUT    NCOL/WID MODE
SD NAME         PLEX         DISK     DISKOFFS LENGTH   [COL/]OFF DEVICE   MODE
SV NAME         PLEX         VOLNAME  VOLOFFS  LENGTH   [COL/]OFF AM/NM    MODE
";

/// Formats one group's tree in `vxprint -ht` columns.
pub(crate) fn print_group(g: &Group, out: &mut String) {
    let cfg = &g.cfg;
    let sect = cfg.block_size as u64 / 512;
    let nconfig = if cfg.nconfig == 0 {
        "default".to_string()
    } else {
        cfg.nconfig.to_string()
    };
    let _ = writeln!(
        out,
        "dg {:<12} {:<12} {:<8} {:<8} {}",
        cfg.name, nconfig, "default", 0, cfg.id
    );
    for d in &cfg.disks {
        let member = g.members.get(&d.name);
        let device = member.map_or("-".to_string(), |m| m.bdev.name().to_string());
        let privlen = d.public_offset * sect;
        let mut flags: Vec<String> = Vec::new();
        if d.condition != crate::volume::model::objects::DiskCondition::Ok {
            flags.push(format!("{:?}", d.condition).to_uppercase());
        }
        if d.spare {
            flags.push("SPARE".into());
        }
        if d.nohotuse {
            flags.push("NOHOTUSE".into());
        }
        let state = if flags.is_empty() {
            "-".to_string()
        } else {
            flags.join(",")
        };
        let _ = writeln!(
            out,
            "dm {:<12} {:<12} {:<8} {:<8} {:<8} {}",
            d.name,
            device,
            "auto",
            privlen,
            d.public_len * sect,
            state
        );
    }
    for v in &cfg.volumes {
        let _ = writeln!(out);
        let prefer = match &v.read_policy {
            ReadPolicy::Prefer(p) => p.as_str(),
            _ => "-",
        };
        // A RAID-5 volume shows as VxVM shows one: read policy RAID, usage type raid5, and
        // DEGRADED while its plex serves with one column without current data.
        let raid5 = raid5_ops::raid5_plex(cfg, &v.name);
        let (readpol, utype) = match raid5 {
            Some(_) => ("RAID", "raid5"),
            None => (v.read_policy.as_str(), "fsgen"),
        };
        let degraded = raid5.is_some_and(|p| {
            p.kstate == KernelState::Enabled
                && p.state.is_in_sync()
                && raid5_ops::missing_columns(g, p).len() == 1
        });
        let state = match v.state {
            VolumeState::Active | VolumeState::Clean if degraded => "DEGRADED",
            s => s.as_str(),
        };
        let _ = writeln!(
            out,
            "v  {:<12} {:<12} {:<8} {:<8} {:<8} {:<9} {:<8} {}",
            v.name,
            "-",
            if g.volumes.contains_key(&v.name) {
                v.kstate.as_str()
            } else {
                KernelState::Disabled.as_str()
            },
            state,
            v.len * sect,
            readpol,
            prefer,
            utype,
        );
        for p in cfg.plexes_of(&v.name) {
            let sds = cfg.subdisks_of(&p.name);
            let stale = match p.layout {
                PlexLayout::Raid5 { .. } => raid5_ops::missing_columns(g, p),
                _ => Vec::new(),
            };
            let rows = |ncol: u32, stripe_unit: u64| {
                let shortest = (0..ncol)
                    .map(|c| {
                        sds.iter()
                            .filter(|s| s.column == c)
                            .map(|s| s.len)
                            .sum::<u64>()
                    })
                    .min()
                    .unwrap_or(0);
                shortest / stripe_unit.max(1)
            };
            // The data a plex holds: a RAID-5 plex's parity units are not counted.
            let plen: u64 = match p.layout {
                PlexLayout::Concat => sds.iter().map(|s| s.len).sum(),
                PlexLayout::Stripe { ncol, stripe_unit } => {
                    u64::from(ncol) * rows(ncol, stripe_unit) * stripe_unit
                }
                PlexLayout::Raid5 { ncol, stripe_unit } => {
                    u64::from(ncol.saturating_sub(1)) * rows(ncol, stripe_unit) * stripe_unit
                }
            };
            let wid = match p.layout {
                PlexLayout::Concat => "-".to_string(),
                PlexLayout::Stripe { ncol, stripe_unit }
                | PlexLayout::Raid5 { ncol, stripe_unit } => {
                    format!("{ncol}/{}", stripe_unit * sect)
                }
            };
            let mode = if p.sync_offset.is_some() { "WO" } else { "RW" };
            let _ = writeln!(
                out,
                "pl {:<12} {:<12} {:<8} {:<8} {:<8} {:<9} {:<8} {}",
                p.name,
                v.name,
                p.kstate.as_str(),
                p.state.as_str(),
                plen * sect,
                p.layout.as_str(),
                wid,
                mode
            );
            for s in sds {
                if let Some(sv) = &s.subvolume {
                    let _ = writeln!(
                        out,
                        "sv {:<12} {:<12} {:<8} {:<8} {:<8} {:<9} {:<8} ENA",
                        s.name,
                        p.name,
                        sv,
                        s.disk_offset * sect,
                        s.len * sect,
                        format!("{}/{}", s.column, s.column_offset * sect),
                        "-",
                    );
                    continue;
                }
                let device = g
                    .members
                    .get(&s.disk)
                    .map_or("-".to_string(), |m| m.bdev.name().to_string());
                let off = match p.layout {
                    PlexLayout::Concat => format!("{}", s.column_offset * sect),
                    PlexLayout::Stripe { .. } | PlexLayout::Raid5 { .. } => {
                        format!("{}/{}", s.column, s.column_offset * sect)
                    }
                };
                // NDEV: the disk is missing; dS (VxVM's detached, Stale): a RAID-5 column
                // without current data.
                let mode = if !g.members.contains_key(&s.disk) {
                    "NDEV"
                } else if stale.contains(&s.column) {
                    "dS"
                } else {
                    "ENA"
                };
                let _ = writeln!(
                    out,
                    "sd {:<12} {:<12} {:<8} {:<8} {:<8} {:<9} {:<8} {}",
                    s.name,
                    p.name,
                    s.disk,
                    s.disk_offset * sect,
                    s.len * sect,
                    off,
                    device,
                    mode
                );
            }
        }
    }
}

impl VolumeManager {
    /// `vm_print`: the object tree of one group (or all) in `vxprint -ht` columns.
    pub fn vm_print(&self, dg: Option<&str>) -> Result<String, VolumeError> {
        let groups = self.lock();
        let mut out = String::from(HEADER);
        let mut any = false;
        for (name, g) in groups.iter() {
            if dg.is_some_and(|d| d != name) {
                continue;
            }
            any = true;
            out.push('\n');
            print_group(g, &mut out);
        }
        if let (Some(d), false) = (dg, any) {
            return Err(VolumeError::NotFound {
                kind: "disk group",
                name: d.into(),
            });
        }
        Ok(out)
    }

    /// `dg_list`: imported groups.
    pub fn dg_list(&self, name: Option<&str>) -> Result<Vec<DgInfo>, VolumeError> {
        let groups = self.lock();
        let mut out = Vec::new();
        for (n, g) in groups.iter() {
            if name.is_some_and(|x| x != n) {
                continue;
            }
            let free_blocks: u64 = g
                .cfg
                .disks
                .iter()
                .filter(|d| !d.spare)
                .map(|d| {
                    g.cfg
                        .free_space(&d.name)
                        .iter()
                        .map(|(_, l)| l)
                        .sum::<u64>()
                })
                .sum();
            out.push(DgInfo {
                name: n.as_str().into(),
                id: g.cfg.id.to_string().into(),
                seq: g.seq.into(),
                block_size: u64::from(g.cfg.block_size).into(),
                nconfig: g.cfg.nconfig,
                disks: names(g.cfg.disks.iter().map(|d| &d.name)).into(),
                volumes: names(g.cfg.volumes.iter().map(|v| &v.name)).into(),
                free_blocks: free_blocks.into(),
            });
        }
        if let (Some(x), true) = (name, out.is_empty()) {
            return Err(VolumeError::NotFound {
                kind: "disk group",
                name: x.into(),
            });
        }
        Ok(out)
    }

    /// `disk_list`: the disks of imported groups.
    pub fn disk_list(&self, dg: Option<&str>) -> Result<Vec<DiskInfo>, VolumeError> {
        let groups = self.lock();
        let mut out = Vec::new();
        for (n, g) in selected(&groups, dg)? {
            for d in &g.cfg.disks {
                let m = g.members.get(&d.name);
                let free_blocks: u64 = g.cfg.free_space(&d.name).iter().map(|(_, l)| l).sum();
                out.push(DiskInfo {
                    dg: n.as_str().into(),
                    name: d.name.as_str().into(),
                    device: m.map(|m| m.bdev.name().to_string()).into(),
                    disk_id: d.disk_id.to_string(),
                    condition: condition_name(d.condition).into(),
                    serial: m.map(|m| m.label.serial),
                    expected_serial: d.expected_serial,
                    spare: d.spare.into(),
                    nohotuse: d.nohotuse.into(),
                    public_offset_blocks: d.public_offset,
                    public_blocks: d.public_len.into(),
                    free_blocks: free_blocks.into(),
                    subdisks: names(g.cfg.subdisks_on(&d.name).iter().map(|s| &s.name)),
                });
            }
        }
        Ok(out)
    }

    /// `volume_list`: volumes with their plexes and subdisks.
    pub fn volume_list(
        &self,
        dg: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<VolumeInfo>, VolumeError> {
        let groups = self.lock();
        let mut out = Vec::new();
        for (_, g) in selected(&groups, dg)? {
            for v in &g.cfg.volumes {
                if name.is_some_and(|n| n != v.name) {
                    continue;
                }
                out.push(volume_info(g, v));
            }
        }
        if let (Some(n), true) = (name, out.is_empty()) {
            return Err(VolumeError::NotFound {
                kind: "volume",
                name: n.into(),
            });
        }
        Ok(out)
    }
}

/// Owned copies of names.
fn names<'a>(list: impl Iterator<Item = &'a String>) -> Vec<String> {
    list.cloned().collect()
}

/// A disk condition as the configuration spells it (`OK`, `NODEVICE`, `FAILED`, `REMOVED`).
fn condition_name(c: DiskCondition) -> &'static str {
    match c {
        DiskCondition::Ok => "OK",
        DiskCondition::Nodevice => "NODEVICE",
        DiskCondition::Failed => "FAILED",
        DiskCondition::Removed => "REMOVED",
    }
}

/// One volume as `volume_list` shows it.
fn volume_info(g: &Group, v: &VolumeRecord) -> VolumeInfo {
    let bs = u64::from(g.cfg.block_size);
    let plexes = g
        .cfg
        .plexes_of(&v.name)
        .iter()
        .map(|p| {
            let (ncol, su) = match p.layout {
                PlexLayout::Concat => (1, None),
                PlexLayout::Stripe { ncol, stripe_unit }
                | PlexLayout::Raid5 { ncol, stripe_unit } => (ncol, Some(stripe_unit)),
            };
            let sds = g.cfg.subdisks_of(&p.name);
            PlexInfo {
                name: p.name.clone(),
                state: p.state.as_str().into(),
                kstate: p.kstate.as_str().into(),
                layout: p.layout.as_str().to_lowercase(),
                ncol,
                stripe_unit_blocks: su,
                stale_columns: p.stale_columns.clone(),
                len: sds.iter().map(|s| s.len).sum(),
                sync_offset: p.sync_offset,
                read_errors: g.read_errors.get(&p.name).copied().map_or(0, u64::from),
                subdisks: sds
                    .iter()
                    .map(|s| SubdiskInfo {
                        name: s.name.clone(),
                        disk: s.disk.clone(),
                        device: g.members.get(&s.disk).map(|m| m.bdev.name().to_string()),
                        disk_offset: s.disk_offset,
                        len: s.len,
                        column: s.column,
                        column_offset: s.column_offset,
                        subvolume: s.subvolume.clone(),
                    })
                    .collect(),
            }
        })
        .collect::<Vec<_>>();
    VolumeInfo {
        dg: g.cfg.name.as_str().into(),
        name: v.name.as_str().into(),
        bdev: v.bdev(&g.cfg.name),
        raid_level: v.raid_level.clone(),
        parent: v.parent.clone(),
        uuid: v.uuid.to_string(),
        block_size: bs.into(),
        num_blocks: v.len.into(),
        size_bytes: (v.len * bs).into(),
        layout: v.layout.as_str().into(),
        state: v.state.as_str().into(),
        kstate: v.kstate.as_str().into(),
        read_policy: v.read_policy.as_str().to_lowercase(),
        prefer_plex: match &v.read_policy {
            ReadPolicy::Prefer(p) => Some(p.clone()),
            _ => None,
        },
        started: g.volumes.contains_key(&v.name).into(),
        resync_offset: v.resync_offset,
        skip_copy: v.skip_copy,
        plexes: plexes.into(),
    }
}

/// The imported groups a listing covers: all of them, or the one named `dg` (an error naming
/// it if no such group is imported).
fn selected<'a>(
    groups: &'a BTreeMap<String, Group>,
    dg: Option<&'a str>,
) -> Result<impl Iterator<Item = (&'a String, &'a Group)>, VolumeError> {
    if let Some(d) = dg {
        if !groups.contains_key(d) {
            return Err(VolumeError::NotFound {
                kind: "disk group",
                name: d.into(),
            });
        }
    }
    Ok(groups
        .iter()
        .filter(move |(n, _)| dg.is_none_or(|d| d == n.as_str())))
}
