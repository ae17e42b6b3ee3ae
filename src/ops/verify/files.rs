//! Verify's check of a snapshot's file chunks against the index, in bounded batches probed in
//! sorted order (one pass over the index instead of one random probe per chunk).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Affected, VerifyReport};
use crate::error::Result;
use crate::id::{ChunkId, PackId};
use crate::repo::cache::Cache;

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
