//! Weights and hyper-parameters as ggml reads them: `gguf_init_from_file` (ggml's own GGUF
//! parser, not ours) creates the tensor descriptors, one CPU backend buffer holds their data,
//! which is read from the file at the offsets ggml's parser reports. The hyper-parameters are
//! read under llama.cpp's key names (`<arch>.embedding_length`, ...), so that a mistake in our
//! own reader cannot hide by being shared with the oracle.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use crate::error::{Error, Result};
use crate::ggml_rt::{self, Buffer, Context, CpuBackend, Tensor};
use crate::llama_common::path_to_cstring;

/// The feed-forward activation (`bitnet`: SiLU, `bitnet-b1.58` / `bitnet-25`: ReLU^2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Activation {
    Silu,
    ReluSqr,
}

impl Activation {
    pub(super) fn name(self) -> &'static str {
        match self {
            Activation::Silu => "silu (swiglu)",
            Activation::ReluSqr => "relu^2",
        }
    }
}

/// Hyper-parameters under llama.cpp's names.
#[derive(Clone, Debug)]
pub(super) struct HParams {
    pub arch: String,
    pub n_embd: i64,
    pub n_layer: usize,
    pub n_ff: i64,
    pub n_head: i64,
    pub n_head_kv: i64,
    pub head_dim: i64,
    pub n_rot: i64,
    pub n_ctx_train: i64,
    pub n_vocab: i64,
    pub rms_eps: f32,
    pub freq_base: f32,
    pub activation: Activation,
}

impl HParams {
    pub(super) fn n_embd_kv(&self) -> i64 {
        self.head_dim * self.n_head_kv
    }
}

/// A projection and its optional one-element scale (`build_lora_mm(w, cur, w_s)`).
pub(super) struct Linear {
    pub w: Tensor,
    pub s: Option<Tensor>,
}

pub(super) struct Layer {
    pub attn_norm: Tensor,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub attn_sub_norm: Tensor,
    pub wo: Linear,
    pub ffn_norm: Tensor,
    pub ffn_up: Linear,
    pub ffn_gate: Linear,
    pub ffn_sub_norm: Tensor,
    pub ffn_down: Linear,
}

/// Every weight, placed in one backend buffer.
pub(super) struct Weights {
    pub hp: HParams,
    pub tok_embd: Tensor,
    pub output_norm: Tensor,
    /// `output.weight` when the file has one, else the tied `token_embd.weight`.
    pub output: Tensor,
    pub tied_output: bool,
    pub layers: Vec<Layer>,
    /// Keeps the weights' data alive (dropped before the context, by field order).
    _buffer: Buffer,
    _ctx: Context,
}

/// Owns a `gguf_context`.
struct Gguf(NonNull<sys::gguf_context>);

impl Drop for Gguf {
    fn drop(&mut self) {
        // SAFETY: created by gguf_init_from_file, freed once.
        unsafe { sys::gguf_free(self.0.as_ptr()) }
    }
}

impl Gguf {
    fn key(&self, key: &str) -> Option<i64> {
        let c = CString::new(key).ok()?;
        // SAFETY: live gguf context, NUL-terminated key.
        let id = unsafe { sys::gguf_find_key(self.0.as_ptr(), c.as_ptr()) };
        (id >= 0).then_some(id)
    }

    fn str(&self, label: &str, key: &str) -> Result<Option<String>> {
        let Some(id) = self.key(key) else {
            return Ok(None);
        };
        // SAFETY: valid key id.
        if unsafe { sys::gguf_get_kv_type(self.0.as_ptr(), id) } != sys::GGUF_TYPE_STRING {
            return Err(bad(label, format!("{key}: not a string")));
        }
        // SAFETY: a string key: ggml returns a NUL-terminated string owned by the context.
        let s = unsafe { CStr::from_ptr(sys::gguf_get_val_str(self.0.as_ptr(), id)) };
        Ok(Some(s.to_string_lossy().into_owned()))
    }

    /// An integer key of any integer type, as llama.cpp's `get_key` accepts.
    fn int(&self, label: &str, key: &str) -> Result<Option<i64>> {
        let Some(id) = self.key(key) else {
            return Ok(None);
        };
        let g = self.0.as_ptr();
        // SAFETY: valid key id; each getter matches the type checked first.
        let v = unsafe {
            match sys::gguf_get_kv_type(g, id) {
                sys::GGUF_TYPE_UINT8 => sys::gguf_get_val_u8(g, id) as i64,
                sys::GGUF_TYPE_INT8 => sys::gguf_get_val_i8(g, id) as i64,
                sys::GGUF_TYPE_UINT16 => sys::gguf_get_val_u16(g, id) as i64,
                sys::GGUF_TYPE_INT16 => sys::gguf_get_val_i16(g, id) as i64,
                sys::GGUF_TYPE_UINT32 => sys::gguf_get_val_u32(g, id) as i64,
                sys::GGUF_TYPE_INT32 => sys::gguf_get_val_i32(g, id) as i64,
                sys::GGUF_TYPE_UINT64 => {
                    i64::try_from(sys::gguf_get_val_u64(g, id)).unwrap_or(i64::MAX)
                }
                sys::GGUF_TYPE_INT64 => sys::gguf_get_val_i64(g, id),
                _ => return Err(bad(label, format!("{key}: not an integer"))),
            }
        };
        Ok(Some(v))
    }

    fn f32(&self, label: &str, key: &str) -> Result<Option<f32>> {
        let Some(id) = self.key(key) else {
            return Ok(None);
        };
        // SAFETY: valid key id; getter matches the checked type.
        unsafe {
            match sys::gguf_get_kv_type(self.0.as_ptr(), id) {
                sys::GGUF_TYPE_FLOAT32 => Ok(Some(sys::gguf_get_val_f32(self.0.as_ptr(), id))),
                sys::GGUF_TYPE_FLOAT64 => {
                    Ok(Some(sys::gguf_get_val_f64(self.0.as_ptr(), id) as f32))
                }
                _ => Err(bad(label, format!("{key}: not a float"))),
            }
        }
    }
}

fn bad(label: &str, reason: impl Into<String>) -> Error {
    Error::BadModel {
        path: label.to_string(),
        reason: reason.into(),
    }
}

/// A positive integer key below 2^31 (or `default` when absent).
fn positive(g: &Gguf, label: &str, key: &str, default: Option<i64>) -> Result<i64> {
    match g.int(label, key)?.or(default) {
        Some(v) if v > 0 && v < (1 << 31) => Ok(v),
        Some(v) => Err(bad(label, format!("{key} = {v}: out of range"))),
        None => Err(bad(label, format!("{key}: missing"))),
    }
}

impl Weights {
    /// Read `path` (`label` names the user's file in messages) into a buffer of `backend`.
    pub(super) fn load(path: &Path, label: &str, backend: &CpuBackend) -> Result<Weights> {
        let cpath = path_to_cstring(path)?;
        let mut meta: *mut sys::ggml_context = std::ptr::null_mut();
        // SAFETY: NUL-terminated path; `meta` receives a new no-alloc context we then own.
        let g = unsafe {
            sys::gguf_init_from_file(
                cpath.as_ptr(),
                sys::gguf_init_params {
                    no_alloc: true,
                    ctx: &mut meta,
                },
            )
        };
        let gguf = NonNull::new(g).map(Gguf).ok_or_else(|| Error::Load {
            path: label.into(),
            reason: format!(
                "ggml's gguf_init_from_file refused the file: {}",
                crate::llama_cpp::recent_log(3)
            ),
        })?;
        // SAFETY: a fresh context handed to us by gguf_init_from_file.
        let ctx = unsafe { Context::from_raw(meta) }.ok_or_else(|| Error::Load {
            path: label.into(),
            reason: "gguf_init_from_file created no tensor context".into(),
        })?;
        let mut hp = hparams(&gguf, label)?;

        let buffer = Buffer::alloc_ctx_tensors(&ctx, backend)?;
        buffer.set_weights_usage();
        load_data(&gguf, &ctx, path, label)?;

        let need = |name: &str| -> Result<Tensor> {
            ctx.tensor(name)
                .ok_or_else(|| bad(label, format!("tensor '{name}' is missing")))
        };
        let linear = |base: &str| -> Result<Linear> {
            Ok(Linear {
                w: need(&format!("{base}.weight"))?,
                s: ctx.tensor(&format!("{base}.scale")),
            })
        };
        let tok_embd = need("token_embd.weight")?;
        // The vocabulary size is the embedding's row count, as llama.cpp takes it.
        // SAFETY: a tensor of our live context.
        hp.n_vocab = unsafe { (*tok_embd).ne[1] };
        let output_norm = need("output_norm.weight")?;
        let (output, tied_output) = match ctx.tensor("output.weight") {
            Some(t) => (t, false),
            None => (tok_embd, true),
        };
        let mut layers = Vec::with_capacity(hp.n_layer);
        for il in 0..hp.n_layer {
            let b = |t: &str| format!("blk.{il}.{t}");
            layers.push(Layer {
                attn_norm: need(&b("attn_norm.weight"))?,
                wq: linear(&b("attn_q"))?,
                wk: linear(&b("attn_k"))?,
                wv: linear(&b("attn_v"))?,
                attn_sub_norm: need(&b("attn_sub_norm.weight"))?,
                wo: linear(&b("attn_output"))?,
                ffn_norm: need(&b("ffn_norm.weight"))?,
                ffn_up: linear(&b("ffn_up"))?,
                ffn_gate: linear(&b("ffn_gate"))?,
                ffn_sub_norm: need(&b("ffn_sub_norm.weight"))?,
                ffn_down: linear(&b("ffn_down"))?,
            });
        }
        let w = Weights {
            hp,
            tok_embd,
            output_norm,
            output,
            tied_output,
            layers,
            _buffer: buffer,
            _ctx: ctx,
        };
        w.check_shapes(label)?;
        Ok(w)
    }

    /// Every tensor has the shape llama.cpp's `create_tensor` would demand (a wrong shape would
    /// otherwise abort inside ggml).
    fn check_shapes(&self, label: &str) -> Result<()> {
        let hp = &self.hp;
        let check = |t: Tensor, want: &[i64]| -> Result<()> {
            // SAFETY: tensors of our live context.
            let (ne, name) = unsafe { ((*t).ne, ggml_rt::name(t)) };
            let mut full = [1i64; 4];
            full[..want.len()].copy_from_slice(want);
            if ne == full {
                Ok(())
            } else {
                Err(bad(
                    label,
                    format!("tensor '{name}' has shape {ne:?}, expected {full:?}"),
                ))
            }
        };
        let lin = |l: &Linear, k: i64, m: i64| -> Result<()> {
            check(l.w, &[k, m])?;
            l.s.map_or(Ok(()), |s| check(s, &[1]))
        };
        check(self.tok_embd, &[hp.n_embd, hp.n_vocab])?;
        check(self.output_norm, &[hp.n_embd])?;
        check(self.output, &[hp.n_embd, hp.n_vocab])?;
        let kv = hp.n_embd_kv();
        for l in &self.layers {
            check(l.attn_norm, &[hp.n_embd])?;
            lin(&l.wq, hp.n_embd, hp.n_embd)?;
            lin(&l.wk, hp.n_embd, kv)?;
            lin(&l.wv, hp.n_embd, kv)?;
            check(l.attn_sub_norm, &[hp.n_embd])?;
            lin(&l.wo, hp.n_embd, hp.n_embd)?;
            check(l.ffn_norm, &[hp.n_embd])?;
            lin(&l.ffn_up, hp.n_embd, hp.n_ff)?;
            lin(&l.ffn_gate, hp.n_embd, hp.n_ff)?;
            check(l.ffn_sub_norm, &[hp.n_ff])?;
            lin(&l.ffn_down, hp.n_ff, hp.n_embd)?;
        }
        Ok(())
    }
}

fn hparams(g: &Gguf, label: &str) -> Result<HParams> {
    let arch = g
        .str(label, "general.architecture")?
        .ok_or_else(|| bad(label, "general.architecture: missing"))?;
    let default_act = match arch.as_str() {
        "bitnet" => Activation::Silu,
        "bitnet-b1.58" | "bitnet-25" => Activation::ReluSqr,
        other => {
            return Err(Error::Unsupported(format!(
                "{label}: architecture '{other}': the ggml-graph oracle builds bitnet, \
                 bitnet-b1.58 and bitnet-25 graphs"
            )))
        }
    };
    let k = |s: &str| format!("{arch}.{s}");
    let size = |s: &str, default: Option<i64>| positive(g, label, &k(s), default);
    let n_embd = size("embedding_length", None)?;
    let n_layer = size("block_count", None)?;
    let n_ff = size("feed_forward_length", None)?;
    let n_head = size("attention.head_count", None)?;
    let n_head_kv = size("attention.head_count_kv", Some(n_head))?;
    if n_embd % n_head != 0 || n_head % n_head_kv != 0 {
        return Err(bad(
            label,
            format!("{n_embd} embedding, {n_head} heads, {n_head_kv} KV heads do not divide"),
        ));
    }
    let head_dim = n_embd / n_head;
    let n_rot = size("rope.dimension_count", Some(head_dim))?;
    if n_rot > head_dim || n_rot % 2 != 0 {
        return Err(bad(
            label,
            format!("rope.dimension_count {n_rot}: must be even and <= {head_dim}"),
        ));
    }
    let n_ctx_train = size("context_length", None)?;
    let rms_eps = g
        .f32(label, &k("attention.layer_norm_rms_epsilon"))?
        .ok_or_else(|| {
            bad(
                label,
                format!("{}: missing", k("attention.layer_norm_rms_epsilon")),
            )
        })?;
    let freq_base = g.f32(label, &k("rope.freq_base"))?.unwrap_or(10000.0);
    let activation = match g.str(label, &k("hidden_activation"))?.as_deref() {
        None => default_act,
        Some("silu") | Some("swish") => Activation::Silu,
        Some("relu2") | Some("relu_sqr") | Some("relu_squared") | Some("relu^2") => {
            Activation::ReluSqr
        }
        Some(other) => {
            return Err(bad(
                label,
                format!(
                    "{}: unsupported activation '{other}'",
                    k("hidden_activation")
                ),
            ))
        }
    };
    Ok(HParams {
        arch,
        n_embd,
        n_layer: n_layer as usize,
        n_ff,
        n_head,
        n_head_kv,
        head_dim,
        n_rot,
        n_ctx_train,
        // Set from the embedding's shape once the tensors exist.
        n_vocab: 0,
        rms_eps,
        freq_base,
        activation,
    })
}

/// Copy every tensor's bytes from the file into its place in the buffer, in chunks.
fn load_data(g: &Gguf, ctx: &Context, path: &Path, label: &str) -> Result<()> {
    const CHUNK: usize = 64 << 20;
    let mut file = File::open(path).map_err(|e| bad(label, format!("cannot open: {e}")))?;
    let file_len = file
        .metadata()
        .map_err(|e| bad(label, format!("cannot stat: {e}")))?
        .len();
    let gp = g.0.as_ptr();
    // SAFETY: live gguf context; plain getters.
    let (n, data_offset) = unsafe { (sys::gguf_get_n_tensors(gp), sys::gguf_get_data_offset(gp)) };
    let mut buf = Vec::new();
    for i in 0..n {
        // SAFETY: index below the tensor count; names are NUL-terminated and owned by `g`.
        let (name, offset, size) = unsafe {
            (
                CStr::from_ptr(sys::gguf_get_tensor_name(gp, i))
                    .to_string_lossy()
                    .into_owned(),
                sys::gguf_get_tensor_offset(gp, i),
                sys::gguf_get_tensor_size(gp, i),
            )
        };
        let t = ctx
            .tensor(&name)
            .ok_or_else(|| bad(label, format!("tensor '{name}' listed but not created")))?;
        let start = (data_offset as u64).saturating_add(offset as u64);
        if start.saturating_add(size as u64) > file_len {
            return Err(bad(
                label,
                format!(
                    "tensor '{name}': data {start}+{size} past the end of the file ({file_len})"
                ),
            ));
        }
        file.seek(SeekFrom::Start(start))
            .map_err(|e| bad(label, format!("seek to '{name}': {e}")))?;
        let mut done = 0;
        while done < size {
            let len = (size - done).min(CHUNK);
            buf.resize(len, 0);
            file.read_exact(&mut buf)
                .map_err(|e| bad(label, format!("reading tensor '{name}': {e}")))?;
            // SAFETY: `t` is an allocated tensor of our context; write_bytes checks the range.
            unsafe { ggml_rt::write_bytes(t, done, &buf)? };
            done += len;
        }
    }
    Ok(())
}
