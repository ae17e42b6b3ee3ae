//! `status` (per type: last good backup, next due, failures) and `history` (the activity log).

use crate::lifecycle::clock::Clock as _;
use std::path::Path;

use anyhow::Result;

use crate::cli::{render, Ctx, Finish};
use crate::util::human_bytes;

pub(in crate::cli) fn status(ctx: &Ctx, metrics_file: Option<&Path>) -> Result<Finish> {
    let mut repo = ctx.open()?;
    repo.sync_index()?;
    let set = crate::ops::snapshot_set::SnapshotSet::load(&repo)?;
    let now = crate::lifecycle::clock::SystemClock.now();
    let st = crate::lifecycle::status::status_of(&repo, ctx.config()?, &set, &now)?;
    if let Some(m) = metrics_file {
        crate::lifecycle::status::write_metrics(m, &st)?;
    }
    if ctx.json() {
        render::print_json(&serde_json::to_value(&st)?);
    } else {
        print!("{}", crate::lifecycle::status::render(&st));
    }
    Ok(Finish::Code(st.exit_code))
}

pub(in crate::cli) fn history(ctx: &Ctx, backup_type: Option<&str>, limit: usize, all: bool) -> Result<Finish> {
    use crate::lifecycle::history_fold::newest_lines;
    let path = ctx.repo_path()?;
    let (sources, missing) = crate::lifecycle::browse::RunSources::open(&path, ctx.config()?)?;
    if let Some(e) = missing {
        // The repository is out of reach: what was recorded outside it is still worth showing.
        eprintln!("warning: {e}: showing only the runs recorded outside the repository");
    }
    let newest = |n: usize| sources.newest(backup_type, n);
    if ctx.json() {
        // Every row: a script counts runs itself.
        render::print_json(&serde_json::to_value(newest(limit)?)?);
        return Ok(Finish::Ok);
    }
    let lines = newest_lines(&newest, limit, all)?;
    println!(
        "{:<25} {:<10} {:<10} {:>8} {:>10} {:>10} {:<10} ERROR",
        "START", "TYPE", "RESULT", "FILES", "READ", "ADDED", "SNAPSHOT"
    );
    for l in &lines {
        let r = &l.run;
        let note = if l.count > 1 {
            format!("{} runs, the last at {} (--all lists each)", l.count, crate::util::show_time_str(&r.start))
        } else {
            r.error.clone().unwrap_or_default()
        };
        println!(
            "{:<25} {:<10} {:<10} {:>8} {:>10} {:>10} {:<10} {}",
            crate::util::show_time_str(&l.first_start),
            r.backup_type,
            format!("{:?}", r.result).to_lowercase(),
            r.files,
            human_bytes(r.bytes_read),
            human_bytes(r.bytes_added),
            r.snapshot.as_deref().map(|s| s.get(..8).unwrap_or(s)).unwrap_or("-"),
            note
        );
    }
    Ok(Finish::Ok)
}
