//! `export`: writes the conventional archives users' scripts and colleagues expect, streamed
//! chunk by chunk (memory stays flat), written to a temporary name and renamed, and reproducible
//! (the same snapshot always gives the same bytes: gzip and tar headers come from the snapshot).
//!
//! Names: `<name>_backup_<type>_<YYYY-MM-DD_HHMMSS>.<ext>` from the snapshot's own local time;
//! `.db.gz` for SQLite snapshots (gunzip gives the database), `.sql.gz` for pg_dump snapshots,
//! `.tar.gz` for everything else. The `dated` layout writes seed 001's `YYYYMMDD/` directories with
//! `*.db`, `*.config`, `*.bak` files and `backup_metadata.json`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::format::manifest::{Node, NodeKind, Snapshot, SnapshotKind};
use crate::id::{ChunkId, SnapshotId};
use crate::ops::restore::locate;
use crate::repo::cache::Location;
use crate::repo::{ChunkReader, Repo};

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
        ArchiveKind::Postgres => "sql.gz",
        ArchiveKind::Tar => "tar.gz",
    };
    format!("{name}_backup_{}_{t}.{ext}", s.backup_type)
}

fn unix_secs(s: &Snapshot) -> u32 {
    s.datetime().map(|t| t.timestamp().clamp(0, u32::MAX as i64) as u32).unwrap_or(0)
}

/// Writes to `dir/.name.tmp-PID`, fsyncs, renames to `dir/name`.
fn atomic_write(dir: &Path, name: &str, f: impl FnOnce(&mut File) -> Result<()>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).ctx(dir)?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let fin = dir.join(name);
    let r = (|| {
        let mut file = File::create(&tmp).ctx(&tmp)?;
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
        if n.kind == NodeKind::File {
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
    let mtime = unix_secs(s);
    atomic_write(out, &file_name, |file| {
        let w = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut gz = GzBuilder::new().mtime(mtime).write(w, Compression::new(6));
        match archive_kind(s) {
            ArchiveKind::Sqlite | ArchiveKind::Postgres => {
                let node = single_file(repo, s)?;
                let mut r = ContentReader::new(repo, &node)?;
                let n = io::copy(&mut r, &mut gz).map_err(|e| Error::io(&file_name, e))?;
                if n != node.size {
                    return Err(Error::corrupt(
                        node.path_str(),
                        format!("exported {n} bytes, snapshot says {}", node.size),
                    ));
                }
            }
            ArchiveKind::Tar => {
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
                tb.finish().map_err(|e| Error::io(&file_name, e))?;
            }
        }
        let w = gz.finish().map_err(|e| Error::io(&file_name, e))?;
        w.into_inner().map_err(|e| Error::io(&file_name, e.into_error()))?;
        Ok(())
    })
}

/// Seed 001's layout: `out/YYYYMMDD/` with `.db` / `.config` / `.bak` files and
/// `backup_metadata.json` updated in place (atomically).
pub fn export_dated(repo: &Repo, id: &SnapshotId, s: &Snapshot, out: &Path, keep_days: i64) -> Result<Vec<PathBuf>> {
    let t = s.datetime().ok_or_else(|| Error::corrupt(format!("snapshot {id}"), "bad time"))?;
    let day = t.format("%Y%m%d").to_string();
    let dir = out.join(&day);
    let mut written = Vec::new();
    let mut files = serde_json::Map::new();
    let kind = archive_kind(s);
    for n in repo.tree(s)? {
        let n = n?;
        if n.kind != NodeKind::File {
            continue;
        }
        crate::format::manifest::check_safe_path(&n.path).map_err(|e| Error::corrupt(n.path_str(), e))?;
        let rel = n.path_str();
        let target_rel = match kind {
            ArchiveKind::Sqlite => {
                let stem = rel.strip_suffix(".db").unwrap_or(&rel);
                format!("{stem}.db")
            }
            _ if s.backup_type == "config" => format!("{rel}.config"),
            _ => format!("{rel}.bak"),
        };
        let dest = dir.join(&target_rel);
        let parent = dest.parent().expect("has parent").to_path_buf();
        let fname = dest.file_name().expect("has name").to_string_lossy().into_owned();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        atomic_write(&parent, &fname, |f| {
            let mut r = ContentReader::new(repo, &n)?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let k = r.read(&mut buf).map_err(|e| Error::io(&rel, e))?;
                if k == 0 {
                    break;
                }
                hasher.update(&buf[..k]);
                f.write_all(&buf[..k]).ctx(&dest)?;
                size += k as u64;
            }
            Ok(())
        })?;
        let mut entry = json!({ "size": size, "hash": hex::encode(hasher.finalize()) });
        if kind == ArchiveKind::Sqlite {
            entry["has_wal"] = json!(s.source.get("sqlite.journal_mode").map(|m| m == "wal").unwrap_or(false));
        }
        files.insert(target_rel.clone(), entry);
        written.push(dest);
    }
    // backup_metadata.json, merged with what is there.
    let meta_path = out.join("backup_metadata.json");
    let mut meta: serde_json::Value = match std::fs::read(&meta_path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::Invalid(format!("{}: not valid JSON: {e}", meta_path.display())))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => json!({"daily": {}, "pre_change": {}, "manual": {}}),
        Err(e) => return Err(Error::io(&meta_path, e)),
    };
    let created = t.to_rfc3339();
    let slug = |d: &Option<String>| {
        d.as_deref()
            .unwrap_or("snapshot")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .collect::<String>()
    };
    let (section, key, mut entry) = match s.kind {
        SnapshotKind::Daily => (
            "daily",
            day.clone(),
            json!({
                "created": created,
                "expires": (t + chrono::Duration::days(keep_days)).to_rfc3339(),
                "status": "active",
                "verified": false,
            }),
        ),
        SnapshotKind::PreChange => (
            "pre_change",
            format!("{}_{}", t.format("%Y%m%d_%H%M"), slug(&s.description)),
            json!({
                "created": created,
                "description": s.description,
                "status": if s.labels.contains_key("verified_by") { "verified" } else { "pending_verification" },
                "change_ticket": s.ticket,
                "retention": "until_verified",
                "verified_by": s.labels.get("verified_by"),
                "verified_date": s.labels.get("verified_date"),
            }),
        ),
        SnapshotKind::Manual => (
            "manual",
            format!("{}_{}", t.format("%Y%m%d_%H%M"), slug(&s.description)),
            json!({
                "created": created,
                "creator": s.creator,
                "purpose": s.purpose,
                "retention": s.labels.get("retention").cloned().unwrap_or_else(|| "permanent".into()),
                "notes": s.description.clone().unwrap_or_default(),
            }),
        ),
    };
    entry["snapshot"] = json!(id.to_hex());
    let obj =
        meta.as_object_mut().ok_or_else(|| Error::Invalid(format!("{}: not a JSON object", meta_path.display())))?;
    let sec = obj.entry(section).or_insert_with(|| json!({}));
    let slot = sec
        .as_object_mut()
        .ok_or_else(|| Error::Invalid(format!("{}: {section} is not an object", meta_path.display())))?;
    // Several snapshots of one day (db, logs, config) share the day's entry: merge their files.
    let existing_files =
        slot.get(&key).and_then(|e| e.get("files")).and_then(|f| f.as_object()).cloned().unwrap_or_default();
    let mut merged: BTreeMap<String, serde_json::Value> = existing_files.into_iter().collect();
    merged.extend(files);
    entry["files"] = json!(merged);
    slot.insert(key, entry);
    let bytes = serde_json::to_vec_pretty(&meta).expect("serializable");
    atomic_write(out, "backup_metadata.json", |f| f.write_all(&bytes).ctx(&meta_path))?;
    Ok(written)
}
