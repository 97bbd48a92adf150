//! Importing disk groups: scanning bdevs for labels, choosing the configuration copy to
//! trust (`ondisk::configdb`), recovering what a crash left half done, and rewriting every copy.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::bdev::Bdev;
use crate::volume::error::VolumeError;
use crate::volume::io::driver::{self};
use crate::volume::manager::{release_all, Group, Member, VolumeManager};
use crate::volume::model::objects::{DgConfig, DiskCondition};
use crate::volume::ondisk::configdb::{self, FoundCopy, FoundDisk};
use crate::volume::ondisk::disk;
use crate::volume::ondisk::format::{DiskState, Label};

impl VolumeManager {
    /// Imports disk groups found on bdevs: `name` (or every group found), scanning `disks`
    /// (or every unclaimed bdev). `select_copy` names the bdev whose config copy to trust
    /// when the group's copies disagree. Returns the names of the groups imported.
    pub fn dg_import(
        &self,
        name: Option<&str>,
        disks: Option<&[String]>,
        select_copy: Option<&str>,
    ) -> Result<Vec<String>, VolumeError> {
        let mut groups = self.lock();
        let candidates: Vec<Arc<Bdev>> = match disks {
            Some(list) => list
                .iter()
                .map(|d| {
                    self.engine
                        .bdevs()
                        .get(d)
                        .map_err(|_| VolumeError::NotFound {
                            kind: "bdev",
                            name: d.clone(),
                        })
                })
                .collect::<Result<_, _>>()?,
            None => self
                .engine
                .bdevs()
                .list()
                .into_iter()
                .filter(|b| b.claimed_by().is_none() && driver::shared_of(b).is_none())
                .collect(),
        };
        // Group the labelled disks by group id.
        let mut found: BTreeMap<Uuid, Vec<(Arc<Bdev>, Label)>> = BTreeMap::new();
        for b in candidates {
            if b.claimed_by().is_some() {
                if disks.is_some() {
                    return Err(VolumeError::Busy(format!(
                        "bdev '{}' is in use by {}",
                        b.name(),
                        b.claimed_by().unwrap_or_default()
                    )));
                }
                continue;
            }
            let label = match disk::read_label(&self.engine, &b) {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(bdev = %b.name(), "not a VM disk: {e}");
                    continue;
                }
            };
            if label.dg_id.is_nil() || name.is_some_and(|n| n != label.dg_name) {
                continue;
            }
            // As in VxVM, a deported group is imported only when asked for by name.
            if name.is_none() && label.state == DiskState::Deported {
                tracing::info!(bdev = %b.name(), dg = %label.dg_name, "deported disk group: import it by name");
                continue;
            }
            found.entry(label.dg_id).or_default().push((b, label));
        }
        if found.is_empty() {
            return match name {
                Some(n) => Err(VolumeError::NotFound {
                    kind: "disk group on the scanned bdevs",
                    name: n.into(),
                }),
                None => Ok(Vec::new()),
            };
        }
        let mut imported = Vec::new();
        let mut first_err = None;
        for (_, members) in found {
            let dg_name = members[0].1.dg_name.clone();
            match self.import_one(&mut groups, &dg_name, members, select_copy) {
                Ok(()) => imported.push(dg_name),
                Err(e) => {
                    tracing::error!(dg = %dg_name, "import failed: {e}");
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        match (imported.is_empty(), first_err) {
            (true, Some(e)) => Err(e),
            (false, Some(e)) if name.is_some() => Err(e),
            _ => Ok(imported),
        }
    }

    fn import_one(
        &self,
        groups: &mut BTreeMap<String, Group>,
        dg_name: &str,
        members: Vec<(Arc<Bdev>, Label)>,
        select_copy: Option<&str>,
    ) -> Result<(), VolumeError> {
        if let Some(g) = groups.get(dg_name) {
            let what = if g.cfg.id == members[0].1.dg_id {
                "is already imported".to_string()
            } else {
                format!(
                    "is the name of another imported group (id {}); deport it first",
                    g.cfg.id
                )
            };
            return Err(VolumeError::Busy(format!("disk group '{dg_name}' {what}")));
        }
        let mut copies = Vec::new();
        let mut found_disks = Vec::new();
        let mut slots: BTreeMap<String, Option<(u32, u64)>> = BTreeMap::new();
        for (b, label) in &members {
            found_disks.push(FoundDisk {
                bdev: b.name().to_string(),
                label: label.clone(),
            });
            let mut best: Option<(u32, u64)> = None;
            for (slot, r) in disk::read_copies(&self.engine, b, label) {
                let raw = match r {
                    Ok(raw) => raw,
                    Err(e) => {
                        tracing::debug!(bdev = %b.name(), slot, "no usable config copy: {e}");
                        continue;
                    }
                };
                if raw.header.dg_id != label.dg_id {
                    continue;
                }
                let config: DgConfig = match serde_json::from_slice(&raw.payload) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(bdev = %b.name(), slot, "config copy does not parse: {e}");
                        continue;
                    }
                };
                if best.is_none_or(|(_, s)| raw.header.seq > s) {
                    best = Some((slot, raw.header.seq));
                }
                copies.push(FoundCopy {
                    bdev: b.name().to_string(),
                    slot,
                    seq: raw.header.seq,
                    commit_id: raw.header.commit_id,
                    config,
                });
            }
            slots.insert(b.name().to_string(), best);
        }
        let chosen = configdb::choose(dg_name, &found_disks, &copies, select_copy)?;
        let mut cfg = chosen.copy.config.clone();
        // The import's commit must be newer than everything on the disks, copies the
        // administrator rejected (select_copy) included: one with the same or a higher
        // sequence number would bring the split brain back at the next import.
        let newest_seen = copies
            .iter()
            .map(|c| c.seq)
            .chain(members.iter().map(|(_, l)| l.serial))
            .fold(chosen.copy.seq, u64::max);
        let mut group = Group {
            cfg: cfg.clone(),
            seq: newest_seen,
            members: BTreeMap::new(),
            volumes: BTreeMap::new(),
            generation: 0,
            moves: BTreeMap::new(),
            read_errors: BTreeMap::new(),
            disabled: Default::default(),
            lingering: Default::default(),
        };
        let mut to_claim = Vec::new();
        for d in cfg.disks.iter_mut() {
            let hit = members.iter().find(|(_, l)| l.disk_id == d.disk_id);
            match hit {
                Some((b, l)) => {
                    if d.condition == DiskCondition::Nodevice {
                        d.condition = DiskCondition::Ok;
                    }
                    d.device = b.name().to_string();
                    group.members.insert(
                        d.name.clone(),
                        Member {
                            bdev: b.clone(),
                            label: l.clone(),
                            active_slot: slots.get(b.name()).copied().flatten().map(|(s, _)| s),
                            copy_failed: false,
                        },
                    );
                    to_claim.push(b.clone());
                }
                None => {
                    if d.condition == DiskCondition::Ok {
                        tracing::warn!(dg = %dg_name, disk = %d.name, "disk not found: NODEVICE");
                        d.condition = DiskCondition::Nodevice;
                    }
                }
            }
        }
        if group.members.is_empty() {
            return Err(VolumeError::Invalid(format!(
                "none of disk group '{dg_name}''s disks are present"
            )));
        }
        let claimed = self.claim_all(dg_name, &to_claim)?;
        crate::volume::manager::ops::recover_at_import(&mut cfg, &chosen.lagging, &group);
        if let Err(e) = group.commit(&self.engine, cfg) {
            release_all(&claimed);
            return Err(e);
        }
        tracing::info!(
            dg = %dg_name,
            seq = group.seq,
            disks = group.members.len(),
            "disk group imported"
        );
        groups.insert(dg_name.to_string(), group);
        if let Some(g) = groups.get_mut(dg_name) {
            let autostart: Vec<String> = g
                .cfg
                .volumes
                .iter()
                .filter(|v| v.autostart && v.parent.is_none())
                .map(|v| v.name.clone())
                .collect();
            for v in autostart {
                if let Err(e) = self.start_volume(g, &v) {
                    tracing::error!(dg = %dg_name, volume = %v, "cannot start volume: {e}");
                }
            }
        }
        Ok(())
    }
}
