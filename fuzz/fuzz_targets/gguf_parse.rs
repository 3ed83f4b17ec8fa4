//! Fuzz target `gguf_parse`: arbitrary bytes through the GGUF reader, every tensor view, every codec's decoder and `harness inspect`'s rendering (see `xval_fuzz::gguf::check_gguf`).
//! Built by cargo-fuzz (`--cfg fuzzing`) it is a libFuzzer target; built plainly (stable
//! toolchain) it replays files and corpus folders given on the command line.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xval_fuzz::gguf::check_gguf(data);
});

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    xval_fuzz::replay_main("gguf_parse")
}
