use clap::Parser;
use xval_harness::{cli, exit};

fn main() -> std::process::ExitCode {
    match cli::run(cli::Cli::parse()) {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("error: {}", exit::message(&err));
            exit::Exit::from_error(&err).into()
        }
    }
}
