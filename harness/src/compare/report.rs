//! Receipts for a person: a per-layer table for the terminal (colour only when asked, i.e. when
//! stdout is a terminal) and the same as Markdown for a pull-request comment.

use super::receipt::{Receipt, TapRecord};
use super::verdict::{check_at, Verdict};

/// The worst tap of one layer (or of the model-level taps, `layer = None`).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerRow {
    pub layer: Option<usize>,
    pub worst_tap: String,
    pub nmse: f64,
    pub cosine: f64,
    pub max_abs_diff: f64,
    /// The worst tap's chained NMSE limit (from the noise twin), `None` where the chained
    /// comparison carries no information.
    pub limit: Option<f64>,
    /// The largest op-level (replay) NMSE of the layer, when its ops were replayed.
    pub replay_nmse: Option<f64>,
    /// MATCH when no tap of the layer crosses its limit at any position, WRONG on a NaN/Inf
    /// mismatch, DRIFT otherwise.
    pub verdict: Verdict,
    /// Whether the first divergence lies in this layer.
    pub first_divergence: bool,
}

/// One row per layer, in order, then the model-level taps.
pub fn layer_rows(r: &Receipt) -> Vec<LayerRow> {
    let mut layers: Vec<Option<usize>> = r.taps.iter().map(|t| t.layer).collect();
    layers.sort_by_key(|l| l.unwrap_or(usize::MAX));
    layers.dedup();
    let fd_layer = r.first_divergence.as_ref().map(|f| f.layer);
    layers
        .into_iter()
        .filter_map(|layer| {
            let taps: Vec<&TapRecord> = r.taps.iter().filter(|t| t.layer == layer).collect();
            let worst = taps.iter().copied().max_by(|a, b| {
                let key = |t: &TapRecord| (t.worst.nonfinite_mismatch > 0, nan_high(t.worst.nmse));
                let (ka, kb) = (key(a), key(b));
                ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
            })?;
            let mut verdict = Verdict::Match;
            for t in &taps {
                let op = r.thresholds.for_tap(&t.name);
                for (p, m) in t.positions.iter().enumerate() {
                    let replay = t.replay.as_ref().and_then(|v| v.get(p));
                    if let Some(c) = check_at(m, replay, op, &t.limit) {
                        verdict = verdict.max(if c.is_nonfinite() {
                            Verdict::Wrong
                        } else {
                            Verdict::Drift
                        });
                    }
                }
            }
            Some(LayerRow {
                layer,
                worst_tap: worst.name.clone(),
                nmse: worst.worst.nmse,
                cosine: worst.worst.cosine,
                max_abs_diff: worst.worst.max_abs_diff,
                limit: worst.limit.informative.then_some(worst.limit.max_nmse),
                replay_nmse: taps
                    .iter()
                    .filter_map(|t| t.replay.as_ref())
                    .flatten()
                    .map(|m| nan_high(m.nmse))
                    .reduce(f64::max),
                verdict,
                first_divergence: fd_layer == Some(layer),
            })
        })
        .collect()
}

fn nan_high(x: f64) -> f64 {
    if x.is_nan() {
        f64::INFINITY
    } else {
        x
    }
}

fn layer_label(l: Option<usize>) -> String {
    l.map_or("final".into(), |l| l.to_string())
}

/// Lines above the table: mode warning, pairing, verdict, first divergence, decode parity.
fn headline(r: &Receipt) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(w) = &r.mode.warning {
        v.push(format!("WARNING: {w}"));
    }
    v.push(format!(
        "verdict {} over {} positions and {} decode steps ({}); thresholds {}{}",
        r.summary.verdict,
        r.positions.len(),
        r.decode.steps.len(),
        if r.summary.passes { "passes" } else { "fails" },
        r.thresholds.source,
        if r.thresholds.provisional {
            " (provisional)"
        } else {
            ""
        }
    ));
    v.push(format!("pairing: {}", r.pairing.note));
    v.push(format!(
        "basis: {}; chained limits {}",
        r.summary.basis,
        chained_limits(r)
    ));
    if let Some(w) = &r.summary.worst {
        v.push(format!(
            "worst metric/limit: {:.3} ({} of {} at {})",
            w.ratio,
            w.metric,
            w.tap,
            match w.step {
                Some(s) => format!("decode step {s}"),
                None => format!("position {}", w.position),
            }
        ));
    }
    if !r.tokenizer.matched {
        if let Some(d) = &r.tokenizer.first_difference {
            v.push(format!(
                "tokenizer: ids differ first at index {} (engine {:?}, oracle {:?})",
                d.index, d.engine, d.oracle
            ));
        }
    }
    match &r.first_divergence {
        Some(f) => v.push(format!(
            "first divergence: {} (layer {}) at {}: {}",
            f.tap,
            layer_label(f.layer),
            match f.step {
                Some(s) => format!("decode step {s} (position {})", f.position),
                None => format!("position {}", f.position),
            },
            f.crossing.describe()
        )),
        None => v.push("first divergence: none".into()),
    }
    if let Some(d) = &r.summary.diagnosis {
        v.push(format!(
            "likely cause [{}]: {} ({})",
            d.signature, d.cause, d.evidence
        ));
    }
    if let Some(s) = r.decode.first_divergent_step {
        let step = &r.decode.steps[s];
        v.push(format!(
            "decode: first divergent step {s} ({}): engine token {}, oracle token {}",
            step.verdict, step.engine_token, step.oracle_token
        ));
    }
    for k in &r.kernel_sets {
        let p = &k.vs_scalar;
        v.push(format!(
            "kernel {}: {} against the oracle ({}){}; against scalar {} of {} values \
             bit-identical{}",
            k.kernel,
            k.verdict,
            if k.passes { "passes" } else { "FAILS" },
            k.first_divergence
                .as_ref()
                .map_or(String::new(), |d| format!(", first divergence {d}")),
            p.identical,
            p.values,
            match &p.first_difference {
                None => String::new(),
                Some(t) => format!(
                    ", largest difference {:.2e} of the tensor's range, first in {t}",
                    p.max_rel_diff
                ),
            }
        ));
    }
    v
}

/// The terminal table. `color`: ANSI colours (pass whether stdout is a terminal).
pub fn render_table(r: &Receipt, color: bool) -> String {
    let rows = layer_rows(r);
    let head = [
        "",
        "layer",
        "worst tap",
        "NMSE",
        "limit",
        "1-cosine",
        "max|diff|",
        "op NMSE",
        "verdict",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|row| {
            [
                if row.first_divergence {
                    ">>".into()
                } else {
                    String::new()
                },
                layer_label(row.layer),
                row.worst_tap.clone(),
                format!("{:.3e}", row.nmse),
                row.limit.map_or("noise".into(), |l| format!("{l:.1e}")),
                format!("{:.3e}", 1.0 - row.cosine),
                format!("{:.3e}", row.max_abs_diff),
                row.replay_nmse.map_or("-".into(), |v| format!("{v:.3e}")),
                row.verdict.name().into(),
            ]
        })
        .collect();
    let mut w = head.map(str::len);
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            w[i] = w[i].max(s.len());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::new();
        for (i, x) in c.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            if (3..8).contains(&i) {
                s.push_str(&format!("{x:>0$}", w[i]));
            } else {
                s.push_str(&format!("{x:<0$}", w[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out: Vec<String> = headline(r);
    out.push(String::new());
    out.push(line(&head.map(String::from)));
    for (row, c) in rows.iter().zip(&cells) {
        let text = line(c);
        let colored = match (color, row.verdict) {
            (false, _) => text,
            (true, _) if row.first_divergence => format!("\x1b[1;31m{text}\x1b[0m"),
            (true, Verdict::Match) => format!("\x1b[32m{text}\x1b[0m"),
            (true, Verdict::Drift | Verdict::TieFlip) => format!("\x1b[33m{text}\x1b[0m"),
            (true, Verdict::Wrong) => format!("\x1b[31m{text}\x1b[0m"),
        };
        out.push(colored);
    }
    out.join("\n") + "\n"
}

/// The same report as Markdown (`--format markdown`).
pub fn render_markdown(r: &Receipt) -> String {
    let mut s = String::from("### xval comparison\n\n");
    for l in headline(r) {
        s.push_str(&format!("- {}\n", l.replace('|', "\\|")));
    }
    s.push_str(
        "\n| | layer | worst tap | NMSE | limit | 1-cosine | max\\|diff\\| | op NMSE | verdict |\n",
    );
    s.push_str("|---|---|---|---:|---:|---:|---:|---:|---|\n");
    for row in layer_rows(r) {
        let mark = if row.first_divergence { "**>>**" } else { "" };
        let verdict = if row.first_divergence {
            format!("**{}**", row.verdict)
        } else {
            row.verdict.to_string()
        };
        s.push_str(&format!(
            "| {mark} | {} | `{}` | {:.3e} | {} | {:.3e} | {:.3e} | {} | {verdict} |\n",
            layer_label(row.layer),
            row.worst_tap,
            row.nmse,
            row.limit.map_or("noise".into(), |l| format!("{l:.1e}")),
            1.0 - row.cosine,
            row.max_abs_diff,
            row.replay_nmse.map_or("-".into(), |v| format!("{v:.3e}"))
        ));
    }
    s
}

/// How the receipt's chained limits were set, in words (after "chained limits").
pub fn chained_limits(r: &Receipt) -> String {
    if r.reference.kind == "none" {
        "are the class floors (no noise twin)".to_string()
    } else {
        format!(
            "= max({} x the noise twin's drift, floor)",
            r.thresholds.chained.k
        )
    }
}
