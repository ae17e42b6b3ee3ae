//! Verified PostgreSQL dumps (issue 14, item 1), through the real binary and a real server: the
//! row counts and schema digest recorded at backup time are read in the dump's own snapshot
//! (a writer inserting throughout), `verify --restore-test` restores the latest dump on the same
//! server or in a scratch cluster and compares, catches a dump that lacks a row, and reports a
//! type it cannot test as NOT TESTED with a non-zero exit, never as passing. (Retries of a server
//! not up yet and the refusal of a wrong password or unknown database are in error_causes.rs.)

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{json, Value};

use crate::sources::PgServer;
use crate::util::*;

fn snapshot_source(env: &Env, cfg: &Path, ty: &str) -> Value {
    let v = env.run_cfg(cfg, &["snapshots", "--json", "--type", ty]).ok().json();
    v.as_array().unwrap().last().unwrap_or_else(|| panic!("no snapshot of {ty}"))["source"].clone()
}

fn test_of<'a>(v: &'a Value, ty: &str) -> &'a Value {
    v["restore_tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["backup_type"] == ty)
        .unwrap_or_else(|| panic!("no restore test of {ty}: {v:#}"))
}

fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Databases the restore tests left behind on the server (none, whatever happened).
fn leftover_databases(srv: &PgServer) -> String {
    srv.psql("postgres", "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'cairn_restore_test%'")
}

fn leftover_scratch_dirs(pid_prefix: &str) -> Vec<String> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(pid_prefix))
        .collect()
}

#[test]
fn pg_counts_are_read_in_the_dumps_snapshot_and_the_restore_test_restores_compares_and_catches_tampering() {
    let srv = PgServer::start();
    srv.psql("postgres", "CREATE DATABASE shop");
    srv.psql("postgres", "CREATE ROLE app LOGIN PASSWORD 'right-pw'");
    srv.psql(
        "shop",
        "CREATE TABLE items(id bigserial PRIMARY KEY, name text NOT NULL, qty int NOT NULL DEFAULT 1 CHECK (qty >= 0));
         CREATE INDEX items_name ON items(name);
         INSERT INTO items(name, qty) SELECT 'item-' || g, g % 97 FROM generate_series(1, 20000) g;
         CREATE SCHEMA audit;
         CREATE TABLE audit.\"Event Log\"(at timestamptz DEFAULT now(), item bigint REFERENCES items(id));
         INSERT INTO audit.\"Event Log\"(item) SELECT g FROM generate_series(1, 300) g;
         CREATE VIEW item_totals AS SELECT qty, count(*) FROM items GROUP BY qty;
         GRANT SELECT ON ALL TABLES IN SCHEMA public, audit TO app; GRANT USAGE ON SCHEMA audit TO app;
         GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO app;",
    );
    let env = Env::new();
    let app = env.path().join("app");
    let pg_dump = srv.bin.join("pg_dump");
    let dropper = env.path().join("pg_dump_drops_a_row");
    // A dump that lacks one row of items (id 15000, which no event references), as a damaged or
    // tampered dump would.
    write_script(&dropper, &format!("#!/bin/sh\n\"{}\" \"$@\" | sed '/^15000\t/d'\n", pg_dump.display()));
    let cfg = write_config(
        &app,
        json!({
            "name": "pgv", "repository": "backups/repo", "password_file": "cairn-password",
            "types": {
                // pg and tampered as plain SQL (loaded by hand, edited by sed); pgapp in the
                // default custom format, restore-tested through pg_restore.
                "pg": { "postgres": srv.url("postgres", "shop"), "pg_format": "plain" },
                "pgapp": { "postgres": srv.url("app:right-pw", "shop") },
                "tampered": { "postgres": srv.url("postgres", "shop"), "pg_format": "plain" }
            }
        }),
    );
    env.run_cfg(&cfg, &["init"]).ok();

    // A writer inserts throughout the backup: the counts recorded are those of the dump's snapshot.
    let stop = AtomicBool::new(false);
    let inserted = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                srv.psql("shop", "INSERT INTO items(name, qty) SELECT 'late-' || g, 5 FROM generate_series(1, 50) g");
                inserted.fetch_add(50, Ordering::SeqCst);
            }
        });
        while inserted.load(Ordering::SeqCst) < 100 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        env.run_cfg(&cfg, &["backup", "--now", "--type", "pg", "--type", "pgapp"]).ok();
        stop.store(true, Ordering::SeqCst);
    });
    let src = snapshot_source(&env, &cfg, "pg");
    let recorded: u64 = src["pg.rows.public.items"].as_str().unwrap().parse().unwrap();
    let now: u64 = srv.psql("shop", "SELECT count(*) FROM items").parse().unwrap();
    assert!(recorded > 20000 && recorded < now, "recorded {recorded}, 20000 before, {now} after");
    assert_eq!(src["pg.rows.audit.Event Log"], "300", "{src:#}");
    assert_eq!(src["pg.tables"], "2");
    assert!(src["pg.schema_hash"].as_str().unwrap().len() == 64, "{src:#}");
    assert!(src["pg.server_version"].as_str().unwrap().starts_with("15"), "{src:#}");
    let app_src = snapshot_source(&env, &cfg, "pgapp");
    assert_eq!(app_src["pg.schema_hash"], src["pg.schema_hash"]);
    assert!(!serde_json::to_string(&app_src).unwrap().contains("right-pw"));

    // The stored dump, loaded by hand into a fresh database, has exactly the recorded rows.
    let dump = env.run_cfg_raw(&cfg, &["cat", "pg:latest", "pg.sql"]);
    assert_eq!(dump.code, 0, "{}", dump.stderr);
    srv.psql("postgres", "CREATE DATABASE restored");
    let mut load = Command::new(srv.bin.join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &srv.url("postgres", "restored")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(load.stdin.as_mut().unwrap(), &dump.stdout).unwrap();
    drop(load.stdin.take());
    assert!(load.wait().unwrap().success());
    assert_eq!(srv.psql("restored", "SELECT count(*) FROM items"), recorded.to_string());

    // The restore test: pg on its own server (the superuser may create databases), pgapp in a
    // scratch cluster (app may not); both pass, with their timings.
    let v = env.run_cfg(&cfg, &["verify", "--restore-test", "--json"]).ok().json();
    assert_eq!(v["ok"], true, "{v:#}");
    let (pg, pgapp) = (test_of(&v, "pg"), test_of(&v, "pgapp"));
    // Each type's own dump (taken one after the other, so with different counts) as recorded.
    let app_recorded: u64 = app_src["pg.rows.public.items"].as_str().unwrap().parse().unwrap();
    for (t, place, items) in [(pg, "same server", recorded), (pgapp, "scratch cluster", app_recorded)] {
        assert_eq!((&t["ok"], &t["place"]), (&json!(true), &json!(place)), "{t:#}");
        assert!(t["restore_s"].as_f64().unwrap() > 0.0 && t["compare_s"].as_f64().unwrap() > 0.0, "{t:#}");
        assert!(t["detail"].as_str().unwrap().contains(&format!("2 tables ({} rows)", items + 300)), "{t:#}");
    }
    let text = env.run_cfg(&cfg, &["verify", "--restore-test"]).ok().stdout;
    assert!(text.contains("restore test pg snapshot") && text.contains("compare"), "{text}");
    assert!(text.contains("no errors found"), "{text}");
    let h = env.run_cfg(&cfg, &["--json", "history", "--type", "restore-test:pgapp"]).ok().json();
    assert_eq!(h.as_array().unwrap()[0]["result"], "success", "{h:#}");
    assert_eq!(leftover_databases(&srv), "");

    // A dump lacking a row: the restore test fails loudly, naming the table; exit 3.
    let mut c = env.cfg_cmd(&cfg, &["backup", "--now", "--type", "tampered"]);
    c.env("CAIRN_PG_DUMP", &dropper);
    env.run_cmd(c).ok();
    let r = env.run_cfg(&cfg, &["verify", "--restore-test"]).code(3);
    let line =
        r.stdout.lines().find(|l| l.starts_with("restore test tampered")).unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(line.contains("FAILED") && line.contains("table public.items has"), "{line}");
    assert!(r.stdout.contains("repository is DAMAGED") && !r.stdout.contains("no errors found"), "{}", r.stdout);
    assert!(r.stdout.contains("restore test pg snapshot") && r.stdout.contains(": ok ("), "{}", r.stdout);
    let h = env.run_cfg(&cfg, &["--json", "history", "--type", "restore-test:tampered"]).ok().json();
    assert_eq!(h.as_array().unwrap()[0]["result"], "failed", "{h:#}");
    let v = env.run_cfg(&cfg, &["snapshots", "--json", "--type", "tampered"]).ok().json();
    let id = v[0]["id"].as_str().unwrap().to_string();
    env.run_cfg(&cfg, &["forget", &id]).ok();

    // No server binaries for a scratch cluster: NOT TESTED with the reason, exit 1, never a pass.
    let cfg2 = write_config(
        &env.path().join("app2"),
        json!({
            "name": "pgv", "repository": app.join("backups/repo"), "password_file": app.join("cairn-password"),
            "verify": { "schedule": "weekly sun 04:00", "restore_test": true,
                        "postgres": { "restore_on": "scratch", "server_bin": "/nonexistent/bin" } },
            "types": { "pg": { "postgres": srv.url("postgres", "shop") } }
        }),
    );
    let r = env.run_cfg(&cfg2, &["verify", "--restore-test"]).code(1);
    assert!(r.stdout.contains("NOT TESTED: no PostgreSQL server binaries"), "{}", r.stdout);
    assert!(!r.stdout.contains("no errors found"), "{}", r.stdout);
    let v = env.run_cfg(&cfg2, &["verify", "--restore-test", "--json"]).code(1).json();
    assert_eq!((&v["ok"], &test_of(&v, "pg")["not_tested"]), (&json!(false), &json!(true)), "{v:#}");
    // "same-server" for a role that may not create databases: not tested either.
    let cfg3 = write_config(
        &env.path().join("app3"),
        json!({
            "name": "pgv", "repository": app.join("backups/repo"), "password_file": app.join("cairn-password"),
            "verify": { "schedule": "weekly sun 04:00", "postgres": { "types": { "pgapp": "same-server" } } },
            "types": { "pgapp": { "postgres": srv.url("app:right-pw", "shop") } }
        }),
    );
    let r = env.run_cfg(&cfg3, &["verify", "--restore-test"]).code(1);
    assert!(
        r.stdout.contains("restore test pgapp")
            && r.stdout.contains("NOT TESTED: the type's role may not create databases"),
        "{}",
        r.stdout
    );
    assert_eq!(leftover_databases(&srv), "");
    assert_eq!(leftover_scratch_dirs("cairn-restore-test-"), Vec::<String>::new());
}
