//! `harness inspect`: what a GGUF file holds, as a human summary or a stable JSON form.
//!
//! JSON keys (stable; more may be added): `architecture`, `version`, `alignment`,
//! `data_offset`, `type_dialect`, `dialect_reason`, `metadata` (key -> value; arrays longer
//! than [`ARRAY_SUMMARY_LIMIT`] as `{"array": <element type>, "len": N}` unless full arrays are
//! asked for), `tokenizer` (summary), `tensors` (`name`, `type` = ggml's lowercase name,
//! `shape` with ne0 first, `bytes`, `offset` relative to the data section; I2_S tensors add
//! `i2s_layout` and `i2s_scale`).

use std::io::Write;

use serde_json::{json, Map, Value as Json};
use xval_engine::gguf::{GgmlType, GgufFile, GgufHeader, TensorInfo, Value};
use xval_engine::quant::i2_s::{self, I2sLayout};

/// Metadata arrays longer than this are summarised unless full arrays are requested.
pub const ARRAY_SUMMARY_LIMIT: usize = 64;

/// The tokenizer keys of a file, summarised.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizerSummary {
    pub model: Option<String>,
    /// `tokenizer.ggml.pre` as stored; `None` when absent (llama.cpp then uses `default`).
    pub pre: Option<String>,
    pub vocab_size: Option<usize>,
    pub merges: Option<usize>,
    pub bos: Option<(u64, Option<String>)>,
    pub eos: Option<(u64, Option<String>)>,
    pub add_bos: Option<bool>,
}

impl TokenizerSummary {
    pub fn of(h: &GgufHeader) -> TokenizerSummary {
        let get = |k: &str| h.get(&format!("tokenizer.ggml.{k}"));
        let tokens = get("tokens").and_then(Value::as_array);
        let special = |k: &str| {
            get(k).and_then(Value::as_u64).map(|id| {
                let text = tokens
                    .and_then(|t| t.get(id as usize))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                (id, text)
            })
        };
        TokenizerSummary {
            model: get("model").and_then(Value::as_str).map(str::to_string),
            pre: get("pre").and_then(Value::as_str).map(str::to_string),
            vocab_size: tokens.map(<[Value]>::len),
            merges: get("merges").and_then(Value::as_array).map(<[Value]>::len),
            bos: special("bos_token_id"),
            eos: special("eos_token_id"),
            add_bos: get("add_bos_token").and_then(Value::as_bool),
        }
    }

    /// The pre-tokenizer llama.cpp will use: the stored one, or `default` when absent.
    pub fn effective_pre(&self) -> &str {
        self.pre.as_deref().unwrap_or("default")
    }

    fn to_json(&self) -> Json {
        json!({
            "model": self.model,
            "pre": self.pre,
            "pre_effective": self.effective_pre(),
            "vocab_size": self.vocab_size,
            "merges": self.merges,
            "bos_id": self.bos.as_ref().map(|b| b.0),
            "bos_text": self.bos.as_ref().and_then(|b| b.1.clone()),
            "eos_id": self.eos.as_ref().map(|e| e.0),
            "eos_text": self.eos.as_ref().and_then(|e| e.1.clone()),
            "add_bos": self.add_bos,
        })
    }
}

/// An f32 as JSON with its shortest decimal form (1e-5, not 9.999999747378752e-6);
/// non-finite values as strings, as JSON has no NaN.
fn f32_json(x: f32) -> Json {
    if x.is_finite() {
        // f32's Display is the shortest string that reads back to the same f32.
        json!(x.to_string().parse::<f64>().unwrap_or(x as f64))
    } else {
        json!(x.to_string())
    }
}

/// A metadata value as JSON, long arrays summarised unless `full`.
pub fn value_json(v: &Value, full: bool) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => f32_json(*x),
        Value::F64(x) if x.is_finite() => json!(x),
        Value::F64(x) => json!(x.to_string()),
        Value::Bool(b) => json!(b),
        Value::String(s) => json!(s),
        Value::Array(t, items) if !full && items.len() > ARRAY_SUMMARY_LIMIT => {
            json!({"array": t.name(), "len": items.len()})
        }
        Value::Array(_, items) => Json::Array(items.iter().map(|i| value_json(i, full)).collect()),
    }
}

/// The per-tensor scale of an I2_S tensor (official 128-weight layout assumed).
fn i2s_scale(file: &GgufFile, t: &TensorInfo) -> Option<f32> {
    let view = file.tensor(&t.name)?;
    i2_s::scale(view.data, t.n_elements() as usize).ok()
}

/// The whole file as the stable JSON form.
pub fn to_json(file: &GgufFile, full_arrays: bool) -> Json {
    let h = file.header();
    let metadata: Map<String, Json> = h
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), value_json(v, full_arrays)))
        .collect();
    let tensors: Vec<Json> = h
        .tensors
        .iter()
        .map(|t| {
            let mut o = json!({
                "name": t.name,
                "type": t.ty.name(),
                "shape": t.shape,
                "bytes": t.n_bytes,
                "offset": t.offset,
            });
            if t.ty == GgmlType::I2_S {
                o["i2s_layout"] = json!(I2sLayout::Block128.name());
                o["i2s_scale"] = i2s_scale(file, t).map_or(Json::Null, f32_json);
            }
            o
        })
        .collect();
    json!({
        "file": file.label(),
        "architecture": h.architecture(),
        "version": h.version,
        "alignment": h.alignment,
        "data_offset": h.data_offset,
        "type_dialect": h.dialect,
        "dialect_reason": h.dialect_reason,
        "metadata": metadata,
        "tokenizer": TokenizerSummary::of(h).to_json(),
        "tensors": tensors,
    })
}

/// The human summary.
pub fn render_text(file: &GgufFile, full_arrays: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let h = file.header();
    let arch = h.architecture();
    let dialect = match serde_json::to_value(h.dialect) {
        Ok(Json::String(s)) => s,
        _ => format!("{:?}", h.dialect),
    };
    writeln!(out, "file:          {}", file.label())?;
    writeln!(out, "GGUF version:  {}", h.version)?;
    writeln!(out, "alignment:     {}", h.alignment)?;
    writeln!(out, "data offset:   {}", h.data_offset)?;
    writeln!(out, "type dialect:  {dialect} ({})", h.dialect_reason)?;
    writeln!(
        out,
        "architecture:  {}",
        arch.unwrap_or("(none: general.architecture absent)")
    )?;

    let show = |v: &Value| {
        if full_arrays && matches!(v, Value::Array(..)) {
            value_json(v, true).to_string()
        } else {
            v.summary(80)
        }
    };
    // Sections: general.*, the <arch>.* hyper-parameters, anything else but tokenizer.*
    // (summarised below).
    let arch_prefix = arch.map(|a| format!("{a}."));
    let section = |k: &str| {
        if k.starts_with("general.") {
            Some(0)
        } else if arch_prefix.as_deref().is_some_and(|p| k.starts_with(p)) {
            Some(1)
        } else if k.starts_with("tokenizer.") {
            None
        } else {
            Some(2)
        }
    };
    let titles = [
        "general".to_string(),
        format!(
            "hyper-parameters ({}*)",
            arch_prefix.as_deref().unwrap_or("")
        ),
        "other metadata".to_string(),
    ];
    for (i, title) in titles.iter().enumerate() {
        let keys: Vec<&(String, Value)> = h
            .metadata
            .iter()
            .filter(|(k, _)| section(k) == Some(i))
            .collect();
        if keys.is_empty() {
            continue;
        }
        writeln!(out, "\n{title}:")?;
        let w = keys.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in keys {
            writeln!(out, "  {k:w$}  {}", show(v))?;
        }
    }

    let tok = TokenizerSummary::of(h);
    let opt = |x: Option<usize>| x.map_or("(absent)".to_string(), |n| n.to_string());
    let special = |s: &Option<(u64, Option<String>)>| match s {
        None => "(absent)".to_string(),
        Some((id, Some(text))) => format!("{id} {text:?}"),
        Some((id, None)) => format!("{id} (no such token)"),
    };
    writeln!(out, "\ntokenizer:")?;
    writeln!(
        out,
        "  model          {}",
        tok.model.as_deref().unwrap_or("(absent)")
    )?;
    match &tok.pre {
        Some(p) => writeln!(out, "  pre-tokenizer  {p}")?,
        None => writeln!(out, "  pre-tokenizer  absent -> default")?,
    }
    writeln!(out, "  vocab size     {}", opt(tok.vocab_size))?;
    writeln!(out, "  merges         {}", opt(tok.merges))?;
    writeln!(out, "  BOS            {}", special(&tok.bos))?;
    writeln!(out, "  EOS            {}", special(&tok.eos))?;
    let add_bos = tok
        .add_bos
        .map_or("(absent)".to_string(), |b| b.to_string());
    writeln!(out, "  add_bos        {add_bos}")?;

    let rows: Vec<[String; 6]> = h
        .tensors
        .iter()
        .map(|t| {
            let shape = t
                .shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" x ");
            let note = if t.ty == GgmlType::I2_S {
                let scale = i2s_scale(file, t).map_or("?".to_string(), |s| s.to_string());
                format!(
                    "layout {} (official default), scale {scale}",
                    I2sLayout::Block128.name()
                )
            } else {
                String::new()
            };
            [
                t.name.clone(),
                t.ty.name().to_string(),
                format!("[{shape}]"),
                t.n_bytes.to_string(),
                t.offset.to_string(),
                note,
            ]
        })
        .collect();
    writeln!(
        out,
        "\ntensors ({}; shape ne0 first, offset from the data section):",
        rows.len()
    )?;
    let header = ["name", "type", "shape", "bytes", "offset", ""].map(str::to_string);
    let mut widths = [0usize; 6];
    for r in std::iter::once(&header).chain(&rows) {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "  {:w0$}  {:w1$}  {:w2$}  {:>w3$}  {:>w4$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_arrays_are_summarised_and_floats_are_short() {
        let long = Value::i32s(0..65);
        assert_eq!(value_json(&long, false), json!({"array": "i32", "len": 65}));
        assert_eq!(value_json(&long, true).as_array().unwrap().len(), 65);
        assert_eq!(
            value_json(&Value::i32s(0..64), false)
                .as_array()
                .unwrap()
                .len(),
            64
        );
        assert_eq!(value_json(&Value::F32(1e-5), false).as_f64(), Some(1e-5));
        assert_eq!(value_json(&Value::F32(f32::NAN), false), json!("NaN"));
    }
}
