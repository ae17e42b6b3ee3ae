//! `status`: where each type stands (last success, age against its RPO, next due, failures,
//! newest snapshot) and what the repository holds; also Prometheus textfile metrics.

use chrono::{DateTime, FixedOffset, Local};
use serde::Serialize;

use crate::error::Result;
use crate::format::manifest::Snapshot;
use crate::id::SnapshotId;
use crate::lifecycle::config::Config;
use crate::lifecycle::history::History;
use crate::lifecycle::runner::{due_now, last_success};
use crate::lifecycle::schedule::{self, human_duration, Schedule};
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
    /// Older than its RPO (or never backed up).
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
    /// Snapshot files that could not be read, each named with the reason (filled in by the
    /// caller, which holds the snapshot set).
    pub unreadable_snapshots: Vec<String>,
    /// The last verify (by hand or scheduled), with the schedule's next due time.
    pub last_verify: Option<crate::lifecycle::verify_runs::VerifyStatus>,
    /// Pre-change snapshots not yet verified (`mark-verified`), oldest first, with their age.
    pub pending_verification: Vec<crate::ops::kinds::Pending>,
    /// Room in the repository's file system, and each remote as its last `rclone about` found it.
    pub capacity: Option<crate::lifecycle::capacity::CapacityStatus>,
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
    for (_, s) in snaps {
        if !names.contains(&s.backup_type) {
            names.push(s.backup_type.clone());
        }
    }
    for name in names {
        let tc = cfg.and_then(|c| c.type_config(&name));
        let last = last_success(&history, snaps, &name, now)?;
        // A type that is only in the repository: no schedule, a day's RPO.
        let r = tc.map_or_else(|| chrono::Duration::days(1), |t| t.rpo());
        let due = match tc {
            Some(t) => due_now(t, last, now),
            None => schedule::due(None, None, last.map(|t| t.with_timezone(&Local)), now),
        };
        let recent = history.list(Some(&name), 1)?;
        let last_error = recent.first().filter(|r| r.result.failed()).and_then(|r| r.error.clone());
        let of_type: Vec<_> = snaps.iter().filter(|(_, s)| s.backup_type == name).collect();
        types.push(TypeStatus {
            backup_type: name.clone(),
            schedule: tc.and_then(|t| t.schedule),
            last_success: last,
            age_s: last.map(|t| (now_f - t).num_seconds()),
            rpo_s: r.num_seconds(),
            overdue: last.is_none_or(|t| now_f - t > r),
            next_due: due.next,
            due_now: due.due,
            due_reason: due.reason,
            consecutive_failures: history.consecutive_failures(&name)?,
            last_error,
            newest_snapshot: of_type.last().map(|(id, _)| *id),
            snapshots: of_type.len(),
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
    Ok(Status {
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
    })
}

/// Human rendering.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "repository {} ({})\n",
        s.repository,
        if s.encryption == "none" { "NOT encrypted" } else { "encrypted" }
    ));
    out.push_str(&format!(
        "{} snapshots, {} stored for {} of snapshots (dedup ratio {:.1}x)\n\n",
        s.snapshots,
        crate::util::human_bytes(s.stored_bytes),
        crate::util::human_bytes(s.logical_bytes),
        s.dedup_ratio
    ));
    out.push_str(&format!(
        "{:<10} {:<18} {:<25} {:>10} {:>8} {:<25} {:>5}  {}\n",
        "TYPE", "SCHEDULE", "LAST SUCCESS", "AGE", "RPO", "NEXT DUE", "FAILS", "STATE"
    ));
    for t in &s.types {
        let last = t.last_success.map(|x| crate::util::show_time(&x)).unwrap_or_else(|| "never".into());
        let age = t.age_s.map(|a| human_duration(chrono::Duration::seconds(a))).unwrap_or_else(|| "-".into());
        let next = if t.due_now { "now".to_string() } else { crate::util::show_time(&t.next_due) };
        let state = if t.consecutive_failures > 0 {
            format!("FAILING: {}", t.last_error.clone().unwrap_or_default())
        } else if t.overdue {
            "OVERDUE".to_string()
        } else {
            "ok".to_string()
        };
        out.push_str(&format!(
            "{:<10} {:<18} {:<25} {:>10} {:>8} {:<25} {:>5}  {}\n",
            t.backup_type,
            t.schedule.map_or_else(|| "-".into(), |s| s.to_string()),
            last,
            age,
            human_duration(chrono::Duration::seconds(t.rpo_s)),
            next,
            t.consecutive_failures,
            state
        ));
    }
    for r in &s.remotes {
        let last = r.last_sync.as_deref().map(crate::util::show_time_str).unwrap_or_else(|| "never".into());
        out.push_str(&format!(
            "\nremote {} ({}): last sync {last}, {} files ({}) pending{}",
            r.name,
            r.target,
            r.pending_files,
            crate::util::human_bytes(r.pending_bytes),
            r.last_error.as_deref().map(|e| format!("; last sync FAILED: {e}")).unwrap_or_default()
        ));
        if r.failing {
            let since = r.failing_since.as_deref().map(|x| x.get(..19).unwrap_or(x).replace('T', " "));
            out.push_str(&format!("\n  FAILING since {}", since.unwrap_or_else(|| "?".into())));
        }
        if r.behind {
            let age = human_duration(chrono::Duration::seconds(r.oldest_pending_age_s.unwrap_or(0)));
            out.push_str(&format!("\n  BEHIND: the oldest pending file has waited {age}, longer than its RPO"));
        }
    }
    if !s.remotes.is_empty() {
        out.push('\n');
    }
    for a in &s.clock_anomalies {
        out.push_str(&format!(
            "\nCLOCK: snapshot {} ({}) dated {}: {}; kept",
            a.id.short(),
            a.backup_type,
            a.time,
            a.problem
        ));
    }
    for u in &s.unreadable_snapshots {
        out.push_str(&format!("\nDAMAGED: unreadable snapshot file {u} (run `cairn repair snapshots`)"));
    }
    if !s.clock_anomalies.is_empty() || !s.unreadable_snapshots.is_empty() {
        out.push('\n');
    }
    out.push_str(&crate::lifecycle::verify_runs::render_status(s.last_verify.as_ref()));
    out.push_str(&crate::lifecycle::kinds::render_pending(&s.pending_verification));
    let remote_trouble: Vec<&str> =
        s.remotes.iter().filter(|r| r.failing || r.behind).map(|r| r.name.as_str()).collect();
    if !remote_trouble.is_empty() {
        out.push_str(&format!("\nREMOTES FAILING OR BEHIND: {}\n", remote_trouble.join(", ")));
    }
    if let Some(c) = &s.capacity {
        out.push_str(&crate::lifecycle::capacity::render(c));
    }
    // The all-clear is only true when no remote is failing or behind either.
    if s.overdue.is_empty() {
        if remote_trouble.is_empty() {
            out.push_str("\nall types are within their RPO\n");
        }
    } else {
        out.push_str(&format!("\nOVERDUE: {}\n", s.overdue.join(", ")));
    }
    out
}

/// Prometheus text format for node_exporter's textfile collector.
pub fn metrics(s: &Status) -> String {
    let mut m = String::new();
    // Each metric's HELP, TYPE and samples form one group, as the text format requires.
    type Sample = fn(&TypeStatus) -> i64;
    let per_type: [(&str, &str, Sample); 4] = [
        ("cairn_last_success_timestamp_seconds", "Unix time of the last successful backup of a type.", |t| {
            t.last_success.map_or(0, |x| x.timestamp())
        }),
        ("cairn_overdue", "1 when a type's last success is older than its RPO.", |t| t.overdue as i64),
        ("cairn_consecutive_failures", "Failed runs since the last success.", |t| t.consecutive_failures as i64),
        ("cairn_snapshots", "Snapshots of a type.", |t| t.snapshots as i64),
    ];
    for (name, help, f) in per_type {
        m.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for t in &s.types {
            m.push_str(&format!(
                "{name}{{type=\"{}\"}} {}\n",
                t.backup_type.replace('\\', "\\\\").replace('"', "\\\""),
                f(t)
            ));
        }
    }
    for (name, help, v) in [
        ("cairn_repository_stored_bytes", "Bytes the repository occupies.", s.stored_bytes),
        ("cairn_repository_logical_bytes", "Sum of the logical sizes of all snapshots.", s.logical_bytes),
    ] {
        m.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"));
    }
    m
}

/// Writes metrics atomically (node_exporter must never read half a file).
pub fn write_metrics(path: &std::path::Path, s: &Status) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, metrics(s)).map_err(|e| crate::Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| crate::Error::io(path, e))
}
