//! The `volume-events` thread's work: what the I/O path reports (`VolumeEvent`). A write
//! that failed on some plexes is recorded (plexes IOFAIL/DETACHED, committed), a map without
//! them published, and only then acknowledged, so the held write completes; a read repair is
//! handed to the repair queue (this thread must never block on a write).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::volume::error::VolumeError;
use crate::volume::io::driver::{self, VolumeEvent};
use crate::volume::manager::{group_mut, Group, VolumeManager};
use crate::volume::model::objects::{KernelState, PlexState, VolumeState};

impl VolumeManager {
    /// Handles one event from the I/O path (see the module docs).
    pub(super) fn handle_event(&self, ev: VolumeEvent) {
        match ev {
            VolumeEvent::WriteFailed {
                volume,
                map,
                plexes,
                id,
            } => {
                let names: Vec<String> = map
                    .plexes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| plexes & (1 << i) != 0)
                    .map(|(_, p)| p.name.clone())
                    .collect();
                #[cfg(test)]
                self.tasks
                    .hook(crate::volume::copy::task::HookPoint::WriteFailed);
                let mut groups = self.lock();
                let (dg, vol) = (volume.dg(), volume.volume());
                let (shadows, mut real): (Vec<String>, Vec<String>) = names
                    .into_iter()
                    .partition(|n| n.ends_with(crate::volume::manager::reshape::SHADOW_SUFFIX));
                // A shadow failure reported after its move swapped (flushes never enter the
                // barrier the swap waits on; this holds for every request type) failed the
                // place its plex now maps to: that plex fails like any other, before the ack.
                // Otherwise the move is still going, and is abandoned.
                let now = volume.map();
                let (swapped, moving): (Vec<String>, Vec<String>) = shadows
                    .into_iter()
                    .partition(|n| swapped_to_shadow(&map, &now, n));
                for n in &swapped {
                    if let Some(p) = n.strip_suffix(crate::volume::manager::reshape::SHADOW_SUFFIX)
                    {
                        if !real.iter().any(|r| r == p) {
                            real.push(p.to_string());
                        }
                    }
                }
                if !moving.is_empty() {
                    if let Some(g) = groups.get_mut(dg) {
                        self.abandon_move(g, vol, "a write to the new place failed");
                    }
                }
                let r = if real.is_empty() {
                    Ok(())
                } else {
                    self.detach_failed(&mut groups, dg, vol, &real, "a write failed")
                };
                if let Err(e) = r {
                    match groups.get_mut(dg) {
                        Some(g) => self.disable(g, vol, &e.to_string()),
                        None => {
                            tracing::error!(volume = %volume.name(), "cannot record the failed plexes {real:?}: {e}; disabling the volume");
                            let cur = volume.map();
                            volume.publish(cur.disabled(cur.generation + 1));
                        }
                    }
                }
                volume.ack_event(id);
            }
            VolumeEvent::ColumnFailed {
                volume,
                map,
                columns,
                id,
            } => {
                let mut groups = self.lock();
                let (dg, vol) = (volume.dg(), volume.volume());
                let r = match (groups.get_mut(dg), map.raid5.as_ref()) {
                    (Some(g), Some(r5)) => self.record_stale_columns(g, vol, &r5.plex, columns),
                    _ => Err(VolumeError::Invalid(format!(
                        "volume {} is not a RAID-5 volume of an imported group",
                        volume.name()
                    ))),
                };
                if let Err(e) = r {
                    match groups.get_mut(dg) {
                        Some(g) => self.disable(g, vol, &e.to_string()),
                        None => {
                            tracing::error!(volume = %volume.name(), "cannot record the failed columns: {e}; disabling the volume");
                            let cur = volume.map();
                            volume.publish(cur.disabled(cur.generation + 1));
                        }
                    }
                }
                volume.ack_event(id);
            }
            VolumeEvent::LogFailed {
                volume,
                map,
                logs,
                id,
            } => {
                let names: Vec<String> = map
                    .raid5
                    .iter()
                    .flat_map(|r| r.logs.iter().enumerate())
                    .filter(|(i, _)| *i < 64 && logs & (1 << i) != 0)
                    .map(|(_, l)| l.plex.clone())
                    .collect();
                let mut groups = self.lock();
                let (dg, vol) = (volume.dg(), volume.volume());
                let r = match groups.get_mut(dg) {
                    Some(g) => self.record_bad_logs(g, vol, &names),
                    None => Err(VolumeError::NotFound {
                        kind: "disk group",
                        name: dg.to_string(),
                    }),
                };
                if let Err(e) = r {
                    // Entries may be missing from a log that a replay would still read:
                    // nothing may be acknowledged over it.
                    match groups.get_mut(dg) {
                        Some(g) => self.disable(g, vol, &e.to_string()),
                        None => {
                            tracing::error!(volume = %volume.name(), "cannot record the failed log plexes {names:?}: {e}; disabling the volume");
                            let cur = volume.map();
                            volume.publish(cur.disabled(cur.generation + 1));
                        }
                    }
                }
                volume.ack_event(id);
            }
            VolumeEvent::ReadRepair {
                volume,
                map,
                bad,
                good,
                offset,
                num,
            } => {
                // On the repair worker: the repair waits for writes in flight, and a write may
                // be waiting for this thread to record a detach.
                self.repairs.submit(crate::volume::copy::repair::RepairJob {
                    volume,
                    map,
                    bad,
                    good,
                    offset,
                    num,
                });
            }
        }
    }

    /// Records log plexes `names` of RAID-5 volume `vol` BADLOG (detached: no entry is
    /// written to or replayed from them) and publishes the map without them. This is the
    /// alert that the volume lost (some of) its write-hole protection.
    pub(crate) fn record_bad_logs(
        &self,
        g: &mut Group,
        vol: &str,
        names: &[String],
    ) -> Result<(), VolumeError> {
        let dg = g.cfg.name.clone();
        let mut cfg = g.cfg.clone();
        for n in names {
            if let Some(p) = cfg.plex_mut(n) {
                if p.state == PlexState::Log {
                    p.state = PlexState::Badlog;
                    p.kstate = KernelState::Detached;
                }
            }
        }
        let left = cfg
            .plexes_of(vol)
            .iter()
            .filter(|p| p.state == PlexState::Log && p.kstate == KernelState::Enabled)
            .count();
        if left == 0 {
            tracing::error!(dg = %dg, volume = %vol, plexes = ?names, "RAID-5 log plex failed (BADLOG): the volume has no working log and runs WITHOUT write-hole protection (a crash now needs a full parity resync, and a crash while degraded a forced start); attach a new log plex");
        } else {
            tracing::error!(dg = %dg, volume = %vol, plexes = ?names, "RAID-5 log plex failed (BADLOG); {left} log plex(es) still protect the volume");
        }
        let committed = g.commit(&self.engine, cfg);
        self.publish(g, vol);
        committed
    }

    /// Records `columns` (bits) of RAID-5 plex `plex` of volume `vol` stale (their contents
    /// no longer current) and publishes the map without them. A plex left with two stale
    /// columns cannot serve its data: its map is refused and the volume goes offline, the
    /// columns and their disks in the log and in the configuration.
    pub(crate) fn record_stale_columns(
        &self,
        g: &mut Group,
        vol: &str,
        plex: &str,
        columns: u64,
    ) -> Result<(), VolumeError> {
        let dg = g.cfg.name.clone();
        let mut cfg = g.cfg.clone();
        let disks_of = |c: u32| -> Vec<String> {
            g.cfg
                .subdisks_of(plex)
                .iter()
                .filter(|s| s.column == c)
                .map(|s| s.disk.clone())
                .collect()
        };
        let Some(pl) = cfg.plex_mut(plex) else {
            return Err(VolumeError::NotFound {
                kind: "plex",
                name: format!("{dg}/{plex}"),
            });
        };
        let mut added = Vec::new();
        let mut rebuild_hit = false;
        for c in (0..64u32).filter(|c| columns & (1 << c) != 0) {
            if !pl.stale_columns.contains(&c) {
                pl.stale_columns.push(c);
                added.push(c);
            } else if pl.sync_offset.is_some() {
                // The column being rebuilt failed a write below the rebuild's progress.
                rebuild_hit = true;
            }
        }
        if rebuild_hit {
            tracing::error!(dg = %dg, volume = %vol, plex = %plex, "a write to the column being rebuilt failed: the rebuild stops and the column stays stale");
            pl.sync_offset = None;
            self.tasks.cancel_kind(&dg, vol, "rebuild");
            if let Some(s) = g.volumes.get(vol) {
                s.resync.store(None);
            }
        }
        if added.is_empty() && !rebuild_hit {
            return Ok(());
        }
        if !added.is_empty() {
            // A parity resync or check reads every column: from now on one is stale, and
            // parity computed with it would bake its old contents in. They stop; a volume
            // left SYNC and degraded then needs a forced start after a restart.
            self.tasks.cancel_kind(&dg, vol, "parity_resync");
            self.tasks.cancel_kind(&dg, vol, "check");
        }
        let stale = pl.stale_columns.len();
        for c in &added {
            tracing::error!(dg = %dg, volume = %vol, plex = %plex, column = c, disks = ?disks_of(*c), "RAID-5 column failed: recorded stale");
        }
        if stale > 1 {
            tracing::error!(dg = %dg, volume = %vol, plex = %plex, "RAID-5 plex has {stale} stale columns: the volume goes offline");
        }
        let committed = g.commit(&self.engine, cfg);
        self.publish(g, vol);
        committed
    }

    pub(crate) fn detach_failed(
        &self,
        groups: &mut BTreeMap<String, Group>,
        dg: &str,
        vol: &str,
        plexes: &[String],
        why: &str,
    ) -> Result<(), VolumeError> {
        let g = group_mut(groups, dg)?;
        let mut cfg = g.cfg.clone();
        let detaching: Vec<String> = plexes
            .iter()
            .filter(|p| {
                cfg.plex(p)
                    .is_some_and(|pl| pl.kstate == KernelState::Enabled)
            })
            .cloned()
            .collect();
        if detaching.is_empty() {
            return Ok(());
        }
        let left = cfg
            .plexes_of(vol)
            .iter()
            .filter(|p| {
                !detaching.contains(&p.name)
                    && p.kstate == KernelState::Enabled
                    && p.state.is_in_sync()
                    && p.sync_offset.is_none()
            })
            .count();
        if left == 0 {
            // The last copy with current data is never detached: the volume goes offline
            // instead, and what failed is in the log (failure scenario 8).
            return Err(VolumeError::Busy(format!(
                "{why} on {}, the last plex(es) of {dg}/{vol} with current data",
                detaching.join(", ")
            )));
        }
        for p in &detaching {
            if let Some(pl) = cfg.plex_mut(p) {
                tracing::error!(dg = %dg, volume = %vol, plex = %p, "{why}: plex detached (IOFAIL)");
                pl.state = PlexState::Iofail;
                pl.kstate = KernelState::Detached;
                pl.sync_offset = None;
            }
        }
        // Copies reading or writing these plexes stop before the map changes (a copy must
        // never carry a detached plex's data into a plex that takes new writes).
        let stopped = self.tasks.cancel_using(dg, vol, &detaching);
        let committed = g.commit(&self.engine, cfg);
        self.publish(g, vol);
        self.restart_copies(g, vol, &detaching, stopped);
        committed
    }

    /// After plexes left a volume: restarts the copies `stopped` for them that can go on
    /// from another source (from their checkpoints: what they copied before equals every
    /// remaining plex, which took every write since).
    pub(crate) fn restart_copies(
        &self,
        g: &mut Group,
        vol: &str,
        gone: &[String],
        stopped: Vec<Arc<crate::volume::copy::task::Task>>,
    ) {
        let dg = g.cfg.name.clone();
        for t in stopped {
            match t.kind {
                "resync" => {
                    let readable = g
                        .cfg
                        .plexes_of(vol)
                        .iter()
                        .filter(|p| p.kstate == KernelState::Enabled && p.state.is_in_sync())
                        .count();
                    if readable > 1 {
                        self.start_resync(g, vol);
                    } else {
                        // One copy left: nothing to make equal.
                        let mut cfg = g.cfg.clone();
                        if let Some(v) = cfg.volume_mut(vol) {
                            v.state = VolumeState::Active;
                            v.resync_offset = None;
                        }
                        if g.commit(&self.engine, cfg).is_ok() {
                            self.publish(g, vol);
                        }
                    }
                }
                "plex_attach" => {
                    let Some(p) = t.plex.clone().filter(|p| !gone.contains(p)) else {
                        continue;
                    };
                    let from = g.cfg.plex(&p).and_then(|r| r.sync_offset).unwrap_or(0);
                    if let Err(e) = self.spawn_attach(g, vol, &p, from, std::time::Duration::ZERO) {
                        tracing::error!(dg = %dg, volume = %vol, plex = %p, "cannot restart the attach: {e}");
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether shadow plex `shadow` of `old` (the map a failed request used) is where its plex
/// is in `now`: the move swapped, so the plex's data now lies where that request failed.
/// Compared by disk name, as the two maps may number their disks differently.
fn swapped_to_shadow(old: &driver::VolumeMap, now: &driver::VolumeMap, shadow: &str) -> bool {
    let Some(plex) = shadow.strip_suffix(crate::volume::manager::reshape::SHADOW_SUFFIX) else {
        return false;
    };
    let (Some(a), Some(b)) = (
        old.plexes.iter().find(|p| p.name == shadow),
        now.plexes.iter().find(|p| p.name == plex),
    ) else {
        return false;
    };
    let (a, b) = (&a.geometry, &b.geometry);
    let disk =
        |m: &driver::VolumeMap, t: u32| m.disks.get(t as usize).map(|d| d.name().to_string());
    a.geometry() == b.geometry()
        && a.len() == b.len()
        && a.columns().len() == b.columns().len()
        && a.columns().iter().zip(b.columns()).all(|(x, y)| {
            x.extents.len() == y.extents.len()
                && x.extents.iter().zip(&y.extents).all(|(e, f)| {
                    (e.offset, e.len) == (f.offset, f.len)
                        && disk(old, e.target).is_some()
                        && disk(old, e.target) == disk(now, f.target)
                })
        })
}
