//! `bdev_null_create` / `bdev_null_delete`.

use std::sync::Arc;

use plexd_control::jsonrpc::parse_params;
use plexd_control::{MethodTable, RpcError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::NullBdev;
use crate::bdev::{validate_block_size, BdevSpec, IoTypeSet};
use crate::drivers::params::{parse_uuid, reject_metadata};
use crate::Engine;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    name: String,
    block_size: u32,
    num_blocks: u64,
    uuid: Option<String>,
    physical_block_size: Option<u32>,
    optimal_io_boundary: Option<u32>,
    md_size: Option<u32>,
    md_interleave: Option<bool>,
    dif_type: Option<u32>,
    dif_is_head_of_md: Option<bool>,
    dif_pi_format: Option<u32>,
    preferred_write_alignment: Option<u32>,
    preferred_write_granularity: Option<u32>,
    optimal_write_size: Option<u32>,
    preferred_unmap_alignment: Option<u32>,
    preferred_unmap_granularity: Option<u32>,
}

/// Largest null bdev (it uses no memory; the limit keeps byte offsets in range).
const MAX_BYTES: u64 = 1 << 60;

/// Creates a null bdev; returns its name.
pub fn create(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    let p: Create = parse_params(Some(p))?;
    let _ = (
        p.physical_block_size,
        p.optimal_io_boundary,
        p.md_interleave,
        p.dif_is_head_of_md,
        p.dif_pi_format,
        p.preferred_write_alignment,
        p.preferred_write_granularity,
        p.optimal_write_size,
        p.preferred_unmap_alignment,
        p.preferred_unmap_granularity,
    );
    reject_metadata(p.md_size, p.dif_type)?;
    validate_block_size(p.block_size)?;
    let bytes = p
        .num_blocks
        .checked_mul(p.block_size as u64)
        .filter(|b| *b <= MAX_BYTES)
        .ok_or_else(|| {
            RpcError::errno(libc::EINVAL, "null bdev size is too large (limit 1 EiB)")
        })?;
    let name = p.name;
    engine.bdevs().check_free(&name)?;
    let spec = BdevSpec {
        name: name.clone(),
        aliases: Vec::new(),
        uuid: parse_uuid(p.uuid.as_deref())?,
        block_size: p.block_size,
        num_blocks: p.num_blocks,
        io_types: IoTypeSet::all(),
    };
    spec.validate()?;
    let _ = bytes;
    engine.add_bdev(spec, Box::new(NullBdev))?;
    Ok(json!(name))
}

/// Registers the null methods.
pub fn register(table: &mut MethodTable, engine: &Arc<Engine>) {
    let e = engine.clone();
    table.runtime("bdev_null_create", move |p| {
        create(&e, p.unwrap_or(Value::Null))
    });
    let e = engine.clone();
    table.runtime("bdev_null_delete", move |p| {
        crate::drivers::params::delete_bdev(&e, p, "Null disk")
    });
}
