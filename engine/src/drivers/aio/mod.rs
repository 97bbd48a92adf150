//! `aio` driver (being written).

pub mod rpc;
