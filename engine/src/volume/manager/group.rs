//! A disk group as the manager holds it (its members, configuration and started volumes),
//! its commit (config copies into each holder's inactive slot, then the labels' serials),
//! and the flushes that put data on the media before the metadata that depends on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::bdev::Bdev;
use crate::volume::error::VolumeError;
use crate::volume::io::driver::VolumeShared;
use crate::volume::model::objects::{DgConfig, DiskCondition, DiskRecord, VolumeState};
use crate::volume::ondisk::disk;
use crate::volume::ondisk::format::{self, DiskState, Label, NAME_MAX};
use crate::Engine;

/// A present member disk.
pub(crate) struct Member {
    pub(crate) bdev: Arc<Bdev>,
    pub(crate) label: Label,
    /// The slot holding this disk's newest valid copy (the next copy goes to the other one).
    pub(crate) active_slot: Option<u32>,
    /// Its last config copy write failed: commits choose the other healthy disks first.
    pub(crate) copy_failed: bool,
}

/// An imported disk group.
pub(crate) struct Group {
    pub(crate) cfg: DgConfig,
    pub(crate) seq: u64,
    /// Present disks by name in the group.
    pub(crate) members: BTreeMap<String, Member>,
    /// Started volumes (registered bdevs) by volume name.
    pub(crate) volumes: BTreeMap<String, Arc<VolumeShared>>,
    /// Map generations handed out.
    pub(crate) generation: u64,
    /// Subdisk moves in progress, by volume.
    pub(crate) moves: BTreeMap<String, crate::volume::manager::reshape::Move>,
    /// Read errors repaired per plex since import (past a budget the plex is detached).
    pub(crate) read_errors: BTreeMap<String, u32>,
    /// Volumes taken offline after a failure that left no in-sync plex or could not be
    /// recorded: no I/O until an administrator restarts them (volume_stop, volume_start).
    pub(crate) disabled: std::collections::BTreeSet<String>,
    /// Volumes stopped before their writes finished, by volume name: their space must not be
    /// freed (delete, dissociate) until those writes are done.
    pub(crate) lingering: BTreeMap<String, Vec<crate::volume::manager::ops::Lingering>>,
}

/// The owner string of a group's claims on its disks.
pub(crate) fn claim_owner(dg: &str) -> String {
    format!("disk group {dg}")
}

/// Checks a disk group, disk, volume or plex name.
pub fn check_name(kind: &str, name: &str) -> Result<(), VolumeError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(VolumeError::Invalid(format!(
            "invalid {kind} name '{name}': use 1-{NAME_MAX} letters, digits, '_', '-' or '.', not starting with '-'"
        )))
    }
}

impl Group {
    /// Makes `cfg` durable as the group's next configuration: copies first (each into the
    /// holder's inactive slot, flushed; `nconfig` of them, a holder whose write fails replaced
    /// by the next healthy disk), then every present member's label serial. On error nothing
    /// durable changed and the group keeps its old configuration.
    pub(crate) fn commit(&mut self, engine: &Engine, mut cfg: DgConfig) -> Result<(), VolumeError> {
        cfg.validate()
            .map_err(|e| VolumeError::Invalid(format!("internal: invalid configuration: {e}")))?;
        let seq = self.seq + 1;
        for d in cfg.disks.iter_mut() {
            if self.members.contains_key(&d.name) && d.condition == DiskCondition::Ok {
                d.expected_serial = seq;
            }
        }
        let payload = serde_json::to_vec(&cfg)
            .map_err(|e| VolumeError::Invalid(format!("internal: cannot encode config: {e}")))?;
        let commit_id = Uuid::new_v4();
        // Every present, usable disk can hold a copy: those whose last copy write failed
        // come last, then by name. `nconfig` copies are written to the first that take them;
        // a disk whose write fails is replaced by the next one.
        let mut candidates: Vec<(bool, String)> = cfg
            .disks
            .iter()
            .filter(|d| d.condition == DiskCondition::Ok)
            .filter_map(|d| {
                self.members
                    .get(&d.name)
                    .map(|m| (m.copy_failed, d.name.clone()))
            })
            .collect();
        candidates.sort();
        if candidates.is_empty() {
            return Err(VolumeError::Commit("the group has no usable disk".into()));
        }
        let want = match cfg.nconfig {
            0 => candidates.len(),
            n => (n as usize).min(candidates.len()),
        };
        // Encode once per candidate (all disks of a group share the default layout, but check
        // the size against each before writing anything).
        let mut encoded = Vec::with_capacity(candidates.len());
        for (_, h) in &candidates {
            let m = &self.members[h];
            let buf = format::encode_config_copy(cfg.id, seq, commit_id, &payload, &m.label.layout)
                .map_err(|e| {
                    VolumeError::Invalid(format!(
                        "the configuration ({} bytes) does not fit disk {h}'s config area: {e}",
                        payload.len()
                    ))
                })?;
            encoded.push(buf);
        }
        let mut written = 0;
        let mut errors = Vec::new();
        for ((_, h), buf) in candidates.iter().zip(&encoded) {
            if written == want {
                break;
            }
            let Some(m) = self.members.get_mut(h) else {
                continue;
            };
            let slot = match m.active_slot {
                Some(s) => (s + 1) % m.label.layout.config_slots,
                None => 0,
            };
            match disk::write_copy(engine, &m.bdev, &m.label, slot, buf) {
                Ok(()) => {
                    m.active_slot = Some(slot);
                    m.copy_failed = false;
                    written += 1;
                }
                Err(e) => {
                    tracing::error!(dg = %cfg.name, disk = %h, "config copy write failed (the next healthy disk takes the copy): {e}");
                    m.copy_failed = true;
                    errors.push(format!("{h}: {e}"));
                }
            }
        }
        if written < want && written > 0 {
            tracing::warn!(dg = %cfg.name, seq, copies = written, nconfig = want, "fewer config copies than wanted: no other healthy disk took one");
        }
        if written == 0 {
            return Err(VolumeError::Commit(errors.join("; ")));
        }
        for (name, m) in self.members.iter_mut() {
            let Some(rec) = cfg.disks.iter().find(|d| &d.name == name) else {
                continue;
            };
            if rec.condition != DiskCondition::Ok {
                continue;
            }
            let mut l = m.label.clone();
            l.serial = seq;
            l.dg_id = cfg.id;
            l.dg_name = cfg.name.clone();
            l.disk_name = name.clone();
            l.state = DiskState::Imported;
            match disk::write_label(engine, &m.bdev, &l) {
                Ok(()) => m.label = l,
                Err(e) => tracing::error!(dg = %cfg.name, disk = %name, "label write failed: {e}"),
            }
        }
        tracing::debug!(dg = %cfg.name, seq, copies = written, "configuration committed");
        self.cfg = cfg;
        self.seq = seq;
        Ok(())
    }
}

/// Flushes each of `disks` once: data written to them reaches their media before a commit
/// records a state that vouches for it (CLEAN at stop, zeroing done, a copy complete). A
/// config holder's own flush is no substitute: power can fail after the first holder's flush,
/// before the other disks are flushed.
pub(crate) fn flush_disks<'a>(
    engine: &Engine,
    disks: impl IntoIterator<Item = &'a Arc<Bdev>>,
) -> Result<(), VolumeError> {
    let mut done: Vec<u64> = Vec::new();
    for d in disks {
        if done.contains(&d.id()) {
            continue;
        }
        done.push(d.id());
        disk::flush(engine, d).map_err(|source| VolumeError::Flush {
            bdev: d.name().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Flushes the disks the copy `targets` write to (see [`flush_disks`]).
pub(crate) fn flush_targets(
    engine: &Engine,
    targets: &[crate::volume::copy::task::CopyPlex],
) -> Result<(), VolumeError> {
    let disks = targets.iter().flat_map(|t| {
        t.geometry
            .columns()
            .iter()
            .flat_map(|c| c.extents.iter())
            .filter_map(|e| t.disks.get(e.target as usize))
    });
    flush_disks(engine, disks)
}

/// After a copy: when it ran to its end (`Ok(true)`), flushes the disks its `targets` wrote
/// to, so that the commit recording the copy complete comes after the copied data is
/// durable; a failed flush fails the copy.
pub(crate) fn flush_copied(
    engine: &Engine,
    r: Result<bool, String>,
    targets: &[crate::volume::copy::task::CopyPlex],
) -> Result<bool, String> {
    if r != Ok(true) {
        return r;
    }
    flush_targets(engine, targets).map_err(|e| e.to_string())?;
    Ok(true)
}

pub(crate) fn group_mut<'a>(
    groups: &'a mut BTreeMap<String, Group>,
    dg: &str,
) -> Result<&'a mut Group, VolumeError> {
    groups.get_mut(dg).ok_or_else(|| VolumeError::NotFound {
        kind: "disk group",
        name: dg.into(),
    })
}

pub(crate) fn disk_record(name: &str, b: &Bdev, label: &Label) -> DiskRecord {
    let bs = b.block_size() as u64;
    DiskRecord {
        name: name.to_string(),
        disk_id: label.disk_id,
        device: b.name().to_string(),
        expected_serial: 0,
        public_len: label.layout.public_len / bs,
        public_offset: label.layout.public_offset / bs,
        spare: false,
        nohotuse: false,
        condition: DiskCondition::Ok,
    }
}

/// Started volumes that are not sub-volumes (stopping those stops their sub-volumes).
pub(crate) fn top_volumes(g: &Group) -> Vec<String> {
    g.volumes
        .keys()
        .filter(|v| g.cfg.volume(v).is_none_or(|r| r.parent.is_none()))
        .cloned()
        .collect()
}

pub(crate) fn release_all(bdevs: &[Arc<Bdev>]) {
    for b in bdevs {
        b.release_claim();
    }
}

/// Whether a volume state means "was running": a crash leaves ACTIVE (or SYNC) behind.
pub(crate) fn was_running(s: VolumeState) -> bool {
    matches!(
        s,
        VolumeState::Active | VolumeState::Sync | VolumeState::Needsync
    )
}
