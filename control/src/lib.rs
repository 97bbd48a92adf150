//! plexd's control plane: JSON-RPC 2.0 types, the Unix-socket server that frames and dispatches
//! requests, and the client used by `plexctl` (its own crate, `plexctl/`) and the tests.
//!
//! The server knows nothing about bdevs: it parses a stream of JSON values, enforces limits and
//! hands each call to an [`RpcHandler`]. The daemon (`target/`) supplies the handler, which looks
//! methods up in a [`MethodTable`] filled by the engine (bdev layer, drivers, volume manager) and
//! by the daemon itself (framework, vhost). [`api`] is the contract: each method's params and
//! result as serde types, used by the daemon's handlers and by `plexctl`.

#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod jsonrpc;
pub mod methods;
pub mod server;
pub mod size;

pub use client::{ClientError, RpcClient};
pub use jsonrpc::{ErrorCode, RpcError};
pub use methods::{MethodTable, RpcState};
pub use server::{RpcHandler, RpcServer, ServerLimits};
