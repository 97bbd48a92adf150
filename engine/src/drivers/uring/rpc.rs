//! `uring` RPCs (being written).

use std::sync::Arc;

use plexd_control::MethodTable;

use crate::Engine;

/// Registers the uring methods.
pub fn register(_table: &mut MethodTable, _engine: &Arc<Engine>) {}
