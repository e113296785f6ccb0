//! Tracing export for abi nodes: `tracing` spans become OpenTelemetry spans and
//! leave the process over OTLP/HTTP (protobuf), with W3C trace context.
//!
//! # Shape
//! - [`Telemetry::layer`] is the node subscriber's **span layer** ([`layer`]):
//!   it sees only spans of target [`abi_runtime::trace::TARGET`] (logs and
//!   library spans never reach the exporter), keeps a compact record per span
//!   and, when the span closes, puts it in the **span queue** ([`queue`]): a
//!   bounded buffer per recording thread; if that is full the span is dropped
//!   and counted. Nothing on a request path waits for the exporter, wakes
//!   another thread or writes memory that other request threads write.
//! - The queue is drained by the **flusher** ([`flusher`]), a supervised actor
//!   child of the node (`telemetry`), which batches spans, writes them as an
//!   OTLP protobuf request ([`otlp`], straight from the records) and POSTs it
//!   over one kept-alive HTTP/1.1 connection it drives itself ([`client`]).
//!   When the receiver is down the batch is dropped and counted too; the
//!   flusher never retries beyond one export timeout, so a dead
//!   receiver costs at most one export timeout per batch, on the flusher only.
//! - [`Telemetry::install_propagation`] plugs W3C `traceparent` handling into
//!   the runtime's trace seam ([`abi_runtime::trace`]), used by `Node::ask`,
//!   the transport envelope and the gateway, and takes the gateway's entry
//!   spans (records made without `tracing`) into the same queue.
//!
//! Counters (`abi_telemetry_spans_exported_total`,
//! `abi_telemetry_spans_dropped_total{reason}`) go into the node's registry
//! with [`Telemetry::register_metrics`].

mod client;
pub mod flusher;
pub mod layer;
mod otlp;
mod propagation;
pub mod queue;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::registry::LookupSpan;

pub use propagation::W3c;

/// Settings of the span sink (from `[telemetry]` and the CLI).
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// OTLP/HTTP protobuf traces URL, e.g. `http://127.0.0.1:6006/v1/traces`.
    pub otlp_endpoint: String,
    /// Fraction of new traces sampled (a sampled parent from a caller is honoured).
    pub sampling_ratio: f64,
    /// Spans waiting for export at most, per thread that records spans; more
    /// are dropped and counted.
    pub queue_size: usize,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// Spans per export request at most.
    pub max_batch: usize,
    /// How long the flusher waits to fill a batch.
    pub flush_interval: Duration,
    /// Time limit of one export request (connect + send + answer).
    pub export_timeout: Duration,
}

impl TelemetryConfig {
    /// Defaults for everything but the endpoint.
    pub fn new(otlp_endpoint: impl Into<String>) -> Self {
        Self {
            otlp_endpoint: otlp_endpoint.into(),
            sampling_ratio: 1.0,
            queue_size: 2048,
            service_name: "abi-node".into(),
            max_batch: 2048,
            flush_interval: Duration::from_millis(500),
            export_timeout: Duration::from_secs(3),
        }
    }
}

/// Why the sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The endpoint is not an `http://` or `https://` URL with a host.
    #[error("invalid OTLP endpoint `{endpoint}`: {reason}")]
    BadEndpoint {
        /// What was configured.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `sampling_ratio` outside 0.0..=1.0.
    #[error("sampling_ratio must be between 0.0 and 1.0, got {0}")]
    BadSamplingRatio(f64),
    /// `queue_size` or `max_batch` of zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The exporter's HTTP client refused the endpoint.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// Why spans were dropped.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `queue_full` (the flusher fell behind) or `export_failed` (receiver down or refusing).
    pub reason: &'static str,
}

/// The sink's counters; cheap to clone (shared atomics).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Spans the receiver accepted.
    pub exported: Counter,
    /// Spans dropped, by reason.
    pub dropped: Family<DropLabels, Counter>,
    /// Spans the flusher took from the queue and has not exported yet.
    pub queued: Gauge,
}

impl Counters {
    fn dropped(&self, reason: &'static str) -> Counter {
        self.dropped.get_or_create(&DropLabels { reason }).clone()
    }
}

/// Shared between the span layer and the flusher actor.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: TelemetryConfig,
    /// Resource attributes of every export (`service.name`, ...).
    pub(crate) resource: Vec<(String, String)>,
    pub(crate) counters: Counters,
    pub(crate) buffers: Arc<queue::Buffers>,
    /// Set by [`Telemetry::shutdown`]: spans closing later are not queued.
    pub(crate) closed: Arc<AtomicBool>,
}

/// The span sink of one process.
#[derive(Debug, Clone)]
pub struct Telemetry {
    shared: Arc<Shared>,
}

impl Telemetry {
    /// Validates `cfg` and builds the queue. Works outside an async runtime
    /// (the exporter is built by the flusher).
    ///
    /// Sampling is decided where a trace starts (the gateway, with
    /// `sampling_ratio`) before any span exists; every span made is kept.
    pub fn new(cfg: TelemetryConfig) -> Result<Self, TelemetryError> {
        validate(&cfg)?;
        let buffers = Arc::new(queue::Buffers::new(cfg.queue_size));
        let resource = resource(
            &cfg.service_name,
            std::env::var("OTEL_RESOURCE_ATTRIBUTES").ok(),
        );
        Ok(Self {
            shared: Arc::new(Shared {
                cfg,
                resource,
                counters: Counters::default(),
                buffers,
                closed: Arc::new(AtomicBool::new(false)),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &TelemetryConfig {
        &self.shared.cfg
    }

    /// The counters (also registered by [`Telemetry::register_metrics`]).
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The `tracing` layer that records abi's trace spans for export.
    ///
    /// Only target [`abi_runtime::trace::TARGET`] passes: logs and the spans of
    /// libraries (hyper, h2, quinn) stay out of the export, which also keeps
    /// the exporter's own HTTP client from tracing itself.
    pub fn layer<S>(&self) -> Filtered<layer::SpanLayer, Targets, S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        layer::SpanLayer::new(self.queue()).with_filter(
            Targets::new().with_target(abi_runtime::trace::TARGET, tracing::Level::INFO),
        )
    }

    fn queue(&self) -> queue::Queue {
        queue::Queue::new(
            self.shared.buffers.clone(),
            &self.shared.counters,
            self.shared.closed.clone(),
        )
    }

    /// Turns on span creation in `ask`/`tell`, the transport and the gateway.
    pub fn install_propagation(&self) -> bool {
        abi_runtime::trace::install(Box::new(W3c::new(
            self.shared.cfg.sampling_ratio,
            self.queue(),
        )))
    }

    /// Registers the sink's counters in `node`'s Prometheus registry (once per process).
    pub fn register_metrics(&self, node: &abi_runtime::Node) {
        let c = self.shared.counters.clone();
        node.metrics().get_or_init(move |reg| {
            reg.register(
                "abi_telemetry_spans_exported",
                "Spans accepted by the OTLP receiver",
                c.exported.clone(),
            );
            reg.register(
                "abi_telemetry_spans_dropped",
                "Spans dropped instead of exported (queue full or export failed)",
                c.dropped.clone(),
            );
            reg.register(
                "abi_telemetry_spans_queued",
                "Spans taken from the queue, waiting for export",
                c.queued.clone(),
            );
            // Both reasons appear from the start, so a rate() over them works
            // before the first drop.
            c.dropped(queue::QUEUE_FULL);
            c.dropped(flusher::EXPORT_FAILED);
            TelemetryRegistered
        });
    }

    /// The flusher as a supervised child named `telemetry`.
    pub fn child_spec(&self) -> abi_runtime::ChildSpec {
        flusher::child_spec(self.shared.clone())
    }

    /// Stops queueing spans: later ones are not exported. Spans already
    /// queued are exported by the flusher when it stops.
    pub fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy)]
struct TelemetryRegistered;

fn validate(cfg: &TelemetryConfig) -> Result<(), TelemetryError> {
    let bad = |reason: &str| TelemetryError::BadEndpoint {
        endpoint: cfg.otlp_endpoint.clone(),
        reason: reason.into(),
    };
    let rest = cfg
        .otlp_endpoint
        .strip_prefix("http://")
        .or_else(|| cfg.otlp_endpoint.strip_prefix("https://"))
        .ok_or_else(|| bad("must start with http:// or https:// (OTLP over HTTP/protobuf)"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("no host"));
    }
    if cfg.otlp_endpoint.starts_with("https://") {
        // The exporter is built without a TLS stack (see the workspace manifest).
        return Err(bad(
            "https is not supported by this build; use a local collector over http",
        ));
    }
    client::Client::new(&cfg.otlp_endpoint, cfg.export_timeout).map_err(|e| bad(&e))?;
    if !(0.0..=1.0).contains(&cfg.sampling_ratio) {
        return Err(TelemetryError::BadSamplingRatio(cfg.sampling_ratio));
    }
    if cfg.queue_size == 0 {
        return Err(TelemetryError::Zero("queue_size"));
    }
    if cfg.max_batch == 0 {
        return Err(TelemetryError::Zero("max_batch"));
    }
    Ok(())
}

/// The resource attributes of exports: those of `OTEL_RESOURCE_ATTRIBUTES`
/// (`key=value` pairs, comma-separated, percent-encoded, as the OpenTelemetry
/// SDKs read them), then `service.name` (the configured one wins) and the
/// `telemetry.sdk.*` attributes.
fn resource(service_name: &str, env: Option<String>) -> Vec<(String, String)> {
    let mut attrs: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| match attrs.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v,
        None => attrs.push((k.to_string(), v)),
    };
    for pair in env.as_deref().unwrap_or("").split(',') {
        // Malformed pairs are skipped, as the SDKs do.
        if let Some((k, v)) = pair.split_once('=')
            && !k.trim().is_empty()
        {
            set(&percent_decode(k.trim()), percent_decode(v.trim()));
        }
    }
    set("service.name", service_name.to_string());
    set("telemetry.sdk.name", "abi".into());
    set("telemetry.sdk.language", "rust".into());
    set("telemetry.sdk.version", env!("CARGO_PKG_VERSION").into());
    attrs
}

/// `%XX` escapes decoded (a malformed escape is kept as it is).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_reads_the_environment_and_the_configured_name_wins() {
        let r = resource(
            "abi-node",
            Some(
                "deployment.environment=prod%20eu, service.name=other,broken,team=ml%2Cinfra"
                    .into(),
            ),
        );
        let get = |k: &str| r.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("deployment.environment"), Some("prod eu"));
        assert_eq!(get("team"), Some("ml,infra"));
        assert_eq!(get("service.name"), Some("abi-node"));
        assert_eq!(get("telemetry.sdk.language"), Some("rust"));
        assert_eq!(r.iter().filter(|(k, _)| k == "service.name").count(), 1);
        assert_eq!(resource("x", None).len(), 4);
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(Telemetry::new(TelemetryConfig::new("http://127.0.0.1:6006/v1/traces")).is_ok());
        for bad in [
            "127.0.0.1:4318",
            "grpc://x",
            "http://",
            "https://collector/v1/traces",
        ] {
            assert!(
                matches!(
                    Telemetry::new(TelemetryConfig::new(bad)),
                    Err(TelemetryError::BadEndpoint { .. })
                ),
                "{bad} accepted"
            );
        }
        let mut c = TelemetryConfig::new("http://h:1/v1/traces");
        c.sampling_ratio = 1.5;
        assert!(matches!(
            Telemetry::new(c.clone()),
            Err(TelemetryError::BadSamplingRatio(_))
        ));
        c.sampling_ratio = 0.5;
        c.queue_size = 0;
        assert!(matches!(
            Telemetry::new(c),
            Err(TelemetryError::Zero("queue_size"))
        ));
    }
}
