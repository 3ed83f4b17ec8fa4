//! llama.cpp's tokenizer behind one owner (`llama_vocab` of a loaded model), shared by the
//! built-in oracle and the ggml-graph oracle (which loads a vocabulary-only model for it).

use llama_cpp_sys_2 as sys;

use crate::error::Result;
use crate::llama_common::{clamp_len, detokenize_with, piece_with, tokenize_with};
use crate::oracle::TokenId;

/// A model's vocabulary; valid as long as the model it came from.
pub(crate) struct Vocab {
    ptr: *const sys::llama_vocab,
    pub(crate) n_vocab: usize,
}

impl Vocab {
    /// The vocabulary of `model`.
    ///
    /// # Safety
    /// `model` must be a loaded model that outlives the returned value.
    pub(crate) unsafe fn of_model(model: *const sys::llama_model) -> Vocab {
        // SAFETY (caller): valid model; getters only.
        unsafe {
            let ptr = sys::llama_model_get_vocab(model);
            Vocab {
                ptr,
                n_vocab: sys::llama_vocab_n_tokens(ptr).max(0) as usize,
            }
        }
    }

    /// `llama_tokenize`.
    pub(crate) fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<TokenId>> {
        let vocab = self.ptr;
        tokenize_with(text, |len, ids| {
            // SAFETY: valid vocab; text pointer/length describe `text`; ids writable for its
            // length (clamped to i32).
            unsafe {
                sys::llama_tokenize(
                    vocab,
                    text.as_ptr().cast(),
                    len,
                    ids.as_mut_ptr(),
                    clamp_len(ids),
                    add_special,
                    parse_special,
                )
            }
        })
    }

    /// `llama_detokenize`.
    pub(crate) fn detokenize(
        &self,
        tokens: &[TokenId],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>> {
        let vocab = self.ptr;
        detokenize_with(tokens, self.n_vocab, |ids, n, buf, len| {
            // SAFETY: valid vocab; ids and buf describe live buffers of the given lengths.
            unsafe {
                sys::llama_detokenize(vocab, ids, n, buf, len, remove_special, unparse_special)
            }
        })
    }

    /// `llama_token_to_piece`.
    pub(crate) fn token_piece(&self, token: TokenId, special: bool) -> Result<Vec<u8>> {
        let vocab = self.ptr;
        piece_with(token, self.n_vocab, |t, buf, len| {
            // SAFETY: valid vocab and token id; buf is writable for its length.
            unsafe { sys::llama_token_to_piece(vocab, t, buf, len, 0, special) }
        })
    }
}
