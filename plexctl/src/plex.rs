//! `plexctl plex ...`: plexes (mirrors) of volumes: attach (a task) and detach.

use clap::Subcommand;
use plexd_control::api::plex::{PlexAttach, PlexAttachParams, PlexDetach, PlexDetachParams};

use crate::plan::{Output, Plan, Request};

/// `plexctl plex ...`
#[derive(Debug, Subcommand)]
pub enum PlexCommand {
    /// Add a mirror to a started volume, or bring a stale plex back (plex_attach).
    ///
    /// The plex receives writes at once and is filled in the background by a task; without
    /// --wait this prints the task's id and returns, with it plexctl follows the task as
    /// `task wait` does.
    Attach {
        /// The disk group.
        dg: String,
        /// The volume.
        volume: String,
        /// Re-attach this existing (stale, offline or detached) plex instead of a new one.
        #[arg(long, value_name = "PLEX")]
        plex: Option<String>,
        /// Allocate the new plex only on this disk (disk name or bdev; repeatable).
        #[arg(long = "alloc", value_name = "DISK")]
        alloc: Vec<String>,
        /// Sleep this long between copied chunks (throttle).
        #[arg(long, value_name = "MS")]
        delay_ms: Option<u64>,
        /// Wait for the copy to finish, as `task wait` does.
        #[arg(long)]
        wait: bool,
    },
    /// Stop I/O to a plex (state OFFLINE), or remove it from its volume (plex_detach).
    Detach {
        /// The disk group.
        dg: String,
        /// The plex (e.g. vol01-02).
        plex: String,
        /// Also remove the plex from its volume and delete its subdisks.
        #[arg(long)]
        dissociate: bool,
    },
}

pub(crate) fn plan(command: &PlexCommand) -> Plan {
    match command {
        PlexCommand::Attach {
            dg,
            volume,
            plex,
            alloc,
            delay_ms,
            wait,
        } => {
            let request = Request::typed::<PlexAttach>(
                &PlexAttachParams {
                    dg: dg.clone(),
                    volume: volume.clone(),
                    plex: plex.clone(),
                    alloc: (!alloc.is_empty()).then(|| alloc.clone()),
                    delay_ms: *delay_ms,
                },
                Output::TaskStarted,
            );
            if *wait {
                Plan::StartTask(request)
            } else {
                Plan::Call(request)
            }
        }
        PlexCommand::Detach {
            dg,
            plex,
            dissociate,
        } => Plan::Call(Request::typed::<PlexDetach>(
            &PlexDetachParams {
                dg: dg.clone(),
                plex: plex.clone(),
                dissociate: *dissociate,
            },
            Output::Silent,
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::plan::testing::{check, plan_of};
    use crate::plan::{Output, Plan};

    #[test]
    fn plexes() {
        check(
            "plex attach dg01 vol01",
            "plex_attach",
            Some(json!({"dg": "dg01", "volume": "vol01"})),
            Output::TaskStarted,
        );
        check(
            "plex attach dg01 vol01 --plex vol01-02 --alloc disk03 --delay-ms 5",
            "plex_attach",
            Some(json!({
                "dg": "dg01", "volume": "vol01", "plex": "vol01-02", "alloc": ["disk03"],
                "delay_ms": 5
            })),
            Output::TaskStarted,
        );
        match plan_of("plex attach dg01 vol01 --wait") {
            Ok(Plan::StartTask(r)) => {
                assert_eq!(r.method, "plex_attach");
                assert_eq!(r.params, Some(json!({"dg": "dg01", "volume": "vol01"})));
            }
            other => panic!("unexpected {other:?}"),
        }
        check(
            "plex detach dg01 vol01-02",
            "plex_detach",
            Some(json!({"dg": "dg01", "plex": "vol01-02"})),
            Output::Silent,
        );
        check(
            "plex detach dg01 vol01-02 --dissociate",
            "plex_detach",
            Some(json!({"dg": "dg01", "plex": "vol01-02", "dissociate": true})),
            Output::Silent,
        );
    }
}
