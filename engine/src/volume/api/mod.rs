//! The volume manager as seen from outside: JSON-RPC methods and listings.
//!
//! - [`rpc`]: the `dg_*`, `disk_*`, `volume_*`, `plex_*`, `vm_print`, `task_*` methods.
//! - [`raid`]: SPDK's `bdev_raid_*` methods (raid0, raid1, concat) mapped onto volumes.
//! - [`print`](mod@print): the listings (`dg_list`, `disk_list`, `volume_list`) and
//!   `vxprint -ht`-style text.
//! - [`task`]: tasks as `task_list` describes them.
//!
//! Params and results are the `plexd_control::api` types; the conversion from the engine's
//! records to them happens here, so no lower layer knows the wire format.

pub mod print;
pub mod raid;
pub mod rpc;
pub mod task;
