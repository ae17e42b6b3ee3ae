//! A file's chunk ids held in an unlinked temporary file of the repository's `tmp/` past the
//! first 32,768, so memory does not grow with the file: a 1 GiB database has 262,144 pages, 8 MiB
//! of ids. A backup builds one for each file it reads; reading a parent snapshot's tree builds one
//! for each file record too big to hold (`repo::TreeReader::spilling`).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::store::local::read_exact_at;
use crate::store::LocalStore;

/// Ids a [`ChunkList`] holds in memory before it moves them to its file (1 MiB).
pub const LIST_BLOCK: usize = 32768;
/// Ids [`ChunkList::get`] reads from the file at a time (64 KiB).
const READ_BLOCK: u64 = 2048;

/// A file's chunk ids, in order: the first ones in the file, the last (fewer than
/// [`LIST_BLOCK`]) in memory; all in memory when no file can be made.
pub struct ChunkList {
    store: LocalStore,
    head: Vec<ChunkId>,
    spilled: Option<(PathBuf, File)>,
    spilled_count: u64,
    /// The block of the file [`ChunkList::get`] read last: its first index and its bytes.
    read: Option<(u64, Vec<u8>)>,
    /// No file could be made (a repository on read-only media, being restored from): the ids
    /// stay in memory.
    in_memory: bool,
}

/// The ids back to back, 32 bytes each: copied id by id, not byte by byte (a first backup once
/// spent 5 % of its CPU collecting bytes one at a time).
fn raw_ids(ids: &[ChunkId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

impl ChunkList {
    /// An empty list, spilling into `store`'s `tmp/`.
    pub fn new(store: &LocalStore) -> Self {
        ChunkList {
            store: store.clone(),
            head: Vec::new(),
            spilled: None,
            spilled_count: 0,
            read: None,
            in_memory: false,
        }
    }

    /// How many ids.
    pub fn len(&self) -> u64 {
        self.spilled_count + self.head.len() as u64
    }

    /// Whether it holds no id.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether some ids went to the file.
    pub fn is_spilled(&self) -> bool {
        self.spilled.is_some()
    }

    /// Appends an id.
    pub fn push(&mut self, id: ChunkId) -> Result<()> {
        self.head.push(id);
        if self.head.len() < LIST_BLOCK || self.in_memory {
            return Ok(());
        }
        if self.spilled.is_none() {
            let (path, f) = match self.store.temp_file() {
                Ok(made) => made,
                Err(e) => {
                    tracing::warn!("{e}; a file's chunk ids are held in memory instead");
                    self.in_memory = true;
                    return Ok(());
                }
            };
            // Unlinked at once: the file lives as long as this list, whatever ends the process.
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            self.spilled = Some((path, f));
        }
        let (path, f) = self.spilled.as_mut().expect("just set");
        let bytes = raw_ids(&self.head);
        f.write_all(&bytes).map_err(|e| Error::io(&*path, e))?;
        self.spilled_count += self.head.len() as u64;
        self.head.clear();
        Ok(())
    }

    /// Appends raw ids, 32 bytes each (a tree record's list as it is read).
    pub fn push_raw(&mut self, ids: &[u8]) -> Result<()> {
        for id in ids.chunks_exact(32) {
            self.push(ChunkId(id.try_into().expect("32 bytes")))?;
        }
        Ok(())
    }

    /// Hands the ids over in order, in blocks of raw 32-byte ids.
    pub fn for_each_block(&self, f: &mut dyn FnMut(&[u8])) -> Result<()> {
        if let Some((path, file)) = &self.spilled {
            let mut buf = vec![0u8; LIST_BLOCK * 32];
            let total = self.spilled_count * 32;
            let mut at = 0u64;
            while at < total {
                let n = (total - at).min(buf.len() as u64) as usize;
                read_exact_at(file, &mut buf[..n], at, path)?;
                f(&buf[..n]);
                at += n as u64;
            }
        }
        let tail = raw_ids(&self.head);
        f(&tail);
        Ok(())
    }

    /// The id at position `i` (None past the end). Reads the file a block at a time, so going
    /// through the list in order, from any position, reads it once.
    pub fn get(&mut self, i: u64) -> Result<Option<ChunkId>> {
        if i >= self.spilled_count {
            return Ok(self.head.get((i - self.spilled_count) as usize).copied());
        }
        let start = i / READ_BLOCK * READ_BLOCK;
        if self.read.as_ref().is_none_or(|(at, _)| *at != start) {
            let (path, file) = self.spilled.as_ref().expect("ids below spilled_count are in the file");
            let mut buf = self.read.take().map(|(_, b)| b).unwrap_or_default();
            buf.resize((self.spilled_count - start).min(READ_BLOCK) as usize * 32, 0);
            read_exact_at(file, &mut buf, start * 32, path)?;
            self.read = Some((start, buf));
        }
        let (_, buf) = self.read.as_ref().expect("just read");
        let at = (i - start) as usize * 32;
        Ok(Some(ChunkId(buf[at..at + 32].try_into().expect("32 bytes"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_in_order_and_by_position_from_a_spilled_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("repo"));
        store.create_layout().unwrap();
        let ids: Vec<ChunkId> =
            (0..LIST_BLOCK * 2 + 5).map(|i| ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes())).collect();
        let mut list = ChunkList::new(&store);
        let raw: Vec<u8> = ids[10..].iter().flat_map(|c| c.0).collect();
        for id in &ids[..10] {
            list.push(*id).unwrap();
        }
        list.push_raw(&raw).unwrap();
        assert!(list.is_spilled());
        assert_eq!(list.len(), ids.len() as u64);
        let mut all = Vec::new();
        list.for_each_block(&mut |b| all.extend_from_slice(b)).unwrap();
        assert_eq!(all, ids.iter().flat_map(|c| c.0).collect::<Vec<u8>>());
        // In order, again from the start (a retried file), and out of order.
        for _ in 0..2 {
            for (i, id) in ids.iter().enumerate() {
                assert_eq!(list.get(i as u64).unwrap(), Some(*id));
            }
        }
        for i in [LIST_BLOCK as u64 * 2 + 4, 3, READ_BLOCK * 5 + 1, LIST_BLOCK as u64 * 2 - 1] {
            assert_eq!(list.get(i).unwrap(), Some(ids[i as usize]));
        }
        assert_eq!(list.get(ids.len() as u64).unwrap(), None);
        let left: Vec<_> = std::fs::read_dir(store.root().join("tmp")).unwrap().collect();
        assert!(left.is_empty(), "spill files are unlinked: {left:?}");
    }

    #[test]
    fn without_a_writable_tmp_the_ids_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        // No layout: `tmp/` does not exist, so no file can be made there.
        let store = LocalStore::new(dir.path().join("missing"));
        let ids: Vec<ChunkId> =
            (0..LIST_BLOCK + 3).map(|i| ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes())).collect();
        let mut list = ChunkList::new(&store);
        for id in &ids {
            list.push(*id).unwrap();
        }
        assert!(!list.is_spilled());
        assert_eq!(list.len(), ids.len() as u64);
        assert_eq!(list.get(LIST_BLOCK as u64 + 2).unwrap(), Some(ids[LIST_BLOCK + 2]));
        let mut all = Vec::new();
        list.for_each_block(&mut |b| all.extend_from_slice(b)).unwrap();
        assert_eq!(all, ids.iter().flat_map(|c| c.0).collect::<Vec<u8>>());
    }
}
