//! Capacity and anomalies through the binary: a threshold below the real file system's use is a
//! low repository told once over several runs and its end told once; `rclone about` of a
//! `:local:` remote in `status --json`; a SQLite database that shrinks by half and a type whose
//! new data jumps tenfold each give exactly one anomaly warning and notification.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::lifecycle::{split_events, HttpSink};
use crate::util::{prng_bytes, write_config, Env, Run};

/// The webhook events received, as (event, type, message).
fn events(sink: &HttpSink) -> Vec<(String, String, String)> {
    let (_, hook) = split_events(&sink.take());
    let s = |h: &Value, k: &str| h[k].as_str().unwrap_or_default().to_string();
    hook.iter().map(|h| (s(h, "event"), s(h, "type"), s(h, "message"))).collect()
}

fn config(env: &Env, sink: &HttpSink, types: Value, extra: Value) -> PathBuf {
    // The host's own file system must not decide these tests: 100% is never above.
    let mut v = json!({"name": "t", "repository": "repo", "encryption": "none", "types": types,
                       "notify": {"webhook": sink.url("/hook")}, "capacity": {"warn_percent": 100}});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    write_config(&env.path().join("app"), v)
}

fn backup(env: &Env, cfg: &Path) -> Run {
    env.run_cfg(cfg, &["backup", "--now", "--json"]).ok()
}

/// The anomaly warnings of a `backup --json` run: (type, warning).
fn anomalies(r: &Run) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in r.json()["ran"].as_array().unwrap() {
        for w in t["warnings"].as_array().unwrap() {
            let w = w.as_str().unwrap();
            if w.starts_with("anomaly:") {
                out.push((t["backup_type"].as_str().unwrap().to_string(), w.to_string()));
            }
        }
    }
    out
}

#[test]
fn cli_a_full_repository_file_system_is_told_once_then_its_end_once() {
    let env = Env::new();
    let sink = HttpSink::start();
    std::fs::create_dir_all(env.path().join("app/data")).unwrap();
    std::fs::write(env.path().join("app/data/a"), b"hello").unwrap();
    let types = json!({"files": {"paths": ["data"]}});
    // Any real file system is more than 1% used: "full" at this threshold.
    let cfg = config(&env, &sink, types.clone(), json!({"capacity": {"warn_percent": 1}}));
    for i in 0..3 {
        std::fs::write(env.path().join("app/data/a"), format!("run {i}")).unwrap();
        let r = backup(&env, &cfg);
        assert!(r.stderr.contains("warning: repository file system at"), "{}", r.stderr);
        let c = &r.json()["capacity"]["repository"];
        assert_eq!(c["low"], true, "{c}");
        assert_eq!(c["warn_percent"], 1);
        assert!(c["total_bytes"].as_u64().unwrap() > 0 && c["used_percent"].as_f64().unwrap() > 1.0, "{c}");
    }
    let ev = events(&sink);
    assert_eq!(ev.len(), 1, "one notification over three runs: {ev:?}");
    assert_eq!((ev[0].0.as_str(), ev[0].1.as_str()), ("capacity", "capacity:repository"));
    assert!(ev[0].2.contains("full (threshold 1%)"), "{ev:?}");
    let st = env.run_cfg(&cfg, &["status", "--json"]).json();
    assert_eq!(st["capacity"]["low"], true, "{st}");
    assert_eq!(st["capacity"]["repository"]["low"], true);
    let text = env.run_cfg(&cfg, &["status"]).stdout;
    assert!(text.contains("repository file system:") && text.contains("LOW"), "{text}");

    // Raised: back under, told once.
    let cfg = config(&env, &sink, types, json!({"capacity": {"warn_percent": 100}}));
    for _ in 0..2 {
        let r = backup(&env, &cfg);
        assert!(!r.stderr.contains("repository file system"), "{}", r.stderr);
        assert_eq!(r.json()["capacity"]["low"], false);
    }
    let ev = events(&sink);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, "recovery");
    assert!(ev[0].2.contains("back to"), "{ev:?}");
    assert_eq!(env.run_cfg(&cfg, &["status", "--json"]).json()["capacity"]["low"], false);
}

#[test]
fn cli_a_bad_threshold_is_an_error_naming_the_file_and_key() {
    let env = Env::new();
    let sink = HttpSink::start();
    for (extra, key) in [
        (json!({"capacity": {"warn_percent": 120}}), "capacity.warn_percent"),
        (json!({"anomaly": {"min_bytes": "lots"}}), "anomaly.min_bytes"),
        (json!({"anomaly": {"growth_factor": 1}}), "anomaly.growth_factor"),
    ] {
        let cfg = config(&env, &sink, json!({"files": {"paths": ["data"]}}), extra);
        let r = env.run_cfg(&cfg, &["config", "check"]);
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains(&format!("cairn.json: {key}: ")), "{key}: {}", r.stderr);
    }
}

#[test]
fn cli_rclone_about_of_a_local_remote_shows_in_status() {
    let env = Env::new();
    let sink = HttpSink::start();
    std::fs::create_dir_all(env.path().join("app/data")).unwrap();
    std::fs::write(env.path().join("app/data/a"), b"hello").unwrap();
    let mirror = env.path().join("mirror");
    let remotes = json!([{"name": "usb", "rclone": format!(":local:{}", mirror.display())}]);
    let cfg = config(&env, &sink, json!({"files": {"paths": ["data"]}}), json!({"remotes": remotes}));
    // Before any sync nothing was asked.
    let r = backup(&env, &cfg);
    assert_eq!(r.json()["sync"][0]["error"], Value::Null, "{}", r.stdout);
    let st = env.run_cfg(&cfg, &["status", "--json"]).json();
    let remote = &st["capacity"]["remotes"][0];
    assert_eq!(remote["name"], "usb", "{st}");
    assert_eq!(remote["reported"], true, "{remote}");
    assert!(remote["total_bytes"].as_u64().unwrap() > 0, "{remote}");
    assert!(remote["free_bytes"].as_u64().unwrap() <= remote["total_bytes"].as_u64().unwrap());
    assert_eq!(remote["low"], false, "{remote}");
    assert!(remote["next_upload_bytes"].as_u64().unwrap() > 0, "{remote}");
    let text = env.run_cfg(&cfg, &["status"]).stdout;
    assert!(text.contains("remote usb quota:") && text.contains("free of"), "{text}");
    assert!(events(&sink).is_empty());
    // At 1% the remote's (real) file system is low too: its own condition, told once.
    let remotes = json!([{"name": "usb", "rclone": format!(":local:{}", mirror.display())}]);
    let types = json!({"files": {"paths": ["data"]}});
    let cfg = config(&env, &sink, types, json!({"remotes": remotes, "capacity": {"warn_percent": 1}}));
    for i in 0..2 {
        std::fs::write(env.path().join("app/data/a"), format!("run {i}")).unwrap();
        let r = backup(&env, &cfg);
        assert!(r.stderr.contains("warning: remote usb is"), "{}", r.stderr);
    }
    let mut ev: Vec<String> = events(&sink).into_iter().map(|(e, t, _)| format!("{e} {t}")).collect();
    ev.sort();
    assert_eq!(ev, ["capacity capacity:remote:usb", "capacity capacity:repository"]);
    let st = env.run_cfg(&cfg, &["status", "--json"]).json();
    assert_eq!(st["capacity"]["remotes"][0]["low"], true, "{st}");
}

/// A SQLite database of `rows` rows of 64 KiB of random bytes.
fn fill(db: &Path, from: u64, rows: u64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, b BLOB)").unwrap();
    for i in from..from + rows {
        conn.execute("INSERT INTO t(id, b) VALUES (?1, ?2)", rusqlite::params![i as i64, prng_bytes(i, 64 << 10)])
            .unwrap();
    }
}

#[test]
fn cli_a_database_that_shrinks_by_half_is_one_anomaly() {
    let env = Env::new();
    let sink = HttpSink::start();
    std::fs::create_dir_all(env.path().join("app")).unwrap();
    let db = env.path().join("app/app.db");
    fill(&db, 0, 96); // 6 MiB
                      // The floor above what the VACUUMed copy may add (its pages move), below what goes.
    let cfg = config(&env, &sink, json!({"db": {"sqlite": "app.db"}}), json!({"anomaly": {"min_bytes": "2MiB"}}));
    for i in 0..4 {
        fill(&db, 1000 + i, 1);
        let r = backup(&env, &cfg);
        assert!(anomalies(&r).is_empty(), "a normal run: {}", r.stdout);
    }
    assert!(events(&sink).is_empty());
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("DELETE FROM t WHERE id < 72; VACUUM;").unwrap();
    drop(conn);
    let r = backup(&env, &cfg);
    let a = anomalies(&r);
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(a[0].1.contains("db shrank to"), "{a:?}");
    assert!(r.stderr.contains("warning: db: anomaly: db shrank"), "{}", r.stderr);
    let ev = events(&sink);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!((ev[0].0.as_str(), ev[0].1.as_str()), ("anomaly", "db"));
    // The history row carries it.
    let h = env.run_cfg(&cfg, &["history", "--json"]).json();
    let last = h.as_array().unwrap().iter().find(|r| r["backup_type"] == "db").unwrap();
    assert!(last["error"].as_str().unwrap_or_default().contains("anomaly: db shrank"), "{h}");
    // The next run at the new size is normal again.
    fill(&db, 2000, 1);
    assert!(anomalies(&backup(&env, &cfg)).is_empty());
    assert!(events(&sink).is_empty());
}

#[test]
fn cli_new_data_ten_times_the_median_is_one_anomaly() {
    let env = Env::new();
    let sink = HttpSink::start();
    let data = env.path().join("app/data");
    std::fs::create_dir_all(&data).unwrap();
    let cfg = config(&env, &sink, json!({"files": {"paths": ["data"]}}), json!({}));
    // Each run adds one file of random bytes: its new data is that file.
    let add = |seed: u64, n: usize| std::fs::write(data.join(format!("f{seed}")), prng_bytes(seed, n)).unwrap();
    // A tiny type whose new data jumps tenfold stays under the 1 MiB floor: no alarm.
    for i in 0..4 {
        add(i, 20_000);
        assert!(anomalies(&backup(&env, &cfg)).is_empty());
    }
    add(10, 300_000);
    assert!(anomalies(&backup(&env, &cfg)).is_empty(), "under the floor");
    for i in 0..3 {
        add(20 + i, 150_000);
        assert!(anomalies(&backup(&env, &cfg)).is_empty());
    }
    add(30, 4 << 20);
    let r = backup(&env, &cfg);
    let a = anomalies(&r);
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(a[0].1.contains("files added 4.0 MiB of new data, more than 10x the median"), "{a:?}");
    assert!(r.stderr.contains("warning: files: anomaly:"), "{}", r.stderr);
    let ev = events(&sink);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!((ev[0].0.as_str(), ev[0].1.as_str()), ("anomaly", "files"));
}
