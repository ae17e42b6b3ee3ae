//! A snapshot's tree: the node records in tree order, as one stream cut into chunks by the
//! repository's "tree" chunker and stored like file content (format-spec/manifest.md). Written
//! with a big file's chunk ids streamed from a [`ChunkList`], read back the same way when asked.

use crate::error::{Error, Result};
use crate::format::chunker::{Cutter, PushChunker};
use crate::format::manifest::{Node, RecordParser};
use crate::id::ChunkId;
use crate::repo::cache::Location;
use crate::repo::chunks::ChunkWriter;
use crate::repo::ChunkReader;
pub use crate::store::spill::ChunkList;
use crate::store::LocalStore;

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

/// Iterates a tree stream, loading its chunks one at a time.
pub struct TreeReader {
    reader: ChunkReader,
    chunks: std::vec::IntoIter<(ChunkId, Location)>,
    parser: RecordParser,
}

impl TreeReader {
    /// A reader over tree chunks with known locations.
    pub fn new(reader: ChunkReader, chunks: Vec<(ChunkId, Location)>) -> Self {
        TreeReader { reader, chunks: chunks.into_iter(), parser: RecordParser::new() }
    }

    /// The same nodes, except that a file record too big to hold (more than 32,768 chunks, a
    /// database of more than 128 MiB in 4 KiB pages) comes without its chunks, which are in the
    /// list beside it, spilled to `store`'s `tmp/` as they are read.
    pub fn spilling(self, store: &LocalStore) -> ListedTreeReader {
        ListedTreeReader { tree: self, store: store.clone(), list: None }
    }

    /// The next record: `next` from the parser, fed chunk by chunk.
    fn pull<T>(&mut self, next: &mut dyn FnMut(&mut RecordParser) -> Result<Option<T>>) -> Option<Result<T>> {
        loop {
            match next(&mut self.parser) {
                Ok(Some(n)) => return Some(Ok(n)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            match self.chunks.next() {
                Some((id, loc)) => match self.reader.read(&id, &loc) {
                    Ok(d) => self.parser.feed(&d),
                    Err(e) => {
                        self.chunks = Vec::new().into_iter();
                        return Some(Err(e));
                    }
                },
                None => {
                    if self.parser.leftover() > 0 {
                        let n = self.parser.leftover();
                        self.parser = RecordParser::new();
                        return Some(Err(Error::corrupt(
                            "snapshot tree",
                            format!("{n} bytes of an incomplete record at the end"),
                        )));
                    }
                    return None;
                }
            }
        }
    }
}

impl Iterator for TreeReader {
    type Item = Result<Node>;
    fn next(&mut self) -> Option<Result<Node>> {
        self.pull(&mut |p| p.next(&|| "snapshot tree".into()))
    }
}

/// A node of a tree, and the list holding its chunks when there were too many to hold.
pub type ListedNode = (Node, Option<ChunkList>);

/// See [`TreeReader::spilling`].
pub struct ListedTreeReader {
    tree: TreeReader,
    store: LocalStore,
    /// The list of the record being read, made at its first ids.
    list: Option<ChunkList>,
}

impl Iterator for ListedTreeReader {
    type Item = Result<ListedNode>;
    fn next(&mut self) -> Option<Result<ListedNode>> {
        let (store, list) = (&self.store, &mut self.list);
        let got = self.tree.pull(&mut |p| {
            p.next_spilling(&|| "snapshot tree".into(), &mut |ids| {
                list.get_or_insert_with(|| ChunkList::new(store)).push_raw(ids)
            })
        });
        match got? {
            Ok((node, None)) => Some(Ok((node, None))),
            Ok((node, Some(_))) => Some(Ok((node, Some(self.list.take().unwrap_or_else(|| ChunkList::new(store)))))),
            Err(e) => {
                self.list = None;
                Some(Err(e))
            }
        }
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
    use crate::store::spill::LIST_BLOCK;
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
                spilled += list.is_spilled() as usize;
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
