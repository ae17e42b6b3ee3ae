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
use crate::lifecycle::notify::{self, Event};
use crate::lifecycle::runner::{last_success, TypeResult};
use crate::lifecycle::schedule::human_duration;
use crate::lifecycle::state::{state_dir, Remembered, State};

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
        consecutive_failures: o.get("consecutive_failures").and_then(Value::as_u64).and_then(|n| n.try_into().ok()),
        ..Default::default()
    };
    (n != NotifyConfig::default()).then_some(n)
}

/// The failure event of a run of `key`, and the repeated-failure one when this failure reaches
/// the threshold (as the runner does for a type).
fn failure_events(key: &str, before: u32, threshold: u32, error: &str, now: DateTime<Local>) -> Vec<Event> {
    let mut events = vec![Event::new("failure", key, now, format!("backup could not start: {error}"))];
    if before + 1 == threshold {
        events.push(Event::new(
            "consecutive_failures",
            key,
            now,
            format!("backup could not start {threshold} times in a row; last error: {error}"),
        ));
    }
    events
}

fn send_all(cfg: &NotifyConfig, events: &[Event]) -> Vec<String> {
    events.iter().flat_map(|ev| notify::send(cfg, ev)).collect()
}

/// A run stopped by the config file at `file` not loading (`error`): recorded in its state when
/// a state directory can be derived, and notified through what [`read_lenient`] finds. Returns
/// the notifications that could not be delivered.
pub fn config_failed(file: &Path, error: &str, clock: &dyn Clock) -> Vec<String> {
    let l = read_lenient(file);
    let now = clock.now();
    let t = now.to_rfc3339();
    let before = match state_dir(file, l.state_dir.as_deref()).map(|d| State::open(&d, file)) {
        Some(Ok(s)) => s.record_failure(CONFIG_KEY, &t, &t, error).unwrap_or_else(|e| {
            tracing::warn!("recording the failure: {e}");
            0
        }),
        Some(Err(e)) => {
            tracing::warn!("recording the failure: {e}");
            0
        }
        None => 0,
    };
    let Some(n) = l.notify else { return Vec::new() };
    let threshold = n.consecutive_failures.unwrap_or(3);
    send_all(&n, &failure_events(CONFIG_KEY, before, threshold, error, now))
}

/// A run of `types` that started at `start` and stopped before the repository opened (`error`):
/// recorded, notified, and the dead-man check run from the state (the repository's history is
/// out of reach). Returns the notifications that could not be delivered.
pub fn open_failed(
    state: &State,
    cfg: &Config,
    types: &[String],
    start: DateTime<Local>,
    error: &str,
    clock: &dyn Clock,
) -> Result<Vec<String>> {
    let n = cfg.backup.notify.clone().unwrap_or_default();
    let end = clock.now();
    // The config loaded this time: a run of config failures has ended.
    let mut events = recoveries(state, &[CONFIG_KEY], end)?;
    let before = state.record_failure(OPEN_KEY, &start.to_rfc3339(), &end.to_rfc3339(), error)?;
    for t in types {
        state.note_tried(t, &start.to_rfc3339())?;
    }
    events.extend(failure_events(OPEN_KEY, before, n.consecutive_failures.unwrap_or(3), error, end));
    let mut errors = send_all(&n, &events);
    errors.extend(dead_man_check(state, cfg, &end)?);
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
/// event. Returns the notifications that could not be delivered.
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
    let events = recoveries(state, &[CONFIG_KEY, OPEN_KEY], now)?;
    Ok(send_all(&cfg.backup.notify.clone().unwrap_or_default(), &events))
}

/// Ends the runs of failures of `keys`: a recovery event for each that had any.
fn recoveries(state: &State, keys: &[&str], now: DateTime<Local>) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for key in keys {
        let n = state.clear(key)?;
        if n > 0 {
            events.push(Event::new("recovery", key, now, format!("backup starts again after {n} failed runs")));
        }
    }
    Ok(events)
}

/// Brings each type's last success in the state up to date from the repository's history and
/// snapshots (`snaps`), for the dead-man check of a later run that cannot open the repository.
pub fn note_successes(state: &State, cfg: &Config, history: &History, snaps: &[(SnapshotId, Snapshot)]) -> Result<()> {
    for (name, _) in &cfg.types {
        if let Some(t) = last_success(history, snaps, name)? {
            state.note_success(name, t)?;
        }
    }
    Ok(())
}

/// Notes the outcome of a daemon round that ended at `now`.
pub fn note_round(state: &State, ran: &[TypeResult], now: DateTime<Local>) -> Result<()> {
    for r in ran {
        state.note_tried(&r.backup_type, &now.to_rfc3339())?;
        if r.result != Outcome::Failed {
            state.note_success(&r.backup_type, now.fixed_offset())?;
            state.clear_alert(&r.backup_type, "dead_man")?;
        }
    }
    Ok(())
}

/// The dead-man check of `runner::dead_man_check`, from the state instead of the repository's
/// history: once a day per scheduled type whose last success is older than twice its RPO (or its
/// catch_up_after, if longer). Alerts are kept in the state.
pub fn dead_man_check(state: &State, cfg: &Config, now: &DateTime<Local>) -> Result<Vec<String>> {
    let n = cfg.backup.notify.clone().unwrap_or_default();
    let now_f = now.fixed_offset();
    let mut errors = Vec::new();
    for (name, t) in &cfg.types {
        if t.schedule.is_none() {
            continue;
        }
        let limit = (t.rpo() * 2).max(t.catch_up_after.map_or_else(chrono::Duration::zero, |c| c.duration()));
        let last = state.last_success(name)?;
        let stale = match last {
            Some(l) => now_f - l > limit,
            None => state.first_run(name)?.is_some_and(|f| now_f - f > limit),
        };
        if !stale || state.last_alert(name, "dead_man")?.is_some_and(|a| now_f - a < chrono::Duration::days(1)) {
            continue;
        }
        let msg = match last {
            Some(l) => format!(
                "no successful {name} backup in {} (limit {}); the repository cannot be opened",
                human_duration(now_f - l),
                human_duration(limit)
            ),
            None => format!("no successful {name} backup yet; the repository cannot be opened"),
        };
        errors.extend(notify::send(&n, &Event::new("dead_man", name, *now, msg)));
        state.set_alert(name, "dead_man", &now.to_rfc3339())?;
    }
    Ok(errors)
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
