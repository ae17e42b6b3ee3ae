//! The repository config file (`config`): JSON, written once at `init`, never changed. It holds
//! no secret in an encrypted repository (keys live in `keys/`). Format: format-spec/layout.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::format::chunker::ChunkerParams;
use crate::id::RepoId;

/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Value of the `format` field.
pub const FORMAT_NAME: &str = "cairn-repository";

/// How objects are protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encryption {
    /// XChaCha20-Poly1305 under a master key wrapped in `keys/` by Argon2id.
    #[serde(rename = "xchacha20poly1305")]
    XChaCha20Poly1305,
    /// Plaintext with a keyed integrity tag; the master key is in this file.
    #[serde(rename = "none")]
    None,
}

/// zstd settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// Always "zstd".
    pub algorithm: CompressionAlgorithm,
    /// zstd level (1..=19).
    pub level: i32,
}

/// Supported compressors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompressionAlgorithm {
    /// Zstandard.
    #[serde(rename = "zstd")]
    Zstd,
}

/// The repository config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Always "cairn-repository".
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Random repository id (a JSON array of 32 numbers).
    pub id: RepoId,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Object protection.
    pub encryption: Encryption,
    /// Master key in hex, present only when `encryption` is "none".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_master_key: Option<String>,
    /// Compression of chunks.
    pub compression: Compression,
    /// Target pack size in bytes.
    pub pack_size: u64,
    /// Chunker per backup type; "default" applies to types not listed, "tree" to snapshot trees.
    pub chunkers: BTreeMap<String, ChunkerParams>,
    /// Whether files with a SQLite header are cut at their page size in every type.
    pub sqlite_pages: bool,
}

/// Parameters chosen by measurement (format-spec/chunking.md).
pub fn default_chunkers() -> BTreeMap<String, ChunkerParams> {
    let mut m = BTreeMap::new();
    // Logs, config, anything: appends and small edits; 256 KiB keeps the rewritten tail small.
    m.insert(
        "default".into(),
        ChunkerParams::FastCdc { min: 64 * 1024, avg: 256 * 1024, max: 1024 * 1024, normalization: 1 },
    );
    // Non-SQLite database streams (pg_dump text): row edits are local, small chunks pay.
    m.insert("db".into(), ChunkerParams::FastCdc { min: 8 * 1024, avg: 32 * 1024, max: 128 * 1024, normalization: 1 });
    m.insert(
        "tree".into(),
        ChunkerParams::FastCdc { min: 64 * 1024, avg: 256 * 1024, max: 1024 * 1024, normalization: 1 },
    );
    m
}

impl RepoConfig {
    /// Chunker parameters for a backup type.
    pub fn chunker_for(&self, backup_type: &str) -> ChunkerParams {
        self.chunkers
            .get(backup_type)
            .or_else(|| self.chunkers.get("default"))
            .copied()
            .unwrap_or_else(|| default_chunkers()["default"])
    }

    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("serializable");
        v.push(b'\n');
        v
    }

    /// Checks values a hand-edited or damaged config could get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT_NAME {
            return Err(format!("not a cairn repository config (format {:?})", self.format));
        }
        if self.version != FORMAT_VERSION {
            return Err(format!(
                "repository format version {} is not supported by this cairn (it reads version {FORMAT_VERSION}); \
                 use the cairn release that wrote it (format-spec/README.md lists the versions)",
                self.version
            ));
        }
        if !(1..=19).contains(&self.compression.level) {
            return Err(format!("compression level {} out of range 1..19", self.compression.level));
        }
        if !(1 << 20..=1 << 30).contains(&self.pack_size) {
            return Err(format!("pack_size {} out of range 1 MiB..1 GiB", self.pack_size));
        }
        for (k, p) in &self.chunkers {
            p.validate().map_err(|e| format!("chunkers.{k}: {e}"))?;
        }
        match (self.encryption, &self.plain_master_key) {
            (Encryption::None, Some(k)) if k.len() == 64 && hex::decode(k).is_ok() => Ok(()),
            (Encryption::None, _) => Err("plain_master_key missing or malformed".into()),
            (Encryption::XChaCha20Poly1305, None) => Ok(()),
            (Encryption::XChaCha20Poly1305, Some(_)) => {
                Err("an encrypted repository must not carry plain_master_key".into())
            }
        }
    }
}
