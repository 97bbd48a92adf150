//! Long-running copies between plexes and the read-repair worker.
//!
//! - [`task`]: the task registry (id, progress, rate, ETA) and the copy engine (chunk by chunk
//!   under the barrier).
//! - [`repair`]: the read-repair worker and its bounded queue.
//! - [`raid5`]: RAID-5 row tasks (parity resync, column rebuild, scrub) on the same barrier.
//! - [`sparse`]: the regions a sparse copy copies (a dirty map, a returning plex's missed
//!   regions) and the block arithmetic over them.

pub mod raid5;
pub mod repair;
pub mod sparse;
pub mod task;
