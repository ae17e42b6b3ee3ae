//! What `backup` and `daemon` do with the state kept outside the repository ([`state`]) when a
//! run cannot reach the repository: record the failed run, notify, and run the dead-man check
//! from there; and once the repository opens again, a recovery event and the last successes
//! brought up to date for the next time it cannot be opened.
//!
//! A failure before the repository opens is recorded under a reserved name, not under each
//! type: one cause (a wrong password) is one row and one event, and ':' keeps the names apart
//! from every configured type's (type names cannot contain ':').

use std::path::{Path, PathBuf};

use chrono::{DateTime, Local};
use serde_json::Value;

use crate::error::Result;
use crate::format::manifest::Snapshot;
use crate::id::SnapshotId;
use crate::lifecycle::clock::Clock;
use crate::lifecycle::config::{Config, NotifyConfig};
use crate::lifecycle::history::{History, Outcome};
use crate::lifecycle::notify::{self, NotifyState, Policy};
use crate::lifecycle::runner::{self, last_success, TypeResult};
use crate::lifecycle::state::{notify_state, notify_state_for, state_dir, Remembered, State};

/// The history name of runs that stopped because the repository could not be opened (missing,
/// gone, wrong or missing password, unreadable).
pub const OPEN_KEY: &str = "repository:open";

/// The history name of runs that stopped because the configuration file did not load.
pub const CONFIG_KEY: &str = "config:load";

/// The state of `cfg`, created if needed; `None` (with a warning) when no directory can be
/// derived or it cannot be opened: a run must not fail because its record cannot be kept.
pub fn state_for(cfg: &Config) -> Option<State> {
    let Some(dir) = state_dir(&cfg.file, cfg.backup.state_dir.as_deref()) else {
        tracing::warn!("no state directory (set HOME, XDG_STATE_HOME or state_dir): failures before the repository opens are not recorded");
        return None;
    };
    State::open(&dir, &cfg.file).map_err(|e| tracing::warn!("state kept outside the repository: {e}")).ok()
}

/// The state of `cfg` if it has ever been written (for reading: `history`).
pub fn existing_state_for(cfg: &Config) -> Result<Option<State>> {
    match state_dir(&cfg.file, cfg.backup.state_dir.as_deref()) {
        Some(dir) => State::open_existing(&dir, &cfg.file),
        None => Ok(None),
    }
}

/// What can still be read from a config file that does not load.
#[derive(Debug, Default)]
pub struct Lenient {
    /// The notify section, or the channels in it that parse on their own.
    pub notify: Option<NotifyConfig>,
    /// `state_dir`, made absolute against the file's directory.
    pub state_dir: Option<PathBuf>,
}

/// Reads the notify section and `state_dir` from `file` as leniently as its bytes allow: a file
/// that is valid JSON yields them even when other keys are wrong, and a notify section with one
/// bad channel still yields the good ones. A file that is not JSON at all yields nothing: there is
/// no honest way to guess where its notifications should go.
pub fn read_lenient(file: &Path) -> Lenient {
    let Some(v) = std::fs::read(file).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok()) else {
        return Lenient::default();
    };
    let section = v.get("backup").unwrap_or(&v);
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Lenient {
        notify: section.get("notify").and_then(lenient_notify),
        state_dir: section.get("state_dir").and_then(Value::as_str).map(|s| dir.join(s)),
    }
}

fn lenient_notify(v: &Value) -> Option<NotifyConfig> {
    if let Ok(n) = serde_json::from_value::<NotifyConfig>(v.clone()) {
        return Some(n);
    }
    let o = v.as_object()?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(String::from);
    #[allow(clippy::needless_update, reason = "NotifyConfig grows channels; new ones stay off here")]
    let n = NotifyConfig {
        ntfy: s("ntfy"),
        webhook: s("webhook"),
        command: s("command"),
        email: o.get("email").and_then(|e| serde_json::from_value(e.clone()).ok()),
        consecutive_failures: o.get("consecutive_failures").and_then(|v| serde_json::from_value(v.clone()).ok()),
        remind_every: o.get("remind_every").and_then(|v| serde_json::from_value(v.clone()).ok()),
        ..Default::default()
    };
    (n != NotifyConfig::default()).then_some(n)
}

/// What a run of `key` is, in messages.
fn what(key: &str) -> &'static str {
    if key == CONFIG_KEY {
        "loading the configuration"
    } else {
        "opening the repository"
    }
}

/// A failed run of `key`: told through `told` as a failing type is (at once, then one reminder
/// per `remind_every`, an optional escalation). Returns the notifications not delivered.
fn tell_failure(n: &NotifyConfig, told: &mut NotifyState, key: &str, error: &str, now: DateTime<Local>) -> Vec<String> {
    let events = told.failed(key, what(key), now.fixed_offset(), error, &Policy::of(n));
    notify::deliver(n, told, key, events)
}

/// Saves `told`; a state that cannot be saved costs a repeated notification, never the run.
fn save(told: &mut NotifyState) {
    if let Err(e) = told.save() {
        tracing::warn!("notification state not saved: {e}");
    }
}

/// A run stopped by the config file at `file` not loading (`error`): recorded in its state when
/// a state directory can be derived, and notified through what [`read_lenient`] finds. Returns
/// the notifications that could not be delivered.
pub fn config_failed(file: &Path, error: &str, clock: &dyn Clock) -> Vec<String> {
    let l = read_lenient(file);
    let now = clock.now();
    let t = now.to_rfc3339();
    match state_dir(file, l.state_dir.as_deref()).map(|d| State::open(&d, file)) {
        Some(Ok(s)) => {
            if let Err(e) = s.record_failure(CONFIG_KEY, &t, &t, error) {
                tracing::warn!("recording the failure: {e}");
            }
        }
        Some(Err(e)) => tracing::warn!("recording the failure: {e}"),
        None => {}
    }
    let Some(n) = l.notify else { return Vec::new() };
    let mut told = notify_state(file, l.state_dir.as_deref(), None);
    let errors = tell_failure(&n, &mut told, CONFIG_KEY, error, now);
    save(&mut told);
    errors
}

/// A run of `types` that started at `start` and stopped before the repository at `repo_path`
/// opened (`error`): recorded, notified, and the dead-man check run from the state (the
/// repository's history is out of reach). Returns the notifications that could not be delivered.
pub fn open_failed(
    state: &State,
    cfg: &Config,
    repo_path: Option<&Path>,
    types: &[String],
    start: DateTime<Local>,
    error: &str,
    clock: &dyn Clock,
) -> Result<Vec<String>> {
    let n = cfg.backup.notify.clone().unwrap_or_default();
    let end = clock.now();
    let mut told = notify_state_for(cfg, repo_path);
    // The config loaded this time: a run of config failures has ended.
    let mut errors = recoveries(state, &n, &mut told, &[CONFIG_KEY], end)?;
    state.record_failure(OPEN_KEY, &start.to_rfc3339(), &end.to_rfc3339(), error)?;
    for t in types {
        state.note_tried(t, &start.to_rfc3339())?;
    }
    errors.extend(tell_failure(&n, &mut told, OPEN_KEY, error, end));
    errors.extend(dead_man_check(state, cfg, &mut told, &end)?);
    save(&mut told);
    Ok(errors)
}

/// The error for a repository that this config has had at `path` and that is no longer there.
pub fn gone_error(path: &Path, r: &Remembered) -> crate::Error {
    let when = match &r.created {
        Some(c) => format!("cairn created it for this configuration at {c}"),
        None => "cairn has used it for this configuration".to_string(),
    };
    crate::Error::NotFound(format!(
        "repository {} is gone: is the disk mounted? {when} (id {}, last opened {}); a new one is not \
         created in its place: mount it, or start a new repository there with `cairn init`",
        path.display(),
        r.id.get(..8).unwrap_or(&r.id),
        r.last_opened
    ))
}

/// The repository `id` at `path` opened (`created`: cairn has just created it): remembered, and
/// a run of earlier failures to load the config or open the repository ends with a recovery
/// event (once: what was told is the runner's record too). Returns the notifications that could
/// not be delivered.
pub fn opened(
    state: &State,
    cfg: &Config,
    path: &Path,
    id: &str,
    created: bool,
    clock: &dyn Clock,
) -> Result<Vec<String>> {
    let now = clock.now();
    if let Some(old) = state.remember(path, id, &now.to_rfc3339(), created)? {
        tracing::warn!("{}: a different repository than before (id {id}, was {old})", path.display());
    }
    let n = cfg.backup.notify.clone().unwrap_or_default();
    let mut told = notify_state_for(cfg, Some(path));
    let errors = recoveries(state, &n, &mut told, &[CONFIG_KEY, OPEN_KEY], now)?;
    save(&mut told);
    Ok(errors)
}

/// Ends the runs of failures of `keys`, in the recorded runs and in what was told: a recovery
/// for each whose failure had been told. Returns the notifications not delivered.
fn recoveries(
    state: &State,
    n: &NotifyConfig,
    told: &mut NotifyState,
    keys: &[&str],
    now: DateTime<Local>,
) -> Result<Vec<String>> {
    let mut errors = Vec::new();
    for key in keys {
        state.clear(key)?;
        if let Some(ev) = told.succeeded(key, what(key), now.fixed_offset()) {
            errors.extend(notify::deliver(n, told, key, vec![ev]));
        }
    }
    Ok(errors)
}

/// Brings each type's last success in the state up to date from the repository's history and
/// snapshots (`snaps`), for the dead-man check of a later run that cannot open the repository.
/// Times after `now` are left out (a clock that was ahead is no evidence of a success).
pub fn note_successes(
    state: &State,
    cfg: &Config,
    history: &History,
    snaps: &[(SnapshotId, Snapshot)],
    now: &DateTime<Local>,
) -> Result<()> {
    for (name, _) in &cfg.types {
        if let Some(t) = last_success(history, snaps, name, now)? {
            state.note_success(name, t)?;
        }
    }
    Ok(())
}

/// Notes the outcome of a daemon round that ended at `now`.
pub fn note_round(state: &State, ran: &[TypeResult], now: DateTime<Local>) -> Result<()> {
    for r in ran {
        state.note_tried(&r.backup_type, &now.to_rfc3339())?;
        // The runner has cleared its dead-man record in the notification state.
        if r.result != Outcome::Failed {
            state.note_success(&r.backup_type, now.fixed_offset())?;
        }
    }
    Ok(())
}

/// The dead-man check of `runner::dead_man_check`, from the state instead of the repository's
/// history: per scheduled type whose last success is older than twice its RPO (or its
/// catch_up_after, if longer), once per `remind_every`. What was told is the runner's record
/// (`dead_man:TYPE` in `told`), so a repository that comes back does not alert again.
pub fn dead_man_check(
    state: &State,
    cfg: &Config,
    told: &mut NotifyState,
    now: &DateTime<Local>,
) -> Result<Vec<String>> {
    let evidence = runner::DeadManEvidence {
        last_success: &|name| state.last_success(name),
        first_run: &|name| state.first_run(name),
        // Not overdue by what is known here: the runner clears the record once it knows better.
        complete: false,
        suffix: "; the repository cannot be opened",
    };
    runner::dead_man_alerts(cfg, told, now, &evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_settings_are_read_from_a_config_that_does_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cairn.json");
        let write = |v: &str| std::fs::write(&f, v).unwrap();
        write(r#"{"backup": {"name": 1, "state_dir": "st", "notify": {"ntfy": "http://x/t"}}}"#);
        let l = read_lenient(&f);
        assert_eq!(l.notify.unwrap().ntfy.as_deref(), Some("http://x/t"));
        assert_eq!(l.state_dir, Some(std::fs::canonicalize(dir.path()).unwrap().join("st")));
        // One bad channel does not lose the good ones.
        write(r#"{"notify": {"webhook": "http://x/h", "email": {"too": "x"}, "bogus": 1}}"#);
        let n = read_lenient(&f).notify.unwrap();
        assert_eq!((n.webhook.as_deref(), n.email), (Some("http://x/h"), None));
        // Not JSON: nothing to go on.
        write(r#"{"notify": {"ntfy": "http://x/t"}"#);
        assert!(read_lenient(&f).notify.is_none());
    }
}
