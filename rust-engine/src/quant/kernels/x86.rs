//! x86-64 SIMD kernels, each tested bit for bit against its scalar reference in `quant/`
//! (`tests/kernels_simd.rs`), selected by [`super::Kernel::Avx2`] (`--kernel avx2|auto`) in
//! `quant::matmul::dot`. Integer sums only, and the float epilogue in the reference's order, so
//! every kernel set gives the same numbers. Reached through the safe wrappers below, which
//! decline (`None`) where the CPU or the layout does not fit.

use crate::quant::i2_s::I2sLayout;
use crate::quant::q8_k::BlockQ8K;
use crate::quant::tq2_0;

/// Whether this CPU runs the AVX2 kernels.
pub fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// I2_S row dot int8 activations, `sum (code - 1) * q`, with AVX2: the same integer as
/// [`crate::quant::i2_s::vec_dot_i8`]. `None` where this CPU has no AVX2 or the layout is not
/// the 128-weight one (the 64-weight ARM layout stays scalar on x86).
pub fn i2s_vec_dot_i8(codes: &[u8], q: &[i8], layout: I2sLayout) -> Option<i32> {
    if layout != I2sLayout::Block128 || !has_avx2() {
        return None;
    }
    assert_eq!(codes.len() % 32, 0, "i2_s rows are whole 128-weight blocks");
    assert_eq!(codes.len() * 4, q.len(), "i2_s row/activation mismatch");
    // SAFETY: AVX2 is present (checked above) and the lengths are whole blocks of matching
    // size (asserted), which is all the kernel reads.
    Some(unsafe { i2s_vec_dot_i8_avx2(codes, q) })
}

/// The ggml profile's I2_S dot (`i2_s::vec_dot_q8_k`: the lossless TQ2_0 view, d = 1) with the
/// AVX2 integer sums: per Q8_K block the same integer, then the same f32 operations in the same
/// order as the scalar reference, so the result is bit-identical.
pub fn i2s_vec_dot_q8_k(codes: &[u8], y: &[BlockQ8K], layout: I2sLayout) -> Option<f32> {
    if layout != I2sLayout::Block128 || !has_avx2() {
        return None;
    }
    assert_eq!(codes.len(), y.len() * 64, "i2_s row/activation mismatch");
    let mut sumf = 0f32;
    for (yb, blocks) in y.iter().zip(codes.chunks_exact(64)) {
        // SAFETY: AVX2 is present (checked above); 64 code bytes and 256 activations.
        let sumi = unsafe { i2s_vec_dot_i8_avx2(blocks, &yb.qs) };
        sumf += sumi as f32 * (yb.d * 1.0);
    }
    Some(sumf)
}

/// `ggml_vec_dot_tq2_0_q8_K` with AVX2 integer sums: per block `sumi * (d_x * d_y)` summed in
/// f32 in block order, as the scalar reference (`ternary::vec_dot_q8_k`), bit-identical.
pub fn tq2_0_vec_dot_q8_k(row: &[u8], y: &[BlockQ8K]) -> Option<f32> {
    if !has_avx2() {
        return None;
    }
    assert_eq!(
        row.len(),
        y.len() * tq2_0::BLOCK_BYTES,
        "tq2_0 row/activation mismatch"
    );
    let mut sumf = 0f32;
    for (blk, yb) in row.chunks_exact(tq2_0::BLOCK_BYTES).zip(y) {
        // SAFETY: AVX2 is present (checked above); a whole block and 256 activations.
        let sumi = unsafe { tq2_0_block_dot_i8_avx2(blk, &yb.qs) };
        sumf += sumi as f32 * (tq2_0::scale(blk) * yb.d);
    }
    Some(sumf)
}

/// TQ2_0 with one int8 activation row (`ternary::vec_dot_i8`) with AVX2 integer sums,
/// bit-identical to the scalar reference.
pub fn tq2_0_vec_dot_i8(row: &[u8], q: &[i8], act_scale: f32) -> Option<f32> {
    if !has_avx2() {
        return None;
    }
    assert_eq!(
        row.len() / tq2_0::BLOCK_BYTES * tq2_0::BLOCK,
        q.len(),
        "tq2_0 row/activation mismatch"
    );
    let mut sumf = 0f32;
    for (blk, qb) in row
        .chunks_exact(tq2_0::BLOCK_BYTES)
        .zip(q.chunks_exact(tq2_0::BLOCK))
    {
        // SAFETY: AVX2 is present (checked above); a whole block and 256 activations.
        let sumi = unsafe { tq2_0_block_dot_i8_avx2(blk, qb) };
        sumf += sumi as f32 * tq2_0::scale(blk);
    }
    Some(sumf / act_scale)
}

/// One TQ2_0 block's integer dot (`ggml_vec_dot_tq2_0_q8_K`'s AVX2 loop): two 32-byte chunks,
/// weight `32 l + k` of a chunk at bits `2 l` of byte `k`, codes (0, 1, 2) times activations
/// through `maddubs`, minus the activations' sum.
#[target_feature(enable = "avx2")]
unsafe fn tq2_0_block_dot_i8_avx2(blk: &[u8], q: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    debug_assert!(blk.len() >= 64 && q.len() == 256);
    let mask = _mm256_set1_epi8(3);
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    let mut qsum = _mm256_setzero_si256();
    for c in 0..2 {
        // SAFETY (loads): bytes 32c..32c+32 of the block and activations 128c..128c+128.
        let v = _mm256_loadu_si256(blk.as_ptr().add(32 * c) as *const __m256i);
        for l in 0..4 {
            let shifted = match l {
                0 => v,
                1 => _mm256_srli_epi16::<2>(v),
                2 => _mm256_srli_epi16::<4>(v),
                _ => _mm256_srli_epi16::<6>(v),
            };
            let codes = _mm256_and_si256(shifted, mask);
            let a = _mm256_loadu_si256(q.as_ptr().add(128 * c + 32 * l) as *const __m256i);
            acc = _mm256_add_epi32(
                acc,
                _mm256_madd_epi16(_mm256_maddubs_epi16(codes, a), ones16),
            );
            qsum = _mm256_add_epi32(
                qsum,
                _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, a), ones16),
            );
        }
    }
    hsum_epi32(_mm256_sub_epi32(acc, qsum))
}

/// `ggml_vec_dot_i2_i8_s` (bitnet.cpp, ggml-bitnet-mad.cpp) for one row: per 32-byte block,
/// group `g` of 32 weights sits at bits `6 - 2g` of the block's bytes; `maddubs` multiplies the
/// unsigned codes (0, 1, 2) by the int8 activations, and the activations' own sum is
/// subtracted at the end (`code - 1`). Pair sums stay within i16 (2 * 2 * 128 = 512), and
/// they are widened to i32 at once, so nothing saturates or wraps.
#[target_feature(enable = "avx2")]
unsafe fn i2s_vec_dot_i8_avx2(codes: &[u8], q: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let mask = _mm256_set1_epi8(3);
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    let mut qsum = _mm256_setzero_si256();
    for (blk, qb) in codes.chunks_exact(32).zip(q.chunks_exact(128)) {
        // SAFETY (loads): `blk` holds 32 bytes and `qb` 128, read unaligned.
        let v = _mm256_loadu_si256(blk.as_ptr() as *const __m256i);
        for g in 0..4 {
            let shifted = match g {
                0 => _mm256_srli_epi16::<6>(v),
                1 => _mm256_srli_epi16::<4>(v),
                2 => _mm256_srli_epi16::<2>(v),
                _ => v,
            };
            let c = _mm256_and_si256(shifted, mask);
            let a = _mm256_loadu_si256(qb.as_ptr().add(32 * g) as *const __m256i);
            let prod16 = _mm256_maddubs_epi16(c, a);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(prod16, ones16));
            let sum16 = _mm256_maddubs_epi16(ones8, a);
            qsum = _mm256_add_epi32(qsum, _mm256_madd_epi16(sum16, ones16));
        }
    }
    hsum_epi32(_mm256_sub_epi32(acc, qsum))
}

/// The sum of a vector's eight i32 lanes (wrapping, as the scalar i32 sum would not overflow
/// for any row a model holds: at most 127 * K with K <= 2^24).
#[target_feature(enable = "avx2")]
unsafe fn hsum_epi32(v: std::arch::x86_64::__m256i) -> i32 {
    use std::arch::x86_64::*;
    let lo = _mm256_castsi256_si128(v);
    let hi = _mm256_extracti128_si256::<1>(v);
    let s = _mm_add_epi32(lo, hi);
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}
