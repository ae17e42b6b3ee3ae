//! The repository as a local directory: immutable files written to `tmp/`, fsynced, linked to
//! their final name (`link(2)` fails on an existing name, unlike `rename(2)`), the directory
//! fsynced (format-spec/ordering.md, "Making a file appear").
//!
//! Besides the [`Store`] trait, the local store offers what only a directory can: a temporary
//! file to stream a pack into and [`LocalStore::publish`] to give it its name (the pack writer),
//! atomic creation of a new repository, and the directories of local state (cache, history),
//! which are not repository objects.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{parse_name, same_name_check, FileKind, Handle, Stat, Store};
use crate::error::{Error, IoContext, Result};
use crate::id::PackId;

/// Open pack files kept for preads: restore and verify read many small ranges of few packs.
const OPEN_PACKS: usize = 64;

/// A repository directory on the local file system.
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
    // Shared by clones, so reader threads reuse one descriptor per pack (pread needs no seek
    // state). Packs are immutable, so a cached descriptor never shows stale content.
    open: Arc<Mutex<HashMap<PackId, Arc<File>>>>,
}

/// Fsyncs a directory so a rename or link inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    #[cfg(test)]
    FSYNCED.with(|f| f.borrow_mut().push(dir.to_path_buf()));
    File::open(dir).and_then(|d| d.sync_all()).ctx(dir)
}

#[cfg(test)]
thread_local! {
    /// Directories fsynced by this thread, in order (tests of the durability rules).
    static FSYNCED: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Creates `dir` if it is missing, and then fsyncs the new directory and its parent, so the
/// directory entry itself survives a crash before anything published in it is called durable
/// (format-spec/ordering.md, "Making a file appear"). Missing parents are created the same way.
fn ensure_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    ensure_dir_durable(parent)?;
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Another writer created it: it fsyncs it too, but its fsync may not have run yet.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(dir, e)),
    }
    fsync_dir(dir)?;
    fsync_dir(parent)
}

/// The writer of a `tmp/` entry as its name gives it (format-spec/ordering.md).
#[derive(Debug, PartialEq, Eq)]
pub struct TmpOwner {
    /// Its process id.
    pub pid: u32,
    /// Its start time (`None`: unknown).
    pub start: Option<u64>,
    /// Where its pid means a process ([`crate::util::pid_realm`]); `None` in names of older
    /// versions, which are judged as if written here.
    pub realm: Option<String>,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The writer of a `tmp/` entry, from its name: `<hex>.<pid>.<start time>.<realm>.<suffix>`
/// (start time 0: unknown; older versions wrote no realm), or `<what>-<pid>-<realm>.<ext>` and
/// the older `<what>-<pid>.<ext>` (verify's and restore-test's scratch databases, and their
/// SQLite sidecars). `None` for names without an owner.
pub fn tmp_owner(name: &str) -> Option<TmpOwner> {
    let parts: Vec<&str> = name.split('.').collect();
    if (parts.len() == 4 || parts.len() == 5) && is_hex(parts[0], 24) {
        let pid = parts[1].parse().ok()?;
        let start: u64 = parts[2].parse().ok()?;
        let realm = (parts.len() == 5).then(|| parts[3]).filter(|r| is_hex(r, 16)).map(str::to_string);
        return Some(TmpOwner { pid, start: (start != 0).then_some(start), realm });
    }
    let stem = parts.first()?;
    let (rest, last) = stem.rsplit_once('-')?;
    let (pid, realm) = match rest.rsplit_once('-') {
        Some((_, pid)) if is_hex(last, 16) => (pid, Some(last.to_string())),
        _ => (last, None),
    };
    Some(TmpOwner { pid: pid.parse().ok()?, start: None, realm })
}

/// `<what>-<pid>-<realm>.<ext>`: a scratch file in `tmp/` whose owner [`LocalStore::clean_tmp`]
/// can judge.
pub fn scratch_name(what: &str, ext: &str) -> String {
    format!("{what}-{}-{}.{ext}", std::process::id(), crate::util::pid_realm())
}

/// Bytes under `p` (a file or a directory tree), for reports.
fn dir_size(p: &Path) -> u64 {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::read_dir(p).map_or(0, |rd| rd.flatten().map(|e| dir_size(&e.path())).sum()),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn not_found(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::ObjectNotFound { what: path.display().to_string() }
    } else {
        Error::io(path, e)
    }
}

impl LocalStore {
    /// A store rooted at `root` (not checked).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into(), open: Arc::default() }
    }

    /// The repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `dir` is absent or an empty directory (where `init` and `clone` may create one).
    pub fn is_absent_or_empty(dir: &Path) -> Result<bool> {
        if !dir.exists() {
            return Ok(true);
        }
        Ok(fs::read_dir(dir).ctx(dir)?.next().is_none())
    }

    /// Creates the directory skeleton.
    pub fn create_layout(&self) -> Result<()> {
        for d in ["packs", "index", "snapshots", "keys", "locks", "tmp", "cache"] {
            let p = self.root.join(d);
            fs::create_dir_all(&p).ctx(&p)?;
        }
        for i in 0..256 {
            let p = self.root.join("packs").join(format!("{i:02x}"));
            fs::create_dir_all(&p).ctx(&p)?;
        }
        fsync_dir(&self.root.join("packs"))?;
        fsync_dir(&self.root)
    }

    /// Creates a repository at `dir` (absent or empty): `fill` writes its first files into a
    /// sibling temporary directory, which is fsynced and renamed into place, so a crash never
    /// leaves half a repository (format-spec/layout.md).
    pub fn create_atomically(dir: &Path, fill: impl FnOnce(&LocalStore) -> Result<()>) -> Result<LocalStore> {
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(parent).ctx(parent)?;
        let tmp = parent.join(format!(
            ".{}.cairn-init-{}",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("repo"),
            std::process::id()
        ));
        let store = LocalStore::new(&tmp);
        if let Err(e) = store.create_layout().and_then(|_| fill(&store)) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        fsync_dir(&tmp)?;
        if dir.exists() {
            fs::remove_dir(dir).ctx(dir)?;
        }
        fs::rename(&tmp, dir).ctx(dir)?;
        fsync_dir(parent)?;
        Ok(LocalStore::new(dir))
    }

    /// A directory of local state under the root (`cache`, `state`, `tmp`), created if needed.
    /// Its files (the SQLite index cache, the history, scratch files) are not repository objects:
    /// never synced, and rebuilt or recreated when lost.
    pub fn local_state_dir(&self, name: &str) -> Result<PathBuf> {
        let p = self.root.join(name);
        fs::create_dir_all(&p).ctx(&p)?;
        Ok(p)
    }

    /// Path of a file of `kind` named `name` (hex).
    pub fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        match kind {
            FileKind::Config => self.root.join("config"),
            FileKind::Pack => self.root.join("packs").join(&name[..2.min(name.len())]).join(name),
            _ => self.root.join(kind.dir()).join(name),
        }
    }

    /// Path of an object.
    pub fn handle_path(&self, h: Handle) -> PathBuf {
        self.root.join(h.rel_path())
    }

    /// A fresh temporary file in `tmp/`, opened for writing.
    pub fn temp_file(&self) -> Result<(PathBuf, File)> {
        let p = self.temp_name("tmp");
        let f = OpenOptions::new().write(true).read(true).create_new(true).open(&p).ctx(&p)?;
        Ok((p, f))
    }

    /// `tmp/<24 hex>.<pid>.<start time>.<realm>.<suffix>`: the writer's pid and start time are in the
    /// name so that [`LocalStore::clean_tmp`] can tell an orphan from a file being written.
    fn temp_name(&self, suffix: &str) -> PathBuf {
        let mut r = [0u8; 12];
        crate::util::os_random(&mut r);
        let start = crate::util::own_start_time().unwrap_or(0);
        let (pid, realm) = (std::process::id(), crate::util::pid_realm());
        self.root.join("tmp").join(format!("{}.{pid}.{start}.{realm}.{suffix}", hex::encode(r)))
    }

    /// Moves a fully written and fsynced temporary file to its final name without replacing an
    /// existing file. An existing file of the same name and size is taken as the same content
    /// (names are content hashes) and the temporary file is dropped.
    pub fn publish(&self, tmp: &Path, kind: FileKind, name: &str) -> Result<()> {
        let h = match kind {
            FileKind::Config => Handle::Config,
            _ => Handle::new(
                kind,
                parse_name(name).ok_or_else(|| Error::Invalid(format!("{name:?} is not a repository file name")))?,
            ),
        };
        self.publish_handle(tmp, h)
    }

    fn publish_handle(&self, tmp: &Path, h: Handle) -> Result<()> {
        let dst = self.handle_path(h);
        let dir = dst.parent().expect("has parent").to_path_buf();
        ensure_dir_durable(&dir)?;
        match fs::hard_link(tmp, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let a = fs::metadata(tmp).ctx(tmp)?.len();
                let b = fs::metadata(&dst).ctx(&dst)?.len();
                if let Err(e) = same_name_check(&dst.display().to_string(), b, a) {
                    let _ = fs::remove_file(tmp);
                    return Err(e);
                }
            }
            Err(e) => return Err(Error::io(&dst, e)),
        }
        fs::remove_file(tmp).ctx(tmp)?;
        fsync_dir(&dir)
    }

    /// Replaces the damaged local object `h` (content-named) with `from`'s copy, but only once
    /// that copy's bytes were checked against the name: it is downloaded under `tmp/`, hashed and
    /// fsynced, then the damaged file is removed and the good one published under the name (a
    /// name is never overwritten in place). Returns whether it was replaced; a copy that fails the
    /// check is dropped and leaves the local file as it was.
    pub fn replace_from(&self, from: &dyn Store, h: Handle) -> Result<bool> {
        let name = h
            .name()
            .filter(|_| h.is_content_named())
            .ok_or_else(|| Error::Invalid(format!("{h} is not named by its content")))?;
        let dir = self.temp_name("dir");
        fs::create_dir_all(&dir).ctx(&dir)?;
        let r = (|| {
            from.download_to(&[h], &dir)?;
            let p = dir.join(h.rel_path());
            let mut f = File::open(&p).map_err(|e| not_found(&p, e))?;
            let mut hasher = blake3::Hasher::new();
            std::io::copy(&mut f, &mut hasher).ctx(&p)?;
            if *hasher.finalize().as_bytes() != name {
                return Ok(false);
            }
            f.sync_all().ctx(&p)?;
            self.remove(h)?;
            self.publish_handle(&p, h)?;
            Ok(true)
        })();
        let _ = fs::remove_dir_all(&dir);
        r
    }

    /// Deletes leftovers of interrupted writes in `tmp/`: every entry whose writer (pid and start
    /// time in its name, see [`tmp_owner`]) is gone; entries without an owner in their name (older
    /// versions, other tools) when `unowned` is set (the caller holds the exclusive lock) or they
    /// are older than 24 hours. A writer of another realm (container, machine) cannot be judged
    /// by its pid: its entries go only under the exclusive lock once 24 hours old. Returns the
    /// entries and bytes removed. A missing `tmp/` is empty.
    pub fn clean_tmp(&self, unowned: bool) -> Result<(usize, u64)> {
        let dir = self.root.join("tmp");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let (mut n, mut bytes) = (0, 0);
        for e in rd {
            let e = e.ctx(&dir)?;
            let old = || {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|a| a >= std::time::Duration::from_secs(24 * 3600))
            };
            let orphan = match e.file_name().to_str().and_then(tmp_owner) {
                Some(o) if o.realm.as_deref().is_none_or(|r| r == crate::util::pid_realm()) => {
                    crate::util::process_gone(o.pid, o.start)
                }
                Some(_) => unowned && old(),
                None => unowned || old(),
            };
            if !orphan {
                continue;
            }
            let p = e.path();
            let size = dir_size(&p);
            let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
            match r {
                Ok(()) => {
                    n += 1;
                    bytes += size;
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => tracing::warn!("cannot remove leftover {}: {err}", p.display()),
            }
        }
        if n > 0 {
            tracing::info!("removed {n} leftovers of interrupted runs from {} ({bytes} bytes)", dir.display());
        }
        Ok((n, bytes))
    }

    fn pack_file(&self, id: PackId, path: &Path) -> Result<Arc<File>> {
        let mut m = self.open.lock().expect("not poisoned");
        if let Some(f) = m.get(&id) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(path).map_err(|e| not_found(path, e))?);
        if m.len() >= OPEN_PACKS {
            m.clear();
        }
        m.insert(id, f.clone());
        Ok(f)
    }

    fn list_dir(&self, kind: FileKind, dir: &Path, out: &mut Vec<Stat>) -> Result<()> {
        for e in fs::read_dir(dir).ctx(dir)? {
            let e = e.ctx(dir)?;
            let Some(name) = e.file_name().to_str().and_then(parse_name) else { continue };
            let h = Handle::new(kind, name);
            // A pack in the wrong `packs/<xy>/` is not at its name: not listed.
            if kind == FileKind::Pack && self.handle_path(h) != e.path() {
                continue;
            }
            // Removed between reading the directory and asking its size (a lock released by
            // another process): it no longer exists, so it is not listed.
            let size = match e.metadata() {
                Ok(m) => m.len(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(Error::io(e.path(), err)),
            };
            out.push(Stat { handle: h, size, md5: None });
        }
        Ok(())
    }
}

impl Store for LocalStore {
    fn location(&self, h: Handle) -> String {
        self.handle_path(h).display().to_string()
    }

    fn put(&self, h: Handle, bytes: &[u8]) -> Result<()> {
        let (tmp, mut f) = self.temp_file()?;
        let r = f.write_all(bytes).and_then(|_| f.sync_all()).ctx(&tmp);
        drop(f);
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.publish_handle(&tmp, h)
    }

    fn get(&self, h: Handle) -> Result<Vec<u8>> {
        let p = self.handle_path(h);
        fs::read(&p).map_err(|e| not_found(&p, e))
    }

    fn get_into(&self, h: Handle, buf: &mut Vec<u8>) -> Result<()> {
        use std::io::Read;
        let p = self.handle_path(h);
        let mut f = File::open(&p).map_err(|e| not_found(&p, e))?;
        buf.clear();
        if let Ok(m) = f.metadata() {
            // Exact: amortized growth doubled a 17 MB buffer to 34 MB for a pack slightly
            // larger than the last one (a third of verify's peak memory).
            buf.reserve_exact(m.len() as usize);
        }
        f.read_to_end(buf).map_err(|e| not_found(&p, e))?;
        Ok(())
    }

    fn get_range(&self, h: Handle, offset: u64, len: usize) -> Result<Vec<u8>> {
        let p = self.handle_path(h);
        let f = match h {
            Handle::Pack(id) => self.pack_file(id, &p)?,
            _ => Arc::new(File::open(&p).map_err(|e| not_found(&p, e))?),
        };
        let mut buf = vec![0u8; len];
        read_exact_at(&f, &mut buf, offset, &p)?;
        Ok(buf)
    }

    fn size(&self, h: Handle) -> Result<Option<u64>> {
        let p = self.handle_path(h);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn list(&self, kind: FileKind) -> Result<Vec<Stat>> {
        let mut out = Vec::new();
        match kind {
            FileKind::Config => {
                if let Some(size) = self.size(Handle::Config)? {
                    out.push(Stat { handle: Handle::Config, size, md5: None });
                }
            }
            FileKind::Pack => {
                let base = self.root.join("packs");
                for e in fs::read_dir(&base).ctx(&base)? {
                    let e = e.ctx(&base)?;
                    if e.file_type().ctx(e.path())?.is_dir() {
                        self.list_dir(kind, &e.path(), &mut out)?;
                    }
                }
            }
            // Repositories written before verification files have no such directory.
            FileKind::Verification if !self.root.join(kind.dir()).exists() => {}
            _ => self.list_dir(kind, &self.root.join(kind.dir()), &mut out)?,
        }
        out.sort_by_key(|s| s.handle);
        Ok(out)
    }

    fn remove(&self, h: Handle) -> Result<()> {
        let p = self.handle_path(h);
        if let Handle::Pack(id) = h {
            self.open.lock().expect("not poisoned").remove(&id);
        }
        match fs::remove_file(&p) {
            Ok(()) => fsync_dir(p.parent().expect("has parent")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn local_dir(&self) -> Option<&Path> {
        Some(&self.root)
    }

    /// Downloads into a directory under `tmp/` (one rclone run from a remote), then fsyncs and
    /// publishes each file as `put` would.
    fn copy_in(&self, from: &dyn Store, handles: &[Handle]) -> Result<()> {
        if handles.is_empty() {
            return Ok(());
        }
        let dir = self.temp_name("dir");
        fs::create_dir_all(&dir).ctx(&dir)?;
        let r = (|| {
            from.download_to(handles, &dir)?;
            for h in handles {
                let p = dir.join(h.rel_path());
                let f = File::open(&p).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Error::ObjectNotFound { what: from.location(*h) },
                    _ => Error::io(&p, e),
                })?;
                f.sync_all().ctx(&p)?;
                self.publish_handle(&p, *h)?;
            }
            Ok(())
        })();
        let _ = fs::remove_dir_all(&dir);
        r
    }
}

/// `pread` that treats a short read as corruption of `path`.
pub fn read_exact_at(f: &File, buf: &mut [u8], offset: u64, path: &Path) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                return Err(Error::corrupt(
                    path.display().to_string(),
                    format!("truncated: wanted {} bytes at offset {offset}", buf.len()),
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_keeps_the_existing_file_and_drops_the_temporary_one() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path());
        s.create_layout().unwrap();
        let name = hex::encode([7u8; 32]);
        for content in [&b"first"[..], b"other"] {
            let (tmp, mut f) = s.temp_file().unwrap();
            f.write_all(content).unwrap();
            f.sync_all().unwrap();
            s.publish(&tmp, FileKind::Pack, &name).unwrap();
            assert!(!tmp.exists());
        }
        assert_eq!(fs::read(s.path(FileKind::Pack, &name)).unwrap(), b"first");
        let (tmp, mut f) = s.temp_file().unwrap();
        f.write_all(b"longer content").unwrap();
        assert!(matches!(s.publish(&tmp, FileKind::Pack, &name), Err(Error::Corrupt { .. })));
        assert!(fs::read_dir(d.path().join("tmp")).unwrap().next().is_none(), "temporary file left behind");
        assert!(s.publish(&tmp, FileKind::Pack, "not-a-name").is_err());
    }

    #[test]
    fn a_new_pack_directory_is_fsynced_with_its_parent_before_the_pack_in_it() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path());
        s.create_layout().unwrap();
        let h = Handle::Pack(PackId([0xab; 32]));
        let dir = d.path().join("packs/ab");
        fs::remove_dir(&dir).unwrap();
        FSYNCED.with(|f| f.borrow_mut().clear());
        s.put(h, b"pack").unwrap();
        let synced = FSYNCED.with(|f| f.borrow().clone());
        assert_eq!(synced, vec![dir.clone(), d.path().join("packs"), dir.clone()], "new dir, packs/, then the link");
        // An existing directory is not fsynced again before the link.
        FSYNCED.with(|f| f.borrow_mut().clear());
        let mut other = [0xab; 32];
        other[31] = 1;
        s.put(Handle::Pack(PackId(other)), b"other").unwrap();
        assert_eq!(FSYNCED.with(|f| f.borrow().clone()), vec![dir]);
    }

    #[test]
    fn tmp_entries_of_gone_writers_are_removed_and_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path());
        s.create_layout().unwrap();
        let (mine, _f) = s.temp_file().unwrap();
        let name = mine.file_name().unwrap().to_str().unwrap().to_string();
        let me = TmpOwner {
            pid: std::process::id(),
            start: crate::util::own_start_time(),
            realm: Some(crate::util::pid_realm().to_string()),
        };
        assert_eq!(tmp_owner(&name), Some(me));
        let dead = d.path().join("tmp").join(format!("{}.{}.5.tmp", "ab".repeat(12), 0x7fff_fff0u32));
        let reused = d.path().join("tmp").join(format!(
            "{}.{}.{}.tmp",
            "cd".repeat(12),
            std::process::id(),
            crate::util::own_start_time().unwrap_or(0) + 1
        ));
        let scratch = d.path().join("tmp").join(format!("verify-{}.sqlite-wal", 0x7fff_fff0u32));
        let legacy = d.path().join("tmp").join(format!("{}.tmp", "ef".repeat(12)));
        for p in [&dead, &reused, &scratch, &legacy] {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(s.clean_tmp(false).unwrap().0, 3);
        assert!(mine.exists() && legacy.exists() && !dead.exists() && !reused.exists() && !scratch.exists());
        assert_eq!(s.clean_tmp(true).unwrap().0, 1, "unowned entries go under the exclusive lock");
        assert!(mine.exists() && !legacy.exists());
    }

    #[test]
    fn tmp_entries_of_another_container_or_machine_are_not_judged_by_pid() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path());
        s.create_layout().unwrap();
        let tmp = d.path().join("tmp");
        // A pid this process cannot see, written in another realm: kept, even under the lock.
        let other = "0123456789abcdef";
        assert_ne!(other, crate::util::pid_realm());
        let foreign = tmp.join(format!("{}.{}.5.{other}.tmp", "ab".repeat(12), 0x7fff_fff0u32));
        let foreign_scratch = tmp.join(format!("verify-{}-{other}.sqlite", 0x7fff_fff0u32));
        let here = tmp.join(format!("{}.{}.5.{}.tmp", "cd".repeat(12), 0x7fff_fff0u32, crate::util::pid_realm()));
        let here_scratch = tmp.join(format!("verify-{}-{}.sqlite-wal", 0x7fff_fff0u32, crate::util::pid_realm()));
        for p in [&foreign, &foreign_scratch, &here, &here_scratch] {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(
            tmp_owner(foreign_scratch.file_name().unwrap().to_str().unwrap()).unwrap().realm.as_deref(),
            Some(other)
        );
        assert_eq!(s.clean_tmp(false).unwrap().0, 2);
        assert!(foreign.exists() && foreign_scratch.exists() && !here.exists() && !here_scratch.exists());
        assert_eq!(s.clean_tmp(true).unwrap().0, 0, "a day has not passed");
        assert!(foreign.exists() && foreign_scratch.exists());
        assert!(scratch_name("verify", "sqlite").ends_with(&format!("-{}.sqlite", crate::util::pid_realm())));
    }

    #[test]
    fn cached_pack_handles_are_dropped_on_remove() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path());
        s.create_layout().unwrap();
        let h = Handle::Pack(PackId([1; 32]));
        s.put(h, b"0123456789").unwrap();
        assert_eq!(s.get_range(h, 2, 3).unwrap(), b"234");
        s.remove(h).unwrap();
        assert!(matches!(s.get_range(h, 2, 3), Err(Error::ObjectNotFound { .. })));
        s.put(h, b"abcdefghij").unwrap();
        assert_eq!(s.get_range(h, 2, 3).unwrap(), b"cde");
    }

    #[test]
    fn atomic_creation_leaves_no_temporary_directory() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("repo");
        let s = LocalStore::create_atomically(&dir, |s| s.put(Handle::Config, b"{}\n")).unwrap();
        assert_eq!(s.get(Handle::Config).unwrap(), b"{}\n");
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("repo")]);
        assert!(!LocalStore::is_absent_or_empty(&dir).unwrap());
        assert!(LocalStore::is_absent_or_empty(&d.path().join("nothing")).unwrap());
    }
}
