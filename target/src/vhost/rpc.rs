//! `vhost_create_blk_controller`, `vhost_get_controllers`, `vhost_delete_controller`,
//! `vhost_controller_set_coalescing` (SPDK's names and shapes), and the `vhost_blk`
//! subsystem's saved config.

use std::sync::Arc;

use plexd_control::jsonrpc::parse_params;
use plexd_control::{MethodTable, RpcError};
use plexd_engine::reactor::parse_cpumask;
use serde::Deserialize;
use serde_json::{json, Value};

use super::controller::{Controller, ControllerError, Controllers};

impl From<ControllerError> for RpcError {
    fn from(e: ControllerError) -> Self {
        RpcError::errno(e.errno(), e.to_string())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    ctrlr: String,
    dev_name: String,
    readonly: Option<bool>,
    cpumask: Option<String>,
    packed_ring: Option<bool>,
    packed_ring_recovery: Option<bool>,
    transport: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Get {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delete {
    ctrlr: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Coalescing {
    ctrlr: String,
    delay_base_us: u32,
    iops_threshold: u32,
}

fn controller_json(c: &Controller) -> Value {
    let (delay, iops) = c.coalescing.lock().map(|g| *g).unwrap_or((0, 60000));
    json!({
        "ctrlr": c.name,
        "cpumask": c.cpumask,
        "delay_base_us": delay,
        "iops_threshold": iops,
        "socket": c.socket.display().to_string(),
        "sessions": if c.is_connected() { json!([{"vid": 0, "id": 0, "name": format!("{}s0", c.name), "started": true}]) } else { json!([]) },
        "backend_specific": {
            "block": {"readonly": c.export.readonly, "bdev": c.export.bdev.name()}
        },
    })
}

/// The `{method, params}` entries recreating every controller.
pub fn saved_config(ctrls: &Controllers) -> Vec<Value> {
    let mut out = Vec::new();
    for c in ctrls.list() {
        out.push(json!({"method": "vhost_create_blk_controller", "params": {
            "ctrlr": c.name, "dev_name": c.export.bdev.name(),
            "readonly": c.export.readonly, "cpumask": c.cpumask,
        }}));
        let (delay, iops) = c.coalescing.lock().map(|g| *g).unwrap_or((0, 60000));
        if (delay, iops) != (0, 60000) {
            out.push(
                json!({"method": "vhost_controller_set_coalescing", "params": {
                    "ctrlr": c.name, "delay_base_us": delay, "iops_threshold": iops,
                }}),
            );
        }
    }
    out
}

fn mask_of(cores: &[u32]) -> String {
    let m: u128 = cores.iter().fold(0, |m, c| m | (1u128 << (*c).min(127)));
    format!("0x{m:x}")
}

/// Registers the vhost methods.
pub fn register(t: &mut MethodTable, ctrls: &Arc<Controllers>, reactor_cores: Vec<u32>) {
    let c = ctrls.clone();
    t.runtime("vhost_create_blk_controller", move |p| {
        let p: Create = parse_params(p)?;
        if p.packed_ring.unwrap_or(false) {
            return Err(RpcError::errno(
                libc::ENOTSUP,
                "packed rings are not supported; use split rings (the default)",
            ));
        }
        let _ = (p.packed_ring_recovery, p.transport);
        let (cores, mask) = match p.cpumask.as_deref() {
            Some(m) => {
                let cores =
                    parse_cpumask(m).map_err(|e| RpcError::errno(libc::EINVAL, e.to_string()))?;
                let mask = mask_of(&cores);
                (Some(cores), mask)
            }
            None => (None, mask_of(&reactor_cores)),
        };
        c.create(
            &p.ctrlr,
            &p.dev_name,
            p.readonly.unwrap_or(false),
            cores,
            mask,
        )?;
        Ok(json!(true))
    });
    let c = ctrls.clone();
    t.runtime("vhost_get_controllers", move |p| {
        let p: Get = parse_params(p)?;
        match p.name {
            Some(n) => Ok(json!([controller_json(c.get(&n)?.as_ref())])),
            None => Ok(Value::Array(
                c.list().iter().map(|x| controller_json(x)).collect(),
            )),
        }
    });
    let c = ctrls.clone();
    t.runtime("vhost_delete_controller", move |p| {
        let p: Delete = parse_params(p)?;
        c.delete(&p.ctrlr)?;
        Ok(json!(true))
    });
    let c = ctrls.clone();
    t.runtime("vhost_controller_set_coalescing", move |p| {
        let p: Coalescing = parse_params(p)?;
        let ctrl = c.get(&p.ctrlr)?;
        if let Ok(mut g) = ctrl.coalescing.lock() {
            *g = (p.delay_base_us, p.iops_threshold);
        }
        Ok(json!(true))
    });
}
