//! The `verify` section: when `backup` and the daemon check the repository, how much data they
//! read and whether they restore-test the databases.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::lifecycle::schedule::Schedule;

/// A share of the packs to read in full: more than 0, at most 100 (`"10%"`, or `10`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percent(f64);

// Never NaN: FromStr only accepts values in (0, 100].
impl Eq for Percent {}

impl Percent {
    /// The value, in (0, 100].
    pub fn get(self) -> f64 {
        self.0
    }
}

impl FromStr for Percent {
    type Err = String;

    fn from_str(s: &str) -> Result<Percent, String> {
        let v: f64 = s
            .trim()
            .trim_end_matches('%')
            .trim_end()
            .parse()
            .map_err(|_| format!("expected a percentage such as \"10%\", not {s:?}"))?;
        if !(v > 0.0 && v <= 100.0) {
            return Err(format!("percentage must be in (0, 100], not {s:?}"));
        }
        Ok(Percent(v))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Percent, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The repository's verify schedule (`backup.verify`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// When it runs ("weekly sun 04:00"); a missed slot runs at the next `backup` or daemon round.
    pub schedule: Schedule,
    /// Packs to read in full each time (a different random sample each run); none: structure only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_data: Option<Percent>,
    /// Restore the latest snapshot of each SQLite type and check it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore_test: bool,
    /// How PostgreSQL types are restore-tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgRestoreConfig>,
}

/// `backup.verify.postgres`: where each PostgreSQL type's dump is restored to be tested.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgRestoreConfig {
    /// "auto" (the default: the type's server when its role may create databases, else a
    /// scratch cluster), "same-server" or "scratch".
    #[serde(default)]
    pub restore_on: crate::ops::restore_test::Place,
    /// Per type, overriding `restore_on`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub types: std::collections::BTreeMap<String, crate::ops::restore_test::Place>,
    /// The server binaries (initdb, pg_ctl, postgres) for scratch clusters; default: the newest
    /// /usr/lib/postgresql/N/bin, else the PATH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_bin: Option<std::path::PathBuf>,
}

impl VerifyConfig {
    /// What serde cannot check: (key relative to the section, message).
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.schedule == Schedule::OnChange {
            return Err(("schedule", "\"on-change\" does not apply to verify; use e.g. \"weekly sun 04:00\"".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        for (s, v) in [("10%", 10.0), ("100%", 100.0), ("0.5%", 0.5), ("25", 25.0), (" 5 % ", 5.0)] {
            assert_eq!(s.parse::<Percent>().map(Percent::get), Ok(v), "{s}");
        }
        for bad in ["0%", "101%", "-3%", "ten", "", "NaN%", "inf%"] {
            assert!(bad.parse::<Percent>().is_err(), "{bad}");
        }
        assert_eq!("10%".parse::<Percent>().unwrap().to_string(), "10%");
    }
}
