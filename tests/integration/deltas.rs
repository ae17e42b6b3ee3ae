//! Changed database pages stored as zstd deltas against the parent snapshot's page at the same
//! position (format-spec/pack.md, "References"), through the real CLI: byte-identical restores
//! over many generations of random page edits, prune keeping bases while repacking, damage to a
//! base reported with every file it breaks, and a SIGKILLed delta-heavy backup.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cairn::format::sample::SplitMix64;
use cairn::id::ChunkId;
use proptest::prelude::*;
use serde_json::Value;

use crate::util::{self, flip_byte, layout, open_repo, pack_path, prng_bytes, Env};

const PAGE: usize = 4096;

/// A file that looks like a SQLite database cut at 4 KiB pages: the header page, then random
/// (incompressible) pages, so a page stored whole costs a full page.
fn fake_db(pages: usize, seed: u64) -> Vec<u8> {
    let mut d = prng_bytes(seed, pages * PAGE);
    d[..16].copy_from_slice(b"SQLite format 3\0");
    d[16..18].copy_from_slice(&(PAGE as u16).to_be_bytes());
    d
}

/// `snapshot --stdin app.db` of `data`: (snapshot id, bytes stored, chunks stored).
fn backup_stream(env: &Env, data: &[u8]) -> (String, u64, u64) {
    let v = env.run_stdin(&["--json", "snapshot", "--type", "db", "--stdin", "app.db"], data).ok().json();
    let s = &v["stats"];
    (v["id"].as_str().unwrap().to_string(), s["new_bytes"].as_u64().unwrap(), s["new_chunks"].as_u64().unwrap())
}

fn restore_file(env: &Env, id: &str, name: &str, file: &str) -> Vec<u8> {
    let t = env.path().join("restores").join(name);
    env.run(&["restore", id, "--target", t.to_str().unwrap()]).ok();
    std::fs::read(t.join(file)).unwrap()
}

/// Chunks of `file` in snapshot `id` that the index records as deltas, with their bases.
fn deltas_of(env: &Env, id: &str, file: &str) -> Vec<(ChunkId, ChunkId)> {
    let l = layout(&env.repo());
    let chunks = &l.snapshots.iter().find(|s| s.id == id).unwrap().files[file];
    let r = open_repo(&env.repo());
    chunks.iter().filter_map(|c| r.cache().lookup(c).unwrap().and_then(|loc| loc.reference.map(|b| (*c, b)))).collect()
}

#[test]
fn changed_pages_cost_a_delta_not_a_page() {
    let env = Env::new();
    env.init();
    let mut db = fake_db(64, 1);
    let (s1, full, _) = backup_stream(&env, &db);
    assert!(full > 64 * PAGE as u64, "random pages do not compress: {full}");
    // Sixteen bytes changed in each of 20 pages.
    for p in (1..64).step_by(3).take(20) {
        db[p * PAGE + 1000..p * PAGE + 1016].copy_from_slice(b"a changed value!");
    }
    let gen2 = db.clone();
    let (s2, added, chunks) = backup_stream(&env, &db);
    assert_eq!(chunks, 20 + 1, "20 pages and the tree");
    assert!(added < 20 * 300, "20 changed pages stored as deltas cost {added} bytes");
    let d2 = deltas_of(&env, &s2, "app.db");
    assert_eq!(d2.len(), 20, "{d2:?}");
    // The same pages again: their parents are deltas, so the new ones are made against the
    // parents' bases (one link, never a chain).
    for p in (1..64).step_by(3).take(20) {
        db[p * PAGE + 2000..p * PAGE + 2008].copy_from_slice(b"and more");
    }
    let (s3, added3, _) = backup_stream(&env, &db);
    assert!(added3 < 20 * 300, "{added3}");
    let d3 = deltas_of(&env, &s3, "app.db");
    let bases2: BTreeSet<ChunkId> = d2.iter().map(|d| d.1).collect();
    assert_eq!(d3.len(), 20);
    assert!(d3.iter().all(|(_, b)| bases2.contains(b)), "deltas of deltas point at the first bases");
    // Packs and index files whose entries record references are written in version 3 (the
    // body compressed); those without stay in version 1 (pack.md, index.md).
    let (trailers, indexes) = object_versions(&env.repo());
    assert_eq!(trailers, BTreeSet::from([1, 3]), "trailer versions");
    assert_eq!(indexes, BTreeSet::from([1, 3]), "index versions");
    assert_eq!(restore_file(&env, &s1, "s1", "app.db"), fake_db(64, 1));
    assert_eq!(restore_file(&env, &s2, "s2", "app.db"), gen2);
    assert_eq!(restore_file(&env, &s3, "s3", "app.db"), db);
    env.run(&["verify", "--read-data"]).ok();
}

/// The version bytes of every pack trailer and index file plaintext in `repo`.
fn object_versions(repo: &Path) -> (BTreeSet<u8>, BTreeSet<u8>) {
    use cairn::format::crypto::ObjectKind;
    let r = open_repo(repo);
    let what = || "object".to_string();
    let open = |kind, sealed: &[u8]| r.keys().open(kind, &[0; 32], sealed, &what).unwrap()[0];
    let trailers = layout(repo)
        .packs
        .keys()
        .map(|p| {
            let b = std::fs::read(pack_path(repo, p)).unwrap();
            let (start, len) = cairn::format::pack::parse_tail(&b[b.len() - 12..], b.len() as u64, &what).unwrap();
            open(ObjectKind::PackTrailer, &b[start as usize..(start + len as u64) as usize])
        })
        .collect();
    let indexes = std::fs::read_dir(repo.join("index"))
        .unwrap()
        .map(|e| open(ObjectKind::Index, &std::fs::read(e.unwrap().path()).unwrap()))
        .collect();
    (trailers, indexes)
}

/// One generation's edit of the fake database.
fn edit(db: &mut Vec<u8>, r: &mut SplitMix64) {
    let pages = db.len() / PAGE;
    match r.next_u64() % 8 {
        // Append pages.
        0 => db.extend(prng_bytes(r.next_u64(), PAGE * (1 + r.next_u64() as usize % 3))),
        // Drop the last page.
        1 if pages > 2 => db.truncate(db.len() - PAGE),
        // Rewrite a page entirely: a delta does not pay.
        2 => {
            let p = 1 + r.next_u64() as usize % (pages - 1);
            db[p * PAGE..(p + 1) * PAGE].copy_from_slice(&prng_bytes(r.next_u64(), PAGE));
        }
        // Small edits in a few pages (the common case).
        _ => {
            for _ in 0..1 + r.next_u64() % 6 {
                let p = r.next_u64() as usize % pages;
                let at = p * PAGE + 100 + r.next_u64() as usize % (PAGE - 200);
                let n = 1 + r.next_u64() as usize % 40;
                let patch = prng_bytes(r.next_u64(), n);
                db[at..at + n].copy_from_slice(&patch);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random page edits over many generations, each backed up (most pages as deltas, bases
    /// whole): every generation restores byte-identical, from the newest back to the first.
    #[test]
    fn random_page_edits_restore_byte_identical_at_every_generation(seed in any::<u64>()) {
        let env = Env::new();
        env.init();
        let mut r = SplitMix64(seed);
        let mut db = fake_db(12 + r.next_u64() as usize % 8, r.next_u64());
        let mut gens: Vec<(String, Vec<u8>)> = Vec::new();
        for _ in 0..7 {
            let (id, _, _) = backup_stream(&env, &db);
            gens.push((id, db.clone()));
            edit(&mut db, &mut r);
        }
        for (n, (id, want)) in gens.iter().enumerate().rev() {
            let got = restore_file(&env, id, &format!("g{n}"), "app.db");
            prop_assert!(got == *want, "generation {} of seed {} restored differently", n, seed);
        }
        env.run(&["verify", "--read-data"]).ok();
    }
}

// ---------------------------------------------------------------------------------------------
// Real SQLite databases met in a walk.

fn make_db(path: &Path, rows: i64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);").unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..rows {
        let v = hex::encode(prng_bytes(i as u64, 50));
        tx.execute("INSERT INTO t VALUES(?1, ?2)", rusqlite::params![i, v]).unwrap();
    }
    tx.commit().unwrap();
}

/// Changes 7 characters of every `every`th row starting at `from` below row `below` (same
/// length: pages change in place, a few bytes each).
fn touch_rows_below(path: &Path, from: i64, every: i64, below: i64, mark: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute(
        "UPDATE t SET v = substr(v, 1, 40) || ?1 || substr(v, 48) WHERE id % ?2 = ?3 AND id < ?4",
        rusqlite::params![mark, every, from, below],
    )
    .unwrap();
}

fn touch_rows(path: &Path, from: i64, every: i64, mark: &str) {
    touch_rows_below(path, from, every, i64::MAX, mark);
}

fn rows(path: &Path) -> Vec<(i64, String)> {
    let c = rusqlite::Connection::open(path).unwrap();
    let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok", "{}", path.display());
    let mut st = c.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

fn snapshot_dir(env: &Env) -> (String, u64) {
    let v = env.run(&["--json", "snapshot", "--type", "db", "src"]).ok().json();
    (v["id"].as_str().unwrap().to_string(), v["stats"]["new_bytes"].as_u64().unwrap())
}

/// Restores snapshot `id`: the rows of its database, or the failed run.
fn try_restore(env: &Env, id: &str, name: &str) -> Result<Vec<(i64, String)>, util::Run> {
    let t = env.path().join("restores").join(name);
    let r = env.run(&["restore", id, "--target", t.to_str().unwrap()]);
    if r.code != 0 {
        return Err(r);
    }
    Ok(rows(&t.join("src/app.db")))
}

fn restored_rows(env: &Env, id: &str, name: &str) -> Vec<(i64, String)> {
    try_restore(env, id, name).unwrap_or_else(|r| panic!("restore failed: {}\n{}", r.stdout, r.stderr))
}

#[test]
fn prune_keeps_bases_while_repacking_and_the_newest_snapshot_restores() {
    let env = Env::new();
    env.init();
    let db = env.path().join("src/app.db");
    make_db(&db, 3000);
    let (s1, full) = snapshot_dir(&env);
    touch_rows(&db, 0, 20, "CHANGED");
    let (s2, added2) = snapshot_dir(&env);
    assert!(added2 * 4 < full, "a delta-heavy backup adds {added2} bytes against {full} for the whole");
    // Half the pages change again: s2's pack keeps live deltas beside dead ones.
    touch_rows_below(&db, 10, 20, 1500, "AGAIN!!");
    let (s3, _) = snapshot_dir(&env);
    let want = rows(&db);
    let d3 = deltas_of(&env, &s3, "src/app.db");
    assert!(d3.len() > 10, "{d3:?}");
    // The bases of s3's deltas (and of the s2 deltas s3 still uses) are s1's pages.
    env.run(&["forget", &s1, &s2]).ok();
    let p = env.run(&["--json", "prune", "--repack-below", "100"]).ok().json();
    assert!(p["packs_repacked"].as_u64().unwrap() >= 2, "both older packs hold dead chunks: {p:#}");
    let l = layout(&env.repo());
    assert_eq!(l.snapshots.len(), 1);
    let r = open_repo(&env.repo());
    for (_, b) in &d3 {
        assert!(r.cache().lookup(b).unwrap().is_some(), "base {b} dropped by prune");
    }
    drop(r);
    assert_eq!(restored_rows(&env, &s3, "s3"), want);
    env.run(&["verify", "--read-data"]).ok();
}

/// A repository of two snapshots of one database in which every row changed between them:
/// every data page of the second is a delta against a page of the first.
fn every_row_changed() -> (Env, String, String) {
    let env = Env::new();
    env.init();
    let db = env.path().join("src/app.db");
    make_db(&db, 1500);
    let (s1, _) = snapshot_dir(&env);
    touch_rows(&db, 0, 1, "CHANGED");
    let (s2, _) = snapshot_dir(&env);
    (env, s1, s2)
}

/// Flips a byte in the middle of chunk `id`'s blob in `pack`.
fn damage_chunk(env: &Env, l: &util::Layout, pack: &cairn::id::PackId, id: &ChunkId) {
    let e = l.packs[pack].iter().find(|e| e.id == *id).unwrap();
    flip_byte(&pack_path(&env.repo(), pack), e.offset as u64 + e.stored_len as u64 / 2);
}

#[test]
fn damaged_base_is_reported_with_every_file_it_breaks_and_restore_names_it() {
    let (env, s1, s2) = every_row_changed();
    let d2 = deltas_of(&env, &s2, "src/app.db");
    assert!(!d2.is_empty());
    let l = layout(&env.repo());
    let s2_files = &l.snapshots.iter().find(|s| s.id == s2).unwrap().files["src/app.db"];
    let (delta, base) = *d2.iter().find(|(_, b)| !s2_files.contains(b)).expect("a base s2 does not hold itself");
    let pack = l.pack_of(&base);
    assert_ne!(pack, l.pack_of(&delta), "bases live in the older pack");
    damage_chunk(&env, &l, &pack, &base);

    let r = env.run(&["--json", "verify", "--read-data"]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let v: Value = r.json();
    let d = v["damaged_packs"].as_array().unwrap();
    let ours = d.iter().find(|d| d["pack"] == pack.to_hex()).unwrap_or_else(|| panic!("{v:#}"));
    assert!(ours["chunks"].as_array().unwrap().iter().any(|c| c == &base.to_hex()), "{ours:#}");
    let affected: BTreeSet<(String, String)> = ours["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["snapshot"].as_str().unwrap().to_string(), a["path"].as_str().unwrap().to_string()))
        .collect();
    // s2 holds no copy of the damaged page: it breaks through its delta.
    assert!(affected.contains(&(s2.clone(), "src/app.db".into())), "{affected:?}");
    assert!(affected.contains(&(s1.clone(), "src/app.db".into())), "{affected:?}");
    // Not reported as success, and the delta's own pack is not called damaged.
    assert!(d.iter().all(|d| d["pack"] != l.pack_of(&delta).to_hex()), "{v:#}");

    let r = try_restore(&env, &s2, "s2").expect_err("a restore through a damaged base must fail");
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains(&base.to_hex()), "the error names the base: {}", r.stderr);
    assert!(r.stderr.contains("app.db"), "and the file: {}", r.stderr);
    util::assert_no_panic(&r);
}

#[test]
fn damaged_delta_checked_beside_its_base_in_another_pack_is_charged_to_its_own_pack() {
    // verify checks a delta while it decodes the delta's base in the base's pack: a failure
    // found there still belongs to the delta's pack, and the base's pack stays clean.
    let (env, _, s2) = every_row_changed();
    env.run(&["verify", "--read-data"]).ok();
    let l = layout(&env.repo());
    let (delta, base) = *deltas_of(&env, &s2, "src/app.db")
        .iter()
        .find(|(d, b)| l.pack_of(d) != l.pack_of(b))
        .expect("a delta whose base lives in an older pack");
    let pack = l.pack_of(&delta);
    damage_chunk(&env, &l, &pack, &delta);

    let r = env.run(&["--json", "verify", "--read-data"]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    let v: Value = r.json();
    let d = v["damaged_packs"].as_array().unwrap();
    let ours = d.iter().find(|d| d["pack"] == pack.to_hex()).unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(ours["chunks"].as_array().unwrap(), &[Value::from(delta.to_hex())], "{ours:#}");
    assert!(d.iter().all(|d| d["pack"] != l.pack_of(&base).to_hex()), "{v:#}");
}

#[test]
fn sigkill_during_a_delta_heavy_backup_leaves_a_repository_that_verifies_and_backs_up() {
    let env = Env::new();
    env.init();
    let db = env.path().join("src/app.db");
    make_db(&db, 60_000);
    snapshot_dir(&env);
    let mut landed = 0;
    for (n, ms) in [40u64, 120, 250, 400, 700].into_iter().enumerate() {
        touch_rows(&db, 0, 1, &format!("KILL{n:03}"));
        let before = util::snapshot_names(&env.repo()).len();
        let mut c = env.cmd();
        c.args(["snapshot", "--type", "db", "src"]).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        // A real process: the kill lands wherever it is after this long.
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let committed = util::snapshot_names(&env.repo()).len() > before;
        if status.signal() == Some(libc::SIGKILL) && !committed {
            landed += 1;
        }
        let v = env.run(&["--json", "verify"]);
        assert_eq!(v.code, 0, "after a kill at {ms} ms: {}\n{}", v.stdout, v.stderr);
    }
    assert!(landed >= 1, "no kill landed mid-backup");
    touch_rows(&db, 3, 7, "AFTER!!");
    let (id, _) = snapshot_dir(&env);
    assert_eq!(restored_rows(&env, &id, "after"), rows(&db));
    env.run(&["verify", "--read-data"]).ok();
}

/// Verify's reference check asks the index for the broken references only (streamed in the
/// referenced id's order): a reference to a chunk no index lists and a reference to a chunk that
/// itself references another are broken; a reference to a chunk stored whole is not.
#[test]
fn broken_references_are_the_missing_and_the_chained_ones_only() {
    use cairn::format::index::PackRecord;
    use cairn::format::pack::Entry;
    use cairn::id::{IndexId, PackId, RepoId};
    let dir = tempfile::tempdir().unwrap();
    let mut cache = cairn::Cache::open(&dir.path().join("cache.sqlite"), RepoId([1; 32])).unwrap();
    let id = |b: u8| ChunkId([b; 32]);
    let entry = |c: u8, r: Option<u8>| Entry {
        id: id(c),
        offset: 8 + 10 * c as u32,
        stored_len: 10,
        raw_len: 10,
        reference: r.map(id),
    };
    let entries = vec![entry(1, None), entry(2, Some(1)), entry(3, Some(7)), entry(4, Some(2)), entry(5, Some(1))];
    cache.add_index(&IndexId([3; 32]), &[PackRecord { id: PackId([9; 32]), size: 100, entries }]).unwrap();
    let mut broken = cache.broken_references().unwrap();
    broken.sort();
    assert_eq!(broken, vec![(id(3), id(7), false), (id(4), id(2), true)]);
    let mut all = Vec::new();
    cache.for_each_reference(|c, r| all.push((c, r))).unwrap();
    all.sort();
    assert_eq!(all, vec![(id(2), id(1)), (id(3), id(7)), (id(4), id(2)), (id(5), id(1))]);
}

/// A database of more pages than a tree record's ids the reader holds (32,768; 512-byte pages
/// keep it at 20 MiB): the parent's list is spilled to `tmp/` while it is read, and the backup
/// plans every delta against the parent's page at the same position, reuses the list of the
/// unchanged file whole, restores from it, and leaves no file behind.
#[test]
fn a_parent_page_list_read_through_a_spill_file_plans_the_same_deltas_and_tree() {
    let env = Env::new();
    env.init();
    let app = env.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let db = app.join("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA page_size=512; PRAGMA journal_mode=DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);",
    )
    .unwrap();
    let rows = 40_000u64;
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute("INSERT INTO t VALUES(?1, ?2)", rusqlite::params![i as i64, prng_bytes(i, 400)]).unwrap();
    }
    tx.commit().unwrap();
    let tmp_left = || std::fs::read_dir(env.repo().join("tmp")).unwrap().count();
    let snap = || {
        let v = env.run(&["--json", "snapshot", "--type", "db", app.to_str().unwrap()]).ok().json();
        assert_eq!(tmp_left(), 0, "spill files are unlinked");
        (v["id"].as_str().unwrap().to_string(), v["stats"]["unchanged_files"].as_u64().unwrap())
    };
    let (s1, _) = snap();
    // Rows changed a little all along the file: pages in the spilled ids and in the last ones.
    let tx = c.unchecked_transaction().unwrap();
    for i in (0..rows).step_by(997) {
        let mut b = prng_bytes(i, 400);
        b[100..108].copy_from_slice(b"changed!");
        tx.execute("UPDATE t SET b = ?1 WHERE id = ?2", rusqlite::params![b, i as i64]).unwrap();
    }
    tx.commit().unwrap();
    drop(c);
    let (s2, _) = snap();
    let l = layout(&env.repo());
    let list = |id: &str| l.snapshots.iter().find(|s| s.id == id).unwrap().files["app/app.db"].clone();
    let (p1, p2) = (list(&s1), list(&s2));
    assert!(p1.len() > 32_768 && p2.len() == p1.len(), "{} pages", p1.len());
    // Small pages are stored as slices of groups, so a delta references the group holding its
    // base (encoding 5) or the base itself: either way the parent's page at the same position.
    let r = open_repo(&env.repo());
    let reference = |c: &ChunkId| r.cache().lookup(c).unwrap().unwrap().reference;
    let of_parent: BTreeSet<ChunkId> = p1.iter().flat_map(|c| [Some(*c), reference(c)]).flatten().collect();
    let mut deltas = Vec::new();
    for (at, c) in p2.iter().enumerate() {
        match reference(c).filter(|b| of_parent.contains(b)) {
            Some(b) if p1[at] != *c => deltas.push((at, b)),
            _ => {}
        }
    }
    assert!(deltas.len() >= 40, "{} deltas", deltas.len());
    for (at, base) in &deltas {
        assert!(
            p1[*at] == *base || reference(&p1[*at]) == Some(*base),
            "page {at}: not the parent's page at its position"
        );
    }
    assert!(deltas.iter().any(|(at, _)| *at < 32_768) && deltas.iter().any(|(at, _)| *at >= 32_768));
    drop(r);

    // Unchanged since: the parent's spilled list is the new snapshot's, the same tree bytes.
    let (s3, unchanged) = snap();
    assert_eq!(unchanged, 1);
    let l = layout(&env.repo());
    let tree = |id: &str| l.snapshots.iter().find(|s| s.id == id).unwrap().tree.clone();
    assert_eq!(tree(&s3), tree(&s2));
    let stamps = |mut b: Vec<u8>| {
        b[24..28].fill(0);
        b[92..96].fill(0);
        b
    };
    // Restore reads the list spilled too.
    let restored = restore_file(&env, &s3, "s3", "app/app.db");
    assert!(stamps(restored) == stamps(std::fs::read(&db).unwrap()), "restored database differs");
    assert_eq!(tmp_left(), 0);
}
