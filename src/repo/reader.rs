//! Reading chunks out of packs: open the seal, decode, re-hash against the id. This is the one
//! place that resolves references (a delta's base, a dictionary; `blob::reference`): the
//! referenced chunk is located through the index, read and verified like any chunk, and kept in
//! a small cache of recent ones. A referenced chunk must itself be stored whole (encoding 0 or
//! 1): a reader follows at most one link, so hostile input cannot make it loop or recurse.

#![allow(clippy::rc_buffer, reason = "the shared decoding contract hands referenced chunks over as Arc<Vec<u8>>")]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::blob;
use crate::format::crypto::{Keys, ObjectKind};
use crate::format::pack::Entry;
use crate::id::{ChunkId, PackId};
use crate::repo::cache::Location;
use crate::repo::recheck::Recheck;
use crate::store::{Handle, Store};

mod check;
pub use check::Dependent;

/// Plaintext bytes of referenced chunks kept for reuse (a run of deltas often shares bases only
/// by position, so this stays small; bases of one `read_many` call are fetched together anyway).
const RECENT_BYTES: usize = 4 << 20;

/// Plaintext bytes of one window of [`ChunkReader::check_entries`], which bounds the referenced
/// chunks fetched for it (a delta's base is about as large as the delta's plaintext).
const CHECK_GROUP_BYTES: u64 = 2 << 20;

/// Referenced chunks read lately, oldest first, bounded by [`RECENT_BYTES`].
#[derive(Default)]
struct Recent {
    order: VecDeque<ChunkId>,
    data: HashMap<ChunkId, Arc<Vec<u8>>>,
    bytes: usize,
}

impl Recent {
    fn get(&self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        self.data.get(id).cloned()
    }

    fn put(&mut self, id: ChunkId, d: Arc<Vec<u8>>) {
        if d.len() > RECENT_BYTES / 4 || self.data.contains_key(&id) {
            return;
        }
        self.bytes += d.len();
        self.data.insert(id, d);
        self.order.push_back(id);
        while self.bytes > RECENT_BYTES {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(d) = self.data.remove(&old) {
                self.bytes -= d.len();
            }
        }
    }
}

/// Reads chunks out of packs, checking each against its id (cheap to clone, usable from worker
/// threads).
#[derive(Clone)]
pub struct ChunkReader {
    store: Arc<dyn Store>,
    keys: Arc<Keys>,
    recheck: Option<Arc<Recheck>>,
    recent: Arc<Mutex<Recent>>,
}

/// Supplies the plaintext of a referenced chunk.
type Resolve<'a> = dyn Fn(&ChunkId) -> Result<Arc<Vec<u8>>> + 'a;

/// Resolves the references of a batch of chunks: the bases fetched up front, with their errors.
type Fetched = HashMap<ChunkId, std::result::Result<Arc<Vec<u8>>, String>>;

impl ChunkReader {
    /// A reader over `store`; `recheck` locates referenced chunks and rechecks failed reads.
    pub(crate) fn new(store: Arc<dyn Store>, keys: Arc<Keys>, recheck: Arc<Recheck>) -> Self {
        ChunkReader { store, keys, recheck: Some(recheck), recent: Arc::default() }
    }

    /// Reads, opens, decodes and verifies one chunk; a failure is rechecked against the pack
    /// trailer and the index files before it is reported (recheck.rs).
    pub fn read(&self, id: &ChunkId, loc: &Location) -> Result<Vec<u8>> {
        self.read_resolving(id, loc, &|r| self.referenced(r))
    }

    fn read_resolving(&self, id: &ChunkId, loc: &Location, resolve: &Resolve) -> Result<Vec<u8>> {
        let read_at = |l: &Location| -> Result<Vec<u8>> {
            let sealed = self.store.get_range(Handle::Pack(l.pack), l.offset as u64, l.stored_len as usize)?;
            self.decode_with(id, &l.pack, &sealed, l.raw_len, resolve)
        };
        match (read_at(loc), &self.recheck) {
            (Err(e), Some(r)) => r.recover(id, loc, e, &read_at),
            (r, _) => r,
        }
    }

    /// Reads many chunks: runs stored back to back in one pack are fetched with one read, then
    /// decoded in parallel. The chunks they reference (as the index records it) are fetched
    /// first, the same way. Results are in input order.
    pub fn read_many(&self, chunks: &[(ChunkId, Location)]) -> Vec<Result<Vec<u8>>> {
        let fetched = self.fetch_referenced(chunks);
        self.read_runs(chunks, &|base| match fetched.get(base) {
            Some(Ok(d)) => Ok(d.clone()),
            Some(Err(e)) => Err(base_unreadable(base, e)),
            None => self.referenced(base),
        })
    }

    /// The plaintext of every chunk `chunks` reference, read with one `read_many` of their own
    /// (which refuses any further reference).
    fn fetch_referenced(&self, chunks: &[(ChunkId, Location)]) -> Fetched {
        let mut out = Fetched::new();
        let mut want: Vec<ChunkId> = Vec::new();
        {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            for (_, l) in chunks {
                if let Some(r) = l.reference {
                    // Repeats in `want` are dropped by the sort below (a linear search here
                    // made a window of deltas quadratic).
                    if out.contains_key(&r) {
                        continue;
                    }
                    match recent.get(&r) {
                        Some(d) => {
                            out.insert(r, Ok(d));
                        }
                        None => want.push(r),
                    }
                }
            }
        }
        if want.is_empty() {
            return out;
        }
        want.sort();
        want.dedup();
        // On failure, left to the one-by-one path, which reports each.
        let Ok(located) = self.locate(&want) else { return out };
        let mut found = Vec::new();
        for (id, l) in want.iter().zip(located) {
            match l {
                Some(l) => found.push((*id, l)),
                None => {
                    out.insert(*id, Err("in no index (missing data)".into()));
                }
            }
        }
        // Bases of a batch of pages usually sit in the pack order of the parent's pages.
        found.sort_by_key(|(_, l)| (l.pack, l.offset));
        let data = self.read_runs(&found, &|r| Err(chained(r)));
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for ((id, _), d) in found.iter().zip(data) {
            let d = d.map(Arc::new).map_err(|e| e.to_string());
            if let Ok(d) = &d {
                recent.put(*id, d.clone());
            }
            out.insert(*id, d);
        }
        out
    }

    fn locate(&self, ids: &[ChunkId]) -> Result<Vec<Option<Location>>> {
        match &self.recheck {
            Some(r) => r.locate_many(ids),
            None => Err(Error::Invalid("this reader has no index to resolve references with".into())),
        }
    }

    /// One referenced chunk's plaintext: from the recent cache, or located and read (stored
    /// whole: a referenced chunk that references another is refused).
    fn referenced(&self, id: &ChunkId) -> Result<Arc<Vec<u8>>> {
        if let Some(d) = self.recent.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(d);
        }
        let loc = self.locate(std::slice::from_ref(id)).map_err(|e| base_unreadable(id, &e.to_string()))?;
        let loc = loc.into_iter().next().flatten().ok_or_else(|| base_unreadable(id, "in no index (missing data)"))?;
        let d = self.read_resolving(id, &loc, &|r| Err(chained(r))).map_err(|e| base_unreadable(id, &e.to_string()))?;
        let d = Arc::new(d);
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).put(*id, d.clone());
        Ok(d)
    }

    /// The batched read: one range read per run of adjacent chunks, decoded in parallel with
    /// `resolve` supplying referenced chunks.
    fn read_runs(
        &self,
        chunks: &[(ChunkId, Location)],
        resolve: &(dyn Fn(&ChunkId) -> Result<Arc<Vec<u8>>> + Sync),
    ) -> Vec<Result<Vec<u8>>> {
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        for (i, (_, l)) in chunks.iter().enumerate() {
            let extends = runs.last().is_some_and(|r| {
                let p = &chunks[r.end - 1].1;
                p.pack == l.pack && p.offset as u64 + p.stored_len as u64 == l.offset as u64 && r.len() < 4096
            });
            if extends {
                runs.last_mut().expect("non-empty").end = i + 1;
            } else {
                runs.push(i..i + 1);
            }
        }
        let per_run: Vec<Vec<Result<Vec<u8>>>> = runs
            .par_iter()
            .map(|r| {
                let first = &chunks[r.start].1;
                let last = &chunks[r.end - 1].1;
                let len = (last.offset as u64 + last.stored_len as u64 - first.offset as u64) as usize;
                let buf = self.store.get_range(Handle::Pack(first.pack), first.offset as u64, len);
                match buf {
                    Err(e) => {
                        let msg = e.to_string();
                        (r.start..r.end)
                            .map(|_| Err(Error::corrupt(format!("pack {}", first.pack), msg.clone())))
                            .collect()
                    }
                    Ok(buf) => chunks[r.clone()]
                        .par_iter()
                        .with_min_len(16)
                        .map(|(id, l)| {
                            let at = (l.offset - first.offset) as usize;
                            self.decode_with(id, &l.pack, &buf[at..at + l.stored_len as usize], l.raw_len, resolve)
                        })
                        .collect(),
                }
            })
            .collect();
        // A failed run is retried chunk by chunk: one bad location must not fail its neighbours,
        // and each failure gets its recheck.
        per_run
            .into_iter()
            .flatten()
            .zip(chunks)
            .map(|(r, (id, l))| match r {
                Err(_) if self.recheck.is_some() => self.read_resolving(id, l, resolve),
                r => r,
            })
            .collect()
    }

    /// The opened payloads (encoding byte and body, authenticated, not decoded) of `chunks`: how
    /// each is stored, which a writer looks at before it uses one as a base. Not rechecked: a
    /// failure only costs the base.
    pub fn payloads(&self, chunks: &[(ChunkId, Location)]) -> Vec<Result<Vec<u8>>> {
        chunks
            .par_iter()
            .with_min_len(16)
            .map(|(id, l)| {
                let sealed = self.store.get_range(Handle::Pack(l.pack), l.offset as u64, l.stored_len as usize)?;
                self.open(id, &l.pack, &sealed)
            })
            .collect()
    }

    /// Opens a sealed chunk: its payload (encoding byte and body), authenticated.
    pub fn open(&self, id: &ChunkId, pack: &PackId, sealed: &[u8]) -> Result<Vec<u8>> {
        let what = || format!("chunk {} in pack {}", id.short(), pack.short());
        self.keys.open(ObjectKind::Chunk, &id.0, sealed, &what)
    }

    /// Opens, decodes and verifies a sealed chunk (reading the chunk it references, if any).
    pub fn decode(&self, id: &ChunkId, pack: &PackId, sealed: &[u8], raw_len: u32) -> Result<Vec<u8>> {
        self.decode_with(id, pack, sealed, raw_len, &|r| self.referenced(r))
    }

    /// [`ChunkReader::decode`] of a pack entry, which also checks that the reference the entry
    /// records is the one the payload names (prune, repair and verify trust the recorded one).
    pub fn decode_entry(&self, e: &Entry, pack: &PackId, sealed: &[u8]) -> Result<Vec<u8>> {
        self.decode_entry_with(e, pack, sealed, &|r| self.referenced(r))
    }

    fn decode_entry_with(&self, e: &Entry, pack: &PackId, sealed: &[u8], resolve: &Resolve) -> Result<Vec<u8>> {
        let payload = self.open_entry(e, pack, sealed)?;
        self.finish(&e.id, pack, &payload, e.raw_len, resolve)
    }

    /// [`ChunkReader::decode_entry_with`] where only the verdict counts (verify): a slice is
    /// hashed where it lies in its group's plaintext instead of being copied out first.
    fn check_entry_with(&self, e: &Entry, pack: &PackId, sealed: &[u8], resolve: &Resolve) -> Result<()> {
        let payload = self.open_entry(e, pack, sealed)?;
        if payload.first() != Some(&blob::ENC_SLICE) {
            return self.finish(&e.id, pack, &payload, e.raw_len, resolve).map(drop);
        }
        let what = || format!("chunk {} in pack {}", e.id.short(), pack.short());
        blob::slice(
            &payload,
            e.raw_len as usize,
            &what,
            &|r| resolve(r).map_err(|err| damage_of(err, &what)),
            &mut |part| match self.keys.chunk_id(part) == e.id {
                true => Ok(()),
                false => Err(Error::corrupt(what(), "content does not match the chunk id")),
            },
        )
    }

    /// Opens a pack entry's blob and checks that the reference its payload names is the one
    /// the entry records (prune, repair and verify trust the recorded one).
    fn open_entry(&self, e: &Entry, pack: &PackId, sealed: &[u8]) -> Result<Vec<u8>> {
        let payload = self.open(&e.id, pack, sealed)?;
        let named = blob::reference(&payload);
        if named != e.reference {
            let show = |r: Option<ChunkId>| r.map_or("none".to_string(), |r| r.to_hex());
            return Err(Error::corrupt(
                format!("chunk {} in pack {}", e.id.short(), pack.short()),
                format!("its payload references {}, the pack's entry records {}", show(named), show(e.reference)),
            ));
        }
        Ok(payload)
    }

    fn decode_with(
        &self,
        id: &ChunkId,
        pack: &PackId,
        sealed: &[u8],
        raw_len: u32,
        resolve: &Resolve,
    ) -> Result<Vec<u8>> {
        let payload = self.open(id, pack, sealed)?;
        self.finish(id, pack, &payload, raw_len, resolve)
    }

    fn finish(&self, id: &ChunkId, pack: &PackId, payload: &[u8], raw_len: u32, resolve: &Resolve) -> Result<Vec<u8>> {
        let what = || format!("chunk {} in pack {}", id.short(), pack.short());
        let data =
            blob::decode_with(payload, raw_len as usize, &what, &|r| resolve(r).map_err(|e| damage_of(e, &what)))?;
        if self.keys.chunk_id(&data) != *id {
            return Err(Error::corrupt(what(), "content does not match the chunk id"));
        }
        Ok(data)
    }
}

/// A referenced chunk's failure as the failure of the chunk `what` that needs it.
fn damage_of(e: Error, what: &dyn Fn() -> String) -> Error {
    match e {
        Error::Damaged { detail, .. } => Error::Damaged { what: what(), detail },
        e => e,
    }
}

/// A referenced chunk that cannot be read. Reported as damage of the chunk that needs it, but
/// not as a corrupt read of that chunk: its own pack is intact, so the recheck (which would
/// mark that pack damaged) leaves it alone; the base's read was rechecked on its own.
fn base_unreadable(base: &ChunkId, why: &str) -> Error {
    Error::Damaged {
        what: String::new(),
        detail: format!("the chunk it is stored against (its base {base}) cannot be read: {why}"),
    }
}

/// A referenced chunk that itself references another: refused (chains are one link long). Not
/// a corrupt read: the chunk is intact, it just may not serve as a base (format-spec/pack.md).
fn chained(next: &ChunkId) -> Error {
    Error::Damaged {
        what: String::new(),
        detail: format!("it references chunk {} in turn: a chain longer than one link (refused)", next.short()),
    }
}
