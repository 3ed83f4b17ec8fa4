//! Fuzz target `tokenizer`: arbitrary text through the LLaMA-3 and the fixtures' tokenizers, arbitrary ids through decoding (see `xval_fuzz::tokenizer::check_tokenizer`).
//! Built by cargo-fuzz (`--cfg fuzzing`) it is a libFuzzer target; built plainly (stable
//! toolchain) it replays files and corpus folders given on the command line.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xval_fuzz::tokenizer::check_tokenizer(data);
});

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    xval_fuzz::replay_main("tokenizer")
}
