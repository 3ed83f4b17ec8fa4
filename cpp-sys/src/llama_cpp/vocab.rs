//! llama.cpp's tokenizer behind one owner (`llama_vocab` of a loaded model), shared by the
//! built-in oracle and the ggml-graph oracle (which loads a vocabulary-only model for it).

use llama_cpp_sys_2 as sys;

use crate::error::{Error, Result};
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

    /// Refuse ids outside the vocabulary before they reach C.
    pub(crate) fn check_ids(&self, tokens: &[TokenId]) -> Result<()> {
        match tokens.iter().position(|&t| t as usize >= self.n_vocab) {
            Some(i) => Err(Error::InvalidRequest(format!(
                "token {} (at index {i}) is outside the vocabulary of {}",
                tokens[i], self.n_vocab
            ))),
            None => Ok(()),
        }
    }

    pub(crate) fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<TokenId>> {
        let len = i32::try_from(text.len())
            .map_err(|_| Error::InvalidRequest("text longer than 2 GiB".into()))?;
        let mut ids: Vec<sys::llama_token> = vec![0; text.len() + 8];
        for _ in 0..2 {
            // SAFETY: valid vocab; text pointer/length describe `text`; ids writable for its
            // length (clamped to i32).
            let n = unsafe {
                sys::llama_tokenize(
                    self.ptr,
                    text.as_ptr().cast(),
                    len,
                    ids.as_mut_ptr(),
                    ids.len().min(i32::MAX as usize) as i32,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                ids.truncate(n as usize);
                return ids
                    .into_iter()
                    .map(|t| {
                        TokenId::try_from(t)
                            .map_err(|_| Error::Llama(format!("llama_tokenize produced id {t}")))
                    })
                    .collect();
            }
            if n == i32::MIN {
                return Err(Error::InvalidRequest("tokenization overflows i32".into()));
            }
            ids = vec![0; n.unsigned_abs() as usize];
        }
        Err(Error::Llama(
            "llama_tokenize: size changed between calls".into(),
        ))
    }

    pub(crate) fn detokenize(
        &self,
        tokens: &[TokenId],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>> {
        self.check_ids(tokens)?;
        let ids: Vec<sys::llama_token> = tokens.iter().map(|&t| t as sys::llama_token).collect();
        let n_ids = i32::try_from(ids.len())
            .map_err(|_| Error::InvalidRequest("too many tokens".into()))?;
        let vocab = self.ptr;
        grow_call(
            |buf| {
                // SAFETY: valid vocab; ids and buf describe live buffers of the given lengths.
                unsafe {
                    sys::llama_detokenize(
                        vocab,
                        ids.as_ptr(),
                        n_ids,
                        buf.as_mut_ptr().cast(),
                        buf.len().min(i32::MAX as usize) as i32,
                        remove_special,
                        unparse_special,
                    )
                }
            },
            "llama_detokenize",
        )
    }

    pub(crate) fn token_piece(&self, token: TokenId, special: bool) -> Result<Vec<u8>> {
        self.check_ids(&[token])?;
        let vocab = self.ptr;
        grow_call(
            |buf| {
                // SAFETY: valid vocab and token id; buf is writable for its length.
                unsafe {
                    sys::llama_token_to_piece(
                        vocab,
                        token as sys::llama_token,
                        buf.as_mut_ptr().cast(),
                        buf.len().min(i32::MAX as usize) as i32,
                        0,
                        special,
                    )
                }
            },
            "llama_token_to_piece",
        )
    }
}

/// Call a llama.cpp "write into this buffer or tell me the size" function: a negative return
/// is the size needed.
fn grow_call(mut f: impl FnMut(&mut [u8]) -> i32, what: &str) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 64];
    for _ in 0..2 {
        let n = f(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        if n == i32::MIN {
            return Err(Error::InvalidRequest(format!("{what}: result too large")));
        }
        buf = vec![0u8; n.unsigned_abs() as usize];
    }
    Err(Error::Llama(format!("{what}: size changed between calls")))
}
