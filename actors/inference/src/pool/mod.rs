//! Inference pools as supervised actors: `inference` (a supervisor) with one pool per model at
//! `inference/<model-id>`, each pool supervising its worker actors.

pub mod actor;
pub mod catalog;
pub mod config;
pub mod engine;
pub mod lease;
pub mod metrics;
pub mod streams;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use abi_protocol::health::Check;
use abi_protocol::inference::{Chat, ChatCancel, ChatOpen, ChatPoll, Describe, Embed};
use abi_runtime::{ChildSpec, Restart, Started, Strategy, SupervisorSpec};

pub use actor::{Pool, PoolArgs, PoolMsg};
pub use catalog::{ModelEntry, ModelSource, scan};
pub use config::PoolConfig;

/// The child spec of one model's pool (name = model id).
pub fn pool_spec(entry: ModelEntry, config: PoolConfig) -> ChildSpec {
    let name = entry.id.clone();
    ChildSpec::worker(name, move |ctx| {
        let args = PoolArgs {
            metrics: metrics::InferenceMetrics::of(&ctx.node).pool(&entry.id),
            entry: entry.clone(),
            config: config.clone(),
            node: Some(ctx.node.clone()),
        };
        async move {
            let r = ctx.spawn(Pool, args).await?;
            ctx.node.register_health_check(ctx.path.clone());
            Ok(Started::new(r)
                .serves::<Embed>()
                .serves::<Chat>()
                .serves::<ChatOpen>()
                .serves::<ChatPoll>()
                .serves::<ChatCancel>()
                .serves::<Describe>()
                .serves::<Check>())
        }
    })
    .restart(Restart::Permanent)
    .shutdown(Duration::from_secs(10))
}

/// A pool the topology declares: API name, model files (folder or `.gguf`), sizing.
#[derive(Debug, Clone)]
pub struct PoolDecl {
    /// Model id in the API (the pool's path is `inference/<name>`).
    pub name: String,
    /// The model folder or `.gguf` file.
    pub model: PathBuf,
    /// Sizing and batching.
    pub config: PoolConfig,
}

/// The `inference` supervisor: one pool per declared model in `pools`, plus one for every
/// other folder of `models_dir` (a folder = a model id, default sizing). A pool whose model
/// cannot be loaded, or whose config is invalid, still starts and reports itself unavailable.
pub fn child_spec(models_dir: impl Into<PathBuf>, pools: Vec<PoolDecl>) -> ChildSpec {
    let models_dir = models_dir.into();
    let mut spec = SupervisorSpec::new(Strategy::OneForOne);
    let declared: HashMap<&str, &PoolDecl> = pools.iter().map(|p| (p.name.as_str(), p)).collect();
    for p in &pools {
        let source = match p.config.validate() {
            Ok(()) => catalog::classify(&p.model),
            Err(reason) => ModelSource::Unrecognised {
                dir: p.model.clone(),
                reason,
            },
        };
        let mut config = p.config.clone();
        config.workers = config.workers.max(1);
        spec = spec.child(pool_spec(
            ModelEntry {
                id: p.name.clone(),
                source,
            },
            config,
        ));
    }
    for entry in scan(&models_dir) {
        if !declared.contains_key(entry.id.as_str()) {
            spec = spec.child(pool_spec(entry, PoolConfig::default()));
        }
    }
    ChildSpec::supervisor(abi_protocol::paths::INFERENCE, spec)
}

#[cfg(test)]
mod tests;
