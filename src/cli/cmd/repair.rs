//! `repair index`: rebuild the index files and the cache from the pack trailers.

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
