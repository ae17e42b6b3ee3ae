//! Retention: `forget` (apply each type's policy, or remove named snapshots) and
//! `mark-verified` (release a pre-change snapshot to its own retention).

use crate::lifecycle::clock::Clock as _;
use anyhow::{bail, Result};
use serde_json::json;

use crate::cli::args::ForgetArgs;
use crate::cli::{render, Ctx, Finish};

pub(in crate::cli) fn forget(ctx: &Ctx, dry_run: bool, types: &[String]) -> Result<Finish> {
    let repo = ctx.open()?;
    let cfg = ctx.config()?;
    let policy = |t: &str| cfg.and_then(|c| c.type_config(t)).and_then(|c| c.retention.clone());
    let sel = (!types.is_empty()).then_some(types);
    let decisions = crate::ops::prune::forget(
        &repo,
        sel,
        &policy,
        crate::lifecycle::clock::SystemClock.now().fixed_offset(),
        dry_run,
    )?;
    if ctx.json() {
        render::print_json(&json!({"dry_run": dry_run, "decisions": decisions}));
        return Ok(Finish::Ok);
    }
    println!("{:<10} {:<26} {:<10} {:<10} {:<12} WHY", "ID", "TIME", "TYPE", "KIND", "ACTION");
    for d in &decisions {
        let action = if d.keep {
            "keep"
        } else if dry_run {
            "would remove"
        } else {
            "remove"
        };
        println!(
            "{:<10} {:<26} {:<10} {:<10} {:<12} {}",
            d.id.short(),
            crate::util::show_time_str(&d.time),
            d.backup_type,
            d.kind,
            action,
            d.reasons.join(", ")
        );
    }
    let n = decisions.iter().filter(|d| !d.keep).count();
    println!("{} snapshots {}, {} kept", n, if dry_run { "would be removed" } else { "removed" }, decisions.len() - n);
    Ok(Finish::Ok)
}

pub(in crate::cli) fn mark_verified(ctx: &Ctx, snapshot: &str, by: &str) -> Result<Finish> {
    let repo = ctx.open()?;
    let (id, _) = repo.resolve(snapshot)?;
    let now = crate::lifecycle::clock::SystemClock.now();
    let v = crate::ops::kinds::mark_verified(&repo, &id, by, now.fixed_offset())?;
    if ctx.json() {
        render::print_json(&json!({
            "snapshot": id.to_hex(),
            "verification": v.to_hex(),
            "verified_by": by,
            "verified_date": now.fixed_offset().to_rfc3339(),
        }));
    } else if !ctx.quiet() {
        println!("snapshot {} verified by {by} (verification {})", id.short(), v.short());
    }
    Ok(Finish::Ok)
}

/// `forget SNAPSHOT...`: removes the named snapshots, recorded in the history.
pub(in crate::cli) fn forget_named(ctx: &Ctx, a: &ForgetArgs) -> Result<Finish> {
    let repo = ctx.open()?;
    let mut ids = Vec::new();
    for spec in &a.snapshots {
        ids.push(repo.resolve(spec)?.0);
    }
    let Some(by) = a.by.clone().or_else(crate::util::account_name) else {
        bail!("--by: no account name found for this user; say who removes the snapshots")
    };
    let now = crate::lifecycle::clock::SystemClock.now();
    let removed = crate::lifecycle::kinds::forget_named(&repo, &ids, a.force, &by, a.reason.as_deref(), now)?;
    if ctx.json() {
        render::print_json(&json!({"removed": removed, "by": by, "reason": a.reason}));
    } else if !ctx.quiet() {
        for r in &removed {
            println!(
                "removed snapshot {} ({} {}, {})",
                r.id.short(),
                r.backup_type,
                r.kind,
                crate::util::show_time_str(&r.time)
            );
        }
        println!("{} snapshots removed by {by}; `cairn prune` frees the data only they used", removed.len());
    }
    Ok(Finish::Ok)
}

/// `history --removed`: the snapshots removed by name, newest first.
pub(in crate::cli) fn removed(ctx: &Ctx, limit: usize) -> Result<Finish> {
    let path = ctx.repo_path()?;
    crate::repo::read_config(&path)?;
    let rows = crate::lifecycle::history::History::open(&path)?.removals(limit)?;
    if ctx.json() {
        render::print_json(&serde_json::to_value(&rows)?);
        return Ok(Finish::Ok);
    }
    println!("{:<26} {:<10} {:<10} {:<10} {:<12} {:<6} REASON", "TIME", "SNAPSHOT", "TYPE", "KIND", "BY", "FORCED");
    for r in rows.iter().rev() {
        println!(
            "{:<26} {:<10} {:<10} {:<10} {:<12} {:<6} {}",
            crate::util::show_time_str(&r.time),
            r.snapshot.get(..8).unwrap_or(&r.snapshot),
            r.backup_type,
            r.kind,
            r.by,
            if r.forced { "yes" } else { "no" },
            r.reason.as_deref().unwrap_or("-")
        );
    }
    Ok(Finish::Ok)
}
