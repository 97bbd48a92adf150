//! The block-device layer (SPDK's `lib/bdev`): bdevs with names, aliases, uuids and claims;
//! drivers that implement them; per-reactor I/O channels; pooled requests; statistics.
//!
//! The I/O path: a caller on a reactor gets the bdev's [`IoChannel`] for that reactor, takes a
//! [`BdevIo`] from the thread's pool, fills it and submits it. The channel validates it and
//! passes it to the driver's [`DriverChannel`]. The driver completes it (immediately for RAM,
//! from its completion queue for files) with [`BdevIo::complete`], which queues it on the
//! thread's completion queue; the reactor polls that queue and runs the caller's
//! [`IoCompletion`]. Nothing on this path locks or allocates. The pool, the completion queue
//! and the channel cache are the bdev layer's per-thread state (`thread`), which the reactor
//! holds as a plain poller without knowing what it is.

pub mod blocking;
pub mod channel;
pub mod io;
pub mod registry;
pub mod rpc;
pub mod segment;
pub mod stat;
pub(crate) mod thread;

use std::rc::Rc;
use std::sync::{Arc, Mutex};

use serde_json::Value;

pub use channel::IoChannel;
pub use io::{BdevIo, IoBuf, IoCompletion, IoData, IoStatus, IoType, IoTypeSet};
pub use registry::BdevRegistry;
pub use segment::VolatileSegment;
pub use stat::{ChannelStats, IoStatSnapshot};

use crate::reactor::{self, Poller};
use thread::BdevThread;

/// Errors of the bdev layer; each maps to the errno SPDK's RPCs return.
#[derive(Debug, thiserror::Error)]
pub enum BdevError {
    /// No bdev has that name or alias.
    #[error("no bdev named '{0}'")]
    NotFound(String),
    /// A delete method of one driver was used on another driver's bdev.
    #[error("bdev '{name}' is a '{actual}' bdev, not a '{expected}' bdev; delete it with its own driver's delete method")]
    WrongDriver {
        /// The bdev.
        name: String,
        /// Its driver's product name.
        actual: String,
        /// The product name the method deletes.
        expected: String,
    },
    /// The name or alias is taken.
    #[error("a bdev named '{0}' already exists")]
    Exists(String),
    /// A parameter is out of range.
    #[error("{0}")]
    InvalidParam(String),
    /// The bdev is claimed by a module or an export.
    #[error("bdev '{name}' is in use by {owner}; release it first")]
    Busy {
        /// The bdev.
        name: String,
        /// Who claimed it.
        owner: String,
    },
    /// The OS refused a file operation.
    #[error("{what} '{path}': {source}")]
    Io {
        /// What was being done (open, stat, ...).
        what: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The call needs a reactor thread.
    #[error("not on a reactor thread")]
    NotOnReactor,
}

impl BdevError {
    /// The positive errno for RPC errors.
    pub fn errno(&self) -> i32 {
        match self {
            BdevError::NotFound(_) | BdevError::WrongDriver { .. } => libc::ENODEV,
            BdevError::Exists(_) => libc::EEXIST,
            BdevError::InvalidParam(_) => libc::EINVAL,
            BdevError::Busy { .. } => libc::EBUSY,
            BdevError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            BdevError::NotOnReactor => libc::EINVAL,
        }
    }
}

impl From<BdevError> for plexd_control::RpcError {
    fn from(e: BdevError) -> Self {
        plexd_control::RpcError::errno(e.errno(), e.to_string())
    }
}

/// Lets the control path get from a `&dyn BdevDriver` back to the driver's own type
/// (e.g. an RPC that changes an error bdev's injections). Implemented for every type.
pub trait AsAny {
    /// `self` as `Any`, for `downcast_ref`.
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: std::any::Any> AsAny for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A driver's implementation of one bdev (shared by every reactor).
pub trait BdevDriver: AsAny + Send + Sync {
    /// SPDK's `product_name` (e.g. "Malloc disk").
    fn product_name(&self) -> &'static str;

    /// Creates this bdev's queue for the calling reactor.
    fn create_channel(&self, bdev: &Arc<Bdev>) -> Result<Box<dyn DriverChannel>, BdevError>;

    /// `driver_specific` in `bdev_get_bdevs`: a key and an object, e.g. ("aio", {...}).
    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        None
    }

    /// The `{method, params}` that recreates this bdev, for `framework_get_config`.
    fn config(&self, bdev: &Bdev) -> Option<Value>;

    /// Called once when the bdev is deleted or plexd stops, after every channel has gone:
    /// flush and release resources.
    fn shutdown(&self) {}

    /// Names of the bdevs this one is built on (released when it is deleted).
    fn base_bdevs(&self) -> Vec<Arc<Bdev>> {
        Vec::new()
    }
}

/// A driver's per-reactor queue for one bdev.
pub trait DriverChannel {
    /// Takes a request. `Err(io)` means "no room now": the channel keeps it and retries after
    /// the next `poll`. Completion is reported with [`BdevIo::complete`].
    fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo>;

    /// Pushes out queued submissions and reaps completions; returns the work done.
    fn poll(&mut self) -> usize {
        0
    }

    /// An eventfd that fires when completions arrive, for reactors that sleep.
    fn wake_fd(&self) -> Option<i32> {
        None
    }

    /// A tick by which `poll` must run again (timers).
    fn next_deadline(&self) -> Option<u64> {
        None
    }

    /// Whether the reactor must keep polling even though nothing is announced on `wake_fd`.
    fn must_poll(&self) -> bool {
        false
    }
}

/// What a driver fills in to create a bdev.
#[derive(Debug, Clone)]
pub struct BdevSpec {
    /// Unique name.
    pub name: String,
    /// Extra names.
    pub aliases: Vec<String>,
    /// UUID; random if `None`.
    pub uuid: Option<uuid::Uuid>,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Number of blocks.
    pub num_blocks: u64,
    /// Supported request types.
    pub io_types: IoTypeSet,
}

impl BdevSpec {
    /// Checks name, block size and size.
    pub fn validate(&self) -> Result<(), BdevError> {
        if self.name.is_empty()
            || self.name.len() > 255
            || self.name.chars().any(|c| c.is_control())
        {
            return Err(BdevError::InvalidParam(format!(
                "invalid bdev name '{}': use 1-255 printable characters",
                self.name
            )));
        }
        validate_block_size(self.block_size)?;
        if self.num_blocks == 0 {
            return Err(BdevError::InvalidParam(format!(
                "bdev '{}' would have no blocks: num_blocks must be at least 1",
                self.name
            )));
        }
        Ok(())
    }
}

/// Checks that a block size is a multiple of 512 between 512 and 64 KiB (as SPDK requires).
pub fn validate_block_size(bs: u32) -> Result<(), BdevError> {
    if bs < 512 || !bs.is_multiple_of(512) || bs > 65536 {
        return Err(BdevError::InvalidParam(format!(
            "block_size {bs} is invalid: it must be a multiple of 512 between 512 and 65536"
        )));
    }
    Ok(())
}

/// A block device.
pub struct Bdev {
    id: u64,
    spec: BdevSpec,
    uuid: uuid::Uuid,
    driver: Box<dyn BdevDriver>,
    claim: Mutex<Option<String>>,
    stats: Mutex<Vec<Arc<ChannelStats>>>,
    /// The current size (volumes grow).
    num_blocks: std::sync::atomic::AtomicU64,
}

impl Bdev {
    /// Builds a bdev (not yet registered).
    pub fn new(id: u64, spec: BdevSpec, driver: Box<dyn BdevDriver>) -> Bdev {
        let uuid = spec.uuid.unwrap_or_else(uuid::Uuid::new_v4);
        Bdev {
            id,
            num_blocks: std::sync::atomic::AtomicU64::new(spec.num_blocks),
            spec,
            uuid,
            driver,
            claim: Mutex::new(None),
            stats: Mutex::new(Vec::new()),
        }
    }

    /// Process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Aliases.
    pub fn aliases(&self) -> &[String] {
        &self.spec.aliases
    }

    /// UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        self.uuid
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.spec.block_size
    }

    /// Number of blocks.
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Changes the size (a volume that grew). Requests are checked against the new size from
    /// now on; the driver must already serve it.
    pub(crate) fn set_num_blocks(&self, n: u64) {
        self.num_blocks
            .store(n, std::sync::atomic::Ordering::Release);
    }

    /// Supported request types.
    pub fn io_types(&self) -> IoTypeSet {
        self.spec.io_types
    }

    /// The driver.
    pub fn driver(&self) -> &dyn BdevDriver {
        self.driver.as_ref()
    }

    /// Who claimed the bdev, if anyone.
    pub fn claimed_by(&self) -> Option<String> {
        self.claim.lock().ok().and_then(|c| c.clone())
    }

    /// Claims the bdev for `owner` (a module or an export); fails with `Busy` if claimed.
    pub fn claim(&self, owner: &str) -> Result<(), BdevError> {
        let mut c = self
            .claim
            .lock()
            .map_err(|_| BdevError::InvalidParam("claim lock poisoned".into()))?;
        if let Some(o) = c.as_ref() {
            return Err(BdevError::Busy {
                name: self.name().to_string(),
                owner: o.clone(),
            });
        }
        *c = Some(owner.to_string());
        Ok(())
    }

    /// Releases a claim.
    pub fn release_claim(&self) {
        if let Ok(mut c) = self.claim.lock() {
            *c = None;
        }
    }

    /// Statistics summed over every reactor's channel.
    pub fn iostat(&self) -> IoStatSnapshot {
        let mut s = IoStatSnapshot::default();
        if let Ok(list) = self.stats.lock() {
            for c in list.iter() {
                s.add(c);
            }
        }
        s
    }

    /// Clears statistics (new counters for every existing channel is not possible without
    /// the reactors, so the snapshot is kept as an offset instead — see `BdevRegistry`).
    pub fn stats_channels(&self) -> usize {
        self.stats.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// This reactor's channel for the bdev, created on first use and cached until the bdev is
    /// deleted. Call on a reactor thread.
    pub fn get_io_channel(self: &Arc<Self>) -> Result<Rc<IoChannel>, BdevError> {
        let local = BdevThread::current().ok_or(BdevError::NotOnReactor)?;
        if let Some(ch) = local.channel(self.id) {
            return Ok(ch);
        }
        let driver = self.driver.create_channel(self)?;
        let stats = Arc::new(ChannelStats::default());
        if let Ok(mut l) = self.stats.lock() {
            l.push(stats.clone());
        }
        let ch = Rc::new(IoChannel::new(self.clone(), driver, stats));
        let poller: Rc<dyn Poller> = ch.clone();
        reactor::register_poller(&poller);
        local.insert_channel(self.id, ch.clone());
        Ok(ch)
    }
}

impl std::fmt::Debug for Bdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bdev")
            .field("name", &self.spec.name)
            .field("block_size", &self.spec.block_size)
            .field("num_blocks", &self.num_blocks())
            .finish()
    }
}
