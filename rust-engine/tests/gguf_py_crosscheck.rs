//! Cross-checks against gguf-py, the reference Python implementation (llama.cpp's gguf-py, PyPI
//! `gguf`). The fixtures in `fixtures/external/` were written by `scripts/gen_gguf_py_samples.py`
//! (provenance and versions in `fixtures/external/README.md`); these tests read only the committed
//! files, so they run without Python.
//!
//! - `gguf_py_sample.gguf` (written by gguf-py's `GGUFWriter`): our reader reports the same
//!   metadata, tensor names, types, shapes, sizes and offsets as gguf-py's `GGUFReader`, and our
//!   dequantizers give bit-identical f32 to gguf-py's.
//! - `quant_vectors.bin`: our encoders give gguf-py's bytes for Q8_0, TQ1_0, TQ2_0, BF16 and F16.
//!
//! Rounding ties: the brief this suite was written to assumed gguf-py rounds with `np.round`
//! (half to even) where ggml's C `roundf` rounds half away from zero. gguf-py 0.19.0 does not: its
//! quantizers use `np_roundf` (floor(|x|) + floor(2 * frac(|x|)), with the sign), which is half
//! away from zero like C. Our encoders follow ggml C (`quant::round_away`), so the vectors with
//! exact .5 ties (`*/ties`) must match byte for byte too, and `ties_round_half_away_from_zero`
//! checks that those vectors do hit ties and that gguf-py resolved them away from zero. No vector
//! is excluded. Not in the vectors: NaN inputs to F16 (numpy keeps NaN payload bits, ggml's
//! portable conversion writes 0x7e00; see codec_props.rs) and inputs for which 1/d overflows f32
//! (C converts inf to int there: undefined behaviour).

mod gguf_common;

use serde_json::{json, Value as Json};
use xval_engine::gguf::{GgmlType, GgufFile, Value, ValueType};
use xval_engine::quant;

fn load_json(name: &str) -> Json {
    let path = gguf_common::fixture_path(&format!("external/{name}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/gen_gguf_py_samples.py)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn u64_of(j: &Json, key: &str) -> u64 {
    j[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {j}"))
}

/// gguf-py's type chain for a field: the value type, then for arrays the chain of their first
/// element (`ReaderField.types`).
fn type_chain(v: &Value) -> Vec<&'static str> {
    match v {
        Value::Array(ValueType::Array, items) => {
            let mut c = vec!["array"];
            c.extend(
                items
                    .first()
                    .map(type_chain)
                    .unwrap_or_else(|| vec!["array"]),
            );
            c
        }
        Value::Array(t, _) => vec!["array", t.name()],
        other => vec![other.value_type().name()],
    }
}

/// The values flattened as gguf-py's `ReaderField` holds them; floats as bit patterns.
fn flatten(v: &Value, out: &mut Vec<Json>) {
    match v {
        Value::U8(x) => out.push(json!(x)),
        Value::I8(x) => out.push(json!(x)),
        Value::U16(x) => out.push(json!(x)),
        Value::I16(x) => out.push(json!(x)),
        Value::U32(x) => out.push(json!(x)),
        Value::I32(x) => out.push(json!(x)),
        Value::U64(x) => out.push(json!(x)),
        Value::I64(x) => out.push(json!(x)),
        Value::F32(x) => out.push(json!(format!("{:#010x}", x.to_bits()))),
        Value::F64(x) => out.push(json!(format!("{:#018x}", x.to_bits()))),
        Value::Bool(x) => out.push(json!(x)),
        Value::String(s) => out.push(json!(s)),
        Value::Array(_, items) => items.iter().for_each(|i| flatten(i, out)),
    }
}

fn sample() -> (GgufFile, Json) {
    let expected = load_json("gguf_py_sample.expected.json");
    let path = gguf_common::fixture_path("external/gguf_py_sample.gguf");
    let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    (f, expected)
}

#[test]
fn reader_agrees_with_gguf_py_on_the_header() {
    let (f, want) = sample();
    let h = f.header();
    assert_eq!(h.alignment, u64_of(&want, "alignment"));
    assert_eq!(h.data_offset, u64_of(&want, "data_offset"));
    assert_eq!(
        want["alignment"], 64,
        "the sample uses a non-default alignment"
    );

    let want_meta = want["metadata"].as_array().unwrap();
    let keys: Vec<&str> = h.metadata.iter().map(|(k, _)| k.as_str()).collect();
    let want_keys: Vec<&str> = want_meta
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, want_keys, "keys and their order");
    let mut kinds = std::collections::BTreeSet::new();
    for ((key, value), m) in h.metadata.iter().zip(want_meta) {
        let chain = type_chain(value);
        let want_chain: Vec<&str> = m["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(chain, want_chain, "{key}: types");
        let mut flat = Vec::new();
        flatten(value, &mut flat);
        assert_eq!(&Json::Array(flat), &m["values"], "{key}: values");
        kinds.extend(chain);
    }
    // Every one of the 13 value kinds appeared, nested arrays included.
    assert_eq!(kinds.len(), 13, "{kinds:?}");
    assert!(h
        .metadata
        .iter()
        .any(|(_, v)| type_chain(v) == ["array", "array", "i32"]));
}

#[test]
fn reader_agrees_with_gguf_py_on_tensors_and_dequantize_is_bit_identical() {
    let (f, want) = sample();
    let deq_path = gguf_common::fixture_path(&format!(
        "external/{}",
        want["dequant_file"].as_str().unwrap()
    ));
    let reference = read_f32s(&std::fs::read(&deq_path).unwrap());
    let want_tensors = want["tensors"].as_array().unwrap();
    assert_eq!(f.tensors().len(), want_tensors.len());
    let mut types = std::collections::BTreeSet::new();
    for (view, w) in f.tensors().zip(want_tensors) {
        let t = view.info;
        assert_eq!(t.name, w["name"].as_str().unwrap());
        assert_eq!(t.ty.name(), w["type"].as_str().unwrap(), "{}", t.name);
        let shape: Vec<u64> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.shape, shape, "{}: shape (GGUF order)", t.name);
        assert_eq!(t.n_elements(), u64_of(w, "n_elements"), "{}", t.name);
        assert_eq!(t.n_bytes, u64_of(w, "n_bytes"), "{}", t.name);
        assert_eq!(t.offset, u64_of(w, "offset"), "{}", t.name);
        assert_eq!(
            f.header().data_offset + t.offset,
            u64_of(w, "file_offset"),
            "{}",
            t.name
        );

        let start = u64_of(w, "dequant_start") as usize;
        let len = u64_of(w, "dequant_len") as usize;
        let theirs = &reference[start..start + len];
        let ours = quant::dequantize(t.ty, view.data, t.n_elements() as usize).unwrap();
        assert_eq!(ours.len(), len);
        for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{} element {i}: {a} vs {b}",
                t.name
            );
        }
        types.insert(t.ty.name());
    }
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["bf16", "f16", "f32", "q8_0", "tq1_0", "tq2_0"]
    );
}

struct Vector {
    name: String,
    ty: GgmlType,
    input: Vec<f32>,
    output: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let index = load_json("quant_vectors.json");
    let blob = std::fs::read(gguf_common::fixture_path(&format!(
        "external/{}",
        index["file"].as_str().unwrap()
    )))
    .unwrap();
    index["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let n = u64_of(v, "n") as usize;
            let input_at = u64_of(v, "input_offset") as usize;
            let output_at = u64_of(v, "output_offset") as usize;
            let output_len = u64_of(v, "output_len") as usize;
            Vector {
                name: v["name"].as_str().unwrap().to_string(),
                ty: GgmlType::from_name(v["type"].as_str().unwrap()).unwrap(),
                input: read_f32s(&blob[input_at..input_at + 4 * n]),
                output: blob[output_at..output_at + output_len].to_vec(),
            }
        })
        .collect()
}

/// First differing block, for a readable failure.
fn first_difference(ty: GgmlType, ours: &[u8], theirs: &[u8]) -> String {
    let bb = ty.block().bytes as usize;
    let at = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(theirs.len()));
    let blk = at / bb;
    format!(
        "byte {at} (block {blk}): ours {:02x?} gguf-py {:02x?}",
        &ours[blk * bb..(blk * bb + bb).min(ours.len())],
        &theirs[blk * bb..(blk * bb + bb).min(theirs.len())]
    )
}

#[test]
fn encoders_match_gguf_py_byte_for_byte() {
    let vs = vectors();
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for v in &vs {
        let ours = quant::quantize(v.ty, &v.input).unwrap();
        assert_eq!(ours.len(), v.output.len(), "{}: length", v.name);
        assert!(
            ours == v.output,
            "{}: {}",
            v.name,
            first_difference(v.ty, &ours, &v.output)
        );
        *seen.entry(v.ty.name()).or_default() += v.input.len();
    }
    let kinds: Vec<_> = seen.keys().copied().collect();
    assert_eq!(kinds, ["bf16", "f16", "q8_0", "tq1_0", "tq2_0"]);
}

/// The tie vectors do hit exact .5 ties, and gguf-py resolved them away from zero (as C `roundf`
/// does, and as our encoders do): were gguf-py half-to-even, these bytes would differ and the
/// byte-for-byte test above would have to special-case them.
#[test]
fn ties_round_half_away_from_zero() {
    let vs = vectors();
    let get = |name: &str| vs.iter().find(|v| v.name == name).unwrap();

    // Q8_0: the first value of each block is 127, so d = 1 and q = round(x) for the rest.
    let q8 = get("q8_0/ties");
    assert_eq!(
        half::f16::from_le_bytes([q8.output[0], q8.output[1]]).to_f32(),
        1.0
    );
    let mut ties = 0;
    for (x, &q) in q8.input[..32].iter().zip(&q8.output[2..34]) {
        if x.fract().abs() == 0.5 {
            let away = x.trunc() + x.signum();
            assert_eq!(q as i8 as f32, away, "q8_0 tie {x}");
            ties += 1;
        }
    }
    assert!(ties >= 8, "q8_0 tie vector has {ties} ties");

    // TQ2_0: the block max is 1, so d = 1 and x = +-0.5 is a tie between 0 and +-1.
    let tq = get("tq2_0/ties");
    let mut ties = 0;
    for (j, x) in tq.input[..256].iter().enumerate() {
        if x.abs() == 0.5 {
            let t = quant::tq2_0::trit(&tq.output[..64], j);
            assert_eq!(t as f32, x.signum(), "tq2_0 tie at {j}");
            ties += 1;
        }
    }
    assert!(ties >= 2, "tq2_0 tie vector has {ties} ties");

    let tq1 = get("tq1_0/ties");
    let mut ties = 0;
    for (j, x) in tq1.input[256..512].iter().enumerate() {
        if x.abs() == 0.5 {
            let t = quant::tq1_0::trit(&tq1.output[54..108], j);
            assert_eq!(t as f32, x.signum(), "tq1_0 tie at {j}");
            ties += 1;
        }
    }
    assert!(ties > 100, "tq1_0 tie vector has {ties} ties");
}

/// The vectors cover what their notes say: NaNs and infinities for BF16, f16 scale overflow and
/// underflow for the block formats.
#[test]
fn vectors_cover_the_edge_cases() {
    let vs = vectors();
    let get = |name: &str| vs.iter().find(|v| v.name == name).unwrap();
    let bf = get("bf16/specials");
    assert!(bf.input.iter().filter(|x| x.is_nan()).count() >= 5);
    assert!(bf.input.iter().any(|x| x.is_infinite()));
    for ty in ["q8_0", "tq1_0", "tq2_0"] {
        let large = get(&format!("{ty}/large"));
        let bb = GgmlType::from_name(ty).unwrap().block().bytes as usize;
        let scale_at = if ty == "q8_0" { 0 } else { bb - 2 };
        let scales: Vec<f32> = large
            .output
            .chunks(bb)
            .map(|b| half::f16::from_le_bytes([b[scale_at], b[scale_at + 1]]).to_f32())
            .collect();
        assert!(scales.iter().any(|d| d.is_infinite()), "{ty}: {scales:?}");
        let tiny = get(&format!("{ty}/tiny"));
        let scales: Vec<f32> = tiny
            .output
            .chunks(bb)
            .map(|b| half::f16::from_le_bytes([b[scale_at], b[scale_at + 1]]).to_f32())
            .collect();
        assert!(scales.contains(&0.0), "{ty}: {scales:?}");
    }
}
