//! The set of bdevs of one engine, by name and alias. Control plane only: reactors never look
//! bdevs up here on the I/O path (they hold `Arc<Bdev>` and cached channels).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Bdev, BdevDriver, BdevError, BdevSpec};

/// Bdevs by name.
#[derive(Default)]
pub struct BdevRegistry {
    inner: Mutex<BTreeMap<String, Arc<Bdev>>>,
    next_id: AtomicU64,
}

impl BdevRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Bdev>>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Validates `spec` and registers a new bdev; fails if the name or an alias is taken
    /// (nothing is registered then).
    pub fn register(
        &self,
        spec: BdevSpec,
        driver: Box<dyn BdevDriver>,
    ) -> Result<Arc<Bdev>, BdevError> {
        spec.validate()?;
        let mut map = self.lock();
        for n in std::iter::once(&spec.name).chain(spec.aliases.iter()) {
            if find(&map, n).is_some() {
                return Err(BdevError::Exists(n.clone()));
            }
        }
        if let Some(u) = spec.uuid {
            if map.values().any(|b| b.uuid() == u) {
                return Err(BdevError::Exists(format!("uuid {u}")));
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let bdev = Arc::new(Bdev::new(id, spec, driver));
        map.insert(bdev.name().to_string(), bdev.clone());
        Ok(bdev)
    }

    /// Checks that `name` (and aliases) are free without registering anything.
    pub fn check_free(&self, name: &str) -> Result<(), BdevError> {
        match find(&self.lock(), name) {
            Some(_) => Err(BdevError::Exists(name.to_string())),
            None => Ok(()),
        }
    }

    /// Looks a bdev up by name, alias or uuid.
    pub fn get(&self, name: &str) -> Result<Arc<Bdev>, BdevError> {
        find(&self.lock(), name).ok_or_else(|| BdevError::NotFound(name.to_string()))
    }

    /// Every bdev, in creation order.
    pub fn list(&self) -> Vec<Arc<Bdev>> {
        let mut v: Vec<Arc<Bdev>> = self.lock().values().cloned().collect();
        v.sort_by_key(|b| b.id());
        v
    }

    /// Removes an unclaimed bdev from the registry (the caller then tears down its channels).
    /// `expect_product` guards against deleting another driver's bdev by name.
    pub fn remove(&self, name: &str, expect_product: Option<&str>) -> Result<Arc<Bdev>, BdevError> {
        let mut map = self.lock();
        let bdev = map
            .get(name)
            .cloned()
            .ok_or_else(|| BdevError::NotFound(name.to_string()))?;
        if let Some(p) = expect_product {
            if bdev.driver().product_name() != p {
                return Err(BdevError::WrongDriver {
                    name: name.to_string(),
                    actual: bdev.driver().product_name().to_string(),
                    expected: p.to_string(),
                });
            }
        }
        if let Some(owner) = bdev.claimed_by() {
            return Err(BdevError::Busy {
                name: name.to_string(),
                owner,
            });
        }
        map.remove(name);
        Ok(bdev)
    }
}

fn find(map: &BTreeMap<String, Arc<Bdev>>, name: &str) -> Option<Arc<Bdev>> {
    if let Some(b) = map.get(name) {
        return Some(b.clone());
    }
    map.values()
        .find(|b| b.aliases().iter().any(|a| a == name) || b.uuid().to_string() == name)
        .cloned()
}
