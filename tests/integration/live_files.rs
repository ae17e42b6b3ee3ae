//! Files an application is writing while they are snapshotted, through the real binary: a live
//! WAL database met by `snapshot PATH` and by a `paths` type (stored as the pages of one read
//! transaction, its -wal and -shm left out), a database that cannot be copied (reported, never stored raw), and
//! same-size rewrites that a plain size/mtime check misses (reported, never stored torn).

use std::path::Path;

use serde_json::{json, Value};

use crate::util::*;

/// Keeps a WAL database open with automatic checkpoints off: the table is checkpointed into the
/// database file empty, then 3,000 rows are committed into the -wal only. On "more" it commits
/// 500 more rows (still in the -wal) and prints "more".
const WAL_WRITER: &str = r#"
import os, sqlite3, sys, time
db, ctl = sys.argv[1], sys.argv[2]
c = sqlite3.connect(db, isolation_level=None)
assert c.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("PRAGMA synchronous=NORMAL")
c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
def rows(start, n):
    for b in range(start, start + n, 100):
        c.execute("BEGIN")
        for i in range(b, b + 100):
            c.execute("INSERT INTO t(v) VALUES (?)", ("row %06d " % i * 4,))
        c.execute("COMMIT")
rows(0, 3000)
print("ready", flush=True)
end = time.time() + 120
while not os.path.exists(ctl + ".more") and time.time() < end:
    time.sleep(0.01)
rows(3000, 500)
print("more", flush=True)
while not os.path.exists(ctl + ".stop") and time.time() < end:
    time.sleep(0.01)
"#;

/// Rows in table `t` of a database (opened read-only), and its integrity check.
fn rows_and_check(db: &Path) -> (i64, String) {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let n = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    let check = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    (n, check)
}

/// The database file alone (without its -wal), as a raw read sees it: its row count.
fn rows_in_file_alone(env: &Env, db: &Path) -> i64 {
    let alone = env.path().join("alone/app.db");
    std::fs::create_dir_all(alone.parent().unwrap()).unwrap();
    std::fs::copy(db, &alone).unwrap();
    let n = rows_and_check(&alone).0;
    std::fs::remove_dir_all(alone.parent().unwrap()).unwrap();
    n
}

fn source_facts(env: &Env, cfg: Option<&Path>, id: &str) -> Value {
    let r = match cfg {
        Some(c) => env.run_cfg(c, &["snapshots", "--json"]),
        None => env.run(&["--json", "snapshots"]),
    }
    .ok();
    let all = r.json();
    let s = all.as_array().unwrap().iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no snapshot {id}"));
    s["source"].clone()
}

#[test]
fn live_wal_database_is_copied_consistently_by_snapshot_and_by_a_paths_type() {
    let env = Env::new();
    env.init();
    let data = env.path().join("app/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("notes.txt"), "keep me\n").unwrap();
    let db = data.join("app.db");
    let ctl = env.path().join("writer");
    let mut writer = ChildGuard::python(WAL_WRITER, &[&db, &ctl]);
    assert_eq!(writer.read_line(), "ready");
    // The setting the issue describes: every row is still in the -wal, none in the file itself.
    assert!(std::fs::metadata(data.join("app.db-wal")).unwrap().len() > 0);
    assert_eq!(rows_in_file_alone(&env, &db), 0);

    // `snapshot --type db data/app.db`, README's pre-change example.
    let dbp = db.to_str().unwrap();
    let r = env.run(&["--json", "snapshot", "--type", "db", "--kind", "pre-change", dbp]).ok();
    let id1 = r.json()["id"].as_str().unwrap().to_string();
    // A `paths` type holding the application's data directory.
    let app = env.path().join("app");
    let cfg = write_config(
        &app,
        json!({ "name": "live", "repository": "backups/repo", "password_file": "cairn-password",
                "types": { "files": { "paths": ["data"] } } }),
    );
    // Streamed: nothing is written into the repository's tmp/ meanwhile.
    let watch = crate::sqlite_stream::DirWatch::start(app.join("backups/repo/tmp"));
    let r = env.run_cfg(&cfg, &["backup", "--now", "--json"]).ok();
    assert!(watch.sqlite_copies().is_empty());
    let res = r.json()["ran"][0].clone();
    assert_eq!((&res["result"], res["file_errors"].as_array().map(Vec::len)), (&json!("success"), Some(0)), "{res:#}");
    let id2 = res["snapshot"].as_str().unwrap().to_string();

    // The writer commits 500 more rows, again only into the -wal: the database file's size,
    // mtime and ctime stay as they were, and the next snapshots must not reuse the old copy.
    std::fs::write(ctl.with_extension("more"), "").unwrap();
    assert_eq!(writer.read_line(), "more");
    assert_eq!(rows_in_file_alone(&env, &db), 0);
    let r = env.run(&["--json", "snapshot", "--type", "db", dbp]).ok();
    let id3 = r.json()["id"].as_str().unwrap().to_string();
    let r = env.run_cfg(&cfg, &["backup", "--now", "--json"]).ok();
    let id4 = r.json()["ran"][0]["snapshot"].as_str().unwrap().to_string();

    let runs: [(&str, Option<&Path>, &str, i64); 4] = [
        (&id1, None, "app.db", 3000),
        (&id2, Some(&cfg), "data/app.db", 3000),
        (&id3, None, "app.db", 3500),
        (&id4, Some(&cfg), "data/app.db", 3500),
    ];
    for (i, (id, cfg, path, want)) in runs.into_iter().enumerate() {
        let target = env.path().join(format!("restore{i}"));
        let t = target.to_str().unwrap();
        match cfg {
            Some(c) => env.run_cfg(c, &["restore", id, "--target", t]).ok(),
            None => env.run(&["restore", id, "--target", t]).ok(),
        };
        // No -wal, -shm or -journal was stored beside the database (looked at before SQLite
        // opens the restored file and makes its own).
        let names: Vec<String> =
            walk(&target).iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect();
        assert!(!names.iter().any(|n| n.starts_with("app.db-")), "snapshot {i} stored sidecars: {names:?}");
        // The rows are in the copy.
        let restored = target.join(path);
        assert_eq!(rows_and_check(&restored), (want, "ok".to_string()), "snapshot {i} ({path})");
        let facts = source_facts(&env, cfg, id);
        let fact = facts[format!("sqlite.copy.{path}")].as_str().unwrap_or_else(|| panic!("{facts:#}")).to_string();
        assert!(fact.starts_with("page stream (one read transaction), quick_check ok"), "{fact}");
        assert!(fact.contains("journal mode wal"), "{fact}");
        assert!(fact.contains("app.db-wal (") && fact.contains("in what was read, not stored"), "{fact}");
        assert_eq!(facts["sqlite.copies"], "1");
        if cfg.is_some() {
            assert_eq!(std::fs::read(target.join("data/notes.txt")).unwrap(), b"keep me\n");
        }
    }
    // The writer kept its database open throughout, and the copies are gone from tmp/.
    assert!(std::fs::metadata(data.join("app.db-wal")).unwrap().len() > 0);
    std::fs::write(ctl.with_extension("stop"), "").unwrap();
    assert!(writer.finish().0.success());
    for repo in [env.repo(), app.join("backups/repo")] {
        assert!(repo_files(&repo, "tmp").is_empty(), "temporary copies left in {}", repo.display());
    }
}

#[test]
fn database_that_cannot_be_copied_is_reported_not_stored_raw() {
    let env = Env::new();
    env.init();
    let data = env.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The SQLite header string, then bytes that are no database: SQLite refuses to read it.
    let mut broken = b"SQLite format 3\0".to_vec();
    broken.extend(prng_bytes(7, 8192 - 16));
    std::fs::write(data.join("broken.db"), &broken).unwrap();
    std::fs::write(data.join("broken.db-journal"), prng_bytes(8, 512)).unwrap();
    std::fs::write(data.join("ok.txt"), "fine\n").unwrap();

    for (ty, arg) in [("dir", data.clone()), ("one", data.join("broken.db"))] {
        let r = env.run(&["--json", "snapshot", "--type", ty, arg.to_str().unwrap()]);
        assert_ne!(r.code, 0, "a database stored raw or not at all is not a success\n{}", r.stderr);
        assert_no_panic(&r);
        assert!(r.stderr.contains("broken.db") && r.stderr.contains("could not be read consistently"), "{}", r.stderr);
        let snap = r.json();
        let errors = snap["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{snap:#}");
        let path = if ty == "dir" { "data/broken.db" } else { "broken.db" };
        assert_eq!(errors[0]["path"], path);
        let id = snap["id"].as_str().unwrap();
        // Not stored at all: neither the raw database nor its journal.
        assert_ne!(env.run_raw(&["cat", id, path]).code, 0);
        if ty == "dir" {
            assert_ne!(env.run_raw(&["cat", id, "data/broken.db-journal"]).code, 0);
            assert_eq!(env.run_raw(&["cat", id, "data/ok.txt"]).stdout, b"fine\n");
        }
    }
    assert!(repo_files(&env.repo(), "tmp").is_empty(), "temporary copies left behind");
}

/// Rewrites blocks of a file in place and puts its mtime back after every write, as a tool that
/// preserves timestamps does: size, mtime and inode never change, only ctime does.
const MTIME_KEEPER: &str = r#"
import os, sys, time
path, stop = sys.argv[1], sys.argv[2]
st = os.stat(path)
fd = os.open(path, os.O_WRONLY)
size, i = st.st_size, 0
print("ready", flush=True)
end = time.time() + 120
while not os.path.exists(stop) and time.time() < end:
    os.pwrite(fd, (b"%08d" % i) * 512, (i * 4096 * 7919) % (size - 4096))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    i += 1
    time.sleep(0.001)
os.close(fd)
"#;

#[test]
fn rewrite_that_keeps_size_and_mtime_is_reported_not_stored() {
    let env = Env::new();
    env.init();
    let hot = env.path().join("hot");
    std::fs::create_dir_all(&hot).unwrap();
    let state = hot.join("state.bin");
    // Big enough that one read spans many timestamp ticks.
    std::fs::write(&state, prng_bytes(3, 24 << 20)).unwrap();
    std::fs::write(hot.join("calm.txt"), "calm\n").unwrap();
    let stop = env.path().join("stop");
    let mut w = ChildGuard::python(MTIME_KEEPER, &[&state, &stop]);
    assert_eq!(w.read_line(), "ready");
    let r = env.run(&["--json", "snapshot", "--type", "hot", hot.to_str().unwrap()]);
    std::fs::write(&stop, "").unwrap();
    assert!(w.finish().0.success());
    assert_ne!(r.code, 0, "a file rewritten while read was stored as ok\n{}", r.stderr);
    let snap = r.json();
    let errors = snap["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{snap:#}");
    assert_eq!(errors[0]["path"], "hot/state.bin");
    let msg = errors[0]["message"].as_str().unwrap();
    assert!(msg.contains("rewritten while being read") && msg.contains("not stored"), "{msg}");
    let id = snap["id"].as_str().unwrap();
    assert_ne!(env.run_raw(&["cat", id, "hot/state.bin"]).code, 0);
    assert_eq!(env.run_raw(&["cat", id, "hot/calm.txt"]).stdout, b"calm\n");
    // Once it holds still, it is stored whole.
    env.run(&["snapshot", "--type", "hot", hot.to_str().unwrap()]).ok();
    assert_eq!(env.run_raw(&["cat", "latest", "hot/state.bin"]).stdout, std::fs::read(&state).unwrap());
}

/// Writes through a shared mapping, as memory-mapped stores do: once a page is dirty, further
/// stores to it move neither mtime nor ctime (the kernel stamps the file when the page is first
/// made writable, not on every store). Each step stores version n in the last word of the file,
/// then in the first: at any moment the file holds head == tail or head + 1 == tail, while a read
/// that spans stores sees a head far older than its tail. The file is touched every 0.5 s so it
/// counts as recently changed.
const MMAP_WRITER: &str = r#"
import mmap, os, struct, sys, time
stop, paths = sys.argv[1], sys.argv[2:]
maps = []
for p in paths:
    fd = os.open(p, os.O_RDWR)
    maps.append(mmap.mmap(fd, 0))
    os.close(fd)
size = len(maps[0])
def store(n):
    for m in maps:
        struct.pack_into("<Q", m, size - 8, n)
        struct.pack_into("<Q", m, 0, n)
n = 1
store(n)
print("ready", flush=True)
end, touched = time.time() + 120, 0.0
while True:
    for _ in range(2048):
        n += 1
        store(n)
    now = time.time()
    if os.path.exists(stop) or now > end:
        break
    if now - touched > 0.5:
        for p in paths:
            os.utime(p)
        touched = now
"#;

#[test]
fn stores_that_move_no_timestamp_are_caught_by_a_second_read() {
    let env = Env::new();
    env.init();
    let hot = env.path().join("hot");
    std::fs::create_dir_all(&hot).unwrap();
    let size = 4 << 20;
    let files: Vec<_> = (0..2).map(|i| hot.join(format!("m{i}.bin"))).collect();
    for f in &files {
        std::fs::write(f, vec![0u8; size]).unwrap();
    }
    let stop = env.path().join("stop");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&stop];
    for f in &files {
        args.push(f);
    }
    let mut w = ChildGuard::python(MMAP_WRITER, &args);
    assert_eq!(w.read_line(), "ready");
    let (mut stored, mut reported) = (0, 0);
    for round in 0..3 {
        let r = env.run(&["--json", "snapshot", "--type", "hot", "--force-read", hot.to_str().unwrap()]);
        assert_no_panic(&r);
        let snap = r.json();
        let errors = snap["errors"].as_array().unwrap();
        assert_eq!(r.code != 0, !errors.is_empty(), "exit {} with errors {errors:?}", r.code);
        let id = snap["id"].as_str().unwrap();
        for i in 0..files.len() {
            let p = format!("hot/m{i}.bin");
            if let Some(e) = errors.iter().find(|e| e["path"] == p.as_str()) {
                let msg = e["message"].as_str().unwrap();
                assert!(msg.contains("rewritten while being read") && msg.contains("not stored"), "{msg}");
                reported += 1;
                continue;
            }
            let got = env.run_raw(&["cat", id, &p]).stdout;
            assert_eq!(got.len(), size, "round {round} {p}");
            let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap());
            let (head, tail) = (word(&got[..8]), word(&got[size - 8..]));
            assert!(
                head == tail || head + 1 == tail,
                "round {round}: {p} stored torn: head version {head}, tail version {tail}"
            );
            stored += 1;
        }
    }
    std::fs::write(&stop, "").unwrap();
    assert!(w.finish().0.success());
    eprintln!("{stored} consistent versions stored, {reported} torn reads reported");
}

#[test]
fn repository_inside_a_backed_up_tree_is_not_stored_in_itself() {
    let env = Env::new();
    let app = env.path().join("app");
    std::fs::create_dir_all(app.join("logs")).unwrap();
    std::fs::write(app.join("logs/app.log"), "line\n").unwrap();
    std::fs::write(app.join("cairn-password"), "pw\n").unwrap();
    // The whole application folder is one type, and the repository lives inside it.
    let cfg = write_config(
        &app,
        json!({ "name": "self", "repository": "backups/repo", "password_file": "cairn-password",
                "types": { "all": { "paths": ["."] } } }),
    );
    let first = env.run_cfg(&cfg, &["backup", "--now", "--json"]).ok().json()["ran"][0].clone();
    assert_eq!(first["result"], "success", "{first:#}");
    let second = env.run_cfg(&cfg, &["backup", "--now", "--json"]).ok().json()["ran"][0].clone();
    let ls = env.run_cfg(&cfg, &["ls", "all:latest"]).ok();
    let listed = ls.stdout.clone();
    assert!(listed.contains("logs/app.log"), "{listed}");
    assert!(!listed.contains("backups/repo/"), "the repository stored itself:\n{listed}");
    // Nothing of the repository changes what the next run sees: the second run adds nothing.
    assert_eq!(second["stats"]["new_raw_bytes"], 0, "{second:#}");
    let id = second["snapshot"].as_str().unwrap();
    assert_eq!(source_facts(&env, Some(&cfg), id)["skipped.repository"], "app/backups/repo");
}
