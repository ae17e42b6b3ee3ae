//! Restore and `verify --read-data` do their per-chunk work in batches (issue 13 item 5): one
//! read per run of chunks stored back to back, lookups in bulk, decoding in parallel. Batching
//! must change nothing but the speed: the bytes restored are those that chunk-by-chunk reads
//! give, every chunk is still checked, and one flipped byte among its neighbours in a run is
//! still found, rechecked and reported with the file it breaks. Timings are in benches/.

use std::collections::BTreeSet;
use std::path::Path;

use cairn::id::ChunkId;

use crate::util::{self, assert_no_panic, flip_byte, layout, open_repo, pack_path, prng_bytes, Env};

/// SQLite stamps the online-backup copy's header with its own change counter (bytes 24..28) and
/// version-valid-for number (92..96); every other byte is the source's.
fn without_header_stamps(mut b: Vec<u8>) -> Vec<u8> {
    b[24..28].fill(0);
    b[92..96].fill(0);
    b
}

/// Reads a file's chunks one at a time through the library (no batching, no coalescing).
fn chunk_by_chunk(repo: &Path, chunks: &[ChunkId]) -> Vec<u8> {
    let r = open_repo(repo);
    let reader = r.chunk_reader();
    let mut out = Vec::new();
    for (id, loc) in r.locate(chunks).unwrap() {
        out.extend_from_slice(&reader.read(&id, &loc).unwrap());
    }
    out
}

#[test]
fn batched_restore_and_verify_across_packs_equal_chunk_by_chunk_reads_and_find_a_flipped_byte() {
    let env = Env::new();
    env.run(&["init", "--pack-size-mib", "1"]).ok();
    let repo = env.repo();
    let app = env.path().join("app");
    std::fs::create_dir_all(app.join("small")).unwrap();
    let db = app.join("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA page_size=4096; PRAGMA journal_mode=DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..4000u64 {
        tx.execute("INSERT INTO t VALUES(?1, ?2)", rusqlite::params![i as i64, prng_bytes(i, 1000)]).unwrap();
    }
    tx.commit().unwrap();
    // A large plain file (content-defined chunks, streamed) and small ones (the batched writer).
    std::fs::write(app.join("notes.bin"), prng_bytes(7, 3 << 20)).unwrap();
    for i in 0..20u64 {
        std::fs::write(app.join("small").join(format!("f{i}")), prng_bytes(100 + i, 500 + i as usize * 97)).unwrap();
    }
    env.run(&["snapshot", "--type", "db", "app"]).ok();
    // Day 1: scattered rows change, so the file's pages alternate between the old packs and new ones.
    let tx = c.unchecked_transaction().unwrap();
    for i in (0..4000u64).step_by(37) {
        tx.execute("UPDATE t SET body = ?1 WHERE id = ?2", rusqlite::params![prng_bytes(50_000 + i, 1000), i as i64])
            .unwrap();
    }
    tx.commit().unwrap();
    drop(c);
    env.run(&["snapshot", "--type", "db", "app"]).ok();

    let l = layout(&repo);
    let latest = l.snapshots.last().unwrap();
    let db_chunks = latest.files["app/app.db"].clone();
    let packs: BTreeSet<_> = db_chunks.iter().map(|c| l.pack_of(c)).collect();
    assert!(packs.len() >= 4, "the database spans {} packs", packs.len());
    let at = |c: &ChunkId| {
        let p = l.pack_of(c);
        let e = l.packs[&p].iter().find(|e| e.id == *c).unwrap();
        (p, e.offset, e.stored_len)
    };
    let (mut adjacent, mut jumps) = (0, 0);
    for w in db_chunks.windows(2) {
        let (a, b) = (at(&w[0]), at(&w[1]));
        if a.0 == b.0 && a.1 + a.2 == b.1 {
            adjacent += 1;
        } else {
            jumps += 1;
        }
    }
    assert!(adjacent > 100 && jumps > 20, "runs: {adjacent} adjacent pairs, {jumps} jumps");

    // Batched restore == chunk-by-chunk reads == the source.
    let out = env.path().join("out");
    assert_no_panic(&env.run(&["restore", "latest", "--target", out.to_str().unwrap()]).ok());
    let restored = std::fs::read(out.join("app/app.db")).unwrap();
    assert!(restored == chunk_by_chunk(&repo, &db_chunks), "batched restore differs from chunk-by-chunk reads");
    assert!(without_header_stamps(restored) == without_header_stamps(std::fs::read(&db).unwrap()));
    let notes = std::fs::read(out.join("app/notes.bin")).unwrap();
    assert!(notes == chunk_by_chunk(&repo, &latest.files["app/notes.bin"]));
    assert!(notes == std::fs::read(app.join("notes.bin")).unwrap());
    for i in 0..20u64 {
        let f = format!("small/f{i}");
        assert_eq!(std::fs::read(out.join("app").join(&f)).unwrap(), std::fs::read(app.join(&f)).unwrap(), "{f}");
    }

    // verify --read-data checks every indexed chunk, in every pack.
    let v = env.run(&["--json", "verify", "--read-data"]).ok().json();
    let indexed: usize = l.packs.values().map(Vec::len).sum();
    assert_eq!(v["chunks_checked"], indexed as u64, "{v}");
    assert_eq!(v["packs_read"], l.packs.len() as u64, "{v}");

    // One byte flipped in a chunk with good neighbours on both sides in its pack run.
    let victim = db_chunks
        .windows(3)
        .find(|w| {
            let (a, b, c) = (at(&w[0]), at(&w[1]), at(&w[2]));
            a.0 == b.0 && b.0 == c.0 && a.1 + a.2 == b.1 && b.1 + b.2 == c.1
        })
        .map(|w| w[1])
        .expect("a chunk inside a run");
    let (pack, offset, len) = at(&victim);
    flip_byte(&pack_path(&repo, &pack), offset as u64 + len as u64 / 2);

    let v = env.run(&["--json", "verify", "--read-data"]);
    assert_no_panic(&v);
    let v = v.code(3).json();
    let damaged = v["damaged_packs"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{v}");
    assert_eq!(damaged[0]["pack"], pack.to_hex());
    assert_eq!(damaged[0]["chunks"], serde_json::json!([victim.to_hex()]), "only the flipped chunk: {v}");
    let affected: Vec<(String, String)> = damaged[0]["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["snapshot"].as_str().unwrap().to_string(), a["path"].as_str().unwrap().to_string()))
        .collect();
    assert!(affected.contains(&(latest.id.clone(), "app/app.db".to_string())), "{v}");
    assert_eq!(affected, l.affected_by(&BTreeSet::from([victim])), "{v}");

    let out2 = env.path().join("out2");
    let r = env.run(&["restore", "latest", "--target", out2.to_str().unwrap()]);
    assert_no_panic(&r);
    assert_ne!(r.code, 0, "a restore reading a damaged chunk fails\n{}", r.stderr);
    assert!(
        r.stderr.contains("app/app.db")
            && r.stderr.contains(&victim.short())
            && r.stderr.contains("authentication failed"),
        "the error names the file and the chunk:\n{}",
        r.stderr
    );
    assert!(!out2.join("app/app.db").exists(), "no half-restored database is left");
    // Files that do not need the damaged chunk are restored whole.
    assert!(std::fs::read(out2.join("app/notes.bin")).unwrap() == notes);
    util::assert_no_panic(&r);
}
