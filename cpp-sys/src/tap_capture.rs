//! Tap capture through llama.cpp's `cb_eval` (`ggml_backend_sched_eval_callback`), the part
//! that does not depend on which ggml headers describe the tensors: the built-in oracle reads
//! nodes through its bindgen bindings, the external oracle through the C shim compiled against
//! the user's tree; both hand the same facts to [`Capture`].
//!
//! `ggml_backend_sched_compute_splits` asks the callback about each node in graph order
//! (`ask = true`); a yes makes it compute the graph up to that node, synchronise, and hand the
//! node over (`ask = false`). Saying yes costs a sync, so only wanted names get one. Every node
//! is asked about exactly once per evaluation, which also gives the inventory of named nodes.
//!
//! Several nodes can carry one name (`Qcur-0` is set on the scaled MUL, the RESHAPE and the
//! ROPE): captures are keyed by name, counting occurrences, and the last one in graph order is
//! kept, with its op and occurrence recorded. Data arrives as the tensor's bytes as copied by
//! `ggml_backend_tensor_get` (which also serves non-host buffers) and is read through the
//! `nb[]` strides, so views and permutations come out in logical order.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use xval_engine::taps::{
    all_names, graph_order, split_name, tap_name, Tap, TapFilter, ORACLE_NAME_ALIASES,
};

use crate::oracle::{GraphNode, TapSource};

/// ggml's element types a tap can come in (`GGML_TYPE_F32 = 0`, `GGML_TYPE_F16 = 1` in every
/// ggml version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    F16,
    /// Anything else, by ggml's type name: refused.
    Other(String),
}

impl Elem {
    /// From ggml's `enum ggml_type` value and its `ggml_type_name`.
    pub(crate) fn from_ggml(ty: i64, name: &str) -> Elem {
        match ty {
            0 => Elem::F32,
            1 => Elem::F16,
            _ => Elem::Other(name.to_string()),
        }
    }

    fn size(&self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::F16 => 2,
            Elem::Other(_) => 0,
        }
    }
}

/// A computed node's values as ggml holds them.
pub(crate) struct NodeValues<'a> {
    pub elem: Elem,
    pub ne: [i64; 4],
    pub nb: [usize; 4],
    /// `ggml_nbytes(t)` bytes copied out of the tensor's buffer.
    pub bytes: &'a [u8],
}

/// One captured node's values, in the engine's layout.
struct Captured {
    op: String,
    occurrence: usize,
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// The state `cb_eval_user_data` points at.
#[derive(Default)]
pub(crate) struct Capture {
    wanted: HashSet<String>,
    n_tokens: usize,
    graph: Vec<GraphNode>,
    occurrences: HashMap<String, usize>,
    /// The node answered "yes" to, awaiting its data: (tensor address, name, op, occurrence).
    pending: Option<(usize, String, String, usize)>,
    taps: HashMap<String, Captured>,
    /// The first failure; the evaluation reports it instead of returning partial taps.
    pub(crate) error: Option<String>,
}

/// The taps of a model of `n_layer` layers that `taps` selects, with the other names oracles
/// give some of them (`xval_engine::taps::ORACLE_NAME_ALIASES`).
pub(crate) fn wanted_names(n_layer: usize, taps: &TapFilter) -> HashSet<String> {
    let mut wanted: HashSet<String> = all_names(n_layer)
        .into_iter()
        .filter(|name| taps.wants(name))
        .collect();
    let aliases: Vec<String> = wanted
        .iter()
        .filter_map(|name| {
            let (tag, layer) = split_name(name);
            ORACLE_NAME_ALIASES
                .iter()
                .find(|(et, _, _)| *et == tag)
                .map(|(_, ot, _)| tap_name(ot, layer))
        })
        .collect();
    wanted.extend(aliases);
    wanted
}

impl Capture {
    /// Whether `name` is one of the taps asked for.
    // Only the built-in oracles (feature `llama-cpp`) use it.
    #[cfg_attr(not(feature = "llama-cpp"), allow(dead_code))]
    pub(crate) fn wants(&self, name: &str) -> bool {
        self.wanted.contains(name)
    }

    pub(crate) fn reset(&mut self, wanted: HashSet<String>, n_tokens: usize) {
        *self = Capture {
            wanted,
            n_tokens,
            ..Capture::default()
        };
    }

    /// Taps in graph order (the engine's tag order), their sources, and the node inventory.
    pub(crate) fn finish(&mut self) -> (Vec<Tap>, Vec<TapSource>, Vec<GraphNode>) {
        let mut names: Vec<String> = self.taps.keys().cloned().collect();
        names.sort_by(|a, b| graph_order(a).cmp(&graph_order(b)).then(a.cmp(b)));
        let mut taps = Vec::with_capacity(names.len());
        let mut sources = Vec::with_capacity(names.len());
        for name in names {
            let Some(c) = self.taps.remove(&name) else {
                continue;
            };
            sources.push(TapSource {
                name: name.clone(),
                op: c.op,
                occurrence: c.occurrence,
                occurrences: self.occurrences.get(&name).copied().unwrap_or(1),
            });
            taps.push(Tap::new(name, c.shape, c.data));
        }
        (taps, sources, std::mem::take(&mut self.graph))
    }

    /// Ask phase: record node `id` (its address), say whether its data is wanted.
    pub(crate) fn ask(&mut self, id: usize, name: &str, op: &str, ne: [i64; 4]) -> bool {
        if name.is_empty() {
            return false;
        }
        let count = self.occurrences.entry(name.to_string()).or_insert(0);
        let occurrence = *count;
        *count += 1;
        self.graph.push(GraphNode {
            name: name.to_string(),
            op: op.to_string(),
            ne,
        });
        if self.error.is_none() && self.wanted.contains(name) {
            self.pending = Some((id, name.to_string(), op.to_string(), occurrence));
            true
        } else {
            false
        }
    }

    /// Data phase: keep node `id`'s values (or the reason they could not be read).
    pub(crate) fn take(&mut self, id: usize, values: Result<NodeValues<'_>, String>) {
        let Some((addr, name, op, occurrence)) = self.pending.take() else {
            self.error = Some("data handed over for a node nobody asked for".into());
            return;
        };
        if addr != id {
            self.error = Some(format!("{name}: data handed over for a different node"));
            return;
        }
        let read = values.map_err(|e| format!("{name}: {e}")).and_then(|v| {
            let shape = tap_shape(&name, v.ne, self.n_tokens)?;
            let data = gather(&name, &v)?;
            Ok((shape, data))
        });
        match read {
            Ok((shape, data)) => {
                self.taps.insert(
                    name,
                    Captured {
                        op,
                        occurrence,
                        shape,
                        data,
                    },
                );
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// Run one callback invocation so that a panic never unwinds into C: it is recorded and
    /// the graph is let finish (no to an ask, yes after data).
    pub(crate) fn guarded(&mut self, ask: bool, f: impl FnOnce(&mut Capture) -> bool) -> bool {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(v) => v,
            Err(_) => {
                self.error
                    .get_or_insert_with(|| "panic while capturing a tap".into());
                !ask
            }
        }
    }
}

/// The positions dimension of a tap: the highest dimension equal to the number of evaluated
/// positions with only 1s above it. For a single position that is ambiguous, so the engine's
/// rank decides (`[head_dim, n_head, pos]` for Q/K/V, `[width, pos]` otherwise).
pub(crate) fn tap_shape(name: &str, ne: [i64; 4], n_tokens: usize) -> Result<Vec<usize>, String> {
    let ne: Vec<usize> = ne
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("{name}: negative dimension in {ne:?}")))
        .collect::<Result<_, _>>()?;
    let fits = |rank: usize| ne[rank - 1] == n_tokens && ne[rank..].iter().all(|&d| d == 1);
    let rank = if n_tokens > 1 {
        (2..=4).rev().find(|&r| fits(r))
    } else {
        let (tag, _) = split_name(name);
        let r = if matches!(tag, "Qcur" | "Kcur" | "Vcur") {
            3
        } else {
            2
        };
        fits(r).then_some(r)
    };
    match rank {
        Some(r) => Ok(ne[..r].to_vec()),
        None => Err(format!(
            "{name}: ggml shape {ne:?} has no trailing positions dimension of {n_tokens}"
        )),
    }
}

/// Read the values in logical (`ne`) order through the `nb[]` strides, as f32.
pub(crate) fn gather(name: &str, v: &NodeValues<'_>) -> Result<Vec<f32>, String> {
    let size = match &v.elem {
        Elem::Other(ty) => return Err(format!("{name}: tensor type {ty:?}, expected f32 or f16")),
        e => e.size(),
    };
    let ne: Vec<usize> = v.ne.iter().map(|&d| d.max(0) as usize).collect();
    let nb = v.nb;
    // The last element's offset must lie inside the bytes ggml says the tensor spans.
    let last = (0..4)
        .map(|i| (ne[i].max(1) - 1).checked_mul(nb[i]))
        .try_fold(size, |acc, x| x.and_then(|x| acc.checked_add(x)));
    if ne.contains(&0) {
        return Ok(Vec::new());
    }
    if last.is_none_or(|l| l > v.bytes.len()) {
        return Err(format!(
            "{name}: strides {nb:?} exceed the tensor's {} bytes",
            v.bytes.len()
        ));
    }
    let raw = v.bytes;
    let mut data = Vec::with_capacity(ne.iter().product());
    for i3 in 0..ne[3] {
        for i2 in 0..ne[2] {
            for i1 in 0..ne[1] {
                let row = i3 * nb[3] + i2 * nb[2] + i1 * nb[1];
                for i0 in 0..ne[0] {
                    let o = row + i0 * nb[0];
                    data.push(match v.elem {
                        Elem::F32 => {
                            f32::from_ne_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]])
                        }
                        _ => {
                            half::f16::from_bits(u16::from_ne_bytes([raw[o], raw[o + 1]])).to_f32()
                        }
                    });
                }
            }
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_the_last_dimension() {
        assert_eq!(tap_shape("attn_norm-0", [64, 7, 1, 1], 7), Ok(vec![64, 7]));
        assert_eq!(tap_shape("Qcur-0", [16, 4, 7, 1], 7), Ok(vec![16, 4, 7]));
        // One position: the engine's rank decides.
        assert_eq!(tap_shape("Qcur-1", [16, 4, 1, 1], 1), Ok(vec![16, 4, 1]));
        assert_eq!(tap_shape("l_out-1", [64, 1, 1, 1], 1), Ok(vec![64, 1]));
        assert_eq!(
            tap_shape("result_output", [100, 3, 1, 1], 3),
            Ok(vec![100, 3])
        );
        assert!(tap_shape("kq-0", [7, 7, 4, 1], 7).is_err());
        assert!(tap_shape("l_out-0", [64, 5, 1, 1], 7).is_err());
    }

    #[test]
    fn strided_f32_and_f16_come_out_in_logical_order() {
        // A 2x2 transposed view of [[1, 2], [3, 4]]: element (i0, i1) at i0*8 + i1*4.
        let bytes: Vec<u8> = [1f32, 2., 3., 4.]
            .iter()
            .flat_map(|x| x.to_ne_bytes())
            .collect();
        let v = NodeValues {
            elem: Elem::F32,
            ne: [2, 2, 1, 1],
            nb: [8, 4, 16, 16],
            bytes: &bytes,
        };
        assert_eq!(gather("t", &v), Ok(vec![1., 3., 2., 4.]));
        let h: Vec<u8> = [0.5f32, -2.0]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_bits().to_ne_bytes())
            .collect();
        let v = NodeValues {
            elem: Elem::F16,
            ne: [2, 1, 1, 1],
            nb: [2, 4, 4, 4],
            bytes: &h,
        };
        assert_eq!(gather("t", &v), Ok(vec![0.5, -2.0]));
        let v = NodeValues {
            elem: Elem::F32,
            ne: [4, 1, 1, 1],
            nb: [4, 16, 16, 16],
            bytes: &bytes[..8],
        };
        assert!(gather("t", &v).unwrap_err().contains("exceed"));
        let v = NodeValues {
            elem: Elem::Other("q8_0".into()),
            ne: [1, 1, 1, 1],
            nb: [1, 1, 1, 1],
            bytes: &bytes,
        };
        assert!(gather("t", &v).unwrap_err().contains("q8_0"));
    }

    #[test]
    fn the_last_occurrence_is_kept() {
        let mut c = Capture::default();
        c.reset(["Qcur-0".to_string()].into_iter().collect(), 1);
        let one = |x: f32| x.to_ne_bytes().to_vec();
        for (id, op, x) in [(1, "MUL", 1.0f32), (2, "ROPE", 2.0)] {
            assert!(c.ask(id, "Qcur-0", op, [1, 1, 1, 1]));
            let b = one(x);
            c.take(
                id,
                Ok(NodeValues {
                    elem: Elem::F32,
                    ne: [1, 1, 1, 1],
                    nb: [4, 4, 4, 4],
                    bytes: &b,
                }),
            );
        }
        assert!(!c.ask(3, "l_out-0", "ADD", [1, 1, 1, 1]));
        let (taps, sources, graph) = c.finish();
        assert_eq!(taps[0].data, vec![2.0]);
        assert_eq!(sources[0].op, "ROPE");
        assert_eq!((sources[0].occurrence, sources[0].occurrences), (1, 2));
        assert_eq!(graph.len(), 3);
    }
}
