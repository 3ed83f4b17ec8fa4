//! The one judge: from a receipt's recorded metrics and a set of thresholds, the limits of every
//! tap (derived from the noise twin), the verdict of every position and decode step, the first
//! divergence, the largest metric-to-limit ratio, and every violation. A fresh comparison
//! ([`super::compare_core`]) and `harness gate` both call [`judge`], so a receipt re-judged with
//! its own thresholds gives the verdicts it was written with.

use std::collections::BTreeMap;

use xval_engine::taps::{graph_order, split_name};

use super::metrics::KeyMetrics;
use super::receipt::{Receipt, WorstRatio};
use super::thresholds::AppliedThresholds;
use super::verdict::{
    check_at, position_verdict, ratio, ChainedLimit, FirstDivergence, LogitLimit, Neighbour,
    TapCrossing, Verdict,
};

/// One reason a receipt fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// `position 3`, `decode step 2`, `tokenizer`, `tap Qcur-0`.
    pub location: String,
    /// The verdict, or the structural problem (`TOKENS`, `SHAPE`, `REPLAY`, `KERNEL`).
    pub kind: String,
    pub detail: String,
}

/// A verdict and its explanation, with the taps that crossed (in graph order).
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    pub verdict: Verdict,
    pub explanation: String,
    pub taps_crossed: usize,
    pub first_tap: Option<String>,
}

/// Everything the thresholds say about one receipt.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// The chained limit of every tap name, from the twin's drift over the prompt and steps.
    pub limits: BTreeMap<String, ChainedLimit>,
    pub logits: LogitLimit,
    /// Taps whose chained comparison carries no information, in graph order.
    pub uninformative: Vec<String>,
    pub positions: Vec<Judged>,
    pub steps: Vec<Judged>,
    pub first_divergence: Option<FirstDivergence>,
    pub worst: Option<WorstRatio>,
    pub violations: Vec<Violation>,
}

impl Judgement {
    /// `op-level and chained`, or `op-level only from <tap> on` where noise decorrelates.
    pub fn basis(&self) -> String {
        match self.uninformative.first() {
            None if self.logits.informative => "op-level and chained".into(),
            None => "op-level and chained (logits uninformative)".into(),
            Some(t) => format!(
                "op-level only from {t} on (rounding noise alone decorrelates the chained \
                 comparison there); op-level and chained before"
            ),
        }
    }
}

fn nan_high(x: f64) -> f64 {
    if x.is_nan() {
        f64::INFINITY
    } else {
        x
    }
}

/// The largest twin drift of every tap, over the prompt positions and the decode steps.
fn reference_maxima(r: &Receipt) -> BTreeMap<&str, f64> {
    let mut out: BTreeMap<&str, f64> = BTreeMap::new();
    let prompt = r.taps.iter().flat_map(|t| {
        t.reference
            .iter()
            .flatten()
            .map(move |m| (t.name.as_str(), m))
    });
    let steps = r
        .decode
        .steps
        .iter()
        .flat_map(|s| s.tap_reference.iter().map(|(n, m)| (n.as_str(), m)));
    for (name, m) in prompt.chain(steps) {
        let e = out.entry(name).or_insert(0.0);
        *e = e.max(nan_high(m.nmse));
    }
    out
}

/// Judge `r` by `th`.
pub fn judge(r: &Receipt, th: &AppliedThresholds) -> Judgement {
    let has_twin = r.reference.kind != "none";
    let maxima = reference_maxima(r);
    let mut names: Vec<&str> = r.taps.iter().map(|t| t.name.as_str()).collect();
    for s in &r.decode.steps {
        names.extend(s.taps.keys().map(String::as_str));
    }
    names.sort_by_key(|n| graph_order(n));
    names.dedup();
    let limits: BTreeMap<String, ChainedLimit> = names
        .iter()
        .map(|&n| {
            let reference = has_twin.then(|| maxima.get(n).copied().unwrap_or(0.0));
            (
                n.to_string(),
                ChainedLimit::derive(reference, th.for_tap(n), &th.chained),
            )
        })
        .collect();
    let uninformative: Vec<String> = names
        .iter()
        .filter(|n| !limits[**n].informative)
        .map(|n| n.to_string())
        .collect();
    let logit_refs = r
        .positions
        .iter()
        .filter_map(|p| p.reference.as_ref())
        .chain(r.decode.steps.iter().filter_map(|s| s.reference.as_ref()));
    let (mut ref_kl, mut ref_nmse) = (0f64, 0f64);
    for m in logit_refs {
        ref_kl = ref_kl.max(nan_high(m.kl));
        ref_nmse = ref_nmse.max(nan_high(m.nmse));
    }
    let logits = LogitLimit::derive(
        has_twin.then_some(ref_kl),
        has_twin.then_some(ref_nmse),
        &th.logits,
        &th.chained,
    );
    let limit = |name: &str| {
        limits
            .get(name)
            .copied()
            .unwrap_or_else(|| ChainedLimit::derive(None, th.for_tap(name), &th.chained))
    };

    // Prompt positions.
    let mut worst: Option<WorstRatio> = None;
    let mut note = |w: WorstRatio| {
        if worst.as_ref().is_none_or(|x| w.ratio > x.ratio) {
            worst = Some(w);
        }
    };
    let positions: Vec<Judged> = r
        .positions
        .iter()
        .map(|pos| {
            let p = pos.position;
            let mut crossings = Vec::new();
            for t in &r.taps {
                let Some(m) = t.positions.get(p) else {
                    continue;
                };
                let replay = t.replay.as_ref().and_then(|v| v.get(p));
                let lim = limit(&t.name);
                let op = th.for_tap(&t.name);
                ratios(
                    &t.name,
                    m,
                    replay,
                    op.max_replay_nmse,
                    &lim,
                    p,
                    None,
                    &mut note,
                );
                if let Some(c) = check_at(m, replay, op, &lim) {
                    crossings.push(TapCrossing {
                        tap: &t.name,
                        crossing: c,
                    });
                }
            }
            if logits.informative {
                note(WorstRatio {
                    ratio: ratio("kl", pos.logits.kl, logits.max_kl),
                    metric: "kl".into(),
                    tap: "logits".into(),
                    position: p,
                    step: None,
                });
            }
            let (verdict, explanation) = position_verdict(
                &pos.logits,
                pos.reference.as_ref(),
                &crossings,
                &logits,
                &r.pairing,
            );
            Judged {
                verdict,
                explanation,
                taps_crossed: crossings.len(),
                first_tap: crossings.first().map(|c| c.tap.to_string()),
            }
        })
        .collect();

    // Decode steps: taps in graph order.
    let steps: Vec<Judged> = r
        .decode
        .steps
        .iter()
        .map(|s| {
            let mut crossings = Vec::new();
            for name in step_taps(s) {
                let m = &s.taps[name];
                let replay = s.tap_replay.get(name);
                let lim = limit(name);
                let op = th.for_tap(name);
                ratios(
                    name,
                    m,
                    replay,
                    op.max_replay_nmse,
                    &lim,
                    s.position,
                    Some(s.step),
                    &mut note,
                );
                if let Some(c) = check_at(m, replay, op, &lim) {
                    crossings.push(TapCrossing {
                        tap: name,
                        crossing: c,
                    });
                }
            }
            if logits.informative {
                note(WorstRatio {
                    ratio: ratio("kl", s.logits.kl, logits.max_kl),
                    metric: "kl".into(),
                    tap: "logits".into(),
                    position: s.position,
                    step: Some(s.step),
                });
            }
            let (verdict, explanation) = position_verdict(
                &s.logits,
                s.reference.as_ref(),
                &crossings,
                &logits,
                &r.pairing,
            );
            Judged {
                verdict,
                explanation,
                taps_crossed: crossings.len(),
                first_tap: crossings.first().map(|c| c.tap.to_string()),
            }
        })
        .collect();

    let first_divergence = first_divergence(r, th, &limit);
    let mut violations = structural_violations(r);
    let mut judged = |location: String, j: &Judged| {
        if !j.verdict.passes(&th.logits) {
            violations.push(Violation {
                location,
                kind: j.verdict.name().into(),
                detail: j.explanation.clone(),
            });
        }
    };
    for (pos, j) in r.positions.iter().zip(&positions) {
        judged(format!("position {}", pos.position), j);
    }
    for (s, j) in r.decode.steps.iter().zip(&steps) {
        judged(format!("decode step {}", s.step), j);
    }
    Judgement {
        limits,
        logits,
        uninformative,
        positions,
        steps,
        first_divergence,
        worst,
        violations,
    }
}

/// A step's tap names in graph order.
fn step_taps(s: &super::receipt::DecodeStep) -> Vec<&str> {
    let mut v: Vec<&str> = s.taps.keys().map(String::as_str).collect();
    v.sort_by_key(|n| graph_order(n));
    v
}

/// Record the replay and chained ratios of one tap at one place.
#[allow(clippy::too_many_arguments)]
fn ratios(
    tap: &str,
    chained: &KeyMetrics,
    replay: Option<&KeyMetrics>,
    max_replay: f64,
    lim: &ChainedLimit,
    position: usize,
    step: Option<usize>,
    note: &mut impl FnMut(WorstRatio),
) {
    let at = |ratio: f64, metric: &str| WorstRatio {
        ratio,
        metric: metric.into(),
        tap: tap.into(),
        position,
        step,
    };
    if let Some(r) = replay {
        let v = if r.nonfinite_mismatch > 0 {
            f64::INFINITY
        } else {
            ratio("replay_nmse", r.nmse, max_replay)
        };
        note(at(v, "replay_nmse"));
    }
    if chained.nonfinite_mismatch > 0 {
        note(at(f64::INFINITY, "nonfinite_mismatch"));
    } else if lim.informative {
        note(at(ratio("nmse", chained.nmse, lim.max_nmse), "nmse"));
    }
}

/// Token, shape, replay and kernel-set failures: each fails a receipt whatever the numbers say.
/// (A kernel set's own comparison was judged when `compare --kernel all` ran; the receipt keeps
/// its outcome, not its metrics.)
fn structural_violations(r: &Receipt) -> Vec<Violation> {
    let mut out = Vec::new();
    for k in r.kernel_sets.iter().filter(|k| !k.passes) {
        out.push(Violation {
            location: format!("kernel {}", k.kernel),
            kind: "KERNEL".into(),
            detail: format!(
                "the {} kernels' own comparison with the oracle fails: {} ({} violation(s)){}",
                k.kernel,
                k.verdict,
                k.violations,
                k.first_divergence
                    .as_ref()
                    .map_or(String::new(), |d| format!(", first divergence {d}"))
            ),
        });
    }
    if let Some(d) = &r.tokenizer.first_difference {
        out.push(Violation {
            location: "tokenizer".into(),
            kind: "TOKENS".into(),
            detail: format!(
                "ids differ first at index {} (engine {}, oracle {})",
                d.index,
                d.engine.map_or("none".into(), |t| t.to_string()),
                d.oracle.map_or("none".into(), |t| t.to_string())
            ),
        });
    }
    for m in &r.alignment.shape_mismatches {
        out.push(Violation {
            location: format!("tap {}", m.name),
            kind: "SHAPE".into(),
            detail: format!(
                "engine shape {:?} and oracle shape {:?} differ in row length",
                m.engine_shape, m.oracle_shape
            ),
        });
    }
    for e in &r.replay_errors {
        out.push(Violation {
            location: match e.step {
                Some(s) => format!("tap {} (decode step {s})", e.tap),
                None => format!("tap {}", e.tap),
            },
            kind: "REPLAY".into(),
            detail: format!("the op replay failed: {}", e.error),
        });
    }
    out
}

/// The first tap in graph order, and its first position, whose metric crosses its limit over
/// the prompt; failing that, the first decode step with a crossing and its first tap.
fn first_divergence(
    r: &Receipt,
    th: &AppliedThresholds,
    limit: &dyn Fn(&str) -> ChainedLimit,
) -> Option<FirstDivergence> {
    let cross = |name: &str, m: &KeyMetrics, replay: Option<&KeyMetrics>| {
        check_at(m, replay, th.for_tap(name), &limit(name))
    };
    let prompt = r.taps.iter().enumerate().find_map(|(i, t)| {
        t.positions.iter().enumerate().find_map(|(p, m)| {
            cross(&t.name, m, t.replay.as_ref().and_then(|v| v.get(p))).map(|c| (i, p, c))
        })
    });
    if let Some((i, p, crossing)) = prompt {
        let neighbour = |j: usize| -> Option<Neighbour> {
            let t = r.taps.get(j)?;
            let m = *t.positions.get(p)?;
            Some(Neighbour {
                tap: t.name.clone(),
                metrics: m,
                crossed: cross(&t.name, &m, t.replay.as_ref().and_then(|v| v.get(p))).is_some(),
            })
        };
        let t = &r.taps[i];
        return Some(FirstDivergence {
            tap: t.name.clone(),
            layer: t.layer,
            position: p,
            step: None,
            crossing,
            metrics: t.positions[p],
            before: i.checked_sub(1).and_then(neighbour),
            after: neighbour(i + 1),
        });
    }
    for s in &r.decode.steps {
        let names = step_taps(s);
        let hit = names
            .iter()
            .enumerate()
            .find_map(|(i, n)| cross(n, &s.taps[*n], s.tap_replay.get(*n)).map(|c| (i, c)));
        if let Some((i, crossing)) = hit {
            let neighbour = |j: usize| -> Option<Neighbour> {
                let n = *names.get(j)?;
                let m = s.taps[n];
                Some(Neighbour {
                    tap: n.to_string(),
                    metrics: m,
                    crossed: cross(n, &m, s.tap_replay.get(n)).is_some(),
                })
            };
            let name = names[i];
            return Some(FirstDivergence {
                tap: name.to_string(),
                layer: split_name(name).1,
                position: s.position,
                step: Some(s.step),
                crossing,
                metrics: s.taps[name],
                before: i.checked_sub(1).and_then(neighbour),
                after: neighbour(i + 1),
            });
        }
    }
    None
}
