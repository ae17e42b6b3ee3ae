//! Verify's check of a pack read whole. A chunk stored against another (a slice of a group, a
//! delta against a page) is checked while its base is decoded anyway: in its own pack when the
//! base sits there, or, when the base lives in another pack that verify also reads, as a
//! *dependent* of that pack (a day's deltas against the groups of an earlier day). Fetching each
//! such base again for the delta's own pack decoded, on the reference database, more bytes than
//! the database holds; every chunk is still opened, decoded and re-hashed exactly once.

#![allow(clippy::rc_buffer, reason = "the shared decoding contract hands referenced chunks over as Arc<Vec<u8>>")]

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;

use super::{base_unreadable, chained, ChunkReader, CHECK_GROUP_BYTES};
use crate::error::{Error, Result};
use crate::format::pack::Entry;
use crate::id::{ChunkId, PackId};
use crate::repo::cache::Location;
use crate::store::Handle;

/// A chunk of pack `pack` stored against a chunk of another pack (see the module comment).
#[derive(Clone, Copy, Debug)]
pub struct Dependent {
    /// The pack holding the dependent chunk.
    pub pack: PackId,
    /// Its entry in that pack's trailer.
    pub entry: Entry,
}

/// A failed check: the pack holding the chunk, the chunk, why.
pub type Failure = (PackId, ChunkId, Error);

/// Gaps up to this many bytes between dependents of one pack are read along (one read instead
/// of two); runs stop growing at [`MAX_RUN`].
const MAX_GAP: u64 = 16 << 10;
const MAX_RUN: u64 = 4 << 20;

impl ChunkReader {
    /// Checks every entry of a pack read whole (`bytes`), and the `dependents` (chunks of other
    /// packs stored against chunks of this one), returning the failures only. Entries for which
    /// `elsewhere` is true reference a chunk of another pack and are checked with that pack.
    /// Entries are taken in windows of bounded plaintext, decoded in parallel; a base is kept
    /// only while its window is at hand.
    pub fn check_entries(
        &self,
        pack: &PackId,
        bytes: &[u8],
        entries: &[Entry],
        elsewhere: &(dyn Fn(&Entry) -> bool + Sync),
        dependents: &[Dependent],
    ) -> Vec<Failure> {
        let windows = windows(entries);
        // The window holding each chunk stored whole that something here needs.
        let needed: HashSet<ChunkId> = entries
            .iter()
            .filter_map(|e| e.reference)
            .chain(dependents.iter().filter_map(|d| d.entry.reference))
            .collect();
        let mut window_of: HashMap<ChunkId, usize> = HashMap::new();
        for (w, r) in windows.iter().enumerate() {
            for e in &entries[r.clone()] {
                if e.reference.is_none() && needed.contains(&e.id) {
                    window_of.entry(e.id).or_insert(w);
                }
            }
        }
        drop(needed);
        // What each window checks besides its chunks stored whole: entries of this pack whose
        // base it holds, dependents whose base it holds, and entries of its own whose base is in
        // a pack verify does not read (fetched as a restore would).
        let n = windows.len();
        let (mut local, mut foreign, mut fetch) = (vec![Vec::new(); n], vec![Vec::new(); n], vec![Vec::new(); n]);
        for (w, r) in windows.iter().enumerate() {
            for i in r.clone() {
                let Some(base) = entries[i].reference else { continue };
                match window_of.get(&base) {
                    Some(&bw) => local[bw].push(i),
                    None if elsewhere(&entries[i]) => {}
                    None => fetch[w].push(i),
                }
            }
        }
        let mut orphans = Vec::new();
        for (k, d) in dependents.iter().enumerate() {
            match d.entry.reference.and_then(|b| window_of.get(&b)) {
                Some(&bw) => foreign[bw].push(k),
                None => orphans.push(*d),
            }
        }
        let blob = |e: &Entry| &bytes[e.offset as usize..e.offset as usize + e.stored_len as usize];
        let mut failed: Vec<Failure> = Vec::new();
        for (w, r) in windows.into_iter().enumerate() {
            let whole: Vec<(&Entry, Result<Vec<u8>>)> = entries[r]
                .par_iter()
                .with_min_len(8)
                .filter(|e| e.reference.is_none())
                .map(|e| (e, self.decode_entry_with(e, pack, blob(e), &|b| Err(chained(b)))))
                .collect();
            // A base that failed its own check is named as the reason its dependents fail.
            let mut near: HashMap<ChunkId, Option<Arc<Vec<u8>>>> = HashMap::new();
            for (e, r) in whole {
                let kept = window_of.get(&e.id) == Some(&w);
                match r {
                    Ok(d) if kept => {
                        near.insert(e.id, Some(Arc::new(d)));
                    }
                    Ok(_) => {}
                    Err(err) => {
                        if kept {
                            near.insert(e.id, None);
                        }
                        failed.push((*pack, e.id, err));
                    }
                }
            }
            let resolve = |base: &ChunkId| match near.get(base) {
                Some(Some(d)) => Ok(d.clone()),
                Some(None) => Err(base_unreadable(base, "it failed its own check")),
                None => self.referenced(base),
            };
            failed.extend(
                local[w]
                    .par_iter()
                    .with_min_len(16)
                    .filter_map(|&i| {
                        let e = &entries[i];
                        self.check_entry_with(e, pack, blob(e), &resolve).err().map(|err| (*pack, e.id, err))
                    })
                    .collect::<Vec<_>>(),
            );
            let deps: Vec<Dependent> = foreign[w].iter().map(|&k| dependents[k]).collect();
            failed.extend(self.check_read(&deps, &resolve));
            failed.extend(self.check_fetching(pack, bytes, entries, &fetch[w]));
        }
        failed.extend(self.check_dependents(&orphans));
        failed
    }

    /// Checks dependents whose base is not at hand (its pack could not be read): each base is
    /// located and read as a restore would, so a lost base is named as such.
    pub fn check_dependents(&self, deps: &[Dependent]) -> Vec<Failure> {
        let mut failed = Vec::new();
        for part in deps.chunks(1024) {
            failed.extend(self.check_read(part, &|b| self.referenced(b)));
        }
        failed
    }

    /// Reads the sealed blobs of `deps` (runs of nearby ones with one read) and checks them in
    /// parallel, `resolve` supplying their bases.
    fn check_read(
        &self,
        deps: &[Dependent],
        resolve: &(dyn Fn(&ChunkId) -> Result<Arc<Vec<u8>>> + Sync),
    ) -> Vec<Failure> {
        let mut order: Vec<&Dependent> = deps.iter().collect();
        order.sort_by_key(|d| (d.pack, d.entry.offset));
        let mut runs: Vec<Range<usize>> = Vec::new();
        for (i, d) in order.iter().enumerate() {
            let extends = runs.last().is_some_and(|r| {
                let (first, last) = (&order[r.start], &order[r.end - 1]);
                let end = last.entry.offset as u64 + last.entry.stored_len as u64;
                last.pack == d.pack
                    && d.entry.offset as u64 <= end + MAX_GAP
                    && d.entry.offset as u64 + d.entry.stored_len as u64 - first.entry.offset as u64 <= MAX_RUN
            });
            match runs.last_mut() {
                Some(r) if extends => r.end = i + 1,
                _ => runs.push(i..i + 1),
            }
        }
        runs.par_iter()
            .flat_map_iter(|r| {
                let run = &order[r.clone()];
                let start = run[0].entry.offset as u64;
                let end = run.iter().map(|d| d.entry.offset as u64 + d.entry.stored_len as u64).max().unwrap_or(start);
                let buf = self.store.get_range(Handle::Pack(run[0].pack), start, (end - start) as usize);
                let out: Vec<Failure> = match buf {
                    Err(e) => {
                        let msg = e.to_string();
                        run.iter()
                            .map(|d| (d.pack, d.entry.id, Error::corrupt(format!("pack {}", d.pack), msg.clone())))
                            .collect()
                    }
                    Ok(buf) => run
                        .par_iter()
                        .with_min_len(16)
                        .filter_map(|d| {
                            let at = (d.entry.offset as u64 - start) as usize;
                            let sealed = &buf[at..at + d.entry.stored_len as usize];
                            self.check_entry_with(&d.entry, &d.pack, sealed, resolve)
                                .err()
                                .map(|e| (d.pack, d.entry.id, e))
                        })
                        .collect(),
                };
                out
            })
            .collect()
    }

    /// Checks entries `which` of this pack whose base is in a pack verify does not read: the
    /// bases are fetched together, as [`ChunkReader::read_many`] does.
    fn check_fetching(&self, pack: &PackId, bytes: &[u8], entries: &[Entry], which: &[usize]) -> Vec<Failure> {
        if which.is_empty() {
            return Vec::new();
        }
        let wanted: Vec<(ChunkId, Location)> = which
            .iter()
            .map(|&i| {
                let e = &entries[i];
                let l = Location {
                    pack: *pack,
                    offset: e.offset,
                    stored_len: e.stored_len,
                    raw_len: e.raw_len,
                    reference: e.reference,
                };
                (e.id, l)
            })
            .collect();
        let fetched = self.fetch_referenced(&wanted);
        let resolve = |base: &ChunkId| match fetched.get(base) {
            Some(Ok(d)) => Ok(d.clone()),
            Some(Err(e)) => Err(base_unreadable(base, e)),
            None => self.referenced(base),
        };
        which
            .par_iter()
            .with_min_len(16)
            .filter_map(|&i| {
                let e = &entries[i];
                let sealed = &bytes[e.offset as usize..e.offset as usize + e.stored_len as usize];
                self.check_entry_with(e, pack, sealed, &resolve).err().map(|err| (*pack, e.id, err))
            })
            .collect()
    }
}

/// Consecutive runs of entries of bounded plaintext ([`CHECK_GROUP_BYTES`], at most 4096).
fn windows(entries: &[Entry]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let mut j = i;
        let mut raw = 0u64;
        while j < entries.len() && (j == i || (raw < CHECK_GROUP_BYTES && j - i < 4096)) {
            raw += entries[j].raw_len as u64;
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}
