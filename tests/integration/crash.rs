//! SIGKILL the real `cairn snapshot` at several points of a ~200 MB snapshot. After every kill:
//! the repository verifies with `--read-data`, no snapshot appeared that was not completed (any
//! that did restores byte for byte), the dead process's lock is removed by the next command, and
//! the next snapshot succeeds. At the end a full snapshot restores byte-identical.
//!
//! The repository is unencrypted: in debug builds the cipher runs at a few MB/s, which would make
//! 200 MB take minutes; the commit protocol under test is the same in both modes.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{self, Env};

const FILES: usize = 4;
const FILE_SIZE: usize = 50 << 20;
/// The kill after which `repair index` runs first (a pack-based one: it always interrupts).
const REPAIR_AFTER: usize = 4;

#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// A fixed time after spawning.
    After(Duration),
    /// When the n-th pack this run starts is being written (a new temporary file past 64 KiB:
    /// lock and index files are written through `tmp/` too, but are small).
    PackWriting(usize),
    /// As soon as an index file appears (the run is about to write its snapshot).
    IndexWritten,
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// What one killed run left behind (printed, and shown in failure messages).
#[derive(Debug)]
#[allow(dead_code)]
struct Outcome {
    at: KillAt,
    killed_after: Duration,
    /// Killed by SIGKILL (false: it had already exited on its own).
    killed: bool,
    new_snapshots: Vec<String>,
    stale_locks: usize,
    tmp_files: usize,
    packs: usize,
}

/// Starts `cairn snapshot` and SIGKILLs it at `at`.
fn run_and_kill(env: &Env, src: &Path, at: KillAt) -> Outcome {
    let repo = env.repo();
    let before: BTreeSet<String> = util::snapshot_names(&repo).into_iter().collect();
    let index_before = names(&repo.join("index"));
    let tmp_before = names(&repo.join("tmp"));
    let mut c = env.cmd();
    c.args(["snapshot", "--type", "big"]).arg(src).stdout(Stdio::null()).stderr(Stdio::null());
    let start = Instant::now();
    let mut child = c.spawn().expect("spawn cairn");
    let mut tmp_seen = BTreeSet::new();
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        let elapsed = start.elapsed();
        let fire = match at {
            KillAt::After(d) => elapsed >= d,
            KillAt::PackWriting(n) => {
                let tmp = repo.join("tmp");
                for name in names(&tmp).difference(&tmp_before) {
                    let big = std::fs::metadata(tmp.join(name)).map(|m| m.len() > 64 << 10).unwrap_or(false);
                    if name.ends_with(".tmp") && big {
                        tmp_seen.insert(name.clone());
                    }
                }
                tmp_seen.len() >= n
            }
            KillAt::IndexWritten => names(&repo.join("index")) != index_before,
        };
        if fire {
            break None;
        }
        assert!(elapsed < Duration::from_secs(120), "kill point {at:?} never reached");
        std::thread::sleep(Duration::from_micros(500));
    };
    let killed_after = start.elapsed();
    let killed = match exited {
        Some(status) => {
            assert!(status.success(), "snapshot failed on its own: {status:?}");
            false
        }
        None => {
            child.kill().expect("SIGKILL");
            let status = child.wait().expect("reap");
            // It may still have exited on its own between the last poll and the kill.
            status.signal() == Some(libc::SIGKILL)
        }
    };
    let after: BTreeSet<String> = util::snapshot_names(&repo).into_iter().collect();
    assert!(before.is_subset(&after), "a snapshot disappeared");
    Outcome {
        at,
        killed_after,
        killed,
        new_snapshots: after.difference(&before).cloned().collect(),
        stale_locks: util::repo_files(&repo, "locks").len(),
        tmp_files: util::repo_files(&repo, "tmp").len(),
        packs: util::repo_files(&repo, "packs").len(),
    }
}

fn restore_and_compare(env: &Env, snap: &str, src: &Path, n: usize) {
    let out = env.path().join(format!("restore-{n}"));
    env.run(&["restore", snap, "--target", out.to_str().unwrap()]).ok();
    util::assert_trees_equal(src, &out.join("src"));
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn sigkill_during_snapshot() {
    let t0 = Instant::now();
    let env = Env::new();
    env.run(&["init", "--encryption", "none", "--pack-size-mib", "4"]).ok();
    let repo = env.repo();
    let src: PathBuf = env.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    for i in 0..FILES {
        std::fs::write(src.join(format!("data-{i}.bin")), util::prng_bytes(1000 + i as u64, FILE_SIZE)).unwrap();
    }
    std::fs::write(src.join("etc/small.conf"), b"key = value\n").unwrap();
    let probe = env.path().join("probe");
    std::fs::create_dir(&probe).unwrap();
    let setup = t0.elapsed();

    // Until a run gets its index written, every run rewrites the packs from the start (the
    // killed runs' packs are not indexed), so pack-based points always land mid-snapshot. Timed
    // points late in the list may find a fast machine already done: that is allowed.
    let points = [
        KillAt::After(Duration::from_millis(50)),
        KillAt::PackWriting(1),
        KillAt::After(Duration::from_millis(300)),
        KillAt::PackWriting(10),
        KillAt::PackWriting(5),
        KillAt::PackWriting(30),
        KillAt::After(Duration::from_millis(800)),
        KillAt::IndexWritten,
        KillAt::After(Duration::from_millis(1500)),
    ];
    let mut outcomes = Vec::new();
    for (n, &at) in points.iter().enumerate() {
        let o = run_and_kill(&env, &src, at);
        eprintln!("kill {n}: {o:?}");

        // No half snapshot: at most one new snapshot file, and only one that is complete.
        assert!(o.new_snapshots.len() <= 1, "{o:?}");
        if !o.killed {
            assert_eq!(o.new_snapshots.len(), 1, "a run that exited 0 committed its snapshot: {o:?}");
        }
        for s in &o.new_snapshots {
            restore_and_compare(&env, s, &src, n);
        }

        // The dead process's lock is broken by the next command, which succeeds. Once, that is
        // `repair index`, which needs an exclusive lock (a shared snapshot lock would not even
        // conflict with the dead one); it also adopts the packs the killed run left.
        if n == REPAIR_AFTER {
            assert!(o.killed && o.stale_locks == 1, "{o:?}");
            env.run(&["repair", "index"]).ok();
            assert!(util::repo_files(&repo, "locks").is_empty(), "stale lock left after repair index ({o:?})");
        }
        std::fs::write(probe.join("n"), format!("{n}")).unwrap();
        env.run(&["snapshot", "--type", "probe", probe.to_str().unwrap()]).ok();
        assert!(util::repo_files(&repo, "locks").is_empty(), "stale lock left after the next snapshot ({o:?})");

        // Whatever the kill left (unreferenced packs, temporary files, an index without its
        // snapshot) is not damage.
        let v = env.run(&["--json", "verify", "--read-data"]).ok().json();
        assert_eq!(v["ok"], true, "{v}");
        assert!(
            v["problems"].as_array().unwrap().is_empty() && v["damaged_packs"].as_array().unwrap().is_empty(),
            "{v}"
        );
        outcomes.push(o);
    }
    let interrupted: Vec<&Outcome> = outcomes.iter().filter(|o| o.killed && o.new_snapshots.is_empty()).collect();
    assert!(interrupted.len() >= 4, "too few kills landed mid-snapshot: {outcomes:#?}");
    assert!(
        interrupted.iter().any(|o| o.packs > 0 && o.stale_locks > 0),
        "no kill landed after packs were published while the lock was held: {outcomes:#?}"
    );

    // A full snapshot now completes and restores byte-identical.
    let kills_done = t0.elapsed();
    let snap = env.run(&["--json", "snapshot", "--type", "big", "--force-read", src.to_str().unwrap()]).ok().json();
    assert_eq!(snap["stats"]["files"].as_u64(), Some(FILES as u64 + 1));
    assert_eq!(snap["stats"]["errors"].as_u64(), Some(0));
    restore_and_compare(&env, snap["id"].as_str().unwrap(), &src, 99);
    env.run(&["verify", "--read-data"]).ok();
    assert!(util::repo_files(&repo, "locks").is_empty());
    eprintln!(
        "crash test timing: setup {:.1}s, kills {:.1}s, final snapshot+restore+verify {:.1}s, total {:.1}s",
        setup.as_secs_f64(),
        (kills_done - setup).as_secs_f64(),
        (t0.elapsed() - kills_done).as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
