//! Disk-group operations: create, add and remove disks, set `nconfig` and disk flags,
//! deport and destroy.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::bdev::Bdev;
use crate::volume::error::VolumeError;
use crate::volume::io::driver::{self};
use crate::volume::manager::{
    check_name, claim_owner, disk_record, group_mut, release_all, top_volumes, Group, Member,
    VolumeManager,
};
use crate::volume::model::objects::{DgConfig, DiskCondition};
use crate::volume::ondisk::disk;
use crate::volume::ondisk::format::{self, DiskState};

impl VolumeManager {
    /// Creates disk group `name` from the bdevs `disks` (initialising each; `force`
    /// overwrites labels that are foreign, corrupt or of another group).
    pub fn dg_create(&self, name: &str, disks: &[String], force: bool) -> Result<(), VolumeError> {
        check_name("disk group", name)?;
        if disks.is_empty() {
            return Err(VolumeError::Invalid(
                "a disk group needs at least one disk".into(),
            ));
        }
        let mut groups = self.lock();
        if groups.contains_key(name) {
            return Err(VolumeError::Exists {
                kind: "disk group",
                name: name.into(),
            });
        }
        let bdevs = self.check_new_disks(disks, force)?;
        let bs = bdevs[0].block_size();
        let claimed = self.claim_all(name, &bdevs)?;
        let result = (|| {
            let mut cfg = DgConfig {
                name: name.to_string(),
                id: Uuid::new_v4(),
                block_size: bs,
                nconfig: 0,
                disks: Vec::new(),
                subdisks: Vec::new(),
                plexes: Vec::new(),
                volumes: Vec::new(),
            };
            let mut group = Group {
                cfg: cfg.clone(),
                seq: 0,
                members: BTreeMap::new(),
                volumes: BTreeMap::new(),
                generation: 0,
                moves: BTreeMap::new(),
                read_errors: BTreeMap::new(),
                disabled: Default::default(),
                lingering: Default::default(),
            };
            for b in &bdevs {
                let label = disk::init(&self.engine, b, force)?;
                let dm = cfg.next_name("disk", |n| cfg.name_taken(n));
                cfg.disks.push(disk_record(&dm, b, &label));
                group.members.insert(
                    dm,
                    Member {
                        bdev: b.clone(),
                        label,
                        active_slot: None,
                        copy_failed: false,
                    },
                );
            }
            group.commit(&self.engine, cfg)?;
            Ok(group)
        })();
        match result {
            Ok(g) => {
                tracing::info!(dg = %name, disks = disks.len(), "disk group created");
                groups.insert(name.to_string(), g);
                Ok(())
            }
            Err(e) => {
                release_all(&claimed);
                Err(e)
            }
        }
    }

    /// Checks bdevs that are to join a group: they exist, are unclaimed, are listed once,
    /// share a block size, and (unless `force`) carry nothing initialising would destroy.
    fn check_new_disks(
        &self,
        disks: &[String],
        force: bool,
    ) -> Result<Vec<Arc<Bdev>>, VolumeError> {
        let mut out: Vec<Arc<Bdev>> = Vec::new();
        for d in disks {
            let b = self
                .engine
                .bdevs()
                .get(d)
                .map_err(|_| VolumeError::NotFound {
                    kind: "bdev",
                    name: d.clone(),
                })?;
            if out.iter().any(|o| o.id() == b.id()) {
                return Err(VolumeError::Invalid(format!("bdev '{d}' is listed twice")));
            }
            if let Some(owner) = b.claimed_by() {
                return Err(VolumeError::Busy(format!(
                    "bdev '{d}' is in use by {owner}; a disk can belong to one disk group only"
                )));
            }
            if driver::shared_of(&b).is_some() {
                return Err(VolumeError::Invalid(format!(
                    "bdev '{d}' is a volume; volumes cannot be disks of a disk group"
                )));
            }
            if let Some(first) = out.first() {
                if first.block_size() != b.block_size() {
                    return Err(VolumeError::Invalid(format!(
                        "bdev '{d}' has block size {} but '{}' has {}; a disk group's disks must share one block size",
                        b.block_size(),
                        first.name(),
                        first.block_size()
                    )));
                }
            }
            // Every disk must fit before any is written.
            let len = b.num_blocks() * b.block_size() as u64;
            if let Err(e) = format::RegionLayout::for_disk(len, b.block_size()) {
                return Err(VolumeError::Invalid(format!(
                    "bdev '{d}' cannot be a VM disk: {e}"
                )));
            }
            if !force {
                if let Some(what) = disk::occupant(&self.engine, &b)? {
                    return Err(VolumeError::Busy(format!(
                        "bdev '{d}' {what}; pass force to overwrite it"
                    )));
                }
            }
            out.push(b);
        }
        Ok(out)
    }

    pub(super) fn claim_all(
        &self,
        dg: &str,
        bdevs: &[Arc<Bdev>],
    ) -> Result<Vec<Arc<Bdev>>, VolumeError> {
        let mut claimed = Vec::new();
        for b in bdevs {
            if let Err(e) = b.claim(&claim_owner(dg)) {
                release_all(&claimed);
                return Err(e.into());
            }
            claimed.push(b.clone());
        }
        Ok(claimed)
    }

    /// Adds bdev `disk` to group `dg` as `name` (default: the next `diskNN`).
    pub fn dg_add_disk(
        &self,
        dg: &str,
        disk: &str,
        name: Option<&str>,
        force: bool,
    ) -> Result<String, VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        if let Some(n) = name {
            check_name("disk", n)?;
            if g.cfg.name_taken(n) {
                return Err(VolumeError::Exists {
                    kind: "object",
                    name: n.into(),
                });
            }
        }
        let b = self.check_new_disks(&[disk.to_string()], force)?.remove(0);
        if b.block_size() != g.cfg.block_size {
            return Err(VolumeError::Invalid(format!(
                "bdev '{disk}' has block size {} but disk group '{dg}' uses {}",
                b.block_size(),
                g.cfg.block_size
            )));
        }
        b.claim(&claim_owner(dg))?;
        let result = (|| {
            let label = disk::init(&self.engine, &b, force)?;
            let mut cfg = g.cfg.clone();
            let dm = match name {
                Some(n) => n.to_string(),
                None => cfg.next_name("disk", |n| cfg.name_taken(n)),
            };
            cfg.disks.push(disk_record(&dm, &b, &label));
            g.members.insert(
                dm.clone(),
                Member {
                    bdev: b.clone(),
                    label,
                    active_slot: None,
                    copy_failed: false,
                },
            );
            if let Err(e) = g.commit(&self.engine, cfg) {
                g.members.remove(&dm);
                return Err(e);
            }
            Ok(dm)
        })();
        if result.is_err() {
            b.release_claim();
        }
        result
    }

    /// Removes disk `name` (which must hold no subdisks) from group `dg`; its label is reset
    /// to a free VM disk and its bdev released.
    pub fn dg_remove_disk(&self, dg: &str, name: &str) -> Result<(), VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        if g.cfg.disk(name).is_none() {
            return Err(VolumeError::NotFound {
                kind: "disk",
                name: format!("{dg}/{name}"),
            });
        }
        let sds: Vec<String> = g
            .cfg
            .subdisks_on(name)
            .iter()
            .map(|s| s.name.clone())
            .collect();
        if !sds.is_empty() {
            return Err(VolumeError::Busy(format!(
                "disk {name} holds subdisks {}; move or delete them first",
                sds.join(", ")
            )));
        }
        if g.cfg.disks.len() == 1 {
            return Err(VolumeError::Busy(format!(
                "disk {name} is the last disk of disk group '{dg}'; deport the group instead"
            )));
        }
        let mut cfg = g.cfg.clone();
        cfg.disks.retain(|d| d.name != name);
        let member = g.members.remove(name);
        if let Err(e) = g.commit(&self.engine, cfg) {
            if let Some(m) = member {
                g.members.insert(name.to_string(), m);
            }
            return Err(e);
        }
        if let Some(m) = member {
            self.free_member(name, m);
        }
        Ok(())
    }

    /// Takes disk `name` out of group `dg` while subdisks still refer to it: the record stays
    /// (condition REMOVED, so its subdisks stay explained and are never used again), the bdev
    /// is released with its label reset to a free VM disk. The caller has made sure nothing
    /// reads or writes it any more (a RAID-5 column recorded stale).
    pub(crate) fn dg_release_disk(&self, dg: &str, name: &str) -> Result<(), VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        let mut cfg = g.cfg.clone();
        let d = cfg.disk_mut(name).ok_or_else(|| VolumeError::NotFound {
            kind: "disk",
            name: format!("{dg}/{name}"),
        })?;
        d.condition = DiskCondition::Removed;
        if g.members.len() == 1 && g.members.contains_key(name) {
            return Err(VolumeError::Busy(format!(
                "disk {name} is the last disk of disk group '{dg}'; deport the group instead"
            )));
        }
        let member = g.members.remove(name);
        if let Err(e) = g.commit(&self.engine, cfg) {
            if let Some(m) = member {
                g.members.insert(name.to_string(), m);
            }
            return Err(e);
        }
        if let Some(m) = member {
            self.free_member(name, m);
        }
        Ok(())
    }

    /// Resets the label of a disk that left its group to a free VM disk and releases its bdev.
    fn free_member(&self, name: &str, m: Member) {
        let mut l = m.label.clone();
        l.dg_id = Uuid::nil();
        l.dg_name.clear();
        l.disk_name.clear();
        l.state = DiskState::Free;
        if let Err(e) = disk::write_label(&self.engine, &m.bdev, &l) {
            tracing::warn!(disk = %name, "could not reset the removed disk's label: {e}");
        }
        m.bdev.release_claim();
    }

    /// Sets how many disks hold config copies (0: every disk). Fewer copies make commits
    /// cheaper on large groups; each copy is still crc-checked and two-slotted.
    pub fn dg_set(&self, dg: &str, nconfig: u32) -> Result<(), VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        let mut cfg = g.cfg.clone();
        cfg.nconfig = nconfig;
        g.commit(&self.engine, cfg)
    }

    /// Sets a disk's spare / nohotuse flags.
    pub fn disk_set(
        &self,
        dg: &str,
        name: &str,
        spare: Option<bool>,
        nohotuse: Option<bool>,
    ) -> Result<(), VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        let mut cfg = g.cfg.clone();
        let d = cfg.disk_mut(name).ok_or_else(|| VolumeError::NotFound {
            kind: "disk",
            name: format!("{dg}/{name}"),
        })?;
        if let Some(s) = spare {
            d.spare = s;
        }
        if let Some(n) = nohotuse {
            d.nohotuse = n;
        }
        g.commit(&self.engine, cfg)
    }

    /// Deports group `dg`: stops its volumes (refused while one is exported), marks its disks
    /// deported and releases them, so another plexd can import the group.
    pub fn dg_deport(&self, dg: &str) -> Result<(), VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        for (v, shared) in &g.volumes {
            // A sub-volume is claimed by its layered parent, which stops it.
            let parent_claim = g
                .cfg
                .volume(v)
                .and_then(|r| r.parent.as_deref())
                .map(|p| crate::volume::manager::layered::claim_owner(dg, p));
            if let Ok(b) = self.engine.bdevs().get(shared.name()) {
                if let Some(owner) = b.claimed_by().filter(|o| Some(o) != parent_claim.as_ref()) {
                    return Err(VolumeError::Busy(format!(
                        "volume {v} is in use by {owner}; release it before deporting '{dg}'"
                    )));
                }
            }
        }
        let names = top_volumes(g);
        // Stopped cleanly but still marked to start: the importing host brings them back.
        for v in names {
            self.stop_volume(g, &v, true)?;
        }
        let cfg = g.cfg.clone();
        g.commit(&self.engine, cfg)?;
        for (name, m) in g.members.iter_mut() {
            let mut l = m.label.clone();
            l.state = DiskState::Deported;
            match disk::write_label(&self.engine, &m.bdev, &l) {
                Ok(()) => m.label = l,
                Err(e) => tracing::warn!(disk = %name, "could not mark disk deported: {e}"),
            }
        }
        if let Some(g) = groups.remove(dg) {
            for m in g.members.values() {
                m.bdev.release_claim();
            }
        }
        self.tasks.cancel_group(dg);
        tracing::info!(dg = %dg, "disk group deported");
        Ok(())
    }

    /// Destroys group `dg` (which must have no volumes): every disk's label is reset to a free
    /// VM disk and its bdev released.
    pub fn dg_destroy(&self, dg: &str) -> Result<(), VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        if !g.cfg.volumes.is_empty() {
            // Sub-volumes go with their layered parent: name the parents only.
            let names: Vec<&str> = g
                .cfg
                .volumes
                .iter()
                .filter(|v| v.parent.is_none())
                .map(|v| v.name.as_str())
                .collect();
            return Err(VolumeError::Busy(format!(
                "disk group '{dg}' still has volumes {}; delete them first",
                names.join(", ")
            )));
        }
        // Only a zeroing write that has not completed leaves subdisks without a volume
        // while no operation runs (see `VolumeManager::zeroing_failed`).
        let pending: Vec<&str> = g.cfg.subdisks.iter().map(|s| s.name.as_str()).collect();
        if !pending.is_empty() {
            return Err(VolumeError::Busy(format!(
                "disk group '{dg}' still has subdisks {} under a zeroing write that has not completed; retry when the disk answers, or fail it",
                pending.join(", ")
            )));
        }
        self.tasks.cancel_group(dg);
        if let Some(g) = groups.remove(dg) {
            for (name, m) in &g.members {
                let mut l = m.label.clone();
                l.dg_id = Uuid::nil();
                l.dg_name.clear();
                l.disk_name.clear();
                l.state = DiskState::Free;
                if let Err(e) = disk::write_label(&self.engine, &m.bdev, &l) {
                    tracing::warn!(disk = %name, "could not reset the label: {e}");
                }
                m.bdev.release_claim();
            }
        }
        tracing::info!(dg = %dg, "disk group destroyed");
        Ok(())
    }
}
