//! `bdev_uring_create` / `bdev_uring_delete`.

use std::sync::Arc;

use plexd_control::api::drivers::{BdevUringCreate, BdevUringDelete, UringCreateParams};
use plexd_control::api::serve;
use plexd_control::{MethodTable, RpcError};
use serde_json::Value;

use super::{UringBdev, PRODUCT_NAME, RING_ENTRIES};
use crate::bdev::{BdevSpec, IoTypeSet};
use crate::drivers::file::open_backing;
use crate::drivers::params::{delete_bdev, parse_uuid};
use crate::Engine;

/// `bdev_uring_create` on raw params; see [`create_bdev`].
pub fn create(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevUringCreate>(Some(p), |p| create_bdev(engine, p))
}

/// Creates a uring bdev on a file or block device; returns its name. Opens the file here, on
/// the calling (control) thread.
pub fn create_bdev(engine: &Engine, p: UringCreateParams) -> Result<String, RpcError> {
    engine.bdevs().check_free(&p.name)?;
    let uuid = parse_uuid(p.uuid.as_deref())?;
    // Fail here, with a useful message, rather than on the first request of each reactor.
    if let Err(e) = io_uring::IoUring::new(RING_ENTRIES) {
        return Err(RpcError::errno(
            e.raw_os_error().unwrap_or(libc::ENOSYS),
            format!(
                "io_uring is not available ({e}): check kernel.io_uring_disabled and the \
                 memlock limit, or use bdev_aio_create"
            ),
        ));
    }
    let opened = open_backing(&p.filename, p.block_size, false)?;
    opened.backing.probe_fallocate();
    let spec = BdevSpec {
        name: p.name.clone(),
        aliases: Vec::new(),
        uuid,
        block_size: opened.block_size,
        num_blocks: opened.num_blocks,
        io_types: IoTypeSet::all(),
    };
    spec.validate()?;
    let direct = opened.backing.direct_align().is_some();
    engine.add_bdev(spec, Box::new(UringBdev::new(opened.backing)))?;
    tracing::info!(
        bdev = %p.name,
        file = %p.filename,
        block_size = opened.block_size,
        num_blocks = opened.num_blocks,
        direct,
        "uring bdev created"
    );
    Ok(p.name)
}

/// Deletes a uring bdev (after its requests finish and the file is flushed).
pub fn delete(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevUringDelete>(Some(p), |p| delete_bdev(engine, p, PRODUCT_NAME))
}

/// Registers the uring methods.
pub fn register(table: &mut MethodTable, engine: &Arc<Engine>) {
    let e = engine.clone();
    table.runtime_typed::<BdevUringCreate, _>(move |p| create_bdev(&e, p));
    let e = engine.clone();
    table.runtime_typed::<BdevUringDelete, _>(move |p| delete_bdev(&e, p, PRODUCT_NAME));
}
