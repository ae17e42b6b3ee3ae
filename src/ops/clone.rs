//! Reading a repository from a remote alone (disaster recovery): `clone` copies the whole remote
//! into a new local repository, and `--remote` without a local repository reads through a local
//! partial mirror (config, keys, index files and snapshots; packs fetched on first use by
//! [`crate::store::fetching::FetchingStore`]). Everything read is checked as in a local
//! repository (names are hashes, objects are authenticated).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store::{FileKind, Handle, LocalStore, Store};

/// The cache directory for remote mirrors: `$XDG_CACHE_HOME/cairn` or `~/.cache/cairn`.
pub fn default_cache_root() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("cairn")
}

/// Refreshes (or creates) the partial mirror of `remote` under `cache_root` and returns its
/// directory. `target` identifies the remote (its rclone target): one mirror per target. The
/// mirror then holds exactly the remote's config, keys, index files and snapshots; packs it
/// fetched earlier stay.
pub fn refresh_mirror(remote: &dyn Store, target: &str, cache_root: &Path) -> Result<PathBuf> {
    let key = hex::encode(&blake3::hash(target.as_bytes()).as_bytes()[..8]);
    let dir = cache_root.join(format!("remote-{key}"));
    let local = LocalStore::new(&dir);
    local.create_layout()?;
    let config = remote.get(Handle::Config).map_err(|e| Error::NotARepository {
        path: PathBuf::from(target),
        detail: format!("cannot read the repository config from the remote: {e}"),
    })?;
    // The mirror follows the remote: a config that differs is the remote's newer truth (a
    // repository created again at the same target), not a name to keep.
    if local.get(Handle::Config).ok().is_some_and(|c| c != config) {
        local.remove(Handle::Config)?;
    }
    local.put(Handle::Config, &config)?;
    let on_remote: HashSet<Handle> = remote
        .inventory()?
        .objects
        .into_iter()
        .map(|s| s.handle)
        .filter(|h| matches!(h.kind(), FileKind::Key | FileKind::Index | FileKind::Snapshot | FileKind::Verification))
        .collect();
    let mut fetch: Vec<Handle> = Vec::new();
    for kind in [FileKind::Key, FileKind::Index, FileKind::Snapshot, FileKind::Verification] {
        let here: HashSet<Handle> = local.list(kind)?.into_iter().map(|s| s.handle).collect();
        for h in here.difference(&on_remote.iter().filter(|h| h.kind() == kind).copied().collect()) {
            local.remove(*h)?;
        }
        fetch.extend(on_remote.iter().filter(|h| h.kind() == kind && !here.contains(h)));
    }
    fetch.sort();
    local.copy_in(remote, &fetch)?;
    Ok(dir)
}

/// Copies a whole remote into a new local repository at `dest` (`cairn clone`). The repository
/// appears at `dest` only once complete.
pub fn clone_all(remote: &dyn Store, dest: &Path) -> Result<()> {
    if !LocalStore::is_absent_or_empty(dest)? {
        return Err(Error::Invalid(format!("{}: exists and is not empty", dest.display())));
    }
    LocalStore::create_atomically(dest, |store| {
        let mut all: Vec<Handle> = remote
            .inventory()?
            .objects
            .into_iter()
            .map(|s| s.handle)
            .filter(|h| !matches!(h.kind(), FileKind::Config | FileKind::Lock))
            .collect();
        all.sort();
        all.dedup();
        store.copy_in(remote, &all)?;
        store.copy_in(remote, &[Handle::Config])
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{content_hash, IndexId, KeyId, PackId, SnapshotId};
    use crate::store::memory::MemoryStore;

    fn remote() -> MemoryStore {
        let r = MemoryStore::new();
        r.put(Handle::Config, b"{}\n").unwrap();
        r.put(Handle::Key(KeyId([1; 32])), b"key").unwrap();
        r.put(Handle::Pack(PackId(content_hash(b"pack"))), b"pack").unwrap();
        r.put(Handle::Index(IndexId(content_hash(b"index"))), b"index").unwrap();
        r.put(Handle::Snapshot(SnapshotId(content_hash(b"snap"))), b"snap").unwrap();
        r
    }

    #[test]
    fn the_mirror_follows_the_remote_but_packs_wait_for_first_use() {
        let d = tempfile::tempdir().unwrap();
        let r = remote();
        let dir = refresh_mirror(&r, "mem:x", d.path()).unwrap();
        let local = LocalStore::new(&dir);
        assert_eq!(local.list(FileKind::Pack).unwrap(), vec![]);
        for kind in [FileKind::Config, FileKind::Key, FileKind::Index, FileKind::Snapshot] {
            assert_eq!(local.list(kind).unwrap(), r.list(kind).unwrap(), "{kind:?}");
        }
        // The remote forgets a snapshot and gains another: the next refresh follows.
        r.remove(Handle::Snapshot(SnapshotId(content_hash(b"snap")))).unwrap();
        r.put(Handle::Snapshot(SnapshotId(content_hash(b"snap2"))), b"snap2").unwrap();
        assert_eq!(refresh_mirror(&r, "mem:x", d.path()).unwrap(), dir);
        assert_eq!(local.list(FileKind::Snapshot).unwrap(), r.list(FileKind::Snapshot).unwrap());
    }

    #[test]
    fn a_remote_without_config_is_not_a_repository() {
        let d = tempfile::tempdir().unwrap();
        let e = refresh_mirror(&MemoryStore::new(), "mem:y", d.path()).unwrap_err();
        assert!(matches!(e, Error::NotARepository { .. }), "{e}");
    }

    #[test]
    fn clone_copies_everything_into_a_new_directory_only() {
        let d = tempfile::tempdir().unwrap();
        let r = remote();
        let dest = d.path().join("new");
        clone_all(&r, &dest).unwrap();
        let local = LocalStore::new(&dest);
        for kind in FileKind::LISTING_ORDER {
            assert_eq!(local.list(kind).unwrap(), r.list(kind).unwrap(), "{kind:?}");
        }
        assert!(matches!(clone_all(&r, &dest), Err(Error::Invalid(_))));
        r.fail_listings(true);
        assert!(clone_all(&r, &d.path().join("other")).is_err());
        assert!(!d.path().join("other").exists());
    }
}
