//! The external oracle: a user's own llama.cpp or bitnet.cpp source+build tree.
//!
//! No llama.cpp of ours is involved (this module is compiled with or without the `llama-cpp`
//! feature): [`tree`] finds the tree's headers, libraries and build configuration, [`api`]
//! reads which llama.cpp C API its `llama.h` declares (current, or the older one of
//! bitnet.cpp's fork), [`shim`] compiles `shim.c` against it with the system C compiler
//! (cached), and this module loads the shim with libloading and speaks the [`Oracle`] trait
//! through it, set up like the built-in oracle: F32 K/V cache by default, flash attention off,
//! the whole prompt as one batch, every position an output, taps through `cb_eval` with the
//! same capture code (`tap_capture.rs`).
//!
//! I2_S models go to a bitnet.cpp tree as given (its ggml knows `GGML_TYPE_I2_S`); a mainline
//! tree gets the lossless TQ2_0 transcode the built-in oracle uses.
//!
//! Reference kernels are refused for the same reason as for the built-in oracle: the CPU
//! backend lives inside `llama_context`, out of reach.

mod api;
mod shim;
mod tree;

use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, c_void, CStr};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};
use xval_engine::taps::TapFilter;

use crate::error::{Error, Result};
use crate::llama_common::{
    check_prompt, check_settings, clamp_len, decode_with_taps, detokenize_with, fusion_mismatch,
    grow_call, latch_fusion, log_summary, next_position, path_to_cstring, piece_with,
    prepare_model, tokenize_with,
};
use crate::oracle::{
    BuildIdentity, Evaluation, KvType, ModelInfo, Oracle, OracleIdentity, OracleSettings,
    ReferenceKernels, SettingsIdentity, TokenId,
};
use crate::tap_capture::{Capture, Elem, NodeValues};

pub use api::Api;
pub use shim::SOURCE as SHIM_SOURCE;

/// Why reference kernels cannot be switched on for an external tree.
pub const REFERENCE_KERNELS_NOTE: &str =
    "unavailable for an external tree: ggml_backend_cpu_set_use_ref needs the CPU backend \
     handle, which llama_context creates internally and does not expose";

/// The shim ABI this crate speaks (`XVAL_SHIM_ABI` in shim.c).
const SHIM_ABI: i32 = 1;

static LOG_ECHO: AtomicBool = AtomicBool::new(false);

/// Also copy the tree's llama.cpp log to stderr (the worker process does).
pub fn echo_log_to_stderr(on: bool) {
    LOG_ECHO.store(on, Ordering::Relaxed);
}

// --- the shim's C ABI (shim.c) ---

#[repr(C)]
struct XvalNode {
    id: usize,
    name: *const c_char,
    op: *const c_char,
    ne: [i64; 4],
    nb: [usize; 4],
    ty: i32,
    type_name: *const c_char,
    data: *const c_void,
    nbytes: usize,
}

type NodeFn = unsafe extern "C" fn(*mut c_void, bool, *const XvalNode) -> bool;

#[repr(C)]
struct XvalParams {
    n_ctx: u32,
    n_threads: i32,
    kv_f16: i32,
    flash_attn: i32,
    node_fn: Option<NodeFn>,
    node_user_data: *mut c_void,
}

#[repr(C)]
#[derive(Default)]
struct XvalInfo {
    n_vocab: i32,
    n_layer: i32,
    n_embd: i32,
    n_head: i32,
    n_head_kv: i32,
    n_ctx: u32,
    n_batch: u32,
    n_ubatch: u32,
}

/// The shim's functions, resolved once per shim file (the library is never unloaded: ggml
/// keeps process-wide state and threads that must not outlive their code).
#[derive(Clone, Copy)]
struct Shim {
    init: unsafe extern "C" fn(i32),
    log_clear: unsafe extern "C" fn(),
    log_tail: unsafe extern "C" fn(*mut c_char, usize) -> usize,
    system_info: unsafe extern "C" fn() -> *const c_char,
    llama_version: unsafe extern "C" fn() -> *const c_char,
    ggml_version: unsafe extern "C" fn() -> *const c_char,
    ggml_commit: unsafe extern "C" fn() -> *const c_char,
    load: unsafe extern "C" fn(*const c_char, *const XvalParams, *mut i32) -> *mut c_void,
    free: unsafe extern "C" fn(*mut c_void),
    get_info: unsafe extern "C" fn(*const c_void, *mut XvalInfo),
    meta_str: unsafe extern "C" fn(*const c_void, *const c_char, *mut c_char, usize) -> i32,
    desc: unsafe extern "C" fn(*const c_void, *mut c_char, usize) -> i32,
    tokenize:
        unsafe extern "C" fn(*const c_void, *const c_char, i32, *mut i32, i32, bool, bool) -> i32,
    token_to_piece: unsafe extern "C" fn(*const c_void, i32, *mut c_char, i32, bool) -> i32,
    has_detokenize: unsafe extern "C" fn() -> i32,
    detokenize:
        unsafe extern "C" fn(*const c_void, *const i32, i32, *mut c_char, i32, bool, bool) -> i32,
    eval: unsafe extern "C" fn(*mut c_void, *const i32, i32, i32, bool) -> i32,
    logits_ith: unsafe extern "C" fn(*mut c_void, i32) -> *const f32,
}

/// Load (once per path) the compiled shim and resolve its functions.
fn load_shim(path: &Path) -> Result<Shim, String> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Shim>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(s) = loaded.get(path) {
        return Ok(*s);
    }
    // SAFETY: loading runs the shim's and the tree's static initialisers; the shim is ours and
    // the tree is the one the user named as the oracle, which is what we are here to run.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("cannot load the compiled shim {}: {e}", path.display()))?;
    // Never unloaded (see `Shim`): the functions below stay valid for the process.
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the symbol is one of shim.c's exports, declared there with exactly the
            // signature of the field it is stored in (the ABI version is checked below).
            *unsafe { lib.get(concat!($name, "\0").as_bytes()) }
                .map_err(|e| format!("shim {}: {}: {e}", path.display(), $name))?
        };
    }
    let abi: unsafe extern "C" fn() -> i32 = sym!("xval_shim_abi_version");
    // SAFETY: an argument-less function returning a constant.
    let version = unsafe { abi() };
    if version != SHIM_ABI {
        return Err(format!(
            "shim {} speaks ABI {version}, this binary {SHIM_ABI}",
            path.display()
        ));
    }
    let shim = Shim {
        init: sym!("xval_init"),
        log_clear: sym!("xval_log_clear"),
        log_tail: sym!("xval_log_tail"),
        system_info: sym!("xval_system_info"),
        llama_version: sym!("xval_llama_version"),
        ggml_version: sym!("xval_ggml_version"),
        ggml_commit: sym!("xval_ggml_commit"),
        load: sym!("xval_load"),
        free: sym!("xval_free"),
        get_info: sym!("xval_get_info"),
        meta_str: sym!("xval_meta_str"),
        desc: sym!("xval_desc"),
        tokenize: sym!("xval_tokenize"),
        token_to_piece: sym!("xval_token_to_piece"),
        has_detokenize: sym!("xval_has_detokenize"),
        detokenize: sym!("xval_detokenize"),
        eval: sym!("xval_eval"),
        logits_ith: sym!("xval_logits_ith"),
    };
    loaded.insert(path.to_path_buf(), shim);
    Ok(shim)
}

impl Shim {
    fn recent_log(&self, n: usize) -> String {
        let mut buf = vec![0u8; 16 << 10];
        // SAFETY: the buffer is writable for its length; the shim writes at most that.
        let got = unsafe { (self.log_tail)(buf.as_mut_ptr().cast(), buf.len()) };
        buf.truncate(got.min(buf.len()));
        log_summary(&buf, n)
    }
}

fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the shim returns static NUL-terminated strings (llama.cpp's and ggml's own).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The shim's node callback: hands each node to the shared capture.
///
/// # Safety
/// `user_data` is the oracle's `Capture`, not otherwise referenced while the shim evaluates;
/// `node` points to a valid `XvalNode` whose strings and data live for the call.
unsafe extern "C" fn node_callback(
    user_data: *mut c_void,
    ask: bool,
    node: *const XvalNode,
) -> bool {
    // SAFETY (caller): exclusively ours during xval_eval, which calls back on this thread.
    let capture = unsafe { &mut *user_data.cast::<Capture>() };
    // SAFETY (caller): valid for the call.
    let n = unsafe { &*node };
    capture.guarded(ask, |c| {
        if ask {
            return c.ask(n.id, &c_str(n.name), &c_str(n.op), n.ne);
        }
        let values = if n.data.is_null() {
            Err("tensor not allocated".to_string())
        } else {
            // SAFETY: the shim copied nbytes bytes to `data`, alive for the call.
            let bytes = unsafe { std::slice::from_raw_parts(n.data.cast::<u8>(), n.nbytes) };
            Ok(NodeValues {
                elem: Elem::from_ggml(n.ty as i64, &c_str(n.type_name)),
                ne: n.ne,
                nb: n.nb,
                bytes,
            })
        };
        c.take(n.id, values);
        true
    })
}

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

/// Open the external oracle for the tree at `dir`.
pub fn open(dir: &Path, model: &Path, settings: &OracleSettings) -> Result<Box<dyn Oracle>> {
    Ok(Box::new(ExternalOracle::load(dir, model, settings)?))
}

/// What the tree offers before anything is compiled: found parts and the API its header has.
pub struct Inspected {
    tree: tree::Tree,
    pub api: Api,
}

impl Inspected {
    pub fn llama_root(&self) -> &Path {
        &self.tree.llama_root
    }
}

/// Find the tree's parts and read its API; the error says what is missing.
pub fn inspect(dir: &Path) -> Result<Inspected> {
    let unavailable = |reason: String| Error::Unavailable {
        oracle: format!("dir:{}", dir.display()),
        reason,
    };
    let tree = tree::discover(dir).map_err(unavailable)?;
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| unavailable(format!("{}: {e}", p.display())))
    };
    let api = Api::detect(&read(&tree.llama_h)?, &read(&tree.ggml_h)?)
        .map_err(|e| unavailable(format!("{}: {e}", tree.llama_h.display())))?;
    Ok(Inspected { tree, api })
}

/// Check that shim.c compiles (syntax only) against headers in `include_dirs` with `api`.
pub fn shim_syntax_check(include_dirs: &[PathBuf], api: &Api) -> Result<(), String> {
    shim::syntax_check(include_dirs, api)
}

impl ExternalOracle {
    pub fn load(dir: &Path, path: &Path, settings: &OracleSettings) -> Result<ExternalOracle> {
        let oracle = format!("dir:{}", dir.display());
        let unavailable = |reason: String| Error::Unavailable {
            oracle: oracle.clone(),
            reason,
        };
        check_settings(settings, REFERENCE_KERNELS_NOTE)?;
        let Inspected { tree, api } = inspect(dir)?;

        // Fusion: only a ggml that has it reads the variable.
        let cpu_c = tree.llama_root.join("ggml/src/ggml-cpu/ggml-cpu.c");
        let tree_fuses = std::fs::read_to_string(&cpu_c)
            .is_ok_and(|s| s.contains(crate::llama_common::FUSION_ENV));
        let fusion = if tree_fuses {
            let disabled = latch_fusion(settings.fusion);
            if disabled == settings.fusion {
                return Err(fusion_mismatch(settings.fusion, disabled));
            }
            !disabled
        } else if settings.fusion {
            return Err(Error::Unsupported(
                "op fusion requested, but this tree's ggml has none".into(),
            ));
        } else {
            false
        };

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

        let label = path.display().to_string();
        let (transcoded, model_input) = prepare_model(path, api.i2s)?;
        let cpath = path_to_cstring(transcoded.as_deref().unwrap_or(path))?;

        let capture = Box::into_raw(Box::<Capture>::default());
        let params = XvalParams {
            n_ctx: settings.n_ctx as u32,
            n_threads: settings.threads as i32,
            kv_f16: (settings.kv_type == KvType::F16) as i32,
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
                    path: label,
                    reason,
                },
                2 => Error::Llama(format!("context creation failed: {reason}")),
                _ => Error::Llama("out of memory".into()),
            });
        };
        let mut info = XvalInfo::default();
        // SAFETY: valid handle; writes the struct.
        unsafe { (shim.get_info)(handle.as_ptr(), &mut info) };
        let meta = |key: &str| meta_string(&shim, handle, key);
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
        let model_info = ModelInfo {
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
        };
        // SAFETY: static strings from the shim.
        let (has_detok, system_info) = unsafe {
            (
                (shim.has_detokenize)() != 0,
                c_str((shim.system_info)()).trim().to_string(),
            )
        };
        let identity = OracleIdentity {
            kind: "external".into(),
            version: version(&shim, &tree),
            build: build_identity(&shim, &tree, &api, &compiled, has_detok, system_info),
            settings: SettingsIdentity {
                threads: settings.threads,
                n_ctx: info.n_ctx as usize,
                n_batch: info.n_batch as usize,
                n_ubatch: info.n_ubatch as usize,
                kv_type: settings.kv_type,
                flash_attn: settings.flash_attn,
                fusion,
                reference_kernels: ReferenceKernels {
                    enabled: false,
                    available: false,
                    note: REFERENCE_KERNELS_NOTE.into(),
                },
                // Turned off where the API allows; older trees repack only if their ggml-cpu
                // has a repacking buffer type at all.
                weight_repack: !api.extra_bufts
                    && ["repack.cpp", "ggml-cpu-aarch64.cpp"]
                        .iter()
                        .any(|f| tree.llama_root.join("ggml/src/ggml-cpu").join(f).is_file()),
                outputs: "all positions".into(),
                model_input,
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
            _transcoded: transcoded,
        })
    }

    /// Decode `tokens` at positions `start..start + n` with every position an output.
    fn run(
        &mut self,
        tokens: &[TokenId],
        start: usize,
        clear: bool,
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
                // SAFETY: valid handle; ids holds the tokens, checked against the vocabulary.
                || (shim.eval)(h, ids.as_ptr(), ids.len() as i32, start as i32, clear),
                // SAFETY: valid handle; every position was an output.
                |i| (shim.logits_ith)(h, i),
                || shim.recent_log(3),
            )
        }?;
        self.n_past = Some(start + tokens.len());
        Ok(eval)
    }
}

fn meta_string(shim: &Shim, handle: NonNull<c_void>, key: &str) -> String {
    let Ok(key) = std::ffi::CString::new(key) else {
        return String::new();
    };
    let mut buf = vec![0u8; 256];
    // SAFETY: valid handle; the buffer is writable for its length.
    let n = unsafe {
        (shim.meta_str)(
            handle.as_ptr(),
            key.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return String::new();
    }
    buf.truncate((n as usize).min(buf.len() - 1));
    String::from_utf8_lossy(&buf).into_owned()
}

/// "bitnet.cpp tree, llama.cpp <version> (ggml <version>)".
fn version(shim: &Shim, tree: &tree::Tree) -> String {
    // SAFETY: static strings.
    let (llama, ggml) = unsafe { (c_str((shim.llama_version)()), c_str((shim.ggml_version)())) };
    let or_unknown = |s: String| if s.is_empty() { "unknown".into() } else { s };
    let kind = if tree.llama_root == tree.root {
        "llama.cpp tree"
    } else {
        "bitnet.cpp tree"
    };
    format!(
        "{kind}, llama.cpp {} (ggml {})",
        or_unknown(llama),
        or_unknown(ggml)
    )
}

fn build_identity(
    shim: &Shim,
    tree: &tree::Tree,
    api: &Api,
    compiled: &shim::Compiled,
    has_detokenize: bool,
    system_info: String,
) -> BuildIdentity {
    let cmake = |k: &str| tree.cmake.get(k).cloned();
    let mut flags: BTreeMap<String, String> = tree::build_flags(&tree.cmake);
    flags.insert("xval.api".into(), api.variant().into());
    if let Some(n) = api.batch_get_one_args {
        flags.insert("xval.llama_batch_get_one_args".into(), n.to_string());
    }
    flags.insert(
        "xval.libraries".into(),
        if tree.libs.shared { "shared" } else { "static" }.into(),
    );
    flags.insert("xval.shim_compiler".into(), compiled.compiler.clone());
    flags.insert(
        "xval.detokenize".into(),
        if has_detokenize {
            "llama_detokenize"
        } else {
            "built from llama_token_to_piece (the tree has no llama_detokenize)"
        }
        .into(),
    );
    let llama_commit = tree::git_commit(&tree.llama_root);
    let llama_build_number = llama_commit
        .as_ref()
        .and_then(|_| tree::git_build_number(&tree.llama_root));
    // A bitnet.cpp tree: its own commit beside its llama.cpp submodule's.
    let source_vcs = (tree.llama_root != tree.root)
        .then(|| tree::git_commit(&tree.root))
        .flatten()
        .map(|c| format!("bitnet.cpp@{c}"));
    // SAFETY: static strings.
    let (ggml_version, ggml_commit) =
        unsafe { (c_str((shim.ggml_version)()), c_str((shim.ggml_commit)())) };
    BuildIdentity {
        source: format!(
            "external tree {} (build {})",
            tree.root.display(),
            tree.build_dir.display()
        ),
        source_vcs,
        llama_build_number,
        llama_commit,
        ggml_version,
        ggml_commit,
        source_sha256: libraries_sha256(&tree.libs.paths),
        build_type: cmake("CMAKE_BUILD_TYPE").unwrap_or_default(),
        compiler: cmake("CMAKE_CXX_COMPILER")
            .or_else(|| cmake("CMAKE_C_COMPILER"))
            .unwrap_or_else(|| "unknown".into()),
        flags,
        cpu_features: cpu_features(&system_info),
        system_info,
    }
}

/// sha256 over the linked libraries (name, NUL, length, bytes each): identifies exactly the
/// code that ran, with or without git metadata.
fn libraries_sha256(paths: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    for p in paths {
        let bytes = std::fs::read(p).unwrap_or_default();
        h.update(p.file_name().unwrap_or_default().as_encoded_bytes());
        h.update([0u8]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The features `llama_print_system_info` reports as on (`AVX2 = 1 | ...`).
fn cpu_features(system_info: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in system_info.split('|') {
        // "CPU : SSE3 = 1" -> take what follows the last ':'.
        let part = part.rsplit(':').next().unwrap_or(part);
        if let Some((name, value)) = part.split_once('=') {
            let name = name.trim();
            if value.trim() == "1" && !name.is_empty() && !out.iter().any(|n| n == name) {
                out.push(name.to_string());
            }
        }
    }
    out
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
        self.run(tokens, 0, true, taps)
    }

    fn decode_step(&mut self, token: TokenId, taps: &TapFilter) -> Result<Evaluation> {
        let pos = next_position(self.n_past, self.n_ctx, token, self.n_vocab)?;
        self.run(&[token], pos, false, taps)
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

#[cfg(test)]
mod tests {
    use super::cpu_features;

    #[test]
    fn cpu_features_from_system_info() {
        let s = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX512 = 0 | LLAMAFILE = 1 | ";
        assert_eq!(cpu_features(s), ["SSE3", "SSSE3", "AVX", "LLAMAFILE"]);
        let old = "AVX = 1 | AVX_VNNI = 0 | AVX2 = 1 | NEON = 0 | ";
        assert_eq!(cpu_features(old), ["AVX", "AVX2"]);
    }
}
