//! Stable-toolchain stand-in for the `gguf_parse` fuzz target (`fuzz/`): mutate valid GGUF files
//! (bit flips, byte and word sets with boundary values, splices, insertions, deletions,
//! truncations) and run each result through what the fuzz target does (`gguf_common::exercise`:
//! parse, read every tensor view, decode every codec tensor). Errors are expected; a panic fails.
//! `XVAL_MUTATION_CASES` raises the number of random cases (default 3000) for a longer run.

mod gguf_common;

use proptest::prelude::*;
use proptest::sample::Index;
use xval_engine::gguf::{GgmlType, GgufWriter, Value};

/// The files mutated: the rich sample (bitnet dialect, I2_S, zero-size tensor, alignment 64), the
/// gguf-py sample, and a small mainline file with an MXFP4 tensor.
fn bases() -> Vec<Vec<u8>> {
    let mut mainline = GgufWriter::new();
    mainline
        .set("general.architecture", Value::String("llama".into()))
        .unwrap();
    mainline
        .set("tokenizer.ggml.tokens", Value::strings(["<s>", "a", "b"]))
        .unwrap();
    mainline
        .add_tensor("m", GgmlType::MXFP4, &[64], gguf_common::det_bytes(3, 34))
        .unwrap();
    mainline
        .add_tensor("t", GgmlType::TQ2_0, &[256], gguf_common::det_bytes(4, 66))
        .unwrap();
    vec![
        gguf_common::rich_sample(),
        std::fs::read(gguf_common::fixture_path("external/gguf_py_sample.gguf")).unwrap(),
        mainline.to_bytes(),
    ]
}

/// Values that sit on the boundaries the reader checks: counts, lengths, type ids, dims, offsets.
const INTERESTING: [u64; 26] = [
    0,
    1,
    2,
    3,
    4,
    5,
    8,
    9,
    13,
    31,
    32,
    36,
    37,
    38,
    39,
    63,
    64,
    255,
    256,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 60,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
];

#[derive(Clone, Debug)]
enum Op {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    SetU32(Index, u64),
    SetU64(Index, u64),
    /// Copy `len` bytes from one place to another (overwriting).
    Splice(Index, Index, usize),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    Truncate(Index),
}

fn op() -> impl Strategy<Value = Op> {
    let interesting = prop_oneof![
        3 => prop::sample::select(INTERESTING.to_vec()),
        1 => any::<u64>(),
    ];
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Op::FlipBit(i, b)),
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Op::SetByte(i, v)),
        3 => (any::<Index>(), interesting.clone()).prop_map(|(i, v)| Op::SetU32(i, v)),
        3 => (any::<Index>(), interesting).prop_map(|(i, v)| Op::SetU64(i, v)),
        1 => (any::<Index>(), any::<Index>(), 1usize..64).prop_map(|(a, b, n)| Op::Splice(a, b, n)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Op::Insert(i, v)),
        1 => (any::<Index>(), 1usize..32).prop_map(|(i, n)| Op::Remove(i, n)),
        1 => any::<Index>().prop_map(Op::Truncate),
    ]
}

/// Apply `op`; positions fall in the header (where every byte means something) when `header` is
/// set, anywhere in the file otherwise.
fn apply(b: &mut Vec<u8>, op: &Op, header_len: usize, header: bool) {
    if b.is_empty() {
        return;
    }
    let span = if header {
        header_len.min(b.len())
    } else {
        b.len()
    };
    let at = |i: &Index| i.index(span.max(1));
    let put = |b: &mut Vec<u8>, p: usize, bytes: &[u8]| {
        let n = bytes.len().min(b.len() - p);
        b[p..p + n].copy_from_slice(&bytes[..n]);
    };
    match op {
        Op::FlipBit(i, bit) => {
            let p = at(i);
            b[p] ^= 1 << bit;
        }
        Op::SetByte(i, v) => {
            let p = at(i);
            b[p] = *v;
        }
        Op::SetU32(i, v) => {
            let p = at(i);
            put(b, p, &(*v as u32).to_le_bytes());
        }
        Op::SetU64(i, v) => {
            let p = at(i);
            put(b, p, &v.to_le_bytes());
        }
        Op::Splice(src, dst, n) => {
            let (s, d) = (src.index(b.len()), at(dst));
            let n = (*n).min(b.len() - s).min(b.len() - d);
            let chunk = b[s..s + n].to_vec();
            b[d..d + n].copy_from_slice(&chunk);
        }
        Op::Insert(i, v) => {
            let p = at(i);
            b.splice(p..p, v.iter().copied());
        }
        Op::Remove(i, n) => {
            let p = at(i);
            let end = (p + n).min(b.len());
            b.drain(p..end);
        }
        Op::Truncate(i) => {
            let p = i.index(b.len() + 1);
            b.truncate(p);
        }
    }
}

fn cases() -> u32 {
    std::env::var("XVAL_MUTATION_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_files_never_panic(
        base in 0usize..3,
        ops in prop::collection::vec((op(), prop::bool::weighted(0.75)), 1..6),
    ) {
        let bases = bases();
        let mut b = bases[base].clone();
        let header_len = xval_engine::gguf::parse(&b, "base").unwrap().data_offset as usize;
        for (op, header) in &ops {
            apply(&mut b, op, header_len, *header);
        }
        let _ = gguf_common::exercise(&b);
    }
}

/// Deterministic sweep: every header byte of each base set to 0x00 and 0xff and each of its bits
/// flipped, one at a time.
#[test]
fn every_single_byte_corruption_of_the_header() {
    let mut parsed = 0usize;
    let mut total = 0usize;
    for base in bases() {
        let header_len = xval_engine::gguf::parse(&base, "base").unwrap().data_offset as usize;
        let mut b = base.clone();
        for p in 0..header_len {
            let orig = b[p];
            let variants = [0x00, 0xff]
                .into_iter()
                .chain((0..8).map(|bit| orig ^ (1 << bit)));
            for v in variants {
                if v == orig {
                    continue;
                }
                b[p] = v;
                parsed += gguf_common::exercise(&b).is_some() as usize;
                total += 1;
            }
            b[p] = orig;
        }
        assert_eq!(b, base);
    }
    // Most single-byte corruptions of a header are caught; some (padding, a string's content, a
    // value's payload) legitimately are not. Both kinds must occur, or the sweep tests nothing.
    assert!(
        total > 10_000 && parsed > 0 && parsed < total,
        "{parsed} of {total} parsed"
    );
}
