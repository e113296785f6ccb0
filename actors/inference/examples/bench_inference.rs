//! Inference benchmark: prints figures and ratios against the anchors in
//! `shared/data/ANCHORS.md` (measured on the same kind of 2-core machine).
//!
//! `RAYON_NUM_THREADS=2 cargo run -p abi-inference --example bench_inference [MODELS_DIR] [DATA_DIR]`

use std::path::PathBuf;
use std::time::Instant;

use abi_inference::chat::{Backend, ChatEngine};
use abi_inference::embed::Embedder;
use candle_core::{DType, Device, Tensor};

/// sentence-transformers 6.2.0 on PyTorch CPU, 2 threads (ANCHORS.md).
const ST_BATCH1: f64 = 49.0;
const ST_BATCH32: f64 = 125.0;
const ST_SHORT_P50_MS: f64 = 15.5;
/// llama.cpp on the same GGUF, 2 threads (ANCHORS.md).
const LLAMA_CPP_PROMPT: f64 = 207.0;
const LLAMA_CPP_GEN: f64 = 77.0;

/// CPU seconds this process has used (user + system), from /proc/self/stat; the machine is
/// shared, so throughput per CPU-second (x threads) is reported next to wall-clock throughput.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `f` (doing `work` units) 3 times; returns the median wall rate and the rate per
/// CPU-second scaled by `threads` (what `threads` dedicated cores would give).
fn rate(work: f64, threads: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..3 {
        let (t, c) = (Instant::now(), cpu_seconds());
        f();
        wall.push(work / t.elapsed().as_secs_f64());
        cpu.push(work / ((cpu_seconds() - c).max(0.01) / threads as f64));
    }
    (median(wall), median(cpu))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let models = args
        .get(1)
        .map_or_else(|| PathBuf::from("models"), PathBuf::from);
    let data = args
        .get(2)
        .map_or_else(|| PathBuf::from("../shared/data/inference"), PathBuf::from);
    let threads = candle_core::utils::get_num_threads();
    println!(
        "threads: {threads} (rayon), avx2: {}",
        candle_core::utils::with_avx()
    );

    // ---- embeddings
    let texts: Vec<String> = std::fs::read_to_string(data.join("embed_dev_texts.jsonl"))?
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .map(|v| v["text"].as_str().unwrap_or("").to_string())
        })
        .collect::<Result<_, _>>()?;
    let strs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let e = Embedder::load(&models.join("all-minilm-l6-v2"), &Device::Cpu)?;
    e.embed(&strs[..8])?; // warm-up
    let t = Instant::now();
    e.tokenize(&strs)?;
    println!(
        "tokenizing the 200 dev sentences: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    for batch in [1usize, 32] {
        let (wall, cpu) = rate(strs.len() as f64, threads, || {
            for c in strs.chunks(batch) {
                e.embed(c).expect("embed");
            }
        });
        let anchor = if batch == 1 { ST_BATCH1 } else { ST_BATCH32 };
        println!(
            "embeddings batch {batch:>2}: {wall:7.1} sentences/s wall, {cpu:7.1} per {threads} CPU-s  (sentence-transformers {anchor}: {:.2}x wall, {:.2}x CPU-normalised)",
            wall / anchor,
            cpu / anchor
        );
    }
    let short = "The quick brown fox.";
    let lat: Vec<f64> = (0..50)
        .map(|_| {
            let t = Instant::now();
            e.embed(&[short]).expect("embed");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let p50 = median(lat);
    println!(
        "embedding one short sentence, engine only: p50 {p50:.2} ms  (sentence-transformers forward {ST_SHORT_P50_MS} ms: {:.2}x faster)",
        ST_SHORT_P50_MS / p50
    );
    // Stock candle BertModel, padded batch of 32, for the side-by-side figure.
    {
        use candle_transformers::models::bert::{BertModel, Config};
        let dir = models.join("all-minilm-l6-v2");
        let cfg: Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
        let weights = std::fs::read(dir.join("model.safetensors"))?;
        let vb = candle_nn::VarBuilder::from_slice_safetensors(&weights, DType::F32, &Device::Cpu)?;
        let bert = BertModel::load(vb, &cfg)?;
        let ids = e.tokenize(&strs)?;
        let (wall, cpu) = rate(strs.len() as f64, threads, || {
            for c in ids.chunks(32) {
                let len = c.iter().map(Vec::len).max().unwrap_or(1);
                let mut flat = Vec::new();
                let mut mask = Vec::new();
                for s in c {
                    flat.extend(
                        s.iter()
                            .copied()
                            .chain(std::iter::repeat_n(0, len - s.len())),
                    );
                    mask.extend((0..len).map(|i| u32::from(i < s.len())));
                }
                let ids_t = Tensor::from_vec(flat, (c.len(), len), &Device::Cpu).expect("ids");
                let mask_t = Tensor::from_vec(mask, (c.len(), len), &Device::Cpu).expect("mask");
                let tt = ids_t.zeros_like().expect("types");
                bert.forward(&ids_t, &tt, Some(&mask_t)).expect("forward");
            }
        });
        println!(
            "  stock candle BertModel, padded batch 32 (forward only): {wall:7.1} sentences/s wall, {cpu:7.1} CPU-normalised ({:.2}x / {:.2}x sentence-transformers)",
            wall / ST_BATCH32,
            cpu / ST_BATCH32
        );
    }

    // ---- chat
    let gguf = models.join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    // candle's stock quantized_llama is slow on a shared machine: opt in with ABI_BENCH_CANDLE=1.
    let mut backends = vec![Backend::Native];
    if std::env::var_os("ABI_BENCH_CANDLE").is_some() {
        backends.push(Backend::Candle);
    }
    for backend in backends {
        let mut c = ChatEngine::load_with(&gguf, &Device::Cpu, backend)?;
        let tok = c.tokenizer();
        let mut prompt =
            tok.encode(&"The history of the sea is long and full of stories. ".repeat(20))?;
        prompt.truncate(128);
        let model = c.model_mut();
        model.forward(&prompt[..8], 0)?; // warm-up
        let (pp, pp_cpu) = rate(prompt.len() as f64, threads, || {
            model.forward(&prompt, 0).expect("prefill");
        });
        let (g, g_cpu) = rate(128.0, threads, || {
            let mut logits = model.forward(&prompt[..16], 0).expect("prefill");
            for i in 0..128 {
                let id = abi_inference::chat::sampler::argmax(&logits);
                logits = model.forward(&[id], 16 + i).expect("step");
            }
        });
        println!(
            "chat {backend:?}: prompt {pp:6.1} tokens/s wall, {pp_cpu:6.1} CPU-normalised ({:.2}x / {:.2}x llama.cpp); generation {g:5.1} tokens/s wall, {g_cpu:5.1} CPU-normalised ({:.2}x / {:.2}x llama.cpp)",
            pp / LLAMA_CPP_PROMPT,
            pp_cpu / LLAMA_CPP_PROMPT,
            g / LLAMA_CPP_GEN,
            g_cpu / LLAMA_CPP_GEN
        );
    }
    Ok(())
}
