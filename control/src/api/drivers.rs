//! The bdev drivers' methods (SPDK's names and params): create and delete for malloc, null,
//! aio, uring, error and delay bdevs, error injection and crash simulation, delay latencies.
//!
//! Create methods answer the new bdev's name, the others `true`. Params the daemon accepts for
//! SPDK compatibility but does not use are listed too, since params reject unknown fields.

use serde::{Deserialize, Serialize};

use super::RpcMethod;

method!(
    /// `bdev_malloc_create`: a RAM-backed bdev.
    BdevMallocCreate, "bdev_malloc_create", MallocCreateParams, String
);
method!(
    /// `bdev_malloc_delete`.
    BdevMallocDelete, "bdev_malloc_delete", DeleteParams, bool
);
method!(
    /// `bdev_null_create`: a bdev that discards writes and reads zeroes.
    BdevNullCreate, "bdev_null_create", NullCreateParams, String
);
method!(
    /// `bdev_null_delete`.
    BdevNullDelete, "bdev_null_delete", DeleteParams, bool
);
method!(
    /// `bdev_aio_create`: a bdev on a file or block device through Linux AIO.
    BdevAioCreate, "bdev_aio_create", AioCreateParams, String
);
method!(
    /// `bdev_aio_delete`.
    BdevAioDelete, "bdev_aio_delete", DeleteParams, bool
);
method!(
    /// `bdev_uring_create`: a bdev on a file or block device through io_uring.
    BdevUringCreate, "bdev_uring_create", UringCreateParams, String
);
method!(
    /// `bdev_uring_delete`.
    BdevUringDelete, "bdev_uring_delete", DeleteParams, bool
);
method!(
    /// `bdev_error_create`: `EE_<base_name>`, an error-injection bdev on a base bdev.
    BdevErrorCreate, "bdev_error_create", ErrorCreateParams, String
);
method!(
    /// `bdev_error_delete`.
    BdevErrorDelete, "bdev_error_delete", DeleteParams, bool
);
method!(
    /// `bdev_error_inject_error`: make the next I/Os of a type fail, hang or corrupt data.
    BdevErrorInjectError, "bdev_error_inject_error", InjectErrorParams, bool
);
method!(
    /// `bdev_error_set_crash_mode` (plexd): simulate a power cut on an error bdev.
    BdevErrorSetCrashMode, "bdev_error_set_crash_mode", SetCrashModeParams, bool
);
method!(
    /// `bdev_error_crash` (plexd): drop the unflushed writes of the volatile cache.
    BdevErrorCrash, "bdev_error_crash", DeleteParams, bool
);
method!(
    /// `bdev_delay_create`: a latency-injecting bdev on a base bdev.
    BdevDelayCreate, "bdev_delay_create", DelayCreateParams, String
);
method!(
    /// `bdev_delay_delete`.
    BdevDelayDelete, "bdev_delay_delete", DeleteParams, bool
);
method!(
    /// `bdev_delay_update_latency`: change one latency of a delay bdev.
    BdevDelayUpdateLatency, "bdev_delay_update_latency", UpdateLatencyParams, bool
);

fn is_false(b: &bool) -> bool {
    !*b
}

/// Params naming one bdev: every `bdev_<driver>_delete`, and `bdev_error_crash`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// The bdev.
    pub name: String,
}

/// Params of `bdev_malloc_create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MallocCreateParams {
    /// Name of the new bdev; default the first free `MallocN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Block size in bytes.
    pub block_size: u32,
    /// Size in blocks.
    pub num_blocks: u64,
    /// UUID; default a random one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub physical_block_size: Option<u32>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimal_io_boundary: Option<u32>,
    /// Separate metadata size; only 0 is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md_size: Option<u32>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md_interleave: Option<bool>,
    /// DIF type; only 0 is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dif_type: Option<u32>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dif_is_head_of_md: Option<bool>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dif_pi_format: Option<u32>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_id: Option<i32>,
}

/// Params of `bdev_null_create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullCreateParams {
    /// Name of the new bdev.
    pub name: String,
    /// Block size in bytes.
    pub block_size: u32,
    /// Size in blocks.
    pub num_blocks: u64,
    /// UUID; default a random one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub physical_block_size: Option<u32>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimal_io_boundary: Option<u32>,
    /// Separate metadata size; only 0 is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md_size: Option<u32>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md_interleave: Option<bool>,
    /// DIF type; only 0 is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dif_type: Option<u32>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dif_is_head_of_md: Option<bool>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dif_pi_format: Option<u32>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_write_alignment: Option<u32>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_write_granularity: Option<u32>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimal_write_size: Option<u32>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_unmap_alignment: Option<u32>,
    /// Accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_unmap_granularity: Option<u32>,
}

/// Params of `bdev_aio_create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AioCreateParams {
    /// Name of the new bdev.
    pub name: String,
    /// The backing file or block device (the daemon resolves relative paths itself).
    pub filename: String,
    /// Block size; default the device's logical block size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    /// Open the file read-only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub readonly: bool,
    /// Serve unmap and write-zeroes with fallocate.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fallocate: bool,
    /// UUID; default a random one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// SPDK's RWF_NOWAIT option (sent as `false` by SPDK's client); accepted and ignored.
    #[serde(default, skip_serializing_if = "is_false")]
    pub nowait: bool,
}

/// Params of `bdev_uring_create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UringCreateParams {
    /// Name of the new bdev.
    pub name: String,
    /// The backing file or block device.
    pub filename: String,
    /// Block size; default the device's logical block size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    /// UUID; default a random one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// Params of `bdev_error_create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorCreateParams {
    /// The bdev to stack on.
    pub base_name: String,
    /// UUID; default a random one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// Params of `bdev_error_inject_error`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectErrorParams {
    /// The error bdev.
    pub name: String,
    /// `read`, `write`, `unmap`, `flush`, `all`, or `clear` to remove injected errors.
    pub io_type: String,
    /// `failure`, `pending`, `corrupt_data` or `nomem` (required unless clearing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// How many I/Os to hit (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num: Option<u64>,
    /// Byte to corrupt (corrupt_data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt_offset: Option<u64>,
    /// Value XORed into it (corrupt_data; at most 255).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt_value: Option<u64>,
    /// Only hit I/Os while this many are outstanding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
    /// NVMe status code type; accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvme_sct: Option<u32>,
    /// NVMe status code; accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvme_sc: Option<u32>,
}

/// Params of `bdev_error_set_crash_mode`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetCrashModeParams {
    /// The error bdev.
    pub name: String,
    /// `none`, `drop_writes_after` or `volatile_cache`.
    pub mode: String,
    /// Writes to let through (drop_writes_after only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// Params of `bdev_delay_create`; latencies in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayCreateParams {
    /// Name of the new bdev.
    pub name: String,
    /// The bdev to stack on.
    pub base_bdev_name: String,
    /// Average read latency.
    pub avg_read_latency: u64,
    /// 99th-percentile read latency.
    pub p99_read_latency: u64,
    /// Average write latency.
    pub avg_write_latency: u64,
    /// 99th-percentile write latency.
    pub p99_write_latency: u64,
    /// UUID; default a random one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// Params of `bdev_delay_update_latency`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateLatencyParams {
    /// The delay bdev.
    pub delay_bdev_name: String,
    /// `avg_read`, `p99_read`, `avg_write` or `p99_write`.
    pub latency_type: String,
    /// The new latency in microseconds.
    pub latency_us: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::golden::assert_shape;
    use crate::jsonrpc::parse_params;

    #[test]
    fn method_names() {
        let names = [
            BdevMallocCreate::METHOD,
            BdevMallocDelete::METHOD,
            BdevNullCreate::METHOD,
            BdevNullDelete::METHOD,
            BdevAioCreate::METHOD,
            BdevAioDelete::METHOD,
            BdevUringCreate::METHOD,
            BdevUringDelete::METHOD,
            BdevErrorCreate::METHOD,
            BdevErrorDelete::METHOD,
            BdevErrorInjectError::METHOD,
            BdevErrorSetCrashMode::METHOD,
            BdevErrorCrash::METHOD,
            BdevDelayCreate::METHOD,
            BdevDelayDelete::METHOD,
            BdevDelayUpdateLatency::METHOD,
        ];
        assert_eq!(
            names.join(" "),
            "bdev_malloc_create bdev_malloc_delete bdev_null_create bdev_null_delete \
             bdev_aio_create bdev_aio_delete bdev_uring_create bdev_uring_delete \
             bdev_error_create bdev_error_delete bdev_error_inject_error \
             bdev_error_set_crash_mode bdev_error_crash bdev_delay_create bdev_delay_delete \
             bdev_delay_update_latency"
        );
    }

    #[test]
    fn create_params_shapes() {
        assert_shape(
            &MallocCreateParams {
                name: Some("M0".into()),
                block_size: 512,
                num_blocks: 128,
                uuid: Some("u".into()),
                ..Default::default()
            },
            json!({"name": "M0", "block_size": 512, "num_blocks": 128, "uuid": "u"}),
        );
        assert_shape(
            &NullCreateParams {
                name: "N0".into(),
                block_size: 4096,
                num_blocks: 8,
                ..Default::default()
            },
            json!({"name": "N0", "block_size": 4096, "num_blocks": 8}),
        );
        assert_shape(
            &AioCreateParams {
                name: "A0".into(),
                filename: "/f".into(),
                block_size: Some(512),
                readonly: true,
                ..Default::default()
            },
            json!({"name": "A0", "filename": "/f", "block_size": 512, "readonly": true}),
        );
        assert_shape(
            &UringCreateParams {
                name: "U0".into(),
                filename: "/f".into(),
                ..Default::default()
            },
            json!({"name": "U0", "filename": "/f"}),
        );
        assert_shape(
            &ErrorCreateParams {
                base_name: "M0".into(),
                uuid: None,
            },
            json!({"base_name": "M0"}),
        );
        assert_shape(
            &DelayCreateParams {
                name: "D0".into(),
                base_bdev_name: "M0".into(),
                avg_read_latency: 1,
                p99_read_latency: 2,
                avg_write_latency: 3,
                p99_write_latency: 4,
                uuid: None,
            },
            json!({"name": "D0", "base_bdev_name": "M0", "avg_read_latency": 1,
                "p99_read_latency": 2, "avg_write_latency": 3, "p99_write_latency": 4}),
        );
    }

    #[test]
    fn other_params_shapes() {
        assert_shape(&DeleteParams { name: "M0".into() }, json!({"name": "M0"}));
        assert_shape(
            &InjectErrorParams {
                name: "EE_M0".into(),
                io_type: "read".into(),
                error_type: Some("corrupt_data".into()),
                num: Some(2),
                corrupt_offset: Some(3),
                corrupt_value: Some(4),
                queue_depth: Some(5),
                nvme_sct: Some(6),
                nvme_sc: Some(7),
            },
            json!({"name": "EE_M0", "io_type": "read", "error_type": "corrupt_data",
                "num": 2, "corrupt_offset": 3, "corrupt_value": 4, "queue_depth": 5,
                "nvme_sct": 6, "nvme_sc": 7}),
        );
        assert_shape(
            &SetCrashModeParams {
                name: "EE_M0".into(),
                mode: "drop_writes_after".into(),
                count: Some(3),
            },
            json!({"name": "EE_M0", "mode": "drop_writes_after", "count": 3}),
        );
        assert_shape(
            &UpdateLatencyParams {
                delay_bdev_name: "D0".into(),
                latency_type: "avg_read".into(),
                latency_us: 9,
            },
            json!({"delay_bdev_name": "D0", "latency_type": "avg_read", "latency_us": 9}),
        );
    }

    #[test]
    fn spdk_extras_are_accepted_and_unknown_fields_refused() {
        let p: AioCreateParams = parse_params(Some(json!({
            "name": "A0", "filename": "/f", "block_size": 512, "readonly": false,
            "fallocate": false, "uuid": "u", "nowait": false
        })))
        .expect("SPDK's aio params");
        assert!(!p.nowait);
        let e = parse_params::<MallocCreateParams>(Some(json!({
            "block_size": 512, "num_blocks": 8, "colour": "red"
        })))
        .unwrap_err();
        assert!(e.message.contains("unknown field `colour`"), "{e}");
    }
}
