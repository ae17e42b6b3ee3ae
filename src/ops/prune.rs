//! `forget` (remove snapshot files per retention) and `prune` (remove data no snapshot
//! references, repack sparse packs).
//!
//! Prune holds the exclusive lock for its whole run, so no backup can add references while it
//! decides what is unreferenced (a concurrent backup waits and retries). Its write order makes a
//! SIGKILL at any point harmless: (0) deletions that write nothing (leftovers in `tmp/`, packs no
//! index lists, index files listing only dead packs and then those packs), so a full disk gets
//! space back; (1) new packs with the live chunks of sparse packs, fsynced;
//! (2) new index files covering every pack that stays, fsynced; (3) old index files removed;
//! (4) obsolete packs removed. Until (2) the old index is complete; after it the new one is.
//! Any listing or read error aborts before step (1): a failed listing never looks like "nothing
//! there" (format-spec/ordering.md).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::index::PackRecord;
use crate::format::manifest::{NodeKind, Snapshot};
use crate::format::pack::parse_pack;
use crate::id::{ChunkId, IndexId, PackId, SnapshotId};
use crate::ops::retention::{self, Decision, Retention};
use crate::ops::snapshot_set::SnapshotSet;
use crate::repo::cache::read_index_file;
use crate::repo::packer::{IndexBatch, Packer};
use crate::repo::Repo;
use crate::store::lock::Lock;
use crate::store::{Handle, Store, StoreExt};

/// Prune options.
#[derive(Clone, Copy, Debug)]
pub struct PruneOptions {
    /// Plan only.
    pub dry_run: bool,
    /// Repack packs whose live share (by stored bytes) is below this fraction.
    pub repack_below: f64,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions { dry_run: false, repack_below: 0.5 }
    }
}

/// What prune did (or would do).
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    /// Snapshots read.
    pub snapshots: usize,
    /// Chunks referenced.
    pub live_chunks: usize,
    /// Packs before.
    pub packs_before: usize,
    /// Packs deleted outright (nothing live).
    pub packs_deleted: usize,
    /// Packs repacked.
    pub packs_repacked: usize,
    /// Packs written by repacking.
    pub packs_written: usize,
    /// Packs on disk that no index lists (left by interrupted backups), deleted.
    pub unindexed_deleted: usize,
    /// Leftovers of interrupted runs removed from `tmp/`.
    pub tmp_removed: usize,
    /// Their bytes.
    pub tmp_bytes: u64,
    /// Bytes of pack files removed.
    pub bytes_deleted: u64,
    /// Bytes written into new packs.
    pub bytes_written: u64,
    /// Net bytes freed.
    pub bytes_freed: i64,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Seconds taken.
    pub duration_s: f64,
}

/// Applies each type's retention and removes the snapshot files it does not keep.
/// `policy_for` gives the policy of a type (None = keep everything); `now` dates the age of
/// manual and verified pre-change snapshots.
pub fn forget(
    repo: &Repo,
    types: Option<&[String]>,
    policy_for: &dyn Fn(&str) -> Option<Retention>,
    now: DateTime<FixedOffset>,
    dry_run: bool,
) -> Result<Vec<Decision>> {
    let mut set = SnapshotSet::new();
    forget_in(repo, &mut set, types, policy_for, now, dry_run, &[])
}

/// [`forget`] over a snapshot set the caller already holds: it is brought up to date under the
/// lock (a listing; only files it has not seen are read) and the removed snapshots leave it.
/// `protect`: snapshots the current run took, never removed (whatever their recorded time).
pub fn forget_in(
    repo: &Repo,
    set: &mut SnapshotSet,
    types: Option<&[String]>,
    policy_for: &dyn Fn(&str) -> Option<Retention>,
    now: DateTime<FixedOffset>,
    dry_run: bool,
    protect: &[SnapshotId],
) -> Result<Vec<Decision>> {
    let _lock = Lock::acquire(repo.store(), true, "forget")?;
    set.refresh(repo)?;
    if !set.unreadable().is_empty() {
        // An unreadable file may be the newest snapshot: retention cannot know what it keeps.
        return Err(repo.damaged_snapshots("forget stops", set.unreadable()));
    }
    let mut by_type: std::collections::BTreeMap<&str, Vec<(SnapshotId, Snapshot)>> = Default::default();
    for (id, s) in set.all() {
        // Archived WAL follows its base backups (`wal::expire` below), not a retention policy.
        if crate::ops::wal::base_of(&s.backup_type).is_some() {
            continue;
        }
        if types.is_none_or(|t| t.contains(&s.backup_type)) {
            by_type.entry(s.backup_type.as_str()).or_default().push((*id, s.clone()));
        }
    }
    let mut out = Vec::new();
    for (t, snaps) in by_type {
        let policy = policy_for(t);
        let decisions = retention::apply_protecting(&snaps, policy.as_ref(), now, protect);
        if !dry_run {
            for d in decisions.iter().filter(|d| !d.keep) {
                repo.store().remove(Handle::Snapshot(d.id))?;
            }
        }
        out.extend(decisions);
    }
    let wal = crate::ops::wal::expire(repo, set.all(), &out, dry_run)?;
    out.extend(wal);
    if !dry_run {
        let gone: Vec<SnapshotId> = out.iter().filter(|d| !d.keep).map(|d| d.id).collect();
        // The snapshot files are gone: the set says so before anything else can fail.
        set.remove(&gone);
        if !gone.is_empty() {
            repo.remove_verifications_of(&gone)?;
        }
    }
    Ok(out)
}

/// Every chunk a snapshot references (tree and content). `set` is brought up to date first (the
/// caller holds the exclusive lock); any unreadable snapshot stops prune.
fn live_chunks(repo: &Repo, set: &mut SnapshotSet) -> Result<(HashSet<ChunkId>, usize)> {
    set.refresh(repo)?;
    if !set.unreadable().is_empty() {
        return Err(repo.damaged_snapshots("prune stops", set.unreadable()));
    }
    let mut live = HashSet::new();
    for (id, s) in set.all() {
        live.extend(s.tree.iter().copied());
        for n in repo.tree(s)? {
            let n =
                n.map_err(|e| Error::corrupt(format!("snapshot {id}"), format!("tree unreadable, prune stops: {e}")))?;
            if n.kind == NodeKind::File {
                live.extend(n.chunks.iter().copied());
            }
        }
    }
    Ok((live, set.all().len()))
}

/// Adds to `live` every chunk a live chunk references (a delta's base, a dictionary;
/// `blob::reference`, recorded in the index): it must stay, wherever it is stored, for as long as
/// the chunk that needs it does. References are one link long, but this runs to a fixed point
/// so that no index content, however odd, makes prune drop a chunk something live needs.
fn keep_referenced(live: &mut HashSet<ChunkId>, refs: &[(ChunkId, ChunkId)]) {
    loop {
        let before = live.len();
        for (c, r) in refs {
            if live.contains(c) {
                live.insert(*r);
            }
        }
        if live.len() == before {
            return;
        }
    }
}

/// Runs prune.
pub fn prune(repo: &mut Repo, opts: PruneOptions) -> Result<PruneReport> {
    prune_in(repo, opts, &mut SnapshotSet::new())
}

/// [`prune`] with a snapshot set the caller already holds (only files it has not seen are read).
pub fn prune_in(repo: &mut Repo, opts: PruneOptions, set: &mut SnapshotSet) -> Result<PruneReport> {
    let start = Instant::now();
    let _lock = Lock::acquire(repo.store(), true, "prune")?;
    let mut report = PruneReport { dry_run: opts.dry_run, ..Default::default() };
    // Under the exclusive lock no cairn process writes: everything in tmp/ is a leftover. Freed
    // first, as it needs no write (a full disk).
    if !opts.dry_run {
        (report.tmp_removed, report.tmp_bytes) = repo.store().clean_tmp(true)?;
    }
    // Read everything first; any failure stops prune before it changes anything.
    let index_names: Vec<String> = repo.store().index_ids()?.iter().map(IndexId::to_hex).collect();
    let mut packs: HashMap<PackId, PackRecord> = HashMap::new();
    let mut per_file: Vec<(IndexId, Vec<PackId>)> = Vec::new();
    for n in &index_names {
        let id: IndexId = n.parse().map_err(|_| Error::corrupt(format!("index file {n}"), "bad name"))?;
        let records = read_index_file(repo.store(), repo.keys(), &id).map_err(|e| {
            Error::corrupt(format!("index file {id}"), format!("{e}; run `cairn repair index` before prune"))
        })?;
        per_file.push((id, records.iter().map(|r| r.id).collect()));
        for r in records {
            packs.entry(r.id).or_insert(r);
        }
    }
    let sync = repo.rebuild_cache()?;
    if let Some((id, e)) = sync.bad.into_iter().next() {
        return Err(Error::corrupt(format!("index file {id}"), e.to_string()));
    }
    let on_disk: Vec<String> = repo.store().pack_ids()?.iter().map(PackId::to_hex).collect();
    for p in packs.keys() {
        if !on_disk.contains(&p.to_hex()) {
            return Err(Error::corrupt(
                format!("pack {p}"),
                "indexed but missing; run `cairn verify` and `cairn repair index` before prune",
            ));
        }
    }
    let (mut live, nsnap) = live_chunks(repo, set)?;
    // From every indexed copy, not the cache's one row per chunk: a chunk stored twice (whole in
    // one pack, as a delta in another a kept pack still holds) keeps its base whichever copy
    // the cache happens to point at.
    let refs: Vec<(ChunkId, ChunkId)> =
        packs.values().flat_map(|r| r.entries.iter().filter_map(|e| e.reference.map(|b| (e.id, b)))).collect();
    keep_referenced(&mut live, &refs);
    report.snapshots = nsnap;
    report.live_chunks = live.len();
    report.packs_before = packs.len();

    // A chunk stored twice counts as live only where the cache places it.
    let mut live_bytes: HashMap<PackId, u64> = HashMap::new();
    for c in &live {
        let loc = repo.cache().lookup(c)?.ok_or_else(|| {
            Error::corrupt(
                format!("chunk {c}"),
                "referenced by a snapshot but in no index; prune stops (run `cairn verify`)",
            )
        })?;
        *live_bytes.entry(loc.pack).or_default() += loc.stored_len as u64;
    }
    let mut delete: Vec<(PackId, u64)> = Vec::new();
    let mut repack: Vec<PackId> = Vec::new();
    let mut keep: Vec<PackId> = Vec::new();
    for (id, r) in &packs {
        let total: u64 = r.entries.iter().map(|e| e.stored_len as u64).sum();
        let l = live_bytes.get(id).copied().unwrap_or(0);
        if l == 0 {
            delete.push((*id, r.size));
        } else if (l as f64) < opts.repack_below * total as f64 {
            repack.push(*id);
        } else {
            keep.push(*id);
        }
    }
    let unindexed: Vec<String> = on_disk
        .iter()
        .filter(|n| n.parse::<PackId>().map(|p| !packs.contains_key(&p)).unwrap_or(false))
        .cloned()
        .collect();
    report.packs_deleted = delete.len();
    report.packs_repacked = repack.len();
    report.unindexed_deleted = unindexed.len();
    let mut bytes_deleted: u64 =
        delete.iter().map(|(_, s)| s).sum::<u64>() + repack.iter().map(|p| packs[p].size).sum::<u64>();
    for n in &unindexed {
        bytes_deleted += repo.store().size(Handle::Pack(n.parse().expect("listed names are hex")))?.unwrap_or(0);
    }
    report.bytes_deleted = bytes_deleted;
    if opts.dry_run {
        // Repacking writes the live chunks of the packs it rewrites back: not freed.
        report.bytes_written = repack.iter().map(|p| live_bytes.get(p).copied().unwrap_or(0)).sum();
        report.bytes_freed = bytes_deleted as i64 - report.bytes_written as i64;
        report.duration_s = start.elapsed().as_secs_f64();
        return Ok(report);
    }

    // (0) Deletions that need no write go first, so prune frees space on a full disk: packs no
    // index lists, then index files that list only dead packs, then the dead packs no remaining
    // index file lists. Nothing live is touched, and at every point each pack an index file
    // lists still exists.
    for n in &unindexed {
        repo.store().remove(Handle::Pack(n.parse().expect("listed names are hex")))?;
    }
    let dead: HashSet<PackId> = delete.iter().map(|(p, _)| *p).collect();
    let mut still_listed: HashSet<PackId> = HashSet::new();
    for (id, ps) in &per_file {
        if !ps.is_empty() && ps.iter().all(|p| dead.contains(p)) {
            repo.store().remove(Handle::Index(*id))?;
        } else {
            still_listed.extend(ps.iter().copied());
        }
    }
    for (p, _) in &delete {
        if !still_listed.contains(p) {
            repo.store().remove(Handle::Pack(*p))?;
        }
    }

    // (1) Repack. The packer publishes every new pack before `finish` returns; it indexes none.
    let reader = repo.chunk_reader();
    let mut packer = Packer::new(repo.store().clone(), repo.keys().clone(), repo.config().pack_size, None);
    let mut copied: HashSet<ChunkId> = HashSet::new();
    for p in &repack {
        let bytes = repo.store().get(Handle::Pack(*p))?;
        let entries = parse_pack(&bytes, repo.keys(), &|| format!("pack {p}"))?;
        for e in entries {
            if !live.contains(&e.id) || copied.contains(&e.id) {
                continue;
            }
            if repo.cache().lookup(&e.id)?.map(|l| l.pack) != Some(*p) {
                continue;
            }
            let sealed = &bytes[e.offset as usize..e.offset as usize + e.stored_len as usize];
            // Sealed bytes move as they are (the AAD binds the chunk id, not the pack), after a
            // check, so repacking never copies damage forward silently; the reference the entry
            // records (kept in the new pack's trailer) must be the one the payload names.
            reader.decode_entry(&e, p, sealed)?;
            packer.add(e.id, sealed, e.raw_len, e.reference)?;
            copied.insert(e.id);
        }
    }
    let new_records = packer.finish()?;
    report.bytes_written = new_records.iter().map(|r| r.size).sum();
    report.packs_written = new_records.len();
    // A trailer that disagrees with the index could hide a live chunk from the copy loop; nothing
    // is deleted unless every live chunk of a repacked pack was copied.
    let repacked: HashSet<PackId> = repack.iter().copied().collect();
    for c in &live {
        if let Some(l) = repo.cache().lookup(c)? {
            if repacked.contains(&l.pack) && !copied.contains(c) {
                return Err(Error::corrupt(
                    format!("pack {}", l.pack),
                    format!("live chunk {c} is in the index but not in the pack's trailer; prune stops (run `cairn verify`)"),
                ));
            }
        }
    }

    // (2) New index files for every pack that stays.
    let mut all: Vec<PackRecord> = keep.iter().map(|p| packs[p].clone()).collect();
    all.extend(new_records);
    let mut index = IndexBatch::new(repo.store().clone(), repo.keys().clone(), None);
    for r in all {
        index.push(r)?;
    }
    let written: HashSet<String> = index.finish()?.iter().map(|id| id.to_hex()).collect();
    // (3) Old index files.
    for name in &index_names {
        if !written.contains(name) {
            repo.store().remove(Handle::Index(name.parse().expect("listed names are hex")))?;
        }
    }
    // (4) Obsolete packs.
    for (p, _) in &delete {
        repo.store().remove(Handle::Pack(*p))?;
    }
    for p in &repack {
        repo.store().remove(Handle::Pack(*p))?;
    }
    for n in &unindexed {
        repo.store().remove(Handle::Pack(n.parse().expect("listed names are hex")))?;
    }
    repo.rebuild_cache()?;
    report.bytes_freed = report.bytes_deleted as i64 - report.bytes_written as i64;
    report.duration_s = start.elapsed().as_secs_f64();
    Ok(report)
}
