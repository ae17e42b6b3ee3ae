//! Runs one configured backup type: builds its source (consistent SQLite capture, pg_dump stream,
//! command output, files) and takes the snapshot. Used by `backup`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::manifest::Snapshot;
use crate::id::SnapshotId;
use crate::lifecycle::config::{SourceSpec, TypeConfig};
use crate::ops::kinds::TakeAs;
use crate::ops::snapshot::{self, SnapshotOptions, SnapshotOutcome, Source};
use crate::repo::Repo;
use crate::source::{postgres, sqlite, ChildReader};

/// Per-run switches from the command line.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunFlags {
    /// Stream the pages even where the config asks for VACUUM INTO.
    pub no_vacuum: bool,
    /// Read every file.
    pub force_read: bool,
}

/// Removes the password from a PostgreSQL URL before it is recorded.
pub fn redact_url(u: &str) -> String {
    split_password(u).0
}

/// Splits the password out of a PostgreSQL URL (percent-decoded, as raw bytes: libpq takes the
/// password as bytes), so it reaches pg_dump through PGPASSWORD instead of a command line that
/// `ps` shows to every user. A service name or keyword/value string is returned as it is.
fn split_password(u: &str) -> (String, Option<OsString>) {
    if !u.contains("://") {
        return (u.to_string(), None);
    }
    let Ok(mut url) = url::Url::parse(u) else {
        return split_password_host_list(u);
    };
    let Some(password) = url.password().map(decode) else {
        return (u.to_string(), None);
    };
    // Only cannot-be-a-base URLs (no "//") refuse a password change, and those have none.
    let _ = url.set_password(None);
    (url.to_string(), Some(password))
}

/// libpq also accepts a host list (`postgresql://u:pw@h1:5432,h2:5432/db`), which is not a URL
/// the `url` crate parses: the userinfo is everything between "://" and the authority's last '@'.
fn split_password_host_list(u: &str) -> (String, Option<OsString>) {
    let Some((scheme, rest)) = u.split_once("://") else { return (u.to_string(), None) };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let Some((userinfo, hosts)) = authority.rsplit_once('@') else { return (u.to_string(), None) };
    let Some((user, password)) = userinfo.split_once(':') else { return (u.to_string(), None) };
    (format!("{scheme}://{user}@{hosts}{tail}"), Some(decode(password)))
}

fn decode(percent_encoded: &str) -> OsString {
    OsString::from_vec(percent_encoding::percent_decode_str(percent_encoded).collect())
}

fn pg_dump_command(target: &str) -> Command {
    let mut c = Command::new(std::env::var_os("CAIRN_PG_DUMP").unwrap_or_else(|| "pg_dump".into()));
    // Plain SQL, uncompressed: compressed input would defeat deduplication.
    c.args(["--format=plain", "--no-password"]);
    let (target, password) = split_password(target);
    if let Some(p) = password {
        c.env("PGPASSWORD", p);
    }
    let target = target.as_str();
    if target.contains("://") || target.contains('=') {
        c.arg(format!("--dbname={target}"));
    } else {
        c.arg(format!("--dbname=service={target}"));
    }
    c
}

fn pg_dump_version() -> Option<String> {
    let out = Command::new(std::env::var_os("CAIRN_PG_DUMP").unwrap_or_else(|| "pg_dump".into()))
        .arg("--version")
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
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
            // pg_dump text is a database stream whatever the type is called ("pg" in the README):
            // cut it with the repository's small-chunk "db" parameters, so a row edit stays local.
            if opts.chunker.is_none() && !repo.config().chunkers.contains_key(name) {
                opts.chunker = Some(repo.config().chunker_for("db"));
            }
            let reader = ChildReader::spawn(pg_dump_command(target), "pg_dump")?.diagnosed_by(postgres::diagnose);
            let mut meta = BTreeMap::new();
            meta.insert("postgres.target".into(), redact_url(target));
            meta.insert("postgres.format".into(), "plain".into());
            if let Some(v) = pg_dump_version() {
                meta.insert("postgres.pg_dump".into(), v);
            }
            opts.source_meta = meta;
            snapshot::snapshot(repo, Source::Reader { name: format!("{name}.sql"), reader: Box::new(reader) }, &opts)
        }
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
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn url_password_is_removed() {
        assert_eq!(super::redact_url("postgresql://app:s3cret@db:5432/app"), "postgresql://app@db:5432/app");
        assert_eq!(super::redact_url("myservice"), "myservice");
        assert_eq!(
            super::split_password("postgresql://app:p%40ss@db/app"),
            ("postgresql://app@db/app".to_string(), Some("p@ss".into()))
        );
        assert_eq!(super::split_password("postgresql://app@db/app").1, None);
    }

    #[test]
    fn percent_before_a_multibyte_character_is_kept_not_a_panic() {
        // Used to slice inside the 'é' and panic.
        let (shown, pw) = super::split_password("postgresql://app:%\u{e9}x@db/app");
        assert_eq!((shown.as_str(), pw), ("postgresql://app@db/app", Some("%\u{e9}x".into())));
        let (shown, pw) = super::split_password("postgresql://app:ab%\u{20ac}@db/app");
        assert_eq!((shown.as_str(), pw), ("postgresql://app@db/app", Some("ab%\u{20ac}".into())));
        // Encoded multi-byte characters and bytes that are not UTF-8 decode to the exact bytes.
        assert_eq!(
            super::split_password("postgresql://app:%C3%A9%FF@db/app").1,
            Some(OsString::from_vec(vec![0xc3, 0xa9, 0xff]))
        );
        assert_eq!(
            super::redact_url("postgresql://app:%\u{e9}@db:5432/app?sslmode=require"),
            "postgresql://app@db:5432/app?sslmode=require"
        );
    }

    #[test]
    fn passwords_come_out_of_every_url_form() {
        // An unencoded '@' in the password: the authority ends at the last '@'.
        assert_eq!(
            super::split_password("postgresql://app:p@ss@db/app"),
            ("postgresql://app@db/app".to_string(), Some("p@ss".into()))
        );
        // An '@' after the authority is not userinfo.
        assert_eq!(
            super::split_password("postgresql://db/app?options=a@b"),
            ("postgresql://db/app?options=a@b".into(), None)
        );
        // libpq host lists, which are not URLs to the url crate.
        assert_eq!(
            super::split_password("postgresql://app:s%3Acret@h1:5432,h2:5433/app?target_session_attrs=any"),
            ("postgresql://app@h1:5432,h2:5433/app?target_session_attrs=any".to_string(), Some("s:cret".into()))
        );
        assert_eq!(super::redact_url("postgres://app:pw@[::1]:5432/app"), "postgres://app@[::1]:5432/app");
        assert_eq!(
            super::redact_url("postgresql:///app?host=/run/postgresql"),
            "postgresql:///app?host=/run/postgresql"
        );
        assert_eq!(super::split_password("host=db user=app"), ("host=db user=app".to_string(), None));
    }
}
