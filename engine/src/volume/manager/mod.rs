//! Disk groups: creating them from bdevs, committing their configuration to the disks,
//! importing and deporting them, and turning their volumes into bdevs.
//!
//! Every change follows one rule: build the new configuration, commit it
//! (config copies into each holder's inactive slot, then the labels' serials), and only then
//! publish it to the I/O path. One mutex serialises the control plane; the I/O path never
//! takes it (it reads the published maps).
//!
//! - [`ops`]: volume and plex operations (create, start, stop, delete, detach).
//! - [`layered`]: stripe-mirror volumes, whose columns are mirrored sub-volumes.
//! - [`raid_config`]: the saved-config entry of a volume made by `bdev_raid_create`.
//! - [`reshape`]: volume grow and subdisk move.
//! - [`resync`]: crash resync, plex attach and read repair: what to copy, run as copy tasks.

pub mod layered;
pub mod ops;
pub mod raid_config;
pub mod reshape;
pub mod resync;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use crate::bdev::Bdev;
use crate::volume::error::VolumeError;
use crate::volume::io::driver::{self, VolumeEvent, VolumeShared};
use crate::volume::model::objects::{
    DgConfig, DiskCondition, DiskRecord, KernelState, PlexState, VolumeState,
};
use crate::volume::ondisk::configdb::{self, FoundCopy, FoundDisk};
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
fn claim_owner(dg: &str) -> String {
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
    /// `volume::fence`).
    pub fn fenced_copy_writes(&self) -> usize {
        self.tasks.fences().count()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

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

    fn claim_all(&self, dg: &str, bdevs: &[Arc<Bdev>]) -> Result<Vec<Arc<Bdev>>, VolumeError> {
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
        Ok(())
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

    fn handle_event(&self, ev: VolumeEvent) {
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
                            volume.publish(driver::VolumeMap {
                                generation: cur.generation + 1,
                                disks: cur.disks.clone(),
                                plexes: cur.plexes.clone(),
                                read_policy: cur.read_policy,
                                read_source: cur.read_source,
                                enabled: false,
                            });
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

pub(crate) fn group_mut<'a>(
    groups: &'a mut BTreeMap<String, Group>,
    dg: &str,
) -> Result<&'a mut Group, VolumeError> {
    groups.get_mut(dg).ok_or_else(|| VolumeError::NotFound {
        kind: "disk group",
        name: dg.into(),
    })
}

fn disk_record(name: &str, b: &Bdev, label: &Label) -> DiskRecord {
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
fn top_volumes(g: &Group) -> Vec<String> {
    g.volumes
        .keys()
        .filter(|v| g.cfg.volume(v).is_none_or(|r| r.parent.is_none()))
        .cloned()
        .collect()
}

fn release_all(bdevs: &[Arc<Bdev>]) {
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
