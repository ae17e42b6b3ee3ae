//! `sync`: a copy from the local repository's store to a remote store of exactly the files the
//! remote lacks, in the order config/keys, packs, index files, snapshots, so a remote never holds
//! a snapshot whose data is missing (format-spec/ordering.md). A file is recorded as synced only
//! after a fresh listing shows it with the size and MD5 computed locally. Deletions follow local
//! ones in the reverse order (snapshots first, packs last), and only for files this repository
//! itself synced; anything else on the remote is reported, never deleted.
//!
//! The record of what each remote holds, and the per-remote flock, are local state in
//! `state/` (not repository objects).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use md5::{Digest, Md5};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::{FileKind, Handle, LocalStore, Store};

mod state;
use state::stream_file;
pub use state::{PendingFile, SyncState};

/// Upload order; deletions go in reverse.
fn rank(h: &Handle) -> u8 {
    match h.kind() {
        FileKind::Config | FileKind::Key => 0,
        FileKind::Pack => 1,
        FileKind::Index => 2,
        FileKind::Snapshot | FileKind::Lock => 3,
        // A verification names its snapshot: it arrives after it, and goes before it.
        FileKind::Verification => 4,
    }
}

fn rank_of(rel: &str) -> u8 {
    Handle::from_rel_path(rel).map(|h| rank(&h)).unwrap_or(3)
}

/// The files that make up a complete remote copy of `store` (config, keys, packs, index files,
/// snapshots: never locks), with their sizes, in upload order.
pub fn local_inventory(store: &dyn Store) -> Result<Vec<(Handle, u64)>> {
    // The inventory lists snapshots and index files before packs (FileKind::LISTING_ORDER), so a
    // snapshot or index file seen here only refers to packs that already existed.
    let mut out: Vec<(Handle, u64)> = store
        .inventory()?
        .objects
        .into_iter()
        .filter(|s| s.handle.kind() != FileKind::Lock)
        .map(|s| (s.handle, s.size))
        .collect();
    out.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then(a.0.cmp(&b.0)));
    Ok(out)
}

/// What a sync did.
#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    /// Remote name.
    pub remote: String,
    /// Files uploaded.
    pub uploaded: Vec<String>,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Remote files that differed from the local ones (altered or partial) and were replaced, or
    /// that were synced once and had disappeared from the remote, and were uploaded again.
    pub repaired: Vec<String>,
    /// Local files whose bytes do not hash to their name (packs, index files, snapshots): local
    /// damage, never uploaded, and the remote's copy is never removed or replaced for them.
    pub local_damaged: Vec<String>,
    /// Of `local_damaged`, those repaired from the remote: its copy was downloaded and checked
    /// against the name, the damaged local file removed and the good copy published in its place.
    pub local_repaired: Vec<String>,
    /// Remote files deleted because the local repository no longer has them.
    pub deleted: Vec<String>,
    /// Files on the remote that cairn did not write: reported, never deleted.
    pub foreign: Vec<String>,
    /// Paths the remote lists more than once (Google Drive allows duplicate names).
    pub duplicates: Vec<String>,
    /// Dry run.
    pub dry_run: bool,
    /// Seconds.
    pub duration_s: f64,
}

impl SyncReport {
    /// Whether local damage was found (even if it was repaired from the remote).
    pub fn is_damaged(&self) -> bool {
        !self.local_damaged.is_empty()
    }
}

/// Reads a local object once: its MD5, and whether its bytes hash to its name (always true for
/// config and key files, which are not named by their content).
fn md5_and_check(local: &LocalStore, h: Handle) -> Result<(String, bool)> {
    let mut md5 = Md5::new();
    let mut b3 = blake3::Hasher::new();
    stream_file(&local.handle_path(h), &mut |b| {
        md5.update(b);
        b3.update(b);
    })?;
    let ok = !h.is_content_named() || h.name().is_some_and(|n| n == *b3.finalize().as_bytes());
    Ok((hex::encode(md5.finalize()), ok))
}

/// Holds an flock on `state/sync-NAME.lock`: one sync per remote at a time.
struct SyncLock {
    _file: std::fs::File,
}

impl SyncLock {
    fn take(local: &LocalStore, remote: &str) -> Result<SyncLock> {
        use std::os::unix::io::AsRawFd;
        let safe: String = remote.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let p = local.local_state_dir("state")?.join(format!("sync-{safe}.lock"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::Locked(format!("another sync to remote {remote} is running")));
        }
        Ok(SyncLock { _file: f })
    }
}

/// A remote's listing by relative path: size and MD5 (when reported), and the paths listed twice.
struct RemoteListing {
    files: HashMap<String, (u64, Option<String>)>,
    duplicates: Vec<String>,
}

fn list_remote(remote: &dyn Store) -> Result<RemoteListing> {
    let inv = remote.inventory()?;
    let mut l = RemoteListing { files: HashMap::new(), duplicates: Vec::new() };
    let all = inv.objects.into_iter().map(|s| (s.handle.rel_path(), s.size, s.md5));
    for (path, size, md5) in all.chain(inv.foreign.into_iter().map(|(p, s)| (p, s, None))) {
        if l.files.insert(path.clone(), (size, md5)).is_some() {
            l.duplicates.push(path);
        }
    }
    Ok(l)
}

/// Copies to `remote` (named `name`) what it lacks of `local`, and removes from it what the local
/// repository no longer has.
///
/// `exclude` lists snapshot files the remote's own retention does not keep: they are not uploaded,
/// and removed from the remote if they were.
pub fn sync(
    local: &LocalStore,
    remote: &dyn Store,
    name: &str,
    dry_run: bool,
    exclude: &HashSet<Handle>,
) -> Result<SyncReport> {
    let start = Instant::now();
    let _lock = SyncLock::take(local, name)?;
    // The shared repository lock keeps prune and forget out while the inventory is in use.
    let _repo_lock = crate::store::lock::Lock::acquire(local, false, "sync")?;
    let state = SyncState::open(local)?;
    let mut report = SyncReport { remote: name.to_string(), dry_run, ..Default::default() };
    let on_remote = list_remote(remote)?;
    report.duplicates = on_remote.duplicates;
    let on_remote = on_remote.files;
    let mut files = local_inventory(local)?;
    files.retain(|(h, _)| !exclude.contains(h));
    let local_set: HashSet<String> = files.iter().map(|(h, _)| h.rel_path()).collect();
    let synced = state.synced(name)?;
    let started = state.started(name)?;
    let mut md5s: BTreeMap<Handle, String> = BTreeMap::new();
    let mut groups: BTreeMap<u8, Vec<Handle>> = BTreeMap::new();
    for (h, size) in &files {
        let rel = h.rel_path();
        let remote_has = on_remote.get(&rel);
        let differs = |m: &str| remote_has.is_none_or(|(rs, rm)| rs != size || rm.as_ref().is_some_and(|r| r != m));
        // Nothing named by its content goes up (or replaces a remote copy) before its bytes were
        // checked against its name, read in the same pass as the MD5 the upload is checked with.
        let mut m = match remote_has {
            Some(_) => state.md5(local, *h, *size)?,
            None => String::new(),
        };
        if h.is_content_named() && (remote_has.is_none() || differs(&m)) {
            let (fresh, ok) = md5_and_check(local, *h)?;
            if !ok {
                report.local_damaged.push(rel.clone());
                if remote_has.is_some() && !dry_run {
                    match local.replace_from(remote, *h) {
                        Ok(true) => {
                            state.forget_md5(&rel)?;
                            report.local_repaired.push(rel.clone());
                        }
                        Ok(false) => tracing::error!("{rel}: the copy on remote {name} is damaged too"),
                        Err(e) => tracing::error!("{rel}: repair from remote {name} failed: {e}"),
                    }
                }
                continue;
            }
            if fresh != m {
                state.set_md5(&rel, *size, &fresh)?;
                m = fresh;
            }
        } else if remote_has.is_none() {
            m = state.md5(local, *h, *size)?;
        }
        let up = match remote_has {
            None => {
                // Synced once and gone since: lost on the remote, put back.
                if synced.contains_key(&rel) {
                    report.repaired.push(rel.clone());
                }
                true
            }
            Some((rsize, rmd5)) if rsize != size || rmd5.as_ref().is_some_and(|r| *r != m) => {
                if *h == Handle::Config {
                    refuse_foreign_repository(local, remote, name)?;
                }
                report.repaired.push(rel.clone());
                if !dry_run {
                    remote.remove(*h)?;
                    state.unmark(name, &rel)?;
                }
                true
            }
            Some(_) => {
                if !dry_run && synced.get(&rel).is_none_or(|(s, x)| s != size || *x != m) {
                    state.mark(name, &rel, *size, &m)?;
                }
                false
            }
        };
        if up {
            groups.entry(rank(h)).or_default().push(*h);
            report.uploaded_bytes += size;
        }
        md5s.insert(*h, m);
    }
    for hs in groups.values() {
        report.uploaded.extend(hs.iter().map(Handle::rel_path));
    }
    // Remote files that are not ours to delete.
    for path in on_remote.keys() {
        if !local_set.contains(path) && !synced.contains_key(path) && !started.contains(path) {
            report.foreign.push(path.clone());
        }
    }
    report.foreign.sort();
    // A snapshot file `repair snapshots` or a pack `repair packs` quarantined was damaged here;
    // the remote's copy may be the good one, so it is not deleted (format-spec/layout.md,
    // "Quarantine").
    let quarantined = |p: &String| local.root().join("quarantine").join(p).exists();
    let mut to_delete: Vec<String> = synced
        .keys()
        .chain(started.iter().filter(|p| !synced.contains_key(*p)))
        .filter(|p| !local_set.contains(*p) && !quarantined(p))
        .cloned()
        .collect();
    to_delete.sort_by(|a, b| rank_of(b).cmp(&rank_of(a)).then(a.cmp(b)));
    if dry_run {
        report.deleted = to_delete.into_iter().filter(|p| on_remote.contains_key(p)).collect();
        report.duration_s = start.elapsed().as_secs_f64();
        return Ok(report);
    }
    let sizes: HashMap<Handle, u64> = files.iter().copied().collect();
    // One group at a time (config and keys, packs, index files, snapshots), each checked against a
    // fresh listing before the next goes up: nothing is trusted, or followed by what depends on
    // it, until the remote shows the right size and hash.
    for hs in groups.values() {
        state.intend(name, &hs.iter().map(Handle::rel_path).collect::<Vec<_>>())?;
        remote.copy_in(local, hs)?;
        let after = list_remote(remote)?;
        for h in hs {
            let rel = h.rel_path();
            if after.duplicates.contains(&rel) {
                return Err(Error::corrupt(format!("remote {name} file {rel}"), "listed twice after upload"));
            }
            let size = sizes[h];
            let m = &md5s[h];
            match after.files.get(&rel) {
                Some((s, r)) if *s == size && r.as_ref().is_none_or(|r| r == m) => state.mark(name, &rel, size, m)?,
                Some((s, r)) => {
                    return Err(Error::corrupt(
                        format!("remote {name} file {rel}"),
                        format!("after upload: size {s} md5 {r:?}, expected {size} {m}"),
                    ))
                }
                None => return Err(Error::corrupt(format!("remote {name} file {rel}"), "missing after upload")),
            }
        }
    }
    for rel in to_delete {
        if on_remote.contains_key(&rel) {
            // Only names cairn writes are ever recorded as synced.
            if let Some(h) = Handle::from_rel_path(&rel) {
                remote.remove(h)?;
                report.deleted.push(rel.clone());
            }
        }
        state.unmark(name, &rel)?;
    }
    report.duration_s = start.elapsed().as_secs_f64();
    Ok(report)
}

/// A remote `config` that differs from ours is replaced only when it is not another repository's
/// (an interrupted upload leaves a partial one): two repositories sharing one remote path would
/// otherwise take turns overwriting each other's config, leaving one unreadable.
fn refuse_foreign_repository(local: &LocalStore, remote: &dyn Store, name: &str) -> Result<()> {
    let id_of =
        |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).ok().and_then(|v| v.get("id").cloned());
    let ours = id_of(&local.get(Handle::Config)?);
    // A failed read is an error: taking it for "no config" would overwrite another repository's
    // config on a transient failure.
    let theirs = id_of(&remote.get(Handle::Config)?);
    match (ours, theirs) {
        (Some(a), Some(b)) if a != b => Err(Error::Invalid(format!(
            "remote {name} holds another cairn repository (its config has a different id): refusing to replace it; give each repository its own remote path"
        ))),
        _ => Ok(()),
    }
}

/// What `verify --remote` finds without downloading.
#[derive(Debug, Default, Serialize)]
pub struct RemoteCheck {
    /// Remote name.
    pub remote: String,
    /// Files the remote should have (synced) but does not.
    pub missing: Vec<String>,
    /// Local files not synced yet (not damage).
    pub pending: Vec<String>,
    /// Of `pending`, those the remote holds with another size or MD5: uploads that were
    /// interrupted (the next sync replaces them), not damage.
    pub partial: Vec<String>,
    /// Files whose size or MD5 differ from the local copy.
    pub mismatched: Vec<String>,
    /// Files on the remote the local repository does not have.
    pub extra: Vec<String>,
    /// Paths listed more than once.
    pub duplicates: Vec<String>,
    /// Files compared.
    pub checked: usize,
}

impl RemoteCheck {
    /// Whether the remote copy is damaged.
    pub fn is_damaged(&self) -> bool {
        !self.missing.is_empty() || !self.mismatched.is_empty() || !self.duplicates.is_empty()
    }
}

/// Compares the inventory of `remote` (named `name`) with the local one.
pub fn check(local: &LocalStore, remote: &dyn Store, name: &str, exclude: &HashSet<Handle>) -> Result<RemoteCheck> {
    let state = SyncState::open(local)?;
    let synced = state.synced(name)?;
    let mut out = RemoteCheck { remote: name.to_string(), ..Default::default() };
    let on_remote = list_remote(remote)?;
    out.duplicates = on_remote.duplicates;
    let on_remote = on_remote.files;
    let mut files = local_inventory(local)?;
    files.retain(|(h, _)| !exclude.contains(h));
    for (h, size) in &files {
        let rel = h.rel_path();
        out.checked += 1;
        match on_remote.get(&rel) {
            None if synced.contains_key(&rel) => out.missing.push(rel),
            None => out.pending.push(rel),
            Some((rsize, rmd5)) => {
                let m = state.md5(local, *h, *size)?;
                if rsize != size || rmd5.as_ref().is_some_and(|r| *r != m) {
                    if synced.contains_key(&rel) {
                        out.mismatched.push(rel);
                    } else {
                        out.pending.push(rel.clone());
                        out.partial.push(rel);
                    }
                }
            }
        }
    }
    let local_set: HashSet<String> = files.iter().map(|(h, _)| h.rel_path()).collect();
    out.extra = on_remote.keys().filter(|p| !local_set.contains(*p)).cloned().collect();
    out.extra.sort();
    Ok(out)
}

/// Snapshot files a remote's own retention does not keep, so sync leaves them out. A remote
/// retention can only keep fewer snapshots than the local repository holds: a remote is a mirror,
/// and local prune decides which packs exist.
pub fn retention_exclusions(
    snaps: &[(crate::id::SnapshotId, crate::format::manifest::Snapshot)],
    retention: &crate::ops::retention::Retention,
    now: chrono::DateTime<chrono::FixedOffset>,
) -> HashSet<Handle> {
    crate::ops::retention::not_kept(snaps, retention, now).into_iter().map(Handle::Snapshot).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{content_hash, IndexId, KeyId, PackId, SnapshotId};
    use crate::store::memory::MemoryStore;

    fn repo(d: &tempfile::TempDir) -> LocalStore {
        let s = LocalStore::new(d.path().join("repo"));
        s.create_layout().unwrap();
        s.put(Handle::Config, b"{\"id\": 1}\n").unwrap();
        s.put(Handle::Key(KeyId([1; 32])), b"key").unwrap();
        for b in [&b"pack one"[..], b"pack two"] {
            s.put(Handle::Pack(PackId(content_hash(b))), b).unwrap();
        }
        s.put(Handle::Index(IndexId(content_hash(b"index"))), b"index").unwrap();
        s.put(Handle::Snapshot(SnapshotId(content_hash(b"snap"))), b"snap").unwrap();
        s
    }

    #[test]
    fn copies_what_the_remote_lacks_in_order_then_removes_only_what_it_synced() {
        let d = tempfile::tempdir().unwrap();
        let local = repo(&d);
        let remote = MemoryStore::new();
        let foreign = Handle::Pack(PackId([0xee; 32]));
        remote.put(foreign, b"someone else's").unwrap();
        let none = HashSet::new();
        let r = sync(&local, &remote, "mem", false, &none).unwrap();
        let ranks: Vec<u8> = r.uploaded.iter().map(|p| rank_of(p)).collect();
        assert_eq!(r.uploaded.len(), 6, "{r:?}");
        assert_eq!(r.uploaded[0], "config");
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{:?}", r.uploaded);
        assert_eq!(r.foreign, vec![foreign.rel_path()]);
        for (h, _) in local_inventory(&local).unwrap() {
            assert_eq!(remote.get(h).unwrap(), local.get(h).unwrap(), "{h}");
        }
        let state = SyncState::open(&local).unwrap();
        assert!(state.pending_files(&local, "mem", &none).unwrap().is_empty());

        // Nothing to do, then a local deletion is followed; the foreign pack stays.
        assert!(sync(&local, &remote, "mem", false, &none).unwrap().uploaded.is_empty());
        let snap = Handle::Snapshot(SnapshotId(content_hash(b"snap")));
        local.remove(snap).unwrap();
        let r = sync(&local, &remote, "mem", true, &none).unwrap();
        assert_eq!(r.deleted, vec![snap.rel_path()]);
        assert!(remote.size(snap).unwrap().is_some(), "a dry run deletes nothing");
        let r = sync(&local, &remote, "mem", false, &none).unwrap();
        assert_eq!(r.deleted, vec![snap.rel_path()]);
        assert_eq!(remote.size(snap).unwrap(), None);
        assert!(remote.size(foreign).unwrap().is_some());
    }

    #[test]
    fn a_failed_remote_listing_stops_the_sync_before_anything_changes() {
        let d = tempfile::tempdir().unwrap();
        let local = repo(&d);
        let remote = MemoryStore::new();
        let none = HashSet::new();
        sync(&local, &remote, "mem", false, &none).unwrap();
        local.remove(Handle::Snapshot(SnapshotId(content_hash(b"snap")))).unwrap();
        remote.fail_listings(true);
        assert!(sync(&local, &remote, "mem", false, &none).is_err());
        assert!(check(&local, &remote, "mem", &none).is_err());
        remote.fail_listings(false);
        assert_eq!(remote.list(FileKind::Snapshot).unwrap().len(), 1, "nothing deleted");
    }

    #[test]
    fn damage_on_the_remote_is_found_and_repaired() {
        let d = tempfile::tempdir().unwrap();
        let local = repo(&d);
        let remote = MemoryStore::new();
        let none = HashSet::new();
        sync(&local, &remote, "mem", false, &none).unwrap();
        let gone = Handle::Pack(PackId(content_hash(b"pack one")));
        let cut = Handle::Pack(PackId(content_hash(b"pack two")));
        remote.remove(gone).unwrap();
        remote.tamper(cut, b"pack");
        let c = check(&local, &remote, "mem", &none).unwrap();
        assert_eq!((c.missing.clone(), c.mismatched.clone()), (vec![gone.rel_path()], vec![cut.rel_path()]));
        assert!(c.is_damaged());
        let r = sync(&local, &remote, "mem", false, &none).unwrap();
        let mut repaired = r.repaired.clone();
        repaired.sort();
        let mut want = vec![gone.rel_path(), cut.rel_path()];
        want.sort();
        assert_eq!(repaired, want);
        assert!(!check(&local, &remote, "mem", &none).unwrap().is_damaged());
        assert_eq!(remote.get(cut).unwrap(), b"pack two");
    }
}
