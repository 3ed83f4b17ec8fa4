//! The one error type of the harness library. The CLI layer wraps it (and the engine's) in
//! `anyhow` for context; [`crate::exit::Exit::from_error`] maps both to exit codes.

use std::path::PathBuf;

/// Result alias of the harness library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A GGUF, codec or model error from the engine.
    #[error(transparent)]
    Engine(#[from] xval_engine::Error),

    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An input file is readable but its content is wrong (tokenizer JSON, MANIFEST line...).
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },

    /// `fixtures verify` found files whose bytes differ from the MANIFEST, or that are missing.
    #[error("fixtures in {} do not match {}:\n  {}", dir.display(), manifest.display(), problems.join("\n  "))]
    FixtureMismatch {
        dir: PathBuf,
        manifest: PathBuf,
        problems: Vec<String>,
    },

    /// A request that cannot be honoured (bad option combination, repository not found).
    #[error("{0}")]
    Invalid(String),

    /// An oracle failed or refused the request ([`xval_cpp_sys::Error::is_bad_input`] says
    /// whose fault it was).
    #[error(transparent)]
    Oracle(#[from] xval_cpp_sys::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::BadFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
