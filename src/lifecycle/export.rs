//! `export` as configured: which snapshots, under which name, and the dated layout's metadata
//! (status and expiry from each type's retention). Also the export `backup` writes after its
//! backups when the config has an `export` section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::manifest::{Snapshot, SnapshotKind};
use crate::id::SnapshotId;
pub use crate::lifecycle::config::Layout;
use crate::lifecycle::config::{Config, ExportConfig};
use crate::ops::export::dated::{DatedExport, DatedReport};
use crate::ops::snapshot_set::SnapshotSet;
use crate::repo::Repo;

pub mod facts;

/// What to export.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    /// Snapshot specs (id prefix, `latest`, `TYPE:latest`).
    pub snapshots: Vec<String>,
    /// Also the newest snapshot of each type of `kind` (default: the scheduled, daily, ones).
    pub latest: bool,
    /// The kind `latest` picks (None: daily).
    pub kind: Option<SnapshotKind>,
    /// Output directory.
    pub out: PathBuf,
    /// Layout.
    pub layout: Layout,
    /// Name prefix; default the config's `name`, else "cairn".
    pub name: Option<String>,
}

/// One file an export wrote or found intact.
#[derive(Clone, Debug)]
pub struct ExportedFile {
    /// Snapshot.
    pub id: SnapshotId,
    /// Its type.
    pub backup_type: String,
    /// The file.
    pub path: PathBuf,
    /// Written now (false: a dated export found it intact).
    pub written: bool,
}

/// What an export did.
#[derive(Clone, Debug, Default)]
pub struct ExportReport {
    /// Files of the chosen snapshots.
    pub files: Vec<ExportedFile>,
    /// Dated layout: files removed because retention removed their snapshot.
    pub removed: Vec<PathBuf>,
    /// Dated layout: files of removed snapshots kept because they changed since the export.
    pub kept_changed: Vec<PathBuf>,
}

/// The newest snapshot of each type among `all` (oldest first) of `kind`.
pub fn latest_of_kind(all: &[(SnapshotId, Snapshot)], kind: SnapshotKind) -> Vec<(SnapshotId, Snapshot)> {
    let mut latest: BTreeMap<&str, &(SnapshotId, Snapshot)> = BTreeMap::new();
    for p in all.iter().filter(|(_, s)| s.kind == kind) {
        latest.insert(&p.1.backup_type, p);
    }
    latest.into_values().cloned().collect()
}

/// Exports the requested snapshots under the repository lock.
pub fn export(repo: &mut Repo, cfg: Option<&Config>, req: &ExportRequest) -> Result<ExportReport> {
    let _lock = crate::store::lock::Lock::acquire(repo.store(), false, "export")?;
    repo.sync_index()?;
    let (all, bad) = repo.snapshots()?;
    let mut chosen = Vec::new();
    if req.latest {
        if !bad.is_empty() {
            // An unreadable file may be some type's newest: never export an older one silently.
            return Err(repo.damaged_snapshots("cannot pick the latest snapshots", &bad));
        }
        chosen.extend(latest_of_kind(&all, req.kind.unwrap_or(SnapshotKind::Daily)));
    }
    for spec in &req.snapshots {
        let c = repo.resolve(spec)?;
        if !chosen.iter().any(|(id, _)| *id == c.0) {
            chosen.push(c);
        }
    }
    if chosen.is_empty() {
        return Err(Error::NotFound(match (req.latest, req.kind) {
            (true, Some(k)) => format!("nothing to export: the repository has no {} snapshots", k.as_str()),
            (true, None) => {
                "nothing to export: the repository has no scheduled (daily) snapshots; name one, or give --kind".into()
            }
            _ => "nothing to export: the repository has no snapshots".into(),
        }));
    }
    let bad: Vec<SnapshotId> = bad.into_iter().map(|(id, _)| id).collect();
    write_export(repo, cfg, req.layout, &req.out, req.name.as_deref(), &chosen, &all, &bad)
}

#[allow(clippy::too_many_arguments, reason = "one call site each; a struct would only rename them")]
fn write_export(
    repo: &Repo,
    cfg: Option<&Config>,
    layout: Layout,
    out: &Path,
    name: Option<&str>,
    chosen: &[(SnapshotId, Snapshot)],
    all: &[(SnapshotId, Snapshot)],
    unreadable: &[SnapshotId],
) -> Result<ExportReport> {
    let mut report = ExportReport::default();
    match layout {
        Layout::Flat => {
            let name = match name {
                Some(n) => n.to_string(),
                None => cfg.map(|c| c.backup.name.clone()).unwrap_or_else(|| "cairn".into()),
            };
            for (id, s) in chosen {
                let path = crate::ops::export::export(repo, s, &name, out)?;
                report.files.push(ExportedFile { id: *id, backup_type: s.backup_type.clone(), path, written: true });
            }
        }
        Layout::Dated => {
            // A snapshot chosen after `all` was listed (a backup committed meanwhile) is one of
            // the repository's too: judged with the rest, never pruned as gone.
            let mut all = all.to_vec();
            for c in chosen {
                if !all.iter().any(|(id, _)| *id == c.0) {
                    all.push(c.clone());
                }
            }
            let all = &all[..];
            let verified = facts::verifications(repo, all)?;
            let facts = facts::facts(cfg, all, &verified, chrono::Local::now().fixed_offset());
            let of = |id: &SnapshotId, _: &Snapshot| facts.get(id).cloned().expect("facts of every snapshot in `all`");
            let x = DatedExport { out, chosen, all, unreadable, facts: &of };
            let DatedReport { files, removed, kept_changed } = crate::ops::export::dated::export_dated(repo, &x)?;
            report.files = files
                .into_iter()
                .map(|f| ExportedFile { id: f.snapshot, backup_type: f.backup_type, path: f.path, written: f.written })
                .collect();
            report.removed = removed;
            report.kept_changed = kept_changed;
        }
    }
    Ok(report)
}

/// The export after a backup, as `backup` reports it.
#[derive(Debug, Serialize)]
pub struct AfterBackup {
    /// Layout.
    pub layout: Layout,
    /// Where.
    pub out: PathBuf,
    /// Files written.
    pub written: usize,
    /// Files already there, intact.
    pub unchanged: usize,
    /// Files removed with their snapshots.
    pub removed: usize,
    /// Why it failed (the backups are stored all the same).
    pub error: Option<String>,
}

/// The configured export after a backup that stored `taken`: those snapshots, and for the dated
/// layout also each type's newest daily one (catching up an export that failed before) and every
/// pre-change and manual one, with the metadata refreshed and what retention removed pruned. `set` is the run's snapshot set, after
/// retention.
pub fn after_backup(
    repo: &Repo,
    cfg: &Config,
    x: &ExportConfig,
    set: &SnapshotSet,
    taken: &[SnapshotId],
) -> AfterBackup {
    let mut chosen: Vec<(SnapshotId, Snapshot)> =
        set.all().iter().filter(|(id, _)| taken.contains(id)).cloned().collect();
    if x.layout == Layout::Dated {
        // Pre-change and manual snapshots are few and kept on purpose: seed 001's metadata lists
        // them all, including those taken with `snapshot` since the last backup.
        let deliberate = set.all().iter().filter(|(_, s)| s.kind != SnapshotKind::Daily).cloned();
        for p in latest_of_kind(set.all(), SnapshotKind::Daily).into_iter().chain(deliberate) {
            if !chosen.iter().any(|(id, _)| *id == p.0) {
                chosen.push(p);
            }
        }
    }
    let unreadable: Vec<SnapshotId> = set.unreadable().iter().map(|(id, _)| *id).collect();
    let r = crate::store::lock::Lock::acquire(repo.store(), false, "export")
        .and_then(|_lock| write_export(repo, Some(cfg), x.layout, &x.out, None, &chosen, set.all(), &unreadable));
    let mut a = AfterBackup { layout: x.layout, out: x.out.clone(), written: 0, unchanged: 0, removed: 0, error: None };
    match r {
        Ok(r) => {
            a.written = r.files.iter().filter(|f| f.written).count();
            a.unchanged = r.files.len() - a.written;
            a.removed = r.removed.len();
        }
        Err(e) => {
            tracing::warn!("export to {}: {e}", x.out.display());
            a.error = Some(e.to_string());
        }
    }
    a
}
