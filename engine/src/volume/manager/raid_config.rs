//! The saved-config entry of a volume made by SPDK's `bdev_raid_create` (`api::raid`): the
//! volume bdev carries it, so `save_config` writes the `bdev_raid_create` call that
//! re-assembles the raid rather than the volume manager calls. Built here, when the manager
//! starts the volume, from the group's configuration; the API layer only parses requests.

use serde_json::{json, Value};

use crate::volume::manager::Group;
use crate::volume::model::objects::DiskCondition;

/// The saved-config entry that recreates a raid volume, or `None` for other volumes.
pub(crate) fn saved_config(g: &Group, vol: &str) -> Option<Value> {
    let v = g.cfg.volume(vol)?;
    let level = v.raid_level.clone()?;
    let strip = g
        .cfg
        .plexes_of(vol)
        .first()
        .and_then(|p| p.layout.stripe_unit())
        .map(|su| su * g.cfg.block_size as u64 / 1024)
        .unwrap_or(0);
    Some(json!({
        "method": "bdev_raid_create",
        "params": {
            "name": v.bdev(&g.cfg.name),
            "raid_level": level,
            "strip_size_kb": strip,
            "uuid": v.uuid.to_string(),
            "base_bdevs": base_bdev_names(g),
            "superblock": true,
        }
    }))
}

/// The group's member bdevs in disk order (missing ones by their last known device; removed
/// ones, whose slots are empty, left out: the raid re-assembles degraded without them).
fn base_bdev_names(g: &Group) -> Vec<String> {
    g.cfg
        .disks
        .iter()
        .filter(|d| d.condition != DiskCondition::Removed)
        .map(|d| {
            g.members
                .get(&d.name)
                .map_or(d.device.clone(), |m| m.bdev.name().to_string())
        })
        .collect()
}
