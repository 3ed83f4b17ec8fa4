//! GGUF v2/v3 reader: memory-mapped, tensors as zero-copy views.
//!
//! Layout (ggml/src/gguf.cpp, `gguf_init_from_file_impl`): magic `GGUF`, u32 version, u64 tensor
//! count, u64 metadata count, the key/value pairs, the tensor descriptors (name, n_dims, ne[],
//! type, offset), padding to `general.alignment`, then the data section. Every field that sizes
//! anything is checked against the bytes actually present before it is used, so a hostile header
//! cannot make the reader allocate or index past the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::types::{element_count, GgmlType, TypeDialect};
use super::value::{Value, ValueType};
use crate::error::{Error, Result};

/// ggml's limit on tensor dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Default data alignment (`GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Nesting limit for arrays of arrays: the spec allows nesting, nothing real uses more than one.
const MAX_ARRAY_DEPTH: usize = 8;
/// Longest tensor name ggml accepts (`GGML_MAX_NAME` - 1).
pub const MAX_NAME_LEN: usize = 63;

/// One tensor's descriptor, checked against the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// Shape in GGUF order: ne0 (the contiguous row length) first.
    pub shape: Vec<u64>,
    /// Offset of the tensor's bytes from the start of the data section.
    pub offset: u64,
    /// Bytes the tensor occupies.
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// The parsed header of a GGUF file: everything but the tensor bytes.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
    /// How ids 36-39 were read, and why.
    pub dialect: TypeDialect,
    pub dialect_reason: String,
    meta_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl GgufHeader {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// `general.architecture`, if present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }
}

enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// How an open file's bytes are held in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residence {
    /// Memory-mapped: each 4 KB page comes from the page cache when first read, nothing is
    /// copied (what `inspect` needs: the header and a few tensors).
    Mapped,
    /// Read once into anonymous memory that the kernel may back with 2 MB pages (on Linux it
    /// is asked with `madvise(MADV_HUGEPAGE)`; elsewhere, or where transparent huge pages are
    /// off, the pages are the usual ones). Decode reads every weight once per token, 1.2 GB
    /// for the 2B-4T shape: over 4 KB pages every page is a TLB miss, and the hardware
    /// prefetcher stops at each page's end. 2B-4T TQ2_0 decode, `forward_speed MODEL 64 32 3
    /// amx 2`, two alternating pairs: 1794-1839 ms per 32 steps against 1918-1966 mapped (the
    /// lm_head 25.3-25.6 GB/s against 23.2-24.1). Reading costs a copy from the page cache at
    /// load and holds the bytes outside it (peak RSS about the file's size either way: a
    /// mapped file's pages count once read).
    Resident,
}

/// An open GGUF file: the checked header plus the file bytes (mapped or read, [`Residence`]).
pub struct GgufFile {
    path: PathBuf,
    label: String,
    backing: Backing,
    header: GgufHeader,
}

/// A tensor's descriptor and its bytes, borrowed from the file.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

/// The whole of `file`, `len` bytes by the file system (no header field), read into anonymous
/// memory, huge pages asked for ([`Residence`]).
fn read_resident(file: &mut std::fs::File, len: u64) -> std::io::Result<memmap2::Mmap> {
    use std::io::Read;
    let len = usize::try_from(len)
        .map_err(|_| std::io::Error::other("larger than this machine's address space"))?;
    let mut anon = memmap2::MmapMut::map_anon(len)?;
    // Advice only: where the kernel has no transparent huge pages it is refused, and the
    // usual pages serve.
    #[cfg(target_os = "linux")]
    let _ = anon.advise(memmap2::Advice::HugePage);
    file.read_exact(&mut anon)?;
    // Anything the file grew by since its size was read is not read; a file that shrank
    // fails `read_exact`.
    let map = anon.make_read_only()?;
    Ok(map)
}

impl GgufFile {
    /// Open and check a GGUF file; its bytes are memory-mapped ([`Residence::Mapped`]).
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        Self::open_with(path, Residence::Mapped)
    }

    /// Open and check a GGUF file, its bytes held as `residence` says.
    pub fn open_with(path: impl AsRef<Path>, residence: Residence) -> Result<GgufFile> {
        let path = path.as_ref();
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        // An empty file is mapped (an anonymous map cannot be empty); it fails the header
        // check either way.
        let map = match residence {
            Residence::Resident if len > 0 => {
                read_resident(&mut file, len).map_err(|e| Error::io(path, e))?
            }
            // SAFETY: the mapping is read-only and private to this process. If another process
            // truncates the file while it is mapped, reads past the new end fault (SIGBUS);
            // that is the documented contract of every mmap-based model loader, llama.cpp's
            // included.
            Residence::Mapped | Residence::Resident => {
                unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?
            }
        };
        let label = path.display().to_string();
        let header = parse(&map, &label)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            label,
            backing: Backing::Mmap(map),
            header,
        })
    }

    /// Check a GGUF held in memory; `label` names it in messages.
    pub fn from_bytes(bytes: Vec<u8>, label: &str) -> Result<GgufFile> {
        let header = parse(&bytes, label)?;
        Ok(GgufFile {
            path: PathBuf::from(label),
            label: label.to_string(),
            backing: Backing::Owned(bytes),
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name used for this file in messages (its path as given).
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.header.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.header.get(key)
    }

    pub fn tensors(&self) -> impl ExactSizeIterator<Item = TensorView<'_>> {
        self.header.tensors.iter().map(|info| self.view(info))
    }

    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.header.tensor_info(name).map(|info| self.view(info))
    }

    fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        // Ranges were checked against the file length in `parse`. A zero-byte tensor is not
        // sliced: its position may be past the end when the file stops before the data section
        // (nothing after the header is needed then).
        if info.n_bytes == 0 {
            return TensorView { info, data: &[] };
        }
        let start = (self.header.data_offset + info.offset) as usize;
        TensorView {
            info,
            data: &self.bytes()[start..start + info.n_bytes as usize],
        }
    }
}

/// Read position over the file bytes, producing errors that name the field and offset.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::Malformed {
            file: self.file.to_string(),
            offset: self.pos as u64,
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, field: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(
                field,
                format!(
                    "needs {n} bytes but the file ends after {} (truncated?)",
                    self.remaining()
                ),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, field)?;
        Ok(s.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self, f: &str) -> Result<u8> {
        Ok(self.array::<1>(f)?[0])
    }
    fn u16(&mut self, f: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(f)?))
    }
    fn u32(&mut self, f: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(f)?))
    }
    fn u64(&mut self, f: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(f)?))
    }

    fn string(&mut self, field: &str) -> Result<String> {
        let start = self.pos;
        let len = self.u64(field)?;
        let bytes = self.take(len, field).map_err(|_| {
            self.err_at(
                start,
                field,
                format!(
                    "string length {len} exceeds the {} bytes left in the file",
                    self.remaining()
                ),
            )
        })?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.err_at(start, field, format!("string is not valid UTF-8: {e}")))
    }

    fn err_at(&self, pos: usize, field: &str, reason: String) -> Error {
        Error::Malformed {
            file: self.file.to_string(),
            offset: pos as u64,
            field: field.to_string(),
            reason,
        }
    }

    fn value(&mut self, ty: ValueType, field: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8(field)?),
            ValueType::I8 => Value::I8(self.u8(field)? as i8),
            ValueType::U16 => Value::U16(self.u16(field)?),
            ValueType::I16 => Value::I16(self.u16(field)? as i16),
            ValueType::U32 => Value::U32(self.u32(field)?),
            ValueType::I32 => Value::I32(self.u32(field)? as i32),
            ValueType::F32 => Value::F32(f32::from_bits(self.u32(field)?)),
            ValueType::U64 => Value::U64(self.u64(field)?),
            ValueType::I64 => Value::I64(self.u64(field)? as i64),
            ValueType::F64 => Value::F64(f64::from_bits(self.u64(field)?)),
            ValueType::Bool => match self.u8(field)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    self.pos -= 1;
                    return Err(self.err(field, format!("bool must be 0 or 1, got {b}")));
                }
            },
            ValueType::String => Value::String(self.string(field)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(
                        field,
                        format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
                    ));
                }
                let at = self.pos;
                let raw = self.u32(field)?;
                let elem = ValueType::from_u32(raw).ok_or_else(|| {
                    self.err_at(at, field, format!("unknown array element type {raw}"))
                })?;
                let count_at = self.pos;
                let count = self.u64(field)?;
                // Bound the count by the bytes present before allocating anything.
                let max = self.remaining() / elem.min_encoded_size();
                if count > max {
                    return Err(self.err_at(
                        count_at,
                        field,
                        format!(
                            "array of {count} {} values cannot fit in the {} bytes left",
                            elem.name(),
                            self.remaining()
                        ),
                    ));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, field, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }
}

/// Parse and check a whole GGUF image. `file` names it in errors.
pub fn parse(buf: &[u8], file: &str) -> Result<GgufHeader> {
    let mut c = Cursor { buf, pos: 0, file };
    let magic = c.array::<4>("magic")?;
    if &magic != b"GGUF" {
        c.pos = 0;
        return Err(c.err(
            "magic",
            format!("expected \"GGUF\", found {magic:02x?}: not a GGUF file"),
        ));
    }
    let version = c.u32("version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(c.err(
                "version",
                "GGUF v1 (32-bit counts) is not supported; convert with a current gguf-py",
            ))
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(c.err(
                "version",
                "big-endian GGUF is not supported (version reads as byte-swapped)",
            ))
        }
        v => return Err(c.err("version", format!("unsupported GGUF version {v}"))),
    }
    let tensor_count = c.u64("tensor_count")?;
    let kv_count = c.u64("metadata_kv_count")?;
    // A tensor descriptor takes at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset)
    // bytes, a key/value at least 8 (key len) + 4 (type) + 1.
    if tensor_count > c.remaining() / 24 {
        return Err(c.err(
            "tensor_count",
            format!(
                "{tensor_count} tensors cannot fit in the {} bytes of the file",
                buf.len()
            ),
        ));
    }
    if kv_count > c.remaining() / 13 {
        return Err(c.err(
            "metadata_kv_count",
            format!(
                "{kv_count} metadata entries cannot fit in the {} bytes of the file",
                buf.len()
            ),
        ));
    }

    let mut metadata = Vec::with_capacity(kv_count as usize);
    let mut meta_index = HashMap::with_capacity(kv_count as usize);
    for i in 0..kv_count {
        let key_at = c.pos;
        let key = c.string(&format!("metadata[{i}].key"))?;
        let at = c.pos;
        let raw = c.u32(&format!("metadata '{key}' type"))?;
        let ty = ValueType::from_u32(raw)
            .ok_or_else(|| c.err_at(at, &key, format!("unknown metadata value type {raw}")))?;
        let value = c.value(ty, &format!("metadata '{key}'"), 0)?;
        if meta_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(c.err_at(key_at, "metadata key", format!("duplicate key '{key}'")));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .map(|(_, v)| v)
    {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => *a as u64,
        Some(v) => {
            return Err(Error::Metadata {
                file: file.into(),
                key: "general.alignment".into(),
                reason: format!("must be a non-zero power of two u32, got {v:?}"),
            })
        }
    };

    // Descriptors first (raw ids), types resolved once the dialect is known.
    struct Raw {
        name: String,
        shape: Vec<u64>,
        type_id: u32,
        offset: u64,
    }
    let mut raws = Vec::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let name = c.string(&format!("tensor[{i}].name"))?;
        if name.len() > MAX_NAME_LEN {
            return Err(bad(
                file,
                &name,
                format!(
                    "name is {} bytes, ggml allows at most {MAX_NAME_LEN}",
                    name.len()
                ),
            ));
        }
        let at = c.pos;
        let n_dims = c.u32(&format!("tensor '{name}' n_dims"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(c.err_at(
                at,
                &format!("tensor '{name}' n_dims"),
                format!("{n_dims} dimensions, ggml allows at most {MAX_DIMS}"),
            ));
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            shape.push(c.u64(&format!("tensor '{name}' ne[{d}]"))?);
        }
        let type_id = c.u32(&format!("tensor '{name}' type"))?;
        let offset = c.u64(&format!("tensor '{name}' offset"))?;
        raws.push(Raw {
            name,
            shape,
            type_id,
            offset,
        });
    }

    let arch = metadata
        .iter()
        .find(|(k, _)| k == "general.architecture")
        .and_then(|(_, v)| v.as_str())
        .unwrap_or("");
    let (dialect, dialect_reason) = decide_dialect(arch, raws.iter().map(|r| r.type_id));

    let data_offset = align_up(c.pos as u64, alignment).ok_or_else(|| {
        c.err(
            "data section",
            "offset overflows while aligning the data section",
        )
    })?;
    let data_len = (buf.len() as u64).saturating_sub(data_offset);
    if data_offset > buf.len() as u64 && raws.iter().any(|r| r.shape.iter().all(|&d| d > 0)) {
        return Err(c.err(
            "data section",
            format!(
                "the data section would start at byte {data_offset}, past the end of the file \
                 ({} bytes)",
                buf.len()
            ),
        ));
    }

    let mut tensors = Vec::with_capacity(raws.len());
    let mut tensor_index = HashMap::with_capacity(raws.len());
    for raw in raws {
        let name = raw.name;
        let ty =
            GgmlType::from_id(raw.type_id, dialect).map_err(|reason| Error::UnsupportedType {
                file: file.into(),
                tensor: name.clone(),
                reason,
            })?;
        element_count(&raw.shape).map_err(|r| bad(file, &name, r))?;
        let n_bytes = ty
            .tensor_bytes(&raw.shape)
            .map_err(|r| bad(file, &name, r))?;
        if raw.offset % alignment != 0 {
            return Err(bad(
                file,
                &name,
                format!(
                    "data offset {} is not a multiple of the alignment {alignment}",
                    raw.offset
                ),
            ));
        }
        match raw.offset.checked_add(n_bytes) {
            Some(end) if end <= data_len => {}
            _ => {
                return Err(bad(
                    file,
                    &name,
                    format!(
                        "{n_bytes} bytes at data offset {} run past the end of the data section \
                         ({data_len} bytes): file truncated or offset corrupt",
                        raw.offset
                    ),
                ))
            }
        }
        if tensor_index.insert(name.clone(), tensors.len()).is_some() {
            return Err(bad(file, &name, "duplicate tensor name".into()));
        }
        tensors.push(TensorInfo {
            name,
            ty,
            shape: raw.shape,
            offset: raw.offset,
            n_bytes,
        });
    }

    // No two tensors may share bytes.
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        if pair[0].offset + pair[0].n_bytes > pair[1].offset {
            return Err(bad(
                file,
                &pair[1].name,
                format!(
                    "bytes {}..{} overlap tensor '{}' (bytes {}..{})",
                    pair[1].offset,
                    pair[1].offset + pair[1].n_bytes,
                    pair[0].name,
                    pair[0].offset,
                    pair[0].offset + pair[0].n_bytes
                ),
            ));
        }
    }

    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
        dialect,
        dialect_reason,
        meta_index,
        tensor_index,
    })
}

fn bad(file: &str, tensor: &str, reason: String) -> Error {
    Error::BadTensor {
        file: file.into(),
        tensor: tensor.into(),
        reason,
    }
}

/// Round `x` up to a multiple of `align` (a power of two).
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// Decide how ids 36-39 are read. Id 36 exists only as the fork's I2_S (mainline's IQ4_NL_4_4
/// was a runtime repack type that no file carries), so its presence, or a BitNet architecture
/// together with any of 36-39, means the fork.
fn decide_dialect(arch: &str, ids: impl Iterator<Item = u32>) -> (TypeDialect, String) {
    let ids: Vec<u32> = ids.filter(|id| (36..=39).contains(id)).collect();
    if ids.is_empty() {
        return (
            TypeDialect::Mainline,
            "no tensor uses type ids 36-39; mainline ids".into(),
        );
    }
    if ids.contains(&36) {
        return (
            TypeDialect::BitnetCpp,
            "type id 36 present: only bitnet.cpp's I2_S uses it in files".into(),
        );
    }
    if arch.starts_with("bitnet") {
        return (
            TypeDialect::BitnetCpp,
            format!("architecture '{arch}' with type ids 37-39: bitnet.cpp fork ids"),
        );
    }
    (
        TypeDialect::Mainline,
        format!("architecture '{arch}' is not a bitnet.cpp one: ids 37-39 read as mainline"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgmlType, GgufWriter};

    /// A file whose only tensor is empty, cut inside the padding before the data section: the
    /// header is whole, so it opens, and the tensor reads as empty instead of slicing past the end.
    #[test]
    fn zero_byte_tensor_view_when_data_section_is_past_the_end() {
        let mut w = GgufWriter::new();
        w.add_tensor("empty", GgmlType::F32, &[0], vec![]).unwrap();
        let mut bytes = w.to_bytes();
        let data_offset = parse(&bytes, "t").unwrap().data_offset as usize;
        assert_eq!(bytes.len(), data_offset);
        bytes.truncate(data_offset - 1);
        let f = GgufFile::from_bytes(bytes, "t").unwrap();
        assert!(f.tensor("empty").unwrap().data.is_empty());
    }
}
