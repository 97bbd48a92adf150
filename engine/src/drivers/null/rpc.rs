//! `bdev_null_create` / `bdev_null_delete`.

use std::sync::Arc;

use plexd_control::api::drivers::{BdevNullCreate, BdevNullDelete, NullCreateParams};
use plexd_control::api::serve;
use plexd_control::{MethodTable, RpcError};
use serde_json::Value;

use super::NullBdev;
use crate::bdev::{validate_block_size, BdevSpec, IoTypeSet};
use crate::drivers::params::{delete_bdev, parse_uuid, reject_metadata};
use crate::Engine;

/// Largest null bdev (it uses no memory; the limit keeps byte offsets in range).
const MAX_BYTES: u64 = 1 << 60;

/// `bdev_null_create` on raw params; see [`create_bdev`].
pub fn create(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevNullCreate>(Some(p), |p| create_bdev(engine, p))
}

/// Creates a null bdev; returns its name.
pub fn create_bdev(engine: &Engine, p: NullCreateParams) -> Result<String, RpcError> {
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
    Ok(name)
}

/// Registers the null methods.
pub fn register(table: &mut MethodTable, engine: &Arc<Engine>) {
    let e = engine.clone();
    table.runtime_typed::<BdevNullCreate, _>(move |p| create_bdev(&e, p));
    let e = engine.clone();
    table.runtime_typed::<BdevNullDelete, _>(move |p| delete_bdev(&e, p, "Null disk"));
}
