//! Bdev drivers, one module each, with their RPC handlers in a `rpc.rs` beside them
//! (SPDK's `module/bdev/*`).

pub mod aio;
pub mod delay;
pub mod error;
pub(crate) mod file;
pub mod malloc;
pub mod null;
pub(crate) mod params;
pub mod uring;

use std::sync::Arc;

use plexd_control::MethodTable;

use crate::Engine;

/// Registers every driver's RPC methods.
pub fn register_rpcs(table: &mut MethodTable, engine: &Arc<Engine>) {
    aio::rpc::register(table, engine);
    delay::rpc::register(table, engine);
    error::rpc::register(table, engine);
    malloc::rpc::register(table, engine);
    null::rpc::register(table, engine);
    uring::rpc::register(table, engine);
}
