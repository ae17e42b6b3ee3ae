//! Seed 001's dated layout as that user runs it on a real app folder (a SQLite database in WAL
//! mode with rows only in its WAL, config files, a `.env`): snapshots of different kinds on one
//! day never share a file, `backup_metadata.json` is exact (checked against each file's sha256),
//! exports are private whatever the umask, `--latest` means the scheduled snapshot, `backup`
//! exports as configured and prunes what retention removed, leaving foreign files alone.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::util::*;

/// `c` run through `prefix` (e.g. `faketime AT`, or `sh -c 'umask 022; exec "$0" "$@"'`), with
/// the same environment and directory.
fn wrap(c: Command, prefix: &[&str]) -> Command {
    let mut w = Command::new(prefix[0]);
    w.env_clear();
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            w.env(k, v);
        }
    }
    if let Some(d) = c.get_current_dir() {
        w.current_dir(d);
    }
    w.args(&prefix[1..]).arg(c.get_program()).args(c.get_args());
    w
}

fn with_umask(c: Command, umask: &str) -> Command {
    let script = format!("umask {umask}; exec \"$0\" \"$@\"");
    wrap(c, &["sh", "-c", &script])
}

fn faked(c: Command, at: &str) -> Command {
    ensure_package("faketime", || have_program("faketime"));
    let mut w = wrap(c, &["faketime", at]);
    w.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    w
}

/// The example app with its database switched to WAL mode and rows committed only to the WAL
/// (the returned connection keeps it from being checkpointed); its config gets `extra` merged
/// into the `backup` section. Returns (app dir, config, open connection).
fn wal_app(env: &Env, extra: Value) -> (PathBuf, PathBuf, rusqlite::Connection) {
    let (app, cfg) = example_app(env.path());
    let mut v: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    for (k, x) in extra.as_object().unwrap() {
        v["backup"][k] = x.clone();
    }
    std::fs::write(&cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let db = rusqlite::Connection::open(app.join("data/app.db")).unwrap();
    let mode: String = db.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    db.execute_batch("PRAGMA wal_autocheckpoint=0; CREATE TABLE only_in_wal(x); INSERT INTO only_in_wal VALUES (42);")
        .unwrap();
    assert!(std::fs::metadata(app.join("data/app.db-wal")).unwrap().len() > 0);
    (app, cfg, db)
}

fn snapshots(env: &Env, cfg: &Path) -> Vec<Value> {
    env.run_cfg(cfg, &["snapshots", "--json"]).ok().json().as_array().unwrap().clone()
}

fn one<'a>(snaps: &'a [Value], ty: &str, kind: &str) -> &'a Value {
    let v: Vec<&Value> = snaps.iter().filter(|s| s["type"] == ty && s["kind"] == kind).collect();
    assert_eq!(v.len(), 1, "{ty} {kind}: {snaps:?}");
    v[0]
}

fn export(env: &Env, cfg: &Path, args: &[&str]) -> Value {
    env.run_cfg(cfg, &[&["--json", "export"][..], args].concat()).ok().json()
}

fn metadata(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("backup_metadata.json")).unwrap()).unwrap()
}

/// Every entry of the metadata, by snapshot id: (section, key, entry).
fn entries(meta: &Value) -> BTreeMap<String, (String, String, Value)> {
    let mut out = BTreeMap::new();
    for sec in ["daily", "pre_change", "manual"] {
        for (k, e) in meta[sec].as_object().unwrap() {
            let id = e["snapshot"].as_str().unwrap().to_string();
            assert!(out.insert(id, (sec.to_string(), k.clone(), e.clone())).is_none(), "two entries for {k}");
        }
    }
    out
}

/// Each listed file exists with the listed size and sha256; no file is listed twice.
fn check_files(out: &Path, meta: &Value) -> BTreeSet<PathBuf> {
    let mut seen = BTreeSet::new();
    for (_, (_, key, e)) in entries(meta) {
        let files = e["files"].as_object().unwrap();
        assert!(!files.is_empty(), "{key}: no files");
        for (rel, f) in files {
            let p = out.join(rel);
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{key}: {rel}: {e}"));
            assert_eq!(f["size"], bytes.len() as u64, "{key}: {rel} size");
            assert_eq!(f["hash"], hex::encode(Sha256::digest(&bytes)), "{key}: {rel} sha256");
            assert!(seen.insert(p), "{rel} listed twice");
        }
    }
    seen
}

fn time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn rows_in_wal_table(db: &Path) -> i64 {
    rusqlite::Connection::open(db).unwrap().query_row("SELECT x FROM only_in_wal", [], |r| r.get(0)).unwrap()
}

#[test]
fn same_day_snapshots_of_different_kinds_export_to_distinct_files_with_exact_metadata() {
    let env = Env::new();
    let (app, cfg, _db) = wal_app(&env, json!({}));
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    let db_path = app.join("data/app.db");
    let db_arg = db_path.to_str().unwrap();
    env.run_cfg(
        &cfg,
        &[
            "snapshot",
            "--type",
            "db",
            "--kind",
            "pre-change",
            "--description",
            "v2 migration",
            "--ticket",
            "OBD-43",
            db_arg,
        ],
    )
    .ok();
    let (c1, c2) = (app.join("config.json"), app.join(".env"));
    env.run_cfg(
        &cfg,
        &[
            "snapshot",
            "--type",
            "config",
            "--kind",
            "manual",
            "--purpose",
            "before key rotation",
            "--creator",
            "alice",
            "--retention",
            "days_90",
            c1.to_str().unwrap(),
            c2.to_str().unwrap(),
        ],
    )
    .ok();
    let snaps = snapshots(&env, &cfg);
    assert_eq!(snaps.len(), 5);
    let out = env.path().join("backup");
    let ids: Vec<&str> = snaps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let first = export(&env, &cfg, &[&ids[..], &["--layout", "dated", "--out", out.to_str().unwrap()]].concat());
    assert!(first.as_array().unwrap().iter().all(|f| f["written"] == true));

    let meta = metadata(&out);
    let files = check_files(&out, &meta);
    let all = entries(&meta);
    assert_eq!(all.len(), 5, "one entry per snapshot: {meta:#}");
    let counts: Vec<usize> =
        ["daily", "pre_change", "manual"].iter().map(|s| meta[*s].as_object().unwrap().len()).collect();
    assert_eq!(counts, [3, 1, 1]);
    for s in &snaps {
        let (sec, key, e) = &all[s["id"].as_str().unwrap()];
        assert_eq!(time(&e["created"]), time(&s["time"]), "{key}: created");
        let day = time(&s["time"]).format("%Y%m%d").to_string();
        assert!(key.starts_with(&format!("{day}_")), "{key}");
        assert_eq!(e["type"], s["type"]);
        assert_eq!(*sec, s["kind"].as_str().unwrap().replace('-', "_"));
        for rel in e["files"].as_object().unwrap().keys() {
            assert!(rel.starts_with(&format!("{day}/")), "{rel} is not in its day directory");
        }
    }
    // The daily and the pre-change database of the same day: two files, both the whole database
    // (the rows only in the WAL included), neither with a WAL file beside it.
    let db_daily = &all[one(&snaps, "db", "daily")["id"].as_str().unwrap()].2;
    let db_pre = &all[one(&snaps, "db", "pre-change")["id"].as_str().unwrap()].2;
    let daily_files: Vec<&String> = db_daily["files"].as_object().unwrap().keys().collect();
    let pre_files: Vec<&String> = db_pre["files"].as_object().unwrap().keys().collect();
    assert_eq!((daily_files.len(), pre_files.len()), (1, 1));
    assert_ne!(daily_files[0], pre_files[0]);
    for (rel, e) in [(daily_files[0], db_daily), (pre_files[0], db_pre)] {
        assert!(rel.ends_with(".db"), "{rel}");
        assert_eq!(rows_in_wal_table(&out.join(rel)), 42, "{rel}");
        assert_eq!(e["files"][rel]["has_wal"], false, "{rel}");
    }
    assert!(pre_files[0].contains("pre-change") && pre_files[0].contains("v2_migration"), "{}", pre_files[0]);
    // Retention as configured: db keeps 30 daily runs, logs 8 weekly ones, config 10 (on-change, daily).
    for (ty, days) in [("db", 30), ("logs", 56), ("config", 10)] {
        let e = &all[one(&snaps, ty, "daily")["id"].as_str().unwrap()].2;
        assert_eq!(time(&e["expires"]) - time(&e["created"]), chrono::Duration::days(days), "{ty} expires");
        assert_eq!((e["status"].as_str(), e["verified"].as_bool()), (Some("active"), Some(false)), "{ty}");
    }
    assert_eq!(db_pre["status"], "pending_verification");
    assert_eq!(db_pre["verified"], false);
    assert_eq!(db_pre["retention"], "until_verified");
    assert_eq!(db_pre["change_ticket"], "OBD-43");
    assert_eq!(db_pre["description"], "v2 migration");
    assert_eq!(db_pre["expires"], Value::Null);
    let manual = &all[one(&snaps, "config", "manual")["id"].as_str().unwrap()].2;
    assert_eq!(manual["retention"], "days_90");
    assert_eq!(manual["creator"], "alice");
    assert_eq!(manual["purpose"], "before key rotation");
    assert_eq!(manual["status"], "active");
    assert_eq!(time(&manual["expires"]) - time(&manual["created"]), chrono::Duration::days(90));
    let manual_files: BTreeSet<&String> = manual["files"].as_object().unwrap().keys().collect();
    let daily_config = &all[one(&snaps, "config", "daily")["id"].as_str().unwrap()].2;
    assert!(daily_config["files"].as_object().unwrap().keys().all(|k| !manual_files.contains(k)));
    assert_eq!(manual_files.len(), 2);
    for rel in &manual_files {
        let src = if rel.ends_with(".env.config") { ".env" } else { "config.json" };
        assert_eq!(std::fs::read(out.join(rel)).unwrap(), std::fs::read(app.join(src)).unwrap(), "{rel}");
    }

    // Again: nothing rewritten. A file damaged under its final name is rewritten (its sha256 is
    // what counts, not its presence).
    let before: Vec<(PathBuf, std::time::SystemTime)> =
        files.iter().map(|p| (p.clone(), std::fs::metadata(p).unwrap().modified().unwrap())).collect();
    let damaged = out.join(daily_files[0]);
    let again = export(&env, &cfg, &[&ids[..], &["--layout", "dated", "--out", out.to_str().unwrap()]].concat());
    assert!(again.as_array().unwrap().iter().all(|f| f["written"] == false), "{again:#}");
    for (p, t) in &before {
        assert_eq!(std::fs::metadata(p).unwrap().modified().unwrap(), *t, "{} rewritten", p.display());
    }
    std::fs::write(&damaged, b"half a database").unwrap();
    let third = export(&env, &cfg, &[&ids[..], &["--layout", "dated", "--out", out.to_str().unwrap()]].concat());
    let rewritten: Vec<&str> = third
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["written"] == true)
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert_eq!(rewritten, [damaged.to_str().unwrap()]);
    assert_eq!(metadata(&out), meta, "the metadata of an unchanged export is unchanged");
    check_files(&out, &meta);
    let left: Vec<PathBuf> =
        walk(&out).into_iter().filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp-")).collect();
    assert!(left.is_empty(), "{left:?}");

    // Verified: the metadata says so (whatever id the verified snapshot has now).
    env.run_cfg(&cfg, &["mark-verified", one(&snaps, "db", "pre-change")["short_id"].as_str().unwrap(), "--by", "bob"])
        .ok();
    let snaps = snapshots(&env, &cfg);
    let pre_id = one(&snaps, "db", "pre-change")["id"].as_str().unwrap().to_string();
    export(&env, &cfg, &["--latest", "--kind", "pre-change", "--layout", "dated", "--out", out.to_str().unwrap()]);
    let meta = metadata(&out);
    check_files(&out, &meta);
    assert_eq!(meta["pre_change"].as_object().unwrap().len(), 1, "{meta:#}");
    let (_, _, e) = &entries(&meta)[&pre_id];
    assert_eq!((e["verified"].as_bool(), e["status"].as_str()), (Some(true), Some("verified")), "{e:#}");
    assert_eq!(e["verified_by"], "bob");
    assert!(time(&e["verified_date"]) >= time(&e["created"]));
    // No retention label: after its verification it stays until forgotten by hand, so no date.
    assert_eq!(e["expires"], Value::Null, "{e:#}");
}

#[test]
fn exports_are_private_whatever_the_umask() {
    let env = Env::new();
    let (app, cfg, _db) = wal_app(&env, json!({}));
    // The source's own modes: a world-readable .env (the usual mistake), an owner-only log.
    std::fs::set_permissions(app.join(".env"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(app.join("logs/obd.log"), std::fs::Permissions::from_mode(0o400)).unwrap();
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    let dated = env.path().join("exports/dated");
    let flat = env.path().join("exports/flat");
    for (umask, args) in [
        ("022", vec!["--latest", "--layout", "dated", "--out", dated.to_str().unwrap()]),
        ("000", vec!["--latest", "--out", flat.to_str().unwrap()]),
    ] {
        let c = with_umask(env.cfg_cmd(&cfg, &[&["export"][..], &args].concat()), umask);
        env.run_cmd(c).ok();
    }
    let mut seen = 0;
    for p in walk(&env.path().join("exports")) {
        let m = mode(&p);
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            assert_eq!(m, 0o700, "{}", p.display());
        } else if name.ends_with("obd.log.bak") {
            assert_eq!(m, 0o400, "{}: stricter at the source, stricter in the export", p.display());
        } else {
            assert_eq!(m, 0o600, "{}", p.display());
        }
        seen += 1;
    }
    assert!(seen >= 12, "{seen} paths");
    let env_copy = walk(&dated).into_iter().find(|p| p.to_string_lossy().ends_with(".env.config")).unwrap();
    assert_eq!(std::fs::read(env_copy).unwrap(), std::fs::read(app.join(".env")).unwrap());
    assert_eq!(mode(&env.path().join("exports")), 0o700);
}

#[test]
fn latest_means_the_newest_scheduled_snapshot_unless_a_kind_is_named() {
    let env = Env::new();
    let (app, cfg, _db) = wal_app(&env, json!({}));
    env.run_cfg(&cfg, &["backup", "--now", "--type", "db"]).ok();
    let db = app.join("data/app.db");
    env.run_cfg(
        &cfg,
        &["snapshot", "--type", "db", "--kind", "manual", "--purpose", "copy for a colleague", db.to_str().unwrap()],
    )
    .ok();
    let snaps = snapshots(&env, &cfg);
    let (daily, manual) = (one(&snaps, "db", "daily")["id"].clone(), one(&snaps, "db", "manual")["id"].clone());
    let out = env.path().join("out");
    for (args, want) in [
        (vec!["--latest"], &daily),
        (vec!["--latest", "--layout", "dated"], &daily),
        (vec!["--latest", "--kind", "manual"], &manual),
    ] {
        let r = export(&env, &cfg, &[&args[..], &["--out", out.to_str().unwrap()]].concat());
        let got: Vec<&Value> = r.as_array().unwrap().iter().map(|f| &f["snapshot"]).collect();
        assert!(!got.is_empty() && got.iter().all(|g| *g == want), "{args:?}: {r:#}");
    }
    // Only manual snapshots of a kind asked for that has none: a clear error.
    let r = env.run_cfg(&cfg, &["export", "--latest", "--kind", "pre-change", "--out", out.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no pre-change snapshots"), "{}", r.stderr);
}

#[test]
fn backup_exports_as_configured_and_a_bad_export_section_names_the_file() {
    let env = Env::new();
    let out = env.path().join("backup");
    let (app, cfg, _db) = wal_app(&env, json!({"export": {"layout": "dated", "out": "../backup"}}));
    let r = env.run_cfg(&cfg, &["backup", "--now"]).ok();
    assert!(r.stdout.contains(&format!("export to {}", out.display())), "{}", r.stdout);
    let meta = metadata(&out);
    check_files(&out, &meta);
    let snaps = snapshots(&env, &cfg);
    let got: BTreeSet<String> = entries(&meta).into_keys().collect();
    let want: BTreeSet<String> = snaps.iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, want);
    // A pre-change snapshot taken between backups is in the metadata after the next backup.
    let db = app.join("data/app.db");
    env.run_cfg(
        &cfg,
        &["snapshot", "--type", "db", "--kind", "pre-change", "--description", "schema v3", db.to_str().unwrap()],
    )
    .ok();
    env.run_cfg(&cfg, &["backup", "--now", "--type", "db"]).ok();
    let meta = metadata(&out);
    check_files(&out, &meta);
    let pre: Vec<&Value> = meta["pre_change"].as_object().unwrap().values().collect();
    assert_eq!(pre.len(), 1, "{meta:#}");
    assert_eq!(pre[0]["description"], "schema v3");
    assert_eq!(entries(&meta).len(), snapshots(&env, &cfg).len());

    for (export, what) in [
        (json!({"layout": "zip", "out": "x"}), "backup.export.layout: unknown variant `zip`"),
        (json!({"layout": "dated"}), "backup.export: missing field `out`"),
        (json!({"layout": "dated", "out": "x", "keep": 3}), "backup.export.keep: unknown field `keep`"),
        (json!({"layout": "dated", "out": "backups/repo/x"}), "backup.export.out: "),
    ] {
        let mut v: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
        v["backup"]["export"] = export;
        let bad = cfg.with_file_name("bad.json");
        std::fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
        let r = env.run_cfg(&bad, &["backup", "--now"]);
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains(&format!("{}: {what}", bad.display())), "{what}: {}", r.stderr);
    }
}

#[test]
fn backup_prunes_the_days_retention_removed_and_leaves_foreign_files() {
    let env = Env::new();
    let out = env.path().join("backup");
    let (_app, cfg, _db) = wal_app(&env, json!({"export": {"layout": "dated", "out": "../backup"}}));
    let mut v: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["backup"]["types"]["db"]["retention"] = json!({"keep_last": 1});
    std::fs::write(&cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let backup = |day: &str| {
        let c = faked(env.cfg_cmd(&cfg, &["backup", "--now", "--type", "db"]), &format!("2026-03-{day} 03:00:00"));
        env.run_cmd(c).ok();
    };
    backup("01");
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    backup("02");
    assert!(!out.join("20260301").exists(), "the day retention emptied is removed");
    let day2 = out.join("20260302");
    let files2 = walk(&day2);
    assert_eq!(files2.len(), 1, "{files2:?}");
    std::fs::write(day2.join("colleague.txt"), "not cairn's").unwrap();
    backup("03");
    assert_eq!(walk(&day2), vec![day2.join("colleague.txt")], "only cairn's files go");
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    let meta = metadata(&out);
    check_files(&out, &meta);
    let days: Vec<String> = entries(&meta).values().map(|(_, k, _)| k[..8].to_string()).collect();
    assert_eq!(days, ["20260303"]);
}
