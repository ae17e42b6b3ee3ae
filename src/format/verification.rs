//! Verification files (`verifications/<name>`, format-spec/verification.md): who verified a
//! pre-change snapshot and when, as a small object of its own that names the snapshot. The
//! snapshot file is never rewritten, so its id (cited in change tickets) stays what it was.
//!
//! File: `seal(Verification, 0, 0x01 || bincode(Verification))`, named by the BLAKE3 of the
//! sealed bytes like a snapshot file; bincode 2.0.1 standard config, as `manifest.rs`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::crypto::{Keys, ObjectKind};
use crate::format::manifest::Snapshot;
use crate::id::SnapshotId;

/// Version byte of the verification plaintext.
pub const VERIFICATION_VERSION: u8 = 1;

/// The labels a verification shows as on the snapshot it names, once read (also what cairn
/// before verification files wrote into a rewritten snapshot, so both read alike).
pub const VERIFIED_BY: &str = "verified_by";
/// See [`VERIFIED_BY`].
pub const VERIFIED_DATE: &str = "verified_date";

/// One verification of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// The snapshot verified.
    pub snapshot: SnapshotId,
    /// Who verified the change.
    pub by: String,
    /// When, RFC 3339 with offset.
    pub time: String,
}

impl Verification {
    /// The plaintext.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERIFICATION_VERSION];
        out.extend(bincode::serde::encode_to_vec(self, bincode::config::standard()).expect("serializable"));
        out
    }

    /// Decodes a plaintext.
    pub fn decode(plain: &[u8], what: &dyn Fn() -> String) -> Result<Self> {
        let (&v, body) = plain.split_first().ok_or_else(|| Error::corrupt(what(), "empty verification"))?;
        if v != VERIFICATION_VERSION {
            return Err(Error::corrupt(what(), format!("unknown verification version {v}")));
        }
        let cfg = bincode::config::standard().with_limit::<{ 1 << 20 }>();
        let (s, n): (Verification, usize) = bincode::serde::decode_from_slice(body, cfg)
            .map_err(|e| Error::corrupt(what(), format!("undecodable: {e}")))?;
        if n != body.len() {
            return Err(Error::corrupt(what(), "trailing bytes"));
        }
        Ok(s)
    }

    /// Seals for storage.
    pub fn seal(&self, keys: &Keys) -> Vec<u8> {
        keys.seal(ObjectKind::Verification, &[0; 32], &self.encode())
    }

    /// Opens a stored verification file.
    pub fn open(keys: &Keys, sealed: &[u8], what: &dyn Fn() -> String) -> Result<Self> {
        Self::decode(&keys.open(ObjectKind::Verification, &[0; 32], sealed, what)?, what)
    }

    /// The verification time parsed.
    pub fn datetime(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        chrono::DateTime::parse_from_rfc3339(&self.time).ok()
    }
}

/// Shows the verifications among `verifs` on the snapshots they name, as the labels
/// [`VERIFIED_BY`] and [`VERIFIED_DATE`] (in memory only; the snapshot file is unchanged). Of
/// several verifications of one snapshot the earliest counts.
pub fn apply(snaps: &mut [(SnapshotId, Snapshot)], verifs: &[Verification]) {
    for (id, s) in snaps.iter_mut() {
        let first = verifs.iter().filter(|v| v.snapshot == *id).min_by(|a, b| match (a.datetime(), b.datetime()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => a.time.cmp(&b.time),
        });
        if let Some(v) = first {
            s.labels.insert(VERIFIED_BY.into(), v.by.clone());
            s.labels.insert(VERIFIED_DATE.into(), v.time.clone());
        }
    }
}

/// Whether `s` (read through `Repo::snapshots`, `Repo::resolve` or a `SnapshotSet`, which show
/// its verification) has been verified: by a verification file, or by the labels an older cairn
/// wrote into a rewritten snapshot.
pub fn is_verified(s: &Snapshot) -> bool {
    s.labels.contains_key(VERIFIED_BY)
}

/// Who verified `s` and when (the time as recorded), if it is verified.
pub fn verified(s: &Snapshot) -> Option<(&str, Option<&str>)> {
    s.labels.get(VERIFIED_BY).map(|by| (by.as_str(), s.labels.get(VERIFIED_DATE).map(String::as_str)))
}
