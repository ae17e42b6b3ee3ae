//! `verify`: check the repository (exit 3 on damage); with --remote, first compare the remote's
//! inventory with the local repository.

use anyhow::{anyhow, bail, Result};
use serde_json::json;

use crate::cli::{render, Ctx, Finish};
use crate::ops::sync::RemoteCheck;
use crate::ops::verify::VerifyOptions;
use crate::util::human_bytes;

pub(in crate::cli) fn run(ctx: &Ctx, read_data: Option<&str>, seed: Option<u64>, restore_test: bool) -> Result<Finish> {
    // With a local repository at hand, --remote compares the remote against it; a full read of
    // the remote's data follows only when asked for and the inventories agree.
    if let (Some(name), Ok(local)) = (&ctx.cli.remote, ctx.repo_path()) {
        if crate::repo::is_repository(&local) {
            let remote = ctx.remote(name)?;
            let c = crate::lifecycle::remotes::check(ctx.config()?, &local, &remote, &|| ctx.password())?;
            print_remote_check(ctx, &c, read_data.is_some())?;
            if read_data.is_none() || c.is_damaged() {
                return Ok(if c.is_damaged() { Finish::Damaged } else { Finish::Ok });
            }
        }
    }
    let mut repo = ctx.open()?;
    let pct = match read_data {
        None => None,
        Some(s) => {
            let v: f64 = s
                .trim_end_matches('%')
                .parse()
                .map_err(|_| anyhow!("--read-data={s}: expected a percentage such as 10%"))?;
            if !(v > 0.0 && v <= 100.0) {
                bail!("--read-data={s}: percentage must be in (0, 100]");
            }
            Some(v)
        }
    };
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    });
    let pb = render::spinner(&ctx.cli, "verifying");
    let start = std::time::Instant::now();
    // The local cache is compared with the index files, so first load any it has not seen.
    repo.sync_index()?;
    let r = crate::ops::verify::verify(&repo, &VerifyOptions { read_data: pct, seed, restore_test })?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if ctx.json() {
        let mut v = serde_json::to_value(&r)?;
        v["ok"] = json!(!r.is_damaged());
        v["duration_s"] = json!(start.elapsed().as_secs_f64());
        render::print_json(&v);
    } else {
        for d in &r.damaged_packs {
            println!("DAMAGED pack {}: {}", d.pack, d.problem);
            println!("  {} chunks affected", d.chunks.len());
            for c in d.chunks.iter().take(10) {
                println!("    chunk {c}");
            }
            if d.chunks.len() > 10 {
                println!("    ... and {} more", d.chunks.len() - 10);
            }
            for a in &d.affected {
                println!("  breaks snapshot {} file {}", a.snapshot.short(), a.path);
            }
        }
        for p in &r.problems {
            println!("DAMAGED {p}");
        }
        for m in &r.cache_mismatches {
            println!("CACHE MISMATCH {m}");
        }
        if !r.cache_mismatches.is_empty() {
            println!("the local cache disagreed with the index files; it was rebuilt from them (the repository itself is not affected)");
        }
        for t in &r.restore_tests {
            println!(
                "restore test {} snapshot {}: {}",
                t.backup_type,
                t.snapshot.short(),
                if t.ok { format!("ok ({})", t.detail) } else { format!("FAILED: {}", t.detail) }
            );
        }
        if !ctx.quiet() {
            for n in &r.notes {
                println!("note: {n}");
            }
            let sample = match (pct, r.seed) {
                (Some(p), Some(s)) => format!(" ({p}% sample, --seed {s})"),
                _ => String::new(),
            };
            println!(
                "checked {} index files, {} packs, {} snapshots; read {} packs ({}), {} chunks re-hashed{sample} in {:.2}s",
                r.index_files,
                r.packs,
                r.snapshots,
                r.packs_read,
                human_bytes(r.bytes_read),
                r.chunks_checked,
                start.elapsed().as_secs_f64()
            );
            println!("{}", if r.is_damaged() { "repository is DAMAGED" } else { "no errors found" });
        }
    }
    Ok(if r.is_damaged() { Finish::Damaged } else { Finish::Ok })
}

/// The inventory comparison; with --json it stands alone only when no data read follows.
fn print_remote_check(ctx: &Ctx, c: &RemoteCheck, read_data_follows: bool) -> Result<()> {
    if ctx.json() {
        if !read_data_follows {
            let mut v = serde_json::to_value(c)?;
            v["ok"] = json!(!c.is_damaged());
            render::print_json(&v);
        }
        return Ok(());
    }
    for (what, list) in [("MISSING", &c.missing), ("MISMATCH", &c.mismatched), ("DUPLICATE", &c.duplicates)] {
        for f in list {
            println!("{what} on remote {}: {f}", c.remote);
        }
    }
    println!(
        "remote {}: {} files compared, {} missing, {} mismatched, {} duplicates, {} not yet synced, {} extra",
        c.remote,
        c.checked,
        c.missing.len(),
        c.mismatched.len(),
        c.duplicates.len(),
        c.pending.len(),
        c.extra.len()
    );
    Ok(())
}
