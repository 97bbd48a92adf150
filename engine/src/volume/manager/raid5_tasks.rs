//! RAID-5 recovery and checks as tasks: the parity resync after a crash, the rebuild of a
//! stale column (`volume_recover`, VxVM's vxrecover), and the scrub (`volume_check`, md's
//! check/repair). *What* each does to a row is in `copy::raid5`; here is when they run and
//! what is recorded when they end.
//!
//! - **Parity resync.** A RAID-5 volume without a log that was running when plexd died may
//!   have rows whose parity does not match their data (a torn write: the write hole). At its
//!   next start it is SYNC while every row's parity is recomputed from its data (reads are
//!   served meanwhile: they never read parity). A crashed volume that is also degraded cannot
//!   be repaired that way (the missing column is known only through the parity that may be
//!   wrong): it is refused unless started with `force`.
//! - **Rebuild.** A stale column whose disks are all present is rebuilt in place from the
//!   others, rows in order; its checkpoint is the plex's `sync_offset` (a logical block at a
//!   row boundary), so a rebuild stopped cleanly resumes there; after a crash it starts again
//!   from row 0 (`start_volume_with` resets the checkpoints of a crashed volume, since rows
//!   below it may have been written without their parity reaching the disks; resuming from
//!   the checkpoint plus the dirty regions is issue 13's work). The I/O path treats the column
//!   as current below the rebuild's progress (`VolumeShared::raid5_missing`); a write failure
//!   on it stops the rebuild and leaves it stale.
//! - **Check.** Counts the rows whose parity is not the XOR of their data and, with `repair`,
//!   rewrites their parity.

use std::sync::Arc;
use std::time::Duration;

use crate::volume::copy::raid5::{run_rows, Mismatches, RowPlex, RowWork};
use crate::volume::copy::task::{CopyIo, Task, TaskSpec};
use crate::volume::error::VolumeError;
use crate::volume::io::driver::VolumeShared;
use crate::volume::manager::{group_mut, raid5_ops, Group, VolumeManager};
use crate::volume::model::objects::VolumeState;

/// Task kinds.
const RESYNC: &str = "parity_resync";
const REBUILD: &str = "rebuild";
const CHECK: &str = "check";

/// The RAID-5 plex of volume `vol` in `g`, if it is a RAID-5 volume.
pub(crate) fn raid5_plex(g: &Group, vol: &str) -> Option<String> {
    raid5_ops::raid5_plex(&g.cfg, vol).map(|p| p.name.clone())
}

/// Whether RAID-5 plex `plex` has a column without current data.
pub(crate) fn raid5_degraded(g: &Group, plex: &str) -> bool {
    g.cfg
        .plex(plex)
        .is_some_and(|p| !raid5_ops::missing_columns(g, p).is_empty())
}

/// Volume `vol` of `g`, a RAID-5 volume that is started and has no task running, for
/// `what` (an operation name in the errors): its RAID-5 plex and shared state. `not_raid5`
/// tells a user what to do for other volumes.
fn started_raid5(
    vm: &VolumeManager,
    g: &Group,
    vol: &str,
    what: &str,
    not_raid5: &str,
) -> Result<(String, Arc<VolumeShared>), VolumeError> {
    let dg = &g.cfg.name;
    if g.cfg.volume(vol).is_none() {
        return Err(VolumeError::NotFound {
            kind: "volume",
            name: format!("{dg}/{vol}"),
        });
    }
    let Some(plex) = raid5_plex(g, vol) else {
        return Err(VolumeError::Invalid(format!(
            "volume {dg}/{vol} is not a RAID-5 volume; {not_raid5}"
        )));
    };
    let Some(shared) = g.volumes.get(vol).cloned() else {
        return Err(VolumeError::Invalid(format!(
            "volume {dg}/{vol} is not started; start it before {what}"
        )));
    };
    if vm.tasks.busy(dg, vol) {
        return Err(VolumeError::Busy(format!(
            "volume {dg}/{vol} is locked by another operation (a resync, rebuild or check is running); wait for it with task_wait"
        )));
    }
    Ok((plex, shared))
}

impl VolumeManager {
    /// Starts what started RAID-5 volume `vol` needs: its parity resync (state SYNC) or the
    /// rebuild its plex's checkpoint says was running.
    pub(crate) fn start_raid5_tasks(&self, g: &mut Group, vol: &str) {
        let Some(plex) = raid5_plex(g, vol) else {
            return;
        };
        let syncing = g
            .cfg
            .volume(vol)
            .is_some_and(|v| v.state == VolumeState::Sync);
        if syncing {
            self.spawn_resync(g, vol);
        } else if g.cfg.plex(&plex).is_some_and(|p| p.sync_offset.is_some()) {
            if let Err(e) = self.spawn_rebuild(g, vol, Duration::ZERO) {
                tracing::error!(dg = %g.cfg.name, volume = %vol, "cannot resume the rebuild: {e}");
            }
        }
    }

    /// Rebuilds the stale column of RAID-5 volume `vol`: a task; returns its id. In place when
    /// its disks are all present and no `disk` is named (a disk that failed came back);
    /// otherwise on new space, on `disk` or on any disk no other column or log uses (a disk
    /// that is gone for good is replaced), the column's old subdisks being freed. `delay` is
    /// slept between chunks (throttle).
    pub fn volume_recover(
        &self,
        dg: &str,
        vol: &str,
        disk: Option<&str>,
        delay: Duration,
    ) -> Result<u64, VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        let (plex, _) = started_raid5(
            self,
            g,
            vol,
            "recovering it",
            "mirrors are recovered with plex_attach",
        )?;
        if g.cfg.plex(&plex).is_none_or(|p| p.stale_columns.is_empty()) {
            return Err(VolumeError::Invalid(format!(
                "RAID-5 volume {dg}/{vol} has no stale column: nothing to recover"
            )));
        }
        let mut cfg = g.cfg.clone();
        let stale = cfg.plex(&plex).map_or(0, |p| p.stale_columns.len());
        if stale > 1 {
            return Err(VolumeError::Invalid(format!(
                "RAID-5 volume {dg}/{vol} has {stale} stale columns: its data cannot be rebuilt (a forced start trusts the last column to fail)"
            )));
        }
        let column = cfg
            .plex(&plex)
            .and_then(|p| p.stale_columns.first().copied());
        let absent =
            column.is_some_and(|c| !raid5_ops::absent_column_disks(g, &plex, c).is_empty());
        if let (Some(c), true) = (column, absent || disk.is_some()) {
            self.move_column(g, &mut cfg, &plex, c, disk)?;
        }
        if let Some(p) = cfg.plex_mut(&plex) {
            // A moved column starts over; one rebuilt in place resumes.
            p.sync_offset.get_or_insert(0);
        }
        g.commit(&self.engine, cfg)?;
        // The rebuild works on the map with the column's new place.
        self.publish(g, vol);
        self.spawn_rebuild(g, vol, delay)
    }

    /// Gives column `column` of RAID-5 plex `plex` new space in `cfg` (as long as it had): on
    /// `disk`, or on any usable disk that no other column and no log of the volume uses; the
    /// old subdisks are removed (their space is free once committed). The column stays stale
    /// and its rebuild starts from row 0.
    fn move_column(
        &self,
        g: &Group,
        cfg: &mut crate::volume::model::objects::DgConfig,
        plex: &str,
        column: u32,
        disk: Option<&str>,
    ) -> Result<(), VolumeError> {
        use crate::volume::model::alloc::{self, AllocRequest};
        use crate::volume::model::objects::SubdiskRecord;
        let dg = cfg.name.clone();
        let vol = cfg
            .plex(plex)
            .and_then(|p| p.volume.clone())
            .unwrap_or_default();
        let old: Vec<SubdiskRecord> = cfg
            .subdisks_of(plex)
            .into_iter()
            .filter(|s| s.column == column)
            .cloned()
            .collect();
        let len: u64 = old.iter().map(|s| s.len).sum();
        let used: Vec<String> = cfg
            .plexes_of(&vol)
            .iter()
            .flat_map(|p| cfg.subdisks_of(&p.name))
            .filter(|s| !(s.plex.as_deref() == Some(plex) && s.column == column))
            .map(|s| s.disk.clone())
            .collect();
        let disks = disk
            .map(|d| crate::volume::manager::ops::resolve_disks(cfg, &[d.to_string()]))
            .transpose()?;
        if let Some(d) = disks.as_ref().and_then(|v| v.first()) {
            if used.contains(d) {
                return Err(VolumeError::Invalid(format!(
                    "disk {d} already holds another column or a log of {dg}/{vol}: a RAID-5 column must be on a disk of its own"
                )));
            }
        }
        let space = crate::volume::manager::ops::usable_space(g, cfg, self.tasks.fences());
        let plan = alloc::allocate(
            &space,
            &AllocRequest {
                len,
                nmirror: 1,
                ncol: 1,
                stripe_unit: 1,
                disks,
                exclude: used,
            },
        )
        .map_err(|e| e.for_layout(format!("column {column} of RAID-5 volume {dg}/{vol}")))?;
        let Some(extents) = plan.first().and_then(|p| p.columns.first()) else {
            return Err(VolumeError::Invalid(format!(
                "no space for column {column} of {dg}/{vol}"
            )));
        };
        cfg.subdisks
            .retain(|s| !(s.plex.as_deref() == Some(plex) && s.column == column));
        let mut at = 0;
        for (d, off, n) in extents {
            let name = cfg.next_name(&format!("{d}-"), |x| cfg.name_taken(x));
            cfg.subdisks.push(SubdiskRecord {
                name,
                disk: d.clone(),
                disk_offset: *off,
                len: *n,
                plex: Some(plex.to_string()),
                column,
                column_offset: at,
                subvolume: None,
            });
            at += n;
        }
        if let Some(p) = cfg.plex_mut(plex) {
            p.sync_offset = Some(0);
        }
        tracing::info!(dg = %dg, volume = %vol, plex = %plex, column, disks = ?extents.iter().map(|e| e.0.clone()).collect::<Vec<_>>(), "RAID-5 column moved to new space; it is rebuilt there");
        Ok(())
    }

    /// Checks the parity of every row of RAID-5 volume `vol` (a task; returns its id): the
    /// rows whose parity is not the XOR of their data are counted in the task's result and,
    /// with `repair`, their parity is rewritten.
    pub fn volume_check(&self, dg: &str, vol: &str, repair: bool) -> Result<u64, VolumeError> {
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        let (plex, shared) = started_raid5(
            self,
            g,
            vol,
            "checking it",
            "checking mirrors is not built yet",
        )?;
        if raid5_degraded(g, &plex) {
            return Err(VolumeError::Invalid(format!(
                "RAID-5 volume {dg}/{vol} is degraded: its parity is what holds the missing column, there is nothing to check it against; recover it first"
            )));
        }
        let task = self.spawn_rows(
            g,
            vol,
            &shared,
            RowWork::Check { repair },
            0,
            Duration::ZERO,
            |_, _| {},
            move |_vm, _g, t, found| {
                let what = if repair { "repaired" } else { "found" };
                t.set_result(serde_json::json!({
                    "mismatch_rows": found.rows,
                    "mismatch_ranges": found.ranges,
                    "repaired": repair,
                }));
                if found.rows > 0 {
                    tracing::warn!(dg = %t.dg, volume = %t.volume, rows = found.rows, ranges = ?found.ranges, "parity check: {} rows whose parity does not match their data {what}", found.rows);
                } else {
                    tracing::info!(dg = %t.dg, volume = %t.volume, "parity check: every row's parity matches its data");
                }
                Ok(())
            },
        )?;
        Ok(task)
    }

    /// A forced start of RAID-5 volume `vol` whose plex `plex` has two or more stale columns
    /// (offline): the column that failed last is trusted again (it held every write until the
    /// volume went offline, but a write in flight then may be torn in it), so the plex serves
    /// degraded. Committed before the start.
    pub(crate) fn trust_last_failed_column(
        &self,
        g: &mut Group,
        vol: &str,
        plex: &str,
    ) -> Result<(), VolumeError> {
        let mut cfg = g.cfg.clone();
        let Some(p) = cfg.plex_mut(plex) else {
            return Ok(());
        };
        if p.stale_columns.len() < 2 {
            return Ok(());
        }
        let Some(c) = p.stale_columns.pop() else {
            return Ok(());
        };
        p.sync_offset = None;
        tracing::warn!(dg = %g.cfg.name, volume = %vol, plex = %plex, column = c, "forced start of an offline RAID-5 volume: column {c}, the last to fail, is trusted again; rows a write in flight tore when it failed may read back wrong");
        g.commit(&self.engine, cfg)
    }

    /// Starts the parity resync of RAID-5 volume `vol` (state SYNC) from its checkpoint.
    fn spawn_resync(&self, g: &mut Group, vol: &str) {
        let Some(shared) = g.volumes.get(vol).cloned() else {
            return;
        };
        let start = g.cfg.volume(vol).and_then(|v| v.resync_offset).unwrap_or(0);
        let r = self.spawn_rows(
            g,
            vol,
            &shared,
            RowWork::Resync,
            start,
            Duration::ZERO,
            {
                let vol = vol.to_string();
                move |cfg, off| {
                    if let Some(v) = cfg.volume_mut(&vol) {
                        v.resync_offset = Some(off);
                    }
                }
            },
            |vm, g, t, _| {
                let mut cfg = g.cfg.clone();
                if let Some(v) = cfg.volume_mut(&t.volume) {
                    v.state = VolumeState::Active;
                    v.resync_offset = None;
                }
                g.commit(&vm.engine, cfg)?;
                tracing::info!(dg = %t.dg, volume = %t.volume, "parity resync complete: every row's parity matches its data");
                Ok(())
            },
        );
        if let Err(e) = r {
            tracing::error!(dg = %g.cfg.name, volume = %vol, "cannot start the parity resync: {e}");
        }
    }

    /// Starts rebuilding the stale column of RAID-5 volume `vol` from its plex's checkpoint
    /// (`sync_offset`, set by the caller).
    fn spawn_rebuild(&self, g: &mut Group, vol: &str, delay: Duration) -> Result<u64, VolumeError> {
        let dg = g.cfg.name.clone();
        let (Some(plex), Some(shared)) = (raid5_plex(g, vol), g.volumes.get(vol).cloned()) else {
            return Err(VolumeError::Invalid(format!(
                "volume {dg}/{vol} is not a started RAID-5 volume"
            )));
        };
        let Some(p) = g.cfg.plex(&plex).cloned() else {
            return Err(VolumeError::NotFound {
                kind: "plex",
                name: format!("{dg}/{plex}"),
            });
        };
        let column = match p.stale_columns.as_slice() {
            [c] => *c as usize,
            [] => {
                return Err(VolumeError::Invalid(format!(
                    "plex {plex} has no stale column"
                )))
            }
            many => {
                return Err(VolumeError::Invalid(format!(
                    "plex {plex} has {} stale columns ({many:?}): its data cannot be rebuilt",
                    many.len()
                )))
            }
        };
        let absent = raid5_ops::absent_column_disks(g, &plex, column as u32);
        if !absent.is_empty() {
            let mut cfg = g.cfg.clone();
            if let Some(p) = cfg.plex_mut(&plex) {
                p.sync_offset = None;
            }
            g.commit(&self.engine, cfg)?;
            return Err(VolumeError::Invalid(format!(
                "column {column} of plex {plex} is on disks that are missing or failed ({}); bring them back, or replace the column, before rebuilding",
                absent.join(", ")
            )));
        }
        let start = p.sync_offset.unwrap_or(0);
        let plex2 = plex.clone();
        let id = self.spawn_rows(
            g,
            vol,
            &shared,
            RowWork::Rebuild(column),
            start,
            delay,
            move |cfg, off| {
                if let Some(p) = cfg.plex_mut(&plex2) {
                    p.sync_offset = Some(off);
                }
            },
            move |vm, g, t, _| {
                let mut cfg = g.cfg.clone();
                if let Some(p) = cfg.plex_mut(&plex) {
                    p.stale_columns.retain(|&c| c as usize != column);
                    p.sync_offset = None;
                }
                g.commit(&vm.engine, cfg)?;
                vm.publish(g, &t.volume);
                tracing::info!(dg = %t.dg, volume = %t.volume, plex = %plex, column, "rebuild complete: the column is current");
                Ok(())
            },
        )?;
        Ok(id)
    }

    /// A row task's read of column `column` failed: the column is recorded stale. During a
    /// rebuild that is a second column without current data: the volume goes offline (the
    /// log names both columns and their disks).
    fn row_task_read_failed(&self, task: &Task, vol: &str, column: usize, e: &str) {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(&task.dg) else {
            return;
        };
        let Some(plex) = raid5_plex(g, vol) else {
            return;
        };
        tracing::error!(dg = %task.dg, volume = %vol, column, "{} read of column {column} failed ({e}): the column is recorded stale", task.kind);
        if column < 64 {
            if let Err(err) = self.record_stale_columns(g, vol, &plex, 1 << column) {
                self.disable(g, vol, &err.to_string());
            }
        }
    }

    /// After a rebuild ended: the I/O path stops using its progress. If it did not complete
    /// while the volume still runs (a write to the column failed, or it failed), its
    /// checkpoint is dropped too: guest writes from now on leave the column alone, so the
    /// rows it had rebuilt are no longer current. A volume that was stopped keeps the
    /// checkpoint (nothing wrote meanwhile) and resumes from it at its next start.
    fn end_rebuild(&self, task: &Task, vol: &str, shared: &Arc<VolumeShared>) {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(&task.dg) else {
            return;
        };
        if !g.volumes.get(vol).is_some_and(|s| Arc::ptr_eq(s, shared)) {
            return;
        }
        shared.resync.store(None);
        if task.state() != crate::volume::copy::task::TaskState::Done {
            if let Some(plex) = raid5_plex(g, vol) {
                let mut cfg = g.cfg.clone();
                if let Some(p) = cfg.plex_mut(&plex) {
                    p.sync_offset = None;
                }
                if let Err(e) = g.commit(&self.engine, cfg) {
                    tracing::warn!(dg = %task.dg, volume = %vol, "cannot drop the rebuild checkpoint: {e}");
                }
            }
        }
        self.publish(g, vol);
    }

    /// After a parity resync ended: once done the volume is ACTIVE and its map no longer
    /// resyncing; otherwise (cancelled by a stop, or failed) writes go on reconstructing the
    /// parity of every row (no progress to trust), until the resync runs again.
    fn end_resync(&self, task: &Task, vol: &str, shared: &Arc<VolumeShared>) {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(&task.dg) else {
            return;
        };
        if !g.volumes.get(vol).is_some_and(|s| Arc::ptr_eq(s, shared)) {
            return;
        }
        if task.state() == crate::volume::copy::task::TaskState::Done {
            self.publish(g, vol);
            shared.resync.store(None);
        } else {
            shared.resync.store(None);
        }
    }

    /// Runs row task `work` on RAID-5 volume `vol` from logical block `start` (rounded down to
    /// a barrier chunk) on its own thread. `checkpoint(cfg, block)` records progress (after
    /// the disks written were flushed); `done` records the end (under the manager lock, after
    /// a final flush). A rebuild publishes its progress to the I/O path and a map with the
    /// column rebuilding.
    #[allow(clippy::too_many_arguments)]
    fn spawn_rows(
        &self,
        g: &mut Group,
        vol: &str,
        shared: &Arc<VolumeShared>,
        work: RowWork,
        start: u64,
        delay: Duration,
        checkpoint: impl Fn(&mut crate::volume::model::objects::DgConfig, u64) + Send + 'static,
        done: impl FnOnce(&VolumeManager, &mut Group, &Task, &Mismatches) -> Result<(), VolumeError>
            + Send
            + 'static,
    ) -> Result<u64, VolumeError> {
        let dg = g.cfg.name.clone();
        let map = shared.map();
        let Some(r5) = map.raid5.as_ref() else {
            return Err(VolumeError::Invalid(format!(
                "volume {dg}/{vol} has no RAID-5 map"
            )));
        };
        if matches!(work, RowWork::Resync | RowWork::Check { .. }) && r5.missing.is_some() {
            return Err(VolumeError::Invalid(format!(
                "RAID-5 volume {dg}/{vol} is degraded: its parity cannot be recomputed or checked without the missing column"
            )));
        }
        let plex = RowPlex::new(r5.geometry.clone(), &map.disks).map_err(VolumeError::Invalid)?;
        let rows = r5.geometry.rows();
        let row_blocks = r5.geometry.row_blocks();
        let chunk = shared.barrier().chunk_blocks();
        let start = (start - start % chunk).min(rows * row_blocks);
        let kind = match work {
            RowWork::Resync => RESYNC,
            RowWork::Rebuild(_) => REBUILD,
            RowWork::Check { .. } => CHECK,
        };
        let plex_name = r5.plex.clone();
        let task = self.tasks.add(TaskSpec {
            kind,
            dg: &dg,
            volume: vol,
            plex: Some(&plex_name),
            targets: &[],
            source: None,
            start,
            total: rows * row_blocks,
            todo: None,
            why_full: None,
        });
        if let RowWork::Rebuild(_) | RowWork::Resync = work {
            // Progress first, then the map that says to use it.
            shared.resync.store(Some(task.progress().clone()));
            self.publish(g, vol);
        }
        // What the task writes, flushed before each checkpoint and at the end.
        let written: Vec<crate::volume::copy::task::CopyPlex> = match work {
            RowWork::Rebuild(c) => plex.column(c).into_iter().cloned().collect(),
            _ => (0..r5.geometry.ncol())
                .filter_map(|c| plex.column(c).cloned())
                .collect(),
        };
        tracing::info!(dg = %dg, volume = %vol, from = start, "RAID-5 {kind} started");
        let Some(vm) = self.me.upgrade() else {
            return Ok(task.id);
        };
        let shared = shared.clone();
        let vol = vol.to_string();
        let id = task.id;
        let spawned = std::thread::Builder::new()
            .name(format!("{kind} {dg}/{vol}"))
            .spawn(move || {
                let bs = map.disks.first().map_or(512, |d| d.block_size() as u64);
                let mut found = Mismatches::default();
                let io = CopyIo {
                    engine: &vm.engine,
                    task: &task,
                    barrier: shared.barrier(),
                    block_size: bs,
                };
                let r = run_rows(&io, &plex, work, rows, delay, &mut found, |off| {
                    vm.checkpoint(&task, &written, |cfg| checkpoint(cfg, off))
                });
                let r = crate::volume::manager::flush_copied(&vm.engine, r, &written);
                if let (Err(e), Some(c)) = (&r, found.failed_read) {
                    vm.row_task_read_failed(&task, &vol, c, e);
                }
                vm.finish_task(&task, r, |g, t| done(&vm, g, t, &found));
                match work {
                    RowWork::Rebuild(_) => vm.end_rebuild(&task, &vol, &shared),
                    RowWork::Resync => vm.end_resync(&task, &vol, &shared),
                    RowWork::Check { .. } => {}
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the {kind} thread: {e}");
        }
        Ok(id)
    }
}

/// How long a replay waits for one log or column I/O.
const REPLAY_IO_WAIT: Duration = Duration::from_secs(60);

/// One valid log entry read back: its header, ranges and payload.
struct Entry {
    header: crate::volume::model::raid5_log::LogHeader,
    ranges: Vec<crate::volume::model::raid5_log::LogRange>,
    payload: Vec<u8>,
}

impl VolumeManager {
    /// Replays the log of RAID-5 volume `vol` (not started) after a crash: every valid entry
    /// of the plex's current epoch, from every usable log plex, is written again to its
    /// columns in sequence order (a missing column's ranges are skipped: the replayed parity
    /// implies them), then the columns are flushed. Returns how many entries were replayed,
    /// or `None` if the volume has no usable log (it then needs a parity resync).
    pub(crate) fn replay_raid5_log(
        &self,
        g: &Group,
        vol: &str,
    ) -> Result<Option<usize>, VolumeError> {
        use crate::bdev::blocking::start_io;
        use crate::bdev::IoType;
        use crate::volume::model::raid5_log::{decode_header, slot_blocks, slots_in};
        let dg = g.cfg.name.clone();
        let (Some(plex), Some(v)) = (raid5_plex(g, vol), g.cfg.volume(vol)) else {
            return Ok(None);
        };
        let Some(p) = g.cfg.plex(&plex) else {
            return Ok(None);
        };
        let mut disks = Vec::new();
        let map = crate::volume::manager::ops::raid5_map(g, p, v.len, &mut disks)
            .map_err(VolumeError::Invalid)?;
        if map.logs.is_empty() {
            return Ok(None);
        }
        let geo = &map.geometry;
        let (ncol, su) = (geo.ncol() as u32, geo.stripe_unit());
        let bs = g.cfg.block_size as u64;
        let slot = slot_blocks(ncol, su);
        let io_err = |e: crate::bdev::blocking::BlockingIoError| VolumeError::Disk(e.into());
        let mut entries: std::collections::BTreeMap<u64, Entry> = Default::default();
        let mut read_any = false;
        for log in &map.logs {
            // The whole log plex, extent by extent.
            let slots = slots_in(log.geometry.len(), ncol, su);
            let mut buf = vec![0u8; (slots * slot * bs) as usize];
            let mut ok = true;
            let _ = log.geometry.map(0, slots * slot, |s| {
                if !ok {
                    return;
                }
                let r = disks
                    .get(s.target as usize)
                    .ok_or_else(|| VolumeError::Invalid("log plex on an unknown disk".into()))
                    .and_then(|d| {
                        start_io(&self.engine, 0, d, IoType::Read, s.target_offset * bs, s.len * bs, None)
                            .map_err(io_err)?
                            .wait(REPLAY_IO_WAIT)
                            .map_err(io_err)
                    });
                match r {
                    Ok(data) => {
                        let at = (s.req_offset * bs) as usize;
                        buf[at..at + data.len()].copy_from_slice(&data);
                    }
                    Err(e) => {
                        tracing::error!(dg = %dg, volume = %vol, plex = %log.plex, "cannot read the RAID-5 log: {e}");
                        ok = false;
                    }
                }
            });
            if !ok {
                continue;
            }
            read_any = true;
            for k in 0..slots {
                let at = (k * slot * bs) as usize;
                let Ok((h, ranges)) = decode_header(&buf[at..at + bs as usize]) else {
                    continue;
                };
                if h.epoch != map.log_epoch
                    || h.ncol != ncol
                    || h.su != su
                    || h.row >= geo.rows()
                    // Where the ring of the run that wrote it put it.
                    || h.slots == 0
                    || h.slots > slots
                    || h.seq % h.slots != k
                    || entries.contains_key(&h.seq)
                {
                    continue;
                }
                let from = at + bs as usize;
                let len = (u64::from(h.payload_blocks) * bs) as usize;
                let Some(payload) = buf.get(from..from + len) else {
                    continue;
                };
                if crc32c::crc32c(payload) != h.payload_crc {
                    continue;
                }
                entries.insert(
                    h.seq,
                    Entry {
                        header: h,
                        ranges,
                        payload: payload.to_vec(),
                    },
                );
            }
        }
        if !read_any {
            tracing::error!(dg = %dg, volume = %vol, "no RAID-5 log plex could be read: the log cannot be replayed");
            return Ok(None);
        }
        // Replay, oldest first.
        for e in entries.values() {
            let mut at = 0usize;
            for r in &e.ranges {
                let len = (r.blocks() * bs) as usize;
                let data = &e.payload[at..at + len];
                at += len;
                if Some(r.column as usize) == map.missing {
                    continue;
                }
                let mut pieces = Vec::new();
                geo.locate(
                    e.header.row,
                    r.column as usize,
                    u64::from(r.lo),
                    r.blocks(),
                    |p| pieces.push(p),
                );
                for p in pieces {
                    let d = disks.get(p.target as usize).ok_or_else(|| {
                        VolumeError::Invalid("a RAID-5 column on an unknown disk".into())
                    })?;
                    let off = (p.piece_offset * bs) as usize;
                    start_io(
                        &self.engine,
                        0,
                        d,
                        IoType::Write,
                        p.target_offset * bs,
                        p.len * bs,
                        Some(&data[off..off + (p.len * bs) as usize]),
                    )
                    .map_err(io_err)?
                    .wait(REPLAY_IO_WAIT)
                    .map_err(io_err)?;
                }
            }
        }
        crate::volume::manager::flush_disks(&self.engine, disks.iter())?;
        tracing::info!(dg = %dg, volume = %vol, entries = entries.len(), "RAID-5 log replayed");
        Ok(Some(entries.len()))
    }
}

impl VolumeManager {
    /// Adds a log plex to RAID-5 volume `vol` (`plex_attach` with `log`): allocated like the
    /// volume's first logs (on `alloc` disks if given) on a disk that no column and no other
    /// log uses, zeroed (no stale entry can be replayed from it), recorded LOG and published:
    /// writes from then on are logged to it too. Returns the new plex's name.
    pub fn log_attach(
        &self,
        dg: &str,
        vol: &str,
        alloc_disks: Option<&[String]>,
    ) -> Result<String, VolumeError> {
        use crate::volume::model::alloc::AllocRequest;
        use crate::volume::model::objects::{KernelState, PlexLayout, PlexState};
        use crate::volume::model::raid5_log::{log_blocks, max_ranges, slot_blocks, MIN_LOG_SLOTS};
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        if g.cfg.volume(vol).is_none() {
            return Err(VolumeError::NotFound {
                kind: "volume",
                name: format!("{dg}/{vol}"),
            });
        }
        let Some(plex) = raid5_plex(g, vol) else {
            return Err(VolumeError::Invalid(format!(
                "volume {dg}/{vol} is not a RAID-5 volume: only RAID-5 volumes take log plexes"
            )));
        };
        let Some(PlexLayout::Raid5 { ncol, stripe_unit }) = g.cfg.plex(&plex).map(|p| p.layout)
        else {
            return Err(VolumeError::Invalid(format!(
                "plex {plex} is not a RAID-5 plex"
            )));
        };
        let bs = u64::from(g.cfg.block_size);
        if ncol as usize + 2 > max_ranges(bs as usize) {
            return Err(VolumeError::Invalid(format!(
                "a RAID-5 log holds rows of at most {} columns with {bs}-byte blocks; {dg}/{vol} has {ncol}",
                max_ranges(bs as usize) - 2
            )));
        }
        let used: Vec<String> = g
            .cfg
            .plexes_of(vol)
            .iter()
            .flat_map(|p| g.cfg.subdisks_of(&p.name))
            .map(|s| s.disk.clone())
            .collect();
        let disks = alloc_disks
            .map(|l| crate::volume::manager::ops::resolve_disks(&g.cfg, l))
            .transpose()?;
        if let Some(d) = disks.iter().flatten().find(|d| used.contains(d)) {
            return Err(VolumeError::Invalid(format!(
                "disk {d} already holds a column or a log of {dg}/{vol}: a log plex must be on a disk of its own"
            )));
        }
        let space = crate::volume::manager::ops::usable_space(g, &g.cfg, self.tasks.fences());
        let request = |len| AllocRequest {
            len,
            nmirror: 1,
            ncol: 1,
            stripe_unit: 1,
            disks: disks.clone(),
            exclude: used.clone(),
        };
        let plan = crate::volume::manager::raid5_ops::allocate_log(
            &space,
            log_blocks(ncol, stripe_unit, bs),
            MIN_LOG_SLOTS * slot_blocks(ncol, stripe_unit),
            request,
        )?;
        let Some(columns) = plan.first().map(|p| p.columns.clone()) else {
            return Err(VolumeError::Invalid("no space for a log plex".into()));
        };
        // Recorded TEMP first: a crash before it is zeroed removes it at import.
        let mut cfg = g.cfg.clone();
        let name = cfg.add_plex(
            vol,
            PlexLayout::Concat,
            PlexState::Temp,
            KernelState::Disabled,
            &columns,
        );
        g.commit(&self.engine, cfg.clone())?;
        if let Err(f) = self.zero_subdisks(g, std::slice::from_ref(&name)) {
            let n = name.clone();
            return Err(self.zeroing_failed(g, f, move |back| {
                back.subdisks
                    .retain(|s| s.plex.as_deref() != Some(n.as_str()));
                back.plexes.retain(|p| p.name != n);
            }));
        }
        if let Some(p) = cfg.plex_mut(&name) {
            p.state = PlexState::Log;
            p.kstate = KernelState::Enabled;
        }
        g.commit(&self.engine, cfg)?;
        self.publish(g, vol);
        tracing::info!(dg = %dg, volume = %vol, plex = %name, "RAID-5 log plex attached");
        Ok(name)
    }
}
