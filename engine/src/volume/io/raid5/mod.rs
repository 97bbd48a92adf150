//! RAID-5 (striping with rotating parity) in the volume's I/O path: a RAID-5 volume's requests
//! go through [`channel`] instead of the mirror path of [`super::channel`].
//!
//! - [`channel`]: the per-reactor I/O path: reads straight from the data columns (a missing
//!   column reconstructed), writes one stripe operation per row (full-stripe,
//!   reconstruct-write, read-modify-write, degraded), column failures reported and held until
//!   recorded.
//! - [`compute`]: the byte work of a stripe operation on its row buffer (parity of a write,
//!   reconstruction of a missing unit).
//! - [`log_ring`]: the RAID-5 log's slots shared by the reactors (which entry goes where,
//!   when a slot may be reused).
//! - [`parity`]: XOR kernels (parity, reconstruction, the scrub's check).
//! - [`stripe_lock`]: the per-stripe lock shared by every reactor of a volume, which orders
//!   requests to one stripe without ever blocking a reactor.

pub mod channel;
pub mod compute;
pub mod log_ring;
pub mod parity;
pub mod stripe_lock;
