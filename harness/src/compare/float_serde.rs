//! Serde for metric fields that may be NaN or infinite: JSON has no NaN/Inf, so receipts write
//! them as the strings `"nan"`, `"inf"`, `"-inf"` ([`float`], [`opt_float`]); [`FloatRepr`] is
//! that form for the JSON Schema.

use schemars::JsonSchema;

/// The JSON form of a metric (for the schema): a number, or one of the strings `"nan"`,
/// `"inf"`, `"-inf"` (see [`float`]).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum FloatRepr {
    Num(f64),
    NonFinite(NonFinite),
}

/// The non-finite values as [`float`] writes them.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub enum NonFinite {
    #[serde(rename = "nan")]
    Nan,
    #[serde(rename = "inf")]
    Inf,
    #[serde(rename = "-inf")]
    NegInf,
}

/// Serde for f64 fields that may be non-finite: JSON has no NaN/Inf, so those are written as
/// the strings `"nan"`, `"inf"`, `"-inf"` and read back from them.
pub mod float {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Str(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Str(s) => match s.as_str() {
                "nan" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(serde::de::Error::custom(format!(
                    "expected a number, \"nan\", \"inf\" or \"-inf\", got \"{s}\""
                ))),
            },
        }
    }
}

/// [`float`] for `Option<f64>` (`null` for `None`).
pub mod opt_float {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::float::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    struct Wrap(#[serde(with = "super::float")] f64);

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}
