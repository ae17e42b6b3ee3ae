//! Damage to a repository: `verify` names exactly what is damaged and what it breaks, untouched
//! snapshots still restore byte-identically, nothing panics, and `repair index` rebuilds derived
//! state. Every test builds a repository with three snapshots in 1 MiB packs:
//! alpha = a/{a_only.bin, shared.bin, small.txt}, beta = b/{b_only.bin, shared.bin} (shares the
//! shared.bin chunks with alpha), gamma = c/{c_only.bin, notes.txt} (shares nothing).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cairn::id::{ChunkId, PackId};
use serde_json::Value;

use crate::util::{assert_no_panic, assert_trees_equal, flip_byte, layout, pack_path, prng_bytes, Env, Layout, Run};

const TYPES: [(&str, &str); 3] = [("alpha", "a"), ("beta", "b"), ("gamma", "c")];

struct Fx {
    env: Env,
    src: PathBuf,
}

impl Fx {
    fn new() -> Fx {
        let env = Env::new();
        env.run(&["init", "--pack-size-mib", "1"]).ok();
        let src = env.path().join("src");
        let put = |rel: &str, data: &[u8]| {
            let p = src.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        };
        let shared = prng_bytes(100, 1_500_000);
        put("a/a_only.bin", &prng_bytes(1, 1_400_000));
        put("a/shared.bin", &shared);
        put("a/small.txt", b"alpha's small file\n");
        put("b/b_only.bin", &prng_bytes(2, 1_300_000));
        put("b/shared.bin", &shared);
        put("c/c_only.bin", &prng_bytes(3, 1_600_000));
        put("c/notes.txt", b"gamma notes\n");
        let fx = Fx { env, src };
        for (ty, dir) in TYPES {
            fx.env.run(&["snapshot", "--type", ty, fx.src.join(dir).to_str().unwrap()]).ok();
        }
        fx
    }

    fn repo(&self) -> PathBuf {
        self.env.repo()
    }

    fn layout(&self) -> Layout {
        let l = layout(&self.repo());
        assert_eq!(l.snapshots.len(), 3);
        assert!(l.packs.len() >= 6, "expected several packs, got {}", l.packs.len());
        l
    }

    fn run(&self, args: &[&str]) -> Run {
        let r = self.env.run(args);
        assert_no_panic(&r);
        r
    }

    /// `verify ARGS --json`: exit code and report.
    fn verify(&self, args: &[&str]) -> (i32, Value) {
        let mut a = vec!["--json", "verify"];
        a.extend_from_slice(args);
        let r = self.run(&a);
        assert!(r.code == 0 || r.code == 3, "verify failed to run: {}\n{}", r.code, r.stderr);
        let v = r.json();
        assert_eq!(v["ok"], Value::Bool(r.code == 0), "ok flag vs exit code: {}", r.stdout);
        (r.code, v)
    }

    fn target(&self, name: &str) -> PathBuf {
        let t = self.env.path().join("restores").join(name);
        assert!(!t.exists());
        t
    }

    /// Restores snapshot `id` of directory `dir` and compares it with the source.
    fn restore_ok(&self, id: &str, dir: &str, name: &str) {
        let t = self.target(name);
        self.run(&["restore", id, "--target", t.to_str().unwrap()]).ok();
        assert_trees_equal(&self.src.join(dir), &t.join(dir));
    }

    /// Restores snapshot `id` expecting failure; `file` (snapshot path) must be absent or a strict
    /// prefix of the original: never wrong bytes.
    fn restore_fails(&self, id: &str, file: &str, name: &str) -> Run {
        let t = self.target(name);
        let r = self.run(&["restore", id, "--target", t.to_str().unwrap()]);
        assert_eq!(r.code, 1, "restore of damaged data must fail\n{}\n{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("error"), "{}", r.stderr);
        let got = t.join(file);
        if got.exists() {
            let orig = std::fs::read(self.src.join(file)).unwrap();
            let got = std::fs::read(&got).unwrap();
            assert!(
                got.len() < orig.len() && orig.starts_with(&got),
                "{file}: restored bytes differ from the original"
            );
        }
        r
    }
}

/// (pack, problem, chunks, affected) of every damaged pack in a verify report.
type Damage = (String, String, Vec<String>, Vec<(String, String)>);

fn damaged(v: &Value) -> Vec<Damage> {
    v["damaged_packs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let chunks = d["chunks"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
            let affected = d["affected"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (a["snapshot"].as_str().unwrap().to_string(), a["path"].as_str().unwrap().to_string()))
                .collect();
            (d["pack"].as_str().unwrap().to_string(), d["problem"].as_str().unwrap().to_string(), chunks, affected)
        })
        .collect()
}

fn problems(v: &Value) -> Vec<String> {
    v["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
}

fn hexes<'a>(ids: impl IntoIterator<Item = &'a ChunkId>) -> Vec<String> {
    let s: BTreeSet<String> = ids.into_iter().map(|c| c.to_hex()).collect();
    s.into_iter().collect()
}

/// Packs whose chunks serve only `(snapshot, path)`, not trees.
fn packs_used_only_by(l: &Layout, snapshot: &str, path: &str) -> Vec<PackId> {
    l.packs.keys().filter(|p| l.users_of_pack(p) == vec![(snapshot.to_string(), path.to_string())]).copied().collect()
}

fn trailer_span(pack: &Path) -> (u64, u64) {
    let b = std::fs::read(pack).unwrap();
    let n = b.len();
    assert_eq!(&b[n - 8..], b"CAIRNEND");
    let len = u32::from_le_bytes(b[n - 12..n - 8].try_into().unwrap()) as u64;
    ((n as u64) - 12 - len, len)
}

#[test]
fn flipped_byte_in_a_chunk_is_found_by_read_data_and_named_precisely() {
    let fx = Fx::new();
    let l = fx.layout();
    let gamma = l.snap("gamma");
    let (alpha, beta) = (l.snap("alpha").id.clone(), l.snap("beta").id.clone());
    let pack =
        *packs_used_only_by(&l, &gamma.id, "c/c_only.bin").first().expect("a pack holding only c_only.bin chunks");
    let es = &l.packs[&pack];
    let victim = es[es.len() / 2];
    flip_byte(&pack_path(&fx.repo(), &pack), victim.offset as u64 + victim.stored_len as u64 / 2);

    // Structure checks do not read chunk bodies: this damage is invisible to them by design.
    let (code, v) = fx.verify(&[]);
    assert_eq!(code, 0, "{v}");

    let (code, v) = fx.verify(&["--read-data"]);
    assert_eq!(code, 3);
    let d = damaged(&v);
    assert_eq!(d.len(), 1, "{v}");
    let (p, problem, chunks, affected) = &d[0];
    assert_eq!(p, &pack.to_hex());
    assert!(problem.contains("1 of") && problem.contains("fail"), "{problem}");
    assert_eq!(chunks, &vec![victim.id.to_hex()]);
    assert_eq!(affected, &vec![(gamma.id.clone(), "c/c_only.bin".to_string())]);
    assert!(problems(&v).is_empty(), "{v}");
    assert_eq!(v["packs_read"].as_u64().unwrap() as usize, l.packs.len());

    fx.restore_ok(&alpha, "a", "alpha");
    fx.restore_ok(&beta, "b", "beta");
    let r = fx.restore_fails(&gamma.id, "c/c_only.bin", "gamma");
    assert!(r.stderr.contains("c/c_only.bin") && r.stderr.contains("corrupt"), "{}", r.stderr);
    // The other file of gamma is intact and restored.
    let t = fx.env.path().join("restores/gamma/c/notes.txt");
    assert_eq!(std::fs::read(t).unwrap(), b"gamma notes\n");
}

#[test]
fn flipped_byte_in_a_shared_pack_trailer_is_found_by_structure_verify() {
    let fx = Fx::new();
    let l = fx.layout();
    let (alpha, beta, gamma) = (l.snap("alpha"), l.snap("beta"), l.snap("gamma"));
    // A pack holding shared.bin chunks: used by both alpha and beta.
    let pack = l.pack_of(&alpha.files["a/shared.bin"][0]);
    let users = l.users_of_pack(&pack);
    assert!(
        users.contains(&(alpha.id.clone(), "a/shared.bin".into()))
            && users.contains(&(beta.id.clone(), "b/shared.bin".into()))
    );
    assert!(users.iter().all(|(s, _)| s != &gamma.id));
    let path = pack_path(&fx.repo(), &pack);
    let (start, len) = trailer_span(&path);
    flip_byte(&path, start + len / 2);

    for args in [&[][..], &["--read-data"][..]] {
        let (code, v) = fx.verify(args);
        assert_eq!(code, 3, "{v}");
        let d = damaged(&v);
        assert_eq!(d.len(), 1, "{v}");
        let (p, problem, chunks, affected) = &d[0];
        assert_eq!(p, &pack.to_hex());
        assert!(problem.contains("trailer") && problem.contains("authentication failed"), "{problem}");
        assert_eq!(chunks, &hexes(l.packs[&pack].iter().map(|e| &e.id)));
        assert_eq!(affected, &users);
    }

    // The chunks themselves are intact and the index still locates them: every snapshot restores.
    fx.restore_ok(&gamma.id, "c", "gamma");
    fx.restore_ok(&alpha.id, "a", "alpha");
    fx.restore_ok(&beta.id, "b", "beta");

    // repair index cannot read the trailer; it says so (exit 1) but must not make the intact
    // chunks unreachable: restores still work and verify still names the damaged trailer.
    let r = fx.run(&["--json", "repair", "index"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let bad = r.json()["unreadable_packs"].clone();
    assert_eq!(bad.as_array().unwrap().len(), 1, "{bad}");
    assert_eq!(bad[0][0].as_str().unwrap(), pack.to_hex());
    fx.restore_ok(&alpha.id, "a", "alpha-after-repair");
    fx.restore_ok(&beta.id, "b", "beta-after-repair");
    let (code, v) = fx.verify(&[]);
    assert_eq!(code, 3);
    assert_eq!(damaged(&v).iter().map(|d| d.0.clone()).collect::<Vec<_>>(), vec![pack.to_hex()], "{v}");
}

#[test]
fn truncated_pack_is_found_by_structure_verify() {
    let fx = Fx::new();
    let l = fx.layout();
    let beta = l.snap("beta");
    let pack =
        *packs_used_only_by(&l, &beta.id, "b/b_only.bin").first().expect("a pack holding only b_only.bin chunks");
    let path = pack_path(&fx.repo(), &pack);
    let size = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(size / 2).unwrap();

    for args in [&[][..], &["--read-data"][..]] {
        let (code, v) = fx.verify(args);
        assert_eq!(code, 3);
        let d = damaged(&v);
        assert_eq!(d.len(), 1, "{v}");
        let (p, problem, chunks, affected) = &d[0];
        assert_eq!(p, &pack.to_hex());
        assert!(problem.contains(&format!("pack is {} bytes, index says {size}", size / 2)), "{problem}");
        assert_eq!(chunks, &hexes(l.packs[&pack].iter().map(|e| &e.id)));
        assert_eq!(affected, &vec![(beta.id.clone(), "b/b_only.bin".to_string())]);
        assert!(problems(&v).is_empty(), "{v}");
    }

    fx.restore_ok(&l.snap("alpha").id, "a", "alpha");
    fx.restore_ok(&l.snap("gamma").id, "c", "gamma");
    fx.restore_fails(&beta.id, "b/b_only.bin", "beta");
}

#[test]
fn deleted_pack_holding_a_tree_is_found_by_structure_verify() {
    let fx = Fx::new();
    let l = fx.layout();
    let gamma = l.snap("gamma");
    let pack = l.pack_of(&gamma.tree[0]);
    let users = l.users_of_pack(&pack);
    assert_eq!(users, vec![(gamma.id.clone(), "(tree)".to_string())]);
    std::fs::remove_file(pack_path(&fx.repo(), &pack)).unwrap();

    let (code, v) = fx.verify(&[]);
    assert_eq!(code, 3);
    let d = damaged(&v);
    assert_eq!(d.len(), 1, "{v}");
    let (p, problem, chunks, affected) = &d[0];
    assert_eq!(p, &pack.to_hex());
    assert_eq!(problem, "pack file is missing");
    assert_eq!(chunks, &hexes(l.packs[&pack].iter().map(|e| &e.id)));
    assert_eq!(affected, &users);
    assert!(problems(&v).is_empty(), "{v}");

    fx.restore_ok(&l.snap("alpha").id, "a", "alpha");
    fx.restore_ok(&l.snap("beta").id, "b", "beta");
    let t = fx.target("gamma");
    let r = fx.run(&["restore", &gamma.id, "--target", t.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(&pack.to_hex()) || r.stderr.contains("No such file"), "{}", r.stderr);
    assert!(!t.join("c/c_only.bin").exists());
    let r = fx.run(&["ls", &gamma.id]);
    assert_eq!(r.code, 1, "{}", r.stderr);
}

#[test]
fn corrupt_index_file_is_reported_and_repair_index_rebuilds_it() {
    let fx = Fx::new();
    let l = fx.layout();
    let beta = l.snap("beta");
    let index_files: Vec<PathBuf> = crate::util::repo_files(&fx.repo(), "index");
    assert_eq!(index_files.len(), 3, "one index file per snapshot");
    // Beta's index file is the one listing its b_only.bin packs.
    let b_pack = l.pack_of(&beta.files["b/b_only.bin"][0]);
    let victim = {
        let r = crate::util::open_repo(&fx.repo());
        index_files
            .iter()
            .find(|p| {
                let id = p.file_name().unwrap().to_str().unwrap().parse().unwrap();
                cairn::read_index_file(r.store(), r.keys(), &id).unwrap().iter().any(|rec| rec.id == b_pack)
            })
            .unwrap()
            .clone()
    };
    let victim_name = victim.file_name().unwrap().to_str().unwrap().to_string();
    let size = std::fs::metadata(&victim).unwrap().len();
    flip_byte(&victim, size / 2);

    let (code, v) = fx.verify(&[]);
    assert_eq!(code, 3);
    assert!(damaged(&v).is_empty(), "{v}");
    let ps = problems(&v);
    assert!(ps.iter().any(|p| p.starts_with(&format!("index file {victim_name}")) && p.contains("corrupt")), "{ps:?}");
    // Beta's own chunks (its tree among them) are now unindexed; alpha and gamma are untouched.
    assert!(
        ps.iter()
            .any(|p| p.starts_with(&format!("snapshot {}: tree chunk", beta.id)) && p.contains("not in any index")),
        "{ps:?}"
    );
    for other in ["alpha", "gamma"] {
        assert!(!ps.iter().any(|p| p.contains(&l.snap(other).id)), "{ps:?}");
    }
    assert_eq!(v["index_files"], 2);

    let r = fx.run(&["--json", "repair", "index"]).ok();
    assert_eq!(r.json()["packs_indexed"].as_u64().unwrap() as usize, l.packs.len());
    assert!(r.json()["unreadable_packs"].as_array().unwrap().is_empty());
    assert!(!victim.exists(), "the corrupt index file is replaced");
    let (code, v) = fx.verify(&["--read-data"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["packs_read"].as_u64().unwrap() as usize, l.packs.len());
    for (ty, dir) in TYPES {
        fx.restore_ok(&l.snap(ty).id, dir, ty);
    }
}

#[test]
fn corrupt_snapshot_file_is_reported_and_others_restore() {
    let fx = Fx::new();
    let l = fx.layout();
    let gamma = l.snap("gamma").id.clone();
    let path = fx.repo().join("snapshots").join(&gamma);
    let size = std::fs::metadata(&path).unwrap().len();
    flip_byte(&path, size - 5);

    let (code, v) = fx.verify(&["--read-data"]);
    assert_eq!(code, 3);
    assert!(damaged(&v).is_empty(), "{v}");
    let ps = problems(&v);
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert!(ps[0].starts_with(&format!("snapshot {gamma}")) && ps[0].contains("corrupt"), "{ps:?}");
    assert_eq!(v["snapshots"], 2);

    let r = fx.run(&["--json", "snapshots"]).ok();
    let ids: BTreeSet<String> =
        r.json().as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, [l.snap("alpha").id.clone(), l.snap("beta").id.clone()].into_iter().collect());
    assert!(r.stderr.contains(&gamma[..8]) && r.stderr.contains("unreadable"), "{}", r.stderr);

    fx.restore_ok(&l.snap("alpha").id, "a", "alpha");
    fx.restore_ok(&l.snap("beta").id, "b", "beta");
    let t = fx.target("gamma");
    let r = fx.run(&["restore", &gamma, "--target", t.to_str().unwrap()]);
    // Damage found (exit 3), naming the file and `repair snapshots`.
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("snapshots/{gamma}")) && r.stderr.contains("repair snapshots"), "{}", r.stderr);
    assert!(!t.join("c").exists());
}

#[test]
fn deleted_cache_is_rebuilt_from_the_repository() {
    let fx = Fx::new();
    let l = fx.layout();
    let rm_cache = || {
        let mut n = 0;
        for e in std::fs::read_dir(fx.repo().join("cache")).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_str().unwrap().starts_with("cache.sqlite") {
                std::fs::remove_file(p).unwrap();
                n += 1;
            }
        }
        assert!(n >= 1);
    };

    rm_cache();
    let (code, v) = fx.verify(&["--read-data"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["packs"].as_u64().unwrap() as usize, l.packs.len());
    for (ty, dir) in TYPES {
        fx.restore_ok(&l.snap(ty).id, dir, ty);
    }
    // A snapshot after losing the cache still deduplicates against the repository.
    rm_cache();
    let r = fx.run(&["--json", "snapshot", "--type", "alpha", fx.src.join("a").to_str().unwrap()]).ok();
    assert_eq!(r.json()["stats"]["new_chunks"], 0, "{}", r.stdout);

    rm_cache();
    fx.run(&["repair", "index"]).ok();
    assert!(fx.repo().join("cache/cache.sqlite").is_file());
    let (code, v) = fx.verify(&[]);
    assert_eq!(code, 0, "{v}");
    for (ty, dir) in TYPES {
        fx.restore_ok(&l.snap(ty).id, dir, &format!("{ty}-after-repair"));
    }
}

#[test]
fn read_data_sample_is_deterministic_and_finds_damage_it_reads() {
    let fx = Fx::new();
    let l = fx.layout();
    let n = l.packs.len();
    let half = n.div_ceil(2);

    let (code, v1) = fx.verify(&["--read-data=50%", "--seed", "7"]);
    assert_eq!(code, 0, "{v1}");
    let (_, v2) = fx.verify(&["--read-data=50%", "--seed", "7"]);
    assert_eq!(v1["seed"], 7);
    assert_eq!(v1["packs_read"].as_u64().unwrap() as usize, half);
    for k in ["packs_read", "bytes_read", "chunks_checked"] {
        assert_eq!(v1[k], v2[k], "{k}");
    }

    // Damage one chunk in every pack: the damaged packs reported are exactly the sample.
    let originals: Vec<(PathBuf, Vec<u8>)> =
        l.packs.keys().map(|p| pack_path(&fx.repo(), p)).map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect();
    for (p, es) in &l.packs {
        // Inside the first chunk whatever its size (a small tree chunk can be under 100 bytes).
        flip_byte(&pack_path(&fx.repo(), p), es[0].offset as u64 + es[0].stored_len as u64 / 2);
    }
    let sample = |seed: &str| -> BTreeSet<String> {
        let (code, v) = fx.verify(&["--read-data=50%", "--seed", seed]);
        assert_eq!(code, 3);
        let d = damaged(&v);
        assert_eq!(d.len(), half, "{v}");
        assert_eq!(v["packs_read"].as_u64().unwrap() as usize, half);
        for (p, _, chunks, _) in &d {
            let pack: PackId = p.parse().unwrap();
            assert_eq!(chunks, &vec![l.packs[&pack][0].id.to_hex()]);
        }
        d.into_iter().map(|d| d.0).collect()
    };
    let s7 = sample("7");
    assert_eq!(sample("7"), s7, "same seed, same sample");
    let others: Vec<_> = (0..8).map(|s| sample(&s.to_string())).collect();
    assert!(others.iter().any(|s| *s != s7), "the seed chooses the sample");
    for (p, b) in &originals {
        std::fs::write(p, b).unwrap();
    }
    assert_eq!(fx.verify(&["--read-data"]).0, 0);

    // A flip in a sampled pack is found by that sample; one outside it is not read, so not found.
    let all: BTreeSet<String> = l.packs.keys().map(|p| p.to_hex()).collect();
    let inside: PackId = s7.iter().next().unwrap().parse().unwrap();
    // Verify reads every snapshot's tree whatever the sample, so the unsampled pack damaged below
    // must not start with a tree chunk (which pack holds one varies from run to run).
    let tree_chunks: BTreeSet<_> = l.snapshots.iter().flat_map(|s| s.tree.iter().copied()).collect();
    let outside: PackId = all
        .difference(&s7)
        .map(|p| p.parse::<PackId>().unwrap())
        .find(|p| !tree_chunks.contains(&l.packs[p][0].id))
        .expect("a pack outside the sample without a tree chunk first");
    let e = l.packs[&inside].last().copied().unwrap();
    flip_byte(&pack_path(&fx.repo(), &inside), e.offset as u64 + e.stored_len as u64 - 1);
    let (code, v) = fx.verify(&["--read-data=50%", "--seed", "7"]);
    assert_eq!(code, 3);
    let d = damaged(&v);
    assert_eq!((d.len(), d[0].0.as_str(), &d[0].2), (1, inside.to_hex().as_str(), &vec![e.id.to_hex()]), "{v}");
    assert_eq!(d[0].3, l.affected_by(&[e.id].into_iter().collect()));

    let orig = originals.iter().find(|(p, _)| *p == pack_path(&fx.repo(), &inside)).unwrap();
    std::fs::write(&orig.0, &orig.1).unwrap();
    let e = l.packs[&outside][0];
    flip_byte(&pack_path(&fx.repo(), &outside), e.offset as u64 + e.stored_len as u64 / 2);
    assert_eq!(fx.verify(&["--read-data=50%", "--seed", "7"]).0, 0, "the damaged pack is not in the sample");
    let (code, v) = fx.verify(&["--read-data=100%"]);
    assert_eq!(code, 3);
    assert_eq!(damaged(&v).iter().map(|d| d.0.clone()).collect::<Vec<_>>(), vec![outside.to_hex()]);
}

#[test]
fn damaged_cache_file_is_rebuilt_not_fatal() {
    let fx = Fx::new();
    let l = fx.layout();
    let cache = fx.repo().join("cache/cache.sqlite");
    let real = std::fs::read(&cache).unwrap();
    let garbage = prng_bytes(9, 5000);
    let truncated = real[..real.len() / 2].to_vec();
    for (i, bytes) in
        [garbage, truncated, b"SQLite format 3\0 and then nothing useful".to_vec()].into_iter().enumerate()
    {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", cache.display()));
        }
        std::fs::write(&cache, bytes).unwrap();
        let r = fx.run(&["--json", "snapshots"]).ok();
        assert_eq!(r.json().as_array().unwrap().len(), 3);
        let (ty, dir) = TYPES[i];
        fx.restore_ok(&l.snap(ty).id, dir, &format!("{ty}-{i}"));
        let (code, v) = fx.verify(&[]);
        assert_eq!(code, 0, "{v}");
    }
    std::fs::write(&cache, b"not a database at all").unwrap();
    fx.run(&["repair", "index"]).ok();
    fx.restore_ok(&l.snap("gamma").id, "c", "gamma-after-repair");
}
