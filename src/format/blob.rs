//! The storage encoding of one chunk before sealing: one encoding byte, then the body.
//! New encodings (a zstd delta against a base chunk, say) are new byte values, so they can be
//! added without a format break; readers refuse values they do not know.

use std::cell::RefCell;

use crate::error::{Error, Result};

thread_local! {
    // zstd contexts are expensive to create (hundreds of KiB); one per thread, reused, keeps
    // page-sized chunks cheap.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Body is the chunk itself.
pub const ENC_RAW: u8 = 0;
/// Body is one zstd frame that decompresses to the chunk.
pub const ENC_ZSTD: u8 = 1;

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

/// Decodes a stored chunk body; `raw_len` is the expected plaintext length.
pub fn decode(payload: &[u8], raw_len: usize, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
    let (&enc, body) = payload.split_first().ok_or_else(|| Error::corrupt(what(), "empty chunk payload"))?;
    let out = match enc {
        ENC_RAW => body.to_vec(),
        ENC_ZSTD => {
            let mut out = vec![0u8; raw_len];
            let n = DECOMPRESSOR
                .with(|cell| {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        *slot = Some(zstd::bulk::Decompressor::new()?);
                    }
                    slot.as_mut().expect("set").decompress_to_buffer(body, &mut out[..])
                })
                .map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?;
            out.truncate(n);
            out
        }
        other => return Err(Error::corrupt(what(), format!("unknown chunk encoding {other}"))),
    };
    if out.len() != raw_len {
        return Err(Error::corrupt(what(), format!("decoded {} bytes, index says {raw_len}", out.len())));
    }
    Ok(out)
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
}
