//! The numbers the report's charts draw, computed here rather than in the page's script so the
//! page shows exactly what the judge decided: every ratio is a metric over the limit
//! [`judge`] applies to it, so a cell above 1 is a crossing and one at or below 1 is not.
//!
//! Heatmap cells hold the largest ratio among the taps and places they cover and name where it
//! was; places are the prompt positions and then the decode steps, so a fault that shows only
//! in decode (a KV-cache fault) still lights up the tap x layer map.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use serde::Serialize;
use xval_engine::taps::{graph_order, split_name};

use crate::compare::float_serde::{float, opt_float};
use crate::compare::judge::Judgement;
use crate::compare::metrics::{KeyMetrics, LogitMetrics};
use crate::compare::receipt::Receipt;
use crate::compare::verdict::{ratio, ChainedLimit, Verdict};

/// A metric at one place against its limit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Measure {
    /// `value / limit` (above 1: crossed; +Inf for a NaN/Inf mismatch); `None` where the
    /// metric is not judged (the chained comparison carries no information at this tap).
    #[serde(with = "opt_float")]
    pub ratio: Option<f64>,
    /// `nmse`, `1-cosine`, `nonfinite_mismatch`, `replay_nmse` or `replay_nonfinite_mismatch`.
    pub metric: &'static str,
    #[serde(with = "float")]
    pub value: f64,
    #[serde(with = "opt_float")]
    pub limit: Option<f64>,
}

impl Measure {
    /// Whether `self` is further from within its limit than `other` (a judged metric beats an
    /// unjudged one).
    fn worse_than(&self, other: &Measure) -> bool {
        match (self.ratio, other.ratio) {
            (Some(a), Some(b)) => a > b,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The chained comparison of one tap at one place, as [`crate::compare::verdict::check_at`]
/// judges it: a NaN/Inf mismatch, else the nearer of NMSE and 1-cosine to its limit, else
/// (uninformative tap) not judged.
pub fn chained(m: &KeyMetrics, lim: &ChainedLimit) -> Measure {
    if m.nonfinite_mismatch > 0 {
        return Measure {
            ratio: Some(f64::INFINITY),
            metric: "nonfinite_mismatch",
            value: m.nonfinite_mismatch as f64,
            limit: Some(0.0),
        };
    }
    if !lim.informative {
        return Measure {
            ratio: None,
            metric: "nmse",
            value: m.nmse,
            limit: None,
        };
    }
    let nmse = Measure {
        ratio: Some(ratio("nmse", m.nmse, lim.max_nmse)),
        metric: "nmse",
        value: m.nmse,
        limit: Some(lim.max_nmse),
    };
    let cosine = Measure {
        ratio: Some(ratio("cosine", m.cosine, lim.min_cosine)),
        metric: "1-cosine",
        value: 1.0 - m.cosine,
        limit: Some(1.0 - lim.min_cosine),
    };
    if cosine.worse_than(&nmse) {
        cosine
    } else {
        nmse
    }
}

/// The op-level replay of one tap at one place against `max_replay_nmse`.
pub fn replayed(m: &KeyMetrics, max_replay_nmse: f64) -> Measure {
    if m.nonfinite_mismatch > 0 {
        return Measure {
            ratio: Some(f64::INFINITY),
            metric: "replay_nonfinite_mismatch",
            value: m.nonfinite_mismatch as f64,
            limit: Some(0.0),
        };
    }
    Measure {
        ratio: Some(ratio("replay_nmse", m.nmse, max_replay_nmse)),
        metric: "replay_nmse",
        value: m.nmse,
        limit: Some(max_replay_nmse),
    }
}

/// One heatmap cell: column `x`, row `y` (indices into the map's labels), the worst measure
/// among what it covers and where that was.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    pub x: usize,
    pub y: usize,
    pub tap: String,
    pub position: usize,
    pub step: Option<usize>,
    #[serde(flatten)]
    pub measure: Measure,
}

/// A heatmap: column and row labels, a chained and a replayed layer of cells.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Heatmap {
    pub columns: Vec<String>,
    pub rows: Vec<String>,
    pub chained: Vec<Cell>,
    pub replay: Vec<Cell>,
}

/// A prompt position or a decode step with its logit metrics and verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Place {
    pub label: String,
    pub position: usize,
    pub step: Option<usize>,
    pub token: u32,
    pub verdict: Verdict,
    pub explanation: String,
    #[serde(with = "float")]
    pub kl: f64,
    #[serde(with = "float")]
    pub nmse: f64,
    #[serde(with = "float")]
    pub max_abs_diff: f64,
    /// The noise twin's KL against the engine here (no twin: `None`).
    #[serde(with = "opt_float")]
    pub twin_kl: Option<f64>,
    pub top1_engine: u32,
    pub top1_oracle: u32,
    pub top1_agree: bool,
    #[serde(with = "float")]
    pub oracle_top2_margin: f64,
}

impl Place {
    #[allow(clippy::too_many_arguments)]
    fn new(
        label: String,
        position: usize,
        step: Option<usize>,
        token: u32,
        logits: &LogitMetrics,
        twin: Option<&LogitMetrics>,
        verdict: Verdict,
        explanation: &str,
    ) -> Place {
        Place {
            label,
            position,
            step,
            token,
            verdict,
            explanation: explanation.to_string(),
            kl: logits.kl,
            nmse: logits.nmse,
            max_abs_diff: logits.max_abs_diff,
            twin_kl: twin.map(|t| t.kl),
            top1_engine: logits.top1_engine,
            top1_oracle: logits.top1_oracle,
            top1_agree: logits.top1_agree,
            oracle_top2_margin: logits.oracle_top2_margin,
        }
    }
}

/// The logits' KL limit as the judge applied it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KlLimit {
    #[serde(with = "float")]
    pub max_kl: f64,
    /// Whether the KL is judged at all (the twin's logits stay informative).
    pub informative: bool,
}

/// Everything the page's script draws.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct View {
    pub verdict: Verdict,
    pub passes: bool,
    /// Tap tag x layer: worst over the prompt positions and the decode steps.
    pub tap_layer: Heatmap,
    /// Layer x place (prompt positions, then decode steps): worst tap of the layer there.
    pub position_layer: Heatmap,
    pub positions: Vec<Place>,
    pub steps: Vec<Place>,
    pub kl_limit: KlLimit,
}

/// One tap at one place, judged.
struct Sample<'a> {
    tap: &'a str,
    tag: &'a str,
    layer: Option<usize>,
    /// Index among the places: prompt positions first, then decode steps.
    place: usize,
    position: usize,
    step: Option<usize>,
    chained: Measure,
    replay: Option<Measure>,
}

/// `0`, `1`, ... for layers; `final` for the model-level taps.
pub fn layer_label(l: Option<usize>) -> String {
    l.map_or("final".into(), |l| l.to_string())
}

/// Every tap at every place, judged by `j`'s limits.
fn samples<'a>(r: &'a Receipt, j: &Judgement) -> Vec<Sample<'a>> {
    let limit = |name: &str| {
        j.limits.get(name).copied().unwrap_or_else(|| {
            ChainedLimit::derive(None, r.thresholds.for_tap(name), &r.thresholds.chained)
        })
    };
    let mut out = Vec::new();
    for t in &r.taps {
        let (tag, layer) = split_name(&t.name);
        let lim = limit(&t.name);
        let max_replay = r.thresholds.for_tap(&t.name).max_replay_nmse;
        for (p, m) in t.positions.iter().enumerate() {
            out.push(Sample {
                tap: &t.name,
                tag,
                layer,
                place: p,
                position: p,
                step: None,
                chained: chained(m, &lim),
                replay: t
                    .replay
                    .as_ref()
                    .and_then(|v| v.get(p))
                    .map(|m| replayed(m, max_replay)),
            });
        }
    }
    let n_prompt = r.positions.len();
    for (i, s) in r.decode.steps.iter().enumerate() {
        for (name, m) in &s.taps {
            let (tag, layer) = split_name(name);
            let max_replay = r.thresholds.for_tap(name).max_replay_nmse;
            out.push(Sample {
                tap: name,
                tag,
                layer,
                place: n_prompt + i,
                position: s.position,
                step: Some(s.step),
                chained: chained(m, &limit(name)),
                replay: s.tap_replay.get(name).map(|m| replayed(m, max_replay)),
            });
        }
    }
    out
}

/// Keep the worse of the cell at (`x`, `y`) and `m`, measured at `s`.
fn note(
    cells: &mut BTreeMap<(usize, usize), Cell>,
    x: usize,
    y: usize,
    s: &Sample<'_>,
    m: &Measure,
) {
    let cell = || Cell {
        x,
        y,
        tap: s.tap.to_string(),
        position: s.position,
        step: s.step,
        measure: m.clone(),
    };
    match cells.entry((x, y)) {
        Entry::Occupied(mut c) if m.worse_than(&c.get().measure) => *c.get_mut() = cell(),
        Entry::Occupied(_) => {}
        Entry::Vacant(v) => {
            v.insert(cell());
        }
    }
}

/// Fill `map`'s chained and replay cells from `samples`, each placed by `at`.
fn fill(map: &mut Heatmap, samples: &[Sample<'_>], at: impl Fn(&Sample<'_>) -> (usize, usize)) {
    let (mut chained, mut replay) = (BTreeMap::new(), BTreeMap::new());
    for s in samples {
        let (x, y) = at(s);
        note(&mut chained, x, y, s, &s.chained);
        if let Some(m) = &s.replay {
            note(&mut replay, x, y, s, m);
        }
    }
    map.chained = chained.into_values().collect();
    map.replay = replay.into_values().collect();
}

/// The report's data for `r`, judged by `j` (the judgement of `r` by its own thresholds).
pub fn build(r: &Receipt, j: &Judgement) -> View {
    let samples = samples(r, j);
    let mut layers: Vec<Option<usize>> = samples.iter().map(|s| s.layer).collect();
    layers.sort_by_key(|l| l.unwrap_or(usize::MAX));
    layers.dedup();
    // Rows of the tap map: the per-layer tags in their order within a layer, then the
    // model-level ones (unknown names last in their group).
    let mut tags: Vec<(&str, (bool, usize))> = samples
        .iter()
        .map(|s| (s.tag, (s.layer.is_none(), graph_order(s.tap).1)))
        .collect();
    tags.sort_by_key(|&(tag, key)| (key, tag));
    tags.dedup_by_key(|&mut (tag, _)| tag);
    let layer_index = |l: Option<usize>| layers.iter().position(|&x| x == l).unwrap_or(0);
    let tag_index = |t: &str| tags.iter().position(|&(x, _)| x == t).unwrap_or(0);

    let mut tap_layer = Heatmap {
        columns: layers.iter().map(|&l| layer_label(l)).collect(),
        rows: tags.iter().map(|&(t, _)| t.to_string()).collect(),
        ..Heatmap::default()
    };
    fill(&mut tap_layer, &samples, |s| {
        (layer_index(s.layer), tag_index(s.tag))
    });

    let positions: Vec<Place> = r
        .positions
        .iter()
        .map(|p| {
            Place::new(
                p.position.to_string(),
                p.position,
                None,
                p.token,
                &p.logits,
                p.reference.as_ref(),
                p.verdict,
                &p.explanation,
            )
        })
        .collect();
    let steps: Vec<Place> = r
        .decode
        .steps
        .iter()
        .map(|s| {
            Place::new(
                format!("s{}", s.step),
                s.position,
                Some(s.step),
                s.input_token,
                &s.logits,
                s.reference.as_ref(),
                s.verdict,
                &s.explanation,
            )
        })
        .collect();
    let mut position_layer = Heatmap {
        columns: positions
            .iter()
            .chain(&steps)
            .map(|p| p.label.clone())
            .collect(),
        rows: tap_layer.columns.clone(),
        ..Heatmap::default()
    };
    fill(&mut position_layer, &samples, |s| {
        (s.place, layer_index(s.layer))
    });

    View {
        verdict: r.summary.verdict,
        passes: r.summary.passes,
        tap_layer,
        position_layer,
        positions,
        steps,
        kl_limit: KlLimit {
            max_kl: j.logits.max_kl,
            informative: j.logits.informative,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(nmse: f64, cosine: f64, nonfinite: usize) -> KeyMetrics {
        KeyMetrics {
            nmse,
            cosine,
            max_abs_diff: 0.0,
            nonfinite_mismatch: nonfinite,
        }
    }

    fn limit(max_nmse: f64, informative: bool) -> ChainedLimit {
        ChainedLimit {
            max_nmse,
            min_cosine: 1.0 - max_nmse,
            reference_nmse: Some(max_nmse / 10.0),
            informative,
        }
    }

    #[test]
    fn chained_ratio_is_the_nearer_metric_to_its_limit() {
        let m = chained(&key(1e-4, 1.0 - 1e-5, 0), &limit(1e-3, true));
        assert_eq!((m.metric, m.ratio), ("nmse", Some(0.1)));
        // 1-cosine 5e-4 against 1e-3 is nearer its limit than NMSE 1e-4.
        let m = chained(&key(1e-4, 1.0 - 5e-4, 0), &limit(1e-3, true));
        assert_eq!(m.metric, "1-cosine");
        assert!((m.ratio.unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn nonfinite_is_infinite_and_uninformative_is_unjudged() {
        let m = chained(&key(0.0, 1.0, 3), &limit(1e-3, true));
        assert_eq!(m.ratio, Some(f64::INFINITY));
        let m = chained(&key(0.5, 0.5, 0), &limit(1e-3, false));
        assert_eq!(m.ratio, None);
        let m = replayed(&key(2e-10, 1.0, 0), 1e-10);
        assert_eq!(m.metric, "replay_nmse");
        assert!((m.ratio.unwrap() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn judged_beats_unjudged_and_larger_beats_smaller() {
        let judged = replayed(&key(1e-20, 1.0, 0), 1e-10);
        let unjudged = chained(&key(0.5, 0.5, 0), &limit(1e-3, false));
        assert!(judged.worse_than(&unjudged));
        assert!(!unjudged.worse_than(&judged));
        assert!(replayed(&key(1e-9, 1.0, 0), 1e-10).worse_than(&judged));
    }
}
