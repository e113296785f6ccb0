//! Pools on a real node (abi-runtime) with the real model files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use abi_protocol::NodeId;
use abi_protocol::health::Check;
use abi_protocol::inference::{
    Chat, ChatCancel, ChatMessage, ChatOpen, ChatPoll, ChatRequest, Describe, Embed, FinishReason,
    InferenceError, ModelKind,
};
use abi_runtime::{ChildSpec, Node, RootHandle, Started, Strategy, SupervisorSpec};
use ractor::ActorRef;

use super::*;

const T: Duration = Duration::from_secs(120);
const MINILM: &str = "all-minilm-l6-v2";
const SMOL: &str = "smollm2-135m-instruct";

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("ABI_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    assert!(
        dir.join(MINILM).is_dir() && dir.join(SMOL).is_dir(),
        "{} lacks the models: run scripts/fetch-models.sh",
        dir.display()
    );
    dir
}

async fn start(spec: ChildSpec) -> (Node, RootHandle) {
    let node = Node::new(NodeId::new("n1").expect("node id"), 1);
    let root = node
        .start_root(SupervisorSpec::new(Strategy::OneForOne).child(spec))
        .await
        .expect("root starts");
    (node, root)
}

fn user(text: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: text.into(),
        }],
        max_tokens: Some(max_tokens),
        temperature: 0.0,
        top_p: 1.0,
        seed: None,
        stop: Vec::new(),
        logprobs: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_embeddings_chat_and_streams() {
    let (node, root) = start(child_spec(models_dir(), Vec::new())).await;
    let emb = node.path(&format!("inference/{MINILM}")).expect("path");
    let chat = node.path(&format!("inference/{SMOL}")).expect("path");
    assert!(node.health_checks().contains(&emb) && node.health_checks().contains(&chat));
    for p in [&emb, &chat] {
        let r = node.ask(p, Check, T).await.expect("ask");
        assert!(r.ready, "{}", r.detail);
    }
    let info = node.ask(&emb, Describe, T).await.expect("ask");
    assert_eq!((info.kind, info.dim), (ModelKind::Embedding, Some(384)));
    let info = node.ask(&chat, Describe, T).await.expect("ask");
    assert_eq!(info.kind, ModelKind::Chat);

    let out = node
        .ask(
            &emb,
            Embed {
                inputs: vec!["a cat".into(), "a kitten".into()],
            },
            T,
        )
        .await
        .expect("ask")
        .expect("embed");
    assert_eq!(out.vectors.len(), 2);
    assert_eq!(out.vectors[0].len(), 384);
    assert!(out.prompt_tokens >= 6);
    let wrong = node
        .ask(
            &chat,
            Embed {
                inputs: vec!["x".into()],
            },
            T,
        )
        .await
        .expect("ask");
    assert!(matches!(wrong, Err(InferenceError::WrongKind { .. })));
    let empty = node
        .ask(&emb, Embed { inputs: vec![] }, T)
        .await
        .expect("ask");
    assert!(matches!(empty, Err(InferenceError::InvalidInput(_))));

    let whole = node
        .ask(&chat, Chat(user("Name three colours.", 12)), T)
        .await
        .expect("ask")
        .expect("chat");
    assert!(!whole.text.is_empty());
    assert_eq!(whole.completion_tokens, 12);
    assert_eq!(whole.finish_reason, FinishReason::Length);

    // Streamed, greedy: the deltas add up to the same text.
    let id = node
        .ask(&chat, ChatOpen(user("Name three colours.", 12)), T)
        .await
        .expect("ask")
        .expect("open");
    let mut text = String::new();
    let finished = loop {
        let c = node
            .ask(&chat, ChatPoll { stream: id }, T)
            .await
            .expect("ask")
            .expect("poll");
        text.extend(c.deltas.iter().map(|d| d.text.as_str()));
        if let Some(f) = c.finished {
            break f;
        }
    };
    assert_eq!(text, whole.text);
    assert_eq!(finished.outcome, Ok(FinishReason::Length));
    assert_eq!(finished.completion_tokens, 12);
    let gone = node
        .ask(&chat, ChatPoll { stream: id }, T)
        .await
        .expect("ask");
    assert_eq!(gone, Err(InferenceError::UnknownStream(id)));

    // Cancelled mid-way: the stream disappears and the worker is free for the next request.
    let id = node
        .ask(&chat, ChatOpen(user("Write a long story.", 2000)), T)
        .await
        .expect("ask")
        .expect("open");
    let first = node
        .ask(&chat, ChatPoll { stream: id }, T)
        .await
        .expect("ask")
        .expect("poll");
    assert!(first.finished.is_none());
    node.tell(&chat, ChatCancel { stream: id }).expect("tell");
    let after = node
        .ask(&chat, Chat(user("Say hi.", 3)), Duration::from_secs(30))
        .await
        .expect("worker freed by the cancel")
        .expect("chat");
    assert_eq!(after.completion_tokens, 3);
    root.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_concurrent_embeddings_and_rejects_when_full() {
    let dir = models_dir();
    let pools = vec![
        PoolDecl {
            name: MINILM.to_string(),
            model: dir.join(MINILM),
            config: PoolConfig {
                max_batch: 8,
                ..PoolConfig::default()
            },
        },
        PoolDecl {
            name: "smol".to_string(),
            model: dir.join(SMOL).join("SmolLM2-135M-Instruct.Q4_1.gguf"),
            config: PoolConfig {
                queue_capacity: 1,
                ..PoolConfig::default()
            },
        },
    ];
    let (node, root) = start(child_spec(dir, pools)).await;
    let emb = node.path(&format!("inference/{MINILM}")).expect("path");
    let texts: Vec<String> = (0..20)
        .map(|i| format!("sentence number {i} about cats"))
        .collect();
    let alone = node
        .ask(
            &emb,
            Embed {
                inputs: texts.clone(),
            },
            T,
        )
        .await
        .expect("ask")
        .expect("embed");
    let asks = texts.iter().map(|t| {
        node.ask(
            &emb,
            Embed {
                inputs: vec![t.clone()],
            },
            T,
        )
    });
    let each = futures_join(asks).await;
    for (i, r) in each.into_iter().enumerate() {
        let v = r.expect("ask").expect("embed");
        let dot: f32 = v.vectors[0]
            .iter()
            .zip(&alone.vectors[i])
            .map(|(a, b)| a * b)
            .sum();
        assert!(dot > 0.9999, "input {i}: batched result differs ({dot})");
    }
    // Chat pool: one worker, queue of one: of four concurrent requests, the third and fourth
    // find the queue full.
    let chat = node.path("inference/smol").expect("path");
    let asks = (0..4).map(|_| node.ask(&chat, Chat(user("Tell me about the sea.", 24)), T));
    let results = futures_join(asks).await;
    let overloaded = results
        .iter()
        .filter(|r| matches!(r, Ok(Err(InferenceError::Overloaded { .. }))))
        .count();
    let ok = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!((ok, overloaded), (2, 2), "{results:?}");
    root.shutdown(Duration::from_secs(10)).await;
}

/// Runs futures concurrently on this task (no spawned tasks), in order.
async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut fs: Vec<_> = fs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = fs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in fs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_panic_fails_its_request_and_is_restarted() {
    let entry = scan(&models_dir())
        .into_iter()
        .find(|e| e.id == MINILM)
        .expect("minilm found");
    let captured: Arc<parking_lot::Mutex<Option<ActorRef<PoolMsg>>>> = Arc::default();
    let cap = captured.clone();
    let spec = ChildSpec::worker(MINILM, move |ctx| {
        let args = PoolArgs {
            entry: entry.clone(),
            config: PoolConfig::default(),
            metrics: crate::pool::metrics::PoolMetrics::detached(),
            node: None,
        };
        let cap = cap.clone();
        async move {
            let r = ctx.spawn(Pool, args).await?;
            *cap.lock() = Some(r.clone());
            Ok(Started::new(r).serves::<Embed>().serves::<Check>())
        }
    });
    let (node, root) = start(ChildSpec::supervisor(
        "inference",
        SupervisorSpec::new(Strategy::OneForOne).child(spec),
    ))
    .await;
    let emb = node.path(&format!("inference/{MINILM}")).expect("path");
    let pool = captured.lock().clone().expect("pool started");
    pool.send_message(PoolMsg::PoisonNextEmbed).expect("send");
    let failed = node
        .ask(
            &emb,
            Embed {
                inputs: vec!["boom".into()],
            },
            T,
        )
        .await
        .expect("ask");
    assert!(
        matches!(failed, Err(InferenceError::WorkerFailed(_))),
        "{failed:?}"
    );
    let ok = node
        .ask(
            &emb,
            Embed {
                inputs: vec!["fine".into()],
            },
            T,
        )
        .await
        .expect("ask");
    assert_eq!(ok.expect("restarted worker serves").vectors[0].len(), 384);
    assert!(node.ask(&emb, Check, T).await.expect("ask").ready);
    root.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_models_are_unhealthy_and_the_node_keeps_running() {
    let dir = std::env::temp_dir().join(format!("abi-broken-models-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bad-bert")).expect("mkdir");
    std::fs::create_dir_all(dir.join("bad-llm")).expect("mkdir");
    std::fs::create_dir_all(dir.join("nothing")).expect("mkdir");
    std::fs::write(dir.join("bad-bert/config.json"), "{ not json").expect("write");
    std::fs::write(dir.join("bad-llm/x.gguf"), b"GGUF but truncated").expect("write");
    let gpu = PoolDecl {
        name: "on-gpu".into(),
        model: dir.join("bad-bert"),
        config: PoolConfig {
            device: "cuda:0".into(),
            ..PoolConfig::default()
        },
    };
    let (node, root) = start(child_spec(&dir, vec![gpu])).await;
    let mut cases = vec![
        ("bad-bert", "config.json"),
        ("bad-llm", "x.gguf"),
        ("nothing", "nothing"),
    ];
    if !cfg!(feature = "cuda") {
        // A CPU-only build names the device it cannot run.
        cases.push(("on-gpu", "cuda:0"));
    }
    for (id, needle) in cases {
        let p = node.path(&format!("inference/{id}")).expect("path");
        let r = node.ask(&p, Check, T).await.expect("pool answers");
        assert!(!r.ready);
        assert!(r.detail.contains(needle), "{id}: {}", r.detail);
        let e = node
            .ask(
                &p,
                Embed {
                    inputs: vec!["x".into()],
                },
                T,
            )
            .await
            .expect("ask");
        assert!(
            matches!(e, Err(InferenceError::Unavailable { .. })),
            "{e:?}"
        );
    }
    root.shutdown(Duration::from_secs(10)).await;
    std::fs::remove_dir_all(&dir).ok();
}
