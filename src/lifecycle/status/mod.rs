//! `status`: where each type stands (last success, age against its RPO, next due, failures,
//! newest snapshot, what a restore would take) and what the repository holds; the verdict
//! (`verdict`: problems and the exit code), the text (`render`) and Prometheus textfile metrics
//! (`metrics`) are all read from the one [`Status`].

mod metrics;
mod render;
pub mod verdict;

pub use metrics::write_metrics;
pub use render::render;

use chrono::{DateTime, FixedOffset, Local};
use serde::Serialize;

use crate::error::Result;
use crate::format::manifest::Snapshot;
use crate::id::SnapshotId;
use crate::lifecycle::config::Config;
use crate::lifecycle::history::{History, Run};
use crate::lifecycle::runner::{due_now, last_success};
use crate::lifecycle::schedule::{self, Schedule};
use crate::repo::Repo;
use crate::store::{FileKind, Store};

/// One type's status.
#[derive(Debug, Serialize)]
pub struct TypeStatus {
    /// Type.
    pub backup_type: String,
    /// Its schedule.
    pub schedule: Option<Schedule>,
    /// Last success.
    #[serde(serialize_with = "crate::lifecycle::rfc3339::option")]
    pub last_success: Option<DateTime<FixedOffset>>,
    /// Its age in seconds.
    pub age_s: Option<i64>,
    /// RPO in seconds.
    pub rpo_s: i64,
    /// Older than its RPO (or never backed up), for a type with a schedule or a stated RPO.
    pub overdue: bool,
    /// Next due time.
    #[serde(serialize_with = "crate::lifecycle::rfc3339::one")]
    pub next_due: DateTime<FixedOffset>,
    /// Due now, and why.
    pub due_now: bool,
    /// Why (or why not).
    pub due_reason: String,
    /// Failed runs since the last success.
    pub consecutive_failures: u32,
    /// Last error, if the last run failed.
    pub last_error: Option<String>,
    /// Newest snapshot id.
    #[serde(serialize_with = "crate::id::as_hex::option")]
    pub newest_snapshot: Option<SnapshotId>,
    /// Snapshots of this type.
    pub snapshots: usize,
    /// Logical size of the newest snapshot: what a full restore of this type reads.
    pub latest_logical_bytes: Option<u64>,
    /// The newest successful restore test of this type and what it predicts (RTO input).
    pub restore_test: Option<RestoreTest>,
    /// The newest run of this type, whatever its result.
    pub last_run: Option<Run>,
    /// Failed and partial runs of this type, ever.
    pub failures_total: u64,
    /// The restore points the snapshots actually give (None with fewer than two snapshots).
    pub achieved_rpo: Option<AchievedRpo>,
}

/// The RPO the snapshots achieve: the gaps between consecutive snapshots of a type, by their
/// recorded times (snapshots dated after now are left out: their clock was wrong).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AchievedRpo {
    /// The gap between the two newest snapshots, in seconds.
    pub last_gap_s: i64,
    /// The widest gap between consecutive snapshots whose later one is within the last 24 hours
    /// (None when fewer than two fall there).
    pub widest_gap_24h_s: Option<i64>,
    /// Snapshots taken in the last 24 hours.
    pub snapshots_24h: usize,
}

impl AchievedRpo {
    /// From the snapshot times of one type, any order, judged at `now`.
    pub fn from_times(mut times: Vec<DateTime<FixedOffset>>, now: DateTime<FixedOffset>) -> Option<AchievedRpo> {
        times.retain(|t| *t <= now);
        times.sort();
        let n = times.len();
        if n < 2 {
            return None;
        }
        let day = now - chrono::Duration::hours(24);
        let recent = times.iter().filter(|t| **t > day).count();
        let widest = times.windows(2).filter(|w| w[1] > day).map(|w| (w[1] - w[0]).num_seconds()).max();
        Some(AchievedRpo {
            last_gap_s: (times[n - 1] - times[n - 2]).num_seconds(),
            widest_gap_24h_s: widest,
            snapshots_24h: recent,
        })
    }
}

/// A measured restore (`verify --restore-test`, recorded as `restore-test:TYPE`).
#[derive(Debug, Serialize)]
pub struct RestoreTest {
    /// When it ended.
    pub time: String,
    /// Bytes it restored.
    pub bytes: u64,
    /// How long it took.
    pub seconds: f64,
    /// Bytes per second (None when it took no measurable time).
    pub bytes_per_s: Option<f64>,
    /// The newest snapshot's logical size at that speed.
    pub estimated_restore_s: Option<f64>,
}

impl RestoreTest {
    /// The restore test in `run`, and the time `latest_bytes` would take at its speed.
    fn from_run(run: &Run, latest_bytes: Option<u64>) -> Option<RestoreTest> {
        let seconds = run.duration_s()?;
        let speed = (seconds > 0.0 && run.bytes_read > 0).then(|| run.bytes_read as f64 / seconds);
        Some(RestoreTest {
            time: run.end.clone(),
            bytes: run.bytes_read,
            seconds,
            bytes_per_s: speed,
            estimated_restore_s: speed.zip(latest_bytes).map(|(v, b)| b as f64 / v),
        })
    }
}

/// A pack the index cache knows to be damaged.
#[derive(Debug, Serialize)]
pub struct DamagedPack {
    /// Pack id (hex).
    pub pack: String,
    /// Why it was marked.
    pub reason: String,
}

/// The file system holding the repository.
#[derive(Debug, Serialize)]
pub struct Filesystem {
    /// Its size.
    pub total_bytes: u64,
    /// Free for this user.
    pub available_bytes: u64,
}

/// The whole status.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Repository path.
    pub repository: String,
    /// "xchacha20poly1305" or "none".
    pub encryption: String,
    /// Per type.
    pub types: Vec<TypeStatus>,
    /// Snapshots in all.
    pub snapshots: usize,
    /// Bytes of packs, index files and snapshot files.
    pub stored_bytes: u64,
    /// Sum of the logical sizes of all snapshots.
    pub logical_bytes: u64,
    /// logical / stored.
    pub dedup_ratio: f64,
    /// Types overdue.
    pub overdue: Vec<String>,
    /// Remotes: last sync and what is pending.
    pub remotes: Vec<RemoteStatus>,
    /// Snapshots whose recorded time cannot be right (dated after now, or before a snapshot
    /// of their type committed earlier): kept by retention, listed here until removed.
    pub clock_anomalies: Vec<crate::ops::retention::ClockAnomaly>,
    /// Snapshot files that could not be read, each named with the reason (filled in by
    /// [`status_of`], which holds the snapshot set).
    pub unreadable_snapshots: Vec<String>,
    /// The last verify (by hand or scheduled), with the schedule's next due time.
    pub last_verify: Option<crate::lifecycle::verify_runs::VerifyStatus>,
    /// Pre-change snapshots not yet verified (`mark-verified`), oldest first, with their age.
    pub pending_verification: Vec<crate::ops::kinds::Pending>,
    /// Room in the repository's file system, and each remote as its last `rclone about` found it.
    pub capacity: Option<crate::lifecycle::capacity::CapacityStatus>,
    /// Packs the index cache has marked damaged.
    pub damaged_packs: Vec<DamagedPack>,
    /// The newest `verify` run recorded in the history.
    pub last_verify_run: Option<Run>,
    /// The repository's file system (None where statvfs fails).
    pub filesystem: Option<Filesystem>,
    /// Nothing needs attention.
    pub ok: bool,
    /// What `cairn status` exits with (see [`verdict::exit_code`]).
    pub exit_code: i32,
    /// Everything that needs attention, most serious first.
    pub problems: Vec<verdict::Problem>,
}

impl Status {
    /// Sets the verdict from the fields: call again after changing them.
    pub fn judge(&mut self) {
        self.problems = verdict::problems(self);
        self.exit_code = verdict::exit_code(&self.problems);
        self.ok = self.problems.is_empty();
    }
}

/// [`status`] over a loaded snapshot set, with its unreadable snapshot files judged as damage.
pub fn status_of(
    repo: &Repo,
    cfg: Option<&Config>,
    set: &crate::ops::snapshot_set::SnapshotSet,
    now: &DateTime<Local>,
) -> Result<Status> {
    let mut st = status(repo, cfg, set.all(), now)?;
    st.unreadable_snapshots = set
        .unreadable()
        .iter()
        .map(|(id, e)| format!("{}: {e}", repo.objects().location(crate::store::Handle::Snapshot(*id))))
        .collect();
    st.judge();
    Ok(st)
}

/// One remote's state.
#[derive(Debug, Serialize)]
pub struct RemoteStatus {
    /// Name.
    pub name: String,
    /// rclone target.
    pub target: String,
    /// End of the last successful sync.
    pub last_sync: Option<String>,
    /// Error of the last sync if it failed.
    pub last_error: Option<String>,
    /// Files not yet on the remote.
    pub pending_files: usize,
    /// Their bytes.
    pub pending_bytes: u64,
    /// The last sync failed.
    pub failing: bool,
    /// Start of the first failed sync of the current failing streak.
    pub failing_since: Option<String>,
    /// Seconds the oldest pending file has waited.
    pub oldest_pending_age_s: Option<i64>,
    /// A pending file has waited longer than its RPO (its snapshot type's, else the smallest).
    pub behind: bool,
}

/// Computes the status at `now` over `snaps`, the repository's snapshots (oldest first, as
/// `SnapshotSet::all` holds them).
pub fn status(
    repo: &Repo,
    cfg: Option<&Config>,
    snaps: &[(SnapshotId, Snapshot)],
    now: &DateTime<Local>,
) -> Result<Status> {
    let history = History::open(repo.store().root())?;
    let now_f = now.fixed_offset();
    let mut types = Vec::new();
    let mut names: Vec<String> = cfg.map(|c| c.types.iter().map(|(n, _)| n.clone()).collect()).unwrap_or_default();
    for w in crate::lifecycle::wal::watched(cfg) {
        if !names.contains(&w) {
            names.push(w);
        }
    }
    for (_, s) in snaps {
        if !names.contains(&s.backup_type) {
            names.push(s.backup_type.clone());
        }
    }
    for name in names {
        let tc = cfg.and_then(|c| c.type_config(&name));
        let last = last_success(&history, snaps, &name, now)?;
        // A type that is only in the repository: no schedule, a day's RPO. Archived WAL
        // (`TYPE.wal`) is held to its base type's `wal_max_age`: its age is the real recovery point.
        let wal_age = crate::lifecycle::wal::max_age(cfg, &name);
        let r = wal_age.unwrap_or_else(|| tc.map_or_else(|| chrono::Duration::days(1), |t| t.rpo()));
        let due = match tc {
            Some(t) => due_now(t, last, now),
            None => schedule::due(None, None, last.map(|t| t.with_timezone(&Local)), now),
        };
        let recent = history.list(Some(&name), 1)?;
        let last_error = recent.first().filter(|r| r.result.failed()).and_then(|r| r.error.clone());
        let of_type: Vec<_> = snaps.iter().filter(|(_, s)| s.backup_type == name).collect();
        let latest_logical_bytes = of_type.last().map(|(_, s)| s.stats.logical_bytes);
        let restore_test = history
            .newest(&format!("restore-test:{name}"), true)?
            .and_then(|r| RestoreTest::from_run(&r, latest_logical_bytes));
        types.push(TypeStatus {
            backup_type: name.clone(),
            schedule: tc.and_then(|t| t.schedule),
            last_success: last,
            age_s: last.map(|t| (now_f - t).num_seconds()),
            rpo_s: r.num_seconds(),
            // Only a schedule or a stated RPO promises a next backup (the dead-man check says
            // the same): a type run by hand, or one only the repository knows, is never overdue.
            overdue: (wal_age.is_some() || tc.is_some_and(|t| t.schedule.is_some() || t.rpo.is_some()))
                && last.is_none_or(|t| now_f - t > r),
            next_due: due.next,
            due_now: due.due,
            due_reason: due.reason,
            consecutive_failures: history.consecutive_failures(&name)?,
            last_error,
            newest_snapshot: of_type.last().map(|(id, _)| *id),
            snapshots: of_type.len(),
            latest_logical_bytes,
            restore_test,
            last_run: recent.into_iter().next(),
            failures_total: history.failures_total(&name)?,
            achieved_rpo: AchievedRpo::from_times(of_type.iter().filter_map(|(_, s)| s.datetime()).collect(), now_f),
        });
    }
    let mut stored = 0u64;
    for p in repo.cache().packs()? {
        stored += p.1;
    }
    for kind in [FileKind::Index, FileKind::Snapshot] {
        stored += repo.store().list(kind)?.iter().map(|s| s.size).sum::<u64>();
    }
    let logical: u64 = snaps.iter().map(|(_, s)| s.stats.logical_bytes).sum();
    let overdue = types.iter().filter(|t| t.overdue).map(|t| t.backup_type.clone()).collect();
    let mut remotes = Vec::new();
    // The sync state is opened only when there are remotes to report (it is a writable
    // database; status must work on a full disk).
    if let Some(c) = cfg.filter(|c| !c.backup.remotes.is_empty()) {
        let state = crate::ops::sync::SyncState::open(repo.store())?;
        for r in &c.backup.remotes {
            let health = crate::lifecycle::pending::health(&history, &r.name)?;
            let exclude = match &r.retention {
                Some(ret) => crate::ops::sync::retention_exclusions(snaps, ret, now_f),
                None => Default::default(),
            };
            let v = crate::lifecycle::pending::view(&state, repo.store(), cfg, &r.name, &exclude, snaps, now_f)?;
            remotes.push(RemoteStatus {
                name: r.name.clone(),
                target: r.rclone.clone(),
                last_sync: health.last_ok,
                last_error: health.last_error,
                pending_files: v.files.len(),
                pending_bytes: v.bytes,
                failing: health.failing,
                failing_since: health.failing_since,
                oldest_pending_age_s: v.oldest.map(|o| (now_f - o).num_seconds().max(0)),
                behind: v.behind,
            });
        }
    }
    let damaged_packs = repo
        .cache()
        .damaged_packs()?
        .into_iter()
        .map(|(id, reason)| DamagedPack { pack: id.to_hex(), reason })
        .collect();
    let mut st = Status {
        repository: repo.store().root().display().to_string(),
        encryption: match repo.config().encryption {
            crate::format::repo_config::Encryption::None => "none".into(),
            crate::format::repo_config::Encryption::XChaCha20Poly1305 => "xchacha20poly1305".into(),
        },
        types,
        snapshots: snaps.len(),
        stored_bytes: stored,
        logical_bytes: logical,
        dedup_ratio: if stored > 0 { logical as f64 / stored as f64 } else { 0.0 },
        overdue,
        remotes,
        clock_anomalies: {
            let mut by_type: std::collections::BTreeMap<&str, Vec<(SnapshotId, Snapshot)>> = Default::default();
            for (id, s) in snaps {
                by_type.entry(s.backup_type.as_str()).or_default().push((*id, s.clone()));
            }
            by_type.values().flat_map(|v| crate::ops::retention::clock_anomalies(v, now_f)).collect()
        },
        unreadable_snapshots: Vec::new(),
        last_verify: crate::lifecycle::verify_runs::status(&history, cfg, now)?,
        pending_verification: crate::ops::kinds::pending_verification(snaps, now_f),
        capacity: Some(crate::lifecycle::capacity::status(cfg, repo.store().root(), snaps)),
        damaged_packs,
        last_verify_run: history.newest("verify", false)?,
        filesystem: crate::util::disk_space(repo.store().root())
            .map(|d| Filesystem { total_bytes: d.total, available_bytes: d.available }),
        ok: true,
        exit_code: verdict::EXIT_OK,
        problems: Vec::new(),
    };
    st.judge();
    Ok(st)
}

#[cfg(test)]
mod achieved_tests {
    use super::AchievedRpo;

    #[test]
    fn achieved_rpo_is_the_gap_between_snapshots() {
        let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
        let now = t("2026-12-02T12:00:00+00:00");
        assert_eq!(AchievedRpo::from_times(vec![t("2026-12-02T11:00:00+00:00")], now), None);
        let times = vec![
            t("2026-12-01T09:00:00+00:00"),
            t("2026-12-02T11:45:00+00:00"),
            t("2026-12-02T11:00:00+00:00"),
            t("2026-12-02T11:30:00+00:00"),
            t("2030-01-01T00:00:00+00:00"),
        ];
        let a = AchievedRpo::from_times(times, now).unwrap();
        // 09:00 the day before is outside the 24 hours, but the gap ending at 11:00 is inside.
        assert_eq!(a, AchievedRpo { last_gap_s: 15 * 60, widest_gap_24h_s: Some(26 * 3600), snapshots_24h: 3 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::history::Outcome;

    fn row(ty: &str, start: &str, end: &str, result: Outcome, bytes: u64) -> Run {
        Run { files: 1, bytes_read: bytes, ..Run::new(ty, start, end, result) }
    }

    #[test]
    fn the_newest_successful_restore_test_gives_the_speed_and_estimate() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        let key = "restore-test:db";
        assert!(h.newest(key, true).unwrap().is_none(), "no restore test yet");
        // 100 MB in 4 s, then a failed one (never the speed), and another type's test.
        h.record(&row(key, "2026-01-01T04:00:00+00:00", "2026-01-01T04:00:04+00:00", Outcome::Success, 100_000_000))
            .unwrap();
        h.record(&row(key, "2026-01-08T04:00:00+00:00", "2026-01-08T04:00:01+00:00", Outcome::Failed, 5)).unwrap();
        h.record(&row("restore-test:logs", "2026-01-09T04:00:00Z", "2026-01-09T04:00:02Z", Outcome::Success, 9))
            .unwrap();
        let run = h.newest(key, true).unwrap().unwrap();
        assert_eq!(run.end, "2026-01-01T04:00:04+00:00");
        assert_eq!(h.newest(key, false).unwrap().unwrap().result, Outcome::Failed);
        let t = RestoreTest::from_run(&run, Some(1_000_000_000)).unwrap();
        assert_eq!((t.bytes, t.seconds, t.bytes_per_s), (100_000_000, 4.0, Some(25_000_000.0)));
        assert_eq!(t.estimated_restore_s, Some(40.0));
        assert_eq!(RestoreTest::from_run(&run, None).unwrap().estimated_restore_s, None);
        // A test that took no measurable time proves no speed.
        let instant = row(key, "2026-01-01T04:00:00+00:00", "2026-01-01T04:00:00+00:00", Outcome::Success, 10);
        assert_eq!(RestoreTest::from_run(&instant, Some(10)).unwrap().bytes_per_s, None);
        assert_eq!(h.failures_total("restore-test:db").unwrap(), 1);
    }
}
