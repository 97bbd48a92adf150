//! `bdev_aio_create` / `bdev_aio_delete`.

use std::sync::Arc;

use plexd_control::api::drivers::{AioCreateParams, BdevAioCreate, BdevAioDelete};
use plexd_control::api::serve;
use plexd_control::{MethodTable, RpcError};
use serde_json::Value;

use super::{probe, AioBdev, PRODUCT_NAME};
use crate::bdev::{BdevSpec, IoType, IoTypeSet};
use crate::drivers::file::open_backing;
use crate::drivers::params::{delete_bdev, parse_uuid};
use crate::Engine;

/// The request types an aio bdev supports.
fn io_types(readonly: bool, fallocate: bool) -> IoTypeSet {
    let mut t = IoTypeSet::all();
    if readonly {
        t = t
            .without(IoType::Write)
            .without(IoType::Unmap)
            .without(IoType::WriteZeroes);
    }
    if !fallocate {
        t = t.without(IoType::Unmap).without(IoType::WriteZeroes);
    }
    t
}

/// `bdev_aio_create` on raw params; see [`create_bdev`].
pub fn create(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevAioCreate>(Some(p), |p| create_bdev(engine, p))
}

/// Creates an aio bdev on a file or block device; returns its name. Opens the file here, on
/// the calling (control) thread.
pub fn create_bdev(engine: &Engine, p: AioCreateParams) -> Result<String, RpcError> {
    engine.bdevs().check_free(&p.name)?;
    let uuid = parse_uuid(p.uuid.as_deref())?;
    if p.nowait {
        tracing::warn!(bdev = %p.name, "bdev_aio_create: plexd does not use RWF_NOWAIT; ignoring nowait");
    }
    if let Err(e) = probe() {
        return Err(RpcError::errno(
            e.raw_os_error().unwrap_or(libc::ENOSYS),
            format!("Linux AIO is not available ({e}): check fs.aio-max-nr and fs.aio-nr"),
        ));
    }
    let opened = open_backing(&p.filename, p.block_size, p.readonly)?;
    if p.fallocate {
        opened.backing.probe_fallocate();
    }
    let spec = BdevSpec {
        name: p.name.clone(),
        aliases: Vec::new(),
        uuid,
        block_size: opened.block_size,
        num_blocks: opened.num_blocks,
        io_types: io_types(p.readonly, p.fallocate),
    };
    spec.validate()?;
    let direct = opened.backing.direct_align().is_some();
    let driver = AioBdev::new(
        opened.backing,
        p.readonly,
        p.fallocate,
        opened.block_size_override,
    );
    engine.add_bdev(spec, Box::new(driver))?;
    tracing::info!(
        bdev = %p.name,
        file = %p.filename,
        block_size = opened.block_size,
        num_blocks = opened.num_blocks,
        direct,
        readonly = p.readonly,
        "aio bdev created"
    );
    Ok(p.name)
}

/// Deletes an aio bdev (after its requests finish and the file is flushed).
pub fn delete(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevAioDelete>(Some(p), |p| delete_bdev(engine, p, PRODUCT_NAME))
}

/// Registers the aio methods.
pub fn register(table: &mut MethodTable, engine: &Arc<Engine>) {
    let e = engine.clone();
    table.runtime_typed::<BdevAioCreate, _>(move |p| create_bdev(&e, p));
    let e = engine.clone();
    table.runtime_typed::<BdevAioDelete, _>(move |p| delete_bdev(&e, p, PRODUCT_NAME));
}
