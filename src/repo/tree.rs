//! Writing a snapshot's tree: the node records in tree order, as one stream cut into chunks by
//! the repository's "tree" chunker and stored like file content (format-spec/manifest.md).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::chunker::{Cutter, PushChunker};
use crate::format::manifest::Node;
use crate::id::ChunkId;
use crate::repo::chunks::ChunkWriter;
use crate::store::local::read_exact_at;
use crate::store::LocalStore;

/// Ids a [`ChunkList`] holds in memory before it moves them to its file (1 MiB).
const LIST_BLOCK: usize = 32768;

/// A file's chunk ids as a backup produces them. Past [`LIST_BLOCK`] they go to an unlinked
/// temporary file in `tmp/`, so memory does not grow with the file: a 1 GiB database has 262,144
/// pages, 8 MiB of ids, which would otherwise be held until the file ends.
pub struct ChunkList {
    store: LocalStore,
    head: Vec<ChunkId>,
    spilled: Option<(PathBuf, File)>,
    spilled_count: u64,
}

impl ChunkList {
    /// An empty list, spilling into `store`'s `tmp/`.
    pub fn new(store: &LocalStore) -> Self {
        ChunkList { store: store.clone(), head: Vec::new(), spilled: None, spilled_count: 0 }
    }

    /// How many ids.
    pub(crate) fn len(&self) -> u64 {
        self.spilled_count + self.head.len() as u64
    }

    /// Appends an id.
    pub fn push(&mut self, id: ChunkId) -> Result<()> {
        self.head.push(id);
        if self.head.len() < LIST_BLOCK {
            return Ok(());
        }
        if self.spilled.is_none() {
            let (path, f) = self.store.temp_file()?;
            // Unlinked at once: the file lives as long as this list, whatever ends the process.
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            self.spilled = Some((path, f));
        }
        let (path, f) = self.spilled.as_mut().expect("just set");
        let bytes: Vec<u8> = self.head.iter().flat_map(|c| c.0).collect();
        f.write_all(&bytes).map_err(|e| Error::io(&*path, e))?;
        self.spilled_count += self.head.len() as u64;
        self.head.clear();
        Ok(())
    }

    /// Hands the ids over in order, in blocks of raw 32-byte ids.
    fn for_each_block(&self, f: &mut dyn FnMut(&[u8])) -> Result<()> {
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
        let tail: Vec<u8> = self.head.iter().flat_map(|c| c.0).collect();
        f(&tail);
        Ok(())
    }
}

/// Record bytes gathered before they are pushed through the chunker.
const FEED_BYTES: usize = 64 << 10;

/// Builds the tree stream and stores it as chunks, digesting its content on the way.
pub struct TreeWriter {
    chunker: PushChunker,
    ids: Vec<ChunkId>,
    len: u64,
    buf: Vec<u8>,
    digest: blake3::Hasher,
}

/// A stored tree stream.
#[derive(Debug)]
pub struct WrittenTree {
    /// Its chunks, in order.
    pub chunks: Vec<ChunkId>,
    /// Its length in bytes.
    pub len: u64,
    /// Hex digest of the content (paths, kinds, link targets, chunk ids; not times or modes), so
    /// a later run can tell that nothing changed.
    pub digest: String,
}

impl TreeWriter {
    /// A tree cut by `cutter` (the repository's "tree" chunker).
    pub fn new(cutter: Cutter) -> Self {
        TreeWriter {
            chunker: PushChunker::new(cutter),
            ids: Vec::new(),
            len: 0,
            buf: Vec::new(),
            digest: blake3::Hasher::new(),
        }
    }

    /// Appends a node (nodes arrive in tree order); stores the chunks it completes.
    pub fn add(&mut self, node: &Node, chunks: &mut ChunkWriter) -> Result<()> {
        self.digest_head(node, node.chunks.len() as u64);
        for c in &node.chunks {
            self.digest.update(&c.0);
        }
        let mut failed = None;
        node.write_record(&mut |b| self.stream(b, chunks, &mut failed));
        self.end_record(chunks, failed)
    }

    /// [`TreeWriter::add`] for a file whose chunks are in `list` (`node.chunks` is empty).
    pub fn add_listed(&mut self, node: &Node, list: &ChunkList, chunks: &mut ChunkWriter) -> Result<()> {
        self.digest_head(node, list.len());
        let head = node.record_head(list.len())?;
        let mut failed = None;
        self.stream(&head, chunks, &mut failed);
        list.for_each_block(&mut |ids| {
            self.digest.update(ids);
            self.stream(ids, chunks, &mut failed);
        })?;
        self.end_record(chunks, failed)
    }

    /// Digests what identifies a node's content, up to its chunk ids (which follow).
    fn digest_head(&mut self, node: &Node, count: u64) {
        for part in [&node.path[..], &[node.kind as u8][..], &node.target[..]] {
            self.digest.update(&(part.len() as u64).to_le_bytes());
            self.digest.update(part);
        }
        self.digest.update(&count.to_le_bytes());
    }

    /// Takes record bytes. They go to the chunker in pieces and its chunks are stored as they
    /// complete, so a database's record (32 bytes per page) is never held whole, nor copied. The
    /// first failure is kept in `failed` and ends the record's feeding.
    fn stream(&mut self, bytes: &[u8], chunks: &mut ChunkWriter, failed: &mut Option<Error>) {
        if failed.is_none() {
            self.buf.extend_from_slice(bytes);
            if self.buf.len() >= FEED_BYTES {
                *failed = self.feed(chunks).err();
            }
        }
    }

    /// Ends a record: its failure, or its last bytes pushed.
    fn end_record(&mut self, chunks: &mut ChunkWriter, failed: Option<Error>) -> Result<()> {
        match failed {
            Some(e) => Err(e),
            None => self.feed(chunks),
        }
    }

    /// Pushes the buffered record bytes through the chunker; stores the chunks they complete.
    fn feed(&mut self, chunks: &mut ChunkWriter) -> Result<()> {
        self.len += self.buf.len() as u64;
        let out = self.chunker.push(&self.buf);
        self.buf.clear();
        if !out.is_empty() {
            let refs: Vec<&[u8]> = out.iter().map(|c| c.as_slice()).collect();
            self.ids.extend(chunks.store(&refs)?);
        }
        Ok(())
    }

    /// Stores the stream's last chunk.
    pub fn finish(mut self, chunks: &mut ChunkWriter) -> Result<WrittenTree> {
        let digest = self.digest.finalize().to_hex().to_string();
        let out = self.chunker.finish();
        let refs: Vec<&[u8]> = out.iter().map(|c| c.as_slice()).collect();
        self.ids.extend(chunks.store(&refs)?);
        Ok(WrittenTree { chunks: self.ids, len: self.len, digest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::{Keys, MasterKey};
    use crate::format::manifest::NodeKind;
    use crate::format::repo_config::default_chunkers;
    use crate::id::RepoId;
    use crate::repo::packer::Packer;
    use std::sync::Arc;

    fn node(path: &str, chunks: Vec<ChunkId>) -> Node {
        Node {
            path: path.as_bytes().to_vec(),
            kind: NodeKind::File,
            mode: 0o100644,
            uid: 1,
            gid: 2,
            mtime_ns: 3,
            ctime_ns: 4,
            inode: 5,
            size: 6,
            target: Vec::new(),
            chunks,
        }
    }

    /// The tree stream and digest of `nodes`, written with `add` or, for files, `add_listed`.
    fn written(store: &LocalStore, nodes: &[Node], listed: bool) -> (WrittenTree, usize) {
        let keys = Arc::new(Keys::derive(&MasterKey([7; 32]), RepoId([1; 32]), true));
        let packer = Packer::new(store.clone(), keys.clone(), 1 << 20, None);
        let mut chunks = ChunkWriter::new(packer, keys, 3);
        let mut t = TreeWriter::new(Cutter::new(default_chunkers()["tree"], 9));
        let mut spilled = 0;
        for n in nodes {
            if listed {
                let mut list = ChunkList::new(store);
                for c in &n.chunks {
                    list.push(*c).unwrap();
                }
                spilled += list.spilled.is_some() as usize;
                t.add_listed(&node(&n.path_str(), Vec::new()), &list, &mut chunks).unwrap();
            } else {
                t.add(n, &mut chunks).unwrap();
            }
        }
        let w = t.finish(&mut chunks).unwrap();
        chunks.finish().unwrap();
        (w, spilled)
    }

    #[test]
    fn a_listed_file_writes_the_same_tree_as_a_node_holding_its_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("repo"));
        store.create_layout().unwrap();
        let ids = |n: usize, salt: u8| -> Vec<ChunkId> {
            (0..n).map(|i| ChunkId(*blake3::hash(&[&i.to_le_bytes()[..], &[salt]].concat()).as_bytes())).collect()
        };
        let nodes = vec![
            node("a", ids(3, 1)),
            node("big.db", ids(LIST_BLOCK * 2 + 17, 2)),
            node("c", Vec::new()),
            node("d", ids(LIST_BLOCK, 3)),
        ];
        let (held, _) = written(&store, &nodes, false);
        let (listed, spilled) = written(&store, &nodes, true);
        assert_eq!(spilled, 2, "the two big lists went to a file");
        assert_eq!(listed.chunks, held.chunks);
        assert_eq!((listed.len, listed.digest), (held.len, held.digest));
        let left: Vec<_> = std::fs::read_dir(store.root().join("tmp")).unwrap().collect();
        assert!(left.is_empty(), "spill files are unlinked: {left:?}");
    }
}
