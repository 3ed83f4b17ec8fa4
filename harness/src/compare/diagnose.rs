//! The likely cause of a divergence, read from its signature: the shape of the difference at
//! the first divergence (the engine's op replayed on the oracle's inputs where there is one,
//! else the chained value), and what is and is not different around it.
//!
//! The signatures, tried in order (docs/selftest.md has the table):
//!
//! | signature | what the numbers show | likely cause |
//! |---|---|---|
//! | `tokens` | the two tokenizers' ids differ | pre-tokenizer, BOS/EOS, special tokens |
//! | `decode-kv` | every prompt position agrees; attention first differs in a decode step | KV cache position or a stale entry in single-token decode |
//! | `decode` | as above at another op | a single-token code path |
//! | `rounding` | the engine's values are all f16 values, the oracle's are not | a half-precision store |
//! | `position` | Q/K equal at position 0, different after | RoPE (pairing, frequency base, positions) |
//! | `heads` | attention output right in some heads, wrong in others | head mapping (GQA grouping) |
//! | `attention` | attention output right at position 0 (one key), wrong after | score scale, mask or softmax |
//! | `skipped` | the op's output equals its input | an op left out |
//! | `scale` | engine = c x oracle, one c everywhere | a scale applied wrongly |
//! | `norm` | one c per position, or the mean taken out of each row | normalization (epsilon, LayerNorm for RMSNorm) |
//! | `activation` | gate and up agree, their product after the activation does not, and matches the other activation | wrong FFN activation |
//! | `embedding` | the first op of layer 0 differs | token embedding lookup |
//! | `output` | the output projection differs, its input agrees | untied output weight, output type |
//! | `sparse` | a few elements wrong by a lot, the rest exact | integer overflow, a bad block |
//! | `quantization` | a matmul off by quantization-sized noise | activation quantization (granularity, rounding) |
//! | `weights` | a matmul wrong by O(1) with its input right | weight decoding (block layout, code order, code map) |
//! | `none` | none of these | |

use xval_engine::model::ops;
use xval_engine::taps::{split_name, tap_name, Tap};

use super::core::Side;
use super::metrics::TapMetrics;
use super::receipt::{Diagnosis, Receipt};

/// Name the likely cause of `r`'s failure from the raw data of both sides; `None` when the
/// comparison passes.
pub fn diagnose(r: &Receipt, engine: &Side, oracle: &Side) -> Option<Diagnosis> {
    if r.summary.passes {
        return None;
    }
    if engine.tokenized != oracle.tokenized {
        let i = engine
            .tokenized
            .iter()
            .zip(&oracle.tokenized)
            .position(|(a, b)| a != b)
            .unwrap_or(engine.tokenized.len().min(oracle.tokenized.len()));
        return Some(found(
            "tokens",
            "the tokenizers disagree before any op runs: pre-tokenizer, BOS/EOS or special-token \
             handling",
            format!(
                "{} engine ids against {} oracle ids, first different at index {i} ({:?} vs {:?})",
                engine.tokenized.len(),
                oracle.tokenized.len(),
                engine.tokenized.get(i),
                oracle.tokenized.get(i)
            ),
        ));
    }
    if !r.pairing.matched {
        // Two arithmetics: differences of this size are expected, whatever else may be wrong.
        return Some(found(
            "profile",
            "the engine's numerics do not mirror the oracle's: compare under the profile that \
             does before reading anything else into the difference",
            format!(
                "engine {} against an oracle whose arithmetic is {} ({})",
                r.pairing.engine.describe(),
                r.pairing.oracle.describe(),
                r.pairing.oracle_kind
            ),
        ));
    }
    let Some(fd) = &r.first_divergence else {
        return Some(none(
            "the comparison fails without a first divergence (a replay error, a shape mismatch \
             or a missing tap)",
        ));
    };
    let (tag, layer) = split_name(&fd.tap);
    if let Some(step) = fd.step {
        return Some(if tag == "kqv_out" {
            found(
                "decode-kv",
                "the KV cache in single-token decode: a position off by one or a stale entry",
                format!(
                    "every prompt position agrees; attention ({}) first differs at decode step \
                     {step}",
                    fd.tap
                ),
            )
        } else {
            found(
                "decode",
                "a code path only single-token decode takes",
                format!(
                    "every prompt position agrees; {} first differs at decode step {step}",
                    fd.tap
                ),
            )
        });
    }
    let view = View::new(r, engine, oracle, &fd.tap)?;
    Some(view.signature(tag, layer, r))
}

fn found(signature: &str, cause: &str, evidence: String) -> Diagnosis {
    Diagnosis {
        signature: signature.into(),
        cause: cause.into(),
        evidence,
    }
}

fn none(evidence: &str) -> Diagnosis {
    found("none", "no known signature", evidence.into())
}

/// The first divergent tap on both sides: the engine's op replayed on the oracle's inputs
/// where there is one (the op alone), else the engine's chained value.
struct View<'a> {
    name: String,
    engine: &'a Tap,
    oracle: &'a Tap,
    replayed: bool,
    /// Both sides' prompt taps, for inputs and geometry.
    engine_taps: &'a [Tap],
    oracle_taps: &'a [Tap],
    /// NMSE under which two rows count as the same (the op-level limit).
    same: f64,
}

fn nmse(a: &[f32], b: &[f32]) -> f64 {
    TapMetrics::compute(a, b).nmse
}

impl<'a> View<'a> {
    fn new(r: &Receipt, engine: &'a Side, oracle: &'a Side, name: &str) -> Option<View<'a>> {
        let rec = r.taps.iter().find(|t| t.name == name)?;
        let oracle_name = rec.oracle_name.as_deref().unwrap_or(name);
        let o = oracle.prefill.taps.iter().find(|t| t.name == oracle_name)?;
        let replay = engine.replay.iter().find(|t| t.name == name);
        let chained = engine.prefill.taps.iter().find(|t| t.name == name)?;
        let same = r.thresholds.for_tap(name).max_replay_nmse.max(1e-12);
        Some(View {
            name: name.to_string(),
            engine: replay.unwrap_or(chained),
            oracle: o,
            replayed: replay.is_some(),
            engine_taps: &engine.prefill.taps,
            oracle_taps: &oracle.prefill.taps,
            same,
        })
    }

    fn what(&self) -> &'static str {
        if self.replayed {
            "replayed on the oracle's inputs"
        } else {
            "chained"
        }
    }

    fn positions(&self) -> usize {
        self.engine.n_positions().min(self.oracle.n_positions())
    }

    fn oracle_tap(&self, tag: &str, layer: Option<usize>) -> Option<&'a Tap> {
        let name = tap_name(tag, layer);
        self.oracle_taps.iter().find(|t| t.name == name)
    }

    fn signature(&self, tag: &str, layer: Option<usize>, r: &Receipt) -> Diagnosis {
        let n = self.positions();
        let (e, o) = (&self.engine.data[..], &self.oracle.data[..]);
        if e.len() != o.len() || n == 0 {
            return none("the two sides' tensors at the first divergence differ in size");
        }
        let row_nmse: Vec<f64> = (0..n)
            .map(|p| nmse(self.engine.row(p), self.oracle.row(p)))
            .collect();
        let whole = nmse(e, o);

        // A half-precision store: every engine value is an f16 value, most oracle values not.
        let is_f16 = |v: f32| half::f16::from_f32(v).to_f32() == v;
        let e16 = e.iter().filter(|v| is_f16(**v)).count() as f64 / e.len() as f64;
        let o16 = o.iter().filter(|v| is_f16(**v)).count() as f64 / o.len() as f64;
        if e16 == 1.0 && o16 < 0.5 {
            return found(
                "rounding",
                "values stored in half precision (f16) where the oracle keeps f32",
                format!(
                    "{} ({}): all engine values are f16 values against {:.0}% of the oracle's; \
                     NMSE {whole:.2e}",
                    self.name,
                    self.what(),
                    o16 * 100.0
                ),
            );
        }

        let first_bad = row_nmse.iter().position(|&m| m > self.same);
        let pos0_clean = row_nmse[0] <= self.same && n > 1 && first_bad.is_some();
        if matches!(tag, "Qcur" | "Kcur") && pos0_clean {
            return found(
                "position",
                "rotary position embedding: the rotation pairs (NORM vs NEOX), the frequency \
                 base or the positions",
                format!(
                    "{} ({}): NMSE {:.1e} at position 0, {:.2e} at the last position",
                    self.name,
                    self.what(),
                    row_nmse[0],
                    row_nmse[n - 1]
                ),
            );
        }
        if tag == "kqv_out" {
            if let Some(d) = self.heads(layer) {
                return d;
            }
            if pos0_clean {
                return found(
                    "attention",
                    "the attention scores: their scale, the causal mask or the softmax",
                    format!(
                        "{} ({}): exact at position 0 (one key, where scores do not matter), \
                         NMSE {:.2e} at the last position; Q, K and V agree",
                        self.name,
                        self.what(),
                        row_nmse[n - 1]
                    ),
                );
            }
        }

        if let Some(x) = self.input_of(tag, layer) {
            let m = nmse(e, &x.data);
            if x.data.len() == e.len() && m <= self.same {
                return found(
                    "skipped",
                    "an op left out: its output is its input",
                    format!(
                        "{} ({}) equals its input {} (NMSE {m:.1e}) where the oracle's differs \
                         from it (NMSE {:.2e})",
                        self.name,
                        self.what(),
                        x.name,
                        nmse(o, &x.data)
                    ),
                );
            }
        }

        // Proportional rows: one factor everywhere (a scale) or one per position (a norm).
        let fits: Vec<Option<f64>> = (0..n)
            .map(|p| proportional(self.engine.row(p), self.oracle.row(p)))
            .collect();
        if fits.iter().all(Option::is_some) {
            let c: Vec<f64> = fits.into_iter().flatten().collect();
            let (lo, hi) = c
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                    (l.min(v), h.max(v))
                });
            // One factor: its spread over positions is tiny against its distance from 1 (an
            // epsilon's factors differ with each row's mean square by as much as they differ
            // from 1).
            let mean = c.iter().sum::<f64>() / c.len() as f64;
            if (hi - lo) <= 1e-3 * (mean - 1.0).abs() {
                return found(
                    "scale",
                    "a scale applied wrongly: a per-tensor weight scale ignored or applied \
                     twice, a wrong .scale tensor",
                    format!(
                        "{} ({}) = {:.6} x the oracle's at every position (NMSE {whole:.2e}, \
                         {:.1e} after the factor)",
                        self.name,
                        self.what(),
                        mean,
                        after_factor(e, o, mean)
                    ),
                );
            }
            return found(
                "norm",
                "a normalization's statistic: its epsilon, or the mean it divides by",
                format!(
                    "{} ({}) is a constant multiple of the oracle's in each position, the \
                     multiple ranging {lo:.6}..{hi:.6} over positions",
                    self.name,
                    self.what()
                ),
            );
        }

        if is_norm(tag) {
            if let Some(x) = self.input_of(tag, layer) {
                if let Some(m) = mean_subtracted_fit(e, o, &x.data, self.engine.row_len()) {
                    if m < 1e-3 * whole {
                        return found(
                            "norm",
                            "the mean subtracted before normalizing: LayerNorm where the model \
                             uses RMSNorm",
                            format!(
                                "{} ({}) is the oracle's with each row's mean of {} taken out \
                                 (NMSE {m:.1e} to that, {whole:.2e} to the oracle's)",
                                self.name,
                                self.what(),
                                x.name
                            ),
                        );
                    }
                }
            }
        }

        if tag == "ffn_sub_out" {
            if let Some(d) = self.activation(layer, whole) {
                return d;
            }
        }
        if tag == "attn_norm" && layer == Some(0) {
            return found(
                "embedding",
                "the token embedding lookup (a row off by one, the wrong tensor or type)",
                format!(
                    "{} ({}), the first op of the model, differs at {} of {n} positions (NMSE \
                     {whole:.2e}); the input ids agree",
                    self.name,
                    self.what(),
                    row_nmse.iter().filter(|&&m| m > self.same).count()
                ),
            );
        }
        if tag == "result_output" {
            return found(
                "output",
                "the output projection: an untied output.weight ignored for the embedding, or \
                 its type",
                format!(
                    "result_output ({}) differs (NMSE {whole:.2e}) while result_norm agrees",
                    self.what()
                ),
            );
        }
        if is_matmul(tag) {
            let scale = rms(o).max(f64::MIN_POSITIVE);
            let far = e
                .iter()
                .zip(o)
                .filter(|(a, b)| ((**a - **b) as f64).abs() > 1e-3 * scale)
                .count();
            let share = far as f64 / e.len() as f64;
            if far > 0 && share < 0.05 {
                return found(
                    "sparse",
                    "a few outputs wrong by a lot, the rest exact: an integer accumulator that \
                     overflows, or a bad block",
                    format!(
                        "{} ({}): {far} of {} values ({:.2}%) off by more than 1e-3 of the RMS, \
                         the rest within it",
                        self.name,
                        self.what(),
                        e.len(),
                        share * 100.0
                    ),
                );
            }
            if whole < 1e-3 {
                return found(
                    "quantization",
                    "activation quantization: its granularity (per row or per block), rounding \
                     or scale",
                    format!(
                        "{} ({}): NMSE {whole:.2e}, the size of int8 quantization noise, \
                         spread over all outputs",
                        self.name,
                        self.what()
                    ),
                );
            }
            return found(
                "weights",
                "the weights are decoded wrong: block layout, code order or code map",
                format!(
                    "{} ({}): NMSE {whole:.2e} with the matmul's input in agreement",
                    self.name,
                    self.what()
                ),
            );
        }
        let _ = r;
        none(&format!(
            "{} ({}): NMSE {whole:.2e}; none of the known shapes fits",
            self.name,
            self.what()
        ))
    }

    /// The oracle's input of op `tag` at `layer` (the tap it reads), where it is a tap.
    fn input_of(&self, tag: &str, layer: Option<usize>) -> Option<&'a Tap> {
        match (tag, layer) {
            ("attn_norm", Some(l)) if l > 0 => self.oracle_tap("l_out", Some(l - 1)),
            ("attn_sub_norm", l) => self.oracle_tap("kqv_out", l),
            ("ffn_norm", l) => self.oracle_tap("ffn_inp", l),
            ("ffn_sub_norm", l) => self.oracle_tap("ffn_sub_out", l),
            ("result_norm", None) => {
                let last = self
                    .oracle_taps
                    .iter()
                    .filter(|t| t.tag() == "l_out")
                    .filter_map(|t| t.layer())
                    .max()?;
                self.oracle_tap("l_out", Some(last))
            }
            _ => None,
        }
    }

    /// Attention right in some heads and wrong in others.
    fn heads(&self, layer: Option<usize>) -> Option<Diagnosis> {
        let q = self
            .engine_taps
            .iter()
            .find(|t| t.name == tap_name("Qcur", layer))?;
        let (hd, n_head) = (*q.shape.first()?, *q.shape.get(1)?);
        if hd * n_head != self.engine.row_len() || n_head < 2 {
            return None;
        }
        let per_head: Vec<f64> = (0..n_head)
            .map(|h| {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for p in 0..self.positions() {
                    a.extend_from_slice(&self.engine.row(p)[h * hd..(h + 1) * hd]);
                    b.extend_from_slice(&self.oracle.row(p)[h * hd..(h + 1) * hd]);
                }
                nmse(&a, &b)
            })
            .collect();
        let good: Vec<usize> = (0..n_head).filter(|&h| per_head[h] <= self.same).collect();
        if good.is_empty() || good.len() == n_head {
            return None;
        }
        let bad: Vec<usize> = (0..n_head).filter(|h| !good.contains(h)).collect();
        Some(found(
            "heads",
            "the head mapping: query heads reading the wrong key/value head (GQA grouping)",
            format!(
                "{} ({}): heads {good:?} agree, heads {bad:?} differ (NMSE up to {:.2e})",
                self.name,
                self.what(),
                bad.iter().map(|&h| per_head[h]).fold(0.0, f64::max)
            ),
        ))
    }

    /// The engine applied the other FFN activation to the oracle's gate and up.
    fn activation(&self, layer: Option<usize>, whole: f64) -> Option<Diagnosis> {
        let pick = |t: &str| {
            self.oracle_tap(&format!("{t}_s"), layer)
                .or_else(|| self.oracle_tap(t, layer))
        };
        let (g, u) = (pick("ffn_gate")?, pick("ffn_up")?);
        if g.data.len() != self.engine.data.len() || u.data.len() != g.data.len() {
            return None;
        }
        let apply = |f: fn(f32) -> f32| -> Vec<f32> {
            g.data
                .iter()
                .zip(&u.data)
                .map(|(&g, &u)| f(g) * u)
                .collect()
        };
        let (silu, relu2) = (apply(ops::silu), apply(ops::relu_sqr));
        let (e, o) = (&self.engine.data, &self.oracle.data);
        let tol = 1e-6f64.max(self.same);
        let (model, engine) = if nmse(o, &silu) <= tol && nmse(e, &relu2) <= tol {
            ("SiLU", "ReLU^2")
        } else if nmse(o, &relu2) <= tol && nmse(e, &silu) <= tol {
            ("ReLU^2", "SiLU")
        } else {
            return None;
        };
        Some(found(
            "activation",
            "the wrong FFN activation",
            format!(
                "{} ({}): gate and up agree, the product differs (NMSE {whole:.2e}) and is \
                 {engine}(gate) x up where the model's is {model}",
                self.name,
                self.what()
            ),
        ))
    }
}

fn is_norm(tag: &str) -> bool {
    matches!(
        tag,
        "attn_norm" | "attn_sub_norm" | "ffn_norm" | "ffn_sub_norm" | "result_norm"
    )
}

fn is_matmul(tag: &str) -> bool {
    matches!(
        tag,
        "Qcur"
            | "Kcur"
            | "Vcur"
            | "attn_out"
            | "ffn_up"
            | "ffn_up_s"
            | "ffn_gate"
            | "ffn_gate_s"
            | "ffn_down"
    )
}

fn rms(v: &[f32]) -> f64 {
    (v.iter().map(|&x| x as f64 * x as f64).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// The least-squares factor `c` with `e ~ c o`, when it explains the difference: the residual
/// after it is under a thousandth of the difference before and `c` is not 1.
fn proportional(e: &[f32], o: &[f32]) -> Option<f64> {
    let (eo, oo) = e.iter().zip(o).fold((0f64, 0f64), |(eo, oo), (&a, &b)| {
        (eo + a as f64 * b as f64, oo + b as f64 * b as f64)
    });
    if oo == 0.0 {
        return None;
    }
    let c = eo / oo;
    let before = nmse(e, o);
    (before > 0.0 && (c - 1.0).abs() > 1e-6 && after_factor(e, o, c) < 1e-3 * before).then_some(c)
}

/// NMSE of `e` against `c o`.
fn after_factor(e: &[f32], o: &[f32], c: f64) -> f64 {
    let scaled: Vec<f32> = o.iter().map(|&v| (v as f64 * c) as f32).collect();
    nmse(e, &scaled)
}

/// NMSE of `e` against the oracle's norm output `o` redone with each row's mean of the input
/// `x` subtracted: `o (rms / sigma) (1 - mean / x)` elementwise (the norm weight cancels);
/// elements where `x` is zero are left out.
fn mean_subtracted_fit(e: &[f32], o: &[f32], x: &[f32], width: usize) -> Option<f64> {
    if x.len() != o.len() || width == 0 {
        return None;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for ((er, or), xr) in e
        .chunks_exact(width)
        .zip(o.chunks_exact(width))
        .zip(x.chunks_exact(width))
    {
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
        let ms = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / width as f64;
        let var = ms - mean * mean;
        if var <= 0.0 {
            return None;
        }
        let k = (ms / var).sqrt();
        for ((&ev, &ov), &xv) in er.iter().zip(or).zip(xr) {
            if xv != 0.0 {
                a.push(ev);
                b.push((ov as f64 * k * (1.0 - mean / xv as f64)) as f32);
            }
        }
    }
    Some(nmse(&a, &b))
}
