//! Every scalar kernel against a direct f64 (or exact integer) computation from the decoded
//! values, over random shapes and values.

use proptest::prelude::*;
use xval_engine::gguf::GgmlType;
use xval_engine::quant::{self, act_i8, bf16, f16, f32 as f32q, i2_s, q8_0, q8_k, tq1_0, tq2_0};

fn trits_and_scales() -> impl Strategy<Value = (Vec<i8>, Vec<f32>)> {
    (1usize..4).prop_flat_map(|blocks| {
        (
            proptest::collection::vec(-1i8..=1, blocks * 256),
            proptest::collection::vec(0.01f32..2.0, blocks),
        )
    })
}

fn activations(n: usize) -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec(-4.0f32..4.0, n)
}

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn q8_k_quantization_is_round_half_even_of_the_scaled_value(x in activations(512)) {
        let mut blocks = Vec::new();
        q8_k::quantize_row(&x, &mut blocks).unwrap();
        for (b, xb) in blocks.iter().zip(x.chunks_exact(256)) {
            let max = xb.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            let iscale = -127.0f32 / max;
            prop_assert_eq!(b.d, 1.0 / iscale);
            for (j, (&q, &v)) in b.qs.iter().zip(xb).enumerate() {
                let want = (iscale * v).round_ties_even().min(127.0) as i8;
                prop_assert_eq!(q, want, "element {}", j);
            }
            for (s, c) in b.bsums.iter().zip(b.qs.chunks_exact(16)) {
                prop_assert_eq!(*s as i32, c.iter().map(|&q| q as i32).sum::<i32>());
            }
        }
    }

    #[test]
    fn act_i8_bounds_the_error_by_half_a_step(x in activations(300)) {
        let mut a = act_i8::ActI8::default();
        act_i8::quantize_row(&x, &mut a);
        let max = x.iter().map(|v| v.abs() as f64).fold(1e-5, f64::max);
        prop_assert_eq!(a.scale, (127.0 / max) as f32);
        for (&q, &v) in a.q.iter().zip(&x) {
            prop_assert!((q as f64 / a.scale as f64 - v as f64).abs() <= 0.5 / a.scale as f64 + 1e-6);
        }
        prop_assert_eq!(a.sum, a.q.iter().map(|&q| q as i32).sum::<i32>());
    }

    #[test]
    fn tq_dots_equal_the_decoded_computation((trits, scales) in trits_and_scales(), seed in any::<u64>()) {
        let n = trits.len();
        let x: Vec<f32> = (0..n).map(|i| (((i as u64).wrapping_mul(seed | 1) >> 7) % 2001) as f32 / 500.0 - 2.0).collect();
        let mut blocks = Vec::new();
        q8_k::quantize_row(&x, &mut blocks).unwrap();
        let y = q8_k::dequantize(&blocks);
        for ty in [GgmlType::TQ2_0, GgmlType::TQ1_0] {
            let mut row = Vec::new();
            for (b, chunk) in trits.chunks_exact(256).enumerate() {
                let d = half::f16::from_f32(scales[b]);
                if ty == GgmlType::TQ2_0 { tq2_0::pack_block(chunk, d, &mut row) } else { tq1_0::pack_block(chunk, d, &mut row) }
            }
            let w = quant::dequantize(ty, &row, n).unwrap();
            let got = if ty == GgmlType::TQ2_0 { tq2_0::vec_dot_q8_k(&row, &blocks) } else { tq1_0::vec_dot_q8_k(&row, &blocks) };
            let want = dot64(&w, &y);
            prop_assert!((got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()), "{}: {} vs {}", ty, got, want);
            // Per-block integer sums are exact.
            for (b, chunk) in trits.chunks_exact(256).enumerate() {
                let bytes = &row[b * (row.len() / (n / 256))..];
                let sumi = if ty == GgmlType::TQ2_0 { tq2_0::block_dot_i8(bytes, &blocks[b].qs) } else { tq1_0::block_dot_i8(bytes, &blocks[b].qs) };
                let want: i32 = chunk.iter().zip(&blocks[b].qs).map(|(&t, &q)| t as i32 * q as i32).sum();
                prop_assert_eq!(sumi, want);
            }
        }
    }

    #[test]
    fn i2_s_dots_are_exact_integer_sums((trits, _s) in trits_and_scales(), x in activations(1024), block64 in any::<bool>()) {
        let layout = if block64 { i2_s::I2sLayout::Block64 } else { i2_s::I2sLayout::Block128 };
        let n = trits.len();
        let bytes = i2_s::pack(&trits, 0.5, layout).unwrap();
        let mut a = act_i8::ActI8::default();
        act_i8::quantize_row(&x[..n.min(1024)], &mut a);
        let n = a.q.len() / 256 * 256;
        prop_assume!(n > 0);
        let codes = &bytes[..n / 4];
        let want: i32 = trits[..n].iter().zip(&a.q).map(|(&t, &q)| t as i32 * q as i32).sum();
        prop_assert_eq!(i2_s::vec_dot_i8(codes, &a.q[..n], layout), want);
        // The ggml view (d = 1.0 TQ2_0 transcode) equals the TQ2_0 kernel on the same trits.
        let mut blocks = Vec::new();
        q8_k::quantize_row(&x[..n], &mut blocks).unwrap();
        let mut tq = Vec::new();
        for chunk in trits[..n].chunks_exact(256) {
            tq2_0::pack_block(chunk, half::f16::ONE, &mut tq);
        }
        prop_assert_eq!(i2_s::vec_dot_q8_k(codes, &blocks, layout), tq2_0::vec_dot_q8_k(&tq, &blocks));
    }

    #[test]
    fn float_and_q8_0_dots_match_f64(w in activations(96), x in activations(96)) {
        let wf16 = quant::quantize(GgmlType::F16, &w).unwrap();
        let mut xh = Vec::new();
        f16::to_f16_row(&x, &mut xh);
        let want = dot64(&quant::dequantize(GgmlType::F16, &wf16, 96).unwrap(), &xh.iter().map(|h| h.to_f32()).collect::<Vec<_>>());
        prop_assert!((f16::vec_dot_f16(&wf16, &xh) as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()));

        let wf32 = quant::quantize(GgmlType::F32, &w).unwrap();
        let want = dot64(&w, &x);
        prop_assert!((f32q::vec_dot_f32(&wf32, &x) as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()));

        let wbf = quant::quantize(GgmlType::BF16, &w).unwrap();
        let mut xb = Vec::new();
        bf16::to_bf16_row(&x, &mut xb);
        let xbf: Vec<f32> = xb.iter().map(|&b| f32::from_bits((b as u32) << 16)).collect();
        let want = dot64(&quant::dequantize(GgmlType::BF16, &wbf, 96).unwrap(), &xbf);
        prop_assert!((bf16::vec_dot_bf16(&wbf, &xb) as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()));

        let wq = q8_0::quantize(&w).unwrap();
        let xq = q8_0::quantize(&x).unwrap();
        let want = dot64(&quant::dequantize(GgmlType::Q8_0, &wq, 96).unwrap(), &quant::dequantize(GgmlType::Q8_0, &xq, 96).unwrap());
        prop_assert!((q8_0::vec_dot_q8_0(&wq, &xq) as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()));
    }
}

#[test]
fn bitnet_cpp_epilogue_reproduces_the_code_offset_form() {
    // (sum code*q - sum q) / act_scale * w_scale, computed as bitnet.cpp does, equals the
    // ternary form bit for bit.
    let trits: Vec<i8> = (0..256).map(|i| ((i * 7) % 3) as i8 - 1).collect();
    let x: Vec<f32> = (0..256)
        .map(|i| ((i * 13) % 17) as f32 / 3.0 - 2.5)
        .collect();
    let mut a = act_i8::ActI8::default();
    act_i8::quantize_row(&x, &mut a);
    let codes_q: i32 = trits
        .iter()
        .zip(&a.q)
        .map(|(&t, &q)| (t as i32 + 1) * q as i32)
        .sum();
    let bitnet = (codes_q as f32 - a.sum as f32) / a.scale * 0.37;
    let bytes = i2_s::pack(&trits, 0.37, Default::default()).unwrap();
    let ours = act_i8::epilogue(
        i2_s::vec_dot_i8(&bytes[..64], &a.q, Default::default()),
        a.scale,
        0.37,
    );
    assert_eq!(bitnet.to_bits(), ours.to_bits());
}

#[test]
fn q8_k_rejects_tails_and_zero_blocks_are_zero() {
    let mut blocks = Vec::new();
    assert!(q8_k::quantize_row(&[1.0; 300], &mut blocks).is_err());
    q8_k::quantize_row(&[0.0; 256], &mut blocks).unwrap();
    assert_eq!(blocks[0].d, 0.0);
    assert!(blocks[0].qs.iter().all(|&q| q == 0));
}
