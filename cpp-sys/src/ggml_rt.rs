//! Safe owners for the few ggml objects that running our own graphs needs: a tensor context, a
//! CPU backend (thread count, reference mode), backend buffers, a graph allocator, and typed
//! reads and writes of tensor data. Used by the ggml-graph oracle and the kernel-parity tests.
//!
//! The pattern is ggml's own (`examples/simple/simple-backend.cpp`): weights live in a
//! no-alloc context whose tensors are placed in one backend buffer
//! (`ggml_backend_alloc_ctx_tensors`); each evaluation builds its graph in a fresh no-alloc
//! context, `ggml_gallocr` places the intermediates, inputs are written, the backend computes,
//! outputs are read back. Tensors marked `ggml_set_output` keep their memory to the end of the
//! graph, so named intermediates can be read after the computation instead of through a
//! callback.

use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use crate::error::{Error, Result};
use crate::tap_capture::{gather, Elem, NodeValues};

/// A raw tensor of a [`Context`]; valid while the context lives.
pub type Tensor = *mut sys::ggml_tensor;

/// A ggml context holding tensor descriptors (never their data: `no_alloc`).
pub struct Context(NonNull<sys::ggml_context>);

impl Context {
    /// Room for `n_tensors` tensor descriptors and, when `graph_nodes > 0`, one graph of that
    /// many nodes.
    pub fn new(n_tensors: usize, graph_nodes: usize) -> Result<Context> {
        // SAFETY: size queries without arguments / with plain integers.
        let mem_size = unsafe {
            n_tensors * sys::ggml_tensor_overhead()
                + if graph_nodes > 0 {
                    sys::ggml_graph_overhead_custom(graph_nodes, false)
                } else {
                    0
                }
        };
        // SAFETY: ggml allocates `mem_size` bytes itself (mem_buffer null); no_alloc keeps
        // tensor data out of the context.
        let ctx = unsafe {
            sys::ggml_init(sys::ggml_init_params {
                mem_size,
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            })
        };
        NonNull::new(ctx)
            .map(Context)
            .ok_or_else(|| Error::Llama(format!("ggml_init failed for {mem_size} bytes")))
    }

    /// Take ownership of a context ggml created (`gguf_init_from_file` with a context out-param).
    ///
    /// # Safety
    /// `ctx` must be a live context nobody else frees.
    pub unsafe fn from_raw(ctx: *mut sys::ggml_context) -> Option<Context> {
        NonNull::new(ctx).map(Context)
    }

    pub fn ptr(&self) -> *mut sys::ggml_context {
        self.0.as_ptr()
    }

    /// The tensor called `name`, if the context has one.
    pub fn tensor(&self, name: &str) -> Option<Tensor> {
        let c = CString::new(name).ok()?;
        // SAFETY: live context, NUL-terminated name.
        let t = unsafe { sys::ggml_get_tensor(self.ptr(), c.as_ptr()) };
        (!t.is_null()).then_some(t)
    }

    /// Every tensor of the context, in creation order.
    pub fn tensors(&self) -> Vec<Tensor> {
        let mut out = Vec::new();
        // SAFETY: live context; iteration ends at null.
        let mut t = unsafe { sys::ggml_get_first_tensor(self.ptr()) };
        while !t.is_null() {
            out.push(t);
            // SAFETY: `t` belongs to this context.
            t = unsafe { sys::ggml_get_next_tensor(self.ptr(), t) };
        }
        out
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: created by ggml_init (or handed over), freed once.
        unsafe { sys::ggml_free(self.0.as_ptr()) }
    }
}

/// ggml's CPU backend.
pub struct CpuBackend(NonNull<sys::ggml_backend>);

impl CpuBackend {
    /// A CPU backend with `threads` threads; `reference` switches on ggml's reference mode
    /// (`ggml_backend_cpu_set_use_ref`: in this ggml it turns off llamafile's sgemm for
    /// matrix products, op fusion, and the tiled/split-KV flash-attention paths; the per-type
    /// `vec_dot` kernels stay the compiled SIMD ones).
    pub fn new(threads: usize, reference: bool) -> Result<CpuBackend> {
        // SAFETY: plain constructor.
        let b = unsafe { sys::ggml_backend_cpu_init() };
        let b = NonNull::new(b)
            .map(CpuBackend)
            .ok_or_else(|| Error::Llama("ggml_backend_cpu_init failed".into()))?;
        let threads = i32::try_from(threads.max(1))
            .map_err(|_| Error::InvalidRequest(format!("{threads} threads")))?;
        // SAFETY: a CPU backend, as these setters require.
        unsafe {
            sys::ggml_backend_cpu_set_n_threads(b.ptr(), threads);
            sys::ggml_backend_cpu_set_use_ref(b.ptr(), reference);
        }
        Ok(b)
    }

    pub fn ptr(&self) -> sys::ggml_backend_t {
        self.0.as_ptr()
    }

    /// Compute `graph` (every tensor in it allocated by a [`GraphAllocator`] or a [`Buffer`]).
    pub fn compute(&self, graph: &Graph<'_>) -> Result<()> {
        // SAFETY: live backend and graph.
        let status = unsafe { sys::ggml_backend_graph_compute(self.ptr(), graph.ptr()) };
        if status == sys::GGML_STATUS_SUCCESS {
            Ok(())
        } else {
            Err(Error::Llama(format!(
                "ggml_backend_graph_compute returned status {status}"
            )))
        }
    }
}

impl Drop for CpuBackend {
    fn drop(&mut self) {
        // SAFETY: created by ggml_backend_cpu_init, freed once.
        unsafe { sys::ggml_backend_free(self.0.as_ptr()) }
    }
}

/// A backend buffer holding the data of every tensor of one context.
pub struct Buffer(NonNull<sys::ggml_backend_buffer>);

impl Buffer {
    /// Place every tensor of `ctx` in one new buffer of `backend` (zero-filled).
    pub fn alloc_ctx_tensors(ctx: &Context, backend: &CpuBackend) -> Result<Buffer> {
        // SAFETY: live context and backend.
        let b = unsafe { sys::ggml_backend_alloc_ctx_tensors(ctx.ptr(), backend.ptr()) };
        let b = NonNull::new(b).map(Buffer).ok_or_else(|| {
            Error::Llama("ggml_backend_alloc_ctx_tensors failed (out of memory?)".into())
        })?;
        // SAFETY: live buffer.
        unsafe { sys::ggml_backend_buffer_clear(b.0.as_ptr(), 0) };
        Ok(b)
    }

    /// Mark the buffer as holding weights (the scheduler-free CPU path ignores it; it keeps the
    /// buffer's role visible in ggml's debug output).
    pub fn set_weights_usage(&self) {
        // SAFETY: live buffer.
        unsafe {
            sys::ggml_backend_buffer_set_usage(
                self.0.as_ptr(),
                sys::GGML_BACKEND_BUFFER_USAGE_WEIGHTS,
            )
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: allocated by ggml_backend_alloc_ctx_tensors, freed once.
        unsafe { sys::ggml_backend_buffer_free(self.0.as_ptr()) }
    }
}

/// A graph allocator for the CPU buffer type, reused across evaluations.
pub struct GraphAllocator(NonNull<sys::ggml_gallocr>);

impl GraphAllocator {
    pub fn new() -> Result<GraphAllocator> {
        // SAFETY: the CPU buffer type is a static object.
        let g = unsafe { sys::ggml_gallocr_new(sys::ggml_backend_cpu_buffer_type()) };
        NonNull::new(g)
            .map(GraphAllocator)
            .ok_or_else(|| Error::Llama("ggml_gallocr_new failed".into()))
    }

    /// Place every unallocated tensor of `graph`.
    pub fn alloc(&mut self, graph: &Graph<'_>) -> Result<()> {
        // SAFETY: live allocator and graph.
        if unsafe { sys::ggml_gallocr_alloc_graph(self.0.as_ptr(), graph.ptr()) } {
            Ok(())
        } else {
            Err(Error::Llama(
                "ggml_gallocr_alloc_graph failed (out of memory?)".into(),
            ))
        }
    }
}

impl Drop for GraphAllocator {
    fn drop(&mut self) {
        // SAFETY: created by ggml_gallocr_new, freed once.
        unsafe { sys::ggml_gallocr_free(self.0.as_ptr()) }
    }
}

/// A compute graph living in a [`Context`]'s memory.
pub struct Graph<'ctx> {
    ptr: NonNull<sys::ggml_cgraph>,
    _ctx: PhantomData<&'ctx Context>,
}

impl<'ctx> Graph<'ctx> {
    /// A new graph of up to `nodes` nodes in `ctx` (which needs the room: [`Context::new`]).
    pub fn new(ctx: &'ctx Context, nodes: usize) -> Result<Graph<'ctx>> {
        // SAFETY: live context with room for the graph.
        let g = unsafe { sys::ggml_new_graph_custom(ctx.ptr(), nodes, false) };
        NonNull::new(g)
            .map(|ptr| Graph {
                ptr,
                _ctx: PhantomData,
            })
            .ok_or_else(|| Error::Llama("ggml_new_graph_custom failed".into()))
    }

    pub fn ptr(&self) -> *mut sys::ggml_cgraph {
        self.ptr.as_ptr()
    }

    /// Add `t` and everything it depends on.
    ///
    /// # Safety
    /// `t` must be a live tensor of a live context.
    pub unsafe fn expand(&mut self, t: Tensor) {
        // SAFETY (caller): live tensor; live graph.
        unsafe { sys::ggml_build_forward_expand(self.ptr(), t) }
    }

    /// The nodes, in execution order.
    pub fn nodes(&self) -> Vec<Tensor> {
        // SAFETY: a live graph; indices below its node count.
        unsafe {
            (0..sys::ggml_graph_n_nodes(self.ptr()))
                .map(|i| sys::ggml_graph_node(self.ptr(), i))
                .collect()
        }
    }
}

/// A tensor's name.
///
/// # Safety
/// `t` must be a live tensor of a live context (allocated, where data is read or written).
pub unsafe fn name(t: Tensor) -> String {
    // SAFETY: live tensor; `name` is a NUL-terminated array inside the struct.
    unsafe { CStr::from_ptr((*t).name.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Set a tensor's name (ggml truncates at 63 bytes).
///
/// # Safety
/// `t` must be a live tensor of a live context (allocated, where data is read or written).
pub unsafe fn set_name(t: Tensor, name: &str) {
    let c = CString::new(name).expect("tensor names have no NUL");
    // SAFETY: live tensor; ggml copies the string.
    unsafe { sys::ggml_set_name(t, c.as_ptr()) };
}

/// A tensor's op as ggml describes it (`MUL_MAT`, `ROPE`, ...).
///
/// # Safety
/// `t` must be a live tensor of a live context (allocated, where data is read or written).
pub unsafe fn op_desc(t: Tensor) -> String {
    // SAFETY: static string for any live tensor.
    unsafe { CStr::from_ptr(sys::ggml_op_desc(t)) }
        .to_string_lossy()
        .into_owned()
}

/// Copy `bytes` into a tensor at byte `offset`; the range must lie inside the tensor.
///
/// # Safety
/// `t` must be a live tensor of a live context (allocated, where data is read or written).
pub unsafe fn write_bytes(t: Tensor, offset: usize, bytes: &[u8]) -> Result<()> {
    // SAFETY: live tensor.
    let n = unsafe { sys::ggml_nbytes(t) };
    if offset.checked_add(bytes.len()).is_none_or(|end| end > n) {
        return Err(Error::Llama(format!(
            "{}: writing {} bytes at {offset} overflows its {n} bytes",
            name(t),
            bytes.len()
        )));
    }
    // SAFETY: allocated tensor; the range was checked against ggml_nbytes.
    unsafe {
        sys::ggml_backend_tensor_set(t, bytes.as_ptr().cast::<c_void>(), offset, bytes.len())
    };
    Ok(())
}

/// Write a whole tensor from plain values (`f32`, `i32`, `i64` as its type requires).
///
/// # Safety
/// `t` must be a live tensor of a live context (allocated, where data is read or written).
pub unsafe fn write<T: Copy>(t: Tensor, values: &[T]) -> Result<()> {
    // SAFETY: any initialised slice of plain-old-data values can be viewed as its bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    };
    // SAFETY: live tensor.
    let n = unsafe { sys::ggml_nbytes(t) };
    if bytes.len() != n {
        return Err(Error::Llama(format!(
            "{}: {} bytes given for a tensor of {n}",
            name(t),
            bytes.len()
        )));
    }
    write_bytes(t, 0, bytes)
}

/// An F32 tensor's values in logical `ne` order (views and permutations gathered through
/// their strides), with its `ne`.
///
/// # Safety
/// `t` must be a live tensor of a live context (allocated, where data is read or written).
pub unsafe fn read_f32(t: Tensor) -> Result<(Vec<f32>, [i64; 4])> {
    // SAFETY (caller): live tensor.
    let (ty, ne, nb) = unsafe { ((*t).type_, (*t).ne, (*t).nb) };
    if ty != sys::GGML_TYPE_F32 {
        // SAFETY: static type name.
        let tn = unsafe { CStr::from_ptr(sys::ggml_type_name(ty)) };
        return Err(Error::Llama(format!(
            "{}: tensor type {tn:?}, expected f32",
            name(t)
        )));
    }
    // SAFETY (caller): live tensor.
    let raw = unsafe { read_bytes(t)? };
    let values = NodeValues {
        elem: Elem::F32,
        ne,
        nb,
        bytes: &raw,
    };
    let data = gather(&name(t), &values).map_err(Error::Llama)?;
    Ok((data, ne))
}

/// A tensor's `ggml_nbytes` bytes as its buffer holds them (views: the span their strides
/// cover).
///
/// # Safety
/// `t` must be a live tensor of a live context.
pub unsafe fn read_bytes(t: Tensor) -> Result<Vec<u8>> {
    // SAFETY (caller): live tensor; plain fields.
    let allocated = unsafe { !(*t).buffer.is_null() && !(*t).data.is_null() };
    if !allocated {
        return Err(Error::Llama(format!("{}: not allocated", name(t))));
    }
    // SAFETY: live tensor.
    let nbytes = unsafe { sys::ggml_nbytes(t) };
    let mut raw = vec![0u8; nbytes];
    // SAFETY: allocated tensor; `raw` holds ggml_nbytes(t) bytes.
    unsafe { sys::ggml_backend_tensor_get(t, raw.as_mut_ptr().cast::<c_void>(), 0, nbytes) };
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-op graph (`mul_mat` then `add`) computes what arithmetic says, in both modes and
    /// with 1 or 2 threads, and the intermediate marked as output survives to be read.
    #[test]
    fn tiny_graph_computes() {
        for (threads, reference) in [(1, false), (2, true)] {
            let backend = CpuBackend::new(threads, reference).unwrap();
            let ctx = Context::new(8, 16).unwrap();
            // SAFETY: live context; shapes are small constants.
            let (a, b, c) = unsafe {
                (
                    sys::ggml_new_tensor_2d(ctx.ptr(), sys::GGML_TYPE_F32, 3, 2),
                    sys::ggml_new_tensor_2d(ctx.ptr(), sys::GGML_TYPE_F32, 3, 1),
                    sys::ggml_new_tensor_1d(ctx.ptr(), sys::GGML_TYPE_F32, 2),
                )
            };
            // SAFETY: tensors of this context.
            let (mm, sum) = unsafe {
                let mm = sys::ggml_mul_mat(ctx.ptr(), a, b);
                sys::ggml_set_output(mm);
                (mm, sys::ggml_add(ctx.ptr(), mm, c))
            };
            let mut graph = Graph::new(&ctx, 16).unwrap();
            let mut galloc = GraphAllocator::new().unwrap();
            // SAFETY: tensors of the live context; allocated before data moves.
            unsafe {
                set_name(mm, "mm");
                graph.expand(sum);
                galloc.alloc(&graph).unwrap();
                write(a, &[1.0f32, 2.0, 3.0, -1.0, 0.5, 2.0]).unwrap();
                write(b, &[1.0f32, 1.0, 2.0]).unwrap();
                write(c, &[10.0f32, 20.0]).unwrap();
                backend.compute(&graph).unwrap();
                assert_eq!(read_f32(mm).unwrap().0, vec![9.0, 3.5]);
                assert_eq!(read_f32(sum).unwrap().0, vec![19.0, 23.5]);
                assert_eq!(name(mm), "mm");
                assert_eq!(op_desc(mm), "MUL_MAT");
                assert!(graph.nodes().contains(&sum));
                assert!(write(c, &[1.0f32]).is_err());
            }
        }
    }
}
