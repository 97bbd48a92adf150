//! `bdev_uring_create` / `bdev_uring_delete`.

use std::sync::Arc;

use plexd_control::jsonrpc::parse_params;
use plexd_control::{MethodTable, RpcError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{UringBdev, PRODUCT_NAME, RING_ENTRIES};
use crate::bdev::{BdevSpec, IoTypeSet};
use crate::drivers::file::open_backing;
use crate::drivers::params::parse_uuid;
use crate::Engine;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    name: String,
    filename: String,
    block_size: Option<u32>,
    uuid: Option<String>,
}

/// Creates a uring bdev on a file or block device; returns its name. Opens the file here, on
/// the calling (control) thread.
pub fn create(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    let p: Create = parse_params(Some(p))?;
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
    Ok(json!(p.name))
}

/// Deletes a uring bdev (after its requests finish and the file is flushed).
pub fn delete(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    crate::drivers::params::delete_bdev(engine, Some(p), PRODUCT_NAME)
}

/// Registers the uring methods.
pub fn register(table: &mut MethodTable, engine: &Arc<Engine>) {
    let e = engine.clone();
    table.runtime("bdev_uring_create", move |p| {
        create(&e, p.unwrap_or(Value::Null))
    });
    let e = engine.clone();
    table.runtime("bdev_uring_delete", move |p| {
        delete(&e, p.unwrap_or(Value::Null))
    });
}
