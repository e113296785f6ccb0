//! The flusher: a supervised actor that drains the span queue and exports
//! batches over OTLP/HTTP.
//!
//! One round per `Tick` message: wait up to `flush_interval` for spans (at
//! most `max_batch`), export them, then send itself the next `Tick`. Going
//! through the mailbox between rounds (instead of looping inside `handle`)
//! lets the supervisor's stop signal in after each round, and needs no timer
//! task. A failed export drops the batch and counts it: retrying would only
//! let the queue overflow later, and spans have no value once stale.

use std::sync::Arc;
use std::time::Duration;

use abi_runtime::{ChildSpec, StartError, Started};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::OwnedMutexGuard;
use tokio::sync::mpsc::Receiver;

use crate::{Shared, TelemetryError};

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
    rx: OwnedMutexGuard<Receiver<SpanData>>,
    failing: bool,
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

impl FlusherState {
    async fn export(&mut self, batch: Vec<SpanData>) {
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

    fn take_queued(&mut self, buf: &mut Vec<SpanData>) {
        while buf.len() < self.shared.cfg.max_batch {
            match self.rx.try_recv() {
                Ok(s) => buf.push(s),
                Err(_) => break,
            }
        }
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
        let max = st.shared.cfg.max_batch;
        let mut buf = Vec::with_capacity(max.min(1024));
        let wait = st.shared.cfg.flush_interval;
        // Ok(0): every sender is gone (the process is ending), nothing more will come.
        if let Ok(0) = tokio::time::timeout(wait, st.rx.recv_many(&mut buf, max)).await {
            return Ok(());
        }
        if !buf.is_empty() {
            st.shared.counters.queued.dec_by(buf.len() as i64);
            st.export(buf).await;
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
        let mut buf = Vec::new();
        st.take_queued(&mut buf);
        if !buf.is_empty() {
            st.shared.counters.queued.dec_by(buf.len() as i64);
            st.export(buf).await;
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
