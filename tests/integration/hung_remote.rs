//! A remote that accepts connections and never answers (a TCP listener on 127.0.0.1 configured
//! as a WebDAV remote): rclone gets connection and I/O timeouts by default, the whole sync is
//! bounded, the failure is told once, and the rclone child dies with a SIGKILLed cairn.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::lifecycle::{split_events, HttpSink};
use crate::util::{ensure_package, have_program, write_config, ChildGuard, Env};

/// Accepts every connection and keeps it open without a byte of answer.
struct Silent {
    port: u16,
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Silent {
    fn start() -> Silent {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let h = held.clone();
        // Runs until the test binary exits.
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                h.lock().unwrap().push(s);
            }
        });
        Silent { port, _held: held }
    }
}

/// A config with one small type and the silent remote with `remote` merged in.
fn config(env: &Env, silent: &Silent, remote: Value, notify: Value) -> std::path::PathBuf {
    let dir = env.path().join("app");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/a.txt"), b"hello").unwrap();
    let mut r = json!({"name": "hung", "rclone": format!(":webdav,url='http://127.0.0.1:{}':cairn", silent.port)});
    r.as_object_mut().unwrap().extend(remote.as_object().unwrap().clone());
    write_config(
        &dir,
        json!({"name": "t", "repository": "repo", "encryption": "none",
               "types": {"files": {"paths": ["data"]}}, "remotes": [r], "notify": notify}),
    )
}

fn need_rclone() {
    ensure_package("rclone", || have_program("rclone"));
}

/// A wrapper that logs rclone's arguments to `log` and runs the real rclone.
fn logging_rclone(dir: &Path, log: &Path) -> std::path::PathBuf {
    let w = dir.join("rclone-logging");
    std::fs::write(&w, format!("#!/bin/sh\necho \"$*\" >> '{}'\nexec rclone \"$@\"\n", log.display())).unwrap();
    std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    w
}

#[test]
fn cli_rclone_gets_timeouts_by_default_and_a_hung_remote_fails_in_bounded_time() {
    need_rclone();
    let env = Env::new();
    let silent = Silent::start();
    let sink = HttpSink::start();
    let log = env.path().join("rclone-args");
    let wrapper = logging_rclone(env.path(), &log);
    // The remote's own (short) I/O timeout replaces the default; no retries.
    let flags = json!({"flags": ["--timeout=1s", "--low-level-retries=1", "--retries=1"]});
    let cfg = config(&env, &silent, flags, json!({"webhook": sink.url("/hook")}));
    env.run_cfg(&cfg, &["backup", "--now", "--no-sync"]).ok();
    let t = Instant::now();
    let mut c = env.cfg_cmd(&cfg, &["sync"]);
    c.env("CAIRN_RCLONE", &wrapper);
    let r = env.run_cmd(c);
    let took = t.elapsed();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(took < Duration::from_secs(30), "a hung remote held the sync for {took:?}");
    assert!(r.stdout.contains("hung: FAILED") && r.stdout.contains("rclone lsjson failed"), "{}", r.stdout);
    assert!(r.stdout.to_lowercase().contains("timeout"), "the message names the timeout: {}", r.stdout);
    let args = std::fs::read_to_string(&log).unwrap();
    assert!(args.contains("--contimeout=30s") && args.contains("--timeout=1s"), "{args}");
    assert!(!args.contains("--timeout=2m"), "the remote's own --timeout replaces the default: {args}");
    // Told once, as a remote failure.
    let (_, hook) = split_events(&sink.take());
    assert_eq!(hook.len(), 1, "{hook:#?}");
    assert_eq!((hook[0]["event"].as_str(), hook[0]["type"].as_str()), (Some("failure"), Some("sync:hung")));
    assert!(hook[0]["message"].as_str().unwrap().starts_with("sync to hung failed: "), "{hook:#?}");

    // Without flags: rclone gets 30 s to connect and 2 min of silence.
    let mut v: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["remotes"][0].as_object_mut().unwrap().remove("flags");
    v["remotes"][0]["time_limit"] = json!("2s");
    std::fs::write(&cfg, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::remove_file(&log).unwrap();
    let t = Instant::now();
    let mut c = env.cfg_cmd(&cfg, &["sync"]);
    c.env("CAIRN_RCLONE", &wrapper);
    let r = env.run_cmd(c).code(1);
    let took = t.elapsed();
    let args = std::fs::read_to_string(&log).unwrap();
    assert!(args.contains("--contimeout=30s") && args.contains("--timeout=2m"), "{args}");
    // The overall limit: rclone killed after 2 s, the sync failed and said why.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(
        r.stdout.contains("hung: FAILED") && r.stdout.contains("killed: the operation reached its time limit of 2s"),
        "{}",
        r.stdout
    );
    // Still failing: not told again the same day.
    assert!(sink.take().is_empty());
}

/// Children of `pid` named `rclone`, from /proc.
fn rclone_children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // "PID (COMM) STATE PPID ...": COMM may hold spaces, so split after the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) && head.ends_with("(rclone") {
            out.push(child);
        }
    }
    out
}

/// Whether `pid` is still running (a zombie waiting for its reaper counts as gone).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.split_whitespace().next() != Some("Z")))
        .unwrap_or(false)
}

#[test]
fn cli_sigkill_of_cairn_takes_its_rclone_child_along() {
    need_rclone();
    let env = Env::new();
    let silent = Silent::start();
    let cfg = config(&env, &silent, json!({}), json!({}));
    env.run_cfg(&cfg, &["backup", "--now", "--no-sync"]).ok();
    let mut c = env.cfg_cmd(&cfg, &["sync"]);
    c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut cairn = ChildGuard(c.spawn().unwrap());
    let pid = cairn.0.id();
    let t = Instant::now();
    let kids = loop {
        let k = rclone_children(pid);
        if !k.is_empty() {
            break k;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no rclone child of cairn appeared");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: a signal to our own child process, by its id.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    cairn.0.wait().unwrap();
    let t = Instant::now();
    while kids.iter().any(|k| running(*k)) {
        assert!(t.elapsed() < Duration::from_secs(5), "rclone {kids:?} still running 5 s after cairn was killed");
        std::thread::sleep(Duration::from_millis(20));
    }
}
