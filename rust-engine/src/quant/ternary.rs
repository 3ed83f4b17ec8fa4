//! What TQ1_0 and TQ2_0 share: 256 ternary weights and one f16 scale per block, ggml's reference
//! quantizer (`d = amax`, `trit = lroundf(x / d)`), dequantization `trit * d`, and the dot
//! products' per-block epilogue (`ggml_vec_dot_tq{1,2}_0_q8_K_generic`: `sumi * (d_x * d_y)`
//! summed in f32). Each format supplies only its packing ([`TernaryBlock`]); the shared loops are
//! monomorphized per format, so the integer inner loop still inlines.

use super::q8_k::BlockQ8K;
use super::{check_blocks, round_away};
use crate::error::Result;

/// Weights per block of both TQ formats.
pub const BLOCK: usize = 256;

/// One TQ block format: how its 256 trits and f16 scale are packed.
pub trait TernaryBlock {
    /// The format's name in errors (`tq1_0`).
    const NAME: &'static str;
    /// Bytes per block, scale included.
    const BLOCK_BYTES: usize;
    /// The ternary value (-1, 0, +1) of weight `j` (0..256) of a block.
    fn trit(block: &[u8], j: usize) -> i8;
    /// The block's f16 scale as f32.
    fn scale(block: &[u8]) -> f32;
    /// Pack 256 ternary values and a scale into one block.
    fn pack_block(trits: &[i8], d: half::f16, out: &mut Vec<u8>);
    /// Integer dot of one block's ternary values with 256 int8 activations, in the element
    /// order of ggml's generic kernel for the format.
    fn block_dot_i8(block: &[u8], q: &[i8]) -> i32;
}

/// `dequantize_row_tq*_0`: `trit * d` per weight.
pub fn dequantize<F: TernaryBlock>(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_blocks(F::NAME, bytes.len(), out.len(), BLOCK, F::BLOCK_BYTES)?;
    for (blk, y) in bytes
        .chunks_exact(F::BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = F::scale(blk);
        for (j, o) in y.iter_mut().enumerate() {
            *o = F::trit(blk, j) as f32 * d;
        }
    }
    Ok(())
}

/// `quantize_row_tq*_0_ref`: `d = amax` of the block, trit `lroundf(x * (1/d))`.
pub fn quantize<F: TernaryBlock>(values: &[f32]) -> Result<Vec<u8>> {
    let blocks = check_blocks(F::NAME, 0, values.len(), BLOCK, 0)?;
    let mut out = Vec::with_capacity(blocks * F::BLOCK_BYTES);
    let mut trits = [0i8; BLOCK];
    for x in values.chunks_exact(BLOCK) {
        let d = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (t, &v) in trits.iter_mut().zip(x) {
            // ggml stores (lroundf(x*id) + 1) & 3: out-of-range inputs cannot occur since
            // |x*id| <= 1.
            *t = round_away(v * id).clamp(-1, 1) as i8;
        }
        F::pack_block(&trits, half::f16::from_f32(d), &mut out);
    }
    Ok(out)
}

/// `ggml_vec_dot_tq*_0_q8_K_generic`: per block `sumi * (d_x * d_y)`, summed in f32.
pub fn vec_dot_q8_k<F: TernaryBlock>(row: &[u8], y: &[BlockQ8K]) -> f32 {
    vec_dot_q8_k_by::<F>(row, y, F::block_dot_i8)
}

/// [`vec_dot_q8_k`] with the blocks' integer dots from `block_dot` (a SIMD kernel's): the
/// epilogue stays this one, so every kernel set sums the same f32 values in the same order.
#[inline]
pub fn vec_dot_q8_k_by<F: TernaryBlock>(
    row: &[u8],
    y: &[BlockQ8K],
    block_dot: impl Fn(&[u8], &[i8]) -> i32,
) -> f32 {
    debug_assert_eq!(
        row.len(),
        y.len() * F::BLOCK_BYTES,
        "{} row/activation mismatch",
        F::NAME
    );
    let sums = row
        .chunks_exact(F::BLOCK_BYTES)
        .zip(y)
        .map(|(blk, yb)| block_dot(blk, &yb.qs));
    epilogue_q8_k(block_scales::<F>(row), y, sums)
}

/// Each block's scale as f32, in block order.
#[inline]
pub fn block_scales<F: TernaryBlock>(row: &[u8]) -> impl Iterator<Item = f32> + use<'_, F> {
    row.chunks_exact(F::BLOCK_BYTES).map(F::scale)
}

/// The float part of [`vec_dot_q8_k`] given the weight blocks' scales and each block's integer
/// dot (`sums`), in block order: `sumi * (d_x * d_y)` summed in f32.
#[inline]
pub fn epilogue_q8_k(
    scales: impl IntoIterator<Item = f32>,
    y: &[BlockQ8K],
    sums: impl IntoIterator<Item = i32>,
) -> f32 {
    let mut sumf = 0f32;
    for ((d_x, yb), sumi) in scales.into_iter().zip(y).zip(sums) {
        sumf += sumi as f32 * (d_x * yb.d);
    }
    sumf
}

/// TQ weights with bitnet.cpp-style activations (one int8 row, one scale): per block
/// `sumi * d_x` summed in f32, then divided by the activation scale. bitnet.cpp has no TQ
/// kernels; this is xval's natural extension of its epilogue to per-block scales.
pub fn vec_dot_i8<F: TernaryBlock>(row: &[u8], q: &[i8], act_scale: f32) -> f32 {
    vec_dot_i8_by::<F>(row, q, act_scale, F::block_dot_i8)
}

/// [`vec_dot_i8`] with the blocks' integer dots from `block_dot` (see [`vec_dot_q8_k_by`]).
#[inline]
pub fn vec_dot_i8_by<F: TernaryBlock>(
    row: &[u8],
    q: &[i8],
    act_scale: f32,
    block_dot: impl Fn(&[u8], &[i8]) -> i32,
) -> f32 {
    debug_assert_eq!(
        row.len() / F::BLOCK_BYTES * BLOCK,
        q.len(),
        "{} row/activation mismatch",
        F::NAME
    );
    let sums = row
        .chunks_exact(F::BLOCK_BYTES)
        .zip(q.chunks_exact(BLOCK))
        .map(|(blk, qb)| block_dot(blk, qb));
    epilogue_i8(block_scales::<F>(row), act_scale, sums)
}

/// The float part of [`vec_dot_i8`] given the weight blocks' scales and each block's integer
/// dot (`sums`), in block order.
#[inline]
pub fn epilogue_i8(
    scales: impl IntoIterator<Item = f32>,
    act_scale: f32,
    sums: impl IntoIterator<Item = i32>,
) -> f32 {
    let mut sumf = 0f32;
    for (d_x, sumi) in scales.into_iter().zip(sums) {
        sumf += sumi as f32 * d_x;
    }
    sumf / act_scale
}
