//! Point-in-time recovery in the configuration: `pg_basebackup` types (base backups on their
//! schedule, the WAL start recorded), which type `wal-push` / `wal-fetch` archive for, and how
//! old the newest archived WAL may be before `status` calls archiving stopped.

use std::process::Command;

use crate::error::{Error, Result};
use crate::lifecycle::config::{Config, SourceSpec};
use crate::ops::snapshot::{self, SnapshotOptions, SnapshotOutcome, Source};
use crate::repo::Repo;
use crate::source::{pg_base, postgres, ChildReader};

/// `pg_basebackup` writing one tablespace as tar to standard output, without WAL (the archive
/// holds it), after a fast checkpoint. The password leaves the URL for PGPASSWORD (never argv).
/// The one place the program is spawned from.
fn pg_basebackup_command(target: &str) -> Result<Command> {
    let conn = crate::source::pgconn::PgConn::parse(target)?;
    let mut c = conn.command(std::env::var_os("CAIRN_PG_BASEBACKUP").unwrap_or_else(|| "pg_basebackup".into()));
    c.args(["--pgdata=-", "--format=tar", "--wal-method=none", "--checkpoint=fast", "--label=cairn"]);
    Ok(c)
}

/// Takes a base backup of `target` as snapshot `base.tar` of the type in `opts`, recording
/// `backup_label`'s facts (where WAL replay starts) and the redacted target.
pub fn base_backup(repo: &mut Repo, target: &str, mut opts: SnapshotOptions) -> Result<SnapshotOutcome> {
    let child = ChildReader::spawn(pg_basebackup_command(target)?, "pg_basebackup")?.diagnosed_by(postgres::diagnose);
    let labelled = pg_base::read_label(Box::new(child), "pg_basebackup")?;
    opts.source_meta.extend(labelled.facts);
    opts.source_meta.insert("pg_basebackup.target".into(), crate::lifecycle::job::redact_url(target));
    opts.source_meta.insert("pg_basebackup.format".into(), "tar".into());
    // A data directory changes in place: the small-chunk database parameters keep an edited
    // page's neighbours shared with the last base backup.
    if opts.chunker.is_none() && !repo.config().chunkers.contains_key(&opts.backup_type) {
        opts.chunker = Some(repo.config().chunker_for("db"));
    }
    let name = crate::ops::wal::BASE_TAR.to_string();
    snapshot::snapshot(repo, Source::Reader { name, reader: labelled.reader }, &opts)
}

/// The `pg_basebackup` type `wal-push` and `wal-fetch` work for: `explicit` (`--type`), else the
/// configuration's only `pg_basebackup` type.
pub fn archive_type(cfg: Option<&Config>, explicit: Option<&str>) -> Result<String> {
    let bases: Vec<&str> = cfg
        .map(|c| {
            c.types
                .iter()
                .filter(|(_, t)| matches!(t.source, SourceSpec::PgBaseBackup { .. }))
                .map(|(n, _)| n.as_str())
                .collect()
        })
        .unwrap_or_default();
    match (explicit, bases.as_slice()) {
        (Some(t), _) if crate::ops::wal::base_of(t).is_some() => {
            Err(Error::Invalid(format!("--type {t}: name the pg_basebackup type, not its WAL type")))
        }
        (Some(t), _) => Ok(t.to_string()),
        (None, [one]) => Ok(one.to_string()),
        (None, []) => Err(Error::Invalid(
            "no pg_basebackup type in the configuration: add one (\"pg_basebackup\": \"postgresql://...\") or pass --type TYPE"
                .into(),
        )),
        (None, many) => Err(Error::Invalid(format!(
            "several pg_basebackup types ({}): pass --type TYPE",
            many.join(", ")
        ))),
    }
}

/// For the WAL type `name` (`db.wal`) of a configured `pg_basebackup` type with `wal_max_age`:
/// that age, which `status` holds the newest archived WAL file to (its recovery point).
pub fn max_age(cfg: Option<&Config>, name: &str) -> Option<chrono::Duration> {
    let base = crate::ops::wal::base_of(name)?;
    match &cfg?.type_config(base)?.source {
        SourceSpec::PgBaseBackup { wal_max_age: Some(a), .. } => Some(a.duration()),
        _ => None,
    }
}

/// The WAL types `status` reports even before anything is archived: those with `wal_max_age`.
pub fn watched(cfg: Option<&Config>) -> Vec<String> {
    cfg.map(|c| {
        c.types
            .iter()
            .filter(|(_, t)| matches!(t.source, SourceSpec::PgBaseBackup { wal_max_age: Some(_), .. }))
            .map(|(n, _)| crate::ops::wal::wal_type(n))
            .collect()
    })
    .unwrap_or_default()
}
