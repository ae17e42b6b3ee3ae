//! Encryption and authentication: round trips in both modes, passwords and key files, tampered,
//! swapped and transplanted objects, and what the storage side can see.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cairn::format::crypto::{Keys, ObjectKind};
use cairn::format::pack::Entry;
use cairn::id::{ChunkId, PackId, RepoId};
use serde_json::Value;

use crate::util::{
    assert_no_panic, assert_trees_equal, flip_byte, layout, open_repo, pack_path, prng_bytes, repo_files, tree_state,
    Env, Run, PASSWORD,
};

fn put(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Runs `cairn ARGS` with password `pw` (None: no password source at all).
fn run_pw(env: &Env, pw: Option<&str>, args: &[&str]) -> Run {
    let mut c = env.cmd();
    match pw {
        Some(p) => c.env("CAIRN_PASSWORD", p),
        None => c.env_remove("CAIRN_PASSWORD"),
    };
    c.args(args);
    let r = env.run_cmd(c);
    assert_no_panic(&r);
    r
}

fn run(env: &Env, args: &[&str]) -> Run {
    run_pw(env, Some(PASSWORD), args)
}

/// `init` (encrypted or not) with 1 MiB packs.
fn init(env: &Env, encrypted: bool) {
    if encrypted {
        run(env, &["init", "--pack-size-mib", "1"]).ok();
    } else {
        run(env, &["init", "--encryption", "none", "--pack-size-mib", "1"]).ok();
    }
}

/// Takes a snapshot of `path`; returns its id.
fn snapshot(env: &Env, ty: &str, path: &Path) -> String {
    let r = run(env, &["--json", "snapshot", "--type", ty, path.to_str().unwrap()]).ok();
    r.json()["id"].as_str().unwrap().to_string()
}

/// Restores `id` into a fresh directory and compares `dir` (a source directory) with it.
fn restore_same(env: &Env, pw: &str, id: &str, src_dir: &Path, name: &str) {
    let t = env.path().join("restores").join(name);
    run_pw(env, Some(pw), &["restore", id, "--target", t.to_str().unwrap()]).ok();
    assert_trees_equal(src_dir, &t.join(src_dir.file_name().unwrap()));
}

/// Restores `id` expecting failure; the restored `file` must be absent or a strict prefix of `orig`.
fn restore_fails(env: &Env, id: &str, file: &str, orig: &[u8], name: &str) -> Run {
    let t = env.path().join("restores").join(name);
    let r = run(env, &["restore", id, "--target", t.to_str().unwrap()]);
    assert_eq!(r.code, 1, "restore of damaged data must fail\n{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("error:"), "{}", r.stderr);
    if let Ok(got) = std::fs::read(t.join(file)) {
        assert!(got.len() < orig.len() && orig.starts_with(&got), "{file}: restored bytes differ from the original");
    }
    r
}

fn verify(env: &Env, args: &[&str]) -> (i32, Value) {
    let mut a = vec!["--json", "verify"];
    a.extend_from_slice(args);
    let r = run(env, &a);
    assert!(r.code == 0 || r.code == 3, "verify failed to run: {}\n{}", r.code, r.stderr);
    (r.code, r.json())
}

/// (pack, chunks, affected (snapshot, path)) of one damaged pack.
type Damage = (String, Vec<String>, Vec<(String, String)>);

fn damaged(v: &Value) -> Vec<Damage> {
    v["damaged_packs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let s = |x: &Value| x.as_str().unwrap().to_string();
            (
                s(&d["pack"]),
                d["chunks"].as_array().unwrap().iter().map(s).collect(),
                d["affected"].as_array().unwrap().iter().map(|a| (s(&a["snapshot"]), s(&a["path"]))).collect(),
            )
        })
        .collect()
}

fn problems(v: &Value) -> Vec<String> {
    v["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The repository's master key and id, through the library.
fn master_of(repo: &Path) -> (cairn::format::crypto::MasterKey, RepoId) {
    let config = cairn::read_config(repo).unwrap();
    let store = cairn::LocalStore::new(repo);
    let (mk, _) =
        cairn::unlock(&store, &config, &|| Ok(zeroize::Zeroizing::new(PASSWORD.as_bytes().to_vec()))).unwrap();
    (mk, config.id)
}

/// A repository with one snapshot of `dir` holding the given files.
struct One {
    env: Env,
    src: PathBuf,
    id: String,
}

fn one(encrypted: bool, files: &[(&str, Vec<u8>)]) -> One {
    let env = Env::new();
    init(&env, encrypted);
    let src = env.path().join("src").join("d");
    for (n, data) in files {
        put(&src, n, data);
    }
    let id = snapshot(&env, "files", &src);
    One { env, src, id }
}

#[test]
fn round_trip_with_and_without_encryption() {
    for encrypted in [true, false] {
        let env = Env::new();
        let r =
            run(&env, &if encrypted { vec!["--json", "init"] } else { vec!["--json", "init", "--encryption", "none"] })
                .ok();
        assert_eq!(r.json()["encryption"], if encrypted { "xchacha20poly1305" } else { "none" });
        let src = env.path().join("src").join("data");
        put(&src, "big.bin", &prng_bytes(11, 2_500_000));
        put(&src, "text/log.txt", &b"2026-01-01 GET /index.html 200\n".repeat(20_000));
        put(&src, "text/empty", b"");
        put(&src, "sub/deeper/x.bin", &prng_bytes(12, 70_001));
        std::os::unix::fs::symlink("../big.bin", src.join("sub/link")).unwrap();
        std::fs::set_permissions(src.join("text/log.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .unwrap();
        let id = snapshot(&env, "files", &src);
        restore_same(&env, PASSWORD, &id, &src, &format!("enc-{encrypted}"));
        let out = env.cmd().args(["cat", &id, "data/big.bin"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stdout == prng_bytes(11, 2_500_000), "cat returns the file byte for byte");
        let (code, _) = verify(&env, &["--read-data"]);
        assert_eq!(code, 0);
        // Unencrypted repositories have no keys, so a wrong password changes nothing.
        if !encrypted {
            run_pw(&env, Some("anything"), &["snapshots"]).ok();
            let r = run(&env, &["key", "list"]);
            assert_eq!(r.code, 1);
            assert!(r.stderr.contains("not encrypted"), "{}", r.stderr);
        }
    }
}

#[test]
fn wrong_password_exits_4_and_writes_nothing() {
    let o = one(true, &[("a.bin", prng_bytes(1, 300_000))]);
    let env = &o.env;
    let before = tree_state(&env.repo());
    let target = env.path().join("target");
    let pwfile = env.path().join("newpw");
    std::fs::write(&pwfile, "new one\n").unwrap();
    let key_id = repo_files(&env.repo(), "keys")[0].file_name().unwrap().to_str().unwrap().to_string();
    let cmds: Vec<Vec<&str>> = vec![
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["cat", "latest", "d/a.bin"],
        vec!["restore", "latest", "--target", target.to_str().unwrap()],
        vec!["verify"],
        vec!["verify", "--read-data"],
        vec!["snapshot", "--type", "files", o.src.to_str().unwrap()],
        vec!["repair", "index"],
        vec!["key", "list"],
        vec!["key", "add", "--new-password-file", pwfile.to_str().unwrap()],
        vec!["key", "passwd", "--new-password-file", pwfile.to_str().unwrap()],
        vec!["key", "remove", &key_id],
    ];
    for args in &cmds {
        let r = run_pw(env, Some("Correct horse"), args);
        assert_eq!(r.code, 4, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("wrong password"), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
        let r = run_pw(env, None, args);
        assert_eq!(r.code, 4, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("a password is needed"), "{args:?}: {}", r.stderr);
    }
    assert_eq!(tree_state(&env.repo()), before, "a refused password must leave the repository untouched");
    assert!(!target.exists());
    restore_same(env, PASSWORD, &o.id, &o.src, "right");
}

#[test]
fn damaged_key_file_is_reported_as_damaged_not_as_wrong_password() {
    let o = one(true, &[("a.bin", prng_bytes(1, 10_000))]);
    let env = &o.env;
    let key = repo_files(&env.repo(), "keys").remove(0);
    let good = std::fs::read(&key).unwrap();
    for garbage in [&b"{\"version\": 1, \"kdf\": \"argon2id\", garb"[..], b"", b"{\"version\":1}", b"\x00\xff not json"]
    {
        std::fs::write(&key, garbage).unwrap();
        for pw in [PASSWORD, "some other password"] {
            let r = run_pw(env, Some(pw), &["snapshots"]);
            assert_eq!(r.code, 1, "{}", r.stderr);
            assert!(r.stderr.contains("key file") && r.stderr.contains("damaged"), "{}", r.stderr);
            assert!(!r.stderr.contains("wrong password"), "{}", r.stderr);
        }
    }
    // A field that parses but is not hex.
    let mut kf: Value = serde_json::from_slice(&good).unwrap();
    kf["salt"] = Value::String("zz".repeat(32));
    std::fs::write(&key, serde_json::to_vec(&kf).unwrap()).unwrap();
    let r = run(env, &["snapshots"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("damaged"), "{}", r.stderr);

    // With a second, intact key file the repository still opens; the damaged one is named.
    std::fs::write(&key, &good).unwrap();
    let mut c = env.cmd();
    c.env("CAIRN_NEW_PASSWORD", "second password").args(["key", "add", "--label", "second"]);
    env.run_cmd(c).ok();
    std::fs::write(&key, b"{ not a key").unwrap();
    run_pw(env, Some("second password"), &["snapshots"]).ok();
    let r = run_pw(env, Some("second password"), &["--json", "key", "list"]).ok();
    let damaged_label =
        r.json().as_array().unwrap().iter().filter(|k| k["label"].as_str().unwrap().starts_with("DAMAGED")).count();
    assert_eq!(damaged_label, 1, "{}", r.stdout);
    let r = run_pw(env, Some("third password"), &["snapshots"]);
    assert_eq!(r.code, 4, "{}", r.stderr);

    // A damaged key file tried first (by name) must not stop an intact one from opening.
    std::fs::write(&key, &good).unwrap();
    let mut kf: Value = serde_json::from_slice(&good).unwrap();
    kf["nonce"] = Value::String("xy".repeat(24));
    std::fs::write(env.repo().join("keys").join("0".repeat(64)), serde_json::to_vec(&kf).unwrap()).unwrap();
    run(env, &["snapshots"]).ok();
    run_pw(env, Some("second password"), &["snapshots"]).ok();
}

#[test]
fn tampered_ciphertext_is_detected_by_verify_and_restore() {
    let big = prng_bytes(21, 2_000_000);
    let o = one(true, &[("big.bin", big.clone()), ("other.txt", b"untouched\n".to_vec())]);
    let env = &o.env;
    let l = layout(&env.repo());
    let chunks = &l.snapshots[0].files["d/big.bin"];
    assert!(chunks.len() >= 3);
    let victim = chunks[chunks.len() / 2];
    let pack = l.pack_of(&victim);
    let e = l.packs[&pack].iter().find(|e| e.id == victim).copied().unwrap();
    flip_byte(&pack_path(&env.repo(), &pack), e.offset as u64 + e.stored_len as u64 / 2);

    let (code, v) = verify(env, &["--read-data"]);
    assert_eq!(code, 3);
    assert_eq!(
        damaged(&v),
        vec![(pack.to_hex(), vec![victim.to_hex()], vec![(o.id.clone(), "d/big.bin".to_string())])]
    );
    assert!(v["damaged_packs"][0]["problem"].as_str().unwrap().contains("1 of"), "{v}");

    let r = restore_fails(env, &o.id, "d/big.bin", &big, "tampered");
    assert!(r.stderr.contains("d/big.bin") && r.stderr.contains("authentication failed"), "{}", r.stderr);
    assert_eq!(std::fs::read(env.path().join("restores/tampered/d/other.txt")).unwrap(), b"untouched\n");

    // `cat` stops at the bad chunk: what reached stdout is a strict prefix of the file.
    let out = {
        let mut c = env.cmd();
        c.args(["cat", &o.id, "d/big.bin"]);
        c.output().unwrap()
    };
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication failed"));
    assert!(out.stdout.len() < big.len() && big.starts_with(&out.stdout));
}

/// The entry of chunk `c`.
fn entry(l: &crate::util::Layout, c: &ChunkId) -> (PackId, Entry) {
    let p = l.pack_of(c);
    (p, l.packs[&p].iter().find(|e| e.id == *c).copied().unwrap())
}

#[test]
fn chunk_copied_over_another_in_a_different_pack_is_detected() {
    for encrypted in [true, false] {
        let env = Env::new();
        init(&env, encrypted);
        // Files below the minimum chunk size are one chunk each; equal sizes of random data give
        // equal sealed lengths.
        let x = prng_bytes(31, 20_000);
        let y = prng_bytes(32, 20_000);
        put(&env.path().join("s1"), "x.bin", &x);
        put(&env.path().join("s2"), "y.bin", &y);
        let id1 = snapshot(&env, "one", &env.path().join("s1"));
        let id2 = snapshot(&env, "two", &env.path().join("s2"));
        let l = layout(&env.repo());
        let (px, ex) = entry(&l, &l.snap("one").files["s1/x.bin"][0]);
        let (py, ey) = entry(&l, &l.snap("two").files["s2/y.bin"][0]);
        assert_ne!(px, py);
        assert_eq!(ex.stored_len, ey.stored_len);
        let xb = std::fs::read(pack_path(&env.repo(), &px)).unwrap();
        let mut yb = std::fs::read(pack_path(&env.repo(), &py)).unwrap();
        yb[ey.offset as usize..(ey.offset + ey.stored_len) as usize]
            .copy_from_slice(&xb[ex.offset as usize..(ex.offset + ex.stored_len) as usize]);
        std::fs::write(pack_path(&env.repo(), &py), yb).unwrap();

        let (code, v) = verify(&env, &["--read-data"]);
        assert_eq!(code, 3, "encrypted={encrypted}");
        assert_eq!(damaged(&v), vec![(py.to_hex(), vec![ey.id.to_hex()], vec![(id2.clone(), "s2/y.bin".to_string())])]);
        let r = restore_fails(&env, &id2, "s2/y.bin", &y, &format!("two-{encrypted}"));
        let why = if encrypted { "authentication failed" } else { "integrity tag mismatch" };
        assert!(r.stderr.contains(why), "{}", r.stderr);
        restore_same(&env, PASSWORD, &id1, &env.path().join("s1"), &format!("one-{encrypted}"));
    }
}

#[test]
fn chunks_swapped_within_a_pack_are_detected() {
    let p_data = prng_bytes(41, 20_000);
    let q_data = prng_bytes(42, 20_000);
    let o = one(true, &[("p.bin", p_data.clone()), ("q.bin", q_data.clone())]);
    let env = &o.env;
    let l = layout(&env.repo());
    let (pack, ep) = entry(&l, &l.snapshots[0].files["d/p.bin"][0]);
    let (pack_q, eq) = entry(&l, &l.snapshots[0].files["d/q.bin"][0]);
    assert_eq!(pack, pack_q);
    assert_eq!(ep.stored_len, eq.stored_len);
    let path = pack_path(&env.repo(), &pack);
    let orig = std::fs::read(&path).unwrap();
    let span = |e: &Entry| e.offset as usize..(e.offset + e.stored_len) as usize;
    let mut swapped = orig.clone();
    swapped[span(&ep)].copy_from_slice(&orig[span(&eq)]);
    swapped[span(&eq)].copy_from_slice(&orig[span(&ep)]);

    // 1. Bytes swapped, trailer untouched: both chunks fail to open (the id is bound in).
    std::fs::write(&path, &swapped).unwrap();
    let (code, v) = verify(env, &["--read-data"]);
    assert_eq!(code, 3);
    let d = damaged(&v);
    assert_eq!(d.len(), 1, "{v}");
    assert_eq!(d[0].0, pack.to_hex());
    assert_eq!(d[0].1, sorted(vec![ep.id.to_hex(), eq.id.to_hex()]));
    assert_eq!(d[0].2, vec![(o.id.clone(), "d/p.bin".to_string()), (o.id.clone(), "d/q.bin".to_string())]);
    restore_fails(env, &o.id, "d/p.bin", &p_data, "swap1");
    assert!(std::fs::read(env.path().join("restores/swap1/d/q.bin"))
        .map_or(true, |b| q_data.starts_with(&b) && b.len() < q_data.len()));

    // 2. Bytes swapped and the trailer rewritten to match (a self-consistent pack): the index
    //    still places each chunk where the other now is, so the structure check and restore refuse.
    let r = open_repo(&env.repo());
    let mut entries = cairn::format::pack::parse_pack(&orig, r.keys(), &|| "pack".into()).unwrap();
    let (ip, iq) =
        (entries.iter().position(|e| e.id == ep.id).unwrap(), entries.iter().position(|e| e.id == eq.id).unwrap());
    let (idp, idq) = (entries[ip].id, entries[iq].id);
    entries[ip].id = idq;
    entries[iq].id = idp;
    let plain = cairn::format::pack::encode_trailer(&entries);
    let sealed = r.keys().seal(ObjectKind::PackTrailer, &[0; 32], &plain);
    drop(r);
    let body_end =
        orig.len() - 12 - u32::from_le_bytes(orig[orig.len() - 12..orig.len() - 8].try_into().unwrap()) as usize;
    let mut forged = swapped[..body_end].to_vec();
    forged.extend_from_slice(&sealed);
    forged.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    forged.extend_from_slice(b"CAIRNEND");
    assert_eq!(forged.len(), orig.len());
    std::fs::write(&path, &forged).unwrap();
    {
        let r = open_repo(&env.repo());
        let parsed = cairn::format::pack::parse_pack(&forged, r.keys(), &|| "forged".into()).unwrap();
        assert_eq!(parsed, entries, "the forged pack is self-consistent");
    }
    let (code, v) = verify(env, &[]);
    assert_eq!(code, 3);
    let dp = &v["damaged_packs"][0];
    assert_eq!(dp["pack"], pack.to_hex());
    assert!(dp["problem"].as_str().unwrap().contains("trailer disagrees with the index on 2 chunks"), "{v}");
    restore_fails(env, &o.id, "d/p.bin", &p_data, "swap2");

    // repair index trusts the (authentic) trailer: the data is all there, so restores are
    // byte-identical again, and verify --read-data still notices the pack no longer matches its name.
    run(env, &["repair", "index"]).ok();
    restore_same(env, PASSWORD, &o.id, &o.src, "after-repair");
    let (code, v) = verify(env, &["--read-data"]);
    assert_eq!(code, 3);
    assert!(damaged(&v).is_empty(), "{v}");
    let ps = problems(&v);
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert!(ps[0].contains(&pack.to_hex()) && ps[0].contains("does not match its name"), "{ps:?}");
}

/// Two encrypted repositories with the same password, A and B, each with one snapshot.
fn two_repos() -> (One, One) {
    let a = one(true, &[("a.bin", prng_bytes(51, 1_500_000)), ("same.bin", prng_bytes(50, 300_000))]);
    let b = one(true, &[("b.bin", prng_bytes(52, 1_500_000)), ("same.bin", prng_bytes(50, 300_000))]);
    (a, b)
}

#[test]
fn objects_from_another_repository_are_rejected() {
    let (a, b) = two_repos();
    let (mk_b, id_b) = master_of(&b.env.repo());
    let (_, id_a) = master_of(&a.env.repo());
    assert_ne!(id_a, id_b);
    // B's own key with A's repository id: only the bound repository id differs.
    let keys_b_as_a = Keys::derive(&mk_b, id_a, true);
    let lb = layout(&b.env.repo());
    let la = layout(&a.env.repo());

    // 1. A pack trailer re-sealed for repository A (same key, same content) in B's pack.
    let pack = *lb.packs.keys().next().unwrap();
    let path = pack_path(&b.env.repo(), &pack);
    let orig = std::fs::read(&path).unwrap();
    let n = orig.len();
    let len = u32::from_le_bytes(orig[n - 12..n - 8].try_into().unwrap()) as usize;
    let plain = {
        let r = open_repo(&b.env.repo());
        r.keys().open(ObjectKind::PackTrailer, &[0; 32], &orig[n - 12 - len..n - 12], &|| "t".into()).unwrap()
    };
    let resealed = keys_b_as_a.seal(ObjectKind::PackTrailer, &[0; 32], &plain);
    assert_eq!(resealed.len(), len);
    let mut forged = orig.clone();
    forged[n - 12 - len..n - 12].copy_from_slice(&resealed);
    std::fs::write(&path, &forged).unwrap();
    let (code, v) = verify(&b.env, &[]);
    assert_eq!(code, 3);
    let dp = &v["damaged_packs"][0];
    assert_eq!(dp["pack"], pack.to_hex());
    assert!(dp["problem"].as_str().unwrap().contains("authentication failed"), "{v}");
    std::fs::write(&path, &orig).unwrap();
    assert_eq!(verify(&b.env, &["--read-data"]).0, 0);

    // 2. A chunk re-sealed for repository A (same key, id and plaintext) in place of B's chunk.
    let c = lb.snapshots[0].files["d/b.bin"][0];
    let (pack, e) = entry(&lb, &c);
    let path = pack_path(&b.env.repo(), &pack);
    let mut bytes = std::fs::read(&path).unwrap();
    let span = e.offset as usize..(e.offset + e.stored_len) as usize;
    let payload = {
        let r = open_repo(&b.env.repo());
        r.keys().open(ObjectKind::Chunk, &c.0, &bytes[span.clone()], &|| "c".into()).unwrap()
    };
    let resealed = keys_b_as_a.seal(ObjectKind::Chunk, &c.0, &payload);
    assert_eq!(resealed.len(), span.len());
    let orig = bytes.clone();
    bytes[span].copy_from_slice(&resealed);
    std::fs::write(&path, &bytes).unwrap();
    let (code, v) = verify(&b.env, &["--read-data"]);
    assert_eq!(code, 3);
    assert_eq!(damaged(&v), vec![(pack.to_hex(), vec![c.to_hex()], vec![(b.id.clone(), "d/b.bin".to_string())])]);
    let r = restore_fails(&b.env, &b.id, "d/b.bin", &prng_bytes(52, 1_500_000), "resealed-chunk");
    assert!(r.stderr.contains("authentication failed"), "{}", r.stderr);
    std::fs::write(&path, &orig).unwrap();

    // 3. A whole pack of A dropped into B: not indexed (a note), and repair index refuses to
    //    adopt it because its trailer does not authenticate in B.
    let foreign = *la.packs.keys().next().unwrap();
    let dst = pack_path(&b.env.repo(), &foreign);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(pack_path(&a.env.repo(), &foreign), &dst).unwrap();
    let (code, v) = verify(&b.env, &["--read-data"]);
    assert_eq!(code, 0, "{v}");
    assert!(v["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains(&foreign.to_hex())), "{v}");
    let r = run(&b.env, &["--json", "repair", "index"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let bad = r.json()["unreadable_packs"].clone();
    assert_eq!(bad.as_array().unwrap().len(), 1, "{bad}");
    assert_eq!(bad[0][0], foreign.to_hex());
    assert!(bad[0][1].as_str().unwrap().contains("authentication failed"), "{bad}");
    restore_same(&b.env, PASSWORD, &b.id, &b.src, "b-after-repair");
    assert_eq!(verify(&b.env, &["--read-data"]).0, 0);
}

#[test]
fn index_file_from_another_repository_is_detected() {
    let (a, b) = two_repos();
    let lb = layout(&b.env.repo());
    let b_index = repo_files(&b.env.repo(), "index");
    assert_eq!(b_index.len(), 1);

    // 1. A's index file dropped into B's index/ under its own (content-hash) name.
    let a_index = repo_files(&a.env.repo(), "index").remove(0);
    let name = a_index.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::copy(&a_index, b.env.repo().join("index").join(&name)).unwrap();
    let (code, v) = verify(&b.env, &[]);
    assert_eq!(code, 3);
    assert!(damaged(&v).is_empty(), "{v}");
    let ps = problems(&v);
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert!(ps[0].starts_with(&format!("index file {name}")) && ps[0].contains("authentication failed"), "{ps:?}");
    // B's data is unaffected, and repair index drops the foreign file.
    restore_same(&b.env, PASSWORD, &b.id, &b.src, "with-foreign-index");
    run(&b.env, &["repair", "index"]).ok();
    assert!(!b.env.repo().join("index").join(&name).exists());
    assert_eq!(verify(&b.env, &["--read-data"]).0, 0);

    // 2. B's own index content re-sealed for repository A (same key), named by its hash.
    let (mk_b, _) = master_of(&b.env.repo());
    let (_, id_a) = master_of(&a.env.repo());
    let records: Vec<cairn::format::index::PackRecord> = lb
        .packs
        .iter()
        .map(|(p, es)| cairn::format::index::PackRecord {
            id: *p,
            size: std::fs::metadata(pack_path(&b.env.repo(), p)).unwrap().len(),
            entries: es.clone(),
        })
        .collect();
    let sealed = cairn::format::index::seal(&Keys::derive(&mk_b, id_a, true), &records);
    let name = blake3::hash(&sealed).to_hex().to_string();
    std::fs::write(b.env.repo().join("index").join(&name), &sealed).unwrap();
    let (code, v) = verify(&b.env, &[]);
    assert_eq!(code, 3);
    let ps = problems(&v);
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert!(ps[0].starts_with(&format!("index file {name}")) && ps[0].contains("authentication failed"), "{ps:?}");
    // The same records sealed for B itself are accepted: the repository id made the difference.
    std::fs::remove_file(b.env.repo().join("index").join(&name)).unwrap();
    let sealed = cairn::format::index::seal(&Keys::derive(&mk_b, master_of(&b.env.repo()).1, true), &records);
    std::fs::write(b.env.repo().join("index").join(blake3::hash(&sealed).to_hex().as_str()), &sealed).unwrap();
    assert_eq!(verify(&b.env, &[]).0, 0);

    // 3. The same for unencrypted repositories: an index file from another one fails its tag.
    let pa = one(false, &[("a.bin", prng_bytes(53, 100_000))]);
    let pb = one(false, &[("b.bin", prng_bytes(54, 100_000))]);
    let src = repo_files(&pa.env.repo(), "index").remove(0);
    let name = src.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::copy(&src, pb.env.repo().join("index").join(&name)).unwrap();
    let (code, v) = verify(&pb.env, &[]);
    assert_eq!(code, 3);
    let ps = problems(&v);
    assert!(
        ps.len() == 1 && ps[0].starts_with(&format!("index file {name}")) && ps[0].contains("integrity tag mismatch"),
        "{ps:?}"
    );
}

#[test]
fn key_add_remove_passwd_keep_snapshots_readable() {
    let o = one(true, &[("a.bin", prng_bytes(61, 400_000)), ("b.txt", b"hello\n".to_vec())]);
    let env = &o.env;
    let keys = |pw: &str| -> Vec<Value> {
        run_pw(env, Some(pw), &["--json", "key", "list"]).ok().json().as_array().unwrap().clone()
    };
    let current = |pw: &str| -> String {
        let ks = keys(pw);
        let cur: Vec<_> = ks.iter().filter(|k| k["current"] == true).collect();
        assert_eq!(cur.len(), 1, "{ks:?}");
        cur[0]["id"].as_str().unwrap().to_string()
    };
    let initial = current(PASSWORD);
    assert_eq!(keys(PASSWORD).len(), 1);
    assert_eq!(keys(PASSWORD)[0]["label"], "initial");

    // Add a second key (new password from the environment).
    let mut c = env.cmd();
    c.env("CAIRN_NEW_PASSWORD", "second pw").args(["key", "add", "--label", "laptop"]);
    env.run_cmd(c).ok();
    assert_eq!(keys("second pw").len(), 2);
    let second = current("second pw");
    assert_ne!(second, initial);
    assert_eq!(current(PASSWORD), initial);
    restore_same(env, "second pw", &o.id, &o.src, "second");
    // Both passwords can write: a snapshot taken with the second one is readable with the first.
    let src2 = env.path().join("src").join("e");
    put(&src2, "new.txt", b"added later\n");
    put(&src2, "a.bin", &prng_bytes(61, 400_000));
    let mut c = env.cmd();
    c.env("CAIRN_PASSWORD", "second pw").args(["--json", "snapshot", "--type", "files", src2.to_str().unwrap()]);
    let r = env.run_cmd(c).ok();
    let id2 = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["stats"]["new_chunks"], 2, "only new.txt and the tree are new: a.bin deduplicates across keys");
    restore_same(env, PASSWORD, &id2, &src2, "first-reads-second");

    // The key in use cannot be removed, whichever it is.
    for (pw, id) in [(PASSWORD, &initial), ("second pw", &second)] {
        let r = run_pw(env, Some(pw), &["key", "remove", &id[..12]]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(r.stderr.contains("refusing"), "{}", r.stderr);
    }
    assert_eq!(repo_files(&env.repo(), "keys").len(), 2);

    // Remove the initial key with the second password: the first password stops working.
    run_pw(env, Some("second pw"), &["key", "remove", &initial[..12]]).ok();
    assert_eq!(run_pw(env, Some(PASSWORD), &["snapshots"]).code, 4);
    assert_eq!(keys("second pw").len(), 1);
    // The last key cannot be removed.
    let r = run_pw(env, Some("second pw"), &["key", "remove", &second]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("refusing"), "{}", r.stderr);
    assert_eq!(repo_files(&env.repo(), "keys").len(), 1);

    // passwd (new password from a file): old password refused, new one reads everything.
    let pwfile = env.path().join("pw4");
    std::fs::write(&pwfile, "fourth pw\n").unwrap();
    run_pw(env, Some("second pw"), &["key", "passwd", "--new-password-file", pwfile.to_str().unwrap()]).ok();
    let r = run_pw(env, Some("second pw"), &["snapshots"]);
    assert_eq!(r.code, 4);
    assert!(r.stderr.contains("wrong password"), "{}", r.stderr);
    let ks = keys("fourth pw");
    assert_eq!(ks.len(), 1);
    assert_eq!(ks[0]["label"], "laptop", "passwd keeps the label");
    assert_ne!(ks[0]["id"].as_str().unwrap(), second);
    let listed = run_pw(env, Some("fourth pw"), &["--json", "snapshots"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    restore_same(env, "fourth pw", &o.id, &o.src, "fourth-1");
    restore_same(env, "fourth pw", &id2, &src2, "fourth-2");
    run_pw(env, Some("fourth pw"), &["verify", "--read-data"]).ok();
}

const MARKER: &[u8] = b"CAIRN-PLAINTEXT-MARKER-7f3a9c1e";
const SECRET_NAME: &str = "quarterly-secret-Zq7x.dat";

/// Files under the repository the storage side holds (everything but cache/ and tmp/) that
/// contain `needle`.
fn files_containing(repo: &Path, needle: &[u8]) -> Vec<PathBuf> {
    crate::util::walk(repo)
        .into_iter()
        .filter(|p| p.is_file())
        .filter(|p| {
            let rel = p.strip_prefix(repo).unwrap();
            !(rel.starts_with("cache") || rel.starts_with("tmp"))
        })
        .filter(|p| std::fs::read(p).unwrap().windows(needle.len()).any(|w| w == needle))
        .collect()
}

#[test]
fn storage_never_sees_plaintext_of_encrypted_repositories() {
    for encrypted in [true, false] {
        let mut content = prng_bytes(71, 5000);
        content.extend_from_slice(MARKER);
        content.extend_from_slice(&prng_bytes(72, 5000));
        let mut text = b"a log line that compresses well\n".repeat(1000);
        text.extend_from_slice(MARKER);
        let o = one(encrypted, &[(SECRET_NAME, content), ("notes.log", text)]);
        let repo = o.env.repo();
        assert!(!repo_files(&repo, "packs").is_empty());
        let with_marker = files_containing(&repo, MARKER);
        let with_name = files_containing(&repo, SECRET_NAME.as_bytes());
        if encrypted {
            assert!(with_marker.is_empty(), "plaintext visible in {with_marker:?}");
            assert!(with_name.is_empty(), "file name visible in {with_name:?}");
        } else {
            // The same grep finds the plaintext when nothing is encrypted: the check has teeth.
            assert!(with_marker.iter().any(|p| p.starts_with(repo.join("packs"))), "{with_marker:?}");
        }
    }
}

#[test]
fn chunk_ids_are_keyed_per_repository() {
    let data = prng_bytes(81, 1_500_000);
    for encrypted in [true, false] {
        let a = one(encrypted, &[("same.bin", data.clone())]);
        let b = one(encrypted, &[("same.bin", data.clone())]);
        let ids = |repo: &Path| -> BTreeSet<ChunkId> {
            let r = open_repo(repo);
            let mut out = BTreeSet::new();
            for pack in cairn::StoreExt::pack_ids(r.store()).unwrap() {
                let name = pack.to_hex();
                let path = r.store().path(cairn::FileKind::Pack, &name);
                let (entries, _) = cairn::read_trailer(&path, r.keys(), &pack).unwrap();
                for e in entries {
                    // Keyed: the id is not the plain BLAKE3 of the chunk.
                    let loc = r.cache().lookup(&e.id).unwrap().unwrap();
                    let plain = r.chunk_reader().read(&e.id, &loc).unwrap();
                    assert_ne!(*blake3::hash(&plain).as_bytes(), e.id.0);
                    out.insert(e.id);
                }
            }
            out
        };
        let (ia, ib) = (ids(&a.env.repo()), ids(&b.env.repo()));
        assert!(ia.len() >= 3 && ib.len() >= 3);
        assert!(ia.is_disjoint(&ib), "encrypted={encrypted}: repositories share chunk ids");
        restore_same(&a.env, PASSWORD, &a.id, &a.src, "a");
        restore_same(&b.env, PASSWORD, &b.id, &b.src, "b");
    }
}

#[test]
fn key_file_from_another_repository_is_refused_without_locking_out_the_owner() {
    let (a, b) = two_repos();
    let foreign = repo_files(&a.env.repo(), "keys").remove(0);
    let own = repo_files(&b.env.repo(), "keys").remove(0);
    let own_bytes = std::fs::read(&own).unwrap();
    // Alone, A's key file (same password) opens A's master key, which B refuses.
    std::fs::remove_file(&own).unwrap();
    let planted = b.env.repo().join("keys").join("0".repeat(64));
    std::fs::copy(&foreign, &planted).unwrap();
    let r = run(&b.env, &["snapshots"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("belongs to another repository"), "{}", r.stderr);
    // Next to B's own key file (tried after it, by name), the foreign one must not lock B's owner
    // out: B's own key opens B.
    std::fs::write(&own, &own_bytes).unwrap();
    let r = run(&b.env, &["--json", "snapshots"]);
    assert_eq!(r.code, 0, "a planted foreign key file locks the repository out:\n{}", r.stderr);
    restore_same(&b.env, PASSWORD, &b.id, &b.src, "b");
}

#[test]
fn no_environment_variable_lowers_the_key_derivation() {
    let m_costs = |env: &Env| -> Vec<u64> {
        let r = run(env, &["--json", "key", "list"]).ok();
        r.json().as_array().unwrap().iter().map(|k| k["m_cost_kib"].as_u64().unwrap()).collect()
    };
    // The hook older versions honoured is ignored: the real defaults are written.
    let env = Env::new();
    let mut c = env.cmd_real_kdf();
    c.env("CAIRN_KDF_MEMORY_KIB", "1024").arg("init");
    env.run_cmd(c).ok();
    assert_eq!(m_costs(&env), vec![32768]);
    let kf: Value = serde_json::from_slice(&std::fs::read(&repo_files(&env.repo(), "keys")[0]).unwrap()).unwrap();
    assert_eq!((kf["params"]["t_cost"].as_u64(), kf["params"]["p_cost"].as_u64()), (Some(4), Some(1)));

    // Only the explicit option lowers it, never below its floor, and the cost is recorded.
    let env = Env::new();
    let mut c = env.cmd_real_kdf();
    c.args(["--kdf-memory", "1023", "init"]);
    let r = env.run_cmd(c).code(2);
    assert!(r.stderr.contains("1024"), "{}", r.stderr);
    assert!(!env.repo().exists(), "a refused cost must not create the repository");
    let mut c = env.cmd_real_kdf();
    c.args(["init", "--kdf-memory", "2048"]);
    env.run_cmd(c).ok();
    assert_eq!(m_costs(&env), vec![2048]);
    // key add takes the defaults without it, whatever the environment says.
    let mut c = env.cmd_real_kdf();
    c.env("CAIRN_NEW_PASSWORD", "second").env("CAIRN_KDF_MEMORY_KIB", "1024").args(["key", "add"]);
    env.run_cmd(c).ok();
    let mut costs = m_costs(&env);
    costs.sort();
    assert_eq!(costs, vec![2048, 32768]);
}
