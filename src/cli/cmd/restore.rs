//! `restore`: a snapshot into a directory.

use std::path::Path;

use anyhow::{bail, Result};
use serde_json::json;

use crate::cli::cmd::snapshot::globset;
use crate::cli::{render, Ctx, Finish};
use crate::ops::restore::RestoreOptions;
use crate::util::human_bytes;

pub(in crate::cli) fn run(ctx: &Ctx, snapshot: &str, target: &Path, include: &[String]) -> Result<Finish> {
    let mut repo = ctx.open()?;
    let _lock = crate::store::lock::Lock::acquire(repo.store(), false, "restore")?;
    repo.sync_index()?;
    let (id, snap) = repo.resolve(snapshot)?;
    let opts = RestoreOptions { include: globset(include, "include")?, include_patterns: include.to_vec() };
    let pb = render::spinner(&ctx.cli, &format!("restoring {}", id.short()));
    let start = std::time::Instant::now();
    let r = crate::ops::restore::restore(&repo, &snap, target, &opts)?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if ctx.json() {
        render::print_json(&json!({"snapshot": id.to_hex(), "report": r, "duration_s": start.elapsed().as_secs_f64()}));
    } else if !ctx.quiet() {
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} symlinks, {} in {:.2}s",
            id.short(),
            target.display(),
            r.files,
            r.dirs,
            r.symlinks,
            human_bytes(r.bytes),
            start.elapsed().as_secs_f64()
        );
    }
    if !ctx.quiet() && !ctx.json() {
        for s in &r.sidecars_removed {
            println!("removed stale SQLite sidecar {s} (not in the snapshot; SQLite would replay it into the restored database)");
        }
    }
    if !r.errors.is_empty() {
        for (p, e) in &r.errors {
            eprintln!("error: {p}: {e}");
        }
        bail!("{} entries could not be restored", r.errors.len());
    }
    Ok(Finish::Ok)
}

/// `restore --table/--schema/--into/--globals`: the PostgreSQL parts of a snapshot.
pub(in crate::cli) fn postgres(
    ctx: &Ctx,
    snapshot: &str,
    target: Option<&Path>,
    into: Option<&str>,
    table: &[String],
    schema: &[String],
    globals: bool,
) -> Result<Finish> {
    // The message never quotes the string: it may hold a password.
    let into = into
        .map(|u| crate::source::pgconn::PgConn::parse(u).map_err(|e| anyhow::anyhow!("--into: {e}")))
        .transpose()?;
    let mut repo = ctx.open()?;
    let _lock = crate::store::lock::Lock::acquire(repo.store(), false, "restore")?;
    repo.sync_index()?;
    let (id, snap) = repo.resolve(snapshot)?;
    let opts = crate::ops::pgrestore::PgRestoreOptions {
        selection: crate::source::pgdump::Selection { tables: table.to_vec(), schemas: schema.to_vec() },
        into,
        target: target.map(Path::to_path_buf),
        globals,
    };
    let start = std::time::Instant::now();
    let r = crate::ops::pgrestore::restore(&repo, &snap, &opts)?;
    if ctx.json() {
        render::print_json(&json!({"snapshot": id.to_hex(), "report": r, "duration_s": start.elapsed().as_secs_f64()}));
    } else if !ctx.quiet() {
        for m in &r.messages {
            eprintln!("{m}");
        }
        if let Some(db) = &r.restored_into {
            println!("restored snapshot {} into {db} in {:.2}s", id.short(), start.elapsed().as_secs_f64());
        }
        for f in &r.written {
            println!("wrote {}", f.display());
        }
    }
    Ok(Finish::Ok)
}
