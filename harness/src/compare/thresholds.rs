//! Thresholds: how far the engine may sit from the oracle, per (weight format, numerics
//! profile, backend, tap class), read from a TOML file (`ci/thresholds.toml`, embedded as the
//! default).
//!
//! Format: a list of `[[rule]]` tables. Each rule selects with `format` (projection weight
//! format: `i2_s`, `tq2_0`, `tq1_0`, `f32`, ...), `profile` (the engine's numerics profile:
//! `bitnet-cpp`, `ggml`, `f32`), `backend` (`cpu`, ...) and `class` (see [`TapClass`], or
//! `logits`); each selector may be `*` (any) and defaults to `*`, except that `class = "*"`
//! covers every tap class but `logits` (which needs limits the others lack). A rule carries `max_nmse` and
//! `min_cosine` (required for tap classes and `logits`, whose tap is `result_output`), and for
//! `logits` also `max_kl` (nats) and `top1_must_agree`. Optional: `floor` (the measured noise
//! floor the limit was derived from), `reason`, `provisional` (defaults to the file's
//! top-level `provisional`).
//!
//! Lookup order: of the rules whose selectors all match, the most specific wins, where a
//! concrete `class` outweighs everything else, then `format`, then `profile`, then `backend`
//! (specificity = 8*class + 4*format + 2*profile + 1*backend, counting non-`*` selectors).
//! Two rules with identical selectors are a load error, so the winner is always unique, and the
//! loader requires a catch-all (`format`, `profile`, `backend` all `*`) for every class, so a
//! lookup never fails.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use xval_engine::numerics::Profile;
use xval_engine::quant::kernels::Backend;

use crate::error::{Error, Result};

/// The embedded copy of `ci/thresholds.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../../ci/thresholds.toml");

/// Where [`Thresholds::default`] says it came from.
pub const DEFAULT_SOURCE: &str = "ci/thresholds.toml (embedded)";

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
    /// Where the engine's kernels ran (`cpu`).
    #[schemars(with = "String")]
    pub backend: Backend,
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
    pub backend: String,
    pub class: String,
    pub max_nmse: Option<f64>,
    pub min_cosine: Option<f64>,
    /// Limit on the NMSE of the engine's op replayed on the oracle's own inputs (op-level).
    pub max_replay_nmse: Option<f64>,
    pub max_kl: Option<f64>,
    pub top1_must_agree: Option<bool>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    #[serde(default)]
    provisional: bool,
    #[serde(default)]
    rule: Vec<Rule>,
}

/// The limits for one tap class, as applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TapThreshold {
    /// Chained comparison: engine and oracle each fed by their own upstream.
    pub max_nmse: f64,
    pub min_cosine: f64,
    /// Op-level comparison: the engine's op replayed on the oracle's inputs (None: not judged).
    pub max_replay_nmse: Option<f64>,
    pub floor: Option<f64>,
    pub reason: Option<String>,
    pub provisional: bool,
    /// The selectors of the rule that supplied it (`format/profile/backend/class`).
    pub rule: String,
}

/// The limits for the logits, as applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogitThreshold {
    pub max_kl: f64,
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
    pub classes: BTreeMap<TapClass, TapThreshold>,
    pub logits: LogitThreshold,
}

impl AppliedThresholds {
    /// The limit for a tap name; taps outside the known tags use the `proj` limit, the tightest
    /// class that still tolerates matmul rounding.
    pub fn for_tap(&self, name: &str) -> &TapThreshold {
        let class = TapClass::of_name(name).unwrap_or(TapClass::Proj);
        &self.classes[&class]
    }
}

/// A loaded, checked thresholds file.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    pub source: String,
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
        if file.version != 1 {
            return Err(bad(format!(
                "version = {}: only version 1 is known",
                file.version
            )));
        }
        let mut seen: Vec<[&str; 4]> = Vec::new();
        for (i, r) in file.rule.iter().enumerate() {
            let at = format!(
                "rule[{i}] (format {}, profile {}, backend {}, class {})",
                r.format, r.profile, r.backend, r.class
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
            let sel = [&*r.format, &*r.profile, &*r.backend, &*r.class];
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
            need(r.max_nmse, "max_nmse")?;
            let cos = need(r.min_cosine, "min_cosine")?;
            if cos > 1.0 {
                return Err(bad(format!("{at}: min_cosine = {cos} is above 1")));
            }
            if class == Some(TapClass::Logits) {
                need(r.max_kl, "max_kl")?;
                if r.top1_must_agree.is_none() {
                    return Err(bad(format!("{at}: missing top1_must_agree")));
                }
            } else if r.max_kl.is_some() || r.top1_must_agree.is_some() {
                return Err(bad(format!(
                    "{at}: max_kl and top1_must_agree belong to class = \"logits\" only"
                )));
            }
        }
        let t = Thresholds {
            source: source.to_string(),
            rules: file.rule,
            file_provisional: file.provisional,
        };
        for class in TapClass::ALL {
            let catch_all = t.rules.iter().any(|r| {
                [&r.format, &r.profile, &r.backend]
                    .iter()
                    .all(|s| *s == "*")
                    && r.covers(class)
            });
            if !catch_all {
                return Err(bad(format!(
                    "no catch-all rule for class {} (format, profile and backend all \"*\"): \
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
                    && m(&r.backend, key.backend.name())
                    && r.covers(class)
            })
            .max_by_key(|r| {
                8 * (r.class != "*") as u8
                    + 4 * (r.format != "*") as u8
                    + 2 * (r.profile != "*") as u8
                    + (r.backend != "*") as u8
            })
    }

    /// Every limit for one comparison key.
    pub fn resolve(&self, key: &ThresholdKey) -> AppliedThresholds {
        let rule_for = |class| {
            self.find(key, class)
                .expect("parse checked a catch-all rule for every class")
        };
        let sel = |r: &Rule| format!("{}/{}/{}/{}", r.format, r.profile, r.backend, r.class);
        let mut classes = BTreeMap::new();
        for class in TapClass::ALL {
            let r = rule_for(class);
            classes.insert(
                class,
                TapThreshold {
                    max_nmse: r.max_nmse.expect("checked at load"),
                    min_cosine: r.min_cosine.expect("checked at load"),
                    max_replay_nmse: r.max_replay_nmse,
                    floor: r.floor,
                    reason: r.reason.clone(),
                    provisional: r.provisional.unwrap_or(self.file_provisional),
                    rule: sel(r),
                },
            );
        }
        let r = rule_for(TapClass::Logits);
        let logits = LogitThreshold {
            max_kl: r.max_kl.expect("checked at load"),
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
            backend: Backend::Cpu,
        }
    }

    const BASE: &str = r#"
version = 1
provisional = true
[[rule]]
class = "*"
max_nmse = 1e-3
min_cosine = 0.99
[[rule]]
class = "logits"
max_nmse = 1e-3
min_cosine = 0.99
max_kl = 1e-2
top1_must_agree = true
"#;

    #[test]
    fn embedded_default_is_valid_and_measured() {
        let t = Thresholds::default();
        let a = t.resolve(&key("tq2_0", "ggml"));
        assert!(!a.provisional, "tq2_0 limits come from measured floors");
        assert_eq!(a.classes.len(), TapClass::ALL.len());
        // Rounding-flip cascades can flip top-1 within the oracle's margin (TIE-FLIP).
        assert!(!a.logits.top1_must_agree);
        assert!(a.logits.max_kl > 0.0);
        for c in a.classes.values() {
            assert!(c.floor.is_some(), "{c:?}");
            assert_eq!(c.max_replay_nmse, Some(1e-10), "{c:?}");
        }
        // I2_S floors were measured against the ggml-graph oracle: nothing is provisional.
        assert!(!t.resolve(&key("i2_s", "ggml")).provisional);
        assert!(!t.resolve(&key("i2_s", "bitnet-cpp")).provisional);
    }

    #[test]
    fn most_specific_rule_wins() {
        let text = format!(
            "{BASE}
[[rule]]
format = \"i2_s\"
class = \"proj\"
max_nmse = 1e-5
min_cosine = 0.999
reason = \"i2_s proj\"
[[rule]]
profile = \"bitnet-cpp\"
class = \"proj\"
max_nmse = 1e-4
min_cosine = 0.999
provisional = false
[[rule]]
format = \"i2_s\"
class = \"*\"
max_nmse = 1e-6
min_cosine = 0.9999
"
        );
        let t = Thresholds::parse(&text, "t.toml").unwrap();
        let a = t.resolve(&key("i2_s", "bitnet-cpp"));
        // class + format (12) beats class + profile (10) beats format alone (4).
        assert_eq!(a.classes[&TapClass::Proj].max_nmse, 1e-5);
        assert_eq!(
            a.classes[&TapClass::Proj].reason.as_deref(),
            Some("i2_s proj")
        );
        assert_eq!(a.classes[&TapClass::Norm].max_nmse, 1e-6);
        let b = t.resolve(&key("tq2_0", "bitnet-cpp"));
        assert_eq!(b.classes[&TapClass::Proj].max_nmse, 1e-4);
        assert!(!b.classes[&TapClass::Proj].provisional);
        assert_eq!(b.classes[&TapClass::Norm].max_nmse, 1e-3);
        assert_eq!(b.logits.max_kl, 1e-2);
        assert_eq!(b.classes[&TapClass::Norm].rule, "*/*/*/*");
    }

    #[test]
    fn errors_name_the_file_and_the_rule() {
        let err = |text: &str| {
            Thresholds::parse(text, "ci/x.toml")
                .unwrap_err()
                .to_string()
        };
        let e = err("version = 2");
        assert!(e.contains("ci/x.toml") && e.contains("version"), "{e}");
        let e = err(&format!(
            "{BASE}[[rule]]\nclass = \"proj\"\nmin_cosine = 0.9\n"
        ));
        assert!(
            e.contains("rule[2]") && e.contains("missing max_nmse"),
            "{e}"
        );
        let e = err(&format!(
            "{BASE}[[rule]]\nclass = \"bogus\"\nmax_nmse = 1\nmin_cosine = 0.9\n"
        ));
        assert!(e.contains("unknown class 'bogus'"), "{e}");
        let e = err(&format!(
            "{BASE}[[rule]]\nclass = \"*\"\nmax_nmse = 1\nmin_cosine = 0.9\n"
        ));
        assert!(e.contains("same selectors"), "{e}");
        let e = err(&format!(
            "{BASE}[[rule]]\nclass = \"norm\"\nmax_nmse = 1\nmin_cosine = 0.9\nmax_kl = 1\n"
        ));
        assert!(e.contains("max_kl"), "{e}");
        let e = err(&format!(
            "{BASE}[[rule]]\nclass = \"norm\"\nmax_nmse = 1\nmin_cosine = 1.5\n"
        ));
        assert!(e.contains("above 1"), "{e}");
        let e = err("version = 1\n[[rule]]\nclass = \"*\"\nmax_nmse = 1\nmin_cosine = 0.9\n");
        assert!(e.contains("no catch-all rule for class logits"), "{e}");
        let e = err(&format!(
            "{BASE}[[rule]]\nclass = \"norm\"\nmax_nmse = 1\nmin_cosine = 0.9\ntypo = 1\n"
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
