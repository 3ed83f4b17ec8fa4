//! TQ2_0: 256 ternary weights in 64 bytes of 2-bit codes, then an f16 scale (`block_tq2_0`,
//! 66 bytes). In each 32-byte chunk (128 weights), weight `m + 32*n` sits in byte `m` at bit
//! shift `2*n`; value = (code - 1) * d. Mirrors `quantize_row_tq2_0_ref` /
//! `dequantize_row_tq2_0` in ggml-quants.c.

use super::ternary::{self, TernaryBlock};
use crate::error::Result;

pub const BLOCK: usize = ternary::BLOCK;
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
    super::f16::to_f32(u16::from_le_bytes([block[QS_BYTES], block[QS_BYTES + 1]]))
}

pub fn dequantize(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    ternary::dequantize::<Tq2_0>(bytes, out)
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
    ternary::quantize::<Tq2_0>(values)
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
    ternary::vec_dot_q8_k::<Tq2_0>(row, y)
}

/// TQ2_0 weights with bitnet.cpp-style int8 row activations (see [`ternary::vec_dot_i8`]).
pub fn vec_dot_i8(row: &[u8], q: &[i8], act_scale: f32) -> f32 {
    ternary::vec_dot_i8::<Tq2_0>(row, q, act_scale)
}

/// The TQ2_0 packing for the shared ternary loops.
pub struct Tq2_0;

impl TernaryBlock for Tq2_0 {
    const NAME: &'static str = "tq2_0";
    const BLOCK_BYTES: usize = BLOCK_BYTES;

    fn trit(block: &[u8], j: usize) -> i8 {
        trit(block, j)
    }

    fn scale(block: &[u8]) -> f32 {
        scale(block)
    }

    fn pack_block(trits: &[i8], d: half::f16, out: &mut Vec<u8>) {
        pack_block(trits, d, out)
    }

    #[inline]
    fn block_dot_i8(block: &[u8], q: &[i8]) -> i32 {
        block_dot_i8(block, q)
    }
}
