//! The disks of disk groups: `disk_list`, `disk_set`.

use serde::{Deserialize, Serialize};

use super::dg::DgListParams;
use super::{Lenient, RpcMethod};

method!(
    /// `disk_list`: the disks of every imported group, or of `dg`.
    DiskList, "disk_list", DgListParams, Vec<DiskInfo>
);

method!(
    /// `disk_set`: mark a disk as a hot spare, or exclude it from hot use.
    DiskSet, "disk_set", DiskSetParams, bool
);

/// Params of `disk_set`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSetParams {
    /// The group.
    pub dg: String,
    /// The disk (e.g. disk02), not the bdev.
    pub name: String,
    /// Whether the disk is a hot spare; unchanged if absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spare: Option<bool>,
    /// Whether hot relocation may not use the disk; unchanged if absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nohotuse: Option<bool>,
}

/// One disk as `disk_list` describes it; offsets and lengths in the group's blocks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskInfo {
    /// The disk's group.
    pub dg: Lenient<String>,
    /// The disk's name in the group.
    pub name: Lenient<String>,
    /// The bdev it is on (`null` while the disk is missing).
    pub device: Lenient<Option<String>>,
    /// The disk's id (a UUID).
    pub disk_id: String,
    /// `OK`, `NODEVICE`, `FAILED` or `REMOVED`.
    pub condition: Lenient<String>,
    /// The label's serial on the device (`null` while the disk is missing).
    pub serial: Option<u64>,
    /// The serial the configuration expects.
    pub expected_serial: u64,
    /// A hot spare.
    pub spare: Lenient<bool>,
    /// Excluded from hot use.
    pub nohotuse: Lenient<bool>,
    /// Where the public region (the data) starts.
    pub public_offset_blocks: u64,
    /// Length of the public region.
    pub public_blocks: Lenient<u64>,
    /// Blocks free for allocation.
    pub free_blocks: Lenient<u64>,
    /// Names of the subdisks on the disk.
    pub subdisks: Vec<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::golden::assert_shape;

    #[test]
    fn disk_set_params_shape() {
        assert_shape(
            &DiskSetParams {
                dg: "dg01".into(),
                name: "disk02".into(),
                spare: Some(true),
                nohotuse: None,
            },
            json!({"dg": "dg01", "name": "disk02", "spare": true}),
        );
    }

    #[test]
    fn disk_info_shape() {
        let info = DiskInfo {
            dg: "dg01".into(),
            name: "disk01".into(),
            device: Lenient::Value(None),
            disk_id: "b1c3d4e5-0000-4000-8000-000000000001".into(),
            condition: "NODEVICE".into(),
            serial: None,
            expected_serial: 4,
            spare: false.into(),
            nohotuse: true.into(),
            public_offset_blocks: 2048,
            public_blocks: 129024.into(),
            free_blocks: 0.into(),
            subdisks: vec!["vol01-01".into()],
        };
        assert_shape(
            &info,
            json!({"dg": "dg01", "name": "disk01", "device": null,
                   "disk_id": "b1c3d4e5-0000-4000-8000-000000000001", "condition": "NODEVICE",
                   "serial": null, "expected_serial": 4, "spare": false, "nohotuse": true,
                   "public_offset_blocks": 2048, "public_blocks": 129024, "free_blocks": 0,
                   "subdisks": ["vol01-01"]}),
        );
        let read: DiskInfo = serde_json::from_value(json!({"device": "M0"})).expect("lenient");
        assert_eq!(read.device.get(), Some(&Some("M0".to_string())));
    }
}
