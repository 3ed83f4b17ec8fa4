//! x86-64 SIMD kernels, each tested against its scalar reference in `quant/`
//! (`tests/kernels_simd.rs`), selected by [`super::Kernel::Avx2`] (`--kernel avx2|auto`) in
//! `quant::matmul`. The ternary kernels compute integer sums and leave the float epilogue to
//! the reference's own code, so they equal it bit for bit; the float dots (F32/F16/BF16
//! weights) sum the reference's f32 products in f64 in another order, equal to it in nearly
//! every case and otherwise within [`float_dot_bound`]. Reached through the safe wrappers
//! below, which decline (`None`) where the CPU or the layout does not fit.

use super::{
    ternary_block_dots, Kernel, TernaryActs, TernaryBatch, TernaryKernel, TernaryRow, Token,
};
use crate::quant::i2_s::{self, I2sLayout};
use crate::quant::q8_k::BlockQ8K;
use crate::quant::ternary;
use crate::quant::tq2_0::{self, Tq2_0};

/// Whether this CPU runs the AVX2 kernels.
pub fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// The AVX2 ternary kernel ([`super::ternary_block_dots`] with [`Kernel::Avx2`]).
pub(crate) struct Avx2;

impl TernaryKernel for Avx2 {
    #[inline(always)]
    unsafe fn block_dots<const N: usize>(row: TernaryRow, toks: [Token; N]) {
        // SAFETY: the trait's contract is `block_dots`'s.
        unsafe { block_dots::<N>(row, toks) }
    }
}

/// The AVX2 ternary kernel for `N` tokens. Per chunk: four `and`/shift
/// unpacks of the 32 code bytes into 0/1/2 bytes, shared by the `N` tokens; per token and
/// group one `maddubs` (codes x int8 activations, pair sums in [-512, 508]) added in i16:
/// eight groups per block stay within [-4096, 4064], so nothing saturates or wraps; then one
/// `madd` widening to i32, the horizontal sum, and the chunk sums subtracted (codes are the
/// ternary values plus one). The caller guarantees AVX2 and the lengths it asserts.
#[target_feature(enable = "avx2")]
unsafe fn block_dots<const N: usize>(row: TernaryRow, mut toks: [Token; N]) {
    use std::arch::x86_64::*;
    let mask = _mm256_set1_epi8(3);
    let ones16 = _mm256_set1_epi16(1);
    let lsb_first = matches!(row, TernaryRow::Tq2_0(_));
    let chunks = row.chunks();
    // Base pointers and per-block strides, so the loop below does no enum matches and no
    // bounds checks (every chunk it reads exists: the caller's guarantee).
    let (codes, code_stride) = row.raw();
    let mut acts = [(std::ptr::null::<i8>(), 0usize); N];
    for (a, (t, _, _)) in acts.iter_mut().zip(toks.iter()) {
        *a = t.raw();
    }
    let mut c = 0;
    let mut b = 0;
    while c < chunks {
        let end = (c + 2).min(chunks);
        let mut acc = [_mm256_setzero_si256(); N];
        for cc in c..end {
            // SAFETY (loads): chunk `cc` holds 32 code bytes and 128 activations per token,
            // read unaligned.
            let v =
                _mm256_loadu_si256(codes.add(cc / 2 * code_stride + cc % 2 * 32) as *const __m256i);
            let (b0, b2, b4, b6) = (
                _mm256_and_si256(v, mask),
                _mm256_and_si256(_mm256_srli_epi16::<2>(v), mask),
                _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask),
                _mm256_and_si256(_mm256_srli_epi16::<6>(v), mask),
            );
            // Group g's codes, in the layout's bit order.
            let groups = if lsb_first {
                [b0, b2, b4, b6]
            } else {
                [b6, b4, b2, b0]
            };
            for t in 0..N {
                let (base, stride) = acts[t];
                let q = base.add(cc / 2 * stride + cc % 2 * 128);
                for (g, &codes) in groups.iter().enumerate() {
                    let x = _mm256_loadu_si256(q.add(32 * g) as *const __m256i);
                    acc[t] = _mm256_add_epi16(acc[t], _mm256_maddubs_epi16(codes, x));
                }
            }
        }
        // No closures here: a closure does not get this function's target features, and the
        // intrinsics in it would become calls.
        let mut raw = [0i32; N];
        if N == 4 {
            // Four horizontal sums at once: two rounds of pairwise adds leave each token's
            // sum split over the two 128-bit halves.
            let w = |t: usize| t % N;
            let h = _mm256_hadd_epi32(
                _mm256_hadd_epi32(
                    _mm256_madd_epi16(acc[w(0)], ones16),
                    _mm256_madd_epi16(acc[w(1)], ones16),
                ),
                _mm256_hadd_epi32(
                    _mm256_madd_epi16(acc[w(2)], ones16),
                    _mm256_madd_epi16(acc[w(3)], ones16),
                ),
            );
            let four = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
            let mut lanes = [0i32; 4];
            _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, four);
            raw.copy_from_slice(&lanes[..N]);
        } else {
            for t in 0..N {
                raw[t] = hsum_epi32(_mm256_madd_epi16(acc[t], ones16));
            }
        }
        for ((_, sums, out), raw) in toks.iter_mut().zip(raw) {
            let mut s = sums[c];
            if end - c == 2 {
                s += sums[c + 1];
            }
            out[b] = raw - s;
        }
        c = end;
        b += 1;
    }
}

/// I2_S row dot int8 activations, `sum (code - 1) * q`, with AVX2: the same integer as
/// [`i2_s::vec_dot_i8`]. `None` where this CPU has no AVX2 or the layout is not the 128-weight
/// one (the 64-weight ARM layout stays scalar on x86).
pub fn i2s_vec_dot_i8(codes: &[u8], q: &[i8], layout: I2sLayout) -> Option<i32> {
    if layout != I2sLayout::Block128 {
        return None;
    }
    assert_eq!(codes.len() % 32, 0, "i2_s rows are whole 128-weight blocks");
    let dots = one_token(TernaryRow::I2s(codes), TernaryActs::I8(q))?;
    Some(dots.iter().sum())
}

/// The ggml profile's I2_S dot ([`i2_s::vec_dot_q8_k`], the lossless TQ2_0 view) with the
/// AVX2 integer sums and the scalar reference's own f32 epilogue, so bit-identical.
pub fn i2s_vec_dot_q8_k(codes: &[u8], y: &[BlockQ8K], layout: I2sLayout) -> Option<f32> {
    if layout != I2sLayout::Block128 {
        return None;
    }
    assert_eq!(codes.len(), y.len() * 64, "i2_s row/activation mismatch");
    let dots = one_token(TernaryRow::I2s(codes), TernaryActs::Q8K(y))?;
    Some(i2_s::epilogue_q8_k(y, dots))
}

/// `ggml_vec_dot_tq2_0_q8_K` with the AVX2 block sums and the scalar reference's own f32
/// epilogue ([`ternary::epilogue_q8_k`]), so bit-identical.
pub fn tq2_0_vec_dot_q8_k(row: &[u8], y: &[BlockQ8K]) -> Option<f32> {
    assert_eq!(
        row.len(),
        y.len() * tq2_0::BLOCK_BYTES,
        "tq2_0 row/activation mismatch"
    );
    let dots = one_token(TernaryRow::Tq2_0(row), TernaryActs::Q8K(y))?;
    Some(ternary::epilogue_q8_k(
        ternary::block_scales::<Tq2_0>(row),
        y,
        dots,
    ))
}

/// TQ2_0 with one int8 activation row ([`ternary::vec_dot_i8`]) with the AVX2 block sums and
/// the scalar reference's own epilogue, so bit-identical.
pub fn tq2_0_vec_dot_i8(row: &[u8], q: &[i8], act_scale: f32) -> Option<f32> {
    assert_eq!(
        row.len() / tq2_0::BLOCK_BYTES * tq2_0::BLOCK,
        q.len(),
        "tq2_0 row/activation mismatch"
    );
    let dots = one_token(TernaryRow::Tq2_0(row), TernaryActs::I8(q))?;
    Some(ternary::epilogue_i8(
        ternary::block_scales::<Tq2_0>(row),
        act_scale,
        dots,
    ))
}

/// [`ternary_block_dots`] for one token.
fn one_token(row: TernaryRow, acts: TernaryActs) -> Option<Vec<i32>> {
    let batch = TernaryBatch::new(vec![acts]).expect("one token is one length");
    let mut out = vec![0; row.blocks()];
    ternary_block_dots(Kernel::Avx2, row, &batch, &mut out)?;
    Some(out)
}

/// Whether this CPU runs the AVX2 float dots (F16C for the f16 conversions; every AVX2 CPU
/// made has it, checked anyway).
fn has_avx2_f16c() -> bool {
    has_avx2() && std::arch::is_x86_feature_detected!("f16c")
}

/// The float dots of F32, F16 and BF16 weights ([`crate::quant::f32::vec_dot_f32`],
/// [`crate::quant::f16::vec_dot_f16`], [`crate::quant::f16::vec_dot_f16_f32`],
/// [`crate::quant::bf16::vec_dot_bf16`]) with AVX2 and F16C: the same f32 products (weights
/// and activations widened exactly to f32, multiplied in f32, no FMA), summed in f64 as the
/// references sum them, but in sixteen lanes (four 4-lane accumulators) added together at the
/// end instead of one after the other. An f64 sum of f32 products is exact until its partial
/// sums need more than 53 bits, so the result is the reference's in nearly every case and
/// otherwise within [`float_dot_bound`] of it (`tests/kernels_x86.rs`; docs/engine.md has the
/// measured rate). `None` where the CPU lacks AVX2 or F16C.
pub fn float_dot(w: FloatRow, x: FloatActs) -> Option<f32> {
    if !has_avx2_f16c() {
        return None;
    }
    let n = x.len();
    assert_eq!(w.len(), n, "float row/activation mismatch");
    let (wp, xp) = (w.bytes().as_ptr(), x.ptr());
    // SAFETY: AVX2 and F16C are present (checked above); both rows hold `n` values of their
    // type (asserted), which is all the kernel reads.
    Some(unsafe {
        match (w, x) {
            (FloatRow::F32(_), FloatActs::F32(_)) => dot_f64::<F32, F32>(wp, xp, n),
            (FloatRow::F16(_), FloatActs::F16(_)) => dot_f64::<F16, F16>(wp, xp, n),
            (FloatRow::F16(_), FloatActs::F32(_)) => dot_f64::<F16, F32>(wp, xp, n),
            (FloatRow::BF16(_), FloatActs::BF16(_)) => dot_f64::<BF16, BF16>(wp, xp, n),
            _ => return None,
        }
    })
}

/// The most [`float_dot`] may differ from its scalar reference for products `p`: each f64 sum
/// of `n` terms is within `n * 2^-53 * sum |p|` of the exact sum (both orders, so `n * 2^-52`
/// between them), and the final rounding to f32 adds at most one f32 ulp of the result.
pub fn float_dot_bound(reference: f32, abs_products: f64, n: usize) -> f64 {
    let ulp = if reference == 0.0 {
        f32::from_bits(1) as f64
    } else {
        (f32::from_bits(reference.abs().to_bits() + 1) - reference.abs()) as f64
    };
    ulp + n as f64 * f64::EPSILON * abs_products
}

/// A row of float weights, as stored (little-endian).
#[derive(Clone, Copy, Debug)]
pub enum FloatRow<'a> {
    F32(&'a [u8]),
    F16(&'a [u8]),
    BF16(&'a [u8]),
}

impl<'a> FloatRow<'a> {
    fn bytes(self) -> &'a [u8] {
        match self {
            FloatRow::F32(b) | FloatRow::F16(b) | FloatRow::BF16(b) => b,
        }
    }

    fn len(self) -> usize {
        match self {
            FloatRow::F32(b) => b.len() / 4,
            FloatRow::F16(b) | FloatRow::BF16(b) => b.len() / 2,
        }
    }
}

/// One token's activations in the form a float weight type's dot reads.
#[derive(Clone, Copy, Debug)]
pub enum FloatActs<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
    /// bf16 bit patterns.
    BF16(&'a [u16]),
}

impl FloatActs<'_> {
    fn ptr(self) -> *const u8 {
        match self {
            FloatActs::F32(v) => v.as_ptr() as *const u8,
            FloatActs::F16(v) => v.as_ptr() as *const u8,
            FloatActs::BF16(v) => v.as_ptr() as *const u8,
        }
    }

    fn len(self) -> usize {
        match self {
            FloatActs::F32(v) => v.len(),
            FloatActs::F16(v) => v.len(),
            FloatActs::BF16(v) => v.len(),
        }
    }
}

/// A float element type the AVX2 dot reads: its size, eight values widened to f32, one value.
trait Lanes {
    const SIZE: usize;
    /// Eight values at `p` as f32 (exact: every type here widens exactly).
    unsafe fn load8(p: *const u8) -> std::arch::x86_64::__m256;
    /// One value at `p` as f32.
    unsafe fn one(p: *const u8) -> f32;
}

struct F32;
struct F16;
struct BF16;

impl Lanes for F32 {
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn one(p: *const u8) -> f32 {
        (p as *const f32).read_unaligned()
    }
}

impl Lanes for F16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn one(p: *const u8) -> f32 {
        half::f16::from_bits((p as *const u16).read_unaligned()).to_f32()
    }
}

impl Lanes for BF16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
    }
    #[inline(always)]
    unsafe fn one(p: *const u8) -> f32 {
        f32::from_bits(((p as *const u16).read_unaligned() as u32) << 16)
    }
}

/// `sum w[i] * x[i]` over `n` values: f32 products, f64 sums in 16 lanes, the lanes added
/// pairwise at the end, the tail (`n % 16`) one after the other. The caller guarantees AVX2,
/// F16C and `n` values behind each pointer.
#[target_feature(enable = "avx2,f16c")]
unsafe fn dot_f64<W: Lanes, X: Lanes>(w: *const u8, x: *const u8, n: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_pd(); 4];
    let mut i = 0;
    while i + 16 <= n {
        for half in 0..2 {
            let j = i + 8 * half;
            let p = _mm256_mul_ps(W::load8(w.add(j * W::SIZE)), X::load8(x.add(j * X::SIZE)));
            let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(p));
            let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(p));
            acc[2 * half] = _mm256_add_pd(acc[2 * half], lo);
            acc[2 * half + 1] = _mm256_add_pd(acc[2 * half + 1], hi);
        }
        i += 16;
    }
    let v = _mm256_add_pd(_mm256_add_pd(acc[0], acc[1]), _mm256_add_pd(acc[2], acc[3]));
    let pair = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
    let mut sum = _mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair)));
    while i < n {
        sum += (W::one(w.add(i * W::SIZE)) * X::one(x.add(i * X::SIZE))) as f64;
        i += 1;
    }
    sum as f32
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
