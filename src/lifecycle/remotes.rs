//! Remotes as the configuration names them: finding one, syncing all of them with a history row
//! each, and checking one against the local repository (`verify --remote`), each honouring the
//! remote's own retention.

use std::collections::HashSet;
use std::path::Path;

use crate::error::{Error, Result};
use crate::lifecycle::clock::{Clock, SystemClock};
use crate::lifecycle::config::Config;
use crate::lifecycle::history::{History, Outcome, Run};
use crate::lifecycle::notify::{self, NotifyState, Policy};
use crate::lifecycle::runner::SyncOutcome;
use crate::ops::snapshot_set::SnapshotSet;
use crate::ops::sync::RemoteCheck;
use crate::repo::{PasswordFn, Repo};
use crate::store::rclone::RcloneStore as Rclone;
use crate::store::{Handle, LocalStore};

/// A remote by its configured name, or an rclone target given directly (`gdrive:backups`).
pub fn find(cfg: Option<&Config>, name: &str) -> Result<Rclone> {
    if let Some(r) = cfg.and_then(|c| c.backup.remotes.iter().find(|r| r.name == name)) {
        return Ok(r.store());
    }
    if name.contains(':') {
        return Ok(Rclone::new(name, name, &[]));
    }
    let known: Vec<String> = cfg.map(|c| c.backup.remotes.iter().map(|r| r.name.clone()).collect()).unwrap_or_default();
    Err(Error::NotFound(format!(
        "no remote {name:?} (configured: {}); give a configured name or an rclone target like gdrive:backups",
        if known.is_empty() { "none".into() } else { known.join(", ") }
    )))
}

/// The remotes a command applies to: `only` (a name or target), else every configured one.
pub fn selected(cfg: Option<&Config>, only: Option<&str>) -> Result<Vec<Rclone>> {
    if let Some(n) = only {
        return Ok(vec![find(cfg, n)?]);
    }
    Ok(cfg.map(|c| c.backup.remotes.iter().map(|r| r.store()).collect()).unwrap_or_default())
}

/// Snapshot files a configured remote's own retention leaves out (none without a retention).
/// `set` is brought up to date only when there is a retention to apply.
pub fn remote_exclusions(
    cfg: Option<&Config>,
    repo: &Repo,
    name: &str,
    set: &mut SnapshotSet,
    clock: &dyn Clock,
) -> Result<HashSet<Handle>> {
    let ret = cfg.and_then(|c| c.backup.remotes.iter().find(|r| r.name == name)).and_then(|r| r.retention.clone());
    Ok(match ret {
        Some(r) => {
            set.refresh(repo)?;
            crate::ops::sync::retention_exclusions(set.all(), &r, clock.now().fixed_offset())
        }
        None => Default::default(),
    })
}

/// Attempts of one remote's sync in one run when it fails with a transient error.
pub const SYNC_ATTEMPTS: u32 = 3;

/// How [`sync_all`] syncs.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Report what would be done, change nothing (and record nothing).
    pub dry_run: bool,
    /// First retry delay of a transient failure; doubles each retry.
    pub retry_base: std::time::Duration,
}

/// Syncs each remote, retrying a transient failure ([`SYNC_ATTEMPTS`] attempts in all), recording
/// each in the history and telling a failure (once, then as reminders) and a recovery as for a
/// backup type; a failure is reported, never raised.
pub fn sync_all(
    cfg: Option<&Config>,
    repo: &Repo,
    remotes: &[Rclone],
    opts: &SyncOptions,
    set: &mut SnapshotSet,
    clock: &dyn Clock,
) -> Vec<SyncOutcome> {
    let dry_run = opts.dry_run;
    let mut out = Vec::new();
    let notify_cfg = cfg.and_then(|c| c.backup.notify.clone()).unwrap_or_default();
    let policy = Policy::of(&notify_cfg);
    let root = repo.store().root();
    let mut told = match cfg {
        Some(c) => crate::lifecycle::state::notify_state_for(c, Some(root)),
        None => NotifyState::in_repository(root),
    };
    for remote in remotes {
        // The whole sync of one remote, retries included, is bounded: a remote that hangs cannot
        // hold the run.
        let remote = &remote.bounded();
        let start = chrono::Local::now();
        let mut retries = 0;
        let r = loop {
            let r = remote_exclusions(cfg, repo, &remote.name, set, clock)
                .and_then(|ex| crate::ops::sync::sync(repo.store(), remote, &remote.name, dry_run, &ex));
            match r {
                Err(e) if retryable(&e) && retries + 1 < SYNC_ATTEMPTS && !remote.out_of_time() => {
                    let wait = opts.retry_base * 2u32.pow(retries);
                    tracing::warn!("sync to {}: {e}; retrying in {:.1}s", remote.name, wait.as_secs_f64());
                    std::thread::sleep(wait);
                    retries += 1;
                }
                r => break r,
            }
        };
        let mut o = SyncOutcome { remote: remote.name.clone(), ..Default::default() };
        let end = chrono::Local::now().to_rfc3339();
        let mut run =
            Run { retries, ..Run::new(format!("sync:{}", remote.name), start.to_rfc3339(), end, Outcome::Success) };
        match r {
            Ok(rep) => {
                o.uploaded = rep.uploaded.len();
                o.uploaded_bytes = rep.uploaded_bytes;
                o.deleted = rep.deleted.len();
                o.foreign = rep.foreign.clone();
                run.files = rep.uploaded.len() as u64;
                run.bytes_added = rep.uploaded_bytes;
                if rep.is_damaged() {
                    // Not uploaded, so the sync did not complete: recorded as failed.
                    tracing::error!(
                        "sync to {}: {} damaged local files not uploaded ({} repaired from the remote)",
                        remote.name,
                        rep.local_damaged.len(),
                        rep.local_repaired.len()
                    );
                    run.result = Outcome::Failed;
                    run.error = Some(format!(
                        "damaged local files (not uploaded): {}; repaired from the remote: {}",
                        rep.local_damaged.join(", "),
                        rep.local_repaired.len()
                    ));
                }
                o.report = Some(rep);
            }
            Err(e) => {
                // Not logged here: the caller prints the outcome's error, once.
                o.error = Some(e.to_string());
                run.result = Outcome::Failed;
                run.error = o.error.clone();
            }
        }
        if !dry_run {
            if let Ok(h) = History::open(repo.store().root()) {
                let _ = h.record(&run);
            }
            let (subject, what, now) =
                (&run.backup_type, format!("sync to {}", remote.name), clock.now().fixed_offset());
            let events = match &run.error {
                Some(e) => told.failed(subject, &what, now, e, &policy),
                None => told.succeeded(subject, &what, now).into_iter().collect(),
            };
            o.notify_errors = notify::deliver(&notify_cfg, &mut told, subject, events);
        }
        out.push(o);
    }
    if let Err(e) = told.save() {
        tracing::warn!("notification state not saved: {e}");
    }
    out
}

/// Whether a failed sync is worth another attempt in the same run: a transient error, unless
/// rclone was killed by a signal from outside (someone stopped it; the next run tries again).
fn retryable(e: &Error) -> bool {
    e.is_transient() && !matches!(e, Error::Io { err, .. } if err.kind() == std::io::ErrorKind::Interrupted)
}

/// `verify --remote`: compares the remote's inventory with the local repository at `local`. A
/// remote with its own retention is expected to lack the snapshots that retention drops, which
/// needs the local snapshot list and so the password.
pub fn check(cfg: Option<&Config>, local: &Path, remote: &Rclone, password: PasswordFn) -> Result<RemoteCheck> {
    let has_retention = cfg
        .and_then(|c| c.backup.remotes.iter().find(|r| r.name == remote.name))
        .is_some_and(|r| r.retention.is_some());
    let exclude = if has_retention {
        let repo = Repo::open(local, password)?;
        remote_exclusions(cfg, &repo, &remote.name, &mut SnapshotSet::new(), &SystemClock)?
    } else {
        Default::default()
    };
    crate::ops::sync::check(&LocalStore::new(local), remote, &remote.name, &exclude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_name_says_what_is_configured() {
        let e = find(None, "usb").unwrap_err();
        assert!(matches!(e, Error::NotFound(_)));
        assert!(e.to_string().contains("(configured: none)"), "{e}");
        assert_eq!(find(None, "gdrive:backups").unwrap().name, "gdrive:backups");
        assert!(selected(None, None).unwrap().is_empty());
    }
}
