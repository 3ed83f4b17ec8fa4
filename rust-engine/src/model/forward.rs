//! The forward pass (llama.cpp `llama_model_bitnet::graph`, with the FFN activation chosen by
//! the architecture), capturing taps under llama.cpp's node names.

use std::sync::Arc;

use rayon::prelude::*;

use super::kv_cache::KvCache;
use super::ops;
use super::plan::{jitter_row, op_id, Fault, Plan};
use super::{Activation, Linear, Mat, Model};
use crate::error::{Error, Result};
use crate::numerics::{KvType, Numerics, Profile};
use crate::quant::kernels::{Backend, Kernel};
use crate::quant::matmul::{matmul, matmul_twin, TwinRounding};
use crate::taps::{tap_name, Tap, TapFilter};

/// Runs a model under one numerics setting on a fixed number of threads, optionally with a
/// [`Plan`] of deliberate changes (noise-twin jitter, self-test faults).
pub struct Engine {
    model: Arc<Model>,
    numerics: Numerics,
    threads: usize,
    pool: rayon::ThreadPool,
    plan: Option<Arc<Plan>>,
}

/// The result of evaluating a batch of tokens.
#[derive(Clone, Debug)]
pub struct Forward {
    /// Logits of every evaluated position: `n_tokens * n_vocab`, position-major.
    pub logits: Vec<f32>,
    pub n_vocab: usize,
    pub n_tokens: usize,
    /// Captured taps in graph order.
    pub taps: Vec<Tap>,
}

impl Forward {
    /// Logits of the `t`-th evaluated position.
    pub fn logits_at(&self, t: usize) -> &[f32] {
        &self.logits[t * self.n_vocab..(t + 1) * self.n_vocab]
    }

    /// Logits of the last evaluated position.
    pub fn last_logits(&self) -> &[f32] {
        self.logits_at(self.n_tokens - 1)
    }
}

/// Collects the taps the filter selects; does nothing (not even name formatting) when the
/// filter is empty.
struct Sink<'a> {
    filter: &'a TapFilter,
    taps: Vec<Tap>,
}

impl Sink<'_> {
    fn put(&mut self, tag: &str, layer: Option<usize>, dims: &[usize], n: usize, data: &[f32]) {
        if self.filter.is_empty() {
            return;
        }
        let name = tap_name(tag, layer);
        if self.filter.wants(&name) {
            let mut shape = dims.to_vec();
            shape.push(n);
            self.taps.push(Tap::new(name, shape, data.to_vec()));
        }
    }
}

impl Engine {
    /// `threads` = 0 means one per available core.
    pub fn new(model: Model, numerics: Numerics, threads: usize) -> Result<Engine> {
        Engine::build(Arc::new(model), numerics, threads, None)
    }

    fn build(
        model: Arc<Model>,
        numerics: Numerics,
        threads: usize,
        plan: Option<Arc<Plan>>,
    ) -> Result<Engine> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start {threads} threads: {e}")))?;
        Ok(Engine {
            threads: pool.current_num_threads(),
            model,
            numerics,
            pool,
            plan,
        })
    }

    /// Another engine on the same model and numerics that runs `plan` (a noise twin, a faulty
    /// variant for the self-test). The model is shared, not copied.
    pub fn with_plan(&self, plan: Plan) -> Result<Engine> {
        Engine::build(
            Arc::clone(&self.model),
            self.numerics,
            self.threads,
            Some(Arc::new(plan)),
        )
    }

    /// The plan this engine runs, if any.
    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_deref()
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn numerics(&self) -> Numerics {
        self.numerics
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The kernel set computing this engine's numbers.
    pub fn kernel(&self) -> Kernel {
        Kernel::Scalar
    }

    /// Where the kernels run.
    pub fn backend(&self) -> Backend {
        self.kernel().backend()
    }

    /// An empty KV cache in this engine's KV type.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(&self.model.hparams, self.numerics.kv)
    }

    /// Evaluate `tokens` at the positions following what `cache` holds, appending their keys
    /// and values to it. Returns the logits of every new position and the selected taps.
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        taps: &TapFilter,
    ) -> Result<Forward> {
        if tokens.is_empty() {
            return Err(Error::Invalid("no tokens to evaluate".into()));
        }
        if cache.kv_type() != self.numerics.kv {
            return Err(Error::Invalid(format!(
                "KV cache is {} but the engine uses {}",
                cache.kv_type().name(),
                self.numerics.kv.name()
            )));
        }
        let n_vocab = self.model.hparams.n_vocab;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary of {n_vocab}"
            )));
        }
        cache.reserve(tokens.len())?;
        self.pool.install(|| self.run(cache, tokens, taps))
    }

    /// `x` (n rows) times the weight matrix `m`: the one place every matmul of the forward pass
    /// and of op replays goes through (a plan's scale faults act here).
    /// `start` is the absolute position of the first row (the twin's tie flips act at one).
    pub(super) fn mat(&self, m: &Mat, x: &[f32], n: usize, start: usize) -> Result<Vec<f32>> {
        let mut y = match self.plan.as_deref() {
            None => matmul(&self.model.view_unchecked(m), x, n, self.numerics)?,
            Some(p) => {
                let at = p.flip_ties_at;
                matmul_twin(
                    &self.model.view_unchecked(m),
                    x,
                    n,
                    self.numerics,
                    TwinRounding {
                        flip: &|r| at == Some(start + r),
                        f32_sums: p.f32_sums,
                    },
                )?
            }
        };
        if let Some(f) = self.plan.as_ref().and_then(|p| p.tensor_factor(&m.name)) {
            y.iter_mut().for_each(|v| *v *= f);
        }
        Ok(y)
    }

    /// A projection: the matmul, then the optional one-element `.scale`.
    pub(super) fn linear(
        &self,
        lin: &Linear,
        x: &[f32],
        n: usize,
        start: usize,
    ) -> Result<Vec<f32>> {
        let mut y = self.mat(&lin.w, x, n, start)?;
        if let Some(s) = lin.scale {
            // ggml_mul by the one-element `.scale` tensor: a separate f32 multiply.
            y.iter_mut().for_each(|v| *v *= s);
        }
        Ok(y)
    }

    /// `get_rows` on token_embd: the embeddings of `tokens`, position-major.
    pub(super) fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let d = self.model.hparams.n_embd;
        let embd = self.model.view_unchecked(&self.model.tok_embd);
        let mut x = vec![0f32; tokens.len() * d];
        for (row, &t) in x.chunks_exact_mut(d).zip(tokens) {
            if t as usize >= self.model.hparams.n_vocab {
                return Err(Error::Invalid(format!(
                    "token id {t} is outside the vocabulary of {}",
                    self.model.hparams.n_vocab
                )));
            }
            embd.dequantize_row(t as usize, row)?;
        }
        Ok(x)
    }

    pub(super) fn norm_rows(&self, x: &[f32], w: &[f32]) -> Vec<f32> {
        let mut y = x.to_vec();
        for row in y.chunks_exact_mut(w.len()) {
            ops::rms_norm(row, self.model.hparams.rms_eps);
            ops::mul_weight(row, w);
        }
        y
    }

    /// The noise twin's one-ulp jitter of op `tag`'s output, `n` rows from position `start`;
    /// nothing without a jitter plan.
    fn jit(&self, tag: &str, layer: Option<usize>, start: usize, n: usize, v: &mut [f32]) {
        let Some(seed) = self.plan.as_ref().and_then(|p| p.jitter) else {
            return;
        };
        let op = op_id(tag, layer);
        for (t, row) in v.chunks_mut(v.len() / n).enumerate() {
            jitter_row(seed, op, start + t, row);
        }
    }

    fn run(&self, cache: &mut KvCache, tokens: &[u32], filter: &TapFilter) -> Result<Forward> {
        let hp = &self.model.hparams;
        let (n, d, hd) = (tokens.len(), hp.n_embd, hp.head_dim);
        let start = cache.len();
        let mut sink = Sink {
            filter,
            taps: Vec::new(),
        };
        // Each op's output: jittered when this is a noise twin (before anything reads it),
        // then offered to the tap sink.
        macro_rules! out {
            ($tag:expr, $l:expr, $dims:expr, $v:expr) => {{
                self.jit($tag, $l, start, n, &mut $v);
                sink.put($tag, $l, $dims, n, &$v);
            }};
        }

        let mut x = self.embed(tokens)?;
        self.jit("embd", None, start, n, &mut x);

        let mut rope = Vec::new();
        for (il, layer) in self.model.layers.iter().enumerate() {
            let l = Some(il);
            let mut cur = self.norm_rows(&x, &layer.attn_norm);
            out!("attn_norm", l, &[d], cur);

            let mut q = self.linear(&layer.wq, &cur, n, start)?;
            let mut k = self.linear(&layer.wk, &cur, n, start)?;
            let mut v = self.linear(&layer.wv, &cur, n, start)?;
            for t in 0..n {
                ops::rope_cache(start + t, hp.n_rot, hp.rope_freq_base, &mut rope);
                for head in q[t * d..(t + 1) * d].chunks_exact_mut(hd) {
                    ops::rope_neox(head, &rope);
                }
                let w = hp.n_embd_kv();
                for head in k[t * w..(t + 1) * w].chunks_exact_mut(hd) {
                    ops::rope_neox(head, &rope);
                }
            }
            out!("Qcur", l, &[hd, hp.n_head], q);
            out!("Kcur", l, &[hd, hp.n_head_kv], k);
            out!("Vcur", l, &[hd, hp.n_head_kv], v);
            cache.append(il, &k, &v);

            let mut attn = self.attention(cache, il, &q, n, start);
            out!("kqv_out", l, &[d], attn);
            let mut cur = self.norm_rows(&attn, &layer.attn_sub_norm);
            out!("attn_sub_norm", l, &[d], cur);
            let mut o = self.linear(&layer.wo, &cur, n, start)?;
            out!("attn_out", l, &[d], o);

            let mut ffn_inp = ops::add(&o, &x);
            out!("ffn_inp", l, &[d], ffn_inp);
            let mut cur = self.norm_rows(&ffn_inp, &layer.ffn_norm);
            out!("ffn_norm", l, &[d], cur);

            let mut up = self.mat(&layer.ffn_up.w, &cur, n, start)?;
            out!("ffn_up", l, &[hp.n_ff], up);
            if let Some(s) = layer.ffn_up.scale {
                up.iter_mut().for_each(|v| *v *= s);
                out!("ffn_up_s", l, &[hp.n_ff], up);
            }
            let mut gate = self.mat(&layer.ffn_gate.w, &cur, n, start)?;
            out!("ffn_gate", l, &[hp.n_ff], gate);
            if let Some(s) = layer.ffn_gate.scale {
                gate.iter_mut().for_each(|v| *v *= s);
                out!("ffn_gate_s", l, &[hp.n_ff], gate);
            }
            let mut act: Vec<f32> = gate
                .iter()
                .zip(&up)
                .map(|(&g, &u)| match hp.activation {
                    Activation::Silu => ops::silu(g) * u,
                    Activation::ReluSqr => ops::relu_sqr(g) * u,
                })
                .collect();
            out!("ffn_sub_out", l, &[hp.n_ff], act);
            let mut cur = self.norm_rows(&act, &layer.ffn_sub_norm);
            out!("ffn_sub_norm", l, &[hp.n_ff], cur);
            let mut down = self.linear(&layer.ffn_down, &cur, n, start)?;
            out!("ffn_down", l, &[d], down);
            x = ops::add(&down, &ffn_inp);
            out!("l_out", l, &[d], x);
        }
        cache.advance(n);

        let mut cur = self.norm_rows(&x, &self.model.output_norm);
        out!("result_norm", None, &[d], cur);
        let mut logits = self.mat(&self.model.output, &cur, n, start)?;
        out!("result_output", None, &[hp.n_vocab], logits);
        Ok(Forward {
            logits,
            n_vocab: hp.n_vocab,
            n_tokens: n,
            taps: sink.taps,
        })
    }

    /// Causal GQA attention of the `n` new queries over the cache (which already holds their
    /// own keys and values). Mirrors llama.cpp's non-flash path: `kq = mul_mat(k, q)` (the query
    /// rounded to f16 when the cache is F16, F16's `vec_dot_type`), `soft_max_ext` with scale
    /// `1/sqrt(head_dim)`, `kqv = mul_mat(v, kq)` (probabilities rounded to f16 for an F16
    /// cache); dot products sum f32 products in f64 as ggml's generic `vec_dot` does.
    pub(super) fn attention(
        &self,
        cache: &KvCache,
        il: usize,
        q: &[f32],
        n: usize,
        start: usize,
    ) -> Vec<f32> {
        let hp = &self.model.hparams;
        let (hd, n_head) = (hp.head_dim, hp.n_head);
        let group = hp.n_head / hp.n_head_kv;
        let scale = 1.0f32 / (hd as f32).sqrt();
        let exact = self.numerics.profile == Profile::F32;
        let f16 = self.numerics.kv == KvType::F16 && !exact;
        let round_to = |on: bool| {
            move |x: f32| {
                if on {
                    half::f16::from_f32(x).to_f32()
                } else {
                    x
                }
            }
        };
        // kq: the permuted queries always take the vec_dot path, rounded to F16's vec_dot_type;
        // kqv: the probabilities are a contiguous F32 batch, which tinyBLAS may take as F32.
        let round_q = round_to(f16);
        // The noise twin sums the f32 products in f32 (another valid order).
        let f32_sums = self.plan.as_ref().is_some_and(|p| p.f32_sums);
        let round_p = round_to(f16 && self.numerics.f16_activations.rounds(n));
        // Positions a query at `pos` attends to: `0..=pos`; one short with the KV fault, in
        // decode (a single new token after the first position).
        let one_short = n == 1
            && start > 0
            && self
                .plan
                .as_ref()
                .is_some_and(|p| p.has(&Fault::KvOneShort));
        let window = |pos: usize| if one_short { pos } else { pos + 1 };
        let mut out = vec![0f32; n * hp.n_embd];
        out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
            let (t, h) = (i / n_head, i % n_head);
            let pos = start + t;
            let kvh = h / group;
            let qh: Vec<f32> = q[t * hp.n_embd + h * hd..][..hd]
                .iter()
                .map(|&x| round_q(x))
                .collect();
            let mut kv = vec![0f32; hd];
            let mut scores = Vec::with_capacity(pos + 1);
            for j in 0..window(pos) {
                cache.read(il, false, j, kvh * hd, &mut kv);
                let s: f64 = if exact {
                    qh.iter().zip(&kv).map(|(&a, &b)| a as f64 * b as f64).sum()
                } else if f32_sums {
                    qh.iter().zip(&kv).fold(0f32, |s, (&a, &b)| s + a * b) as f64
                } else {
                    qh.iter().zip(&kv).map(|(&a, &b)| (a * b) as f64).sum()
                };
                scores.push(s as f32);
            }
            if exact {
                ops::softmax_scaled_f64(&mut scores, scale);
            } else {
                ops::softmax_scaled(&mut scores, scale);
            }
            let mut acc = vec![0f64; hd];
            for (j, &p) in scores.iter().enumerate() {
                cache.read(il, true, j, kvh * hd, &mut kv);
                let p = round_p(p);
                for (a, &v) in acc.iter_mut().zip(&kv) {
                    *a = if exact {
                        *a + p as f64 * v as f64
                    } else if f32_sums {
                        (*a as f32 + p * v) as f64
                    } else {
                        *a + (p * v) as f64
                    };
                }
            }
            for (o, a) in o.iter_mut().zip(acc) {
                *o = a as f32;
            }
        });
        out
    }
}
