//! Tap capture through `llama_context_params.cb_eval` (`ggml_backend_sched_eval_callback`).
//!
//! `ggml_backend_sched_compute_splits` asks the callback about each node in graph order
//! (`ask = true`); a yes makes it compute the graph up to that node, synchronise, and hand the
//! node over (`ask = false`). Saying yes costs a sync, so only wanted names get one. Every node
//! is asked about exactly once per evaluation, which also gives the inventory of named nodes.
//!
//! Several nodes can carry one name (`Qcur-0` is set on the scaled MUL, the RESHAPE and the
//! ROPE): captures are keyed by name, counting occurrences, and the last one in graph order is
//! kept, with its op and occurrence recorded. Data is copied with `ggml_backend_tensor_get`
//! (which also serves non-host buffers) and read through the `nb[]` strides, so views and
//! permutations come out in logical order.

use std::collections::{HashMap, HashSet};
use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use llama_cpp_sys_2 as sys;
use xval_engine::taps::{graph_order, split_name, Tap};

use crate::oracle::{GraphNode, TapSource};

/// One captured node's values, in the engine's layout.
struct Captured {
    op: String,
    occurrence: usize,
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// The state `cb_eval_user_data` points at.
#[derive(Default)]
pub(super) struct Capture {
    wanted: HashSet<String>,
    n_tokens: usize,
    graph: Vec<GraphNode>,
    occurrences: HashMap<String, usize>,
    /// The node answered "yes" to, awaiting its data: (tensor address, name, op, occurrence).
    pending: Option<(usize, String, String, usize)>,
    taps: HashMap<String, Captured>,
    /// The first failure; the evaluation reports it instead of returning partial taps.
    pub(super) error: Option<String>,
}

impl Capture {
    pub(super) fn reset(&mut self, wanted: HashSet<String>, n_tokens: usize) {
        *self = Capture {
            wanted,
            n_tokens,
            ..Capture::default()
        };
    }

    /// Taps in graph order (the engine's tag order), their sources, and the node inventory.
    pub(super) fn finish(&mut self) -> (Vec<Tap>, Vec<TapSource>, Vec<GraphNode>) {
        let mut names: Vec<String> = self.taps.keys().cloned().collect();
        names.sort_by(|a, b| graph_order(a).cmp(&graph_order(b)).then(a.cmp(b)));
        let mut taps = Vec::with_capacity(names.len());
        let mut sources = Vec::with_capacity(names.len());
        for name in names {
            let c = self.taps.remove(&name).expect("key from the map");
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

    /// Ask phase: record the node, say whether its data is wanted.
    ///
    /// # Safety
    /// `t` must point to a live ggml tensor.
    unsafe fn ask(&mut self, t: *const sys::ggml_tensor) -> bool {
        // SAFETY (caller): live tensor; its name is a NUL-terminated array inside the struct.
        let tensor = unsafe { &*t };
        let name = unsafe { CStr::from_ptr(tensor.name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        if name.is_empty() {
            return false;
        }
        // SAFETY: ggml_op_desc returns a static string for any tensor.
        let op = unsafe { CStr::from_ptr(sys::ggml_op_desc(t)) }
            .to_string_lossy()
            .into_owned();
        let count = self.occurrences.entry(name.clone()).or_insert(0);
        let occurrence = *count;
        *count += 1;
        self.graph.push(GraphNode {
            name: name.clone(),
            op: op.clone(),
            ne: tensor.ne,
        });
        if self.error.is_none() && self.wanted.contains(&name) {
            self.pending = Some((t as usize, name, op, occurrence));
            true
        } else {
            false
        }
    }

    /// Data phase: copy the node's values. Always lets the computation continue.
    ///
    /// # Safety
    /// `t` must point to a live, computed ggml tensor.
    unsafe fn take(&mut self, t: *mut sys::ggml_tensor) {
        let Some((addr, name, op, occurrence)) = self.pending.take() else {
            self.error = Some("data handed over for a node nobody asked for".into());
            return;
        };
        if addr != t as usize {
            self.error = Some(format!("{name}: data handed over for a different node"));
            return;
        }
        // SAFETY (caller): live, computed tensor.
        match unsafe { read_f32(t, &name, self.n_tokens) } {
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

/// Copy an F32 tensor out of its backend buffer and gather it in logical (ne) order.
///
/// # Safety
/// `t` must point to a live, computed ggml tensor.
unsafe fn read_f32(
    t: *mut sys::ggml_tensor,
    name: &str,
    n_tokens: usize,
) -> Result<(Vec<usize>, Vec<f32>), String> {
    // SAFETY (caller).
    let tensor = unsafe { &*t };
    if tensor.type_ != sys::GGML_TYPE_F32 {
        // SAFETY: static type name.
        let ty = unsafe { CStr::from_ptr(sys::ggml_type_name(tensor.type_)) };
        return Err(format!("{name}: tensor type {ty:?}, expected f32"));
    }
    let shape = tap_shape(name, tensor.ne, n_tokens)?;
    // SAFETY: live tensor.
    let nbytes = unsafe { sys::ggml_nbytes(t) };
    let ne: Vec<usize> = tensor.ne.iter().map(|&d| d as usize).collect();
    let nb = tensor.nb;
    // The last element's offset must lie inside what ggml says the tensor spans.
    let last = (0..4).map(|i| (ne[i].max(1) - 1) * nb[i]).sum::<usize>() + 4;
    if tensor.buffer.is_null() || tensor.data.is_null() || last > nbytes {
        return Err(format!(
            "{name}: tensor not allocated or strides {nb:?} exceed its {nbytes} bytes"
        ));
    }
    let mut raw = vec![0u8; nbytes];
    // SAFETY: the tensor is allocated and computed; raw holds ggml_nbytes(t) bytes.
    unsafe { sys::ggml_backend_tensor_get(t, raw.as_mut_ptr().cast::<c_void>(), 0, nbytes) };
    let mut data = Vec::with_capacity(ne.iter().product());
    for i3 in 0..ne[3] {
        for i2 in 0..ne[2] {
            for i1 in 0..ne[1] {
                let row = i3 * nb[3] + i2 * nb[2] + i1 * nb[1];
                for i0 in 0..ne[0] {
                    let o = row + i0 * nb[0];
                    data.push(f32::from_ne_bytes(
                        raw[o..o + 4].try_into().expect("4 bytes"),
                    ));
                }
            }
        }
    }
    Ok((shape, data))
}

/// The `cb_eval` entry point.
///
/// # Safety
/// `user_data` must be the `Capture` registered with the context, not otherwise referenced
/// while llama.cpp runs the graph; `t` a live tensor of that graph.
pub(super) unsafe extern "C" fn eval_callback(
    t: *mut sys::ggml_tensor,
    ask: bool,
    user_data: *mut c_void,
) -> bool {
    // SAFETY (caller): the registered Capture, exclusively ours during llama_decode, which
    // calls back on the calling thread.
    let capture = unsafe { &mut *user_data.cast::<Capture>() };
    // A panic must not unwind into C: record it and let the graph finish.
    let result = catch_unwind(AssertUnwindSafe(|| {
        if ask {
            // SAFETY (caller): live tensor.
            unsafe { capture.ask(t) }
        } else {
            // SAFETY (caller): live, computed tensor.
            unsafe { capture.take(t) };
            true
        }
    }));
    match result {
        Ok(v) => v,
        Err(_) => {
            capture
                .error
                .get_or_insert_with(|| "panic while capturing a tap".into());
            !ask
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tap_shape;

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
}
