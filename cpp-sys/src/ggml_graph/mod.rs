//! The ggml-graph oracle: the BitNet forward pass built from ggml ops.

use std::path::Path;

use crate::error::{Error, Result};
use crate::oracle::{Oracle, OracleSettings};

/// Open the ggml-graph oracle on `model`.
pub fn open(_model: &Path, _settings: &OracleSettings) -> Result<Box<dyn Oracle>> {
    Err(Error::Unavailable {
        oracle: "ggml-graph".into(),
        reason: "under construction".into(),
    })
}
