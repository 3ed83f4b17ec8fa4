//! Op-level kernel parity against ggml, in the manner of llama.cpp's `test-backend-ops`: every
//! codec, dot product and op of the engine against the ggml function it mirrors, called through
//! FFI on the same random inputs (proptest picks kind, seed and length; see
//! [`parity_support::Kind`] for the extreme inputs).
//!
//! Judged bit-exact wherever the arithmetic is the same sequence of IEEE operations (codecs,
//! activation quantizers, the integer part of every quantized dot, RMSNorm, ReLU^2, mul, add);
//! by NMSE against ggml's output where ggml sums, rounds or fuses in another order (its AVX2
//! and tinyBLAS dots, FMA-contracted `_generic` dots and RoPE, `ggml_v_expf` in softmax and
//! SiLU), with the threshold and its reason beside each use. docs/kernel-parity.md has the
//! table of what is compared. `--nocapture` prints one `PARITY` line per
//! (op, format, comparison): cases, max NMSE, how many cases were not bit-exact, the limit.
//!
//! Run: `cargo test -p xval-cpp-sys --test kernel_parity -- --nocapture`.
#![cfg(feature = "llama-cpp")]

mod parity_support;

use parity_support::ffi::{self, BF16, F16, F32, Q6_K, Q8_0, Q8_K, TQ1_0, TQ2_0};
use parity_support::stats::{self, nmse, same_bits, Limit};
use parity_support::{make_row, Kind};
use proptest::prelude::*;
use xval_engine::gguf::GgmlType;
use xval_engine::quant::{self, bf16, f16, f32 as f32q, i2_s, q6_k, q8_0, q8_k, tq1_0, tq2_0};

use llama_cpp_sys_2 as sys;

/// Each format: ggml's id, ours, and the block size (row lengths are whole blocks: ggml's
/// quantizers assert it; F32/F16/BF16 have blocks of 1, so any length, tails included).
#[derive(Clone, Copy, Debug)]
struct Fmt {
    ggml: sys::ggml_type,
    ours: GgmlType,
    block: usize,
    name: &'static str,
}

const FMT_F32: Fmt = Fmt {
    ggml: F32,
    ours: GgmlType::F32,
    block: 1,
    name: "F32",
};
const FMT_F16: Fmt = Fmt {
    ggml: F16,
    ours: GgmlType::F16,
    block: 1,
    name: "F16",
};
const FMT_BF16: Fmt = Fmt {
    ggml: BF16,
    ours: GgmlType::BF16,
    block: 1,
    name: "BF16",
};
const FMT_Q8_0: Fmt = Fmt {
    ggml: Q8_0,
    ours: GgmlType::Q8_0,
    block: 32,
    name: "Q8_0",
};
const FMT_Q6_K: Fmt = Fmt {
    ggml: Q6_K,
    ours: GgmlType::Q6_K,
    block: 256,
    name: "Q6_K",
};
const FMT_TQ1_0: Fmt = Fmt {
    ggml: TQ1_0,
    ours: GgmlType::TQ1_0,
    block: 256,
    name: "TQ1_0",
};
const FMT_TQ2_0: Fmt = Fmt {
    ggml: TQ2_0,
    ours: GgmlType::TQ2_0,
    block: 256,
    name: "TQ2_0",
};

impl Fmt {
    /// Row length for a proptest-chosen `units`: whole blocks for block formats (1..=4 blocks
    /// of 256, 1..=20 of 32); for the float formats half the time any length 1..=300 (tails
    /// past every SIMD width), half the time a multiple of 32 (the lengths llamafile's tinyBLAS
    /// accepts, so optimized mode really takes it).
    fn row_len(self, units: usize) -> usize {
        match self.block {
            1 if units.is_multiple_of(2) => 32 * (1 + units / 2 % 10),
            1 => 1 + units % 300,
            32 => 32 * (1 + units % 20),
            _ => 256 * (1 + units % 4),
        }
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    proptest::sample::select(Kind::ALL.to_vec())
}

fn finite_kind() -> impl Strategy<Value = Kind> {
    proptest::sample::select(Kind::FINITE.to_vec())
}

/// Element-wise equality that takes NaN as equal to NaN (any payload): ggml's and our f16
/// conversions both produce *a* quiet NaN, but payload bits are not part of either contract.
fn same_values(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

// ---------------------------------------------------------------------------------------------
// Quantize and dequantize
// ---------------------------------------------------------------------------------------------

/// Our encoder against `ggml_quantize_chunk` (what llama-quantize writes) and the type's
/// `from_float_ref`, byte for byte; then our decoder against `to_float` on ggml's bytes, bit
/// for bit. One or two rows per case, so `ggml_quantize_chunk`'s row loop is exercised too.
fn check_codec(f: Fmt, kind: Kind, seed: u64, units: usize, rows: usize) {
    let n = f.row_len(units);
    let x = make_row(kind, seed, n * rows);
    let ours = quant::quantize(f.ours, &x).expect("our encoder");
    let chunk = ffi::quantize_chunk(f.ggml, &x, n);
    let deq_chunk = ffi::to_float(f.ggml, &chunk, n * rows);
    let deq_ours = ffi::to_float(f.ggml, &ours, n * rows);
    let tag = format!("{kind:?}");
    stats::record(
        &format!("quantize | {} | ours vs ggml_quantize_chunk", f.name),
        Limit::Exact,
        nmse(&deq_ours, &deq_chunk),
        ours == chunk,
    );
    assert_eq!(ours, chunk, "{} {tag} n={n}", f.name);
    if f.ggml != F32 {
        // F32 has no from_float_ref (its bytes are the values).
        let r = ffi::from_float_ref(f.ggml, &x);
        stats::record(
            &format!("quantize | {} | ours vs from_float_ref", f.name),
            Limit::Exact,
            0.0,
            ours == r,
        );
    }
    let mine = quant::dequantize(f.ours, &chunk, n * rows).expect("our decoder");
    stats::record(
        &format!("dequantize | {} | ours vs to_float (encoded rows)", f.name),
        Limit::Exact,
        nmse(&mine, &deq_chunk),
        same_values(&mine, &deq_chunk),
    );
}

/// Our decoder against `to_float` on arbitrary bytes: every code (TQ2_0's unused code 3, every
/// TQ1_0 byte value, every int8), every f16/bf16 bit pattern (inf, NaN, subnormals) as scales
/// and values.
fn check_decode_bytes(f: Fmt, seed: u64, units: usize) {
    let n = f.row_len(units);
    let mut r = parity_support::Rng::new(seed);
    let bytes: Vec<u8> = (0..ffi::row_size(f.ggml, n))
        .map(|_| r.next_u64() as u8)
        .collect();
    let mine = quant::dequantize(f.ours, &bytes, n).expect("our decoder");
    let theirs = ffi::to_float(f.ggml, &bytes, n);
    stats::record(
        &format!("dequantize | {} | ours vs to_float (random bytes)", f.name),
        Limit::Exact,
        nmse(&mine, &theirs),
        same_values(&mine, &theirs),
    );
}

/// The codec cases of one format: 256 encoded rows and 256 random-byte rows (each case is
/// microseconds of FFI; the count is for the spread of kinds and lengths).
fn codec_cases(f: Fmt) {
    let strategy = (kind(), any::<u64>(), 0usize..1000, 1usize..=2, any::<u64>());
    parity_support::run(256, strategy, |(kind, seed, units, rows, bseed)| {
        check_codec(f, kind, seed, units, rows);
        if f.ggml != F32 {
            check_decode_bytes(f, bseed, units / 2);
        }
    });
}

#[test]
fn codec_f32() {
    codec_cases(FMT_F32);
}

#[test]
fn codec_f16() {
    codec_cases(FMT_F16);
}

#[test]
fn codec_bf16() {
    codec_cases(FMT_BF16);
}

#[test]
fn codec_q8_0() {
    codec_cases(FMT_Q8_0);
}

/// Q6_K (token_embd / output of newer bitnet.cpp conversions): our encoder mirrors
/// `quantize_row_q6_K_ref` (what `ggml_quantize_chunk` runs without an imatrix), so it is
/// judged byte for byte like the others; the decoder bit for bit on ggml's bytes and on random
/// ones (every code, scale byte and f16 `d`).
#[test]
fn codec_q6_k() {
    codec_cases(FMT_Q6_K);
}

#[test]
fn codec_tq1_0() {
    codec_cases(FMT_TQ1_0);
}

#[test]
fn codec_tq2_0() {
    codec_cases(FMT_TQ2_0);
}

// ---------------------------------------------------------------------------------------------
// Dot products
// ---------------------------------------------------------------------------------------------

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn u16s(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn q8_k_blocks(b: &[u8]) -> Vec<q8_k::BlockQ8K> {
    b.chunks_exact(ffi::Q8_K_BLOCK_BYTES)
        .map(|c| {
            let mut blk = q8_k::BlockQ8K {
                d: f32::from_le_bytes(c[..4].try_into().unwrap()),
                ..Default::default()
            };
            for (q, &v) in blk.qs.iter_mut().zip(&c[4..260]) {
                *q = v as i8;
            }
            for (s, v) in blk.bsums.iter_mut().zip(c[260..].chunks_exact(2)) {
                *s = i16::from_le_bytes([v[0], v[1]]);
            }
            blk
        })
        .collect()
}

/// Our activation quantizer for weight format `f` (what `quant::matmul` prepares under the ggml
/// profile), as bytes of ggml's `vec_dot_type` layout.
fn our_activation(f: Fmt, x: &[f32]) -> Vec<u8> {
    match f.ours {
        GgmlType::F32 => f32q::quantize(x),
        GgmlType::F16 => {
            let mut v = Vec::new();
            f16::to_f16_row(x, &mut v);
            v.iter().flat_map(|h| h.to_le_bytes()).collect()
        }
        GgmlType::BF16 => {
            let mut v = Vec::new();
            bf16::to_bf16_row(x, &mut v);
            v.iter().flat_map(|h| h.to_le_bytes()).collect()
        }
        GgmlType::Q8_0 => q8_0::quantize_act(x).unwrap(),
        GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::Q6_K => {
            let mut blocks = Vec::new();
            q8_k::quantize_row(x, &mut blocks).unwrap();
            ffi::q8_k_bytes(&blocks)
        }
        other => panic!("no activation form for {other}"),
    }
}

/// Our dot of one weight row with activations `y` given in ggml's vec_dot_type bytes.
fn our_dot(f: Fmt, row: &[u8], y: &[u8]) -> f32 {
    match f.ours {
        GgmlType::F32 => f32q::vec_dot_f32(row, &f32s(y)),
        GgmlType::F16 => {
            let h: Vec<half::f16> = u16s(y).into_iter().map(half::f16::from_bits).collect();
            f16::vec_dot_f16(row, &h)
        }
        GgmlType::BF16 => bf16::vec_dot_bf16(row, &u16s(y)),
        GgmlType::Q8_0 => q8_0::vec_dot_q8_0(row, y),
        GgmlType::Q6_K => q6_k::vec_dot_q8_k(row, &q8_k_blocks(y)),
        GgmlType::TQ1_0 => tq1_0::vec_dot_q8_k(row, &q8_k_blocks(y)),
        GgmlType::TQ2_0 => tq2_0::vec_dot_q8_k(row, &q8_k_blocks(y)),
        other => panic!("no dot for {other}"),
    }
}

fn type_name(t: sys::ggml_type) -> &'static str {
    match t {
        F32 => "F32",
        F16 => "F16",
        BF16 => "BF16",
        Q8_0 => "Q8_0",
        Q8_K => "Q8_K",
        _ => "?",
    }
}

/// Rows per dot case: the NMSE of a case is taken over these outputs.
const DOT_ROWS: usize = 4;

/// Limit of our scalar dot against ggml's AVX2 `vec_dot` (and, in `mul_mat`, llamafile's
/// tinyBLAS), every format. The products are the same (exact integers for the quantized
/// formats, exact f32 products of f16/bf16 values); only the order and width of the float sums
/// differ:
/// - F32, F16, BF16: ggml keeps 8-lane f32 accumulators (FMA for F32/F16) reduced in f32, F32
///   even returns the f32 sum; ours sums the f32 products in f64;
/// - Q8_0: per block `d_x * d_y` times the exact int sum, FMA-accumulated per lane in f32;
/// - TQ1_0, TQ2_0: each block's int sum split over 8 i32 lanes, each lane times d, accumulated
///   per lane across blocks, reduced at the end;
/// - Q6_K: the same shape as ours (8 lanes, FMA per block, reduced at the end), but the int32
///   lanes hold other partial sums (AVX2: `maddubs` pairs of 0..63 codes with the `32 * bsums`
///   correction per lane; ours: element `l` of every 8), so the lanes round differently.
///
/// Each is within a few `n * 2^-24 * sum|terms|` of the exact dot. NMSE divides by `(sum
/// terms)^2`, so it grows with the cancellation of the random signs: ~1e-14 typical, 3e-11 the
/// worst seen (Q8_0 rows with heavy-tailed `Spread` weights). A real kernel fault (a wrong code,
/// element order or scale) gives NMSE >= 1e-4; the limit sits between with a 30x margin over
/// the worst measured noise. The integer kernels themselves are judged bit-exact separately
/// (`check_int_dot`), as are the codecs and activation quantizers that feed them.
fn avx2_dot_limit(_: Fmt) -> Limit {
    Limit::Nmse(1e-9)
}

/// Our scalar kernels against ggml's `_generic` ones on the same bytes. The integer part is
/// identical (see `check_int_dot`); the float epilogue is not bit-exact *as compiled here*:
/// GCC contracts `sumf += (float)sumi * d` into one FMA (`vfmadd231ss` in
/// `ggml_vec_dot_{q8_0_q8_0,tq1_0_q8_K,tq2_0_q8_K}_generic` of this -mfma build; C allows it,
/// GCC's default is -ffp-contract=fast), while ours rounds the product and then the sum, as the
/// C source reads (and as a build without FMA runs it). One rounding of at most 2^-24 of each
/// block term: NMSE ~1e-14 typical, 1.1e-13 the worst seen (same cancellation argument as
/// `avx2_dot_limit`); limit 1e-10.
const GENERIC_FMA_LIMIT: Limit = Limit::Nmse(1e-10);

/// Our scalar dot against ggml's `_generic` one for format `f`: bit-exact for Q6_K, whose
/// `q6_k::vec_dot_q8_k` mirrors the contracted `sums[l] += d * aux32[l]` (`vfmadd231ps` in
/// this build) with `f32::mul_add`; [`GENERIC_FMA_LIMIT`] for the others, which round the
/// product and the sum separately, as their C source reads.
fn generic_dot_limit(f: Fmt) -> Limit {
    if f.ours == GgmlType::Q6_K {
        Limit::Exact
    } else {
        GENERIC_FMA_LIMIT
    }
}

/// Formats with a declared `_generic` kernel (`ffi::vec_dot_generic`).
fn has_generic(f: Fmt) -> bool {
    matches!(
        f.ours,
        GgmlType::Q8_0 | GgmlType::Q6_K | GgmlType::TQ1_0 | GgmlType::TQ2_0
    )
}

/// Our activation quantizer against ggml's CPU `from_float` for the vec_dot type; our dot on
/// ggml's activations against the scalar `_generic` kernel (bit-exact) and against the AVX2
/// `vec_dot` (NMSE). Weights are ggml's own encoding of random rows.
fn check_dot(f: Fmt, wkind: Kind, akind: Kind, seed: u64, units: usize) {
    let n = f.row_len(units);
    let xw = make_row(wkind, seed, n * DOT_ROWS);
    let w = ffi::quantize_chunk(f.ggml, &xw, n);
    let xa = make_row(akind, seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15, n);
    let vt = ffi::vec_dot_type(f.ggml);
    let y = ffi::cpu_from_float(vt, &xa);
    let mine_y = our_activation(f, &xa);
    stats::record(
        &format!(
            "act-quantize | {} for {} | ours vs CPU from_float",
            type_name(vt),
            f.name
        ),
        Limit::Exact,
        0.0,
        mine_y == y,
    );
    let rb = ffi::row_size(f.ggml, n);
    let (mut ours, mut opt, mut gen) = (Vec::new(), Vec::new(), Vec::new());
    for row in w.chunks_exact(rb) {
        ours.push(our_dot(f, row, &y));
        opt.push(ffi::vec_dot(f.ggml, n, row, &y));
        if has_generic(f) {
            gen.push(ffi::vec_dot_generic(f.ggml, n, row, &y));
        }
    }
    if !gen.is_empty() {
        stats::record(
            &format!("vec_dot | {} | ours vs ggml _generic", f.name),
            generic_dot_limit(f),
            nmse(&ours, &gen),
            same_bits(&ours, &gen),
        );
    }
    stats::record(
        &format!("vec_dot | {} | ours vs ggml AVX2 vec_dot", f.name),
        avx2_dot_limit(f),
        nmse(&ours, &opt),
        same_bits(&ours, &opt),
    );
}

/// The integer dot alone, bit-exact against both ggml kernels: every scale is 1.0 (weights
/// are integers whose block maximum makes ggml's encoder choose d = 1: +-127 for Q8_0, +-1 for
/// TQ; activations are vec_dot_type blocks with d = 1 and random int8 values), so each block
/// term is its exact integer sum, and every partial sum is an integer below 2^24, exact in f32
/// in any order, fused or not. What remains is the integer kernel: element order, code
/// extraction, TQ1_0's base-3 digits, the AVX2 kernels' 16-bit sums and bsums correction.
fn check_int_dot(f: Fmt, seed: u64, units: usize) {
    let n = f.row_len(units);
    let mut r = parity_support::Rng::new(seed);
    let top: i64 = if f.ours == GgmlType::Q8_0 { 127 } else { 1 };
    let xw: Vec<f32> = (0..n * DOT_ROWS)
        .map(|i| {
            if i % f.block == (seed as usize) % f.block {
                top as f32 * r.sign()
            } else {
                (r.below(2 * top as u64 + 1) as i64 - top) as f32
            }
        })
        .collect();
    let w = ffi::quantize_chunk(f.ggml, &xw, n);
    let mut qs = || (r.below(255) as i64 - 127) as i8;
    let y: Vec<u8> = if f.ours == GgmlType::Q8_0 {
        (0..n / 32)
            .flat_map(|_| {
                let mut b = half::f16::ONE.to_le_bytes().to_vec();
                b.extend((0..32).map(|_| qs() as u8));
                b
            })
            .collect()
    } else {
        let blocks: Vec<q8_k::BlockQ8K> = (0..n / 256)
            .map(|_| {
                let mut b = q8_k::BlockQ8K {
                    d: 1.0,
                    ..Default::default()
                };
                b.qs.iter_mut().for_each(|q| *q = qs());
                for (s, c) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                    *s = c.iter().map(|&v| v as i16).sum();
                }
                b
            })
            .collect();
        ffi::q8_k_bytes(&blocks)
    };
    let rb = ffi::row_size(f.ggml, n);
    let (mut ours, mut opt, mut gen) = (Vec::new(), Vec::new(), Vec::new());
    for row in w.chunks_exact(rb) {
        ours.push(our_dot(f, row, &y));
        opt.push(ffi::vec_dot(f.ggml, n, row, &y));
        gen.push(ffi::vec_dot_generic(f.ggml, n, row, &y));
    }
    stats::record(
        &format!("vec_dot int (d=1) | {} | ours vs ggml _generic", f.name),
        Limit::Exact,
        nmse(&ours, &gen),
        same_bits(&ours, &gen),
    );
    stats::record(
        &format!("vec_dot int (d=1) | {} | ours vs ggml AVX2 vec_dot", f.name),
        Limit::Exact,
        nmse(&ours, &opt),
        same_bits(&ours, &opt),
    );
}

/// [`check_int_dot`] for Q6_K, whose encoder cannot be steered to d = 1: the weight blocks are
/// random bytes (every 6-bit code, every `ql`/`qh` bit) with int8 scales in -4..=4 and f16
/// `d` = 1; activations Q8_K blocks with d = 1, codes in -64..=63 and matching bsums (the AVX2
/// kernel subtracts `32 * bsums * scale` instead of centring the codes). At most 4 blocks, so
/// every partial sum is an integer of magnitude below 1024 * 4 * 32 * 64 = 2^23: exact in f32
/// in any order, fused or not, and all three dots must agree bit for bit.
fn check_int_dot_q6_k(seed: u64, units: usize) {
    let n = FMT_Q6_K.row_len(units);
    let mut r = parity_support::Rng::new(seed ^ 0x0006_0006_0006_0006);
    let blocks = n / 256;
    let w: Vec<u8> = (0..blocks * DOT_ROWS)
        .flat_map(|_| {
            let mut b: Vec<u8> = (0..192).map(|_| r.next_u64() as u8).collect();
            b.extend((0..16).map(|_| (r.below(9) as i8 - 4) as u8));
            b.extend_from_slice(&half::f16::ONE.to_le_bytes());
            b
        })
        .collect();
    let acts: Vec<q8_k::BlockQ8K> = (0..blocks)
        .map(|_| {
            let mut b = q8_k::BlockQ8K {
                d: 1.0,
                ..Default::default()
            };
            b.qs.iter_mut()
                .for_each(|q| *q = (r.below(128) as i64 - 64) as i8);
            for (s, c) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = c.iter().map(|&v| v as i16).sum();
            }
            b
        })
        .collect();
    let y = ffi::q8_k_bytes(&acts);
    let rb = ffi::row_size(Q6_K, n);
    assert_eq!(w.len(), rb * DOT_ROWS);
    let (mut ours, mut opt, mut gen) = (Vec::new(), Vec::new(), Vec::new());
    for row in w.chunks_exact(rb) {
        ours.push(q6_k::vec_dot_q8_k(row, &acts));
        opt.push(ffi::vec_dot(Q6_K, n, row, &y));
        gen.push(ffi::vec_dot_generic(Q6_K, n, row, &y));
    }
    stats::record(
        "vec_dot int (d=1) | Q6_K | ours vs ggml _generic",
        Limit::Exact,
        nmse(&ours, &gen),
        same_bits(&ours, &gen),
    );
    stats::record(
        "vec_dot int (d=1) | Q6_K | ours vs ggml AVX2 vec_dot",
        Limit::Exact,
        nmse(&ours, &opt),
        same_bits(&ours, &opt),
    );
}

/// Weight kinds of the float-dot cases: the finite ones but `AllEqual`. With equal weights every
/// row is `c * sum(x)`, which cancels to near zero on random-sign activations; the rounding
/// differences are bounded relative to `sum |w x|`, but NMSE divides by `(sum w x)^2`, so such
/// rows measure the input's conditioning, not the kernel. (The codec cases cover `AllEqual`.)
fn dot_weight_kind() -> impl Strategy<Value = Kind> {
    let kinds: Vec<Kind> = Kind::FINITE
        .into_iter()
        .filter(|&k| k != Kind::AllEqual)
        .collect();
    proptest::sample::select(kinds)
}

fn dot_cases(f: Fmt) {
    let strategy = (dot_weight_kind(), finite_kind(), any::<u64>(), 0usize..1000);
    parity_support::run(256, strategy, |(wk, ak, seed, units)| {
        check_dot(f, wk, ak, seed, units);
        if matches!(f.ours, GgmlType::Q8_0 | GgmlType::TQ1_0 | GgmlType::TQ2_0) {
            check_int_dot(f, seed, units);
        }
        if f.ours == GgmlType::Q6_K {
            check_int_dot_q6_k(seed, units);
        }
    });
}

#[test]
fn dot_f32() {
    dot_cases(FMT_F32);
}

#[test]
fn dot_f16() {
    dot_cases(FMT_F16);
}

#[test]
fn dot_bf16() {
    dot_cases(FMT_BF16);
}

#[test]
fn dot_q8_0() {
    dot_cases(FMT_Q8_0);
}

#[test]
fn dot_q6_k() {
    dot_cases(FMT_Q6_K);
}

#[test]
fn dot_tq1_0() {
    dot_cases(FMT_TQ1_0);
}

#[test]
fn dot_tq2_0() {
    dot_cases(FMT_TQ2_0);
}

/// Q8_K, the TQ formats' activation type, alone: ours (`q8_k::quantize_row`) against
/// `quantize_row_q8_K_ref` and the CPU backend's `quantize_row_q8_K` (on x86 a call of the
/// reference), block bytes (d, qs, bsums) bit for bit. `Kind::Tiny` is left out: a block whose
/// largest |x| is subnormal makes `-127/max` overflow and both ggml's `nearest_int` and ours
/// assert that its argument is below 2^22 (ours in debug builds, ggml's in non-NDEBUG ones).
#[test]
fn act_quantize_q8_k() {
    let kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|&k| k != Kind::Tiny).collect();
    let strategy = (proptest::sample::select(kinds), any::<u64>(), 1usize..=4);
    parity_support::run(256, strategy, |(kind, seed, blocks)| {
        let x = make_row(kind, seed, 256 * blocks);
        let mut b = Vec::new();
        q8_k::quantize_row(&x, &mut b).unwrap();
        let mine = ffi::q8_k_bytes(&b);
        let r = ffi::from_float_ref(Q8_K, &x);
        let cpu = ffi::cpu_from_float(Q8_K, &x);
        stats::record(
            "act-quantize | Q8_K | ours vs quantize_row_q8_K_ref",
            Limit::Exact,
            0.0,
            mine == r,
        );
        stats::record(
            "act-quantize | Q8_K | ours vs CPU from_float",
            Limit::Exact,
            0.0,
            mine == cpu,
        );
    });
}

// ---------------------------------------------------------------------------------------------
// I2_S through the lossless transcode
// ---------------------------------------------------------------------------------------------

/// Mainline ggml has no I2_S, so I2_S is judged through `transcode::i2s_tensor_to_tq2_0`
/// (TQ2_0 blocks with d = 1.0 plus the per-tensor scale), which is what the built-in oracle runs:
///
/// - dequantize: ours == ggml's TQ2_0 `to_float` of the transcode times the scale, bit for bit
///   (`trit * 1.0 * s` is `trit * s` exactly);
/// - ggml profile: `i2_s::vec_dot_q8_k` (then `* s`, as `quant::matmul` does) against ggml's
///   TQ2_0 x Q8_K kernels on the transcode (then `* s`, as the `.scale` tensor does): NMSE
///   against `_generic` (its FMA, see `GENERIC_FMA_LIMIT`) and AVX2 (see `avx2_dot_limit`);
/// - bitnet-cpp profile: its activations are one int8 vector per row with one scale
///   (`quantize_row_i8_s`), not Q8_K's per-256 blocks, so the *float* result has no ggml
///   counterpart (bitnet.cpp's kernel is not in mainline). What can be compared is the integer
///   dot: ggml's TQ2_0 kernels, fed those int8 values as a Q8_K row with d = 1.0, return
///   `(float)sum_b sumi_b`, and every partial sum is an integer below 2^24, so it must equal
///   our `i2_s::vec_dot_i8` exactly, for the AVX2 kernel too.
#[test]
fn i2_s_via_transcode() {
    let strategy = (finite_kind(), any::<u64>(), 1usize..=4, 0.001f32..4.0);
    parity_support::run(128, strategy, |(akind, seed, blocks, scale)| {
        let n = 256 * blocks;
        let layout = i2_s::I2sLayout::Block128;
        let mut r = parity_support::Rng::new(seed);
        let trits: Vec<i8> = (0..n * DOT_ROWS).map(|_| r.below(3) as i8 - 1).collect();
        let data = i2_s::pack(&trits, scale, layout).unwrap();
        let (tq, s) = xval_engine::transcode::i2s_tensor_to_tq2_0(&data, n * DOT_ROWS, layout)
            .expect("transcode");
        assert_eq!(s, scale);

        let mine = quant::dequantize(GgmlType::I2_S, &data, n * DOT_ROWS).unwrap();
        let theirs: Vec<f32> = ffi::to_float(TQ2_0, &tq, n * DOT_ROWS)
            .into_iter()
            .map(|v| v * s)
            .collect();
        stats::record(
            "dequantize | I2_S | ours vs TQ2_0 to_float(transcode) * scale",
            Limit::Exact,
            nmse(&mine, &theirs),
            same_bits(&mine, &theirs),
        );

        let xa = make_row(akind, seed ^ 0x5851_f42d_4c95_7f2d, n);
        let y = ffi::cpu_from_float(Q8_K, &xa);
        let yb = q8_k_blocks(&y);
        let mut act = xval_engine::quant::act_i8::ActI8::default();
        xval_engine::quant::act_i8::quantize_row(&xa, &mut act);
        let mut fake = Vec::with_capacity(y.len());
        for q in act.q.chunks_exact(256) {
            let mut blk = q8_k::BlockQ8K {
                d: 1.0,
                ..Default::default()
            };
            for (d, &v) in blk.qs.iter_mut().zip(q) {
                *d = v;
            }
            for (sum, c) in blk.bsums.iter_mut().zip(q.chunks_exact(16)) {
                *sum = c.iter().map(|&v| v as i16).sum();
            }
            fake.push(blk);
        }
        let fake = ffi::q8_k_bytes(&fake);

        let tq_rb = ffi::row_size(TQ2_0, n);
        let (mut ours, mut gen, mut opt) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ours_i, mut gen_i, mut opt_i) = (Vec::new(), Vec::new(), Vec::new());
        for (codes, tq_row) in data[..n * DOT_ROWS / 4]
            .chunks_exact(n / 4)
            .zip(tq.chunks_exact(tq_rb))
        {
            ours.push(i2_s::vec_dot_q8_k(codes, &yb, layout) * s);
            gen.push(ffi::vec_dot_generic(TQ2_0, n, tq_row, &y) * s);
            opt.push(ffi::vec_dot(TQ2_0, n, tq_row, &y) * s);
            ours_i.push(i2_s::vec_dot_i8(codes, &act.q, layout) as f32);
            gen_i.push(ffi::vec_dot_generic(TQ2_0, n, tq_row, &fake));
            opt_i.push(ffi::vec_dot(TQ2_0, n, tq_row, &fake));
        }
        stats::record(
            "vec_dot | I2_S ggml profile | ours vs TQ2_0 _generic(transcode)",
            GENERIC_FMA_LIMIT,
            nmse(&ours, &gen),
            same_bits(&ours, &gen),
        );
        stats::record(
            "vec_dot | I2_S ggml profile | ours vs TQ2_0 AVX2(transcode)",
            avx2_dot_limit(FMT_TQ2_0),
            nmse(&ours, &opt),
            same_bits(&ours, &opt),
        );
        stats::record(
            "vec_dot | I2_S int8 dot | ours vs TQ2_0 _generic(d=1)",
            Limit::Exact,
            nmse(&ours_i, &gen_i),
            same_bits(&ours_i, &gen_i),
        );
        stats::record(
            "vec_dot | I2_S int8 dot | ours vs TQ2_0 AVX2(d=1)",
            Limit::Exact,
            nmse(&ours_i, &opt_i),
            same_bits(&ours_i, &opt_i),
        );
    });
}

// ---------------------------------------------------------------------------------------------
// One-op graphs on the CPU backend, optimized and reference mode
// ---------------------------------------------------------------------------------------------
//
// What `ggml_backend_cpu_set_use_ref(backend, true)` changes in this ggml (read in
// ggml-cpu/ggml-cpu.c, tiled/tiled.cpp, ops.cpp), and nothing else:
// - `ggml_compute_forward_mul_mat` skips both llamafile_sgemm calls (tinyBLAS: F32, F16 x F16
//   after converting the activations, and Q8_0 x Q8_0 after quantizing them), skips the
//   tiled K-quant matmul (of the types here only Q6_K is eligible, from 8 activation rows
//   up: `ggml_tiled_min_batch`) and the Hadamard hint; the
//   matmul then goes through `type_traits_cpu[t].vec_dot`, which is still the AVX2 kernel, and
//   activations are still quantized by the CPU `from_float` (x86 `quantize_row_q8_0` for
//   Q8_0, not the reference);
// - `ggml_cpu_try_fuse_ops` is off, so RMS_NORM followed by MUL runs as two ops instead of
//   `ggml_compute_forward_rms_norm_mul_fused` (which computes `x * scale * w`, the same
//   arithmetic);
// - flash attention uses its single-pass reference path (not used here).
// Every other op (rope, soft_max, silu, relu, sqr, add, mul) is the same code in both modes:
// its SIMD (`ggml_v_expf`, `ggml_v_silu`) stays on.

use parity_support::graph::{bytes_f32, bytes_i32, OpGraph};
use xval_engine::model::ops;
use xval_engine::numerics::{Numerics, Profile};
use xval_engine::quant::matmul::{matmul, WeightMatrix};

/// (threads, use_ref) of every graph computation: 1 and 2 threads, optimized and reference.
const MODES: [(i32, bool); 4] = [(1, false), (2, false), (1, true), (2, true)];

/// Record ggml's outputs `outs` (one per [`MODES`] entry) under `key`: ours against ggml's
/// optimized and reference runs (1 and 2 threads each, so a case counts twice per row); whether
/// ggml's output depends on the thread count (it must not: each output value is computed by one
/// thread with the same kernel); and whether reference mode changed ggml's output at all
/// (reported: it does where llamafile or fusion served the optimized run).
fn record_modes(key: &str, limit: impl Fn(bool) -> Limit, ours: &[f32], outs: &[Vec<f32>]) {
    assert_eq!(outs.len(), MODES.len());
    for ((_, use_ref), g) in MODES.iter().zip(outs) {
        let mode = if *use_ref { "ref" } else { "opt" };
        stats::record(
            &format!("{key} | ours vs ggml {mode} (t1, t2)"),
            limit(*use_ref),
            nmse(ours, g),
            same_bits(ours, g),
        );
    }
    for (a, b) in [(0, 1), (2, 3)] {
        stats::record(
            &format!("{key} | ggml t1 vs t2 (opt, ref)"),
            Limit::Exact,
            nmse(&outs[a], &outs[b]),
            same_bits(&outs[a], &outs[b]),
        );
    }
    stats::record(
        &format!("{key} | ggml opt vs ref"),
        Limit::Report,
        nmse(&outs[0], &outs[2]),
        same_bits(&outs[0], &outs[2]),
    );
}

/// Output rows of the mul_mat cases: 1, odd counts, counts that are not multiples of ggml's
/// 16-row chunks or of the thread count, and multiples of 4 and 16 (llamafile's tinyBLAS takes
/// only m % 4 == 0, so these are the shapes where optimized mode leaves the vec_dot path).
const MUL_MAT_ROWS: [usize; 6] = [1, 3, 17, 32, 64, 70];
/// Activation rows (tokens): 1 (the decode matrix-vector path) and several.
const MUL_MAT_TOKENS: [usize; 4] = [1, 2, 5, 9];

fn check_mul_mat(f: Fmt, wkind: Kind, akind: Kind, seed: u64, units: usize, mi: usize, ni: usize) {
    let k = f.row_len(units);
    let (m, n) = (MUL_MAT_ROWS[mi], MUL_MAT_TOKENS[ni]);
    let w = ffi::quantize_chunk(f.ggml, &make_row(wkind, seed, k * m), k);
    let x = make_row(akind, seed.rotate_left(29) ^ 0x1234_5678, k * n);
    let wm = WeightMatrix::new("w", f.ours, k, m, &w, i2_s::I2sLayout::default()).unwrap();
    let ours = matmul(&wm, &x, n, Numerics::new(Profile::Ggml)).unwrap();
    let g = OpGraph::new();
    let wt = g.tensor(f.ggml, &[k as i64, m as i64]);
    let xt = g.tensor(F32, &[k as i64, n as i64]);
    let out = g.mul_mat(wt, xt);
    let xb = bytes_f32(&x);
    // Optimized mode: llamafile's tinyBLAS computes F32/F16/BF16 (and Q8_0) tiles with f32 FMA
    // accumulators in its own order when m % 4 == 0 and n >= 2, and the tiled K-quant matmul
    // (tiled/tiled.cpp) computes Q6_K when n >= 8; otherwise, and in reference mode, the AVX2
    // vec_dot. The same kind of difference (summation order), the same limit and reason as for
    // the dots.
    record_modes(
        &format!("mul_mat | {}", f.name),
        |_| avx2_dot_limit(f),
        &ours,
        &g.compute(out, &[(wt, &w), (xt, &xb)], &MODES),
    );
}

/// I2_S through the graph the oracle runs for a transcoded file: `mul_mat` of the TQ2_0
/// transcode, then `ggml_mul` by the one-element `.scale` tensor (llama.cpp's `build_lora_mm`
/// with `w_s`), against `quant::matmul` of the I2_S bytes under the ggml profile.
fn check_mul_mat_i2_s(akind: Kind, seed: u64, blocks: usize, mi: usize, ni: usize, scale: f32) {
    let (k, m, n) = (256 * blocks, MUL_MAT_ROWS[mi], MUL_MAT_TOKENS[ni]);
    let layout = i2_s::I2sLayout::Block128;
    let mut r = parity_support::Rng::new(seed);
    let trits: Vec<i8> = (0..k * m).map(|_| r.below(3) as i8 - 1).collect();
    let data = i2_s::pack(&trits, scale, layout).unwrap();
    let (tq, s) = xval_engine::transcode::i2s_tensor_to_tq2_0(&data, k * m, layout).unwrap();
    let x = make_row(akind, seed ^ 0xabcd, k * n);
    let wm = WeightMatrix::new("w", GgmlType::I2_S, k, m, &data, layout).unwrap();
    let ours = matmul(&wm, &x, n, Numerics::new(Profile::Ggml)).unwrap();
    let g = OpGraph::new();
    let wt = g.tensor(TQ2_0, &[k as i64, m as i64]);
    let xt = g.tensor(F32, &[k as i64, n as i64]);
    let st = g.tensor(F32, &[1]);
    let mm = g.mul_mat(wt, xt);
    let out = g.mul(mm, st);
    let (xb, sb) = (bytes_f32(&x), bytes_f32(&[s]));
    record_modes(
        "mul_mat | I2_S (TQ2_0 transcode, * scale)",
        |_| avx2_dot_limit(FMT_TQ2_0),
        &ours,
        &g.compute(out, &[(wt, &tq), (xt, &xb), (st, &sb)], &MODES),
    );
}

fn mul_mat_cases(f: Fmt, cases: u32) {
    let strategy = (
        dot_weight_kind(),
        finite_kind(),
        any::<u64>(),
        0usize..1000,
        0..MUL_MAT_ROWS.len(),
        0..MUL_MAT_TOKENS.len(),
    );
    parity_support::run(cases, strategy, |(wk, ak, seed, units, mi, ni)| {
        check_mul_mat(f, wk, ak, seed, units, mi, ni)
    });
}

#[test]
fn mul_mat_f32() {
    mul_mat_cases(FMT_F32, 48);
}

#[test]
fn mul_mat_f16() {
    mul_mat_cases(FMT_F16, 48);
}

#[test]
fn mul_mat_bf16() {
    mul_mat_cases(FMT_BF16, 48);
}

#[test]
fn mul_mat_q8_0() {
    mul_mat_cases(FMT_Q8_0, 48);
}

#[test]
fn mul_mat_q6_k() {
    mul_mat_cases(FMT_Q6_K, 48);
}

#[test]
fn mul_mat_tq1_0() {
    mul_mat_cases(FMT_TQ1_0, 48);
}

#[test]
fn mul_mat_tq2_0() {
    mul_mat_cases(FMT_TQ2_0, 48);
}

#[test]
fn mul_mat_i2_s() {
    let strategy = (
        finite_kind(),
        any::<u64>(),
        1usize..=3,
        0..MUL_MAT_ROWS.len(),
        0..MUL_MAT_TOKENS.len(),
        0.001f32..4.0,
    );
    parity_support::run(32, strategy, |(ak, seed, blocks, mi, ni, scale)| {
        check_mul_mat_i2_s(ak, seed, blocks, mi, ni, scale)
    });
}

// ---------------------------------------------------------------------------------------------
// The other ops of the forward pass
// ---------------------------------------------------------------------------------------------

/// Row widths of the elementwise and norm cases: SIMD multiples, odd tails, model widths.
const WIDTHS: [usize; 6] = [1, 7, 64, 100, 256, 2560];

/// RMSNorm alone and followed by the weight multiply (which optimized mode fuses into
/// `ggml_compute_forward_rms_norm_mul_fused`: `x * scale * w`, the same two roundings), against
/// `ops::rms_norm` + `ops::mul_weight`. Bit-exact: f32 squares summed in f64, `(float)(sum/n)`,
/// `1.0f/sqrtf(mean + eps)`, f32 multiplies, the same IEEE operations in the same order.
#[test]
fn rms_norm() {
    let strategy = (
        finite_kind(),
        any::<u64>(),
        0..WIDTHS.len(),
        1usize..=3,
        proptest::sample::select(vec![1e-5f32, 1e-6]),
    );
    parity_support::run(64, strategy, |(kind, seed, wi, rows, eps)| {
        let d = WIDTHS[wi];
        let x = make_row(kind, seed, d * rows);
        let w = make_row(Kind::Bell, seed ^ 7, d);
        let mut norm = x.clone();
        norm.chunks_exact_mut(d).for_each(|r| ops::rms_norm(r, eps));
        let mut normw = norm.clone();
        normw
            .chunks_exact_mut(d)
            .for_each(|r| ops::mul_weight(r, &w));

        let g = OpGraph::new();
        let xt = g.tensor(F32, &[d as i64, rows as i64]);
        let out = g.rms_norm(xt, eps);
        let xb = bytes_f32(&x);
        record_modes(
            "rms_norm | F32",
            |_| Limit::Exact,
            &norm,
            &g.compute(out, &[(xt, &xb)], &MODES),
        );

        let g = OpGraph::new();
        let xt = g.tensor(F32, &[d as i64, rows as i64]);
        let wt = g.tensor(F32, &[d as i64]);
        let n = g.rms_norm(xt, eps);
        let out = g.mul(n, wt);
        let wb = bytes_f32(&w);
        record_modes(
            "rms_norm + mul(weight) | F32",
            |_| Limit::Exact,
            &normw,
            &g.compute(out, &[(xt, &xb), (wt, &wb)], &MODES),
        );
    });
}

/// ggml's `rotate_pairs` is compiled with FMA contraction here (`vfmsub231ss`/`vfmadd132ss` in
/// `ggml_compute_forward_rope_flt<float>`): `x0*cos - x1*sin` rounds one product instead of
/// two. Ours rounds both, as the source reads; the cos/sin table (`powf`, iterative f32 theta,
/// `cosf`/`sinf` of glibc) is the same. One rounding of at most 2^-24 relative per output, so
/// NMSE <= 2^-48 ~ 4e-15 per element in the worst case; limit 1e-12.
const ROPE_LIMIT: Limit = Limit::Nmse(1e-12);

/// RoPE, NEOX (mode 2, the BitNet models) and NORM (mode 0), head dims 64 and 128, rotating all
/// dims or half of them (the rest must pass through), bases 10000 and 500000, positions 0, 1,
/// 17, 4095 and one random, 1 to 3 heads.
#[test]
fn rope() {
    let strategy = (
        finite_kind(),
        any::<u64>(),
        proptest::sample::select(vec![64usize, 128]),
        proptest::bool::ANY,
        proptest::sample::select(vec![0i32, 2]),
        proptest::sample::select(vec![10000f32, 500000.0]),
        1usize..=3,
        0i32..4096,
    );
    parity_support::run(
        96,
        strategy,
        |(kind, seed, hd, half, mode, base, heads, extra)| {
            let n_dims = if half { hd / 2 } else { hd };
            let pos = [0i32, 1, 17, 4095, extra];
            let x = make_row(kind, seed, hd * heads * pos.len());
            let mut ours = x.clone();
            let mut cache = Vec::new();
            for (t, tok) in ours.chunks_exact_mut(hd * heads).enumerate() {
                ops::rope_cache(pos[t] as usize, n_dims, base, &mut cache);
                for head in tok.chunks_exact_mut(hd) {
                    if mode == 2 {
                        ops::rope_neox(head, &cache);
                    } else {
                        ops::rope_norm(head, &cache);
                    }
                }
            }
            let g = OpGraph::new();
            let xt = g.tensor(F32, &[hd as i64, heads as i64, pos.len() as i64]);
            let pt = g.tensor(sys::GGML_TYPE_I32, &[pos.len() as i64]);
            let out = g.rope_ext(xt, pt, n_dims as i32, mode, base);
            let (xb, pb) = (bytes_f32(&x), bytes_i32(&pos));
            let name = if mode == 2 { "NEOX" } else { "NORM" };
            record_modes(
                &format!("rope {name} | F32"),
                |_| ROPE_LIMIT,
                &ours,
                &g.compute(out, &[(xt, &xb), (pt, &pb)], &MODES),
            );
        },
    );
}

/// Softmax with a causal mask and a scale (`ggml_soft_max_ext`, max_bias 0) against
/// `ops::softmax_scaled` over the unmasked prefix of each row (the engine never scores masked
/// positions; ggml's are exp(-inf) = 0). ggml computes 8 lanes at a time with `ggml_v_expf`
/// (its own polynomial exp, within ~1.5 ulp of expf) and adds each 8-lane group in f32 before
/// the f64 sum; ours uses expf and sums every value in f64. Per-element relative difference of
/// a few 2^-24, so NMSE ~1e-14; limit 1e-12.
const SOFTMAX_LIMIT: Limit = Limit::Nmse(1e-12);

#[test]
fn soft_max_causal() {
    let strategy = (
        finite_kind(),
        any::<u64>(),
        proptest::sample::select(vec![1usize, 5, 8, 13, 64, 100]),
        1usize..=4,
        1usize..=3,
        proptest::sample::select(vec![0.125f32, 0.088_388_35, 1.0]),
    );
    parity_support::run(96, strategy, |(kind, seed, n_kv, nq, heads, scale)| {
        let n_q = nq.min(n_kv);
        let kq = make_row(kind, seed, n_kv * n_q * heads);
        let mut mask = vec![0f32; n_kv * n_q];
        let mut ours = kq.clone();
        for (i, row) in mask.chunks_exact_mut(n_kv).enumerate() {
            let p = n_kv - n_q + i;
            row[p + 1..].fill(f32::NEG_INFINITY);
        }
        for (ri, row) in ours.chunks_exact_mut(n_kv).enumerate() {
            let p = n_kv - n_q + ri % n_q;
            ops::softmax_scaled(&mut row[..=p], scale);
            row[p + 1..].fill(0.0);
        }
        let g = OpGraph::new();
        let at = g.tensor(F32, &[n_kv as i64, n_q as i64, heads as i64]);
        let mt = g.tensor(F32, &[n_kv as i64, n_q as i64]);
        let out = g.soft_max_ext(at, mt, scale);
        let (ab, mb) = (bytes_f32(&kq), bytes_f32(&mask));
        record_modes(
            "soft_max_ext causal | F32",
            |_| SOFTMAX_LIMIT,
            &ours,
            &g.compute(out, &[(at, &ab), (mt, &mb)], &MODES),
        );
    });
}

/// `ggml_silu` runs `ggml_v_silu` on 8 lanes (`x / (1 + ggml_v_expf(-x))`) and the scalar
/// `ggml_silu_f32` on the tail; ours is the scalar form everywhere. The difference is the exp's
/// (see SOFTMAX_LIMIT); limit 1e-12.
const SILU_LIMIT: Limit = Limit::Nmse(1e-12);

/// SiLU, ReLU then square, the weight multiply (broadcast over rows, and same-shape as in
/// `silu(gate) * up`), and the residual add, elementwise against the engine's functions.
#[test]
fn elementwise() {
    let strategy = (finite_kind(), any::<u64>(), 0..WIDTHS.len(), 1usize..=3);
    parity_support::run(64, strategy, |(kind, seed, wi, rows)| {
        let d = WIDTHS[wi];
        let n = d * rows;
        let a = make_row(kind, seed, n);
        let b = make_row(Kind::Bell, seed ^ 3, n);
        let w = make_row(Kind::Uniform, seed ^ 5, d);
        let (ab, bb, wb) = (bytes_f32(&a), bytes_f32(&b), bytes_f32(&w));
        let shape = [d as i64, rows as i64];

        let ours: Vec<f32> = a.iter().map(|&v| ops::silu(v)).collect();
        let g = OpGraph::new();
        let at = g.tensor(F32, &shape);
        let out = g.silu(at);
        record_modes(
            "silu | F32",
            |_| SILU_LIMIT,
            &ours,
            &g.compute(out, &[(at, &ab)], &MODES),
        );

        // max(x, 0) and x * x: one IEEE operation each, bit-exact.
        let ours: Vec<f32> = a.iter().map(|&v| ops::relu_sqr(v)).collect();
        let g = OpGraph::new();
        let at = g.tensor(F32, &shape);
        let re = g.relu(at);
        let out = g.sqr(re);
        record_modes(
            "relu + sqr | F32",
            |_| Limit::Exact,
            &ours,
            &g.compute(out, &[(at, &ab)], &MODES),
        );

        let mut ours = a.clone();
        ours.chunks_exact_mut(d)
            .for_each(|r| ops::mul_weight(r, &w));
        let g = OpGraph::new();
        let at = g.tensor(F32, &shape);
        let wt = g.tensor(F32, &[d as i64]);
        let out = g.mul(at, wt);
        record_modes(
            "mul (broadcast row) | F32",
            |_| Limit::Exact,
            &ours,
            &g.compute(out, &[(at, &ab), (wt, &wb)], &MODES),
        );

        let mut ours = a.clone();
        ops::mul_weight(&mut ours, &b);
        let g = OpGraph::new();
        let at = g.tensor(F32, &shape);
        let bt = g.tensor(F32, &shape);
        let out = g.mul(at, bt);
        record_modes(
            "mul (same shape) | F32",
            |_| Limit::Exact,
            &ours,
            &g.compute(out, &[(at, &ab), (bt, &bb)], &MODES),
        );

        let ours = ops::add(&a, &b);
        let g = OpGraph::new();
        let at = g.tensor(F32, &shape);
        let bt = g.tensor(F32, &shape);
        let out = g.add(at, bt);
        record_modes(
            "add | F32",
            |_| Limit::Exact,
            &ours,
            &g.compute(out, &[(at, &ab), (bt, &bb)], &MODES),
        );
    });
}
