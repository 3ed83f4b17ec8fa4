//! aarch64 NEON kernels, tested bit for bit against the scalar reference through
//! `quant::matmul` (`tests/kernels_simd.rs`, run under qemu by `scripts/neon.sh`), selected by
//! [`super::Kernel::Neon`] (`--kernel neon|auto`):
//! - the ternary dots (I2_S in the 128-weight layout and TQ2_0, with int8 or Q8_K
//!   activations): integer sums, the float epilogue left to the reference's own code, so bit
//!   for bit;
//! - the float dots of F32/F16/BF16 weights ([`super::float`]): AVX2's sixteen-lane f64 order
//!   operation for operation (so the same bits as AVX2, within the stated bound of scalar),
//!   and the noise twin's sequential f32 folds, eight rows side by side (bit for bit);
//! - attention's scores and weighted sums over the KV cache ([`super::attn`]): one element
//!   per lane in the reference's order, bit for bit.

use super::attn::{AttnSums, SUM_EXACT, SUM_F32, SUM_F64};
use super::float::{FloatRow, FloatType};
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

/// A float element type the NEON dots read: its size, four values widened to f32, one value.
trait Lanes {
    const SIZE: usize;
    /// Four values at `p` as f32 (exact: every type here widens exactly).
    unsafe fn load4(p: *const u8) -> std::arch::aarch64::float32x4_t;
    /// One value at `p` as f32.
    unsafe fn one(p: *const u8) -> f32;
}

struct F32;
struct F16;
struct BF16;

impl Lanes for F32 {
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load4(p: *const u8) -> std::arch::aarch64::float32x4_t {
        std::arch::aarch64::vld1q_f32(p as *const f32)
    }
    #[inline(always)]
    unsafe fn one(p: *const u8) -> f32 {
        (p as *const f32).read_unaligned()
    }
}

impl Lanes for F16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load4(p: *const u8) -> std::arch::aarch64::float32x4_t {
        use std::arch::aarch64::*;
        let h = vld1_u16(p as *const u16);
        let out: float32x4_t;
        // SAFETY: FCVTL (four f16 to four f32, exact) is in every ARMv8-A Advanced SIMD unit
        // and touches registers only. Inline assembly because `vcvt_f32_f16` is stable only
        // from Rust 1.94, and the workspace's rust-version is older.
        unsafe {
            std::arch::asm!(
                "fcvtl {o:v}.4s, {i:v}.4h",
                i = in(vreg) h,
                o = lateout(vreg) out,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        out
    }
    #[inline(always)]
    unsafe fn one(p: *const u8) -> f32 {
        half::f16::from_bits((p as *const u16).read_unaligned()).to_f32()
    }
}

impl Lanes for BF16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load4(p: *const u8) -> std::arch::aarch64::float32x4_t {
        use std::arch::aarch64::*;
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p as *const u16)))
    }
    #[inline(always)]
    unsafe fn one(p: *const u8) -> f32 {
        f32::from_bits(((p as *const u16).read_unaligned() as u32) << 16)
    }
}

/// One pass of [`super::float::float_dots`] with NEON: `n` (1 or 2) tokens of f32 values at
/// `x` (token after token, `k` each) against the row `w`, exact products fused (`exact`, F16
/// x f16) or the reference's f32 products added.
///
/// # Safety
/// NEON; `w` holds `k` weights, `x` holds `n * k` values, `out` `n`.
pub(crate) unsafe fn float_pass(
    w: FloatRow,
    exact: bool,
    x: *const f32,
    n: usize,
    k: usize,
    out: &mut [f32],
) {
    let wp = w.bytes().as_ptr();
    // SAFETY: the caller's promises.
    unsafe {
        match (exact, w, n) {
            (true, _, 1) => dots::<F16, 1, true>(wp, x, k, out),
            (true, _, _) => dots::<F16, 2, true>(wp, x, k, out),
            (false, FloatRow::F32(_), 1) => dots::<F32, 1, false>(wp, x, k, out),
            (false, FloatRow::F32(_), _) => dots::<F32, 2, false>(wp, x, k, out),
            (false, FloatRow::F16(_), 1) => dots::<F16, 1, false>(wp, x, k, out),
            (false, FloatRow::F16(_), _) => dots::<F16, 2, false>(wp, x, k, out),
            (false, FloatRow::BF16(_), 1) => dots::<BF16, 1, false>(wp, x, k, out),
            (false, FloatRow::BF16(_), _) => dots::<BF16, 2, false>(wp, x, k, out),
        }
    }
}

/// Weights of type `W` times `N` tokens of f32 values (`x`, token after token, `k` each), in
/// the order of `x86::dots_exact` / `x86::dots_rounded_n` (the module doc of
/// [`super::float`]): AVX2's four 4-lane f64 accumulators are eight 2-lane ones here,
/// `acc[2l + h]` holding lanes `2h, 2h + 1` of accumulator `l` (elements `i + 4l + 2h` and
/// the next of every sixteen), and every add and fused multiply-add is the one AVX2 does on
/// that lane. `EXACT`: the widened values' products fused into the sums (F16 x f16, exact
/// products); else each product rounded in f32 first, as the reference does.
///
/// # Safety
/// NEON; `k` weights of type `W` at `w`, `N * k` f32 values at `x`, `N` outputs.
#[target_feature(enable = "neon")]
unsafe fn dots<W: Lanes, const N: usize, const EXACT: bool>(
    w: *const u8,
    x: *const f32,
    k: usize,
    out: &mut [f32],
) {
    use std::arch::aarch64::*;
    let mut acc = [[vdupq_n_f64(0.0); 8]; N];
    let mut i = 0;
    while i + 16 <= k {
        let wv: [float32x4_t; 4] = std::array::from_fn(|l| W::load4(w.add((i + 4 * l) * W::SIZE)));
        for (t, acc) in acc.iter_mut().enumerate() {
            let xt = x.add(t * k + i);
            for (l, &wl) in wv.iter().enumerate() {
                let xl = vld1q_f32(xt.add(4 * l));
                if EXACT {
                    let (w0, w1) = (vcvt_f64_f32(vget_low_f32(wl)), vcvt_high_f64_f32(wl));
                    let (x0, x1) = (vcvt_f64_f32(vget_low_f32(xl)), vcvt_high_f64_f32(xl));
                    acc[2 * l] = vfmaq_f64(acc[2 * l], w0, x0);
                    acc[2 * l + 1] = vfmaq_f64(acc[2 * l + 1], w1, x1);
                } else {
                    let p = vmulq_f32(wl, xl);
                    acc[2 * l] = vaddq_f64(acc[2 * l], vcvt_f64_f32(vget_low_f32(p)));
                    acc[2 * l + 1] = vaddq_f64(acc[2 * l + 1], vcvt_high_f64_f32(p));
                }
            }
        }
        i += 16;
    }
    for (t, (acc, o)) in acc.iter().zip(out.iter_mut()).enumerate() {
        // AVX2's `hsum_pd(acc0 + acc1, acc2 + acc3)`, lane pair by lane pair.
        let v_lo = vaddq_f64(vaddq_f64(acc[0], acc[2]), vaddq_f64(acc[4], acc[6]));
        let v_hi = vaddq_f64(vaddq_f64(acc[1], acc[3]), vaddq_f64(acc[5], acc[7]));
        let pair = vaddq_f64(v_lo, v_hi);
        let mut sum = vgetq_lane_f64::<0>(pair) + vgetq_lane_f64::<1>(pair);
        for j in i..k {
            let (wj, xj) = (W::one(w.add(j * W::SIZE)), *x.add(t * k + j));
            sum += if EXACT {
                wj as f64 * xj as f64
            } else {
                (wj * xj) as f64
            };
        }
        *o = sum as f32;
    }
}

/// [`super::float::f32_sum_dots`] with NEON for rows of type `ty`: token `t`'s eight sums
/// into `out[t]`.
///
/// # Safety
/// NEON; `k` weights of type `ty` behind each row pointer, `k` values in each of the 1 to 4
/// tokens `xs`; `out.len() == xs.len()`.
pub(crate) unsafe fn seq_sums(
    ty: FloatType,
    rows: &[*const u8; 8],
    xs: &[&[f32]],
    k: usize,
    out: &mut [[f32; 8]],
) {
    // SAFETY: the caller's promises.
    unsafe {
        match ty {
            FloatType::F32 => seq_sums_of::<F32>(rows, xs, k, out),
            FloatType::F16 => seq_sums_of::<F16>(rows, xs, k, out),
            FloatType::BF16 => seq_sums_of::<BF16>(rows, xs, k, out),
        }
    }
}

/// [`seq_sums`] for one weight type.
///
/// # Safety
/// As [`seq_sums`].
#[target_feature(enable = "neon")]
unsafe fn seq_sums_of<W: Lanes>(
    rows: &[*const u8; 8],
    xs: &[&[f32]],
    k: usize,
    out: &mut [[f32; 8]],
) {
    let x = |t: usize| xs[t].as_ptr();
    match xs.len() {
        1 => out.copy_from_slice(&seq_dots8::<W, 1>(rows, [x(0)], k)),
        2 => out.copy_from_slice(&seq_dots8::<W, 2>(rows, [x(0), x(1)], k)),
        3 => out.copy_from_slice(&seq_dots8::<W, 3>(rows, [x(0), x(1), x(2)], k)),
        _ => out.copy_from_slice(&seq_dots8::<W, 4>(rows, [x(0), x(1), x(2), x(3)], k)),
    }
}

/// Eight sequential f32 sums `s_j = s_j + w_j[i] * x[i]`, rows 0-3 in one vector's lanes and
/// 4-7 in another's, for each of `N` tokens: four weights of each row loaded and transposed
/// (4x4, twice), then per weight one multiply and one add per vector (never fused).
///
/// # Safety
/// NEON; `k` weights of type `W` behind each row pointer, `k` values at each `xs[t]`.
#[target_feature(enable = "neon")]
unsafe fn seq_dots8<W: Lanes, const N: usize>(
    rows: &[*const u8; 8],
    xs: [*const f32; N],
    k: usize,
) -> [[f32; 8]; N] {
    use std::arch::aarch64::*;
    let mut acc = [[vdupq_n_f32(0.0); 2]; N];
    let mut i = 0;
    while i + 4 <= k {
        let v: [float32x4_t; 8] = std::array::from_fn(|r| W::load4(rows[r].add(i * W::SIZE)));
        let halves = [
            transpose4([v[0], v[1], v[2], v[3]]),
            transpose4([v[4], v[5], v[6], v[7]]),
        ];
        for e in 0..4 {
            for (acc, x) in acc.iter_mut().zip(xs.iter()) {
                let xe = vdupq_n_f32(*x.add(i + e));
                for (a, h) in acc.iter_mut().zip(halves.iter()) {
                    *a = vaddq_f32(*a, vmulq_f32(h[e], xe));
                }
            }
        }
        i += 4;
    }
    while i < k {
        let w: [f32; 8] = std::array::from_fn(|r| W::one(rows[r].add(i * W::SIZE)));
        let wv = [vld1q_f32(w.as_ptr()), vld1q_f32(w.as_ptr().add(4))];
        for (acc, x) in acc.iter_mut().zip(xs.iter()) {
            let xe = vdupq_n_f32(*x.add(i));
            for (a, wv) in acc.iter_mut().zip(wv.iter()) {
                *a = vaddq_f32(*a, vmulq_f32(*wv, xe));
            }
        }
        i += 1;
    }
    let mut out = [[0f32; 8]; N];
    for (o, a) in out.iter_mut().zip(acc.iter()) {
        vst1q_f32(o.as_mut_ptr(), a[0]);
        vst1q_f32(o.as_mut_ptr().add(4), a[1]);
    }
    out
}

/// A 4x4 f32 transpose: `out[e]` lane `j` is `v[j]` lane `e`.
#[inline(always)]
unsafe fn transpose4(
    v: [std::arch::aarch64::float32x4_t; 4],
) -> [std::arch::aarch64::float32x4_t; 4] {
    use std::arch::aarch64::*;
    let (t0, t1) = (vtrn1q_f32(v[0], v[1]), vtrn2q_f32(v[0], v[1]));
    let (t2, t3) = (vtrn1q_f32(v[2], v[3]), vtrn2q_f32(v[2], v[3]));
    let pairs = |a: float32x4_t, b: float32x4_t| {
        let (a, b) = (vreinterpretq_f64_f32(a), vreinterpretq_f64_f32(b));
        (
            vreinterpretq_f32_f64(vtrn1q_f64(a, b)),
            vreinterpretq_f32_f64(vtrn2q_f64(a, b)),
        )
    };
    let (e0, e2) = pairs(t0, t2);
    let (e1, e3) = pairs(t1, t3);
    [e0, e1, e2, e3]
}

/// [`super::attn::scores`] with NEON: eight positions at a time (then four), each lane one
/// position's sum over the dimensions in the reference's order, so bit-identical to
/// [`super::attn::scores_ref`]; returns how many leading positions it scored (the caller
/// scores the rest with the reference). Four keys are loaded four dimensions at a time and
/// transposed in registers, so that a vector holds one dimension of four positions; two such
/// groups keep the adds' latency hidden.
///
/// # Safety
/// NEON; `k` holds `out.len()` rows of `q.len()` values, `stride` apart.
pub(crate) unsafe fn attn_scores(
    sums: AttnSums,
    q: &[f32],
    k: &[f32],
    stride: usize,
    out: &mut [f32],
) -> usize {
    // SAFETY: the caller's promises.
    unsafe {
        match sums {
            AttnSums::F64 => scores_blocks::<SUM_F64>(q, k, stride, out),
            AttnSums::F32 => scores_blocks::<SUM_F32>(q, k, stride, out),
            AttnSums::Exact => scores_blocks::<SUM_EXACT>(q, k, stride, out),
        }
    }
}

/// Every whole group of eight, then four, positions of [`attn_scores`], summing as `S`;
/// returns how many positions it scored.
///
/// # Safety
/// NEON; `k` holds `out.len()` rows of `q.len()` values, `stride` apart.
#[target_feature(enable = "neon")]
unsafe fn scores_blocks<const S: u8>(
    q: &[f32],
    k: &[f32],
    stride: usize,
    out: &mut [f32],
) -> usize {
    let mut j = 0;
    while j + 8 <= out.len() {
        scores_block::<2, S>(q, k.as_ptr().add(j * stride), stride, &mut out[j..j + 8]);
        j += 8;
    }
    while j + 4 <= out.len() {
        scores_block::<1, S>(q, k.as_ptr().add(j * stride), stride, &mut out[j..j + 4]);
        j += 4;
    }
    j
}

/// Scores of the `4 * V` positions whose keys start at `k` (see [`attn_scores`]).
///
/// # Safety
/// NEON; `4 * V` rows of `q.len()` values, `stride` apart, at `k`; `out` has `4 * V`.
#[target_feature(enable = "neon")]
unsafe fn scores_block<const V: usize, const S: u8>(
    q: &[f32],
    k: *const f32,
    stride: usize,
    out: &mut [f32],
) {
    use std::arch::aarch64::*;
    let hd = q.len();
    // `-0.0` starts each f64 sum, as the reference's; the f32 fold starts at 0.
    let mut wide = [[vdupq_n_f64(-0.0); 2]; V];
    let mut narrow = [vdupq_n_f32(0.0); V];
    let mut d = 0;
    while d < hd {
        // Dimensions d..d + 4 of each group's four keys, one dimension per vector (the last
        // dimensions, fewer than four, gathered one by one).
        let width = (hd - d).min(4);
        let mut cols = [[vdupq_n_f32(0.0); 4]; V];
        for (g, cols) in cols.iter_mut().enumerate() {
            let base = k.add(4 * g * stride + d);
            if width == 4 {
                *cols = transpose4(std::array::from_fn(|r| vld1q_f32(base.add(r * stride))));
            } else {
                for (e, col) in cols.iter_mut().enumerate().take(width) {
                    let at: [f32; 4] = std::array::from_fn(|r| *base.add(r * stride + e));
                    *col = vld1q_f32(at.as_ptr());
                }
            }
        }
        for e in 0..width {
            let qd = q[d + e];
            let (qs, qw) = (vdupq_n_f32(qd), vdupq_n_f64(qd as f64));
            for g in 0..V {
                let kv = cols[g][e];
                match S {
                    SUM_F64 => {
                        // The product rounded to f32, then widened.
                        let p = vmulq_f32(qs, kv);
                        wide[g][0] = vaddq_f64(wide[g][0], vcvt_f64_f32(vget_low_f32(p)));
                        wide[g][1] = vaddq_f64(wide[g][1], vcvt_high_f64_f32(p));
                    }
                    SUM_EXACT => {
                        // Both factors widened, the product taken in f64 (not fused).
                        let (lo, hi) = (vcvt_f64_f32(vget_low_f32(kv)), vcvt_high_f64_f32(kv));
                        wide[g][0] = vaddq_f64(wide[g][0], vmulq_f64(qw, lo));
                        wide[g][1] = vaddq_f64(wide[g][1], vmulq_f64(qw, hi));
                    }
                    // Unfused, as the reference's `s + a * b`.
                    _ => narrow[g] = vaddq_f32(narrow[g], vmulq_f32(qs, kv)),
                }
            }
        }
        d += width;
    }
    for g in 0..V {
        let o = out.as_mut_ptr().add(4 * g);
        if S == SUM_F32 {
            vst1q_f32(o, narrow[g]);
        } else {
            vst1q_f32(o, vcvt_high_f32_f64(vcvt_f32_f64(wide[g][0]), wide[g][1]));
        }
    }
}

/// [`super::attn::mix`] with NEON: sixteen dimensions at a time (then four), each lane one
/// dimension's sum over the positions in the reference's order, so bit-identical to
/// [`super::attn::mix_ref`]; returns how many leading dimensions it summed (the caller sums
/// the rest with the reference).
///
/// # Safety
/// NEON; `v` holds `p.len()` rows of `out.len()` values, `stride` apart.
pub(crate) unsafe fn attn_mix(
    sums: AttnSums,
    p: &[f32],
    v: &[f32],
    stride: usize,
    out: &mut [f32],
) -> usize {
    // SAFETY: the caller's promises.
    unsafe {
        match sums {
            AttnSums::F64 => mix_blocks::<SUM_F64>(p, v, stride, out),
            AttnSums::F32 => mix_blocks::<SUM_F32>(p, v, stride, out),
            AttnSums::Exact => mix_blocks::<SUM_EXACT>(p, v, stride, out),
        }
    }
}

/// Every whole group of sixteen, then four, dimensions of [`attn_mix`], summing as `S`;
/// returns how many dimensions it summed.
///
/// # Safety
/// NEON; `v` holds `p.len()` rows of `out.len()` values, `stride` apart.
#[target_feature(enable = "neon")]
unsafe fn mix_blocks<const S: u8>(p: &[f32], v: &[f32], stride: usize, out: &mut [f32]) -> usize {
    let mut d = 0;
    while d + 16 <= out.len() {
        mix_block::<4, S>(p, v.as_ptr().add(d), stride, &mut out[d..d + 16]);
        d += 16;
    }
    while d + 4 <= out.len() {
        mix_block::<1, S>(p, v.as_ptr().add(d), stride, &mut out[d..d + 4]);
        d += 4;
    }
    d
}

/// Weighted sums of the `4 * V` dimensions starting at `v` (see [`attn_mix`]).
///
/// # Safety
/// NEON; `p.len()` rows of at least `4 * V` values, `stride` apart, at `v`; `out` has `4 * V`.
#[target_feature(enable = "neon")]
unsafe fn mix_block<const V: usize, const S: u8>(
    p: &[f32],
    v: *const f32,
    stride: usize,
    out: &mut [f32],
) {
    use std::arch::aarch64::*;
    let mut wide = [[vdupq_n_f64(0.0); 2]; V];
    let mut narrow = [vdupq_n_f32(0.0); V];
    for (j, &pj) in p.iter().enumerate() {
        let row = v.add(j * stride);
        let (ps, pw) = (vdupq_n_f32(pj), vdupq_n_f64(pj as f64));
        for b in 0..V {
            let x = vld1q_f32(row.add(4 * b));
            match S {
                SUM_F64 => {
                    let t = vmulq_f32(ps, x);
                    wide[b][0] = vaddq_f64(wide[b][0], vcvt_f64_f32(vget_low_f32(t)));
                    wide[b][1] = vaddq_f64(wide[b][1], vcvt_high_f64_f32(t));
                }
                SUM_EXACT => {
                    let (lo, hi) = (vcvt_f64_f32(vget_low_f32(x)), vcvt_high_f64_f32(x));
                    wide[b][0] = vaddq_f64(wide[b][0], vmulq_f64(pw, lo));
                    wide[b][1] = vaddq_f64(wide[b][1], vmulq_f64(pw, hi));
                }
                _ => narrow[b] = vaddq_f32(narrow[b], vmulq_f32(ps, x)),
            }
        }
    }
    for b in 0..V {
        let o = out.as_mut_ptr().add(4 * b);
        if S == SUM_F32 {
            vst1q_f32(o, narrow[b]);
        } else {
            vst1q_f32(o, vcvt_high_f32_f64(vcvt_f32_f64(wide[b][0]), wide[b][1]));
        }
    }
}
