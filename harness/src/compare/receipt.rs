//! The receipt of a comparison: versioned JSON (`schema_version: 2`) whose JSON Schema is
//! `receipts/schema/receipt.v2.schema.json` (generated from these types by [`schema`]; a test
//! keeps the committed file in step). Written atomically ([`crate::output::write_atomic`]), so
//! a reader never sees half a receipt.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xval_engine::gguf::GgufFile;
use xval_engine::model::{Engine, Model};
use xval_engine::numerics::{KvType, Profile};
use xval_engine::quant::kernels::{Backend, Kernel};
use xval_engine::tokenizer::Tokenizer;

use super::align::{Alias, ShapeMismatch};
use super::kernel_sets::KernelSetRecord;
use super::metrics::{KeyMetrics, LogitMetrics, TapMetrics};
use super::thresholds::{AppliedThresholds, TapClass};
use super::verdict::{ChainedLimit, FirstDivergence, LogitLimit, Pairing, Verdict};
use crate::error::{Error, Result};

/// The receipt format version this code writes and reads. Version 2 added the noise twin
/// (`reference`, per-tap `reference` and `limit`), decode-step replays, replay errors, the
/// input's place in a prompt list (`input`) and the summary's `basis` and `worst`.
pub const SCHEMA_VERSION: u32 = 2;

/// Where the published schema lives, relative to the repository root.
pub const SCHEMA_PATH: &str = "receipts/schema/receipt.v2.schema.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Receipt {
    /// Always 2 for this format.
    pub schema_version: u32,
    /// When the comparison ran, RFC 3339 UTC.
    pub created: String,
    pub mode: Mode,
    pub provenance: Provenance,
    pub engine: EngineIdentity,
    /// The oracle's identity and settings as the oracle reports them (`OracleIdentity`).
    pub oracle: serde_json::Value,
    pub pairing: Pairing,
    pub thresholds: AppliedThresholds,
    /// What was compared: the prompt and its place in a prompt list (shards).
    pub input: InputRecord,
    pub tokenizer: TokenizerParity,
    pub alignment: AlignmentRecord,
    /// The noise reference the chained limits follow.
    pub reference: ReferenceRecord,
    /// Per-tap metrics over the prompt, in graph order.
    pub taps: Vec<TapRecord>,
    /// Per-position logit metrics and verdicts over the prompt.
    pub positions: Vec<PositionRecord>,
    pub first_divergence: Option<FirstDivergence>,
    pub decode: DecodeParity,
    /// Op replays that failed: each fails the comparison.
    pub replay_errors: Vec<ReplayError>,
    pub summary: Summary,
    /// Seconds per phase (`engine_prefill`, `oracle_prefill`, `compare`, ...; with `--kernel
    /// all`, `engine_prefill[avx2]` and so on per kernel set).
    pub timings: BTreeMap<String, f64>,
    /// `compare --kernel all`: every other kernel set this CPU runs, each compared with the
    /// same oracle run by the same limits and with the scalar engine value by value (the rest
    /// of the receipt is the scalar engine's comparison). Absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_sets: Vec<KernelSetRecord>,
}

/// What the engine was compared against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModeKind {
    /// A live oracle (llama.cpp, the ggml graph, an external tree).
    Oracle,
    /// Recorded oracle outputs (golden files): no C++ ran in this comparison.
    RustOnly,
    /// The engine against itself under other settings (a self-check, no oracle involved).
    SelfCheck,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Mode {
    pub kind: ModeKind,
    /// Set whenever `kind` is not `oracle`: says loudly what the numbers do not prove.
    pub warning: Option<String>,
}

impl Mode {
    pub fn oracle() -> Mode {
        Mode {
            kind: ModeKind::Oracle,
            warning: None,
        }
    }

    pub fn rust_only() -> Mode {
        Mode {
            kind: ModeKind::RustOnly,
            warning: Some(
                "RUST-ONLY: compared against recorded (golden) oracle outputs, not a live oracle; \
                 the oracle's build, flags and settings are as recorded, not as they are now"
                    .into(),
            ),
        }
    }

    pub fn self_check() -> Mode {
        Mode {
            kind: ModeKind::SelfCheck,
            warning: Some(
                "SELF-CHECK: the engine was compared with itself under other settings; no \
                 independent oracle took part"
                    .into(),
            ),
        }
    }
}

/// The model compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Provenance {
    pub model_path: String,
    pub model_sha256: String,
    pub architecture: String,
    /// Weight format per tensor class (`token_embd`, `output`, `projections`, ...).
    pub formats: BTreeMap<String, String>,
    pub tokenizer: TokenizerIdentity,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenizerIdentity {
    /// `tokenizer.ggml.model` (`gpt2`).
    pub model: String,
    /// The pre-tokenizer in effect (`llama-bpe`, `default`).
    pub pre: String,
    pub n_vocab: usize,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

impl Provenance {
    /// Describe `model` (loaded from `path`): hashes the whole file.
    /// `model_sha256`: [`Provenance::model_sha256`] of the model's file (computed by the
    /// caller, which can overlap it with the oracle's start: a 1.2 GB file takes most of a
    /// second).
    pub fn of_model(
        path: &Path,
        model: &Model,
        tokenizer: &Tokenizer,
        model_sha256: String,
    ) -> Provenance {
        let file = model.file();
        let formats = model
            .formats()
            .into_iter()
            .map(|(class, ty)| (class, ty.name().to_string()))
            .collect();
        Provenance {
            model_path: path.display().to_string(),
            model_sha256,
            architecture: model.hparams.arch_name.clone(),
            formats,
            tokenizer: TokenizerIdentity {
                model: file
                    .get("tokenizer.ggml.model")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string(),
                pre: tokenizer.pre_tokenizer().to_string(),
                n_vocab: tokenizer.n_vocab(),
                bos: tokenizer.bos(),
                eos: tokenizer.eos(),
            },
        }
    }
}

impl Provenance {
    /// The SHA-256 of a model file's bytes, in hex.
    pub fn model_sha256(file: &GgufFile) -> String {
        hex(&Sha256::digest(file.bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The engine side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EngineIdentity {
    pub version: String,
    /// The commit the engine was built from, when the build knew it.
    pub git_commit: Option<String>,
    /// Where the kernels ran (`cpu`).
    #[schemars(with = "String")]
    pub backend: Backend,
    /// The kernel sets that computed the engine's numbers (`scalar`).
    #[schemars(with = "Vec<String>")]
    pub kernels: Vec<Kernel>,
    /// CPU features detected at run time.
    pub cpu_features: Vec<String>,
    #[schemars(with = "String")]
    pub profile: Profile,
    #[schemars(with = "String")]
    pub kv_type: KvType,
    pub threads: usize,
    /// Faults injected into the engine on purpose (`compare --fault`, `selftest`): a receipt
    /// with faults is a test of the tool, not of the engine.
    #[serde(default)]
    pub faults: Vec<String>,
}

impl EngineIdentity {
    /// Describe `engine`; `git_commit` as the caller knows it.
    pub fn of_engine(engine: &Engine, git_commit: Option<String>) -> EngineIdentity {
        EngineIdentity {
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit,
            backend: engine.backend(),
            kernels: vec![engine.kernel()],
            cpu_features: xval_engine::cpu::features(),
            profile: engine.numerics().profile,
            kv_type: engine.numerics().kv,
            threads: engine.threads(),
            faults: engine
                .plan()
                .map(|p| p.faults.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
        }
    }
}

/// Token ids from both tokenizers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenizerParity {
    pub engine_ids: Vec<u32>,
    pub oracle_ids: Vec<u32>,
    pub matched: bool,
    pub first_difference: Option<IdDifference>,
    /// Whose ids both sides then evaluated.
    pub evaluated_ids: String,
}

/// The first index where the id lists differ (`None` on a side that ended there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IdDifference {
    pub index: usize,
    pub engine: Option<u32>,
    pub oracle: Option<u32>,
}

impl TokenizerParity {
    pub fn new(engine_ids: &[u32], oracle_ids: &[u32], evaluated_ids: &str) -> TokenizerParity {
        let n = engine_ids.len().max(oracle_ids.len());
        let first_difference = (0..n)
            .find(|&i| engine_ids.get(i) != oracle_ids.get(i))
            .map(|i| IdDifference {
                index: i,
                engine: engine_ids.get(i).copied(),
                oracle: oracle_ids.get(i).copied(),
            });
        TokenizerParity {
            engine_ids: engine_ids.to_vec(),
            oracle_ids: oracle_ids.to_vec(),
            matched: first_difference.is_none(),
            first_difference,
            evaluated_ids: evaluated_ids.into(),
        }
    }
}

/// The input of one comparison and its place in a prompt list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InputRecord {
    /// The prompt text (`None` for `--tokens`).
    pub prompt: Option<String>,
    /// Its index in the prompt list (0 for a single prompt).
    pub prompt_index: usize,
    /// How many prompts the whole list holds (every shard together).
    pub prompts_total: usize,
    /// sha256 of the list (the `--prompts` file's bytes; a single prompt's or ids' text), so
    /// `harness gate` can tell which receipts belong to one run.
    pub prompts_sha256: String,
    /// The shard that ran this prompt (`--shard K/N`).
    pub shard: Option<Shard>,
}

/// One share of a prompt list: prompts `i` with `i % of == index - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Shard {
    /// 1-based.
    pub index: usize,
    pub of: usize,
}

/// The noise reference: the engine run again with one-ulp jitter on every op's output (another
/// valid rounding), whose drift from the plain engine measures how far rounding noise carries
/// in this model, tap by tap.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReferenceRecord {
    /// `noise-twin`, or `none` when no twin ran (chained limits are then the class floors).
    pub kind: String,
    pub seed: Option<u64>,
    pub description: String,
    /// The logits' limits derived from it.
    pub logits: LogitLimit,
    /// Taps whose chained comparison carries no information (the twin alone drifts past
    /// `informative_max_nmse`), in graph order; only their op-level replay is judged.
    pub uninformative_taps: Vec<String>,
}

/// A replay of the engine's op on the oracle's inputs that failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReplayError {
    pub tap: String,
    /// The decode step (`None`: the prompt).
    pub step: Option<usize>,
    pub error: String,
}

/// How taps were paired.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AlignmentRecord {
    pub engine_only: Vec<String>,
    pub oracle_only: Vec<String>,
    pub aliases: Vec<Alias>,
    /// Same-named taps with different per-position row lengths (not compared; a failure).
    pub shape_mismatches: Vec<ShapeMismatch>,
    pub notes: Vec<String>,
}

/// One tap over the prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TapRecord {
    pub name: String,
    /// The oracle tap it was compared with, when its name differs (I2_S alias).
    pub oracle_name: Option<String>,
    pub layer: Option<usize>,
    pub class: TapClass,
    pub engine_shape: Vec<usize>,
    pub oracle_shape: Vec<usize>,
    /// The position with the largest NMSE (a non-finite mismatch counts as the worst).
    pub worst_position: usize,
    /// Full metrics at the worst position.
    pub worst: TapMetrics,
    /// Key metrics per position.
    pub positions: Vec<KeyMetrics>,
    /// Key metrics per position of the engine's op replayed on the oracle's own inputs
    /// (absent when the op could not be replayed).
    #[serde(default)]
    pub replay: Option<Vec<KeyMetrics>>,
    /// The noise twin's drift from the engine per position (twin against engine, normalised
    /// by the engine); absent when no twin ran.
    #[serde(default)]
    pub reference: Option<Vec<KeyMetrics>>,
    /// The chained limit derived for this tap (from `reference` over the prompt and the
    /// decode steps, and the thresholds' `[chained]` scheme).
    pub limit: ChainedLimit,
}

/// One prompt position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PositionRecord {
    pub position: usize,
    /// The token evaluated there.
    pub token: u32,
    pub logits: LogitMetrics,
    /// The noise twin's logits against the engine's (absent without a twin).
    pub reference: Option<LogitMetrics>,
    pub verdict: Verdict,
    pub explanation: String,
    /// Taps past their limit at this position.
    pub taps_crossed: usize,
}

/// Greedy continuation through both KV caches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DecodeParity {
    pub steps_requested: usize,
    pub steps: Vec<DecodeStep>,
    /// The first step whose token or taps diverge (verdict other than MATCH).
    pub first_divergent_step: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DecodeStep {
    pub step: usize,
    pub position: usize,
    /// The token both sides were fed.
    pub input_token: u32,
    /// Each side's greedy choice after it.
    pub engine_token: u32,
    pub oracle_token: u32,
    pub logits: LogitMetrics,
    /// The noise twin's logits against the engine's at this step.
    pub reference: Option<LogitMetrics>,
    /// Key metrics per tap at this step (chained).
    pub taps: BTreeMap<String, KeyMetrics>,
    /// The engine's op replayed on the oracle's inputs of this step (attention over the
    /// oracle's keys and values of every earlier position), per tap that could be replayed.
    pub tap_replay: BTreeMap<String, KeyMetrics>,
    /// The noise twin's drift from the engine per tap at this step.
    pub tap_reference: BTreeMap<String, KeyMetrics>,
    pub verdict: Verdict,
    pub explanation: String,
    /// The first tap in graph order past its limit at this step.
    pub first_diverging_tap: Option<String>,
}

/// The comparison in a line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    /// The worst verdict over prompt positions and decode steps.
    pub verdict: Verdict,
    pub positions: BTreeMap<Verdict, usize>,
    pub decode_steps: BTreeMap<Verdict, usize>,
    pub taps_compared: usize,
    /// Whether the gate (with the receipt's own thresholds) passes.
    pub passes: bool,
    /// What the verdict rests on: `op-level and chained`, or where the chained comparison
    /// carries no information, `op-level only from <tap> on`.
    pub basis: String,
    /// The largest metric-to-limit ratio of the comparison and where (above 1: a limit
    /// crossed; the closer a clean comparison stays to 0 the more room the limits leave).
    pub worst: Option<WorstRatio>,
    /// The likely cause of the first divergence, read from its signature (absent when the
    /// comparison does not diverge).
    #[serde(default)]
    pub diagnosis: Option<Diagnosis>,
}

/// The likely cause of a divergence, named from the shape of the difference at the first
/// divergence and around it (docs/selftest.md lists the signatures).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Diagnosis {
    /// The signature's key: `tokens`, `profile`, `scale`, `permutation`, `position-growth`, `heads`,
    /// `activation`, `norm`, `decode-kv`, `rounding`, ... or `none` (no known signature).
    pub signature: String,
    /// The likely cause, in words.
    pub cause: String,
    /// The figures the signature was read from.
    pub evidence: String,
}

/// A metric's ratio to its limit and where it was taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorstRatio {
    #[serde(with = "super::float_serde::float")]
    #[schemars(with = "super::float_serde::FloatRepr")]
    pub ratio: f64,
    /// `replay_nmse`, `nmse`, `cosine` or `kl`.
    pub metric: String,
    /// The tap (`logits` for KL).
    pub tap: String,
    /// The absolute position.
    pub position: usize,
    /// The decode step, when in one.
    pub step: Option<usize>,
}

impl Receipt {
    /// Write the receipt as pretty JSON to `path` atomically.
    pub fn write_atomic(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Invalid(format!("cannot serialise the receipt: {e}")))?;
        crate::output::write_atomic(path, &json)
    }

    /// Read a receipt, naming the file in every error.
    pub fn read(path: &Path) -> Result<Receipt> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Receipt::from_slice(&bytes, &path.display().to_string())
    }

    /// Parse a receipt's JSON; `source` names the file in errors, and a malformed field is
    /// named by its path (`taps[3].metrics.nmse`) with its line and column. A receipt of another
    /// schema version says so rather than naming a field it lacks.
    pub fn from_slice(bytes: &[u8], source: &str) -> Result<Receipt> {
        let bad = |reason: String| Error::bad_file(source, reason);
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let parsed: std::result::Result<Receipt, _> = serde_path_to_error::deserialize(&mut de);
        if parsed.is_ok() {
            // Anything after the receipt's closing brace.
            de.end().map_err(|e| bad(format!("not JSON: {e}")))?;
        }
        let version = match &parsed {
            Ok(r) => Some(u64::from(r.schema_version)),
            // Only a receipt that does not read is looked at a second time, as plain JSON.
            Err(_) => serde_json::from_slice::<serde_json::Value>(bytes)
                .map_err(|e| bad(format!("not JSON: {e}")))?
                .get("schema_version")
                .and_then(|v| v.as_u64()),
        };
        match version {
            Some(v) if v == SCHEMA_VERSION as u64 => {}
            Some(v) => {
                return Err(bad(format!(
                    "receipt schema_version {v}: this harness reads version {SCHEMA_VERSION}"
                )))
            }
            None => return Err(bad("no schema_version: not a receipt".into())),
        }
        let receipt = parsed.map_err(|e| {
            bad(format!(
                "malformed receipt: field `{}`: {}",
                e.path(),
                e.inner()
            ))
        })?;
        // What the types cannot say: the judge looks up a limit for every tap class.
        for class in TapClass::ALL {
            if class != TapClass::Logits && !receipt.thresholds.classes.contains_key(&class) {
                return Err(bad(format!(
                    "malformed receipt: field `thresholds.classes`: no limits for class `{}`",
                    class.name()
                )));
            }
        }
        Ok(receipt)
    }
}

/// The receipt's JSON Schema (draft-07), as committed in [`SCHEMA_PATH`].
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Receipt);
    serde_json::to_value(schema).expect("a schema serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_parity_first_difference() {
        let p = TokenizerParity::new(&[1, 2, 3], &[1, 2, 3], "oracle");
        assert!(p.matched && p.first_difference.is_none());
        let p = TokenizerParity::new(&[1, 5, 3], &[1, 2, 3], "oracle");
        let d = p.first_difference.unwrap();
        assert_eq!((d.index, d.engine, d.oracle), (1, Some(5), Some(2)));
        let p = TokenizerParity::new(&[1, 2], &[1, 2, 3], "oracle");
        let d = p.first_difference.unwrap();
        assert_eq!((d.index, d.engine, d.oracle), (2, None, Some(3)));
    }
}
