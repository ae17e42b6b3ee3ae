//! `snapshot`: source -> chunker -> hash -> dedup -> compress+seal -> pack -> index -> snapshot.
//!
//! A walker thread (`source::walk`) reads the sources in tree order and sends batches of events;
//! the calling thread hashes each batch in parallel, drops chunks the repository already has
//! *before* compressing them, compresses and seals the new ones in parallel (`repo::chunks`), and
//! appends them to the current pack (`repo::packer`, which finishes packs on its own thread). The
//! nodes go into the tree stream (`repo::tree`). Packs are published first, index files after
//! them, the snapshot file last: it is the commit point, so a crash leaves at most unreferenced
//! packs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use globset::GlobSet;

use crate::error::{Error, Result};
use crate::format::chunker::Cutter;
use crate::format::manifest::{Node, NodeError, NodeKind, Snapshot, SnapshotKind, Stats};
use crate::id::{content_hash, SnapshotId};
use crate::ops::pages::PagePlan;
use crate::repo::cache::Cache;
use crate::repo::chunks::ChunkWriter;
use crate::repo::packer::Packer;
use crate::repo::tree::{ChunkList, ListedNode, TreeWriter};
use crate::repo::Repo;
use crate::source::walk::{self, Ev, FileOutcome, WalkOptions};
use crate::store::lock::Lock;
use crate::store::{Handle, Store};

pub use crate::source::walk::Source;

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
    /// The parent, when the caller holds the snapshot list already (see `parent_in`;
    /// `Some(None)`: there is none). `None`: `snapshot` reads every snapshot file to find it.
    pub parent: Option<Option<(SnapshotId, Snapshot)>>,
    /// Permission bits recorded for a stream source (a SQLite copy records its database's
    /// mode); 0o600 when unset.
    pub stream_mode: Option<u32>,
    /// The snapshot's time, from the caller's clock (the lifecycle's injected one); the wall
    /// clock when unset. It also dates the on-change "parent is young" check.
    pub time: Option<chrono::DateTime<chrono::Local>>,
    /// The commit sequence number to record (see [`next_seq`]), when the caller holds the
    /// snapshot list; `None`: `snapshot` reads every snapshot file to find it.
    pub next_seq: Option<u64>,
}

/// The snapshot a new one of `backup_type` taken on `host` is compared against: the newest of
/// that type from that host in `snaps` (oldest first).
pub fn parent_in(snaps: &[(SnapshotId, Snapshot)], backup_type: &str, host: &str) -> Option<(SnapshotId, Snapshot)> {
    snaps.iter().rev().find(|(_, s)| s.backup_type == backup_type && s.host == host).cloned()
}

/// The `seq` a snapshot committed after `snaps` records: 1 + the highest among them
/// (format-spec/manifest.md). Version 1 snapshots count as 0, so the first version 2 one is 1.
pub fn next_seq(snaps: &[(SnapshotId, Snapshot)]) -> u64 {
    snaps.iter().map(|(_, s)| s.seq).max().unwrap_or(0) + 1
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
    let roots = walk::resolve(&source)?;
    let recorded_paths = roots.recorded.clone();
    let _lock = Lock::acquire(repo.store(), false, "snapshot")?;
    // Leftovers of killed runs go now, not after a day: a few kills fill a small disk.
    repo.store().clean_tmp(false)?;
    repo.sync_index()?;
    let host = crate::util::hostname();
    let (parent, seq) = match (&opts.parent, opts.next_seq) {
        (Some(p), Some(seq)) => (p.clone(), seq),
        (p, seq) => {
            let all = repo.snapshots()?.0;
            (
                p.clone().unwrap_or_else(|| parent_in(&all, &opts.backup_type, &host)),
                seq.unwrap_or_else(|| next_seq(&all)),
            )
        }
    };
    // A second reading of the parent's tree, in step with the backup: the parent's pages at the
    // positions of a database's new pages, stored as deltas against them (ops::pages).
    // Both read it spilling a database's page list to tmp/: 8 MiB each at 1 GiB otherwise.
    let mut pages = PagePlan::new(match &parent {
        Some((_, s)) => repo
            .tree(s)
            .ok()
            .map(|t| -> Box<dyn Iterator<Item = Result<ListedNode>> + Send> { Box::new(t.spilling(repo.store())) }),
        None => None,
    });
    let parent_tree: Option<walk::ParentTree> = match &parent {
        Some((_, s)) => match repo.tree(s) {
            Ok(t) => Some(Box::new(t.spilling(repo.store()))),
            Err(e) => {
                tracing::warn!("parent snapshot's tree unavailable, reading every file: {e}");
                None
            }
        },
        None => None,
    };
    let cutter = match opts.chunker {
        Some(p) => Cutter::new(p, repo.keys().gear_seed()),
        None => repo.cutter(&opts.backup_type),
    };
    let tree_cutter = repo.cutter("tree");
    // The walker asks its own connection: the main thread's cache is busy indexing.
    let is_stored: Option<walk::IsStored> =
        Cache::open(&repo.store().root().join("cache").join("cache.sqlite"), repo.config().id)
            .ok()
            .map(|c| -> walk::IsStored { Box::new(move |id: &crate::id::ChunkId| c.contains(id).unwrap_or(false)) });
    let time = opts.time.unwrap_or_else(chrono::Local::now);
    let (rx, walker_thread) = walk::spawn(
        source,
        roots,
        WalkOptions {
            cutter,
            sqlite_detect: repo.config().sqlite_pages,
            force_read: opts.force_read,
            excludes: opts.excludes.clone(),
            parent: parent_tree,
            is_stored,
            stream_mtime_ns: time.timestamp_nanos_opt().unwrap_or(0),
            stream_mode: opts.stream_mode,
            sqlite_tmp: repo.store().root().join("tmp"),
            skip_dir: Some(repo.store().root().to_path_buf()),
        },
    );

    let (store, keys) = (repo.store().clone(), repo.keys().clone());
    let list_store = store.clone();
    let (pack_size, level) = (repo.config().pack_size, repo.config().compression.level);
    let base_reader = repo.chunk_reader();
    let index = repo.index_batch();
    let packer = Packer::new(store, keys.clone(), pack_size, Some(index));
    let mut chunks = ChunkWriter::new(packer, keys, level).with_bases(base_reader);
    let mut tree = TreeWriter::new(tree_cutter);
    let mut stats = Stats::default();
    let mut errors = Vec::new();
    let mut facts = BTreeMap::new();
    let result = (|| -> Result<()> {
        let mut current: Option<(Node, ChunkList)> = None;
        for batch in rx.iter() {
            let batch = batch?;
            let mut data: Vec<&[u8]> = Vec::new();
            let mut bases = Vec::new();
            for e in &batch {
                match e {
                    Ev::FileStart(n) => pages.file_start(&n.path),
                    Ev::Chunk(c) => {
                        bases.push(pages.chunk(c));
                        data.push(c.as_slice());
                    }
                    _ => {}
                }
            }
            let ids = chunks.store_with_bases(&data, &bases)?;
            let mut ids = ids.into_iter();
            for ev in batch {
                match ev {
                    Ev::Chunk(_) => {
                        let id = ids.next().expect("one id per chunk");
                        if let Some((_, list)) = current.as_mut() {
                            list.push(id)?;
                        }
                    }
                    Ev::FileStart(n) => current = Some((n, ChunkList::new(&list_store))),
                    Ev::FileEnd { size, outcome } => {
                        let (mut n, list) = current.take().expect("file started");
                        match outcome {
                            FileOutcome::Stored => {
                                n.size = size;
                                stats.files += 1;
                                stats.logical_bytes += size;
                                tree.add_listed(&n, &list, &mut chunks)?;
                            }
                            FileOutcome::Retry => {}
                            FileOutcome::Failed(message) => {
                                tracing::warn!("{message}");
                                errors.push(NodeError { path: n.path_str(), message });
                            }
                        }
                    }
                    Ev::Listed(n, list) => {
                        stats.files += 1;
                        stats.unchanged_files += 1;
                        stats.logical_bytes += n.size;
                        tree.add_listed(&n, &list, &mut chunks)?;
                    }
                    Ev::Node(n) => {
                        match n.kind {
                            NodeKind::Dir => stats.dirs += 1,
                            NodeKind::Symlink => stats.symlinks += 1,
                            NodeKind::File => {
                                stats.files += 1;
                                stats.unchanged_files += 1;
                                stats.logical_bytes += n.size;
                            }
                        }
                        tree.add(&n, &mut chunks)?;
                    }
                    Ev::Error(e) => errors.push(e),
                    Ev::Fact(k, v) => {
                        facts.insert(k, v);
                    }
                }
            }
        }
        Ok(())
    })();
    drop(rx);
    if walker_thread.join().is_err() {
        // A panicking walker ends the stream early: what arrived is not the whole source.
        chunks.abandon();
        return Err(Error::Invalid("the source walker failed unexpectedly; nothing committed".into()));
    }
    if let Err(e) = result {
        chunks.abandon();
        return Err(e);
    }
    let written_tree = match tree.finish(&mut chunks) {
        Ok(t) => t,
        Err(e) => {
            chunks.abandon();
            return Err(e);
        }
    };
    let added = chunks.finish()?;
    stats.new_chunks = added.chunks;
    stats.new_raw_bytes = added.raw_bytes;
    stats.new_bytes = added.bytes;
    if added.deltas > 0 {
        tracing::info!(
            "{} changed pages stored as deltas against the parent's ({} bytes)",
            added.deltas,
            added.delta_bytes
        );
    }
    if added.groups > 0 {
        tracing::info!("small chunks compressed together in {} groups", added.groups);
    }
    stats.errors = errors.len() as u64;
    let digest = written_tree.digest;
    let mut source_meta = opts.source_meta.clone();
    source_meta.extend(facts);
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
        tree: written_tree.chunks,
        tree_len: written_tree.len,
        parent: parent.map(|p| p.0),
        errors,
        source: source_meta,
        program: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        seq,
    };
    let sealed = snapshot.seal(repo.keys());
    let id = SnapshotId(content_hash(&sealed));
    repo.store().put(Handle::Snapshot(id), &sealed)?;
    Ok(SnapshotOutcome { id, snapshot, duration: start.elapsed(), written: true })
}
