//! `error` driver (being written).

pub mod rpc;
