//! `repair packs`: drops the packs marked damaged (by `verify` or a failed read) after moving
//! every chunk of theirs that still authenticates into a new pack, and names what was lost: the
//! chunks no intact copy holds, and the snapshots and files that reference them. A chunk that a
//! later backup stored again elsewhere is not lost. Write and delete order as in
//! format-spec/ordering.md: new packs, then index files without the damaged packs, then removal
//! of the old index files, then of the damaged packs.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::index::PackRecord;
use crate::format::manifest::NodeKind;
use crate::id::{ChunkId, IndexId, PackId};
use crate::ops::verify::Affected;
use crate::repo::cache::read_index_file;
use crate::repo::packer::{IndexBatch, Packer};
use crate::repo::Repo;
use crate::store::lock::Lock;
use crate::store::{Handle, Store, StoreExt};

/// One damaged pack and what became of its chunks.
#[derive(Debug, Serialize, Clone)]
pub struct RepairedPack {
    /// The pack (removed).
    pub pack: String,
    /// Why it was marked damaged.
    pub reason: String,
    /// Chunks that still authenticated, copied into a new pack.
    pub salvaged: usize,
    /// Chunks not copied because an intact pack holds them too.
    pub stored_elsewhere: usize,
    /// Chunks that failed their check and exist nowhere else.
    pub lost: Vec<String>,
}

/// What `repair packs` did.
#[derive(Debug, Serialize, Default)]
pub struct RepairPacksReport {
    /// The damaged packs handled.
    pub packs: Vec<RepairedPack>,
    /// New packs written with the salvaged chunks.
    pub packs_written: usize,
    /// Every lost chunk.
    pub lost_chunks: Vec<String>,
    /// Snapshot files (or trees) that reference lost data.
    pub affected: Vec<Affected>,
    /// Snapshots whose tree could not be read while looking for references, with the error.
    pub problems: Vec<String>,
}

impl RepairPacksReport {
    /// Whether data was lost.
    pub fn lost_data(&self) -> bool {
        !self.lost_chunks.is_empty() || !self.problems.is_empty()
    }
}

/// Runs `repair packs`. Needs the exclusive lock.
pub fn repair_packs(repo: &mut Repo) -> Result<RepairPacksReport> {
    let _lock = Lock::acquire(repo.store(), true, "repair packs")?;
    repo.sync_index()?;
    let mut report = RepairPacksReport::default();
    let marked: BTreeMap<PackId, String> = repo.cache().damaged_packs()?.into_iter().collect();
    if marked.is_empty() {
        return Ok(report);
    }
    // Everything is read before anything changes; an unreadable index file stops the repair.
    let mut files: Vec<(IndexId, Vec<PackRecord>)> = Vec::new();
    for id in repo.store().index_ids()? {
        let records = read_index_file(repo.store(), repo.keys(), &id).map_err(|e| {
            Error::corrupt(format!("index file {id}"), format!("{e}; run `cairn repair index` before `repair packs`"))
        })?;
        files.push((id, records));
    }
    let mut damaged: BTreeMap<PackId, PackRecord> = BTreeMap::new();
    let mut elsewhere: HashSet<ChunkId> = HashSet::new();
    for (_, records) in &files {
        for r in records {
            if marked.contains_key(&r.id) {
                damaged.entry(r.id).or_insert_with(|| r.clone());
            } else {
                elsewhere.extend(r.entries.iter().map(|e| e.id));
            }
        }
    }
    // A mark on a pack no index file lists any more (already dropped) is simply lifted.
    for p in marked.keys().filter(|p| !damaged.contains_key(p)) {
        repo.cache().unmark_damaged(p)?;
    }

    let reader = repo.chunk_reader();
    let mut packer = Packer::new(repo.store().clone(), repo.keys().clone(), repo.config().pack_size, None);
    let mut copied: HashSet<ChunkId> = HashSet::new();
    let mut failed: Vec<(PackId, ChunkId)> = Vec::new();
    let mut per_pack: Vec<RepairedPack> = Vec::new();
    for (pack, record) in &damaged {
        let bytes = repo.objects().get(Handle::Pack(*pack));
        if let Err(e) = &bytes {
            tracing::warn!("damaged pack {pack} cannot be read ({e}); none of its chunks can be salvaged");
        }
        let mut rp = RepairedPack {
            pack: pack.to_hex(),
            reason: marked[pack].clone(),
            salvaged: 0,
            stored_elsewhere: 0,
            lost: Vec::new(),
        };
        for e in &record.entries {
            if elsewhere.contains(&e.id) || copied.contains(&e.id) {
                rp.stored_elsewhere += 1;
                continue;
            }
            let (start, end) = (e.offset as usize, e.offset as usize + e.stored_len as usize);
            let sealed = bytes.as_ref().ok().and_then(|b| b.get(start..end));
            // Sealed bytes move as they are (the AEAD binds the chunk id, not the pack); only a
            // chunk that opens, decompresses and hashes to its id is copied.
            match sealed.map(|s| reader.decode_entry(e, pack, s).map(|_| s)) {
                Some(Ok(s)) => {
                    packer.add(e.id, s, e.raw_len, e.reference)?;
                    copied.insert(e.id);
                    rp.salvaged += 1;
                }
                _ => failed.push((*pack, e.id)),
            }
        }
        per_pack.push(rp);
    }
    let new_records = packer.finish()?;
    report.packs_written = new_records.len();
    // A chunk that failed in one damaged pack may have been salvaged from another.
    let mut lost: BTreeSet<ChunkId> = BTreeSet::new();
    for (pack, id) in failed {
        let rp = per_pack.iter_mut().find(|r| r.pack == pack.to_hex()).expect("recorded above");
        if copied.contains(&id) {
            rp.stored_elsewhere += 1;
        } else {
            rp.lost.push(id.to_hex());
            lost.insert(id);
        }
    }

    // Index files: those listing a damaged pack are rewritten without it; the new packs get theirs.
    let mut index = IndexBatch::new(repo.store().clone(), repo.keys().clone(), None);
    let mut replaced: Vec<IndexId> = Vec::new();
    for (id, records) in &files {
        if records.iter().any(|r| damaged.contains_key(&r.id)) {
            replaced.push(*id);
            for r in records.iter().filter(|r| !damaged.contains_key(&r.id)) {
                index.push(r.clone())?;
            }
        }
    }
    for r in new_records {
        index.push(r)?;
    }
    let written: HashSet<IndexId> = index.finish()?.into_iter().collect();
    for id in replaced.iter().filter(|id| !written.contains(id)) {
        repo.store().remove(Handle::Index(*id))?;
    }
    for pack in damaged.keys() {
        if repo.store().size(Handle::Pack(*pack))?.is_some() {
            quarantine_pack(repo.store(), *pack)?;
        }
        repo.cache().unmark_damaged(pack)?;
    }
    let sync = repo.rebuild_cache()?;
    if let Some((id, e)) = sync.bad.into_iter().next() {
        return Err(Error::corrupt(format!("index file {id}"), format!("just written but unreadable: {e}")));
    }

    // Who references what was lost.
    if !lost.is_empty() {
        let (snaps, _) = repo.snapshots()?;
        let mut affected = BTreeSet::new();
        for (sid, s) in &snaps {
            if s.tree.iter().any(|c| lost.contains(c)) {
                affected.insert(Affected { snapshot: *sid, path: "(tree)".into() });
                continue;
            }
            let tree = match repo.tree(s) {
                Ok(t) => t,
                Err(e) => {
                    report.problems.push(format!("snapshot {sid}: tree unreadable: {e}"));
                    continue;
                }
            };
            for node in tree {
                match node {
                    Ok(n) if n.kind == NodeKind::File && n.chunks.iter().any(|c| lost.contains(c)) => {
                        affected.insert(Affected { snapshot: *sid, path: n.path_str() });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        report.problems.push(format!("snapshot {sid}: tree unreadable: {e}"));
                        break;
                    }
                }
            }
        }
        report.affected = affected.into_iter().collect();
    }
    report.lost_chunks = lost.iter().map(ChunkId::to_hex).collect();
    report.packs = per_pack;
    Ok(report)
}

/// Moves a damaged pack to `quarantine/packs/xy/<id>` instead of deleting it: the damage was
/// local, a remote may hold the good copy, and `sync` never deletes a remote's copy of a
/// quarantined file (a dropped pack would otherwise look "synced, gone locally" and be deleted
/// from the one place its lost chunks still exist). The link is durable before the original goes.
fn quarantine_pack(store: &crate::store::LocalStore, pack: PackId) -> Result<()> {
    let h = Handle::Pack(pack);
    let rel = h.rel_path();
    let to = store.root().join("quarantine").join(&rel);
    let dir = to.parent().unwrap_or(store.root());
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    match std::fs::hard_link(store.handle_path(h), &to) {
        Ok(()) => {}
        // Quarantined before (an interrupted repair): the same content-named pack.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(&to, e)),
    }
    crate::store::fsync_dir(dir)?;
    store.remove(h)
}
