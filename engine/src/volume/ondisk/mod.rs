//! What a VM disk holds in its private region and how it is read, written and chosen from.
//!
//! - [`format`](mod@format): the private-region format (labels, config-copy slots), crc32c everywhere.
//! - [`disk`]: reading and writing a VM disk's private region through the bdev layer.
//! - [`configdb`]: choosing the configuration to import (newest valid copy, split brain).

pub mod configdb;
pub mod disk;
pub mod format;
