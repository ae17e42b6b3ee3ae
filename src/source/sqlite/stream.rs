//! A live SQLite database read page by page inside one read transaction, straight into the
//! chunker: no temporary copy. The `sqlite_dbpage` virtual table (compiled into the bundled
//! library through `.cargo/config.toml`) returns each page as the pager sees it in that
//! transaction, i.e. with the WAL's committed frames applied, so the stream is the file a full
//! checkpoint at that moment would leave: it opens and passes `integrity_check` as it is.
//! `quick_check`, the schema hash and the row counts run in the same transaction before the
//! first page is sent, so the facts describe exactly the pages stored.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use rusqlite::{Connection, OpenFlags};

use super::{busy, busy_error, schema_and_counts, sqlite_error};
use crate::error::{Error, Result};

/// Set (to anything but empty) to capture with the online backup API's temporary copy instead,
/// as where `sqlite_dbpage` is missing (a system SQLite); recorded as a fallback.
pub const NO_STREAM_ENV: &str = "CAIRN_SQLITE_NO_STREAM";
/// Bytes of pages per message from the reading thread: small, so memory stays flat whatever the
/// database's size (at most `QUEUE` + 2 of these are alive).
const BATCH_BYTES: usize = 256 << 10;
const QUEUE: usize = 4;

/// Why the stream could not start.
pub(super) enum OpenError {
    /// This build or this run cannot stream (no `sqlite_dbpage`): a copy may still work.
    Unavailable(String),
    /// The database itself failed (busy, damaged, not a database, unreadable): reported.
    Failed(Error),
}

impl From<Error> for OpenError {
    fn from(e: Error) -> Self {
        OpenError::Failed(e)
    }
}

enum Msg {
    Pages(Vec<u8>),
    End,
    Failed(String),
}

/// The pages of one read transaction, in order, as a byte stream. Dropping it ends the
/// transaction (and waits for the reading thread, so the database's lock is released).
pub struct PageStream {
    /// Facts recorded in the snapshot (`sqlite.*`).
    pub meta: BTreeMap<String, String>,
    rx: Option<Receiver<Msg>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

/// Opens `db`, starts its read transaction (waiting up to `busy_timeout` for a writer's lock),
/// runs `quick_check` and collects the facts (`full`: schema hash and row counts too), then
/// starts sending its pages.
pub(super) fn open(db: &Path, busy_timeout: Duration, full: bool) -> std::result::Result<PageStream, OpenError> {
    if std::env::var_os(NO_STREAM_ENV).is_some_and(|v| !v.is_empty()) {
        return Err(OpenError::Unavailable(format!("{NO_STREAM_ENV} is set")));
    }
    let start = Instant::now();
    let e = |s: rusqlite::Error| sqlite_error(db, db, s);
    // Read-write like the backup API's source: a hot journal left by a crashed writer must be
    // rolled back before the pages mean anything, and a WAL database needs its -shm.
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(e)?;
    c.busy_timeout(busy_timeout).map_err(e)?;
    begin_read(&c, db, busy_timeout, start)?;
    if let Err(err) = c.prepare("SELECT pgno, data FROM sqlite_dbpage('main') LIMIT 0") {
        let cause = crate::error::sqlite_cause(&err);
        if cause.contains("no such table") {
            return Err(OpenError::Unavailable(format!("this SQLite library has no sqlite_dbpage ({cause})")));
        }
        return Err(e(err).into());
    }
    let corrupt = |s: rusqlite::Error| Error::corrupt(db.display().to_string(), crate::error::sqlite_cause(&s));
    let check: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(corrupt)?;
    if check != "ok" {
        return Err(Error::corrupt(db.display().to_string(), format!("quick_check: {check}")).into());
    }
    let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(corrupt)?;
    let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).map_err(corrupt)?;
    let journal: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(corrupt)?;
    let mut meta = BTreeMap::new();
    meta.insert("sqlite.page_size".into(), page_size.to_string());
    meta.insert("sqlite.journal_mode".into(), journal);
    if full {
        meta.extend(schema_and_counts(&c).map_err(corrupt)?);
    }
    meta.insert("sqlite.method".into(), "page-stream".into());
    meta.insert("sqlite.copy_ms".into(), start.elapsed().as_millis().to_string());
    let (tx, rx) = bounded(QUEUE);
    let path = db.to_path_buf();
    let shown = db.display().to_string();
    let geometry = (usize::try_from(page_size).unwrap_or(0), u32::try_from(pages).unwrap_or(0));
    let thread = std::thread::Builder::new()
        .name("sqlite-pages".into())
        .spawn(move || pump(c, &tx, geometry, &shown))
        .map_err(|err| Error::Invalid(format!("{}: starting the page reader: {err}", db.display())))?;
    Ok(PageStream { meta, rx: Some(rx), cur: Vec::new(), pos: 0, done: false, path, thread: Some(thread) })
}

/// `BEGIN` and a first read, which takes the read lock (a WAL read mark, or the rollback
/// journal's SHARED lock) that every later statement shares. Busy until `busy_timeout` is
/// waited out like the backup API's copy: the connection's own handler plus retries.
fn begin_read(c: &Connection, db: &Path, busy_timeout: Duration, start: Instant) -> Result<()> {
    loop {
        let r = c
            .execute_batch("BEGIN")
            .and_then(|()| c.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)));
        match r {
            Ok(_) => return Ok(()),
            Err(err) if busy(&err) => {
                let _ = c.execute_batch("ROLLBACK");
                if start.elapsed() >= busy_timeout {
                    return Err(busy_error(db, busy_timeout));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(err) => return Err(sqlite_error(db, db, err)),
        }
    }
}

/// The reading thread: every page 1..=`pages` of `page_size` bytes, in order, in batches; ends
/// with `End`, or `Failed` naming the database. Returns when the receiver goes away.
fn pump(c: Connection, tx: &Sender<Msg>, (page_size, pages): (usize, u32), shown: &str) {
    let msg = match send_pages(&c, tx, page_size, pages) {
        Ok(true) => Msg::End,
        Ok(false) => return,
        Err(why) => Msg::Failed(format!("{shown}: {why}")),
    };
    let _ = tx.send(msg);
    // Dropping the connection ends the read transaction (nothing was written).
}

fn send_pages(c: &Connection, tx: &Sender<Msg>, page_size: usize, pages: u32) -> std::result::Result<bool, String> {
    if page_size == 0 {
        return Err("page size 0".into());
    }
    let cause = |s: rusqlite::Error| format!("reading its pages: {}", crate::error::sqlite_cause(&s));
    let mut st = c.prepare("SELECT pgno, data FROM sqlite_dbpage('main')").map_err(cause)?;
    let mut rows = st.query([]).map_err(cause)?;
    let per_batch = (BATCH_BYTES / page_size).max(1) * page_size;
    let mut buf = Vec::with_capacity(per_batch);
    let mut next = 1u32;
    while let Some(row) = rows.next().map_err(cause)? {
        let pgno: u32 = row.get(0).map_err(cause)?;
        let data = row.get_ref(1).map_err(cause)?.as_blob().map_err(|e| format!("page {pgno}: {e}"))?;
        // The table's contract, checked so a surprise cannot become a silently wrong file.
        if pgno != next || data.len() != page_size {
            return Err(format!(
                "page {pgno} ({} bytes) where page {next} of {page_size} bytes was expected",
                data.len()
            ));
        }
        next += 1;
        buf.extend_from_slice(data);
        if buf.len() >= per_batch
            && tx.send(Msg::Pages(std::mem::replace(&mut buf, Vec::with_capacity(per_batch)))).is_err()
        {
            return Ok(false);
        }
    }
    if next - 1 != pages {
        return Err(format!("{} pages read, {pages} in the transaction", next - 1));
    }
    Ok(buf.is_empty() || tx.send(Msg::Pages(buf)).is_ok())
}

impl Read for PageStream {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done || out.is_empty() {
                return Ok(0);
            }
            let Some(rx) = self.rx.as_ref() else { return Ok(0) };
            match rx.recv() {
                Ok(Msg::Pages(p)) => (self.cur, self.pos) = (p, 0),
                Ok(Msg::End) => self.done = true,
                Ok(Msg::Failed(why)) => return Err(std::io::Error::other(why)),
                Err(_) => {
                    return Err(std::io::Error::other(format!(
                        "{}: the page reader stopped before the last page",
                        self.path.display()
                    )))
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for PageStream {
    fn drop(&mut self) {
        // The reader notices the closed channel at its next send and ends the transaction.
        drop(self.rx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
