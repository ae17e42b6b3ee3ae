//! `verify`: proves the repository whole, or names what is damaged and what that breaks.
//!
//! Structure (always): every index file opens and matches its name; every indexed pack exists
//! with its indexed size and a trailer that opens and agrees with the index; every snapshot file
//! opens and matches its name; every chunk a snapshot references (tree and content) is indexed in
//! a pack that passed. With `read_data`, the chosen packs are read whole: their hash must match
//! their name and every chunk must open, decompress and hash to its id. Every reference (a
//! delta's base, a dictionary) must resolve to an indexed chunk stored whole; damage to a
//! referenced chunk is reported with the files of every chunk that needs it. The repository's own
//! index files are the reference, not the local cache, which may be stale or missing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::index::PackRecord;
use crate::format::manifest::{NodeKind, Snapshot};
use crate::id::{ChunkId, IndexId, PackId};
use crate::repo::cache::{read_index_file, Cache};
use crate::repo::packer::IndexBatch;
use crate::repo::Repo;
use crate::store::{Handle, Store, StoreExt};

mod files;
mod packs;
use files::{check_snapshots, damaged_chunks};
use packs::{read_packs, CrossRefs, PackRead};

/// Verify options.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions {
    /// Read this percentage (0 < p <= 100) of packs in full; `None` = structure only.
    pub read_data: Option<f64>,
    /// Seed of the pack sample (printed so a run can be repeated).
    pub seed: u64,
    /// Restore the latest snapshot of each SQLite type and check it.
    pub restore_test: bool,
}

/// One database restore test.
#[derive(Debug, Serialize, Clone)]
pub struct RestoreTest {
    /// Snapshot id.
    #[serde(serialize_with = "crate::id::as_hex::one")]
    pub snapshot: crate::id::SnapshotId,
    /// Its type.
    pub backup_type: String,
    /// Passed?
    pub ok: bool,
    /// What was checked, or what failed.
    pub detail: String,
    /// Bytes of the database restored (what a restore of it writes).
    pub bytes: u64,
    /// Seconds the restore and its check took: with `bytes`, the measured restore speed.
    pub duration_s: f64,
    /// It could not be tested here (`detail` says why): neither passed nor failed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub not_tested: bool,
    /// Where a PostgreSQL dump was restored ("same server", "scratch cluster").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// Seconds loading the dump into a fresh database took (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_s: Option<f64>,
    /// Seconds comparing schema and counts took (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare_s: Option<f64>,
}

/// A damaged pack and what it breaks.
#[derive(Debug, Serialize, Clone)]
pub struct DamagedPack {
    /// The pack.
    pub pack: String,
    /// What is wrong.
    pub problem: String,
    /// Chunks lost or unverifiable (all the pack's indexed chunks when the pack is unreadable).
    pub chunks: Vec<String>,
    /// Snapshot id and path of every file (or tree) these chunks break.
    pub affected: Vec<Affected>,
}

/// A file broken by damage.
#[derive(Debug, Serialize, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Affected {
    /// Snapshot id.
    #[serde(serialize_with = "crate::id::as_hex::one")]
    pub snapshot: crate::id::SnapshotId,
    /// Path in the snapshot, or "(tree)" when the snapshot's tree itself is broken.
    pub path: String,
}

/// The verify report.
#[derive(Debug, Serialize, Default)]
pub struct VerifyReport {
    /// Index files read.
    pub index_files: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Packs read in full.
    pub packs_read: usize,
    /// Bytes read in full.
    pub bytes_read: u64,
    /// Chunks decoded and re-hashed.
    pub chunks_checked: u64,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Sample seed (with read_data below 100%).
    pub seed: Option<u64>,
    /// Damaged packs.
    pub damaged_packs: Vec<DamagedPack>,
    /// Other damage: unreadable index or snapshot files, chunks referenced but not indexed.
    pub problems: Vec<String>,
    /// Harmless findings: packs no index lists (left by an interrupted backup; prune removes them).
    pub notes: Vec<String>,
    /// Database restore tests (with `restore_test`).
    pub restore_tests: Vec<RestoreTest>,
    /// Local cache rows that disagreed with the index files (the cache was then rebuilt).
    pub cache_mismatches: Vec<String>,
}

impl VerifyReport {
    /// Whether damage was found.
    pub fn is_damaged(&self) -> bool {
        !self.damaged_packs.is_empty() || !self.problems.is_empty()
    }
}

/// Runs verify.
pub fn verify(repo: &Repo, opts: &VerifyOptions) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let _lock = crate::store::lock::Lock::acquire(repo.store(), false, "verify")?;

    // 1. Index files, loaded fresh into a scratch index (a local scratch file, not a repository
    // object).
    let scratch_path = repo.store().local_state_dir("tmp")?.join(crate::store::local::scratch_name("verify", "sqlite"));
    let _ = std::fs::remove_file(&scratch_path);
    struct Scratch(std::path::PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
            }
        }
    }
    let _scratch_guard = Scratch(scratch_path.clone());
    // On a full disk or a read-only repository the scratch index lives in memory.
    let mut index = match Cache::open_scratch(&scratch_path, repo.config().id) {
        Err(e) if e.is_unwritable() => {
            tracing::warn!("{e}; verify keeps its scratch index in memory");
            Cache::open_memory(repo.config().id)?
        }
        r => r?,
    };
    let objects = repo.objects().as_ref();
    for id in objects.index_ids()? {
        match read_index_file(objects, repo.keys(), &id) {
            Ok(records) => {
                index.add_index(&id, &records)?;
                report.index_files += 1;
            }
            Err(e) => report.problems.push(format!("index file {id}: {e}")),
        }
    }

    index.index_by_pack()?;

    // 2. Packs: presence, size, trailer.
    let indexed = index.packs()?;
    report.packs = indexed.len();
    let on_disk: BTreeSet<String> = objects.pack_ids()?.iter().map(PackId::to_hex).collect();
    let mut damaged: BTreeMap<PackId, (String, BTreeSet<ChunkId>)> = BTreeMap::new();
    let indexed_names: BTreeSet<String> = indexed.iter().map(|(p, _)| p.to_hex()).collect();
    for n in on_disk.difference(&indexed_names) {
        report.notes.push(format!(
            "pack {n} is not in any index file (unreferenced; prune removes it, repair index adopts it)"
        ));
    }
    // A partial mirror of a remote fetches each pack here, when its size is asked for.
    let trailer_checks: Vec<(PackId, Option<String>)> = indexed
        .par_iter()
        .map(|(pack, size)| {
            let problem = match objects.size(Handle::Pack(*pack)) {
                Ok(None) => Some("pack file is missing".to_string()),
                Err(e) => Some(format!("cannot stat pack: {e}")),
                Ok(Some(n)) if n != *size => Some(format!("pack is {n} bytes, index says {size}")),
                Ok(Some(_)) => None,
            };
            (*pack, problem)
        })
        .collect();
    let mut cross = CrossRefs::default();
    for (pack, problem) in trailer_checks {
        let problem = match problem {
            Some(p) => Some(p),
            None => match repo.pack_trailer(&pack) {
                Err(e) => Some(format!("trailer unreadable: {e}")),
                Ok((entries, _)) => {
                    cross.add(pack, &entries);
                    let want = index.pack_entries(&pack)?;
                    let by_id: HashMap<ChunkId, _> = entries.iter().map(|e| (e.id, *e)).collect();
                    let bad: Vec<_> = want.iter().filter(|w| by_id.get(&w.id) != Some(w)).collect();
                    if bad.is_empty() {
                        None
                    } else {
                        Some(format!("trailer disagrees with the index on {} chunks", bad.len()))
                    }
                }
            },
        };
        if let Some(p) = problem {
            let chunks = index.pack_entries(&pack)?.into_iter().map(|e| e.id).collect();
            damaged.insert(pack, (p, chunks));
        }
    }

    // 3. Full reads. (Reading on a thread beside the SQLite passes of 4 and 6 was tried: their
    // buffers beside a pack took the peak memory past 64 MiB, while the cores are busy decoding.)
    let mut candidates: Vec<(PackId, u64)> = Vec::new();
    if let Some(pct) = opts.read_data {
        candidates = indexed.iter().filter(|(p, _)| !damaged.contains_key(p)).copied().collect();
        if pct < 100.0 {
            report.seed = Some(opts.seed);
            candidates = crate::format::sample::sample(&candidates, pct, opts.seed);
        }
    }
    for read in read_packs(objects, repo.keys(), &repo.chunk_reader(), &candidates, cross) {
        match read {
            PackRead::Unreadable { pack, problem } => {
                let chunks = index.pack_entries(&pack)?.into_iter().map(|e| e.id).collect();
                damaged.insert(pack, (problem, chunks));
            }
            PackRead::Unparsable { pack, bytes, problem } => {
                report.packs_read += 1;
                report.bytes_read += bytes;
                let chunks = index.pack_entries(&pack)?.into_iter().map(|e| e.id).collect();
                damaged.insert(pack, (problem, chunks));
            }
            PackRead::Checked { pack, bytes, entries, failed, hash_ok } => {
                report.packs_read += 1;
                report.bytes_read += bytes;
                // A chunk whose base cannot be read is not damage of this pack: the base's own
                // pack is reported (when read), and every file needing the chunk with it.
                let mut bad: BTreeSet<ChunkId> = BTreeSet::new();
                for (id, err) in failed {
                    match err {
                        Error::Damaged { .. } => report.problems.push(format!("chunk {id} in pack {pack}: {err}")),
                        _ => {
                            bad.insert(id);
                        }
                    }
                }
                report.chunks_checked += entries;
                if bad.is_empty() && hash_ok {
                    // Read back whole: a mark from an earlier failure (since repaired) is lifted.
                    repo.cache().unmark_damaged(&pack)?;
                }
                if !bad.is_empty() {
                    damaged.insert(pack, (format!("{} of {entries} chunks fail their check", bad.len()), bad));
                } else if !hash_ok {
                    // Every chunk and the trailer open: the change is in bytes no chunk covers.
                    report
                        .problems
                        .push(format!("pack {pack}: content does not match its name, though every chunk checks out"));
                }
            }
        }
    }
    let (broken_refs, ref_problems) = check_references(&index)?;
    report.problems.extend(ref_problems);

    // 5. Snapshots and what the damage breaks.
    let (mut affected, found) = check_snapshots(repo, &index, &damaged_chunks(&damaged, &index)?, &broken_refs)?;
    report.snapshots = found.snapshots;
    report.problems.extend(found.problems);
    if opts.restore_test {
        for t in restore_tests(repo)? {
            if !t.ok {
                report
                    .problems
                    .push(format!("restore test of {} snapshot {}: {}", t.backup_type, t.snapshot, t.detail));
            }
            report.restore_tests.push(t);
        }
    }
    // 6. The local cache against the index files, and damage marks for the next backup.
    check_cache(repo, &index, &mut report)?;
    for (pack, (problem, _)) in &damaged {
        repo.cache().mark_damaged(pack, problem)?;
    }
    if !report.cache_mismatches.is_empty() || !damaged.is_empty() {
        // Also points chunks stored twice at their copy outside the damaged packs.
        repo.repair_cache()?;
    }
    for (pack, (problem, chunks)) in damaged {
        report.damaged_packs.push(DamagedPack {
            pack: pack.to_hex(),
            problem,
            chunks: chunks.iter().map(|c| c.to_hex()).collect(),
            affected: affected.remove(&pack).unwrap_or_default().into_iter().collect(),
        });
    }
    Ok(report)
}

/// The chunks whose reference is broken (not indexed, or not stored whole: chains are one link
/// long, pack.md) and the problems to report.
type References = (HashMap<ChunkId, String>, Vec<String>);

fn check_references(index: &Cache) -> Result<References> {
    let mut broken_refs: HashMap<ChunkId, String> = HashMap::new();
    for (c, r, indexed) in index.broken_references()? {
        let why = if indexed {
            format!("references chunk {r}, which references another in turn (chains are one link long)")
        } else {
            format!("references chunk {r}, which is in no index (missing data)")
        };
        broken_refs.insert(c, why);
    }
    let mut problems = Vec::new();
    for (i, (c, why)) in broken_refs.iter().enumerate() {
        if i < 20 {
            problems.push(format!("chunk {c}: {why}"));
        }
    }
    if broken_refs.len() > 20 {
        problems.push(format!("{} more chunks with broken references", broken_refs.len() - 20));
    }
    Ok((broken_refs, problems))
}

/// Compares every row of the local cache with the index files (loaded into `index`): a row is
/// right when it equals the index files' location or the pack's trailer confirms it (a chunk
/// stored twice); every indexed chunk must have a row. Mismatches go to the report.
fn check_cache(repo: &Repo, index: &Cache, report: &mut VerifyReport) -> Result<()> {
    const SHOWN: usize = 20;
    let mut trailers: HashMap<PackId, Option<Vec<crate::format::pack::Entry>>> = HashMap::new();
    let mut bad = Vec::new();
    let mut rows = 0u64;
    let mut cursor = IndexCursor::new(index);
    repo.cache().for_each_row(|id, loc| {
        rows += 1;
        let want = cursor.seek(&id)?;
        if want == Some(loc) {
            return Ok(());
        }
        if want.is_some() {
            let t = trailers.entry(loc.pack).or_insert_with(|| repo.pack_trailer(&loc.pack).ok().map(|(e, _)| e));
            let confirmed = t.as_ref().is_some_and(|es| {
                es.iter().any(|e| {
                    e.id == id && e.offset == loc.offset && e.stored_len == loc.stored_len && e.raw_len == loc.raw_len
                })
            });
            if confirmed {
                return Ok(());
            }
        }
        bad.push(match want {
            None => format!("chunk {id}: in the cache but in no index file"),
            Some(w) => format!(
                "chunk {id}: cache says pack {} offset {} length {}, the index files say pack {} offset {} length {}",
                loc.pack, loc.offset, loc.stored_len, w.pack, w.offset, w.stored_len
            ),
        });
        Ok(())
    })?;
    let (indexed, ..) = index.totals()?;
    if indexed > rows - bad.len() as u64 {
        let mut missing = 0u64;
        for (pack, _) in index.packs()? {
            for e in index.pack_entries(&pack)? {
                if index.lookup(&e.id)?.map(|l| l.pack) == Some(pack) && repo.cache().lookup(&e.id)?.is_none() {
                    missing += 1;
                    if missing as usize <= SHOWN {
                        bad.push(format!("chunk {}: in the index files but not in the cache", e.id));
                    }
                }
            }
        }
        if missing as usize > SHOWN {
            bad.push(format!("{} more chunks in the index files but not in the cache", missing as usize - SHOWN));
        }
    }
    let want_packs: HashMap<PackId, u64> = index.packs()?.into_iter().collect();
    for (p, size) in repo.cache().packs()? {
        if want_packs.get(&p).is_some_and(|s| *s != size) {
            bad.push(format!("pack {p}: cache says {size} bytes, the index files say {}", want_packs[&p]));
        }
    }
    if bad.len() > SHOWN {
        let n = bad.len() - SHOWN;
        bad.truncate(SHOWN);
        bad.push(format!("{n} more cache rows disagree"));
    }
    report.cache_mismatches = bad;
    Ok(())
}

/// The scratch index read in id order alongside the cache's rows (which come in id order too):
/// one sequential pass over each instead of one query per cache row.
struct IndexCursor<'a> {
    index: &'a Cache,
    ahead: std::collections::VecDeque<(ChunkId, crate::repo::cache::Location)>,
    /// The last id fetched (the next page starts after it); `None` before the first page.
    fetched: Option<ChunkId>,
    done: bool,
    /// The last id sought: a cache row out of order (a damaged id) is looked up on its own.
    sought: Option<ChunkId>,
}

impl<'a> IndexCursor<'a> {
    const PAGE: usize = 4096;

    fn new(index: &'a Cache) -> Self {
        IndexCursor { index, ahead: Default::default(), fetched: None, done: false, sought: None }
    }

    /// [`Cache::lookup`] of `id` in the index.
    fn seek(&mut self, id: &ChunkId) -> Result<Option<crate::repo::cache::Location>> {
        if self.sought.is_some_and(|s| *id <= s) {
            return self.index.lookup(id);
        }
        self.sought = Some(*id);
        loop {
            if self.ahead.is_empty() {
                if self.done {
                    return Ok(None);
                }
                let page = self.index.rows_after(self.fetched.as_ref(), Self::PAGE)?;
                self.done = page.len() < Self::PAGE;
                self.fetched = page.last().map(|(c, _)| *c).or(self.fetched);
                self.ahead.extend(page);
                continue;
            }
            let (c, l) = self.ahead.front().expect("not empty");
            match c.cmp(id) {
                std::cmp::Ordering::Less => {
                    self.ahead.pop_front();
                }
                std::cmp::Ordering::Equal => return Ok(Some(*l)),
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
    }
}

/// Rebuilds the repository index from pack trailers (`repair index`): writes fresh index files
/// covering every readable pack, then removes the old index files, then rebuilds the cache.
/// Needs the exclusive lock. Returns (packs indexed, unreadable packs with reasons).
pub fn repair_index(repo: &mut Repo) -> Result<(usize, Vec<(String, String)>)> {
    let _lock = crate::store::lock::Lock::acquire(repo.store(), true, "repair index")?;
    let old: Vec<String> = repo.store().index_ids()?.iter().map(IndexId::to_hex).collect();
    let mut bad = Vec::new();
    let mut index = IndexBatch::new(repo.store().clone(), repo.keys().clone(), None);
    let mut count = 0;
    for pack in repo.store().pack_ids()? {
        let name = pack.to_hex();
        match repo.pack_trailer(&pack) {
            Ok((entries, size)) => {
                count += 1;
                index.push(PackRecord { id: pack, size, entries })?;
            }
            Err(e) => bad.push((name, e.to_string())),
        }
    }
    // A pack whose trailer cannot be read may still hold intact chunks that the old index files
    // locate: carry their records over instead of making those chunks unreachable (verify keeps
    // reporting the damaged trailer).
    let unreadable: BTreeSet<&str> = bad.iter().map(|(n, _)| n.as_str()).collect();
    let mut carried = BTreeSet::new();
    for o in &old {
        let Ok(id) = o.parse::<IndexId>() else { continue };
        let Ok(records) = read_index_file(repo.store(), repo.keys(), &id) else { continue };
        for r in records {
            if unreadable.contains(r.id.to_hex().as_str()) && carried.insert(r.id) {
                index.push(r)?;
            }
        }
    }
    let written: Vec<String> = index.finish()?.iter().map(|id| id.to_hex()).collect();
    for o in old {
        if !written.contains(&o) {
            repo.store().remove(Handle::Index(o.parse().expect("listed names are hex")))?;
        }
    }
    let r = repo.rebuild_cache()?;
    if let Some((id, e)) = r.bad.into_iter().next() {
        return Err(Error::corrupt(format!("index file {id}"), format!("just written but unreadable: {e}")));
    }
    Ok((count, bad))
}

/// Restores the latest snapshot of each type that holds a SQLite copy into a scratch file and
/// checks it: `PRAGMA integrity_check`, then schema hash and per-table row counts against what
/// the backup recorded. Needs a synced cache.
pub fn restore_tests(repo: &Repo) -> Result<Vec<RestoreTest>> {
    let (snaps, _) = repo.snapshots()?;
    let mut latest: BTreeMap<String, (crate::id::SnapshotId, Snapshot)> = BTreeMap::new();
    for (id, s) in snaps {
        if s.source.contains_key("sqlite.page_size") {
            latest.insert(s.backup_type.clone(), (id, s));
        }
    }
    let mut out = Vec::new();
    for (ty, (id, s)) in latest {
        let scratch =
            repo.store().local_state_dir("tmp")?.join(crate::store::local::scratch_name("restore-test", "db"));
        let timer = std::time::Instant::now();
        let r = restore_test_one(repo, &s, &scratch);
        let duration_s = timer.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&scratch).map(|m| m.len()).unwrap_or(0);
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", scratch.display()));
        }
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        out.push(RestoreTest {
            snapshot: id,
            backup_type: ty,
            ok,
            detail,
            bytes,
            duration_s,
            not_tested: false,
            place: None,
            restore_s: None,
            compare_s: None,
        });
    }
    Ok(out)
}

fn restore_test_one(repo: &Repo, s: &Snapshot, scratch: &std::path::Path) -> Result<String> {
    let node = repo
        .tree(s)?
        .find(|n| n.as_ref().map(|n| n.kind == NodeKind::File).unwrap_or(true))
        .ok_or_else(|| Error::corrupt("snapshot", "holds no database file"))??;
    {
        let f = std::fs::File::create(scratch).map_err(|e| Error::io(scratch, e))?;
        let mut w = std::io::BufWriter::new(f);
        crate::ops::restore::write_content(repo, &node, &mut w)?;
        std::io::Write::flush(&mut w).map_err(|e| Error::io(scratch, e))?;
    }
    let e = |x: rusqlite::Error| Error::corrupt(format!("restored {}", node.path_str()), x.to_string());
    let c = rusqlite::Connection::open(scratch).map_err(e)?;
    let check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(e)?;
    if check != "ok" {
        return Err(Error::corrupt(format!("restored {}", node.path_str()), format!("integrity_check: {check}")));
    }
    let now = crate::source::sqlite::schema_and_counts(&c).map_err(e)?;
    let mut rows = 0u64;
    for (k, v) in &now {
        if k.starts_with("sqlite.rows.") {
            rows += v.parse::<u64>().unwrap_or(0);
        }
        if s.source.get(k) != Some(v) {
            return Err(Error::corrupt(
                format!("restored {}", node.path_str()),
                format!("{k} is {v}, the backup recorded {}", s.source.get(k).map(String::as_str).unwrap_or("nothing")),
            ));
        }
    }
    for k in s.source.keys().filter(|k| k.starts_with("sqlite.rows.")) {
        if !now.contains_key(k) {
            return Err(Error::corrupt(
                format!("restored {}", node.path_str()),
                format!("table {} is missing", &k[12..]),
            ));
        }
    }
    Ok(format!("integrity ok, schema and {rows} rows as recorded"))
}
