//! `null`: a bdev that completes every request at once without touching data (reads leave the
//! buffers as they are, writes go nowhere). Measures the framework's own cost.

pub mod rpc;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::bdev::{Bdev, BdevDriver, BdevError, BdevIo, DriverChannel, IoStatus};

/// The null driver's bdev state (none).
pub struct NullBdev;

impl BdevDriver for NullBdev {
    fn product_name(&self) -> &'static str {
        "Null disk"
    }

    fn create_channel(&self, _bdev: &Arc<Bdev>) -> Result<Box<dyn DriverChannel>, BdevError> {
        Ok(Box::new(NullChannel))
    }

    fn config(&self, bdev: &Bdev) -> Option<Value> {
        Some(json!({
            "method": "bdev_null_create",
            "params": {
                "name": bdev.name(),
                "num_blocks": bdev.num_blocks(),
                "block_size": bdev.block_size(),
                "uuid": bdev.uuid().to_string(),
            }
        }))
    }
}

struct NullChannel;

impl DriverChannel for NullChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo> {
        io.complete(IoStatus::Success);
        Ok(())
    }
}
