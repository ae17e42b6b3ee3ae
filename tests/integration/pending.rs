//! Pending uploads go up on every run, through the binary with the real rclone: a run where
//! nothing is due still syncs what a remote lacks (and a run with nothing pending does not call
//! rclone at all), the daemon does the same, a failing remote (a `:local:` target below a regular
//! file) is retried, told once and its recovery once over cron-style runs under `faketime`, a
//! remote whose oldest pending file is older than the RPO is told (`remote_behind`), and
//! `status --json` carries each remote's state.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::lifecycle::{split_events, HttpSink};
use crate::util::{ensure_package, have_program, under_faketime, write_config, ChildGuard, Env, Run};

fn need_tools() {
    ensure_package("rclone", || have_program("rclone"));
    ensure_package("faketime", || have_program("faketime"));
}

/// A config with one daily type over a small directory and the remote `usb` at `target`.
fn config(env: &Env, target: &Path, schedule: &str, notify: Value) -> PathBuf {
    let dir = env.path().join("app");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/a.txt"), b"hello pending").unwrap();
    write_config(
        &dir,
        json!({"name": "t", "repository": "repo", "encryption": "none",
               "types": {"files": {"paths": ["data"], "schedule": schedule}},
               "remotes": [{"name": "usb", "rclone": format!(":local:{}", target.display())}],
               "notify": notify}),
    )
}

/// `cairn --config CFG ARGS` with the wall clock at `at` (UTC) through faketime; `rclone` may
/// name a wrapper to run instead of the real one.
fn cairn_at(env: &Env, cfg: &Path, at: &chrono::NaiveDateTime, args: &[&str], rclone: Option<&Path>) -> Run {
    let mut base = Command::new(env!("CARGO_BIN_EXE_cairn"));
    base.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", env.path())
        .env("TZ", "UTC")
        .env("CAIRN_RETRY_BASE_MS", "10")
        .arg("--config")
        .arg(cfg)
        .args(args);
    if let Some(w) = rclone {
        base.env("CAIRN_RCLONE", w);
    }
    env.run_cmd(under_faketime(&base, &at.format("%Y-%m-%d %H:%M:%S").to_string(), env.path()))
}

/// A wrapper that appends one line per rclone call to `log` and runs the real rclone.
fn counting_rclone(dir: &Path, log: &Path) -> PathBuf {
    let w = dir.join("rclone-counting");
    std::fs::write(&w, format!("#!/bin/sh\necho \"$1\" >> '{}'\nexec rclone \"$@\"\n", log.display())).unwrap();
    std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    w
}

fn calls(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |s| s.lines().count())
}

/// Snapshot files on the `:local:` remote at `target`.
fn remote_snapshots(target: &Path) -> usize {
    std::fs::read_dir(target.join("snapshots")).map_or(0, |d| d.count())
}

fn t0() -> chrono::NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap().and_hms_opt(0, 5, 0).unwrap()
}

/// (event, subject) of each webhook call received.
fn events(sink: &HttpSink) -> Vec<(String, String)> {
    let (_, hook) = split_events(&sink.take());
    hook.iter().map(|h| (h["event"].as_str().unwrap().to_string(), h["type"].as_str().unwrap().to_string())).collect()
}

fn remote_status(env: &Env, cfg: &Path, at: &chrono::NaiveDateTime) -> Value {
    let st = cairn_at(env, cfg, at, &["--json", "status"], None);
    assert!(!st.stdout.is_empty(), "{}", st.stderr);
    st.json()["remotes"][0].clone()
}

#[test]
fn cli_pending_files_go_up_on_a_run_where_nothing_is_due_and_nothing_pending_calls_no_rclone() {
    need_tools();
    let env = Env::new();
    let target = env.path().join("usb");
    let cfg = config(&env, &target, "daily 00:00", json!({}));
    let log = env.path().join("rclone-calls");
    let rclone = counting_rclone(env.path(), &log);
    let at = t0();
    // Offline: stored, not uploaded.
    cairn_at(&env, &cfg, &at, &["backup", "--no-sync"], Some(&rclone)).ok();
    assert_eq!((remote_snapshots(&target), calls(&log)), (0, 0));
    let st = remote_status(&env, &cfg, &at);
    assert!(st["pending_files"].as_u64().unwrap() >= 3, "{st}");
    // Back online an hour later with nothing due: what is pending goes up.
    let later = at + chrono::Duration::hours(1);
    let r = cairn_at(&env, &cfg, &later, &["backup"], Some(&rclone)).ok();
    assert!(r.stdout.contains("files: not due"), "{}", r.stdout);
    assert!(r.stdout.contains("sync usb: "), "{}", r.stdout);
    assert_eq!(remote_snapshots(&target), 1, "{}\n{}", r.stdout, r.stderr);
    let st = remote_status(&env, &cfg, &later);
    assert_eq!((st["pending_files"].as_u64(), st["failing"].as_bool()), (Some(0), Some(false)), "{st}");
    // Nothing pending, nothing due: the bookkeeping answers, rclone is not called.
    let n = calls(&log);
    let r = cairn_at(&env, &cfg, &(later + chrono::Duration::minutes(10)), &["backup"], Some(&rclone)).ok();
    assert!(!r.stdout.contains("sync usb"), "{}", r.stdout);
    assert_eq!(calls(&log), n, "rclone called with nothing pending");
}

#[test]
fn cli_a_failing_remote_is_retried_told_once_over_cron_runs_and_its_recovery_once() {
    need_tools();
    let env = Env::new();
    let sink = HttpSink::start();
    // Root writes anywhere, so the remote fails by its parent being a regular file.
    let blocker = env.path().join("blocker");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let target = blocker.join("usb");
    let cfg = config(&env, &target, "daily 00:00", json!({"webhook": sink.url("/hook")}));
    let log = env.path().join("rclone-calls");
    let rclone = counting_rclone(env.path(), &log);
    // A 10-minute cron: the first run stores a snapshot, the next three have nothing due; each
    // retries the sync (3 attempts) and fails.
    let mut at = t0();
    for i in 0..4 {
        let r = cairn_at(&env, &cfg, &at, &["backup"], Some(&rclone)).ok();
        assert!(r.stdout.contains("sync usb: FAILED"), "run {i}: {}\n{}", r.stdout, r.stderr);
        at += chrono::Duration::minutes(10);
    }
    assert_eq!(events(&sink), [("failure".to_string(), "sync:usb".to_string())]);
    let h = cairn_at(&env, &cfg, &at, &["--json", "history", "--type", "sync:usb"], None).ok().json();
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 4, "{h:#?}");
    assert!(h.iter().all(|r| r["result"] == "failed" && r["retries"] == 2), "{h:#?}");
    assert!(calls(&log) >= 4 * 3, "3 attempts a run: {}", calls(&log));
    let st = remote_status(&env, &cfg, &at);
    assert_eq!(st["failing"], true, "{st}");
    assert!(st["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{st}");
    assert!(st["failing_since"].as_str().unwrap().starts_with("2030-01-01T00:05"), "{st}");
    assert_eq!(st["behind"], false, "{st}");
    assert!(st["oldest_pending_age_s"].as_i64().unwrap() >= 30 * 60, "{st}");
    let text = cairn_at(&env, &cfg, &at, &["status"], None).stdout;
    assert!(text.contains("FAILING since 2030-01-01 00:05"), "{text}");
    assert!(!text.contains("all types are within their RPO"), "{text}");
    // The remote comes back: the next run (nothing due) uploads, and one recovery is told.
    std::fs::remove_file(&blocker).unwrap();
    let r = cairn_at(&env, &cfg, &at, &["backup"], Some(&rclone)).ok();
    assert!(r.stdout.contains("sync usb: ") && !r.stdout.contains("FAILED"), "{}", r.stdout);
    assert_eq!(remote_snapshots(&target), 1);
    cairn_at(&env, &cfg, &(at + chrono::Duration::minutes(10)), &["backup"], None).ok();
    assert_eq!(events(&sink), [("recovery".to_string(), "sync:usb".to_string())]);
    let st = remote_status(&env, &cfg, &at);
    assert_eq!((st["failing"].as_bool(), st["pending_files"].as_u64()), (Some(false), Some(0)), "{st}");
    assert!(cairn_at(&env, &cfg, &at, &["status"], None).stdout.contains("all types are within their RPO"));
}

#[test]
fn cli_a_remote_behind_its_rpo_is_told_once_a_day_and_its_catching_up_once() {
    need_tools();
    let env = Env::new();
    let sink = HttpSink::start();
    let target = env.path().join("usb");
    // Hourly: an RPO of one hour; runs without sync leave the remote behind.
    let cfg = config(&env, &target, "hourly", json!({"webhook": sink.url("/hook")}));
    let start = t0();
    let mut behind_status = None;
    for mins in [0, 30, 50, 70, 130, 190, 24 * 60 + 10, 24 * 60 + 70] {
        let at = start + chrono::Duration::minutes(mins);
        cairn_at(&env, &cfg, &at, &["backup", "--no-sync"], None).ok();
        if mins == 70 {
            behind_status = Some((remote_status(&env, &cfg, &at), cairn_at(&env, &cfg, &at, &["status"], None).stdout));
        }
        if mins == 50 {
            assert_eq!(remote_status(&env, &cfg, &at)["behind"], false);
            assert!(events(&sink).is_empty());
        }
    }
    let (st, text) = behind_status.unwrap();
    assert_eq!(st["behind"], true, "{st}");
    let age = st["oldest_pending_age_s"].as_i64().unwrap();
    assert!((69 * 60..=71 * 60).contains(&age), "{st}");
    assert!(text.contains("BEHIND") && !text.contains("all types are within their RPO"), "{text}");
    // Told when it fell behind and a day later, not on each run.
    let behind = ("remote_behind".to_string(), "remote_behind:usb".to_string());
    assert_eq!(events(&sink), [behind.clone(), behind]);
    // Synced: caught up, told once.
    let at = start + chrono::Duration::minutes(24 * 60 + 80);
    cairn_at(&env, &cfg, &at, &["backup"], None).ok();
    cairn_at(&env, &cfg, &(at + chrono::Duration::minutes(10)), &["backup"], None).ok();
    assert_eq!(events(&sink), [("recovery".to_string(), "remote_behind:usb".to_string())]);
    assert_eq!(remote_status(&env, &cfg, &at)["behind"], false);
}

#[test]
fn cli_the_daemon_uploads_what_is_pending_with_nothing_due() {
    need_tools();
    let env = Env::new();
    let target = env.path().join("usb");
    let cfg = config(&env, &target, "weekly sun 03:00", json!({}));
    env.run_cfg(&cfg, &["backup", "--now", "--no-sync"]).ok();
    assert_eq!(remote_snapshots(&target), 0);
    let err = env.path().join("daemon.err");
    let mut c = env.cfg_cmd(&cfg, &["daemon"]);
    c.stdout(Stdio::null()).stderr(std::fs::File::create(&err).unwrap());
    let mut child = ChildGuard(c.spawn().unwrap());
    let t = Instant::now();
    while remote_snapshots(&target) == 0 {
        assert!(child.0.try_wait().unwrap().is_none(), "daemon exited: {}", std::fs::read_to_string(&err).unwrap());
        assert!(t.elapsed() < Duration::from_secs(60), "nothing uploaded in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling our own child by its id.
    assert_eq!(unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let h = env.run_cfg(&cfg, &["--json", "history", "--type", "sync:usb"]).ok().json();
    assert_eq!(h[0]["result"], "success", "{h}");
}
