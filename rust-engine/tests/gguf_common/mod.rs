//! Helpers shared by the GGUF and codec test suites: a rich sample file built with `GgufWriter`,
//! an independent walker that maps every header field of a (well-formed) GGUF to its byte range
//! and to the label the reader uses for it in errors, bit-exact value comparison, and the
//! "touch everything" routine the malformed and mutation suites run on hostile input.
//!
//! Not every test binary uses every helper.
#![allow(dead_code)]

use xval_engine::gguf::{self, GgmlType, GgufWriter, Value, ValueType};
use xval_engine::quant;

/// Path of a file under the repository's `fixtures/` folder.
pub fn fixture_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fixtures")
        .join(rel)
}

/// Metadata values compared bit for bit (NaN payloads and -0.0 included), element types of empty
/// arrays included. `Value`'s derived `PartialEq` says NaN != NaN, which a round trip must not.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(ta, xs), Value::Array(tb, ys)) => {
            ta == tb && xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same_value(x, y))
        }
        _ => a == b,
    }
}

pub fn same_metadata(a: &[(String, Value)], b: &[(String, Value)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

/// Deterministic bytes (splitmix64), for tensor payloads in hand-built samples.
pub fn det_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// Deterministic ternary values (-1, 0, +1).
pub fn det_trits(seed: u64, n: usize) -> Vec<i8> {
    det_bytes(seed, n)
        .into_iter()
        .map(|b| (b % 3) as i8 - 1)
        .collect()
}

/// The tensors of [`rich_sample`]: (name, type, shape).
pub const RICH_TENSORS: [(&str, GgmlType, &[u64]); 8] = [
    ("tok.f32", GgmlType::F32, &[64, 2]),
    ("tok.f16", GgmlType::F16, &[32, 3]),
    ("blk.0.q8", GgmlType::Q8_0, &[64, 2]),
    ("blk.0.tq1", GgmlType::TQ1_0, &[256, 1]),
    ("blk.0.tq2", GgmlType::TQ2_0, &[256, 2]),
    ("blk.0.i2s", GgmlType::I2_S, &[128, 2]),
    // Zero elements: no bytes, but still a descriptor with an offset.
    ("blk.0.empty", GgmlType::F32, &[0, 4]),
    // Last, and 32 bytes long: the file ends with 32 bytes of padding after it.
    ("blk.0.bf16", GgmlType::BF16, &[16]),
];

/// Alignment of [`rich_sample`] (not the default 32, so that alignment handling is exercised).
pub const RICH_ALIGNMENT: u32 = 64;

/// The metadata of [`rich_sample`], in file order.
pub fn rich_metadata() -> Vec<(String, Value)> {
    let v = |k: &str, v: Value| (k.to_string(), v);
    vec![
        v("general.architecture", Value::String("bitnet".into())),
        v(
            "general.name",
            Value::String("malformed-base \u{2713} \u{fc}n\u{ef}c\u{f6}d\u{e9}".into()),
        ),
        v("general.alignment", Value::U32(RICH_ALIGNMENT)),
        v("test.u8", Value::U8(200)),
        v("test.i8", Value::I8(-100)),
        v("test.u16", Value::U16(60000)),
        v("test.i16", Value::I16(-30000)),
        v("test.u32", Value::U32(4_000_000_000)),
        v("test.i32", Value::I32(-2_000_000_000)),
        v("test.f32", Value::F32(-1.5e-3)),
        v("test.bool", Value::Bool(true)),
        v(
            "test.string",
            Value::String("\u{65e5}\u{672c} \u{1f980}".into()),
        ),
        v("test.u64", Value::U64(u64::MAX - 7)),
        v("test.i64", Value::I64(i64::MIN + 3)),
        v("test.f64", Value::F64(std::f64::consts::PI)),
        v("test.arr_i32", Value::i32s([1, -2, 3])),
        v("test.arr_str", Value::strings(["a", "bc", ""])),
        v(
            "test.arr_bool",
            Value::Array(ValueType::Bool, vec![Value::Bool(true), Value::Bool(false)]),
        ),
        v("test.arr_empty", Value::Array(ValueType::F32, vec![])),
        v(
            "test.arr_nested",
            Value::Array(
                ValueType::Array,
                vec![
                    Value::Array(ValueType::U8, vec![Value::U8(1), Value::U8(2)]),
                    Value::Array(ValueType::U8, vec![Value::U8(3)]),
                ],
            ),
        ),
        // Two keys of the same length, for the duplicate-key case.
        v("test.key_a", Value::U16(1)),
        v("test.key_b", Value::U16(2)),
    ]
}

/// Payload of tensor `i` of [`RICH_TENSORS`]: valid data of each type (I2_S codes never 3).
pub fn rich_tensor_bytes(i: usize, ty: GgmlType, shape: &[u64]) -> Vec<u8> {
    let n = shape.iter().product::<u64>() as usize;
    let seed = 1000 + i as u64;
    match ty {
        GgmlType::I2_S => {
            quant::i2_s::pack(&det_trits(seed, n), 0.25, Default::default()).expect("i2_s pack")
        }
        GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::Q8_0 => {
            let x: Vec<f32> = det_bytes(seed, n)
                .into_iter()
                .map(|b| (b as f32 - 128.0) / 64.0)
                .collect();
            quant::quantize(ty, &x).expect("quantize")
        }
        _ => {
            let x: Vec<f32> = det_bytes(seed, n)
                .into_iter()
                .map(|b| (b as f32 - 128.0) / 16.0)
                .collect();
            quant::quantize(ty, &x).expect("quantize")
        }
    }
}

/// A small valid GGUF with metadata of every kind (nested and empty arrays, unicode strings) and
/// tensors of several types, a zero-element tensor and a 64-byte alignment.
pub fn rich_sample() -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in rich_metadata() {
        w.set(k, v).expect("metadata");
    }
    for (i, (name, ty, shape)) in RICH_TENSORS.iter().enumerate() {
        w.add_tensor(*name, *ty, shape, rich_tensor_bytes(i, *ty, shape))
            .expect("tensor");
    }
    w.to_bytes()
}

/// One leaf field of a GGUF header: its byte range and the label the reader gives it in
/// `Error::Malformed` messages.
#[derive(Clone, Debug)]
pub struct Field {
    pub start: usize,
    pub end: usize,
    pub label: String,
}

#[derive(Clone, Debug)]
pub struct KvDesc {
    pub key: String,
    /// Position of the key's u64 length.
    pub key_at: usize,
    /// Position of the u32 value type.
    pub type_at: usize,
    /// Position of the value (for arrays: the u32 element type).
    pub value_at: usize,
    pub value_end: usize,
}

#[derive(Clone, Debug)]
pub struct TensorDesc {
    pub name: String,
    pub name_at: usize,
    pub n_dims_at: usize,
    pub dims_at: Vec<usize>,
    pub type_at: usize,
    pub offset_at: usize,
    pub shape: Vec<u64>,
    pub type_id: u32,
    pub offset: u64,
}

/// Where everything is in a well-formed GGUF, read independently of the crate's reader (from the
/// spec: ggml `docs/gguf.md`).
#[derive(Clone, Debug)]
pub struct Layout {
    /// Every leaf field in file order.
    pub fields: Vec<Field>,
    pub kvs: Vec<KvDesc>,
    pub tensors: Vec<TensorDesc>,
    pub tensor_count: u64,
    pub kv_count: u64,
    /// First byte after the last tensor descriptor.
    pub descriptors_end: usize,
}

impl Layout {
    pub fn kv(&self, key: &str) -> &KvDesc {
        self.kvs
            .iter()
            .find(|k| k.key == key)
            .unwrap_or_else(|| panic!("no key {key}"))
    }

    pub fn tensor(&self, name: &str) -> &TensorDesc {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }
}

struct Walker<'a> {
    b: &'a [u8],
    pos: usize,
    fields: Vec<Field>,
}

impl Walker<'_> {
    fn leaf(&mut self, n: usize, label: &str) -> usize {
        let start = self.pos;
        self.pos += n;
        assert!(
            self.pos <= self.b.len(),
            "walker ran off the file at {label}"
        );
        self.fields.push(Field {
            start,
            end: self.pos,
            label: label.to_string(),
        });
        start
    }
    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.b[at..at + 8].try_into().unwrap())
    }
    fn u32(&mut self, label: &str) -> u32 {
        let at = self.leaf(4, label);
        self.u32_at(at)
    }
    fn u64(&mut self, label: &str) -> u64 {
        let at = self.leaf(8, label);
        self.u64_at(at)
    }
    /// A string is one leaf (length and bytes): the reader reports both under one label.
    fn string(&mut self, label: &str) -> String {
        let len = self.u64_at(self.pos) as usize;
        let at = self.leaf(8 + len, label);
        String::from_utf8(self.b[at + 8..at + 8 + len].to_vec()).expect("utf-8")
    }
    fn value(&mut self, ty: u32, label: &str) {
        match ty {
            0 | 1 | 7 => {
                self.leaf(1, label);
            }
            2 | 3 => {
                self.leaf(2, label);
            }
            4..=6 => {
                self.leaf(4, label);
            }
            10..=12 => {
                self.leaf(8, label);
            }
            8 => {
                self.string(label);
            }
            9 => {
                let elem = self.u32(label);
                let count = self.u64(label);
                for _ in 0..count {
                    self.value(elem, label);
                }
            }
            other => panic!("walker: unknown value type {other}"),
        }
    }
}

/// Map a well-formed GGUF's header.
pub fn walk(bytes: &[u8]) -> Layout {
    let mut w = Walker {
        b: bytes,
        pos: 0,
        fields: Vec::new(),
    };
    w.leaf(4, "magic");
    w.u32("version");
    let tensor_count = w.u64("tensor_count");
    let kv_count = w.u64("metadata_kv_count");
    let mut kvs = Vec::new();
    for i in 0..kv_count {
        let key_at = w.pos;
        let key = w.string(&format!("metadata[{i}].key"));
        let type_at = w.pos;
        let ty = w.u32(&format!("metadata '{key}' type"));
        let value_at = w.pos;
        w.value(ty, &format!("metadata '{key}'"));
        kvs.push(KvDesc {
            key,
            key_at,
            type_at,
            value_at,
            value_end: w.pos,
        });
    }
    let mut tensors = Vec::new();
    for i in 0..tensor_count {
        let name_at = w.pos;
        let name = w.string(&format!("tensor[{i}].name"));
        let n_dims_at = w.pos;
        let n_dims = w.u32(&format!("tensor '{name}' n_dims"));
        let mut dims_at = Vec::new();
        let mut shape = Vec::new();
        for d in 0..n_dims {
            dims_at.push(w.pos);
            shape.push(w.u64(&format!("tensor '{name}' ne[{d}]")));
        }
        let type_at = w.pos;
        let type_id = w.u32(&format!("tensor '{name}' type"));
        let offset_at = w.pos;
        let offset = w.u64(&format!("tensor '{name}' offset"));
        tensors.push(TensorDesc {
            name,
            name_at,
            n_dims_at,
            dims_at,
            type_at,
            offset_at,
            shape,
            type_id,
            offset,
        });
    }
    Layout {
        descriptors_end: w.pos,
        fields: w.fields,
        kvs,
        tensors,
        tensor_count,
        kv_count,
    }
}

pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// What the fuzz target does with an input: parse it and, when that succeeds, read every tensor
/// view and decode every tensor the engine has a codec for (both I2_S layouts). Errors are fine;
/// a panic (or a view whose length disagrees with its descriptor) is a bug.
pub fn exercise(bytes: &[u8]) -> Option<usize> {
    let file = gguf::GgufFile::from_bytes(bytes.to_vec(), "exercise").ok()?;
    let mut decoded = 0;
    for view in file.tensors() {
        assert_eq!(
            view.data.len() as u64,
            view.info.n_bytes,
            "{}",
            view.info.name
        );
        assert_eq!(
            view.info.ty.tensor_bytes(&view.info.shape),
            Ok(view.info.n_bytes)
        );
        if !view.info.ty.has_codec() {
            continue;
        }
        let n = view.info.n_elements() as usize;
        if quant::dequantize(view.info.ty, view.data, n).is_ok() {
            decoded += 1;
        }
        if view.info.ty == GgmlType::I2_S {
            let mut out = vec![0f32; n];
            let _ = quant::i2_s::dequantize(view.data, &mut out, quant::i2_s::I2sLayout::Block64);
        }
    }
    Some(decoded)
}
