//! Reading a snapshot's source: the file-tree walk (sorted, with excludes, metadata capture and
//! the parent's unchanged files reused), or one byte stream. A thread walks and sends batches of
//! events (nodes and chunk bytes, a few MiB at a time) over a bounded channel, in tree order.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use globset::GlobSet;

use crate::error::{Error, Result};
use crate::format::chunker::{Cutter, StreamChunker};
use crate::format::manifest::{check_safe_path, Node, NodeError, NodeKind};
use crate::id::ChunkId;
use crate::store::spill::ChunkList;

mod livedb;
mod prev;

use prev::{PrevTree, Reused};

/// Bytes of chunk data per batch handed from the walker to the hashing stage. Up to four batches
/// are alive at once (one filling, two queued, one being stored); 1 MiB is 256 database pages,
/// enough to keep both cores busy, and measured no slower than 2 MiB.
const BATCH_BYTES: usize = 1 << 20;
/// Attempts at reading a file that changes underneath us.
const READ_ATTEMPTS: usize = 3;
/// A file whose mtime or ctime is this close to the start of its read (or later) is read a second
/// time and compared: a rewrite within one timestamp tick (a few ms on Linux, 2 s on FAT, more
/// with a skewed NFS server) changes neither, so only the content can tell.
const RECENT_NS: i64 = 5_000_000_000;

/// What to snapshot.
pub enum Source {
    /// Files and directories.
    Paths(Vec<PathBuf>),
    /// A byte stream stored as one file called `name`.
    Reader {
        /// File name inside the snapshot.
        name: String,
        /// The stream.
        reader: Box<dyn Read + Send>,
    },
    /// Several streams (file name, stream), stored as files side by side, read in name order
    /// (a database dump and its server's globals).
    Streams(Vec<(String, Box<dyn Read + Send>)>),
}

/// One step of the walk, in tree order.
pub(crate) enum Ev {
    /// A directory, a symlink, or a file whose parent-snapshot chunks are reused.
    Node(Node),
    /// A file whose parent-snapshot chunks are reused from the list holding them.
    Listed(Node, ChunkList),
    /// A file whose content follows as `Chunk`s, then `FileEnd`.
    FileStart(Node),
    /// The next chunk of the current file.
    Chunk(Vec<u8>),
    /// The current file ended after `size` bytes.
    FileEnd { size: u64, outcome: FileOutcome },
    /// An entry that could not be read (recorded in the snapshot).
    Error(NodeError),
    /// A fact about the source to record in the snapshot (`source`), e.g. a consistent SQLite copy.
    Fact(String, String),
}

/// What the walker sends: a batch of events, or the error that ends the walk.
pub(crate) type Batch = Result<Vec<Ev>>;

/// How a file read ended.
pub(crate) enum FileOutcome {
    /// Read whole and stable: keep it.
    Stored,
    /// Changed while being read: drop what was sent, a new `FileStart` follows.
    Retry,
    /// Given up on, with the reason.
    Failed(String),
}

/// A node of the parent snapshot's tree, and the list holding its chunks when there were too
/// many to hold (`repo::TreeReader::spilling`).
pub(crate) type ParentNode = (Node, Option<ChunkList>);
/// The parent snapshot's tree, read in tree order.
pub(crate) type ParentTree = Box<dyn Iterator<Item = Result<ParentNode>> + Send>;
/// Whether a chunk is still stored in the repository.
pub(crate) type IsStored = Box<dyn Fn(&ChunkId) -> bool + Send>;

/// How to walk.
pub(crate) struct WalkOptions {
    /// Cuts file content into chunks.
    pub cutter: Cutter,
    /// Cut SQLite files at page boundaries.
    pub sqlite_detect: bool,
    /// Read every file even if it looks unchanged.
    pub force_read: bool,
    /// Paths matching these are skipped (matched against the in-snapshot path).
    pub excludes: Option<GlobSet>,
    /// The parent snapshot's tree: files unchanged since it reuse its chunks.
    pub parent: Option<ParentTree>,
    /// Without it, no file counts as unchanged.
    pub is_stored: Option<IsStored>,
    /// Modification time recorded for a stream source.
    pub stream_mtime_ns: i64,
    /// Permission bits recorded for a stream source (0o600 when unset).
    pub stream_mode: Option<u32>,
    /// Where consistent copies of SQLite databases met in the walk are made (the repository's
    /// `tmp/`).
    pub sqlite_tmp: PathBuf,
    /// A directory never descended into: the repository itself, when it lies inside a backed-up
    /// tree (it would otherwise store its own packs, cache and history, growing every run).
    pub skip_dir: Option<PathBuf>,
}

/// Resolved paths of a source.
pub(crate) struct Roots {
    /// (absolute path, name in the snapshot), sorted by name.
    pub roots: Vec<(PathBuf, Vec<u8>)>,
    /// What the snapshot records as its paths.
    pub recorded: Vec<String>,
}

/// Checks a source before anything is locked or written: a missing path, two paths that would
/// get the same name, or a bad stream name is a clean error.
pub(crate) fn resolve(source: &Source) -> Result<Roots> {
    match source {
        Source::Paths(paths) => {
            if paths.is_empty() {
                return Err(Error::Invalid("no paths given".into()));
            }
            let mut v = Vec::new();
            for p in paths {
                std::fs::symlink_metadata(p).map_err(|e| Error::io(p, e))?;
                v.push(source_root(p)?);
            }
            v.sort_by(|a, b| a.1.cmp(&b.1));
            for w in v.windows(2) {
                if w[0].1 == w[1].1 {
                    return Err(Error::Invalid(format!(
                        "{} and {} would both be stored as {:?}; snapshot them separately",
                        w[0].0.display(),
                        w[1].0.display(),
                        String::from_utf8_lossy(&w[0].1)
                    )));
                }
            }
            let recorded = v.iter().map(|(abs, _)| abs.display().to_string()).collect();
            Ok(Roots { roots: v, recorded })
        }
        Source::Reader { name, .. } => {
            stream_name(name)?;
            Ok(Roots { roots: Vec::new(), recorded: vec![format!("<stdin>/{name}")] })
        }
        Source::Streams(streams) => {
            let mut names: Vec<&String> = streams.iter().map(|(n, _)| n).collect();
            names.sort();
            for (i, name) in names.iter().enumerate() {
                stream_name(name)?;
                if i > 0 && names[i - 1] == *name {
                    return Err(Error::Invalid(format!("two streams named {name:?}")));
                }
            }
            Ok(Roots { roots: Vec::new(), recorded: names.iter().map(|n| format!("<stdin>/{n}")).collect() })
        }
    }
}

fn stream_name(name: &str) -> Result<()> {
    check_safe_path(name.as_bytes()).map_err(|e| Error::Invalid(format!("stdin name {name:?}: {e}")))?;
    if name.contains('/') {
        return Err(Error::Invalid(format!("stdin name {name:?} must not contain '/'")));
    }
    Ok(())
}

/// Starts the walk of `source` (resolved to `roots`) on its own thread. Dropping the receiver
/// stops it. A panic of the thread ends the stream early: the caller must treat a thread that
/// did not join cleanly as an incomplete source.
pub(crate) fn spawn(source: Source, roots: Roots, opts: WalkOptions) -> (Receiver<Batch>, JoinHandle<()>) {
    let (tx, rx): (Sender<Batch>, Receiver<Batch>) = bounded(2);
    let handle = std::thread::spawn(move || {
        let mut w = Walker {
            tx,
            batch: Vec::new(),
            batch_bytes: 0,
            cutter: opts.cutter,
            sqlite_detect: opts.sqlite_detect,
            prev: PrevTree::new(opts.parent, opts.is_stored, opts.force_read),
            excludes: opts.excludes,
            sqlite_tmp: opts.sqlite_tmp,
            skip_dir: opts.skip_dir.and_then(|d| std::fs::metadata(&d).ok().map(|m| (d, (m.dev(), m.ino())))),
            dbs: Default::default(),
            db_copies: 0,
        };
        match source {
            Source::Paths(_) => {
                for (abs, name) in roots.roots {
                    if !w.walk(&abs, name, None) {
                        return;
                    }
                }
                if w.db_copies > 0 && !w.emit(Ev::Fact("sqlite.copies".into(), w.db_copies.to_string())) {
                    return;
                }
            }
            Source::Reader { name, reader } => {
                if !w.stream(name, reader, opts.stream_mtime_ns, opts.stream_mode) {
                    return;
                }
            }
            Source::Streams(mut streams) => {
                streams.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, reader) in streams {
                    if !w.stream(name, reader, opts.stream_mtime_ns, opts.stream_mode) {
                        return;
                    }
                }
            }
        }
        w.flush();
    });
    (rx, handle)
}

/// Normalizes a source path lexically and returns (absolute path, name in the snapshot).
fn source_root(p: &Path) -> Result<(PathBuf, Vec<u8>)> {
    let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
    let mut norm = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                norm.pop();
            }
            Component::CurDir => {}
            other => norm.push(other.as_os_str()),
        }
    }
    let name = norm
        .file_name()
        .ok_or_else(|| {
            Error::Invalid(format!("{}: cannot snapshot a file system root; name a directory below it", p.display()))
        })?
        .as_bytes()
        .to_vec();
    Ok((norm, name))
}

fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn node_from_meta(path: Vec<u8>, kind: NodeKind, m: &std::fs::Metadata) -> Node {
    Node {
        path,
        kind,
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        inode: m.ino(),
        size: if kind == NodeKind::File { m.size() } else { 0 },
        target: Vec::new(),
        chunks: Vec::new(),
    }
}

struct Walker {
    tx: Sender<Batch>,
    batch: Vec<Ev>,
    batch_bytes: usize,
    cutter: Cutter,
    sqlite_detect: bool,
    prev: PrevTree,
    excludes: Option<GlobSet>,
    /// Where SQLite copies go.
    sqlite_tmp: PathBuf,
    /// The directory not descended into, with its device and inode (met under any name).
    skip_dir: Option<(PathBuf, (u64, u64))>,
    /// SQLite databases met so far (their `-wal`, `-shm`, `-journal` are not stored).
    dbs: std::collections::HashSet<PathBuf>,
    /// Databases stored as consistent copies.
    db_copies: u64,
}

impl Walker {
    fn emit(&mut self, ev: Ev) -> bool {
        if let Ev::Chunk(c) = &ev {
            self.batch_bytes += c.len();
        }
        self.batch.push(ev);
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= 8192 {
            return self.flush();
        }
        true
    }

    fn flush(&mut self) -> bool {
        let b = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        b.is_empty() || self.tx.send(Ok(b)).is_ok()
    }

    fn error(&mut self, path: &[u8], message: String) -> bool {
        tracing::warn!("{}: {message}", String::from_utf8_lossy(path));
        self.emit(Ev::Error(NodeError { path: String::from_utf8_lossy(path).into_owned(), message }))
    }

    fn excluded(&self, path: &[u8]) -> bool {
        self.excludes.as_ref().is_some_and(|g| g.is_match(Path::new(std::ffi::OsStr::from_bytes(path))))
    }

    /// Walks one entry; returns false when the consumer has gone away. `siblings`: the sorted
    /// names in its directory (None for a source root).
    fn walk(&mut self, fs_path: &Path, tree_path: Vec<u8>, siblings: Option<&[std::ffi::OsString]>) -> bool {
        if self.excluded(&tree_path) {
            return true;
        }
        let meta = match std::fs::symlink_metadata(fs_path) {
            Ok(m) => m,
            Err(e) => return self.error(&tree_path, format!("{}: {e}", fs_path.display())),
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if let Some((dir, _)) = self.skip_dir.as_ref().filter(|(_, id)| *id == (meta.dev(), meta.ino())) {
                tracing::info!("{}: the repository itself, not stored", dir.display());
                let fact = Ev::Fact("skipped.repository".into(), String::from_utf8_lossy(&tree_path).into_owned());
                return self.emit(fact);
            }
            let node = node_from_meta(tree_path.clone(), NodeKind::Dir, &meta);
            if !self.emit(Ev::Node(node)) {
                return false;
            }
            let mut names: Vec<std::ffi::OsString> = match std::fs::read_dir(fs_path) {
                Ok(rd) => {
                    let mut v = Vec::new();
                    for e in rd {
                        match e {
                            Ok(e) => v.push(e.file_name()),
                            Err(e) => return self.error(&tree_path, format!("listing {}: {e}", fs_path.display())),
                        }
                    }
                    v
                }
                Err(e) => return self.error(&tree_path, format!("listing {}: {e}", fs_path.display())),
            };
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for n in &names {
                let mut child = tree_path.clone();
                child.push(b'/');
                child.extend_from_slice(n.as_bytes());
                if !self.walk(&fs_path.join(n), child, Some(&names)) {
                    return false;
                }
            }
            true
        } else if ft.is_symlink() {
            let mut node = node_from_meta(tree_path.clone(), NodeKind::Symlink, &meta);
            match std::fs::read_link(fs_path) {
                Ok(t) => node.target = t.as_os_str().as_bytes().to_vec(),
                Err(e) => return self.error(&tree_path, format!("reading link {}: {e}", fs_path.display())),
            }
            self.emit(Ev::Node(node))
        } else if ft.is_file() {
            if let Some(db) = livedb::sidecar_of(fs_path).filter(|db| self.dbs.contains(db)) {
                tracing::info!(
                    "{}: not stored; its content is in the consistent copy of {}",
                    fs_path.display(),
                    db.display()
                );
                return true;
            }
            self.file(fs_path, tree_path, &meta, siblings)
        } else {
            tracing::info!("skipping special file {}", fs_path.display());
            true
        }
    }

    fn file(
        &mut self,
        fs_path: &Path,
        tree_path: Vec<u8>,
        meta: &std::fs::Metadata,
        siblings: Option<&[std::ffi::OsString]>,
    ) -> bool {
        // A database's committed rows may live in its -wal or -journal, which its own metadata
        // does not show: with either holding data, it is copied again whatever the parent says.
        let sidecars = livedb::sidecars(fs_path, siblings);
        let mut is_db = None;
        if !sidecars.is_empty() {
            let db = livedb::sniff(fs_path);
            if db {
                self.dbs.insert(fs_path.to_path_buf());
            }
            is_db = Some(db);
        }
        let live = is_db == Some(true) && livedb::holds_data(&sidecars);
        if let Some(reused) = self.prev.unchanged(&tree_path, meta, live) {
            let mut node = node_from_meta(tree_path, NodeKind::File, meta);
            return self.emit(match reused {
                Reused::Held(chunks) => {
                    node.chunks = chunks;
                    Ev::Node(node)
                }
                Reused::Listed(list) => Ev::Listed(node, list),
            });
        }
        if is_db == Some(true) {
            return self.sqlite_file(fs_path, tree_path, meta, &sidecars);
        }
        for attempt in 1..=READ_ATTEMPTS {
            let f = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
                .open(fs_path)
                .or_else(|_| OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(fs_path));
            let f = match f {
                Ok(f) => f,
                Err(e) => return self.error(&tree_path, format!("opening {}: {e}", fs_path.display())),
            };
            let before = match f.metadata() {
                Ok(m) => m,
                Err(e) => return self.error(&tree_path, format!("stat {}: {e}", fs_path.display())),
            };
            if is_db.is_none() {
                // Recognised by its header whatever its name: a database is never stored raw.
                if livedb::head_is_sqlite(&f) {
                    self.dbs.insert(fs_path.to_path_buf());
                    drop(f);
                    return self.sqlite_file(fs_path, tree_path, meta, &sidecars);
                }
                is_db = Some(false);
            }
            let recent = livedb::recently_changed(&before);
            if !self.emit(Ev::FileStart(node_from_meta(tree_path.clone(), NodeKind::File, &before))) {
                return false;
            }
            let (size, res, digest) = self.read_file(&f, recent);
            let outcome = match res {
                Err(e) => FileOutcome::Failed(format!("reading {}: {e}", fs_path.display())),
                Ok(after) => {
                    let why = match (stable(&before, &after, size, fs_path), digest) {
                        (Some(why), _) => Ok(Some(why)),
                        (None, Some(d)) => livedb::differs_on_second_read(&f, size, d),
                        (None, None) => Ok(None),
                    };
                    match why {
                        Err(e) => FileOutcome::Failed(format!("reading {} again: {e}", fs_path.display())),
                        Ok(None) => FileOutcome::Stored,
                        Ok(Some(why)) if attempt < READ_ATTEMPTS => {
                            tracing::info!("{} {why}; reading it again", fs_path.display());
                            FileOutcome::Retry
                        }
                        Ok(Some(why)) => FileOutcome::Failed(format!(
                            "{} {why} on {READ_ATTEMPTS} attempts; not stored",
                            fs_path.display()
                        )),
                    }
                }
            };
            let retry = matches!(outcome, FileOutcome::Retry);
            if !self.emit(Ev::FileEnd { size, outcome }) {
                return false;
            }
            if !retry {
                return true;
            }
        }
        true
    }

    /// Streams a file's chunks; returns bytes read, the metadata after reading and, when `hash`
    /// is set, a digest of the bytes read (for a second read to compare against).
    fn read_file(&mut self, f: &File, hash: bool) -> (u64, std::io::Result<std::fs::Metadata>, Option<blake3::Hash>) {
        let mut ch = match StreamChunker::new(f, self.cutter.clone(), self.sqlite_detect) {
            Ok(c) => c,
            Err(e) => return (0, Err(e), None),
        };
        let mut hasher = hash.then(blake3::Hasher::new);
        loop {
            match ch.next_chunk() {
                Ok(Some(c)) => {
                    if let Some(h) = hasher.as_mut() {
                        h.update(&c);
                    }
                    if !self.emit(Ev::Chunk(c)) {
                        return (ch.bytes_read, Err(std::io::Error::other("cancelled")), None);
                    }
                }
                Ok(None) => break,
                Err(e) => return (ch.bytes_read, Err(e), None),
            }
        }
        let n = ch.bytes_read;
        (n, f.metadata(), hasher.map(|h| h.finalize()))
    }

    /// Sends a byte stream as one file; returns false when the consumer has gone away or the
    /// stream failed (then the error was sent).
    fn stream(&mut self, name: String, reader: Box<dyn Read + Send>, mtime_ns: i64, mode: Option<u32>) -> bool {
        let node = Node {
            path: name.into_bytes(),
            kind: NodeKind::File,
            mode: 0o100000 | (mode.unwrap_or(0o600) & 0o7777),
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            mtime_ns,
            ctime_ns: mtime_ns,
            inode: 0,
            size: 0,
            target: Vec::new(),
            chunks: Vec::new(),
        };
        if !self.emit(Ev::FileStart(node.clone())) {
            return false;
        }
        // A stream that fails (a dump tool exiting non-zero) is a permanent error of that
        // source, not an I/O hiccup worth retrying, unless the tool's diagnosis says it may
        // succeed later (a database server starting up).
        let stream_err = |e: std::io::Error| {
            let msg = format!("{}: {}", String::from_utf8_lossy(&node.path), crate::error::io_cause(&e));
            match super::process::ChildFailure::of(&e) {
                Some(f) if f.transient => Error::Unavailable(msg),
                _ => Error::Invalid(msg),
            }
        };
        let mut ch = match StreamChunker::new(reader, self.cutter.clone(), self.sqlite_detect) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.tx.send(Err(stream_err(e)));
                return false;
            }
        };
        loop {
            match ch.next_chunk() {
                Ok(Some(c)) => {
                    if !self.emit(Ev::Chunk(c)) {
                        return false;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // A failing stream must not become a snapshot.
                    self.flush();
                    let _ = self.tx.send(Err(stream_err(e)));
                    return false;
                }
            }
        }
        let n = ch.bytes_read;
        self.emit(Ev::FileEnd { size: n, outcome: FileOutcome::Stored })
    }
}

/// Why a file read is not trustworthy, or None. Growth by appending is fine: we stored a prefix
/// that existed, and record its size. Shrinking, in-place rewrites and replacement are not. A
/// rewrite that puts the old mtime back (or lands in the same mtime tick) still moves ctime,
/// which nothing but the kernel can set.
fn stable(before: &std::fs::Metadata, after: &std::fs::Metadata, read: u64, path: &Path) -> Option<&'static str> {
    if after.size() < read || after.size() < before.size() {
        return Some("shrank while being read");
    }
    if read < before.size() {
        return Some("ended early while being read");
    }
    let times = |m: &std::fs::Metadata| (ns(m.mtime(), m.mtime_nsec()), ns(m.ctime(), m.ctime_nsec()));
    if after.size() == before.size() && times(after) != times(before) {
        return Some("was rewritten while being read");
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.ino() != before.ino() || m.dev() != before.dev() => Some("was replaced while being read"),
        Ok(_) => None,
        Err(_) => Some("disappeared while being read"),
    }
}
