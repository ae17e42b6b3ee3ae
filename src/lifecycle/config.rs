//! The application's backup configuration: one JSON file, either the app's own `config.json`
//! with a `backup` key or a standalone `cairn.json` with the same content. Relative paths resolve
//! against the file's directory. Unknown keys, wrong types and impossible values are errors that
//! name the file and the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::format::chunker::ChunkerParams;
use crate::format::repo_config::Encryption;
use crate::lifecycle::schedule::Schedule;
pub use crate::ops::retention::Retention;
use crate::source::pgconn::PgConn;
use crate::source::pgdump::PgFormat;
use crate::span::Span;

/// Which source a type reads, with the settings that only make sense for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// SQLite file.
    Sqlite {
        /// Database path (absolute).
        path: PathBuf,
        /// VACUUM INTO instead of the online backup API.
        vacuum: bool,
        /// How long to wait for a busy (locked) database (`busy_timeout_s`, default 30 s).
        busy_timeout: Option<std::time::Duration>,
    },
    /// pg_dump target: a libpq connection string (URL, keyword/value) or a service name,
    /// checked by `source::pgconn::PgConn::parse` at load.
    Postgres(String),
    /// `pg_basebackup` base backups of a PostgreSQL cluster (a URL or a libpq service name), the
    /// base of point-in-time recovery with the WAL `wal-push` archives (`lifecycle::wal`).
    PgBaseBackup {
        /// Connection URL or service name.
        target: String,
        /// `status` alerts when the newest archived WAL segment is older than this.
        wal_max_age: Option<Span>,
    },
    /// Files and directories (absolute).
    Paths(Vec<PathBuf>),
    /// A command whose standard output is stored.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// File name of the output inside the snapshot (`command_name`, default "TYPE.out").
        output_name: Option<String>,
    },
}

/// One backup type, validated and parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeConfig {
    /// What it reads.
    pub source: SourceSpec,
    /// Globs (matched against paths inside the snapshot) to leave out; checked at load.
    pub exclude: Vec<String>,
    /// When it runs (None: only with `--now`).
    pub schedule: Option<Schedule>,
    /// For on-change types: snapshot anyway when the last one is older than this (default 1d).
    pub on_change_fallback: Option<Span>,
    /// When the last success is older than this, the type is due whatever the clock says.
    pub catch_up_after: Option<Span>,
    /// Recovery point objective shown by status (default: the schedule interval).
    pub rpo: Option<Span>,
    /// Retention.
    pub retention: Option<Retention>,
    /// Chunker override for this type.
    pub chunker: Option<ChunkerParams>,
    /// How a `postgres` type stores its dump (`pg_format`, default custom).
    pub pg_format: PgFormat,
}

impl TypeConfig {
    /// The source.
    pub fn source(&self) -> &SourceSpec {
        &self.source
    }

    /// The recovery point objective: `rpo`, else the schedule's interval, else one day.
    pub fn rpo(&self) -> chrono::Duration {
        match (&self.rpo, &self.schedule) {
            (Some(r), _) => r.duration(),
            (None, Some(s)) => s.interval(),
            (None, None) => chrono::Duration::days(1),
        }
    }

    /// For on-change types, how old the parent may be before an unchanged source is stored again.
    pub fn on_change_window(&self) -> Option<chrono::Duration> {
        (self.schedule == Some(Schedule::OnChange))
            .then(|| self.on_change_fallback.map_or_else(|| chrono::Duration::days(1), |d| d.duration()))
    }
}

/// A type as written in the file: the shape `config check` prints back.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sqlite: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    vacuum: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    busy_timeout_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    postgres: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pg_format: Option<PgFormat>,
    pg_basebackup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wal_max_age: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    paths: Option<Vec<PathBuf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<Schedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_change_fallback: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    catch_up_after: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rpo: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention: Option<Retention>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunker: Option<ChunkerParams>,
}

impl From<&TypeConfig> for TypeFile {
    fn from(t: &TypeConfig) -> TypeFile {
        let mut f = TypeFile {
            exclude: t.exclude.clone(),
            schedule: t.schedule,
            on_change_fallback: t.on_change_fallback,
            catch_up_after: t.catch_up_after,
            rpo: t.rpo,
            retention: t.retention.clone(),
            chunker: t.chunker,
            ..Default::default()
        };
        match &t.source {
            SourceSpec::Sqlite { path, vacuum, busy_timeout } => {
                f.sqlite = Some(path.clone());
                f.vacuum = *vacuum;
                f.busy_timeout_s = busy_timeout.map(|d| d.as_secs());
            }
            SourceSpec::Postgres(target) => {
                // `config check` prints this: never the password.
                f.postgres = Some(crate::lifecycle::job::redact_url(target));
                f.pg_format = Some(t.pg_format);
            }
            SourceSpec::PgBaseBackup { target, wal_max_age } => {
                f.pg_basebackup = Some(crate::lifecycle::job::redact_url(target));
                f.wal_max_age = *wal_max_age;
            }
            SourceSpec::Paths(p) => f.paths = Some(p.clone()),
            SourceSpec::Command { argv, output_name } => {
                f.command = Some(argv.clone());
                f.command_name = output_name.clone();
            }
        }
        f
    }
}

impl Serialize for TypeConfig {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        TypeFile::from(self).serialize(s)
    }
}

impl TypeFile {
    /// Checks what serde cannot and builds the typed form; `abs` makes paths absolute. Errors
    /// are (key relative to the type, message).
    fn into_typed(self, abs: &dyn Fn(&Path) -> PathBuf) -> std::result::Result<TypeConfig, (String, String)> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        let sources = [
            self.sqlite.is_some(),
            self.postgres.is_some(),
            self.pg_basebackup.is_some(),
            self.paths.is_some(),
            self.command.is_some(),
        ];
        match sources.iter().filter(|&&b| b).count() {
            1 => {}
            0 => return err("", "no source: give one of sqlite, postgres, pg_basebackup, paths, command".into()),
            _ => {
                return err(
                    "",
                    "more than one source: give only one of sqlite, postgres, pg_basebackup, paths, command".into(),
                )
            }
        }
        let only = |key: &str, given: bool, source: &str| -> std::result::Result<(), (String, String)> {
            if given {
                Err((key.to_string(), format!("only applies to a {source} source")))
            } else {
                Ok(())
            }
        };
        if self.sqlite.is_none() {
            only("vacuum", self.vacuum, "sqlite")?;
            only("busy_timeout_s", self.busy_timeout_s.is_some(), "sqlite")?;
        }
        if self.command.is_none() {
            only("command_name", self.command_name.is_some(), "command")?;
        }
        if self.postgres.is_none() {
            only("pg_format", self.pg_format.is_some(), "postgres")?;
        }
        if self.pg_basebackup.is_none() {
            only("wal_max_age", self.wal_max_age.is_some(), "pg_basebackup")?;
        }
        let source = if let Some(p) = self.sqlite {
            SourceSpec::Sqlite {
                path: abs(&p),
                vacuum: self.vacuum,
                busy_timeout: self.busy_timeout_s.map(std::time::Duration::from_secs),
            }
        } else if let Some(target) = self.postgres {
            // The message never quotes the string: it may hold a password.
            PgConn::parse(&target).map_err(|e| ("postgres".to_string(), e.to_string()))?;
            SourceSpec::Postgres(target)
        } else if let Some(target) = self.pg_basebackup {
            PgConn::parse(&target).map_err(|e| ("pg_basebackup".to_string(), e.to_string()))?;
            SourceSpec::PgBaseBackup { target, wal_max_age: self.wal_max_age }
        } else if let Some(argv) = self.command {
            if argv.is_empty() {
                return err("command", "empty command".into());
            }
            SourceSpec::Command { argv, output_name: self.command_name }
        } else {
            let ps = self.paths.unwrap_or_default();
            if ps.is_empty() {
                return err("paths", "empty list".into());
            }
            SourceSpec::Paths(ps.iter().map(|p| abs(p)).collect())
        };
        for g in &self.exclude {
            if let Err(e) = globset::Glob::new(g) {
                return err("exclude", e.to_string());
            }
        }
        if let Some(r) = &self.retention {
            r.validate().map_err(|(k, m)| (join("retention", k), m.to_string()))?;
        }
        if let Some(c) = &self.chunker {
            c.validate().map_err(|e| ("chunker".to_string(), e.clone()))?;
        }
        Ok(TypeConfig {
            source,
            exclude: self.exclude,
            schedule: self.schedule,
            on_change_fallback: self.on_change_fallback,
            catch_up_after: self.catch_up_after,
            rpo: self.rpo,
            retention: self.retention,
            chunker: self.chunker,
            pg_format: self.pg_format.unwrap_or_default(),
        })
    }
}

/// `base.key`, or `base` alone when `key` is empty.
fn join(base: &str, key: &str) -> String {
    match (base, key) {
        (b, "") => b.to_string(),
        ("", k) => k.to_string(),
        (b, k) => format!("{b}.{k}"),
    }
}

/// A remote mirror (used by `sync`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Name used on the command line.
    pub name: String,
    /// rclone target, e.g. "gdrive:backups/obd" or ":local:/mnt/usb/cairn".
    pub rclone: String,
    /// Extra rclone flags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Per-remote retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Longest a whole sync to this remote may take (default 6h); rclone is killed then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<Span>,
}

impl RemoteConfig {
    /// The store for this remote.
    pub fn store(&self) -> crate::store::rclone::RcloneStore {
        let s = crate::store::rclone::RcloneStore::new(&self.name, &self.rclone, &self.flags);
        match self.time_limit {
            Some(l) => s.with_time_limit(std::time::Duration::from_secs(l.duration().num_seconds().max(1) as u64)),
            None => s,
        }
    }
}

mod capacity;
mod export;
mod notify;
pub use capacity::{AnomalyConfig, CapacityConfig};
pub use export::{ExportConfig, Layout};
pub use notify::{EmailConfig, FailureThreshold, NotifyConfig, SmtpConfig, SmtpTls};
mod verify;
pub use verify::{Percent, VerifyConfig};

/// The `backup` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Export prefix, e.g. "obd".
    pub name: String,
    /// Repository directory.
    pub repository: PathBuf,
    /// "xchacha20poly1305" (default) or "none", used when the repository is created on first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// File holding the repository password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Command printing the repository password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_command: Option<Vec<String>>,
    /// Backup types as written, in the order `backup` runs them; [`Config::types`] holds them
    /// parsed.
    pub types: serde_json::Map<String, serde_json::Value>,
    /// Remote mirrors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<RemoteConfig>,
    /// Notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyConfig>,
    /// Apply retention (`forget`) after a successful backup (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget_after_backup: Option<bool>,
    /// Prune after `forget` removed snapshots (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_after_backup: Option<bool>,
    /// An export written after every backup that stored a snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportConfig>,
    /// Where the state kept outside the repository lives (default
    /// `$XDG_STATE_HOME/cairn/<config-id>`; see `lifecycle::state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// When `backup` and the daemon verify the repository (`lifecycle::verify_runs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyConfig>,
    /// When the repository's file system or a remote counts as low (`lifecycle::capacity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityConfig>,
    /// When a backup is an anomaly against its type's history (`lifecycle::anomaly`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<AnomalyConfig>,
}

/// A loaded, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// The backup section with paths made absolute.
    pub backup: BackupConfig,
    /// Types in file order.
    pub types: Vec<(String, TypeConfig)>,
}

fn invalid(file: &Path, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {key}: {msg}", file.display()))
}

/// `base` joined with a serde_path_to_error path, which is "." for the value itself.
fn key_path(base: &str, path: &serde_path_to_error::Path) -> String {
    let p = path.to_string();
    match (base, p.as_str()) {
        ("", ".") => "(top level)".to_string(),
        (b, ".") => b.to_string(),
        ("", p) => p.to_string(),
        (b, p) if p.starts_with('[') => format!("{b}{p}"),
        (b, p) => format!("{b}.{p}"),
    }
}

impl Config {
    /// Finds the config: explicit path, else ./cairn.json, else ./config.json (if it has a `backup` key).
    pub fn locate(explicit: Option<&Path>) -> Result<Option<PathBuf>> {
        if let Some(p) = explicit {
            if !p.is_file() {
                return Err(Error::NotFound(format!("config file {} does not exist", p.display())));
            }
            return Ok(Some(p.to_path_buf()));
        }
        for c in ["cairn.json", "config.json"] {
            let p = PathBuf::from(c);
            if p.is_file() {
                if c == "config.json" {
                    let v: serde_json::Value =
                        match std::fs::read(&p).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                            Some(v) => v,
                            None => continue,
                        };
                    if v.get("backup").is_none() {
                        continue;
                    }
                }
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Loads and validates a config file.
    pub fn load(file: &Path) -> Result<Config> {
        let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("{}: not valid JSON: {e}", file.display())))?;
        if !value.is_object() {
            return Err(invalid(file, "(top level)", "must be a JSON object"));
        }
        let (section, prefix) = match value.get("backup") {
            Some(b) => (b.clone(), "backup."),
            None => (value, ""),
        };
        let mut backup: BackupConfig = serde_path_to_error::deserialize(section)
            .map_err(|e| invalid(file, &key_path(prefix.trim_end_matches('.'), e.path()), e.into_inner()))?;
        let dir = std::fs::canonicalize(file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
            .map_err(|e| Error::io(file, e))?;
        let abs = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { dir.join(p) };
        if backup.name.is_empty() || !backup.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(invalid(
                file,
                &format!("{prefix}name"),
                format!("{:?}: use letters, digits, '-' and '_'", backup.name),
            ));
        }
        backup.repository = abs(&backup.repository);
        if let Some(p) = &backup.password_file {
            backup.password_file = Some(abs(p));
        }
        if let Some(p) = &backup.state_dir {
            backup.state_dir = Some(abs(p));
        }
        if backup.password_command.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(invalid(file, &format!("{prefix}password_command"), "empty command"));
        }
        if let Some(n) = &mut backup.notify {
            n.resolve(&abs).map_err(|(k, m)| invalid(file, &join(&format!("{prefix}notify"), &k), m))?;
        }
        if let Some(x) = &mut backup.export {
            x.resolve(&abs, &backup.repository)
                .map_err(|(k, m)| invalid(file, &join(&format!("{prefix}export"), &k), m))?;
        }
        if let Some(v) = &backup.verify {
            v.validate().map_err(|(k, m)| invalid(file, &join(&format!("{prefix}verify"), k), m))?;
        }
        let mut types = Vec::new();
        if backup.types.is_empty() {
            return Err(invalid(file, &format!("{prefix}types"), "no backup types configured"));
        }
        for (name, v) in &backup.types {
            let key = format!("{prefix}types.{name}");
            if name.is_empty() || name.len() > 64 || name.contains(['/', ':', '@', '\0', ' ']) {
                return Err(invalid(file, &key, "type names are 1-64 characters without '/', ':', '@' or spaces"));
            }
            if name.ends_with(crate::ops::wal::WAL_SUFFIX) {
                return Err(invalid(file, &key, "type names ending in \".wal\" are reserved for archived WAL"));
            }
            if name == crate::lifecycle::verify_runs::VERIFY {
                return Err(invalid(file, &key, "\"verify\" is reserved for the verify runs in the history"));
            }
            let t: TypeFile = serde_path_to_error::deserialize(v.clone())
                .map_err(|e| invalid(file, &key_path(&key, e.path()), e.into_inner()))?;
            let t = t.into_typed(&abs).map_err(|(k, m)| invalid(file, &join(&key, &k), m))?;
            types.push((name.clone(), t));
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in backup.remotes.iter().enumerate() {
            if !names.insert(r.name.clone()) {
                return Err(invalid(
                    file,
                    &format!("{prefix}remotes[{i}].name"),
                    format!("duplicate remote {:?}", r.name),
                ));
            }
            if !r.rclone.contains(':') {
                return Err(invalid(
                    file,
                    &format!("{prefix}remotes[{i}].rclone"),
                    format!("{:?} is not an rclone target such as \"gdrive:backups\"", r.rclone),
                ));
            }
            if let Some(ret) = &r.retention {
                ret.validate()
                    .map_err(|(k, m)| invalid(file, &join(&format!("{prefix}remotes[{i}].retention"), k), m))?;
            }
        }
        let file = file.file_name().map(|n| dir.join(n)).unwrap_or_else(|| file.to_path_buf());
        Ok(Config { file, backup, types })
    }

    /// A type's settings.
    pub fn type_config(&self, name: &str) -> Option<&TypeConfig> {
        self.types.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The resolved configuration as JSON (what `config check` prints).
    pub fn resolved_json(&self) -> serde_json::Value {
        let mut b = serde_json::to_value(&self.backup).expect("serializable");
        b["types"] = serde_json::Value::Object(
            self.types.iter().map(|(n, t)| (n.clone(), serde_json::to_value(t).expect("serializable"))).collect(),
        );
        serde_json::json!({ "file": self.file, "backup": b })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(types: serde_json::Value) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cairn.json");
        let v = serde_json::json!({"name": "t", "repository": "repo", "types": types});
        std::fs::write(&file, serde_json::to_vec(&v).unwrap()).unwrap();
        Config::load(&file)
    }

    #[test]
    fn values_are_parsed_once_and_shown_back_as_written() {
        let t = serde_json::json!({
            "db": {"sqlite": "a.db", "busy_timeout_s": 5, "schedule": "daily 03:00", "catch_up_after": "2d",
                   "rpo": "36h", "retention": {"keep_last": 3, "keep_within": "2w"}},
            "cfg": {"command": ["echo", "x"], "command_name": "x.txt", "schedule": "on-change",
                    "on_change_fallback": "12h"},
            "logs": {"paths": ["/var/log"], "schedule": "every 90m", "exclude": ["*.gz"]}
        });
        let c = load(t.clone()).unwrap();
        let db = c.type_config("db").unwrap();
        assert_eq!(db.schedule, Some(Schedule::Daily(chrono::NaiveTime::from_hms_opt(3, 0, 0).unwrap())));
        assert_eq!(db.catch_up_after.map(|d| d.duration()), Some(chrono::Duration::days(2)));
        assert_eq!(db.rpo(), chrono::Duration::hours(36));
        assert!(matches!(&db.source, SourceSpec::Sqlite { busy_timeout: Some(d), .. } if d.as_secs() == 5));
        assert_eq!(c.type_config("cfg").unwrap().on_change_window(), Some(chrono::Duration::hours(12)));
        assert_eq!(c.type_config("logs").unwrap().rpo(), chrono::Duration::minutes(90));
        assert_eq!(db.on_change_window(), None);
        let back = c.resolved_json();
        for (ty, key) in [("db", "schedule"), ("db", "catch_up_after"), ("db", "rpo"), ("db", "retention")] {
            assert_eq!(back["backup"]["types"][ty][key], t[ty][key], "{ty}.{key}");
        }
        assert_eq!(back["backup"]["types"]["cfg"]["command_name"], "x.txt");
        assert_eq!(back["backup"]["types"]["logs"]["schedule"], "every 90m");
        assert_eq!(back["backup"]["types"]["db"]["busy_timeout_s"], 5);
    }

    #[test]
    fn a_bad_value_is_an_error_naming_the_key() {
        for (ty, key, what) in [
            (serde_json::json!({"paths": ["x"], "rpo": "soon"}), "types.t.rpo", "not a duration"),
            (serde_json::json!({"paths": ["x"], "on_change_fallback": "0d"}), "types.t.on_change_fallback", "not a"),
            (serde_json::json!({"paths": ["x"], "schedule": "every 30s"}), "types.t.schedule", "not a schedule"),
            (
                serde_json::json!({"paths": ["x"], "retention": {"keep_within": "1 day"}}),
                "types.t.retention.keep_within",
                "not a duration",
            ),
            (serde_json::json!({"paths": ["x"], "retention": {}}), "types.t.retention", "keeps nothing"),
            (
                serde_json::json!({"paths": ["x"], "busy_timeout_s": 3}),
                "types.t.busy_timeout_s",
                "only applies to a sqlite",
            ),
            (
                serde_json::json!({"paths": ["x"], "command_name": "a"}),
                "types.t.command_name",
                "only applies to a command",
            ),
            (serde_json::json!({"paths": ["x"], "exclude": ["a[" ]}), "types.t.exclude", "unclosed"),
        ] {
            let e = load(serde_json::json!({"t": ty})).unwrap_err().to_string();
            assert!(e.contains(&format!("cairn.json: {key}: ")) && e.contains(what), "{key}: {e}");
        }
    }
}
