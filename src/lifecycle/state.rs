//! The state kept outside the repository, one directory per configuration file: runs that never
//! reached the repository (a config error, a wrong or missing password, a repository that cannot
//! be opened), each type's last success (so the dead-man check runs while the repository cannot
//! be opened), and the repositories created or opened for the config
//! (so a repository that has gone, say on an unmounted disk, is not silently created anew).
//! It lives outside the repository because it must survive exactly the runs in which the
//! repository is unreachable. The bytes are specified in `format-spec/state.md`. What the owner
//! was told, about these runs and all others, is `notify.json` beside it (`notify::NotifyState`).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::lifecycle::config::Config;
use crate::lifecycle::history::{Outcome, Run};
use crate::lifecycle::notify::{legacy_path, NotifyState, NOTIFY_FILE};

/// Environment variable naming the state directory itself (tests, systemd's `StateDirectory=`);
/// it wins over the config's `state_dir` and the XDG default.
pub const STATE_DIR_ENV: &str = "CAIRN_STATE_DIR";

/// The database file inside the state directory.
pub const STATE_FILE: &str = "state.sqlite";

/// The schema version this build writes; a newer one is refused, not guessed at.
const SCHEMA: i64 = 1;

/// A configuration's id: the first 16 hex digits of BLAKE3 over the bytes of the config file's
/// canonical path. Two paths to one file (a symlink, `./`) give one id; moving the file gives a
/// new one, as it would give a new `state_dir` default anyway.
pub fn config_id(config_file: &Path) -> String {
    let canon = std::fs::canonicalize(config_file).unwrap_or_else(|_| config_file.to_path_buf());
    hex::encode(&blake3::hash(canon.as_os_str().as_bytes()).as_bytes()[..8])
}

/// Where the state of the config at `config_file` lives: `$CAIRN_STATE_DIR`, else the config's
/// `state_dir` (`configured`, absolute), else `$XDG_STATE_HOME/cairn/<config-id>`, else
/// `$HOME/.local/state/cairn/<config-id>`. `None` when none of these is set.
pub fn state_dir(config_file: &Path, configured: Option<&Path>) -> Option<PathBuf> {
    let var = |n: &str| std::env::var_os(n).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var(STATE_DIR_ENV) {
        return Some(d);
    }
    if let Some(d) = configured {
        return Some(d.to_path_buf());
    }
    // The XDG base directory spec: a relative value is invalid and ignored.
    let base = match var("XDG_STATE_HOME").filter(|d| d.is_absolute()) {
        Some(d) => d,
        None => var("HOME")?.join(".local/state"),
    };
    Some(base.join("cairn").join(config_id(config_file)))
}

/// The notification state of the config at `config_file` (`configured`: its `state_dir`):
/// `notify.json` in its state directory, taking over the file an earlier build kept in the
/// repository at `repo_root`; in that repository (or nowhere) only when no state directory can be
/// derived.
pub fn notify_state(config_file: &Path, configured: Option<&Path>, repo_root: Option<&Path>) -> NotifyState {
    match (state_dir(config_file, configured), repo_root) {
        (Some(d), _) => NotifyState::load_or_adopt(&d.join(NOTIFY_FILE), repo_root.map(legacy_path).as_deref()),
        (None, Some(r)) => NotifyState::in_repository(r),
        (None, None) => NotifyState::unsaved(),
    }
}

/// [`notify_state`] of a loaded configuration.
pub fn notify_state_for(cfg: &Config, repo_root: Option<&Path>) -> NotifyState {
    notify_state(&cfg.file, cfg.backup.state_dir.as_deref(), repo_root)
}

/// A repository this config has used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remembered {
    /// Repository id (hex).
    pub id: String,
    /// When cairn created it for this config (`None`: it existed before cairn first opened it).
    pub created: Option<String>,
    /// When it was last opened.
    pub last_opened: String,
}

/// The open state database of one config.
pub struct State {
    conn: Connection,
    path: PathBuf,
}

/// A repository location as remembered: absolute (a relative `--repo` against the working
/// directory), so the same directory is found from wherever cairn runs.
fn location(p: &Path) -> Vec<u8> {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).as_os_str().as_bytes().to_vec()
}

fn parse_time(t: Option<String>) -> Option<DateTime<FixedOffset>> {
    t.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
}

impl State {
    fn wrap<T>(&self, r: rusqlite::Result<T>) -> Result<T> {
        r.map_err(|err| Error::Cache { path: self.path.clone(), err })
    }

    /// Opens (creating the directory, mode 0700, and the database) the state in `dir` for the
    /// config at `config_file`.
    pub fn open(dir: &Path, config_file: &Path) -> Result<State> {
        if !dir.is_dir() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| Error::io(dir, e))?;
        }
        let path = dir.join(STATE_FILE);
        let conn = Connection::open(&path).map_err(|err| Error::Cache { path: path.clone(), err })?;
        let s = State { conn, path };
        s.wrap(s.conn.busy_timeout(std::time::Duration::from_secs(30)))?;
        s.wrap(s.conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY, type TEXT NOT NULL, start TEXT NOT NULL,
                 end TEXT NOT NULL, result TEXT NOT NULL, error TEXT);
             CREATE TABLE IF NOT EXISTS cleared(type TEXT PRIMARY KEY, run INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS types(type TEXT PRIMARY KEY, first_run TEXT NOT NULL, last_success TEXT);
             CREATE TABLE IF NOT EXISTS repositories(path BLOB PRIMARY KEY, id TEXT NOT NULL, created TEXT,
                 last_opened TEXT NOT NULL);
             INSERT OR IGNORE INTO meta(k, v) VALUES('schema', '1');",
        ))?;
        let schema: String = s.wrap(s.conn.query_row("SELECT v FROM meta WHERE k='schema'", [], |r| r.get(0)))?;
        if schema.parse::<i64>().map_or(true, |v| v > SCHEMA) {
            return Err(Error::Invalid(format!(
                "{}: state schema {schema} is newer than this cairn understands ({SCHEMA})",
                s.path.display()
            )));
        }
        let canon = std::fs::canonicalize(config_file).unwrap_or_else(|_| config_file.to_path_buf());
        s.wrap(s.conn.execute("INSERT OR REPLACE INTO meta(k, v) VALUES('config', ?1)", [canon.to_string_lossy()]))?;
        Ok(s)
    }

    /// The state in `dir` if it has been written, without creating anything.
    pub fn open_existing(dir: &Path, config_file: &Path) -> Result<Option<State>> {
        if !dir.join(STATE_FILE).is_file() {
            return Ok(None);
        }
        State::open(dir, config_file).map(Some)
    }

    /// Records a run of `key` that failed; returns how many failed runs of `key` came before it
    /// since the last [`State::clear`].
    pub fn record_failure(&self, key: &str, start: &str, end: &str, error: &str) -> Result<u32> {
        let before = self.failures(key)?;
        self.wrap(self.conn.execute(
            "INSERT INTO runs(type, start, end, result, error) VALUES(?1, ?2, ?3, 'failed', ?4)",
            params![key, start, end, error],
        ))?;
        Ok(before)
    }

    /// Failed runs of `key` since the last [`State::clear`].
    pub fn failures(&self, key: &str) -> Result<u32> {
        self.wrap(self.conn.query_row(
            "SELECT count(*) FROM runs WHERE type=?1
               AND id > coalesce((SELECT run FROM cleared WHERE type=?1), 0)",
            [key],
            |r| r.get(0),
        ))
    }

    /// `key` worked again: returns the failures it ends (0: nothing to recover from).
    pub fn clear(&self, key: &str) -> Result<u32> {
        let n = self.failures(key)?;
        if n > 0 {
            self.wrap(self.conn.execute(
                "INSERT OR REPLACE INTO cleared(type, run) VALUES(?1, (SELECT max(id) FROM runs WHERE type=?1))",
                [key],
            ))?;
        }
        Ok(n)
    }

    /// Recorded runs, newest first, in the history's shape.
    pub fn list(&self, key: Option<&str>, limit: usize) -> Result<Vec<Run>> {
        let mut st = self.wrap(self.conn.prepare(
            "SELECT id, type, start, end, error FROM runs WHERE (?1 IS NULL OR type = ?1) ORDER BY id DESC LIMIT ?2",
        ))?;
        let rows = self.wrap(st.query_map(params![key, limit as i64], |r| {
            Ok(Run {
                id: r.get(0)?,
                error: r.get(4)?,
                ..Run::new(r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, Outcome::Failed)
            })
        }))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(self.wrap(r)?);
        }
        Ok(out)
    }

    /// Notes that `backup_type` was tried at `time` (the first time counts).
    pub fn note_tried(&self, backup_type: &str, time: &str) -> Result<()> {
        self.wrap(
            self.conn.execute("INSERT OR IGNORE INTO types(type, first_run) VALUES(?1, ?2)", [backup_type, time]),
        )?;
        Ok(())
    }

    /// Notes a success of `backup_type` at `time`, unless a later one is known.
    pub fn note_success(&self, backup_type: &str, time: DateTime<FixedOffset>) -> Result<()> {
        if self.last_success(backup_type)?.is_some_and(|l| l >= time) {
            return Ok(());
        }
        let t = time.to_rfc3339();
        self.note_tried(backup_type, &t)?;
        self.wrap(self.conn.execute("UPDATE types SET last_success=?2 WHERE type=?1", [backup_type, &t]))?;
        Ok(())
    }

    /// The last success of `backup_type` known here.
    pub fn last_success(&self, backup_type: &str) -> Result<Option<DateTime<FixedOffset>>> {
        let t: Option<Option<String>> = self.wrap(
            self.conn.query_row("SELECT last_success FROM types WHERE type=?1", [backup_type], |r| r.get(0)).optional(),
        )?;
        Ok(parse_time(t.flatten()))
    }

    /// When `backup_type` was first tried, as known here.
    pub fn first_run(&self, backup_type: &str) -> Result<Option<DateTime<FixedOffset>>> {
        let t: Option<String> = self.wrap(
            self.conn.query_row("SELECT first_run FROM types WHERE type=?1", [backup_type], |r| r.get(0)).optional(),
        )?;
        Ok(parse_time(t))
    }

    /// The repository this config used at `path`, if any.
    pub fn remembered(&self, path: &Path) -> Result<Option<Remembered>> {
        self.wrap(
            self.conn
                .query_row("SELECT id, created, last_opened FROM repositories WHERE path=?1", [location(path)], |r| {
                    Ok(Remembered { id: r.get(0)?, created: r.get(1)?, last_opened: r.get(2)? })
                })
                .optional(),
        )
    }

    /// Remembers that the repository `id` at `path` was opened (or, with `created`, created) at
    /// `time`. Returns the id remembered there before when it was a different one.
    pub fn remember(&self, path: &Path, id: &str, time: &str, created: bool) -> Result<Option<String>> {
        let old = self.remembered(path)?;
        let created_at = match &old {
            _ if created => Some(time.to_string()),
            Some(o) if o.id == id => o.created.clone(),
            _ => None,
        };
        self.wrap(self.conn.execute(
            "INSERT OR REPLACE INTO repositories(path, id, created, last_opened) VALUES(?1, ?2, ?3, ?4)",
            params![location(path), id, created_at, time],
        ))?;
        Ok(old.map(|o| o.id).filter(|o| o != id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_until_cleared_and_repositories_are_remembered_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(&dir.path().join("st"), Path::new("/nonexistent/cairn.json")).unwrap();
        assert_eq!(s.record_failure("k", "a", "b", "e1").unwrap(), 0);
        assert_eq!(s.record_failure("k", "a", "b", "e2").unwrap(), 1);
        assert_eq!(s.clear("k").unwrap(), 2);
        assert_eq!(s.clear("k").unwrap(), 0);
        assert_eq!(s.record_failure("k", "a", "b", "e3").unwrap(), 0);
        assert_eq!(s.list(Some("k"), 10).unwrap().len(), 3);
        let p = Path::new("/mnt/usb/repo");
        assert_eq!(s.remembered(p).unwrap(), None);
        assert_eq!(s.remember(p, "aa", "t1", true).unwrap(), None);
        assert_eq!(s.remember(p, "aa", "t2", false).unwrap(), None);
        let r = s.remembered(p).unwrap().unwrap();
        assert_eq!((r.id.as_str(), r.created.as_deref(), r.last_opened.as_str()), ("aa", Some("t1"), "t2"));
        assert_eq!(s.remember(p, "bb", "t3", false).unwrap(), Some("aa".into()));
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05+01:00").unwrap();
        s.note_success("db", t).unwrap();
        s.note_success("db", t - chrono::Duration::hours(1)).unwrap();
        assert_eq!(s.last_success("db").unwrap(), Some(t));
        assert_eq!(s.first_run("db").unwrap(), Some(t));
    }
}
