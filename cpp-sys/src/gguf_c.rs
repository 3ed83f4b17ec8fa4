//! llama.cpp's own GGUF writer and reader (ggml's `gguf_*` C API from the pinned tree,
//! `ggml/src/gguf.cpp`), wrapped safely: a second, independent implementation of the format to
//! check ours against in both directions (files llama.cpp writes, and files we write as
//! llama.cpp reads them).
//!
//! - [`GgufBuilder`]: `gguf_init_empty`, `gguf_set_val_*`, `ggml_new_tensor` (in a metadata-only
//!   ggml context) + `gguf_add_tensor` + `gguf_set_tensor_data`, `gguf_write_to_file`. Tensor
//!   bodies are either quantized from f32 by `ggml_quantize_chunk` (ggml's reference quantizers,
//!   which also convert to F16/BF16/F32) or given as raw bytes of the exact size.
//! - [`read`]: `gguf_init_from_file` (metadata only) listing every tensor's name, type, shape
//!   and offset.
//!
//! ggml aborts the process on several misuses (duplicate tensor name, a row not a multiple of
//! the block size, a name of 64 bytes or more, a full ggml context): every one of them is
//! checked here first and returned as an [`Error`] instead.

// bindgen gives `ggml_type` the C enum's underlying type, u32 with GCC/Clang on Linux but i32
// on MSVC: the casts between it and u32 are needed on some targets and no-ops on others.
#![allow(clippy::unnecessary_cast)]

use std::ffi::{c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;
use xval_engine::gguf::GgmlType;

use crate::error::{Error, Result};
use crate::llama_cpp::{clear_log, install_log, recent_log};

/// ggml's `GGML_MAX_NAME`: tensor names hold at most 63 bytes plus the NUL.
const MAX_NAME: usize = 64;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: usize = 4;

/// One tensor as llama.cpp's reader lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorListing {
    pub name: String,
    /// The ggml type id (mainline numbering).
    pub type_id: u32,
    /// `ggml_type_name` (lowercase: `f32`, `q8_0`, `tq2_0`, ...).
    pub type_name: String,
    /// `ne[0..n_dims]`, ne0 first, `n_dims = ggml_n_dims` (trailing 1s dropped, at least one).
    pub shape: Vec<u64>,
    /// Offset from the start of the data section (`gguf_get_tensor_offset`).
    pub offset: u64,
    /// `gguf_get_tensor_size` (`ggml_nbytes`).
    pub bytes: u64,
}

/// What llama.cpp's reader saw in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufListing {
    pub version: u32,
    pub alignment: u64,
    /// Absolute file offset of the data section (`gguf_get_data_offset`).
    pub data_offset: u64,
    pub n_kv: u64,
    pub tensors: Vec<TensorListing>,
}

/// `ne` with trailing 1s dropped (at least one dimension): the shape as `ggml_n_dims` sees it.
/// GGUF stores `n_dims` explicitly, but ggml's reader keeps only `ne[4]`, so a stored trailing
/// dimension of 1 is not observable through llama.cpp; compare shapes in this form.
pub fn ggml_dims(shape: &[u64]) -> Vec<u64> {
    let n = shape.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1);
    let mut v = shape[..n.min(shape.len())].to_vec();
    if v.is_empty() {
        v.push(1);
    }
    v
}

fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidRequest(format!("{what} {s:?} contains a NUL byte")))
}

fn path_cstring(p: &Path) -> Result<CString> {
    let s = p
        .to_str()
        .ok_or_else(|| Error::InvalidRequest(format!("{}: path is not UTF-8", p.display())))?;
    cstring("path", s)
}

/// The mainline type id of `ty`, refused when this ggml does not know it (I2_S's id 36 is a
/// removed type in mainline, with block size 0).
fn mainline_type(ty: GgmlType) -> Result<(sys::ggml_type, u64, u64)> {
    let id = ty.id();
    if id >= sys::GGML_TYPE_COUNT as u32 {
        return Err(Error::Unsupported(format!(
            "ggml type {} (id {id}) is outside mainline ggml's {} types",
            ty.name(),
            sys::GGML_TYPE_COUNT
        )));
    }
    let t = id as sys::ggml_type;
    // SAFETY: id checked against GGML_TYPE_COUNT; pure table lookups.
    let (blck, size) = unsafe { (sys::ggml_blck_size(t), sys::ggml_type_size(t)) };
    if blck <= 0 || size == 0 {
        return Err(Error::Unsupported(format!(
            "ggml type {} (id {id}) has no layout in mainline ggml (removed type)",
            ty.name()
        )));
    }
    Ok((t, blck as u64, size as u64))
}

/// The body of a tensor handed to [`GgufBuilder::add_tensor`].
pub enum TensorData<'a> {
    /// Values to convert with `ggml_quantize_chunk` (one per element).
    Quantize(&'a [f32]),
    /// Bytes already in the type's layout (exactly `ggml_nbytes` of them).
    Raw(&'a [u8]),
}

/// A GGUF file built with llama.cpp's own writer.
pub struct GgufBuilder {
    gguf: NonNull<sys::gguf_context>,
    /// Metadata-only ggml context holding the tensors' descriptions (no data).
    ggml: NonNull<sys::ggml_context>,
    capacity: usize,
    /// Tensor bodies: gguf keeps only a pointer to each (`gguf_set_tensor_data`), so they live
    /// here, each in its own heap allocation, until the builder goes.
    bodies: Vec<Vec<u8>>,
}

impl GgufBuilder {
    /// An empty file that can take up to `max_tensors` tensors.
    pub fn new(max_tensors: usize) -> Result<GgufBuilder> {
        if max_tensors == 0 || max_tensors > 1 << 16 {
            return Err(Error::InvalidRequest(format!(
                "max_tensors must be 1..=65536, got {max_tensors}"
            )));
        }
        install_log();
        // SAFETY: plain constructors; a metadata-only context (no_alloc) of the given size.
        let (gguf, ggml) = unsafe {
            let params = sys::ggml_init_params {
                mem_size: sys::ggml_tensor_overhead() * max_tensors,
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            };
            (sys::gguf_init_empty(), sys::ggml_init(params))
        };
        match (NonNull::new(gguf), NonNull::new(ggml)) {
            (Some(gguf), Some(ggml)) => Ok(GgufBuilder {
                gguf,
                ggml,
                capacity: max_tensors,
                bodies: Vec::new(),
            }),
            (g, c) => {
                // SAFETY: free whichever was created, once.
                unsafe {
                    if let Some(g) = g {
                        sys::gguf_free(g.as_ptr());
                    }
                    if let Some(c) = c {
                        sys::ggml_free(c.as_ptr());
                    }
                }
                Err(Error::Llama("gguf_init_empty / ggml_init failed".into()))
            }
        }
    }

    /// `gguf_set_val_str`.
    pub fn set_str(&mut self, key: &str, value: &str) -> Result<()> {
        let (k, v) = (cstring("key", key)?, cstring("value", value)?);
        // SAFETY: valid context; NUL-terminated strings that outlive the call (gguf copies).
        unsafe { sys::gguf_set_val_str(self.gguf.as_ptr(), k.as_ptr(), v.as_ptr()) };
        Ok(())
    }

    /// `gguf_set_val_u32`.
    pub fn set_u32(&mut self, key: &str, value: u32) -> Result<()> {
        let k = cstring("key", key)?;
        // SAFETY: valid context; the key outlives the call (gguf copies it).
        unsafe { sys::gguf_set_val_u32(self.gguf.as_ptr(), k.as_ptr(), value) };
        Ok(())
    }

    /// `gguf_set_val_f32`.
    pub fn set_f32(&mut self, key: &str, value: f32) -> Result<()> {
        let k = cstring("key", key)?;
        // SAFETY: valid context; the key outlives the call (gguf copies it).
        unsafe { sys::gguf_set_val_f32(self.gguf.as_ptr(), k.as_ptr(), value) };
        Ok(())
    }

    /// Add tensor `name` of type `ty` and shape `shape` (ne0 first, 1 to 4 dimensions) with
    /// body `data`. Returns the body's size in bytes.
    pub fn add_tensor(
        &mut self,
        name: &str,
        ty: GgmlType,
        shape: &[u64],
        data: TensorData<'_>,
    ) -> Result<usize> {
        let bad = |reason: String| Error::InvalidRequest(format!("tensor {name:?}: {reason}"));
        let cname = cstring("tensor name", name)?;
        if name.len() >= MAX_NAME {
            return Err(bad(format!("name longer than {} bytes", MAX_NAME - 1)));
        }
        if self.bodies.len() >= self.capacity {
            return Err(bad(format!(
                "the builder holds at most {} tensors",
                self.capacity
            )));
        }
        // SAFETY: valid context, NUL-terminated name.
        if unsafe { sys::gguf_find_tensor(self.gguf.as_ptr(), cname.as_ptr()) } >= 0 {
            return Err(bad("duplicate tensor name".into()));
        }
        if shape.is_empty() || shape.len() > MAX_DIMS {
            return Err(bad(format!("{} dimensions (1..=4 allowed)", shape.len())));
        }
        let (t, blck, type_size) = mainline_type(ty).map_err(|e| bad(e.to_string()))?;
        if shape.iter().any(|&d| d == 0 || d > i64::MAX as u64) {
            return Err(bad(format!(
                "shape {shape:?} has an empty or huge dimension"
            )));
        }
        if !shape[0].is_multiple_of(blck) {
            return Err(bad(format!(
                "ne0 = {} is not a multiple of {}'s block of {blck}",
                shape[0],
                ty.name()
            )));
        }
        let n_elems = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= 1 << 40)
            .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
        let n_bytes = usize::try_from(n_elems / blck * type_size)
            .map_err(|_| bad("too large for this platform".into()))?;
        let body = match data {
            TensorData::Raw(bytes) => {
                if bytes.len() != n_bytes {
                    return Err(bad(format!(
                        "{} raw bytes given, {} has {n_bytes}",
                        bytes.len(),
                        ty.name()
                    )));
                }
                bytes.to_vec()
            }
            TensorData::Quantize(values) => {
                if values.len() as u64 != n_elems {
                    return Err(bad(format!(
                        "{} values given for {n_elems} elements",
                        values.len()
                    )));
                }
                let mut out = vec![0u8; n_bytes];
                let n_per_row = shape[0] as i64;
                let nrows = (n_elems / shape[0]) as i64;
                // SAFETY: `values` holds nrows * n_per_row f32; `out` has exactly the
                // quantized size of that many rows; no importance matrix (none of the types
                // this accepts requires one: checked below).
                let written = unsafe {
                    if sys::ggml_quantize_requires_imatrix(t) {
                        return Err(bad(format!("{} needs an importance matrix", ty.name())));
                    }
                    sys::ggml_quantize_chunk(
                        t,
                        values.as_ptr(),
                        out.as_mut_ptr().cast::<c_void>(),
                        0,
                        nrows,
                        n_per_row,
                        std::ptr::null(),
                    )
                };
                if written != n_bytes {
                    return Err(Error::Llama(format!(
                        "ggml_quantize_chunk wrote {written} bytes for tensor {name:?}, \
                         expected {n_bytes}"
                    )));
                }
                out
            }
        };
        let ne: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        // SAFETY: valid metadata-only context with room for one more tensor (capacity checked);
        // type, dims and ne validated above; the name is shorter than GGML_MAX_NAME and unique.
        unsafe {
            let tensor = sys::ggml_new_tensor(self.ggml.as_ptr(), t, ne.len() as i32, ne.as_ptr());
            if tensor.is_null() {
                return Err(Error::Llama(format!("ggml_new_tensor failed for {name:?}")));
            }
            sys::ggml_set_name(tensor, cname.as_ptr());
            if sys::ggml_nbytes(tensor) != n_bytes {
                return Err(Error::Llama(format!(
                    "ggml_nbytes of {name:?} is {}, expected {n_bytes}",
                    sys::ggml_nbytes(tensor)
                )));
            }
            sys::gguf_add_tensor(self.gguf.as_ptr(), tensor);
        }
        self.bodies.push(body);
        let body = self.bodies.last().expect("just pushed");
        // SAFETY: the tensor was just added under this name; the body lives in `self.bodies`
        // (its heap buffer never moves) until the builder is dropped.
        unsafe {
            sys::gguf_set_tensor_data(
                self.gguf.as_ptr(),
                cname.as_ptr(),
                body.as_ptr().cast::<c_void>(),
            )
        };
        Ok(n_bytes)
    }

    /// `gguf_write_to_file` (metadata and data).
    pub fn write(&self, path: &Path) -> Result<()> {
        let p = path_cstring(path)?;
        clear_log();
        // SAFETY: valid context; every tensor's data pointer is set and alive.
        let ok = unsafe { sys::gguf_write_to_file(self.gguf.as_ptr(), p.as_ptr(), false) };
        if ok {
            Ok(())
        } else {
            Err(Error::Llama(format!(
                "gguf_write_to_file {} failed: {}",
                path.display(),
                recent_log(4)
            )))
        }
    }
}

impl Drop for GgufBuilder {
    fn drop(&mut self) {
        // SAFETY: created in `new`, freed once; gguf holds copies of the tensor structs.
        unsafe {
            sys::gguf_free(self.gguf.as_ptr());
            sys::ggml_free(self.ggml.as_ptr());
        }
    }
}

/// List `path` with llama.cpp's reader (`gguf_init_from_file`, metadata only). A file it
/// refuses (e.g. a type id mainline does not know) is an [`Error::BadModel`] carrying
/// llama.cpp's own log lines.
pub fn read(path: &Path) -> Result<GgufListing> {
    let p = path_cstring(path)?;
    install_log();
    clear_log();
    let mut meta: *mut sys::ggml_context = std::ptr::null_mut();
    // SAFETY: the path is NUL-terminated; `meta` receives a context owned by us from here.
    let gguf = unsafe {
        sys::gguf_init_from_file(
            p.as_ptr(),
            sys::gguf_init_params {
                no_alloc: true,
                ctx: &mut meta,
            },
        )
    };
    let Some(gguf) = NonNull::new(gguf) else {
        if !meta.is_null() {
            // SAFETY: created by the failed call, freed once.
            unsafe { sys::ggml_free(meta) };
        }
        return Err(Error::BadModel {
            path: path.display().to_string(),
            reason: format!(
                "llama.cpp's gguf_init_from_file refused it: {}",
                recent_log(3)
            ),
        });
    };
    // Owns both contexts for the rest of the function.
    struct Owned(NonNull<sys::gguf_context>, *mut sys::ggml_context);
    impl Drop for Owned {
        fn drop(&mut self) {
            // SAFETY: created by gguf_init_from_file, freed once.
            unsafe {
                sys::gguf_free(self.0.as_ptr());
                if !self.1.is_null() {
                    sys::ggml_free(self.1);
                }
            }
        }
    }
    let owned = Owned(gguf, meta);
    let g = owned.0.as_ptr();
    // SAFETY: valid context; ids come from 0..gguf_get_n_tensors; returned strings are owned
    // by the context and copied before it goes; the ggml context holds every tensor by name.
    unsafe {
        let n = sys::gguf_get_n_tensors(g).max(0);
        let mut tensors = Vec::with_capacity(n as usize);
        for i in 0..n {
            let cname = CStr::from_ptr(sys::gguf_get_tensor_name(g, i));
            let name = cname.to_string_lossy().into_owned();
            let t = sys::gguf_get_tensor_type(g, i);
            let tname = sys::ggml_type_name(t);
            let ne = std::slice::from_raw_parts(sys::gguf_get_tensor_ne(g, i), MAX_DIMS);
            let n_dims = if owned.1.is_null() {
                MAX_DIMS
            } else {
                let tensor = sys::ggml_get_tensor(owned.1, cname.as_ptr());
                if tensor.is_null() {
                    MAX_DIMS
                } else {
                    sys::ggml_n_dims(tensor).clamp(1, MAX_DIMS as i32) as usize
                }
            };
            let shape: Vec<u64> = ne[..n_dims].iter().map(|&d| d.max(0) as u64).collect();
            tensors.push(TensorListing {
                name,
                type_id: t as u32,
                type_name: if tname.is_null() {
                    format!("type {t}")
                } else {
                    CStr::from_ptr(tname).to_string_lossy().into_owned()
                },
                shape: ggml_dims(&shape),
                offset: sys::gguf_get_tensor_offset(g, i) as u64,
                bytes: sys::gguf_get_tensor_size(g, i) as u64,
            });
        }
        Ok(GgufListing {
            version: sys::gguf_get_version(g),
            alignment: sys::gguf_get_alignment(g) as u64,
            data_offset: sys::gguf_get_data_offset(g) as u64,
            n_kv: sys::gguf_get_n_kv(g).max(0) as u64,
            tensors,
        })
    }
}
