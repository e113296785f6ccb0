//! Prometheus metrics of the node: one registry, shared by every subsystem.
//!
//! The supervisor records actor lifecycles here; subsystems register their
//! own families once per process with [`Metrics::get_or_init`] (a restarted
//! actor must not register the same name twice).

use std::any::{Any, TypeId};
use std::collections::HashMap;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-actor series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActorLabels {
    /// Actor path.
    pub path: String,
}

/// The node's metrics registry plus the supervision families.
pub struct Metrics {
    registry: Mutex<Registry>,
    extensions: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    /// Restarts by supervisor (`abi_actor_restarts_total`).
    pub restarts: Family<ActorLabels, Counter>,
    /// Abnormal exits (`abi_actor_failures_total`).
    pub failures: Family<ActorLabels, Counter>,
    /// 1 while running (`abi_actor_up`).
    pub up: Family<ActorLabels, Gauge>,
    /// Restart-intensity escalations (`abi_supervisor_escalations_total`).
    pub escalations: Family<ActorLabels, Counter>,
    /// Messages delivered through `ask`/`tell` (`abi_actor_messages_total`).
    pub messages: Family<ActorLabels, Counter>,
    /// Local ask round trips, queueing included (`abi_actor_request_duration_seconds`).
    pub request_duration: Family<ActorLabels, Histogram>,
}

/// One actor's message series, cached in its registry entry so that an ask
/// does not build a label set (an allocation) per message.
#[derive(Debug, Clone)]
pub(crate) struct ActorStats {
    pub(crate) messages: Counter,
    pub(crate) request_duration: Histogram,
}

fn request_histogram() -> Histogram {
    // 1 us .. ~15 s.
    Histogram::new(exponential_buckets(0.000001, 4.0, 13))
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the supervision families registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let restarts = Family::<ActorLabels, Counter>::default();
        let failures = Family::<ActorLabels, Counter>::default();
        let up = Family::<ActorLabels, Gauge>::default();
        let escalations = Family::<ActorLabels, Counter>::default();
        let messages = Family::<ActorLabels, Counter>::default();
        let request_duration =
            Family::<ActorLabels, Histogram>::new_with_constructor(request_histogram);
        registry.register(
            "abi_actor_messages",
            "Messages delivered to an actor through ask or tell (local or from another node)",
            messages.clone(),
        );
        registry.register_with_unit(
            "abi_actor_request_duration",
            "Time from sending a local ask to its reply (mailbox wait and handling), one ask in 8 sampled",
            prometheus_client::registry::Unit::Seconds,
            request_duration.clone(),
        );
        registry.register(
            "abi_actor_restarts",
            "Restarts of an actor by its supervisor",
            restarts.clone(),
        );
        registry.register(
            "abi_actor_failures",
            "Abnormal exits of an actor (panic, error, kill, failed start)",
            failures.clone(),
        );
        registry.register("abi_actor_up", "1 while the actor runs", up.clone());
        registry.register(
            "abi_supervisor_escalations",
            "Supervisors that exceeded their restart intensity",
            escalations.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            extensions: Mutex::new(HashMap::new()),
            restarts,
            failures,
            up,
            escalations,
            messages,
            request_duration,
        }
    }

    pub(crate) fn actor_stats(&self, path: &str) -> ActorStats {
        let l = Self::labels(path);
        ActorStats {
            messages: self.messages.get_or_create(&l).clone(),
            request_duration: self.request_duration.get_or_create(&l).clone(),
        }
    }

    /// Returns the `T` registered earlier, or registers it with `init`.
    pub fn get_or_init<T: Clone + Send + Sync + 'static>(
        &self,
        init: impl FnOnce(&mut Registry) -> T,
    ) -> T {
        let mut ext = self.extensions.lock();
        if let Some(v) = ext
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref::<T>())
        {
            return v.clone();
        }
        let v = init(&mut self.registry.lock());
        ext.insert(TypeId::of::<T>(), Box::new(v.clone()));
        v
    }

    /// The OpenMetrics text exposition of everything registered.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock());
        out
    }

    pub(crate) fn labels(path: &str) -> ActorLabels {
        ActorLabels {
            path: path.to_string(),
        }
    }
}
