//! `harness gate`: re-judge recorded receipts against thresholds (the receipt's own, or a
//! file's resolved for the receipt's key), with the same verdict functions as the comparison.
//! Exit 0 when every receipt passes, 1 with a table of violations, 2 on unreadable input.

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

/// Read and judge every receipt; an unreadable one is an error naming its file.
pub fn gate(paths: &[PathBuf], thresholds: Option<&Path>) -> Result<Vec<GateResult>> {
    let file = thresholds.map(Thresholds::load).transpose()?;
    paths
        .iter()
        .map(|path| {
            let receipt = Receipt::read(path)?;
            let th = match &file {
                Some(t) => t.resolve(&receipt.thresholds.key),
                None => receipt.thresholds.clone(),
            };
            Ok(GateResult {
                path: path.clone(),
                thresholds_source: th.source.clone(),
                provisional: th.provisional,
                violations: violations(&receipt, &th),
            })
        })
        .collect()
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
