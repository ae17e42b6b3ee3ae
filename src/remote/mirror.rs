//! Reading a repository from a remote alone (disaster recovery): a local partial mirror holding
//! the config, keys, index files and snapshots, with packs fetched on first use. Everything read
//! is checked as in a local repository (names are hashes, objects are authenticated).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::remote::rclone::Rclone;
use crate::store::LocalStore;

/// The cache directory for a remote's mirror: `$XDG_CACHE_HOME/cairn` or `~/.cache/cairn`.
pub fn default_cache_root() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("cairn")
}

/// Refreshes (or creates) the partial mirror of `remote` under `cache_root`; returns its path.
pub fn refresh(remote: &Rclone, cache_root: &Path) -> Result<PathBuf> {
    let key = hex::encode(&blake3::hash(remote.target.as_bytes()).as_bytes()[..8]);
    let dir = cache_root.join(format!("remote-{key}"));
    let store = LocalStore::new(&dir);
    store.create_layout()?;
    let cfg_tmp = dir.join("tmp").join("config.download");
    remote.download("config", &cfg_tmp).map_err(|e| Error::NotARepository {
        path: PathBuf::from(&remote.target),
        detail: format!("cannot read the repository config from the remote: {e}"),
    })?;
    std::fs::rename(&cfg_tmp, dir.join("config")).map_err(|e| Error::io(dir.join("config"), e))?;
    for d in ["keys", "index", "snapshots"] {
        remote.mirror_dir(d, &dir.join(d))?;
    }
    Ok(dir)
}

/// Copies a whole remote into a new local repository at `dest` (`cairn clone`).
pub fn clone_all(remote: &Rclone, dest: &Path) -> Result<()> {
    if dest.exists() && std::fs::read_dir(dest).map_err(|e| Error::io(dest, e))?.next().is_some() {
        return Err(Error::Invalid(format!("{}: exists and is not empty", dest.display())));
    }
    let store = LocalStore::new(dest);
    store.create_layout()?;
    for d in ["keys", "packs", "index", "snapshots"] {
        remote.download_dir(d, &dest.join(d))?;
    }
    remote.download("config", &dest.join("config"))?;
    Ok(())
}
