//! The node handle: identity, registry, and location-transparent `ask`/`tell`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use abi_protocol::{ActorPath, NodeId, PathError, Request, codec};
use futures::future::BoxFuture;
use parking_lot::RwLock;

use crate::deadline::Reaper;
use crate::events::EventLog;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::reply::NoReply;
use crate::supervisor::{RootHandle, SupervisorRef, SupervisorSpec};
use crate::{AskError, Call, Remote, ReplyTo, StartError};

/// Asks per actor of which one is timed into `abi_actor_request_duration_seconds`.
const STATS_SAMPLE: u64 = 8;

/// Cheap-clone handle to the local node, given to every actor.
///
/// `ask` and `tell` take an [`ActorPath`]: a path on this node goes straight
/// into the actor's mailbox (no serialisation); any other node goes through
/// the [`Remote`] installed by the transport. Callers never know which.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    incarnation: u64,
    registry: Registry,
    remote: OnceLock<Arc<dyn Remote>>,
    supervisors: RwLock<HashMap<String, SupervisorRef>>,
    health_checks: RwLock<Vec<ActorPath>>,
    events: EventLog,
    metrics: Metrics,
    reaper: Reaper,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .field("incarnation", &self.inner.incarnation)
            .finish()
    }
}

impl Node {
    /// A node with the given identity and incarnation (its current life).
    pub fn new(id: NodeId, incarnation: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                incarnation,
                registry: Registry::default(),
                remote: OnceLock::new(),
                supervisors: RwLock::new(HashMap::new()),
                health_checks: RwLock::new(Vec::new()),
                events: EventLog::new(1024),
                metrics: Metrics::new(),
                reaper: Reaper::default(),
            }),
        }
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// The path of a local actor, e.g. `node.path("vector/docs")`.
    pub fn path(&self, name: &str) -> Result<ActorPath, PathError> {
        ActorPath::new(self.inner.id.clone(), self.inner.incarnation, name)
    }

    /// The path of this node's root supervisor.
    pub fn root_path(&self) -> ActorPath {
        ActorPath::root(self.inner.id.clone(), self.inner.incarnation)
    }

    /// The local registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The supervision event log.
    pub fn events(&self) -> &EventLog {
        &self.inner.events
    }

    /// The node's Prometheus registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Installs the transport used for other nodes' paths. Only the first call wins.
    pub fn set_remote(&self, remote: Arc<dyn Remote>) -> bool {
        self.inner.remote.set(remote).is_ok()
    }

    /// Starts the root supervisor of this node with `spec`.
    pub async fn start_root(&self, spec: SupervisorSpec) -> Result<RootHandle, StartError> {
        crate::supervisor::start_root(self.clone(), spec).await
    }

    /// A local supervisor by path (for dynamic children: `start_child`, `terminate_child`).
    pub fn supervisor(&self, path: &ActorPath) -> Option<SupervisorRef> {
        if path.node != self.inner.id {
            return None;
        }
        self.inner.supervisors.read().get(&path.name).cloned()
    }

    pub(crate) fn add_supervisor(&self, sup: SupervisorRef) {
        self.inner
            .supervisors
            .write()
            .insert(sup.path().name.clone(), sup);
    }

    pub(crate) fn remove_supervisor(&self, name: &str, id: ractor::ActorId) {
        let mut sups = self.inner.supervisors.write();
        if sups.get(name).is_some_and(|s| s.id() == id) {
            sups.remove(name);
        }
    }

    /// Declares that `/ready` must ask `path` for a [`abi_protocol::health::Check`].
    pub fn register_health_check(&self, path: ActorPath) {
        let mut checks = self.inner.health_checks.write();
        if !checks.contains(&path) {
            checks.push(path);
        }
    }

    /// Paths that take part in readiness.
    pub fn health_checks(&self) -> Vec<ActorPath> {
        self.inner.health_checks.read().clone()
    }

    fn stats<'m>(
        &self,
        mailbox: &'m crate::registry::Mailbox,
        name: &str,
    ) -> &'m crate::metrics::ActorStats {
        mailbox.stats.get_or_init(|| {
            self.inner
                .metrics
                .actor_stats(&format!("{}/{name}", self.inner.id))
        })
    }

    fn check_incarnation(&self, to: &ActorPath) -> Result<(), AskError> {
        if to.incarnation != 0 && to.incarnation != self.inner.incarnation {
            return Err(AskError::StaleIncarnation {
                path: to.to_string(),
                wanted: to.incarnation,
                current: self.inner.incarnation,
            });
        }
        Ok(())
    }

    fn remote(&self, to: &ActorPath) -> Result<&Arc<dyn Remote>, AskError> {
        self.inner
            .remote
            .get()
            .ok_or_else(|| AskError::PeerUnreachable {
                node: to.node.to_string(),
                reason: "no transport configured on this node".into(),
            })
    }

    /// Sends `req` to the actor at `to` and waits at most `timeout` for its reply.
    ///
    /// A local actor may answer some reads in the caller's task
    /// ([`crate::registry::DirectRead`]); everything else is queued in its mailbox.
    ///
    /// # Errors
    /// [`AskError::Timeout`] when no reply came in time (the request may still
    /// run), `NoSuchActor`, `ActorStopped` (also when the actor died while
    /// handling it), `PeerUnreachable`, `StaleIncarnation`, `Unsupported`.
    pub async fn ask<R: Request>(
        &self,
        to: &ActorPath,
        req: R,
        timeout: Duration,
    ) -> Result<R::Reply, AskError> {
        let started = Instant::now();
        let deadline = deadline_after(started, timeout);
        // Telemetry off or no traced request: no span. Otherwise a message's
        // span is current while it is sent, so the handler runs inside it
        // (ractor propagates it) and a remote envelope carries its traceparent.
        // The remote and direct-read waits are boxed: inline, their state (a codec
        // future, a timer) would make every local ask's future several times larger,
        // and moving it costs more than the allocation they take.
        if to.node != self.inner.id {
            let span = crate::trace::message_span(to, R::TYPE, true);
            return self.ask_remote(to, req, deadline, span).await;
        }
        self.check_incarnation(to)?;
        let routed = self.inner.registry.with(&to.name, |mailbox| {
            let mailbox = mailbox.ok_or_else(|| AskError::NoSuchActor(to.to_string()))?;
            let mut req = req;
            if let Some(read) = mailbox.direct::<R>() {
                match read(req) {
                    Ok(fut) => {
                        self.stats(mailbox, &to.name).messages.inc();
                        // A traced direct read runs inside a span of its own: the trace
                        // shows the actor that answered, as if the message had been queued.
                        let path = mailbox.path_text.get_or_init(|| to.to_string().into());
                        let span = crate::trace::child_span_shared(path, R::TYPE);
                        return Ok(Routed::Direct(fut, span));
                    }
                    Err(declined) => req = declined,
                }
            }
            let route = mailbox.local::<R>().ok_or_else(|| AskError::Unsupported {
                path: to.to_string(),
                type_name: R::TYPE.to_string(),
            })?;
            let (tx, rx) = crate::reply::channel();
            let call = Call::new(req, ReplyTo::new(Some(tx), deadline));
            let span = crate::trace::message_span(to, R::TYPE, false);
            let sent = match &span {
                Some(s) => s.in_scope(|| route(call)),
                None => route(call),
            };
            sent.map_err(|()| AskError::ActorStopped(to.to_string()))?;
            let stats = self.stats(mailbox, &to.name);
            // One ask in STATS_SAMPLE is timed: a clock read and a histogram update
            // on every ask would cost as much as the rest of the ask path. It is timed
            // from the clock read that set the deadline, so it reads the clock once more.
            let timed = stats.messages.inc().is_multiple_of(STATS_SAMPLE);
            Ok(Routed::Queued(
                rx,
                timed.then(|| stats.request_duration.clone()),
                span,
            ))
        })?;
        let (rx, stats, span) = match routed {
            Routed::Direct(fut, span) => {
                let mut fut = match span {
                    Some(span) => span.instrument(fut),
                    None => fut,
                };
                // Most direct reads finish on their first poll: no timer for those.
                if let std::task::Poll::Ready(reply) = futures::poll!(&mut fut) {
                    return Ok(reply);
                }
                return wait_direct(fut, to, deadline, timeout).await;
            }
            Routed::Queued(rx, stats, span) => (rx, stats, span),
        };
        self.inner.reaper.register(deadline, rx.expiry());
        let result = match rx.await {
            Ok(reply) => {
                if let Some(histogram) = stats {
                    histogram.observe(started.elapsed().as_secs_f64());
                }
                Ok(reply)
            }
            Err(NoReply::Dropped) => Err(AskError::ActorStopped(to.to_string())),
            Err(NoReply::Expired) => Err(AskError::Timeout {
                path: to.to_string(),
                timeout_ms: timeout.as_millis() as u64,
            }),
        };
        drop(span);
        result
    }

    /// An ask of another node's actor, through the transport.
    fn ask_remote<R: Request>(
        &self,
        to: &ActorPath,
        req: R,
        deadline: Instant,
        span: Option<tracing::Span>,
    ) -> BoxFuture<'static, Result<R::Reply, AskError>> {
        let sent = (|| {
            let remote = self.remote(to)?.clone();
            let payload =
                codec::encode(R::TYPE, &req).map_err(|e| AskError::Codec(e.to_string()))?;
            Ok(match &span {
                Some(s) => s.in_scope(|| remote.ask_raw(to.clone(), R::TYPE, payload, deadline)),
                None => remote.ask_raw(to.clone(), R::TYPE, payload, deadline),
            })
        })();
        Box::pin(async move {
            let bytes = sent?.await?;
            drop(span);
            codec::decode(R::TYPE, &bytes).map_err(|e| AskError::Codec(e.to_string()))
        })
    }

    /// Sends `msg` to the actor at `to` without waiting for an answer.
    pub fn tell<R: Request>(&self, to: &ActorPath, msg: R) -> Result<(), AskError> {
        if to.node != self.inner.id {
            let payload =
                codec::encode(R::TYPE, &msg).map_err(|e| AskError::Codec(e.to_string()))?;
            let remote = self.remote(to)?;
            return match crate::trace::message_span(to, R::TYPE, true) {
                Some(s) => s.in_scope(|| remote.tell_raw(to.clone(), R::TYPE, payload)),
                None => remote.tell_raw(to.clone(), R::TYPE, payload),
            };
        }
        self.check_incarnation(to)?;
        let mailbox = self
            .inner
            .registry
            .get(&to.name)
            .ok_or_else(|| AskError::NoSuchActor(to.to_string()))?;
        let route = mailbox.local::<R>().ok_or_else(|| AskError::Unsupported {
            path: to.to_string(),
            type_name: R::TYPE.to_string(),
        })?;
        // `tell` has no deadline; a far one keeps `Call::deadline` meaningful.
        let deadline = Instant::now() + Duration::from_secs(3600);
        let call = Call::new(msg, ReplyTo::new(None, deadline));
        match crate::trace::message_span(to, R::TYPE, false) {
            Some(s) => s.in_scope(|| route(call)),
            None => route(call),
        }
        .map_err(|()| AskError::ActorStopped(to.to_string()))?;
        self.stats(&mailbox, &to.name).messages.inc();
        Ok(())
    }

    /// Delivers an encoded message that arrived from another node to a local
    /// actor; resolves to the encoded reply (empty when `want_reply` is false).
    pub fn deliver_raw(
        &self,
        to: &ActorPath,
        type_name: &str,
        payload: &[u8],
        deadline: Instant,
        want_reply: bool,
    ) -> BoxFuture<'static, Result<Vec<u8>, AskError>> {
        let started = (|| {
            if to.node != self.inner.id {
                return Err(AskError::NoSuchActor(to.to_string()));
            }
            self.check_incarnation(to)?;
            let mailbox = self
                .inner
                .registry
                .get(&to.name)
                .ok_or_else(|| AskError::NoSuchActor(to.to_string()))?;
            let route = mailbox
                .wire(type_name)
                .ok_or_else(|| AskError::Unsupported {
                    path: to.to_string(),
                    type_name: type_name.to_string(),
                })?;
            let fut = route(payload, deadline, want_reply)?;
            self.stats(&mailbox, &to.name).messages.inc();
            Ok(fut)
        })();
        let path = to.to_string();
        let timeout_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        match started {
            Ok(fut) => Box::pin(async move {
                fut.await.map_err(|e| match e {
                    // The wire route only knows the actor id; name the path.
                    AskError::ActorStopped(_) => AskError::ActorStopped(path),
                    AskError::Timeout { .. } => AskError::Timeout { path, timeout_ms },
                    other => other,
                })
            }),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

/// Waits for a direct read that did not finish on its first poll, under the ask's
/// deadline (boxed: the timer's state is large, see [`Node::ask`]).
fn wait_direct<T: Send + 'static>(
    fut: BoxFuture<'static, T>,
    to: &ActorPath,
    deadline: Instant,
    timeout: Duration,
) -> BoxFuture<'static, Result<T, AskError>> {
    let path = to.clone();
    Box::pin(async move {
        tokio::time::timeout_at(deadline.into(), fut)
            .await
            .map_err(|_| AskError::Timeout {
                path: path.to_string(),
                timeout_ms: timeout.as_millis() as u64,
            })
    })
}

/// The instant `timeout` after `now`; a timeout longer than the clock can hold waits a
/// century.
fn deadline_after(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// How a local ask was delivered.
enum Routed<T> {
    /// Answered by the actor's direct read, in the caller's task (in its span, when traced).
    Direct(
        futures::future::BoxFuture<'static, T>,
        Option<crate::trace::ChildSpan>,
    ),
    /// Queued in the mailbox; the reply comes in the slot (with the histogram to time it,
    /// when this ask is sampled, and the message's span, when it is traced).
    Queued(
        crate::reply::Receiver<T>,
        Option<prometheus_client::metrics::histogram::Histogram>,
        Option<tracing::Span>,
    ),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_never_early_and_any_timeout_is_taken() {
        let before = Instant::now();
        let d = deadline_after(before, Duration::from_millis(250));
        assert_eq!(d, before + Duration::from_millis(250));
        // A caller's "forever" (e.g. u64::MAX ms from a request) must not overflow the clock.
        let far = deadline_after(before, Duration::MAX);
        assert!(far > before + Duration::from_secs(50 * 365 * 86_400));
    }
}
