//! The one pack writer. Backup, prune's repack and repair index put chunks into packs and packs
//! into index files through here, so the write order of format-spec/ordering.md lives in one
//! place: a pack is complete, fsynced and published before any index file names it, and an index
//! file is written only for packs already published. The caller writes what depends on the index
//! (a snapshot file; prune's and repair's removal of old index files) only after `finish`.
//!
//! [`Packer`] fills a pack in `tmp/` up to the repository's pack size and hands it to a finisher
//! thread (trailer, fsync, hash, publish), so the caller keeps hashing and compressing while the
//! disk syncs. [`IndexBatch`] gathers the records of published packs and writes an index file
//! whenever they hold [`INDEX_FLUSH_ENTRIES`] entries, and once more at the end.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::error::{Error, Result};
use crate::format::crypto::Keys;
use crate::format::index::{self, PackRecord};
use crate::id::{content_hash, ChunkId, IndexId};
use crate::repo::cache::{Cache, Location};
use crate::repo::pack::{PackWriter, WrittenPack};
use crate::store::{Handle, LocalStore, Store};

/// Index entries (chunks) the pending pack records hold before they are written as an index file
/// (format-spec/ordering.md, snapshot step 6). Bounds both an index file's size and the memory
/// of records not yet indexed.
pub const INDEX_FLUSH_ENTRIES: usize = 32768;

/// A pack is closed at this many chunks whatever its size: a pack of small deltas and slices
/// (100-300 bytes each) would otherwise hold 100,000 entries, whose records (80 bytes each in
/// memory) the open pack, the packs in flight and the index batch all hold.
pub const MAX_PACK_ENTRIES: usize = 16384;

/// Packs handed to the finisher and not yet collected, beyond which `add` waits for the disk.
const MAX_IN_FLIGHT: usize = 2;

/// Seals `packs` and writes them as a new index file named by its content hash.
pub fn write_index(store: &LocalStore, keys: &Keys, packs: &[PackRecord]) -> Result<IndexId> {
    let sealed = index::seal(keys, packs);
    let id = IndexId(content_hash(&sealed));
    store.put(Handle::Index(id), &sealed)?;
    Ok(id)
}

/// Records of published packs waiting to be written as index files.
pub struct IndexBatch<'c> {
    store: LocalStore,
    keys: Arc<Keys>,
    cache: Option<&'c mut Cache>,
    pending: Vec<PackRecord>,
    entries: usize,
    written: Vec<IndexId>,
}

impl<'c> IndexBatch<'c> {
    /// A batch writing into `store`; each index file written is also added to `cache` if given.
    pub fn new(store: LocalStore, keys: Arc<Keys>, cache: Option<&'c mut Cache>) -> Self {
        IndexBatch { store, keys, cache, pending: Vec::new(), entries: 0, written: Vec::new() }
    }

    /// Adds the record of a pack that is already published. Writes an index file once the pending
    /// records hold [`INDEX_FLUSH_ENTRIES`] entries; returns the records that file lists (none
    /// when nothing was written).
    pub fn push(&mut self, record: PackRecord) -> Result<Vec<PackRecord>> {
        self.entries += record.entries.len();
        self.pending.push(record);
        if self.entries >= INDEX_FLUSH_ENTRIES {
            return self.flush();
        }
        Ok(Vec::new())
    }

    /// Writes the pending records as one index file (if any); returns them.
    pub fn flush(&mut self) -> Result<Vec<PackRecord>> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let id = write_index(&self.store, &self.keys, &self.pending)?;
        tracing::debug!(index = %id, packs = self.pending.len(), entries = self.entries, "index written");
        if let Some(cache) = self.cache.as_deref_mut() {
            cache.add_index(&id, &self.pending)?;
        }
        self.written.push(id);
        self.entries = 0;
        Ok(std::mem::take(&mut self.pending))
    }

    /// Writes what is pending; returns every index file this batch wrote.
    pub fn finish(mut self) -> Result<Vec<IndexId>> {
        self.flush()?;
        Ok(self.written)
    }

    fn cache(&self) -> Option<&Cache> {
        self.cache.as_deref()
    }
}

/// Finishes packs (trailer, fsync, publish) on its own thread, in the order submitted.
struct Finisher {
    jobs: Option<Sender<PackWriter>>,
    done: Receiver<Result<WrittenPack>>,
    abort: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    in_flight: usize,
}

impl Finisher {
    fn new(store: LocalStore, keys: Arc<Keys>) -> Self {
        let (jobs, rx) = bounded::<PackWriter>(MAX_IN_FLIGHT);
        let (done_tx, done) = crossbeam_channel::unbounded();
        let abort = Arc::new(AtomicBool::new(false));
        let stop = abort.clone();
        let handle = std::thread::spawn(move || {
            for w in rx {
                // An abandoned run publishes nothing more: dropping the writer removes its file.
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                if done_tx.send(w.finish(&store, &keys)).is_err() {
                    break;
                }
            }
        });
        Finisher { jobs: Some(jobs), done, abort, handle: Some(handle), in_flight: 0 }
    }

    fn stopped() -> Error {
        Error::Invalid("pack writer thread stopped".into())
    }

    fn submit(&mut self, w: PackWriter) -> Result<()> {
        self.jobs.as_ref().expect("open").send(w).map_err(|_| Self::stopped())?;
        self.in_flight += 1;
        Ok(())
    }

    /// Finished packs, waiting until at most `max_in_flight` remain unfinished.
    fn collect(&mut self, max_in_flight: usize) -> Result<Vec<WrittenPack>> {
        let mut out = Vec::new();
        while self.in_flight > 0 {
            let r = if self.in_flight > max_in_flight {
                self.done.recv().map_err(|_| Self::stopped())?
            } else {
                match self.done.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            self.in_flight -= 1;
            out.push(r?);
        }
        Ok(out)
    }
}

impl Drop for Finisher {
    /// Packs still queued are dropped unpublished; one being finished completes (harmless: a
    /// published pack that no index lists).
    fn drop(&mut self) {
        self.abort.store(true, Ordering::Relaxed);
        self.jobs.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Puts sealed chunks into packs of the repository's pack size, and (when given an
/// [`IndexBatch`]) the packs into index files. Dropping it without `finish` abandons the run:
/// the open pack's temporary file is removed and queued packs are not published.
pub struct Packer<'c> {
    store: LocalStore,
    pack_size: u64,
    writer: Option<PackWriter>,
    finisher: Finisher,
    index: Option<IndexBatch<'c>>,
    /// Records of published packs when the caller indexes them itself.
    unindexed: Vec<PackRecord>,
    /// Chunks `missing` handed out (to be added by this run) that no index file written yet lists.
    reserved: HashSet<ChunkId>,
}

impl<'c> Packer<'c> {
    /// A packer writing packs of about `pack_size` bytes into `store`. With `index`, published
    /// packs are indexed as they come (backup); without, `finish` returns their records so the
    /// caller can index them together with others (prune).
    pub fn new(store: LocalStore, keys: Arc<Keys>, pack_size: u64, index: Option<IndexBatch<'c>>) -> Self {
        Packer {
            finisher: Finisher::new(store.clone(), keys),
            store,
            pack_size,
            writer: None,
            index,
            unindexed: Vec::new(),
            reserved: HashSet::new(),
        }
    }

    /// Positions in `ids` of the chunks neither the index cache (if the index batch has one) nor
    /// this run's packs hold. They count as held from now on, so a chunk is stored once per run
    /// even when it repeats within `ids`.
    pub fn missing(&mut self, ids: &[ChunkId]) -> Result<Vec<usize>> {
        let reserved = &mut self.reserved;
        let mut new = Vec::new();
        let mut pick = |cache: Option<&Cache>| -> Result<()> {
            for (i, id) in ids.iter().enumerate() {
                if reserved.contains(id) || cache.map(|c| c.contains(id)).transpose()?.unwrap_or(false) {
                    continue;
                }
                reserved.insert(*id);
                new.push(i);
            }
            Ok(())
        };
        match self.index.as_ref().and_then(IndexBatch::cache) {
            Some(cache) => cache.batch(|c| pick(Some(c)))?,
            None => pick(None)?,
        }
        Ok(new)
    }

    /// Where the index places each of `ids`, for chunks held in a pack not marked damaged;
    /// `None` for the others (and for every chunk when this packer has no cache).
    pub fn locate(&self, ids: &[ChunkId]) -> Result<Vec<Option<Location>>> {
        match self.index.as_ref().and_then(IndexBatch::cache) {
            Some(cache) => {
                cache.batch(|c| ids.iter().map(|id| if c.contains(id)? { c.lookup(id) } else { Ok(None) }).collect())
            }
            None => Ok(vec![None; ids.len()]),
        }
    }

    /// Appends a sealed chunk to the open pack (`reference`: the chunk its encoding references,
    /// see `PackWriter::add`); a pack that reaches the pack size goes to the finisher.
    pub fn add(&mut self, id: ChunkId, sealed: &[u8], raw_len: u32, reference: Option<ChunkId>) -> Result<()> {
        if self.writer.is_none() {
            self.writer = Some(PackWriter::new(&self.store)?);
        }
        let w = self.writer.as_mut().expect("just set");
        w.add(id, sealed, raw_len, reference)?;
        if w.len() >= self.pack_size || w.count() >= MAX_PACK_ENTRIES {
            let w = self.writer.take().expect("set");
            self.finisher.submit(w)?;
            self.take_finished(MAX_IN_FLIGHT)?;
        }
        Ok(())
    }

    /// Moves finished packs into the index batch (or the caller's list).
    fn take_finished(&mut self, max_in_flight: usize) -> Result<()> {
        for p in self.finisher.collect(max_in_flight)? {
            tracing::debug!(pack = %p.id, size = p.size, chunks = p.entries.len(), "pack written");
            let record = PackRecord { id: p.id, size: p.size, entries: p.entries };
            match self.index.as_mut() {
                Some(index) => {
                    // Indexed chunks are found in the cache from now on.
                    for r in index.push(record)? {
                        for e in &r.entries {
                            self.reserved.remove(&e.id);
                        }
                    }
                }
                None => self.unindexed.push(record),
            }
        }
        Ok(())
    }

    /// Publishes the open pack, waits for every pack to be published, then writes the last index
    /// file. Returns the records of the packs it did not index (all of them without an index
    /// batch, none with one).
    pub fn finish(mut self) -> Result<Vec<PackRecord>> {
        if let Some(w) = self.writer.take() {
            if !w.is_empty() {
                self.finisher.submit(w)?;
            }
        }
        self.take_finished(0)?;
        if let Some(index) = self.index.take() {
            index.finish()?;
        }
        Ok(std::mem::take(&mut self.unindexed))
    }

    /// Gives up: removes the open pack's temporary file and publishes no queued pack.
    pub fn abandon(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::MasterKey;
    use crate::format::pack::Entry;
    use crate::id::{PackId, RepoId};
    use crate::repo::pack::read_trailer;
    use crate::store::FileKind;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: LocalStore,
        keys: Arc<Keys>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("repo"));
        store.create_layout().unwrap();
        let keys = Arc::new(Keys::derive(&MasterKey([7; 32]), RepoId([1; 32]), true));
        Fixture { _dir: dir, store, keys }
    }

    fn names(store: &LocalStore, kind: FileKind) -> Vec<String> {
        store
            .list(kind)
            .unwrap()
            .into_iter()
            .map(|s| s.handle.rel_path().rsplit('/').next().unwrap().to_string())
            .collect()
    }

    fn tmp_files(store: &LocalStore) -> usize {
        std::fs::read_dir(store.root().join("tmp")).unwrap().count()
    }

    /// A distinct fake sealed chunk of `len` bytes (the packer does not look inside).
    fn chunk(i: u32, len: usize) -> (ChunkId, Vec<u8>) {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_le_bytes());
        (ChunkId(id), vec![i as u8; len])
    }

    fn record(first: u32, n: usize) -> PackRecord {
        let entries = (0..n as u32)
            .map(|i| Entry {
                id: chunk(first + i, 0).0,
                offset: 8 + i * 10,
                stored_len: 10,
                raw_len: 5,
                reference: None,
            })
            .collect();
        PackRecord { id: PackId(chunk(first, 0).0 .0), size: 8 + 10 * n as u64, entries }
    }

    #[test]
    fn packs_fill_to_the_size_and_are_indexed_at_the_end() {
        let f = fixture();
        let cache_path = f.store.root().join("cache").join("cache.sqlite");
        let mut cache = Cache::open(&cache_path, RepoId([1; 32])).unwrap();
        let batch = IndexBatch::new(f.store.clone(), f.keys.clone(), Some(&mut cache));
        // 8 bytes of magic + 4 chunks of 3000 bytes pass 10000: packs of 4, 4 and 2 chunks.
        let mut p = Packer::new(f.store.clone(), f.keys.clone(), 10_000, Some(batch));
        let chunks: Vec<_> = (0..10).map(|i| chunk(i, 3000)).collect();
        let ids: Vec<ChunkId> = chunks.iter().map(|c| c.0).collect();
        assert_eq!(p.missing(&ids).unwrap(), (0..10).collect::<Vec<_>>());
        for (id, sealed) in &chunks {
            p.add(*id, sealed, 1000, None).unwrap();
        }
        assert!(p.missing(&ids).unwrap().is_empty(), "this run's chunks count as held");
        assert!(names(&f.store, FileKind::Index).is_empty(), "no index before the threshold or the end");
        assert!(p.finish().unwrap().is_empty(), "all packs indexed by the packer");

        let packs = names(&f.store, FileKind::Pack);
        let mut sizes = Vec::new();
        for name in &packs {
            let path = f.store.path(FileKind::Pack, name);
            assert_eq!(content_hash(&std::fs::read(&path).unwrap()).to_vec(), hex::decode(name).unwrap());
            let (entries, _) = read_trailer(&path, &f.keys, &name.parse().unwrap()).unwrap();
            sizes.push(entries.len());
        }
        sizes.sort();
        assert_eq!(sizes, vec![2, 4, 4]);
        let index_files = names(&f.store, FileKind::Index);
        assert_eq!(index_files.len(), 1);
        let listed = crate::repo::cache::read_index_file(&f.store, &f.keys, &index_files[0].parse().unwrap()).unwrap();
        let mut listed_packs: Vec<String> = listed.iter().map(|r| r.id.to_hex()).collect();
        listed_packs.sort();
        assert_eq!(listed_packs, packs);
        for id in &ids {
            assert!(cache.contains(id).unwrap(), "indexed chunks are in the cache");
        }
        assert_eq!(tmp_files(&f.store), 0);
    }

    #[test]
    fn without_an_index_batch_the_records_go_back_to_the_caller() {
        let f = fixture();
        let mut p = Packer::new(f.store.clone(), f.keys.clone(), 1000, None);
        for i in 0..3 {
            let (id, sealed) = chunk(i, 600);
            p.add(id, &sealed, 600, None).unwrap();
        }
        let records = p.finish().unwrap();
        assert_eq!(records.iter().map(|r| r.entries.len()).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(names(&f.store, FileKind::Pack).len(), 2);
        assert!(names(&f.store, FileKind::Index).is_empty());
    }

    #[test]
    fn index_files_are_written_at_the_flush_threshold() {
        let f = fixture();
        let mut batch = IndexBatch::new(f.store.clone(), f.keys.clone(), None);
        let half = INDEX_FLUSH_ENTRIES / 2;
        let short = INDEX_FLUSH_ENTRIES - 1;
        assert!(batch.push(record(0, half)).unwrap().is_empty());
        assert!(batch.push(record(half as u32, short - half)).unwrap().is_empty());
        assert!(names(&f.store, FileKind::Index).is_empty(), "one entry short of the threshold");
        let flushed = batch.push(record(short as u32, 1)).unwrap();
        assert_eq!(flushed.iter().map(|r| r.entries.len()).sum::<usize>(), INDEX_FLUSH_ENTRIES);
        assert_eq!(names(&f.store, FileKind::Index).len(), 1);
        let after = INDEX_FLUSH_ENTRIES as u32;
        assert!(batch.push(record(after, 10)).unwrap().is_empty());
        let written = batch.finish().unwrap();
        assert_eq!(written.len(), 2);
        let last = crate::repo::cache::read_index_file(&f.store, &f.keys, &written[1]).unwrap();
        assert_eq!(last, vec![record(after, 10)]);
    }

    #[test]
    fn a_failed_finish_publishes_nothing_and_leaves_no_temp_file() {
        let f = fixture();
        let mut p = Packer::new(f.store.clone(), f.keys.clone(), 1 << 20, None);
        let (id, sealed) = chunk(1, 100);
        p.add(id, &sealed, 100, None).unwrap();
        // Publishing needs `packs/<xx>/`; a file named `packs` makes it fail.
        let packs = f.store.root().join("packs");
        std::fs::remove_dir_all(&packs).unwrap();
        std::fs::write(&packs, b"not a directory").unwrap();
        assert!(p.finish().is_err());
        assert_eq!(std::fs::read(&packs).unwrap(), b"not a directory");
        assert_eq!(tmp_files(&f.store), 0);
    }

    #[test]
    fn abandon_removes_the_temp_file() {
        let f = fixture();
        let mut p = Packer::new(f.store.clone(), f.keys.clone(), 1 << 20, None);
        for i in 0..3 {
            let (id, sealed) = chunk(i, 100);
            p.add(id, &sealed, 100, None).unwrap();
        }
        assert_eq!(tmp_files(&f.store), 1);
        p.abandon();
        assert_eq!(tmp_files(&f.store), 0);
        assert!(names(&f.store, FileKind::Pack).is_empty());
    }
}
