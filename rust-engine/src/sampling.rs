//! Choosing a token from logits.

/// Index of the largest logit, the first one on ties: llama.cpp's greedy sampler
/// (`llama_sampler_greedy_apply` keeps the current choice unless a later logit is strictly
/// greater). A NaN never wins; an all-NaN row gives 0.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn first_max_wins_and_nan_never_does() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(
            argmax(&[f32::NAN, 1.0, 0.5]),
            0,
            "a NaN at 0 is never replaced by `>`"
        );
        assert_eq!(argmax(&[0.0, f32::NAN, 2.0]), 2);
        assert_eq!(argmax(&[]), 0);
    }
}
