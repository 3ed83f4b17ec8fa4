//! xval's pure-Rust BitNet engine.
//!
//! - [`gguf`]: zero-copy GGUF reader and writer, the ggml type table.
//! - [`quant`]: one module per tensor format (layout, dequantize, encode; later the scalar
//!   kernels with their SIMD variants beside them).

pub mod error;
pub mod gguf;
pub mod quant;

pub use error::{Error, Result};
