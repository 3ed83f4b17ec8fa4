//! Q6_K: ggml's 6-bit K-quant (`block_q6_K`, 210 bytes per 256 weights), the type newer
//! bitnet.cpp conversions write for `token_embd.weight` (and an untied `output.weight`).
//!
//! Layout of one block, as in ggml-common.h: `ql[128]` (low 4 bits of each 6-bit code),
//! `qh[64]` (high 2 bits), `scales[16]` (int8, one per 16 weights), `d` (f16 super-scale).
//! Weight `w = d * scales[s] * (q - 32)` with `q` in 0..64. In each 128-weight half `h`
//! (bytes `ql[64h..64h+64]`, `qh[32h..32h+32]`, `scales[8h..8h+8]`), for `l` in 0..32:
//! weight `l` is `ql[l] & 0xF` with `qh[l]` bits 0-1, weight `l + 32` is `ql[l + 32] & 0xF`
//! with bits 2-3, weight `l + 64` is `ql[l] >> 4` with bits 4-5, weight `l + 96` is
//! `ql[l + 32] >> 4` with bits 6-7; the scale of weight `i` (0..128) of the half is
//! `scales[8h + i / 16]`.
//!
//! Mirrors, operation for operation:
//! - [`dequantize`]: `dequantize_row_q6_K` (ggml-quants.c);
//! - [`quantize`]: `quantize_row_q6_K_ref` (ggml-quants.c) with its `make_qx_quants(16, 32, x,
//!   L, 1, NULL)` search, i.e. what `ggml_quantize_chunk` and llama-quantize write for Q6_K
//!   without an importance matrix, byte for byte. Files written with an imatrix
//!   (`quantize_row_q6_K_impl`) or by other tools are read the same way: the decoder does not
//!   care which encoder chose the codes;
//! - [`vec_dot_q8_k`]: `ggml_vec_dot_q6_K_q8_K_generic` (ggml-cpu/quants.c), Q6_K weights with
//!   Q8_K activations (Q6_K's `vec_dot_type`), with its `aux8`/`aux16`/`aux32`/`sums[8]`
//!   structure (see the function for the one fused multiply-add).

use super::check_blocks;
use super::q8_k::BlockQ8K;
use crate::error::Result;

/// Weights per block (`QK_K`).
pub const BLOCK: usize = 256;
/// Bytes of `ql`: the low 4 bits of each code.
pub const QL_BYTES: usize = BLOCK / 2;
/// Bytes of `qh`: the high 2 bits of each code.
pub const QH_BYTES: usize = BLOCK / 4;
/// Sub-block scales (int8), one per 16 weights.
pub const N_SCALES: usize = BLOCK / 16;
/// Offsets of the fields in a block.
const QH_AT: usize = QL_BYTES;
const SCALES_AT: usize = QH_AT + QH_BYTES;
const D_AT: usize = SCALES_AT + N_SCALES;
pub const BLOCK_BYTES: usize = D_AT + 2;
const _: () = assert!(BLOCK_BYTES == 210);

/// ggml's `GROUP_MAX_EPS`: a group whose largest |x| is below it is all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;
/// `nmax` of the 6-bit codes: values -32..=31, stored + 32.
const NMAX: i32 = 32;

/// ggml's `nearest_int` (round half to even through 1.5 * 2^23) as compiled with NDEBUG: no
/// range assertion. Exact for |x| < 2^22, which every finite input of this encoder stays
/// within; non-finite and huge arguments (only from inputs holding inf or NaN, or values near
/// f32::MAX whose squares overflow) give the same bits as ggml's, without stopping.
#[inline]
fn nearest_int(x: f32) -> i32 {
    let val = x + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

#[inline]
fn f16_bits_to_f32(lo: u8, hi: u8) -> f32 {
    half::f16::from_le_bytes([lo, hi]).to_f32()
}

/// The 256 signed codes (`q - 32`, in -32..=31) of one block, in weight order: the `aux8`
/// loop of `ggml_vec_dot_q6_K_q8_K_generic`, and the code part of `dequantize_row_q6_K`.
#[inline]
fn codes(block: &[u8], out: &mut [i8; BLOCK]) {
    let (ql, qh) = (&block[..QL_BYTES], &block[QH_AT..SCALES_AT]);
    for h in 0..BLOCK / 128 {
        let (ql, qh) = (&ql[64 * h..64 * h + 64], &qh[32 * h..32 * h + 32]);
        let a = &mut out[128 * h..128 * h + 128];
        for l in 0..32 {
            a[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            a[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            a[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            a[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
}

/// `dequantize_row_q6_K`: `y = d * scales[s] * (q - 32)`, evaluated as `(d * sc) * q` in f32.
pub fn dequantize(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_blocks("q6_K", bytes.len(), out.len(), BLOCK, BLOCK_BYTES)?;
    let mut q = [0i8; BLOCK];
    for (blk, y) in bytes
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = f16_bits_to_f32(blk[D_AT], blk[D_AT + 1]);
        codes(blk, &mut q);
        let sc = &blk[SCALES_AT..D_AT];
        // Weight i's scale is scales[i / 16] (in ggml: sc[is + 0/2/4/6] with is = l / 16 for
        // weights l, l + 32, l + 64, l + 96 of each half, sc advancing by 8 per half).
        for (i, (o, &q)) in y.iter_mut().zip(&q).enumerate() {
            *o = d * sc[i / 16] as i8 as f32 * q as f32;
        }
    }
    Ok(())
}

/// `make_qx_quants(16, 32, x, L, rmse_type = 1, qw = NULL)`: the scale of one 16-weight group
/// and its codes `L` (0..64, or all 0 for a zero group), by ggml's search over 19 candidate
/// inverse scales weighted by `x^2`.
fn make_qx_quants(x: &[f32], l_out: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let clamp = |l: i32| l.clamp(-NMAX, NMAX - 1);
    let mut iscale = -(NMAX as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (&v, o) in x.iter().zip(l_out.iter_mut()) {
        let l = clamp(nearest_int(iscale * v));
        *o = (l + NMAX) as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    // C's `suml2 ? a : b` takes NaN as true, as `!= 0.0` does.
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(NMAX as f32 + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = clamp(nearest_int(iscale * v));
            let w = v * v;
            sumlx += w * v * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (&v, o) in x.iter().zip(l_out.iter_mut()) {
                *o = (NMAX + clamp(nearest_int(iscale * v))) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `quantize_row_q6_K_ref`: per 16-weight group a float scale from [`make_qx_quants`]; the
/// group scale of largest magnitude sets `iscale = -128 / max_scale` and `d = f16(1/iscale)`;
/// each group's int8 scale is `min(127, nearest_int(iscale * scale))` (truncated to int8 as C's
/// store does); codes are `nearest_int(x / (d * sc))` clamped to -32..=31 (groups whose
/// `d * sc` is 0 keep `make_qx_quants`' codes). A block whose group scales are all below
/// 1e-15 is all zero bytes. Length must be a multiple of 256.
pub fn quantize(values: &[f32]) -> Result<Vec<u8>> {
    let blocks = check_blocks("q6_K", 0, values.len(), BLOCK, 0)?;
    let mut out = Vec::with_capacity(blocks * BLOCK_BYTES);
    let mut l = [0i8; BLOCK];
    let mut scales = [0f32; N_SCALES];
    for x in values.chunks_exact(BLOCK) {
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for ((s, xg), lg) in scales
            .iter_mut()
            .zip(x.chunks_exact(16))
            .zip(l.chunks_exact_mut(16))
        {
            *s = make_qx_quants(xg, lg);
            let abs = s.abs();
            if abs > max_abs_scale {
                max_abs_scale = abs;
                max_scale = *s;
            }
        }
        let at = out.len();
        out.resize(at + BLOCK_BYTES, 0);
        let blk = &mut out[at..];
        if max_abs_scale < GROUP_MAX_EPS {
            // memset(&y[i], 0, ...) and d = f16(0): all zero bytes.
            continue;
        }
        let iscale = -128.0f32 / max_scale;
        let d16 = half::f16::from_f32(1.0 / iscale);
        blk[D_AT..].copy_from_slice(&d16.to_le_bytes());
        let dh = d16.to_f32();
        let mut sc = [0i8; N_SCALES];
        for (q, &s) in sc.iter_mut().zip(&scales) {
            // `int8_t = MIN(127, int)`: values below -128 wrap, as the C store truncates.
            *q = nearest_int(iscale * s).min(127) as i8;
        }
        for (j, &q) in sc.iter().enumerate() {
            let d = dh * q as f32;
            if d == 0.0 {
                continue;
            }
            for (o, &v) in l[16 * j..16 * j + 16]
                .iter_mut()
                .zip(&x[16 * j..16 * j + 16])
            {
                *o = (nearest_int(v / d).clamp(-32, 31) + 32) as i8;
            }
        }
        for (b, &q) in blk[SCALES_AT..D_AT].iter_mut().zip(&sc) {
            *b = q as u8;
        }
        pack_codes(&l, blk);
    }
    Ok(out)
}

/// Pack 256 codes (0..64) into a block's `ql` and `qh` (the packing loop of
/// `quantize_row_q6_K_ref`).
fn pack_codes(l: &[i8; BLOCK], blk: &mut [u8]) {
    let (ql, rest) = blk.split_at_mut(QL_BYTES);
    let qh = &mut rest[..QH_BYTES];
    for h in 0..BLOCK / 128 {
        let l = &l[128 * h..128 * h + 128];
        let (ql, qh) = (&mut ql[64 * h..64 * h + 64], &mut qh[32 * h..32 * h + 32]);
        for i in 0..32 {
            let c = |k: usize| l[i + 32 * k] as u8;
            ql[i] = (c(0) & 0xF) | ((c(2) & 0xF) << 4);
            ql[i + 32] = (c(1) & 0xF) | ((c(3) & 0xF) << 4);
            qh[i] = (c(0) >> 4) | ((c(1) >> 4) << 2) | ((c(2) >> 4) << 4) | ((c(3) >> 4) << 6);
        }
    }
}

/// `ggml_vec_dot_q6_K_q8_K_generic`: Q6_K weights `row` with Q8_K activations `y` (one block
/// per 256 weights).
///
/// Per block: the signed codes (`aux8`); per 16-weight group `j`, in two halves of 8, the
/// int16 products `q8 * a` (`aux16`) times the group's int8 scale added into 8 int32 lanes
/// (`aux32[l]` gets element `l` of every 8); then `sums[l] += d * aux32[l]` with
/// `d = f16(x.d) * y.d`; finally `sumf = 0 + sums[0] + ... + sums[7]` in order.
///
/// `sums[l] += d * aux32[l]` is one fused multiply-add here ([`f32::mul_add`]): the C source
/// writes a product and a sum, but GCC contracts it (its default `-ffp-contract=fast`) into
/// `vfmadd231ps` in this `-mfma` build of ggml-cpu (read in the disassembly of
/// `ggml_vec_dot_q6_K_q8_K_generic`), and xval mirrors the oracle's arithmetic as compiled, so
/// the result is bit-exact against it (kernel_parity's `dot_q6_k`). A ggml built without FMA
/// rounds the product first: at most one rounding of 2^-24 per block term apart.
pub fn vec_dot_q8_k(row: &[u8], y: &[BlockQ8K]) -> f32 {
    debug_assert_eq!(
        row.len(),
        y.len() * BLOCK_BYTES,
        "q6_K row/activation mismatch"
    );
    let mut sums = [0f32; 8];
    let mut aux8 = [0i8; BLOCK];
    for (xb, yb) in row.chunks_exact(BLOCK_BYTES).zip(y) {
        codes(xb, &mut aux8);
        let mut aux32 = [0i32; 8];
        let scales = &xb[SCALES_AT..D_AT];
        for ((&scale, a), q8) in scales
            .iter()
            .zip(aux8.chunks_exact(16))
            .zip(yb.qs.chunks_exact(16))
        {
            let scale = scale as i8 as i32;
            for (a, q8) in a.chunks_exact(8).zip(q8.chunks_exact(8)) {
                for l in 0..8 {
                    // |q8 * a| <= 128 * 32: exact in int16, as ggml's aux16.
                    let aux16 = (q8[l] as i16) * (a[l] as i16);
                    aux32[l] += scale * aux16 as i32;
                }
            }
        }
        let d = f16_bits_to_f32(xb[D_AT], xb[D_AT + 1]) * yb.d;
        for (s, &a) in sums.iter_mut().zip(&aux32) {
            *s = d.mul_add(a as f32, *s);
        }
    }
    let mut sumf = 0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn lcg(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// Every value comes back within two quantization steps of its group (`d * |sc|`): half a
    /// step of rounding inside the code range; at the group's extremes, which clamp to -32 or
    /// 31, more: the least-squares scale `make_qx_quants` picks may be a few percent below
    /// `max / 32` (seen: an extreme 1.37 steps off). Plus what rounding the group's scale to
    /// int8 costs: at most half of `d` per unit of code, 32 * d / 2 = 1/256 of the block's
    /// largest |x|.
    #[test]
    fn round_trip_stays_within_the_six_bit_step() {
        let mut r = lcg(7);
        for scale in [1e-3f32, 0.1, 1.0, 300.0] {
            let x: Vec<f32> = (0..4 * BLOCK).map(|_| r() * scale).collect();
            let q = quantize(&x).unwrap();
            assert_eq!(q.len(), 4 * BLOCK_BYTES);
            let mut y = vec![0f32; x.len()];
            dequantize(&q, &mut y).unwrap();
            for (b, (xb, yb)) in x.chunks(BLOCK).zip(y.chunks(BLOCK)).enumerate() {
                let blk = &q[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
                let d = f16_bits_to_f32(blk[D_AT], blk[D_AT + 1]);
                let block_amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (g, (xg, yg)) in xb.chunks(16).zip(yb.chunks(16)).enumerate() {
                    let step = (d * blk[SCALES_AT + g] as i8 as f32).abs();
                    let tol = step * 2.0 + block_amax / 200.0;
                    for (a, b) in xg.iter().zip(yg) {
                        assert!(
                            (a - b).abs() <= tol,
                            "scale {scale}: {a} -> {b} (step {step})"
                        );
                    }
                }
            }
            // The whole block is reproduced closely: relative error of a 6-bit code.
            let err: f64 = x
                .iter()
                .zip(&y)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let sig: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
            assert!(err / sig < 1e-3, "scale {scale}: nmse {}", err / sig);
        }
    }

    #[test]
    fn zero_blocks_encode_as_zero_bytes() {
        let mut x = vec![0f32; 2 * BLOCK];
        x[BLOCK..].iter_mut().for_each(|v| *v = -0.0);
        x[3] = 1e-16; // below GROUP_MAX_EPS
        let q = quantize(&x).unwrap();
        assert!(q.iter().all(|&b| b == 0));
        let mut y = vec![1f32; 2 * BLOCK];
        dequantize(&q, &mut y).unwrap();
        assert!(y.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn code_layout_follows_ggml() {
        // Code k (0..64) for weight k % 64 of each 64, every other field fixed: decode must
        // give back (k - 32) * d * sc in ggml's element order.
        let mut l = [0i8; BLOCK];
        for (i, v) in l.iter_mut().enumerate() {
            *v = ((i * 37 + 11) % 64) as i8;
        }
        let mut blk = vec![0u8; BLOCK_BYTES];
        pack_codes(&l, &mut blk);
        for (j, s) in blk[SCALES_AT..D_AT].iter_mut().enumerate() {
            *s = (j as i8 - 8) as u8;
        }
        blk[D_AT..].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        let mut y = vec![0f32; BLOCK];
        dequantize(&blk, &mut y).unwrap();
        for (i, &v) in y.iter().enumerate() {
            let want = 0.5 * (i / 16) as f32 - 4.0;
            assert_eq!(v, want * (l[i] as f32 - 32.0), "weight {i}");
        }
        let mut a = [0i8; BLOCK];
        codes(&blk, &mut a);
        for i in 0..BLOCK {
            assert_eq!(a[i] as i32, l[i] as i32 - 32, "weight {i}");
        }
    }

    #[test]
    fn dot_matches_the_dequantized_dot_on_integers() {
        // d = 1 on both sides and small values: every partial sum is an exact integer, so the
        // kernel must equal the plain dot of the decoded weights with the int8 activations.
        let mut r = lcg(3);
        let x: Vec<f32> = (0..2 * BLOCK).map(|_| r()).collect();
        let mut q = quantize(&x).unwrap();
        for b in q.chunks_exact_mut(BLOCK_BYTES) {
            b[D_AT..].copy_from_slice(&half::f16::ONE.to_le_bytes());
        }
        let mut w = vec![0f32; x.len()];
        dequantize(&q, &mut w).unwrap();
        let y: Vec<BlockQ8K> = (0..2)
            .map(|_| {
                let mut b = BlockQ8K {
                    d: 1.0,
                    ..Default::default()
                };
                b.qs.iter_mut().for_each(|v| *v = (r() * 100.0) as i8);
                b
            })
            .collect();
        let want: f64 = w
            .iter()
            .zip(y.iter().flat_map(|b| b.qs.iter()))
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        assert_eq!(vec_dot_q8_k(&q, &y) as f64, want);
    }

    #[test]
    fn wrong_lengths_are_errors_naming_the_problem() {
        let err = quantize(&[0.0; 100]).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err:?}");
        assert!(
            err.to_string().contains("multiple of the block size 256"),
            "{err}"
        );
        let mut out = vec![0f32; BLOCK];
        let err = dequantize(&[0u8; 209], &mut out).unwrap_err();
        assert!(err.to_string().contains("q6_K"), "{err}");
        assert!(err.to_string().contains("need 210 bytes"), "{err}");
        let mut out = vec![0f32; 300];
        let err = dequantize(&[0u8; 420], &mut out).unwrap_err();
        assert!(err.to_string().contains("not a multiple"), "{err}");
    }

    #[test]
    fn non_finite_inputs_do_not_stop_the_encoder() {
        let mut x = vec![0.25f32; BLOCK];
        x[5] = f32::NAN;
        x[40] = f32::INFINITY;
        x[200] = f32::MAX;
        x[201] = -f32::MAX;
        let q = quantize(&x).unwrap();
        let mut y = vec![0f32; BLOCK];
        dequantize(&q, &mut y).unwrap();
    }
}
