//! Layout changes of a started volume: growing it, and moving a subdisk to another place
//! (what hot-relocation and disk evacuation use).
//!
//! Both take their new space as subdisks that belong to no plex first (committed, so the
//! space is never handed out twice) and make them part of the volume only in a later commit:
//! a crash in between leaves orphan subdisks that the next import removes, and the volume as
//! it was (rolled back, never half changed).
//!
//! - Grow: the new subdisks are zeroed, then one commit extends every plex and the volume;
//!   the new map is published before the bdev's size grows.
//! - Move: while guests write, a write-only *shadow* of the plex (the plex with the moving
//!   subdisk swapped for the new one) receives every write, and a copy task fills it under
//!   the write barrier; one commit then swaps the subdisks.

use std::time::Duration;

use crate::volume::copy::task::{self, CopyIo, CopyPlex, TaskSpec, TaskState};
use crate::volume::error::VolumeError;
use crate::volume::manager::{group_mut, Group, VolumeManager};
use crate::volume::model::alloc::{self, AllocRequest};
use crate::volume::model::objects::{DgConfig, KernelState, PlexLayout, SubdiskRecord};

/// Suffix of a shadow plex's name in the I/O map (never in the configuration).
pub const SHADOW_SUFFIX: &str = "~move";

/// A subdisk move in progress.
#[derive(Debug, Clone)]
pub struct Move {
    /// The plex.
    pub plex: String,
    /// The subdisk being moved.
    pub old: String,
    /// Its new place (a subdisk no plex owns yet).
    pub new: SubdiskRecord,
}

/// Allocates `len` blocks as orphan subdisks in `cfg` (not on `exclude`, only on `only` if
/// given); returns them in order.
fn take_space(
    cfg: &mut DgConfig,
    g: &Group,
    fences: &crate::volume::io::fence::FenceList,
    len: u64,
    exclude: Vec<String>,
    only: Option<Vec<String>>,
    contiguous: bool,
) -> Result<Vec<SubdiskRecord>, VolumeError> {
    let plan = alloc::allocate(
        &crate::volume::manager::ops::usable_space(g, cfg, fences),
        &AllocRequest {
            len,
            nmirror: 1,
            ncol: 1,
            stripe_unit: 1,
            disks: only,
            exclude,
        },
    )?;
    let extents = plan
        .into_iter()
        .next()
        .and_then(|p| p.columns.into_iter().next())
        .unwrap_or_default();
    if contiguous && extents.len() != 1 {
        return Err(VolumeError::Invalid(format!(
            "no single free extent of {len} blocks on the usable disks; a subdisk must be contiguous"
        )));
    }
    let mut out = Vec::new();
    for (disk, off, l) in extents {
        let name = cfg.next_name(&format!("{disk}-"), |n| cfg.name_taken(n));
        let sd = SubdiskRecord {
            name,
            disk,
            disk_offset: off,
            len: l,
            plex: None,
            column: 0,
            column_offset: 0,
            subvolume: None,
        };
        cfg.subdisks.push(sd.clone());
        out.push(sd);
    }
    Ok(out)
}

impl VolumeManager {
    /// Drops the subdisk move running on `vol` (its copy stops, the new place is freed, the
    /// shadow leaves the map); the subdisk stays where it was, with every write.
    pub(crate) fn abandon_move(&self, g: &mut Group, vol: &str, why: &str) {
        let dg = g.cfg.name.clone();
        self.tasks.cancel_kind(&dg, vol, "subdisk_move");
        let Some(mv) = g.moves.remove(vol) else {
            return;
        };
        tracing::error!(dg = %dg, subdisk = %mv.old, to = %mv.new.name, "subdisk move abandoned: {why}");
        let mut cfg = g.cfg.clone();
        cfg.subdisks.retain(|s| s.name != mv.new.name);
        if let Err(e) = g.commit(&self.engine, cfg) {
            tracing::warn!(dg = %dg, "could not free {} now (the next import will): {e}", mv.new.name);
        }
        self.publish(g, vol);
    }

    /// Grows volume `name` to `size` bytes (rounded up to the block size): every plex gets
    /// more space (stripes and RAID-5 plexes per column, RAID-5 by whole rows) on disks no
    /// other plex or column of the volume uses. The new space is zeroed before it is used: a
    /// RAID-5 plex's new rows are zeroes in every column, their parity already right.
    /// Returns the new length in blocks. Shrinking is refused.
    pub fn volume_resize(&self, dg: &str, name: &str, size: u64) -> Result<u64, VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        let v = g
            .cfg
            .volume(name)
            .cloned()
            .ok_or_else(|| VolumeError::NotFound {
                kind: "volume",
                name: format!("{dg}/{name}"),
            })?;
        let bs = g.cfg.block_size as u64;
        let new_len = size.div_ceil(bs);
        if new_len < v.len {
            return Err(VolumeError::Invalid(format!(
                "volume {dg}/{name} has {} bytes; shrinking it to {size} would destroy the data at its end and is not supported",
                v.len * bs
            )));
        }
        if new_len == v.len {
            return Ok(v.len);
        }
        if v.raid_level.is_some() {
            return Err(VolumeError::Invalid(format!(
                "'{name}' is a raid bdev; its size is fixed by its base bdevs"
            )));
        }
        if v.parent.is_some() || !crate::volume::manager::layered::subvolumes(g, name).is_empty() {
            return Err(VolumeError::Invalid(format!(
                "growing layered (stripe-mirror) volumes is not supported yet: {dg}/{name}"
            )));
        }
        if self.tasks.busy(dg, name) || g.moves.contains_key(name) {
            return Err(VolumeError::Busy(format!(
                "volume {dg}/{name} is locked by another operation (a resync, attach or move is running)"
            )));
        }
        let mut cfg = g.cfg.clone();
        let plexes: Vec<_> = cfg.plexes_of(name).into_iter().cloned().collect();
        // (subdisk, plex, column, column offset) to associate once zeroed.
        let mut added: Vec<(SubdiskRecord, String, u32, u64)> = Vec::new();
        for p in &plexes {
            let sds: Vec<SubdiskRecord> = cfg.subdisks_of(&p.name).into_iter().cloned().collect();
            if sds.iter().any(|s| !g.members.contains_key(&s.disk)) {
                return Err(VolumeError::Invalid(format!(
                    "plex {} has subdisks on a missing disk; remove it (plex_detach dissociate) before growing",
                    p.name
                )));
            }
            let other_plex_disks: Vec<String> = plexes
                .iter()
                .filter(|o| o.name != p.name)
                .flat_map(|o| cfg.subdisks_of(&o.name))
                .map(|s| s.disk.clone())
                .collect();
            let (ncol, want_col) = match p.layout {
                PlexLayout::Concat => (1, new_len),
                PlexLayout::Stripe { ncol, stripe_unit } => (
                    ncol,
                    new_len.div_ceil(ncol as u64).div_ceil(stripe_unit) * stripe_unit,
                ),
                // Every column grows by whole rows; the new rows are zeroed with the rest of
                // the new space, so their parity (of zeroes) is right before they are used.
                PlexLayout::Raid5 { ncol, stripe_unit } => (
                    ncol,
                    new_len
                        .div_ceil(u64::from(ncol.saturating_sub(1)).max(1))
                        .div_ceil(stripe_unit)
                        * stripe_unit,
                ),
            };
            for c in 0..ncol {
                let have: u64 = sds.iter().filter(|s| s.column == c).map(|s| s.len).sum();
                if want_col <= have {
                    continue;
                }
                let mut exclude = other_plex_disks.clone();
                exclude.extend(sds.iter().filter(|s| s.column != c).map(|s| s.disk.clone()));
                exclude.extend(
                    added
                        .iter()
                        .filter(|(_, pl, col, _)| pl != &p.name || *col != c)
                        .map(|(s, _, _, _)| s.disk.clone()),
                );
                let mut at = have;
                for sd in take_space(
                    &mut cfg,
                    g,
                    self.tasks.fences(),
                    want_col - have,
                    exclude,
                    None,
                    false,
                )? {
                    let l = sd.len;
                    added.push((sd, p.name.clone(), c, at));
                    at += l;
                }
            }
        }
        // 1. The space is taken (orphans), 2. zeroed, 3. made part of the volume.
        g.commit(&self.engine, cfg.clone())?;
        let sds: Vec<SubdiskRecord> = added.iter().map(|(s, ..)| s.clone()).collect();
        if let Err(f) = self.zero_extents(g, &sds) {
            return Err(self.zeroing_failed(g, f, |back| {
                back.subdisks
                    .retain(|s| !sds.iter().any(|n| n.name == s.name))
            }));
        }
        for (sd, plex, col, at) in &added {
            if let Some(s) = cfg.subdisks.iter_mut().find(|s| s.name == sd.name) {
                s.plex = Some(plex.clone());
                s.column = *col;
                s.column_offset = *at;
            }
        }
        if let Some(v) = cfg.volume_mut(name) {
            v.len = new_len;
        }
        g.commit(&self.engine, cfg)?;
        if let Some(shared) = g.volumes.get(name).cloned() {
            self.publish(g, name);
            if let Ok(b) = self.engine.bdevs().get(shared.name()) {
                b.set_num_blocks(new_len);
            }
        }
        tracing::info!(dg = %dg, volume = %name, blocks = new_len, "volume grown");
        Ok(new_len)
    }

    /// Moves subdisk `sd` of a started volume to free space on `to` (a disk of the group; by
    /// default any disk the volume's other plexes and columns do not use), copying its
    /// contents in the background while guests keep writing. Returns the task id.
    pub fn subdisk_move(
        &self,
        dg: &str,
        sd: &str,
        to: Option<&str>,
        delay: Duration,
    ) -> Result<u64, VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        let old = g
            .cfg
            .subdisks
            .iter()
            .find(|s| s.name == sd)
            .cloned()
            .ok_or_else(|| VolumeError::NotFound {
                kind: "subdisk",
                name: format!("{dg}/{sd}"),
            })?;
        if let Some(sv) = &old.subvolume {
            return Err(VolumeError::Invalid(format!(
                "{sd} is sub-volume {sv} of a layered volume; move that sub-volume's subdisks instead"
            )));
        }
        let plex_name = old
            .plex
            .clone()
            .ok_or_else(|| VolumeError::Invalid(format!("subdisk {sd} belongs to no plex")))?;
        let plex = g
            .cfg
            .plex(&plex_name)
            .cloned()
            .ok_or_else(|| VolumeError::NotFound {
                kind: "plex",
                name: plex_name.clone(),
            })?;
        if matches!(plex.layout, PlexLayout::Raid5 { .. }) {
            return Err(VolumeError::Invalid(format!(
                "subdisk_move is not supported yet for RAID-5 plexes: {sd} is in RAID-5 plex {plex_name}"
            )));
        }
        let vol = plex.volume.clone().ok_or_else(|| {
            VolumeError::Invalid(format!("plex {plex_name} belongs to no volume"))
        })?;
        if !g.volumes.contains_key(&vol) {
            return Err(VolumeError::Invalid(format!(
                "volume {dg}/{vol} is not started; start it before moving its subdisks"
            )));
        }
        if !(plex.state.is_in_sync()
            && plex.kstate == KernelState::Enabled
            && plex.sync_offset.is_none())
        {
            return Err(VolumeError::Invalid(format!(
                "plex {plex_name} is not in sync; attach or recover it instead of moving its subdisks"
            )));
        }
        if self.tasks.busy(dg, &vol) || g.moves.contains_key(&vol) {
            return Err(VolumeError::Busy(format!(
                "volume {dg}/{vol} is locked by another operation (a resync, attach or move is running)"
            )));
        }
        let only = to
            .map(|d| crate::volume::manager::ops::resolve_disks(&g.cfg, &[d.to_string()]))
            .transpose()?;
        // Never onto a disk another plex or column of the volume uses (nor the same disk).
        let mut exclude: Vec<String> = g
            .cfg
            .plexes_of(&vol)
            .iter()
            .flat_map(|p| g.cfg.subdisks_of(&p.name))
            .filter(|s| !(s.plex.as_deref() == Some(plex_name.as_str()) && s.column == old.column))
            .map(|s| s.disk.clone())
            .collect();
        exclude.push(old.disk.clone());
        if let Some(o) = &only {
            if exclude.contains(&o[0]) {
                return Err(VolumeError::Invalid(format!(
                    "disk {} already holds data of volume {dg}/{vol} (or is the subdisk's own disk); the move would lose redundancy",
                    o[0]
                )));
            }
        }
        let mut cfg = g.cfg.clone();
        let new = take_space(
            &mut cfg,
            g,
            self.tasks.fences(),
            old.len,
            exclude,
            only,
            true,
        )?
        .remove(0);
        g.commit(&self.engine, cfg)?;
        g.moves.insert(
            vol.clone(),
            Move {
                plex: plex_name.clone(),
                old: old.name.clone(),
                new: new.clone(),
            },
        );
        self.publish(g, &vol);
        let shared = g
            .volumes
            .get(&vol)
            .cloned()
            .ok_or_else(|| VolumeError::Invalid(format!("volume {dg}/{vol} is not started")))?;
        let map = shared.map();
        let src = map.plexes.iter().position(|p| p.name == plex_name);
        let dst = map
            .plexes
            .iter()
            .position(|p| p.name == format!("{plex_name}{SHADOW_SUFFIX}"));
        let (Some(src), Some(dst)) = (src, dst) else {
            g.moves.remove(&vol);
            self.publish(g, &vol);
            return Err(VolumeError::Invalid(format!(
                "plex {plex_name} is not in the volume's map"
            )));
        };
        let copy_plex = |i: usize| CopyPlex {
            geometry: map.plexes[i].geometry.clone(),
            disks: map.disks.clone(),
        };
        let (source, target) = (copy_plex(src), copy_plex(dst));
        let len = g.cfg.volume(&vol).map_or(0, |v| v.len);
        // A concat plex only needs the subdisk's own range copied; a stripe column is spread
        // over the whole plex.
        let (from, end) = match plex.layout {
            PlexLayout::Concat => (
                old.column_offset.min(len),
                (old.column_offset + old.len).min(len),
            ),
            PlexLayout::Stripe { .. } | PlexLayout::Raid5 { .. } => (0, len),
        };
        let bs = g.cfg.block_size as u64;
        let task = self.tasks.add(TaskSpec {
            kind: "subdisk_move",
            dg,
            volume: &vol,
            plex: Some(&plex_name),
            targets: &[],
            source: Some(&plex_name),
            start: from,
            total: end,
            todo: None,
            why_full: None,
        });
        let id = task.id;
        let vm = self
            .me
            .upgrade()
            .ok_or_else(|| VolumeError::Invalid("the volume manager is shutting down".into()))?;
        tracing::info!(dg = %dg, subdisk = %sd, to = %new.name, "subdisk move started");
        std::thread::Builder::new()
            .name(format!("move {sd}"))
            .spawn(move || {
                let targets = [target];
                let r = task::copy(&CopyIo { engine: &vm.engine, task: &task, barrier: shared.barrier(), block_size: bs }, &source, &targets, end, delay, |_| {}, |_, _| false);
                let r = crate::volume::manager::flush_copied(&vm.engine, r, &targets);
                // No swap while a write that used the shadow is in flight or waits for its
                // failure to be recorded: such a failure must still find the move (and
                // abandon it) rather than be acknowledged over a swapped plex that lacks the
                // write. Writes wait in their channels until the new map is published.
                // Flushes do not enter the barrier: one that fails on the shadow and is
                // handled after the swap fails the plex instead (`handle_event`).
                let _quiet = match &r {
                    Ok(true) if !task.cancelled() => {
                        #[cfg(test)]
                        task.hook(task::HookPoint::MoveCopied);
                        shared.barrier().raise_all(task.cancel_flag())
                    }
                    _ => None,
                };
                let mut groups = vm.lock();
                let Some(g) = groups.get_mut(&task.dg) else {
                    task.set_state(TaskState::Cancelled);
                    return;
                };
                let Some(mv) = g.moves.remove(&task.volume) else {
                    task.set_state(TaskState::Cancelled);
                    return;
                };
                let mut cfg = g.cfg.clone();
                let outcome = match r {
                    Ok(true) if !task.cancelled() => {
                        // Swap: the new subdisk takes the old one's place.
                        let place = cfg.subdisks.iter().find(|s| s.name == mv.old).cloned();
                        cfg.subdisks.retain(|s| s.name != mv.old);
                        if let (Some(place), Some(n)) = (
                            place,
                            cfg.subdisks.iter_mut().find(|s| s.name == mv.new.name),
                        ) {
                            n.plex = place.plex;
                            n.column = place.column;
                            n.column_offset = place.column_offset;
                        }
                        TaskState::Done
                    }
                    Ok(_) => TaskState::Cancelled,
                    Err(e) => TaskState::Failed(e),
                };
                if outcome != TaskState::Done {
                    cfg.subdisks.retain(|s| s.name != mv.new.name);
                }
                let committed = g.commit(&vm.engine, cfg);
                vm.publish(g, &task.volume);
                match (committed, outcome) {
                    (Ok(()), TaskState::Done) => {
                        tracing::info!(dg = %task.dg, from = %mv.old, to = %mv.new.name, "subdisk moved");
                        task.set_state(TaskState::Done);
                    }
                    (Ok(()), other) => task.set_state(other),
                    (Err(e), _) => task.set_state(TaskState::Failed(e.to_string())),
                }
            })
            .map_err(|e| VolumeError::Invalid(format!("cannot start the move thread: {e}")))?;
        Ok(id)
    }
}
