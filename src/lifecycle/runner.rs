//! The lifecycle of `backup` and `daemon`: decide which types are due, run them with retries,
//! record every run in the history, notify, then apply retention and prune.

use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Local};
use serde::Serialize;

use crate::ops::snapshot::SnapshotOutcome;
use crate::lifecycle::config::{parse_duration, Config, TypeConfig};
use crate::error::Result;
use crate::lifecycle::history::{History, Outcome, Run};
use crate::id::SnapshotId;
use crate::lifecycle::job::{run_type, RunFlags};
use crate::format::manifest::Snapshot;
use crate::lifecycle::notify::{self, Event};
use crate::ops::prune::{self, PruneOptions, PruneReport};
use crate::repo::Repo;
use crate::lifecycle::schedule::{self, human_duration, Schedule};

/// Attempts for a transient failure (the first try plus retries).
pub const MAX_RETRIES: u32 = 3;

/// How `backup` runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Run regardless of schedules.
    pub now: bool,
    /// Only these types (empty = all).
    pub types: Vec<String>,
    /// Per-run switches.
    pub flags: RunFlags,
    /// First retry delay; doubles each retry (CAIRN_RETRY_BASE_MS overrides, for tests).
    pub retry_base: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        let ms = std::env::var("CAIRN_RETRY_BASE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
        RunOptions { now: false, types: Vec::new(), flags: RunFlags::default(), retry_base: Duration::from_millis(ms) }
    }
}

/// One type's result.
#[derive(Debug, Serialize)]
pub struct TypeResult {
    /// Type.
    pub backup_type: String,
    /// Why it ran.
    pub reason: String,
    /// Outcome.
    pub result: Outcome,
    /// Snapshot (new, or the unchanged parent).
    pub snapshot: Option<String>,
    /// Statistics of the snapshot.
    pub stats: Option<crate::format::manifest::Stats>,
    /// Per-file errors recorded in the snapshot.
    pub file_errors: Vec<crate::format::manifest::NodeError>,
    /// Error text.
    pub error: Option<String>,
    /// Retries used.
    pub retries: u32,
    /// Seconds.
    pub duration_s: f64,
}

/// What one `backup` invocation did.
#[derive(Debug, Serialize, Default)]
pub struct BackupReport {
    /// Types that ran.
    pub ran: Vec<TypeResult>,
    /// Types skipped as not due, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Retention decisions applied (removed snapshot ids).
    pub forgotten: Vec<String>,
    /// Prune report if prune ran.
    pub prune: Option<PruneReport>,
    /// Maintenance error (forget/prune), never fatal to the backups.
    pub maintenance_error: Option<String>,
    /// Notifications that could not be delivered.
    pub notify_errors: Vec<String>,
    /// Remote syncs after the backup.
    pub sync: Vec<SyncOutcome>,
}

/// One remote's sync after a backup.
#[derive(Debug, Serialize, Default)]
pub struct SyncOutcome {
    /// Remote name.
    pub remote: String,
    /// Files uploaded.
    pub uploaded: usize,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Files deleted on the remote.
    pub deleted: usize,
    /// Files on the remote cairn did not write.
    pub foreign: Vec<String>,
    /// Error, if the sync failed.
    pub error: Option<String>,
    /// Full report.
    pub report: Option<crate::ops::sync::SyncReport>,
}

impl BackupReport {
    /// Whether any type failed (or stored a snapshot with unreadable files).
    pub fn failed(&self) -> usize {
        self.ran.iter().filter(|r| r.result == Outcome::Failed || !r.file_errors.is_empty()).count()
    }
}

/// The last success of a type: the history's, or failing that the newest snapshot's time.
/// `snaps` is the repository's snapshot list, loaded once by the caller (reading it decrypts
/// every snapshot file).
pub fn last_success(
    history: &History,
    snaps: &[(SnapshotId, Snapshot)],
    backup_type: &str,
) -> Result<Option<DateTime<FixedOffset>>> {
    let h = history.last_success(backup_type)?;
    let s = snaps
        .iter()
        .rev()
        .find(|(_, s)| s.backup_type == backup_type && s.errors.is_empty())
        .and_then(|(_, s)| s.datetime());
    Ok(match (h, s) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    })
}

/// Due decision for a configured type now.
pub fn due_now(t: &TypeConfig, last: Option<DateTime<FixedOffset>>) -> schedule::Due {
    let sched = t.schedule.as_deref().and_then(Schedule::parse);
    let catch_up = t.catch_up_after.as_deref().and_then(parse_duration);
    let now = Local::now();
    schedule::due(sched.as_ref(), catch_up, last.map(|t| t.with_timezone(&Local)), &now)
}

/// The recovery point objective of a type: `rpo`, else its schedule interval, else one day.
pub fn rpo(t: &TypeConfig) -> chrono::Duration {
    t.rpo
        .as_deref()
        .and_then(parse_duration)
        .or_else(|| t.schedule.as_deref().and_then(Schedule::parse).map(|s| s.interval()))
        .unwrap_or_else(|| chrono::Duration::days(1))
}

fn run_with_retries(repo: &mut Repo, name: &str, t: &TypeConfig, opts: &RunOptions) -> (Result<SnapshotOutcome>, u32) {
    let mut retries = 0;
    loop {
        match run_type(repo, name, t, opts.flags) {
            Err(e) if e.is_transient() && retries < MAX_RETRIES => {
                let wait = opts.retry_base * 2u32.pow(retries);
                tracing::warn!("{name}: {e}; retrying in {:.1}s", wait.as_secs_f64());
                std::thread::sleep(wait);
                retries += 1;
            }
            r => return (r, retries),
        }
    }
}

/// Runs the due (or all, with `now`) types.
pub fn run_backups(repo: &mut Repo, cfg: &Config, opts: &RunOptions) -> Result<BackupReport> {
    let history = History::open(repo.store.root())?;
    let mut report = BackupReport::default();
    let notify_cfg = cfg.backup.notify.clone().unwrap_or_default();
    let threshold = notify_cfg.consecutive_failures.unwrap_or(3);
    let mut succeeded = Vec::new();
    // Due decisions only look at what existed before this run.
    let (snaps, _) = if opts.now { (Vec::new(), Vec::new()) } else { repo.snapshots()? };
    for (name, t) in &cfg.types {
        if !opts.types.is_empty() && !opts.types.contains(name) {
            continue;
        }
        let reason = if opts.now {
            "--now".to_string()
        } else {
            let d = due_now(t, last_success(&history, &snaps, name)?);
            if !d.due {
                report.skipped.push((name.clone(), d.reason));
                continue;
            }
            d.reason
        };
        let start = Local::now();
        let clock = Instant::now();
        let (r, retries) = run_with_retries(repo, name, t, opts);
        let end = Local::now();
        let mut run = Run {
            id: 0,
            backup_type: name.clone(),
            start: start.to_rfc3339(),
            end: end.to_rfc3339(),
            result: Outcome::Failed,
            error: None,
            files: 0,
            bytes_read: 0,
            bytes_added: 0,
            snapshot: None,
            retries,
        };
        let failures_before = history.consecutive_failures(name)?;
        let mut tr = TypeResult {
            backup_type: name.clone(),
            reason,
            result: Outcome::Failed,
            snapshot: None,
            stats: None,
            file_errors: Vec::new(),
            error: None,
            retries,
            duration_s: clock.elapsed().as_secs_f64(),
        };
        match r {
            Ok(o) => {
                let complete = o.snapshot.errors.is_empty();
                run.result = match (o.written, complete) {
                    (false, _) => Outcome::Unchanged,
                    (true, true) => Outcome::Success,
                    (true, false) => Outcome::Failed,
                };
                if !complete {
                    run.error = Some(format!("{} entries could not be read", o.snapshot.errors.len()));
                }
                run.files = o.snapshot.stats.files;
                run.bytes_read = o.snapshot.stats.logical_bytes;
                run.bytes_added = if o.written { o.snapshot.stats.new_bytes } else { 0 };
                run.snapshot = Some(o.id.to_hex());
                tr.result = run.result;
                tr.snapshot = run.snapshot.clone();
                tr.error = run.error.clone();
                tr.stats = Some(o.snapshot.stats.clone());
                tr.file_errors = o.snapshot.errors.clone();
                if complete && o.written {
                    succeeded.push(name.clone());
                }
            }
            Err(e) => {
                tracing::error!("{name}: backup failed: {e}");
                run.error = Some(e.to_string());
                tr.error = run.error.clone();
            }
        }
        history.record(&run)?;
        // Notifications.
        let mut events = Vec::new();
        if run.result == Outcome::Failed {
            events.push(Event::new(
                "failure",
                name,
                format!("{name} backup failed: {}", run.error.clone().unwrap_or_default()),
            ));
            if failures_before + 1 == threshold {
                events.push(Event::new(
                    "consecutive_failures",
                    name,
                    format!(
                        "{name} backup has failed {threshold} times in a row; last error: {}",
                        run.error.clone().unwrap_or_default()
                    ),
                ));
            }
        } else if failures_before > 0 {
            events.push(Event::new(
                "recovery",
                name,
                format!("{name} backup succeeded again after {failures_before} failed runs"),
            ));
        }
        if run.result != Outcome::Failed {
            history.clear_alert(name, "dead_man")?;
        }
        for ev in events {
            report.notify_errors.extend(notify::send(&notify_cfg, &ev));
        }
        report.ran.push(tr);
    }
    report.notify_errors.extend(dead_man_check(repo, cfg, &history)?);
    // Retention and prune for the types that just succeeded; failures here never fail the backup.
    if !succeeded.is_empty() && cfg.backup.forget_after_backup.unwrap_or(true) {
        let policy = |t: &str| cfg.type_config(t).and_then(|c| c.retention.clone());
        match prune::forget(repo, Some(&succeeded), &policy, false) {
            Ok(decisions) => {
                report.forgotten = decisions.iter().filter(|d| !d.keep).map(|d| d.id.clone()).collect();
                if !report.forgotten.is_empty() && cfg.backup.prune_after_backup.unwrap_or(true) {
                    match prune::prune(repo, PruneOptions::default()) {
                        Ok(p) => report.prune = Some(p),
                        Err(e) => report.maintenance_error = Some(format!("prune: {e}")),
                    }
                }
            }
            Err(e) => report.maintenance_error = Some(format!("forget: {e}")),
        }
        if let Some(e) = &report.maintenance_error {
            tracing::warn!("{e}");
        }
    }
    Ok(report)
}

/// Alerts once a day per type whose last success is older than twice its RPO (or its
/// catch_up_after, if longer).
pub fn dead_man_check(repo: &Repo, cfg: &Config, history: &History) -> Result<Vec<String>> {
    let notify_cfg = cfg.backup.notify.clone().unwrap_or_default();
    let now = Local::now().fixed_offset();
    let mut errors = Vec::new();
    let (snaps, _) = repo.snapshots()?;
    for (name, t) in &cfg.types {
        if t.schedule.is_none() {
            continue;
        }
        let limit =
            (rpo(t) * 2).max(t.catch_up_after.as_deref().and_then(parse_duration).unwrap_or(chrono::Duration::zero()));
        let last = last_success(history, &snaps, name)?;
        let stale = match last {
            Some(l) => now - l > limit,
            // Never succeeded: stale once its first run is older than the limit (a first
            // failure is reported as a failure, not at once as a dead man as well).
            None => history.first_run(name)?.is_some_and(|f| now - f > limit),
        };
        if !stale {
            continue;
        }
        if history.last_alert(name, "dead_man")?.is_some_and(|a| now - a < chrono::Duration::days(1)) {
            continue;
        }
        let msg = match last {
            Some(l) => {
                format!("no successful {name} backup in {} (limit {})", human_duration(now - l), human_duration(limit))
            }
            None => format!("no successful {name} backup yet"),
        };
        errors.extend(notify::send(&notify_cfg, &Event::new("dead_man", name, msg)));
        history.set_alert(name, "dead_man", &now.to_rfc3339())?;
    }
    Ok(errors)
}
