//! The tokenizer on small hand-made vocabularies: each test pins one llama.cpp behaviour
//! (merge order, byte fallback, ignore_merges, special-token partitioning and its strip rules,
//! attribute fix-ups by text, piece rendering, detokenize clean-up, defaults) and the errors
//! for malformed GGUF tokenizer metadata.

use proptest::prelude::*;
use xval_engine::gguf::{GgufFile, GgufWriter, Value};
use xval_engine::tokenizer::{SpecialToken, TokenAttr, Tokenizer, TokenizerParts};
use xval_engine::Error;

/// GPT-2's bytes_to_unicode, written out independently of the engine's table.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// Ids 0..256 are the byte-level characters of bytes 0..256; extra tokens follow in order.
const EXTRA: [(&str, i32); 19] = [
    ("he", NORMAL),        // 256
    ("ll", NORMAL),        // 257
    ("llo", NORMAL),       // 258
    ("hello", NORMAL),     // 259
    ("Ġw", NORMAL),        // 260
    ("or", NORMAL),        // 261
    ("Ġwor", NORMAL),      // 262
    ("ld", NORMAL),        // 263
    ("Ġworld", NORMAL),    // 264
    ("<s>", CONTROL),      // 265
    ("</s>", CONTROL),     // 266
    ("<|user|>", USER),    // 267
    ("<0x41>", BYTE),      // 268
    ("[unused0]", UNUSED), // 269
    ("undefined", 0),      // 270
    ("abc", NORMAL),       // 271
    ("€uro", NORMAL),      // 272
    ("s>", USER),          // 273
    ("<unk>", UNKNOWN),    // 274
];
const HELLO: u32 = 259;
const SP_WORLD: u32 = 264;
const S: u32 = 265;
const END_S: u32 = 266;
const USER_TOK: u32 = 267;
const S_GT: u32 = 273;

const MERGES: [&str; 11] = [
    "h e", "l l", "ll o", "he llo", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "x y", "a b",
];

fn parts(pre: Option<&str>) -> TokenizerParts {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut types = vec![NORMAL; 256];
    for (text, ty) in EXTRA {
        tokens.push(text.to_string());
        types.push(ty);
    }
    TokenizerParts {
        tokens,
        token_types: Some(types),
        merges: MERGES.iter().map(|m| m.to_string()).collect(),
        special_ids: vec![(SpecialToken::Bos, S), (SpecialToken::Eos, END_S)],
        pre: pre.map(str::to_owned),
        ..TokenizerParts::default()
    }
}

fn tok(pre: Option<&str>) -> Tokenizer {
    Tokenizer::from_parts(parts(pre)).unwrap()
}

fn ids_of(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

#[test]
fn merges_apply_by_rank() {
    let t = tok(None);
    assert_eq!(
        t.encode("hello world", false, false).unwrap(),
        [HELLO, SP_WORLD]
    );
    assert_eq!(
        t.encode("hel", false, false).unwrap(),
        [256, u32::from(b'l')]
    );
}

#[test]
fn pieces_missing_from_the_vocab_fall_back_to_ascii_bytes_only() {
    // "x y" merges into "xy", which is not a token: its bytes are looked up one by one.
    let t = tok(None);
    assert_eq!(t.encode("xy", false, false).unwrap(), ids_of("xy"));
    // A merged piece of non-ASCII byte characters has no one-byte tokens: llama.cpp drops it.
    let mut p = parts(None);
    p.merges.push("Ã ©".into()); // "é" is C3 A9, byte-level "Ã©"
    let t = Tokenizer::from_parts(p).unwrap();
    assert_eq!(t.encode("é", false, false).unwrap(), Vec::<u32>::new());
    assert_eq!(t.encode("aé", false, false).unwrap(), [u32::from(b'a')]);
    // The harness's form refuses what llama.cpp drops, naming the bytes.
    let e = t
        .encode_complete("aé", false, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("byte 0xC3 in \"é\"") && e.contains("2 such piece(s)"),
        "{e}"
    );
    assert_eq!(
        t.encode_complete("ab", true, false).unwrap(),
        t.encode("ab", true, false).unwrap()
    );
    // without that merge, each byte is its own token
    assert_eq!(tok(None).encode("é", false, false).unwrap(), [0xC3, 0xA9]);
}

#[test]
fn llama3_pre_looks_whole_words_up_first() {
    // "abc" is a token but no merge chain builds it; "a b" builds "ab", which is no token.
    assert_eq!(
        tok(None).encode("abc", false, false).unwrap(),
        ids_of("abc")
    );
    assert_eq!(
        tok(Some("llama-bpe")).encode("abc", false, false).unwrap(),
        [271]
    );
    assert_eq!(
        tok(Some("llama3")).encode("abc", false, false).unwrap(),
        [271]
    );
}

#[test]
fn special_tokens_partition_longest_first() {
    let t = tok(None);
    assert_eq!(
        t.encode("<s>hello</s>", false, true).unwrap(),
        [S, HELLO, END_S]
    );
    // control tokens are text without parse_special, but the user-defined "s>" is still cut
    // out (after the longer control tokens were skipped)
    assert_eq!(
        t.encode("<s>hello</s>", false, false).unwrap(),
        [
            u32::from(b'<'),
            S_GT,
            HELLO,
            u32::from(b'<'),
            u32::from(b'/'),
            S_GT
        ]
    );
    assert_eq!(
        t.encode("a<|user|>b", false, false).unwrap(),
        [u32::from(b'a'), USER_TOK, u32::from(b'b')]
    );
    // unknown-type tokens are parsed like control tokens
    assert_eq!(t.encode("<unk>", false, true).unwrap(), [274]);
    assert_eq!(t.encode("<s><s>", false, true).unwrap(), [S, S]);
}

#[test]
fn add_special_prepends_bos_only_when_the_vocab_adds_it() {
    let t = tok(None);
    assert!(!t.add_bos());
    assert_eq!(t.encode("hello", true, false).unwrap(), [HELLO]);
    let t = Tokenizer::from_parts(TokenizerParts {
        add_bos: Some(true),
        add_eos: Some(true),
        ..parts(None)
    })
    .unwrap();
    assert_eq!(t.encode("hello", true, false).unwrap(), [S, HELLO, END_S]);
    assert_eq!(t.encode("", true, false).unwrap(), [S, END_S]);
    assert_eq!(t.encode("hello", false, false).unwrap(), [HELLO]);
    let t = tok(Some("llama-bpe"));
    assert!(t.add_bos());
    let t = Tokenizer::from_parts(TokenizerParts {
        add_bos: Some(false),
        ..parts(Some("llama-bpe"))
    })
    .unwrap();
    assert!(!t.add_bos());
}

#[test]
fn special_id_defaults_and_range_checks() {
    // no bos/eos keys: llama.cpp's gpt2 default is id 11 for both
    let t = Tokenizer::from_parts(TokenizerParts {
        special_ids: vec![],
        ..parts(None)
    })
    .unwrap();
    assert_eq!((t.bos(), t.eos()), (Some(11), Some(11)));
    // an id past the vocabulary is ignored with a warning; the default stays
    let t = Tokenizer::from_parts(TokenizerParts {
        special_ids: vec![(SpecialToken::Bos, 999_999)],
        ..parts(None)
    })
    .unwrap();
    assert_eq!(t.bos(), Some(11));
    assert!(
        t.warnings().iter().any(|w| w.contains("999999")),
        "{:?}",
        t.warnings()
    );
    // later keys for one role win (the deprecated FIM keys are read after the current ones)
    let t = Tokenizer::from_parts(TokenizerParts {
        special_ids: vec![(SpecialToken::FimPre, 5), (SpecialToken::FimPre, 7)],
        ..parts(None)
    })
    .unwrap();
    assert_eq!(t.special(SpecialToken::FimPre), Some(7));
    // a vocabulary too small for the default has no BOS, and adding one is an error
    let t = Tokenizer::from_parts(TokenizerParts {
        tokens: vec!["a".into(), "b".into()],
        add_bos: Some(true),
        ..TokenizerParts::default()
    })
    .unwrap();
    assert_eq!(t.bos(), None);
    let err = t.encode("ab", true, false).unwrap_err().to_string();
    assert!(err.contains("Bos"), "{err}");
    assert_eq!(t.encode("ab", false, false).unwrap(), [0, 1]);
}

#[test]
fn attributes_are_fixed_up_by_text() {
    let mut p = parts(None);
    p.tokens.push("<|eot_id|>".into()); // 275, typed NORMAL by mistake
    p.token_types.as_mut().unwrap().push(NORMAL);
    p.tokens.push("<|reserved_unused_3|>".into()); // 276
    p.token_types.as_mut().unwrap().push(CONTROL);
    p.tokens.push("<|channel|>".into()); // 277: gpt-oss, always rendered
    p.token_types.as_mut().unwrap().push(CONTROL);
    let t = Tokenizer::from_parts(p).unwrap();
    assert_eq!(t.eot(), Some(275));
    assert!(t.token_attr(275).unwrap().is_control());
    assert!(t.is_eog(275) && t.is_eog(END_S));
    assert!(t.warnings().iter().any(|w| w.contains("control-looking")));
    assert_eq!(
        t.encode("a<|eot_id|>", false, true).unwrap(),
        [u32::from(b'a'), 275]
    );
    let unused = t.token_attr(276).unwrap();
    assert!(unused.is_control() && unused.intersects(TokenAttr::UNUSED));
    assert_eq!(t.token_attr(277).unwrap(), TokenAttr::USER_DEFINED);
    assert_eq!(t.encode("<|channel|>", false, false).unwrap(), [277]);
    assert_eq!(t.token_to_piece_with(277, false).unwrap(), b"<|channel|>");
}

#[test]
fn phi3_models_strip_whitespace_after_special_tokens() {
    let mut p = parts(None);
    p.tokens.push("<|endoftext|>".into()); // 275
    p.token_types.as_mut().unwrap().push(CONTROL);
    let strict = p.clone();
    p.model_name = Some("Phi-3-mini".into());
    let t = Tokenizer::from_parts(p).unwrap();
    // "</s>" and the other special tokens get RSTRIP, "<s>", "<unk>", "<|endoftext|>" do not
    assert_eq!(
        t.encode("</s>  hello", false, true).unwrap(),
        [END_S, HELLO]
    );
    // "  hello" keeps its spaces after "<s>": " " and "Ġhello" (see the default split)
    let space = u32::from(b' ');
    assert_eq!(
        t.encode("<s>  hello", false, true).unwrap(),
        [S, space, space, HELLO]
    );
    assert_eq!(
        t.encode("<|user|>\t\nhello", false, false).unwrap(),
        [USER_TOK, HELLO]
    );
    // llama.cpp requires "</s>" etc. to exist for such a model
    let mut missing = strict;
    missing.tokens[END_S as usize] = "<\\s>".into();
    missing.model_name = Some("phi3".into());
    let err = Tokenizer::from_parts(missing).unwrap_err().to_string();
    assert!(err.contains("</s>"), "{err}");
}

#[test]
fn mask_tokens_of_some_architectures_strip_whitespace_before() {
    let mut p = parts(None);
    p.tokens.push("<mask>".into()); // 275
    p.token_types.as_mut().unwrap().push(USER);
    let plain = Tokenizer::from_parts(p.clone()).unwrap();
    p.architecture = Some("jina-bert-v3".into());
    let t = Tokenizer::from_parts(p).unwrap();
    assert_eq!(
        t.encode("a \t<mask>", false, false).unwrap(),
        [u32::from(b'a'), 275]
    );
    let (a, space, tab) = (u32::from(b'a'), u32::from(b' '), u32::from(b'\t'));
    assert_eq!(
        plain.encode("a \t<mask>", false, false).unwrap(),
        [a, space, tab, 275]
    );
}

#[test]
fn pieces_render_like_llama_cpp() {
    let t = tok(None);
    assert_eq!(t.token_to_piece(SP_WORLD).unwrap(), b" world");
    assert_eq!(t.token_to_piece(S).unwrap(), b"<s>");
    assert_eq!(t.token_to_piece_with(S, false).unwrap(), b"");
    assert_eq!(t.token_to_piece_with(274, false).unwrap(), b""); // unknown
    assert_eq!(t.token_to_piece_with(USER_TOK, false).unwrap(), b"<|user|>");
    assert_eq!(t.token_to_piece(268).unwrap(), b"A"); // byte token <0x41>
    assert_eq!(t.token_to_piece(269).unwrap(), b""); // unused
    assert_eq!(t.token_to_piece(270).unwrap(), b""); // undefined type
    assert_eq!(
        t.token_to_piece(272).unwrap(),
        "[UNK_BYTE_0xe282ac€uro]uro".as_bytes()
    );
    for b in 0..=255u8 {
        assert_eq!(t.token_to_piece(u32::from(b)).unwrap(), [b]);
    }
    let err = t.token_to_piece(275).unwrap_err().to_string();
    assert!(err.contains("275") && err.contains("275 tokens"), "{err}");
    assert!(t.decode(&[HELLO, 1000]).is_err());
    assert_eq!(t.decode(&[HELLO, SP_WORLD]).unwrap(), "hello world");
    assert_eq!(t.decode(&[0xC3]).unwrap(), "\u{FFFD}");
    assert_eq!(t.decode_bytes(&[0xC3]).unwrap(), [0xC3]);
    assert_eq!(t.token_text(SP_WORLD).unwrap(), "Ġworld");
    assert_eq!(t.text_to_token("Ġworld"), Some(SP_WORLD));
}

#[test]
fn detokenize_cleans_spaces_and_strips_like_llama_cpp() {
    let t = Tokenizer::from_parts(TokenizerParts {
        add_bos: Some(true),
        add_space_prefix: Some(true),
        ..parts(None)
    })
    .unwrap();
    let ids = t.encode("hello world !", true, false).unwrap();
    assert_eq!(ids[0], S);
    // BOS removed; it being there keeps the leading space of the next piece
    assert_eq!(t.detokenize(&ids, true, false).unwrap(), b"hello world!");
    assert_eq!(t.detokenize(&ids, false, true).unwrap(), b"<s>hello world!");
    // without BOS the first piece loses one leading space (add_space_prefix)
    assert_eq!(t.detokenize(&[SP_WORLD], true, false).unwrap(), b"world");
    assert_eq!(t.detokenize(&[], true, false).unwrap(), b"");
}

#[test]
fn empty_and_duplicate_tokens() {
    let mut p = parts(None);
    p.tokens.push(String::new()); // 275
    p.token_types.as_mut().unwrap().push(NORMAL);
    let t = Tokenizer::from_parts(p.clone()).unwrap();
    assert_eq!(t.token_text(275).unwrap(), "[EMPTY_275]");
    assert!(t.warnings().iter().any(|w| w.contains("275")));
    p.tokens[275] = "hello".into();
    let err = Tokenizer::from_parts(p).unwrap_err().to_string();
    assert!(
        err.contains("\"hello\"") && err.contains("259") && err.contains("275"),
        "{err}"
    );
    let err = Tokenizer::from_parts(TokenizerParts::default()).unwrap_err();
    assert!(matches!(err, Error::Tokenizer(_)));
}

#[test]
fn unknown_pre_tokenizer_is_named() {
    let err = Tokenizer::from_parts(parts(Some("qwen2")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("'qwen2'") && err.contains("llama-bpe") && err.contains("default"));
    // an empty name means default, like an absent one
    assert_eq!(tok(Some("")).pre_tokenizer(), "default");
    assert_eq!(tok(Some("default")).pre_tokenizer(), "default");
    assert_eq!(tok(Some("llama3")).pre_tokenizer(), "llama3");
}

// ---- GGUF metadata ----

fn gguf_with(edit: impl FnOnce(&mut GgufWriter)) -> GgufFile {
    let mut w = GgufWriter::new();
    parts(Some("llama-bpe"))
        .write_gguf_metadata(&mut w)
        .unwrap();
    edit(&mut w);
    GgufFile::from_bytes(w.to_bytes(), "tiny.gguf").unwrap()
}

fn gguf_error(edit: impl FnOnce(&mut GgufWriter)) -> String {
    Tokenizer::from_gguf(&gguf_with(edit))
        .unwrap_err()
        .to_string()
}

#[test]
fn gguf_reads_what_the_parts_wrote() {
    let t = Tokenizer::from_gguf(&gguf_with(|_| {})).unwrap();
    let want = tok(Some("llama-bpe"));
    assert_eq!(t.n_vocab(), want.n_vocab());
    assert_eq!(t.pre_tokenizer(), "llama-bpe");
    assert_eq!((t.bos(), t.eos()), (Some(S), Some(END_S)));
    for text in ["hello world", "<s>abc</s>", "xy é 12345"] {
        assert_eq!(
            t.encode(text, true, true).unwrap(),
            want.encode(text, true, true).unwrap()
        );
    }
    // the deprecated FIM key is read after the current one
    let t = Tokenizer::from_gguf(&gguf_with(|w| {
        w.set("tokenizer.ggml.fim_pre_token_id", Value::U32(5))
            .unwrap();
        w.set("tokenizer.ggml.prefix_token_id", Value::U32(6))
            .unwrap();
    }))
    .unwrap();
    assert_eq!(t.special(SpecialToken::FimPre), Some(6));
}

#[test]
fn gguf_errors_name_the_problem() {
    let err = gguf_error(|w| {
        w.set("tokenizer.ggml.model", Value::String("llama".into()))
            .unwrap();
    });
    assert!(
        err.contains("tiny.gguf") && err.contains("'llama'") && err.contains("gpt2"),
        "{err}"
    );

    let err = gguf_error(|w| {
        w.set("tokenizer.ggml.pre", Value::String("deepseek-llm".into()))
            .unwrap();
    });
    assert!(
        err.contains("tiny.gguf") && err.contains("'deepseek-llm'"),
        "{err}"
    );

    let err = gguf_error(|w| {
        w.set("tokenizer.ggml.bos_token_id", Value::I32(1)).unwrap();
    });
    assert!(
        err.contains("tokenizer.ggml.bos_token_id") && err.contains("u32"),
        "{err}"
    );

    let err = gguf_error(|w| {
        w.set("tokenizer.ggml.add_bos_token", Value::U8(1)).unwrap();
    });
    assert!(
        err.contains("tokenizer.ggml.add_bos_token") && err.contains("bool"),
        "{err}"
    );

    let err = gguf_error(|w| {
        w.set("tokenizer.ggml.token_type", Value::i32s([1, 1]))
            .unwrap();
    });
    assert!(
        err.contains("token_type") && err.contains("2 entries"),
        "{err}"
    );

    let err = gguf_error(|w| {
        w.set("tokenizer.ggml.token_type", Value::f32s([1.0; 300]))
            .unwrap();
    });
    assert!(err.contains("token_type") && err.contains("i32"), "{err}");

    let err = gguf_error(|w| {
        w.set("tokenizer.ggml.scores", Value::strings(["x"]))
            .unwrap();
    });
    assert!(err.contains("tokenizer.ggml.scores"), "{err}");

    let err = gguf_error(|w| {
        w.set("tokenizer.ggml.tokens", Value::i32s([1, 2])).unwrap();
    });
    assert!(
        err.contains("tokenizer.ggml.tokens") && err.contains("array of strings"),
        "{err}"
    );

    let mut w = GgufWriter::new();
    w.set("tokenizer.ggml.model", Value::String("gpt2".into()))
        .unwrap();
    w.set("tokenizer.ggml.tokens", Value::strings(["a", "b"]))
        .unwrap();
    let file = GgufFile::from_bytes(w.to_bytes(), "nomerges.gguf").unwrap();
    let err = Tokenizer::from_gguf(&file).unwrap_err().to_string();
    assert!(
        err.contains("nomerges.gguf") && err.contains("tokenizer.ggml.merges"),
        "{err}"
    );

    let file = GgufFile::from_bytes(GgufWriter::new().to_bytes(), "empty.gguf").unwrap();
    let err = Tokenizer::from_gguf(&file).unwrap_err().to_string();
    assert!(
        err.contains("empty.gguf") && err.contains("tokenizer.ggml.model"),
        "{err}"
    );

    // a byte token too short for "<0xXX>" makes llama.cpp's load throw
    let err = gguf_error(|w| {
        let mut types = vec![NORMAL; 256 + EXTRA.len()];
        types[u32::from(b'a') as usize] = BYTE;
        w.set("tokenizer.ggml.token_type", Value::i32s(types))
            .unwrap();
    });
    assert!(err.contains("byte token 97"), "{err}");

    // a scores array of the right kind is accepted (and unused)
    let n = 256 + EXTRA.len();
    assert!(Tokenizer::from_gguf(&gguf_with(|w| {
        w.set("tokenizer.ggml.scores", Value::f32s(vec![0.0; n]))
            .unwrap();
    }))
    .is_ok());
}

// ---- round trip ----

fn alphabet() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "a", "b", "h", "e", "l", "o", "w", "r", "d", "x", "y", "A", "Z", "1", "23", "456", " ",
        "  ", "\t", "\n", "\r\n", "'s", "'LL", "!", "?", ",", "<", ">", "/", "_", "é", "ß", "中",
        "😀", "\u{200d}", "\u{0301}", "\u{3000}", "\u{a0}", "hello", " world", "<s", "s>",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn decode_inverts_encode_without_specials(text in alphabet()) {
        for pre in [None, Some("llama-bpe")] {
            let t = tok(pre);
            let ids = t.encode(&text, false, false).unwrap();
            prop_assert_eq!(t.decode(&ids).unwrap(), text.clone());
            let words = t.pre_tokenize(&text);
            prop_assert_eq!(words.concat(), text.clone());
            prop_assert!(words.iter().all(|w| !w.is_empty()));
        }
    }
}
