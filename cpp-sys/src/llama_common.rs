//! What the llama.cpp-based oracles (the built-in one and a user's external tree) share and
//! that needs no llama.cpp headers: checking settings and requests, the fusion switch, preparing
//! the model file, and calling C functions that report the size they need.

use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use xval_engine::gguf::{GgmlType, GgufFile};
use xval_engine::model::Outputs;
use xval_engine::numerics::{F16Activations, Numerics, Profile};
use xval_engine::taps::TapFilter;

use crate::error::{Error, Result};
use crate::oracle::{Evaluation, OracleSettings, TokenId};
use crate::tap_capture::{wanted_names, Capture};

/// The variable ggml's CPU backend reads once, in `ggml_cpu_init`, to turn op fusion off.
pub(crate) const FUSION_ENV: &str = "GGML_CPU_DISABLE_FUSION";

/// `atoi(v) == 1`, as ggml-cpu.c reads `GGML_CPU_DISABLE_FUSION`.
pub(crate) fn atoi_is_one(v: &str) -> bool {
    let t = v.trim_start();
    let (sign, digits) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => (1, t),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse::<i64>().map(|n| sign * n) == Ok(1)
}

/// Set `GGML_CPU_DISABLE_FUSION` from the first caller's wish unless the process already has
/// it (the isolated worker gets it from its parent), once per process, before any ggml in this
/// process initialises; returns whether fusion is off.
pub(crate) fn latch_fusion(fusion: bool) -> bool {
    static DISABLED: OnceLock<bool> = OnceLock::new();
    *DISABLED.get_or_init(|| {
        if std::env::var_os(FUSION_ENV).is_none() {
            // Under the OnceLock, before any ggml exists in this process.
            std::env::set_var(FUSION_ENV, if fusion { "0" } else { "1" });
        }
        std::env::var(FUSION_ENV)
            .map(|v| atoi_is_one(&v))
            .unwrap_or(false)
    })
}

/// `llama_print_system_info()` (the built-in's or an external tree's, `call`) copied out under
/// one process-wide lock. It rebuilds a single static `std::string` on every call (`s.clear()`,
/// then appends) and returns its buffer, so two threads calling it at once race on that string:
/// `oracle_llama`, whose tests open oracles side by side, aborted with glibc's `malloc():
/// unaligned tcache chunk detected`, segfaulted, or read an empty string in 3 of 1200 runs.
///
/// # Safety
/// `call` returns null or a NUL-terminated string that stays valid until the next call.
pub(crate) unsafe fn system_info(call: impl FnOnce() -> *const c_char) -> String {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _only_caller = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let p = call();
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller's promise; copied before the lock lets another call rebuild it.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .trim()
        .to_string()
}

/// The error for a fusion wish the process can no longer honour.
pub(crate) fn fusion_mismatch(requested: bool, disabled: bool) -> Error {
    Error::Unsupported(format!(
        "op fusion {} requested, but this process latched {FUSION_ENV} ({}) when ggml \
         initialised; ggml reads it once per process",
        if requested { "on" } else { "off" },
        if disabled { "fusion off" } else { "fusion on" },
    ))
}

/// Range checks on the settings every llama.cpp oracle applies; reference kernels are refused
/// with `reference_note` (neither oracle can reach them inside llama.cpp's own context).
pub(crate) fn check_settings(settings: &OracleSettings, reference_note: &str) -> Result<()> {
    if settings.reference_kernels {
        return Err(Error::Unsupported(format!(
            "reference kernels: {reference_note}"
        )));
    }
    check_ranges(settings)
}

/// Thread count and context length within what any ggml-based oracle accepts.
pub(crate) fn check_ranges(settings: &OracleSettings) -> Result<()> {
    if settings.threads == 0 || settings.threads > 1024 {
        return Err(Error::InvalidRequest(format!(
            "threads must be 1..=1024, got {}",
            settings.threads
        )));
    }
    if settings.n_ctx == 0 || settings.n_ctx > 1 << 20 {
        return Err(Error::InvalidRequest(format!(
            "context length must be 1..={}, got {}",
            1 << 20,
            settings.n_ctx
        )));
    }
    Ok(())
}

/// The model file as the oracle loads it: as given, or (for a llama.cpp that cannot read I2_S)
/// transcoded losslessly to TQ2_0 plus `.scale` tensors in a scratch file ([`scratch_dir`])
/// that lives as long as [`ModelInput::transcoded`]; the oracles hand it to [`loaded`] once
/// the model is in.
pub(crate) struct ModelInput {
    /// The transcoded file, when there is one (load it instead of the given path).
    pub transcoded: Option<tempfile::TempPath>,
    /// How the file reached the oracle, for `SettingsIdentity::model_input`.
    pub description: String,
    /// Whether the oracle reads I2_S tensors itself (bitnet.cpp's kernels).
    pub native_i2s: bool,
}

impl ModelInput {
    /// The engine profile that mirrors the oracle's arithmetic on this input: bitnet.cpp's
    /// int8 per-row activations where its I2_S kernels run, mainline ggml's Q8_K otherwise
    /// (TQ and float weights, and I2_S transcoded to TQ2_0).
    pub fn profile(&self) -> Profile {
        if self.native_i2s {
            Profile::BitnetCpp
        } else {
            Profile::Ggml
        }
    }
}

/// The numerics of an oracle built on mainline ggml (the built-in llama.cpp, the ggml-graph
/// oracle): its profile for this input, its KV type, F16 activations rounded to f16 (mainline's
/// tinyBLAS and vec_dot both take F16 activations for F16 weights on x86).
// Only the built-in oracles (feature `llama-cpp`) use it.
#[cfg_attr(not(feature = "llama-cpp"), allow(dead_code))]
pub(crate) fn mainline_numerics(input: &ModelInput, settings: &OracleSettings) -> Numerics {
    Numerics::new(input.profile())
        .with_kv(settings.kv_type)
        .with_f16_activations(F16Activations::Round)
}

/// Check the model with our own reader and prepare it for an oracle that does (`reads_i2s`)
/// or does not read I2_S.
pub(crate) fn prepare_model(path: &Path, reads_i2s: bool) -> Result<ModelInput> {
    let label = path.display().to_string();
    // Our own reader first: a malformed file is named by our checks, before C++ sees it.
    let file = GgufFile::open(path).map_err(|e| Error::BadModel {
        path: label.clone(),
        reason: e.to_string(),
    })?;
    let n_i2s = file
        .tensors()
        .filter(|t| t.info.ty == GgmlType::I2_S)
        .count();
    if n_i2s == 0 || reads_i2s {
        return Ok(ModelInput {
            transcoded: None,
            description: "as given".to_string(),
            native_i2s: n_i2s > 0,
        });
    }
    // The copy is about as large as the file (TQ2_0 blocks are 3% larger than I2_S's).
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let fallback = std::env::temp_dir();
    let fast = scratch_dir(size, &fallback);
    let dirs: &[&Path] = if fast == fallback {
        &[&fallback]
    } else {
        &[&fast, &fallback]
    };
    let mut tmp = None;
    for (i, dir) in dirs.iter().enumerate() {
        let t = temp_gguf_in(dir, "xval-i2s-as-tq2_0-")?;
        match xval_engine::transcode::i2s_to_tq2_0_scratch(&file, &t) {
            Ok(_) => {
                tmp = Some(t);
                break;
            }
            // A full memory-backed directory (ENOSPC): the system's temporary one instead
            // (`t` is removed as it drops).
            Err(xval_engine::Error::Io { .. }) if i + 1 < dirs.len() => continue,
            Err(e) => {
                return Err(Error::BadModel {
                    path: label,
                    reason: format!("cannot transcode I2_S for llama.cpp: {e}"),
                })
            }
        }
    }
    Ok(ModelInput {
        transcoded: tmp,
        description: format!(
            "transcoded: {n_i2s} I2_S tensors -> TQ2_0 (d = 1.0) + one-element .scale tensors \
             (lossless)"
        ),
        native_i2s: false,
    })
}

/// A new temporary `.gguf` path, deleted when the returned value is dropped.
// Only the ggml-graph oracle (feature `llama-cpp`) uses it.
#[cfg_attr(not(feature = "llama-cpp"), allow(dead_code))]
pub(crate) fn temp_gguf(prefix: &str) -> Result<tempfile::TempPath> {
    temp_gguf_in(&std::env::temp_dir(), prefix)
}

/// [`temp_gguf`] in `dir`.
fn temp_gguf_in(dir: &Path, prefix: &str) -> Result<tempfile::TempPath> {
    Ok(tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".gguf")
        .tempfile_in(dir)
        .map_err(|e| {
            Error::Llama(format!(
                "cannot create a temporary file in {}: {e}",
                dir.display()
            ))
        })?
        .into_temp_path())
}

/// The variable naming the directory for transcoded model copies.
pub(crate) const SCRATCH_DIR_ENV: &str = "XVAL_SCRATCH_DIR";

/// Where a transcoded model copy of about `bytes` goes: `XVAL_SCRATCH_DIR` when set; else
/// `/dev/shm` (memory-backed: writing 1.2 GB there took 0.8 s on a 2-core VM, through a
/// disk-backed `/tmp`'s page cache 1.7-2.5 s, most of a 2B-4T I2_S comparison's load) where it
/// is a directory and the memory the kernel reports available (`MemAvailable`) holds the copy
/// twice over; else `fallback` (the system's temporary directory). A copy that does not fit
/// after all (ENOSPC) is written to `fallback` instead ([`prepare_model`]).
pub(crate) fn scratch_dir(bytes: u64, fallback: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    choose_scratch(
        std::env::var_os(SCRATCH_DIR_ENV),
        std::fs::read_to_string("/proc/meminfo").ok().as_deref(),
        shm.is_dir().then_some(shm),
        bytes,
        fallback,
    )
}

/// [`scratch_dir`]'s choice from what it reads: the variable, `/proc/meminfo`'s text, the
/// memory-backed directory if there is one.
fn choose_scratch(
    env: Option<std::ffi::OsString>,
    meminfo: Option<&str>,
    shm: Option<&Path>,
    bytes: u64,
    fallback: &Path,
) -> PathBuf {
    if let Some(dir) = env.filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    match (shm, meminfo.and_then(mem_available)) {
        (Some(shm), Some(a)) if a >= bytes.saturating_mul(2) => shm.to_path_buf(),
        _ => fallback.to_path_buf(),
    }
}

/// `MemAvailable` of `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let kb: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kb.saturating_mul(1024))
}

/// What an oracle keeps of its transcoded copy once the model is loaded: nothing on Unix (the
/// loaded model maps or holds the data, which outlives the name), so a worker killed later (a
/// timeout, its harness gone) leaves no copy in memory or on disk; elsewhere the copy, removed
/// when the oracle goes.
pub(crate) fn loaded(copy: Option<tempfile::TempPath>) -> Option<tempfile::TempPath> {
    #[cfg(unix)]
    {
        drop(copy);
        None
    }
    #[cfg(not(unix))]
    {
        copy
    }
}

pub(crate) fn path_to_cstring(p: &Path) -> Result<CString> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        p.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = p
        .to_str()
        .ok_or_else(|| Error::InvalidRequest(format!("{}: path is not UTF-8", p.display())))?
        .as_bytes()
        .to_vec();
    CString::new(bytes)
        .map_err(|_| Error::InvalidRequest(format!("{}: path contains a NUL byte", p.display())))
}

/// Call a llama.cpp "write into this buffer or tell me the size" function: a negative return
/// is the size needed. `first` is the first buffer's length.
pub(crate) fn grow_call<T: Copy + Default>(
    first: usize,
    mut f: impl FnMut(&mut [T]) -> i32,
    what: &str,
) -> Result<Vec<T>> {
    let mut buf = vec![T::default(); first.max(1)];
    for _ in 0..2 {
        let n = f(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        if n == i32::MIN {
            return Err(Error::InvalidRequest(format!("{what}: result too large")));
        }
        buf = vec![T::default(); n.unsigned_abs() as usize];
    }
    Err(Error::Llama(format!("{what}: size changed between calls")))
}

/// `llama_tokenize` through [`grow_call`], ids checked to be non-negative.
pub(crate) fn tokenize_with(
    text: &str,
    mut f: impl FnMut(i32, &mut [i32]) -> i32,
) -> Result<Vec<TokenId>> {
    let len = i32::try_from(text.len())
        .map_err(|_| Error::InvalidRequest("text longer than 2 GiB".into()))?;
    grow_call(
        text.len() + 8,
        |ids: &mut [i32]| f(len, ids),
        "llama_tokenize",
    )?
    .into_iter()
    .map(|t| {
        TokenId::try_from(t).map_err(|_| Error::Llama(format!("llama_tokenize produced id {t}")))
    })
    .collect()
}

/// `llama_detokenize` through [`grow_call`]: `f(ids, n_ids, buf, buf_len)`.
pub(crate) fn detokenize_with(
    tokens: &[TokenId],
    n_vocab: usize,
    mut f: impl FnMut(*const i32, i32, *mut c_char, i32) -> i32,
) -> Result<Vec<u8>> {
    check_ids(tokens, n_vocab)?;
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let n_ids =
        i32::try_from(ids.len()).map_err(|_| Error::InvalidRequest("too many tokens".into()))?;
    grow_call(
        64,
        |buf: &mut [u8]| f(ids.as_ptr(), n_ids, buf.as_mut_ptr().cast(), clamp_len(buf)),
        "llama_detokenize",
    )
}

/// `llama_token_to_piece` through [`grow_call`]: `f(token, buf, buf_len)`.
pub(crate) fn piece_with(
    token: TokenId,
    n_vocab: usize,
    mut f: impl FnMut(i32, *mut c_char, i32) -> i32,
) -> Result<Vec<u8>> {
    check_ids(&[token], n_vocab)?;
    grow_call(
        64,
        |buf: &mut [u8]| f(token as i32, buf.as_mut_ptr().cast(), clamp_len(buf)),
        "llama_token_to_piece",
    )
}

/// A buffer's length as the `int32_t` llama.cpp takes (never more than the buffer holds).
pub(crate) fn clamp_len<T>(buf: &[T]) -> i32 {
    buf.len().min(i32::MAX as usize) as i32
}

/// Every id inside a vocabulary of `n_vocab`.
pub(crate) fn check_ids(tokens: &[TokenId], n_vocab: usize) -> Result<()> {
    match tokens.iter().position(|&t| t as usize >= n_vocab) {
        Some(i) => Err(Error::InvalidRequest(format!(
            "token {} (at index {i}) is outside the vocabulary of {n_vocab}",
            tokens[i]
        ))),
        None => Ok(()),
    }
}

/// A prompt one evaluation can take: not empty, within one micro-batch, ids in the vocabulary.
pub(crate) fn check_prompt(tokens: &[TokenId], n_ubatch: usize, n_vocab: usize) -> Result<()> {
    if tokens.is_empty() {
        return Err(Error::InvalidRequest(
            "nothing to evaluate: no tokens".into(),
        ));
    }
    if tokens.len() > n_ubatch {
        return Err(Error::InvalidRequest(format!(
            "{} tokens exceed the oracle's batch of {n_ubatch} positions (raise the context \
             length)",
            tokens.len(),
        )));
    }
    check_ids(tokens, n_vocab)
}

/// The position of the next decode step: after a successful evaluation, inside the context.
pub(crate) fn next_position(
    n_past: Option<usize>,
    n_ctx: usize,
    token: TokenId,
    n_vocab: usize,
) -> Result<usize> {
    let Some(pos) = n_past else {
        return Err(Error::InvalidRequest(
            "decode step without a successfully evaluated prefix".into(),
        ));
    };
    if pos + 1 > n_ctx {
        return Err(Error::InvalidRequest(format!(
            "position {pos} is past the context of {n_ctx} positions"
        )));
    }
    check_ids(&[token], n_vocab)?;
    Ok(pos)
}

/// One decode of `tokens` at positions `start..start + n`, the `outputs` positions outputs, with
/// the taps `taps` selects captured into `capture`: `decode()` runs llama.cpp's decode and
/// returns its status, `logits_row(i)` is `llama_get_logits_ith(ctx, i)`, `log()` what llama.cpp
/// said last (for the error). With [`Outputs::Last`] the evaluation is of the last position
/// alone.
///
/// # Safety
/// `capture` must be the `Capture` the context's `cb_eval` writes to, referenced nowhere else
/// during the call; `logits_row` must return null or `n_vocab` floats that stay valid until
/// this function returns.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn decode_with_taps(
    capture: *mut Capture,
    n_layer: usize,
    taps: &TapFilter,
    tokens: &[TokenId],
    start: usize,
    n_vocab: usize,
    outputs: Outputs,
    decode: impl FnOnce() -> i32,
    mut logits_row: impl FnMut(i32) -> *const f32,
    log: impl FnOnce() -> String,
) -> Result<Evaluation> {
    let n = tokens.len();
    let none = TapFilter::none();
    let taps = if outputs == Outputs::All { taps } else { &none };
    let wanted = wanted_names(n_layer, taps);
    // SAFETY (caller): no decode is running; this is the only live reference to the capture.
    unsafe { (*capture).reset(wanted, n) };
    let rc = decode();
    if rc != 0 {
        return Err(Error::Llama(format!(
            "llama_decode returned {rc} for positions {start}..{}: {}",
            start + n,
            log()
        )));
    }
    // SAFETY (caller): the decode is over; exclusive access again.
    let capture = unsafe { &mut *capture };
    if let Some(e) = capture.error.take() {
        return Err(Error::Capture(e));
    }
    let first = if outputs == Outputs::All {
        0
    } else {
        n.saturating_sub(1)
    };
    let mut logits = Vec::with_capacity((n - first) * n_vocab);
    for i in first..n {
        let row = logits_row(i as i32);
        if row.is_null() {
            return Err(Error::Llama(format!("no logits for batch entry {i}")));
        }
        // SAFETY (caller): a non-null row of n_vocab floats, valid until we return.
        logits.extend_from_slice(unsafe { std::slice::from_raw_parts(row, n_vocab) });
    }
    let (taps, tap_sources, graph) = capture.finish();
    Ok(Evaluation {
        start_pos: start + first,
        tokens: tokens[first..].to_vec(),
        n_vocab,
        logits,
        taps,
        tap_sources,
        graph,
    })
}

/// The last `n` non-empty lines of llama.cpp's log, for an error message.
pub(crate) fn log_summary(log: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(n)..].join(" | ");
    if tail.is_empty() {
        "llama.cpp logged nothing".into()
    } else {
        format!("llama.cpp said: {tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_mark_the_batch_entries() {
        let marks = |o: Outputs| (0..4).map(|i| o.is_output(i, 4)).collect::<Vec<_>>();
        assert_eq!(marks(Outputs::All), [true; 4]);
        assert_eq!(marks(Outputs::Last), [false, false, false, true]);
    }

    #[test]
    fn a_transcoded_copy_goes_to_memory_only_where_it_fits_twice() {
        let meminfo =
            "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:    2000000 kB\n";
        assert_eq!(mem_available(meminfo), Some(2_048_000_000));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: many kB\n"), None);
        let (shm, tmp) = (Path::new("/dev/shm"), Path::new("/tmp"));
        let choose = |env: Option<&str>, info: Option<&str>, shm: Option<&Path>, bytes| {
            choose_scratch(env.map(Into::into), info, shm, bytes, tmp)
        };
        // 2.048 GB available: a 1.0 GB copy fits twice, a 1.1 GB one does not.
        assert_eq!(choose(None, Some(meminfo), Some(shm), 1_000_000_000), shm);
        assert_eq!(choose(None, Some(meminfo), Some(shm), 1_100_000_000), tmp);
        // No memory-backed directory, or no way to tell what is available: the fallback.
        assert_eq!(choose(None, Some(meminfo), None, 1), tmp);
        assert_eq!(choose(None, None, Some(shm), 1), tmp);
        // The variable wins, whatever the memory; an empty one counts as unset.
        assert_eq!(
            choose(Some("/scratch"), None, None, u64::MAX),
            Path::new("/scratch")
        );
        assert_eq!(choose(Some(""), Some(meminfo), Some(shm), 1), shm);
    }

    #[test]
    fn atoi_reads_like_c() {
        assert!(atoi_is_one("1"));
        assert!(atoi_is_one(" +1x"));
        assert!(!atoi_is_one("0"));
        assert!(!atoi_is_one("-1"));
        assert!(!atoi_is_one("yes"));
    }

    #[test]
    fn grow_call_retries_once_with_the_size_asked_for() {
        let got = grow_call(
            1,
            |b: &mut [u8]| {
                if b.len() < 3 {
                    -3
                } else {
                    b[..3].copy_from_slice(b"abc");
                    3
                }
            },
            "t",
        );
        assert_eq!(got.unwrap(), b"abc");
        assert!(grow_call(1, |_: &mut [u8]| -5, "t").is_err());
    }

    #[test]
    fn requests_are_checked() {
        assert!(check_prompt(&[], 8, 10).is_err());
        assert!(check_prompt(&[1; 9], 8, 10).is_err());
        assert!(check_prompt(&[10], 8, 10).is_err());
        assert!(check_prompt(&[9], 8, 10).is_ok());
        assert!(next_position(None, 8, 1, 10).is_err());
        assert!(next_position(Some(8), 8, 1, 10).is_err());
        assert_eq!(next_position(Some(3), 8, 1, 10).unwrap(), 3);
    }
}
