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
    /// A `status` run: it exits with its verdict (0 OK, 3 damage, 6 overdue, 7 failing, 8
    /// warning), never with an error, and `--json` says the same.
    pub fn verdict(self) -> Self {
        assert!(
            [0, 3, 6, 7, 8].contains(&self.code),
            "not a verdict\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&self.stdout) {
            assert_eq!(v["exit_code"], self.code, "{v:#}");
        }
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
    /// A command for the real binary with a fixed password and the repository set, whose new key
    /// files get the lowest Argon2id cost `--kdf-memory` allows: hundreds of repositories stay fast.
    pub fn cmd(&self) -> Command {
        let mut c = self.cmd_real_kdf();
        c.args(["--kdf-memory", "1024"]);
        c
    }
    /// [`Env::cmd`] with the real key derivation cost.
    pub fn cmd_real_kdf(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
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
            // A file a concurrent cairn process removes between listing and stat is gone, not an error.
            let m = match std::fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", p.display()),
            };
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
pub fn open_repo_with(repo: &Path, password: &str) -> cairn::Repo {
    let pw = password.as_bytes().to_vec();
    let mut r = cairn::Repo::open(repo, &|| Ok(zeroize::Zeroizing::new(pw.clone()))).expect("open repository");
    r.sync_index().expect("load index");
    r
}

/// `open_repo_with` and the default password.
pub fn open_repo(repo: &Path) -> cairn::Repo {
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
    pub packs: std::collections::BTreeMap<cairn::id::PackId, Vec<cairn::format::pack::Entry>>,
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
    for (p, _) in r.cache().packs().unwrap() {
        let es = r.cache().pack_entries(&p).unwrap();
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
            if n.kind == cairn::format::manifest::NodeKind::File {
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
            let h = if m.is_file() {
                blake3::hash(&std::fs::read(&p).unwrap()).to_hex().to_string()
            } else {
                String::new()
            };
            (p.strip_prefix(root).unwrap().to_path_buf(), (m.is_dir(), if m.is_dir() { 0 } else { m.len() }, h))
        })
        .collect()
}

// ---- END helpers for corruption.rs and encryption.rs ----

// ---- helpers added for roundtrip / crash / restore_safety / bad_input ----

/// Raw result of one CLI run (stdout kept as bytes, for `cat`).
pub struct RawRun {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Env {
    /// Runs `cairn ARGS...` with `input` on standard input.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let r = self.run_raw_stdin(args, Some(input));
        Run { code: r.code, stdout: String::from_utf8_lossy(&r.stdout).into_owned(), stderr: r.stderr }
    }
    /// Runs `cairn ARGS...` and keeps stdout as bytes.
    pub fn run_raw(&self, args: &[&str]) -> RawRun {
        self.run_raw_stdin(args, None)
    }
    fn run_raw_stdin(&self, args: &[&str], input: Option<&[u8]>) -> RawRun {
        use std::io::Write;
        let mut c = self.cmd();
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().expect("spawn cairn");
        let writer = input.map(|data| {
            let mut stdin = child.stdin.take().expect("piped stdin");
            let data = data.to_vec();
            std::thread::spawn(move || {
                // The child may exit early (error paths); a broken pipe is not our failure.
                let _ = stdin.write_all(&data);
            })
        });
        let Output { status, stdout, stderr } = child.wait_with_output().expect("wait cairn");
        if let Some(w) = writer {
            w.join().expect("stdin writer");
        }
        RawRun { code: status.code().unwrap_or(-1), stdout, stderr: String::from_utf8_lossy(&stderr).into_owned() }
    }
}

/// Whether the tests run as root (permission bits do not stop root from reading).
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Names of the snapshot files in a repository, sorted.
pub fn snapshot_names(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every path under `root` with its kind, size and content hash: a fingerprint for "nothing changed".
pub fn fingerprint(root: &Path) -> Vec<(PathBuf, String)> {
    let mut v: Vec<(PathBuf, String)> = walk(root)
        .into_iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.is_file() {
                format!("file {} {}", m.len(), blake3::hash(&std::fs::read(&p).unwrap()).to_hex())
            } else if m.file_type().is_symlink() {
                format!("symlink {:?}", std::fs::read_link(&p).unwrap())
            } else {
                "dir".to_string()
            };
            (p.strip_prefix(root).unwrap().to_path_buf(), what)
        })
        .collect();
    v.sort();
    v
}

/// `assert_trees_equal`, plus directory and symlink mtimes (restore sets those too).
pub fn assert_trees_equal_strict(a: &Path, b: &Path) {
    use std::os::unix::fs::MetadataExt;
    assert_trees_equal(a, b);
    let mut all = walk(a);
    all.push(a.to_path_buf());
    for pa in all {
        let rel = pa.strip_prefix(a).unwrap();
        let pb = b.join(rel);
        let ma = std::fs::symlink_metadata(&pa).unwrap();
        let mb = std::fs::symlink_metadata(&pb).unwrap();
        if ma.is_dir() {
            assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "{rel:?} dir mode");
        }
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "{rel:?} mtime ({:?})",
            ma.file_type()
        );
    }
}

// ---- BEGIN helpers for sources.rs and export.rs (config-driven runs, writer processes, system tools) ----

/// What `write_config` puts in the config's `password_file`.
pub const CONFIG_PASSWORD: &str = "config file password";

impl Env {
    /// A config-driven command: `--config CONFIG` and no CAIRN_REPO / CAIRN_PASSWORD from the
    /// environment, so the config's `repository` and `password_file` are what count. The working
    /// directory is the Env's scratch dir, not the config's.
    pub fn cfg_cmd(&self, config: &Path, args: &[&str]) -> Command {
        Self::with_cfg(self.cmd(), config, args)
    }
    /// [`Env::cfg_cmd`] with the real key derivation cost.
    pub fn cfg_cmd_real_kdf(&self, config: &Path, args: &[&str]) -> Command {
        Self::with_cfg(self.cmd_real_kdf(), config, args)
    }
    fn with_cfg(mut c: Command, config: &Path, args: &[&str]) -> Command {
        // Retries of transient failures (a busy database, a dying dump tool) 10 ms apart, not 5 s.
        c.env_remove("CAIRN_REPO")
            .env_remove("CAIRN_PASSWORD")
            .env("CAIRN_RETRY_BASE_MS", "10")
            .arg("--config")
            .arg(config)
            .args(args);
        c
    }
    /// Runs a `cfg_cmd`.
    pub fn run_cfg(&self, config: &Path, args: &[&str]) -> Run {
        self.run_cmd(self.cfg_cmd(config, args))
    }
    /// Runs a `cfg_cmd` and keeps stdout as bytes (for `cat`).
    pub fn run_cfg_raw(&self, config: &Path, args: &[&str]) -> RawRun {
        let Output { status, stdout, stderr } = self.cfg_cmd(config, args).output().expect("spawn cairn");
        RawRun { code: status.code().unwrap_or(-1), stdout, stderr: String::from_utf8_lossy(&stderr).into_owned() }
    }
}

/// Writes `dir/cairn.json` (a standalone config: the `backup` section's content at the top level)
/// and `dir/cairn-password`; returns the config's path. Relative paths in `section` resolve
/// against `dir`. Unless `section` says otherwise, the capacity warning is set at 100 %: how full
/// the test machine's disk is must not add notifications to the counts the tests assert.
pub fn write_config(dir: &Path, mut section: serde_json::Value) -> PathBuf {
    if let Some(o) = section.as_object_mut() {
        o.entry("capacity").or_insert_with(|| serde_json::json!({ "warn_percent": 100 }));
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("cairn-password"), format!("{CONFIG_PASSWORD}\n")).unwrap();
    let p = dir.join("cairn.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&section).unwrap()).unwrap();
    p
}

/// Number of snapshot files in a repository (0 when it has none or does not exist).
pub fn snapshot_count(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("snapshots")).map(|d| d.count()).unwrap_or(0)
}

/// Whether `program` is found on PATH.
pub fn have_program(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// `base` (cairn with its arguments and environment) run under `faketime AT` in `dir`: the wall
/// clock starts at AT and runs on. The monotonic clock is not faked, so timeouts, retries and
/// durations pace as they would.
pub fn under_faketime(base: &Command, at: &str, dir: &Path) -> Command {
    ensure_package("faketime", || have_program("faketime"));
    let mut c = Command::new("faketime");
    c.env_clear();
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .arg(at)
        .arg(base.get_program())
        .args(base.get_args());
    c
}

/// `cairn ARGS` (the Env's repository and password) under `faketime AT` (the clock starts at AT,
/// an absolute time or an offset like "+2 days", and runs).
pub fn faked(env: &Env, at: &str, args: &[&str]) -> Run {
    let mut base = env.cmd();
    base.args(args);
    env.run_cmd(under_faketime(&base, at, env.path()))
}

/// Gives `src/f.txt` under the Env new content (through a rename: a new inode, never taken as
/// unchanged).
pub fn write_src(env: &Env, content: &str) {
    let dir = env.path().join("src");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f.tmp"), content).unwrap();
    std::fs::rename(dir.join("f.tmp"), dir.join("f.txt")).unwrap();
}

/// Installs a Debian package when `present()` is false and we run as root (apt-get install,
/// then update and install again if that fails); panics when it is still missing.
pub fn ensure_package(package: &str, present: impl Fn() -> bool) {
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = APT.lock().unwrap_or_else(|e| e.into_inner());
    if present() {
        return;
    }
    assert!(is_root(), "{package} is needed by this test: install it (apt-get install {package})");
    let install = || {
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=120", "install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=120", "update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status();
        install();
    }
    assert!(present(), "{package} could not be installed");
}

/// A child process (writer, lock holder, ...) killed by its own id and reaped when dropped.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Spawns `python3 -c SCRIPT ARGS...` with stdout piped.
    pub fn python(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Self {
        let mut c = Command::new("python3");
        c.arg("-c").arg(script);
        for a in args {
            c.arg(a);
        }
        ChildGuard(c.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().expect("spawn python3"))
    }
    /// Reads one line of the child's stdout (e.g. a "ready" signal).
    pub fn read_line(&mut self) -> String {
        use std::io::Read;
        let out = self.0.stdout.as_mut().expect("piped stdout");
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        // A byte at a time: nothing after the newline is taken from the pipe.
        while out.read(&mut b).expect("read child stdout") == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        String::from_utf8_lossy(&line).into_owned()
    }
    /// Waits for exit; returns the exit status and the rest of stdout.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        let mut s = String::new();
        if let Some(mut o) = self.0.stdout.take() {
            let _ = o.read_to_string(&mut s);
        }
        let st = self.0.wait().expect("wait child");
        (st, s)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Copies a directory tree (files, dirs, symlinks), leaving out entries named in `skip`.
pub fn copy_dir(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if skip.iter().any(|s| name == std::ffi::OsStr::new(s)) {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_dir(&src, &dst, &[]);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// A copy of `examples/app` (without any `backups/` left by a local run) at `dir/app`; returns
/// (app dir, its config.json).
pub fn example_app(dir: &Path) -> (PathBuf, PathBuf) {
    let app = dir.join("app");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/app"), &app, &["backups"]);
    let cfg = app.join("config.json");
    (app, cfg)
}
// ---- END helpers for sources.rs and export.rs ----

/// Uid (and gid) of `nobody`, which the tests become when they run as root.
pub const NOBODY: u32 = 65534;

/// Runs cairn as `nobody` when the tests run as root (root reads mode-000 files and lists
/// mode-000 directories, so permission behaviour only shows for an unprivileged user), else as
/// the current user. Pair with `give_to_unprivileged` on the scratch directory.
pub fn run_unprivileged(env: &Env, args: &[&str]) -> Run {
    use std::os::unix::process::CommandExt;
    let mut c = env.cmd();
    if is_root() {
        c.uid(NOBODY).gid(NOBODY);
    }
    c.args(args);
    env.run_cmd(c)
}

/// When root: hands `root` and everything under it to `nobody` (see `run_unprivileged`).
pub fn give_to_unprivileged(root: &Path) {
    if is_root() {
        let mut all = walk(root);
        all.push(root.to_path_buf());
        for p in all {
            std::os::unix::fs::lchown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }
}
