//! `bdev_error_create` / `bdev_error_delete` / `bdev_error_inject_error` (as SPDK), and the
//! crash-simulation methods `bdev_error_set_crash_mode` / `bdev_error_crash` (plexd).

use std::sync::Arc;

use plexd_control::jsonrpc::parse_params;
use plexd_control::{MethodTable, RpcError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Arming, CrashMode, ErrorKind, ErrorState, InjectTarget, PRODUCT_NAME};
use crate::drivers::params::parse_uuid;
use crate::Engine;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    base_name: String,
    uuid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByName {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Inject {
    name: String,
    io_type: String,
    error_type: Option<String>,
    num: Option<u64>,
    corrupt_offset: Option<u64>,
    corrupt_value: Option<u64>,
    queue_depth: Option<u64>,
    nvme_sct: Option<u32>,
    nvme_sc: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetCrashMode {
    name: String,
    mode: String,
    count: Option<u64>,
}

/// `bdev_error_create {base_name, uuid?}`: creates `EE_<base_name>`; returns its name.
pub fn create(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    let p: Create = parse_params(Some(p))?;
    let uuid = parse_uuid(p.uuid.as_deref())?;
    let bdev = super::create(engine, &p.base_name, uuid)?;
    Ok(json!(bdev.name()))
}

/// `bdev_error_delete {name}`.
pub fn delete(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    crate::drivers::params::delete_bdev(engine, Some(p), PRODUCT_NAME)
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
/// queue_depth?}`.
pub fn inject_error(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    let p: Inject = parse_params(Some(p))?;
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
        return Ok(json!(true));
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
    Ok(json!(true))
}

/// `bdev_error_set_crash_mode {name, mode: none|drop_writes_after|volatile_cache, count?}`.
pub fn set_crash_mode(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    let p: SetCrashMode = parse_params(Some(p))?;
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
    Ok(json!(true))
}

/// `bdev_error_crash {name}`: discards the unflushed contents of the volatile cache.
pub fn crash(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    let p: ByName = parse_params(Some(p))?;
    lookup(engine, &p.name)?.crash();
    Ok(json!(true))
}

/// Registers the error methods.
pub fn register(table: &mut MethodTable, engine: &Arc<Engine>) {
    type Handler = fn(&Engine, Value) -> Result<Value, RpcError>;
    let methods: [(&str, Handler); 5] = [
        ("bdev_error_create", create),
        ("bdev_error_delete", delete),
        ("bdev_error_inject_error", inject_error),
        ("bdev_error_set_crash_mode", set_crash_mode),
        ("bdev_error_crash", crash),
    ];
    for (name, f) in methods {
        let e = engine.clone();
        table.runtime(name, move |p| f(&e, p.unwrap_or(Value::Null)));
    }
}
