//! `export` as configured: which snapshots, under which name, and how long the dated layout keeps
//! its files (the type's retention).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::manifest::Snapshot;
use crate::id::SnapshotId;
use crate::lifecycle::config::Config;
use crate::repo::Repo;

/// Archive layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `NAME_backup_TYPE_TIME.ext` files side by side.
    Flat,
    /// `YYYYMMDD/` directories with `backup_metadata.json`.
    Dated,
}

/// What to export.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    /// Snapshot specs (id prefix, `latest`, `TYPE:latest`).
    pub snapshots: Vec<String>,
    /// Also the latest snapshot of each type.
    pub latest: bool,
    /// Output directory.
    pub out: PathBuf,
    /// Layout.
    pub layout: Layout,
    /// Name prefix; default the config's `name`, else "cairn".
    pub name: Option<String>,
}

/// Days the dated layout keeps a type's files: the type's `keep_within`, else its `keep_daily`,
/// else 30.
pub fn dated_keep_days(cfg: Option<&Config>, backup_type: &str) -> i64 {
    cfg.and_then(|c| c.type_config(backup_type))
        .and_then(|t| t.retention.as_ref())
        .and_then(|r| r.keep_within.map(|d| d.duration().num_days()).or(r.keep_daily.map(i64::from)))
        .unwrap_or(30)
}

/// Exports the requested snapshots under the repository lock; `on_file` hears of each file
/// written, as it is written.
pub fn export(
    repo: &mut Repo,
    cfg: Option<&Config>,
    req: &ExportRequest,
    on_file: &mut dyn FnMut(&SnapshotId, &Snapshot, &Path),
) -> Result<()> {
    let _lock = crate::store::lock::Lock::acquire(repo.store(), false, "export")?;
    repo.sync_index()?;
    let name = match &req.name {
        Some(n) => n.clone(),
        None => cfg.map(|c| c.backup.name.clone()).unwrap_or_else(|| "cairn".into()),
    };
    let mut chosen = Vec::new();
    if req.latest {
        let (all, bad) = repo.snapshots()?;
        if !bad.is_empty() {
            // An unreadable file may be some type's newest: never export an older one silently.
            return Err(repo.damaged_snapshots("cannot pick the latest snapshots", &bad));
        }
        let mut latest: BTreeMap<String, (SnapshotId, Snapshot)> = BTreeMap::new();
        for (id, s) in all {
            latest.insert(s.backup_type.clone(), (id, s));
        }
        chosen.extend(latest.into_values());
    }
    for spec in &req.snapshots {
        chosen.push(repo.resolve(spec)?);
    }
    if chosen.is_empty() {
        return Err(Error::NotFound("nothing to export: the repository has no snapshots".into()));
    }
    for (id, s) in &chosen {
        let files = match req.layout {
            Layout::Dated => {
                crate::ops::export::export_dated(repo, id, s, &req.out, dated_keep_days(cfg, &s.backup_type))?
            }
            Layout::Flat => vec![crate::ops::export::export(repo, s, &name, &req.out)?],
        };
        for f in files {
            on_file(id, s, &f);
        }
    }
    Ok(())
}
