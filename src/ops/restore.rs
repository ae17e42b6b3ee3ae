//! `restore` and `cat`: manifest -> index -> pack -> open -> decompress -> check -> write.
//!
//! Safety rules (format-spec/restore.md): every stored path is checked (relative, no `..`, `.`,
//! empty components or NUL) before use; no write goes through a symlink that exists in the
//! target (parents are checked with lstat, files are opened with O_NOFOLLOW after removing a
//! symlink in their place); symlinks are created last, so none of ours can redirect a later write.
//! A file is written to a temporary name beside its target, synced, and renamed over it: an
//! existing file is never destroyed before its replacement is whole. Stale SQLite sidecars
//! (`-wal`, `-shm`, `-journal`) beside a restored database are removed.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use globset::GlobSet;

use crate::error::{Error, IoContext, Result};
use crate::format::manifest::{check_safe_path, Node, NodeKind, Snapshot};
use crate::id::ChunkId;
use crate::repo::cache::Location;
use crate::repo::{ChunkReader, Repo};

/// Chunks decoded in parallel per window.
const WINDOW_BYTES: u64 = 8 << 20;

/// Restore options.
#[derive(Default)]
pub struct RestoreOptions {
    /// Only nodes matching (or under a directory matching) one of these.
    pub include: Option<GlobSet>,
    /// The patterns `include` was built from, named when they match nothing.
    pub include_patterns: Vec<String>,
}

/// What a restore did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Entries that failed, with the reason.
    pub errors: Vec<(String, String)>,
    /// Stale SQLite sidecars (`-wal`, `-shm`, `-journal`) removed from the target because a
    /// database was restored beside them and the restore did not write them.
    pub sidecars_removed: Vec<String>,
}

/// The first bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Files SQLite replays into (or pairs with) a database at open.
const SQLITE_SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

fn included(include: &Option<GlobSet>, path: &[u8]) -> bool {
    let Some(g) = include else { return true };
    let mut prefix = Vec::new();
    for (i, comp) in path.split(|&c| c == b'/').enumerate() {
        if i > 0 {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(comp);
        if g.is_match(Path::new(OsStr::from_bytes(&prefix))) {
            return true;
        }
    }
    false
}

/// Creates the directories leading to `rel` under `target`, refusing symlinks and non-dirs.
struct SafeDirs {
    target: PathBuf,
    known: HashSet<Vec<u8>>,
}

impl SafeDirs {
    fn ensure(&mut self, rel: &[u8]) -> Result<PathBuf> {
        let mut cur = self.target.clone();
        let mut prefix: Vec<u8> = Vec::new();
        for comp in rel.split(|&c| c == b'/') {
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(comp);
            cur.push(OsStr::from_bytes(comp));
            if self.known.contains(&prefix) {
                continue;
            }
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_dir() => remove_restore_leftovers(&cur),
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::Invalid(format!(
                        "{}: is a symlink in the target; refusing to write through it",
                        cur.display()
                    )))
                }
                Ok(_) => return Err(Error::Invalid(format!("{}: exists and is not a directory", cur.display()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir(&cur).ctx(&cur)?,
                Err(e) => return Err(Error::io(&cur, e)),
            }
            self.known.insert(prefix.clone());
        }
        Ok(cur)
    }
}

impl SafeDirs {
    /// The target path for a file or symlink at `rel`, its parent directories made safely. A
    /// directory in the way is an error; anything else there is left for the caller to replace
    /// by rename (which never follows a symlink or writes through a hard link).
    fn slot(&mut self, rel: &[u8]) -> Result<PathBuf> {
        let parent = match parent_of(rel) {
            Some(p) => self.ensure(p)?,
            None => self.target.clone(),
        };
        let name = rel.rsplit(|&c| c == b'/').next().unwrap_or(rel);
        let p = parent.join(OsStr::from_bytes(name));
        if let Ok(m) = fs::symlink_metadata(&p) {
            if m.file_type().is_dir() {
                return Err(Error::Invalid(format!("{}: a directory is in the way", p.display())));
            }
        }
        Ok(p)
    }

    /// [`SafeDirs::slot`], with whatever non-directory stands there removed.
    fn clear_slot(&mut self, rel: &[u8]) -> Result<PathBuf> {
        let p = self.slot(rel)?;
        if fs::symlink_metadata(&p).is_ok() {
            fs::remove_file(&p).ctx(&p)?;
        }
        Ok(p)
    }
}

/// A fresh name beside `p`: `.<name>.cairn-restore-<16 hex>`, with `<name>` cut to its first
/// 223 bytes so the whole stays within NAME_MAX (255) for any name that fits itself.
fn temp_beside(p: &Path) -> PathBuf {
    let mut rnd = [0u8; 8];
    crate::util::os_random(&mut rnd);
    let base = p.file_name().unwrap_or_default().as_bytes();
    let mut name = vec![b'.'];
    name.extend_from_slice(&base[..base.len().min(223)]);
    name.extend_from_slice(format!(".cairn-restore-{}", hex::encode(rnd)).as_bytes());
    p.with_file_name(OsStr::from_bytes(&name))
}

/// Removes the temporary files (`.<name>.cairn-restore-<16 hex>`, see [`temp_beside`]) that a
/// killed restore left in `dir`, an existing directory this restore writes into: a completed
/// restore renames every one away, a killed one leaves a partial copy that nothing else would
/// ever remove (a 300 MB file killed half-way left 150 MB behind every time).
fn remove_restore_leftovers(dir: &Path) {
    const MARK: &[u8] = b".cairn-restore-";
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let b = name.as_bytes();
        let Some(at) = b.len().checked_sub(MARK.len() + 16) else { continue };
        let ours = b[0] == b'.'
            && at > 1
            && b[at..].starts_with(MARK)
            && b[at + MARK.len()..].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
        if ours && e.file_type().is_ok_and(|t| t.is_file()) {
            let p = e.path();
            match fs::remove_file(&p) {
                Ok(()) => tracing::info!(path = %p.display(), "removed a temporary file of an interrupted restore"),
                Err(err) => {
                    tracing::warn!(path = %p.display(), %err, "cannot remove a temporary file of an interrupted restore")
                }
            }
        }
    }
}

/// Writes `node` to a temporary file beside `p`, gives it mode, owner and mtime, syncs it and
/// renames it over `p`. On any error the temporary file is removed and `p` is untouched.
/// Returns the bytes written and whether the content starts with the SQLite header.
fn write_file(repo: &Repo, node: &Node, p: &Path, am_root: bool) -> Result<(u64, bool)> {
    let tmp = temp_beside(p);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .ctx(&tmp)?;
    let r: Result<(u64, bool)> = (|| {
        let n = {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut f);
            let n = write_content(repo, node, &mut w)?;
            w.flush().ctx(&tmp)?;
            n
        };
        let mut head = [0u8; 16];
        let sqlite = n >= 16 && f.read_exact_at(&mut head, 0).is_ok() && &head == SQLITE_HEADER;
        if am_root {
            let _ = std::os::unix::fs::fchown(&f, Some(node.uid), Some(node.gid));
        }
        f.set_permissions(fs::Permissions::from_mode(node.mode & 0o7777)).ctx(&tmp)?;
        f.sync_all().ctx(&tmp)?;
        set_mtime(&tmp, node.mtime_ns).ctx(&tmp)?;
        fs::rename(&tmp, p).ctx(p)?;
        Ok((n, sqlite))
    })();
    if r.is_err() {
        drop(f);
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// Removes `<db>-wal`, `-shm` and `-journal` beside a restored database unless this restore
/// wrote them: SQLite would replay a stale one into the restored database.
fn remove_stale_sidecars(dirs: &mut SafeDirs, db_rel: &[u8], written: &HashSet<Vec<u8>>, report: &mut RestoreReport) {
    for suffix in SQLITE_SIDECARS {
        let rel = [db_rel, suffix.as_bytes()].concat();
        if written.contains(&rel) {
            continue;
        }
        let shown = String::from_utf8_lossy(&rel).into_owned();
        let r: Result<bool> = (|| {
            let p = dirs.slot(&rel)?;
            match fs::symlink_metadata(&p) {
                Ok(_) => {
                    fs::remove_file(&p).ctx(&p)?;
                    Ok(true)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(Error::io(&p, e)),
            }
        })();
        match r {
            Ok(true) => {
                tracing::warn!(
                    "removed stale SQLite sidecar {shown}: not in the snapshot, it would be replayed into the restored database"
                );
                report.sidecars_removed.push(shown);
            }
            Ok(false) => {}
            Err(e) => report.errors.push((shown, format!("stale SQLite sidecar not removed: {e}"))),
        }
    }
}

fn parent_of(path: &[u8]) -> Option<&[u8]> {
    path.iter().rposition(|&c| c == b'/').map(|i| &path[..i])
}

/// Sets atime and mtime with `utimensat(AT_SYMLINK_NOFOLLOW)`: it never follows a symlink and
/// needs no `open()`, so it works on entries whose restored mode denies their owner read access
/// (`filetime::set_file_times` opens the path, which fails on mode 000 files and directories).
fn set_mtime(path: &Path, mtime_ns: i64) -> std::io::Result<()> {
    let t = filetime::FileTime::from_unix_time(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(path, t, t)
}

/// Resolves a file's chunk locations (see [`Repo::locate`]).
pub fn locate(repo: &Repo, chunks: &[ChunkId]) -> Result<Vec<(ChunkId, Location)>> {
    repo.locate(chunks)
}

/// Streams a node's content to `out`, decoding windows of chunks in parallel. Returns bytes written.
pub fn write_content(repo: &Repo, node: &Node, out: &mut (dyn Write + Send)) -> Result<u64> {
    let reader: ChunkReader = repo.chunk_reader();
    let locs = locate(repo, &node.chunks)?;
    let path = node.path_str();
    // Decoding window N+1 overlaps writing window N: a writer thread takes decoded windows from
    // a one-slot queue, so at most two windows are in memory.
    let written = std::thread::scope(|scope| -> Result<u64> {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<Vec<u8>>>(1);
        let path_w = path.clone();
        let writer = scope.spawn(move || -> Result<u64> {
            let mut n = 0u64;
            for window in rx {
                for d in window {
                    out.write_all(&d).map_err(|e| Error::io(&path_w, e))?;
                    n += d.len() as u64;
                }
            }
            Ok(n)
        });
        let mut i = 0;
        let mut failure = None;
        while i < locs.len() {
            let mut j = i;
            let mut bytes = 0u64;
            while j < locs.len() && (j == i || bytes < WINDOW_BYTES) {
                bytes += locs[j].1.raw_len as u64;
                j += 1;
            }
            match reader.read_many(&locs[i..j]).into_iter().collect::<Result<Vec<_>>>() {
                Ok(window) => {
                    if tx.send(window).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            i = j;
        }
        drop(tx);
        let w = writer.join().map_err(|_| Error::Invalid(format!("{path}: writer thread panicked")))?;
        match failure {
            Some(e) => Err(e),
            None => w,
        }
    })?;
    if written != node.size {
        return Err(Error::corrupt(path, format!("restored {written} bytes, snapshot says {}", node.size)));
    }
    Ok(written)
}

/// Restores `snap` into `target`.
pub fn restore(repo: &Repo, snap: &Snapshot, target: &Path, opts: &RestoreOptions) -> Result<RestoreReport> {
    fs::create_dir_all(target).ctx(target)?;
    let target = fs::canonicalize(target).ctx(target)?;
    remove_restore_leftovers(&target);
    let mut dirs = SafeDirs { target: target.clone(), known: HashSet::new() };
    let mut report = RestoreReport::default();
    let mut dir_times = Vec::new();
    let mut links = Vec::new();
    let am_root = unsafe { libc::geteuid() } == 0;
    let mut matched = 0u64;
    let mut written: HashSet<Vec<u8>> = HashSet::new();
    let mut databases: Vec<Vec<u8>> = Vec::new();
    for node in repo.tree(snap)? {
        let node = node?;
        if let Err(why) = check_safe_path(&node.path) {
            report.errors.push((node.path_str(), format!("refused: {why}")));
            continue;
        }
        if !included(&opts.include, &node.path) {
            continue;
        }
        matched += 1;
        let r: Result<()> = (|| {
            match node.kind {
                NodeKind::Dir => {
                    let p = dirs.ensure(&node.path)?;
                    report.dirs += 1;
                    dir_times.push((p, node.mode, node.mtime_ns));
                }
                NodeKind::Symlink => links.push(node.clone()),
                NodeKind::File => {
                    let p = dirs.slot(&node.path)?;
                    let (n, sqlite) = write_file(repo, &node, &p, am_root)?;
                    written.insert(node.path.clone());
                    if sqlite {
                        databases.push(node.path.clone());
                    }
                    report.files += 1;
                    report.bytes += n;
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            report.errors.push((node.path_str(), e.to_string()));
        }
    }
    if matched == 0 && opts.include.is_some() {
        return Err(Error::NotFound(format!(
            "--include {}: matches nothing in the snapshot; nothing was restored",
            opts.include_patterns.join(", ")
        )));
    }
    for node in links {
        let r: Result<()> = (|| {
            let p = dirs.clear_slot(&node.path)?;
            written.insert(node.path.clone());
            std::os::unix::fs::symlink(OsStr::from_bytes(&node.target), &p).ctx(&p)?;
            if am_root {
                let _ = std::os::unix::fs::lchown(&p, Some(node.uid), Some(node.gid));
            }
            set_mtime(&p, node.mtime_ns).ctx(&p)?;
            report.symlinks += 1;
            Ok(())
        })();
        if let Err(e) = r {
            report.errors.push((node.path_str(), e.to_string()));
        }
    }
    for db in &databases {
        remove_stale_sidecars(&mut dirs, db, &written, &mut report);
    }
    // Deepest first, so setting a parent's mtime is not undone by creating its children.
    for (p, mode, mtime) in dir_times.into_iter().rev() {
        let _ = fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777));
        if let Err(e) = set_mtime(&p, mtime) {
            report.errors.push((p.display().to_string(), e.to_string()));
        }
    }
    Ok(report)
}

/// Finds one node by path.
pub fn find_node(repo: &Repo, snap: &Snapshot, path: &str) -> Result<Node> {
    let want = path.trim_matches('/').as_bytes();
    for n in repo.tree(snap)? {
        let n = n?;
        if n.path == want {
            return Ok(n);
        }
    }
    Err(Error::NotFound(format!("{path}: not in the snapshot")))
}
