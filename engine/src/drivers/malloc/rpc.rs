//! `bdev_malloc_create` / `bdev_malloc_delete`.

use std::sync::Arc;

use plexd_control::api::drivers::{BdevMallocCreate, BdevMallocDelete, MallocCreateParams};
use plexd_control::api::serve;
use plexd_control::{MethodTable, RpcError};
use serde_json::Value;

use super::MallocBdev;
use crate::bdev::{validate_block_size, BdevSpec, IoTypeSet};
use crate::drivers::params::{default_name, delete_bdev, parse_uuid, reject_metadata};
use crate::Engine;

/// Memory plexd will agree to give one RAM bdev.
const MAX_BYTES: u64 = 1 << 40;

/// `bdev_malloc_create` on raw params; see [`create_bdev`].
pub fn create(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevMallocCreate>(Some(p), |p| create_bdev(engine, p))
}

/// Creates a malloc bdev; returns its name.
pub fn create_bdev(engine: &Engine, p: MallocCreateParams) -> Result<String, RpcError> {
    let _ = (
        p.physical_block_size,
        p.optimal_io_boundary,
        p.md_interleave,
        p.dif_is_head_of_md,
        p.dif_pi_format,
        p.numa_id,
    );
    reject_metadata(p.md_size, p.dif_type)?;
    validate_block_size(p.block_size)?;
    let bytes = p
        .num_blocks
        .checked_mul(p.block_size as u64)
        .filter(|b| *b <= MAX_BYTES)
        .ok_or_else(|| {
            RpcError::errno(libc::EINVAL, "malloc bdev size is too large (limit 1 TiB)")
        })?;
    let name = p.name.unwrap_or_else(|| default_name(engine, "Malloc"));
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
    let driver = MallocBdev::new(bytes)?;
    engine.add_bdev(spec, Box::new(driver))?;
    Ok(name)
}

/// Registers the malloc methods.
pub fn register(table: &mut MethodTable, engine: &Arc<Engine>) {
    let e = engine.clone();
    table.runtime_typed::<BdevMallocCreate, _>(move |p| create_bdev(&e, p));
    let e = engine.clone();
    table.runtime_typed::<BdevMallocDelete, _>(move |p| delete_bdev(&e, p, "Malloc disk"));
}
