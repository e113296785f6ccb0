//! The models on a CUDA device (`device = "cuda:0"`): the same correctness criteria as on the
//! CPU, and a pool serving both models there. Built only with the `cuda` feature and run on a
//! machine with an NVIDIA GPU (`scripts/cuda-check.sh`); CI has none.
#![cfg(feature = "cuda")]

mod common;

use std::time::{Duration, Instant};

use abi_inference::chat::{Backend, ChatEngine};
use abi_inference::embed::Embedder;
use abi_inference::pool::{PoolConfig, PoolDecl};
use abi_protocol::inference::{ChatMessage, ChatRequest, Embed};
use abi_runtime::{Node, NodeId, Strategy, SupervisorSpec};
use candle_core::Device;

fn cuda() -> Device {
    Device::new_cuda(0).expect("CUDA device 0 (driver and libraries present)")
}

#[test]
fn embeddings_on_cuda_match_reference() {
    let mut e = Embedder::load(&common::model("all-minilm-l6-v2"), &cuda()).expect("model loads");
    let mut worst = f32::MAX;
    for (texts, refs) in [
        ("embed_dev_texts.jsonl", "embed_dev.f32"),
        ("embed_edge_texts.jsonl", "embed_edge.f32"),
    ] {
        let rows = common::read_jsonl(texts);
        let reference = common::read_f32_rows(refs, 384);
        let strs: Vec<&str> = rows
            .iter()
            .map(|t| t["text"].as_str().expect("text"))
            .collect();
        for (i, (got, want)) in e
            .embed(&strs)
            .expect("embed")
            .iter()
            .zip(&reference)
            .enumerate()
        {
            let c = common::cosine(&got.vector, want);
            assert!(c >= 0.999, "{texts} row {i}: cosine {c}");
            worst = worst.min(c);
        }
    }
    // Throughput on the GPU, for the note (not asserted): batched padded attention (the GPU
    // default) and one attention per sequence (the CPU's).
    let rows = common::read_jsonl("embed_dev_texts.jsonl");
    let strs: Vec<&str> = rows
        .iter()
        .map(|t| t["text"].as_str().unwrap_or(""))
        .collect();
    for padded in [true, false] {
        e.set_padded_attention(padded);
        e.embed(&strs).expect("warm-up");
        for batch in [1usize, 32, 200] {
            let t = Instant::now();
            for _ in 0..3 {
                for c in strs.chunks(batch) {
                    e.embed(c).expect("embed");
                }
            }
            let rate = (3 * strs.len()) as f64 / t.elapsed().as_secs_f64();
            eprintln!(
                "cuda embeddings (padded attention: {padded}) batch {batch}: {rate:.0} sentences/s"
            );
        }
    }
    eprintln!("cuda embeddings: min cosine {worst}");
}

/// Prompt and generation speed of `model`: (prompt tokens/s over 128, generated tokens/s).
fn chat_speed(model: &mut dyn abi_inference::chat::CausalLm) -> (f64, f64) {
    let prompt: Vec<u32> = (0..128).map(|i| 1000 + i).collect();
    model.forward(&prompt, 0).expect("warm-up");
    let t = Instant::now();
    model.forward(&prompt, 0).expect("prefill");
    let pp = 128.0 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..128 {
        model.forward(&[1000 + i], 128 + i as usize).expect("step");
    }
    (pp, 128.0 / t.elapsed().as_secs_f64())
}

#[test]
fn chat_on_cuda_teacher_forced() {
    let path = common::model("smollm2-135m-instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    // Loading on CUDA selects candle's dequantize-and-multiply kernels (f32 activations).
    let mut e = ChatEngine::load(&path, &cuda()).expect("gguf loads on cuda");
    let (refs, shared) = (common::llm_reference(), common::llm_shared_reference());
    let (total, agree, max_diff) = common::teacher_forced(e.model_mut(), &refs, &shared);
    let (pp, tg) = chat_speed(e.model_mut());
    eprintln!(
        "cuda (f32 activations): top-1 agrees on {agree}/{total} steps, max |dlogit| {max_diff:.3}; prompt {pp:.0} tokens/s, generation {tg:.0} tokens/s"
    );
    // For comparison (not asserted): candle's MMVQ/MMQ kernels, which quantize activations to
    // Q8_1 as llama.cpp's CUDA backend does.
    candle_core::quantized::cuda::set_force_dmmv(false);
    let (total, agree, max_diff) =
        common::compare_teacher_forced(e.model_mut(), &refs, &shared, false);
    let (pp, tg) = chat_speed(e.model_mut());
    eprintln!(
        "cuda (Q8_1 activations): top-1 agrees on {agree}/{total} steps, max |dlogit| {max_diff:.3}; prompt {pp:.0} tokens/s, generation {tg:.0} tokens/s"
    );
    candle_core::quantized::cuda::set_force_dmmv(true);
    // The CPU-only native backend refuses the GPU.
    assert!(ChatEngine::load_with(&path, &cuda(), Backend::Native).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_serve_both_models_on_cuda() {
    let models = common::models_dir();
    let pool = |name: &str, model: std::path::PathBuf| PoolDecl {
        name: name.into(),
        model,
        config: PoolConfig {
            device: "cuda:0".into(),
            ..PoolConfig::default()
        },
    };
    let spec = abi_inference::child_spec(
        std::env::temp_dir().join("abi-cuda-no-extra-models"),
        vec![
            pool("minilm", models.join("all-minilm-l6-v2")),
            pool(
                "smol",
                models.join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"),
            ),
        ],
    );
    let node = Node::new(NodeId::new("n1").expect("node id"), 1);
    let root = node
        .start_root(SupervisorSpec::new(Strategy::OneForOne).child(spec))
        .await
        .expect("root starts");
    let t = Duration::from_secs(60);
    let emb = node.path("inference/minilm").expect("path");
    let v = node
        .ask(
            &emb,
            Embed {
                inputs: vec!["A GPU runs this.".into()],
            },
            t,
        )
        .await
        .expect("ask")
        .expect("embeds on cuda");
    assert_eq!(v.vectors[0].len(), 384);
    let chat = node.path("inference/smol").expect("path");
    let c = node
        .ask(
            &chat,
            abi_protocol::inference::Chat(ChatRequest {
                messages: vec![ChatMessage {
                    role: "user".into(),
                    content: "What is the capital of France?".into(),
                }],
                max_tokens: Some(8),
                temperature: 0.0,
                top_p: 1.0,
                seed: None,
                stop: Vec::new(),
                logprobs: None,
            }),
            t,
        )
        .await
        .expect("ask")
        .expect("chats on cuda");
    assert!(c.completion_tokens > 0, "{c:?}");
    eprintln!("cuda pool chat: {:?}", c.text);
    root.shutdown(Duration::from_secs(10)).await;
}
