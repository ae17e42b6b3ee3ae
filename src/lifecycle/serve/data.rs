//! What each page and API answer reads, through the library calls the CLI's commands make.

use serde::Deserialize;
use serde_json::json;

use super::Shared;
use crate::error::{Error, Result};
use crate::format::manifest::{Node, NodeKind, Snapshot};
use crate::id::SnapshotId;
use crate::lifecycle::browse::RunSources;
use crate::lifecycle::clock::Clock as _;
use crate::lifecycle::history::Run;
use crate::lifecycle::status::Status;
use crate::repo::Repo;

/// Rows on one history page.
pub(super) const PAGE: usize = 50;
/// Entries one directory page lists at most.
pub(super) const DIR_LIMIT: usize = 5000;

/// `?type=&result=&page=&limit=` of `/history` and `/api/history`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct HistoryQuery {
    /// One type (`db`, `sync:NAME`, `verify`, `prune`, ...); empty: all.
    #[serde(rename = "type")]
    pub backup_type: Option<String>,
    /// One result (`success`, `unchanged`, `failed`, `partial`); empty: all.
    pub result: Option<String>,
    /// Page number, from 1.
    pub page: Option<usize>,
    /// Rows per page (the API: as `history --json --limit`, default 50).
    pub limit: Option<usize>,
}

/// `?path=` of a tree page and `/api/snapshots/ID/ls`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PathQuery {
    pub path: Option<String>,
}

/// `status --json`.
pub(super) fn status(s: &Shared, repo: &Repo) -> Result<Status> {
    let set = crate::ops::snapshot_set::SnapshotSet::load(repo)?;
    let now = crate::lifecycle::clock::SystemClock.now();
    crate::lifecycle::status::status_of(repo, s.config.as_ref(), &set, &now)
}

/// The overview: the status and the newest snapshot of each type.
pub(super) struct Overview {
    pub status: Status,
}

pub(super) fn overview(s: &Shared, repo: &Repo) -> Result<Overview> {
    Ok(Overview { status: status(s, repo)? })
}

/// One page of runs.
pub(super) struct HistoryPage {
    pub runs: Vec<Run>,
    pub page: usize,
    pub more: bool,
    pub backup_type: String,
    pub result: String,
    /// What the type filter offers.
    pub types: Vec<String>,
}

fn result_of(r: &Run) -> String {
    format!("{:?}", r.result).to_lowercase()
}

pub(super) fn history(s: &Shared, q: &HistoryQuery) -> Result<HistoryPage> {
    let (sources, _) = RunSources::open(&s.repo_path, s.config.as_ref())?;
    let ty = q.backup_type.as_deref().filter(|t| !t.is_empty());
    let res = q.result.as_deref().filter(|r| !r.is_empty());
    let per = q.limit.unwrap_or(PAGE).clamp(1, 10_000);
    let page = q.page.unwrap_or(1).max(1);
    let want = page.saturating_mul(per).saturating_add(1);
    // Read more rows until enough match the result filter, or the record ends.
    let mut n = want;
    let matching = loop {
        let runs = sources.newest(ty, n)?;
        let all_read = runs.len() < n;
        let m: Vec<Run> = runs.into_iter().filter(|r| res.is_none_or(|x| result_of(r) == x)).collect();
        if m.len() >= want || all_read || n >= 1 << 20 {
            break m;
        }
        n = n.saturating_mul(4);
    };
    let more = matching.len() > page * per;
    let runs: Vec<Run> = matching.into_iter().skip((page - 1) * per).take(per).collect();
    let mut types: Vec<String> = Vec::new();
    if let Some(c) = &s.config {
        types.extend(c.types.iter().map(|(n, _)| n.clone()));
        types.extend(c.backup.remotes.iter().map(|r| format!("sync:{}", r.name)));
    }
    types.extend(["verify", "prune", "forget"].map(String::from));
    Ok(HistoryPage { runs, page, more, backup_type: ty.unwrap_or("").into(), result: res.unwrap_or("").into(), types })
}

/// What the charts draw, per type.
pub(super) struct TypeSeries {
    pub backup_type: String,
    /// (time, logical bytes, bytes added) per snapshot, oldest first.
    pub sizes: Vec<(chrono::DateTime<chrono::FixedOffset>, u64, u64)>,
    /// (start, seconds, failed) per run, oldest first.
    pub runs: Vec<(chrono::DateTime<chrono::FixedOffset>, f64, bool)>,
}

/// Runs per type the duration chart shows.
const CHART_RUNS: usize = 200;

pub(super) fn chart_data(s: &Shared, repo: &Repo) -> Result<Vec<TypeSeries>> {
    let (all, _) = repo.snapshots()?;
    let (sources, _) = RunSources::open(&s.repo_path, s.config.as_ref())?;
    let mut names: Vec<String> = s.config.iter().flat_map(|c| c.types.iter().map(|(n, _)| n.clone())).collect();
    for (_, snap) in &all {
        if !names.contains(&snap.backup_type) {
            names.push(snap.backup_type.clone());
        }
    }
    let mut out = Vec::new();
    for name in names {
        let sizes = all
            .iter()
            .filter(|(_, x)| x.backup_type == name)
            .filter_map(|(_, x)| Some((x.datetime()?, x.stats.logical_bytes, x.stats.new_bytes)))
            .collect();
        let mut runs: Vec<_> = sources
            .newest(Some(&name), CHART_RUNS)?
            .iter()
            .filter_map(|r| {
                Some((chrono::DateTime::parse_from_rfc3339(&r.start).ok()?, r.duration_s()?, r.result.failed()))
            })
            .collect();
        runs.reverse();
        out.push(TypeSeries { backup_type: name, sizes, runs });
    }
    Ok(out)
}

/// One directory of a snapshot's tree.
pub(super) struct DirView {
    pub id: SnapshotId,
    pub snap: Snapshot,
    /// The directory, `/`-separated, no leading slash ("" for the root).
    pub path: String,
    pub entries: Vec<Node>,
    /// Entries past [`DIR_LIMIT`] left out.
    pub truncated: bool,
}

pub(super) fn dir(repo: &Repo, spec: &str, path: &str) -> Result<DirView> {
    let (id, snap) = repo.resolve(spec)?;
    let path = path.trim_matches('/').to_string();
    let mut entries = Vec::new();
    let mut truncated = false;
    let mut seen_dir = path.is_empty();
    for n in repo.tree(&snap)? {
        let n = n?;
        if n.path == path.as_bytes() {
            if n.kind != NodeKind::Dir {
                return Err(Error::Invalid(format!("{path}: not a directory")));
            }
            seen_dir = true;
            continue;
        }
        let parent = n.path.iter().rposition(|&c| c == b'/').map_or(&[][..], |i| &n.path[..i]);
        if parent == path.as_bytes() {
            if entries.len() == DIR_LIMIT {
                truncated = true;
                continue;
            }
            entries.push(n);
        }
    }
    if !seen_dir && entries.is_empty() {
        return Err(Error::NotFound(format!("{path}: no such directory in snapshot {}", id.short())));
    }
    entries.sort_by(|a, b| (a.kind != NodeKind::Dir, &a.path).cmp(&(b.kind != NodeKind::Dir, &b.path)));
    Ok(DirView { id, snap, path, entries, truncated })
}

/// `ls --json [PATH]`.
pub(super) fn ls_json(repo: &Repo, spec: &str, path: Option<&str>) -> Result<serde_json::Value> {
    let (id, snap) = repo.resolve(spec)?;
    let prefix = path.map(|p| p.trim_matches('/').as_bytes().to_vec());
    let mut nodes = Vec::new();
    for n in repo.tree(&snap)? {
        let n = n?;
        if prefix.as_ref().is_some_and(|p| !crate::lifecycle::browse::under(&n.path, p)) {
            continue;
        }
        nodes.push(crate::lifecycle::browse::node_json(&n));
    }
    Ok(json!({"snapshot": id.to_hex(), "nodes": nodes}))
}
