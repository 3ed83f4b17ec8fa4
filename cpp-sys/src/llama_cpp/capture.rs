//! The built-in oracle's `cb_eval` entry point: reads each node through the bindgen bindings
//! and hands it to the shared [`Capture`] (see `tap_capture.rs` for how capture works).

use std::ffi::{c_void, CStr};

use llama_cpp_sys_2 as sys;

use crate::tap_capture::{Capture, Elem, NodeValues};

/// # Safety
/// `t` must point to a live ggml tensor.
unsafe fn ask(capture: &mut Capture, t: *const sys::ggml_tensor) -> bool {
    // SAFETY (caller): live tensor; its name is a NUL-terminated array inside the struct.
    let tensor = unsafe { &*t };
    let name = unsafe { CStr::from_ptr(tensor.name.as_ptr()) }.to_string_lossy();
    // SAFETY: ggml_op_desc returns a static string for any tensor.
    let op = unsafe { CStr::from_ptr(sys::ggml_op_desc(t)) }.to_string_lossy();
    capture.ask(t as usize, &name, &op, tensor.ne)
}

/// Copy a computed tensor out of its backend buffer and hand it over.
///
/// # Safety
/// `t` must point to a live, computed ggml tensor.
unsafe fn take(capture: &mut Capture, t: *mut sys::ggml_tensor) {
    // SAFETY (caller).
    let tensor = unsafe { &*t };
    // SAFETY: static type name for any type.
    let ty = unsafe { CStr::from_ptr(sys::ggml_type_name(tensor.type_)) }.to_string_lossy();
    let elem = Elem::from_ggml(tensor.type_ as i64, &ty);
    if tensor.buffer.is_null() || tensor.data.is_null() {
        capture.take(t as usize, Err("tensor not allocated".into()));
        return;
    }
    // SAFETY: live tensor.
    let nbytes = unsafe { sys::ggml_nbytes(t) };
    let mut raw = vec![0u8; nbytes];
    // SAFETY: the tensor is allocated and computed; raw holds ggml_nbytes(t) bytes.
    unsafe { sys::ggml_backend_tensor_get(t, raw.as_mut_ptr().cast::<c_void>(), 0, nbytes) };
    let values = NodeValues {
        elem,
        ne: tensor.ne,
        nb: tensor.nb,
        bytes: &raw,
    };
    capture.take(t as usize, Ok(values));
}

/// The `cb_eval` entry point.
///
/// # Safety
/// `user_data` must be the `Capture` registered with the context, not otherwise referenced
/// while llama.cpp runs the graph; `t` a live tensor of that graph.
pub(super) unsafe extern "C" fn eval_callback(
    t: *mut sys::ggml_tensor,
    ask_phase: bool,
    user_data: *mut c_void,
) -> bool {
    // SAFETY (caller): the registered Capture, exclusively ours during llama_decode, which
    // calls back on the calling thread.
    let capture = unsafe { &mut *user_data.cast::<Capture>() };
    capture.guarded(ask_phase, |c| {
        if ask_phase {
            // SAFETY (caller): live tensor.
            unsafe { ask(c, t) }
        } else {
            // SAFETY (caller): live, computed tensor.
            unsafe { take(c, t) };
            true
        }
    })
}
