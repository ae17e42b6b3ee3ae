//! A consistent capture of a live SQLite database. By default its pages are streamed straight
//! into the chunker inside one read transaction (`stream`): nothing is written beside the
//! repository. `VACUUM INTO` (config `"vacuum": true`) and the online backup API (the fallback
//! where streaming cannot work, recorded as `sqlite.method` `backup-api-fallback`) write a
//! temporary copy into the repository's `tmp/` instead. Whatever the method, what is stored passes
//! `PRAGMA quick_check` first. Works for WAL and rollback-journal databases. Never a plain file
//! copy, which can tear mid-transaction.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};
use crate::format::chunker::sqlite_page_size;

mod stream;
pub use stream::PageStream;

/// A copy on disk, removed on drop.
pub struct SqliteCopy {
    /// The copy.
    pub path: PathBuf,
    /// Facts recorded in the snapshot (`sqlite.*`).
    pub meta: BTreeMap<String, String>,
}

impl Drop for SqliteCopy {
    fn drop(&mut self) {
        for s in ["", "-journal", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", self.path.display()));
        }
    }
}

/// A database ready to be read: its pages streamed from one read transaction, or a checked
/// temporary copy.
pub enum Capture {
    /// Pages straight from the database (no temporary file).
    Stream(PageStream),
    /// A copy in the repository's `tmp/` (VACUUM INTO, or the backup API where streaming
    /// cannot work).
    Copy(SqliteCopy),
}

impl Capture {
    /// Facts recorded in the snapshot (`sqlite.*`).
    pub fn meta(&self) -> &BTreeMap<String, String> {
        match self {
            Capture::Stream(s) => &s.meta,
            Capture::Copy(c) => &c.meta,
        }
    }

    /// The database's bytes; a copy is removed once the reader is dropped.
    pub fn into_reader(self) -> Result<Box<dyn Read + Send>> {
        match self {
            Capture::Stream(s) => Ok(Box::new(s)),
            Capture::Copy(copy) => {
                let file = std::fs::File::open(&copy.path).map_err(|e| Error::io(&copy.path, e))?;
                Ok(Box::new(CopyReader { file, _copy: copy }))
            }
        }
    }
}

/// A copy's file, kept on disk while it is read.
struct CopyReader {
    file: std::fs::File,
    _copy: SqliteCopy,
}

impl Read for CopyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

/// Captures `db` with the facts a restore test compares (page size, journal mode, schema hash,
/// each table's row count; `full` false: only page size and journal mode, for databases met in
/// a file walk, where a tree may hold many). `vacuum`: a `VACUUM INTO` copy in `tmp_dir`;
/// otherwise the page stream, or a backup-API copy in `tmp_dir` where the stream cannot work.
pub fn capture(db: &Path, tmp_dir: &Path, vacuum: bool, busy_timeout: Duration, full: bool) -> Result<Capture> {
    if vacuum {
        return Ok(Capture::Copy(copy(db, tmp_dir, true, busy_timeout)?));
    }
    check_file(db)?;
    let why = match stream::open(db, busy_timeout, full) {
        Ok(mut s) => {
            s.meta.insert("sqlite.source".into(), db.display().to_string());
            return Ok(Capture::Stream(s));
        }
        Err(stream::OpenError::Failed(e)) => return Err(e),
        Err(stream::OpenError::Unavailable(why)) => why,
    };
    tracing::warn!(
        "{}: cannot stream its pages ({why}); making a temporary backup-API copy in {} instead",
        db.display(),
        tmp_dir.display()
    );
    let mut c = if full { copy(db, tmp_dir, false, busy_timeout)? } else { copy_checked(db, tmp_dir, busy_timeout)? };
    c.meta.insert("sqlite.method".into(), "backup-api-fallback".into());
    c.meta.insert("sqlite.fallback".into(), why);
    Ok(Capture::Copy(c))
}

fn busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Makes a consistent, checked copy of `db` in `tmp_dir`, with the facts a restore test compares
/// (page size, journal mode, schema hash, each table's row count).
pub fn copy(db: &Path, tmp_dir: &Path, vacuum: bool, busy_timeout: Duration) -> Result<SqliteCopy> {
    let (mut copy, start) = raw_copy(db, tmp_dir, vacuum, busy_timeout)?;
    copy.meta = inspect(&copy.path)?;
    copy.meta.insert("sqlite.method".into(), if vacuum { "vacuum-into" } else { "backup-api" }.into());
    copy.meta.insert("sqlite.source".into(), db.display().to_string());
    copy.meta.insert("sqlite.copy_ms".into(), start.elapsed().as_millis().to_string());
    Ok(copy)
}

/// A consistent copy of a database met in a file walk: the online backup API, then only
/// `PRAGMA quick_check` (no row counts: a tree may hold many databases). `meta` holds the page
/// size and journal mode.
pub fn copy_checked(db: &Path, tmp_dir: &Path, busy_timeout: Duration) -> Result<SqliteCopy> {
    let (mut copy, _) = raw_copy(db, tmp_dir, false, busy_timeout)?;
    let c = quick_check(&copy.path)?;
    let e = |s: rusqlite::Error| Error::corrupt(copy.path.display().to_string(), crate::error::sqlite_cause(&s));
    let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(e)?;
    let journal: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(e)?;
    drop(c);
    copy.meta.insert("sqlite.page_size".into(), page_size.to_string());
    copy.meta.insert("sqlite.journal_mode".into(), journal);
    Ok(copy)
}

/// Whether `head` (a file's first bytes) starts with the SQLite header string.
pub fn is_sqlite_header(head: &[u8]) -> bool {
    head.starts_with(crate::format::chunker::SQLITE_MAGIC)
}

/// A clear error for a path that is missing, not a regular file, or not a SQLite database.
fn check_file(db: &Path) -> Result<()> {
    let meta = match std::fs::metadata(db) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound(format!("SQLite database {} does not exist", db.display())))
        }
        Err(e) => return Err(Error::io(db, e)),
        Ok(m) => m,
    };
    if !meta.is_file() {
        return Err(Error::Invalid(format!("{}: not a regular file", db.display())));
    }
    let head = {
        let mut f = std::fs::File::open(db).map_err(|e| Error::io(db, e))?;
        let mut h = [0u8; 100];
        let n = std::io::Read::read(&mut f, &mut h).map_err(|e| Error::io(db, e))?;
        h[..n].to_vec()
    };
    if sqlite_page_size(&head).is_none() {
        return Err(Error::Invalid(format!("{}: not a SQLite database (no SQLite header)", db.display())));
    }
    Ok(())
}

/// The copy itself (unchecked) and when it started.
fn raw_copy(db: &Path, tmp_dir: &Path, vacuum: bool, busy_timeout: Duration) -> Result<(SqliteCopy, Instant)> {
    check_file(db)?;
    let e = |source: rusqlite::Error| sqlite_error(db, db, source);
    let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(e)?;
    src.busy_timeout(busy_timeout).map_err(e)?;
    let mut rnd = [0u8; 8];
    crate::util::os_random(&mut rnd);
    let path = tmp_dir.join(format!("sqlite-{}.db", hex::encode(rnd)));
    let copy = SqliteCopy { path: path.clone(), meta: BTreeMap::new() };
    let start = Instant::now();
    if vacuum {
        loop {
            match src.execute("VACUUM INTO ?1", [path.to_string_lossy().as_ref()]) {
                Ok(_) => break,
                Err(err) if busy(&err) && start.elapsed() < busy_timeout => {
                    let _ = std::fs::remove_file(&path);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) if busy(&err) => return Err(busy_error(db, busy_timeout)),
                Err(err) => return Err(sqlite_error(db, &path, err)),
            }
        }
    } else {
        let mut dst = Connection::open(&path).map_err(|s| sqlite_error(db, &path, s))?;
        loop {
            let b = rusqlite::backup::Backup::new(&src, &mut dst).map_err(e)?;
            // -1: all pages in one step, i.e. under one read transaction: a consistent copy even
            // while the application commits.
            match b.step(-1) {
                Ok(rusqlite::backup::StepResult::Done) => break,
                Ok(rusqlite::backup::StepResult::Busy) | Ok(rusqlite::backup::StepResult::Locked) => {
                    if start.elapsed() >= busy_timeout {
                        return Err(busy_error(db, busy_timeout));
                    }
                    drop(b);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(rusqlite::backup::StepResult::More) => {}
                Ok(_) => {}
                Err(err) if busy(&err) && start.elapsed() < busy_timeout => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(err) if busy(&err) => return Err(busy_error(db, busy_timeout)),
                // A failed step is reported on the copy's handle (rusqlite reads its message,
                // "not an error"): its cause is mostly the copy's file system.
                Err(err) => return Err(sqlite_error(db, &path, err)),
            }
        }
        drop(dst);
    }
    let f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    f.sync_all().map_err(|e| Error::io(&path, e))?;
    Ok((copy, start))
}

/// An SQLite failure while copying `db`, where `at` is the file it most likely concerns (the
/// database, or the copy being written): a full, read-only or forbidden file system is named with
/// its path; anything else names the database and SQLite's cause.
fn sqlite_error(db: &Path, at: &Path, err: rusqlite::Error) -> Error {
    Error::sqlite_os(at, &err).unwrap_or_else(|| {
        let cause = crate::error::sqlite_cause(&err);
        if at == db {
            Error::Invalid(format!("{}: {cause}", db.display()))
        } else {
            Error::Invalid(format!("{}: copying it to {}: {cause}", db.display(), at.display()))
        }
    })
}

fn busy_error(db: &Path, t: Duration) -> Error {
    Error::Busy(format!(
        "{}: database stayed busy (locked) for more than {}s; nothing stored",
        db.display(),
        t.as_secs()
    ))
}

/// Checks a database copy and collects what a later restore test compares: page size, a hash of
/// the schema, and each table's row count.
pub fn inspect(path: &Path) -> Result<BTreeMap<String, String>> {
    let e = |s: rusqlite::Error| Error::corrupt(path.display().to_string(), crate::error::sqlite_cause(&s));
    let c = quick_check(path)?;
    let mut meta = BTreeMap::new();
    let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(e)?;
    meta.insert("sqlite.page_size".into(), page_size.to_string());
    let journal: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(e)?;
    meta.insert("sqlite.journal_mode".into(), journal);
    meta.extend(schema_and_counts(&c).map_err(e)?);
    Ok(meta)
}

/// Opens a copy read-only and runs `PRAGMA quick_check` on it.
fn quick_check(path: &Path) -> Result<Connection> {
    let e = |s: rusqlite::Error| Error::corrupt(path.display().to_string(), crate::error::sqlite_cause(&s));
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(e)?;
    let check: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(e)?;
    if check != "ok" {
        return Err(Error::corrupt(path.display().to_string(), format!("quick_check: {check}")));
    }
    Ok(c)
}

/// Schema hash and row counts of an open database.
pub fn schema_and_counts(c: &Connection) -> rusqlite::Result<BTreeMap<String, String>> {
    let mut meta = BTreeMap::new();
    let mut h = blake3::Hasher::new();
    let mut tables = Vec::new();
    {
        let mut st =
            c.prepare("SELECT type, name, tbl_name, coalesce(sql,'') FROM sqlite_master ORDER BY type, name")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })?;
        for r in rows {
            let (ty, name, tbl, sql) = r?;
            for part in [&ty, &name, &tbl, &sql] {
                h.update(&(part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
            if ty == "table" && !name.starts_with("sqlite_") {
                tables.push(name);
            }
        }
    }
    meta.insert("sqlite.schema_hash".into(), h.finalize().to_hex().to_string());
    for t in tables {
        let n: i64 = c.query_row(&format!("SELECT count(*) FROM \"{}\"", t.replace('"', "\"\"")), [], |r| r.get(0))?;
        meta.insert(format!("sqlite.rows.{t}"), n.to_string());
    }
    Ok(meta)
}
