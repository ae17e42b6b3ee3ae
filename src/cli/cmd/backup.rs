//! `backup`: run the configured types, sync the remotes that have pending files, report.

use crate::lifecycle::clock::Clock;
use anyhow::{bail, Result};

use crate::cli::args::BackupArgs;
use crate::cli::{render, Ctx, Finish};
use crate::format::repo_config::Encryption;
use crate::lifecycle::config::Config;
use crate::lifecycle::history::Outcome;
use crate::lifecycle::outside;
use crate::lifecycle::runner::{self, BackupReport, RunOptions, SyncOutcome, TypeResult};
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
    let take_as = take_as(a)?;
    let state = outside::state_for(cfg);
    let mut repo = open_or_record(ctx, cfg, state.as_ref(), &a.types, &clock)?;
    let opts = RunOptions {
        now: a.now || take_as.is_some(),
        take_as,
        types: a.types.clone(),
        flags: crate::lifecycle::job::RunFlags { no_vacuum: a.no_vacuum, force_read: a.force_read },
        retry_base: retry_base(),
    };
    let mut set = crate::ops::snapshot_set::SnapshotSet::new();
    let mut report = runner::run_backups_to(&mut repo, cfg, &opts, &mut set, &clock, &mut Lines(ctx))?;
    if let Some(s) = &state {
        let history = crate::lifecycle::history::History::open(repo.store().root())?;
        if let Err(e) = outside::note_successes(s, cfg, &history, set.all(), &clock.now()) {
            tracing::warn!("state kept outside the repository: {e}");
        }
    }
    // Every run, due or not: a remote with pending files or a failed last sync is synced.
    let po = crate::lifecycle::pending::PendingOptions { upload: !a.no_sync, retry_base: opts.retry_base };
    let owed = crate::lifecycle::pending::sync_owed(
        cfg,
        &repo,
        &ctx.remotes()?,
        &mut set,
        &clock,
        &po,
        &|_: &str| true,
        &mut Lines(ctx),
    );
    report.sync = owed.sync;
    report.notify_errors.extend(owed.notify_errors);
    // A run limited to named types does only those; the verify waits for a full run.
    if a.types.is_empty() {
        report.verify = crate::lifecycle::verify_runs::run_if_due(&mut repo, cfg, &clock);
    }
    crate::lifecycle::capacity::note(&mut report, cfg, &repo, set.all(), &clock.now());
    print_report(ctx, &report);
    if let Some(m) = &a.metrics_file {
        let st = crate::lifecycle::status::status_of(&repo, Some(cfg), &set, &clock.now())?;
        crate::lifecycle::status::write_metrics(m, &st)?;
    }
    let failed = report.failed();
    if failed > 0 {
        bail!("{failed} of {} backup types failed", report.ran.len());
    }
    if let Some(f) = crate::cli::cmd::verify::scheduled_finish(report.verify.as_ref())? {
        return Ok(f);
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

/// `--kind pre-change|manual` and its facts; `None` for a routine backup.
fn take_as(a: &BackupArgs) -> Result<Option<crate::ops::kinds::TakeAs>> {
    let kind = a.kind.as_deref().map(|k| crate::format::manifest::SnapshotKind::parse(k).expect("validated by clap"));
    let Some(kind) = kind else { return Ok(None) };
    let t = crate::ops::kinds::TakeAs {
        kind,
        description: a.description.clone(),
        ticket: a.ticket.clone(),
        purpose: a.purpose.clone(),
        retention: a.retention.clone(),
        creator: a.creator.clone(),
    };
    t.validate()?;
    Ok((kind != crate::format::manifest::SnapshotKind::Daily).then_some(t))
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

/// Prints each type's and each remote's line as it finishes (also the daemon's); with --json
/// nothing until [`print_report`] prints the round as one document.
pub(in crate::cli) struct Lines<'a>(pub(in crate::cli) &'a Ctx);

impl crate::lifecycle::sink::RunSink for Lines<'_> {
    fn type_done(&mut self, r: &TypeResult) {
        if !self.0.json() {
            print_type(self.0.quiet(), r);
        }
    }
    fn sync_done(&mut self, o: &SyncOutcome) {
        if !self.0.json() {
            print_sync(o);
        }
    }
}

fn print_type(quiet: bool, r: &TypeResult) {
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

fn print_sync(r: &SyncOutcome) {
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

/// Renders the rest of one backup round (also the daemon's), after [`Lines`] printed each type
/// and remote; with --json the whole round.
pub(in crate::cli) fn print_report(ctx: &Ctx, report: &BackupReport) {
    if ctx.json() {
        render::print_json(&serde_json::to_value(report).expect("serializable"));
        // Warnings go to stderr in both modes: a script reading stdout's JSON still logs them.
        for r in &report.ran {
            for w in &r.warnings {
                eprintln!("warning: {}: {w}", r.backup_type);
            }
        }
        capacity_warnings(report);
        return;
    }
    let quiet = ctx.quiet();
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
    if let Some(x) = &report.export {
        match &x.error {
            None if quiet => {}
            None => println!(
                "export to {}: {} files written, {} unchanged, {} removed",
                x.out.display(),
                x.written,
                x.unchanged,
                x.removed
            ),
            Some(e) => eprintln!("warning: export to {} FAILED (the backups are stored): {e}", x.out.display()),
        }
    }
    if let Some(e) = &report.maintenance_error {
        eprintln!("warning: {e}");
    }
    for e in &report.notify_errors {
        eprintln!("warning: notification not delivered: {e}");
    }
    if let Some(v) = &report.verify {
        crate::cli::cmd::verify::print_scheduled(v, quiet);
    }
    capacity_warnings(report);
}

/// A low file system or remote, on stderr in both output modes.
fn capacity_warnings(report: &BackupReport) {
    for w in report.capacity.iter().flat_map(|c| c.warnings()) {
        eprintln!("warning: {w}");
    }
}
