//! A configured length of time such as "30d", "12h", "2w", "90m" or "45s": parsed once when the
//! configuration loads, shown back exactly as written (`config check`, retention reasons).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The unit of a [`Span`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanUnit {
    /// "s"
    Seconds,
    /// "m"
    Minutes,
    /// "h"
    Hours,
    /// "d"
    Days,
    /// "w"
    Weeks,
    /// "y": 365 days (retention counts calendar years separately, with `keep_yearly`).
    Years,
}

impl SpanUnit {
    fn suffix(self) -> &'static str {
        match self {
            SpanUnit::Seconds => "s",
            SpanUnit::Minutes => "m",
            SpanUnit::Hours => "h",
            SpanUnit::Days => "d",
            SpanUnit::Weeks => "w",
            SpanUnit::Years => "y",
        }
    }

    fn seconds(self) -> i64 {
        match self {
            SpanUnit::Seconds => 1,
            SpanUnit::Minutes => 60,
            SpanUnit::Hours => 3600,
            SpanUnit::Days => 86_400,
            SpanUnit::Weeks => 7 * 86_400,
            SpanUnit::Years => 365 * 86_400,
        }
    }
}

/// A positive length of time: a count and a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    count: u32,
    unit: SpanUnit,
}

/// Why a text is not a [`Span`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration such as \"30d\"")]
pub struct SpanError(pub String);

impl Span {
    /// `count` units; `None` for zero.
    pub fn new(count: u32, unit: SpanUnit) -> Option<Span> {
        (count > 0).then_some(Span { count, unit })
    }

    /// The length as a chrono duration.
    pub fn duration(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::from(self.count) * self.unit.seconds())
    }
}

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(s: &str) -> Result<Span, SpanError> {
        let err = || SpanError(s.to_string());
        let t = s.trim();
        let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?);
        let count: u32 = num.parse().map_err(|_| err())?;
        let unit = match unit {
            "s" => SpanUnit::Seconds,
            "m" => SpanUnit::Minutes,
            "h" => SpanUnit::Hours,
            "d" => SpanUnit::Days,
            "w" => SpanUnit::Weeks,
            "y" => SpanUnit::Years,
            _ => return Err(err()),
        };
        Span::new(count, unit).ok_or_else(err)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.count, self.unit.suffix())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shows_back_and_rejects() {
        for (text, secs) in [("2d", 172_800), ("90m", 5_400), ("45s", 45), ("2w", 1_209_600), ("1y", 31_536_000)] {
            let s: Span = text.parse().unwrap();
            assert_eq!(s.duration().num_seconds(), secs, "{text}");
            assert_eq!(s.to_string(), text);
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(text));
        }
        assert_eq!(" 12h ".parse::<Span>().unwrap().to_string(), "12h");
        for bad in ["x", "0d", "5", "", "d", "-1d", "1.5h", "3 days", "99999999999d"] {
            let e = bad.parse::<Span>().unwrap_err();
            assert!(e.to_string().contains("is not a duration"), "{bad}: {e}");
        }
        let e = serde_json::from_value::<Span>(serde_json::json!("soon")).unwrap_err();
        assert!(e.to_string().contains("\"soon\" is not a duration"), "{e}");
    }
}
