//! The `avx512` set's eight-row kernels for the 2-bit ternary formats (TQ2_0, I2_S) on
//! 512-bit vectors with VNNI: a register tile of rows times tokens ([`Matrix::tile`], below),
//! and for three or four tokens with Q8_K activations the eight rows in the lanes
//! ([`Matrix::lanes`]: no reduction across registers), chosen per pass by what measured faster
//! ([`Matrix::pass`]).
//!
//! [`super::x86::rows8`] (AVX2) reduces every row's block sum for every token on its own:
//! after the multiplies, each block of eight rows and four tokens spends as many shuffles
//! (`hadd`, permutes) again on bringing each sum into its lane. Here a block's codes are
//! unpacked once per row into two registers (groups 0-1 and 2-3 of each 32-byte chunk: the
//! bytes loaded into both halves and shifted per half), every token's 128 activations of the
//! chunk are two 64-byte loads, and each (row, token) pair owns one accumulator: a tile of up
//! to sixteen, reduced together at the end of the block into one vector whose lane `t * R + r`
//! holds row `r`'s block sum for token `t` ([`reduce16`]: 45 operations for sixteen sums).
//! The reference epilogue (`sumf += sumi as f32 * (d_row * d_act)`, block after block) then
//! runs on those sixteen lanes at once. With int8 activations (I2_S, bitnet.cpp's profile) the
//! sum is one integer per row and token, so the accumulators run over the whole row and are
//! reduced once.
//!
//! Every integer is the same integer as the reference's, and each lane does the reference's
//! float operations in its order, so the results are the same bits as scalar and AVX2.

use std::arch::x86_64::*;

use super::attn::{AttnSums, SUM_EXACT, SUM_F32, SUM_F64};
use super::float::{FloatRow, FLOAT_ROWS_PER_PASS};
use super::x86::{
    f16_at, finish_exact, finish_rounded, fmt_of, hsum_pd, pass_tokens, Ahead, Lanes, Tok8, BF16,
    F16, F32, FMT_TQ1_0, FMT_TQ2_0,
};
use super::{Sums8, TernaryBatch, TernaryRow, TERNARY_TOKENS_PER_PASS};
use crate::quant::tq2_0;

/// [`super::TernaryRunner::rows8`] for the `avx512` set: TQ2_0 and I2_S rows by tiles
/// (this module), TQ1_0 rows by [`super::x86::rows8_vnni`].
///
/// # Safety
/// AVX2, F16C and AVX-512 F, BW, VL and VNNI ([`super::x86::has_avx512_vnni`]); every row is
/// of the kind of `rows[0]` and has the batch's chunks (the caller checks both).
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn rows8(rows: &[TernaryRow; 8], batch: &TernaryBatch, out: &mut [Sums8]) {
    // SAFETY: the caller's promises.
    unsafe { rows8_with::<false>(rows, batch, out) }
}

/// [`rows8`] where the CPU has GFNI ([`has_gfni`]): the register tiles ([`Matrix::tile`]:
/// one or two tokens, and int8 activations) take each group's codes out of the packed bytes
/// with one `vgf2p8affineqb` (a bit matrix per byte: the group's two bits to the low two, the
/// rest cleared) instead of a shift and a mask. On this project's Xeon a 512-bit shift issues
/// once a cycle and `vgf2p8affineqb` once a cycle, beside `vpdpbusd` (1.84-1.85 per cycle
/// either way, a C loop of independent instructions), so each block loses an operation per
/// 32 code bytes: a 2560x6912 one-token GEMV (`examples/gemv_speed.rs ... avx512 1`, one
/// thread, alternating runs) 202.6-213.5 us against 239.7-245.6 (TQ2_0), 150.3-172.8 against
/// 202.7-203.4 (I2_S, int8 activations). The same codes, so the same integers and bits.
///
/// # Safety
/// [`rows8`]'s and GFNI.
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw,avx512vl,avx512vnni,gfni")]
pub(crate) unsafe fn rows8_gfni(rows: &[TernaryRow; 8], batch: &TernaryBatch, out: &mut [Sums8]) {
    // SAFETY: the caller's promises.
    unsafe { rows8_with::<true>(rows, batch, out) }
}

/// Whether this CPU has GFNI (with the `avx512` set's features, [`rows8_gfni`] runs).
pub(crate) fn has_gfni() -> bool {
    std::arch::is_x86_feature_detected!("gfni")
}

/// [`rows8`]'s body; `GFNI`: codes unpacked by [`rows8_gfni`]'s affine transforms.
///
/// # Safety
/// [`rows8`]'s; GFNI where `GFNI`. Always inlined into [`rows8`] and [`rows8_gfni`].
#[inline(always)]
unsafe fn rows8_with<const GFNI: bool>(
    rows: &[TernaryRow; 8],
    batch: &TernaryBatch,
    out: &mut [Sums8],
) {
    let fmt = fmt_of(rows[0]);
    if fmt == FMT_TQ1_0 {
        // SAFETY: the caller's promises, which are rows8_vnni's.
        unsafe { super::x86::rows8_vnni(rows, batch, out) };
        return;
    }
    let codes: [*const u8; 8] = std::array::from_fn(|i| rows[i].raw().0);
    let m = Matrix {
        code_stride: rows[0].raw().1,
        chunks: rows[0].chunks(),
        ahead: Ahead::new(rows),
    };
    let mut t = 0;
    while t < batch.tokens() {
        let n = (batch.tokens() - t).min(TERNARY_TOKENS_PER_PASS);
        let (toks, int) = pass_tokens(batch, t, n, fmt);
        let o = &mut out[t..t + n];
        // SAFETY: the caller's promises; every token has `chunks` chunks and chunk sums
        // (TernaryBatch::new checked them against each other, the caller against the rows).
        unsafe {
            match (fmt == FMT_TQ2_0, int) {
                (true, _) => m.pass::<true, false, GFNI>(codes, &toks, n, o),
                (false, false) => m.pass::<false, false, GFNI>(codes, &toks, n, o),
                (false, true) => m.pass::<false, true, GFNI>(codes, &toks, n, o),
            }
        }
        t += n;
    }
}

/// What the kernels of one call share: the rows' block stride and chunk count, and the bytes
/// after the eighth row, fetched ahead as [`super::x86::rows8`] does ([`Ahead`]).
struct Matrix {
    code_stride: usize,
    chunks: usize,
    ahead: Ahead,
}

impl Matrix {
    /// One pass over `n` tokens (one to four), by the kernel that is faster for it (measured
    /// on the 2B-4T shape, `examples/forward_speed.rs` and `examples/gemv_speed.rs`): three or
    /// four tokens with per-block scales by [`Matrix::lanes`] (the 64-token TQ2_0 prefill 768
    /// ms against 846 by tiles); one or two tokens, and int8 activations, whose sums need no
    /// per-block reduction, by [`Matrix::tile`] (one token 320-336 us against 348-360 by
    /// lanes; I2_S with int8 activations the same within noise): one or two tokens, all eight
    /// rows in one tile; three or four, two tiles of four rows, the second without
    /// prefetching (the first did).
    ///
    /// # Safety
    /// [`Matrix::tile`]'s and [`Matrix::lanes`]'s.
    #[inline(always)]
    unsafe fn pass<const LSB: bool, const INT: bool, const GFNI: bool>(
        &self,
        codes: [*const u8; 8],
        toks: &[Tok8; TERNARY_TOKENS_PER_PASS],
        n: usize,
        out: &mut [Sums8],
    ) {
        let rows_of = |from: usize| -> [*const u8; 4] { std::array::from_fn(|i| codes[from + i]) };
        match (n, INT) {
            (1, _) => self.tile::<8, 1, LSB, INT, GFNI>(codes, toks, 0, true, out),
            (2, _) => self.tile::<8, 2, LSB, INT, GFNI>(codes, toks, 0, true, out),
            (3, false) => self.lanes::<3, LSB>(codes, toks, out),
            (_, false) => self.lanes::<4, LSB>(codes, toks, out),
            (3, true) => {
                self.tile::<4, 3, LSB, INT, GFNI>(rows_of(0), toks, 0, true, out);
                self.tile::<4, 3, LSB, INT, GFNI>(rows_of(4), toks, 4, false, out);
            }
            (_, true) => {
                self.tile::<4, 4, LSB, INT, GFNI>(rows_of(0), toks, 0, true, out);
                self.tile::<4, 4, LSB, INT, GFNI>(rows_of(4), toks, 4, false, out);
            }
        }
    }

    /// All eight rows against `N` tokens with per-block scales (Q8_K activations), the rows in
    /// the lanes: per chunk the eight rows' 32 code bytes are transposed so that register `m`
    /// holds bytes `8m..8m + 8` of every row (qword lane `p` for row `ROW_ORDER[p]`), each
    /// group's codes taken out of it by a shift and a mask, and each token's eight matching
    /// activations broadcast to every lane: one `vpdpbusd` adds 64 products for eight rows at
    /// once, and at the end of a block each row's sum is two adjacent lanes, so no reduction
    /// across registers. The reference epilogue runs per token on the lanes as in
    /// [`Matrix::tile`].
    ///
    /// # Safety
    /// [`rows8`]'s; `toks[..N]` filled and `out.len() >= N`. Always inlined into [`rows8`].
    #[inline(always)]
    unsafe fn lanes<const N: usize, const LSB: bool>(
        &self,
        codes: [*const u8; 8],
        toks: &[Tok8; TERNARY_TOKENS_PER_PASS],
        out: &mut [Sums8],
    ) {
        let mask = _mm512_set1_epi8(3);
        // Row `ROW_ORDER[p]` in qword lane `p` (what the transpose below gives); each f16 row
        // scale goes to both dwords of its row's lane.
        let dup = lane_index(|l| l / 2);
        // Four accumulators per token, one per register of codes: with one, each multiply
        // waited on the one before it (`vpdpbusd` takes five cycles), and the 64-token 2B-4T
        // TQ2_0 prefill took 851 ms against 768.
        let mut acc = [[_mm512_setzero_si512(); 4]; N];
        let mut sumf = [_mm512_setzero_ps(); N];
        for b in 0..self.chunks.div_ceil(2) {
            self.ahead.fetch(b);
            let two = 2 * b + 1 < self.chunks;
            let at = b * self.code_stride;
            // SAFETY (loads): chunk `2b` (and `2b + 1` where `two`) exists in every row (32
            // code bytes) and every token (128 activations), read unaligned.
            for ch in 0..2 {
                if ch == 1 && !two {
                    break;
                }
                let off = at + 32 * ch;
                let z = [
                    rows_pair(codes[0].add(off), codes[4].add(off)),
                    rows_pair(codes[1].add(off), codes[5].add(off)),
                    rows_pair(codes[2].add(off), codes[6].add(off)),
                    rows_pair(codes[3].add(off), codes[7].add(off)),
                ];
                let u = [
                    _mm512_unpacklo_epi64(z[0], z[1]),
                    _mm512_unpackhi_epi64(z[0], z[1]),
                    _mm512_unpacklo_epi64(z[2], z[3]),
                    _mm512_unpackhi_epi64(z[2], z[3]),
                ];
                // Register m: qword m of every row, in ROW_ORDER.
                let t = [
                    _mm512_shuffle_i64x2::<0x88>(u[0], u[2]),
                    _mm512_shuffle_i64x2::<0x88>(u[1], u[3]),
                    _mm512_shuffle_i64x2::<0xDD>(u[0], u[2]),
                    _mm512_shuffle_i64x2::<0xDD>(u[1], u[3]),
                ];
                for g in 0..4 {
                    // Group g's codes: bits 2g (TQ2_0) or 6 - 2g (I2_S) of every byte.
                    let shift = if LSB { 2 * g } else { 6 - 2 * g } as u32;
                    let mut c = [_mm512_setzero_si512(); 4];
                    for (c, &t) in c.iter_mut().zip(t.iter()) {
                        let shifted = match shift {
                            0 => t,
                            2 => _mm512_srli_epi16::<2>(t),
                            4 => _mm512_srli_epi16::<4>(t),
                            _ => _mm512_srli_epi16::<6>(t),
                        };
                        *c = _mm512_and_si512(shifted, mask);
                    }
                    for (acc, tok) in acc.iter_mut().zip(toks.iter()) {
                        let q = tok.acts.add(b * tok.stride + 128 * ch + 32 * g);
                        for ((acc, &c), m) in acc.iter_mut().zip(c.iter()).zip(0..) {
                            let a =
                                _mm512_set1_epi64((q.add(8 * m) as *const i64).read_unaligned());
                            *acc = _mm512_dpbusd_epi32(*acc, c, a);
                        }
                    }
                }
            }
            // The codes are the ternary values plus one: each token's chunk sums come off.
            let cs = block_chunk_sums::<N>(toks, b, two);
            let dx = if LSB {
                let d = row_scales(ROW_ORDER.iter().map(|&r| codes[r]), at);
                _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(d))
            } else {
                _mm512_set1_ps(1.0)
            };
            for t in 0..N {
                // Each row's sum in both dwords of its lane.
                let s = row_sums(acc[t]);
                let s = _mm512_sub_epi32(s, _mm512_set1_epi32(cs[t]));
                acc[t] = [_mm512_setzero_si512(); 4];
                let yd = (toks[t].yd.add(b * toks[t].yd_stride) as *const f32).read_unaligned();
                // The reference's `sumf += sumi as f32 * (d_x * d_y)`, unfused.
                let m = _mm512_mul_ps(dx, _mm512_set1_ps(yd));
                sumf[t] = _mm512_add_ps(sumf[t], _mm512_mul_ps(_mm512_cvtepi32_ps(s), m));
            }
        }
        for (t, o) in out.iter_mut().enumerate().take(N) {
            let mut lanes = [0u32; 16];
            _mm512_storeu_si512(
                lanes.as_mut_ptr() as *mut __m512i,
                _mm512_castps_si512(sumf[t]),
            );
            let mut v = [0f32; 8];
            for (p, &r) in ROW_ORDER.iter().enumerate() {
                v[r] = f32::from_bits(lanes[2 * p]);
            }
            *o = Sums8::F32(v);
        }
    }

    /// Rows `codes` (`R` of them, rows `row0..row0 + R` of the eight) against `N` tokens:
    /// `out[t]`'s lanes `row0..row0 + R`. `LSB`: TQ2_0's bit order (group `g` in bits `2g`),
    /// else I2_S's (bits `6 - 2g`); TQ2_0 rows carry an f16 scale per block. `INT`: I2_S with
    /// int8 activations, the row's integer dot.
    ///
    /// # Safety
    /// [`rows8`]'s; `R * N <= 16`, `row0 + R <= 8`, `toks[..N]` filled and `out.len() >= N`.
    /// Always inlined into [`rows8`], whose features it is compiled with.
    #[inline(always)]
    unsafe fn tile<
        const R: usize,
        const N: usize,
        const LSB: bool,
        const INT: bool,
        const GFNI: bool,
    >(
        &self,
        codes: [*const u8; R],
        toks: &[Tok8; TERNARY_TOKENS_PER_PASS],
        row0: usize,
        prefetch: bool,
        out: &mut [Sums8],
    ) {
        let mask = _mm512_set1_epi8(3);
        // Where each group's codes sit in a byte: TQ2_0 keeps group g in bits 2g, I2_S in bits
        // 6 - 2g. A register holds a chunk's 32 code bytes in both halves, groups 0 and 1 of it
        // taken from the low and high half of one register, 2 and 3 of another, matching the
        // activations' order; `halves(lo, hi)` puts a value per 64-bit lane of each half.
        let (lo01, hi01, lo23, hi23) = if LSB { (0, 2, 4, 6) } else { (6, 4, 2, 0) };
        let halves = |lo: i64, hi: i64| _mm512_set_epi64(hi, hi, hi, hi, lo, lo, lo, lo);
        // As shift counts (then a mask)...
        let (s01, s23) = (halves(lo01, hi01), halves(lo23, hi23));
        // ...or as bit matrices (`vgf2p8affineqb`, GFNI): in each 64-bit lane, byte `7 - i` of
        // the matrix picks the input bits that make output bit `i`; bits `s` and `s + 1` of
        // every byte to bits 0 and 1, nothing else.
        let pick = |s: i64| ((1i64 << s) << 56) | ((2i64 << s) << 48);
        let (a01, a23) = (
            halves(pick(lo01), pick(hi01)),
            halves(pick(lo23), pick(hi23)),
        );
        // Lane `t * R + r`'s row and token, for spreading per-row and per-token values.
        let row_of = lane_index(|l| l % R);
        let tok_of = lane_index(|l| (l / R).min(N - 1));
        let mut acc = [_mm512_setzero_si512(); 16];
        let mut sumf = _mm512_setzero_ps();
        let mut chunk_sums = _mm512_setzero_si512();
        for b in 0..self.chunks.div_ceil(2) {
            if prefetch {
                self.ahead.fetch(b);
            }
            let two = 2 * b + 1 < self.chunks;
            let at = b * self.code_stride;
            // SAFETY (loads): chunk `2b` (and `2b + 1` where `two`) exists in every row (32
            // code bytes) and every token (128 activations), read unaligned.
            for ch in 0..2 {
                if ch == 1 && !two {
                    break;
                }
                let mut q = [std::ptr::null::<i8>(); N];
                for (q, tok) in q.iter_mut().zip(toks.iter()) {
                    *q = tok.acts.add(b * tok.stride + 128 * ch);
                }
                // Row by row: two registers of codes live at a time, the activations read
                // from the first level cache as each multiply's memory operand.
                for (r, &c) in codes.iter().enumerate() {
                    let v = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        c.add(at + 32 * ch) as *const __m256i
                    ));
                    let (g01, g23) = if GFNI {
                        (
                            _mm512_gf2p8affine_epi64_epi8::<0>(v, a01),
                            _mm512_gf2p8affine_epi64_epi8::<0>(v, a23),
                        )
                    } else {
                        (
                            _mm512_and_si512(_mm512_srlv_epi64(v, s01), mask),
                            _mm512_and_si512(_mm512_srlv_epi64(v, s23), mask),
                        )
                    };
                    for (t, &q) in q.iter().enumerate() {
                        let a01 = _mm512_loadu_si512(q as *const __m512i);
                        let a23 = _mm512_loadu_si512(q.add(64) as *const __m512i);
                        let a = &mut acc[t * R + r];
                        *a = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(*a, g01, a01), g23, a23);
                    }
                }
            }
            // The codes are the ternary values plus one: each token's chunk sums come off.
            let cs = spread_epi32(tok_of, block_chunk_sums::<4>(&toks[..N], b, two));
            if INT {
                chunk_sums = _mm512_add_epi32(chunk_sums, cs);
                continue;
            }
            let s = _mm512_sub_epi32(reduce(R * N, &acc), cs);
            acc = [_mm512_setzero_si512(); 16];
            let dx = if LSB {
                let d = row_scales(codes.iter().copied(), at);
                _mm512_permutexvar_ps(row_of, _mm512_castps256_ps512(d))
            } else {
                _mm512_set1_ps(1.0)
            };
            let mut yd = [0f32; 4];
            for (yd, tok) in yd.iter_mut().zip(toks.iter()).take(N) {
                *yd = (tok.yd.add(b * tok.yd_stride) as *const f32).read_unaligned();
            }
            let yd =
                _mm512_permutexvar_ps(tok_of, _mm512_castps128_ps512(_mm_loadu_ps(yd.as_ptr())));
            // The reference's `sumf += sumi as f32 * (d_x * d_y)`, unfused.
            let m = _mm512_mul_ps(dx, yd);
            sumf = _mm512_add_ps(sumf, _mm512_mul_ps(_mm512_cvtepi32_ps(s), m));
        }
        let mut lanes = [0u32; 16];
        if INT {
            let s = _mm512_sub_epi32(reduce(R * N, &acc), chunk_sums);
            _mm512_storeu_si512(lanes.as_mut_ptr() as *mut __m512i, s);
        } else {
            _mm512_storeu_si512(
                lanes.as_mut_ptr() as *mut __m512i,
                _mm512_castps_si512(sumf),
            );
        }
        for (t, o) in out.iter_mut().enumerate().take(N) {
            // A tile of four rows fills half of each token's eight lanes, the other tile the
            // rest; the first one to write a token starts its value.
            if row0 == 0 {
                *o = if INT {
                    Sums8::I32([0; 8])
                } else {
                    Sums8::F32([0.0; 8])
                };
            }
            match o {
                Sums8::I32(v) => {
                    for r in 0..R {
                        v[row0 + r] = lanes[t * R + r] as i32;
                    }
                }
                Sums8::F32(v) => {
                    for r in 0..R {
                        v[row0 + r] = f32::from_bits(lanes[t * R + r]);
                    }
                }
            }
        }
    }
}

/// Each token's chunk sums of block `b` (chunk `2b`, and `2b + 1` where `two`), in the first
/// `toks.len()` of `M` places: what comes off a block sum of codes that are the ternary values
/// plus one.
///
/// # Safety
/// Every token has those chunk sums.
#[inline(always)]
unsafe fn block_chunk_sums<const M: usize>(toks: &[Tok8], b: usize, two: bool) -> [i32; M] {
    let mut cs = [0i32; M];
    for (cs, tok) in cs.iter_mut().zip(toks.iter()) {
        *cs = *tok.sums.add(2 * b);
        if two {
            *cs += *tok.sums.add(2 * b + 1);
        }
    }
    cs
}

/// Up to eight TQ2_0 rows' f16 scales of the block at byte `at` of each (in `rows`' order),
/// converted by F16C; lanes past the rows hold 0 ([`super::x86::f16_at`]).
///
/// # Safety
/// Each row holds that block; F16C.
#[inline(always)]
unsafe fn row_scales(rows: impl Iterator<Item = *const u8>, at: usize) -> __m256 {
    f16_at(rows, at + tq2_0::QS_BYTES)
}

/// [`Matrix::lanes`]'s four partial accumulators of a token added, and each row's two
/// adjacent dwords added: the row's sum in both.
#[inline(always)]
unsafe fn row_sums(a: [__m512i; 4]) -> __m512i {
    let a = _mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3]));
    _mm512_add_epi32(a, _mm512_shuffle_epi32::<0xB1>(a))
}

/// Two rows' 32-byte chunks in the halves of one register.
///
/// # Safety
/// 32 bytes at each pointer; AVX-512 F.
#[inline(always)]
unsafe fn rows_pair(lo: *const u8, hi: *const u8) -> __m512i {
    _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_loadu_si256(lo as *const __m256i)),
        _mm256_loadu_si256(hi as *const __m256i),
    )
}

/// Which row each qword lane of [`Matrix::lanes`]'s transposed registers holds: rows `r` and
/// `r + 4` share a load (`vinserti64x4`), and the 64-bit interleave and the 128-bit shuffles
/// leave them in this order.
const ROW_ORDER: [usize; 8] = [0, 1, 4, 5, 2, 3, 6, 7];

/// A vector of sixteen lane indices, `f(l)` for lane `l`.
#[inline(always)]
unsafe fn lane_index(f: impl Fn(usize) -> usize) -> __m512i {
    let idx: [i32; 16] = std::array::from_fn(|l| f(l) as i32);
    _mm512_loadu_si512(idx.as_ptr() as *const __m512i)
}

/// Four per-token values spread to the lanes `index` names.
#[inline(always)]
unsafe fn spread_epi32(index: __m512i, v: [i32; 4]) -> __m512i {
    _mm512_permutexvar_epi32(
        index,
        _mm512_castsi128_si512(_mm_loadu_si128(v.as_ptr() as *const __m128i)),
    )
}

/// The first `c` vectors' sums of their sixteen i32 lanes, lane `i` for `x[i]` ([`reduce16`],
/// or [`reduce8`] where `c <= 8`: 24 operations instead of 45).
#[inline(always)]
unsafe fn reduce(c: usize, x: &[__m512i; 16]) -> __m512i {
    // `c` is a constant of each inlined tile, so the branch folds away.
    if c <= 8 {
        reduce8(&[x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]])
    } else {
        reduce16(x)
    }
}

/// [`reduce16`] for eight vectors: the same first two rounds, then the 128-bit lanes crossed
/// twice, the second time with themselves (lanes 8-15 repeat lanes 0-7).
#[inline(always)]
unsafe fn reduce8(x: &[__m512i; 8]) -> __m512i {
    let mut z = [_mm512_setzero_si512(); 2];
    four_per_lane(x, &mut z);
    let w = cross(z[0], z[1]);
    cross(w, w)
}

/// Sixteen vectors' sums of their sixteen i32 lanes, lane `i` for `x[i]`: pairs of vectors
/// interleaved and added (32-bit, then 64-bit elements: four vectors' sums per 128-bit lane),
/// then the 128-bit lanes of pairs crossed and added twice. Integer sums, so the order does
/// not matter.
#[inline(always)]
unsafe fn reduce16(x: &[__m512i; 16]) -> __m512i {
    let mut z = [_mm512_setzero_si512(); 4];
    four_per_lane(x, &mut z);
    cross(cross(z[0], z[1]), cross(z[2], z[3]))
}

/// The first two rounds of [`reduce16`] and [`reduce8`]: each four vectors of `x` into one of
/// `z` whose 128-bit lane `l` holds, in dword `j`, lane `l`'s sum of the four's vector `j`
/// (pairs interleaved and added at 32 bits, then at 64 bits).
#[inline(always)]
unsafe fn four_per_lane(x: &[__m512i], z: &mut [__m512i]) {
    for (z, x) in z.iter_mut().zip(x.chunks_exact(4)) {
        let y0 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(x[0], x[1]),
            _mm512_unpackhi_epi32(x[0], x[1]),
        );
        let y1 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(x[2], x[3]),
            _mm512_unpackhi_epi32(x[2], x[3]),
        );
        *z = _mm512_add_epi32(_mm512_unpacklo_epi64(y0, y1), _mm512_unpackhi_epi64(y0, y1));
    }
}

/// The 128-bit lanes of `a` and `b` paired and added: `[a0 + a1, a2 + a3, b0 + b1, b2 + b3]`.
#[inline(always)]
unsafe fn cross(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0x88>(a, b),
        _mm512_shuffle_i32x4::<0xDD>(a, b),
    )
}

/// One pass of [`super::float::float_dots`] for the `avx512` set: `n` (1 or 2) tokens of f32
/// values at `x` (token after token, `k` each) against the row `w`, in the order of the AVX2
/// pass ([`super::x86::float_pass`]) and the module doc of `float.rs`: two 8-lane f64
/// accumulators per token hold AVX2's four 4-lane ones side by side (`[a0 | a1]`,
/// `[a2 | a3]`), so every lane adds the same terms in the same order.
/// - F16 weights times f16 activations (`wide` not null: the same tokens widened to f64):
///   sixteen weights are one load widened to f32 and then to f64 in two halves, once for the
///   pass's tokens, and each token adds its exact products with two f64 fused multiply-adds
///   of the widened activations, as the AVX2 pass does with four.
/// - Every other pair: each token's sixteen products are one f32 multiply (the reference's
///   rounded products), widened to f64 in two halves and added.
///
/// Per sixteen weights and two tokens that is 11 operations where the AVX2 exact pass takes
/// 36 (the conversions to f64 are most of them): the all-logits lm_head of a prefill is
/// bound by them, decode's by memory.
///
/// # Safety
/// AVX2, FMA, F16C and AVX-512 F; `w` holds `k` weights, `x` holds `n * k` values, `wide`
/// (where not null: F16 rows only) `n * k` values, `out` `n`.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
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
        match (w, n, wide.is_null()) {
            (FloatRow::F16(_), 1, false) => float_exact::<1>(wp, wide, k, out),
            (FloatRow::F16(_), _, false) => float_exact::<2>(wp, wide, k, out),
            (_, _, false) => unreachable!("f64 activations come with F16 rows only"),
            (FloatRow::F32(_), 1, true) => float_rounded::<F32, 1>(wp, x, k, out),
            (FloatRow::F32(_), _, true) => float_rounded::<F32, 2>(wp, x, k, out),
            (FloatRow::F16(_), 1, true) => float_rounded::<F16, 1>(wp, x, k, out),
            (FloatRow::F16(_), _, true) => float_rounded::<F16, 2>(wp, x, k, out),
            (FloatRow::BF16(_), 1, true) => float_rounded::<BF16, 1>(wp, x, k, out),
            (FloatRow::BF16(_), _, true) => float_rounded::<BF16, 2>(wp, x, k, out),
        }
    }
}

/// [`super::float::FLOAT_ROWS_PER_PASS`] rows of F16 weights against one token's f64
/// activations (`x`, as [`float_pass`] reads them): each row's dot exactly as [`float_pass`]
/// sums it (its own two accumulators, the same lanes and order, the same tail), the rows side
/// by side so that as many weight streams are read at once, each fetched [`ROW_AHEAD`] bytes
/// ahead. `out[i]` for row `w[i]`.
///
/// # Safety
/// AVX2, FMA, F16C and AVX-512 F; every row holds `k` F16 weights, `x` `k` values, `out` one
/// place per row.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(crate) unsafe fn float_exact_rows(
    w: [*const u8; FLOAT_ROWS_PER_PASS],
    x: *const f64,
    k: usize,
    out: &mut [f32],
) {
    let mut acc = [[_mm512_setzero_pd(); 2]; FLOAT_ROWS_PER_PASS];
    let mut i = 0;
    while i + 16 <= k {
        let x0 = _mm512_loadu_pd(x.add(i));
        let x1 = _mm512_loadu_pd(x.add(i + 8));
        for (acc, &w) in acc.iter_mut().zip(w.iter()) {
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(2 * i + ROW_AHEAD) as *const i8);
            let (lo, hi) = halves_pd(F16::load16(w.add(2 * i)));
            acc[0] = _mm512_fmadd_pd(lo, x0, acc[0]);
            acc[1] = _mm512_fmadd_pd(hi, x1, acc[1]);
        }
        i += 16;
    }
    for ((acc, o), &w) in acc.iter().zip(out.iter_mut()).zip(w.iter()) {
        *o = finish_exact(hsum_pd8(acc), w, x, i..k);
    }
}

/// How far ahead of its loads each row of [`float_exact_rows`] is fetched: 2B-4T decode
/// (`forward_speed MODEL 8 32 2 amx 2`, TQ2_0, eight rows): 256 bytes 2115-2174 ms per 32
/// steps, 512 2122-2133, 1024 2273-2285, none 2188-2195.
const ROW_AHEAD: usize = 512;

/// [`float_pass`] for `N` tokens of f64 activations at `x` and F16 weights.
///
/// # Safety
/// As [`float_pass`], for `N` tokens.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn float_exact<const N: usize>(w: *const u8, x: *const f64, k: usize, out: &mut [f32]) {
    let mut acc = [[_mm512_setzero_pd(); 2]; N];
    let mut i = 0;
    while i + 16 <= k {
        // 2 KB ahead in the weight stream, as the AVX2 pass (a prefetch never faults).
        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(2 * i + 2048) as *const i8);
        let (lo, hi) = halves_pd(F16::load16(w.add(2 * i)));
        for (t, acc) in acc.iter_mut().enumerate() {
            let xt = x.add(t * k + i);
            acc[0] = _mm512_fmadd_pd(lo, _mm512_loadu_pd(xt), acc[0]);
            acc[1] = _mm512_fmadd_pd(hi, _mm512_loadu_pd(xt.add(8)), acc[1]);
        }
        i += 16;
    }
    for (t, (acc, o)) in acc.iter().zip(out.iter_mut()).enumerate() {
        *o = finish_exact(hsum_pd8(acc), w, x.add(t * k), i..k);
    }
}

/// [`float_pass`] for `N` tokens of f32 activations and weights of type `W`.
///
/// # Safety
/// As [`float_pass`], for `N` tokens.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn float_rounded<W: Lanes, const N: usize>(
    w: *const u8,
    x: *const f32,
    k: usize,
    out: &mut [f32],
) {
    let mut acc = [[_mm512_setzero_pd(); 2]; N];
    let mut i = 0;
    while i + 16 <= k {
        _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(i * W::SIZE + 2048) as *const i8);
        let wv = W::load16(w.add(i * W::SIZE));
        for (t, acc) in acc.iter_mut().enumerate() {
            let (lo, hi) = halves_pd(_mm512_mul_ps(wv, _mm512_loadu_ps(x.add(t * k + i))));
            acc[0] = _mm512_add_pd(acc[0], lo);
            acc[1] = _mm512_add_pd(acc[1], hi);
        }
        i += 16;
    }
    for (t, (acc, o)) in acc.iter().zip(out.iter_mut()).enumerate() {
        *o = finish_rounded::<W>(hsum_pd8(acc), w, x.add(t * k), i..k);
    }
}

/// Sixteen f32 values as two vectors of eight f64 (exact).
#[inline(always)]
unsafe fn halves_pd(v: __m512) -> (__m512d, __m512d) {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    (
        _mm512_cvtps_pd(_mm512_castps512_ps256(v)),
        _mm512_cvtps_pd(hi),
    )
}

/// One token's sum from its two accumulators `[a0 | a1]`, `[a2 | a3]`: `(a0 + a1) + (a2 + a3)`,
/// then the lanes, as the AVX2 pass.
#[inline(always)]
unsafe fn hsum_pd8(acc: &[__m512d; 2]) -> f64 {
    let pair =
        |a: __m512d| _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd::<1>(a));
    hsum_pd(pair(acc[0]), pair(acc[1]))
}

/// [`super::attn::mix`] for the `avx512` and `amx` sets: AVX2's kernel
/// ([`super::x86::attn_mix`]) on 512-bit vectors, 64 dimensions at a time (then 16): each lane
/// one dimension's sum over the positions in the reference's order (the product rounded to
/// f32 and widened, or both factors widened; unfused), so bit-identical to
/// [`super::attn::mix_ref`]. Returns how many leading dimensions it summed; the caller sums
/// the rest with AVX2 and the reference.
///
/// # Safety
/// AVX-512 F; `v` holds `p.len()` rows of `out.len()` values, `stride` apart.
#[target_feature(enable = "avx2,avx512f")]
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

/// Every whole group of 64, then 16, dimensions of [`attn_mix`], summing as `S`; returns how
/// many dimensions it summed.
///
/// # Safety
/// AVX-512 F; `v` holds `p.len()` rows of `out.len()` values, `stride` apart.
#[inline(always)]
unsafe fn mix_blocks<const S: u8>(p: &[f32], v: &[f32], stride: usize, out: &mut [f32]) -> usize {
    let mut d = 0;
    while d + 64 <= out.len() {
        mix_block::<4, S>(p, v.as_ptr().add(d), stride, &mut out[d..d + 64]);
        d += 64;
    }
    while d + 16 <= out.len() {
        mix_block::<1, S>(p, v.as_ptr().add(d), stride, &mut out[d..d + 16]);
        d += 16;
    }
    d
}

/// Weighted sums of the `16 * V` dimensions starting at `v` (see [`attn_mix`]).
///
/// # Safety
/// AVX-512 F; `p.len()` rows of at least `16 * V` values, `stride` apart, at `v`; `out` has
/// `16 * V`.
#[inline(always)]
unsafe fn mix_block<const V: usize, const S: u8>(
    p: &[f32],
    v: *const f32,
    stride: usize,
    out: &mut [f32],
) {
    let mut sums = [Sums16::<S>::new(0.0); V];
    for (j, &pj) in p.iter().enumerate() {
        let row = v.add(j * stride);
        let pj = Factor::new(pj);
        for (b, sums) in sums.iter_mut().enumerate() {
            sums.add(pj, _mm512_loadu_ps(row.add(16 * b)));
        }
    }
    for (b, sums) in sums.iter().enumerate() {
        sums.store(out.as_mut_ptr().add(16 * b));
    }
}

/// A scalar factor of [`Sums16::add`], broadcast as f32 and as f64.
#[derive(Clone, Copy)]
struct Factor {
    narrow: __m512,
    wide: __m512d,
}

impl Factor {
    #[inline(always)]
    unsafe fn new(a: f32) -> Factor {
        Factor {
            narrow: _mm512_set1_ps(a),
            wide: _mm512_set1_pd(a as f64),
        }
    }
}

/// Sixteen lanes' sums of products, each lane in the reference's order, as `S` (the attention
/// kernels' three ways of summing): f64 in two halves, or f32.
#[derive(Clone, Copy)]
struct Sums16<const S: u8> {
    wide: [__m512d; 2],
    narrow: __m512,
}

impl<const S: u8> Sums16<S> {
    /// Every f64 sum starting at `start` (the reference's first value), every f32 sum at 0.
    #[inline(always)]
    unsafe fn new(start: f64) -> Self {
        Sums16 {
            wide: [_mm512_set1_pd(start); 2],
            narrow: _mm512_setzero_ps(),
        }
    }

    /// Each lane's sum plus `a * x`.
    #[inline(always)]
    unsafe fn add(&mut self, a: Factor, x: __m512) {
        match S {
            SUM_F64 => {
                // The product rounded to f32, then widened.
                let (lo, hi) = halves_pd(_mm512_mul_ps(a.narrow, x));
                self.wide[0] = _mm512_add_pd(self.wide[0], lo);
                self.wide[1] = _mm512_add_pd(self.wide[1], hi);
            }
            SUM_EXACT => {
                // Both factors widened, the product taken in f64.
                let (lo, hi) = halves_pd(x);
                self.wide[0] = _mm512_add_pd(self.wide[0], _mm512_mul_pd(a.wide, lo));
                self.wide[1] = _mm512_add_pd(self.wide[1], _mm512_mul_pd(a.wide, hi));
            }
            // Unfused, as the reference's `sum + a * x`.
            _ => self.narrow = _mm512_add_ps(self.narrow, _mm512_mul_ps(a.narrow, x)),
        }
    }

    /// The sixteen sums as f32 at `o`.
    #[inline(always)]
    unsafe fn store(&self, o: *mut f32) {
        if S == SUM_F32 {
            _mm512_storeu_ps(o, self.narrow);
        } else {
            _mm256_storeu_ps(o, _mm512_cvtpd_ps(self.wide[0]));
            _mm256_storeu_ps(o.add(8), _mm512_cvtpd_ps(self.wide[1]));
        }
    }
}

/// [`super::attn::scores`] for the `avx512` and `amx` sets: AVX2's kernel
/// ([`super::x86::attn_scores`]) on 512-bit vectors, sixteen positions per vector (32 at a
/// time, then 16): each lane one position's sum over the dimensions in the reference's order,
/// so bit-identical to [`super::attn::scores_ref`]. Per eight dimensions, rows `r` and
/// `r + 8` of a group share a register (one 256-bit half each) and AVX2's 8x8 transpose runs
/// in both halves at once ([`transpose8x2`]). Returns how many leading positions it scored;
/// the caller scores the rest with AVX2 and the reference.
///
/// # Safety
/// AVX-512 F; `k` holds `out.len()` rows of `q.len()` values, `stride` apart.
#[target_feature(enable = "avx2,avx512f")]
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

/// Every whole group of 32, then 16, positions of [`attn_scores`], summing as `S`; returns how
/// many positions it scored.
///
/// # Safety
/// AVX-512 F; `k` holds `out.len()` rows of `q.len()` values, `stride` apart.
#[inline(always)]
unsafe fn scores_blocks<const S: u8>(
    q: &[f32],
    k: &[f32],
    stride: usize,
    out: &mut [f32],
) -> usize {
    let mut j = 0;
    while j + 32 <= out.len() {
        scores_block::<2, S>(q, k.as_ptr().add(j * stride), stride, &mut out[j..j + 32]);
        j += 32;
    }
    while j + 16 <= out.len() {
        scores_block::<1, S>(q, k.as_ptr().add(j * stride), stride, &mut out[j..j + 16]);
        j += 16;
    }
    j
}

/// Scores of the `16 * V` positions whose keys start at `k` (see [`attn_scores`]).
///
/// # Safety
/// AVX-512 F; `16 * V` rows of `q.len()` values, `stride` apart, at `k`; `out` has `16 * V`.
#[inline(always)]
unsafe fn scores_block<const V: usize, const S: u8>(
    q: &[f32],
    k: *const f32,
    stride: usize,
    out: &mut [f32],
) {
    let hd = q.len();
    // `-0.0` starts each f64 sum, as the reference's; the f32 fold starts at 0.
    let mut sums = [Sums16::<S>::new(-0.0); V];
    let mut d = 0;
    while d < hd {
        // Dimensions d..d + 8 of each group's sixteen keys, one dimension per vector (the
        // last dimensions, fewer than eight, gathered one by one).
        let width = (hd - d).min(8);
        let mut cols = [[_mm512_setzero_ps(); 8]; V];
        for (g, cols) in cols.iter_mut().enumerate() {
            let base = k.add(16 * g * stride + d);
            if width == 8 {
                let rows: [__m512; 8] = std::array::from_fn(|r| {
                    let lo = _mm256_loadu_ps(base.add(r * stride));
                    let hi = _mm256_loadu_ps(base.add((r + 8) * stride));
                    _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                        _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                        _mm256_castps_pd(hi),
                    ))
                });
                *cols = transpose8x2(rows);
            } else {
                for (e, col) in cols.iter_mut().enumerate().take(width) {
                    let at = |r: usize| *base.add(r * stride + e);
                    let v: [f32; 16] = std::array::from_fn(at);
                    *col = _mm512_loadu_ps(v.as_ptr());
                }
            }
        }
        for e in 0..width {
            let qd = Factor::new(q[d + e]);
            for (sums, cols) in sums.iter_mut().zip(&cols) {
                sums.add(qd, cols[e]);
            }
        }
        d += width;
    }
    for (g, sums) in sums.iter().enumerate() {
        sums.store(out.as_mut_ptr().add(16 * g));
    }
}

/// Two 8x8 f32 transposes side by side, one per 256-bit half: `out[e]` lane `j` is `v[j]`
/// lane `e` and lane `8 + j` is `v[j]` lane `8 + e` (AVX2's `transpose8`, whose in-lane steps
/// work per 128-bit lane unchanged; its cross-lane last step by two-source permutes).
#[inline(always)]
unsafe fn transpose8x2(v: [__m512; 8]) -> [__m512; 8] {
    let t0 = _mm512_unpacklo_ps(v[0], v[1]);
    let t1 = _mm512_unpackhi_ps(v[0], v[1]);
    let t2 = _mm512_unpacklo_ps(v[2], v[3]);
    let t3 = _mm512_unpackhi_ps(v[2], v[3]);
    let t4 = _mm512_unpacklo_ps(v[4], v[5]);
    let t5 = _mm512_unpackhi_ps(v[4], v[5]);
    let t6 = _mm512_unpacklo_ps(v[6], v[7]);
    let t7 = _mm512_unpackhi_ps(v[6], v[7]);
    let u0 = _mm512_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm512_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm512_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm512_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm512_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm512_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm512_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm512_shuffle_ps::<0xEE>(t5, t7);
    // Per 256-bit half: the low 128 bits of `a` then of `b` (AVX2's `permute2f128` 0x20),
    // or the high ones (0x31); `b`'s lanes are numbered from 16.
    let low = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    let high = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    [
        _mm512_permutex2var_ps(u0, low, u4),
        _mm512_permutex2var_ps(u1, low, u5),
        _mm512_permutex2var_ps(u2, low, u6),
        _mm512_permutex2var_ps(u3, low, u7),
        _mm512_permutex2var_ps(u0, high, u4),
        _mm512_permutex2var_ps(u1, high, u5),
        _mm512_permutex2var_ps(u2, high, u6),
        _mm512_permutex2var_ps(u3, high, u7),
    ]
}
