//! [`ExternalOracle`]: a user's tree behind the [`Oracle`] trait, through the compiled shim.

use std::ffi::c_void;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use xval_engine::model::Outputs;
use xval_engine::numerics::Numerics;
use xval_engine::taps::TapFilter;

use super::api::Api;
use super::ffi::{load_shim, meta_string, node_callback, Shim, XvalInfo, XvalParams};
use super::identity::{build_identity, version};
use super::{inspect, numerics, shim, tree, Inspected, LOG_ECHO, REFERENCE_KERNELS_NOTE};
use crate::error::{Error, Result};
use crate::llama_common::{
    check_prompt, check_settings, clamp_len, decode_with_taps, detokenize_with, fusion_mismatch,
    grow_call, latch_fusion, loaded, next_position, path_to_cstring, piece_with, prepare_model,
    tokenize_with, FUSION_ENV,
};
use crate::oracle::{
    Evaluation, KvType, ModelInfo, Oracle, OracleIdentity, OracleSettings, ReferenceKernels,
    SettingsIdentity, TokenId,
};
use crate::tap_capture::Capture;

/// The external oracle.
pub struct ExternalOracle {
    shim: Shim,
    handle: NonNull<c_void>,
    /// Registered with the shim as the node callback's user data; freed after the handle.
    capture: *mut Capture,
    identity: OracleIdentity,
    info: ModelInfo,
    n_vocab: usize,
    n_ctx: usize,
    n_ubatch: usize,
    n_past: Option<usize>,
    _transcoded: Option<tempfile::TempPath>,
}

impl ExternalOracle {
    pub fn load(dir: &Path, path: &Path, settings: &OracleSettings) -> Result<ExternalOracle> {
        let unavailable = |reason: String| Error::Unavailable {
            oracle: format!("dir:{}", dir.display()),
            reason,
        };
        check_settings(settings, REFERENCE_KERNELS_NOTE)?;
        let Inspected { tree, api } = inspect(dir)?;
        let fusion = fusion_setting(&tree, settings)?;
        let compiled = shim::build(&tree, &api).map_err(unavailable)?;
        if !compiled.cached {
            // Once per tree state: say where the time went (the worker's stderr is kept).
            eprintln!(
                "xval: compiled the external-oracle shim for {} in {:.1} s ({})",
                tree.root.display(),
                compiled.compile_s,
                compiled.path.display()
            );
        }
        let shim = load_shim(&compiled.path).map_err(unavailable)?;
        // SAFETY: plain initialisation, idempotent in the shim.
        unsafe { (shim.init)(LOG_ECHO.load(Ordering::Relaxed) as i32) };

        let input = prepare_model(path, api.i2s)?;
        let label = path.display().to_string();
        let model = input.transcoded.as_deref().unwrap_or(path);
        let (handle, capture, kv_type, kv_note) =
            match open_context(&shim, model, &label, settings.kv_type, settings) {
                Err(Error::Llama(why))
                    if settings.kv_fallback
                        && settings.kv_type == KvType::F32
                        && why.contains(V_CACHE_REFUSAL) =>
                {
                    let (h, c) = open_context(&shim, model, &label, KvType::F16, settings)?;
                    let note = format!(
                        "F32 asked, F16 used: the tree refused an F32 V cache without flash \
                         attention (\"{V_CACHE_REFUSAL}\"), as bitnet.cpp's fork does; the \
                         engine mirrors F16"
                    );
                    (h, c, KvType::F16, Some(note))
                }
                r => {
                    let (h, c) = r?;
                    (h, c, settings.kv_type, None)
                }
            };
        let mut info = XvalInfo::default();
        // SAFETY: valid handle; writes the struct.
        unsafe { (shim.get_info)(handle.as_ptr(), &mut info) };
        let model_info = model_info(&shim, handle, &info, label);
        // SAFETY: a plain query, and the tree's `llama_print_system_info` (its static
        // string's buffer, valid until the next call).
        let (has_detok, system_info) = unsafe {
            (
                (shim.has_detokenize)() != 0,
                crate::llama_common::system_info(|| (shim.system_info)()),
            )
        };
        let (f16_activations, f16_why) = numerics::f16_activations(&tree, &system_info);
        let mut build = build_identity(&shim, &tree, &api, &compiled, has_detok, system_info);
        build.flags.insert("xval.f16_activations".into(), f16_why);
        let identity = OracleIdentity {
            kind: "external".into(),
            numerics: Numerics::new(input.profile())
                .with_kv(kv_type)
                .with_f16_activations(f16_activations),
            version: version(&shim, &tree),
            build,
            settings: SettingsIdentity {
                threads: settings.threads,
                n_ctx: info.n_ctx as usize,
                n_batch: info.n_batch as usize,
                n_ubatch: info.n_ubatch as usize,
                kv_type,
                kv_note,
                flash_attn: settings.flash_attn,
                fusion,
                reference_kernels: ReferenceKernels {
                    enabled: false,
                    available: false,
                    note: REFERENCE_KERNELS_NOTE.into(),
                },
                weight_repack: weight_repack(&tree, &api),
                outputs: "all positions".into(),
                model_input: input.description,
            },
            recorded: None,
        };
        Ok(ExternalOracle {
            shim,
            handle,
            capture,
            identity,
            n_vocab: model_info.n_vocab,
            info: model_info,
            n_ctx: info.n_ctx as usize,
            n_ubatch: info.n_ubatch.min(info.n_batch) as usize,
            n_past: None,
            _transcoded: loaded(input.transcoded),
        })
    }

    /// Decode `tokens` at positions `start..start + n` with every position an output.
    fn run(
        &mut self,
        tokens: &[TokenId],
        start: usize,
        clear: bool,
        outputs: Outputs,
        taps: &TapFilter,
    ) -> Result<Evaluation> {
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let (shim, h) = (self.shim, self.handle.as_ptr());
        self.n_past = None;
        // SAFETY: the capture is the one the shim's node callback writes to and nothing else
        // references it; the logits rows hold n_vocab floats and live until the next decode.
        let eval = unsafe {
            decode_with_taps(
                self.capture,
                self.info.n_layer,
                taps,
                tokens,
                start,
                self.n_vocab,
                outputs,
                // SAFETY: valid handle; ids holds the tokens, checked against the vocabulary.
                || {
                    let all = outputs == Outputs::All;
                    (shim.eval)(h, ids.as_ptr(), ids.len() as i32, start as i32, clear, all)
                },
                // SAFETY: valid handle; asked for outputs only.
                |i| (shim.logits_ith)(h, i),
                || shim.recent_log(3),
            )
        }?;
        self.n_past = Some(start + tokens.len());
        Ok(eval)
    }
}

impl Oracle for ExternalOracle {
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
        let (shim, h) = (self.shim, self.handle);
        tokenize_with(text, |len, ids| {
            // SAFETY: valid handle; text pointer/length describe `text`; ids writable for its
            // length (clamped to i32).
            unsafe {
                (shim.tokenize)(
                    h.as_ptr(),
                    text.as_ptr().cast(),
                    len,
                    ids.as_mut_ptr(),
                    clamp_len(ids),
                    add_special,
                    parse_special,
                )
            }
        })
    }

    fn detokenize(
        &mut self,
        tokens: &[TokenId],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>> {
        let (shim, h) = (self.shim, self.handle);
        detokenize_with(tokens, self.n_vocab, |ids, n, buf, len| {
            // SAFETY: valid handle; ids and buf describe live buffers of the given lengths.
            unsafe {
                (shim.detokenize)(
                    h.as_ptr(),
                    ids,
                    n,
                    buf,
                    len,
                    remove_special,
                    unparse_special,
                )
            }
        })
    }

    fn token_piece(&mut self, token: TokenId, special: bool) -> Result<Vec<u8>> {
        let (shim, h) = (self.shim, self.handle);
        piece_with(token, self.n_vocab, |t, buf, len| {
            // SAFETY: valid handle and token id; buf is writable for its length.
            unsafe { (shim.token_to_piece)(h.as_ptr(), t, buf, len, special) }
        })
    }

    fn evaluate(&mut self, tokens: &[TokenId], taps: &TapFilter) -> Result<Evaluation> {
        check_prompt(tokens, self.n_ubatch, self.n_vocab)?;
        // A fresh sequence: the shim clears the KV cache first.
        self.run(tokens, 0, true, Outputs::All, taps)
    }

    fn decode_step(&mut self, token: TokenId, taps: &TapFilter) -> Result<Evaluation> {
        let pos = next_position(self.n_past, self.n_ctx, token, self.n_vocab)?;
        self.run(&[token], pos, false, Outputs::All, taps)
    }

    fn evaluate_last(&mut self, tokens: &[TokenId]) -> Result<Evaluation> {
        check_prompt(tokens, self.n_ubatch, self.n_vocab)?;
        self.run(tokens, 0, true, Outputs::Last, &TapFilter::none())
    }
}

impl Drop for ExternalOracle {
    fn drop(&mut self) {
        // SAFETY: created in `load`, freed once; the capture after the context that calls it.
        unsafe {
            (self.shim.free)(self.handle.as_ptr());
            drop(Box::from_raw(self.capture));
        }
    }
}

/// Whether op fusion is on: only a ggml that has it reads the variable (`GGML_CPU_DISABLE_FUSION`),
/// and the process-wide latch must agree with what is asked.
fn fusion_setting(tree: &tree::Tree, settings: &OracleSettings) -> Result<bool> {
    if tree_fuses(tree) {
        let disabled = latch_fusion(settings.fusion);
        if disabled == settings.fusion {
            return Err(fusion_mismatch(settings.fusion, disabled));
        }
        Ok(!disabled)
    } else if settings.fusion {
        Err(Error::Unsupported(
            "op fusion requested, but this tree's ggml has none".into(),
        ))
    } else {
        Ok(false)
    }
}

/// Whether the tree's ggml has op fusion: only a ggml that has it reads `GGML_CPU_DISABLE_FUSION`.
pub(super) fn tree_fuses(tree: &tree::Tree) -> bool {
    let cpu_c = tree.llama_root.join("ggml/src/ggml-cpu/ggml-cpu.c");
    std::fs::read_to_string(&cpu_c).is_ok_and(|s| s.contains(FUSION_ENV))
}

/// What bitnet.cpp's fork logs when asked for an F32 V cache without flash attention
/// (`llama_new_context_with_model`: any V type but F16 counts as quantized there).
const V_CACHE_REFUSAL: &str = "V cache quantization requires flash_attn";

/// Load the model and create its context through the shim with a `kv` cache. Returns the
/// handle and the capture its node callback writes to (freed after the handle, in `Drop`).
fn open_context(
    shim: &Shim,
    model: &Path,
    label: &str,
    kv: KvType,
    settings: &OracleSettings,
) -> Result<(NonNull<c_void>, *mut Capture)> {
    let cpath = path_to_cstring(model)?;
    let capture = Box::into_raw(Box::<Capture>::default());
    let params = XvalParams {
        n_ctx: settings.n_ctx as u32,
        n_threads: settings.threads as i32,
        kv_f16: (kv == KvType::F16) as i32,
        flash_attn: settings.flash_attn as i32,
        node_fn: Some(node_callback),
        node_user_data: capture.cast(),
    };
    let mut stage = 0i32;
    // SAFETY: the path and params outlive the call; `capture` stays allocated until after
    // xval_free.
    let handle = unsafe {
        (shim.log_clear)();
        (shim.load)(cpath.as_ptr(), &params, &mut stage)
    };
    let Some(handle) = NonNull::new(handle) else {
        // SAFETY: nothing refers to the capture (loading failed, the shim freed its state).
        drop(unsafe { Box::from_raw(capture) });
        let reason = shim.recent_log(6);
        return Err(match stage {
            1 => Error::Load {
                path: label.to_string(),
                reason,
            },
            2 => Error::Llama(format!("context creation failed: {reason}")),
            _ => Error::Llama("out of memory".into()),
        });
    };
    Ok((handle, capture))
}

/// The model as the tree loaded it; head counts from the metadata where the API has no getter.
fn model_info(shim: &Shim, handle: NonNull<c_void>, info: &XvalInfo, label: String) -> ModelInfo {
    let meta = |key: &str| meta_string(shim, handle, key);
    let arch = meta("general.architecture");
    let n_head = if info.n_head >= 0 {
        info.n_head.max(0) as usize
    } else {
        meta(&format!("{arch}.attention.head_count"))
            .parse()
            .unwrap_or(0)
    };
    let n_head_kv = if info.n_head_kv >= 0 {
        info.n_head_kv.max(0) as usize
    } else {
        meta(&format!("{arch}.attention.head_count_kv"))
            .parse()
            .unwrap_or(n_head)
    };
    ModelInfo {
        path: label,
        architecture: arch,
        description: grow_call(
            256,
            |b: &mut [u8]| {
                // SAFETY: valid handle; the buffer is writable for its length.
                unsafe { (shim.desc)(handle.as_ptr(), b.as_mut_ptr().cast(), b.len()) }
            },
            "llama_model_desc",
        )
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default(),
        n_vocab: info.n_vocab.max(0) as usize,
        n_layer: info.n_layer.max(0) as usize,
        n_embd: info.n_embd.max(0) as usize,
        n_head,
        n_head_kv,
    }
}

/// Whether weights may be repacked at load: turned off where the API allows; older trees
/// repack only if their ggml-cpu has a repacking buffer type at all.
fn weight_repack(tree: &tree::Tree, api: &Api) -> bool {
    !api.extra_bufts
        && ["repack.cpp", "ggml-cpu-aarch64.cpp"]
            .iter()
            .any(|f| tree.llama_root.join("ggml/src/ggml-cpu").join(f).is_file())
}
