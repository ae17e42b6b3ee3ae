//! Reading a repository: `snapshots`, `ls` and `cat`.

use std::io::Write;

use anyhow::{bail, Result};
use serde_json::json;

use crate::cli::{render, Ctx, Finish};
use crate::format::manifest::NodeKind;
use crate::util::human_bytes;

pub(in crate::cli) fn snapshots(ctx: &Ctx, backup_type: Option<&str>, kind: Option<&str>) -> Result<Finish> {
    let repo = ctx.open()?;
    let (all, bad) = repo.snapshots()?;
    let list: Vec<_> = all
        .iter()
        .filter(|(_, s)| backup_type.is_none_or(|t| s.backup_type == t) && kind.is_none_or(|k| s.kind.as_str() == k))
        .collect();
    if ctx.json() {
        render::print_json(&serde_json::Value::Array(
            list.iter().map(|(id, s)| render::snapshot_json(id, s)).collect(),
        ));
    } else {
        println!(
            "{:<10} {:<25} {:<10} {:<10} {:<12} {:>8} {:>10} {:>10} {:<22} {:<10} DESCRIPTION / PURPOSE",
            "ID", "TIME", "TYPE", "KIND", "HOST", "FILES", "SIZE", "ADDED", "VERIFIED", "TICKET"
        );
        for (id, s) in &list {
            println!(
                "{:<10} {:<25} {:<10} {:<10} {:<12} {:>8} {:>10} {:>10} {:<22} {:<10} {}",
                id.short(),
                render::fmt_time(s),
                s.backup_type,
                s.kind.as_str(),
                s.host,
                s.stats.files,
                human_bytes(s.stats.logical_bytes),
                human_bytes(s.stats.new_bytes),
                render::verification_cell(s),
                s.ticket.as_deref().unwrap_or("-"),
                render::about(s)
            );
        }
        println!("{} snapshots", list.len());
    }
    for (id, e) in &bad {
        eprintln!("warning: snapshot {} unreadable: {e}", id.short());
    }
    Ok(Finish::Ok)
}

pub(in crate::cli) fn ls(ctx: &Ctx, snapshot: &str, path: Option<&str>) -> Result<Finish> {
    let mut repo = ctx.open()?;
    repo.sync_index()?;
    let (id, snap) = repo.resolve(snapshot)?;
    let prefix = path.map(|p| p.trim_matches('/').as_bytes().to_vec());
    let mut nodes = Vec::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for n in repo.tree(&snap)? {
        let n = n?;
        if prefix.as_ref().is_some_and(|p| !crate::lifecycle::browse::under(&n.path, p)) {
            continue;
        }
        if ctx.json() {
            nodes.push(crate::lifecycle::browse::node_json(&n));
        } else {
            let t = chrono::DateTime::from_timestamp_nanos(n.mtime_ns).with_timezone(&chrono::Local);
            let mut line = format!(
                "{} {:>12} {} {}",
                render::mode_string(n.kind, n.mode),
                n.size,
                crate::util::show_time(&t),
                n.path_str()
            );
            if n.kind == NodeKind::Symlink {
                line.push_str(&format!(" -> {}", String::from_utf8_lossy(&n.target)));
            }
            writeln!(out, "{line}")?;
        }
    }
    // Flushed before the JSON, which println! writes past this buffer.
    out.flush()?;
    drop(out);
    if ctx.json() {
        render::print_json(&json!({"snapshot": id.to_hex(), "nodes": nodes}));
    }
    Ok(Finish::Ok)
}

pub(in crate::cli) fn cat(ctx: &Ctx, snapshot: &str, path: &str) -> Result<Finish> {
    let mut repo = ctx.open()?;
    repo.sync_index()?;
    let (_, snap) = repo.resolve(snapshot)?;
    let node = crate::ops::restore::find_node(&repo, &snap, path)?;
    if node.kind != NodeKind::File {
        bail!("{path}: not a regular file");
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    crate::ops::restore::write_content(&repo, &node, &mut out)?;
    out.flush()?;
    Ok(Finish::Ok)
}
