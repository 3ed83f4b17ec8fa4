//! C/C++ oracles for xval (llama.cpp/ggml behind FFI). The oracle itself lands with its own
//! issue; this crate already exists so that the workspace layout is final.

/// Errors of the oracle crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No oracle of the requested kind is built into this binary.
    #[error("oracle '{0}' is not available in this build")]
    Unavailable(String),
}
