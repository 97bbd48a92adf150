//! Layered volumes (stripe-mirror), as VxVM builds them: the volume has one striped plex
//! whose columns are *sub-volumes* (`vol01-L01`, `vol01-L02`, ...), each a mirror of its own.
//! A failed disk then costs only its column's mirror, not a whole plex, and each column
//! resyncs and re-attaches on its own.
//!
//! A sub-volume is an ordinary volume with `parent` set: it is a bdev (`<dg>/vol01-L01`)
//! claimed by its parent, so it cannot be exported, stopped or deleted on its own; the top
//! plex's subdisks name it (`subvolume`) instead of a disk, and the I/O map targets its bdev.
//! Sub-volumes start before their parent and stop after it.

use uuid::Uuid;

use crate::volume::error::VolumeError;
use crate::volume::manager::{Group, VolumeManager};
use crate::volume::model::alloc::PlexAlloc;
use crate::volume::model::objects::{
    KernelState, PlexLayout, PlexRecord, PlexState, ReadPolicy, SubdiskRecord, VolumeRecord,
    VolumeState,
};

/// The claim a layered volume holds on its sub-volumes.
pub(crate) fn claim_owner(dg: &str, top: &str) -> String {
    format!("volume {dg}/{top}")
}

/// The sub-volumes of `vol`, in column order.
pub(crate) fn subvolumes(g: &Group, vol: &str) -> Vec<String> {
    let mut v: Vec<(u32, String)> = g
        .cfg
        .plexes_of(vol)
        .iter()
        .flat_map(|p| g.cfg.subdisks_of(&p.name))
        .filter_map(|s| s.subvolume.clone().map(|sv| (s.column, sv)))
        .collect();
    v.sort();
    v.into_iter().map(|(_, sv)| sv).collect()
}

impl VolumeManager {
    /// Records, zeroes and starts stripe-mirror volume `name` from an allocation of
    /// `nmirror` plexes × `ncol` columns: column `c` of every plex becomes sub-volume `c`.
    pub(crate) fn create_layered(
        &self,
        g: &mut Group,
        name: &str,
        len: u64,
        plan: Vec<PlexAlloc>,
        stripe_unit: u64,
        read_policy: ReadPolicy,
    ) -> Result<String, VolumeError> {
        if !matches!(read_policy, ReadPolicy::Select) {
            return Err(VolumeError::Invalid(
                "a stripe-mirror volume reads through its sub-volumes; read_policy applies to its sub-volumes (select)".into(),
            ));
        }
        let dg = g.cfg.name.clone();
        let ncol = plan.first().map_or(0, |p| p.columns.len());
        let mut cfg = g.cfg.clone();
        let top_plex = cfg.next_name(&format!("{name}-"), |n| cfg.name_taken(n) || n == name);
        let mut real_plexes = Vec::new();
        let mut top_sds = Vec::new();
        for c in 0..ncol {
            let sv = format!("{name}-L{:02}", c + 1);
            if cfg.name_taken(&sv)
                || self
                    .engine
                    .bdevs()
                    .check_free(&format!("{dg}/{sv}"))
                    .is_err()
            {
                return Err(VolumeError::Exists {
                    kind: "object",
                    name: format!("{dg}/{sv}"),
                });
            }
            let col_len: u64 = plan[0].columns[c].iter().map(|(_, _, l)| l).sum();
            for pa in &plan {
                real_plexes.push(cfg.add_plex(
                    &sv,
                    PlexLayout::Concat,
                    PlexState::Temp,
                    KernelState::Disabled,
                    std::slice::from_ref(&pa.columns[c]),
                ));
            }
            cfg.volumes.push(VolumeRecord {
                name: sv.clone(),
                uuid: Uuid::new_v4(),
                len: col_len,
                state: VolumeState::Empty,
                kstate: KernelState::Disabled,
                read_policy: ReadPolicy::Select,
                layout: "mirror".into(),
                autostart: false,
                resync_offset: None,
                bdev_name: None,
                raid_level: None,
                raid_slots: None,
                parent: Some(name.to_string()),
                log_failure: Default::default(),
                skip_copy: false,
                drl: None,
                resync_mode: Default::default(),
            });
            top_sds.push(SubdiskRecord {
                name: format!("{name}-S{:02}", c + 1),
                disk: String::new(),
                disk_offset: 0,
                len: col_len,
                plex: Some(top_plex.clone()),
                column: c as u32,
                column_offset: 0,
                subvolume: Some(sv),
            });
        }
        for s in &top_sds {
            if cfg.name_taken(&s.name) {
                return Err(VolumeError::Exists {
                    kind: "object",
                    name: format!("{dg}/{}", s.name),
                });
            }
        }
        cfg.subdisks.extend(top_sds);
        cfg.plexes.push(PlexRecord {
            name: top_plex.clone(),
            volume: Some(name.to_string()),
            layout: PlexLayout::Stripe {
                ncol: ncol as u32,
                stripe_unit,
            },
            state: PlexState::Temp,
            kstate: KernelState::Disabled,
            sync_offset: None,
            stale_columns: Vec::new(),
            log_epoch: 0,
            drl_missed: None,
            sync_mode: Default::default(),
        });
        cfg.volumes.push(VolumeRecord {
            name: name.to_string(),
            uuid: Uuid::new_v4(),
            len,
            state: VolumeState::Empty,
            kstate: KernelState::Disabled,
            read_policy: ReadPolicy::Select,
            layout: "stripe-mirror".into(),
            autostart: false,
            resync_offset: None,
            bdev_name: None,
            raid_level: None,
            raid_slots: None,
            parent: None,
            log_failure: Default::default(),
            skip_copy: false,
            drl: None,
            resync_mode: Default::default(),
        });
        // Recorded with every plex TEMP: a crash before the end rolls the whole tree back.
        g.commit(&self.engine, cfg.clone())?;
        if let Err(f) = self.zero_subdisks(g, &real_plexes) {
            return Err(self.zeroing_failed(g, f, |back| {
                crate::volume::manager::ops::remove_volume(back, name)
            }));
        }
        let family: Vec<String> = cfg
            .volumes
            .iter()
            .filter(|v| v.name == name || v.parent.as_deref() == Some(name))
            .map(|v| v.name.clone())
            .collect();
        for p in cfg.plexes.iter_mut() {
            if p.volume.as_ref().is_some_and(|v| family.contains(v)) {
                p.state = PlexState::Clean;
                p.kstate = KernelState::Enabled;
            }
        }
        for v in cfg.volumes.iter_mut().filter(|v| family.contains(&v.name)) {
            v.state = VolumeState::Clean;
            v.autostart = true;
        }
        g.commit(&self.engine, cfg)?;
        self.start_volume(g, name)?;
        tracing::info!(dg = %dg, volume = %name, layout = "stripe-mirror", blocks = len, columns = ncol, "volume created");
        Ok(format!("{dg}/{name}"))
    }

    /// Starts the sub-volumes of `vol` that are not running and claims them for it.
    pub(crate) fn start_subvolumes(&self, g: &mut Group, vol: &str) -> Result<(), VolumeError> {
        let dg = g.cfg.name.clone();
        for sv in subvolumes(g, vol) {
            if !g.volumes.contains_key(&sv) {
                self.start_volume(g, &sv)?;
            }
            if let Some(shared) = g.volumes.get(&sv) {
                let b = self.engine.bdevs().get(shared.name())?;
                let owner = claim_owner(&dg, vol);
                if b.claimed_by().as_deref() != Some(owner.as_str()) {
                    b.claim(&owner)?;
                }
            }
        }
        Ok(())
    }

    /// Stops the sub-volumes of `vol` after `vol` failed to start (logged, not returned: the
    /// start's own error is the one to report).
    pub(crate) fn abandon_subvolumes(&self, g: &mut Group, vol: &str) {
        if let Err(e) = self.stop_subvolumes(g, vol, true) {
            tracing::error!(dg = %g.cfg.name, volume = %vol, "cannot stop the sub-volumes of a volume that did not start: {e}");
        }
    }

    /// Releases and stops the sub-volumes of `vol` (after `vol` itself stopped).
    pub(crate) fn stop_subvolumes(
        &self,
        g: &mut Group,
        vol: &str,
        shutting_down: bool,
    ) -> Result<(), VolumeError> {
        for sv in subvolumes(g, vol) {
            if let Some(shared) = g.volumes.get(&sv) {
                if let Ok(b) = self.engine.bdevs().get(shared.name()) {
                    b.release_claim();
                }
                self.stop_volume(g, &sv, shutting_down)?;
            }
        }
        Ok(())
    }
}
