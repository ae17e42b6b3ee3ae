//! Wrong clocks and damaged snapshot files (issue 10, items 2 and 8), through the CLI on real
//! repositories: `faketime` sets the clock of one `cairn` process, bit flips damage real files.

use serde_json::{json, Value};

use crate::util::{faked, flip_byte, write_config, write_src, Env, Run};

/// A config with one `paths` type "c" over `src/`, keep_last 2.
fn setup() -> Env {
    let env = Env::new();
    write_config(
        env.path(),
        json!({"name": "clk", "repository": "repo", "types": {"c": {"paths": ["src"], "retention": {"keep_last": 2}}}}),
    );
    env.init();
    env
}

/// `backup --now --json` (under `faketime AT` when given); returns the run and its snapshot id.
fn backup(env: &Env, at: Option<&str>) -> (Run, String) {
    let args = ["--json", "backup", "--now"];
    let r = match at {
        Some(at) => faked(env, at, &args),
        None => env.run(&args),
    };
    let id = r.json()["ran"][0]["snapshot"].as_str().unwrap_or_else(|| panic!("no snapshot: {}", r.stdout)).to_string();
    (r, id)
}

fn exists(env: &Env, id: &str) -> bool {
    env.repo().join("snapshots").join(id).exists()
}

fn cat_latest(env: &Env) -> Run {
    env.run(&["cat", "c:latest", "src/f.txt"])
}

fn status_json(env: &Env) -> Value {
    // A clock anomaly is a warning at least: never exit 0.
    let st = env.run(&["--json", "status"]).verdict().json();
    assert_ne!(st["exit_code"], 0, "{st:#}");
    st
}

fn anomaly_ids(st: &Value) -> Vec<String> {
    st["clock_anomalies"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn backup_with_the_clock_years_behind_is_kept_by_its_own_retention_and_reported() {
    let env = setup();
    let mut real = Vec::new();
    for i in 0..3 {
        write_src(&env, &format!("real {i}"));
        real.push(backup(&env, None).0.ok());
    }
    // A Raspberry Pi without RTC before NTP: the clock says 2020.
    write_src(&env, "taken in the past");
    let (r, behind) = backup(&env, Some("2020-01-01 00:00:00"));
    let r = r.ok();
    assert!(exists(&env, &behind), "the run's own retention removed its snapshot\n{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("clock anomaly"), "no warning on stderr: {}", r.stderr);
    assert!(!r.json()["ran"][0]["warnings"].as_array().unwrap().is_empty(), "{}", r.stdout);
    // The history row says so.
    let h = env.run(&["--json", "history", "--type", "c"]).ok().json();
    let last = h.as_array().unwrap().iter().find(|x| x["snapshot"] == behind.as_str()).unwrap().clone();
    assert!(last["error"].as_str().is_some_and(|e| e.contains("clock anomaly")), "{last:#}");
    // With the clock right again: it is `latest` (newest by commit order) and status lists it.
    let out = cat_latest(&env).ok();
    assert_eq!(out.stdout, "taken in the past");
    assert!(anomaly_ids(&status_json(&env)).contains(&behind));
    let text = env.run(&["status"]).verdict();
    assert!(text.stdout.contains("CLOCK: snapshot"), "{}", text.stdout);
    // A plain forget keeps it too.
    env.run(&["forget"]).ok();
    assert!(exists(&env, &behind));
}

#[test]
fn future_dated_snapshot_does_not_push_real_ones_out_of_keep_last_nor_stay_latest() {
    let env = setup();
    write_src(&env, "first");
    let (_, first) = backup(&env, None);
    // A clock five years ahead.
    write_src(&env, "from the future");
    let (r, future) = backup(&env, Some("2031-06-01 12:00:00"));
    r.ok();
    write_src(&env, "real 1");
    let (_, r1) = backup(&env, None);
    write_src(&env, "real 2");
    let (r, r2) = backup(&env, None);
    let r = r.ok();
    assert!(r.stderr.contains("clock anomaly"), "no warning about the future-dated snapshot: {}", r.stderr);
    // keep_last 2 keeps the two newest by commit order; the future one is kept as an anomaly.
    assert!(exists(&env, &r2) && exists(&env, &r1), "a real snapshot was pushed out of keep_last 2");
    assert!(exists(&env, &future), "the future-dated snapshot is kept and reported");
    assert!(!exists(&env, &first), "keep_last 2 still removes what it should");
    assert_eq!(cat_latest(&env).ok().stdout, "real 2", "latest is the newest by commit order");
    let st = status_json(&env);
    assert_eq!(anomaly_ids(&st), vec![future.clone()]);
    let c = st["types"].as_array().unwrap().iter().find(|t| t["backup_type"] == "c").unwrap().clone();
    assert_eq!(c["newest_snapshot"], r2.as_str(), "{c:#}");
}

#[test]
fn old_version_1_snapshots_still_read_and_order_before_new_ones() {
    let env = setup();
    write_src(&env, "old");
    let (_, v2) = backup(&env, None);
    // Rewrite it as cairn before snapshot version 2 wrote it (no seq), dated five years ahead.
    let repo = crate::util::open_repo(&env.repo());
    let mut s = repo.load_snapshot(&v2.parse().unwrap()).unwrap();
    assert_eq!(s.seq, 1, "the first snapshot of a repository");
    s.seq = 0;
    s.time = "2031-06-01T12:00:00+00:00".into();
    let sealed = s.seal(repo.keys());
    let v1 = cairn::id::SnapshotId(cairn::id::content_hash(&sealed));
    std::fs::write(env.repo().join("snapshots").join(v1.to_hex()), &sealed).unwrap();
    std::fs::remove_file(env.repo().join("snapshots").join(&v2)).unwrap();
    assert_eq!(repo.load_snapshot(&v1).unwrap().seq, 0);
    assert_eq!(cat_latest(&env).ok().stdout, "old");
    // A new (version 2) snapshot comes after every version 1 one, whatever their times.
    write_src(&env, "new");
    let (_, new) = backup(&env, None);
    assert_eq!(cairn::Repo::load_snapshot(&repo, &new.parse().unwrap()).unwrap().seq, 1);
    assert_eq!(cat_latest(&env).ok().stdout, "new");
    env.run(&["restore", &v1.to_hex()[..12], "--target", env.path().join("r").to_str().unwrap()]).ok();
    assert_eq!(std::fs::read_to_string(env.path().join("r/src/f.txt")).unwrap(), "old");
}

#[test]
fn damaged_newest_snapshot_is_reported_not_skipped_and_repair_quarantines_it() {
    let env = setup();
    write_src(&env, "one");
    let (_, one) = backup(&env, None);
    write_src(&env, "two");
    let (_, two) = backup(&env, None);
    let file = env.repo().join("snapshots").join(&two);
    let len = std::fs::metadata(&file).unwrap().len();
    flip_byte(&file, len / 2);
    let target = env.path().join("restored");
    let t = target.to_str().unwrap();

    // `latest` fails loudly, naming the damaged file and the way out.
    let r = env.run(&["restore", "latest", "--target", t]).code(3);
    assert!(r.stderr.contains(&format!("snapshots/{two}")) && r.stderr.contains("repair snapshots"), "{}", r.stderr);
    assert!(!target.join("src/f.txt").exists(), "an older snapshot was restored instead");
    cat_latest(&env).code(3);
    let r = env.run(&["forget"]).code(3);
    assert!(r.stderr.contains(&two), "{}", r.stderr);
    env.run(&["prune"]).code(3);
    // A backup stores its snapshot but does not report a clean success.
    write_src(&env, "three");
    let r = env.run(&["--json", "backup", "--now"]).code(3);
    let three = r.json()["ran"][0]["snapshot"].as_str().unwrap().to_string();
    assert!(exists(&env, &three));
    assert!(r.json()["unreadable_snapshots"][0].as_str().unwrap().contains(&two), "{}", r.stdout);
    let h = env.run(&["--json", "history", "--type", "c"]).ok().json();
    let row = h.as_array().unwrap().iter().find(|x| x["snapshot"] == three.as_str()).unwrap().clone();
    assert!(row["error"].as_str().is_some_and(|e| e.contains("unreadable snapshot")), "{row:#}");
    assert!(env.run(&["status"]).code(3).stdout.contains("DAMAGED"));

    // The way out: the damaged file goes to the quarantine, named in the report.
    let r = env.run(&["repair", "snapshots"]).ok();
    assert!(r.stdout.contains(&two), "{}", r.stdout);
    let quarantined = env.repo().join("quarantine/snapshots").join(&two);
    assert!(quarantined.exists() && !file.exists());
    assert_eq!(std::fs::metadata(&quarantined).unwrap().len(), len, "the damaged bytes are kept as they were");
    env.run(&["restore", "latest", "--target", t]).ok();
    assert_eq!(std::fs::read_to_string(target.join("src/f.txt")).unwrap(), "three");
    env.run(&["forget"]).ok();
    env.run(&["prune"]).ok();
    assert!(exists(&env, &three) && exists(&env, &one));
    write_src(&env, "four");
    env.run(&["backup", "--now"]).ok();
    // Nothing left to repair; the quarantine is untouched.
    let r = env.run(&["--json", "repair", "snapshots"]).ok();
    assert_eq!(r.json()["quarantined"], json!([]));
    assert!(quarantined.exists());
}
