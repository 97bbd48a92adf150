//! The object model of a disk group and the pure computations on it: no I/O, no bdev, no other
//! volume layer.
//!
//! - [`objects`]: the objects as stored in the configuration database (disks, subdisks, plexes,
//!   volumes, states).
//! - [`layout`]: the block mapping of a plex (concat, stripe) onto disks.
//! - [`raid5`]: the block mapping of a RAID-5 plex (parity rotation, write plans).
//! - [`raid5_log`]: the RAID-5 log's entry format and layout.
//! - [`alloc`]: vxassist-style space allocation.
//! - [`region_set`]: sets of dirty-region-log regions and their block ranges.
//! - [`drl_space`]: dirty-region-log region sizes and where the map copies go.

pub mod alloc;
pub mod drl_space;
pub mod layout;
pub mod objects;
pub mod raid5;
pub mod raid5_log;
pub mod region_set;
