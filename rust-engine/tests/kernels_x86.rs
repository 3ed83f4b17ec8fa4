//! The x86 kernels' own entry points against their scalar references: the AVX2 ternary dots bit
//! for bit on random rows and activations of every length the format allows (whole 128-weight
//! I2_S blocks, K up to 16384) and the edge cases (all -1, all +1, all 0, activations at +127
//! and -128); the AVX2 float dots within their stated bound. `kernels_simd.rs` checks every
//! SIMD set through the matmul and the forward pass.
#![cfg(target_arch = "x86_64")]

use proptest::prelude::*;
use xval_engine::quant::i2_s::{self, I2sLayout};
use xval_engine::quant::kernels::x86;
use xval_engine::quant::q8_k::{self, BlockQ8K};
use xval_engine::quant::tq2_0;

/// Q8_K blocks of `x` (ggml's activation quantizer).
fn q8k(x: &[f32]) -> Vec<BlockQ8K> {
    let mut out = Vec::new();
    q8_k::quantize_row(x, &mut out).unwrap();
    out
}

/// A TQ2_0 row of `trits` with per-block scales `d`.
fn tq2_row(trits: &[i8], d: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, &s) in trits.chunks_exact(256).zip(d) {
        tq2_0::pack_block(t, half::f16::from_f32(s), &mut out);
    }
    out
}

/// Pack ternary weights into an I2_S row (codes only, no trailer).
fn row_i2s(trits: &[i8]) -> Vec<u8> {
    row(trits)
}

/// Pack ternary weights into an I2_S row (codes only, no trailer).
fn row(trits: &[i8]) -> Vec<u8> {
    let packed = i2_s::pack(trits, 1.0, I2sLayout::Block128).unwrap();
    packed[..trits.len() / 4].to_vec()
}

fn check(trits: &[i8], q: &[i8]) {
    let codes = row(trits);
    let scalar = i2_s::vec_dot_i8(&codes, q, I2sLayout::Block128);
    let simd = x86::i2s_vec_dot_i8(&codes, q, I2sLayout::Block128)
        .expect("the CI and development machines have AVX2");
    assert_eq!(simd, scalar, "k = {}", trits.len());
}

#[test]
fn this_machine_runs_the_avx2_kernels() {
    // The parity tests below would prove nothing on a machine without AVX2: say so loudly.
    assert!(
        x86::has_avx2(),
        "no AVX2 here: the SIMD parity tests cannot run"
    );
}

#[test]
fn i2s_avx2_equals_scalar_on_the_edges() {
    for blocks in [1usize, 2, 3, 127, 128] {
        let k = blocks * 128;
        for w in [-1i8, 0, 1] {
            for a in [127i8, -128, 0, 1, -1] {
                check(&vec![w; k], &vec![a; k]);
            }
        }
        // Alternating extremes: every product at its largest magnitude, both signs.
        let trits: Vec<i8> = (0..k).map(|i| if i % 2 == 0 { 1 } else { -1 }).collect();
        let q: Vec<i8> = (0..k)
            .map(|i| if i % 2 == 0 { 127 } else { -128 })
            .collect();
        check(&trits, &q);
    }
}

#[test]
fn i2s_avx2_declines_what_it_does_not_run() {
    // The 64-weight layout stays scalar on x86.
    let codes = vec![0x55u8; 32];
    let q = vec![1i8; 128];
    assert_eq!(x86::i2s_vec_dot_i8(&codes, &q, I2sLayout::Block64), None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn tq2_0_and_i2s_q8_k_avx2_equal_scalar_bit_for_bit(
        (trits, d, x) in (1usize..=64).prop_flat_map(|blocks| (
            proptest::collection::vec(-1i8..=1, blocks * 256),
            proptest::collection::vec(0.001f32..4.0, blocks),
            proptest::collection::vec(-8.0f32..8.0, blocks * 256),
        ))
    ) {
        let y = q8k(&x);
        let row = tq2_row(&trits, &d);
        let scalar = tq2_0::vec_dot_q8_k(&row, &y);
        let simd = x86::tq2_0_vec_dot_q8_k(&row, &y).unwrap();
        prop_assert_eq!(simd.to_bits(), scalar.to_bits());
        let q: Vec<i8> = y.iter().flat_map(|b| b.qs).collect();
        let scalar = tq2_0::vec_dot_i8(&row, &q, 37.5);
        let simd = x86::tq2_0_vec_dot_i8(&row, &q, 37.5).unwrap();
        prop_assert_eq!(simd.to_bits(), scalar.to_bits());
        let codes = row_i2s(&trits);
        let scalar = i2_s::vec_dot_q8_k(&codes, &y, I2sLayout::Block128);
        let simd = x86::i2s_vec_dot_q8_k(&codes, &y, I2sLayout::Block128).unwrap();
        prop_assert_eq!(simd.to_bits(), scalar.to_bits());
    }

    #[test]
    fn i2s_avx2_equals_scalar(
        (trits, q) in (1usize..=128).prop_flat_map(|blocks| (
            proptest::collection::vec(-1i8..=1, blocks * 128),
            proptest::collection::vec(any::<i8>(), blocks * 128),
        ))
    ) {
        check(&trits, &q);
    }
}

/// The AVX2 float dot against its scalar reference for one weight type: within
/// `float_dot_bound`; returns whether the two are bit-identical.
fn float_dot_case(ty: &str, w: &[f32], x: &[f32]) -> bool {
    use xval_engine::quant::kernels::x86::{float_dot, float_dot_bound, FloatActs, FloatRow};
    use xval_engine::quant::{bf16, f16, f32 as f32q};
    let n = w.len();
    let (reference, simd, abs) = match ty {
        "f32" => {
            let row = f32q::quantize(w);
            let abs = w
                .iter()
                .zip(x)
                .map(|(a, b)| (a * b).abs() as f64)
                .sum::<f64>();
            let simd = float_dot(FloatRow::F32(&row), FloatActs::F32(x)).unwrap();
            (f32q::vec_dot_f32(&row, x), simd, abs)
        }
        "f16" => {
            let row = f16::quantize(w);
            let mut xh = Vec::new();
            f16::to_f16_row(x, &mut xh);
            let wf: Vec<f32> = w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
            let abs = wf
                .iter()
                .zip(&xh)
                .map(|(a, b)| (a * b.to_f32()).abs() as f64)
                .sum();
            let simd = float_dot(FloatRow::F16(&row), FloatActs::F16(&xh)).unwrap();
            (f16::vec_dot_f16(&row, &xh), simd, abs)
        }
        "f16xf32" => {
            let row = f16::quantize(w);
            let wf: Vec<f32> = w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
            let abs = wf.iter().zip(x).map(|(a, b)| (a * b).abs() as f64).sum();
            let simd = float_dot(FloatRow::F16(&row), FloatActs::F32(x)).unwrap();
            (f16::vec_dot_f16_f32(&row, x), simd, abs)
        }
        _ => {
            let row = bf16::quantize(w);
            let mut xb = Vec::new();
            bf16::to_bf16_row(x, &mut xb);
            let up = |v: u16| f32::from_bits((v as u32) << 16);
            let wb: Vec<f32> = row
                .chunks_exact(2)
                .map(|b| up(u16::from_le_bytes([b[0], b[1]])))
                .collect();
            let abs = wb
                .iter()
                .zip(&xb)
                .map(|(a, &b)| (a * up(b)).abs() as f64)
                .sum();
            let simd = float_dot(FloatRow::BF16(&row), FloatActs::BF16(&xb)).unwrap();
            (bf16::vec_dot_bf16(&row, &xb), simd, abs)
        }
    };
    let bound = float_dot_bound(reference, abs, n);
    assert!(
        ((simd as f64) - (reference as f64)).abs() <= bound,
        "{ty} n = {n}: simd {simd:e} reference {reference:e} bound {bound:e}"
    );
    simd.to_bits() == reference.to_bits()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every length up to 4100 (whole 16-lane steps and every tail), magnitudes over 2^-20 to
    /// 2^10 so the f64 partial sums do need more than 53 bits now and then.
    #[test]
    fn float_dots_with_avx2_stay_within_the_bound_of_scalar(
        (w, x) in (1usize..=4100).prop_flat_map(|n| (
            proptest::collection::vec((-1.0f32..1.0, -20i32..=10).prop_map(|(m, e)| m * 2f32.powi(e)), n),
            proptest::collection::vec((-1.0f32..1.0, -20i32..=10).prop_map(|(m, e)| m * 2f32.powi(e)), n),
        ))
    ) {
        for ty in ["f32", "f16", "f16xf32", "bf16"] {
            float_dot_case(ty, &w, &x);
        }
    }
}

/// The rate docs/kernel-parity.md quotes: on rows shaped like a model's (K = 2560, weights and
/// activations of one scale each, as an lm_head sees them) the AVX2 float dots give the
/// reference's exact f32 in at least 99% of rows (measured: printed with --nocapture).
#[test]
fn float_dots_with_avx2_nearly_always_equal_scalar_on_model_shaped_rows() {
    let mut next = spread_values(0x9e37_79b9_7f4a_7c15, 0);
    let k = 2560;
    let x: Vec<f32> = (0..k).map(|_| next() * 3.0).collect();
    for ty in ["f32", "f16", "f16xf32", "bf16"] {
        let rows = 2000;
        let same = (0..rows)
            .filter(|_| {
                let w: Vec<f32> = (0..k).map(|_| next() * 0.05).collect();
                float_dot_case(ty, &w, &x)
            })
            .count();
        println!("{ty}: {same} of {rows} rows bit-identical");
        assert!(
            same * 100 >= rows * 99,
            "{ty}: only {same} of {rows} rows identical"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The batched float dot (four tokens per pass over a row, then the rest) gives every
    /// token exactly what the one-token dot gives it, for every token count up to 9 (whole
    /// groups of four and every remainder) and every weight type and activation form.
    #[test]
    fn batched_float_dots_equal_one_token_dots(
        (k, tokens, seed) in (1usize..=300, 1usize..=9, any::<u64>())
    ) {
        use xval_engine::quant::kernels::x86::{float_dot, float_dots, FloatActs, FloatBatch, FloatRow};
        use xval_engine::quant::{bf16, f16, f32 as f32q};
        let mut next = spread_values(seed, 12);
        let w: Vec<f32> = (0..k).map(|_| next()).collect();
        let xs: Vec<Vec<f32>> = (0..tokens).map(|_| (0..k).map(|_| next()).collect()).collect();
        let h: Vec<Vec<half::f16>> = xs.iter().map(|x| { let mut v = Vec::new(); f16::to_f16_row(x, &mut v); v }).collect();
        let b: Vec<Vec<u16>> = xs.iter().map(|x| { let mut v = Vec::new(); bf16::to_bf16_row(x, &mut v); v }).collect();
        let (r32, r16, rb) = (f32q::quantize(&w), f16::quantize(&w), bf16::quantize(&w));
        let cases: Vec<(FloatRow, Vec<FloatActs>)> = vec![
            (FloatRow::F32(&r32), xs.iter().map(|x| FloatActs::F32(x)).collect()),
            (FloatRow::F16(&r16), h.iter().map(|x| FloatActs::F16(x)).collect()),
            (FloatRow::F16(&r16), xs.iter().map(|x| FloatActs::F32(x)).collect()),
            (FloatRow::BF16(&rb), b.iter().map(|x| FloatActs::BF16(x)).collect()),
        ];
        for (row, acts) in cases {
            let batch = FloatBatch::new(row.ty(), &acts).unwrap();
            let mut out = vec![0f32; tokens];
            float_dots(row, &batch, 0..tokens, &mut out).unwrap();
            for (t, (&o, &x)) in out.iter().zip(&acts).enumerate() {
                let one = float_dot(row, x).unwrap();
                prop_assert_eq!(o.to_bits(), one.to_bits(), "{:?} token {} of {}", row.ty(), t, tokens);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The noise twin's float dots (one sequential f32 sum per row and token) through `matmul`
    /// with AVX2 (eight rows side by side in one vector's lanes) equal the scalar fold bit for
    /// bit: every weight type and activation form, row counts that are and are not multiples of
    /// eight, every tail length, token counts that fill four-token passes and leave one to
    /// three over, magnitudes that make the f32 sums round.
    #[test]
    fn twin_f32_sums_with_avx2_equal_the_scalar_fold(
        (k, m, n, seed) in (1usize..=70, 1usize..=21, 1usize..=9, any::<u64>())
    ) {
        use xval_engine::gguf::GgmlType;
        use xval_engine::numerics::{F16Activations, KvType, Numerics, Profile};
        use xval_engine::quant::i2_s::I2sLayout;
        use xval_engine::quant::kernels::Kernel;
        use xval_engine::quant::matmul::{matmul_twin, TwinRounding, WeightMatrix, PLAIN};
        let mut next = spread_values(seed, 10);
        let wv: Vec<f32> = (0..k * m).map(|_| next()).collect();
        let x: Vec<f32> = (0..k * n).map(|_| next()).collect();
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            for f16_activations in [F16Activations::Round, F16Activations::F32Batches] {
                let bytes = xval_engine::quant::quantize(ty, &wv).unwrap();
                let w = WeightMatrix::new("w", ty, k, m, &bytes, I2sLayout::Block128).unwrap();
                let numerics = Numerics { profile: Profile::Ggml, kv: KvType::F32, f16_activations };
                let run = |kernel| {
                    matmul_twin(&w, &x, n, numerics, TwinRounding { f32_sums: true, kernel, ..PLAIN })
                        .unwrap()
                };
                let (scalar, simd) = (run(Kernel::Scalar), run(Kernel::Avx2));
                for (i, (a, b)) in scalar.iter().zip(&simd).enumerate() {
                    prop_assert!(
                        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                        "{} {:?} value {}: scalar {} avx2 {}", ty, f16_activations, i, a, b
                    );
                }
            }
        }
    }
}

/// Deterministic values (xorshift from `seed`): uniform in [-1, 1) times a power of two in
/// `2^-spread ..= 2^(spread - 1)`, so the products' magnitudes differ and their sums round.
fn spread_values(seed: u64, spread: i32) -> impl FnMut() -> f32 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let unit = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        if spread == 0 {
            unit
        } else {
            unit * 2f32.powi((state % (2 * spread as u64)) as i32 - spread)
        }
    }
}

/// A value of magnitude 2^-30 to 2^20 (products then span far more than f64's 53 bits, so a
/// reordered sum would show), or now and then an f32 that overflows when multiplied, or zero of
/// either sign.
fn attn_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => (-1.0f32..1.0, -30i32..=20).prop_map(|(m, e)| m * 2f32.powi(e)),
        1 => prop_oneof![Just(3e38f32), Just(-3e38f32), Just(0.0f32), Just(-0.0f32)],
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Attention's scores and weighted sums with AVX2 against the scalar reference, every way
    /// of summing: bit for bit (each lane keeps one element's order), for every head size up to
    /// 80 (whole and partial 8-dimension groups, 32-dimension blocks) and position count up to
    /// 40 (16- and 8-position blocks and every tail), rows packed or apart.
    #[test]
    fn attention_sums_with_avx2_equal_scalar_bit_for_bit(
        (q, k, window, pad) in (1usize..=80, 1usize..=40, 0usize..=3).prop_flat_map(|(hd, len, pad)| (
            proptest::collection::vec(attn_value(), hd),
            proptest::collection::vec(attn_value(), (hd + pad) * len),
            1..=len,
            Just(pad),
        ))
    ) {
        use xval_engine::quant::kernels::attn::{self, AttnSums};
        use xval_engine::quant::kernels::Kernel;
        // Rows of `hd` values `hd + pad` apart, as a head's keys sit in the cache.
        let (hd, stride) = (q.len(), q.len() + pad);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for sums in [AttnSums::F64, AttnSums::F32, AttnSums::Exact] {
            let (mut a, mut b) = (vec![0f32; window], vec![0f32; window]);
            attn::scores(Kernel::Scalar, sums, &q, &k, stride, &mut a);
            attn::scores(Kernel::Avx2, sums, &q, &k, stride, &mut b);
            prop_assert_eq!(bits(&a), bits(&b), "scores {:?}", sums);
            // The keys as values, the query's entries as weights.
            let p: Vec<f32> = (0..window).map(|j| q[j % hd]).collect();
            let (mut a, mut b) = (vec![0f32; hd], vec![0f32; hd]);
            attn::mix(Kernel::Scalar, sums, &p, &k, stride, &mut a);
            attn::mix(Kernel::Avx2, sums, &p, &k, stride, &mut b);
            prop_assert_eq!(bits(&a), bits(&b), "weighted sums {:?}", sums);
        }
    }
}

/// Attention sums whose every term is a signed zero: the f64 sums start at `-0.0` as the
/// reference's (`Iterator::sum`'s), so an all-`-0.0` score stays `-0.0`; the f32 fold and the
/// weighted sums start at `+0.0`.
#[test]
fn attention_sums_of_signed_zeros_keep_the_reference_sign() {
    use xval_engine::quant::kernels::attn::{self, AttnSums};
    use xval_engine::quant::kernels::Kernel;
    for (hd, len) in [(1, 1), (8, 7), (13, 16), (128, 33)] {
        for (qz, kz) in [(-0.0f32, 0.0f32), (0.0, 0.0), (-0.0, -0.0)] {
            let (q, k) = (vec![qz; hd], vec![kz; hd * len]);
            for sums in [AttnSums::F64, AttnSums::F32, AttnSums::Exact] {
                let (mut a, mut b) = (vec![1f32; len], vec![1f32; len]);
                attn::scores(Kernel::Scalar, sums, &q, &k, hd, &mut a);
                attn::scores(Kernel::Avx2, sums, &q, &k, hd, &mut b);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "scores {sums:?} {hd}x{len} {qz} {kz}");
                let p = vec![qz; len];
                let (mut a, mut b) = (vec![1f32; hd], vec![1f32; hd]);
                attn::mix(Kernel::Scalar, sums, &p, &k, hd, &mut a);
                attn::mix(Kernel::Avx2, sums, &p, &k, hd, &mut b);
                assert_eq!(
                    bits(&a),
                    bits(&b),
                    "weighted sums {sums:?} {hd}x{len} {qz} {kz}"
                );
            }
        }
    }
}
