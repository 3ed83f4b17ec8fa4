//! The parent side of oracle isolation: an [`Oracle`] that forwards every call to a worker
//! process over pipes ([`crate::protocol`]) with a time limit per request. A worker that dies
//! (signal, exit) or stops answering becomes a structured error naming the request, the exit
//! status or signal, and the last lines the worker wrote to stderr; the worker is killed and
//! every later call reports the same failure.

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xval_engine::taps::TapFilter;

use crate::error::{Error, Result};
use crate::oracle::{
    Evaluation, ModelInfo, Oracle, OracleIdentity, OracleKind, OracleSettings, TokenId,
};
use crate::protocol::{decode_evaluation, read_frame, write_frame, Frame, Request, Response};

/// Time limits for the worker's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Model load (including a transcode of I2_S weights).
    pub load: Duration,
    /// Every other request.
    pub request: Duration,
}

impl Limits {
    /// The same limit for the load and every request.
    pub fn each(limit: Duration) -> Limits {
        Limits {
            load: limit,
            request: limit,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            load: Duration::from_secs(600),
            request: Duration::from_secs(600),
        }
    }
}

/// Bytes of worker stderr kept for error reports.
const STDERR_KEEP: usize = 16 << 10;
/// Lines of it shown in an error.
const STDERR_LINES: usize = 12;
/// How long a worker that closed its output gets to report its exit status.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// An oracle running in a child process.
pub struct IsolatedOracle {
    worker: Worker,
    identity: OracleIdentity,
    model: ModelInfo,
}

/// The child process and its pipes.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<Result<Frame>>,
    stderr: Arc<Mutex<VecDeque<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
    limits: Limits,
    /// Set once the worker has failed; every later call returns it.
    dead: Option<Error>,
}

impl IsolatedOracle {
    /// Start the worker `command` (its stdin, stdout and stderr are taken over), load `model`
    /// in it with `settings`, and wait for the answer within `limits.load`.
    pub fn spawn(
        command: Command,
        model: &Path,
        settings: &OracleSettings,
        limits: Limits,
    ) -> Result<IsolatedOracle> {
        Self::spawn_kind(command, &OracleKind::Builtin, model, settings, limits)
    }

    /// [`IsolatedOracle::spawn`] for any oracle kind the worker can open.
    pub fn spawn_kind(
        mut command: Command,
        kind: &OracleKind,
        model: &Path,
        settings: &OracleSettings,
        limits: Limits,
    ) -> Result<IsolatedOracle> {
        // ggml reads this once, when its CPU backend first initialises: set it before the
        // worker starts rather than from inside it (`ggml_cpu_init` in ggml-cpu.c).
        command
            .env(
                "GGML_CPU_DISABLE_FUSION",
                if settings.fusion { "0" } else { "1" },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| {
            Error::Protocol(format!(
                "cannot start oracle worker {:?}: {e}",
                command.get_program()
            ))
        })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");

        let (tx, frames) = mpsc::channel();
        // The reader ends at end of stream; a dropped sender is how the parent learns of it.
        std::thread::spawn(move || loop {
            match read_frame(&mut stdout) {
                Ok(Some(f)) => {
                    if tx.send(Ok(f)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_KEEP)));
        let sink = Arc::clone(&stderr);
        let stderr_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    return;
                }
                let mut keep = sink.lock().unwrap_or_else(|p| p.into_inner());
                keep.extend(&buf[..n]);
                let excess = keep.len().saturating_sub(STDERR_KEEP);
                keep.drain(..excess);
            }
        });

        let mut worker = Worker {
            child,
            stdin: Some(stdin),
            frames,
            stderr,
            stderr_thread: Some(stderr_thread),
            limits,
            dead: None,
        };
        let load = Request::Load {
            model: model.to_path_buf(),
            settings: settings.clone(),
            oracle: kind.clone(),
        };
        match worker.call(&load, limits.load)? {
            (Response::Loaded { identity, model }, _) => Ok(IsolatedOracle {
                worker,
                identity: *identity,
                model,
            }),
            (other, _) => Err(worker.protocol_failure("load", &other)),
        }
    }
}

impl Worker {
    /// Send one request and wait for its answer. Worker-reported errors come back as they
    /// were raised; a dead, hung or confused worker is killed and reported.
    fn call(&mut self, request: &Request, limit: Duration) -> Result<(Response, Vec<u8>)> {
        if let Some(e) = &self.dead {
            return Err(e.clone());
        }
        let op = request.op();
        let stdin = self.stdin.as_mut().expect("stdin kept while alive");
        if let Err(e) = write_frame(stdin, request, &[]) {
            // A broken pipe means the worker is gone: report how it went.
            return Err(self.died(op, Some(e.to_string())));
        }
        let started = Instant::now();
        match self.frames.recv_timeout(limit) {
            Ok(Ok(frame)) => {
                let response: Response = match frame.parse() {
                    Ok(r) => r,
                    Err(e) => return Err(self.fail(e)),
                };
                match response {
                    Response::Error { error } => Err(error.into()),
                    r => Ok((r, frame.payload)),
                }
            }
            // Garbage or a truncated frame: often a worker dying mid-answer.
            Ok(Err(e)) => Err(self.died(op, Some(e.to_string()))),
            Err(RecvTimeoutError::Disconnected) => Err(self.died(op, None)),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let e = Error::WorkerTimedOut {
                    during: op.to_string(),
                    after_s: started.elapsed().as_secs_f64(),
                    stderr_tail: self.stderr_tail(),
                };
                Err(self.fail(e))
            }
        }
    }

    /// The worker closed its output (or sent garbage): collect its exit status.
    fn died(&mut self, op: &str, protocol: Option<String>) -> Error {
        let deadline = Instant::now() + EXIT_GRACE;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break None,
            }
        };
        let e = match (status, protocol) {
            (Some(s), _) if !s.success() => Error::WorkerCrashed {
                during: op.to_string(),
                status: describe(s),
                stderr_tail: self.stderr_tail(),
            },
            (status, protocol) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Error::Protocol(format!(
                    "worker stopped answering during {op} ({}){}",
                    match status {
                        Some(s) => describe(s),
                        None => "still running; killed".into(),
                    },
                    protocol.map(|p| format!(": {p}")).unwrap_or_default()
                ))
            }
        };
        self.fail(e)
    }

    fn protocol_failure(&mut self, op: &str, got: &Response) -> Error {
        let e = Error::Protocol(format!("unexpected answer to {op}: {got:?}"));
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.fail(e)
    }

    /// Remember the failure, close the pipes, return the error.
    fn fail(&mut self, e: Error) -> Error {
        let _ = self.child.kill();
        self.stdin = None;
        self.dead = Some(e.clone());
        e
    }

    /// The last lines the worker wrote to stderr (after it has exited, everything it wrote).
    fn stderr_tail(&mut self) -> String {
        if let Some(t) = self.stderr_thread.take() {
            // The child is dead by now, so its stderr reaches end of stream promptly, unless
            // something it started still holds the pipe: then take what arrived so far.
            let deadline = Instant::now() + EXIT_GRACE;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        let keep = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let (a, b) = keep.as_slices();
        let text = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n")
    }
}

impl IsolatedOracle {
    fn bytes(&mut self, request: Request) -> Result<Vec<u8>> {
        let w = &mut self.worker;
        match w.call(&request, w.limits.request)? {
            (Response::Bytes, payload) => Ok(payload),
            (other, _) => Err(w.protocol_failure(request.op(), &other)),
        }
    }

    fn evaluation(&mut self, request: Request) -> Result<Evaluation> {
        let w = &mut self.worker;
        let (header, payload) = w.call(&request, w.limits.request)?;
        if !matches!(header, Response::Evaluation { .. }) {
            return Err(w.protocol_failure(request.op(), &header));
        }
        decode_evaluation(header, &payload).map_err(|e| w.fail(e))
    }
}

/// "exited with status 3", "killed by signal 6 (SIGABRT)".
fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            return format!("killed by signal {sig} ({}{core})", signal_name(sig));
        }
    }
    match status.code() {
        Some(c) => format!("exited with status {c}"),
        None => format!("ended: {status}"),
    }
}

/// Names of the signals a crashing C++ library dies of (POSIX numbering on Linux and macOS).
#[cfg(unix)]
fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => "SIGILL: an instruction this CPU lacks?",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => "signal",
    }
}

impl Oracle for IsolatedOracle {
    fn identity(&self) -> &OracleIdentity {
        &self.identity
    }

    fn model(&self) -> &ModelInfo {
        &self.model
    }

    fn tokenize(
        &mut self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<TokenId>> {
        let request = Request::Tokenize {
            text: text.to_string(),
            add_special,
            parse_special,
        };
        let w = &mut self.worker;
        match w.call(&request, w.limits.request)? {
            (Response::Tokens { tokens }, _) => Ok(tokens),
            (other, _) => Err(w.protocol_failure("tokenize", &other)),
        }
    }

    fn detokenize(
        &mut self,
        tokens: &[TokenId],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>> {
        self.bytes(Request::Detokenize {
            tokens: tokens.to_vec(),
            remove_special,
            unparse_special,
        })
    }

    fn token_piece(&mut self, token: TokenId, special: bool) -> Result<Vec<u8>> {
        self.bytes(Request::TokenPiece { token, special })
    }

    fn evaluate(&mut self, tokens: &[TokenId], taps: &TapFilter) -> Result<Evaluation> {
        self.evaluation(Request::Evaluate {
            tokens: tokens.to_vec(),
            taps: taps.spec(),
        })
    }

    fn decode_step(&mut self, token: TokenId, taps: &TapFilter) -> Result<Evaluation> {
        self.evaluation(Request::DecodeStep {
            token,
            taps: taps.spec(),
        })
    }

    fn evaluate_last(&mut self, tokens: &[TokenId]) -> Result<Evaluation> {
        self.evaluation(Request::EvaluateLast {
            tokens: tokens.to_vec(),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.dead.is_none() {
            if let Some(mut stdin) = self.stdin.take() {
                let _ = write_frame(&mut stdin, &Request::Shutdown, &[]);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
