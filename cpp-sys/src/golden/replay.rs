//! [`GoldenOracle`]: a recording replayed through the [`Oracle`] trait.

use std::path::{Path, PathBuf};

use xval_engine::taps::{Tap, TapFilter};

use super::format::{sha256_hex, GoldenIndex, Recording, Span};
use super::{FORMAT, GOLDEN_DIR, INDEX_FILE, LOGITS_TAP};
use crate::error::{Error, Result};
use crate::oracle::{
    Evaluation, ModelInfo, Oracle, OracleIdentity, RecordedFrom, TapSource, TokenId,
};

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
        s.offset.is_multiple_of(4)
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
