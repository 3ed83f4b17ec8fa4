//! GGUF v3 writer (the layout `gguf_write_to_file` produces): used by the fixtures, the
//! 2B-4T-shaped synthesizer and the I2_S -> TQ2_0 transcode.

use std::io::Write;
use std::path::Path;

use super::reader::{align_up, DEFAULT_ALIGNMENT, MAX_DIMS, MAX_NAME_LEN};
use super::types::GgmlType;
use super::value::Value;
use crate::error::{Error, Result};

struct PendingTensor {
    name: String,
    ty: GgmlType,
    shape: Vec<u64>,
    data: Vec<u8>,
}

/// Builds a GGUF v3 image: metadata in insertion order, tensors in insertion order, each tensor's
/// bytes aligned to `general.alignment`.
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Set a metadata value (replacing an earlier one of the same key in place).
    /// `general.alignment` also sets the data alignment; it must be a power-of-two u32.
    pub fn set(&mut self, key: impl Into<String>, value: Value) -> Result<&mut Self> {
        let key = key.into();
        if let Err(reason) = check_homogeneous(&value) {
            return Err(Error::Invalid(format!("metadata '{key}': {reason}")));
        }
        if key == "general.alignment" {
            match value {
                Value::U32(a) if a != 0 && a.is_power_of_two() => self.alignment = a as u64,
                ref v => {
                    return Err(Error::Invalid(format!(
                        "general.alignment must be a non-zero power of two u32, got {v:?}"
                    )))
                }
            }
        }
        if let Some(slot) = self.metadata.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.metadata.push((key, value));
        }
        Ok(self)
    }

    /// Add a tensor; `data` must be exactly the bytes the type and shape call for.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        shape: &[u64],
        data: Vec<u8>,
    ) -> Result<&mut Self> {
        let name = name.into();
        let invalid = |reason: String| Error::Invalid(format!("tensor '{name}': {reason}"));
        if name.len() > MAX_NAME_LEN {
            return Err(invalid(format!("name longer than {MAX_NAME_LEN} bytes")));
        }
        if shape.is_empty() || shape.len() > MAX_DIMS {
            return Err(invalid(format!("needs 1..={MAX_DIMS} dimensions")));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(invalid("duplicate tensor name".into()));
        }
        let want = ty.tensor_bytes(shape).map_err(invalid)?;
        if want != data.len() as u64 {
            return Err(invalid(format!(
                "{ty} {shape:?} needs {want} bytes, got {}",
                data.len()
            )));
        }
        self.tensors.push(PendingTensor {
            name,
            ty,
            shape: shape.to_vec(),
            data,
        });
        Ok(self)
    }

    /// Serialize to any writer.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        // The header (metadata and descriptors) is small next to the data: build it in memory.
        let mut head = Vec::new();
        head.extend_from_slice(b"GGUF");
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            encode_string(&mut head, key);
            head.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            encode_value(&mut head, value);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            encode_string(&mut head, &t.name);
            head.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in &t.shape {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = align_up(offset + t.data.len() as u64, self.alignment).expect("size fits");
        }
        let data_start = align_up(head.len() as u64, self.alignment).expect("size fits");
        head.resize(data_start as usize, 0);
        w.write_all(&head)?;
        let zeros = vec![0u8; self.alignment as usize];
        let mut written = 0u64;
        for (t, off) in self.tensors.iter().zip(offsets) {
            w.write_all(&zeros[..(off - written) as usize])?;
            w.write_all(&t.data)?;
            written = off + t.data.len() as u64;
        }
        // Pad the last tensor too, as gguf_write_to_file does.
        let end = align_up(written, self.alignment).expect("size fits");
        w.write_all(&zeros[..(end - written) as usize])
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }

    /// Write to `path` atomically: a temporary file beside it, then a rename.
    pub fn write_file(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension(format!(
            "{}.tmp",
            path.extension().and_then(|e| e.to_str()).unwrap_or("gguf")
        ));
        let io = |e| Error::io(path, e);
        {
            let f = std::fs::File::create(&tmp).map_err(io)?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            self.write_to(&mut w).map_err(io)?;
            w.into_inner()
                .map_err(|e| Error::io(path, e.into_error()))?
                .sync_all()
                .map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Arrays must hold items of their declared element type, at every level.
fn check_homogeneous(v: &Value) -> std::result::Result<(), String> {
    if let Value::Array(elem, items) = v {
        for (i, item) in items.iter().enumerate() {
            if item.value_type() != *elem {
                return Err(format!(
                    "array of {} has a {} at index {i}",
                    elem.name(),
                    item.value_type().name()
                ));
            }
            check_homogeneous(item)?;
        }
    }
    Ok(())
}

fn encode_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn encode_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => encode_string(out, s),
        Value::Array(elem, items) => {
            out.extend_from_slice(&(*elem as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                debug_assert_eq!(item.value_type(), *elem, "array items must share one type");
                encode_value(out, item);
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
