//! The storage encoding of one chunk before sealing: one encoding byte, then the body.
//! New encodings are new byte values, so they can be added without a format break; readers
//! refuse values they do not know. Encodings 2 (zstd delta), 3 (zstd with a dictionary), 4 (a slice
//! of a group) and 5 (a delta against part of a chunk) name another chunk in their first 32 body bytes ([`reference`]); decoding them needs that chunk's
//! plaintext ([`decode_with`]). A referenced chunk is itself always encoding 0 or 1, so a reader
//! never follows more than one link (format-spec/pack.md, "References").

#![allow(clippy::rc_buffer, reason = "the shared decoding contract hands referenced chunks over as Arc<Vec<u8>>")]

use std::cell::RefCell;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::id::ChunkId;

thread_local! {
    // zstd contexts are expensive to create (hundreds of KiB); one per thread, reused, keeps
    // page-sized chunks cheap.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static PREFIX_DCTX: RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
    static PREFIX_CCTX: RefCell<Option<zstd::zstd_safe::CCtx<'static>>> = const { RefCell::new(None) };
}

/// Body is the chunk itself.
pub const ENC_RAW: u8 = 0;
/// Body is one zstd frame that decompresses to the chunk.
pub const ENC_ZSTD: u8 = 1;
/// Body is the base chunk's id (32 bytes), then one zstd frame compressed with the base chunk's
/// plaintext as raw-content prefix (zstd "patch-from").
pub const ENC_DELTA: u8 = 2;
/// Body is a dictionary chunk's id (32 bytes), then one zstd frame compressed with that dictionary.
pub const ENC_DICT: u8 = 3;
/// Body is a group chunk's id (32 bytes) and a u32le start: the chunk is the `raw_len` bytes of
/// that chunk's plaintext from `start`. Small chunks stored together compress as one frame
/// (format-spec/pack.md, "Groups").
pub const ENC_SLICE: u8 = 4;
/// Body is a chunk's id (32 bytes), u32le start, u32le length, then one zstd frame compressed
/// with those bytes of that chunk's plaintext as raw-content prefix: a delta against a page
/// that is itself stored as a slice of a group.
pub const ENC_DELTA_PART: u8 = 5;
/// Length of the referenced chunk id at the start of a referencing body.
pub const REF_LEN: usize = 32;
/// What makes zstd read a dictionary buffer as a structured dictionary rather than raw content
/// (ZSTD_MAGIC_DICTIONARY, little-endian).
const ZSTD_DICT_MAGIC: [u8; 4] = 0xEC30_A437u32.to_le_bytes();

/// The chunk a stored payload needs to be decoded: the 32 bytes after the encoding byte of a
/// delta (its base) or dictionary-compressed (its dictionary) payload; `None` for every other
/// encoding or a payload too short to hold one (33 bytes: encoding and id). Everything that keeps or checks references
/// (index, cache, prune, verify) goes through this one function.
pub fn reference(payload: &[u8]) -> Option<ChunkId> {
    match payload.first() {
        Some(&(ENC_DELTA | ENC_DICT | ENC_SLICE | ENC_DELTA_PART)) if payload.len() > REF_LEN => {
            Some(ChunkId(payload[1..1 + REF_LEN].try_into().expect("32 bytes")))
        }
        _ => None,
    }
}

/// Encodes `data` as a zstd delta against `base` (whose id is `base_id`): the encoding byte, the
/// base id, one frame with `base` as its raw-content prefix. The caller decides whether it is
/// worth keeping (against [`encode`]'s size) and checks it decodes back.
pub fn encode_delta(data: &[u8], base_id: &ChunkId, base: &[u8], level: i32) -> Result<Vec<u8>> {
    delta_payload(data, &[ENC_DELTA], base_id, &[], base, level)
}

/// Encodes `data` as a zstd delta against `part` of the plaintext of chunk `whole_id` (encoding
/// 5): used when the base page is stored as a slice of a group, so the delta still references a
/// chunk stored whole (one link).
pub fn encode_delta_part(
    data: &[u8],
    whole_id: &ChunkId,
    whole: &[u8],
    part: std::ops::Range<usize>,
    level: i32,
) -> Result<Vec<u8>> {
    let (start, len) = (part.start as u32, part.len() as u32);
    let mut head = start.to_le_bytes().to_vec();
    head.extend_from_slice(&len.to_le_bytes());
    delta_payload(data, &[ENC_DELTA_PART], whole_id, &head, &whole[part], level)
}

/// The bytes of the referenced chunk that a slice (encoding 4) or a delta against a part
/// (encoding 5) uses; `raw_len` is the chunk's own length, which is a slice's length. `None` for
/// other encodings and for payloads too short to say. Decoding and the writer's choice of a
/// base both read a payload's part through this one function.
pub fn referenced_part(payload: &[u8], raw_len: usize) -> Option<std::ops::Range<usize>> {
    let rest = payload.get(1 + REF_LEN..)?;
    let word = |at: usize| rest.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    let (start, len) = match payload[0] {
        ENC_SLICE => (word(0)?, raw_len),
        ENC_DELTA_PART => (word(0)?, word(4)?),
        _ => return None,
    };
    Some(start..start.checked_add(len)?)
}

/// A slice payload (encoding 4): the chunk is `raw_len` bytes of group `group_id` from `start`.
pub fn encode_slice(group_id: &ChunkId, start: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + REF_LEN + 4);
    out.push(ENC_SLICE);
    out.extend_from_slice(&group_id.0);
    out.extend_from_slice(&start.to_le_bytes());
    out
}

fn delta_payload(data: &[u8], enc: &[u8], base_id: &ChunkId, head: &[u8], base: &[u8], level: i32) -> Result<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let zerr = |e: usize| Error::Invalid(format!("zstd delta: {}", zstd::zstd_safe::get_error_name(e)));
    let no_ctx = || Error::Invalid("zstd: cannot create a context".into());
    let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    if base.starts_with(&ZSTD_DICT_MAGIC) {
        // zstd would parse this base as a dictionary: only a prefix keeps it raw content, and a
        // prefix is borrowed for one frame by a context of its own.
        let mut cctx = CCtx::try_create().ok_or_else(no_ctx)?;
        cctx.set_parameter(CParameter::CompressionLevel(level)).map_err(zerr)?;
        cctx.set_parameter(CParameter::ContentSizeFlag(true)).map_err(zerr)?;
        cctx.ref_prefix(base).map_err(zerr)?;
        cctx.compress2(&mut frame, data).map_err(zerr)?;
    } else {
        // Any other base is raw content to zstd as a dictionary too, and the frame decodes as a
        // prefix's does (dictionary id 0, content size set). The thread's context is reused:
        // creating one per delta was 9 % of a day-1 backup's CPU.
        PREFIX_CCTX.with(|cell| -> Result<()> {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(CCtx::try_create().ok_or_else(no_ctx)?);
            }
            slot.as_mut().expect("set").compress_using_dict(&mut frame, data, base, level).map_err(zerr)?;
            Ok(())
        })?;
    }
    let mut out = Vec::with_capacity(1 + REF_LEN + head.len() + frame.len());
    out.extend_from_slice(enc);
    out.extend_from_slice(&base_id.0);
    out.extend_from_slice(head);
    out.extend_from_slice(&frame);
    Ok(out)
}

/// Decodes one zstd frame that was compressed with `prefix` as raw-content prefix into exactly
/// `raw_len` bytes (more is an error, never an allocation beyond `raw_len`).
fn decompress_with_prefix(frame: &[u8], prefix: &[u8], raw_len: usize) -> std::result::Result<Vec<u8>, String> {
    use zstd::zstd_safe::DCtx;
    let mut out: Vec<u8> = Vec::with_capacity(raw_len);
    if prefix.starts_with(&ZSTD_DICT_MAGIC) {
        // zstd would parse this base as a dictionary: only a prefix keeps it raw content.
        let mut dctx = DCtx::try_create().ok_or("cannot create a zstd context")?;
        dctx.ref_prefix(prefix).map_err(|e| zstd::zstd_safe::get_error_name(e).to_string())?;
        let n = dctx.decompress(&mut out, frame).map_err(|e| zstd::zstd_safe::get_error_name(e).to_string())?;
        out.truncate(n);
        return Ok(out);
    }
    // A dictionary without zstd's dictionary magic is raw content, which decodes exactly as a
    // prefix does; passed per call, it lets the thread's context be reused instead of a fresh
    // one (and its buffers) being built per delta.
    let n = PREFIX_DCTX
        .with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(DCtx::try_create().ok_or(0usize)?);
            }
            slot.as_mut().expect("set").decompress_using_dict(&mut out, frame, prefix)
        })
        .map_err(|e| {
            if e == 0 {
                "cannot create a zstd context".to_string()
            } else {
                zstd::zstd_safe::get_error_name(e).to_string()
            }
        })?;
    out.truncate(n);
    Ok(out)
}

/// Encodes a chunk: zstd at `level`, unless that does not make it smaller.
pub fn encode(data: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 16);
    out.push(ENC_ZSTD);
    // zstd::bulk with an output bound avoids a reallocation; failure only means "did not shrink".
    let bound = zstd::zstd_safe::compress_bound(data.len());
    out.resize(1 + bound, 0);
    let r = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).expect("valid zstd level")));
        }
        slot.as_mut().expect("set").1.compress_to_buffer(data, &mut out[1..])
    });
    match r {
        Ok(n) if n < data.len() => {
            out.truncate(1 + n);
            out
        }
        _ => {
            out.clear();
            out.push(ENC_RAW);
            out.extend_from_slice(data);
            out
        }
    }
}

/// Decodes a stored chunk body of encoding 0 or 1; `raw_len` is the expected plaintext length.
/// A body that references another chunk (encodings 2 and 3) needs [`decode_with`].
pub fn decode(payload: &[u8], raw_len: usize, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
    decode_with(payload, raw_len, what, &|id| {
        Err(Error::corrupt(
            what(),
            format!("references chunk {} (a delta or dictionary), which is not at hand", id.short()),
        ))
    })
}

/// Decodes a stored chunk body; `raw_len` is the expected plaintext length. For encodings that
/// reference another chunk, `referenced` supplies that chunk's (already verified) plaintext.
pub fn decode_with(
    payload: &[u8],
    raw_len: usize,
    what: &dyn Fn() -> String,
    referenced: &dyn Fn(&ChunkId) -> Result<Arc<Vec<u8>>>,
) -> Result<Vec<u8>> {
    let (&enc, body) = payload.split_first().ok_or_else(|| Error::corrupt(what(), "empty chunk payload"))?;
    let out = match enc {
        ENC_RAW => body.to_vec(),
        ENC_ZSTD => {
            // Decoded into the spare capacity: no zero fill of a buffer about to be overwritten.
            let mut out = Vec::with_capacity(raw_len);
            let n = DECOMPRESSOR
                .with(|cell| {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        *slot = Some(zstd::bulk::Decompressor::new()?);
                    }
                    slot.as_mut().expect("set").decompress_to_buffer(body, &mut out)
                })
                .map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?;
            out.truncate(n);
            out
        }
        ENC_DELTA => {
            let base_id = reference(payload).ok_or_else(|| Error::corrupt(what(), "delta payload too short"))?;
            let base = referenced(&base_id)?;
            decompress_with_prefix(&body[REF_LEN..], &base, raw_len)
                .map_err(|e| Error::corrupt(what(), format!("zstd delta against chunk {}: {e}", base_id.short())))?
        }
        ENC_SLICE => slice(payload, raw_len, what, referenced, &mut |part| Ok(part.to_vec()))?,
        ENC_DELTA_PART => {
            let whole_id = reference(payload).ok_or_else(|| Error::corrupt(what(), "payload too short"))?;
            let range = referenced_part(payload, raw_len).ok_or_else(|| Error::corrupt(what(), "payload too short"))?;
            let whole = referenced(&whole_id)?;
            let part = part_of(range, &whole_id, &whole, what)?;
            decompress_with_prefix(&body[REF_LEN + 8..], part, raw_len).map_err(|e| {
                Error::corrupt(what(), format!("zstd delta against part of chunk {}: {e}", whole_id.short()))
            })?
        }
        other => return Err(Error::corrupt(what(), format!("unknown chunk encoding {other}"))),
    };
    if out.len() != raw_len {
        return Err(Error::corrupt(what(), format!("decoded {} bytes, index says {raw_len}", out.len())));
    }
    Ok(out)
}

/// The bytes `range` of chunk `whole` (id `whole_id`) that a slice or a delta against a part
/// uses, or the damage of a range that lies outside it.
fn part_of<'w>(
    range: std::ops::Range<usize>,
    whole_id: &ChunkId,
    whole: &'w [u8],
    what: &dyn Fn() -> String,
) -> Result<&'w [u8]> {
    let (start, len) = (range.start, range.len());
    whole.get(range).ok_or_else(|| {
        Error::corrupt(
            what(),
            format!("bytes {start}+{len} lie outside chunk {} ({} bytes)", whole_id.short(), whole.len()),
        )
    })
}

/// Decodes a slice payload (encoding 4) and hands its bytes, borrowed from the group's
/// plaintext, to `use_part`: a caller that only hashes them (verify) copies nothing.
pub fn slice<T>(
    payload: &[u8],
    raw_len: usize,
    what: &dyn Fn() -> String,
    referenced: &dyn Fn(&ChunkId) -> Result<Arc<Vec<u8>>>,
    use_part: &mut dyn FnMut(&[u8]) -> Result<T>,
) -> Result<T> {
    if payload.first() != Some(&ENC_SLICE) {
        return Err(Error::corrupt(what(), "not a slice payload"));
    }
    let whole_id = reference(payload).ok_or_else(|| Error::corrupt(what(), "payload too short"))?;
    let range = referenced_part(payload, raw_len).ok_or_else(|| Error::corrupt(what(), "payload too short"))?;
    if payload.len() != 1 + REF_LEN + 4 {
        return Err(Error::corrupt(what(), "slice payload has trailing bytes"));
    }
    let whole = referenced(&whole_id)?;
    use_part(part_of(range, &whole_id, &whole, what)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_and_incompressible() {
        let text = b"hello hello hello hello hello hello hello hello".repeat(20);
        let e = encode(&text, 3);
        assert_eq!(e[0], ENC_ZSTD);
        assert!(e.len() < text.len());
        assert_eq!(decode(&e, text.len(), &|| "t".into()).unwrap(), text);
        let noise: Vec<u8> = (0..1000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let e = encode(&noise, 3);
        assert_eq!(decode(&e, noise.len(), &|| "t".into()).unwrap(), noise);
        assert!(decode(&[9, 1, 2], 2, &|| "t".into()).is_err());
        assert!(decode(&e, noise.len() + 1, &|| "t".into()).is_err());
    }

    fn page(seed: u64) -> Vec<u8> {
        let mut r = crate::format::sample::SplitMix64(seed);
        (0..4096).map(|i| if i % 7 == 0 { r.next_u64() as u8 } else { (i / 64) as u8 }).collect()
    }

    #[test]
    fn delta_round_trips_and_names_its_base() {
        let base = page(1);
        let mut new = base.clone();
        new[100..116].copy_from_slice(b"sixteen new byte");
        let base_id = ChunkId([7; 32]);
        let d = encode_delta(&new, &base_id, &base, 3).unwrap();
        assert_eq!(d[0], ENC_DELTA);
        assert_eq!(reference(&d), Some(base_id));
        assert!(d.len() < encode(&new, 3).len() / 4, "delta {} vs plain {}", d.len(), encode(&new, 3).len());
        let b = Arc::new(base.clone());
        let got = decode_with(&d, new.len(), &|| "t".into(), &|id| {
            assert_eq!(*id, base_id);
            Ok(b.clone())
        })
        .unwrap();
        assert_eq!(got, new);
        // Without its base, or against another base, a delta does not decode.
        assert!(decode(&d, new.len(), &|| "t".into()).unwrap_err().to_string().contains("references chunk"));
        let other = Arc::new(page(2));
        let r = decode_with(&d, new.len(), &|| "t".into(), &|_| Ok(other.clone()));
        assert!(r.is_err() || r.unwrap() != new);
        // Too short a length is an error, not a larger allocation.
        assert!(decode_with(&d, new.len() - 1, &|| "t".into(), &|_| Ok(b.clone())).is_err());
    }

    #[test]
    fn deltas_decode_one_after_another_on_one_thread() {
        // The thread's reused context must carry nothing from one delta to the next; a base that
        // starts like a zstd dictionary must still be taken as raw content.
        let mut magic_base = page(3);
        magic_base[..4].copy_from_slice(&ZSTD_DICT_MAGIC);
        for round in 0..3 {
            for (i, base) in [page(4), magic_base.clone(), page(5)].into_iter().enumerate() {
                let mut new = base.clone();
                new[200 + i..220 + i].copy_from_slice(b"twenty changed bytes");
                new[4000] ^= round as u8 + 1;
                let d = encode_delta(&new, &ChunkId([i as u8; 32]), &base, 3).unwrap();
                let b = Arc::new(base);
                assert_eq!(decode_with(&d, new.len(), &|| "t".into(), &|_| Ok(b.clone())).unwrap(), new);
                let plain = encode(&new, 3);
                assert_eq!(decode(&plain, new.len(), &|| "t".into()).unwrap(), new);
            }
        }
    }

    #[test]
    fn reference_only_for_delta_and_dictionary() {
        let mut p = vec![ENC_DELTA];
        p.extend_from_slice(&[9; 31]);
        assert_eq!(reference(&p), None, "31 bytes are no id");
        p.push(9);
        assert_eq!(reference(&p), Some(ChunkId([9; 32])));
        for enc in [ENC_DICT, ENC_SLICE, ENC_DELTA_PART] {
            p[0] = enc;
            assert_eq!(reference(&p), Some(ChunkId([9; 32])));
        }
        for enc in [ENC_RAW, ENC_ZSTD, 6, 255] {
            p[0] = enc;
            assert_eq!(reference(&p), None);
        }
        assert_eq!(reference(&[]), None);
    }

    #[test]
    fn slices_and_deltas_against_a_part_of_a_group() {
        let (a, b) = (page(3), page(4));
        let group: Vec<u8> = [a.clone(), b.clone()].concat();
        let gid = ChunkId([5; 32]);
        let g = Arc::new(group.clone());
        let with_group = |p: &[u8], len: usize| {
            decode_with(p, len, &|| "t".into(), &|id| {
                assert_eq!(*id, gid);
                Ok(g.clone())
            })
        };
        let s = encode_slice(&gid, 4096);
        assert_eq!((s[0], s.len(), reference(&s)), (ENC_SLICE, 37, Some(gid)));
        assert_eq!(with_group(&s, 4096).unwrap(), b);
        // A slice reaching past its group, or with bytes after its start, is refused.
        assert!(with_group(&s, 4097).unwrap_err().to_string().contains("outside chunk"));
        assert!(with_group(&encode_slice(&gid, u32::MAX), 4096).is_err());
        let mut long = s.clone();
        long.push(0);
        assert!(with_group(&long, 4096).is_err());
        assert!(with_group(&s[..36], 4096).is_err());
        // A changed second page, as a delta against that page inside the group.
        let mut new = b.clone();
        new[200..216].copy_from_slice(b"sixteen new byte");
        let d = encode_delta_part(&new, &gid, &group, 4096..8192, 3).unwrap();
        assert_eq!((d[0], reference(&d)), (ENC_DELTA_PART, Some(gid)));
        assert!(d.len() < encode(&new, 3).len() / 4);
        assert_eq!(with_group(&d, new.len()).unwrap(), new);
        // Against the wrong part it does not give the page back.
        let mut wrong = d.clone();
        wrong[33..37].copy_from_slice(&0u32.to_le_bytes());
        assert!(with_group(&wrong, new.len()).map_or(true, |got| got != new));
        wrong[33..37].copy_from_slice(&8000u32.to_le_bytes());
        assert!(with_group(&wrong, new.len()).is_err());
    }
}
