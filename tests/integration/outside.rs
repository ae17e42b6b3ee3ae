//! Failures before the repository opens (issue 11 items 1 and 2), through the binary: a wrong or
//! missing password, a configuration that does not load and a repository that has gone are
//! recorded in the state kept outside the repository, notified to a real HTTP receiver on
//! 127.0.0.1, listed by `history`, and run the dead-man check from there (faketime moves the
//! clock); a repository that has gone is never created anew by `backup`, while a fresh
//! configuration still gets one on first use.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::lifecycle::{cairn_cfg, edit_backup, history, split_events, HttpSink};
use crate::util::{ensure_package, example_app, have_program, Env, Run};

/// The app's config with its notifications going to `sink` (ntfy and webhook).
fn notify_to(cfg: &Path, sink: &HttpSink) {
    edit_backup(cfg, |b| b["notify"] = json!({"ntfy": sink.url("/topic"), "webhook": sink.url("/hook")}));
}

/// (event, type, message) of the webhook requests `sink` received since the last call; the ntfy
/// requests must match them one for one.
fn events(sink: &HttpSink) -> Vec<(String, String, String)> {
    let (ntfy, hook) = split_events(&sink.take());
    assert_eq!(ntfy.len(), hook.len(), "ntfy {ntfy:?}\nwebhook {hook:#?}");
    let s = |v: &Value| v.as_str().unwrap().to_string();
    hook.iter().map(|h| (s(&h["event"]), s(&h["type"]), s(&h["message"]))).collect()
}

fn kinds(ev: &[(String, String, String)]) -> Vec<(&str, &str)> {
    ev.iter().map(|(e, t, _)| (e.as_str(), t.as_str())).collect()
}

/// The runs `history --json` lists for `key`, newest first, as (result, error).
fn rows(env: &Env, cfg: &Path, key: &str) -> Vec<(String, String)> {
    history(env, cfg, Some(key))
        .iter()
        .map(|r| (r["result"].as_str().unwrap().to_string(), r["error"].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// The default state directory of `cfg` for a process whose HOME is the Env's directory:
/// `~/.local/state/cairn/<first 16 hex digits of BLAKE3(canonical config path)>`.
fn default_state(env: &Env, cfg: &Path) -> PathBuf {
    let canon = std::fs::canonicalize(cfg).unwrap();
    let id = blake3::hash(canon.as_os_str().as_bytes()).to_hex();
    env.path().join(".local/state/cairn").join(&id[..16])
}

#[test]
fn cli_wrong_and_missing_password_are_recorded_and_notified() {
    let env = Env::new();
    let (app, cfg) = example_app(env.path());
    let sink = HttpSink::start();
    notify_to(&cfg, &sink);
    cairn_cfg(&env, &cfg, &["backup", "--now"]).ok();
    assert_eq!(events(&sink), []);
    let password = std::fs::read(app.join("cairn-password")).unwrap();

    std::fs::write(app.join("cairn-password"), "not the password\n").unwrap();
    let r = cairn_cfg(&env, &cfg, &["backup", "--now"]).code(4);
    assert!(r.stderr.contains("wrong password"), "{}", r.stderr);
    let ev = events(&sink);
    assert_eq!(kinds(&ev), [("failure", "repository:open")]);
    assert!(ev[0].2.contains("wrong password"), "{ev:?}");

    // No password anywhere (no file, no variable, no terminal).
    edit_backup(&cfg, |b| {
        b.as_object_mut().unwrap().remove("password_file");
    });
    let r = cairn_cfg(&env, &cfg, &["backup", "--now"]).code(4);
    assert!(r.stderr.contains("a password is needed"), "{}", r.stderr);
    // Still failing to open: told once, the next reminder is a day away.
    assert_eq!(events(&sink), []);

    // An escalation, when asked for, comes with the third in a row.
    edit_backup(&cfg, |b| b["notify"]["consecutive_failures"] = json!(3));
    cairn_cfg(&env, &cfg, &["backup", "--now"]).code(4);
    let ev = events(&sink);
    assert_eq!(kinds(&ev), [("consecutive_failures", "repository:open")]);
    assert!(ev[0].2.contains("a password is needed"), "{ev:?}");

    // Listed beside the repository's own runs.
    let h = rows(&env, &cfg, "repository:open");
    assert_eq!(h.len(), 3, "{h:?}");
    assert!(h.iter().all(|(res, _)| res == "failed"));
    assert!(h[0].1.contains("password is needed") && h[2].1.contains("wrong password"), "{h:?}");
    let all = history(&env, &cfg, None);
    assert_eq!(all.len(), 6, "3 types, then 3 failures to open: {all:#?}");
    assert_eq!(all[0]["backup_type"], "repository:open", "newest first: {all:#?}");

    // Fixed: told once that it works again.
    std::fs::write(app.join("cairn-password"), password).unwrap();
    edit_backup(&cfg, |b| b["password_file"] = json!("cairn-password"));
    cairn_cfg(&env, &cfg, &["backup", "--now"]).ok();
    let ev = events(&sink);
    assert_eq!(kinds(&ev), [("recovery", "repository:open")]);
    assert!(ev[0].2.contains("after 3 failed runs"), "{ev:?}");
    cairn_cfg(&env, &cfg, &["backup", "--now"]).ok();
    assert_eq!(events(&sink), []);
}

#[test]
fn cli_a_repository_that_has_gone_is_not_recreated() {
    let env = Env::new();
    let (app, cfg) = example_app(env.path());
    let sink = HttpSink::start();
    notify_to(&cfg, &sink);
    let repo = app.join("backups/repo");
    // A fresh configuration: created on first use, as the README's first command needs.
    let r = cairn_cfg(&env, &cfg, &["backup", "--now"]).ok();
    assert!(r.stdout.contains("created repository"), "{}", r.stdout);
    assert!(repo.join("config").is_file());
    assert!(default_state(&env, &cfg).join("state.sqlite").is_file(), "state under ~/.local/state/cairn/<id>/");
    assert_eq!(events(&sink), []);

    // The disk is unplugged: the repository's directory is not there.
    let away = env.path().join("unplugged");
    std::fs::rename(&repo, &away).unwrap();
    let r = cairn_cfg(&env, &cfg, &["backup", "--now"]).code(1);
    let gone = format!("repository {} is gone: is the disk mounted?", repo.display());
    assert!(r.stderr.contains(&gone), "{}", r.stderr);
    assert!(!r.stdout.contains("created repository"), "{}", r.stdout);
    assert!(!repo.exists(), "nothing created in its place");
    let ev = events(&sink);
    assert_eq!(kinds(&ev), [("failure", "repository:open")]);
    assert!(ev[0].2.contains(&gone), "{ev:?}");
    // `history` still answers, from the state outside the repository.
    let h = rows(&env, &cfg, "repository:open");
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h[0].0 == "failed" && h[0].1.contains(&gone), "{h:?}");

    // Unmounted, the mount point is an empty directory: still gone, and left empty.
    std::fs::create_dir(&repo).unwrap();
    let r = cairn_cfg(&env, &cfg, &["backup", "--now"]).code(1);
    assert!(r.stderr.contains(&gone), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(&repo).unwrap().count(), 0);
    assert_eq!(events(&sink), [], "told a moment ago; the reminder is a day away");

    // Plugged in again: backups go on, and the owner is told.
    std::fs::remove_dir(&repo).unwrap();
    std::fs::rename(&away, &repo).unwrap();
    cairn_cfg(&env, &cfg, &["backup", "--now"]).ok();
    assert_eq!(kinds(&events(&sink)), [("recovery", "repository:open")]);
    assert_eq!(rows(&env, &cfg, "repository:open").len(), 2);

    // A deliberate new start there takes `cairn init`.
    std::fs::rename(&repo, &away).unwrap();
    cairn_cfg(&env, &cfg, &["backup", "--now"]).code(1);
    cairn_cfg(&env, &cfg, &["init"]).ok();
    let r = cairn_cfg(&env, &cfg, &["backup", "--now"]).ok();
    assert!(r.stdout.contains("db: snapshot"), "{}", r.stdout);
    assert_eq!(kinds(&events(&sink)), [("failure", "repository:open"), ("recovery", "repository:open")]);
}

#[test]
fn cli_a_config_that_does_not_load_is_recorded_and_notified() {
    let env = Env::new();
    let (app, cfg) = example_app(env.path());
    let sink = HttpSink::start();
    notify_to(&cfg, &sink);
    edit_backup(&cfg, |b| b["state_dir"] = json!("state"));
    cairn_cfg(&env, &cfg, &["backup", "--now"]).ok();
    assert!(app.join("state/state.sqlite").is_file(), "state_dir is where the state goes");
    assert!(!default_state(&env, &cfg).exists());
    let good = std::fs::read(&cfg).unwrap();

    // A broken notify section: the channels that still parse are used.
    edit_backup(&cfg, |b| b["notify"]["ntfy"] = json!(5));
    let r = cairn_cfg(&env, &cfg, &["backup", "--now"]).code(1);
    assert!(r.stderr.contains("backup.notify.ntfy"), "{}", r.stderr);
    let (ntfy, hook) = split_events(&sink.take());
    assert!(ntfy.is_empty(), "{ntfy:?}");
    assert_eq!(hook.len(), 1, "{}\n{hook:#?}", r.stderr);
    assert_eq!((hook[0]["event"].as_str(), hook[0]["type"].as_str()), (Some("failure"), Some("config:load")));
    assert!(hook[0]["message"].as_str().unwrap().contains("backup.notify.ntfy"), "{hook:?}");

    // Another wrong value, the notify section whole again: recorded, and not told again (the
    // config has been failing to load for a moment; the reminder is a day away).
    notify_to(&cfg, &sink);
    edit_backup(&cfg, |b| b["types"]["db"]["rpo"] = json!("soon"));
    let r = cairn_cfg(&env, &cfg, &["backup", "--now"]).code(1);
    assert!(r.stderr.contains("backup.types.db.rpo"), "{}", r.stderr);
    assert_eq!(events(&sink), []);

    // Not JSON at all: nowhere known to send it, and its state_dir unknown too: recorded in
    // the default state directory.
    std::fs::write(&cfg, &good[..good.len() / 2]).unwrap();
    let r = cairn_cfg(&env, &cfg, &["backup", "--now"]).code(1);
    assert!(r.stderr.contains("not valid JSON"), "{}", r.stderr);
    assert_eq!(events(&sink), []);
    assert!(default_state(&env, &cfg).join("state.sqlite").is_file());

    // Repaired: told once, and the two failures state_dir holds (read from the broken files as
    // well) are in the history.
    std::fs::write(&cfg, &good).unwrap();
    cairn_cfg(&env, &cfg, &["backup", "--now"]).ok();
    let ev = events(&sink);
    assert_eq!(kinds(&ev), [("recovery", "config:load")]);
    assert!(ev[0].2.contains("after 2 failed runs"), "{ev:?}");
    let h = rows(&env, &cfg, "config:load");
    assert_eq!(h.len(), 2, "{h:?}");
    assert!(h.iter().all(|(res, _)| res == "failed"), "{h:?}");
    assert!(h[0].1.contains("backup.types.db.rpo") && h[1].1.contains("backup.notify.ntfy"), "{h:?}");

    // CAIRN_STATE_DIR wins over state_dir.
    let elsewhere = env.path().join("elsewhere");
    edit_backup(&cfg, |b| b["types"]["db"]["rpo"] = json!("soon"));
    let mut c = env.cfg_cmd(&cfg, &["backup", "--now"]);
    c.env("CAIRN_STATE_DIR", &elsewhere);
    env.run_cmd(c).code(1);
    assert!(elsewhere.join("state.sqlite").is_file());
    assert_eq!(kinds(&events(&sink)), [("failure", "config:load")]);
    std::fs::write(&cfg, &good).unwrap();
    assert_eq!(rows(&env, &cfg, "config:load").len(), 2, "not in state_dir");
}

/// `cairn --config CFG ARGS` under faketime, the clock moved by `offset` ("+3d").
fn cairn_cfg_at(env: &Env, cfg: &Path, offset: &str, args: &[&str]) -> Run {
    let inner = env.cfg_cmd(cfg, args);
    let mut c = Command::new("faketime");
    c.arg("-f").arg(offset).arg(inner.get_program()).args(inner.get_args());
    c.env_clear().stdin(std::process::Stdio::null());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    // Time jumps, intervals do not: timeouts and retries pace as they would.
    c.env("DONT_FAKE_MONOTONIC", "1");
    c.current_dir(inner.get_current_dir().unwrap());
    env.run_cmd(c)
}

#[test]
fn cli_dead_man_fires_from_the_outside_state() {
    ensure_package("faketime", || have_program("faketime"));
    let env = Env::new();
    let (app, cfg) = example_app(env.path());
    let sink = HttpSink::start();
    notify_to(&cfg, &sink);
    cairn_cfg(&env, &cfg, &["backup", "--now"]).ok();
    // The disk goes away and stays away.
    std::fs::rename(app.join("backups/repo"), env.path().join("unplugged")).unwrap();
    cairn_cfg(&env, &cfg, &["backup"]).code(1);
    assert_eq!(kinds(&events(&sink)), [("failure", "repository:open")], "nothing overdue yet");
    // Three days later db (daily, catch_up_after 2d) is overdue; logs (weekly) is not.
    // (config, on-change, has a daily RPO as well.)
    cairn_cfg_at(&env, &cfg, "+3d", &["backup"]).code(1);
    let ev = events(&sink);
    // The failure to open was told 3 days ago: its reminder comes with them.
    let overdue = [("reminder", "repository:open"), ("dead_man", "db"), ("dead_man", "config")];
    assert_eq!(kinds(&ev), overdue);
    assert!(ev[1].2.contains("no successful db backup in 3d"), "{ev:?}");
    // Once a day, not on every run.
    cairn_cfg_at(&env, &cfg, "+3d", &["backup"]).code(1);
    assert_eq!(events(&sink), []);
    cairn_cfg_at(&env, &cfg, "+97h", &["backup"]).code(1);
    assert_eq!(kinds(&events(&sink)), overdue);
    // The disk comes back: the recovery, and no second dead-man alert from the repository's own
    // check (one record of what was told). Only logs runs, so db and config stay overdue.
    std::fs::rename(env.path().join("unplugged"), app.join("backups/repo")).unwrap();
    cairn_cfg_at(&env, &cfg, "+5830m", &["backup", "--now", "--type", "logs"]).ok();
    assert_eq!(kinds(&events(&sink)), [("recovery", "repository:open")]);
    // A day later the repository's own check reminds.
    cairn_cfg_at(&env, &cfg, "+122h", &["backup", "--now", "--type", "logs"]).ok();
    assert_eq!(kinds(&events(&sink)), [("dead_man", "db"), ("dead_man", "config")]);
}

/// A wrong password under a cron line every 10 minutes: told once, reminded once a day, the
/// recovery once; never on every run (issue 11 item 5 for the failures of item 1).
#[test]
fn cli_wrong_password_every_10_minutes_for_a_day_is_told_once() {
    ensure_package("faketime", || have_program("faketime"));
    let env = Env::new();
    let (app, cfg) = example_app(env.path());
    let sink = HttpSink::start();
    notify_to(&cfg, &sink);
    cairn_cfg(&env, &cfg, &["backup", "--now"]).ok();
    assert_eq!(events(&sink), []);
    let password = std::fs::read(app.join("cairn-password")).unwrap();
    std::fs::write(app.join("cairn-password"), "not the password\n").unwrap();
    // One day of a cron line every 10 minutes: 144 runs, each refused.
    for m in (0..24 * 60).step_by(10) {
        cairn_cfg_at(&env, &cfg, &format!("+{m}m"), &["backup"]).code(4);
    }
    let ev = events(&sink);
    assert_eq!(kinds(&ev), [("failure", "repository:open")], "1 notification for 144 failed runs: {ev:#?}");
    let h = cairn_cfg(&env, &cfg, &["--json", "history", "--type", "repository:open", "--limit", "1000"]).ok().json();
    assert_eq!(h.as_array().unwrap().len(), 144, "every run is recorded");
    // The day is up: one reminder.
    cairn_cfg_at(&env, &cfg, "+1440m", &["backup"]).code(4);
    let ev = events(&sink);
    assert_eq!(kinds(&ev), [("reminder", "repository:open")]);
    assert!(ev[0].2.contains("145 failed runs") && ev[0].2.contains("wrong password"), "{ev:?}");
    // Fixed: told once that it works again, then silence.
    std::fs::write(app.join("cairn-password"), password).unwrap();
    cairn_cfg_at(&env, &cfg, "+1450m", &["backup"]).ok();
    let ev = events(&sink);
    assert_eq!(kinds(&ev), [("recovery", "repository:open")]);
    assert!(ev[0].2.contains("after 145 failed runs"), "{ev:?}");
    cairn_cfg_at(&env, &cfg, "+1460m", &["backup"]).ok();
    assert_eq!(events(&sink), []);
    // One record of what was told, beside the outside state; none in the repository.
    assert!(default_state(&env, &cfg).join("notify.json").is_file());
    assert!(!app.join("backups/repo/state/notify.json").exists());
}

/// A `state/notify.json` an earlier build kept in the repository is taken over once: a failure
/// already told there is not told again.
#[test]
fn cli_notify_state_in_the_repository_is_taken_over() {
    let env = Env::new();
    let (app, cfg) = example_app(env.path());
    let sink = HttpSink::start();
    notify_to(&cfg, &sink);
    cairn_cfg(&env, &cfg, &["backup", "--now"]).ok();
    let outside = default_state(&env, &cfg).join("notify.json");
    let legacy = app.join("backups/repo/state/notify.json");
    let now = chrono::Utc::now().to_rfc3339();
    let told = json!({"version": 1, "failing": {"db": {"since": now, "failures": 1, "error": "x", "told": now}}});
    std::fs::remove_file(&outside).ok();
    std::fs::write(&legacy, told.to_string()).unwrap();
    std::fs::remove_file(app.join("data/app.db")).unwrap();
    cairn_cfg(&env, &cfg, &["backup", "--now", "--type", "db"]).code(1);
    assert_eq!(events(&sink), [], "told before, per the repository's file");
    assert!(outside.is_file() && !legacy.exists());
}
