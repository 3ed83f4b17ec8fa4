//! `gguf_parse`: the GGUF reader, every tensor view, every codec, and `harness inspect`.

use xval_engine::gguf::{self, GgmlType, GgufFile, GgufWriter, Value, ValueType};
use xval_engine::quant::{self, i2_s::I2sLayout};

use crate::filler;

/// One `gguf_parse` input: `gguf::parse` it and, when it parses, open it as a `GgufFile`, read
/// every tensor view and decode every tensor of a codec type (I2_S in both block layouts).
/// Errors are the expected outcome for most inputs; a panic, or a view that disagrees with its
/// descriptor, is a bug. Then renders it as `harness inspect` does (text and JSON). Returns the
/// number of tensors decoded when the input parses.
pub fn check_gguf(data: &[u8]) -> Option<usize> {
    let header = gguf::parse(data, "fuzz").ok()?;
    let file = GgufFile::from_bytes(data.to_vec(), "fuzz")
        .expect("parse accepted the bytes, GgufFile must too");
    assert_eq!(file.header().tensors, header.tensors);
    let mut decoded = 0;
    for view in file.tensors() {
        let info = view.info;
        assert_eq!(view.data.len() as u64, info.n_bytes, "{}", info.name);
        assert_eq!(info.ty.tensor_bytes(&info.shape), Ok(info.n_bytes));
        assert_eq!(file.tensor(&info.name).map(|v| v.info), Some(info));
        if !info.ty.has_codec() {
            continue;
        }
        // Bounded by the file: the densest codec (TQ1_0) keeps 256 elements in 54 bytes.
        let n = info.n_elements() as usize;
        if quant::dequantize(info.ty, view.data, n).is_ok() {
            decoded += 1;
        }
        if info.ty == GgmlType::I2_S {
            let mut out = vec![0f32; n];
            let _ = quant::i2_s::dequantize(view.data, &mut out, I2sLayout::Block64);
        }
    }
    // What `harness inspect` prints, text and JSON, from the same file.
    let _ = xval_harness::inspect::to_json(&file, true);
    xval_harness::inspect::render_text(&file, false, &mut std::io::sink())
        .expect("a sink accepts everything");
    let _ = xval_harness::inspect::TokenizerSummary::of(file.header()).effective_pre();
    Some(decoded)
}

/// Small synthetic GGUFs that reach the parts of the reader the repository's fixture files may
/// not: the bitnet.cpp dialect with I2_S, a zero-element tensor, a 64-byte alignment, nested and
/// empty arrays; a mainline file with MXFP4 and an inspect-only K-quant; a v2 header.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let ternary =
        |seed, n: usize| -> Vec<i8> { filler(seed, n).iter().map(|b| (b % 3) as i8 - 1).collect() };
    let values = |seed, n: usize| -> Vec<f32> {
        filler(seed, n)
            .iter()
            .map(|&b| (b as f32 - 128.0) / 64.0)
            .collect()
    };
    let mut bitnet = GgufWriter::new();
    let meta = [
        ("general.architecture", Value::String("bitnet-b1.58".into())),
        ("general.alignment", Value::U32(64)),
        ("bitnet-b1.58.block_count", Value::U32(1)),
        ("bitnet-b1.58.rope.freq_base", Value::F32(500000.0)),
        (
            "tokenizer.ggml.tokens",
            Value::strings(["<s>", "</s>", "\u{0120}a"]),
        ),
        ("tokenizer.ggml.scores", Value::f32s([0.0, -1.0, -2.5])),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ("test.empty", Value::Array(ValueType::I64, vec![])),
        (
            "test.nested",
            Value::Array(ValueType::Array, vec![Value::i32s([1, 2]), Value::i32s([])]),
        ),
    ];
    for (k, v) in meta {
        bitnet.set(k, v).expect("seed metadata");
    }
    let tensors: [(&str, GgmlType, &[u64]); 8] = [
        ("token_embd.weight", GgmlType::F16, &[64, 4]),
        ("blk.0.attn_q.weight", GgmlType::I2_S, &[128, 2]),
        ("blk.0.attn_k.weight", GgmlType::TQ2_0, &[256, 2]),
        ("blk.0.attn_v.weight", GgmlType::TQ1_0, &[256, 1]),
        ("blk.0.ffn_up.weight", GgmlType::Q8_0, &[64, 2]),
        ("blk.0.attn_norm.weight", GgmlType::F32, &[64]),
        ("blk.0.ffn_norm.weight", GgmlType::BF16, &[64]),
        ("blk.0.attn_q.scale", GgmlType::F32, &[0]),
    ];
    for (i, (name, ty, shape)) in tensors.into_iter().enumerate() {
        let n = shape.iter().product::<u64>() as usize;
        let data = if ty == GgmlType::I2_S {
            quant::i2_s::pack(&ternary(i as u64, n), 0.5, I2sLayout::Block128)
        } else {
            quant::quantize(ty, &values(i as u64, n))
        }
        .expect("seed tensor");
        bitnet
            .add_tensor(name, ty, shape, data)
            .expect("seed tensor");
    }

    let mut mainline = GgufWriter::new();
    mainline
        .set("general.architecture", Value::String("llama".into()))
        .expect("seed metadata");
    mainline
        .add_tensor("a", GgmlType::MXFP4, &[64], filler(10, 34))
        .expect("seed tensor");
    mainline
        .add_tensor("b", GgmlType::Q4_K, &[256], filler(11, 144))
        .expect("seed tensor");
    mainline
        .add_tensor("c", GgmlType::TQ2_0, &[256], filler(12, 66))
        .expect("seed tensor");

    let mut v2 = GgufWriter::new();
    v2.set("general.name", Value::String("v2".into()))
        .expect("seed metadata");
    let mut v2 = v2.to_bytes();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());

    vec![
        ("synthetic-bitnet.gguf".into(), bitnet.to_bytes()),
        ("synthetic-mainline.gguf".into(), mainline.to_bytes()),
        ("synthetic-v2.gguf".into(), v2),
    ]
}
