//! `export`: conventional archives of chosen snapshots.

use anyhow::Result;
use serde_json::json;

use crate::cli::args::ExportArgs;
use crate::cli::{render, Ctx, Finish};
use crate::lifecycle::export::{ExportRequest, Layout};

pub(in crate::cli) fn run(ctx: &Ctx, a: &ExportArgs) -> Result<Finish> {
    let mut repo = ctx.open()?;
    let layout = if a.layout == "dated" { Layout::Dated } else { Layout::Flat };
    // The config only supplies the default name and the dated layout's keep days: an export
    // given both works without one.
    let cfg = if a.name.is_none() || layout == Layout::Dated { ctx.config()? } else { None };
    let req = ExportRequest {
        snapshots: a.snapshots.clone(),
        latest: a.latest,
        out: a.out.clone(),
        layout,
        name: a.name.clone(),
    };
    let mut out = Vec::new();
    crate::lifecycle::export::export(&mut repo, cfg, &req, &mut |id, s, f| {
        if !ctx.json() && !ctx.quiet() {
            println!("{} ({}) -> {}", id.short(), s.backup_type, f.display());
        }
        out.push(json!({"snapshot": id.to_hex(), "type": s.backup_type, "file": f}));
    })?;
    if ctx.json() {
        render::print_json(&serde_json::Value::Array(out));
    }
    Ok(Finish::Ok)
}
