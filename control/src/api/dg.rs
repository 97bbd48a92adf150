//! Disk groups: `dg_create`, `dg_set`, `dg_add_disk`, `dg_remove_disk`, `dg_deport`,
//! `dg_destroy`, `dg_import`, `dg_list`.

use serde::{Deserialize, Serialize};

use super::{Lenient, RpcMethod};

method!(
    /// `dg_create`: a disk group from bdevs, each becoming a disk named diskNN.
    DgCreate, "dg_create", DgCreateParams, bool
);

method!(
    /// `dg_set`: change a disk group's settings.
    DgSet, "dg_set", DgSetParams, bool
);

method!(
    /// `dg_add_disk`: add a bdev to a group as a new disk; answers the disk's name.
    DgAddDisk, "dg_add_disk", DgAddDiskParams, String
);

method!(
    /// `dg_remove_disk`: remove a disk that holds no subdisks.
    DgRemoveDisk, "dg_remove_disk", DgDiskParams, bool
);

method!(
    /// `dg_deport`: stop a group's volumes and release its disks.
    DgDeport, "dg_deport", DgNameParams, bool
);

method!(
    /// `dg_destroy`: destroy a group that has no volumes.
    DgDestroy, "dg_destroy", DgNameParams, bool
);

method!(
    /// `dg_import`: import groups found on bdevs; answers the groups imported.
    DgImport, "dg_import", DgImportParams, Vec<String>
);

method!(
    /// `dg_list`: imported groups, or the one named.
    DgList, "dg_list", DgListParams, Vec<DgInfo>
);

/// Params of `dg_create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DgCreateParams {
    /// Name of the new group.
    pub name: String,
    /// The bdevs to use as its disks.
    pub disks: Vec<String>,
    /// Initialise bdevs even if they hold a label.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Number of configuration copies to keep (0: default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nconfig: Option<u32>,
}

/// Params of `dg_set`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DgSetParams {
    /// The group.
    pub name: String,
    /// Number of configuration copies to keep (0: default).
    pub nconfig: u32,
}

/// Params of `dg_add_disk`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DgAddDiskParams {
    /// The group.
    pub dg: String,
    /// The bdev to add.
    pub disk: String,
    /// Name for the disk; default the next free diskNN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Initialise the bdev even if it holds a label.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Params naming an object of a group: `dg_remove_disk` (a disk), `volume_delete`,
/// `volume_start`, `volume_stop` (a volume).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DgDiskParams {
    /// The group.
    pub dg: String,
    /// The object's name.
    pub name: String,
}

/// Params naming a group: `dg_deport`, `dg_destroy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DgNameParams {
    /// The group.
    pub name: String,
}

/// Params of `dg_import`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DgImportParams {
    /// Only this group; default every group found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Scan only these bdevs; default every unclaimed bdev.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<String>>,
    /// Trust the configuration copy on this bdev when the copies disagree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub select_copy: Option<String>,
}

/// Params of the listings filtered by group and name: `dg_list` (`name` or `dg` is the
/// group), `disk_list`, `volume_list`, `vm_print` (`dg` is the group).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DgListParams {
    /// Only this group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dg: Option<String>,
    /// Only this object (for `dg_list`, this group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One imported disk group as `dg_list` describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DgInfo {
    /// The group's name.
    pub name: Lenient<String>,
    /// The group's id (a UUID).
    pub id: Lenient<String>,
    /// The configuration's sequence number (raised by every commit).
    pub seq: Lenient<u64>,
    /// The block size shared by its disks, in bytes.
    pub block_size: Lenient<u64>,
    /// Number of configuration copies kept (0: default).
    pub nconfig: u32,
    /// Its disks' names.
    pub disks: Lenient<Vec<String>>,
    /// Its volumes' names.
    pub volumes: Lenient<Vec<String>>,
    /// Blocks free for allocation on its disks (spares left out).
    pub free_blocks: Lenient<u64>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::golden::assert_shape;
    use crate::api::params_value;

    #[test]
    fn params_shapes() {
        assert_shape(
            &DgCreateParams {
                name: "dg01".into(),
                disks: vec!["M0".into(), "M1".into()],
                ..Default::default()
            },
            json!({"name": "dg01", "disks": ["M0", "M1"]}),
        );
        assert_shape(
            &DgCreateParams {
                name: "dg01".into(),
                disks: vec!["M0".into()],
                force: true,
                nconfig: Some(2),
            },
            json!({"name": "dg01", "disks": ["M0"], "force": true, "nconfig": 2}),
        );
        assert_shape(
            &DgAddDiskParams {
                dg: "dg01".into(),
                disk: "M2".into(),
                name: Some("fast01".into()),
                force: true,
            },
            json!({"dg": "dg01", "disk": "M2", "name": "fast01", "force": true}),
        );
        assert_shape(
            &DgDiskParams {
                dg: "dg01".into(),
                name: "disk02".into(),
            },
            json!({"dg": "dg01", "name": "disk02"}),
        );
        assert_shape(
            &DgSetParams {
                name: "dg01".into(),
                nconfig: 3,
            },
            json!({"name": "dg01", "nconfig": 3}),
        );
        assert_shape(
            &DgNameParams {
                name: "dg01".into(),
            },
            json!({"name": "dg01"}),
        );
        assert_eq!(params_value(&DgImportParams::default()), None);
        assert_shape(
            &DgImportParams {
                name: Some("dg01".into()),
                disks: Some(vec!["M0".into()]),
                select_copy: Some("M0".into()),
            },
            json!({"name": "dg01", "disks": ["M0"], "select_copy": "M0"}),
        );
        assert_eq!(params_value(&DgListParams::default()), None);
    }

    #[test]
    fn params_refuse_unknown_fields_and_default_force() {
        let p: DgCreateParams =
            serde_json::from_value(json!({"name": "d", "disks": []})).expect("parse");
        assert!(!p.force);
        assert!(serde_json::from_value::<DgCreateParams>(
            json!({"name": "d", "disks": [], "x": 1})
        )
        .is_err());
    }

    #[test]
    fn dg_info_shape() {
        assert_shape(
            &DgInfo {
                name: "dg01".into(),
                id: "390e8001-afdb-4789-bf43-ab52e69cb9b6".into(),
                seq: 7.into(),
                block_size: 512.into(),
                nconfig: 0,
                disks: vec!["disk01".to_string()].into(),
                volumes: Vec::<String>::new().into(),
                free_blocks: 131072.into(),
            },
            json!({"name": "dg01", "id": "390e8001-afdb-4789-bf43-ab52e69cb9b6", "seq": 7,
                   "block_size": 512, "nconfig": 0, "disks": ["disk01"], "volumes": [],
                   "free_blocks": 131072}),
        );
    }
}
