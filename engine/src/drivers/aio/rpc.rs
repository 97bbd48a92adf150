//! `aio` RPCs (being written).

use std::sync::Arc;

use plexd_control::MethodTable;

use crate::Engine;

/// Registers the aio methods.
pub fn register(_table: &mut MethodTable, _engine: &Arc<Engine>) {}
