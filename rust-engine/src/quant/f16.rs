//! F16: IEEE binary16. Conversion from f32 rounds to nearest even, as F16C and ggml's
//! `ggml_compute_fp32_to_fp16` do.

use crate::error::{Error, Result};

pub fn dequantize(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    if bytes.len() != out.len() * 2 {
        return Err(Error::format(
            "f16",
            format!(
                "{} elements need {} bytes, got {}",
                out.len(),
                out.len() * 2,
                bytes.len()
            ),
        ));
    }
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
    Ok(())
}

pub fn quantize(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect()
}
