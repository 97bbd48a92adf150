//! plexd's engine: per-core polling reactors, the block-device (bdev) layer, and the bdev
//! drivers (malloc, null, aio, uring, error, delay).
//!
//! - [`reactor`]: one pinned thread per core; message queues, pollers, idle sleeping.
//! - [`bdev`]: bdevs, claims, per-reactor I/O channels, pooled requests, statistics, and the
//!   bdev-layer RPCs.
//! - [`drivers`]: one module per driver, each with its RPC handlers beside it.
//! - [`Engine`]: the reactors and the bdevs together, with orderly creation/deletion/shutdown.

#![warn(missing_docs)]

pub mod bdev;
pub mod drivers;
mod engine;
pub mod reactor;
pub mod volume;

pub use engine::Engine;

/// Registers every engine RPC (bdev layer and drivers) in `table`.
pub fn register_rpcs(table: &mut plexd_control::MethodTable, engine: &std::sync::Arc<Engine>) {
    bdev::rpc::register(table, engine);
    drivers::register_rpcs(table, engine);
}
