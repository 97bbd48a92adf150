//! The volume manager as seen from outside: JSON-RPC methods and listings.
//!
//! - [`rpc`]: the `dg_*`, `disk_*`, `volume_*`, `plex_*`, `vm_print`, `task_*` methods.
//! - [`raid`]: SPDK's `bdev_raid_*` methods (raid0, raid1, concat) mapped onto volumes.
//! - [`print`](mod@print): `vxprint -ht`-style listings.

pub mod print;
pub mod raid;
pub mod rpc;
