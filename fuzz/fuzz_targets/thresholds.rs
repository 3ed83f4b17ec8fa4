//! Fuzz target `thresholds`: arbitrary text through the thresholds loader and every lookup (see `xval_fuzz::thresholds::check_thresholds`).
//! Built by cargo-fuzz (`--cfg fuzzing`) it is a libFuzzer target; built plainly (stable
//! toolchain) it replays files and corpus folders given on the command line.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xval_fuzz::thresholds::check_thresholds(data);
});

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    xval_fuzz::replay_main("thresholds")
}
