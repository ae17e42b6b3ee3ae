//! `verify`: check the repository (exit 3 on damage); with --remote, first compare the remote's
//! inventory with the local repository.

use anyhow::{anyhow, Result};
use serde_json::json;

use crate::cli::{render, Ctx, Finish};
use crate::lifecycle::config::Percent;
use crate::lifecycle::verify_runs::ScheduledVerify;
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
        Some(s) => Some(s.parse::<Percent>().map_err(|e| anyhow!("--read-data={s}: {e}"))?.get()),
    };
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    });
    let pb = render::spinner(&ctx.cli, "verifying");
    let start = std::time::Instant::now();
    let opts = VerifyOptions { read_data: pct, seed, restore_test };
    let r = if ctx.cli.remote.is_some() {
        // A remote's mirror: its history is not the repository's.
        repo.sync_index()?;
        crate::ops::verify::verify(&repo, &opts)?
    } else {
        // Recorded in the history and notified, whatever the outcome.
        let clock = crate::lifecycle::clock::SystemClock;
        let run = crate::lifecycle::verify_runs::verify_and_record(&mut repo, ctx.config()?, &opts, &clock);
        for e in &run.notify_errors {
            eprintln!("warning: notification not delivered: {e}");
        }
        run.report?
    };
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    // A database that could not be restore-tested is not a pass: said so, and exit 1.
    let not_tested = r.restore_tests.iter().filter(|t| t.not_tested).count();
    if ctx.json() {
        let mut v = serde_json::to_value(&r)?;
        v["ok"] = json!(!r.is_damaged() && not_tested == 0);
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
                if t.ok {
                    format!("ok ({}){}", t.detail, timings(t))
                } else if t.not_tested {
                    format!("NOT TESTED: {}", t.detail)
                } else {
                    format!("FAILED: {}{}", t.detail, timings(t))
                }
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
            println!(
                "{}",
                match (r.is_damaged(), not_tested) {
                    (true, _) => "repository is DAMAGED".to_string(),
                    (false, 0) => "no errors found".to_string(),
                    (false, n) => format!("no damage found, but {n} databases were NOT TESTED"),
                }
            );
        } else if not_tested > 0 && !r.is_damaged() {
            eprintln!("error: {not_tested} databases were NOT TESTED");
        }
    }
    Ok(match (r.is_damaged(), not_tested) {
        (true, _) => Finish::Damaged,
        (false, 0) => Finish::Ok,
        (false, _) => Finish::Incomplete,
    })
}

/// "; restore 1.20 s, compare 0.10 s (scratch cluster)" for a PostgreSQL test: the measured RTO.
fn timings(t: &crate::ops::verify::RestoreTest) -> String {
    match (t.restore_s, t.compare_s) {
        (Some(r), Some(c)) => format!(
            "; restore {r:.2} s, compare {c:.2} s{}",
            t.place.as_deref().map(|p| format!(" ({p})")).unwrap_or_default()
        ),
        (Some(r), None) => format!("; restore {r:.2} s"),
        _ => String::new(),
    }
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

/// One line for the verify a `backup` run or daemon round did on its schedule.
pub(in crate::cli) fn print_scheduled(v: &ScheduledVerify, quiet: bool) {
    match &v.error {
        None if quiet => {}
        None => {
            let untested = v.restore_tests.iter().filter(|t| t.not_tested).count();
            let tests = match (v.restore_tests.len() - untested, untested) {
                (0, 0) => String::new(),
                (n, 0) => format!(", {n} databases restore-tested"),
                (n, u) => format!(", {n} databases restore-tested, {u} NOT TESTED"),
            };
            println!(
                "verify: no errors found, {} packs read ({}){tests}, {:.2}s ({})",
                v.packs_read,
                human_bytes(v.bytes_read),
                v.duration_s,
                v.reason
            );
        }
        Some(e) if v.damaged => println!("verify: {e} (`cairn verify --read-data` shows all of it)"),
        Some(e) => println!("verify: FAILED: {e}"),
    }
    for t in v.restore_tests.iter().filter(|t| t.not_tested) {
        println!("verify: restore test {}: NOT TESTED: {}", t.backup_type, t.detail);
    }
    for e in &v.notify_errors {
        eprintln!("warning: notification not delivered: {e}");
    }
}

/// How a scheduled verify ends a `backup` run: damage is exit 3 (after it was reported), a verify
/// that could not finish an error; `None`: it found nothing (or did not run).
pub(in crate::cli) fn scheduled_finish(v: Option<&ScheduledVerify>) -> Result<Option<Finish>> {
    match v {
        Some(v) if v.damaged => {
            eprintln!("error: the scheduled verify found damage (exit 3); see `cairn verify --read-data`");
            Ok(Some(Finish::Damaged))
        }
        Some(ScheduledVerify { error: Some(e), .. }) => Err(anyhow!("scheduled verify: {e}")),
        _ => Ok(None),
    }
}
