//! Golden vectors: every file in format-spec/vectors/ is regenerated from the code and compared
//! with the committed file, and the committed hex is decoded again and compared with its
//! committed decoded form (so old bytes stay readable even if a writer changes).
//!
//! `CAIRN_BLESS_VECTORS=1 cargo test --test integration format_vectors::` rewrites the files.
//! Do that only for an intended format change, together with format-spec/ and a version bump.
//!
//! Where a vector can be computed from the spec alone (key derivation, AEAD framing, the index
//! and pack grammars, the bincode encoding rules of manifest.md), this file does so
//! independently of cairn's own encoders and checks that both agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde_json::{json, Value};

use cairn::format::blob;
use cairn::format::chunker::{sqlite_page_size, ChunkerParams, Cutter, StreamChunker, SQLITE_MAGIC};
use cairn::format::crypto::{context, Keys, ObjectKind, NONCE_LEN};
use cairn::format::index::{self, PackRecord};
use cairn::format::keyfile::{KdfParams, KeyFile};
use cairn::format::manifest::{path_cmp, Node, NodeError, NodeKind, RecordParser, Snapshot, SnapshotKind, Stats};
use cairn::format::pack::{self, Entry};
use cairn::format::repo_config::default_chunkers;
use cairn::format::verification::Verification;
use cairn::fuzzing::{test_keys, SplitMix64, TEST_MASTER_KEY, TEST_PASSWORD, TEST_REPO_ID};
use cairn::id::{content_hash, ChunkId, PackId, SnapshotId};
use cairn::{read_trailer, LocalStore, PackWriter};

/// Seed of the vector input ("cairn-v1" as a big-endian u64).
pub const INPUT_SEED: u64 = 0x6361_6972_6e2d_7631;
/// Length of the vector input.
pub const INPUT_LEN: usize = 1 << 20;
/// zstd level of the vectors (the repository default).
const LEVEL: i32 = 3;

// ---------------------------------------------------------------------------------------------
// Helpers

pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec").join("vectors")
}

fn h(b: impl AsRef<[u8]>) -> String {
    hex::encode(b)
}

pub fn unh(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap_or_else(|| panic!("expected a hex string, got {v}"))).expect("valid hex")
}

fn id32(v: &Value) -> [u8; 32] {
    unh(v).try_into().expect("32 bytes")
}

fn field<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for k in path.split('.') {
        cur = match k.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[k],
        };
        assert!(!cur.is_null(), "vector has no field {path}");
    }
    cur
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("expected a number, got {v}"))
}

fn nonce(byte: u8) -> [u8; NONCE_LEN] {
    [byte; NONCE_LEN]
}

fn what() -> String {
    "vector".into()
}

fn bless() -> bool {
    std::env::var("CAIRN_BLESS_VECTORS").as_deref() == Ok("1")
}

/// First JSON path where two values differ.
fn first_diff(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => {
                        if let Some(d) = first_diff(p, q, &format!("{at}.{k}")) {
                            return Some(d);
                        }
                    }
                    _ => return Some(format!("{at}.{k} (present on one side only)")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                if let Some(d) = first_diff(p, q, &format!("{at}.{i}")) {
                    return Some(d);
                }
            }
            (x.len() != y.len()).then(|| format!("{at} (length {} vs {})", x.len(), y.len()))
        }
        _ => (a != b).then(|| format!("{at}: committed {a} vs generated {b}")),
    }
}

/// Loads the committed vector `name` (after rewriting it from `generated` when blessing).
fn committed(name: &str, generated: &Value) -> Value {
    let path = vectors_dir().join(name);
    if bless() {
        std::fs::create_dir_all(vectors_dir()).expect("create vectors dir");
        let text = serde_json::to_string_pretty(generated).expect("json") + "\n";
        std::fs::write(&path, text).expect("write vector");
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (generate with CAIRN_BLESS_VECTORS=1)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Asserts that the code still produces the committed vector.
fn assert_same(name: &str, committed: &Value, generated: &Value) {
    if committed != generated {
        panic!(
            "format-spec/vectors/{name}: the code no longer produces the committed vector; first difference at {}.\n\
             If the format change is intended: update format-spec/, bump the version, and re-bless with \
             CAIRN_BLESS_VECTORS=1 cargo test --test integration format_vectors::",
            first_diff(committed, generated, "$").unwrap_or_else(|| "?".into())
        );
    }
}

/// The 1 MiB vector input.
pub fn input() -> Vec<u8> {
    SplitMix64::bytes(INPUT_SEED, INPUT_LEN)
}

// ---------------------------------------------------------------------------------------------
// An independent encoder for the manifest rules of format-spec/manifest.md (bincode 2.0.1,
// config::standard()). It records each field's bytes, which the vectors publish as an annotated
// dump.

#[derive(Default)]
struct SpecEnc {
    out: Vec<u8>,
    fields: Vec<Value>,
}

fn varint(v: u64) -> Vec<u8> {
    if v < 251 {
        vec![v as u8]
    } else if v <= u16::MAX as u64 {
        let mut o = vec![251];
        o.extend((v as u16).to_le_bytes());
        o
    } else if v <= u32::MAX as u64 {
        let mut o = vec![252];
        o.extend((v as u32).to_le_bytes());
        o
    } else {
        let mut o = vec![253];
        o.extend(v.to_le_bytes());
        o
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn lp(b: &[u8]) -> Vec<u8> {
    let mut o = varint(b.len() as u64);
    o.extend_from_slice(b);
    o
}

fn opt_str(s: &Option<String>) -> Vec<u8> {
    match s {
        None => vec![0],
        Some(s) => {
            let mut o = vec![1];
            o.extend(lp(s.as_bytes()));
            o
        }
    }
}

fn str_map(m: &BTreeMap<String, String>) -> Vec<u8> {
    let mut o = varint(m.len() as u64);
    for (k, v) in m {
        o.extend(lp(k.as_bytes()));
        o.extend(lp(v.as_bytes()));
    }
    o
}

fn id_list(ids: &[ChunkId]) -> Vec<u8> {
    let mut o = varint(ids.len() as u64);
    for i in ids {
        o.extend_from_slice(&i.0);
    }
    o
}

impl SpecEnc {
    fn put(&mut self, name: &str, bytes: Vec<u8>) {
        self.fields.push(json!([name, h(&bytes)]));
        self.out.extend(bytes);
    }

    fn snapshot(s: &Snapshot) -> SpecEnc {
        let mut e = SpecEnc::default();
        // Version 2 appends `seq`; a snapshot without one (seq 0) is written as version 1.
        e.put("version byte", vec![if s.seq == 0 { 1 } else { 2 }]);
        e.put("time", lp(s.time.as_bytes()));
        e.put("backup_type", lp(s.backup_type.as_bytes()));
        e.put("kind (variant index)", varint(s.kind as u64));
        e.put("description", opt_str(&s.description));
        e.put("ticket", opt_str(&s.ticket));
        e.put("creator", opt_str(&s.creator));
        e.put("purpose", opt_str(&s.purpose));
        e.put("host", lp(s.host.as_bytes()));
        let mut paths = varint(s.paths.len() as u64);
        for p in &s.paths {
            paths.extend(lp(p.as_bytes()));
        }
        e.put("paths", paths);
        e.put("labels", str_map(&s.labels));
        let st = &s.stats;
        for (n, v) in [
            ("files", st.files),
            ("dirs", st.dirs),
            ("symlinks", st.symlinks),
            ("logical_bytes", st.logical_bytes),
            ("unchanged_files", st.unchanged_files),
            ("new_chunks", st.new_chunks),
            ("new_raw_bytes", st.new_raw_bytes),
            ("new_bytes", st.new_bytes),
            ("errors", st.errors),
        ] {
            e.put(&format!("stats.{n}"), varint(v));
        }
        e.put("tree", id_list(&s.tree));
        e.put("tree_len", varint(s.tree_len));
        e.put(
            "parent",
            match &s.parent {
                None => vec![0],
                Some(p) => [&[1u8][..], &p.0].concat(),
            },
        );
        let mut errs = varint(s.errors.len() as u64);
        for x in &s.errors {
            errs.extend(lp(x.path.as_bytes()));
            errs.extend(lp(x.message.as_bytes()));
        }
        e.put("errors", errs);
        e.put("source", str_map(&s.source));
        e.put("program", lp(s.program.as_bytes()));
        if s.seq != 0 {
            e.put("seq", varint(s.seq));
        }
        e
    }

    fn node(n: &Node) -> SpecEnc {
        let mut e = SpecEnc::default();
        e.put("path", lp(&n.path));
        e.put("kind (variant index)", varint(n.kind as u64));
        e.put("mode", varint(n.mode as u64));
        e.put("uid", varint(n.uid as u64));
        e.put("gid", varint(n.gid as u64));
        e.put("mtime_ns (zigzag)", varint(zigzag(n.mtime_ns)));
        e.put("ctime_ns (zigzag)", varint(zigzag(n.ctime_ns)));
        e.put("inode", varint(n.inode));
        e.put("size", varint(n.size));
        e.put("target", lp(&n.target));
        e.put("chunks", id_list(&n.chunks));
        e
    }
}

// ---------------------------------------------------------------------------------------------
// keys.json: key derivation and object sealing

fn derived(ctx: &str) -> [u8; 32] {
    blake3::derive_key(ctx, &TEST_MASTER_KEY)
}

fn aad(kind: ObjectKind, id: &[u8; 32]) -> Vec<u8> {
    [&TEST_REPO_ID[..], &[kind as u8], id].concat()
}

/// Seals per the spec, without cairn's code: XChaCha20-Poly1305 or the keyed BLAKE3 tag.
fn spec_seal(encrypted: bool, kind: ObjectKind, id: &[u8; 32], plain: &[u8], n: &[u8; NONCE_LEN]) -> Vec<u8> {
    let a = aad(kind, id);
    if encrypted {
        let c = XChaCha20Poly1305::new((&derived(context::ENCRYPTION)).into());
        let ct = c.encrypt(XNonce::from_slice(n), Payload { msg: plain, aad: &a }).expect("encrypt");
        [&n[..], &ct].concat()
    } else {
        let mut hsh = blake3::Hasher::new_keyed(&derived(context::PLAIN_MAC));
        hsh.update(&a);
        hsh.update(plain);
        [plain, &hsh.finalize().as_bytes()[..16]].concat()
    }
}

fn gen_keys() -> Value {
    let k = test_keys(true);
    let gear = derived(context::GEAR_SEED);
    let seed = u64::from_le_bytes(gear[..8].try_into().unwrap()).max(1);
    assert_eq!(seed, k.gear_seed(), "gear seed derivation");
    let examples: Vec<Value> = [&b""[..], b"cairn"]
        .iter()
        .map(|p| {
            let id = k.chunk_id(p);
            assert_eq!(id.0, *blake3::keyed_hash(&derived(context::CHUNK_ID), p).as_bytes());
            json!({"plaintext": h(p), "chunk_id": h(id.0)})
        })
        .collect();
    let cid = k.chunk_id(b"cairn").0;
    let kinds = [
        ("chunk", ObjectKind::Chunk),
        ("pack trailer", ObjectKind::PackTrailer),
        ("index", ObjectKind::Index),
        ("snapshot", ObjectKind::Snapshot),
    ];
    let mut seals = Vec::new();
    for enc in [false, true] {
        let keys = test_keys(enc);
        for (kind_name, kind, id) in [("chunk", ObjectKind::Chunk, cid), ("index", ObjectKind::Index, [0u8; 32])] {
            let plain = b"cairn";
            let n = nonce(0x24);
            let sealed = keys.seal_with_nonce(kind, &id, plain, &n);
            assert_eq!(sealed, spec_seal(enc, kind, &id, plain, &n), "seal of a {kind_name} (encrypted: {enc})");
            if !enc {
                assert_eq!(sealed, keys.seal(kind, &id, plain), "unencrypted sealing is deterministic");
            }
            let mut v = json!({
                "encrypted": enc,
                "kind": kind_name,
                "object_id": h(id),
                "aad": h(aad(kind, &id)),
                "plaintext": h(plain),
                "sealed": h(&sealed),
            });
            if enc {
                v["nonce"] = json!(h(n));
            }
            seals.push(v);
        }
    }
    json!({
        "description": "Key derivation (crypto.md, hashing.md) from the test master key, and sealing examples.",
        "master_key": h(TEST_MASTER_KEY),
        "repo_id": h(TEST_REPO_ID),
        "derived_keys": [
            {"use": "object encryption key", "context": context::ENCRYPTION, "key": h(derived(context::ENCRYPTION))},
            {"use": "plaintext object tag key", "context": context::PLAIN_MAC, "key": h(derived(context::PLAIN_MAC))},
            {"use": "chunk id key", "context": context::CHUNK_ID, "key": h(derived(context::CHUNK_ID))},
            {"use": "chunker gear seed", "context": context::GEAR_SEED, "key": h(gear)},
        ],
        "gear_seed": format!("{seed:016x}"),
        "object_kinds": kinds.iter().map(|(n, k)| json!({"kind": n, "byte": *k as u8})).collect::<Vec<_>>(),
        "chunk_ids": examples,
        "seal_examples": seals,
    })
}

#[test]
fn keys() {
    let generated = gen_keys();
    let c = committed("keys.json", &generated);
    // Decode: recompute everything from the committed inputs alone.
    let master: [u8; 32] = id32(field(&c, "master_key"));
    for d in field(&c, "derived_keys").as_array().unwrap() {
        let ctx = d["context"].as_str().unwrap();
        assert_eq!(blake3::derive_key(ctx, &master).to_vec(), unh(&d["key"]), "{ctx}");
    }
    let ck: [u8; 32] = id32(field(&c, "derived_keys.2.key"));
    for e in field(&c, "chunk_ids").as_array().unwrap() {
        assert_eq!(blake3::keyed_hash(&ck, &unh(&e["plaintext"])).as_bytes().to_vec(), unh(&e["chunk_id"]));
    }
    for s in field(&c, "seal_examples").as_array().unwrap() {
        let enc = s["encrypted"].as_bool().unwrap();
        let keys = test_keys(enc);
        let kind = match s["kind"].as_str().unwrap() {
            "chunk" => ObjectKind::Chunk,
            "index" => ObjectKind::Index,
            other => panic!("kind {other}"),
        };
        let id = id32(&s["object_id"]);
        assert_eq!(unh(&s["aad"]), aad(kind, &id));
        let opened = keys.open(kind, &id, &unh(&s["sealed"]), &what).expect("committed seal opens");
        assert_eq!(opened, unh(&s["plaintext"]));
        let other = if kind == ObjectKind::Chunk { ObjectKind::Index } else { ObjectKind::Chunk };
        assert!(keys.open(other, &id, &unh(&s["sealed"]), &what).is_err(), "kind is bound");
    }
    assert_same("keys.json", &c, &generated);
}

// ---------------------------------------------------------------------------------------------
// chunking.json

fn chunk_case(name: &str, note: &str, params: ChunkerParams, seed: u64, len: usize, patch: &[u8]) -> Value {
    let keys = test_keys(true);
    let mut data = input();
    data.truncate(len);
    data[..patch.len()].copy_from_slice(patch);
    let mut c = StreamChunker::new(&data[..], Cutter::new(params, seed), true).expect("chunker");
    let page_cutter = c.is_fixed();
    let mut chunks = Vec::new();
    let mut off = 0usize;
    while let Some(ch) = c.next_chunk().expect("in memory") {
        chunks.push(json!({"offset": off, "length": ch.len(), "chunk_id": h(keys.chunk_id(&ch).0)}));
        off += ch.len();
    }
    assert_eq!(off, data.len());
    json!({
        "name": name,
        "note": note,
        "input": {"length": len, "patch_at_0": h(patch)},
        "params": serde_json::to_value(params).unwrap(),
        "gear_seed": format!("{seed:016x}"),
        "sqlite_page_cutter": page_cutter,
        "chunks": chunks,
    })
}

fn sqlite_head(field: [u8; 2]) -> Vec<u8> {
    [&SQLITE_MAGIC[..], &field].concat()
}

fn gen_chunking() -> Value {
    let keys = test_keys(true);
    let seed = keys.gear_seed();
    let ch = default_chunkers();
    let data = input();
    let mut g = SplitMix64(INPUT_SEED);
    let first: Vec<String> = (0..4).map(|_| format!("{:016x}", g.next_u64())).collect();
    let (gear, _) = fastcdc::v2020::get_gear_with_seed(0);
    let header_cases: Vec<Value> = [
        (sqlite_head([0x10, 0x00]), "page size 4096"),
        (sqlite_head([0x02, 0x00]), "512, the smallest"),
        (sqlite_head([0x80, 0x00]), "32768"),
        (sqlite_head([0x00, 0x01]), "1 means 65536"),
        (sqlite_head([0x01, 0x00]), "256: too small"),
        (sqlite_head([0x03, 0xe8]), "1000: not a power of two"),
        (sqlite_head([0x00, 0x00]), "0"),
        ([&SQLITE_MAGIC[..], &[0x10]].concat(), "17 bytes: too short to hold the field"),
        ([&b"SQLite format 4\0"[..], &[0x10, 0x00]].concat(), "other magic"),
    ]
    .iter()
    .map(|(head, note)| json!({"head": h(head), "page_size": sqlite_page_size(head), "note": note}))
    .collect();
    json!({
        "description": "Chunk boundaries (chunking.md). Every case's input is the PRNG output below, cut to input.length, with input.patch_at_0 written over its first bytes. Chunk ids are keyed by the test master key.",
        "prng": {
            "algorithm": "splitmix64",
            "seed": format!("{INPUT_SEED:016x}"),
            "first_outputs": first,
            "first_32_bytes": h(&data[..32]),
            "length": INPUT_LEN,
            "blake3": h(content_hash(&data)),
        },
        "gear_seed": format!("{seed:016x}"),
        "sqlite_page_size": header_cases,
        "cases": [
            chunk_case("default", "repository default parameters, keyed gear", ch["default"], seed, INPUT_LEN, b""),
            chunk_case("db", "parameters of type db, keyed gear", ch["db"], seed, INPUT_LEN, b""),
            chunk_case("db-unkeyed", "type db parameters, gear seed 0 (fastcdc's own table; never used by a repository)", ch["db"], 0, INPUT_LEN, b""),
            chunk_case("sqlite-4096", "SQLite header with page size 4096: fixed 4096-byte chunks", ch["db"], seed, 20000, &sqlite_head([0x10, 0x00])),
            chunk_case("sqlite-65536", "SQLite header with page size field 1 (65536)", ch["default"], seed, INPUT_LEN, &sqlite_head([0x00, 0x01])),
            chunk_case("sqlite-bad-page-size", "SQLite magic but page size 1000: content-defined chunking as usual", ch["db"], seed, 262144, &sqlite_head([0x03, 0xe8])),
        ],
        "fastcdc_v2020_gear": gear.iter().map(|g| format!("{g:016x}")).collect::<Vec<_>>(),
    })
}

#[test]
fn chunking() {
    let generated = gen_chunking();
    let c = committed("chunking.json", &generated);
    let data = input();
    assert_eq!(h(content_hash(&data)), field(&c, "prng.blake3").as_str().unwrap(), "PRNG output");
    let ck = derived(context::CHUNK_ID);
    for case in field(&c, "cases").as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let params: ChunkerParams = serde_json::from_value(case["params"].clone()).unwrap();
        let seed = u64::from_str_radix(case["gear_seed"].as_str().unwrap(), 16).unwrap();
        let len = u(&case["input"]["length"]) as usize;
        let patch = unh(&case["input"]["patch_at_0"]);
        let mut d = data[..len].to_vec();
        d[..patch.len()].copy_from_slice(&patch);
        let chunks = case["chunks"].as_array().unwrap();
        let mut off = 0usize;
        let mut lens = Vec::new();
        for (i, x) in chunks.iter().enumerate() {
            assert_eq!(u(&x["offset"]) as usize, off, "{name}: chunks tile the input");
            let l = u(&x["length"]) as usize;
            let slice = &d[off..off + l];
            assert_eq!(blake3::keyed_hash(&ck, slice).as_bytes().to_vec(), unh(&x["chunk_id"]), "{name} chunk {i}");
            off += l;
            lens.push(l);
        }
        assert_eq!(off, len, "{name}: chunks cover the input");
        let page = case["sqlite_page_cutter"].as_bool().unwrap();
        assert_eq!(page, sqlite_page_size(&d[..d.len().min(100)]).is_some(), "{name}");
        match params {
            ChunkerParams::FastCdc { min, avg, max, normalization } if !page => {
                // Same boundaries as the reference streaming chunker of the pinned crate.
                let level = match normalization {
                    0 => fastcdc::v2020::Normalization::Level0,
                    1 => fastcdc::v2020::Normalization::Level1,
                    2 => fastcdc::v2020::Normalization::Level2,
                    _ => fastcdc::v2020::Normalization::Level3,
                };
                let theirs: Vec<usize> =
                    fastcdc::v2020::StreamCDC::with_level_and_seed(&d[..], min, avg, max, level, seed)
                        .map(|c| c.unwrap().length)
                        .collect();
                assert_eq!(lens, theirs, "{name}: boundaries equal fastcdc::v2020::StreamCDC");
                let n = lens.len();
                assert!(lens[..n - 1].iter().all(|&l| l >= min as usize && l <= max as usize));
            }
            _ => {
                let ps = sqlite_page_size(&d).expect("page cutter only on a SQLite header") as usize;
                assert!(lens[..lens.len() - 1].iter().all(|&l| l == ps), "{name}: fixed page chunks");
            }
        }
    }
    for x in field(&c, "sqlite_page_size").as_array().unwrap() {
        assert_eq!(serde_json::to_value(sqlite_page_size(&unh(&x["head"]))).unwrap(), x["page_size"]);
    }
    assert_same("chunking.json", &c, &generated);
}

// ---------------------------------------------------------------------------------------------
// pack.json

/// The chunks of the pack vector: text that compresses, random bytes that do not, a tiny chunk.
pub fn pack_chunks() -> Vec<Vec<u8>> {
    vec![b"hello, cairn! ".repeat(16), SplitMix64::bytes(INPUT_SEED ^ 1, 100), b"cairn\n".to_vec()]
}

/// Nonces of the encrypted pack vector: chunk k gets 24 bytes of 0x10 + k, the trailer 0x1f.
fn pack_nonces(n: usize) -> (Vec<[u8; NONCE_LEN]>, [u8; NONCE_LEN]) {
    ((0..n).map(|k| nonce(0x10 + k as u8)).collect(), nonce(0x1f))
}

/// A pack built from the spec (pack.md) with cairn's sealing; returns the bytes and entries.
pub fn build_pack(keys: &Keys, chunks: &[Vec<u8>]) -> (Vec<u8>, Vec<Entry>, Vec<u8>) {
    let (cn, tn) = pack_nonces(chunks.len());
    let mut out = b"CAIRNPK\x01".to_vec();
    let mut entries = Vec::new();
    for (c, n) in chunks.iter().zip(&cn) {
        let id = keys.chunk_id(c);
        let sealed = keys.seal_with_nonce(ObjectKind::Chunk, &id.0, &blob::encode(c, LEVEL), n);
        entries.push(Entry {
            id,
            offset: out.len() as u32,
            stored_len: sealed.len() as u32,
            raw_len: c.len() as u32,
            reference: None,
        });
        out.extend(sealed);
    }
    let mut trailer = vec![1u8];
    trailer.extend((entries.len() as u32).to_le_bytes());
    for e in &entries {
        trailer.extend(e.id.0);
        trailer.extend(e.offset.to_le_bytes());
        trailer.extend(e.stored_len.to_le_bytes());
        trailer.extend(e.raw_len.to_le_bytes());
    }
    let sealed = keys.seal_with_nonce(ObjectKind::PackTrailer, &[0; 32], &trailer, &tn);
    out.extend(&sealed);
    out.extend((sealed.len() as u32).to_le_bytes());
    out.extend(b"CAIRNEND");
    (out, entries, trailer)
}

fn entry_json(e: &Entry) -> Value {
    json!({"chunk_id": h(e.id.0), "offset": e.offset, "stored_len": e.stored_len, "raw_len": e.raw_len})
}

fn entry_from(v: &Value) -> Entry {
    Entry {
        id: ChunkId(id32(&v["chunk_id"])),
        offset: u(&v["offset"]) as u32,
        stored_len: u(&v["stored_len"]) as u32,
        raw_len: u(&v["raw_len"]) as u32,
        reference: None,
    }
}

/// The unencrypted pack as the real `PackWriter` writes it.
fn pack_writer_bytes(chunks: &[Vec<u8>]) -> Vec<u8> {
    let keys = test_keys(false);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tmp")).unwrap();
    let store = LocalStore::new(dir.path());
    let mut w = PackWriter::new(&store).unwrap();
    for c in chunks {
        let id = keys.chunk_id(c);
        w.add(id, &keys.seal(ObjectKind::Chunk, &id.0, &blob::encode(c, LEVEL)), c.len() as u32, None).unwrap();
    }
    let written = w.finish(&store, &keys).unwrap();
    let bytes = std::fs::read(store.path(cairn::FileKind::Pack, &written.id.to_hex())).unwrap();
    assert_eq!(written.id.0, content_hash(&bytes));
    assert_eq!(written.size, bytes.len() as u64);
    bytes
}

/// Both vector packs: (unencrypted bytes, encrypted bytes).
pub fn vector_packs() -> (Vec<u8>, Vec<u8>) {
    let chunks = pack_chunks();
    (build_pack(&test_keys(false), &chunks).0, build_pack(&test_keys(true), &chunks).0)
}

fn gen_pack() -> Value {
    let chunks = pack_chunks();
    let (cn, tn) = pack_nonces(chunks.len());
    let kp = test_keys(false);
    let mut modes = serde_json::Map::new();
    for enc in [false, true] {
        let keys = test_keys(enc);
        let (bytes, entries, trailer) = build_pack(&keys, &chunks);
        if !enc {
            assert_eq!(bytes, pack_writer_bytes(&chunks), "PackWriter writes the spec's bytes");
        }
        let tlen = u32::from_le_bytes(bytes[bytes.len() - 12..bytes.len() - 8].try_into().unwrap());
        let mut v = json!({
            "pack": h(&bytes),
            "pack_id": h(content_hash(&bytes)),
            "size": bytes.len(),
            "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
            "trailer_plaintext": h(&trailer),
            "sealed_trailer_length": tlen,
        });
        if enc {
            v["nonces"] = json!({"chunks": cn.iter().map(h).collect::<Vec<_>>(), "trailer": h(tn)});
        }
        modes.insert(if enc { "encrypted" } else { "unencrypted" }.into(), v);
    }
    json!({
        "description": "A pack of three chunks (pack.md), zstd level 3, in both modes. The encrypted pack uses fixed nonces, never done outside vectors. zstd's output is not normative: a zstd upgrade may change blob bytes (then re-bless), while readers must accept any valid frame.",
        "chunks": chunks.iter().map(|c| {
            let b = blob::encode(c, LEVEL);
            json!({"plaintext": h(c), "chunk_id": h(kp.chunk_id(c).0), "encoding": b[0], "blob": h(&b)})
        }).collect::<Vec<_>>(),
        "unencrypted": modes["unencrypted"],
        "encrypted": modes["encrypted"],
    })
}

#[test]
fn pack() {
    let generated = gen_pack();
    let c = committed("pack.json", &generated);
    for (mode, enc) in [("unencrypted", false), ("encrypted", true)] {
        let keys = test_keys(enc);
        let m = field(&c, mode);
        let bytes = unh(&m["pack"]);
        assert_eq!(content_hash(&bytes).to_vec(), unh(&m["pack_id"]), "{mode}: pack name");
        let entries = pack::parse_pack(&bytes, &keys, &what).expect("committed pack parses");
        let want: Vec<Entry> = m["entries"].as_array().unwrap().iter().map(entry_from).collect();
        assert_eq!(entries, want, "{mode}");
        // Through the file-based reader too.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pack");
        std::fs::write(&p, &bytes).unwrap();
        let (tr, size) = read_trailer(&p, &keys, &PackId(content_hash(&bytes))).unwrap();
        assert_eq!((tr, size), (want.clone(), bytes.len() as u64));
        for (e, chunk) in want.iter().zip(field(&c, "chunks").as_array().unwrap()) {
            let sealed = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            let payload = keys.open(ObjectKind::Chunk, &e.id.0, sealed, &what).unwrap();
            assert_eq!(payload[0] as u64, u(&chunk["encoding"]));
            let plain = blob::decode(&payload, e.raw_len as usize, &what).unwrap();
            assert_eq!(plain, unh(&chunk["plaintext"]));
            assert_eq!(keys.chunk_id(&plain).0.to_vec(), unh(&chunk["chunk_id"]));
            if enc {
                // Spec check: nonce || XChaCha20-Poly1305 ciphertext || tag under the derived key.
                let n: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().unwrap();
                assert_eq!(sealed, spec_seal(true, ObjectKind::Chunk, &e.id.0, &payload, &n));
            }
        }
        let t = unh(&m["trailer_plaintext"]);
        assert_eq!(
            pack::decode_trailer(&t, (bytes.len() - 12) as u64 - u(&m["sealed_trailer_length"]), &what).unwrap(),
            want
        );
    }
    assert_same("pack.json", &c, &generated);
}

// ---------------------------------------------------------------------------------------------
// index.json

fn index_records(pack: &[u8], keys: &Keys) -> Vec<PackRecord> {
    let entries = pack::parse_pack(pack, keys, &what).unwrap();
    let synthetic = PackRecord {
        id: PackId(content_hash(b"a second pack")),
        size: 70000,
        entries: vec![
            Entry {
                id: ChunkId(content_hash(b"chunk a")),
                offset: 8,
                stored_len: 40000,
                raw_len: 65536,
                reference: None,
            },
            Entry {
                id: ChunkId(content_hash(b"chunk b")),
                offset: 40008,
                stored_len: 29000,
                raw_len: 29000,
                reference: None,
            },
        ],
    };
    vec![PackRecord { id: PackId(content_hash(pack)), size: pack.len() as u64, entries }, synthetic]
}

fn spec_index(records: &[PackRecord]) -> Vec<u8> {
    let mut o = vec![1u8];
    o.extend((records.len() as u32).to_le_bytes());
    for r in records {
        o.extend(r.id.0);
        o.extend(r.size.to_le_bytes());
        o.extend((r.entries.len() as u32).to_le_bytes());
        for e in &r.entries {
            o.extend(e.id.0);
            o.extend(e.offset.to_le_bytes());
            o.extend(e.stored_len.to_le_bytes());
            o.extend(e.raw_len.to_le_bytes());
        }
    }
    o
}

fn record_json(r: &PackRecord) -> Value {
    json!({"pack_id": h(r.id.0), "size": r.size, "entries": r.entries.iter().map(entry_json).collect::<Vec<_>>()})
}

/// The vector index files: (unencrypted, encrypted).
pub fn vector_index_files() -> (Vec<u8>, Vec<u8>) {
    let (pu, pe) = vector_packs();
    let ku = test_keys(false);
    let ke = test_keys(true);
    (
        index::seal(&ku, &index_records(&pu, &ku)),
        ke.seal_with_nonce(ObjectKind::Index, &[0; 32], &index::encode(&index_records(&pe, &ke)), &nonce(0x20)),
    )
}

fn gen_index() -> Value {
    let (pu, pe) = vector_packs();
    let (fu, fe) = vector_index_files();
    let mut out = json!({
        "description": "Index files (index.md) listing the pack of pack.json (of the same mode) and a synthetic second record. The encrypted file's nonce is fixed.",
    });
    for (mode, enc, pack, file) in [("unencrypted", false, &pu, &fu), ("encrypted", true, &pe, &fe)] {
        let keys = test_keys(enc);
        let records = index_records(pack, &keys);
        let plain = index::encode(&records);
        assert_eq!(plain, spec_index(&records), "index plaintext per index.md");
        assert_eq!(*file, spec_seal(enc, ObjectKind::Index, &[0; 32], &plain, &nonce(0x20)));
        let mut v = json!({
            "records": records.iter().map(record_json).collect::<Vec<_>>(),
            "plaintext": h(&plain),
            "file": h(file),
            "name": h(content_hash(file)),
        });
        if enc {
            v["nonce"] = json!(h(nonce(0x20)));
        }
        out[mode] = v;
    }
    out
}

#[test]
fn index() {
    let generated = gen_index();
    let c = committed("index.json", &generated);
    for (mode, enc) in [("unencrypted", false), ("encrypted", true)] {
        let keys = test_keys(enc);
        let m = field(&c, mode);
        let file = unh(&m["file"]);
        assert_eq!(content_hash(&file).to_vec(), unh(&m["name"]));
        let records = index::open(&keys, &file, &what).expect("committed index opens");
        let as_json: Vec<Value> = records.iter().map(record_json).collect();
        assert_eq!(Value::from(as_json), m["records"], "{mode}");
        assert_eq!(index::decode(&unh(&m["plaintext"]), &what).unwrap(), records);
    }
    assert_same("index.json", &c, &generated);
}

// ---------------------------------------------------------------------------------------------
// tree.json

fn node(path: &[u8], kind: NodeKind, mode: u32, mtime_ns: i64, size: u64, target: &[u8], chunks: Vec<ChunkId>) -> Node {
    Node {
        path: path.to_vec(),
        kind,
        mode,
        uid: 1000,
        gid: 1000,
        mtime_ns,
        ctime_ns: mtime_ns + 1,
        inode: 5_000_000_000,
        size,
        target: target.to_vec(),
        chunks,
    }
}

/// The nodes of the tree vector, in stream order.
pub fn tree_nodes() -> Vec<Node> {
    let keys = test_keys(true);
    let ids: Vec<ChunkId> = pack_chunks().iter().map(|c| keys.chunk_id(c)).collect();
    let t = 1_795_000_000_123_456_789;
    vec![
        node(b"app", NodeKind::Dir, 0o40755, t, 0, b"", vec![]),
        node(b"app/a.txt", NodeKind::File, 0o100644, t, 224, b"", vec![ids[0]]),
        node(b"app/data.bin", NodeKind::File, 0o100600, t, 106, b"", vec![ids[1], ids[2]]),
        node(b"app/latest", NodeKind::Symlink, 0o120777, t, 0, b"a.txt", vec![]),
        node(b"app/\xff\xfe.bin", NodeKind::File, 0o100644, -1, 0, b"", vec![]),
    ]
}

/// The tree stream of the vector.
pub fn tree_stream() -> Vec<u8> {
    let mut s = Vec::new();
    for n in tree_nodes() {
        n.encode_record(&mut s);
    }
    s
}

fn node_json(n: &Node) -> Value {
    json!({
        "path": h(&n.path),
        "path_text": String::from_utf8_lossy(&n.path),
        "kind": format!("{:?}", n.kind),
        "mode": format!("{:o}", n.mode),
        "uid": n.uid,
        "gid": n.gid,
        "mtime_ns": n.mtime_ns,
        "ctime_ns": n.ctime_ns,
        "inode": n.inode,
        "size": n.size,
        "target": h(&n.target),
        "chunks": n.chunks.iter().map(|c| h(c.0)).collect::<Vec<_>>(),
    })
}

fn gen_tree() -> Value {
    let nodes = tree_nodes();
    let mut records = Vec::new();
    for n in &nodes {
        let mut rec = Vec::new();
        n.encode_record(&mut rec);
        let spec = SpecEnc::node(n);
        assert_eq!(&rec[4..], &spec.out[..], "{}: record body per manifest.md", n.path_str());
        assert_eq!(rec[..4], (spec.out.len() as u32).to_le_bytes());
        records.push(json!({"node": node_json(n), "record": h(&rec), "body_fields": spec.fields}));
    }
    let stream = tree_stream();
    json!({
        "description": "A tree stream (manifest.md): u32le length || bincode(Node) per node, in path order. body_fields annotate each record body field by field. Chunk ids are those of pack.json's chunks.",
        "records": records,
        "stream": h(&stream),
        "stream_chunk_id": h(test_keys(true).chunk_id(&stream).0),
    })
}

#[test]
fn tree() {
    let generated = gen_tree();
    let c = committed("tree.json", &generated);
    let stream = unh(field(&c, "stream"));
    let mut p = RecordParser::new();
    let mut nodes = Vec::new();
    for piece in stream.chunks(7) {
        p.feed(piece);
        while let Some(n) = p.next(&what).expect("committed stream decodes") {
            nodes.push(n);
        }
    }
    assert_eq!(p.leftover(), 0);
    let recs = field(&c, "records").as_array().unwrap();
    assert_eq!(nodes.len(), recs.len());
    let mut concat = Vec::new();
    for (n, r) in nodes.iter().zip(recs) {
        assert_eq!(node_json(n), r["node"]);
        let rec = unh(&r["record"]);
        let body: Vec<u8> = r["body_fields"].as_array().unwrap().iter().flat_map(|f| unh(&f[1])).collect();
        assert_eq!(&rec[4..], &body[..], "annotation covers the record");
        assert_eq!(&Node::decode_record(&rec[4..], &what).unwrap(), n);
        assert!(cairn::format::manifest::check_safe_path(&n.path).is_ok());
        concat.extend(rec);
    }
    assert_eq!(concat, stream);
    assert!(nodes.windows(2).all(|w| path_cmp(&w[0].path, &w[1].path).is_lt()), "stream is in path order");
    assert_same("tree.json", &c, &generated);
}

// ---------------------------------------------------------------------------------------------
// snapshot.json

/// The snapshot of the vector (field values chosen to exercise every varint width).
pub fn vector_snapshot() -> Snapshot {
    let stream = tree_stream();
    let keys = test_keys(true);
    Snapshot {
        time: "2026-11-22T03:00:00.123456789+01:00".into(),
        backup_type: "db".into(),
        kind: SnapshotKind::PreChange,
        description: Some("before migration 42".into()),
        ticket: Some("OPS-7".into()),
        creator: None,
        purpose: None,
        host: "pi".into(),
        paths: vec!["/srv/app/data/app.db".into()],
        labels: [("env".to_string(), "prod".to_string()), ("app".to_string(), "obd".to_string())].into_iter().collect(),
        stats: Stats {
            files: 1,
            dirs: 250,
            symlinks: 251,
            logical_bytes: 65536,
            unchanged_files: 0,
            new_chunks: 65535,
            new_raw_bytes: 4_294_967_296,
            new_bytes: 70000,
            errors: 1,
        },
        tree: vec![keys.chunk_id(&stream)],
        tree_len: stream.len() as u64,
        parent: Some(SnapshotId(content_hash(b"the parent snapshot file"))),
        errors: vec![NodeError { path: "app/locked.db".into(), message: "Permission denied (os error 13)".into() }],
        source: [("sqlite_page_size".to_string(), "4096".to_string())].into_iter().collect(),
        program: "cairn 0.1.0".into(),
        seq: 0,
    }
}

/// The vector snapshot files: (unencrypted, encrypted).
pub fn vector_snapshot_files() -> (Vec<u8>, Vec<u8>) {
    snapshot_files(&vector_snapshot(), 0x30)
}

fn snapshot_files(s: &Snapshot, nonce_byte: u8) -> (Vec<u8>, Vec<u8>) {
    (
        s.seal(&test_keys(false)),
        test_keys(true).seal_with_nonce(ObjectKind::Snapshot, &[0; 32], &s.encode(), &nonce(nonce_byte)),
    )
}

/// The version 2 vector: the version 1 snapshot with a sequence number of 300 (a two-byte varint).
pub fn vector_snapshot_v2() -> Snapshot {
    Snapshot { seq: 300, ..vector_snapshot() }
}

fn snapshot_json(s: &Snapshot) -> Value {
    let st = &s.stats;
    let mut v = json!({
        "time": s.time,
        "backup_type": s.backup_type,
        "kind": format!("{:?}", s.kind),
        "description": s.description,
        "ticket": s.ticket,
        "creator": s.creator,
        "purpose": s.purpose,
        "host": s.host,
        "paths": s.paths,
        "labels": s.labels,
        "stats": {
            "files": st.files, "dirs": st.dirs, "symlinks": st.symlinks, "logical_bytes": st.logical_bytes,
            "unchanged_files": st.unchanged_files, "new_chunks": st.new_chunks, "new_raw_bytes": st.new_raw_bytes,
            "new_bytes": st.new_bytes, "errors": st.errors,
        },
        "tree": s.tree.iter().map(|c| h(c.0)).collect::<Vec<_>>(),
        "tree_len": s.tree_len,
        "parent": s.parent.map(|p| h(p.0)),
        "errors": s.errors.iter().map(|e| json!({"path": e.path, "message": e.message})).collect::<Vec<_>>(),
        "source": s.source,
        "program": s.program,
    });
    if s.seq != 0 {
        v["seq"] = json!(s.seq);
    }
    v
}

fn gen_snapshot(s: &Snapshot, nonce_byte: u8, description: &str) -> Value {
    let plain = s.encode();
    let spec = SpecEnc::snapshot(s);
    assert_eq!(plain, spec.out, "snapshot plaintext per manifest.md");
    let (fu, fe) = snapshot_files(s, nonce_byte);
    assert_eq!(fe, spec_seal(true, ObjectKind::Snapshot, &[0; 32], &plain, &nonce(nonce_byte)));
    assert_eq!(fu, spec_seal(false, ObjectKind::Snapshot, &[0; 32], &plain, &nonce(0)));
    json!({
        "description": description,
        "snapshot": snapshot_json(s),
        "plaintext": h(&plain),
        "plaintext_fields": spec.fields,
        "unencrypted": {"file": h(&fu), "name": h(content_hash(&fu))},
        "encrypted": {"nonce": h(nonce(nonce_byte)), "file": h(&fe), "name": h(content_hash(&fe))},
    })
}

#[test]
fn snapshot() {
    // Version 1 (no seq), as cairn wrote it before snapshot version 2: still read.
    let generated = gen_snapshot(
        &vector_snapshot(),
        0x30,
        "A snapshot file (manifest.md). plaintext_fields annotate the plaintext field by field; tree is the chunk id of tree.json's stream. The encrypted file's nonce is fixed.",
    );
    check_snapshot_vector("snapshot.json", &generated);
}

#[test]
fn snapshot_v2() {
    let generated = gen_snapshot(
        &vector_snapshot_v2(),
        0x31,
        "A version 2 snapshot file (manifest.md): snapshot.json's snapshot with seq 300 appended. plaintext_fields annotate the plaintext field by field. The encrypted file's nonce is fixed.",
    );
    check_snapshot_vector("snapshot_v2.json", &generated);
    // The two versions differ only in the version byte and the appended seq.
    let v1 = vector_snapshot().encode();
    let v2 = vector_snapshot_v2().encode();
    assert_eq!((v1[0], v2[0]), (1, 2));
    assert_eq!(&v2[1..v1.len()], &v1[1..]);
    assert_eq!(&v2[v1.len()..], &[0xfb, 0x2c, 0x01]);
    // A version 2 plaintext with seq 0 is refused: 0 means "no sequence" (version 1).
    let mut zero = v2[..v1.len()].to_vec();
    zero.push(0);
    assert!(Snapshot::decode(&zero, &what).is_err());
}

fn check_snapshot_vector(name: &str, generated: &Value) {
    let c = committed(name, generated);
    let plain = unh(field(&c, "plaintext"));
    let annotated: Vec<u8> =
        field(&c, "plaintext_fields").as_array().unwrap().iter().flat_map(|f| unh(&f[1])).collect();
    assert_eq!(annotated, plain, "annotation covers the plaintext");
    let decoded = Snapshot::decode(&plain, &what).expect("committed plaintext decodes");
    assert_eq!(snapshot_json(&decoded), *field(&c, "snapshot"));
    for (mode, enc) in [("unencrypted", false), ("encrypted", true)] {
        let file = unh(field(&c, &format!("{mode}.file")));
        assert_eq!(content_hash(&file).to_vec(), unh(field(&c, &format!("{mode}.name"))));
        let s = Snapshot::open(&test_keys(enc), &file, &what).expect("committed snapshot opens");
        assert_eq!(s, decoded, "{mode}");
    }
    assert_same(name, &c, generated);
}

// ---------------------------------------------------------------------------------------------
// keyfile.json

const KDF: KdfParams = KdfParams { m_cost_kib: 1024, t_cost: 1, p_cost: 1 };

fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start + i as u8)
}

/// The key file of the vector, built per keys.md without cairn's wrapping code; and its KEK.
pub fn vector_keyfile() -> (Vec<u8>, [u8; 32]) {
    keyfile_parts(KDF)
}

/// The vector's key file with other Argon2id costs.
pub fn keyfile_with(kdf: KdfParams) -> Vec<u8> {
    keyfile_parts(kdf).0
}

fn keyfile_parts(kdf: KdfParams) -> (Vec<u8>, [u8; 32]) {
    let salt: [u8; 32] = seq(0x40);
    let n: [u8; 24] = seq(0x60);
    let params = argon2::Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(32)).unwrap();
    let mut kek = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(TEST_PASSWORD, &salt, &mut kek)
        .unwrap();
    let plain = [&TEST_MASTER_KEY[..], &TEST_REPO_ID[..]].concat();
    let wrapped = XChaCha20Poly1305::new((&kek).into())
        .encrypt(XNonce::from_slice(&n), Payload { msg: &plain, aad: b"cairn key file v1" })
        .unwrap();
    let kf = KeyFile {
        version: 1,
        kdf: "argon2id".into(),
        params: kdf,
        salt: h(salt),
        nonce: h(n),
        wrapped: h(wrapped),
        created: "2026-11-22T03:00:00+01:00".into(),
        host: "pi".into(),
        label: "initial".into(),
    };
    (kf.to_bytes(), kek)
}

fn gen_keyfile() -> Value {
    let (text, kek) = vector_keyfile();
    json!({
        "description": "A key file (keys.md) with tiny Argon2id costs (the test suite's; real ones default to 64 MiB, 3 passes). Salt and nonce are fixed.",
        "password": String::from_utf8(TEST_PASSWORD.to_vec()).unwrap(),
        "kek": h(kek),
        "file_text": String::from_utf8(text).unwrap(),
        "master_key": h(TEST_MASTER_KEY),
        "repo_id": h(TEST_REPO_ID),
    })
}

#[test]
fn keyfile() {
    let generated = gen_keyfile();
    let c = committed("keyfile.json", &generated);
    let text = field(&c, "file_text").as_str().unwrap();
    let kf = KeyFile::parse(text.as_bytes(), "vector").expect("committed key file parses");
    let pw = field(&c, "password").as_str().unwrap().as_bytes();
    let (mk, rid) = kf.unwrap_key(pw, "vector").unwrap().expect("password opens it");
    assert_eq!(mk.0.to_vec(), unh(field(&c, "master_key")));
    assert_eq!(rid.0.to_vec(), unh(field(&c, "repo_id")));
    assert!(kf.unwrap_key(b"wrong", "vector").unwrap().is_none());
    assert_eq!(kf.to_bytes(), text.as_bytes(), "key files are written byte for byte as committed");
    assert_same("keyfile.json", &c, &generated);
}

// ---------------------------------------------------------------------------------------------
// encoding.json: the bincode rules manifest.md states, one value at a time.

fn enc<T: serde::Serialize>(v: &T) -> String {
    h(bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap())
}

fn gen_encoding() -> Value {
    let mut cases: Vec<Value> = Vec::new();
    let mut add =
        |ty: &str, value: Value, bytes: String| cases.push(json!({"type": ty, "value": value, "bytes": bytes}));
    for v in [0u8, 250, 251, 255] {
        add("u8", json!(v), enc(&v));
    }
    for v in [0u32, 250, 251, 65535, 65536, u32::MAX] {
        add("u32", json!(v), enc(&v));
        assert_eq!(enc(&v), h(varint(v as u64)));
    }
    for v in [250u64, 4_294_967_296, u64::MAX] {
        add("u64", json!(v), enc(&v));
        assert_eq!(enc(&v), h(varint(v)));
    }
    for v in [0i64, -1, 1, -2, 125, -126, 126, i64::MIN] {
        add("i64", json!(v), enc(&v));
        assert_eq!(enc(&v), h(varint(zigzag(v))));
    }
    add("bool", json!(true), enc(&true));
    add("String", json!("db"), enc(&"db".to_string()));
    add("Vec<u8>", json!(h(b"ab")), enc(&b"ab".to_vec()));
    add("Option<String>", Value::Null, enc(&None::<String>));
    add("Option<String>", json!("x"), enc(&Some("x".to_string())));
    add("[u8; 32] (ChunkId)", json!(h(seq::<32>(0))), enc(&ChunkId(seq(0))));
    add("enum NodeKind", json!("Symlink"), enc(&NodeKind::Symlink));
    add("enum SnapshotKind", json!("Manual"), enc(&SnapshotKind::Manual));
    let m: BTreeMap<String, String> = [("b".into(), "2".into()), ("a".into(), "1".into())].into_iter().collect();
    add("BTreeMap<String, String>", json!(m), enc(&m));
    json!({
        "description": "bincode 2.0.1 serde encoding with config::standard(), one value per line (manifest.md).",
        "cases": cases,
    })
}

#[test]
fn encoding() {
    let generated = gen_encoding();
    let c = committed("encoding.json", &generated);
    assert_same("encoding.json", &c, &generated);
}

// ---------------------------------------------------------------------------------------------
// sample.json: the generator and the draw of `verify --read-data=P% --seed S` (verify.md).

/// SplitMix64 as chunking.md writes it, apart from cairn's.
fn spec_splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The sample as verify.md writes it, apart from cairn's.
fn spec_sample(packs: &[[u8; 32]], percent: f64, seed: u64) -> Vec<[u8; 32]> {
    let mut c = packs.to_vec();
    c.sort();
    if percent >= 100.0 {
        return c;
    }
    let n = (((c.len() as f64) * percent / 100.0).ceil() as usize).min(c.len());
    let mut state = seed;
    for i in 0..n {
        let j = i + (spec_splitmix64(&mut state) % (c.len() - i) as u64) as usize;
        c.swap(i, j);
    }
    c.truncate(n);
    c
}

/// Ten pack ids in no particular order: BLAKE3 of "pack 0" to "pack 9".
fn sample_packs() -> Vec<PackId> {
    (0..10).map(|i| PackId(*blake3::hash(format!("pack {i}").as_bytes()).as_bytes())).collect()
}

const SAMPLE_SEEDS: [u64; 4] = [0, 7, 0x6361_6972_6e2d_7631, u64::MAX];
const SAMPLE_CASES: [(u64, f64); 7] =
    [(7, 50.0), (7, 10.0), (8, 50.0), (0, 25.0), (u64::MAX, 33.3), (1, 0.5), (7, 100.0)];

fn gen_sample() -> Value {
    use cairn::format::sample::sample;
    let packs = sample_packs();
    let outputs: Vec<Value> = SAMPLE_SEEDS
        .iter()
        .map(|&seed| {
            let mut g = SplitMix64(seed);
            json!({"seed": seed, "first": (0..5).map(|_| format!("{:016x}", g.next_u64())).collect::<Vec<_>>()})
        })
        .collect();
    let cases: Vec<Value> = SAMPLE_CASES
        .iter()
        .map(|&(seed, percent)| {
            let read = sample(&packs, percent, seed);
            json!({"seed": seed, "percent": percent, "read": read.iter().map(|p| p.to_hex()).collect::<Vec<_>>()})
        })
        .collect();
    json!({
        "description": "SplitMix64's first outputs for some seeds (chunking.md), and the packs verify --read-data=PERCENT% --seed SEED reads out of the list `packs`, in reading order (verify.md).",
        "outputs": outputs,
        "packs": packs.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
        "samples": cases,
    })
}

#[test]
fn sample() {
    let generated = gen_sample();
    let c = committed("sample.json", &generated);
    for o in field(&c, "outputs").as_array().unwrap() {
        let mut state = u(&o["seed"]);
        let mut g = SplitMix64(state);
        for want in o["first"].as_array().unwrap() {
            let want = u64::from_str_radix(want.as_str().unwrap(), 16).unwrap();
            assert_eq!(spec_splitmix64(&mut state), want);
            assert_eq!(g.next_u64(), want);
        }
    }
    let packs: Vec<[u8; 32]> = field(&c, "packs").as_array().unwrap().iter().map(id32).collect();
    let pack_ids: Vec<PackId> = packs.iter().map(|p| PackId(*p)).collect();
    for s in field(&c, "samples").as_array().unwrap() {
        let (seed, percent) = (u(&s["seed"]), s["percent"].as_f64().unwrap());
        let want: Vec<[u8; 32]> = s["read"].as_array().unwrap().iter().map(id32).collect();
        assert_eq!(spec_sample(&packs, percent, seed), want, "spec, seed {seed}, {percent}%");
        let got: Vec<[u8; 32]> = cairn::format::sample::sample(&pack_ids, percent, seed).iter().map(|p| p.0).collect();
        assert_eq!(got, want, "cairn, seed {seed}, {percent}%");
    }
    assert_same("sample.json", &c, &generated);
}

// ---------------------------------------------------------------------------------------------
// verification.json

/// The verification of the vector: it names snapshot.json's encrypted snapshot file.
pub fn vector_verification() -> Verification {
    let (_, enc) = vector_snapshot_files();
    Verification {
        snapshot: SnapshotId(content_hash(&enc)),
        by: "alice".into(),
        time: "2026-11-25T14:30:00+01:00".into(),
    }
}

fn gen_verification() -> Value {
    let v = vector_verification();
    let plain = v.encode();
    let mut spec = SpecEnc::default();
    spec.put("version byte", vec![1]);
    spec.put("snapshot", v.snapshot.0.to_vec());
    spec.put("by", lp(v.by.as_bytes()));
    spec.put("time", lp(v.time.as_bytes()));
    assert_eq!(plain, spec.out, "verification plaintext per verification.md");
    let n = nonce(0x32);
    let fe = test_keys(true).seal_with_nonce(ObjectKind::Verification, &[0; 32], &plain, &n);
    let fu = v.seal(&test_keys(false));
    assert_eq!(fe, spec_seal(true, ObjectKind::Verification, &[0; 32], &plain, &n));
    assert_eq!(fu, spec_seal(false, ObjectKind::Verification, &[0; 32], &plain, &nonce(0)));
    json!({
        "description": "A verification file (verification.md) naming snapshot.json's encrypted snapshot file. plaintext_fields annotate the plaintext field by field. The encrypted file's nonce is fixed.",
        "verification": {"snapshot": h(v.snapshot.0), "by": v.by, "time": v.time},
        "kind_byte": ObjectKind::Verification as u8,
        "plaintext": h(&plain),
        "plaintext_fields": spec.fields,
        "unencrypted": {"file": h(&fu), "name": h(content_hash(&fu))},
        "encrypted": {"nonce": h(n), "file": h(&fe), "name": h(content_hash(&fe))},
    })
}

#[test]
fn verification() {
    let generated = gen_verification();
    let c = committed("verification.json", &generated);
    let plain = unh(field(&c, "plaintext"));
    let annotated: Vec<u8> =
        field(&c, "plaintext_fields").as_array().unwrap().iter().flat_map(|f| unh(&f[1])).collect();
    assert_eq!(annotated, plain, "annotation covers the plaintext");
    let decoded = Verification::decode(&plain, &what).expect("committed plaintext decodes");
    let expect = field(&c, "verification");
    assert_eq!(
        (h(decoded.snapshot.0), json!(decoded.by), json!(decoded.time)),
        (expect["snapshot"].as_str().unwrap().to_string(), expect["by"].clone(), expect["time"].clone())
    );
    for (mode, enc) in [("unencrypted", false), ("encrypted", true)] {
        let file = unh(field(&c, &format!("{mode}.file")));
        assert_eq!(content_hash(&file).to_vec(), unh(field(&c, &format!("{mode}.name"))));
        let v = Verification::open(&test_keys(enc), &file, &what).expect("committed verification opens");
        assert_eq!(v, decoded, "{mode}");
        // Sealed as a snapshot it does not open: the kind byte is bound.
        assert!(Snapshot::open(&test_keys(enc), &file, &what).is_err(), "{mode}");
    }
    // Unknown versions and trailing bytes are refused.
    let mut v2 = plain.clone();
    v2[0] = 2;
    assert!(Verification::decode(&v2, &what).is_err());
    let mut long = plain.clone();
    long.push(0);
    assert!(Verification::decode(&long, &what).is_err());
    assert_same("verification.json", &c, &generated);
}

// ---------------------------------------------------------------------------------------------
// delta.json (pack.md, "References"): written independently of cairn (the frame by the zstd
// CLI's --patch-from, the trailer and index bytes from the grammar), so these check cairn
// against the spec, not against itself.

#[test]
fn delta_vector_decodes_and_records_its_reference() {
    let v: Value = serde_json::from_slice(&std::fs::read(vectors_dir().join("delta.json")).unwrap()).unwrap();
    let base = std::sync::Arc::new(unh(&v["base_plaintext"]));
    let want = unh(&v["plaintext"]);
    let payload = unh(&v["delta_payload"]);
    let reference = ChunkId(id32(&v["reference"]));
    assert_eq!(payload[0], blob::ENC_DELTA);
    assert_eq!(blob::reference(&payload), Some(reference));
    let got = blob::decode_with(&payload, want.len(), &what, &|id| {
        assert_eq!(*id, reference);
        Ok(base.clone())
    })
    .unwrap();
    assert_eq!(got, want);
    assert!(blob::decode(&payload, want.len(), &what).is_err(), "no base, no plaintext");

    let entries: Vec<Entry> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Entry { reference: e["reference"].as_str().map(|_| ChunkId(id32(&e["reference"]))), ..entry_from(e) })
        .collect();
    let trailer = unh(&v["trailer_plaintext_v2"]);
    assert_eq!(pack::encode_trailer_as(&entries, 2), trailer);
    let end = entries.last().map(|e| e.offset as u64 + e.stored_len as u64).unwrap();
    assert_eq!(pack::decode_trailer(&trailer, end, &what).unwrap(), entries);
    // Version 3: the same body compressed (zstd bytes are not normative: the CLI's frame must
    // decode, and cairn's must carry the same body).
    let trailer3 = unh(&v["trailer_plaintext_v3"]);
    assert_eq!(pack::decode_trailer(&trailer3, end, &what).unwrap(), entries);
    let ours = pack::encode_trailer(&entries);
    assert_eq!(ours[0], 3, "cairn writes entries with references in version 3");
    assert_eq!(pack::decompress_body(&ours[1..], &what).unwrap(), trailer[1..]);
    assert_eq!(pack::decompress_body(&trailer3[1..], &what).unwrap(), trailer[1..]);
    let record = PackRecord { id: PackId(id32(&v["index_pack_id"])), size: u(&v["index_pack_size"]), entries };
    let plain = unh(&v["index_plaintext_v2"]);
    assert_eq!(index::encode_as(std::slice::from_ref(&record), 2), plain);
    assert_eq!(index::decode(&plain, &what).unwrap(), vec![record.clone()]);
    let plain3 = unh(&v["index_plaintext_v3"]);
    assert_eq!(index::decode(&plain3, &what).unwrap(), vec![record.clone()]);
    let ours = index::encode(std::slice::from_ref(&record));
    assert_eq!(ours[0], 3);
    assert_eq!(pack::decompress_body(&ours[1..], &what).unwrap(), plain[1..]);
    // A declared length past the limit is refused before anything is allocated; a frame giving
    // other than the declared length is refused.
    let mut huge = trailer3.clone();
    huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(pack::decode_trailer(&huge, end, &what).unwrap_err().to_string().contains("above"));
    let mut short = plain3.clone();
    short[1..5].copy_from_slice(&((plain.len() as u32) - 2).to_le_bytes());
    assert!(index::decode(&short, &what).is_err());
    let mut long = plain3.clone();
    long[1..5].copy_from_slice(&(plain.len() as u32).to_le_bytes());
    assert!(index::decode(&long, &what).unwrap_err().to_string().contains("declared"));
    // A flag other than 0 or 1 is refused.
    let mut bad = trailer.clone();
    bad[1 + 4 + 44] = 2;
    assert!(pack::decode_trailer(&bad, end, &what).is_err());
}

// The group in delta.json (pack.md, "Groups"): a slice and a delta against a part of a group,
// the frame again made by the zstd CLI.
#[test]
fn group_vector_slices_and_part_deltas_decode() {
    let v: Value = serde_json::from_slice(&std::fs::read(vectors_dir().join("delta.json")).unwrap()).unwrap();
    let page2 = unh(&v["plaintext"]);
    let group = std::sync::Arc::new([unh(&v["base_plaintext"]), page2.clone()].concat());
    let g = &v["group"];
    let gid = ChunkId(id32(&g["group_id"]));
    let with_group = |p: &[u8], len: usize| {
        blob::decode_with(p, len, &what, &|id| {
            assert_eq!(*id, gid);
            Ok(group.clone())
        })
    };
    let slice = unh(&g["slice_payload"]);
    assert_eq!(slice, blob::encode_slice(&gid, 4096), "cairn writes the specified bytes");
    assert_eq!((slice[0], blob::reference(&slice)), (blob::ENC_SLICE, Some(gid)));
    assert_eq!(with_group(&slice, 4096).unwrap(), page2);
    assert!(with_group(&slice, 4097).is_err(), "past the group's end");
    let part = unh(&g["part_delta_payload"]);
    let want = unh(&g["part_delta_plaintext"]);
    assert_eq!((part[0], blob::reference(&part)), (blob::ENC_DELTA_PART, Some(gid)));
    assert_eq!(with_group(&part, want.len()).unwrap(), want);
    assert!(blob::decode(&part, want.len(), &what).is_err(), "no group, no plaintext");
}
