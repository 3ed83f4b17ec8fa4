//! The BitNet forward graph from ggml ops, op for op as llama.cpp builds it for `bitnet`
//! (`llama_model_bitnet::graph` in src/models/bitnet.cpp with `build_norm`, `build_qkv`,
//! `build_attn` / `build_attn_mha`, `build_ffn` of src/llama-graph.cpp and the KV cache's
//! `cpy_k` / `cpy_v` / `get_k` / `get_v` of src/llama-kv-cache.cpp), names included, so that
//! on `bitnet` files it computes what llama.cpp computes and its taps line up by name. The one
//! deliberate difference is the feed-forward activation: ReLU^2 for `bitnet-b1.58`
//! (`LLM_FFN_RELU_SQR` with parallel gating, as bitnet.cpp's `build_bitnet_158`).

use llama_cpp_sys_2 as sys;

use super::weights::{Activation, Layer, Linear, Weights};
use crate::error::Result;
use crate::ggml_rt::{self, Context, Graph, Tensor};

/// `LLAMA_ROPE_TYPE_NEOX` (`GGML_ROPE_TYPE_NEOX`): llama.cpp's rope type for `bitnet`.
const ROPE_NEOX: i32 = 2;

/// The K/V cache: one K and one (transposed) V tensor per layer, `kv_size` cells each.
pub(super) struct KvCache {
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub kv_size: i64,
    _buffer: ggml_rt::Buffer,
    _ctx: Context,
}

impl KvCache {
    /// `kv_size` cells of element type `ty` per layer, zero-filled.
    pub(super) fn new(
        w: &Weights,
        kv_size: i64,
        ty: sys::ggml_type,
        backend: &ggml_rt::CpuBackend,
    ) -> Result<KvCache> {
        let n_layer = w.hp.n_layer;
        let ctx = Context::new(2 * n_layer, 0)?;
        let (mut k, mut v) = (Vec::with_capacity(n_layer), Vec::with_capacity(n_layer));
        for il in 0..n_layer {
            // SAFETY: live context with room for 2 * n_layer descriptors.
            unsafe {
                // llama.cpp: ggml_new_tensor_3d(ctx, type, n_embd_k_gqa, kv_size, n_stream = 1)
                let kt = sys::ggml_new_tensor_2d(ctx.ptr(), ty, w.hp.n_embd_kv(), kv_size);
                let vt = sys::ggml_new_tensor_2d(ctx.ptr(), ty, w.hp.n_embd_kv(), kv_size);
                ggml_rt::set_name(kt, &format!("cache_k_l{il}"));
                ggml_rt::set_name(vt, &format!("cache_v_l{il}"));
                k.push(kt);
                v.push(vt);
            }
        }
        let buffer = ggml_rt::Buffer::alloc_ctx_tensors(&ctx, backend)?;
        Ok(KvCache {
            k,
            v,
            kv_size,
            _buffer: buffer,
            _ctx: ctx,
        })
    }
}

/// The input tensors of one evaluation, to be filled after allocation.
pub(super) struct Inputs {
    pub tokens: Tensor,
    pub pos: Tensor,
    pub mask: Tensor,
    pub k_idxs: Tensor,
    pub v_idxs: Tensor,
    pub out_ids: Tensor,
    pub logits: Tensor,
}

/// How many nodes a graph of `n_layer` layers needs at most (about 45 per layer).
pub(super) fn max_nodes(n_layer: usize) -> usize {
    128 * n_layer + 512
}

/// Builder state: the context graph tensors go into, and `cb` naming as llama.cpp's
/// `graph_get_cb` does it (`name-il` for layers, bare `name` for il < 0).
struct B<'a> {
    ctx: &'a Context,
    w: &'a Weights,
}

impl B<'_> {
    fn c(&self) -> *mut sys::ggml_context {
        self.ctx.ptr()
    }

    fn cb(&self, t: Tensor, name: &str, il: i32) {
        let full = if il >= 0 {
            format!("{name}-{il}")
        } else {
            name.to_string()
        };
        // SAFETY: `t` is a tensor of our live context.
        unsafe { ggml_rt::set_name(t, &full) };
    }

    /// `build_norm(cur, mw, NULL, LLM_NORM_RMS, il)`.
    unsafe fn norm(&self, cur: Tensor, mw: Tensor, il: i32) -> Tensor {
        // SAFETY (caller): tensors of live contexts.
        unsafe {
            let cur = sys::ggml_rms_norm(self.c(), cur, self.w.hp.rms_eps);
            self.cb(cur, "norm", il);
            sys::ggml_mul(self.c(), cur, mw)
        }
    }

    /// `build_lora_mm(w, cur, w_s)`: the product, times the scale when there is one.
    unsafe fn mm(&self, l: &Linear, cur: Tensor) -> Tensor {
        // SAFETY (caller): tensors of live contexts.
        unsafe {
            let res = sys::ggml_mul_mat(self.c(), l.w, cur);
            match l.s {
                Some(s) => sys::ggml_mul(self.c(), res, s),
                None => res,
            }
        }
    }
}

/// Build the graph for `n_tokens` positions starting at `start`, attending over `n_kv` cache
/// cells, into `gf`.
pub(super) fn build(
    ctx: &Context,
    gf: &mut Graph<'_>,
    w: &Weights,
    kv: &KvCache,
    n_tokens: i64,
    n_kv: i64,
) -> Result<Inputs> {
    let b = B { ctx, w };
    let hp = &w.hp;
    let c = ctx.ptr();
    // SAFETY: every tensor below is created in `ctx` or is a weight / cache tensor of a live
    // context; ggml checks shapes and aborts on a mismatch, which the weight shape checks at
    // load time rule out.
    unsafe {
        // build_inp_embd
        let tokens = sys::ggml_new_tensor_1d(c, sys::GGML_TYPE_I32, n_tokens);
        b.cb(tokens, "inp_tokens", -1);
        sys::ggml_set_input(tokens);
        let mut inp_l = sys::ggml_get_rows(c, w.tok_embd, tokens);
        b.cb(inp_l, "embd", -1);

        // build_inp_pos, build_attn_inp_kv (mask and cache indices), build_inp_out_ids
        let pos = sys::ggml_new_tensor_1d(c, sys::GGML_TYPE_I32, n_tokens);
        b.cb(pos, "inp_pos", -1);
        sys::ggml_set_input(pos);
        let k_idxs = sys::ggml_new_tensor_1d(c, sys::GGML_TYPE_I64, n_tokens);
        sys::ggml_set_input(k_idxs);
        b.cb(k_idxs, "attn_inp_k_idxs", -1);
        let v_idxs = sys::ggml_new_tensor_1d(c, sys::GGML_TYPE_I64, n_tokens * hp.n_embd_kv());
        sys::ggml_set_input(v_idxs);
        b.cb(v_idxs, "attn_inp_v_idxs", -1);
        let mask = sys::ggml_new_tensor_4d(c, sys::GGML_TYPE_F32, n_kv, n_tokens, 1, 1);
        sys::ggml_set_input(mask);
        b.cb(mask, "attn_inp_kq_mask", -1);
        let out_ids = sys::ggml_new_tensor_1d(c, sys::GGML_TYPE_I32, n_tokens);
        sys::ggml_set_input(out_ids);
        b.cb(out_ids, "out_ids", -1);

        let kq_scale = 1.0f32 / (hp.head_dim as f32).sqrt();
        for (il, layer) in w.layers.iter().enumerate() {
            let il = il as i32;
            let mut inp_sa = inp_l;
            let cur = b.norm(inp_l, layer.attn_norm, il);
            b.cb(cur, "attn_norm", il);

            let cur = attention(
                &b, gf, kv, layer, cur, pos, mask, k_idxs, v_idxs, n_kv, kq_scale, il,
            )?;

            let cur = b.norm(cur, layer.attn_sub_norm, il);
            b.cb(cur, "attn_sub_norm", il);
            let mut cur = b.mm(&layer.wo, cur);
            b.cb(cur, "attn_out", il);

            if il as usize == hp.n_layer - 1 {
                cur = sys::ggml_get_rows(c, cur, out_ids);
                inp_sa = sys::ggml_get_rows(c, inp_sa, out_ids);
            }
            let ffn_inp = sys::ggml_add(c, cur, inp_sa);
            b.cb(ffn_inp, "ffn_inp", il);

            let cur = b.norm(ffn_inp, layer.ffn_norm, il);
            b.cb(cur, "ffn_norm", il);
            let cur = ffn(&b, layer, cur, il);
            b.cb(cur, "ffn_sub_out", il);
            let cur = b.norm(cur, layer.ffn_sub_norm, il);
            b.cb(cur, "ffn_sub_norm", il);
            let cur = b.mm(&layer.ffn_down, cur);
            b.cb(cur, "ffn_down", il);
            let cur = sys::ggml_add(c, cur, ffn_inp);
            b.cb(cur, "l_out", il);
            inp_l = cur;
        }

        let cur = b.norm(inp_l, w.output_norm, -1);
        b.cb(cur, "result_norm", -1);
        let logits = sys::ggml_mul_mat(c, w.output, cur);
        b.cb(logits, "result_output", -1);
        gf.expand(logits);

        Ok(Inputs {
            tokens,
            pos,
            mask,
            k_idxs,
            v_idxs,
            out_ids,
            logits,
        })
    }
}

/// Q/K/V, RoPE, the cache writes and reads, and `build_attn_mha` without flash attention.
#[allow(clippy::too_many_arguments)]
unsafe fn attention(
    b: &B<'_>,
    gf: &mut Graph<'_>,
    kv: &KvCache,
    layer: &Layer,
    cur: Tensor,
    pos: Tensor,
    mask: Tensor,
    k_idxs: Tensor,
    v_idxs: Tensor,
    n_kv: i64,
    kq_scale: f32,
    il: i32,
) -> Result<Tensor> {
    let hp = &b.w.hp;
    let c = b.c();
    let n_embd_kv = hp.n_embd_kv();
    // SAFETY (caller): tensors of live contexts.
    unsafe {
        let n_tokens = (*cur).ne[1];
        // build_qkv, separate projections: each named after the (scaled) product, after the
        // reshape, and after RoPE, as llama.cpp names them.
        let q = b.mm(&layer.wq, cur);
        b.cb(q, "Qcur", il);
        let k = b.mm(&layer.wk, cur);
        b.cb(k, "Kcur", il);
        let v = b.mm(&layer.wv, cur);
        b.cb(v, "Vcur", il);
        let q = sys::ggml_reshape_3d(c, q, hp.head_dim, hp.n_head, n_tokens);
        let k = sys::ggml_reshape_3d(c, k, hp.head_dim, hp.n_head_kv, n_tokens);
        let v = sys::ggml_reshape_3d(c, v, hp.head_dim, hp.n_head_kv, n_tokens);
        b.cb(q, "Qcur", il);
        b.cb(k, "Kcur", il);
        b.cb(v, "Vcur", il);

        // llama.cpp: n_ctx_orig = n_ctx_train, freq_scale 1, ext_factor 0 (no YaRN),
        // attn_factor 1, beta_fast 32, beta_slow 1.
        let rope = |t: Tensor| {
            sys::ggml_rope_ext(
                c,
                t,
                pos,
                std::ptr::null_mut(),
                hp.n_rot as i32,
                ROPE_NEOX,
                hp.n_ctx_train as i32,
                hp.freq_base,
                1.0,
                0.0,
                1.0,
                32.0,
                1.0,
            )
        };
        let q = rope(q);
        let k = rope(k);
        b.cb(q, "Qcur", il);
        b.cb(k, "Kcur", il);
        b.cb(v, "Vcur", il);

        // build_attn: keep q, v, k in this order ahead of the cache writes.
        gf.expand(q);
        gf.expand(v);
        gf.expand(k);

        let l = il as usize;
        // cpy_k: rows of the K cache at the token's cells.
        let k_cur = sys::ggml_view_2d(c, k, n_embd_kv, n_tokens, (*k).nb[2], 0);
        gf.expand(sys::ggml_set_rows(c, kv.k[l], k_cur, k_idxs));
        // cpy_v, transposed cache: every element is its own row (v_idxs = dim * kv_size + cell).
        let v_cur = sys::ggml_reshape_2d(c, v, n_embd_kv, n_tokens);
        let v_view = sys::ggml_reshape_2d(c, kv.v[l], 1, sys::ggml_nelements(kv.v[l]));
        let v_cur = sys::ggml_reshape_2d(c, v_cur, 1, sys::ggml_nelements(v_cur));
        gf.expand(sys::ggml_set_rows(c, v_view, v_cur, v_idxs));

        // get_k / get_v
        let kt = kv.k[l];
        let ksz = |n: i64| sys::ggml_row_size((*kt).type_, n);
        let kview = sys::ggml_view_4d(
            c,
            kt,
            hp.head_dim,
            hp.n_head_kv,
            n_kv,
            1,
            ksz(hp.head_dim),
            ksz(n_embd_kv),
            ksz(n_embd_kv * kv.kv_size),
            0,
        );
        let vt = kv.v[l];
        let vsz = |n: i64| sys::ggml_row_size((*vt).type_, n);
        let vview = sys::ggml_view_4d(
            c,
            vt,
            n_kv,
            hp.n_head_kv,
            hp.head_dim,
            1,
            vsz(kv.kv_size * hp.head_dim),
            vsz(kv.kv_size),
            vsz(kv.kv_size * n_embd_kv),
            0,
        );

        // build_attn_mha (one stream, no flash attention, no sinks, no alibi).
        let q = sys::ggml_view_4d(
            c,
            q,
            (*q).ne[0],
            (*q).ne[1],
            (*q).ne[2],
            1,
            (*q).nb[1],
            (*q).nb[2],
            (*q).nb[2] * (*q).ne[2] as usize,
            0,
        );
        let q = sys::ggml_permute(c, q, 0, 2, 1, 3);
        let kp = sys::ggml_permute(c, kview, 0, 2, 1, 3);
        let vp = sys::ggml_permute(c, vview, 0, 2, 1, 3);
        let kq = sys::ggml_mul_mat(c, kp, q);
        b.cb(kq, "kq", il);
        let kq = sys::ggml_soft_max_ext(c, kq, mask, kq_scale, 0.0);
        b.cb(kq, "kq_soft_max", il);
        let kqv = sys::ggml_mul_mat(c, vp, kq);
        b.cb(kqv, "kqv", il);
        let cur = sys::ggml_permute(c, kqv, 0, 2, 1, 3);
        let cur = sys::ggml_cont_2d(
            c,
            cur,
            (*cur).ne[0] * (*cur).ne[1],
            (*cur).ne[2] * (*cur).ne[3],
        );
        b.cb(cur, "kqv_out", il);
        Ok(cur)
    }
}

/// `build_ffn(cur, up, NULL, up_s, gate, NULL, gate_s, NULL.., type_op, LLM_FFN_PAR, il)`.
unsafe fn ffn(b: &B<'_>, layer: &Layer, cur: Tensor, il: i32) -> Tensor {
    let c = b.c();
    // SAFETY (caller): tensors of live contexts.
    unsafe {
        let mut tmp = sys::ggml_mul_mat(c, layer.ffn_up.w, cur);
        b.cb(tmp, "ffn_up", il);
        if let Some(s) = layer.ffn_up.s {
            tmp = sys::ggml_mul(c, tmp, s);
            b.cb(tmp, "ffn_up_s", il);
        }
        let mut g = sys::ggml_mul_mat(c, layer.ffn_gate.w, cur);
        b.cb(g, "ffn_gate", il);
        if let Some(s) = layer.ffn_gate.s {
            g = sys::ggml_mul(c, g, s);
            b.cb(g, "ffn_gate_s", il);
        }
        match b.w.hp.activation {
            Activation::Silu => {
                let out = sys::ggml_swiglu_split(c, g, tmp);
                b.cb(out, "ffn_swiglu", il);
                out
            }
            Activation::ReluSqr => {
                let r = sys::ggml_relu(c, g);
                b.cb(r, "ffn_relu", il);
                let r = sys::ggml_sqr(c, r);
                b.cb(r, "ffn_sqr(relu)", il);
                let out = sys::ggml_mul(c, r, tmp);
                b.cb(out, "ffn_gate_par", il);
                out
            }
        }
    }
}
