//! Loading: llama.cpp's `llama_vocab::impl::load` for a `gpt2` vocabulary, from GGUF metadata
//! or from plain parts, with its defaults, strict key types and attribute fix-ups in its order.

use std::collections::{BTreeSet, HashMap};

use super::bpe::MergeRanks;
use super::decode::{piece_kind, PieceKind};
use super::{
    ByteSet, PreTokenizer, SpecialToken, TokenAttr, Tokenizer, TokenizerParts, LLAMA3_PRE_NAMES,
    SPECIAL_ID_KEYS,
};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, GgufWriter, Value, ValueType};

/// Texts llama.cpp recognises as a role when the file does not name that role's id, in its
/// source order; the chosen token gets the role and the CONTROL attribute (see
/// `detect_roles_by_text` for which one is chosen when several are present).
const ROLE_TEXTS: [(SpecialToken, &[&str]); 8] = [
    (
        SpecialToken::Eot,
        &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|end_of_text|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "<｜end▁of▁sentence｜>",
            "<end_of_utterance>",
        ],
    ),
    (SpecialToken::Eom, &["<|eom_id|>"]),
    (
        SpecialToken::FimPre,
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        SpecialToken::FimSuf,
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        SpecialToken::FimMid,
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        SpecialToken::FimPad,
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        SpecialToken::FimRep,
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    (SpecialToken::FimSep, &["<|file_sep|>"]),
];

/// Texts of end-of-generation tokens (`special_eog_ids`); they also get CONTROL.
const EOG_TEXTS: [&str; 22] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// gpt-oss tokens llama.cpp always renders (their attribute becomes USER_DEFINED).
const ALWAYS_RENDERED_TEXTS: [&str; 4] =
    ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

impl Tokenizer {
    /// Read the tokenizer of a GGUF file (`tokenizer.ggml.*`, plus `general.name` and
    /// `general.architecture` for llama.cpp's per-model attribute rules).
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        let parts = TokenizerParts::from_gguf(file)?;
        let mut tok = Tokenizer::from_parts(parts).map_err(|e| match e {
            Error::Tokenizer(msg) => Error::Tokenizer(format!("{}: {msg}", file.label())),
            other => other,
        })?;
        tok.source = file.label().to_string();
        Ok(tok)
    }

    /// Build from plain parts, applying llama.cpp's defaults and fix-ups in its order.
    pub fn from_parts(parts: TokenizerParts) -> Result<Tokenizer> {
        let TokenizerParts {
            tokens,
            token_types,
            merges,
            special_ids,
            add_bos,
            add_eos,
            add_space_prefix,
            pre,
            model_name,
            architecture,
        } = parts;
        let mut warnings = Vec::new();
        let n_tokens = tokens.len();
        if n_tokens == 0 {
            return Err(Error::Tokenizer("the vocabulary has no tokens".into()));
        }
        if n_tokens > i32::MAX as usize {
            return Err(Error::Tokenizer(format!(
                "{n_tokens} tokens do not fit llama.cpp's 32-bit token ids"
            )));
        }

        let (pre_kind, pre_name, ignore_merges, add_bos_default) =
            resolve_pre(pre.as_deref(), &mut warnings)?;

        if let Some(types) = &token_types {
            if types.len() < n_tokens {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.ggml.token_type has {} entries for {n_tokens} tokens",
                    types.len()
                )));
            }
        }

        let mut texts = Vec::with_capacity(n_tokens);
        let mut attrs = Vec::with_capacity(n_tokens);
        let mut token_to_id = HashMap::with_capacity(n_tokens);
        for (i, mut text) in tokens.into_iter().enumerate() {
            if text.is_empty() {
                warnings.push(format!("empty token at index {i}"));
                text = format!("[EMPTY_{i}]");
            }
            if let Some(prev) = token_to_id.insert(text.clone(), i as u32) {
                // llama.cpp asserts that every text maps to one id.
                return Err(Error::Tokenizer(format!(
                    "token text {text:?} appears at ids {prev} and {i}"
                )));
            }
            texts.push(text);
            attrs.push(match &token_types {
                Some(types) => TokenAttr::from_token_type(types[i]),
                None => TokenAttr::NORMAL,
            });
        }

        let ranks = MergeRanks::new(&merges);

        // Special ids: gpt2 defaults (disabled when out of range), then the file's keys.
        let mut special = [None; SpecialToken::ALL.len()];
        for role in [SpecialToken::Bos, SpecialToken::Eos] {
            if 11 < n_tokens {
                special[role as usize] = Some(11);
            } else {
                warnings.push(format!(
                    "default special token {role:?} = 11 out of vocab range, disabling"
                ));
            }
        }
        for &(role, id) in &special_ids {
            if (id as usize) < n_tokens {
                special[role as usize] = Some(id);
            } else {
                warnings.push(format!(
                    "bad special token {role:?} = {id} (vocab has {n_tokens}), keeping {:?}",
                    special[role as usize]
                ));
            }
        }
        let add_bos = add_bos.unwrap_or(add_bos_default);
        let add_eos = add_eos.unwrap_or(false);
        let add_space_prefix = add_space_prefix.unwrap_or(false);

        let mut tok = Tokenizer {
            texts,
            attrs,
            token_to_id,
            ranks,
            pre: pre_kind,
            pre_name,
            ignore_merges,
            add_bos,
            add_eos,
            add_space_prefix,
            special,
            eog: BTreeSet::new(),
            special_cache: Vec::new(),
            special_bytes: Vec::new(),
            warnings,
            source: "tokenizer".into(),
        };
        tok.detect_roles_by_text();
        tok.build_eog();
        tok.build_special_cache();
        tok.check_byte_tokens()?;
        tok.apply_model_rules(model_name.as_deref(), architecture.as_deref())?;
        Ok(tok)
    }

    /// Auto-detection of EOT/EOM/FIM roles by text, for roles the file leaves unset. llama.cpp
    /// walks a `std::unordered_map`, so with several candidates for one role its pick depends on
    /// the standard library's hash order. Here the candidate listed first in llama.cpp's source
    /// wins; on the LLaMA-3 vocabulary that agrees with a libstdc++ build (EOT = `<|eot_id|>`
    /// 128009 rather than `<|end_of_text|>` 128001, checked by iterating a libstdc++
    /// `unordered_map` filled in id order, as llama.cpp fills it).
    fn detect_roles_by_text(&mut self) {
        for (role, candidates) in ROLE_TEXTS {
            if self.special[role as usize].is_some() {
                continue;
            }
            if let Some(&id) = candidates.iter().find_map(|t| self.token_to_id.get(*t)) {
                self.special[role as usize] = Some(id);
                self.force_control(id as usize);
            }
        }
        // Control tokens whose text says "unused" are unused (they keep CONTROL).
        for (text, attr) in self.texts.iter().zip(self.attrs.iter_mut()) {
            if attr.is_control() && text.contains("unused") {
                *attr = attr.with(TokenAttr::UNUSED, true);
            }
        }
    }

    fn force_control(&mut self, id: usize) {
        if !self.attrs[id].is_control() {
            self.warnings.push(format!(
                "control-looking token {id} {:?} was not control-type; its type is overridden",
                self.texts[id]
            ));
            self.attrs[id] = self.attrs[id].with(TokenAttr::CONTROL, true);
        }
    }

    /// `special_eog_ids` and the attribute changes made while building it.
    fn build_eog(&mut self) {
        for role in [
            SpecialToken::FimPad,
            SpecialToken::FimRep,
            SpecialToken::FimSep,
        ] {
            if let Some(id) = self.special[role as usize] {
                self.eog.insert(id);
            }
        }
        for id in 0..self.texts.len() {
            if EOG_TEXTS.contains(&self.texts[id].as_str()) {
                self.eog.insert(id as u32);
                self.force_control(id);
            }
        }
        for id in 0..self.texts.len() {
            if ALWAYS_RENDERED_TEXTS.contains(&self.texts[id].as_str()) {
                self.attrs[id] = TokenAttr::USER_DEFINED;
            }
        }
        for role in [SpecialToken::Eos, SpecialToken::Eot, SpecialToken::Eom] {
            if let Some(id) = self.special[role as usize] {
                if self.eog.insert(id) {
                    self.warnings.push(format!(
                        "{role:?} token {id} was not an end-of-generation token"
                    ));
                }
            }
        }
        // o200k_harmony / solar-open: "<|end|>" is not EOG when "<|return|>"+"<|call|>" or
        // "<|calls|>"+"<|flush|>" are.
        let eog_text = |t: &str| self.eog.iter().find(|&&id| self.texts[id as usize] == t);
        let has = |t: &str| eog_text(t).is_some();
        let end_id = eog_text("<|end|>").copied();
        let has_call = has("<|call|>") || has("<|calls|>");
        if let Some(end) = end_id {
            if has_call && (has("<|return|>") || has("<|flush|>")) {
                self.eog.remove(&end);
                self.attrs[end as usize] = TokenAttr::USER_DEFINED;
            }
        }
        // gemma4 / plamo: "</s>" is a normal token next to their own end markers.
        let eog_text = |t: &str| self.eog.iter().find(|&&id| self.texts[id as usize] == t);
        let marker = eog_text("<|tool_response>").is_some() || eog_text("<|plamo:eos|>").is_some();
        if let (true, Some(&s)) = (marker, eog_text("</s>")) {
            self.eog.remove(&s);
            self.attrs[s as usize] = TokenAttr::NORMAL;
        }
    }

    /// `cache_special_tokens`: control, user-defined and unknown tokens, longest text first.
    /// llama.cpp uses an unstable sort; ties (equal lengths) are kept in id order here.
    fn build_special_cache(&mut self) {
        let wanted = TokenAttr::CONTROL
            .union(TokenAttr::USER_DEFINED)
            .union(TokenAttr::UNKNOWN);
        let mut cache: Vec<u32> = (0..self.texts.len() as u32)
            .filter(|&id| self.attrs[id as usize].intersects(wanted))
            .collect();
        cache.sort_by_key(|&id| std::cmp::Reverse(self.texts[id as usize].len()));
        self.special_bytes = cache
            .iter()
            .map(|&id| ByteSet::of(self.texts[id as usize].as_bytes()))
            .collect();
        self.special_cache = cache;
    }

    /// llama.cpp renders every token once while loading; a byte token whose text is shorter
    /// than `<0x` makes `token_to_byte`'s `substr(3, 2)` throw and the load fail.
    fn check_byte_tokens(&self) -> Result<()> {
        for (id, (text, &attr)) in self.texts.iter().zip(&self.attrs).enumerate() {
            if piece_kind(attr) == PieceKind::Byte && text.len() < 3 {
                return Err(Error::Tokenizer(format!(
                    "byte token {id} has text {text:?}, too short for the <0xXX> form"
                )));
            }
        }
        Ok(())
    }

    /// The per-model attribute rules at the end of `llama_vocab::impl::load`. (The first rule
    /// also matches some pre-tokenizer names; none of them is a supported pre-tokenizer.)
    fn apply_model_rules(&mut self, name: Option<&str>, arch: Option<&str>) -> Result<()> {
        let name = name.unwrap_or("").to_ascii_lowercase();
        let arch = arch.unwrap_or("");
        let contains_any = |s: &str, subs: &[&str]| subs.iter().any(|sub| s.contains(sub));
        let set = |tok: &mut Tokenizer, text: &str, attr: TokenAttr, on: bool| -> Result<()> {
            let id = *tok.token_to_id.get(text).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "model named {name:?}: llama.cpp requires token {text:?}, which the vocabulary lacks"
                ))
            })? as usize;
            tok.attrs[id] = tok.attrs[id].with(attr, on);
            Ok(())
        };
        if contains_any(arch, &["nomic-bert-moe", "jina-bert-v3"]) {
            if self.token_to_id.contains_key("<mask>") {
                set(self, "<mask>", TokenAttr::LSTRIP, true)?;
            } else {
                self.warnings.push("mask token is missing in vocab".into());
            }
        } else if contains_any(&name, &["phi-3", "phi3"]) {
            for i in 0..self.special_cache.len() {
                let id = self.special_cache[i] as usize;
                self.attrs[id] = self.attrs[id].with(TokenAttr::RSTRIP, true);
            }
            set(self, "</s>", TokenAttr::RSTRIP, true)?;
            for text in ["<unk>", "<s>", "<|endoftext|>"] {
                set(self, text, TokenAttr::RSTRIP, false)?;
            }
        } else if contains_any(&name, &["modern-bert"]) {
            if self.token_to_id.contains_key("[MASK]") {
                set(self, "[MASK]", TokenAttr::LSTRIP, true)?;
            } else {
                self.warnings.push("mask token missing in vocab".into());
            }
        }
        Ok(())
    }
}

/// The pre-tokenizer a `tokenizer.ggml.pre` value selects: (kind, name, ignore_merges,
/// add_bos default).
pub(super) fn resolve_pre(
    pre: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<(PreTokenizer, String, bool, bool)> {
    match pre {
        None | Some("") => {
            warnings.push("missing pre-tokenizer type, using: 'default'".into());
            Ok((PreTokenizer::Default, "default".into(), false, false))
        }
        Some("default") => Ok((PreTokenizer::Default, "default".into(), false, false)),
        Some(name) if LLAMA3_PRE_NAMES.contains(&name) => {
            Ok((PreTokenizer::Llama3, name.into(), true, true))
        }
        Some(name) => Err(Error::Tokenizer(format!(
            "unsupported pre-tokenizer '{name}' (tokenizer.ggml.pre); supported: default (or \
             absent), {}",
            LLAMA3_PRE_NAMES.join(", ")
        ))),
    }
}

impl TokenizerParts {
    /// The tokenizer keys of a GGUF file, checked with llama.cpp's strict types (a key of the
    /// wrong type is an error, as in `llama_model_loader::get_key`).
    pub fn from_gguf(file: &GgufFile) -> Result<TokenizerParts> {
        let meta = Meta { file };
        let model = meta
            .string("tokenizer.ggml.model")?
            .ok_or_else(|| meta.err("tokenizer.ggml.model", "absent; the file has no tokenizer"))?;
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "{}: tokenizer model '{model}' (tokenizer.ggml.model) is not supported; only \
                 'gpt2' (byte-level BPE) is",
                file.label()
            )));
        }
        let pre = meta.string("tokenizer.ggml.pre")?.map(str::to_owned);
        meta.u32("tokenizer.ggml.token_type_count")?;
        let tokens = meta
            .strings("tokenizer.ggml.tokens")?
            .ok_or_else(|| meta.err("tokenizer.ggml.tokens", "absent"))?;
        let n = tokens.len();
        if let Some(v) = file.get("tokenizer.ggml.scores") {
            // Unused by BPE, but llama.cpp refuses a malformed one.
            match v {
                Value::Array(ValueType::I32 | ValueType::F32, items) if items.len() >= n => {}
                Value::Array(ValueType::I32 | ValueType::F32, items) => {
                    return Err(meta.err(
                        "tokenizer.ggml.scores",
                        &format!("{} entries for {n} tokens", items.len()),
                    ))
                }
                other => {
                    return Err(meta.err(
                        "tokenizer.ggml.scores",
                        &format!("expected an array of i32 or f32, found {}", describe(other)),
                    ))
                }
            }
        }
        let token_types = match file.get("tokenizer.ggml.token_type") {
            None => None,
            Some(Value::Array(ValueType::I32, items)) => {
                if items.len() < n {
                    return Err(meta.err(
                        "tokenizer.ggml.token_type",
                        &format!("{} entries for {n} tokens", items.len()),
                    ));
                }
                let types = items[..n]
                    .iter()
                    .map(|v| match v {
                        Value::I32(t) => Ok(*t),
                        other => Err(meta.err(
                            "tokenizer.ggml.token_type",
                            &format!("element is {}", describe(other)),
                        )),
                    })
                    .collect::<Result<Vec<i32>>>()?;
                Some(types)
            }
            Some(other) => {
                return Err(meta.err(
                    "tokenizer.ggml.token_type",
                    &format!("expected an array of i32, found {}", describe(other)),
                ))
            }
        };
        let merges = meta.strings("tokenizer.ggml.merges")?.ok_or_else(|| {
            meta.err(
                "tokenizer.ggml.merges",
                "absent; a gpt2 tokenizer needs its merges",
            )
        })?;
        let mut special_ids = Vec::new();
        for (key, role) in SPECIAL_ID_KEYS {
            if let Some(id) = meta.u32(key)? {
                special_ids.push((role, id));
            }
        }
        let add_bos = meta.bool("tokenizer.ggml.add_bos_token")?;
        let add_eos = meta.bool("tokenizer.ggml.add_eos_token")?;
        let add_space_prefix = meta.bool("tokenizer.ggml.add_space_prefix")?;
        meta.bool("tokenizer.ggml.remove_extra_whitespaces")?;
        let model_name = meta.string("general.name")?.map(str::to_owned);
        let architecture = meta.string("general.architecture")?.map(str::to_owned);
        Ok(TokenizerParts {
            tokens,
            token_types,
            merges,
            special_ids,
            add_bos,
            add_eos,
            add_space_prefix,
            pre,
            model_name,
            architecture,
        })
    }

    /// Write the tokenizer keys to a GGUF writer (`tokenizer.ggml.model = "gpt2"` and every
    /// part that is present; `general.*` keys are left to the caller). For a role listed twice
    /// in `special_ids`, the last id is written.
    pub fn write_gguf_metadata(&self, w: &mut GgufWriter) -> Result<()> {
        w.set("tokenizer.ggml.model", Value::String("gpt2".into()))?;
        if let Some(pre) = &self.pre {
            w.set("tokenizer.ggml.pre", Value::String(pre.clone()))?;
        }
        w.set(
            "tokenizer.ggml.tokens",
            Value::strings(self.tokens.iter().cloned()),
        )?;
        if let Some(types) = &self.token_types {
            w.set(
                "tokenizer.ggml.token_type",
                Value::i32s(types.iter().copied()),
            )?;
        }
        w.set(
            "tokenizer.ggml.merges",
            Value::strings(self.merges.iter().cloned()),
        )?;
        for &(role, id) in &self.special_ids {
            w.set(role.gguf_key(), Value::U32(id))?;
        }
        for (key, value) in [
            ("tokenizer.ggml.add_bos_token", self.add_bos),
            ("tokenizer.ggml.add_eos_token", self.add_eos),
            ("tokenizer.ggml.add_space_prefix", self.add_space_prefix),
        ] {
            if let Some(b) = value {
                w.set(key, Value::Bool(b))?;
            }
        }
        Ok(())
    }
}

/// Strictly typed metadata reads with errors naming the file and key.
struct Meta<'a> {
    file: &'a GgufFile,
}

impl Meta<'_> {
    fn err(&self, key: &str, reason: &str) -> Error {
        Error::Metadata {
            file: self.file.label().to_string(),
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }

    fn wrong(&self, key: &str, expected: &str, found: &Value) -> Error {
        self.err(
            key,
            &format!("expected {expected}, found {}", describe(found)),
        )
    }

    fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    fn u32(&self, key: &str) -> Result<Option<u32>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(Value::U32(v)) => Ok(Some(*v)),
            Some(other) => Err(self.wrong(key, "a u32", other)),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(Value::Bool(v)) => Ok(Some(*v)),
            Some(other) => Err(self.wrong(key, "a bool", other)),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(Value::Array(ValueType::String, items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.wrong(key, "string elements", other)),
                })
                .collect::<Result<Vec<String>>>()
                .map(Some),
            Some(other) => Err(self.wrong(key, "an array of strings", other)),
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Array(t, items) => format!("an array of {} ({} elements)", t.name(), items.len()),
        other => format!("a {}", other.value_type().name()),
    }
}
