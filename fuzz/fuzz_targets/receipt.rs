//! Fuzz target `receipt`: arbitrary bytes through `harness gate`'s receipt reader, its judgement and every report renderer (see `xval_fuzz::receipt::check_receipt`).
//! Built by cargo-fuzz (`--cfg fuzzing`) it is a libFuzzer target; built plainly (stable
//! toolchain) it replays files and corpus folders given on the command line.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xval_fuzz::receipt::check_receipt(data);
});

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    xval_fuzz::replay_main("receipt")
}
