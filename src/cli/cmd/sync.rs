//! `sync` (upload to remotes what they lack) and `clone` (a remote into a new local repository).

use anyhow::{anyhow, bail, Result};

use crate::cli::{render, Ctx, Finish};
use crate::repo::Repo;
use crate::util::human_bytes;

pub(in crate::cli) fn sync(ctx: &Ctx, dry_run: bool) -> Result<Finish> {
    let repo_path = ctx.repo_path()?;
    let repo = Repo::open(&repo_path, &|| ctx.password())?;
    let remotes = ctx.remotes()?;
    if remotes.is_empty() {
        bail!("no remotes configured: add \"remotes\" to the config or pass --remote gdrive:path");
    }
    let results = crate::lifecycle::remotes::sync_all(
        ctx.config()?,
        &repo,
        &remotes,
        &crate::lifecycle::remotes::SyncOptions { dry_run, retry_base: crate::cli::cmd::backup::retry_base() },
        &mut crate::ops::snapshot_set::SnapshotSet::new(),
        &crate::lifecycle::clock::SystemClock,
    );
    if ctx.json() {
        render::print_json(&serde_json::to_value(&results)?);
    } else {
        for r in &results {
            for e in &r.notify_errors {
                eprintln!("warning: notification not delivered: {e}");
            }
            match (&r.error, &r.report) {
                (Some(e), _) => println!("{}: FAILED: {e}", r.remote),
                (None, Some(rep)) => {
                    println!(
                        "{}: {}{} files uploaded ({}), {} repaired, {} deleted, {} foreign files left alone, {:.2}s",
                        r.remote,
                        if dry_run { "dry run: " } else { "" },
                        rep.uploaded.len(),
                        human_bytes(rep.uploaded_bytes),
                        rep.repaired.len(),
                        rep.deleted.len(),
                        rep.foreign.len(),
                        rep.duration_s
                    );
                    for f in &rep.local_damaged {
                        if rep.local_repaired.contains(f) {
                            println!(
                                "  DAMAGED local file {f}: not uploaded; repaired from the remote (its copy checked against the name, the damaged local file removed and the good copy put in its place)"
                            );
                        } else {
                            println!("  DAMAGED local file {f}: not uploaded, and the remote has no good copy of it");
                        }
                    }
                    for f in &rep.foreign {
                        println!("  foreign (not written by this repository, not deleted): {f}");
                    }
                    for f in &rep.duplicates {
                        println!("  duplicate name on the remote: {f}");
                    }
                }
                (None, None) => {}
            }
        }
    }
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        bail!("{failed} of {} remotes failed to sync", results.len());
    }
    // Local damage is verify's damage code, even when every damaged file was repaired: the
    // repository was damaged, and what else shares its disk deserves a look.
    if results.iter().any(|r| r.report.as_ref().is_some_and(|r| r.is_damaged())) {
        return Ok(Finish::Damaged);
    }
    Ok(Finish::Ok)
}

pub(in crate::cli) fn clone(ctx: &Ctx) -> Result<Finish> {
    let name = ctx.cli.remote.clone().ok_or_else(|| anyhow!("clone needs --remote NAME"))?;
    let dest = ctx.cli.repo.clone().ok_or_else(|| anyhow!("clone needs --repo DIR for the new local repository"))?;
    let remote = ctx.remote(&name)?;
    let start = std::time::Instant::now();
    crate::ops::clone::clone_all(&remote, &dest)?;
    let repo = Repo::open(&dest, &|| ctx.password())?;
    let (snaps, _) = repo.snapshots()?;
    println!(
        "cloned remote {} into {}: {} snapshots in {:.2}s",
        remote.name,
        dest.display(),
        snaps.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(Finish::Ok)
}
