//! `vhost_create_blk_controller`, `vhost_get_controllers`, `vhost_delete_controller`,
//! `vhost_controller_set_coalescing` (SPDK's names and shapes), and the `vhost_blk`
//! subsystem's saved config.

use std::sync::Arc;

use plexd_control::api::config_entry;
use plexd_control::api::vhost::{
    BackendSpecific, BlockBackend, ControllerInfo, CreateBlkControllerParams, Session,
    SetCoalescingParams, VhostControllerSetCoalescing, VhostCreateBlkController,
    VhostDeleteController, VhostGetControllers,
};
use plexd_control::{MethodTable, RpcError};
use plexd_engine::reactor::parse_cpumask;
use serde_json::Value;

use super::controller::{Controller, ControllerError, Controllers};

impl From<ControllerError> for RpcError {
    fn from(e: ControllerError) -> Self {
        RpcError::errno(e.errno(), e.to_string())
    }
}

/// The controller's coalescing settings: (delay_base_us, iops_threshold).
fn coalescing(c: &Controller) -> (u32, u32) {
    c.coalescing.lock().map(|g| *g).unwrap_or((0, 60000))
}

fn controller_info(c: &Controller) -> ControllerInfo {
    let (delay_base_us, iops_threshold) = coalescing(c);
    let sessions = if c.is_connected() {
        vec![Session {
            vid: 0,
            id: 0,
            name: format!("{}s0", c.name),
            started: true,
        }]
    } else {
        Vec::new()
    };
    ControllerInfo {
        ctrlr: c.name.as_str().into(),
        cpumask: c.cpumask.as_str().into(),
        delay_base_us,
        iops_threshold,
        socket: c.socket.display().to_string().into(),
        sessions: sessions.into(),
        backend_specific: BackendSpecific {
            block: BlockBackend {
                readonly: c.export.readonly.into(),
                bdev: c.export.bdev.name().into(),
            }
            .into(),
        }
        .into(),
    }
}

/// The `{method, params}` entries recreating every controller.
pub fn saved_config(ctrls: &Controllers) -> Vec<Value> {
    let mut out = Vec::new();
    for c in ctrls.list() {
        out.push(config_entry::<VhostCreateBlkController>(
            &CreateBlkControllerParams {
                ctrlr: c.name.clone(),
                dev_name: c.export.bdev.name().to_string(),
                readonly: Some(c.export.readonly),
                cpumask: Some(c.cpumask.clone()),
                ..Default::default()
            },
        ));
        let (delay_base_us, iops_threshold) = coalescing(&c);
        if (delay_base_us, iops_threshold) != (0, 60000) {
            out.push(config_entry::<VhostControllerSetCoalescing>(
                &SetCoalescingParams {
                    ctrlr: c.name.clone(),
                    delay_base_us,
                    iops_threshold,
                },
            ));
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
    t.runtime_typed::<VhostCreateBlkController, _>(move |p| {
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
        Ok(true)
    });
    let c = ctrls.clone();
    t.runtime_typed::<VhostGetControllers, _>(move |p| match p.name {
        Some(n) => Ok(vec![controller_info(c.get(&n)?.as_ref())]),
        None => Ok(c.list().iter().map(|x| controller_info(x)).collect()),
    });
    let c = ctrls.clone();
    t.runtime_typed::<VhostDeleteController, _>(move |p| {
        c.delete(&p.ctrlr)?;
        Ok(true)
    });
    let c = ctrls.clone();
    t.runtime_typed::<VhostControllerSetCoalescing, _>(move |p| {
        let ctrl = c.get(&p.ctrlr)?;
        if let Ok(mut g) = ctrl.coalescing.lock() {
            *g = (p.delay_base_us, p.iops_threshold);
        }
        Ok(true)
    });
}
