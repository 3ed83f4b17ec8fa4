//! Thresholds: how far the engine may sit from the oracle, read from a TOML file
//! (`ci/thresholds.toml`, embedded as the default). Format version 2.
//!
//! Two kinds of limit (docs/thresholds.md says why):
//! - **op level** (`max_replay_nmse`): the engine's op replayed on the oracle's own inputs;
//!   only that op's arithmetic differs, so the limit sits just above summation-order noise.
//! - **chained** (each side fed by its own upstream): a limit per tap derived at run time from
//!   the noise twin, `max(k * the twin's drift at that tap, chained_floor)`, with `k` (taps) and
//!   `kl_k` (logits KL) from the top-level `[chained]` table. Where the twin itself drifts past
//!   `informative_max_nmse` (chaotic depth), the chained comparison carries no information and
//!   only the op-level judgement applies there.
//!
//! Per-class limits come from `[[rule]]` tables. Each rule selects with `format` (projection
//! weight format: `i2_s`, `tq2_0`, `tq1_0`, `f32`, `f16`, ...), `profile` (the engine's
//! numerics profile: `bitnet-cpp`, `ggml`, `f32`), `kv` (the engine's KV type, `f32` or `f16`),
//! `backend` (`cpu`) and `class` (see [`TapClass`], or `logits`); each selector may be `*` (any)
//! and defaults to `*`, except that `class = "*"` covers every tap class but `logits`. A rule
//! carries `max_replay_nmse` and `chained_floor` (NMSE), and for `logits` also `kl_floor`
//! (nats) and `top1_must_agree`. Optional: `floor` (the measured op-level noise floor the limit
//! was derived from), `reason`, `provisional` (defaults to the file's top-level `provisional`).
//!
//! Lookup order: of the rules whose selectors all match, the most specific wins, where a
//! concrete `class` outweighs everything else, then `format`, then `profile`, then `kv`, then
//! `backend` (specificity = 16*class + 8*format + 4*profile + 2*kv + 1*backend, counting
//! non-`*` selectors). Two rules with identical selectors are a load error, so the winner is
//! always unique, and the loader requires a catch-all (every selector but `class` `*`) for
//! every class, so a lookup never fails.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use xval_engine::numerics::{KvType, Profile};
use xval_engine::quant::kernels::Backend;

use crate::error::{Error, Result};

/// The embedded copy of `ci/thresholds.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../../ci/thresholds.toml");

/// Where [`Thresholds::default`] says it came from.
pub const DEFAULT_SOURCE: &str = "ci/thresholds.toml (embedded)";

/// The thresholds format this code reads.
pub const FORMAT_VERSION: u32 = 2;

/// Tap classes: taps of one class share a threshold.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TapClass {
    /// attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm, result_norm.
    Norm,
    /// Qcur, Kcur, Vcur, attn_out, ffn_up(_s), ffn_gate(_s), ffn_down.
    Proj,
    /// kqv_out.
    Attn,
    /// ffn_sub_out.
    Act,
    /// ffn_inp, l_out.
    Residual,
    /// result_output (and the per-position logit metrics).
    Logits,
}

impl TapClass {
    pub const ALL: [TapClass; 6] = [
        TapClass::Norm,
        TapClass::Proj,
        TapClass::Attn,
        TapClass::Act,
        TapClass::Residual,
        TapClass::Logits,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TapClass::Norm => "norm",
            TapClass::Proj => "proj",
            TapClass::Attn => "attn",
            TapClass::Act => "act",
            TapClass::Residual => "residual",
            TapClass::Logits => "logits",
        }
    }

    pub fn parse(s: &str) -> Option<TapClass> {
        TapClass::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The class of a tap tag (`"Qcur"`, not `"Qcur-0"`); `None` for tags outside
    /// `xval_engine::taps`.
    pub fn of_tag(tag: &str) -> Option<TapClass> {
        Some(match tag {
            "attn_norm" | "attn_sub_norm" | "ffn_norm" | "ffn_sub_norm" | "result_norm" => {
                TapClass::Norm
            }
            "Qcur" | "Kcur" | "Vcur" | "attn_out" | "ffn_up" | "ffn_up_s" | "ffn_gate"
            | "ffn_gate_s" | "ffn_down" => TapClass::Proj,
            "kqv_out" => TapClass::Attn,
            "ffn_sub_out" => TapClass::Act,
            "ffn_inp" | "l_out" => TapClass::Residual,
            "result_output" => TapClass::Logits,
            _ => return None,
        })
    }

    /// The class of a tap name (`"Qcur-0"`).
    pub fn of_name(name: &str) -> Option<TapClass> {
        TapClass::of_tag(xval_engine::taps::split_name(name).0)
    }
}

/// What a comparison is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ThresholdKey {
    /// Projection weight format (`i2_s`, `tq2_0`, ...), lower case.
    pub format: String,
    /// The engine's numerics profile.
    #[schemars(with = "String")]
    pub profile: Profile,
    /// The engine's KV-cache type (the oracle's, when the numerics are matched).
    #[schemars(with = "String")]
    pub kv: KvType,
    /// Where the engine's kernels ran (`cpu`).
    #[schemars(with = "String")]
    pub backend: Backend,
}

/// The top-level `[chained]` table: how chained limits follow the noise twin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainedScheme {
    /// A tap's chained NMSE limit is `k` times the noise twin's largest NMSE at that tap (over
    /// the prompt positions and decode steps), or the class's `chained_floor` when larger.
    pub k: f64,
    /// The logits' KL limit is `kl_k` times the twin's largest KL, or `kl_floor` when larger.
    pub kl_k: f64,
    /// A tap whose twin drift exceeds this NMSE carries no information in a chained
    /// comparison (rounding noise alone decorrelates it): only its op-level replay is judged.
    pub informative_max_nmse: f64,
    pub reason: Option<String>,
}

/// One `[[rule]]` as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default = "star")]
    pub format: String,
    #[serde(default = "star")]
    pub profile: String,
    #[serde(default = "star")]
    pub kv: String,
    #[serde(default = "star")]
    pub backend: String,
    pub class: String,
    /// Limit on the NMSE of the engine's op replayed on the oracle's own inputs (op-level).
    pub max_replay_nmse: Option<f64>,
    /// The smallest chained NMSE limit a tap of this class gets, whatever the twin says.
    pub chained_floor: Option<f64>,
    /// `logits` only: the smallest KL limit.
    pub kl_floor: Option<f64>,
    /// `logits` only: whether a top-1 change within the noise (TIE-FLIP) fails.
    pub top1_must_agree: Option<bool>,
    /// The measured op-level floor the limit was derived from.
    pub floor: Option<f64>,
    pub reason: Option<String>,
    pub provisional: Option<bool>,
}

fn star() -> String {
    "*".into()
}

impl Rule {
    /// Whether the rule's class selector covers `class` (`*` covers every class but `logits`).
    fn covers(&self, class: TapClass) -> bool {
        self.class == class.name() || (self.class == "*" && class != TapClass::Logits)
    }

    fn selectors(&self) -> [&str; 4] {
        [&self.format, &self.profile, &self.kv, &self.backend]
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    #[serde(default)]
    provisional: bool,
    chained: Option<ChainedScheme>,
    #[serde(default)]
    rule: Vec<Rule>,
}

/// The limits for one tap class, as applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TapThreshold {
    /// Op-level comparison: the engine's op replayed on the oracle's inputs.
    pub max_replay_nmse: f64,
    /// The smallest chained NMSE limit (the twin-derived one is used when larger).
    pub chained_floor: f64,
    pub floor: Option<f64>,
    pub reason: Option<String>,
    pub provisional: bool,
    /// The selectors of the rule that supplied it (`format/profile/kv/backend/class`).
    pub rule: String,
}

/// The limits for the logits, as applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogitThreshold {
    /// The smallest KL limit (the twin-derived one is used when larger).
    pub kl_floor: f64,
    pub top1_must_agree: bool,
    pub floor: Option<f64>,
    pub reason: Option<String>,
    pub provisional: bool,
    pub rule: String,
}

/// Every limit a comparison with one key uses: what the receipt records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AppliedThresholds {
    /// The file they came from.
    pub source: String,
    pub key: ThresholdKey,
    /// Whether any applied limit is provisional (not yet derived from a measured floor).
    pub provisional: bool,
    pub chained: ChainedScheme,
    pub classes: BTreeMap<TapClass, TapThreshold>,
    pub logits: LogitThreshold,
}

impl AppliedThresholds {
    /// The limits for a tap name; taps outside the known tags use the `proj` limits, the
    /// tightest class that still tolerates matmul rounding.
    pub fn for_tap(&self, name: &str) -> &TapThreshold {
        let class = TapClass::of_name(name).unwrap_or(TapClass::Proj);
        &self.classes[&class]
    }
}

/// A loaded, checked thresholds file.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    pub source: String,
    pub chained: ChainedScheme,
    pub rules: Vec<Rule>,
    file_provisional: bool,
}

impl Default for Thresholds {
    /// The embedded `ci/thresholds.toml` (checked by a unit test).
    fn default() -> Self {
        Thresholds::parse(DEFAULT_TOML, DEFAULT_SOURCE)
            .expect("the embedded ci/thresholds.toml is valid (unit-tested)")
    }
}

impl Thresholds {
    /// Read and check a thresholds file.
    pub fn load(path: &Path) -> Result<Thresholds> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Thresholds::parse(&text, &path.display().to_string())
    }

    /// Parse and check thresholds TOML; `source` names the file in errors.
    pub fn parse(text: &str, source: &str) -> Result<Thresholds> {
        let bad = |reason: String| Error::bad_file(source, reason);
        let file: File = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if file.version != FORMAT_VERSION {
            return Err(bad(format!(
                "version = {}: this harness reads version {FORMAT_VERSION} (chained limits \
                 from the noise twin; docs/thresholds.md)",
                file.version
            )));
        }
        let chained = file.chained.ok_or_else(|| {
            bad("missing the [chained] table (k, kl_k, informative_max_nmse)".into())
        })?;
        for (key, v) in [
            ("k", chained.k),
            ("kl_k", chained.kl_k),
            ("informative_max_nmse", chained.informative_max_nmse),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(format!(
                    "[chained] {key} = {v} must be a positive number"
                )));
            }
        }
        let mut seen: Vec<[&str; 5]> = Vec::new();
        for (i, r) in file.rule.iter().enumerate() {
            let at = format!(
                "rule[{i}] (format {}, profile {}, kv {}, backend {}, class {})",
                r.format, r.profile, r.kv, r.backend, r.class
            );
            let class = if r.class == "*" {
                None
            } else {
                Some(TapClass::parse(&r.class).ok_or_else(|| {
                    bad(format!(
                        "{at}: unknown class '{}' (expected norm, proj, attn, act, residual, \
                         logits or *)",
                        r.class
                    ))
                })?)
            };
            if r.kv != "*" && KvType::parse(&r.kv).is_err() {
                return Err(bad(format!("{at}: kv must be f32, f16 or *")));
            }
            let sel = [&*r.format, &*r.profile, &*r.kv, &*r.backend, &*r.class];
            if seen.contains(&sel) {
                return Err(bad(format!(
                    "{at}: a rule with the same selectors comes earlier"
                )));
            }
            seen.push(sel);
            let need = |v: Option<f64>, key: &str| -> Result<f64> {
                let v = v.ok_or_else(|| bad(format!("{at}: missing {key}")))?;
                if v.is_nan() || v < 0.0 {
                    return Err(bad(format!(
                        "{at}: {key} = {v} must be a non-negative number"
                    )));
                }
                Ok(v)
            };
            need(r.max_replay_nmse, "max_replay_nmse")?;
            need(r.chained_floor, "chained_floor")?;
            if class == Some(TapClass::Logits) {
                need(r.kl_floor, "kl_floor")?;
                if r.top1_must_agree.is_none() {
                    return Err(bad(format!("{at}: missing top1_must_agree")));
                }
            } else if r.kl_floor.is_some() || r.top1_must_agree.is_some() {
                return Err(bad(format!(
                    "{at}: kl_floor and top1_must_agree belong to class = \"logits\" only"
                )));
            }
        }
        let t = Thresholds {
            source: source.to_string(),
            chained,
            rules: file.rule,
            file_provisional: file.provisional,
        };
        for class in TapClass::ALL {
            let catch_all = t
                .rules
                .iter()
                .any(|r| r.selectors().iter().all(|s| *s == "*") && r.covers(class));
            if !catch_all {
                return Err(bad(format!(
                    "no catch-all rule for class {} (format, profile, kv and backend all \"*\"): \
                     every class needs one",
                    class.name()
                )));
            }
        }
        Ok(t)
    }

    /// The most specific rule for `key` and `class` (see the module docs).
    fn find(&self, key: &ThresholdKey, class: TapClass) -> Option<&Rule> {
        let m = |sel: &str, v: &str| sel == "*" || sel.eq_ignore_ascii_case(v);
        self.rules
            .iter()
            .filter(|r| {
                m(&r.format, &key.format)
                    && m(&r.profile, key.profile.name())
                    && m(&r.kv, key.kv.name())
                    && m(&r.backend, key.backend.name())
                    && r.covers(class)
            })
            .max_by_key(|r| {
                16 * (r.class != "*") as u8
                    + 8 * (r.format != "*") as u8
                    + 4 * (r.profile != "*") as u8
                    + 2 * (r.kv != "*") as u8
                    + (r.backend != "*") as u8
            })
    }

    /// Every limit for one comparison key.
    pub fn resolve(&self, key: &ThresholdKey) -> AppliedThresholds {
        let rule_for = |class| {
            self.find(key, class)
                .expect("parse checked a catch-all rule for every class")
        };
        let sel = |r: &Rule| {
            format!(
                "{}/{}/{}/{}/{}",
                r.format, r.profile, r.kv, r.backend, r.class
            )
        };
        let mut classes = BTreeMap::new();
        for class in TapClass::ALL {
            let r = rule_for(class);
            classes.insert(
                class,
                TapThreshold {
                    max_replay_nmse: r.max_replay_nmse.expect("checked at load"),
                    chained_floor: r.chained_floor.expect("checked at load"),
                    floor: r.floor,
                    reason: r.reason.clone(),
                    provisional: r.provisional.unwrap_or(self.file_provisional),
                    rule: sel(r),
                },
            );
        }
        let r = rule_for(TapClass::Logits);
        let logits = LogitThreshold {
            kl_floor: r.kl_floor.expect("checked at load"),
            top1_must_agree: r.top1_must_agree.expect("checked at load"),
            floor: r.floor,
            reason: r.reason.clone(),
            provisional: r.provisional.unwrap_or(self.file_provisional),
            rule: sel(r),
        };
        let provisional =
            logits.provisional || classes.values().any(|c: &TapThreshold| c.provisional);
        AppliedThresholds {
            source: self.source.clone(),
            key: key.clone(),
            provisional,
            chained: self.chained.clone(),
            classes,
            logits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(format: &str, profile: &str) -> ThresholdKey {
        ThresholdKey {
            format: format.into(),
            profile: Profile::parse(profile).unwrap(),
            kv: KvType::F32,
            backend: Backend::Cpu,
        }
    }

    const BASE: &str = r#"
version = 2
provisional = true
[chained]
k = 10
kl_k = 10
informative_max_nmse = 0.05
[[rule]]
class = "*"
max_replay_nmse = 1e-10
chained_floor = 1e-10
[[rule]]
class = "logits"
max_replay_nmse = 1e-10
chained_floor = 1e-10
kl_floor = 1e-8
top1_must_agree = false
"#;

    #[test]
    fn embedded_default_is_valid_and_measured() {
        let t = Thresholds::default();
        let a = t.resolve(&key("tq2_0", "ggml"));
        assert!(!a.provisional, "tq2_0 limits come from measured floors");
        assert_eq!(a.classes.len(), TapClass::ALL.len());
        // Rounding-flip cascades can flip top-1 within the noise (TIE-FLIP).
        assert!(!a.logits.top1_must_agree);
        assert!(a.logits.kl_floor > 0.0);
        assert!(a.chained.k > 1.0 && a.chained.kl_k > 1.0);
        for c in a.classes.values() {
            assert!(c.floor.is_some(), "{c:?}");
            assert!(c.max_replay_nmse <= 1e-9, "{c:?}");
            assert!(c.chained_floor >= c.max_replay_nmse, "{c:?}");
        }
        for k in [
            key("i2_s", "ggml"),
            key("i2_s", "bitnet-cpp"),
            ThresholdKey {
                kv: KvType::F16,
                ..key("i2_s", "bitnet-cpp")
            },
        ] {
            assert!(!t.resolve(&k).provisional, "{k:?}");
        }
    }

    #[test]
    fn most_specific_rule_wins() {
        let text = format!(
            "{BASE}
[[rule]]
format = \"i2_s\"
class = \"proj\"
max_replay_nmse = 1e-12
chained_floor = 1e-12
reason = \"i2_s proj\"
[[rule]]
profile = \"bitnet-cpp\"
class = \"proj\"
max_replay_nmse = 1e-11
chained_floor = 1e-11
provisional = false
[[rule]]
kv = \"f16\"
class = \"attn\"
max_replay_nmse = 1e-9
chained_floor = 1e-9
[[rule]]
format = \"i2_s\"
class = \"*\"
max_replay_nmse = 1e-13
chained_floor = 1e-13
"
        );
        let t = Thresholds::parse(&text, "t.toml").unwrap();
        let a = t.resolve(&key("i2_s", "bitnet-cpp"));
        // class + format (24) beats class + profile (20) beats format alone (8).
        assert_eq!(a.classes[&TapClass::Proj].max_replay_nmse, 1e-12);
        assert_eq!(
            a.classes[&TapClass::Proj].reason.as_deref(),
            Some("i2_s proj")
        );
        assert_eq!(a.classes[&TapClass::Norm].max_replay_nmse, 1e-13);
        let b = t.resolve(&key("tq2_0", "bitnet-cpp"));
        assert_eq!(b.classes[&TapClass::Proj].max_replay_nmse, 1e-11);
        assert!(!b.classes[&TapClass::Proj].provisional);
        assert_eq!(b.classes[&TapClass::Norm].max_replay_nmse, 1e-10);
        assert_eq!(b.logits.kl_floor, 1e-8);
        assert_eq!(b.classes[&TapClass::Norm].rule, "*/*/*/*/*");
        // The KV type selects too.
        assert_eq!(b.classes[&TapClass::Attn].max_replay_nmse, 1e-10);
        let f16 = t.resolve(&ThresholdKey {
            kv: KvType::F16,
            ..key("tq2_0", "ggml")
        });
        assert_eq!(f16.classes[&TapClass::Attn].max_replay_nmse, 1e-9);
    }

    #[test]
    fn errors_name_the_file_and_the_rule() {
        let err = |text: &str| {
            Thresholds::parse(text, "ci/x.toml")
                .unwrap_err()
                .to_string()
        };
        let e = err("version = 1");
        assert!(e.contains("ci/x.toml") && e.contains("version"), "{e}");
        let e = err("version = 2\n[[rule]]\nclass = \"*\"\n");
        assert!(e.contains("[chained]"), "{e}");
        let e = err(&BASE.replace("k = 10\n", "k = -1\n"));
        assert!(e.contains("[chained] k"), "{e}");
        let e = err(&format!(
            "{BASE}[[rule]]\nclass = \"proj\"\nchained_floor = 0.1\n"
        ));
        assert!(
            e.contains("rule[2]") && e.contains("missing max_replay_nmse"),
            "{e}"
        );
        let e = err(&format!(
            "{BASE}[[rule]]\nclass = \"bogus\"\nmax_replay_nmse = 1\nchained_floor = 1\n"
        ));
        assert!(e.contains("unknown class 'bogus'"), "{e}");
        let e = err(&format!(
            "{BASE}[[rule]]\nclass = \"*\"\nmax_replay_nmse = 1\nchained_floor = 1\n"
        ));
        assert!(e.contains("same selectors"), "{e}");
        let e = err(&format!(
            "{BASE}[[rule]]\nclass = \"norm\"\nmax_replay_nmse = 1\nchained_floor = 1\nkl_floor = 1\n"
        ));
        assert!(e.contains("kl_floor"), "{e}");
        let e = err(&format!(
            "{BASE}[[rule]]\nclass = \"norm\"\nkv = \"q8\"\nmax_replay_nmse = 1\nchained_floor = 1\n"
        ));
        assert!(e.contains("kv must be"), "{e}");
        let e = err(&format!(
            "{BASE}[[rule]]\nclass = \"norm\"\nmax_replay_nmse = -1\nchained_floor = 1\n"
        ));
        assert!(e.contains("non-negative"), "{e}");
        let e = err("version = 2\n[chained]\nk = 1\nkl_k = 1\ninformative_max_nmse = 1\n[[rule]]\nclass = \"*\"\nmax_replay_nmse = 1\nchained_floor = 1\n");
        assert!(e.contains("no catch-all rule for class logits"), "{e}");
        let e = err(&format!(
            "{BASE}[[rule]]\nclass = \"norm\"\nmax_replay_nmse = 1\nchained_floor = 1\ntypo = 1\n"
        ));
        assert!(e.contains("typo"), "{e}");
    }

    #[test]
    fn classes_of_every_tag() {
        for tag in xval_engine::taps::LAYER_TAGS
            .iter()
            .chain(&xval_engine::taps::FINAL_TAGS)
        {
            assert!(TapClass::of_tag(tag).is_some(), "{tag} has no class");
        }
        assert_eq!(TapClass::of_name("ffn_up_s-3"), Some(TapClass::Proj));
        assert_eq!(TapClass::of_name("result_output"), Some(TapClass::Logits));
        assert_eq!(TapClass::of_name("kqv_out-0"), Some(TapClass::Attn));
    }
}
