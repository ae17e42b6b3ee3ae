//! The `capacity` and `anomaly` sections: when a file system or a remote counts as low, and when
//! a backup is far enough outside its type's recent history to be told.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole percentage from 1 to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percent(u8);

impl Percent {
    /// The value.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match v.as_u64() {
            Some(n @ 1..=100) => Ok(Percent(n as u8)),
            _ => Err(serde::de::Error::custom(format!("{v} is not a whole percentage from 1 to 100"))),
        }
    }
}

/// A byte count written as a number of bytes or with a binary unit ("1MiB", "500KiB", "2GiB").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByteSize {
    bytes: u64,
    /// As written, when it was a string (shown back so by `config check`).
    text: Option<String>,
}

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// A size of `bytes`.
    pub const fn of(bytes: u64) -> ByteSize {
        ByteSize { bytes, text: None }
    }

    fn parse(s: &str) -> Option<u64> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(split);
        let n: u64 = n.parse().ok()?;
        let mul: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "TiB" | "T" => 1 << 40,
            _ => return None,
        };
        n.checked_mul(mul)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.text {
            Some(t) => f.write_str(t),
            None => write!(f, "{}", self.bytes),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.text {
            Some(t) => s.serialize_str(t),
            None => s.serialize_u64(self.bytes),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        if let Some(n) = v.as_u64() {
            return Ok(ByteSize::of(n));
        }
        match v.as_str().and_then(|s| ByteSize::parse(s).map(|b| (s, b))) {
            Some((s, bytes)) => Ok(ByteSize { bytes, text: Some(s.to_string()) }),
            None => Err(serde::de::Error::custom(format!(
                "{v} is not a size such as 1048576 or \"1MiB\" (units B, KiB, MiB, GiB, TiB)"
            ))),
        }
    }
}

/// When the repository's file system or a remote counts as low.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    /// Used share above which it is low (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_percent: Option<Percent>,
}

impl CapacityConfig {
    /// The default threshold.
    pub const DEFAULT_WARN_PERCENT: u8 = 80;

    /// The threshold in force.
    pub fn warn_percent(&self) -> u8 {
        self.warn_percent.map_or(Self::DEFAULT_WARN_PERCENT, Percent::get)
    }
}

/// When a backup is an anomaly against its type's recent successful runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Successful runs compared against (default 10; at least 3 are needed to judge).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "runs")]
    pub runs: Option<u32>,
    /// A logical size below this share of the median is an anomaly (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shrink_below_percent: Option<Percent>,
    /// New bytes above this multiple of the median are an anomaly (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "factor")]
    pub growth_factor: Option<u32>,
    /// Changes smaller than this are never an anomaly, so tiny types do not alarm (default 1MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bytes: Option<ByteSize>,
}

fn bounded<'de, D: Deserializer<'de>>(d: D, lo: u64, hi: u64, what: &str) -> Result<Option<u32>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match v.as_u64() {
        Some(n) if (lo..=hi).contains(&n) => Ok(Some(n as u32)),
        _ => Err(serde::de::Error::custom(format!("{v} is not {what} from {lo} to {hi}"))),
    }
}

fn runs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    bounded(d, AnomalyConfig::MIN_RUNS as u64, 1000, "a number of runs")
}

fn factor<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    bounded(d, 2, 1_000_000, "a whole factor")
}

impl AnomalyConfig {
    /// Fewest earlier successful runs a judgement needs.
    pub const MIN_RUNS: u32 = 3;

    /// Runs compared against.
    pub fn runs(&self) -> u32 {
        self.runs.unwrap_or(10)
    }
    /// Share of the median below which a logical size is an anomaly.
    pub fn shrink_below_percent(&self) -> u8 {
        self.shrink_below_percent.map_or(50, Percent::get)
    }
    /// Multiple of the median above which new bytes are an anomaly.
    pub fn growth_factor(&self) -> u32 {
        self.growth_factor.unwrap_or(10)
    }
    /// The floor under which nothing is an anomaly.
    pub fn min_bytes(&self) -> u64 {
        self.min_bytes.as_ref().map_or(1 << 20, ByteSize::bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_bounds() {
        let a: AnomalyConfig = serde_json::from_value(serde_json::json!({"min_bytes": "2MiB", "runs": 5})).unwrap();
        assert_eq!((a.min_bytes(), a.runs(), a.growth_factor()), (2 << 20, 5, 10));
        assert_eq!(serde_json::to_value(&a).unwrap()["min_bytes"], "2MiB");
        for bad in [
            serde_json::json!({"min_bytes": "2 parsecs"}),
            serde_json::json!({"runs": 2}),
            serde_json::json!({"growth_factor": 1}),
            serde_json::json!({"shrink_below_percent": 0}),
        ] {
            assert!(serde_json::from_value::<AnomalyConfig>(bad.clone()).is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<CapacityConfig>(serde_json::json!({"warn_percent": 101})).is_err());
        assert_eq!(CapacityConfig::default().warn_percent(), 80);
    }
}
