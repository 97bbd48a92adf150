//! The volume manager (after Veritas VxVM): VM disks with a private region, disk groups whose
//! configuration database lives on their own disks, subdisks, plexes (concat, stripe), and
//! volumes (1–32 plexes, mirrored when more than one) published as bdevs.
//!
//! The code is in layers, each a folder, and each depends only on the layers below it
//! (`scripts/check-layers.py` checks this; `DESIGN.md` beside this file states the invariants):
//!
//! - [`model`]: the object model, the block mapping of a plex, space allocation. Pure: no I/O.
//! - [`ondisk`]: the private-region format, reading and writing it, choosing the copy to import.
//! - [`io`]: the volume bdev, its published map, the per-reactor I/O path, the copy barrier and
//!   fences. It reports to the control side only through the event channel.
//! - [`copy`]: long-running copies (task registry, the copy engine) and the read-repair queue.
//! - [`error`]: [`VolumeError`], the error of every operation, with its errno.
//! - [`manager`]: disk groups and the operations on them; commits before publishing.
//! - [`api`]: the JSON-RPC methods, SPDK's `bdev_raid_*` mapping and `vxprint`-style listings.

pub mod api;
pub mod copy;
pub mod drl;
pub mod error;
pub mod io;
pub mod manager;
pub mod model;
pub mod ondisk;

pub use error::VolumeError;
pub use manager::VolumeManager;

#[cfg(test)]
mod tests;
