//! Writing a snapshot's tree: the node records in tree order, as one stream cut into chunks by
//! the repository's "tree" chunker and stored like file content (format-spec/manifest.md).

use crate::error::Result;
use crate::format::chunker::{Cutter, PushChunker};
use crate::format::manifest::Node;
use crate::id::ChunkId;
use crate::repo::chunks::ChunkWriter;

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
        for part in [&node.path[..], &[node.kind as u8][..], &node.target[..]] {
            self.digest.update(&(part.len() as u64).to_le_bytes());
            self.digest.update(part);
        }
        self.digest.update(&(node.chunks.len() as u64).to_le_bytes());
        for c in &node.chunks {
            self.digest.update(&c.0);
        }
        // The record goes to the chunker in pieces and its chunks are stored as they complete, so
        // a database's record (32 bytes per page) is never held whole, nor copied.
        let mut failed = None;
        node.write_record(&mut |b| {
            if failed.is_none() {
                self.buf.extend_from_slice(b);
                if self.buf.len() >= FEED_BYTES {
                    failed = self.feed(chunks).err();
                }
            }
        });
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
