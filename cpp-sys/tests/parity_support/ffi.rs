//! ggml's per-type function tables, called directly: the reference codecs of ggml-base
//! (`ggml_get_type_traits`, `ggml_quantize_chunk`) and the CPU backend's kernels
//! (`ggml_get_type_traits_cpu`: the activation quantizer `from_float` and `vec_dot`, the SIMD
//! ones in this x86-64-v3 build), plus the scalar `_generic` kernels, which are non-static
//! symbols of the static libggml-cpu.a that bindgen does not see.

use std::ffi::c_void;
use std::sync::Once;

use llama_cpp_sys_2 as sys;

/// The ggml type ids the parity tests use.
pub const F32: sys::ggml_type = sys::GGML_TYPE_F32;
pub const F16: sys::ggml_type = sys::GGML_TYPE_F16;
pub const BF16: sys::ggml_type = sys::GGML_TYPE_BF16;
pub const Q8_0: sys::ggml_type = sys::GGML_TYPE_Q8_0;
pub const Q6_K: sys::ggml_type = sys::GGML_TYPE_Q6_K;
pub const Q8_K: sys::ggml_type = sys::GGML_TYPE_Q8_K;
pub const TQ1_0: sys::ggml_type = sys::GGML_TYPE_TQ1_0;
pub const TQ2_0: sys::ggml_type = sys::GGML_TYPE_TQ2_0;

/// Bytes of one `block_q8_K`: f32 d, 256 i8, 16 i16 block sums.
pub const Q8_K_BLOCK_BYTES: usize = 4 + 256 + 32;

// The scalar tier of ggml-cpu/quants.c. Same signature as `ggml_vec_dot_t`; the x86 SIMD
// versions fall back to these only when AVX2 is off, so they are reachable only by name.
unsafe extern "C" {
    fn ggml_vec_dot_q8_0_q8_0_generic(
        n: i32,
        s: *mut f32,
        bs: usize,
        vx: *const c_void,
        bx: usize,
        vy: *const c_void,
        by: usize,
        nrc: i32,
    );
    fn ggml_vec_dot_tq1_0_q8_K_generic(
        n: i32,
        s: *mut f32,
        bs: usize,
        vx: *const c_void,
        bx: usize,
        vy: *const c_void,
        by: usize,
        nrc: i32,
    );
    fn ggml_vec_dot_tq2_0_q8_K_generic(
        n: i32,
        s: *mut f32,
        bs: usize,
        vx: *const c_void,
        bx: usize,
        vy: *const c_void,
        by: usize,
        nrc: i32,
    );
    fn ggml_vec_dot_q6_K_q8_K_generic(
        n: i32,
        s: *mut f32,
        bs: usize,
        vx: *const c_void,
        bx: usize,
        vy: *const c_void,
        by: usize,
        nrc: i32,
    );
    // ggml-quants.c (ggml-base): the Q8_K reference quantizer, absent from the base traits.
    fn quantize_row_q8_K_ref(x: *const f32, y: *mut c_void, k: i64);
}

/// `ggml_cpu_init` once per process: it fills the CPU backend's f16 tables and feature flags
/// that `from_float` and `vec_dot` read.
pub fn init() {
    static ONCE: Once = Once::new();
    // SAFETY: no arguments; ggml_cpu_init is idempotent and guarded by Once here as well.
    ONCE.call_once(|| unsafe { sys::ggml_cpu_init() });
}

fn traits(ty: sys::ggml_type) -> &'static sys::ggml_type_traits {
    init();
    // SAFETY: ggml returns a pointer into its static, immutable traits table for any valid type.
    unsafe { &*sys::ggml_get_type_traits(ty) }
}

fn cpu_traits(ty: sys::ggml_type) -> &'static sys::ggml_type_traits_cpu {
    init();
    // SAFETY: as above, the CPU backend's static table.
    unsafe { &*sys::ggml_get_type_traits_cpu(ty) }
}

/// Bytes of a row of `n` elements of type `ty` (`ggml_row_size`).
pub fn row_size(ty: sys::ggml_type, n: usize) -> usize {
    // SAFETY: pure arithmetic on the traits table.
    unsafe { sys::ggml_row_size(ty, n as i64) }
}

/// `ggml_quantize_chunk(ty, x, 0, nrows, n_per_row, NULL)`: what llama-quantize writes.
pub fn quantize_chunk(ty: sys::ggml_type, x: &[f32], n_per_row: usize) -> Vec<u8> {
    init();
    assert_eq!(x.len() % n_per_row, 0, "whole rows only");
    let nrows = x.len() / n_per_row;
    let mut out = vec![0u8; nrows * row_size(ty, n_per_row)];
    // SAFETY: `x` holds nrows * n_per_row floats and `out` exactly nrows row_size bytes, which is
    // what ggml_quantize_chunk writes (it asserts that); the types used need no imatrix.
    let written = unsafe {
        sys::ggml_quantize_chunk(
            ty,
            x.as_ptr(),
            out.as_mut_ptr().cast(),
            0,
            nrows as i64,
            n_per_row as i64,
            std::ptr::null(),
        )
    };
    assert_eq!(written, out.len());
    out
}

/// `ggml_get_type_traits(ty)->from_float_ref` (Q8_K: `quantize_row_q8_K_ref`).
pub fn from_float_ref(ty: sys::ggml_type, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; row_size(ty, x.len())];
    if ty == Q8_K {
        // SAFETY: `out` holds x.len()/256 blocks, the function's whole output.
        unsafe { quantize_row_q8_K_ref(x.as_ptr(), out.as_mut_ptr().cast(), x.len() as i64) };
        return out;
    }
    let f = traits(ty)
        .from_float_ref
        .expect("type has a reference quantizer");
    // SAFETY: `out` is sized by ggml_row_size for x.len() elements of `ty`.
    unsafe { f(x.as_ptr(), out.as_mut_ptr().cast(), x.len() as i64) };
    out
}

/// `ggml_get_type_traits_cpu(ty)->from_float`: the CPU backend's (possibly SIMD) quantizer, the
/// one `mul_mat` uses for activations.
pub fn cpu_from_float(ty: sys::ggml_type, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; row_size(ty, x.len())];
    let f = cpu_traits(ty).from_float.expect("type has a CPU quantizer");
    // SAFETY: as in from_float_ref.
    unsafe { f(x.as_ptr(), out.as_mut_ptr().cast(), x.len() as i64) };
    out
}

/// `ggml_get_type_traits(ty)->to_float` (F32 has none: its bytes are the values).
pub fn to_float(ty: sys::ggml_type, bytes: &[u8], n: usize) -> Vec<f32> {
    assert_eq!(bytes.len(), row_size(ty, n), "{n} elements of type {ty}");
    if ty == F32 {
        return bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
    }
    let f = traits(ty).to_float.expect("type has a dequantizer");
    let mut out = vec![0f32; n];
    // SAFETY: `bytes` holds n elements of `ty` (checked above), `out` n floats.
    unsafe { f(bytes.as_ptr().cast(), out.as_mut_ptr(), n as i64) };
    out
}

/// The vec_dot type of weight type `ty` (what activations are quantized to).
pub fn vec_dot_type(ty: sys::ggml_type) -> sys::ggml_type {
    cpu_traits(ty).vec_dot_type
}

/// `ggml_get_type_traits_cpu(ty)->vec_dot` over one row: the CPU backend's optimized kernel.
pub fn vec_dot(ty: sys::ggml_type, n: usize, x: &[u8], y: &[u8]) -> f32 {
    let t = cpu_traits(ty);
    assert_eq!(x.len(), row_size(ty, n));
    assert_eq!(y.len(), row_size(t.vec_dot_type, n));
    let f = t.vec_dot.expect("type has a vec_dot");
    let mut s = 0f32;
    // SAFETY: x and y hold one row of n elements of their types (checked), nrc = 1 (one row,
    // strides unused), s is one float.
    unsafe {
        f(
            n as i32,
            &mut s,
            0,
            x.as_ptr().cast(),
            0,
            y.as_ptr().cast(),
            0,
            1,
        )
    };
    s
}

/// The scalar `_generic` kernel of `ty` (Q8_0, Q6_K, TQ1_0, TQ2_0 only).
pub fn vec_dot_generic(ty: sys::ggml_type, n: usize, x: &[u8], y: &[u8]) -> f32 {
    assert_eq!(x.len(), row_size(ty, n));
    assert_eq!(y.len(), row_size(vec_dot_type(ty), n));
    let f = match ty {
        Q8_0 => ggml_vec_dot_q8_0_q8_0_generic,
        Q6_K => ggml_vec_dot_q6_K_q8_K_generic,
        TQ1_0 => ggml_vec_dot_tq1_0_q8_K_generic,
        TQ2_0 => ggml_vec_dot_tq2_0_q8_K_generic,
        _ => panic!("no _generic vec_dot declared for type {ty}"),
    };
    let mut s = 0f32;
    // SAFETY: as in vec_dot; the generic kernels have the same contract.
    unsafe {
        f(
            n as i32,
            &mut s,
            0,
            x.as_ptr().cast(),
            0,
            y.as_ptr().cast(),
            0,
            1,
        )
    };
    s
}

/// Our `BlockQ8K` in ggml's `block_q8_K` byte layout (d, qs, bsums; little endian).
pub fn q8_k_bytes(blocks: &[xval_engine::quant::q8_k::BlockQ8K]) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * Q8_K_BLOCK_BYTES);
    for b in blocks {
        out.extend_from_slice(&b.d.to_le_bytes());
        out.extend(b.qs.iter().map(|&q| q as u8));
        for s in b.bsums {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    out
}
