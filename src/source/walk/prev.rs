//! The parent snapshot's tree, consumed in step with the walk: a file unchanged since it (same
//! size, times and inode, its chunks still stored) takes the parent's chunks instead of being
//! read. A big file's chunks stay in the list the tree reader spilled them to.

use std::os::unix::fs::MetadataExt;

use crate::format::manifest::{InStep, NodeKind};
use crate::id::ChunkId;
use crate::store::spill::ChunkList;

use super::{ns, IsStored, ParentTree};

/// The parent's chunks of an unchanged file.
pub(super) enum Reused {
    /// Few enough to hold.
    Held(Vec<ChunkId>),
    /// In a list.
    Listed(ChunkList),
}

pub(super) struct PrevTree {
    parent: InStep<Option<ChunkList>>,
    /// Without it, no file counts as unchanged.
    is_stored: Option<IsStored>,
    force_read: bool,
}

impl PrevTree {
    pub(super) fn new(iter: Option<ParentTree>, is_stored: Option<IsStored>, force_read: bool) -> Self {
        PrevTree { parent: InStep::new(iter, "reading every file"), is_stored, force_read }
    }

    /// The parent's chunks of the file at `path` if it is unchanged since (`live`: a database
    /// whose sidecars hold data, never unchanged). Consumes the parent's tree up to `path`.
    pub(super) fn unchanged(&mut self, path: &[u8], meta: &std::fs::Metadata, live: bool) -> Option<Reused> {
        let (prev, list) = self.parent.find(path)?;
        if live || self.force_read || prev.kind != NodeKind::File {
            return None;
        }
        let now = (meta.size(), ns(meta.mtime(), meta.mtime_nsec()), ns(meta.ctime(), meta.ctime_nsec()), meta.ino());
        if (prev.size, prev.mtime_ns, prev.ctime_ns, prev.inode) != now {
            return None;
        }
        // The parent's chunks must still be stored, or the file is read again.
        let stored = self.is_stored.as_ref()?;
        match list {
            None => prev.chunks.iter().all(stored).then_some(Reused::Held(prev.chunks)),
            Some(list) => {
                let mut all = true;
                let read = list.for_each_block(&mut |ids| {
                    all = all && ids.chunks_exact(32).all(|id| stored(&ChunkId(id.try_into().expect("32 bytes"))));
                });
                if let Err(e) = read {
                    tracing::warn!("{}: parent's chunk list unreadable, reading the file: {e}", prev.path_str());
                    return None;
                }
                all.then_some(Reused::Listed(list))
            }
        }
    }
}
