#!/usr/bin/env python3
"""Generate the gguf-py cross-check fixtures in fixtures/external/.

gguf-py (the `gguf` package on PyPI, maintained in llama.cpp's gguf-py/) is the reference Python
implementation of GGUF and of ggml's reference quantizers. This script writes, with it:

1. gguf_py_sample.gguf: a small GGUF written by gguf-py's GGUFWriter, with metadata of every
   value type (arrays of every element type, a nested array, unicode strings), a 64-byte
   alignment, and tensors of types F32, F16, BF16, Q8_0, TQ1_0, TQ2_0 (quantized with
   gguf.quants.quantize).
   gguf_py_sample.expected.json: what gguf-py's GGUFReader reports for it (tensor names, type
   names, shapes in GGUF order, byte sizes, offsets; metadata keys, type chains and values, floats
   as bit patterns).
   gguf_py_sample.dequant.f32: gguf-py's dequantized values of every tensor, little-endian f32,
   tensor after tensor (start and length per tensor in the JSON).

2. quant_vectors.bin + quant_vectors.json: codec vectors. For Q8_0, TQ1_0, TQ2_0, BF16 (gguf-py's
   quantizers) and F16 (numpy's float32 -> float16 cast, which is what gguf-py writes for F16) on
   seeded inputs: uniform, wide dynamic range, ternary-times-scale, zeros, tiny and large
   magnitudes, exact rounding ties. The .bin holds, per vector, the input f32 (little-endian) then
   gguf-py's bytes; the JSON gives offsets and lengths.

The Rust tests (rust-engine/tests/gguf_py_crosscheck.rs) read only the committed files; CI does
not need Python. Re-running this script must reproduce the files byte for byte (seeded PCG64,
no transcendental functions); it prints their sha256.

Usage: python3 scripts/gen_gguf_py_samples.py [--out fixtures/external]
Requires: pip install gguf numpy  (generated with the versions recorded in the JSON files).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import warnings
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFValueType as VT, GGUFWriter
from gguf.quants import dequantize, quantize

SEED = 20251127

# Our names for GGUF value types (xval_engine::gguf::ValueType::name).
VT_NAME = {
    VT.UINT8: "u8",
    VT.INT8: "i8",
    VT.UINT16: "u16",
    VT.INT16: "i16",
    VT.UINT32: "u32",
    VT.INT32: "i32",
    VT.FLOAT32: "f32",
    VT.BOOL: "bool",
    VT.STRING: "string",
    VT.ARRAY: "array",
    VT.UINT64: "u64",
    VT.INT64: "i64",
    VT.FLOAT64: "f64",
}


def versions() -> dict:
    return {
        "gguf_py_version": importlib.metadata.version("gguf"),
        "numpy_version": importlib.metadata.version("numpy"),
    }


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


# ------------------------------------------------------------------------------------------------
# 1. The sample file


def sample_tensors(rng: np.random.Generator) -> list[tuple[str, Q, np.ndarray]]:
    """(name, type, f32 values in numpy shape, i.e. reversed GGUF shape)."""

    def uniform(*shape):
        return f32(rng.uniform(-1.0, 1.0, size=shape))

    def ternary(*shape, scale=0.0625):
        return f32(rng.integers(-1, 2, size=shape)) * np.float32(scale)

    return [
        ("token_embd.f32", Q.F32, uniform(3, 64)),
        ("blk.0.f32_3d", Q.F32, uniform(2, 3, 32)),
        ("blk.0.f16", Q.F16, uniform(2, 96) * np.float32(4.0)),
        ("blk.0.bf16", Q.BF16, uniform(4, 32) * np.float32(1e3)),
        ("blk.0.q8_0", Q.Q8_0, uniform(4, 256)),
        ("blk.0.tq1_0", Q.TQ1_0, uniform(3, 256)),
        ("blk.0.tq1_0_ternary", Q.TQ1_0, ternary(2, 256, scale=0.375)),
        ("blk.0.tq2_0", Q.TQ2_0, uniform(2, 512)),
        ("blk.0.tq2_0_ternary", Q.TQ2_0, ternary(1, 256)),
        ("output_norm.weight", Q.F32, uniform(64)),
    ]


def write_sample(path: Path, rng: np.random.Generator) -> None:
    w = GGUFWriter(path, arch="xval-sample")
    w.add_custom_alignment(64)
    w.add_string("general.name", "gguf-py sample \u2713 \u65e5\u672c\u8a9e \U0001f980")
    w.add_uint8("sample.u8", 200)
    w.add_int8("sample.i8", -100)
    w.add_uint16("sample.u16", 60000)
    w.add_int16("sample.i16", -30000)
    w.add_uint32("sample.u32", 4_000_000_000)
    w.add_int32("sample.i32", -2_000_000_000)
    w.add_float32("sample.f32", -1.5e-3)
    w.add_float32("sample.f32_inf", math.inf)
    w.add_uint64("sample.u64", 2**64 - 8)
    w.add_int64("sample.i64", -(2**63) + 3)
    w.add_float64("sample.f64", math.pi)
    w.add_bool("sample.bool_true", True)
    w.add_bool("sample.bool_false", False)
    w.add_string("sample.string", "line one\nline two \u00fc\u00f1\u00ef\u00e7\u00f8d\u00e9")
    arrays = [
        (VT.UINT8, [0, 1, 255]),
        (VT.INT8, [-128, 0, 127]),
        (VT.UINT16, [0, 65535]),
        (VT.INT16, [-32768, 32767]),
        (VT.UINT32, [0, 2**32 - 1]),
        (VT.INT32, [-(2**31), 2**31 - 1, 7]),
        (VT.FLOAT32, [0.5, -0.0, 3.4028234663852886e38, 1e-45]),
        (VT.BOOL, [True, False, True]),
        (VT.STRING, ["a", "", "\u00e9\u00e8", "\U0001f600 emoji", "<|end_of_text|>"]),
        (VT.UINT64, [0, 2**64 - 1]),
        (VT.INT64, [-(2**63), 2**63 - 1]),
        (VT.FLOAT64, [1.0 / 3.0, -2.5e-300, 1e300]),
    ]
    for vt, values in arrays:
        w.add_key_value(f"sample.arr_{VT_NAME[vt]}", values, VT.ARRAY, sub_type=vt)
    # Nested: gguf-py infers the inner arrays' element type (python int -> i32).
    w.add_key_value("sample.arr_nested", [[1, 2], [3], [4, 5, 6]], VT.ARRAY, sub_type=VT.ARRAY)

    for name, qtype, values in sample_tensors(rng):
        if qtype == Q.F32:
            w.add_tensor(name, values)
        elif qtype == Q.F16:
            w.add_tensor(name, quantize(values, Q.F16))
        else:
            w.add_tensor(name, quantize(values, qtype), raw_dtype=qtype)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def flat_values(field) -> list:
    """The field's values as gguf-py stores them, flattened (gguf-py flattens nested arrays);
    floats as bit patterns so that the comparison is exact."""
    leaf = field.types[-1]
    out = []
    for idx in field.data:
        part = field.parts[idx]
        if leaf == VT.STRING:
            out.append(bytes(part).decode("utf-8"))
        elif leaf == VT.FLOAT32:
            out.extend(f"{b:#010x}" for b in part.view(np.uint32).tolist())
        elif leaf == VT.FLOAT64:
            out.extend(f"{b:#018x}" for b in part.view(np.uint64).tolist())
        elif leaf == VT.BOOL:
            out.extend(bool(b) for b in part.tolist())
        else:
            out.extend(int(b) for b in part.tolist())
    return out


def describe_sample(path: Path, dequant_path: Path) -> dict:
    r = GGUFReader(path)
    metadata = []
    for key, field in r.fields.items():
        if key.startswith("GGUF."):  # gguf-py's pseudo-fields for the header counts
            continue
        metadata.append(
            {
                "key": key,
                "types": [VT_NAME[t] for t in field.types],
                "values": flat_values(field),
            }
        )
    tensors = []
    blob = bytearray()
    for t in r.tensors:
        values = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
        assert values.size == t.n_elements
        tensors.append(
            {
                "name": t.name,
                "type": t.tensor_type.name.lower(),
                "shape": [int(d) for d in t.shape],
                "n_elements": int(t.n_elements),
                "n_bytes": int(t.n_bytes),
                "offset": int(t.field.parts[5][0]),
                "file_offset": int(t.data_offset),
                "dequant_start": len(blob) // 4,
                "dequant_len": int(values.size),
            }
        )
        blob += values.astype("<f4").tobytes()
    dequant_path.write_bytes(bytes(blob))
    return {
        **versions(),
        "generator": "scripts/gen_gguf_py_samples.py",
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "metadata": metadata,
        "tensors": tensors,
        "dequant_file": dequant_path.name,
    }


# ------------------------------------------------------------------------------------------------
# 2. Codec vectors


def f16_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Positive f16-representable scales: random finite positive f16 bit patterns."""
    bits = rng.integers(1, 0x7C00, size=n, dtype=np.uint16)
    return bits.view(np.float16).astype(np.float32)


def pow2(k) -> np.ndarray:
    """2^k exactly, for integer k (no libm)."""
    return np.ldexp(np.float32(1.0), np.asarray(k, dtype=np.int32)).astype(np.float32)


NEAR_HALF = [0.49999997, -0.49999997, 0.50000006, -0.50000006]
Q8_TIES = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -126.5] + NEAR_HALF
TQ_TIES = [0.5, -0.5] + NEAR_HALF


def block_vectors(
    rng: np.random.Generator, block: int, tie_max: float, tie_values: list[float]
) -> dict[str, tuple[np.ndarray, str]]:
    """Inputs for a block format of `block` elements (fewer blocks for the 256-element formats,
    to keep the fixture small)."""
    small = block >= 256

    def n(big: int, little: int) -> int:
        return little if small else big

    def uniform(blocks):
        return f32(rng.uniform(-1.0, 1.0, size=(blocks, block)))

    out = {}
    out["uniform"] = (uniform(n(24, 6)).reshape(-1), "uniform(-1, 1)")
    nw = n(24, 8)
    wide = uniform(nw) * pow2(rng.integers(-24, 24, size=(nw, 1)))
    out["wide"] = (wide.reshape(-1), "uniform(-1, 1) times 2^k per block, k in [-24, 24)")
    nt = n(16, 6)
    trits = f32(rng.integers(-1, 2, size=(nt, block)))
    trits[:, 0] = 1.0  # every block has a non-zero value, so amax is its scale
    scale = f16_values(rng, nt).reshape(nt, 1)
    out["ternary_scale"] = ((trits * scale).reshape(-1), "ternary values times an f16-exact scale")
    noisy = trits * scale + f32(rng.uniform(-0.45, 0.45, size=(nt, block))) * scale
    out["ternary_noisy"] = (f32(noisy).reshape(-1), "ternary times scale plus noise within 0.45 steps")
    zeros = np.zeros((3, block), dtype=np.float32)
    zeros[1, ::2] = -0.0
    zeros[2, 5] = 0.25
    out["zeros"] = (zeros.reshape(-1), "all-zero blocks (with -0.0) and a block with one non-zero")
    # Tiny: amax/127 (Q8_0) and amax (TQ) stay normal enough that 1/d is finite in f32; the scale
    # itself underflows f16 to subnormal or zero.
    ns = n(8, 4)
    tiny = uniform(ns) * np.float32(1e-30)
    tiny[ns // 2 :] = uniform(ns - ns // 2) * np.float32(1e-36)
    out["tiny"] = (tiny.reshape(-1), "magnitudes 1e-30 and 1e-36 (f16 scale underflows)")
    nl = n(4, 2)
    large = uniform(3 * nl) * f32([[1e4]] * nl + [[1e6]] * nl + [[1e9]] * nl)
    out["large"] = (large.reshape(-1), "magnitudes 1e4, 1e6, 1e9 (the f16 scale overflows to inf)")
    nz = n(8, 3)
    sparse = np.where(rng.uniform(size=(nz, block)) < 0.05, uniform(nz), np.float32(0.0))
    out["sparse"] = (f32(sparse).reshape(-1), "95% zeros")
    # Exact ties: the block's first value fixes d so that 1/d is exact (Q8_0: 127 -> d = 1; TQ:
    # 1 -> d = 1), then x * (1/d) = x lands on k + 0.5, and on the f32 values either side of 0.5.
    ties = np.zeros((2, block), dtype=np.float32)
    ties[:, 0] = np.float32(tie_max)
    ties[:, 1 : 1 + len(tie_values)] = f32(tie_values)
    ties[1, 1 + len(tie_values) :] = np.float32(0.5)
    out["ties"] = (ties.reshape(-1), "exact .5 ties of x/d, and the f32 values either side of 0.5")
    return out


def bf16_vectors(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, str]]:
    bits = rng.integers(0, 2**32, size=2048, dtype=np.uint64).astype(np.uint32)
    specials = np.array(
        [
            0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7F810000, 0x7FFFFFFF,
            0x7F800000, 0xFF800000, 0x00000000, 0x80000000, 0x00000001, 0x807FFFFF, 0x00800000,
            0x7F7FFFFF, 0x7F7F7FFF, 0x7F7F8000, 0x7F7E8000, 0x3F808000, 0x3F818000, 0x3F807FFF,
            0x3F808001, 0xBF808000, 0xBF818000, 0x00008000, 0x00018000,
        ],
        dtype=np.uint32,
    )
    return {
        "random_bits": (bits.view(np.float32), "uniform random 32-bit patterns (NaNs included)"),
        "specials": (specials.view(np.float32), "NaN payloads, infinities, zeros, subnormals, ties"),
        "uniform": (f32(rng.uniform(-1.0, 1.0, size=512)), "uniform(-1, 1)"),
    }


def f16_vectors(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, str]]:
    # Every f16 value's midpoint to its successor, and one f32 ulp either side: every rounding
    # boundary. NaN inputs are left out: numpy keeps NaN payload bits where ggml's portable
    # conversion writes 0x7e00, and neither is wrong.
    h = np.arange(0, 0x7BFF, 29, dtype=np.uint16)
    lo = h.view(np.float16).astype(np.float64)
    hi = (h + 1).view(np.float16).astype(np.float64)
    mid = ((lo + hi) / 2).astype(np.float32)
    assert np.all(mid.astype(np.float64) == (lo + hi) / 2)
    mb = mid.view(np.uint32)
    edges = np.concatenate([mid, (mb - 1).view(np.float32), (mb + 1).view(np.float32)])
    edges = np.concatenate([edges, -edges])
    wide = f32(rng.uniform(-1, 1, 1024)) * pow2(rng.integers(-30, 20, size=1024))
    special = f32([65504.0, 65519.996, 65520.0, 1e10, np.inf, -np.inf, 0.0, -0.0, 6e-8, 2.9e-8, 3e-8])
    return {
        "boundaries": (edges, "midpoints between neighbouring f16 values and one ulp either side"),
        "wide": (wide, "uniform(-1, 1) times 2^k, k in [-30, 20): subnormal f16 to overflow"),
        "specials": (special, "overflow threshold 65520, infinities, zeros, subnormal rounding"),
    }


def encode(qtype: Q, x: np.ndarray) -> bytes:
    with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if qtype == Q.F16:
            return x.astype(np.float16).view(np.uint8).tobytes()
        return np.asarray(quantize(x, qtype), dtype=np.uint8).tobytes()


def write_vectors(bin_path: Path, json_path: Path, rng: np.random.Generator) -> None:
    groups = [
        (Q.Q8_0, block_vectors(rng, 32, 127.0, Q8_TIES)),
        (Q.TQ1_0, block_vectors(rng, 256, 1.0, TQ_TIES)),
        (Q.TQ2_0, block_vectors(rng, 256, 1.0, TQ_TIES)),
        (Q.BF16, bf16_vectors(rng)),
        (Q.F16, f16_vectors(rng)),
    ]
    blob = bytearray()
    index = []
    for qtype, vectors in groups:
        for name, (x, note) in vectors.items():
            x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
            out = encode(qtype, x)
            entry = {
                "name": f"{qtype.name.lower()}/{name}",
                "type": qtype.name.lower(),
                "n": int(x.size),
                "input_offset": len(blob),
                "note": note,
            }
            blob += x.astype("<f4").tobytes()
            entry["output_offset"] = len(blob)
            entry["output_len"] = len(out)
            blob += out
            index.append(entry)
    bin_path.write_bytes(bytes(blob))
    doc = {
        **versions(),
        "generator": "scripts/gen_gguf_py_samples.py",
        "seed": SEED,
        "file": bin_path.name,
        "sha256": hashlib.sha256(bytes(blob)).hexdigest(),
        "layout": "per vector: n little-endian f32 inputs at input_offset, then output_len bytes "
        "of gguf-py's encoding at output_offset",
        "vectors": index,
    }
    json_path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parent.parent
    ap.add_argument("--out", type=Path, default=root / "fixtures" / "external")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(SEED)
    sample = args.out / "gguf_py_sample.gguf"
    write_sample(sample, rng)
    desc = describe_sample(sample, args.out / "gguf_py_sample.dequant.f32")
    (args.out / "gguf_py_sample.expected.json").write_text(
        json.dumps(desc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    write_vectors(args.out / "quant_vectors.bin", args.out / "quant_vectors.json", rng)

    for p in sorted(args.out.iterdir()):
        if p.suffix in (".gguf", ".bin", ".f32", ".json"):
            print(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.stat().st_size:>7}  {p.name}")


if __name__ == "__main__":
    main()
