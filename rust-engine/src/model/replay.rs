//! Op-level replay ("teacher forcing"): recompute one tap with this engine's op from *given*
//! inputs, normally the oracle's own captured inputs of that op.
//!
//! A chained comparison lets every difference flow downstream: with 8-bit activation
//! quantization, a 1-ulp difference in a norm output can flip one rounding and move the next
//! matmul's output by a whole quantization step, which then spreads through attention to later
//! positions. Replaying each op on the oracle's inputs measures that op alone, so the first op
//! whose replay disagrees is the op that is wrong, whatever happened upstream.
//!
//! Decode steps replay the same way: [`ReplayInputs::start`] is the step's position and
//! [`ReplayInputs::history`] holds the oracle's keys and values of every earlier position, so
//! attention at step `s` runs over the oracle's cache, not the engine's. Several steps replay as
//! one evaluation with [`ReplayInputs::rows`] = [`Rows::Steps`]: their inputs joined in order,
//! `start` the first step's position, the history that of the positions before it; every row
//! takes one row's numerics and attends to the rows before it, as its step did.

use super::forward::{Engine, NormSite, Rows};
use super::kv_cache::KvCache;
use super::Linear;
use crate::error::{Error, Result};
use crate::taps::{split_name, tap_name};

/// Inputs of a replay, looked up by engine tap name; values position-major (a tap's `data`).
pub type TapSource<'a> = dyn Fn(&str) -> Option<&'a [f32]> + 'a;

/// Keys and values of the positions before a replayed evaluation, per layer: post-RoPE keys
/// and values, position-major (`positions * n_embd_kv` each), as the cache stores them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KvHistory {
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

/// What a replay recomputes from.
pub struct ReplayInputs<'a> {
    /// The evaluation's tokens.
    pub tokens: &'a [u32],
    /// The position of its first token.
    pub start: usize,
    /// The op inputs of this evaluation (normally the oracle's taps).
    pub get: &'a TapSource<'a>,
    /// Keys and values of positions `0..start` (needed for attention when `start > 0`).
    pub history: Option<&'a KvHistory>,
    /// Whether the tokens are one batch (a prompt) or decode steps replayed together, each
    /// row with one row's numerics, as the steps ran.
    pub rows: Rows,
}

impl Engine {
    /// Recompute tap `name` for the evaluation `inp` describes from its given inputs.
    /// `Ok(None)` when an input is not available (not captured, no history for attention after
    /// position 0) or the tap is not part of this model (`ffn_up_s` without a `.scale` tensor);
    /// `Err` when the inputs are there but do not fit.
    pub fn replay(&self, name: &str, inp: &ReplayInputs<'_>) -> Result<Option<Vec<f32>>> {
        let hp = &self.model().hparams;
        let (tokens, start, get, rows) = (inp.tokens, inp.start, inp.get, inp.rows);
        let n = tokens.len();
        let (tag, layer) = split_name(name);
        let input = |tag: &str, l: Option<usize>| get(&tap_name(tag, l));
        let check = |v: &[f32], width: usize, what: &str| -> Result<()> {
            if v.len() != n * width {
                return Err(Error::Invalid(format!(
                    "replay of {name}: input {what} has {} values, expected {n} x {width}",
                    v.len()
                )));
            }
            Ok(())
        };
        // The residual stream entering layer `l`: the embeddings for layer 0.
        let residual_in = |l: usize| -> Result<Option<Vec<f32>>> {
            if l == 0 {
                return self.embed(tokens).map(Some);
            }
            Ok(input("l_out", Some(l - 1)).map(<[f32]>::to_vec))
        };
        let d = hp.n_embd;
        let out = match (tag, layer) {
            ("result_norm", None) => {
                let Some(x) = input("l_out", Some(hp.n_layer - 1)) else {
                    return Ok(None);
                };
                check(x, d, "l_out")?;
                self.norm(NormSite::Output, None, x, &self.model().output_norm)
            }
            ("result_output", None) => {
                let Some(x) = input("result_norm", None) else {
                    return Ok(None);
                };
                check(x, d, "result_norm")?;
                self.mat(self.output(), x, n, start, rows)?
            }
            (tag, Some(l)) if l < hp.n_layer => {
                let ly = &self.model().layers[l];
                let lin = |lin: &Linear, x: &[f32], width: usize, what: &str| -> Result<Vec<f32>> {
                    check(x, width, what)?;
                    self.linear(lin, x, n, start, rows)
                };
                let raw = |lin: &Linear, x: &[f32], width: usize, what: &str| -> Result<Vec<f32>> {
                    check(x, width, what)?;
                    self.mat(&lin.w, x, n, start, rows)
                };
                let scaled = |lin: &Linear, pre: &str| -> Result<Option<Vec<f32>>> {
                    let (Some(s), Some(x)) = (self.scale_of(lin), input(pre, Some(l))) else {
                        return Ok(None);
                    };
                    check(x, hp.n_ff, pre)?;
                    Ok(Some(x.iter().map(|v| v * s).collect()))
                };
                let rope = |mut v: Vec<f32>, width: usize| -> Vec<f32> {
                    self.rope(l, &mut v, width, n, start);
                    v
                };
                let need = |tag: &str| input(tag, Some(l));
                macro_rules! need {
                    ($tag:expr) => {
                        match need($tag) {
                            Some(v) => v,
                            None => return Ok(None),
                        }
                    };
                }
                match tag {
                    "attn_norm" => {
                        let Some(x) = residual_in(l)? else {
                            return Ok(None);
                        };
                        check(&x, d, "residual")?;
                        self.norm(NormSite::Attn, Some(l), &x, &ly.attn_norm)
                    }
                    "Qcur" => rope(lin(&ly.wq, need!("attn_norm"), d, "attn_norm")?, d),
                    "Kcur" => rope(
                        lin(&ly.wk, need!("attn_norm"), d, "attn_norm")?,
                        hp.n_embd_kv(),
                    ),
                    "Vcur" => lin(&ly.wv, need!("attn_norm"), d, "attn_norm")?,
                    "kqv_out" => {
                        let (q, k, v) = (need!("Qcur"), need!("Kcur"), need!("Vcur"));
                        check(q, d, "Qcur")?;
                        check(k, hp.n_embd_kv(), "Kcur")?;
                        check(v, hp.n_embd_kv(), "Vcur")?;
                        // A cache holding exactly the given keys and values of this layer,
                        // earlier positions first (stored in the engine's KV type, as the
                        // forward pass would).
                        let mut cache = KvCache::new(hp, self.numerics().kv);
                        if start > 0 {
                            let Some(h) = inp.history else {
                                return Ok(None);
                            };
                            let w = hp.n_embd_kv();
                            let (Some(hk), Some(hv)) = (h.k.get(l), h.v.get(l)) else {
                                return Ok(None);
                            };
                            if hk.len() != start * w || hv.len() != start * w {
                                return Err(Error::Invalid(format!(
                                    "replay of {name}: the key/value history holds {} and {} \
                                     values, expected {start} positions x {w}",
                                    hk.len(),
                                    hv.len()
                                )));
                            }
                            cache.reserve(start)?;
                            cache.append(l, hk, hv);
                            cache.advance(start);
                        }
                        cache.reserve(n)?;
                        cache.append(l, k, v);
                        cache.advance(n);
                        self.attention(&cache, l, q, n, start, rows)
                    }
                    "attn_sub_norm" => {
                        let x = need!("kqv_out");
                        check(x, d, "kqv_out")?;
                        self.norm(NormSite::AttnSub, Some(l), x, &ly.attn_sub_norm)
                    }
                    "attn_out" => lin(&ly.wo, need!("attn_sub_norm"), d, "attn_sub_norm")?,
                    "ffn_inp" => {
                        let o = need!("attn_out");
                        let Some(x) = residual_in(l)? else {
                            return Ok(None);
                        };
                        check(o, d, "attn_out")?;
                        check(&x, d, "residual")?;
                        self.residual(l, o, &x)
                    }
                    "ffn_norm" => {
                        let x = need!("ffn_inp");
                        check(x, d, "ffn_inp")?;
                        self.norm(NormSite::Ffn, Some(l), x, &ly.ffn_norm)
                    }
                    "ffn_up" => raw(&ly.ffn_up, need!("ffn_norm"), d, "ffn_norm")?,
                    "ffn_gate" => raw(&ly.ffn_gate, need!("ffn_norm"), d, "ffn_norm")?,
                    "ffn_up_s" => match scaled(&ly.ffn_up, "ffn_up")? {
                        Some(v) => v,
                        None => return Ok(None),
                    },
                    "ffn_gate_s" => match scaled(&ly.ffn_gate, "ffn_gate")? {
                        Some(v) => v,
                        None => return Ok(None),
                    },
                    "ffn_sub_out" => {
                        let pick = |lin: &Linear, t: &str| {
                            if self.scale_of(lin).is_some() {
                                need(&format!("{t}_s"))
                            } else {
                                need(t)
                            }
                        };
                        let (Some(g), Some(u)) =
                            (pick(&ly.ffn_gate, "ffn_gate"), pick(&ly.ffn_up, "ffn_up"))
                        else {
                            return Ok(None);
                        };
                        check(g, hp.n_ff, "ffn_gate")?;
                        check(u, hp.n_ff, "ffn_up")?;
                        self.gated(l, g, u)
                    }
                    "ffn_sub_norm" => {
                        let x = need!("ffn_sub_out");
                        check(x, hp.n_ff, "ffn_sub_out")?;
                        self.norm(NormSite::FfnSub, Some(l), x, &ly.ffn_sub_norm)
                    }
                    "ffn_down" => {
                        lin(&ly.ffn_down, need!("ffn_sub_norm"), hp.n_ff, "ffn_sub_norm")?
                    }
                    "l_out" => {
                        let (a, b) = (need!("ffn_down"), need!("ffn_inp"));
                        check(a, d, "ffn_down")?;
                        check(b, d, "ffn_inp")?;
                        self.residual(l, a, b)
                    }
                    _ => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(out))
    }
}
