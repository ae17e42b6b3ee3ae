//! Storing plaintext chunks: hash each, drop those the repository already has *before*
//! compressing them, compress and seal the new ones in parallel (checking each round-trips to its
//! id), and hand them to the [`Packer`].

use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::blob;
use crate::format::crypto::{Keys, ObjectKind};
use crate::id::ChunkId;
use crate::repo::packer::Packer;

/// What a run added to the repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Added {
    /// Chunks stored.
    pub chunks: u64,
    /// Their plaintext bytes.
    pub raw_bytes: u64,
    /// Their sealed bytes.
    pub bytes: u64,
}

/// Stores chunks through a [`Packer`], once each.
pub struct ChunkWriter<'c> {
    packer: Packer<'c>,
    keys: Arc<Keys>,
    level: i32,
    added: Added,
}

/// Compresses and seals one new chunk.
fn encode_chunk(keys: &Keys, level: i32, id: ChunkId, data: &[u8]) -> Result<Vec<u8>> {
    let payload = blob::encode(data, level);
    // Decompress what we are about to store: a compressor bug must not become data loss (restic
    // lost data that way). Equal bytes hash to the same id, so a comparison is as good as a re-hash
    // and cheaper. Stored-raw chunks went through no transformation. The AEAD needs no such
    // check: opening authenticates every byte on read.
    if payload[0] != blob::ENC_RAW {
        let what = || format!("new chunk {}", id.short());
        let plain = blob::decode(&payload, data.len(), &what)?;
        if plain != data {
            return Err(Error::corrupt(what(), "did not round-trip through compression; nothing stored"));
        }
    }
    Ok(keys.seal(ObjectKind::Chunk, &id.0, &payload))
}

impl<'c> ChunkWriter<'c> {
    /// Chunks keyed and sealed with `keys`, compressed at zstd `level`, packed by `packer`.
    pub fn new(packer: Packer<'c>, keys: Arc<Keys>, level: i32) -> Self {
        ChunkWriter { packer, keys, level, added: Added::default() }
    }

    /// Stores the chunks the repository lacks; returns all their ids in order.
    pub fn store(&mut self, chunks: &[&[u8]]) -> Result<Vec<ChunkId>> {
        let keys = &self.keys;
        let ids: Vec<ChunkId> = chunks.par_iter().with_min_len(8).map(|c| keys.chunk_id(c)).collect();
        let new = self.packer.missing(&ids)?;
        let level = self.level;
        let sealed: Vec<Result<Vec<u8>>> =
            new.par_iter().with_min_len(4).map(|&i| encode_chunk(keys, level, ids[i], chunks[i])).collect();
        for (&i, s) in new.iter().zip(sealed) {
            let s = s?;
            self.packer.add(ids[i], &s, chunks[i].len() as u32)?;
            self.added.chunks += 1;
            self.added.raw_bytes += chunks[i].len() as u64;
            self.added.bytes += s.len() as u64;
        }
        Ok(ids)
    }

    /// Publishes the last pack and index file; returns what was added.
    pub fn finish(self) -> Result<Added> {
        self.packer.finish()?;
        Ok(self.added)
    }

    /// Gives up (see [`Packer::abandon`]).
    pub fn abandon(self) {
        self.packer.abandon();
    }
}
