//! The bdev layer's methods: `bdev_get_bdevs` and `bdev_get_iostat` (SPDK's shapes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Lenient, RpcMethod};

method!(
    /// `bdev_get_bdevs`: every bdev, or the one named.
    BdevGetBdevs, "bdev_get_bdevs", GetBdevsParams, Vec<BdevInfo>
);

/// Params of `bdev_get_bdevs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetBdevsParams {
    /// Only this bdev (name or alias).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SPDK's wait for the bdev to appear, in ms; accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// One bdev as `bdev_get_bdevs` describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BdevInfo {
    /// The bdev's name.
    pub name: Lenient<String>,
    /// Other names it answers to.
    pub aliases: Vec<String>,
    /// The driver's product name (`Malloc disk`, `AIO disk`, ...).
    pub product_name: Lenient<String>,
    /// Logical block size in bytes.
    pub block_size: Lenient<u32>,
    /// Size in blocks.
    pub num_blocks: Lenient<u64>,
    /// The bdev's UUID.
    pub uuid: Lenient<String>,
    /// QoS limits (plexd has none: all zero).
    pub assigned_rate_limits: RateLimits,
    /// Whether a module holds a claim on the bdev.
    pub claimed: Lenient<bool>,
    /// The kind of claim, when claimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_type: Option<String>,
    /// Who holds the claim, when claimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// Always false: plexd has no zoned bdevs.
    pub zoned: bool,
    /// Request type name to whether the bdev supports it.
    pub supported_io_types: BTreeMap<String, bool>,
    /// The driver's own description, under the driver's key (`{"aio": {...}}`), or empty.
    pub driver_specific: Map<String, Value>,
}

/// SPDK's QoS limits of a bdev.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimits {
    /// I/Os per second, read and write.
    pub rw_ios_per_sec: u64,
    /// MB/s, read and write.
    pub rw_mbytes_per_sec: u64,
    /// MB/s, read.
    pub r_mbytes_per_sec: u64,
    /// MB/s, write.
    pub w_mbytes_per_sec: u64,
}

method!(
    /// `bdev_get_iostat`: I/O statistics of every bdev, or of those named.
    BdevGetIostat, "bdev_get_iostat", GetIostatParams, Iostat
);

/// Params of `bdev_get_iostat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetIostatParams {
    /// Only this bdev.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only these bdevs (plexd's addition; combined with `name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// SPDK's per-channel breakdown; accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_channel: Option<bool>,
    /// SPDK's reset mode; accepted and ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_mode: Option<String>,
}

/// The `bdev_get_iostat` result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Iostat {
    /// TSC ticks per second (for the latency fields).
    pub tick_rate: Lenient<u64>,
    /// The TSC when the statistics were read.
    pub ticks: u64,
    /// One entry per bdev.
    pub bdevs: Vec<BdevIostat>,
}

/// I/O statistics of one bdev; latencies in TSC ticks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BdevIostat {
    /// The bdev.
    pub name: Lenient<String>,
    /// Bytes read.
    pub bytes_read: Lenient<u64>,
    /// Reads completed.
    pub num_read_ops: Lenient<u64>,
    /// Bytes written.
    pub bytes_written: Lenient<u64>,
    /// Writes completed.
    pub num_write_ops: Lenient<u64>,
    /// Bytes unmapped.
    pub bytes_unmapped: u64,
    /// Unmaps completed.
    pub num_unmap_ops: Lenient<u64>,
    /// Bytes copied (always 0: plexd has no copy requests).
    pub bytes_copied: u64,
    /// Copies completed (always 0).
    pub num_copy_ops: u64,
    /// Total read latency.
    pub read_latency_ticks: Lenient<u64>,
    /// Longest read.
    pub max_read_latency_ticks: u64,
    /// Shortest read.
    pub min_read_latency_ticks: u64,
    /// Total write latency.
    pub write_latency_ticks: Lenient<u64>,
    /// Longest write.
    pub max_write_latency_ticks: u64,
    /// Shortest write.
    pub min_write_latency_ticks: u64,
    /// Total unmap latency.
    pub unmap_latency_ticks: u64,
    /// Total copy latency (always 0).
    pub copy_latency_ticks: u64,
    /// Flushes completed.
    pub num_flush_ops: u64,
    /// Write-zeroes completed.
    pub num_write_zeroes_ops: u64,
    /// Bytes zeroed.
    pub bytes_write_zeroes: u64,
    /// Requests that completed with an error.
    pub io_error: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::golden::assert_shape;

    #[test]
    fn bdev_info_shape() {
        let mut info = BdevInfo {
            name: "EE_M0".into(),
            aliases: vec!["a0".into()],
            product_name: "Error disk".into(),
            block_size: 512.into(),
            num_blocks: 131072.into(),
            uuid: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
            claimed: false.into(),
            supported_io_types: [("read".to_string(), true), ("zcopy".to_string(), false)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        info.driver_specific
            .insert("error_disk".into(), json!({"base_bdev": "M0"}));
        let unclaimed = json!({
            "name": "EE_M0", "aliases": ["a0"], "product_name": "Error disk",
            "block_size": 512, "num_blocks": 131072,
            "uuid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "assigned_rate_limits": {"rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0,
                "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 0},
            "claimed": false, "zoned": false,
            "supported_io_types": {"read": true, "zcopy": false},
            "driver_specific": {"error_disk": {"base_bdev": "M0"}},
        });
        assert_shape(&info, unclaimed.clone());
        info.claimed = true.into();
        info.claim_type = Some("exclusive_write".into());
        info.claimed_by = Some("dg01".into());
        let mut claimed = unclaimed;
        claimed["claimed"] = json!(true);
        claimed["claim_type"] = json!("exclusive_write");
        claimed["claimed_by"] = json!("dg01");
        assert_shape(&info, claimed);
    }

    #[test]
    fn iostat_shape() {
        let stat = BdevIostat {
            name: "M0".into(),
            bytes_read: 1.into(),
            num_read_ops: 2.into(),
            bytes_written: 3.into(),
            num_write_ops: 4.into(),
            bytes_unmapped: 5,
            num_unmap_ops: 6.into(),
            read_latency_ticks: 7.into(),
            max_read_latency_ticks: 8,
            min_read_latency_ticks: 9,
            write_latency_ticks: 10.into(),
            max_write_latency_ticks: 11,
            min_write_latency_ticks: 12,
            unmap_latency_ticks: 13,
            num_flush_ops: 14,
            num_write_zeroes_ops: 15,
            bytes_write_zeroes: 16,
            io_error: 17,
            ..Default::default()
        };
        let reply = Iostat {
            tick_rate: 1000.into(),
            ticks: 99,
            bdevs: vec![stat],
        };
        assert_shape(
            &reply,
            json!({"tick_rate": 1000, "ticks": 99, "bdevs": [{
                "name": "M0", "bytes_read": 1, "num_read_ops": 2, "bytes_written": 3,
                "num_write_ops": 4, "bytes_unmapped": 5, "num_unmap_ops": 6,
                "bytes_copied": 0, "num_copy_ops": 0, "read_latency_ticks": 7,
                "max_read_latency_ticks": 8, "min_read_latency_ticks": 9,
                "write_latency_ticks": 10, "max_write_latency_ticks": 11,
                "min_write_latency_ticks": 12, "unmap_latency_ticks": 13,
                "copy_latency_ticks": 0, "num_flush_ops": 14, "num_write_zeroes_ops": 15,
                "bytes_write_zeroes": 16, "io_error": 17,
            }]}),
        );
    }

    #[test]
    fn params_shapes() {
        assert_shape(
            &GetBdevsParams {
                name: Some("M0".into()),
                timeout: None,
            },
            json!({"name": "M0"}),
        );
        assert_shape(
            &GetIostatParams {
                names: Some(vec!["M0".into(), "M1".into()]),
                ..Default::default()
            },
            json!({"names": ["M0", "M1"]}),
        );
    }
}
