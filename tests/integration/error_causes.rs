//! Failures say what they are (issue 11, items 8 and 12), through the real binary: a `pg_dump`
//! that cannot reach a real PostgreSQL server is retried with backoff (and succeeds once the
//! server is up), one refused for good is not; a full, read-only or forbidden repository names
//! the path and the cause (ENOSPC, EROFS, EACCES) instead of "not an error".

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use serde_json::{json, Value};

use crate::sources::PgServer;
use crate::trouble::{fill, Tmpfs};
use crate::util::*;

/// The one result of a `backup --now --json --type T` run.
fn only_result(r: &Run) -> Value {
    let v = r.json();
    let ran = v["ran"].as_array().unwrap_or_else(|| panic!("no results in {}", r.stdout));
    assert_eq!(ran.len(), 1, "{}", r.stdout);
    ran[0].clone()
}

/// The newest history row of type `ty`.
fn last_run(env: &Env, cfg: &Path, ty: &str) -> Value {
    let h = env.run_cfg(cfg, &["--json", "history", "--type", ty]).ok().json();
    let rows = h.as_array().unwrap_or_else(|| panic!("history: {h}"));
    rows.iter().max_by_key(|r| r["id"].as_i64()).unwrap_or_else(|| panic!("no history row for {ty}")).clone()
}

/// Runs `backup` of type `ty`, which must fail; its error text.
fn failed(env: &Env, cfg: &Path, ty: &str) -> String {
    let r = env.run_cfg(cfg, &["backup", "--now", "--json", "--type", ty]).code(1);
    let res = only_result(&r);
    assert_eq!(res["result"], "failed", "{ty}: {res:#}");
    res["error"].as_str().unwrap().to_string()
}

/// [`failed`], and the retries its history row records.
fn failed_with(env: &Env, cfg: &Path, ty: &str) -> (String, i64) {
    let e = failed(env, cfg, ty);
    let row = last_run(env, cfg, ty);
    assert_eq!(row["result"], "failed", "{ty}: {row:#}");
    (e, row["retries"].as_i64().unwrap())
}

/// A TCP port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn pg_dump_is_retried_while_the_server_is_away_and_not_when_it_refuses_for_good() {
    let srv = PgServer::init();
    // Accepts connections and never answers: libpq's connect_timeout (2 s at least) expires.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let env = Env::new();
    let app = env.path().join("app");
    let cfg = write_config(
        &app,
        json!({
            "name": "pg", "repository": "backups/repo", "password_file": "cairn-password",
            "types": {
                "nosock": { "postgres": srv.url("postgres", "postgres") },
                "refused": { "postgres": format!("postgresql://postgres@127.0.0.1:{}/postgres", closed_port()) },
                "silent": { "postgres": format!("postgresql://postgres@127.0.0.1:{silent_port}/postgres?connect_timeout=2") },
                "later": { "postgres": srv.url("postgres", "postgres") },
                "badpw": { "postgres": srv.url("app:wrong-pw", "postgres") },
                "nodb": { "postgres": srv.url("postgres", "nosuchdb") }
            }
        }),
    );
    env.run_cfg(&cfg, &["init"]).ok();

    // Nothing there yet: transient, retried 3 times (CAIRN_RETRY_BASE_MS=10), then failed.
    for (ty, cause) in
        [("nosock", "no server is listening"), ("refused", "connection refused"), ("silent", "did not answer in time")]
    {
        let (e, retries) = failed_with(&env, &cfg, ty);
        assert!(e.contains(cause) && e.contains("transient"), "{ty}: {e}");
        assert_eq!(retries, 3, "{ty}: {e}");
    }
    drop(silent);

    // The server comes up while cairn waits between attempts: stored after retries.
    let mut c = env.cfg_cmd(&cfg, &["backup", "--now", "--json", "--type", "later"]);
    c.env("CAIRN_RETRY_BASE_MS", "2000").stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = ChildGuard(c.spawn().unwrap());
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("retrying in") {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "cairn ended without retrying: {seen}");
        seen.push_str(&line);
    }
    assert!(seen.contains("no server is listening"), "{seen}");
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        rest
    });
    srv.launch();
    let (status, stdout) = child.finish();
    let rest = drain.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stdout}\n{seen}{rest}");
    let res = only_result(&Run { code: 0, stdout, stderr: String::new() });
    assert_eq!(res["result"], "success", "{res:#}");
    let row = last_run(&env, &cfg, "later");
    assert_eq!(row["result"], "success", "{row:#}");
    let retries = row["retries"].as_i64().unwrap();
    assert!((1..=3).contains(&retries), "{row:#}");
    eprintln!("server started during the retries: stored after {retries} retries");

    // Refused for good: no retry, and the cause is named.
    srv.psql("postgres", "CREATE ROLE app LOGIN PASSWORD 'right-pw'");
    for (ty, cause) in [("badpw", "authentication failed"), ("nodb", "unknown database")] {
        let (e, retries) = failed_with(&env, &cfg, ty);
        assert!(e.contains(&format!("{cause} (permanent: not retried)")), "{ty}: {e}");
        assert_eq!(retries, 0, "{ty}: {e}");
        assert!(!e.contains("wrong-pw"), "{ty}: password shown: {e}");
    }
}

/// A config with a SQLite type and a files type backing up into `repo`.
fn two_types(env: &Env, repo: &Path) -> std::path::PathBuf {
    let app = env.path().join("app");
    std::fs::create_dir_all(app.join("files")).unwrap();
    std::fs::write(app.join("files/a.bin"), prng_bytes(7, 3 << 20)).unwrap();
    let db = app.join("obd.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE t(x BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 4000) INSERT INTO t SELECT randomblob(1000) FROM n;").unwrap();
    drop(c);
    write_config(
        &app,
        json!({ "name": "obd", "repository": repo, "password_file": "cairn-password",
                "forget_after_backup": false, "prune_after_backup": false,
                "types": { "db": { "sqlite": "obd.db" }, "files": { "paths": ["files"] } } }),
    )
}

fn assert_names(e: &str, path: &Path, cause: &str, errno: &str) {
    assert!(e.contains(&path.display().to_string()), "path {} not named: {e}", path.display());
    assert!(e.contains(&format!("{cause} ({errno})")), "cause not named: {e}");
    assert!(!e.contains("not an error") && !e.contains("os error"), "{e}");
}

#[test]
fn a_full_disk_during_the_sqlite_copy_is_named_with_its_path() {
    if !is_root() {
        eprintln!("SKIPPED a_full_disk_during_the_sqlite_copy...: needs root to mount a tmpfs");
        return;
    }
    let env = Env::new();
    let mnt = Tmpfs::mount(&env.path().join("mnt"), 16);
    let cfg = two_types(&env, &mnt.0.join("repo"));
    env.run_cfg(&cfg, &["init"]).ok();
    // Room for the cache and a lock, not for the 4 MiB copy of the database.
    let filler = fill(&mnt.0);
    let f = std::fs::OpenOptions::new().write(true).open(&filler).unwrap();
    f.set_len(f.metadata().unwrap().len() - (512 << 10)).unwrap();
    let e = failed(&env, &cfg, "db");
    assert_names(&e, &mnt.0, "no space left on device", "ENOSPC");
}

#[test]
fn a_read_only_repository_is_named_with_its_path() {
    if !is_root() {
        eprintln!("SKIPPED a_read_only_repository_is_named...: needs root to mount a tmpfs");
        return;
    }
    let env = Env::new();
    let mnt = Tmpfs::mount(&env.path().join("mnt"), 32);
    let cfg = two_types(&env, &mnt.0.join("repo"));
    env.run_cfg(&cfg, &["init"]).ok();
    mnt.remount("ro");
    for ty in ["db", "files"] {
        // (No history row: the history lives in the read-only repository.)
        let e = failed(&env, &cfg, ty);
        assert_names(&e, &mnt.0, "read-only file system", "EROFS");
    }
    mnt.remount("rw");
}

#[test]
fn a_repository_directory_the_user_may_not_write_is_named_with_its_path() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let repo = env.path().join("app/backups/repo");
    let cfg = two_types(&env, &repo);
    give_to_unprivileged(env.path());
    let as_user = |args: &[&str]| {
        let mut c = env.cfg_cmd(&cfg, args);
        if is_root() {
            c.uid(NOBODY).gid(NOBODY);
        }
        env.run_cmd(c)
    };
    as_user(&["init"]).ok();
    // A directory of the repository left to another user (root's, as after a run as root),
    // or to nobody when the tests do not run as root: mode 0555 is then what stops the write.
    let tmp = repo.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    if is_root() {
        std::os::unix::fs::lchown(&tmp, Some(0), Some(0)).unwrap();
    }
    for ty in ["db", "files"] {
        let r = as_user(&["backup", "--now", "--json", "--type", ty]).code(1);
        let res = only_result(&r);
        let e = res["error"].as_str().unwrap_or_else(|| panic!("{res:#}"));
        assert_names(e, &tmp, "permission denied", "EACCES");
    }
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}
