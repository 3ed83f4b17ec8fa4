//! Per-op agreement figures and the summary table printed with `--nocapture`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// `sum (a-b)^2 / sum b^2` in f64, normalised by ggml's values `b`: the definition of the
/// harness's compare metrics (harness/src/compare/metrics.rs), 0 when both sums are 0 and +Inf
/// when only the reference is all zero. A NaN anywhere in either side counts as +Inf unless
/// both sides have NaN at the same place.
pub fn nmse(ours: &[f32], ggml: &[f32]) -> f64 {
    assert_eq!(ours.len(), ggml.len(), "length mismatch");
    let (mut ee, mut bb) = (0f64, 0f64);
    for (&a, &b) in ours.iter().zip(ggml) {
        if a.is_nan() || b.is_nan() {
            if a.is_nan() != b.is_nan() {
                return f64::INFINITY;
            }
            continue;
        }
        if a == b {
            // Covers equal infinities, whose difference would be NaN.
            bb += (b as f64) * (b as f64);
            continue;
        }
        let d = a as f64 - b as f64;
        ee += d * d;
        bb += (b as f64) * (b as f64);
    }
    if ee == 0.0 {
        0.0
    } else if bb > 0.0 {
        ee / bb
    } else {
        f64::INFINITY
    }
}

/// Whether two f32 slices are the same bit for bit (so -0.0 != 0.0 and NaN payloads count).
pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// How one (op, format, variant) row of the table is judged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// Bit-identical output required.
    Exact,
    /// NMSE at most this.
    Nmse(f64),
    /// Measured and reported, not asserted (documented incomparable pair).
    Report,
}

#[derive(Clone, Debug)]
struct Row {
    limit: Limit,
    cases: u64,
    max_nmse: f64,
    mismatches: u64,
}

fn table() -> &'static Mutex<BTreeMap<String, Row>> {
    static T: Mutex<BTreeMap<String, Row>> = Mutex::new(BTreeMap::new());
    &T
}

thread_local! {
    /// The keys this test thread recorded (each `#[test]` runs on its own thread).
    static MINE: RefCell<BTreeSet<String>> = const { RefCell::new(BTreeSet::new()) };
}

/// Record one compared case under `key` (`op | format | variant`) and assert its limit.
/// `exact` says whether the outputs were bit-identical.
pub fn record(key: &str, limit: Limit, nmse: f64, exact: bool) {
    MINE.with(|m| {
        if !m.borrow().contains(key) {
            m.borrow_mut().insert(key.to_string());
        }
    });
    {
        let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
        let row = t.entry(key.to_string()).or_insert(Row {
            limit,
            cases: 0,
            max_nmse: 0.0,
            mismatches: 0,
        });
        row.cases += 1;
        if nmse > row.max_nmse || nmse.is_nan() {
            row.max_nmse = nmse;
        }
        if !exact {
            row.mismatches += 1;
        }
    }
    match limit {
        Limit::Exact => assert!(exact, "{key}: not bit-exact (NMSE {nmse:e})"),
        Limit::Nmse(max) => assert!(nmse <= max, "{key}: NMSE {nmse:e} above {max:e}"),
        Limit::Report => {}
    }
}

/// Print the rows this test thread recorded (one `print!`, so parallel tests do not interleave
/// within a table).
pub fn print_mine() {
    let keys = MINE.with(|m| m.borrow().clone());
    let t = table().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::new();
    for key in &keys {
        let r = &t[key];
        let limit = match r.limit {
            Limit::Exact => "bit-exact".to_string(),
            Limit::Nmse(m) => format!("nmse <= {m:.0e}"),
            Limit::Report => "reported".to_string(),
        };
        out.push_str(&format!(
            "PARITY {key:<58} cases {:>5}  max_nmse {:>9.2e}  not-bit-exact {:>5}  limit {limit}\n",
            r.cases, r.max_nmse, r.mismatches
        ));
    }
    print!("{out}");
}
