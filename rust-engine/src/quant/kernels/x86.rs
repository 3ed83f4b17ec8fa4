//! x86-64 SIMD kernels, each tested bit for bit against its scalar reference in `quant/`
//! (`tests/kernels_simd.rs`), selected by [`super::Kernel::Avx2`] (`--kernel avx2|auto`) in
//! `quant::matmul::dot`. Integer sums only, and the float epilogue in the reference's order, so
//! every kernel set gives the same numbers. Reached through the safe wrappers below, which
//! decline (`None`) where the CPU or the layout does not fit.

use crate::quant::i2_s::{self, I2sLayout};
use crate::quant::q8_k::BlockQ8K;
use crate::quant::ternary;
use crate::quant::tq2_0::{self, Tq2_0};

/// Whether this CPU runs the AVX2 kernels.
pub fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// I2_S row dot int8 activations, `sum (code - 1) * q`, with AVX2: the same integer as
/// [`i2_s::vec_dot_i8`]. `None` where this CPU has no AVX2 or the layout is not the 128-weight
/// one (the 64-weight ARM layout stays scalar on x86).
pub fn i2s_vec_dot_i8(codes: &[u8], q: &[i8], layout: I2sLayout) -> Option<i32> {
    if layout != I2sLayout::Block128 || !has_avx2() {
        return None;
    }
    assert_eq!(codes.len() % 32, 0, "i2_s rows are whole 128-weight blocks");
    assert_eq!(codes.len() * 4, q.len(), "i2_s row/activation mismatch");
    // SAFETY: AVX2 is present (checked above) and the lengths are whole 32-byte chunks with
    // 128 activations each (asserted), which is all the kernel reads.
    Some(unsafe { chunks_dot_i8(codes, q, Order::MsbFirst) })
}

/// The ggml profile's I2_S dot ([`i2_s::vec_dot_q8_k`], the lossless TQ2_0 view) with the
/// AVX2 integer sums and the scalar reference's own f32 epilogue, so bit-identical.
pub fn i2s_vec_dot_q8_k(codes: &[u8], y: &[BlockQ8K], layout: I2sLayout) -> Option<f32> {
    if layout != I2sLayout::Block128 || !has_avx2() {
        return None;
    }
    assert_eq!(codes.len(), y.len() * 64, "i2_s row/activation mismatch");
    // SAFETY: AVX2 is present (checked above); the epilogue hands over 64 code bytes and 256
    // activations per Q8_K block (lengths asserted).
    Some(i2_s::vec_dot_q8_k_by(codes, y, |c, q| unsafe {
        chunks_dot_i8(c, q, Order::MsbFirst)
    }))
}

/// `ggml_vec_dot_tq2_0_q8_K` with the AVX2 block sums and the scalar reference's own f32
/// epilogue ([`ternary::vec_dot_q8_k_by`]), so bit-identical.
pub fn tq2_0_vec_dot_q8_k(row: &[u8], y: &[BlockQ8K]) -> Option<f32> {
    if !has_avx2() {
        return None;
    }
    assert_eq!(
        row.len(),
        y.len() * tq2_0::BLOCK_BYTES,
        "tq2_0 row/activation mismatch"
    );
    // SAFETY: AVX2 is present (checked above); the epilogue hands over whole blocks and 256
    // activations each (lengths asserted).
    Some(ternary::vec_dot_q8_k_by::<Tq2_0>(row, y, |b, q| unsafe {
        tq2_0_block_dot_i8(b, q)
    }))
}

/// TQ2_0 with one int8 activation row ([`ternary::vec_dot_i8`]) with the AVX2 block sums and
/// the scalar reference's own epilogue, so bit-identical.
pub fn tq2_0_vec_dot_i8(row: &[u8], q: &[i8], act_scale: f32) -> Option<f32> {
    if !has_avx2() {
        return None;
    }
    assert_eq!(
        row.len() / tq2_0::BLOCK_BYTES * tq2_0::BLOCK,
        q.len(),
        "tq2_0 row/activation mismatch"
    );
    // SAFETY: as in `tq2_0_vec_dot_q8_k`.
    Some(ternary::vec_dot_i8_by::<Tq2_0>(
        row,
        q,
        act_scale,
        |b, q| unsafe { tq2_0_block_dot_i8(b, q) },
    ))
}

/// Where group `g` of a 32-byte chunk's four 32-weight groups sits in each byte.
#[derive(Clone, Copy)]
enum Order {
    /// Bits `6 - 2g`: I2_S (`ggml_vec_dot_i2_i8_s`, bitnet.cpp's ggml-bitnet-mad.cpp).
    MsbFirst,
    /// Bits `2g`: TQ2_0 (`ggml_vec_dot_tq2_0_q8_K`).
    LsbFirst,
}

/// One TQ2_0 block's integer dot: its 64 code bytes are two chunks, LSB group first (the
/// trailing f16 scale is not read).
#[target_feature(enable = "avx2")]
unsafe fn tq2_0_block_dot_i8(blk: &[u8], q: &[i8]) -> i32 {
    debug_assert!(blk.len() >= tq2_0::QS_BYTES && q.len() == tq2_0::BLOCK);
    chunks_dot_i8(&blk[..tq2_0::QS_BYTES], q, Order::LsbFirst)
}

/// `sum (code - 1) * q` over 32-byte chunks of 2-bit codes, each chunk with its 128 int8
/// activations (group `g`'s 32 weights in the bits `order` says): `maddubs` multiplies the
/// unsigned codes (0, 1, 2) by the activations and the activations' own sum is subtracted at
/// the end. Pair sums stay within i16 (2 * 2 * 128 = 512) and are widened to i32 at once, so
/// nothing saturates or wraps. The caller guarantees AVX2, `codes.len() % 32 == 0` and
/// `q.len() == 4 * codes.len()`.
#[target_feature(enable = "avx2")]
unsafe fn chunks_dot_i8(codes: &[u8], q: &[i8], order: Order) -> i32 {
    use std::arch::x86_64::*;
    let mask = _mm256_set1_epi8(3);
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    let mut qsum = _mm256_setzero_si256();
    for (chunk, qc) in codes.chunks_exact(32).zip(q.chunks_exact(128)) {
        // SAFETY (loads): `chunk` holds 32 bytes and `qc` 128, read unaligned.
        let v = _mm256_loadu_si256(chunk.as_ptr() as *const __m256i);
        for g in 0..4 {
            let bits = match order {
                Order::MsbFirst => 3 - g,
                Order::LsbFirst => g,
            };
            let shifted = match bits {
                0 => v,
                1 => _mm256_srli_epi16::<2>(v),
                2 => _mm256_srli_epi16::<4>(v),
                _ => _mm256_srli_epi16::<6>(v),
            };
            let c = _mm256_and_si256(shifted, mask);
            let a = _mm256_loadu_si256(qc.as_ptr().add(32 * g) as *const __m256i);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(c, a), ones16));
            qsum = _mm256_add_epi32(
                qsum,
                _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, a), ones16),
            );
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
