//! Long-running copies between plexes and the read-repair worker.
//!
//! - [`task`]: the task registry (id, progress, rate, ETA) and the copy engine (chunk by chunk
//!   under the barrier).
//! - [`repair`]: the read-repair worker and its bounded queue.

pub mod repair;
pub mod task;
