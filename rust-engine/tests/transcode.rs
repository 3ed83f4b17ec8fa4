//! The I2_S -> TQ2_0 transcode is lossless: dequantize both files and compare exactly.

use proptest::prelude::*;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use xval_engine::gguf::{GgmlType, GgufFile, GgufWriter, TypeDialect, Value};
use xval_engine::quant::{self, i2_s, tq2_0};
use xval_engine::transcode::{self, i2s_to_tq2_0, transcode_to_writer, PROVENANCE_KEY};

fn trits(rng: &mut Xoshiro256PlusPlus, n: usize) -> Vec<i8> {
    (0..n).map(|_| (rng.next_u32() % 3) as i8 - 1).collect()
}

/// An I2_S tensor image whose 28 trailing padding bytes hold garbage, as real files do.
fn i2s_image(t: &[i8], scale: f32, layout: i2_s::I2sLayout, junk: u8) -> Vec<u8> {
    let mut bytes = i2_s::pack(t, scale, layout).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 28..] {
        *b = junk;
    }
    bytes
}

/// A small bitnet-shaped file: I2_S projections, F32 norms, an F16 embedding.
fn i2s_model(seed: u64, layout: i2_s::I2sLayout) -> GgufWriter {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("bitnet".into()))
        .unwrap()
        .set("general.file_type", Value::U32(40))
        .unwrap()
        .set("bitnet.block_count", Value::U32(2))
        .unwrap()
        .set("tokenizer.ggml.tokens", Value::strings(["a", "b"]))
        .unwrap();
    let embd: Vec<f32> = (0..256 * 8)
        .map(|i| ((i % 17) as f32 - 8.0) / 64.0)
        .collect();
    w.add_tensor(
        "token_embd.weight",
        GgmlType::F16,
        &[256, 8],
        quant::quantize(GgmlType::F16, &embd).unwrap(),
    )
    .unwrap();
    for l in 0..2 {
        let norm: Vec<f32> = (0..256).map(|i| 1.0 + i as f32 / 1024.0).collect();
        w.add_tensor(
            format!("blk.{l}.attn_norm.weight"),
            GgmlType::F32,
            &[256],
            quant::quantize(GgmlType::F32, &norm).unwrap(),
        )
        .unwrap();
        for (tag, shape) in [("attn_q", [256u64, 4]), ("ffn_down", [512, 3])] {
            let n = (shape[0] * shape[1]) as usize;
            let t = trits(&mut rng, n);
            // Scales that are not representable in f16: a rounding d would show.
            let scale = 0.0123457 * (l + 1) as f32 + (rng.next_u32() % 1000) as f32 * 1e-7;
            w.add_tensor(
                format!("blk.{l}.{tag}.weight"),
                GgmlType::I2_S,
                &shape,
                i2s_image(&t, scale, layout, 0xA5),
            )
            .unwrap();
        }
    }
    w
}

fn open(w: &GgufWriter, label: &str) -> GgufFile {
    GgufFile::from_bytes(w.to_bytes(), label).unwrap()
}

/// Dequantize both files and compare every tensor exactly; check metadata and block scales.
fn assert_lossless(src: &GgufFile, dst: &GgufFile, layout: i2_s::I2sLayout) {
    assert_eq!(dst.header().dialect, TypeDialect::Mainline);
    for t in src.tensors() {
        let name = &t.info.name;
        let out = dst.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(out.info.shape, t.info.shape, "{name}");
        let n = t.info.n_elements() as usize;
        if t.info.ty != GgmlType::I2_S {
            assert_eq!(out.info.ty, t.info.ty, "{name}");
            assert_eq!(out.data, t.data, "{name} must be copied byte for byte");
            continue;
        }
        assert_eq!(out.info.ty, GgmlType::TQ2_0, "{name}");
        let scale_name = transcode::scale_tensor_name(name).unwrap();
        let s = dst.tensor(&scale_name).unwrap();
        assert_eq!(
            (s.info.ty, s.info.shape.as_slice()),
            (GgmlType::F32, &[1u64][..])
        );
        let s = f32::from_le_bytes(s.data.try_into().unwrap());
        assert_eq!(
            s.to_bits(),
            i2_s::scale(t.data, n).unwrap().to_bits(),
            "{name}"
        );
        for block in out.data.chunks_exact(tq2_0::BLOCK_BYTES) {
            assert_eq!(tq2_0::scale(block), 1.0, "{name}: d must be exactly 1.0");
        }
        let mut want = vec![0f32; n];
        i2_s::dequantize(t.data, &mut want, layout).unwrap();
        let got = quant::dequantize(GgmlType::TQ2_0, out.data, n).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                (g * s).to_bits(),
                w.to_bits(),
                "{name}[{i}]: {g} * {s} != {w}"
            );
        }
    }
    // Everything else is the source's, except the file type and the provenance note.
    for (key, value) in src.metadata() {
        let got = dst
            .get(key)
            .unwrap_or_else(|| panic!("metadata {key} missing"));
        if key == "general.file_type" {
            assert_eq!(got, &Value::U32(37));
        } else {
            assert_eq!(got, value, "{key}");
        }
    }
    assert!(dst.get(PROVENANCE_KEY).is_some());
    let extra = dst.header().tensors.len() - src.header().tensors.len();
    let i2s = src
        .tensors()
        .filter(|t| t.info.ty == GgmlType::I2_S)
        .count();
    assert_eq!(
        extra, i2s,
        "one .scale tensor per I2_S tensor, nothing else"
    );
}

#[test]
fn transcode_file_is_lossless() {
    let dir = tempfile::tempdir().unwrap();
    let (src_path, dst_path) = (dir.path().join("i2s.gguf"), dir.path().join("tq2.gguf"));
    i2s_model(7, i2_s::I2sLayout::Block128)
        .write_file(&src_path)
        .unwrap();
    let src = GgufFile::open(&src_path).unwrap();
    let report = i2s_to_tq2_0(&src, &dst_path).unwrap();
    assert_eq!(
        report.transcoded,
        [
            "blk.0.attn_q.weight",
            "blk.0.ffn_down.weight",
            "blk.1.attn_q.weight",
            "blk.1.ffn_down.weight"
        ]
    );
    assert_eq!(report.copied, 3);
    let dst = GgufFile::open(&dst_path).unwrap();
    assert_lossless(&src, &dst, i2_s::I2sLayout::Block128);
}

/// The oracle's scratch transcode (each tensor packed as it is written, no sync) writes the
/// same bytes as the durable one, and refuses what it refuses.
#[test]
fn scratch_transcode_writes_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let src_path = dir.path().join("i2s.gguf");
    i2s_model(7, i2_s::I2sLayout::Block128)
        .write_file(&src_path)
        .unwrap();
    let src = GgufFile::open(&src_path).unwrap();
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    let ra = i2s_to_tq2_0(&src, &a).unwrap();
    let rb = transcode::i2s_to_tq2_0_scratch(&src, &b).unwrap();
    assert_eq!(ra, rb);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let no_i2s = dir.path().join("c.gguf");
    let e = transcode::i2s_to_tq2_0_scratch(&GgufFile::open(&a).unwrap(), &no_i2s).unwrap_err();
    assert!(e.to_string().contains("no I2_S tensor"), "{e}");
    assert!(!no_i2s.exists(), "nothing written on an error");
}

#[test]
fn transcode_block64_layout_is_lossless() {
    let layout = i2_s::I2sLayout::Block64;
    let src = open(&i2s_model(11, layout), "i2s64.gguf");
    let (w, _) = transcode_to_writer(&src, layout).unwrap();
    assert_lossless(&src, &open(&w, "tq2.gguf"), layout);
}

fn one_tensor(name: &str, shape: &[u64], bytes: Vec<u8>, ty: GgmlType) -> GgufFile {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("bitnet".into()))
        .unwrap();
    w.add_tensor(name, ty, shape, bytes).unwrap();
    open(&w, "one.gguf")
}

fn err(src: &GgufFile) -> String {
    transcode_to_writer(src, i2_s::I2sLayout::Block128)
        .err()
        .expect("transcode must refuse")
        .to_string()
}

#[test]
fn transcode_refuses_what_it_cannot_keep_exact() {
    let t = vec![1i8; 256 * 2];
    let img = i2s_image(&t, 0.5, i2_s::I2sLayout::Block128, 0);
    // llama.cpp applies no .scale to the embedding: the scale would be lost.
    let e = err(&one_tensor(
        "token_embd.weight",
        &[256, 2],
        img.clone(),
        GgmlType::I2_S,
    ));
    assert!(
        e.contains("token_embd.weight") && e.contains("scale"),
        "{e}"
    );
    // Rows of 128 cannot be TQ2_0 blocks.
    let e = err(&one_tensor(
        "blk.0.attn_q.weight",
        &[128, 4],
        img.clone(),
        GgmlType::I2_S,
    ));
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("256"),
        "{e}"
    );
    // Nothing to do.
    let e = err(&one_tensor(
        "blk.0.attn_q.weight",
        &[256],
        vec![0; 1024],
        GgmlType::F32,
    ));
    assert!(e.contains("no I2_S"), "{e}");
    // Code 3 is corrupt data, never transcoded into some value.
    let mut bad = img.clone();
    bad[0] = 0xFF;
    let e = err(&one_tensor(
        "blk.0.attn_q.weight",
        &[256, 2],
        bad,
        GgmlType::I2_S,
    ));
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("code 3"),
        "{e}"
    );
    // A .scale already in the file would be overwritten or duplicated.
    let mut w = GgufWriter::new();
    w.add_tensor("blk.0.attn_q.weight", GgmlType::I2_S, &[256, 2], img)
        .unwrap();
    w.add_tensor(
        "blk.0.attn_q.scale",
        GgmlType::F32,
        &[1],
        1f32.to_le_bytes().to_vec(),
    )
    .unwrap();
    let e = err(&open(&w, "dup.gguf"));
    assert!(e.contains("blk.0.attn_q.scale"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn transcode_is_exact_for_any_codes_and_scale(
        seed in any::<u64>(),
        rows in 1u64..4,
        blocks in 1u64..3,
        scale in prop_oneof![1e-8f32..1e-3, 1e-3f32..10.0, Just(0.0f32)],
    ) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let shape = [256 * blocks, rows];
        let t = trits(&mut rng, (shape[0] * shape[1]) as usize);
        let img = i2s_image(&t, scale, i2_s::I2sLayout::Block128, seed as u8);
        let src = one_tensor("blk.3.ffn_gate.weight", &shape, img, GgmlType::I2_S);
        let (w, _) = transcode_to_writer(&src, i2_s::I2sLayout::Block128).unwrap();
        assert_lossless(&src, &open(&w, "tq2.gguf"), i2_s::I2sLayout::Block128);
    }
}

/// `ScaleTo::BlockD`: every weight becomes `trit * f16(scale)`, no `.scale` tensor is added, the
/// file type says TQ2_0 and everything else is copied.
#[test]
fn block_d_transcode_rounds_the_scale_to_f16_only() {
    let layout = i2_s::I2sLayout::Block128;
    let src = open(&i2s_model(5, layout), "i2s.gguf");
    let (w, report) =
        transcode::transcode_to_writer_with(&src, layout, transcode::ScaleTo::BlockD).unwrap();
    let dst = open(&w, "tq2d.gguf");
    assert_eq!(dst.get("general.file_type").unwrap(), &Value::U32(37));
    assert!(dst.tensors().all(|t| !t.info.name.ends_with(".scale")));
    assert_eq!(dst.tensors().count(), src.tensors().count());
    assert!(!report.transcoded.is_empty());
    for t in src.tensors() {
        let d = dst.tensor(&t.info.name).unwrap();
        assert_eq!(d.info.shape, t.info.shape);
        let n = t.info.n_elements() as usize;
        if t.info.ty != GgmlType::I2_S {
            assert_eq!(d.data, t.data);
            continue;
        }
        assert_eq!(d.info.ty, GgmlType::TQ2_0);
        let s = i2_s::scale(t.data, n).unwrap();
        let want_d = half::f16::from_f32(s).to_f32();
        assert_ne!(want_d, s, "the test scales are not f16 values");
        let codes = i2_s::trits(t.data, n, layout).unwrap();
        let got = quant::dequantize(GgmlType::TQ2_0, d.data, n).unwrap();
        for (j, (&c, &g)) in codes.iter().zip(&got).enumerate() {
            assert_eq!(g, c as f32 * want_d, "{} weight {j}", t.info.name);
        }
    }
}
