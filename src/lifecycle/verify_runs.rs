//! Verification results count: every `verify` (by hand, or on the `backup.verify` schedule from
//! `backup` and the daemon) is recorded in the history and notified like a backup.
//!
//! Rows: one `verify` row for the repository check (`bytes_read`: bytes read in full) and one
//! `restore-test:TYPE` row per database restore-tested (`bytes_read`: bytes restored; its start
//! and end span that restore, so bytes / duration is the measured restore speed `status` shows).
//! A verify that finds damage is `failed`, its error text summarising the problems. The
//! notification subject is `verify`: the first failure is told at once, reminders at most once
//! per `remind_every`, the recovery once (`notify::NotifyState`).

use std::time::Instant;

use chrono::{DateTime, FixedOffset, Local};
use serde::Serialize;

use crate::error::Result;
use crate::lifecycle::clock::Clock;
use crate::lifecycle::config::{Config, VerifyConfig};
use crate::lifecycle::history::{History, Outcome, Run};
use crate::lifecycle::notify::{self, Policy};
use crate::lifecycle::schedule::{self, Due};
use crate::ops::verify::{VerifyOptions, VerifyReport};
use crate::repo::Repo;

/// The history type (and notification subject) of the repository check.
pub const VERIFY: &str = "verify";

/// The history type prefix of a database restore test: `restore-test:TYPE`.
pub const RESTORE_TEST: &str = "restore-test:";

/// How many problems the error text names before "and N more".
const NAMED_PROBLEMS: usize = 3;

/// One recorded verify.
#[derive(Debug)]
pub struct VerifyRun {
    /// The report; `Err` when verify could not finish (its error is recorded as the failure).
    pub report: std::result::Result<VerifyReport, crate::Error>,
    /// Seconds it took.
    pub duration_s: f64,
    /// Notifications that could not be delivered.
    pub notify_errors: Vec<String>,
}

/// A verify run by the schedule, as `backup` and the daemon report it.
#[derive(Debug, Serialize)]
pub struct ScheduledVerify {
    /// Why it ran ("slot ... passed since the last verify").
    pub reason: String,
    /// Found nothing wrong.
    pub ok: bool,
    /// Damage was found (`backup` exits 3).
    pub damaged: bool,
    /// The problems, or the error that stopped it.
    pub error: Option<String>,
    /// Packs read in full.
    pub packs_read: usize,
    /// Bytes read in full.
    pub bytes_read: u64,
    /// Database restore tests, with the bytes restored and the time each took.
    pub restore_tests: Vec<crate::ops::verify::RestoreTest>,
    /// Seconds it took.
    pub duration_s: f64,
    /// Notifications that could not be delivered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify_errors: Vec<String>,
}

/// The problems of a report in one line: the first few named, the rest counted.
pub fn summary(r: &VerifyReport) -> String {
    let all: Vec<String> = r
        .damaged_packs
        .iter()
        .map(|d| format!("pack {}: {} ({} chunks)", d.pack, d.problem, d.chunks.len()))
        .chain(r.problems.iter().cloned())
        .collect();
    let mut s =
        format!("repository DAMAGED: {}", all.iter().take(NAMED_PROBLEMS).cloned().collect::<Vec<_>>().join("; "));
    if all.len() > NAMED_PROBLEMS {
        s.push_str(&format!("; and {} more problems", all.len() - NAMED_PROBLEMS));
    }
    s
}

/// Verifies the repository (loading the index files the cache has not seen first), records the
/// run in its history and notifies through `cfg`'s channels (no configuration: recorded only).
/// A verify that cannot finish is recorded and notified as a failure too.
pub fn verify_and_record(repo: &mut Repo, cfg: Option<&Config>, opts: &VerifyOptions, clock: &dyn Clock) -> VerifyRun {
    let start = clock.now();
    let timer = Instant::now();
    let report = repo.sync_index().and_then(|_| crate::ops::verify::verify(repo, opts)).and_then(|mut r| {
        if opts.restore_test {
            crate::lifecycle::verify_pg::add(repo, cfg, &mut r)?;
        }
        Ok(r)
    });
    let end = clock.now();
    let duration_s = timer.elapsed().as_secs_f64();
    let run = |backup_type: String, start: &DateTime<Local>| {
        Run::new(backup_type, start.to_rfc3339(), end.to_rfc3339(), Outcome::Success)
    };
    let mut rows = vec![run(VERIFY.into(), &start)];
    match &report {
        Ok(r) => {
            rows[0].bytes_read = r.bytes_read;
            if r.is_damaged() {
                rows[0].result = Outcome::Failed;
                rows[0].error = Some(summary(r));
            }
            for t in &r.restore_tests {
                // The restore's own span, ending with the verify: bytes / (end - start) is its speed.
                let took = chrono::Duration::microseconds((t.duration_s * 1e6) as i64);
                let mut row = run(format!("{RESTORE_TEST}{}", t.backup_type), &(end - took));
                row.bytes_read = t.bytes;
                row.snapshot = Some(t.snapshot.to_hex());
                if !t.ok {
                    row.result = Outcome::Failed;
                    row.error = Some(if t.not_tested { format!("NOT TESTED: {}", t.detail) } else { t.detail.clone() });
                }
                rows.push(row);
            }
        }
        Err(e) => {
            rows[0].result = Outcome::Failed;
            rows[0].error = Some(format!("{UNFINISHED}{e}"));
        }
    }
    match History::open(repo.store().root()) {
        Ok(h) => {
            for row in &rows {
                if let Err(e) = h.record(row) {
                    tracing::warn!("{}: cannot record the run in the history: {e}", row.backup_type);
                }
            }
        }
        Err(e) => tracing::warn!("verify: cannot record the run in the history: {e}"),
    }
    let notify_errors = match cfg {
        Some(c) => tell(c, repo, &rows[0], end.fixed_offset()),
        None => Vec::new(),
    };
    VerifyRun { report, duration_s, notify_errors }
}

/// Notifies the outcome of the `verify` row through the configuration's notification state.
fn tell(cfg: &Config, repo: &Repo, row: &Run, now: DateTime<FixedOffset>) -> Vec<String> {
    let notify_cfg = cfg.backup.notify.clone().unwrap_or_default();
    let policy = Policy::of(&notify_cfg);
    let mut told = crate::lifecycle::state::notify_state_for(cfg, Some(repo.store().root()));
    let events = if row.result.failed() {
        told.failed(VERIFY, "verify", now, row.error.as_deref().unwrap_or_default(), &policy)
    } else {
        told.succeeded(VERIFY, "verify", now).into_iter().collect()
    };
    let mut errors = notify::deliver(&notify_cfg, &mut told, VERIFY, events);
    if let Err(e) = told.save() {
        errors.push(format!("notification state not saved: {e}"));
    }
    errors
}

/// How the error of a verify that could not finish (the repository locked, a read failing)
/// starts: such a run checked nothing, so the schedule tries again at the next run.
const UNFINISHED: &str = "verify could not finish: ";

/// The last verify in `history` that checked the repository (whatever it found: a verify that
/// found damage is not repeated every run; the damage stays reported until the next one). One
/// that could not finish checked nothing: it neither counts for the schedule (a lock clash would
/// skip a week) nor says the repository is damaged.
fn last_finished(history: &History) -> Result<Option<crate::lifecycle::history::Run>> {
    Ok(history
        .list(Some(VERIFY), 100)?
        .into_iter()
        .find(|r| !r.error.as_deref().is_some_and(|e| e.starts_with(UNFINISHED))))
}

/// The end of [`last_finished`].
pub fn last_verify(history: &History) -> Result<Option<DateTime<FixedOffset>>> {
    Ok(last_finished(history)?.and_then(|r| DateTime::parse_from_rfc3339(&r.end).ok()))
}

/// Whether the scheduled verify is due at `now`; `None` when no verify is scheduled. Like a
/// backup type's: a slot missed (machine off, no run) is made up by the next run, once.
pub fn due(cfg: &Config, history: &History, now: &DateTime<Local>) -> Result<Option<Due>> {
    let Some(v) = &cfg.backup.verify else { return Ok(None) };
    // A last verify dated after now (a clock that was ahead) is no evidence of one done.
    let last = last_verify(history)?.filter(|t| *t <= now.fixed_offset()).map(|t| t.with_timezone(&Local));
    let mut d = schedule::due(Some(&v.schedule), None, last, now);
    if last.is_none() {
        d.reason = "never verified".into();
    } else {
        d.reason = d.reason.replace("last success", "last verify");
    }
    Ok(Some(d))
}

/// The options a scheduled verify runs with; the sample seed changes every run so that over
/// time every pack is read.
pub fn options(v: &VerifyConfig, now: &DateTime<Local>) -> VerifyOptions {
    VerifyOptions {
        read_data: v.read_data.map(|p| p.get()),
        seed: now.timestamp_nanos_opt().unwrap_or_default() as u64 ^ u64::from(std::process::id()),
        restore_test: v.restore_test,
    }
}

/// Runs the scheduled verify when it is due (after the backups and the sync of a round);
/// `None` when none is scheduled or it is not due.
pub fn run_if_due(repo: &mut Repo, cfg: &Config, clock: &dyn Clock) -> Option<ScheduledVerify> {
    let v = cfg.backup.verify.as_ref()?;
    let now = clock.now();
    let d = match History::open(repo.store().root()).and_then(|h| due(cfg, &h, &now)) {
        Ok(Some(d)) if d.due => d,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!("verify: cannot read the history to decide whether it is due: {e}");
            return None;
        }
    };
    let r = verify_and_record(repo, Some(cfg), &options(v, &now), clock);
    let (ok, damaged, error, packs_read, bytes_read, restore_tests) = match &r.report {
        Ok(rep) => (
            !rep.is_damaged(),
            rep.is_damaged(),
            rep.is_damaged().then(|| summary(rep)),
            rep.packs_read,
            rep.bytes_read,
            rep.restore_tests.clone(),
        ),
        Err(e) => (false, false, Some(format!("{UNFINISHED}{e}")), 0, 0, Vec::new()),
    };
    Some(ScheduledVerify {
        reason: d.reason,
        ok,
        damaged,
        error,
        packs_read,
        bytes_read,
        restore_tests,
        duration_s: r.duration_s,
        notify_errors: r.notify_errors,
    })
}

/// The last verify, as `status` shows it.
#[derive(Debug, Serialize)]
pub struct VerifyStatus {
    /// When it ended.
    #[serde(serialize_with = "crate::lifecycle::rfc3339::one")]
    pub time: DateTime<FixedOffset>,
    /// It found nothing wrong.
    pub ok: bool,
    /// The problems, or the error that stopped it.
    pub error: Option<String>,
    /// Whether it restore-tested databases.
    pub restore_test: bool,
    /// When the schedule runs it next (none without a `verify` schedule).
    #[serde(serialize_with = "crate::lifecycle::rfc3339::option")]
    pub next_due: Option<DateTime<FixedOffset>>,
}

/// The last verify recorded in `history`, with the schedule's next due time (`cfg`'s).
pub fn status(history: &History, cfg: Option<&Config>, now: &DateTime<Local>) -> Result<Option<VerifyStatus>> {
    let Some(last) = last_finished(history)? else { return Ok(None) };
    let Ok(time) = DateTime::parse_from_rfc3339(&last.end) else { return Ok(None) };
    // The restore tests of that verify end when it does (verify_and_record).
    let restore_test = !history.recorded_with(last.id, RESTORE_TEST, &last.end)?.is_empty();
    let next_due = match cfg {
        Some(c) => due(c, history, now)?.map(|d| d.next),
        None => None,
    };
    Ok(Some(VerifyStatus { time, ok: !last.result.failed(), error: last.error, restore_test, next_due }))
}

/// The `status` text line of the last verify ("" when there was none).
pub fn render_status(v: Option<&VerifyStatus>) -> String {
    let Some(v) = v else { return String::new() };
    let at = crate::util::show_time::<FixedOffset>;
    let what = match (&v.error, v.ok) {
        (_, true) => "no errors found".to_string(),
        (Some(e), false) => format!("FAILED: {e}"),
        (None, false) => "FAILED".to_string(),
    };
    format!(
        "\nlast verify {}{}: {what}{}\n",
        at(&v.time),
        if v.restore_test { " (with restore test)" } else { "" },
        v.next_due.map(|n| format!("; next due {}", at(&n))).unwrap_or_default()
    )
}
