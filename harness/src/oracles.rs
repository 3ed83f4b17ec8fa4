//! Opening oracles for the commands: a live one in its isolated worker process, or golden
//! recordings, chosen from `--oracle` (`auto`, `golden`, `builtin`, `ggml-graph`, `dir:PATH`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use xval_cpp_sys::golden::GoldenOracle;
use xval_cpp_sys::{IsolatedOracle, Limits, Oracle, OracleKind, OracleSettings, TokenId};

use crate::compare::receipt::Mode;
use crate::error::Error;

/// Start an oracle in a worker process (this same binary, hidden subcommand).
pub fn spawn_oracle(
    kind: &OracleKind,
    model: &Path,
    settings: &OracleSettings,
    limits: Limits,
) -> anyhow::Result<IsolatedOracle> {
    let needs_ggml = !matches!(kind, OracleKind::External { .. });
    if needs_ggml && !xval_cpp_sys::BUILTIN_AVAILABLE {
        return Err(Error::Oracle(xval_cpp_sys::Error::Unavailable {
            oracle: kind.label(),
            reason: "this harness was built without the llama-cpp feature".into(),
        })
        .into());
    }
    let exe = std::env::current_exe().context("cannot locate the harness binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("__oracle-worker");
    Ok(IsolatedOracle::spawn_kind(cmd, kind, model, settings, limits).map_err(Error::Oracle)?)
}

/// Which oracle to use, parsed from `--oracle`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OracleChoice {
    Auto,
    Golden,
    Live(OracleKind),
}

impl OracleChoice {
    pub fn parse(s: &str) -> Result<OracleChoice, Error> {
        Ok(match s {
            "auto" => OracleChoice::Auto,
            "golden" => OracleChoice::Golden,
            _ => OracleChoice::Live(
                OracleKind::parse(s)
                    .map_err(|e| Error::Invalid(format!("--oracle: {e} (or auto, golden)")))?,
            ),
        })
    }
}

fn unavailable(oracle: &str, reason: impl Into<String>) -> anyhow::Error {
    Error::Oracle(xval_cpp_sys::Error::Unavailable {
        oracle: oracle.into(),
        reason: reason.into(),
    })
    .into()
}

/// A live oracle, or recorded outputs that answer only for what was recorded.
pub enum OracleBox {
    Live(Box<dyn Oracle>),
    Golden(Box<GoldenOracle>),
}

impl OracleBox {
    pub fn get(&mut self) -> &mut dyn Oracle {
        match self {
            OracleBox::Live(o) => o.as_mut(),
            OracleBox::Golden(g) => g.as_mut(),
        }
    }

    pub fn identity(&self) -> &xval_cpp_sys::OracleIdentity {
        match self {
            OracleBox::Live(o) => o.identity(),
            OracleBox::Golden(g) => g.identity(),
        }
    }

    /// How many decode steps can follow `ids` (recordings hold a fixed greedy continuation).
    pub fn step_limit(&self, ids: &[TokenId]) -> Option<usize> {
        match self {
            OracleBox::Live(_) => None,
            OracleBox::Golden(g) => Some(g.greedy_continuation(ids).map_or(0, <[TokenId]>::len)),
        }
    }

    /// The recorded prompt texts, when this is a recording.
    pub fn recorded_prompts(&self) -> Option<Vec<String>> {
        match self {
            OracleBox::Live(_) => None,
            OracleBox::Golden(g) => Some(
                g.recording()
                    .prompts
                    .iter()
                    .map(|p| p.text.clone())
                    .collect(),
            ),
        }
    }
}

/// An opened oracle and how the receipt should describe the run.
pub struct OpenedOracle {
    pub oracle: OracleBox,
    pub mode: Mode,
}

/// Where to find what an oracle needs besides the model.
pub struct OpenRequest<'a> {
    pub choice: &'a OracleChoice,
    pub model: &'a Path,
    /// The model's `general.architecture`.
    pub arch: &'a str,
    pub settings: &'a OracleSettings,
    pub limits: Limits,
    /// Where golden recordings live [default: the repository's fixtures/].
    pub fixtures: Option<&'a Path>,
}

/// Open the oracle `--oracle` names for a comparison (see [`auto_kind`] for `auto`).
pub fn open(req: &OpenRequest) -> anyhow::Result<OpenedOracle> {
    let live = |kind: OracleKind| -> anyhow::Result<OpenedOracle> {
        if kind == OracleKind::Builtin && req.arch != "bitnet" {
            return Err(unavailable(
                "builtin",
                format!(
                    "mainline llama.cpp cannot run architecture '{}' (its `bitnet` graph \
                     hard-codes SiLU; `bitnet-b1.58` needs ReLU^2): use --oracle ggml-graph or \
                     dir:PATH to a bitnet.cpp tree",
                    req.arch
                ),
            ));
        }
        Ok(OpenedOracle {
            oracle: OracleBox::Live(Box::new(spawn_oracle(
                &kind,
                req.model,
                req.settings,
                req.limits,
            )?)),
            mode: Mode::oracle(),
        })
    };
    match req.choice {
        OracleChoice::Live(kind) => live(kind.clone()),
        OracleChoice::Auto => match auto_kind(req.arch) {
            Some(kind) => live(kind),
            None => open_golden(req),
        },
        OracleChoice::Golden => open_golden(req),
    }
}

/// What `--oracle auto` runs live: the tree `$BITNET_CPP_DIR` names, else the built-in
/// llama.cpp for `bitnet` and the ggml-graph oracle for the architectures mainline lacks;
/// `None` (golden recordings) in a build without ggml.
pub fn auto_kind(arch: &str) -> Option<OracleKind> {
    if let Some(dir) = std::env::var_os(xval_cpp_sys::BITNET_CPP_DIR_ENV).filter(|d| !d.is_empty())
    {
        return Some(OracleKind::External { dir: dir.into() });
    }
    if !xval_cpp_sys::BUILTIN_AVAILABLE {
        return None;
    }
    Some(if arch == "bitnet" {
        OracleKind::Builtin
    } else {
        OracleKind::GgmlGraph
    })
}

fn open_golden(req: &OpenRequest) -> anyhow::Result<OpenedOracle> {
    let dir: PathBuf = match req.fixtures {
        Some(d) => d.to_path_buf(),
        None => {
            let cwd = std::env::current_dir()
                .map_err(|e| Error::Invalid(format!("cannot read the current directory: {e}")))?;
            crate::fixtures::find_repo_root(&cwd)?.join(crate::fixtures::FIXTURES_DIR)
        }
    };
    let golden = GoldenOracle::open(&dir, req.model).map_err(|e| {
        if *req.choice == OracleChoice::Auto {
            unavailable(
                "auto",
                format!(
                    "no live oracle can run this model in this build and no golden recording \
                     fits it ({e})"
                ),
            )
        } else {
            Error::Oracle(e).into()
        }
    })?;
    Ok(OpenedOracle {
        oracle: OracleBox::Golden(Box::new(golden)),
        mode: Mode::rust_only(),
    })
}
