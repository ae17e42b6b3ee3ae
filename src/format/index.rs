//! Index files (`index/<id>`): which pack holds each chunk, for the packs one backup wrote.
//! `seal(Index, 0, version u8 || u32le pack count || (pack id || u64le size || entries)*)`;
//! format-spec/index.md. Version 2 entries record references, as in pack trailers; version 3 is
//! version 2 with everything after the version byte compressed (zstd).

use crate::error::{Error, Result};
use crate::format::crypto::{Keys, ObjectKind};
use crate::format::pack::{
    compress_body, decompress_body, encode_entries, entries_version, Entry, Reader, TRAILER_VERSION_REFS,
    TRAILER_VERSION_ZSTD,
};
use crate::id::PackId;

/// Version byte of the index plaintext when no entry records a reference.
pub const INDEX_VERSION: u8 = 1;
/// Version byte of the index plaintext whose entries record references (pack.md's version 2 entries).
pub const INDEX_VERSION_REFS: u8 = TRAILER_VERSION_REFS;
/// Version byte of the index plaintext whose version-2 body is one zstd frame (pack.md's
/// version 3).
pub const INDEX_VERSION_ZSTD: u8 = TRAILER_VERSION_ZSTD;

/// One pack's record in an index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackRecord {
    /// The pack.
    pub id: PackId,
    /// Its size in bytes.
    pub size: u64,
    /// Its chunks, in pack order.
    pub entries: Vec<Entry>,
}

/// Encodes the plaintext of an index file: version 1 when no entry records a reference, else
/// version 3 (version 2 when compressing does not apply).
pub fn encode(packs: &[PackRecord]) -> Vec<u8> {
    match entries_version(packs.iter().flat_map(|p| &p.entries)) {
        INDEX_VERSION_REFS => compress_body(encode_as(packs, INDEX_VERSION_REFS)),
        v => encode_as(packs, v),
    }
}

/// Encodes the plaintext of an index file in version 1 or 2 exactly (`v` must hold the entries).
pub fn encode_as(packs: &[PackRecord], v: u8) -> Vec<u8> {
    // Sized exactly: an index file's plaintext is megabytes.
    let entry_len = |e: &Entry| if v >= TRAILER_VERSION_REFS { 45 + 32 * e.reference.is_some() as usize } else { 44 };
    let len: usize = packs.iter().map(|p| 44 + p.entries.iter().map(entry_len).sum::<usize>()).sum();
    let mut out = Vec::with_capacity(5 + len);
    out.push(v);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.id.0);
        out.extend_from_slice(&p.size.to_le_bytes());
        encode_entries(&mut out, &p.entries, v);
    }
    out
}

/// Decodes the plaintext of an index file.
pub fn decode(plain: &[u8], what: &dyn Fn() -> String) -> Result<Vec<PackRecord>> {
    match plain.first() {
        Some(&INDEX_VERSION_ZSTD) => {
            let body = decompress_body(&plain[1..], what)?;
            decode_body(&body, INDEX_VERSION_REFS, what)
        }
        Some(&v) if v == INDEX_VERSION || v == INDEX_VERSION_REFS => decode_body(&plain[1..], v, what),
        Some(v) => Err(Error::corrupt(what(), format!("unknown index version {v}"))),
        None => Err(Error::corrupt(what(), "empty index plaintext")),
    }
}

/// Decodes what follows the version byte, in version `v`'s entry form.
fn decode_body(plain: &[u8], v: u8, what: &dyn Fn() -> String) -> Result<Vec<PackRecord>> {
    let mut r = Reader::new(plain, what);
    let n = r.u32()? as usize;
    if n > plain.len() / 44 {
        return Err(Error::corrupt(what(), format!("pack count {n} exceeds the data")));
    }
    let mut packs = Vec::with_capacity(n);
    for _ in 0..n {
        let id = PackId(r.id32()?);
        let size = r.u64()?;
        let entries = r.entries(v)?;
        packs.push(PackRecord { id, size, entries });
    }
    r.finish()?;
    Ok(packs)
}

/// Seals an index file.
pub fn seal(keys: &Keys, packs: &[PackRecord]) -> Vec<u8> {
    keys.seal(ObjectKind::Index, &[0; 32], &encode(packs))
}

/// Opens and decodes a sealed index file.
pub fn open(keys: &Keys, sealed: &[u8], what: &dyn Fn() -> String) -> Result<Vec<PackRecord>> {
    let plain = keys.open(ObjectKind::Index, &[0; 32], sealed, what)?;
    decode(&plain, what)
}
