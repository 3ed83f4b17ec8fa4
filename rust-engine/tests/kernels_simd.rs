//! Every SIMD kernel set this target has (AVX2 on x86-64, NEON on aarch64, run under qemu by
//! scripts/neon.sh) against the scalar reference through the matmul and the forward pass: bit
//! for bit for the ternary dots, on random shapes, every token count up to 9, the edge cases
//! (all -1, all 0, all +1 weights; activations quantized to +127 and -128), and committed
//! models. `kernels_x86.rs` checks the x86 entry points and float dots directly.
#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]

use proptest::prelude::*;
use xval_engine::gguf::GgmlType;
use xval_engine::numerics::{Numerics, Profile};
use xval_engine::quant::i2_s::{self, I2sLayout};
use xval_engine::quant::kernels::Kernel;
use xval_engine::quant::matmul::{matmul_twin, TwinRounding, WeightMatrix};
use xval_engine::quant::{tq1_0, tq2_0};

/// The SIMD set this target's parity tests check.
fn simd() -> Kernel {
    if cfg!(target_arch = "x86_64") {
        Kernel::Avx2
    } else {
        Kernel::Neon
    }
}

#[test]
fn this_machine_runs_the_simd_kernels() {
    // The parity tests below would prove nothing where the set does not run: say so loudly.
    assert!(
        simd().available(),
        "{} is not available here: the SIMD parity tests cannot run",
        simd()
    );
}

/// A TQ2_0 row of `trits` with per-block scales `d`.
fn tq2_row(trits: &[i8], d: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, &s) in trits.chunks_exact(256).zip(d) {
        tq2_0::pack_block(t, half::f16::from_f32(s), &mut out);
    }
    out
}

/// `matmul_twin` of `n` rows `x` by the scalar reference and by the SIMD set, as bit patterns.
fn both(w: &WeightMatrix, x: &[f32], n: usize, profile: Profile, i16_sums: bool) -> [Vec<u32>; 2] {
    [Kernel::Scalar, simd()].map(|kernel| {
        let rounding = TwinRounding {
            flip: &|r| r == 1,
            f32_sums: false,
            i16_sums,
            kernel,
        };
        matmul_twin(w, x, n, Numerics::new(profile), rounding)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    })
}

/// A weight matrix's bytes: `m` rows of `k` ternary weights as TQ2_0 or TQ1_0 (block scales
/// `d`) or I2_S (the 128-weight layout with its trailer).
fn weights(ty: GgmlType, trits: &[i8], d: &[f32], m: usize) -> Vec<u8> {
    let k = trits.len() / m;
    match ty {
        GgmlType::TQ2_0 => trits
            .chunks_exact(k)
            .zip(d.chunks_exact(k / 256))
            .flat_map(|(t, d)| tq2_row(t, d))
            .collect(),
        GgmlType::TQ1_0 => {
            let mut out = Vec::new();
            for (t, &s) in trits.chunks_exact(256).zip(d) {
                tq1_0::pack_block(t, half::f16::from_f32(s), &mut out);
            }
            out
        }
        _ => i2_s::pack(trits, 0.75, I2sLayout::Block128).unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The batched path (each chunk of codes unpacked once for up to four tokens) through
    /// `matmul` for every token count up to 9 (one, two, three full groups of four and every
    /// remainder), both quantizing profiles, and the self-test's 16-bit wrap: bit-identical to
    /// the scalar reference.
    #[test]
    fn batched_ternary_matmul_with_simd_equals_scalar_bit_for_bit(
        (blocks, m, n, trits, d, x) in (1usize..=12, 1usize..=40, 1usize..=9).prop_flat_map(
            |(blocks, m, n)| (
                Just(blocks),
                Just(m),
                Just(n),
                proptest::collection::vec(-1i8..=1, blocks * 256 * m),
                proptest::collection::vec(0.001f32..4.0, blocks * m),
                proptest::collection::vec(-8.0f32..8.0, blocks * 256 * n),
            )
        )
    ) {
        let k = blocks * 256;
        for ty in [GgmlType::TQ2_0, GgmlType::TQ1_0, GgmlType::I2_S] {
            let data = weights(ty, &trits, &d, m);
            let w = WeightMatrix::new("w", ty, k, m, &data, I2sLayout::Block128).unwrap();
            for profile in [Profile::Ggml, Profile::BitnetCpp] {
                for i16_sums in [false, true] {
                    let [s, v] = both(&w, &x, n, profile, i16_sums);
                    prop_assert_eq!(s, v, "{} {:?} i16 {}", ty, profile, i16_sums);
                }
            }
        }
    }
}

/// Rows of 128-weight I2_S chunks that do not fill a 256-weight block (K = 384) under
/// bitnet.cpp's int8 activations, several tokens at once; eleven rows: one group of eight by
/// the fused kernel, three by the per-row one.
#[test]
fn batched_i2s_with_a_trailing_half_block_equals_scalar() {
    let (k, m, n) = (384, 11, 6);
    let trits: Vec<i8> = (0..k * m)
        .map(|i| ((i * 7 + i / 5) % 3) as i8 - 1)
        .collect();
    let data = weights(GgmlType::I2_S, &trits, &[], m);
    let w = WeightMatrix::new("w", GgmlType::I2_S, k, m, &data, I2sLayout::Block128).unwrap();
    let x: Vec<f32> = (0..k * n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    let [s, v] = both(&w, &x, n, Profile::BitnetCpp, false);
    assert_eq!(s, v);
}

/// The extremes, K up to 16384: weights all -1, all 0, all +1 and alternating; activations all
/// equal (quantized to -128 by Q8_K, whose scale takes the sign of the largest value, and to
/// +127 by bitnet.cpp's int8 rows) and alternating +-1 (every product at its largest magnitude,
/// both signs); one, four and five tokens; nine rows (eight by the fused kernel, one alone).
#[test]
fn ternary_simd_equals_scalar_on_the_edges() {
    for k in [256usize, 512, 16384] {
        let m = 9;
        let alternating = |i: usize| if i % 2 == 0 { 1i8 } else { -1 };
        let weight_rows: [Vec<i8>; 4] = [
            vec![-1; k * m],
            vec![0; k * m],
            vec![1; k * m],
            (0..k * m).map(alternating).collect(),
        ];
        for trits in &weight_rows {
            for n in [1usize, 4, 5] {
                for x in [
                    vec![1.0f32; k * n],
                    (0..k * n).map(|i| alternating(i) as f32).collect(),
                ] {
                    for ty in [GgmlType::TQ2_0, GgmlType::TQ1_0, GgmlType::I2_S] {
                        let data = weights(ty, trits, &vec![1.0; k / 256 * m], m);
                        let w =
                            WeightMatrix::new("w", ty, k, m, &data, I2sLayout::Block128).unwrap();
                        for profile in [Profile::Ggml, Profile::BitnetCpp] {
                            let [s, v] = both(&w, &x, n, profile, false);
                            assert_eq!(s, v, "k {k} n {n} {ty} {profile:?}");
                        }
                    }
                }
            }
        }
    }
}
/// The engine with the SIMD set on committed I2_S and TQ2_0 models under both quantizing
/// profiles: every tap and logit of the prompt and of decode steps bit-identical to scalar
/// (their F16 lm_head included: the AVX2 float dots sum in another f64 order, and on these
/// models that changes no f32 result).
#[test]
fn the_engine_with_simd_kernels_is_bit_identical_to_scalar() {
    use std::sync::Arc;
    use xval_engine::gguf::GgufFile;
    use xval_engine::model::{Engine, Model};
    use xval_engine::taps::TapFilter;

    for (fixture, profile) in [
        ("models/bitnet-i2_s.gguf", Profile::BitnetCpp),
        ("trained/bitnet-b1.58-i2_s.gguf", Profile::BitnetCpp),
        ("trained/bitnet-b1.58-i2_s.gguf", Profile::Ggml),
        ("models/bitnet-tq2_0.gguf", Profile::Ggml),
        ("trained/bitnet-tq2_0.gguf", Profile::Ggml),
        ("trained/bitnet-tq2_0.gguf", Profile::BitnetCpp),
        ("trained/bitnet-i2_s.gguf", Profile::F32),
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures")
            .join(fixture);
        let file = Arc::new(GgufFile::open(&path).unwrap());
        let run = |kernel: Kernel| {
            let model = Model::load(Arc::clone(&file), I2sLayout::Block128).unwrap();
            let engine = Engine::new(model, Numerics::new(profile), 2)
                .unwrap()
                .with_kernel(kernel)
                .unwrap();
            let mut cache = engine.new_cache();
            let all = TapFilter::all();
            let mut out = vec![engine
                .forward(&mut cache, &[381, 84, 104, 101, 32], &all)
                .unwrap()];
            for t in [99u32, 97, 116] {
                out.push(engine.forward(&mut cache, &[t], &all).unwrap());
            }
            out
        };
        let (s, v) = (run(Kernel::Scalar), run(simd()));
        for (a, b) in s.iter().zip(&v) {
            assert_eq!(a.logits, b.logits, "{fixture} {profile:?}");
            assert_eq!(a.taps.len(), b.taps.len());
            for (x, y) in a.taps.iter().zip(&b.taps) {
                assert_eq!(x.data, y.data, "{fixture}: {}", x.name);
            }
        }
    }
}

/// TQ1_0 rows of arbitrary bytes (every value 0-255 in every digit position, not only the 243
/// a packer writes: a self-test misread or a damaged file can hold any) through the eight-row
/// kernel and the scalar reference: bit-identical, both profiles, one and five tokens.
#[test]
fn tq1_0_simd_equals_scalar_on_every_byte_value() {
    // 259 rows of two blocks: byte `i` of row `r` is `(r + 37 i + 101 b) % 256`, so every value
    // shows up in each of the 52 code positions of both blocks (and 3 rows are left to the
    // per-row path).
    let (k, m) = (512, 259);
    let mut data = Vec::new();
    for r in 0..m {
        for b in 0..k / 256 {
            for i in 0..tq1_0::QS_BYTES + tq1_0::QH_BYTES {
                data.push(((r + i * 37 + b * 101) % 256) as u8);
            }
            data.extend_from_slice(&half::f16::from_f32(0.5 + (r % 8) as f32 / 8.0).to_le_bytes());
        }
    }
    let w = WeightMatrix::new("w", GgmlType::TQ1_0, k, m, &data, I2sLayout::Block128).unwrap();
    for n in [1usize, 5] {
        let x: Vec<f32> = (0..k * n)
            .map(|i| ((i * 53 % 211) as f32 - 105.0) / 9.0)
            .collect();
        for profile in [Profile::Ggml, Profile::BitnetCpp] {
            let [s, v] = both(&w, &x, n, profile, false);
            assert_eq!(s, v, "n {n} {profile:?}");
        }
    }
}
