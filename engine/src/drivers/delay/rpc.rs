//! `bdev_delay_create` / `bdev_delay_delete` / `bdev_delay_update_latency` (as SPDK).

use std::sync::Arc;

use plexd_control::jsonrpc::parse_params;
use plexd_control::{MethodTable, RpcError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Latencies, LatencyType, PRODUCT_NAME};
use crate::drivers::params::parse_uuid;
use crate::Engine;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    name: String,
    base_bdev_name: String,
    avg_read_latency: u64,
    p99_read_latency: u64,
    avg_write_latency: u64,
    p99_write_latency: u64,
    uuid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateLatency {
    delay_bdev_name: String,
    latency_type: String,
    latency_us: u64,
}

/// `bdev_delay_create {name, base_bdev_name, avg_read_latency, p99_read_latency,
/// avg_write_latency, p99_write_latency, uuid?}` (µs); returns the name.
pub fn create(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    let p: Create = parse_params(Some(p))?;
    let uuid = parse_uuid(p.uuid.as_deref())?;
    let latencies = Latencies {
        avg_read: p.avg_read_latency,
        p99_read: p.p99_read_latency,
        avg_write: p.avg_write_latency,
        p99_write: p.p99_write_latency,
    };
    let bdev = super::create(engine, &p.name, &p.base_bdev_name, latencies, uuid)?;
    Ok(json!(bdev.name()))
}

/// `bdev_delay_delete {name}`.
pub fn delete(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    crate::drivers::params::delete_bdev(engine, Some(p), PRODUCT_NAME)
}

/// `bdev_delay_update_latency {delay_bdev_name, latency_type, latency_us}`.
pub fn update_latency(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    let p: UpdateLatency = parse_params(Some(p))?;
    let t = LatencyType::parse(&p.latency_type).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "unknown latency_type '{}': use one of {}",
            p.latency_type,
            LatencyType::NAMES
        ))
    })?;
    let bdev = engine.bdevs().get(&p.delay_bdev_name)?;
    let state = super::state_of(&bdev).ok_or_else(|| {
        RpcError::errno(
            libc::EINVAL,
            format!(
                "'{}' is not a delay bdev; create one with bdev_delay_create",
                p.delay_bdev_name
            ),
        )
    })?;
    state.update_latency(t, p.latency_us)?;
    Ok(json!(true))
}

/// Registers the delay methods.
pub fn register(table: &mut MethodTable, engine: &Arc<Engine>) {
    type Handler = fn(&Engine, Value) -> Result<Value, RpcError>;
    let methods: [(&str, Handler); 3] = [
        ("bdev_delay_create", create),
        ("bdev_delay_delete", delete),
        ("bdev_delay_update_latency", update_latency),
    ];
    for (name, f) in methods {
        let e = engine.clone();
        table.runtime(name, move |p| f(&e, p.unwrap_or(Value::Null)));
    }
}
