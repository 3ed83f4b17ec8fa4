//! GGUF files across the two implementations (issue 2, "Done when"): a file written by
//! llama.cpp's own gguf C API (`xval_cpp_sys::gguf_c::GgufBuilder`) is reported by
//! `harness inspect --json` with the names, types (ggml names), shapes and offsets llama.cpp's
//! reader (`gguf_init_from_file`) reports; and llama.cpp's reader lists every committed fixture
//! as our reader does, except the I2_S one, which mainline must refuse (type 36 is a removed
//! type there).
#![cfg(feature = "llama-cpp")]

mod common;

use std::path::Path;

use common::{fixtures_dir, harness, path_str, stderr};
use serde_json::Value as Json;
use xval_cpp_sys::gguf_c::{self, GgufBuilder, GgufListing, TensorData};
use xval_cpp_sys::Error;
use xval_engine::gguf::{GgmlType, GgufFile};

fn inspect_json(path: &Path) -> Json {
    let out = harness(&["inspect", "--json", path_str(path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

/// (name, type, shape, offset, bytes) per tensor, as `harness inspect --json` reports them,
/// shapes in ggml's `n_dims` form (see `gguf_c::ggml_dims`).
fn ours(j: &Json) -> Vec<(String, String, Vec<u64>, u64, u64)> {
    j["tensors"]
        .as_array()
        .expect("tensors")
        .iter()
        .map(|t| {
            let shape: Vec<u64> = t["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim"))
                .collect();
            (
                t["name"].as_str().expect("name").to_owned(),
                t["type"].as_str().expect("type").to_owned(),
                gguf_c::ggml_dims(&shape),
                t["offset"].as_u64().expect("offset"),
                t["bytes"].as_u64().expect("bytes"),
            )
        })
        .collect()
}

fn theirs(l: &GgufListing) -> Vec<(String, String, Vec<u64>, u64, u64)> {
    l.tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.type_name.clone(),
                t.shape.clone(),
                t.offset,
                t.bytes,
            )
        })
        .collect()
}

fn assert_same(path: &Path, j: &Json, l: &GgufListing) {
    let label = path.display();
    assert_eq!(
        j["data_offset"].as_u64(),
        Some(l.data_offset),
        "{label}: data offset"
    );
    assert_eq!(
        j["alignment"].as_u64(),
        Some(l.alignment),
        "{label}: alignment"
    );
    assert_eq!(
        j["version"].as_u64(),
        Some(l.version as u64),
        "{label}: version"
    );
    assert_eq!(
        j["metadata"].as_object().expect("metadata").len() as u64,
        l.n_kv,
        "{label}: metadata keys"
    );
    let (a, b) = (ours(j), theirs(l));
    assert_eq!(a.len(), b.len(), "{label}: tensor count");
    for (o, t) in a.iter().zip(&b) {
        assert_eq!(
            o, t,
            "{label}: (name, type, shape, offset, bytes), ours vs llama.cpp"
        );
    }
}

/// Deterministic values without transcendental functions: a xorshift walk mapped to [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn inspect_reports_a_llama_cpp_written_file_as_llama_cpp_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("written-by-llama.cpp.gguf");
    // (name, type, shape): every type the brief names, 2-D and 3-D, offsets that need padding.
    let specs: [(&str, GgmlType, &[u64]); 10] = [
        ("a.f32", GgmlType::F32, &[7, 3]),
        ("b.f16", GgmlType::F16, &[5, 2, 3]),
        ("c.bf16", GgmlType::BF16, &[96, 2]),
        ("d.q8_0", GgmlType::Q8_0, &[64, 5]),
        ("e.q8_0", GgmlType::Q8_0, &[32, 3, 2]),
        ("f.tq1_0", GgmlType::TQ1_0, &[256, 3]),
        ("g.tq1_0", GgmlType::TQ1_0, &[512, 1, 2]),
        ("h.tq2_0", GgmlType::TQ2_0, &[256, 2]),
        ("i.tq2_0", GgmlType::TQ2_0, &[768, 2, 2]),
        ("j.f32", GgmlType::F32, &[3]),
    ];
    let mut b = GgufBuilder::new(specs.len() + 1).unwrap();
    b.set_str("general.architecture", "xval-test").unwrap();
    b.set_u32("xval-test.answer", 42).unwrap();
    b.set_f32("xval-test.eps", 1e-5).unwrap();
    for (i, (name, ty, shape)) in specs.iter().enumerate() {
        let n: u64 = shape.iter().product();
        b.add_tensor(
            name,
            *ty,
            shape,
            TensorData::Quantize(&values(n as usize, i as u64 + 1)),
        )
        .unwrap();
    }
    // One body given as raw bytes (f32 little-endian).
    let raw: Vec<u8> = values(6, 99).iter().flat_map(|v| v.to_le_bytes()).collect();
    b.add_tensor("k.raw_f32", GgmlType::F32, &[2, 3], TensorData::Raw(&raw))
        .unwrap();
    b.write(&path).unwrap();

    let listing = gguf_c::read(&path).unwrap();
    assert_eq!(listing.tensors.len(), specs.len() + 1);
    let types: Vec<&str> = listing
        .tensors
        .iter()
        .map(|t| t.type_name.as_str())
        .collect();
    for want in ["f32", "f16", "bf16", "q8_0", "tq1_0", "tq2_0"] {
        assert!(types.contains(&want), "{want} missing from {types:?}");
    }
    let j = inspect_json(&path);
    assert_same(&path, &j, &listing);
    assert_eq!(j["architecture"].as_str(), Some("xval-test"));
    assert_eq!(j["metadata"]["xval-test.answer"].as_u64(), Some(42));

    // The bytes too: our reader's view of each body is what llama.cpp was given / produced.
    let file = GgufFile::open(&path).unwrap();
    let t = file.tensor("k.raw_f32").unwrap();
    assert_eq!(t.data, &raw[..]);
    let q = file.tensor("h.tq2_0").unwrap();
    let deq = xval_engine::quant::dequantize(GgmlType::TQ2_0, q.data, 512).unwrap();
    assert!(
        deq.iter().all(|v| v.abs() <= 1.0),
        "TQ2_0 dequantizes within the input range"
    );

    // Refusals instead of ggml aborts.
    let mut b = GgufBuilder::new(2).unwrap();
    let err = b
        .add_tensor("bad", GgmlType::Q8_0, &[33, 1], TensorData::Raw(&[0; 34]))
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidRequest(_)) && err.to_string().contains("block"),
        "{err}"
    );
    let err = b
        .add_tensor("x", GgmlType::I2_S, &[128], TensorData::Raw(&[0; 64]))
        .unwrap_err();
    assert!(err.to_string().contains("i2_s"), "{err}");
    b.add_tensor("ok", GgmlType::F32, &[1], TensorData::Quantize(&[1.0]))
        .unwrap();
    let err = b
        .add_tensor("ok", GgmlType::F32, &[1], TensorData::Quantize(&[1.0]))
        .unwrap_err();
    assert!(err.to_string().contains("duplicate"), "{err}");
    b.add_tensor("ok2", GgmlType::F32, &[1], TensorData::Quantize(&[1.0]))
        .unwrap();
    let err = b
        .add_tensor("ok3", GgmlType::F32, &[1], TensorData::Quantize(&[1.0]))
        .unwrap_err();
    assert!(err.to_string().contains("at most 2"), "{err}");
}

#[test]
fn llama_cpp_reads_every_committed_fixture_as_we_do() {
    let mut paths: Vec<_> = std::fs::read_dir(fixtures_dir().join("models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 4, "{paths:?}");
    let (mut listed, mut refused) = (0, 0);
    for path in &paths {
        let j = inspect_json(path);
        let has_i2s = ours(&j).iter().any(|t| t.1 == "i2_s");
        match gguf_c::read(path) {
            Ok(l) => {
                assert!(
                    !has_i2s,
                    "{}: mainline llama.cpp read an I2_S file",
                    path.display()
                );
                assert_same(path, &j, &l);
                listed += 1;
            }
            Err(e) => {
                // Mainline's id 36 is the removed IQ4_NL_4_4 (block size 0): it must refuse.
                assert!(has_i2s, "{}: llama.cpp refused it: {e}", path.display());
                let msg = e.to_string();
                assert!(msg.contains("type 36"), "{msg}");
                eprintln!("{}: refused as expected: {msg}", path.display());
                refused += 1;
            }
        }
    }
    eprintln!("{listed} fixtures listed alike by llama.cpp and us, {refused} refused (I2_S)");
    // The two I2_S fixtures (`bitnet-b1.58` and `bitnet`).
    assert_eq!(refused, 2);
}
