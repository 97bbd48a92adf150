//! Background copies (resync, plex attach, subdisk move, read repair): `task_list`,
//! `task_wait`.

use serde::{Deserialize, Serialize};

use super::{Lenient, RpcMethod};

method!(
    /// `task_list`: every task of this run, running or ended.
    TaskList, "task_list", TaskListParams, Vec<TaskInfo>
);

method!(
    /// `task_wait`: wait until a task ends (-ETIMEDOUT if it still runs after the timeout).
    TaskWait, "task_wait", TaskWaitParams, TaskInfo
);

/// The result of a method that starts a copy in the background (`plex_attach`,
/// `subdisk_move`): the task to follow with `task_wait`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskStarted {
    /// The task's id.
    pub task: Lenient<u64>,
}

/// Params of `task_list`: none (any fields sent are ignored, as they always were).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskListParams {}

/// Params of `task_wait`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskWaitParams {
    /// The task.
    pub id: u64,
    /// How long to wait, in ms (default 600000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// One task as `task_list` and `task_wait` describe it; progress in the volume's blocks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskInfo {
    /// The task's id.
    pub id: Lenient<u64>,
    /// `resync`, `plex_attach`, `subdisk_move` or `read_repair`.
    pub kind: Lenient<String>,
    /// The disk group.
    pub dg: Lenient<String>,
    /// The volume.
    pub volume: Lenient<String>,
    /// The plex being written (attach, move), if one.
    pub plex: Lenient<Option<String>>,
    /// The plex being read from, if one.
    pub source: Option<String>,
    /// The plexes being written.
    pub targets: Vec<String>,
    /// `running`, `done`, `cancelled` or `failed`.
    pub state: Lenient<String>,
    /// Why it failed (`null` unless failed).
    pub error: Lenient<Option<String>>,
    /// Blocks copied so far.
    pub done_blocks: u64,
    /// Blocks to copy.
    pub total_blocks: u64,
    /// Progress in percent, rounded down to a tenth.
    pub percent: Lenient<f64>,
    /// Blocks copied per second since the start.
    pub rate_blocks_per_sec: Lenient<u64>,
    /// Seconds left at the current rate (`null` unless running).
    pub eta_secs: Lenient<Option<u64>>,
    /// Seconds since the start (to the end, once it ended).
    pub elapsed_secs: f64,
    /// What the task found, once it ended (a `check`: `mismatch_rows`, `mismatch_ranges` as
    /// `[first, end)` rows, `repaired`; a `drl` or `delta` copy: `regions`, the region ranges
    /// `[first, end)` it copied, at most 1024); absent for tasks that report nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// What a copy copies: `full`, `drl` (the dirty regions after a crash) or `delta` (the
    /// regions a returning plex missed); absent from older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Why a copy is `full` although it could have been limited to some regions, if it could.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why_full: Option<String>,
    /// Blocks a `drl` or `delta` copy passed without copying them (counted in
    /// `done_blocks`, not in the rate); absent for a full copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_blocks: Option<u64>,
    /// Regions a `drl` or `delta` copy has to copy (from where it started on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions_total: Option<u64>,
    /// Regions of those it has copied so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions_copied: Option<u64>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::golden::assert_shape;
    use crate::api::params_value;

    #[test]
    fn params_shapes() {
        assert_eq!(params_value(&TaskListParams {}), None);
        let ignored: TaskListParams = serde_json::from_value(json!({"x": 1})).expect("ignored");
        assert_eq!(ignored, TaskListParams {});
        assert_shape(
            &TaskWaitParams {
                id: 3,
                timeout_ms: Some(5000),
            },
            json!({"id": 3, "timeout_ms": 5000}),
        );
    }

    #[test]
    fn task_started_shape() {
        assert_shape(&TaskStarted { task: 3.into() }, json!({"task": 3}));
    }

    #[test]
    fn task_info_shape() {
        let info = TaskInfo {
            id: 3.into(),
            kind: "plex_attach".into(),
            dg: "dg01".into(),
            volume: "vol01".into(),
            plex: Lenient::Value(Some("vol01-02".into())),
            source: Some("vol01-01".into()),
            targets: vec!["vol01-02".into()],
            state: "running".into(),
            error: Lenient::Value(None),
            done_blocks: 1024,
            total_blocks: 2048,
            percent: 50.0.into(),
            rate_blocks_per_sec: 512.into(),
            eta_secs: Lenient::Value(Some(2)),
            elapsed_secs: 2.0,
            result: None,
            mode: None,
            why_full: None,
            skipped_blocks: None,
            regions_total: None,
            regions_copied: None,
        };
        assert_shape(
            &info,
            json!({"id": 3, "kind": "plex_attach", "dg": "dg01", "volume": "vol01",
                   "plex": "vol01-02", "source": "vol01-01", "targets": ["vol01-02"],
                   "state": "running", "error": null, "done_blocks": 1024,
                   "total_blocks": 2048, "percent": 50.0, "rate_blocks_per_sec": 512,
                   "eta_secs": 2, "elapsed_secs": 2.0}),
        );
        // A check reports what it found.
        let check = TaskInfo {
            kind: "check".into(),
            result: Some(json!({"mismatch_rows": 1, "mismatch_ranges": [[17, 18]],
                                "repaired": false})),
            ..info
        };
        let v = serde_json::to_value(&check).unwrap();
        assert_eq!(v["result"]["mismatch_ranges"], json!([[17, 18]]));
        // A sparse copy says what it skipped; a full one may say why it is full.
        let sparse = TaskInfo {
            kind: "resync".into(),
            result: None,
            mode: Some("drl".into()),
            skipped_blocks: Some(1000),
            regions_total: Some(3),
            regions_copied: Some(1),
            ..check.clone()
        };
        let v = serde_json::to_value(&sparse).unwrap();
        assert_eq!(
            (
                &v["mode"],
                &v["skipped_blocks"],
                &v["regions_total"],
                &v["regions_copied"]
            ),
            (&json!("drl"), &json!(1000), &json!(3), &json!(1))
        );
        assert!(v.get("why_full").is_none(), "{v}");
        let full = TaskInfo {
            mode: Some("full".into()),
            why_full: Some("vol01 has no region log".into()),
            ..check
        };
        let v = serde_json::to_value(&full).unwrap();
        assert_eq!(v["why_full"], json!("vol01 has no region log"));
        assert!(v.get("skipped_blocks").is_none(), "{v}");
        // Older servers send none of these.
        let old: TaskInfo = serde_json::from_value(json!({"id": 1, "kind": "resync"})).unwrap();
        assert_eq!((old.mode, old.regions_copied), (None, None));
    }
}
