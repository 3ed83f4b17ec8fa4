//! A small synthetic BitNet model built inside the tests (independent of the committed
//! fixtures), plus an f64 reference forward pass written from the architecture description
//! alone, used to check the engine.
#![allow(dead_code)]

use std::sync::Arc;

use xval_engine::gguf::{GgmlType, GgufFile, GgufWriter, Value};
use xval_engine::quant;

/// SplitMix64: tiny, exact, and enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn trit(&mut self) -> i8 {
        (self.next() % 3) as i8 - 1
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub arch: &'static str,
    pub proj: GgmlType,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_vocab: usize,
    pub n_ctx: usize,
    pub with_scales: bool,
    pub seed: u64,
}

impl Spec {
    pub fn bitnet(proj: GgmlType) -> Spec {
        Spec {
            arch: "bitnet",
            proj,
            n_embd: 256,
            n_ff: 512,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            n_vocab: 96,
            n_ctx: 64,
            with_scales: true,
            seed: 7,
        }
    }

    pub fn b158() -> Spec {
        Spec {
            arch: "bitnet-b1.58",
            proj: GgmlType::I2_S,
            n_head_kv: 1,
            with_scales: false,
            ..Spec::bitnet(GgmlType::I2_S)
        }
    }
}

/// Ternary values and per-256-block scales of one projection (`k` inputs, `m` outputs).
pub struct Proj {
    pub trits: Vec<i8>,
    pub block_d: Vec<half::f16>,
    pub tensor_scale: f32,
    pub out_scale: Option<f32>,
}

impl Proj {
    /// The exact real weights, row-major `[m][k]`.
    pub fn values(&self, ty: GgmlType) -> Vec<f32> {
        self.trits
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let s = if ty == GgmlType::I2_S {
                    self.tensor_scale
                } else {
                    self.block_d[i / 256].to_f32()
                };
                t as f32 * s
            })
            .collect()
    }
}

pub fn proj(rng: &mut Rng, k: usize, m: usize, with_scale: bool) -> Proj {
    let base = 1.0 / (2.0 / 3.0 * k as f64).sqrt();
    let f = [0.75, 0.875, 1.0, 1.125, 1.25];
    Proj {
        trits: (0..k * m).map(|_| rng.trit()).collect(),
        block_d: (0..k * m / 256)
            .map(|_| half::f16::from_f64(base * f[(rng.next() % 5) as usize]))
            .collect(),
        tensor_scale: (base * f[(rng.next() % 5) as usize]) as f32,
        out_scale: with_scale.then(|| 0.8 + 0.45 * (rng.uniform() + 1.0) / 2.0),
    }
}

fn encode(ty: GgmlType, p: &Proj) -> Vec<u8> {
    match ty {
        GgmlType::TQ2_0 | GgmlType::TQ1_0 => {
            let mut out = Vec::new();
            for (b, chunk) in p.trits.chunks_exact(256).enumerate() {
                if ty == GgmlType::TQ2_0 {
                    quant::tq2_0::pack_block(chunk, p.block_d[b], &mut out);
                } else {
                    quant::tq1_0::pack_block(chunk, p.block_d[b], &mut out);
                }
            }
            out
        }
        GgmlType::I2_S => quant::i2_s::pack(&p.trits, p.tensor_scale, Default::default()).unwrap(),
        other => quant::quantize(other, &p.values(GgmlType::TQ2_0)).unwrap(),
    }
}

/// Everything needed to rebuild the model in the reference.
pub struct Weights {
    pub spec: Spec,
    pub embd: Vec<f32>,
    pub output_norm: Vec<f32>,
    pub layers: Vec<LayerW>,
}

pub struct LayerW {
    pub attn_norm: Vec<f32>,
    pub attn_sub_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    pub ffn_sub_norm: Vec<f32>,
    /// q, k, v, o, gate, up, down
    pub proj: Vec<Proj>,
}

fn norm_w(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| 1.0 + 0.1 * rng.uniform()).collect()
}

pub fn weights(spec: Spec) -> Weights {
    let mut rng = Rng(spec.seed);
    let d = spec.n_embd;
    let kv = spec.n_head_kv * (d / spec.n_head);
    let embd = (0..d * spec.n_vocab)
        .map(|_| half::f16::from_f32(0.17 * rng.uniform()).to_f32())
        .collect();
    let output_norm = norm_w(&mut rng, d);
    let layers = (0..spec.n_layer)
        .map(|_| {
            let s = spec.with_scales;
            LayerW {
                attn_norm: norm_w(&mut rng, d),
                attn_sub_norm: norm_w(&mut rng, d),
                ffn_norm: norm_w(&mut rng, d),
                ffn_sub_norm: norm_w(&mut rng, spec.n_ff),
                proj: vec![
                    proj(&mut rng, d, d, s),
                    proj(&mut rng, d, kv, s),
                    proj(&mut rng, d, kv, s),
                    proj(&mut rng, d, d, s),
                    proj(&mut rng, d, spec.n_ff, s),
                    proj(&mut rng, d, spec.n_ff, s),
                    proj(&mut rng, spec.n_ff, d, s),
                ],
            }
        })
        .collect();
    Weights {
        spec,
        embd,
        output_norm,
        layers,
    }
}

pub use xval_engine::model::PROJECTIONS as PROJ_NAMES;

/// Serialize as GGUF. `skip` omits one tensor (for error tests).
pub fn gguf_bytes(w: &Weights, skip: Option<&str>) -> Vec<u8> {
    gguf_bytes_with(w, skip, &[])
}

/// Serialize as GGUF with some metadata values replaced after the normal ones are set.
pub fn gguf_bytes_with(w: &Weights, skip: Option<&str>, meta: &[(&str, Value)]) -> Vec<u8> {
    let s = w.spec;
    let a = s.arch;
    let mut g = GgufWriter::new();
    let u = |v: usize| Value::U32(v as u32);
    g.set("general.architecture", Value::String(a.into()))
        .unwrap();
    g.set(format!("{a}.context_length"), u(s.n_ctx)).unwrap();
    g.set(format!("{a}.embedding_length"), u(s.n_embd)).unwrap();
    g.set(format!("{a}.block_count"), u(s.n_layer)).unwrap();
    g.set(format!("{a}.feed_forward_length"), u(s.n_ff))
        .unwrap();
    g.set(format!("{a}.attention.head_count"), u(s.n_head))
        .unwrap();
    g.set(format!("{a}.attention.head_count_kv"), u(s.n_head_kv))
        .unwrap();
    g.set(
        format!("{a}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-5),
    )
    .unwrap();
    let base = if a == "bitnet" { 10000.0 } else { 500000.0 };
    g.set(format!("{a}.rope.freq_base"), Value::F32(base))
        .unwrap();
    for (k, v) in meta {
        g.set(*k, v.clone()).unwrap();
    }
    let d = s.n_embd;
    let kv = s.n_head_kv * (d / s.n_head);
    let mut add = |name: String, ty: GgmlType, shape: &[u64], data: Vec<u8>| {
        if skip != Some(name.as_str()) {
            g.add_tensor(name, ty, shape, data).unwrap();
        }
    };
    let f16 = |v: &[f32]| quant::quantize(GgmlType::F16, v).unwrap();
    let f32b = |v: &[f32]| quant::quantize(GgmlType::F32, v).unwrap();
    add(
        "token_embd.weight".into(),
        GgmlType::F16,
        &[d as u64, s.n_vocab as u64],
        f16(&w.embd),
    );
    add(
        "output_norm.weight".into(),
        GgmlType::F32,
        &[d as u64],
        f32b(&w.output_norm),
    );
    for (l, lw) in w.layers.iter().enumerate() {
        let t = |n: &str| format!("blk.{l}.{n}");
        add(
            t("attn_norm.weight"),
            GgmlType::F32,
            &[d as u64],
            f32b(&lw.attn_norm),
        );
        add(
            t("attn_sub_norm.weight"),
            GgmlType::F32,
            &[d as u64],
            f32b(&lw.attn_sub_norm),
        );
        add(
            t("ffn_norm.weight"),
            GgmlType::F32,
            &[d as u64],
            f32b(&lw.ffn_norm),
        );
        add(
            t("ffn_sub_norm.weight"),
            GgmlType::F32,
            &[s.n_ff as u64],
            f32b(&lw.ffn_sub_norm),
        );
        let dims = [
            (d, d),
            (d, kv),
            (d, kv),
            (d, d),
            (d, s.n_ff),
            (d, s.n_ff),
            (s.n_ff, d),
        ];
        for ((name, p), (k, m)) in PROJ_NAMES.iter().zip(&lw.proj).zip(dims) {
            add(
                t(&format!("{name}.weight")),
                s.proj,
                &[k as u64, m as u64],
                encode(s.proj, p),
            );
            if let Some(sc) = p.out_scale {
                add(
                    t(&format!("{name}.scale")),
                    GgmlType::F32,
                    &[1],
                    f32b(&[sc]),
                );
            }
        }
    }
    g.to_bytes()
}

pub fn open(w: &Weights) -> Arc<GgufFile> {
    Arc::new(GgufFile::from_bytes(gguf_bytes(w, None), "test-model.gguf").unwrap())
}

/// A model read back from GGUF with every tensor dequantized to f64 by the format codecs
/// (`quant::dequantize`, checked against gguf-py elsewhere), independent of the kernels.
pub struct RefModel {
    pub arch: String,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub n_rot: usize,
    pub eps: f64,
    pub base: f64,
    pub silu: bool,
    pub embd: Vec<f64>,
    pub output: Vec<f64>,
    pub output_norm: Vec<f64>,
    /// Per layer: norms (attn, attn_sub, ffn, ffn_sub) and projections (q k v o gate up down),
    /// each projection `[m][k]` row-major with its `.scale` folded in.
    pub layers: Vec<RefLayer>,
}

/// One layer of a [`RefModel`]: (norms, projections).
pub type RefLayer = (Vec<Vec<f64>>, Vec<Vec<f64>>);

impl RefModel {
    pub fn from_gguf(f: &GgufFile) -> RefModel {
        let arch = f
            .get("general.architecture")
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        let u = |k: &str| {
            f.get(&format!("{arch}.{k}"))
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
        };
        let fl = |k: &str| f.get(&format!("{arch}.{k}")).and_then(|v| v.as_f64());
        let deq = |name: &str| -> Vec<f64> {
            let t = f.tensor(name).unwrap_or_else(|| panic!("{name}"));
            quant::dequantize(t.info.ty, t.data, t.info.n_elements() as usize)
                .unwrap()
                .into_iter()
                .map(|v| v as f64)
                .collect()
        };
        let n_embd = u("embedding_length").unwrap();
        let n_head = u("attention.head_count").unwrap();
        let n_layer = u("block_count").unwrap();
        let embd = deq("token_embd.weight");
        let output = if f.tensor("output.weight").is_some() {
            deq("output.weight")
        } else {
            embd.clone()
        };
        let layers = (0..n_layer)
            .map(|l| {
                let norms = ["attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm"]
                    .iter()
                    .map(|n| deq(&format!("blk.{l}.{n}.weight")))
                    .collect();
                let projs = PROJ_NAMES
                    .iter()
                    .map(|n| {
                        let sc = f
                            .tensor(&format!("blk.{l}.{n}.scale"))
                            .map(|t| f32::from_le_bytes(t.data[..4].try_into().unwrap()) as f64)
                            .unwrap_or(1.0);
                        deq(&format!("blk.{l}.{n}.weight"))
                            .into_iter()
                            .map(|v| v * sc)
                            .collect()
                    })
                    .collect();
                (norms, projs)
            })
            .collect();
        RefModel {
            n_embd,
            n_head,
            n_head_kv: u("attention.head_count_kv").unwrap_or(n_head),
            n_ff: u("feed_forward_length").unwrap(),
            n_rot: u("rope.dimension_count").unwrap_or(n_embd / n_head),
            eps: fl("attention.layer_norm_rms_epsilon").unwrap(),
            base: fl("rope.freq_base").unwrap_or(10000.0),
            silu: arch == "bitnet",
            arch,
            embd,
            output,
            output_norm: deq("output_norm.weight"),
            layers,
        }
    }

    /// Independent f64 forward pass over all positions from scratch: logits per position.
    pub fn logits(&self, tokens: &[u32]) -> Vec<Vec<f64>> {
        let (d, hd) = (self.n_embd, self.n_embd / self.n_head);
        let rms = |x: &[f64], g: &[f64]| -> Vec<f64> {
            let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
            let r = 1.0 / (ms + self.eps).sqrt();
            x.iter().zip(g).map(|(v, g)| v * r * g).collect()
        };
        let mv = |w: &[f64], x: &[f64]| -> Vec<f64> {
            w.chunks_exact(x.len())
                .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
                .collect()
        };
        let rope = |v: &mut [f64], pos: usize| {
            let half = self.n_rot / 2;
            for head in v.chunks_exact_mut(hd) {
                for i in 0..half {
                    let th = pos as f64 * self.base.powf(-2.0 * i as f64 / self.n_rot as f64);
                    let (x0, x1) = (head[i], head[i + half]);
                    head[i] = x0 * th.cos() - x1 * th.sin();
                    head[i + half] = x0 * th.sin() + x1 * th.cos();
                }
            }
        };
        let mut xs: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&t| self.embd[t as usize * d..][..d].to_vec())
            .collect();
        for (norms, p) in &self.layers {
            let (mut qs, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
            for (pos, x) in xs.iter().enumerate() {
                let h = rms(x, &norms[0]);
                let mut q = mv(&p[0], &h);
                let mut k = mv(&p[1], &h);
                rope(&mut q, pos);
                rope(&mut k, pos);
                qs.push(q);
                ks.push(k);
                vs.push(mv(&p[2], &h));
            }
            for (pos, x) in xs.iter_mut().enumerate() {
                let mut attn = vec![0f64; d];
                for h in 0..self.n_head {
                    let kvh = h / (self.n_head / self.n_head_kv);
                    let q = &qs[pos][h * hd..][..hd];
                    let sc: Vec<f64> = (0..=pos)
                        .map(|j| {
                            let k = &ks[j][kvh * hd..][..hd];
                            q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                        })
                        .collect();
                    let mx = sc.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = sc.iter().map(|v| (v - mx).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for (j, ej) in e.iter().enumerate() {
                        for i in 0..hd {
                            attn[h * hd + i] += ej / z * vs[j][kvh * hd + i];
                        }
                    }
                }
                let o = mv(&p[3], &rms(&attn, &norms[1]));
                let ffn_inp: Vec<f64> = o.iter().zip(x.iter()).map(|(a, b)| a + b).collect();
                let h = rms(&ffn_inp, &norms[2]);
                let gate = mv(&p[4], &h);
                let up = mv(&p[5], &h);
                let act: Vec<f64> = gate
                    .iter()
                    .zip(&up)
                    .map(|(&g, &u)| {
                        if self.silu {
                            g / (1.0 + (-g).exp()) * u
                        } else {
                            g.max(0.0).powi(2) * u
                        }
                    })
                    .collect();
                let down = mv(&p[6], &rms(&act, &norms[3]));
                *x = down.iter().zip(&ffn_inp).map(|(a, b)| a + b).collect();
            }
        }
        xs.iter()
            .map(|x| mv(&self.output, &rms(x, &self.output_norm)))
            .collect()
    }
}

/// The f64 reference logits of a synthetic test model.
pub fn reference_logits(w: &Weights, tokens: &[u32]) -> Vec<Vec<f64>> {
    RefModel::from_gguf(&open(w)).logits(tokens)
}

/// Cosine similarity and max |a-b| relative to max |b|.
pub fn agreement(a: &[f32], b: &[f64]) -> (f64, f64) {
    let dot: f64 = a.iter().zip(b).map(|(&x, y)| x as f64 * y).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    let maxd = a
        .iter()
        .zip(b)
        .map(|(&x, y)| (x as f64 - y).abs())
        .fold(0.0, f64::max);
    let maxb = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    (dot / (na * nb), maxd / maxb)
}
