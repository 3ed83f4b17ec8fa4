//! The x86 kernels' own entry points against their scalar references: the AVX2 ternary dots bit
//! for bit on random rows and activations of every length the format allows (whole 128-weight
//! I2_S blocks, K up to 16384) and the edge cases (all -1, all +1, all 0, activations at +127
//! and -128). `kernels_simd.rs` checks every SIMD set through the matmul and the forward pass,
//! and the float dots and attention sums of every set.
#![cfg(target_arch = "x86_64")]

use proptest::prelude::*;
use xval_engine::gguf::GgmlType;
use xval_engine::quant::act_i8::{self, ActI8};
use xval_engine::quant::i2_s::{self, I2sLayout};
use xval_engine::quant::kernels::{
    x86, Kernel, Sums8, TernaryActs, TernaryBatch, TernaryRow, TernaryRunner,
};
use xval_engine::quant::q8_k::{self, BlockQ8K};
use xval_engine::quant::{tq1_0, tq2_0};

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

/// Every variant's eight-row outputs as bit patterns (`Sums8`'s `==` would take -0 for 0).
fn sums_bits(s: &[Sums8]) -> Vec<Vec<u32>> {
    s.iter()
        .map(|s| match s {
            Sums8::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
            Sums8::I32(v) => v.iter().map(|&x| x as u32).collect(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The eight-row kernels of every variant of the `avx512` and `amx` sets this CPU runs
    /// (with GFNI's affine unpacking and with shifts and masks) against AVX2's on the same
    /// rows: the same bits for TQ2_0, TQ1_0 and I2_S (whole and trailing half blocks), Q8_K
    /// and int8 activations, one to six tokens (a pass takes four).
    #[test]
    fn eight_row_kernel_variants_equal_avx2(
        (chunks, tokens, trits, d, x) in (1usize..=9, 1usize..=6).prop_flat_map(|(c, n)| (
            Just(c),
            Just(n),
            proptest::collection::vec(-1i8..=1, 8 * 128 * c),
            proptest::collection::vec(0.001f32..4.0, 8 * c.div_ceil(2)),
            proptest::collection::vec(-8.0f32..8.0, 128 * c * n),
        ))
    ) {
        let avx2 = TernaryRunner::new(Kernel::Avx2).expect("the CI and development machines have AVX2");
        let variants: Vec<_> = [Kernel::Avx512, Kernel::Amx]
            .into_iter()
            .flat_map(TernaryRunner::variants)
            .collect();
        let k = 128 * chunks;
        let whole = chunks % 2 == 0;
        let rows_of = |ty: GgmlType| -> Vec<Vec<u8>> {
            trits
                .chunks_exact(k)
                .zip(d.chunks_exact(chunks.div_ceil(2)))
                .map(|(t, d)| match ty {
                    GgmlType::TQ2_0 => tq2_row(t, d),
                    GgmlType::TQ1_0 => {
                        let mut out = Vec::new();
                        for (t, &s) in t.chunks_exact(256).zip(d) {
                            tq1_0::pack_block(t, half::f16::from_f32(s), &mut out);
                        }
                        out
                    }
                    _ => row(t),
                })
                .collect()
        };
        let q8k_acts: Vec<Vec<BlockQ8K>> = if whole {
            x.chunks_exact(k).map(q8k).collect()
        } else {
            Vec::new()
        };
        let i8_acts: Vec<ActI8> = x
            .chunks_exact(k)
            .map(|x| {
                let mut a = ActI8::default();
                act_i8::quantize_row(x, &mut a);
                a
            })
            .collect();
        let mut forms = vec![TernaryBatch::new(i8_acts.iter().map(|a| TernaryActs::I8(&a.q)).collect()).unwrap()];
        if whole {
            forms.push(TernaryBatch::new(q8k_acts.iter().map(|y| TernaryActs::Q8K(y)).collect()).unwrap());
        }
        // TQ2_0 and TQ1_0 come in whole 256-weight blocks; I2_S also in 128-weight halves.
        let types: &[GgmlType] = if whole {
            &[GgmlType::TQ2_0, GgmlType::TQ1_0, GgmlType::I2_S]
        } else {
            &[GgmlType::I2_S]
        };
        for &ty in types {
            let data = rows_of(ty);
            let rows: [TernaryRow; 8] = std::array::from_fn(|i| match ty {
                GgmlType::TQ2_0 => TernaryRow::Tq2_0(&data[i]),
                GgmlType::TQ1_0 => TernaryRow::Tq1_0(&data[i]),
                _ => TernaryRow::I2s(&data[i]),
            });
            for batch in &forms {
                let mut want = vec![Sums8::I32([0; 8]); tokens];
                prop_assert!(avx2.rows8(&rows, batch, &mut want));
                for (v, runner) in variants.iter().enumerate() {
                    let mut got = vec![Sums8::I32([0; 8]); tokens];
                    prop_assert!(runner.rows8(&rows, batch, &mut got));
                    prop_assert_eq!(sums_bits(&got), sums_bits(&want), "{} variant {} tokens {}", ty, v, tokens);
                }
            }
        }
    }
}

#[test]
fn the_avx512_sets_have_a_variant_for_each_way_of_unpacking() {
    // Where the CPU has GFNI, both ways run (and the proptest above checks both); say which.
    for kernel in [Kernel::Avx512, Kernel::Amx] {
        let n = TernaryRunner::variants(kernel).len();
        if kernel.available() {
            assert!(n >= 1, "{kernel} runs here but has no variant");
        } else {
            assert_eq!(n, 0, "{kernel} does not run here");
        }
        println!("{kernel}: {n} eight-row variant(s)");
    }
}
