//! What an engine run changes on purpose, handed to the engine explicitly as a [`Plan`]
//! (`Engine::with_plan`), never through a global switch: one-ulp jitter for the comparison's
//! noise twin, and seeded faults for the self-test. An engine without a plan takes the plain
//! path: one `Option` test per op, nothing else.

use super::faults::FaultKind;
use crate::taps::LAYER_TAGS;

/// Deliberate changes to an engine's computation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Seed of the one-ulp jitter: each element of every op's output (embedding rows
    /// included) moves up or down by one unit in the last place with probability 1/4 each.
    /// The result is another valid rounding of the same computation; how far the jittered
    /// engine drifts from the plain one, tap by tap, is the noise reference the comparison's
    /// chained limits follow.
    pub jitter: Option<u64>,
    /// The absolute position whose quantized activation rows (every int8 row or Q8_K/Q8_0
    /// block of every ternary or Q8_0 matmul input) round their element nearest a rounding tie
    /// the other way: the largest change a legitimate one-ulp difference could make to a
    /// quantizer's codes, made at one position so that a model where such flips are rare
    /// events still shows their effect in the noise reference.
    pub flip_ties_at: Option<usize>,
    /// Float sums (F32/F16/BF16 matmuls, attention's dot products and softmax) accumulate in
    /// f32 one term after another instead of in f64: another valid summation order, as large
    /// as the oracles' f32 SIMD sums differ from a sequential one.
    pub f32_sums: bool,
    /// Injected faults, each where the real bug would sit.
    pub faults: Vec<Fault>,
}

/// A fault the self-test (and the verdict tests) inject.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Multiply the output of the matmul by tensor `tensor` (e.g. `blk.1.attn_q.weight`) by
    /// `factor`: a wrong scale in one projection.
    ScaleTensor { tensor: String, factor: f32 },
    /// A bug of the catalogue, in one layer or (`None`) wherever it would act.
    Bug {
        kind: FaultKind,
        layer: Option<usize>,
    },
}

impl Fault {
    /// A catalogue bug everywhere it would act.
    pub fn bug(kind: FaultKind) -> Fault {
        Fault::Bug { kind, layer: None }
    }

    /// Parse a fault spec: `scale:TENSOR:FACTOR` (e.g. `scale:blk.1.attn_q.weight:1.01`), or a
    /// catalogue name with an optional layer (`kv-one-short`, `layernorm@2`; see
    /// [`FaultKind::ALL`]).
    pub fn parse(s: &str) -> Result<Fault, String> {
        if let Some(rest) = s.strip_prefix("scale:") {
            let (tensor, factor) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("fault '{s}': expected scale:TENSOR:FACTOR"))?;
            let factor: f32 = factor
                .parse()
                .map_err(|_| format!("fault '{s}': '{factor}' is not a number"))?;
            if tensor.is_empty() || !factor.is_finite() {
                return Err(format!("fault '{s}': expected scale:TENSOR:FACTOR"));
            }
            return Ok(Fault::ScaleTensor {
                tensor: tensor.into(),
                factor,
            });
        }
        let (name, layer) = match s.split_once('@') {
            Some((n, l)) => (
                n,
                Some(
                    l.parse::<usize>()
                        .map_err(|_| format!("fault '{s}': '{l}' is not a layer number"))?,
                ),
            ),
            None => (s, None),
        };
        let kind = FaultKind::from_name(name).ok_or_else(|| {
            format!(
                "unknown fault '{s}' (expected scale:TENSOR:FACTOR or one of {})",
                FaultKind::ALL.map(FaultKind::name).join(", ")
            )
        })?;
        if layer.is_some() && !kind.layered() {
            return Err(format!("fault '{s}': {name} does not act per layer"));
        }
        Ok(Fault::Bug { kind, layer })
    }
}

impl std::fmt::Display for Fault {
    /// The spec [`Fault::parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::ScaleTensor { tensor, factor } => write!(f, "scale:{tensor}:{factor}"),
            Fault::Bug { kind, layer: None } => f.write_str(kind.name()),
            Fault::Bug {
                kind,
                layer: Some(l),
            } => write!(f, "{}@{l}", kind.name()),
        }
    }
}

impl Plan {
    /// A noise twin's plan: one-ulp jitter everywhere, f32 sums, tie flips at position
    /// `flip_at`.
    pub fn twin(seed: u64, flip_at: Option<usize>) -> Plan {
        Plan {
            jitter: Some(seed),
            flip_ties_at: flip_at,
            f32_sums: true,
            faults: Vec::new(),
        }
    }

    /// One-ulp jitter only.
    pub fn jitter(seed: u64) -> Plan {
        Plan {
            jitter: Some(seed),
            ..Plan::default()
        }
    }

    /// A plan with one fault.
    pub fn fault(f: Fault) -> Plan {
        Plan {
            faults: vec![f],
            ..Plan::default()
        }
    }

    /// The product of the scale faults on `tensor` (1 when none).
    pub(crate) fn tensor_factor(&self, tensor: &str) -> Option<f32> {
        let mut f = None;
        for fault in &self.faults {
            if let Fault::ScaleTensor { tensor: t, factor } = fault {
                if t == tensor {
                    f = Some(f.unwrap_or(1.0) * factor);
                }
            }
        }
        f
    }

    /// Whether bug `kind` acts at `layer` (`None`: a model-level op, where only bugs without
    /// a layer act).
    pub(crate) fn has(&self, kind: FaultKind, layer: Option<usize>) -> bool {
        self.faults.iter().any(|f| match f {
            Fault::Bug { kind: k, layer: l } => {
                *k == kind && (l.is_none() || (layer.is_some() && *l == layer))
            }
            Fault::ScaleTensor { .. } => false,
        })
    }

    /// Whether bug `kind` acts anywhere.
    pub fn has_anywhere(&self, kind: FaultKind) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f, Fault::Bug { kind: k, .. } if *k == kind))
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The id of an op output for the jitter hash: its tap tag and layer (`None`: model level).
pub(crate) fn op_id(tag: &str, layer: Option<usize>) -> u64 {
    let t = LAYER_TAGS.iter().position(|x| *x == tag).map_or_else(
        || 64 + tag.len() as u64 * 7 + tag.as_bytes()[0] as u64,
        |i| i as u64,
    );
    (layer.map_or(0xffff, |l| l as u64) << 8) | t
}

/// One ulp away from `x` towards +inf (`up`) or -inf; zero, non-finite and values at the
/// largest magnitude stay as they are: what [`jitter_row`] does to an element, written plainly
/// (its tests' reference).
#[cfg(test)]
fn nudge(x: f32, up: bool) -> f32 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let b = x.to_bits();
    // Away from zero means a larger magnitude: bits + 1 for either sign.
    let away = (x > 0.0) == up;
    let nb = if away { b + 1 } else { b - 1 };
    let y = f32::from_bits(nb);
    if y.is_finite() {
        y
    } else {
        x
    }
}

/// Jitter `row` (the values of op `op` at absolute position `pos`) with `seed`: element `i`
/// goes one ulp up where its hash's low bits are 1, down where 2 ([`nudge`]).
///
/// Without branches: which way an element goes is a coin toss, so a `match` on it and
/// [`nudge`]'s tests mispredicted about every other element; the same choices as selects
/// (`jitter_moves_exactly_as_nudge_does` checks them against [`nudge`]). 12% of a 2B-4T
/// comparison's samples in its noise twin and op replays (`perf record`), before.
pub(crate) fn jitter_row(seed: u64, op: u64, pos: usize, row: &mut [f32]) {
    let base = mix(seed ^ mix(op ^ ((pos as u64) << 24)));
    for (i, v) in row.iter_mut().enumerate() {
        let way = mix(base ^ i as u64) & 3;
        let (up, down) = (way == 1, way == 2);
        let x = *v;
        let b = x.to_bits();
        let away = (x > 0.0) == up;
        let y = f32::from_bits(if away {
            b.wrapping_add(1)
        } else {
            b.wrapping_sub(1)
        });
        let moves = (up || down) && x != 0.0 && x.is_finite() && y.is_finite();
        *v = if moves { y } else { x };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nudges_by_exactly_one_ulp() {
        for x in [1.0f32, -3.5, 1e-30, -7e20] {
            let up = nudge(x, true);
            let down = nudge(x, false);
            assert!(up > x && down < x, "{x}");
            assert_eq!(up.to_bits().abs_diff(x.to_bits()), 1);
            assert_eq!(down.to_bits().abs_diff(x.to_bits()), 1);
        }
        assert_eq!(nudge(0.0, true), 0.0);
        assert!(nudge(f32::NAN, true).is_nan());
        assert_eq!(nudge(f32::MAX, true), f32::MAX);
    }

    #[test]
    fn jitter_moves_exactly_as_nudge_does() {
        // Every class of value: zeros, subnormals at the bottom, the largest finite, the
        // non-finite, both signs; each element's way from the same hash as `jitter_row`'s.
        let specials = [
            0.0f32,
            -0.0,
            f32::from_bits(1),
            -f32::from_bits(1),
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1.0,
            -1.0,
        ];
        let row: Vec<f32> = (0..4096)
            .map(|i| specials[i % specials.len()] * if i % 7 == 0 { 3.0 } else { 1.0 })
            .collect();
        let (seed, op, pos) = (5, op_id("ffn_out", Some(2)), 9);
        let mut got = row.clone();
        jitter_row(seed, op, pos, &mut got);
        let base = mix(seed ^ mix(op ^ ((pos as u64) << 24)));
        for (i, (&x, &g)) in row.iter().zip(&got).enumerate() {
            let want = match mix(base ^ i as u64) & 3 {
                1 => nudge(x, true),
                2 => nudge(x, false),
                _ => x,
            };
            assert_eq!(g.to_bits(), want.to_bits(), "element {i} ({x:e})");
        }
    }

    #[test]
    fn jitter_moves_about_half_the_elements_deterministically() {
        let mut a = vec![1.0f32; 4096];
        jitter_row(7, op_id("Qcur", Some(3)), 11, &mut a);
        let moved = a.iter().filter(|&&x| x != 1.0).count();
        assert!((1800..2300).contains(&moved), "{moved}");
        let mut b = vec![1.0f32; 4096];
        jitter_row(7, op_id("Qcur", Some(3)), 11, &mut b);
        assert_eq!(a, b);
        let mut c = vec![1.0f32; 4096];
        jitter_row(7, op_id("Qcur", Some(3)), 12, &mut c);
        assert_ne!(a, c, "another position, other elements");
    }

    #[test]
    fn fault_specs_parse() {
        assert_eq!(
            Fault::parse("kv-one-short"),
            Ok(Fault::bug(FaultKind::KvOneShort))
        );
        assert_eq!(
            Fault::parse("layernorm@2"),
            Ok(Fault::Bug {
                kind: FaultKind::LayerNorm,
                layer: Some(2)
            })
        );
        for spec in [
            "layernorm@2",
            "kv-one-short",
            "scale:blk.0.attn_q.weight:1.5",
        ] {
            assert_eq!(Fault::parse(spec).unwrap().to_string(), spec);
        }
        assert!(Fault::parse("no-bos@1").is_err());
        assert!(Fault::parse("layernorm@x").is_err());
        assert_eq!(
            Fault::parse("scale:blk.2.ffn_down.weight:0.99"),
            Ok(Fault::ScaleTensor {
                tensor: "blk.2.ffn_down.weight".into(),
                factor: 0.99
            })
        );
        assert!(Fault::parse("scale:x").is_err());
        assert!(Fault::parse("scale::2").is_err());
        assert!(Fault::parse("scale:t:nan").is_err());
        assert!(Fault::parse("nope").is_err());
    }

    #[test]
    fn op_ids_differ() {
        let mut ids: Vec<u64> = LAYER_TAGS
            .iter()
            .flat_map(|t| (0..3).map(move |l| op_id(t, Some(l))))
            .collect();
        ids.extend([
            op_id("result_norm", None),
            op_id("result_output", None),
            op_id("embd", None),
        ]);
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
