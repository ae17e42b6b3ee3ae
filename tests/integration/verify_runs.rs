//! Verification results count (issue 11, item 6), through the binary: every `verify` is a
//! history row (`verify`, and `restore-test:TYPE` per database restore-tested), a verify that
//! finds damage notifies once through a real HTTP receiver and recovers once after `repair`, and
//! a weekly `verify` schedule runs from `backup` once a week over days simulated with `faketime`.

use std::path::Path;

use serde_json::{json, Value};

use crate::lifecycle::{split_events, HttpSink};
use crate::util::{flip_byte, layout, pack_path, prng_bytes, under_faketime, write_config, Env, Run};

/// A SQLite database at `p` with `rows` rows of 1 KiB each.
fn make_db(p: &Path, rows: u32) {
    let conn = rusqlite::Connection::open(p).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(x BLOB);").unwrap();
    for i in 0..rows {
        conn.execute("INSERT INTO t VALUES (?1)", [prng_bytes(u64::from(i), 1024)]).unwrap();
    }
}

/// `cairn ARGS` (the Env's repository and password, `./cairn.json`) with the clock at `at` (UTC).
fn at(env: &Env, at: &chrono::NaiveDateTime, args: &[&str]) -> Run {
    let mut base = env.cmd();
    base.env("TZ", "UTC").args(args);
    env.run_cmd(under_faketime(&base, &at.format("%Y-%m-%d %H:%M:%S").to_string(), env.path()))
}

/// The history rows of `ty`, oldest first.
fn rows(env: &Env, ty: &str) -> Vec<Value> {
    let h = env.run(&["--json", "history", "--type", ty, "--limit", "1000"]).ok().json();
    let mut v = h.as_array().unwrap().clone();
    v.reverse();
    v
}

fn secs(row: &Value, key: &str) -> f64 {
    let t = chrono::DateTime::parse_from_rfc3339(row[key].as_str().unwrap()).unwrap();
    t.timestamp_micros() as f64 / 1e6
}

#[test]
fn every_verify_is_a_history_row_and_restore_tests_give_the_restore_speed() {
    let env = Env::new();
    make_db(&env.path().join("app.db"), 300);
    write_config(env.path(), json!({"name": "v", "repository": "repo", "types": {"db": {"sqlite": "app.db"}}}));
    env.run(&["backup", "--now"]).ok();

    env.run(&["verify"]).ok();
    env.run(&["verify", "--read-data", "--restore-test"]).ok();
    let v = rows(&env, "verify");
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(v.iter().all(|r| r["result"] == "success" && r["error"].is_null()), "{v:#?}");
    assert_eq!(v[0]["bytes_read"], 0, "structure only");
    assert!(v[1]["bytes_read"].as_u64().unwrap() > 0, "--read-data reads the packs: {v:#?}");

    let t = rows(&env, "restore-test:db");
    assert_eq!(t.len(), 1, "only the run with --restore-test: {t:#?}");
    let size = std::fs::metadata(env.path().join("app.db")).unwrap().len();
    assert_eq!(t[0]["bytes_read"].as_u64(), Some(size), "bytes restored: {t:#?}");
    assert_eq!(t[0]["result"], "success");
    let took = secs(&t[0], "end") - secs(&t[0], "start");
    assert!(took > 0.0 && took < 60.0, "the restore's own duration: {t:#?}");

    let st = env.run(&["--json", "status"]).ok().json();
    let lv = &st["last_verify"];
    assert_eq!(lv["ok"], true, "{st:#}");
    assert_eq!(lv["restore_test"], true, "{st:#}");
    assert_eq!(lv["time"].as_str().map(|s| &s[..19]), v[1]["end"].as_str().map(|s| &s[..19]), "{st:#}");
    assert!(lv["next_due"].is_null(), "no verify schedule: {st:#}");
    let text = env.run(&["status"]).ok().stdout;
    assert!(text.contains("last verify ") && text.contains("(with restore test): no errors found"), "{text}");

    // A plain verify after it: the last verify had no restore test.
    env.run(&["verify"]).ok();
    assert_eq!(env.run(&["--json", "status"]).ok().json()["last_verify"]["restore_test"], false);
}

#[test]
fn damage_fails_the_verify_row_tells_once_and_recovers_once_after_repair() {
    let env = Env::new();
    let sink = HttpSink::start();
    std::fs::create_dir_all(env.path().join("src")).unwrap();
    std::fs::write(env.path().join("src/a.bin"), prng_bytes(4, 200_000)).unwrap();
    std::fs::write(env.path().join("src/b.bin"), prng_bytes(5, 200_000)).unwrap();
    write_config(
        env.path(),
        json!({"name": "v", "repository": "repo", "types": {"files": {"paths": ["src"]}},
               "notify": {"webhook": sink.url("/hook")}}),
    );
    env.run(&["backup", "--now"]).ok();
    env.run(&["verify", "--read-data"]).ok();
    assert!(sink.take().is_empty(), "a good verify tells nothing");

    // One byte flipped inside a chunk of a.bin.
    let l = layout(&env.repo());
    let c = l.snap("files").files["src/a.bin"][0];
    let pack = l.pack_of(&c);
    let e = l.packs[&pack].iter().find(|e| e.id == c).unwrap();
    flip_byte(&pack_path(&env.repo(), &pack), e.offset as u64 + e.stored_len as u64 / 2);
    drop(l);

    for _ in 0..3 {
        env.run(&["verify", "--read-data"]).code(3);
    }
    let v = rows(&env, "verify");
    assert_eq!(
        v.iter().map(|r| r["result"].as_str().unwrap()).collect::<Vec<_>>(),
        ["success", "failed", "failed", "failed"]
    );
    let err = v[1]["error"].as_str().unwrap();
    assert!(err.contains("repository DAMAGED") && err.contains(&pack.to_hex()), "{err}");
    let (_, hook) = split_events(&sink.take());
    assert_eq!(hook.len(), 1, "one failure notification over three failing verifies: {hook:#?}");
    assert_eq!(hook[0]["event"], "failure");
    assert_eq!(hook[0]["type"], "verify");
    assert!(hook[0]["message"].as_str().unwrap().contains(&pack.to_hex()), "{hook:#?}");
    let st = env.run(&["--json", "status"]).code(3).json();
    assert_eq!(st["last_verify"]["ok"], false, "{st:#}");
    assert!(st["last_verify"]["error"].as_str().unwrap().contains("DAMAGED"), "{st:#}");

    // The next backup stores the damaged chunks again, repair drops the pack: whole again.
    env.run(&["backup", "--now"]).ok();
    env.run(&["repair", "packs"]).ok();
    env.run(&["verify", "--read-data"]).ok();
    env.run(&["verify", "--read-data"]).ok();
    let (_, hook) = split_events(&sink.take());
    assert_eq!(hook.len(), 1, "one recovery: {hook:#?}");
    assert_eq!((hook[0]["event"].as_str(), hook[0]["type"].as_str()), (Some("recovery"), Some("verify")));
    assert_eq!(env.run(&["--json", "status"]).ok().json()["last_verify"]["ok"], true);
}

#[test]
fn a_weekly_verify_runs_from_backup_once_a_week_and_damage_exits_3() {
    let env = Env::new();
    make_db(&env.path().join("app.db"), 50);
    let verify = json!({"schedule": "weekly sun 04:00", "read_data": "100%", "restore_test": true});
    write_config(
        env.path(),
        json!({"name": "v", "repository": "repo", "verify": verify,
               "types": {"db": {"sqlite": "app.db", "schedule": "daily 03:00"}}}),
    );
    let text = env.run(&["config", "check"]).ok().stdout;
    let back: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back["backup"]["verify"], verify, "{text}");

    // Runs every 6 hours from Tuesday 2030-01-01 for 15 days; the machine is off all of Sunday
    // 2030-01-13.
    let t0 = chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
    let mut t = t0;
    let mut verified_at = Vec::new();
    while t < t0 + chrono::Duration::days(15) {
        if t.date() != chrono::NaiveDate::from_ymd_opt(2030, 1, 13).unwrap() {
            let r = at(&env, &t, &["backup"]).ok();
            if r.stdout.contains("verify: no errors found") {
                verified_at.push(t);
            }
        }
        t += chrono::Duration::hours(6);
    }
    let want: Vec<chrono::NaiveDateTime> = ["2030-01-01T00:00:00", "2030-01-06T06:00:00", "2030-01-14T00:00:00"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(verified_at, want, "the first run, the first run after Sunday 04:00, and Monday for the missed Sunday");
    let v = rows(&env, "verify");
    assert_eq!(v.len(), 3, "{v:#?}");
    for (row, w) in v.iter().zip(&want) {
        assert_eq!(row["result"], "success");
        assert!(row["start"].as_str().unwrap().starts_with(&w.format("%Y-%m-%dT%H:%M").to_string()), "{row}");
        assert!(row["bytes_read"].as_u64().unwrap() > 0, "read_data 100%: {row}");
    }
    let tests = rows(&env, "restore-test:db");
    assert_eq!(tests.len(), 3, "{tests:#?}");

    let st = at(&env, &t, &["--json", "status"]).ok().json();
    let lv = &st["last_verify"];
    assert_eq!((lv["ok"].as_bool(), lv["restore_test"].as_bool()), (Some(true), Some(true)), "{st:#}");
    assert!(lv["time"].as_str().unwrap().starts_with("2030-01-14T00:00"), "{st:#}");
    assert!(lv["next_due"].as_str().unwrap().starts_with("2030-01-20T04:00:00"), "{st:#}");
    let text = at(&env, &t, &["status"]).ok().stdout;
    assert!(text.contains("last verify 2030-01-14 00:00") && text.contains("next due 2030-01-20 04:00"), "{text}");

    // Damage found by the next scheduled verify: reported, and `backup` exits 3.
    let l = layout(&env.repo());
    let pack = *l.packs.keys().next().unwrap();
    let e = &l.packs[&pack][0];
    flip_byte(&pack_path(&env.repo(), &pack), e.offset as u64 + e.stored_len as u64 / 2);
    drop(l);
    let sunday = chrono::NaiveDate::from_ymd_opt(2030, 1, 20).unwrap().and_hms_opt(5, 0, 0).unwrap();
    let r = at(&env, &sunday, &["backup"]).code(3);
    assert!(
        r.stdout.contains("verify: repository DAMAGED") && r.stderr.contains("scheduled verify found damage"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(rows(&env, "verify").last().unwrap()["result"], "failed");
    // Not repeated at every run until the next slot: the damage stays reported by status.
    at(&env, &(sunday + chrono::Duration::hours(6)), &["backup"]).ok();
    assert_eq!(rows(&env, "verify").len(), 4);
    assert_eq!(at(&env, &sunday, &["--json", "status"]).code(3).json()["last_verify"]["ok"], false);
}

#[test]
fn bad_verify_settings_name_the_file_and_key() {
    let env = Env::new();
    for (verify, key, why) in [
        (json!({"schedule": "weekly sun 04:00", "read_data": "abc"}), "verify.read_data", "expected a percentage"),
        (json!({"schedule": "weekly sun 04:00", "read_data": "150%"}), "verify.read_data", "must be in (0, 100]"),
        (json!({"schedule": "fortnightly"}), "verify.schedule", "is not a schedule"),
        (json!({"schedule": "on-change"}), "verify.schedule", "does not apply to verify"),
        (json!({"schedule": "daily 04:00", "restore": true}), "verify.restore", "unknown field `restore`"),
        (json!({"read_data": "10%"}), "verify", "missing field `schedule`"),
    ] {
        let cfg = write_config(
            env.path(),
            json!({"name": "v", "repository": "repo", "verify": verify, "types": {"db": {"sqlite": "app.db"}}}),
        );
        let r = env.run_cfg(&cfg, &["config", "check"]).code(1);
        assert!(r.stderr.contains(&format!("cairn.json: {key}: ")) && r.stderr.contains(why), "{key}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // Its history rows and notification subject are "verify": no backup type may be called so.
    let cfg =
        write_config(env.path(), json!({"name": "v", "repository": "repo", "types": {"verify": {"paths": ["x"]}}}));
    let r = env.run_cfg(&cfg, &["config", "check"]).code(1);
    assert!(r.stderr.contains("cairn.json: types.verify: ") && r.stderr.contains("reserved"), "{}", r.stderr);
}
