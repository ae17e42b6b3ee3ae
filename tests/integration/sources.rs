//! Config-driven backups of real sources, through the real binary: the config file (standalone and
//! inside an application's config.json), SQLite databases written to by another process while
//! they are copied (WAL and rollback journal), a real PostgreSQL server, a log being appended to,
//! on-change config snapshots and dump commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

/// The per-type results of a `backup --now --json` run, in run order.
fn results(r: &Run) -> Vec<Value> {
    r.json()["ran"].as_array().unwrap_or_else(|| panic!("no results in {}", r.stdout)).clone()
}

fn result<'a>(rs: &'a [Value], ty: &str) -> &'a Value {
    rs.iter().find(|r| r["backup_type"] == ty).unwrap_or_else(|| panic!("no result for {ty}: {rs:#?}"))
}

/// Asserts a type's result stored a complete new snapshot; returns its id.
fn stored(r: &Value) -> String {
    assert_eq!((&r["result"], r["file_errors"].as_array().map(|v| v.len())), (&json!("success"), Some(0)), "{r:#}");
    r["snapshot"].as_str().unwrap().to_string()
}

/// A failed type's error text.
fn failure(r: &Value) -> String {
    assert_eq!(r["result"], "failed", "{r:#}");
    r["error"].as_str().unwrap_or_else(|| panic!("no error in {r:#}")).to_string()
}

/// `snapshots --json`, by id.
fn snapshots(env: &Env, cfg: &Path) -> std::collections::BTreeMap<String, Value> {
    let v = env.run_cfg(cfg, &["snapshots", "--json"]).ok().json();
    v.as_array().unwrap().iter().map(|s| (s["id"].as_str().unwrap().to_string(), s.clone())).collect()
}

fn repo_tmp_leftovers(repo: &Path) -> Vec<PathBuf> {
    walk(&repo.join("tmp")).into_iter().filter(|p| p.is_file()).collect()
}

fn small_db(path: &Path, rows: i64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);").unwrap();
    for i in 0..rows {
        c.execute("INSERT INTO t(v) VALUES (?1)", [format!("row {i}")]).unwrap();
    }
}

// ---------------------------------------------------------------- configuration

#[test]
fn standalone_config_resolves_relative_paths_against_its_directory() {
    let env = Env::new();
    let proj = env.path().join("proj");
    small_db(&proj.join("data/app.db"), 10);
    std::fs::create_dir_all(proj.join("logs")).unwrap();
    std::fs::write(proj.join("logs/app.log"), "started\n").unwrap();
    write_config(
        &proj,
        json!({
            "name": "obd", "repository": "backups/repo", "password_file": "cairn-password",
            "types": { "db": { "sqlite": "data/app.db" }, "logs": { "paths": ["logs"] } }
        }),
    );
    let root = proj.canonicalize().unwrap();
    let repo = root.join("backups/repo");
    // Run from the Env dir with a relative --config: paths resolve against proj/, not the cwd.
    let cfg = Path::new("proj/cairn.json");
    let r = env.run_cfg(cfg, &["backup", "--now", "--json"]).ok();
    let rs = results(&r);
    assert_eq!(rs.len(), 2);
    for ty in ["db", "logs"] {
        stored(result(&rs, ty));
    }
    assert_eq!(snapshot_count(&repo), 2);
    assert!(!env.path().join("backups").exists(), "nothing may be created relative to the cwd");
    // The repository is encrypted with the password file's password: another one is refused.
    let mut c = env.cfg_cmd(cfg, &["snapshots"]);
    c.env("CAIRN_PASSWORD", "not the password");
    env.run_cmd(c).code(4);

    // `config check` prints the file and every path resolved and absolute.
    let v = env.run_cfg(cfg, &["config", "check"]).ok().json();
    assert_eq!(v["file"], json!(root.join("cairn.json")));
    assert_eq!(v["backup"]["repository"], json!(repo));
    assert_eq!(v["backup"]["password_file"], json!(root.join("cairn-password")));
    assert_eq!(v["backup"]["types"]["db"]["sqlite"], json!(root.join("data/app.db")));
    assert_eq!(v["backup"]["types"]["logs"]["paths"], json!([root.join("logs")]));

    // CAIRN_CONFIG instead of --config, from yet another directory.
    let elsewhere = env.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let mut c = env.cmd();
    c.env_remove("CAIRN_REPO")
        .env_remove("CAIRN_PASSWORD")
        .env("CAIRN_CONFIG", root.join("cairn.json"))
        .current_dir(&elsewhere);
    c.args(["snapshots", "--json"]);
    assert_eq!(env.run_cmd(c).ok().json().as_array().unwrap().len(), 2);
    // ./cairn.json is found in the working directory.
    let mut c = env.cmd();
    c.env_remove("CAIRN_REPO").env_remove("CAIRN_PASSWORD").current_dir(&proj).args(["snapshots", "--json"]);
    assert_eq!(env.run_cmd(c).ok().json().as_array().unwrap().len(), 2);

    // CAIRN_REPO overrides the config's repository (created there on first use).
    let other = env.path().join("other-repo");
    let mut c = env.cfg_cmd(cfg, &["backup", "--now", "--type", "db"]);
    c.env("CAIRN_REPO", &other);
    env.run_cmd(c).ok();
    assert_eq!(snapshot_count(&other), 1);
    assert_eq!(snapshot_count(&repo), 2);
    let mut c = env.cfg_cmd(cfg, &["config", "check"]);
    c.env("CAIRN_REPO", &other);
    assert_eq!(env.run_cmd(c).ok().json()["backup"]["repository"], json!(other));
}

#[test]
fn app_config_json_with_a_backup_key_is_a_config() {
    let env = Env::new();
    let (app, cfg) = example_app(env.path());
    let root = app.canonicalize().unwrap();
    let v = env.run_cfg(&cfg, &["config", "check"]).ok().json();
    assert_eq!(v["file"], json!(root.join("config.json")));
    let types: Vec<&String> = v["backup"]["types"].as_object().unwrap().keys().collect();
    assert_eq!(types, ["db", "logs", "config"], "types in file order");
    assert_eq!(v["backup"]["types"]["config"]["paths"], json!([root.join("config.json"), root.join(".env")]));
    let r = env.run_cfg(&cfg, &["backup", "--now", "--type", "db", "--type", "config", "--json"]).ok();
    let rs = results(&r);
    assert_eq!(rs.iter().map(|r| r["backup_type"].as_str().unwrap()).collect::<Vec<_>>(), ["db", "config"]);
    assert_eq!(snapshot_count(&root.join("backups/repo")), 2);
    // ./config.json with a backup key is found from the app's directory.
    let mut c = env.cmd();
    c.env_remove("CAIRN_REPO").env_remove("CAIRN_PASSWORD").current_dir(&app).args(["snapshots", "--json"]);
    assert_eq!(env.run_cmd(c).ok().json().as_array().unwrap().len(), 2);
    // An unknown --type names the file and the configured types.
    let r = env.run_cfg(&cfg, &["backup", "--now", "--type", "nope"]).code(1);
    assert!(r.stderr.contains("no backup type \"nope\"") && r.stderr.contains("db, logs, config"), "{}", r.stderr);
    // A config.json without a backup key is someone else's file, not a cairn config.
    let other = env.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("config.json"), r#"{"app": {"name": "x"}}"#).unwrap();
    let mut c = env.cmd();
    c.env_remove("CAIRN_REPO").env_remove("CAIRN_PASSWORD").current_dir(&other).args(["config", "check"]);
    let r = env.run_cmd(c).code(1);
    assert!(r.stderr.contains("no configuration"), "{}", r.stderr);
}

#[test]
fn config_errors_name_the_file_and_the_key() {
    let env = Env::new();
    let app =
        |types: Value| json!({ "app": { "x": 1 }, "backup": { "name": "obd", "repository": "repo", "types": types } });
    let alone = |types: Value| json!({ "name": "obd", "repository": "repo", "types": types });
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            app(json!({ "db": { "sqlite": "a.db", "schedule": "daily 25:00" } })),
            "backup.types.db.schedule",
            "\"daily 25:00\" is not a schedule",
        ),
        (
            app(json!({ "db": { "sqlite": "a.db", "retention": { "keep_last": 0 } } })),
            "backup.types.db.retention.keep_last",
            "at least 1",
        ),
        (app(json!({ "db": { "sqlite": "a.db", "paths": ["logs"] } })), "backup.types.db", "more than one source"),
        (app(json!({ "db": { "schedule": "hourly" } })), "backup.types.db", "no source"),
        (app(json!({})), "backup.types", "no backup types"),
        (app(json!({ "db": { "sqlite_path": "a.db" } })), "backup.types.db.sqlite_path", "unknown field"),
        (
            app(json!({ "db": { "sqlite": "a.db", "busy_timeout_s": "10" } })),
            "backup.types.db.busy_timeout_s",
            "invalid type",
        ),
        (
            app(json!({ "db": { "sqlite": "a.db", "retention": { "keep_last": -1 } } })),
            "backup.types.db.retention.keep_last",
            "invalid value",
        ),
        (app(json!({ "db": 5 })), "backup.types.db", "invalid type"),
        (
            json!({ "backup": { "name": "obd", "repository": "repo", "repo": "x", "types": {} } }),
            "backup.repo",
            "unknown field",
        ),
        (
            json!({ "backup": { "name": "obd", "types": { "db": { "sqlite": "a.db" } } } }),
            "backup",
            "missing field `repository`",
        ),
        (alone(json!({ "logs": { "paths": "logs" } })), "types.logs.paths", "invalid type"),
        (
            alone(json!({ "logs": { "paths": ["logs"], "vacuum": true } })),
            "types.logs.vacuum",
            "only applies to a sqlite source",
        ),
        (
            alone(json!({ "db": { "sqlite": "a.db", "schedule": "weekly funday 03:00" } })),
            "types.db.schedule",
            "not a schedule",
        ),
        (
            alone(json!({ "db": { "sqlite": "a.db", "catch_up_after": "soon" } })),
            "types.db.catch_up_after",
            "not a duration",
        ),
        (json!({ "name": "obd", "repository": "repo" }), "(top level)", "missing field `types`"),
        (json!([1, 2]), "(top level)", "must be a JSON object"),
    ];
    for (i, (content, key, what)) in cases.iter().enumerate() {
        let dir = env.path().join(format!("case{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(if content.get("backup").is_some() { "config.json" } else { "cairn.json" });
        std::fs::write(&file, serde_json::to_vec_pretty(content).unwrap()).unwrap();
        for args in [&["config", "check"][..], &["backup", "--now"][..]] {
            let r = env.run_cfg(&file, args);
            assert_eq!(r.code, 1, "case {i} {args:?}: {content}\n{}", r.stderr);
            let want = format!("{}: {key}: ", file.display());
            assert!(
                r.stderr.contains(&want) && r.stderr.contains(what),
                "case {i} {args:?}: want {want:?} and {what:?} in:\n{}",
                r.stderr
            );
            assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        }
        assert!(!dir.join("repo").exists(), "case {i}: a bad config must not create the repository");
    }
    // Not JSON at all.
    let file = env.path().join("broken.json");
    std::fs::write(&file, "{ \"name\": \"obd\", ").unwrap();
    let r = env.run_cfg(&file, &["config", "check"]).code(1);
    assert!(r.stderr.contains(&format!("{}: not valid JSON", file.display())), "{}", r.stderr);
    // A missing config file.
    let r = env.run_cfg(&env.path().join("nope.json"), &["config", "check"]).code(1);
    assert!(r.stderr.contains("nope.json") && r.stderr.contains("does not exist"), "{}", r.stderr);
}

#[test]
fn readme_first_command_backs_up_the_example_app() {
    // `cargo run --release -- --config examples/app/config.json backup --now`, on a copy, with the
    // real key derivation and the example's password file.
    let env = Env::new();
    let (app, _) = example_app(env.path());
    let c = env.cfg_cmd_real_kdf(Path::new("app/config.json"), &["backup", "--now"]);
    let r = env.run_cmd(c).ok();
    let repo = app.canonicalize().unwrap().join("backups/repo");
    assert!(r.stdout.contains("created repository") && r.stdout.contains(&repo.display().to_string()), "{}", r.stdout);
    assert!(r.stdout.contains("(encrypted)"), "{}", r.stdout);
    for ty in ["db", "logs", "config"] {
        assert!(
            r.stdout.lines().any(|l| l.starts_with(&format!("{ty}: snapshot ")) && l.contains(" saved: ")),
            "{ty} not reported:\n{}",
            r.stdout
        );
    }
    assert_eq!(snapshot_count(&repo), 3);
}

// ---------------------------------------------------------------- SQLite

const ACCOUNTS: i64 = 3000;
const START_BALANCE: i64 = 1000;

/// Moves money between accounts in transactions until the stop file appears; each transaction
/// also appends to a ledger and bumps meta.commits. Prints "ready", then the number of commits.
const SQLITE_WRITER: &str = r#"
import os, random, sqlite3, sys, time
db, stop, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = sqlite3.connect(db, timeout=60, isolation_level=None)
# Atomicity between processes does not depend on fsync; skipping it keeps the test quick.
c.execute("PRAGMA synchronous = OFF")
rng = random.Random(7)
print("ready", flush=True)
commits = 0
while not os.path.exists(stop):
    a, b, amt = rng.randrange(1, n + 1), rng.randrange(1, n + 1), rng.randrange(1, 50)
    note = ("%06d-%d " % (b, commits)) * 150
    c.execute("BEGIN IMMEDIATE")
    c.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amt, a))
    c.execute("INSERT INTO ledger(src, dst, amount, memo) VALUES (?, ?, ?, ?)", (a, b, amt, note[:80]))
    c.execute("UPDATE accounts SET balance = balance + ?, note = ? WHERE id = ?", (amt, note[:1200], b))
    c.execute("UPDATE meta SET commits = commits + 1")
    c.execute("COMMIT")
    commits += 1
    if commits % 8 == 0:
        time.sleep(0.001)
print(commits, flush=True)
"#;

fn make_accounts_db(path: &Path, wal: bool, page_size: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(&format!("PRAGMA page_size = {page_size};")).unwrap();
    let mode: String = c
        .query_row(if wal { "PRAGMA journal_mode = WAL" } else { "PRAGMA journal_mode = DELETE" }, [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, if wal { "wal" } else { "delete" });
    c.execute_batch(
        "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, note TEXT NOT NULL);
         CREATE TABLE ledger(id INTEGER PRIMARY KEY, src INTEGER NOT NULL, dst INTEGER NOT NULL, amount INTEGER NOT NULL, memo TEXT);
         CREATE INDEX ledger_dst ON ledger(dst);
         CREATE TABLE meta(commits INTEGER NOT NULL);
         INSERT INTO meta VALUES (0);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 1..=ACCOUNTS {
        let note = format!("account {i:06} opened; ").repeat(50);
        tx.execute(
            "INSERT INTO accounts(id, balance, note) VALUES (?1, ?2, ?3)",
            rusqlite::params![i, START_BALANCE, note],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let size = std::fs::metadata(path).unwrap().len()
        + std::fs::metadata(format!("{}-wal", path.display())).map(|m| m.len()).unwrap_or(0);
    assert!(size > 3 << 20, "database is {size} bytes");
}

fn commits_now(db: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    c.query_row("SELECT commits FROM meta", [], |r| r.get(0)).unwrap()
}

/// Waits until the writer has committed past `after`; returns the new count.
fn wait_for_commits(db: &Path, after: i64) -> i64 {
    let start = Instant::now();
    loop {
        let n = commits_now(db);
        if n > after {
            return n;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the writer made no progress past {after} commits");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Snapshots a database several times while another process commits, streamed, with VACUUM INTO
/// and with the backup-API fallback, and checks every snapshot restores to a consistent database
/// holding every commit made before it started; a streamed one writes nothing into tmp/.
fn sqlite_under_write_load(wal: bool) {
    let env = Env::new();
    let app = env.path().join("app");
    let db = app.join("data/app.db");
    let page_size: u32 = if wal { 8192 } else { 4096 };
    make_accounts_db(&db, wal, page_size);
    let cfg = write_config(
        &app,
        json!({
            "name": "obd", "repository": "backups/repo", "password_file": "cairn-password",
            "types": {
                "db": { "sqlite": "data/app.db", "busy_timeout_s": 30 },
                "dbv": { "sqlite": "data/app.db", "vacuum": true, "busy_timeout_s": 30 }
            }
        }),
    );
    let stop = env.path().join("stop-writer");
    let mut writer = ChildGuard::python(SQLITE_WRITER, &[&db, &stop, &ACCOUNTS.to_string()]);
    assert_eq!(writer.read_line(), "ready");
    let runs: [(&str, &[&str], &str); 6] = [
        ("db", &[], "page-stream"),
        ("dbv", &[], "vacuum-into"),
        ("db", &[], "page-stream"),
        ("dbv", &["--no-vacuum"], "page-stream"),
        ("db", &[], "backup-api-fallback"),
        ("db", &[], "page-stream"),
    ];
    let mut seen = 0;
    let mut taken = Vec::new();
    let tmp = app.join("backups/repo/tmp");
    for (ty, extra, method) in runs {
        // The writer has committed since the previous snapshot and is still committing.
        seen = wait_for_commits(&db, seen);
        let mut args = vec!["backup", "--now", "--json", "--type", ty];
        args.extend_from_slice(extra);
        let mut c = env.cfg_cmd(&cfg, &args);
        c.env_remove("CAIRN_SQLITE_NO_STREAM");
        if method == "backup-api-fallback" {
            c.env("CAIRN_SQLITE_NO_STREAM", "1");
        }
        let watch = crate::sqlite_stream::DirWatch::start(tmp.clone());
        let r = env.run_cmd(c).ok();
        // Only the methods that copy write into tmp/ (which shows the watch sees them).
        let copies = watch.sqlite_copies();
        assert_eq!(copies.is_empty(), method == "page-stream", "{method}: {copies:?}");
        let rs = results(&r);
        assert_eq!(rs.len(), 1);
        // Committed before the backup started <= what the snapshot holds <= committed after it ended.
        taken.push((stored(&rs[0]), method, seen, commits_now(&db)));
    }
    std::fs::write(&stop, "").unwrap();
    let (status, out) = writer.finish();
    assert!(status.success());
    let total_commits: i64 = out.trim().parse().unwrap();
    assert!(total_commits >= 5, "writer committed {total_commits} transactions");

    let snaps = snapshots(&env, &cfg);
    let mut schema_hash = None;
    let mut prev_commits = -1;
    for (i, (id, method, before, after)) in taken.iter().enumerate() {
        let src = &snaps[id]["source"];
        assert_eq!(src["sqlite.method"], *method, "snapshot {i}");
        assert_eq!(src["sqlite.page_size"], page_size.to_string(), "snapshot {i}");
        assert_eq!(src["sqlite.rows.accounts"], ACCOUNTS.to_string());
        assert_eq!(src["sqlite.file"], "app.db");
        let h = src["sqlite.schema_hash"].as_str().unwrap().to_string();
        assert!(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()), "{h}");
        assert_eq!(schema_hash.get_or_insert_with(|| h.clone()), &h, "the schema never changed");
        if *method != "vacuum-into" {
            assert_eq!(src["sqlite.journal_mode"], if wal { "wal" } else { "delete" });
        }
        // Restore and check: intact, and the invariants of every transaction hold.
        let target = env.path().join(format!("restore{i}"));
        env.run_cfg(&cfg, &["restore", id, "--target", target.to_str().unwrap()]).ok();
        let c = rusqlite::Connection::open(target.join("app.db")).unwrap();
        let check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok", "snapshot {i}");
        let (n, total): (i64, i64) =
            c.query_row("SELECT count(*), sum(balance) FROM accounts", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((n, total), (ACCOUNTS, ACCOUNTS * START_BALANCE), "snapshot {i}: money was created or lost");
        let commits: i64 = c.query_row("SELECT commits FROM meta", [], |r| r.get(0)).unwrap();
        let ledger: i64 = c.query_row("SELECT count(*) FROM ledger", [], |r| r.get(0)).unwrap();
        assert_eq!(ledger, commits, "snapshot {i}: ledger and counter disagree");
        assert_eq!(src["sqlite.rows.ledger"], ledger.to_string(), "snapshot {i}: recorded row count");
        assert!(
            commits > prev_commits,
            "snapshot {i} ({commits} commits) is not newer than the one before ({prev_commits})"
        );
        assert!(
            commits >= *before && commits <= *after,
            "snapshot {i}: {commits} commits, not within [{before}, {after}]"
        );
        eprintln!(
            "snapshot {i} ({method}): {commits} of {total_commits} commits, copy {} ms",
            src["sqlite.copy_ms"].as_str().unwrap_or("?")
        );
        prev_commits = commits;
    }
    assert!(repo_tmp_leftovers(&app.join("backups/repo")).is_empty(), "temporary copies left behind");
}

#[test]
fn sqlite_wal_database_under_write_load() {
    sqlite_under_write_load(true);
}

#[test]
fn sqlite_rollback_journal_database_under_write_load() {
    sqlite_under_write_load(false);
}

/// Holds an exclusive lock on a rollback-journal database until the stop file appears.
const SQLITE_LOCKER: &str = r#"
import os, sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
c.execute("INSERT INTO t(v) VALUES ('uncommitted')")
print("locked", flush=True)
end = time.time() + 60
while not os.path.exists(sys.argv[2]) and time.time() < end:
    time.sleep(0.02)
c.execute("ROLLBACK")
"#;

#[test]
fn sqlite_failures_store_nothing_while_other_types_succeed() {
    let env = Env::new();
    let app = env.path().join("app");
    small_db(&app.join("data/locked.db"), 20);
    std::fs::write(app.join("data/notes.db"), "these are notes, not a database\n".repeat(20)).unwrap();
    std::fs::create_dir_all(app.join("data/dir.db")).unwrap();
    std::fs::write(app.join("notes.txt"), "keep me\n").unwrap();
    let cfg = write_config(
        &app,
        json!({
            "name": "obd", "repository": "backups/repo", "password_file": "cairn-password",
            "types": {
                "first": { "paths": ["notes.txt"] },
                "missing": { "sqlite": "data/missing.db" },
                "junk": { "sqlite": "data/notes.db" },
                "dir": { "sqlite": "data/dir.db" },
                "locked": { "sqlite": "data/locked.db", "busy_timeout_s": 1 },
                "last": { "command": ["sh", "-c", "printf done"] }
            }
        }),
    );
    let repo = app.join("backups/repo");
    let stop = env.path().join("unlock");
    let mut locker = ChildGuard::python(SQLITE_LOCKER, &[&app.join("data/locked.db"), &stop]);
    assert_eq!(locker.read_line(), "locked");

    let start = Instant::now();
    let r = env.run_cfg(&cfg, &["backup", "--now", "--json"]).code(1);
    let took = start.elapsed();
    let rs = results(&r);
    assert_eq!(rs.len(), 6);
    for ty in ["first", "last"] {
        stored(result(&rs, ty));
    }
    let err = |ty: &str| failure(result(&rs, ty));
    let e = err("missing");
    assert!(e.contains("missing.db") && e.contains("does not exist"), "{e}");
    let e = err("junk");
    assert!(e.contains("notes.db") && e.contains("not a SQLite database"), "{e}");
    let e = err("dir");
    assert!(e.contains("dir.db") && e.contains("not a regular file"), "{e}");
    let e = err("locked");
    assert!(e.contains("locked.db") && e.contains("busy (locked)") && e.contains("nothing stored"), "{e}");
    // A busy database is worth retrying; a missing or foreign file is not.
    let retries = result(&rs, "locked")["retries"].as_u64().unwrap();
    assert!(retries >= 1, "a busy database was not retried");
    assert_eq!(result(&rs, "missing")["retries"], 0);
    assert_eq!(result(&rs, "junk")["retries"], 0);
    let attempts = retries as u32 + 1;
    assert!(
        took >= Duration::from_secs(attempts.into()) && took < Duration::from_secs(10 * attempts as u64),
        "busy_timeout_s 1, {attempts} attempts, took {took:?}"
    );
    assert_eq!(snapshot_count(&repo), 2, "only the two good types are stored");
    assert!(repo_tmp_leftovers(&repo).is_empty(), "temporary copies left behind");
    // The human-readable run says which failed and how many.
    let r = env.run_cfg(&cfg, &["backup", "--now", "--type", "missing", "--type", "first"]).code(1);
    assert!(r.stdout.contains("missing: FAILED: ") && r.stdout.contains("first: snapshot "), "{}", r.stdout);
    assert!(r.stderr.contains("1 of 2 backup types failed"), "{}", r.stderr);

    // Once the lock is released the same type succeeds, without the other process's uncommitted row.
    std::fs::write(&stop, "").unwrap();
    assert!(locker.finish().0.success());
    let r = env.run_cfg(&cfg, &["backup", "--now", "--type", "locked", "--json"]).ok();
    let id = stored(&results(&r)[0]);
    assert_eq!(snapshots(&env, &cfg)[&id]["source"]["sqlite.rows.t"], "20");
}

// ---------------------------------------------------------------- PostgreSQL

/// The newest PostgreSQL server binaries (Debian: /usr/lib/postgresql/N/bin).
pub(crate) fn pg_bin() -> Option<PathBuf> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let n: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((n, bin))
        })
        .collect();
    v.sort();
    v.pop().map(|(_, b)| b)
}

/// A throwaway PostgreSQL server listening only on a Unix socket in its own temporary directory,
/// run as the `postgres` user (the server refuses root); stopped when dropped.
pub(crate) struct PgServer {
    _dir: tempfile::TempDir,
    pub(crate) bin: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) sock: PathBuf,
    pub(crate) port: u16,
}

fn as_postgres(dir: &Path, program: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("runuser")
}

impl PgServer {
    pub(crate) fn start() -> PgServer {
        let s = PgServer::init();
        s.launch();
        s
    }

    /// A server's data directory, not started yet ([`PgServer::launch`]).
    pub(crate) fn init() -> PgServer {
        PgServer::init_with(&[])
    }

    /// [`PgServer::init`] with more `initdb` options (`--wal-segsize=1`).
    pub(crate) fn init_with(initdb_args: &[&str]) -> PgServer {
        use std::os::unix::fs::PermissionsExt;
        ensure_package("postgresql", || pg_bin().is_some());
        let bin = pg_bin().expect("postgresql server binaries");
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let sock = dir.path().join("pg");
        std::fs::create_dir(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
        let data = sock.join("data");
        let port = 20000 + (std::process::id() % 20000) as u16;
        let out = as_postgres(
            &sock,
            &bin.join("initdb"),
            &[&["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"], initdb_args].concat(),
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        // Role `app` must give its password; everyone else is trusted (first match wins).
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("local all app scram-sha-256\n{old}")).unwrap();
        PgServer { _dir: dir, bin, data, sock, port }
    }

    pub(crate) fn launch(&self) {
        self.launch_with("");
    }

    /// A server on `data` (a restored data directory owned by `postgres`), on a socket directory
    /// and port of its own; not started yet.
    pub(crate) fn on_data(data: PathBuf, port: u16) -> PgServer {
        use std::os::unix::fs::PermissionsExt;
        let bin = pg_bin().expect("postgresql server binaries");
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let sock = dir.path().join("pg");
        std::fs::create_dir(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
        PgServer { _dir: dir, bin, data, sock, port }
    }

    /// [`PgServer::launch`] with more server options (`-c name=value ...`).
    pub(crate) fn launch_with(&self, extra: &str) {
        let (bin, data, sock, port) = (&self.bin, &self.data, &self.sock, self.port);
        let opts = format!("-k {} -p {port} -c listen_addresses='' -c fsync=off {extra}", sock.display());
        let log = sock.join("server.log");
        let out = as_postgres(
            sock,
            &bin.join("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-o", &opts, "-w", "start"],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// The directory of the server's Unix socket.
    pub(crate) fn sock(&self) -> &Path {
        &self.sock
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self, user: &str, db: &str) -> String {
        format!("postgresql://{user}@/{db}?host={}&port={}", self.sock.display(), self.port)
    }

    /// Runs SQL through psql as the superuser; returns unaligned, tuples-only output.
    pub(crate) fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.url("postgres", db), "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn stop(&self) {
        let out = as_postgres(
            &self.sock,
            &self.bin.join("pg_ctl"),
            &["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Whatever happened (a failed assertion included), do not leave a server running.
        let _ = as_postgres(
            &self.sock,
            &self.bin.join("pg_ctl"),
            &["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"],
        );
    }
}

fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// One server for every PostgreSQL case (starting one is the slow part).
#[test]
fn postgres_dumps_are_stored_and_failures_store_nothing() {
    let srv = PgServer::start();
    srv.psql("postgres", "CREATE DATABASE shop");
    srv.psql("postgres", "CREATE ROLE app LOGIN PASSWORD 'right-pw'");
    srv.psql(
        "shop",
        "CREATE TABLE items(id int PRIMARY KEY, name text NOT NULL, qty int NOT NULL);
         INSERT INTO items SELECT g, 'item-' || g || '-' || md5(g::text), g % 97 FROM generate_series(1, 80000) g;
         GRANT SELECT ON items TO app;",
    );
    let env = Env::new();
    let app = env.path().join("app");
    let cfg = write_config(
        &app,
        json!({
            "name": "obd", "repository": "backups/repo", "password_file": "cairn-password",
            "types": {
                "pg": { "postgres": srv.url("postgres", "shop"), "pg_format": "plain" },
                "pgapp": { "postgres": srv.url("app:right-pw", "shop"), "pg_format": "plain" },
                "badpw": { "postgres": srv.url("app:wrong-pw", "shop") },
                "nodb": { "postgres": srv.url("postgres", "nosuchdb") },
                "norole": { "postgres": srv.url("ghost", "shop") }
            }
        }),
    );
    let repo = app.join("backups/repo");

    // Stored, with the password left out of what is recorded.
    let r = env.run_cfg(&cfg, &["backup", "--now", "--json", "--type", "pg", "--type", "pgapp"]).ok();
    let rs = results(&r);
    stored(result(&rs, "pgapp"));
    stored(result(&rs, "pg"));
    let logical = result(&rs, "pg")["stats"]["logical_bytes"].as_u64().unwrap();
    assert!(logical > 4 << 20, "dump is {logical} bytes");
    let snaps = snapshots(&env, &cfg);
    let src = &snaps[result(&rs, "pgapp")["snapshot"].as_str().unwrap()]["source"];
    assert_eq!(src["postgres.format"], "plain");
    let target = src["postgres.target"].as_str().unwrap();
    assert!(target.starts_with("postgresql://app@/shop") && !target.contains("right-pw"), "{target}");
    assert!(!serde_json::to_string(&snaps).unwrap().contains("right-pw"), "the password was recorded");

    // Export: .sql.gz, and the real gunzip gives SQL with the table's rows.
    let out = env.path().join("export");
    let v = env.run_cfg(&cfg, &["export", "pg:latest", "--out", out.to_str().unwrap(), "--json"]).ok().json();
    let file = PathBuf::from(v[0]["file"].as_str().unwrap());
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("obd_backup_pg_") && name.ends_with(".sql.gz"), "{name}");
    let sql = Command::new("gunzip").arg("-c").arg(&file).output().unwrap();
    assert!(sql.status.success());
    // The snapshot also holds the server's globals (a few hundred bytes) beside the dump.
    assert!(logical - (sql.stdout.len() as u64) < 10_000, "{} of {logical}", sql.stdout.len());
    let sql = String::from_utf8(sql.stdout).unwrap();
    assert!(sql.contains("CREATE TABLE public.items ("), "no CREATE TABLE");
    let copy = sql.split("COPY public.items (id, name, qty) FROM stdin;\n").nth(1).expect("COPY block");
    let rows: Vec<&str> = copy.split("\n\\.\n").next().unwrap().lines().collect();
    assert_eq!(rows.len(), 80000);
    let md5 = srv.psql("shop", "SELECT md5('12345')");
    assert!(rows.contains(&format!("12345\titem-12345-{md5}\t26").as_str()));
    // ... and psql loads it into an empty database.
    let dump = env.path().join("dump.sql");
    std::fs::write(&dump, &sql).unwrap();
    srv.psql("postgres", "CREATE DATABASE restored");
    let out = Command::new(srv.bin.join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &srv.url("postgres", "restored"), "-f"])
        .arg(&dump)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "loading the dump: {}", String::from_utf8_lossy(&out.stderr));
    let q = "SELECT count(*) || ' ' || sum(qty) || ' ' || md5(string_agg(name, ',' ORDER BY id)) FROM items";
    assert_eq!(srv.psql("restored", q), srv.psql("shop", q));

    // A small change adds little: the dump is chunked for local edits.
    srv.psql("shop", "UPDATE items SET qty = qty + 1 WHERE id = 40000");
    let r = env.run_cfg(&cfg, &["backup", "--now", "--json", "--type", "pg"]).ok();
    let stats = &results(&r)[0]["stats"];
    let (logical2, added) = (stats["logical_bytes"].as_u64().unwrap(), stats["new_raw_bytes"].as_u64().unwrap());
    assert!(logical2 >= logical && logical2 < logical + 100);
    assert!(added < logical / 10, "one changed row added {added} of {logical2} bytes");
    eprintln!("pg_dump of {logical2} bytes, one row changed: {added} bytes new");
    let stored = snapshot_count(&repo);
    assert_eq!(stored, 3);

    // Bad credentials, unknown database, unknown role: a clear error and no snapshot.
    for (ty, what) in [
        ("badpw", "password authentication failed"),
        ("nodb", "\"nosuchdb\" does not exist"),
        ("norole", "\"ghost\" does not exist"),
    ] {
        let r = env.run_cfg(&cfg, &["backup", "--now", "--json", "--type", ty]).code(1);
        let e = failure(&results(&r)[0]);
        assert!(e.contains("pg_dump") && e.contains(what), "{ty}: {e}");
        assert!(!e.contains("wrong-pw") && !r.stderr.contains("wrong-pw"), "{ty}: password shown: {e}");
        assert_eq!(snapshot_count(&repo), stored, "{ty} stored a snapshot");
    }

    // pg_dump failing after writing its whole dump, or killed half-way: nothing stored.
    let pg_dump = srv.bin.join("pg_dump");
    let exits = env.path().join("pg_dump_exits");
    write_script(&exits, &format!("#!/bin/sh\n\"{}\" \"$@\"\nexit 1\n", pg_dump.display()));
    let killed = env.path().join("pg_dump_killed");
    write_script(&killed, &format!("#!/bin/sh\n\"{}\" \"$@\" | head -c 1000000\nkill -9 $$\n", pg_dump.display()));
    for (wrapper, what) in [(&exits, "exited with status 1"), (&killed, "killed by a signal")] {
        let mut c = env.cfg_cmd(&cfg, &["backup", "--now", "--json", "--type", "pg"]);
        c.env("CAIRN_PG_DUMP", wrapper);
        let r = env.run_cmd(c).code(1);
        let e = failure(&results(&r)[0]);
        assert!(e.contains(what), "{}: {e}", wrapper.display());
        assert_eq!(snapshot_count(&repo), stored, "{} stored a snapshot", wrapper.display());
    }
    // What the aborted runs left is unreferenced at most: the repository checks clean.
    env.run_cfg(&cfg, &["verify", "--read-data"]).ok();

    // The server gone: a clear error, nothing stored.
    srv.stop();
    let r = env.run_cfg(&cfg, &["backup", "--now", "--json", "--type", "pg"]).code(1);
    let e = failure(&results(&r)[0]);
    assert!(e.contains("pg_dump") && e.contains("connection to server"), "{e}");
    assert_eq!(snapshot_count(&repo), stored);
}

// ---------------------------------------------------------------- files

/// Appends numbered lines to a log until the stop file appears; prints "ready" after the first.
const LOG_WRITER: &str = r#"
import os, sys, time
path, stop = sys.argv[1], sys.argv[2]
i = 0
with open(path, "a") as f:
    while not os.path.exists(stop):
        f.write("2026-01-01T12:00:00 INFO writer line %d: request handled in %d ms\n" % (i, i % 977))
        f.flush()
        if i == 0:
            print("ready", flush=True)
        i += 1
        if i % 20 == 0:
            time.sleep(0.001)
print(i, flush=True)
"#;

fn text_lines(n: usize, tag: &str) -> String {
    (0..n)
        .map(|i| format!("2026-01-01T00:00:00 INFO {tag} {i}: user={} path=/api/items/{}\n", i % 313, i * 7 % 10007))
        .collect()
}

#[test]
fn growing_log_is_stored_as_a_prefix_and_rotated_logs_byte_identical() {
    ensure_package("gzip", || have_program("gzip"));
    let env = Env::new();
    let app = env.path().join("app");
    let logs = app.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("app.log");
    std::fs::write(&log, text_lines(80_000, "boot")).unwrap();
    let initial = std::fs::metadata(&log).unwrap().len();
    std::fs::write(logs.join("app.log.1"), text_lines(5_000, "old")).unwrap();
    assert!(Command::new("gzip").arg("-9").arg(logs.join("app.log.1")).status().unwrap().success());
    let gz = std::fs::read(logs.join("app.log.1.gz")).unwrap();
    std::fs::write(logs.join("scratch.tmp"), "excluded\n").unwrap();
    let cfg = write_config(
        &app,
        json!({
            "name": "obd", "repository": "backups/repo", "password_file": "cairn-password",
            "types": { "logs": { "paths": ["logs"], "exclude": ["*.tmp"] } }
        }),
    );
    let stop = env.path().join("stop-writer");
    let mut writer = ChildGuard::python(LOG_WRITER, &[&log, &stop]);
    assert_eq!(writer.read_line(), "ready");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = env.run_cfg(&cfg, &["backup", "--now", "--json", "--type", "logs"]).ok();
        ids.push(stored(&results(&r)[0]));
    }
    std::fs::write(&stop, "").unwrap();
    let (status, lines) = writer.finish();
    assert!(status.success());
    let final_log = std::fs::read(&log).unwrap();
    assert!(lines.trim().parse::<u64>().unwrap() > 0);
    let mut sizes = Vec::new();
    for id in &ids {
        let stored = env.run_cfg_raw(&cfg, &["cat", id, "logs/app.log"]);
        assert_eq!(stored.code, 0, "{}", stored.stderr);
        let stored = stored.stdout;
        assert!(stored.len() as u64 > initial, "the writer's lines before the backup are in it");
        assert!(
            final_log.starts_with(&stored),
            "snapshot {id}: stored log ({} bytes) is not a prefix of the final one",
            stored.len()
        );
        let ls = env.run_cfg(&cfg, &["ls", id, "--json"]).ok().json();
        let nodes = ls["nodes"].as_array().unwrap();
        let node = nodes.iter().find(|n| n["path"] == "logs/app.log").unwrap();
        assert_eq!(node["size"], stored.len() as u64, "recorded size");
        assert!(!nodes.iter().any(|n| n["path"] == "logs/scratch.tmp"), "excluded file stored");
        let rotated = env.run_cfg_raw(&cfg, &["cat", id, "logs/app.log.1.gz"]);
        assert!(rotated.code == 0 && rotated.stdout == gz, "rotated log not byte-identical");
        sizes.push(stored.len());
    }
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    assert!(sizes[2] > sizes[0], "the log grew between snapshots: {sizes:?}");
}

/// Overwrites one byte of a file in place, every millisecond, until the stop file appears.
const REWRITER: &str = r#"
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
size = os.fstat(fd).st_size
print("ready", flush=True)
i = 0
while not os.path.exists(sys.argv[2]):
    os.pwrite(fd, b"x", (i * 7919) % size)
    i += 1
    time.sleep(0.001)
os.close(fd)
"#;

#[test]
fn file_rewritten_while_read_is_read_again_then_reported() {
    let env = Env::new();
    let app = env.path().join("app");
    std::fs::create_dir_all(app.join("hot")).unwrap();
    let hot = app.join("hot/state.log");
    // Big enough that one read spans several timestamp ticks (mtime granularity is a few ms), so
    // every attempt sees the rewriter's changes.
    std::fs::write(&hot, text_lines(1_000_000, "state")).unwrap();
    std::fs::write(app.join("hot/calm.log"), "calm\n").unwrap();
    let cfg = write_config(
        &app,
        json!({ "name": "obd", "repository": "backups/repo", "password_file": "cairn-password", "types": { "hot": { "paths": ["hot"] } } }),
    );
    let stop = env.path().join("stop");
    let mut w = ChildGuard::python(REWRITER, &[&hot, &stop]);
    assert_eq!(w.read_line(), "ready");
    let r = env.run_cfg(&cfg, &["backup", "--now", "--json"]).code(5);
    let res = results(&r)[0].clone();
    assert_eq!(res["result"], "partial", "{res:#}");
    let errors = res["file_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{res:#}");
    assert_eq!(errors[0]["path"], "hot/state.log");
    let msg = errors[0]["message"].as_str().unwrap();
    assert!(msg.contains("rewritten while being read on 3 attempts") && msg.contains("not stored"), "{msg}");
    // The snapshot holds what could be read consistently, and not the torn file.
    let id = res["snapshot"].as_str().unwrap();
    assert_eq!(env.run_cfg_raw(&cfg, &["cat", id, "hot/calm.log"]).stdout, b"calm\n");
    assert_eq!(env.run_cfg_raw(&cfg, &["cat", id, "hot/state.log"]).code, 1);
    std::fs::write(&stop, "").unwrap();
    assert!(w.finish().0.success());
    // Once it holds still, it is stored.
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    assert_eq!(env.run_cfg_raw(&cfg, &["cat", "hot:latest", "hot/state.log"]).stdout, std::fs::read(&hot).unwrap());
}

#[test]
fn on_change_config_type_stores_only_changes() {
    let env = Env::new();
    let (app, cfg) = example_app(env.path());
    let repo = app.join("backups/repo");
    let r = env.run_cfg(&cfg, &["backup", "--now", "--type", "config"]).ok();
    assert!(r.stdout.contains("config: snapshot "), "{}", r.stdout);
    assert_eq!(snapshot_count(&repo), 1);
    let first = snapshots(&env, &cfg).into_keys().next().unwrap();
    let r = env.run_cfg(&cfg, &["backup", "--now", "--type", "config"]).ok();
    assert!(
        r.stdout.contains("config: unchanged since snapshot ") && r.stdout.contains("nothing stored"),
        "{}",
        r.stdout
    );
    assert_eq!(snapshot_count(&repo), 1);
    // Touching the files changes nothing that counts.
    let later = filetime::FileTime::from_unix_time(2_000_000_000, 0);
    filetime::set_file_mtime(&cfg, later).unwrap();
    let r = env.run_cfg(&cfg, &["backup", "--now", "--type", "config", "--json"]).ok();
    let rs = results(&r);
    assert_eq!((&rs[0]["result"], &rs[0]["snapshot"]), (&json!("unchanged"), &json!(first)), "{rs:#?}");
    assert_eq!(snapshot_count(&repo), 1);
    // An edit is a new snapshot.
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"poll_interval_s\": 5", "\"poll_interval_s\": 10");
    std::fs::write(&cfg, &text).unwrap();
    let r = env.run_cfg(&cfg, &["backup", "--now", "--type", "config", "--json"]).ok();
    stored(&results(&r)[0]);
    assert_eq!(snapshot_count(&repo), 2);
    assert_eq!(env.run_cfg_raw(&cfg, &["cat", "config:latest", "config.json"]).stdout, text.as_bytes());
    std::fs::write(app.join(".env"), "SECRET=rotated\n").unwrap();
    let r = env.run_cfg(&cfg, &["backup", "--now", "--type", "config"]).ok();
    assert!(r.stdout.contains("config: snapshot "), "{}", r.stdout);
    assert_eq!(snapshot_count(&repo), 3);
}

#[test]
fn command_output_is_stored_and_a_failing_command_stores_nothing() {
    let env = Env::new();
    let app = env.path().join("app");
    let cfg = write_config(
        &app,
        json!({
            "name": "obd", "repository": "backups/repo", "password_file": "cairn-password",
            "types": {
                "hello": { "command": ["sh", "-c", "printf hello"], "command_name": "hello.txt" },
                "plain": { "command": ["sh", "-c", "printf 'a\\nb\\n'"] },
                "fails": { "command": ["sh", "-c", "echo partial; echo dump tool broke >&2; exit 3"] },
                "absent": { "command": ["/nonexistent/dump-tool", "--stdout"] }
            }
        }),
    );
    let repo = app.join("backups/repo");
    env.run_cfg(&cfg, &["backup", "--now", "--type", "hello", "--type", "plain"]).ok();
    assert_eq!(env.run_cfg_raw(&cfg, &["cat", "hello:latest", "hello.txt"]).stdout, b"hello");
    assert_eq!(env.run_cfg_raw(&cfg, &["cat", "plain:latest", "plain.out"]).stdout, b"a\nb\n");
    assert_eq!(snapshot_count(&repo), 2);
    let r = env.run_cfg(&cfg, &["backup", "--now", "--json", "--type", "fails"]).code(1);
    let e = failure(&results(&r)[0]);
    assert!(e.contains("exited with status 3") && e.contains("dump tool broke"), "{e}");
    let r = env.run_cfg(&cfg, &["backup", "--now", "--type", "absent"]).code(1);
    assert!(r.stdout.contains("absent: FAILED: cannot run /nonexistent/dump-tool"), "{}", r.stdout);
    assert_eq!(snapshot_count(&repo), 2, "a failed command must store nothing");
    let r = env.run_cfg(&cfg, &["snapshots", "--json"]).ok();
    assert!(r.json().as_array().unwrap().iter().all(|s| s["type"] != "fails"));
}

/// `verify --restore-test` restores the latest database snapshot and checks it against what the
/// backup recorded; damage inside the database's chunks, which a structure-only verify does not
/// read, fails it with exit 3.
#[test]
fn verify_restore_test_checks_the_database() {
    let env = Env::new();
    let (app, cfg) = example_app(env.path());
    env.run_cfg(&cfg, &["backup", "--now", "--type", "db"]).ok();
    let r = env.run_cfg(&cfg, &["verify", "--restore-test", "--json"]).ok().json();
    let tests = r["restore_tests"].as_array().unwrap();
    assert_eq!(tests.len(), 1, "{r}");
    assert_eq!(tests[0]["backup_type"], "db");
    assert_eq!(tests[0]["ok"], true, "{r}");
    let rows: u64 =
        tests[0]["detail"].as_str().unwrap().split_whitespace().filter_map(|w| w.parse().ok()).next().unwrap();
    assert!(rows >= 5000, "{r}");
    // Damage one chunk of the database's only pack, in the middle of its chunk area.
    let packs: Vec<PathBuf> = walk(&app.join("backups/repo/packs")).into_iter().filter(|p| p.is_file()).collect();
    assert_eq!(packs.len(), 1, "{packs:?}");
    let size = std::fs::metadata(&packs[0]).unwrap().len();
    flip_byte(&packs[0], size / 3);
    env.run_cfg(&cfg, &["verify"]).ok();
    let bad = env.run_cfg(&cfg, &["verify", "--restore-test"]).code(3);
    assert!(bad.stdout.contains("restore test db snapshot") && bad.stdout.contains("FAILED"), "{}", bad.stdout);
}
