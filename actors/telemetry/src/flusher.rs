//! The flusher: a supervised actor that drains the span queue and exports
//! batches over OTLP/HTTP.
//!
//! One round per `Tick` message: take what the queue's thread buffers hold
//! (while the batch is below `max_batch`), export up to `max_batch` spans once
//! that many wait or the oldest has waited `flush_interval` (taking the buffers
//! again every [`POLL`] while the receiver answers), else sleep
//! [`POLL`]; then send itself the next `Tick`. Polling, rather than being
//! woken per span, keeps recording a span free of cross-thread wake-ups.
//! Going through the mailbox between rounds (instead of looping inside
//! `handle`) lets the supervisor's stop signal in after each round, and needs
//! no timer task. A failed export drops the batch and counts it: retrying
//! would only let the queue overflow later, and spans have no value once
//! stale.

use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_runtime::{ChildSpec, StartError, Started};
use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::client::Client;
use crate::layer::SpanRecord;
use crate::otlp::Encoder;
use crate::queue::QUEUE_FULL;
use crate::{Shared, TelemetryError};

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
    client: Client,
    encoder: Encoder,
    failing: bool,
    batch: Batch,
}

/// The spans taken from the queue and not exported yet.
#[derive(Default)]
struct Batch {
    spans: Vec<SpanRecord>,
    /// When the first of them was taken.
    since: Option<Instant>,
    /// An empty vector given to a thread's buffer for the one taken from it.
    spare: Vec<SpanRecord>,
}

impl Batch {
    /// Takes the spans of every thread's buffer, unless the batch holds
    /// `max_batch` already and this is not the last round (then the buffers
    /// fill and drop at the door).
    fn take_queued(&mut self, shared: &Shared, last: bool) {
        let before = self.spans.len();
        if before >= shared.cfg.max_batch && !last {
            return;
        }
        let dropped = shared.buffers.drain(&mut self.spans, &mut self.spare);
        if dropped > 0 {
            shared.counters.dropped(QUEUE_FULL).inc_by(dropped);
        }
        if self.spans.len() > before {
            shared.counters.queued.set(self.spans.len() as i64);
            self.since.get_or_insert_with(Instant::now);
        }
    }
}

impl std::fmt::Debug for FlusherState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlusherState")
            .field("endpoint", &self.shared.cfg.otlp_endpoint)
            .field("failing", &self.failing)
            .finish()
    }
}

impl FlusherState {
    /// Exports the oldest `max_batch` spans of the batch.
    async fn export(&mut self) {
        let n = self.batch.spans.len().min(self.shared.cfg.max_batch);
        // While the receiver is down, see that it is back before encoding a batch.
        let reachable = if self.failing {
            self.client.connect().await
        } else {
            Ok(())
        };
        let body = reachable.map(|()| {
            let mut body = Vec::new();
            let start = self.encoder.encode(&self.batch.spans[..n], &mut body);
            Bytes::from(body).slice(start..)
        });
        self.batch.spans.drain(..n);
        self.batch.since = (!self.batch.spans.is_empty()).then(Instant::now);
        self.shared
            .counters
            .queued
            .set(self.batch.spans.len() as i64);
        let n = n as u64;
        let result = match body {
            Ok(body) => {
                // The buffers keep filling while the receiver answers: keep taking them
                // every POLL, or a slow receiver would make them overflow at the door.
                let post = self.client.post(body);
                tokio::pin!(post);
                loop {
                    tokio::select! {
                        r = &mut post => break r,
                        () = tokio::time::sleep(POLL) => {
                            self.batch.take_queued(&self.shared, false);
                        }
                    }
                }
            }
            Err(e) => Err(e),
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
        let client = Client::new(&shared.cfg.otlp_endpoint, shared.cfg.export_timeout)
            .map_err(TelemetryError::Exporter)?;
        let encoder = Encoder::new(&shared.resource, "abi", env!("CARGO_PKG_VERSION"));
        Ok(FlusherState {
            shared,
            client,
            encoder,
            failing: false,
            batch: Batch::default(),
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
        st.batch.take_queued(&st.shared, false);
        let full = st.batch.spans.len() >= st.shared.cfg.max_batch;
        let due = st
            .batch
            .since
            .is_some_and(|t| t.elapsed() >= st.shared.cfg.flush_interval);
        if full || due {
            st.export().await;
        } else {
            tokio::time::sleep(POLL.min(st.shared.cfg.flush_interval)).await;
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
        st.batch.take_queued(&st.shared, true);
        while !st.batch.spans.is_empty() {
            st.export().await;
            if st.failing {
                // The receiver is down: the rest would only wait out the same timeout.
                let n = st.batch.spans.len() as u64;
                st.shared.counters.dropped(EXPORT_FAILED).inc_by(n);
                st.batch.spans.clear();
            }
        }
        st.shared.counters.queued.set(0);
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
