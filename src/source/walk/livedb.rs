//! Files that a plain read can tear: a live SQLite database (recognised by its header, whatever
//! its name) is stored as the pages of one read transaction (`sqlite::capture`), and its `-wal`,
//! `-shm` and `-journal` are left out (what they hold is in those pages); a file changed moments
//! before its read is read twice and compared.

use std::fs::{File, OpenOptions};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{node_from_meta, Ev, FileOutcome, Walker, RECENT_NS};
use crate::format::chunker::StreamChunker;
use crate::format::manifest::NodeKind;
use crate::source::sqlite;

/// The files SQLite keeps beside a database, in name order.
const SIDECARS: [&str; 3] = ["-journal", "-shm", "-wal"];
/// How long a database met in a walk may stay locked by its application before it is reported.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many databases get their own `sqlite.copy.<path>` fact (`sqlite.copies` counts
/// them all), so a tree full of small databases does not bloat the snapshot file.
const MAX_DB_FACTS: u64 = 100;

/// The database `path` would be a sidecar of (`x.db-wal` -> `x.db`), by name only.
pub(super) fn sidecar_of(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.as_bytes();
    let base = SIDECARS.iter().find_map(|s| name.strip_suffix(s.as_bytes()))?;
    (!base.is_empty()).then(|| path.with_file_name(std::ffi::OsString::from_vec(base.to_vec())))
}

/// The sidecars present beside `path` (suffix, size): looked up in the directory's sorted
/// listing when there is one, else on disk.
pub(super) fn sidecars(path: &Path, siblings: Option<&[std::ffi::OsString]>) -> Vec<(&'static str, u64)> {
    let Some(name) = path.file_name() else { return Vec::new() };
    let mut out = Vec::new();
    for s in SIDECARS {
        let mut candidate = name.as_bytes().to_vec();
        candidate.extend_from_slice(s.as_bytes());
        if let Some(names) = siblings {
            if names.binary_search_by(|n| n.as_bytes().cmp(&candidate)).is_err() {
                continue;
            }
        }
        if let Ok(m) = std::fs::symlink_metadata(path.with_file_name(std::ffi::OsString::from_vec(candidate))) {
            if m.is_file() {
                out.push((s, m.len()));
            }
        }
    }
    out
}

/// Whether a -wal or -journal may hold pages the database file does not (-shm never does).
pub(super) fn holds_data(sidecars: &[(&str, u64)]) -> bool {
    sidecars.iter().any(|(s, len)| *s != "-shm" && *len > 0)
}

/// Whether an open file starts with the 16-byte SQLite header string.
pub(super) fn head_is_sqlite(f: &File) -> bool {
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match f.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    sqlite::is_sqlite_header(&head[..n])
}

/// `head_is_sqlite` of the file at `path` (false when it cannot be opened: the read reports that).
pub(super) fn sniff(path: &Path) -> bool {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
        .open(path)
        .or_else(|_| OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path))
        .is_ok_and(|f| head_is_sqlite(&f))
}

/// Whether the file's mtime or ctime is within `RECENT_NS` of now, or later (a clock that is
/// behind the file system's): a rewrite within the same timestamp tick would not show in either.
pub(super) fn recently_changed(m: &std::fs::Metadata) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let changed = super::ns(m.mtime(), m.mtime_nsec()).max(super::ns(m.ctime(), m.ctime_nsec()));
    changed >= now.saturating_sub(RECENT_NS)
}

/// Reads the first `len` bytes of `f` again; says why the read is not trustworthy when they no
/// longer hash to `digest`.
pub(super) fn differs_on_second_read(
    f: &File,
    len: u64,
    digest: blake3::Hash,
) -> std::io::Result<Option<&'static str>> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let want = (len - off).min(buf.len() as u64) as usize;
        let n = match f.read_at(&mut buf[..want], off) {
            Ok(0) => return Ok(Some("shrank while being read")),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok((h.finalize() != digest).then_some("was rewritten while being read"))
}

impl Walker {
    /// Stores the database at `fs_path` as the checked pages of one read transaction under its
    /// own path and metadata, or reports it: a database is never stored as a raw read.
    pub(super) fn sqlite_file(
        &mut self,
        fs_path: &Path,
        tree_path: Vec<u8>,
        meta: &std::fs::Metadata,
        sidecars: &[(&str, u64)],
    ) -> bool {
        let capture = match sqlite::capture(fs_path, &self.sqlite_tmp, false, BUSY_TIMEOUT, false) {
            Ok(c) => c,
            Err(e) => {
                return self.error(
                    &tree_path,
                    format!(
                        "{}: a SQLite database that could not be read consistently ({e}); not stored",
                        fs_path.display()
                    ),
                )
            }
        };
        let method = match capture.meta().get("sqlite.method").map(String::as_str) {
            Some("page-stream") => "page stream (one read transaction)".to_string(),
            _ => format!(
                "backup-api copy (fallback: {})",
                capture.meta().get("sqlite.fallback").map(String::as_str).unwrap_or("?")
            ),
        };
        let facts =
            (capture.meta().get("sqlite.page_size").cloned(), capture.meta().get("sqlite.journal_mode").cloned());
        let reader = match capture.into_reader() {
            Ok(r) => r,
            Err(e) => return self.error(&tree_path, format!("{}: opening its copy: {e}", fs_path.display())),
        };
        // The node keeps the database's own metadata (mode, owner, times) taken before the read:
        // a later run compares against those.
        if !self.emit(Ev::FileStart(node_from_meta(tree_path.clone(), NodeKind::File, meta))) {
            return false;
        }
        let (size, res) = self.read_stream(reader);
        let outcome = match res {
            Ok(()) => FileOutcome::Stored,
            Err(e) => FileOutcome::Failed(format!("{}: reading it: {e}", fs_path.display())),
        };
        let stored = matches!(outcome, FileOutcome::Stored);
        if !self.emit(Ev::FileEnd { size, outcome }) {
            return false;
        }
        if !stored {
            return true;
        }
        self.db_copies += 1;
        let name = fs_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let side = if sidecars.is_empty() {
            "no sidecar files".to_string()
        } else {
            let list: Vec<String> = sidecars.iter().map(|(s, len)| format!("{name}{s} ({len} bytes)")).collect();
            format!("{} in what was read, not stored", list.join(", "))
        };
        let fact = format!(
            "{method}, quick_check ok, page size {}, journal mode {}; {side}",
            facts.0.as_deref().unwrap_or("?"),
            facts.1.as_deref().unwrap_or("?"),
        );
        let path = String::from_utf8_lossy(&tree_path).into_owned();
        tracing::info!("{path}: SQLite database stored as a {fact}");
        if self.db_copies > MAX_DB_FACTS {
            return true;
        }
        self.emit(Ev::Fact(format!("sqlite.copy.{path}"), fact))
    }

    /// Sends a database's bytes as the current file's chunks; returns bytes read and how it
    /// ended (a failed read is an error, never a shorter file).
    fn read_stream(&mut self, reader: Box<dyn std::io::Read + Send>) -> (u64, std::io::Result<()>) {
        let mut ch = match StreamChunker::new(reader, self.cutter.clone(), self.sqlite_detect) {
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
                Ok(None) => return (ch.bytes_read, Ok(())),
                Err(e) => return (ch.bytes_read, Err(e)),
            }
        }
    }
}
