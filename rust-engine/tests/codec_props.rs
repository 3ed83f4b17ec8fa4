//! Properties of the format codecs (`quant::quantize` / `quant::dequantize`):
//! - F32 bit-exact; F16 and BF16 against ports of ggml's own conversions (exhaustive over every
//!   16-bit pattern and every rounding boundary, random f32 besides);
//! - TQ1_0, TQ2_0, I2_S exact on ternary-times-scale inputs, and `quantize(dequantize(q)) == q`
//!   for every validly encoded block;
//! - Q8_0's error bound;
//! - buffers that are not whole blocks give `Error::Format`, never a panic;
//! - I2_S against a bit-level reading written here from formats.md, both block layouts.

mod gguf_common;

use gguf_common::det_bytes;
use proptest::prelude::*;
use xval_engine::gguf::GgmlType;
use xval_engine::quant::{self, i2_s, i2_s::I2sLayout, tq1_0, tq2_0};
use xval_engine::Error;

// ---------------------------------------------------------------------------------------------
// References ported from ggml (ggml/src/ggml-impl.h), independent of the `half` crate.

/// `ggml_compute_fp32_to_fp16`: the portable (non-F16C) conversion, round to nearest even.
fn ggml_fp32_to_fp16(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 0x1.0p+112f
    let scale_to_zero = f32::from_bits(0x0880_0000); // 0x1.0p-110f
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let mut bias = shl1_w & 0xff00_0000;
    if bias < 0x7100_0000 {
        bias = 0x7100_0000;
    }
    // ggml: base = fp32_from_bits((bias >> 1) + 0x07800000) + base (IEEE addition commutes).
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7c00;
    let mantissa_bits = bits & 0x0000_0fff;
    let nonsign = exp_bits + mantissa_bits;
    ((sign >> 16)
        | if shl1_w > 0xff00_0000 {
            0x7e00
        } else {
            nonsign
        }) as u16
}

/// `ggml_compute_fp16_to_fp32`.
fn ggml_fp16_to_fp32(h: u16) -> f32 {
    let w = (h as u32) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);
    let exp_offset = 0xe0u32 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 0x1.0p-112f
    let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;
    let magic_mask = 126u32 << 23;
    let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;
    let denormalized_cutoff = 1u32 << 27;
    f32::from_bits(
        sign | if two_w < denormalized_cutoff {
            denormalized.to_bits()
        } else {
            normalized.to_bits()
        },
    )
}

/// Round to nearest even, written from the definition (the upper half, plus one when the
/// dropped half is above the midpoint, or at it with an odd upper half); NaN keeps its top bits
/// with the quiet bit forced, as `ggml_compute_fp32_to_bf16` does.
fn bf16_reference(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let (hi, lo) = (b >> 16, b & 0xffff);
    let up = lo > 0x8000 || (lo == 0x8000 && hi & 1 == 1);
    (hi + up as u32) as u16
}

fn enc1(ty: GgmlType, x: f32) -> u16 {
    let b = quant::quantize(ty, &[x]).unwrap();
    u16::from_le_bytes([b[0], b[1]])
}

fn dec1(ty: GgmlType, h: u16) -> f32 {
    quant::dequantize(ty, &h.to_le_bytes(), 1).unwrap()[0]
}

/// f32 values at and next to every rounding boundary of a 16-bit format whose values are the
/// f32s `widen(h)`: each midpoint between neighbours, and one f32 ulp either side of it.
fn boundaries(widen: impl Fn(u16) -> f32) -> Vec<f32> {
    let mut out = Vec::new();
    for h in 0..=u16::MAX {
        let (a, b) = (widen(h), widen(h.wrapping_add(1)));
        if !a.is_finite() || !b.is_finite() || (h & 0x8000) != (h.wrapping_add(1) & 0x8000) {
            continue;
        }
        // Exact: both neighbours have far fewer significant bits than f32.
        let mid = ((a as f64 + b as f64) / 2.0) as f32;
        assert_eq!(mid as f64, (a as f64 + b as f64) / 2.0);
        // One ulp towards zero and one away (`next_up` is newer than the crate's MSRV).
        out.extend([
            mid,
            f32::from_bits(mid.to_bits() - 1),
            f32::from_bits(mid.to_bits() + 1),
        ]);
    }
    out
}

#[test]
fn f16_decoding_matches_ggml_for_every_pattern() {
    for h in 0..=u16::MAX {
        let (ours, reference) = (dec1(GgmlType::F16, h), ggml_fp16_to_fp32(h));
        if reference.is_nan() {
            assert!(ours.is_nan(), "{h:#06x}");
            assert_eq!(ours.is_sign_negative(), reference.is_sign_negative());
        } else {
            assert_eq!(ours.to_bits(), reference.to_bits(), "{h:#06x}");
        }
    }
}

/// Encoding every f16 value, and every f32 at or beside a rounding boundary (the ties included),
/// gives ggml's bits. NaN: ggml's portable path writes 0x7e00 whatever the payload while F16C (and
/// the `half` crate) keep the payload, so only NaN-ness and sign are compared.
#[test]
fn f16_encoding_matches_ggml_at_every_boundary() {
    let mut xs: Vec<f32> = (0..=u16::MAX).map(ggml_fp16_to_fp32).collect();
    xs.extend(boundaries(ggml_fp16_to_fp32));
    // Overflow: 65520 is the midpoint between 65504 and the next (absent) value: it rounds to inf.
    xs.extend([65519.996, 65520.0, 65520.004, 1e10, f32::MAX, f32::INFINITY]);
    let mut ties = 0;
    for x in xs {
        let ours = enc1(GgmlType::F16, x);
        if x.is_nan() {
            assert!(dec1(GgmlType::F16, ours).is_nan());
            continue;
        }
        assert_eq!(ours, ggml_fp32_to_fp16(x), "{x:e} ({:#010x})", x.to_bits());
        assert_eq!(ours, ggml_fp32_to_fp16(-x) ^ 0x8000, "-{x:e}");
        ties += (x != dec1(GgmlType::F16, ours)) as usize;
    }
    assert!(
        ties > 100_000,
        "the boundary set must be mostly inexact values"
    );
}

#[test]
fn bf16_decoding_is_the_top_half_for_every_pattern() {
    for h in 0..=u16::MAX {
        assert_eq!(
            dec1(GgmlType::BF16, h).to_bits(),
            (h as u32) << 16,
            "{h:#06x}"
        );
    }
}

#[test]
fn bf16_encoding_rounds_to_nearest_even_at_every_boundary() {
    let mut xs = boundaries(|h| f32::from_bits((h as u32) << 16));
    // NaNs: quiet, signalling with payloads in the kept and in the dropped half.
    xs.extend(
        [
            0x7fc0_0000u32,
            0x7f80_0001,
            0xff80_0001,
            0x7fbf_ffff,
            0x7f81_0000,
        ]
        .map(f32::from_bits),
    );
    xs.extend([f32::MAX, f32::MIN_POSITIVE, 1e-45, f32::INFINITY, -0.0]);
    for x in xs {
        let ours = enc1(GgmlType::BF16, x);
        assert_eq!(ours, bf16_reference(x), "{x:e} ({:#010x})", x.to_bits());
        if !x.is_nan() {
            assert_eq!(ours, half::bf16::from_f32(x).to_bits(), "{x:e}");
        }
    }
    // The largest finite f32 is above the last midpoint: it rounds to infinity.
    assert_eq!(enc1(GgmlType::BF16, f32::MAX), 0x7f80);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn f32_round_trip_is_bit_exact(bits in prop::collection::vec(any::<u32>(), 0..64)) {
        let x: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let q = quant::quantize(GgmlType::F32, &x).unwrap();
        prop_assert_eq!(q.len(), 4 * x.len());
        let y = quant::dequantize(GgmlType::F32, &q, x.len()).unwrap();
        prop_assert_eq!(y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), bits);
    }

    #[test]
    fn f16_and_bf16_match_ggml_on_random_f32(bits in prop::collection::vec(any::<u32>(), 1..64)) {
        let x: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let h = quant::quantize(GgmlType::F16, &x).unwrap();
        let b = quant::quantize(GgmlType::BF16, &x).unwrap();
        for (i, &v) in x.iter().enumerate() {
            let hi = u16::from_le_bytes([h[2 * i], h[2 * i + 1]]);
            let bi = u16::from_le_bytes([b[2 * i], b[2 * i + 1]]);
            prop_assert_eq!(bi, bf16_reference(v));
            if !v.is_nan() {
                prop_assert_eq!(hi, ggml_fp32_to_fp16(v));
            }
        }
        // Decoding what was encoded gives the 16-bit value back unchanged.
        let hy = quant::dequantize(GgmlType::F16, &h, x.len()).unwrap();
        let by = quant::dequantize(GgmlType::BF16, &b, x.len()).unwrap();
        prop_assert_eq!(quant::quantize(GgmlType::BF16, &by).unwrap(), b);
        let h2 = quant::quantize(GgmlType::F16, &hy).unwrap();
        for (i, v) in hy.iter().enumerate() {
            if !v.is_nan() {
                prop_assert_eq!(&h2[2 * i..2 * i + 2], &h[2 * i..2 * i + 2]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ternary formats.

/// A positive finite f16 scale (normal or subnormal), from its bits.
fn f16_scale() -> impl Strategy<Value = half::f16> {
    (1u16..0x7c00).prop_map(half::f16::from_bits)
}

/// Blocks of ternary values with one f16 scale each; a block with no non-zero value gets scale 0
/// (the only scale the reference quantizer can give it).
fn ternary_blocks(block: usize) -> impl Strategy<Value = Vec<(Vec<i8>, half::f16)>> {
    prop::collection::vec((prop::collection::vec(-1i8..=1, block), f16_scale()), 1..4).prop_map(
        |blocks| {
            blocks
                .into_iter()
                .map(|(t, d)| {
                    let d = if t.iter().all(|&v| v == 0) {
                        half::f16::ZERO
                    } else {
                        d
                    };
                    (t, d)
                })
                .collect()
        },
    )
}

fn ternary_times_scale(blocks: &[(Vec<i8>, half::f16)]) -> Vec<f32> {
    blocks
        .iter()
        .flat_map(|(t, d)| t.iter().map(move |&v| v as f32 * d.to_f32()))
        .collect()
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// x = t * d with d an f16 value: the block's amax is d, so the encoder recovers t and d
    /// exactly and decoding gives x back bit for bit.
    #[test]
    fn tq2_0_is_exact_on_ternary_times_scale(blocks in ternary_blocks(256)) {
        let x = ternary_times_scale(&blocks);
        let q = quant::quantize(GgmlType::TQ2_0, &x).unwrap();
        prop_assert_eq!(q.len(), blocks.len() * tq2_0::BLOCK_BYTES);
        prop_assert_eq!(bits(&quant::dequantize(GgmlType::TQ2_0, &q, x.len()).unwrap()), bits(&x));
    }

    #[test]
    fn tq1_0_is_exact_on_ternary_times_scale(blocks in ternary_blocks(256)) {
        let x = ternary_times_scale(&blocks);
        let q = quant::quantize(GgmlType::TQ1_0, &x).unwrap();
        prop_assert_eq!(q.len(), blocks.len() * tq1_0::BLOCK_BYTES);
        prop_assert_eq!(bits(&quant::dequantize(GgmlType::TQ1_0, &q, x.len()).unwrap()), bits(&x));
    }

    /// Every block `pack_block` can produce from a ternary vector and a scale the quantizer could
    /// choose survives decode + encode unchanged.
    #[test]
    fn tq_blocks_survive_decode_then_encode(blocks in ternary_blocks(256)) {
        for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
            let mut q = Vec::new();
            for (t, d) in &blocks {
                match ty {
                    GgmlType::TQ1_0 => tq1_0::pack_block(t, *d, &mut q),
                    _ => tq2_0::pack_block(t, *d, &mut q),
                }
            }
            let n = blocks.len() * 256;
            let x = quant::dequantize(ty, &q, n).unwrap();
            prop_assert_eq!(&quant::quantize(ty, &x).unwrap(), &q, "{}", ty);
            // And the decoded trits are the packed ones.
            for (b, (t, _)) in blocks.iter().enumerate() {
                for (j, &v) in t.iter().enumerate() {
                    let blk = &q[b * ty.block().bytes as usize..];
                    let got = match ty {
                        GgmlType::TQ1_0 => tq1_0::trit(blk, j),
                        _ => tq2_0::trit(blk, j),
                    };
                    prop_assert_eq!(got, v, "{} block {} weight {}", ty, b, j);
                }
            }
        }
    }

    /// I2_S: one f32 scale per tensor; the encoder (bitnet.cpp `quantize_i2_s`) takes signs and
    /// max|w|, so x = t * s with s >= 1e-6 (below that it rounds weights to 0) comes back exactly.
    #[test]
    fn i2_s_is_exact_on_ternary_times_scale(
        t in prop::collection::vec(-1i8..=1, 128..=128 * 4),
        s_bits in 0x3586_37bdu32..0x7f80_0000, // from 1e-6 (as f32) to f32::MAX
    ) {
        let n = t.len() / 128 * 128;
        let t = &t[..n];
        let s = if t.iter().all(|&v| v == 0) { 0.0 } else { f32::from_bits(s_bits) };
        let x: Vec<f32> = t.iter().map(|&v| v as f32 * s).collect();
        for layout in [I2sLayout::Block128, I2sLayout::Block64] {
            let q = i2_s::quantize(&x, layout).unwrap();
            prop_assert_eq!(&q, &i2_s::pack(t, s, layout).unwrap());
            let mut y = vec![0f32; n];
            i2_s::dequantize(&q, &mut y, layout).unwrap();
            prop_assert_eq!(bits(&y), bits(&x));
            prop_assert_eq!(&i2_s::quantize(&y, layout).unwrap(), &q);
        }
        prop_assert_eq!(
            quant::quantize(GgmlType::I2_S, &x).unwrap(),
            i2_s::pack(t, s, I2sLayout::Block128).unwrap()
        );
    }

    /// Q8_0: each element is within d/2 of its value, d = amax/127, plus what storing d as f16
    /// costs (at most 127 * |d - f16(d)|) and f32 rounding of x * (1/d) (two ulps of 127).
    #[test]
    fn q8_0_error_is_bounded_by_half_a_step(
        blocks in prop::collection::vec(
            (prop::collection::vec(-1f32..1f32, 32), -30i32..16),
            1..6,
        )
    ) {
        let x: Vec<f32> = blocks
            .iter()
            .flat_map(|(v, e)| {
                let s = f32::from_bits(((127 + e) as u32) << 23); // 2^e: exact scaling
                v.iter().map(move |a| a * s)
            })
            .collect();
        let q = quant::quantize(GgmlType::Q8_0, &x).unwrap();
        let y = quant::dequantize(GgmlType::Q8_0, &q, x.len()).unwrap();
        for (b, (xs, ys)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = (amax / 127.0) as f64;
            let d16 = half::f16::from_f32(amax / 127.0).to_f32() as f64;
            let stored = half::f16::from_le_bytes([q[b * 34], q[b * 34 + 1]]).to_f32() as f64;
            prop_assert_eq!(stored, d16);
            let bound = d * (0.5 + 127.0 * 2f64.powi(-21)) + 127.0 * (d - d16).abs();
            for (i, (&xv, &yv)) in xs.iter().zip(ys).enumerate() {
                let err = (xv as f64 - yv as f64).abs();
                prop_assert!(err <= bound, "block {} elem {}: x {} y {} err {} > {}", b, i, xv, yv, err, bound);
            }
            // With d exact in f16 the bound is d/2 itself (up to the rounding of x/d).
            if d == d16 {
                for (&xv, &yv) in xs.iter().zip(ys) {
                    prop_assert!((xv as f64 - yv as f64).abs() <= d * (0.5 + 127.0 * 2f64.powi(-22)));
                }
            }
        }
    }
}

/// A round trip that loses information is caught: Q8_0 on a block whose step is 1 keeps
/// integers, rounds halves away from zero (C `roundf`), and the error of 0.5 sits on the bound.
#[test]
fn q8_0_rounds_half_away_from_zero() {
    let mut x = vec![0f32; 32];
    x[0] = 127.0; // d = 1, id = 1: x * id is exact
    x[1..7].copy_from_slice(&[0.5, 1.5, 2.5, -0.5, -2.5, 126.5]);
    let q = quant::quantize(GgmlType::Q8_0, &x).unwrap();
    let qs: Vec<i8> = q[2..9].iter().map(|&b| b as i8).collect();
    assert_eq!(qs, [127, 1, 2, 3, -1, -3, 127]);
    assert_eq!(half::f16::from_le_bytes([q[0], q[1]]).to_f32(), 1.0);
}

// ---------------------------------------------------------------------------------------------
// Row tails and buffer sizes.

#[test]
fn partial_blocks_are_format_errors() {
    let cases: [(GgmlType, usize); 4] = [
        (GgmlType::Q8_0, 32),
        (GgmlType::TQ1_0, 256),
        (GgmlType::TQ2_0, 256),
        (GgmlType::I2_S, 128),
    ];
    for (ty, block) in cases {
        for n in [1, block - 1, block + 1, 2 * block + 7] {
            let x = vec![0.5f32; n];
            let err = quant::quantize(ty, &x).unwrap_err();
            assert!(
                matches!(err, Error::Format { .. }),
                "{ty} quantize {n}: {err:?}"
            );
            assert!(err.to_string().contains("not a multiple"), "{ty}: {err}");
            // Decoding: a partial block count, whatever the byte length.
            for bytes in [0, n, 4 * n, block / 4 + 32] {
                let err = quant::dequantize(ty, &vec![0u8; bytes], n).unwrap_err();
                assert!(
                    matches!(err, Error::Format { .. }),
                    "{ty} dequantize {n}: {err:?}"
                );
            }
        }
        // Whole blocks with the wrong number of bytes.
        let good = quant::quantize(ty, &vec![0.25f32; 2 * block]).unwrap();
        for len in [0, good.len() - 1, good.len() + 1, 2 * good.len()] {
            let mut b = good.clone();
            b.resize(len, 0);
            let err = quant::dequantize(ty, &b, 2 * block).unwrap_err();
            assert!(
                matches!(err, Error::Format { .. }),
                "{ty} {len} bytes: {err:?}"
            );
            assert!(err.to_string().contains("need"), "{ty}: {err}");
        }
    }
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        let width = ty.block().bytes as usize;
        for (bytes, n) in [(width - 1, 1), (width + 1, 1), (0, 3), (width * 3, 2)] {
            let err = quant::dequantize(ty, &vec![0u8; bytes], n).unwrap_err();
            assert!(matches!(err, Error::Format { .. }), "{ty}: {err:?}");
        }
    }
    // Types without a codec say so instead of guessing.
    let err = quant::dequantize(GgmlType::Q4_K, &[0u8; 144], 256).unwrap_err();
    assert!(
        err.to_string().contains("inspected but not decoded"),
        "{err}"
    );
    assert!(quant::quantize(GgmlType::MXFP4, &[0.0; 32]).is_err());
}

/// The official layout needs multiples of 128; 64-weight tensors read only as `Block64`.
#[test]
fn i2_s_64_weights_need_the_64_layout() {
    let q = i2_s::pack(&[1i8; 64], 1.0, I2sLayout::Block64).unwrap();
    assert_eq!(q.len(), 64 / 4 + 32);
    let err = quant::dequantize(GgmlType::I2_S, &q, 64).unwrap_err();
    assert!(err.to_string().contains("128-weight block"), "{err}");
    let mut y = vec![0f32; 64];
    i2_s::dequantize(&q, &mut y, I2sLayout::Block64).unwrap();
    assert_eq!(y, vec![1.0; 64]);
}

// ---------------------------------------------------------------------------------------------
// I2_S against a bit-level reading of formats.md: weight j of a block sits in byte j % B of the
// block (B = 32 bytes for 128-weight blocks, 16 for 64), at bit shift 6 - 2 * (j / B); codes
// 0, 1, 2 mean -1, 0, +1; the f32 scale follows the n/4 code bytes, then padding to 32 bytes.

fn direct_i2s(bytes: &[u8], n: usize, block_bytes: usize) -> Vec<Option<i8>> {
    let weights = 4 * block_bytes;
    (0..n)
        .map(|i| {
            let (b, j) = (i / weights, i % weights);
            let code =
                (bytes[b * block_bytes + j % block_bytes] >> (6 - 2 * (j / block_bytes))) & 3;
            match code {
                0 => Some(-1),
                1 => Some(0),
                2 => Some(1),
                _ => None,
            }
        })
        .collect()
}

fn layout_bytes(layout: I2sLayout) -> usize {
    match layout {
        I2sLayout::Block128 => 32,
        I2sLayout::Block64 => 16,
    }
}

/// Random code bytes with no code 3 (each 2-bit field mapped into 0..3).
fn valid_codes(seed: u64, len: usize) -> Vec<u8> {
    det_bytes(seed, len)
        .into_iter()
        .map(|b| {
            (0..4).fold(0u8, |acc, k| {
                let c = ((b >> (2 * k)) & 3) % 3;
                acc | (c << (2 * k))
            })
        })
        .collect()
}

fn i2s_image(codes: &[u8], scale: f32, padding: &[u8]) -> Vec<u8> {
    let mut v = codes.to_vec();
    v.extend_from_slice(&scale.to_le_bytes());
    v.extend_from_slice(padding);
    assert_eq!(v.len(), codes.len() + 32);
    v
}

#[test]
fn i2_s_matches_the_bit_level_reading_in_both_layouts() {
    for (seed, n) in [(1u64, 128usize), (2, 256), (3, 128 * 7), (4, 2560)] {
        let codes = valid_codes(seed, n / 4);
        let image = i2s_image(&codes, -0.375, &[0; 28]);
        for layout in [I2sLayout::Block128, I2sLayout::Block64] {
            let want: Vec<i8> = direct_i2s(&image, n, layout_bytes(layout))
                .into_iter()
                .map(|t| t.expect("no code 3"))
                .collect();
            assert_eq!(
                i2_s::trits(&image, n, layout).unwrap(),
                want,
                "{layout:?} n={n}"
            );
            let mut y = vec![0f32; n];
            i2_s::dequantize(&image, &mut y, layout).unwrap();
            let want_y: Vec<f32> = want.iter().map(|&t| t as f32 * -0.375).collect();
            assert_eq!(bits(&y), bits(&want_y));
            // pack is the inverse of the reading.
            assert_eq!(i2_s::pack(&want, -0.375, layout).unwrap(), image);
        }
        // The two layouts disagree on the same bytes (the reading is not layout-blind).
        assert_ne!(
            i2_s::trits(&image, n, I2sLayout::Block128).unwrap(),
            i2_s::trits(&image, n, I2sLayout::Block64).unwrap()
        );
        assert_eq!(i2_s::scale(&image, n).unwrap(), -0.375);
    }
}

#[test]
fn i2_s_first_weights_sit_in_the_top_bits() {
    // Weight 0 -> byte 0 bits 7..6; weight 32 -> byte 0 bits 5..4; weight 1 -> byte 1 bits 7..6.
    let mut t = vec![0i8; 128];
    t[0] = 1; // code 2
    t[32] = -1; // code 0
    t[1] = 1;
    let q = i2_s::pack(&t, 1.0, I2sLayout::Block128).unwrap();
    assert_eq!(q[0], 0b10_00_01_01);
    assert_eq!(q[1], 0b10_01_01_01);
    assert!(q[2..32].iter().all(|&b| b == 0b01_01_01_01));
}

#[test]
fn i2_s_code_3_is_corrupt() {
    let n = 256;
    for layout in [I2sLayout::Block128, I2sLayout::Block64] {
        let bb = layout_bytes(layout);
        for (byte, shift) in [(0usize, 6u32), (5, 0), (17, 2), (n / 4 - 1, 4)] {
            let mut codes = valid_codes(9, n / 4);
            codes[byte] = (codes[byte] & !(3 << shift)) | (3 << shift);
            let image = i2s_image(&codes, 1.0, &[0; 28]);
            // Which weight that is, by the formula: block, byte in block, shift.
            let weight = byte / bb * 4 * bb + (3 - shift as usize / 2) * bb + byte % bb;
            assert_eq!(direct_i2s(&image, n, bb)[weight], None);
            let err = i2_s::trits(&image, n, layout).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .contains(&format!("weight {weight} has code 3")),
                "{err}"
            );
            let mut y = vec![0f32; n];
            assert!(i2_s::dequantize(&image, &mut y, layout).is_err());
            // Every reading visits every 2-bit field, so the other layout finds it too.
            assert!(quant::dequantize(GgmlType::I2_S, &image, n).is_err());
        }
    }
}

#[test]
fn i2_s_padding_after_the_scale_is_ignored() {
    let n = 384;
    let codes = valid_codes(11, n / 4);
    let clean = i2s_image(&codes, 0.8125, &[0; 28]);
    let want = quant::dequantize(GgmlType::I2_S, &clean, n).unwrap();
    for seed in 0..16 {
        let dirty = i2s_image(&codes, 0.8125, &det_bytes(100 + seed, 28));
        assert_eq!(
            bits(&quant::dequantize(GgmlType::I2_S, &dirty, n).unwrap()),
            bits(&want)
        );
        let mut y = vec![0f32; n];
        i2_s::dequantize(&dirty, &mut y, I2sLayout::Block64).unwrap();
        assert_eq!(i2_s::scale(&dirty, n).unwrap(), 0.8125);
    }
    // The scale bytes themselves are not padding.
    let other = i2s_image(&codes, 0.5, &[0; 28]);
    assert_ne!(quant::dequantize(GgmlType::I2_S, &other, n).unwrap(), want);
}

/// `dequantize` is handed element counts that come from file headers: it must check them against
/// the bytes before allocating the output (a count of 2^50 aborted the process before).
#[test]
fn dequantize_checks_the_count_before_allocating() {
    for ty in GgmlType::CODEC {
        for bytes in [0usize, 34, 66] {
            let err = quant::dequantize(ty, &vec![0u8; bytes], 1 << 50).unwrap_err();
            assert!(matches!(err, Error::Format { .. }), "{ty}: {err:?}");
            assert!(err.to_string().contains(ty.name()), "{ty}: {err}");
        }
    }
    let err = quant::dequantize(GgmlType::Q4_K, &[0u8; 144], 1 << 50).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
}

/// Values outside -1..=1 cannot be packed: I2_S would write code 3, which its own reader rejects.
#[test]
fn i2_s_pack_rejects_non_ternary_values() {
    for bad in [2i8, -2, 127, i8::MIN] {
        let mut t = vec![0i8; 128];
        t[77] = bad;
        for layout in [I2sLayout::Block128, I2sLayout::Block64] {
            let err = i2_s::pack(&t, 1.0, layout).unwrap_err();
            assert!(matches!(err, Error::Format { .. }), "{err:?}");
            assert!(err.to_string().contains("index 77"), "{err}");
        }
    }
}
