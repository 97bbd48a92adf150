//! `plexctl subdisk ...`: subdisks, the extents of disks that make up plexes (move, a task).

use clap::Subcommand;
use plexd_control::api::plex::{SubdiskMove, SubdiskMoveParams};

use crate::plan::{Output, Plan, Request};

/// `plexctl subdisk ...`
#[derive(Debug, Subcommand)]
pub enum SubdiskCommand {
    /// Move a subdisk of a started volume to free space on another disk (subdisk_move).
    ///
    /// The subdisk's contents are copied in the background by a task while the volume stays
    /// in use; the new subdisk takes the old one's place when the copy is done. Without
    /// --wait this prints the task's id and returns, with it plexctl follows the task as
    /// `task wait` does.
    Move {
        /// The disk group.
        dg: String,
        /// The subdisk (e.g. disk01-01).
        subdisk: String,
        /// Move it to this disk (disk name or bdev); default any disk the volume's other
        /// plexes and columns do not use.
        #[arg(long = "to", value_name = "DISK")]
        to: Option<String>,
        /// Sleep this long between copied chunks (throttle).
        #[arg(long, value_name = "MS")]
        delay_ms: Option<u64>,
        /// Wait for the copy to finish, as `task wait` does.
        #[arg(long)]
        wait: bool,
    },
}

pub(crate) fn plan(command: &SubdiskCommand) -> Plan {
    match command {
        SubdiskCommand::Move {
            dg,
            subdisk,
            to,
            delay_ms,
            wait,
        } => {
            let request = Request::typed::<SubdiskMove>(
                &SubdiskMoveParams {
                    dg: dg.clone(),
                    subdisk: subdisk.clone(),
                    disk: to.clone(),
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
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::plan::testing::{check, plan_of};
    use crate::plan::{Output, Plan};

    #[test]
    fn subdisk_move_starts_a_task() {
        check(
            "subdisk move dg01 disk01-01",
            "subdisk_move",
            Some(json!({"dg": "dg01", "subdisk": "disk01-01"})),
            Output::TaskStarted,
        );
        check(
            "subdisk move dg01 disk01-01 --to disk03 --delay-ms 5",
            "subdisk_move",
            Some(json!({
                "dg": "dg01", "subdisk": "disk01-01", "disk": "disk03", "delay_ms": 5
            })),
            Output::TaskStarted,
        );
        match plan_of("subdisk move dg01 disk01-01 --to M2 --wait") {
            Ok(Plan::StartTask(r)) => {
                assert_eq!(r.method, "subdisk_move");
                assert_eq!(
                    r.params,
                    Some(json!({"dg": "dg01", "subdisk": "disk01-01", "disk": "M2"}))
                );
                assert_eq!(r.output, Output::TaskStarted);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
