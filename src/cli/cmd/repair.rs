//! `repair index`: rebuild the index files and the cache from the pack trailers.
//! `repair snapshots`: move undecodable snapshot files into the quarantine.

use anyhow::Result;
use serde_json::json;

use crate::cli::{render, Ctx, Finish};

pub(in crate::cli) fn index(ctx: &Ctx) -> Result<Finish> {
    let mut repo = ctx.open()?;
    let (n, bad) = crate::ops::verify::repair_index(&mut repo)?;
    if ctx.json() {
        render::print_json(&json!({"packs_indexed": n, "unreadable_packs": bad}));
    } else {
        println!("index rebuilt from {n} packs");
        for (p, e) in &bad {
            println!("unreadable pack {p}: {e}");
        }
    }
    Ok(if bad.is_empty() { Finish::Ok } else { Finish::Incomplete })
}

pub(in crate::cli) fn snapshots(ctx: &Ctx) -> Result<Finish> {
    if ctx.cli.remote.is_some() {
        anyhow::bail!("repair snapshots works on the local repository, not on a --remote mirror");
    }
    let repo = ctx.open()?;
    let r = crate::ops::repair_snapshots::repair_snapshots(&repo)?;
    if ctx.json() {
        render::print_json(&serde_json::to_value(&r)?);
    } else {
        for q in &r.quarantined {
            println!("quarantined snapshot {}: {} (moved to {})", q.id, q.reason, q.moved_to.display());
        }
        for (f, e) in &r.not_read {
            println!("could not read {f}, left in place: {e}");
        }
        println!(
            "{} snapshot files readable, {} moved to {}",
            r.readable,
            r.quarantined.len(),
            crate::ops::repair_snapshots::QUARANTINE_SNAPSHOTS
        );
    }
    Ok(if r.not_read.is_empty() { Finish::Ok } else { Finish::Incomplete })
}
