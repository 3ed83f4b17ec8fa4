//! The KV cache: post-RoPE keys and values of every layer for every position so far, stored
//! as the profile's KV type holds them (values are rounded to f16 on store when the cache is
//! F16, as ggml's `ggml_set_rows`/`ggml_cpy` into an F16 cache does) and kept as f32 (every
//! f16 widens exactly), so attention reads a layer's keys and values in place.
//!
//! Holding them as f32 takes twice an F16 cache's memory (the 2B-4T shape: 153.6 KB per
//! position for all 30 layers, against 76.8 KB), and saves each decode step a conversion of
//! every layer's whole cache into freshly allocated buffers, which had been 2 ms of a 63 ms
//! 2B-4T step at 64-96 positions (`forward_speed MODEL 64 32 1 amx 2`, timed around it).

use super::HParams;
use crate::error::{Error, Result};
use crate::numerics::KvType;

/// One layer's keys or values: the stored values, as f32.
#[derive(Clone, Debug, Default)]
struct Buf(Vec<f32>);

impl Buf {
    /// Append `v` as a cache of type `kv` stores it.
    fn push(&mut self, kv: KvType, v: &[f32]) {
        match kv {
            KvType::F32 => self.0.extend_from_slice(v),
            KvType::F16 => self
                .0
                .extend(v.iter().map(|&x| half::f16::from_f32(x).to_f32())),
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
                .map(|_| (Buf::default(), Buf::default()))
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
                k.0.truncate(len * self.width);
                v.0.truncate(len * self.width);
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
        kb.push(self.kv, k);
        vb.push(self.kv, v);
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// One layer's keys (or values) of every position stored so far and of any appended since
    /// (`[pos][kv_head][head_dim]`, `n_embd_kv` values per position), as f32.
    pub(crate) fn layer(&self, layer: usize, value: bool) -> &[f32] {
        let (k, v) = &self.layers[layer];
        if value {
            &v.0
        } else {
            &k.0
        }
    }
}
