//! `delay` driver (being written).

pub mod rpc;
