//! The non-matmul ops of the forward pass, each mirroring the ggml CPU op it stands for.

/// `ggml_compute_forward_rms_norm_f32`: f32 squares summed in f64, `mean = (float)(sum/n)`,
/// `scale = 1/sqrtf(mean + eps)`, `y = x * scale`. The weight is a separate multiply
/// ([`mul_weight`]), as in llama.cpp's `build_norm`.
pub fn rms_norm(x: &mut [f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0f32 / (mean + eps).sqrt();
    for v in x {
        *v *= scale;
    }
}

/// Element-wise multiply by a weight vector (`ggml_mul` with broadcasting over rows).
pub fn mul_weight(x: &mut [f32], w: &[f32]) {
    for (v, &g) in x.iter_mut().zip(w) {
        *v *= g;
    }
}

/// The RoPE cos/sin table of one position (`ggml_rope_cache_init` with freq_scale 1,
/// ext_factor 0, attn_factor 1): `theta` starts at the position and is multiplied by
/// `theta_scale = powf(base, -2/n_rot)` in f32 after each pair.
pub fn rope_cache(pos: usize, n_rot: usize, freq_base: f32, cache: &mut Vec<(f32, f32)>) {
    let theta_scale = freq_base.powf(-2.0f32 / n_rot as f32);
    let mut theta = pos as f32;
    cache.clear();
    for _ in (0..n_rot).step_by(2) {
        cache.push((theta.cos(), theta.sin()));
        theta *= theta_scale;
    }
}

/// NEOX rotation of one head vector in place (`rotate_pairs` with `n_offset = n_dims/2` in
/// ggml's `ggml_compute_forward_rope_flt`): pairs `(x[i], x[i + n_rot/2])`; dims past `n_rot`
/// stay as they are.
pub fn rope_neox(head: &mut [f32], cache: &[(f32, f32)]) {
    let half = cache.len();
    for (i, &(cos, sin)) in cache.iter().enumerate() {
        let (x0, x1) = (head[i], head[i + half]);
        head[i] = x0 * cos - x1 * sin;
        head[i + half] = x0 * sin + x1 * cos;
    }
}

/// NORM rotation (`GGML_ROPE_TYPE_NORMAL`, `rotate_pairs` with `n_offset = 1` in ggml's
/// `ggml_compute_forward_rope_flt`): adjacent pairs `(x[2i], x[2i + 1])`; dims past `n_rot`
/// stay as they are. The BitNet architectures use NEOX; this is the LLaMA-style mode, kept
/// beside it so both of ggml's ordinary RoPE modes are checked against ggml.
pub fn rope_norm(head: &mut [f32], cache: &[(f32, f32)]) {
    for (i, &(cos, sin)) in cache.iter().enumerate() {
        let (x0, x1) = (head[2 * i], head[2 * i + 1]);
        head[2 * i] = x0 * cos - x1 * sin;
        head[2 * i + 1] = x0 * sin + x1 * cos;
    }
}

/// `ggml_add` of two tensors of the same shape (the residual connections): `a[i] + b[i]`.
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    debug_assert_eq!(
        a.len(),
        b.len(),
        "add of {} and {} values",
        a.len(),
        b.len()
    );
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// `ggml_silu_f32`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `ggml_relu` then `ggml_sqr`.
#[inline]
pub fn relu_sqr(x: f32) -> f32 {
    let r = if x > 0.0 { x } else { 0.0 };
    r * r
}

/// `ggml_compute_forward_soft_max_f32` on one row of scores that already excludes masked
/// positions: scale, subtract the max, `expf`, sum in f64, multiply by `(float)(1/sum)`.
pub fn softmax_scaled(scores: &mut [f32], scale: f32) {
    let mut max = f32::NEG_INFINITY;
    for s in scores.iter_mut() {
        *s *= scale;
        max = max.max(*s);
    }
    let mut sum = 0f64;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s as f64;
    }
    let inv = (1.0 / sum) as f32;
    for s in scores.iter_mut() {
        *s *= inv;
    }
}

/// The f32 profile's softmax: everything in f64, rounded once.
pub fn softmax_scaled_f64(scores: &mut [f32], scale: f32) {
    let scaled: Vec<f64> = scores.iter().map(|&s| s as f64 * scale as f64).collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scaled.iter().map(|&s| (s - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    for (s, e) in scores.iter_mut().zip(exps) {
        *s = (e / sum) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_f64() {
        let mut x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let want: Vec<f64> = {
            let ms: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / 256.0;
            x.iter().map(|&v| v as f64 / (ms + 1e-5).sqrt()).collect()
        };
        rms_norm(&mut x, 1e-5);
        for (a, b) in x.iter().zip(want) {
            assert!(
                (*a as f64 - b).abs() < 1e-5 * b.abs().max(1.0),
                "{a} vs {b}"
            );
        }
    }

    #[test]
    fn rope_rotates_pairs_by_position_angle() {
        let n_rot = 8;
        let mut cache = Vec::new();
        rope_cache(3, n_rot, 10000.0, &mut cache);
        let mut head: Vec<f32> = (0..n_rot + 2).map(|i| i as f32 + 1.0).collect();
        let orig = head.clone();
        rope_neox(&mut head, &cache);
        for i in 0..n_rot / 2 {
            let theta = 3.0f64 * 10000f64.powf(-2.0 * i as f64 / n_rot as f64);
            let (x0, x1) = (orig[i] as f64, orig[i + n_rot / 2] as f64);
            let want0 = x0 * theta.cos() - x1 * theta.sin();
            let want1 = x0 * theta.sin() + x1 * theta.cos();
            assert!(
                (head[i] as f64 - want0).abs() < 1e-4,
                "{} vs {want0}",
                head[i]
            );
            assert!((head[i + n_rot / 2] as f64 - want1).abs() < 1e-4);
        }
        assert_eq!(
            &head[n_rot..],
            &orig[n_rot..],
            "dims past n_rot are untouched"
        );
    }

    #[test]
    fn softmax_sums_to_one_and_matches_f64() {
        let mut a = vec![1.0f32, 2.0, 3.0, -1.0, 0.5];
        let mut b = a.clone();
        softmax_scaled(&mut a, 0.5);
        softmax_scaled_f64(&mut b, 0.5);
        let s: f32 = a.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn activations() {
        assert_eq!(relu_sqr(-2.0), 0.0);
        assert_eq!(relu_sqr(3.0), 9.0);
        let x = 0.7f32;
        let want = 0.7f64 / (1.0 + (-0.7f64).exp());
        assert!((silu(x) as f64 - want).abs() < 1e-6);
    }
}
