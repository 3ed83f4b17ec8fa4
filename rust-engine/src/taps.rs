//! Named intermediate tensors ("taps"), captured on both sides of a comparison under the names
//! llama.cpp gives its graph nodes (`cb(cur, "attn_norm", il)` -> `attn_norm-0`), so the engine
//! and every oracle meet in the middle.
//!
//! Capture is off by default and free when off: the forward pass asks [`TapFilter::wants`]
//! before copying anything.

use serde::Serialize;

/// The per-layer tap tags, in graph order (llama.cpp `llama_model_bitnet::graph` and
/// `llm_graph_context::build_ffn`). As in llama.cpp, `ffn_up`/`ffn_gate` are the raw matmul
/// outputs and `ffn_up_s`/`ffn_gate_s` the same after the optional one-element `.scale` tensor;
/// the `_s` taps exist only when the model has those tensors. Every other projection tap
/// (`Qcur`, `Kcur`, `Vcur`, `attn_out`, `ffn_down`) is taken after its scale. For I2_S weights the
/// per-tensor scale is part of the matmul itself, so `ffn_up` already includes it (the compare
/// step aligns it with an oracle's `ffn_up_s` when the oracle runs a transcoded file).
pub const LAYER_TAGS: [&str; 17] = [
    "attn_norm",
    "Qcur",
    "Kcur",
    "Vcur",
    "kqv_out",
    "attn_sub_norm",
    "attn_out",
    "ffn_inp",
    "ffn_norm",
    "ffn_up",
    "ffn_up_s",
    "ffn_gate",
    "ffn_gate_s",
    "ffn_sub_out",
    "ffn_sub_norm",
    "ffn_down",
    "l_out",
];

/// Other names some oracles give a node the engine names otherwise: (engine tag, oracle tag,
/// which oracle). Oracles capture both names; comparisons pair the engine's tap with the
/// oracle's of the other name when the oracle lacks the engine's.
pub const ORACLE_NAME_ALIASES: [(&str, &str, &str); 1] = [(
    "attn_out",
    "attn_o_out",
    "bitnet.cpp's fork names the output projection's result attn_o_out (build_bitnet in its \
     src/llama.cpp)",
)];

/// The model-level taps after the last layer, in graph order.
pub const FINAL_TAGS: [&str; 2] = ["result_norm", "result_output"];

/// The one tap-naming function: `tag-layer` for per-layer taps (llama.cpp's `cb` naming),
/// the bare tag for model-level ones.
pub fn tap_name(tag: &str, layer: Option<usize>) -> String {
    match layer {
        Some(l) => format!("{tag}-{l}"),
        None => tag.to_string(),
    }
}

/// Split a tap name into its tag and layer (`"Qcur-3"` -> `("Qcur", Some(3))`).
pub fn split_name(name: &str) -> (&str, Option<usize>) {
    match name.rsplit_once('-') {
        Some((tag, l)) if !tag.is_empty() => match l.parse() {
            Ok(layer) => (tag, Some(layer)),
            Err(_) => (name, None),
        },
        _ => (name, None),
    }
}

/// Every tap name of a model with `n_layer` layers, in graph order.
pub fn all_names(n_layer: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n_layer * LAYER_TAGS.len() + FINAL_TAGS.len());
    for l in 0..n_layer {
        names.extend(LAYER_TAGS.iter().map(|t| tap_name(t, Some(l))));
    }
    names.extend(FINAL_TAGS.iter().map(|t| tap_name(t, None)));
    names
}

/// Rank of a tap name in graph order (layer-major, then tag order; an oracle's other name for
/// a node ranks as the engine's, [`ORACLE_NAME_ALIASES`]); unknown names sort last.
pub fn graph_order(name: &str) -> (usize, usize) {
    let (tag, layer) = split_name(name);
    let tag = ORACLE_NAME_ALIASES
        .iter()
        .find(|(_, ot, _)| *ot == tag)
        .map_or(tag, |(et, _, _)| et);
    match layer {
        Some(l) => match LAYER_TAGS.iter().position(|t| *t == tag) {
            Some(i) => (l, i),
            None => (usize::MAX, usize::MAX),
        },
        None => match FINAL_TAGS.iter().position(|t| *t == tag) {
            Some(i) => (usize::MAX - 1, i),
            None => (usize::MAX, usize::MAX),
        },
    }
}

/// Which taps to capture: a comma-separated list of glob patterns over tap names (`*` any run of
/// characters, `?` one character). `""` or `none` selects nothing, `*` or `all` everything.
/// Example: `attn_norm-*,l_out-*,result_output`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TapFilter {
    patterns: Vec<String>,
}

impl TapFilter {
    /// Select nothing (the default: capture costs nothing).
    pub fn none() -> Self {
        TapFilter::default()
    }

    /// Select every tap.
    pub fn all() -> Self {
        TapFilter {
            patterns: vec!["*".into()],
        }
    }

    pub fn parse(spec: &str) -> Self {
        let spec = spec.trim();
        if spec.is_empty() || spec.eq_ignore_ascii_case("none") {
            return TapFilter::none();
        }
        if spec.eq_ignore_ascii_case("all") {
            return TapFilter::all();
        }
        TapFilter {
            patterns: spec
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the tap called `name` is selected.
    pub fn wants(&self, name: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| glob(p.as_bytes(), name.as_bytes()))
    }

    /// The patterns as given, for receipts.
    pub fn spec(&self) -> String {
        self.patterns.join(",")
    }
}

/// Iterative glob match with `*` and `?` (no backtracking blow-up).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// One captured intermediate tensor over all evaluated positions.
///
/// Layout follows ggml: `shape` lists dimensions fastest first, the last one is the token
/// position; `data` is contiguous in that order, so position `p`'s vector is
/// `data[p * row_len .. (p + 1) * row_len]`. (`Qcur-0` of 4 heads of 64 over 7 tokens has
/// shape `[64, 4, 7]`.)
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tap {
    pub name: String,
    pub shape: Vec<usize>,
    #[serde(skip)]
    pub data: Vec<f32>,
}

impl Tap {
    pub fn new(name: String, shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tap {name}: shape {shape:?} does not match {} values",
            data.len()
        );
        Tap { name, shape, data }
    }

    /// Number of positions (the last dimension).
    pub fn n_positions(&self) -> usize {
        self.shape.last().copied().unwrap_or(0)
    }

    /// Values per position.
    pub fn row_len(&self) -> usize {
        self.shape[..self.shape.len().saturating_sub(1)]
            .iter()
            .product()
    }

    /// The vector of position `p`.
    pub fn row(&self, p: usize) -> &[f32] {
        let n = self.row_len();
        &self.data[p * n..(p + 1) * n]
    }

    pub fn tag(&self) -> &str {
        split_name(&self.name).0
    }

    pub fn layer(&self) -> Option<usize> {
        split_name(&self.name).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_and_order() {
        assert_eq!(split_name("Qcur-12"), ("Qcur", Some(12)));
        assert_eq!(split_name("result_norm"), ("result_norm", None));
        assert_eq!(tap_name("l_out", Some(3)), "l_out-3");
        let names = all_names(2);
        assert_eq!(names.len(), 2 * 17 + 2);
        let mut sorted = names.clone();
        sorted.sort_by_key(|n| graph_order(n));
        assert_eq!(sorted, names);
    }

    #[test]
    fn filters() {
        let f = TapFilter::parse("attn_*-0, l_out-*");
        assert!(f.wants("attn_norm-0"));
        assert!(f.wants("attn_sub_norm-0"));
        assert!(!f.wants("attn_norm-1"));
        assert!(f.wants("l_out-7"));
        assert!(!f.wants("result_output"));
        assert!(TapFilter::parse("").is_empty());
        assert!(TapFilter::parse("all").wants("anything"));
        assert!(!TapFilter::none().wants("l_out-0"));
        assert!(TapFilter::parse("Qcur-?").wants("Qcur-3"));
        assert!(!TapFilter::parse("Qcur-?").wants("Qcur-13"));
    }
}
