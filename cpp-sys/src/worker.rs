//! The child side of oracle isolation: serve [`Request`]s from one stream with an [`Oracle`] and
//! answer on another. The harness runs this in a hidden subcommand over stdin/stdout, so that a
//! crash or hang inside C++ takes down only the child.

use std::io::{Read, Write};
use std::path::Path;

use xval_engine::taps::TapFilter;

use crate::error::{Error, Result, WireError};
use crate::oracle::{Oracle, OracleKind, OracleSettings};
use crate::protocol::{encode_evaluation, read_frame, write_frame, Request, Response};

/// Opens the oracle a `Load` request names.
pub type OpenOracle<'a> =
    dyn FnMut(&OracleKind, &Path, &OracleSettings) -> Result<Box<dyn Oracle>> + 'a;

/// A deliberate failure, for testing the parent's handling of crashing and hanging oracles.
/// Only the hidden worker subcommand reads it (from an environment variable the harness
/// documents as test-only); it does nothing unless asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    pub fault: Fault,
    /// The request op (`load`, `evaluate`, ...) that triggers it.
    pub on: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `abort()`: SIGABRT, like a failed `GGML_ASSERT`.
    Abort,
    /// Never answer (sleep forever), like a deadlocked or runaway kernel.
    Hang,
    /// Exit with this status without answering.
    Exit(u8),
}

impl FaultPlan {
    /// Parse `abort:evaluate`, `hang:load`, `exit=7:tokenize`.
    pub fn parse(spec: &str) -> Result<FaultPlan, String> {
        let (fault, on) = spec
            .split_once(':')
            .ok_or_else(|| format!("fault '{spec}': expected KIND:OP"))?;
        let fault = match fault {
            "abort" => Fault::Abort,
            "hang" => Fault::Hang,
            f => match f.strip_prefix("exit=").map(str::parse::<u8>) {
                Some(Ok(code)) => Fault::Exit(code),
                _ => {
                    return Err(format!(
                        "fault '{spec}': kind must be abort, hang or exit=N"
                    ))
                }
            },
        };
        Ok(FaultPlan {
            fault,
            on: on.to_string(),
        })
    }

    fn trigger(&self) -> ! {
        match self.fault {
            Fault::Abort => std::process::abort(),
            Fault::Hang => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
            Fault::Exit(code) => std::process::exit(code as i32),
        }
    }
}

/// How often an oracle worker checks that its parent still runs.
pub const PARENT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// End this worker within [`PARENT_POLL`] once its parent is gone (killed by SIGTERM, SIGKILL
/// or a crash): the worker then has been reparented, and `parent_id()` changes. Without this a
/// worker inside a long ggml computation outlives the harness (it would only see the closed
/// pipe when it next reads a request). Polling rather than `PR_SET_PDEATHSIG`, which fires
/// when the *thread* that spawned the worker ends, not the parent process, and is Linux only.
#[cfg(unix)]
pub fn exit_with_parent() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || loop {
        std::thread::sleep(PARENT_POLL);
        if std::os::unix::process::parent_id() != parent {
            // SAFETY: `_exit` takes no pointers and ends the process at once, without atexit
            // handlers or C++ static destructors, which must not run while the main thread may
            // be inside a ggml computation.
            unsafe { libc::_exit(3) };
        }
    });
}

/// Serve requests until `Shutdown` or the end of `input`.
pub fn serve<R: Read, W: Write>(
    input: &mut R,
    output: &mut W,
    open: &mut OpenOracle<'_>,
    fault: Option<&FaultPlan>,
) -> Result<()> {
    let mut oracle: Option<Box<dyn Oracle>> = None;
    while let Some(frame) = read_frame(input)? {
        let request: Request = match frame.parse() {
            Ok(r) => r,
            Err(e) => {
                reply_error(output, &e)?;
                continue;
            }
        };
        if let Some(f) = fault.filter(|f| f.on == request.op()) {
            f.trigger();
        }
        match (request, oracle.as_mut()) {
            (Request::Shutdown, _) => {
                write_frame(output, &Response::Bye, &[])?;
                return Ok(());
            }
            (
                Request::Load {
                    model,
                    settings,
                    oracle: kind,
                },
                None,
            ) => match open(&kind, &model, &settings) {
                Ok(o) => {
                    let reply = Response::Loaded {
                        identity: Box::new(o.identity().clone()),
                        model: o.model().clone(),
                    };
                    oracle = Some(o);
                    write_frame(output, &reply, &[])?;
                }
                Err(e) => reply_error(output, &e)?,
            },
            (Request::Load { .. }, Some(_)) => reply_error(
                output,
                &Error::InvalidRequest("a model is already loaded in this worker".into()),
            )?,
            (_, None) => reply_error(
                output,
                &Error::InvalidRequest("load a model before anything else".into()),
            )?,
            (request, Some(o)) => answer(output, o.as_mut(), request)?,
        }
    }
    Ok(())
}

fn answer<W: Write>(output: &mut W, o: &mut dyn Oracle, request: Request) -> Result<()> {
    let result = match request {
        Request::Tokenize {
            text,
            add_special,
            parse_special,
        } => o
            .tokenize(&text, add_special, parse_special)
            .map(|tokens| (Response::Tokens { tokens }, Vec::new())),
        Request::Detokenize {
            tokens,
            remove_special,
            unparse_special,
        } => o
            .detokenize(&tokens, remove_special, unparse_special)
            .map(|b| (Response::Bytes, b)),
        Request::TokenPiece { token, special } => {
            o.token_piece(token, special).map(|b| (Response::Bytes, b))
        }
        Request::Evaluate { tokens, taps } => o
            .evaluate(&tokens, &TapFilter::parse(&taps))
            .map(|e| encode_evaluation(&e)),
        Request::DecodeStep { token, taps } => o
            .decode_step(token, &TapFilter::parse(&taps))
            .map(|e| encode_evaluation(&e)),
        Request::EvaluateLast { tokens } => o.evaluate_last(&tokens).map(|e| encode_evaluation(&e)),
        Request::Load { .. } | Request::Shutdown => unreachable!("handled by serve"),
    };
    match result {
        Ok((header, payload)) => write_frame(output, &header, &payload),
        Err(e) => reply_error(output, &e),
    }
}

fn reply_error<W: Write>(output: &mut W, e: &Error) -> Result<()> {
    write_frame(
        output,
        &Response::Error {
            error: WireError::from(e),
        },
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs() {
        assert_eq!(
            FaultPlan::parse("abort:evaluate").unwrap(),
            FaultPlan {
                fault: Fault::Abort,
                on: "evaluate".into()
            }
        );
        assert_eq!(
            FaultPlan::parse("exit=7:load").unwrap().fault,
            Fault::Exit(7)
        );
        assert!(FaultPlan::parse("boom:load").is_err());
        assert!(FaultPlan::parse("abort").is_err());
        assert!(FaultPlan::parse("exit=x:load").is_err());
    }

    #[test]
    fn requests_before_load_are_refused_and_shutdown_says_bye() {
        let mut input = Vec::new();
        write_frame(
            &mut input,
            &Request::Tokenize {
                text: "x".into(),
                add_special: false,
                parse_special: false,
            },
            &[],
        )
        .unwrap();
        write_frame(&mut input, &Request::Shutdown, &[]).unwrap();
        let mut output = Vec::new();
        let mut open = |_: &OracleKind, _: &Path, _: &OracleSettings| -> Result<Box<dyn Oracle>> {
            Err(Error::Unavailable {
                oracle: "builtin".into(),
                reason: "test".into(),
            })
        };
        serve(&mut input.as_slice(), &mut output, &mut open, None).unwrap();
        let mut rd = output.as_slice();
        let r: Response = read_frame(&mut rd).unwrap().unwrap().parse().unwrap();
        assert!(
            matches!(
                r,
                Response::Error {
                    error: WireError::InvalidRequest { .. }
                }
            ),
            "{r:?}"
        );
        let r: Response = read_frame(&mut rd).unwrap().unwrap().parse().unwrap();
        assert_eq!(r, Response::Bye);
    }

    #[test]
    fn load_errors_cross_the_pipe_intact() {
        let mut input = Vec::new();
        write_frame(
            &mut input,
            &Request::Load {
                model: "m.gguf".into(),
                settings: OracleSettings::default(),
                oracle: OracleKind::Builtin,
            },
            &[],
        )
        .unwrap();
        let mut output = Vec::new();
        let mut open = |_: &OracleKind, p: &Path, _: &OracleSettings| -> Result<Box<dyn Oracle>> {
            Err(Error::BadModel {
                path: p.display().to_string(),
                reason: "truncated".into(),
            })
        };
        serve(&mut input.as_slice(), &mut output, &mut open, None).unwrap();
        let r: Response = read_frame(&mut output.as_slice())
            .unwrap()
            .unwrap()
            .parse()
            .unwrap();
        let Response::Error { error } = r else {
            panic!("{r:?}")
        };
        let e = Error::from(error);
        assert!(e.is_bad_input());
        assert_eq!(e.to_string(), "m.gguf: truncated");
    }
}
