//! The PostgreSQL programs a `postgres` type runs: `pg_dump` in the custom format without
//! compression (pg_restore can pick one table out of it, and uncompressed it still
//! deduplicates day to day) or plain SQL, `pg_dumpall --globals-only` for the roles and
//! tablespaces no database dump holds, and `pg_restore` to read a custom dump back. Every one
//! connects through [`PgConn::command`], so no password is on a command line.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::pgconn::PgConn;
use crate::error::{Error, Result};

/// How a `postgres` type stores its dump (`"pg_format"` in the config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PgFormat {
    /// `pg_dump -Fc -Z0`: one table or schema can be restored from it.
    #[default]
    Custom,
    /// `pg_dump -Fp`: SQL text for psql.
    Plain,
}

impl PgFormat {
    /// The name recorded as the `postgres.format` fact.
    pub fn as_str(self) -> &'static str {
        match self {
            PgFormat::Custom => "custom",
            PgFormat::Plain => "plain",
        }
    }

    /// The dump's file name inside the snapshot of type `name`.
    pub fn file_name(self, name: &str) -> String {
        match self {
            PgFormat::Custom => format!("{name}.dump"),
            PgFormat::Plain => format!("{name}.sql"),
        }
    }
}

/// The globals file's name inside the snapshot of type `name`.
pub fn globals_file_name(name: &str) -> String {
    format!("{name}.globals.sql")
}

/// The program to run for `tool`: `CAIRN_PG_DUMP` names pg_dump (tests wrap it), the others are
/// looked up on PATH.
pub fn program(tool: &str) -> OsString {
    match (tool, std::env::var_os("CAIRN_PG_DUMP")) {
        ("pg_dump", Some(p)) => p,
        _ => tool.into(),
    }
}

/// `pg_dump` of `conn` in `format` to standard output.
pub fn dump_command(conn: &PgConn, format: PgFormat) -> Command {
    let mut c = conn.command(program("pg_dump"));
    match format {
        // Compressed output would defeat deduplication.
        PgFormat::Custom => c.args(["--format=custom", "--compress=0"]),
        PgFormat::Plain => c.arg("--format=plain"),
    };
    c
}

/// `pg_dump --version`, recorded beside the dump.
pub fn dump_version() -> Option<String> {
    let out = Command::new(program("pg_dump")).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What `pg_dumpall --globals-only` gave.
#[derive(Debug, Default)]
pub struct Globals {
    /// The SQL, when it ran.
    pub sql: Option<Vec<u8>>,
    /// What is missing from it and why (a role that may not read `pg_authid` gets the roles
    /// without their passwords; one that may not connect gets nothing).
    pub warning: Option<String>,
}

/// Captures roles, memberships and tablespaces. Never fails the backup: what it could not
/// capture is a warning the caller records and shows.
pub fn dump_globals(conn: &PgConn) -> Globals {
    let run = |extra: &[&str]| -> std::result::Result<Vec<u8>, String> {
        let mut c = conn.command(program("pg_dumpall"));
        c.arg("--globals-only").args(extra).stdin(Stdio::null());
        let out = c.output().map_err(|e| format!("cannot run pg_dumpall: {e}"))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find(|l| l.contains("error")).or(err.lines().next()).unwrap_or("");
        Err(format!("pg_dumpall {}: {}", out.status, line.trim()))
    };
    match run(&[]) {
        Ok(sql) => Globals { sql: Some(sql), warning: None },
        Err(first) if first.contains("permission denied") => match run(&["--no-role-passwords"]) {
            Ok(sql) => Globals {
                sql: Some(sql),
                warning: Some(format!("role passwords not captured (this role may not read pg_authid: {first})")),
            },
            Err(e) => Globals { sql: None, warning: Some(format!("roles and other globals not captured: {e}")) },
        },
        Err(e) => Globals { sql: None, warning: Some(format!("roles and other globals not captured: {e}")) },
    }
}

/// What to take out of a custom dump.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// `pg_restore --table` names.
    pub tables: Vec<String>,
    /// `pg_restore --schema` names.
    pub schemas: Vec<String>,
}

impl Selection {
    fn args(&self, c: &mut Command) {
        for t in &self.tables {
            c.arg(format!("--table={t}"));
        }
        for s in &self.schemas {
            c.arg(format!("--schema={s}"));
        }
    }
}

fn finish(what: &str, mut c: Command) -> Result<String> {
    let out = c.stdin(Stdio::null()).output().map_err(|e| Error::Invalid(format!("cannot run {what}: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return Err(Error::Invalid(format!("{what} {}: {stderr}", out.status)));
    }
    Ok(stderr)
}

/// Restores `sel` of the custom dump `archive` into the database `into`, in one transaction
/// that any error rolls back.
pub fn restore_into(archive: &Path, sel: &Selection, into: &PgConn) -> Result<String> {
    let mut c = into.command(program("pg_restore"));
    c.args(["--exit-on-error", "--single-transaction"]);
    sel.args(&mut c);
    c.arg(archive);
    finish("pg_restore", c)
}

/// Writes `sel` of the custom dump `archive` as SQL to `out` (`-` for standard output).
pub fn restore_to_sql(archive: &Path, sel: &Selection, out: &Path) -> Result<String> {
    let mut c = Command::new(program("pg_restore"));
    c.arg("--file").arg(out);
    sel.args(&mut c);
    c.arg(archive);
    finish("pg_restore", c)
}

/// Runs the SQL file `sql` (globals, a plain dump) through psql into `into`. Errors of single
/// statements (a role that exists already) do not stop it; they come back as psql's stderr.
pub fn psql_file(sql: &Path, into: &PgConn) -> Result<String> {
    let mut c = into.command("psql");
    c.args(["-X", "-q", "-f"]).arg(sql);
    c.stdout(Stdio::null());
    finish("psql", c)
}
