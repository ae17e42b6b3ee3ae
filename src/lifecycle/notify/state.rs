//! What has been told, per subject (a backup type, "sync:REMOTE", "dead_man:TYPE"), kept between
//! runs so that a cron line every 10 minutes tells a person about a failure once, reminds at most
//! once per `remind_every`, and tells the recovery once.
//!
//! The state is a small JSON file, `notify.json` in the configuration's state directory outside
//! the repository (`lifecycle::state`): one record for failures before the repository opens and
//! after, so a wrong password is rate-limited like a failing type, and a dead-man alert sent while
//! the repository was out of reach is not sent again when it comes back. Earlier builds kept it
//! beside the history (`state/notify.json`); that file is taken over once. It is written whole to a
//! temporary name and renamed, so a crash leaves the old or the new state. A missing file is an
//! empty state; an unreadable one is logged and replaced: losing it costs one repeated notification,
//! never a backup.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, FixedOffset};
use serde::{Deserialize, Serialize};

use super::Event;
use crate::error::{Error, Result};
use crate::lifecycle::config::{FailureThreshold, NotifyConfig};
use crate::lifecycle::schedule::human_duration;

/// File format version written in `version`.
const VERSION: u32 = 1;

/// Whether `elapsed` counts as `period`: up to a hundredth of it (at most a minute) early, so that
/// a cron line keeps its time of day although each run takes a little longer or shorter than the
/// one that was told (a reminder would otherwise slip by a whole cron interval now and then).
fn reached(elapsed: Duration, period: Duration) -> bool {
    elapsed >= period - (period / 100).min(Duration::minutes(1))
}

/// How often to tell, from the `notify` configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Least time between two notifications about the same ongoing failure.
    pub remind_every: Duration,
    /// When an ongoing failure is escalated once ("failing repeatedly"); `None`: never.
    pub escalate: Option<FailureThreshold>,
}

impl Policy {
    /// The policy a configuration asks for (default: remind daily, no escalation).
    pub fn of(cfg: &NotifyConfig) -> Policy {
        Policy {
            remind_every: cfg.remind_every.map_or_else(|| Duration::days(1), |s| s.duration()),
            escalate: cfg.consecutive_failures,
        }
    }
}

/// One ongoing failure.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Streak {
    /// The first failed run of the streak.
    since: DateTime<FixedOffset>,
    /// Failed runs in the streak.
    failures: u32,
    /// The last error.
    error: String,
    /// When the owner was last told about it (failure, reminder or escalation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    told: Option<DateTime<FixedOffset>>,
    /// Whether the escalation was sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    escalated: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    #[serde(default)]
    failing: BTreeMap<String, Streak>,
}

/// The file name of the notification state in a state directory.
pub const NOTIFY_FILE: &str = "notify.json";

/// Where earlier builds kept the notification state: beside the history of the repository at
/// `repo_root`.
pub fn legacy_path(repo_root: &Path) -> PathBuf {
    repo_root.join("state").join(NOTIFY_FILE)
}

/// The state in the file at `path`: empty when missing, and (logged) when unreadable.
fn read(path: &Path) -> File {
    match std::fs::read(path) {
        Ok(b) => match serde_json::from_slice::<File>(&b) {
            Ok(f) if f.version == VERSION => f,
            Ok(f) => {
                tracing::warn!("{}: notification state version {} unknown, starting afresh", path.display(), f.version);
                File::default()
            }
            Err(e) => {
                tracing::warn!("{}: notification state unreadable ({e}), starting afresh", path.display());
                File::default()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
        Err(e) => {
            tracing::warn!("{}: notification state unreadable ({e}), starting afresh", path.display());
            File::default()
        }
    }
}

/// The notification state of one configuration.
#[derive(Debug)]
pub struct NotifyState {
    /// Where it is saved; `None`: nowhere to keep it (each run decides afresh).
    path: Option<PathBuf>,
    file: File,
    changed: bool,
    /// The file of an earlier build taken over: removed once the state is saved at `path`.
    adopted: Option<PathBuf>,
}

impl NotifyState {
    /// Loads the state at `path`; a missing file is an empty state, an unreadable one is logged
    /// and starts empty.
    pub fn load(path: &Path) -> NotifyState {
        NotifyState { path: Some(path.to_path_buf()), file: read(path), changed: false, adopted: None }
    }

    /// The state at `path`; while that file does not exist, the one an earlier build kept at
    /// `legacy` is read instead (what a user was told is not forgotten on upgrade), written to
    /// `path` on the next save and then removed.
    pub fn load_or_adopt(path: &Path, legacy: Option<&Path>) -> NotifyState {
        match legacy.filter(|l| !path.exists() && l.is_file()) {
            Some(l) => NotifyState { path: Some(path.into()), file: read(l), changed: true, adopted: Some(l.into()) },
            None => NotifyState::load(path),
        }
    }

    /// A state kept nowhere (no state directory can be derived): every run decides afresh.
    pub fn unsaved() -> NotifyState {
        NotifyState { path: None, file: File::default(), changed: false, adopted: None }
    }

    /// The state beside the run history of the repository at `repo_root`: for a repository
    /// synced without a configuration, which has no state directory.
    pub fn in_repository(repo_root: &Path) -> NotifyState {
        NotifyState::load(&legacy_path(repo_root))
    }

    /// Writes the state if it changed (temporary file, fsync, rename).
    pub fn save(&mut self) -> Result<()> {
        let Some(path) = self.path.as_deref().filter(|_| self.changed) else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        // Mode 0700 as the state directory it usually is (state.md): errors name paths and hosts.
        if !dir.is_dir() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| Error::io(dir, e))?;
        }
        self.file.version = VERSION;
        let bytes = serde_json::to_vec_pretty(&self.file).expect("serializable");
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(path, e)
        })?;
        self.changed = false;
        if let Some(old) = self.adopted.take().filter(|o| o != path) {
            // Taken over: left in place it would be read again if the new file were lost.
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!("{}: {e}", old.display());
            }
        }
        Ok(())
    }

    /// Whether `subject` is failing and the owner was told less than `every` before `now`: its
    /// own reminders are under way.
    pub fn told_within(&self, subject: &str, now: DateTime<FixedOffset>, every: Duration) -> bool {
        self.file.failing.get(subject).and_then(|s| s.told).is_some_and(|t| !reached(now - t, every))
    }

    /// A failed run of `subject` (`what` names it in messages, e.g. "db backup"): the events to
    /// send now. None while the owner was told less than `remind_every` ago. Call
    /// [`NotifyState::told`] once one of them was delivered.
    pub fn failed(
        &mut self,
        subject: &str,
        what: &str,
        now: DateTime<FixedOffset>,
        error: &str,
        policy: &Policy,
    ) -> Vec<Event> {
        self.changed = true;
        let s = self.file.failing.entry(subject.to_string()).or_insert_with(|| Streak {
            since: now,
            failures: 0,
            error: String::new(),
            told: None,
            escalated: false,
        });
        s.failures += 1;
        s.error = error.to_string();
        let mut out = Vec::new();
        let escalate = !s.escalated
            && match policy.escalate {
                Some(FailureThreshold::Runs(n)) => s.failures >= n,
                Some(FailureThreshold::For(d)) => reached(now - s.since, d.duration()),
                None => false,
            };
        let failing_for = human_duration(now - s.since);
        match s.told {
            None => out.push(Event::new("failure", subject, now, format!("{what} failed: {error}"))),
            // The escalation stands in for a reminder due at the same time.
            Some(_) if escalate => {}
            Some(t) if reached(now - t, policy.remind_every) => out.push(Event::new(
                "reminder",
                subject,
                now,
                format!("{what} still failing, for {failing_for} ({} failed runs); last error: {error}", s.failures),
            )),
            Some(_) => {}
        }
        if escalate {
            let msg = match policy.escalate {
                Some(FailureThreshold::Runs(n)) => {
                    format!("{what} has failed {n} times in a row; last error: {error}")
                }
                _ => format!(
                    "{what} has been failing for {failing_for} ({} failed runs); last error: {error}",
                    s.failures
                ),
            };
            out.push(Event::new("consecutive_failures", subject, now, msg));
        }
        out
    }

    /// Records that `ev` about `subject` reached the owner.
    pub fn told(&mut self, subject: &str, ev: &Event) {
        if let Some(s) = self.file.failing.get_mut(subject) {
            s.told = Some(ev.time);
            s.escalated |= ev.event == "consecutive_failures";
            self.changed = true;
        }
    }

    /// A successful run of `subject`: ends its streak, and a recovery event when the owner had
    /// been told of the failure.
    pub fn succeeded(&mut self, subject: &str, what: &str, now: DateTime<FixedOffset>) -> Option<Event> {
        let s = self.file.failing.remove(subject)?;
        self.changed = true;
        s.told?;
        Some(Event::new(
            "recovery",
            subject,
            now,
            format!(
                "{what} succeeded again after {} failed runs (failing for {})",
                s.failures,
                human_duration(now - s.since)
            ),
        ))
    }

    /// For a standing condition (e.g. "dead_man:db"): whether to tell now (never told, or told
    /// at least `every` ago); telling is recorded by [`NotifyState::told`] with `key`.
    pub fn condition_due(&mut self, key: &str, now: DateTime<FixedOffset>, every: Duration, msg: &str) -> bool {
        let s = self.file.failing.entry(key.to_string()).or_insert_with(|| {
            self.changed = true;
            Streak { since: now, failures: 0, error: msg.to_string(), told: None, escalated: false }
        });
        s.told.is_none_or(|t| reached(now - t, every))
    }

    /// A standing condition that no longer holds, with a recovery event (`message`) when the
    /// owner had been told of it.
    pub fn condition_recovered(&mut self, key: &str, now: DateTime<FixedOffset>, message: String) -> Option<Event> {
        let s = self.file.failing.remove(key)?;
        self.changed = true;
        s.told?;
        Some(Event::new("recovery", key, now, message))
    }

    /// A standing condition that no longer holds.
    pub fn condition_cleared(&mut self, key: &str) {
        self.changed |= self.file.failing.remove(key).is_some();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(mins: i64) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2030-01-01T00:00:00+00:00").unwrap() + Duration::minutes(mins)
    }

    /// Runs a 10-minute cron for `days` of failure, then one success: the events, told at once.
    fn cron(policy: &Policy, days: i64, st: &mut NotifyState) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        let mut m = 0;
        while m < days * 24 * 60 {
            for ev in st.failed("db", "db backup", at(m), "gone", policy) {
                st.told("db", &ev);
                out.push((m, ev.event));
            }
            m += 10;
        }
        if let Some(ev) = st.succeeded("db", "db backup", at(m)) {
            out.push((m, ev.event));
        }
        out
    }

    #[test]
    fn once_then_daily_then_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = NotifyState::load(&dir.path().join("n.json"));
        let p = Policy { remind_every: Duration::days(1), escalate: None };
        let ev = cron(&p, 3, &mut st);
        let want: Vec<(i64, String)> = [(0, "failure"), (1440, "reminder"), (2880, "reminder"), (4320, "recovery")]
            .iter()
            .map(|(m, e)| (*m, e.to_string()))
            .collect();
        assert_eq!(ev, want);
        // The escalation replaces the reminder it coincides with.
        let p = Policy { remind_every: Duration::days(1), escalate: Some("1d".parse().unwrap()) };
        let ev = cron(&p, 2, &mut st);
        assert_eq!(
            ev.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>(),
            ["failure", "consecutive_failures", "recovery"]
        );
        let p = Policy { remind_every: Duration::hours(12), escalate: Some("3".parse().unwrap()) };
        let ev = cron(&p, 1, &mut st);
        assert_eq!(
            ev,
            [(0, "failure"), (20, "consecutive_failures"), (740, "reminder"), (1440, "recovery")]
                .map(|(m, e)| (m, e.to_string()))
        );
    }

    #[test]
    fn survives_a_save_and_an_undelivered_event_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("n.json");
        let p = Policy { remind_every: Duration::days(1), escalate: None };
        let mut st = NotifyState::load(&path);
        assert_eq!(st.failed("db", "db backup", at(0), "x", &p).len(), 1);
        // Not delivered: told again on the next run.
        st.save().unwrap();
        let mut st = NotifyState::load(&path);
        let ev = st.failed("db", "db backup", at(10), "x", &p);
        assert_eq!(ev.len(), 1);
        st.told("db", &ev[0]);
        st.save().unwrap();
        let mut st = NotifyState::load(&path);
        assert!(st.told_within("db", at(20), Duration::days(1)));
        assert!(st.failed("db", "db backup", at(20), "x", &p).is_empty());
        std::fs::write(&path, b"{garbage").unwrap();
        assert!(!NotifyState::load(&path).told_within("db", at(20), Duration::days(1)));
    }
}
