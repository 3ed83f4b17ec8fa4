//! I2_S -> TQ2_0 transcode, so that mainline llama.cpp (which cannot read bitnet.cpp's I2_S) can
//! run an I2_S model as the built-in oracle.
//!
//! Lossless by construction: every I2_S weight keeps its ternary code, packed into TQ2_0 blocks
//! whose f16 scale `d` is exactly 1.0, and the I2_S per-tensor f32 scale moves, unrounded, into a
//! one-element F32 tensor `<name>.scale` beside the weight. Mainline's bitnet graph multiplies each
//! projection's output by that tensor (`llm_graph_context::build_lora_mm(w, cur, w_s)` and the
//! `ffn_up_s`/`ffn_gate_s` path of `build_ffn`), so `(T x) * s` replaces I2_S's `(T*s) x`.
//! `trit * 1.0 * s` and `trit * s` are the same f32 for every trit, which the tests check on
//! whole files.
//!
//! Only the seven projection weights of a block may be I2_S: those are the tensors llama.cpp
//! applies a `.scale` to (`llama_model_bitnet::load_arch_tensors`). Anything else in I2_S would
//! silently lose its scale, so it is refused.

use std::path::Path;

use half::f16;

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufFile, GgufWriter, Value};
use crate::quant::{i2_s, tq2_0};

/// `LLAMA_FTYPE_MOSTLY_TQ2_0` in llama.h: written to `general.file_type` when the source had one.
const LLAMA_FTYPE_MOSTLY_TQ2_0: u32 = 37;

/// Metadata key recording that the file is a transcode, and of what.
pub const PROVENANCE_KEY: &str = "xval.transcode";

/// Projection tags whose output llama.cpp multiplies by a one-element `.scale` tensor.
use crate::model::PROJECTIONS as SCALED_PROJECTIONS;

/// What a transcode did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranscodeReport {
    /// Weights rewritten from I2_S to TQ2_0, each with its new `.scale` tensor, in file order.
    pub transcoded: Vec<String>,
    /// Tensors copied byte for byte.
    pub copied: usize,
}

/// Transcode every I2_S tensor of `src` (official 128-weight layout) and write the result to
/// `dst` atomically. A file without I2_S tensors is refused: there is nothing to transcode.
pub fn i2s_to_tq2_0(src: &GgufFile, dst: &Path) -> Result<TranscodeReport> {
    i2s_to_tq2_0_with(src, dst, i2_s::I2sLayout::default())
}

/// [`i2s_to_tq2_0`] into a scratch file the caller deletes after the run (an oracle's input):
/// each tensor packed or copied straight into the file as it is written (no image of the
/// whole model in memory: on a 1.2 GB model that was 1.2 GB more of peak memory and seconds of
/// page clearing and copying), and not synced to disk ([`GgufWriter::write_scratch_file_with`]).
pub fn i2s_to_tq2_0_scratch(src: &GgufFile, dst: &Path) -> Result<TranscodeReport> {
    let (mut w, tensors, report) = plan(src, i2_s::I2sLayout::default(), ScaleTo::Tensor)?;
    for t in &tensors {
        w.declare_tensor(t.name.clone(), t.ty, &t.shape)?;
    }
    w.write_scratch_file_with(dst, |i, out| match &tensors[i].data {
        Source::Borrowed(b) => out.write_all(b),
        Source::Owned(v) => out.write_all(v),
        Source::I2s128(codes) => out.write_all(&pack_tq2_0_from_i2s128(codes, f16::ONE)),
    })?;
    Ok(report)
}

/// [`i2s_to_tq2_0`] for a given I2_S block layout.
pub fn i2s_to_tq2_0_with(
    src: &GgufFile,
    dst: &Path,
    layout: i2_s::I2sLayout,
) -> Result<TranscodeReport> {
    let (writer, report) = transcode_to_writer(src, layout)?;
    writer.write_file(dst)?;
    Ok(report)
}

/// Where the transcode puts each I2_S tensor's per-tensor scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleTo {
    /// Unrounded, into a one-element F32 `.scale` tensor; every block's `d` is 1.0 (lossless).
    Tensor,
    /// Rounded to f16, as every block's `d`: what `llama-quantize` makes of a BitNet model's
    /// ternary weights (each block's absmax is the scale). Not lossless: the model's weights
    /// become `trit * f16(scale)`.
    BlockD,
}

/// Build the lossless transcoded image in memory (the writer holds every tensor's bytes).
pub fn transcode_to_writer(
    src: &GgufFile,
    layout: i2_s::I2sLayout,
) -> Result<(GgufWriter, TranscodeReport)> {
    transcode_to_writer_with(src, layout, ScaleTo::Tensor)
}

/// [`transcode_to_writer`] with the scale where `to` says.
pub fn transcode_to_writer_with(
    src: &GgufFile,
    layout: i2_s::I2sLayout,
    to: ScaleTo,
) -> Result<(GgufWriter, TranscodeReport)> {
    let (mut w, tensors, report) = plan(src, layout, to)?;
    for t in tensors {
        let data = match t.data {
            Source::Borrowed(b) => b.to_vec(),
            Source::Owned(v) => v,
            Source::I2s128(codes) => pack_tq2_0_from_i2s128(codes, f16::ONE),
        };
        w.add_tensor(t.name, t.ty, &t.shape, data)?;
    }
    Ok((w, report))
}

/// Where a transcoded tensor's bytes come from.
enum Source<'a> {
    /// The source tensor's bytes, as they are.
    Borrowed(&'a [u8]),
    /// Computed already.
    Owned(Vec<u8>),
    /// Checked I2_S codes in the 128-weight layout, packed as TQ2_0 with d = 1.0 when written.
    I2s128(&'a [u8]),
}

/// One tensor of the transcoded file.
struct Planned<'a> {
    name: String,
    ty: GgmlType,
    shape: Vec<u64>,
    data: Source<'a>,
}

/// The transcoded file as a writer holding its metadata and, in file order, its tensors and
/// where their bytes come from: every check made and every error found here, before a byte is
/// written.
fn plan<'a>(
    src: &'a GgufFile,
    layout: i2_s::I2sLayout,
    to: ScaleTo,
) -> Result<(GgufWriter, Vec<Planned<'a>>, TranscodeReport)> {
    let file = src.label();
    let i2s: Vec<&str> = src
        .tensors()
        .filter(|t| t.info.ty == GgmlType::I2_S)
        .map(|t| t.info.name.as_str())
        .collect();
    if i2s.is_empty() {
        return Err(Error::Invalid(format!(
            "{file}: no I2_S tensor to transcode"
        )));
    }

    let mut w = GgufWriter::new();
    for (key, value) in src.metadata() {
        let value = if key == "general.file_type" {
            // Keep the key's own integer type; the value now says TQ2_0.
            match value {
                Value::U32(_) => Value::U32(LLAMA_FTYPE_MOSTLY_TQ2_0),
                Value::I32(_) => Value::I32(LLAMA_FTYPE_MOSTLY_TQ2_0 as i32),
                other => other.clone(),
            }
        } else {
            value.clone()
        };
        w.set(key.clone(), value)?;
    }
    w.set(
        PROVENANCE_KEY,
        Value::String(match to {
            ScaleTo::Tensor => format!(
                "I2_S ({}) -> TQ2_0 with d = 1.0 and one-element F32 .scale tensors",
                layout.name()
            ),
            ScaleTo::BlockD => format!(
                "I2_S ({}) -> TQ2_0 with the per-tensor scale as every block's f16 d",
                layout.name()
            ),
        }),
    )?;

    let mut report = TranscodeReport {
        transcoded: Vec::with_capacity(i2s.len()),
        copied: 0,
    };
    let mut tensors = Vec::new();
    let mut add = |name: &str, ty, shape: &[u64], data| {
        tensors.push(Planned {
            name: name.to_string(),
            ty,
            shape: shape.to_vec(),
            data,
        })
    };
    for t in src.tensors() {
        let name = &t.info.name;
        if t.info.ty != GgmlType::I2_S {
            add(name, t.info.ty, &t.info.shape, Source::Borrowed(t.data));
            report.copied += 1;
            continue;
        }
        let bad = |reason: String| Error::BadTensor {
            file: file.to_string(),
            tensor: name.clone(),
            reason,
        };
        let ne0 = t.info.shape[0];
        if ne0 % tq2_0::BLOCK as u64 != 0 {
            return Err(bad(format!(
                "row length {ne0} is not a multiple of 256: TQ2_0 blocks cannot hold its rows"
            )));
        }
        let n = t.info.n_elements() as usize;
        if to == ScaleTo::BlockD {
            let packed =
                i2s_tensor_to_tq2_0_block_d(t.data, n, layout).map_err(|e| bad(e.to_string()))?;
            add(name, GgmlType::TQ2_0, &t.info.shape, Source::Owned(packed));
            report.transcoded.push(name.clone());
            continue;
        }
        let scale_name = scale_tensor_name(name).ok_or_else(|| {
            bad(format!(
                "I2_S on a tensor llama.cpp applies no .scale to (only blk.N.{{{}}}.weight): \
                 its per-tensor scale would be lost",
                SCALED_PROJECTIONS.join(",")
            ))
        })?;
        if src.tensor(&scale_name).is_some() {
            return Err(bad(format!(
                "the file already has '{scale_name}', where the I2_S scale must go"
            )));
        }
        // Rows are whole blocks (ne0 % 256 == 0), so the tensor packs block after block: in
        // the 128-weight layout straight from the checked codes as it is written, in another
        // layout here.
        let (data, scale) = if layout == i2_s::I2sLayout::Block128 {
            let (codes, scale) = codes_and_scale(t.data, n).map_err(|e| bad(e.to_string()))?;
            (Source::I2s128(codes), scale)
        } else {
            let (packed, scale) =
                i2s_tensor_to_tq2_0(t.data, n, layout).map_err(|e| bad(e.to_string()))?;
            (Source::Owned(packed), scale)
        };
        add(name, GgmlType::TQ2_0, &t.info.shape, data);
        let scale = Source::Owned(scale.to_le_bytes().to_vec());
        add(&scale_name, GgmlType::F32, &[1], scale);
        report.transcoded.push(name.clone());
    }
    Ok((w, tensors, report))
}

/// The transcode of one I2_S tensor image of `n` weights (`n` a multiple of 256): its TQ2_0
/// blocks with d = 1.0 and the per-tensor scale, which must be finite. Public so that the
/// kernel-parity tests run ggml's TQ2_0 kernels on exactly what the transcoded file holds.
pub fn i2s_tensor_to_tq2_0(
    data: &[u8],
    n: usize,
    layout: i2_s::I2sLayout,
) -> Result<(Vec<u8>, f32)> {
    if layout == i2_s::I2sLayout::Block128 {
        let (codes, scale) = codes_and_scale(data, n)?;
        return Ok((pack_tq2_0_from_i2s128(codes, f16::ONE), scale));
    }
    let (trits, scale) = trits_and_scale(data, n, layout)?;
    Ok((pack_tq2_0(&trits, f16::ONE), scale))
}

/// One I2_S tensor as TQ2_0 blocks whose `d` is the scale rounded to f16 ([`ScaleTo::BlockD`]).
pub fn i2s_tensor_to_tq2_0_block_d(
    data: &[u8],
    n: usize,
    layout: i2_s::I2sLayout,
) -> Result<Vec<u8>> {
    let scale_d = |scale: f32| {
        let d = f16::from_f32(scale);
        if !d.is_finite() || d.to_f32() == 0.0 {
            return Err(Error::format(
                "i2_s",
                format!("I2_S scale {scale} has no finite non-zero f16"),
            ));
        }
        Ok(d)
    };
    if layout == i2_s::I2sLayout::Block128 {
        let (codes, scale) = codes_and_scale(data, n)?;
        return Ok(pack_tq2_0_from_i2s128(codes, scale_d(scale)?));
    }
    let (trits, scale) = trits_and_scale(data, n, layout)?;
    Ok(pack_tq2_0(&trits, scale_d(scale)?))
}

/// The code bytes (checked: no code 3) and finite scale of `n` I2_S weights in the
/// 128-weight layout (`n` a multiple of 256), the errors [`trits_and_scale`] gives.
fn codes_and_scale(data: &[u8], n: usize) -> Result<(&[u8], f32)> {
    if !n.is_multiple_of(tq2_0::BLOCK) {
        return Err(Error::format(
            "i2_s",
            format!("{n} weights is not a multiple of 256: TQ2_0 blocks cannot hold them"),
        ));
    }
    let scale = i2_s::scale(data, n)?;
    if !scale.is_finite() {
        return Err(Error::format("i2_s", format!("I2_S scale is {scale}")));
    }
    let codes = &data[..n / 4];
    i2_s::check_codes(codes)?;
    Ok((codes, scale))
}

/// The codes and finite scale of `n` I2_S weights (`n` a multiple of 256).
fn trits_and_scale(data: &[u8], n: usize, layout: i2_s::I2sLayout) -> Result<(Vec<i8>, f32)> {
    let trits = i2_s::trits(data, n, layout)?;
    let scale = i2_s::scale(data, n)?;
    if !scale.is_finite() {
        return Err(Error::format("i2_s", format!("I2_S scale is {scale}")));
    }
    if !n.is_multiple_of(tq2_0::BLOCK) {
        return Err(Error::format(
            "i2_s",
            format!("{n} weights is not a multiple of 256: TQ2_0 blocks cannot hold them"),
        ));
    }
    Ok((trits, scale))
}

/// [`pack_tq2_0`] of the trits of a tensor in the 128-weight I2_S layout, straight from its
/// codes: both formats keep weight `j` of a 128-weight chunk in byte `j % 32` as its value plus
/// one, I2_S in bits `6 - 2 (j / 32)` (`ggml_vec_dot_i2_i8_s`), TQ2_0 in bits `2 (j / 32)`
/// (`ggml_vec_dot_tq2_0_q8_K`), so each code byte becomes its 2-bit fields in reverse order,
/// and a 256-weight block's two chunks are its 64 code bytes. The codes were checked for 3.
fn pack_tq2_0_from_i2s128(codes: &[u8], d: f16) -> Vec<u8> {
    // The 2-bit fields of every byte, reversed.
    let reversed: [u8; 256] = std::array::from_fn(|b| {
        let b = b as u8;
        (b >> 6) | ((b >> 2) & 0b1100) | ((b << 2) & 0b11_0000) | (b << 6)
    });
    let mut packed = Vec::with_capacity(codes.len() / 64 * tq2_0::BLOCK_BYTES);
    for block in codes.chunks_exact(64) {
        packed.extend(block.iter().map(|&b| reversed[b as usize]));
        packed.extend_from_slice(&d.to_le_bytes());
    }
    packed
}

fn pack_tq2_0(trits: &[i8], d: f16) -> Vec<u8> {
    let mut packed = Vec::with_capacity(trits.len() / tq2_0::BLOCK * tq2_0::BLOCK_BYTES);
    for block in trits.chunks_exact(tq2_0::BLOCK) {
        tq2_0::pack_block(block, d, &mut packed);
    }
    packed
}

/// `blk.N.<projection>.weight` -> `blk.N.<projection>.scale`; `None` for any other tensor.
pub fn scale_tensor_name(weight: &str) -> Option<String> {
    let rest = weight.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tag = rest.strip_suffix(".weight")?;
    SCALED_PROJECTIONS
        .contains(&tag)
        .then(|| format!("blk.{layer}.{tag}.scale"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_names() {
        assert_eq!(
            scale_tensor_name("blk.12.attn_q.weight").as_deref(),
            Some("blk.12.attn_q.scale")
        );
        assert_eq!(
            scale_tensor_name("blk.0.ffn_down.weight").as_deref(),
            Some("blk.0.ffn_down.scale")
        );
        assert_eq!(scale_tensor_name("token_embd.weight"), None);
        assert_eq!(scale_tensor_name("blk.0.attn_norm.weight"), None);
        assert_eq!(scale_tensor_name("blk.x.attn_q.weight"), None);
        assert_eq!(scale_tensor_name("blk.0.attn_q.bias"), None);
    }

    /// The byte-level repack of the 128-weight layout equals decoding every trit and packing
    /// TQ2_0 blocks from them, on random valid codes of several tensors' lengths.
    #[test]
    fn the_direct_repack_equals_packing_decoded_trits() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for blocks in [1usize, 2, 7, 40] {
            let n = blocks * 256;
            let mut data: Vec<u8> = (0..n / 4)
                .map(|_| {
                    (0..4).fold(0u8, |b, f| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        b | (((state >> 33) % 3) as u8) << (2 * f)
                    })
                })
                .collect();
            data.extend_from_slice(&0.75f32.to_le_bytes());
            data.resize(n / 4 + 32, 0);
            let layout = i2_s::I2sLayout::Block128;
            let trits = i2_s::trits(&data, n, layout).unwrap();
            assert_eq!(
                pack_tq2_0_from_i2s128(&data[..n / 4], f16::ONE),
                pack_tq2_0(&trits, f16::ONE),
                "{blocks} blocks"
            );
            let (fast, scale) = i2s_tensor_to_tq2_0(&data, n, layout).unwrap();
            assert_eq!(scale, 0.75);
            assert_eq!(fast, pack_tq2_0(&trits, f16::ONE));
        }
    }
}
