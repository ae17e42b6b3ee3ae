//! Pending uploads: what each remote still lacks and since when, the syncs every `backup` run and
//! daemon round owes (a remote with pending files or whose last sync failed, whether or not a
//! type ran), a remote further behind than the RPO as a notified condition, and the daemon's
//! backoff for a failing remote.
//!
//! "Pending" is read from the local sync bookkeeping (`remote_files` against the local listing,
//! no remote listing), so asking costs a directory walk and one query; when a pending file was
//! first seen is kept in `remote_pending` (format-spec/cache.md).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, FixedOffset};

use crate::error::Result;
use crate::format::manifest::Snapshot;
use crate::id::SnapshotId;
use crate::lifecycle::clock::Clock;
use crate::lifecycle::config::Config;
use crate::lifecycle::history::History;
use crate::lifecycle::notify::{self, Event, NotifyState, Policy};
use crate::lifecycle::remotes::{remote_exclusions, sync_all, SyncOptions};
use crate::lifecycle::runner::{DaemonTiming, SyncOutcome};
use crate::lifecycle::schedule::human_duration;
use crate::ops::snapshot_set::SnapshotSet;
use crate::ops::sync::{PendingFile, SyncState};
use crate::repo::Repo;
use crate::store::rclone::RcloneStore as Rclone;
use crate::store::{Handle, Store};

/// What a remote lacks, and whether that is further behind than the RPO allows.
#[derive(Debug, Default)]
pub struct PendingView {
    /// The pending files, each with the time it became pending.
    pub files: Vec<PendingFile>,
    /// Their bytes.
    pub bytes: u64,
    /// When the oldest of them became pending.
    pub oldest: Option<DateTime<FixedOffset>>,
    /// Some pending file has waited longer than its RPO (see [`view`]).
    pub behind: bool,
    /// The RPO the most overdue file is held to (for messages).
    pub rpo: Option<Duration>,
}

/// The RPO a pending file is held to: a snapshot file its type's, anything else (packs, index
/// files, keys, config) the smallest among the configured types. `None` without types.
fn rpo_of(cfg: Option<&Config>, types: &HashMap<SnapshotId, &str>, h: &Handle) -> Option<Duration> {
    let cfg = cfg?;
    let of_type = match h {
        Handle::Snapshot(id) => types.get(id).and_then(|t| cfg.type_config(t)).map(|t| t.rpo()),
        _ => None,
    };
    of_type.or_else(|| cfg.types.iter().map(|(_, t)| t.rpo()).min())
}

/// What `remote` lacks of the repository at `now`. A file not seen pending before is dated by
/// its snapshot's time (a snapshot file) or `now`; [`SyncState::note_pending`] keeps these.
pub fn view(
    state: &SyncState,
    local: &dyn Store,
    cfg: Option<&Config>,
    remote: &str,
    exclude: &HashSet<Handle>,
    snaps: &[(SnapshotId, Snapshot)],
    now: DateTime<FixedOffset>,
) -> Result<PendingView> {
    let mut files = state.pending_files(local, remote, exclude)?;
    let by_id: HashMap<SnapshotId, &Snapshot> = snaps.iter().map(|(id, s)| (*id, s)).collect();
    let types: HashMap<SnapshotId, &str> = snaps.iter().map(|(id, s)| (*id, s.backup_type.as_str())).collect();
    let mut v = PendingView::default();
    let mut worst: Option<Duration> = None;
    for f in &mut files {
        let snap_time = match f.handle {
            Handle::Snapshot(id) => by_id.get(&id).and_then(|s| DateTime::parse_from_rfc3339(&s.time).ok()),
            _ => None,
        };
        let since = f.since.or(snap_time).map_or(now, |t| t.min(now));
        f.since = Some(since);
        v.bytes += f.size;
        v.oldest = Some(v.oldest.map_or(since, |o| o.min(since)));
        if let Some(rpo) = rpo_of(cfg, &types, &f.handle) {
            let over = (now - since) - rpo;
            if over > Duration::zero() && worst.is_none_or(|w| over > w) {
                worst = Some(over);
                v.rpo = Some(rpo);
            }
        }
    }
    v.behind = worst.is_some();
    v.files = files;
    Ok(v)
}

/// The state of a remote's syncs as the history has them.
#[derive(Debug, Default)]
pub struct SyncHealth {
    /// End of the last successful sync.
    pub last_ok: Option<String>,
    /// The last sync failed.
    pub failing: bool,
    /// Its error.
    pub last_error: Option<String>,
    /// Start of the first failed sync of the current streak.
    pub failing_since: Option<String>,
}

/// How the syncs to `remote` went, from the history's `sync:NAME` rows.
pub fn health(history: &History, remote: &str) -> Result<SyncHealth> {
    let runs = history.list(Some(&format!("sync:{remote}")), 50)?;
    let streak: Vec<_> = runs.iter().take_while(|r| r.result.failed()).collect();
    Ok(SyncHealth {
        last_ok: runs.iter().find(|r| !r.result.failed()).map(|r| r.end.clone()),
        failing: !streak.is_empty(),
        last_error: streak.first().and_then(|r| r.error.clone()),
        failing_since: streak.last().map(|r| r.start.clone()),
    })
}

/// Whether a sync did not complete (an error, or local damage left unuploaded).
pub fn sync_failed(o: &SyncOutcome) -> bool {
    o.error.is_some() || o.report.as_ref().is_some_and(|r| r.is_damaged())
}

/// How the syncs a run owes are made.
#[derive(Clone, Debug)]
pub struct PendingOptions {
    /// Upload (`false`: `backup --no-sync`, which still notes what is pending and tells a remote
    /// that has fallen behind).
    pub upload: bool,
    /// First retry delay of a transient sync failure; doubles each retry.
    pub retry_base: std::time::Duration,
}

/// The syncs made and the notifications that could not be delivered.
#[derive(Debug, Default)]
pub struct PendingReport {
    /// One per remote synced.
    pub sync: Vec<SyncOutcome>,
    /// Undelivered notifications about remotes behind.
    pub notify_errors: Vec<String>,
}

/// Syncs each of `remotes` that has pending files or whose last sync failed (and that `may_try`
/// allows: the daemon's backoff), then tells each one further behind than the RPO, once and then
/// per `remind_every`, and its catching up once. `sink` hears of each remote as its sync ends.
/// Errors are logged, never raised: the backup is safe locally whatever happens here.
#[allow(clippy::too_many_arguments, reason = "one run's context; each is used once")]
pub fn sync_owed(
    cfg: &Config,
    repo: &Repo,
    remotes: &[Rclone],
    set: &mut SnapshotSet,
    clock: &dyn Clock,
    opts: &PendingOptions,
    may_try: &dyn Fn(&str) -> bool,
    sink: &mut dyn crate::lifecycle::sink::RunSink,
) -> PendingReport {
    let mut out = PendingReport::default();
    if remotes.is_empty() {
        return out;
    }
    let (owed, mut views) = match owed(cfg, repo, remotes, set, clock) {
        Ok(o) => o,
        Err(e) => {
            // Without the bookkeeping, syncing is the safe answer: sync finds what is missing.
            tracing::warn!("pending uploads could not be read ({e}); syncing every remote");
            (remotes.iter().map(|r| r.name.clone()).collect(), HashMap::new())
        }
    };
    let to_sync: Vec<Rclone> = remotes.iter().filter(|r| owed.contains(&r.name) && may_try(&r.name)).cloned().collect();
    if opts.upload && !to_sync.is_empty() {
        let so = SyncOptions { dry_run: false, retry_base: opts.retry_base };
        // One remote at a time, so each one's line is shown when it ends.
        for remote in &to_sync {
            // What it lacks changed: looked at again after the sync.
            views.remove(&remote.name);
            for o in sync_all(Some(cfg), repo, std::slice::from_ref(remote), &so, set, clock) {
                sink.sync_done(&o);
                out.sync.push(o);
            }
        }
    }
    match tell_behind(cfg, repo, remotes, set, clock, views) {
        Ok(errors) => out.notify_errors = errors,
        Err(e) => tracing::warn!("checking how far remotes are behind: {e}"),
    }
    out
}

/// The names of the remotes owed a sync, and what each lacks (noted on the way: when each pending
/// file was first seen).
fn owed(
    cfg: &Config,
    repo: &Repo,
    remotes: &[Rclone],
    set: &mut SnapshotSet,
    clock: &dyn Clock,
) -> Result<(Vec<String>, HashMap<String, PendingView>)> {
    let history = History::open(repo.store().root())?;
    let state = SyncState::open(repo.store())?;
    let mut names = Vec::new();
    let mut views = HashMap::new();
    for r in remotes {
        let v = noted_view(cfg, repo, &state, &r.name, set, clock)?;
        if !v.files.is_empty() || health(&history, &r.name)?.failing {
            names.push(r.name.clone());
        }
        views.insert(r.name.clone(), v);
    }
    Ok((names, views))
}

/// What `remote` lacks now, with [`SyncState::note_pending`] brought up to date.
fn noted_view(
    cfg: &Config,
    repo: &Repo,
    state: &SyncState,
    remote: &str,
    set: &mut SnapshotSet,
    clock: &dyn Clock,
) -> Result<PendingView> {
    let ex = remote_exclusions(Some(cfg), repo, remote, set, clock)?;
    let v = view(state, repo.store(), Some(cfg), remote, &ex, set.all(), clock.now().fixed_offset())?;
    state.note_pending(remote, &v.files)?;
    Ok(v)
}

/// Tells each remote further behind than the RPO (`remote_behind:NAME`) and each that caught up.
/// `known` holds what each remote not synced meanwhile lacks; the others are looked at again.
fn tell_behind(
    cfg: &Config,
    repo: &Repo,
    remotes: &[Rclone],
    set: &mut SnapshotSet,
    clock: &dyn Clock,
    mut known: HashMap<String, PendingView>,
) -> Result<Vec<String>> {
    let notify_cfg = cfg.backup.notify.clone().unwrap_or_default();
    let policy = Policy::of(&notify_cfg);
    let mut told: NotifyState = crate::lifecycle::state::notify_state_for(cfg, Some(repo.store().root()));
    let state = SyncState::open(repo.store())?;
    let now = clock.now().fixed_offset();
    let mut errors = Vec::new();
    for r in remotes {
        let v = match known.remove(&r.name) {
            Some(v) => v,
            None => noted_view(cfg, repo, &state, &r.name, set, clock)?,
        };
        let key = format!("remote_behind:{}", r.name);
        if v.behind {
            let age = v.oldest.map_or(Duration::zero(), |o| now - o);
            let msg = format!(
                "remote {} is behind: {} files ({}) not uploaded, the oldest waiting for {} (RPO {})",
                r.name,
                v.files.len(),
                crate::util::human_bytes(v.bytes),
                human_duration(age),
                human_duration(v.rpo.unwrap_or_default())
            );
            // While the sync itself fails and the owner hears of that, "behind" is told once and
            // not reminded separately: one reminder a day about one remote is enough.
            let sync_told = told.told_within(&format!("sync:{}", r.name), now, policy.remind_every);
            let every = if sync_told { Duration::days(36500) } else { policy.remind_every };
            if told.condition_due(&key, now, every, &msg) {
                let ev = Event::new("remote_behind", &key, now, msg);
                errors.extend(notify::deliver(&notify_cfg, &mut told, &key, vec![ev]));
            }
        } else {
            let msg = format!("remote {} caught up: nothing pending is older than its RPO", r.name);
            if let Some(ev) = told.condition_recovered(&key, now, msg) {
                errors.extend(notify::deliver(&notify_cfg, &mut told, &key, vec![ev]));
            }
        }
    }
    if let Err(e) = told.save() {
        tracing::warn!("notification state not saved: {e}");
    }
    Ok(errors)
}

/// The daemon's pacing of a failing remote: after the n-th failure in a row the next attempt
/// waits `recheck * 2^(n-1)`, at most `idle` (5 min doubling up to 1 h by default), so a remote
/// that is away is neither hammered nor forgotten.
#[derive(Debug, Default)]
pub struct Backoff {
    failing: HashMap<String, (u32, DateTime<FixedOffset>)>,
    timing: DaemonTiming,
}

impl Backoff {
    /// A backoff paced by `timing`.
    pub fn new(timing: DaemonTiming) -> Backoff {
        Backoff { failing: HashMap::new(), timing }
    }

    /// Whether `remote` may be tried at `now`.
    pub fn may_try(&self, remote: &str, now: DateTime<FixedOffset>) -> bool {
        self.failing.get(remote).is_none_or(|(_, next)| now >= *next)
    }

    /// Notes the outcomes of the syncs made at `now`.
    pub fn record(&mut self, outcomes: &[SyncOutcome], now: DateTime<FixedOffset>) {
        for o in outcomes {
            if sync_failed(o) {
                let n = self.failing.get(&o.remote).map_or(0, |(n, _)| *n) + 1;
                let wait = (self.timing.recheck * 2i32.saturating_pow((n - 1).min(20))).min(self.timing.idle);
                self.failing.insert(o.remote.clone(), (n, now + wait));
            } else {
                self.failing.remove(&o.remote);
            }
        }
    }

    /// The earliest time a failing remote may be tried again.
    pub fn next_attempt(&self) -> Option<DateTime<FixedOffset>> {
        self.failing.values().map(|(_, t)| *t).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(mins: i64) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2030-01-01T00:00:00+00:00").unwrap() + Duration::minutes(mins)
    }

    fn outcome(ok: bool) -> SyncOutcome {
        SyncOutcome { remote: "gd".into(), error: (!ok).then(|| "gone".into()), ..Default::default() }
    }

    #[test]
    fn a_failing_remote_is_tried_after_5_10_20_40_60_60_minutes_then_at_once_after_a_success() {
        let mut b = Backoff::new(DaemonTiming::default());
        let mut m = 0;
        let mut waits = Vec::new();
        // A daemon round every minute for a day: the remote is tried only when its wait is over.
        for minute in 0..(24 * 60) {
            if b.may_try("gd", at(minute)) {
                if minute > 0 {
                    waits.push(minute - m);
                }
                m = minute;
                b.record(&[outcome(false)], at(minute));
            }
        }
        assert_eq!(&waits[..7], &[5, 10, 20, 40, 60, 60, 60]);
        assert_eq!(waits.len(), 4 + (24 * 60 - 75) / 60, "{waits:?}");
        assert_eq!(b.next_attempt(), Some(at(m + 60)));
        b.record(&[outcome(true)], at(m + 60));
        assert!(b.may_try("gd", at(m + 60)) && b.next_attempt().is_none());
    }
}
