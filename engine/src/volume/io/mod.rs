//! The volume's I/O side: what runs on the reactors and the state it shares with copies.
//!
//! Nothing here imports the manager, the copies or the API: the I/O path reports to the
//! control side only through the event channel ([`driver::VolumeEvent`]).
//!
//! - [`driver`]: the volume bdev: its published map, shared state and events.
//! - [`channel`]: the per-reactor I/O path that splits requests over plexes and disks.
//! - [`barrier`]: the copy barrier that keeps copies and guest writes to one chunk apart.
//! - [`drl_port`]: a channel's part of the volume's dirty region log: writes waiting for their
//!   regions' bits, and the page writes and clear passes of the channel holding the log's token.
//! - [`fence`]: copy writes still in flight after their copy was cancelled, and what they hold.
//! - [`raid5`]: the RAID-5 channel, its parity work, the per-stripe lock and the log's slots.

pub mod barrier;
pub mod channel;
pub mod driver;
pub mod drl_port;
pub mod fence;
pub mod raid5;
