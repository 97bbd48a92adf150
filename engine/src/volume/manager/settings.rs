//! `volume_set`: changing a volume's properties after it was made. Each property is
//! optional and those given are checked together against the volume before anything
//! changes; then they are recorded in one commit and, if the volume is started, published in
//! its map at once (commit before publish). Today the only property is `skip_copy`
//! (RAID-5); a new one is a field of [`VolumeSet`], a line in `VolumeSet::apply` and its
//! name in [`VolumeSet::PROPERTIES`].

use crate::volume::error::VolumeError;
use crate::volume::manager::ops::{not_found_volume, refuse_subvolume, skip_copy_not_raid5};
use crate::volume::manager::raid5_ops::raid5_plex;
use crate::volume::manager::{group_mut, VolumeManager};
use crate::volume::model::objects::DgConfig;

/// What `volume_set` changes: each property given is set, each left `None` stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeSet {
    /// RAID-5: full-stripe writes skip the copy into the row buffer (see
    /// `VolumeRecord::skip_copy`).
    pub skip_copy: Option<bool>,
}

impl VolumeSet {
    /// The properties `volume_set` changes, as the RPC names them.
    pub const PROPERTIES: &'static str = "skip_copy";

    /// Whether no property is given.
    pub fn is_empty(&self) -> bool {
        // Destructured so that a new property is a compile error here until it is counted.
        let VolumeSet { skip_copy } = self;
        skip_copy.is_none()
    }

    /// Sets the given properties on volume `vol` of `cfg`, or says why one does not apply to
    /// it (then `cfg` may be half changed: the caller drops it).
    fn apply(&self, cfg: &mut DgConfig, vol: &str) -> Result<(), VolumeError> {
        let raid5 = raid5_plex(cfg, vol).is_some();
        let dg = cfg.name.clone();
        let v = cfg
            .volume_mut(vol)
            .ok_or_else(|| not_found_volume(&dg, vol))?;
        if let Some(on) = self.skip_copy {
            if !raid5 {
                return Err(skip_copy_not_raid5(&v.layout));
            }
            v.skip_copy = on;
        }
        Ok(())
    }
}

impl VolumeManager {
    /// Changes the properties `set` gives of volume `name` of group `dg`: records them (one
    /// commit; none when nothing differs) and republishes the volume's map if it is started.
    /// Refused, with nothing changed, when no property is given, the group or volume does
    /// not exist, the volume is a sub-volume of a layered volume, or a property does not
    /// apply to the volume.
    pub fn volume_set(&self, dg: &str, name: &str, set: &VolumeSet) -> Result<(), VolumeError> {
        if set.is_empty() {
            return Err(VolumeError::Invalid(format!(
                "volume_set: give at least one property to change ({})",
                VolumeSet::PROPERTIES
            )));
        }
        let mut groups = self.lock();
        let g = group_mut(&mut groups, dg)?;
        if g.cfg.volume(name).is_none() {
            return Err(not_found_volume(dg, name));
        }
        refuse_subvolume(g, name, "change")?;
        let mut cfg = g.cfg.clone();
        set.apply(&mut cfg, name)?;
        if cfg == g.cfg {
            return Ok(());
        }
        g.commit(&self.engine, cfg)?;
        tracing::info!(dg = %dg, volume = %name, "volume_set: {set:?}");
        self.publish(g, name);
        Ok(())
    }
}
