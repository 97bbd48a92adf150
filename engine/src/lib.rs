//! plexd's engine: per-core polling reactors, the block-device (bdev) layer, the bdev
//! drivers (malloc, null, aio, uring, error, delay), and the volume manager that builds
//! mirrored and striped volumes out of bdevs and publishes them as bdevs.
//!
//! - [`reactor`]: one pinned thread per core; message queues, pollers, idle sleeping.
//! - [`bdev`]: bdevs, claims, per-reactor I/O channels, pooled requests, statistics, and the
//!   bdev-layer RPCs.
//! - [`drivers`]: one module per driver, each with its RPC handlers beside it.
//! - [`volume`]: the volume manager (disk groups, volumes, plexes, subdisks, copy tasks, SPDK's
//!   `bdev_raid_*`), in layers described in `volume/DESIGN.md`.
//! - [`Engine`]: the reactors and the bdevs together, with orderly creation/deletion/shutdown.
//! - [`register_rpcs`]: every JSON-RPC method of the above, for a daemon's method table.

#![warn(missing_docs)]

pub mod bdev;
pub mod drivers;
mod engine;
pub mod reactor;
pub mod volume;

pub use engine::Engine;

/// Registers every engine RPC in `table`: the bdev layer's, every driver's, and the volume
/// manager's (disk groups, volumes, tasks, `bdev_raid_*`) served by `volumes`.
pub fn register_rpcs(
    table: &mut plexd_control::MethodTable,
    engine: &std::sync::Arc<Engine>,
    volumes: &std::sync::Arc<volume::VolumeManager>,
) {
    bdev::rpc::register(table, engine);
    drivers::register_rpcs(table, engine);
    volume::api::rpc::register(table, volumes);
}
