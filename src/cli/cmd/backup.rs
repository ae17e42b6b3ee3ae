//! `backup`: run the configured types, sync remotes after a success, report.

use crate::lifecycle::clock::Clock as _;
use anyhow::{bail, Result};

use crate::cli::args::BackupArgs;
use crate::cli::{render, Ctx, Finish};
use crate::format::repo_config::Encryption;
use crate::lifecycle::config::Config;
use crate::lifecycle::history::Outcome;
use crate::lifecycle::runner::{self, BackupReport, RunOptions};
use crate::repo::Repo;
use crate::util::human_bytes;

pub(in crate::cli) fn run(ctx: &Ctx, a: &BackupArgs) -> Result<Finish> {
    let cfg = ctx.require_config()?;
    for t in &a.types {
        if cfg.type_config(t).is_none() {
            let known: Vec<&str> = cfg.types.iter().map(|(n, _)| n.as_str()).collect();
            bail!("{}: no backup type {t:?} (configured: {})", cfg.file.display(), known.join(", "));
        }
    }
    let mut repo = open_or_create(ctx, cfg)?;
    let opts = RunOptions {
        now: a.now,
        types: a.types.clone(),
        flags: crate::lifecycle::job::RunFlags { no_vacuum: a.no_vacuum, force_read: a.force_read },
        retry_base: retry_base(),
    };
    let clock = crate::lifecycle::clock::SystemClock;
    let mut set = crate::ops::snapshot_set::SnapshotSet::new();
    let mut report = runner::run_backups(&mut repo, cfg, &opts, &mut set, &clock)?;
    if !a.no_sync && report.ran.iter().any(|r| r.result == Outcome::Success) {
        report.sync = crate::lifecycle::remotes::sync_all(Some(cfg), &repo, &ctx.remotes()?, false, &mut set, &clock);
    }
    print_report(ctx, &report);
    if let Some(m) = &a.metrics_file {
        let st = crate::lifecycle::status::status(&repo, Some(cfg), set.all(), &clock.now())?;
        crate::lifecycle::status::write_metrics(m, &st)?;
    }
    let failed = report.failed();
    if failed > 0 {
        bail!("{failed} of {} backup types failed", report.ran.len());
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

/// Opens the configured repository, creating it on first use (and saying so).
pub(in crate::cli) fn open_or_create(ctx: &Ctx, cfg: &Config) -> Result<Repo> {
    let path = ctx.repo_path()?;
    let password = || ctx.with_passwords(|p| p.for_new_repository());
    if let Some(c) = crate::lifecycle::first_use::create_if_fresh(&path, cfg, ctx.kdf()?, &password)? {
        if !ctx.quiet() && !ctx.json() {
            println!(
                "created repository {} at {} ({})",
                c.id.short(),
                path.display(),
                if c.encryption == Encryption::None { "NOT encrypted" } else { "encrypted" }
            );
        }
    }
    ctx.open()
}

/// Renders one backup round (also the daemon's).
pub(in crate::cli) fn print_report(ctx: &Ctx, report: &BackupReport) {
    if ctx.json() {
        render::print_json(&serde_json::to_value(report).expect("serializable"));
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
            (_, Some(_)) if quiet && r.file_errors.is_empty() => {}
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
