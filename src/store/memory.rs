//! A store in memory, for unit tests: the same contract as the others, nothing durable. It can be
//! told to fail its listings, so tests can check that callers never take a failed listing for an
//! empty store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{same_name_check, short_object, FileKind, Handle, Stat, Store};
use crate::error::{Error, Result};

/// An in-memory store; clones share their objects.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<Handle, Arc<[u8]>>>>,
    fail_listing: Arc<AtomicBool>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following `list` and `inventory` fail (or work again).
    pub fn fail_listings(&self, fail: bool) {
        self.fail_listing.store(fail, Ordering::SeqCst);
    }

    /// Replaces an object behind the store's back (tests of damage).
    pub fn tamper(&self, h: Handle, bytes: &[u8]) {
        self.objects.lock().expect("not poisoned").insert(h, Arc::from(bytes));
    }

    fn object(&self, h: Handle) -> Result<Arc<[u8]>> {
        self.objects
            .lock()
            .expect("not poisoned")
            .get(&h)
            .cloned()
            .ok_or_else(|| Error::ObjectNotFound { what: self.location(h) })
    }
}

impl Store for MemoryStore {
    fn location(&self, h: Handle) -> String {
        format!("memory:{}", h.rel_path())
    }

    fn put(&self, h: Handle, bytes: &[u8]) -> Result<()> {
        let mut m = self.objects.lock().expect("not poisoned");
        if let Some(old) = m.get(&h) {
            return same_name_check(&self.location(h), old.len() as u64, bytes.len() as u64);
        }
        m.insert(h, Arc::from(bytes));
        Ok(())
    }

    fn get(&self, h: Handle) -> Result<Vec<u8>> {
        Ok(self.object(h)?.to_vec())
    }

    fn get_range(&self, h: Handle, offset: u64, len: usize) -> Result<Vec<u8>> {
        let o = self.object(h)?;
        let end = offset.checked_add(len as u64).filter(|e| *e <= o.len() as u64);
        match end {
            Some(end) => Ok(o[offset as usize..end as usize].to_vec()),
            None => Err(short_object(&self.location(h), offset, len, o.len() as u64)),
        }
    }

    fn size(&self, h: Handle) -> Result<Option<u64>> {
        Ok(self.objects.lock().expect("not poisoned").get(&h).map(|o| o.len() as u64))
    }

    fn list(&self, kind: FileKind) -> Result<Vec<Stat>> {
        if self.fail_listing.load(Ordering::SeqCst) {
            return Err(Error::io("memory store", std::io::Error::other("listing failed (as told)")));
        }
        Ok(self
            .objects
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(h, _)| h.kind() == kind)
            .map(|(h, o)| Stat { handle: *h, size: o.len() as u64, md5: None })
            .collect())
    }

    fn remove(&self, h: Handle) -> Result<()> {
        self.objects.lock().expect("not poisoned").remove(&h);
        Ok(())
    }
}
