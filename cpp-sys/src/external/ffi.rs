//! The shim's C ABI (`shim.c`): its struct layouts, its functions resolved once per compiled
//! shim, and the node callback that hands graph nodes to the shared tap capture.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Mutex, OnceLock};

use crate::llama_common::log_summary;
use crate::tap_capture::{Capture, Elem, NodeValues};

/// The shim ABI this crate speaks (`XVAL_SHIM_ABI` in shim.c).
const SHIM_ABI: i32 = 1;

#[repr(C)]
pub(super) struct XvalNode {
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

pub(super) type NodeFn = unsafe extern "C" fn(*mut c_void, bool, *const XvalNode) -> bool;

#[repr(C)]
pub(super) struct XvalParams {
    pub n_ctx: u32,
    pub n_threads: i32,
    pub kv_f16: i32,
    pub flash_attn: i32,
    pub node_fn: Option<NodeFn>,
    pub node_user_data: *mut c_void,
}

#[repr(C)]
#[derive(Default)]
pub(super) struct XvalInfo {
    pub n_vocab: i32,
    pub n_layer: i32,
    pub n_embd: i32,
    pub n_head: i32,
    pub n_head_kv: i32,
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
}

/// The shim's functions, resolved once per shim file (the library is never unloaded: ggml
/// keeps process-wide state and threads that must not outlive their code).
#[derive(Clone, Copy)]
pub(super) struct Shim {
    pub init: unsafe extern "C" fn(i32),
    pub log_clear: unsafe extern "C" fn(),
    pub log_tail: unsafe extern "C" fn(*mut c_char, usize) -> usize,
    pub system_info: unsafe extern "C" fn() -> *const c_char,
    pub llama_version: unsafe extern "C" fn() -> *const c_char,
    pub ggml_version: unsafe extern "C" fn() -> *const c_char,
    pub ggml_commit: unsafe extern "C" fn() -> *const c_char,
    pub load: unsafe extern "C" fn(*const c_char, *const XvalParams, *mut i32) -> *mut c_void,
    pub free: unsafe extern "C" fn(*mut c_void),
    pub get_info: unsafe extern "C" fn(*const c_void, *mut XvalInfo),
    pub meta_str: unsafe extern "C" fn(*const c_void, *const c_char, *mut c_char, usize) -> i32,
    pub desc: unsafe extern "C" fn(*const c_void, *mut c_char, usize) -> i32,
    pub tokenize:
        unsafe extern "C" fn(*const c_void, *const c_char, i32, *mut i32, i32, bool, bool) -> i32,
    pub token_to_piece: unsafe extern "C" fn(*const c_void, i32, *mut c_char, i32, bool) -> i32,
    pub has_detokenize: unsafe extern "C" fn() -> i32,
    pub detokenize:
        unsafe extern "C" fn(*const c_void, *const i32, i32, *mut c_char, i32, bool, bool) -> i32,
    pub eval: unsafe extern "C" fn(*mut c_void, *const i32, i32, i32, bool, bool) -> i32,
    pub logits_ith: unsafe extern "C" fn(*mut c_void, i32) -> *const f32,
}

/// Load (once per path) the compiled shim and resolve its functions.
pub(super) fn load_shim(path: &Path) -> Result<Shim, String> {
    // Each entry keeps its library next to the functions resolved from it: never unloaded,
    // and reachable from this static (LeakSanitizer counts a handle nothing points to as a
    // leak; scripts/asan.sh).
    type Loaded = HashMap<PathBuf, (Shim, &'static libloading::Library)>;
    static LOADED: OnceLock<Mutex<Loaded>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some((s, _)) = loaded.get(path) {
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
    loaded.insert(path.to_path_buf(), (shim, lib));
    Ok(shim)
}

impl Shim {
    pub fn recent_log(&self, n: usize) -> String {
        let mut buf = vec![0u8; 16 << 10];
        // SAFETY: the buffer is writable for its length; the shim writes at most that.
        let got = unsafe { (self.log_tail)(buf.as_mut_ptr().cast(), buf.len()) };
        buf.truncate(got.min(buf.len()));
        log_summary(&buf, n)
    }
}

pub(super) fn c_str(p: *const c_char) -> String {
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
pub(super) unsafe extern "C" fn node_callback(
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

/// A metadata string of the loaded model (`llama_model_meta_val_str`), empty when absent.
pub(super) fn meta_string(shim: &Shim, handle: NonNull<c_void>, key: &str) -> String {
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
