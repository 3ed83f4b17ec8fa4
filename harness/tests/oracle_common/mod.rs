//! A tiny, well-conditioned `bitnet` model built in the test with `GgufWriter`, in several
//! weight formats, for the oracle tests (until the committed fixtures are used instead).
//!
//! Shapes are the smallest that TQ1_0/TQ2_0 allow (rows of 256): n_embd 256, 4 heads of 64
//! with 2 KV heads (grouped-query attention is exercised), n_ff 512, 2 layers. Each ternary
//! projection is scaled by about `1/sqrt(2/3 * fan_in)` so activations keep unit variance;
//! embeddings are small and norms near 1 (design.md, "Fixtures"). No transcendental functions.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use half::f16;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use xval_engine::gguf::{GgmlType, GgufWriter, Value};
use xval_engine::quant::{self, i2_s, tq2_0};

pub const N_EMBD: u64 = 256;
pub const N_HEAD: u32 = 4;
pub const N_HEAD_KV: u32 = 2;
pub const N_FF: u64 = 512;
pub const N_LAYER: usize = 2;

/// How the seven projections of each block are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// TQ2_0 with d = the tensor's scale (rounded to f16), no `.scale` tensors.
    Tq2,
    /// TQ1_0 with d = the tensor's scale (rounded to f16), no `.scale` tensors.
    Tq1,
    /// TQ2_0 with d = 1.0 plus one-element `.scale` tensors: what the I2_S transcode writes.
    Tq2Scaled,
    /// bitnet.cpp's I2_S with its per-tensor scale (the oracle must transcode it).
    I2s,
}

/// The vocabulary: SentencePiece-style (`tokenizer.ggml.model = llama`), `<unk>`, `<s>`,
/// `</s>`, the 256 byte tokens, then a few word pieces.
pub const WORDS: [&str; 12] = [
    "▁", "▁the", "▁a", "▁hello", "▁world", "▁is", "e", "t", "h", "l", "o", "▁he",
];

pub fn n_vocab() -> usize {
    3 + 256 + WORDS.len()
}

fn vocab(w: &mut GgufWriter) {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32, 0.0, 0.0];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (i, word) in WORDS.iter().enumerate() {
        tokens.push(word.to_string());
        types.push(1);
        // Longer pieces win SentencePiece merges.
        scores.push(-(i as f32) / 16.0 + word.chars().count() as f32);
    }
    w.set("tokenizer.ggml.model", Value::String("llama".into()))
        .unwrap()
        .set("tokenizer.ggml.tokens", Value::strings(tokens))
        .unwrap()
        .set("tokenizer.ggml.scores", Value::f32s(scores))
        .unwrap()
        .set("tokenizer.ggml.token_type", Value::i32s(types))
        .unwrap()
        .set("tokenizer.ggml.bos_token_id", Value::U32(1))
        .unwrap()
        .set("tokenizer.ggml.eos_token_id", Value::U32(2))
        .unwrap()
        .set("tokenizer.ggml.unknown_token_id", Value::U32(0))
        .unwrap();
}

/// Uniform in [-1, 1), from 24 random bits.
fn uniform(rng: &mut Xoshiro256PlusPlus) -> f32 {
    (rng.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    quant::quantize(GgmlType::F32, v).unwrap()
}

fn add_projection(
    w: &mut GgufWriter,
    rng: &mut Xoshiro256PlusPlus,
    weights: Weights,
    name: &str,
    shape: [u64; 2],
) {
    let n = (shape[0] * shape[1]) as usize;
    let trits: Vec<i8> = (0..n).map(|_| (rng.next_u32() % 3) as i8 - 1).collect();
    // ~1/sqrt(2/3 * fan_in), perturbed per tensor so that scales differ.
    let scale = (1.0 / (2.0 / 3.0 * shape[0] as f32).sqrt()) * (1.0 + uniform(rng) / 8.0);
    let values: Vec<f32> = trits.iter().map(|&t| t as f32 * scale).collect();
    let weight = format!("{name}.weight");
    match weights {
        Weights::Tq2 => w
            .add_tensor(
                weight,
                GgmlType::TQ2_0,
                &shape,
                quant::quantize(GgmlType::TQ2_0, &values).unwrap(),
            )
            .map(drop)
            .unwrap(),
        Weights::Tq1 => w
            .add_tensor(
                weight,
                GgmlType::TQ1_0,
                &shape,
                quant::quantize(GgmlType::TQ1_0, &values).unwrap(),
            )
            .map(drop)
            .unwrap(),
        Weights::Tq2Scaled => {
            let mut packed = Vec::new();
            for block in trits.chunks_exact(tq2_0::BLOCK) {
                tq2_0::pack_block(block, f16::ONE, &mut packed);
            }
            w.add_tensor(weight, GgmlType::TQ2_0, &shape, packed)
                .unwrap();
            w.add_tensor(
                format!("{name}.scale"),
                GgmlType::F32,
                &[1],
                f32_bytes(&[scale]),
            )
            .unwrap();
        }
        Weights::I2s => {
            let img = i2_s::pack(&trits, scale, i2_s::I2sLayout::Block128).unwrap();
            w.add_tensor(weight, GgmlType::I2_S, &shape, img).unwrap();
        }
    }
}

fn norm(w: &mut GgufWriter, rng: &mut Xoshiro256PlusPlus, name: &str, len: u64) {
    let v: Vec<f32> = (0..len).map(|_| 1.0 + uniform(rng) / 16.0).collect();
    w.add_tensor(name, GgmlType::F32, &[len], f32_bytes(&v))
        .unwrap();
}

/// Build the model. The same seed gives the same ternary codes and scales in every format.
pub fn tiny_bitnet(weights: Weights, seed: u64, arch: &str) -> GgufWriter {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String(arch.into()))
        .unwrap()
        .set("general.name", Value::String("xval tiny bitnet".into()))
        .unwrap();
    let k = |s: &str| format!("{arch}.{s}");
    w.set(k("context_length"), Value::U32(512))
        .unwrap()
        .set(k("embedding_length"), Value::U32(N_EMBD as u32))
        .unwrap()
        .set(k("block_count"), Value::U32(N_LAYER as u32))
        .unwrap()
        .set(k("feed_forward_length"), Value::U32(N_FF as u32))
        .unwrap()
        .set(k("attention.head_count"), Value::U32(N_HEAD))
        .unwrap()
        .set(k("attention.head_count_kv"), Value::U32(N_HEAD_KV))
        .unwrap()
        .set(k("attention.layer_norm_rms_epsilon"), Value::F32(1e-5))
        .unwrap()
        .set(k("rope.freq_base"), Value::F32(10000.0))
        .unwrap();
    vocab(&mut w);

    let n_vocab = n_vocab() as u64;
    let embd: Vec<f32> = (0..N_EMBD * n_vocab)
        .map(|_| uniform(&mut rng) / 4.0)
        .collect();
    w.add_tensor(
        "token_embd.weight",
        GgmlType::F16,
        &[N_EMBD, n_vocab],
        quant::quantize(GgmlType::F16, &embd).unwrap(),
    )
    .unwrap();
    norm(&mut w, &mut rng, "output_norm.weight", N_EMBD);
    let kv = N_EMBD / N_HEAD as u64 * N_HEAD_KV as u64;
    for l in 0..N_LAYER {
        let b = |s: &str| format!("blk.{l}.{s}");
        norm(&mut w, &mut rng, &b("attn_norm.weight"), N_EMBD);
        norm(&mut w, &mut rng, &b("attn_sub_norm.weight"), N_EMBD);
        norm(&mut w, &mut rng, &b("ffn_norm.weight"), N_EMBD);
        norm(&mut w, &mut rng, &b("ffn_sub_norm.weight"), N_FF);
        for (tag, shape) in [
            ("attn_q", [N_EMBD, N_EMBD]),
            ("attn_k", [N_EMBD, kv]),
            ("attn_v", [N_EMBD, kv]),
            ("attn_output", [N_EMBD, N_EMBD]),
            ("ffn_gate", [N_EMBD, N_FF]),
            ("ffn_up", [N_EMBD, N_FF]),
            ("ffn_down", [N_FF, N_EMBD]),
        ] {
            add_projection(&mut w, &mut rng, weights, &b(tag), shape);
        }
    }
    w
}

/// Write the model into `dir` and return its path.
pub fn write_model(dir: &Path, weights: Weights, seed: u64) -> PathBuf {
    let path = dir.join(format!("tiny-{weights:?}-{seed}.gguf").to_lowercase());
    tiny_bitnet(weights, seed, "bitnet")
        .write_file(&path)
        .unwrap();
    path
}
