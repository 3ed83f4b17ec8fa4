//! The pipe protocol between the harness and an oracle worker process.
//!
//! Each message is one frame: the magic `XVO1`, a u32 LE header length, a u64 LE payload length,
//! the header (JSON) and the payload (raw bytes: little-endian f32 for logits and taps, text
//! bytes for detokenization). JSON keeps the structured part debuggable; the bulk numbers travel
//! raw so that nothing is lost or reformatted. Lengths are checked against limits before any
//! allocation, and payloads are read in bounded chunks, so a corrupt or hostile peer cannot make
//! the reader allocate more than it actually sent.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use xval_engine::taps::Tap;

use crate::error::{Error, Result, WireError};
use crate::oracle::{
    Evaluation, GraphNode, ModelInfo, OracleIdentity, OracleKind, OracleSettings, TapSource,
    TokenId,
};

/// Frame magic: protocol version 1.
pub const MAGIC: [u8; 4] = *b"XVO1";
/// Largest JSON header accepted.
pub const MAX_HEADER: u32 = 64 << 20;
/// Largest payload accepted (a 2B-4T model's full tap set over a long prompt stays far below).
pub const MAX_PAYLOAD: u64 = 16 << 30;
/// Payloads are read in chunks of at most this size.
const READ_CHUNK: usize = 64 << 20;

/// A request from the harness to the worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Must come first: load the model with these settings.
    Load {
        model: PathBuf,
        settings: OracleSettings,
        /// Which oracle implementation the worker opens.
        #[serde(default)]
        oracle: OracleKind,
    },
    Tokenize {
        text: String,
        add_special: bool,
        parse_special: bool,
    },
    Detokenize {
        tokens: Vec<TokenId>,
        remove_special: bool,
        unparse_special: bool,
    },
    TokenPiece {
        token: TokenId,
        special: bool,
    },
    Evaluate {
        tokens: Vec<TokenId>,
        taps: String,
    },
    DecodeStep {
        token: TokenId,
        taps: String,
    },
    /// [`Oracle::evaluate_last`](crate::oracle::Oracle::evaluate_last).
    EvaluateLast {
        tokens: Vec<TokenId>,
    },
    Shutdown,
}

impl Request {
    /// The operation's name, for error messages ("crashed during evaluate").
    pub fn op(&self) -> &'static str {
        match self {
            Request::Load { .. } => "load",
            Request::Tokenize { .. } => "tokenize",
            Request::Detokenize { .. } => "detokenize",
            Request::TokenPiece { .. } => "token_piece",
            Request::Evaluate { .. } => "evaluate",
            Request::DecodeStep { .. } => "decode_step",
            Request::EvaluateLast { .. } => "evaluate_last",
            Request::Shutdown => "shutdown",
        }
    }
}

/// One tap's header; its values follow in the payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapHeader {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A response from the worker. `Bytes` and `Evaluation` carry a payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    Loaded {
        identity: Box<OracleIdentity>,
        model: ModelInfo,
    },
    Tokens {
        tokens: Vec<TokenId>,
    },
    /// Payload: the bytes.
    Bytes,
    /// Payload: `tokens.len() * n_vocab` logits, then each tap's values in order.
    Evaluation {
        start_pos: usize,
        tokens: Vec<TokenId>,
        n_vocab: usize,
        taps: Vec<TapHeader>,
        tap_sources: Vec<TapSource>,
        graph: Vec<GraphNode>,
    },
    Error {
        error: WireError,
    },
    Bye,
}

/// Write one frame.
pub fn write_frame<W: Write, H: Serialize>(w: &mut W, header: &H, payload: &[u8]) -> Result<()> {
    let json = serde_json::to_vec(header)
        .map_err(|e| Error::Protocol(format!("cannot encode header: {e}")))?;
    if json.len() as u64 > MAX_HEADER as u64 {
        return Err(Error::Protocol(format!(
            "header of {} bytes exceeds {MAX_HEADER}",
            json.len()
        )));
    }
    let io = |e: std::io::Error| Error::Protocol(format!("write: {e}"));
    w.write_all(&MAGIC).map_err(io)?;
    w.write_all(&(json.len() as u32).to_le_bytes())
        .map_err(io)?;
    w.write_all(&(payload.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(&json).map_err(io)?;
    w.write_all(payload).map_err(io)?;
    w.flush().map_err(io)
}

/// A frame as read: the raw header JSON and the payload.
#[derive(Debug)]
pub struct Frame {
    pub header: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Read one frame; `Ok(None)` on a clean end of stream before any byte of a frame.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<Frame>> {
    let mut fixed = [0u8; 16];
    let mut got = 0;
    while got < fixed.len() {
        match r.read(&mut fixed[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(Error::Protocol(format!(
                    "stream ended inside a frame header ({got} of 16 bytes)"
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Protocol(format!("read: {e}"))),
        }
    }
    if fixed[..4] != MAGIC {
        return Err(Error::Protocol(format!(
            "bad frame magic {:?} (stray output on the protocol stream?): {:?}",
            &fixed[..4],
            String::from_utf8_lossy(&fixed)
        )));
    }
    let header_len = u32::from_le_bytes(fixed[4..8].try_into().expect("4 bytes"));
    let payload_len = u64::from_le_bytes(fixed[8..16].try_into().expect("8 bytes"));
    if header_len > MAX_HEADER {
        return Err(Error::Protocol(format!(
            "header length {header_len} exceeds {MAX_HEADER}"
        )));
    }
    if payload_len > MAX_PAYLOAD {
        return Err(Error::Protocol(format!(
            "payload length {payload_len} exceeds {MAX_PAYLOAD}"
        )));
    }
    let header = read_bounded(r, header_len as u64, "header")?;
    let payload = read_bounded(r, payload_len, "payload")?;
    Ok(Some(Frame { header, payload }))
}

/// Read exactly `len` bytes, growing the buffer only as data arrives.
fn read_bounded<R: Read>(r: &mut R, len: u64, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while (out.len() as u64) < len {
        let want = ((len - out.len() as u64) as usize).min(READ_CHUNK);
        let start = out.len();
        out.resize(start + want, 0);
        r.read_exact(&mut out[start..]).map_err(|e| {
            Error::Protocol(format!(
                "{what}: stream ended after {start} of {len} bytes: {e}"
            ))
        })?;
    }
    Ok(out)
}

impl Frame {
    /// Decode the header as `T`.
    pub fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        serde_json::from_slice(&self.header).map_err(|e| {
            let shown: String = String::from_utf8_lossy(&self.header)
                .chars()
                .take(200)
                .collect();
            Error::Protocol(format!("bad header ({e}): {shown}"))
        })
    }
}

/// f32 values as little-endian bytes.
pub fn f32_bytes(values: &[f32], out: &mut Vec<u8>) {
    out.reserve(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

/// Encode an evaluation as a response header plus payload.
pub fn encode_evaluation(e: &Evaluation) -> (Response, Vec<u8>) {
    let total = e.logits.len() + e.taps.iter().map(|t| t.data.len()).sum::<usize>();
    let mut payload = Vec::with_capacity(total * 4);
    f32_bytes(&e.logits, &mut payload);
    for t in &e.taps {
        f32_bytes(&t.data, &mut payload);
    }
    let header = Response::Evaluation {
        start_pos: e.start_pos,
        tokens: e.tokens.clone(),
        n_vocab: e.n_vocab,
        taps: e
            .taps
            .iter()
            .map(|t| TapHeader {
                name: t.name.clone(),
                shape: t.shape.clone(),
            })
            .collect(),
        tap_sources: e.tap_sources.clone(),
        graph: e.graph.clone(),
    };
    (header, payload)
}

/// Rebuild an evaluation from its response header and payload, checking every size.
pub fn decode_evaluation(header: Response, payload: &[u8]) -> Result<Evaluation> {
    let Response::Evaluation {
        start_pos,
        tokens,
        n_vocab,
        taps,
        tap_sources,
        graph,
    } = header
    else {
        return Err(Error::Protocol("expected an evaluation".into()));
    };
    let bad = |what: String| Error::Protocol(format!("evaluation payload: {what}"));
    let n_logits = tokens
        .len()
        .checked_mul(n_vocab)
        .ok_or_else(|| bad("logit count overflows".into()))?;
    let mut counts = Vec::with_capacity(taps.len());
    let mut total = n_logits;
    for t in &taps {
        let n = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("tap {} shape {:?} overflows", t.name, t.shape)))?;
        counts.push(n);
        total = total
            .checked_add(n)
            .ok_or_else(|| bad("value count overflows".into()))?;
    }
    if total.checked_mul(4) != Some(payload.len()) {
        return Err(bad(format!(
            "{} bytes for {total} f32 values",
            payload.len()
        )));
    }
    let logits = f32s(&payload[..n_logits * 4]);
    let mut at = n_logits * 4;
    let mut out = Vec::with_capacity(taps.len());
    for (t, n) in taps.into_iter().zip(counts) {
        let data = f32s(&payload[at..at + n * 4]);
        at += n * 4;
        out.push(Tap::new(t.name, t.shape, data));
    }
    Ok(Evaluation {
        start_pos,
        tokens,
        n_vocab,
        logits,
        taps: out,
        tap_sources,
        graph,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval() -> Evaluation {
        Evaluation {
            start_pos: 3,
            tokens: vec![5, 6],
            n_vocab: 3,
            logits: vec![1.0, -2.5, f32::MIN_POSITIVE, 0.0, -0.0, 7.25],
            taps: vec![
                Tap::new("attn_norm-0".into(), vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
                Tap::new(
                    "Qcur-0".into(),
                    vec![1, 2, 2],
                    vec![f32::NAN, 1e-30, -1.0, 9.0],
                ),
            ],
            tap_sources: vec![TapSource {
                name: "Qcur-0".into(),
                op: "ROPE".into(),
                occurrence: 2,
                occurrences: 3,
            }],
            graph: vec![GraphNode {
                name: "attn_norm-0".into(),
                op: "MUL".into(),
                ne: [2, 2, 1, 1],
            }],
        }
    }

    #[test]
    fn evaluation_round_trips_bit_for_bit() {
        let e = eval();
        let (header, payload) = encode_evaluation(&e);
        let mut wire = Vec::new();
        write_frame(&mut wire, &header, &payload).unwrap();
        let frame = read_frame(&mut wire.as_slice()).unwrap().unwrap();
        let back = decode_evaluation(frame.parse().unwrap(), &frame.payload).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.logits), bits(&e.logits));
        for (a, b) in back.taps.iter().zip(&e.taps) {
            assert_eq!((&a.name, &a.shape), (&b.name, &b.shape));
            assert_eq!(bits(&a.data), bits(&b.data));
        }
        assert_eq!(back.tap_sources, e.tap_sources);
        assert_eq!(back.graph, e.graph);
        assert_eq!((back.start_pos, &back.tokens), (3, &vec![5, 6]));
    }

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Load {
                model: "m.gguf".into(),
                settings: OracleSettings::default(),
                oracle: OracleKind::External {
                    dir: "/opt/bitnet.cpp".into(),
                },
            },
            Request::Tokenize {
                text: "héllo\u{0}\n".into(),
                add_special: true,
                parse_special: false,
            },
            Request::Evaluate {
                tokens: vec![1, 2],
                taps: "*".into(),
            },
            Request::Shutdown,
        ];
        let mut wire = Vec::new();
        for r in &reqs {
            write_frame(&mut wire, r, &[]).unwrap();
        }
        let mut rd = wire.as_slice();
        for r in &reqs {
            let f = read_frame(&mut rd).unwrap().unwrap();
            assert_eq!(&f.parse::<Request>().unwrap(), r);
        }
        assert!(
            read_frame(&mut rd).unwrap().is_none(),
            "clean end of stream"
        );
    }

    #[test]
    fn corrupt_frames_are_errors_not_allocations() {
        // Stray text on the stream.
        let e = read_frame(&mut &b"llama.cpp says hello\n"[..]).unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
        // A header claiming a huge payload that never comes.
        let mut wire = MAGIC.to_vec();
        wire.extend_from_slice(&2u32.to_le_bytes());
        wire.extend_from_slice(&(MAX_PAYLOAD).to_le_bytes());
        wire.extend_from_slice(b"{}");
        let e = read_frame(&mut wire.as_slice()).unwrap_err();
        assert!(e.to_string().contains("stream ended"), "{e}");
        // Over the limit.
        let mut wire = MAGIC.to_vec();
        wire.extend_from_slice(&2u32.to_le_bytes());
        wire.extend_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        let e = read_frame(&mut wire.as_slice()).unwrap_err();
        assert!(e.to_string().contains("exceeds"), "{e}");
        // Truncated inside the fixed part.
        let e = read_frame(&mut &MAGIC[..]).unwrap_err();
        assert!(e.to_string().contains("inside a frame header"), "{e}");
        // An evaluation whose payload does not match its shapes.
        let (header, mut payload) = encode_evaluation(&eval());
        payload.pop();
        let e = decode_evaluation(header, &payload).unwrap_err();
        assert!(e.to_string().contains("bytes for"), "{e}");
    }
}
