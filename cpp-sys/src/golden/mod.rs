//! Golden recordings: an oracle's numbers written to `fixtures/golden/` by
//! `harness fixtures regen`, and [`GoldenOracle`], which replays them through the [`Oracle`]
//! trait so that a machine without the C++ build still compares against real oracle numbers.
//!
//! ## Files
//! - `golden/index.json` ([`GoldenIndex`]): every recording (model path and sha256, its
//!   recording file) and every committed model that has none, with the reason.
//! - `golden/<model stem>.json` ([`Recording`]): the recording oracle's identity and settings,
//!   the model's sha256 and shape, and per prompt: its text, its ids, the greedy continuation,
//!   and for each evaluation (the prompt, then one per decode step) where its logits and taps
//!   sit in the data file.
//! - `golden/<model stem>.f32`: the numbers, little-endian f32, concatenated in index order.
//!   Its sha256 is in the recording, so a truncated or edited file is refused.
//!
//! Each prompt's evaluation 0 is the prompt itself at positions `0..n`; evaluation `s` (1-based)
//! is decode step `s`, which feeds `decode_tokens[s - 1]`, the argmax of the previous
//! evaluation's last logits (lowest id on ties, as llama.cpp's greedy sampler). Logits are kept
//! for every evaluation, taps only for the prompt and the first [`Recording::tap_decode_steps`]
//! decode steps (size). The `result_output` tap is the logits themselves in llama.cpp's graph
//! (bit for bit, checked while recording): it is stored once, as the logits, and rebuilt on
//! replay.

mod format;
mod record;
mod replay;

pub use format::{
    sha256_hex, to_json, GoldenIndex, IndexEntry, NotRecordedModel, RecordedEvaluation,
    RecordedPrompt, RecordedTap, Recording, Span,
};
pub use record::{record, RecordPlan};
pub use replay::GoldenOracle;

/// The recordings' directory under `fixtures/`.
pub const GOLDEN_DIR: &str = "golden";
/// The top-level index under [`GOLDEN_DIR`].
pub const INDEX_FILE: &str = "index.json";
/// Format tag of the index and of each recording.
pub const FORMAT: &str = "xval-golden/1";
/// The tap that is the logits (stored once, as the logits).
pub(crate) const LOGITS_TAP: &str = "result_output";
