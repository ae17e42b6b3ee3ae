//! Verify's full reads: each chosen pack read whole, its hash checked against its name and
//! every chunk opened, decoded and re-hashed (`ChunkReader::check_entries`). Only what failed
//! is kept; the caller turns it into damage and problems.

use crate::error::Error;
use crate::format::crypto::Keys;
use crate::format::pack::parse_pack;
use crate::id::{ChunkId, PackId};
use crate::repo::ChunkReader;
use crate::store::{Handle, Store};

/// What reading one pack whole found.
pub(super) enum PackRead {
    /// The pack could not be read.
    Unreadable { pack: PackId, problem: String },
    /// Read, but its trailer does not open.
    Unparsable { pack: PackId, bytes: u64, problem: String },
    /// Read and every chunk decoded: the failures, and whether the pack's hash matches its name.
    Checked { pack: PackId, bytes: u64, entries: u64, failed: Vec<(ChunkId, Error)>, hash_ok: bool },
}

/// Reads each pack whole and checks its hash and every chunk (one pack in memory at a time).
pub(super) fn read_packs(
    objects: &dyn Store,
    keys: &Keys,
    reader: &ChunkReader,
    packs: &[(PackId, u64)],
) -> Vec<PackRead> {
    let mut out = Vec::new();
    for (pack, _) in packs {
        let pack = *pack;
        let bytes = match objects.get(Handle::Pack(pack)) {
            Ok(b) => b,
            Err(e) => {
                out.push(PackRead::Unreadable { pack, problem: format!("cannot read pack: {e}") });
                continue;
            }
        };
        let what = || format!("pack {pack}");
        let entries = match parse_pack(&bytes, keys, &what) {
            Ok(e) => e,
            Err(e) => {
                out.push(PackRead::Unparsable { pack, bytes: bytes.len() as u64, problem: e.to_string() });
                continue;
            }
        };
        let failed = reader.check_entries(&pack, &bytes, &entries);
        let hash_ok = {
            let mut h = blake3::Hasher::new();
            h.update_rayon(&bytes);
            *h.finalize().as_bytes() == pack.0
        };
        out.push(PackRead::Checked { pack, bytes: bytes.len() as u64, entries: entries.len() as u64, failed, hash_ok });
    }
    out
}
