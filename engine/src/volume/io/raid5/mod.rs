//! RAID-5 (striping with rotating parity) for the volume's I/O path: the building blocks the
//! per-reactor channel will use for parity plexes.
//!
//! This folder will hold the parity math, the stripe buffers and the per-stripe lock now, and
//! later the left-symmetric layout, the stripe state machine (full-stripe write,
//! reconstruct-write, read-modify-write, degraded reads) and the log-plex writer. Nothing here
//! is wired into [`super::channel`] yet.
//!
//! - [`parity`]: XOR kernels (parity, reconstruction, read-modify-write update) and the pool of
//!   aligned stripe-unit buffers they work on.
//! - [`stripe_lock`]: the per-stripe lock shared by every reactor of a volume, which orders
//!   requests to one stripe without ever blocking a reactor.

pub mod parity;
pub mod stripe_lock;
