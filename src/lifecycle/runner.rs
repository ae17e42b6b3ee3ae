//! The lifecycle of `backup` and `daemon`: decide which types are due, run them with retries,
//! record every run in the history, notify, then apply retention and prune.

use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Local};
use serde::Serialize;

use crate::error::Result;
use crate::format::manifest::Snapshot;
use crate::id::SnapshotId;
use crate::lifecycle::clock::Clock;
use crate::lifecycle::config::{Config, TypeConfig};
use crate::lifecycle::history::{History, Outcome, Run};
use crate::lifecycle::job::{run_type, RunFlags};
use crate::lifecycle::notify::{self, Event, NotifyState, Policy};
use crate::lifecycle::schedule::{self, human_duration, Schedule};
use crate::ops::prune::{self, PruneOptions, PruneReport};
use crate::ops::snapshot::SnapshotOutcome;
use crate::ops::snapshot_set::SnapshotSet;
use crate::repo::Repo;

/// Attempts for a transient failure (the first try plus retries).
pub const MAX_RETRIES: u32 = 3;

/// The first retry delay of a transient failure when the caller gives none.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(5);

/// How `backup` runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Run regardless of schedules.
    pub now: bool,
    /// Only these types (empty = all).
    pub types: Vec<String>,
    /// Per-run switches.
    pub flags: RunFlags,
    /// First retry delay of a transient failure; doubles each retry.
    pub retry_base: Duration,
    /// Take the types as pre-change or manual snapshots (`backup --kind`).
    pub take_as: Option<crate::ops::kinds::TakeAs>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            now: false,
            types: Vec::new(),
            flags: RunFlags::default(),
            retry_base: DEFAULT_RETRY_BASE,
            take_as: None,
        }
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
    #[serde(serialize_with = "crate::id::as_hex::option")]
    pub snapshot: Option<SnapshotId>,
    /// Statistics of the snapshot.
    pub stats: Option<crate::format::manifest::Stats>,
    /// Per-file errors recorded in the snapshot.
    pub file_errors: Vec<crate::format::manifest::NodeError>,
    /// Error text.
    pub error: Option<String>,
    /// Warnings about a run that stored its snapshot (a clock that looks wrong, unreadable
    /// snapshot files); also in the history row's error text.
    pub warnings: Vec<String>,
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
    /// Snapshots removed by retention.
    #[serde(serialize_with = "crate::id::as_hex::list")]
    pub forgotten: Vec<SnapshotId>,
    /// Prune report if prune ran.
    pub prune: Option<PruneReport>,
    /// Maintenance error (forget/prune), never fatal to the backups.
    pub maintenance_error: Option<String>,
    /// Notifications that could not be delivered.
    pub notify_errors: Vec<String>,
    /// Remote syncs after the backup.
    pub sync: Vec<SyncOutcome>,
    /// The configured export after the backups (`export` in the config), if it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<crate::lifecycle::export::AfterBackup>,
    /// Snapshot files of the repository that could not be read (each named, with the reason):
    /// the backups ran, but the repository is damaged (`repair snapshots`).
    pub unreadable_snapshots: Vec<String>,
    /// The scheduled verify, when it was due (run after the backups and the sync).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<crate::lifecycle::verify_runs::ScheduledVerify>,
    /// Room in the repository's file system and the remotes (`lifecycle::capacity`).
    pub capacity: Option<crate::lifecycle::capacity::CapacityStatus>,
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
    /// Notifications about this sync that could not be delivered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify_errors: Vec<String>,
}

impl BackupReport {
    /// How many types failed (stored no snapshot).
    pub fn failed(&self) -> usize {
        self.ran.iter().filter(|r| r.result == Outcome::Failed).count()
    }
    /// How many types stored a snapshot with unreadable files.
    pub fn partial(&self) -> usize {
        self.ran.iter().filter(|r| r.result == Outcome::Partial).count()
    }
}

/// The last success of a type: the history's, or failing that the newest snapshot's time.
/// `snaps` is the repository's snapshot list, loaded once by the caller (reading it decrypts
/// every snapshot file). Times later than `now` are not evidence of a success (a clock that was
/// ahead): a snapshot dated next year must not make the type look done until then.
pub fn last_success(
    history: &History,
    snaps: &[(SnapshotId, Snapshot)],
    backup_type: &str,
    now: &DateTime<Local>,
) -> Result<Option<DateTime<FixedOffset>>> {
    let now = now.fixed_offset();
    let h = history.last_success(backup_type)?.filter(|t| *t <= now);
    let s = snaps
        .iter()
        .rev()
        .filter(|(_, s)| s.backup_type == backup_type && s.errors.is_empty())
        .find_map(|(_, s)| s.datetime().filter(|t| *t <= now));
    Ok(match (h, s) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    })
}

/// Due decision for a configured type at `now`.
pub fn due_now(t: &TypeConfig, last: Option<DateTime<FixedOffset>>, now: &DateTime<Local>) -> schedule::Due {
    let catch_up = t.catch_up_after.map(|c| c.duration());
    schedule::due(t.schedule.as_ref(), catch_up, last.map(|t| t.with_timezone(&Local)), now)
}

/// How the daemon paces its rounds.
#[derive(Clone, Copy, Debug)]
pub struct DaemonTiming {
    /// Longest wait between rounds (schedules and the dead-man check are looked at again).
    pub idle: chrono::Duration,
    /// Wait before an on-change type is checked again, and before a type that is still due
    /// after a round (it failed) is tried again: never at once, or a failing type would spin.
    pub recheck: chrono::Duration,
}

impl Default for DaemonTiming {
    fn default() -> Self {
        DaemonTiming { idle: chrono::Duration::minutes(60), recheck: chrono::Duration::minutes(5) }
    }
}

/// When the daemon's next round is due, after a round that ended at `now`.
pub fn next_round(
    cfg: &Config,
    history: &History,
    snaps: &[(SnapshotId, Snapshot)],
    now: &DateTime<Local>,
    timing: DaemonTiming,
) -> Result<DateTime<FixedOffset>> {
    let now_f = now.fixed_offset();
    let mut next = now_f + timing.idle;
    for (name, t) in &cfg.types {
        if t.schedule == Some(Schedule::OnChange) {
            next = next.min(now_f + timing.recheck);
            continue;
        }
        let d = due_now(t, last_success(history, snaps, name, now)?, now);
        next = next.min(if d.due { now_f + timing.recheck } else { d.next });
    }
    Ok(next)
}

fn run_with_retries(
    repo: &mut Repo,
    name: &str,
    t: &TypeConfig,
    opts: &RunOptions,
    parent: Option<(SnapshotId, Snapshot)>,
    next_seq: u64,
    clock: &dyn Clock,
) -> (Result<SnapshotOutcome>, u32) {
    let mut retries = 0;
    loop {
        match run_type(
            repo,
            name,
            t,
            opts.flags,
            Some(parent.clone()),
            Some((clock.now(), next_seq)),
            opts.take_as.as_ref(),
        ) {
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

/// Runs the due (or all, with `now`) types at the time `clock` gives. `set` is the repository's
/// snapshot set, brought up to date here and kept so (new snapshots go in, forgotten ones out),
/// so the caller can pass it on (sync exclusions, status) and a daemon can keep it across rounds.
pub fn run_backups(
    repo: &mut Repo,
    cfg: &Config,
    opts: &RunOptions,
    set: &mut SnapshotSet,
    clock: &dyn Clock,
) -> Result<BackupReport> {
    run_backups_to(repo, cfg, opts, set, clock, &mut ())
}

/// [`run_backups`], telling `sink` of each type as it finishes.
pub fn run_backups_to(
    repo: &mut Repo,
    cfg: &Config,
    opts: &RunOptions,
    set: &mut SnapshotSet,
    clock: &dyn Clock,
    sink: &mut dyn crate::lifecycle::sink::RunSink,
) -> Result<BackupReport> {
    let history = History::open(repo.store().root())?;
    let mut report = BackupReport::default();
    let notify_cfg = cfg.backup.notify.clone().unwrap_or_default();
    let policy = Policy::of(&notify_cfg);
    // Kept outside the repository: one record with the failures before it opens (lifecycle::outside).
    // Read afresh before each use and saved right after: a run can take an hour, and another
    // cairn (a `sync`, a `verify`) may record what it told meanwhile.
    let root = repo.store().root().to_path_buf();
    let told_now = || crate::lifecycle::state::notify_state_for(cfg, Some(&root));
    let host = crate::util::hostname();
    let mut succeeded = Vec::new();
    // Due decisions only look at what existed before this run.
    set.refresh(repo)?;
    report.unreadable_snapshots = set
        .unreadable()
        .iter()
        .map(|(id, e)| format!("{}: {e}", repo.objects().location(crate::store::Handle::Snapshot(*id))))
        .collect();
    let mut taken = Vec::new();
    let now = clock.now();
    let mut due = Vec::new();
    for (name, t) in &cfg.types {
        if !opts.types.is_empty() && !opts.types.contains(name) {
            continue;
        }
        if opts.now {
            due.push((name, t, "--now".to_string()));
            continue;
        }
        let d = due_now(t, last_success(&history, set.all(), name, &now)?, &now);
        if d.due {
            due.push((name, t, d.reason));
        } else {
            report.skipped.push((name.clone(), d.reason));
        }
    }
    for (name, t, reason) in due {
        // A listing, not a read: only snapshots written meanwhile by another process are read.
        set.refresh(repo)?;
        let parent = crate::ops::snapshot::parent_in(set.all(), name, &host);
        let start = clock.now();
        let timer = Instant::now();
        let (r, retries) = run_with_retries(repo, name, t, opts, parent, set.next_seq(), clock);
        let end = clock.now();
        let mut run = Run { retries, ..Run::new(name.clone(), start.to_rfc3339(), end.to_rfc3339(), Outcome::Failed) };
        let mut tr = TypeResult {
            backup_type: name.clone(),
            reason,
            result: Outcome::Failed,
            snapshot: None,
            stats: None,
            file_errors: Vec::new(),
            error: None,
            warnings: Vec::new(),
            retries,
            duration_s: timer.elapsed().as_secs_f64(),
        };
        let mut anomalies = Vec::new();
        match r {
            Ok(o) => {
                let complete = o.snapshot.errors.is_empty();
                run.result = match (o.written, complete) {
                    (false, _) => Outcome::Unchanged,
                    (true, true) => Outcome::Success,
                    (true, false) => Outcome::Partial,
                };
                if !complete {
                    run.error = Some(format!("{} entries could not be read", o.snapshot.errors.len()));
                }
                run.files = o.snapshot.stats.files;
                run.bytes_read = o.snapshot.stats.logical_bytes;
                run.bytes_added = if o.written { o.snapshot.stats.new_bytes } else { 0 };
                run.snapshot = Some(o.id.to_hex());
                tr.result = run.result;
                tr.snapshot = Some(o.id);
                tr.error = run.error.clone();
                tr.stats = Some(o.snapshot.stats.clone());
                tr.file_errors = o.snapshot.errors.clone();
                if complete && o.written {
                    succeeded.push(name.clone());
                }
                if o.written {
                    tr.warnings = clock_warnings(set.all(), &o.snapshot, &start);
                    if let Some(w) = o.snapshot.source.get("postgres.globals_warning") {
                        tr.warnings.push(w.clone());
                    }
                    let policy = cfg.backup.anomaly.clone().unwrap_or_default();
                    anomalies = crate::lifecycle::anomaly::check(&history, name, &o.snapshot.stats, &policy);
                    tr.warnings.extend(anomalies.iter().cloned());
                    taken.push(o.id);
                    set.insert(o.id, o.snapshot);
                }
                if !report.unreadable_snapshots.is_empty() {
                    tr.warnings.push(format!(
                        "{} unreadable snapshot files in the repository (run `cairn repair snapshots`): {}",
                        report.unreadable_snapshots.len(),
                        report.unreadable_snapshots.join("; ")
                    ));
                }
                if run.error.is_none() && !tr.warnings.is_empty() {
                    run.error = Some(format!("warning: {}", tr.warnings.join("; ")));
                }
            }
            Err(e) => {
                // Not logged here: the caller prints the result (the CLI's "FAILED" line), once.
                run.error = Some(e.to_string());
                tr.error = run.error.clone();
            }
        }
        // The history is local bookkeeping: a full disk must not hide the run's own error.
        if let Err(e) = history.record(&run) {
            tracing::warn!("{name}: cannot record the run in the history: {e}");
        }
        // Notifications: the state decides what is told now (first failure, daily reminder,
        // recovery once). A partial snapshot counts as a failure here.
        let what = format!("{name} backup");
        let mut told = told_now();
        let mut events = if run.result.failed() {
            told.failed(name, &what, end.fixed_offset(), run.error.as_deref().unwrap_or_default(), &policy)
        } else {
            told.condition_cleared(&format!("dead_man:{name}"));
            told.succeeded(name, &what, end.fixed_offset()).into_iter().collect()
        };
        if notify_cfg.on_success && run.result == Outcome::Success {
            events.push(Event::new("success", name, end, success_message(&what, &tr)));
        }
        events.extend(anomalies.into_iter().map(|m| Event::new("anomaly", name, end, m)));
        report.notify_errors.extend(notify::deliver(&notify_cfg, &mut told, name, events));
        if let Err(e) = told.save() {
            report.notify_errors.push(format!("notification state not saved: {e}"));
        }
        sink.type_done(&tr);
        report.ran.push(tr);
    }
    let now = clock.now();
    let mut told = told_now();
    // A dead-man check that cannot read its evidence must not cost this run's other steps.
    match dead_man_check(cfg, &history, &mut told, set.all(), &now) {
        Ok(errors) => report.notify_errors.extend(errors),
        Err(e) => report.notify_errors.push(format!("dead-man check: {e}")),
    }
    report.notify_errors.extend(crate::lifecycle::kinds::verification_alerts(cfg, &mut told, set.all(), &now));
    if let Err(e) = told.save() {
        report.notify_errors.push(format!("notification state not saved: {e}"));
    }
    // Retention and prune for the types that just succeeded; failures here never fail the backup.
    if !succeeded.is_empty() && cfg.backup.forget_after_backup.unwrap_or(true) {
        let policy = |t: &str| cfg.type_config(t).and_then(|c| c.retention.clone());
        match prune::forget_in(repo, set, Some(&succeeded), &policy, now.fixed_offset(), false, &taken) {
            Ok(decisions) => {
                report.forgotten = decisions.iter().filter(|d| !d.keep).map(|d| d.id).collect();
                if !report.forgotten.is_empty() && cfg.backup.prune_after_backup.unwrap_or(true) {
                    match prune::prune_in(repo, PruneOptions::default(), set) {
                        Ok(p) => report.prune = Some(p),
                        Err(e) => report.maintenance_error = Some(format!("prune: {e}")),
                    }
                }
            }
            Err(e) => report.maintenance_error = Some(format!("forget: {e}")),
        }
    }
    // After retention, so the export prunes what it removed.
    if let Some(x) = cfg.backup.export.as_ref().filter(|_| !taken.is_empty()) {
        report.export = Some(crate::lifecycle::export::after_backup(repo, cfg, x, set, &taken));
    }
    Ok(report)
}

/// What looks wrong with the clock when `new` (of its type, taken at `now`) is committed after
/// `before` (the repository's snapshots): a snapshot of the type dated later than the new one.
/// Either the clock is behind now (a device without RTC before NTP) or it was ahead then; both
/// snapshots are kept (retention never removes the newest by commit order) and this says so.
fn clock_warnings(before: &[(SnapshotId, Snapshot)], new: &Snapshot, now: &DateTime<Local>) -> Vec<String> {
    let Some(t) = new.datetime() else { return Vec::new() };
    let later: Vec<&(SnapshotId, Snapshot)> = before
        .iter()
        .filter(|(_, s)| s.backup_type == new.backup_type && s.datetime().is_some_and(|x| x > t))
        .collect();
    let Some((id, newest)) = later.iter().max_by_key(|(_, s)| s.datetime()) else { return Vec::new() };
    vec![format!(
        "clock anomaly: this snapshot is dated {} (the clock now says {}), earlier than {} existing {} \
         snapshot{} (newest {} dated {}): the clock is behind, or was ahead then; the snapshots are kept \
         and this one is the latest",
        new.time,
        now.to_rfc3339(),
        later.len(),
        new.backup_type,
        if later.len() == 1 { "" } else { "s" },
        id.short(),
        newest.time
    )]
}

/// "db backup: snapshot 1a2b3c4d saved, 12 files, 3.4 MiB read, 1.2 MiB new, 0.42s".
fn success_message(what: &str, tr: &TypeResult) -> String {
    let h = crate::util::human_bytes;
    let snap = tr.snapshot.map(|s| s.short()).unwrap_or_default();
    match &tr.stats {
        Some(s) => format!(
            "{what}: snapshot {snap} saved, {} files, {} read, {} new, {:.2}s",
            s.files,
            h(s.logical_bytes),
            h(s.new_bytes),
            tr.duration_s
        ),
        None => format!("{what}: snapshot {snap} saved, {:.2}s", tr.duration_s),
    }
}

/// One scheduled type's dead-man verdict, shared by this check and the one run from the state
/// outside the repository: a message when its last success is older than twice its RPO (or its
/// catch_up_after, if longer). A type that never succeeded is overdue once its first run is
/// older than that (a first failure is reported as a failure, not at once as a dead man too).
fn overdue(
    name: &str,
    t: &TypeConfig,
    last: Option<DateTime<FixedOffset>>,
    first_run: impl FnOnce() -> Result<Option<DateTime<FixedOffset>>>,
    now: DateTime<FixedOffset>,
) -> Result<Option<String>> {
    let limit = (t.rpo() * 2).max(t.catch_up_after.map_or_else(chrono::Duration::zero, |c| c.duration()));
    let stale = match last {
        Some(l) => now - l > limit,
        None => first_run()?.is_some_and(|f| now - f > limit),
    };
    Ok(stale.then(|| match last {
        Some(l) => {
            format!("no successful {name} backup in {} (limit {})", human_duration(now - l), human_duration(limit))
        }
        None => format!("no successful {name} backup yet"),
    }))
}

/// Alerts once per `remind_every` (default a day) per type whose last success at `now` is older
/// than twice its RPO (or its catch_up_after, if longer), unless its failure was told within that
/// time (its own reminders say the same). `state` records what was told.
pub fn dead_man_check(
    cfg: &Config,
    history: &History,
    state: &mut NotifyState,
    snaps: &[(SnapshotId, Snapshot)],
    now: &DateTime<Local>,
) -> Result<Vec<String>> {
    let evidence = DeadManEvidence {
        last_success: &|name| last_success(history, snaps, name, now),
        first_run: &|name| history.first_run(name),
        complete: true,
        suffix: "",
    };
    dead_man_alerts(cfg, state, now, &evidence)
}

/// Where a dead-man check learns each type's last success and first run: the repository's
/// history and snapshots, or the state kept outside it when the repository cannot be opened.
pub(crate) struct DeadManEvidence<'a> {
    /// The type's last success.
    pub last_success: &'a dyn Fn(&str) -> Result<Option<DateTime<FixedOffset>>>,
    /// The type's first run (for a type that never succeeded).
    pub first_run: &'a dyn Fn(&str) -> Result<Option<DateTime<FixedOffset>>>,
    /// Whether a type found not overdue clears its dead-man record (only the repository's own
    /// evidence knows better; the outside state may lag behind it).
    pub complete: bool,
    /// Added to each message.
    pub suffix: &'a str,
}

/// The one dead-man loop behind both checks: one alert per overdue scheduled type, at most once
/// per `remind_every`, recorded as `dead_man:TYPE` in `state` so the two checks never both alert.
pub(crate) fn dead_man_alerts(
    cfg: &Config,
    state: &mut NotifyState,
    now: &DateTime<Local>,
    evidence: &DeadManEvidence,
) -> Result<Vec<String>> {
    let notify_cfg = cfg.backup.notify.clone().unwrap_or_default();
    let every = Policy::of(&notify_cfg).remind_every;
    let now_f = now.fixed_offset();
    let mut errors = Vec::new();
    for (name, t) in &cfg.types {
        if t.schedule.is_none() {
            continue;
        }
        let key = format!("dead_man:{name}");
        let last = (evidence.last_success)(name)?;
        let Some(msg) = overdue(name, t, last, || (evidence.first_run)(name), now_f)? else {
            if evidence.complete {
                state.condition_cleared(&key);
            }
            continue;
        };
        if state.told_within(name, now_f, every) || !state.condition_due(&key, now_f, every, "overdue") {
            continue;
        }
        let msg = format!("{msg}{}", evidence.suffix);
        errors.extend(notify::deliver(&notify_cfg, state, &key, vec![Event::new("dead_man", name, *now, msg)]));
    }
    Ok(errors)
}
