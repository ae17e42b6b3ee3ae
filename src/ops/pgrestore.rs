//! Restoring a PostgreSQL snapshot the way its owner wants it back: one table or schema (or all)
//! of a custom dump into an existing database through `pg_restore`, or written as SQL; the roles
//! and other globals captured beside the dump through psql or as a file. The dump is read out of
//! the repository into a private temporary file in the repository's `tmp/` (pg_restore needs to
//! seek), removed afterwards whatever happens.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::manifest::Snapshot;
use crate::repo::Repo;
use crate::source::pgconn::PgConn;
use crate::source::pgdump::{self, Selection};

/// What to restore and where.
#[derive(Debug, Default)]
pub struct PgRestoreOptions {
    /// Tables and schemas to take (none: the whole dump).
    pub selection: Selection,
    /// Restore into this database.
    pub into: Option<PgConn>,
    /// Write SQL files into this directory.
    pub target: Option<PathBuf>,
    /// The roles and other globals.
    pub globals: bool,
}

/// What was done.
#[derive(Debug, Default, Serialize)]
pub struct PgRestoreReport {
    /// Files written (with `target`).
    pub written: Vec<PathBuf>,
    /// The database restored into, redacted (with `into`).
    pub restored_into: Option<String>,
    /// What pg_restore and psql said (notices, statements of the globals that failed, such as
    /// a role that exists already).
    pub messages: Vec<String>,
}

/// A file name for `what` that cannot leave `dir`.
fn safe(what: &str) -> String {
    what.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect()
}

/// A temporary file in the repository's `tmp/`, removed when dropped (an orphan left by a kill
/// is removed by the next run's tmp clean-up).
struct TmpFile(PathBuf);

impl TmpFile {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the snapshot's file `name` to `f` (at `path`), readable by its owner only.
fn write_out(repo: &Repo, snap: &Snapshot, name: &str, f: std::fs::File, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| Error::io(path, e))?;
    let node = crate::ops::restore::find_node(repo, snap, name)?;
    let mut w = std::io::BufWriter::new(f);
    crate::ops::restore::write_content(repo, &node, &mut w)?;
    let f = w.into_inner().map_err(|e| Error::io(path, e.into_error()))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// A dump file read out of the snapshot into a private temporary file.
fn extract(repo: &Repo, snap: &Snapshot, name: &str) -> Result<TmpFile> {
    let (path, f) = repo.store().temp_file()?;
    let tmp = TmpFile(path);
    write_out(repo, snap, name, f, tmp.path())?;
    Ok(tmp)
}

/// The snapshot's file `name` written to a new file `dir/name`.
fn copy_out(repo: &Repo, snap: &Snapshot, name: &str, dir: &Path) -> Result<PathBuf> {
    let out = new_file(dir, name)?;
    let f = std::fs::OpenOptions::new().write(true).create_new(true).open(&out).map_err(|e| Error::io(&out, e))?;
    if let Err(e) = write_out(repo, snap, name, f, &out) {
        let _ = std::fs::remove_file(&out);
        return Err(e);
    }
    Ok(out)
}

fn new_file(dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let p = dir.join(name);
    if p.exists() {
        return Err(Error::Invalid(format!("{}: exists already; not overwritten", p.display())));
    }
    Ok(p)
}

fn push(messages: &mut Vec<String>, s: String) {
    if !s.is_empty() {
        messages.push(s);
    }
}

/// Restores the PostgreSQL parts `o` asks for from `snap`.
pub fn restore(repo: &Repo, snap: &Snapshot, o: &PgRestoreOptions) -> Result<PgRestoreReport> {
    let ty = &snap.backup_type;
    let Some(format) = snap.source.get("postgres.format") else {
        return Err(Error::Invalid(format!(
            "snapshot of type {ty} is not a PostgreSQL dump: --table, --schema, --into and --globals apply to \
             postgres types only"
        )));
    };
    if o.into.is_none() == o.target.is_none() {
        return Err(Error::Invalid("give one of --into URL or --target DIR".into()));
    }
    let mut report = PgRestoreReport { restored_into: o.into.as_ref().map(|c| c.redacted()), ..Default::default() };
    let selecting = !o.selection.tables.is_empty() || !o.selection.schemas.is_empty();
    if o.globals {
        let Some(name) = snap.source.get("postgres.globals") else {
            let why = snap.source.get("postgres.globals_warning").map_or_else(
                || "it was taken before cairn captured them".to_string(),
                |w| format!("when it was taken: {w}"),
            );
            return Err(Error::NotFound(format!("this snapshot of {ty} holds no roles or other globals: {why}")));
        };
        if let Some(into) = &o.into {
            let f = extract(repo, snap, name)?;
            push(&mut report.messages, pgdump::psql_file(f.path(), into)?);
        } else if let Some(dir) = &o.target {
            report.written.push(copy_out(repo, snap, name, dir)?);
        }
        if !selecting {
            return Ok(report);
        }
    }
    match format.as_str() {
        "custom" => {
            let f = extract(repo, snap, &format!("{ty}.dump"))?;
            if let Some(into) = &o.into {
                push(&mut report.messages, pgdump::restore_into(f.path(), &o.selection, into)?);
            } else if let Some(dir) = &o.target {
                let name = match (&o.selection.tables[..], &o.selection.schemas[..]) {
                    ([], []) => format!("{ty}.sql"),
                    ([t], []) => format!("{ty}.table.{}.sql", safe(t)),
                    ([], [s]) => format!("{ty}.schema.{}.sql", safe(s)),
                    _ => format!("{ty}.selection.sql"),
                };
                let out = new_file(dir, &name)?;
                push(&mut report.messages, pgdump::restore_to_sql(f.path(), &o.selection, &out)?);
                report.written.push(out);
            }
        }
        "plain" if selecting => {
            return Err(Error::Invalid(format!(
                "this snapshot of {ty} is a plain SQL dump (postgres.format = plain): pg_restore cannot take one \
                 table or schema out of it. Restore it whole (--target DIR, then psql -f) or set \
                 \"pg_format\": \"custom\" for the type so later snapshots can"
            )))
        }
        "plain" => {
            if let Some(into) = &o.into {
                let f = extract(repo, snap, &format!("{ty}.sql"))?;
                push(&mut report.messages, pgdump::psql_file(f.path(), into)?);
            } else if let Some(dir) = &o.target {
                report.written.push(copy_out(repo, snap, &format!("{ty}.sql"), dir)?);
            }
        }
        other => return Err(Error::Invalid(format!("unknown postgres.format {other:?} in the snapshot"))),
    }
    Ok(report)
}
