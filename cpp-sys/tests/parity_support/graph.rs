//! One-op graphs on ggml's CPU backend, built on `xval_cpp_sys::ggml_rt` (context, CPU backend
//! with thread count and reference mode, buffer, graph, tensor I/O). What this adds is the op
//! builders the parity tests need, as safe methods: a [`T`] handle borrows its [`OpGraph`], so a
//! tensor pointer cannot outlive the context that holds it, and every FFI call sits here.
//!
//! Every tensor of the context (inputs and op results) gets its own memory in one buffer
//! (`ggml_backend_alloc_ctx_tensors`), so no intermediate is overwritten and any of them can be
//! read after the computation.

use std::cell::Cell;
use std::marker::PhantomData;

use llama_cpp_sys_2 as sys;
use xval_cpp_sys::ggml_rt::{self, Buffer, Context, CpuBackend, Tensor};

/// A tensor of an [`OpGraph`].
#[derive(Clone, Copy, Debug)]
pub struct T<'g>(Tensor, PhantomData<&'g OpGraph>);

/// A context of input tensors and ops, computed once per requested mode.
pub struct OpGraph {
    ctx: Context,
    computed: Cell<bool>,
}

/// Room for this many tensors in the context (the tests build a handful of ops).
const MAX_TENSORS: usize = 32;
/// Room for the one graph (nodes) the context holds.
const GRAPH_NODES: usize = 32;

impl OpGraph {
    pub fn new() -> OpGraph {
        super::ffi::init();
        OpGraph {
            ctx: Context::new(MAX_TENSORS, GRAPH_NODES).expect("ggml context"),
            computed: Cell::new(false),
        }
    }

    fn wrap(&self, p: *mut sys::ggml_tensor) -> T<'_> {
        assert!(!p.is_null(), "ggml returned no tensor");
        T(p, PhantomData)
    }

    /// A new tensor of type `ty` and shape `ne` (fastest dimension first, up to 4).
    pub fn tensor(&self, ty: sys::ggml_type, ne: &[i64]) -> T<'_> {
        let c = self.ctx.ptr();
        // SAFETY: live context with room for MAX_TENSORS headers (ggml aborts past it); ggml
        // checks the shape.
        let p = unsafe {
            match *ne {
                [a] => sys::ggml_new_tensor_1d(c, ty, a),
                [a, b] => sys::ggml_new_tensor_2d(c, ty, a, b),
                [a, b, d] => sys::ggml_new_tensor_3d(c, ty, a, b, d),
                [a, b, d, e] => sys::ggml_new_tensor_4d(c, ty, a, b, d, e),
                _ => panic!("1 to 4 dimensions"),
            }
        };
        self.wrap(p)
    }

    /// Add an op: `f` gets the context and returns ggml's result tensor.
    fn op(&self, f: impl FnOnce(*mut sys::ggml_context) -> Tensor) -> T<'_> {
        self.wrap(f(self.ctx.ptr()))
    }

    pub fn mul_mat<'g>(&'g self, w: T<'g>, x: T<'g>) -> T<'g> {
        // SAFETY (this and the op builders below): the context and the operand tensors are
        // live (the handles borrow this graph); ggml checks shapes and types and aborts on a
        // mismatch.
        self.op(|c| unsafe { sys::ggml_mul_mat(c, w.0, x.0) })
    }
    pub fn rms_norm<'g>(&'g self, x: T<'g>, eps: f32) -> T<'g> {
        // SAFETY: see mul_mat.
        self.op(|c| unsafe { sys::ggml_rms_norm(c, x.0, eps) })
    }
    pub fn mul<'g>(&'g self, a: T<'g>, b: T<'g>) -> T<'g> {
        // SAFETY: see mul_mat.
        self.op(|c| unsafe { sys::ggml_mul(c, a.0, b.0) })
    }
    pub fn add<'g>(&'g self, a: T<'g>, b: T<'g>) -> T<'g> {
        // SAFETY: see mul_mat.
        self.op(|c| unsafe { sys::ggml_add(c, a.0, b.0) })
    }
    pub fn silu<'g>(&'g self, a: T<'g>) -> T<'g> {
        // SAFETY: see mul_mat.
        self.op(|c| unsafe { sys::ggml_silu(c, a.0) })
    }
    pub fn relu<'g>(&'g self, a: T<'g>) -> T<'g> {
        // SAFETY: see mul_mat.
        self.op(|c| unsafe { sys::ggml_relu(c, a.0) })
    }
    pub fn sqr<'g>(&'g self, a: T<'g>) -> T<'g> {
        // SAFETY: see mul_mat.
        self.op(|c| unsafe { sys::ggml_sqr(c, a.0) })
    }
    /// `ggml_soft_max_ext(a, mask, scale, max_bias = 0)`.
    pub fn soft_max_ext<'g>(&'g self, a: T<'g>, mask: T<'g>, scale: f32) -> T<'g> {
        // SAFETY: see mul_mat.
        self.op(|c| unsafe { sys::ggml_soft_max_ext(c, a.0, mask.0, scale, 0.0) })
    }
    /// `ggml_rope_ext` as llama.cpp calls it for a model without RoPE scaling: no frequency
    /// factors, freq_scale 1, ext_factor 0, attn_factor 1, beta_fast 32, beta_slow 1.
    pub fn rope_ext<'g>(
        &'g self,
        a: T<'g>,
        pos: T<'g>,
        n_dims: i32,
        mode: i32,
        freq_base: f32,
    ) -> T<'g> {
        // SAFETY: see mul_mat; the frequency-factor tensor may be NULL.
        self.op(|c| unsafe {
            sys::ggml_rope_ext(
                c,
                a.0,
                pos.0,
                std::ptr::null_mut(),
                n_dims,
                mode,
                0,
                freq_base,
                1.0,
                0.0,
                1.0,
                32.0,
                1.0,
            )
        })
    }

    /// Compute `out` with `inputs` set (raw bytes of each tensor's type, whole tensors), once
    /// per `(threads, use_ref)` mode, each on its own CPU backend; return `out` as f32 per mode.
    /// A context holds one graph, so this runs once per `OpGraph`.
    pub fn compute(
        &self,
        out: T<'_>,
        inputs: &[(T<'_>, &[u8])],
        modes: &[(i32, bool)],
    ) -> Vec<Vec<f32>> {
        assert!(!self.computed.replace(true), "one compute per OpGraph");
        let mut graph = ggml_rt::Graph::new(&self.ctx, GRAPH_NODES).expect("graph");
        // SAFETY: `out` is a live tensor of this live context.
        unsafe { graph.expand(out.0) };
        let first = CpuBackend::new(1, false).expect("CPU backend");
        let _buffer = Buffer::alloc_ctx_tensors(&self.ctx, &first).expect("buffer");
        for (t, bytes) in inputs {
            // SAFETY: allocated just above; ggml_nbytes of a live tensor.
            unsafe {
                assert_eq!(bytes.len(), sys::ggml_nbytes(t.0), "whole-tensor input");
                ggml_rt::write_bytes(t.0, 0, bytes).expect("input");
            }
        }
        modes
            .iter()
            .map(|&(threads, use_ref)| {
                let backend = CpuBackend::new(threads as usize, use_ref).expect("CPU backend");
                backend.compute(&graph).expect("graph compute");
                // SAFETY: `out` is allocated in `_buffer`, alive until the end of this fn.
                unsafe { ggml_rt::read_f32(out.0) }.expect("read output").0
            })
            .collect()
    }
}

/// Little-endian bytes of f32 values (input tensors).
pub fn bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of i32 values (RoPE positions).
pub fn bytes_i32(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
