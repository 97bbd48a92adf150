//! Tasks as `task_list` and `task_wait` describe them ([`TaskInfo`]).

use plexd_control::api::task::TaskInfo;

use crate::volume::copy::task::{Task, TaskState};

/// The task's description: its progress in blocks and percent (rounded down to a tenth), its
/// rate, ETA and elapsed time (to a tenth of a second); what it copies (`mode`, and for a
/// sparse copy its skipped blocks and regions; once it ended, `result.regions` lists the
/// region ranges it copied).
pub(crate) fn info(task: &Task) -> TaskInfo {
    let p = task.progress_report();
    let (state, error) = match task.state() {
        TaskState::Running => ("running", None),
        TaskState::Done => ("done", None),
        TaskState::Cancelled => ("cancelled", None),
        TaskState::Failed(m) => ("failed", Some(m)),
    };
    let mut result = task.result();
    if state != "running" {
        if let Some(ranges) = task.region_ranges_copied() {
            let ranges: Vec<[u64; 2]> = ranges.iter().map(|&(a, b)| [a, b]).collect();
            // Results are objects (a check's counts); a sparse check gets both.
            if let serde_json::Value::Object(m) =
                result.get_or_insert_with(|| serde_json::json!({}))
            {
                m.insert("regions".into(), serde_json::json!(ranges));
            }
        }
    }
    let percent = if p.total == 0 {
        100.0
    } else {
        (p.done as f64 * 100.0 / p.total as f64 * 10.0).floor() / 10.0
    };
    TaskInfo {
        id: task.id.into(),
        kind: task.kind.into(),
        dg: task.dg.clone().into(),
        volume: task.volume.clone().into(),
        plex: task.plex.clone().into(),
        source: task.source.clone(),
        targets: task.targets.clone(),
        state: state.into(),
        error: error.into(),
        done_blocks: p.done,
        total_blocks: p.total,
        percent: percent.into(),
        rate_blocks_per_sec: (p.rate.round() as u64).into(),
        eta_secs: p.eta_secs.into(),
        elapsed_secs: (p.elapsed_secs * 10.0).round() / 10.0,
        result,
        mode: Some(task.mode().into()),
        why_full: task.why_full().map(str::to_string),
        skipped_blocks: task.todo().map(|_| task.skipped_blocks()),
        regions_total: task.regions_total(),
        regions_copied: task.regions_copied(),
    }
}
