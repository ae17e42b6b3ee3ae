//! PostgreSQL as its owners expect it back (issue 14, items 2 and 4), against a real server: one
//! table restored from a custom dump into a fresh database or written as SQL psql loads, the
//! server's roles captured beside the dump and restorable, and a password that never reaches a
//! child's command line, a recorded fact or a file left behind, whatever form the connection
//! string gives it in.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::sources::PgServer;
use crate::util::*;

const PW: &str = "Sekr1t-pw-7q";

fn ran(r: &Run, ty: &str) -> Value {
    let v = r.json()["ran"].as_array().unwrap().iter().find(|x| x["backup_type"] == ty).cloned();
    v.unwrap_or_else(|| panic!("no result for {ty}: {}", r.stdout))
}

/// The rows of a table as one comparable string.
const ORDERS: &str =
    "SELECT count(*) || ' ' || md5(string_agg(id || ':' || item || ':' || qty, ',' ORDER BY id)) FROM orders";

#[test]
fn one_table_restore_sql_and_globals() {
    let srv = PgServer::start();
    srv.psql("postgres", "CREATE DATABASE shop");
    srv.psql("postgres", "CREATE ROLE app LOGIN PASSWORD 'right-pw'; CREATE ROLE auditor NOLOGIN");
    srv.psql(
        "shop",
        "CREATE TABLE orders(id int PRIMARY KEY, item text NOT NULL, qty int NOT NULL);
         INSERT INTO orders SELECT g, 'item-' || md5(g::text), g % 13 FROM generate_series(1, 3000) g;
         CREATE TABLE customers(id int PRIMARY KEY, name text);
         INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 100) g;
         CREATE SCHEMA audit; CREATE TABLE audit.log(id int, what text); INSERT INTO audit.log VALUES (1, 'x');
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO app; GRANT USAGE ON SCHEMA audit TO app;
         GRANT SELECT ON audit.log TO app;",
    );
    let env = Env::new();
    let app = env.path().join("app");
    let cfg = write_config(
        &app,
        json!({
            "name": "obd", "repository": "backups/repo", "password_file": "cairn-password",
            "types": {
                "pg": { "postgres": srv.url("postgres", "shop") },
                "pgplain": { "postgres": srv.url("postgres", "shop"), "pg_format": "plain" },
                "pgapp": { "postgres": srv.url("app:right-pw", "shop") }
            }
        }),
    );
    let r = env.run_cfg(&cfg, &["backup", "--now", "--json"]).ok();
    for ty in ["pg", "pgplain", "pgapp"] {
        assert_eq!(ran(&r, ty)["result"], "success", "{ty}: {}", r.stdout);
    }
    // A role that may not read pg_authid: the roles without passwords and a visible warning.
    let w = ran(&r, "pgapp")["warnings"].to_string();
    assert!(w.contains("role passwords not captured"), "{w}");
    let snaps = env.run_cfg(&cfg, &["snapshots", "--json", "--type", "pg"]).ok().json();
    let src = &snaps[0]["source"];
    assert_eq!((&src["postgres.format"], &src["postgres.globals"]), (&json!("custom"), &json!("pg.globals.sql")));

    // One table into a fresh database: the same rows, and nothing else.
    srv.psql("postgres", "CREATE DATABASE fresh");
    let into = srv.url("postgres", "fresh");
    env.run_cfg(&cfg, &["restore", "pg:latest", "--table", "orders", "--into", &into]).ok();
    assert_eq!(srv.psql("fresh", ORDERS), srv.psql("shop", ORDERS));
    assert_eq!(srv.psql("fresh", "SELECT to_regclass('customers') IS NULL"), "t");
    // A schema's objects (pg_restore --schema leaves creating the schema itself to its owner).
    srv.psql("fresh", "CREATE SCHEMA audit");
    env.run_cfg(&cfg, &["restore", "pg:latest", "--schema", "audit", "--into", &into]).ok();
    assert_eq!(srv.psql("fresh", "SELECT what FROM audit.log"), "x");
    // A table that exists already is an error, and the transaction rolls back.
    let r = env.run_cfg(&cfg, &["restore", "pg:latest", "--table", "orders", "--into", &into]);
    assert_ne!(r.code, 0, "restoring over an existing table: {}", r.stdout);
    assert!(r.stderr.contains("pg_restore") && r.stderr.contains("already exists"), "{}", r.stderr);

    // --target writes that table's SQL, and psql loads it.
    let out = env.path().join("sql");
    env.run_cfg(&cfg, &["restore", "pg:latest", "--table", "orders", "--target", out.to_str().unwrap()]).ok();
    let file = out.join("pg.table.orders.sql");
    let sql = std::fs::read_to_string(&file).unwrap();
    assert!(sql.contains("CREATE TABLE public.orders") && !sql.contains("customers"), "{sql:.300}");
    srv.psql("postgres", "CREATE DATABASE fromsql");
    let load = Command::new(srv.bin.join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &srv.url("postgres", "fromsql"), "-f"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    assert_eq!(srv.psql("fromsql", ORDERS), srv.psql("shop", ORDERS));
    // Never over an existing file.
    let r = env.run_cfg(&cfg, &["restore", "pg:latest", "--table", "orders", "--target", out.to_str().unwrap()]);
    assert!(r.code != 0 && r.stderr.contains("exists already"), "{}", r.stderr);

    // Globals: written as a file, and restored into the server after the role is gone.
    env.run_cfg(&cfg, &["restore", "pg:latest", "--globals", "--target", out.to_str().unwrap()]).ok();
    let g = std::fs::read_to_string(out.join("pg.globals.sql")).unwrap();
    assert!(g.contains("CREATE ROLE auditor"), "{g}");
    srv.psql("postgres", "DROP ROLE auditor");
    env.run_cfg(&cfg, &["restore", "pg:latest", "--globals", "--into", &srv.url("postgres", "postgres")]).ok();
    assert_eq!(srv.psql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = 'auditor'"), "1");

    // A plain dump: restorable whole, but no table can be taken out of it.
    let r = env.run_cfg(&cfg, &["restore", "pgplain:latest", "--table", "orders", "--into", &into]);
    assert!(r.code != 0 && r.stderr.contains("plain SQL dump"), "{}", r.stderr);
    assert_no_panic(&r);
    env.run_cfg(&cfg, &["restore", "pgplain:latest", "--target", out.to_str().unwrap()]).ok();
    assert!(std::fs::read_to_string(out.join("pgplain.sql")).unwrap().contains("COPY public.orders"));
    assert!(walk(&app.join("backups/repo/tmp")).iter().all(|p| !p.is_file()), "restore left files in tmp");
}

/// Every process below `pid` (children, grandchildren) as (pid, argv joined by spaces).
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut all = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let Some(ppid) = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)?.parse::<u32>().ok()) else {
            continue;
        };
        all.push((p, ppid));
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &all {
            if pp == parent {
                frontier.push(p);
                let argv = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                out.push((p, String::from_utf8_lossy(&argv).replace('\0', " ")));
            }
        }
    }
    out
}

/// A session holding an exclusive lock on `items` until dropped: pg_dump waits for it.
struct Lock(Child);

impl Lock {
    fn take(srv: &PgServer) -> Lock {
        let mut c = Command::new(srv.bin.join("psql"))
            .args(["-X", "-q", "-d", &srv.url("postgres", "shop")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = c.stdin.as_mut().unwrap();
        stdin.write_all(b"BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE; SELECT 1;\n").unwrap();
        stdin.flush().unwrap();
        let held = "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'items'::regclass";
        let start = Instant::now();
        while srv.psql("shop", held) != "1" {
            assert!(start.elapsed() < Duration::from_secs(20), "the lock was not taken");
            std::thread::sleep(Duration::from_millis(20));
        }
        Lock(c)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(mut s) = self.0.stdin.take() {
            let _ = s.write_all(b"COMMIT;\n");
        }
        let _ = self.0.wait();
    }
}

#[test]
fn passwords_never_reach_argv_facts_or_files() {
    let srv = PgServer::start();
    srv.psql("postgres", "CREATE DATABASE shop");
    srv.psql("postgres", &format!("CREATE ROLE app LOGIN PASSWORD '{PW}'"));
    srv.psql(
        "shop",
        "CREATE TABLE items(id int); INSERT INTO items SELECT generate_series(1, 100); GRANT SELECT ON items TO app",
    );
    let (sock, port) = (srv.sock().display().to_string(), srv.port());
    let forms = [
        ("url", format!("postgresql://app:{PW}@/shop?host={sock}&port={port}")),
        ("kv", format!("host={sock} port={port} user=app dbname=shop password='{PW}'")),
        ("query", format!("postgresql://app@/shop?host={sock}&port={port}&password={PW}")),
    ];
    let env = Env::new();
    let app = env.path().join("app");
    let types: serde_json::Map<String, Value> =
        forms.iter().map(|(t, u)| (t.to_string(), json!({ "postgres": u }))).collect();
    let cfg = write_config(
        &app,
        json!({ "name": "obd", "repository": "backups/repo", "password_file": "cairn-password", "types": types }),
    );
    for (ty, _) in &forms {
        let lock = Lock::take(&srv);
        let child =
            env.cfg_cmd(&cfg, &["backup", "--now", "--json", "--type", ty]).stdout(Stdio::piped()).spawn().unwrap();
        // The psql session that counts rows in the dump's snapshot (then pg_dump) waits for the
        // lock: look at every process cairn starts meanwhile, and after the lock goes, until it ends.
        let start = Instant::now();
        let mut seen: Vec<(u32, String)> = Vec::new();
        let pg_client =
            |a: &str| ["pg_dump", "psql"].iter().any(|p| a.contains(&format!("{p} ")) || a.contains(&format!("/{p}")));
        while !seen.iter().any(|(_, a)| pg_client(a)) {
            assert!(start.elapsed() < Duration::from_secs(30), "{ty}: no PostgreSQL client seen; {seen:?}");
            seen = descendants(child.id());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(seen.iter().any(|(_, a)| a.contains("--dbname=") && a.contains("user='app'")), "{ty}: {seen:?}");
        drop(lock);
        let mut child = child;
        while child.try_wait().unwrap().is_none() {
            for d in descendants(child.id()) {
                if !seen.contains(&d) {
                    seen.push(d);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for (pid, argv) in &seen {
            assert!(!argv.contains(PW), "{ty}: the password is in the command line of {pid}: {argv}");
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{ty}: {}", String::from_utf8_lossy(&out.stdout));
    }
    // Nothing recorded or shown holds it.
    for args in [&["snapshots", "--json"][..], &["history", "--json"], &["config", "check"], &["status", "--json"]] {
        let r = env.run_cfg(&cfg, args);
        assert!(!r.stdout.contains(PW) && !r.stderr.contains(PW), "{args:?}: {}{}", r.stdout, r.stderr);
    }
    let shown = env.run_cfg(&cfg, &["config", "check"]).ok().json();
    assert_eq!(shown["backup"]["types"]["kv"]["postgres"], format!("host={sock} port={port} user=app dbname=shop"));
    let snaps = env.run_cfg(&cfg, &["snapshots", "--json"]).ok().json();
    assert_eq!(snaps.as_array().unwrap().len(), 3);
    let repo = app.join("backups/repo");
    assert!(walk(&repo.join("tmp")).iter().all(|p| !p.is_file()), "files left in the repository's tmp");
    for p in walk(env.path()) {
        if p.is_file() && p != cfg {
            let b = std::fs::read(&p).unwrap_or_default();
            assert!(!b.windows(PW.len()).any(|w| w == PW.as_bytes()), "the password is in {}", p.display());
        }
    }
}

#[test]
fn hostile_connection_strings_are_clear_errors() {
    let env = Env::new();
    for (i, (target, what)) in [
        ("postgresql://app:%\u{e9}x@db/app", "not followed by two hex digits"),
        ("postgresql://app:pw%zz@db/app", "not followed by two hex digits"),
        ("host=db password='unterminated", "unterminated quoted string"),
        ("host=db pasword=x", "unknown connection option \"pasword\""),
        ("postgresql://db/app?sslmod=require", "unknown connection option \"sslmod\""),
    ]
    .iter()
    .enumerate()
    {
        let dir = env.path().join(format!("case{i}"));
        let cfg = write_config(
            &dir,
            json!({ "name": "obd", "repository": "repo", "types": { "pg": { "postgres": target } } }),
        );
        for args in [&["config", "check"][..], &["backup", "--now"]] {
            let r = env.run_cfg(&cfg, args);
            assert_no_panic(&r);
            assert_eq!(r.code, 1, "{target} {args:?}: {}", r.stderr);
            let want = format!("{}: types.pg.postgres: ", cfg.display());
            assert!(
                r.stderr.contains(&want) && r.stderr.contains(what),
                "{target}: want {want:?}, {what:?}: {}",
                r.stderr
            );
            assert!(!r.stderr.contains(target), "the string is shown: {}", r.stderr);
        }
        assert!(!dir.join("repo").exists());
    }
    // --into is checked the same way, before anything is read.
    let dir = env.path().join("into");
    let cfg = write_config(&dir, json!({ "name": "obd", "repository": "repo", "types": { "f": { "paths": ["."] } } }));
    let r = env.run_cfg(&cfg, &["restore", "latest", "--table", "t", "--into", "host=x password='oops"]);
    assert!(r.code != 0 && r.stderr.contains("--into: unterminated quoted string"), "{}", r.stderr);
    assert!(!r.stderr.contains("oops"), "{}", r.stderr);
}
