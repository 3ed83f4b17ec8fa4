//! `tokenizer`: arbitrary text (any bytes, read as UTF-8 with replacement) through the LLaMA-3
//! tokenizer and the fixtures' small one, and arbitrary token ids through decoding.

use std::io::Read;
use std::sync::OnceLock;

use xval_engine::gguf::{GgufFile, GgufWriter};
use xval_engine::tokenizer::{Tokenizer, TokenizerParts};
use xval_harness::fixtures::vocab::Vocab;

/// The committed LLaMA-3 `tokenizer.json` (the 2B-4T file's vocabulary and pre-tokenizer).
fn llama3() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/tokenizer/llama3/tokenizer.json.gz"
        );
        let gz = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut json = String::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut json)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let parts = TokenizerParts::from_hf_tokenizer_json(&json).expect("the committed tokenizer");
        Tokenizer::from_parts(parts).expect("the committed tokenizer")
    })
}

/// The fixtures' 384-token vocabulary, read back from GGUF metadata as `harness run` reads it.
fn small() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let mut w = GgufWriter::new();
        Vocab::small()
            .write_metadata(&mut w, Some("llama-bpe"))
            .expect("the fixtures' vocabulary");
        let file = GgufFile::from_bytes(w.to_bytes(), "small").expect("the fixtures' vocabulary");
        Tokenizer::from_gguf(&file).expect("the fixtures' vocabulary")
    })
}

/// One `tokenizer` input. The first byte chooses: bit 0 the tokenizer (LLaMA-3 or small),
/// bit 1 `add_special`, bit 2 `parse_special`, bit 3 text or ids, bit 4 (ids) whether to fold
/// ids into the vocabulary. Text: every id must be in range, the pre-tokenizer's pieces must
/// cover the text exactly, and without special handling decoding must give back the text byte
/// for byte (byte-level BPE is lossless). Ids: decoding and detokenizing must fail cleanly on
/// an id out of range. Returns the number of tokens produced or decoded.
pub fn check_tokenizer(data: &[u8]) -> Option<usize> {
    let (&mode, rest) = data.split_first()?;
    let tok = if mode & 1 == 0 { llama3() } else { small() };
    let (add_special, parse_special) = (mode & 2 != 0, mode & 4 != 0);
    let n_vocab = tok.n_vocab();
    if mode & 8 == 0 {
        let text = String::from_utf8_lossy(rest);
        assert_eq!(tok.pre_tokenize(&text).concat(), text);
        let ids = tok.encode(&text, add_special, parse_special).ok()?;
        assert!(ids.iter().all(|&id| (id as usize) < n_vocab), "{ids:?}");
        let bytes = tok
            .decode_bytes(&ids)
            .expect("ids the tokenizer produced decode");
        if !add_special && !parse_special {
            assert_eq!(bytes, text.as_bytes(), "round trip of {text:?} via {ids:?}");
        }
        let _ = tok.detokenize(&ids, true, parse_special);
        Some(ids.len())
    } else {
        let ids: Vec<u32> = rest
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .map(|id| {
                if mode & 16 != 0 {
                    id % (n_vocab as u32 + 2)
                } else {
                    id
                }
            })
            .collect();
        let in_range = ids.iter().all(|&id| (id as usize) < n_vocab);
        let decoded = tok.decode_bytes_with(&ids, parse_special);
        assert_eq!(decoded.is_ok(), in_range, "{ids:?}");
        let detok = tok.detokenize(&ids, add_special, parse_special);
        assert_eq!(detok.is_ok(), in_range, "{ids:?}");
        for &id in ids.iter().take(64) {
            assert_eq!(tok.token_to_piece(id).is_ok(), (id as usize) < n_vocab);
        }
        in_range.then_some(ids.len())
    }
}

/// Texts that reach each branch of the LLaMA-3 pre-tokenizer (contractions, letters, digit
/// runs, punctuation, newlines, whitespace runs), special-token texts, scripts outside Latin,
/// invalid UTF-8, and id lists at the vocabulary's edges.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let texts: [&[u8]; 10] = [
        b"Hello world, it's 2026!",
        b"I'm sure they'd've done it; don't you THINK'S?",
        b"  leading and   trailing spaces \t\n\n  \r\n",
        b"12345678901 3.14159 1,000,000",
        b"<|begin_of_text|>system<|end_of_text|><|eot_id|>",
        "na\u{ef}ve caf\u{e9} \u{4f60}\u{597d}\u{4e16}\u{754c} \u{1f600}\u{1f44d}\u{1f3fd} \u{0645}\u{0631}\u{062d}\u{0628}\u{0627}".as_bytes(),
        b"fn main() { println!(\"{}\", x?.y::<T>()); }",
        b"\xff\xfe invalid \xc3\x28 bytes \xe2\x82 \xf0\x9f\x98",
        b"\x00\x01\x1b[31m control \x7f",
        "\u{a0}\u{2003}\u{3000}\u{200b}\u{feff}".as_bytes(),
    ];
    let mut seeds = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        for mode in [0u8, 1, 6, 7] {
            let mut d = vec![mode];
            d.extend_from_slice(t);
            seeds.push((format!("text-{i}-mode{mode}"), d));
        }
    }
    let id_lists: [&[u32]; 4] = [
        &[128000, 9906, 1917, 128001],
        &[0, 1, 255, 256, 383, 384],
        &[128255, 128256, u32::MAX],
        &[13, 220, 198, 271, 128009],
    ];
    for (i, ids) in id_lists.iter().enumerate() {
        for mode in [8u8, 9, 14, 24, 25] {
            let mut d = vec![mode];
            d.extend(ids.iter().flat_map(|id| id.to_le_bytes()));
            seeds.push((format!("ids-{i}-mode{mode}"), d));
        }
    }
    seeds
}
