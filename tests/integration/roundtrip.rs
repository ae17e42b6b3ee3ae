//! snapshot -> restore round trips on generated trees (proptest), plus dedup, SQLite page
//! chunking, unchanged-file detection, `--stdin`, `ls --json` and snapshot selection.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use filetime::FileTime;
use proptest::prelude::*;
use serde_json::Value;

use crate::util::{self, Env};

// ---------------------------------------------------------------- generated trees

#[derive(Clone, Debug)]
enum Content {
    Random(u64),
    Text,
    Zeros,
}

#[derive(Clone, Debug)]
enum Entry {
    File { len: usize, content: Content, mode: u32, mtime: (i64, u32) },
    Dir { mode: u32, mtime: (i64, u32), children: BTreeMap<Vec<u8>, Entry> },
    Symlink { target: Vec<u8>, mtime: (i64, u32) },
}

fn file_bytes(len: usize, content: &Content) -> Vec<u8> {
    match content {
        Content::Random(seed) => util::prng_bytes(*seed, len),
        Content::Text => b"the quick brown fox jumps over the lazy dog\n".iter().copied().cycle().take(len).collect(),
        Content::Zeros => vec![0; len],
    }
}

/// Names a Unix file system accepts but tools often get wrong.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-z]{1,8}".prop_map(String::into_bytes),
        1 => Just(b"with space".to_vec()),
        1 => Just(b" leading and trailing space ".to_vec()),
        1 => Just(b"new\nline".to_vec()),
        1 => Just(b"-leading-dash".to_vec()),
        1 => Just(b"--".to_vec()),
        1 => Just(b".hidden".to_vec()),
        1 => Just(b"...".to_vec()),
        1 => Just(b"tab\tand\\backslash".to_vec()),
        1 => Just(b"*glob?[x]{a,b}".to_vec()),
        1 => Just("ünïcödé".as_bytes().to_vec()),
        1 => Just("日本語.txt".as_bytes().to_vec()),
        1 => Just("🦀 crab".as_bytes().to_vec()),
        1 => Just(b"\xff\xfe not utf-8 \x80".to_vec()),
        1 => Just(vec![b'L'; 255]),
        // Arbitrary bytes other than '/' and NUL.
        2 => prop::collection::vec(1u8..=255, 1..24).prop_map(|v| {
            let v: Vec<u8> = v.into_iter().map(|b| if b == b'/' { b'_' } else { b }).collect();
            if v == b"." || v == b".." { b"dot".to_vec() } else { v }
        }),
    ]
}

fn mtime() -> impl Strategy<Value = (i64, u32)> {
    // Before 1970 through 2128, with nanoseconds.
    (-1_000_000_000i64..5_000_000_000, 0u32..1_000_000_000)
}

fn file_entry() -> impl Strategy<Value = Entry> {
    let len = prop_oneof![2 => Just(0usize), 3 => 1usize..200, 3 => 200usize..20_000, 1 => 20_000usize..300_000];
    let content =
        prop_oneof![3 => any::<u64>().prop_map(Content::Random), 1 => Just(Content::Text), 1 => Just(Content::Zeros)];
    let mode =
        prop_oneof![Just(0o600u32), Just(0o755), Just(0o640), Just(0o644), Just(0o700), Just(0o4755), Just(0o1777)];
    (len, content, mode, mtime()).prop_map(|(len, content, mode, mtime)| Entry::File { len, content, mode, mtime })
}

fn symlink_entry() -> impl Strategy<Value = Entry> {
    let target = prop_oneof![
        Just(b"nowhere".to_vec()),
        Just(b"../up/and/away".to_vec()),
        Just(b"/nonexistent/absolute/target".to_vec()),
        Just(b".".to_vec()),
        Just("cible ünïcödé".as_bytes().to_vec()),
        Just(b"bad \xff utf-8".to_vec()),
        Just(vec![b'x'; 1000]),
        name(),
    ];
    (target, mtime()).prop_map(|(target, mtime)| Entry::Symlink { target, mtime })
}

fn dir_mode() -> impl Strategy<Value = u32> {
    // Owner-writable: the test must be able to build and delete the tree without root.
    prop_oneof![Just(0o755u32), Just(0o700), Just(0o750), Just(0o777), Just(0o1777)]
}

fn entry() -> impl Strategy<Value = Entry> {
    let leaf = prop_oneof![3 => file_entry(), 1 => symlink_entry()];
    leaf.prop_recursive(3, 32, 5, |inner| {
        (dir_mode(), mtime(), prop::collection::btree_map(name(), inner, 0..5))
            .prop_map(|(mode, mtime, children)| Entry::Dir { mode, mtime, children })
    })
}

#[derive(Debug)]
struct Tree {
    root_name: Vec<u8>,
    root: Entry,
    big: bool,
}

fn tree() -> impl Strategy<Value = Tree> {
    (name(), dir_mode(), mtime(), prop::collection::btree_map(name(), entry(), 2..8), prop::bool::weighted(0.2))
        .prop_map(|(root_name, mode, mtime, children, big)| Tree {
            root_name,
            root: Entry::Dir { mode, mtime, children },
            big,
        })
}

fn ft((s, ns): (i64, u32)) -> FileTime {
    FileTime::from_unix_time(s, ns)
}

#[derive(Default, Debug, PartialEq)]
struct Counts {
    files: u64,
    dirs: u64,
    symlinks: u64,
    bytes: u64,
}

fn materialize(path: &Path, e: &Entry, counts: &mut Counts) {
    match e {
        Entry::File { len, content, mode, mtime } => {
            std::fs::write(path, file_bytes(*len, content)).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).unwrap();
            filetime::set_file_times(path, ft(*mtime), ft(*mtime)).unwrap();
            counts.files += 1;
            counts.bytes += *len as u64;
        }
        Entry::Symlink { target, mtime } => {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), path).unwrap();
            filetime::set_symlink_file_times(path, ft(*mtime), ft(*mtime)).unwrap();
            counts.symlinks += 1;
        }
        Entry::Dir { mode, mtime, children } => {
            std::fs::create_dir(path).unwrap();
            for (n, c) in children {
                materialize(&path.join(OsStr::from_bytes(n)), c, counts);
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).unwrap();
            filetime::set_file_times(path, ft(*mtime), ft(*mtime)).unwrap();
            counts.dirs += 1;
        }
    }
}

/// Builds the tree under `parent`, returns the root's path and what it holds.
fn build(parent: &Path, t: &Tree) -> (std::path::PathBuf, Counts) {
    let mut root = t.root.clone();
    if t.big {
        if let Entry::Dir { children, .. } = &mut root {
            // Larger than one 1 MiB pack.
            children.insert(
                b"big file.bin".to_vec(),
                Entry::File { len: 5 << 19, content: Content::Random(99), mode: 0o644, mtime: (1_600_000_000, 5) },
            );
        }
    }
    std::fs::create_dir_all(parent).unwrap();
    let path = parent.join(OsStr::from_bytes(&t.root_name));
    let mut counts = Counts::default();
    materialize(&path, &root, &mut counts);
    (path, counts)
}

fn stats(v: &Value) -> &Value {
    &v["stats"]
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// snapshot -> restore -> compare, for one generated tree.
fn check_roundtrip(t: &Tree, encrypted: bool) {
    let env = Env::new();
    let mut init = vec!["init", "--pack-size-mib", "1"];
    if !encrypted {
        init.extend(["--encryption", "none"]);
    }
    env.run(&init).ok();
    let (src, counts) = build(&env.path().join("data"), t);

    let mut c = env.cmd();
    c.args(["--json", "snapshot", "--type", "files"]).arg(&src);
    let snap = env.run_cmd(c).ok().json();
    let s = stats(&snap);
    assert_eq!(
        Counts {
            files: u(&s["files"]),
            dirs: u(&s["dirs"]),
            symlinks: u(&s["symlinks"]),
            bytes: u(&s["logical_bytes"])
        },
        counts,
        "snapshot stats"
    );
    assert_eq!(u(&s["errors"]), 0);

    let ls = env.run(&["--json", "ls", "latest"]).ok().json();
    assert_eq!(ls["nodes"].as_array().unwrap().len() as u64, counts.files + counts.dirs + counts.symlinks);

    let out = env.path().join("out");
    let r = env.run(&["--json", "restore", "latest", "--target", out.to_str().unwrap()]).ok().json();
    assert_eq!(u(&r["report"]["files"]), counts.files);
    assert_eq!(u(&r["report"]["dirs"]), counts.dirs);
    assert_eq!(u(&r["report"]["symlinks"]), counts.symlinks);
    assert_eq!(u(&r["report"]["bytes"]), counts.bytes);
    util::assert_trees_equal_strict(&src, &out.join(OsStr::from_bytes(&t.root_name)));
    // Nothing else appeared in the target.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    if t.big {
        assert!(util::repo_files(&env.repo(), "packs").len() >= 2, "a 2.5 MiB file must span 1 MiB packs");
    }
}

fn proptest_config() -> ProptestConfig {
    ProptestConfig { cases: 12, max_shrink_iters: 64, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn generated_trees_roundtrip_encrypted(t in tree()) {
        check_roundtrip(&t, true);
    }

    #[test]
    fn generated_trees_roundtrip_unencrypted(t in tree()) {
        check_roundtrip(&t, false);
    }
}

// ---------------------------------------------------------------- fixed trees

/// The corner cases the generator only sometimes hits, all in one tree, both modes.
#[test]
fn odd_tree_roundtrip_both_modes() {
    let mut children = BTreeMap::new();
    let file = |len, mode, s| Entry::File { len, content: Content::Random(len as u64), mode, mtime: (s, 123_456_789) };
    children.insert(b"empty".to_vec(), file(0, 0o600, 1_000_000_000));
    children.insert(b"-rf".to_vec(), file(10, 0o755, 1_100_000_000));
    children.insert(b"new\nline and space".to_vec(), file(100, 0o640, 1_200_000_000));
    children.insert(b"\xff\xfe\xfd".to_vec(), file(1000, 0o600, -5));
    children.insert("ünïcödé 日本語 🦀".as_bytes().to_vec(), file(5000, 0o644, 0));
    children
        .insert(b"dangling".to_vec(), Entry::Symlink { target: b"does/not/exist".to_vec(), mtime: (1_300_000_000, 1) });
    children
        .insert(b"abs-link".to_vec(), Entry::Symlink { target: b"/etc/passwd".to_vec(), mtime: (1_300_000_000, 2) });
    children.insert(b"link-to-file".to_vec(), Entry::Symlink { target: b"empty".to_vec(), mtime: (1_300_000_000, 3) });
    children.insert(
        b"empty dir".to_vec(),
        Entry::Dir { mode: 0o700, mtime: (1_400_000_000, 4), children: BTreeMap::new() },
    );
    let mut deep = Entry::Dir { mode: 0o750, mtime: (1_500_000_000, 0), children: BTreeMap::new() };
    for i in 0..6 {
        let mut c = BTreeMap::new();
        c.insert(format!("f{i}").into_bytes(), file(i * 7, 0o640, 1_500_000_000 + i as i64));
        c.insert(b"d".to_vec(), deep);
        deep = Entry::Dir { mode: 0o755, mtime: (1_500_000_100 + i as i64, 0), children: c };
    }
    children.insert(b"deep".to_vec(), deep);
    let t = Tree {
        root_name: b"-root dir".to_vec(),
        root: Entry::Dir { mode: 0o755, mtime: (1_000, 0), children },
        big: true,
    };
    check_roundtrip(&t, true);
    check_roundtrip(&t, false);
}

/// A source path that starts with a dash is passed after `--` and stored under its name.
#[test]
fn dash_path_argument() {
    let env = Env::new();
    env.init_plain();
    std::fs::create_dir(env.path().join("-dir")).unwrap();
    std::fs::write(env.path().join("-dir/-f"), b"dash").unwrap();
    env.run(&["snapshot", "--type", "t", "--", "-dir"]).ok();
    let raw = env.run_raw(&["cat", "--", "latest", "-dir/-f"]);
    assert_eq!(raw.code, 0, "{}", raw.stderr);
    assert_eq!(raw.stdout, b"dash");
}

// ---------------------------------------------------------------- dedup

fn snapshot_json(env: &Env, ty: &str, path: &Path, extra: &[&str]) -> Value {
    let mut c = env.cmd();
    c.args(["--json", "snapshot", "--type", ty]).args(extra).arg(path);
    env.run_cmd(c).ok().json()
}

/// A 1 KiB change in the middle of a big file adds a small fraction of the first snapshot.
fn dedup_case(encrypted: bool, ty: &str, size: usize) {
    let env = Env::new();
    if encrypted {
        env.init();
    } else {
        env.init_plain();
    }
    let dir = env.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let f = dir.join("big.bin");
    let mut data = util::prng_bytes(7, size);
    std::fs::write(&f, &data).unwrap();
    let first = snapshot_json(&env, ty, &dir, &[]);
    let mid = size / 2;
    data[mid..mid + 1024].copy_from_slice(&util::prng_bytes(8, 1024));
    std::fs::write(&f, &data).unwrap();
    let second = snapshot_json(&env, ty, &dir, &[]);

    let (b1, b2) = (u(&first["stats"]["new_bytes"]), u(&second["stats"]["new_bytes"]));
    let (c1, c2) = (u(&first["stats"]["new_chunks"]), u(&second["stats"]["new_chunks"]));
    assert!(b1 as usize >= size, "first snapshot stores the whole file: {b1}");
    assert!(b2 * 100 < b1 * 15, "{ty}: second snapshot added {b2} bytes, first {b1}: not < 15%");
    assert!(
        c2 <= 4,
        "{ty}: second snapshot added {c2} chunks (first {c1}): the change touches 1-2 content chunks + the tree"
    );
    assert_eq!(u(&second["stats"]["unchanged_files"]), 0);
    assert_eq!(second["parent"], first["id"]);

    let out = env.path().join("out");
    env.run(&["restore", "latest", "--target", out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(out.join("data/big.bin")).unwrap(), data);
    let first_id = first["id"].as_str().unwrap();
    let out1 = env.path().join("out1");
    env.run(&["restore", first_id, "--target", out1.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(out1.join("data/big.bin")).unwrap(), util::prng_bytes(7, size));
}

#[test]
fn dedup_default_chunker_unencrypted_24mib() {
    // Default chunker: chunks up to 1 MiB, so 24 MiB keeps even three max-size chunks under 15%.
    dedup_case(false, "files", 24 << 20);
}

#[test]
fn dedup_db_chunker_encrypted_4mib() {
    dedup_case(true, "db", 4 << 20);
}

// ---------------------------------------------------------------- SQLite

#[test]
fn sqlite_database_is_chunked_at_page_size() {
    let env = Env::new();
    env.init();
    let dir = env.path().join("app");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("app.sqlite");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA page_size=4096; PRAGMA journal_mode=DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB);",
        )
        .unwrap();
        let tx = c.unchecked_transaction().unwrap();
        for i in 0..3000u64 {
            tx.execute("INSERT INTO t VALUES(?1, ?2)", rusqlite::params![i as i64, util::prng_bytes(i, 300)]).unwrap();
        }
        tx.commit().unwrap();
    }
    let size = std::fs::metadata(&db).unwrap().len();
    let pages = size / 4096;
    assert!(pages > 200, "database has {pages} pages");
    let first = snapshot_json(&env, "db", &dir, &[]);
    assert!(
        u(&first["stats"]["new_chunks"]) >= pages,
        "one chunk per page: {} chunks for {pages} pages",
        first["stats"]["new_chunks"]
    );

    let ls = env.run(&["--json", "ls", "latest", "app/app.sqlite"]).ok().json();
    let node = &ls["nodes"][0];
    assert_eq!(u(&node["size"]), size);
    assert_eq!(u(&node["chunks"]), pages, "file cut exactly at its 4096-byte pages");

    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute("UPDATE t SET body = ?1 WHERE id = 1500", [util::prng_bytes(1_000_000, 300)]).unwrap();
    }
    assert_eq!(std::fs::metadata(&db).unwrap().len(), size);
    let second = snapshot_json(&env, "db", &dir, &[]);
    let c2 = u(&second["stats"]["new_chunks"]);
    // The row's leaf page, page 1 (change counter), maybe one interior page, and the tree.
    assert!(c2 <= 5, "one changed row added {c2} chunks");
    assert!(u(&second["stats"]["new_raw_bytes"]) <= 5 * 4096 + 64 * 1024, "{}", second["stats"]);

    let out = env.path().join("out");
    env.run(&["restore", "latest", "--target", out.to_str().unwrap()]).ok();
    // Stored as an online-backup copy: the same pages, except that SQLite stamps the copy's
    // header with its own change counter (bytes 24..28) and version-valid-for number (92..96).
    let header_stamps = |mut b: Vec<u8>| {
        b[24..28].fill(0);
        b[92..96].fill(0);
        b
    };
    assert_eq!(
        header_stamps(std::fs::read(out.join("app/app.sqlite")).unwrap()),
        header_stamps(std::fs::read(&db).unwrap())
    );
    let c = rusqlite::Connection::open(out.join("app/app.sqlite")).unwrap();
    let check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let body: Vec<u8> = c.query_row("SELECT body FROM t WHERE id = 1500", [], |r| r.get(0)).unwrap();
    assert_eq!(body, util::prng_bytes(1_000_000, 300));
}

// ---------------------------------------------------------------- unchanged files

#[test]
fn unchanged_files_are_not_read_again_unless_forced() {
    let env = Env::new();
    env.init();
    let dir = env.path().join("tree");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for i in 0..20u64 {
        std::fs::write(dir.join(format!("f{i}")), util::prng_bytes(i, 1000 * i as usize)).unwrap();
    }
    std::fs::write(dir.join("sub/empty"), b"").unwrap();
    std::os::unix::fs::symlink("f1", dir.join("link")).unwrap();

    let first = snapshot_json(&env, "cfg", &dir, &[]);
    let files = u(&first["stats"]["files"]);
    assert_eq!(files, 21);
    assert_eq!(u(&first["stats"]["unchanged_files"]), 0);

    let second = snapshot_json(&env, "cfg", &dir, &[]);
    assert_eq!(u(&second["stats"]["unchanged_files"]), files);
    assert_eq!(u(&second["stats"]["files"]), files);
    assert_eq!(second["parent"], first["id"]);
    // Only the tree can be new (directory atimes aside, nothing changed).
    assert!(u(&second["stats"]["new_chunks"]) <= 1);

    let forced = snapshot_json(&env, "cfg", &dir, &["--force-read"]);
    assert_eq!(u(&forced["stats"]["unchanged_files"]), 0);
    assert_eq!(u(&forced["stats"]["files"]), files);
    assert!(u(&forced["stats"]["new_chunks"]) <= 1, "re-read content dedups: {}", forced["stats"]);

    // A touched file is read again; the others are not.
    std::fs::write(dir.join("f3"), b"changed").unwrap();
    let fourth = snapshot_json(&env, "cfg", &dir, &[]);
    assert_eq!(u(&fourth["stats"]["unchanged_files"]), files - 1);

    // Another type does not use this type's snapshot as parent.
    let other = snapshot_json(&env, "other", &dir, &[]);
    assert_eq!(u(&other["stats"]["unchanged_files"]), 0);
    assert!(other["parent"].is_null());

    let out = env.path().join("out");
    env.run(&["restore", "cfg:latest", "--target", out.to_str().unwrap()]).ok();
    util::assert_trees_equal(&dir, &out.join("tree"));
}

// ---------------------------------------------------------------- --stdin and cat

#[test]
fn stdin_roundtrip_via_cat() {
    for encrypted in [true, false] {
        let env = Env::new();
        if encrypted {
            env.init();
        } else {
            env.init_plain();
        }
        let data = util::prng_bytes(42, (3 << 20) + 17);
        let snap = env.run_stdin(&["--json", "snapshot", "--type", "db", "--stdin", "dump.sql"], &data).ok().json();
        assert_eq!(u(&snap["stats"]["files"]), 1);
        assert_eq!(u(&snap["stats"]["logical_bytes"]), data.len() as u64);
        assert_eq!(snap["paths"][0], "<stdin>/dump.sql");
        let raw = env.run_raw(&["cat", "db:latest", "dump.sql"]);
        assert_eq!(raw.code, 0, "{}", raw.stderr);
        assert!(raw.stdout == data, "cat returned {} bytes, expected {}", raw.stdout.len(), data.len());

        // Empty input is a valid, empty file.
        env.run_stdin(&["snapshot", "--type", "empty", "--stdin", "nothing"], b"").ok();
        let raw = env.run_raw(&["cat", "empty:latest", "nothing"]);
        assert_eq!((raw.code, raw.stdout.len()), (0, 0), "{}", raw.stderr);

        let ls = env.run(&["--json", "ls", "db:latest"]).ok().json();
        let nodes = ls["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0]["path"], "dump.sql");
        assert_eq!(nodes[0]["kind"], "file");
        assert_eq!(nodes[0]["mode"], 0o600);
        assert_eq!(u(&nodes[0]["size"]), data.len() as u64);

        let out = env.path().join("out");
        env.run(&["restore", "db:latest", "--target", out.to_str().unwrap()]).ok();
        assert!(std::fs::read(out.join("dump.sql")).unwrap() == data);

        // cat of a missing path or of a directory fails cleanly.
        let r = env.run(&["cat", "db:latest", "nope"]).code(1);
        assert!(r.stderr.contains("nope: not in the snapshot"), "{}", r.stderr);
    }
}

// ---------------------------------------------------------------- ls --json

#[test]
fn ls_json_describes_every_node() {
    let env = Env::new();
    env.init();
    let dir = env.path().join("root");
    std::fs::create_dir_all(dir.join("sub/empty")).unwrap();
    std::fs::write(dir.join("a.txt"), b"hello").unwrap();
    std::fs::write(dir.join("sub/b.bin"), util::prng_bytes(1, 300_000)).unwrap();
    std::os::unix::fs::symlink("../a.txt", dir.join("sub/link")).unwrap();
    std::fs::set_permissions(dir.join("a.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(dir.join("sub/empty"), std::fs::Permissions::from_mode(0o700)).unwrap();
    filetime::set_file_times(dir.join("a.txt"), ft((1_234_567_890, 42)), ft((1_234_567_890, 42))).unwrap();
    let snap = snapshot_json(&env, "t", &dir, &[]);

    let ls = env.run(&["--json", "ls", &snap["id"].as_str().unwrap()[..10]]).ok().json();
    assert_eq!(ls["snapshot"], snap["id"]);
    let nodes = ls["nodes"].as_array().unwrap();
    let paths: Vec<&str> = nodes.iter().map(|n| n["path"].as_str().unwrap()).collect();
    // Depth-first, children sorted by name bytes.
    assert_eq!(paths, ["root", "root/a.txt", "root/sub", "root/sub/b.bin", "root/sub/empty", "root/sub/link"]);
    let by: BTreeMap<&str, &Value> = nodes.iter().map(|n| (n["path"].as_str().unwrap(), n)).collect();
    let a = by["root/a.txt"];
    assert_eq!((a["kind"].as_str(), u(&a["mode"]), u(&a["size"]), u(&a["chunks"])), (Some("file"), 0o640, 5, 1));
    assert_eq!(a["mtime_ns"].as_i64(), Some(1_234_567_890_000_000_042));
    assert!(a["target"].is_null());
    let b = by["root/sub/b.bin"];
    assert_eq!(u(&b["size"]), 300_000);
    assert!(u(&b["chunks"]) >= 1);
    let e = by["root/sub/empty"];
    assert_eq!((e["kind"].as_str(), u(&e["mode"]), u(&e["size"]), u(&e["chunks"])), (Some("dir"), 0o700, 0, 0));
    let l = by["root/sub/link"];
    assert_eq!((l["kind"].as_str(), l["target"].as_str()), (Some("symlink"), Some("../a.txt")));
    let uid = unsafe { libc::getuid() } as u64;
    assert!(nodes.iter().all(|n| u(&n["uid"]) == uid));

    // A path filter lists that node and what is under it, not siblings sharing a prefix.
    std::fs::write(dir.join("sub2"), b"x").unwrap();
    snapshot_json(&env, "t", &dir, &[]);
    let ls = env.run(&["--json", "ls", "latest", "root/sub"]).ok().json();
    let paths: Vec<&str> = ls["nodes"].as_array().unwrap().iter().map(|n| n["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["root/sub", "root/sub/b.bin", "root/sub/empty", "root/sub/link"]);

    // Human output names every path and the link target.
    let text = env.run(&["ls", "latest"]).ok().stdout;
    assert!(text.contains("root/sub/link -> ../a.txt"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("-rw-r----- ") && l.ends_with(" root/a.txt")), "{text}");
}

// ---------------------------------------------------------------- snapshot selection

#[test]
fn snapshots_json_latest_type_latest_and_prefixes() {
    let env = Env::new();
    env.init_plain();
    let mut ids: Vec<(String, String)> = Vec::new(); // (id, type), oldest first
    for (i, ty) in ["db", "logs", "db", "config"].iter().enumerate() {
        let v = env
            .run_stdin(
                &["--json", "snapshot", "--type", ty, "--label", &format!("n={i}"), "--stdin", "x"],
                format!("{i}").as_bytes(),
            )
            .ok()
            .json();
        ids.push((v["id"].as_str().unwrap().to_string(), ty.to_string()));
    }

    let list = env.run(&["--json", "snapshots"]).ok().json();
    let list = list.as_array().unwrap();
    let got: Vec<(String, String)> =
        list.iter().map(|s| (s["id"].as_str().unwrap().to_string(), s["type"].as_str().unwrap().to_string())).collect();
    assert_eq!(got, ids, "oldest first");
    for (i, s) in list.iter().enumerate() {
        assert_eq!(s["short_id"].as_str().unwrap(), &ids[i].0[..8]);
        assert_eq!(s["labels"]["n"], i.to_string());
        assert_eq!(s["kind"], "daily");
        assert!(s["time"].as_str().unwrap().len() >= 20);
        assert!(s["program"].as_str().unwrap().starts_with("cairn "));
    }
    let dbs = env.run(&["--json", "snapshots", "--type", "db"]).ok().json();
    let dbs: Vec<&str> = dbs.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(dbs, [ids[0].0.as_str(), ids[2].0.as_str()]);
    let none = env.run(&["--json", "snapshots", "--type", "nope"]).ok().json();
    assert_eq!(none.as_array().unwrap().len(), 0);

    let cat = |spec: &str| {
        let r = env.run_raw(&["cat", spec, "x"]);
        (r.code, String::from_utf8_lossy(&r.stdout).into_owned(), r.stderr)
    };
    assert_eq!(cat("latest").1, "3");
    assert_eq!(cat("db:latest").1, "2");
    assert_eq!(cat("logs:latest").1, "1");
    assert_eq!(cat("config:latest").1, "3");
    for (i, (id, _)) in ids.iter().enumerate() {
        assert_eq!(cat(id).1, i.to_string(), "full id");
        assert_eq!(cat(&id[..8]).1, i.to_string(), "8-char prefix");
        assert_eq!(cat(&id[..12].to_uppercase()).1, i.to_string(), "upper-case prefix");
    }
    let (code, _, err) = cat("nope:latest");
    assert_eq!(code, 1);
    assert!(err.contains("no snapshot of type \"nope\""), "{err}");
    let (code, _, err) = cat("not-hex");
    assert_eq!(code, 1);
    assert!(err.contains("is not a snapshot id"), "{err}");
    let unused =
        (0..256).map(|b| format!("{b:02x}")).find(|p| ids.iter().all(|(id, _)| !id.starts_with(p.as_str()))).unwrap();
    let (code, _, err) = cat(&unused);
    assert_eq!(code, 1);
    assert!(err.contains("no snapshot with id starting"), "{err}");

    // Keep adding snapshots until two ids share a first hex digit (at most 17 by pigeonhole).
    let shared = loop {
        let firsts: Vec<char> = ids.iter().map(|(id, _)| id.chars().next().unwrap()).collect();
        if let Some(c) = firsts.iter().find(|c| firsts.iter().filter(|d| d == c).count() > 1) {
            break *c;
        }
        let n = ids.len();
        let v = env
            .run_stdin(&["--json", "snapshot", "--type", "more", "--stdin", "x"], format!("{n}").as_bytes())
            .ok()
            .json();
        ids.push((v["id"].as_str().unwrap().to_string(), "more".into()));
    };
    let (code, _, err) = cat(&shared.to_string());
    assert_eq!(code, 1);
    assert!(err.contains("is ambiguous"), "{err}");

    // An empty repository has no `latest`.
    let empty = Env::new();
    empty.init_plain();
    let r = empty.run(&["ls", "latest"]).code(1);
    assert!(r.stderr.contains("the repository has no snapshots"), "{}", r.stderr);
    assert_eq!(empty.run(&["--json", "snapshots"]).ok().json(), serde_json::json!([]));
}

// ---------------------------------------------------------------- modes without owner access

/// Files and directories whose recorded mode denies their owner read access (0o000, 0o200,
/// d-wx--x--x) restore with that mode and their mtime for an unprivileged user. The snapshot is
/// crafted (an unprivileged snapshot could not read such files), the restore runs as `nobody`
/// when the tests run as root.
#[test]
fn restore_modes_without_owner_read_access() {
    use cairn::format::manifest::{Node, NodeKind};
    let env = Env::new();
    env.init();
    let mk = |path: &str, kind: NodeKind, mode: u32, i: i64| Node {
        path: path.as_bytes().to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime_ns: 1_600_000_000_123_456_789 + i * 1_000_000_007,
        ctime_ns: 0,
        inode: 0,
        size: 0,
        target: Vec::new(),
        chunks: Vec::new(),
    };
    let nodes = vec![
        mk("root", NodeKind::Dir, 0o040755, 0),
        mk("root/d000", NodeKind::Dir, 0o040000, 1),
        mk("root/d000/inner", NodeKind::File, 0o100600, 2),
        mk("root/d311", NodeKind::Dir, 0o040311, 3),
        mk("root/d311/inner", NodeKind::File, 0o100000, 4),
        mk("root/d500", NodeKind::Dir, 0o040500, 5),
        mk("root/d500/inner", NodeKind::File, 0o100444, 6),
        mk("root/f000", NodeKind::File, 0o100000, 7),
        mk("root/f000-empty", NodeKind::File, 0o100000, 8),
        mk("root/w200", NodeKind::File, 0o100200, 9),
        mk("root/x100", NodeKind::File, 0o100100, 10),
    ];
    let contents: Vec<(&[u8], &[u8])> = nodes
        .iter()
        .filter(|n| n.kind == NodeKind::File && !n.path.ends_with(b"-empty"))
        .map(|n| (n.path.as_slice(), n.path.as_slice()))
        .collect();
    let snap = crate::restore_safety::craft_snapshot(&env.repo(), nodes.clone(), &contents);
    util::give_to_unprivileged(env.path());
    let out = env.path().join("out");
    let r = util::run_unprivileged(&env, &["--json", "restore", &snap, "--target", out.to_str().unwrap()]);
    let mut problems = Vec::new();
    for n in &nodes {
        let p = out.join(OsStr::from_bytes(&n.path));
        match std::fs::symlink_metadata(&p) {
            Err(e) => problems.push(format!("{}: {e}", n.path_str())),
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                if m.mode() != n.mode {
                    problems.push(format!("{}: mode {:o}, snapshot {:o}", n.path_str(), m.mode(), n.mode));
                }
                let t = m.mtime() * 1_000_000_000 + m.mtime_nsec();
                if t != n.mtime_ns {
                    problems.push(format!("{}: mtime {t}, snapshot {}", n.path_str(), n.mtime_ns));
                }
            }
        }
    }
    // Make everything readable again to check content and let the temp dir go.
    for n in nodes.iter().rev() {
        let p = out.join(OsStr::from_bytes(&n.path));
        if p.exists() || std::fs::symlink_metadata(&p).is_ok() {
            let _ = std::fs::set_permissions(
                &p,
                std::fs::Permissions::from_mode(if n.kind == NodeKind::Dir { 0o755 } else { 0o644 }),
            );
        }
    }
    for n in nodes.iter().rev() {
        let p = out.join(OsStr::from_bytes(&n.path));
        if n.kind == NodeKind::Dir {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
        }
    }
    for (path, data) in &contents {
        match std::fs::read(out.join(OsStr::from_bytes(path))) {
            Ok(got) if got == *data => {}
            other => problems.push(format!("{}: content {other:?}", String::from_utf8_lossy(path))),
        }
    }
    assert!(problems.is_empty() && r.code == 0, "exit {}\n{}\nstderr: {}", r.code, problems.join("\n"), r.stderr);
}
