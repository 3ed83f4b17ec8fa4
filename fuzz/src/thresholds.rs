//! `thresholds`: arbitrary text through the thresholds loader (`harness compare --thresholds`,
//! `harness gate --thresholds`) and, when it loads, every lookup a receipt can make.

use xval_engine::gguf::GgmlType;
use xval_engine::numerics::{KvType, Profile};
use xval_engine::quant::kernels::Backend;
use xval_engine::taps::all_names;
use xval_harness::compare::thresholds::{ThresholdKey, DEFAULT_TOML};
use xval_harness::compare::Thresholds;

/// One `thresholds` input: parse it; when it loads, resolve the limits for every format,
/// profile and KV type, and check that each class has limits that are numbers a gate can
/// compare against. Returns the number of rules.
pub fn check_thresholds(data: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(data).ok()?;
    let th = Thresholds::parse(text, "fuzz").ok()?;
    let taps = all_names(2);
    assert!(th.chained.k > 0.0 && th.chained.kl_k > 0.0);
    for format in [
        GgmlType::I2_S,
        GgmlType::TQ2_0,
        GgmlType::TQ1_0,
        GgmlType::F16,
        GgmlType::F32,
    ] {
        for profile in Profile::ALL {
            for kv_type in [KvType::F32, KvType::F16] {
                let key = ThresholdKey {
                    format: format.name().to_string(),
                    profile,
                    backend: Backend::Cpu,
                    kv: kv_type,
                };
                let applied = th.resolve(&key);
                for name in &taps {
                    let limit = applied.for_tap(name);
                    for v in [limit.max_replay_nmse, limit.chained_floor] {
                        assert!(v >= 0.0, "{name}: limit {v} passed the loader");
                    }
                }
                let l = &applied.logits;
                assert!(
                    l.kl_floor >= 0.0,
                    "logits: kl_floor {} passed the loader",
                    l.kl_floor
                );
            }
        }
    }
    Some(th.rules.len())
}

/// The embedded `ci/thresholds.toml` and two small variants of it (one rule, a provisional
/// file).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "ci-thresholds.toml".into(),
            DEFAULT_TOML.as_bytes().to_vec(),
        ),
        (
            "provisional.toml".into(),
            DEFAULT_TOML
                .replacen("version = 2", "version = 2\nprovisional = true", 1)
                .into_bytes(),
        ),
    ]
}
