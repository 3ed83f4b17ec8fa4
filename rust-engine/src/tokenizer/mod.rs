//! The byte-level BPE tokenizer of GPT-2-style GGUF vocabularies (`tokenizer.ggml.model =
//! "gpt2"`, LLaMA-3 and the official BitNet 2B-4T file among them), with llama.cpp's semantics.
//!
//! Everything here mirrors llama.cpp (the pinned `llama-cpp-sys-2` 0.1.161 source):
//! - loading (`load.rs`, `llama_vocab::impl::load`): default special ids, strict metadata types,
//!   empty tokens renamed `[EMPTY_i]`, the attribute fix-ups by token text (EOT/EOM/FIM/EOG
//!   detection, "unused" control tokens), the special-token cache sorted longest first;
//! - encoding (`llama_vocab::impl::tokenize`, `tokenizer_st_partition`,
//!   `llm_tokenizer_bpe_session::tokenize`): special tokens are cut out of the text first, then
//!   each remaining fragment is split by the pre-tokenizer (`split.rs`), byte-encoded with GPT-2's
//!   `bytes_to_unicode`, merged by rank (`bpe.rs`), and any merged piece missing from the vocabulary
//!   falls back to single-byte tokens where they exist (other bytes are dropped, as llama.cpp
//!   drops them);
//! - decoding (`decode.rs`, `llama_vocab::impl::token_to_piece`, `detokenize`).
//!
//! Code point categories come from a generated copy of llama.cpp's own Unicode tables
//! (`unicode_data.rs`, Unicode 15.1), not from a crate, so splits cannot drift with a crate's
//! Unicode version. Where llama.cpp's result depends on `std::unordered_map` order or an unstable
//! `std::sort` (only for vocabularies with several tokens competing for one role or several
//! special tokens of equal length that overlap), the place in the code says what is done instead.
//!
//! Scope: `gpt2` vocabularies with the `default` pre-tokenizer (also used when
//! `tokenizer.ggml.pre` is absent, as in the official BitNet file) or one of the names llama.cpp
//! maps to its LLaMA-3 pre-tokenizer ([`LLAMA3_PRE_NAMES`]). Other vocabulary types (SPM, WPM,
//! UGM...) and other pre-tokenizers are refused with an error naming them. Token texts must be
//! valid UTF-8 (the GGUF reader refuses other strings; llama.cpp would accept them).
//!
//! Decoding renders control tokens by default ([`Tokenizer::decode`], [`Tokenizer::token_to_piece`]
//! use llama.cpp's `special = true`, the form of its piece cache); the `_with` variants take the
//! flag.

mod bpe;
mod decode;
mod hf;
mod load;
mod split;
mod unicode;
mod unicode_data;

use std::collections::{BTreeSet, HashMap};

use crate::error::{Error, Result};
use decode::{clean_spaces, decode_text, piece_kind, token_to_byte, PieceKind};

pub use split::PreTokenizer;

/// A token's attributes (`llama_token_attr`): a bit set derived from its GGUF token type and
/// then adjusted by text, exactly as llama.cpp adjusts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TokenAttr(u32);

impl TokenAttr {
    pub const UNDEFINED: TokenAttr = TokenAttr(0);
    pub const UNKNOWN: TokenAttr = TokenAttr(1 << 0);
    pub const UNUSED: TokenAttr = TokenAttr(1 << 1);
    pub const NORMAL: TokenAttr = TokenAttr(1 << 2);
    pub const CONTROL: TokenAttr = TokenAttr(1 << 3);
    pub const USER_DEFINED: TokenAttr = TokenAttr(1 << 4);
    pub const BYTE: TokenAttr = TokenAttr(1 << 5);
    pub const LSTRIP: TokenAttr = TokenAttr(1 << 7);
    pub const RSTRIP: TokenAttr = TokenAttr(1 << 8);

    /// The attribute of a GGUF `tokenizer.ggml.token_type` value (`LLAMA_TOKEN_TYPE_*`):
    /// 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte, anything else undefined.
    pub fn from_token_type(ty: i32) -> TokenAttr {
        match ty {
            1 => TokenAttr::NORMAL,
            2 => TokenAttr::UNKNOWN,
            3 => TokenAttr::CONTROL,
            4 => TokenAttr::USER_DEFINED,
            5 => TokenAttr::UNUSED,
            6 => TokenAttr::BYTE,
            _ => TokenAttr::UNDEFINED,
        }
    }

    pub fn bits(self) -> u32 {
        self.0
    }
    /// The bits of both.
    pub const fn union(self, other: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 | other.0)
    }
    /// Whether any bit of `other` is set.
    pub fn intersects(self, other: TokenAttr) -> bool {
        self.0 & other.0 != 0
    }
    pub fn is_control(self) -> bool {
        self.intersects(TokenAttr::CONTROL)
    }
    fn with(self, other: TokenAttr, on: bool) -> TokenAttr {
        if on {
            self.union(other)
        } else {
            TokenAttr(self.0 & !other.0)
        }
    }
}

/// The special-token roles llama.cpp tracks for a vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpecialToken {
    Bos,
    Eos,
    Eot,
    Eom,
    Unk,
    Sep,
    Pad,
    Mask,
    FimPre,
    FimSuf,
    FimMid,
    FimPad,
    FimRep,
    FimSep,
}

impl SpecialToken {
    pub const ALL: [SpecialToken; 14] = [
        SpecialToken::Bos,
        SpecialToken::Eos,
        SpecialToken::Eot,
        SpecialToken::Eom,
        SpecialToken::Unk,
        SpecialToken::Sep,
        SpecialToken::Pad,
        SpecialToken::Mask,
        SpecialToken::FimPre,
        SpecialToken::FimSuf,
        SpecialToken::FimMid,
        SpecialToken::FimPad,
        SpecialToken::FimRep,
        SpecialToken::FimSep,
    ];

    /// The GGUF key that holds this role's id (the current name; llama.cpp also reads the
    /// deprecated `prefix/suffix/middle_token_id` for the FIM roles, see [`SPECIAL_ID_KEYS`]).
    pub fn gguf_key(self) -> &'static str {
        match self {
            SpecialToken::Bos => "tokenizer.ggml.bos_token_id",
            SpecialToken::Eos => "tokenizer.ggml.eos_token_id",
            SpecialToken::Eot => "tokenizer.ggml.eot_token_id",
            SpecialToken::Eom => "tokenizer.ggml.eom_token_id",
            SpecialToken::Unk => "tokenizer.ggml.unknown_token_id",
            // sic: llama.cpp's spelling
            SpecialToken::Sep => "tokenizer.ggml.seperator_token_id",
            SpecialToken::Pad => "tokenizer.ggml.padding_token_id",
            SpecialToken::Mask => "tokenizer.ggml.mask_token_id",
            SpecialToken::FimPre => "tokenizer.ggml.fim_pre_token_id",
            SpecialToken::FimSuf => "tokenizer.ggml.fim_suf_token_id",
            SpecialToken::FimMid => "tokenizer.ggml.fim_mid_token_id",
            SpecialToken::FimPad => "tokenizer.ggml.fim_pad_token_id",
            SpecialToken::FimRep => "tokenizer.ggml.fim_rep_token_id",
            SpecialToken::FimSep => "tokenizer.ggml.fim_sep_token_id",
        }
    }
}

/// The special-id keys in the order llama.cpp reads them (`special_token_types` in
/// `llama_vocab::impl::load`); later keys override earlier ones for the same role.
pub const SPECIAL_ID_KEYS: [(&str, SpecialToken); 17] = [
    ("tokenizer.ggml.bos_token_id", SpecialToken::Bos),
    ("tokenizer.ggml.eos_token_id", SpecialToken::Eos),
    ("tokenizer.ggml.eot_token_id", SpecialToken::Eot),
    ("tokenizer.ggml.eom_token_id", SpecialToken::Eom),
    ("tokenizer.ggml.unknown_token_id", SpecialToken::Unk),
    ("tokenizer.ggml.seperator_token_id", SpecialToken::Sep),
    ("tokenizer.ggml.padding_token_id", SpecialToken::Pad),
    ("tokenizer.ggml.mask_token_id", SpecialToken::Mask),
    ("tokenizer.ggml.fim_pre_token_id", SpecialToken::FimPre),
    ("tokenizer.ggml.fim_suf_token_id", SpecialToken::FimSuf),
    ("tokenizer.ggml.fim_mid_token_id", SpecialToken::FimMid),
    ("tokenizer.ggml.fim_pad_token_id", SpecialToken::FimPad),
    ("tokenizer.ggml.fim_rep_token_id", SpecialToken::FimRep),
    ("tokenizer.ggml.fim_sep_token_id", SpecialToken::FimSep),
    // deprecated spellings, read last
    ("tokenizer.ggml.prefix_token_id", SpecialToken::FimPre),
    ("tokenizer.ggml.suffix_token_id", SpecialToken::FimSuf),
    ("tokenizer.ggml.middle_token_id", SpecialToken::FimMid),
];

/// `tokenizer.ggml.pre` names llama.cpp maps to `LLAMA_VOCAB_PRE_TYPE_LLAMA3` (same expression,
/// `ignore_merges`, BOS added by default).
pub const LLAMA3_PRE_NAMES: [&str; 9] = [
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
];

/// The plain parts of a GPT-2-style vocabulary, as a GGUF holds them. `None` and empty lists mean
/// "the key is absent": [`Tokenizer::from_parts`] then applies llama.cpp's defaults.
#[derive(Clone, Debug, Default)]
pub struct TokenizerParts {
    /// `tokenizer.ggml.tokens`, indexed by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type` (at least one per token); absent means every token is normal.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`, `"left right"`, highest priority first.
    pub merges: Vec<String>,
    /// Special ids present in the file, in the order of [`SPECIAL_ID_KEYS`] (later entries for
    /// the same role override earlier ones). Roles not listed keep llama.cpp's defaults: BOS and
    /// EOS are id 11 for a `gpt2` vocabulary when it exists, the others are unset.
    pub special_ids: Vec<(SpecialToken, u32)>,
    /// `tokenizer.ggml.add_bos_token`; absent: true for the LLaMA-3 pre-tokenizers, false for
    /// `default`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`; absent: false.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`; for BPE it only affects [`Tokenizer::detokenize`].
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.ggml.pre`; absent or empty: `default`.
    pub pre: Option<String>,
    /// `general.name`: llama.cpp gives special tokens of models named phi-3 / modern-bert
    /// strip attributes.
    pub model_name: Option<String>,
    /// `general.architecture`: same, for nomic-bert-moe / jina-bert-v3.
    pub architecture: Option<String>,
}

/// A set of byte values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn of(bytes: &[u8]) -> ByteSet {
        let mut set = ByteSet::default();
        for &b in bytes {
            set.0[usize::from(b >> 6)] |= 1 << (b & 63);
        }
        set
    }
    fn is_subset_of(&self, other: &ByteSet) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// One piece of the text after special-token partitioning.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fragment {
    /// A byte range of the input still to be BPE-encoded.
    Text(std::ops::Range<usize>),
    /// A special token found in the text.
    Token(u32),
}

/// A loaded GPT-2-style BPE vocabulary.
#[derive(Clone)]
pub struct Tokenizer {
    texts: Vec<String>,
    attrs: Vec<TokenAttr>,
    token_to_id: HashMap<String, u32>,
    ranks: bpe::MergeRanks,
    pre: PreTokenizer,
    pre_name: String,
    ignore_merges: bool,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    special: [Option<u32>; SpecialToken::ALL.len()],
    eog: BTreeSet<u32>,
    /// Ids of control, user-defined and unknown tokens, longest text first.
    special_cache: Vec<u32>,
    /// The set of bytes in each `special_cache` token's text: a token with a byte the input
    /// lacks cannot occur in it, which spares most substring searches.
    special_bytes: Vec<ByteSet>,
    warnings: Vec<String>,
    /// What errors call it: the GGUF file it was read from, else "tokenizer".
    source: String,
}

/// A summary: the vocabulary itself is too large to print.
impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("n_vocab", &self.texts.len())
            .field("n_merges", &self.ranks.n_rules())
            .field("pre", &self.pre_name)
            .field("bos", &self.bos())
            .field("eos", &self.eos())
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Tokenize `text` like `llama_tokenize(vocab, text, ..., add_special, parse_special)`.
    ///
    /// - `add_special`: prepend BOS if the vocabulary adds it ([`Tokenizer::add_bos`]), append
    ///   EOS if it adds that.
    /// - `parse_special`: control and unknown tokens written in the text become their ids;
    ///   user-defined tokens are matched either way.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        self.encode_into(text, add_special, parse_special, None)
    }

    /// [`encode`](Self::encode), but a piece of the text that no token can spell (llama.cpp
    /// drops such bytes without a word) is an error naming it: a prompt the model would not see
    /// as written is bad input for a comparison. The harness tokenizes prompts with this.
    pub fn encode_complete(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        let mut dropped = Vec::new();
        let ids = self.encode_into(text, add_special, parse_special, Some(&mut dropped))?;
        match dropped.first() {
            None => Ok(ids),
            Some(first) => Err(Error::Tokenizer(format!(
                "{}: {} of the text has no token in this vocabulary ({} such piece(s); llama.cpp \
                 drops them, so the model would not see the text as written): fix the \
                 tokenizer, or give token ids (--tokens)",
                self.source,
                first,
                dropped.len()
            ))),
        }
    }

    fn encode_into(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
        mut dropped: Option<&mut Vec<String>>,
    ) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let fragments = if text.is_empty() {
            Vec::new()
        } else {
            self.partition(text, parse_special)
        };
        if add_special && self.add_bos {
            out.push(self.required(SpecialToken::Bos, "add_bos_token is set")?);
        }
        for fragment in fragments {
            match fragment {
                Fragment::Text(range) => {
                    self.encode_fragment(&text[range], &mut out, dropped.as_deref_mut())
                }
                Fragment::Token(id) => out.push(id),
            }
        }
        if add_special && self.add_eos {
            out.push(self.required(SpecialToken::Eos, "add_eos_token is set")?);
        }
        Ok(out)
    }

    fn required(&self, role: SpecialToken, why: &str) -> Result<u32> {
        self.special[role as usize].ok_or_else(|| {
            Error::Tokenizer(format!("{why} but the vocabulary has no {role:?} token"))
        })
    }

    /// `tokenizer_st_partition`: for each special token, longest first, cut every text fragment
    /// at each of its occurrences, left to right.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let bytes = text.as_bytes();
        let mut buffer = vec![Fragment::Text(0..text.len())];
        let skip_unparsed = TokenAttr::CONTROL.union(TokenAttr::UNKNOWN);
        let present = ByteSet::of(bytes);
        for (&id, needed) in self.special_cache.iter().zip(&self.special_bytes) {
            let attr = self.attrs[id as usize];
            if !parse_special && attr.intersects(skip_unparsed) {
                continue;
            }
            if !needed.is_subset_of(&present) {
                continue; // cannot occur: a byte of it is absent from the whole input
            }
            let needle = self.texts[id as usize].as_str();
            let mut next = Vec::with_capacity(buffer.len() + 2);
            for fragment in buffer {
                let Fragment::Text(range) = fragment else {
                    next.push(fragment);
                    continue;
                };
                let (mut base, mut len) = (range.start, range.len());
                loop {
                    // Token texts and the input are valid UTF-8, so a match and the strip
                    // steps below (ASCII whitespace) always land on char boundaries.
                    let Some(rel) = text[base..base + len].find(needle) else {
                        if len > 0 {
                            next.push(Fragment::Text(base..base + len));
                        }
                        break;
                    };
                    let at = base + rel;
                    if at > base {
                        let mut left_len = at - base;
                        if attr.intersects(TokenAttr::LSTRIP) {
                            while left_len > 0 && unicode::c_isspace(bytes[base + left_len - 1]) {
                                left_len -= 1;
                            }
                        }
                        if left_len > 0 {
                            next.push(Fragment::Text(base..base + left_len));
                        }
                    }
                    next.push(Fragment::Token(id));
                    let end = at + needle.len();
                    if end >= base + len {
                        break;
                    }
                    let (mut right, mut right_len) = (end, base + len - end);
                    if attr.intersects(TokenAttr::RSTRIP) {
                        while right_len > 0 && unicode::c_isspace(bytes[right]) {
                            right += 1;
                            right_len -= 1;
                        }
                    }
                    base = right;
                    len = right_len;
                }
            }
            buffer = next;
        }
        buffer
    }

    /// The words the pre-tokenizer cuts `text` into (`unicode_regex_split` without byte
    /// encoding), before any BPE merge; special tokens are not looked for.
    pub fn pre_tokenize<'a>(&self, text: &'a str) -> Vec<&'a str> {
        split::split_words(text, self.pre)
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    /// `llm_tokenizer_bpe_session::tokenize` for one text fragment.
    fn encode_fragment(
        &self,
        text: &str,
        out: &mut Vec<u32>,
        mut dropped: Option<&mut Vec<String>>,
    ) {
        for range in split::split_words(text, self.pre) {
            let word: String = text.as_bytes()[range]
                .iter()
                .map(|&b| unicode::byte_to_char(b))
                .collect();
            let whole = self.ignore_merges && self.token_to_id.contains_key(&word);
            for piece in bpe::merge_word(&word, &self.ranks, whole) {
                let piece = &word[piece];
                match self.token_to_id.get(piece) {
                    Some(&id) => out.push(id),
                    None => {
                        // llama.cpp looks up each byte of the encoded piece as a one-byte
                        // string; a byte of a multi-byte character can never be a token text
                        // (those are valid UTF-8), so only ASCII bytes can be found.
                        let mut buf = [0u8; 4];
                        for ch in piece.chars() {
                            let found = if ch.is_ascii() {
                                self.token_to_id.get(&*ch.encode_utf8(&mut buf)).copied()
                            } else {
                                None
                            };
                            match found {
                                Some(id) => out.push(id),
                                None => {
                                    if let Some(d) = dropped.as_deref_mut() {
                                        d.push(describe_dropped(piece, ch));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The bytes of token `id` with control and unknown tokens rendered as their text
    /// (`llama_token_to_piece(..., lstrip = 0, special = true)`, the form llama.cpp caches).
    pub fn token_to_piece(&self, id: u32) -> Result<Vec<u8>> {
        self.token_to_piece_with(id, true)
    }

    /// `llama_token_to_piece(vocab, id, buf, len, 0, special)`: with `special = false`, control
    /// and unknown tokens render as nothing. User-defined tokens always render as their text,
    /// normal tokens are byte-decoded, byte tokens (`<0xXX>`) give their byte, others nothing.
    pub fn token_to_piece_with(&self, id: u32, special: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.append_piece(id, special, false, &mut out)?;
        Ok(out)
    }

    fn append_piece(&self, id: u32, special: bool, lstrip: bool, out: &mut Vec<u8>) -> Result<()> {
        let idx = self.check_id(id)?;
        let attr = self.attrs[idx];
        if !special && attr.intersects(TokenAttr::UNKNOWN.union(TokenAttr::CONTROL)) {
            return Ok(());
        }
        let text = &self.texts[idx];
        let start = out.len();
        match piece_kind(attr) {
            PieceKind::Verbatim => out.extend_from_slice(text.as_bytes()),
            PieceKind::Decoded => decode_text(text, out),
            PieceKind::Byte => out.push(token_to_byte(text)),
            PieceKind::Nothing => {}
        }
        // `_try_copy`'s lstrip: skip one leading space.
        if lstrip && out.get(start) == Some(&b' ') {
            out.remove(start);
        }
        Ok(())
    }

    /// The concatenated pieces of `ids` with control tokens rendered (`special = true`), as
    /// text. Pieces of multi-byte characters split across tokens, or a sequence cut in the
    /// middle of a character, are not valid UTF-8: they are replaced by U+FFFD here (lossy);
    /// use [`Tokenizer::decode_bytes`] for the exact bytes. No space clean-up is applied (see
    /// [`Tokenizer::detokenize`]), so `decode(encode(s, false, false)) == s`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// The exact concatenated bytes of `ids`' pieces, control tokens rendered.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        self.decode_bytes_with(ids, true)
    }

    /// The concatenated bytes of `ids`' pieces, rendering control tokens or not.
    pub fn decode_bytes_with(&self, ids: &[u32], special: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &id in ids {
            self.append_piece(id, special, false, &mut out)?;
        }
        Ok(out)
    }

    /// `llama_detokenize(vocab, ids, ..., remove_special, unparse_special)`: optionally drops a
    /// leading BOS / trailing EOS the vocabulary adds, renders control tokens when
    /// `unparse_special`, and applies llama.cpp's `clean_spaces` passes (on for every BPE
    /// vocabulary): " ?", " !", " .", " ," lose their space, a lone `'` between spaces loses
    /// both, and " 's", " 'm", " 're", " 've" lose theirs. Not an inverse of [`encode`](Self::encode).
    pub fn detokenize(
        &self,
        ids: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>> {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        let is = |id: Option<&u32>, role: SpecialToken| {
            id.is_some() && id.copied() == self.special[role as usize]
        };
        if remove_special && self.add_bos && is(ids.first(), SpecialToken::Bos) {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special && self.add_eos && is(ids.last(), SpecialToken::Eos) {
            ids = &ids[..ids.len() - 1];
        }
        let mut text = Vec::new();
        for &id in ids {
            self.append_piece(id, unparse_special, remove_space, &mut text)?;
            remove_space = false;
        }
        // llama.cpp's BPE vocabularies all set clean_spaces.
        clean_spaces(&mut text);
        Ok(text)
    }

    fn check_id(&self, id: u32) -> Result<usize> {
        let idx = id as usize;
        if idx < self.texts.len() {
            Ok(idx)
        } else {
            Err(Error::Tokenizer(format!(
                "token id {id} is out of range for a vocabulary of {} tokens",
                self.texts.len()
            )))
        }
    }

    /// Number of tokens.
    pub fn n_vocab(&self) -> usize {
        self.texts.len()
    }

    /// Number of merge rules.
    pub fn n_merges(&self) -> usize {
        self.ranks.n_rules()
    }

    /// The beginning-of-sequence token, if any.
    pub fn bos(&self) -> Option<u32> {
        self.special(SpecialToken::Bos)
    }

    /// The end-of-sequence token, if any.
    pub fn eos(&self) -> Option<u32> {
        self.special(SpecialToken::Eos)
    }

    /// The end-of-turn token: from the file, or detected by text.
    pub fn eot(&self) -> Option<u32> {
        self.special(SpecialToken::Eot)
    }

    /// The id of a special role after defaults, file keys and detection by text.
    pub fn special(&self, role: SpecialToken) -> Option<u32> {
        self.special[role as usize]
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// This tokenizer with a self-test plan's tokenizer faults: the other pre-tokenizer
    /// ([`FaultKind::PreTokenizer`](crate::model::FaultKind)), BOS not added
    /// ([`FaultKind::NoBos`](crate::model::FaultKind)).
    pub fn with_plan(mut self, plan: Option<&crate::model::Plan>) -> Tokenizer {
        use crate::model::FaultKind;
        let Some(p) = plan else {
            return self;
        };
        if p.has_anywhere(FaultKind::PreTokenizer) {
            self.pre = match self.pre {
                PreTokenizer::Default => PreTokenizer::Llama3,
                PreTokenizer::Llama3 => PreTokenizer::Default,
            };
        }
        if p.has_anywhere(FaultKind::NoBos) {
            self.add_bos = false;
        }
        self
    }

    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// The pre-tokenizer name: `tokenizer.ggml.pre` as written, or `default` when absent.
    pub fn pre_tokenizer(&self) -> &str {
        &self.pre_name
    }

    /// Which split the pre-tokenizer name selects.
    pub fn pre_tokenizer_kind(&self) -> PreTokenizer {
        self.pre
    }

    /// The raw vocabulary text of token `id` (byte-level form for normal tokens).
    pub fn token_text(&self, id: u32) -> Result<&str> {
        Ok(&self.texts[self.check_id(id)?])
    }

    /// The token whose vocabulary text is exactly `text`.
    pub fn text_to_token(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// The attributes of token `id` after llama.cpp's fix-ups.
    pub fn token_attr(&self, id: u32) -> Result<TokenAttr> {
        Ok(self.attrs[self.check_id(id)?])
    }

    /// Whether `id` ends generation (`llama_vocab_is_eog`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// The end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }

    /// Things llama.cpp would log as warnings while loading this vocabulary.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// How [`Tokenizer::encode_complete`] names a byte no token spells: the byte, the character it
/// belongs to when printable, and the BPE piece it was in.
fn describe_dropped(piece: &str, ch: char) -> String {
    let original: Vec<u8> = piece.chars().filter_map(unicode::char_to_byte).collect();
    let text = String::from_utf8_lossy(&original);
    match unicode::char_to_byte(ch) {
        Some(b) if b.is_ascii_graphic() => format!("byte 0x{b:02X} ('{}') in {text:?}", b as char),
        Some(b) => format!("byte 0x{b:02X} in {text:?}"),
        None => format!("{ch:?} in {text:?}"),
    }
}
