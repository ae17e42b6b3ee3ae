//! Runs one configured backup type: builds its source (consistent SQLite capture, pg_dump stream,
//! command output, files) and takes the snapshot. Used by `backup`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::manifest::Snapshot;
use crate::id::SnapshotId;
use crate::lifecycle::config::{SourceSpec, TypeConfig};
use crate::ops::kinds::TakeAs;
use crate::ops::snapshot::{self, SnapshotOptions, SnapshotOutcome, Source};
use crate::repo::Repo;
use crate::source::pgconn::PgConn;
use crate::source::pgdump;
use crate::source::{postgres, sqlite, ChildReader};

pub mod pg;

/// Per-run switches from the command line.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunFlags {
    /// Stream the pages even where the config asks for VACUUM INTO.
    pub no_vacuum: bool,
    /// Read every file.
    pub force_read: bool,
}

/// Removes the password from a PostgreSQL connection string (any form) before it is recorded.
pub fn redact_url(u: &str) -> String {
    PgConn::parse(u).map_or_else(|_| "(connection string not shown: it does not parse)".into(), |c| c.redacted())
}

/// The wait for a busy SQLite database when the config gives none.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Takes the snapshot for type `name`. `parent` is the snapshot to compare against when the
/// caller has looked it up already (`Some(None)`: there is none; `None`: it is looked up here).
/// `at`: the snapshot's time from the caller's clock and the `seq` to record (see
/// `ops::snapshot::next_seq`); `None`: the wall clock, and the snapshots are read for the seq.
/// `take_as`: a pre-change or manual snapshot instead of a routine one.
pub fn run_type(
    repo: &mut Repo,
    name: &str,
    t: &TypeConfig,
    flags: RunFlags,
    parent: Option<Option<(SnapshotId, Snapshot)>>,
    at: Option<(chrono::DateTime<chrono::Local>, u64)>,
    take_as: Option<&TakeAs>,
) -> Result<SnapshotOutcome> {
    let mut opts = SnapshotOptions {
        backup_type: name.to_string(),
        creator: crate::util::account_name(),
        force_read: flags.force_read,
        chunker: t.chunker,
        skip_if_unchanged_within: t.on_change_window(),
        parent,
        time: at.map(|a| a.0),
        next_seq: at.map(|a| a.1),
        ..Default::default()
    };
    if let Some(k) = take_as {
        k.apply(&mut opts);
    }
    if !t.exclude.is_empty() {
        let mut b = globset::GlobSetBuilder::new();
        for g in &t.exclude {
            b.add(
                globset::Glob::new(g.trim_end_matches('/'))
                    .map_err(|e| Error::Invalid(format!("exclude {g:?}: {e}")))?,
            );
        }
        opts.excludes = Some(b.build().map_err(|e| Error::Invalid(e.to_string()))?);
    }
    match t.source() {
        SourceSpec::Sqlite { path, vacuum, busy_timeout } => {
            let timeout = busy_timeout.unwrap_or(DEFAULT_BUSY_TIMEOUT);
            // Pages stream from one read transaction (no temporary copy) unless VACUUM INTO is
            // asked for; the read transaction ends when the reader is dropped.
            let vacuum = *vacuum && !flags.no_vacuum;
            let cap = sqlite::capture(path, &repo.store().root().join("tmp"), vacuum, timeout, true)?;
            let file_name =
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db.sqlite".into());
            opts.source_meta = cap.meta().clone();
            // A copy is ours (0600); the snapshot records the database's own mode.
            opts.stream_mode =
                std::fs::metadata(path).ok().map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
            opts.source_meta.insert("sqlite.file".into(), file_name.clone());
            let reader = cap.into_reader()?;
            snapshot::snapshot(repo, Source::Reader { name: file_name, reader }, &opts)
        }
        SourceSpec::Postgres(target) => {
            // A custom or plain dump is a database stream whatever the type is called ("pg" in the
            // README): cut it with the repository's small-chunk "db" parameters, so a row edit
            // stays local.
            if opts.chunker.is_none() && !repo.config().chunkers.contains_key(name) {
                opts.chunker = Some(repo.config().chunker_for("db"));
            }
            let conn = PgConn::parse(target)?;
            let format = t.pg_format;
            // Row counts and schema digest read in the very snapshot pg_dump dumps.
            let (session, snapshot_id, facts) = pg::exported_snapshot(&conn)?;
            let globals = pgdump::dump_globals(&conn);
            let mut dump = pgdump::dump_command(&conn, format);
            dump.arg(format!("--snapshot={snapshot_id}"));
            let reader = ChildReader::spawn(dump, "pg_dump")?.diagnosed_by(postgres::diagnose);
            let mut meta: BTreeMap<String, String> = facts;
            meta.insert("postgres.target".into(), conn.redacted());
            meta.insert("postgres.format".into(), format.as_str().into());
            if let Some(v) = pgdump::dump_version() {
                meta.insert("postgres.pg_dump".into(), v);
            }
            let mut streams: Vec<(String, Box<dyn std::io::Read + Send>)> =
                vec![(format.file_name(name), Box::new(reader))];
            if let Some(sql) = globals.sql {
                meta.insert("postgres.globals".into(), pgdump::globals_file_name(name));
                streams.push((pgdump::globals_file_name(name), Box::new(std::io::Cursor::new(sql))));
            }
            if let Some(w) = globals.warning {
                tracing::warn!("{name}: {w}");
                meta.insert("postgres.globals_warning".into(), w);
            }
            opts.source_meta = meta;
            let r = snapshot::snapshot(repo, Source::Streams(streams), &opts);
            pg::end(session);
            r
        }
        SourceSpec::PgBaseBackup { target, .. } => crate::lifecycle::wal::base_backup(repo, target, opts),
        SourceSpec::Command { argv, output_name } => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            let reader = ChildReader::spawn(c, &argv[0])?;
            opts.source_meta.insert("command".into(), argv.join(" "));
            let file = output_name.clone().unwrap_or_else(|| format!("{name}.out"));
            snapshot::snapshot(repo, Source::Reader { name: file, reader: Box::new(reader) }, &opts)
        }
        SourceSpec::Paths(paths) => snapshot::snapshot(repo, Source::Paths(paths.clone()), &opts),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted_in_every_form() {
        assert_eq!(super::redact_url("postgresql://app:s3cret@db:5432/app"), "postgresql://app@db:5432/app");
        assert_eq!(super::redact_url("host=db password=s3cret user=app"), "host=db user=app");
        assert_eq!(super::redact_url("postgresql://db/app?password=s3cret"), "postgresql://db/app");
        assert_eq!(super::redact_url("myservice"), "myservice");
        assert!(!super::redact_url("host=db password='s3cret").contains("s3cret"));
    }
}
