//! `restore` and `cat`: manifest -> index -> pack -> open -> decompress -> check -> write.
//!
//! Safety rules (format-spec/restore.md, `safety`): every stored path is checked (relative, no
//! `..`, `.`, empty components or NUL) before use; no write goes through a symlink that exists in
//! the target (parents are checked with lstat, files are created with O_NOFOLLOW under a fresh
//! temporary name); symlinks are created last, so none of ours can redirect a later write. A file
//! is written to a temporary name beside its target, synced, and renamed over it: an existing file
//! is never destroyed before its replacement is whole. Stale SQLite sidecars (`-wal`, `-shm`,
//! `-journal`) beside a restored database are removed.
//!
//! Speed (`files`): directories are created as the tree is walked; small files are batched, each
//! batch's pack ranges read once and decoded in parallel, and a pool of writers fills and fsyncs
//! them side by side; large files stream window by window. Zero blocks are left as holes
//! (`sparse`). Symlinks, sidecar removal and directory metadata follow once every file is done.

mod files;
mod safety;
mod sparse;

use std::borrow::Cow;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use globset::GlobSet;

use crate::error::{Error, Result};
use crate::format::manifest::{check_safe_path, Node, NodeKind, Snapshot};
use crate::id::ChunkId;
use crate::repo::cache::Location;
use crate::repo::tree::ChunkList;
use crate::repo::{ChunkReader, Repo};

use files::{count_runs, write_file, Batcher, SMALL_FILE};
use safety::{remove_stale_sidecars, set_mtime, SafeDirs};

/// Chunks decoded in parallel per window. With one window decoding, one queued and one being
/// written, about three are in memory.
const WINDOW_BYTES: u64 = 4 << 20;
/// Chunks located per lookup while streaming a file: each lookup is one sorted pass over the
/// cache, which reads most of its pages again when the cache is larger than SQLite's page
/// cache, so batches are large (a 256 MiB database of 4 KiB pages in one; about 7 MB of
/// locations), not window-sized.
const LOCATE_BATCH: usize = 65536;
/// The first batch: about one window of 4 KiB pages, located quickly so decoding can start.
const FIRST_LOCATE: u64 = 1024;

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
    /// Range reads of pack files made for file content: one per run of chunks stored back to
    /// back in one pack, however many files share it.
    pub pack_reads: u64,
}

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

/// Resolves a file's chunk locations (see [`Repo::locate`]).
pub fn locate(repo: &Repo, chunks: &[ChunkId]) -> Result<Vec<(ChunkId, Location)>> {
    repo.locate(chunks)
}

/// Streams a node's content to `out`, decoding windows of chunks in parallel. Returns bytes written.
pub fn write_content(repo: &Repo, node: &Node, out: &mut (dyn Write + Send)) -> Result<u64> {
    stream_content(repo, node, None, out, &mut 0)
}

/// The ids at positions `range` of a file: `node`'s own, or those of the list holding them.
fn ids_at<'n>(node: &'n Node, list: Option<&mut ChunkList>, range: std::ops::Range<u64>) -> Result<Cow<'n, [ChunkId]>> {
    let Some(list) = list else {
        return Ok(Cow::Borrowed(&node.chunks[range.start as usize..range.end as usize]));
    };
    let mut ids = Vec::with_capacity((range.end - range.start) as usize);
    for i in range {
        ids.extend(list.get(i)?);
    }
    Ok(Cow::Owned(ids))
}

/// [`write_content`], adding the pack range reads it makes to `reads`; the chunks are in `list`
/// when given (a big file read from a spilling tree reader).
fn stream_content(
    repo: &Repo,
    node: &Node,
    mut list: Option<&mut ChunkList>,
    out: &mut (dyn Write + Send),
    reads: &mut u64,
) -> Result<u64> {
    let count = list.as_ref().map_or(node.chunks.len() as u64, |l| l.len());
    let reader: ChunkReader = repo.chunk_reader();
    let path = node.path_str();
    // Three stages side by side: this thread locates chunks in the cache (SQLite, one core) and
    // cuts windows; a decoding thread decodes each window in parallel; a writer thread writes
    // decoded windows. One-slot queues keep at most about three windows in memory.
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
        let (wtx, wrx) = crossbeam_channel::bounded::<Vec<(ChunkId, Location)>>(1);
        let decoder = scope.spawn(move || -> Result<()> {
            for window in wrx {
                let decoded = reader.read_many(&window).into_iter().collect::<Result<Vec<_>>>()?;
                if tx.send(decoded).is_err() {
                    break;
                }
            }
            Ok(())
        });
        // Chunks are located a batch at a time: the locations of a whole large file (a database
        // of 4 KiB pages has a quarter million per GiB) are not held at once. The first batch is
        // one window, so decoding starts while the next, larger batch is located.
        let mut failure = None;
        let mut window: Vec<(ChunkId, Location)> = Vec::new();
        let mut bytes = 0u64;
        let mut next = 0;
        let mut batch = FIRST_LOCATE;
        'located: while next < count {
            let end = (next + batch).min(count);
            batch = LOCATE_BATCH as u64;
            let more = match ids_at(node, list.as_deref_mut(), next..end).and_then(|ids| locate(repo, &ids)) {
                Ok(more) => more,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            next = end;
            for c in more {
                bytes += c.1.raw_len as u64;
                window.push(c);
                if bytes >= WINDOW_BYTES {
                    *reads += count_runs(&window);
                    if wtx.send(std::mem::take(&mut window)).is_err() {
                        break 'located;
                    }
                    bytes = 0;
                }
            }
        }
        if failure.is_none() && !window.is_empty() {
            *reads += count_runs(&window);
            let _ = wtx.send(window);
        }
        drop(wtx);
        let d = decoder.join().map_err(|_| Error::Invalid(format!("{path}: decoding thread panicked")))?;
        let w = writer.join().map_err(|_| Error::Invalid(format!("{path}: writer thread panicked")))?;
        match (failure, d) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(())) => w,
        }
    })?;
    if written != node.size {
        return Err(Error::corrupt(path, format!("restored {written} bytes, snapshot says {}", node.size)));
    }
    Ok(written)
}

/// Restores `snap` into `target`.
pub fn restore(repo: &Repo, snap: &Snapshot, target: &Path, opts: &RestoreOptions) -> Result<RestoreReport> {
    fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let target = fs::canonicalize(target).map_err(|e| Error::io(target, e))?;
    safety::remove_restore_leftovers(&target);
    let mut dirs = SafeDirs { target: target.clone(), known: HashSet::new() };
    let mut report = RestoreReport::default();
    let mut dir_times = Vec::new();
    let mut links = Vec::new();
    let am_root = unsafe { libc::geteuid() } == 0;
    let mut matched = 0u64;
    let mut written: HashSet<Vec<u8>> = HashSet::new();
    let mut databases: Vec<Vec<u8>> = Vec::new();
    let mut record = |report: &mut RestoreReport, node: &Node, r: Result<(u64, bool)>| match r {
        Ok((n, sqlite)) => {
            written.insert(node.path.clone());
            if sqlite {
                databases.push(node.path.clone());
            }
            report.files += 1;
            report.bytes += n;
        }
        Err(e) => report.errors.push((node.path_str(), e.to_string())),
    };
    // Every file is written (and its writer joined) before any symlink is created.
    std::thread::scope(|scope| -> Result<()> {
        let (mut batch, writers) = Batcher::start(scope, repo, am_root);
        let walked = (|| -> Result<()> {
            // A database's ids spill to tmp/ as the tree is read: 8 MiB per GiB otherwise.
            for node in repo.tree(snap)?.spilling(repo.store()) {
                let (node, mut list) = node?;
                if let Err(why) = check_safe_path(&node.path) {
                    report.errors.push((node.path_str(), format!("refused: {why}")));
                    continue;
                }
                if !included(&opts.include, &node.path) {
                    continue;
                }
                matched += 1;
                match node.kind {
                    NodeKind::Dir => match dirs.ensure(&node.path) {
                        Ok(p) => {
                            report.dirs += 1;
                            dir_times.push((p, node.mode, node.mtime_ns));
                        }
                        Err(e) => report.errors.push((node.path_str(), e.to_string())),
                    },
                    NodeKind::Symlink => links.push(node),
                    NodeKind::File => match dirs.slot(&node.path) {
                        Err(e) => report.errors.push((node.path_str(), e.to_string())),
                        Ok(p) if node.size <= SMALL_FILE && list.is_none() => batch.add(node, p)?,
                        Ok(p) => {
                            let mut reads = 0;
                            let r = write_file(&node, &p, am_root, |w| {
                                stream_content(repo, &node, list.as_mut(), w, &mut reads).map(|_| ())
                            });
                            report.pack_reads += reads;
                            record(&mut report, &node, r);
                        }
                    },
                }
            }
            Ok(())
        })();
        let sent = batch.finish();
        report.pack_reads += batch.pack_reads;
        drop(batch);
        for h in writers {
            let outcomes = h.join().map_err(|_| Error::Invalid("a restore writer thread panicked".into()))?;
            for o in outcomes {
                record(&mut report, &o.node, o.result);
            }
        }
        walked.and(sent)
    })?;
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
            std::os::unix::fs::symlink(OsStr::from_bytes(&node.target), &p).map_err(|e| Error::io(&p, e))?;
            if am_root {
                let _ = std::os::unix::fs::lchown(&p, Some(node.uid), Some(node.gid));
            }
            set_mtime(&p, node.mtime_ns).map_err(|e| Error::io(&p, e))?;
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
