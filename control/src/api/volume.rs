//! Volumes: `volume_create`, `volume_delete`, `volume_start`, `volume_stop`,
//! `volume_resize`, `volume_list`, `volume_recover`, `volume_check` and `volume_addlog`
//! (RAID-5 rebuild, scrub and log plexes), `volume_set` (a volume's properties), and the
//! `vxprint -ht` listing `vm_print` (the volume manager's objects after Veritas VxVM).

use serde::{Deserialize, Serialize};

use super::dg::{DgDiskParams, DgListParams};
use super::task::TaskStarted;
use super::{Lenient, RpcMethod};
use crate::size::parse_size;

method!(
    /// `volume_create`: a volume (and its plexes and subdisks); answers its bdev's name.
    VolumeCreate, "volume_create", VolumeCreateParams, String
);

method!(
    /// `volume_delete`: stop and delete a volume, freeing its space.
    VolumeDelete, "volume_delete", DgDiskParams, bool
);

method!(
    /// `volume_start`: publish a volume's bdev (resyncing its mirrors or parity if needed).
    VolumeStart, "volume_start", VolumeStartParams, bool
);

method!(
    /// `volume_recover`: rebuild a RAID-5 volume's stale column in the background.
    VolumeRecover, "volume_recover", VolumeRecoverParams, TaskStarted
);

method!(
    /// `volume_check`: check (and with `repair` fix) a RAID-5 volume's parity in the
    /// background; the task's result has the mismatching rows.
    VolumeCheck, "volume_check", VolumeCheckParams, TaskStarted
);

method!(
    /// `volume_addlog`: add a log plex to a RAID-5 volume (VxVM's `vxassist addlog`); answers
    /// the new plex's name.
    VolumeAddlog, "volume_addlog", VolumeAddlogParams, String
);

method!(
    /// `volume_set`: change properties of a volume (each optional; at least one).
    VolumeSet, "volume_set", VolumeSetParams, bool
);

/// Params of `volume_set`: the volume, and the properties to change (each left out stays as
/// it is; at least one must be given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSetParams {
    /// The group.
    pub dg: String,
    /// The volume.
    pub name: String,
    /// RAID-5: full-stripe writes compute parity from the client's buffers instead of a copy
    /// (md's `skip_copy`). Only for clients that never change a buffer while its write is in
    /// flight; not used while a log plex works. Refused for other layouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_copy: Option<bool>,
}

/// Params of `volume_addlog`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeAddlogParams {
    /// The group.
    pub dg: String,
    /// The volume.
    pub name: String,
    /// Disks (or bdevs) to allocate the log on; default any disk no column or log uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc: Option<Vec<String>>,
}

/// Params of `volume_start`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeStartParams {
    /// The group.
    pub dg: String,
    /// The volume.
    pub name: String,
    /// Start a RAID-5 volume that crashed while degraded (its missing column may read back
    /// wrong where the crash tore a write).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Params of `volume_recover`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeRecoverParams {
    /// The group.
    pub dg: String,
    /// The volume.
    pub name: String,
    /// Rebuild the column on this disk (a disk of the group or its bdev) instead of in place;
    /// default: in place when the column's disks are present, else any disk no other column
    /// or log uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// Pause between chunks of rows, in ms (throttle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

/// Params of `volume_check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeCheckParams {
    /// The group.
    pub dg: String,
    /// The volume.
    pub name: String,
    /// Rewrite the parity of the rows where it does not match the data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repair: bool,
}

method!(
    /// `volume_stop`: remove a volume's bdev and mark it clean.
    VolumeStop, "volume_stop", DgDiskParams, bool
);

method!(
    /// `volume_resize`: grow a volume; answers its new length.
    VolumeResize, "volume_resize", VolumeResizeParams, Resized
);

method!(
    /// `volume_list`: volumes with their plexes and subdisks.
    VolumeList, "volume_list", DgListParams, Vec<VolumeInfo>
);

method!(
    /// `vm_print`: the objects of one group (or all) in `vxprint -ht` columns.
    VmPrint, "vm_print", DgListParams, String
);

/// A size: bytes as a number, or a string with a unit (`512M`, `1G`, `4096`, `10GiB`, `100MB`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size {
    /// Bytes.
    Bytes(u64),
    /// A number with an optional unit, as [`parse_size`] reads it.
    Text(String),
}

impl Size {
    /// The size in bytes; the error says what is wrong with the text.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(b) => Ok(*b),
            Size::Text(s) => parse_size(s).map_err(|e| e.to_string()),
        }
    }
}

impl Default for Size {
    fn default() -> Self {
        Size::Bytes(0)
    }
}

/// Params of `volume_create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeCreateParams {
    /// The group.
    pub dg: String,
    /// The volume's name.
    pub name: String,
    /// Its size.
    pub size: Size,
    /// `concat` (default), `stripe`, `mirror`, `mirror-stripe`, `stripe-mirror` or `raid5`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// Columns of a striped or RAID-5 layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ncol: Option<u32>,
    /// Mirrors of a mirrored layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nmirror: Option<u32>,
    /// Stripe unit in KiB (default 64; 16 for `raid5`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_unit_kb: Option<u64>,
    /// `select`, `round` or `prefer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_policy: Option<String>,
    /// The plex `prefer` reads from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefer_plex: Option<String>,
    /// Disks to allocate from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alloc: Option<Vec<String>>,
    /// RAID-5: log plexes (default 1 when a disk the columns do not use has room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nlog: Option<u32>,
    /// RAID-5: once no log plex works, `continue` (default: write on without the log's
    /// protection) or `readonly` (refuse writes until a log plex is added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_failure: Option<String>,
    /// RAID-5: full-stripe writes compute parity from the client's buffers instead of a copy
    /// (md's `skip_copy`; default false). Only for clients that never change a buffer while
    /// its write is in flight; not used while a log plex works. Refused for other layouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_copy: Option<bool>,
}

/// Params of `volume_resize`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeResizeParams {
    /// The group.
    pub dg: String,
    /// The volume.
    pub name: String,
    /// Its new size.
    pub size: Size,
}

/// The result of `volume_resize`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resized {
    /// The volume's length in blocks.
    pub num_blocks: Lenient<u64>,
}

/// One volume as `volume_list` describes it; lengths in the group's blocks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeInfo {
    /// The volume's group.
    pub dg: Lenient<String>,
    /// The volume's name.
    pub name: Lenient<String>,
    /// Its bdev's name (`<dg>/<name>`, or the raid's name).
    pub bdev: String,
    /// SPDK's raid level if the volume is a `bdev_raid_*` bdev.
    pub raid_level: Option<String>,
    /// The volume this one is a column of (layered volumes).
    pub parent: Option<String>,
    /// The volume's UUID (also its bdev's).
    pub uuid: String,
    /// Block size in bytes.
    pub block_size: Lenient<u64>,
    /// Length in blocks.
    pub num_blocks: Lenient<u64>,
    /// Length in bytes.
    pub size_bytes: Lenient<u64>,
    /// The layout it was created with.
    pub layout: Lenient<String>,
    /// Administrative state (`EMPTY`, `CLEAN`, `ACTIVE`, `SYNC`, `NEEDSYNC`).
    pub state: Lenient<String>,
    /// Kernel state (`ENABLED`, `DETACHED`, `DISABLED`).
    pub kstate: Lenient<String>,
    /// `select`, `round` or `prefer`.
    pub read_policy: String,
    /// The preferred plex of the `prefer` policy.
    pub prefer_plex: Option<String>,
    /// Whether its bdev is published.
    pub started: Lenient<bool>,
    /// Where an interrupted resync resumes.
    pub resync_offset: Option<u64>,
    /// RAID-5: full-stripe writes compute parity from the client's buffers, without a copy
    /// (`skip_copy` of `volume_create` and `volume_set`). Absent when off.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skip_copy: bool,
    /// Its plexes.
    pub plexes: Lenient<Vec<PlexInfo>>,
}

/// One plex of a [`VolumeInfo`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlexInfo {
    /// The plex's name.
    pub name: String,
    /// Administrative state (`CLEAN`, `ACTIVE`, `STALE`, `IOFAIL`, ...).
    pub state: String,
    /// Kernel state.
    pub kstate: String,
    /// `concat`, `stripe` or `raid` (RAID-5).
    pub layout: String,
    /// Columns (1 for concat).
    pub ncol: u32,
    /// Stripe unit in blocks (`null` for concat).
    pub stripe_unit_blocks: Option<u64>,
    /// RAID-5: the columns recorded without current data (one: degraded, reads of it are
    /// reconstructed; two or more: offline). Absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale_columns: Vec<u32>,
    /// Sum of its subdisks' lengths.
    pub len: u64,
    /// How far an attach copy has written it, while one runs.
    pub sync_offset: Option<u64>,
    /// Read errors seen since the volume started.
    pub read_errors: u64,
    /// Its subdisks.
    pub subdisks: Vec<SubdiskInfo>,
}

/// One subdisk of a [`PlexInfo`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubdiskInfo {
    /// The subdisk's name.
    pub name: String,
    /// The disk it is on.
    pub disk: String,
    /// That disk's bdev (`null` while the disk is missing).
    pub device: Option<String>,
    /// Where on the disk's public region it starts.
    pub disk_offset: u64,
    /// Its length.
    pub len: u64,
    /// Its column in the plex.
    pub column: u32,
    /// Where in the column it starts.
    pub column_offset: u64,
    /// The volume it is backed by instead of a disk (layered volumes).
    pub subvolume: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::golden::assert_shape;

    #[test]
    fn params_shapes() {
        assert_shape(
            &VolumeCreateParams {
                dg: "dg01".into(),
                name: "vol01".into(),
                size: Size::Bytes(1 << 20),
                layout: Some("stripe".into()),
                ncol: Some(2),
                stripe_unit_kb: Some(64),
                ..Default::default()
            },
            json!({"dg": "dg01", "name": "vol01", "size": 1048576, "layout": "stripe",
                   "ncol": 2, "stripe_unit_kb": 64}),
        );
        let p: VolumeResizeParams =
            serde_json::from_value(json!({"dg": "dg01", "name": "vol01", "size": "16M"}))
                .expect("text size");
        assert_eq!(p.size.bytes(), Ok(16 << 20));
        assert!(serde_json::from_value::<VolumeResizeParams>(
            json!({"dg": "d", "name": "v", "size": true})
        )
        .is_err());
        assert_shape(
            &Resized {
                num_blocks: 32768.into(),
            },
            json!({"num_blocks": 32768}),
        );
    }

    #[test]
    fn skip_copy_params() {
        assert_shape(
            &VolumeCreateParams {
                dg: "dg01".into(),
                name: "r5".into(),
                size: Size::Text("1G".into()),
                layout: Some("raid5".into()),
                skip_copy: Some(true),
                ..Default::default()
            },
            json!({"dg": "dg01", "name": "r5", "size": "1G", "layout": "raid5",
                   "skip_copy": true}),
        );
        assert_shape(
            &VolumeSetParams {
                dg: "dg01".into(),
                name: "r5".into(),
                skip_copy: Some(false),
            },
            json!({"dg": "dg01", "name": "r5", "skip_copy": false}),
        );
        // Every property is optional (the daemon refuses a call without any); an unknown
        // one is refused by the params.
        let none: VolumeSetParams =
            serde_json::from_value(json!({"dg": "dg01", "name": "r5"})).expect("no property");
        assert_eq!(none.skip_copy, None);
        assert!(serde_json::from_value::<VolumeSetParams>(
            json!({"dg": "dg01", "name": "r5", "skipcopy": true})
        )
        .is_err());
    }

    #[test]
    fn sizes_read_numbers_and_text() {
        let n: Size = serde_json::from_value(json!(4096)).expect("number");
        assert_eq!(n.bytes(), Ok(4096));
        let t: Size = serde_json::from_value(json!("1G")).expect("text");
        assert_eq!(t.bytes(), Ok(1 << 30));
        assert!(Size::Text("x".into()).bytes().is_err());
        assert_shape(&Size::Bytes(512), json!(512));
    }

    #[test]
    fn raid5_plex_shape() {
        let plex = PlexInfo {
            name: "r5-01".into(),
            state: "ACTIVE".into(),
            kstate: "ENABLED".into(),
            layout: "raid".into(),
            ncol: 4,
            stripe_unit_blocks: Some(32),
            stale_columns: vec![2],
            len: 3072,
            ..Default::default()
        };
        assert_shape(
            &plex,
            json!({"name": "r5-01", "state": "ACTIVE", "kstate": "ENABLED", "layout": "raid",
                   "ncol": 4, "stripe_unit_blocks": 32, "stale_columns": [2], "len": 3072,
                   "sync_offset": null, "read_errors": 0, "subdisks": []}),
        );
        // A listing from a daemon without the field reads as no stale column.
        let old: PlexInfo = serde_json::from_value(json!({"name": "r5-01", "layout": "raid"}))
            .expect("a plex without stale_columns");
        assert!(old.stale_columns.is_empty());
    }

    #[test]
    fn volume_info_shape() {
        let info = VolumeInfo {
            dg: "dg01".into(),
            name: "vol01".into(),
            bdev: "dg01/vol01".into(),
            raid_level: None,
            parent: None,
            uuid: "6f1c2b3a-0000-4000-8000-000000000001".into(),
            block_size: 512.into(),
            num_blocks: 2048.into(),
            size_bytes: 1048576.into(),
            layout: "mirror".into(),
            state: "ACTIVE".into(),
            kstate: "ENABLED".into(),
            read_policy: "select".into(),
            prefer_plex: None,
            started: true.into(),
            resync_offset: None,
            skip_copy: false,
            plexes: vec![PlexInfo {
                name: "vol01-01".into(),
                state: "ACTIVE".into(),
                kstate: "ENABLED".into(),
                layout: "concat".into(),
                ncol: 1,
                stripe_unit_blocks: None,
                stale_columns: Vec::new(),
                len: 2048,
                sync_offset: None,
                read_errors: 0,
                subdisks: vec![SubdiskInfo {
                    name: "disk01-01".into(),
                    disk: "disk01".into(),
                    device: Some("M0".into()),
                    disk_offset: 0,
                    len: 2048,
                    column: 0,
                    column_offset: 0,
                    subvolume: None,
                }],
            }]
            .into(),
        };
        assert_shape(
            &info,
            json!({"dg": "dg01", "name": "vol01", "bdev": "dg01/vol01", "raid_level": null,
                   "parent": null, "uuid": "6f1c2b3a-0000-4000-8000-000000000001",
                   "block_size": 512, "num_blocks": 2048, "size_bytes": 1048576,
                   "layout": "mirror", "state": "ACTIVE", "kstate": "ENABLED",
                   "read_policy": "select", "prefer_plex": null, "started": true,
                   "resync_offset": null,
                   "plexes": [{"name": "vol01-01", "state": "ACTIVE", "kstate": "ENABLED",
                               "layout": "concat", "ncol": 1, "stripe_unit_blocks": null,
                               "len": 2048, "sync_offset": null, "read_errors": 0,
                               "subdisks": [{"name": "disk01-01", "disk": "disk01",
                                             "device": "M0", "disk_offset": 0, "len": 2048,
                                             "column": 0, "column_offset": 0,
                                             "subvolume": null}]}]}),
        );
    }
}
