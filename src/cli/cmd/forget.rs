//! Retention: `forget` (apply each type's policy) and `mark-verified` (release a pre-change
//! snapshot to its own retention).

use crate::lifecycle::clock::Clock as _;
use anyhow::Result;
use serde_json::json;

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
    let new = crate::ops::prune::mark_verified(&repo, &id, by)?;
    if ctx.json() {
        render::print_json(&json!({"old": id.to_hex(), "new": new.to_hex(), "verified_by": by}));
    } else {
        println!("snapshot {} verified by {by} (now {})", id.short(), new.short());
    }
    Ok(Finish::Ok)
}
