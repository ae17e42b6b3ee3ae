//! Remotes through the real `rclone` binary: `sync` uploads exactly what a remote lacks and marks a
//! file synced only once a fresh listing shows it; `verify --remote` compares inventories; a
//! remote alone lists, restores, exports, verifies and clones. Remotes are local paths
//! (`:local:/...`) and WebDAV servers (`rclone serve webdav`) on 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

fn need_rclone() {
    ensure_package("rclone", || have_program("rclone"));
}

/// `rclone serve webdav DIR` on a free loopback port; killed by its own id when dropped.
struct WebDav {
    child: Child,
    port: u16,
}

impl WebDav {
    fn start(dir: &Path, extra: &[&str]) -> WebDav {
        need_rclone();
        std::fs::create_dir_all(dir).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("rclone")
            .args(["serve", "webdav"])
            .arg(dir)
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rclone serve webdav");
        let mut w = WebDav { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok() {
                return w;
            }
            if let Ok(Some(st)) = w.child.try_wait() {
                panic!("rclone serve webdav exited before listening: {st}");
            }
            assert!(Instant::now() < deadline, "rclone serve webdav is not listening on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An on-the-fly rclone target for `sub` on this server.
    fn target(&self, sub: &str) -> String {
        format!(":webdav,url='http://127.0.0.1:{}':{sub}", self.port)
    }
}

impl Drop for WebDav {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `:local:DIR`.
fn local_target(dir: &Path) -> String {
    format!(":local:{}", dir.display())
}

/// Sets the `remotes` of a config file (the app's `backup` section or a standalone cairn.json).
fn set_remotes(cfg: &Path, remotes: Value) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(cfg).unwrap()).unwrap();
    if v.get("backup").is_some() {
        v["backup"]["remotes"] = remotes;
    } else {
        v["remotes"] = remotes;
    }
    std::fs::write(cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// The example app with `remotes` configured; returns (app dir, config).
fn app_with_remotes(env: &Env, remotes: Value) -> (PathBuf, PathBuf) {
    need_rclone();
    let (app, cfg) = example_app(env.path());
    set_remotes(&cfg, remotes);
    (app, cfg)
}

/// Every regular file under `root`, relative, with its size.
fn files_under(root: &Path) -> BTreeMap<String, u64> {
    if !root.exists() {
        return BTreeMap::new();
    }
    walk(root)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let size = std::fs::metadata(&p).unwrap().len();
            (p.strip_prefix(root).unwrap().to_string_lossy().into_owned(), size)
        })
        .collect()
}

/// What a complete remote copy of `repo` holds: config, keys, packs, index files, snapshots.
fn inventory(repo: &Path) -> BTreeMap<String, u64> {
    files_under(repo)
        .into_iter()
        .filter(|(rel, _)| {
            rel == "config" || ["keys/", "packs/", "index/", "snapshots/"].iter().any(|d| rel.starts_with(d))
        })
        .collect()
}

/// Upload order: config and keys, packs, index files, snapshots.
fn rank(rel: &str) -> u8 {
    match rel.split('/').next().unwrap() {
        "config" | "keys" => 0,
        "packs" => 1,
        "index" => 2,
        _ => 3,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn set(v: &Value) -> BTreeSet<String> {
    strings(v).into_iter().collect()
}

/// `sync --json` with a config; returns the report of its one remote.
fn sync_report(env: &Env, cfg: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["sync", "--json"];
    args.extend_from_slice(extra);
    let v = env.run_cfg(cfg, &args).ok().json();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert!(v[0]["error"].is_null(), "{v}");
    v[0]["report"].clone()
}

/// Asserts every file of `files` is byte-identical in `repo` and on the remote directory `remote`.
fn assert_same_bytes<'a>(repo: &Path, remote: &Path, files: impl IntoIterator<Item = &'a String>) {
    for rel in files {
        let a = std::fs::read(repo.join(rel)).unwrap();
        let b = std::fs::read(remote.join(rel)).unwrap_or_else(|e| panic!("remote {rel}: {e}"));
        assert!(a == b, "remote copy of {rel} differs from the local file");
    }
}

/// A command run on a bare machine: a fresh HOME, no local repository, no config, the password
/// only in `password_file`, everything read from `--remote TARGET`.
fn bare(env: &Env, target: &str, password_file: &Path, args: &[&str]) -> Command {
    let mut c = env.cmd();
    c.env_remove("CAIRN_REPO")
        .env_remove("CAIRN_PASSWORD")
        .arg("--remote")
        .arg(target)
        .arg("--password-file")
        .arg(password_file)
        .args(args);
    c
}

/// A small change to the example app: a few readings and a log line.
fn small_change(app: &Path) {
    let c = rusqlite::Connection::open(app.join("data/app.db")).unwrap();
    for i in 0..20 {
        c.execute(
            "INSERT INTO readings(ts, pid, value, unit, raw) VALUES(?1, '0C', ?2, 'rpm', x'410c1af8')",
            rusqlite::params![1.9e9 + i as f64, 800.0 + i as f64],
        )
        .unwrap();
    }
    drop(c);
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(app.join("logs/app.log")).unwrap();
    writeln!(f, "2026-11-22 03:00:00 INFO trip 4711 ended, 12.3 km").unwrap();
}

#[test]
fn local_remote_gets_exactly_the_missing_files() {
    let env = Env::new();
    let usb = env.path().join("usb");
    let (app, cfg) = app_with_remotes(&env, json!([{ "name": "usb", "rclone": local_target(&usb) }]));
    let repo = app.join("backups/repo");
    env.run_cfg(&cfg, &["backup", "--now", "--no-sync"]).ok();
    assert!(files_under(&usb).is_empty(), "--no-sync uploaded something");
    let status = env.run_cfg(&cfg, &["status", "--json"]).verdict().json();
    let local = inventory(&repo);
    assert_eq!(status["remotes"][0]["pending_files"], json!(local.len()), "{status}");

    // First sync: everything, config and keys first, then packs, index files, snapshots.
    let r = sync_report(&env, &cfg, &[]);
    let up = strings(&r["uploaded"]);
    assert_eq!(
        up.iter().cloned().collect::<BTreeSet<_>>(),
        local.keys().cloned().collect(),
        "first sync uploads the whole repository"
    );
    assert_eq!(up.len(), local.len(), "each file once: {up:?}");
    assert_eq!(up[0], "config");
    assert!(up.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])), "upload order: {up:?}");
    assert_eq!(r["uploaded_bytes"], json!(local.values().sum::<u64>()));
    assert_eq!(files_under(&usb), local, "the remote holds exactly the repository's files");
    assert_same_bytes(&repo, &usb, local.keys());
    let status = env.run_cfg(&cfg, &["status", "--json"]).verdict().json();
    assert_eq!(status["remotes"][0]["pending_files"], json!(0), "{status}");
    assert!(status["remotes"][0]["last_sync"].is_string(), "{status}");

    // Second sync: nothing to do.
    let r = sync_report(&env, &cfg, &[]);
    assert_eq!(r["uploaded"], json!([]), "{r}");
    assert_eq!(r["uploaded_bytes"], json!(0));
    for k in ["repaired", "deleted", "foreign", "duplicates"] {
        assert_eq!(r[k], json!([]), "{k}: {r}");
    }

    // A new backup, then sync: only the files it added.
    small_change(&app);
    env.run_cfg(&cfg, &["backup", "--now", "--no-sync"]).ok();
    let after = inventory(&repo);
    let new: BTreeSet<String> = after.keys().filter(|k| !local.contains_key(*k)).cloned().collect();
    assert!(new.iter().any(|f| f.starts_with("snapshots/")) && new.iter().any(|f| f.starts_with("packs/")), "{new:?}");
    let dry = sync_report(&env, &cfg, &["--dry-run"]);
    assert_eq!(set(&dry["uploaded"]), new, "dry run");
    assert_eq!(files_under(&usb), local, "a dry run changes nothing");
    let r = sync_report(&env, &cfg, &[]);
    let up = strings(&r["uploaded"]);
    assert_eq!(up.iter().cloned().collect::<BTreeSet<_>>(), new, "only the new files");
    assert!(up.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])), "upload order: {up:?}");
    let bytes: u64 = new.iter().map(|f| after[f]).sum();
    assert_eq!(r["uploaded_bytes"], json!(bytes));
    assert_eq!(r["deleted"], json!([]));
    assert_eq!(files_under(&usb), after);
    assert_same_bytes(&repo, &usb, after.keys());
    eprintln!("daily sync of examples/app after a small change: {} files, {bytes} bytes", new.len());

    let v = env.run_cfg(&cfg, &["verify", "--remote", "usb", "--json"]).ok().json();
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["checked"], json!(after.len()));
    for k in ["missing", "mismatched", "pending", "extra", "duplicates"] {
        assert_eq!(v[k], json!([]), "{k}: {v}");
    }
    let h = env.run_cfg(&cfg, &["history", "--json", "--type", "sync:usb"]).ok().json();
    assert!(h.as_array().unwrap().len() >= 3 && h.as_array().unwrap().iter().all(|r| r["result"] == "success"), "{h}");
}

#[test]
fn webdav_remote_sync_and_restore_from_it_alone() {
    let env = Env::new();
    let dav = WebDav::start(&env.path().join("served"), &[]);
    let target = dav.target("backups/obd");
    let (app, cfg) = app_with_remotes(&env, json!([{ "name": "dav", "rclone": target }]));
    // `backup` syncs after a successful run.
    let rep = env.run_cfg(&cfg, &["backup", "--now", "--json"]).ok().json();
    let s = &rep["sync"];
    assert_eq!(s.as_array().unwrap().len(), 1, "{rep}");
    assert!(s[0]["error"].is_null(), "{rep}");
    let local = inventory(&app.join("backups/repo"));
    assert_eq!(s[0]["uploaded"], json!(local.len()), "{rep}");
    let served = env.path().join("served/backups/obd");
    assert_eq!(files_under(&served), local);
    assert_same_bytes(&app.join("backups/repo"), &served, local.keys());
    // WebDAV reports no MD5: sizes alone are compared, and they agree.
    let v = env.run_cfg(&cfg, &["verify", "--remote", "dav", "--json"]).ok().json();
    assert_eq!(v["ok"], json!(true), "{v}");
    let r = sync_report(&env, &cfg, &[]);
    assert_eq!(r["uploaded"], json!([]), "{r}");

    // Restore from the remote alone, on a machine without the repository.
    let want_db = env.run_cfg_raw(&cfg, &["cat", "db:latest", "app.db"]);
    assert_eq!(want_db.code, 0, "{}", want_db.stderr);
    let bare_env = Env::new();
    let pw = app.join("cairn-password");
    let d = bare_env.path().join("restored");
    bare_env.run_cmd(bare(&bare_env, &target, &pw, &["restore", "db:latest", "--target", d.to_str().unwrap()])).ok();
    assert!(
        std::fs::read(d.join("app.db")).unwrap() == want_db.stdout,
        "restored database differs from `cat` of the original"
    );
    let l = bare_env.path().join("logs");
    bare_env.run_cmd(bare(&bare_env, &target, &pw, &["restore", "logs:latest", "--target", l.to_str().unwrap()])).ok();
    for f in ["app.log", "obd.log", "app.log.2.gz"] {
        assert_eq!(
            std::fs::read(l.join("logs").join(f)).unwrap(),
            std::fs::read(app.join("logs").join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!bare_env.repo().exists());
}

/// Direct children of `pid` named `rclone`.
fn rclone_children(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..].split_whitespace().nth(1).and_then(|x| x.parse::<u32>().ok());
        if ppid == Some(pid) && &stat[open + 1..close] == "rclone" {
            out.push(p);
        }
    }
    out
}

/// Starts `sync` in its own process group, waits until packs are arriving on the server, lets it
/// run about a second, then SIGKILLs either the whole group (cairn and rclone) or only the
/// rclone child. Returns cairn's exit code (-1 when killed) and its output.
fn interrupted_sync(env: &Env, cfg: &Path, served: &Path, whole_group: bool) -> (i32, String) {
    let mut c = env.cfg_cmd(cfg, &["sync"]);
    c.process_group(0).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn cairn sync");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while files_under(&served.join("packs")).is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "sync ended before it could be interrupted");
        assert!(Instant::now() < deadline, "no pack reached the server");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(child.try_wait().unwrap().is_none(), "sync ended before it could be interrupted");
    if whole_group {
        // SAFETY: signals the process group we created for this child.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    } else {
        let kids = rclone_children(pid);
        assert!(!kids.is_empty(), "no rclone child to kill");
        for k in kids {
            // SAFETY: signals a process we found as our child's child.
            unsafe { libc::kill(k, libc::SIGKILL) };
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// After an interrupted sync: nothing is missing or mismatched, every file verify does not call
/// pending is byte-identical on the server, every file recorded synced is among those, and the
/// partial files are exactly the pending ones the server holds. Returns the partial files.
fn assert_nothing_wrongly_marked(env: &Env, cfg: &Path, repo: &Path, served: &Path) -> BTreeSet<String> {
    let local = inventory(repo);
    let v = env.run_cfg(cfg, &["verify", "--remote", "dav", "--json"]).code(0).json();
    assert_eq!(v["missing"], json!([]), "{v}");
    assert_eq!(v["mismatched"], json!([]), "{v}");
    let pending = set(&v["pending"]);
    let partial = set(&v["partial"]);
    assert!(partial.is_subset(&pending), "{v}");
    let on_server = files_under(served);
    let complete: Vec<&String> = local.keys().filter(|f| !pending.contains(*f)).collect();
    assert_same_bytes(repo, served, complete.iter().copied());
    for f in &pending {
        match on_server.get(f) {
            Some(size) => {
                assert!(partial.contains(f), "{f} is on the server, pending, and not called partial: {v}");
                assert_ne!(*size, local[f], "{f}");
            }
            None => assert!(!partial.contains(f)),
        }
    }
    let st = env.run_cfg(cfg, &["status", "--json"]).verdict().json();
    let unmarked = st["remotes"][0]["pending_files"].as_u64().unwrap() as usize;
    assert!(unmarked >= pending.len(), "files recorded synced that are not on the server: {st} {v}");
    partial
}

#[test]
fn killed_sync_marks_nothing_wrongly_and_resumes() {
    let env = Env::new();
    let served = env.path().join("served");
    let dav = WebDav::start(&served, &[]);
    let data = env.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // ~40 MB of incompressible data: ten 4 MiB packs.
    for i in 0..4u64 {
        std::fs::write(data.join(format!("part{i}.bin")), prng_bytes(1000 + i, 10 << 20)).unwrap();
    }
    let remote = |flags: Value| json!([{ "name": "dav", "rclone": dav.target(""), "flags": flags }]);
    let cfg = write_config(
        env.path(),
        json!({ "name": "big", "repository": "repo", "password_file": "cairn-password",
                "types": { "data": { "paths": ["data"] } }, "remotes": remote(json!(["--bwlimit", "5M"])) }),
    );
    let repo = env.path().join("repo");
    env.run_cfg(&cfg, &["init", "--pack-size-mib", "4"]).ok();
    env.run_cfg(&cfg, &["backup", "--now", "--no-sync"]).ok();
    let local = inventory(&repo);
    assert!(local.keys().filter(|f| f.starts_with("packs/")).count() >= 8, "{local:?}");

    // rclone dies under cairn: the sync fails, says so, and records nothing.
    let (code, out) = interrupted_sync(&env, &cfg, &served, false);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("rclone copy failed"), "{out}");
    let partial1 = assert_nothing_wrongly_marked(&env, &cfg, &repo, &served);
    let st = env.run_cfg(&cfg, &["status", "--json"]).verdict().json();
    // Only the first group (config and keys) can have been checked and recorded before the
    // killed pack upload; no pack, index file or snapshot may be.
    let after_first_group = local.keys().filter(|f| *f != "config" && !f.starts_with("keys/")).count() as u64;
    let pending = st["remotes"][0]["pending_files"].as_u64().unwrap();
    assert!(
        pending >= after_first_group && pending <= local.len() as u64,
        "only config and keys may be recorded synced: {st}"
    );
    assert!(!partial1.is_empty(), "expected a partial upload on the server");

    // cairn and rclone both killed.
    let (code, out) = interrupted_sync(&env, &cfg, &served, true);
    assert_eq!(code, -1, "{out}");
    let partial2 = assert_nothing_wrongly_marked(&env, &cfg, &repo, &served);

    // The next sync completes: partial files are replaced, the rest uploaded, all verified.
    set_remotes(&cfg, remote(json!([])));
    let r = sync_report(&env, &cfg, &[]);
    assert_eq!(set(&r["repaired"]), partial2, "{r}");
    assert_eq!(files_under(&served), local);
    assert_same_bytes(&repo, &served, local.keys());
    let v = env.run_cfg(&cfg, &["verify", "--remote", "dav", "--json"]).ok().json();
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["pending"], json!([]), "{v}");
    let st = env.run_cfg(&cfg, &["status", "--json"]).verdict().json();
    assert_eq!(st["remotes"][0]["pending_files"], json!(0), "{st}");

    // And the remote alone restores the data byte for byte.
    let bare_env = Env::new();
    let d = bare_env.path().join("restored");
    bare_env
        .run_cmd(bare(
            &bare_env,
            &dav.target(""),
            &env.path().join("cairn-password"),
            &["restore", "latest", "--target", d.to_str().unwrap()],
        ))
        .ok();
    for i in 0..4u64 {
        let name = format!("data/part{i}.bin");
        assert!(
            std::fs::read(d.join(&name)).unwrap() == std::fs::read(env.path().join(&name)).unwrap(),
            "{name} differs"
        );
    }
}

#[test]
fn deleted_or_altered_remote_file_is_damage_and_sync_repairs_it() {
    let env = Env::new();
    let usb = env.path().join("usb");
    let (app, cfg) = app_with_remotes(&env, json!([{ "name": "usb", "rclone": local_target(&usb) }]));
    let repo = app.join("backups/repo");
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    let local = inventory(&repo);
    assert_eq!(files_under(&usb), local, "backup synced");
    let mut packs: Vec<(&String, &u64)> = local.iter().filter(|(f, _)| f.starts_with("packs/")).collect();
    packs.sort_by_key(|(_, s)| **s);
    let (gone, altered) = (packs[0].0.clone(), packs[packs.len() - 1].0.clone());

    // Deleted behind cairn's back.
    std::fs::remove_file(usb.join(&gone)).unwrap();
    let v = env.run_cfg(&cfg, &["verify", "--remote", "usb", "--json"]).code(3).json();
    assert_eq!(v["missing"], json!([gone]), "{v}");
    assert_eq!(v["ok"], json!(false));
    let human = env.run_cfg(&cfg, &["verify", "--remote", "usb"]).code(3);
    assert!(human.stdout.contains(&format!("MISSING on remote usb: {gone}")), "{}", human.stdout);
    let r = sync_report(&env, &cfg, &[]);
    assert_eq!(r["uploaded"], json!([gone]), "{r}");
    assert_eq!(r["repaired"], json!([gone]), "{r}");
    assert_same_bytes(&repo, &usb, [&gone]);
    env.run_cfg(&cfg, &["verify", "--remote", "usb"]).ok();

    // Altered: same length, other bytes (the MD5 differs).
    let mut b = std::fs::read(usb.join(&altered)).unwrap();
    for x in b.iter_mut().skip(100).step_by(997) {
        *x ^= 0xa5;
    }
    std::fs::write(usb.join(&altered), &b).unwrap();
    let v = env.run_cfg(&cfg, &["verify", "--remote", "usb", "--json"]).code(3).json();
    assert_eq!(v["mismatched"], json!([altered]), "{v}");
    assert_eq!(v["missing"], json!([]), "{v}");
    let human = env.run_cfg(&cfg, &["verify", "--remote", "usb"]).code(3);
    assert!(human.stdout.contains(&format!("MISMATCH on remote usb: {altered}")), "{}", human.stdout);
    let r = sync_report(&env, &cfg, &[]);
    assert_eq!(r["repaired"], json!([altered]), "{r}");
    assert_eq!(r["uploaded"], json!([altered]), "{r}");
    assert_same_bytes(&repo, &usb, local.keys());
    assert_eq!(files_under(&usb), local);
    let v = env.run_cfg(&cfg, &["verify", "--remote", "usb", "--json"]).ok().json();
    assert_eq!(v["ok"], json!(true), "{v}");
}

#[test]
fn refusing_remote_fails_the_sync_not_the_backup() {
    let env = Env::new();
    let ro_dir = env.path().join("ro");
    let ro = WebDav::start(&ro_dir, &["--read-only"]);
    let good = env.path().join("good");
    let ro_remote = |target: String| json!({ "name": "ro", "rclone": target, "flags": ["--retries", "1"] });
    let (app, cfg) =
        app_with_remotes(&env, json!([{ "name": "good", "rclone": local_target(&good) }, ro_remote(ro.target("obd"))]));
    let repo = app.join("backups/repo");

    env.run_cfg(&cfg, &["backup", "--now", "--no-sync"]).ok();
    let r = env.run_cfg(&cfg, &["sync", "--remote", "ro"]).code(1);
    assert!(r.stdout.contains("ro: FAILED") && r.stdout.contains("rclone copy failed"), "{}", r.stdout);
    assert!(r.stderr.contains("1 of 1 remotes failed to sync"), "{}", r.stderr);

    small_change(&app);
    let rep = env.run_cfg(&cfg, &["backup", "--now", "--json"]).ok().json();
    let by_name: BTreeMap<String, &Value> =
        rep["sync"].as_array().unwrap().iter().map(|s| (s["remote"].as_str().unwrap().to_string(), s)).collect();
    assert!(by_name["good"]["error"].is_null(), "{rep}");
    assert!(by_name["ro"]["error"].as_str().is_some_and(|e| e.contains("rclone copy failed")), "{rep}");
    let text = env.run_cfg(&cfg, &["backup", "--now", "--type", "db"]).ok();
    assert!(text.stdout.contains("sync ro: FAILED (the backup is safe locally"), "{}", text.stdout);

    let h = env.run_cfg(&cfg, &["history", "--json"]).ok().json();
    let runs = h.as_array().unwrap();
    assert!(
        runs.iter().any(|r| r["backup_type"] == "sync:ro"
            && r["result"] == "failed"
            && r["error"].as_str().is_some_and(|e| !e.is_empty())),
        "{h}"
    );
    assert!(runs.iter().any(|r| r["backup_type"] == "sync:good" && r["result"] == "success"), "{h}");
    assert!(runs.iter().any(|r| r["backup_type"] == "db" && r["result"] == "success"), "{h}");
    let st = env.run_cfg(&cfg, &["status", "--json"]).verdict().json();
    let remotes: BTreeMap<String, &Value> =
        st["remotes"].as_array().unwrap().iter().map(|r| (r["name"].as_str().unwrap().to_string(), r)).collect();
    assert!(remotes["ro"]["pending_files"].as_u64().unwrap() > 0, "{st}");
    assert!(remotes["ro"]["last_error"].is_string(), "{st}");
    assert_eq!(remotes["good"]["pending_files"], json!(0), "{st}");
    assert!(files_under(&ro_dir).is_empty(), "a read-only remote received files");
    let text = env.run_cfg(&cfg, &["status"]).code(7);
    assert!(text.stdout.contains("last sync FAILED"), "{}", text.stdout);

    // The remote becomes writable: the next sync catches up on everything.
    let rw = WebDav::start(&ro_dir, &[]);
    set_remotes(&cfg, json!([{ "name": "good", "rclone": local_target(&good) }, ro_remote(rw.target("obd"))]));
    let local = inventory(&repo);
    let r = env.run_cfg(&cfg, &["sync", "--remote", "ro", "--json"]).ok().json();
    assert_eq!(set(&r[0]["report"]["uploaded"]), local.keys().cloned().collect(), "{r}");
    assert_eq!(files_under(&ro_dir.join("obd")), local);
    let st = env.run_cfg(&cfg, &["status", "--json"]).verdict().json();
    assert!(st["remotes"].as_array().unwrap().iter().all(|r| r["pending_files"] == json!(0)), "{st}");
    env.run_cfg(&cfg, &["verify", "--remote", "ro"]).ok();
}

#[test]
fn disaster_recovery_from_the_remote_alone() {
    let env = Env::new();
    let usb = env.path().join("usb");
    let (app, cfg) = app_with_remotes(&env, json!([{ "name": "usb", "rclone": local_target(&usb) }]));
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    small_change(&app);
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    let want_db = env.run_cfg_raw(&cfg, &["cat", "db:latest", "app.db"]);
    assert_eq!(want_db.code, 0, "{}", want_db.stderr);
    let e0 = env.path().join("export-local");
    env.run_cfg(&cfg, &["export", "--latest", "--name", "obd", "--out", e0.to_str().unwrap()]).ok();
    let snaps = env.run_cfg(&cfg, &["snapshots", "--json"]).ok().json();
    let ids: Vec<&Value> = snaps.as_array().unwrap().iter().map(|s| &s["id"]).collect();

    // A bare machine: no repository, no config, a password file and the remote's address.
    let dr = Env::new();
    let pw = dr.path().join("password");
    std::fs::copy(app.join("cairn-password"), &pw).unwrap();
    let target = local_target(&usb);
    let run = |args: &[&str]| dr.run_cmd(bare(&dr, &target, &pw, args));
    let listed = run(&["snapshots", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().iter().map(|s| &s["id"]).collect::<Vec<_>>(), ids);
    let d = dr.path().join("restored");
    run(&["restore", "db:latest", "--target", d.to_str().unwrap()]).ok();
    assert!(
        std::fs::read(d.join("app.db")).unwrap() == want_db.stdout,
        "restored database differs from `cat` of the original"
    );
    let e = dr.path().join("export-remote");
    run(&["export", "--latest", "--name", "obd", "--out", e.to_str().unwrap()]).ok();
    let (a, b) = (files_under(&e0), files_under(&e));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert_eq!(a.len(), 3);
    for name in a.keys() {
        assert!(std::fs::read(e0.join(name)).unwrap() == std::fs::read(e.join(name)).unwrap(), "export {name} differs");
    }
    let v = run(&["verify", "--read-data", "--json"]).ok().json();
    assert_eq!(v["ok"], json!(true), "{v}");
    assert!(!dr.repo().exists() && !dr.path().join("cairn.json").exists());

    // verify --read-data as the first command on another bare machine (no pack fetched yet).
    let dr2 = Env::new();
    let v = dr2.run_cmd(bare(&dr2, &target, &pw, &["verify", "--read-data", "--json"])).ok().json();
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["packs_read"], v["packs"], "{v}");

    // clone: a complete local repository again.
    let new = dr.path().join("new-repo");
    run(&["clone", "--repo", new.to_str().unwrap()]).ok();
    let mut c = dr.cmd();
    c.env_remove("CAIRN_PASSWORD").arg("--repo").arg(&new).arg("--password-file").arg(&pw).args([
        "verify",
        "--read-data",
        "--json",
    ]);
    let v = dr.run_cmd(c).ok().json();
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(inventory(&new), inventory(&app.join("backups/repo")));
}

#[test]
fn prune_then_sync_deletes_what_prune_removed_and_nothing_else() {
    need_rclone();
    let env = Env::new();
    let usb = env.path().join("usb");
    let a = env.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    let cfg = write_config(
        env.path(),
        json!({ "name": "p", "repository": "repo", "password_file": "cairn-password",
                "forget_after_backup": false, "prune_after_backup": false,
                "types": { "a": { "paths": ["a"], "retention": { "keep_last": 1 } } },
                "remotes": [{ "name": "usb", "rclone": local_target(&usb) }] }),
    );
    let repo = env.path().join("repo");
    std::fs::write(a.join("f.bin"), prng_bytes(1, 300_000)).unwrap();
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    std::fs::write(a.join("f.bin"), prng_bytes(2, 300_000)).unwrap();
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    let before = inventory(&repo);
    assert_eq!(files_under(&usb), before);
    std::fs::write(usb.join("notes.txt"), "kept by someone else\n").unwrap();
    std::fs::create_dir_all(usb.join("packs/zz")).unwrap();
    std::fs::write(usb.join("packs/zz/foreign"), "not cairn's\n").unwrap();

    env.run_cfg(&cfg, &["forget"]).ok();
    env.run_cfg(&cfg, &["prune"]).ok();
    let after = inventory(&repo);
    let removed: BTreeSet<String> = before.keys().filter(|f| !after.contains_key(*f)).cloned().collect();
    let added: BTreeSet<String> = after.keys().filter(|f| !before.contains_key(*f)).cloned().collect();
    assert!(
        removed.iter().any(|f| f.starts_with("snapshots/")) && removed.iter().any(|f| f.starts_with("packs/")),
        "{removed:?}"
    );
    let foreign: BTreeSet<String> = ["notes.txt".to_string(), "packs/zz/foreign".to_string()].into();

    let dry = sync_report(&env, &cfg, &["--dry-run"]);
    assert_eq!(set(&dry["deleted"]), removed, "{dry}");
    assert_eq!(files_under(&usb).len(), before.len() + 2, "a dry run deletes nothing");
    let r = sync_report(&env, &cfg, &[]);
    let deleted = strings(&r["deleted"]);
    assert_eq!(deleted.iter().cloned().collect::<BTreeSet<_>>(), removed, "{r}");
    assert!(
        deleted.windows(2).all(|w| rank(&w[0]) >= rank(&w[1])),
        "deletions go snapshots first, packs last: {deleted:?}"
    );
    assert_eq!(set(&r["uploaded"]), added, "{r}");
    assert_eq!(set(&r["foreign"]), foreign, "{r}");
    let mut want: BTreeSet<String> = after.keys().cloned().collect();
    want.extend(foreign.iter().cloned());
    assert_eq!(files_under(&usb).into_keys().collect::<BTreeSet<_>>(), want);
    assert_eq!(std::fs::read_to_string(usb.join("notes.txt")).unwrap(), "kept by someone else\n");
    let text = env.run_cfg(&cfg, &["sync"]).ok();
    assert!(
        text.stdout.contains("foreign (not written by this repository, not deleted): packs/zz/foreign"),
        "{}",
        text.stdout
    );
    let v = env.run_cfg(&cfg, &["verify", "--remote", "usb", "--json"]).ok().json();
    assert_eq!(set(&v["extra"]), foreign, "{v}");
}

#[test]
fn a_remote_path_holding_another_repository_is_not_overwritten() {
    need_rclone();
    let (one, two) = (Env::new(), Env::new());
    let shared = one.path().join("shared");
    let target = local_target(&shared);
    for env in [&one, &two] {
        env.init();
        std::fs::write(env.path().join("f"), b"some data").unwrap();
        env.run(&["snapshot", "--type", "files", "f"]).ok();
    }
    one.run(&["sync", "--remote", &target]).ok();
    let r = two.run(&["sync", "--remote", &target]).code(1);
    assert!(r.stdout.contains("holds another cairn repository"), "{}", r.stdout);
    assert_eq!(std::fs::read(shared.join("config")).unwrap(), std::fs::read(one.repo().join("config")).unwrap());
    assert_eq!(files_under(&shared), inventory(&one.repo()));
}

/// A remote's own retention keeps fewer snapshots than the local repository: the others are
/// never uploaded, or are removed from the remote, and count as neither pending nor missing.
#[test]
fn remote_retention_keeps_only_its_own_snapshots() {
    let env = Env::new();
    let usb = env.path().join("usb");
    let (app, cfg) = app_with_remotes(
        &env,
        json!([{ "name": "usb", "rclone": local_target(&usb), "retention": { "keep_last": 1 } }]),
    );
    let repo = app.join("backups/repo");
    env.run_cfg(&cfg, &["backup", "--now", "--type", "logs"]).ok();
    small_change(&app);
    env.run_cfg(&cfg, &["backup", "--now", "--type", "logs"]).ok();
    let local_snaps: BTreeSet<String> = inventory(&repo).into_keys().filter(|f| f.starts_with("snapshots/")).collect();
    let remote_snaps: BTreeSet<String> =
        files_under(&usb).into_keys().filter(|f| f.starts_with("snapshots/")).collect();
    assert_eq!(local_snaps.len(), 2, "both snapshots stay local: {local_snaps:?}");
    assert_eq!(remote_snaps.len(), 1, "the remote keeps only its newest: {remote_snaps:?}");
    assert!(remote_snaps.is_subset(&local_snaps));
    let newest = env.run_cfg(&cfg, &["snapshots", "--json"]).ok().json();
    let newest_id = newest.as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
    assert!(remote_snaps.contains(&format!("snapshots/{newest_id}")), "{remote_snaps:?} vs {newest_id}");
    let st = env.run_cfg(&cfg, &["status", "--json"]).verdict().json();
    assert_eq!(st["remotes"][0]["pending_files"], json!(0), "left-out snapshots are not pending: {st}");
    env.run_cfg(&cfg, &["verify", "--remote", "usb"]).ok();
}

/// Removes the local record of what each remote holds (and the cached MD5s): `state/history.sqlite`.
fn forget_sync_records(repo: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let p = repo.join(format!("state/history.sqlite{ext}"));
        if p.exists() {
            std::fs::remove_file(&p).unwrap();
        }
    }
}

/// Makes a local file writable and lets `f` damage it.
fn damage(path: &Path, f: impl FnOnce(&std::fs::File)) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    f(&file);
    file.sync_all().unwrap();
}

fn flip_byte(file: &std::fs::File) {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, 40).unwrap();
    b[0] ^= 0x10;
    file.write_all_at(&b, 40).unwrap();
}

fn truncate(file: &std::fs::File) {
    let len = file.metadata().unwrap().len();
    file.set_len(len / 2).unwrap();
}

#[test]
fn damaged_local_packs_are_never_uploaded_and_are_repaired_from_the_remote() {
    let env = Env::new();
    let usb = env.path().join("usb");
    let (app, cfg) = app_with_remotes(&env, json!([{ "name": "usb", "rclone": local_target(&usb) }]));
    let repo = app.join("backups/repo");
    env.run_cfg(&cfg, &["backup", "--now", "--no-sync"]).ok();
    env.run_cfg(&cfg, &["sync"]).ok();
    let local = inventory(&repo);
    assert_eq!(files_under(&usb), local);
    let packs: Vec<String> = local.keys().filter(|f| f.starts_with("packs/")).cloned().collect();
    assert!(packs.len() >= 2, "{packs:?}");
    let remote_before: BTreeMap<String, Vec<u8>> =
        local.keys().map(|f| (f.clone(), std::fs::read(usb.join(f)).unwrap())).collect();

    let (flipped, cut) = (packs[0].clone(), packs[1].clone());
    damage(&repo.join(&flipped), flip_byte);
    damage(&repo.join(&cut), truncate);
    forget_sync_records(&repo);

    let human = env.run_cfg(&cfg, &["sync"]).code(3);
    for f in [&flipped, &cut] {
        assert!(human.stdout.contains(&format!("DAMAGED local file {f}")), "{}", human.stdout);
        assert!(human.stdout.contains("repaired from the remote"), "{}", human.stdout);
    }
    assert!(human.stdout.contains("0 repaired"), "no remote file replaced: {}", human.stdout);
    let remote_after: BTreeMap<String, Vec<u8>> =
        files_under(&usb).keys().map(|f| (f.clone(), std::fs::read(usb.join(f)).unwrap())).collect();
    assert!(remote_after == remote_before, "the remote copy changed");
    assert_same_bytes(&repo, &usb, local.keys());
    assert_eq!(inventory(&repo), local, "local files repaired at their names and sizes");
    env.run_cfg(&cfg, &["verify", "--read-data"]).ok();

    // Clean now: the next sync has nothing to do.
    let r = sync_report(&env, &cfg, &[]);
    assert_eq!(r["uploaded"], json!([]), "{r}");
    assert_eq!(r["local_damaged"], json!([]), "{r}");
}

#[test]
fn a_damaged_local_pack_the_remote_lacks_is_not_uploaded() {
    let env = Env::new();
    let usb = env.path().join("usb");
    let (app, cfg) = app_with_remotes(&env, json!([{ "name": "usb", "rclone": local_target(&usb) }]));
    let repo = app.join("backups/repo");
    env.run_cfg(&cfg, &["backup", "--now", "--no-sync"]).ok();
    let local = inventory(&repo);
    let pack = local.keys().find(|f| f.starts_with("packs/")).unwrap().clone();
    damage(&repo.join(&pack), flip_byte);

    let v = env.run_cfg(&cfg, &["sync", "--json"]).code(3).json();
    let r = &v[0]["report"];
    assert_eq!(r["local_damaged"], json!([pack]), "{v}");
    assert_eq!(r["local_repaired"], json!([]), "{v}");
    assert!(!strings(&r["uploaded"]).contains(&pack), "{v}");
    assert!(!usb.join(&pack).exists(), "the damaged pack was uploaded");
    let human = env.run_cfg(&cfg, &["sync"]).code(3);
    assert!(human.stdout.contains(&format!("DAMAGED local file {pack}: not uploaded")), "{}", human.stdout);
    assert!(!usb.join(&pack).exists(), "the damaged pack was uploaded");
}
