//! A partial local mirror of a remote (disaster recovery, `--remote` without a local
//! repository): reads come from the local directory, and a content-named object it lacks (in
//! practice a pack: config, keys, index and snapshot files are mirrored up front) is fetched from
//! the remote, checked against its name, and published locally before it is read. Writes (lock
//! files) stay local.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{FileKind, Handle, Inventory, LocalStore, Stat, Store};
use crate::error::{Error, Result};
use crate::id::content_hash;

/// A local mirror that fetches what it lacks from `remote`.
#[derive(Debug)]
pub struct FetchingStore {
    local: LocalStore,
    remote: Arc<dyn Store>,
    // One fetch at a time: reader threads asking for the same pack wait for the first download
    // instead of starting their own.
    fetching: Mutex<()>,
}

impl FetchingStore {
    /// Reads `local`, fetching from `remote`.
    pub fn new(local: LocalStore, remote: Arc<dyn Store>) -> Self {
        FetchingStore { local, remote, fetching: Mutex::new(()) }
    }

    /// Makes sure `h` is in the local mirror; `false` when the remote does not have it either.
    fn ensure(&self, h: Handle) -> Result<bool> {
        if !h.is_content_named() || self.local.size(h)?.is_some() {
            return Ok(true);
        }
        let _one = self.fetching.lock().expect("not poisoned");
        if self.local.size(h)?.is_some() {
            return Ok(true);
        }
        tracing::info!("fetching {}", self.remote.location(h));
        let bytes = match self.remote.get(h) {
            Ok(b) => b,
            Err(Error::ObjectNotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        // Only an object whose bytes hash to its name enters the mirror.
        if h.name() != Some(content_hash(&bytes)) {
            return Err(Error::corrupt(self.remote.location(h), "content does not match its name"));
        }
        self.local.put(h, &bytes)?;
        Ok(true)
    }
}

impl Store for FetchingStore {
    fn location(&self, h: Handle) -> String {
        self.local.location(h)
    }

    fn put(&self, h: Handle, bytes: &[u8]) -> Result<()> {
        self.local.put(h, bytes)
    }

    fn get(&self, h: Handle) -> Result<Vec<u8>> {
        self.ensure(h)?;
        self.local.get(h)
    }

    fn get_range(&self, h: Handle, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.ensure(h)?;
        self.local.get_range(h, offset, len)
    }

    /// Fetches the object: whoever asks for a pack's size is about to read it (verify).
    fn size(&self, h: Handle) -> Result<Option<u64>> {
        if !self.ensure(h)? {
            return Ok(None);
        }
        self.local.size(h)
    }

    /// What the mirror holds (refreshed from the remote when it was opened): packs not fetched yet
    /// are not listed.
    fn list(&self, kind: FileKind) -> Result<Vec<Stat>> {
        self.local.list(kind)
    }

    fn remove(&self, h: Handle) -> Result<()> {
        self.local.remove(h)
    }

    fn inventory(&self) -> Result<Inventory> {
        self.local.inventory()
    }

    fn local_dir(&self) -> Option<&Path> {
        self.local.local_dir()
    }

    fn copy_in(&self, from: &dyn Store, handles: &[Handle]) -> Result<()> {
        self.local.copy_in(from, handles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::PackId;
    use crate::store::memory::MemoryStore;

    fn mirror() -> (tempfile::TempDir, LocalStore, MemoryStore, FetchingStore) {
        let d = tempfile::tempdir().unwrap();
        let local = LocalStore::new(d.path());
        local.create_layout().unwrap();
        let remote = MemoryStore::new();
        let f = FetchingStore::new(local.clone(), Arc::new(remote.clone()));
        (d, local, remote, f)
    }

    #[test]
    fn a_missing_pack_is_fetched_checked_and_published() {
        let (_d, local, remote, f) = mirror();
        let bytes = b"pack bytes".to_vec();
        let h = Handle::Pack(PackId(content_hash(&bytes)));
        remote.put(h, &bytes).unwrap();
        assert!(f.list(FileKind::Pack).unwrap().is_empty(), "not fetched yet");
        assert_eq!(f.get_range(h, 5, 5).unwrap(), b"bytes");
        assert_eq!(local.get(h).unwrap(), bytes, "published locally");
        remote.remove(h).unwrap();
        assert_eq!(f.get(h).unwrap(), bytes, "read locally from now on");
    }

    #[test]
    fn a_pack_that_does_not_match_its_name_never_enters_the_mirror() {
        let (_d, local, remote, f) = mirror();
        let h = Handle::Pack(PackId(content_hash(b"the real content")));
        remote.put(h, b"something else").unwrap();
        assert!(matches!(f.get(h), Err(Error::Corrupt { .. })));
        assert_eq!(local.size(h).unwrap(), None);
    }

    #[test]
    fn absent_on_both_sides_is_not_found() {
        let (_d, _local, _remote, f) = mirror();
        let h = Handle::Pack(PackId([9; 32]));
        assert_eq!(f.size(h).unwrap(), None);
        assert!(matches!(f.get_range(h, 0, 1), Err(Error::ObjectNotFound { .. })));
    }
}
