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
mod ffi;
mod identity;
mod numerics;
mod oracle;
mod shim;
mod tree;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::oracle::{Oracle, OracleSettings};

pub use api::Api;
pub use oracle::ExternalOracle;
pub use shim::SOURCE as SHIM_SOURCE;

/// Why reference kernels cannot be switched on for an external tree.
pub const REFERENCE_KERNELS_NOTE: &str =
    "unavailable for an external tree: ggml_backend_cpu_set_use_ref needs the CPU backend \
     handle, which llama_context creates internally and does not expose";

static LOG_ECHO: AtomicBool = AtomicBool::new(false);

/// Also copy the tree's llama.cpp log to stderr (the worker process does).
pub fn echo_log_to_stderr(on: bool) {
    LOG_ECHO.store(on, Ordering::Relaxed);
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

    /// Whether the tree's ggml has CPU op fusion (mainline llama.cpp since 2025; bitnet.cpp's
    /// fork does not), which `OracleSettings::fusion` may then ask for.
    pub fn fuses(&self) -> bool {
        oracle::tree_fuses(&self.tree)
    }
}

/// xval's directory in the user's cache: `$XDG_CACHE_HOME/xval`, else `$HOME/.cache/xval`;
/// none without either (compiled shims, the harness's model digests).
pub fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("xval"))
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
    // The thread pool: declared in ggml-cpu.h (current trees) beside ggml.h, implemented in
    // ggml/src/ggml-cpu/ggml-cpu.c (which version of it decides whether the shim uses it).
    let optional = |p: PathBuf| {
        if p.is_file() {
            read(&p)
        } else {
            Ok(String::new())
        }
    };
    let ggml_cpu_h = optional(tree.ggml_h.with_file_name("ggml-cpu.h"))?;
    let ggml_cpu_c = optional(tree.llama_root.join("ggml/src/ggml-cpu/ggml-cpu.c"))?;
    let api = Api::detect(
        &read(&tree.llama_h)?,
        &read(&tree.ggml_h)?,
        &ggml_cpu_h,
        &ggml_cpu_c,
    )
    .map_err(|e| unavailable(format!("{}: {e}", tree.llama_h.display())))?;
    Ok(Inspected { tree, api })
}

/// Check that shim.c compiles (syntax only) against headers in `include_dirs` with `api`.
pub fn shim_syntax_check(include_dirs: &[PathBuf], api: &Api) -> Result<(), String> {
    shim::syntax_check(include_dirs, api)
}
