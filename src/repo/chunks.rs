//! Storing plaintext chunks: hash each, drop those the repository already has *before*
//! compressing them, compress and seal the new ones in parallel (checking each round-trips to its
//! id), and hand them to the [`Packer`]. A new chunk given a base (the parent snapshot's page at
//! the same position of the same database file) is stored as a zstd delta against it when that
//! is clearly smaller (format-spec/pack.md, "References").

#![allow(clippy::rc_buffer, reason = "the shared decoding contract hands referenced chunks over as Arc<Vec<u8>>")]

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::blob;
use crate::format::crypto::{Keys, ObjectKind};
use crate::id::ChunkId;
use crate::repo::packer::Packer;
use crate::repo::ChunkReader;

/// A delta is kept only when it is at most this share (percent) of the chunk's plain encoding:
/// each delta costs a base read on restore, and a page that drifted far from its base is
/// better stored whole (it then serves as the next base). Chosen by measurement (benches/README.md).
pub const DELTA_KEEP_PERCENT: usize = 75;

/// A delta at most 1/this of the chunk's length is kept without comparing it to the plain
/// encoding (no plain zstd frame of a page comes near it).
const DELTA_TINY: usize = 16;

/// What a run added to the repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Added {
    /// Chunks stored.
    pub chunks: u64,
    /// Their plaintext bytes.
    pub raw_bytes: u64,
    /// Their sealed bytes.
    pub bytes: u64,
    /// Of the chunks stored, those stored as deltas against a base.
    pub deltas: u64,
    /// Sealed bytes of those deltas.
    pub delta_bytes: u64,
}

/// Stores chunks through a [`Packer`], once each.
pub struct ChunkWriter<'c> {
    packer: Packer<'c>,
    keys: Arc<Keys>,
    level: i32,
    added: Added,
    /// Reads the bases of deltas; without it, every chunk is stored whole.
    bases: Option<ChunkReader>,
}

/// A base chunk: its id and plaintext.
type Base = (ChunkId, Arc<Vec<u8>>);

/// The payload for a new chunk: a delta against `base` when clearly smaller, else plain.
fn choose_payload(data: &[u8], base: Option<&Base>, level: i32) -> Vec<u8> {
    if let Some((bid, b)) = base {
        match blob::encode_delta(data, bid, b, level) {
            Ok(delta) if delta.len() * DELTA_TINY <= data.len() => return delta,
            Ok(delta) => {
                let plain = blob::encode(data, level);
                return if delta.len() * 100 <= plain.len() * DELTA_KEEP_PERCENT { delta } else { plain };
            }
            Err(e) => tracing::debug!("delta against {} not made ({e}); storing the chunk whole", bid.short()),
        }
    }
    blob::encode(data, level)
}

/// Compresses and seals one new chunk; returns the sealed blob and the chunk its payload
/// references.
fn encode_chunk(
    keys: &Keys,
    level: i32,
    id: ChunkId,
    data: &[u8],
    base: Option<&Base>,
) -> Result<(Vec<u8>, Option<ChunkId>)> {
    let payload = choose_payload(data, base, level);
    // Decompress what we are about to store: a compressor bug must not become data loss (restic
    // lost data that way). Equal bytes hash to the same id, so a comparison is as good as a re-hash
    // and cheaper. Stored-raw chunks went through no transformation. The AEAD needs no such
    // check: opening authenticates every byte on read.
    if payload[0] != blob::ENC_RAW {
        let what = || format!("new chunk {}", id.short());
        let plain = blob::decode_with(&payload, data.len(), &what, &|r| match base {
            Some((bid, b)) if bid == r => Ok(b.clone()),
            _ => Err(Error::corrupt(what(), format!("references unexpected chunk {}", r.short()))),
        })?;
        if plain != data {
            return Err(Error::corrupt(what(), "did not round-trip through compression; nothing stored"));
        }
    }
    Ok((keys.seal(ObjectKind::Chunk, &id.0, &payload), blob::reference(&payload)))
}

impl<'c> ChunkWriter<'c> {
    /// Chunks keyed and sealed with `keys`, compressed at zstd `level`, packed by `packer`.
    pub fn new(packer: Packer<'c>, keys: Arc<Keys>, level: i32) -> Self {
        ChunkWriter { packer, keys, level, added: Added::default(), bases: None }
    }

    /// Lets [`ChunkWriter::store_with_bases`] store deltas, reading their bases with `reader`.
    pub fn with_bases(mut self, reader: ChunkReader) -> Self {
        self.bases = Some(reader);
        self
    }

    /// Stores the chunks the repository lacks; returns all their ids in order.
    pub fn store(&mut self, chunks: &[&[u8]]) -> Result<Vec<ChunkId>> {
        self.store_with_bases(chunks, &[])
    }

    /// [`ChunkWriter::store`], where `bases[i]` (when present) is a chunk that chunk `i` likely
    /// resembles: a new chunk is stored as a delta against it (or, when that base is itself a
    /// delta, against that one's base: references are one link long) where that pays.
    pub fn store_with_bases(&mut self, chunks: &[&[u8]], bases: &[Option<ChunkId>]) -> Result<Vec<ChunkId>> {
        let keys = &self.keys;
        let ids: Vec<ChunkId> = chunks.par_iter().with_min_len(8).map(|c| keys.chunk_id(c)).collect();
        let new = self.packer.missing(&ids)?;
        let base_of = self.bases_for(&new, &ids, bases)?;
        let level = self.level;
        let sealed: Vec<Result<(Vec<u8>, Option<ChunkId>)>> = new
            .par_iter()
            .with_min_len(4)
            .map(|&i| encode_chunk(keys, level, ids[i], chunks[i], base_of.get(&i)))
            .collect();
        for (&i, s) in new.iter().zip(sealed) {
            let (s, reference) = s?;
            self.packer.add(ids[i], &s, chunks[i].len() as u32, reference)?;
            self.added.chunks += 1;
            self.added.raw_bytes += chunks[i].len() as u64;
            self.added.bytes += s.len() as u64;
            if reference.is_some() {
                self.added.deltas += 1;
                self.added.delta_bytes += s.len() as u64;
            }
        }
        Ok(ids)
    }

    /// The base each new chunk (by position) is encoded against: the suggested chunk when the
    /// index holds it whole, that chunk's own base when it is a delta, nothing when neither can
    /// serve or be read (then the chunk is stored whole; a base is an optimisation only).
    fn bases_for(&self, new: &[usize], ids: &[ChunkId], bases: &[Option<ChunkId>]) -> Result<HashMap<usize, Base>> {
        let mut out = HashMap::new();
        let Some(reader) = &self.bases else { return Ok(out) };
        let wanted: Vec<(usize, ChunkId)> = new
            .iter()
            .filter_map(|&i| bases.get(i).copied().flatten().filter(|b| *b != ids[i]).map(|b| (i, b)))
            .collect();
        if wanted.is_empty() {
            return Ok(out);
        }
        let mut uniq: Vec<ChunkId> = wanted.iter().map(|w| w.1).collect();
        uniq.sort();
        uniq.dedup();
        // Suggested chunk -> the chunk the delta is made against.
        let mut effective: HashMap<ChunkId, ChunkId> = HashMap::new();
        let mut to_read = Vec::new();
        let mut second = Vec::new();
        for (b, l) in uniq.iter().zip(self.packer.locate(&uniq)?) {
            match l {
                Some(l) if l.reference.is_none() => {
                    effective.insert(*b, *b);
                    to_read.push((*b, l));
                }
                Some(l) => second.push((*b, l.reference.expect("matched"))),
                None => {}
            }
        }
        let refs: Vec<ChunkId> = second.iter().map(|s| s.1).collect();
        for ((b, r), l) in second.iter().zip(self.packer.locate(&refs)?) {
            // A reference to a chunk that is not whole (a dictionary-compressed page, say) or
            // not there cannot be a base.
            if let Some(l) = l.filter(|l| l.reference.is_none()) {
                effective.insert(*b, *r);
                to_read.push((*r, l));
            }
        }
        to_read.sort_by_key(|(id, l)| (l.pack, l.offset, *id));
        to_read.dedup_by_key(|(id, _)| *id);
        let mut data: HashMap<ChunkId, Arc<Vec<u8>>> = HashMap::new();
        let mut failed = 0usize;
        for ((id, _), d) in to_read.iter().zip(reader.read_many(&to_read)) {
            match d {
                Ok(d) => {
                    data.insert(*id, Arc::new(d));
                }
                Err(e) => {
                    if failed == 0 {
                        tracing::warn!("base chunk {id} unreadable ({e}); its pages are stored whole");
                    }
                    failed += 1;
                }
            }
        }
        for (i, b) in wanted {
            if let Some((e, d)) = effective.get(&b).and_then(|e| data.get(e).map(|d| (*e, d.clone()))) {
                out.insert(i, (e, d));
            }
        }
        Ok(out)
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
