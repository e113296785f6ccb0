//! The flusher: a supervised actor that drains the span queue and exports
//! batches over OTLP/HTTP.
//!
//! One round per `Tick` message: take what the queue holds (the batch grows
//! to at most `max_batch`), export the batch once it is full or its oldest
//! span has waited `flush_interval`, else sleep [`POLL`]; then send itself
//! the next `Tick`. Polling, rather than being woken per span, keeps the span
//! layer's `try_send` free of cross-thread wake-ups. Going through the mailbox
//! between rounds (instead of looping inside `handle`) lets the supervisor's
//! stop signal in after each round, and needs no timer task. A failed export
//! drops the batch and counts it: retrying would only let the queue overflow
//! later, and spans have no value once stale.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use abi_runtime::{ChildSpec, StartError, Started};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::OwnedMutexGuard;

use crate::layer::{Kind, SpanRecord};
use crate::{Shared, TelemetryError};
use abi_runtime::trace::AttrValue as Value;

/// How often the flusher looks at the queue: the default queue (2,048 spans)
/// does not fill between looks below about 200 k spans/s.
pub const POLL: Duration = Duration::from_millis(10);

/// `reason` label of spans dropped because the receiver did not take them.
pub const EXPORT_FAILED: &str = "export_failed";

/// The child's name under the root supervisor.
pub const NAME: &str = "telemetry";

/// Messages of the flusher.
#[derive(Debug)]
pub enum FlushMsg {
    /// Run one export round.
    Tick,
}

/// The flusher actor.
#[derive(Debug)]
pub(crate) struct Flusher;

/// Live state of the flusher.
pub(crate) struct FlusherState {
    shared: Arc<Shared>,
    exporter: opentelemetry_otlp::SpanExporter,
    // Held for the actor's life; a restarted flusher takes it over once the
    // failed one's state is dropped.
    rx: OwnedMutexGuard<Receiver<SpanRecord>>,
    failing: bool,
    scope: InstrumentationScope,
    /// The batch being filled, and when its first span was taken.
    batch: Vec<SpanRecord>,
    since: Option<Instant>,
}

impl std::fmt::Debug for FlusherState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlusherState")
            .field("endpoint", &self.shared.cfg.otlp_endpoint)
            .field("failing", &self.failing)
            .finish()
    }
}

fn build_exporter(shared: &Shared) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(shared.cfg.otlp_endpoint.clone())
        .with_timeout(shared.cfg.export_timeout)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    exporter.set_resource(&shared.resource);
    Ok(exporter)
}

/// The SDK span of `r`, as the OTLP exporter takes it.
fn span_data(r: SpanRecord, scope: &InstrumentationScope) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(r.trace_id),
            SpanId::from(r.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from(r.parent_span_id),
        parent_span_is_remote: r.parent_remote,
        span_kind: match r.kind {
            Kind::Internal => SpanKind::Internal,
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
            Kind::Producer => SpanKind::Producer,
            Kind::Consumer => SpanKind::Consumer,
        },
        name: Cow::Borrowed(r.name),
        start_time: r.start,
        end_time: r.end,
        attributes: r
            .attributes
            .into_iter()
            .map(|(k, v)| match v {
                Value::Str(s) => KeyValue::new(k, s),
                Value::Static(s) => KeyValue::new(k, s),
                Value::Shared(s) => KeyValue::new(k, s.to_string()),
                Value::I64(i) => KeyValue::new(k, i),
                Value::F64(f) => KeyValue::new(k, f),
                Value::Bool(b) => KeyValue::new(k, b),
            })
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if r.error {
            Status::error("")
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    }
}

impl FlusherState {
    async fn export(&mut self) {
        self.since = None;
        let batch: Vec<SpanData> = self
            .batch
            .drain(..)
            .map(|r| span_data(r, &self.scope))
            .collect();
        let n = batch.len() as u64;
        // The exporter bounds itself with `export_timeout`; the outer limit
        // guards against a client that ignores it.
        let limit = self.shared.cfg.export_timeout + Duration::from_secs(1);
        let result = match tokio::time::timeout(limit, self.exporter.export(batch)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        };
        match result {
            Ok(()) => {
                self.shared.counters.exported.inc_by(n);
                if self.failing {
                    self.failing = false;
                    tracing::info!(endpoint = %self.shared.cfg.otlp_endpoint, "span export works again");
                }
            }
            Err(e) => {
                self.shared.counters.dropped(EXPORT_FAILED).inc_by(n);
                // One line per outage, not one per batch.
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(
                        endpoint = %self.shared.cfg.otlp_endpoint,
                        error = %e,
                        "span export failed; spans are dropped and counted until the receiver answers"
                    );
                }
            }
        }
    }

    /// Moves queued spans into the batch (up to `max_batch`); `false` once
    /// every sender is gone (the process is ending).
    fn take_queued(&mut self) -> bool {
        let before = self.batch.len();
        let mut open = true;
        while self.batch.len() < self.shared.cfg.max_batch {
            match self.rx.try_recv() {
                Ok(s) => self.batch.push(s),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let taken = self.batch.len() - before;
        if taken > 0 {
            self.shared.counters.queued.dec_by(taken as i64);
            self.since.get_or_insert_with(Instant::now);
        }
        open
    }
}

impl Actor for Flusher {
    type Msg = FlushMsg;
    type State = FlusherState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let exporter = build_exporter(&shared)?;
        let rx = shared.rx.clone().lock_owned().await;
        Ok(FlusherState {
            shared,
            exporter,
            rx,
            failing: false,
            scope: InstrumentationScope::builder("abi").build(),
            batch: Vec::new(),
            since: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself.send_message(FlushMsg::Tick)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        FlushMsg::Tick: FlushMsg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let open = st.take_queued();
        let full = st.batch.len() >= st.shared.cfg.max_batch;
        let due = st
            .since
            .is_some_and(|t| t.elapsed() >= st.shared.cfg.flush_interval);
        if full || due || (!open && !st.batch.is_empty()) {
            st.export().await;
        } else if open {
            tokio::time::sleep(POLL.min(st.shared.cfg.flush_interval)).await;
        }
        if !open {
            // Nothing more will come.
            return Ok(());
        }
        myself.send_message(FlushMsg::Tick)?;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Last round on a graceful stop: what is queued now still goes out.
        st.take_queued();
        if !st.batch.is_empty() {
            st.export().await;
        }
        Ok(())
    }
}

pub(crate) fn child_spec(shared: Arc<Shared>) -> ChildSpec {
    // Room for one in-flight export plus the final flush.
    let shutdown = shared.cfg.export_timeout * 2 + Duration::from_secs(2);
    ChildSpec::worker(NAME, move |ctx| {
        let shared = shared.clone();
        async move {
            let r = ctx
                .spawn(Flusher, shared)
                .await
                .map_err(|e| StartError::msg(format!("telemetry flusher: {e}")))?;
            Ok(Started::unaddressed(r.get_cell()))
        }
    })
    .shutdown(shutdown)
}
