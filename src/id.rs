//! 32-byte identifiers, one newtype per kind so a pack id can never be passed where a chunk id
//! is expected. Hex appears only at the edges (file names, CLI, JSON).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Lowercase hex, the form used in file names and output.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The first 8 bytes as hex: what listings show.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
            /// Raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// From a 32-byte slice; `None` when the length is wrong.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                <[u8; 32]>::try_from(b).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = hex::FromHexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out)?;
                Ok(Self(out))
            }
        }
    };
}

id_type!(
    /// Keyed BLAKE3 of a chunk's plaintext.
    ChunkId
);
id_type!(
    /// Plain BLAKE3 of a pack file's bytes; also its file name.
    PackId
);
id_type!(
    /// Plain BLAKE3 of an index file's bytes; also its file name.
    IndexId
);
id_type!(
    /// Plain BLAKE3 of a snapshot file's bytes; also its file name.
    SnapshotId
);
id_type!(
    /// Plain BLAKE3 of a verification file's bytes; also its file name.
    VerificationId
);
id_type!(
    /// Random identity of a repository, bound into every encrypted object.
    RepoId
);
id_type!(
    /// Random name of a key file.
    KeyId
);
id_type!(
    /// Random name of a lock file.
    LockId
);

/// Plain (unkeyed) BLAKE3 of stored bytes: the name of every content-named file, so that
/// `b3sum` alone can check a repository copy.
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// Serde helpers that write ids as hex strings in reports (`#[serde(serialize_with = ...)]`);
/// the derived `Serialize` writes raw bytes, which is what the binary formats want.
pub mod as_hex {
    use std::fmt::Display;

    use serde::Serializer;

    /// One id.
    pub fn one<S: Serializer, T: Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    /// An optional id (`null` when absent).
    pub fn option<S: Serializer, T: Display>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    /// A list of ids.
    pub fn list<S: Serializer, T: Display>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.to_string()))
    }
}
