//! Kopia-style robustness run: a bounded, seeded random sequence of real CLI operations on one
//! real repository (write / modify / delete random files and a real SQLite database, `snapshot`,
//! `backup --now`, `forget`, `prune`, `sync` to a local rclone remote, and any of those SIGKILLed
//! a random few milliseconds after it started). After every step every remaining snapshot must
//! restore to exactly what was on disk when it was taken and `verify --read-data` must exit 0;
//! after a kill the next commands must work (stale lock, `tmp/` leftovers).
//!
//! `CAIRN_ROBUST_SEED` replays a run (the seed is printed at the start and in any failure;
//! `random` takes one from the clock, the default is [`DEFAULT_SEED`]);
//! `CAIRN_ROBUST_STEPS` sets its length (default [`DEFAULT_STEPS`], sized for CI).
//!
//! The model is the test's own: for each snapshot id, the tree it must restore to (path -> kind,
//! size and BLAKE3 of the bytes; for the database, its rows, since a consistent copy of a
//! database need not be the same bytes as the file). A killed snapshot either committed or did
//! not: both are accepted, and one that did must restore to the source tree, which is left
//! untouched while a killed command runs.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{ensure_package, have_program, snapshot_names, write_config, Env, Run};

mod source;

use source::{Rng, Tree};

/// The default seed: the one whose step 20 found a forgotten snapshot left on the remote after
/// a sync killed mid-upload.
const DEFAULT_SEED: u64 = 1796131697528907211;
/// Steps of a CI run (about a minute on a loaded 2-core machine).
const DEFAULT_STEPS: usize = 30;
/// Retention of the two snapshot types (both snapshot the whole source tree).
const KEEP: [(&str, u32); 2] = [("a", 3), ("b", 2)];
/// The database inside the source tree.
const DB: &str = "db/app.db";
/// Upper bound on the source tree's size, so a step's restores and `verify --read-data` stay short.
const MAX_TREE_BYTES: u64 = 6 << 20;

/// One snapshot the model knows.
struct Snap {
    ty: String,
    tree: Tree,
    /// Commit order in this run.
    order: u64,
    /// The step that made it.
    step: usize,
}

/// The operations of a step: change the source tree, run a command, or run one and SIGKILL it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Mutate,
    Run(Cmd),
    Kill(Cmd),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Snapshot,
    Backup,
    Forget,
    Prune,
    Sync,
    /// Restore a random snapshot into a fixed target (only killed: then restored again over
    /// what the killed run left).
    Restore,
}

impl Cmd {
    /// May it commit a snapshot / remove one?
    fn creates(self) -> bool {
        matches!(self, Cmd::Snapshot | Cmd::Backup)
    }
    fn forgets(self) -> bool {
        matches!(self, Cmd::Forget | Cmd::Backup)
    }
}

struct Robust {
    env: Env,
    src: PathBuf,
    rng: Rng,
    step: usize,
    log: Vec<String>,
    snaps: BTreeMap<String, Snap>,
    order: u64,
    /// Scratch directory names.
    scratch: u64,
    /// Kills that hit a running command / commands that had finished before the kill.
    kills: (usize, usize),
    /// Snapshots committed by a command that was then killed.
    killed_commits: usize,
}

fn need_rclone() {
    ensure_package("rclone", || have_program("rclone"));
}

impl Robust {
    fn new(seed: u64) -> Robust {
        need_rclone();
        let env = Env::new();
        let src = env.path().join("src");
        let remote = env.path().join("usb");
        let types: serde_json::Map<String, Value> = KEEP
            .iter()
            .map(|(t, n)| (t.to_string(), json!({"paths": ["src"], "retention": {"keep_last": n}})))
            .collect();
        write_config(
            env.path(),
            json!({"name": "robust", "repository": "repo", "types": types,
                   "remotes": [{"name": "usb", "rclone": format!(":local:{}", remote.display())}]}),
        );
        std::fs::create_dir_all(src.join("db")).unwrap();
        let c = rusqlite::Connection::open(src.join(DB)).unwrap();
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB NOT NULL, n INTEGER NOT NULL);").unwrap();
        drop(c);
        let r = Robust {
            env,
            src,
            rng: Rng(seed),
            step: 0,
            log: Vec::new(),
            snaps: BTreeMap::new(),
            order: 0,
            scratch: 0,
            kills: (0, 0),
            killed_commits: 0,
        };
        // Small packs so prune both deletes and repacks within a short run.
        r.cairn(&["init", "--pack-size-mib", "1"]).ok();
        r
    }

    fn note(&mut self, s: String) {
        self.log.push(format!("step {}: {s}", self.step));
    }

    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.env.cmd();
        c.env("CAIRN_RETRY_BASE_MS", "10").args(args);
        c
    }

    fn cairn(&self, args: &[&str]) -> Run {
        self.env.run_cmd(self.cmd(args))
    }

    /// Runs a command that must succeed.
    fn ok(&self, args: &[&str]) -> Run {
        let r = self.cairn(args);
        assert!(r.code == 0, "cairn {args:?} exited {}\nstdout: {}\nstderr: {}", r.code, r.stdout, r.stderr);
        r
    }

    fn fresh_dir(&mut self, what: &str) -> PathBuf {
        self.scratch += 1;
        self.env.path().join(format!("{what}-{}", self.scratch))
    }

    // ---- the repository ----

    /// `snapshots --json`: id -> type. The listing must name exactly the snapshot files.
    fn listing(&self) -> BTreeMap<String, String> {
        let v = self.ok(&["--json", "snapshots"]).json();
        let m: BTreeMap<String, String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["id"].as_str().unwrap().to_string(), s["type"].as_str().unwrap().to_string()))
            .collect();
        let files: BTreeSet<String> = snapshot_names(&self.env.repo()).into_iter().collect();
        assert_eq!(m.keys().cloned().collect::<BTreeSet<_>>(), files, "`snapshots` does not list the snapshot files");
        m
    }

    /// Runs `args` (a `k` command), SIGKILLs its process group a random few ms after the start (unless it has
    /// already exited, which must then be a success). Returns whether it was killed.
    fn run_killed(&mut self, args: &[&str], k: Cmd) -> bool {
        // Up to about the command's usual length (backup and sync spend seconds in rclone).
        let max = match k {
            Cmd::Backup => 5000,
            Cmd::Sync => 3000,
            Cmd::Restore => 400,
            Cmd::Snapshot => 400,
            Cmd::Prune => 300,
            Cmd::Forget => 200,
        };
        let delay = match self.rng.below(4) {
            0 => self.rng.below(15),
            1 => self.rng.below(max / 5),
            _ => self.rng.below(max),
        };
        let mut c = self.cmd(args);
        // Its own group: a kill takes the rclone children too, as a crash of the machine would.
        c.process_group(0).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = c.spawn().expect("spawn cairn");
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(delay));
        let pid = child.id() as i32;
        // SAFETY: killpg on the group of a child this test spawned (not yet reaped, so its id is ours).
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
        let out = child.wait_with_output().unwrap();
        let killed = out.status.signal() == Some(libc::SIGKILL);
        if killed {
            self.kills.0 += 1;
        } else {
            self.kills.1 += 1;
        }
        let stale = std::fs::read_dir(self.env.repo().join("locks")).map(|d| d.count()).unwrap_or(0);
        let tmp = std::fs::read_dir(self.env.repo().join("tmp")).map(|d| d.count()).unwrap_or(0);
        self.note(format!(
            "{args:?} {} after {delay} ms ({:?}); locks left {stale}, tmp files {tmp}",
            if killed { "SIGKILLed" } else { "finished" },
            t0.elapsed()
        ));
        if !killed {
            assert!(
                out.status.success(),
                "cairn {args:?} exited on its own with {:?}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        killed
    }

    fn args_of(&mut self, k: Cmd) -> Vec<String> {
        let ty = self.rng.pick(&KEEP).0;
        let src = self.src.to_string_lossy().into_owned();
        let v: Vec<&str> = match k {
            Cmd::Snapshot => vec!["--json", "snapshot", "--type", ty, &src],
            Cmd::Backup => vec!["--json", "backup", "--now"],
            Cmd::Forget => vec!["--json", "forget"],
            Cmd::Prune => vec!["--json", "prune"],
            Cmd::Sync => vec!["--json", "sync"],
            Cmd::Restore => {
                let ids: Vec<&String> = self.snaps.keys().collect();
                let id = (*self.rng.pick(&ids)).clone();
                return vec!["restore".into(), id, "--target".into(), self.over().to_string_lossy().into_owned()];
            }
        };
        v.into_iter().map(String::from).collect()
    }

    /// Where a killed restore writes, and the complete one after it.
    fn over(&self) -> PathBuf {
        self.env.path().join("restore-over")
    }

    /// One step: an operation, then the full check. Returns the operation.
    fn step(&mut self) -> Op {
        let roll = self.rng.below(100);
        let op = match roll {
            // Past keep_last of both types, forget more often: each step restores every snapshot.
            0..=29 if self.snaps.len() >= 8 => Op::Run(Cmd::Forget),
            0..=29 => Op::Mutate,
            30..=47 => Op::Run(Cmd::Snapshot),
            48..=55 => Op::Run(Cmd::Backup),
            56..=62 => Op::Run(Cmd::Forget),
            63..=69 => Op::Run(Cmd::Prune),
            70..=76 => Op::Run(Cmd::Sync),
            _ => Op::Kill(*self.rng.pick(&[
                Cmd::Snapshot,
                Cmd::Snapshot,
                Cmd::Backup,
                Cmd::Backup,
                Cmd::Forget,
                Cmd::Prune,
                Cmd::Prune,
                Cmd::Sync,
                Cmd::Restore,
                Cmd::Restore,
            ])),
        };
        let op = if op == Op::Kill(Cmd::Restore) && self.snaps.is_empty() { Op::Mutate } else { op };
        let before = self.listing();
        let tree = self.scan(&self.src, true);
        let mut completed = true;
        match op {
            Op::Mutate => self.mutate(),
            Op::Kill(k) => {
                let args = self.args_of(k);
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                completed = !self.run_killed(&a, k);
                if k == Cmd::Restore {
                    // The same restore again over whatever the killed one left: exactly the snapshot.
                    self.ok(&a);
                    self.compare(a[1], &self.over().join("src"));
                    std::fs::remove_dir_all(self.over()).unwrap();
                }
            }
            Op::Run(k) => {
                let args = self.args_of(k);
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let t0 = Instant::now();
                let r = self.ok(&a);
                let v = r.json();
                let summary = match k {
                    Cmd::Snapshot => format!("id {}", v["id"]),
                    Cmd::Prune => format!("{v}"),
                    _ => String::new(),
                };
                self.note(format!("{a:?} ok in {:?} {summary}", t0.elapsed()));
            }
        }
        self.reconcile(op, &before, &tree, completed);
        if !completed {
            self.killed_commits += self.snaps.keys().filter(|id| !before.contains_key(*id)).count();
            // The dead process's lock must not stop the next writer: forget takes the exclusive
            // lock even for a dry run.
            self.ok(&["forget", "--dry-run"]);
        }
        self.check_all();
        if matches!(op, Op::Run(Cmd::Sync | Cmd::Backup)) {
            self.check_remote();
        }
        op
    }

    /// Brings the model up to date with the listing after `op`, failing on any change `op`
    /// cannot explain.
    fn reconcile(&mut self, op: Op, before: &BTreeMap<String, String>, tree: &Tree, completed: bool) {
        let after = self.listing();
        let model: BTreeSet<String> = self.snaps.keys().cloned().collect();
        assert_eq!(
            before.keys().cloned().collect::<BTreeSet<_>>(),
            model,
            "the model and the repository disagree before the step"
        );
        let (may_create, may_forget) = match op {
            Op::Mutate => (false, false),
            Op::Run(c) | Op::Kill(c) => (c.creates(), c.forgets()),
        };
        for (id, ty) in after.iter().filter(|(id, _)| !before.contains_key(*id)) {
            assert!(may_create, "snapshot {id} ({ty}) appeared during {op:?}");
            self.order += 1;
            self.note(format!("new snapshot {id} ({ty})"));
            self.snaps
                .insert(id.clone(), Snap { ty: ty.clone(), tree: tree.clone(), order: self.order, step: self.step });
        }
        // What a complete forget had to choose from: per type, (order, id), newest last.
        let mut candidates: BTreeMap<&str, Vec<(u64, String)>> = BTreeMap::new();
        for (id, s) in &self.snaps {
            candidates.entry(s.ty.as_str()).or_default().push((s.order, id.clone()));
        }
        let gone: Vec<String> = before.keys().filter(|id| !after.contains_key(*id)).cloned().collect();
        assert!(gone.is_empty() || may_forget, "snapshots {gone:?} disappeared during {op:?}");
        if completed && may_forget {
            // keep_last N per type: exactly the N newest remain.
            for (ty, n) in KEEP {
                let mut c = candidates.get(ty).cloned().unwrap_or_default();
                c.sort();
                let keep: BTreeSet<String> = c.iter().rev().take(n as usize).map(|(_, id)| id.clone()).collect();
                let kept: BTreeSet<String> =
                    c.iter().filter(|(_, id)| after.contains_key(id)).map(|(_, id)| id.clone()).collect();
                assert_eq!(
                    kept, keep,
                    "type {ty} with keep_last {n}: kept (left) is not the newest {n} (right) of {c:?}"
                );
            }
        }
        for id in &gone {
            let s = self.snaps.remove(id).unwrap();
            self.note(format!("forgotten {id} ({} of step {})", s.ty, s.step));
        }
    }

    /// Every snapshot restores to its recorded tree, and `verify --read-data` is clean.
    fn check_all(&mut self) {
        let ids: Vec<String> = self.snaps.keys().cloned().collect();
        for id in ids {
            let target = self.fresh_dir("restore");
            let t = target.to_string_lossy().into_owned();
            self.ok(&["restore", &id, "--target", &t]);
            self.compare(&id, &target.join("src"));
            std::fs::remove_dir_all(&target).unwrap();
        }
        let r = self.cairn(&["verify", "--read-data"]);
        assert!(r.code == 0, "verify --read-data exited {}\nstdout: {}\nstderr: {}", r.code, r.stdout, r.stderr);
    }

    fn compare(&self, id: &str, restored: &Path) {
        let s = &self.snaps[id];
        let got = if restored.exists() { self.scan(restored, true) } else { Tree::new() };
        if got != s.tree {
            let keys: BTreeSet<&String> = got.keys().chain(s.tree.keys()).collect();
            let diff: Vec<String> = keys
                .into_iter()
                .filter(|k| got.get(*k) != s.tree.get(*k))
                .map(|k| format!("  {k}: expected {:?}, restored {:?}", s.tree.get(k), got.get(k)))
                .collect();
            panic!("snapshot {id} ({} of step {}) does not restore as taken:\n{}", s.ty, s.step, diff.join("\n"));
        }
    }

    /// After a completed sync: the remote lists the same snapshots, verifies with all its data,
    /// and one of its snapshots restores from the remote alone.
    fn check_remote(&mut self) {
        let v = self.ok(&["--json", "--remote", "usb", "snapshots"]).json();
        let remote: BTreeSet<String> =
            v.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
        let local: BTreeSet<String> = self.snaps.keys().cloned().collect();
        assert_eq!(remote, local, "the remote's snapshots after sync");
        // The inventories agree, then every pack of the remote is read and checked.
        self.ok(&["verify", "--remote", "usb", "--read-data"]);
        if let Some(id) = local.iter().nth(self.rng.below(local.len() as u64) as usize).cloned() {
            let target = self.fresh_dir("remote-restore");
            let t = target.to_string_lossy().into_owned();
            self.ok(&["--remote", "usb", "restore", &id, "--target", &t]);
            self.compare(&id, &target.join("src"));
            std::fs::remove_dir_all(&target).unwrap();
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|e| panic!("{name}={v:?}: {e}")))
}

#[test]
fn robustness_run() {
    // CI replays one fixed sequence (the seed that found the killed-sync defect, so it stays a
    // regression check) and a landing never depends on luck; `CAIRN_ROBUST_SEED=random` explores.
    let seed = match std::env::var("CAIRN_ROBUST_SEED").as_deref() {
        Ok("random") => {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
        }
        _ => env_u64("CAIRN_ROBUST_SEED").unwrap_or(DEFAULT_SEED),
    };
    let steps = env_u64("CAIRN_ROBUST_STEPS").map_or(DEFAULT_STEPS, |n| n as usize);
    eprintln!("robustness run: CAIRN_ROBUST_SEED={seed} CAIRN_ROBUST_STEPS={steps}");
    let t0 = Instant::now();
    let mut r = Robust::new(seed);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for i in 1..=steps {
            r.step = i;
            let op = r.step();
            *counts.entry(format!("{op:?}")).or_default() += 1;
        }
    }));
    if let Err(e) = res {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!(
            "robustness run failed: CAIRN_ROBUST_SEED={seed} at step {} of {steps}\n{msg}\noperation log:\n{}",
            r.step,
            r.log.join("\n")
        );
    }
    eprintln!("operation log:\n{}", r.log.join("\n"));
    eprintln!(
        "robustness run: {steps} steps in {:.1}s, {} snapshots at the end, operations {counts:?}, \
         {} kills hit a running command ({} snapshots committed before the kill), {} came after it finished",
        t0.elapsed().as_secs_f64(),
        r.snaps.len(),
        r.kills.0,
        r.killed_commits,
        r.kills.1
    );
}

/// The defect the run found first (CAIRN_ROBUST_SEED=8, step 11): a restore SIGKILLed mid-file
/// left its `.NAME.cairn-restore-*` copy in the target, and restoring again kept it forever.
#[test]
fn restore_after_a_killed_restore_removes_its_temporary_file() {
    let env = Env::new();
    env.init_plain();
    let src = env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let big = crate::util::prng_bytes(8, 24 << 20);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    env.run(&["snapshot", "--type", "t", src.to_str().unwrap()]).ok();
    let target = env.path().join("out");
    let mut c = env.cmd();
    c.args(["restore", "latest", "--target", target.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = crate::util::ChildGuard(c.spawn().unwrap());
    let temp = |d: &Path| -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(d) else { return Vec::new() };
        rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".cairn-restore-"))
            .collect()
    };
    let t0 = Instant::now();
    // Kill as soon as the temporary copy exists (polling: the process is let run, not timed).
    while temp(&target.join("src")).is_empty() {
        assert!(child.0.try_wait().unwrap().is_none(), "restore finished before it could be killed");
        assert!(t0.elapsed() < Duration::from_secs(60), "no temporary file appeared");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert_eq!(temp(&target.join("src")).len(), 1, "the killed restore left its temporary file");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()]).ok();
    assert_eq!(temp(&target.join("src")), Vec::<String>::new(), "a temporary file survived the second restore");
    assert!(std::fs::read(target.join("src/big.bin")).unwrap() == big, "big.bin differs");
}
