//! `task wait`, `plex attach --wait` and `subdisk move --wait`: follow a volume manager task
//! until it is no longer running. Without `--json`, plexctl polls `task_list` and draws
//! progress; with it, it calls `task_wait` (in slices, so no single call outlives `--timeout`)
//! and prints the task.

use std::io::Write;
use std::time::{Duration, Instant};

use plexd_control::api::dg::DgListParams;
use plexd_control::api::task::{TaskList, TaskWait, TaskWaitParams};
use plexd_control::api::volume::{VolumeInfo, VolumeList};
use plexd_control::api::{params_value, RpcMethod};
use serde_json::Value;

use crate::config::Rpc;
use crate::render::rows;
use crate::task::{progress_line, task_info};

/// How often `task_list` is polled.
pub const POLL: Duration = Duration::from_millis(250);

/// How often a progress line is written when the output is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// How long one `task_wait` call may block when there is no `--timeout`.
const WAIT_SLICE: Duration = Duration::from_secs(30);

/// Why following a task failed.
#[derive(Debug)]
pub enum WaitError<E> {
    /// A call failed.
    Call(E),
    /// The daemon does not know the task, or answered with something that is not a task list.
    Task(String),
}

/// Where progress goes and how.
pub struct Progress<'a> {
    /// The stream (standard error).
    pub out: &'a mut dyn Write,
    /// Whether it is a terminal: then one line is redrawn in place, else a line every
    /// [`PLAIN_EVERY`].
    pub tty: bool,
    /// Time between polls.
    pub poll: Duration,
    /// Time between plain lines.
    pub plain_every: Duration,
}

/// The block size of the task's volume (for the rate in bytes), if the daemon tells it.
fn block_size<R: Rpc>(rpc: &mut R, task: &Value) -> Option<u64> {
    let task = task_info(task);
    let params = DgListParams {
        dg: Some(task.dg.get()?.clone()),
        name: Some(task.volume.get()?.clone()),
    };
    let reply = rpc.call(VolumeList::METHOD, params_value(&params)).ok()?;
    let volumes = rows::<VolumeInfo>(&reply, "")?;
    volumes.first()?.block_size.copied()
}

/// The task `id` in a `task_list` reply.
fn find_task<E>(list: &Value, id: u64) -> Result<Value, WaitError<E>> {
    let tasks = list
        .as_array()
        .ok_or_else(|| WaitError::Task(format!("task_list returned {list}, not a list")))?;
    tasks
        .iter()
        .find(|t| task_info(t).id.copied() == Some(id))
        .cloned()
        .ok_or_else(|| WaitError::Task(format!("no task {id}")))
}

/// Polls `task_list` until task `id` is no longer running, drawing progress on `progress`;
/// returns the task as last listed.
pub fn follow<R: Rpc>(
    rpc: &mut R,
    id: u64,
    progress: Progress<'_>,
) -> Result<Value, WaitError<R::Error>> {
    let Progress {
        out,
        tty,
        poll,
        plain_every,
    } = progress;
    let mut bs: Option<Option<u64>> = None;
    let mut last_plain: Option<Instant> = None;
    loop {
        let list = rpc.call(TaskList::METHOD, None).map_err(WaitError::Call)?;
        let task = find_task(&list, id)?;
        let block_size = match bs {
            Some(b) => b,
            None => *bs.insert(block_size(rpc, &task)),
        };
        let running = task_info(&task).state.get().map(String::as_str) == Some("running");
        let line = progress_line(&task, block_size);
        // Progress is a courtesy: a closed or full stderr must not stop the wait.
        if tty {
            let _ = write!(out, "\r{line}\x1b[K");
            if !running {
                let _ = writeln!(out);
            }
        } else if !running || last_plain.is_none_or(|t| t.elapsed() >= plain_every) {
            let _ = writeln!(out, "{line}");
            last_plain = Some(Instant::now());
        }
        let _ = out.flush();
        if !running {
            return Ok(task);
        }
        std::thread::sleep(poll);
    }
}

/// How long each `task_wait` call may block: half of the per-reply `timeout` (so the daemon
/// answers before the client gives up), or [`WAIT_SLICE`] without one.
pub fn wait_slice(timeout: Option<Duration>) -> Duration {
    timeout.map_or(WAIT_SLICE, |t| {
        (t / 2).clamp(Duration::from_millis(1), WAIT_SLICE)
    })
}

/// Calls `task_wait` until task `id` is no longer running; a call that ends because the task
/// still runs (`is_timeout`) is repeated. Returns the task.
pub fn wait<R: Rpc>(
    rpc: &mut R,
    id: u64,
    slice: Duration,
    is_timeout: impl Fn(&R::Error) -> bool,
) -> Result<Value, R::Error> {
    let timeout_ms = u64::try_from(slice.as_millis()).unwrap_or(u64::MAX).max(1);
    loop {
        let params = TaskWaitParams {
            id,
            timeout_ms: Some(timeout_ms),
        };
        match rpc.call(TaskWait::METHOD, params_value(&params)) {
            Err(e) if is_timeout(&e) => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use serde_json::json;

    use super::*;

    /// Answers calls from a script of (method, reply) pairs, checking the method names.
    struct Script {
        replies: VecDeque<(&'static str, Result<Value, String>)>,
        calls: Vec<(String, Option<Value>)>,
    }

    impl Script {
        fn new(replies: Vec<(&'static str, Result<Value, String>)>) -> Self {
            Script {
                replies: replies.into(),
                calls: Vec::new(),
            }
        }
    }

    impl Rpc for Script {
        type Error = String;

        fn call(&mut self, method: &str, params: Option<Value>) -> Result<Value, String> {
            self.calls.push((method.to_string(), params));
            let (want, reply) = self
                .replies
                .pop_front()
                .unwrap_or_else(|| panic!("unexpected call {method}"));
            assert_eq!(method, want);
            reply
        }
    }

    fn task(state: &str, percent: f64, eta: Option<u64>) -> Value {
        json!({"id": 3, "kind": "plex_attach", "dg": "dg01", "volume": "vol01",
               "plex": "vol01-02", "state": state, "error": null, "done_blocks": 0,
               "total_blocks": 100, "percent": percent, "rate_blocks_per_sec": 2048,
               "eta_secs": eta, "elapsed_secs": 1.0})
    }

    fn progress(out: &mut Vec<u8>, tty: bool) -> Progress<'_> {
        Progress {
            out,
            tty,
            poll: Duration::ZERO,
            plain_every: Duration::from_secs(3600),
        }
    }

    #[test]
    fn follow_redraws_one_line_on_a_terminal() {
        let mut rpc = Script::new(vec![
            (
                "task_list",
                Ok(json!([{"id": 1}, task("running", 45.2, Some(8))])),
            ),
            ("volume_list", Ok(json!([{"block_size": 512}]))),
            ("task_list", Ok(json!([task("done", 100.0, None)]))),
        ]);
        let mut out = Vec::new();
        let t = follow(&mut rpc, 3, progress(&mut out, true)).expect("follow");
        assert_eq!(t["state"], "done");
        assert_eq!(
            rpc.calls[1].1,
            Some(json!({"dg": "dg01", "name": "vol01"})),
            "block size looked up once, for the task's volume"
        );
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "\rtask 3 [#########-----------]  45.2%  1.0 MiB/s  ETA 8s\x1b[K\
             \rtask 3 [####################] 100.0%  done\x1b[K\n"
        );
    }

    #[test]
    fn follow_writes_plain_lines_elsewhere() {
        let mut rpc = Script::new(vec![
            ("task_list", Ok(json!([task("running", 10.0, Some(90))]))),
            ("volume_list", Err("no such volume".into())),
            ("task_list", Ok(json!([task("running", 20.0, Some(80))]))),
            ("task_list", Ok(json!([task("failed", 25.0, None)]))),
        ]);
        let mut out = Vec::new();
        let t = follow(&mut rpc, 3, progress(&mut out, false)).expect("follow");
        assert_eq!(t["state"], "failed");
        // The second poll falls within `plain_every`, so only the first and last are written;
        // without a block size the rate is in blocks.
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "task 3 [##------------------]  10.0%  2048 blocks/s  ETA 1m30s\n\
             task 3 [#####---------------]  25.0%  failed\n"
        );
    }

    #[test]
    fn follow_reports_an_unknown_task() {
        let mut rpc = Script::new(vec![("task_list", Ok(json!([])))]);
        let mut out = Vec::new();
        match follow(&mut rpc, 7, progress(&mut out, false)) {
            Err(WaitError::Task(m)) => assert_eq!(m, "no task 7"),
            other => panic!("unexpected {other:?}"),
        }
        let mut rpc = Script::new(vec![("task_list", Err("gone".into()))]);
        assert!(matches!(
            follow(&mut rpc, 7, progress(&mut out, false)),
            Err(WaitError::Call(e)) if e == "gone"
        ));
    }

    #[test]
    fn wait_repeats_task_wait_until_the_task_ends() {
        let mut rpc = Script::new(vec![
            ("task_wait", Err("ETIMEDOUT".into())),
            ("task_wait", Ok(task("done", 100.0, None))),
        ]);
        let t = wait(&mut rpc, 3, Duration::from_secs(5), |e| e == "ETIMEDOUT").expect("wait");
        assert_eq!(t["state"], "done");
        assert_eq!(rpc.calls.len(), 2);
        assert_eq!(rpc.calls[0].1, Some(json!({"id": 3, "timeout_ms": 5000})));
        let mut rpc = Script::new(vec![("task_wait", Err("no task 3".into()))]);
        assert_eq!(
            wait(&mut rpc, 3, Duration::from_secs(5), |e| e == "ETIMEDOUT"),
            Err("no task 3".to_string())
        );
    }

    #[test]
    fn wait_slices_fit_in_the_timeout() {
        assert_eq!(wait_slice(None), WAIT_SLICE);
        assert_eq!(
            wait_slice(Some(Duration::from_secs(4))),
            Duration::from_secs(2)
        );
        assert_eq!(wait_slice(Some(Duration::from_secs(3600))), WAIT_SLICE);
        assert_eq!(
            wait_slice(Some(Duration::from_nanos(1))),
            Duration::from_millis(1)
        );
    }
}
