//! SPDK's `bdev_raid_*` methods (raid0, raid1, raid5f, concat), which plexd maps onto volumes.

use serde::{Deserialize, Serialize};

use super::RpcMethod;

method!(
    /// `bdev_raid_create`: build (or re-assemble) a raid bdev over base bdevs.
    BdevRaidCreate, "bdev_raid_create", RaidCreateParams, bool
);

method!(
    /// `bdev_raid_delete`: remove a raid bdev and free its base bdevs.
    BdevRaidDelete, "bdev_raid_delete", RaidDeleteParams, bool
);

method!(
    /// `bdev_raid_get_bdevs`: raid bdevs in a category.
    BdevRaidGetBdevs, "bdev_raid_get_bdevs", RaidGetBdevsParams, Vec<RaidInfo>
);

method!(
    /// `bdev_raid_add_base_bdev`: add a base bdev to a raid1 (rebuilt in the background).
    BdevRaidAddBaseBdev, "bdev_raid_add_base_bdev", RaidAddBaseBdevParams, bool
);

method!(
    /// `bdev_raid_remove_base_bdev`: remove a base bdev from the raid1 or raid5f holding it.
    BdevRaidRemoveBaseBdev, "bdev_raid_remove_base_bdev", RaidRemoveBaseBdevParams, bool
);

/// Params of `bdev_raid_create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaidCreateParams {
    /// The raid bdev's name.
    pub name: String,
    /// `raid0`/`0`, `raid1`/`1`, `raid5f`/`5f` or `concat`.
    pub raid_level: String,
    /// The base bdevs, in order.
    pub base_bdevs: BaseBdevs,
    /// raid0's strip size in KiB (default 64); raid5f's (required, a power of two).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strip_size_kb: Option<u64>,
    /// The raid bdev's UUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// SPDK's on-disk superblock; plexd always keeps its configuration on the base bdevs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superblock: Option<bool>,
}

/// SPDK accepts the list as an array or as one space-separated string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BaseBdevs {
    /// An array of names.
    List(Vec<String>),
    /// Names separated by white space.
    Text(String),
}

impl BaseBdevs {
    /// The names, in order.
    pub fn names(&self) -> Vec<String> {
        match self {
            BaseBdevs::List(l) => l.clone(),
            BaseBdevs::Text(s) => s.split_whitespace().map(str::to_string).collect(),
        }
    }
}

impl Default for BaseBdevs {
    fn default() -> Self {
        BaseBdevs::List(Vec::new())
    }
}

/// Params of `bdev_raid_delete`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaidDeleteParams {
    /// The raid bdev.
    pub name: String,
    /// SPDK's "wipe the superblock" flag: plexd always resets the labels on delete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clear_sb: Option<bool>,
}

/// Params of `bdev_raid_get_bdevs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaidGetBdevsParams {
    /// `all` (default), `online`, `configuring` or `offline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// Params of `bdev_raid_add_base_bdev`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaidAddBaseBdevParams {
    /// The raid1 bdev.
    pub raid_bdev: String,
    /// The bdev to add.
    pub base_bdev: String,
}

/// Params of `bdev_raid_remove_base_bdev`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaidRemoveBaseBdevParams {
    /// The base bdev.
    pub name: String,
}

/// One raid bdev as `bdev_raid_get_bdevs` describes it (SPDK's shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RaidInfo {
    /// The raid bdev's name.
    pub name: String,
    /// Its UUID.
    pub uuid: String,
    /// The strip size in KiB of a raid0 or raid5f (0 otherwise).
    pub strip_size_kb: u64,
    /// `online` or `offline`.
    pub state: String,
    /// `raid0`, `raid1`, `raid5f` or `concat`.
    pub raid_level: Option<String>,
    /// Always true: the configuration lives on the base bdevs.
    pub superblock: bool,
    /// Slots for base bdevs (a removed one leaves an empty slot).
    pub num_base_bdevs: u64,
    /// Base bdevs present.
    pub num_base_bdevs_discovered: u64,
    /// Base bdevs holding current data.
    pub num_base_bdevs_operational: u64,
    /// One entry per slot.
    pub base_bdevs_list: Vec<RaidBaseBdev>,
}

/// One slot of a raid bdev.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RaidBaseBdev {
    /// The base bdev (`null` for an empty slot).
    pub name: Option<String>,
    /// Its UUID (`null` if missing).
    pub uuid: Option<String>,
    /// Whether it is present and holds current data.
    pub is_configured: bool,
    /// Where its data starts, in blocks.
    pub data_offset: u64,
    /// Its data length, in blocks.
    pub data_size: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::golden::assert_shape;

    #[test]
    fn params_shapes() {
        assert_shape(
            &RaidCreateParams {
                name: "R0".into(),
                raid_level: "raid0".into(),
                base_bdevs: BaseBdevs::List(vec!["M0".into(), "M1".into()]),
                strip_size_kb: Some(64),
                ..Default::default()
            },
            json!({"name": "R0", "raid_level": "raid0", "base_bdevs": ["M0", "M1"],
                   "strip_size_kb": 64}),
        );
        let p: RaidCreateParams = serde_json::from_value(
            json!({"name": "R1", "raid_level": "1", "base_bdevs": "M0 M1", "superblock": true}),
        )
        .expect("text list");
        assert_eq!(p.base_bdevs.names(), vec!["M0", "M1"]);
        assert_shape(
            &RaidDeleteParams {
                name: "R0".into(),
                clear_sb: None,
            },
            json!({"name": "R0"}),
        );
        assert_shape(
            &RaidGetBdevsParams {
                category: Some("online".into()),
            },
            json!({"category": "online"}),
        );
        assert_shape(
            &RaidAddBaseBdevParams {
                raid_bdev: "R1".into(),
                base_bdev: "M2".into(),
            },
            json!({"raid_bdev": "R1", "base_bdev": "M2"}),
        );
        assert_shape(
            &RaidRemoveBaseBdevParams { name: "M2".into() },
            json!({"name": "M2"}),
        );
    }

    #[test]
    fn raid_info_shape() {
        let info = RaidInfo {
            name: "R1".into(),
            uuid: "6f1c2b3a-0000-4000-8000-000000000001".into(),
            strip_size_kb: 0,
            state: "online".into(),
            raid_level: Some("raid1".into()),
            superblock: true,
            num_base_bdevs: 2,
            num_base_bdevs_discovered: 1,
            num_base_bdevs_operational: 1,
            base_bdevs_list: vec![
                RaidBaseBdev {
                    name: Some("M0".into()),
                    uuid: Some("6f1c2b3a-0000-4000-8000-000000000002".into()),
                    is_configured: true,
                    data_offset: 2048,
                    data_size: 129024,
                },
                RaidBaseBdev::default(),
            ],
        };
        assert_shape(
            &info,
            json!({"name": "R1", "uuid": "6f1c2b3a-0000-4000-8000-000000000001",
                   "strip_size_kb": 0, "state": "online", "raid_level": "raid1",
                   "superblock": true, "num_base_bdevs": 2, "num_base_bdevs_discovered": 1,
                   "num_base_bdevs_operational": 1,
                   "base_bdevs_list": [
                       {"name": "M0", "uuid": "6f1c2b3a-0000-4000-8000-000000000002",
                        "is_configured": true, "data_offset": 2048, "data_size": 129024},
                       {"name": null, "uuid": null, "is_configured": false,
                        "data_offset": 0, "data_size": 0}]}),
        );
    }
}
