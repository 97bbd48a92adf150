//! `plexctl vhost ...`: vhost-user-blk controllers (export a bdev to a QEMU guest, list,
//! delete, set coalescing).

use clap::Subcommand;
use plexd_control::api::vhost::{
    ControllerInfo, CreateBlkControllerParams, DeleteControllerParams, GetControllersParams,
    SetCoalescingParams, VhostControllerSetCoalescing, VhostCreateBlkController,
    VhostDeleteController, VhostGetControllers,
};
use serde_json::Value;

use crate::plan::{Output, Request};
use crate::render::{cell, pretty, rows, yes_no, MISSING};
use crate::table::Table;

/// `plexctl vhost ...`
#[derive(Debug, Subcommand)]
pub enum VhostCommand {
    /// Export a bdev to QEMU guests (vhost_create_blk_controller).
    ///
    /// plexd listens on the socket DIR/CTRLR, where DIR is `plexd -S DIR` (default /var/tmp).
    /// The socket is created with mode 0600, so QEMU must run as plexd's user. The bdev is
    /// claimed (it cannot be deleted) until the controller is deleted.
    #[command(after_help = "Attach a QEMU guest with:\n  \
        -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \
        (guest RAM: shared, same size as -m)\n  \
        -chardev socket,id=vub0,path=DIR/CTRLR \
        -device vhost-user-blk-pci,chardev=vub0,num-queues=2 (at most 16 queues)")]
    Create {
        /// Name of the new controller; also the socket's file name.
        ctrlr: String,
        /// The bdev to export.
        bdev: String,
        /// Export read-only: the guest sees a write-protected disk.
        #[arg(long)]
        readonly: bool,
        /// Cores whose reactors serve the queues: a hex mask (0x3) or a list ([0,2-3]); each
        /// must run a reactor. Default every reactor.
        #[arg(long, value_name = "MASK")]
        cpumask: Option<String>,
    },
    /// List controllers, or show one (vhost_get_controllers).
    List {
        /// Only this controller.
        ctrlr: Option<String>,
    },
    /// Delete a controller (vhost_delete_controller).
    ///
    /// Removes its socket and releases the bdev. Refused while a guest is connected: shut the
    /// guest down or detach the disk first.
    Delete {
        /// The controller to delete.
        ctrlr: String,
    },
    /// Set interrupt coalescing (vhost_controller_set_coalescing).
    ///
    /// plexd stores the values and reports them (`vhost list --json`); it has no timer-based
    /// coalescing yet. Completions are already batched: at most one interrupt per
    /// queue per reactor iteration.
    Coalescing {
        /// The controller.
        ctrlr: String,
        /// Base delay in microseconds (in SPDK, 0 turns coalescing off).
        #[arg(long, value_name = "US")]
        delay_base_us: u32,
        /// I/O rate (IOPS) above which SPDK coalesces.
        #[arg(long, value_name = "N")]
        iops_threshold: u32,
    },
}

/// `plexctl vhost ...`.
pub(crate) fn plan(command: &VhostCommand) -> Request {
    match command {
        VhostCommand::Create {
            ctrlr,
            bdev,
            readonly,
            cpumask,
        } => Request::typed::<VhostCreateBlkController>(
            &CreateBlkControllerParams {
                ctrlr: ctrlr.clone(),
                dev_name: bdev.clone(),
                readonly: readonly.then_some(true),
                cpumask: cpumask.clone(),
                ..Default::default()
            },
            Output::Silent,
        ),
        VhostCommand::List { ctrlr } => Request::typed::<VhostGetControllers>(
            &GetControllersParams {
                name: ctrlr.clone(),
            },
            Output::VhostControllers,
        ),
        VhostCommand::Delete { ctrlr } => Request::typed::<VhostDeleteController>(
            &DeleteControllerParams {
                ctrlr: ctrlr.clone(),
            },
            Output::Silent,
        ),
        VhostCommand::Coalescing {
            ctrlr,
            delay_base_us,
            iops_threshold,
        } => Request::typed::<VhostControllerSetCoalescing>(
            &SetCoalescingParams {
                ctrlr: ctrlr.clone(),
                delay_base_us: *delay_base_us,
                iops_threshold: *iops_threshold,
            },
            Output::Silent,
        ),
    }
}

/// `vhost_get_controllers`: one row per controller. CONNECTED says whether a front-end (QEMU)
/// is attached, i.e. whether `sessions` is non-empty.
pub(crate) fn vhost_controllers(result: &Value) -> String {
    let Some(list) = rows::<ControllerInfo>(result, "controllers") else {
        return pretty(result);
    };
    let mut t = Table::new(&[
        "CONTROLLER",
        "BDEV",
        "READONLY",
        "CPUMASK",
        "SOCKET",
        "CONNECTED",
    ]);
    for c in list {
        let block = c
            .backend_specific
            .get()
            .and_then(|b| b.block.get())
            .cloned()
            .unwrap_or_default();
        let connected = match c.sessions.get() {
            Some(s) if s.is_empty() => "no".to_string(),
            Some(_) => "yes".to_string(),
            None => MISSING.to_string(),
        };
        t.row(vec![
            cell(&c.ctrlr),
            cell(&block.bdev),
            yes_no(&block.readonly),
            cell(&c.cpumask),
            cell(&c.socket),
            connected,
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::plan::testing::check;
    use crate::plan::Output;
    use crate::render::render;

    #[test]
    fn vhost_create() {
        check(
            "vhost create vhost.0 Malloc0",
            "vhost_create_blk_controller",
            Some(json!({"ctrlr": "vhost.0", "dev_name": "Malloc0"})),
            Output::Silent,
        );
        check(
            "vhost create vhost.1 M0 --readonly --cpumask 0x3",
            "vhost_create_blk_controller",
            Some(json!({
                "ctrlr": "vhost.1", "dev_name": "M0", "readonly": true, "cpumask": "0x3"
            })),
            Output::Silent,
        );
        // A list mask is passed through as given; the daemon parses it like `plexd -m`.
        check(
            "vhost create v M0 --cpumask [0,2-3]",
            "vhost_create_blk_controller",
            Some(json!({"ctrlr": "v", "dev_name": "M0", "cpumask": "[0,2-3]"})),
            Output::Silent,
        );
    }

    #[test]
    fn vhost_list_delete_and_coalescing() {
        check(
            "vhost list",
            "vhost_get_controllers",
            None,
            Output::VhostControllers,
        );
        check(
            "vhost list vhost.0",
            "vhost_get_controllers",
            Some(json!({"name": "vhost.0"})),
            Output::VhostControllers,
        );
        check(
            "vhost delete vhost.0",
            "vhost_delete_controller",
            Some(json!({"ctrlr": "vhost.0"})),
            Output::Silent,
        );
        check(
            "vhost coalescing vhost.0 --delay-base-us 50 --iops-threshold 60000",
            "vhost_controller_set_coalescing",
            Some(json!({"ctrlr": "vhost.0", "delay_base_us": 50, "iops_threshold": 60000})),
            Output::Silent,
        );
    }

    #[test]
    fn vhost_controller_table() {
        let reply = json!([
            {"ctrlr": "vhost.0", "cpumask": "0x3", "delay_base_us": 0, "iops_threshold": 60000,
             "socket": "/var/tmp/vhost.0",
             "sessions": [{"vid": 0, "id": 0, "name": "vhost.0s0", "started": true}],
             "backend_specific": {"block": {"readonly": false, "bdev": "Malloc0"}}},
            {"ctrlr": "ro", "cpumask": "0x1", "socket": "/run/plexd/ro", "sessions": [],
             "backend_specific": {"block": {"readonly": true, "bdev": "U0"}}}
        ]);
        assert_eq!(
            render(Output::VhostControllers, &reply),
            "CONTROLLER  BDEV     READONLY  CPUMASK  SOCKET            CONNECTED\n\
             vhost.0     Malloc0  no        0x3      /var/tmp/vhost.0  yes\n\
             ro          U0       yes       0x1      /run/plexd/ro     no\n"
        );
        assert_eq!(
            render(Output::VhostControllers, &json!([])),
            "CONTROLLER  BDEV  READONLY  CPUMASK  SOCKET  CONNECTED\n"
        );
        // A reply without the block part or sessions still renders, with `-`.
        let out = render(Output::VhostControllers, &json!([{"ctrlr": "x"}]));
        let row: Vec<&str> = out
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(row, vec!["x", "-", "-", "-", "-", "-"], "{out}");
    }
}
