//! `bdev_error_create` / `bdev_error_delete` / `bdev_error_inject_error` (as SPDK), and the
//! crash-simulation methods `bdev_error_set_crash_mode` / `bdev_error_crash` (plexd).

use std::sync::Arc;

use plexd_control::api::drivers::{
    BdevErrorCrash, BdevErrorCreate, BdevErrorDelete, BdevErrorInjectError, BdevErrorSetCrashMode,
    DeleteParams, ErrorCreateParams, InjectErrorParams, SetCrashModeParams,
};
use plexd_control::api::serve;
use plexd_control::{MethodTable, RpcError};
use serde_json::Value;

use super::{Arming, CrashMode, ErrorKind, ErrorState, InjectTarget, PRODUCT_NAME};
use crate::drivers::params::{delete_bdev, parse_uuid};
use crate::Engine;

/// `bdev_error_create {base_name, uuid?}` on raw params; see [`create_bdev`].
pub fn create(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevErrorCreate>(Some(p), |p| create_bdev(engine, p))
}

/// Creates `EE_<base_name>`; returns its name.
pub fn create_bdev(engine: &Engine, p: ErrorCreateParams) -> Result<String, RpcError> {
    let uuid = parse_uuid(p.uuid.as_deref())?;
    let bdev = super::create(engine, &p.base_name, uuid)?;
    Ok(bdev.name().to_string())
}

/// `bdev_error_delete {name}`.
pub fn delete(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevErrorDelete>(Some(p), |p| delete_bdev(engine, p, PRODUCT_NAME))
}

fn lookup(engine: &Engine, name: &str) -> Result<Arc<ErrorState>, RpcError> {
    let bdev = engine.bdevs().get(name)?;
    super::state_of(&bdev).ok_or_else(|| {
        RpcError::errno(
            libc::ENODEV,
            format!("'{name}' is not an error bdev; create one with bdev_error_create"),
        )
    })
}

/// Wakes every reactor, so that channels holding requests notice a clear at once instead of at
/// their next periodic check.
fn wake_reactors(engine: &Engine) {
    for i in 0..engine.reactors().len() {
        engine.reactors().send_msg(i, || {});
    }
}

/// `bdev_error_inject_error {name, io_type, error_type, num?, corrupt_offset?, corrupt_value?,
/// queue_depth?}` on raw params; see [`inject`].
pub fn inject_error(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevErrorInjectError>(Some(p), |p| inject(engine, p))
}

/// Arms (or with `io_type: clear` clears) error injection on an error bdev.
pub fn inject(engine: &Engine, p: InjectErrorParams) -> Result<bool, RpcError> {
    let target = match p.io_type.as_str() {
        "clear" => None,
        other => Some(InjectTarget::parse(other).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "unknown io_type '{other}': use one of {}",
                InjectTarget::NAMES
            ))
        })?),
    };
    let _ = (p.nvme_sct, p.nvme_sc);
    let kind = match p.error_type.as_deref() {
        Some("nvme_failure") => {
            return Err(RpcError::errno(
                libc::ENOTSUP,
                "nvme_failure is not supported: plexd bdevs carry no NVMe status; use failure",
            ))
        }
        Some(s) => Some(ErrorKind::parse(s).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "unknown error_type '{s}': use one of {}",
                ErrorKind::NAMES
            ))
        })?),
        None => None,
    };
    let state = lookup(engine, &p.name)?;
    let Some(target) = target else {
        state.clear();
        wake_reactors(engine);
        return Ok(true);
    };
    let kind = kind.ok_or_else(|| {
        RpcError::invalid_params(format!(
            "error_type is required with io_type '{}': use one of {}",
            p.io_type,
            ErrorKind::NAMES
        ))
    })?;
    let value = match p.corrupt_value {
        None => 0,
        Some(v) => u8::try_from(v).map_err(|_| super::ErrorBdevError::CorruptValue)?,
    };
    let arming = Arming {
        kind,
        num: p.num.unwrap_or(1),
        corrupt_offset: p.corrupt_offset.unwrap_or(0),
        corrupt_value: value,
        queue_depth: p.queue_depth.unwrap_or(0),
    };
    state.inject(target, &arming)?;
    Ok(true)
}

/// `bdev_error_set_crash_mode {name, mode: none|drop_writes_after|volatile_cache, count?}` on
/// raw params; see [`set_mode`].
pub fn set_crash_mode(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevErrorSetCrashMode>(Some(p), |p| set_mode(engine, p))
}

/// Sets the crash-simulation mode of an error bdev.
pub fn set_mode(engine: &Engine, p: SetCrashModeParams) -> Result<bool, RpcError> {
    let mode = CrashMode::parse(&p.mode).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "unknown mode '{}': use one of {}",
            p.mode,
            CrashMode::NAMES
        ))
    })?;
    if p.count.is_some() && mode != CrashMode::DropWritesAfter {
        return Err(super::ErrorBdevError::CountUnused.into());
    }
    let state = lookup(engine, &p.name)?;
    state.set_crash_mode(mode, p.count.unwrap_or(0))?;
    Ok(true)
}

/// `bdev_error_crash {name}` on raw params; see [`crash_cache`].
pub fn crash(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevErrorCrash>(Some(p), |p| crash_cache(engine, p))
}

/// Discards the unflushed contents of an error bdev's volatile cache.
pub fn crash_cache(engine: &Engine, p: DeleteParams) -> Result<bool, RpcError> {
    lookup(engine, &p.name)?.crash();
    Ok(true)
}

/// Registers the error methods.
pub fn register(table: &mut MethodTable, engine: &Arc<Engine>) {
    let e = engine.clone();
    table.runtime_typed::<BdevErrorCreate, _>(move |p| create_bdev(&e, p));
    let e = engine.clone();
    table.runtime_typed::<BdevErrorDelete, _>(move |p| delete_bdev(&e, p, PRODUCT_NAME));
    let e = engine.clone();
    table.runtime_typed::<BdevErrorInjectError, _>(move |p| inject(&e, p));
    let e = engine.clone();
    table.runtime_typed::<BdevErrorSetCrashMode, _>(move |p| set_mode(&e, p));
    let e = engine.clone();
    table.runtime_typed::<BdevErrorCrash, _>(move |p| crash_cache(&e, p));
}
