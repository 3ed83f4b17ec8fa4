//! The external oracle: a user's own llama.cpp or bitnet.cpp source+build tree.

use std::path::Path;

use crate::error::{Error, Result};
use crate::oracle::{Oracle, OracleSettings};

/// Open the external oracle for the tree at `dir`.
pub fn open(dir: &Path, _model: &Path, _settings: &OracleSettings) -> Result<Box<dyn Oracle>> {
    Err(Error::Unavailable {
        oracle: format!("dir:{}", dir.display()),
        reason: "under construction".into(),
    })
}
