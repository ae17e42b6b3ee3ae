//! Known damage is never built on, and a damaged cache row is never trusted (issue 10, items 7
//! and 9): a pack verify found damaged is marked in the cache, so the next backup stores its
//! chunks again; `repair packs` salvages what still checks out and names what was lost; a chunk
//! read that fails is rechecked against the pack trailer and the index files, so a flipped bit
//! in the local SQLite cache neither fails a restore nor hides in verify.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cairn::id::ChunkId;
use serde_json::Value;

use crate::util::{assert_no_panic, assert_trees_equal, flip_byte, layout, pack_path, prng_bytes, Env, Run};

struct Fx {
    env: Env,
    src: PathBuf,
}

impl Fx {
    /// A repository of `pack_mib` MiB packs and `src/` holding `files` (name, seed, size).
    fn new(pack_mib: &str, files: &[(&str, u64, usize)]) -> Fx {
        let env = Env::new();
        env.run(&["init", "--pack-size-mib", pack_mib]).ok();
        let src = env.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        for (name, seed, n) in files {
            std::fs::write(src.join(name), prng_bytes(*seed, *n)).unwrap();
        }
        Fx { env, src }
    }

    fn run(&self, args: &[&str]) -> Run {
        let r = self.env.run(args);
        assert_no_panic(&r);
        r
    }

    /// Takes a snapshot of `src` (with `extra` flags); returns its JSON.
    fn snapshot(&self, extra: &[&str]) -> Value {
        let mut args = vec!["--json", "snapshot", "--type", "files"];
        args.extend_from_slice(extra);
        args.push("src");
        self.run(&args).ok().json()
    }

    /// Restores `id` into a fresh directory and checks it equals `src/`.
    fn restore_ok(&self, id: &str, name: &str) {
        let t = self.env.path().join("restores").join(name);
        self.run(&["restore", id, "--target", t.to_str().unwrap()]).ok();
        assert_trees_equal(&self.src, &t.join("src"));
    }

    fn cache_db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.env.repo().join("cache").join("cache.sqlite")).unwrap()
    }

    fn damaged_marks(&self) -> i64 {
        self.cache_db().query_row("SELECT count(*) FROM damaged_packs", [], |r| r.get(0)).unwrap()
    }
}

/// The chunks of `src/<name>` in the only snapshot so far.
fn chunks_of(repo: &Path, name: &str) -> Vec<ChunkId> {
    let l = layout(repo);
    l.snap("files").files[&format!("src/{name}")].clone()
}

/// Flips one byte in the middle of chunk `c`'s sealed bytes; returns the pack's path.
fn flip_inside(repo: &Path, c: &ChunkId) -> PathBuf {
    let l = layout(repo);
    let pack = l.pack_of(c);
    let e = l.packs[&pack].iter().find(|e| e.id == *c).unwrap();
    let path = pack_path(repo, &pack);
    flip_byte(&path, e.offset as u64 + e.stored_len as u64 / 2);
    path
}

#[test]
fn a_damaged_pack_is_not_deduplicated_against_and_repair_packs_names_what_was_lost() {
    let fx = Fx::new("16", &[("keep.bin", 1, 300_000), ("again.bin", 2, 300_000), ("gone.bin", 3, 300_000)]);
    let repo = fx.env.repo();
    let first = fx.snapshot(&[])["id"].as_str().unwrap().to_string();
    let again = chunks_of(&repo, "again.bin")[0];
    let gone = chunks_of(&repo, "gone.bin")[0];
    let pack = flip_inside(&repo, &again);
    assert_eq!(flip_inside(&repo, &gone), pack, "one pack holds everything");

    let v = fx.run(&["verify", "--read-data"]).code(3);
    for c in [again, gone] {
        assert!(v.stdout.contains(&c.to_hex()), "verify names chunk {c}:\n{}", v.stdout);
    }
    assert!(v.stdout.contains("src/gone.bin") && v.stdout.contains("src/again.bin"), "{}", v.stdout);
    assert_eq!(fx.damaged_marks(), 1, "verify marks the pack in the cache");

    // The user deletes gone.bin; the next backup must store the damaged chunks of the others again.
    std::fs::remove_file(fx.src.join("gone.bin")).unwrap();
    let second = fx.snapshot(&["--force-read"]);
    let new_bytes = second["stats"]["new_bytes"].as_u64().unwrap();
    assert!(new_bytes > 300_000, "the chunks of the damaged pack are stored again: {second}");
    let second = second["id"].as_str().unwrap().to_string();
    fx.restore_ok(&second, "second");

    let r = fx.run(&["--json", "repair", "packs"]).code(3);
    let j = r.json();
    assert_eq!(j["lost_chunks"], serde_json::json!([gone.to_hex()]), "{j}");
    let p = &j["packs"][0];
    assert_eq!(p["pack"].as_str().unwrap(), pack.file_name().unwrap().to_str().unwrap());
    assert!(p["salvaged"].as_u64().unwrap() >= 1, "the first snapshot's tree: {j}");
    assert!(p["stored_elsewhere"].as_u64().unwrap() >= 2, "keep.bin and again.bin were stored again: {j}");
    let affected: BTreeSet<(String, String)> = j["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["snapshot"].as_str().unwrap().to_string(), a["path"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(affected, BTreeSet::from([(first.clone(), "src/gone.bin".to_string())]));
    assert!(!pack.exists(), "the damaged pack is dropped");
    let rel = pack.strip_prefix(&repo).unwrap();
    assert!(
        repo.join("quarantine").join(rel).is_file(),
        "the damaged pack is kept in quarantine/ (a remote may hold its good copy)"
    );
    assert_eq!(fx.damaged_marks(), 0);
    let text = fx.run(&["repair", "packs"]).ok();
    assert!(text.stdout.contains("no pack is marked damaged"), "{}", text.stdout);

    // Afterwards only the first snapshot's gone.bin is broken; the second restores.
    let v = fx.run(&["--json", "verify", "--read-data"]).code(3);
    let j = v.json();
    assert_eq!(j["damaged_packs"], serde_json::json!([]), "{j}");
    let problems: Vec<&str> = j["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(!problems.is_empty());
    for p in &problems {
        assert!(p.contains(&first) && p.contains("src/gone.bin") && !p.contains(&second), "{p}");
    }
    fx.restore_ok(&second, "after-repair");
}

#[test]
fn repair_packs_loses_nothing_when_every_chunk_is_stored_again() {
    let fx = Fx::new("16", &[("a.bin", 4, 200_000), ("b.bin", 5, 200_000)]);
    let repo = fx.env.repo();
    fx.snapshot(&[]);
    flip_inside(&repo, &chunks_of(&repo, "a.bin")[0]);
    fx.run(&["verify", "--read-data"]).code(3);
    // Without --force-read too: an unchanged file whose chunk is in a damaged pack is read again.
    let s = fx.snapshot(&[]);
    assert!(s["stats"]["new_bytes"].as_u64().unwrap() > 0, "{s}");
    let r = fx.run(&["--json", "repair", "packs"]).ok();
    assert_eq!(r.json()["lost_chunks"], serde_json::json!([]));
    // The first snapshot's tree was salvaged and its damaged chunk re-stored: all is whole again.
    fx.run(&["verify", "--read-data"]).ok();
    let first = layout(&repo).snapshots[0].id.clone();
    fx.restore_ok(&first, "first");
}

/// Applies one corruption to the cache file (SQLite), as a random bit flip would.
fn corrupt(db: &rusqlite::Connection, sql: &str, c: &ChunkId) {
    let n = db.execute(sql, [&c.0[..]]).unwrap();
    assert_eq!(n, 1, "{sql}");
}

#[test]
fn a_damaged_cache_row_is_rechecked_and_repaired_not_trusted() {
    let fx = Fx::new("1", &[("one.bin", 6, 2_500_000), ("two.bin", 7, 2_500_000), ("three.bin", 8, 900_000)]);
    let repo = fx.env.repo();
    let id = fx.snapshot(&[])["id"].as_str().unwrap().to_string();
    let l = layout(&repo);
    assert!(l.packs.len() >= 3, "several packs");
    let one = chunks_of(&repo, "one.bin");
    let two = chunks_of(&repo, "two.bin");
    let three = chunks_of(&repo, "three.bin");
    assert!(one.len() >= 4 && two.len() >= 4, "{} and {} chunks", one.len(), two.len());
    let tree = l.snap("files").tree[0];
    let other_pid = "(SELECT pid FROM packs WHERE pid <> chunks.pack LIMIT 1)";
    // One byte of a blob replaced by another value: what a bit flip does to an id.
    let flip = |col: &str, at: usize| {
        format!("CAST(substr({col}, 1, {}) || CASE WHEN substr({col}, {at}, 1) = x'00' THEN x'01' ELSE x'00' END || substr({col}, {}) AS BLOB)", at - 1, at + 1)
    };
    let cases: Vec<(String, ChunkId)> = vec![
        ("UPDATE chunks SET offset = (offset | 16) - (offset & 16) WHERE id = ?1".into(), one[1]),
        ("UPDATE chunks SET stored_len = (stored_len | 1) - (stored_len & 1) WHERE id = ?1".into(), one[2]),
        ("UPDATE chunks SET raw_len = (raw_len | 256) - (raw_len & 256) WHERE id = ?1".into(), two[0]),
        (format!("UPDATE chunks SET pack = {other_pid} WHERE id = ?1"), two[1]),
        ("UPDATE chunks SET pack = 9999 WHERE id = ?1".into(), one[3]),
        (format!("UPDATE chunks SET id = {} WHERE id = ?1", flip("id", 32)), two[2]),
        (
            format!("UPDATE packs SET id = {} WHERE pid = (SELECT pack FROM chunks WHERE id = ?1)", flip("id", 6)),
            two[3],
        ),
        ("UPDATE chunks SET offset = (offset | 4) - (offset & 4) WHERE id = ?1".into(), tree),
        // A flip in a record header can change a value's type: a pack id read back as text.
        ("UPDATE packs SET id = hex(id) WHERE pid = (SELECT pack FROM chunks WHERE id = ?1)".into(), one[0]),
    ];
    for (i, (sql, c)) in cases.iter().enumerate() {
        corrupt(&fx.cache_db(), sql, c);
        fx.restore_ok(&id, &format!("case{i}"));
        assert_eq!(fx.damaged_marks(), 0, "a bad cache row is not pack damage: {sql}");
    }

    // verify compares the cache with the index files, reports the rows and repairs them.
    let db = fx.cache_db();
    corrupt(&db, "UPDATE chunks SET offset = offset + 8 WHERE id = ?1", &one[0]);
    corrupt(&db, "DELETE FROM chunks WHERE id = ?1", &three[0]);
    drop(db);
    let v = fx.run(&["--json", "verify"]).ok().json();
    let m: Vec<&str> = v["cache_mismatches"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert_eq!(m.len(), 2, "{m:?}");
    assert!(m[0].contains(&one[0].to_hex()) || m[1].contains(&one[0].to_hex()), "{m:?}");
    assert!(m.iter().any(|s| s.contains(&three[0].to_hex()) && s.contains("not in the cache")), "{m:?}");
    let t = fx.run(&["verify"]).ok();
    assert!(!t.stdout.contains("CACHE MISMATCH"), "repaired by the first verify:\n{}", t.stdout);
    fx.restore_ok(&id, "after-verify");

    // Real damage in a pack is still damage: the recheck confirms it and marks the pack.
    flip_inside(&repo, &three[0]);
    let t = fx.env.path().join("restores").join("damaged");
    let r = fx.run(&["restore", &id, "--target", t.to_str().unwrap()]).code(1);
    assert!(r.stderr.contains("three.bin") && r.stderr.contains(&three[0].short()), "{}", r.stderr);
    assert_eq!(fx.damaged_marks(), 1, "the restore marked the damaged pack");
    fx.run(&["verify", "--read-data"]).code(3);
}

#[test]
fn a_schema_1_cache_is_migrated_keeping_its_rows() {
    let fx = Fx::new("16", &[("x.bin", 9, 100_000)]);
    let id = fx.snapshot(&[])["id"].as_str().unwrap().to_string();
    let db = fx.cache_db();
    // A schema 1 cache: no damaged_packs table, no chunks.ref column.
    db.execute_batch(
        "DROP TABLE damaged_packs; ALTER TABLE chunks DROP COLUMN ref; UPDATE meta SET v = 1 WHERE k = 'schema';",
    )
    .unwrap();
    let rows: i64 = db.query_row("SELECT count(*) FROM chunks", [], |r| r.get(0)).unwrap();
    drop(db);
    fx.restore_ok(&id, "migrated");
    let db = fx.cache_db();
    let schema: i64 = db.query_row("SELECT v FROM meta WHERE k = 'schema'", [], |r| r.get(0)).unwrap();
    let after: i64 = db.query_row("SELECT count(*) FROM chunks", [], |r| r.get(0)).unwrap();
    assert_eq!((schema, after), (3, rows));
    assert_eq!(fx.damaged_marks(), 0);
}
