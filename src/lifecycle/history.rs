//! The activity log: every run of every type, in a local SQLite file (`state/history.sqlite`).
//! Unlike the cache it is not derived from the repository (it also records failures, which leave
//! nothing in the repository), so it lives outside `cache/` and is never synced.

use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::error::{Error, Result};

mod removals;
pub use removals::Removal;

/// Outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A snapshot was written.
    Success,
    /// On-change type with nothing changed: counts as success.
    Unchanged,
    /// It failed.
    Failed,
    /// A snapshot was written, but some files could not be read (listed in it).
    Partial,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Unchanged => "unchanged",
            Outcome::Failed => "failed",
            Outcome::Partial => "partial",
        }
    }
    /// Failed or partial: not a complete backup (alerts, consecutive failures, last error).
    pub fn failed(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Partial)
    }
    fn parse(s: &str) -> Outcome {
        match s {
            "success" => Outcome::Success,
            "unchanged" => Outcome::Unchanged,
            "partial" => Outcome::Partial,
            _ => Outcome::Failed,
        }
    }
}

/// One recorded run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Row id.
    pub id: i64,
    /// Backup type, or "sync:NAME" / "prune" / "forget" for maintenance.
    pub backup_type: String,
    /// Start time.
    pub start: String,
    /// End time.
    pub end: String,
    /// Outcome.
    pub result: Outcome,
    /// Error text when failed.
    pub error: Option<String>,
    /// Files in the snapshot.
    pub files: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes added to the repository.
    pub bytes_added: u64,
    /// Snapshot id.
    pub snapshot: Option<String>,
    /// Retries needed.
    pub retries: u32,
}

/// Reads a `runs` row selected in column order.
fn run_row(r: &rusqlite::Row) -> rusqlite::Result<Run> {
    Ok(Run {
        id: r.get(0)?,
        backup_type: r.get(1)?,
        start: r.get(2)?,
        end: r.get(3)?,
        result: Outcome::parse(&r.get::<_, String>(4)?),
        error: r.get(5)?,
        files: r.get::<_, i64>(6)? as u64,
        bytes_read: r.get::<_, i64>(7)? as u64,
        bytes_added: r.get::<_, i64>(8)? as u64,
        snapshot: r.get(9)?,
        retries: r.get(10)?,
    })
}

impl Run {
    /// A row to record (`id` 0 until it is), with no counts, snapshot, error or retries yet.
    pub fn new(
        backup_type: impl Into<String>,
        start: impl Into<String>,
        end: impl Into<String>,
        result: Outcome,
    ) -> Run {
        Run {
            id: 0,
            backup_type: backup_type.into(),
            start: start.into(),
            end: end.into(),
            result,
            error: None,
            files: 0,
            bytes_read: 0,
            bytes_added: 0,
            snapshot: None,
            retries: 0,
        }
    }

    /// Seconds from start to end (None when either time does not parse).
    pub fn duration_s(&self) -> Option<f64> {
        let s = DateTime::parse_from_rfc3339(&self.start).ok()?;
        let e = DateTime::parse_from_rfc3339(&self.end).ok()?;
        Some((e - s).num_milliseconds().max(0) as f64 / 1000.0)
    }
}

/// The history database.
pub struct History {
    conn: Connection,
    path: PathBuf,
}

impl History {
    fn wrap<T>(&self, r: rusqlite::Result<T>) -> Result<T> {
        r.map_err(|source| Error::cache(&self.path, source))
    }

    /// Opens (creating) the history of the repository at `repo_root`. On a full disk or a
    /// read-only repository it is opened read-only (status and history still show it), with a
    /// warning; recording then fails with the reason.
    pub fn open(repo_root: &Path) -> Result<History> {
        let dir = repo_root.join("state");
        let path = dir.join("history.sqlite");
        let rw = std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e)).and_then(|_| {
            let conn = Connection::open(&path).map_err(|source| Error::cache(&path, source))?;
            let h = History { conn, path: path.clone() };
            h.wrap(h.conn.busy_timeout(std::time::Duration::from_secs(30)))?;
            h.wrap(h.conn.execute_batch("PRAGMA journal_mode=WAL;"))?;
            h.create()?;
            Ok(h)
        });
        match rw {
            Err(e) if e.is_unwritable() => {
                tracing::warn!("{e}; reading the history without writing to it");
                let ro = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
                // immutable: no -shm or lock file is created (they may be what cannot be written).
                const KEEP: &percent_encoding::AsciiSet =
                    &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'.').remove(b'-').remove(b'_');
                let name = path.to_string_lossy();
                let uri = format!("file:{}?immutable=1", percent_encoding::utf8_percent_encode(&name, KEEP));
                match path.exists().then(|| Connection::open_with_flags(&uri, ro)) {
                    Some(Ok(conn)) => Ok(History { conn, path }),
                    _ => {
                        let conn = Connection::open_in_memory().map_err(|source| Error::cache(&path, source))?;
                        let h = History { conn, path };
                        h.create()?;
                        Ok(h)
                    }
                }
            }
            r => r,
        }
    }

    fn create(&self) -> Result<()> {
        self.wrap(self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY, type TEXT NOT NULL, start TEXT NOT NULL,
                 end TEXT NOT NULL, result TEXT NOT NULL, error TEXT, files INTEGER NOT NULL DEFAULT 0,
                 bytes_read INTEGER NOT NULL DEFAULT 0, bytes_added INTEGER NOT NULL DEFAULT 0,
                 snapshot TEXT, retries INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX IF NOT EXISTS runs_type ON runs(type, id);
             CREATE TABLE IF NOT EXISTS alerts(type TEXT NOT NULL, event TEXT NOT NULL, time TEXT NOT NULL,
                 PRIMARY KEY(type, event));",
        ))?;
        self.create_removals()
    }

    /// Records a run.
    pub fn record(&self, r: &Run) -> Result<i64> {
        self.wrap(self.conn.execute(
            "INSERT INTO runs(type, start, end, result, error, files, bytes_read, bytes_added, snapshot, retries)
             VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
            params![
                r.backup_type,
                r.start,
                r.end,
                r.result.as_str(),
                r.error,
                r.files as i64,
                r.bytes_read as i64,
                r.bytes_added as i64,
                r.snapshot,
                r.retries
            ],
        ))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Runs, newest first.
    pub fn list(&self, backup_type: Option<&str>, limit: usize) -> Result<Vec<Run>> {
        self.query(
            "SELECT id, type, start, end, result, error, files, bytes_read, bytes_added, snapshot, retries FROM runs
             WHERE (?1 IS NULL OR type = ?1) ORDER BY id DESC LIMIT ?2",
            params![backup_type, limit as i64],
        )
    }

    /// The runs whose type starts with `prefix` recorded after run `id` and ending at `end`,
    /// oldest first: the rows one operation recorded together (a verify's restore tests).
    pub fn recorded_with(&self, id: i64, prefix: &str, end: &str) -> Result<Vec<Run>> {
        self.query(
            "SELECT id, type, start, end, result, error, files, bytes_read, bytes_added, snapshot, retries FROM runs
             WHERE id > ?1 AND substr(type, 1, length(?2)) = ?2 AND end = ?3 ORDER BY id",
            params![id, prefix, end],
        )
    }

    fn query(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Run>> {
        let mut st = self.wrap(self.conn.prepare(sql))?;
        let rows = self.wrap(st.query_map(p, run_row))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(self.wrap(r)?);
        }
        Ok(out)
    }

    /// The newest run of `backup_type`; with `ok_only` the newest successful (or unchanged) one,
    /// e.g. the last restore test that proved a speed (`restore-test:TYPE`).
    pub fn newest(&self, backup_type: &str, ok_only: bool) -> Result<Option<Run>> {
        self.wrap(
            self.conn
                .query_row(
                    "SELECT id, type, start, end, result, error, files, bytes_read, bytes_added, snapshot, retries
                     FROM runs WHERE type = ?1 AND (NOT ?2 OR result IN ('success','unchanged'))
                     ORDER BY id DESC LIMIT 1",
                    params![backup_type, ok_only],
                    run_row,
                )
                .optional(),
        )
    }

    /// Failed and partial runs of a type, ever (a counter for monitoring).
    pub fn failures_total(&self, backup_type: &str) -> Result<u64> {
        let n: i64 = self.wrap(self.conn.query_row(
            "SELECT count(*) FROM runs WHERE type=?1 AND result IN ('failed','partial')",
            [backup_type],
            |r| r.get(0),
        ))?;
        Ok(n as u64)
    }

    /// The end time of the last successful (or unchanged) run of a type.
    pub fn last_success(&self, backup_type: &str) -> Result<Option<DateTime<FixedOffset>>> {
        let t: Option<String> = self.wrap(
            self.conn
                .query_row(
                    "SELECT end FROM runs WHERE type=?1 AND result IN ('success','unchanged') ORDER BY id DESC LIMIT 1",
                    [backup_type],
                    |r| r.get(0),
                )
                .optional(),
        )?;
        Ok(t.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()))
    }

    /// The start time of the first recorded run of a type.
    pub fn first_run(&self, backup_type: &str) -> Result<Option<DateTime<FixedOffset>>> {
        let t: Option<String> = self.wrap(
            self.conn
                .query_row("SELECT start FROM runs WHERE type=?1 ORDER BY id LIMIT 1", [backup_type], |r| r.get(0))
                .optional(),
        )?;
        Ok(t.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()))
    }

    /// Failed runs since the last success.
    pub fn consecutive_failures(&self, backup_type: &str) -> Result<u32> {
        self.wrap(self.conn.query_row(
            "SELECT count(*) FROM runs WHERE type=?1 AND result IN ('failed','partial')
               AND id > coalesce((SELECT max(id) FROM runs WHERE type=?1 AND result IN ('success','unchanged')), 0)",
            [backup_type],
            |r| r.get(0),
        ))
    }

    /// When an alert was last sent for (type, event).
    pub fn last_alert(&self, backup_type: &str, event: &str) -> Result<Option<DateTime<FixedOffset>>> {
        let t: Option<String> = self.wrap(
            self.conn
                .query_row("SELECT time FROM alerts WHERE type=?1 AND event=?2", [backup_type, event], |r| r.get(0))
                .optional(),
        )?;
        Ok(t.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()))
    }

    /// Records that an alert was sent.
    pub fn set_alert(&self, backup_type: &str, event: &str, time: &str) -> Result<()> {
        self.wrap(
            self.conn.execute(
                "INSERT OR REPLACE INTO alerts(type, event, time) VALUES(?1,?2,?3)",
                [backup_type, event, time],
            ),
        )?;
        Ok(())
    }

    /// Forgets an alert (after recovery).
    pub fn clear_alert(&self, backup_type: &str, event: &str) -> Result<()> {
        self.wrap(self.conn.execute("DELETE FROM alerts WHERE type=?1 AND event=?2", [backup_type, event]))?;
        Ok(())
    }
}
