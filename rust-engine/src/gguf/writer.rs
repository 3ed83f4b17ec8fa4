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
    n_bytes: u64,
    /// `None` for a tensor declared with [`GgufWriter::declare_tensor`]: its bytes come from the
    /// fill callback of [`GgufWriter::write_file_with`].
    data: Option<Vec<u8>>,
}

/// Counts what a fill callback writes, so a wrong-sized tensor is an error, not a corrupt file.
struct Counting<'a> {
    inner: &'a mut dyn Write,
    written: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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
        self.push_tensor(name.into(), ty, shape, Some(data))
    }

    /// Declare a tensor whose bytes are produced while the file is written, by the fill callback
    /// of [`GgufWriter::write_file_with`]: lets a multi-GB model stream to disk instead of being
    /// built in memory first.
    pub fn declare_tensor(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        shape: &[u64],
    ) -> Result<&mut Self> {
        self.push_tensor(name.into(), ty, shape, None)
    }

    fn push_tensor(
        &mut self,
        name: String,
        ty: GgmlType,
        shape: &[u64],
        data: Option<Vec<u8>>,
    ) -> Result<&mut Self> {
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
        if let Some(data) = &data {
            if want != data.len() as u64 {
                return Err(invalid(format!(
                    "{ty} {shape:?} needs {want} bytes, got {}",
                    data.len()
                )));
            }
        }
        self.tensors.push(PendingTensor {
            name,
            ty,
            shape: shape.to_vec(),
            n_bytes: want,
            data,
        });
        Ok(self)
    }

    /// Serialize to any writer. Fails if a tensor was only declared.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        self.write_impl(w, &mut |i, _| {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "tensor '{}' was declared without data: use write_file_with",
                    self.tensors[i].name
                ),
            ))
        })
    }

    fn write_impl(
        &self,
        w: &mut dyn Write,
        fill: &mut dyn FnMut(usize, &mut dyn Write) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
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
            offset = align_up(offset + t.n_bytes, self.alignment).expect("size fits");
        }
        let data_start = align_up(head.len() as u64, self.alignment).expect("size fits");
        head.resize(data_start as usize, 0);
        w.write_all(&head)?;
        let zeros = vec![0u8; self.alignment as usize];
        let mut written = 0u64;
        for (i, (t, off)) in self.tensors.iter().zip(offsets).enumerate() {
            w.write_all(&zeros[..(off - written) as usize])?;
            match &t.data {
                Some(data) => w.write_all(data)?,
                None => {
                    let mut counting = Counting {
                        inner: &mut *w,
                        written: 0,
                    };
                    fill(i, &mut counting)?;
                    if counting.written != t.n_bytes {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "tensor '{}': the fill callback wrote {} bytes, {} {:?} needs {}",
                                t.name, counting.written, t.ty, t.shape, t.n_bytes
                            ),
                        ));
                    }
                }
            }
            written = off + t.n_bytes;
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
        self.write_file_with(path, |i, _| {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "tensor '{}' was declared without data",
                    self.tensors[i].name
                ),
            ))
        })
    }

    /// Write to `path` directly, neither synced to disk nor renamed into place: for a scratch
    /// file that lives only as long as the run that reads it (an oracle's transcoded model),
    /// where [`GgufWriter::write_file`]'s sync of a multi-GB file costs seconds and buys
    /// nothing. The tensors' bytes as [`GgufWriter::write_file_with`] takes them; the file is
    /// removed on an error.
    pub fn write_scratch_file_with(
        &self,
        path: &Path,
        mut fill: impl FnMut(usize, &mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        self.write_path(path, &mut fill, false)
            .map_err(|e| Error::io(path, e))
    }

    /// Write to `path` atomically; `fill(i, w)` must write exactly the bytes of the `i`-th tensor
    /// (in insertion order) for every tensor added with [`GgufWriter::declare_tensor`]. Tensors
    /// are filled in file order, one at a time. On any error the temporary file is removed.
    pub fn write_file_with(
        &self,
        path: &Path,
        mut fill: impl FnMut(usize, &mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let tmp = path.with_extension(format!(
            "{}.tmp",
            path.extension().and_then(|e| e.to_str()).unwrap_or("gguf")
        ));
        let io = |e| Error::io(path, e);
        self.write_path(&tmp, &mut fill, true).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The file written to `path` through a 1 MB buffer, synced to disk where `sync`; removed
    /// again on any error.
    fn write_path(
        &self,
        path: &Path,
        fill: &mut dyn FnMut(usize, &mut dyn Write) -> std::io::Result<()>,
        sync: bool,
    ) -> std::io::Result<()> {
        let written = (|| {
            let f = std::fs::File::create(path)?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            self.write_impl(&mut w, fill)?;
            let f = w.into_inner().map_err(|e| e.into_error())?;
            if sync {
                f.sync_all()?;
            }
            Ok(())
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(path);
        }
        written
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn streamed_tensors_match_in_memory_ones() {
        let a = f32_bytes(&[1.0, 2.0, 3.0]);
        let b = f32_bytes(&[4.0; 40]);
        let mut eager = GgufWriter::new();
        eager.set("k", Value::U32(7)).unwrap();
        eager
            .add_tensor("a", GgmlType::F32, &[3], a.clone())
            .unwrap();
        eager
            .add_tensor("b", GgmlType::F32, &[8, 5], b.clone())
            .unwrap();

        let mut lazy = GgufWriter::new();
        lazy.set("k", Value::U32(7)).unwrap();
        lazy.add_tensor("a", GgmlType::F32, &[3], a).unwrap();
        lazy.declare_tensor("b", GgmlType::F32, &[8, 5]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        lazy.write_file_with(&path, |i, w| {
            assert_eq!(i, 1, "only the declared tensor is filled");
            // Two writes: the callback may produce a tensor in pieces.
            w.write_all(&b[..60])?;
            w.write_all(&b[60..])
        })
        .unwrap();
        let streamed = std::fs::read(&path).unwrap();
        assert_eq!(streamed, eager.to_bytes());
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.tensor("b").unwrap().data, &b[..]);
    }

    #[test]
    fn wrong_fill_size_is_an_error_and_leaves_no_file() {
        let mut w = GgufWriter::new();
        w.declare_tensor("t", GgmlType::F32, &[4]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let err = w
            .write_file_with(&path, |_, w| w.write_all(&[0u8; 12]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tensor 't'") && err.contains("12 bytes"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let err = w.write_file(&path).unwrap_err().to_string();
        assert!(err.contains("declared without data"), "{err}");
    }
}
