//! Vocabulary parts from a Hugging Face `tokenizer.json` (BPE model), laid out the way llama.cpp's
//! `convert_hf_to_gguf.py` (`get_vocab_base`) lays out a GPT-2-style vocabulary: ids in order,
//! added tokens marked CONTROL when `special` and USER_DEFINED otherwise, ids that nothing
//! occupies filled with `[PAD<id>]` of type UNUSED. The converter's text heuristic
//! (`does_token_look_special`) and its re-normalisation of non-special added tokens are not
//! applied: the LLaMA-3 data has only special added tokens.
//!
//! `tokenizer.json` names neither the BOS/EOS ids (they live in `tokenizer_config.json`) nor a
//! llama.cpp pre-tokenizer name: the caller sets `special_ids` and `pre`.

use serde_json::Value as Json;

use super::{TokenAttr, TokenizerParts};
use crate::error::{Error, Result};

/// How many unoccupied ids a `tokenizer.json` may leave: ids come from the file, so the table
/// is never sized past the entries it holds plus this many gaps.
const MAX_ID_GAPS: usize = 1 << 16;

fn bad(reason: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("tokenizer.json: {reason}"))
}

impl TokenizerParts {
    /// Parse a Hugging Face `tokenizer.json` whose model is BPE.
    pub fn from_hf_tokenizer_json(json: &str) -> Result<TokenizerParts> {
        let root: Json = serde_json::from_str(json).map_err(bad)?;
        let model = root.get("model").ok_or_else(|| bad("no 'model'"))?;
        match model.get("type").and_then(Json::as_str) {
            Some("BPE") => {}
            other => return Err(bad(format!("model type {other:?} is not BPE"))),
        }
        let vocab = model
            .get("vocab")
            .and_then(Json::as_object)
            .ok_or_else(|| bad("'model.vocab' is not an object"))?;
        let added = match root.get("added_tokens") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(items)) => items.clone(),
            Some(_) => return Err(bad("'added_tokens' is not an array")),
        };

        let mut entries: Vec<(u64, String, i32)> = Vec::with_capacity(vocab.len() + added.len());
        for (text, id) in vocab {
            let id = id
                .as_u64()
                .ok_or_else(|| bad(format!("vocab entry {text:?} has id {id}")))?;
            entries.push((id, text.clone(), 1));
        }
        for item in &added {
            let id = item
                .get("id")
                .and_then(Json::as_u64)
                .ok_or_else(|| bad(format!("added token without an integer id: {item}")))?;
            let text = item
                .get("content")
                .and_then(Json::as_str)
                .ok_or_else(|| bad(format!("added token {id} without 'content'")))?;
            let special = item.get("special").and_then(Json::as_bool).unwrap_or(false);
            entries.push((id, text.to_string(), if special { 3 } else { 4 }));
        }
        let n = entries.iter().map(|e| e.0 + 1).max().unwrap_or(0);
        let limit = entries.len() + MAX_ID_GAPS;
        if n > limit as u64 {
            return Err(bad(format!(
                "largest id {} leaves more than {MAX_ID_GAPS} ids unoccupied",
                n - 1
            )));
        }
        let n = n as usize;
        let mut slots: Vec<Option<(String, i32)>> = vec![None; n];
        for (id, text, ty) in entries {
            let slot = &mut slots[id as usize];
            match slot {
                // An added token may repeat its vocab entry; keep the added token's type.
                Some((prev, _)) if *prev == text => *slot = Some((text, ty)),
                Some((prev, _)) => {
                    return Err(bad(format!("id {id} is both {prev:?} and {text:?}")));
                }
                None => *slot = Some((text, ty)),
            }
        }
        let mut tokens = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        for (id, slot) in slots.into_iter().enumerate() {
            let (text, ty) = slot.unwrap_or_else(|| (format!("[PAD{id}]"), 5));
            debug_assert_ne!(TokenAttr::from_token_type(ty), TokenAttr::UNDEFINED);
            tokens.push(text);
            types.push(ty);
        }

        let merges = match model.get("merges") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(items)) => items
                .iter()
                .map(|m| match m {
                    Json::String(s) => Ok(s.clone()),
                    // newer tokenizers write [left, right]
                    Json::Array(pair) => match pair.as_slice() {
                        [Json::String(a), Json::String(b)] => Ok(format!("{a} {b}")),
                        _ => Err(bad(format!("merge {m} is not a pair of strings"))),
                    },
                    other => Err(bad(format!("merge {other} is not a string"))),
                })
                .collect::<Result<Vec<String>>>()?,
            Some(_) => return Err(bad("'model.merges' is not an array")),
        };

        Ok(TokenizerParts {
            tokens,
            token_types: Some(types),
            merges,
            ..TokenizerParts::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vocab_added_tokens_and_both_merge_forms() {
        let json = r#"{
            "added_tokens": [{"id": 4, "content": "<|s|>", "special": true},
                             {"id": 5, "content": "hello", "special": false}],
            "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
                      "merges": ["a b", ["ab", "b"]]}
        }"#;
        let parts = TokenizerParts::from_hf_tokenizer_json(json).unwrap();
        assert_eq!(parts.tokens, ["a", "b", "ab", "[PAD3]", "<|s|>", "hello"]);
        assert_eq!(parts.token_types.as_deref(), Some(&[1, 1, 1, 5, 3, 4][..]));
        assert_eq!(parts.merges, ["a b", "ab b"]);
    }

    #[test]
    fn rejects_conflicts_and_huge_ids() {
        let clash = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}}"#;
        let err = TokenizerParts::from_hf_tokenizer_json(clash).unwrap_err();
        assert!(err.to_string().contains("id 0 is both"), "{err}");
        let huge = r#"{"model": {"type": "BPE", "vocab": {"a": 4000000000}, "merges": []}}"#;
        let err = TokenizerParts::from_hf_tokenizer_json(huge).unwrap_err();
        assert!(err.to_string().contains("unoccupied"), "{err}");
        let wordpiece = r#"{"model": {"type": "WordPiece", "vocab": {}}}"#;
        assert!(TokenizerParts::from_hf_tokenizer_json(wordpiece).is_err());
    }
}
