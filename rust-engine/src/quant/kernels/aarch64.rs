//! aarch64 NEON kernels, tested bit for bit against the scalar reference through
//! `quant::matmul` (`tests/kernels_simd.rs`, run under qemu by `scripts/neon.sh`), selected by
//! [`super::Kernel::Neon`] (`--kernel neon|auto`). The ternary dots only (I2_S in the
//! 128-weight layout and TQ2_0, with int8 or Q8_K activations): integer sums, the float
//! epilogue left to the reference's own code. The float dots stay scalar here: converting f16
//! with NEON needs the `float16x4_t` intrinsics, not yet stable in Rust.

use super::{TernaryKernel, TernaryRow, Token};

/// Whether this CPU runs the NEON kernels (every aarch64 Linux CPU does; checked anyway).
pub fn has_neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// The NEON ternary kernel ([`super::ternary_block_dots`] with [`super::Kernel::Neon`]).
pub(crate) struct Neon;

impl TernaryKernel for Neon {
    #[inline(always)]
    unsafe fn block_dots<const N: usize>(row: TernaryRow, toks: [Token; N]) {
        // SAFETY: the trait's contract is `block_dots`'s.
        unsafe { block_dots::<N>(row, toks) }
    }
}

/// The NEON kernel for `N` tokens. Per chunk: the 32 code bytes loaded as two vectors and
/// unpacked into 0/1/2 bytes per group (shift and mask), shared by the `N` tokens; per token
/// and group four widening multiply-accumulates (`vmlal_s8`: codes x int8 activations into
/// i16 lanes). A lane gathers 16 products of magnitude <= 2 * 128 per chunk, so 32 per block
/// stay within +-8192: nothing wraps. Then the lanes are widened (`vpaddlq_s16`) and summed
/// (`vaddvq_s32`), and the chunk sums subtracted (codes are the ternary values plus one). The
/// caller guarantees NEON and the lengths [`TernaryKernel::block_dots`] states.
#[target_feature(enable = "neon")]
unsafe fn block_dots<const N: usize>(row: TernaryRow, toks: [Token; N]) {
    use std::arch::aarch64::*;
    let mask = vdupq_n_u8(3);
    let lsb_first = matches!(row, TernaryRow::Tq2_0(_));
    let chunks = row.chunks();
    // Base pointers and per-block strides, as the AVX2 kernel walks them.
    let (codes, code_stride) = row.raw();
    let mut acts = [(std::ptr::null::<i8>(), 0usize); N];
    for (a, t) in acts.iter_mut().zip(toks.iter()) {
        *a = (t.acts, t.stride);
    }
    let mut c = 0;
    let mut b = 0;
    while c < chunks {
        let end = (c + 2).min(chunks);
        let mut acc = [vdupq_n_s16(0); N];
        for cc in c..end {
            // SAFETY (loads): a chunk holds 32 code bytes and 128 activations per token.
            let p = codes.add(cc / 2 * code_stride + cc % 2 * 32);
            let halves = [vld1q_u8(p), vld1q_u8(p.add(16))];
            let unpack = |v: uint8x16_t| {
                [
                    vreinterpretq_s8_u8(vandq_u8(v, mask)),
                    vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<2>(v), mask)),
                    vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<4>(v), mask)),
                    vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<6>(v), mask)),
                ]
            };
            let (lo, hi) = (unpack(halves[0]), unpack(halves[1]));
            for (t, &(base, stride)) in acts.iter().enumerate() {
                let q = base.add(cc / 2 * stride + cc % 2 * 128);
                for g in 0..4 {
                    // Group g's codes, in the layout's bit order.
                    let bits = if lsb_first { g } else { 3 - g };
                    let (c0, c1) = (lo[bits], hi[bits]);
                    let (a0, a1) = (vld1q_s8(q.add(32 * g)), vld1q_s8(q.add(32 * g + 16)));
                    let mut s = acc[t];
                    s = vmlal_s8(s, vget_low_s8(c0), vget_low_s8(a0));
                    s = vmlal_high_s8(s, c0, a0);
                    s = vmlal_s8(s, vget_low_s8(c1), vget_low_s8(a1));
                    acc[t] = vmlal_high_s8(s, c1, a1);
                }
            }
        }
        for (t, tok) in toks.iter().enumerate() {
            let raw = vaddvq_s32(vpaddlq_s16(acc[t]));
            // SAFETY: the token has the row's chunk sums and blocks (the caller's promise).
            let sums: i32 = (c..end).map(|c| *tok.sums.add(c)).sum();
            *tok.out.add(b) = raw - sums;
        }
        c = end;
        b += 1;
    }
}
