//! `backup`: run the configured types, sync remotes after a success, report.

use crate::lifecycle::clock::Clock;
use anyhow::{bail, Result};

use crate::cli::args::BackupArgs;
use crate::cli::{render, Ctx, Finish};
use crate::format::repo_config::Encryption;
use crate::lifecycle::config::Config;
use crate::lifecycle::history::Outcome;
use crate::lifecycle::outside;
use crate::lifecycle::runner::{self, BackupReport, RunOptions};
use crate::lifecycle::state::State;
use crate::repo::Repo;
use crate::util::human_bytes;

pub(in crate::cli) fn run(ctx: &Ctx, a: &BackupArgs) -> Result<Finish> {
    let clock = crate::lifecycle::clock::SystemClock;
    let cfg = config_or_record(ctx, &clock)?;
    for t in &a.types {
        if cfg.type_config(t).is_none() {
            let known: Vec<&str> = cfg.types.iter().map(|(n, _)| n.as_str()).collect();
            bail!("{}: no backup type {t:?} (configured: {})", cfg.file.display(), known.join(", "));
        }
    }
    let state = outside::state_for(cfg);
    let mut repo = open_or_record(ctx, cfg, state.as_ref(), &a.types, &clock)?;
    let opts = RunOptions {
        now: a.now,
        types: a.types.clone(),
        flags: crate::lifecycle::job::RunFlags { no_vacuum: a.no_vacuum, force_read: a.force_read },
        retry_base: retry_base(),
    };
    let mut set = crate::ops::snapshot_set::SnapshotSet::new();
    let mut report = runner::run_backups(&mut repo, cfg, &opts, &mut set, &clock)?;
    if let Some(s) = &state {
        let history = crate::lifecycle::history::History::open(repo.store().root())?;
        if let Err(e) = outside::note_successes(s, cfg, &history, set.all(), &clock.now()) {
            tracing::warn!("state kept outside the repository: {e}");
        }
    }
    if !a.no_sync && report.ran.iter().any(|r| r.result == Outcome::Success) {
        report.sync = crate::lifecycle::remotes::sync_all(Some(cfg), &repo, &ctx.remotes()?, false, &mut set, &clock);
    }
    print_report(ctx, &report);
    if let Some(m) = &a.metrics_file {
        let st = crate::lifecycle::status::status_of(&repo, Some(cfg), &set, &clock.now())?;
        crate::lifecycle::status::write_metrics(m, &st)?;
    }
    let failed = report.failed();
    if failed > 0 {
        bail!("{failed} of {} backup types failed", report.ran.len());
    }
    if !report.unreadable_snapshots.is_empty() {
        // The backups are stored, but the repository holds damage: never a clean success.
        eprintln!(
            "error: the repository has {} unreadable snapshot files (exit 3); `cairn repair snapshots` moves them to quarantine/snapshots/:",
            report.unreadable_snapshots.len()
        );
        for u in &report.unreadable_snapshots {
            eprintln!("  {u}");
        }
        return Ok(Finish::Damaged);
    }
    let partial = report.partial();
    if partial > 0 {
        eprintln!(
            "warning: {partial} of {} backup types saved a snapshot without some files that could not be read (listed above)",
            report.ran.len()
        );
        return Ok(Finish::Partial);
    }
    Ok(Finish::Ok)
}

/// The first retry delay of a transient failure: CAIRN_RETRY_BASE_MS when set (the tests make
/// retries quick with it; it only paces retries), else the runner's default.
pub(in crate::cli) fn retry_base() -> std::time::Duration {
    std::env::var("CAIRN_RETRY_BASE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(runner::DEFAULT_RETRY_BASE, std::time::Duration::from_millis)
}

/// The configuration; one that does not load is recorded in its state outside the repository
/// and notified (as far as its notify section can still be read) before the error is returned.
pub(in crate::cli) fn config_or_record<'a>(ctx: &'a Ctx, clock: &dyn Clock) -> Result<&'a Config> {
    let e = match ctx.require_config() {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    // Only a file that exists has a state directory and a notify section to read.
    if let Ok(Some(file)) = Config::locate(ctx.cli.config.as_deref()) {
        warn_undelivered(&outside::config_failed(&file, &format!("{e:#}"), clock));
    }
    Err(e)
}

/// [`open_or_create`], and a failure to open recorded and notified through the state outside the
/// repository, with the dead-man check run from there.
pub(in crate::cli) fn open_or_record(
    ctx: &Ctx,
    cfg: &Config,
    state: Option<&State>,
    types: &[String],
    clock: &dyn Clock,
) -> Result<Repo> {
    let start = clock.now();
    let e = match open_or_create(ctx, cfg, state, clock) {
        Ok(r) => return Ok(r),
        Err(e) => e,
    };
    if let Some(s) = state {
        let types: Vec<String> =
            if types.is_empty() { cfg.types.iter().map(|(n, _)| n.clone()).collect() } else { types.to_vec() };
        let repo_path = ctx.repo_path().ok();
        match outside::open_failed(s, cfg, repo_path.as_deref(), &types, start, &format!("{e:#}"), clock) {
            Ok(errors) => warn_undelivered(&errors),
            Err(r) => tracing::warn!("recording the failure outside the repository: {r}"),
        }
    }
    Err(e)
}

fn warn_undelivered(errors: &[String]) {
    for e in errors {
        eprintln!("warning: notification not delivered: {e}");
    }
}

/// Opens the configured repository, creating it on first use (and saying so) unless `state`
/// remembers a repository this config had there, which is then reported gone.
pub(in crate::cli) fn open_or_create(
    ctx: &Ctx,
    cfg: &Config,
    state: Option<&State>,
    clock: &dyn Clock,
) -> Result<Repo> {
    let path = ctx.repo_path()?;
    // With --remote the repository opened is that remote's mirror, not `path`.
    let state = state.filter(|_| ctx.cli.remote.is_none());
    let remembered = match state {
        Some(s) => s.remembered(&path)?,
        None => None,
    };
    let password = || ctx.with_passwords(|p| p.for_new_repository());
    let created = crate::lifecycle::first_use::create_if_fresh(&path, cfg, ctx.kdf()?, &password, remembered.as_ref())?;
    if let Some(c) = &created {
        if !ctx.quiet() && !ctx.json() {
            println!(
                "created repository {} at {} ({})",
                c.id.short(),
                path.display(),
                if c.encryption == Encryption::None { "NOT encrypted" } else { "encrypted" }
            );
        }
    }
    if let (Some(s), Some(c)) = (state, &created) {
        // Remembered at once: a run that fails after creating it must not create it again.
        if let Err(e) = s.remember(&path, &c.id.to_hex(), &clock.now().to_rfc3339(), true) {
            tracing::warn!("state kept outside the repository: {e}");
        }
    }
    let repo = ctx.open()?;
    if let Some(s) = state {
        warn_undelivered(&outside::opened(s, cfg, &path, &repo.config().id.to_hex(), created.is_some(), clock)?);
    }
    Ok(repo)
}

/// Renders one backup round (also the daemon's).
pub(in crate::cli) fn print_report(ctx: &Ctx, report: &BackupReport) {
    if ctx.json() {
        render::print_json(&serde_json::to_value(report).expect("serializable"));
        // Warnings go to stderr in both modes: a script reading stdout's JSON still logs them.
        for r in &report.ran {
            for w in &r.warnings {
                eprintln!("warning: {}: {w}", r.backup_type);
            }
        }
        return;
    }
    let quiet = ctx.quiet();
    for r in &report.ran {
        let name = &r.backup_type;
        let retries = if r.retries > 0 { format!(" after {} retries", r.retries) } else { String::new() };
        match (&r.result, &r.stats) {
            (Outcome::Unchanged, _) if quiet => {}
            (Outcome::Unchanged, _) => {
                println!(
                    "{name}: unchanged since snapshot {}, nothing stored, {:.2}s",
                    r.snapshot.map(|s| s.short()).unwrap_or_default(),
                    r.duration_s
                )
            }
            (_, Some(_)) if quiet && r.file_errors.is_empty() && r.warnings.is_empty() => {}
            (_, Some(s)) => {
                let dedup = if s.logical_bytes > 0 {
                    (100.0 * (1.0 - s.new_raw_bytes as f64 / s.logical_bytes as f64)).clamp(0.0, 100.0)
                } else {
                    100.0
                };
                println!(
                    "{name}: snapshot {} saved: {} files, {} read, {} new ({} stored, {dedup:.1}% deduplicated), {:.2}s{retries}",
                    r.snapshot.map(|s| s.short()).unwrap_or_default(),
                    s.files,
                    human_bytes(s.logical_bytes),
                    human_bytes(s.new_raw_bytes),
                    human_bytes(s.new_bytes),
                    r.duration_s
                );
                for e in &r.file_errors {
                    eprintln!("{name}: error: {}: {}", e.path, e.message);
                }
                for w in &r.warnings {
                    eprintln!("warning: {name}: {w}");
                }
            }
            (_, None) => println!("{name}: FAILED{retries}: {}", r.error.clone().unwrap_or_default()),
        }
    }
    if !quiet {
        for (t, why) in &report.skipped {
            println!("{t}: not due ({why})");
        }
        if !report.forgotten.is_empty() {
            println!("retention removed {} snapshots", report.forgotten.len());
        }
        if let Some(p) = &report.prune {
            println!(
                "prune: {} packs deleted, {} repacked, {} freed",
                p.packs_deleted + p.unindexed_deleted,
                p.packs_repacked,
                human_bytes(p.bytes_freed.max(0) as u64)
            );
        }
    }
    for r in &report.sync {
        match &r.error {
            None => println!(
                "sync {}: {} files uploaded ({}), {} deleted",
                r.remote,
                r.uploaded,
                human_bytes(r.uploaded_bytes),
                r.deleted
            ),
            Some(e) => println!("sync {}: FAILED (the backup is safe locally; the next run catches up): {e}", r.remote),
        }
        for e in &r.notify_errors {
            eprintln!("warning: notification not delivered: {e}");
        }
    }
    if let Some(e) = &report.maintenance_error {
        eprintln!("warning: {e}");
    }
    for e in &report.notify_errors {
        eprintln!("warning: notification not delivered: {e}");
    }
}
