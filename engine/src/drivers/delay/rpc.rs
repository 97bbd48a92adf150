//! `bdev_delay_create` / `bdev_delay_delete` / `bdev_delay_update_latency` (as SPDK).

use std::sync::Arc;

use plexd_control::api::drivers::{
    BdevDelayCreate, BdevDelayDelete, BdevDelayUpdateLatency, DelayCreateParams,
    UpdateLatencyParams,
};
use plexd_control::api::serve;
use plexd_control::{MethodTable, RpcError};
use serde_json::Value;

use super::{Latencies, LatencyType, PRODUCT_NAME};
use crate::drivers::params::{delete_bdev, parse_uuid};
use crate::Engine;

/// `bdev_delay_create {name, base_bdev_name, avg_read_latency, p99_read_latency,
/// avg_write_latency, p99_write_latency, uuid?}` (µs) on raw params; see [`create_bdev`].
pub fn create(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevDelayCreate>(Some(p), |p| create_bdev(engine, p))
}

/// Creates a delay bdev; returns its name.
pub fn create_bdev(engine: &Engine, p: DelayCreateParams) -> Result<String, RpcError> {
    let uuid = parse_uuid(p.uuid.as_deref())?;
    let latencies = Latencies {
        avg_read: p.avg_read_latency,
        p99_read: p.p99_read_latency,
        avg_write: p.avg_write_latency,
        p99_write: p.p99_write_latency,
    };
    let bdev = super::create(engine, &p.name, &p.base_bdev_name, latencies, uuid)?;
    Ok(bdev.name().to_string())
}

/// `bdev_delay_delete {name}`.
pub fn delete(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevDelayDelete>(Some(p), |p| delete_bdev(engine, p, PRODUCT_NAME))
}

/// `bdev_delay_update_latency {delay_bdev_name, latency_type, latency_us}` on raw params; see
/// [`set_latency`].
pub fn update_latency(engine: &Engine, p: Value) -> Result<Value, RpcError> {
    serve::<BdevDelayUpdateLatency>(Some(p), |p| set_latency(engine, p))
}

/// Sets one latency of a delay bdev.
pub fn set_latency(engine: &Engine, p: UpdateLatencyParams) -> Result<bool, RpcError> {
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
    Ok(true)
}

/// Registers the delay methods.
pub fn register(table: &mut MethodTable, engine: &Arc<Engine>) {
    let e = engine.clone();
    table.runtime_typed::<BdevDelayCreate, _>(move |p| create_bdev(&e, p));
    let e = engine.clone();
    table.runtime_typed::<BdevDelayDelete, _>(move |p| delete_bdev(&e, p, PRODUCT_NAME));
    let e = engine.clone();
    table.runtime_typed::<BdevDelayUpdateLatency, _>(move |p| set_latency(&e, p));
}
