//! Bdev-layer RPCs: `bdev_get_bdevs` and `bdev_get_iostat`.

use std::collections::BTreeMap;
use std::sync::Arc;

use plexd_control::api::bdev::{
    BdevGetBdevs, BdevGetIostat, BdevInfo, BdevIostat, Iostat, RateLimits,
};
use plexd_control::{MethodTable, RpcError};
use serde_json::Map;

use super::{Bdev, IoType};
use crate::reactor::tsc;
use crate::Engine;

/// The `bdev_get_bdevs` entry for one bdev, in SPDK's shape.
pub fn bdev_info(b: &Bdev) -> BdevInfo {
    let mut supported_io_types: BTreeMap<String, bool> = IoType::ALL
        .iter()
        .map(|t| (t.name().to_string(), b.io_types().contains(*t)))
        .collect();
    for extra in [
        "compare",
        "compare_and_write",
        "abort",
        "nvme_admin",
        "nvme_io",
        "zcopy",
    ] {
        supported_io_types.insert(extra.to_string(), false);
    }
    let mut driver_specific = Map::new();
    if let Some((k, v)) = b.driver().driver_specific() {
        driver_specific.insert(k.to_string(), v);
    }
    let claimed_by = b.claimed_by();
    BdevInfo {
        name: b.name().into(),
        aliases: b.aliases().to_vec(),
        product_name: b.driver().product_name().into(),
        block_size: b.block_size().into(),
        num_blocks: b.num_blocks().into(),
        uuid: b.uuid().to_string().into(),
        assigned_rate_limits: RateLimits::default(),
        claimed: claimed_by.is_some().into(),
        claim_type: claimed_by.as_ref().map(|_| "exclusive_write".to_string()),
        claimed_by,
        zoned: false,
        supported_io_types,
        driver_specific,
    }
}

/// The iostat entry of one bdev.
pub fn bdev_iostat(b: &Bdev) -> BdevIostat {
    let s = b.iostat();
    BdevIostat {
        name: b.name().into(),
        bytes_read: s.bytes_read.into(),
        num_read_ops: s.num_read_ops.into(),
        bytes_written: s.bytes_written.into(),
        num_write_ops: s.num_write_ops.into(),
        bytes_unmapped: s.bytes_unmapped,
        num_unmap_ops: s.num_unmap_ops.into(),
        bytes_copied: 0,
        num_copy_ops: 0,
        read_latency_ticks: s.read_latency_ticks.into(),
        max_read_latency_ticks: s.max_read_latency_ticks,
        min_read_latency_ticks: s.min_read_latency_ticks,
        write_latency_ticks: s.write_latency_ticks.into(),
        max_write_latency_ticks: s.max_write_latency_ticks,
        min_write_latency_ticks: s.min_write_latency_ticks,
        unmap_latency_ticks: s.unmap_latency_ticks,
        copy_latency_ticks: 0,
        num_flush_ops: s.num_flush_ops,
        num_write_zeroes_ops: s.num_write_zeroes_ops,
        bytes_write_zeroes: s.bytes_write_zeroes,
        io_error: s.num_io_errors,
    }
}

/// Registers the bdev-layer methods.
pub fn register(table: &mut MethodTable, engine: &Arc<Engine>) {
    let e = engine.clone();
    table.runtime_typed::<BdevGetBdevs, _>(move |p| match p.name {
        Some(n) => Ok(vec![bdev_info(e.bdevs().get(&n)?.as_ref())]),
        None => Ok(e.bdevs().list().iter().map(|b| bdev_info(b)).collect()),
    });
    let e = engine.clone();
    table.runtime_typed::<BdevGetIostat, _>(move |p| {
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
        Ok(Iostat {
            tick_rate: tsc::tick_rate().into(),
            ticks: tsc::ticks(),
            bdevs: bdevs.iter().map(|b| bdev_iostat(b)).collect(),
        })
    });
}

/// Shared helper: `RpcError` for a result of the bdev layer.
pub fn rpc_err(e: super::BdevError) -> RpcError {
    e.into()
}
