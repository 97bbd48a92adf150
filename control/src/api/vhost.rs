//! The vhost-user-blk methods (SPDK's names and shapes): create, list and delete controllers,
//! and set their interrupt coalescing.

use serde::{Deserialize, Serialize};

use super::{Lenient, RpcMethod};

method!(
    /// `vhost_create_blk_controller`: export a bdev on the socket `<dir>/<ctrlr>`.
    VhostCreateBlkController, "vhost_create_blk_controller", CreateBlkControllerParams, bool
);

method!(
    /// `vhost_get_controllers`: every controller, or the one named.
    VhostGetControllers, "vhost_get_controllers", GetControllersParams, Vec<ControllerInfo>
);

method!(
    /// `vhost_delete_controller`.
    VhostDeleteController, "vhost_delete_controller", DeleteControllerParams, bool
);

method!(
    /// `vhost_controller_set_coalescing`.
    VhostControllerSetCoalescing, "vhost_controller_set_coalescing", SetCoalescingParams, bool
);

/// Params of `vhost_create_blk_controller`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBlkControllerParams {
    /// Name of the controller; also its socket's file name.
    pub ctrlr: String,
    /// The bdev to export.
    pub dev_name: String,
    /// Export read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    /// Cores whose reactors serve the queues (hex mask or list); default every reactor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpumask: Option<String>,
    /// Packed rings; only `false` is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packed_ring: Option<bool>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packed_ring_recovery: Option<bool>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}

/// Params of `vhost_get_controllers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetControllersParams {
    /// Only this controller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Params of `vhost_delete_controller`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteControllerParams {
    /// The controller.
    pub ctrlr: String,
}

/// Params of `vhost_controller_set_coalescing`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetCoalescingParams {
    /// The controller.
    pub ctrlr: String,
    /// Base delay in microseconds.
    pub delay_base_us: u32,
    /// I/O rate above which SPDK coalesces.
    pub iops_threshold: u32,
}

/// One controller as `vhost_get_controllers` describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControllerInfo {
    /// The controller's name.
    pub ctrlr: Lenient<String>,
    /// Cores serving its queues, as a hex mask.
    pub cpumask: Lenient<String>,
    /// Coalescing base delay.
    pub delay_base_us: u32,
    /// Coalescing IOPS threshold.
    pub iops_threshold: u32,
    /// The vhost-user socket's path.
    pub socket: Lenient<String>,
    /// The connected front-end, if any (at most one).
    pub sessions: Lenient<Vec<Session>>,
    /// What the controller exports.
    pub backend_specific: Lenient<BackendSpecific>,
}

/// A front-end connected to a controller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Session {
    /// vhost device id.
    pub vid: u64,
    /// Session id.
    pub id: u64,
    /// `<ctrlr>s<id>`.
    pub name: String,
    /// Whether the device is started.
    pub started: bool,
}

/// The `backend_specific` part of a controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendSpecific {
    /// The exported block device.
    pub block: Lenient<BlockBackend>,
}

/// The block device a controller exports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlockBackend {
    /// Exported read-only.
    pub readonly: Lenient<bool>,
    /// The bdev.
    pub bdev: Lenient<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::golden::assert_shape;

    #[test]
    fn controller_shape() {
        let c = ControllerInfo {
            ctrlr: "vhost.0".into(),
            cpumask: "0x3".into(),
            delay_base_us: 0,
            iops_threshold: 60000,
            socket: "/var/tmp/vhost.0".into(),
            sessions: vec![Session {
                vid: 0,
                id: 0,
                name: "vhost.0s0".into(),
                started: true,
            }]
            .into(),
            backend_specific: BackendSpecific {
                block: BlockBackend {
                    readonly: false.into(),
                    bdev: "Malloc0".into(),
                }
                .into(),
            }
            .into(),
        };
        assert_shape(
            &c,
            json!({"ctrlr": "vhost.0", "cpumask": "0x3", "delay_base_us": 0,
                "iops_threshold": 60000, "socket": "/var/tmp/vhost.0",
                "sessions": [{"vid": 0, "id": 0, "name": "vhost.0s0", "started": true}],
                "backend_specific": {"block": {"readonly": false, "bdev": "Malloc0"}}}),
        );
    }

    #[test]
    fn params_shapes() {
        assert_shape(
            &CreateBlkControllerParams {
                ctrlr: "vhost.0".into(),
                dev_name: "M0".into(),
                readonly: Some(true),
                cpumask: Some("0x1".into()),
                ..Default::default()
            },
            json!({"ctrlr": "vhost.0", "dev_name": "M0", "readonly": true, "cpumask": "0x1"}),
        );
        assert_shape(
            &GetControllersParams {
                name: Some("vhost.0".into()),
            },
            json!({"name": "vhost.0"}),
        );
        assert_shape(
            &DeleteControllerParams {
                ctrlr: "vhost.0".into(),
            },
            json!({"ctrlr": "vhost.0"}),
        );
        assert_shape(
            &SetCoalescingParams {
                ctrlr: "vhost.0".into(),
                delay_base_us: 5,
                iops_threshold: 6,
            },
            json!({"ctrlr": "vhost.0", "delay_base_us": 5, "iops_threshold": 6}),
        );
    }
}
