//! Disk groups: creating them from bdevs, committing their configuration to the disks,
//! importing and deporting them, and turning their volumes into bdevs.
//!
//! Every change follows one rule: build the new configuration, commit it
//! (config copies into each holder's inactive slot, then the labels' serials), and only then
//! publish it to the I/O path. One mutex serialises the control plane; the I/O path never
//! takes it (it reads the published maps).
//!
//! - `group`: a disk group, its commit, and the flushes before metadata.
//! - `disk_group`: create, add and remove disks, deport, destroy.
//! - `import`: finding and importing disk groups.
//! - `events`: what the `volume-events` thread does with the I/O path's events.
//! - [`ops`]: volume and plex operations (create, start, stop, delete, detach).
//! - [`layered`]: stripe-mirror volumes, whose columns are mirrored sub-volumes.
//! - [`raid_config`]: the saved-config entry of a volume made by `bdev_raid_create`.
//! - [`raid5_ops`]: RAID-5 volumes: the checks and allocation of their creation, and the
//!   operations refused on them.
//! - [`reshape`]: volume grow and subdisk move.
//! - [`resync`]: crash resync, plex attach and read repair: what to copy, run as copy tasks.
//! - [`settings`]: `volume_set`, a volume's properties changed after it was made.

mod disk_group;
mod events;
mod group;
mod import;
pub mod layered;
pub mod ops;
pub mod raid5_ops;
pub mod raid5_tasks;
pub mod raid_config;
pub mod reshape;
pub mod resync;
pub mod settings;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::volume::error::VolumeError;
use crate::volume::io::driver::VolumeEvent;
#[cfg(test)]
use crate::volume::io::driver::{self, VolumeShared};
use crate::volume::model::objects::DgConfig;
use crate::Engine;

pub use group::check_name;
use group::{claim_owner, disk_record, release_all, top_volumes};
pub(crate) use group::{
    flush_copied, flush_disks, flush_targets, group_mut, was_running, Group, Member,
};

/// The volume manager: every imported disk group.
pub struct VolumeManager {
    pub(crate) engine: Arc<Engine>,
    pub(crate) groups: Mutex<BTreeMap<String, Group>>,
    pub(crate) events: crossbeam::channel::Sender<VolumeEvent>,
    pub(crate) tasks: Arc<crate::volume::copy::task::TaskList>,
    /// Itself, for the threads tasks run on.
    pub(crate) me: std::sync::Weak<VolumeManager>,
    /// Read repairs waiting for their worker.
    pub(crate) repairs: crate::volume::copy::repair::RepairQueue,
    /// Test hook: the next this many map publications fail as if the map could not be built.
    #[cfg(test)]
    pub(crate) fail_publishes: std::sync::atomic::AtomicU32,
    /// How long a stop waits for a volume's requests in flight (ms).
    pub(crate) stop_wait_ms: std::sync::atomic::AtomicU64,
    /// How long zeroing (create, grow) waits for each write before it gives up (ms).
    pub(crate) zero_wait_ms: std::sync::atomic::AtomicU64,
    /// Test hook: runs as zeroing starts (after the space is recorded allocated).
    #[cfg(test)]
    pub(crate) before_zeroing: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

/// How long zeroing at create and grow waits for each write by default.
pub const ZERO_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// How long a stop waits for a volume's requests in flight by default.
pub const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl VolumeManager {
    /// A manager with no groups; starts the thread that records I/O failures.
    pub fn new(engine: Arc<Engine>) -> Arc<VolumeManager> {
        let (tx, rx) = crossbeam::channel::unbounded();
        let vm = Arc::new_cyclic(|me| VolumeManager {
            me: me.clone(),
            engine,
            groups: Mutex::new(BTreeMap::new()),
            events: tx,
            tasks: Arc::new(crate::volume::copy::task::TaskList::default()),
            repairs: {
                let me = me.clone();
                crate::volume::copy::repair::RepairQueue::new(move |job| {
                    if let Some(vm) = me.upgrade() {
                        vm.repair_read(
                            &job.volume,
                            &job.map,
                            job.bad,
                            job.good,
                            job.offset,
                            job.num,
                        );
                    }
                })
            },
            #[cfg(test)]
            fail_publishes: Default::default(),
            stop_wait_ms: std::sync::atomic::AtomicU64::new(STOP_WAIT.as_millis() as u64),
            zero_wait_ms: std::sync::atomic::AtomicU64::new(ZERO_WAIT.as_millis() as u64),
            #[cfg(test)]
            before_zeroing: Mutex::new(None),
        });
        let weak = Arc::downgrade(&vm);
        let spawned = std::thread::Builder::new()
            .name("volume-events".into())
            .spawn(move || {
                while let Ok(ev) = rx.recv() {
                    match weak.upgrade() {
                        Some(vm) => vm.handle_event(ev),
                        None => break,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the volume manager's event thread: {e}");
        }
        vm
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Sets how long a stop (volume_stop, deport, shutdown) waits for a volume's requests in
    /// flight before it gives up on recording the volume CLEAN (default [`STOP_WAIT`]).
    pub fn set_stop_wait(&self, wait: std::time::Duration) {
        self.stop_wait_ms.store(
            wait.as_millis().try_into().unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Sets how long zeroing waits for each write (default [`ZERO_WAIT`]; tests).
    #[cfg(test)]
    pub(crate) fn set_zero_wait(&self, wait: std::time::Duration) {
        self.zero_wait_ms.store(
            wait.as_millis().try_into().unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// How long zeroing waits for each write before it gives up.
    pub(crate) fn zero_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.zero_wait_ms.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// How long a stop waits for a volume's requests in flight.
    pub(crate) fn stop_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.stop_wait_ms.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The task list.
    pub fn tasks(&self) -> &Arc<crate::volume::copy::task::TaskList> {
        &self.tasks
    }

    /// Counts of the read repairs asked for, run and dropped, and the repair threads running.
    pub fn repair_stats(&self) -> crate::volume::copy::repair::RepairStats {
        self.repairs.stats()
    }

    /// Copy and repair writes still in flight after their copy was cancelled: each keeps its
    /// chunk locked and its disk range out of allocation until the disk answers (see
    /// `volume::io::fence`).
    pub fn fenced_copy_writes(&self) -> usize {
        self.tasks.fences().count()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every volume (state CLEAN, or ACTIVE when its requests did not drain in time or
    /// a failure is unrecorded: see `volume_stop`) and releases the disks; plexd calls this at
    /// shutdown, while the reactors still run.
    pub fn shutdown(&self) {
        self.tasks.cancel_all();
        let mut groups = self.lock();
        for (dg, g) in groups.iter_mut() {
            for v in top_volumes(g) {
                if let Err(e) = self.stop_volume(g, &v, true) {
                    tracing::error!(dg = %dg, volume = %v, "clean stop failed: {e}");
                }
            }
            for m in g.members.values() {
                m.bdev.release_claim();
            }
        }
        groups.clear();
    }

    /// Simulates a crash for tests: volumes vanish and disks are released without any
    /// write to the disks (their configuration stays as the last commit left it).
    #[cfg(test)]
    pub(crate) fn crash(&self) {
        self.tasks.cancel_all();
        let mut groups = self.lock();
        for (dg, g) in groups.iter_mut() {
            // Layered volumes first, then their (released) sub-volumes.
            let mut all: Vec<&Arc<VolumeShared>> = g.volumes.values().collect();
            all.sort_by_key(|v| g.cfg.volume(v.volume()).is_some_and(|r| r.parent.is_some()));
            for shared in all {
                if let Ok(b) = self.engine.bdevs().get(shared.name()) {
                    if g.cfg
                        .volume(shared.volume())
                        .is_some_and(|r| r.parent.is_some())
                    {
                        b.release_claim();
                    }
                }
                let _ = self
                    .engine
                    .delete_bdev(shared.name(), Some(driver::PRODUCT_NAME));
            }
            let _ = dg;
            for m in g.members.values() {
                m.bdev.release_claim();
            }
        }
        groups.clear();
    }

    /// Takes volume `vol` offline (sticky until it is restarted): every request fails.
    pub(crate) fn disable(&self, g: &mut Group, vol: &str, why: &str) {
        tracing::error!(dg = %g.cfg.name, volume = %vol, "volume disabled: {why}");
        g.disabled.insert(vol.to_string());
        self.publish(g, vol);
    }

    /// Rebuilds and publishes volume `vol`'s map from the group's configuration; if it
    /// cannot be built, disables the volume (every request fails until it is restarted).
    pub(crate) fn publish(&self, g: &mut Group, vol: &str) {
        let Some(shared) = g.volumes.get(vol).cloned() else {
            return;
        };
        g.generation += 1;
        #[cfg(test)]
        let injected = self
            .fail_publishes
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |n| n.checked_sub(1),
            )
            .is_ok();
        #[cfg(not(test))]
        let injected = false;
        let built = if injected {
            Err("injected map failure (test)".to_string())
        } else {
            crate::volume::manager::ops::build_map(&self.engine, g, vol, g.generation)
        };
        match built {
            Ok(m) => shared.publish(m),
            Err(e) => {
                // The I/O path would go on with the old map, which may still read and write
                // plexes the configuration has just removed (and writes held for a detach
                // would be acknowledged over it): take the volume offline instead.
                tracing::error!(dg = %g.cfg.name, volume = %vol, "cannot build the volume's map: {e}; volume disabled");
                g.disabled.insert(vol.to_string());
                shared.publish(shared.map().disabled(g.generation));
            }
        }
    }

    /// Names of imported groups.
    pub fn group_names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// A copy of group `dg`'s configuration and its sequence number.
    pub fn config(&self, dg: &str) -> Result<(DgConfig, u64), VolumeError> {
        let groups = self.lock();
        let g = groups.get(dg).ok_or_else(|| VolumeError::NotFound {
            kind: "disk group",
            name: dg.into(),
        })?;
        Ok((g.cfg.clone(), g.seq))
    }

    /// The bdev of every present member disk of `dg`, by disk name.
    pub fn member_bdevs(&self, dg: &str) -> Result<BTreeMap<String, String>, VolumeError> {
        let groups = self.lock();
        let g = groups.get(dg).ok_or_else(|| VolumeError::NotFound {
            kind: "disk group",
            name: dg.into(),
        })?;
        Ok(g.members
            .iter()
            .map(|(n, m)| (n.clone(), m.bdev.name().to_string()))
            .collect())
    }

    /// Whether volume `vol` of `dg` is started (has a bdev).
    pub fn is_started(&self, dg: &str, vol: &str) -> bool {
        self.lock()
            .get(dg)
            .is_some_and(|g| g.volumes.contains_key(vol))
    }
}
