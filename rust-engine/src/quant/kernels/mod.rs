//! Which code computes the engine's numbers, and where it runs, as types: kept typed up to the
//! receipt, where serde writes their names.
//!
//! - [`Backend`]: where the kernels run (`cpu`; CUDA comes with its own issue).
//! - [`Kernel`]: which kernel set (`scalar`, the reference every other set is tested against;
//!   `avx2`, `avx512`, `amx` and `neon`, whose kernels are tested against it in
//!   `tests/kernels_simd.rs`: bit for bit for the ternary kernels and attention, within a
//!   stated bound for the float dots).

use serde::{Deserialize, Serialize};

use super::q8_k::BlockQ8K;
use super::{tq1_0, tq2_0};

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
pub mod attn;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod float;
#[cfg(target_arch = "x86_64")]
pub mod x86;

/// Where the engine's kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A kernel set: the code behind every dot product and activation quantizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernel {
    /// The scalar reference (`quant/<format>.rs`), always compiled.
    Scalar,
    /// AVX2 where a kernel exists, the scalar reference for everything else: the ternary dots
    /// (I2_S, TQ2_0 and TQ1_0 with int8 or Q8_K activations, up to four tokens per unpacked
    /// weight chunk; bit-exact against scalar) and, with F16C and FMA, the float dots of
    /// F32/F16/BF16 weights ([`float`]: the reference's products summed in f64 in sixteen
    /// lanes, two tokens per pass: bit-exact in nearly every row, otherwise within
    /// `float::float_dot_bound`); attention's scores and weighted sums over the KV cache
    /// ([`attn`]: one element per lane, bit-exact).
    Avx2,
    /// The AVX2 set with AVX-512 VNNI in the eight-row ternary kernel: for TQ2_0 and I2_S
    /// 512-bit kernels (`avx512::rows8`: a register tile of rows times tokens, one accumulator
    /// per row and token reduced together once per block, or once per row with int8
    /// activations; for three or four tokens with Q8_K activations the eight rows in the
    /// lanes), for TQ1_0 `vpdpbusd` on 256-bit vectors (`x86::rows8_vnni`); the same integer
    /// sums, so the same bits as `avx2` and scalar; everything else as `avx2`. Needs AVX-512 F,
    /// BW, VL and VNNI.
    Avx512,
    /// The `avx512` set with Intel AMX tiles for the ternary matmuls of eight tokens and
    /// more (TQ2_0, TQ1_0 and I2_S rows, sixteen at a time: `amx::rows16`, `tdpbusd` on tiles of
    /// sixteen rows times sixteen tokens, four token tiles per unpacked tile of codes; the same
    /// integer sums and the reference epilogue in its order, so the same bits as scalar);
    /// everything else as `avx512`. Needs AMX-TILE and AMX-INT8 and an OS that grants the
    /// tile state (Linux 5.16 and later).
    Amx,
    /// NEON (aarch64) for the ternary dots (I2_S in the 128-weight layout and TQ2_0, int8 or
    /// Q8_K activations; bit-exact against scalar) and the float dots ([`float`]: the same
    /// sixteen-lane order as AVX2's, so the same bits as AVX2 gives), the scalar reference for
    /// everything else.
    Neon,
}

impl Kernel {
    /// Every set, the reference first.
    pub const ALL: [Kernel; 5] = [
        Kernel::Scalar,
        Kernel::Avx2,
        Kernel::Avx512,
        Kernel::Amx,
        Kernel::Neon,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
            Kernel::Amx => "amx",
            Kernel::Neon => "neon",
        }
    }

    /// The backend the set runs on.
    pub fn backend(self) -> Backend {
        match self {
            Kernel::Scalar | Kernel::Avx2 | Kernel::Avx512 | Kernel::Amx | Kernel::Neon => {
                Backend::Cpu
            }
        }
    }

    /// Whether this CPU runs the set.
    pub fn available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => x86::has_avx512_vnni(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => amx::available(),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => aarch64::has_neon(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best set this CPU runs.
    pub fn detect() -> Kernel {
        [Kernel::Amx, Kernel::Avx512, Kernel::Avx2, Kernel::Neon]
            .into_iter()
            .find(|k| k.available())
            .unwrap_or(Kernel::Scalar)
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A ternary weight row in one of the 2-bit layouts the SIMD kernels read, as 128-weight
/// chunks of 32 code bytes, each holding four 32-weight groups.
#[derive(Clone, Copy, Debug)]
pub enum TernaryRow<'a> {
    /// TQ2_0 blocks (64 code bytes, then the f16 scale); group `g` in bits `2g`
    /// (`ggml_vec_dot_tq2_0_q8_K`).
    Tq2_0(&'a [u8]),
    /// I2_S codes in the 128-weight layout; group `g` in bits `6 - 2g` (`ggml_vec_dot_i2_i8_s`
    /// in bitnet.cpp's ggml-bitnet-mad.cpp).
    I2s(&'a [u8]),
    /// TQ1_0 blocks (base-3 digits, then the f16 scale; `ggml_vec_dot_tq1_0_q8_K`): only the
    /// eight-row kernel unpacks them ([`TernaryRunner::rows8`]); one row at a time they take
    /// the scalar reference's block dots.
    Tq1_0(&'a [u8]),
}

impl<'a> TernaryRow<'a> {
    /// Number of 128-weight chunks.
    pub fn chunks(self) -> usize {
        match self {
            TernaryRow::Tq2_0(r) => r.len() / tq2_0::BLOCK_BYTES * 2,
            TernaryRow::I2s(c) => c.len() / 32,
            TernaryRow::Tq1_0(r) => r.len() / tq1_0::BLOCK_BYTES * 2,
        }
    }

    /// The row's first code byte and the bytes from one 256-weight block to the next (chunk
    /// `c` starts at `c / 2 * stride + c % 2 * 32`), for kernels that walk it by pointer.
    pub fn raw(self) -> (*const u8, usize) {
        match self {
            TernaryRow::Tq2_0(r) => (r.as_ptr(), tq2_0::BLOCK_BYTES),
            TernaryRow::I2s(codes) => (codes.as_ptr(), 64),
            TernaryRow::Tq1_0(r) => (r.as_ptr(), tq1_0::BLOCK_BYTES),
        }
    }

    /// Number of integer dots per activation row the kernels give: one per 256 weights (a
    /// TQ2_0 or Q8_K block), a trailing 128-weight chunk counting as one.
    pub fn blocks(self) -> usize {
        self.chunks().div_ceil(2)
    }
}

/// One token's int8 activations as the ternary kernels read them, 128 per chunk.
#[derive(Clone, Copy, Debug)]
pub enum TernaryActs<'a> {
    /// One int8 row (bitnet.cpp's `quantize_row_i8_s`).
    I8(&'a [i8]),
    /// Q8_K blocks (ggml's activation quantizer for ternary weights).
    Q8K(&'a [BlockQ8K]),
}

impl<'a> TernaryActs<'a> {
    /// Number of activations.
    pub fn len(self) -> usize {
        match self {
            TernaryActs::I8(q) => q.len(),
            TernaryActs::Q8K(y) => y.len() * super::q8_k::BLOCK,
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Chunk `c`'s 128 activations.
    pub fn chunk(self, c: usize) -> &'a [i8] {
        match self {
            TernaryActs::I8(q) => &q[c * 128..][..128],
            TernaryActs::Q8K(y) => &y[c / 2].qs[c % 2 * 128..][..128],
        }
    }

    /// The first activation and the bytes from one 256-value block to the next (chunk `c`
    /// starts at `c / 2 * stride + c % 2 * 128`), for kernels that walk them by pointer.
    pub fn raw(self) -> (*const i8, usize) {
        match self {
            TernaryActs::I8(q) => (q.as_ptr(), 256),
            TernaryActs::Q8K(y) => {
                let qs = std::mem::offset_of!(BlockQ8K, qs);
                // A pointer into the first block's `qs`, computed without dereferencing.
                let base = (y.as_ptr() as *const u8).wrapping_add(qs) as *const i8;
                (base, std::mem::size_of::<BlockQ8K>())
            }
        }
    }

    /// The sum of each chunk's activations: the kernels multiply the stored codes (0, 1, 2)
    /// and subtract these to get the ternary values' (-1, 0, +1) dot, computed once per token
    /// instead of once per weight row.
    pub fn chunk_sums(self) -> Vec<i32> {
        (0..self.len() / 128)
            .map(|c| self.chunk(c).iter().map(|&q| q as i32).sum())
            .collect()
    }
}

/// The tokens of one matmul as the ternary kernels read them: each token's activations and
/// [`TernaryActs::chunk_sums`], all of one length. Checked once here, so that the kernel call
/// per weight row checks only the row.
#[derive(Clone, Debug)]
pub struct TernaryBatch<'a> {
    acts: Vec<TernaryActs<'a>>,
    /// Every token's chunk sums, one token after the other.
    sums: Vec<i32>,
    chunks: usize,
}

impl<'a> TernaryBatch<'a> {
    /// `None` when the tokens differ in length or are not whole 128-value chunks.
    pub fn new(acts: Vec<TernaryActs<'a>>) -> Option<Self> {
        let len = acts.first().map_or(0, |a| a.len());
        if !len.is_multiple_of(128) || acts.iter().any(|a| a.len() != len) {
            return None;
        }
        let sums = acts.iter().flat_map(|a| a.chunk_sums()).collect();
        Some(TernaryBatch {
            acts,
            sums,
            chunks: len / 128,
        })
    }

    pub fn tokens(&self) -> usize {
        self.acts.len()
    }

    /// 128-value chunks per token.
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// Token `t`'s activations and chunk sums.
    pub fn token(&self, t: usize) -> (TernaryActs<'a>, &[i32]) {
        (self.acts[t], &self.sums[t * self.chunks..][..self.chunks])
    }
}

/// Tokens one pass of a ternary kernel over a weight row serves (each chunk of codes unpacked
/// once for all of them).
pub const TERNARY_TOKENS_PER_PASS: usize = 4;

/// One token as a kernel's `block_dots` takes it: its activations' first value and block
/// stride ([`TernaryActs::raw`]), its chunk sums and its outputs, as pointers checked by
/// [`run_ternary`], so that a kernel call per weight row costs no slicing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Token {
    pub acts: *const i8,
    pub stride: usize,
    pub sums: *const i32,
    pub out: *mut i32,
}

/// A SIMD set's ternary kernel: the exact integer dots `sum (code - 1) * q` of one weight row
/// with `N` tokens, one per block of the row (`out[b]` of each token).
pub(crate) trait TernaryKernel {
    /// # Safety
    /// The CPU has the set's features; every token has `row.chunks()` chunks of 128
    /// activations and chunk sums, and `row.blocks()` outputs.
    unsafe fn block_dots<const N: usize>(row: TernaryRow, toks: [Token; N]);
}

/// Exact integer dots `sum (code - 1) * q` of one ternary weight row with every token of
/// `batch` by `kernel`'s ternary kernel, one per 256-weight block ([`TernaryRow::blocks`]):
/// `out[t * blocks + b]` for token `t`, block `b`, four tokens per unpacked chunk
/// ([`run_ternary`]). `None` where the set has no ternary kernel or this CPU cannot run it.
pub fn ternary_block_dots(
    kernel: Kernel,
    row: TernaryRow,
    batch: &TernaryBatch,
    out: &mut [i32],
) -> Option<()> {
    TernaryRunner::new(kernel)?.block_dots(row, batch, out);
    Some(())
}

/// A kernel set's ternary kernel resolved once for a matmul (its CPU features checked here), so
/// that the call per weight row checks only the row: [`TernaryRunner::block_dots`] is
/// [`ternary_block_dots`], [`TernaryRunner::block_scales`] the row's block scales.
#[derive(Clone, Copy)]
pub struct TernaryRunner {
    run: unsafe fn(TernaryRow, &TernaryBatch, &mut [i32]),
    scales: Option<ScalesFn>,
    rows8: Option<Rows8Fn>,
    /// The `amx` set: [`TernaryRunner::rows16`] runs.
    amx: bool,
}

/// A set's TQ2_0 block-scale conversion (see [`TernaryRunner::block_scales`]).
type ScalesFn = unsafe fn(&[u8], &mut [f32]);

/// A set's fused eight-row kernel (see [`TernaryRunner::rows8`]).
type Rows8Fn = unsafe fn(&[TernaryRow; 8], &TernaryBatch, &mut [Sums8]);

/// Eight weight rows' dots with one token, lane `i` for row `i`, as [`TernaryRunner::rows8`]
/// leaves them: the reference epilogue's sum over blocks, or the integer dot it starts from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sums8 {
    /// `sumf += sumi as f32 * (d_row * d_act)` block after block from 0, with `d_row` the
    /// TQ2_0 or TQ1_0 block scale (1 for I2_S) and `d_act` the Q8_K block's `d` (1 for int8
    /// activations): [`super::ternary::epilogue_q8_k`] and [`super::i2_s::epilogue_q8_k`]
    /// exactly, and [`super::ternary::epilogue_i8`] before its division by the activation
    /// scale.
    F32([f32; 8]),
    /// I2_S rows with int8 activations: the whole row's integer dot (bitnet.cpp's epilogue
    /// takes it as one number).
    I32([i32; 8]),
}

impl TernaryRunner {
    /// `None` where the set has no ternary kernel or this CPU cannot run it.
    pub fn new(kernel: Kernel) -> Option<Self> {
        if !kernel.available() {
            return None;
        }
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                // Both convert f16 scales with F16C (every AVX2 CPU made has it).
                let f16c = x86::has_f16c();
                Some(TernaryRunner {
                    run: run_ternary::<x86::Avx2>,
                    scales: f16c.then_some(x86::tq2_0_scales_f16c as ScalesFn),
                    rows8: f16c.then_some(x86::rows8 as Rows8Fn),
                    amx: false,
                })
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 | Kernel::Amx => Some(TernaryRunner {
                run: run_ternary::<x86::Avx2>,
                scales: Some(x86::tq2_0_scales_f16c as ScalesFn),
                rows8: Some(if avx512::has_gfni() {
                    avx512::rows8_gfni as Rows8Fn
                } else {
                    avx512::rows8 as Rows8Fn
                }),
                amx: kernel == Kernel::Amx,
            }),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => Some(TernaryRunner {
                run: run_ternary::<aarch64::Neon>,
                scales: None,
                rows8: None,
                amx: false,
            }),
            _ => None,
        }
    }

    /// [`TernaryRunner::new`]'s runner and every other variant of the set that this CPU also
    /// runs, first the one `new` gives: the `avx512` and `amx` sets' eight-row kernels with
    /// and without GFNI ([`avx512::rows8_gfni`]), so that tests check both on a CPU that has
    /// it. The variants give the same bits.
    pub fn variants(kernel: Kernel) -> Vec<Self> {
        let Some(runner) = Self::new(kernel) else {
            return Vec::new();
        };
        #[cfg(target_arch = "x86_64")]
        if matches!(kernel, Kernel::Avx512 | Kernel::Amx) && avx512::has_gfni() {
            let shifts = TernaryRunner {
                rows8: Some(avx512::rows8 as Rows8Fn),
                ..runner
            };
            return vec![runner, shifts];
        }
        vec![runner]
    }

    /// [`ternary_block_dots`] without resolving the kernel again.
    pub fn block_dots(&self, row: TernaryRow, batch: &TernaryBatch, out: &mut [i32]) {
        // SAFETY: `new` checked that this CPU runs the set, the one promise `run_ternary`
        // needs (it checks the row and `out` against the batch itself).
        unsafe { (self.run)(row, batch, out) }
    }

    /// Every token of `batch` against eight weight rows of one format at once, each block's
    /// integer dots folded straight into the reference epilogue's sum ([`Sums8`]): `out[t]`
    /// for token `t`, lane `i` for `rows[i]`, bit-identical to [`TernaryRunner::block_dots`]
    /// followed by the reference's epilogue. `false` (nothing written) where the set has no
    /// such kernel.
    pub fn rows8(&self, rows: &[TernaryRow; 8], batch: &TernaryBatch, out: &mut [Sums8]) -> bool {
        let Some(f) = self.rows8 else {
            return false;
        };
        let kind = std::mem::discriminant(&rows[0]);
        assert!(
            rows.iter()
                .all(|r| std::mem::discriminant(r) == kind && r.chunks() == batch.chunks()),
            "eight rows of one format, each as long as the activations"
        );
        assert_eq!(out.len(), batch.tokens(), "one output per token");
        // SAFETY: `new` checked the CPU features; the rows are of one kind and fit the batch
        // (asserted).
        unsafe { f(rows, batch, out) };
        true
    }

    /// Whether [`TernaryRunner::rows8`] runs (the set has eight-row kernels).
    pub fn has_rows8(&self) -> bool {
        self.rows8.is_some()
    }

    /// Whether [`TernaryRunner::rows16`] runs (the `amx` set).
    pub fn has_rows16(&self) -> bool {
        self.amx
    }

    /// Sixteen weight rows of one format times every token of `acts` on AMX tiles
    /// ([`amx::rows16`]): row `r`, token `t` at `r * acts.tokens() + t` of `out`, the values
    /// [`TernaryRunner::rows8`] gives. `false` (nothing written) where the set has no such
    /// kernel.
    #[cfg(target_arch = "x86_64")]
    pub fn rows16(&self, rows: &[TernaryRow; 16], acts: &amx::AmxActs, out: amx::Out) -> bool {
        if !self.amx {
            return false;
        }
        let kind = std::mem::discriminant(&rows[0]);
        assert!(
            rows.iter()
                .all(|r| std::mem::discriminant(r) == kind && r.chunks() == acts.chunks()),
            "sixteen rows of one format, each as long as the activations"
        );
        let places = match &out {
            amx::Out::F32(o) => (!acts.int()).then_some(o.len()),
            amx::Out::I32(o) => acts.int().then_some(o.len()),
        };
        assert_eq!(
            places,
            Some(16 * acts.tokens()),
            "one output per row and token"
        );
        // SAFETY: `new` checked that this CPU and OS run the `amx` set; the rows are of one
        // kind and fit the activations, and `out` is of the activations' kind and size
        // (asserted).
        unsafe { amx::rows16(rows, acts, out) };
        true
    }

    /// A row's block scales into `out` (one per block; none for I2_S, whose scale is the
    /// tensor's): TQ2_0's by the set where it converts f16 itself (the same values as the
    /// reference's: the conversion is exact), else by the reference.
    pub fn block_scales(&self, row: TernaryRow, out: &mut Vec<f32>) {
        use super::ternary::block_scales;
        out.clear();
        match (row, self.scales) {
            (TernaryRow::Tq2_0(r), Some(f)) => {
                let blocks = r.len() / tq2_0::BLOCK_BYTES;
                assert_eq!(r.len(), blocks * tq2_0::BLOCK_BYTES, "whole tq2_0 blocks");
                out.resize(blocks, 0.0);
                // SAFETY: `new` checked the features the function needs; the row holds
                // `blocks` blocks (asserted) and `out` one slot per block.
                unsafe { f(r, out) }
            }
            (TernaryRow::Tq2_0(r), None) => out.extend(block_scales::<tq2_0::Tq2_0>(r)),
            (TernaryRow::Tq1_0(r), _) => out.extend(block_scales::<tq1_0::Tq1_0>(r)),
            (TernaryRow::I2s(_), _) => {}
        }
    }
}

/// Runs kernel `K` over every token of `batch` for weight row `row`, four tokens at a time (so
/// each chunk of codes is unpacked once for four tokens: prefill as a GEMM), into
/// `out[t * blocks + b]`. Checks the row and `out` against the batch (whose tokens
/// [`TernaryBatch::new`] checked), so the kernel reads and writes only what exists.
///
/// # Safety
/// The CPU has `K`'s features.
unsafe fn run_ternary<K: TernaryKernel>(row: TernaryRow, batch: &TernaryBatch, out: &mut [i32]) {
    let blocks = row.blocks();
    assert_eq!(
        row.chunks(),
        batch.chunks(),
        "ternary row/activation mismatch"
    );
    assert_eq!(
        out.len(),
        batch.tokens() * blocks,
        "one output per token and block"
    );
    if blocks == 0 {
        return;
    }
    if let TernaryRow::Tq1_0(r) = row {
        // No per-row kernel unpacks base-3 digits: the reference's exact block dots.
        for t in 0..batch.tokens() {
            let (acts, _) = batch.token(t);
            for (b, (blk, o)) in r
                .chunks_exact(tq1_0::BLOCK_BYTES)
                .zip(&mut out[t * blocks..(t + 1) * blocks])
                .enumerate()
            {
                let q = match acts {
                    TernaryActs::I8(q) => &q[b * tq1_0::BLOCK..(b + 1) * tq1_0::BLOCK],
                    TernaryActs::Q8K(y) => &y[b].qs[..],
                };
                *o = tq1_0::block_dot_i8(blk, q);
            }
        }
        return;
    }
    let mut t = 0;
    while t < batch.tokens() {
        let n = (batch.tokens() - t).min(TERNARY_TOKENS_PER_PASS);
        let mut toks = [Token {
            acts: std::ptr::null(),
            stride: 0,
            sums: std::ptr::null(),
            out: std::ptr::null_mut(),
        }; TERNARY_TOKENS_PER_PASS];
        for (i, tok) in toks.iter_mut().enumerate().take(n) {
            let (acts, sums) = batch.token(t + i);
            let (p, stride) = acts.raw();
            *tok = Token {
                acts: p,
                stride,
                sums: sums.as_ptr(),
                out: out[(t + i) * blocks..][..blocks].as_mut_ptr(),
            };
        }
        // SAFETY: the CPU has K's features (the caller's promise); every token has the row's
        // chunks of activations and chunk sums (asserted above, the tokens' own lengths
        // checked by `TernaryBatch::new`) and `blocks` outputs (sliced above), and no two
        // tokens share outputs.
        unsafe {
            match n {
                1 => K::block_dots::<1>(row, [toks[0]]),
                2 => K::block_dots::<2>(row, [toks[0], toks[1]]),
                3 => K::block_dots::<3>(row, [toks[0], toks[1], toks[2]]),
                _ => K::block_dots::<4>(row, toks),
            }
        }
        t += n;
    }
}
