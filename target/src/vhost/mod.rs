//! vhost-user-blk export: plexd serves a bdev to a QEMU guest as a virtio-blk disk.
//!
//! - [`controller`]: a named export with its Unix socket, accept thread and connection.
//! - [`backend`]: the vhost-user protocol of one connection (control thread).
//! - [`vring`]: a virtqueue served by a reactor (the hot path).
//! - [`request`]: parsing requests from descriptor chains, hostile-guest safe.
//! - [`chain`]: walking a descriptor chain from its head, bounded.
//! - [`inflight`]: the INFLIGHT_SHMFD area that lets a restarted plexd resubmit requests.
//! - [`memory`]: the guest memory table.
//! - [`sigbus`]: surviving a front-end that shrinks shared memory under plexd.
//! - [`blk_config`]: the virtio-blk config space and feature bits.
//! - [`rpc`]: `vhost_*` JSON-RPC methods with SPDK's names and shapes.

pub mod backend;
pub mod blk_config;
pub mod chain;
pub mod controller;
pub mod inflight;
pub mod memory;
pub mod request;
pub mod rpc;
pub mod sigbus;
pub mod vring;
