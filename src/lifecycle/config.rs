//! The application's backup configuration: one JSON file, either the app's own `config.json`
//! with a `backup` key or a standalone `cairn.json` with the same content. Relative paths resolve
//! against the file's directory. Unknown keys, wrong types and impossible values are errors that
//! name the file and the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::format::chunker::ChunkerParams;
use crate::error::{Error, Result};

/// Retention rules of a type (applied by `forget`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep the newest N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest in each of the last N hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// ... days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// ... weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// ... months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// ... years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep everything younger than this ("30d", "12h", "2w").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
}

/// One backup type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeConfig {
    /// A SQLite database file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<PathBuf>,
    /// Use `VACUUM INTO` instead of the online backup API.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vacuum: bool,
    /// Seconds to wait for a busy (locked) database before failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_timeout_s: Option<u64>,
    /// A PostgreSQL connection URL or libpq service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
    /// Files and directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<PathBuf>>,
    /// Globs (matched against paths inside the snapshot) to leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// A command whose standard output is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// File name of the command's output inside the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_name: Option<String>,
    /// "daily 03:00", "weekly sun 03:00", "hourly", "every 6h", "on-change".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// For on-change types: snapshot anyway when the last one is older than this (default 1d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_change_fallback: Option<String>,
    /// When the last success is older than this, the type is due whatever the clock says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_after: Option<String>,
    /// Recovery point objective shown by status (default: the schedule interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<String>,
    /// Retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Chunker override for this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunker: Option<ChunkerParams>,
}

/// Which source a type reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// SQLite file.
    Sqlite {
        /// Database path (absolute).
        path: PathBuf,
        /// VACUUM INTO.
        vacuum: bool,
    },
    /// pg_dump target.
    Postgres(String),
    /// Files.
    Paths(Vec<PathBuf>),
    /// Command stdout.
    Command(Vec<String>),
}

impl TypeConfig {
    /// The source, once validated.
    pub fn source(&self) -> SourceSpec {
        if let Some(p) = &self.sqlite {
            SourceSpec::Sqlite { path: p.clone(), vacuum: self.vacuum }
        } else if let Some(u) = &self.postgres {
            SourceSpec::Postgres(u.clone())
        } else if let Some(c) = &self.command {
            SourceSpec::Command(c.clone())
        } else {
            SourceSpec::Paths(self.paths.clone().unwrap_or_default())
        }
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
}

/// Email notification settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Recipient.
    pub to: String,
    /// Sender (default: cairn@hostname).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// sendmail binary (default /usr/sbin/sendmail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sendmail: Option<PathBuf>,
}

/// Where failures are told.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// ntfy topic URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntfy: Option<String>,
    /// URL that receives a JSON POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Command run with the event in its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Email through sendmail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailConfig>,
    /// Alert when this many runs of a type fail in a row (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
}

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
    pub encryption: Option<String>,
    /// File holding the repository password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Command printing the repository password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_command: Option<Vec<String>>,
    /// Backup types, in the order `backup` runs them.
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

/// Parses a duration such as "30d", "12h", "2w", "90m", "45s".
pub fn parse_duration(s: &str) -> Option<chrono::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    if n <= 0 {
        return None;
    }
    match unit {
        "s" => chrono::Duration::try_seconds(n),
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        "w" => chrono::Duration::try_weeks(n),
        "y" => chrono::Duration::try_days(n * 365),
        _ => None,
    }
}

/// Checks a schedule expression's syntax.
pub fn check_schedule(s: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let hhmm = |t: &str| -> bool {
        t.split_once(':').is_some_and(|(h, m)| {
            h.len() <= 2
                && m.len() == 2
                && h.parse::<u32>().is_ok_and(|h| h < 24)
                && m.parse::<u32>().is_ok_and(|m| m < 60)
        })
    };
    let ok = match parts.as_slice() {
        ["hourly"] | ["on-change"] => true,
        ["daily", t] => hhmm(t),
        ["weekly", d, t] => {
            ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].contains(&d.to_ascii_lowercase().as_str()) && hhmm(t)
        }
        ["monthly", day, t] => day.parse::<u32>().is_ok_and(|d| (1..=28).contains(&d)) && hhmm(t),
        ["every", d] => parse_duration(d).is_some_and(|d| d >= chrono::Duration::minutes(1)),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a schedule; use \"daily HH:MM\", \"weekly sun HH:MM\", \"monthly D HH:MM\", \"hourly\", \"every 6h\" or \"on-change\""
        ))
    }
}

fn check_retention(file: &Path, key: &str, r: &Retention) -> Result<()> {
    if let Some(w) = &r.keep_within {
        if parse_duration(w).is_none() {
            return Err(invalid(
                file,
                &format!("{key}.keep_within"),
                format!("{w:?} is not a duration such as \"30d\""),
            ));
        }
    }
    let any = r.keep_last.is_some()
        || r.keep_hourly.is_some()
        || r.keep_daily.is_some()
        || r.keep_weekly.is_some()
        || r.keep_monthly.is_some()
        || r.keep_yearly.is_some()
        || r.keep_within.is_some();
    if !any {
        return Err(invalid(file, key, "retention keeps nothing: give keep_last, keep_daily, ... or keep_within"));
    }
    if r.keep_last == Some(0) {
        return Err(invalid(
            file,
            &format!("{key}.keep_last"),
            "must be at least 1 (the newest snapshot is always kept)",
        ));
    }
    Ok(())
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
        match backup.encryption.as_deref() {
            None | Some("xchacha20poly1305") | Some("none") => {}
            Some(o) => {
                return Err(invalid(
                    file,
                    &format!("{prefix}encryption"),
                    format!("{o:?}: use \"xchacha20poly1305\" or \"none\""),
                ))
            }
        }
        if backup.password_command.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(invalid(file, &format!("{prefix}password_command"), "empty command"));
        }
        let mut types = Vec::new();
        if backup.types.is_empty() {
            return Err(invalid(file, &format!("{prefix}types"), "no backup types configured"));
        }
        for (name, v) in &backup.types {
            let key = format!("{prefix}types.{name}");
            if name.is_empty() || name.len() > 64 || name.contains(['/', ':', '\0', ' ']) {
                return Err(invalid(file, &key, "type names are 1-64 characters without '/', ':' or spaces"));
            }
            let mut t: TypeConfig = serde_path_to_error::deserialize(v.clone())
                .map_err(|e| invalid(file, &key_path(&key, e.path()), e.into_inner()))?;
            let sources = [t.sqlite.is_some(), t.postgres.is_some(), t.paths.is_some(), t.command.is_some()];
            match sources.iter().filter(|&&b| b).count() {
                1 => {}
                0 => return Err(invalid(file, &key, "no source: give one of sqlite, postgres, paths, command")),
                _ => {
                    return Err(invalid(
                        file,
                        &key,
                        "more than one source: give only one of sqlite, postgres, paths, command",
                    ))
                }
            }
            if t.vacuum && t.sqlite.is_none() {
                return Err(invalid(file, &format!("{key}.vacuum"), "only applies to a sqlite source"));
            }
            if let Some(p) = &t.sqlite {
                t.sqlite = Some(abs(p));
            }
            if let Some(ps) = &t.paths {
                if ps.is_empty() {
                    return Err(invalid(file, &format!("{key}.paths"), "empty list"));
                }
                t.paths = Some(ps.iter().map(|p| abs(p)).collect());
            }
            if let Some(c) = &t.command {
                if c.is_empty() {
                    return Err(invalid(file, &format!("{key}.command"), "empty command"));
                }
            }
            for g in &t.exclude {
                globset::Glob::new(g).map_err(|e| invalid(file, &format!("{key}.exclude"), e))?;
            }
            if let Some(s) = &t.schedule {
                check_schedule(s).map_err(|e| invalid(file, &format!("{key}.schedule"), e))?;
            }
            for (k, v) in
                [("catch_up_after", &t.catch_up_after), ("rpo", &t.rpo), ("on_change_fallback", &t.on_change_fallback)]
            {
                if let Some(d) = v {
                    if parse_duration(d).is_none() {
                        return Err(invalid(
                            file,
                            &format!("{key}.{k}"),
                            format!("{d:?} is not a duration such as \"2d\""),
                        ));
                    }
                }
            }
            if let Some(r) = &t.retention {
                check_retention(file, &format!("{key}.retention"), r)?;
            }
            if let Some(c) = &t.chunker {
                c.validate().map_err(|e| invalid(file, &format!("{key}.chunker"), e))?;
            }
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
                check_retention(file, &format!("{prefix}remotes[{i}].retention"), ret)?;
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

    #[test]
    fn durations_and_schedules() {
        assert_eq!(parse_duration("2d"), chrono::Duration::try_days(2));
        assert_eq!(parse_duration("90m"), chrono::Duration::try_minutes(90));
        assert!(parse_duration("x").is_none() && parse_duration("0d").is_none() && parse_duration("5").is_none());
        for ok in ["daily 03:00", "weekly sun 03:00", "hourly", "every 6h", "on-change", "monthly 1 04:30"] {
            assert!(check_schedule(ok).is_ok(), "{ok}");
        }
        for bad in ["daily 25:00", "weekly funday 03:00", "sometimes", "every 0h", "daily 3"] {
            assert!(check_schedule(bad).is_err(), "{bad}");
        }
    }
}
