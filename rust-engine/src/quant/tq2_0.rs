//! TQ2_0: 256 ternary weights in 64 bytes of 2-bit codes, then an f16 scale (`block_tq2_0`,
//! 66 bytes). In each 32-byte chunk (128 weights), weight `m + 32*n` sits in byte `m` at bit
//! shift `2*n`; value = (code - 1) * d. Mirrors `quantize_row_tq2_0_ref` /
//! `dequantize_row_tq2_0` in ggml-quants.c.

use super::{check_blocks, round_away};
use crate::error::Result;

pub const BLOCK: usize = 256;
pub const QS_BYTES: usize = BLOCK / 4;
pub const BLOCK_BYTES: usize = QS_BYTES + 2;
const _: () = assert!(BLOCK_BYTES == 66);

/// The ternary value (-1, 0, +1) of weight `j` (0..256) of a block's code bytes.
#[inline]
pub fn trit(qs: &[u8], j: usize) -> i8 {
    let (chunk, r) = (j / 128, j % 128);
    let (m, n) = (r % 32, r / 32);
    ((qs[chunk * 32 + m] >> (2 * n)) & 3) as i8 - 1
}

/// The block's f16 scale as f32.
#[inline]
pub fn scale(block: &[u8]) -> f32 {
    half::f16::from_le_bytes([block[QS_BYTES], block[QS_BYTES + 1]]).to_f32()
}

pub fn dequantize(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_blocks("tq2_0", bytes.len(), out.len(), BLOCK, BLOCK_BYTES)?;
    for (blk, y) in bytes
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = scale(blk);
        for (j, o) in y.iter_mut().enumerate() {
            *o = trit(blk, j) as f32 * d;
        }
    }
    Ok(())
}

/// Pack 256 ternary values (each -1, 0 or +1) and a scale into one block.
pub fn pack_block(trits: &[i8], d: half::f16, out: &mut Vec<u8>) {
    debug_assert_eq!(trits.len(), BLOCK, "tq2_0 block needs 256 values");
    for chunk in trits.chunks_exact(128) {
        for m in 0..32 {
            let mut q = 0u8;
            for n in 0..4 {
                q |= (((chunk[m + 32 * n] + 1) as u8) & 3) << (2 * n);
            }
            out.push(q);
        }
    }
    out.extend_from_slice(&d.to_le_bytes());
}

pub fn quantize(values: &[f32]) -> Result<Vec<u8>> {
    let blocks = check_blocks("tq2_0", 0, values.len(), BLOCK, 0)?;
    let mut out = Vec::with_capacity(blocks * BLOCK_BYTES);
    let mut trits = [0i8; BLOCK];
    for x in values.chunks_exact(BLOCK) {
        let d = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (t, &v) in trits.iter_mut().zip(x) {
            // ggml stores (lroundf(x*id) + 1) & 3: out-of-range inputs cannot occur since
            // |x*id| <= 1.
            *t = round_away(v * id).clamp(-1, 1) as i8;
        }
        pack_block(&trits, half::f16::from_f32(d), &mut out);
    }
    Ok(out)
}

/// Integer dot of one 256-weight block's ternary values with 256 int8 activations
/// (the inner loop of `ggml_vec_dot_tq2_0_q8_K_generic`).
#[inline]
pub fn block_dot_i8(block: &[u8], q: &[i8]) -> i32 {
    debug_assert!(block.len() >= QS_BYTES && q.len() == BLOCK);
    let mut sumi = 0i32;
    for j in (0..QS_BYTES).step_by(32) {
        for l in 0..4 {
            for k in 0..32 {
                let t = ((block[j + k] >> (l * 2)) & 3) as i32 - 1;
                sumi += q[j * 4 + l * 32 + k] as i32 * t;
            }
        }
    }
    sumi
}

/// `ggml_vec_dot_tq2_0_q8_K_generic`: per block `sumi * (d_y * d_x)`, summed in f32.
pub fn vec_dot_q8_k(row: &[u8], y: &[super::q8_k::BlockQ8K]) -> f32 {
    debug_assert_eq!(
        row.len(),
        y.len() * BLOCK_BYTES,
        "tq2_0 row/activation mismatch"
    );
    let mut sumf = 0f32;
    for (blk, yb) in row.chunks_exact(BLOCK_BYTES).zip(y) {
        let d = yb.d * scale(blk);
        sumf += block_dot_i8(blk, &yb.qs) as f32 * d;
    }
    sumf
}

/// TQ2_0 weights with bitnet.cpp-style activations (one int8 row, one scale): per block
/// `sumi * d_x` summed in f32, then divided by the activation scale. bitnet.cpp has no TQ
/// kernels; this is xval's natural extension of its epilogue to per-block scales.
pub fn vec_dot_i8(row: &[u8], q: &[i8], act_scale: f32) -> f32 {
    debug_assert_eq!(
        row.len() / BLOCK_BYTES * BLOCK,
        q.len(),
        "tq2_0 row/activation mismatch"
    );
    let mut sumf = 0f32;
    for (blk, qb) in row.chunks_exact(BLOCK_BYTES).zip(q.chunks_exact(BLOCK)) {
        sumf += block_dot_i8(blk, qb) as f32 * scale(blk);
    }
    sumf / act_scale
}
