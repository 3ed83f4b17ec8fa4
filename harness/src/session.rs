//! What a comparison holds fixed for a whole command: the model, the engine (under the profile
//! that mirrors the oracle unless told otherwise), its tokenizer, the oracle, the thresholds
//! and the identities written into every receipt. `compare` opens one; `selftest` opens one per
//! model and derives a faulty engine from it per fault.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use xval_cpp_sys::{Limits, OracleSettings};
use xval_engine::gguf::Residence;
use xval_engine::model::{Engine, Fault, Plan};
use xval_engine::tokenizer::Tokenizer;

use crate::compare::receipt::{EngineIdentity, InputRecord, Provenance};
use crate::compare::thresholds::{AppliedThresholds, ThresholdKey};
use crate::compare::verdict::Pairing;
use crate::compare::{CompareSettings, Thresholds};
use crate::engine_args::{EngineArgs, KvArg};
use crate::oracles::{self, OpenRequest, OracleChoice};

/// How to open a session (the flags `compare` and `selftest` share).
pub struct SessionRequest<'a> {
    pub model: &'a Path,
    pub engine: &'a EngineArgs,
    /// `--oracle` (auto, golden, builtin, ggml-graph, dir:PATH).
    pub oracle: &'a str,
    pub thresholds: Option<&'a Path>,
    pub oracle_threads: usize,
    pub oracle_kv_type: Option<KvArg>,
    /// Seconds the oracle may take to load or answer one request.
    pub timeout: u64,
    pub oracle_reference_kernels: bool,
    /// Faults the engine runs with (none for a real comparison).
    pub faults: Vec<Fault>,
    /// Where golden recordings live.
    pub fixtures: Option<&'a Path>,
    /// Decode steps to leave room for in the oracle's context.
    pub steps: usize,
}

/// Everything fixed for the whole command.
pub struct Session {
    pub engine: Engine,
    /// The engine side's tokenizer (with the plan's tokenizer faults).
    pub tokenizer: Tokenizer,
    pub oracle: oracles::OpenedOracle,
    pub thresholds: AppliedThresholds,
    pub pairing: Pairing,
    pub provenance: Provenance,
    pub engine_identity: EngineIdentity,
    pub oracle_identity: serde_json::Value,
    pub load_s: f64,
}

impl Session {
    /// Load and check the model (bad input is exit 2 before any oracle starts), open the
    /// oracle with room for `longest` (the longest input's token count under the model's own
    /// tokenizer), and build the engine under the profile that mirrors the oracle unless
    /// `--profile` says otherwise.
    pub fn open(
        req: &SessionRequest,
        longest: impl FnOnce(&Tokenizer) -> anyhow::Result<usize>,
    ) -> anyhow::Result<Session> {
        let t_load = Instant::now();
        // Mapped unless `--load` says otherwise: a comparison's engine runs are short, and
        // reading the file into memory competes with the hashing and the oracle's load below
        // (a 2B-4T TQ2_0 comparison loaded in 3.47-3.58 s read, 1.06-1.25 s mapped).
        let model = req.engine.model_held(req.model, Residence::Mapped)?;
        // The file's digest for the receipt, while the oracle starts (its worker loads the
        // model in its own process).
        let file = model.shared_file();
        let path = req.model.to_path_buf();
        let digest = std::thread::spawn(move || {
            crate::digest_cache::model_sha256(&path, || Provenance::model_sha256(&file))
        });
        let tokenizer = model.tokenizer()?;
        let arch = model.hparams.arch_name.clone();
        let longest = longest(&tokenizer)?;
        let settings = OracleSettings {
            threads: req.oracle_threads.max(1),
            // Room for the longest prompt (with slack for the oracle's own tokenization) and
            // the decode steps; llama.cpp rounds it up to a multiple of 256.
            n_ctx: (2 * longest + req.steps + 8).max(64),
            kv_type: req.oracle_kv_type.unwrap_or(KvArg::F32).into(),
            kv_fallback: req.oracle_kv_type.is_none(),
            reference_kernels: req.oracle_reference_kernels,
            ..OracleSettings::default()
        };
        let limit = Duration::from_secs(req.timeout.max(1));
        let oracle = oracles::open(&OpenRequest {
            choice: &OracleChoice::parse(req.oracle)?,
            model: req.model,
            arch: &arch,
            settings: &settings,
            limits: Limits::each(limit),
            fixtures: req.fixtures,
        })?;
        let identity = oracle.oracle.identity();
        // Without --profile the engine mirrors the oracle's arithmetic.
        let mut engine = req.engine.engine_for(model, Some(identity.numerics))?;
        if !req.faults.is_empty() {
            engine = engine.with_plan(Plan {
                faults: req.faults.clone(),
                ..Plan::default()
            })?;
        }
        // The engine side's tokenizer carries the plan's tokenizer faults.
        let tokenizer = tokenizer.with_plan(engine.plan());
        let thresholds = match req.thresholds {
            Some(p) => Thresholds::load(p)?,
            None => Thresholds::default(),
        }
        .resolve(&ThresholdKey {
            format: engine.model().projection_type().name().to_string(),
            profile: engine.numerics().profile,
            kv: engine.numerics().kv,
            backend: engine.backend(),
        });
        let pairing = Pairing::new(engine.numerics(), &identity.kind, identity.numerics);
        let oracle_identity = serde_json::to_value(identity)?;
        let engine_identity = EngineIdentity::of_engine(&engine, git_commit());
        let sha256 = digest
            .join()
            .map_err(|_| anyhow::anyhow!("hashing {} failed", req.model.display()))?;
        let provenance = Provenance::of_model(req.model, engine.model(), &tokenizer, sha256);
        Ok(Session {
            engine,
            tokenizer,
            oracle,
            thresholds,
            pairing,
            provenance,
            engine_identity,
            oracle_identity,
            load_s: t_load.elapsed().as_secs_f64(),
        })
    }

    /// The decode steps that can follow `ids` of `wanted`: as many as the engine's context
    /// leaves room for, and no more than a recording holds.
    pub fn decode_steps(&self, ids: &[u32], wanted: usize) -> usize {
        let room = self.engine.model().hparams.n_ctx.saturating_sub(ids.len());
        let steps = wanted.min(room);
        match self.oracle.oracle.step_limit(ids) {
            Some(limit) => steps.min(limit),
            None => steps,
        }
    }

    /// The session's engine with `plan`, its tokenizer and identity.
    pub fn planned(&self, plan: Plan) -> anyhow::Result<(Engine, Tokenizer, EngineIdentity)> {
        let engine = self.engine.with_plan(plan)?;
        // The same file's tokenizer, read and checked when the session opened.
        let tokenizer = self.tokenizer.clone().with_plan(engine.plan());
        let identity = EngineIdentity::of_engine(&engine, git_commit());
        Ok((engine, tokenizer, identity))
    }

    /// The settings of one comparison in this session.
    pub fn settings(
        &self,
        engine: &EngineIdentity,
        input: InputRecord,
        steps_requested: usize,
        timings: BTreeMap<String, f64>,
    ) -> CompareSettings {
        CompareSettings {
            mode: self.oracle.mode.clone(),
            provenance: self.provenance.clone(),
            engine: engine.clone(),
            oracle: self.oracle_identity.clone(),
            pairing: self.pairing.clone(),
            thresholds: self.thresholds.clone(),
            input,
            top_k: 10,
            steps_requested,
            created: crate::timefmt::now_rfc3339(),
            timings,
        }
    }
}

/// The commit this binary was built from, when the build knew it.
fn git_commit() -> Option<String> {
    option_env!("XVAL_GIT_COMMIT").map(String::from)
}
