//! A worker actor: owns one copy of the model and runs one job at a time on a blocking thread.
//! If a job panics, the worker answers that job's callers with `WorkerFailed` and then fails,
//! so that its pool restarts it with a freshly loaded model.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use abi_protocol::health::Report;
use abi_protocol::inference::{
    ChatCompletion, ChatFinished, ChatRequest, Embed, Embeddings, InferenceError,
};
use abi_runtime::ReplyTo;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::catalog::ModelSource;
use super::engine::Engine;
use super::lease::{self, DeviceLease, Placement};
use super::streams::Streams;

/// Work handed to a worker by its pool.
pub enum Job {
    /// A batch of embedding requests, answered each with its own vectors. The flag is a test
    /// hook: panic inside the blocking job, as a kernel bug would.
    Embed(
        Vec<(Embed, ReplyTo<Result<Embeddings, InferenceError>>)>,
        bool,
    ),
    /// A whole chat completion.
    Chat(ChatRequest, ReplyTo<Result<ChatCompletion, InferenceError>>),
    /// A streamed chat completion writing into `streams`.
    Stream {
        /// Stream id.
        id: u64,
        /// The request.
        req: ChatRequest,
        /// Set when the client went away.
        cancel: Arc<AtomicBool>,
        /// Where deltas go.
        streams: Streams,
    },
    /// A readiness probe doing real work.
    Health(ReplyTo<Report>),
}

/// Tells the pool a worker finished a job.
pub trait Notify: Send + Sync + 'static {
    /// Worker `index` is idle again.
    fn done(&self, index: usize);
}

/// Start arguments of a worker.
pub struct WorkerArgs {
    /// Model id (for messages).
    pub model: String,
    /// What to load.
    pub source: ModelSource,
    /// Position in the pool.
    pub index: usize,
    /// Where "done" goes.
    pub notify: Arc<dyn Notify>,
    /// Filled with the model's description once it is loaded.
    pub info: Arc<parking_lot::Mutex<Option<abi_protocol::inference::ModelInfo>>>,
    /// Completion tokens of this worker's model.
    pub generated_tokens: prometheus_client::metrics::counter::Counter,
    /// The device to run on and whom to lease it from.
    pub placement: Placement,
}

/// The worker actor.
pub struct Worker;

/// A worker's state: its model (absent only while a job holds it).
pub struct WorkerState {
    engine: Option<Engine>,
    generated_tokens: prometheus_client::metrics::counter::Counter,
    model: String,
    index: usize,
    notify: Arc<dyn Notify>,
    /// Held while the worker lives; released when its state is dropped.
    _lease: Option<DeviceLease>,
}

fn panic_message(e: &tokio::task::JoinError) -> String {
    if e.is_panic() {
        "worker panicked while running this request; it is being restarted".to_string()
    } else {
        "worker job was cancelled".to_string()
    }
}

impl Actor for Worker {
    type Msg = Job;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Job>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let lease = lease::acquire(&args.placement, args.source.weights_bytes()).await?;
        let source = args.source.clone();
        let device = args.placement.device;
        let engine = tokio::task::spawn_blocking(move || Engine::load(&source, &device.open()?))
            .await
            .map_err(|e| format!("loading panicked: {e}"))??;
        *args.info.lock() = Some(engine.info(&args.model));
        Ok(WorkerState {
            engine: Some(engine),
            generated_tokens: args.generated_tokens,
            model: args.model,
            index: args.index,
            notify: args.notify,
            _lease: lease,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Job>,
        job: Job,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(mut engine) = state.engine.take() else {
            return Err("worker has no engine (an earlier job panicked)".into());
        };
        let model = state.model.clone();
        let outcome = match job {
            Job::Embed(batch, poison) => {
                let (reqs, replies): (Vec<Embed>, Vec<_>) = batch.into_iter().unzip();
                let r = tokio::task::spawn_blocking(move || {
                    assert!(!poison, "injected worker crash");
                    let texts: Vec<&str> = reqs
                        .iter()
                        .flat_map(|r| r.inputs.iter().map(String::as_str))
                        .collect();
                    let counts: Vec<usize> = reqs.iter().map(|r| r.inputs.len()).collect();
                    let out = engine.embed(&model, &texts);
                    (engine, out, counts)
                })
                .await;
                match r {
                    Ok((engine, out, counts)) => {
                        state.engine = Some(engine);
                        split_embeddings(out, &counts, replies);
                        Ok(())
                    }
                    Err(e) => {
                        let msg = panic_message(&e);
                        for reply in replies {
                            reply.send(Err(InferenceError::WorkerFailed(msg.clone())));
                        }
                        Err(msg)
                    }
                }
            }
            Job::Chat(req, reply) => {
                let r = tokio::task::spawn_blocking(move || {
                    let out = engine.chat(&model, &req, |_| true);
                    (engine, out)
                })
                .await;
                match r {
                    Ok((engine, out)) => {
                        state.engine = Some(engine);
                        if let Ok(c) = &out {
                            state.generated_tokens.inc_by(c.completion_tokens);
                        }
                        reply.send(out);
                        Ok(())
                    }
                    Err(e) => {
                        let msg = panic_message(&e);
                        reply.send(Err(InferenceError::WorkerFailed(msg.clone())));
                        Err(msg)
                    }
                }
            }
            Job::Stream {
                id,
                req,
                cancel,
                streams,
            } => {
                let s2 = streams.clone();
                let r = tokio::task::spawn_blocking(move || {
                    let out = if cancel.load(Ordering::Relaxed) {
                        None
                    } else {
                        Some(engine.chat(&model, &req, |d| s2.push(id, d)))
                    };
                    (engine, out)
                })
                .await;
                match r {
                    Ok((engine, out)) => {
                        state.engine = Some(engine);
                        if let Some(out) = out {
                            if let Ok(c) = &out {
                                state.generated_tokens.inc_by(c.completion_tokens);
                            }
                            streams.finish(
                                id,
                                match out {
                                    Ok(c) => ChatFinished {
                                        outcome: Ok(c.finish_reason),
                                        prompt_tokens: c.prompt_tokens,
                                        completion_tokens: c.completion_tokens,
                                    },
                                    Err(e) => ChatFinished {
                                        outcome: Err(e),
                                        prompt_tokens: 0,
                                        completion_tokens: 0,
                                    },
                                },
                            );
                        }
                        Ok(())
                    }
                    Err(e) => {
                        let msg = panic_message(&e);
                        streams.finish(
                            id,
                            ChatFinished {
                                outcome: Err(InferenceError::WorkerFailed(msg.clone())),
                                prompt_tokens: 0,
                                completion_tokens: 0,
                            },
                        );
                        Err(msg)
                    }
                }
            }
            Job::Health(reply) => {
                let r = tokio::task::spawn_blocking(move || {
                    let report = engine.health();
                    (engine, report)
                })
                .await;
                match r {
                    Ok((engine, report)) => {
                        state.engine = Some(engine);
                        reply.send(report);
                        Ok(())
                    }
                    Err(e) => {
                        let msg = panic_message(&e);
                        reply.send(Report {
                            ready: false,
                            detail: msg.clone(),
                        });
                        Err(msg)
                    }
                }
            }
        };
        state.notify.done(state.index);
        outcome.map_err(|m| format!("worker {} of {}: {m}", state.index, state.model).into())
    }
}

fn split_embeddings(
    out: Result<Vec<crate::embed::Embedding>, InferenceError>,
    counts: &[usize],
    replies: Vec<ReplyTo<Result<Embeddings, InferenceError>>>,
) {
    match out {
        Ok(all) => {
            let mut rows = all.into_iter();
            for (n, reply) in counts.iter().zip(replies) {
                let mine: Vec<_> = rows.by_ref().take(*n).collect();
                reply.send(Ok(Embeddings {
                    prompt_tokens: mine.iter().map(|e| e.tokens as u64).sum(),
                    vectors: mine.into_iter().map(|e| e.vector).collect(),
                }));
            }
        }
        Err(e) => {
            for reply in replies {
                reply.send(Err(e.clone()));
            }
        }
    }
}
