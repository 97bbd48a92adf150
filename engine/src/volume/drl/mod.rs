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
//! - [`store`](mod@store): a map in the log areas: make, read and merge, write pages (manager).
//!
//! Still to come: the in-memory region marks a write takes before it is issued and the group
//! commit of bitmap pages, and reading and writing a map in the log area.

pub mod format;
pub mod store;
