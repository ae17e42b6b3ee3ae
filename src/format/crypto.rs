//! Object framing: every stored object (chunk, pack trailer, index file, snapshot file) is sealed
//! with its associated data = repository id || object kind || object id, so an object cannot be
//! moved to another repository, pass for another kind, or stand in for another chunk.
//!
//! Encrypted repositories use XChaCha20-Poly1305 with a random 24-byte nonce (no nonce state to
//! lose between hosts). Unencrypted repositories still append a 16-byte keyed BLAKE3 tag, so
//! damage is detected the same way in both modes (format-spec/crypto.md).

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::Rng;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::id::RepoId;

thread_local! {
    // Nonces come from a per-thread ChaCha20 CSPRNG seeded from the OS: random 192-bit nonces
    // need no coordination, and this avoids a getrandom system call per chunk.
    static NONCE_RNG: std::cell::RefCell<rand::rngs::StdRng> =
        std::cell::RefCell::new(
            <rand::rngs::StdRng as rand::SeedableRng>::try_from_rng(&mut rand::rngs::SysRng)
                .expect("the operating system's random generator failed"),
        );
}

/// Length of the random nonce in front of an encrypted object.
pub const NONCE_LEN: usize = 24;
/// Length of the authentication tag after an object (both modes).
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its plaintext in an encrypted repository.
pub const ENCRYPTED_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// What an object is; bound into its associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    /// A chunk inside a pack (file content or tree stream).
    Chunk = 1,
    /// The trailer at the end of a pack.
    PackTrailer = 2,
    /// An index file.
    Index = 3,
    /// A snapshot file.
    Snapshot = 4,
    /// A verification file (format-spec/verification.md).
    Verification = 5,
}

/// BLAKE3 key-derivation contexts, fixed forever for format version 1.
pub mod context {
    /// Encryption key for all objects.
    pub const ENCRYPTION: &str = "cairn 2026-11 object encryption key v1";
    /// Key of the integrity tag of unencrypted repositories.
    pub const PLAIN_MAC: &str = "cairn 2026-11 plaintext object tag key v1";
    /// Key of chunk ids.
    pub const CHUNK_ID: &str = "cairn 2026-11 chunk id key v1";
    /// Seed of the chunker's gear table.
    pub const GEAR_SEED: &str = "cairn 2026-11 chunker gear seed v1";
}

/// The repository master key: every other key is derived from it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey(pub [u8; 32]);

impl MasterKey {
    /// A fresh random key.
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        crate::util::os_random(&mut k);
        MasterKey(k)
    }
}

/// Keys derived from the master key, held for the life of an open repository.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Keys {
    #[zeroize(skip)]
    repo_id: RepoId,
    encrypted: bool,
    enc_key: [u8; 32],
    mac_key: [u8; 32],
    chunk_id_key: [u8; 32],
    gear_seed: u64,
}

impl Keys {
    /// Derives the working keys for a repository.
    pub fn derive(master: &MasterKey, repo_id: RepoId, encrypted: bool) -> Self {
        let seed = blake3::derive_key(context::GEAR_SEED, &master.0);
        Keys {
            repo_id,
            encrypted,
            enc_key: blake3::derive_key(context::ENCRYPTION, &master.0),
            mac_key: blake3::derive_key(context::PLAIN_MAC, &master.0),
            chunk_id_key: blake3::derive_key(context::CHUNK_ID, &master.0),
            gear_seed: u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")),
        }
    }

    /// Whether objects are encrypted.
    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    /// The chunker's gear seed (never zero: zero means "unseeded" to fastcdc).
    pub fn gear_seed(&self) -> u64 {
        self.gear_seed.max(1)
    }

    /// Keyed BLAKE3 chunk id of plaintext.
    pub fn chunk_id(&self, data: &[u8]) -> crate::id::ChunkId {
        crate::id::ChunkId(*blake3::keyed_hash(&self.chunk_id_key, data).as_bytes())
    }

    fn aad(&self, kind: ObjectKind, id: &[u8; 32]) -> [u8; 65] {
        let mut aad = [0u8; 65];
        aad[..32].copy_from_slice(&self.repo_id.0);
        aad[32] = kind as u8;
        aad[33..].copy_from_slice(id);
        aad
    }

    /// Bytes `seal` adds to a plaintext.
    pub fn overhead(&self) -> usize {
        if self.encrypted {
            ENCRYPTED_OVERHEAD
        } else {
            TAG_LEN
        }
    }

    /// Seals `plain` as an object of `kind` named `id` (zeros for content-named files).
    pub fn seal(&self, kind: ObjectKind, id: &[u8; 32], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        if self.encrypted {
            NONCE_RNG.with(|r| r.borrow_mut().fill_bytes(&mut nonce));
        }
        self.seal_with_nonce(kind, id, plain, &nonce)
    }

    /// `seal` with a caller-chosen nonce: only for golden vectors. Reusing a nonce with the same
    /// key breaks confidentiality; everything else uses `seal`.
    pub fn seal_with_nonce(&self, kind: ObjectKind, id: &[u8; 32], plain: &[u8], nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
        let aad = self.aad(kind, id);
        if self.encrypted {
            let cipher = XChaCha20Poly1305::new((&self.enc_key).into());
            // Encrypted where it lies: an index file's plaintext is megabytes, and a separate
            // ciphertext buffer would be a third copy at the peak.
            let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
            out.extend_from_slice(nonce);
            out.extend_from_slice(plain);
            let tag = cipher
                .encrypt_in_place_detached(XNonce::from_slice(nonce), &aad, &mut out[NONCE_LEN..])
                .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
            out.extend_from_slice(&tag);
            out
        } else {
            let mut out = Vec::with_capacity(plain.len() + TAG_LEN);
            out.extend_from_slice(plain);
            out.extend_from_slice(&self.plain_tag(&aad, plain));
            out
        }
    }

    fn plain_tag(&self, aad: &[u8; 65], plain: &[u8]) -> [u8; TAG_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.mac_key);
        h.update(aad);
        h.update(plain);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&h.finalize().as_bytes()[..TAG_LEN]);
        tag
    }

    /// Opens a sealed object; any change to it, its kind, id or repository is an error.
    pub fn open(&self, kind: ObjectKind, id: &[u8; 32], sealed: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        let aad = self.aad(kind, id);
        if self.encrypted {
            if sealed.len() < ENCRYPTED_OVERHEAD {
                return Err(Error::corrupt(what(), "sealed object shorter than nonce and tag"));
            }
            let cipher = XChaCha20Poly1305::new((&self.enc_key).into());
            let (nonce, ct) = sealed.split_at(NONCE_LEN);
            cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad }).map_err(|_| {
                Error::corrupt(what(), "authentication failed (altered, moved or from another repository)")
            })
        } else {
            if sealed.len() < TAG_LEN {
                return Err(Error::corrupt(what(), "object shorter than its tag"));
            }
            let (plain, tag) = sealed.split_at(sealed.len() - TAG_LEN);
            if self.plain_tag(&aad, plain) != tag {
                return Err(Error::corrupt(
                    what(),
                    "integrity tag mismatch (altered, moved or from another repository)",
                ));
            }
            Ok(plain.to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(enc: bool) -> Keys {
        Keys::derive(&MasterKey([7; 32]), RepoId([1; 32]), enc)
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        for enc in [false, true] {
            let k = keys(enc);
            let s = k.seal(ObjectKind::Chunk, &[3; 32], b"hello");
            assert_eq!(k.open(ObjectKind::Chunk, &[3; 32], &s, &|| "x".into()).unwrap(), b"hello");
            assert!(k.open(ObjectKind::Index, &[3; 32], &s, &|| "x".into()).is_err());
            assert!(k.open(ObjectKind::Chunk, &[4; 32], &s, &|| "x".into()).is_err());
            let other = Keys::derive(&MasterKey([7; 32]), RepoId([2; 32]), enc);
            assert!(other.open(ObjectKind::Chunk, &[3; 32], &s, &|| "x".into()).is_err());
            let mut bad = s.clone();
            bad[2] ^= 1;
            assert!(k.open(ObjectKind::Chunk, &[3; 32], &bad, &|| "x".into()).is_err());
        }
    }
}
