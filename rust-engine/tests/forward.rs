//! The forward pass against an independent f64 recomputation, decode == prefill, thread-count
//! independence, format equivalences and error cases.

mod common;

use common::{agreement, open, reference_logits, weights, Spec};
use xval_engine::gguf::{GgmlType, GgufFile, Value};
use xval_engine::model::{
    Engine, Fault, FaultKind, Forward, KvHistory, Model, Plan, ReplayInputs, Rows,
};
use xval_engine::numerics::{F16Activations, KvType, Numerics, Profile};
use xval_engine::quant::kernels::Kernel;
use xval_engine::taps::{all_names, TapFilter};
use xval_engine::Error;

const TOKENS: [u32; 9] = [1, 17, 42, 5, 88, 3, 3, 60, 12];

fn engine(spec: Spec, numerics: Numerics, threads: usize) -> Engine {
    let w = weights(spec);
    let model = Model::load(open(&w), Default::default()).unwrap();
    Engine::new(model, numerics, threads).unwrap()
}

fn prefill(e: &Engine, tokens: &[u32]) -> Vec<f32> {
    let mut cache = e.new_cache();
    e.forward(&mut cache, tokens, &TapFilter::none())
        .unwrap()
        .logits
}

fn specs() -> Vec<Spec> {
    vec![
        Spec::bitnet(GgmlType::TQ2_0),
        Spec::bitnet(GgmlType::TQ1_0),
        Spec::bitnet(GgmlType::F32),
        Spec::b158(),
    ]
}

/// Worst (lowest) cosine and worst relative max-diff over all positions.
fn versus_reference(spec: Spec, numerics: Numerics) -> (f64, f64) {
    let w = weights(spec);
    let want = reference_logits(&w, &TOKENS);
    let got = prefill(&engine(spec, numerics, 2), &TOKENS);
    let n_vocab = spec.n_vocab;
    let mut worst = (1.0f64, 0.0f64);
    for (t, want) in want.iter().enumerate() {
        let (cos, rel) = agreement(&got[t * n_vocab..(t + 1) * n_vocab], want);
        worst = (worst.0.min(cos), worst.1.max(rel));
    }
    eprintln!(
        "{} {} {}: worst cos {:.9}, worst rel max diff {:.3e}",
        spec.arch, spec.proj, numerics.profile, worst.0, worst.1
    );
    worst
}

#[test]
fn f32_profile_matches_f64_reference_closely() {
    for spec in specs() {
        let (cos, rel) = versus_reference(spec, Numerics::new(Profile::F32));
        assert!(
            cos > 1.0 - 1e-9 && rel < 1e-5,
            "{} {}: cos {cos}, rel max diff {rel}",
            spec.arch,
            spec.proj
        );
    }
}

#[test]
fn quantized_profiles_stay_near_f64_reference() {
    // Activation quantization (8 bits per element) bounds how close these can be: the figures
    // seen here were cos >= 0.9995 for every test model, so 0.999 leaves margin without hiding a
    // broken kernel (a wrong weight layout gives cos near 0). Measured with `cargo test -p
    // xval-engine --test forward -- --nocapture`: worst cos 0.99952 (i2_s, bitnet-cpp), worst
    // relative max diff 3.8e-2.
    for spec in specs() {
        for profile in [Profile::Ggml, Profile::BitnetCpp] {
            let (cos, rel) = versus_reference(spec, Numerics::new(profile));
            assert!(
                cos > 0.999 && rel < 0.1,
                "{} {} {profile}: cos {cos}, rel max diff {rel}",
                spec.arch,
                spec.proj
            );
        }
    }
}

/// Decode steps equal one prefill bit for bit wherever the arithmetic does not depend on the
/// batch size: with F16 activations rounded at every row count. (bitnet.cpp's fork keeps f32
/// activations for F16 matmuls of 2+ rows only, so there, as in the fork itself, a one-token
/// step rounds where the prefill did not; `f32_batches_round_single_rows_only` checks that.)
#[test]
fn f32_batches_round_single_rows_only() {
    let spec = Spec::b158();
    let numerics = Numerics::new(Profile::BitnetCpp);
    assert_eq!(numerics.f16_activations, F16Activations::F32Batches);
    let round = numerics.with_f16_activations(F16Activations::Round);
    // One token: every F16 matmul has one row, so both settings round.
    let a = prefill(&engine(spec, numerics, 2), &TOKENS[..1]);
    let b = prefill(&engine(spec, round, 2), &TOKENS[..1]);
    assert_eq!(a, b);
    // A batch: the F16 lm_head and the attention over the F16 cache keep f32 activations.
    let a = prefill(&engine(spec, numerics, 2), &TOKENS);
    let b = prefill(&engine(spec, round, 2), &TOKENS);
    assert_ne!(a, b);
    let nmse = a
        .iter()
        .zip(&b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / b.iter().map(|&y| (y as f64).powi(2)).sum::<f64>();
    // The f16 rounding differences (relative 2^-12) flip a few int8 activation roundings
    // downstream, so the logits move by more than the rounding itself, but stay the same model.
    assert!(nmse < 1e-2, "NMSE {nmse}");
}

/// `forward_last` (the output rows cut to the last position, as llama.cpp's own tools evaluate a
/// prompt) gives the last row of a full forward bit for bit wherever a one-row matmul computes
/// as a batch does, and leaves the same KV cache behind.
#[test]
fn forward_last_equals_the_last_row_of_a_full_forward() {
    for spec in specs() {
        for profile in Profile::ALL {
            let numerics = Numerics::new(profile).with_f16_activations(F16Activations::Round);
            let e = engine(spec, numerics, 2);
            let n_vocab = spec.n_vocab;
            let mut full_cache = e.new_cache();
            let full = e
                .forward(&mut full_cache, &TOKENS, &TapFilter::none())
                .unwrap()
                .logits;
            let mut cache = e.new_cache();
            let last = e.forward_last(&mut cache, &TOKENS).unwrap();
            let what = format!("{} {} {profile}", spec.arch, spec.proj);
            assert_eq!(last.len(), n_vocab, "{what}");
            assert!(
                last == full[full.len() - n_vocab..],
                "{what}: last row differs"
            );
            assert_eq!(cache.len(), TOKENS.len(), "{what}");
            let step = |c: &mut _| e.forward(c, &[7], &TapFilter::none()).unwrap().logits;
            assert!(
                step(&mut cache) == step(&mut full_cache),
                "{what}: the cache left behind differs"
            );
        }
    }
    // bitnet.cpp's fork keeps f32 activations for F16 matmuls of two or more rows only: cut to
    // one row, the F16 output rounds them to f16, as the fork's one-row matmul does (this
    // model's output is F16).
    let spec = Spec::b158();
    let e = engine(spec, Numerics::new(Profile::BitnetCpp), 2);
    let full = prefill(&e, &TOKENS);
    let last = e.forward_last(&mut e.new_cache(), &TOKENS).unwrap();
    let want = &full[full.len() - spec.n_vocab..];
    assert!(
        last != want,
        "an F16 output under f32-batches should round one row"
    );
    let (cos, rel) = agreement(&last, &want.iter().map(|&v| v as f64).collect::<Vec<_>>());
    assert!(
        cos > 1.0 - 1e-6 && rel < 1e-2,
        "cos {cos}, rel max diff {rel}"
    );
    // Errors as `forward`'s.
    assert!(e.forward_last(&mut e.new_cache(), &[]).is_err());
    assert!(e
        .forward_last(&mut e.new_cache(), &[spec.n_vocab as u32])
        .is_err());
}

#[test]
fn decode_steps_equal_one_prefill() {
    for spec in specs() {
        for profile in Profile::ALL {
            for kv in [KvType::F32, KvType::F16] {
                let numerics = Numerics::new(profile)
                    .with_kv(kv)
                    .with_f16_activations(F16Activations::Round);
                let e = engine(spec, numerics, 2);
                let full = prefill(&e, &TOKENS);
                let mut cache = e.new_cache();
                let split = 4;
                let mut stepped = e
                    .forward(&mut cache, &TOKENS[..split], &TapFilter::none())
                    .unwrap()
                    .logits;
                for &t in &TOKENS[split..] {
                    stepped.extend(
                        e.forward(&mut cache, &[t], &TapFilter::none())
                            .unwrap()
                            .logits,
                    );
                }
                assert_eq!(cache.len(), TOKENS.len());
                assert!(
                    full == stepped,
                    "{} {} {profile} kv {kv:?}: decode differs from prefill",
                    spec.arch,
                    spec.proj
                );
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_thread_count() {
    for spec in [Spec::bitnet(GgmlType::TQ2_0), Spec::b158()] {
        for profile in Profile::ALL {
            let one = prefill(&engine(spec, Numerics::new(profile), 1), &TOKENS);
            for threads in [2, 8] {
                let many = prefill(&engine(spec, Numerics::new(profile), threads), &TOKENS);
                assert!(
                    one == many,
                    "{} {profile}: {threads} threads differ",
                    spec.proj
                );
            }
        }
    }
}

#[test]
fn tq1_0_and_tq2_0_of_the_same_weights_agree_bit_for_bit() {
    for profile in Profile::ALL {
        let a = prefill(
            &engine(Spec::bitnet(GgmlType::TQ2_0), Numerics::new(profile), 2),
            &TOKENS,
        );
        let b = prefill(
            &engine(Spec::bitnet(GgmlType::TQ1_0), Numerics::new(profile), 2),
            &TOKENS,
        );
        assert!(a == b, "{profile}: TQ1_0 and TQ2_0 differ");
    }
    // The F32 twin holds exactly the dequantized values: identical under the f32 profile.
    let a = prefill(
        &engine(
            Spec::bitnet(GgmlType::TQ2_0),
            Numerics::new(Profile::F32),
            2,
        ),
        &TOKENS,
    );
    let b = prefill(
        &engine(Spec::bitnet(GgmlType::F32), Numerics::new(Profile::F32), 2),
        &TOKENS,
    );
    assert!(a == b, "F32 twin differs from TQ2_0 under the f32 profile");
}

#[test]
fn taps_cover_every_name_in_graph_order_and_match_logits() {
    let spec = Spec::bitnet(GgmlType::TQ2_0);
    let e = engine(spec, Numerics::new(Profile::Ggml), 2);
    let mut cache = e.new_cache();
    let out = e.forward(&mut cache, &TOKENS, &TapFilter::all()).unwrap();
    let names: Vec<&str> = out.taps.iter().map(|t| t.name.as_str()).collect();
    let want = all_names(spec.n_layer);
    assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>());
    let logits = out.taps.iter().find(|t| t.name == "result_output").unwrap();
    assert_eq!(logits.shape, vec![spec.n_vocab, TOKENS.len()]);
    assert_eq!(logits.data, out.logits);
    let q = out.taps.iter().find(|t| t.name == "Qcur-1").unwrap();
    assert_eq!(q.shape, vec![64, 4, TOKENS.len()]);
    // A filter selects only what it names, and taps never change the numbers.
    let mut cache = e.new_cache();
    let some = e
        .forward(&mut cache, &TOKENS, &TapFilter::parse("l_out-*"))
        .unwrap();
    assert_eq!(some.taps.len(), spec.n_layer);
    assert_eq!(some.logits, out.logits);
    // I2_S models have no `.scale` tensors, so no `_s` taps.
    let e = engine(Spec::b158(), Numerics::new(Profile::BitnetCpp), 2);
    let mut cache = e.new_cache();
    let out = e
        .forward(&mut cache, &TOKENS[..2], &TapFilter::all())
        .unwrap();
    assert!(out.taps.iter().all(|t| !t.name.contains("_s-")));
}

#[test]
fn profiles_differ_where_they_should() {
    let spec = Spec::b158();
    let a = prefill(&engine(spec, Numerics::new(Profile::BitnetCpp), 2), &TOKENS);
    let b = prefill(&engine(spec, Numerics::new(Profile::Ggml), 2), &TOKENS);
    let c = prefill(&engine(spec, Numerics::new(Profile::F32), 2), &TOKENS);
    assert!(
        a != b && b != c && a != c,
        "profiles must not silently coincide"
    );
}

fn load_err(w: &common::Weights, skip: Option<&str>) -> Error {
    let f = GgufFile::from_bytes(common::gguf_bytes(w, skip), "bad.gguf").unwrap();
    match Model::load(std::sync::Arc::new(f), Default::default()) {
        Ok(_) => panic!("model with {skip:?} removed loaded"),
        Err(e) => e,
    }
}

/// The load error of the model with one metadata value replaced.
fn load_err_with(w: &common::Weights, key: &str, value: Value) -> String {
    let f = GgufFile::from_bytes(
        common::gguf_bytes_with(w, None, &[(key, value)]),
        "bad.gguf",
    )
    .unwrap();
    match Model::load(std::sync::Arc::new(f), Default::default()) {
        Ok(_) => panic!("model with {key} replaced loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_models_give_errors_naming_the_problem() {
    let w = weights(Spec::bitnet(GgmlType::TQ2_0));
    let e = load_err(&w, Some("blk.1.ffn_down.weight")).to_string();
    assert!(
        e.contains("missing tensor 'blk.1.ffn_down.weight'") && e.contains("bad.gguf"),
        "{e}"
    );
    let e = load_err(&w, Some("output_norm.weight")).to_string();
    assert!(e.contains("output_norm.weight"), "{e}");

    // Hyper-parameters that disagree with the tensors.
    let e = load_err_with(&w, "bitnet.attention.head_count_kv", Value::U32(4));
    assert!(
        e.contains("blk.0.attn_k.weight") && e.contains("shape"),
        "{e}"
    );
    let e = load_err_with(&w, "bitnet.attention.head_count", Value::U32(3));
    assert!(e.contains("not divisible by 3 heads"), "{e}");

    // A layer count no file could back (found by the `gguf_model` fuzz target, which saw the
    // loader reserve room for 2^37 layers): refused before anything is sized by it.
    let e = load_err_with(&w, "bitnet.block_count", Value::U32(u32::MAX));
    assert!(
        e.contains("bitnet.block_count") && e.contains("4294967295 layers need at least 11"),
        "{e}"
    );

    // Unknown architecture.
    let mut w3 = weights(Spec::bitnet(GgmlType::TQ2_0));
    w3.spec.arch = "llama";
    let f = GgufFile::from_bytes(common::gguf_bytes(&w3, None), "llama.gguf").unwrap();
    let e = Model::load(std::sync::Arc::new(f), Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("architecture 'llama' is not supported"), "{e}");
}

#[test]
fn bad_requests_are_errors() {
    let spec = Spec::bitnet(GgmlType::TQ2_0);
    let e = engine(spec, Numerics::new(Profile::Ggml), 1);
    let mut cache = e.new_cache();
    let err = e
        .forward(&mut cache, &[1, 5000], &TapFilter::none())
        .unwrap_err();
    assert!(err.to_string().contains("token id 5000"), "{err}");
    assert!(e.forward(&mut cache, &[], &TapFilter::none()).is_err());
    let long: Vec<u32> = (0..spec.n_ctx as u32 + 1).map(|i| i % 90).collect();
    let err = e
        .forward(&mut cache, &long, &TapFilter::none())
        .unwrap_err();
    assert!(err.to_string().contains("context full"), "{err}");
    // A cache of the wrong KV type is refused rather than silently converted.
    let other = engine(spec, Numerics::new(Profile::Ggml).with_kv(KvType::F16), 1);
    let mut f16_cache = other.new_cache();
    assert!(e.forward(&mut f16_cache, &[1], &TapFilter::none()).is_err());
}

#[test]
fn bitnet_25_is_the_same_architecture_as_bitnet_b1_58() {
    let mut old = Spec::b158();
    old.arch = "bitnet-25";
    for profile in Profile::ALL {
        let a = prefill(&engine(Spec::b158(), Numerics::new(profile), 2), &TOKENS);
        let b = prefill(&engine(old, Numerics::new(profile), 2), &TOKENS);
        assert!(a == b, "{profile}: bitnet-25 differs from bitnet-b1.58");
    }
    // And the activation really is ReLU^2: the SiLU override changes the numbers.
    let w = weights(Spec::b158());
    let bytes = common::gguf_bytes_with(
        &w,
        None,
        &[(
            "bitnet-b1.58.hidden_activation",
            Value::String("silu".into()),
        )],
    );
    let f = GgufFile::from_bytes(bytes, "silu.gguf").unwrap();
    let model = Model::load(std::sync::Arc::new(f), Default::default()).unwrap();
    let e = Engine::new(model, Numerics::new(Profile::F32), 2).unwrap();
    let silu = prefill(&e, &TOKENS);
    let relu2 = prefill(
        &engine(Spec::b158(), Numerics::new(Profile::F32), 2),
        &TOKENS,
    );
    assert!(silu != relu2);
}

#[test]
fn replaying_every_op_on_the_engines_own_inputs_reproduces_its_taps_exactly() {
    for spec in specs() {
        for profile in Profile::ALL {
            let e = engine(spec, Numerics::new(profile), 2);
            let mut cache = e.new_cache();
            let out = e.forward(&mut cache, &TOKENS, &TapFilter::all()).unwrap();
            let get = |name: &str| {
                out.taps
                    .iter()
                    .find(|t| t.name == name)
                    .map(|t| &t.data[..])
            };
            let inp = ReplayInputs {
                tokens: &TOKENS,
                start: 0,
                get: &get,
                history: None,
                rows: Rows::Batch,
            };
            for tap in &out.taps {
                let replayed = e
                    .replay(&tap.name, &inp)
                    .unwrap()
                    .unwrap_or_else(|| panic!("{} cannot be replayed", tap.name));
                assert!(
                    replayed == tap.data,
                    "{} {} {profile}: replay of {} differs",
                    spec.arch,
                    spec.proj,
                    tap.name
                );
            }
            // A missing input is not an error: there is nothing to replay.
            let none = |_: &str| None;
            let nothing = ReplayInputs { get: &none, ..inp };
            assert_eq!(e.replay("ffn_down-1", &nothing).unwrap(), None);
            assert_eq!(e.replay("not_a_tap-0", &inp).unwrap(), None);
        }
    }
}

/// The keys and values of `taps` (one evaluation) appended to a history.
fn push_history(h: &mut KvHistory, taps: &[xval_engine::taps::Tap], n_layer: usize) {
    h.k.resize(n_layer, Vec::new());
    h.v.resize(n_layer, Vec::new());
    for l in 0..n_layer {
        let get = |tag: &str| {
            taps.iter()
                .find(|t| t.name == format!("{tag}-{l}"))
                .unwrap()
                .data
                .clone()
        };
        h.k[l].extend(get("Kcur"));
        h.v[l].extend(get("Vcur"));
    }
}

#[test]
fn replaying_a_decode_step_over_the_key_value_history_reproduces_it_exactly() {
    for spec in specs() {
        for profile in Profile::ALL {
            let e = engine(spec, Numerics::new(profile), 2);
            let n_layer = e.model().hparams.n_layer;
            let mut cache = e.new_cache();
            let all = TapFilter::all();
            let pre = e.forward(&mut cache, &TOKENS[..5], &all).unwrap();
            let mut history = KvHistory::default();
            push_history(&mut history, &pre.taps, n_layer);
            for (i, &t) in TOKENS[5..].iter().enumerate() {
                let step = e.forward(&mut cache, &[t], &all).unwrap();
                let get = |name: &str| {
                    step.taps
                        .iter()
                        .find(|x| x.name == name)
                        .map(|x| &x.data[..])
                };
                let inp = ReplayInputs {
                    tokens: &[t],
                    start: 5 + i,
                    get: &get,
                    history: Some(&history),
                    rows: Rows::Batch,
                };
                for tap in &step.taps {
                    let r = e.replay(&tap.name, &inp).unwrap().unwrap();
                    assert!(
                        r == tap.data,
                        "{} {} {profile}: step {i}: replay of {} differs",
                        spec.arch,
                        spec.proj,
                        tap.name
                    );
                }
                // Without the history, attention after position 0 cannot be replayed.
                let bare = ReplayInputs {
                    history: None,
                    ..inp
                };
                assert_eq!(e.replay("kqv_out-0", &bare).unwrap(), None);
                push_history(&mut history, &step.taps, n_layer);
            }
        }
    }
}

/// The engines `forward_steps` is tested on: every test model under every profile, each with no
/// plan, the noise twin's plan (tie flips at the last prompt position, as the comparison's
/// twin) and the two decode-step faults, on the scalar and the detected kernel set.
fn step_engines(spec: Spec, profile: Profile, prompt: usize) -> Vec<(String, Engine)> {
    let base = engine(spec, Numerics::new(profile), 2);
    let plans = [
        ("no plan", Plan::default()),
        ("twin", Plan::twin(3, Some(prompt - 1))),
        (
            "kv-one-short",
            Plan::fault(Fault::bug(FaultKind::KvOneShort)),
        ),
        ("kv-stale", Plan::fault(Fault::bug(FaultKind::KvStale))),
    ];
    let mut out = Vec::new();
    for (what, plan) in plans {
        for kernel in [Kernel::Scalar, Kernel::detect()] {
            let e = base
                .with_plan(plan.clone())
                .unwrap()
                .on_kernel(kernel)
                .unwrap();
            out.push((
                format!("{} {} {profile} {what} {kernel}", spec.arch, spec.proj),
                e,
            ));
        }
    }
    out
}

fn i2s_and_specs() -> Vec<Spec> {
    let mut v = specs();
    v.push(Spec::bitnet(GgmlType::I2_S));
    v
}

/// Decode steps evaluated together (`forward_steps`, how the noise twin follows the oracle's
/// tokens) are the one-token forwards bit for bit: logits, every tap with its shape, and the
/// cache left behind; under every profile (an F16 output under f32-batches rounds one row as a
/// step does), both kernel sets, the twin's plan and the decode-step faults.
#[test]
fn forward_steps_equal_one_token_forwards_bit_for_bit() {
    let all = TapFilter::all();
    let (prompt, steps) = TOKENS.split_at(4);
    for spec in i2s_and_specs() {
        for profile in Profile::ALL {
            for (what, e) in step_engines(spec, profile, prompt.len()) {
                let mut one = e.new_cache();
                e.forward(&mut one, prompt, &all).unwrap();
                let want: Vec<Forward> = steps
                    .iter()
                    .map(|&t| e.forward(&mut one, &[t], &all).unwrap())
                    .collect();
                let mut together = e.new_cache();
                e.forward(&mut together, prompt, &all).unwrap();
                let got = e.forward_steps(&mut together, steps, &all).unwrap();
                assert_eq!(got.len(), want.len(), "{what}");
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(g.logits == w.logits, "{what}: step {i}: logits differ");
                    assert_eq!(g.n_tokens, 1, "{what}");
                    assert_eq!(g.taps.len(), w.taps.len(), "{what}");
                    for (a, b) in g.taps.iter().zip(&w.taps) {
                        assert_eq!((&a.name, &a.shape), (&b.name, &b.shape), "{what}");
                        assert!(a.data == b.data, "{what}: step {i}: {} differs", a.name);
                    }
                }
                let next = |c: &mut _| e.forward(c, &[9], &all).unwrap().logits;
                assert!(
                    next(&mut together) == next(&mut one),
                    "{what}: the cache left behind differs"
                );
            }
        }
    }
    // The decode faults act at steps only: steps from position 0 start with a prompt of one.
    let e = engine(Spec::b158(), Numerics::new(Profile::Ggml), 2)
        .with_plan(Plan::fault(Fault::bug(FaultKind::KvStale)))
        .unwrap();
    let mut c = e.new_cache();
    let got = e.forward_steps(&mut c, &TOKENS[..3], &all).unwrap();
    let mut c = e.new_cache();
    for (i, &t) in TOKENS[..3].iter().enumerate() {
        let w = e.forward(&mut c, &[t], &all).unwrap();
        assert!(got[i].logits == w.logits, "from position 0: step {i}");
    }
    // Errors as `forward`'s.
    assert!(e.forward_steps(&mut e.new_cache(), &[], &all).is_err());
}

/// Decode steps replayed together (`Rows::Steps`, one row's numerics, the prompt's history)
/// reproduce every step's taps, attention included, bit for bit (a replay recomputes the op,
/// without the twin's jitter: the engines without it).
#[test]
fn replaying_decode_steps_together_reproduces_each_step() {
    let all = TapFilter::all();
    let (prompt, steps) = TOKENS.split_at(4);
    for spec in i2s_and_specs() {
        for profile in Profile::ALL {
            let engines = step_engines(spec, profile, prompt.len());
            let jittered = |e: &Engine| e.plan().is_some_and(|p| p.jitter.is_some());
            for (what, e) in engines.into_iter().filter(|(_, e)| !jittered(e)) {
                let n_layer = e.model().hparams.n_layer;
                let mut cache = e.new_cache();
                let pre = e.forward(&mut cache, prompt, &all).unwrap();
                let mut history = KvHistory::default();
                push_history(&mut history, &pre.taps, n_layer);
                let outs: Vec<Forward> = steps
                    .iter()
                    .map(|&t| e.forward(&mut cache, &[t], &all).unwrap())
                    .collect();
                // Each tap's rows of every step, in order.
                let joined: Vec<(String, Vec<f32>)> = outs[0]
                    .taps
                    .iter()
                    .map(|t| {
                        let data = outs
                            .iter()
                            .flat_map(|o| {
                                o.taps
                                    .iter()
                                    .find(|x| x.name == t.name)
                                    .unwrap()
                                    .data
                                    .clone()
                            })
                            .collect();
                        (t.name.clone(), data)
                    })
                    .collect();
                let get = |name: &str| joined.iter().find(|(n, _)| n == name).map(|(_, d)| &d[..]);
                let inp = ReplayInputs {
                    tokens: steps,
                    start: prompt.len(),
                    get: &get,
                    history: Some(&history),
                    rows: Rows::Steps,
                };
                for (name, want) in &joined {
                    let r = e.replay(name, &inp).unwrap().unwrap();
                    assert!(&r == want, "{what}: replay of {name} differs");
                }
            }
        }
    }
}

#[test]
fn a_plan_changes_only_what_it_names() {
    let spec = Spec::bitnet(GgmlType::TQ2_0);
    let plain = engine(spec, Numerics::new(Profile::Ggml), 2);
    let all = TapFilter::all();
    let run = |e: &Engine| {
        let mut cache = e.new_cache();
        let mut out = vec![e.forward(&mut cache, &TOKENS[..5], &all).unwrap()];
        out.push(e.forward(&mut cache, &TOKENS[5..6], &all).unwrap());
        out
    };
    let base = run(&plain);
    let tap = |f: &xval_engine::model::Forward, name: &str| {
        f.taps.iter().find(|t| t.name == name).unwrap().data.clone()
    };
    // A 1% scale error in one projection: that tap scaled, everything before it untouched.
    let scaled = plain
        .with_plan(Plan::fault(Fault::ScaleTensor {
            tensor: "blk.1.attn_q.weight".into(),
            factor: 1.01,
        }))
        .unwrap();
    let s = run(&scaled);
    assert_eq!(tap(&s[0], "attn_norm-1"), tap(&base[0], "attn_norm-1"));
    assert_ne!(tap(&s[0], "Qcur-1"), tap(&base[0], "Qcur-1"));
    assert_eq!(tap(&s[0], "Kcur-1"), tap(&base[0], "Kcur-1"));
    // The KV fault acts in decode only: the prompt is identical, the step's attention is not.
    let short = plain
        .with_plan(Plan::fault(Fault::bug(FaultKind::KvOneShort)))
        .unwrap();
    let k = run(&short);
    assert_eq!(k[0].logits, base[0].logits);
    assert_eq!(tap(&k[1], "Qcur-0"), tap(&base[1], "Qcur-0"));
    assert_ne!(tap(&k[1], "kqv_out-0"), tap(&base[1], "kqv_out-0"));
    // The jitter twin moves every op by about one ulp: attn_norm-0 sees a jittered embedding
    // and is jittered itself, a few ulps in all: close, not equal.
    let twin = plain.with_plan(Plan::jitter(1)).unwrap();
    let t = run(&twin);
    let (a, b) = (tap(&t[0], "attn_norm-0"), tap(&base[0], "attn_norm-0"));
    assert_ne!(a, b);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= y.abs() * 1e-6, "{x} {y}");
    }
    // No plan, no change: an engine built again from the plain one's model is bit-identical.
    let again = run(&plain.with_plan(Plan::default()).unwrap());
    assert_eq!(again[1].logits, base[1].logits);
}
