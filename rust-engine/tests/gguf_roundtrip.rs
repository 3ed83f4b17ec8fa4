//! GGUF round trips: for random metadata (every value type, nested and empty arrays, arbitrary
//! unicode, NaN payloads) and random tensors of every codec type plus inspect-only types,
//! `parse(write(x))` gives back exactly the metadata (order included), tensor names, types,
//! shapes and bytes, at the default and at other alignments.

mod gguf_common;

use gguf_common::{det_bytes, same_metadata, same_value};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use xval_engine::gguf::{self, GgmlType, GgufFile, GgufWriter, Residence, Value, ValueType};

const SCALARS: [ValueType; 12] = [
    ValueType::U8,
    ValueType::I8,
    ValueType::U16,
    ValueType::I16,
    ValueType::U32,
    ValueType::I32,
    ValueType::F32,
    ValueType::Bool,
    ValueType::String,
    ValueType::U64,
    ValueType::I64,
    ValueType::F64,
];

/// Types the engine has codecs for, then types it only inspects.
const TENSOR_TYPES: [GgmlType; 17] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::I2_S,
    GgmlType::Q4_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q8_K,
    GgmlType::IQ2_XXS,
    GgmlType::IQ4_NL,
    GgmlType::I8,
    GgmlType::I32,
    GgmlType::F64,
    GgmlType::MXFP4,
];

/// Any unicode scalar values, control characters and NUL included.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

fn scalar(ty: ValueType) -> BoxedStrategy<Value> {
    match ty {
        ValueType::U8 => any::<u8>().prop_map(Value::U8).boxed(),
        ValueType::I8 => any::<i8>().prop_map(Value::I8).boxed(),
        ValueType::U16 => any::<u16>().prop_map(Value::U16).boxed(),
        ValueType::I16 => any::<i16>().prop_map(Value::I16).boxed(),
        ValueType::U32 => any::<u32>().prop_map(Value::U32).boxed(),
        ValueType::I32 => any::<i32>().prop_map(Value::I32).boxed(),
        // From raw bits: NaNs with payloads, infinities, subnormals, -0.0.
        ValueType::F32 => any::<u32>()
            .prop_map(|b| Value::F32(f32::from_bits(b)))
            .boxed(),
        ValueType::F64 => any::<u64>()
            .prop_map(|b| Value::F64(f64::from_bits(b)))
            .boxed(),
        ValueType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        ValueType::String => text(12).prop_map(Value::String).boxed(),
        ValueType::U64 => any::<u64>().prop_map(Value::U64).boxed(),
        ValueType::I64 => any::<i64>().prop_map(Value::I64).boxed(),
        ValueType::Array => unreachable!("arrays are built by `array`"),
    }
}

/// A typed array (possibly empty) whose elements may themselves be arrays, `depth` levels deep.
fn array(depth: u32) -> BoxedStrategy<Value> {
    let scalar_array = select(SCALARS.to_vec())
        .prop_flat_map(|t| {
            prop::collection::vec(scalar(t), 0..6).prop_map(move |v| Value::Array(t, v))
        })
        .boxed();
    if depth <= 1 {
        return scalar_array;
    }
    prop_oneof![
        3 => scalar_array,
        1 => prop::collection::vec(array(depth - 1), 0..4)
            .prop_map(|v| Value::Array(ValueType::Array, v)),
    ]
    .boxed()
}

fn value() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => select(SCALARS.to_vec()).prop_flat_map(scalar),
        1 => array(3),
    ]
    .boxed()
}

#[derive(Clone, Debug)]
struct TensorSpec {
    name: String,
    ty: GgmlType,
    shape: Vec<u64>,
    seed: u64,
}

fn tensor_spec() -> impl Strategy<Value = TensorSpec> {
    let dim = prop_oneof![1 => Just(0u64), 6 => 1u64..4];
    (
        text(8),
        select(TENSOR_TYPES.to_vec()),
        0u64..3,
        prop::collection::vec(dim, 0..=3),
        any::<u64>(),
    )
        .prop_map(|(name, ty, rows, higher, seed)| {
            // Whole blocks per row; I2_S sizes are per tensor and the official layout needs
            // multiples of 128.
            let unit = if ty == GgmlType::I2_S {
                128
            } else {
                ty.block().elements
            };
            let mut shape = vec![unit * rows.max(1)];
            shape.extend(higher);
            TensorSpec {
                name,
                ty,
                shape,
                seed,
            }
        })
}

#[derive(Clone, Debug)]
struct Model {
    metadata: Vec<(String, Value)>,
    alignment: Option<u32>,
    tensors: Vec<TensorSpec>,
}

fn model() -> impl Strategy<Value = Model> {
    (
        prop::collection::vec((text(10), value()), 0..10),
        prop_oneof![Just(None), (0u32..10).prop_map(|k| Some(1u32 << k))],
        any::<Index>(),
        prop::collection::vec(tensor_spec(), 0..6),
    )
        .prop_map(|(kvs, alignment, at, mut tensors)| {
            // Keys and names made unique (and names kept within ggml's 63 bytes) by an index
            // prefix; the random part keeps arbitrary unicode in them.
            let mut metadata: Vec<(String, Value)> = kvs
                .into_iter()
                .enumerate()
                .map(|(i, (k, v))| (format!("k{i}.{k}"), v))
                .collect();
            if let Some(a) = alignment {
                let pos = at.index(metadata.len() + 1);
                metadata.insert(pos, ("general.alignment".into(), Value::U32(a)));
            }
            // Id 39 is MXFP4 only in files without I2_S (id 36 makes it the fork's TL2).
            let has_i2s = tensors.iter().any(|t| t.ty == GgmlType::I2_S);
            for (i, t) in tensors.iter_mut().enumerate() {
                t.name = format!("t{i}.{}", t.name);
                if has_i2s && t.ty == GgmlType::MXFP4 {
                    t.ty = GgmlType::Q5_1;
                }
            }
            Model {
                metadata,
                alignment,
                tensors,
            }
        })
}

fn tensor_bytes(t: &TensorSpec) -> Vec<u8> {
    let n = t.ty.tensor_bytes(&t.shape).expect("valid shape") as usize;
    det_bytes(t.seed, n)
}

fn write(m: &Model) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in &m.metadata {
        w.set(k.clone(), v.clone()).expect("set");
    }
    for t in &m.tensors {
        w.add_tensor(t.name.clone(), t.ty, &t.shape, tensor_bytes(t))
            .expect("add_tensor");
    }
    w.to_bytes()
}

fn check_round_trip(m: &Model) -> Result<(), TestCaseError> {
    let bytes = write(m);
    prop_assert_eq!(&bytes, &write(m), "writing is not deterministic");
    let f =
        GgufFile::from_bytes(bytes, "rt.gguf").map_err(|e| TestCaseError::fail(e.to_string()))?;
    let h = f.header();
    prop_assert_eq!(h.version, 3);
    prop_assert!(
        same_metadata(&h.metadata, &m.metadata),
        "metadata differs:\n{:?}\n{:?}",
        h.metadata,
        m.metadata
    );
    for (k, v) in &m.metadata {
        prop_assert!(same_value(h.get(k).expect("key lookup"), v));
    }
    let align = m.alignment.map_or(gguf::DEFAULT_ALIGNMENT, u64::from);
    prop_assert_eq!(h.alignment, align);
    prop_assert_eq!(h.data_offset % align, 0);
    prop_assert_eq!(h.tensors.len(), m.tensors.len());
    for (t, want) in f.tensors().zip(&m.tensors) {
        prop_assert_eq!(&t.info.name, &want.name);
        prop_assert_eq!(t.info.ty, want.ty);
        prop_assert_eq!(&t.info.shape, &want.shape);
        prop_assert_eq!(t.info.offset % align, 0);
        prop_assert_eq!(t.data, &tensor_bytes(want)[..]);
        prop_assert_eq!(
            f.tensor(&want.name).expect("name lookup").info.offset,
            t.info.offset
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn parse_of_write_is_identity(m in model()) {
        check_round_trip(&m)?;
    }
}

/// The same through a real file: `write_file` (temporary file + rename) and the mmap reader.
#[test]
fn file_round_trip_through_mmap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rich.gguf");
    let bytes = gguf_common::rich_sample();
    let mut w = GgufWriter::new();
    for (k, v) in gguf_common::rich_metadata() {
        w.set(k, v).unwrap();
    }
    for (i, (name, ty, shape)) in gguf_common::RICH_TENSORS.iter().enumerate() {
        w.add_tensor(
            *name,
            *ty,
            shape,
            gguf_common::rich_tensor_bytes(i, *ty, shape),
        )
        .unwrap();
    }
    w.write_file(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(!path.with_extension("gguf.tmp").exists());
    let mem = GgufFile::from_bytes(bytes.clone(), "mem").unwrap();
    // Mapped and read into memory (`harness --load`): the same bytes, header and tensors.
    for residence in [Residence::Mapped, Residence::Resident] {
        let f = GgufFile::open_with(&path, residence).unwrap();
        assert_eq!(f.bytes(), &bytes[..], "{residence:?}");
        assert!(same_metadata(f.metadata(), &gguf_common::rich_metadata()));
        for (a, b) in f.tensors().zip(mem.tensors()) {
            assert_eq!(a.info, b.info);
            assert_eq!(a.data, b.data);
        }
    }
    assert_eq!(
        GgufFile::open(&path).unwrap().bytes(),
        &bytes[..],
        "open maps"
    );
}

/// Files that are not whole GGUF files fail the same way held either way: empty, cut inside
/// the header, cut inside the data, absent (each message names the file).
#[test]
fn bad_files_fail_alike_mapped_and_resident() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = gguf_common::rich_sample();
    let header_end = gguf::parse(&bytes, "t").unwrap().data_offset as usize;
    let cases = [
        ("empty.gguf", 0),
        ("cut-header.gguf", header_end / 2),
        ("cut-data.gguf", header_end + 1),
    ];
    for (name, len) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes[..len]).unwrap();
        let [mapped, resident] = [Residence::Mapped, Residence::Resident]
            .map(|r| GgufFile::open_with(&path, r).err().map(|e| e.to_string()));
        let mapped = mapped.unwrap_or_else(|| panic!("{name}: opened"));
        assert_eq!(Some(mapped.clone()), resident, "{name}");
        assert!(mapped.contains(name), "{name}: {mapped}");
    }
    let absent = dir.path().join("absent.gguf");
    for r in [Residence::Mapped, Residence::Resident] {
        let e = GgufFile::open_with(&absent, r).err().unwrap().to_string();
        assert!(e.contains("absent.gguf"), "{r:?}: {e}");
    }
}

/// Every alignment the writer accepts, on the same content: the data moves, nothing else.
#[test]
fn every_power_of_two_alignment() {
    for k in 0..=12 {
        let a = 1u32 << k;
        let mut w = GgufWriter::new();
        w.set("general.alignment", Value::U32(a)).unwrap();
        w.add_tensor("x", GgmlType::TQ2_0, &[256], det_bytes(7, 66))
            .unwrap();
        w.add_tensor("y", GgmlType::F16, &[3], det_bytes(8, 6))
            .unwrap();
        let f = GgufFile::from_bytes(w.to_bytes(), "a").unwrap();
        assert_eq!(f.header().alignment, a as u64);
        assert_eq!(f.tensor("x").unwrap().data, &det_bytes(7, 66)[..]);
        assert_eq!(f.tensor("y").unwrap().data, &det_bytes(8, 6)[..]);
        assert_eq!(
            f.tensor("y").unwrap().info.offset,
            66u64.next_multiple_of(a as u64)
        );
        assert_eq!(f.bytes().len() as u64 % a as u64, 0);
    }
    // The writer refuses what the reader would refuse.
    let mut w = GgufWriter::new();
    assert!(w.set("general.alignment", Value::U32(48)).is_err());
    assert!(w.set("general.alignment", Value::U64(64)).is_err());
}
