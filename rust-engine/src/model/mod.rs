//! BitNet models as data: architecture, hyper-parameters read from the file, and the tensors
//! each layer needs, checked against the declared shapes before anything runs.

pub mod faults;
mod forward;
mod kv_cache;
pub mod ops;
pub mod plan;
mod replay;

use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;

pub use faults::FaultKind;
pub use forward::{Engine, Forward, Outputs, Rows};
pub use kv_cache::KvCache;
pub use plan::{Fault, Plan};
pub use replay::{KvHistory, ReplayInputs, TapSource};

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufFile, Value};
use crate::quant::i2_s::I2sLayout;
use crate::quant::matmul::WeightMatrix;
use crate::tokenizer::Tokenizer;

/// The projection tensors of a layer (`blk.N.<name>.weight`, optional `blk.N.<name>.scale`), in
/// llama.cpp's order (`llama_model_bitnet::load_arch_tensors`).
pub const PROJECTIONS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// The supported architectures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// Mainline llama.cpp's `bitnet` (1bitLLM models): SiLU-gated FFN.
    Bitnet,
    /// `bitnet-b1.58` (also `bitnet-25`, the first name of the official 2B-4T file): ReLU^2 FFN.
    BitnetB158,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "bitnet" => Some(Arch::Bitnet),
            "bitnet-b1.58" | "bitnet-25" => Some(Arch::BitnetB158),
            _ => None,
        }
    }
}

/// The FFN gate activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    Silu,
    ReluSqr,
}

/// Hyper-parameters, from the `<arch>.*` keys and the tensor shapes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HParams {
    /// The architecture name as written in the file.
    pub arch_name: String,
    pub arch: Arch,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Rotated dimensions per head (`rope.dimension_count`, default head_dim).
    pub n_rot: usize,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub rms_eps: f32,
    pub rope_freq_base: f32,
    pub activation: Activation,
}

impl HParams {
    pub fn n_embd_kv(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// A weight matrix located in the file.
#[derive(Clone, Debug)]
pub struct Mat {
    pub name: String,
    pub ty: GgmlType,
    pub k: usize,
    pub m: usize,
    range: Range<usize>,
}

impl Mat {
    /// Its size in the file, in bytes.
    pub fn n_bytes(&self) -> usize {
        self.range.len()
    }
}

/// A projection: its matrix and the optional one-element `.scale` tensor multiplied into its
/// output.
#[derive(Clone, Debug)]
pub struct Linear {
    pub w: Mat,
    pub scale: Option<f32>,
}

/// The tensors of one block.
#[derive(Clone, Debug)]
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub attn_sub_norm: Vec<f32>,
    pub wo: Linear,
    pub ffn_norm: Vec<f32>,
    pub ffn_up: Linear,
    pub ffn_gate: Linear,
    pub ffn_sub_norm: Vec<f32>,
    pub ffn_down: Linear,
}

/// A loaded model: hyper-parameters, per-layer tensors located in the memory-mapped file (only
/// the small norm vectors are copied).
pub struct Model {
    file: Arc<GgufFile>,
    pub hparams: HParams,
    pub i2s_layout: I2sLayout,
    pub tok_embd: Mat,
    /// `output.weight` when present, else the tied `token_embd`.
    pub output: Mat,
    pub output_is_tied: bool,
    pub output_norm: Vec<f32>,
    pub layers: Vec<Layer>,
}

/// Tensors each layer must have: its projections and four norms (attn_norm, attn_sub_norm,
/// ffn_norm, ffn_sub_norm).
const TENSORS_PER_LAYER: usize = PROJECTIONS.len() + 4;

impl Model {
    /// Check and locate everything the architecture needs.
    pub fn load(file: Arc<GgufFile>, i2s_layout: I2sLayout) -> Result<Model> {
        let f = &*file;
        let arch_name = f
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| meta_err(f, "general.architecture", "missing or not a string"))?
            .to_string();
        let arch = Arch::from_name(&arch_name).ok_or_else(|| {
            meta_err(
                f,
                "general.architecture",
                &format!(
                    "architecture '{arch_name}' is not supported (expected bitnet, bitnet-b1.58 \
                     or bitnet-25)"
                ),
            )
        })?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let n_embd = meta_usize(f, &key("embedding_length"), None)?;
        let n_layer = meta_usize(f, &key("block_count"), None)?;
        let n_ff = meta_usize(f, &key("feed_forward_length"), None)?;
        let n_head = meta_usize(f, &key("attention.head_count"), None)?;
        let n_head_kv = meta_usize(f, &key("attention.head_count_kv"), Some(n_head))?;
        let n_ctx = meta_usize(f, &key("context_length"), None)?;
        let rms_eps = meta_f32(f, &key("attention.layer_norm_rms_epsilon"), None)?;
        let rope_freq_base = meta_f32(f, &key("rope.freq_base"), Some(10000.0))?;
        if n_embd == 0 || n_layer == 0 || n_ff == 0 || n_head == 0 || n_head_kv == 0 || n_ctx == 0 {
            return Err(meta_err(
                f,
                &key("*"),
                "embedding_length, block_count, feed_forward_length, head counts and \
                 context_length must all be non-zero",
            ));
        }
        // Every layer has TENSORS_PER_LAYER tensors, so the file itself bounds the layer count:
        // checked before anything is sized by it.
        let n_tensors = f.header().tensors.len();
        if n_layer > n_tensors / TENSORS_PER_LAYER {
            return Err(meta_err(
                f,
                &key("block_count"),
                &format!(
                    "{n_layer} layers need at least {TENSORS_PER_LAYER} tensors each, but the \
                     file holds {n_tensors} tensors"
                ),
            ));
        }
        if n_embd % n_head != 0 {
            return Err(meta_err(
                f,
                &key("attention.head_count"),
                &format!("embedding_length {n_embd} is not divisible by {n_head} heads"),
            ));
        }
        if n_head % n_head_kv != 0 {
            return Err(meta_err(
                f,
                &key("attention.head_count_kv"),
                &format!("{n_head} heads are not a multiple of {n_head_kv} KV heads"),
            ));
        }
        let head_dim = n_embd / n_head;
        let n_rot = meta_usize(f, &key("rope.dimension_count"), Some(head_dim))?;
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(meta_err(
                f,
                &key("rope.dimension_count"),
                &format!("{n_rot} must be even and at most the head size {head_dim}"),
            ));
        }
        let activation = match f.get(&key("hidden_activation")) {
            None => match arch {
                Arch::Bitnet => Activation::Silu,
                Arch::BitnetB158 => Activation::ReluSqr,
            },
            Some(v) => match v.as_str() {
                Some("silu") | Some("swish") => Activation::Silu,
                Some("relu2") | Some("relu_sqr") | Some("relu_squared") | Some("relu^2") => {
                    Activation::ReluSqr
                }
                _ => {
                    return Err(meta_err(
                        f,
                        &key("hidden_activation"),
                        &format!("unsupported activation {v:?} (expected silu or relu2)"),
                    ))
                }
            },
        };

        let tok_embd = mat(f, "token_embd.weight", &arch_name, Role::Embedding)?;
        if tok_embd.k != n_embd {
            return Err(shape_err(
                f,
                "token_embd.weight",
                &format!("ne0 = {} but embedding_length = {n_embd}", tok_embd.k),
            ));
        }
        let n_vocab = tok_embd.m;
        let hparams = HParams {
            arch_name: arch_name.clone(),
            arch,
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            n_ctx,
            n_vocab,
            rms_eps,
            rope_freq_base,
            activation,
        };
        let (output, output_is_tied) = match f.tensor("output.weight") {
            Some(_) => (mat(f, "output.weight", &arch_name, Role::Embedding)?, false),
            None => (tok_embd.clone(), true),
        };
        check_mat(f, &output, n_embd, n_vocab)?;
        let output_norm = norm(f, "output_norm.weight", &arch_name, n_embd)?;
        let n_kv = hparams.n_embd_kv();
        let mut layers = Vec::with_capacity(n_layer);
        for l in 0..n_layer {
            let t = |s: &str| format!("blk.{l}.{s}");
            let lin = |s: &str, k: usize, m: usize| -> Result<Linear> {
                let w = mat(f, &t(&format!("{s}.weight")), &arch_name, Role::Projection)?;
                check_mat(f, &w, k, m)?;
                Ok(Linear {
                    w,
                    scale: scale(f, &t(&format!("{s}.scale")))?,
                })
            };
            layers.push(Layer {
                attn_norm: norm(f, &t("attn_norm.weight"), &arch_name, n_embd)?,
                wq: lin("attn_q", n_embd, n_embd)?,
                wk: lin("attn_k", n_embd, n_kv)?,
                wv: lin("attn_v", n_embd, n_kv)?,
                attn_sub_norm: norm(f, &t("attn_sub_norm.weight"), &arch_name, n_embd)?,
                wo: lin("attn_output", n_embd, n_embd)?,
                ffn_norm: norm(f, &t("ffn_norm.weight"), &arch_name, n_embd)?,
                ffn_up: lin("ffn_up", n_embd, n_ff)?,
                ffn_gate: lin("ffn_gate", n_embd, n_ff)?,
                ffn_sub_norm: norm(f, &t("ffn_sub_norm.weight"), &arch_name, n_ff)?,
                ffn_down: lin("ffn_down", n_ff, n_embd)?,
            });
        }
        let model = Model {
            file,
            hparams,
            i2s_layout,
            tok_embd,
            output,
            output_is_tied,
            output_norm,
            layers,
        };
        // Build every matrix view once: checks row/block compatibility and I2_S code validity.
        for m in model.matrices() {
            model.view(m)?;
        }
        Ok(model)
    }

    /// The tokenizer stored in the model's file, checked against the model: llama.cpp sizes
    /// the embedding from the vocabulary (`llama_model::load_tensors`), so a file with more
    /// or fewer token texts than `token_embd` has rows is one it refuses, and ids the model
    /// can produce would have no text.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let tok = Tokenizer::from_gguf(&self.file)?;
        if tok.n_vocab() != self.hparams.n_vocab {
            return Err(Error::Tokenizer(format!(
                "{}: tokenizer.ggml.tokens has {} tokens but token_embd.weight has {} rows \
                 (one per token id)",
                self.file.label(),
                tok.n_vocab(),
                self.hparams.n_vocab
            )));
        }
        Ok(tok)
    }

    /// The file, shared (for work on its bytes on another thread).
    pub fn shared_file(&self) -> Arc<GgufFile> {
        Arc::clone(&self.file)
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The matmul view of a matrix (already validated in `load`).
    pub fn view<'a>(&'a self, m: &'a Mat) -> Result<WeightMatrix<'a>> {
        WeightMatrix::new(
            &m.name,
            m.ty,
            m.k,
            m.m,
            &self.file.bytes()[m.range.clone()],
            self.i2s_layout,
        )
    }

    /// A view without re-validation, for the hot path.
    pub(crate) fn view_unchecked<'a>(&'a self, m: &'a Mat) -> WeightMatrix<'a> {
        WeightMatrix {
            name: &m.name,
            ty: m.ty,
            k: m.k,
            m: m.m,
            data: &self.file.bytes()[m.range.clone()],
            i2s_layout: self.i2s_layout,
        }
    }

    /// Every matrix the forward pass multiplies by.
    pub fn matrices(&self) -> impl Iterator<Item = &Mat> {
        self.layers
            .iter()
            .flat_map(|l| {
                [
                    &l.wq.w,
                    &l.wk.w,
                    &l.wv.w,
                    &l.wo.w,
                    &l.ffn_up.w,
                    &l.ffn_gate.w,
                    &l.ffn_down.w,
                ]
            })
            .chain([&self.tok_embd, &self.output])
    }

    /// Bytes of weights one decode step reads: every projection, the output matrix (the
    /// embedding when tied, read whole as the lm_head), the norms, and one embedding row. What
    /// `harness bench` divides by the decode time for the effective bandwidth.
    pub fn decode_bytes_per_token(&self) -> u64 {
        // `matrices()` is every projection, the embedding and the output (the embedding again
        // when tied): all of it is read but the embedding, of which one row is.
        let matrices: usize =
            self.matrices().map(Mat::n_bytes).sum::<usize>() - self.tok_embd.n_bytes();
        let embd_row = self.tok_embd.n_bytes() / self.tok_embd.m.max(1);
        let norms: usize = self
            .layers
            .iter()
            .map(|l| {
                l.attn_norm.len() + l.attn_sub_norm.len() + l.ffn_norm.len() + l.ffn_sub_norm.len()
            })
            .sum::<usize>()
            + self.output_norm.len();
        (matrices + embd_row + 4 * norms) as u64
    }

    /// The type of the ternary projections (the first layer's Q projection stands for all; the
    /// profile default is chosen from it).
    pub fn projection_type(&self) -> GgmlType {
        self.layers[0].wq.w.ty
    }

    /// Types used per tensor class, for receipts: (class, type).
    pub fn formats(&self) -> Vec<(String, GgmlType)> {
        let mut v = vec![("token_embd".to_string(), self.tok_embd.ty)];
        if !self.output_is_tied {
            v.push(("output".to_string(), self.output.ty));
        }
        let mut proj: Vec<GgmlType> = self
            .layers
            .iter()
            .flat_map(|l| {
                [
                    l.wq.w.ty,
                    l.wk.w.ty,
                    l.wv.w.ty,
                    l.wo.w.ty,
                    l.ffn_up.w.ty,
                    l.ffn_gate.w.ty,
                    l.ffn_down.w.ty,
                ]
            })
            .collect();
        proj.sort_by_key(|t| t.id());
        proj.dedup();
        v.extend(proj.into_iter().map(|t| ("projections".to_string(), t)));
        v
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Projection,
    Embedding,
}

fn meta_err(f: &GgufFile, key: &str, reason: &str) -> Error {
    Error::Metadata {
        file: f.label().to_string(),
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

fn shape_err(f: &GgufFile, tensor: &str, reason: &str) -> Error {
    Error::BadTensor {
        file: f.label().to_string(),
        tensor: tensor.to_string(),
        reason: reason.to_string(),
    }
}

fn meta_usize(f: &GgufFile, key: &str, default: Option<usize>) -> Result<usize> {
    match f.get(key) {
        None => default.ok_or_else(|| meta_err(f, key, "missing")),
        Some(v) => v
            .as_u64()
            .filter(|&n| n <= u32::MAX as u64)
            .map(|n| n as usize)
            .ok_or_else(|| {
                meta_err(
                    f,
                    key,
                    &format!("expected a non-negative integer below 2^32, got {v:?}"),
                )
            }),
    }
}

fn meta_f32(f: &GgufFile, key: &str, default: Option<f32>) -> Result<f32> {
    match f.get(key) {
        None => default.ok_or_else(|| meta_err(f, key, "missing")),
        Some(v) => v
            .as_f64()
            .map(|x| x as f32)
            .filter(|x| x.is_finite())
            .ok_or_else(|| meta_err(f, key, &format!("expected a finite float, got {v:?}"))),
    }
}

fn missing(f: &GgufFile, name: &str, arch: &str) -> Error {
    Error::MissingTensor {
        file: f.label().to_string(),
        tensor: name.to_string(),
        arch: arch.to_string(),
    }
}

fn mat(f: &GgufFile, name: &str, arch: &str, role: Role) -> Result<Mat> {
    let t = f.tensor(name).ok_or_else(|| missing(f, name, arch))?;
    let allowed: &[GgmlType] = match role {
        Role::Projection => &[
            GgmlType::I2_S,
            GgmlType::TQ1_0,
            GgmlType::TQ2_0,
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
        ],
        Role::Embedding => &[
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q6_K,
        ],
    };
    if !allowed.contains(&t.info.ty) {
        let names: Vec<&str> = allowed.iter().map(|t| t.name()).collect();
        return Err(Error::UnsupportedType {
            file: f.label().to_string(),
            tensor: name.to_string(),
            reason: format!(
                "type {} is not supported for this role (expected one of {})",
                t.info.ty,
                names.join(", ")
            ),
        });
    }
    if t.info.shape.len() != 2 {
        return Err(shape_err(
            f,
            name,
            &format!("expected a 2-D matrix, shape is {:?}", t.info.shape),
        ));
    }
    let start = (f.header().data_offset + t.info.offset) as usize;
    Ok(Mat {
        name: name.to_string(),
        ty: t.info.ty,
        k: t.info.shape[0] as usize,
        m: t.info.shape[1] as usize,
        range: start..start + t.data.len(),
    })
}

fn check_mat(f: &GgufFile, m: &Mat, k: usize, rows: usize) -> Result<()> {
    if m.k != k || m.m != rows {
        return Err(shape_err(
            f,
            &m.name,
            &format!(
                "shape is [{}, {}], the hyper-parameters call for [{k}, {rows}]",
                m.k, m.m
            ),
        ));
    }
    Ok(())
}

fn norm(f: &GgufFile, name: &str, arch: &str, n: usize) -> Result<Vec<f32>> {
    let t = f.tensor(name).ok_or_else(|| missing(f, name, arch))?;
    if t.info.n_elements() != n as u64 || t.info.shape.len() != 1 {
        return Err(shape_err(
            f,
            name,
            &format!("expected shape [{n}], found {:?}", t.info.shape),
        ));
    }
    match t.info.ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            crate::quant::dequantize(t.info.ty, t.data, n)
        }
        other => Err(Error::UnsupportedType {
            file: f.label().to_string(),
            tensor: name.to_string(),
            reason: format!("norm weights must be f32, f16 or bf16, found {other}"),
        }),
    }
}

fn scale(f: &GgufFile, name: &str) -> Result<Option<f32>> {
    let Some(t) = f.tensor(name) else {
        return Ok(None);
    };
    if t.info.ty != GgmlType::F32 || t.info.n_elements() != 1 {
        return Err(shape_err(
            f,
            name,
            &format!(
                "a projection scale must be one f32, found {} {:?}",
                t.info.ty, t.info.shape
            ),
        ));
    }
    let v = f32::from_le_bytes(t.data[..4].try_into().expect("4 bytes"));
    if !v.is_finite() {
        return Err(shape_err(f, name, &format!("scale {v} is not finite")));
    }
    Ok(Some(v))
}
