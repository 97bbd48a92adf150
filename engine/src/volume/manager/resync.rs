//! Copies that make plexes equal, run as tasks: the read-writeback resync of a mirrored
//! volume that was running when plexd died, and plex attach (a new or stale mirror brought up
//! to date while guests keep writing). Both checkpoint their progress in the configuration
//! and resume from it when the volume next starts.

use std::sync::Arc;
use std::time::Duration;

use crate::volume::copy::task::{self, CopyIo, CopyPlex, PlexIoError, Task, TaskSpec, TaskState};
use crate::volume::error::VolumeError;
use crate::volume::io::driver::VolumeMap;
use crate::volume::manager::{group_mut, Group, VolumeManager};
use crate::volume::model::alloc::{self, AllocRequest};
use crate::volume::model::objects::{
    DiskCondition, KernelState, PlexRecord, PlexState, VolumeState,
};

fn copy_plex(map: &VolumeMap, idx: usize) -> CopyPlex {
    CopyPlex {
        geometry: map.plexes[idx].geometry.clone(),
        disks: map.disks.clone(),
    }
}

impl VolumeManager {
    /// Starts the resync of volume `vol` (state SYNC): every other writable plex is made equal
    /// to the map's read source, from the recorded checkpoint on.
    pub(crate) fn start_resync(&self, g: &mut Group, vol: &str) {
        let dg = g.cfg.name.clone();
        let (Some(shared), Some(v)) = (g.volumes.get(vol).cloned(), g.cfg.volume(vol)) else {
            return;
        };
        let map = shared.map();
        let Some(src) = map.read_source else {
            return;
        };
        let target_idx: Vec<usize> = (0..map.plexes.len())
            .filter(|&i| i != src && map.plexes[i].writable)
            .collect();
        let targets: Vec<CopyPlex> = target_idx.iter().map(|&i| copy_plex(&map, i)).collect();
        let names: Vec<String> = target_idx
            .iter()
            .map(|&i| map.plexes[i].name.clone())
            .collect();
        let source = copy_plex(&map, src);
        let start = v.resync_offset.unwrap_or(0).min(v.len);
        let len = v.len;
        let bs = g.cfg.block_size as u64;
        let source_name = map.plexes[src].name.clone();
        let task = self.tasks.add(TaskSpec {
            kind: "resync",
            dg: &dg,
            volume: vol,
            plex: None,
            targets: &names,
            source: Some(&source_name),
            start,
            total: len,
            todo: None,
            why_full: None,
        });
        shared.resync.store(Some(task.progress().clone()));
        tracing::info!(dg = %dg, volume = %vol, from = start, "resync started (reads served from {})", map.plexes[src].name);
        let Some(vm) = self.me.upgrade() else {
            return;
        };
        let vol = vol.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("resync {dg}/{vol}"))
            .spawn(move || {
                let r = task::copy(&CopyIo { engine: &vm.engine, task: &task, barrier: shared.barrier(), block_size: bs }, &source, &targets, len, Duration::ZERO, |off| vm.checkpoint(&task, &targets, |cfg| {
                        if let Some(v) = cfg.volume_mut(&task.volume) {
                            v.resync_offset = Some(off);
                        }
                    }), |i, e| vm.resync_target_failed(&task, &names[i], e));
                let r = crate::volume::manager::flush_copied(&vm.engine, r, &targets);
                vm.finish_task(&task, r, |g, t| {
                    let mut cfg = g.cfg.clone();
                    if let Some(v) = cfg.volume_mut(&t.volume) {
                        v.state = VolumeState::Active;
                        v.resync_offset = None;
                    }
                    g.commit(&vm.engine, cfg)?;
                    vm.publish(g, &t.volume);
                    tracing::info!(dg = %t.dg, volume = %t.volume, "resync complete: every plex holds the same data");
                    Ok(())
                });
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the resync thread: {e}");
        }
    }

    /// Restarts the attach copies of volume `vol`'s plexes that have a checkpoint.
    pub(crate) fn resume_attaches(&self, g: &mut Group, vol: &str) {
        let plexes: Vec<(String, u64)> = g
            .cfg
            .plexes_of(vol)
            .iter()
            .filter(|p| p.kstate == KernelState::Enabled)
            .filter_map(|p| p.sync_offset.map(|o| (p.name.clone(), o)))
            .collect();
        for (p, off) in plexes {
            if let Err(e) = self.spawn_attach(g, vol, &p, off, Duration::ZERO) {
                tracing::error!(volume = %vol, plex = %p, "cannot resume the attach: {e}");
            }
        }
    }

    /// Adds a mirror to a started volume: a new plex allocated like the volume's first plex on
    /// disks the volume does not use yet (or `plex`, an existing stale or detached plex of the
    /// volume), which receives every write at once and is filled in the background from an
    /// in-sync plex. Returns the task id.
    pub fn plex_attach(
        &self,
        dg: &str,
        vol: &str,
        plex: Option<&str>,
        alloc_disks: Option<&[String]>,
        delay: Duration,
    ) -> Result<u64, VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        let v = g
            .cfg
            .volume(vol)
            .cloned()
            .ok_or_else(|| VolumeError::NotFound {
                kind: "volume",
                name: format!("{dg}/{vol}"),
            })?;
        crate::volume::manager::raid5_ops::refuse_raid5(
            g,
            vol,
            "a RAID-5 volume has one RAID-5 plex; mirrors of it are not supported (nor is re-attaching its plex yet)",
        )?;
        if !g.volumes.contains_key(vol) {
            return Err(VolumeError::Invalid(format!(
                "volume {dg}/{vol} is not started; start it before attaching a plex"
            )));
        }
        if self.tasks.busy(dg, vol) {
            return Err(VolumeError::Busy(format!(
                "volume {dg}/{vol} is locked by another operation (a resync or attach is running); wait for it with task_wait"
            )));
        }
        let subs = crate::volume::manager::layered::subvolumes(g, vol);
        if !subs.is_empty() {
            return Err(VolumeError::Invalid(format!(
                "{dg}/{vol} is a layered volume: attach mirrors to its sub-volumes ({})",
                subs.join(", ")
            )));
        }
        let plexes: Vec<PlexRecord> = g.cfg.plexes_of(vol).into_iter().cloned().collect();
        let Some(model) = plexes
            .iter()
            .find(|p| p.state.is_in_sync() && p.kstate == KernelState::Enabled)
            .cloned()
        else {
            return Err(VolumeError::Invalid(format!(
                "volume {dg}/{vol} has no plex with current data to copy from"
            )));
        };
        let mut cfg = g.cfg.clone();
        let name = match plex {
            Some(p) => {
                let rec =
                    plexes
                        .iter()
                        .find(|r| r.name == p)
                        .ok_or_else(|| VolumeError::NotFound {
                            kind: "plex of this volume",
                            name: format!("{dg}/{p}"),
                        })?;
                if rec.state.is_in_sync() && rec.kstate == KernelState::Enabled {
                    return Err(VolumeError::Invalid(format!(
                        "plex {p} is already attached and in sync"
                    )));
                }
                let on_bad_disk = cfg.subdisks_of(p).iter().any(|s| {
                    !g.members.contains_key(&s.disk)
                        || cfg
                            .disk(&s.disk)
                            .is_some_and(|d| d.condition != DiskCondition::Ok)
                });
                if on_bad_disk {
                    return Err(VolumeError::Invalid(format!(
                        "plex {p} has subdisks on a missing or failed disk; attach a new plex instead"
                    )));
                }
                p.to_string()
            }
            None => {
                if plexes.len() >= crate::volume::model::objects::MAX_PLEXES {
                    return Err(VolumeError::Invalid(format!(
                        "volume {dg}/{vol} already has {} plexes",
                        plexes.len()
                    )));
                }
                let mut used: Vec<String> = plexes
                    .iter()
                    .flat_map(|p| cfg.subdisks_of(&p.name))
                    .map(|s| s.disk.clone())
                    .collect();
                // A column of a layered volume stays off its sibling columns' disks.
                if let Some(parent) = v.parent.as_deref() {
                    for sib in crate::volume::manager::layered::subvolumes(g, parent) {
                        used.extend(
                            cfg.plexes_of(&sib)
                                .iter()
                                .flat_map(|p| cfg.subdisks_of(&p.name))
                                .map(|s| s.disk.clone()),
                        );
                    }
                }
                let space = crate::volume::manager::ops::usable_space(g, &cfg, self.tasks.fences());
                let disks = alloc_disks
                    .map(|l| crate::volume::manager::ops::resolve_disks(&cfg, l))
                    .transpose()?;
                let plan = alloc::allocate(
                    &space,
                    &AllocRequest {
                        len: v.len,
                        nmirror: 1,
                        ncol: model.layout.ncol(),
                        stripe_unit: model.layout.stripe_unit().unwrap_or(1),
                        disks,
                        exclude: used,
                    },
                )?;
                cfg.add_plex(
                    vol,
                    model.layout,
                    PlexState::Stale,
                    KernelState::Detached,
                    &plan[0].columns,
                )
            }
        };
        if let Some(p) = cfg.plex_mut(&name) {
            p.state = PlexState::Stale;
            p.kstate = KernelState::Enabled;
            p.sync_offset = Some(0);
        }
        g.commit(&self.engine, cfg)?;
        self.publish(g, vol);
        self.spawn_attach(g, vol, &name, 0, delay)
    }

    pub(crate) fn spawn_attach(
        &self,
        g: &mut Group,
        vol: &str,
        plex: &str,
        from: u64,
        delay: Duration,
    ) -> Result<u64, VolumeError> {
        let dg = g.cfg.name.clone();
        let shared = g
            .volumes
            .get(vol)
            .cloned()
            .ok_or_else(|| VolumeError::Invalid(format!("volume {dg}/{vol} is not started")))?;
        let len = g.cfg.volume(vol).map_or(0, |v| v.len);
        let map = shared.map();
        let target = map
            .plexes
            .iter()
            .position(|p| p.name == plex && p.writable)
            .ok_or_else(|| VolumeError::Invalid(format!("plex {plex} is not receiving writes")))?;
        let src = map.plexes.iter().position(|p| p.readable).ok_or_else(|| {
            VolumeError::Invalid(format!("volume {dg}/{vol} has no readable plex"))
        })?;
        let source = copy_plex(&map, src);
        let targets = vec![copy_plex(&map, target)];
        let bs = g.cfg.block_size as u64;
        let task = self.tasks.add(TaskSpec {
            kind: "plex_attach",
            dg: &dg,
            volume: vol,
            plex: Some(plex),
            targets: &[],
            source: Some(&map.plexes[src].name),
            start: from.min(len),
            total: len,
            todo: None,
            why_full: None,
        });
        let id = task.id;
        let vm = self
            .me
            .upgrade()
            .ok_or_else(|| VolumeError::Invalid("the volume manager is shutting down".into()))?;
        tracing::info!(dg = %dg, volume = %vol, plex = %plex, from, "plex attach started (copying from {})", map.plexes[src].name);
        std::thread::Builder::new()
            .name(format!("attach {plex}"))
            .spawn(move || {
                let pname = task.plex.clone().unwrap_or_default();
                let r = task::copy(&CopyIo { engine: &vm.engine, task: &task, barrier: shared.barrier(), block_size: bs }, &source, &targets, len, delay, |off| {
                        vm.checkpoint(&task, &targets, |cfg| {
                            if let Some(p) = cfg.plex_mut(&pname) {
                                if p.kstate == KernelState::Enabled && p.sync_offset.is_some() {
                                    p.sync_offset = Some(off);
                                }
                            }
                        })
                    }, |_, _| false);
                let r = crate::volume::manager::flush_copied(&vm.engine, r, &targets);
                vm.finish_task(&task, r, |g, t| {
                    let mut cfg = g.cfg.clone();
                    let Some(p) = t.plex.as_deref().and_then(|p| cfg.plex_mut(p)) else {
                        return Err(VolumeError::Invalid("the plex being attached is gone".into()));
                    };
                    // Only a plex that took every write during the copy may become ACTIVE.
                    if p.kstate != KernelState::Enabled || p.sync_offset.is_none() {
                        return Err(VolumeError::Invalid(format!(
                            "plex {} was detached during the copy",
                            p.name
                        )));
                    }
                    p.state = PlexState::Active;
                    p.sync_offset = None;
                    g.commit(&vm.engine, cfg)?;
                    vm.publish(g, &t.volume);
                    tracing::info!(dg = %t.dg, volume = %t.volume, plex = ?t.plex, "plex attach complete");
                    Ok(())
                });
            })
            .map_err(|e| VolumeError::Invalid(format!("cannot start the attach thread: {e}")))?;
        Ok(id)
    }

    /// A resync's write to target `plex` failed: the plex is detached (IOFAIL, durable), which
    /// stops this resync and starts it again from its checkpoint without that plex, so the
    /// other targets still get in sync. Returns false if the detach could not be recorded.
    fn resync_target_failed(&self, task: &Task, plex: &str, err: &str) -> bool {
        let mut groups = self.lock();
        if task.cancelled() {
            return true;
        }
        tracing::error!(dg = %task.dg, volume = %task.volume, plex = %plex, "resync write failed: {err}");
        match self.detach_failed(
            &mut groups,
            &task.dg,
            &task.volume,
            &[plex.to_string()],
            "a resync write failed",
        ) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(dg = %task.dg, volume = %task.volume, plex = %plex, "cannot record the failed resync target: {e}");
                false
            }
        }
    }

    /// Records a copy's progress once the `targets`' disks are flushed (skipped once the task
    /// was cancelled: whoever cancelled it owns the configuration now).
    pub(crate) fn checkpoint(
        &self,
        task: &Task,
        targets: &[CopyPlex],
        f: impl FnOnce(&mut crate::volume::model::objects::DgConfig),
    ) {
        if let Err(e) = crate::volume::manager::flush_targets(&self.engine, targets) {
            tracing::warn!(dg = %task.dg, volume = %task.volume, "copy progress not recorded: {e}");
            return;
        }
        let mut groups = self.lock();
        if task.cancelled() {
            return;
        }
        let Some(g) = groups.get_mut(&task.dg) else {
            return;
        };
        let mut cfg = g.cfg.clone();
        f(&mut cfg);
        if let Err(e) = g.commit(&self.engine, cfg) {
            tracing::warn!(dg = %task.dg, volume = %task.volume, "cannot record copy progress: {e}");
        }
    }

    pub(crate) fn finish_task(
        &self,
        task: &Arc<Task>,
        r: Result<bool, String>,
        done: impl FnOnce(&mut Group, &Task) -> Result<(), VolumeError>,
    ) {
        let mut groups = self.lock();
        match r {
            Ok(true) if !task.cancelled() => {
                let res = match groups.get_mut(&task.dg) {
                    Some(g) => done(g, task),
                    None => Err(VolumeError::NotFound {
                        kind: "disk group",
                        name: task.dg.clone(),
                    }),
                };
                match res {
                    Ok(()) => task.set_state(TaskState::Done),
                    Err(e) => task.set_state(TaskState::Failed(e.to_string())),
                }
            }
            Ok(_) => task.set_state(TaskState::Cancelled),
            Err(e) => {
                tracing::error!(dg = %task.dg, volume = %task.volume, "{} failed: {e}", task.kind);
                task.set_state(TaskState::Failed(e));
            }
        }
    }
}

/// Read errors a plex may have repaired (since import) before it is detached.
pub const READ_ERROR_BUDGET: u32 = 8;

impl VolumeManager {
    /// Rewrites `[offset, offset + num)` on the plexes in `bad` (whose reads failed) from plex
    /// `good` (indices into `map`, the map the read used), chunk by chunk under the write
    /// barrier (so no guest write in between is overwritten) and with the volume's current map
    /// (the plexes may have moved since the repair was queued). A plex whose rewrite fails, or
    /// that has used up its read-error budget, is detached (IOFAIL); the volume keeps serving
    /// from the others. Nothing is done once the volume was stopped.
    pub(crate) fn repair_read(
        &self,
        volume: &Arc<crate::volume::io::driver::VolumeShared>,
        map: &VolumeMap,
        bad: u64,
        good: usize,
        offset: u64,
        num: u64,
    ) {
        let Some(good_name) = map.plexes.get(good).map(|p| p.name.clone()) else {
            return;
        };
        for b in (0..map.plexes.len()).filter(|b| bad & (1 << b) != 0) {
            let name = map.plexes[b].name.clone();
            // Registered like a copy, so that a detach, stop, deport or shutdown cancels it
            // (promptly even if the disk never answers: its write is then fenced). Under the
            // group lock: an operation either cancels it, or published its map (or stopped the
            // volume) before, and the repair sees that. A repair of a volume that is no longer
            // the running one (stopped, deleted, maybe created again) does nothing.
            let task = {
                let groups = self.lock();
                let live = groups
                    .get(volume.dg())
                    .and_then(|g| g.volumes.get(volume.volume()))
                    .is_some_and(|s| Arc::ptr_eq(s, volume));
                if !live {
                    return;
                }
                self.tasks
                    .start_repair(volume.dg(), volume.volume(), &good_name, &name)
            };
            let r = repair_range(
                &self.engine,
                &task,
                volume,
                (&good_name, &name),
                offset,
                num,
            );
            self.tasks.end_repair(&task);
            let r = match r {
                Ok(Some(rewritten)) => Ok(rewritten),
                // Cancelled: whoever cancelled it decides the plex's fate.
                Ok(None) => return,
                Err(e) => Err(e),
            };
            let mut groups = self.lock();
            let (dg, vol) = (volume.dg(), volume.volume());
            // A volume stopped (or deleted, and maybe created again) meanwhile: its plexes'
            // counts and states are no longer this repair's business.
            let live = groups
                .get(dg)
                .and_then(|g| g.volumes.get(vol))
                .is_some_and(|s| Arc::ptr_eq(s, volume));
            let detach = match &r {
                _ if !live => None,
                Ok(false) => None,
                Err(e) => {
                    tracing::error!(dg = %dg, volume = %vol, plex = %name, "rewriting blocks {offset}+{num} after a read error failed: {e}");
                    Some("a read error could not be repaired")
                }
                Ok(true) => {
                    let count = groups.get_mut(dg).map_or(0, |g| {
                        let c = g.read_errors.entry(name.clone()).or_insert(0);
                        *c += 1;
                        *c
                    });
                    tracing::warn!(dg = %dg, volume = %vol, plex = %name, errors = count, "read error repaired: blocks {offset}+{num} rewritten from {good_name}");
                    (count > READ_ERROR_BUDGET).then_some("too many read errors")
                }
            };
            if let Some(why) = detach {
                if let Err(e) =
                    self.detach_failed(&mut groups, dg, vol, std::slice::from_ref(&name), why)
                {
                    tracing::error!(dg = %dg, volume = %vol, plex = %name, "cannot record the detach: {e}");
                }
            }
        }
    }
}

/// Copies `[offset, offset + num)` from plex `names.0` to plex `names.1`, one barrier chunk
/// at a time, each with the map current while its bucket is raised (a subdisk move swaps
/// under every bucket, so a repair queued before it writes the new place); stops once the
/// source no longer serves reads, the target no longer takes writes, or the volume's repairs
/// are fenced (stopped volume, plex being dissociated). Returns whether any chunk was
/// rewritten, or None if `task` (the repair's registration) was cancelled first (a write
/// still in flight then is fenced).
fn repair_range(
    engine: &crate::Engine,
    task: &Task,
    volume: &crate::volume::io::driver::VolumeShared,
    names: (&str, &str),
    offset: u64,
    num: u64,
) -> Result<Option<bool>, String> {
    let barrier = volume.barrier();
    let chunk = barrier.chunk_blocks();
    let end = offset + num;
    let mut at = offset;
    let mut rewritten = false;
    while at < end {
        let c = at / chunk;
        let n = (chunk - at % chunk).min(end - at);
        let _g = task.chunk_lock();
        if task.cancelled() || !barrier.raise(c, task.cancel_flag()) {
            return Ok(None);
        }
        let cur = volume.map();
        let src = cur
            .plexes
            .iter()
            .position(|p| p.name == names.0 && p.readable);
        let tgt = cur
            .plexes
            .iter()
            .position(|p| p.name == names.1 && p.writable);
        let (Some(src), Some(tgt), Some(bs)) =
            (src, tgt, cur.disks.first().map(|d| d.block_size() as u64))
        else {
            barrier.lower(c);
            return Ok(Some(rewritten));
        };
        let (source, target) = (copy_plex(&cur, src), copy_plex(&cur, tgt));
        let mut buf = vec![0u8; (n * bs) as usize];
        let io = |p: &CopyPlex, op, buf: &mut [u8]| {
            task::plex_io(
                &CopyIo {
                    engine,
                    task,
                    barrier,
                    block_size: bs,
                },
                p,
                at,
                n,
                op,
                buf,
            )
        };
        let r = io(&source, crate::bdev::IoType::Read, &mut buf)
            .and_then(|_| io(&target, crate::bdev::IoType::Write, &mut buf));
        // A write still in flight keeps the chunk raised through its fence.
        barrier.lower(c);
        match r {
            Ok(()) => {}
            Err(PlexIoError::Stopped) => return Ok(None),
            Err(PlexIoError::Failed(e)) => return Err(e),
        }
        rewritten = true;
        at += n;
    }
    Ok(Some(rewritten))
}
