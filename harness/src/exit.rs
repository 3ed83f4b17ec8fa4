//! Exit codes of the `harness` binary, and the one place errors map to them.

use crate::error::Error;

/// What the process reports to its caller. Documented in `harness --help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success; for comparisons, everything within the thresholds.
    Success = 0,
    /// The engine and the oracle diverge.
    Divergence = 1,
    /// Bad input: unreadable or malformed model, bad arguments, missing file.
    BadInput = 2,
    /// The oracle failed (crash, hang, refused the model).
    OracleFailure = 3,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// An oracle error: the caller's input (an id outside the vocabulary, a malformed model)
    /// or the oracle itself (crash, hang, llama.cpp refused the model, not built in).
    pub fn from_oracle(e: &xval_cpp_sys::Error) -> Exit {
        if e.is_bad_input() {
            Exit::BadInput
        } else {
            Exit::OracleFailure
        }
    }

    /// The exit code for an error that ended a command. Walks the whole cause chain so that
    /// context added with `anyhow` does not hide the kind. Today every failure is an input
    /// problem except oracle failures (3); the comparison issue adds divergence (1).
    pub fn from_error(err: &anyhow::Error) -> Exit {
        for cause in err.chain() {
            if let Some(e) = cause.downcast_ref::<Error>() {
                return match e {
                    Error::Engine(_)
                    | Error::Io { .. }
                    | Error::BadFile { .. }
                    | Error::FixtureMismatch { .. }
                    | Error::Invalid(_) => Exit::BadInput,
                    Error::Oracle(o) => Exit::from_oracle(o),
                };
            }
            if let Some(o) = cause.downcast_ref::<xval_cpp_sys::Error>() {
                return Exit::from_oracle(o);
            }
            if cause.downcast_ref::<xval_engine::Error>().is_some()
                || cause.downcast_ref::<std::io::Error>().is_some()
            {
                return Exit::BadInput;
            }
        }
        Exit::BadInput
    }
}

/// The message printed for an error: the cause chain joined with ": ", skipping a cause whose
/// text the message already holds (the engine's and this crate's `Io` errors show their source
/// in their own text and also expose it as the source).
pub fn message(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_map_to_2_through_context() {
        let engine = xval_engine::Error::Invalid("x".into());
        let err = anyhow::Error::new(Error::from(engine)).context("while inspecting");
        assert_eq!(Exit::from_error(&err), Exit::BadInput);
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        assert_eq!(Exit::from_error(&anyhow::Error::new(io)), Exit::BadInput);
        assert_eq!(Exit::BadInput.code(), 2);
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let err = anyhow::Error::new(Error::io("m.gguf", io)).context("inspect");
        assert_eq!(message(&err), "inspect: m.gguf: gone");
        assert_eq!(Exit::OracleFailure.code(), 3);
    }

    #[test]
    fn oracle_errors_map_to_3_unless_the_input_is_at_fault() {
        let crash = xval_cpp_sys::Error::WorkerCrashed {
            during: "evaluate".into(),
            status: "killed by signal 6 (SIGABRT)".into(),
            stderr_tail: String::new(),
        };
        assert_eq!(
            Exit::from_error(&anyhow::Error::new(crash.clone()).context("oracle")),
            Exit::OracleFailure
        );
        assert_eq!(
            Exit::from_error(&anyhow::Error::new(Error::from(crash))),
            Exit::OracleFailure
        );
        let oob = xval_cpp_sys::Error::InvalidRequest("token 9 is outside".into());
        assert_eq!(Exit::from_error(&anyhow::Error::new(oob)), Exit::BadInput);
    }
}
