//! The fuzz targets on stable Rust: every `cairn::fuzzing` target runs over every file of
//! `fuzz/corpus/<target>/`, then over 2000 deterministic mutations of each file (a smoke fuzz;
//! the real one is cargo-fuzz, see fuzz/README.md). The mutation run happens in a child process
//! per target, so an abort (say, an allocation of a length read from the input) is reported as a
//! failure with the input that caused it instead of killing the whole test binary.
//!
//! `CAIRN_BLESS_CORPUS=1 cargo test --test integration fuzz_corpus::` rewrites the seed files
//! this module derives from the format vectors (other files in those directories are kept).

use std::path::{Path, PathBuf};

use cairn::format::crypto::ObjectKind;
use cairn::format::keyfile::KdfParams;
use cairn::format::manifest::{Node, NodeKind, Snapshot};
use cairn::fuzzing::{test_keys, SplitMix64, TARGETS};

use crate::format_vectors as fv;

/// Mutations per corpus file.
const MUTATIONS: u32 = 2000;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The corpus files of `target`, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn target_fn(name: &str) -> fn(&[u8]) {
    TARGETS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no fuzz target {name}")).1
}

// ---------------------------------------------------------------------------------------------
// Seeds

fn with(mut v: Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    f(&mut v);
    v
}

fn cut(v: &[u8], n: usize) -> Vec<u8> {
    v[..n.min(v.len())].to_vec()
}

/// A minimal snapshot (every option empty).
fn small_snapshot() -> Snapshot {
    Snapshot {
        time: "2026-01-01T00:00:00+00:00".into(),
        backup_type: "config".into(),
        kind: Default::default(),
        description: None,
        ticket: None,
        creator: None,
        purpose: None,
        host: "h".into(),
        paths: vec![],
        labels: Default::default(),
        stats: Default::default(),
        tree: vec![],
        tree_len: 0,
        parent: None,
        errors: vec![],
        source: Default::default(),
        program: "cairn".into(),
        seq: 0,
    }
}

/// Seed inputs per target: valid encodings from the code, then damaged variants.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut s: Vec<(&'static str, &'static str, Vec<u8>)> = Vec::new();
    let ku = test_keys(false);
    let ke = test_keys(true);

    // pack_trailer: u32le body_end || trailer plaintext; and whole packs for parse_tail.
    let (pu, pe) = fv::vector_packs();
    let chunks = fv::pack_chunks();
    let (_, entries, trailer) = fv::build_pack(&ku, &chunks);
    let body_end = entries.last().map(|e| e.offset + e.stored_len).unwrap();
    let t = [&body_end.to_le_bytes()[..], &trailer].concat();
    s.push(("pack_trailer", "trailer-3-entries", t.clone()));
    s.push(("pack_trailer", "trailer-empty", [&8u32.to_le_bytes()[..], &[1, 0, 0, 0, 0]].concat()));
    s.push(("pack_trailer", "trailer-truncated", cut(&t, t.len() - 7)));
    s.push(("pack_trailer", "trailer-version-2", with(t.clone(), |v| v[4] = 2)));
    s.push((
        "pack_trailer",
        "trailer-count-max",
        with(t.clone(), |v| v[5..9].copy_from_slice(&u32::MAX.to_le_bytes())),
    ));
    s.push(("pack_trailer", "trailer-gap", with(t.clone(), |v| v[4 + 5 + 32] += 1)));
    s.push(("pack_trailer", "trailer-wrong-end", with(t.clone(), |v| v[0] += 1)));
    // Version 3 (zstd body): delta.json's trailer, and its declared length at the maximum.
    let dv: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fv::vectors_dir().join("delta.json")).unwrap()).unwrap();
    let d_end: u32 =
        dv["entries"].as_array().unwrap().iter().map(|e| e["stored_len"].as_u64().unwrap() as u32).sum::<u32>() + 8;
    let t3 = [&d_end.to_le_bytes()[..], &fv::unh(&dv["trailer_plaintext_v3"])].concat();
    s.push(("pack_trailer", "trailer-version-3", t3.clone()));
    s.push((
        "pack_trailer",
        "trailer-version-3-length-max",
        with(t3, |v| v[5..9].copy_from_slice(&u32::MAX.to_le_bytes())),
    ));
    s.push(("pack_trailer", "pack-tail", pu.clone()));
    s.push((
        "pack_trailer",
        "pack-tail-length-max",
        with(pu.clone(), |v| {
            let n = v.len();
            v[n - 12..n - 8].copy_from_slice(&u32::MAX.to_le_bytes())
        }),
    ));

    // pack
    s.push(("pack", "unencrypted", pu.clone()));
    s.push(("pack", "encrypted", pe.clone()));
    s.push(("pack", "empty-unencrypted", {
        let t = ku.seal(ObjectKind::PackTrailer, &[0; 32], &[1, 0, 0, 0, 0]);
        [&b"CAIRNPK\x01"[..], &t, &(t.len() as u32).to_le_bytes(), b"CAIRNEND"].concat()
    }));
    s.push(("pack", "truncated", cut(&pu, pu.len() - 1)));
    s.push(("pack", "magic-only", b"CAIRNPK\x01".to_vec()));
    s.push(("pack", "chunk-bit-flipped", with(pu.clone(), |v| v[20] ^= 4)));
    s.push((
        "pack",
        "encrypted-trailer-flipped",
        with(pe.clone(), |v| {
            let n = v.len();
            v[n - 20] ^= 1
        }),
    ));
    s.push((
        "pack",
        "trailer-length-small",
        with(pu.clone(), |v| {
            let n = v.len();
            v[n - 12..n - 8].copy_from_slice(&3u32.to_le_bytes())
        }),
    ));

    // index_file
    let (iu, ie) = fv::vector_index_files();
    let ip = ku.open(ObjectKind::Index, &[0; 32], &iu, &|| "seed".into()).unwrap();
    s.push(("index_file", "unencrypted", iu.clone()));
    s.push(("index_file", "encrypted", ie.clone()));
    s.push(("index_file", "plaintext", ip.clone()));
    s.push(("index_file", "plaintext-empty", vec![1, 0, 0, 0, 0]));
    s.push(("index_file", "plaintext-truncated", cut(&ip, ip.len() - 30)));
    s.push((
        "index_file",
        "plaintext-pack-count-max",
        with(ip.clone(), |v| v[1..5].copy_from_slice(&u32::MAX.to_le_bytes())),
    ));
    s.push((
        "index_file",
        "plaintext-entry-count-max",
        with(ip.clone(), |v| v[45..49].copy_from_slice(&u32::MAX.to_le_bytes())),
    ));
    s.push(("index_file", "plaintext-trailing-byte", with(ip.clone(), |v| v.push(0))));
    s.push(("index_file", "plaintext-version-3", fv::unh(&dv["index_plaintext_v3"])));
    s.push(("index_file", "unencrypted-tag-flipped", with(iu.clone(), |v| *v.last_mut().unwrap() ^= 1)));

    // snapshot
    let (su, se) = fv::vector_snapshot_files();
    let sp = fv::vector_snapshot().encode();
    let small = small_snapshot().encode();
    s.push(("snapshot", "unencrypted", su.clone()));
    s.push(("snapshot", "encrypted", se));
    s.push(("snapshot", "plaintext", sp.clone()));
    s.push(("snapshot", "plaintext-small", small.clone()));
    s.push(("snapshot", "small-unencrypted", small_snapshot().seal(&ku)));
    s.push(("snapshot", "plaintext-truncated", cut(&sp, sp.len() / 2)));
    s.push(("snapshot", "plaintext-version-2", with(sp.clone(), |v| v[0] = 2)));
    s.push(("snapshot", "plaintext-trailing-byte", with(small.clone(), |v| v.push(0))));
    s.push((
        "snapshot",
        "plaintext-bad-kind",
        with(small.clone(), |v| {
            let i = 1 + 1 + v[1] as usize + 1 + v[2 + v[1] as usize] as usize;
            v[i] = 7
        }),
    ));
    s.push(("snapshot", "plaintext-bad-utf8", with(small.clone(), |v| v[2] = 0xff)));
    s.push(("snapshot", "empty", vec![]));

    // tree_record
    let stream = fv::tree_stream();
    let nodes = fv::tree_nodes();
    let mut one = Vec::new();
    nodes[2].encode_record(&mut one);
    s.push(("tree_record", "stream", stream.clone()));
    s.push(("tree_record", "one-record", one.clone()));
    s.push(("tree_record", "record-body", one[4..].to_vec()));
    s.push(("tree_record", "stream-truncated", cut(&stream, stream.len() - 5)));
    s.push(("tree_record", "length-max", with(one.clone(), |v| v[..4].copy_from_slice(&u32::MAX.to_le_bytes()))));
    s.push(("tree_record", "length-short", with(one.clone(), |v| v[0] -= 1)));
    s.push((
        "tree_record",
        "bad-kind",
        with(one.clone(), |v| {
            let i = 4 + 1 + v[4] as usize;
            v[i] = 9
        }),
    ));
    let mut symlink = Vec::new();
    Node { kind: NodeKind::Symlink, target: b"../../etc".to_vec(), ..nodes[0].clone() }.encode_record(&mut symlink);
    s.push(("tree_record", "symlink", symlink));
    s.push(("tree_record", "empty", vec![]));

    // keyfile
    let (kf, _) = fv::vector_keyfile();
    let tiny = fv::keyfile_with(KdfParams { m_cost_kib: 8, t_cost: 1, p_cost: 1 });
    let text = String::from_utf8(kf.clone()).unwrap();
    s.push(("keyfile", "vector", kf.clone()));
    s.push(("keyfile", "tiny-cost", tiny.clone()));
    s.push(("keyfile", "version-2", text.replace("\"version\": 1", "\"version\": 2").into_bytes()));
    s.push(("keyfile", "unknown-field", text.replacen('{', "{\"extra\": 1,", 1).into_bytes()));
    s.push((
        "keyfile",
        "bad-hex-salt",
        with(tiny.clone(), |v| {
            let i = v.windows(8).position(|w| w == b"\"salt\": ").unwrap() + 9;
            v[i] = b'z'
        }),
    ));
    s.push((
        "keyfile",
        "huge-memory-cost",
        text.replace("\"m_cost_kib\": 1024", "\"m_cost_kib\": 4294967295").into_bytes(),
    ));
    s.push(("keyfile", "truncated", cut(&kf, kf.len() / 2)));
    s.push(("keyfile", "not-json", b"\x00\xff{".to_vec()));

    // sealed
    let cid = ku.chunk_id(&chunks[0]).0;
    let payload = cairn::format::blob::encode(&chunks[0], 3);
    s.push(("sealed", "index-unencrypted", ku.seal(ObjectKind::Index, &[0; 32], b"cairn")));
    s.push(("sealed", "snapshot-encrypted", ke.seal(ObjectKind::Snapshot, &[0; 32], b"cairn")));
    s.push(("sealed", "chunk-id-not-zero", ku.seal(ObjectKind::Chunk, &cid, &payload)));
    s.push(("sealed", "zstd-blob", [&(chunks[0].len() as u16).to_le_bytes()[..], &payload].concat()));
    s.push(("sealed", "zstd-blob-wrong-length", [&7u16.to_le_bytes()[..], &payload].concat()));
    s.push(("sealed", "raw-blob", [&5u16.to_le_bytes()[..], &[0], b"cairn"].concat()));
    s.push(("sealed", "unknown-encoding", [&5u16.to_le_bytes()[..], &[2], b"cairn"].concat()));
    s.push(("sealed", "short-15", vec![0; 15]));
    s.push(("sealed", "short-39", vec![0; 39]));
    s
}

#[test]
fn corpus_dirs_match_targets() {
    if std::env::var("CAIRN_BLESS_CORPUS").as_deref() == Ok("1") {
        for (target, name, bytes) in seeds() {
            let dir = fuzz_dir().join("corpus").join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let mut dirs: Vec<String> = std::fs::read_dir(fuzz_dir().join("corpus"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(dirs, names, "fuzz/corpus/ has one directory per cairn::fuzzing target");
    for n in &names {
        let src = std::fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{n}.rs")))
            .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{n}.rs: {e}"));
        assert!(src.contains(&format!("cairn::fuzzing::{n}(")), "fuzz/fuzz_targets/{n}.rs calls cairn::fuzzing::{n}");
        assert!(corpus(n).len() >= 5, "fuzz/corpus/{n} has at least 5 seeds");
    }
}

#[test]
fn corpus_replay() {
    for (name, f) in TARGETS {
        for (file, bytes) in corpus(name) {
            let r = std::panic::catch_unwind(|| f(&bytes));
            assert!(r.is_ok(), "fuzz target {name} panicked on fuzz/corpus/{name}/{file}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations

const INTERESTING_U8: [u8; 10] = [0, 1, 0x7f, 0x80, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff];

fn name_seed(target: &str, file: &str) -> u64 {
    // FNV-1a: stable across Rust versions, unlike std's hasher.
    let mut x = 0xcbf2_9ce4_8422_2325u64;
    for b in target.bytes().chain([b'/']).chain(file.bytes()) {
        x = (x ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    x
}

/// Mutation `i` of corpus file `fi` of `target`: 1 to 4 random edits (deterministic).
fn mutation(target: &str, files: &[(String, Vec<u8>)], fi: usize, i: u32) -> Vec<u8> {
    let mut rng = SplitMix64(name_seed(target, &files[fi].0) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut v = files[fi].1.clone();
    for _ in 0..1 + rng.below(4) {
        let len = v.len() as u64;
        let pos = if len == 0 { 0 } else { rng.below(len) as usize };
        match rng.below(10) {
            0 if len > 0 => v[pos] ^= 1 << rng.below(8),
            1 if len > 0 => v[pos] = rng.next_u64() as u8,
            2 if len > 0 => v[pos] = INTERESTING_U8[rng.below(10) as usize],
            3 if len >= 4 => {
                let p = pos.min(v.len() - 4);
                let vals = [
                    0u32,
                    1,
                    44,
                    0xff,
                    0x100,
                    0xffff,
                    0x1_0000,
                    0x7fff_ffff,
                    u32::MAX,
                    len as u32,
                    (len as u32).wrapping_sub(12),
                ];
                v[p..p + 4].copy_from_slice(&vals[rng.below(vals.len() as u64) as usize].to_le_bytes());
            }
            4 => {
                let n = 1 + rng.below(8) as usize;
                let ins: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(pos..pos, ins);
            }
            5 if len > 0 => {
                let n = (1 + rng.below(16) as usize).min(v.len() - pos);
                v.drain(pos..pos + n);
            }
            6 => v.truncate(pos),
            7 if len > 0 => {
                let n = (1 + rng.below(32) as usize).min(v.len() - pos);
                let dup = v[pos..pos + n].to_vec();
                v.splice(pos..pos, dup);
            }
            8 => {
                // Splice in the tail of another file of the same target.
                let other = &files[rng.below(files.len() as u64) as usize].1;
                let from = if other.is_empty() { 0 } else { rng.below(other.len() as u64) as usize };
                v.truncate(pos);
                v.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => {
                let end = (pos + 1 + rng.below(64) as usize).min(v.len());
                for b in &mut v[pos..end] {
                    *b = rng.next_u64() as u8;
                }
            }
            _ => v.push(rng.next_u64() as u8),
        }
    }
    v
}

/// Runs every mutation of every seed of `target` in this process; a panic is a failure with the
/// input saved. (Decoders bound every allocation by the input size, so an abort cannot happen;
/// libFuzzer in `fuzz/` is the tool for hunting those.)
fn stress(target: &str) -> Vec<String> {
    let f = target_fn(target);
    let files = corpus(target);
    let mut failures = Vec::new();
    for fi in 0..files.len() {
        for i in 0..MUTATIONS {
            let input = mutation(target, &files, fi, i);
            if std::panic::catch_unwind(|| f(&input)).is_err() {
                let saved = Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join(format!("fuzz-stress-{target}-{}-{i}.bin", files[fi].0));
                std::fs::write(&saved, &input).unwrap();
                failures.push(format!(
                    "target {target} panicked on mutation {i} of fuzz/corpus/{target}/{}, saved to {} ({} bytes)",
                    files[fi].0,
                    saved.display(),
                    input.len()
                ));
            }
        }
    }
    failures
}

#[test]
fn stress_mutations() {
    let mut failures = Vec::new();
    let mut runs = 0usize;
    for (name, _) in TARGETS {
        runs += corpus(name).len() * MUTATIONS as usize;
        failures.extend(stress(name));
    }
    assert!(runs >= TARGETS.len() * MUTATIONS as usize, "every target has at least one seed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
