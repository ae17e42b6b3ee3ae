//! `repair index`: rebuild the index files and the cache from the pack trailers.
//! `repair snapshots`: move undecodable snapshot files into the quarantine.
//! `repair packs`: drop damaged packs after salvaging what still checks out; name what was lost.

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

pub(in crate::cli) fn packs(ctx: &Ctx) -> Result<Finish> {
    let mut repo = ctx.open()?;
    let r = crate::ops::repair::repair_packs(&mut repo)?;
    if ctx.json() {
        let mut v = serde_json::to_value(&r)?;
        v["ok"] = json!(!r.lost_data());
        render::print_json(&v);
    } else {
        if r.packs.is_empty() {
            println!("no pack is marked damaged (run `cairn verify --read-data` to look for damage)");
        }
        for p in &r.packs {
            println!(
                "removed damaged pack {} ({}): {} chunks salvaged, {} stored elsewhere, {} lost",
                p.pack,
                p.reason,
                p.salvaged,
                p.stored_elsewhere,
                p.lost.len()
            );
            for c in &p.lost {
                println!("  LOST chunk {c}");
            }
        }
        for a in &r.affected {
            println!("LOST DATA in snapshot {} file {}", a.snapshot.to_hex(), a.path);
        }
        for p in &r.problems {
            println!("DAMAGED {p}");
        }
        if !r.packs.is_empty() {
            println!("{} new packs written", r.packs_written);
        }
        if r.lost_data() {
            println!(
                "DATA LOST: {} chunks, referenced by {} files; restore the affected files from another copy",
                r.lost_chunks.len(),
                r.affected.len()
            );
        }
    }
    Ok(if r.lost_data() { Finish::Damaged } else { Finish::Ok })
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
