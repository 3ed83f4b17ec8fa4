//! The report's text, written as HTML here rather than by the page's script, so the verdict,
//! the first divergence and the tables read even where scripts do not run. Everything from the
//! receipt passes through [`esc`]: model paths, prompts and tap names are the user's text.

use std::fmt::Write;

use crate::compare::judge::{Judgement, Violation};
use crate::compare::metrics::KeyMetrics;
use crate::compare::receipt::{Diagnosis, Receipt};
use crate::compare::verdict::{FirstDivergence, Neighbour, Verdict};

use super::view::{layer_label, Place};

/// `s` safe as HTML text and as a quoted attribute value.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A metric in the terminal report's notation (`1.234e-5`), `inf`/`nan` spelled out.
fn sci(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{x:.3e}")
    }
}

/// The class that colours a verdict (`v-MATCH`, `v-TIE-FLIP`, ...).
fn verdict_span(v: Verdict) -> String {
    format!(r#"<span class="verdict v-{0}">{0}</span>"#, v.name())
}

fn place(position: usize, step: Option<usize>) -> String {
    match step {
        Some(s) => format!("decode step {s} (position {position})"),
        None => format!("position {position}"),
    }
}

/// Scalar leaves of a JSON value as `a.b.c = value` rows (the oracle's identity differs per
/// oracle kind, so it is shown as it comes).
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                flatten(&key(k), v, out);
            }
        }
        serde_json::Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            let items: Vec<String> = a.iter().map(scalar).collect();
            out.push((prefix.to_string(), items.join(", ")));
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&key(&i.to_string()), v, out);
            }
        }
        v => out.push((prefix.to_string(), scalar(v))),
    }
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn str_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// `MATCH 31, TIE-FLIP 1`.
fn counts(m: &std::collections::BTreeMap<Verdict, usize>) -> String {
    m.iter()
        .map(|(v, n)| format!("{} {n}", v.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The page's header: verdict, model, input, both sides, pairing, basis, worst ratio.
pub fn header(r: &Receipt) -> String {
    let s = &r.summary;
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<header id="summary"><h1>xval comparison <span id="verdict" class="verdict v-{v}">{v}</span> <span class="{c}">{p}</span></h1>"#,
        v = s.verdict.name(),
        c = if s.passes { "passes" } else { "fails" },
        p = if s.passes { "passes" } else { "fails" },
    );
    if let Some(w) = &r.mode.warning {
        let _ = write!(h, r#"<p class="warning">{}</p>"#, esc(w));
    }
    if !r.engine.faults.is_empty() {
        let _ = write!(
            h,
            r#"<p class="warning">faults injected into the engine on purpose: {}</p>"#,
            esc(&r.engine.faults.join("; "))
        );
    }
    let mut rows: Vec<(&str, String)> = Vec::new();
    let p = &r.provenance;
    let formats: Vec<String> = p.formats.iter().map(|(k, v)| format!("{k} {v}")).collect();
    rows.push((
        "model",
        format!(
            "<code>{}</code> ({}, {}); sha256 <code>{}</code>",
            esc(&p.model_path),
            esc(&p.architecture),
            esc(&formats.join(", ")),
            esc(&p.model_sha256)
        ),
    ));
    let prompt = match &r.input.prompt {
        Some(t) => format!("prompt <q>{}</q>", esc(t)),
        None => "token ids".into(),
    };
    rows.push((
        "input",
        format!(
            "{prompt}: {} positions (verdicts: {}), {} decode steps (verdicts: {}); prompt {} of \
             {}",
            r.positions.len(),
            counts(&s.positions),
            r.decode.steps.len(),
            counts(&s.decode_steps),
            r.input.prompt_index + 1,
            r.input.prompts_total
        ),
    ));
    let e = &r.engine;
    let kernels: Vec<String> = e.kernels.iter().map(|k| k.to_string()).collect();
    rows.push((
        "engine",
        format!(
            "xval {}{}: backend {}, kernels {}, profile {}, KV {}, {} threads",
            esc(&e.version),
            e.git_commit
                .as_ref()
                .map_or(String::new(), |c| format!(" ({})", esc(c))),
            e.backend,
            esc(&kernels.join(", ")),
            e.profile,
            e.kv_type,
            e.threads
        ),
    ));
    rows.push(("oracle", oracle(&r.oracle)));
    rows.push((
        "pairing",
        format!(
            "{}{}",
            if r.pairing.matched {
                ""
            } else {
                r#"<span class="warning">numerics differ</span>: "#
            },
            esc(&r.pairing.note)
        ),
    ));
    rows.push((
        "thresholds",
        format!(
            "{}{}; chained limits {}",
            esc(&r.thresholds.source),
            if r.thresholds.provisional {
                " (provisional)"
            } else {
                ""
            },
            crate::compare::report::chained_limits(r)
        ),
    ));
    rows.push(("basis", esc(&s.basis)));
    rows.push((
        "worst metric/limit",
        match &s.worst {
            Some(w) => format!(
                "<b>{:.3}</b> ({} of <code>{}</code> at {})",
                w.ratio,
                esc(&w.metric),
                esc(&w.tap),
                place(w.position, w.step)
            ),
            None => "none recorded".into(),
        },
    ));
    rows.push((
        "tokenizer",
        match &r.tokenizer.first_difference {
            None => "both sides' ids agree".into(),
            Some(d) => format!(
                r#"<span class="warning">ids differ first at index {}</span> (engine {}, oracle {}); both sides ran the {} ids"#,
                d.index,
                d.engine.map_or("none".into(), |t| t.to_string()),
                d.oracle.map_or("none".into(), |t| t.to_string()),
                esc(&r.tokenizer.evaluated_ids)
            ),
        },
    ));
    rows.push(("created", esc(&r.created)));
    h.push_str(r#"<dl class="facts">"#);
    for (k, v) in rows {
        let _ = write!(h, "<dt>{k}</dt><dd>{v}</dd>");
    }
    h.push_str("</dl></header>");
    h
}

/// The oracle's kind, version and source in a line, the whole identity folded below.
fn oracle(v: &serde_json::Value) -> String {
    let line: Vec<String> = [
        str_at(v, &["kind"]),
        str_at(v, &["version"]),
        str_at(v, &["build", "source"]),
    ]
    .into_iter()
    .flatten()
    .map(esc)
    .collect();
    let mut leaves = Vec::new();
    flatten("", v, &mut leaves);
    let mut s = format!(
        "{}<details><summary>identity</summary><table class=\"kv\">",
        line.join("; ")
    );
    for (k, v) in leaves {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(&k), esc(&v));
    }
    s.push_str("</table></details>");
    s
}

fn metrics_row(label: &str, tap: &str, m: &KeyMetrics, crossed: bool, replay: &str) -> String {
    format!(
        "<tr{}><td>{label}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{replay}</td><td>{}</td></tr>",
        if crossed { r#" class="crossed""# } else { "" },
        esc(tap),
        sci(m.nmse),
        sci(1.0 - m.cosine),
        sci(m.max_abs_diff),
        m.nonfinite_mismatch,
        if crossed { "yes" } else { "no" }
    )
}

/// The op-level replay NMSE of `tap` where the first divergence lies, when it was replayed.
fn replay_at(r: &Receipt, tap: &str, position: usize, step: Option<usize>) -> Option<f64> {
    match step {
        None => r
            .taps
            .iter()
            .find(|t| t.name == tap)?
            .replay
            .as_ref()?
            .get(position)
            .map(|m| m.nmse),
        Some(s) => r
            .decode
            .steps
            .iter()
            .find(|x| x.step == s)?
            .tap_replay
            .get(tap)
            .map(|m| m.nmse),
    }
}

/// The first divergence with its neighbours, the first divergent decode step, and the
/// diagnosis when the receipt carries one.
pub fn divergence(r: &Receipt) -> String {
    let mut h = String::new();
    match &r.first_divergence {
        None => h.push_str(
            r#"<p id="no-divergence">No divergence: every tap is within its limits at every prompt position and decode step.</p>"#,
        ),
        Some(f) => h.push_str(&first(r, f)),
    }
    if let Some(s) = r.decode.first_divergent_step {
        if let Some(step) = r.decode.steps.get(s) {
            let _ = write!(
                h,
                "<p>Decode: first divergent step {s} ({}): engine token {}, oracle token {}.</p>",
                verdict_span(step.verdict),
                step.engine_token,
                step.oracle_token
            );
        }
    }
    if let Some(d) = &r.summary.diagnosis {
        h.push_str(&diagnosis(d));
    }
    h
}

fn first(r: &Receipt, f: &FirstDivergence) -> String {
    let mut h = format!(
        r#"<p id="first-divergence-line"><code class="tap">{}</code> (layer {}) at {}: <b>{}</b></p>"#,
        esc(&f.tap),
        layer_label(f.layer),
        place(f.position, f.step),
        esc(&f.crossing.describe())
    );
    h.push_str(
        "<table class=\"metrics\"><thead><tr><th></th><th>tap</th><th>NMSE</th><th>1-cosine</th>\
         <th>max|diff|</th><th>NaN/Inf</th><th>op replay NMSE</th><th>crossed</th></tr></thead><tbody>",
    );
    let replay = |tap: &str| replay_at(r, tap, f.position, f.step).map_or("-".to_string(), sci);
    let neighbour = |label: &str, n: &Option<Neighbour>| {
        n.as_ref().map_or(String::new(), |n| {
            metrics_row(label, &n.tap, &n.metrics, n.crossed, &replay(&n.tap))
        })
    };
    h.push_str(&neighbour("before", &f.before));
    h.push_str(&metrics_row(
        "first",
        &f.tap,
        &f.metrics,
        true,
        &replay(&f.tap),
    ));
    h.push_str(&neighbour("after", &f.after));
    h.push_str(
        "</tbody></table><p class=\"note\">Chained metrics (the engine's own inputs all the way); \
         the op replay runs the engine's op on the oracle's inputs of that op.</p>",
    );
    h
}

fn diagnosis(d: &Diagnosis) -> String {
    format!(
        r#"<div id="diagnosis"><h3>Diagnosis: <code>{}</code></h3><p>{}</p><p class="note">evidence: {}</p></div>"#,
        esc(&d.signature),
        esc(&d.cause),
        esc(&d.evidence)
    )
}

/// Every reason the receipt fails, or a line saying there is none.
pub fn violations(j: &Judgement) -> String {
    if j.violations.is_empty() {
        return r#"<p id="no-violations">None: the gate passes this receipt.</p>"#.into();
    }
    let mut h = format!(
        "<p>{} violation(s) of the receipt's thresholds.</p><table class=\"violations\">\
         <thead><tr><th>where</th><th>kind</th><th>detail</th></tr></thead><tbody>",
        j.violations.len()
    );
    for Violation {
        location,
        kind,
        detail,
    } in &j.violations
    {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><span class=\"verdict v-{1}\">{1}</span></td><td class=\"why\">{2}</td></tr>",
            esc(location),
            esc(kind),
            esc(detail)
        );
    }
    h.push_str("</tbody></table>");
    h
}

/// One row per decode step: tokens, logit metrics, verdict and why.
pub fn decode_table(r: &Receipt, steps: &[Place]) -> String {
    if steps.is_empty() {
        return "<p>No decode steps were run.</p>".into();
    }
    let mut h = String::from(
        "<table class=\"steps\"><thead><tr><th>step</th><th>position</th><th>input</th>\
         <th>engine</th><th>oracle</th><th>KL</th><th>logit NMSE</th><th>verdict</th>\
         <th>first tap past its limit</th><th>why</th></tr></thead><tbody>",
    );
    for (s, p) in r.decode.steps.iter().zip(steps) {
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"why\">{}</td></tr>",
            if s.engine_token != s.oracle_token {
                r#" class="crossed""#
            } else {
                ""
            },
            s.step,
            s.position,
            s.input_token,
            s.engine_token,
            s.oracle_token,
            sci(p.kl),
            sci(p.nmse),
            verdict_span(s.verdict),
            s.first_diverging_tap
                .as_ref()
                .map_or("-".into(), |t| format!("<code>{}</code>", esc(t))),
            esc(&s.explanation)
        );
    }
    h.push_str("</tbody></table>");
    h
}

/// One row per prompt position (folded: the chart above shows the same numbers).
pub fn positions_table(positions: &[Place]) -> String {
    let mut h = String::from(
        "<details><summary>per-position table</summary><table class=\"positions\"><thead><tr>\
         <th>position</th><th>token</th><th>top-1 engine</th><th>top-1 oracle</th>\
         <th>oracle top-2 margin</th><th>KL</th><th>logit NMSE</th><th>max|diff|</th>\
         <th>verdict</th><th>why</th></tr></thead><tbody>",
    );
    for p in positions {
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"why\">{}</td></tr>",
            if p.top1_agree { "" } else { r#" class="crossed""# },
            p.position,
            p.token,
            p.top1_engine,
            p.top1_oracle,
            p.oracle_top2_margin,
            sci(p.kl),
            sci(p.nmse),
            sci(p.max_abs_diff),
            verdict_span(p.verdict),
            esc(&p.explanation)
        );
    }
    h.push_str("</tbody></table></details>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn flattens_nested_identity() {
        let v = serde_json::json!({"kind": "builtin", "build": {"flags": {"A": "ON"}, "cpu": ["AVX", "FMA"]}});
        let mut out = Vec::new();
        flatten("", &v, &mut out);
        assert!(out.contains(&("build.flags.A".into(), "ON".into())));
        assert!(out.contains(&("build.cpu".into(), "AVX, FMA".into())));
        assert!(out.contains(&("kind".into(), "builtin".into())));
    }
}
