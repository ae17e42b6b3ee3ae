//! Running backups over time: the configuration, schedules, the run history, notifications,
//! status and the runner that ties them together.

pub mod anomaly;
pub mod browse;
pub mod capacity;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod export;
pub mod first_use;
pub mod history;
pub mod history_fold;
pub mod job;
pub mod kinds;
pub mod notify;
pub mod outside;
pub mod password;
pub mod pending;
pub mod remotes;
pub mod runner;
pub mod schedule;
pub mod serve;
pub mod sink;
pub mod state;
pub mod status;
pub mod verify_pg;
pub mod verify_runs;
pub mod wal;

/// Serde helpers that write times as `to_rfc3339()` does ("+00:00", where chrono's own
/// `Serialize` writes "Z"): the form the JSON output has always had.
pub(crate) mod rfc3339 {
    use chrono::{DateTime, FixedOffset};
    use serde::Serializer;

    /// One time.
    pub fn one<S: Serializer>(t: &DateTime<FixedOffset>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    /// An optional time (`null` when absent).
    pub fn option<S: Serializer>(t: &Option<DateTime<FixedOffset>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.to_rfc3339()),
            None => s.serialize_none(),
        }
    }
}
