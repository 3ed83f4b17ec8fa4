//! xval's pure-Rust BitNet engine.
//!
//! - [`gguf`]: zero-copy GGUF reader and writer, the ggml type table.
//! - [`quant`]: one module per tensor format (layout, dequantize, encode; later the scalar
//!   kernels with their SIMD variants beside them).
//! - [`tokenizer`]: the GPT-2-style byte-level BPE tokenizer of GGUF vocabularies (LLaMA-3),
//!   with llama.cpp's encode/decode semantics.

pub mod error;
pub mod gguf;
pub mod quant;
pub mod tokenizer;

pub use error::{Error, Result};
