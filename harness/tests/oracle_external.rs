//! The external oracle (`--oracle dir:PATH`): the built-in llama.cpp tree, assembled as a user's
//! tree would look (symlinks `include`, `ggml`, `build`), must give what the built-in oracle
//! gives, bit for bit: same tokens, logits, taps and graph, prompt and decode steps; through the
//! CLI too. Trees that are not usable builds say what is missing (exit code 3). And the shim
//! compiles in old-API mode against the bitnet.cpp-fork test headers.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use xval_cpp_sys::external::{self, Api};
#[cfg(feature = "llama-cpp")]
use xval_engine::sampling::argmax;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> String {
    repo()
        .join("fixtures/models")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn harness(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args(args).env_remove("BITNET_CPP_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn link(target: &Path, at: &Path) {
    std::os::unix::fs::symlink(target, at).unwrap();
}

/// The bitnet.cpp fork's API, from the hand-written test headers (see their PROVENANCE.md).
#[test]
fn the_shim_compiles_against_the_fork_api() {
    let root = repo().join("fixtures/external/bitnet-cpp-headers");
    let inc = [root.join("include"), root.join("ggml/include")];
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let api = Api::detect(
        &read(&inc[0].join("llama.h")),
        &read(&inc[1].join("ggml.h")),
        "",
        "",
    )
    .unwrap();
    assert_eq!(api.variant(), "bitnet.cpp fork (pre-vocab API)");
    assert_eq!(api.batch_get_one_args, Some(4));
    assert!(api.i2s && api.detokenize && !api.flash_attn_type);
    assert!(!api.threadpool, "the fork's thread pool is the racy one");
    external::shim_syntax_check(&inc, &api).unwrap();
    // Older trees without llama_detokenize: the shim's fallback from token pieces compiles.
    let no_detok = Api {
        detokenize: false,
        ..api.clone()
    };
    external::shim_syntax_check(&inc, &no_detok).unwrap();
    // The same headers with a current-API macro set must not compile: the check has teeth.
    let wrong = Api {
        vocab: true,
        init_from_model: true,
        ..api
    };
    assert!(external::shim_syntax_check(&inc, &wrong).is_err());
}

#[cfg(feature = "llama-cpp")]
mod builtin_tree {
    use super::*;

    use xval_cpp_sys::{llama_cpp, Evaluation, Oracle, OracleKind, OracleSettings};
    use xval_engine::taps::TapFilter;

    /// A temporary "user tree" of the built-in llama.cpp: sources and cmake build directory.
    pub fn user_tree() -> tempfile::TempDir {
        let (source, build) = llama_cpp::builtin_tree();
        assert!(
            source.join("include/llama.h").is_file(),
            "{}",
            source.display()
        );
        assert!(
            build.join("CMakeCache.txt").is_file(),
            "{}",
            build.display()
        );
        let d = tempfile::tempdir().unwrap();
        link(&source.join("include"), &d.path().join("include"));
        link(&source.join("ggml"), &d.path().join("ggml"));
        link(&build, &d.path().join("build"));
        d
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn same(a: &Evaluation, b: &Evaluation, what: &str) {
        assert_eq!(a.tokens, b.tokens, "{what}");
        assert_eq!(bits(&a.logits), bits(&b.logits), "{what}: logits");
        assert_eq!(a.tap_sources, b.tap_sources, "{what}: tap sources");
        assert_eq!(a.graph, b.graph, "{what}: graph inventory");
        assert_eq!(a.taps.len(), b.taps.len(), "{what}");
        for (x, y) in a.taps.iter().zip(&b.taps) {
            assert_eq!((&x.name, &x.shape), (&y.name, &y.shape), "{what}");
            assert_eq!(bits(&x.data), bits(&y.data), "{what}: tap {}", x.name);
        }
    }

    #[test]
    fn the_builtin_tree_as_an_external_one_is_bit_identical() {
        let tree = user_tree();
        let model = fixture("bitnet-tq2_0.gguf");
        let model = Path::new(&model);
        let settings = OracleSettings::default();
        let mut builtin = xval_cpp_sys::open_builtin(model, &settings).unwrap();
        let t0 = std::time::Instant::now();
        let kind = OracleKind::External {
            dir: tree.path().into(),
        };
        let mut ext = xval_cpp_sys::open(&kind, model, &settings).unwrap();
        eprintln!(
            "external oracle opened in {:.2} s",
            t0.elapsed().as_secs_f64()
        );

        let id = ext.identity();
        assert_eq!(id.kind, "external");
        assert!(
            id.version.starts_with("llama.cpp tree, llama.cpp "),
            "{}",
            id.version
        );
        assert_eq!(id.build.flags["xval.api"], "current");
        // The pinned tree's pool keeps graph and thread counts in one atomic: kept for the
        // context's life (the outputs below are still the built-in's bit for bit).
        assert_eq!(
            id.build.flags["xval.threadpool"],
            "one for the context (llama_attach_threadpool)"
        );
        assert_eq!(id.build.flags["xval.libraries"], "static");
        assert_eq!(id.build.flags["xval.detokenize"], "llama_detokenize");
        assert_eq!(id.build.flags["xval.llama_batch_get_one_args"], "2");
        assert_eq!(id.build.flags["BUILD_SHARED_LIBS"], "OFF");
        assert_eq!(id.build.build_type, "Release");
        assert!(id.build.source.contains(&tree.path().display().to_string()));
        assert_eq!(id.build.source_sha256.len(), 64);
        let bid = builtin.identity();
        assert_eq!(id.build.ggml_version, bid.build.ggml_version);
        assert_eq!(id.build.system_info, bid.build.system_info);
        // The same settings, but for the note saying why reference kernels are out of reach.
        let mut settings_seen = id.settings.clone();
        settings_seen.reference_kernels.note = bid.settings.reference_kernels.note.clone();
        assert_eq!(settings_seen, bid.settings);
        assert_eq!(ext.model(), builtin.model());

        for text in ["the cat sat on", "Hello, world! 123", ""] {
            assert_eq!(
                ext.tokenize(text, true, true).unwrap(),
                builtin.tokenize(text, true, true).unwrap(),
                "{text:?}"
            );
        }
        let prompt = builtin.tokenize("the cat sat on", true, true).unwrap();
        assert_eq!(
            ext.detokenize(&prompt, false, true).unwrap(),
            builtin.detokenize(&prompt, false, true).unwrap()
        );
        assert_eq!(
            ext.token_piece(prompt[1], false).unwrap(),
            builtin.token_piece(prompt[1], false).unwrap()
        );

        let all = TapFilter::parse("*");
        let a = ext.evaluate(&prompt, &all).unwrap();
        let b = builtin.evaluate(&prompt, &all).unwrap();
        assert!(!a.taps.is_empty());
        same(&a, &b, "prompt");
        let mut next = argmax(a.logits_row(prompt.len() - 1));
        for step in 0..3 {
            let a = ext.decode_step(next, &all).unwrap();
            let b = builtin.decode_step(next, &all).unwrap();
            same(&a, &b, &format!("decode step {step}"));
            next = argmax(a.logits_row(0));
        }
        // The last position the only output: the same bits, and the steps after it.
        let a = ext.evaluate_last(&prompt).unwrap();
        let b = builtin.evaluate_last(&prompt).unwrap();
        same(&a, &b, "prompt, last output only");
        assert_eq!(a.tokens, prompt[prompt.len() - 1..]);
        let a = ext.decode_step(next, &all).unwrap();
        let b = builtin.decode_step(next, &all).unwrap();
        same(&a, &b, "decode step after the last-only prompt");
        // A second prompt in the same oracle starts from a cleared cache.
        let again = ext.evaluate(&prompt, &all).unwrap();
        assert_eq!(
            bits(&again.logits),
            bits(&b_first_logits(&mut *builtin, &prompt))
        );
        // Requests are checked like the built-in's.
        assert!(ext.evaluate(&[], &all).unwrap_err().is_bad_input());
        assert!(ext.evaluate(&[1 << 30], &all).unwrap_err().is_bad_input());
    }

    fn b_first_logits(o: &mut dyn Oracle, prompt: &[u32]) -> Vec<f32> {
        o.evaluate(prompt, &TapFilter::parse("")).unwrap().logits
    }

    #[test]
    fn the_cli_runs_an_external_tree() {
        let tree = user_tree();
        let dir = format!("dir:{}", tree.path().display());
        let model = fixture("bitnet-tq2_0.gguf");
        let args = |oracle: &str| {
            harness(
                &[
                    "oracle",
                    &model,
                    "--prompt",
                    "the cat sat on",
                    "--taps",
                    "l_out-*,result_norm",
                    "--json",
                    "--oracle",
                    oracle,
                ],
                &[],
            )
        };
        let ext = args(&dir);
        assert_eq!(ext.status.code(), Some(0), "{}", text(&ext.stderr));
        let ext: serde_json::Value = serde_json::from_slice(&ext.stdout).unwrap();
        let builtin = args("builtin");
        let builtin: serde_json::Value = serde_json::from_slice(&builtin.stdout).unwrap();
        assert_eq!(ext["oracle"]["kind"], "external");
        assert_eq!(ext["tokens"], builtin["tokens"]);
        assert_eq!(ext["logits_last"], builtin["logits_last"]);
        assert_eq!(ext["taps"], builtin["taps"]);

        // The table form, with the tree named by $BITNET_CPP_DIR.
        let o = harness(
            &["oracle", &model, "--tokens", "1,2,3", "--oracle", "dir"],
            &[("BITNET_CPP_DIR", tree.path())],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert!(text(&o.stdout).contains("oracle    external (llama.cpp tree"));

        let out = tree.path().join("r.json");
        let o = harness(
            &[
                "compare",
                &model,
                "--oracle",
                &dir,
                "--steps",
                "2",
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}\n{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(r["oracle"]["kind"], "external");
        assert_eq!(r["oracle"]["build"]["flags"]["xval.api"], "current");
    }

    #[test]
    fn a_missing_compiler_is_named() {
        let tree = user_tree();
        let cache = tempfile::tempdir().unwrap();
        let o = harness(
            &[
                "oracle",
                &fixture("bitnet-tq2_0.gguf"),
                "--tokens",
                "1",
                "--oracle",
                &format!("dir:{}", tree.path().display()),
            ],
            &[
                ("CC", Path::new("/nonexistent")),
                ("XDG_CACHE_HOME", cache.path()),
            ],
        );
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{err}");
        assert!(
            err.contains("cannot run the C compiler '/nonexistent'"),
            "{err}"
        );
    }
}

/// Trees that are not usable builds: exit code 3 and what is missing.
#[test]
fn unusable_trees_say_what_is_missing() {
    let run = |dir: &Path| {
        let o = harness(
            &[
                "oracle",
                &fixture("bitnet-tq2_0.gguf"),
                "--tokens",
                "1",
                "--oracle",
                &format!("dir:{}", dir.display()),
            ],
            &[],
        );
        (o.status.code(), text(&o.stderr))
    };
    let headers = repo().join("fixtures/external/bitnet-cpp-headers");

    let empty = tempfile::tempdir().unwrap();
    let (code, err) = run(empty.path());
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("no llama.h") && err.contains("include/llama.h"),
        "{err}"
    );

    // Headers, no build.
    let no_build = tempfile::tempdir().unwrap();
    link(&headers.join("include"), &no_build.path().join("include"));
    link(&headers.join("ggml"), &no_build.path().join("ggml"));
    let (code, err) = run(no_build.path());
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("no build directory") && err.contains("cmake -B build"),
        "{err}"
    );

    // A build directory without libraries.
    std::fs::create_dir(no_build.path().join("build")).unwrap();
    let (code, err) = run(no_build.path());
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("no libllama.so, libllama.dylib or libllama.a"),
        "{err}"
    );

    // A build, no headers.
    let no_headers = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(no_headers.path().join("build/src")).unwrap();
    std::fs::write(no_headers.path().join("build/src/libllama.a"), b"").unwrap();
    let (code, err) = run(no_headers.path());
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("no llama.h"), "{err}");
}
