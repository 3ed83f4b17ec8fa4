//! x86-64 SIMD kernels, each tested against its scalar reference in `quant/`
//! (`tests/kernels_simd.rs`), selected by [`super::Kernel::Avx2`] (`--kernel avx2|auto`) in
//! `quant::matmul`. The ternary kernels compute integer sums and leave the float epilogue to
//! the reference's own code, so they equal it bit for bit; the float dots (F32/F16/BF16
//! weights, reached through [`super::float`]) sum the reference's f32 products in f64 in
//! another order, equal to it in nearly every case and otherwise within
//! [`super::float::float_dot_bound`]. Reached through the safe wrappers below, which decline
//! (`None`) where the CPU or the layout does not fit.

use super::attn::{AttnSums, SUM_EXACT, SUM_F32, SUM_F64};
use super::float::{FloatRow, FloatType};
use super::{
    ternary_block_dots, Kernel, TernaryActs, TernaryBatch, TernaryKernel, TernaryRow, Token,
};
use crate::quant::i2_s::{self, I2sLayout};
use crate::quant::q8_k::BlockQ8K;
use crate::quant::ternary;
use crate::quant::tq1_0;
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
/// `madd` widening to i32 and the horizontal sum, four (token, block) sums at a time (four
/// tokens of one block, two tokens of two blocks, or four blocks of one token: the eight-lane
/// sums are what costs, as ggml's kernel avoids by summing floats across blocks, which the
/// reference's epilogue does not allow), and the chunk sums subtracted (codes are the ternary
/// values plus one). The caller guarantees AVX2 and the lengths it asserts.
#[target_feature(enable = "avx2")]
unsafe fn block_dots<const N: usize>(row: TernaryRow, toks: [Token; N]) {
    // The layout's bit order as a constant, so the unpacked groups need no select per chunk.
    if matches!(row, TernaryRow::Tq2_0(_)) {
        block_dots_in::<N, true>(row, toks)
    } else {
        block_dots_in::<N, false>(row, toks)
    }
}

/// [`block_dots`] for one bit order (`LSB`: group `g` in bits `2g`, TQ2_0; else I2_S's).
#[target_feature(enable = "avx2")]
unsafe fn block_dots_in<const N: usize, const LSB: bool>(row: TernaryRow, toks: [Token; N]) {
    use std::arch::x86_64::*;
    let ones16 = _mm256_set1_epi16(1);
    let rows = RowPtrs::<N>::new(row, &toks);
    let blocks = row.blocks();
    // Blocks per four-way reduction: four (token, block) sums each.
    let per = if N == 3 { 1 } else { 4 / N };
    let mut b = 0;
    while b < blocks {
        let nb = per.min(blocks - b);
        let mut sums = [0i32; 4];
        if nb * N == 4 {
            let mut v = [_mm256_setzero_si256(); 4];
            for j in 0..nb {
                let acc = rows.block_acc::<LSB>(b + j);
                for t in 0..N {
                    v[j * N + t] = _mm256_madd_epi16(acc[t], ones16);
                }
            }
            sums = hsum4_epi32(v);
        } else {
            for j in 0..nb {
                let acc = rows.block_acc::<LSB>(b + j);
                for t in 0..N {
                    sums[j * N + t] = hsum_epi32(_mm256_madd_epi16(acc[t], ones16));
                }
            }
        }
        for j in 0..nb {
            let (c, end) = (2 * (b + j), (2 * (b + j) + 2).min(rows.chunks));
            for (t, tok) in toks.iter().enumerate() {
                // SAFETY: the token has the row's chunk sums and blocks (the caller's promise).
                let mut s = *tok.sums.add(c);
                if end - c == 2 {
                    s += *tok.sums.add(c + 1);
                }
                *tok.out.add(b + j) = sums[j * N + t] - s;
            }
        }
        b += nb;
    }
}

/// The fused AVX2 ternary kernel ([`super::TernaryRunner::rows8`]): every token of `batch`
/// against eight weight rows at once, each block's eight integer dots (one per row) reduced
/// into one vector's lanes and folded straight into the reference epilogue's sums, lane `i`
/// for row `i`. Each lane does the reference's operations in its order (`sumi as f32 *
/// (d_row * d_act)` added block after block in f32, or the integer dots added), so the
/// result is bit-identical to the per-row path; what it saves is the per-row glue: the
/// integer dots' stores and reloads, the scalar epilogue, the call per row.
///
/// # Safety
/// AVX2 and F16C; every row is of the kind of `rows[0]` and has the batch's chunks (the
/// caller checks both).
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn rows8(rows: &[TernaryRow; 8], batch: &TernaryBatch, out: &mut [super::Sums8]) {
    // SAFETY: the caller's promises.
    unsafe { rows8_with::<false>(rows, batch, out) }
}

/// Whether this CPU runs the AVX-512 set ([`Kernel::Avx512`]): the AVX2 set's requirements
/// and AVX-512 F, BW, VL and VNNI (`vpdpbusd` on 256-bit vectors).
pub fn has_avx512_vnni() -> bool {
    has_avx2_fma_f16c()
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// [`rows8`] with VNNI, for TQ1_0 rows only ([`Kernel::Avx512`]; its TQ2_0 and I2_S rows take
/// the 512-bit kernels of `kernels/avx512.rs`): every group of
/// 32 unpacked codes meets its activations in one `vpdpbusd` (unsigned codes times signed
/// activations, four products summed into each i32 lane, no saturation), where AVX2 needs
/// `maddubs` into i16, the adds of the i16 pair sums and a `madd` widening them to i32. The
/// integer sums are the same integers, so the result is the same bits. (512-bit registers
/// holding two groups each were slower here: `examples/gemv_speed.rs tq1_0 2560 6912 N avx512
/// 64`, 21.0 ms per call with these against 24.6 ms.)
///
/// # Safety
/// [`rows8`]'s, and AVX-512 F, BW, VL and VNNI ([`has_avx512_vnni`]). Panics on rows of
/// another format.
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn rows8_vnni(
    rows: &[TernaryRow; 8],
    batch: &TernaryBatch,
    out: &mut [super::Sums8],
) {
    // SAFETY: the caller's promises.
    unsafe { rows8_with::<true>(rows, batch, out) }
}

/// [`rows8`]'s body, compiled into each entry point with its features (`VNNI`: the
/// accumulation by `vpdpbusd`).
///
/// # Safety
/// As the entry point's.
#[inline(always)]
unsafe fn rows8_with<const VNNI: bool>(
    rows: &[TernaryRow; 8],
    batch: &TernaryBatch,
    out: &mut [super::Sums8],
) {
    use super::TERNARY_TOKENS_PER_PASS as PASS;
    let fmt = fmt_of(rows[0]);
    let k = Rows8 {
        codes: std::array::from_fn(|i| rows[i].raw().0),
        code_stride: rows[0].raw().1,
        chunks: rows[0].chunks(),
        ahead: Ahead::new(rows),
    };
    let mut t = 0;
    while t < batch.tokens() {
        let n = (batch.tokens() - t).min(PASS);
        let (toks, int) = pass_tokens(batch, t, n, fmt);
        let o = &mut out[t..t + n];
        // SAFETY: the caller's promises; every token has `chunks` chunks and chunk sums
        // (TernaryBatch::new checked them against each other, the caller against the rows).
        unsafe {
            match (fmt, int) {
                (FMT_TQ1_0, _) => k.run::<FMT_TQ1_0, false, VNNI>(&toks[..n], o),
                _ if VNNI => unreachable!("rows8_vnni takes TQ1_0 rows only"),
                (FMT_TQ2_0, _) => k.run::<FMT_TQ2_0, false, VNNI>(&toks[..n], o),
                (_, false) => k.run::<FMT_I2S, false, VNNI>(&toks[..n], o),
                (_, true) => k.run::<FMT_I2S, true, VNNI>(&toks[..n], o),
            }
        }
        t += n;
    }
}

/// What the eight-row kernels fetch ahead of their loads, a share per block: eight rows read
/// side by side, block by block, are not streams the hardware prefetcher follows.
/// - Eight consecutive rows of a matrix (prefill, a few tokens): the next eight rows' bytes,
///   in order, spread over the pass.
/// - Eight rows apart from each other (one token: [`super::super::matmul`] gives each of the
///   eight a run of consecutive rows, eight streams): each row's own bytes [`STREAM_AHEAD`]
///   bytes past the block being read.
pub(super) enum Ahead {
    Next {
        next: *const u8,
        lines: usize,
    },
    Streams {
        rows: [*const u8; 8],
        /// Bytes from one block to the next (`TernaryRow::raw`).
        stride: usize,
    },
}

/// How far ahead of its block each of eight row streams is fetched ([`Ahead::Streams`]):
/// one-token 2B-4T decode, `forward_speed MODEL 8 32 2 amx 2` (TQ2_0): 256 bytes 16.2 tok/s,
/// 512 16.6, 768 16.4, 1024 16.3, 1536 15.6.
pub(super) const STREAM_AHEAD: usize = 512;

impl Ahead {
    pub(super) fn new(rows: &[TernaryRow; 8]) -> Self {
        let row_bytes = match rows[7] {
            TernaryRow::Tq2_0(r) | TernaryRow::I2s(r) | TernaryRow::Tq1_0(r) => r.len(),
        };
        let ptrs: [*const u8; 8] = std::array::from_fn(|i| rows[i].raw().0);
        let consecutive = ptrs
            .windows(2)
            .all(|p| p[0].wrapping_add(row_bytes) == p[1]);
        if consecutive {
            let blocks = rows[0].chunks().div_ceil(2).max(1);
            Ahead::Next {
                next: ptrs[7].wrapping_add(row_bytes),
                lines: (8 * row_bytes).div_ceil(64 * blocks),
            }
        } else {
            Ahead::Streams {
                rows: ptrs,
                stride: rows[0].raw().1,
            }
        }
    }

    /// Block `b`'s share. (A prefetch never faults.)
    #[inline(always)]
    pub(super) unsafe fn fetch(&self, b: usize) {
        use std::arch::x86_64::*;
        match self {
            Ahead::Next { next, lines } => {
                for j in 0..*lines {
                    let line = (b * lines + j) * 64;
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(line) as *const i8);
                }
            }
            Ahead::Streams { rows, stride } => {
                // No division here: this runs once per block of every eight-row call.
                let at = b * stride + STREAM_AHEAD;
                for r in rows {
                    _mm_prefetch::<_MM_HINT_T0>(r.wrapping_add(at) as *const i8);
                }
            }
        }
    }
}

/// The f16 at byte `at` of each of up to eight rows (a block's scale, in `rows`' order) as
/// f32 (F16C); lanes past the rows hold 0.
///
/// The bits are gathered four to a 64-bit word by scalar loads, shifts and ors, which issue on
/// the integer ports: eight 16-bit inserts (what `_mm_setr_epi16` or a byte array became) each
/// take the shuffle port, which the kernels' reductions need. 2560x6912 TQ2_0 one-token GEMV,
/// `avx512` (`examples/gemv_speed.rs tq2_0 2560 6912 3000 avx512 1`, three alternating pairs):
/// 175.5-177.3 us against 187.2-188.0; 6912x2560 162.7 against 171.7.
///
/// # Safety
/// Two bytes at `at` of each row; F16C.
#[inline(always)]
pub(super) unsafe fn f16_at(
    rows: impl Iterator<Item = *const u8>,
    at: usize,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let mut q = [0u64; 2];
    for (i, r) in rows.enumerate().take(8) {
        let d = (r.add(at) as *const u16).read_unaligned();
        q[i / 4] |= (d as u64) << (16 * (i % 4));
    }
    _mm256_cvtph_ps(_mm_set_epi64x(q[1] as i64, q[0] as i64))
}

/// A row's format as [`rows8`]'s loops take it.
pub(super) fn fmt_of(row: TernaryRow) -> u8 {
    match row {
        TernaryRow::Tq2_0(_) => FMT_TQ2_0,
        TernaryRow::I2s(_) => FMT_I2S,
        TernaryRow::Tq1_0(_) => FMT_TQ1_0,
    }
}

/// Tokens `t..t + n` of `batch` (`n <= TERNARY_TOKENS_PER_PASS`) as [`Tok8`]s, and whether
/// their sums are integer (I2_S rows, `fmt`, with int8 activations: bitnet.cpp's epilogue,
/// applied once per row by the caller).
#[inline(always)]
pub(super) fn pass_tokens(
    batch: &TernaryBatch,
    t: usize,
    n: usize,
    fmt: u8,
) -> ([Tok8; super::TERNARY_TOKENS_PER_PASS], bool) {
    /// The multiplier of every block for int8 activations (one scale per row, applied after).
    static ONE: f32 = 1.0;
    let mut toks = [Tok8 {
        acts: std::ptr::null(),
        stride: 0,
        sums: std::ptr::null(),
        yd: std::ptr::null(),
        yd_stride: 0,
    }; super::TERNARY_TOKENS_PER_PASS];
    let mut int = false;
    for (i, tok) in toks.iter_mut().enumerate().take(n) {
        let (acts, sums) = batch.token(t + i);
        let (p, stride) = acts.raw();
        let (yd, yd_stride) = match acts {
            TernaryActs::Q8K(y) => (
                (y.as_ptr() as *const u8).wrapping_add(std::mem::offset_of!(BlockQ8K, d)),
                std::mem::size_of::<BlockQ8K>(),
            ),
            TernaryActs::I8(_) => {
                int = fmt == FMT_I2S;
                (&ONE as *const f32 as *const u8, 0)
            }
        };
        *tok = Tok8 {
            acts: p,
            stride,
            sums: sums.as_ptr(),
            yd,
            yd_stride,
        };
    }
    (toks, int)
}

/// Two rows' block (codes at `c0`, `c1`; activations as [`block_acc_at`]) for every token:
/// each row's i16 sums widened to i32 (`madd` with ones; with `VNNI`, TQ1_0's sums are i32
/// already) and the two added pairwise (`hadd`: lanes 0-1 and 4-5 the first row's, 2-3 and
/// 6-7 the second's).
///
/// # Safety
/// As [`block_acc_at`], for both rows.
///
/// This and the block helpers below carry no `#[target_feature]` and are always inlined:
/// Rust refuses `#[inline(always)]` on a target-feature function, and as plain `#[inline]` ones
/// LLVM kept this one out of line in [`rows8`], its `[__m256i; N]` results going through memory.
/// Inlined into the AVX2 kernels (their only callers), their intrinsics inline there too; the
/// 64-token 6912x2560 TQ2_0 GEMM then runs 12% fewer instructions in the kernel (callgrind,
/// `examples/gemv_speed.rs tq2_0 2560 6912 1 avx2 64`: 151 M -> 132 M).
#[inline(always)]
unsafe fn pair_sums<const N: usize, const FMT: u8, const VNNI: bool>(
    (c0, c1): (*const u8, *const u8),
    q: &[*const i8; N],
    two: bool,
    ones16: std::arch::x86_64::__m256i,
) -> [std::arch::x86_64::__m256i; N] {
    use std::arch::x86_64::*;
    let (a0, a1) = (
        block_acc_fmt::<N, FMT, VNNI>(c0, q, two),
        block_acc_fmt::<N, FMT, VNNI>(c1, q, two),
    );
    let mut h = [_mm256_setzero_si256(); N];
    for t in 0..N {
        h[t] = if VNNI && FMT == FMT_TQ1_0 {
            _mm256_hadd_epi32(a0[t], a1[t])
        } else {
            _mm256_hadd_epi32(
                _mm256_madd_epi16(a0[t], ones16),
                _mm256_madd_epi16(a1[t], ones16),
            )
        };
    }
    h
}

/// The row formats of [`rows8`], as a constant parameter of its loops.
pub(super) const FMT_TQ2_0: u8 = 0;
pub(super) const FMT_I2S: u8 = 1;
pub(super) const FMT_TQ1_0: u8 = 2;

/// A block's i16 accumulators, one per token, in format `FMT` ([`block_acc_at`] for the 2-bit
/// layouts, [`block_acc_tq1_0`] for TQ1_0, whose blocks always have both halves).
///
/// # Safety
/// As [`block_acc_at`] (a whole 54-byte block at `codes` for TQ1_0).
#[inline(always)]
unsafe fn block_acc_fmt<const N: usize, const FMT: u8, const VNNI: bool>(
    codes: *const u8,
    q: &[*const i8; N],
    two: bool,
) -> [std::arch::x86_64::__m256i; N] {
    match FMT {
        FMT_TQ2_0 => block_acc_at::<N, true>(codes, q, two),
        FMT_I2S => block_acc_at::<N, false>(codes, q, two),
        _ => block_acc_tq1_0::<N, VNNI>(codes, q),
    }
}

/// Base-3 digit `n` of every byte, as `ggml_vec_dot_tq1_0_q8_K` (AVX2) extracts it from the
/// byte already multiplied by `3^n`: `(q * 3) >> 8` (`tq1_0::extract`) as a saturating
/// decrement, two averages and a shift, since AVX2 has no 8-bit multiply.
#[inline(always)]
unsafe fn tq1_0_digits(x: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let x = _mm256_subs_epu8(x, _mm256_set1_epi8(1));
    let x = _mm256_avg_epu8(x, _mm256_avg_epu8(x, _mm256_setzero_si256()));
    _mm256_and_si256(_mm256_srli_epi16::<6>(x), _mm256_set1_epi8(3))
}

/// `x * 9` per byte, modulo 256 (`ggml_vec_dot_tq1_0_q8_K`'s shift, mask and add).
#[inline(always)]
unsafe fn times9(x: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_add_epi8(
        _mm256_and_si256(_mm256_slli_epi16::<3>(x), _mm256_set1_epi8(-8)),
        x,
    )
}

/// One TQ1_0 block's i16 accumulators, one per token: its 256 codes (ternary value plus one)
/// unpacked as `ggml_vec_dot_tq1_0_q8_K` (AVX2) does (the first 32 bytes hold five digits for
/// weights `32n + j`, the next 16 five for `160 + 16n + j`, the last 4 four for `240 + 4n + j`),
/// each group `maddubs` with its 32 activations and added in i16: eight pair sums in
/// [-512, 508] per lane, within [-4096, 4064].
///
/// # Safety
/// AVX2; a whole block at `codes` and 256 activations at every `q[t]`.
#[inline(always)]
unsafe fn block_acc_tq1_0<const N: usize, const VNNI: bool>(
    codes: *const u8,
    q: &[*const i8; N],
) -> [std::arch::x86_64::__m256i; N] {
    use std::arch::x86_64::*;
    let groups = tq1_0_groups(codes);
    let mut acc = [_mm256_setzero_si256(); N];
    if VNNI {
        for (acc, &q) in acc.iter_mut().zip(q.iter()) {
            let mut p = [_mm256_setzero_si256(); 2];
            for (g, &codes) in groups.iter().enumerate() {
                let a = _mm256_loadu_si256(q.add(32 * g) as *const __m256i);
                p[g % 2] = dpbusd(p[g % 2], codes, a);
            }
            *acc = _mm256_add_epi32(p[0], p[1]);
        }
        return acc;
    }
    for (acc, &q) in acc.iter_mut().zip(q.iter()) {
        let mut p = [_mm256_setzero_si256(); 8];
        for (g, p) in p.iter_mut().enumerate() {
            *p = _mm256_maddubs_epi16(
                groups[g],
                _mm256_loadu_si256(q.add(32 * g) as *const __m256i),
            );
        }
        *acc = _mm256_add_epi16(
            _mm256_add_epi16(_mm256_add_epi16(p[0], p[1]), _mm256_add_epi16(p[2], p[3])),
            _mm256_add_epi16(_mm256_add_epi16(p[4], p[5]), _mm256_add_epi16(p[6], p[7])),
        );
    }
    acc
}

/// One TQ1_0 block's 256 codes (ternary value plus one) unpacked as `ggml_vec_dot_tq1_0_q8_K`
/// (AVX2) does, in eight groups of 32: group `g`'s byte `i` is weight `32g + i` (the first 32
/// bytes hold five digits for weights `32n + j`, the next 16 five for `160 + 16n + j`, the last
/// 4 four for `240 + 4n + j`; groups 5-7 put two of those runs side by side).
///
/// # Safety
/// AVX2; a whole block at `codes`.
#[inline(always)]
pub(super) unsafe fn tq1_0_groups(codes: *const u8) -> [std::arch::x86_64::__m256i; 8] {
    use std::arch::x86_64::*;
    let x0 = _mm256_loadu_si256(codes as *const __m256i);
    let x1 = _mm256_add_epi8(x0, _mm256_add_epi8(x0, x0));
    let (x2, x3) = (times9(x0), times9(x1));
    let x4 = times9(x2);
    let lo = _mm256_castsi128_si256(_mm_loadu_si128(codes.add(32) as *const __m128i));
    let lo3 = _mm256_add_epi8(lo, _mm256_add_epi8(lo, lo));
    let (lo9, lo27) = (times9(lo), times9(lo3));
    let lo81 = times9(lo9);
    let qh = (codes.add(tq1_0::QS_BYTES) as *const i32).read_unaligned();
    let h = _mm256_mullo_epi16(
        _mm256_cvtepu8_epi16(_mm_set1_epi32(qh)),
        _mm256_set_epi16(27, 27, 27, 27, 9, 9, 9, 9, 3, 3, 3, 3, 1, 1, 1, 1),
    );
    let h = _mm256_and_si256(h, _mm256_set1_epi16(0xFF));
    let h = _mm_packus_epi16(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
    [
        tq1_0_digits(x0),
        tq1_0_digits(x1),
        tq1_0_digits(x2),
        tq1_0_digits(x3),
        tq1_0_digits(x4),
        tq1_0_digits(_mm256_set_m128i(
            _mm256_castsi256_si128(lo3),
            _mm256_castsi256_si128(lo),
        )),
        tq1_0_digits(_mm256_set_m128i(
            _mm256_castsi256_si128(lo27),
            _mm256_castsi256_si128(lo9),
        )),
        tq1_0_digits(_mm256_set_m128i(h, _mm256_castsi256_si128(lo81))),
    ]
}

/// `hadd` token by token.
#[inline(always)]
unsafe fn hadd_n<const N: usize>(
    a: [std::arch::x86_64::__m256i; N],
    b: [std::arch::x86_64::__m256i; N],
) -> [std::arch::x86_64::__m256i; N] {
    use std::arch::x86_64::*;
    let mut h = [_mm256_setzero_si256(); N];
    for t in 0..N {
        h[t] = _mm256_hadd_epi32(a[t], b[t]);
    }
    h
}

/// One token of [`rows8`]: its activations, chunk sums and per-block activation multiplier
/// (Q8_K's `d`, at `yd` plus `b * yd_stride` bytes; a stride of 0 reads one 1.0).
#[derive(Clone, Copy)]
pub(super) struct Tok8 {
    pub(super) acts: *const i8,
    pub(super) stride: usize,
    pub(super) sums: *const i32,
    pub(super) yd: *const u8,
    pub(super) yd_stride: usize,
}

/// Eight weight rows of one format, by pointer, and the bytes after the last one ([`Ahead`]).
struct Rows8 {
    codes: [*const u8; 8],
    code_stride: usize,
    chunks: usize,
    ahead: Ahead,
}

impl Rows8 {
    /// [`rows8`] for up to four tokens and one format (`FMT`: TQ2_0 and TQ1_0, whose block
    /// scales multiply the sums, or I2_S), `INT`: the integer dots summed (I2_S with int8
    /// activations, bitnet.cpp's epilogue applied once per row by the caller).
    ///
    /// # Safety
    /// [`rows8`]'s (with VNNI, [`rows8_vnni`]'s), and `toks.len() == out.len() <= 4`. Always
    /// inlined into the entry point, whose features it is compiled with.
    #[inline(always)]
    unsafe fn run<const FMT: u8, const INT: bool, const VNNI: bool>(
        &self,
        toks: &[Tok8],
        out: &mut [super::Sums8],
    ) {
        match toks.len() {
            1 => self.run_n::<1, FMT, INT, VNNI>([toks[0]], out),
            2 => self.run_n::<2, FMT, INT, VNNI>([toks[0], toks[1]], out),
            3 => self.run_n::<3, FMT, INT, VNNI>([toks[0], toks[1], toks[2]], out),
            _ => self.run_n::<4, FMT, INT, VNNI>([toks[0], toks[1], toks[2], toks[3]], out),
        }
    }

    /// [`Rows8::run`] for `N` tokens.
    #[inline(always)]
    unsafe fn run_n<const N: usize, const FMT: u8, const INT: bool, const VNNI: bool>(
        &self,
        toks: [Tok8; N],
        out: &mut [super::Sums8],
    ) {
        use std::arch::x86_64::*;
        let ones16 = _mm256_set1_epi16(1);
        let mut acc_f = [_mm256_setzero_ps(); N];
        let mut acc_i = [_mm256_setzero_si256(); N];
        for b in 0..self.chunks.div_ceil(2) {
            self.ahead.fetch(b);
            // Rows 0-3 and 4-7: after two rounds of pairwise adds each row's sum is split over
            // the two 128-bit halves of `q0` (rows 0-3) and `q1` (rows 4-7). Written out row
            // pair by row pair, so that every partial stays in a register.
            let (c, two) = (2 * b, 2 * b + 1 < self.chunks);
            let mut q = [std::ptr::null(); N];
            for (q, tok) in q.iter_mut().zip(toks.iter()) {
                *q = tok.acts.add(b * tok.stride);
            }
            let at = b * self.code_stride;
            let pair = |i: usize| (self.codes[i].add(at), self.codes[i + 1].add(at));
            let q0 = hadd_n(
                pair_sums::<N, FMT, VNNI>(pair(0), &q, two, ones16),
                pair_sums::<N, FMT, VNNI>(pair(2), &q, two, ones16),
            );
            let q1 = hadd_n(
                pair_sums::<N, FMT, VNNI>(pair(4), &q, two, ones16),
                pair_sums::<N, FMT, VNNI>(pair(6), &q, two, ones16),
            );
            let dx = if FMT != FMT_I2S {
                // SAFETY: block `b` of each TQ row holds its f16 scale at `d_at`.
                let d_at = if FMT == FMT_TQ2_0 {
                    tq2_0::QS_BYTES
                } else {
                    tq1_0::QS_BYTES + tq1_0::QH_BYTES
                };
                f16_at(self.codes.iter().copied(), b * self.code_stride + d_at)
            } else {
                _mm256_set1_ps(1.0)
            };
            for t in 0..N {
                let s = _mm256_add_epi32(
                    _mm256_permute2x128_si256::<0x20>(q0[t], q1[t]),
                    _mm256_permute2x128_si256::<0x31>(q0[t], q1[t]),
                );
                // The codes are the ternary values plus one: subtract the chunks' sums.
                let mut cs = *toks[t].sums.add(c);
                if two {
                    cs += *toks[t].sums.add(c + 1);
                }
                let s = _mm256_sub_epi32(s, _mm256_set1_epi32(cs));
                if INT {
                    acc_i[t] = _mm256_add_epi32(acc_i[t], s);
                } else {
                    let yd = (toks[t].yd.add(b * toks[t].yd_stride) as *const f32).read_unaligned();
                    // The reference's `sumf += sumi as f32 * (d_x * d_y)`, unfused.
                    let m = _mm256_mul_ps(dx, _mm256_set1_ps(yd));
                    acc_f[t] = _mm256_add_ps(acc_f[t], _mm256_mul_ps(_mm256_cvtepi32_ps(s), m));
                }
            }
        }
        for (t, o) in out.iter_mut().enumerate().take(N) {
            *o = if INT {
                let mut v = [0i32; 8];
                _mm256_storeu_si256(v.as_mut_ptr() as *mut __m256i, acc_i[t]);
                super::Sums8::I32(v)
            } else {
                let mut v = [0f32; 8];
                _mm256_storeu_ps(v.as_mut_ptr(), acc_f[t]);
                super::Sums8::F32(v)
            };
        }
    }
}

/// One weight row and `N` tokens' activations as base pointers and per-block strides, so the
/// kernel's loops do no enum matches and no bounds checks (every chunk they read exists: the
/// caller's guarantee).
struct RowPtrs<const N: usize> {
    codes: *const u8,
    code_stride: usize,
    chunks: usize,
    acts: [(*const i8, usize); N],
}

impl<const N: usize> RowPtrs<N> {
    fn new(row: TernaryRow, toks: &[Token; N]) -> Self {
        let (codes, code_stride) = row.raw();
        let mut acts = [(std::ptr::null::<i8>(), 0usize); N];
        for (a, t) in acts.iter_mut().zip(toks.iter()) {
            *a = (t.acts, t.stride);
        }
        RowPtrs {
            codes,
            code_stride,
            chunks: row.chunks(),
            acts,
        }
    }

    /// Block `b`'s i16 accumulators, one per token: its two chunks, or the row's trailing
    /// half block.
    ///
    /// # Safety
    /// AVX2; block `b` exists in the row and every token.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn block_acc<const LSB: bool>(&self, b: usize) -> [std::arch::x86_64::__m256i; N] {
        let mut q = [std::ptr::null(); N];
        for (q, &(base, stride)) in q.iter_mut().zip(self.acts.iter()) {
            *q = base.add(b * stride);
        }
        block_acc_at::<N, LSB>(
            self.codes.add(b * self.code_stride),
            &q,
            2 * b + 1 < self.chunks,
        )
    }
}

/// A block's i16 accumulators, one per token, from its codes at `codes` and each token's
/// activations at `q[t]`: its first chunk, and its second where `two` (a row's trailing half
/// block has one).
///
/// # Safety
/// AVX2; the block's chunks exist at `codes` (32 bytes each) and every `q[t]` (128 each).
#[inline(always)]
unsafe fn block_acc_at<const N: usize, const LSB: bool>(
    codes: *const u8,
    q: &[*const i8; N],
    two: bool,
) -> [std::arch::x86_64::__m256i; N] {
    let mut acc = [std::arch::x86_64::_mm256_setzero_si256(); N];
    chunk_acc::<N, LSB>(codes, q, 0, &mut acc);
    if two {
        chunk_acc::<N, LSB>(codes.add(32), q, 128, &mut acc);
    }
    acc
}

/// Adds one chunk (32 code bytes at `codes`, each token's 128 activations at `q[t] + off`) to
/// every token's accumulator.
///
/// # Safety
/// AVX2; that chunk exists.
#[inline(always)]
unsafe fn chunk_acc<const N: usize, const LSB: bool>(
    codes: *const u8,
    q: &[*const i8; N],
    off: usize,
    acc: &mut [std::arch::x86_64::__m256i; N],
) {
    use std::arch::x86_64::*;
    let mask = _mm256_set1_epi8(3);
    // SAFETY (loads): the chunk holds 32 code bytes and 128 activations per token, read
    // unaligned.
    let v = _mm256_loadu_si256(codes as *const __m256i);
    let (b0, b2, b4, b6) = (
        _mm256_and_si256(v, mask),
        _mm256_and_si256(_mm256_srli_epi16::<2>(v), mask),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask),
        _mm256_and_si256(_mm256_srli_epi16::<6>(v), mask),
    );
    // Group g's codes, in the layout's bit order.
    let groups = if LSB {
        [b0, b2, b4, b6]
    } else {
        [b6, b4, b2, b0]
    };
    for (acc, &q) in acc.iter_mut().zip(q.iter()) {
        let q = q.add(off);
        // Two independent sums per chunk, as ggml's kernel keeps them, joined at the end.
        let p0 = _mm256_add_epi16(
            _mm256_maddubs_epi16(groups[0], _mm256_loadu_si256(q as *const __m256i)),
            _mm256_maddubs_epi16(groups[1], _mm256_loadu_si256(q.add(32) as *const __m256i)),
        );
        let p1 = _mm256_add_epi16(
            _mm256_maddubs_epi16(groups[2], _mm256_loadu_si256(q.add(64) as *const __m256i)),
            _mm256_maddubs_epi16(groups[3], _mm256_loadu_si256(q.add(96) as *const __m256i)),
        );
        *acc = _mm256_add_epi16(*acc, _mm256_add_epi16(p0, p1));
    }
}

/// `acc + ` the sums of four products of unsigned `codes` bytes and signed `acts` bytes per
/// i32 lane (`vpdpbusd`, AVX-512 VNNI on 256-bit vectors; no saturation).
///
/// # Safety
/// AVX-512 F, VL and VNNI; only reached in the [`rows8_vnni`] instantiation (`VNNI`).
#[inline(always)]
unsafe fn dpbusd(
    acc: std::arch::x86_64::__m256i,
    codes: std::arch::x86_64::__m256i,
    acts: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    std::arch::x86_64::_mm256_dpbusd_epi32(acc, codes, acts)
}

/// The sums of four vectors' eight i32 lanes each, at once: two rounds of pairwise adds leave
/// each sum split over the two 128-bit halves. (No closures in these kernels: a closure does
/// not get its function's target features, and the intrinsics in it would become calls.)
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum4_epi32(v: [std::arch::x86_64::__m256i; 4]) -> [i32; 4] {
    use std::arch::x86_64::*;
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    let four = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
    let mut lanes = [0i32; 4];
    _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, four);
    lanes
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

/// Whether this CPU runs the AVX2 float dots (F16C for the f16 conversions, FMA for the f64
/// sums of exact products; every AVX2 CPU made has both, checked anyway).
pub(crate) fn has_avx2_fma_f16c() -> bool {
    has_avx2()
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// One pass of [`super::float::float_dots`] with AVX2: `n` (1 or 2) tokens against the row
/// `w`, exact products fused (F16 x f16: `wide` not null, the tokens widened to f64) or the
/// reference's f32 products of the f32 values at `x` added (token after token, `k` each).
///
/// # Safety
/// AVX2, FMA and F16C; `w` holds `k` weights, `x` holds `n * k` values, `wide` (where not
/// null: F16 rows only) `n * k` values, `out` `n`.
pub(crate) unsafe fn float_pass(
    w: FloatRow,
    x: *const f32,
    wide: *const f64,
    n: usize,
    k: usize,
    out: &mut [f32],
) {
    let wp = w.bytes().as_ptr();
    // SAFETY: the caller's promises.
    unsafe {
        match (!wide.is_null(), w, n) {
            (true, _, 1) => dots_exact::<1>(wp, wide, k, out),
            (true, _, _) => dots_exact::<2>(wp, wide, k, out),
            (false, FloatRow::F32(_), _) => dots_rounded::<F32>(wp, x, n, k, out),
            (false, FloatRow::F16(_), _) => dots_rounded::<F16>(wp, x, n, k, out),
            (false, FloatRow::BF16(_), _) => dots_rounded::<BF16>(wp, x, n, k, out),
        }
    }
}

/// [`dots_rounded_n`] for `n` (1 or 2) tokens.
///
/// # Safety
/// As [`dots_rounded_n`], for `n` tokens.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_rounded<W: Lanes>(w: *const u8, x: *const f32, n: usize, k: usize, out: &mut [f32]) {
    match n {
        1 => dots_rounded_n::<W, 1>(w, x, k, out),
        _ => dots_rounded_n::<W, 2>(w, x, k, out),
    }
}

/// A float element type the AVX2 and AVX-512 dots read: its size, eight or sixteen values
/// widened to f32, one value.
pub(super) trait Lanes {
    const SIZE: usize;
    /// Eight values at `p` as f32 (exact: every type here widens exactly).
    unsafe fn load8(p: *const u8) -> std::arch::x86_64::__m256;
    /// Sixteen values at `p` as f32 (AVX-512 F).
    unsafe fn load16(p: *const u8) -> std::arch::x86_64::__m512;
    /// One value at `p` as f32.
    unsafe fn one(p: *const u8) -> f32;
}

pub(super) struct F32;
pub(super) struct F16;
pub(super) struct BF16;

impl Lanes for F32 {
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn load16(p: *const u8) -> std::arch::x86_64::__m512 {
        std::arch::x86_64::_mm512_loadu_ps(p as *const f32)
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
    unsafe fn load16(p: *const u8) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    unsafe fn one(p: *const u8) -> f32 {
        use std::arch::x86_64::*;
        // F16C directly: `half`'s `to_f32` checks the CPU's features on every call.
        let bits = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
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
    unsafe fn load16(p: *const u8) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
    }
    #[inline(always)]
    unsafe fn one(p: *const u8) -> f32 {
        f32::from_bits(((p as *const u16).read_unaligned() as u32) << 16)
    }
}

/// The end of an exact float dot (F16 weights at `w`, one token's f64 activations at `x`):
/// the terms `tail` (past the last whole sixteen) added one after the other to the lanes'
/// `sum`, rounded to f32. Shared by the AVX2 and AVX-512 passes.
///
/// # Safety
/// F16C; `tail.end` weights at `w` and values at `x`.
#[inline(always)]
pub(super) unsafe fn finish_exact(
    mut sum: f64,
    w: *const u8,
    x: *const f64,
    tail: std::ops::Range<usize>,
) -> f32 {
    for j in tail {
        sum += F16::one(w.add(2 * j)) as f64 * *x.add(j);
    }
    sum as f32
}

/// [`finish_exact`] for the reference's rounded f32 products of weights of type `W` and one
/// token's f32 activations.
///
/// # Safety
/// As [`finish_exact`], with f32 values at `x`.
#[inline(always)]
pub(super) unsafe fn finish_rounded<W: Lanes>(
    mut sum: f64,
    w: *const u8,
    x: *const f32,
    tail: std::ops::Range<usize>,
) -> f32 {
    for j in tail {
        sum += (W::one(w.add(j * W::SIZE)) * *x.add(j)) as f64;
    }
    sum as f32
}

/// The sum of two 4-lane f64 accumulators: lanes added pairwise, then the two halves.
#[inline(always)]
pub(super) unsafe fn hsum_pd(a: std::arch::x86_64::__m256d, b: std::arch::x86_64::__m256d) -> f64 {
    use std::arch::x86_64::*;
    let v = _mm256_add_pd(a, b);
    let pair = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
    _mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair)))
}

/// F16 weights times `N` tokens of f16 activations held as f64 (`x`, token after token,
/// `k` each, widened once per matmul: widening them here, per row, was half of a prefill's
/// all-logits lm_head): per sixteen weights two loads and widenings, then per token four f64
/// fused multiply-adds of exact products (see [`super::float::FloatBatch`]), the same sums as
/// adding the reference's f32 products, into four independent accumulators (so one token's
/// sums are not one chain of dependent adds: decode reads the lm_head at memory speed).
///
/// # Safety
/// AVX2, FMA and F16C; `k` f16 weights at `w`, `N * k` f64 values at `x`, `N` outputs.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_exact<const N: usize>(w: *const u8, x: *const f64, k: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_pd(); 4]; N];
    let mut i = 0;
    while i + 16 <= k {
        // 2 KB ahead in the weight stream (into the next row near a row's end; a prefetch
        // never faults): decode's lm_head is read from memory, and this measured 10-14% more
        // decode tok/s on the 2B-4T shape than the hardware prefetcher alone (same prefetch
        // in the ternary kernel: no change).
        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(2 * i + 2048) as *const i8);
        let (w0, w1) = (F16::load8(w.add(2 * i)), F16::load8(w.add(2 * i + 16)));
        let wd = [
            _mm256_cvtps_pd(_mm256_castps256_ps128(w0)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(w0)),
            _mm256_cvtps_pd(_mm256_castps256_ps128(w1)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(w1)),
        ];
        for (t, acc) in acc.iter_mut().enumerate() {
            let xt = x.add(t * k + i);
            for (l, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_pd(wd[l], _mm256_loadu_pd(xt.add(4 * l)), *a);
            }
        }
        i += 16;
    }
    for (t, (acc, o)) in acc.iter().zip(out.iter_mut()).enumerate() {
        let sum = hsum_pd(_mm256_add_pd(acc[0], acc[1]), _mm256_add_pd(acc[2], acc[3]));
        *o = finish_exact(sum, w, x.add(t * k), i..k);
    }
}

/// Weights of type `W` times `N` tokens of f32 activations (`x`, token after token, `k` each):
/// per sixteen weights two loads and widenings to f32, then per token the reference's f32
/// products (no FMA), widened to f64 and added into four accumulators, as [`dots_exact`].
///
/// # Safety
/// AVX2, FMA and F16C; `k` weights of type `W` at `w`, `N * k` f32 values at `x`, `N` outputs.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots_rounded_n<W: Lanes, const N: usize>(
    w: *const u8,
    x: *const f32,
    k: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_pd(); 4]; N];
    let mut i = 0;
    while i + 16 <= k {
        let wv = [
            W::load8(w.add(i * W::SIZE)),
            W::load8(w.add((i + 8) * W::SIZE)),
        ];
        for (t, acc) in acc.iter_mut().enumerate() {
            for (h, &wv) in wv.iter().enumerate() {
                let p = _mm256_mul_ps(wv, _mm256_loadu_ps(x.add(t * k + i + 8 * h)));
                acc[2 * h] = _mm256_add_pd(acc[2 * h], _mm256_cvtps_pd(_mm256_castps256_ps128(p)));
                acc[2 * h + 1] = _mm256_add_pd(
                    acc[2 * h + 1],
                    _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(p)),
                );
            }
        }
        i += 16;
    }
    for (t, (acc, o)) in acc.iter().zip(out.iter_mut()).enumerate() {
        let sum = hsum_pd(_mm256_add_pd(acc[0], acc[1]), _mm256_add_pd(acc[2], acc[3]));
        *o = finish_rounded::<W>(sum, w, x.add(t * k), i..k);
    }
}

/// [`super::float::f32_sum_dots`] with AVX2 for rows of type `ty`.
///
/// # Safety
/// As [`seq_dots8_tokens`].
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
            FloatType::F32 => seq_dots8_tokens::<F32>(rows, xs, k, out),
            FloatType::F16 => seq_dots8_tokens::<F16>(rows, xs, k, out),
            FloatType::BF16 => seq_dots8_tokens::<BF16>(rows, xs, k, out),
        }
    }
}

/// [`seq_dots8`] for the 1 to 4 tokens `xs`, token `t`'s eight sums into `out[t]`.
///
/// # Safety
/// As [`seq_dots8`] for every token; `out.len() == xs.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn seq_dots8_tokens<W: Lanes>(
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

/// Eight sequential f32 sums `s_j = s_j + w_j[i] * x[i]`, one per lane, for each of `N` tokens.
///
/// # Safety
/// AVX2, FMA and F16C; `k` weights of type `W` behind each row pointer, `k` values at each
/// `xs[t]`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn seq_dots8<W: Lanes, const N: usize>(
    rows: &[*const u8; 8],
    xs: [*const f32; N],
    k: usize,
) -> [[f32; 8]; N] {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); N];
    let mut i = 0;
    while i + 8 <= k {
        let mut v = [_mm256_setzero_ps(); 8];
        for (v, &r) in v.iter_mut().zip(rows.iter()) {
            *v = W::load8(r.add(i * W::SIZE));
        }
        let t = transpose8(v);
        for (e, t) in t.iter().enumerate() {
            for (acc, x) in acc.iter_mut().zip(xs.iter()) {
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(*t, _mm256_set1_ps(*x.add(i + e))));
            }
        }
        i += 8;
    }
    while i < k {
        let mut w = [0f32; 8];
        for (w, &r) in w.iter_mut().zip(rows.iter()) {
            *w = W::one(r.add(i * W::SIZE));
        }
        let w = _mm256_loadu_ps(w.as_ptr());
        for (acc, x) in acc.iter_mut().zip(xs.iter()) {
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(w, _mm256_set1_ps(*x.add(i))));
        }
        i += 1;
    }
    let mut out = [[0f32; 8]; N];
    for (o, a) in out.iter_mut().zip(acc.iter()) {
        _mm256_storeu_ps(o.as_mut_ptr(), *a);
    }
    out
}

/// An 8x8 f32 transpose: `out[e]` lane `j` is `v[j]` lane `e`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn transpose8(v: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let t0 = _mm256_unpacklo_ps(v[0], v[1]);
    let t1 = _mm256_unpackhi_ps(v[0], v[1]);
    let t2 = _mm256_unpacklo_ps(v[2], v[3]);
    let t3 = _mm256_unpackhi_ps(v[2], v[3]);
    let t4 = _mm256_unpacklo_ps(v[4], v[5]);
    let t5 = _mm256_unpackhi_ps(v[4], v[5]);
    let t6 = _mm256_unpacklo_ps(v[6], v[7]);
    let t7 = _mm256_unpackhi_ps(v[6], v[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// Whether this CPU converts f16 with F16C.
pub fn has_f16c() -> bool {
    std::arch::is_x86_feature_detected!("f16c")
}

/// TQ2_0 block scales of a row into `out` with F16C (one per block: the values of
/// `ternary::block_scales::<Tq2_0>`, as an f16 to f32 conversion is exact however it is
/// done), one instruction each, for [`super::TernaryRunner::block_scales`].
///
/// # Safety
/// F16C; `row` holds `out.len()` TQ2_0 blocks.
#[target_feature(enable = "f16c")]
pub(crate) unsafe fn tq2_0_scales_f16c(row: &[u8], out: &mut [f32]) {
    let row = row.as_ptr();
    for (b, o) in out.iter_mut().enumerate() {
        *o = F16::one(row.add(b * tq2_0::BLOCK_BYTES + tq2_0::QS_BYTES));
    }
}

/// The sum of a vector's eight i32 lanes (wrapping, as the scalar i32 sum would not overflow
/// for any row a model holds: at most 127 * K with K <= 2^24).
#[inline]
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

/// [`AttnSums`] as a constant parameter of the attention kernels' loops.
/// [`super::attn::scores`] with AVX2: sixteen positions at a time (then eight), each lane one
/// position's sum over the dimensions in the reference's order, so bit-identical to
/// [`super::attn::scores_ref`]; returns how many leading positions it scored (the caller
/// scores the rest with the reference). Eight keys are loaded eight dimensions at a time and
/// transposed in registers, so that a vector holds one dimension of eight positions; two such
/// groups keep the adds' latency hidden (a single dot's sum is one dependent chain).
///
/// # Safety
/// AVX2; `k` holds `out.len()` rows of `q.len()` values, `stride` apart.
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

/// Every whole group of sixteen, then eight, positions of [`attn_scores`], summing as `S`;
/// returns how many positions it scored.
///
/// # Safety
/// AVX2; `k` holds `out.len()` rows of `q.len()` values, `stride` apart.
#[target_feature(enable = "avx2")]
unsafe fn scores_blocks<const S: u8>(
    q: &[f32],
    k: &[f32],
    stride: usize,
    out: &mut [f32],
) -> usize {
    let mut j = 0;
    while j + 16 <= out.len() {
        scores_block::<2, S>(q, k.as_ptr().add(j * stride), stride, &mut out[j..j + 16]);
        j += 16;
    }
    while j + 8 <= out.len() {
        scores_block::<1, S>(q, k.as_ptr().add(j * stride), stride, &mut out[j..j + 8]);
        j += 8;
    }
    j
}

/// Scores of the `8 * V` positions whose keys start at `k` (see [`attn_scores`]).
///
/// # Safety
/// AVX2; `8 * V` rows of `q.len()` values, `stride` apart, at `k`; `out` has `8 * V`.
#[target_feature(enable = "avx2")]
unsafe fn scores_block<const V: usize, const S: u8>(
    q: &[f32],
    k: *const f32,
    stride: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let hd = q.len();
    // `-0.0` starts each f64 sum, as the reference's; the f32 fold starts at 0.
    let mut wide = [[_mm256_set1_pd(-0.0); 2]; V];
    let mut narrow = [_mm256_setzero_ps(); V];
    let mut d = 0;
    while d < hd {
        // Dimensions d..d + 8 of each group's eight keys, one dimension per vector (the last
        // dimensions, fewer than eight, gathered one by one).
        let width = (hd - d).min(8);
        let mut cols = [[_mm256_setzero_ps(); 8]; V];
        for (g, cols) in cols.iter_mut().enumerate() {
            let base = k.add(8 * g * stride + d);
            if width == 8 {
                let mut rows = [_mm256_setzero_ps(); 8];
                for (r, row) in rows.iter_mut().enumerate() {
                    *row = _mm256_loadu_ps(base.add(r * stride));
                }
                *cols = transpose8(rows);
            } else {
                for (e, col) in cols.iter_mut().enumerate().take(width) {
                    let at = |r: usize| *base.add(r * stride + e);
                    *col = _mm256_setr_ps(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7));
                }
            }
        }
        for e in 0..width {
            let qd = q[d + e];
            let (qs, qw) = (_mm256_set1_ps(qd), _mm256_set1_pd(qd as f64));
            for g in 0..V {
                let kv = cols[g][e];
                match S {
                    SUM_F64 => {
                        // The product rounded to f32, then widened.
                        let p = _mm256_mul_ps(qs, kv);
                        wide[g][0] =
                            _mm256_add_pd(wide[g][0], _mm256_cvtps_pd(_mm256_castps256_ps128(p)));
                        wide[g][1] = _mm256_add_pd(
                            wide[g][1],
                            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(p)),
                        );
                    }
                    SUM_EXACT => {
                        // Both factors widened, the product taken in f64.
                        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(kv));
                        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(kv));
                        wide[g][0] = _mm256_add_pd(wide[g][0], _mm256_mul_pd(qw, lo));
                        wide[g][1] = _mm256_add_pd(wide[g][1], _mm256_mul_pd(qw, hi));
                    }
                    // Unfused, as the reference's `s + a * b`.
                    _ => narrow[g] = _mm256_add_ps(narrow[g], _mm256_mul_ps(qs, kv)),
                }
            }
        }
        d += width;
    }
    for g in 0..V {
        let o = out.as_mut_ptr().add(8 * g);
        if S == SUM_F32 {
            _mm256_storeu_ps(o, narrow[g]);
        } else {
            _mm_storeu_ps(o, _mm256_cvtpd_ps(wide[g][0]));
            _mm_storeu_ps(o.add(4), _mm256_cvtpd_ps(wide[g][1]));
        }
    }
}

/// [`super::attn::mix`] with AVX2: 32 dimensions at a time (then 8), each lane one
/// dimension's sum over the positions in the reference's order, so bit-identical to
/// [`super::attn::mix_ref`]; returns how many leading dimensions it summed (the caller sums
/// the rest with the reference).
///
/// # Safety
/// AVX2; `v` holds `p.len()` rows of `out.len()` values, `stride` apart.
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

/// Every whole group of 32, then eight, dimensions of [`attn_mix`], summing as `S`; returns
/// how many dimensions it summed.
///
/// # Safety
/// AVX2; `v` holds `p.len()` rows of `out.len()` values, `stride` apart.
#[target_feature(enable = "avx2")]
unsafe fn mix_blocks<const S: u8>(p: &[f32], v: &[f32], stride: usize, out: &mut [f32]) -> usize {
    let mut d = 0;
    while d + 32 <= out.len() {
        mix_block::<4, S>(p, v.as_ptr().add(d), stride, &mut out[d..d + 32]);
        d += 32;
    }
    while d + 8 <= out.len() {
        mix_block::<1, S>(p, v.as_ptr().add(d), stride, &mut out[d..d + 8]);
        d += 8;
    }
    d
}

/// Weighted sums of the `8 * V` dimensions starting at `v` (see [`attn_mix`]).
///
/// # Safety
/// AVX2; `p.len()` rows of at least `8 * V` values, `stride` apart, at `v`; `out` has `8 * V`.
#[target_feature(enable = "avx2")]
unsafe fn mix_block<const V: usize, const S: u8>(
    p: &[f32],
    v: *const f32,
    stride: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let mut wide = [[_mm256_setzero_pd(); 2]; V];
    let mut narrow = [_mm256_setzero_ps(); V];
    for (j, &pj) in p.iter().enumerate() {
        let row = v.add(j * stride);
        let (ps, pw) = (_mm256_set1_ps(pj), _mm256_set1_pd(pj as f64));
        for b in 0..V {
            let x = _mm256_loadu_ps(row.add(8 * b));
            match S {
                SUM_F64 => {
                    let t = _mm256_mul_ps(ps, x);
                    wide[b][0] =
                        _mm256_add_pd(wide[b][0], _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
                    wide[b][1] =
                        _mm256_add_pd(wide[b][1], _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(t)));
                }
                SUM_EXACT => {
                    let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
                    let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x));
                    wide[b][0] = _mm256_add_pd(wide[b][0], _mm256_mul_pd(pw, lo));
                    wide[b][1] = _mm256_add_pd(wide[b][1], _mm256_mul_pd(pw, hi));
                }
                _ => narrow[b] = _mm256_add_ps(narrow[b], _mm256_mul_ps(ps, x)),
            }
        }
    }
    for b in 0..V {
        let o = out.as_mut_ptr().add(8 * b);
        if S == SUM_F32 {
            _mm256_storeu_ps(o, narrow[b]);
        } else {
            _mm_storeu_ps(o, _mm256_cvtpd_ps(wide[b][0]));
            _mm_storeu_ps(o.add(4), _mm256_cvtpd_ps(wide[b][1]));
        }
    }
}
