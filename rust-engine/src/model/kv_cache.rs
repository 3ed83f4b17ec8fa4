//! The KV cache: post-RoPE keys and values of every layer for every position so far, stored in
//! the profile's KV type (values are rounded to f16 on store when the cache is F16, as ggml's
//! `ggml_set_rows`/`ggml_cpy` into an F16 cache does).

use half::slice::HalfFloatSliceExt;

use super::HParams;
use crate::error::{Error, Result};
use crate::numerics::KvType;

#[derive(Clone, Debug)]
enum Buf {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl Buf {
    fn new(kv: KvType) -> Buf {
        match kv {
            KvType::F32 => Buf::F32(Vec::new()),
            KvType::F16 => Buf::F16(Vec::new()),
        }
    }

    fn push(&mut self, v: &[f32]) {
        match self {
            Buf::F32(b) => b.extend_from_slice(v),
            Buf::F16(b) => b.extend(v.iter().map(|&x| half::f16::from_f32(x))),
        }
    }

    fn truncate(&mut self, n: usize) {
        match self {
            Buf::F32(b) => b.truncate(n),
            Buf::F16(b) => b.truncate(n),
        }
    }

    fn read(&self, start: usize, out: &mut [f32]) {
        match self {
            Buf::F32(b) => out.copy_from_slice(&b[start..start + out.len()]),
            // The whole vector at once: `half` checks the CPU's features once per call, then
            // converts eight values per F16C instruction (exact, as any f16 to f32 is).
            Buf::F16(b) => b[start..start + out.len()].convert_to_f32_slice(out),
        }
    }
}

/// Keys and values of all layers, position-major (`[pos][kv_head][head_dim]`).
#[derive(Clone, Debug)]
pub struct KvCache {
    kv: KvType,
    n_ctx: usize,
    width: usize,
    layers: Vec<(Buf, Buf)>,
    len: usize,
}

impl KvCache {
    pub fn new(hp: &HParams, kv: KvType) -> KvCache {
        KvCache {
            kv,
            n_ctx: hp.n_ctx,
            width: hp.n_embd_kv(),
            layers: (0..hp.n_layer)
                .map(|_| (Buf::new(kv), Buf::new(kv)))
                .collect(),
            len: 0,
        }
    }

    pub fn kv_type(&self) -> KvType {
        self.kv
    }

    /// Positions stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.n_ctx
    }

    /// Forget everything from position `len` on.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            for (k, v) in &mut self.layers {
                k.truncate(len * self.width);
                v.truncate(len * self.width);
            }
            self.len = len;
        }
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Check that `n` more positions fit the model's context.
    pub(crate) fn reserve(&self, n: usize) -> Result<()> {
        if self.len + n > self.n_ctx {
            return Err(Error::Invalid(format!(
                "context full: {} cached + {n} new positions exceed the model's context length \
                 {}",
                self.len, self.n_ctx
            )));
        }
        Ok(())
    }

    /// Append one layer's keys and values for `n` consecutive new positions
    /// (`k`/`v`: `n * width` values). Call for every layer, then [`KvCache::advance`].
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        debug_assert_eq!(k.len() % self.width, 0);
        let (kb, vb) = &mut self.layers[layer];
        kb.push(k);
        vb.push(v);
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Read the key (or value) vector of one KV head at a position, as f32.
    pub(crate) fn read(
        &self,
        layer: usize,
        value: bool,
        pos: usize,
        offset: usize,
        out: &mut [f32],
    ) {
        let (k, v) = &self.layers[layer];
        let buf = if value { v } else { k };
        buf.read(pos * self.width + offset, out);
    }
}
