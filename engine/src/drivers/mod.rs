//! Bdev drivers, one module each, with their RPC handlers in a `rpc.rs` beside them
//! (SPDK's `module/bdev/*`).

pub mod malloc;
pub mod null;
pub(crate) mod params;

use std::sync::Arc;

use plexd_control::MethodTable;

use crate::Engine;

/// Registers every driver's RPC methods.
pub fn register_rpcs(table: &mut MethodTable, engine: &Arc<Engine>) {
    malloc::rpc::register(table, engine);
    null::rpc::register(table, engine);
}
