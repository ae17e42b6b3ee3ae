//! The sync bookkeeping kept in `state/history.sqlite` (format-spec/cache.md): what each remote
//! holds, MD5s of local immutable files, and uploads started but not yet seen whole.

use std::collections::{HashMap, HashSet};

use md5::{Digest, Md5};
use rusqlite::{params, Connection};

use super::local_inventory;
use crate::error::{Error, Result};
use crate::store::{Handle, LocalStore, Store};

/// Local bookkeeping of what each remote holds (in `state/history.sqlite`).
pub struct SyncState {
    conn: Connection,
}

impl SyncState {
    /// Opens the state of the repository in `local`.
    pub fn open(local: &LocalStore) -> Result<Self> {
        let path = local.local_state_dir("state")?.join("history.sqlite");
        let e = |source| Error::Cache { path: path.clone(), err: source };
        let conn = Connection::open(&path).map_err(e)?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(e)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS remote_files(remote TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
                 md5 TEXT NOT NULL, synced TEXT NOT NULL, PRIMARY KEY(remote, path));
             CREATE TABLE IF NOT EXISTS local_md5(path TEXT PRIMARY KEY, size INTEGER NOT NULL, md5 TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS remote_uploads(remote TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY(remote, path));
             CREATE TABLE IF NOT EXISTS remote_pending(remote TEXT NOT NULL, path TEXT NOT NULL, since TEXT NOT NULL,
                 PRIMARY KEY(remote, path));",
        )
        .map_err(e)?;
        Ok(SyncState { conn })
    }

    fn q<T>(&self, r: rusqlite::Result<T>) -> Result<T> {
        r.map_err(|source| Error::Cache { path: "state/history.sqlite".into(), err: source })
    }

    /// MD5 of an object of `store` (cached: objects are immutable).
    pub fn md5(&self, store: &dyn Store, h: Handle, size: u64) -> Result<String> {
        let rel = h.rel_path();
        let cached: Option<(i64, String)> = self
            .conn
            .query_row("SELECT size, md5 FROM local_md5 WHERE path=?1", [&rel], |r| Ok((r.get(0)?, r.get(1)?)))
            .ok();
        if let Some((s, m)) = cached {
            if s as u64 == size {
                return Ok(m);
            }
        }
        let m = match store.local_dir() {
            // Streamed from the file: a pack may be as large as the configured pack size.
            Some(dir) => {
                let mut md5 = Md5::new();
                stream_file(&dir.join(&rel), &mut |b| md5.update(b))?;
                hex::encode(md5.finalize())
            }
            None => hex::encode(Md5::digest(store.get(h)?)),
        };
        self.q(self.conn.execute(
            "INSERT OR REPLACE INTO local_md5(path, size, md5) VALUES(?1,?2,?3)",
            params![rel, size as i64, m],
        ))?;
        Ok(m)
    }

    /// Files recorded as synced to `remote` (relative path -> size, MD5).
    pub fn synced(&self, remote: &str) -> Result<HashMap<String, (u64, String)>> {
        let mut st = self.q(self.conn.prepare("SELECT path, size, md5 FROM remote_files WHERE remote=?1"))?;
        let rows = self.q(st.query_map([remote], |r| {
            Ok((r.get::<_, String>(0)?, (r.get::<_, i64>(1)? as u64, r.get::<_, String>(2)?)))
        }))?;
        let mut m = HashMap::new();
        for r in rows {
            let (k, v) = self.q(r)?;
            m.insert(k, v);
        }
        Ok(m)
    }

    pub(super) fn set_md5(&self, rel: &str, size: u64, md5: &str) -> Result<()> {
        self.q(self.conn.execute(
            "INSERT OR REPLACE INTO local_md5(path, size, md5) VALUES(?1,?2,?3)",
            params![rel, size as i64, md5],
        ))?;
        Ok(())
    }

    pub(super) fn forget_md5(&self, rel: &str) -> Result<()> {
        self.q(self.conn.execute("DELETE FROM local_md5 WHERE path=?1", [rel]))?;
        Ok(())
    }

    pub(super) fn mark(&self, remote: &str, rel: &str, size: u64, md5: &str) -> Result<()> {
        self.q(self.conn.execute(
            "INSERT OR REPLACE INTO remote_files(remote, path, size, md5, synced) VALUES(?1,?2,?3,?4,?5)",
            params![remote, rel, size as i64, md5, chrono::Local::now().to_rfc3339()],
        ))?;
        self.q(self.conn.execute("DELETE FROM remote_uploads WHERE remote=?1 AND path=?2", [remote, rel]))?;
        self.q(self.conn.execute("DELETE FROM remote_pending WHERE remote=?1 AND path=?2", [remote, rel]))?;
        Ok(())
    }

    pub(super) fn unmark(&self, remote: &str, rel: &str) -> Result<()> {
        self.q(self.conn.execute("DELETE FROM remote_files WHERE remote=?1 AND path=?2", [remote, rel]))?;
        self.q(self.conn.execute("DELETE FROM remote_uploads WHERE remote=?1 AND path=?2", [remote, rel]))?;
        Ok(())
    }

    /// Records, before they go up, the files an upload is about to write: a sync killed after
    /// rclone wrote a file but before it was marked synced must still own that file, or a
    /// snapshot forgotten later would stay on the remote for good (found by the robustness run).
    pub(super) fn intend(&self, remote: &str, rels: &[String]) -> Result<()> {
        self.q(self.conn.execute_batch("BEGIN IMMEDIATE"))?;
        for rel in rels {
            if let Err(e) =
                self.conn.execute("INSERT OR IGNORE INTO remote_uploads(remote, path) VALUES(?1,?2)", [remote, rel])
            {
                let _ = self.conn.execute_batch("ROLLBACK");
                return self.q(Err(e));
            }
        }
        self.q(self.conn.execute_batch("COMMIT"))
    }

    /// Files an upload to `remote` started and did not see through (see [`SyncState::intend`]).
    pub(super) fn started(&self, remote: &str) -> Result<HashSet<String>> {
        let mut st = self.q(self.conn.prepare("SELECT path FROM remote_uploads WHERE remote=?1"))?;
        let rows = self.q(st.query_map([remote], |r| r.get::<_, String>(0)))?;
        let mut out = HashSet::new();
        for r in rows {
            out.insert(self.q(r)?);
        }
        Ok(out)
    }

    /// The files of `local` not yet synced to `remote`, each with the time it was first seen
    /// pending ([`SyncState::note_pending`]) if it was. Reads only: `status` uses it.
    pub fn pending_files(
        &self,
        local: &dyn Store,
        remote: &str,
        exclude: &HashSet<Handle>,
    ) -> Result<Vec<PendingFile>> {
        let synced = self.synced(remote)?;
        let mut st = self.q(self.conn.prepare("SELECT path, since FROM remote_pending WHERE remote=?1"))?;
        let rows = self.q(st.query_map([remote], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))))?;
        let mut since = HashMap::new();
        for r in rows {
            let (p, t) = self.q(r)?;
            since.insert(p, t);
        }
        let mut out = Vec::new();
        for (h, size) in local_inventory(local)?.into_iter().filter(|(h, _)| !exclude.contains(h)) {
            let rel = h.rel_path();
            if synced.get(&rel).is_none_or(|(s, _)| *s != size) {
                let since = since.get(&rel).and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                out.push(PendingFile { handle: h, size, since });
            }
        }
        Ok(out)
    }

    /// Records when each of `files` (the whole pending list of `remote`) was first seen pending:
    /// a file already recorded keeps its time, a new one gets its own `since`, and the rows of
    /// files no longer pending are dropped. This is what tells how far behind a remote is.
    pub fn note_pending(&self, remote: &str, files: &[PendingFile]) -> Result<()> {
        self.q(self.conn.execute_batch("BEGIN IMMEDIATE"))?;
        let r = (|| -> rusqlite::Result<()> {
            self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS now_pending(path TEXT PRIMARY KEY)", [])?;
            self.conn.execute("DELETE FROM now_pending", [])?;
            for f in files {
                let rel = f.handle.rel_path();
                self.conn.execute("INSERT OR IGNORE INTO now_pending(path) VALUES(?1)", [&rel])?;
                if let Some(t) = f.since {
                    self.conn.execute(
                        "INSERT OR IGNORE INTO remote_pending(remote, path, since) VALUES(?1,?2,?3)",
                        params![remote, rel, t.to_rfc3339()],
                    )?;
                }
            }
            self.conn.execute(
                "DELETE FROM remote_pending WHERE remote=?1 AND path NOT IN (SELECT path FROM now_pending)",
                [remote],
            )?;
            Ok(())
        })();
        match r {
            Ok(()) => self.q(self.conn.execute_batch("COMMIT")),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.q(Err(e))
            }
        }
    }
}

/// A local file a remote does not hold yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingFile {
    /// The file.
    pub handle: Handle,
    /// Its size.
    pub size: u64,
    /// When it was first seen pending (`None`: not recorded yet).
    pub since: Option<chrono::DateTime<chrono::FixedOffset>>,
}

/// Feeds a local file to `f` in 1 MiB pieces: a pack may be as large as the configured pack size.
pub(super) fn stream_file(p: &std::path::Path, f: &mut dyn FnMut(&[u8])) -> Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => f(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(p, e)),
        }
    }
}
