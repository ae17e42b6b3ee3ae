//! Pack files: many sealed chunks, then a sealed trailer listing them, so the index can be
//! rebuilt from packs alone. Grammar in format-spec/pack.md:
//!
//! `"CAIRNPK\x01" || blob* || seal(trailer) || u32le len(seal(trailer)) || "CAIRNEND"`

use crate::error::{Error, Result};
use crate::format::crypto::{Keys, ObjectKind};
use crate::id::{ChunkId, PackId};

/// First bytes of every pack (the last byte is the pack format version).
pub const PACK_MAGIC: &[u8; 8] = b"CAIRNPK\x01";
/// Last bytes of every pack.
pub const PACK_END: &[u8; 8] = b"CAIRNEND";
/// Version byte of a trailer whose entries record no references (pack.md); index files share it.
pub const TRAILER_VERSION: u8 = 1;
/// Version byte of a trailer whose entries record the chunk each blob references.
pub const TRAILER_VERSION_REFS: u8 = 2;
/// Version byte of a trailer whose version-2 body is one zstd frame: entries of pages in a group
/// repeat the group's id and sizes, and compress from 77 to about 34 bytes.
pub const TRAILER_VERSION_ZSTD: u8 = 3;
/// Encoded size of one version-1 entry (the smallest entry of every version).
pub const ENTRY_LEN: usize = 32 + 4 + 4 + 4;
/// Largest body a version-3 trailer or index file may declare: checked before anything is
/// allocated (a pack of 16384 entries has a body of 1.3 MB, an index file of 32768 entries
/// plus one pack's about 4 MB; a writer with a larger body writes version 2).
pub const MAX_ZSTD_BODY: usize = 64 << 20;
/// Packs never exceed this (offsets are u32).
pub const MAX_PACK: u64 = u32::MAX as u64;

/// Where a chunk sits in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The chunk.
    pub id: ChunkId,
    /// Offset of its sealed blob from the start of the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub stored_len: u32,
    /// Length of the plaintext chunk.
    pub raw_len: u32,
    /// The chunk the blob's encoding references (`blob::reference`: a delta's base, a
    /// dictionary), which must be kept and readable for this one to decode.
    pub reference: Option<ChunkId>,
}

/// The form entries are written in: 2 when any records a reference, else 1 (so a repository
/// without references keeps the bytes, and the readers, it always had). Writers compress a
/// version-2 body into version 3 ([`compress_body`]).
pub fn entries_version<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> u8 {
    if entries.into_iter().any(|e| e.reference.is_some()) {
        TRAILER_VERSION_REFS
    } else {
        TRAILER_VERSION
    }
}

/// Encodes entries in `version`'s form (trailer body and index file records share this).
/// Version 2 follows each entry with a flag byte (0: no reference, 1: the 32-byte id follows).
pub fn encode_entries(out: &mut Vec<u8>, entries: &[Entry], version: u8) {
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.id.0);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        if version >= TRAILER_VERSION_REFS {
            match e.reference {
                None => out.push(0),
                Some(r) => {
                    out.push(1);
                    out.extend_from_slice(&r.0);
                }
            }
        } else {
            debug_assert!(e.reference.is_none(), "a version-1 entry cannot record a reference");
        }
    }
}

/// The version-3 form of a version-2 plaintext (`0x02 || body`): `0x03 || u32le len(body) ||
/// zstd(body)`, or the plaintext unchanged when its body is above [`MAX_ZSTD_BODY`] or does
/// not shrink.
pub fn compress_body(v2: Vec<u8>) -> Vec<u8> {
    debug_assert_eq!(v2.first(), Some(&TRAILER_VERSION_REFS));
    let body = &v2[1..];
    if body.len() > MAX_ZSTD_BODY {
        return v2;
    }
    match zstd::bulk::compress(body, 3) {
        Ok(frame) if frame.len() + 4 < body.len() => {
            let mut out = Vec::with_capacity(5 + frame.len());
            out.push(TRAILER_VERSION_ZSTD);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&frame);
            out
        }
        _ => v2,
    }
}

/// The version-2 body of a version-3 plaintext (`rest` is what follows the version byte): the
/// declared length is checked against [`MAX_ZSTD_BODY`] before anything is allocated, and the
/// frame must give exactly that many bytes.
pub fn decompress_body(rest: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>> {
    let mut r = Reader::new(rest, what);
    let len = r.u32()? as usize;
    if len > MAX_ZSTD_BODY {
        return Err(Error::corrupt(what(), format!("compressed body declares {len} bytes, above {MAX_ZSTD_BODY}")));
    }
    let frame = &rest[4..];
    let body = zstd::bulk::decompress(frame, len).map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?;
    if body.len() != len {
        return Err(Error::corrupt(what(), format!("compressed body is {} bytes, declared {len}", body.len())));
    }
    Ok(body)
}

/// A cursor over untrusted bytes: every read is bounds-checked.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'a dyn Fn() -> String,
}

impl<'a> Reader<'a> {
    /// Reads `data`; `what` names it in errors.
    pub fn new(data: &'a [u8], what: &'a dyn Fn() -> String) -> Self {
        Reader { data, pos: 0, what }
    }
    /// Next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return Err(Error::corrupt((self.what)(), format!("truncated at byte {}", self.pos)));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// A byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// A 32-byte id.
    pub fn id32(&mut self) -> Result<[u8; 32]> {
        Ok(self.take(32)?.try_into().expect("32"))
    }
    /// Whether everything was consumed.
    pub fn finish(&self) -> Result<()> {
        if self.pos != self.data.len() {
            return Err(Error::corrupt((self.what)(), format!("{} trailing bytes", self.data.len() - self.pos)));
        }
        Ok(())
    }
    /// A count followed by that many entries of `version` (1 or 2); the count is checked
    /// against the bytes left before anything is allocated.
    pub fn entries(&mut self, version: u8) -> Result<Vec<Entry>> {
        let n = self.u32()? as usize;
        let min = if version >= TRAILER_VERSION_REFS { ENTRY_LEN + 1 } else { ENTRY_LEN };
        if n > (self.data.len() - self.pos) / min {
            return Err(Error::corrupt((self.what)(), format!("entry count {n} exceeds the data")));
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let mut e = Entry {
                id: ChunkId(self.id32()?),
                offset: self.u32()?,
                stored_len: self.u32()?,
                raw_len: self.u32()?,
                reference: None,
            };
            if version >= TRAILER_VERSION_REFS {
                e.reference = match self.u8()? {
                    0 => None,
                    1 => Some(ChunkId(self.id32()?)),
                    f => return Err(Error::corrupt((self.what)(), format!("bad reference flag {f}"))),
                };
                if e.reference == Some(e.id) {
                    return Err(Error::corrupt((self.what)(), format!("chunk {} references itself", e.id.short())));
                }
            }
            v.push(e);
        }
        Ok(v)
    }
}

/// Encodes a trailer plaintext: version 1 when no entry records a reference, else version 3
/// (version 2 when compressing does not apply, [`compress_body`]).
pub fn encode_trailer(entries: &[Entry]) -> Vec<u8> {
    match entries_version(entries) {
        TRAILER_VERSION_REFS => compress_body(encode_trailer_as(entries, TRAILER_VERSION_REFS)),
        v => encode_trailer_as(entries, v),
    }
}

/// Encodes a trailer plaintext in version 1 or 2 exactly (`version` must hold the entries).
pub fn encode_trailer_as(entries: &[Entry], version: u8) -> Vec<u8> {
    let per = if version >= TRAILER_VERSION_REFS { ENTRY_LEN + 33 } else { ENTRY_LEN };
    let mut plain = Vec::with_capacity(5 + entries.len() * per);
    plain.push(version);
    encode_entries(&mut plain, entries, version);
    plain
}

/// Decodes a trailer plaintext and checks that its entries tile the pack body exactly.
pub fn decode_trailer(plain: &[u8], body_end: u64, what: &dyn Fn() -> String) -> Result<Vec<Entry>> {
    let mut r = Reader::new(plain, what);
    let v = r.u8()?;
    let entries = match v {
        TRAILER_VERSION | TRAILER_VERSION_REFS => {
            let entries = r.entries(v)?;
            r.finish()?;
            entries
        }
        TRAILER_VERSION_ZSTD => {
            let body = decompress_body(&plain[1..], what)?;
            let mut r = Reader::new(&body, what);
            let entries = r.entries(TRAILER_VERSION_REFS)?;
            r.finish()?;
            entries
        }
        v => return Err(Error::corrupt(what(), format!("unknown trailer version {v}"))),
    };
    let mut pos = PACK_MAGIC.len() as u64;
    for e in &entries {
        if e.offset as u64 != pos {
            return Err(Error::corrupt(
                what(),
                format!("chunk {} at offset {} but expected {pos}", e.id.short(), e.offset),
            ));
        }
        pos += e.stored_len as u64;
    }
    if pos != body_end {
        return Err(Error::corrupt(what(), format!("chunks end at {pos} but trailer starts at {body_end}")));
    }
    Ok(entries)
}

/// Encodes what follows the last chunk: the sealed trailer, its length, the end marker.
pub fn encode_tail(sealed_trailer: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed_trailer.len() + 12);
    out.extend_from_slice(sealed_trailer);
    out.extend_from_slice(&(sealed_trailer.len() as u32).to_le_bytes());
    out.extend_from_slice(PACK_END);
    out
}

/// Parses the tail of a pack of total size `size`: returns the sealed trailer's position.
pub fn parse_tail(tail: &[u8], size: u64, what: &dyn Fn() -> String) -> Result<(u64, u32)> {
    if tail.len() < 12 || &tail[tail.len() - 8..] != PACK_END {
        return Err(Error::corrupt(what(), "missing pack end marker (truncated?)"));
    }
    let len = u32::from_le_bytes(tail[tail.len() - 12..tail.len() - 8].try_into().expect("4"));
    let min = (PACK_MAGIC.len() + 12) as u64 + len as u64;
    if min > size {
        return Err(Error::corrupt(what(), format!("trailer length {len} exceeds pack size {size}")));
    }
    Ok((size - 12 - len as u64, len))
}

/// Reads, opens and checks the trailer of a pack of `size` bytes through `read(offset, len)`
/// (a store's ranged read), without reading its chunks. Returns the entries and the size.
pub fn read_trailer_with(
    size: u64,
    keys: &Keys,
    pack: &PackId,
    read: &dyn Fn(u64, usize) -> Result<Vec<u8>>,
) -> Result<(Vec<Entry>, u64)> {
    let what = || format!("pack {}", pack);
    if size < 12 {
        return Err(Error::corrupt(what(), format!("only {size} bytes long")));
    }
    let tail = read(size - 12, 12)?;
    let (start, len) = parse_tail(&tail, size, &what)?;
    let sealed = read(start, len as usize)?;
    let plain = keys.open(ObjectKind::PackTrailer, &[0; 32], &sealed, &|| format!("trailer of pack {pack}"))?;
    if read(0, 8)? != PACK_MAGIC {
        return Err(Error::corrupt(what(), "bad pack magic"));
    }
    Ok((decode_trailer(&plain, start, &|| format!("trailer of pack {pack}"))?, size))
}

/// Parses a whole pack held in memory (verify --read-data, fuzzing).
pub fn parse_pack(bytes: &[u8], keys: &Keys, what: &dyn Fn() -> String) -> Result<Vec<Entry>> {
    if bytes.len() < PACK_MAGIC.len() + 12 || &bytes[..8] != PACK_MAGIC {
        return Err(Error::corrupt(what(), "bad pack magic or too short"));
    }
    let (start, len) = parse_tail(&bytes[bytes.len() - 12..], bytes.len() as u64, what)?;
    let sealed = &bytes[start as usize..start as usize + len as usize];
    let plain = keys.open(ObjectKind::PackTrailer, &[0; 32], sealed, what)?;
    decode_trailer(&plain, start, what)
}
