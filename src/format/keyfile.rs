//! Key files (`keys/<random id>`): the master key wrapped with a key derived from a password by
//! Argon2id. Several key files may wrap the same master key; each is immutable (a password change
//! writes a new key file and removes the old one). Format: format-spec/keys.md.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::format::crypto::MasterKey;
use crate::id::RepoId;

/// Associated data of the wrapped master key.
const KEY_AAD: &[u8] = b"cairn key file v1";

/// Argon2id cost parameters, stored in each key file.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 32 MiB, 4 passes, 1 lane: above OWASP's Argon2id minimums (19 MiB x 2, 46 MiB x 1), about
    /// a second on a Raspberry Pi, and small enough that opening a repository stays inside cairn's
    /// 64 MiB peak-memory budget (the KDF's memory is the largest single allocation cairn makes).
    fn default() -> Self {
        KdfParams { m_cost_kib: 32 * 1024, t_cost: 4, p_cost: 1 }
    }
}

impl KdfParams {
    /// Lowest memory cost a key file may be written with (`--kdf-memory`). Far below the default:
    /// for test suites and machines with almost no memory, never chosen silently.
    pub const MIN_MEMORY_KIB: u32 = 1024;
    /// Highest memory cost a key file is read with: a planted key file must not exhaust the machine.
    pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
    /// Highest pass count a key file is read with.
    pub const MAX_PASSES: u32 = 16;
    /// Highest lane count a key file is read with.
    pub const MAX_LANES: u32 = 16;

    /// The defaults with another memory cost (`cairn --kdf-memory KIB`), refused outside
    /// [`MIN_MEMORY_KIB`](Self::MIN_MEMORY_KIB)..=[`MAX_MEMORY_KIB`](Self::MAX_MEMORY_KIB).
    pub fn with_memory_kib(m_cost_kib: u32) -> Result<Self> {
        let p = KdfParams { m_cost_kib, ..KdfParams::default() };
        p.check_for_writing()?;
        Ok(p)
    }

    /// Whether a key file with these costs is read (the caps only: old key files stay readable).
    fn readable(&self) -> bool {
        self.m_cost_kib <= Self::MAX_MEMORY_KIB && self.t_cost <= Self::MAX_PASSES && self.p_cost <= Self::MAX_LANES
    }

    /// A new key file needs costs at least the floor and readable back.
    fn check_for_writing(&self) -> Result<()> {
        if self.m_cost_kib < Self::MIN_MEMORY_KIB || self.t_cost == 0 || self.p_cost == 0 || !self.readable() {
            return Err(Error::Invalid(format!(
                "Argon2id memory cost {} KiB, {} passes, {} lanes: a key file needs {}..={} KiB, 1..={} passes, 1..={} lanes",
                self.m_cost_kib,
                self.t_cost,
                self.p_cost,
                Self::MIN_MEMORY_KIB,
                Self::MAX_MEMORY_KIB,
                Self::MAX_PASSES,
                Self::MAX_LANES
            )));
        }
        Ok(())
    }
}

/// The JSON content of a key file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Always 1.
    pub version: u32,
    /// Always "argon2id".
    pub kdf: String,
    /// Cost parameters.
    pub params: KdfParams,
    /// 32 random bytes, hex.
    pub salt: String,
    /// 24 random bytes, hex.
    pub nonce: String,
    /// XChaCha20-Poly1305 of master key (32) || repository id (32), hex.
    pub wrapped: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// Host that made it.
    pub host: String,
    /// User-given label.
    #[serde(default)]
    pub label: String,
}

fn kek(password: &[u8], salt: &[u8], p: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| Error::Invalid(format!("bad Argon2id parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon.hash_password_into(password, salt, &mut *out).map_err(|e| Error::Invalid(format!("Argon2id failed: {e}")))?;
    Ok(out)
}

impl KeyFile {
    /// Wraps `master` under `password`.
    pub fn wrap(master: &MasterKey, repo_id: RepoId, password: &[u8], params: KdfParams, label: &str) -> Result<Self> {
        params.check_for_writing()?;
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 24];
        crate::util::os_random(&mut salt);
        crate::util::os_random(&mut nonce);
        let kek = kek(password, &salt, params)?;
        let mut plain = Zeroizing::new([0u8; 64]);
        plain[..32].copy_from_slice(&master.0);
        plain[32..].copy_from_slice(&repo_id.0);
        let cipher = XChaCha20Poly1305::new((&*kek).into());
        let wrapped = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: &plain[..], aad: KEY_AAD })
            .expect("in-memory encryption cannot fail");
        Ok(KeyFile {
            version: 1,
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            nonce: hex::encode(nonce),
            wrapped: hex::encode(wrapped),
            created: chrono::Local::now().to_rfc3339(),
            host: crate::util::hostname(),
            label: label.into(),
        })
    }

    /// Parses a key file; `name` is used in errors.
    pub fn parse(bytes: &[u8], name: &str) -> Result<Self> {
        let kf: KeyFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(format!("key file {name}"), format!("damaged: {e}")))?;
        if kf.version != 1 || kf.kdf != "argon2id" {
            return Err(Error::corrupt(format!("key file {name}"), "unsupported version or KDF"));
        }
        let lens = (kf.salt.len(), kf.nonce.len(), kf.wrapped.len());
        if lens != (64, 48, (64 + 16) * 2) {
            return Err(Error::corrupt(format!("key file {name}"), "damaged: wrong field lengths"));
        }
        // Checked here, not at unwrap time, so a damaged file is set aside and the others tried.
        if [&kf.salt, &kf.nonce, &kf.wrapped].iter().any(|s| !s.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(Error::corrupt(format!("key file {name}"), "damaged: bad hex"));
        }
        if !kf.params.readable() {
            return Err(Error::corrupt(format!("key file {name}"), "Argon2id parameters out of range (at most 1 GiB, 16 passes, 16 lanes): refused so a planted key file cannot exhaust the machine"));
        }
        Ok(kf)
    }

    /// Tries to unwrap with `password`: `Ok(None)` when the password does not fit.
    pub fn unwrap_key(&self, password: &[u8], name: &str) -> Result<Option<(MasterKey, RepoId)>> {
        let dec = |s: &str| hex::decode(s).map_err(|_| Error::corrupt(format!("key file {name}"), "damaged: bad hex"));
        let salt = dec(&self.salt)?;
        let nonce = dec(&self.nonce)?;
        let wrapped = dec(&self.wrapped)?;
        let kek = kek(password, &salt, self.params)?;
        let cipher = XChaCha20Poly1305::new((&*kek).into());
        match cipher.decrypt(XNonce::from_slice(&nonce), Payload { msg: &wrapped, aad: KEY_AAD }) {
            Ok(plain) => {
                let plain = Zeroizing::new(plain);
                let mut mk = [0u8; 32];
                mk.copy_from_slice(&plain[..32]);
                let id = RepoId::from_slice(&plain[32..64]).expect("64-byte plaintext");
                Ok(Some((MasterKey(mk), id)))
            }
            Err(_) => Ok(None),
        }
    }

    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("serializable");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_below_the_floor_or_above_the_caps_are_never_written() {
        assert_eq!(KdfParams::with_memory_kib(2048).unwrap(), KdfParams { m_cost_kib: 2048, ..KdfParams::default() });
        assert!(KdfParams::with_memory_kib(KdfParams::MIN_MEMORY_KIB - 1).is_err());
        assert!(KdfParams::with_memory_kib(KdfParams::MAX_MEMORY_KIB + 1).is_err());
        let master = MasterKey([7; 32]);
        let id = RepoId([9; 32]);
        for bad in [
            KdfParams { m_cost_kib: 8, t_cost: 1, p_cost: 1 },
            KdfParams { m_cost_kib: 1024, t_cost: 0, p_cost: 1 },
            KdfParams { m_cost_kib: 1024, t_cost: KdfParams::MAX_PASSES + 1, p_cost: 1 },
        ] {
            assert!(KeyFile::wrap(&master, id, b"pw", bad, "").is_err(), "{bad:?}");
        }
        let floor = KdfParams::with_memory_kib(KdfParams::MIN_MEMORY_KIB).unwrap();
        let kf = KeyFile::wrap(&master, id, b"pw", floor, "").unwrap();
        let back = KeyFile::parse(&kf.to_bytes(), "k").unwrap();
        assert_eq!(back.params, floor);
        assert_eq!(back.unwrap_key(b"pw", "k").unwrap().map(|(m, i)| (m.0, i)), Some(([7; 32], id)));
    }
}
