//! Bdev-layer RPCs: `bdev_get_bdevs` and `bdev_get_iostat`.

use std::sync::Arc;

use plexd_control::jsonrpc::parse_params;
use plexd_control::{MethodTable, RpcError};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{Bdev, IoType};
use crate::reactor::tsc;
use crate::Engine;

/// The `bdev_get_bdevs` entry for one bdev, in SPDK's shape.
pub fn bdev_json(b: &Bdev) -> Value {
    let mut io = Map::new();
    for t in IoType::ALL {
        io.insert(t.name().to_string(), Value::Bool(b.io_types().contains(t)));
    }
    for extra in [
        "compare",
        "compare_and_write",
        "abort",
        "nvme_admin",
        "nvme_io",
        "zcopy",
    ] {
        io.insert(extra.to_string(), Value::Bool(false));
    }
    let mut ds = Map::new();
    if let Some((k, v)) = b.driver().driver_specific() {
        ds.insert(k.to_string(), v);
    }
    let claimed_by = b.claimed_by();
    let mut v = json!({
        "name": b.name(),
        "aliases": b.aliases(),
        "product_name": b.driver().product_name(),
        "block_size": b.block_size(),
        "num_blocks": b.num_blocks(),
        "uuid": b.uuid().to_string(),
        "assigned_rate_limits": {
            "rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0,
            "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 0
        },
        "claimed": claimed_by.is_some(),
        "zoned": false,
        "supported_io_types": io,
        "driver_specific": ds,
    });
    if let (Some(owner), Some(obj)) = (claimed_by, v.as_object_mut()) {
        obj.insert("claim_type".into(), json!("exclusive_write"));
        obj.insert("claimed_by".into(), json!(owner));
    }
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBdevs {
    name: Option<String>,
    #[allow(dead_code)]
    timeout: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetIostat {
    name: Option<String>,
    names: Option<Vec<String>>,
    #[allow(dead_code)]
    per_channel: Option<bool>,
    #[allow(dead_code)]
    reset_mode: Option<String>,
}

/// The iostat entry of one bdev.
pub fn iostat_json(b: &Bdev) -> Value {
    let s = b.iostat();
    json!({
        "name": b.name(),
        "bytes_read": s.bytes_read,
        "num_read_ops": s.num_read_ops,
        "bytes_written": s.bytes_written,
        "num_write_ops": s.num_write_ops,
        "bytes_unmapped": s.bytes_unmapped,
        "num_unmap_ops": s.num_unmap_ops,
        "bytes_copied": 0,
        "num_copy_ops": 0,
        "read_latency_ticks": s.read_latency_ticks,
        "max_read_latency_ticks": s.max_read_latency_ticks,
        "min_read_latency_ticks": s.min_read_latency_ticks,
        "write_latency_ticks": s.write_latency_ticks,
        "max_write_latency_ticks": s.max_write_latency_ticks,
        "min_write_latency_ticks": s.min_write_latency_ticks,
        "unmap_latency_ticks": s.unmap_latency_ticks,
        "copy_latency_ticks": 0,
        "num_flush_ops": s.num_flush_ops,
        "num_write_zeroes_ops": s.num_write_zeroes_ops,
        "bytes_write_zeroes": s.bytes_write_zeroes,
        "io_error": s.num_io_errors,
    })
}

/// Registers the bdev-layer methods.
pub fn register(table: &mut MethodTable, engine: &Arc<Engine>) {
    let e = engine.clone();
    table.runtime("bdev_get_bdevs", move |p| {
        let p: GetBdevs = parse_params(p)?;
        match p.name {
            Some(n) => Ok(json!([bdev_json(e.bdevs().get(&n)?.as_ref())])),
            None => Ok(Value::Array(
                e.bdevs().list().iter().map(|b| bdev_json(b)).collect(),
            )),
        }
    });
    let e = engine.clone();
    table.runtime("bdev_get_iostat", move |p| {
        let p: GetIostat = parse_params(p)?;
        let mut wanted: Vec<String> = p.names.unwrap_or_default();
        wanted.extend(p.name);
        let bdevs = if wanted.is_empty() {
            e.bdevs().list()
        } else {
            wanted
                .iter()
                .map(|n| e.bdevs().get(n))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(json!({
            "tick_rate": tsc::tick_rate(),
            "ticks": tsc::ticks(),
            "bdevs": bdevs.iter().map(|b| iostat_json(b)).collect::<Vec<_>>(),
        }))
    });
}

/// Shared helper: `RpcError` for a result of the bdev layer.
pub fn rpc_err(e: super::BdevError) -> RpcError {
    e.into()
}
