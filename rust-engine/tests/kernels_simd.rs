//! Every SIMD kernel set this target has (AVX2 on x86-64, NEON on aarch64, run under qemu by
//! scripts/neon.sh) against the scalar reference through the matmul and the forward pass: bit
//! for bit for the ternary dots, on random shapes, every token count up to 9, the edge cases
//! (all -1, all 0, all +1 weights; activations quantized to +127 and -128), and committed
//! models; the float dots of F32/F16/BF16 weights within their stated bound of scalar and bit
//! for bit in the order every set shares (so AVX2 and NEON give the same bits), the noise
//! twin's f32 folds bit for bit; attention's scores and weighted sums bit for bit.
//! `kernels_x86.rs` checks the x86 entry points directly.
#![cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]

use proptest::prelude::*;
use xval_engine::gguf::GgmlType;
use xval_engine::numerics::{Numerics, Profile};
use xval_engine::quant::i2_s::{self, I2sLayout};
use xval_engine::quant::kernels::Kernel;
use xval_engine::quant::matmul::{matmul_twin, TwinRounding, WeightMatrix};
use xval_engine::quant::{tq1_0, tq2_0};

/// The SIMD set every machine of this target runs (AVX2 on x86-64, NEON on aarch64).
fn simd() -> Kernel {
    if cfg!(target_arch = "x86_64") {
        Kernel::Avx2
    } else {
        Kernel::Neon
    }
}

/// Every SIMD set the parity tests check here: [`simd`], and AVX-512 and AMX where this CPU
/// (and OS) has them.
fn simd_sets() -> Vec<Kernel> {
    let mut sets = vec![simd()];
    for k in [Kernel::Avx512, Kernel::Amx] {
        if k.available() {
            sets.push(k);
        }
    }
    sets
}

#[test]
fn this_machine_runs_the_simd_kernels() {
    // The parity tests below would prove nothing where the set does not run: say so loudly.
    assert!(
        simd().available(),
        "{} is not available here: the SIMD parity tests cannot run",
        simd()
    );
    // AVX-512 is checked where the CPU has it (not every x86-64 machine does): say which.
    println!("SIMD sets checked here: {:?}", simd_sets());
}

/// A TQ2_0 row of `trits` with per-block scales `d`.
fn tq2_row(trits: &[i8], d: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, &s) in trits.chunks_exact(256).zip(d) {
        tq2_0::pack_block(t, half::f16::from_f32(s), &mut out);
    }
    out
}

/// `matmul_twin` of `n` rows `x` as bit patterns: the scalar reference's once per SIMD set,
/// then every SIMD set's ([`simd_sets`]), each in the same order, so that one comparison
/// checks every set.
fn both(w: &WeightMatrix, x: &[f32], n: usize, profile: Profile, i16_sums: bool) -> [Vec<u32>; 2] {
    let run = |kernel| -> Vec<u32> {
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
    };
    let sets = simd_sets();
    let scalar = run(Kernel::Scalar);
    [
        sets.iter().flat_map(|_| scalar.iter().copied()).collect(),
        sets.into_iter().flat_map(run).collect(),
    ]
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

/// Random ternary matmuls: `m` weight rows of `blocks` 256-weight blocks (values -1, 0, +1),
/// their block scales and `n` activation rows, each count drawn from its range.
fn matmul_cases(
    blocks: std::ops::RangeInclusive<usize>,
    m: std::ops::RangeInclusive<usize>,
    n: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = (usize, usize, usize, Vec<i8>, Vec<f32>, Vec<f32>)> {
    (blocks, m, n).prop_flat_map(|(blocks, m, n)| {
        (
            Just(blocks),
            Just(m),
            Just(n),
            proptest::collection::vec(-1i8..=1, blocks * 256 * m),
            proptest::collection::vec(0.001f32..4.0, blocks * m),
            proptest::collection::vec(-8.0f32..8.0, blocks * 256 * n),
        )
    })
}

/// One case of [`matmul_cases`] as TQ2_0, TQ1_0 and I2_S weights under both quantizing
/// profiles, with and without the self-test's 16-bit wrap: every SIMD set's `matmul_twin`
/// bit-identical to the scalar reference's.
fn every_format_equals_scalar(
    (blocks, m, n, trits, d, x): (usize, usize, usize, Vec<i8>, Vec<f32>, Vec<f32>),
) -> Result<(), TestCaseError> {
    let k = blocks * 256;
    for ty in [GgmlType::TQ2_0, GgmlType::TQ1_0, GgmlType::I2_S] {
        let data = weights(ty, &trits, &d, m);
        let w = WeightMatrix::new("w", ty, k, m, &data, I2sLayout::Block128).unwrap();
        for profile in [Profile::Ggml, Profile::BitnetCpp] {
            for i16_sums in [false, true] {
                let [s, v] = both(&w, &x, n, profile, i16_sums);
                prop_assert_eq!(s, v, "{} {:?} i16 {} n {}", ty, profile, i16_sums, n);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The batched path (each chunk of codes unpacked once for up to four tokens) through
    /// `matmul` for every token count up to 9 (one, two, three full groups of four and every
    /// remainder), both quantizing profiles, and the self-test's 16-bit wrap: bit-identical to
    /// the scalar reference.
    #[test]
    fn batched_ternary_matmul_with_simd_equals_scalar_bit_for_bit(
        case in matmul_cases(1..=12, 1..=40, 1..=9)
    ) {
        every_format_equals_scalar(case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Eight tokens and more, where the `amx` set multiplies tiles of sixteen rows by
    /// sixteen tokens (every other set takes its usual path): token counts that fill one to
    /// five tiles or leave the last part-empty, row counts that leave rows for the eight-row
    /// and per-row kernels, every format and both quantizing profiles (Q8_K blocks, int8
    /// rows), the 16-bit wrap: bit-identical to the scalar reference.
    #[test]
    fn ternary_matmul_of_many_tokens_with_simd_equals_scalar_bit_for_bit(
        case in matmul_cases(1..=5, 1..=40, 8..=70)
    ) {
        every_format_equals_scalar(case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// One token (decode) over enough rows that a task's eight-row kernel calls take rows
    /// far apart (`matmul`'s one-token order: each of a call's eight rows follows the same
    /// place of the call before, eight streams), with row counts that leave rows over for the
    /// per-row kernel: every format, both quantizing profiles, the 16-bit wrap, bit-identical
    /// to the scalar reference.
    #[test]
    fn one_token_over_many_rows_with_simd_equals_scalar_bit_for_bit(
        case in matmul_cases(1..=2, 150..=700, 1..=1)
    ) {
        every_format_equals_scalar(case)?;
    }
}

/// Rows of 128-weight I2_S chunks that do not fill a 256-weight block (K = 384) under
/// bitnet.cpp's int8 activations (Q8_K takes whole 256-value blocks only), several tokens at once
/// (six; and twenty, which the `amx` set takes on tiles); 35 rows: two tiles of sixteen and
/// three rows for the `amx` set, four groups of eight by the fused kernel and three by the
/// per-row one for the others.
#[test]
fn batched_i2s_with_a_trailing_half_block_equals_scalar() {
    let (k, m) = (384, 35);
    let trits: Vec<i8> = (0..k * m)
        .map(|i| ((i * 7 + i / 5) % 3) as i8 - 1)
        .collect();
    let data = weights(GgmlType::I2_S, &trits, &[], m);
    let w = WeightMatrix::new("w", GgmlType::I2_S, k, m, &data, I2sLayout::Block128).unwrap();
    for n in [6, 20] {
        let x: Vec<f32> = (0..k * n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let [s, v] = both(&w, &x, n, Profile::BitnetCpp, false);
        assert_eq!(s, v, "n {n}");
    }
}

/// The extremes, K up to 16384: weights all -1, all 0, all +1 and alternating; activations all
/// equal (quantized to -128 by Q8_K, whose scale takes the sign of the largest value, and to
/// +127 by bitnet.cpp's int8 rows) and alternating +-1 (every product at its largest magnitude,
/// both signs); one, four, five and seventeen tokens; 25 rows (the `amx` set: sixteen on its
/// tiles for seventeen tokens; every set: eights by the fused kernel, one alone).
#[test]
fn ternary_simd_equals_scalar_on_the_edges() {
    for k in [256usize, 512, 16384] {
        let m = 25;
        let alternating = |i: usize| if i.is_multiple_of(2) { 1i8 } else { -1 };
        let weight_rows: [Vec<i8>; 4] = [
            vec![-1; k * m],
            vec![0; k * m],
            vec![1; k * m],
            (0..k * m).map(alternating).collect(),
        ];
        for trits in &weight_rows {
            for n in [1usize, 4, 5, 17] {
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
        let s = run(Kernel::Scalar);
        for kernel in simd_sets() {
            let v = run(kernel);
            for (a, b) in s.iter().zip(&v) {
                assert_eq!(a.logits, b.logits, "{fixture} {profile:?} {kernel}");
                assert_eq!(a.taps.len(), b.taps.len());
                for (x, y) in a.taps.iter().zip(&b.taps) {
                    assert_eq!(x.data, y.data, "{fixture} {kernel}: {}", x.name);
                }
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

/// The SIMD set's float dot against its scalar reference for one weight type: within
/// `float_dot_bound`, and bit for bit what `lane_order_dot` (the sets' common order, written
/// out in scalar code) gives, so AVX2 and NEON give the same bits; returns whether the dot
/// is bit-identical to the reference.
fn float_dot_case(ty: &str, w: &[f32], x: &[f32]) -> bool {
    use xval_engine::quant::kernels::float::{
        float_dot_bound, lane_order_dot, FloatActs, FloatRow,
    };
    let float_dot = |row: FloatRow, x: FloatActs| {
        let lanes = lane_order_dot(row, x).unwrap();
        for kernel in simd_sets() {
            let dot = xval_engine::quant::kernels::float::float_dot(kernel, row, x);
            assert_eq!(
                dot.map(f32::to_bits),
                Some(lanes.to_bits()),
                "{:?} n = {}: {kernel} against the lane order",
                row.ty(),
                w.len(),
            );
        }
        Some(lanes)
    };
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
    fn float_dots_with_simd_stay_within_the_bound_of_scalar_in_the_lane_order(
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Rows where the summation order shows in the f32 result: small products (about 2^-24)
    /// beside two to six huge ones (2^30, alternately +/-) that cancel exactly. Where a huge
    /// partial sum meets a small one, the small one is absorbed (2^30 + 2^-24 needs more than
    /// 53 bits), and which small ones survive depends on which lanes and accumulators meet
    /// first: the result is the lane order's only if every lane, accumulator and reduction
    /// step is the one `lane_order_dot` states. (The rows above rarely tell orders apart: their
    /// f64 sums are nearly always exact.)
    #[test]
    fn float_dots_keep_the_lane_order_where_sums_cancel(
        (small_w, small_x, big) in (1usize..=100).prop_flat_map(|n| (
            proptest::collection::vec(-1.0f32..1.0, n),
            proptest::collection::vec(-1.0f32..1.0, n),
            proptest::collection::vec(0..n, 2..=6),
        ))
    ) {
        let mut w: Vec<f32> = small_w.iter().map(|v| v * 2f32.powi(-12)).collect();
        let mut x: Vec<f32> = small_x.iter().map(|v| v * 2f32.powi(-12)).collect();
        // An even count of distinct positions, signs alternating: the huge terms cancel.
        let mut at: Vec<usize> = big;
        at.sort_unstable();
        at.dedup();
        at.truncate(at.len() / 2 * 2);
        for (j, &i) in at.iter().enumerate() {
            w[i] = if j % 2 == 0 { 32768.0 } else { -32768.0 };
            x[i] = 32768.0;
        }
        for ty in ["f32", "f16", "f16xf32", "bf16"] {
            float_dot_case(ty, &w, &x);
        }
    }
}

/// The rate docs/kernel-parity.md quotes: on rows shaped like a model's (K = 2560, weights and
/// activations of one scale each, as an lm_head sees them) the SIMD float dots give the
/// reference's exact f32 in at least 99% of rows (measured: printed with --nocapture).
#[test]
fn float_dots_with_simd_nearly_always_equal_scalar_on_model_shaped_rows() {
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
        use xval_engine::quant::kernels::float::{float_dot, float_dots, FloatActs, FloatBatch, FloatRow};
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
            for kernel in simd_sets() {
                let batch = FloatBatch::new(kernel, row.ty(), &acts).unwrap();
                let mut out = vec![0f32; tokens];
                float_dots(row, &batch, 0..tokens, &mut out).unwrap();
                for (t, (&o, &x)) in out.iter().zip(&acts).enumerate() {
                    let one = float_dot(kernel, row, x).unwrap();
                    prop_assert_eq!(o.to_bits(), one.to_bits(), "{} {:?} token {} of {}", kernel, row.ty(), t, tokens);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// One token's dots with many rows at once (`float_dots_rows`: the `avx512` set takes
    /// F16 rows times f16 activations eight at a time, side by side) give every row exactly
    /// what the one-row dot gives it and what `lane_order_dot` states, for row counts with
    /// every remainder of eight, lengths with every tail, and every weight type and
    /// activation form.
    #[test]
    fn many_rows_of_one_token_equal_one_row_dots(
        (k, rows, seed) in (1usize..=300, 1usize..=20, any::<u64>())
    ) {
        use xval_engine::quant::kernels::float::{float_dot, float_dots_rows, lane_order_dot, FloatActs, FloatBatch, FloatRow};
        use xval_engine::quant::{bf16, f16, f32 as f32q};
        let mut next = spread_values(seed, 12);
        let ws: Vec<Vec<f32>> = (0..rows).map(|_| (0..k).map(|_| next()).collect()).collect();
        let x: Vec<f32> = (0..k).map(|_| next()).collect();
        let mut h = Vec::new();
        f16::to_f16_row(&x, &mut h);
        let mut b = Vec::new();
        bf16::to_bf16_row(&x, &mut b);
        let r32: Vec<Vec<u8>> = ws.iter().map(|w| f32q::quantize(w)).collect();
        let r16: Vec<Vec<u8>> = ws.iter().map(|w| f16::quantize(w)).collect();
        let rb: Vec<Vec<u8>> = ws.iter().map(|w| bf16::quantize(w)).collect();
        let cases: Vec<(Vec<FloatRow>, FloatActs)> = vec![
            (r32.iter().map(|r| FloatRow::F32(r)).collect(), FloatActs::F32(&x)),
            (r16.iter().map(|r| FloatRow::F16(r)).collect(), FloatActs::F16(&h)),
            (r16.iter().map(|r| FloatRow::F16(r)).collect(), FloatActs::F32(&x)),
            (rb.iter().map(|r| FloatRow::BF16(r)).collect(), FloatActs::BF16(&b)),
        ];
        for (rows, acts) in cases {
            for kernel in simd_sets() {
                let batch = FloatBatch::new(kernel, rows[0].ty(), &[acts]).unwrap();
                let mut out = vec![0f32; rows.len()];
                float_dots_rows(&rows, &batch, 0, &mut out).unwrap();
                for (i, (&o, &row)) in out.iter().zip(&rows).enumerate() {
                    let one = float_dot(kernel, row, acts).unwrap();
                    prop_assert_eq!(o.to_bits(), one.to_bits(), "{} {:?} row {} of {}", kernel, row.ty(), i, rows.len());
                    let stated = lane_order_dot(row, acts).unwrap();
                    prop_assert_eq!(o.to_bits(), stated.to_bits(), "{} {:?} row {}: the stated order", kernel, row.ty(), i);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The noise twin's float dots (one sequential f32 sum per row and token) through `matmul`
    /// with SIMD (eight rows side by side in vector lanes) equal the scalar fold bit for
    /// bit: every weight type and activation form, row counts that are and are not multiples of
    /// eight, every tail length, token counts that fill four-token passes and leave one to
    /// three over, magnitudes that make the f32 sums round.
    #[test]
    fn twin_f32_sums_with_simd_equal_the_scalar_fold(
        (k, m, n, seed) in (1usize..=70, 1usize..=21, 1usize..=9, any::<u64>())
    ) {
        use xval_engine::numerics::{F16Activations, KvType};
        use xval_engine::quant::matmul::PLAIN;
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
                let scalar = run(Kernel::Scalar);
                for kernel in simd_sets() {
                    let simd = run(kernel);
                    for (i, (a, b)) in scalar.iter().zip(&simd).enumerate() {
                        prop_assert!(
                            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                            "{} {:?} value {}: scalar {} {} {}", ty, f16_activations, i, a, kernel, b
                        );
                    }
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

    /// Attention's scores and weighted sums with SIMD against the scalar reference, every way
    /// of summing: bit for bit (each lane keeps one element's order), for every head size up to
    /// 80 (whole and partial 8- and 4-dimension groups, 64-, 32- and 16-dimension blocks) and
    /// position count up to 40 (32-, 16-, 8- and 4-position blocks and every tail: AVX-512's,
    /// then AVX2's), rows packed or apart.
    #[test]
    fn attention_sums_with_simd_equal_scalar_bit_for_bit(
        (q, k, window, pad) in (1usize..=80, 1usize..=40, 0usize..=3).prop_flat_map(|(hd, len, pad)| (
            proptest::collection::vec(attn_value(), hd),
            proptest::collection::vec(attn_value(), (hd + pad) * len),
            1..=len,
            Just(pad),
        ))
    ) {
        use xval_engine::quant::kernels::attn::{self, AttnSums};
        // Rows of `hd` values `hd + pad` apart, as a head's keys sit in the cache.
        let (hd, stride) = (q.len(), q.len() + pad);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for sums in [AttnSums::F64, AttnSums::F32, AttnSums::Exact] {
            let (mut a, mut b) = (vec![0f32; window], vec![0f32; window]);
            attn::scores(Kernel::Scalar, sums, &q, &k, stride, &mut a);
            for kernel in simd_sets() {
                attn::scores(kernel, sums, &q, &k, stride, &mut b);
                prop_assert_eq!(bits(&a), bits(&b), "scores {:?} {}", sums, kernel);
            }
            // The keys as values, the query's entries as weights.
            let p: Vec<f32> = (0..window).map(|j| q[j % hd]).collect();
            let (mut a, mut b) = (vec![0f32; hd], vec![0f32; hd]);
            attn::mix(Kernel::Scalar, sums, &p, &k, stride, &mut a);
            for kernel in simd_sets() {
                attn::mix(kernel, sums, &p, &k, stride, &mut b);
                prop_assert_eq!(bits(&a), bits(&b), "weighted sums {:?} {}", sums, kernel);
            }
        }
    }
}

/// Attention sums whose every term is a signed zero: the f64 sums start at `-0.0` as the
/// reference's (`Iterator::sum`'s), so an all-`-0.0` score stays `-0.0`; the f32 fold and the
/// weighted sums start at `+0.0`.
#[test]
fn attention_sums_of_signed_zeros_keep_the_reference_sign() {
    use xval_engine::quant::kernels::attn::{self, AttnSums};
    for (hd, len) in [(1, 1), (8, 7), (13, 16), (128, 33)] {
        for (qz, kz) in [(-0.0f32, 0.0f32), (0.0, 0.0), (-0.0, -0.0)] {
            let (q, k) = (vec![qz; hd], vec![kz; hd * len]);
            for sums in [AttnSums::F64, AttnSums::F32, AttnSums::Exact] {
                let (mut a, mut b) = (vec![1f32; len], vec![1f32; len]);
                attn::scores(Kernel::Scalar, sums, &q, &k, hd, &mut a);
                attn::scores(simd(), sums, &q, &k, hd, &mut b);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "scores {sums:?} {hd}x{len} {qz} {kz}");
                let p = vec![qz; len];
                let (mut a, mut b) = (vec![1f32; hd], vec![1f32; hd]);
                attn::mix(Kernel::Scalar, sums, &p, &k, hd, &mut a);
                attn::mix(simd(), sums, &p, &k, hd, &mut b);
                assert_eq!(
                    bits(&a),
                    bits(&b),
                    "weighted sums {sums:?} {hd}x{len} {qz} {kz}"
                );
            }
        }
    }
}
