//! The one error type of the engine crate. Every variant names the file, tensor or field it is
//! about, so that a message alone tells a user what is wrong with their input.

use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, checking or computing with a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened, mapped or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The GGUF header or metadata is malformed: `field` names the part being read and `offset`
    /// the byte position in the file where reading it failed.
    #[error("{file}: malformed GGUF at byte {offset} ({field}): {reason}")]
    Malformed {
        file: String,
        offset: u64,
        field: String,
        reason: String,
    },

    /// A tensor's descriptor is inconsistent (shape, range, overlap, alignment).
    #[error("{file}: tensor '{tensor}': {reason}")]
    BadTensor {
        file: String,
        tensor: String,
        reason: String,
    },

    /// A tensor uses a type id this reader does not know, or knows but cannot handle.
    #[error("{file}: tensor '{tensor}': {reason}")]
    UnsupportedType {
        file: String,
        tensor: String,
        reason: String,
    },

    /// A metadata key the model needs is absent or has the wrong type.
    #[error("{file}: metadata '{key}': {reason}")]
    Metadata {
        file: String,
        key: String,
        reason: String,
    },

    /// A tensor the architecture needs is not in the file.
    #[error("{file}: missing tensor '{tensor}' (needed by architecture '{arch}')")]
    MissingTensor {
        file: String,
        tensor: String,
        arch: String,
    },

    /// A buffer handed to a kernel or codec has the wrong length or alignment for its format.
    #[error("{format}: {reason}")]
    Format {
        format: &'static str,
        reason: String,
    },

    /// Data that decodes to something the format never writes (e.g. I2_S code 3).
    #[error("{what}: corrupt data: {reason}")]
    Corrupt { what: String, reason: String },

    /// The model's tokenizer data is missing, inconsistent or cannot encode the input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A request the engine cannot honour (unknown architecture, bad option, out of context).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(format: &'static str, reason: impl Into<String>) -> Self {
        Error::Format {
            format,
            reason: reason.into(),
        }
    }
}
