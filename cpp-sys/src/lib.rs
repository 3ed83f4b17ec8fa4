//! C/C++ oracles for xval, behind one Rust trait ([`Oracle`]).
//!
//! - [`llama_cpp`] (feature `llama-cpp`, on by default): the built-in oracle, mainline llama.cpp
//!   built from the pinned crates.io tree `llama-cpp-sys-2 =0.1.161`, taps through `cb_eval`.
//! - [`gguf_c`] (feature `llama-cpp`): llama.cpp's own GGUF writer and reader (the `gguf_*`
//!   C API), to check our reader against files llama.cpp writes and reads.
//! - [`golden`]: recorded oracle numbers replayed through the same trait (pure Rust, always
//!   compiled), for machines without the C++ build.
//! - [`isolated`]: any oracle in a child process ([`worker`] is the child's side, [`protocol`]
//!   the pipe format), so that a crash or hang in C++ becomes an [`Error`], not a dead harness.
//!
//! ## How llama.cpp is built
//! As a dependency on `llama-cpp-sys-2 =0.1.161`, which ships the whole llama.cpp tree, its
//! cmake build and bindgen bindings for `llama_*`, `ggml_*` and `gguf_*`: one pinned registry
//! package, nothing fetched at build time. Default features are off (no `common` library,
//! no OpenMP), so the build is llama + ggml-base + ggml-cpu, linked statically. The crate
//! forwards `GGML_*` variables to cmake and reads `LLAMA_LIB_PROFILE`; the workspace's
//! `.cargo/config.toml` sets them explicitly (Release, x86-64-v3 kernels, llamafile on,
//! AVX-512 off) because the defaults otherwise depend on the cargo profile and on
//! `SOURCE_DATE_EPOCH`. `GGML_NATIVE` stays off (the crate turns it on only for
//! `-C target-cpu=native`). The build script of this crate reads what the build actually used
//! back from its CMakeCache and hashes the compiled sources for [`OracleIdentity`].

mod error;
pub mod external;
#[cfg(feature = "llama-cpp")]
pub mod ggml_graph;
#[cfg(feature = "llama-cpp")]
pub mod ggml_rt;
#[cfg(feature = "llama-cpp")]
pub mod gguf_c;
pub mod golden;
pub mod isolated;
mod llama_common;
#[cfg(feature = "llama-cpp")]
pub mod llama_cpp;
pub mod oracle;
pub mod protocol;
mod tap_capture;
pub mod worker;

pub use error::{Error, Result, WireError};
pub use isolated::{IsolatedOracle, Limits};
pub use oracle::{
    BuildIdentity, Evaluation, GraphNode, KvType, ModelInfo, Oracle, OracleIdentity, OracleKind,
    OracleSettings, RecordedFrom, ReferenceKernels, SettingsIdentity, TapSource, TokenId,
    BITNET_CPP_DIR_ENV,
};

/// Whether the built-in llama.cpp oracle is compiled into this binary.
pub const BUILTIN_AVAILABLE: bool = cfg!(feature = "llama-cpp");

/// Copy llama.cpp's log to stderr (the worker process does it, so that a crash report's stderr
/// tail shows what llama.cpp said last): the built-in's and an external tree's.
pub fn echo_oracle_log(on: bool) {
    external::echo_log_to_stderr(on);
    #[cfg(feature = "llama-cpp")]
    llama_cpp::echo_log_to_stderr(on);
    #[cfg(not(feature = "llama-cpp"))]
    let _ = on;
}

/// Open the built-in llama.cpp oracle in this process (no isolation: a crash in llama.cpp takes
/// the caller down; the harness runs it through [`IsolatedOracle`] instead).
pub fn open_builtin(model: &std::path::Path, settings: &OracleSettings) -> Result<Box<dyn Oracle>> {
    #[cfg(feature = "llama-cpp")]
    {
        Ok(Box::new(llama_cpp::LlamaCppOracle::load(model, settings)?))
    }
    #[cfg(not(feature = "llama-cpp"))]
    {
        let _ = (model, settings);
        Err(Error::Unavailable {
            oracle: "builtin".into(),
            reason: "this binary was built without the llama-cpp feature".into(),
        })
    }
}

/// Open any live oracle kind in this process (the worker process calls this; the harness runs
/// oracles through [`IsolatedOracle`]).
pub fn open(
    kind: &OracleKind,
    model: &std::path::Path,
    settings: &OracleSettings,
) -> Result<Box<dyn Oracle>> {
    match kind {
        OracleKind::Builtin => open_builtin(model, settings),
        OracleKind::GgmlGraph => open_ggml_graph(model, settings),
        OracleKind::External { dir } => external::open(dir, model, settings),
    }
}

/// Open the ggml-graph oracle (our BitNet graph from ggml ops) in this process.
pub fn open_ggml_graph(
    model: &std::path::Path,
    settings: &OracleSettings,
) -> Result<Box<dyn Oracle>> {
    #[cfg(feature = "llama-cpp")]
    {
        ggml_graph::open(model, settings)
    }
    #[cfg(not(feature = "llama-cpp"))]
    {
        let _ = (model, settings);
        Err(Error::Unavailable {
            oracle: "ggml-graph".into(),
            reason: "this binary was built without the llama-cpp feature (ggml comes with it)"
                .into(),
        })
    }
}
