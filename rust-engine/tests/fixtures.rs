//! Every committed fixture model: full forward against an independent f64 recomputation from
//! the dequantized file, under each profile.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{agreement, RefModel};
use xval_engine::gguf::GgufFile;
use xval_engine::model::{Engine, Model};
use xval_engine::numerics::{Numerics, Profile};
use xval_engine::taps::TapFilter;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(name)
}

const FIXTURES: [&str; 4] = [
    "bitnet-tq2_0.gguf",
    "bitnet-tq1_0.gguf",
    "bitnet-f32.gguf",
    "bitnet-b1.58-i2_s.gguf",
];

/// Token ids spread over the 384-token fixture vocabulary (BOS first).
const TOKENS: [u32; 8] = [381, 72, 101, 300, 32, 119, 256, 33];

#[test]
fn every_fixture_matches_the_f64_reference() {
    for name in FIXTURES {
        let file = Arc::new(GgufFile::open(fixture(name)).unwrap());
        let want = RefModel::from_gguf(&file).logits(&TOKENS);
        for profile in Profile::ALL {
            let model = Model::load(file.clone(), Default::default()).unwrap();
            let engine = Engine::new(model, Numerics::new(profile), 2).unwrap();
            let mut cache = engine.new_cache();
            let out = engine
                .forward(&mut cache, &TOKENS, &TapFilter::none())
                .unwrap();
            let mut worst = (1.0f64, 0.0f64);
            let mut top1 = 0;
            for (t, want) in want.iter().enumerate() {
                let got = out.logits_at(t);
                let (cos, rel) = agreement(got, want);
                worst = (worst.0.min(cos), worst.1.max(rel));
                let arg = |v: &[f64]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
                let g: Vec<f64> = got.iter().map(|&x| x as f64).collect();
                top1 += (arg(&g) == arg(want)) as usize;
            }
            eprintln!(
                "{name} {profile}: worst cos {:.9}, worst rel max diff {:.3e}, top-1 agree {top1}/{}",
                worst.0,
                worst.1,
                TOKENS.len()
            );
            // f32: only f32 storage and ordering differ from the f64 pass. Quantized profiles
            // pay for 8-bit activations (see tests/forward.rs for the measured figures).
            let (min_cos, max_rel) = match profile {
                Profile::F32 => (1.0 - 1e-9, 1e-5),
                _ => (0.999, 0.1),
            };
            assert!(
                worst.0 > min_cos && worst.1 < max_rel,
                "{name} {profile}: cos {}, rel {}",
                worst.0,
                worst.1
            );
        }
    }
}
