//! `cairn status` tells a monitor the truth (issue 11, items 9 and 10): its exit code in each
//! state (ok, overdue, failing, damage, clock anomaly, remote failing), the same verdicts in
//! `--json`, the restore-time inputs, and the Prometheus metrics file parsed line by line.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::util::{faked, flip_byte, write_config, write_src, Env};

/// A config with one `paths` type "c" over `src/` (daily RPO) and the remotes `remotes` gives
/// for the scratch directory.
fn setup(remotes: impl FnOnce(&Path) -> Value) -> Env {
    let env = Env::new();
    let remotes = remotes(env.path());
    write_config(
        env.path(),
        json!({"name": "st", "repository": "repo", "types": {"c": {"paths": ["src"], "rpo": "1d"}}, "remotes": remotes}),
    );
    env.init();
    write_src(&env, "first");
    env
}

/// `status --json` with its exit code asserted; returns the JSON.
fn status_json(env: &Env, code: i32) -> Value {
    let st = env.run(&["--json", "status"]).code(code).json();
    assert_eq!(st["exit_code"], code, "{st:#}");
    assert_eq!(st["ok"], code == 0, "{st:#}");
    st
}

/// The (kind, subject, severity) of each problem.
fn verdicts(st: &Value) -> Vec<(String, String, String)> {
    st["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()), "{p}");
            let s = |k: &str| p[k].as_str().unwrap().to_string();
            (s("kind"), s("subject"), s("severity"))
        })
        .collect()
}

fn v(kind: &str, subject: &str, severity: &str) -> (String, String, String) {
    (kind.into(), subject.into(), severity.into())
}

/// The text output with its exit code asserted: problems first, never "all ... within their
/// RPO" while one exists.
fn status_text(env: &Env, code: i32) -> String {
    let out = env.run(&["status"]).code(code).stdout;
    if code == 0 {
        assert!(out.contains("all types are within their RPO"), "{out}");
        assert!(!out.contains("needs attention ("), "{out}");
    } else {
        assert!(out.starts_with(&format!("needs attention (exit {code}):\n")), "{out}");
        assert!(!out.contains("within their RPO"), "{out}");
    }
    out
}

#[test]
fn status_exit_code_and_verdicts_in_each_state() {
    let env = setup(|_| json!([]));
    // Never backed up: overdue from the start.
    let st = status_json(&env, 6);
    assert_eq!(verdicts(&st), [v("never_backed_up", "c", "critical")]);
    assert!(status_text(&env, 6).contains("NEVER BACKED UP: c has never been backed up"));

    // All OK.
    env.run(&["backup", "--now"]).ok();
    let st = status_json(&env, 0);
    assert_eq!(verdicts(&st), []);
    status_text(&env, 0);

    // Two days later, past the 1 d RPO.
    let r = faked(&env, "+2 days", &["--json", "status"]).code(6);
    assert_eq!(verdicts(&r.json()), [v("overdue", "c", "critical")]);
    let r = faked(&env, "+2 days", &["status"]).code(6);
    assert!(r.stdout.starts_with("needs attention (exit 6):\n  OVERDUE: c: last success 2d"), "{}", r.stdout);

    // The source is gone: the run fails, the RPO still holds.
    std::fs::rename(env.path().join("src"), env.path().join("src.away")).unwrap();
    env.run(&["backup", "--now"]).code(1);
    let st = status_json(&env, 7);
    assert_eq!(verdicts(&st), [v("failing", "c", "warning")]);
    let text = status_text(&env, 7);
    assert!(text.contains("FAILING: c: 1 failed run since the last success, last: "), "{text}");
    // Failing and overdue: the missed RPO is the more serious.
    let r = faked(&env, "+2 days", &["--json", "status"]).code(6);
    assert_eq!(verdicts(&r.json()), [v("overdue", "c", "critical"), v("failing", "c", "warning")]);
    std::fs::rename(env.path().join("src.away"), env.path().join("src")).unwrap();
    write_src(&env, "second");
    env.run(&["backup", "--now"]).ok();
    status_json(&env, 0);

    // A snapshot dated five years ahead (a clock that jumped): a warning only.
    write_src(&env, "from the future");
    faked(&env, "2031-06-01 12:00:00", &["backup", "--now"]).ok();
    let st = status_json(&env, 8);
    let future = st["clock_anomalies"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(verdicts(&st), [v("clock_anomaly", &format!("snapshots/{future}"), "warning")]);
    assert!(status_text(&env, 8).contains("\n  CLOCK: snapshot "));
    // Gone (as `repair` or an operator would remove it): OK again.
    std::fs::remove_file(env.repo().join("snapshots").join(&future)).unwrap();
    status_json(&env, 0);

    // An unreadable snapshot file: damage, more serious than anything else (here: overdue too).
    let snap = std::fs::read_dir(env.repo().join("snapshots")).unwrap().next().unwrap().unwrap().path();
    let id = snap.file_name().unwrap().to_string_lossy().into_owned();
    flip_byte(&snap, std::fs::metadata(&snap).unwrap().len() / 2);
    let st = status_json(&env, 3);
    let got = verdicts(&st);
    assert_eq!((got[0].0.as_str(), got[0].2.as_str()), ("unreadable_snapshot", "critical"), "{st:#}");
    assert!(got[0].1.ends_with(&format!("snapshots/{id}")), "the file is the subject: {st:#}");
    let text = status_text(&env, 3);
    assert!(text.contains("\n  DAMAGED: unreadable snapshot file ") && text.contains(&id), "{text}");
    let r = faked(&env, "+2 days", &["--json", "status"]).code(3);
    assert!(verdicts(&r.json()).iter().any(|p| p.0 == "overdue"), "{}", r.stdout);
}

#[test]
fn a_remote_whose_last_sync_failed_makes_status_fail() {
    // A file where the remote's directory should be: rclone cannot create it, even as root.
    let env = setup(|d| json!([{"name": "usb", "rclone": format!(":local:{}/sub", d.join("blocked").display())}]));
    std::fs::write(env.path().join("blocked"), b"not a directory").unwrap();
    env.run(&["backup", "--now"]).ok();
    let st = status_json(&env, 7);
    assert_eq!(verdicts(&st), [v("remote_failing", "sync:usb", "warning")]);
    assert!(status_text(&env, 7).contains("REMOTE FAILING: remote usb: the last sync failed"));
}

#[test]
fn status_help_documents_the_exit_codes() {
    let out = Env::new().run(&["status", "--help"]).ok().stdout;
    for line in ["0  all OK", "3  damage", "6  overdue", "7  failing", "8  warning"] {
        assert!(out.contains(line), "{line:?} missing from\n{out}");
    }
}

/// Records a run in the repository's history as another command would (verify and the restore
/// test record theirs with these type names).
fn record(repo: &Path, ty: &str, start: &str, end: &str, result: &str, bytes_read: u64) {
    let c = rusqlite::Connection::open(repo.join("state/history.sqlite")).unwrap();
    c.execute(
        "INSERT INTO runs(type, start, end, result, bytes_read) VALUES(?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![ty, start, end, result, bytes_read as i64],
    )
    .unwrap();
}

#[test]
fn status_shows_the_restore_time_inputs() {
    let env = setup(|_| json!([]));
    env.run(&["backup", "--now"]).ok();
    let st = status_json(&env, 0);
    let c = &st["types"][0];
    let logical = c["latest_logical_bytes"].as_u64().unwrap();
    assert_eq!(logical, "first".len() as u64, "{c:#}");
    assert!(c["restore_test"].is_null());
    assert!(status_text(&env, 0).contains("\n  c: latest snapshot 5 B; no restore test yet\n"));
    // 50 bytes in 2 s (25 B/s), then a failed test that proves nothing.
    record(&env.repo(), "restore-test:c", "2026-03-01T04:00:00+00:00", "2026-03-01T04:00:02+00:00", "success", 50);
    record(&env.repo(), "restore-test:c", "2026-03-02T04:00:00+00:00", "2026-03-02T04:00:09+00:00", "failed", 1);
    let st = status_json(&env, 0);
    let t = &st["types"][0]["restore_test"];
    assert_eq!(t["bytes"], 50, "{t:#}");
    assert_eq!(t["seconds"], 2.0);
    assert_eq!(t["bytes_per_s"], 25.0);
    assert_eq!(t["estimated_restore_s"], logical as f64 / 25.0);
    let text = status_text(&env, 0);
    // The test's end in local time with its offset, as every human line shows a time.
    let when = chrono::DateTime::parse_from_rfc3339("2026-03-01T04:00:02+00:00")
        .unwrap()
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S%:z");
    let want = format!("\n  c: latest snapshot 5 B; last restore test {when} restored 50 B at 25 B/s: restoring the latest takes about 0.2 s\n");
    assert!(text.contains(&want), "{text}");
}

/// A parsed metrics file: `name{labels}` -> value, with each family's HELP and TYPE checked.
fn parse_metrics(path: &Path) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut samples = BTreeMap::new();
    let (mut help, mut typed) = (None::<String>, None::<String>);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split(' ').next().unwrap().to_string());
            typed = None;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(help.as_deref(), Some(name), "TYPE without its HELP: {line}");
            assert!(["gauge", "counter"].contains(&kind), "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            typed = Some(name.to_string());
        } else {
            let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
            let name = key.split('{').next().unwrap();
            assert_eq!(typed.as_deref(), Some(name), "sample outside its family: {line}");
            assert!(name.starts_with("cairn_"), "{line}");
            if let Some(labels) = key.strip_prefix(name) {
                assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with("\"}")), "{line}");
            }
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(samples.insert(key.to_string(), value).is_none(), "duplicate sample {key}");
        }
    }
    samples
}

fn unix(t: &Value) -> f64 {
    chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap().timestamp() as f64
}

#[test]
fn metrics_file_holds_every_metric_with_the_values_of_the_run() {
    let env = setup(|d| json!([{"name": "usb", "rclone": format!(":local:{}", d.join("usb").display())}]));
    let usb = env.path().join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    // One failed run, then a good one with its sync.
    std::fs::rename(env.path().join("src"), env.path().join("src.away")).unwrap();
    env.run(&["backup", "--now"]).code(1);
    std::fs::rename(env.path().join("src.away"), env.path().join("src")).unwrap();
    let prom = env.path().join("cairn.prom");
    let p = prom.to_str().unwrap();
    env.run(&["backup", "--now", "--metrics-file", p]).ok();
    let m = parse_metrics(&prom);
    assert_eq!(m["cairn_status_ok"], 1.0, "{m:#?}");
    record(&env.repo(), "verify", "2026-03-01T04:00:00+00:00", "2026-03-01T04:00:30+00:00", "success", 0);
    record(&env.repo(), "restore-test:c", "2026-03-01T05:00:00+00:00", "2026-03-01T05:00:01+00:00", "success", 10);
    // A written file is replaced whole, never left beside a temporary one.
    let st = env.run(&["--json", "status", "--metrics-file", p]).code(0).json();
    let m = parse_metrics(&prom);
    let left: Vec<_> = std::fs::read_dir(env.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "cairn.prom")
        .collect();
    assert!(left.iter().all(|e| !e.file_name().to_string_lossy().contains("tmp")), "{left:?}");

    let h = env.run(&["--json", "history", "--type", "c"]).ok().json();
    let last = &h[0];
    let c = &st["types"][0];
    let r = &st["remotes"][0];
    let ty = |name: &str| format!("{name}{{type=\"c\"}}");
    let rm = |name: &str| format!("{name}{{remote=\"usb\"}}");
    let duration = unix(&last["end"]) - unix(&last["start"]);
    let expected: Vec<(String, f64)> = vec![
        (ty("cairn_last_success_timestamp_seconds"), unix(&c["last_success"])),
        (ty("cairn_overdue"), 0.0),
        (ty("cairn_consecutive_failures"), 0.0),
        (ty("cairn_snapshots"), 1.0),
        (ty("cairn_failures_total"), 1.0),
        (ty("cairn_last_run_timestamp_seconds"), unix(&last["end"])),
        (ty("cairn_last_run_success"), 1.0),
        (ty("cairn_last_run_read_bytes"), last["bytes_read"].as_f64().unwrap()),
        (ty("cairn_last_run_added_bytes"), last["bytes_added"].as_f64().unwrap()),
        (ty("cairn_latest_snapshot_logical_bytes"), 5.0),
        (ty("cairn_restore_test_timestamp_seconds"), unix(&json!("2026-03-01T05:00:01+00:00"))),
        (ty("cairn_restore_test_bytes_per_second"), 10.0),
        (ty("cairn_estimated_restore_seconds"), 0.5),
        (rm("cairn_remote_last_sync_timestamp_seconds"), unix(&r["last_sync"])),
        (rm("cairn_remote_last_sync_success"), 1.0),
        (rm("cairn_remote_pending_files"), 0.0),
        (rm("cairn_remote_pending_bytes"), 0.0),
        ("cairn_last_verify_success".into(), 1.0),
        ("cairn_last_verify_timestamp_seconds".into(), unix(&json!("2026-03-01T04:00:30+00:00"))),
        ("cairn_repository_stored_bytes".into(), st["stored_bytes"].as_f64().unwrap()),
        ("cairn_repository_logical_bytes".into(), 5.0),
        ("cairn_status_ok".into(), 1.0),
        ("cairn_status_problems".into(), 0.0),
        ("cairn_status_exit_code".into(), 0.0),
    ];
    for (k, want) in &expected {
        let got = m.get(k).unwrap_or_else(|| panic!("{k} missing from {m:#?}"));
        assert_eq!(got, want, "{k}");
    }
    assert!(last["bytes_read"].as_u64().unwrap() >= 5 && last["bytes_added"].as_u64().unwrap() > 0, "{last}");
    let run_s = m[&ty("cairn_last_run_duration_seconds")];
    assert!(run_s >= 0.0 && (run_s - duration).abs() <= 1.0, "{run_s} vs {duration}");
    let (free, size) = (m["cairn_repository_free_bytes"], m["cairn_repository_filesystem_size_bytes"]);
    assert!(free > 0.0 && free <= size, "{free} {size}");
    assert_eq!(m.len(), expected.len() + 3, "unexpected samples: {m:#?}");

    // Something pending and a problem: the remote and the verdict gauges follow.
    std::fs::remove_dir_all(&usb).unwrap();
    std::fs::write(&usb, b"now a file").unwrap();
    write_src(&env, "second");
    env.run(&["backup", "--now"]).ok();
    env.run(&["status", "--metrics-file", p]).code(7);
    let m = parse_metrics(&prom);
    assert_eq!(m[&rm("cairn_remote_last_sync_success")], 0.0);
    assert!(m[&rm("cairn_remote_pending_files")] >= 2.0, "{m:#?}");
    assert!(m[&rm("cairn_remote_pending_bytes")] > 0.0);
    assert_eq!(m[&ty("cairn_snapshots")], 2.0);
    assert_eq!((m["cairn_status_ok"], m["cairn_status_problems"], m["cairn_status_exit_code"]), (0.0, 1.0, 7.0));
}

#[test]
fn a_pack_verify_found_damaged_is_damage_in_status() {
    let env = setup(|_| json!([]));
    env.run(&["backup", "--now"]).ok();
    let pack = crate::util::walk(&env.repo().join("packs")).into_iter().find(|p| p.is_file()).unwrap();
    flip_byte(&pack, std::fs::metadata(&pack).unwrap().len() / 2);
    env.run(&["verify", "--read-data"]).code(3);
    let st = status_json(&env, 3);
    let got = verdicts(&st);
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    // The verify that found it is recorded as failed: a problem of its own.
    assert_eq!(
        got,
        [v("damaged_pack", &format!("packs/{name}"), "critical"), v("verify_failed", "verify", "critical")],
        "{st:#}"
    );
    assert!(status_text(&env, 3).contains(&format!("DAMAGED: pack {name} is damaged: ")));
}

#[test]
fn a_type_without_schedule_or_rpo_is_never_overdue() {
    // Run by hand only (`backup --now`), and a type only the repository knows: nothing
    // promises a next backup of either, so neither makes status fail.
    let env = Env::new();
    write_config(env.path(), json!({"name": "st", "repository": "repo", "types": {"c": {"paths": ["src"]}}}));
    env.init();
    write_src(&env, "first");
    let st = status_json(&env, 0);
    assert_eq!(verdicts(&st), []);
    assert_eq!(st["types"][0]["overdue"], false, "{st:#}");
    env.run(&["snapshot", "--type", "oneoff", "--kind", "manual", env.path().join("src").to_str().unwrap()]).ok();
    let r = faked(&env, "+30 days", &["--json", "status"]).code(0);
    assert_eq!(verdicts(&r.json()), [], "{:#}", r.json());
}
