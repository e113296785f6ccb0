//! Inference metrics (registered once per process in the node's registry):
//! queue depth and embedding batch sizes per pool, generated tokens per model
//! (`rate()` of the counter is tokens/s).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Labels of per-model series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// Model id (the pool's name).
    pub model: String,
}

/// The inference families.
#[derive(Debug, Clone)]
pub struct InferenceMetrics {
    queue_depth: Family<ModelLabels, Gauge>,
    batch_size: Family<ModelLabels, Histogram>,
    generated_tokens: Family<ModelLabels, Counter>,
}

fn batch_histogram() -> Histogram {
    // 1, 2, 4, ... 128 inputs.
    Histogram::new(exponential_buckets(1.0, 2.0, 8))
}

impl InferenceMetrics {
    /// Registers (or finds) the families in `node`'s registry.
    pub fn of(node: &abi_runtime::Node) -> Self {
        node.metrics().get_or_init(|reg| {
            let m = InferenceMetrics {
                queue_depth: Family::default(),
                batch_size: Family::new_with_constructor(batch_histogram),
                generated_tokens: Family::default(),
            };
            reg.register(
                "abi_inference_queue_depth",
                "Requests waiting in a pool's queue",
                m.queue_depth.clone(),
            );
            reg.register(
                "abi_inference_batch_size",
                "Inputs per embedding batch handed to a worker",
                m.batch_size.clone(),
            );
            reg.register(
                "abi_inference_generated_tokens",
                "Completion tokens generated (rate() gives tokens/s)",
                m.generated_tokens.clone(),
            );
            m
        })
    }

    /// The series of one model.
    pub fn pool(&self, model: &str) -> PoolMetrics {
        let l = ModelLabels {
            model: model.to_string(),
        };
        PoolMetrics {
            queue_depth: self.queue_depth.get_or_create(&l).clone(),
            batch_size: self.batch_size.get_or_create(&l).clone(),
            generated_tokens: self.generated_tokens.get_or_create(&l).clone(),
        }
    }
}

/// One pool's series (shared atomics: cheap to clone into workers).
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    /// Queue length, set whenever it changes.
    pub queue_depth: Gauge,
    /// Inputs per embedding batch.
    pub batch_size: Histogram,
    /// Completion tokens.
    pub generated_tokens: Counter,
}

impl PoolMetrics {
    /// Series registered nowhere (tests that run a pool without a node registry).
    pub fn detached() -> Self {
        Self {
            queue_depth: Gauge::default(),
            batch_size: batch_histogram(),
            generated_tokens: Counter::default(),
        }
    }
}
