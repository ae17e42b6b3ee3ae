//! `wal-push`, `wal-fetch` and `restore --pgdata`: PostgreSQL's archive and restore commands and
//! the data directory a point-in-time recovery starts from.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::cli::{render, Ctx, Finish};
use crate::util::human_bytes;

pub(in crate::cli) fn push(ctx: &Ctx, path: &Path, backup_type: Option<&str>, lock_wait: u64) -> Result<Finish> {
    if ctx.cli.remote.is_some() {
        bail!("wal-push archives into the local repository; remotes receive WAL through `cairn sync` like packs");
    }
    let base = crate::lifecycle::wal::archive_type(ctx.config()?, backup_type)?;
    let mut repo = ctx.open()?;
    let out = crate::ops::wal::push(&mut repo, &base, path, Duration::from_secs(lock_wait))
        .with_context(|| format!("wal-push {}", path.display()))?;
    if ctx.json() {
        render::print_json(&json!(out));
    } else if !ctx.quiet() {
        if out.already {
            println!("{} was already archived with this content (snapshot {})", out.file, out.snapshot.short());
        } else {
            println!(
                "archived {} ({}, {} new) as snapshot {} in {:.2}s",
                out.file,
                human_bytes(out.bytes),
                human_bytes(out.new_bytes),
                out.snapshot.short(),
                out.seconds
            );
        }
    }
    Ok(Finish::Ok)
}

/// What `wal-fetch` exits with when it fails for any reason other than "not archived".
/// PostgreSQL reads exit codes 1-125 from `restore_command` as "no such file", which ends
/// recovery and promotes the server without the rest of the WAL; a code above 125 aborts
/// recovery instead, so a damaged pack, a wrong password or a held lock can never silently
/// cut the replay short.
pub(in crate::cli) const WAL_FETCH_FAILED: i32 = 126;

pub(in crate::cli) fn fetch(ctx: &Ctx, file: &str, dest: &Path, backup_type: Option<&str>) -> Result<Finish> {
    let fetched = (|| -> Result<Option<u64>> {
        let base = crate::lifecycle::wal::archive_type(ctx.config()?, backup_type)?;
        let mut repo = ctx.open()?;
        crate::ops::wal::fetch(&mut repo, &base, file, dest).with_context(|| format!("wal-fetch {file}"))
    })();
    match fetched {
        Ok(Some(n)) => {
            tracing::info!("restored {file} ({}) to {}", human_bytes(n), dest.display());
            Ok(Finish::Ok)
        }
        Ok(None) => {
            // Recovery asks past the end of the archive to find that end: exit 1 is the answer,
            // and the server's log should not fill with errors for it.
            tracing::info!("{file} is not archived");
            Ok(Finish::Incomplete)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(Finish::Code(WAL_FETCH_FAILED))
        }
    }
}

/// A word as one shell word (restore_command runs through `sh -c`).
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-:=+,@%".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The `restore_command` the restored server runs: this program with this run's configuration,
/// password file and remote, fetching WAL of `base`.
fn restore_command(ctx: &Ctx, base: &str) -> Result<String> {
    let exe = std::env::current_exe().context("the path of this program")?;
    let mut words = vec![exe.display().to_string()];
    if let Some(c) = ctx.config()? {
        words.extend(["--config".into(), c.file.display().to_string()]);
    } else {
        bail!("restore --pgdata needs the configuration file (--config): wal-fetch reads the repository through it");
    }
    if let Some(p) = &ctx.cli.password_file {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
        words.extend(["--password-file".into(), p.display().to_string()]);
    }
    if let Some(r) = &ctx.cli.remote {
        words.extend(["--remote".into(), r.clone()]);
    }
    words.extend(["wal-fetch".into(), "--type".into(), base.to_string()]);
    let mut cmd: Vec<String> = words.iter().map(|w| shell_word(w)).collect();
    cmd.extend(["%f".into(), "%p".into()]);
    Ok(cmd.join(" "))
}

pub(in crate::cli) fn restore_pgdata(ctx: &Ctx, spec: &str, dir: &Path) -> Result<Finish> {
    let mut repo = ctx.open()?;
    let _lock = crate::store::lock::Lock::acquire(repo.store(), false, "restore")?;
    repo.sync_index()?;
    let (id, snap) = repo.resolve(spec)?;
    let target_time = match spec.rsplit_once('@') {
        Some((_, t)) => Some(crate::util::parse_point_in_time(t).map_err(|e| anyhow::anyhow!("{spec:?}: {e}"))?),
        None => None,
    };
    let opts = crate::ops::wal::PgdataOptions {
        dir: dir.to_path_buf(),
        target_time,
        restore_command: restore_command(ctx, &snap.backup_type)?,
    };
    let start = std::time::Instant::now();
    let r = crate::ops::wal::restore_pgdata(&repo, &snap, &opts)?;
    if ctx.json() {
        render::print_json(&json!({
            "snapshot": id.to_hex(), "pgdata": dir.display().to_string(), "report": r,
            "duration_s": start.elapsed().as_secs_f64()
        }));
    } else if !ctx.quiet() {
        println!(
            "restored base backup {} ({}, {}) to {} in {:.2}s",
            id.short(),
            render::fmt_time(&snap),
            human_bytes(r.bytes),
            dir.display(),
            start.elapsed().as_secs_f64()
        );
        println!("recovery settings (in postgresql.auto.conf, with recovery.signal):");
        for s in &r.settings {
            println!("  {s}");
        }
        println!("start PostgreSQL on {} (owned by the server's user) to recover", dir.display());
    }
    Ok(Finish::Ok)
}
