//! Storing plaintext chunks: hash each, drop those the repository already has *before*
//! compressing them, compress and seal the new ones in parallel (checking each round-trips to its
//! id), and hand them to the [`Packer`]. A new chunk given a base (the parent snapshot's page at
//! the same position of the same database file) is stored as a zstd delta against it when that
//! is clearly smaller (format-spec/pack.md, "References").

#![allow(clippy::rc_buffer, reason = "the shared decoding contract hands referenced chunks over as Arc<Vec<u8>>")]

use std::collections::HashMap;
use std::ops::Range;
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
    /// Group chunks stored (their members are counted in `chunks` and stored as slices).
    pub groups: u64,
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

/// A base: the chunk a delta references (stored whole), its plaintext, and the part of it that
/// is the base page (all of it, or one slice of a group).
type Base = (ChunkId, Arc<Vec<u8>>, Range<usize>);

/// Chunks up to this size are stored together in groups (encoding 4, format-spec/pack.md,
/// "Groups"): a 4 KiB page compressed alone loses about an eighth of the ratio a run of pages
/// gets, and every frame pays zstd's setup.
pub const GROUP_MEMBER_MAX: usize = 16 << 10;

/// A group's plaintext is at most this long: 64 pages of 4 KiB. Measured on the 256 MiB
/// reference database (zstd 3, whole repository): 167.4 MB in groups of 64 KiB, 165.4 MB of
/// 128 KiB, 161.3 MB of 256 KiB (zstd's parameters for inputs up to 256 KiB suit pages best; the
/// CLI gives 143.6 MB of frames at 512 KiB against 142.9 at 256), at the same wall time; reading
/// one page costs decoding its whole group, which restore and verify do once per group anyway.
pub const GROUP_MAX: usize = 256 << 10;

/// A group is kept only when its frame is at most this share (percent) of its plaintext; else
/// its members are stored one by one (a slice costs about 100 bytes more than a whole chunk).
const GROUP_KEEP_PERCENT: usize = 90;

/// A kept delta against `base`, or `None` when it does not pay (the chunk is then stored plain).
fn delta_payload(data: &[u8], base: &Base, level: i32) -> Option<Vec<u8>> {
    let (bid, whole, part) = base;
    let made = if part.start == 0 && part.end == whole.len() {
        blob::encode_delta(data, bid, whole, level)
    } else {
        blob::encode_delta_part(data, bid, whole, part.clone(), level)
    };
    match made {
        Ok(delta) if delta.len() * DELTA_TINY <= data.len() => Some(delta),
        Ok(delta) => {
            let plain = blob::encode(data, level);
            (delta.len() * 100 <= plain.len() * DELTA_KEEP_PERCENT).then_some(delta)
        }
        Err(e) => {
            tracing::debug!("delta against {} not made ({e}); storing the chunk whole", bid.short());
            None
        }
    }
}

/// Checks that `payload` decodes back to `data` and seals it; returns the sealed blob and the
/// chunk its payload references. A compressor bug must not become data loss (restic lost data
/// that way); equal bytes hash to the same id, so a comparison is as good as a re-hash and
/// cheaper. Raw payloads went through no transformation; the AEAD needs no such check (opening
/// authenticates every byte on read).
fn seal_checked(
    keys: &Keys,
    id: ChunkId,
    data: &[u8],
    payload: Vec<u8>,
    base: Option<&Base>,
) -> Result<(Vec<u8>, Option<ChunkId>)> {
    if payload[0] != blob::ENC_RAW {
        let what = || format!("new chunk {}", id.short());
        let plain = blob::decode_with(&payload, data.len(), &what, &|r| match base {
            Some((bid, b, _)) if bid == r => Ok(b.clone()),
            _ => Err(Error::corrupt(what(), format!("references unexpected chunk {}", r.short()))),
        })?;
        if plain != data {
            return Err(Error::corrupt(what(), "did not round-trip through compression; nothing stored"));
        }
    }
    Ok((keys.seal(ObjectKind::Chunk, &id.0, &payload), blob::reference(&payload)))
}

/// What one new chunk, or one group of them, is stored as.
enum Stored {
    /// One blob: (position, sealed, reference).
    One(usize, Vec<u8>, Option<ChunkId>),
    /// A group chunk (id, sealed, plaintext length) and its members' slices (position, sealed).
    Group(ChunkId, Vec<u8>, u32, Vec<(usize, Vec<u8>)>),
}

/// Cuts the chunks at `todo` (positions, in order) into groups: runs of chunks of at most
/// [`GROUP_MEMBER_MAX`] whose plaintext adds up to at most [`GROUP_MAX`]. A run of one is a
/// group of one (stored alone).
fn plan_groups(todo: &[usize], chunks: &[&[u8]]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut size = 0usize;
    for &i in todo {
        let len = chunks[i].len();
        let joins = len <= GROUP_MEMBER_MAX
            && out.last().is_some_and(|g| chunks[*g.last().expect("non-empty")].len() <= GROUP_MEMBER_MAX)
            && size + len <= GROUP_MAX;
        if joins {
            out.last_mut().expect("checked").push(i);
            size += len;
        } else {
            out.push(vec![i]);
            size = len;
        }
    }
    out
}

/// Stores `members` (positions) as one group when its frame pays, else each alone.
fn store_group(keys: &Keys, level: i32, members: &[usize], ids: &[ChunkId], chunks: &[&[u8]]) -> Result<Vec<Stored>> {
    let alone = |i: usize| -> Result<Stored> {
        let (s, r) = seal_checked(keys, ids[i], chunks[i], blob::encode(chunks[i], level), None)?;
        Ok(Stored::One(i, s, r))
    };
    if members.len() < 2 {
        return members.iter().map(|&i| alone(i)).collect();
    }
    // Copied slice by slice: collecting a byte iterator was 5 % of a first backup's CPU.
    let mut plain = Vec::with_capacity(members.iter().map(|&i| chunks[i].len()).sum());
    for &i in members {
        plain.extend_from_slice(chunks[i]);
    }
    let payload = blob::encode(&plain, level);
    if payload[0] == blob::ENC_RAW || payload.len() * 100 > plain.len() * GROUP_KEEP_PERCENT {
        return members.iter().map(|&i| alone(i)).collect();
    }
    let gid = keys.chunk_id(&plain);
    let (sealed, _) = seal_checked(keys, gid, &plain, payload, None)?;
    let mut start = 0u32;
    let mut slices = Vec::with_capacity(members.len());
    for &i in members {
        slices.push((i, keys.seal(ObjectKind::Chunk, &ids[i].0, &blob::encode_slice(&gid, start))));
        start += chunks[i].len() as u32;
    }
    Ok(vec![Stored::Group(gid, sealed, plain.len() as u32, slices)])
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
        // Deltas first; what no delta pays for is stored plain, in groups where that pays.
        let deltas: Vec<Option<Vec<u8>>> = new
            .par_iter()
            .with_min_len(4)
            .map(|i| base_of.get(i).and_then(|b| delta_payload(chunks[*i], b, level)))
            .collect();
        let mut stored: Vec<Result<Stored>> = Vec::new();
        let mut plain = Vec::new();
        for (&i, d) in new.iter().zip(deltas) {
            match d {
                Some(d) => stored
                    .push(seal_checked(keys, ids[i], chunks[i], d, base_of.get(&i)).map(|(s, r)| Stored::One(i, s, r))),
                None => plain.push(i),
            }
        }
        let groups = plan_groups(&plain, chunks);
        let grouped: Vec<Result<Vec<Stored>>> =
            groups.par_iter().map(|g| store_group(keys, level, g, &ids, chunks)).collect();
        for g in grouped {
            match g {
                Ok(g) => stored.extend(g.into_iter().map(Ok)),
                Err(e) => stored.push(Err(e)),
            }
        }
        for s in stored {
            match s? {
                Stored::One(i, s, reference) => {
                    self.packer.add(ids[i], &s, chunks[i].len() as u32, reference)?;
                    self.added.chunks += 1;
                    self.added.raw_bytes += chunks[i].len() as u64;
                    self.added.bytes += s.len() as u64;
                    if reference.is_some() {
                        self.added.deltas += 1;
                        self.added.delta_bytes += s.len() as u64;
                    }
                }
                Stored::Group(gid, sealed, raw_len, slices) => {
                    // The same run of chunks stored before (an identical group) is used again.
                    if !self.packer.missing(&[gid])?.is_empty() {
                        self.packer.add(gid, &sealed, raw_len, None)?;
                        self.added.bytes += sealed.len() as u64;
                        self.added.groups += 1;
                    }
                    for (i, s) in slices {
                        self.packer.add(ids[i], &s, chunks[i].len() as u32, Some(gid))?;
                        self.added.chunks += 1;
                        self.added.raw_bytes += chunks[i].len() as u64;
                        self.added.bytes += s.len() as u64;
                    }
                }
            }
        }
        Ok(ids)
    }

    /// The base each new chunk (by position) is encoded against: the suggested chunk when the
    /// index holds it whole; when it references another chunk, what its payload says: a delta's
    /// own base, a slice's part of its group (references are one link long); nothing when
    /// neither can serve or be read (then the chunk is stored plain: a base is an optimisation).
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
        // Suggested chunk -> the whole chunk the delta is made against, and the part of it.
        let mut effective: HashMap<ChunkId, (ChunkId, Option<Range<usize>>)> = HashMap::new();
        let mut to_read = Vec::new();
        let mut second = Vec::new();
        for (b, l) in uniq.iter().zip(self.packer.locate(&uniq)?) {
            match l {
                Some(l) if l.reference.is_none() => {
                    effective.insert(*b, (*b, None));
                    to_read.push((*b, l));
                }
                Some(l) => second.push((*b, l)),
                None => {}
            }
        }
        let payloads = reader.payloads(&second);
        let mut refs = Vec::new();
        for ((b, l), p) in second.iter().zip(payloads) {
            let Ok(p) = p else { continue };
            let Some(r) = blob::reference(&p) else { continue };
            let part = match p[0] {
                blob::ENC_DELTA => None,
                blob::ENC_SLICE | blob::ENC_DELTA_PART => match blob::referenced_part(&p, l.raw_len as usize) {
                    Some(r) => Some(r),
                    None => continue,
                },
                // A dictionary-compressed page is no base.
                _ => continue,
            };
            effective.insert(*b, (r, part));
            refs.push(r);
        }
        refs.sort();
        refs.dedup();
        for (r, l) in refs.iter().zip(self.packer.locate(&refs)?) {
            // A reference to a chunk that is not whole or not there cannot be a base.
            if let Some(l) = l.filter(|l| l.reference.is_none()) {
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
            let Some((e, part)) = effective.get(&b) else { continue };
            let Some(d) = data.get(e) else { continue };
            let part = part.clone().unwrap_or(0..d.len());
            if part.end <= d.len() {
                out.insert(i, (*e, d.clone(), part));
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
