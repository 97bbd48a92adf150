//! Dirty-region logging (DRL, issue 13; being built): which regions of a volume may differ
//! between its plexes, kept on disk so that recovery copies only those.
//!
//! A volume with DRL has two bitmaps of its regions (a region is a fixed number of volume
//! blocks): **D**, the regions written since they were last known equal on every plex (crash
//! recovery copies only D), and **M**, the regions some detached or stale plex missed (a
//! returning plex copies only M ∪ D). Each map has two copies, each in one disk's log area of
//! the private region. The rules the write path and recovery keep are in `../DESIGN.md`
//! ("The dirty-region log"); the bytes are in `docs/on-disk-format.md` ("Dirty region log").
//!
//! This layer sits between `ondisk` and `io`: the I/O path uses it, it knows nothing of the
//! I/O path, copies or the manager. Its parts:
//!
//! - [`format`](mod@format): the on-disk header and bitmap pages: encoding, checking, and
//!   merging the copies of a page into what recovery must assume. Pure: no I/O.
//! - [`regions`](mod@regions): the region state every reactor of a volume shares (`Drl`):
//!   the marks a write takes before it is issued (one atomic when its region is already
//!   durable), the group commit of bitmap pages by whoever holds the volume's token, the
//!   lazy clear of quiet regions, and the tracking of what a missing plex missed. No I/O.
//! - [`store`](mod@store): a map in the disks' log areas, from the manager thread: make a
//!   copy, read and merge the copies (what recovery must assume), write pages, zero D.
//!
//! The write path's side (waiting writes, the page writes of a batch, the clear pass from a
//! timed poller) is `io/drl_port.rs`, in the layer above, since it issues I/O.

pub mod format;
pub mod regions;
pub mod store;
