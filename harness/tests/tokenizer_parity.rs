//! Tokenizer parity: our tokenizer (`xval_engine::tokenizer::Tokenizer`) against llama.cpp's
//! own (`llama_tokenize`, `llama_detokenize`, `llama_token_to_piece`, through the built-in
//! oracle in-process) on the LLaMA-3-vocabulary fixture built at test time, once with
//! `tokenizer.ggml.pre = llama-bpe` and once without the key (llama.cpp's `default`
//! pre-tokenizer, as in the official BitNet 2B-4T file). llama.cpp wins every disagreement.
//!
//! The corpus is the one `rust-engine/tests/tokenizer_llama3.rs` uses
//! (`fixtures/tokenizer/llama3/expected_ids.jsonl.gz`: many scripts, emoji and ZWJ sequences,
//! whitespace runs, digits, contractions, code, special-token text, the empty string), plus a
//! seeded generator that splices the corpus' characters, special-token texts and whitespace
//! runs into new strings. Each string is tokenized with `add_special`/`parse_special` both
//! true and both false; the ids are then detokenized with all four
//! (`remove_special`, `unparse_special`) combinations, and every token's piece
//! (`special` true and false) is compared over the whole vocabulary.
//!
//! ## Invalid UTF-8 (documented, not tested)
//! - Ours: `Tokenizer::encode` takes `&str`, so invalid UTF-8 cannot reach it; a caller holding
//!   bytes must decide (e.g. `String::from_utf8_lossy`, which replaces each *maximal invalid
//!   subpart* by one U+FFFD). Decoding returns bytes (`decode_bytes`, `detokenize`), so pieces
//!   of a multi-byte character split across tokens come out exactly; `decode` is lossy.
//! - llama.cpp: `llama_tokenize` takes raw bytes. Its pre-tokenizer decodes them with
//!   `unicode_cpts_from_utf8` (src/unicode.cpp), which catches `unicode_cpt_from_utf8`'s
//!   `invalid_argument`, advances **one byte** and pushes U+FFFD; the words are re-encoded from
//!   those code points, so each invalid byte becomes the three bytes EF BF BD before BPE. A
//!   truncated sequence such as `E2 82` therefore gives two U+FFFD in llama.cpp but one with
//!   `from_utf8_lossy`: to reproduce llama.cpp on bytes, replace per byte, not per subpart.
//!   Its decoder checks lead and continuation bits and length only: overlong forms (`C0 80`)
//!   and encoded surrogates (`ED A0 80`) decode to code points instead of U+FFFD, where Rust
//!   rejects them. (The words are rebuilt from code points in `unicode_regex_split`.)
//!   Its detokenizer writes the pieces' bytes as they are (no validation), like ours.
#![cfg(feature = "llama-cpp")]

mod common;

use std::io::Read;
use std::time::Instant;

use common::fixtures_dir;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use xval_cpp_sys::llama_cpp::LlamaCppOracle;
use xval_cpp_sys::{Oracle, OracleSettings};
use xval_engine::gguf::GgufFile;
use xval_engine::tokenizer::Tokenizer;
use xval_harness::fixtures::{self, WeightFormat};

/// Strings generated on top of the corpus (seeded, so every run checks the same ones).
const N_GENERATED: usize = 1000;
const SEED: u64 = 0x7061_7269_7479; // "parity"

/// The corpus strings of the committed LLaMA-3 tokenizer fixture.
fn corpus() -> Vec<String> {
    let path = fixtures_dir().join("tokenizer/llama3/expected_ids.jsonl.gz");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            v["text"].as_str().expect("text field").to_owned()
        })
        .collect()
}

/// New strings from pieces of the corpus: runs of its characters (any script), special-token
/// texts (whole and cut), whitespace runs, digit runs and contractions, glued in random order.
fn generated(corpus: &[String], n: usize) -> Vec<String> {
    let chars: Vec<char> = {
        let mut c: Vec<char> = corpus.iter().flat_map(|s| s.chars()).collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    const SPECIAL: [&str; 6] = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|eot_id|>",
        "<|start_header_id|>",
        "<|reserved_special_token_5|>",
        "<|eot_id",
    ];
    const SPACES: [&str; 8] = [" ", "  ", "   \n", "\n\n", "\t", " \t ", "\r\n", "\u{3000}"];
    const WORDS: [&str; 10] = [
        "'s",
        "'LL",
        "n't",
        "I'm",
        " they're",
        "fn main() {",
        "x+=1;",
        "==",
        "...",
        "🤗",
    ];
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(SEED);
    let mut pick = |k: usize| (rng.next_u64() % k as u64) as usize;
    (0..n)
        .map(|_| {
            let mut s = String::new();
            let parts = 1 + pick(8);
            for _ in 0..parts {
                match pick(6) {
                    0 => s.push_str(SPECIAL[pick(SPECIAL.len())]),
                    1 => s.push_str(SPACES[pick(SPACES.len())]),
                    2 => s.push_str(WORDS[pick(WORDS.len())]),
                    3 => {
                        for _ in 0..1 + pick(12) {
                            s.push(char::from(b'0' + pick(10) as u8));
                        }
                    }
                    4 => {
                        // a slice of a corpus string, on character boundaries
                        let src = &corpus[pick(corpus.len())];
                        let cs: Vec<char> = src.chars().collect();
                        if !cs.is_empty() {
                            let a = pick(cs.len());
                            let b = (a + 1 + pick(24)).min(cs.len());
                            s.extend(&cs[a..b]);
                        }
                    }
                    _ => {
                        for _ in 0..1 + pick(6) {
                            s.push(chars[pick(chars.len())]);
                        }
                    }
                }
            }
            s
        })
        .collect()
}

/// Mismatches of one kind, reported together so one run shows the pattern.
#[derive(Default)]
struct Tally {
    checked: usize,
    bad: Vec<String>,
}

impl Tally {
    fn check<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: impl FnOnce() -> String,
        ours: T,
        llama: T,
    ) {
        self.checked += 1;
        if ours != llama {
            self.bad
                .push(format!("{}\n   ours  {ours:?}\n   llama {llama:?}", what()));
        }
    }
}

fn parity(pre: Option<&str>, texts: &[String]) -> Vec<(String, Tally)> {
    let label = pre.unwrap_or("default (no tokenizer.ggml.pre)");
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("llama3-vocab.gguf");
    let start = Instant::now();
    fixtures::llama3_model(&fixtures_dir(), WeightFormat::Tq2_0, pre)
        .expect("build the LLaMA-3-vocabulary model")
        .write_file(&path)
        .expect("write it");
    let built = start.elapsed();

    let start = Instant::now();
    let file = GgufFile::open(&path).expect("our reader");
    let ours = Tokenizer::from_gguf(&file).expect("our tokenizer");
    let ours_loaded = start.elapsed();
    let start = Instant::now();
    // The 1-layer model is small; a short context keeps llama.cpp's buffers small too.
    let settings = OracleSettings {
        n_ctx: 64,
        ..OracleSettings::default()
    };
    let mut llama = LlamaCppOracle::load(&path, &settings).expect("llama.cpp loads the model");
    let llama_loaded = start.elapsed();
    assert_eq!(llama.model().n_vocab, ours.n_vocab());
    assert_eq!(ours.pre_tokenizer(), pre.unwrap_or("default"));

    let mut ids_t = Tally::default();
    let mut detok_t = Tally::default();
    let mut piece_t = Tally::default();
    let start = Instant::now();
    for text in texts {
        for (add, parse) in [(true, true), (false, false)] {
            let want = llama.tokenize(text, add, parse).expect("llama_tokenize");
            let got = ours.encode(text, add, parse).expect("our encode");
            ids_t.check(
                || format!("tokenize({text:?}, add_special {add}, parse_special {parse})"),
                &got,
                &want,
            );
            // Detokenize llama.cpp's ids, so both sides decode the same sequence.
            for (remove, unparse) in [(false, false), (false, true), (true, false), (true, true)] {
                let l = llama
                    .detokenize(&want, remove, unparse)
                    .expect("llama_detokenize");
                let o = ours
                    .detokenize(&want, remove, unparse)
                    .expect("our detokenize");
                detok_t.check(
                    || {
                        format!(
                            "detokenize(ids of {text:?} ({add}, {parse}), remove_special \
                             {remove}, unparse_special {unparse})"
                        )
                    },
                    &o,
                    &l,
                );
            }
        }
    }
    let strings = start.elapsed();
    let start = Instant::now();
    for id in 0..ours.n_vocab() as u32 {
        for special in [true, false] {
            let l = llama
                .token_piece(id, special)
                .expect("llama_token_to_piece");
            let o = ours.token_to_piece_with(id, special).expect("our piece");
            piece_t.check(
                || format!("token_to_piece({id}, special {special})"),
                &o,
                &l,
            );
        }
    }
    let pieces = start.elapsed();
    eprintln!(
        "[{label}] model built and written {:.2} s; our tokenizer loaded {:.2} s; llama.cpp \
         loaded {:.2} s; {} strings x 2 flag sets (tokenize + 4 detokenize each) {:.2} s; \
         {} tokens x 2 pieces {:.2} s",
        built.as_secs_f64(),
        ours_loaded.as_secs_f64(),
        llama_loaded.as_secs_f64(),
        texts.len(),
        strings.as_secs_f64(),
        ours.n_vocab(),
        pieces.as_secs_f64(),
    );
    vec![
        (format!("[{label}] tokenize"), ids_t),
        (format!("[{label}] detokenize"), detok_t),
        (format!("[{label}] token_to_piece"), piece_t),
    ]
}

#[test]
fn ours_and_llama_cpp_agree_on_ids_and_bytes() {
    let start = Instant::now();
    let mut texts = corpus();
    assert!(texts.iter().any(String::is_empty), "the empty string");
    let extra = generated(&texts, N_GENERATED);
    texts.extend(extra);
    assert!(texts.len() >= 2000, "only {} strings", texts.len());
    assert!(texts.iter().filter(|t| t.contains("<|eot_id|>")).count() >= 20);

    let mut report = Vec::new();
    for pre in [Some("llama-bpe"), None] {
        report.extend(parity(pre, &texts));
    }
    let mut failures = Vec::new();
    for (what, tally) in &report {
        eprintln!(
            "{what}: {} checked, {} differ",
            tally.checked,
            tally.bad.len()
        );
        if !tally.bad.is_empty() {
            failures.push(format!(
                "{what}: {} of {} differ, first ones:\n{}",
                tally.bad.len(),
                tally.checked,
                tally
                    .bad
                    .iter()
                    .take(6)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    eprintln!("total {:.2} s", start.elapsed().as_secs_f64());
    // Every comparison ran on at least 2000 strings per pre-tokenizer and flag set.
    for (what, tally) in &report {
        assert!(
            tally.checked >= 2 * 2000,
            "{what}: only {} checks",
            tally.checked
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
