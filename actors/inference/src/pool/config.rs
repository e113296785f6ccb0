//! Pool sizing and batching knobs (from the topology's `[[inference]]` entries).

use serde::Deserialize;

use crate::device::DeviceSpec;

/// How one model's pool runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Worker actors, each with its own copy of the model.
    pub workers: usize,
    /// Most embedding inputs per batch handed to a worker.
    pub max_batch: usize,
    /// How long a partial embedding batch may wait for more requests while a worker is idle
    /// (0 = dispatch at once; batches still form from what queues up while workers are busy).
    pub max_wait_ms: u64,
    /// Most requests waiting in the pool; beyond it callers get `Overloaded` (HTTP 429).
    pub queue_capacity: usize,
    /// Most inputs in one embedding request.
    pub max_inputs: usize,
    /// `cpu` or `cuda:N` (needs a build with the `cuda` feature; the device's memory is leased
    /// from the node's GPU manager when one runs).
    pub device: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            max_batch: 32,
            max_wait_ms: 0,
            queue_capacity: 256,
            max_inputs: 2048,
            device: "cpu".into(),
        }
    }
}

impl PoolConfig {
    /// Rejects values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("workers must be at least 1".into());
        }
        if self.max_batch == 0 || self.queue_capacity == 0 || self.max_inputs == 0 {
            return Err("max_batch, queue_capacity and max_inputs must be at least 1".into());
        }
        self.device_spec()?.check_build()
    }

    /// The parsed `device`.
    pub fn device_spec(&self) -> Result<DeviceSpec, String> {
        self.device.parse()
    }
}
