//! x86-64 SIMD kernels, each tested bit for bit against its scalar reference in `quant/`
//! (`tests/kernels_simd.rs`). Not yet selected by the engine: the kernel table, `--kernel` and
//! the receipts' kernel field come with the rest of the SIMD work; until then these are reached
//! only through the safe wrappers below.

use crate::quant::i2_s::I2sLayout;

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
