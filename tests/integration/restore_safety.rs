//! Restore must never write outside its target: crafted snapshots with `..`, absolute paths,
//! NUL bytes and symlink tricks, and targets that already hold symlinks or hard links pointing
//! outside. Snapshots are crafted with the library exactly as `backup::snapshot` writes them
//! (chunks in a pack, an index file, then the snapshot file), and restored with the real binary.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cairn::format::blob;
use cairn::format::crypto::ObjectKind;
use cairn::format::index::{self, PackRecord};
use cairn::format::manifest::{Node, NodeKind, Snapshot, SnapshotKind, Stats};
use cairn::id::{content_hash, ChunkId, IndexId, SnapshotId};
use cairn::{Handle, PackWriter, Repo, Store};

use crate::util::{self, Env};

/// Opens the repository with the password `util::Env` uses.
fn open_repo(repo_dir: &Path) -> Repo {
    let pw = || Ok(zeroize::Zeroizing::new(b"correct horse".to_vec()));
    Repo::open(repo_dir, &pw).expect("open repository")
}

fn add_chunk(repo: &Repo, pack: &mut PackWriter, added: &mut HashSet<ChunkId>, data: &[u8]) -> ChunkId {
    let id = repo.keys().chunk_id(data);
    if added.insert(id) {
        let sealed = repo.keys().seal(ObjectKind::Chunk, &id.0, &blob::encode(data, 3));
        pack.add(id, &sealed, data.len() as u32, None).expect("add chunk");
    }
    id
}

/// Writes a snapshot whose tree is exactly `nodes`, in the given order (no sorting, no path
/// checks). A file node's content is taken from `file_contents` by path (empty if absent); its
/// `chunks` and `size` are filled in. Returns the snapshot id in hex.
pub fn craft_snapshot(repo_dir: &Path, nodes: Vec<Node>, file_contents: &[(&[u8], &[u8])]) -> String {
    let repo = open_repo(repo_dir);
    let contents: HashMap<&[u8], &[u8]> = file_contents.iter().copied().collect();
    let mut pack = PackWriter::new(repo.store()).expect("pack writer");
    let mut added = HashSet::new();
    let mut tree = Vec::new();
    let mut stats = Stats::default();
    for mut n in nodes {
        match n.kind {
            NodeKind::File => {
                let data = contents.get(n.path.as_slice()).copied().unwrap_or_default();
                n.size = data.len() as u64;
                n.chunks =
                    if data.is_empty() { Vec::new() } else { vec![add_chunk(&repo, &mut pack, &mut added, data)] };
                stats.files += 1;
                stats.logical_bytes += n.size;
            }
            NodeKind::Dir => stats.dirs += 1,
            NodeKind::Symlink => stats.symlinks += 1,
        }
        n.encode_record(&mut tree);
    }
    let tree_id = add_chunk(&repo, &mut pack, &mut added, &tree);
    let written = pack.finish(repo.store(), repo.keys()).expect("finish pack");
    let sealed_index =
        index::seal(repo.keys(), &[PackRecord { id: written.id, size: written.size, entries: written.entries }]);
    repo.store().put(Handle::Index(IndexId(content_hash(&sealed_index))), &sealed_index).expect("index file");
    let snap = Snapshot {
        time: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, false),
        backup_type: "crafted".into(),
        kind: SnapshotKind::Manual,
        description: Some("crafted by restore_safety".into()),
        ticket: None,
        creator: None,
        purpose: None,
        host: "test".into(),
        paths: vec!["/crafted".into()],
        labels: Default::default(),
        stats,
        tree: vec![tree_id],
        tree_len: tree.len() as u64,
        parent: None,
        errors: Vec::new(),
        source: Default::default(),
        program: "restore_safety test".into(),
        seq: 0,
    };
    let sealed = snap.seal(repo.keys());
    let id = SnapshotId(content_hash(&sealed));
    repo.store().put(Handle::Snapshot(id), &sealed).expect("snapshot file");
    id.to_hex()
}

fn node(path: &[u8], kind: NodeKind) -> Node {
    let (mode, target) = match kind {
        NodeKind::File => (0o100644, Vec::new()),
        NodeKind::Dir => (0o040755, Vec::new()),
        NodeKind::Symlink => (0o120777, Vec::new()),
    };
    Node {
        path: path.to_vec(),
        kind,
        mode,
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        mtime_ns: 1_700_000_000_000_000_000,
        ctime_ns: 1_700_000_000_000_000_000,
        inode: 0,
        size: 0,
        target,
        chunks: Vec::new(),
    }
}

fn file(path: &[u8]) -> Node {
    node(path, NodeKind::File)
}

fn dir(path: &[u8]) -> Node {
    node(path, NodeKind::Dir)
}

fn symlink(path: &[u8], target: &[u8]) -> Node {
    let mut n = node(path, NodeKind::Symlink);
    n.target = target.to_vec();
    n
}

/// A repository, an `outside` directory that must stay as it is, and a target two levels down
/// (so `..` and `../..` land in directories the test watches).
struct Scene {
    env: Env,
    outside: PathBuf,
    target: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let env = Env::new();
        env.init();
        let outside = env.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let target = env.path().join("work/target");
        std::fs::create_dir_all(&target).unwrap();
        Scene { env, outside, target }
    }

    fn outside_bytes(&self) -> Vec<u8> {
        self.outside.as_os_str().as_bytes().to_vec()
    }

    /// Everything in the scene except the repository and the target.
    fn surroundings(&self) -> Vec<(PathBuf, String)> {
        util::fingerprint(self.env.path())
            .into_iter()
            .filter(|(p, _)| !p.starts_with("repo/") && !p.starts_with("work/target/") && p != Path::new("repo"))
            .collect()
    }

    /// Runs `restore --json`; returns (exit code, report errors as (path, message)).
    fn restore(&self, snap: &str) -> (i32, Vec<(String, String)>, String) {
        let r = self.env.run(&["--json", "restore", snap, "--target", self.target.to_str().unwrap()]);
        let errors = match serde_json::from_str::<serde_json::Value>(&r.stdout) {
            Ok(v) => v["report"]["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e[0].as_str().unwrap().to_string(), e[1].as_str().unwrap().to_string()))
                .collect(),
            Err(_) => Vec::new(),
        };
        (r.code, errors, r.stderr)
    }
}

#[test]
fn unsafe_paths_are_refused() {
    let s = Scene::new();
    let abs_in_outside = [s.outside_bytes(), b"/abs".to_vec()].concat();
    let abs_literal = format!("/tmp/cairn-restore-safety-{}-abs", std::process::id());
    let mut nul_escape = b"nul\0".to_vec();
    nul_escape.extend_from_slice(b"/../../../outside/nul");
    let bad: Vec<Node> = vec![
        file(b"../x"),
        file(b"../../outside/dotdot"),
        file(&abs_in_outside),
        file(abs_literal.as_bytes()),
        file(b"a/../../b"),
        file(b"a/../../../outside/b2"),
        file(&nul_escape),
        file(b"a\0b"),
        file(b"./dot"),
        file(b"a//b"),
        file(b"trailing/"),
        file(b""),
        dir(b"../evil-dir"),
        dir(b"/tmp"),
        symlink(b"../evil-link", b"/etc/passwd"),
        symlink(b"../../outside/evil-link", b"/etc/passwd"),
    ];
    let n_bad = bad.len();
    let mut nodes = vec![file(b"good.txt")];
    nodes.extend(bad);
    nodes.push(file(b"also-good.txt"));
    let contents: Vec<(&[u8], &[u8])> = nodes.iter().map(|n| (n.path.as_slice(), &b"evil"[..])).collect();
    let mut contents = contents;
    contents[0].1 = b"fine";
    let last = contents.len() - 1;
    contents[last].1 = b"fine too";
    let snap = craft_snapshot(&s.env.repo(), nodes.clone(), &contents);

    let before = s.surroundings();
    let (code, errors, stderr) = s.restore(&snap);
    assert_eq!(code, 1, "restore must fail when entries are refused\n{stderr}");
    assert_eq!(errors.len(), n_bad, "every unsafe node reported: {errors:#?}");
    assert!(errors.iter().all(|(_, m)| m.starts_with("refused: ")), "{errors:#?}");
    assert!(stderr.contains(&format!("{n_bad} entries could not be restored")), "{stderr}");
    assert!(stderr.contains("refused: absolute path"), "{stderr}");
    assert!(stderr.contains("refused: path contains NUL"), "{stderr}");
    assert!(stderr.contains("refused: path component \"..\""), "{stderr}");

    assert_eq!(s.surroundings(), before, "nothing written outside the target");
    assert!(util::fingerprint(&s.outside).is_empty());
    assert!(!Path::new(&abs_literal).exists(), "absolute path written");
    assert!(!Path::new("/tmp").join("evil-link").exists());
    // The safe entries are restored, nothing else.
    let inside: Vec<PathBuf> = util::fingerprint(&s.target).into_iter().map(|(p, _)| p).collect();
    assert_eq!(inside, [PathBuf::from("also-good.txt"), PathBuf::from("good.txt")]);
    assert_eq!(std::fs::read(s.target.join("good.txt")).unwrap(), b"fine");
    assert_eq!(std::fs::read(s.target.join("also-good.txt")).unwrap(), b"fine too");

    // `ls` lists every crafted node, unsafe or not.
    let ls = s.env.run(&["--json", "ls", &snap]).ok().json();
    assert_eq!(ls["nodes"].as_array().unwrap().len(), nodes.len());
}

/// A symlink `d -> OUTSIDE` followed (or preceded) by a file `d/evil` must not put `evil` in OUTSIDE.
#[test]
fn symlink_then_file_through_it() {
    type Make = fn(&[u8]) -> Vec<Node>;
    let cases: Vec<(&str, Make)> = vec![
        ("symlink first", |o: &[u8]| vec![symlink(b"d", o), file(b"d/evil")]),
        ("file first", |o: &[u8]| vec![file(b"d/evil"), symlink(b"d", o)]),
        ("symlink, dir, file", |o: &[u8]| vec![symlink(b"d", o), dir(b"d"), file(b"d/evil")]),
        ("relative symlink", |_: &[u8]| vec![symlink(b"d", b"../../outside"), file(b"d/evil")]),
        ("nested symlink", |o: &[u8]| vec![dir(b"x"), symlink(b"x/d", o), file(b"x/d/evil")]),
        ("symlink through symlink", |o: &[u8]| vec![symlink(b"d", o), symlink(b"d/evil", b"/etc/passwd")]),
        ("dir through symlink", |o: &[u8]| vec![symlink(b"d", o), dir(b"d/evil")]),
        ("parent symlink", |_: &[u8]| {
            vec![symlink(b"up", b".."), file(b"up/evil"), symlink(b"up2", b"../.."), dir(b"up2/evil")]
        }),
    ];
    for (what, make) in cases {
        let s = Scene::new();
        let nodes = make(&s.outside_bytes());
        let snap = craft_snapshot(
            &s.env.repo(),
            nodes,
            &[(b"d/evil", b"evil"), (b"x/d/evil", b"evil"), (b"up/evil", b"evil")],
        );
        let before = s.surroundings();
        let (code, errors, stderr) = s.restore(&snap);
        assert!(
            util::fingerprint(&s.outside).is_empty(),
            "{what}: wrote into outside: {:?}",
            util::fingerprint(&s.outside)
        );
        assert_eq!(s.surroundings(), before, "{what}: nothing written outside the target");
        assert_ne!(code, 0, "{what}: the conflict is reported\n{stderr}");
        assert!(!errors.is_empty(), "{what}");
        assert!(stderr.contains("entries could not be restored"), "{what}: {stderr}");
    }
}

/// Two restores into the same target: the first leaves a symlink pointing outside, the second
/// must not write through it.
#[test]
fn second_restore_does_not_follow_first_restores_symlink() {
    let s = Scene::new();
    let a =
        craft_snapshot(&s.env.repo(), vec![symlink(b"d", &s.outside_bytes()), symlink(b"f", b"../../outside/f")], &[]);
    let (code, errors, stderr) = s.restore(&a);
    assert_eq!((code, errors.len()), (0, 0), "symlinks themselves are data: {stderr}");
    assert_eq!(std::fs::read_link(s.target.join("d")).unwrap(), s.outside);

    let b = craft_snapshot(
        &s.env.repo(),
        vec![file(b"d/evil"), dir(b"d/sub"), file(b"f")],
        &[(b"d/evil", b"evil"), (b"f", b"new")],
    );
    let (code, errors, stderr) = s.restore(&b);
    assert!(util::fingerprint(&s.outside).is_empty(), "wrote through the symlink: {:?}", util::fingerprint(&s.outside));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors.iter().all(|(_, m)| m.contains("is a symlink in the target; refusing to write through it")),
        "{errors:#?}"
    );
    // `f` was a symlink to outside/f: it is replaced by the file, outside/f is not created.
    let m = std::fs::symlink_metadata(s.target.join("f")).unwrap();
    assert!(m.is_file());
    assert_eq!(std::fs::read(s.target.join("f")).unwrap(), b"new");
}

/// Links that already exist in the target where restored entries go.
#[test]
fn preexisting_links_in_target_are_not_written_through() {
    let s = Scene::new();
    std::fs::write(s.outside.join("victim"), b"original").unwrap();
    std::fs::write(s.outside.join("hl-victim"), b"original hard").unwrap();
    std::fs::create_dir(s.outside.join("vdir")).unwrap();
    let t = &s.target;
    std::os::unix::fs::symlink(s.outside.join("victim"), t.join("f")).unwrap();
    std::os::unix::fs::symlink(s.outside.join("created-through-dangling"), t.join("dangling")).unwrap();
    std::os::unix::fs::symlink(&s.outside, t.join("d")).unwrap();
    std::os::unix::fs::symlink(s.outside.join("vdir"), t.join("dd")).unwrap();
    std::os::unix::fs::symlink(s.outside.join("victim"), t.join("s")).unwrap();
    std::fs::hard_link(s.outside.join("hl-victim"), t.join("h")).unwrap();
    std::fs::create_dir(t.join("sub")).unwrap();
    std::os::unix::fs::symlink(s.outside.join("victim"), t.join("sub/f")).unwrap();
    std::os::unix::fs::symlink("../../../outside", t.join("rel")).unwrap();
    let outside_before = util::fingerprint(&s.outside);

    let nodes = vec![
        file(b"f"),
        file(b"dangling"),
        file(b"d/evil"),
        dir(b"dd"),
        file(b"dd/evil"),
        symlink(b"s", b"elsewhere"),
        file(b"h"),
        dir(b"sub"),
        file(b"sub/f"),
        dir(b"rel/evil-dir"),
        file(b"rel/evil"),
    ];
    let contents: Vec<(&[u8], &[u8])> = nodes.iter().map(|n| (n.path.as_slice(), &b"from snapshot"[..])).collect();
    let snap = craft_snapshot(&s.env.repo(), nodes.clone(), &contents);
    let (code, errors, stderr) = s.restore(&snap);

    assert_eq!(util::fingerprint(&s.outside), outside_before, "outside changed");
    assert_eq!(std::fs::read(s.outside.join("victim")).unwrap(), b"original");
    assert_eq!(std::fs::read(s.outside.join("hl-victim")).unwrap(), b"original hard");
    assert!(!s.outside.join("created-through-dangling").exists());
    assert!(!s.outside.join("evil").exists() && !s.outside.join("vdir/evil").exists());
    assert_eq!(code, 1, "{stderr}");
    let failed: HashSet<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(failed, HashSet::from(["d/evil", "dd", "dd/evil", "rel/evil-dir", "rel/evil"]), "{errors:#?}");

    // Where a file replaces a link, it is a fresh regular file with the snapshot's content.
    for p in ["f", "dangling", "h", "sub/f"] {
        let m = std::fs::symlink_metadata(t.join(p)).unwrap();
        assert!(m.is_file(), "{p} is not a regular file");
        assert_eq!(std::os::unix::fs::MetadataExt::nlink(&m), 1, "{p} still hard-linked");
        assert_eq!(std::fs::read(t.join(p)).unwrap(), b"from snapshot", "{p}");
    }
    assert_eq!(std::fs::read_link(t.join("s")).unwrap(), Path::new("elsewhere"));
    // The links that were refused are left alone.
    assert_eq!(std::fs::read_link(t.join("d")).unwrap(), s.outside);
    assert_eq!(std::fs::read_link(t.join("rel")).unwrap(), Path::new("../../../outside"));
}

/// An honest snapshot of a tree that contains symlinks pointing outside restores them as links
/// and never writes through them, even when a directory of the same tree is restored later.
#[test]
fn real_snapshot_with_outside_symlinks() {
    let s = Scene::new();
    let src = s.env.path().join("src");
    std::fs::create_dir_all(src.join("data")).unwrap();
    std::fs::write(src.join("data/x"), b"x").unwrap();
    std::os::unix::fs::symlink(&s.outside, src.join("link-out")).unwrap();
    std::os::unix::fs::symlink("../../outside/never", src.join("data/rel-out")).unwrap();
    s.env.run(&["snapshot", "--type", "t", src.to_str().unwrap()]).ok();
    let (code, errors, stderr) = s.restore("latest");
    assert_eq!((code, errors.len()), (0, 0), "{stderr}");
    assert!(util::fingerprint(&s.outside).is_empty());
    util::assert_trees_equal(&src, &s.target.join("src"));
    // Restoring again over the first restore is still fine and still writes nothing outside.
    let (code, _, stderr) = s.restore("latest");
    assert_eq!(code, 0, "{stderr}");
    assert!(util::fingerprint(&s.outside).is_empty());
}

/// Entries the file system cannot represent (a NUL in a symlink target, a name longer than
/// NAME_MAX, a path longer than PATH_MAX) are errors for that entry, not a crash.
#[test]
fn unrepresentable_entries_are_errors_not_crashes() {
    let s = Scene::new();
    let long_name = vec![b'n'; 300];
    let deep: Vec<u8> = std::iter::repeat_n(&b"abcdefghij/"[..], 500).flatten().copied().chain(*b"leaf").collect();
    let nodes = vec![symlink(b"nul-target", b"a\0b"), file(&long_name), file(&deep), file(b"fine")];
    let snap = craft_snapshot(&s.env.repo(), nodes, &[(b"fine", b"ok"), (&long_name, b"x"), (&deep, b"x")]);
    let before = s.surroundings();
    let (code, errors, stderr) = s.restore(&snap);
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let failed: HashSet<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert!(failed.contains("nul-target"), "{errors:#?}");
    assert!(failed.contains(String::from_utf8_lossy(&long_name).as_ref()), "{errors:#?}");
    assert_eq!(std::fs::read(s.target.join("fine")).unwrap(), b"ok");
    assert_eq!(s.surroundings(), before);
}

// ---------------------------------------------------------------- failure paths (issue 10)

/// Temporary files a restore left behind in `dir` (there must be none).
fn restore_temps(dir: &Path) -> Vec<PathBuf> {
    util::walk(dir).into_iter().filter(|p| p.to_string_lossy().contains(".cairn-restore-")).collect()
}

/// A damaged chunk in the snapshot of a large file: restoring it over an existing copy fails and
/// leaves the existing file byte-identical (it was deleted first before), with no temp file left.
#[test]
fn damaged_restore_over_existing_file_leaves_it_untouched() {
    let s = Scene::new();
    let src = s.env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big.bin"), util::prng_bytes(7, 6 << 20)).unwrap();
    s.env.run(&["snapshot", "--type", "t", src.to_str().unwrap()]).ok();
    let old = util::prng_bytes(8, 5 << 20);
    std::fs::create_dir_all(s.target.join("src")).unwrap();
    std::fs::write(s.target.join("src/big.bin"), &old).unwrap();

    let l = util::layout(&s.env.repo());
    let chunks = &l.snapshots[0].files["src/big.bin"];
    assert!(chunks.len() > 2, "want a multi-chunk file");
    let victim = chunks[chunks.len() - 1];
    let pack = l.pack_of(&victim);
    let e = l.packs[&pack].iter().find(|e| e.id == victim).unwrap();
    util::flip_byte(&util::pack_path(&s.env.repo(), &pack), e.offset as u64 + e.stored_len as u64 / 2);

    let (code, errors, stderr) = s.restore("latest");
    assert_ne!(code, 0, "{stderr}");
    assert!(errors.iter().any(|(p, _)| p == "src/big.bin"), "{errors:?}");
    assert!(std::fs::read(s.target.join("src/big.bin")).unwrap() == old, "the existing file was changed");
    assert_eq!(restore_temps(&s.target), Vec::<PathBuf>::new());
}

/// A project with a SQLite database (`rows` rows, WAL mode, mode 0644) and a config whose `db`
/// type captures it; returns (env, config path, database path).
fn sqlite_project(rows: i64) -> (Env, PathBuf, PathBuf) {
    let env = Env::new();
    let app = env.path().join("app");
    let db = app.join("data/app.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);").unwrap();
    for i in 0..rows {
        c.execute("INSERT INTO t(v) VALUES (?1)", [format!("row {i}")]).unwrap();
    }
    drop(c);
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let cfg = util::write_config(
        &app,
        serde_json::json!({
            "name": "obd", "repository": "backups/repo", "password_file": "cairn-password",
            "types": { "db": { "sqlite": "data/app.db" } }
        }),
    );
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    (env, cfg, db)
}

fn rows(db: &Path) -> (i64, String) {
    let c = rusqlite::Connection::open(db).unwrap();
    let n: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    let check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    (n, check)
}

/// A `-wal` left in the target by the live application (with more rows) is not replayed into
/// the restored database: it is removed, and the restore says so.
#[test]
fn stale_sqlite_wal_beside_restored_db_is_removed() {
    let (env, cfg, _) = sqlite_project(10);
    let target = env.path().join("target");
    env.run_cfg(&cfg, &["restore", "latest", "--target", target.to_str().unwrap()]).ok();
    let db = target.join("app.db");
    assert_eq!(rows(&db), (10, "ok".to_string()));
    // The application goes on: 100 more rows, still in its -wal when the machine dies.
    let wal = target.join("app.db-wal");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;").unwrap();
    for i in 0..100 {
        c.execute("INSERT INTO t(v) VALUES (?1)", [format!("later {i}")]).unwrap();
    }
    let stale = std::fs::read(&wal).unwrap();
    drop(c);
    std::fs::write(&wal, &stale).unwrap();
    assert_eq!(rows(&db).0, 110);
    std::fs::write(&wal, &stale).unwrap();

    let r = env.run_cfg(&cfg, &["restore", "latest", "--target", target.to_str().unwrap()]).ok();
    assert!(!wal.exists());
    assert_eq!(rows(&db), (10, "ok".to_string()));
    assert!(r.stdout.contains("removed stale SQLite sidecar app.db-wal"), "{}", r.stdout);
    // The warning goes to a pipe here, not a terminal: plain text, no colour escape codes.
    assert!(r.stderr.contains("WARN") && r.stderr.contains("app.db-wal"), "{}", r.stderr);
    assert!(!r.stderr.contains('\x1b'), "escape codes in piped stderr: {:?}", r.stderr);
    let v = env.run_cfg(&cfg, &["--json", "restore", "latest", "--target", target.to_str().unwrap()]).ok().json();
    assert_eq!(v["report"]["sidecars_removed"], serde_json::json!([]));
}

/// A 0644 database comes back 0644 (a SQLite capture recorded 0600, its temp copy's mode).
#[test]
fn sqlite_database_mode_survives_restore() {
    use std::os::unix::fs::PermissionsExt;
    let (env, cfg, _) = sqlite_project(3);
    let target = env.path().join("target");
    env.run_cfg(&cfg, &["restore", "latest", "--target", target.to_str().unwrap()]).ok();
    let mode = std::fs::metadata(target.join("app.db")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644, "{mode:o}");
}

/// `--include` that matches nothing is an error naming the pattern, not "restored 0 files".
#[test]
fn include_matching_nothing_fails() {
    let s = Scene::new();
    let src = s.env.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    s.env.run(&["snapshot", "--type", "t", src.to_str().unwrap()]).ok();
    let t = s.target.to_str().unwrap();
    let r = s.env.run(&["restore", "latest", "--target", t, "--include", "nosuch/*"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("nosuch/*") && r.stderr.contains("matches nothing"), "{}", r.stderr);
    assert!(util::walk(&s.target).is_empty());
    s.env.run(&["restore", "latest", "--target", t, "--include", "src/a.txt"]).ok();
    assert_eq!(std::fs::read(s.target.join("src/a.txt")).unwrap(), b"a");
}
