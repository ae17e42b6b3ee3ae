//! `unlock`: remove stale locks, or with `--force` every lock, saying whose each was.

use anyhow::{bail, Result};
use serde_json::json;

use crate::cli::{render, Ctx, Finish};
use crate::store::lock::FoundLock;
use crate::store::LocalStore;

pub(in crate::cli) fn run(ctx: &Ctx, force: bool) -> Result<Finish> {
    let dir = ctx.repo_path()?;
    // No password needed: locks are plain files, and a locked-out user must be able to run this.
    if !crate::repo::is_repository(&dir) {
        bail!("{}: not a cairn repository (no config file)", dir.display());
    }
    let store = LocalStore::new(&dir);
    let (removed, kept) = crate::store::lock::unlock(&store, force)?;
    let whose = |l: &FoundLock| l.info.as_ref().map_or_else(|| "unreadable lock".to_string(), |i| i.describe());
    if ctx.json() {
        let row = |l: &FoundLock, why: Option<&str>| json!({"file": l.location, "lock": l.info, "removed": why.is_some(), "reason": why});
        let mut v: Vec<_> = removed.iter().map(|(l, w)| row(l, Some(w))).collect();
        v.extend(kept.iter().map(|l| row(l, None)));
        render::print_json(&json!(v));
    } else if !ctx.quiet() {
        for (l, why) in &removed {
            println!("removed {} ({}): {why}", whose(l), l.location);
        }
        for l in &kept {
            println!(
                "kept {} ({}): its holder may be running; `cairn unlock --force` removes it",
                whose(l),
                l.location
            );
        }
        if removed.is_empty() && kept.is_empty() {
            println!("no locks");
        }
    }
    Ok(Finish::Ok)
}
