//! Snapshots removed by name (`forget SNAPSHOT...`): who removed which, and why
//! (`removals` in `state/history.sqlite`, format-spec/cache.md).

use rusqlite::params;
use serde::Serialize;

use super::History;
use crate::error::Result;

/// One snapshot removed by name.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Removal {
    /// When, RFC 3339.
    pub time: String,
    /// Snapshot id (hex).
    pub snapshot: String,
    /// Its backup type.
    pub backup_type: String,
    /// Its kind (daily, pre-change, manual).
    pub kind: String,
    /// Who removed it.
    pub by: String,
    /// Why (`--reason`), if given.
    pub reason: Option<String>,
    /// Whether `--force` was needed and given.
    pub forced: bool,
}

impl History {
    pub(super) fn create_removals(&self) -> Result<()> {
        self.wrap(self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS removals(id INTEGER PRIMARY KEY, time TEXT NOT NULL, snapshot TEXT NOT NULL,
                 type TEXT NOT NULL, kind TEXT NOT NULL, by TEXT NOT NULL, reason TEXT,
                 forced INTEGER NOT NULL DEFAULT 0);",
        ))
    }

    /// Records a removal.
    pub fn record_removal(&self, r: &Removal) -> Result<()> {
        self.wrap(self.conn.execute(
            "INSERT INTO removals(time, snapshot, type, kind, by, reason, forced) VALUES(?1,?2,?3,?4,?5,?6,?7)",
            params![r.time, r.snapshot, r.backup_type, r.kind, r.by, r.reason, r.forced],
        ))?;
        Ok(())
    }

    /// Removals, newest first.
    pub fn removals(&self, limit: usize) -> Result<Vec<Removal>> {
        // A history opened read-only from an older cairn has no such table: nothing was removed.
        let exists: bool = self.wrap(self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type='table' AND name='removals'",
            [],
            |r| r.get(0),
        ))?;
        if !exists {
            return Ok(Vec::new());
        }
        let mut st = self.wrap(self.conn.prepare(
            "SELECT time, snapshot, type, kind, by, reason, forced FROM removals ORDER BY id DESC LIMIT ?1",
        ))?;
        let rows = self.wrap(st.query_map([limit as i64], |r| {
            Ok(Removal {
                time: r.get(0)?,
                snapshot: r.get(1)?,
                backup_type: r.get(2)?,
                kind: r.get(3)?,
                by: r.get(4)?,
                reason: r.get(5)?,
                forced: r.get(6)?,
            })
        }))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(self.wrap(r)?);
        }
        Ok(out)
    }
}
