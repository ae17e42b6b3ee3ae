//! Verify's full reads: each chosen pack read whole, its hash checked against its name and
//! every chunk opened, decoded and re-hashed (`ChunkReader::check_entries`). A chunk stored
//! against a chunk of another pack that is read too is checked with that pack, while its base is
//! decoded anyway ([`CrossRefs`]). Only what failed is kept; the caller turns it into damage and
//! problems.

use std::collections::{HashMap, HashSet};

use crate::error::Error;
use crate::format::crypto::Keys;
use crate::format::pack::{parse_pack, Entry};
use crate::id::{ChunkId, PackId};
use crate::repo::{ChunkReader, Dependent};
use crate::store::{Handle, Store};

/// What reading one pack whole found.
pub(super) enum PackRead {
    /// The pack could not be read.
    Unreadable { pack: PackId, problem: String },
    /// Read, but its trailer does not open.
    Unparsable { pack: PackId, bytes: u64, problem: String },
    /// Read and every chunk decoded: the failures, and whether the pack's hash matches its name.
    Checked { pack: PackId, bytes: u64, entries: u64, failed: Vec<(ChunkId, Error)>, hash_ok: bool },
}

/// Packs by number: the plan names packs by their place in [`CrossRefs`]'s table (4 bytes, not 32).
type PackNo = u32;

/// The dependents of each pack (by number), and the (pack, chunk) pairs checked away from their
/// own pack.
type Plan = (HashMap<PackNo, Vec<(PackNo, Entry)>>, HashSet<(PackNo, ChunkId)>);

/// Chunks checked beside their base's pack, at most: the plan holds about 130 bytes for each
/// (its entry and pack number, the pair checked away), 8.5 MB at this cap. A day's deltas of the
/// 256 MiB reference database are 45,000; those of a 1 GiB one, 180,000, whose plan took 34 MB.
const MAX_FOREIGN: usize = 65536;

/// References across packs, gathered from the trailers verify reads anyway: where each chunk
/// stored whole is, and the chunks stored against a chunk outside their own pack.
#[derive(Default)]
pub(super) struct CrossRefs {
    packs: Vec<PackId>,
    numbers: HashMap<PackId, PackNo>,
    whole: HashMap<ChunkId, PackNo>,
    foreign: Vec<(PackNo, Entry)>,
}

impl CrossRefs {
    /// Adds one pack's trailer entries.
    pub(super) fn add(&mut self, pack: PackId, entries: &[Entry]) {
        let no = *self.numbers.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            (self.packs.len() - 1) as PackNo
        });
        let here: HashSet<ChunkId> = entries.iter().filter(|e| e.reference.is_none()).map(|e| e.id).collect();
        for e in entries {
            match e.reference {
                None => {
                    self.whole.entry(e.id).or_insert(no);
                }
                // Past the cap a dependent is checked in its own pack, its base fetched again.
                Some(r) if !here.contains(&r) && self.foreign.len() < MAX_FOREIGN => self.foreign.push((no, *e)),
                Some(_) => {}
            }
        }
    }

    /// The dependents of each pack in `read` (chunks of other packs stored against its chunks),
    /// and the (pack, chunk) pairs so checked away from their own pack; `self` keeps the table.
    fn plan(&mut self, read: &[(PackId, u64)]) -> Plan {
        let read: HashSet<PackNo> = read.iter().filter_map(|(p, _)| self.numbers.get(p).copied()).collect();
        let mut deps: HashMap<PackNo, Vec<(PackNo, Entry)>> = HashMap::new();
        let mut away = HashSet::new();
        for (no, e) in std::mem::take(&mut self.foreign) {
            let base = e.reference.and_then(|r| self.whole.get(&r));
            if let Some(bp) = base.filter(|bp| read.contains(*bp) && read.contains(&no)) {
                away.insert((no, e.id));
                deps.entry(*bp).or_default().push((no, e));
            }
        }
        self.whole = HashMap::new();
        (deps, away)
    }
}

/// Reads each pack whole and checks its hash and every chunk (one pack in memory at a time).
pub(super) fn read_packs(
    objects: &dyn Store,
    keys: &Keys,
    reader: &ChunkReader,
    packs: &[(PackId, u64)],
    mut cross: CrossRefs,
) -> Vec<PackRead> {
    let (mut dependents, away) = cross.plan(packs);
    let mut out = Vec::new();
    // Failures of chunks checked with another pack, merged into their own pack's result.
    let mut late: Vec<(PackId, ChunkId, Error)> = Vec::new();
    // One buffer for every pack: fresh pages for each (16 MiB by default) cost page faults.
    let mut bytes = Vec::new();
    for (pack, _) in packs {
        let pack = *pack;
        let no = cross.numbers.get(&pack).copied();
        let deps: Vec<Dependent> = no
            .and_then(|n| dependents.remove(&n))
            .unwrap_or_default()
            .into_iter()
            .map(|(p, entry)| Dependent { pack: cross.packs[p as usize], entry })
            .collect();
        if let Err(e) = objects.get_into(Handle::Pack(pack), &mut bytes) {
            out.push(PackRead::Unreadable { pack, problem: format!("cannot read pack: {e}") });
            late.extend(reader.check_dependents(&deps));
            continue;
        }
        let what = || format!("pack {pack}");
        let entries = match parse_pack(&bytes, keys, &what) {
            Ok(e) => e,
            Err(e) => {
                out.push(PackRead::Unparsable { pack, bytes: bytes.len() as u64, problem: e.to_string() });
                late.extend(reader.check_dependents(&deps));
                continue;
            }
        };
        let mut failed = Vec::new();
        for (p, id, e) in
            reader.check_entries(&pack, &bytes, &entries, &|e| no.is_some_and(|n| away.contains(&(n, e.id))), &deps)
        {
            if p == pack {
                failed.push((id, e));
            } else {
                late.push((p, id, e));
            }
        }
        let hash_ok = {
            let mut h = blake3::Hasher::new();
            h.update_rayon(&bytes);
            *h.finalize().as_bytes() == pack.0
        };
        out.push(PackRead::Checked { pack, bytes: bytes.len() as u64, entries: entries.len() as u64, failed, hash_ok });
    }
    // A pack that could not be read is reported whole; its chunks' failures add nothing.
    for (p, id, e) in late {
        for r in out.iter_mut() {
            if let PackRead::Checked { pack, failed, .. } = r {
                if *pack == p {
                    failed.push((id, e));
                    break;
                }
            }
        }
    }
    out
}
