//! When the machine is in trouble (issue 10, items 10, 11, 13): a full disk and a read-only
//! repository (a real tmpfs when root), leftovers of SIGKILLed backups in `tmp/`, locks whose pid
//! was reused, `cairn unlock`, and the exit code of a snapshot that could not read every file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

/// A tmpfs mounted for one test, unmounted on drop (also when the test fails).
pub(crate) struct Tmpfs(pub(crate) PathBuf);

impl Tmpfs {
    pub(crate) fn mount(dir: &Path, mib: u32) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
    pub(crate) fn remount(&self, opt: &str) {
        let st = Command::new("mount").args(["-o", &format!("remount,{opt}")]).arg(&self.0).status().unwrap();
        assert!(st.success(), "remount {opt}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with one file until a write fails with ENOSPC.
pub(crate) fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0x5au8; 64 << 10];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    // Whatever a partial block left: fill byte by byte.
    while f.write(&[1]).is_ok_and(|n| n == 1) {}
    p
}

fn free_bytes(dir: &Path) -> u64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    let (avail, frsize): (u64, u64) = (s.f_bavail, s.f_frsize);
    avail * frsize
}

#[test]
fn a_full_disk_still_reads_restores_verifies_and_forget_prune_free_space() {
    if !is_root() {
        eprintln!("SKIPPED a_full_disk_...: needs root to mount a tmpfs (CI runs as root)");
        return;
    }
    let env = Env::new();
    let mnt = Tmpfs::mount(&env.path().join("mnt"), 24);
    let a = env.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    let cfg = write_config(
        env.path(),
        json!({ "name": "full", "repository": mnt.0.join("repo"), "password_file": "cairn-password",
                "forget_after_backup": false, "prune_after_backup": false,
                "types": { "a": { "paths": ["a"], "retention": { "keep_last": 1 } } } }),
    );
    env.run_cfg(&cfg, &["init"]).ok();
    std::fs::write(a.join("old.bin"), prng_bytes(1, 4 << 20)).unwrap();
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    std::fs::remove_file(a.join("old.bin")).unwrap();
    std::fs::write(a.join("new.bin"), prng_bytes(2, 1 << 20)).unwrap();
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    fill(&mnt.0);
    assert!(free_bytes(&mnt.0) < 8192, "disk not full: {}", free_bytes(&mnt.0));

    // Reading works on the full disk.
    let r = env.run_cfg(&cfg, &["snapshots"]).ok();
    assert!(r.stdout.contains("2 snapshots"), "{}", r.stdout);
    let r = env.run_cfg(&cfg, &["ls", "latest"]).ok();
    assert!(r.stdout.contains("new.bin"), "{}", r.stdout);
    let out = env.path().join("restored");
    env.run_cfg(&cfg, &["restore", "latest", "--target", out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(out.join("a/new.bin")).unwrap_or_default(), prng_bytes(2, 1 << 20));
    env.run_cfg(&cfg, &["verify", "--read-data"]).ok();
    env.run_cfg(&cfg, &["status"]).verdict();

    // A backup cannot write: it says why and where.
    std::fs::write(a.join("more.bin"), prng_bytes(3, 1 << 20)).unwrap();
    let r = env.run_cfg(&cfg, &["backup", "--now"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("no space left on device (ENOSPC)"), "{}", r.stderr);
    assert!(r.stderr.contains(&mnt.0.display().to_string()), "path not named: {}", r.stderr);
    assert!(!r.stderr.contains("disk I/O error"), "{}", r.stderr);

    // forget and prune free the old snapshot's 4 MiB without needing space first.
    let r = env.run_cfg(&cfg, &["forget"]).ok();
    assert!(r.stdout.contains("1 snapshots removed"), "{}", r.stdout);
    let r = env.run_cfg(&cfg, &["prune"]).ok();
    assert!(free_bytes(&mnt.0) > 3 << 20, "prune freed too little: {} free\n{}", free_bytes(&mnt.0), r.stdout);
    assert!(repo_files(&mnt.0.join("repo"), "locks").is_empty());
    let r = env.run_cfg(&cfg, &["snapshots"]).ok();
    assert!(r.stdout.contains("1 snapshots"), "{}", r.stdout);
    std::fs::remove_file(mnt.0.join("filler")).unwrap();
    env.run_cfg(&cfg, &["verify", "--read-data"]).ok();
    std::fs::remove_dir_all(&out).unwrap();
    env.run_cfg(&cfg, &["restore", "latest", "--target", out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(out.join("a/new.bin")).unwrap(), prng_bytes(2, 1 << 20));
}

#[test]
fn a_read_only_repository_serves_every_read() {
    let env = Env::new();
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f.bin"), prng_bytes(7, 300_000)).unwrap();
    // As root a real read-only mount (permissions do not stop root); otherwise permissions.
    let mnt = is_root().then(|| Tmpfs::mount(&env.path().join("mnt"), 16));
    let repo = mnt.as_ref().map_or_else(|| env.repo(), |m| m.0.join("repo"));
    let run = |args: &[&str]| {
        let mut c = env.cmd();
        c.arg("--repo").arg(&repo).args(args);
        env.run_cmd(c)
    };
    run(&["init"]).ok();
    run(&["snapshot", "--type", "t", src.to_str().unwrap()]).ok();
    // A cache that was never written: the reader must not need to create one.
    std::fs::remove_dir_all(repo.join("cache")).unwrap();
    match &mnt {
        Some(m) => m.remount("ro"),
        None => {
            for p in walk(&repo).into_iter().chain([repo.clone()]) {
                if p.is_dir() {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o555)).unwrap();
                }
            }
        }
    }
    let r = run(&["snapshots"]).ok();
    assert!(r.stdout.contains("1 snapshots"), "{}", r.stdout);
    assert!(r.stderr.contains("in-memory index"), "the fallback is not announced: {}", r.stderr);
    assert_eq!(r.stderr.matches("in-memory index").count(), 1, "warned more than once: {}", r.stderr);
    run(&["ls", "latest"]).ok();
    let mut c = env.cmd();
    c.arg("--repo").arg(&repo).args(["cat", "latest", "src/f.bin"]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, prng_bytes(7, 300_000));
    let out = env.path().join("out");
    run(&["restore", "latest", "--target", out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(out.join("src/f.bin")).unwrap(), prng_bytes(7, 300_000));
    run(&["verify", "--read-data"]).ok();
    if let Some(m) = &mnt {
        m.remount("rw");
    }
}

/// Starts `cairn snapshot` of `src` and SIGKILLs it once `tmp/` holds a file being written.
/// Returns whether it was killed mid-write.
fn kill_mid_write(env: &Env, src: &Path) -> bool {
    let mut c = env.cmd();
    c.args(["snapshot", "--type", "big", src.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let tmp = env.repo().join("tmp");
    let start = Instant::now();
    loop {
        if std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) > 0 {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn tmp_entries(repo: &Path) -> Vec<String> {
    std::fs::read_dir(repo.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn leftovers_of_sigkilled_backups_are_removed_by_the_next_run_and_by_prune() {
    let env = Env::new();
    env.run(&["init", "--pack-size-mib", "4"]).ok();
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        std::fs::write(src.join(format!("f{i}.bin")), prng_bytes(100 + i, 6 << 20)).unwrap();
    }
    let small = env.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::write(small.join("s.txt"), b"small").unwrap();

    for round in 0..2 {
        let killed = (0..3).filter(|_| kill_mid_write(&env, &src)).count();
        assert!(killed >= 2, "round {round}: too few kills landed mid-write");
        let left = tmp_entries(&env.repo());
        assert!(!left.is_empty(), "round {round}: the kills left nothing in tmp/ to clean");
        eprintln!("round {round}: {} leftovers in tmp/ after {killed} kills", left.len());
        if round == 0 {
            env.run(&["snapshot", "--type", "small", small.to_str().unwrap()]).ok();
            assert_eq!(tmp_entries(&env.repo()), Vec::<String>::new(), "after the next backup");
        } else {
            let r = env.run(&["prune"]).ok();
            assert!(r.stdout.contains("leftovers of interrupted runs"), "{}", r.stdout);
            assert_eq!(tmp_entries(&env.repo()), Vec::<String>::new(), "after prune");
        }
    }
    env.run(&["verify"]).ok();
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim().to_string()
}

fn start_time(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    s[s.rfind(')').unwrap() + 1..].split_ascii_whitespace().nth(19).unwrap().parse().unwrap()
}

fn forge_lock(repo: &Path, name: u8, body: serde_json::Value) -> PathBuf {
    let p = repo.join("locks").join(hex::encode([name; 32]));
    std::fs::write(&p, serde_json::to_vec(&body).unwrap()).unwrap();
    p
}

#[test]
fn a_lock_whose_pid_was_reused_is_broken_and_says_so() {
    let env = Env::new();
    env.init();
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    // This test process is alive: only its start time or the boot id betray the forgery.
    let me = std::process::id();
    let lock = |start: u64, boot: &str| {
        json!({"host": hostname(), "pid": me, "exclusive": true, "time": "2026-01-01T00:00:00+00:00",
               "purpose": "prune", "boot_id": boot, "start_time": start})
    };
    let genuine = forge_lock(&env.repo(), 1, lock(start_time(me), &boot_id()));
    let r = env.run(&["snapshot", "--type", "t", src.to_str().unwrap()]);
    assert_eq!(r.code, 1, "a live holder's lock must hold: {}", r.stderr);
    assert!(r.stderr.contains(&format!("exclusive lock of pid {me}")), "{}", r.stderr);
    std::fs::remove_file(genuine).unwrap();

    let reused = forge_lock(&env.repo(), 2, lock(start_time(me) + 1000, &boot_id()));
    let r = env.run(&["snapshot", "--type", "t", src.to_str().unwrap()]).ok();
    assert!(r.stderr.contains("breaking stale exclusive lock"), "{}", r.stderr);
    assert!(r.stderr.contains("now belongs to another process"), "{}", r.stderr);
    assert!(!reused.exists());

    let rebooted = forge_lock(&env.repo(), 3, lock(start_time(me), "00000000-0000-0000-0000-000000000000"));
    let r = env.run(&["snapshot", "--type", "t", src.to_str().unwrap()]).ok();
    assert!(r.stderr.contains("before this host restarted"), "{}", r.stderr);
    assert!(!rebooted.exists());

    // A lock of the old format (no boot id, no start time) still reads: judged by its pid.
    let old = json!({"host": hostname(), "pid": me, "exclusive": true, "time": "t", "purpose": "prune"});
    let old = forge_lock(&env.repo(), 4, old);
    let r = env.run(&["unlock"]).ok();
    assert!(r.stdout.contains(&format!("kept exclusive lock of pid {me}")), "{}", r.stdout);
    assert!(old.exists());
}

#[test]
fn unlock_keeps_a_live_lock_and_force_removes_it_naming_the_holder() {
    let env = Env::new();
    env.init();
    // A real cairn process holding a shared lock: a snapshot waiting on its standard input.
    let mut c = env.cmd();
    c.args(["snapshot", "--type", "s", "--stdin", "s.txt"]).stdin(Stdio::piped()).stdout(Stdio::null());
    let mut holder = c.spawn().unwrap();
    let start = Instant::now();
    while repo_files(&env.repo(), "locks").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "the snapshot never took its lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = holder.id();
    let r = env.run(&["unlock"]).ok();
    assert!(r.stdout.contains(&format!("kept shared lock of pid {pid} on {}", hostname())), "{}", r.stdout);
    assert!(r.stdout.contains("for snapshot"), "{}", r.stdout);
    assert_eq!(repo_files(&env.repo(), "locks").len(), 1);
    let r = env.run(&["unlock", "--force"]).ok();
    assert!(r.stdout.contains(&format!("removed shared lock of pid {pid} on {}", hostname())), "{}", r.stdout);
    assert!(r.stdout.contains("--force"), "{}", r.stdout);
    assert!(repo_files(&env.repo(), "locks").is_empty());
    holder.stdin.take().unwrap().write_all(b"done").unwrap();
    holder.wait().unwrap();
}

#[test]
fn a_snapshot_missing_unreadable_files_exits_5_and_history_says_partial() {
    let env = Env::new();
    let a = env.path().join("a");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(a.join("good.txt"), b"good").unwrap();
    // An entry no one can read, root included: its path is longer than PATH_MAX (4096).
    // Built bottom-up by renames, so that no path used to build it is long.
    let seg = "d".repeat(250);
    let mut cur = env.path().join("chain0");
    std::fs::create_dir(&cur).unwrap();
    std::fs::write(cur.join("deep.txt"), b"x").unwrap();
    for i in 1..18 {
        let up = env.path().join(format!("chain{i}"));
        std::fs::create_dir(&up).unwrap();
        std::fs::rename(&cur, up.join(&seg)).unwrap();
        cur = up;
    }
    std::fs::rename(&cur, a.join(&seg)).unwrap();
    let cfg = write_config(
        env.path(),
        json!({ "name": "p", "repository": "repo", "password_file": "cairn-password",
                "types": { "a": { "paths": ["a"] } } }),
    );
    env.run_cfg(&cfg, &["init"]).ok();
    let r = env.run_cfg(&cfg, &["snapshot", "--type", "a", a.to_str().unwrap()]);
    assert_eq!(r.code, 5, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("could not be read"), "{}", r.stderr);
    assert!(r.stdout.contains("saved"), "{}", r.stdout);
    let r = env.run_cfg(&cfg, &["backup", "--now"]);
    assert_eq!(r.code, 5, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    let h = env.run_cfg(&cfg, &["history", "--json"]).ok();
    let runs = h.json();
    assert_eq!(runs[0]["result"], "partial", "{runs}");
    let help = env.run(&["--help"]).ok();
    assert!(help.stdout.contains("5 partial"), "{}", help.stdout);
    // A snapshot that read everything still exits 0.
    std::fs::remove_dir_all(a.join(&seg)).unwrap();
    env.run_cfg(&cfg, &["snapshot", "--type", "a", a.to_str().unwrap()]).ok();
}
