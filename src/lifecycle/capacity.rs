//! Capacity: whether the repository's file system and each remote have room. Checked after each
//! `backup` run and daemon round; a low one is a standing condition told once per
//! `remind_every` (`capacity:repository`, `capacity:remote:NAME`) and its end once.
//!
//! The repository's file system is low above `capacity.warn_percent` used, or when it has less
//! room than the next copy of a database type needs (a SQLite copy is made in the repository's
//! `tmp/` before it is stored; a dump's new data lands in packs): the latest logical size of the
//! largest SQLite or PostgreSQL type. A remote is asked with `rclone about` at most once per run,
//! only in runs that sync; it is low above the same threshold or when its free space is less
//! than what is pending or the last upload. The figures are kept in `state/capacity.json` for
//! `status` (format-spec/cache.md), which never calls a remote.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Local};
use serde::{Deserialize, Serialize};

use crate::format::manifest::Snapshot;
use crate::id::SnapshotId;
use crate::lifecycle::config::{Config, SourceSpec};
use crate::lifecycle::notify::{self, Event, NotifyState, Policy};
use crate::lifecycle::runner::SyncOutcome;
use crate::repo::Repo;
use crate::store::rclone::{About, RcloneStore};
use crate::util::human_bytes;

/// The longest an `rclone about` may take.
const ABOUT_LIMIT: Duration = Duration::from_secs(30);

/// File of the last remote figures, in the repository's `state/`.
const FILE: &str = "capacity.json";

/// File format version written in `version`.
const VERSION: u32 = 1;

/// The repository's file system.
#[derive(Clone, Debug, Serialize)]
pub struct RepoCapacity {
    /// The repository's path.
    pub path: String,
    /// Bytes in the file system.
    pub total_bytes: u64,
    /// Bytes cairn may still write.
    pub available_bytes: u64,
    /// Used share, counting root's reserve as used (as `df`).
    pub used_percent: f64,
    /// The threshold.
    pub warn_percent: u8,
    /// The database type whose next copy needs the most room.
    pub next_copy_type: Option<String>,
    /// Its latest logical size.
    pub next_copy_bytes: u64,
    /// Whether that fits in the available bytes.
    pub room_for_next_copy: bool,
    /// Above the threshold or without room for the next copy.
    pub low: bool,
    /// Why it is low.
    pub reason: Option<String>,
}

/// A remote, as its last `rclone about` found it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RemoteCapacity {
    /// Remote name.
    pub name: String,
    /// When it was asked.
    pub checked: String,
    /// Whether the backend reports its quota (`false`: nothing below is known).
    pub reported: bool,
    /// Quota.
    pub total_bytes: Option<u64>,
    /// Used by everything on the remote.
    pub used_bytes: Option<u64>,
    /// Free.
    pub free_bytes: Option<u64>,
    /// Used share of the quota.
    pub used_percent: Option<f64>,
    /// Bytes not yet on the remote then.
    pub pending_bytes: u64,
    /// Bytes of that run's upload (what the next one may need).
    pub next_upload_bytes: u64,
    /// Above the threshold, or less free than pending or the next upload needs.
    pub low: bool,
    /// Why it is low.
    pub reason: Option<String>,
}

/// Capacity as `status` and a `backup` run report it.
#[derive(Clone, Debug, Serialize, Default)]
pub struct CapacityStatus {
    /// The repository's file system (`None`: statvfs failed).
    pub repository: Option<RepoCapacity>,
    /// Remotes asked at least once.
    pub remotes: Vec<RemoteCapacity>,
    /// Anything low.
    pub low: bool,
}

impl CapacityStatus {
    /// One line per low file system or remote.
    pub fn warnings(&self) -> Vec<String> {
        let repo = self.repository.iter().filter_map(|r| r.reason.clone());
        repo.chain(self.remotes.iter().filter_map(|r| r.reason.clone())).collect()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Recorded {
    version: u32,
    #[serde(default)]
    remotes: BTreeMap<String, RemoteCapacity>,
}

fn warn_percent(cfg: Option<&Config>) -> u8 {
    cfg.and_then(|c| c.backup.capacity.clone()).unwrap_or_default().warn_percent()
}

/// The database type whose next copy needs the most room, by its latest snapshot's logical size.
fn next_copy(cfg: &Config, snaps: &[(SnapshotId, Snapshot)]) -> Option<(String, u64)> {
    cfg.types
        .iter()
        .filter(|(_, t)| matches!(t.source, SourceSpec::Sqlite { .. } | SourceSpec::Postgres(_)))
        .filter_map(|(n, _)| {
            let latest = snaps.iter().rev().find(|(_, s)| &s.backup_type == n)?;
            Some((n.clone(), latest.1.stats.logical_bytes))
        })
        .max_by_key(|(_, b)| *b)
}

/// The repository's file system at `root` against the threshold and the next database copy.
pub fn repository(cfg: Option<&Config>, root: &Path, snaps: &[(SnapshotId, Snapshot)]) -> Option<RepoCapacity> {
    let d = crate::util::disk_space(root)?;
    let warn = warn_percent(cfg);
    let (next_type, next_bytes) = cfg.and_then(|c| next_copy(c, snaps)).map_or((None, 0), |(t, b)| (Some(t), b));
    let used = d.used_percent();
    let room = d.available >= next_bytes;
    let mut why = Vec::new();
    if used > warn as f64 {
        why.push(format!("is {used:.1}% full (threshold {warn}%), {} free", human_bytes(d.available)));
    }
    if let (false, Some(t)) = (room, &next_type) {
        why.push(format!(
            "has {} free, less than the next copy of database {t} needs ({})",
            human_bytes(d.available),
            human_bytes(next_bytes)
        ));
    }
    let reason = (!why.is_empty()).then(|| format!("repository file system at {} {}", root.display(), why.join("; ")));
    Some(RepoCapacity {
        path: root.display().to_string(),
        total_bytes: d.total,
        available_bytes: d.available,
        used_percent: (used * 10.0).round() / 10.0,
        warn_percent: warn,
        next_copy_type: next_type,
        next_copy_bytes: next_bytes,
        room_for_next_copy: room,
        low: reason.is_some(),
        reason,
    })
}

/// A remote's figures judged: `about` is `None` for a backend that does not report them.
pub fn judge_remote(
    name: &str,
    about: Option<About>,
    pending: u64,
    next_upload: u64,
    warn: u8,
    now: DateTime<FixedOffset>,
) -> RemoteCapacity {
    let a = about.unwrap_or(About { total: None, used: None, free: None });
    // Used over used + free where both are known, as `df` counts a local file system (whose
    // reserve for root is in neither).
    let used_percent = match (a.total, a.free, a.used) {
        (_, Some(f), Some(u)) if u + f > 0 => Some(100.0 * u as f64 / (u + f) as f64),
        (Some(t), Some(f), _) if t > 0 => Some(100.0 * t.saturating_sub(f) as f64 / t as f64),
        (Some(t), None, Some(u)) if t > 0 => Some(100.0 * u as f64 / t as f64),
        _ => None,
    };
    let mut why = Vec::new();
    if let Some(p) = used_percent.filter(|p| *p > warn as f64) {
        why.push(format!("is {p:.1}% full (threshold {warn}%)"));
    }
    let need = pending.max(next_upload);
    if let Some(f) = a.free.filter(|f| *f < need) {
        why.push(format!(
            "has {} free, less than {} ({} pending, last upload {})",
            human_bytes(f),
            human_bytes(need),
            human_bytes(pending),
            human_bytes(next_upload)
        ));
    }
    let reason = (!why.is_empty()).then(|| format!("remote {name} {}", why.join("; ")));
    RemoteCapacity {
        name: name.to_string(),
        checked: now.to_rfc3339(),
        reported: about.is_some(),
        total_bytes: a.total,
        used_bytes: a.used,
        free_bytes: a.free,
        used_percent: used_percent.map(|p| (p * 10.0).round() / 10.0),
        pending_bytes: pending,
        next_upload_bytes: next_upload,
        low: reason.is_some(),
        reason,
    }
}

fn read_recorded(root: &Path) -> Recorded {
    let path = root.join("state").join(FILE);
    match std::fs::read(&path) {
        Ok(b) => match serde_json::from_slice::<Recorded>(&b) {
            Ok(r) if r.version == VERSION => r,
            Ok(_) | Err(_) => {
                tracing::warn!("{}: unreadable, the remotes' figures start afresh", path.display());
                Recorded::default()
            }
        },
        Err(_) => Recorded::default(),
    }
}

fn write_recorded(root: &Path, r: &mut Recorded) -> crate::error::Result<()> {
    let path = root.join("state").join(FILE);
    r.version = VERSION;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(r).expect("serializable"))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            crate::error::Error::io(&path, e)
        })
}

/// The capacity `status` shows: the repository's file system now, and each configured remote
/// as its last `about` found it.
pub fn status(cfg: Option<&Config>, root: &Path, snaps: &[(SnapshotId, Snapshot)]) -> CapacityStatus {
    let recorded = read_recorded(root);
    let names: Vec<&str> = cfg.map(|c| c.backup.remotes.iter().map(|r| r.name.as_str()).collect()).unwrap_or_default();
    let remotes: Vec<RemoteCapacity> =
        recorded.remotes.into_values().filter(|r| names.contains(&r.name.as_str())).collect();
    let repository = repository(cfg, root, snaps);
    let low = repository.as_ref().is_some_and(|r| r.low) || remotes.iter().any(|r| r.low);
    CapacityStatus { repository, remotes, low }
}

/// Pending bytes of remote `name` (0 when they cannot be counted).
fn pending(cfg: &Config, repo: &Repo, name: &str, snaps: &[(SnapshotId, Snapshot)], now: DateTime<FixedOffset>) -> u64 {
    let ret = cfg.backup.remotes.iter().find(|r| r.name == name).and_then(|r| r.retention.clone());
    let exclude = ret.map(|r| crate::ops::sync::retention_exclusions(snaps, &r, now)).unwrap_or_default();
    crate::ops::sync::SyncState::open(repo.store())
        .and_then(|s| s.pending_files(repo.store(), name, &exclude))
        .map_or(0, |files| files.iter().map(|f| f.size).sum())
}

/// After a run: the repository's file system, and `rclone about` of each remote `synced` in it;
/// each low one told (once per `remind_every`) and its end told once. Returns the figures and
/// the notifications that could not be delivered.
pub fn after_run(
    cfg: &Config,
    repo: &Repo,
    snaps: &[(SnapshotId, Snapshot)],
    synced: &[SyncOutcome],
    now: &DateTime<Local>,
) -> (CapacityStatus, Vec<String>) {
    let root = repo.store().root();
    let now_f = now.fixed_offset();
    let warn = warn_percent(Some(cfg));
    let mut recorded = read_recorded(root);
    let mut told = crate::lifecycle::state::notify_state_for(cfg, Some(root));
    let notify_cfg = cfg.backup.notify.clone().unwrap_or_default();
    let every = Policy::of(&notify_cfg).remind_every;
    let mut errors = Vec::new();
    let repository = repository(Some(cfg), root, snaps);
    if let Some(r) = &repository {
        let ok = format!("repository file system back to {:.1}% used, with room for the next copy", r.used_percent);
        errors.extend(tell(&notify_cfg, &mut told, "capacity:repository", r.reason.as_deref(), ok, now_f, every));
    }
    for s in synced {
        let Some(rc) = cfg.backup.remotes.iter().find(|r| r.name == s.remote) else { continue };
        // A remote this run could not reach would only hold the run again: its sync failure is
        // told already. One that refused an upload (a full quota) is asked.
        let unreachable = s.error.as_deref().map(str::to_lowercase).is_some_and(|e| {
            ["timeout", "timed out", "time limit", "connection refused", "no such host"].iter().any(|w| e.contains(w))
        });
        if unreachable {
            tracing::debug!("remote {}: not asked for its quota, its sync did not reach it", rc.name);
            continue;
        }
        let store: RcloneStore = rc.store();
        let limit = ABOUT_LIMIT.min(store.time_limit);
        let about = match store.about(limit) {
            Ok(a) => a,
            Err(e) => {
                // The sync's own result tells an unreachable remote.
                tracing::debug!("remote {}: rclone about failed: {e}", rc.name);
                continue;
            }
        };
        if about.is_none() {
            tracing::debug!("remote {}: the backend does not report its quota", rc.name);
        }
        let pend = pending(cfg, repo, &rc.name, snaps, now_f);
        let r = judge_remote(&rc.name, about, pend, s.uploaded_bytes, warn, now_f);
        if r.reported {
            let key = format!("capacity:remote:{}", rc.name);
            let ok = format!("remote {} has room again", rc.name);
            errors.extend(tell(&notify_cfg, &mut told, &key, r.reason.as_deref(), ok, now_f, every));
        }
        recorded.remotes.insert(rc.name.clone(), r);
    }
    if let Err(e) = told.save() {
        errors.push(format!("notification state not saved: {e}"));
    }
    if !synced.is_empty() {
        if let Err(e) = write_recorded(root, &mut recorded) {
            tracing::warn!("remote capacity figures not kept: {e}");
        }
    }
    let names: Vec<&str> = cfg.backup.remotes.iter().map(|r| r.name.as_str()).collect();
    let remotes: Vec<RemoteCapacity> =
        recorded.remotes.into_values().filter(|r| names.contains(&r.name.as_str())).collect();
    let low = repository.as_ref().is_some_and(|r| r.low) || remotes.iter().any(|r| r.low);
    (CapacityStatus { repository, remotes, low }, errors)
}

/// [`after_run`] into a run's report.
pub fn note(
    report: &mut crate::lifecycle::runner::BackupReport,
    cfg: &Config,
    repo: &Repo,
    snaps: &[(SnapshotId, Snapshot)],
    now: &DateTime<Local>,
) {
    let (c, errors) = after_run(cfg, repo, snaps, &report.sync, now);
    report.capacity = Some(c);
    report.notify_errors.extend(errors);
}

/// Tells the condition `key`: `low` (its message) once per `every`; its end once, as `ok`.
fn tell(
    cfg: &crate::lifecycle::config::NotifyConfig,
    told: &mut NotifyState,
    key: &str,
    low: Option<&str>,
    ok: String,
    now: DateTime<FixedOffset>,
    every: chrono::Duration,
) -> Vec<String> {
    match low {
        Some(msg) if told.condition_due(key, now, every, msg) => {
            notify::deliver(cfg, told, key, vec![Event::new("capacity", key, now, msg.to_string())])
        }
        Some(_) => Vec::new(),
        // `succeeded` ends the record and gives a recovery only when the low state was told.
        None => match told.succeeded(key, key, now) {
            Some(mut ev) => {
                ev.message = ok;
                notify::deliver(cfg, told, key, vec![ev])
            }
            None => Vec::new(),
        },
    }
}

/// The `status` lines: the repository's file system and each remote's last figures.
pub fn render(c: &CapacityStatus) -> String {
    let h = human_bytes;
    let mut out = String::new();
    if let Some(r) = &c.repository {
        out.push_str(&format!(
            "\nrepository file system: {} free of {} ({:.1}% used, threshold {}%)",
            h(r.available_bytes),
            h(r.total_bytes),
            r.used_percent,
            r.warn_percent
        ));
        if let Some(t) = &r.next_copy_type {
            let room = if r.room_for_next_copy { "fits" } else { "does NOT fit" };
            out.push_str(&format!("; next copy of {t} ({}) {room}", h(r.next_copy_bytes)));
        }
        out.push_str(if r.low { ": LOW\n" } else { "\n" });
    }
    for r in &c.remotes {
        let when = crate::util::show_time_str(&r.checked);
        match (r.reported, r.free_bytes) {
            (false, _) => out.push_str(&format!("remote {} quota: not reported by the backend\n", r.name)),
            (true, free) => out.push_str(&format!(
                "remote {} quota: {} free of {}{} (as of {when}){}\n",
                r.name,
                free.map_or_else(|| "?".into(), h),
                r.total_bytes.map_or_else(|| "?".into(), h),
                r.used_percent.map(|p| format!(", {p:.1}% used")).unwrap_or_default(),
                if r.low { ": LOW" } else { "" }
            )),
        }
    }
    for w in c.warnings() {
        out.push_str(&format!("CAPACITY: {w}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_is_low_above_the_threshold_or_without_room() {
        let now = DateTime::parse_from_rfc3339("2030-01-01T00:00:00+00:00").unwrap();
        let a = |t, f| Some(About { total: Some(t), used: None, free: Some(f) });
        assert!(!judge_remote("r", a(1000, 500), 10, 20, 80, now).low);
        let r = judge_remote("r", a(1000, 100), 10, 20, 80, now);
        assert!(r.low && r.reason.as_deref().unwrap().contains("90.0% full"), "{r:?}");
        let r = judge_remote("r", a(1000, 500), 600, 20, 80, now);
        assert!(r.low && r.reason.as_deref().unwrap().contains("less than"), "{r:?}");
        let r = judge_remote("r", None, 10_000, 0, 80, now);
        assert!(!r.reported && !r.low);
    }

    #[test]
    fn a_backend_without_about_is_not_reported() {
        let m = RcloneStore::new("m", ":memory:", &[]);
        assert_eq!(m.about(Duration::from_secs(30)).unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let l = RcloneStore::new("l", &format!(":local:{}", dir.path().display()), &[]);
        assert!(l.about(Duration::from_secs(30)).unwrap().is_some_and(|a| a.total.is_some()));
    }
}
