//! `snapshot`: source -> chunker -> hash -> dedup -> compress+seal -> pack -> index -> snapshot.
//!
//! A walker thread reads the sources in tree order and sends batches of events (nodes and
//! chunk bytes, a few MiB at a time) over a bounded channel; the calling thread hashes each batch
//! in parallel, drops chunks the repository already has *before* compressing them, compresses and
//! seals the new ones in parallel (checking each round-trips to its id), and appends them to the
//! current pack. Packs are published first, index files after them, the snapshot file last: it is
//! the commit point, so a crash leaves at most unreferenced packs.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use globset::GlobSet;
use rayon::prelude::*;

use crate::format::blob;
use crate::repo::cache::Cache;
use crate::format::chunker::{Cutter, PushChunker, StreamChunker};
use crate::format::crypto::{Keys, ObjectKind};
use crate::error::{Error, Result};
use crate::id::{content_hash, ChunkId, SnapshotId};
use crate::format::index::{self, PackRecord};
use crate::store::lock::Lock;
use crate::format::manifest::{path_cmp, Node, NodeError, NodeKind, Snapshot, SnapshotKind, Stats};
use crate::format::pack::PackWriter;
use crate::repo::{Repo, TreeReader};
use crate::store::FileKind;

/// Bytes of chunk data per batch handed from the walker to the hashing stage.
const BATCH_BYTES: usize = 2 << 20;
/// Index entries held before an index file is written.
const INDEX_FLUSH_ENTRIES: usize = 65536;
/// Attempts at reading a file that changes underneath us.
const READ_ATTEMPTS: usize = 3;

/// What to record about a snapshot.
#[derive(Clone, Debug, Default)]
pub struct SnapshotOptions {
    /// Backup type.
    pub backup_type: String,
    /// Kind.
    pub kind: SnapshotKind,
    /// Description (pre-change, manual).
    pub description: Option<String>,
    /// Ticket (pre-change).
    pub ticket: Option<String>,
    /// Creator.
    pub creator: Option<String>,
    /// Purpose (manual).
    pub purpose: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Read every file even if it looks unchanged.
    pub force_read: bool,
    /// Paths matching these are skipped (matched against the in-snapshot path).
    pub excludes: Option<GlobSet>,
    /// Source facts to record.
    pub source_meta: BTreeMap<String, String>,
    /// Chunker for this run instead of the repository's for the type (recorded in the snapshot).
    pub chunker: Option<crate::format::chunker::ChunkerParams>,
    /// On-change mode: when the content equals the parent snapshot's and the parent is younger
    /// than this, commit nothing (the outcome says `written: false`).
    pub skip_if_unchanged_within: Option<chrono::Duration>,
    /// The parent, when the caller holds the snapshot list already (see [`parent_in`];
    /// `Some(None)`: there is none). `None`: `snapshot` reads every snapshot file to find it.
    pub parent: Option<Option<(SnapshotId, Snapshot)>>,
}

/// The snapshot a new one of `backup_type` taken on `host` is compared against: the newest of
/// that type from that host in `snaps` (oldest first).
pub fn parent_in(snaps: &[(SnapshotId, Snapshot)], backup_type: &str, host: &str) -> Option<(SnapshotId, Snapshot)> {
    snaps.iter().rev().find(|(_, s)| s.backup_type == backup_type && s.host == host).cloned()
}

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
}

/// A committed snapshot.
#[derive(Debug)]
pub struct SnapshotOutcome {
    /// Its id.
    pub id: SnapshotId,
    /// Its content.
    pub snapshot: Snapshot,
    /// Wall time taken.
    pub duration: Duration,
    /// False when on-change mode found the content unchanged (then `id` is the parent's).
    pub written: bool,
}

/// Key under which each snapshot records the digest of its content (paths, kinds, link targets,
/// chunk ids; not times or modes), so on-change types can tell "nothing changed".
pub const CONTENT_DIGEST: &str = "content_digest";

enum Ev {
    Node(Node),
    FileStart(Node),
    Chunk(Vec<u8>),
    FileEnd { size: u64, outcome: FileOutcome },
    Error(NodeError),
}

/// What the walker sends: a batch of events, or the error that ends the walk.
type Batch = Result<Vec<Ev>>;

enum FileOutcome {
    Stored,
    Retry,
    Failed(String),
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

/// The parent snapshot's tree, consumed in step with the walk.
struct PrevTree {
    iter: Option<TreeReader>,
    peeked: Option<Node>,
}

impl PrevTree {
    fn find(&mut self, path: &[u8]) -> Option<Node> {
        loop {
            if self.peeked.is_none() {
                match self.iter.as_mut()?.next() {
                    Some(Ok(n)) => self.peeked = Some(n),
                    Some(Err(e)) => {
                        tracing::warn!("parent snapshot unreadable, reading every file: {e}");
                        self.iter = None;
                        return None;
                    }
                    None => {
                        self.iter = None;
                        return None;
                    }
                }
            }
            let p = self.peeked.as_ref().expect("peeked");
            match path_cmp(&p.path, path) {
                std::cmp::Ordering::Less => self.peeked = None,
                std::cmp::Ordering::Equal => return self.peeked.take(),
                std::cmp::Ordering::Greater => return None,
            }
        }
    }
}

struct Walker {
    tx: Sender<Batch>,
    batch: Vec<Ev>,
    batch_bytes: usize,
    cutter: Cutter,
    sqlite_detect: bool,
    prev: PrevTree,
    cache: Option<Cache>,
    force_read: bool,
    excludes: Option<GlobSet>,
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

    /// Walks one entry; returns false when the consumer has gone away.
    fn walk(&mut self, fs_path: &Path, tree_path: Vec<u8>) -> bool {
        if self.excluded(&tree_path) {
            return true;
        }
        let meta = match std::fs::symlink_metadata(fs_path) {
            Ok(m) => m,
            Err(e) => return self.error(&tree_path, format!("{}: {e}", fs_path.display())),
        };
        let ft = meta.file_type();
        if ft.is_dir() {
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
            for n in names {
                let mut child = tree_path.clone();
                child.push(b'/');
                child.extend_from_slice(n.as_bytes());
                if !self.walk(&fs_path.join(&n), child) {
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
            self.file(fs_path, tree_path, &meta)
        } else {
            tracing::info!("skipping special file {}", fs_path.display());
            true
        }
    }

    fn unchanged(&mut self, prev: &Node, meta: &std::fs::Metadata) -> bool {
        if self.force_read || prev.kind != NodeKind::File {
            return false;
        }
        let now = node_from_meta(Vec::new(), NodeKind::File, meta);
        if (prev.size, prev.mtime_ns, prev.ctime_ns, prev.inode) != (now.size, now.mtime_ns, now.ctime_ns, now.inode) {
            return false;
        }
        // The parent's chunks must still be stored, or the file is read again.
        match &self.cache {
            Some(c) => prev.chunks.iter().all(|id| c.contains(id).unwrap_or(false)),
            None => false,
        }
    }

    fn file(&mut self, fs_path: &Path, tree_path: Vec<u8>, meta: &std::fs::Metadata) -> bool {
        if let Some(prev) = self.prev.find(&tree_path) {
            if self.unchanged(&prev, meta) {
                let mut node = node_from_meta(tree_path, NodeKind::File, meta);
                node.chunks = prev.chunks;
                return self.emit(Ev::Node(node));
            }
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
            if !self.emit(Ev::FileStart(node_from_meta(tree_path.clone(), NodeKind::File, &before))) {
                return false;
            }
            let (size, res) = self.read_file(f);
            let outcome = match res {
                Err(e) => FileOutcome::Failed(format!("reading {}: {e}", fs_path.display())),
                Ok(after) => match stable(&before, &after, size, fs_path) {
                    None => FileOutcome::Stored,
                    Some(why) if attempt < READ_ATTEMPTS => {
                        tracing::info!("{} {why}; reading it again", fs_path.display());
                        FileOutcome::Retry
                    }
                    Some(why) => FileOutcome::Failed(format!(
                        "{} {why} on {READ_ATTEMPTS} attempts; not stored",
                        fs_path.display()
                    )),
                },
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

    /// Streams a file's chunks; returns bytes read and the metadata after reading.
    fn read_file(&mut self, f: File) -> (u64, std::io::Result<std::fs::Metadata>) {
        let mut ch = match StreamChunker::new(&f, self.cutter.clone(), self.sqlite_detect) {
            Ok(c) => c,
            Err(e) => return (0, Err(e)),
        };
        loop {
            match ch.next_chunk() {
                Ok(Some(c)) => {
                    if !self.emit(Ev::Chunk(c)) {
                        return (ch.bytes_read, Err(std::io::Error::other("cancelled")));
                    }
                }
                Ok(None) => break,
                Err(e) => return (ch.bytes_read, Err(e)),
            }
        }
        let n = ch.bytes_read;
        (n, f.metadata())
    }
}

/// Why a file read is not trustworthy, or None. Growth by appending is fine: we stored a prefix
/// that existed, and record its size. Shrinking, in-place rewrites and replacement are not.
fn stable(before: &std::fs::Metadata, after: &std::fs::Metadata, read: u64, path: &Path) -> Option<&'static str> {
    if after.size() < read || after.size() < before.size() {
        return Some("shrank while being read");
    }
    if read < before.size() {
        return Some("ended early while being read");
    }
    if after.size() == before.size() && ns(after.mtime(), after.mtime_nsec()) != ns(before.mtime(), before.mtime_nsec())
    {
        return Some("was rewritten while being read");
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.ino() != before.ino() || m.dev() != before.dev() => Some("was replaced while being read"),
        Ok(_) => None,
        Err(_) => Some("disappeared while being read"),
    }
}

/// Accumulates new chunks into packs and packs into index files.
/// Finishes packs (trailer, fsync, publish) on its own thread, so the pipeline keeps hashing and
/// compressing while a pack's fsync waits on the disk. At most two packs wait in line.
struct Finisher {
    tx: Option<Sender<PackWriter>>,
    rx: Receiver<Result<crate::format::pack::WrittenPack>>,
    handle: Option<std::thread::JoinHandle<()>>,
    in_flight: usize,
}

impl Finisher {
    fn new(store: crate::store::LocalStore, keys: std::sync::Arc<Keys>) -> Self {
        let (tx, jobs) = bounded::<PackWriter>(2);
        let (done_tx, rx) = crossbeam_channel::unbounded();
        let handle = std::thread::spawn(move || {
            for w in jobs {
                if done_tx.send(w.finish(&store, &keys)).is_err() {
                    break;
                }
            }
        });
        Finisher { tx: Some(tx), rx, handle: Some(handle), in_flight: 0 }
    }

    fn submit(&mut self, w: PackWriter) -> Result<()> {
        self.tx.as_ref().expect("open").send(w).map_err(|_| Error::Invalid("pack writer thread stopped".into()))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Finished packs, waiting until at most `max_in_flight` remain unfinished.
    fn collect(&mut self, max_in_flight: usize) -> Result<Vec<crate::format::pack::WrittenPack>> {
        let mut out = Vec::new();
        while self.in_flight > 0 {
            let r = if self.in_flight > max_in_flight {
                self.rx.recv().map_err(|_| Error::Invalid("pack writer thread stopped".into()))?
            } else {
                match self.rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            self.in_flight -= 1;
            out.push(r?);
        }
        Ok(out)
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Packer<'r> {
    repo: &'r mut Repo,
    finisher: Finisher,
    writer: Option<PackWriter>,
    pending: HashSet<ChunkId>,
    pending_index: Vec<PackRecord>,
    pending_entries: usize,
    stats: Stats,
}

fn encode_chunk(keys: &Keys, level: i32, id: ChunkId, data: &[u8]) -> Result<Vec<u8>> {
    let payload = blob::encode(data, level);
    // Decompress what we are about to store: a compressor bug must not become data loss (restic
    // lost data that way). Equal bytes hash to the same id, so a comparison is as good as a re-hash
    // and cheaper. Stored-raw chunks went through no transformation. The AEAD needs no such
    // check: opening authenticates every byte on read.
    if payload[0] != blob::ENC_RAW {
        let what = || format!("new chunk {}", id.short());
        let plain = blob::decode(&payload, data.len(), &what)?;
        if plain != data {
            return Err(Error::corrupt(what(), "did not round-trip through compression; nothing stored"));
        }
    }
    Ok(keys.seal(ObjectKind::Chunk, &id.0, &payload))
}

impl<'r> Packer<'r> {
    fn new(repo: &'r mut Repo) -> Self {
        Packer {
            finisher: Finisher::new(repo.store.clone(), repo.keys.clone()),
            repo,
            writer: None,
            pending: HashSet::new(),
            pending_index: Vec::new(),
            pending_entries: 0,
            stats: Stats::default(),
        }
    }

    /// Stores chunks the repository lacks; returns all their ids in order.
    fn store(&mut self, chunks: &[&[u8]]) -> Result<Vec<ChunkId>> {
        let keys = self.repo.keys.clone();
        let ids: Vec<ChunkId> = chunks.par_iter().with_min_len(8).map(|c| keys.chunk_id(c)).collect();
        let mut new = Vec::new();
        let pending = &mut self.pending;
        self.repo.cache.batch(|cache| {
            for (i, id) in ids.iter().enumerate() {
                if pending.contains(id) || cache.contains(id)? {
                    continue;
                }
                pending.insert(*id);
                new.push(i);
            }
            Ok(())
        })?;
        let level = self.repo.config.compression.level;
        let sealed: Vec<Result<Vec<u8>>> =
            new.par_iter().with_min_len(4).map(|&i| encode_chunk(&keys, level, ids[i], chunks[i])).collect();
        for (&i, s) in new.iter().zip(sealed) {
            let s = s?;
            if self.writer.is_none() {
                self.writer = Some(PackWriter::new(&self.repo.store)?);
            }
            let w = self.writer.as_mut().expect("just set");
            w.add(ids[i], &s, chunks[i].len() as u32)?;
            self.stats.new_chunks += 1;
            self.stats.new_raw_bytes += chunks[i].len() as u64;
            self.stats.new_bytes += s.len() as u64;
            if w.len() >= self.repo.config.pack_size {
                self.flush_pack()?;
            }
        }
        Ok(ids)
    }

    fn flush_pack(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            self.finisher.submit(w)?;
        }
        self.take_finished(2)
    }

    /// Moves finished packs into the pending index, writing an index file when it is big enough.
    fn take_finished(&mut self, max_in_flight: usize) -> Result<()> {
        for written in self.finisher.collect(max_in_flight)? {
            tracing::debug!(pack = %written.id, size = written.size, chunks = written.entries.len(), "pack written");
            self.pending_entries += written.entries.len();
            self.pending_index.push(PackRecord { id: written.id, size: written.size, entries: written.entries });
        }
        if self.pending_entries >= INDEX_FLUSH_ENTRIES {
            self.flush_index()?;
        }
        Ok(())
    }

    fn flush_index(&mut self) -> Result<()> {
        if self.pending_index.is_empty() {
            return Ok(());
        }
        let id = index::write(&self.repo.store, &self.repo.keys, &self.pending_index)?;
        self.repo.cache.add_index(&id, &self.pending_index)?;
        for p in self.pending_index.drain(..) {
            for e in &p.entries {
                self.pending.remove(&e.id);
            }
        }
        self.pending_entries = 0;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush_pack()?;
        self.take_finished(0)?;
        self.flush_index()
    }

    fn abandon(&mut self) {
        if let Some(w) = self.writer.take() {
            w.abandon();
        }
    }
}

/// Builds the tree stream and stores it as chunks.
struct TreeWriter {
    chunker: PushChunker,
    ids: Vec<ChunkId>,
    len: u64,
    buf: Vec<u8>,
    digest: blake3::Hasher,
}

impl TreeWriter {
    fn add(&mut self, node: &Node, packer: &mut Packer) -> Result<()> {
        for part in [&node.path[..], &[node.kind as u8][..], &node.target[..]] {
            self.digest.update(&(part.len() as u64).to_le_bytes());
            self.digest.update(part);
        }
        self.digest.update(&(node.chunks.len() as u64).to_le_bytes());
        for c in &node.chunks {
            self.digest.update(&c.0);
        }
        self.buf.clear();
        node.encode_record(&mut self.buf);
        self.len += self.buf.len() as u64;
        let out = self.chunker.push(&self.buf);
        if !out.is_empty() {
            let refs: Vec<&[u8]> = out.iter().map(|c| c.as_slice()).collect();
            self.ids.extend(packer.store(&refs)?);
        }
        Ok(())
    }

    fn finish(mut self, packer: &mut Packer) -> Result<(Vec<ChunkId>, u64)> {
        let out = std::mem::replace(&mut self.chunker, PushChunker::new(Cutter::Fixed(4096))).finish();
        let refs: Vec<&[u8]> = out.iter().map(|c| c.as_slice()).collect();
        self.ids.extend(packer.store(&refs)?);
        Ok((self.ids, self.len))
    }
}

/// Takes a snapshot. Errors on individual files are recorded in the snapshot; errors that make
/// the snapshot untrustworthy abort it before anything is committed.
pub fn snapshot(repo: &mut Repo, source: Source, opts: &SnapshotOptions) -> Result<SnapshotOutcome> {
    let start = Instant::now();
    if opts.backup_type.is_empty() || opts.backup_type.contains(['/', ':', '\0']) || opts.backup_type.len() > 64 {
        return Err(Error::Invalid(format!(
            "backup type {:?}: use 1-64 characters without '/', ':'",
            opts.backup_type
        )));
    }
    // Resolve sources before taking locks or writing anything: a missing path is a clean error.
    let roots: Vec<(PathBuf, Vec<u8>)> = match &source {
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
            v
        }
        Source::Reader { name, .. } => {
            crate::format::manifest::check_safe_path(name.as_bytes())
                .map_err(|e| Error::Invalid(format!("stdin name {name:?}: {e}")))?;
            if name.contains('/') {
                return Err(Error::Invalid(format!("stdin name {name:?} must not contain '/'")));
            }
            Vec::new()
        }
    };
    let recorded_paths: Vec<String> = match &source {
        Source::Paths(_) => roots.iter().map(|(abs, _)| abs.display().to_string()).collect(),
        Source::Reader { name, .. } => vec![format!("<stdin>/{name}")],
    };
    let _lock = Lock::acquire(&repo.store, false, "snapshot")?;
    repo.store.clean_tmp(Duration::from_secs(24 * 3600))?;
    repo.sync_index()?;
    let host = crate::util::hostname();
    let parent = match &opts.parent {
        Some(p) => p.clone(),
        None => parent_in(&repo.snapshots()?.0, &opts.backup_type, &host),
    };
    let prev_iter = match &parent {
        Some((_, s)) => match repo.tree(s) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("parent snapshot's tree unavailable, reading every file: {e}");
                None
            }
        },
        None => None,
    };
    let cutter = match opts.chunker {
        Some(p) => Cutter::new(p, repo.keys.gear_seed()),
        None => repo.cutter(&opts.backup_type),
    };
    let tree_cutter = repo.cutter("tree");
    let sqlite_detect = repo.config.sqlite_pages;
    let walker_cache = Cache::open(&repo.store.root().join("cache").join("cache.sqlite"), repo.config.id).ok();
    let (tx, rx): (Sender<Batch>, Receiver<Batch>) = bounded(2);
    let excludes = opts.excludes.clone();
    let force_read = opts.force_read;
    let time = chrono::Local::now();
    let walker_thread = std::thread::spawn(move || {
        let mut w = Walker {
            tx,
            batch: Vec::new(),
            batch_bytes: 0,
            cutter,
            sqlite_detect,
            prev: PrevTree { iter: prev_iter, peeked: None },
            cache: walker_cache,
            force_read,
            excludes,
        };
        match source {
            Source::Paths(_) => {
                for (abs, name) in roots {
                    if !w.walk(&abs, name) {
                        return;
                    }
                }
            }
            Source::Reader { name, reader } => {
                let mut node = Node {
                    path: name.into_bytes(),
                    kind: NodeKind::File,
                    mode: 0o100600,
                    uid: unsafe { libc::getuid() },
                    gid: unsafe { libc::getgid() },
                    mtime_ns: time.timestamp_nanos_opt().unwrap_or(0),
                    ctime_ns: 0,
                    inode: 0,
                    size: 0,
                    target: Vec::new(),
                    chunks: Vec::new(),
                };
                node.ctime_ns = node.mtime_ns;
                if !w.emit(Ev::FileStart(node.clone())) {
                    return;
                }
                // A stream that fails (a dump tool exiting non-zero) is a permanent error of that
                // source, not an I/O hiccup worth retrying.
                let stream_err =
                    |e: std::io::Error| Error::Invalid(format!("{}: {e}", String::from_utf8_lossy(&node.path)));
                let mut ch = match StreamChunker::new(reader, w.cutter.clone(), w.sqlite_detect) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = w.tx.send(Err(stream_err(e)));
                        return;
                    }
                };
                loop {
                    match ch.next_chunk() {
                        Ok(Some(c)) => {
                            if !w.emit(Ev::Chunk(c)) {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            // A failing stream must not become a snapshot.
                            w.flush();
                            let _ = w.tx.send(Err(stream_err(e)));
                            return;
                        }
                    }
                }
                let n = ch.bytes_read;
                w.emit(Ev::FileEnd { size: n, outcome: FileOutcome::Stored });
            }
        }
        w.flush();
    });

    let mut packer = Packer::new(repo);
    let mut tree = TreeWriter {
        chunker: PushChunker::new(tree_cutter),
        ids: Vec::new(),
        len: 0,
        buf: Vec::new(),
        digest: blake3::Hasher::new(),
    };
    let mut errors = Vec::new();
    let result = (|| -> Result<()> {
        let mut current: Option<Node> = None;
        for batch in rx.iter() {
            let batch = batch?;
            let chunks: Vec<&[u8]> =
                batch.iter().filter_map(|e| if let Ev::Chunk(c) = e { Some(c.as_slice()) } else { None }).collect();
            let ids = packer.store(&chunks)?;
            let mut ids = ids.into_iter();
            for ev in batch {
                match ev {
                    Ev::Chunk(_) => {
                        let id = ids.next().expect("one id per chunk");
                        if let Some(n) = current.as_mut() {
                            n.chunks.push(id);
                        }
                    }
                    Ev::FileStart(n) => current = Some(n),
                    Ev::FileEnd { size, outcome } => {
                        let mut n = current.take().expect("file started");
                        match outcome {
                            FileOutcome::Stored => {
                                n.size = size;
                                packer.stats.files += 1;
                                packer.stats.logical_bytes += size;
                                tree.add(&n, &mut packer)?;
                            }
                            FileOutcome::Retry => {}
                            FileOutcome::Failed(message) => {
                                tracing::warn!("{message}");
                                errors.push(NodeError { path: n.path_str(), message });
                            }
                        }
                    }
                    Ev::Node(n) => {
                        match n.kind {
                            NodeKind::Dir => packer.stats.dirs += 1,
                            NodeKind::Symlink => packer.stats.symlinks += 1,
                            NodeKind::File => {
                                packer.stats.files += 1;
                                packer.stats.unchanged_files += 1;
                                packer.stats.logical_bytes += n.size;
                            }
                        }
                        tree.add(&n, &mut packer)?;
                    }
                    Ev::Error(e) => errors.push(e),
                }
            }
        }
        Ok(())
    })();
    drop(rx);
    if walker_thread.join().is_err() {
        // A panicking walker ends the stream early: what arrived is not the whole source.
        packer.abandon();
        return Err(Error::Invalid("the source walker failed unexpectedly; nothing committed".into()));
    }
    if let Err(e) = result {
        packer.abandon();
        return Err(e);
    }
    let digest = tree.digest.finalize().to_hex().to_string();
    let (tree_ids, tree_len) = match tree.finish(&mut packer) {
        Ok(t) => t,
        Err(e) => {
            packer.abandon();
            return Err(e);
        }
    };
    packer.finish()?;
    let mut stats = std::mem::take(&mut packer.stats);
    stats.errors = errors.len() as u64;
    let mut source_meta = opts.source_meta.clone();
    source_meta.insert(CONTENT_DIGEST.into(), digest.clone());
    if let Some(p) = opts.chunker {
        source_meta.insert("chunker".into(), serde_json::to_string(&p).expect("serializable"));
    }
    if let (Some(within), Some((pid, ps))) = (opts.skip_if_unchanged_within, &parent) {
        let young = ps.datetime().is_some_and(|t| time.fixed_offset() - t < within);
        if young && errors.is_empty() && ps.source.get(CONTENT_DIGEST) == Some(&digest) {
            let mut snapshot = ps.clone();
            snapshot.stats = stats;
            return Ok(SnapshotOutcome { id: *pid, snapshot, duration: start.elapsed(), written: false });
        }
    }
    let snapshot = Snapshot {
        time: time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, false),
        backup_type: opts.backup_type.clone(),
        kind: opts.kind,
        description: opts.description.clone(),
        ticket: opts.ticket.clone(),
        creator: opts.creator.clone(),
        purpose: opts.purpose.clone(),
        host,
        paths: recorded_paths,
        labels: opts.labels.clone(),
        stats,
        tree: tree_ids,
        tree_len,
        parent: parent.map(|p| p.0),
        errors,
        source: source_meta,
        program: format!("cairn {}", env!("CARGO_PKG_VERSION")),
    };
    let sealed = snapshot.seal(&repo.keys);
    let id = SnapshotId(content_hash(&sealed));
    repo.store.put(FileKind::Snapshot, &id.to_hex(), &sealed)?;
    Ok(SnapshotOutcome { id, snapshot, duration: start.elapsed(), written: true })
}
