//! all-MiniLM-L6-v2 against sentence-transformers' reference embeddings (shared/data/inference).

mod common;

use abi_inference::embed::{Embedder, Pooling};
use candle_core::Device;

fn embedder() -> Embedder {
    Embedder::load(&common::model("all-minilm-l6-v2"), &Device::Cpu).expect("model loads")
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v["input_ids"]
        .as_array()
        .expect("input_ids array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn reads_sentence_transformers_recipe() {
    let e = embedder();
    let c = e.sentence_config();
    assert_eq!(c.pooling, Pooling::Mean);
    assert!(c.normalize);
    assert_eq!(c.max_seq_length, 256);
    assert_eq!(e.dim(), 384);
}

#[test]
fn dev_set_matches_reference() {
    let e = embedder();
    let texts = common::read_jsonl("embed_dev_texts.jsonl");
    let tokens = common::read_jsonl("embed_dev_tokens.jsonl");
    let reference = common::read_f32_rows("embed_dev.f32", 384);
    assert_eq!(texts.len(), 200);
    let strs: Vec<&str> = texts
        .iter()
        .map(|t| t["text"].as_str().expect("text"))
        .collect();
    let ids = e.tokenize(&strs).expect("tokenize");
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(ids[i], ids_of(t), "token ids of {}", t["id"]);
    }
    // One batch of everything and batches of 32: results must not depend on batching.
    let all = e.embed(&strs).expect("embed");
    let mut worst = f32::MAX;
    for (i, (got, want)) in all.iter().zip(&reference).enumerate() {
        let c = common::cosine(&got.vector, want);
        assert!(c >= 0.999, "{}: cosine {c}", texts[i]["id"]);
        worst = worst.min(c);
    }
    for (chunk, want) in strs.chunks(32).zip(reference.chunks(32)) {
        for (got, want) in e.embed(chunk).expect("embed").iter().zip(want) {
            assert!(common::cosine(&got.vector, want) >= 0.999);
        }
    }
    eprintln!("dev: min cosine {worst}");
}

#[test]
fn edge_cases_match_reference_and_truncate() {
    let e = embedder();
    let edge = common::read_jsonl("embed_edge_texts.jsonl");
    let reference = common::read_f32_rows("embed_edge.f32", 384);
    assert_eq!(edge.len(), reference.len());
    let strs: Vec<&str> = edge
        .iter()
        .map(|t| t["text"].as_str().expect("text"))
        .collect();
    let got = e.embed(&strs).expect("embed");
    for (i, row) in edge.iter().enumerate() {
        let want_ids = ids_of(row);
        assert_eq!(
            e.tokenize(&[strs[i]]).expect("tokenize")[0],
            want_ids,
            "{}",
            row["id"]
        );
        assert_eq!(got[i].tokens, want_ids.len());
        assert!(got[i].tokens <= 256);
        let c = common::cosine(&got[i].vector, &reference[i]);
        assert!(c >= 0.999, "{}: cosine {c}", row["id"]);
        let norm: f32 = got[i].vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised");
    }
}

#[test]
fn missing_weights_is_a_load_error_naming_the_file() {
    let tmp = std::env::temp_dir().join(format!("abi-inf-missing-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let src = common::model("all-minilm-l6-v2");
    std::fs::copy(src.join("config.json"), tmp.join("config.json")).expect("copy");
    let err = Embedder::load(&tmp, &Device::Cpu).err().expect("must fail");
    let msg = err.to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");
    std::fs::write(tmp.join("model.safetensors"), b"not a safetensors file").expect("write");
    let msg = Embedder::load(&tmp, &Device::Cpu)
        .err()
        .expect("must fail")
        .to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");
    std::fs::remove_dir_all(&tmp).ok();
}

/// The padded batched attention (what GPUs run) gives the per-sequence attention's results.
#[test]
fn padded_attention_matches_per_sequence() {
    let mut e = embedder();
    let texts = common::read_jsonl("embed_dev_texts.jsonl");
    let strs: Vec<&str> = texts[..48]
        .iter()
        .map(|t| t["text"].as_str().expect("text"))
        .collect();
    let per_sequence = e.embed(&strs).expect("embed");
    e.set_padded_attention(true);
    let padded = e.embed(&strs).expect("embed");
    for (a, b) in per_sequence.iter().zip(&padded) {
        assert_eq!(a.tokens, b.tokens);
        let c = common::cosine(&a.vector, &b.vector);
        assert!(c > 0.99999, "cosine {c}");
    }
}
