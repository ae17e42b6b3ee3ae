//! `sync`: upload exactly the files a remote lacks, in the order config/keys, packs, index files,
//! snapshots, so a remote never holds a snapshot whose data is missing. A file is recorded as
//! synced only after a fresh listing shows it with the size and MD5 computed locally. Deletions
//! follow local ones in the reverse order (snapshots first, packs last), and only for files this
//! repository itself synced; anything else on the remote is reported, never deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use md5::{Digest, Md5};
use rusqlite::{params, Connection};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::remote::rclone::{Rclone, RemoteFile};

/// Upload order; deletions go in reverse.
fn rank(rel: &str) -> u8 {
    if rel == "config" || rel.starts_with("keys/") {
        0
    } else if rel.starts_with("packs/") {
        1
    } else if rel.starts_with("index/") {
        2
    } else {
        3
    }
}

/// The repository files that make up a complete remote copy: config, keys, packs, index files,
/// snapshots (never locks, tmp, cache or state).
pub fn local_inventory(root: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let cfg = root.join("config");
    let m = std::fs::metadata(&cfg).map_err(|e| Error::io(&cfg, e))?;
    out.push(("config".to_string(), m.len()));
    let store = crate::store::LocalStore::new(root);
    // Listed in the reverse of the order a backup writes them, so a snapshot or index file seen
    // here only refers to packs that already existed when `packs/` was listed after it.
    for kind in [
        crate::store::FileKind::Snapshot,
        crate::store::FileKind::Index,
        crate::store::FileKind::Pack,
        crate::store::FileKind::Key,
    ] {
        for n in store.list(kind)? {
            let p = store.path(kind, &n);
            let rel = p.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
            let size = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len();
            out.push((rel, size));
        }
    }
    out.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then(a.0.cmp(&b.0)));
    Ok(out)
}

/// Local bookkeeping of what each remote holds (in `state/history.sqlite`).
pub struct SyncState {
    conn: Connection,
}

impl SyncState {
    /// Opens the state of the repository at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let dir = root.join("state");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("history.sqlite");
        let e = |source| Error::Cache { path: path.clone(), err: source };
        let conn = Connection::open(&path).map_err(e)?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(e)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS remote_files(remote TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
                 md5 TEXT NOT NULL, synced TEXT NOT NULL, PRIMARY KEY(remote, path));
             CREATE TABLE IF NOT EXISTS local_md5(path TEXT PRIMARY KEY, size INTEGER NOT NULL, md5 TEXT NOT NULL);",
        )
        .map_err(e)?;
        Ok(SyncState { conn })
    }

    fn q<T>(&self, r: rusqlite::Result<T>) -> Result<T> {
        r.map_err(|source| Error::Cache { path: "state/history.sqlite".into(), err: source })
    }

    /// MD5 of a local repository file (cached: the files are immutable).
    pub fn md5(&self, root: &Path, rel: &str, size: u64) -> Result<String> {
        let cached: Option<(i64, String)> = self
            .conn
            .query_row("SELECT size, md5 FROM local_md5 WHERE path=?1", [rel], |r| Ok((r.get(0)?, r.get(1)?)))
            .ok();
        if let Some((s, m)) = cached {
            if s as u64 == size {
                return Ok(m);
            }
        }
        let p = root.join(rel);
        let mut f = std::fs::File::open(&p).map_err(|e| Error::io(&p, e))?;
        let mut h = Md5::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io(&p, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let m = hex::encode(h.finalize());
        self.q(self.conn.execute(
            "INSERT OR REPLACE INTO local_md5(path, size, md5) VALUES(?1,?2,?3)",
            params![rel, size as i64, m],
        ))?;
        Ok(m)
    }

    /// Files recorded as synced to `remote`.
    pub fn synced(&self, remote: &str) -> Result<HashMap<String, (u64, String)>> {
        let mut st = self.q(self.conn.prepare("SELECT path, size, md5 FROM remote_files WHERE remote=?1"))?;
        let rows = self.q(st.query_map([remote], |r| {
            Ok((r.get::<_, String>(0)?, (r.get::<_, i64>(1)? as u64, r.get::<_, String>(2)?)))
        }))?;
        let mut m = HashMap::new();
        for r in rows {
            let (k, v) = self.q(r)?;
            m.insert(k, v);
        }
        Ok(m)
    }

    fn mark(&self, remote: &str, rel: &str, size: u64, md5: &str) -> Result<()> {
        self.q(self.conn.execute(
            "INSERT OR REPLACE INTO remote_files(remote, path, size, md5, synced) VALUES(?1,?2,?3,?4,?5)",
            params![remote, rel, size as i64, md5, chrono::Local::now().to_rfc3339()],
        ))?;
        Ok(())
    }

    fn unmark(&self, remote: &str, rel: &str) -> Result<()> {
        self.q(self.conn.execute("DELETE FROM remote_files WHERE remote=?1 AND path=?2", [remote, rel]))?;
        Ok(())
    }

    /// (files, bytes) not yet synced to `remote`.
    pub fn pending(&self, root: &Path, remote: &str, exclude: &HashSet<String>) -> Result<(usize, u64)> {
        let synced = self.synced(remote)?;
        let mut n = 0;
        let mut b = 0;
        for (rel, size) in local_inventory(root)?.into_iter().filter(|(r, _)| !exclude.contains(r)) {
            if synced.get(&rel).is_none_or(|(s, _)| *s != size) {
                n += 1;
                b += size;
            }
        }
        Ok((n, b))
    }
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

/// Holds an flock on `state/sync-NAME.lock`: one sync per remote at a time.
struct SyncLock {
    _file: std::fs::File,
}

impl SyncLock {
    fn take(root: &Path, remote: &str) -> Result<SyncLock> {
        use std::os::unix::io::AsRawFd;
        let safe: String = remote.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let p = root.join("state").join(format!("sync-{safe}.lock"));
        std::fs::create_dir_all(root.join("state")).map_err(|e| Error::io(root.join("state"), e))?;
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

/// Pushes what `remote` lacks and removes what the local repository no longer has.
///
/// `exclude` lists snapshot files the remote's own retention does not keep: they are not uploaded,
/// and removed from the remote if they were.
pub fn sync(root: &Path, remote: &Rclone, dry_run: bool, exclude: &HashSet<String>) -> Result<SyncReport> {
    let start = Instant::now();
    let _lock = SyncLock::take(root, &remote.name)?;
    // The shared repository lock keeps prune and forget out while the inventory is in use.
    let _repo_lock = crate::store::lock::Lock::acquire(&crate::store::LocalStore::new(root), false, "sync")?;
    let state = SyncState::open(root)?;
    let mut report = SyncReport { remote: remote.name.clone(), dry_run, ..Default::default() };
    let listed = remote.list()?;
    let mut on_remote: HashMap<String, RemoteFile> = HashMap::new();
    for f in listed {
        if on_remote.contains_key(&f.path) {
            report.duplicates.push(f.path.clone());
        }
        on_remote.insert(f.path.clone(), f);
    }
    let mut local = local_inventory(root)?;
    local.retain(|(r, _)| !exclude.contains(r));
    let local_set: HashSet<&str> = local.iter().map(|(r, _)| r.as_str()).collect();
    let synced = state.synced(&remote.name)?;
    let mut md5s: BTreeMap<String, String> = BTreeMap::new();
    let mut groups: BTreeMap<u8, Vec<String>> = BTreeMap::new();
    for (rel, size) in &local {
        let m = state.md5(root, rel, *size)?;
        let up = match on_remote.get(rel) {
            None => {
                // Synced once and gone since: lost on the remote, put back.
                if synced.contains_key(rel) {
                    report.repaired.push(rel.clone());
                }
                true
            }
            Some(r) if r.size != *size || r.md5.as_ref().is_some_and(|h| *h != m) => {
                if rel == "config" {
                    refuse_foreign_repository(root, remote)?;
                }
                report.repaired.push(rel.clone());
                if !dry_run {
                    remote.delete(rel)?;
                    state.unmark(&remote.name, rel)?;
                }
                true
            }
            Some(_) => {
                if !dry_run && synced.get(rel).is_none_or(|(s, h)| *s != *size || *h != m) {
                    state.mark(&remote.name, rel, *size, &m)?;
                }
                false
            }
        };
        if up {
            groups.entry(rank(rel)).or_default().push(rel.clone());
            report.uploaded_bytes += size;
        }
        md5s.insert(rel.clone(), m);
    }
    for files in groups.values() {
        report.uploaded.extend(files.iter().cloned());
    }
    // Remote files that are not ours to delete.
    for path in on_remote.keys() {
        if !local_set.contains(path.as_str()) && !synced.contains_key(path) {
            report.foreign.push(path.clone());
        }
    }
    report.foreign.sort();
    let mut to_delete: Vec<String> = synced.keys().filter(|p| !local_set.contains(p.as_str())).cloned().collect();
    to_delete.sort_by(|a, b| rank(b).cmp(&rank(a)).then(a.cmp(b)));
    if dry_run {
        report.deleted = to_delete.into_iter().filter(|p| on_remote.contains_key(p)).collect();
        report.duration_s = start.elapsed().as_secs_f64();
        return Ok(report);
    }
    let tmp_list = root.join("tmp").join(format!("sync-{}.list", std::process::id()));
    // One group at a time (config and keys, packs, index files, snapshots), each checked against a
    // fresh listing before the next goes up: nothing is trusted, or followed by what depends on
    // it, until the remote shows the right size and hash.
    for files in groups.values() {
        remote.upload(root, files, &tmp_list)?;
        let mut after: HashMap<String, RemoteFile> = HashMap::new();
        for f in remote.list()? {
            if after.contains_key(&f.path) && files.contains(&f.path) {
                return Err(Error::corrupt(
                    format!("remote {} file {}", remote.name, f.path),
                    "listed twice after upload",
                ));
            }
            after.insert(f.path.clone(), f);
        }
        for rel in files {
            let size = local.iter().find(|(r, _)| r == rel).map(|(_, s)| *s).expect("local");
            let m = &md5s[rel];
            match after.get(rel) {
                Some(f) if f.size == size && f.md5.as_ref().is_none_or(|h| h == m) => {
                    state.mark(&remote.name, rel, size, m)?
                }
                Some(f) => {
                    return Err(Error::corrupt(
                        format!("remote {} file {rel}", remote.name),
                        format!("after upload: size {} md5 {:?}, expected {size} {m}", f.size, f.md5),
                    ))
                }
                None => {
                    return Err(Error::corrupt(format!("remote {} file {rel}", remote.name), "missing after upload"))
                }
            }
        }
    }
    for rel in to_delete {
        if on_remote.contains_key(&rel) {
            remote.delete(&rel)?;
            report.deleted.push(rel.clone());
        }
        state.unmark(&remote.name, &rel)?;
    }
    report.duration_s = start.elapsed().as_secs_f64();
    Ok(report)
}

/// A remote `config` that differs from ours is replaced only when it is not another repository's
/// (an interrupted upload leaves a partial one): two repositories sharing one remote path would
/// otherwise take turns overwriting each other's config, leaving one unreadable.
fn refuse_foreign_repository(root: &Path, remote: &Rclone) -> Result<()> {
    let id_of =
        |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).ok().and_then(|v| v.get("id").cloned());
    let cfg = root.join("config");
    let ours = id_of(&std::fs::read(&cfg).map_err(|e| Error::io(&cfg, e))?);
    let tmp = root.join("tmp").join(format!("remote-config-{}", std::process::id()));
    // A failed download is an error: taking it for "no config" would overwrite another
    // repository's config on a transient failure.
    remote.download("config", &tmp)?;
    let bytes = std::fs::read(&tmp).map_err(|e| Error::io(&tmp, e));
    let _ = std::fs::remove_file(&tmp);
    let theirs = id_of(&bytes?);
    match (ours, theirs) {
        (Some(a), Some(b)) if a != b => Err(Error::Invalid(format!(
            "remote {} holds another cairn repository (its config has a different id): refusing to replace it; give each repository its own remote path",
            remote.name
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

/// Compares the remote inventory with the local one.
pub fn check(root: &Path, remote: &Rclone, exclude: &HashSet<String>) -> Result<RemoteCheck> {
    let state = SyncState::open(root)?;
    let synced = state.synced(&remote.name)?;
    let mut out = RemoteCheck { remote: remote.name.clone(), ..Default::default() };
    let mut on_remote: HashMap<String, RemoteFile> = HashMap::new();
    for f in remote.list()? {
        if on_remote.contains_key(&f.path) {
            out.duplicates.push(f.path.clone());
        }
        on_remote.insert(f.path.clone(), f);
    }
    let mut local = local_inventory(root)?;
    local.retain(|(r, _)| !exclude.contains(r));
    for (rel, size) in &local {
        out.checked += 1;
        match on_remote.get(rel) {
            None if synced.contains_key(rel) => out.missing.push(rel.clone()),
            None => out.pending.push(rel.clone()),
            Some(f) => {
                let m = state.md5(root, rel, *size)?;
                if f.size != *size || f.md5.as_ref().is_some_and(|h| *h != m) {
                    if synced.contains_key(rel) {
                        out.mismatched.push(rel.clone());
                    } else {
                        out.pending.push(rel.clone());
                        out.partial.push(rel.clone());
                    }
                }
            }
        }
    }
    let local_set: HashSet<&str> = local.iter().map(|(r, _)| r.as_str()).collect();
    out.extra = on_remote.keys().filter(|p| !local_set.contains(p.as_str())).cloned().collect();
    out.extra.sort();
    Ok(out)
}

/// Snapshot files (`snapshots/<id>`) that a remote's own retention does not keep. A remote
/// retention can only keep fewer snapshots than the local repository holds: a remote is a mirror,
/// and local prune decides which packs exist.
pub fn retention_exclusions(repo: &crate::repo::Repo, retention: &crate::ops::retention::Retention) -> Result<HashSet<String>> {
    let (all, _) = repo.snapshots()?;
    let mut by_type: BTreeMap<String, Vec<(crate::id::SnapshotId, crate::format::manifest::Snapshot)>> = BTreeMap::new();
    for (id, s) in all {
        by_type.entry(s.backup_type.clone()).or_default().push((id, s));
    }
    let now = chrono::Local::now().fixed_offset();
    let mut out = HashSet::new();
    for snaps in by_type.values() {
        for d in crate::ops::retention::apply(snaps, Some(retention), now) {
            if !d.keep {
                out.insert(format!("snapshots/{}", d.id));
            }
        }
    }
    Ok(out)
}
