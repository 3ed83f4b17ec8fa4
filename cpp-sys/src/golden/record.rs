//! Recording an oracle: every prompt's evaluation and greedy continuation into one data file
//! image and its [`Recording`].

use xval_engine::sampling::argmax;
use xval_engine::taps::TapFilter;

use super::format::{sha256_hex, RecordedEvaluation, RecordedPrompt, RecordedTap, Recording, Span};
use super::{FORMAT, LOGITS_TAP};
use crate::error::{Error, Result};
use crate::oracle::{Evaluation, Oracle};

/// What to record for one model.
#[derive(Clone, Debug)]
pub struct RecordPlan<'a> {
    /// The model, relative to `fixtures/` (goes into the index).
    pub model: &'a str,
    pub model_sha256: &'a str,
    /// Prompt texts, tokenized by the oracle with `add_special` and `parse_special` on.
    pub prompts: &'a [&'a str],
    /// Greedy decode steps per prompt.
    pub decode_steps: usize,
    /// Decode steps whose taps are kept.
    pub tap_decode_steps: usize,
    pub taps: &'a TapFilter,
    /// The data file's name, relative to `fixtures/golden/`.
    pub data_file: &'a str,
}

/// Append values to the data file image; where they sit.
fn push(data: &mut Vec<u8>, values: &[f32]) -> Span {
    let offset = data.len() as u64;
    for v in values {
        data.extend_from_slice(&v.to_le_bytes());
    }
    Span {
        offset,
        count: values.len() as u64,
    }
}

/// Record `plan` with `oracle`: returns the recording and its data file's bytes. Deterministic
/// when the oracle is (one thread).
pub fn record(oracle: &mut dyn Oracle, plan: &RecordPlan) -> Result<(Recording, Vec<u8>)> {
    let mut data = Vec::new();
    let none = TapFilter::none();
    let mut prompts = Vec::with_capacity(plan.prompts.len());
    for &text in plan.prompts {
        let tokens = oracle.tokenize(text, true, true)?;
        let mut evaluations = Vec::with_capacity(plan.decode_steps + 1);
        let mut decode_tokens = Vec::with_capacity(plan.decode_steps);
        let mut eval = oracle.evaluate(&tokens, plan.taps)?;
        for step in 0..=plan.decode_steps {
            let last = eval.logits_row(eval.n_tokens() - 1);
            let next = argmax(last);
            evaluations.push(store(&eval, &mut data)?);
            if step == plan.decode_steps {
                break;
            }
            decode_tokens.push(next);
            let taps = if step < plan.tap_decode_steps {
                plan.taps
            } else {
                &none
            };
            eval = oracle.decode_step(next, taps)?;
        }
        prompts.push(RecordedPrompt {
            text: text.to_string(),
            add_special: true,
            parse_special: true,
            tokens,
            decode_tokens,
            evaluations,
        });
    }
    let mut model_info = oracle.model().clone();
    model_info.path = plan.model.to_string();
    let recording = Recording {
        format: FORMAT.into(),
        model: plan.model.into(),
        model_sha256: plan.model_sha256.into(),
        model_info,
        oracle: oracle.identity().clone(),
        taps: plan.taps.spec(),
        tap_decode_steps: plan.tap_decode_steps,
        data: plan.data_file.into(),
        data_bytes: data.len() as u64,
        data_sha256: sha256_hex(&data),
        prompts,
    };
    Ok((recording, data))
}

/// Append one evaluation's numbers to `data`, `result_output` folded into the logits when the
/// two are the same bits.
fn store(e: &Evaluation, data: &mut Vec<u8>) -> Result<RecordedEvaluation> {
    let logits = push(data, &e.logits);
    let mut taps = Vec::with_capacity(e.taps.len());
    let mut result_output_is_logits = false;
    for (tap, src) in e.taps.iter().zip(&e.tap_sources) {
        if tap.name != src.name {
            return Err(Error::Capture(format!(
                "tap {} listed with the source of {}",
                tap.name, src.name
            )));
        }
        if tap.name == LOGITS_TAP
            && tap.data.len() == e.logits.len()
            && tap
                .data
                .iter()
                .zip(&e.logits)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        {
            result_output_is_logits = true;
            continue;
        }
        taps.push(RecordedTap {
            name: tap.name.clone(),
            shape: tap.shape.clone(),
            op: src.op.clone(),
            occurrence: src.occurrence,
            occurrences: src.occurrences,
            data: push(data, &tap.data),
        });
    }
    Ok(RecordedEvaluation {
        start_pos: e.start_pos,
        tokens: e.tokens.clone(),
        logits,
        taps,
        result_output_is_logits,
    })
}
