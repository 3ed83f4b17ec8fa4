//! xval's pure-Rust BitNet engine.
//!
//! - [`gguf`]: zero-copy GGUF reader and writer, the ggml type table.
//! - [`quant`]: one module per tensor format: layout, reference dequantize/encode, activation
//!   quantization and the scalar dot products (SIMD variants will sit beside them);
//!   [`quant::kernels`] names the kernel set and backend that ran.
//! - [`model`]: architectures as data, hyper-parameters, the forward pass and KV cache.
//! - [`numerics`]: the named numerics profiles (`bitnet-cpp`, `ggml`, `f32`).
//! - [`sampling`]: greedy token choice (llama.cpp's tie rule).
//! - [`cpu`]: the CPU features kernels may dispatch on.
//! - [`taps`]: named intermediate tensors, named as llama.cpp names its graph nodes.
//! - [`tokenizer`]: the GPT-2-style byte-level BPE tokenizer of GGUF vocabularies (LLaMA-3),
//!   with llama.cpp's encode/decode semantics.
//! - [`transcode`]: lossless I2_S -> TQ2_0 (+ `.scale` tensors) for mainline llama.cpp.

pub mod cpu;
pub mod error;
pub mod gguf;
pub mod model;
pub mod numerics;
pub mod quant;
pub mod sampling;
pub mod taps;
pub mod tokenizer;
pub mod transcode;

pub use error::{Error, Result};
