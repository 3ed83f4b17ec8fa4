//! Findings of the harness-side fuzz targets (`receipt`, `thresholds`; docs/fuzzing.md) kept as
//! tests. The engine-side ones replay in rust-engine/tests/fuzz_regressions.rs.

mod common;

use xval_harness::compare::Receipt;

/// Found by `receipt`: serde_json's default float parser read 5.126959679319589e-15 back as
/// 5.1269596793195886e-15, so a receipt judged by `harness gate` held other numbers than the
/// ones `compare` wrote. With `float_roundtrip` every committed receipt reads back bit for bit.
#[test]
fn receipts_read_back_bit_for_bit() {
    let x = 5.126959679319589e-15f64;
    let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
    assert_eq!(back.to_bits(), x.to_bits());

    let dir = common::repo_root().join("receipts");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let first = Receipt::read(&path).unwrap();
        let json = serde_json::to_string(&first).unwrap();
        let again = Receipt::from_slice(json.as_bytes(), "again").unwrap();
        assert!(
            serde_json::to_string(&again).unwrap() == json,
            "{} changes when written and read back",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 5, "{n} receipts");
}

/// Found by `receipt` (fuzz/regressions/receipt/): a receipt whose `thresholds.classes` lacked
/// a tap class read fine, then `harness gate` panicked looking the limit up (exit 101). The
/// reader now refuses it, naming the field.
#[test]
fn a_receipt_missing_a_threshold_class_is_refused_by_the_reader() {
    let dir = common::repo_root().join("fuzz/regressions/receipt");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if let Ok(r) = Receipt::from_slice(&bytes, "regression") {
            // Whatever reads must also judge without a panic.
            let _ = xval_harness::compare::gate::violations(&r, &r.thresholds);
        }
        n += 1;
    }
    assert!(n >= 1);
    let src = common::repo_root().join("receipts/bitnet-tq2_0.ggml.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(src).unwrap()).unwrap();
    v["thresholds"]["classes"]
        .as_object_mut()
        .unwrap()
        .remove("attn");
    let e = Receipt::from_slice(&serde_json::to_vec(&v).unwrap(), "edited.json")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("edited.json") && e.contains("no limits for class `attn`"),
        "{e}"
    );
}
