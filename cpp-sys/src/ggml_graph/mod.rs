//! The ggml-graph oracle: the BitNet forward pass built by us from ggml ops (the pinned ggml of
//! the built-in llama.cpp), for the architectures mainline llama.cpp cannot run.
//!
//! Mainline llama.cpp hard-codes SiLU in its `bitnet` graph, so it cannot run the official
//! 2B-4T file (`bitnet-b1.58`, ReLU^2). This oracle builds the same graph as llama.cpp does for
//! `bitnet`, op for op and name for name (see `graph.rs`), with the activation the architecture
//! asks for. Everything numeric is ggml's: its GGUF parser reads the weights (I2_S files first
//! go through the lossless I2_S -> TQ2_0 transcode, as for the built-in oracle), its CPU
//! backend runs the ops, llama.cpp's tokenizer (a vocabulary-only load) tokenizes.
//!
//! Because it owns its CPU backend, ggml's reference mode (`ggml_backend_cpu_set_use_ref`) is
//! reachable here, unlike for llama.cpp's own graph.
//!
//! Trust comes from agreement: on every `bitnet` fixture it must match llama.cpp's own graph
//! tap for tap (NMSE <= 1e-6; measured: see `harness/tests/oracle_ggml_graph.rs`) before its
//! numbers on `bitnet-b1.58` mean anything.

mod graph;
mod weights;

use std::path::Path;
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;
use xval_engine::gguf::{GgufFile, GgufWriter, Value};
use xval_engine::taps::TapFilter;

use crate::error::{Error, Result};
use crate::ggml_rt::{self, Context, CpuBackend, Graph, GraphAllocator};
use crate::llama_common::{
    check_prompt, check_ranges, loaded, mainline_numerics, next_position, path_to_cstring,
    prepare_model, temp_gguf,
};
use crate::llama_cpp::vocab::Vocab;
use crate::llama_cpp::{self as lc};
use crate::oracle::{
    Evaluation, KvType, ModelInfo, Oracle, OracleIdentity, OracleSettings, ReferenceKernels,
    SettingsIdentity, TokenId,
};
use crate::tap_capture::{wanted_names, Capture, Elem, NodeValues};
use graph::{Inputs, KvCache};
use weights::Weights;

/// Open the ggml-graph oracle on `model`.
pub fn open(model: &Path, settings: &OracleSettings) -> Result<Box<dyn Oracle>> {
    Ok(Box::new(GgmlGraphOracle::load(model, settings)?))
}

/// llama.cpp pads the context and the attended cells to multiples of this
/// (`llama_context`: `GGML_PAD(n_ctx, 256)`; `llama_kv_cache::get_n_kv`: `max(n_pad, 256)`).
const KV_PAD: i64 = 256;

fn pad(n: i64, to: i64) -> i64 {
    (n + to - 1) / to * to
}

/// Our BitNet graph on ggml's CPU backend.
pub struct GgmlGraphOracle {
    // Field order is drop order: graph state before weights, weights before the backend.
    galloc: GraphAllocator,
    kv: KvCache,
    weights: Weights,
    backend: CpuBackend,
    vocab: Vocab,
    /// The vocabulary-only llama.cpp model behind `vocab` (freed in `Drop`).
    vocab_model: NonNull<sys::llama_model>,
    identity: OracleIdentity,
    info: ModelInfo,
    n_past: Option<usize>,
    /// The transcoded copy of an I2_S model, deleted when the oracle goes.
    _transcoded: Option<tempfile::TempPath>,
    _vocab_file: tempfile::TempPath,
}

impl GgmlGraphOracle {
    /// Load `path` with `settings`.
    pub fn load(path: &Path, settings: &OracleSettings) -> Result<GgmlGraphOracle> {
        let label = path.display().to_string();
        check_ranges(settings)?;
        if settings.flash_attn {
            return Err(Error::Unsupported(
                "flash attention: the ggml-graph oracle builds the plain soft_max attention \
                 (llama.cpp's default for exact comparisons)"
                    .into(),
            ));
        }
        let g = lc::global(settings.fusion);
        if g.fusion_disabled == settings.fusion {
            return Err(Error::Unsupported(format!(
                "op fusion {} requested, but this process latched GGML_CPU_DISABLE_FUSION the \
                 other way when ggml initialised",
                if settings.fusion { "on" } else { "off" },
            )));
        }

        // Mainline ggml has no I2_S: such files go through the lossless transcode.
        let input = prepare_model(path, false)?;
        let backend = CpuBackend::new(settings.threads, settings.reference_kernels)?;
        lc::clear_log();
        let weights = Weights::load(
            input.transcoded.as_deref().unwrap_or(path),
            &label,
            &backend,
        )?;
        let (vocab_file, vocab_model) = load_vocab(path, &label, &weights.hp.arch)?;
        // SAFETY: the model outlives `vocab` (both dropped together, model last, in Drop).
        let vocab = unsafe { Vocab::of_model(vocab_model.as_ptr()) };
        if vocab.n_vocab as i64 != weights.hp.n_vocab {
            // SAFETY: nothing else refers to the model yet.
            unsafe { sys::llama_model_free(vocab_model.as_ptr()) };
            return Err(Error::BadModel {
                path: label,
                reason: format!(
                    "the tokenizer has {} tokens but token_embd.weight has {} rows",
                    vocab.n_vocab, weights.hp.n_vocab
                ),
            });
        }
        let kv_size = pad(settings.n_ctx as i64, KV_PAD);
        let kv_ty = match settings.kv_type {
            KvType::F32 => sys::GGML_TYPE_F32,
            KvType::F16 => sys::GGML_TYPE_F16,
        };
        let kv = KvCache::new(&weights, kv_size, kv_ty, &backend)?;
        let hp = &weights.hp;
        let info = ModelInfo {
            path: label.clone(),
            architecture: hp.arch.clone(),
            description: format!(
                "{} {} layers, {} embd, {} ffn, activation {}",
                hp.arch,
                hp.n_layer,
                hp.n_embd,
                hp.n_ff,
                hp.activation.name()
            ),
            n_vocab: vocab.n_vocab,
            n_layer: hp.n_layer,
            n_embd: hp.n_embd as usize,
            n_head: hp.n_head as usize,
            n_head_kv: hp.n_head_kv as usize,
        };
        let identity = OracleIdentity {
            kind: "ggml-graph".into(),
            numerics: mainline_numerics(&input, settings),
            version: format!(
                "xval ggml-graph {} on ggml {} (llama.cpp {} tokenizer)",
                env!("CARGO_PKG_VERSION"),
                // SAFETY: static version strings.
                lc::c_str(unsafe { sys::ggml_version() }),
                lc::c_str(unsafe { sys::llama_version() }),
            ),
            build: lc::build_identity(),
            settings: SettingsIdentity {
                threads: settings.threads,
                n_ctx: kv_size as usize,
                n_batch: kv_size as usize,
                n_ubatch: kv_size as usize,
                kv_type: settings.kv_type,
                kv_note: None,
                flash_attn: false,
                fusion: !g.fusion_disabled,
                reference_kernels: ReferenceKernels {
                    enabled: settings.reference_kernels,
                    available: true,
                    note: "ggml_backend_cpu_set_use_ref on the oracle's own CPU backend: \
                           no llamafile sgemm for F32/F16 products, no op fusion; the \
                           per-type vec_dot kernels stay the compiled SIMD ones"
                        .into(),
                },
                weight_repack: false,
                outputs: "all positions".into(),
                model_input: format!(
                    "{}; graph: llama.cpp's bitnet graph rebuilt from ggml ops, activation \
                     {}, lm_head {}",
                    input.description,
                    hp.activation.name(),
                    if weights.tied_output {
                        "tied token_embd"
                    } else {
                        "output.weight"
                    }
                ),
            },
            recorded: None,
        };
        Ok(GgmlGraphOracle {
            galloc: GraphAllocator::new()?,
            kv,
            weights,
            backend,
            vocab,
            vocab_model,
            identity,
            info,
            n_past: None,
            _transcoded: loaded(input.transcoded),
            _vocab_file: vocab_file,
        })
    }

    /// Evaluate `tokens` at positions `start..start + n` (cells `0..start` already hold the
    /// sequence's K/V).
    fn run(&mut self, tokens: &[TokenId], start: usize, taps: &TapFilter) -> Result<Evaluation> {
        let n = tokens.len() as i64;
        let start = start as i64;
        let used = start + n;
        let n_kv = self.kv.kv_size.min(KV_PAD.max(pad(used, KV_PAD)));
        let nodes = graph::max_nodes(self.weights.hp.n_layer);
        let ctx = Context::new(nodes, nodes)?;
        let mut gf = Graph::new(&ctx, nodes)?;
        let inp = graph::build(&ctx, &mut gf, &self.weights, &self.kv, n, n_kv)?;

        let mut capture = Capture::default();
        capture.reset(wanted_names(self.info.n_layer, taps), n as usize);
        let nodes = gf.nodes();
        for &t in &nodes {
            // SAFETY: nodes of the live graph; output flags are set before allocation so that
            // the allocator keeps a wanted node's memory (and its view source's) to the end.
            unsafe {
                if capture.wants(&ggml_rt::name(t)) {
                    sys::ggml_set_output(t);
                    if !(*t).view_src.is_null() {
                        sys::ggml_set_output((*t).view_src);
                    }
                }
            }
        }
        // SAFETY: the logits tensor of this graph.
        unsafe { sys::ggml_set_output(inp.logits) };
        self.galloc.alloc(&gf)?;
        self.n_past = None;
        self.set_inputs(&inp, tokens, start, n_kv)?;
        self.backend.compute(&gf)?;

        // SAFETY: computed output tensor of the live graph.
        let (logits, ne) = unsafe { ggml_rt::read_f32(inp.logits)? };
        if ne[0] as usize != self.info.n_vocab || ne[1] != n {
            return Err(Error::Llama(format!(
                "result_output has shape {ne:?}, expected [{}, {n}]",
                self.info.n_vocab
            )));
        }

        // The computed graph goes through the built-in oracle's capture, node by node in graph
        // order as llama.cpp's scheduler asks about them: same inventory, same last-node-wins.
        for &t in &nodes {
            // SAFETY: nodes of the computed graph; wanted ones were kept by their output flag.
            unsafe {
                let (name, op) = (ggml_rt::name(t), ggml_rt::op_desc(t));
                if capture.ask(t as usize, &name, &op, (*t).ne) {
                    let raw = ggml_rt::read_bytes(t);
                    let values =
                        raw.as_ref()
                            .map_err(ToString::to_string)
                            .map(|bytes| NodeValues {
                                elem: Elem::from_ggml(
                                    i64::from((*t).type_),
                                    &lc::c_str(sys::ggml_type_name((*t).type_)),
                                ),
                                ne: (*t).ne,
                                nb: (*t).nb,
                                bytes,
                            });
                    capture.take(t as usize, values);
                }
            }
        }
        if let Some(e) = capture.error.take() {
            return Err(Error::Capture(e));
        }
        let (out_taps, tap_sources, graph) = capture.finish();
        self.n_past = Some(used as usize);
        Ok(Evaluation {
            start_pos: start as usize,
            tokens: tokens.to_vec(),
            n_vocab: self.info.n_vocab,
            logits,
            taps: out_taps,
            tap_sources,
            graph,
        })
    }

    /// Fill the inputs as llama.cpp's `set_input` methods do for one sequence in one stream.
    fn set_inputs(&self, inp: &Inputs, tokens: &[TokenId], start: i64, n_kv: i64) -> Result<()> {
        let n = tokens.len() as i64;
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let pos: Vec<i32> = (start..start + n).map(|p| p as i32).collect();
        let k_idxs: Vec<i64> = (start..start + n).collect();
        let n_embd_kv = self.weights.hp.n_embd_kv();
        let kv_size = self.kv.kv_size;
        let mut v_idxs = Vec::with_capacity((n * n_embd_kv) as usize);
        for i in 0..n {
            for j in 0..n_embd_kv {
                v_idxs.push(j * kv_size + start + i);
            }
        }
        // Causal mask over the attended cells: cell j holds position j for j < start + n.
        let mut mask = vec![f32::NEG_INFINITY; (n_kv * n) as usize];
        for i in 0..n {
            let p = start + i;
            for j in 0..=p {
                mask[(i * n_kv + j) as usize] = 0.0;
            }
        }
        let out_ids: Vec<i32> = (0..n as i32).collect();
        // SAFETY: input tensors of the allocated graph, written with their exact sizes
        // (`write` checks).
        unsafe {
            ggml_rt::write(inp.tokens, &ids)?;
            ggml_rt::write(inp.pos, &pos)?;
            ggml_rt::write(inp.k_idxs, &k_idxs)?;
            ggml_rt::write(inp.v_idxs, &v_idxs)?;
            ggml_rt::write(inp.mask, &mask)?;
            ggml_rt::write(inp.out_ids, &out_ids)?;
        }
        Ok(())
    }
}

/// llama.cpp's tokenizer for `path`: a vocabulary-only load of a metadata-only copy of the file
/// whose architecture is `bitnet` (llama.cpp refuses architectures it does not know, and its
/// tokenizer does not depend on the architecture).
fn load_vocab(
    path: &Path,
    label: &str,
    arch: &str,
) -> Result<(tempfile::TempPath, NonNull<sys::llama_model>)> {
    let file = GgufFile::open(path).map_err(|e| Error::BadModel {
        path: label.into(),
        reason: e.to_string(),
    })?;
    let mut w = GgufWriter::new();
    let prefix = format!("{arch}.");
    for (key, value) in file.metadata() {
        let (key, value) = if key == "general.architecture" {
            (key.clone(), Value::String("bitnet".into()))
        } else if let Some(rest) = key.strip_prefix(&prefix) {
            (format!("bitnet.{rest}"), value.clone())
        } else {
            (key.clone(), value.clone())
        };
        w.set(key, value).map_err(|e| Error::BadModel {
            path: label.into(),
            reason: format!("cannot copy metadata for the tokenizer: {e}"),
        })?;
    }
    let tmp = temp_gguf("xval-vocab-")?;
    w.write_file(&tmp)
        .map_err(|e| Error::Llama(format!("cannot write the vocabulary file: {e}")))?;
    let cpath = path_to_cstring(&tmp)?;
    // SAFETY: default parameters with vocab_only set; the path outlives the call.
    let model = unsafe {
        let mut mp = sys::llama_model_default_params();
        mp.vocab_only = true;
        mp.n_gpu_layers = 0;
        sys::llama_model_load_from_file(cpath.as_ptr(), mp)
    };
    let model = NonNull::new(model).ok_or_else(|| Error::Load {
        path: label.into(),
        reason: format!(
            "llama.cpp could not load the tokenizer: {}",
            lc::recent_log(6)
        ),
    })?;
    Ok((tmp, model))
}

impl Oracle for GgmlGraphOracle {
    fn identity(&self) -> &OracleIdentity {
        &self.identity
    }

    fn model(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(
        &mut self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<TokenId>> {
        self.vocab.tokenize(text, add_special, parse_special)
    }

    fn detokenize(
        &mut self,
        tokens: &[TokenId],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>> {
        self.vocab
            .detokenize(tokens, remove_special, unparse_special)
    }

    fn token_piece(&mut self, token: TokenId, special: bool) -> Result<Vec<u8>> {
        self.vocab.token_piece(token, special)
    }

    fn evaluate(&mut self, tokens: &[TokenId], taps: &TapFilter) -> Result<Evaluation> {
        check_prompt(tokens, self.kv.kv_size as usize, self.info.n_vocab)?;
        // A fresh sequence: cells past the prompt are masked, cells of the prompt rewritten.
        self.run(tokens, 0, taps)
    }

    fn decode_step(&mut self, token: TokenId, taps: &TapFilter) -> Result<Evaluation> {
        let pos = next_position(
            self.n_past,
            self.kv.kv_size as usize,
            token,
            self.info.n_vocab,
        )?;
        self.run(&[token], pos, taps)
    }
}

impl Drop for GgmlGraphOracle {
    fn drop(&mut self) {
        // SAFETY: loaded in `load`, freed once; `vocab` is not used after this.
        unsafe { sys::llama_model_free(self.vocab_model.as_ptr()) }
    }
}
