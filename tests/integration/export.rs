//! `export`: conventional archives of the example application's snapshots, read back with the real
//! `gunzip`, `sqlite3` and `tar`; reproducible bytes; seed 001's dated layout and its metadata.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::util::*;

fn tools() {
    ensure_package("sqlite3", || have_program("sqlite3"));
    ensure_package("gzip", || have_program("gunzip"));
    ensure_package("tar", || have_program("tar"));
}

fn run_tool(program: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<u8> {
    let mut c = Command::new(program);
    for a in args {
        c.arg(a);
    }
    let out = c.output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Checks `obd_backup_(db|logs|config)_YYYY-MM-DD_HHMMSS.(db.gz|tar.gz)`; returns (type, time part).
fn parse_export_name(name: &str) -> (String, String) {
    let rest = name.strip_prefix("obd_backup_").unwrap_or_else(|| panic!("{name}: prefix"));
    let (ty, rest) = rest.split_once('_').unwrap_or_else(|| panic!("{name}: type"));
    assert!(["db", "logs", "config"].contains(&ty), "{name}: type {ty}");
    let ext = if ty == "db" { ".db.gz" } else { ".tar.gz" };
    let stamp = rest.strip_suffix(ext).unwrap_or_else(|| panic!("{name}: extension {ext}"));
    let shape: String = stamp.chars().map(|c| if c.is_ascii_digit() { 'd' } else { c }).collect();
    assert_eq!(shape, "dddd-dd-dd_dddddd", "{name}: time");
    (ty.to_string(), stamp.to_string())
}

/// `YYYY-MM-DD_HHMMSS` of an RFC 3339 time, in the offset it was written with.
fn local_stamp(rfc3339: &str) -> String {
    format!("{}_{}", &rfc3339[..10], rfc3339[11..19].replace(':', ""))
}

/// Backs up the example app with TZ set; returns the app dir, config and snapshots by type.
fn backed_up_example(env: &Env, tz: &str) -> (PathBuf, PathBuf, BTreeMap<String, Value>) {
    let (app, cfg) = example_app(env.path());
    let mut c = env.cfg_cmd(&cfg, &["backup", "--now"]);
    c.env("TZ", tz);
    env.run_cmd(c).ok();
    let snaps = env.run_cfg(&cfg, &["snapshots", "--json"]).ok().json();
    let by_type: BTreeMap<String, Value> =
        snaps.as_array().unwrap().iter().map(|s| (s["type"].as_str().unwrap().to_string(), s.clone())).collect();
    assert_eq!(by_type.len(), 3);
    (app, cfg, by_type)
}

fn export(env: &Env, cfg: &Path, args: &[&str], tz: &str) -> Vec<PathBuf> {
    let mut c = env.cfg_cmd(cfg, &["export", "--json"]);
    c.args(args).env("TZ", tz);
    let v = env.run_cmd(c).ok().json();
    v.as_array().unwrap().iter().map(|e| PathBuf::from(e["file"].as_str().unwrap())).collect()
}

fn sqlite3_dump(db: &Path) -> Vec<u8> {
    run_tool("sqlite3", &[&db, &".dump"])
}

fn no_temp_files(dir: &Path) {
    let left: Vec<_> =
        walk(dir).into_iter().filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp-")).collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn flat_export_names_contents_and_reproducibility() {
    tools();
    let env = Env::new();
    // Snapshots taken at +05:30, exported under UTC: names carry the snapshot's own local time.
    let (app, cfg, snaps) = backed_up_example(&env, "IST-5:30");
    let out1 = env.path().join("out1");
    let files = export(&env, &cfg, &["--latest", "--out", out1.to_str().unwrap()], "UTC");
    assert_eq!(files.len(), 3);
    let mut by_type = BTreeMap::new();
    for f in &files {
        assert_eq!(f.parent().unwrap(), out1);
        let (ty, stamp) = parse_export_name(f.file_name().unwrap().to_str().unwrap());
        let time = snaps[&ty]["time"].as_str().unwrap();
        assert!(time.ends_with("+05:30"), "{time}");
        assert_eq!(stamp, local_stamp(time), "{ty}: name's time is not the snapshot's local time");
        by_type.insert(ty, f.clone());
    }
    assert_eq!(std::fs::read_dir(&out1).unwrap().count(), 3);
    no_temp_files(&out1);

    // The database: the real gunzip gives a database the real sqlite3 opens.
    let work = env.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let gz = work.join("copy.db.gz");
    std::fs::copy(&by_type["db"], &gz).unwrap();
    run_tool("gunzip", &[&gz]);
    let db = work.join("copy.db");
    let out = String::from_utf8(run_tool(
        "sqlite3",
        &[&db, &"PRAGMA integrity_check; SELECT count(*) FROM readings; SELECT count(*) FROM trips;"],
    ))
    .unwrap();
    let src = rusqlite::Connection::open(app.join("data/app.db")).unwrap();
    let readings: i64 = src.query_row("SELECT count(*) FROM readings", [], |r| r.get(0)).unwrap();
    let trips: i64 = src.query_row("SELECT count(*) FROM trips", [], |r| r.get(0)).unwrap();
    assert!(readings > 0 && trips > 0);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["ok".to_string(), readings.to_string(), trips.to_string()]);
    assert_eq!(snaps["db"]["source"]["sqlite.rows.readings"], readings.to_string());
    assert_eq!(sqlite3_dump(&db), sqlite3_dump(&app.join("data/app.db")), "exported database differs from the source");

    // Logs and config: the real tar lists and extracts them with their content.
    let list = String::from_utf8(run_tool("tar", &[&"tzf", &by_type["logs"]])).unwrap();
    // (Directory entries are typed as such; the name may or may not end in '/'.)
    let listed: BTreeSet<&str> = list.lines().map(|l| l.trim_end_matches('/')).collect();
    assert_eq!(listed, BTreeSet::from(["logs", "logs/app.log", "logs/app.log.2.gz", "logs/obd.log"]));
    let verbose = String::from_utf8(run_tool("tar", &[&"tvzf", &by_type["logs"]])).unwrap();
    let kinds: Vec<char> = verbose.lines().map(|l| l.chars().next().unwrap()).collect();
    assert_eq!(kinds, ['d', '-', '-', '-'], "{verbose}");
    let list = String::from_utf8(run_tool("tar", &[&"tzf", &by_type["config"]])).unwrap();
    assert_eq!(list.lines().collect::<BTreeSet<_>>(), BTreeSet::from(["config.json", ".env"]));
    let x = env.path().join("extracted");
    std::fs::create_dir_all(&x).unwrap();
    for ty in ["logs", "config"] {
        run_tool("tar", &[&"xzf", &by_type[ty], &"-C", &x]);
    }
    for rel in ["logs/app.log", "logs/app.log.2.gz", "logs/obd.log", "config.json", ".env"] {
        assert_eq!(std::fs::read(x.join(rel)).unwrap(), std::fs::read(app.join(rel)).unwrap(), "{rel}");
        let (a, b) = (std::fs::metadata(x.join(rel)).unwrap(), std::fs::metadata(app.join(rel)).unwrap());
        assert_eq!(
            filetime::FileTime::from_last_modification_time(&a).unix_seconds(),
            filetime::FileTime::from_last_modification_time(&b).unix_seconds(),
            "{rel} mtime"
        );
    }

    // The same snapshot twice (by id, another day, another time zone): the same bytes.
    let out2 = env.path().join("out2");
    let ids: Vec<String> =
        ["db", "logs", "config"].iter().map(|t| snaps[*t]["short_id"].as_str().unwrap().to_string()).collect();
    let mut args: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
    args.extend(["--out", out2.to_str().unwrap()]);
    let again = export(&env, &cfg, &args, "America/New_York");
    assert_eq!(again.len(), 3);
    for f in &again {
        let first = out1.join(f.file_name().unwrap());
        assert_eq!(std::fs::read(f).unwrap(), std::fs::read(&first).unwrap(), "{} is not reproducible", f.display());
    }
    // --name changes only the file name.
    let out3 = env.path().join("out3");
    let named = export(&env, &cfg, &["db:latest", "--name", "myapp", "--out", out3.to_str().unwrap()], "UTC");
    let n = named[0].file_name().unwrap().to_str().unwrap();
    assert_eq!(n, by_type["db"].file_name().unwrap().to_str().unwrap().replacen("obd_", "myapp_", 1));
    assert_eq!(std::fs::read(&named[0]).unwrap(), std::fs::read(&by_type["db"]).unwrap());
}

#[test]
fn dated_layout_writes_seed_001_files_and_metadata() {
    tools();
    let env = Env::new();
    let (app, cfg, snaps) = backed_up_example(&env, "UTC");
    let out = env.path().join("dated");
    let files = export(&env, &cfg, &["--latest", "--layout", "dated", "--out", out.to_str().unwrap()], "UTC");
    let day = snaps["db"]["time"].as_str().unwrap()[..10].replace('-', "");
    let dir = out.join(&day);
    // Each name carries its snapshot's time, type and kind: `HHMMSS_TYPE_daily_` before the name.
    let stamp = |ty: &str| format!("{}_{ty}_daily_", snaps[ty]["time"].as_str().unwrap()[11..19].replace(':', ""));
    let expected: Vec<(String, &str)> = vec![
        (format!("{}app.db", stamp("db")), "data/app.db"),
        (format!("{}config.json.config", stamp("config")), "config.json"),
        (format!("{}.env.config", stamp("config")), ".env"),
        (format!("logs/{}app.log.bak", stamp("logs")), "logs/app.log"),
        (format!("logs/{}app.log.2.gz.bak", stamp("logs")), "logs/app.log.2.gz"),
        (format!("logs/{}obd.log.bak", stamp("logs")), "logs/obd.log"),
    ];
    let got: BTreeSet<String> =
        files.iter().map(|f| f.strip_prefix(&dir).unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(got, expected.iter().map(|(n, _)| n.clone()).collect());
    for (rel, src) in &expected[1..] {
        assert_eq!(std::fs::read(dir.join(rel)).unwrap(), std::fs::read(app.join(src)).unwrap(), "{rel}");
    }
    assert_eq!(sqlite3_dump(&dir.join(&expected[0].0)), sqlite3_dump(&app.join("data/app.db")));

    let check_metadata = || {
        let meta: Value = serde_json::from_slice(&std::fs::read(out.join("backup_metadata.json")).unwrap()).unwrap();
        for section in ["daily", "pre_change", "manual"] {
            assert!(meta[section].is_object(), "{section}");
        }
        let daily = meta["daily"].as_object().unwrap();
        assert_eq!(daily.len(), 3, "one entry per snapshot");
        let mut listed = BTreeSet::new();
        for (key, entry) in daily {
            assert!(key.starts_with(&format!("{day}_")), "{key}");
            assert_eq!(entry["status"], "active");
            let ty = entry["type"].as_str().unwrap();
            assert_eq!(entry["snapshot"], snaps[ty]["id"], "{key}");
            assert_eq!(entry["created"].as_str().unwrap()[..19], snaps[ty]["time"].as_str().unwrap()[..19]);
            for (rel, f) in entry["files"].as_object().unwrap() {
                let bytes = std::fs::read(out.join(rel)).unwrap();
                assert_eq!(f["size"], bytes.len() as u64, "{rel} size");
                assert_eq!(f["hash"], hex::encode(Sha256::digest(&bytes)), "{rel} sha256");
                if ty == "db" {
                    assert_eq!(f["has_wal"], false);
                }
                listed.insert(rel.strip_prefix(&format!("{day}/")).unwrap().to_string());
            }
        }
        assert_eq!(listed, expected.iter().map(|(n, _)| n.clone()).collect());
    };
    check_metadata();
    no_temp_files(&out);
    // Exporting again leaves the files as they are and keeps one entry per snapshot.
    let before = fingerprint(&dir);
    export(&env, &cfg, &["--latest", "--layout", "dated", "--out", out.to_str().unwrap()], "UTC");
    assert_eq!(fingerprint(&dir), before);
    check_metadata();
}
