//! SQLite captured by streaming the pages of one read transaction, through the real binary: no
//! temporary copy is written, the backup-API fallback is recorded and stores the same pages (an
//! unchanged database adds almost nothing between the two), and a damaged database is reported
//! with its path while nothing is committed. Capture under a concurrent writer (WAL and rollback
//! journal) is in `sources.rs`, the walked tree in `live_files.rs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::util::*;

/// Records the names of the files that appear in a directory while a command runs (polled every
/// millisecond: a temporary database copy lives for the whole snapshot, far longer).
pub(crate) struct DirWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<BTreeSet<String>>>,
}

impl DirWatch {
    pub(crate) fn start(dir: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !s.load(Ordering::Relaxed) {
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    seen.extend(rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()));
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            seen
        });
        DirWatch { stop, thread: Some(thread) }
    }

    /// The SQLite copies seen (`sqlite-*`, what the backup API and VACUUM INTO write).
    pub(crate) fn sqlite_copies(mut self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.thread.take().unwrap().join().unwrap();
        seen.into_iter().filter(|n| n.starts_with("sqlite-")).collect()
    }
}

/// A 2 MiB rollback-journal database of `rows` rows in table `t`.
fn make_db(path: &Path, rows: i64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL); CREATE INDEX t_v ON t(v);").unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute("INSERT INTO t(v) VALUES (?1)", [format!("row {i:08} ").repeat(8)]).unwrap();
    }
    tx.commit().unwrap();
}

fn rows_and_check(db: &Path) -> (i64, String) {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let n = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    let check = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    (n, check)
}

fn snapshot_json(env: &Env, cfg: &Path, id: &str) -> Value {
    let all = env.run_cfg(cfg, &["snapshots", "--json"]).ok().json();
    all.as_array().unwrap().iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no snapshot {id}")).clone()
}

/// Runs `backup --now --type db` (with `CAIRN_SQLITE_NO_STREAM` when `no_stream`) while watching
/// the repository's tmp/; returns the snapshot and the copies seen there.
fn backup(env: &Env, cfg: &Path, repo: &Path, no_stream: bool) -> (Value, BTreeSet<String>) {
    let mut c = env.cfg_cmd(cfg, &["backup", "--now", "--json", "--type", "db"]);
    if no_stream {
        c.env("CAIRN_SQLITE_NO_STREAM", "1");
    } else {
        c.env_remove("CAIRN_SQLITE_NO_STREAM");
    }
    let watch = DirWatch::start(repo.join("tmp"));
    let r = env.run_cmd(c).ok();
    let copies = watch.sqlite_copies();
    let res = r.json()["ran"][0].clone();
    assert_eq!((&res["result"], res["file_errors"].as_array().map(Vec::len)), (&json!("success"), Some(0)), "{res:#}");
    (snapshot_json(env, cfg, res["snapshot"].as_str().unwrap()), copies)
}

#[test]
fn stream_after_a_backup_api_copy_adds_almost_nothing_and_restores_the_same_database() {
    let env = Env::new();
    let app = env.path().join("app");
    let db = app.join("data/app.db");
    make_db(&db, 12_000);
    let pages = std::fs::metadata(&db).unwrap().len() / 4096;
    assert!(pages > 400, "{pages} pages");
    let cfg = write_config(
        &app,
        json!({ "name": "s", "repository": "backups/repo", "password_file": "cairn-password",
                "types": { "db": { "sqlite": "data/app.db" } } }),
    );
    let repo = app.join("backups/repo");
    // The old way (what every run did before streaming), forced as the fallback is.
    let (old, copies) = backup(&env, &cfg, &repo, true);
    assert_eq!(old["source"]["sqlite.method"], "backup-api-fallback");
    assert!(old["source"]["sqlite.fallback"].as_str().unwrap().contains("CAIRN_SQLITE_NO_STREAM"), "{old:#}");
    assert!(!copies.is_empty(), "the fallback copies into tmp/ (and the watch sees it)");
    // The new way: no file in tmp/ at any time, and only page 1 (the backup API rewrites its
    // change counter and schema cookie) and the tree are new.
    let (new, copies) = backup(&env, &cfg, &repo, false);
    assert_eq!(new["source"]["sqlite.method"], "page-stream");
    assert!(copies.is_empty(), "streaming wrote {copies:?} into tmp/");
    for key in ["sqlite.page_size", "sqlite.journal_mode", "sqlite.schema_hash", "sqlite.rows.t", "sqlite.file"] {
        assert_eq!(new["source"][key], old["source"][key], "{key}");
    }
    assert_eq!(new["source"]["sqlite.rows.t"], "12000");
    let stats = &new["stats"];
    // New: page 1 and the tree chunk (which lists the ~700 page ids, 32 bytes each).
    assert!(stats["new_chunks"].as_u64().unwrap() <= 3, "{stats:#}");
    let tree_and_page = 4096 + (pages + 1) * 40 + 4096;
    assert!(stats["new_raw_bytes"].as_u64().unwrap() < tree_and_page, "{stats:#} vs {:#}", old["stats"]);
    assert!(old["stats"]["new_raw_bytes"].as_u64().unwrap() > pages * 4096, "{:#}", old["stats"]);

    // Both restore to the same, intact database; their bytes differ only in page 1's header.
    let mut files = Vec::new();
    for (i, s) in [&old, &new].into_iter().enumerate() {
        let target = env.path().join(format!("restore{i}"));
        env.run_cfg(&cfg, &["restore", s["id"].as_str().unwrap(), "--target", target.to_str().unwrap()]).ok();
        let restored = target.join("app.db");
        let bytes = std::fs::read(&restored).unwrap();
        assert_eq!(rows_and_check(&restored), (12_000, "ok".to_string()), "restore {i}");
        files.push(bytes);
    }
    assert_eq!(files[0].len(), files[1].len());
    assert_eq!(files[1], std::fs::read(&db).unwrap(), "an idle database streams as its own file");
    let differing: Vec<usize> = (0..files[0].len()).filter(|&i| files[0][i] != files[1][i]).collect();
    assert!(differing.iter().all(|&i| i < 100), "bytes outside page 1's header differ: {differing:?}");
}

/// A database whose table pages are overwritten with garbage past its header: SQLite opens it,
/// `quick_check` fails.
fn damage(db: &Path) {
    let mut bytes = std::fs::read(db).unwrap();
    let n = bytes.len();
    let garbage = prng_bytes(3, n / 2);
    bytes[n / 4..n / 4 + garbage.len()].copy_from_slice(&garbage);
    std::fs::write(db, bytes).unwrap();
}

#[test]
fn damaged_database_is_reported_with_its_path_and_nothing_committed() {
    let env = Env::new();
    let app = env.path().join("app");
    make_db(&app.join("data/bad.db"), 4000);
    damage(&app.join("data/bad.db"));
    std::fs::write(app.join("data/ok.txt"), "fine\n").unwrap();
    let cfg = write_config(
        &app,
        json!({ "name": "s", "repository": "backups/repo", "password_file": "cairn-password",
                "types": { "db": { "sqlite": "data/bad.db" }, "tree": { "paths": ["data"] } } }),
    );
    let repo = app.join("backups/repo");
    let r = env.run_cfg(&cfg, &["backup", "--now", "--json", "--type", "db"]).code(1);
    assert_no_panic(&r);
    let res = &r.json()["ran"][0];
    assert_eq!(res["result"], "failed", "{res:#}");
    let e = res["error"].as_str().unwrap();
    assert!(e.contains("data/bad.db") && (e.contains("quick_check") || e.contains("malformed")), "{e}");
    assert_eq!(snapshot_count(&repo), 0, "a damaged database must not become a snapshot");

    // Met in a walked tree: reported under its path, never stored (not even raw), the rest is.
    let r = env.run_cfg(&cfg, &["backup", "--now", "--json", "--type", "tree"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_no_panic(&r);
    assert!(r.stderr.contains("bad.db") && r.stderr.contains("could not be read consistently"), "{}", r.stderr);
    let res = &r.json()["ran"][0];
    let id = res["snapshot"].as_str().unwrap_or_else(|| panic!("{res:#}"));
    let snap = snapshot_json(&env, &cfg, id);
    let errors = snap["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{snap:#}");
    assert_eq!(errors[0]["path"], "data/bad.db");
    assert_ne!(env.run_cfg_raw(&cfg, &["cat", id, "data/bad.db"]).code, 0);
    assert_eq!(env.run_cfg_raw(&cfg, &["cat", id, "data/ok.txt"]).stdout, b"fine\n");
    assert!(repo_files(&repo, "tmp").is_empty(), "temporary files left behind");
}
