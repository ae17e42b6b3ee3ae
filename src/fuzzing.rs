//! Fuzz-target bodies and deterministic test inputs. Not used by the program itself.
//!
//! Each `pub fn TARGET(data: &[u8])` feeds untrusted bytes to one decoder, with the fixed test
//! keys of format-spec/vectors/, and ignores the result: the only failure is a panic, an abort or
//! a hang. `fuzz/fuzz_targets/*.rs` are one-line wrappers around these (cargo-fuzz, nightly);
//! `tests/integration/fuzz_corpus.rs` runs them over `fuzz/corpus/` and over deterministic
//! mutations of it on stable Rust.
//!
//! [`SplitMix64`] is the pseudo-random generator format-spec/chunking.md defines for test
//! vectors and benchmarks (`rand`'s generators may change output between versions; this cannot).

use std::sync::OnceLock;

use crate::format::blob;
use crate::format::crypto::{Keys, MasterKey, ObjectKind};
use crate::format::index;
use crate::format::keyfile::KeyFile;
use crate::format::manifest::{Node, RecordParser, Snapshot};
use crate::format::pack::{decode_trailer, parse_pack, parse_tail};
pub use crate::format::sample::SplitMix64;
use crate::id::RepoId;

/// The test master key of format-spec/vectors/: bytes 0x00, 0x01, ..., 0x1f.
pub const TEST_MASTER_KEY: [u8; 32] = seq32(0x00);
/// The test repository id of format-spec/vectors/: bytes 0xa0, 0xa1, ..., 0xbf.
pub const TEST_REPO_ID: [u8; 32] = seq32(0xa0);
/// Password of the key-file vector and of the fuzz harness's key-file attempts.
pub const TEST_PASSWORD: &[u8] = b"correct horse battery staple";

const fn seq32(start: u8) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = start + i as u8;
        i += 1;
    }
    out
}

/// Working keys derived from [`TEST_MASTER_KEY`] and [`TEST_REPO_ID`].
pub fn test_keys(encrypted: bool) -> Keys {
    Keys::derive(&MasterKey(TEST_MASTER_KEY), RepoId(TEST_REPO_ID), encrypted)
}

fn keys() -> &'static [Keys; 2] {
    static KEYS: OnceLock<[Keys; 2]> = OnceLock::new();
    KEYS.get_or_init(|| [test_keys(false), test_keys(true)])
}

fn what() -> String {
    "fuzz input".into()
}

/// Largest plaintext length the harness lets a decoder allocate for (chunks never exceed the
/// chunker's 16 MiB maximum).
const MAX_RAW: u32 = 16 << 20;

/// Pack tail and trailer plaintext: `parse_tail` over the whole input, and `decode_trailer` over
/// `data[4..]` with `data[..4]` (u32le) as the offset where the trailer starts.
pub fn pack_trailer(data: &[u8]) {
    let _ = parse_tail(data, data.len() as u64, &what);
    if data.len() >= 4 {
        let body_end = u32::from_le_bytes(data[..4].try_into().expect("4 bytes"));
        let _ = decode_trailer(&data[4..], body_end as u64, &what);
    }
}

/// A whole pack (`parse_pack`) under both test keys; when it parses, every chunk is opened,
/// decoded and checked as `verify --read-data` does.
pub fn pack(data: &[u8]) {
    for keys in keys() {
        let Ok(entries) = parse_pack(data, keys, &what) else {
            continue;
        };
        for e in entries {
            let start = e.offset as usize;
            let Some(sealed) = data.get(start..start + e.stored_len as usize) else {
                panic!("parse_pack accepted an entry outside the pack: {e:?}");
            };
            let Ok(payload) = keys.open(ObjectKind::Chunk, &e.id.0, sealed, &what) else {
                continue;
            };
            if e.raw_len <= MAX_RAW {
                if let Ok(plain) = blob::decode(&payload, e.raw_len as usize, &what) {
                    let _ = keys.chunk_id(&plain) == e.id;
                }
            }
        }
    }
}

/// An index file: sealed under both test keys, and `data` as plaintext.
pub fn index_file(data: &[u8]) {
    for keys in keys() {
        let _ = index::open(keys, data, &what);
    }
    let _ = index::decode(data, &what);
}

/// A snapshot file: sealed under both test keys, and `data` as plaintext.
pub fn snapshot(data: &[u8]) {
    for keys in keys() {
        let _ = Snapshot::open(keys, data, &what);
    }
    let _ = Snapshot::decode(data, &what);
}

/// A tree stream: `data` fed to a `RecordParser` in pieces of varying size, every record pulled;
/// and `data` as one record body.
pub fn tree_record(data: &[u8]) {
    let mut p = RecordParser::new();
    let mut rest = data;
    let mut step = 1usize;
    loop {
        match p.next(&what) {
            Ok(Some(_)) => continue,
            Err(_) => break,
            Ok(None) => {}
        }
        if rest.is_empty() {
            break;
        }
        let n = step.min(rest.len());
        p.feed(&rest[..n]);
        rest = &rest[n..];
        step = step * 3 + 1;
    }
    let _ = Node::decode_record(data, &what);
}

/// A key file: parsed, and, when its Argon2id cost is tiny, unwrapped with [`TEST_PASSWORD`].
pub fn keyfile(data: &[u8]) {
    let Ok(kf) = KeyFile::parse(data, "fuzz") else {
        return;
    };
    // Costs are attacker-chosen up to 4 GiB x 64 passes: the fuzzer only pays for tiny ones.
    if kf.params.m_cost_kib <= 64 && kf.params.t_cost <= 2 && kf.params.p_cost <= 2 {
        let _ = kf.unwrap_key(TEST_PASSWORD, "fuzz");
    }
}

/// A sealed object: `Keys::open` for every kind under both test keys (id zero); then `data[2..]`
/// as a chunk payload (`blob::decode`) whose plaintext length is `data[..2]` (u16le).
pub fn sealed(data: &[u8]) {
    for keys in keys() {
        for kind in [ObjectKind::Chunk, ObjectKind::PackTrailer, ObjectKind::Index, ObjectKind::Snapshot] {
            let _ = keys.open(kind, &[0; 32], data, &what);
        }
    }
    if data.len() >= 2 {
        let raw_len = u16::from_le_bytes([data[0], data[1]]) as usize;
        let _ = blob::decode(&data[2..], raw_len, &what);
    }
}

/// The delta decoder: `data[..2]` (u16le) is the plaintext length, `data[2..4]` (u16le) the
/// length of a base plaintext that follows, the rest a chunk payload decoded with that base as
/// every referenced chunk (`blob::decode_with`), and its `blob::reference`.
pub fn delta(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let raw_len = u16::from_le_bytes([data[0], data[1]]) as usize;
    let base_len = (u16::from_le_bytes([data[2], data[3]]) as usize).min(data.len() - 4);
    let base = std::sync::Arc::new(data[4..4 + base_len].to_vec());
    let payload = &data[4 + base_len..];
    let _ = blob::reference(payload);
    let _ = blob::decode_with(payload, raw_len, &what, &|_| Ok(base.clone()));
}

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// Every target by name (the directory names under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("pack_trailer", pack_trailer),
    ("pack", pack),
    ("index_file", index_file),
    ("snapshot", snapshot),
    ("tree_record", tree_record),
    ("keyfile", keyfile),
    ("sealed", sealed),
    ("delta", delta),
];
