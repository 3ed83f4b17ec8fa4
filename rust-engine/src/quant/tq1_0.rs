//! TQ1_0: 256 ternary weights in 54 bytes (`block_tq1_0`): 48 bytes of five trits each, 4 bytes
//! of four trits each, then an f16 scale. A byte holds `ceil(v * 256 / 243)` of the base-3
//! number v (first trit most significant); trit k is `((u8)(q * 3^k) * 3) >> 8`. Element order:
//! bytes 0..32 hold elements `m + 32*n`, bytes 32..48 hold `160 + m + 16*n`, the 4 `qh` bytes
//! hold `240 + j + 4*n`. Mirrors `quantize_row_tq1_0_ref` / `dequantize_row_tq1_0`.

use super::ternary::{self, TernaryBlock};
use crate::error::Result;

pub const BLOCK: usize = ternary::BLOCK;
pub const QS_BYTES: usize = 48;
pub const QH_BYTES: usize = 4;
pub const BLOCK_BYTES: usize = QS_BYTES + QH_BYTES + 2;
const _: () = assert!(BLOCK_BYTES == 54);

const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];

/// Extract trit `n` (0 = most significant) of a packed byte, as 0, 1 or 2.
#[inline]
fn extract(q: u8, n: usize) -> u8 {
    let q = q.wrapping_mul(POW3[n]);
    ((q as u16 * 3) >> 8) as u8
}

/// Where element `j` (0..256) of a block lives: (byte index in the block, trit index).
#[inline]
pub fn position(j: usize) -> (usize, usize) {
    if j < 160 {
        (j % 32, j / 32)
    } else if j < 240 {
        let r = j - 160;
        (32 + r % 16, r / 16)
    } else {
        let r = j - 240;
        (QS_BYTES + r % 4, r / 4)
    }
}

/// The ternary value (-1, 0, +1) of element `j` of a block.
#[inline]
pub fn trit(block: &[u8], j: usize) -> i8 {
    let (byte, n) = position(j);
    extract(block[byte], n) as i8 - 1
}

#[inline]
pub fn scale(block: &[u8]) -> f32 {
    let o = QS_BYTES + QH_BYTES;
    super::f16::to_f32(u16::from_le_bytes([block[o], block[o + 1]]))
}

pub fn dequantize(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    ternary::dequantize::<Tq1_0>(bytes, out)
}

/// Pack 256 ternary values (each -1, 0 or +1) and a scale into one block.
pub fn pack_block(trits: &[i8], d: half::f16, out: &mut Vec<u8>) {
    debug_assert_eq!(trits.len(), BLOCK, "tq1_0 block needs 256 values");
    let mut block = [0u16; QS_BYTES + QH_BYTES];
    let mut digits = [0u8; QS_BYTES + QH_BYTES];
    for (j, &t) in trits.iter().enumerate() {
        let (byte, _) = position(j);
        // Elements reach each byte in increasing trit order, so Horner's rule puts trit 0 first.
        block[byte] = block[byte] * 3 + (t + 1) as u16;
        digits[byte] += 1;
    }
    for (v, n) in block.iter_mut().zip(digits) {
        // The 4-trit bytes are shifted so their first value is the most significant of 5.
        if n == 4 {
            *v *= 3;
        }
        // ggml: `((uint16_t)q * 256 + (243 - 1)) / 243`, a ceiling division (243 == 3^5).
        out.push((*v * 256).div_ceil(243) as u8);
    }
    out.extend_from_slice(&d.to_le_bytes());
}

pub fn quantize(values: &[f32]) -> Result<Vec<u8>> {
    ternary::quantize::<Tq1_0>(values)
}

/// Integer dot of one block's ternary values with 256 int8 activations, in the element order
/// of `ggml_vec_dot_tq1_0_q8_K_generic`.
#[inline]
pub fn block_dot_i8(block: &[u8], q: &[i8]) -> i32 {
    debug_assert!(block.len() >= QS_BYTES + QH_BYTES && q.len() == BLOCK);
    let mut sum = 0i32;
    let t = |byte: u8, l: usize| extract(byte, l) as i32 - 1;
    for l in 0..5 {
        for m in 0..32 {
            sum += t(block[m], l) * q[l * 32 + m] as i32;
        }
    }
    for l in 0..5 {
        for m in 0..16 {
            sum += t(block[32 + m], l) * q[160 + l * 16 + m] as i32;
        }
    }
    for l in 0..4 {
        for j in 0..QH_BYTES {
            sum += t(block[QS_BYTES + j], l) * q[240 + l * QH_BYTES + j] as i32;
        }
    }
    sum
}

/// `ggml_vec_dot_tq1_0_q8_K_generic`: per block `sum * (d_x * d_y)`, summed in f32.
pub fn vec_dot_q8_k(row: &[u8], y: &[super::q8_k::BlockQ8K]) -> f32 {
    ternary::vec_dot_q8_k::<Tq1_0>(row, y)
}

/// TQ1_0 weights with bitnet.cpp-style int8 row activations (see [`ternary::vec_dot_i8`]).
pub fn vec_dot_i8(row: &[u8], q: &[i8], act_scale: f32) -> f32 {
    ternary::vec_dot_i8::<Tq1_0>(row, q, act_scale)
}

/// The TQ1_0 packing for the shared ternary loops.
pub struct Tq1_0;

impl TernaryBlock for Tq1_0 {
    const NAME: &'static str = "tq1_0";
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
