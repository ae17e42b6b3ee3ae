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

// ---- BEGIN helpers for corruption.rs and encryption.rs (library-side inspection of a repository) ----

/// The password `Env::cmd` gives the binary.
pub const PASSWORD: &str = "correct horse";

/// Opens a repository in this process (to find ids, offsets and keys) and loads its index.
/// Drop it before running the binary on the same repository.
pub fn open_repo_with(repo: &Path, password: &str) -> cairn::repo::Repo {
    let pw = password.as_bytes().to_vec();
    let mut r = cairn::repo::Repo::open(repo, &|| Ok(zeroize::Zeroizing::new(pw.clone()))).expect("open repository");
    r.sync_index().expect("load index");
    r
}

/// `open_repo_with` and the default password.
pub fn open_repo(repo: &Path) -> cairn::repo::Repo {
    open_repo_with(repo, PASSWORD)
}

/// XORs the byte at `offset` of `path` with 0x5a.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x5a;
    std::fs::write(path, b).unwrap();
}

/// Path of pack `id` in `repo`.
pub fn pack_path(repo: &Path, id: &cairn::id::PackId) -> PathBuf {
    let h = id.to_hex();
    repo.join("packs").join(&h[..2]).join(h)
}

/// Asserts a run did not panic.
pub fn assert_no_panic(r: &Run) {
    assert!(!r.stderr.contains("panicked"), "panic:\n{}", r.stderr);
}

/// Where every chunk of every readable snapshot lives, per the repository index.
pub struct Layout {
    /// Indexed packs and their entries (offset order).
    pub packs: std::collections::BTreeMap<cairn::id::PackId, Vec<cairn::pack::Entry>>,
    /// Readable snapshots.
    pub snapshots: Vec<SnapLayout>,
    chunk_pack: std::collections::HashMap<cairn::id::ChunkId, cairn::id::PackId>,
}

/// One snapshot's chunks.
pub struct SnapLayout {
    pub id: String,
    pub backup_type: String,
    pub tree: Vec<cairn::id::ChunkId>,
    /// File path in the snapshot -> its chunks.
    pub files: std::collections::BTreeMap<String, Vec<cairn::id::ChunkId>>,
}

/// Reads the layout of `repo` through the library (default password).
pub fn layout(repo: &Path) -> Layout {
    let r = open_repo(repo);
    let mut packs = std::collections::BTreeMap::new();
    let mut chunk_pack = std::collections::HashMap::new();
    for (p, _) in r.cache.packs().unwrap() {
        let es = r.cache.pack_entries(&p).unwrap();
        for e in &es {
            chunk_pack.insert(e.id, p);
        }
        packs.insert(p, es);
    }
    let (snaps, _) = r.snapshots().unwrap();
    let mut snapshots = Vec::new();
    for (id, s) in snaps {
        let mut files = std::collections::BTreeMap::new();
        for n in r.tree(&s).unwrap() {
            let n = n.unwrap();
            if n.kind == cairn::manifest::NodeKind::File {
                files.insert(n.path_str(), n.chunks.clone());
            }
        }
        snapshots.push(SnapLayout { id: id.to_hex(), backup_type: s.backup_type.clone(), tree: s.tree.clone(), files });
    }
    Layout { packs, snapshots, chunk_pack }
}

impl Layout {
    /// The snapshot of backup type `ty` (exactly one expected).
    pub fn snap(&self, ty: &str) -> &SnapLayout {
        let v: Vec<_> = self.snapshots.iter().filter(|s| s.backup_type == ty).collect();
        assert_eq!(v.len(), 1, "snapshots of type {ty}");
        v[0]
    }
    /// The pack holding chunk `c`.
    pub fn pack_of(&self, c: &cairn::id::ChunkId) -> cairn::id::PackId {
        self.chunk_pack[c]
    }
    /// What verify reports as broken when `lost` chunks are unusable: per snapshot, "(tree)" when
    /// a tree chunk is lost, else every file with a lost chunk. Sorted (snapshot, path) pairs.
    pub fn affected_by(&self, lost: &std::collections::BTreeSet<cairn::id::ChunkId>) -> Vec<(String, String)> {
        let mut out = std::collections::BTreeSet::new();
        for s in &self.snapshots {
            if s.tree.iter().any(|c| lost.contains(c)) {
                out.insert((s.id.clone(), "(tree)".to_string()));
                continue;
            }
            for (p, cs) in &s.files {
                if cs.iter().any(|c| lost.contains(c)) {
                    out.insert((s.id.clone(), p.clone()));
                }
            }
        }
        out.into_iter().collect()
    }
    /// `affected_by` all chunks of `pack`.
    pub fn users_of_pack(&self, pack: &cairn::id::PackId) -> Vec<(String, String)> {
        self.affected_by(&self.packs[pack].iter().map(|e| e.id).collect())
    }
}

/// Every entry under `root` with its kind, size and content hash: equal listings mean nothing
/// was created, removed or changed.
pub fn tree_state(root: &Path) -> std::collections::BTreeMap<PathBuf, (bool, u64, String)> {
    walk(root)
        .into_iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let h = if m.is_file() { blake3::hash(&std::fs::read(&p).unwrap()).to_hex().to_string() } else { String::new() };
            (p.strip_prefix(root).unwrap().to_path_buf(), (m.is_dir(), if m.is_dir() { 0 } else { m.len() }, h))
        })
        .collect()
}

// ---- END helpers for corruption.rs and encryption.rs ----
