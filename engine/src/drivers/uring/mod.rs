//! `uring` driver (being written).

pub mod rpc;
