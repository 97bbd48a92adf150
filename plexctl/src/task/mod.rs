//! `plexctl task ...`: long-running volume manager operations: the task table, and following
//! one task to its end (`follow`).

pub mod follow;

use std::collections::HashMap;

use clap::Subcommand;
use plexd_control::api::task::{TaskInfo, TaskList, TaskListParams};
use plexd_control::api::volume::VolumeList;
use plexd_control::api::RpcMethod;
use plexd_control::size::format_rate;
use serde::Deserialize;
use serde_json::Value;

use crate::plan::{Output, Plan, Request};
use crate::render::{cell, opt_cell, pretty, rows, MISSING};
use crate::table::Table;

/// `plexctl task ...`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// List running and finished tasks (task_list).
    List,
    /// Wait for a task to finish, showing its progress (task_list, or task_wait with --json).
    ///
    /// Exits 1 if the task failed or was cancelled. The progress bar goes to standard error
    /// when it is a terminal; otherwise a line about every 2 seconds. With --json, prints the
    /// finished task. --timeout limits each call to the daemon, not the wait.
    Wait {
        /// The task's id (from `plex attach`, `subdisk move` or `task list`).
        id: u64,
    },
}

/// `plexctl task ...`.
pub(crate) fn plan(command: &TaskCommand) -> Plan {
    match command {
        TaskCommand::List => Plan::Call(
            Request::typed::<TaskList>(&TaskListParams {}, Output::Tasks)
                .with_lookup(VolumeList::METHOD, None),
        ),
        TaskCommand::Wait { id } => Plan::WaitTask(*id),
    }
}

/// A task of a reply, read leniently: fields it lacks or that have another type show as `-`.
pub(crate) fn task_info(task: &Value) -> TaskInfo {
    TaskInfo::deserialize(task).unwrap_or_default()
}

/// The block size of a task's volume, if `block_sizes` knows it.
fn task_block_size(task: &TaskInfo, block_sizes: &HashMap<(String, String), u64>) -> Option<u64> {
    let key = (task.dg.get()?.clone(), task.volume.get()?.clone());
    block_sizes.get(&key).copied()
}

/// Whether the task is still running.
fn running(task: &TaskInfo) -> bool {
    task.state.get().map(String::as_str) == Some("running")
}

/// `task_list`: one row per task; RATE and ETA only while it runs.
pub(crate) fn tasks(result: &Value, block_sizes: &HashMap<(String, String), u64>) -> String {
    let Some(list) = rows::<TaskInfo>(result, "") else {
        return pretty(result);
    };
    let mut t = Table::new(&[
        "ID", "KIND", "VOLUME", "PLEX", "STATE", "PROGRESS", "RATE", "ETA",
    ])
    .right(&[0, 5, 6, 7]);
    for task in list {
        let (rate, eta) = if running(&task) {
            (
                task_rate(&task, task_block_size(&task, block_sizes)),
                task_eta(&task),
            )
        } else {
            (MISSING.to_string(), MISSING.to_string())
        };
        t.row(vec![
            cell(&task.id),
            cell(&task.kind),
            format!("{}/{}", cell(&task.dg), cell(&task.volume)),
            opt_cell(&task.plex),
            cell(&task.state),
            task_percent(&task),
            rate,
            eta,
        ]);
    }
    t.render()
}

fn task_percent(task: &TaskInfo) -> String {
    task.percent
        .copied()
        .map_or_else(|| MISSING.to_string(), |p| format!("{p:.1}%"))
}

/// The copy rate in bytes per second when the block size is known, else in blocks per second.
fn task_rate(task: &TaskInfo, block_size: Option<u64>) -> String {
    let Some(blocks) = task.rate_blocks_per_sec.copied() else {
        return MISSING.to_string();
    };
    match block_size.and_then(|bs| blocks.checked_mul(bs)) {
        Some(bytes) => format_rate(bytes),
        None => format!("{blocks} blocks/s"),
    }
}

fn task_eta(task: &TaskInfo) -> String {
    eta_secs(task).map_or_else(|| MISSING.to_string(), format_duration)
}

fn eta_secs(task: &TaskInfo) -> Option<u64> {
    task.eta_secs.get().copied().flatten()
}

/// Seconds as `8s`, `2m05s` or `1h02m`.
pub fn format_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Width of the progress bar, in characters between the brackets.
const BAR_WIDTH: usize = 20;

/// One progress line of `task wait`:
/// `task 3 [#########-----------]  45.2%  12.3 MiB/s  ETA 8s`.
pub fn progress_line(task: &Value, block_size: Option<u64>) -> String {
    let task = task_info(task);
    let percent = task.percent.copied().unwrap_or(0.0);
    let filled = ((percent.clamp(0.0, 100.0) / 100.0 * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
    let bar = format!("{}{}", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled));
    let mut line = format!("task {} [{bar}] {:>6}", cell(&task.id), task_percent(&task));
    if running(&task) {
        line.push_str(&format!("  {}", task_rate(&task, block_size)));
        if let Some(eta) = eta_secs(&task) {
            line.push_str(&format!("  ETA {}", format_duration(eta)));
        }
    } else {
        line.push_str(&format!("  {}", cell(&task.state)));
    }
    line
}

/// A task named for messages: `task 3 (plex_attach of dg01/vol01, plex vol01-02)`.
fn task_title(task: &TaskInfo) -> String {
    let mut s = format!(
        "task {} ({} of {}/{}",
        cell(&task.id),
        cell(&task.kind),
        cell(&task.dg),
        cell(&task.volume)
    );
    if let Some(Some(plex)) = task.plex.get() {
        s.push_str(&format!(", plex {plex}"));
    }
    s.push(')');
    s
}

/// How a finished task ended: `Ok(line)` if it is done, `Err(message)` if it failed or was
/// cancelled (or is in a state this plexctl does not know).
pub fn task_outcome(task: &Value) -> Result<String, String> {
    let task = task_info(task);
    let title = task_title(&task);
    match task.state.get().map(String::as_str) {
        Some("done") => Ok(format!("{title}: done\n")),
        Some("failed") => Err(format!("{title} failed: {}", opt_cell(&task.error))),
        Some("cancelled") => Err(format!("{title} was cancelled")),
        _ => Err(format!("{title} ended in state {}", cell(&task.state))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::testing::{check, plan_of};
    use crate::plan::{Lookup, Output, Plan};
    use crate::render::{render, render_with};

    #[test]
    fn print_and_tasks() {
        check("print", "vm_print", None, Output::Text);
        check(
            "print dg01",
            "vm_print",
            Some(json!({"dg": "dg01"})),
            Output::Text,
        );
        match plan_of("task list") {
            Ok(Plan::Call(r)) => {
                assert_eq!(
                    (r.method.as_str(), r.params, r.output, r.lookup),
                    (
                        "task_list",
                        None,
                        Output::Tasks,
                        Some(Lookup {
                            method: "volume_list",
                            params: None
                        })
                    )
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(plan_of("task wait 7"), Ok(Plan::WaitTask(7)));
    }

    #[test]
    fn task_table_and_progress() {
        let running = json!({"id": 4, "kind": "plex_attach", "dg": "dg01", "volume": "vol01",
            "plex": "vol01-04", "state": "running", "error": null, "done_blocks": 7372,
            "total_blocks": 16384, "percent": 45.0, "rate_blocks_per_sec": 25190,
            "eta_secs": 125, "elapsed_secs": 0.3});
        let failed = json!({"id": 2, "kind": "resync", "dg": "dg01", "volume": "vol02",
            "plex": null, "state": "failed", "error": "read failed", "done_blocks": 0,
            "total_blocks": 8, "percent": 0.0, "rate_blocks_per_sec": 0, "eta_secs": null,
            "elapsed_secs": 1.0});
        let reply = json!([failed, running]);
        let volumes = json!([{"dg": "dg01", "name": "vol01", "block_size": 512}]);
        assert_eq!(
            render_with(Output::Tasks, &reply, Some(&volumes)),
            "ID  KIND         VOLUME      PLEX      STATE    PROGRESS        RATE    ETA\n \
              2  resync       dg01/vol02  -         failed       0.0%           -      -\n \
              4  plex_attach  dg01/vol01  vol01-04  running     45.0%  12.3 MiB/s  2m05s\n"
        );
        // Unknown block size: blocks per second.
        assert!(render(Output::Tasks, &reply).contains("25190 blocks/s"));
        assert_eq!(
            progress_line(&running, Some(512)),
            "task 4 [#########-----------]  45.0%  12.3 MiB/s  ETA 2m05s"
        );
        assert_eq!(
            progress_line(&failed, None),
            "task 2 [--------------------]   0.0%  failed"
        );
        assert_eq!(
            task_outcome(&failed),
            Err("task 2 (resync of dg01/vol02) failed: read failed".to_string())
        );
        let mut done = running.clone();
        done["state"] = json!("done");
        assert_eq!(
            task_outcome(&done),
            Ok("task 4 (plex_attach of dg01/vol01, plex vol01-04): done\n".to_string())
        );
        done["state"] = json!("cancelled");
        assert!(task_outcome(&done).unwrap_err().ends_with("was cancelled"));
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(59), "59s");
        assert_eq!(format_duration(60), "1m00s");
        assert_eq!(format_duration(3599), "59m59s");
        assert_eq!(format_duration(3600 * 25 + 120), "25h02m");
    }
}
