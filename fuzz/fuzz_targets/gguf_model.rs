//! Fuzz target `gguf_model`: arbitrary bytes through the engine's model loader, the tokenizer read from the file and one forward pass (see `xval_fuzz::model::check_model`).
//! Built by cargo-fuzz (`--cfg fuzzing`) it is a libFuzzer target; built plainly (stable
//! toolchain) it replays files and corpus folders given on the command line.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xval_fuzz::model::check_model(data);
});

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    xval_fuzz::replay_main("gguf_model")
}
