//! The plexd daemon as a library: the framework (start-up/runtime state, framework RPCs),
//! SPDK config loading, shutdown signals, and the vhost-user-blk export. `main.rs` wires them
//! to the command line; tests and fuzz targets use the pieces directly.

#![warn(missing_docs)]

pub mod config;
pub mod framework;
pub mod signals;
pub mod vhost;
