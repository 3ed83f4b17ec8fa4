//! Pairing the engine's taps with the oracle's by name, in graph order
//! (`xval_engine::taps::graph_order`).
//!
//! Shapes may split dimensions differently on the two sides (`Qcur-0` as `[64, 4, n]` in one,
//! `[256, n]` in another): pairs are compared by per-position row length, and a pair whose row
//! lengths differ is reported, not compared.
//!
//! I2_S alias: llama.cpp names the FFN up/gate matmul `ffn_up-L` and its product with the
//! `.scale` tensor `ffn_up_s-L` (`llm_graph_context::build_ffn`). An I2_S model carries its
//! scale inside the matmul, so the engine's `ffn_up-L` already is the scaled value; when the
//! oracle runs the lossless TQ2_0 + `.scale` transcode it has both. So when the oracle has
//! `ffn_up_s-L` and the engine has no `ffn_up_s-L`, the engine's `ffn_up-L` is compared with
//! the oracle's `ffn_up_s-L`, and the oracle's pre-scale `ffn_up-L` is reported oracle-only
//! (same for `ffn_gate`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use xval_engine::taps::{graph_order, split_name, tap_name, Tap, ORACLE_NAME_ALIASES};

/// One engine tap and the oracle tap it is compared with.
#[derive(Clone, Debug, PartialEq)]
pub struct TapPair<'a> {
    pub engine: &'a Tap,
    pub oracle: &'a Tap,
}

impl TapPair<'_> {
    /// The name the comparison reports (the engine's).
    pub fn name(&self) -> &str {
        &self.engine.name
    }

    /// Positions both sides hold.
    pub fn n_positions(&self) -> usize {
        self.engine.n_positions().min(self.oracle.n_positions())
    }
}

/// A pair of same-named taps whose rows cannot be compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShapeMismatch {
    pub name: String,
    pub engine_shape: Vec<usize>,
    pub oracle_shape: Vec<usize>,
}

/// An engine tap compared with an oracle tap of another name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Alias {
    pub engine: String,
    pub oracle: String,
    pub reason: String,
}

/// The outcome of pairing, in graph order.
#[derive(Clone, Debug, Default)]
pub struct Alignment<'a> {
    /// Comparable pairs (equal row lengths), in graph order.
    pub pairs: Vec<TapPair<'a>>,
    /// Taps only the engine captured.
    pub engine_only: Vec<String>,
    /// Taps only the oracle captured.
    pub oracle_only: Vec<String>,
    /// Pairs whose per-position row lengths differ.
    pub shape_mismatches: Vec<ShapeMismatch>,
    pub aliases: Vec<Alias>,
    /// Informational: pairs whose shapes split dims differently but agree in row length, or
    /// hold different numbers of positions.
    pub notes: Vec<String>,
}

/// The scaled tags an I2_S engine tap stands for: (engine tag, oracle tag).
const I2S_ALIASES: [(&str, &str); 2] = [("ffn_up", "ffn_up_s"), ("ffn_gate", "ffn_gate_s")];

/// Pair `engine` taps with `oracle` taps by name (see the module docs).
pub fn align<'a>(engine: &'a [Tap], oracle: &'a [Tap]) -> Alignment<'a> {
    let find = |taps: &'a [Tap], name: &str| taps.iter().find(|t| t.name == name);
    let mut out = Alignment::default();
    // Oracle names consumed by a pair (directly or through an alias).
    let mut used: Vec<&str> = Vec::new();
    // Oracle names reported oracle-only because an alias replaced them.
    let mut superseded: Vec<&str> = Vec::new();
    let mut engine_sorted: Vec<&Tap> = engine.iter().collect();
    engine_sorted.sort_by_key(|t| graph_order(&t.name));
    for e in engine_sorted {
        let (tag, layer) = split_name(&e.name);
        let alias = I2S_ALIASES.iter().find_map(|&(et, ot)| {
            if et != tag {
                return None;
            }
            let scaled = tap_name(ot, layer);
            let engine_has_scaled = find(engine, &scaled).is_some();
            match find(oracle, &scaled) {
                Some(o) if !engine_has_scaled => Some(o),
                _ => None,
            }
        });
        let renamed = || {
            ORACLE_NAME_ALIASES.iter().find_map(|&(et, ot, why)| {
                if et != tag || find(oracle, &e.name).is_some() {
                    return None;
                }
                find(oracle, &tap_name(ot, layer)).map(|o| (o, why))
            })
        };
        let o = match alias {
            None if renamed().is_some() => {
                let (o, why) = renamed().expect("checked");
                out.aliases.push(Alias {
                    engine: e.name.clone(),
                    oracle: o.name.clone(),
                    reason: why.into(),
                });
                o
            }
            Some(o) => {
                out.aliases.push(Alias {
                    engine: e.name.clone(),
                    oracle: o.name.clone(),
                    reason: "the engine has no scaled tap (I2_S carries its scale inside the \
                             matmul): compared with the oracle's tap after its .scale multiply"
                        .into(),
                });
                if let Some(pre) = find(oracle, &e.name) {
                    superseded.push(&pre.name);
                }
                o
            }
            None => match find(oracle, &e.name) {
                Some(o) => o,
                None => {
                    out.engine_only.push(e.name.clone());
                    continue;
                }
            },
        };
        used.push(&o.name);
        if e.row_len() != o.row_len() {
            out.shape_mismatches.push(ShapeMismatch {
                name: e.name.clone(),
                engine_shape: e.shape.clone(),
                oracle_shape: o.shape.clone(),
            });
            continue;
        }
        if e.shape != o.shape {
            let (ep, op) = (e.n_positions(), o.n_positions());
            if ep != op {
                out.notes.push(format!(
                    "{}: engine holds {ep} positions, oracle {op}: compared over {}",
                    e.name,
                    ep.min(op)
                ));
            } else {
                out.notes.push(format!(
                    "{}: shapes {:?} (engine) and {:?} (oracle) split dims differently; \
                     compared as rows of {}",
                    e.name,
                    e.shape,
                    o.shape,
                    e.row_len()
                ));
            }
        }
        out.pairs.push(TapPair {
            engine: e,
            oracle: o,
        });
    }
    let mut oracle_left: Vec<&Tap> = oracle
        .iter()
        .filter(|t| !used.contains(&t.name.as_str()) || superseded.contains(&t.name.as_str()))
        .collect();
    oracle_left.sort_by_key(|t| graph_order(&t.name));
    out.oracle_only = oracle_left.iter().map(|t| t.name.clone()).collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(name: &str, shape: &[usize]) -> Tap {
        let n = shape.iter().product();
        Tap::new(name.into(), shape.to_vec(), vec![0.0; n])
    }

    #[test]
    fn pairs_by_name_in_graph_order_and_reports_one_sided() {
        let engine = [
            tap("l_out-0", &[8, 2]),
            tap("attn_norm-0", &[8, 2]),
            tap("Qcur-0", &[4, 2, 2]),
        ];
        let oracle = [
            tap("attn_norm-0", &[8, 2]),
            tap("Qcur-0", &[8, 2]),
            tap("result_norm", &[8, 2]),
        ];
        let a = align(&engine, &oracle);
        let names: Vec<&str> = a.pairs.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["attn_norm-0", "Qcur-0"]);
        assert_eq!(a.engine_only, ["l_out-0"]);
        assert_eq!(a.oracle_only, ["result_norm"]);
        assert!(a.shape_mismatches.is_empty());
        assert_eq!(a.notes.len(), 1, "{:?}", a.notes);
        assert!(a.notes[0].contains("split dims differently"));
    }

    #[test]
    fn row_length_mismatch_is_reported_not_compared() {
        let engine = [tap("Kcur-1", &[64, 3])];
        let oracle = [tap("Kcur-1", &[32, 3])];
        let a = align(&engine, &oracle);
        assert!(a.pairs.is_empty());
        assert_eq!(
            a.shape_mismatches,
            [ShapeMismatch {
                name: "Kcur-1".into(),
                engine_shape: vec![64, 3],
                oracle_shape: vec![32, 3]
            }]
        );
        assert!(a.oracle_only.is_empty() && a.engine_only.is_empty());
    }

    #[test]
    fn i2s_alias_pairs_unscaled_engine_tap_with_scaled_oracle_tap() {
        let engine = [tap("ffn_up-0", &[16, 2]), tap("ffn_gate-0", &[16, 2])];
        let oracle = [
            tap("ffn_up-0", &[16, 2]),
            tap("ffn_up_s-0", &[16, 2]),
            tap("ffn_gate-0", &[16, 2]),
            tap("ffn_gate_s-0", &[16, 2]),
        ];
        let a = align(&engine, &oracle);
        let pairs: Vec<(&str, &str)> = a
            .pairs
            .iter()
            .map(|p| (p.name(), p.oracle.name.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("ffn_up-0", "ffn_up_s-0"), ("ffn_gate-0", "ffn_gate_s-0")]
        );
        assert_eq!(a.oracle_only, ["ffn_up-0", "ffn_gate-0"]);
        assert_eq!(a.aliases.len(), 2);
    }

    #[test]
    fn bitnet_cpp_names_the_output_projection_attn_o_out() {
        let engine = [tap("attn_out-1", &[8, 2])];
        let fork = [tap("attn_o_out-1", &[8, 2])];
        let a = align(&engine, &fork);
        assert_eq!(a.pairs.len(), 1);
        assert_eq!(a.pairs[0].oracle.name, "attn_o_out-1");
        assert!(a.oracle_only.is_empty() && a.engine_only.is_empty());
        assert!(a.aliases[0].reason.contains("bitnet.cpp"));
        // An oracle with both names is paired by the engine's.
        let both = [tap("attn_out-1", &[8, 2]), tap("attn_o_out-1", &[8, 2])];
        assert_eq!(align(&engine, &both).pairs[0].oracle.name, "attn_out-1");
    }

    #[test]
    fn no_alias_when_the_engine_has_the_scaled_tap() {
        let both = [tap("ffn_up-0", &[16, 2]), tap("ffn_up_s-0", &[16, 2])];
        let a = align(&both, &both);
        let pairs: Vec<(&str, &str)> = a
            .pairs
            .iter()
            .map(|p| (p.name(), p.oracle.name.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("ffn_up-0", "ffn_up-0"), ("ffn_up_s-0", "ffn_up_s-0")]
        );
        assert!(a.aliases.is_empty() && a.oracle_only.is_empty());
    }
}
