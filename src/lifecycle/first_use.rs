//! Create-on-first-use: `backup` and `daemon` against a configured repository that does not exist
//! yet create it, so a fresh install needs no separate `init`. Only for a configuration that never
//! had a repository there: one that has gone (an unmounted disk) is an error, not a fresh start.

use std::path::Path;

use crate::error::Result;
use crate::format::repo_config::{Encryption, RepoConfig};
use crate::lifecycle::config::Config;
use crate::lifecycle::state::Remembered;
use crate::repo::{self, InitOptions, PasswordFn};

/// Creates the repository at `path` if the directory is missing or empty, encrypted unless the
/// config says `"encryption": "none"`; `password` is asked only for an encrypted one. Returns the
/// new repository's config, or `None` when one was already there. `kdf` is the key file's cost.
/// `remembered` is the repository the state outside it says this config had at `path`: if that
/// one is missing, nothing is created and the error says it is gone.
pub fn create_if_fresh(
    path: &Path,
    cfg: &Config,
    kdf: crate::format::keyfile::KdfParams,
    password: PasswordFn,
    remembered: Option<&Remembered>,
) -> Result<Option<RepoConfig>> {
    let fresh = !path.exists() || std::fs::read_dir(path).map(|mut d| d.next().is_none()).unwrap_or(false);
    if !fresh {
        return Ok(None);
    }
    if let Some(r) = remembered {
        return Err(crate::lifecycle::outside::gone_error(path, r));
    }
    let encryption = cfg.backup.encryption.unwrap_or(Encryption::XChaCha20Poly1305);
    let pw = match encryption {
        Encryption::None => None,
        Encryption::XChaCha20Poly1305 => Some(password()?),
    };
    let c =
        repo::init(path, &InitOptions { encryption, kdf, ..Default::default() }, pw.as_ref().map(|p| p.as_slice()))?;
    Ok(Some(c))
}
