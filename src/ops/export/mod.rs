//! `export`: writes the conventional archives users' scripts and colleagues expect, streamed
//! chunk by chunk (memory stays flat), written to a temporary name and renamed, and reproducible
//! (the same snapshot always gives the same bytes: gzip and tar headers come from the snapshot).
//!
//! Names: `<name>_backup_<type>_<YYYY-MM-DD_HHMMSS>.<ext>` from the snapshot's own local time;
//! `.db.gz` for SQLite snapshots (gunzip gives the database), `.sql.gz` for pg_dump snapshots,
//! `.tar.gz` for everything else. The `dated` layout ([`dated`]) writes seed 001's `YYYYMMDD/`
//! directories with `*.db`, `*.config`, `*.bak` files and `backup_metadata.json`.
//!
//! Exports hold secrets (a `.env`, the database): files are written 0600, or stricter when the
//! source file was, and directories cairn creates 0700, set explicitly so no umask widens them.
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};

use crate::error::{Error, IoContext, Result};
use crate::format::manifest::{Node, NodeKind, Snapshot};
use crate::id::ChunkId;
use crate::ops::restore::locate;
use crate::repo::cache::Location;
use crate::repo::{ChunkReader, Repo};

pub mod dated;

/// A file's content as a `Read`, one chunk in memory at a time.
pub struct ContentReader {
    reader: ChunkReader,
    locs: std::vec::IntoIter<(ChunkId, Location)>,
    cur: Vec<u8>,
    pos: usize,
}

impl ContentReader {
    /// A reader over `node`'s chunks.
    pub fn new(repo: &Repo, node: &Node) -> Result<Self> {
        Ok(ContentReader {
            reader: repo.chunk_reader(),
            locs: locate(repo, &node.chunks)?.into_iter(),
            cur: Vec::new(),
            pos: 0,
        })
    }
}

impl Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.locs.next() {
                None => return Ok(0),
                Some((id, loc)) => {
                    self.cur = self.reader.read(&id, &loc).map_err(io::Error::other)?;
                    self.pos = 0;
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What kind of archive a snapshot becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    /// `.db.gz`
    Sqlite,
    /// `.sql.gz`
    Postgres,
    /// `.tar.gz`
    Tar,
}

/// Classifies a snapshot by what its source recorded.
pub fn archive_kind(s: &Snapshot) -> ArchiveKind {
    if s.source.contains_key("sqlite.page_size") {
        ArchiveKind::Sqlite
    } else if s.source.contains_key("postgres.target") {
        ArchiveKind::Postgres
    } else {
        ArchiveKind::Tar
    }
}

/// The conventional file name of a snapshot's export.
pub fn export_name(name: &str, s: &Snapshot) -> String {
    let t = s.datetime().map(|t| t.format("%Y-%m-%d_%H%M%S").to_string()).unwrap_or_else(|| "unknown-time".into());
    let ext = match archive_kind(s) {
        ArchiveKind::Sqlite => "db.gz",
        // A custom-format archive is for pg_restore, not psql.
        ArchiveKind::Postgres if s.source.get("postgres.format").is_some_and(|f| f == "custom") => "dump.gz",
        ArchiveKind::Postgres => "sql.gz",
        ArchiveKind::Tar => "tar.gz",
    };
    format!("{name}_backup_{}_{t}.{ext}", s.backup_type)
}

fn unix_secs(s: &Snapshot) -> u32 {
    s.datetime().map(|t| t.timestamp().clamp(0, u32::MAX as i64) as u32).unwrap_or(0)
}

/// The mode of an exported file: 0600, or the source file's mode where that is stricter. The
/// owner keeps read access: an export its owner cannot read is no export.
pub fn private_mode(source_mode: u32) -> u32 {
    (source_mode & 0o600) | 0o400
}

/// Creates `dir` and its missing ancestors 0700 (exactly: the umask cannot widen or narrow it);
/// directories that already exist keep their mode.
pub fn create_private_dir_all(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_private_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).ctx(dir),
        // Another export made it meanwhile.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// The temporary name [`atomic_write`] uses for `name`: a kill leaves only this, never a half
/// file under the final name.
fn tmp_name(name: &str) -> String {
    format!(".{name}.tmp-{}", std::process::id())
}

/// Writes to `dir/.name.tmp-PID` with `mode` (exactly), fsyncs, renames to `dir/name`.
pub(crate) fn atomic_write(
    dir: &Path,
    name: &str,
    mode: u32,
    f: impl FnOnce(&mut File) -> Result<()>,
) -> Result<PathBuf> {
    create_private_dir_all(dir)?;
    let tmp = dir.join(tmp_name(name));
    let fin = dir.join(name);
    let r = (|| {
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).ctx(&tmp)?;
        // The umask only narrows the mode given at creation; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(mode)).ctx(&tmp)?;
        f(&mut file)?;
        file.sync_all().ctx(&tmp)?;
        Ok(())
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &fin).ctx(&fin)?;
    crate::store::fsync_dir(dir)?;
    Ok(fin)
}

fn single_file(repo: &Repo, s: &Snapshot) -> Result<Node> {
    let mut file = None;
    for n in repo.tree(s)? {
        let n = n?;
        // The globals captured beside a PostgreSQL dump are not the database.
        let globals = s.source.get("postgres.globals").is_some_and(|g| g.as_bytes() == n.path);
        if n.kind == NodeKind::File && !globals {
            if file.is_some() {
                return Err(Error::Invalid(
                    "snapshot holds more than one file; cannot export as a single database".into(),
                ));
            }
            file = Some(n);
        }
    }
    file.ok_or_else(|| Error::Invalid("snapshot holds no file".into()))
}

fn tar_header(n: &Node, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(n.mode & 0o7777);
    h.set_uid(n.uid as u64);
    h.set_gid(n.gid as u64);
    h.set_mtime(n.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
    h
}

/// Exports one snapshot into `out`; returns the file written.
pub fn export(repo: &Repo, s: &Snapshot, name: &str, out: &Path) -> Result<PathBuf> {
    let file_name = export_name(name, s);
    let single = single_node(repo, s)?;
    // A single-file archive is as private as its file; a tar of many is owner-only.
    let mode = single.as_ref().map_or(0o600, |n| private_mode(n.mode));
    atomic_write(out, &file_name, mode, |file| {
        let w = std::io::BufWriter::with_capacity(1 << 20, file);
        let w = write_archive(repo, s, single, &file_name, w)?;
        w.into_inner().map_err(|e| Error::io(&file_name, e.into_error()))?;
        Ok(())
    })
}

/// The one file a database snapshot's archive holds (`None` for a tar of many).
pub fn single_node(repo: &Repo, s: &Snapshot) -> Result<Option<Node>> {
    match archive_kind(s) {
        ArchiveKind::Sqlite | ArchiveKind::Postgres => Ok(Some(single_file(repo, s)?)),
        ArchiveKind::Tar => Ok(None),
    }
}

/// Streams the archive of `s` (the bytes [`export`] writes) into `w`, one chunk in memory at a
/// time; `single` is [`single_node`]'s answer and `what` names the output in errors. Returns
/// `w`, flushed by gzip but not by itself.
pub fn write_archive<W: io::Write>(repo: &Repo, s: &Snapshot, single: Option<Node>, what: &str, w: W) -> Result<W> {
    let mut gz = GzBuilder::new().mtime(unix_secs(s)).write(w, Compression::new(6));
    match single {
        Some(node) => {
            let mut r = ContentReader::new(repo, &node)?;
            let n = io::copy(&mut r, &mut gz).map_err(|e| Error::io(what, e))?;
            if n != node.size {
                return Err(Error::corrupt(
                    node.path_str(),
                    format!("exported {n} bytes, snapshot says {}", node.size),
                ));
            }
        }
        None => {
            let mut tb = tar::Builder::new(&mut gz);
            tb.follow_symlinks(false);
            for n in repo.tree(s)? {
                let n = n?;
                crate::format::manifest::check_safe_path(&n.path).map_err(|e| Error::corrupt(n.path_str(), e))?;
                let p = Path::new(OsStr::from_bytes(&n.path));
                let io_err = |e: io::Error| Error::io(p, e);
                match n.kind {
                    NodeKind::Dir => {
                        let mut h = tar_header(&n, tar::EntryType::Directory, 0);
                        tb.append_data(&mut h, p, io::empty()).map_err(io_err)?;
                    }
                    NodeKind::Symlink => {
                        let mut h = tar_header(&n, tar::EntryType::Symlink, 0);
                        tb.append_link(&mut h, p, Path::new(OsStr::from_bytes(&n.target))).map_err(io_err)?;
                    }
                    NodeKind::File => {
                        let mut h = tar_header(&n, tar::EntryType::Regular, n.size);
                        let r = ContentReader::new(repo, &n)?;
                        tb.append_data(&mut h, p, r).map_err(io_err)?;
                    }
                }
            }
            tb.finish().map_err(|e| Error::io(what, e))?;
        }
    }
    gz.finish().map_err(|e| Error::io(what, e))
}
