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

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xval_engine::taps::{Tap, TapFilter};

use crate::error::{Error, Result};
use crate::oracle::{
    Evaluation, ModelInfo, Oracle, OracleIdentity, RecordedFrom, TapSource, TokenId,
};

/// The recordings' directory under `fixtures/`.
pub const GOLDEN_DIR: &str = "golden";
/// The top-level index under [`GOLDEN_DIR`].
pub const INDEX_FILE: &str = "index.json";
/// Format tag of the index and of each recording.
pub const FORMAT: &str = "xval-golden/1";
/// The tap that is the logits (stored once, as the logits).
const LOGITS_TAP: &str = "result_output";

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

/// What to record for one model.
#[derive(Clone, Debug)]
pub struct RecordPlan<'a> {
    /// The model, relative to `fixtures/` (goes into the index).
    pub model: &'a str,
    pub model_sha256: &'a str,
    /// Prompt texts, tokenized by the oracle with `add_special` and `parse_special` on.
    pub prompts: &'a [&'a str],
    /// Greedy decode steps per prompt.
    pub decode_steps: usize,
    /// Decode steps whose taps are kept.
    pub tap_decode_steps: usize,
    pub taps: &'a TapFilter,
    /// The data file's name, relative to `fixtures/golden/`.
    pub data_file: &'a str,
}

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Argmax, lowest id on ties (llama.cpp's greedy sampler keeps the first maximum).
fn argmax(v: &[f32]) -> TokenId {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as TokenId
}

fn push(data: &mut Vec<u8>, values: &[f32]) -> Span {
    let offset = data.len() as u64;
    for v in values {
        data.extend_from_slice(&v.to_le_bytes());
    }
    Span {
        offset,
        count: values.len() as u64,
    }
}

/// Record `plan` with `oracle`: returns the recording and its data file's bytes. Deterministic
/// when the oracle is (one thread).
pub fn record(oracle: &mut dyn Oracle, plan: &RecordPlan) -> Result<(Recording, Vec<u8>)> {
    let mut data = Vec::new();
    let none = TapFilter::none();
    let mut prompts = Vec::with_capacity(plan.prompts.len());
    for &text in plan.prompts {
        let tokens = oracle.tokenize(text, true, true)?;
        let mut evaluations = Vec::with_capacity(plan.decode_steps + 1);
        let mut decode_tokens = Vec::with_capacity(plan.decode_steps);
        let mut eval = oracle.evaluate(&tokens, plan.taps)?;
        for step in 0..=plan.decode_steps {
            let last = eval.logits_row(eval.n_tokens() - 1);
            let next = argmax(last);
            evaluations.push(store(&eval, &mut data)?);
            if step == plan.decode_steps {
                break;
            }
            decode_tokens.push(next);
            let taps = if step < plan.tap_decode_steps {
                plan.taps
            } else {
                &none
            };
            eval = oracle.decode_step(next, taps)?;
        }
        prompts.push(RecordedPrompt {
            text: text.to_string(),
            add_special: true,
            parse_special: true,
            tokens,
            decode_tokens,
            evaluations,
        });
    }
    let mut model_info = oracle.model().clone();
    model_info.path = plan.model.to_string();
    let recording = Recording {
        format: FORMAT.into(),
        model: plan.model.into(),
        model_sha256: plan.model_sha256.into(),
        model_info,
        oracle: oracle.identity().clone(),
        taps: plan.taps.spec(),
        tap_decode_steps: plan.tap_decode_steps,
        data: plan.data_file.into(),
        data_bytes: data.len() as u64,
        data_sha256: sha256_hex(&data),
        prompts,
    };
    Ok((recording, data))
}

/// Append one evaluation's numbers to `data`, `result_output` folded into the logits when the
/// two are the same bits.
fn store(e: &Evaluation, data: &mut Vec<u8>) -> Result<RecordedEvaluation> {
    let logits = push(data, &e.logits);
    let mut taps = Vec::with_capacity(e.taps.len());
    let mut result_output_is_logits = false;
    for (tap, src) in e.taps.iter().zip(&e.tap_sources) {
        if tap.name != src.name {
            return Err(Error::Capture(format!(
                "tap {} listed with the source of {}",
                tap.name, src.name
            )));
        }
        if tap.name == LOGITS_TAP
            && tap.data.len() == e.logits.len()
            && tap
                .data
                .iter()
                .zip(&e.logits)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        {
            result_output_is_logits = true;
            continue;
        }
        taps.push(RecordedTap {
            name: tap.name.clone(),
            shape: tap.shape.clone(),
            op: src.op.clone(),
            occurrence: src.occurrence,
            occurrences: src.occurrences,
            data: push(data, &tap.data),
        });
    }
    Ok(RecordedEvaluation {
        start_pos: e.start_pos,
        tokens: e.tokens.clone(),
        logits,
        taps,
        result_output_is_logits,
    })
}

/// Pretty JSON with a trailing newline (committed files diff well).
pub fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Llama(format!("cannot serialise a golden recording: {e}")))?;
    out.push(b'\n');
    Ok(out)
}

/// Replays a golden recording through the [`Oracle`] trait.
pub struct GoldenOracle {
    identity: OracleIdentity,
    info: ModelInfo,
    recording: Recording,
    /// The recording's index file (for messages).
    file: String,
    values: Vec<f32>,
    /// `(prompt, next decode step)` of the current sequence.
    cursor: Option<(usize, usize)>,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadModel {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| bad(path, format!("cannot read: {e}")))
}

fn file_sha256(path: &Path) -> Result<String> {
    Ok(sha256_hex(&read(path)?))
}

impl GoldenOracle {
    /// Open the recording of `model` under `fixtures_dir/golden/`, found by the model file's
    /// sha256 in `golden/index.json` (so a copy of a committed model elsewhere finds it too).
    /// A model with no recording is refused with the list of recorded models, or with the
    /// index's reason when it was deliberately left out.
    pub fn open(fixtures_dir: &Path, model: &Path) -> Result<GoldenOracle> {
        let dir = fixtures_dir.join(GOLDEN_DIR);
        let index_path = dir.join(INDEX_FILE);
        let index: GoldenIndex = serde_json::from_slice(&read(&index_path)?)
            .map_err(|e| bad(&index_path, format!("not a golden index: {e}")))?;
        if index.format != FORMAT {
            return Err(bad(
                &index_path,
                format!("format {:?}, expected {FORMAT:?}", index.format),
            ));
        }
        let sha = file_sha256(model)?;
        let label = model.display().to_string();
        if let Some(skip) = index.not_recorded.iter().find(|s| s.model_sha256 == sha) {
            return Err(Error::NotRecorded {
                file: index_path.display().to_string(),
                reason: format!(
                    "{label} is {} and has no recording: {}",
                    skip.model, skip.reason
                ),
            });
        }
        let Some(entry) = index.recordings.iter().find(|r| r.model_sha256 == sha) else {
            let known: Vec<&str> = index.recordings.iter().map(|r| r.model.as_str()).collect();
            return Err(Error::NotRecorded {
                file: index_path.display().to_string(),
                reason: format!(
                    "no recording of {label} (sha256 {sha}); recorded models: {}",
                    known.join(", ")
                ),
            });
        };
        let mut oracle = GoldenOracle::open_recording(&dir.join(&entry.recording))?;
        if oracle.recording.model_sha256 != sha {
            return Err(bad(
                &dir.join(&entry.recording),
                format!(
                    "records model sha256 {}, but the index lists it for {sha}",
                    oracle.recording.model_sha256
                ),
            ));
        }
        oracle.info.path = label;
        Ok(oracle)
    }

    /// Open one recording file directly (no model check).
    pub fn open_recording(path: &Path) -> Result<GoldenOracle> {
        let recording: Recording = serde_json::from_slice(&read(path)?)
            .map_err(|e| bad(path, format!("not a golden recording: {e}")))?;
        if recording.format != FORMAT {
            return Err(bad(
                path,
                format!("format {:?}, expected {FORMAT:?}", recording.format),
            ));
        }
        let data_path: PathBuf = path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(&recording.data);
        // The data file's size is checked against the index before it is read whole.
        let len = std::fs::metadata(&data_path)
            .map_err(|e| bad(&data_path, format!("cannot read: {e}")))?
            .len();
        if len != recording.data_bytes || len % 4 != 0 {
            return Err(bad(
                &data_path,
                format!("{len} bytes, the recording says {}", recording.data_bytes),
            ));
        }
        let bytes = read(&data_path)?;
        let sha = sha256_hex(&bytes);
        if sha != recording.data_sha256 {
            return Err(bad(
                &data_path,
                format!("sha256 {sha}, the recording says {}", recording.data_sha256),
            ));
        }
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        check_spans(&recording, values.len(), path)?;
        let file = path.display().to_string();
        let identity = OracleIdentity {
            kind: "golden".into(),
            recorded: Some(RecordedFrom {
                golden: true,
                oracle_kind: recording.oracle.kind.clone(),
                file: file.clone(),
            }),
            ..recording.oracle.clone()
        };
        Ok(GoldenOracle {
            identity,
            info: recording.model_info.clone(),
            recording,
            file,
            values,
            cursor: None,
        })
    }

    /// The recording as read.
    pub fn recording(&self) -> &Recording {
        &self.recording
    }

    /// The recorded greedy continuation of a recorded prompt (the tokens decode steps must be
    /// fed), or `None` when `prompt` was not recorded.
    pub fn greedy_continuation(&self, prompt: &[TokenId]) -> Option<&[TokenId]> {
        self.recording
            .prompts
            .iter()
            .find(|p| p.tokens == prompt)
            .map(|p| p.decode_tokens.as_slice())
    }

    fn not_recorded(&self, reason: String) -> Error {
        Error::NotRecorded {
            file: self.file.clone(),
            reason,
        }
    }

    fn span(&self, s: Span) -> &[f32] {
        // Bounds checked when the recording was opened.
        let start = (s.offset / 4) as usize;
        &self.values[start..start + s.count as usize]
    }

    fn replay(&self, prompt: usize, index: usize, filter: &TapFilter) -> Evaluation {
        let e = &self.recording.prompts[prompt].evaluations[index];
        let logits = self.span(e.logits).to_vec();
        let mut taps = Vec::new();
        let mut tap_sources = Vec::new();
        for t in &e.taps {
            if filter.wants(&t.name) {
                taps.push(Tap::new(
                    t.name.clone(),
                    t.shape.clone(),
                    self.span(t.data).to_vec(),
                ));
                tap_sources.push(TapSource {
                    name: t.name.clone(),
                    op: t.op.clone(),
                    occurrence: t.occurrence,
                    occurrences: t.occurrences,
                });
            }
        }
        if e.result_output_is_logits && filter.wants(LOGITS_TAP) {
            // llama.cpp's last graph node: the logits matmul, one node of that name.
            taps.push(Tap::new(
                LOGITS_TAP.into(),
                vec![self.info.n_vocab, e.tokens.len()],
                logits.clone(),
            ));
            tap_sources.push(TapSource {
                name: LOGITS_TAP.into(),
                op: "MUL_MAT".into(),
                occurrence: 0,
                occurrences: 1,
            });
        }
        Evaluation {
            start_pos: e.start_pos,
            tokens: e.tokens.clone(),
            n_vocab: self.info.n_vocab,
            logits,
            taps,
            tap_sources,
            // The recording keeps the captured taps, not the graph inventory.
            graph: Vec::new(),
        }
    }
}

/// Every span inside the data, every shape consistent with its span, every evaluation's logits
/// `tokens * n_vocab`: checked once so replay can slice without checks.
fn check_spans(r: &Recording, n_values: usize, path: &Path) -> Result<()> {
    let n_vocab = r.model_info.n_vocab;
    let span_ok = |s: &Span| -> bool {
        s.offset % 4 == 0
            && (s.offset / 4)
                .checked_add(s.count)
                .is_some_and(|end| end <= n_values as u64)
    };
    for (pi, p) in r.prompts.iter().enumerate() {
        if p.evaluations.len() != p.decode_tokens.len() + 1 {
            return Err(bad(
                path,
                format!(
                    "prompt {pi}: {} evaluations for {} decode tokens",
                    p.evaluations.len(),
                    p.decode_tokens.len()
                ),
            ));
        }
        for (ei, e) in p.evaluations.iter().enumerate() {
            let what = format!("prompt {pi} evaluation {ei}");
            let want = (e.tokens.len() as u64).checked_mul(n_vocab as u64);
            if !span_ok(&e.logits) || want != Some(e.logits.count) {
                return Err(bad(path, format!("{what}: logits span {:?}", e.logits)));
            }
            for t in &e.taps {
                let n = t
                    .shape
                    .iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d as u64));
                if !span_ok(&t.data) || n != Some(t.data.count) {
                    return Err(bad(
                        path,
                        format!(
                            "{what}: tap {} shape {:?} does not fit span {:?}",
                            t.name, t.shape, t.data
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

impl Oracle for GoldenOracle {
    fn identity(&self) -> &OracleIdentity {
        &self.identity
    }

    fn model(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(
        &mut self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<TokenId>> {
        self.recording
            .prompts
            .iter()
            .find(|p| {
                p.text == text && p.add_special == add_special && p.parse_special == parse_special
            })
            .map(|p| p.tokens.clone())
            .ok_or_else(|| {
                let known: Vec<String> = self
                    .recording
                    .prompts
                    .iter()
                    .map(|p| format!("{:?}", p.text))
                    .collect();
                self.not_recorded(format!(
                    "no tokenization of {text:?} (add_special {add_special}, parse_special \
                     {parse_special}); recorded prompts (both on): {}",
                    known.join(", ")
                ))
            })
    }

    fn detokenize(&mut self, _: &[TokenId], _: bool, _: bool) -> Result<Vec<u8>> {
        Err(self.not_recorded(
            "golden recordings hold no detokenization (use the built-in oracle)".into(),
        ))
    }

    fn token_piece(&mut self, _: TokenId, _: bool) -> Result<Vec<u8>> {
        Err(self.not_recorded(
            "golden recordings hold no token pieces (use the built-in oracle)".into(),
        ))
    }

    fn evaluate(&mut self, tokens: &[TokenId], taps: &TapFilter) -> Result<Evaluation> {
        self.cursor = None;
        let Some(prompt) = self
            .recording
            .prompts
            .iter()
            .position(|p| p.tokens == tokens)
        else {
            let known: Vec<String> = self
                .recording
                .prompts
                .iter()
                .map(|p| format!("{:?} = {:?}", p.text, p.tokens))
                .collect();
            return Err(self.not_recorded(format!(
                "tokens {tokens:?} were not recorded; recorded prompts: {}",
                known.join("; ")
            )));
        };
        self.cursor = Some((prompt, 1));
        Ok(self.replay(prompt, 0, taps))
    }

    fn decode_step(&mut self, token: TokenId, taps: &TapFilter) -> Result<Evaluation> {
        let Some((prompt, step)) = self.cursor else {
            return Err(Error::InvalidRequest(
                "decode step without a successfully evaluated prefix".into(),
            ));
        };
        let p = &self.recording.prompts[prompt];
        let Some(&want) = p.decode_tokens.get(step - 1) else {
            return Err(self.not_recorded(format!(
                "the recording of {:?} ends after {} decode steps",
                p.text,
                p.decode_tokens.len()
            )));
        };
        if token != want {
            let pos = p.tokens.len() + step - 1;
            return Err(self.not_recorded(format!(
                "decode step {step} (position {pos}) of {:?}: token {token} was not recorded; \
                 the recorded greedy continuation feeds {want} here (the engine chose a \
                 different token: continuation {:?})",
                p.text, p.decode_tokens
            )));
        }
        self.cursor = Some((prompt, step + 1));
        Ok(self.replay(prompt, step, taps))
    }
}
