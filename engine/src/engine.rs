//! The engine: the reactors plus the bdevs they serve, with the control-plane operations that
//! need both (creating and deleting bdevs, orderly shutdown).

use std::sync::Arc;
use std::time::Duration;

use crate::bdev::thread::BdevThread;
use crate::bdev::{Bdev, BdevDriver, BdevError, BdevRegistry, BdevSpec};
use crate::reactor::{PollMode, ReactorError, ReactorSet};

/// A running engine.
pub struct Engine {
    reactors: Arc<ReactorSet>,
    bdevs: BdevRegistry,
}

impl Engine {
    /// Starts reactors on `cores` with the given idle policy.
    pub fn start(cores: &[u32], mode: PollMode) -> Result<Arc<Engine>, ReactorError> {
        Ok(Arc::new(Engine {
            reactors: ReactorSet::start(cores, mode)?,
            bdevs: BdevRegistry::new(),
        }))
    }

    /// The reactors.
    pub fn reactors(&self) -> &Arc<ReactorSet> {
        &self.reactors
    }

    /// The bdevs.
    pub fn bdevs(&self) -> &BdevRegistry {
        &self.bdevs
    }

    /// Registers a bdev built by a driver.
    pub fn add_bdev(
        &self,
        spec: BdevSpec,
        driver: Box<dyn BdevDriver>,
    ) -> Result<Arc<Bdev>, BdevError> {
        let name = spec.name.clone();
        let b = self.bdevs.register(spec, driver)?;
        tracing::info!(bdev = %name, "bdev created");
        Ok(b)
    }

    /// Deletes an unclaimed bdev: unregisters it, drops every reactor's channel (requests in
    /// flight finish first), releases what it claimed, and lets the driver flush and close.
    pub fn delete_bdev(&self, name: &str, expect_product: Option<&str>) -> Result<(), BdevError> {
        self.delete_bdev_within(name, expect_product, Duration::from_secs(5))
            .map(|_| ())
    }

    /// [`Engine::delete_bdev`], waiting at most `wait` for the requests in flight; returns
    /// whether they all finished (false: some were still running when the bdev was closed).
    pub fn delete_bdev_within(
        &self,
        name: &str,
        expect_product: Option<&str>,
        wait: Duration,
    ) -> Result<bool, BdevError> {
        let bdev = self.bdevs.remove(name, expect_product)?;
        let drained = self.teardown(&bdev, wait);
        if drained {
            tracing::info!(bdev = %name, "bdev deleted");
        } else {
            tracing::warn!(bdev = %name, ?wait, "bdev deleted with requests still in flight");
        }
        Ok(drained)
    }

    /// Detaches `bdev` from every reactor, waits (at most `wait`) for the requests still
    /// holding its channels, and closes it; returns whether they all finished.
    fn teardown(&self, bdev: &Arc<Bdev>, wait: Duration) -> bool {
        let id = bdev.id();
        self.reactors.call_all(move || {
            BdevThread::with(|t| t.remove_channel(id));
        });
        let deadline = std::time::Instant::now() + wait;
        let mut drained = Arc::strong_count(bdev) == 1;
        while !drained && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            drained = Arc::strong_count(bdev) == 1;
        }
        bdev.driver().shutdown();
        for base in bdev.driver().base_bdevs() {
            base.release_claim();
        }
        drained
    }

    /// Stops the reactors after in-flight requests finish, then flushes and closes every bdev,
    /// newest first (layered bdevs before their bases).
    pub fn shutdown(&self) {
        self.reactors.stop(Duration::from_secs(10));
        let mut all = self.bdevs.list();
        all.reverse();
        for b in all {
            b.driver().shutdown();
        }
    }
}
