//! The recording files' types ([`GoldenIndex`], [`Recording`] and what it holds) and the
//! byte-level helpers they share (sha256, pretty JSON).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::oracle::{ModelInfo, OracleIdentity, TokenId};

/// `golden/index.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldenIndex {
    pub format: String,
    pub recordings: Vec<IndexEntry>,
    /// Committed models with no recording, and why.
    pub not_recorded: Vec<NotRecordedModel>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The model, relative to `fixtures/`.
    pub model: String,
    pub model_sha256: String,
    /// The recording's index, relative to `fixtures/golden/`.
    pub recording: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotRecordedModel {
    pub model: String,
    pub model_sha256: String,
    pub reason: String,
}

/// Where `count` f32 values sit in the data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Byte offset.
    pub offset: u64,
    /// Number of f32 values.
    pub count: u64,
}

/// One recorded tap of one evaluation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedTap {
    pub name: String,
    /// Engine layout: fastest first, last dimension = positions.
    pub shape: Vec<usize>,
    /// The graph node it came from.
    pub op: String,
    pub occurrence: usize,
    pub occurrences: usize,
    pub data: Span,
}

/// One evaluation: the prompt, or one decode step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvaluation {
    pub start_pos: usize,
    pub tokens: Vec<TokenId>,
    /// `tokens.len() * n_vocab` values, position by position.
    pub logits: Span,
    pub taps: Vec<RecordedTap>,
    /// Whether `result_output` was captured (and equal to the logits bit for bit): replay
    /// rebuilds it from the logits when asked for.
    pub result_output_is_logits: bool,
}

/// One prompt and its greedy continuation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPrompt {
    /// The text the ids came from (`tokenize(text, add_special, parse_special)`).
    pub text: String,
    pub add_special: bool,
    pub parse_special: bool,
    pub tokens: Vec<TokenId>,
    /// The greedy continuation fed by decode steps `1..=decode_tokens.len()`.
    pub decode_tokens: Vec<TokenId>,
    /// Evaluation 0 is the prompt, `s` is decode step `s`.
    pub evaluations: Vec<RecordedEvaluation>,
}

/// `golden/<model stem>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub format: String,
    /// The model, relative to `fixtures/`.
    pub model: String,
    pub model_sha256: String,
    /// The model as the recording oracle loaded it (`path` relative to `fixtures/`).
    pub model_info: ModelInfo,
    /// The recording oracle.
    pub oracle: OracleIdentity,
    /// The tap pattern asked of the oracle.
    pub taps: String,
    /// Decode steps whose taps are kept (logits are kept for every step).
    pub tap_decode_steps: usize,
    /// The data file, relative to `fixtures/golden/`.
    pub data: String,
    pub data_bytes: u64,
    pub data_sha256: String,
    pub prompts: Vec<RecordedPrompt>,
}

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Pretty JSON with a trailing newline (committed files diff well).
pub fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Llama(format!("cannot serialise a golden recording: {e}")))?;
    out.push(b'\n');
    Ok(out)
}
