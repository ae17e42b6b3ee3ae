//! `export`: conventional archives of chosen snapshots.

use anyhow::Result;
use serde_json::json;

use crate::cli::args::ExportArgs;
use crate::cli::{render, Ctx, Finish};
use crate::format::manifest::SnapshotKind;
use crate::lifecycle::export::{ExportRequest, Layout};

pub(in crate::cli) fn run(ctx: &Ctx, a: &ExportArgs) -> Result<Finish> {
    let mut repo = ctx.open()?;
    let layout = if a.layout == "dated" { Layout::Dated } else { Layout::Flat };
    // The config only supplies the default name and the dated layout's retention: an export
    // given both works without one.
    let cfg = if a.name.is_none() || layout == Layout::Dated { ctx.config()? } else { None };
    let req = ExportRequest {
        snapshots: a.snapshots.clone(),
        latest: a.latest,
        kind: a.kind.as_deref().map(|k| SnapshotKind::parse(k).expect("validated by clap")),
        out: a.out.clone(),
        layout,
        name: a.name.clone(),
    };
    let r = crate::lifecycle::export::export(&mut repo, cfg, &req)?;
    let mut out = Vec::new();
    for f in &r.files {
        if !ctx.json() && !ctx.quiet() {
            let how = if f.written { "->" } else { "-> (unchanged)" };
            println!("{} ({}) {how} {}", f.id.short(), f.backup_type, f.path.display());
        }
        out.push(json!({"snapshot": f.id.to_hex(), "type": f.backup_type, "file": f.path, "written": f.written}));
    }
    for p in &r.removed {
        if !ctx.json() && !ctx.quiet() {
            println!("removed {} (its snapshot is no longer in the repository)", p.display());
        }
        out.push(json!({"file": p, "removed": true}));
    }
    for p in &r.kept_changed {
        eprintln!("warning: {} was not removed with its snapshot: it changed since the export", p.display());
    }
    if ctx.json() {
        render::print_json(&serde_json::Value::Array(out));
    }
    Ok(Finish::Ok)
}
