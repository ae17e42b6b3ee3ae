//! Key management: `key list | add | remove | passwd`. Every key file wraps the same master key,
//! so adding or removing one never touches data.

use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::format::keyfile::{KdfParams, KeyFile};
use crate::format::repo_config::Encryption;
use crate::id::KeyId;
use crate::repo::{read_config, unlock, PasswordFn};
use crate::store::{Handle, LocalStore, Store, StoreExt};

/// One key file as listed.
#[derive(Debug, Serialize)]
pub struct KeyInfo {
    /// File name (id).
    pub id: String,
    /// Whether the given password opened this one.
    pub current: bool,
    /// Creation time.
    pub created: String,
    /// Creating host.
    pub host: String,
    /// Label.
    pub label: String,
    /// Argon2id memory cost, KiB.
    pub m_cost_kib: u32,
}

fn encrypted_store(dir: &std::path::Path) -> Result<LocalStore> {
    let config = read_config(dir)?;
    if config.encryption == Encryption::None {
        return Err(Error::Invalid("this repository is not encrypted: it has no keys (to encrypt, init a new repository and back up into it; keep the old one until its snapshots have expired)".into()));
    }
    Ok(LocalStore::new(dir))
}

/// Lists key files; the password identifies the current one.
pub fn list(dir: &std::path::Path, password: PasswordFn) -> Result<Vec<KeyInfo>> {
    let store = encrypted_store(dir)?;
    let config = read_config(dir)?;
    let (_, current) = unlock(&store, &config, password)?;
    let mut out = Vec::new();
    for k in store.key_ids()? {
        let n = k.to_hex();
        let bytes = store.get(Handle::Key(k))?;
        match KeyFile::parse(&bytes, &n) {
            Ok(kf) => out.push(KeyInfo {
                current: current.as_deref() == Some(n.as_str()),
                id: n,
                created: kf.created,
                host: kf.host,
                label: kf.label,
                m_cost_kib: kf.params.m_cost_kib,
            }),
            Err(e) => out.push(KeyInfo {
                id: n,
                current: false,
                created: String::new(),
                host: String::new(),
                label: format!("DAMAGED: {e}"),
                m_cost_kib: 0,
            }),
        }
    }
    Ok(out)
}

/// Adds a key file for `new_password` with Argon2id cost `kdf`; returns its id.
pub fn add(
    dir: &std::path::Path,
    password: PasswordFn,
    new_password: &[u8],
    label: &str,
    kdf: KdfParams,
) -> Result<String> {
    let store = encrypted_store(dir)?;
    let config = read_config(dir)?;
    let (master, _) = unlock(&store, &config, password)?;
    let kf = KeyFile::wrap(&master, config.id, new_password, kdf, label)?;
    let mut r = Zeroizing::new([0u8; 32]);
    crate::util::os_random(&mut *r);
    let id = KeyId(*r);
    store.put(Handle::Key(id), &kf.to_bytes())?;
    Ok(id.to_hex())
}

/// Removes key file `id` (a prefix is accepted). Refuses the last key and the key in use.
pub fn remove(dir: &std::path::Path, password: PasswordFn, id: &str) -> Result<String> {
    let store = encrypted_store(dir)?;
    let config = read_config(dir)?;
    let (_, current) = unlock(&store, &config, password)?;
    let all: Vec<String> = store.key_ids()?.iter().map(KeyId::to_hex).collect();
    let hits: Vec<&String> = all.iter().filter(|n| n.starts_with(&id.to_ascii_lowercase())).collect();
    let target = match hits.as_slice() {
        [one] => (*one).clone(),
        [] => return Err(Error::NotFound(format!("no key file with id starting {id:?}"))),
        _ => return Err(Error::Invalid(format!("key id prefix {id:?} is ambiguous"))),
    };
    if current.as_deref() == Some(target.as_str()) {
        return Err(Error::Invalid(
            "refusing to remove the key file your password opens; use `key passwd`, or open with another key".into(),
        ));
    }
    if all.len() <= 1 {
        return Err(Error::Invalid("refusing to remove the last key file".into()));
    }
    store.remove(Handle::Key(target.parse().expect("listed names are hex")))?;
    Ok(target)
}

/// Replaces the key file the password opens with one for `new_password` with Argon2id cost `kdf`.
pub fn passwd(dir: &std::path::Path, password: PasswordFn, new_password: &[u8], kdf: KdfParams) -> Result<String> {
    let store = encrypted_store(dir)?;
    let config = read_config(dir)?;
    let (master, current) = unlock(&store, &config, password)?;
    let old = current.expect("encrypted repositories unlock through a key file");
    let old_id: KeyId = old.parse().expect("unlock names a listed key file");
    let label = KeyFile::parse(&store.get(Handle::Key(old_id))?, &old)?.label;
    let kf = KeyFile::wrap(&master, config.id, new_password, kdf, &label)?;
    let mut r = Zeroizing::new([0u8; 32]);
    crate::util::os_random(&mut *r);
    let id = KeyId(*r);
    // New key durable before the old one goes: a crash leaves both, never neither.
    store.put(Handle::Key(id), &kf.to_bytes())?;
    store.remove(Handle::Key(old_id))?;
    Ok(id.to_hex())
}
