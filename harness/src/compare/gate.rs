//! `harness gate`: re-judge recorded receipts against thresholds (the receipt's own, or a
//! file's resolved for the receipt's key), with the same verdict functions as the comparison.
//! Exit 0 when every receipt passes, 1 with a table of violations, 2 on unreadable input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::judge::judge;
use super::receipt::Receipt;
use super::thresholds::{AppliedThresholds, Thresholds};
use crate::error::Result;

pub use super::judge::Violation;

/// Everything in `receipt` that `th` does not accept (see [`super::judge`]).
pub fn violations(receipt: &Receipt, th: &AppliedThresholds) -> Vec<Violation> {
    judge(receipt, th).violations
}

/// The outcome for one receipt file.
#[derive(Clone, Debug)]
pub struct GateResult {
    pub path: PathBuf,
    pub thresholds_source: String,
    pub provisional: bool,
    pub violations: Vec<Violation>,
}

/// Read and judge every receipt; an unreadable one is an error naming its file. Receipts of
/// one prompt list (the same model, list and engine numerics: the shards of one run) are also
/// judged together: every prompt of the list must be there exactly once, else a violation
/// (kind `INCOMPLETE` or `DUPLICATE`) is added to the receipt of the list that comes first.
pub fn gate(paths: &[PathBuf], thresholds: Option<&Path>) -> Result<Vec<GateResult>> {
    let file = thresholds.map(Thresholds::load).transpose()?;
    let mut results = Vec::with_capacity(paths.len());
    let mut lists: BTreeMap<(String, String, String), Vec<(usize, usize)>> = BTreeMap::new();
    for (i, path) in paths.iter().enumerate() {
        let receipt = Receipt::read(path)?;
        let th = match &file {
            Some(t) => t.resolve(&receipt.thresholds.key),
            None => receipt.thresholds.clone(),
        };
        let input = &receipt.input;
        if input.prompts_total > 1 || input.shard.is_some() {
            lists
                .entry((
                    receipt.provenance.model_sha256.clone(),
                    input.prompts_sha256.clone(),
                    receipt.pairing.engine.describe(),
                ))
                .or_default()
                .push((i, input.prompt_index));
        }
        results.push((
            receipt.input.prompts_total,
            GateResult {
                path: path.clone(),
                thresholds_source: th.source.clone(),
                provisional: th.provisional,
                violations: violations(&receipt, &th),
            },
        ));
    }
    for ((_, sha, _), members) in &lists {
        let first = members[0].0;
        let total = results[first].0;
        let mut seen = vec![0usize; total];
        for &(_, idx) in members {
            if let Some(n) = seen.get_mut(idx) {
                *n += 1;
            }
        }
        let missing: Vec<String> = (0..total)
            .filter(|&k| seen[k] == 0)
            .map(|k| k.to_string())
            .collect();
        let twice: Vec<String> = (0..total)
            .filter(|&k| seen[k] > 1)
            .map(|k| k.to_string())
            .collect();
        let short = &sha[..sha.len().min(12)];
        if !missing.is_empty() {
            results[first].1.violations.push(Violation {
                location: format!("prompt list {short}"),
                kind: "INCOMPLETE".into(),
                detail: format!(
                    "{} of {total} prompts have no receipt here: {} (a shard missing?)",
                    missing.len(),
                    missing.join(", ")
                ),
            });
        }
        if !twice.is_empty() {
            results[first].1.violations.push(Violation {
                location: format!("prompt list {short}"),
                kind: "DUPLICATE".into(),
                detail: format!(
                    "prompts judged more than once: {} (a shard given twice?)",
                    twice.join(", ")
                ),
            });
        }
    }
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

/// The terminal report: one line per receipt, then a table of violations.
pub fn render(results: &[GateResult]) -> String {
    let mut s = String::new();
    for r in results {
        s.push_str(&format!(
            "{} {}: {} violation(s) (thresholds: {}{})\n",
            if r.violations.is_empty() {
                "PASS"
            } else {
                "FAIL"
            },
            r.path.display(),
            r.violations.len(),
            r.thresholds_source,
            if r.provisional { ", provisional" } else { "" }
        ));
    }
    let rows: Vec<[String; 4]> = results
        .iter()
        .flat_map(|r| {
            r.violations.iter().map(move |v| {
                [
                    r.path.display().to_string(),
                    v.location.clone(),
                    v.kind.clone(),
                    v.detail.clone(),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        return s;
    }
    let head = ["receipt", "where", "verdict", "detail"];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().take(3).enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    s.push('\n');
    let line = |c: &[String; 4]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}\n",
            c[0],
            c[1],
            c[2],
            c[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        )
    };
    s.push_str(&line(&head.map(String::from)));
    for r in &rows {
        s.push_str(&line(r));
    }
    s
}

/// Whether every receipt passed.
pub fn all_pass(results: &[GateResult]) -> bool {
    results.iter().all(|r| r.violations.is_empty())
}
