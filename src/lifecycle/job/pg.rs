//! The consistent side of a PostgreSQL type's backup: a `psql` session opens a repeatable-read
//! transaction, exports its snapshot for `pg_dump --snapshot`, and counts every table's rows and
//! digests the schema in that snapshot, so the recorded facts describe exactly what was dumped.

use std::collections::BTreeMap;
use std::process::Command;

use crate::error::Result;
use crate::source::pg_snapshot::{self, PsqlSession};
use crate::source::pgconn::PgConn;

/// The `psql` program: CAIRN_PSQL, else `psql` on the PATH.
pub fn psql_program() -> std::ffi::OsString {
    std::env::var_os("CAIRN_PSQL").unwrap_or_else(|| "psql".into())
}

/// `psql` connected to `conn` the way pg_dump is (password in the environment, never argv).
pub fn psql_command(conn: &PgConn) -> Command {
    conn.command(psql_program())
}

/// Names the session in errors (libpq's own text follows).
const WHAT: &str = "psql (the session whose snapshot pg_dump dumps)";

/// Opens the session, exports its snapshot and reads the facts in it. Returns the session (keep
/// it until pg_dump has been read: the snapshot lives as long as its transaction), the snapshot
/// id for `--snapshot` and the facts to record.
pub fn exported_snapshot(conn: &PgConn) -> Result<(PsqlSession, String, BTreeMap<String, String>)> {
    let mut s = PsqlSession::open(psql_command(conn), WHAT)?;
    let id = pg_snapshot::begin_snapshot(&mut s)?;
    let facts = pg_snapshot::facts(&mut s)?;
    Ok((s, id, facts))
}

/// Ends the session once the dump is read (a read-only transaction: nothing to commit).
pub fn end(s: PsqlSession) {
    if let Err(e) = s.close() {
        tracing::warn!("{e}");
    }
}
