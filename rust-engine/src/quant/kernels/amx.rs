//! The `amx` set's ternary matmul for eight tokens and more (`matmul::AMX_MIN_TOKENS`): Intel AMX tiles (AMX-INT8
//! `tdpbusd`), everything else as the `avx512` set.
//!
//! One `tdpbusd` multiplies a tile of sixteen weight rows by 64 codes (unsigned bytes 0, 1,
//! 2) with a tile of 64 activations of sixteen tokens (signed bytes, four consecutive ones per
//! i32 lane) into sixteen rows times sixteen tokens of i32 sums: 16,384 products, where one
//! AVX-512 `vpdpbusd` does 64. The codes are unpacked into the tile in the activations' order
//! (TQ2_0 and I2_S: a row's 32 code bytes of a 128-weight chunk loaded into both halves of a
//! register, shifted per half and masked, 64 codes, as `avx512::Matrix::tile` does; TQ1_0: a
//! block's base-3 digits as `x86::tq1_0_groups` takes them out for AVX2), the activations are laid
//! out as tiles once per matmul ([`AmxActs`]), and four token tiles (64 tokens) share each
//! tile of codes. At the end of each 256-weight block the sums are stored and the reference
//! epilogue runs on them sixteen tokens per vector: `sumi = sum - chunk sums` (the codes are
//! the values plus one), `sumf += sumi as f32 * (d_row * d_act)`, unfused, block after block;
//! with int8 activations on I2_S rows the sums run over the whole row and are stored once.
//! Every integer is the reference's and every float operation is the reference's in its
//! order, so the results are the same bits as scalar.
//!
//! The tiles are configured and released by every call ([`rows16`]), so no thread keeps tile
//! state between matmuls. Linux hands a process the tile registers only when asked
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`): [`available`] asks once.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::{TernaryActs, TernaryBatch, TernaryRow};
use crate::quant::{q8_k, tq1_0, tq2_0};

/// Tokens per activation tile (a tile row's sixteen i32 lanes).
pub const TILE_TOKENS: usize = 16;

/// Weight rows per tile of codes.
pub const TILE_ROWS: usize = 16;

/// Token tiles one pass over the rows serves (tiles 0-3 hold their sums; 4 the codes, 5 the
/// activations): each tile of codes is unpacked once for 64 tokens.
const TILES_PER_PASS: usize = 4;

/// Bytes of one tile (sixteen rows of 64 bytes).
const TILE_BYTES: usize = 1024;

/// Whether this CPU and OS run the `amx` set: the `avx512` set's features, AMX-TILE and
/// AMX-INT8 (CPUID leaf 7, EDX bits 24 and 25), tile state enabled by the OS (XCR0 bits 17 and
/// 18) and, on Linux, granted to this process. Checked once.
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| super::x86::has_avx512_vnni() && cpu_has_amx_int8() && os_grants_tiles())
}

fn cpu_has_amx_int8() -> bool {
    // Leaf 7 read only where leaf 0 says it exists.
    let max = __cpuid(0).eax;
    let (l1, l7) = (__cpuid(1), (max >= 7).then(|| __cpuid_count(7, 0)));
    let Some(l7) = l7 else {
        return false;
    };
    let tile_int8 = (l7.edx >> 24) & 3 == 3;
    // XGETBV needs OSXSAVE (CPUID.1:ECX bit 27).
    if !tile_int8 || (l1.ecx >> 27) & 1 == 0 {
        return false;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 reads XCR0, which OSXSAVE (checked above) makes readable.
    unsafe {
        asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") _hi, options(nomem, nostack));
    }
    (lo >> 17) & 3 == 3
}

#[cfg(target_os = "linux")]
fn os_grants_tiles() -> bool {
    const SYS_ARCH_PRCTL: isize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM) asks the kernel to let this process use the
    // tile state; it touches no memory of ours. `syscall` clobbers rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn os_grants_tiles() -> bool {
    false
}

/// One tile in memory, aligned as `tileloadd` reads fastest.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Tile([u8; TILE_BYTES]);

/// Sixteen lanes, one per token of a tile, aligned for one vector load.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Lanes16<T>([T; TILE_TOKENS]);

/// The tokens of one matmul in the form [`rows16`] reads, built once per matmul: per tile of
/// sixteen tokens (the last padded with zeros) and per 64 activations (a "step"), a tile whose
/// row `k` holds activations `4k..4k + 4` of the step of each token (`tdpbusd`'s layout for
/// its second operand); per tile and 256-weight block the tokens' chunk sums and Q8_K scales
/// (1 for int8 activations, 0 for padding), and per tile the whole row's chunk sums.
pub struct AmxActs {
    tokens: usize,
    chunks: usize,
    /// I2_S rows with int8 activations: whole-row integer sums.
    int: bool,
    tiles: Vec<Tile>,
    sums: Vec<Lanes16<i32>>,
    scales: Vec<Lanes16<f32>>,
    totals: Vec<Lanes16<i32>>,
}

impl AmxActs {
    /// The tokens of `batches` in order (their activations and the chunk sums the batches
    /// computed); `None` where the batches differ in length or there are no tokens. `int`: the
    /// rows are I2_S and the activations int8 (the row's integer dot, no block epilogue).
    pub fn new(batches: &[TernaryBatch], int: bool) -> Option<AmxActs> {
        let chunks = batches.first()?.chunks();
        if batches.iter().any(|b| b.chunks() != chunks) {
            return None;
        }
        let acts: Vec<(TernaryActs, &[i32])> = batches
            .iter()
            .flat_map(|b| (0..b.tokens()).map(|t| b.token(t)))
            .collect();
        if acts.is_empty() {
            return None;
        }
        let (steps, blocks) = (2 * chunks, chunks.div_ceil(2));
        let groups = acts.len().div_ceil(TILE_TOKENS);
        let mut tiles = vec![Tile([0; TILE_BYTES]); groups * steps];
        let mut sums = vec![Lanes16([0i32; TILE_TOKENS]); groups * blocks];
        let mut scales = vec![Lanes16([0f32; TILE_TOKENS]); groups * blocks];
        let mut totals = vec![Lanes16([0i32; TILE_TOKENS]); groups];
        for (t, &(a, chunk_sums)) in acts.iter().enumerate() {
            let (g, lane) = (t / TILE_TOKENS, t % TILE_TOKENS);
            for s in 0..steps {
                let tile = &mut tiles[g * steps + s].0;
                let values = match a {
                    TernaryActs::I8(q) => &q[64 * s..64 * s + 64],
                    TernaryActs::Q8K(y) => {
                        let at = 64 * s % q8_k::BLOCK;
                        &y[64 * s / q8_k::BLOCK].qs[at..at + 64]
                    }
                };
                for (k, quad) in values.chunks_exact(4).enumerate() {
                    for (j, &v) in quad.iter().enumerate() {
                        tile[64 * k + 4 * lane + j] = v as u8;
                    }
                }
            }
            for b in 0..blocks {
                let s = chunk_sums[2 * b..chunks.min(2 * b + 2)].iter().sum::<i32>();
                sums[g * blocks + b].0[lane] = s;
                totals[g].0[lane] += s;
                scales[g * blocks + b].0[lane] = match a {
                    TernaryActs::I8(_) => 1.0,
                    TernaryActs::Q8K(y) => y[b].d,
                };
            }
        }
        Some(AmxActs {
            tokens: acts.len(),
            chunks,
            int,
            tiles,
            sums,
            scales,
            totals,
        })
    }

    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// 128-value chunks per token.
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// Whether the sums are whole-row integers ([`Out::I32`]).
    pub fn int(&self) -> bool {
        self.int
    }

    fn groups(&self) -> usize {
        self.tokens.div_ceil(TILE_TOKENS)
    }
}

/// Where [`rows16`] writes row `r`'s sum with token `t`: at `r * tokens + t`.
pub enum Out<'a> {
    /// The reference epilogue's sum over blocks (as `Sums8::F32`).
    F32(&'a mut [f32]),
    /// The whole row's integer dot (I2_S with int8 activations, as `Sums8::I32`).
    I32(&'a mut [i32]),
}

/// The tile configuration: palette 1, tiles 0-5 of sixteen rows of 64 bytes.
#[repr(C, align(64))]
struct Config([u8; 64]);

impl Config {
    fn new() -> Config {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..6 {
            // Bytes per row (u16 at 16 + 2t) and rows (u8 at 48 + t).
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
        }
        Config(c)
    }
}

/// Loads activation tile `b` into tile 5 and adds the codes (tile 4) times it into sum tile
/// `G`.
///
/// # Safety
/// Tiles configured ([`Config`]); `b` points at a [`Tile`].
#[inline(always)]
unsafe fn multiply<const G: usize>(b: *const Tile) {
    let stride = 64usize;
    match G {
        0 => asm!("tileloadd tmm5, [{b} + {s}]", "tdpbusd tmm0, tmm4, tmm5",
            b = in(reg) b, s = in(reg) stride, options(nostack, readonly)),
        1 => asm!("tileloadd tmm5, [{b} + {s}]", "tdpbusd tmm1, tmm4, tmm5",
            b = in(reg) b, s = in(reg) stride, options(nostack, readonly)),
        2 => asm!("tileloadd tmm5, [{b} + {s}]", "tdpbusd tmm2, tmm4, tmm5",
            b = in(reg) b, s = in(reg) stride, options(nostack, readonly)),
        _ => asm!("tileloadd tmm5, [{b} + {s}]", "tdpbusd tmm3, tmm4, tmm5",
            b = in(reg) b, s = in(reg) stride, options(nostack, readonly)),
    }
}

/// Stores sum tile `g` into `out` and zeroes it.
///
/// # Safety
/// Tiles configured; `out` points at a [`Tile`].
#[inline(always)]
unsafe fn store_and_zero(g: usize, out: *mut Tile) {
    let stride = 64usize;
    match g {
        0 => asm!("tilestored [{o} + {s}], tmm0", "tilezero tmm0",
            o = in(reg) out, s = in(reg) stride, options(nostack)),
        1 => asm!("tilestored [{o} + {s}], tmm1", "tilezero tmm1",
            o = in(reg) out, s = in(reg) stride, options(nostack)),
        2 => asm!("tilestored [{o} + {s}], tmm2", "tilezero tmm2",
            o = in(reg) out, s = in(reg) stride, options(nostack)),
        _ => asm!("tilestored [{o} + {s}], tmm3", "tilezero tmm3",
            o = in(reg) out, s = in(reg) stride, options(nostack)),
    }
}

/// Sixteen weight rows of one format (TQ2_0, TQ1_0 or I2_S) times every token of `acts`,
/// into `out` (row `r`, token `t` at `r * acts.tokens() + t`): the same values as
/// `TernaryRunner::rows8` gives for each eight of them.
///
/// # Safety
/// [`available`]; every row is of the kind of `rows[0]` with `acts.chunks()`
/// chunks; `out` is `F32` (or `I32` where `acts.int()`) with `16 * acts.tokens()` places.
#[target_feature(enable = "avx2,f16c,avx512f,avx512bw")]
pub(crate) unsafe fn rows16(rows: &[TernaryRow; TILE_ROWS], acts: &AmxActs, mut out: Out) {
    let lsb = matches!(rows[0], TernaryRow::Tq2_0(_));
    let tq1 = matches!(rows[0], TernaryRow::Tq1_0(_));
    // Where a block's f16 scale is (TQ2_0 and TQ1_0; I2_S has one per tensor).
    let scale_at = match rows[0] {
        TernaryRow::Tq2_0(_) => Some(tq2_0::QS_BYTES),
        TernaryRow::Tq1_0(_) => Some(tq1_0::QS_BYTES + tq1_0::QH_BYTES),
        TernaryRow::I2s(_) => None,
    };
    let codes: [*const u8; TILE_ROWS] = std::array::from_fn(|i| rows[i].raw().0);
    let code_stride = rows[0].raw().1;
    let (chunks, steps, blocks) = (acts.chunks, 2 * acts.chunks, acts.chunks.div_ceil(2));
    let n = acts.tokens;
    // Per half of a chunk: the shifts that take groups (0, 1) or (2, 3) to the low bits, one
    // per 256-bit half: TQ2_0 keeps group g in bits 2g, I2_S in bits 6 - 2g.
    let shifts = if lsb {
        [
            _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0),
            _mm512_set_epi64(6, 6, 6, 6, 4, 4, 4, 4),
        ]
    } else {
        [
            _mm512_set_epi64(4, 4, 4, 4, 6, 6, 6, 6),
            _mm512_set_epi64(0, 0, 0, 0, 2, 2, 2, 2),
        ]
    };
    let mask = _mm512_set1_epi8(3);
    let config = Config::new();
    // A block's codes: four tiles of 64 codes per row (two for a trailing half block).
    let mut codes_tiles = [Tile([0; TILE_BYTES]); 4];
    let mut sum_tiles = [Tile([0; TILE_BYTES]); TILES_PER_PASS];
    asm!("ldtilecfg [{c}]", c = in(reg) config.0.as_ptr(), options(nostack, readonly));
    let groups = acts.groups();
    let mut g0 = 0;
    while g0 < groups {
        let ng = (groups - g0).min(TILES_PER_PASS);
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        // Row r's running sums for token tile g: acc[g * 16 + r].
        let mut acc = [_mm512_setzero_ps(); TILES_PER_PASS * TILE_ROWS];
        for b in 0..blocks {
            let two = 2 * b + 1 < chunks;
            let at = b * code_stride;
            for (r, &p) in codes.iter().enumerate() {
                // Two blocks ahead (sixteen rows read side by side are sixteen streams, more
                // than the hardware prefetcher keeps up with: the 64-token 2B-4T TQ2_0 prefill
                // 459-486 ms against 487-532 without; one to eight blocks ahead alike). A
                // prefetch never faults.
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(at + 2 * code_stride) as *const i8);
                // Row r of code tile t (the tiles are 1024 bytes apart).
                let base = codes_tiles.as_mut_ptr() as *mut u8;
                let row = |t: usize| base.add(t * TILE_BYTES + 64 * r) as *mut __m512i;
                if tq1 {
                    // SAFETY: block b exists in every row (54 bytes at `at`).
                    let g = super::x86::tq1_0_groups(p.add(at));
                    for s in 0..4 {
                        _mm512_store_si512(
                            row(s),
                            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(g[2 * s]), g[2 * s + 1]),
                        );
                    }
                    continue;
                }
                for ch in 0..1 + two as usize {
                    // SAFETY: chunk 2b + ch exists in every row: 32 code bytes.
                    let v = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        p.add(at + 32 * ch) as *const __m256i
                    ));
                    for (h, shift) in shifts.iter().enumerate() {
                        let c = _mm512_and_si512(_mm512_srlv_epi64(v, *shift), mask);
                        _mm512_store_si512(row(2 * ch + h), c);
                    }
                }
            }
            for (s, tile) in codes_tiles.iter().enumerate().take(if two { 4 } else { 2 }) {
                asm!("tileloadd tmm4, [{a} + {s}]", a = in(reg) tile.0.as_ptr(),
                    s = in(reg) 64usize, options(nostack, readonly));
                let step = 4 * b + s;
                let at = |g: usize| &acts.tiles[(g0 + g) * steps + step] as *const Tile;
                multiply::<0>(at(0));
                if ng > 1 {
                    multiply::<1>(at(1));
                }
                if ng > 2 {
                    multiply::<2>(at(2));
                }
                if ng > 3 {
                    multiply::<3>(at(3));
                }
            }
            if acts.int {
                continue;
            }
            // The block's epilogue, sixteen tokens per vector.
            let mut d_row = [1f32; TILE_ROWS];
            if let Some(scale_at) = scale_at {
                let mut h = [0u16; TILE_ROWS];
                for (h, &p) in h.iter_mut().zip(&codes) {
                    *h = (p.add(b * code_stride + scale_at) as *const u16).read_unaligned();
                }
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(h.as_ptr() as *const __m256i));
                _mm512_storeu_ps(d_row.as_mut_ptr(), d);
            }
            for g in 0..ng {
                store_and_zero(g, &mut sum_tiles[g]);
                let i = (g0 + g) * blocks + b;
                let cs = _mm512_load_si512(acts.sums[i].0.as_ptr() as *const __m512i);
                let yd = _mm512_load_ps(acts.scales[i].0.as_ptr());
                for (r, &dr) in d_row.iter().enumerate() {
                    let s =
                        _mm512_load_si512(sum_tiles[g].0.as_ptr().add(64 * r) as *const __m512i);
                    let s = _mm512_sub_epi32(s, cs);
                    // The reference's `sumf += sumi as f32 * (d_x * d_y)`, unfused.
                    let m = _mm512_mul_ps(_mm512_set1_ps(dr), yd);
                    let a = &mut acc[g * TILE_ROWS + r];
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(_mm512_cvtepi32_ps(s), m));
                }
            }
        }
        // Token tile g's sixteen lanes of row r, as many as there are tokens.
        for g in 0..ng {
            let t0 = (g0 + g) * TILE_TOKENS;
            let valid = (n - t0).min(TILE_TOKENS);
            if acts.int {
                store_and_zero(g, &mut sum_tiles[g]);
            }
            for r in 0..TILE_ROWS {
                match &mut out {
                    Out::F32(o) => {
                        let mut lanes = [0f32; TILE_TOKENS];
                        _mm512_storeu_ps(lanes.as_mut_ptr(), acc[g * TILE_ROWS + r]);
                        o[r * n + t0..][..valid].copy_from_slice(&lanes[..valid]);
                    }
                    Out::I32(o) => {
                        let s = _mm512_load_si512(
                            sum_tiles[g].0.as_ptr().add(64 * r) as *const __m512i
                        );
                        let total =
                            _mm512_load_si512(acts.totals[g0 + g].0.as_ptr() as *const __m512i);
                        let mut lanes = [0i32; TILE_TOKENS];
                        _mm512_storeu_si512(
                            lanes.as_mut_ptr() as *mut __m512i,
                            _mm512_sub_epi32(s, total),
                        );
                        o[r * n + t0..][..valid].copy_from_slice(&lanes[..valid]);
                    }
                }
            }
        }
        g0 += ng;
    }
    asm!("tilerelease", options(nostack, nomem));
}
