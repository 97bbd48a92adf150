//! The error of volume-manager operations, with the errno each one maps to over JSON-RPC.
//!
//! Lower layers have their own errors (`model::alloc::AllocError`, `ondisk::disk::DiskError`,
//! `ondisk::configdb::ChooseError`, the bdev layer's `BdevError`); this type wraps them for
//! the manager and the API, so it sits just above the on-disk layer.

use crate::bdev::BdevError;
use crate::volume::model::alloc::AllocError;
use crate::volume::ondisk::configdb::ChooseError;
use crate::volume::ondisk::disk::{DiskError, LogAreaError};

/// Errors of volume-manager operations; each maps to an errno for JSON-RPC.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No such object.
    #[error("no {kind} named '{name}'")]
    NotFound {
        /// Object kind (disk group, volume, plex, disk, bdev).
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// The name is taken.
    #[error("{kind} '{name}' already exists")]
    Exists {
        /// Object kind.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A parameter is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The object is in use.
    #[error("{0}")]
    Busy(String),
    /// Not enough disks or space.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// A private-region operation failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The bdev layer refused.
    #[error(transparent)]
    Bdev(#[from] BdevError),
    /// No configuration can be imported automatically.
    #[error(transparent)]
    Choose(#[from] ChooseError),
    /// The configuration could not be made durable; nothing changed.
    #[error(
        "the configuration change could not be written to any disk ({0}); nothing was changed"
    )]
    Commit(String),
    /// A disk could not be flushed, so a state that depends on its data was not recorded.
    #[error("cannot flush disk '{bdev}' (the change that needs its data on the media was not recorded): {source}")]
    Flush {
        /// The bdev.
        bdev: String,
        /// Why.
        #[source]
        source: DiskError,
    },
}

impl VolumeError {
    /// The errno returned over JSON-RPC.
    pub fn errno(&self) -> i32 {
        match self {
            VolumeError::NotFound { .. } => libc::ENOENT,
            VolumeError::Exists { .. } => libc::EEXIST,
            VolumeError::Invalid(_) => libc::EINVAL,
            VolumeError::Busy(_) => libc::EBUSY,
            VolumeError::Alloc(_) => libc::ENOSPC,
            VolumeError::Disk(DiskError::Io(_)) => libc::EIO,
            VolumeError::Disk(DiskError::InUse { .. }) => libc::EBUSY,
            VolumeError::Disk(DiskError::Log(e)) if matches!(**e, LogAreaError::Io { .. }) => {
                libc::EIO
            }
            VolumeError::Disk(_) => libc::EINVAL,
            VolumeError::Bdev(e) => e.errno(),
            VolumeError::Choose(_) => libc::EEXIST,
            VolumeError::Commit(_) => libc::EIO,
            VolumeError::Flush { .. } => libc::EIO,
        }
    }
}

impl From<VolumeError> for plexd_control::RpcError {
    fn from(e: VolumeError) -> Self {
        plexd_control::RpcError::errno(e.errno(), e.to_string())
    }
}
