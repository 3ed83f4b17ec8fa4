//! Attention's two dot-product loops over the KV cache, with their scalar references: the
//! scores of one query against the cached keys, and the probability-weighted sum of the cached
//! values. Each result element is one sequential sum in the reference's order; the SIMD
//! variants put different elements (key positions for the scores, value dimensions for the
//! sum) in different lanes and keep every lane's order, so they are bit-identical to the
//! reference, not merely close.
//!
//! Layout: the cache's own, position-major; a head's keys and values are rows of `hd` values
//! `stride` apart (the KV width), starting at the head's offset.

use super::Kernel;

/// [`AttnSums`] as a constant parameter of the SIMD kernels' loops.
pub(crate) const SUM_F64: u8 = 0;
pub(crate) const SUM_F32: u8 = 1;
pub(crate) const SUM_EXACT: u8 = 2;

/// How a dot product's terms are formed and summed (the forward pass picks by profile and
/// plan).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnSums {
    /// Each product rounded to f32, summed in f64 (ggml's generic `vec_dot`: the usual case).
    F64,
    /// Each product rounded to f32, summed in f32 (the noise twin's other valid order).
    F32,
    /// Both factors widened to f64, multiplied and summed in f64 (the `f32` profile).
    Exact,
}

/// `out[j] = q . k_j` for the first `out.len()` positions of `k` (position `j`'s `q.len()`
/// values at `j * stride`), each rounded to f32 at the end.
///
/// # Panics
/// If `k` does not hold those positions.
pub fn scores(
    kernel: Kernel,
    sums: AttnSums,
    q: &[f32],
    k: &[f32],
    stride: usize,
    out: &mut [f32],
) {
    check(k, q.len(), stride, out.len());
    // The set's kernel scores the leading positions it can; the reference the rest.
    let done = match kernel {
        // SAFETY: AVX-512 F and AVX2 are present (checked); `k` holds every position of `out`
        // (checked), so from position `j` on it holds the rest.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 | Kernel::Amx if super::x86::has_avx512_vnni() => unsafe {
            let j = super::avx512::attn_scores(sums, q, k, stride, out);
            let rest = k.get(j * stride..).unwrap_or(&[]);
            j + super::x86::attn_scores(sums, q, rest, stride, &mut out[j..])
        },
        // SAFETY: AVX2 is present (checked); `k` holds every position of `out` (checked).
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Avx512 | Kernel::Amx if super::x86::has_avx2() => unsafe {
            super::x86::attn_scores(sums, q, k, stride, out)
        },
        // SAFETY: NEON is present (checked); as above.
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon if super::aarch64::has_neon() => unsafe {
            super::aarch64::attn_scores(sums, q, k, stride, out)
        },
        _ => 0,
    };
    scores_ref(sums, q, k, stride, done, &mut out[done..]);
}

/// That `rows` rows of `width` values, `stride` apart, fit in `v`.
fn check(v: &[f32], width: usize, stride: usize, rows: usize) {
    assert!(
        width <= stride || rows <= 1,
        "rows of {width} values {stride} apart overlap"
    );
    if rows > 0 {
        assert!(
            (rows - 1) * stride + width <= v.len(),
            "{rows} rows of {width} values {stride} apart need more than {} values",
            v.len()
        );
    }
}

/// The reference of [`scores`] for positions `first..first + out.len()` (the SIMD variants
/// hand it their tails).
pub fn scores_ref(
    sums: AttnSums,
    q: &[f32],
    k: &[f32],
    stride: usize,
    first: usize,
    out: &mut [f32],
) {
    for (i, o) in out.iter_mut().enumerate() {
        let key = &k[(first + i) * stride..][..q.len()];
        let terms = q.iter().zip(key);
        // `-0.0` starts the f64 sums, as `Iterator::sum` does (the forward pass summed with it).
        *o = match sums {
            AttnSums::F64 => terms.fold(-0.0f64, |s, (&a, &b)| s + (a * b) as f64) as f32,
            AttnSums::F32 => terms.fold(0f32, |s, (&a, &b)| s + a * b),
            AttnSums::Exact => terms.fold(-0.0f64, |s, (&a, &b)| s + a as f64 * b as f64) as f32,
        };
    }
}

/// `out[d] = sum_j p[j] * v_j[d]` over the first `p.len()` positions of `v` (position `j`'s
/// `out.len()` values at `j * stride`), in position order, each rounded to f32 at the end.
///
/// # Panics
/// If `v` does not hold those positions.
pub fn mix(kernel: Kernel, sums: AttnSums, p: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    check(v, out.len(), stride, p.len());
    // The set's kernel sums the leading dimensions it can; the reference the rest.
    let done = match kernel {
        // SAFETY: AVX-512 F and AVX2 are present (checked); `v` holds `out.len()` dimensions
        // of every position of `p` (checked), so from dimension `d` on it holds the rest.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 | Kernel::Amx if super::x86::has_avx512_vnni() => unsafe {
            let d = super::avx512::attn_mix(sums, p, v, stride, out);
            d + super::x86::attn_mix(sums, p, &v[d..], stride, &mut out[d..])
        },
        // SAFETY: AVX2 is present (checked); `v` holds `out.len()` dimensions of every
        // position of `p` (checked).
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::Avx512 | Kernel::Amx if super::x86::has_avx2() => unsafe {
            super::x86::attn_mix(sums, p, v, stride, out)
        },
        // SAFETY: NEON is present (checked); as above.
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon if super::aarch64::has_neon() => unsafe {
            super::aarch64::attn_mix(sums, p, v, stride, out)
        },
        _ => 0,
    };
    mix_ref(sums, p, v, stride, done, &mut out[done..]);
}

/// The reference of [`mix`] for dimensions `first..first + out.len()`.
pub fn mix_ref(sums: AttnSums, p: &[f32], v: &[f32], stride: usize, first: usize, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        let d = first + i;
        let terms = p.iter().enumerate().map(|(j, &p)| (p, v[j * stride + d]));
        *o = match sums {
            AttnSums::F64 => terms.fold(0f64, |a, (p, v)| a + (p * v) as f64) as f32,
            AttnSums::F32 => terms.fold(0f32, |a, (p, v)| a + p * v),
            AttnSums::Exact => terms.fold(0f64, |a, (p, v)| a + p as f64 * v as f64) as f32,
        };
    }
}
