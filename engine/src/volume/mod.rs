//! The volume manager (after Veritas VxVM): VM disks with a private region, disk groups whose
//! configuration database lives on their own disks, subdisks, plexes (concat, stripe), and
//! volumes (1–32 plexes, mirrored when more than one) published as bdevs.
//!
//! - [`ondisk`]: the private-region format (labels, config-copy slots), crc32c everywhere.
//! - [`objects`]: the object model as stored in the config database (disks, subdisks, plexes,
//!   volumes, states).
//! - [`alloc`]: vxassist-style space allocation.
//! - [`layered`]: stripe-mirror volumes, whose columns are mirrored sub-volumes.
//! - [`layout`]: the block mapping of a plex (concat, stripe) onto disks.
//! - [`disk`]: reading and writing a VM disk's private region through the bdev layer.
//! - [`configdb`]: choosing the configuration to import (newest valid copy, split brain).
//! - [`driver`]: the volume bdev: its published map, shared state and events.
//! - [`channel`]: the per-reactor I/O path that splits requests over plexes and disks.
//! - [`manager`]: disk groups and the operations on them; commits before publishing.
//! - [`ops`]: volume and plex operations (create, start, stop, delete, detach).
//! - [`task`]: long-running operations (plex attach, resync) with progress.
//! - [`fence`]: copy writes still in flight after their copy was cancelled, and what they hold.
//! - [`resync`]: crash resync and plex attach, run as tasks.
//! - [`print`](mod@print): `vxprint -ht`-style listings.
//! - [`raid`]: SPDK's `bdev_raid_*` methods (raid0, raid1, concat) mapped onto volumes.
//! - [`repair`]: the read-repair worker and its bounded queue.
//! - [`reshape`]: volume grow and subdisk move.
//! - [`rpc`]: the `dg_*`, `disk_*`, `volume_*`, `plex_*`, `vm_print`, `task_*` methods.

pub mod alloc;
pub mod channel;
pub mod configdb;
pub mod disk;
pub mod driver;
pub mod fence;
pub mod layered;
pub mod layout;
pub mod manager;
pub mod objects;
pub mod ondisk;
pub mod ops;
pub mod print;
pub mod raid;
pub mod repair;
pub mod reshape;
pub mod resync;
pub mod rpc;
pub mod task;

#[cfg(test)]
mod tests;
