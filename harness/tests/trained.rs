//! The trained fixtures (fixtures/trained/): they compare clean against their oracles, their
//! golden recordings replay, and they carry what makes them trained (peaked attention, logits
//! with margins) where the random fixtures do not.

mod common;
use common::*;

#[cfg(feature = "llama-cpp")]
const TRAINED: [&str; 4] = [
    "trained/bitnet-b1.58-i2_s.gguf",
    "trained/bitnet-b1.58-tq2_0.gguf",
    "trained/bitnet-i2_s.gguf",
    "trained/bitnet-tq2_0.gguf",
];

const RANDOM: [&str; 3] = [
    "models/bitnet-b1.58-i2_s.gguf",
    "models/bitnet-i2_s.gguf",
    "models/bitnet-tq2_0.gguf",
];

fn fixture(rel: &str) -> String {
    path_str(&fixtures_dir().join(rel)).to_owned()
}

/// `harness compare` on a trained fixture: exit 0 and a passing verdict.
fn compare_passes(model: &str, extra: &[&str]) {
    let model = fixture(model);
    let mut args = vec!["compare", model.as_str(), "--format", "json"];
    args.extend_from_slice(extra);
    let out = harness(&args);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{model} {extra:?}: {text}\n{}",
        stderr(&out)
    );
    // One receipt per prompt (the golden oracle answers every recorded prompt).
    let mut n = 0;
    for v in serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>() {
        let v = v.unwrap();
        assert_eq!(v["summary"]["passes"], true, "{model}: {}", v["summary"]);
        n += 1;
    }
    assert!(n > 0, "{model}: no receipt");
}

#[cfg(feature = "llama-cpp")]
#[test]
fn trained_fixtures_compare_clean_against_their_live_oracles() {
    for m in TRAINED {
        compare_passes(m, &[]);
    }
}

#[test]
fn trained_fixtures_replay_their_golden_recordings() {
    compare_passes("trained/bitnet-b1.58-i2_s.gguf", &["--oracle", "golden"]);
    compare_passes("trained/bitnet-tq2_0.gguf", &["--oracle", "golden"]);
    // bitnet.cpp's recording of the SiLU I2_S model, for machines without it.
    compare_passes(
        "trained/bitnet-i2_s.gguf",
        &["--oracle", "golden", "--profile", "bitnet-cpp"],
    );
}

/// Mean relative attention entropy over layers and mean top-1 probability, on the floor prompts.
fn stats(model: &str) -> (f64, f64) {
    let model = fixture(model);
    let prompts = path_str(&repo_root().join("ci/floor-prompts.txt")).to_owned();
    let out = harness(&["stats", &model, "--prompts", &prompts, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let layers = v["layers"].as_array().unwrap();
    let entropy = layers
        .iter()
        .map(|l| l["attn_entropy_rel"].as_f64().unwrap())
        .sum::<f64>()
        / layers.len() as f64;
    (entropy, v["margins"]["top1_prob_mean"].as_f64().unwrap())
}

#[test]
fn trained_fixtures_have_peaked_attention_and_confident_logits_random_ones_do_not() {
    let trained: Vec<_> = ["trained/bitnet-b1.58-i2_s.gguf", "trained/bitnet-i2_s.gguf"]
        .iter()
        .map(|m| stats(m))
        .collect();
    let random: Vec<_> = RANDOM.iter().map(|m| stats(m)).collect();
    let max_trained_entropy = trained.iter().map(|s| s.0).fold(0.0, f64::max);
    let min_random_entropy = random.iter().map(|s| s.0).fold(1.0, f64::min);
    assert!(
        max_trained_entropy < min_random_entropy,
        "trained {trained:?} random {random:?}"
    );
    let min_trained_p = trained.iter().map(|s| s.1).fold(1.0, f64::min);
    let max_random_p = random.iter().map(|s| s.1).fold(0.0, f64::max);
    assert!(
        min_trained_p > 2.0 * max_random_p,
        "trained {trained:?} random {random:?}"
    );
}
