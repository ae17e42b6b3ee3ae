//! Bad input: missing and unreadable sources, missing or foreign repositories, unsupported
//! versions, `init` over existing data, wrong passwords and usage errors. Each must fail with a
//! clear message and the documented exit code, and write nothing it should not.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::util::{self, Env};

/// Files that a failed command must not have added: snapshots, packs, index files, locks, temps.
fn written(repo: &Path) -> Vec<PathBuf> {
    ["snapshots", "packs", "index", "locks", "tmp"].iter().flat_map(|d| util::repo_files(repo, d)).collect()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn missing_source_path_fails_cleanly() {
    let env = Env::new();
    env.init();
    let missing = env.path().join("no such dir");
    let r = env.run(&["snapshot", "--type", "t", missing.to_str().unwrap()]).code(1);
    assert!(r.stderr.contains(missing.to_str().unwrap()), "message names the path: {}", r.stderr);
    assert!(r.stderr.contains("No such file or directory"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(written(&env.repo()).is_empty(), "nothing written: {:?}", written(&env.repo()));

    // One good path and one missing one: still nothing, the good one is not stored alone.
    let good = env.path().join("good");
    std::fs::create_dir(&good).unwrap();
    std::fs::write(good.join("f"), b"data").unwrap();
    let r = env.run(&["--json", "snapshot", "--type", "t", good.to_str().unwrap(), missing.to_str().unwrap()]).code(1);
    assert!(r.stderr.contains(missing.to_str().unwrap()), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "no JSON for a failed snapshot: {}", r.stdout);
    assert!(written(&env.repo()).is_empty(), "nothing written: {:?}", written(&env.repo()));
    assert!(util::snapshot_names(&env.repo()).is_empty());

    // A dangling symlink given as source is a symlink, not a missing path: it is stored.
    std::os::unix::fs::symlink("nowhere", env.path().join("dangling")).unwrap();
    env.run(&["snapshot", "--type", "t", "dangling"]).ok();
    assert_eq!(util::snapshot_names(&env.repo()).len(), 1);
}

/// The missing-path message names the OS error once. Today it reads
/// "error: /x: No such file or directory (os error 2): No such file or directory (os error 2)":
/// `Error::Io`'s Display ("{path}: {source}") already ends with its cause, and main.rs prints
/// `{e:#}`, which appends the `source()` chain again (same for `Error::Cache`). Fix in
/// src/error.rs: keep the Display and stop exposing the cause as `source()`: thiserror treats a
/// field named `source` as the source, so rename it (e.g. `err`; lock.rs and `is_transient`
/// match on it). Printing `{e}` in main.rs instead would drop the CLI's `.context()` chain.
#[test]
fn io_error_message_names_the_cause_once() {
    let env = Env::new();
    env.init_plain();
    let missing = env.path().join("missing");
    let r = env.run(&["snapshot", "--type", "t", missing.to_str().unwrap()]).code(1);
    assert_eq!(count(&r.stderr, "No such file or directory"), 1, "cause repeated: {}", r.stderr);
}

#[test]
fn unreadable_entries_are_recorded_as_errors() {
    let env = Env::new();
    let tree = env.path().join("tree");
    std::fs::create_dir_all(tree.join("locked")).unwrap();
    std::fs::write(tree.join("good"), b"good data").unwrap();
    std::fs::write(tree.join("secret"), b"secret data").unwrap();
    std::fs::write(tree.join("locked/inner"), b"inner").unwrap();
    // As root, cairn runs as `nobody` here: root would read the mode-000 entries.
    util::give_to_unprivileged(env.path());
    util::run_unprivileged(&env, &["init"]).ok();
    std::fs::set_permissions(tree.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(tree.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // /proc/self/mem is a regular file that fails to read (EIO at offset 0), whoever reads it.
    let r =
        util::run_unprivileged(&env, &["--json", "snapshot", "--type", "t", tree.to_str().unwrap(), "/proc/self/mem"]);
    std::fs::set_permissions(tree.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = r.code(5);
    assert!(r.stderr.contains("3 entries could not be read"), "{}", r.stderr);
    assert!(r.stderr.contains("mem: reading /proc/self/mem"), "{}", r.stderr);
    assert!(r.stderr.contains("tree/secret: opening"), "{}", r.stderr);
    // The snapshot is saved, with the errors in it.
    let snap = r.json();
    assert_eq!(util::snapshot_names(&env.repo()), [snap["id"].as_str().unwrap()]);

    let list = util::run_unprivileged(&env, &["--json", "snapshots"]).ok().json();
    let s = &list[0];
    assert_eq!(s["id"], snap["id"]);
    let errors: Vec<(String, String)> = s["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap().to_string(), e["message"].as_str().unwrap().to_string()))
        .collect();
    assert!(errors.iter().any(|(p, m)| p == "mem" && m.contains("Input/output error")), "{errors:?}");
    assert!(errors.iter().any(|(p, m)| p == "tree/secret" && m.contains("Permission denied")), "{errors:?}");
    assert!(errors.iter().any(|(p, m)| p == "tree/locked" && m.contains("Permission denied")), "{errors:?}");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(s["stats"]["errors"].as_u64(), Some(3));
    assert_eq!(s["stats"]["files"].as_u64(), Some(1), "only tree/good was stored");

    // What could be read restores; the repository verifies.
    let out = env.path().join("out");
    util::run_unprivileged(&env, &["restore", "latest", "--target", out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(out.join("tree/good")).unwrap(), b"good data");
    assert!(!out.join("tree/secret").exists());
    assert!(!out.join("mem").exists());
    // The directory that could not be listed is recorded (and restored) without content.
    assert_eq!(std::fs::read_dir(out.join("tree/locked")).map(|d| d.count()).unwrap_or(0), 0);
    util::run_unprivileged(&env, &["verify", "--read-data"]).ok();
}

#[test]
fn repository_that_does_not_exist() {
    let env = Env::new();
    let nope = env.path().join("nope");
    for args in [
        vec!["snapshots"],
        vec!["snapshot", "--type", "t", "."],
        vec!["ls", "latest"],
        vec!["restore", "latest", "--target", "out"],
        vec!["verify"],
        vec!["key", "list"],
    ] {
        let mut c = env.cmd();
        c.arg("--repo").arg(&nope).args(&args);
        let r = env.run_cmd(c).code(1);
        assert!(
            r.stderr.contains(&format!("{}: repository does not exist (create it with `cairn init`)", nope.display())),
            "{args:?}: {}",
            r.stderr
        );
        assert!(!nope.exists(), "{args:?} created the repository directory");
        assert!(!env.path().join("out").exists());
    }
    // No repository given at all.
    let mut c = env.cmd();
    c.env_remove("CAIRN_REPO").arg("snapshots");
    let r = env.run_cmd(c).code(1);
    assert!(r.stderr.contains("no repository given"), "{}", r.stderr);
}

#[test]
fn directory_that_is_not_a_repository() {
    let env = Env::new();
    let dir = env.path().join("plain");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), b"not a repo").unwrap();
    let before = util::fingerprint(&dir);
    for args in [vec!["snapshots"], vec!["snapshot", "--type", "t", "."], vec!["verify"], vec!["repair", "index"]] {
        let mut c = env.cmd();
        c.arg("--repo").arg(&dir).args(&args);
        let r = env.run_cmd(c).code(1);
        assert!(r.stderr.contains("not a cairn repository (no config file)"), "{args:?}: {}", r.stderr);
        assert_eq!(util::fingerprint(&dir), before, "{args:?} wrote into a foreign directory");
    }

    // A regular file.
    let f = dir.join("notes.txt");
    let mut c = env.cmd();
    c.arg("--repo").arg(&f).arg("snapshots");
    let r = env.run_cmd(c).code(1);
    assert!(r.stderr.contains("not a directory"), "{}", r.stderr);

    // A `config` that is not ours.
    std::fs::write(dir.join("config"), b"{\"hello\": 1}").unwrap();
    let mut c = env.cmd();
    c.arg("--repo").arg(&dir).arg("snapshots");
    let r = env.run_cmd(c).code(1);
    assert!(r.stderr.contains("config is not a valid cairn repository config"), "{}", r.stderr);
    assert!(!dir.join("cache").exists());
}

#[test]
fn unknown_format_version_is_refused() {
    let env = Env::new();
    env.init();
    let data = env.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), b"x").unwrap();
    let cfg_path = env.repo().join("config");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    assert_eq!(cfg["version"], 1);
    cfg["version"] = 99.into();
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let before = util::fingerprint(&env.repo());
    for args in [vec!["snapshots"], vec!["snapshot", "--type", "t", "data"], vec!["verify"], vec!["key", "list"]] {
        let r = env.run(&args).code(1);
        assert!(r.stderr.contains("repository format version 99 is not supported"), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("reads version 1"), "{args:?}: {}", r.stderr);
        assert_eq!(util::fingerprint(&env.repo()), before, "{args:?} wrote to the repository");
    }
}

#[test]
fn init_refuses_non_empty_directories() {
    let env = Env::new();
    let dir = env.path().join("full");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("precious"), b"keep me").unwrap();
    let mut c = env.cmd();
    c.arg("--repo").arg(&dir).arg("init");
    let r = env.run_cmd(c).code(1);
    assert!(r.stderr.contains(&format!("{}: directory exists and is not empty", dir.display())), "{}", r.stderr);
    assert!(!r.stderr.contains("already a cairn repository"), "{}", r.stderr);
    assert_eq!(
        util::fingerprint(&dir),
        [(PathBuf::from("precious"), format!("file 7 {}", blake3::hash(b"keep me").to_hex()))]
    );
    // No half-built repository left next to it.
    let names: Vec<String> =
        std::fs::read_dir(env.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.contains("cairn-init")), "{names:?}");

    // Over an existing repository: refused and said so, nothing changed.
    env.init();
    let before = util::fingerprint(&env.repo());
    let r = env.run(&["init"]).code(1);
    assert!(r.stderr.contains("(it is already a cairn repository)"), "{}", r.stderr);
    let r2 = env.run(&["init", "--encryption", "none"]).code(1);
    assert!(r2.stderr.contains("(it is already a cairn repository)"), "{}", r2.stderr);
    assert_eq!(util::fingerprint(&env.repo()), before);

    // An existing empty directory is fine.
    let empty = env.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut c = env.cmd();
    c.arg("--repo").arg(&empty).arg("init");
    env.run_cmd(c).ok();
    assert!(empty.join("config").is_file());
}

#[test]
fn wrong_password_exits_4_and_writes_nothing() {
    let env = Env::new();
    env.init();
    let data = env.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), b"x").unwrap();
    env.run(&["snapshot", "--type", "t", "data"]).ok();
    let before = util::fingerprint(&env.repo());
    let out = env.path().join("out");
    for args in [
        vec!["snapshots"],
        vec!["snapshot", "--type", "t", "data"],
        vec!["ls", "latest"],
        vec!["cat", "latest", "data/f"],
        vec!["restore", "latest", "--target", "out"],
        vec!["verify", "--read-data"],
        vec!["repair", "index"],
        vec!["key", "list"],
        vec!["key", "passwd"],
    ] {
        let mut c = env.cmd();
        c.env("CAIRN_PASSWORD", "wrong horse").env("CAIRN_NEW_PASSWORD", "another").args(&args);
        let r = env.run_cmd(c).code(4);
        assert!(r.stderr.contains("wrong password: no key file in"), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
        assert_eq!(util::fingerprint(&env.repo()), before, "{args:?} wrote to the repository");
        assert!(!out.exists(), "{args:?} created the restore target");
    }

    // Same through a password file.
    let pw = env.path().join("pw");
    std::fs::write(&pw, b"wrong horse\n").unwrap();
    let mut c = env.cmd();
    c.env_remove("CAIRN_PASSWORD").arg("--password-file").arg(&pw).arg("snapshots");
    env.run_cmd(c).code(4);

    // No password at all (no terminal): exit 4 with a hint.
    let mut c = env.cmd();
    c.env_remove("CAIRN_PASSWORD").arg("snapshots");
    let r = env.run_cmd(c).code(4);
    assert!(r.stderr.contains("a password is needed"), "{}", r.stderr);
    assert_eq!(util::fingerprint(&env.repo()), before);

    // The right password still works afterwards.
    env.run(&["snapshots"]).ok();
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    env.init();
    let before = util::fingerprint(&env.repo());
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["snapshot", "."],
        vec!["snapshot", "--type", "t"],
        vec!["snapshot", "--type", "t", "--kind", "weekly", "."],
        vec!["snapshot", "--type", "t", "--stdin", "x", "."],
        vec!["init", "--encryption", "rot13"],
        vec!["init", "--pack-size-mib", "lots"],
        vec!["restore", "latest"],
        vec!["restore"],
        vec!["cat", "latest"],
        vec!["verify", "--read-data", "10%"],
        vec!["verify", "--seed", "minus-one"],
        vec!["repair"],
        vec!["key", "remove"],
        vec!["snapshots", "--bogus-flag"],
    ] {
        let r = env.run(&args).code(2);
        assert!(r.stderr.contains("Usage:") || r.stderr.contains("try '--help'"), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
    assert_eq!(util::fingerprint(&env.repo()), before);
}

/// Well-formed commands with values the library rejects: exit 1, a message saying what is
/// wrong, and no snapshot.
#[test]
fn invalid_values_exit_1_without_writing() {
    let env = Env::new();
    env.init();
    let d = env.path();
    std::fs::create_dir_all(d.join("a/x")).unwrap();
    std::fs::create_dir_all(d.join("b/x")).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["snapshot", "--type", "a/b", "a"], "backup type \"a/b\""),
        (vec!["snapshot", "--type", "a:b", "a"], "backup type \"a:b\""),
        (vec!["snapshot", "--type", "", "a"], "backup type \"\""),
        (vec!["snapshot", "--type", "t", "--label", "novalue", "a"], "label \"novalue\" is not KEY=VALUE"),
        (vec!["snapshot", "--type", "t", "--exclude", "a[", "a"], "bad exclude pattern \"a[\""),
        (vec!["snapshot", "--type", "t", "a/x", "b/x"], "would both be stored as \"x\""),
        (vec!["snapshot", "--type", "t", "/"], "cannot snapshot a file system root"),
        (vec!["snapshot", "--type", "t", "--stdin", "../x"], "stdin name \"../x\""),
        (vec!["snapshot", "--type", "t", "--stdin", "a/b"], "stdin name \"a/b\""),
        (vec!["verify", "--read-data=abc"], "--read-data=abc: expected a percentage"),
        (vec!["verify", "--read-data=0%"], "percentage must be in (0, 100]"),
        (vec!["verify", "--read-data=150%"], "percentage must be in (0, 100]"),
        (vec!["restore", "abcdef", "--target", "out"], "no snapshot with id starting \"abcdef\""),
        (vec!["restore", "latest", "--target", "out"], "the repository has no snapshots"),
    ];
    for (args, msg) in cases {
        let r = env.run_stdin(&args, b"stdin data").code(1);
        assert!(r.stderr.contains(msg), "{args:?}: expected {msg:?} in: {}", r.stderr);
        assert!(util::snapshot_names(&env.repo()).is_empty(), "{args:?} wrote a snapshot");
        assert!(util::repo_files(&env.repo(), "packs").is_empty(), "{args:?} wrote a pack");
        assert!(util::repo_files(&env.repo(), "locks").is_empty(), "{args:?} left a lock");
        assert!(!d.join("out").exists(), "{args:?} created the restore target");
    }
}

/// Output into a closed pipe (`cairn snapshots --json | head -1`) ends the command quietly.
/// Today `println!` (Ctx::out, the `snapshots` table, ...) panics on EPIPE ("failed printing to
/// stdout: Broken pipe", exit 101 with a backtrace), because Rust ignores SIGPIPE. Fix in
/// src/main.rs: restore the default disposition first thing in main,
/// `unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) }`, or write through a handle and treat
/// `ErrorKind::BrokenPipe` as success.
#[test]
fn closed_stdout_does_not_panic() {
    let env = Env::new();
    env.init_plain();
    let data = env.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for i in 0..2000 {
        std::fs::write(data.join(format!("file-{i:05}")), b"x").unwrap();
    }
    env.run(&["snapshot", "--type", "t", "data"]).ok();
    for args in [vec!["ls", "latest"], vec!["--json", "ls", "latest"], vec!["--json", "snapshots"]] {
        // A pipe whose read end is already closed (std::io::pipe is newer than the MSRV).
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (reader, writer) = unsafe {
            use std::os::fd::{FromRawFd, OwnedFd};
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        };
        drop(reader);
        let mut c = env.cmd();
        c.args(&args).stdout(writer).stderr(std::process::Stdio::piped());
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}
