//! Snapshot kinds (issue 12, items 1, 2, 3 and 6) through the CLI on a real app folder: a SQLite
//! database in WAL mode and config files. A configured type taken as pre-change or manual
//! through its own source, verification that keeps the snapshot id, retention counted from the
//! verification (with `faketime`), `forget SNAPSHOT`, listings, the creator without `$USER`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::util::{ensure_package, have_program, under_faketime, Env, Run};

/// `app/` with `data/app.db` (WAL mode, a `readings` table), `config.json` and `.env`, and
/// `app/cairn.json` backing up `db` (the SQLite source) and `config` (paths), keep_last 1 each.
/// `notify`: the config's notify section, if any.
fn app(env: &Env, notify: Option<Value>) -> PathBuf {
    let app = env.path().join("app");
    std::fs::create_dir_all(app.join("data")).unwrap();
    let db = rusqlite::Connection::open(app.join("data/app.db")).unwrap();
    let mode: String = db.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    db.execute_batch(
        "CREATE TABLE readings(id INTEGER PRIMARY KEY, rpm INTEGER); INSERT INTO readings(rpm) VALUES (800), (900);",
    )
    .unwrap();
    std::fs::write(app.join("config.json"), br#"{"poll_interval_s": 5}"#).unwrap();
    std::fs::write(app.join(".env"), b"API_KEY=secret\n").unwrap();
    std::fs::write(app.join("cairn-password"), b"app password\n").unwrap();
    let mut cfg = json!({
        "name": "obd",
        "repository": "repo",
        "password_file": "cairn-password",
        "types": {
            "db": {"sqlite": "data/app.db", "retention": {"keep_last": 1}},
            "config": {"paths": ["config.json", ".env"], "retention": {"keep_last": 1}},
        }
    });
    if let Some(n) = notify {
        cfg["notify"] = n;
    }
    let p = app.join("cairn.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    p
}

/// `cairn --config CFG ARGS` (no `$USER`: the environment is cleared).
fn run(env: &Env, cfg: &Path, args: &[&str]) -> Run {
    env.run_cfg(cfg, args)
}

/// [`run`] under `faketime AT` (an absolute time; the clock runs on from there).
fn faked(env: &Env, cfg: &Path, at: chrono::DateTime<chrono::Local>, args: &[&str]) -> Run {
    let base = env.cfg_cmd(cfg, args);
    env.run_cmd(under_faketime(&base, &at.format("%Y-%m-%d %H:%M:%S").to_string(), env.path()))
}

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

/// The snapshot id a `--json backup` run took for its only type.
fn taken(r: &Run) -> String {
    let v = r.json();
    v["ran"][0]["snapshot"].as_str().unwrap_or_else(|| panic!("no snapshot: {v:#}")).to_string()
}

fn snapshots(env: &Env, cfg: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["--json", "snapshots"];
    args.extend_from_slice(extra);
    run(env, cfg, &args).ok().json().as_array().unwrap().clone()
}

fn find<'a>(list: &'a [Value], id: &str) -> Option<&'a Value> {
    list.iter().find(|s| s["id"] == id)
}

fn exists(env: &Env, id: &str) -> bool {
    env.path().join("app/repo/snapshots").join(id).exists()
}

fn verification_files(env: &Env) -> usize {
    std::fs::read_dir(env.path().join("app/repo/verifications")).map(|d| d.count()).unwrap_or(0)
}

/// The account name of this process's user, as `id -un` says.
fn account() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn rows(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT count(*) FROM readings", [], |r| r.get(0)).unwrap()
}

#[test]
fn pre_change_of_the_db_type_keeps_its_id_when_verified_and_follows_retention_from_the_verification() {
    let env = Env::new();
    let cfg = app(&env, None);
    let now = chrono::Local::now();
    // Taken ten days ago: counted from the snapshot, days_7 would be over already.
    let r = faked(
        &env,
        &cfg,
        now - days(10),
        &[
            "--json",
            "backup",
            "--now",
            "--type",
            "db",
            "--kind",
            "pre-change",
            "--description",
            "v2 migration",
            "--ticket",
            "OBD-43",
            "--retention",
            "days_7",
        ],
    )
    .ok();
    let pre = taken(&r);
    let list = snapshots(&env, &cfg, &[]);
    let s = find(&list, &pre).unwrap();
    assert_eq!(
        (s["kind"].as_str(), s["description"].as_str(), s["ticket"].as_str(), s["retention"].as_str()),
        (Some("pre-change"), Some("v2 migration"), Some("OBD-43"), Some("days_7")),
        "{s:#}"
    );
    // Through the type's own source: the consistent SQLite copy, not the raw file.
    assert_eq!(s["source"]["sqlite.file"], "app.db", "{s:#}");
    assert_eq!(s["verified"], false);

    // The change: the migration adds a column and rows; routine backups follow (keep_last 1).
    let db = env.path().join("app/data/app.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "ALTER TABLE readings ADD COLUMN speed INTEGER; INSERT INTO readings(rpm, speed) VALUES (1000, 50);",
        )
        .unwrap();
    }
    let d1 = taken(&faked(&env, &cfg, now - days(9), &["--json", "backup", "--now", "--type", "db"]).ok());
    let d2 = taken(&run(&env, &cfg, &["--json", "backup", "--now", "--type", "db"]).ok());
    assert!(!exists(&env, &d1), "keep_last 1 removed the older routine snapshot");
    assert!(exists(&env, &pre), "the unverified pre-change snapshot is kept");

    // status lists it as awaiting verification, with its age.
    let st = run(&env, &cfg, &["--json", "status"]).ok().json();
    let pending = st["pending_verification"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{st:#}");
    assert_eq!((pending[0]["id"].as_str(), pending[0]["age_days"].as_i64()), (Some(pre.as_str()), Some(10)));
    let text = run(&env, &cfg, &["status"]).ok().stdout;
    assert!(text.contains(&format!("AWAITING VERIFICATION: pre-change snapshot {}", &pre[..8])), "{text}");
    assert!(text.contains("10 days ago: v2 migration [OBD-43]"), "{text}");

    // The snapshot restores to the database as it was before the change.
    let out = env.path().join("restored");
    run(&env, &cfg, &["restore", &pre[..12], "--target", out.to_str().unwrap()]).ok();
    assert_eq!(rows(&out.join("app.db")), 2);

    // Verified: the id (and the file) stay what the ticket cites.
    let before = std::fs::read(env.path().join("app/repo/snapshots").join(&pre)).unwrap();
    let v = run(&env, &cfg, &["--json", "mark-verified", &pre[..10], "--by", "alice"]).ok().json();
    assert_eq!(v["snapshot"], pre.as_str(), "{v:#}");
    assert_eq!(std::fs::read(env.path().join("app/repo/snapshots").join(&pre)).unwrap(), before);
    assert_eq!(verification_files(&env), 1);
    let list = snapshots(&env, &cfg, &[]);
    let s = find(&list, &pre).unwrap_or_else(|| panic!("{list:?}"));
    assert_eq!((s["verified"].as_bool(), s["verified_by"].as_str()), (Some(true), Some("alice")), "{s:#}");
    let again = run(&env, &cfg, &["mark-verified", &pre[..10], "--by", "bob"]).code(1);
    assert!(again.stderr.contains("already verified by alice"), "{}", again.stderr);
    let st = run(&env, &cfg, &["--json", "status"]).ok().json();
    assert_eq!(st["pending_verification"], json!([]), "{st:#}");

    // The next backups keep it for 7 days counted from the verification...
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("INSERT INTO readings(rpm, speed) VALUES (1100, 60);").unwrap();
    }
    let r = run(&env, &cfg, &["--json", "backup", "--now", "--type", "db"]).ok();
    assert!(exists(&env, &pre), "kept after the next backup: {}", r.stdout);
    assert!(!exists(&env, &d2));
    let f = run(&env, &cfg, &["--json", "forget", "--dry-run"]).ok().json();
    let d = f["decisions"].as_array().unwrap().iter().find(|d| d["id"] == pre.as_str()).unwrap();
    assert_eq!(d["reasons"], json!(["pre-change, verified, retention days_7"]), "{d:#}");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("INSERT INTO readings(rpm, speed) VALUES (1200, 70);").unwrap();
    }
    faked(&env, &cfg, now + days(6), &["--json", "backup", "--now", "--type", "db"]).ok();
    assert!(exists(&env, &pre), "6 days after the verification it is still kept");
    // ... and 8 days after it, a backup's retention removes it and its verification.
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("INSERT INTO readings(rpm, speed) VALUES (1300, 80);").unwrap();
    }
    let r = faked(&env, &cfg, now + days(8), &["--json", "backup", "--now", "--type", "db"]).ok();
    assert!(!exists(&env, &pre), "removed 8 days after the verification: {}", r.stdout);
    assert!(r.json()["forgotten"].as_array().unwrap().iter().any(|f| f == pre.as_str()));
    assert_eq!(verification_files(&env), 0, "the verification goes with its snapshot");
}

#[test]
fn manual_snapshot_of_a_configured_type_and_the_listing_of_kinds() {
    let env = Env::new();
    let cfg = app(&env, None);
    let daily = taken(&run(&env, &cfg, &["--json", "backup", "--now", "--type", "config"]).ok());
    let manual = taken(
        &run(
            &env,
            &cfg,
            &[
                "--json",
                "backup",
                "--type",
                "config",
                "--kind",
                "manual",
                "--description",
                "before vendor visit",
                "--purpose",
                "compare settings later",
                "--retention",
                "permanent",
            ],
        )
        .ok(),
    );
    // Nothing changed since the routine snapshot, and still a snapshot of its own is written.
    assert_ne!(manual, daily);
    let pre = taken(
        &run(&env, &cfg, &["--json", "backup", "--now", "--type", "db", "--kind", "pre-change", "--ticket", "OBD-44"])
            .ok(),
    );
    run(&env, &cfg, &["mark-verified", &pre, "--by", "alice"]).ok();
    let pre2 = taken(
        &run(&env, &cfg, &["--json", "backup", "--now", "--type", "db", "--kind", "pre-change", "--description", "v3"])
            .ok(),
    );

    let text = run(&env, &cfg, &["snapshots"]).ok().stdout;
    let line =
        |id: &str| text.lines().find(|l| l.starts_with(&id[..8])).unwrap_or_else(|| panic!("{text}")).to_string();
    assert!(text.lines().next().unwrap().contains("VERIFIED"), "{text}");
    let m = line(&manual);
    assert!(
        m.contains("manual") && m.contains("before vendor visit; purpose: compare settings later; retention permanent"),
        "{m}"
    );
    let p = line(&pre);
    assert!(p.contains("pre-change") && p.contains("alice 20") && p.contains("OBD-44"), "{p}");
    assert!(line(&pre2).contains("pending"), "{text}");
    assert!(line(&daily).contains("daily"), "{text}");

    let kinds = |k: &str| -> Vec<String> {
        snapshots(&env, &cfg, &["--kind", k]).iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(kinds("manual"), [manual]);
    assert_eq!(kinds("pre-change"), [pre, pre2]);
    assert_eq!(kinds("daily"), [daily]);
    let m = snapshots(&env, &cfg, &["--kind", "manual", "--type", "config"]);
    assert_eq!(
        (m[0]["purpose"].as_str(), m[0]["retention"].as_str(), m[0]["verified"].as_bool()),
        (Some("compare settings later"), Some("permanent"), Some(false))
    );
    assert!(!run(&env, &cfg, &["snapshots", "--kind", "weekly"]).stderr.is_empty());

    // Bad input: a retention that is no retention, and kind options without a kind.
    let r = run(&env, &cfg, &["backup", "--type", "db", "--kind", "manual", "--retention", "forever"]).code(1);
    assert!(r.stderr.contains("use permanent, until_verified or days_N"), "{}", r.stderr);
    let r = run(&env, &cfg, &["backup", "--now", "--type", "db", "--ticket", "X-1"]).code(2);
    assert!(r.stderr.contains("--kind"), "{}", r.stderr);
}

#[test]
fn forget_by_id_needs_force_for_permanent_and_unverified_and_is_recorded_with_who_and_why() {
    let env = Env::new();
    let cfg = app(&env, None);
    let b = |args: &[&str]| {
        let mut a = vec!["--json", "backup", "--now"];
        a.extend_from_slice(args);
        taken(&run(&env, &cfg, &a).ok())
    };
    let daily = b(&["--type", "db"]);
    let manual = b(&["--type", "config", "--kind", "manual", "--purpose", "audit", "--retention", "permanent"]);
    let pre = b(&["--type", "db", "--kind", "pre-change", "--description", "schema v2"]);
    let pre_ok = b(&["--type", "db", "--kind", "pre-change", "--description", "schema v3"]);
    run(&env, &cfg, &["mark-verified", &pre_ok, "--by", "alice"]).ok();
    assert_eq!(verification_files(&env), 1);

    // Refused without --force, and then nothing at all is removed.
    for (id, why) in [(&manual, "retention permanent"), (&pre, "pre-change snapshot not yet verified")] {
        let r = run(&env, &cfg, &["forget", &daily[..10], &id[..10]]).code(1);
        assert!(r.stderr.contains(why) && r.stderr.contains("--force"), "{}", r.stderr);
    }
    for id in [&daily, &manual, &pre, &pre_ok] {
        assert!(exists(&env, id), "nothing removed");
    }

    // Routine and verified pre-change snapshots go by name; the verification goes with them.
    let r = run(&env, &cfg, &["--json", "forget", &daily[..10], &pre_ok[..10], "--by", "bob", "--reason", "bad data"])
        .ok()
        .json();
    assert_eq!(r["removed"].as_array().unwrap().len(), 2, "{r:#}");
    assert!(!exists(&env, &daily) && !exists(&env, &pre_ok));
    assert_eq!(verification_files(&env), 0);

    // With --force; without --by the account name stands ($USER is unset here, as under cron).
    let r = run(&env, &cfg, &["forget", &manual[..10], &pre[..10], "--force", "--reason", "cleanup after audit"]).ok();
    assert!(r.stdout.contains("2 snapshots removed by"), "{}", r.stdout);
    assert!(!exists(&env, &manual) && !exists(&env, &pre));
    let r = run(&env, &cfg, &["forget", &manual[..10]]).code(1);
    assert!(r.stderr.contains("no snapshot"), "{}", r.stderr);

    let h = run(&env, &cfg, &["--json", "history", "--removed"]).ok().json();
    let got: Vec<(String, String, String, Option<String>, bool)> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["snapshot"].as_str().unwrap().to_string(),
                r["kind"].as_str().unwrap().to_string(),
                r["by"].as_str().unwrap().to_string(),
                r["reason"].as_str().map(String::from),
                r["forced"].as_bool().unwrap(),
            )
        })
        .collect();
    let me = account();
    let reason = |s: &str| Some(s.to_string());
    assert_eq!(
        got,
        [
            (pre.clone(), "pre-change".into(), me.clone(), reason("cleanup after audit"), true),
            (manual.clone(), "manual".into(), me.clone(), reason("cleanup after audit"), true),
            (pre_ok.clone(), "pre-change".into(), "bob".into(), reason("bad data"), false),
            (daily.clone(), "daily".into(), "bob".into(), reason("bad data"), false),
        ]
    );
    let text = run(&env, &cfg, &["history", "--removed"]).ok().stdout;
    assert!(text.contains("bad data") && text.contains("cleanup after audit"), "{text}");
}

#[test]
fn creator_is_the_account_name_when_user_is_unset() {
    let env = Env::new();
    let cfg = app(&env, None);
    // The test environment is cleared: no $USER, as under cron.
    let id = taken(&run(&env, &cfg, &["--json", "backup", "--now", "--type", "db", "--kind", "manual"]).ok());
    let list = snapshots(&env, &cfg, &[]);
    assert_eq!(find(&list, &id).unwrap()["creator"].as_str(), Some(account().as_str()));
    // $USER wins when set; --creator over both.
    let mut c = env.cfg_cmd(&cfg, &["--json", "backup", "--now", "--type", "config", "--kind", "manual"]);
    c.env("USER", "carol");
    let with_user = taken(&env.run_cmd(c).ok());
    let id2 = taken(
        &run(&env, &cfg, &["--json", "backup", "--now", "--type", "config", "--kind", "manual", "--creator", "dave"])
            .ok(),
    );
    let list = snapshots(&env, &cfg, &[]);
    assert_eq!(find(&list, &with_user).unwrap()["creator"].as_str(), Some("carol"));
    assert_eq!(find(&list, &id2).unwrap()["creator"].as_str(), Some("dave"));
}

#[test]
fn a_pre_change_snapshot_waiting_too_long_is_notified_once() {
    let env = Env::new();
    let log = env.path().join("events.log");
    let cmd = format!("echo \"$CAIRN_EVENT|$CAIRN_TYPE|$CAIRN_MESSAGE\" >> {}", log.display());
    let cfg = app(&env, Some(json!({"command": cmd, "verification_overdue": "7d"})));
    let now = chrono::Local::now();
    let pre = taken(
        &faked(
            &env,
            &cfg,
            now - days(3),
            &["--json", "backup", "--now", "--type", "db", "--kind", "pre-change", "--ticket", "OBD-45"],
        )
        .ok(),
    );
    let events = || std::fs::read_to_string(&log).unwrap_or_default();
    let overdue = || events().lines().filter(|l| l.starts_with("verification_overdue|")).count();
    run(&env, &cfg, &["backup", "--now", "--type", "config"]).ok();
    assert_eq!(overdue(), 0, "3 days is within the 7: {}", events());
    faked(&env, &cfg, now + days(5) + chrono::Duration::hours(1), &["backup", "--now", "--type", "config"]).ok();
    assert_eq!(overdue(), 1, "{}", events());
    let line = events().lines().find(|l| l.starts_with("verification_overdue|")).unwrap().to_string();
    assert!(
        line.starts_with(&format!(
            "verification_overdue|db|pre-change snapshot {} (db, OBD-45) has waited 8 days",
            &pre[..8]
        )),
        "{line}"
    );
    // Not again within remind_every (a day), and never once verified.
    faked(&env, &cfg, now + days(5) + chrono::Duration::hours(2), &["backup", "--now", "--type", "config"]).ok();
    assert_eq!(overdue(), 1, "{}", events());
    run(&env, &cfg, &["mark-verified", &pre, "--by", "alice"]).ok();
    faked(&env, &cfg, now + days(7), &["backup", "--now", "--type", "config"]).ok();
    assert_eq!(overdue(), 1, "{}", events());
}

#[test]
fn verifications_reach_the_remote_after_their_snapshot_and_leave_it_with_it() {
    ensure_package("rclone", || have_program("rclone"));
    let env = Env::new();
    let cfg = app(&env, None);
    let remote = env.path().join("offsite");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["remotes"] = json!([{"name": "usb", "rclone": format!(":local:{}", remote.display())}]);
    std::fs::write(&cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let pre = taken(&run(&env, &cfg, &["--json", "backup", "--type", "db", "--kind", "pre-change"]).ok());
    let r = run(&env, &cfg, &["--json", "mark-verified", &pre, "--by", "alice"]).ok().json();
    let ver = r["verification"].as_str().unwrap().to_string();
    let s = run(&env, &cfg, &["--json", "sync"]).ok().json();
    assert_eq!(s[0]["uploaded"], 1, "only the verification is new: {s:#}");
    assert!(remote.join("verifications").join(&ver).exists());
    // Read back from the remote alone: the snapshot shows its verification there too.
    let list = run(&env, &cfg, &["--json", "--remote", "usb", "snapshots"]).ok().json();
    assert_eq!(list[0]["verified_by"], "alice", "{list:#}");
    run(&env, &cfg, &["forget", &pre, "--reason", "done"]).ok();
    run(&env, &cfg, &["sync"]).ok();
    assert!(!remote.join("verifications").join(&ver).exists());
    assert!(!remote.join("snapshots").join(&pre).exists());
}

/// `TYPE@TIME` names the newest snapshot of TYPE taken at or before TIME (local time, or with an
/// offset), for `restore` and `ls`; a time before the first snapshot and a malformed time are
/// clear errors.
#[test]
fn cli_type_at_time_picks_the_newest_snapshot_at_or_before() {
    let env = Env::new();
    let cfg = app(&env, None);
    let mut cfgv: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    cfgv["types"]["db"]["retention"] = json!({"keep_last": 10});
    std::fs::write(&cfg, serde_json::to_vec_pretty(&cfgv).unwrap()).unwrap();
    let t0 = chrono::Local::now() - days(2);
    let db = env.path().join("app/data/app.db");
    let mut ids = Vec::new();
    for h in 0..3 {
        if h > 0 {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute("INSERT INTO readings(rpm) VALUES (1000)", []).unwrap();
        }
        let at = t0 + chrono::Duration::hours(h);
        ids.push(taken(&faked(&env, &cfg, at, &["--json", "backup", "--now", "--type", "db"]).ok()));
    }
    // Half an hour after the second snapshot, in local time and in UTC with an offset.
    let mid = t0 + chrono::Duration::minutes(90);
    let local = format!("db@{}", mid.format("%Y-%m-%dT%H:%M"));
    let utc = format!("db@{}", mid.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%SZ"));
    for spec in [&local, &utc] {
        let out = env.path().join(format!("restored-{}", spec.len()));
        run(&env, &cfg, &["restore", spec, "--target", out.to_str().unwrap()]).ok();
        assert_eq!(rows(&out.join("app.db")), 3, "{spec}");
        let listed = run(&env, &cfg, &["--json", "ls", spec]).ok().stdout;
        assert!(!listed.is_empty(), "{spec}");
    }
    // Exactly at a snapshot's second picks it; at the last one, the newest.
    let last =
        format!("db@{}", (t0 + chrono::Duration::hours(2) + chrono::Duration::minutes(1)).format("%Y-%m-%dT%H:%M"));
    let out = env.path().join("restored-last");
    run(&env, &cfg, &["restore", &last, "--target", out.to_str().unwrap()]).ok();
    assert_eq!(rows(&out.join("app.db")), 4);

    let before = format!("db@{}", (t0 - days(1)).format("%Y-%m-%dT%H:%M"));
    let r = run(&env, &cfg, &["ls", &before]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("no snapshot of type \"db\" at or before") && r.stderr.contains("oldest is from"),
        "{}",
        r.stderr
    );
    let r = run(&env, &cfg, &["restore", "db@yesterday", "--target", "x"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("is not a time"), "{}", r.stderr);
    let r = run(&env, &cfg, &["ls", "nosuch@2026-01-01T00:00"]);
    assert!(r.stderr.contains("no snapshot of type \"nosuch\""), "{}", r.stderr);
    assert_eq!(ids.len(), 3);

    // status: the achieved RPO is the gap between snapshots (an hour here, none in the last day).
    let st = run(&env, &cfg, &["--json", "status"]).json();
    let db = st["types"].as_array().unwrap().iter().find(|t| t["backup_type"] == "db").unwrap().clone();
    // (faketime's clock runs on from each start, so the gap is an hour give or take a second.)
    let gap = db["achieved_rpo"]["last_gap_s"].as_i64().unwrap_or_else(|| panic!("{db:#}"));
    assert!((3590..=3610).contains(&gap), "{db:#}");
    assert_eq!(
        (db["achieved_rpo"]["widest_gap_24h_s"].clone(), db["achieved_rpo"]["snapshots_24h"].clone()),
        (json!(null), json!(0))
    );
    let text = run(&env, &cfg, &["status"]).stdout;
    assert!(
        text.contains("restore points (achieved RPO):\n  db: last gap ")
            && text.contains("; 0 snapshots in the last 24 h\n"),
        "{text}"
    );
}
