//! `error`: an error-injection bdev (SPDK's `bdev_error`) stacked on a base bdev, plus crash
//! simulation for recovery tests (a plexd extension).
//!
//! `bdev_error_create {base_name}` claims the base and creates `EE_<base_name>` with the same
//! geometry. Requests pass through to the base untouched until errors are injected with
//! `bdev_error_inject_error`, which arms the next `num` requests of a type to fail, hang, return
//! corrupt data or be refused for lack of resources (see [`ErrorKind`]). Arming is per bdev and
//! shared by every reactor through atomics; the I/O path takes no lock and allocates nothing.
//!
//! `bdev_error_set_crash_mode` makes writes get lost in the ways a power cut loses them (see
//! [`CrashMode`]), and `bdev_error_crash` pulls the plug on the volatile cache.

mod channel;
mod crash;
mod inject;
pub mod rpc;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde_json::{json, Map, Value};

pub use crash::CrashMode;
pub use inject::{Arming, ErrorKind, InjectTarget, MAX_NUM};

use crate::bdev::{Bdev, BdevDriver, BdevError, BdevSpec, DriverChannel};
use crate::Engine;

/// The error bdev's `product_name` (as SPDK's).
pub const PRODUCT_NAME: &str = "Error Injection Disk";

/// Why an injection or a crash-mode change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ErrorBdevError {
    /// `corrupt_data` was asked for without a usable XOR value.
    #[error("corrupt_data needs a corrupt_value between 1 and 255 (XOR with 0 changes nothing)")]
    CorruptValue,
    /// `num` is larger than the bdev can count.
    #[error("num {0} is too large; use at most {MAX_NUM}")]
    TooMany(u64),
    /// `count` was given for a mode that does not use it.
    #[error("count applies only to drop_writes_after")]
    CountUnused,
    /// Leaving `volatile_cache` would silently drop or resurrect unflushed writes.
    #[error("'{name}' holds {blocks} unflushed blocks in its volatile cache; flush it (or call bdev_error_crash) before leaving volatile_cache mode")]
    DirtyCache {
        /// The error bdev.
        name: String,
        /// Unflushed blocks.
        blocks: usize,
    },
}

impl ErrorBdevError {
    /// The positive errno for RPC errors.
    pub fn errno(&self) -> i32 {
        match self {
            ErrorBdevError::DirtyCache { .. } => libc::EBUSY,
            _ => libc::EINVAL,
        }
    }
}

impl From<ErrorBdevError> for plexd_control::RpcError {
    fn from(e: ErrorBdevError) -> Self {
        plexd_control::RpcError::errno(e.errno(), e.to_string())
    }
}

/// The state of one error bdev shared by its reactors and the control plane.
pub struct ErrorState {
    name: String,
    base: Arc<Bdev>,
    injections: inject::Injections,
    crash: crash::CrashState,
}

impl ErrorState {
    /// The error bdev's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bdev it is stacked on.
    pub fn base(&self) -> &Arc<Bdev> {
        &self.base
    }

    /// Arms the next `a.num` requests of `target` (replacing what was armed there).
    /// [`ErrorKind::CorruptData`] needs a non-zero `corrupt_value`.
    pub fn inject(&self, target: InjectTarget, a: &Arming) -> Result<(), ErrorBdevError> {
        if a.kind == ErrorKind::CorruptData && a.corrupt_value == 0 {
            return Err(ErrorBdevError::CorruptValue);
        }
        if a.num > MAX_NUM {
            return Err(ErrorBdevError::TooMany(a.num));
        }
        self.injections.set(target, a);
        tracing::info!(
            bdev = %self.name,
            ?target,
            error_type = a.kind.name(),
            num = a.num,
            queue_depth = a.queue_depth,
            "error injected"
        );
        Ok(())
    }

    /// Disarms every injection. Held (`pending`) requests fail with ECANCELED the next time
    /// their reactor runs the channel (at once if it is awake; within 10 ms otherwise).
    pub fn clear(&self) {
        self.injections.clear();
        tracing::info!(bdev = %self.name, "injected errors cleared");
    }

    /// Sets the crash mode; `count` is the number of writes `drop_writes_after` lets through.
    pub fn set_crash_mode(&self, mode: CrashMode, count: u64) -> Result<(), ErrorBdevError> {
        self.crash
            .set_mode(mode, count)
            .map_err(|blocks| ErrorBdevError::DirtyCache {
                name: self.name.clone(),
                blocks,
            })?;
        tracing::info!(bdev = %self.name, mode = mode.name(), count, "crash mode set");
        Ok(())
    }

    /// Simulates the power cut: discards every write still in the volatile cache. Returns the
    /// number of blocks lost. (`drop_writes_after` needs nothing more: its writes are lost
    /// already.)
    pub fn crash(&self) -> usize {
        let n = self.crash.crash();
        tracing::info!(bdev = %self.name, lost_blocks = n, "crash simulated");
        n
    }

    /// The current crash mode.
    pub fn crash_mode(&self) -> CrashMode {
        self.crash.mode()
    }
}

/// The error-bdev state behind `bdev`, or `None` if it is not an error bdev.
pub fn state_of(bdev: &Bdev) -> Option<Arc<ErrorState>> {
    bdev.driver()
        .as_any()
        .downcast_ref::<ErrorBdev>()
        .map(|d| d.state.clone())
}

/// The error driver's bdev.
pub struct ErrorBdev {
    state: Arc<ErrorState>,
}

impl ErrorBdev {
    /// The shared state.
    pub fn state(&self) -> &Arc<ErrorState> {
        &self.state
    }
}

impl BdevDriver for ErrorBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    fn create_channel(&self, bdev: &Arc<Bdev>) -> Result<Box<dyn DriverChannel>, BdevError> {
        Ok(Box::new(channel::ErrorChannel::new(
            self.state.clone(),
            bdev,
        )?))
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        let mut m = Map::new();
        m.insert("base_bdev".into(), json!(self.state.base.name()));
        self.state.crash.to_json(&mut m);
        m.insert("injections".into(), self.state.injections.to_json());
        Some(("error_disk", Value::Object(m)))
    }

    fn config(&self, bdev: &Bdev) -> Option<Value> {
        Some(json!({
            "method": "bdev_error_create",
            "params": {
                "base_name": self.state.base.name(),
                "uuid": bdev.uuid().to_string(),
            }
        }))
    }

    fn base_bdevs(&self) -> Vec<Arc<Bdev>> {
        vec![self.state.base.clone()]
    }

    fn shutdown(&self) {
        // Like a power cut: whatever the volatile cache still holds never reaches the base.
        let lost = self.state.crash.crash();
        if lost > 0 {
            tracing::warn!(
                bdev = %self.state.name,
                lost_blocks = lost,
                "volatile cache discarded unflushed writes at delete/shutdown"
            );
        }
    }
}

/// Creates `EE_<base>` on the bdev named `base_name` (claiming it) and returns it.
pub fn create(
    engine: &Engine,
    base_name: &str,
    uuid: Option<uuid::Uuid>,
) -> Result<Arc<Bdev>, BdevError> {
    let base = engine.bdevs().get(base_name)?;
    let name = format!("EE_{}", base.name());
    engine.bdevs().check_free(&name)?;
    base.claim(&format!("error bdev {name}"))?;
    let state = Arc::new(ErrorState {
        name: name.clone(),
        base: base.clone(),
        injections: Default::default(),
        crash: Default::default(),
    });
    let driver = Box::new(ErrorBdev {
        state: state.clone(),
    });
    let spec = BdevSpec {
        name,
        aliases: Vec::new(),
        uuid,
        block_size: base.block_size(),
        num_blocks: base.num_blocks(),
        io_types: base.io_types(),
    };
    engine
        .add_bdev(spec, driver)
        .inspect_err(|_| base.release_claim())
}
