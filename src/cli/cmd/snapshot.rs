//! `snapshot`: one snapshot of paths or of standard input.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::json;

use crate::cli::args::SnapshotArgs;
use crate::cli::{render, Ctx, Finish};
use crate::format::manifest::SnapshotKind;
use crate::ops::snapshot::{SnapshotOptions, Source};
use crate::util::human_bytes;

/// Glob patterns from the command line (a trailing `/` is ignored), `None` for none.
pub(in crate::cli) fn globset(pats: &[String], what: &str) -> Result<Option<GlobSet>> {
    if pats.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in pats {
        b.add(Glob::new(p.trim_end_matches('/')).with_context(|| format!("bad {what} pattern {p:?}"))?);
    }
    Ok(Some(b.build()?))
}

pub(in crate::cli) fn run(ctx: &Ctx, a: &SnapshotArgs) -> Result<Finish> {
    let mut repo = ctx.open()?;
    let mut labels = BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').ok_or_else(|| anyhow!("label {l:?} is not KEY=VALUE"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    if let Some(r) = &a.retention {
        crate::ops::kinds::check_retention_label(r)?;
        labels.insert("retention".into(), r.clone());
    }
    let opts = SnapshotOptions {
        backup_type: a.backup_type.clone(),
        kind: SnapshotKind::parse(&a.kind).expect("validated by clap"),
        description: a.description.clone(),
        ticket: a.ticket.clone(),
        creator: a.creator.clone().or_else(crate::util::account_name),
        purpose: a.purpose.clone(),
        labels,
        force_read: a.force_read,
        excludes: globset(&a.exclude, "exclude")?,
        source_meta: BTreeMap::new(),
        chunker: None,
        skip_if_unchanged_within: None,
        parent: None,
        stream_mode: None,
        time: None,
        next_seq: None,
    };
    let source = match &a.stdin {
        Some(name) => Source::Reader { name: name.clone(), reader: Box::new(std::io::stdin()) },
        None => Source::Paths(a.paths.clone()),
    };
    let pb = render::spinner(&ctx.cli, &format!("snapshot of {}", a.backup_type));
    let r = crate::ops::snapshot::snapshot(&mut repo, source, &opts)?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let s = &r.snapshot;
    if ctx.json() {
        let mut v = render::snapshot_json(&r.id, s);
        v["duration_s"] = json!(r.duration.as_secs_f64());
        render::print_json(&v);
    } else if !ctx.quiet() {
        println!(
            "snapshot {} ({}) saved: {} files, {} dirs, {} read, {} new in {} chunks ({} stored), {} unchanged files, {:.2}s",
            r.id.short(),
            s.backup_type,
            s.stats.files,
            s.stats.dirs,
            human_bytes(s.stats.logical_bytes),
            human_bytes(s.stats.new_raw_bytes),
            s.stats.new_chunks,
            human_bytes(s.stats.new_bytes),
            s.stats.unchanged_files,
            r.duration.as_secs_f64()
        );
    }
    if !s.errors.is_empty() {
        for e in &s.errors {
            eprintln!("error: {}: {}", e.path, e.message);
        }
        eprintln!(
            "warning: snapshot {} saved, but {} entries could not be read (listed above and in the snapshot)",
            r.id.short(),
            s.errors.len()
        );
        return Ok(Finish::Partial);
    }
    Ok(Finish::Ok)
}
