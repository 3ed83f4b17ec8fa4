//! GGUF: the reader (memory-mapped, zero-copy tensor views, every sizing field checked), the
//! writer, the ggml type table and metadata values. Spec: ggml's `docs/gguf.md`.

mod reader;
mod types;
mod value;
mod writer;

pub use reader::{
    align_up, parse, GgufFile, GgufHeader, Residence, TensorInfo, TensorView, DEFAULT_ALIGNMENT,
    MAX_DIMS, MAX_NAME_LEN,
};
pub use types::{element_count, BlockSize, GgmlType, TypeDialect, I2S_TRAILER_BYTES};
pub use value::{Value, ValueType};
pub use writer::GgufWriter;

impl Value {
    /// An array of strings.
    pub fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Value {
        Value::Array(
            ValueType::String,
            items.into_iter().map(|s| Value::String(s.into())).collect(),
        )
    }

    /// An array of i32.
    pub fn i32s(items: impl IntoIterator<Item = i32>) -> Value {
        Value::Array(ValueType::I32, items.into_iter().map(Value::I32).collect())
    }

    /// An array of f32.
    pub fn f32s(items: impl IntoIterator<Item = f32>) -> Value {
        Value::Array(ValueType::F32, items.into_iter().map(Value::F32).collect())
    }
}
