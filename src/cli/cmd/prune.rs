//! `prune`: delete unreferenced data and repack sparse packs.

use anyhow::{bail, Result};

use crate::cli::{render, Ctx, Finish};
use crate::ops::prune::PruneOptions;
use crate::util::human_bytes;

pub(in crate::cli) fn run(ctx: &Ctx, dry_run: bool, repack_below: f64) -> Result<Finish> {
    let mut repo = ctx.open()?;
    if !(0.0..=100.0).contains(&repack_below) {
        bail!("--repack-below must be a percentage 0..100");
    }
    let r = crate::ops::prune::prune(&mut repo, PruneOptions { dry_run, repack_below: repack_below / 100.0 })?;
    if ctx.json() {
        render::print_json(&serde_json::to_value(&r)?);
    } else {
        println!(
            "{}{} snapshots reference {} chunks; of {} packs: {} deleted, {} repacked into {}, {} unindexed deleted; {} removed, {} written, {} freed in {:.2}s",
            if dry_run { "dry run: " } else { "" },
            r.snapshots,
            r.live_chunks,
            r.packs_before,
            r.packs_deleted,
            r.packs_repacked,
            r.packs_written,
            r.unindexed_deleted,
            human_bytes(r.bytes_deleted),
            human_bytes(r.bytes_written),
            human_bytes(r.bytes_freed.max(0) as u64),
            r.duration_s
        );
        if r.tmp_removed > 0 {
            println!(
                "removed {} leftovers of interrupted runs from tmp/ ({})",
                r.tmp_removed,
                human_bytes(r.tmp_bytes)
            );
        }
    }
    Ok(Finish::Ok)
}
