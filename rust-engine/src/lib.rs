//! xval's pure-Rust BitNet engine.
//!
//! - [`gguf`]: zero-copy GGUF reader and writer, the ggml type table.
//! - [`quant`]: one module per tensor format (layout, dequantize, encode; later the scalar
//!   kernels with their SIMD variants beside them).
//! - [`taps`]: named intermediate tensors, named as llama.cpp names its graph nodes.

pub mod error;
pub mod gguf;
pub mod model;
pub mod numerics;
pub mod quant;

pub use error::{Error, Result};
pub mod taps;
