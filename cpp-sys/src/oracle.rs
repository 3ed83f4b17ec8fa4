//! The `Oracle` trait every reference implementation implements, and the types it speaks.
//!
//! An oracle tokenizes, detokenizes, evaluates a prompt (logits for every position plus the
//! requested taps) and continues it one token at a time through its KV cache. Taps come out in
//! the engine's layout and under the engine's names (`xval_engine::taps`): shape fastest first,
//! the last dimension is the position, data contiguous.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use xval_engine::taps::{Tap, TapFilter};

use crate::error::Result;

/// A token id as the engine and the receipts use it (llama.cpp's `llama_token` is an i32; ids
/// are checked against the vocabulary when they cross into C).
pub type TokenId = u32;

/// The K/V cache element type (the engine's: `f32`, the most exact oracle and the default, or
/// `f16`, llama.cpp's own default and what bitnet.cpp runs with).
pub use xval_engine::numerics::KvType;
use xval_engine::numerics::Numerics;

/// Which live oracle implementation runs a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OracleKind {
    /// Mainline llama.cpp built into this binary, running its own `bitnet` graph.
    #[default]
    Builtin,
    /// The BitNet forward pass built by us from ggml ops (runs `bitnet-b1.58` too).
    GgmlGraph,
    /// A user's own llama.cpp or bitnet.cpp source+build tree, loaded through a C shim.
    External { dir: PathBuf },
}

/// The environment variable that names an external build tree when `dir:` comes without a path.
pub const BITNET_CPP_DIR_ENV: &str = "BITNET_CPP_DIR";

impl OracleKind {
    /// Parse `builtin`, `ggml-graph`, `dir:PATH` (or `dir` / `dir:` to take the path from
    /// `$BITNET_CPP_DIR`).
    pub fn parse(s: &str) -> Result<OracleKind, String> {
        match s {
            "builtin" => Ok(OracleKind::Builtin),
            "ggml-graph" => Ok(OracleKind::GgmlGraph),
            "dir" | "dir:" => match std::env::var_os(BITNET_CPP_DIR_ENV) {
                Some(d) if !d.is_empty() => Ok(OracleKind::External { dir: d.into() }),
                _ => Err(format!(
                    "oracle '{s}': no path given and ${BITNET_CPP_DIR_ENV} is not set"
                )),
            },
            _ => match s.strip_prefix("dir:") {
                Some(p) => Ok(OracleKind::External { dir: p.into() }),
                None => Err(format!(
                    "oracle '{s}': expected builtin, ggml-graph or dir:PATH"
                )),
            },
        }
    }

    /// How receipts and messages name it (`builtin`, `ggml-graph`, `dir:/path`).
    pub fn label(&self) -> String {
        match self {
            OracleKind::Builtin => "builtin".into(),
            OracleKind::GgmlGraph => "ggml-graph".into(),
            OracleKind::External { dir } => format!("dir:{}", dir.display()),
        }
    }
}

/// What the caller asks of an oracle. Defaults are the most exact oracle: F32 K/V cache, no
/// flash attention, no op fusion, one thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OracleSettings {
    /// Compute threads.
    pub threads: usize,
    /// Context length in positions (prompt plus decode steps). The whole prompt is evaluated as
    /// one batch, so it is also the batch size.
    pub n_ctx: usize,
    pub kv_type: KvType,
    /// When `kv_type` is F32 and the oracle refuses an F32 V cache without flash attention
    /// (bitnet.cpp's fork: "V cache quantization requires flash_attn"), run it with F16
    /// instead and say so in [`SettingsIdentity::kv_note`], rather than failing.
    #[serde(default)]
    pub kv_fallback: bool,
    pub flash_attn: bool,
    /// ggml's CPU op fusion (off: every named intermediate exists as its own node).
    pub fusion: bool,
    /// Scalar reference kernels (`ggml_backend_cpu_set_use_ref`), where the oracle can reach
    /// them; an oracle that cannot refuses instead of ignoring it.
    pub reference_kernels: bool,
}

impl Default for OracleSettings {
    fn default() -> Self {
        OracleSettings {
            threads: 1,
            n_ctx: 512,
            kv_type: KvType::F32,
            kv_fallback: false,
            flash_attn: false,
            fusion: false,
            reference_kernels: false,
        }
    }
}

/// Who the oracle is: kind, version, build and effective settings. Goes into every receipt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OracleIdentity {
    /// `builtin`, `ggml-graph`, `external`, `golden`.
    pub kind: String,
    /// The engine numerics that mirror the arithmetic this oracle runs on the loaded model:
    /// the profile (`ggml` for mainline ggml kernels: Q8_K activations for ternary weights,
    /// also for an I2_S model transcoded to TQ2_0; `bitnet-cpp` for a bitnet.cpp tree reading
    /// I2_S natively: int8 per-row activations), its KV-cache type, and what its F16-weight
    /// matmuls multiply by. Set by each oracle from what it loaded and how it was built, so a
    /// comparison reads it instead of guessing.
    pub numerics: Numerics,
    pub version: String,
    pub build: BuildIdentity,
    pub settings: SettingsIdentity,
    /// Set when these are recorded numbers replayed (kind `golden`): which oracle recorded
    /// them and from which file. The other fields are the recording oracle's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<RecordedFrom>,
}

/// Where a replayed oracle's numbers come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedFrom {
    /// Always true: the numbers are a recording, not a live oracle.
    pub golden: bool,
    /// The kind of the oracle that recorded them (`builtin`).
    pub oracle_kind: String,
    /// The recording's index file.
    pub file: String,
}

/// How the oracle's C/C++ code was obtained and built.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildIdentity {
    /// Where the source came from (registry package and version, or a user's tree).
    pub source: String,
    /// The upstream VCS revision of that source package, when it records one.
    pub source_vcs: Option<String>,
    /// llama.cpp's build number (`git rev-list --count HEAD`), when the tree had git metadata.
    pub llama_build_number: Option<u64>,
    /// llama.cpp's commit, when the tree had git metadata.
    pub llama_commit: Option<String>,
    pub ggml_version: String,
    pub ggml_commit: String,
    /// sha256 over the compiled source files (see the crate's build script): identifies the
    /// tree even when it carries no git metadata.
    pub source_sha256: String,
    /// CMake build type.
    pub build_type: String,
    pub compiler: String,
    /// The build options that decide kernels and numerics, as the build used them.
    pub flags: BTreeMap<String, String>,
    /// CPU features the kernels were compiled for (ggml's `ggml_cpu_has_*`).
    pub cpu_features: Vec<String>,
    /// llama.cpp's own `llama_print_system_info()` line.
    pub system_info: String,
}

/// The settings as the oracle actually applied them (which may differ from the request: e.g.
/// llama.cpp rounds the context up to a multiple of 256).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingsIdentity {
    pub threads: usize,
    pub n_ctx: usize,
    pub n_batch: usize,
    pub n_ubatch: usize,
    pub kv_type: KvType,
    /// Why `kv_type` differs from what was asked (an oracle that refuses F32 V), when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_note: Option<String>,
    pub flash_attn: bool,
    pub fusion: bool,
    pub reference_kernels: ReferenceKernels,
    /// Whether weights may be repacked into other layouts at load time.
    pub weight_repack: bool,
    /// Which positions produce logits (always every position here).
    pub outputs: String,
    /// How the model file reached the oracle (as given, or transcoded and how).
    pub model_input: String,
}

/// Whether scalar reference kernels are on, whether they could be, and why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceKernels {
    pub enabled: bool,
    pub available: bool,
    pub note: String,
}

/// The model as the oracle loaded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub path: String,
    pub architecture: String,
    pub description: String,
    pub n_vocab: usize,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
}

/// One named node of the oracle's compute graph, in graph order: the inventory of what the
/// oracle could have captured, so that a comparison can report taps one side lacks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphNode {
    pub name: String,
    /// ggml op (`ggml_op_desc`: `MUL_MAT`, `ROPE`, `SWIGLU`, ...).
    pub op: String,
    /// ggml shape `ne[0..4]`.
    pub ne: [i64; 4],
}

impl GraphNode {
    /// Whether the model's graph code named this node (llama.cpp's `cb(cur, "kq", il)`), as
    /// opposed to a name ggml derived for a view or reshape (`"Kcur-0 (view)"`), a node nobody
    /// named (`"node_12"`), or a KV-cache view (`"cache_k_l0 (view)"`).
    pub fn is_named_by_model(&self) -> bool {
        !self.name.contains(" (")
            && !self.name.starts_with("node_")
            && !self.name.starts_with("leaf_")
            && !self.name.starts_with("cache_")
    }
}

/// Which graph node a captured tap came from: several nodes may carry the same name (`Qcur-0`
/// on MUL, RESHAPE and ROPE); the last one in graph order is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapSource {
    pub name: String,
    pub op: String,
    /// 0-based index of the kept node among the nodes with this name.
    pub occurrence: usize,
    /// How many nodes carried the name.
    pub occurrences: usize,
}

/// The result of evaluating tokens at positions `start_pos..start_pos + tokens.len()`.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub start_pos: usize,
    pub tokens: Vec<TokenId>,
    pub n_vocab: usize,
    /// `tokens.len() * n_vocab` logits, position by position.
    pub logits: Vec<f32>,
    /// Captured taps in graph order, in the engine's layout.
    pub taps: Vec<Tap>,
    /// Where each tap came from, in the order of `taps`.
    pub tap_sources: Vec<TapSource>,
    /// Every named node of the graph, in graph order.
    pub graph: Vec<GraphNode>,
}

impl Evaluation {
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// The logits of the `i`-th evaluated position.
    pub fn logits_row(&self, i: usize) -> &[f32] {
        &self.logits[i * self.n_vocab..(i + 1) * self.n_vocab]
    }

    /// The evaluation of the last position alone (its token and logits; no taps).
    pub fn last_only(mut self) -> Evaluation {
        let before = self.n_tokens().saturating_sub(1);
        self.logits.drain(..before * self.n_vocab);
        Evaluation {
            start_pos: self.start_pos + before,
            tokens: self.tokens.split_off(before),
            n_vocab: self.n_vocab,
            logits: self.logits,
            taps: Vec::new(),
            tap_sources: Vec::new(),
            graph: Vec::new(),
        }
    }

    pub fn tap(&self, name: &str) -> Option<&Tap> {
        self.taps.iter().find(|t| t.name == name)
    }
}

/// A reference implementation behind one interface.
pub trait Oracle {
    fn identity(&self) -> &OracleIdentity;

    fn model(&self) -> &ModelInfo;

    /// Text to ids (`llama_tokenize`): `add_special` adds BOS/EOS as the model's vocabulary
    /// asks, `parse_special` lets special-token text map to special tokens.
    fn tokenize(
        &mut self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<TokenId>>;

    /// Ids to bytes (`llama_detokenize`); bytes, not `String`: pieces of a UTF-8 character are
    /// legitimate output.
    fn detokenize(
        &mut self,
        tokens: &[TokenId],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>>;

    /// One token's text (`llama_token_to_piece`).
    fn token_piece(&mut self, token: TokenId, special: bool) -> Result<Vec<u8>>;

    /// Evaluate `tokens` at positions `0..n` in a fresh sequence (the KV cache is cleared):
    /// logits for every position, and the taps `taps` selects.
    fn evaluate(&mut self, tokens: &[TokenId], taps: &TapFilter) -> Result<Evaluation>;

    /// Continue the current sequence by one token at the next position, through the KV cache.
    fn decode_step(&mut self, token: TokenId, taps: &TapFilter) -> Result<Evaluation>;

    /// Evaluate `tokens` at positions `0..n` in a fresh sequence with the last position the only
    /// output, as llama.cpp's own tools evaluate a prompt (`llama-bench`, `llama-cli`): the
    /// evaluation of that position alone (its token and logits, no taps), every position in
    /// the KV cache for the steps that follow. Oracles that can cut their outputs do (the
    /// output projection then multiplies one row); the default evaluates every position and
    /// keeps the last.
    fn evaluate_last(&mut self, tokens: &[TokenId]) -> Result<Evaluation> {
        let all = self.evaluate(tokens, &TapFilter::none())?;
        Ok(all.last_only())
    }
}
