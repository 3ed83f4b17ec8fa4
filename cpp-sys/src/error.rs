//! The one error type of the oracle crate. Every variant says which side failed and how, so that
//! the harness can turn it into a receipt field and an exit code (bad input vs oracle failure).

use serde::{Deserialize, Serialize};

/// Result alias of the oracle crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while running an oracle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No oracle of the requested kind is built into this binary.
    #[error("oracle '{oracle}' is not available: {reason}")]
    Unavailable { oracle: String, reason: String },

    /// A setting this oracle cannot honour (it says why instead of pretending).
    #[error("unsupported oracle setting: {0}")]
    Unsupported(String),

    /// The request itself is wrong (token id out of range, prompt longer than the context, a
    /// decode step before any evaluation): the caller's input, not the oracle, is at fault.
    #[error("invalid oracle request: {0}")]
    InvalidRequest(String),

    /// The model file is malformed or cannot be prepared for this oracle (our GGUF reader or the
    /// I2_S transcode refused it): bad input.
    #[error("{path}: {reason}")]
    BadModel { path: String, reason: String },

    /// A golden recording holds no answer for this request (a prompt that was not recorded, a
    /// decode token other than the recorded greedy continuation): the caller asked for
    /// something outside the recording.
    #[error("golden recording {file}: {reason}")]
    NotRecorded { file: String, reason: String },

    /// llama.cpp could not load the model (unknown architecture, missing tensor, ...): the
    /// message carries llama.cpp's own last log lines.
    #[error("llama.cpp could not load {path}: {reason}")]
    Load { path: String, reason: String },

    /// A llama.cpp call failed after loading (context creation, decode).
    #[error("llama.cpp: {0}")]
    Llama(String),

    /// Capturing taps through `cb_eval` failed.
    #[error("tap capture: {0}")]
    Capture(String),

    /// The isolated oracle process died (signal or exit status) while serving `during`.
    #[error("oracle worker crashed during {during}: {status}{}", tail(stderr_tail))]
    WorkerCrashed {
        during: String,
        status: String,
        stderr_tail: String,
    },

    /// The isolated oracle process did not answer `during` within the limit; it was killed.
    #[error(
        "oracle worker timed out after {after_s:.1} s during {during} (killed){}",
        tail(stderr_tail)
    )]
    WorkerTimedOut {
        during: String,
        after_s: f64,
        stderr_tail: String,
    },

    /// The worker answered something that is not the protocol (or could not be started).
    #[error("oracle worker protocol: {0}")]
    Protocol(String),
}

fn tail(stderr_tail: &str) -> String {
    let t = stderr_tail.trim_end();
    if t.is_empty() {
        String::new()
    } else {
        format!("\n--- worker stderr (last lines) ---\n{t}")
    }
}

impl Error {
    /// Whether the caller's input is at fault (CLI exit code 2) rather than the oracle (3).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidRequest(_) | Error::BadModel { .. } | Error::NotRecorded { .. }
        )
    }

    /// A short machine-readable kind, for receipts and the worker protocol.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Unavailable { .. } => "unavailable",
            Error::Unsupported(_) => "unsupported",
            Error::InvalidRequest(_) => "invalid_request",
            Error::BadModel { .. } => "bad_model",
            Error::NotRecorded { .. } => "not_recorded",
            Error::Load { .. } => "load",
            Error::Llama(_) => "llama",
            Error::Capture(_) => "capture",
            Error::WorkerCrashed { .. } => "worker_crashed",
            Error::WorkerTimedOut { .. } => "worker_timed_out",
            Error::Protocol(_) => "protocol",
        }
    }
}

/// An error as it crosses the worker pipe: the variant and its fields, so that the parent
/// rebuilds exactly the error the child had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireError {
    Unavailable {
        oracle: String,
        reason: String,
    },
    Unsupported {
        message: String,
    },
    InvalidRequest {
        message: String,
    },
    BadModel {
        path: String,
        reason: String,
    },
    NotRecorded {
        file: String,
        reason: String,
    },
    Load {
        path: String,
        reason: String,
    },
    Llama {
        message: String,
    },
    Capture {
        message: String,
    },
    /// Worker-side failures are never produced in the child; kept for completeness of the map.
    Protocol {
        message: String,
    },
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> WireError {
        match e.clone() {
            Error::Unavailable { oracle, reason } => WireError::Unavailable { oracle, reason },
            Error::Unsupported(message) => WireError::Unsupported { message },
            Error::InvalidRequest(message) => WireError::InvalidRequest { message },
            Error::BadModel { path, reason } => WireError::BadModel { path, reason },
            Error::NotRecorded { file, reason } => WireError::NotRecorded { file, reason },
            Error::Load { path, reason } => WireError::Load { path, reason },
            Error::Llama(message) => WireError::Llama { message },
            Error::Capture(message) => WireError::Capture { message },
            other @ (Error::WorkerCrashed { .. }
            | Error::WorkerTimedOut { .. }
            | Error::Protocol(_)) => WireError::Protocol {
                message: other.to_string(),
            },
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Error {
        match e {
            WireError::Unavailable { oracle, reason } => Error::Unavailable { oracle, reason },
            WireError::Unsupported { message } => Error::Unsupported(message),
            WireError::InvalidRequest { message } => Error::InvalidRequest(message),
            WireError::BadModel { path, reason } => Error::BadModel { path, reason },
            WireError::NotRecorded { file, reason } => Error::NotRecorded { file, reason },
            WireError::Load { path, reason } => Error::Load { path, reason },
            WireError::Llama { message } => Error::Llama(message),
            WireError::Capture { message } => Error::Capture(message),
            WireError::Protocol { message } => Error::Protocol(message),
        }
    }
}
