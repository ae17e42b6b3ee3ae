//! What `snapshots`, `ls` and `history` show, in the one JSON shape that the CLI's `--json` and
//! `serve`'s `/api/` share, and the run list both read (the repository's history and the runs
//! recorded outside it).

use std::path::Path;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::format::manifest::{Node, NodeKind, Snapshot};
use crate::id::SnapshotId;
use crate::lifecycle::config::Config;
use crate::lifecycle::history::{History, Run};
use crate::lifecycle::state::State;

/// One snapshot as `snapshots --json` lists it.
pub fn snapshot_json(id: &SnapshotId, s: &Snapshot) -> Value {
    json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": s.time,
        "type": s.backup_type,
        "kind": s.kind.as_str(),
        "description": s.description,
        "ticket": s.ticket,
        "creator": s.creator,
        "purpose": s.purpose,
        "retention": s.labels.get("retention"),
        "verified": crate::format::verification::is_verified(s),
        "verified_by": crate::format::verification::verified(s).map(|v| v.0),
        "verified_date": crate::format::verification::verified(s).and_then(|v| v.1),
        "host": s.host,
        "paths": s.paths,
        "labels": s.labels,
        "stats": s.stats,
        "parent": s.parent.map(|p| p.to_hex()),
        "errors": s.errors,
        "source": s.source,
        "program": s.program,
        // Commit order (0: a version 1 snapshot, which has none).
        "seq": s.seq,
    })
}

/// One tree entry as `ls --json` lists it.
pub fn node_json(n: &Node) -> Value {
    json!({
        "path": n.path_str(), "kind": format!("{:?}", n.kind).to_lowercase(), "mode": n.mode & 0o7777,
        "size": n.size, "mtime_ns": n.mtime_ns, "uid": n.uid, "gid": n.gid,
        "target": (n.kind == NodeKind::Symlink).then(|| String::from_utf8_lossy(&n.target).into_owned()),
        "chunks": n.chunks.len(),
    })
}

/// Whether `path` is `prefix` or lies under it (`ls PATH`).
pub fn under(path: &[u8], prefix: &[u8]) -> bool {
    path == prefix || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'))
}

/// Where `history` reads runs from: the repository's history and, with a config, the runs
/// recorded outside it (those that never reached the repository, `lifecycle::state`).
pub struct RunSources {
    history: Option<History>,
    outside: Option<State>,
}

impl RunSources {
    /// Opens both. A repository out of reach is not an error while runs recorded outside it
    /// exist: the second value says why the repository's own runs are missing.
    pub fn open(repo: &Path, cfg: Option<&Config>) -> Result<(RunSources, Option<Error>)> {
        let outside = match cfg {
            Some(cfg) => crate::lifecycle::outside::existing_state_for(cfg)?,
            None => None,
        };
        match (crate::repo::read_config(repo), &outside) {
            (Ok(_), _) => Ok((RunSources { history: Some(History::open(repo)?), outside }, None)),
            (Err(e), Some(_)) => Ok((RunSources { history: None, outside }, Some(e))),
            (Err(e), None) => Err(e),
        }
    }

    /// The newest `n` runs of both records (of one type when given), newest first.
    pub fn newest(&self, backup_type: Option<&str>, n: usize) -> Result<Vec<Run>> {
        let mut runs = match &self.history {
            Some(h) => h.list(backup_type, n)?,
            None => Vec::new(),
        };
        if let Some(s) = &self.outside {
            runs.extend(s.list(backup_type, n)?);
            // Newest first by start time, as each source lists them.
            let key = |r: &Run| chrono::DateTime::parse_from_rfc3339(&r.start).ok();
            runs.sort_by_key(|r| std::cmp::Reverse(key(r)));
            runs.truncate(n);
        }
        Ok(runs)
    }
}
