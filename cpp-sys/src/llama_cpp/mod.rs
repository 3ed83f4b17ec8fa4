//! The built-in oracle: mainline llama.cpp, built from the pinned crates.io tree
//! (`llama-cpp-sys-2 =0.1.161`), called in-process through its bindgen bindings.
//!
//! Set up for the most exact comparison: F32 K/V cache, flash attention off, ggml's CPU op
//! fusion off (`GGML_CPU_DISABLE_FUSION=1`, read once per process by `ggml_cpu_init`), the
//! whole prompt in one batch (`n_batch = n_ubatch = n_ctx`), every position an output (so the
//! last layer keeps all rows and logits exist for every position), no weight repacking.
//! Taps are captured through `llama_context_params.cb_eval` (see `capture.rs`).
//!
//! I2_S models reach llama.cpp through a lossless transcode to TQ2_0 plus `.scale` tensors
//! (`xval_engine::transcode`), written to a temporary file that lives as long as the oracle.
//!
//! Reference kernels: `ggml_backend_cpu_set_use_ref` needs the CPU backend handle, which
//! llama.cpp creates inside `llama_context` (`backend_cpu = ggml_backend_init_by_type(...)`) and
//! never exposes; it reads no environment variable for it either. So the setting is reported as
//! unavailable here and requests for it are refused.

mod capture;
pub(crate) mod vocab;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use llama_cpp_sys_2 as sys;
use xval_engine::model::Outputs;
use xval_engine::taps::TapFilter;

use crate::error::{Error, Result};
use crate::llama_common::{
    check_prompt, check_settings, decode_with_taps, fusion_mismatch, latch_fusion, loaded,
    mainline_numerics, next_position, path_to_cstring, prepare_model,
};
use crate::oracle::{
    BuildIdentity, Evaluation, KvType, ModelInfo, Oracle, OracleIdentity, OracleSettings,
    ReferenceKernels, SettingsIdentity, TokenId,
};
use crate::tap_capture::Capture;
use vocab::Vocab;

mod build_info {
    include!(concat!(env!("OUT_DIR"), "/build_info.rs"));
}

/// The pinned llama.cpp as a user's tree would hold it: its source directory (`include/`,
/// `ggml/include/`, `ggml/src/`) and its cmake build directory (`CMakeCache.txt`, the static
/// libraries). Tests assemble an external tree from these.
pub fn builtin_tree() -> (std::path::PathBuf, std::path::PathBuf) {
    (
        build_info::LLAMA_SOURCE.into(),
        Path::new(build_info::LLAMA_ROOT).join("build"),
    )
}

/// Why reference kernels cannot be switched on for llama.cpp's own graph.
pub const REFERENCE_KERNELS_NOTE: &str =
    "unavailable for llama.cpp's graph: ggml_backend_cpu_set_use_ref needs the CPU backend \
     handle, which llama_context creates internally and does not expose (no API, no environment \
     variable in this llama.cpp); measure the noise floor across thread counts or with the \
     ggml-graph oracle in reference mode instead";

/// Process-wide llama.cpp state: initialised once, before any backend exists.
pub(crate) struct Global {
    /// Whether ggml latched op fusion off (`GGML_CPU_DISABLE_FUSION`, `atoi(v) == 1`).
    pub(crate) fusion_disabled: bool,
}

static GLOBAL: OnceLock<Global> = OnceLock::new();

/// llama.cpp/ggml log lines, kept for error messages: every thread's here, and each thread's
/// own in [`THREAD_LOG`], which [`recent_log`] reads first. llama.cpp logs a failed load or
/// decode on the thread that called it, and other threads of the process (the in-process tests
/// load models side by side) log their own loads meanwhile: with one shared buffer a refusal's
/// reason could come out as another thread's lines (`oracle_llama` failed so about once in 300
/// runs: `models_llama_cannot_run_are_errors_not_crashes` read another load's `print_info`).
static LOG: Mutex<VecDeque<u8>> = Mutex::new(VecDeque::new());

thread_local! {
    /// This thread's share of [`LOG`].
    static THREAD_LOG: RefCell<VecDeque<u8>> = const { RefCell::new(VecDeque::new()) };
    /// Whether this thread's last message was kept (a `CONT` message continues it).
    static THREAD_LAST_KEPT: Cell<bool> = const { Cell::new(false) };
}
static LOG_ECHO: AtomicBool = AtomicBool::new(false);
const LOG_KEEP: usize = 16 << 10;

/// Also copy llama.cpp's log to stderr (the worker process does, so that a crash report's
/// stderr tail shows what llama.cpp said last).
pub fn echo_log_to_stderr(on: bool) {
    LOG_ECHO.store(on, Ordering::Relaxed);
}

unsafe extern "C" fn log_callback(level: sys::ggml_log_level, text: *const c_char, _: *mut c_void) {
    // Debug messages (per-graph input listings and the like) drown what matters.
    // A thread being torn down has no thread-local state left: its messages are dropped.
    let last_kept = THREAD_LAST_KEPT.try_with(Cell::get).unwrap_or(false);
    let keep = match level {
        sys::GGML_LOG_LEVEL_CONT => last_kept,
        l => l != sys::GGML_LOG_LEVEL_DEBUG,
    };
    let _ = THREAD_LAST_KEPT.try_with(|k| k.set(keep));
    if text.is_null() || !keep {
        return;
    }
    // SAFETY: ggml passes a NUL-terminated message that lives for the duration of the call.
    let bytes = unsafe { CStr::from_ptr(text) }.to_bytes();
    // Never unwind into C.
    let _ = std::panic::catch_unwind(|| {
        if LOG_ECHO.load(Ordering::Relaxed) {
            use std::io::Write;
            let _ = std::io::stderr().write_all(bytes);
        }
        let keep_tail = |log: &mut VecDeque<u8>| {
            log.extend(bytes);
            let excess = log.len().saturating_sub(LOG_KEEP);
            log.drain(..excess);
        };
        keep_tail(&mut LOG.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = THREAD_LOG.try_with(|log| keep_tail(&mut log.borrow_mut()));
    });
}

pub(crate) fn clear_log() {
    LOG.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let _ = THREAD_LOG.try_with(|log| log.borrow_mut().clear());
}

/// The last `n` lines llama.cpp logged (for error messages): this thread's since its last
/// [`clear_log`], else (where this thread logged nothing, as when only ggml's worker threads
/// did) the process's.
pub(crate) fn recent_log(n: usize) -> String {
    let summary = |log: &VecDeque<u8>| {
        let (a, b) = log.as_slices();
        crate::llama_common::log_summary(&[a, b].concat(), n)
    };
    THREAD_LOG
        .try_with(|log| {
            let log = log.borrow();
            (!log.is_empty()).then(|| summary(&log))
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| summary(&LOG.lock().unwrap_or_else(|p| p.into_inner())))
}

/// Route ggml's and llama.cpp's log into [`recent_log`] without initialising any backend (the
/// gguf reader/writer needs only the log, and must not latch the fusion setting).
pub(crate) fn install_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: sets a static callback; llama_log_set forwards it to ggml_log_set.
    ONCE.call_once(|| unsafe { sys::llama_log_set(Some(log_callback), std::ptr::null_mut()) });
}

/// Initialise llama.cpp once per process. The first caller's fusion setting decides
/// `GGML_CPU_DISABLE_FUSION` unless the process already has it in its environment.
pub(crate) fn global(fusion: bool) -> &'static Global {
    GLOBAL.get_or_init(|| {
        let fusion_disabled = latch_fusion(fusion);
        // SAFETY: plain initialisation calls with no arguments but a static callback.
        unsafe {
            sys::llama_log_set(Some(log_callback), std::ptr::null_mut());
            sys::llama_backend_init();
        }
        Global { fusion_disabled }
    })
}

pub(crate) fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: llama.cpp/ggml return static NUL-terminated strings from these getters.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// CPU features the ggml CPU backend was compiled for (and, on ARM, detected).
fn cpu_features() -> Vec<String> {
    let probes: [(&str, unsafe extern "C" fn() -> i32); 26] = [
        ("SSE3", sys::ggml_cpu_has_sse3),
        ("SSSE3", sys::ggml_cpu_has_ssse3),
        ("AVX", sys::ggml_cpu_has_avx),
        ("AVX_VNNI", sys::ggml_cpu_has_avx_vnni),
        ("AVX2", sys::ggml_cpu_has_avx2),
        ("BMI2", sys::ggml_cpu_has_bmi2),
        ("F16C", sys::ggml_cpu_has_f16c),
        ("FMA", sys::ggml_cpu_has_fma),
        ("AVX512", sys::ggml_cpu_has_avx512),
        ("AVX512_VBMI", sys::ggml_cpu_has_avx512_vbmi),
        ("AVX512_VNNI", sys::ggml_cpu_has_avx512_vnni),
        ("AVX512_BF16", sys::ggml_cpu_has_avx512_bf16),
        ("AMX_INT8", sys::ggml_cpu_has_amx_int8),
        ("NEON", sys::ggml_cpu_has_neon),
        ("ARM_FMA", sys::ggml_cpu_has_arm_fma),
        ("FP16_VA", sys::ggml_cpu_has_fp16_va),
        ("DOTPROD", sys::ggml_cpu_has_dotprod),
        ("MATMUL_INT8", sys::ggml_cpu_has_matmul_int8),
        ("SVE", sys::ggml_cpu_has_sve),
        ("SME", sys::ggml_cpu_has_sme),
        ("SME2", sys::ggml_cpu_has_sme2),
        ("RISCV_V", sys::ggml_cpu_has_riscv_v),
        ("VSX", sys::ggml_cpu_has_vsx),
        ("VXE", sys::ggml_cpu_has_vxe),
        ("WASM_SIMD", sys::ggml_cpu_has_wasm_simd),
        ("LLAMAFILE", sys::ggml_cpu_has_llamafile),
    ];
    probes
        .iter()
        // SAFETY: argument-less queries of compile-time and detected features.
        .filter(|(_, f)| unsafe { f() } != 0)
        .map(|(n, _)| n.to_string())
        .collect()
}

pub(crate) fn build_identity() -> BuildIdentity {
    BuildIdentity {
        source: format!("crates.io llama-cpp-sys-2 {}", build_info::PACKAGE_VERSION),
        source_vcs: build_info::SOURCE_VCS.map(|c| format!("utilityai/llama-cpp-rs@{c}")),
        // The crates.io tarball carries no git metadata: llama.cpp's own build-info says
        // 0 / "unknown", which would be a placeholder, not a build number.
        llama_build_number: None,
        llama_commit: None,
        // SAFETY: static version strings.
        ggml_version: c_str(unsafe { sys::ggml_version() }),
        ggml_commit: c_str(unsafe { sys::ggml_commit() }),
        source_sha256: build_info::SOURCE_SHA256.to_string(),
        build_type: build_info::FLAGS
            .iter()
            .find(|(k, _)| *k == "CMAKE_BUILD_TYPE")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default(),
        compiler: build_info::COMPILER.to_string(),
        flags: build_info::FLAGS
            .iter()
            .filter(|(k, _)| *k != "CMAKE_BUILD_TYPE")
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        cpu_features: cpu_features(),
        // SAFETY: returns its static string's buffer, valid until the next call.
        system_info: unsafe { crate::llama_common::system_info(|| sys::llama_print_system_info()) },
    }
}

/// Owns a `llama_batch` from `llama_batch_init`.
struct Batch(sys::llama_batch);

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: allocated by llama_batch_init, freed once.
        unsafe { sys::llama_batch_free(self.0) }
    }
}

/// The built-in llama.cpp oracle.
pub struct LlamaCppOracle {
    model: NonNull<sys::llama_model>,
    ctx: NonNull<sys::llama_context>,
    /// The context's compute threads (null where ggml could not start them: it then starts a
    /// pool per graph, as without one); freed after the context.
    pool: *mut sys::ggml_threadpool,
    vocab: Vocab,
    /// Registered as `cb_eval_user_data`; freed after the context in `Drop`.
    capture: *mut Capture,
    identity: OracleIdentity,
    info: ModelInfo,
    n_vocab: usize,
    n_ctx: usize,
    n_ubatch: usize,
    /// Positions in the KV cache of the current sequence; `None` before the first evaluation
    /// and after a failed decode.
    n_past: Option<usize>,
    /// The transcoded copy of an I2_S model, deleted when the oracle goes.
    _transcoded: Option<tempfile::TempPath>,
}

impl LlamaCppOracle {
    /// Load `path` into llama.cpp with `settings`.
    pub fn load(path: &Path, settings: &OracleSettings) -> Result<LlamaCppOracle> {
        let label = path.display().to_string();
        check_settings(settings, REFERENCE_KERNELS_NOTE)?;
        let g = global(settings.fusion);
        if g.fusion_disabled == settings.fusion {
            return Err(fusion_mismatch(settings.fusion, g.fusion_disabled));
        }
        // Mainline llama.cpp has no I2_S type: such models reach it transcoded.
        let input = prepare_model(path, false)?;
        let load_path = input.transcoded.as_deref().unwrap_or(path);
        let cpath = path_to_cstring(load_path)?;

        clear_log();
        // SAFETY: default parameters, then only plain fields set; the path outlives the call.
        let model = unsafe {
            let mut mp = sys::llama_model_default_params();
            mp.n_gpu_layers = 0;
            // Keep the file's weight layout: no runtime repacking into other block layouts.
            mp.use_extra_bufts = false;
            sys::llama_model_load_from_file(cpath.as_ptr(), mp)
        };
        let model = NonNull::new(model).ok_or_else(|| Error::Load {
            path: label.clone(),
            reason: recent_log(6),
        })?;

        let capture = Box::into_raw(Box::new(Capture::default()));
        let n_ctx = settings.n_ctx as u32;
        // SAFETY: the model is valid; `capture` stays allocated until after llama_free.
        let ctx = unsafe {
            let mut cp = sys::llama_context_default_params();
            cp.n_ctx = n_ctx;
            // One batch, one micro-batch: the whole prompt is one graph evaluation, so every
            // tap covers every position.
            cp.n_batch = n_ctx;
            cp.n_ubatch = n_ctx;
            cp.n_seq_max = 1;
            cp.n_outputs_max = 0;
            cp.n_outputs_max_per_seq = 0;
            cp.n_threads = settings.threads as i32;
            cp.n_threads_batch = settings.threads as i32;
            cp.flash_attn_type = if settings.flash_attn {
                sys::LLAMA_FLASH_ATTN_TYPE_ENABLED
            } else {
                sys::LLAMA_FLASH_ATTN_TYPE_DISABLED
            };
            let kv = match settings.kv_type {
                KvType::F32 => sys::GGML_TYPE_F32,
                KvType::F16 => sys::GGML_TYPE_F16,
            };
            cp.type_k = kv;
            cp.type_v = kv;
            cp.cb_eval = Some(capture::eval_callback);
            cp.cb_eval_user_data = capture.cast::<c_void>();
            cp.embeddings = false;
            cp.no_perf = true;
            sys::llama_init_from_model(model.as_ptr(), cp)
        };
        let Some(ctx) = NonNull::new(ctx) else {
            let reason = recent_log(6);
            // SAFETY: nothing else refers to the model or the capture yet.
            unsafe {
                sys::llama_model_free(model.as_ptr());
                drop(Box::from_raw(capture));
            }
            return Err(Error::Llama(format!("context creation failed: {reason}")));
        };

        // One pool of compute threads for the context's life. Without it ggml starts and joins
        // a pool for every graph it computes, and with the tap callback the scheduler computes
        // the graph a few nodes at a time: thousands of thread starts per evaluation (a 2B-4T
        // comparison's oracle prefill and decode 6.3-9.3 s, with the pool 2.2-2.3 s). The same
        // thread count, so the same results. The pinned ggml's pool keeps its graph and thread
        // counts in one atomic; the earlier one raced (external/api.rs, `Api::threadpool`).
        // SAFETY: plain parameters; the pool is attached to a valid context and freed after it
        // (`Drop`).
        let pool = unsafe {
            let mut tpp = sys::ggml_threadpool_params_default(settings.threads as i32);
            let pool = sys::ggml_threadpool_new(&mut tpp);
            if !pool.is_null() {
                sys::llama_attach_threadpool(ctx.as_ptr(), pool, pool);
            }
            pool
        };

        // SAFETY: valid model and context; getters only.
        let (vocab, n_vocab, eff_ctx, eff_batch, eff_ubatch, info) = unsafe {
            let m = model.as_ptr();
            let vocab = Vocab::of_model(m);
            let info = ModelInfo {
                path: label.clone(),
                architecture: meta_string(m, "general.architecture"),
                description: model_desc(m),
                n_vocab: vocab.n_vocab,
                n_layer: sys::llama_model_n_layer(m).max(0) as usize,
                n_embd: sys::llama_model_n_embd(m).max(0) as usize,
                n_head: sys::llama_model_n_head(m).max(0) as usize,
                n_head_kv: sys::llama_model_n_head_kv(m).max(0) as usize,
            };
            (
                vocab,
                info.n_vocab,
                sys::llama_n_ctx(ctx.as_ptr()) as usize,
                sys::llama_n_batch(ctx.as_ptr()) as usize,
                sys::llama_n_ubatch(ctx.as_ptr()) as usize,
                info,
            )
        };
        let identity = OracleIdentity {
            kind: "builtin".into(),
            numerics: mainline_numerics(&input, settings),
            version: format!(
                "llama.cpp {} (ggml {})",
                // SAFETY: static version string.
                c_str(unsafe { sys::llama_version() }),
                c_str(unsafe { sys::ggml_version() })
            ),
            build: build_identity(),
            settings: SettingsIdentity {
                threads: settings.threads,
                n_ctx: eff_ctx,
                n_batch: eff_batch,
                n_ubatch: eff_ubatch,
                kv_type: settings.kv_type,
                kv_note: None,
                flash_attn: settings.flash_attn,
                fusion: !g.fusion_disabled,
                reference_kernels: ReferenceKernels {
                    enabled: false,
                    available: false,
                    note: REFERENCE_KERNELS_NOTE.into(),
                },
                weight_repack: false,
                outputs: "all positions".into(),
                model_input: input.description,
            },
            recorded: None,
        };
        Ok(LlamaCppOracle {
            model,
            ctx,
            pool,
            vocab,
            capture,
            identity,
            info,
            n_vocab,
            // Positions that fit both the context and one micro-batch.
            n_ctx: eff_ctx,
            n_ubatch: eff_ubatch.min(eff_batch),
            n_past: None,
            _transcoded: loaded(input.transcoded),
        })
    }

    /// Decode `tokens` at positions `start..start + n` with the `outputs` positions outputs.
    fn run(
        &mut self,
        tokens: &[TokenId],
        start: usize,
        outputs: Outputs,
        taps: &TapFilter,
    ) -> Result<Evaluation> {
        let n = tokens.len();
        // SAFETY: llama_batch_init allocates n entries of each array (one seq id each);
        // every entry is written below before llama_decode reads it.
        let batch = unsafe {
            let b = Batch(sys::llama_batch_init(n as i32, 0, 1));
            for (i, &t) in tokens.iter().enumerate() {
                *b.0.token.add(i) = t as sys::llama_token;
                *b.0.pos.add(i) = (start + i) as sys::llama_pos;
                *b.0.n_seq_id.add(i) = 1;
                **b.0.seq_id.add(i) = 0;
                *b.0.logits.add(i) = i8::from(outputs.is_output(i, n));
            }
            b
        };
        let mut raw = batch.0;
        raw.n_tokens = n as i32;
        self.n_past = None;
        let ctx = self.ctx.as_ptr();
        // SAFETY: the capture is the one cb_eval writes to and nothing else references it;
        // llama.cpp's logits rows hold n_vocab floats and live until the next decode.
        let eval = unsafe {
            decode_with_taps(
                self.capture,
                self.info.n_layer,
                taps,
                tokens,
                start,
                self.n_vocab,
                outputs,
                || {
                    // SAFETY: valid context and a fully initialised batch; then wait for the
                    // backend.
                    let rc = sys::llama_decode(ctx, raw);
                    sys::llama_synchronize(ctx);
                    rc
                },
                // SAFETY: asked for outputs only; returns n_vocab floats or null.
                |i| sys::llama_get_logits_ith(ctx, i),
                || recent_log(3),
            )
        }?;
        // The batch is freed when this returns, after the decode that read it.
        self.n_past = Some(start + n);
        Ok(eval)
    }
}

/// # Safety
/// `model` must be a valid loaded model.
unsafe fn meta_string(model: *const sys::llama_model, key: &str) -> String {
    let key = CString::new(key).expect("static key");
    let mut buf = vec![0u8; 256];
    // SAFETY (caller): valid model; the buffer is writable for its length.
    let n = unsafe {
        sys::llama_model_meta_val_str(model, key.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    };
    if n < 0 {
        return String::new();
    }
    buf.truncate((n as usize).min(buf.len() - 1));
    String::from_utf8_lossy(&buf).into_owned()
}

/// # Safety
/// `model` must be a valid loaded model.
unsafe fn model_desc(model: *const sys::llama_model) -> String {
    let mut buf = vec![0u8; 256];
    // SAFETY (caller): valid model; the buffer is writable for its length.
    let n = unsafe { sys::llama_model_desc(model, buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate((n.max(0) as usize).min(buf.len() - 1));
    String::from_utf8_lossy(&buf).into_owned()
}

impl Oracle for LlamaCppOracle {
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
        check_prompt(tokens, self.n_ubatch, self.n_vocab)?;
        // A fresh sequence: forget every cached position.
        // SAFETY: valid context; clears its KV cache (data too).
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ctx.as_ptr()), true) };
        self.run(tokens, 0, Outputs::All, taps)
    }

    fn decode_step(&mut self, token: TokenId, taps: &TapFilter) -> Result<Evaluation> {
        let pos = next_position(self.n_past, self.n_ctx, token, self.n_vocab)?;
        self.run(&[token], pos, Outputs::All, taps)
    }

    fn evaluate_last(&mut self, tokens: &[TokenId]) -> Result<Evaluation> {
        check_prompt(tokens, self.n_ubatch, self.n_vocab)?;
        // SAFETY: valid context; clears its KV cache (data too).
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ctx.as_ptr()), true) };
        self.run(tokens, 0, Outputs::Last, &TapFilter::none())
    }
}

impl Drop for LlamaCppOracle {
    fn drop(&mut self) {
        // SAFETY: created in `load`, freed once, context before model, capture and thread pool
        // after both.
        unsafe {
            sys::llama_free(self.ctx.as_ptr());
            sys::llama_model_free(self.model.as_ptr());
            drop(Box::from_raw(self.capture));
            if !self.pool.is_null() {
                sys::ggml_threadpool_free(self.pool);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    /// `text` to [`log_callback`] at `level`, as ggml calls it.
    fn log(level: sys::ggml_log_level, text: &str) {
        let c = CString::new(text).unwrap();
        // SAFETY: a NUL-terminated message that lives for the call.
        unsafe { log_callback(level, c.as_ptr(), std::ptr::null_mut()) };
    }

    #[test]
    fn each_thread_reads_the_reasons_it_was_logged() {
        // Two threads log in lockstep, as two model loads side by side in one process do:
        // "a" an error continued after "b" logged a debug line (not kept), "b" errors of its
        // own. Each one's recent log holds its own lines only, "a"'s continuations included.
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = [true, false]
            .into_iter()
            .map(|first| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    clear_log();
                    barrier.wait();
                    for i in 0..50 {
                        if first {
                            log(sys::GGML_LOG_LEVEL_ERROR, &format!("a error {i}"));
                        }
                        barrier.wait();
                        if !first {
                            log(sys::GGML_LOG_LEVEL_DEBUG, &format!("b debug {i}\n"));
                        }
                        barrier.wait();
                        if first {
                            log(sys::GGML_LOG_LEVEL_CONT, &format!(" a continued {i}\n"));
                        } else {
                            log(sys::GGML_LOG_LEVEL_ERROR, &format!("b error {i}\n"));
                        }
                        barrier.wait();
                    }
                    recent_log(2)
                })
            })
            .collect();
        let said: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            said[0].contains("a error 49 a continued 49"),
            "a: {}",
            said[0]
        );
        assert!(!said[0].contains("b "), "a read b's log: {}", said[0]);
        assert!(said[1].contains("b error 49"), "b: {}", said[1]);
        assert!(!said[1].contains("a "), "b read a's log: {}", said[1]);
    }
}
