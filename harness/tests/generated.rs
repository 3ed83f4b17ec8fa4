//! Models generated at test time: the LLaMA-3-vocabulary fixture and the 2B-4T-shaped synth.

mod common;
use common::*;
use xval_engine::gguf::{GgmlType, GgufFile, Value};
use xval_harness::fixtures::{self, WeightFormat};

#[test]
fn llama3_fixture_has_the_full_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("llama3.gguf");
    fixtures::llama3_model(&fixtures_dir(), WeightFormat::I2S, Some("llama-bpe"))
        .unwrap()
        .write_file(&path)
        .unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.header().architecture(), Some("bitnet-b1.58"));
    let tokens = f.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
    assert_eq!(tokens.len(), 128_256);
    assert_eq!(
        f.get("tokenizer.ggml.bos_token_id").unwrap().as_u64(),
        Some(128_000)
    );
    assert_eq!(
        f.get("tokenizer.ggml.eos_token_id").unwrap().as_u64(),
        Some(128_001)
    );
    assert_eq!(tokens[128_000].as_str(), Some("<|begin_of_text|>"));
    assert_eq!(tokens[220].as_str(), Some("Ġ"));
    let types = f
        .get("tokenizer.ggml.token_type")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(types[127_999], Value::I32(1));
    assert_eq!(types[128_255], Value::I32(3));
    let merges = f.get("tokenizer.ggml.merges").unwrap().as_array().unwrap();
    assert_eq!(merges.len(), 280_147);
    assert_eq!(merges[0].as_str(), Some("Ġ Ġ"));
    assert_eq!(
        f.get("tokenizer.ggml.pre").and_then(Value::as_str),
        Some("llama-bpe")
    );
    assert_eq!(
        f.get("bitnet-b1.58.vocab_size").unwrap().as_u64(),
        Some(128_256)
    );
    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.info.shape, vec![256, 128_256]);
    assert_eq!(f.tensors().len(), 2 + 11);
}

#[test]
fn llama3_command_writes_a_default_pre_tokenizer_tq2_0_model() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("l3.gguf");
    let out = harness(&[
        "fixtures",
        "llama3",
        "--out",
        path_str(&path),
        "--pre",
        "default",
        "--format",
        "tq2_0",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.header().architecture(), Some("bitnet"));
    assert!(f.get("tokenizer.ggml.pre").is_none());
    assert_eq!(
        f.tensor("blk.0.attn_q.weight").unwrap().info.ty,
        GgmlType::TQ2_0
    );
    assert!(f.tensor("blk.0.attn_q.scale").is_some());
    assert_eq!(
        f.get("tokenizer.ggml.tokens")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        128_256
    );
}

#[test]
fn synth_one_layer_has_the_official_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("synth.gguf");
    let out = harness(&[
        "fixtures",
        "synth",
        "--shape",
        "2b-4t",
        "--format",
        "i2_s",
        "--layers",
        "1",
        "--out",
        path_str(&path),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let f = GgufFile::open(&path).unwrap();
    let h = f.header();
    assert_eq!(h.architecture(), Some("bitnet-b1.58"));
    let meta = |k: &str| {
        f.get(&format!("bitnet-b1.58.{k}"))
            .unwrap()
            .as_u64()
            .unwrap()
    };
    assert_eq!(meta("embedding_length"), 2560);
    assert_eq!(meta("feed_forward_length"), 6912);
    assert_eq!(meta("block_count"), 1);
    assert_eq!(meta("attention.head_count"), 20);
    assert_eq!(meta("attention.head_count_kv"), 5);
    assert_eq!(meta("rope.dimension_count"), 128);
    assert_eq!(meta("context_length"), 4096);
    assert_eq!(meta("vocab_size"), 128_256);
    assert!(f.get("tokenizer.ggml.pre").is_none());
    let shape = |n: &str| h.tensor_info(n).unwrap().shape.clone();
    assert_eq!(shape("token_embd.weight"), vec![2560, 128_256]);
    assert_eq!(shape("blk.0.attn_q.weight"), vec![2560, 2560]);
    assert_eq!(shape("blk.0.attn_k.weight"), vec![2560, 640]);
    assert_eq!(shape("blk.0.attn_v.weight"), vec![2560, 640]);
    assert_eq!(shape("blk.0.ffn_up.weight"), vec![2560, 6912]);
    assert_eq!(shape("blk.0.ffn_down.weight"), vec![6912, 2560]);
    assert_eq!(shape("blk.0.ffn_sub_norm.weight"), vec![6912]);
    assert_eq!(f.tensors().len(), 2 + 11);
    let down = f.tensor("blk.0.ffn_down.weight").unwrap();
    assert_eq!(down.info.ty, GgmlType::I2_S);
    // Every weight decodes (no code 3) in the official layout.
    let n = down.info.n_elements() as usize;
    xval_engine::quant::i2_s::trits(down.data, n, Default::default()).unwrap();
}
