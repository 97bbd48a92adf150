//! plexperf's library: benchmark jobs that drive plexd's engine in-process, and the report.
//!
//! [`run_jobs`] starts one [`job::Job`] per spec on its reactor and waits for all of them;
//! [`vhost::run`] drives a vhost-user-blk back-end through its socket instead.

#![warn(missing_docs)]

pub mod alloc_count;
pub mod job;
pub mod plot;
pub mod report;
pub mod vhost;
pub mod workload;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use plexd_engine::reactor::current_core;
use plexd_engine::Engine;

pub use job::{JobResult, JobSpec};
pub use workload::Workload;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A job could not start.
    #[error("{0}")]
    Job(String),
    /// A reactor index is out of range.
    #[error("reactor {0} does not exist")]
    NoReactor(usize),
}

/// Runs `specs` concurrently and returns their results in spec order. `progress` counts
/// completed requests across all jobs while they run.
pub fn run_jobs(
    engine: &Engine,
    specs: &[JobSpec],
    progress: Arc<AtomicU64>,
) -> Result<Vec<JobResult>, RunError> {
    let (tx, rx) = crossbeam::channel::unbounded::<(usize, Result<JobResult, String>)>();
    for (i, spec) in specs.iter().enumerate() {
        let bdev = engine
            .bdevs()
            .get(&spec.bdev)
            .map_err(|e| RunError::Job(e.to_string()))?;
        let spec = spec.clone();
        let tx = tx.clone();
        let progress = progress.clone();
        let reactor = spec.reactor;
        if !engine.reactors().send_msg(reactor, move || {
            let ch = match bdev.get_io_channel() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send((i, Err(e.to_string())));
                    return;
                }
            };
            let core = current_core().unwrap_or(0);
            // The job keeps itself alive through its in-flight requests and sends its
            // result when the last one completes.
            if let Err(e) = job::Job::start(spec, ch, core, progress, i, tx.clone()) {
                let _ = tx.send((i, Err(e.to_string())));
            }
        }) {
            return Err(RunError::NoReactor(reactor));
        }
    }
    drop(tx);
    let mut results: Vec<Option<JobResult>> = vec![None; specs.len()];
    for _ in 0..specs.len() {
        match rx.recv() {
            Ok((i, Ok(r))) => results[i] = Some(r),
            Ok((_, Err(e))) => return Err(RunError::Job(e)),
            Err(_) => return Err(RunError::Job("a job ended without a result".into())),
        }
    }
    Ok(results.into_iter().flatten().collect())
}
