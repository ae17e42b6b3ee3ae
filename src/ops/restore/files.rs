//! Writing restored files. One file: temporary name beside it, filled sparse, mode, owner and
//! mtime, fsync, rename over (format-spec/restore.md). Many small files: the way restic's and
//! rustic's restorers do it, work is grouped so that each needed pack range is read once for a
//! whole batch of files, the chunks are opened and decompressed in parallel, and a bounded pool
//! of writer threads creates, fills and fsyncs the files side by side (a file's fsync waits on
//! the disk, not the CPU, so more writers than cores keeps the disk busy).

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, IoContext, Result};
use crate::format::manifest::Node;
use crate::id::ChunkId;
use crate::repo::cache::Location;
use crate::repo::{ChunkReader, Repo};

use super::safety::{set_handle_mtime, temp_beside, SQLITE_HEADER};
use super::sparse::SparseFile;

/// Files up to this size are restored in batches by the writer pool; larger ones stream
/// through [`super::write_content`] (which decodes their windows in parallel itself).
pub(super) const SMALL_FILE: u64 = 1 << 20;
/// A batch is sent once it holds this many bytes of file content...
const BATCH_BYTES: u64 = 16 << 20;
/// ...or this many files. With the queue bounded to one batch of jobs, at most about three
/// batches of decoded chunks are in memory at once, however large the snapshot.
const BATCH_FILES: usize = 2048;
/// Writer threads.
const WRITERS: usize = 8;

/// Writes `node` to a temporary file beside `p` through `fill`, gives it mode, owner and mtime,
/// syncs it and renames it over `p`. On any error the temporary file is removed and `p` is
/// untouched. Returns the bytes written and whether the content starts with the SQLite header.
pub(super) fn write_file(
    node: &Node,
    p: &Path,
    am_root: bool,
    fill: impl FnOnce(&mut SparseFile<'_>) -> Result<()>,
) -> Result<(u64, bool)> {
    let tmp = temp_beside(p);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .ctx(&tmp)?;
    let r: Result<(u64, bool)> = (|| {
        let mut w = SparseFile::new(&f, node.size).ctx(&tmp)?;
        fill(&mut w)?;
        let n = w.finish().ctx(&tmp)?;
        if n != node.size {
            return Err(Error::corrupt(node.path_str(), format!("restored {n} bytes, snapshot says {}", node.size)));
        }
        let mut head = [0u8; 16];
        let sqlite = n >= 16 && f.read_exact_at(&mut head, 0).is_ok() && &head == SQLITE_HEADER;
        if am_root {
            let _ = std::os::unix::fs::fchown(&f, Some(node.uid), Some(node.gid));
        }
        f.set_permissions(fs::Permissions::from_mode(node.mode & 0o7777)).ctx(&tmp)?;
        set_handle_mtime(&f, node.mtime_ns).ctx(&tmp)?;
        f.sync_all().ctx(&tmp)?;
        fs::rename(&tmp, p).ctx(p)?;
        Ok((n, sqlite))
    })();
    if r.is_err() {
        drop(f);
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// Chunks decoded for one batch, in (pack, offset) order; an error is kept as its message and
/// charged to each file that needs the chunk.
type Decoded = Vec<std::result::Result<Vec<u8>, String>>;

/// One file for a writer: where it goes, and which of its batch's chunks make it up.
struct Job {
    node: Node,
    path: PathBuf,
    chunks: std::result::Result<Vec<usize>, String>,
    data: Arc<Decoded>,
}

/// What a writer did with one file.
pub(super) struct Outcome {
    pub node: Node,
    pub result: Result<(u64, bool)>,
}

/// Number of range reads [`ChunkReader::read_many`] makes for `locs`: one per run of chunks
/// stored back to back in one pack (as it coalesces them).
pub(super) fn count_runs(locs: &[(ChunkId, Location)]) -> u64 {
    let mut n = 0u64;
    let mut run_len = 0usize;
    for (i, (_, l)) in locs.iter().enumerate() {
        let extends = i > 0 && {
            let p = &locs[i - 1].1;
            p.pack == l.pack && p.offset as u64 + p.stored_len as u64 == l.offset as u64 && run_len < 4096
        };
        if extends {
            run_len += 1;
        } else {
            n += 1;
            run_len = 1;
        }
    }
    n
}

/// Small files collected on the tree-walking thread and handed to the writer pool in batches.
pub(super) struct Batcher<'r> {
    repo: &'r Repo,
    reader: ChunkReader,
    files: Vec<(Node, PathBuf)>,
    bytes: u64,
    tx: Option<Sender<Job>>,
    /// Range reads of pack files made so far (see [`count_runs`]).
    pub pack_reads: u64,
}

impl<'r> Batcher<'r> {
    /// Starts `WRITERS` writer threads in `scope`; their outcomes come back from
    /// [`Batcher::finish`]'s handles.
    pub(super) fn start<'s>(
        scope: &'s std::thread::Scope<'s, '_>,
        repo: &'r Repo,
        am_root: bool,
    ) -> (Self, Vec<std::thread::ScopedJoinHandle<'s, Vec<Outcome>>>) {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(BATCH_FILES);
        let handles = (0..WRITERS)
            .map(|_| {
                let rx: Receiver<Job> = rx.clone();
                scope.spawn(move || rx.iter().map(|job| write_job(job, am_root)).collect())
            })
            .collect();
        let b = Batcher { repo, reader: repo.chunk_reader(), files: Vec::new(), bytes: 0, tx: Some(tx), pack_reads: 0 };
        (b, handles)
    }

    /// Queues a small file; sends the batch when it is full.
    pub(super) fn add(&mut self, node: Node, path: PathBuf) -> Result<()> {
        self.bytes += node.size;
        self.files.push((node, path));
        if self.bytes >= BATCH_BYTES || self.files.len() >= BATCH_FILES {
            self.send()?;
        }
        Ok(())
    }

    /// Locates every chunk of the batch (one sorted pass over the cache), reads them sorted by pack and
    /// offset so each pack range is read once, decodes them in parallel and queues the files.
    fn send(&mut self) -> Result<()> {
        let files = std::mem::take(&mut self.files);
        self.bytes = 0;
        if files.is_empty() {
            return Ok(());
        }
        // Every distinct chunk of the batch, located in one sorted pass over the cache.
        let mut wanted: Vec<ChunkId> = Vec::new();
        let mut seen: HashSet<ChunkId> = HashSet::new();
        for (node, _) in &files {
            wanted.extend(node.chunks.iter().filter(|c| seen.insert(**c)));
        }
        drop(seen);
        let found = self.repo.cache().lookup_many(&wanted)?;
        let mut index: HashMap<ChunkId, usize> = HashMap::new();
        let mut locs: Vec<(ChunkId, Location)> = Vec::new();
        for (c, l) in wanted.iter().zip(found) {
            if let Some(l) = l {
                index.insert(*c, locs.len());
                locs.push((*c, l));
            }
        }
        let mut per_file: Vec<std::result::Result<Vec<ChunkId>, String>> = files
            .iter()
            .map(|(node, _)| match node.chunks.iter().find(|c| !index.contains_key(c)) {
                None => Ok(node.chunks.clone()),
                Some(c) => Err(Error::corrupt(format!("chunk {c}"), "not in the index (missing data)").to_string()),
            })
            .collect();
        // A chunk the cache lacks may be a damaged cache row: `Repo::locate` rechecks it against
        // the index files before the file is called missing data.
        for (r, (node, _)) in per_file.iter_mut().zip(&files) {
            if r.is_err() {
                *r = self.repo.locate(&node.chunks).map_err(|e| e.to_string()).map(|found| {
                    for (c, l) in found {
                        if let std::collections::hash_map::Entry::Vacant(v) = index.entry(c) {
                            v.insert(locs.len());
                            locs.push((c, l));
                        }
                    }
                    node.chunks.clone()
                });
            }
        }
        locs.sort_by_key(|(_, l)| (l.pack, l.offset));
        for (i, (c, _)) in locs.iter().enumerate() {
            index.insert(*c, i);
        }
        self.pack_reads += count_runs(&locs);
        let data: Arc<Decoded> =
            Arc::new(self.reader.read_many(&locs).into_iter().map(|r| r.map_err(|e| e.to_string())).collect());
        drop(locs);
        let tx = self.tx.as_ref().expect("open until finished");
        for ((node, path), chunks) in files.into_iter().zip(per_file) {
            let chunks = chunks.map(|ids| ids.iter().map(|c| index[c]).collect());
            if tx.send(Job { node, path, chunks, data: data.clone() }).is_err() {
                return Err(Error::Invalid("restore writer threads stopped".into()));
            }
        }
        Ok(())
    }

    /// Sends what is left and closes the queue, so the writers finish.
    pub(super) fn finish(&mut self) -> Result<()> {
        let r = self.send();
        self.tx = None;
        r
    }
}

fn write_job(job: Job, am_root: bool) -> Outcome {
    let Job { node, path, chunks, data } = job;
    let result = match chunks {
        Err(e) => Err(Error::Invalid(e)),
        Ok(idx) => write_file(&node, &path, am_root, |w| {
            for i in idx {
                match &data[i] {
                    Ok(d) => w.write_all(d).map_err(|e| Error::io(&path, e))?,
                    Err(e) => return Err(Error::Invalid(e.clone())),
                }
            }
            Ok(())
        }),
    };
    Outcome { node, result }
}
