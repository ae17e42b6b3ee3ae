//! Verify's check of the snapshots: each opens, its tree reads, and its files' chunks are checked
//! against the index in bounded batches probed in sorted order (one pass over the index instead
//! of one random probe per chunk).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Affected, VerifyReport};
use crate::error::Result;
use crate::format::manifest::{NodeKind, Snapshot};
use crate::id::{ChunkId, PackId};
use crate::repo::cache::Cache;
use crate::repo::{Repo, TreeReader};
use crate::store::StoreExt;

/// Chunk ids checked against the index at once: a bounded batch, probed in sorted order.
pub(super) const CHECK_BATCH: usize = 1 << 16;

/// Files of one snapshot whose chunks are still to be checked against the index.
pub(super) struct FileChunks {
    pub(super) sid: crate::id::SnapshotId,
    pub(super) files: Vec<(String, Vec<ChunkId>)>,
    pub(super) chunks: usize,
}

impl FileChunks {
    /// A chunk in a damaged pack adds its file to what that pack breaks; a file with a chunk no
    /// index lists is a problem (the first 20 are named, the rest counted).
    pub(super) fn check(
        &mut self,
        index: &Cache,
        damaged_chunks: &HashMap<ChunkId, PackId>,
        broken_refs: &HashMap<ChunkId, String>,
        affected: &mut BTreeMap<PackId, BTreeSet<Affected>>,
        report: &mut VerifyReport,
        missing_reported: &mut usize,
    ) -> Result<()> {
        let all: Vec<ChunkId> = self.files.iter().flat_map(|(_, cs)| cs.iter().copied()).collect();
        let known = index.contains_many(&all)?;
        let mut at = 0;
        for (path, chunks) in self.files.drain(..) {
            let here = &known[at..at + chunks.len()];
            at += chunks.len();
            for (c, indexed) in chunks.iter().zip(here) {
                if let Some(p) = damaged_chunks.get(c) {
                    affected.entry(*p).or_default().insert(Affected { snapshot: self.sid, path: path.clone() });
                } else if let Some(why) = broken_refs.get(c) {
                    if *missing_reported < 20 {
                        report.problems.push(format!("snapshot {}: {path}: chunk {c} {why}", self.sid));
                    }
                    *missing_reported += 1;
                    break;
                } else if !indexed {
                    if *missing_reported < 20 {
                        report.problems.push(format!("snapshot {}: {path}: chunk {c} is not in any index", self.sid));
                    }
                    *missing_reported += 1;
                    break;
                }
            }
        }
        self.chunks = 0;
        Ok(())
    }
}

/// Chunks lost with a damaged pack, and the chunks that reference one of them (the index's
/// references streamed, only when something is damaged).
pub(super) fn damaged_chunks(
    damaged: &BTreeMap<PackId, (String, BTreeSet<ChunkId>)>,
    index: &Cache,
) -> Result<HashMap<ChunkId, PackId>> {
    let mut out: HashMap<ChunkId, PackId> =
        damaged.iter().flat_map(|(p, (_, cs))| cs.iter().map(move |c| (*c, *p))).collect();
    if !out.is_empty() {
        let mut referencing = Vec::new();
        index.for_each_reference(|c, r| {
            if let Some(p) = out.get(&r) {
                referencing.push((c, *p));
            }
        })?;
        for (c, p) in referencing {
            out.entry(c).or_insert(p);
        }
    }
    Ok(out)
}

/// What checking the snapshots found: the files each damaged pack breaks, and (in a report of
/// its own, merged by the caller) the snapshots read and the problems.
pub(super) type SnapshotCheck = (BTreeMap<PackId, BTreeSet<Affected>>, VerifyReport);

/// Step 5: every snapshot opens, its tree reads, and every chunk its files need is indexed; a
/// chunk in `damaged_chunks` adds its file to what that pack breaks.
pub(super) fn check_snapshots(
    repo: &Repo,
    index: &Cache,
    damaged_chunks: &HashMap<ChunkId, PackId>,
    broken_refs: &HashMap<ChunkId, String>,
) -> Result<SnapshotCheck> {
    let mut report = VerifyReport::default();
    let mut affected: BTreeMap<PackId, BTreeSet<Affected>> = BTreeMap::new();
    let objects = repo.objects().as_ref();
    for id in objects.snapshot_ids()? {
        let snap: Snapshot = match repo.load_snapshot(&id) {
            Ok(s) => s,
            Err(e) => {
                report.problems.push(format!("snapshot {id}: {e}"));
                continue;
            }
        };
        report.snapshots += 1;
        let sid: crate::id::SnapshotId = id;
        let mut locs = Vec::new();
        let mut tree_ok = true;
        for c in &snap.tree {
            match index.lookup(c)? {
                Some(l) => {
                    if let Some(p) = damaged_chunks.get(c) {
                        affected.entry(*p).or_default().insert(Affected { snapshot: sid, path: "(tree)".into() });
                        tree_ok = false;
                    }
                    locs.push((*c, l))
                }
                None => {
                    report.problems.push(format!("snapshot {sid}: tree chunk {c} is not in any index"));
                    tree_ok = false;
                }
            }
        }
        if !tree_ok {
            continue;
        }
        let mut missing_reported = 0;
        let mut files = FileChunks { sid, files: Vec::new(), chunks: 0 };
        for node in TreeReader::new(repo.chunk_reader(), locs) {
            let node = match node {
                Ok(n) => n,
                Err(e) => {
                    report.problems.push(format!("snapshot {sid}: tree unreadable: {e}"));
                    break;
                }
            };
            if node.kind != NodeKind::File {
                continue;
            }
            files.chunks += node.chunks.len();
            files.files.push((node.path_str(), node.chunks));
            if files.chunks >= CHECK_BATCH {
                files.check(index, damaged_chunks, broken_refs, &mut affected, &mut report, &mut missing_reported)?;
            }
        }
        files.check(index, damaged_chunks, broken_refs, &mut affected, &mut report, &mut missing_reported)?;
        if missing_reported > 20 {
            report.problems.push(format!("snapshot {sid}: {} more files with missing chunks", missing_reported - 20));
        }
    }
    Ok((affected, report))
}
