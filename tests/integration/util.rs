//! Shared test helpers: temp dirs and a runner for the real `cairn` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A scratch directory with a repository path inside.
pub struct Env {
    pub dir: tempfile::TempDir,
}

/// Result of one CLI run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
    pub fn code(self, c: i32) -> Self {
        assert_eq!(self.code, c, "expected exit {c}\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl Env {
    pub fn new() -> Self {
        Env { dir: tempfile::tempdir().expect("tempdir") }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    /// A command for the real binary with a fast KDF, a fixed password and the repository set.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("CAIRN_KDF_MEMORY_KIB", "1024")
            .env("CAIRN_PASSWORD", "correct horse")
            .env("CAIRN_REPO", self.repo())
            .current_dir(self.path())
            .stdin(Stdio::null());
        c
    }
    pub fn run_cmd(&self, mut c: Command) -> Run {
        let Output { status, stdout, stderr } = c.output().expect("spawn cairn");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
    /// Runs `cairn ARGS...`.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut c = self.cmd();
        c.args(args);
        self.run_cmd(c)
    }
    /// `cairn init` (encrypted) and assert success.
    pub fn init(&self) {
        self.run(&["init"]).ok();
    }
    /// `cairn init --encryption none`.
    pub fn init_plain(&self) {
        self.run(&["init", "--encryption", "none"]).ok();
    }
}

/// Deterministic pseudo-random bytes (splitmix64).
pub fn prng_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x = x.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Asserts two trees are equal in content, kinds, modes, symlink targets and file mtimes.
pub fn assert_trees_equal(a: &Path, b: &Path) {
    use std::os::unix::fs::MetadataExt;
    let list = |root: &Path| {
        let mut v: Vec<PathBuf> = walk(root).into_iter().map(|p| p.strip_prefix(root).unwrap().to_path_buf()).collect();
        v.sort();
        v
    };
    let la = list(a);
    let lb = list(b);
    assert_eq!(la, lb, "different entries");
    for rel in la {
        let pa = a.join(&rel);
        let pb = b.join(&rel);
        let ma = std::fs::symlink_metadata(&pa).unwrap();
        let mb = std::fs::symlink_metadata(&pb).unwrap();
        assert_eq!(ma.file_type(), mb.file_type(), "{rel:?} kind");
        if ma.file_type().is_symlink() {
            assert_eq!(std::fs::read_link(&pa).unwrap(), std::fs::read_link(&pb).unwrap(), "{rel:?} target");
            continue;
        }
        assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "{rel:?} mode");
        if ma.is_file() {
            assert_eq!(std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap(), "{rel:?} content");
            assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()), "{rel:?} mtime");
        }
    }
}

/// All paths under `root` (not following symlinks), excluding root itself.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Files under `dir` of the repository (e.g. "packs"), recursively, regular files only.
pub fn repo_files(repo: &Path, dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(&repo.join(dir)).into_iter().filter(|p| p.is_file()).collect();
    v.sort();
    v
}
