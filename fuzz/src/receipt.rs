//! `receipt`: arbitrary bytes through what `harness gate` and `harness report` do with a
//! receipt: parse it, judge it against its own thresholds and the embedded defaults, and render
//! the gate table, the terminal table, the markdown and the HTML report.

use std::path::PathBuf;

use xval_harness::compare::gate::{render, violations, GateResult};
use xval_harness::compare::html::render_html;
use xval_harness::compare::report::{chained_limits, render_markdown, render_table};
use xval_harness::compare::{Receipt, Thresholds};

/// One `receipt` input. A receipt that parses must also judge and render without a panic, and
/// must write back to JSON that reads as the same receipt. Returns the number of violations
/// found against its own thresholds.
pub fn check_receipt(data: &[u8]) -> Option<usize> {
    let receipt = Receipt::from_slice(data, "fuzz").ok()?;
    let own = violations(&receipt, &receipt.thresholds);
    let defaults = Thresholds::default().resolve(&receipt.thresholds.key);
    let _ = violations(&receipt, &defaults);
    let n = own.len();
    let _ = render(&[GateResult {
        path: PathBuf::from("fuzz"),
        thresholds_source: receipt.thresholds.source.clone(),
        provisional: receipt.thresholds.provisional,
        violations: own,
    }]);
    let _ = render_table(&receipt, false);
    let _ = render_markdown(&receipt);
    let _ = chained_limits(&receipt);
    let _ = render_html(&receipt);
    let json = serde_json::to_string(&receipt).expect("a parsed receipt serialises");
    let again = Receipt::from_slice(json.as_bytes(), "fuzz").expect("a written receipt reads back");
    let json_again = serde_json::to_string(&again).expect("a parsed receipt serialises");
    if json_again != json {
        let at = json
            .bytes()
            .zip(json_again.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let around = |s: &str| {
            s.get(at.saturating_sub(80)..(at + 80).min(s.len()))
                .map(str::to_string)
        };
        panic!(
            "a receipt changes when written and read back, at byte {at}: {:?} became {:?}",
            around(&json),
            around(&json_again)
        );
    }
    Some(n)
}

/// The committed baseline receipts (`receipts/*.json`; clean ones and ones with violations),
/// cut down to fuzzing size: every array to its first two elements and every map keyed by tap
/// name to its first three, where the receipt still reads after the cut (else arrays only).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../receipts");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let full: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            let cut = [true, false]
                .into_iter()
                .map(|maps| {
                    let mut v = full.clone();
                    shrink(&mut v, maps);
                    serde_json::to_vec(&v).expect("JSON serialises")
                })
                .find(|json| Receipt::from_slice(json, &name).is_ok())
                .unwrap_or_else(|| panic!("{name}: no cut of it reads as a receipt"));
            (name, cut)
        })
        .collect()
}

/// Keep the first two elements of every array and, with `maps`, the first three entries of
/// every object keyed by tap name (`attn_norm-0`, `result_output`, ...).
fn shrink(v: &mut serde_json::Value, maps: bool) {
    use serde_json::Value;
    match v {
        Value::Array(a) => {
            a.truncate(2);
            a.iter_mut().for_each(|x| shrink(x, maps));
        }
        Value::Object(o) => {
            let tap_keyed = o
                .keys()
                .all(|k| xval_engine::taps::split_name(k).1.is_some() || k.starts_with("result_"));
            if maps && tap_keyed && o.len() > 3 {
                let keep: Vec<String> = o.keys().take(3).cloned().collect();
                o.retain(|k, _| keep.contains(k));
            }
            o.values_mut().for_each(|x| shrink(x, maps));
        }
        _ => {}
    }
}
