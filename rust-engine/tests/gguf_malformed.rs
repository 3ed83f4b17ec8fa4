//! Malformed-file suite: a valid GGUF built with `GgufWriter` (see `gguf_common::rich_sample`) is
//! truncated at every byte and corrupted field by field. Every case must give `Err` with a
//! message naming the problem, never panic, and never make an allocation sized by the corrupt
//! field (a counting allocator checks the largest single request per case).

mod gguf_common;

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;

use gguf_common::{put_u32, put_u64, rich_sample, walk, Layout, RICH_ALIGNMENT, RICH_TENSORS};
use xval_engine::gguf::{self, GgmlType, GgufFile, GgufWriter, Value, ValueType};
use xval_engine::Error;

/// Records, per thread, the largest single allocation requested since the last reset.
struct MaxAlloc;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: a const-initialised Cell has no destructor, but be safe during thread exit.
    let _ = LARGEST.try_with(|m| {
        if size > m.get() {
            m.set(size)
        }
    });
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged;
// the only addition is recording the requested size in a thread-local `Cell`, which allocates
// nothing.
unsafe impl GlobalAlloc for MaxAlloc {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours, forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours, forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as ours, forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // SAFETY: same contract as ours, forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: MaxAlloc = MaxAlloc;

/// Parse `bytes`, returning the result and the largest single allocation made while parsing.
fn parse_measured(bytes: &[u8]) -> (xval_engine::Result<gguf::GgufHeader>, usize) {
    LARGEST.with(|m| m.set(0));
    let r = gguf::parse(bytes, "bad.gguf");
    (r, LARGEST.with(|m| m.get()))
}

/// No legitimate allocation of the parser exceeds a small multiple of the file size (the
/// `Value`s of an array are 32 bytes for 1-byte elements); a corrupt count of 2^60 would.
fn alloc_limit(file_len: usize) -> usize {
    64 * file_len.max(1024)
}

/// Assert that `bytes` fails to parse with a message containing every one of `needles`.
#[track_caller]
fn expect_err(case: &str, bytes: &[u8], needles: &[&str]) -> Error {
    let (r, largest) = parse_measured(bytes);
    assert!(
        largest <= alloc_limit(bytes.len()),
        "{case}: parser allocated {largest} bytes at once for a {}-byte file",
        bytes.len()
    );
    let err = match r {
        Ok(h) => panic!(
            "{case}: expected an error, parsed {} tensors",
            h.tensors.len()
        ),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.starts_with("bad.gguf: "),
        "{case}: message must name the file: {msg}"
    );
    for n in needles {
        assert!(msg.contains(n), "{case}: message lacks {n:?}: {msg}");
    }
    // GgufFile must report the same error, not panic.
    assert!(GgufFile::from_bytes(bytes.to_vec(), "bad.gguf").is_err());
    err
}

/// The meter itself must see a large request, or every allocation check above is vacuous.
#[test]
fn the_allocation_meter_sees_large_requests() {
    LARGEST.with(|m| m.set(0));
    let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(10 << 20));
    let seen = LARGEST.with(|m| m.get());
    drop(v);
    assert!(seen >= 10 << 20, "meter saw {seen}");
    let (r, largest) = parse_measured(&rich_sample());
    assert!(r.is_ok() && largest > 0 && largest <= alloc_limit(4096));
}

fn sample() -> (Vec<u8>, Layout) {
    let b = rich_sample();
    let l = walk(&b);
    (b, l)
}

/// The error a cut at `len` bytes must produce: the label of the field the cut falls in (or the
/// plausibility bound on the counts, or the data section / the first tensor running past the
/// end), or `None` if everything the header describes is still present.
fn expected_truncation_label(l: &Layout, len: usize) -> Option<String> {
    if len >= 24 {
        // The reader bounds both counts by the bytes left after them before reading on.
        let left = (len - 24) as u64;
        if l.tensor_count > left / 24 {
            return Some("(tensor_count)".into());
        }
        if l.kv_count > left / 13 {
            return Some("(metadata_kv_count)".into());
        }
    }
    if let Some(f) = l.fields.iter().find(|f| f.end > len) {
        return Some(format!("({})", f.label));
    }
    let data_offset = l.descriptors_end.next_multiple_of(RICH_ALIGNMENT as usize);
    if data_offset > len {
        return Some("(data section)".into());
    }
    let data_len = (len - data_offset) as u64;
    for t in &l.tensors {
        let ty = GgmlType::from_id(t.type_id, gguf::TypeDialect::BitnetCpp).unwrap();
        let n_bytes = ty.tensor_bytes(&t.shape).unwrap();
        if t.offset + n_bytes > data_len {
            return Some(format!("tensor '{}'", t.name));
        }
    }
    None
}

#[test]
fn the_sample_is_valid_and_the_walker_agrees_with_the_reader() {
    let (b, l) = sample();
    let h = gguf::parse(&b, "ok.gguf").expect("sample parses");
    assert_eq!(h.alignment, RICH_ALIGNMENT as u64);
    assert_eq!(h.dialect, gguf::TypeDialect::BitnetCpp);
    assert_eq!(h.tensors.len(), RICH_TENSORS.len());
    assert_eq!(l.tensors.len(), RICH_TENSORS.len());
    assert_eq!(
        h.data_offset,
        l.descriptors_end.next_multiple_of(RICH_ALIGNMENT as usize) as u64
    );
    for (t, d) in h.tensors.iter().zip(&l.tensors) {
        assert_eq!(
            (t.name.as_str(), &t.shape, t.offset),
            (d.name.as_str(), &d.shape, d.offset)
        );
    }
    let keys: Vec<_> = h.metadata.iter().map(|(k, _)| k.clone()).collect();
    let walked: Vec<_> = l.kvs.iter().map(|k| k.key.clone()).collect();
    assert_eq!(keys, walked);
    assert!(gguf_common::exercise(&b).is_some());
}

/// Cut the file at every length from 0 to its full size. Each cut inside the header must name
/// the exact field it falls in; cuts in the data section name the first tensor that runs past the
/// end; cuts in the trailing padding after the last tensor still parse (the reader, unlike
/// ggml's, does not require the final padding).
#[test]
fn truncation_at_every_offset_names_the_field() {
    let (b, l) = sample();
    let last_end = {
        let h = gguf::parse(&b, "ok").unwrap();
        h.tensors
            .iter()
            .map(|t| h.data_offset + t.offset + t.n_bytes)
            .max()
            .unwrap() as usize
    };
    let mut oks = 0;
    for len in 0..=b.len() {
        let cut = &b[..len];
        match expected_truncation_label(&l, len) {
            Some(label) => {
                let err = expect_err(&format!("cut at {len}"), cut, &[&label]);
                let msg = err.to_string();
                assert!(
                    msg.contains("truncated")
                        || msg.contains("cannot fit")
                        || msg.contains("exceeds")
                        || msg.contains("past the end"),
                    "cut at {len}: message does not say the file is short: {msg}"
                );
                if let Error::Malformed { offset, .. } = err {
                    assert!(offset as usize <= len, "cut at {len}: offset {offset}");
                }
            }
            None => {
                assert!(len >= last_end, "cut at {len} before the last tensor's end");
                let (r, _) = parse_measured(cut);
                assert_eq!(r.expect("cut in trailing padding").tensors.len(), 8);
                assert!(gguf_common::exercise(cut).is_some());
                oks += 1;
            }
        }
    }
    assert_eq!(oks, b.len() - last_end + 1);
    // Every field boundary was among the cuts; say so explicitly for the reader of this test.
    assert!(l.fields.iter().all(|f| f.start <= b.len()));
}

/// A file whose only tensor has no elements, cut inside the padding before the data section: the
/// header is complete, so it parses, and reading the tensor gives an empty view (this indexed
/// past the end of the buffer before).
#[test]
fn zero_element_tensor_with_data_section_past_the_end() {
    let mut w = GgufWriter::new();
    w.set("general.name", Value::String("x".into())).unwrap();
    w.add_tensor("empty", GgmlType::F32, &[0], vec![]).unwrap();
    let b = w.to_bytes();
    let l = walk(&b);
    assert!(
        l.descriptors_end < b.len(),
        "the sample must have header padding"
    );
    for len in l.descriptors_end..=b.len() {
        let f = GgufFile::from_bytes(b[..len].to_vec(), "short").expect("complete header");
        let v = f.tensor("empty").unwrap();
        assert!(v.data.is_empty());
        assert_eq!(f.tensors().len(), 1);
    }
}

#[test]
fn bad_magic_and_versions() {
    let (b, _) = sample();
    let mut x = b.clone();
    x[..4].copy_from_slice(b"GGUG");
    expect_err("magic", &x, &["(magic)", "not a GGUF file"]);
    expect_err("empty file", &[], &["(magic)", "truncated"]);
    for (v, needle) in [
        (1u32, "GGUF v1"),
        (0, "unsupported GGUF version 0"),
        (4, "unsupported GGUF version 4"),
        (3u32.swap_bytes(), "big-endian"),
        (2u32.swap_bytes(), "big-endian"),
        (u32::MAX, "unsupported GGUF version 4294967295"),
    ] {
        let mut x = b.clone();
        put_u32(&mut x, 4, v);
        expect_err(&format!("version {v:#x}"), &x, &["(version)", needle]);
    }
    // Version 2 has the same layout as 3 and is accepted.
    let mut x = b.clone();
    put_u32(&mut x, 4, 2);
    assert_eq!(gguf::parse(&x, "v2").unwrap().version, 2);
}

#[test]
fn header_counts() {
    let (b, l) = sample();
    for v in [1u64 << 60, u64::MAX, (b.len() as u64) / 24 + 1] {
        let mut x = b.clone();
        put_u64(&mut x, 8, v);
        expect_err(
            &format!("tensor_count {v}"),
            &x,
            &["(tensor_count)", &format!("{v} tensors cannot fit")],
        );
    }
    for v in [1u64 << 60, u64::MAX, (b.len() as u64) / 13 + 1] {
        let mut x = b.clone();
        put_u64(&mut x, 16, v);
        expect_err(
            &format!("kv_count {v}"),
            &x,
            &[
                "(metadata_kv_count)",
                &format!("{v} metadata entries cannot fit"),
            ],
        );
    }
    // One entry too many: the reader takes the first tensor descriptor for a key/value (name as
    // key, n_dims 2 as type u16) and from there reads the descriptors out of step.
    let mut x = b.clone();
    put_u64(&mut x, 16, l.kv_count + 1);
    let err = gguf::parse(&x, "bad.gguf").unwrap_err().to_string();
    eprintln!("kv_count+1: {err}");
    assert!(err.starts_with("bad.gguf: "), "{err}");
}

#[test]
fn string_lengths() {
    let (b, l) = sample();
    let kv = l.kv("test.u8");
    for len in [1u64 << 60, u64::MAX, b.len() as u64] {
        let mut x = b.clone();
        put_u64(&mut x, kv.key_at, len);
        expect_err(
            "key length",
            &x,
            &["(metadata[3].key)", &format!("string length {len} exceeds")],
        );
    }
    let kv = l.kv("test.string");
    let kv_index = l.kvs.iter().position(|k| k.key == "test.string").unwrap();
    let mut x = b.clone();
    put_u64(&mut x, kv.value_at, 1 << 60);
    expect_err(
        "string value length",
        &x,
        &[
            "(metadata 'test.string')",
            "string length 1152921504606846976 exceeds",
        ],
    );
    let t = l.tensor("blk.0.q8");
    let mut x = b.clone();
    put_u64(&mut x, t.name_at, u64::MAX);
    expect_err(
        "tensor name length",
        &x,
        &[
            "(tensor[2].name)",
            "string length 18446744073709551615 exceeds",
        ],
    );
    // Invalid UTF-8 in a key and in a tensor name.
    let mut x = b.clone();
    x[kv.key_at + 8] = 0xff;
    expect_err(
        "key utf-8",
        &x,
        &[&format!("(metadata[{kv_index}].key)"), "not valid UTF-8"],
    );
    let mut x = b.clone();
    x[t.name_at + 8] = 0xc3; // a lone lead byte
    expect_err("name utf-8", &x, &["(tensor[2].name)", "not valid UTF-8"]);
}

#[test]
fn array_counts_and_types() {
    let (b, l) = sample();
    for (key, elem) in [
        ("test.arr_i32", "i32"),
        ("test.arr_str", "string"),
        ("test.arr_bool", "bool"),
        ("test.arr_empty", "f32"),
        ("test.arr_nested", "array"),
    ] {
        for count in [1u64 << 60, u64::MAX, b.len() as u64] {
            let mut x = b.clone();
            put_u64(&mut x, l.kv(key).value_at + 4, count);
            expect_err(
                &format!("{key} count {count}"),
                &x,
                &[
                    &format!("(metadata '{key}')"),
                    &format!("array of {count} {elem} values cannot fit"),
                ],
            );
        }
    }
    // The inner array of a nested array: outer element type (4) + count (8), then the first
    // inner array's element type (4) and count.
    let mut x = b.clone();
    put_u64(&mut x, l.kv("test.arr_nested").value_at + 16, 1 << 60);
    expect_err(
        "nested count",
        &x,
        &[
            "(metadata 'test.arr_nested')",
            "array of 1152921504606846976 u8 values",
        ],
    );
    for t in [13u32, 1000, u32::MAX] {
        let mut x = b.clone();
        put_u32(&mut x, l.kv("test.arr_i32").value_at, t);
        expect_err(
            "array element type",
            &x,
            &[&format!("unknown array element type {t}")],
        );
        let mut x = b.clone();
        put_u32(&mut x, l.kv("test.u32").type_at, t);
        expect_err(
            "value type",
            &x,
            &["test.u32", &format!("unknown metadata value type {t}")],
        );
    }
}

/// Arrays nested deeper than the reader's limit are refused (recursion stays bounded).
#[test]
fn nesting_depth_is_bounded() {
    fn nested(depth: usize) -> Value {
        let mut v = Value::Array(ValueType::U8, vec![Value::U8(7)]);
        for _ in 1..depth {
            v = Value::Array(ValueType::Array, vec![v]);
        }
        v
    }
    let build = |depth| {
        let mut w = GgufWriter::new();
        w.set("deep", nested(depth)).unwrap();
        w.to_bytes()
    };
    let ok = gguf::parse(&build(8), "ok").expect("depth 8 is allowed");
    assert!(gguf_common::same_value(ok.get("deep").unwrap(), &nested(8)));
    expect_err(
        "depth 9",
        &build(9),
        &["(metadata 'deep')", "nested deeper than 8"],
    );
    expect_err("depth 200", &build(200), &["nested deeper than 8"]);
}

#[test]
fn bool_bytes() {
    let (b, l) = sample();
    for v in [2u8, 0x80, 0xff] {
        let mut x = b.clone();
        x[l.kv("test.bool").value_at] = v;
        expect_err(
            "bool",
            &x,
            &[
                "(metadata 'test.bool')",
                &format!("bool must be 0 or 1, got {v}"),
            ],
        );
        let mut x = b.clone();
        // element type (4) + count (8), then the second element
        x[l.kv("test.arr_bool").value_at + 13] = v;
        expect_err(
            "bool array",
            &x,
            &["(metadata 'test.arr_bool')", &format!("got {v}")],
        );
    }
}

#[test]
fn alignment_values() {
    let (b, l) = sample();
    let kv = l.kv("general.alignment");
    for a in [0u32, 3, 48, u32::MAX] {
        let mut x = b.clone();
        put_u32(&mut x, kv.value_at, a);
        expect_err(
            &format!("alignment {a}"),
            &x,
            &["metadata 'general.alignment'", "non-zero power of two"],
        );
    }
    // Right value, wrong type (i32 has the same size, so the rest of the file still reads).
    let mut x = b.clone();
    put_u32(&mut x, kv.type_at, ValueType::I32 as u32);
    expect_err(
        "alignment as i32",
        &x,
        &["metadata 'general.alignment'", "I32(64)"],
    );
    // A smaller valid alignment moves the data section: the tensors no longer line up with their
    // bytes, which the reader cannot know, but it must still parse without error or panic since
    // every offset stays a multiple of it.
    let mut x = b.clone();
    put_u32(&mut x, kv.value_at, 32);
    let _ = gguf_common::exercise(&x);
}

#[test]
fn tensor_dims() {
    let (b, l) = sample();
    let t = l.tensor("tok.f32").clone();
    for n in [5u32, 64, u32::MAX] {
        let mut x = b.clone();
        put_u32(&mut x, t.n_dims_at, n);
        expect_err(
            &format!("n_dims {n}"),
            &x,
            &[
                "(tensor 'tok.f32' n_dims)",
                &format!("{n} dimensions, ggml allows at most 4"),
            ],
        );
    }
    // Product overflows u64 (2^62 * 4) and i64 (2^32 * 2^31).
    for (d0, d1) in [(1u64 << 62, 4u64), (1 << 32, 1 << 31), (u64::MAX, u64::MAX)] {
        let mut x = b.clone();
        put_u64(&mut x, t.dims_at[0], d0);
        put_u64(&mut x, t.dims_at[1], d1);
        expect_err(
            &format!("dims {d0}x{d1}"),
            &x,
            &["tensor 'tok.f32'", "overflow the element count"],
        );
    }
    // A dimension ggml would read as negative: caught by the running product when it comes
    // first, and only by a per-dimension check when a zero dimension comes before it (the product
    // stays 0).
    let mut x = b.clone();
    put_u64(&mut x, t.dims_at[0], u64::MAX);
    put_u64(&mut x, t.dims_at[1], 0);
    expect_err(
        "dims max x 0",
        &x,
        &["tensor 'tok.f32'", "overflow the element count"],
    );
    for (d0, d1) in [(0u64, 1u64 << 63), (0, u64::MAX)] {
        let mut x = b.clone();
        put_u64(&mut x, t.dims_at[0], d0);
        put_u64(&mut x, t.dims_at[1], d1);
        expect_err(
            &format!("dims {d0}x{d1}"),
            &x,
            &["tensor 'tok.f32'", "exceeds ggml's limit"],
        );
    }
    // Large but representable: the bytes are not in the file.
    let mut x = b.clone();
    put_u64(&mut x, t.dims_at[1], 1 << 40);
    expect_err(
        "dims 64 x 2^40",
        &x,
        &["tensor 'tok.f32'", "run past the end of the data section"],
    );
    // Row length not a multiple of the block.
    let q = l.tensor("blk.0.q8");
    let mut x = b.clone();
    put_u64(&mut x, q.dims_at[0], 48);
    expect_err(
        "q8_0 row 48",
        &x,
        &[
            "tensor 'blk.0.q8'",
            "ne0 = 48 is not a multiple of the q8_0 block size 32",
        ],
    );
    let i = l.tensor("blk.0.i2s");
    let mut x = b.clone();
    put_u64(&mut x, i.dims_at[0], 100);
    expect_err(
        "i2_s 200 elements",
        &x,
        &["tensor 'blk.0.i2s'", "divisible by 64"],
    );
}

#[test]
fn tensor_type_ids() {
    let (b, l) = sample();
    let t = l.tensor("tok.f32");
    for (id, needle) in [
        (99u32, "unknown ggml type id 99"),
        (u32::MAX, "unknown ggml type id 4294967295"),
        (4, "Q4_2/Q4_3"),
        (32, "removed from GGUF files"),
        (37, "I8_S"),
        (38, "TL1"),
        // This file has I2_S (id 36), so 39 is the fork's TL2, not mainline's MXFP4.
        (39, "TL2"),
    ] {
        let mut x = b.clone();
        put_u32(&mut x, t.type_at, id);
        let err = expect_err(&format!("type {id}"), &x, &["tensor 'tok.f32'", needle]);
        assert!(matches!(err, Error::UnsupportedType { .. }), "{err:?}");
    }
    // F16 rows of 32 are not a whole TQ2_0 block.
    let mut x = b.clone();
    put_u32(&mut x, l.tensor("tok.f16").type_at, GgmlType::TQ2_0.id());
    expect_err(
        "tq2_0 row 32",
        &x,
        &[
            "tensor 'tok.f16'",
            "ne0 = 32 is not a multiple of the tq2_0 block size 256",
        ],
    );
    // Doubling the element size makes the tensor run into the next one.
    let mut x = b.clone();
    put_u32(&mut x, t.type_at, GgmlType::F64.id());
    expect_err("f32 -> f64", &x, &["overlap tensor 'tok.f32'"]);
}

/// Without I2_S and without a bitnet architecture, id 39 is mainline's MXFP4: readable, not an
/// error (inspect-only type).
#[test]
fn type_39_is_mxfp4_in_a_mainline_file() {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()))
        .unwrap();
    w.add_tensor("m", GgmlType::MXFP4, &[64], gguf_common::det_bytes(1, 34))
        .unwrap();
    let b = w.to_bytes();
    let h = gguf::parse(&b, "mx").unwrap();
    assert_eq!(h.dialect, gguf::TypeDialect::Mainline);
    assert_eq!(h.tensors[0].ty, GgmlType::MXFP4);
    // The same id under a bitnet architecture is TL2.
    let mut w2 = GgufWriter::new();
    w2.set("general.architecture", Value::String("bitnet-b1.58".into()))
        .unwrap();
    w2.add_tensor("m", GgmlType::MXFP4, &[64], gguf_common::det_bytes(1, 34))
        .unwrap();
    expect_err("tl2", &w2.to_bytes(), &["tensor 'm'", "TL2"]);
}

#[test]
fn tensor_offsets() {
    let (b, l) = sample();
    let h = gguf::parse(&b, "ok").unwrap();
    let data_len = b.len() as u64 - h.data_offset;
    let q = l.tensor("blk.0.q8");
    for off in [q.offset + 1, q.offset + 32, q.offset + 63] {
        let mut x = b.clone();
        put_u64(&mut x, q.offset_at, off);
        expect_err(
            &format!("offset {off}"),
            &x,
            &[
                "tensor 'blk.0.q8'",
                &format!("data offset {off} is not a multiple of the alignment 64"),
            ],
        );
    }
    for off in [
        data_len.next_multiple_of(64),
        1 << 40,
        u64::MAX - 63, // aligned; offset + size overflows u64
    ] {
        let mut x = b.clone();
        put_u64(&mut x, q.offset_at, off);
        expect_err(
            &format!("offset {off}"),
            &x,
            &["tensor 'blk.0.q8'", "run past the end of the data section"],
        );
    }
    // A zero-element tensor may sit at the very end, not past it.
    let e = l.tensor("blk.0.empty");
    let mut x = b.clone();
    put_u64(&mut x, e.offset_at, data_len.next_multiple_of(64) + 64);
    expect_err(
        "empty past end",
        &x,
        &["tensor 'blk.0.empty'", "past the end"],
    );
    // Two tensors sharing bytes.
    let mut x = b.clone();
    put_u64(&mut x, l.tensor("blk.0.tq2").offset_at, q.offset);
    expect_err(
        "overlap",
        &x,
        &["tensor 'blk.0.tq2'", "overlap tensor 'blk.0.q8'"],
    );
    // Partial overlap: q8 is 136 bytes long, so q8.offset + 64 (aligned) is inside it.
    let mut x = b.clone();
    put_u64(&mut x, l.tensor("blk.0.tq1").offset_at, q.offset + 64);
    expect_err("partial overlap", &x, &["overlap tensor 'blk.0.q8'"]);
}

#[test]
fn duplicates() {
    let (b, l) = sample();
    let kv = l.kv("test.key_b");
    let mut x = b.clone();
    let last = kv.key_at + 8 + "test.key_b".len() - 1;
    x[last] = b'a';
    expect_err("duplicate key", &x, &["duplicate key 'test.key_a'"]);
    let t = l.tensor("blk.0.tq2");
    let mut x = b.clone();
    x[t.name_at + 8 + "blk.0.tq2".len() - 1] = b'1';
    expect_err(
        "duplicate tensor",
        &x,
        &["tensor 'blk.0.tq1'", "duplicate tensor name"],
    );
}

/// Hand-assembled header pieces the writer refuses to produce.
fn raw_header(tensors: &[(&[u8], &[u64], u32, u64)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    for (name, shape, ty, off) in tensors {
        b.extend_from_slice(&(name.len() as u64).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in *shape {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&off.to_le_bytes());
    }
    b.resize(b.len().next_multiple_of(32) + 256, 0);
    b
}

#[test]
fn tensor_names_and_zero_dims() {
    let long = [b'x'; 64];
    expect_err(
        "name 64 bytes",
        &raw_header(&[(&long, &[4], 0, 0)]),
        &["ggml allows at most 63"],
    );
    let ok = raw_header(&[(&long[..63], &[4], 0, 0)]);
    assert!(gguf::parse(&ok, "ok").is_ok());
    // n_dims = 0 is a scalar (one element), as in ggml.
    let h = gguf::parse(&raw_header(&[(b"s", &[], 0, 0)]), "ok").unwrap();
    assert_eq!(h.tensors[0].n_elements(), 1);
    assert_eq!(h.tensors[0].n_bytes, 4);
}
