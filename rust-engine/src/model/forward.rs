//! The forward pass (llama.cpp `llama_model_bitnet::graph`, with the FFN activation chosen by
//! the architecture), capturing taps under llama.cpp's node names.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::faults::{misread_i2s, other_activation, FaultKind};
use super::kv_cache::KvCache;
use super::ops;
use super::plan::{jitter_row, op_id, Plan};
use super::{Activation, Linear, Mat, Model};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::numerics::{KvType, Numerics, Profile};
use crate::quant::kernels::attn::{self, AttnSums};
use crate::quant::kernels::{Backend, Kernel};
use crate::quant::matmul::{matmul_twin, TwinRounding, WeightMatrix, PLAIN};
use crate::taps::{tap_name, Tap, TapFilter};

/// Which RMSNorm of the graph a [`Engine::norm`] call is (the self-test's norm faults pick).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NormSite {
    Attn,
    AttnSub,
    Ffn,
    FfnSub,
    Output,
}

/// The layer of a `blk.N.*` tensor.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// Runs a model under one numerics setting on a fixed number of threads, optionally with a
/// [`Plan`] of deliberate changes (noise-twin jitter, self-test faults).
pub struct Engine {
    model: Arc<Model>,
    numerics: Numerics,
    /// The kernel set of the dot products that have SIMD variants.
    kernel: Kernel,
    threads: usize,
    pool: rayon::ThreadPool,
    plan: Option<Arc<Plan>>,
    /// The weight images a plan's I2_S faults read in place of a tensor's (summed products).
    misread: HashMap<String, Vec<Vec<u8>>>,
}

/// Which positions of an evaluated batch are outputs (get logits): the engine's
/// [`Engine::forward`] / [`Engine::forward_last`], an oracle's `llama_batch.logits`, the
/// prompt `harness bench` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outputs {
    /// Every position, as a comparison evaluates a prompt.
    All,
    /// The last position only, as llama.cpp's own tools (`llama-bench`, `llama-cli`) evaluate
    /// a prompt: llama.cpp then keeps that row alone from the last layer on.
    Last,
}

impl Outputs {
    pub fn name(self) -> &'static str {
        match self {
            Outputs::All => "all",
            Outputs::Last => "last",
        }
    }

    /// Whether entry `i` of a batch of `n` is an output.
    pub fn is_output(self, i: usize, n: usize) -> bool {
        self == Outputs::All || i + 1 == n
    }
}

/// How the rows of an evaluated batch take the numerics that depend on the batch: as one
/// batch (a prompt), or each as its own one-token evaluation (decode steps evaluated together,
/// [`Engine::forward_steps`], and their op replays).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rows {
    /// One batch: a matmul of `n` rows takes `n` rows' numerics (F16 activations under
    /// `f32-batches` stay f32 from two rows on).
    #[default]
    Batch,
    /// Each row a decode step of its own: one row's numerics ([`Numerics::one_row`]), and the
    /// decode-step faults act at every row after position 0.
    Steps,
}

impl Rows {
    /// The numerics a matmul of these rows runs.
    pub fn numerics(self, base: Numerics) -> Numerics {
        match self {
            Rows::Batch => base,
            Rows::Steps => base.one_row(),
        }
    }

    /// Whether the row at `pos` of a batch of `n` is a decode step (one new token after the
    /// first position), where the KV-cache faults act.
    fn decode_step(self, n: usize, pos: usize) -> bool {
        (self == Rows::Steps || n == 1) && pos > 0
    }
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

    /// One evaluation per position: its logits and each tap's row of it (taps are
    /// position-major, the position count their last dimension).
    fn split_rows(self) -> Vec<Forward> {
        let n = self.n_tokens;
        (0..n)
            .map(|t| Forward {
                logits: self.logits_at(t).to_vec(),
                n_vocab: self.n_vocab,
                n_tokens: 1,
                taps: self
                    .taps
                    .iter()
                    .map(|tap| {
                        let w = tap.data.len() / n;
                        let mut shape = tap.shape.clone();
                        if let Some(last) = shape.last_mut() {
                            *last = 1;
                        }
                        Tap::new(
                            tap.name.clone(),
                            shape,
                            tap.data[t * w..(t + 1) * w].to_vec(),
                        )
                    })
                    .collect(),
            })
            .collect()
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
        let misread = match plan.as_deref() {
            Some(p) => misread_images(&model, p)?,
            None => HashMap::new(),
        };
        Ok(Engine {
            threads: pool.current_num_threads(),
            model,
            numerics,
            kernel: Kernel::Scalar,
            pool,
            plan,
            misread,
        })
    }

    /// The same engine computing with the kernel set `kernel` (the ternary dots give the same
    /// numbers in every set, the float dots the same products summed in another order; see
    /// [`Kernel`]). Refused when this CPU cannot run it.
    pub fn with_kernel(mut self, kernel: Kernel) -> Result<Engine> {
        if !kernel.available() {
            return Err(Error::Invalid(format!(
                "kernel {kernel}: this CPU cannot run it"
            )));
        }
        self.kernel = kernel;
        Ok(self)
    }

    /// Another engine on the same model and numerics that runs `plan` (a noise twin, a faulty
    /// variant for the self-test). The model is shared, not copied.
    pub fn with_plan(&self, plan: Plan) -> Result<Engine> {
        let mut e = Engine::build(
            Arc::clone(&self.model),
            self.numerics,
            self.threads,
            Some(Arc::new(plan)),
        )?;
        e.kernel = self.kernel;
        Ok(e)
    }

    /// Another engine on the same model, numerics and plan computing with `kernel` (`compare
    /// --kernel all`). The model is shared, not copied.
    pub fn on_kernel(&self, kernel: Kernel) -> Result<Engine> {
        Engine::build(
            Arc::clone(&self.model),
            self.numerics,
            self.threads,
            self.plan.clone(),
        )?
        .with_kernel(kernel)
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
        self.kernel
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
        self.evaluate(cache, tokens, taps, Outputs::All, Rows::Batch)
    }

    /// `tokens` as decode steps, one [`Forward`] per token, bit for bit what calling
    /// [`Engine::forward`] with each token in turn gives (logits, taps, the cache left behind),
    /// but each weight matrix read once for all of them: every row takes one row's numerics
    /// ([`Rows::Steps`]). For token ids known in advance (the noise twin following the oracle's
    /// choices); the engine under test still decodes one token at a time.
    pub fn forward_steps(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        taps: &TapFilter,
    ) -> Result<Vec<Forward>> {
        Ok(self
            .evaluate(cache, tokens, taps, Outputs::All, Rows::Steps)?
            .split_rows())
    }

    /// Evaluate `tokens` as [`Engine::forward`] does but compute the output norm and the output
    /// projection for the last position only, as llama.cpp's own tools do with a prompt
    /// (`llama-cli`, `llama-bench`: only the last batch entry is an output, and the graph keeps
    /// that row alone before `result_norm`). Returns that position's logits. The projection is a
    /// matmul of one row, so it takes one row's numerics (an F16 output under `f32-batches`
    /// rounds its activations to f16, as the oracle's one-row matmul does); otherwise the logits
    /// are bit-identical to the last row of [`Engine::forward`]'s. No taps.
    pub fn forward_last(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>> {
        let none = TapFilter::none();
        Ok(self
            .evaluate(cache, tokens, &none, Outputs::Last, Rows::Batch)?
            .logits)
    }

    /// [`Engine::forward`] with the `outputs` positions outputs. Refuses no tokens, a cache of
    /// another KV type, an id outside the vocabulary, more positions than the cache holds.
    fn evaluate(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        taps: &TapFilter,
        outputs: Outputs,
        rows: Rows,
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
        self.pool
            .install(|| self.run(cache, tokens, taps, outputs, rows))
    }

    /// `x` (n rows) times the weight matrix `m`: the one place every matmul of the forward pass
    /// and of op replays goes through (a plan's weight, scale and activation-quantization faults
    /// act here). `start` is the absolute position of the first row (the twin's tie flips act at
    /// one); `rows` says whose numerics the rows take.
    pub(super) fn mat(
        &self,
        m: &Mat,
        x: &[f32],
        n: usize,
        start: usize,
        rows: Rows,
    ) -> Result<Vec<f32>> {
        let view = self.model.view_unchecked(m);
        let mut numerics = rows.numerics(self.numerics);
        let Some(p) = self.plan.as_deref() else {
            let plain = TwinRounding {
                kernel: self.kernel,
                ..PLAIN
            };
            return matmul_twin(&view, x, n, numerics, plain);
        };
        let layer = layer_of(&m.name);
        let ternary = matches!(m.ty, GgmlType::I2_S | GgmlType::TQ1_0 | GgmlType::TQ2_0);
        if ternary && p.has(FaultKind::ActGranularity, layer) {
            numerics.profile = match numerics.profile {
                Profile::BitnetCpp => Profile::Ggml,
                Profile::Ggml => Profile::BitnetCpp,
                Profile::F32 => Profile::F32,
            };
        }
        let at = p.flip_ties_at;
        let rounding = TwinRounding {
            flip: &|r| at == Some(start + r),
            f32_sums: p.f32_sums,
            i16_sums: m.ty == GgmlType::I2_S && p.has(FaultKind::AccI16, layer),
            kernel: self.kernel,
        };
        let mut y = match self.misread.get(&m.name) {
            None => matmul_twin(&view, x, n, numerics, rounding)?,
            Some(parts) => {
                let mut sum: Option<Vec<f32>> = None;
                for part in parts {
                    let w = WeightMatrix { data: part, ..view };
                    let y = matmul_twin(&w, x, n, numerics, rounding)?;
                    sum = Some(match sum {
                        None => y,
                        Some(mut s) => {
                            s.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
                            s
                        }
                    });
                }
                sum.expect("a misread has at least one image")
            }
        };
        if let Some(f) = p.tensor_factor(&m.name) {
            y.iter_mut().for_each(|v| *v *= f);
        }
        Ok(y)
    }

    /// A projection: the matmul, then the optional one-element `.scale` (which the scale faults
    /// drop or apply twice).
    pub(super) fn linear(
        &self,
        lin: &Linear,
        x: &[f32],
        n: usize,
        start: usize,
        rows: Rows,
    ) -> Result<Vec<f32>> {
        let mut y = self.mat(&lin.w, x, n, start, rows)?;
        if let Some(s) = self.scale_of(lin) {
            // ggml_mul by the one-element `.scale` tensor: a separate f32 multiply.
            y.iter_mut().for_each(|v| *v *= s);
        }
        Ok(y)
    }

    /// The `.scale` a projection's output is multiplied by, as this engine applies it.
    pub(super) fn scale_of(&self, lin: &Linear) -> Option<f32> {
        let s = lin.scale?;
        let Some(p) = self.plan.as_deref() else {
            return Some(s);
        };
        let layer = layer_of(&lin.w.name);
        if p.has(FaultKind::ScaleIgnored, layer) {
            None
        } else if p.has(FaultKind::ScaleTwice, layer) {
            Some(s * s)
        } else {
            Some(s)
        }
    }

    /// Whether bug `kind` acts at `layer` in this engine.
    fn bug(&self, kind: FaultKind, layer: Option<usize>) -> bool {
        self.plan.as_deref().is_some_and(|p| p.has(kind, layer))
    }

    /// RMSNorm of each row of `x` times `w`: the one norm of the forward pass and the replays
    /// (where the norm faults act).
    pub(super) fn norm(
        &self,
        site: NormSite,
        layer: Option<usize>,
        x: &[f32],
        w: &[f32],
    ) -> Vec<f32> {
        let skip = match site {
            NormSite::AttnSub => Some(FaultKind::SkipAttnSubNorm),
            NormSite::FfnSub => Some(FaultKind::SkipFfnSubNorm),
            NormSite::Attn | NormSite::Ffn | NormSite::Output => None,
        };
        if skip.is_some_and(|k| self.bug(k, layer)) {
            return x.to_vec();
        }
        let mut eps = self.model.hparams.rms_eps;
        if self.bug(FaultKind::RmsEps, layer) {
            eps = if eps == 1e-6 { 1e-5 } else { 1e-6 };
        }
        let mean_out = self.bug(FaultKind::LayerNorm, layer);
        let mut y = x.to_vec();
        for row in y.chunks_exact_mut(w.len()) {
            if mean_out {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / row.len() as f64;
                row.iter_mut().for_each(|v| *v -= mean as f32);
            }
            ops::rms_norm(row, eps);
            ops::mul_weight(row, w);
        }
        y
    }

    /// The FFN activation of `layer` as this engine applies it.
    pub(super) fn activation(&self, layer: usize) -> Activation {
        let a = self.model.hparams.activation;
        if self.bug(FaultKind::WrongActivation, Some(layer)) {
            other_activation(a)
        } else {
            a
        }
    }

    /// `act(gate) * up`, element by element.
    pub(super) fn gated(&self, layer: usize, gate: &[f32], up: &[f32]) -> Vec<f32> {
        let act = self.activation(layer);
        gate.iter()
            .zip(up)
            .map(|(&g, &u)| match act {
                Activation::Silu => ops::silu(g) * u,
                Activation::ReluSqr => ops::relu_sqr(g) * u,
            })
            .collect()
    }

    /// Rotate the heads (`head_dim` each) of `n` rows of `width` values at positions from
    /// `start`: NEOX with the file's base, unless a RoPE fault says otherwise.
    pub(super) fn rope(&self, layer: usize, v: &mut [f32], width: usize, n: usize, start: usize) {
        let hp = &self.model.hparams;
        let mut base = hp.rope_freq_base;
        if self.bug(FaultKind::RopeBase, Some(layer)) {
            base = if base == 500000.0 { 10000.0 } else { 500000.0 };
        }
        let norm = self.bug(FaultKind::RopeNorm, Some(layer));
        let mut cache = Vec::new();
        for t in 0..n {
            ops::rope_cache(start + t, hp.n_rot, base, &mut cache);
            for head in v[t * width..(t + 1) * width].chunks_exact_mut(hp.head_dim) {
                if norm {
                    ops::rope_norm(head, &cache);
                } else {
                    ops::rope_neox(head, &cache);
                }
            }
        }
    }

    /// A residual addition (`ffn_inp`, `l_out`) of `layer`.
    pub(super) fn residual(&self, layer: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut y = ops::add(a, b);
        if self.bug(FaultKind::ResidualF16, Some(layer)) {
            y.iter_mut()
                .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
        }
        y
    }

    /// The output projection as this engine reads it.
    pub(super) fn output(&self) -> &Mat {
        if self.bug(FaultKind::OutputTied, None) {
            &self.model.tok_embd
        } else {
            &self.model.output
        }
    }

    /// `get_rows` on token_embd: the embeddings of `tokens`, position-major.
    pub(super) fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let d = self.model.hparams.n_embd;
        let embd = self.model.view_unchecked(&self.model.tok_embd);
        let n_vocab = self.model.hparams.n_vocab;
        let shift = usize::from(self.bug(FaultKind::EmbdOffByOne, None));
        let mut x = vec![0f32; tokens.len() * d];
        for (row, &t) in x.chunks_exact_mut(d).zip(tokens) {
            if t as usize >= n_vocab {
                return Err(Error::Invalid(format!(
                    "token id {t} is outside the vocabulary of {n_vocab}"
                )));
            }
            embd.dequantize_row((t as usize + shift) % n_vocab, row)?;
        }
        Ok(x)
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

    fn run(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        filter: &TapFilter,
        outputs: Outputs,
        rows: Rows,
    ) -> Result<Forward> {
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

        for (il, layer) in self.model.layers.iter().enumerate() {
            let l = Some(il);
            let mut cur = self.norm(NormSite::Attn, l, &x, &layer.attn_norm);
            out!("attn_norm", l, &[d], cur);

            let mut q = self.linear(&layer.wq, &cur, n, start, rows)?;
            let mut k = self.linear(&layer.wk, &cur, n, start, rows)?;
            let mut v = self.linear(&layer.wv, &cur, n, start, rows)?;
            self.rope(il, &mut q, d, n, start);
            self.rope(il, &mut k, hp.n_embd_kv(), n, start);
            out!("Qcur", l, &[hd, hp.n_head], q);
            out!("Kcur", l, &[hd, hp.n_head_kv], k);
            out!("Vcur", l, &[hd, hp.n_head_kv], v);
            cache.append(il, &k, &v);

            let mut attn = self.attention(cache, il, &q, n, start, rows);
            out!("kqv_out", l, &[d], attn);
            let mut cur = self.norm(NormSite::AttnSub, l, &attn, &layer.attn_sub_norm);
            out!("attn_sub_norm", l, &[d], cur);
            let mut o = self.linear(&layer.wo, &cur, n, start, rows)?;
            out!("attn_out", l, &[d], o);

            let mut ffn_inp = self.residual(il, &o, &x);
            out!("ffn_inp", l, &[d], ffn_inp);
            let mut cur = self.norm(NormSite::Ffn, l, &ffn_inp, &layer.ffn_norm);
            out!("ffn_norm", l, &[d], cur);

            let mut up = self.mat(&layer.ffn_up.w, &cur, n, start, rows)?;
            out!("ffn_up", l, &[hp.n_ff], up);
            if let Some(s) = self.scale_of(&layer.ffn_up) {
                up.iter_mut().for_each(|v| *v *= s);
                out!("ffn_up_s", l, &[hp.n_ff], up);
            }
            let mut gate = self.mat(&layer.ffn_gate.w, &cur, n, start, rows)?;
            out!("ffn_gate", l, &[hp.n_ff], gate);
            if let Some(s) = self.scale_of(&layer.ffn_gate) {
                gate.iter_mut().for_each(|v| *v *= s);
                out!("ffn_gate_s", l, &[hp.n_ff], gate);
            }
            let mut act = self.gated(il, &gate, &up);
            out!("ffn_sub_out", l, &[hp.n_ff], act);
            let mut cur = self.norm(NormSite::FfnSub, l, &act, &layer.ffn_sub_norm);
            out!("ffn_sub_norm", l, &[hp.n_ff], cur);
            let mut down = self.linear(&layer.ffn_down, &cur, n, start, rows)?;
            out!("ffn_down", l, &[d], down);
            x = self.residual(il, &down, &ffn_inp);
            out!("l_out", l, &[d], x);
        }
        cache.advance(n);

        // The output rows: every position, or the last alone (llama.cpp's `inp_out_ids`
        // selects the output rows before the output norm, so the projection is a matmul of
        // that many rows).
        let (at, out_rows) = match outputs {
            Outputs::All => (start, n),
            Outputs::Last => {
                x.drain(..(n - 1) * d);
                (start + n - 1, 1)
            }
        };
        let mut cur = self.norm(NormSite::Output, None, &x, &self.model.output_norm);
        self.jit("result_norm", None, at, out_rows, &mut cur);
        sink.put("result_norm", None, &[d], out_rows, &cur);
        let mut logits = self.mat(self.output(), &cur, out_rows, at, rows)?;
        self.jit("result_output", None, at, out_rows, &mut logits);
        sink.put("result_output", None, &[hp.n_vocab], out_rows, &logits);
        Ok(Forward {
            logits,
            n_vocab: hp.n_vocab,
            n_tokens: out_rows,
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
        rows: Rows,
    ) -> Vec<f32> {
        let hp = &self.model.hparams;
        let (hd, n_head) = (hp.head_dim, hp.n_head);
        let group = hp.n_head / hp.n_head_kv;
        let l = Some(il);
        let scale = if self.bug(FaultKind::AttnScale, l) {
            1.0f32 / hd as f32
        } else {
            1.0f32 / (hd as f32).sqrt()
        };
        let gqa_off = self.bug(FaultKind::GqaOffByOne, l);
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
        let round_p = round_to(f16 && rows.numerics(self.numerics).f16_activations.rounds(n));
        // Positions a query at `pos` attends to: `0..=pos`; one short with the KV fault at a
        // decode step (a single new token after the first position). The stale-entry fault
        // reads the previous position's slot in place of the step's own.
        let one_short = self.bug(FaultKind::KvOneShort, l);
        let stale = self.bug(FaultKind::KvStale, l);
        let window = |pos: usize| {
            if one_short && rows.decode_step(n, pos) {
                pos
            } else {
                pos + 1
            }
        };
        // Every position's keys and values as f32, position-major, read in place.
        let (len, w) = (start + n, hp.n_embd_kv());
        let (keys, values) = (cache.layer(il, false), cache.layer(il, true));
        debug_assert_eq!(keys.len(), len * w, "this batch's keys appended");
        // The stale-entry fault's view for a step at `pos`: the previous slot copied into its
        // own (in place for a single step; a copy per step when steps are evaluated together).
        let stale_view = |pos: usize| -> Option<(Vec<f32>, Vec<f32>)> {
            if !(stale && rows.decode_step(n, pos)) {
                return None;
            }
            let (mut k, mut v) = (
                keys[..(pos + 1) * w].to_vec(),
                values[..(pos + 1) * w].to_vec(),
            );
            k.copy_within((pos - 1) * w..pos * w, pos * w);
            v.copy_within((pos - 1) * w..pos * w, pos * w);
            Some((k, v))
        };
        let stale_views: Vec<Option<(Vec<f32>, Vec<f32>)>> = (start..len).map(stale_view).collect();
        let sums = if exact {
            AttnSums::Exact
        } else if f32_sums {
            AttnSums::F32
        } else {
            AttnSums::F64
        };
        let kernel = self.kernel;
        let mut out = vec![0f32; n * hp.n_embd];
        out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
            let (t, h) = (i / n_head, i % n_head);
            let pos = start + t;
            let kvh = if gqa_off {
                ((h + 1) / group) % hp.n_head_kv
            } else {
                h / group
            };
            let qh: Vec<f32> = q[t * hp.n_embd + h * hd..][..hd]
                .iter()
                .map(|&x| round_q(x))
                .collect();
            let (keys, values) = match &stale_views[t] {
                Some((k, v)) => (&k[..], &v[..]),
                None => (keys, values),
            };
            let mut scores = vec![0f32; window(pos)];
            attn::scores(kernel, sums, &qh, &keys[kvh * hd..], w, &mut scores);
            if exact {
                ops::softmax_scaled_f64(&mut scores, scale);
            } else {
                ops::softmax_scaled(&mut scores, scale);
            }
            scores.iter_mut().for_each(|p| *p = round_p(*p));
            attn::mix(kernel, sums, &scores, &values[kvh * hd..], w, o);
        });
        out
    }
}

/// The weight images `plan`'s I2_S faults put in place of each affected tensor.
fn misread_images(model: &Model, plan: &Plan) -> Result<HashMap<String, Vec<Vec<u8>>>> {
    let mut out = HashMap::new();
    let kinds: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|k| k.rewrites_i2s() && plan.has_anywhere(*k))
        .collect();
    if kinds.is_empty() {
        return Ok(out);
    }
    for m in model.matrices() {
        if m.ty != GgmlType::I2_S {
            continue;
        }
        let layer = layer_of(&m.name);
        // The first fault acting on the tensor decides its image (one fault per self-test run).
        let Some(&kind) = kinds.iter().find(|k| plan.has(**k, layer)) else {
            continue;
        };
        let view = model.view_unchecked(m);
        let parts = misread_i2s(kind, view.data, m.k * m.m, model.i2s_layout)?;
        out.insert(m.name.clone(), parts);
    }
    Ok(out)
}
