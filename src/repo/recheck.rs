//! What a failed chunk read does before it calls the data corrupt. The location came from the
//! local cache, which is derived state and can itself be damaged (a flipped bit in an offset, a
//! length or a pack id). So the location is first checked against the pack's own trailer; if the
//! trailer agrees, the pack is damaged and is marked so in the cache (the next backup stores its
//! chunks again). If not, the cache is rebuilt from the index files (once per process) and the
//! chunk read again from the location they give. Only what the index files and the trailer both
//! confirm is reported as damage.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::crypto::Keys;
use crate::format::pack::read_trailer_with;
use crate::id::{ChunkId, RepoId};
use crate::repo::cache::{Cache, Location};
use crate::store::{Handle, Store};

/// Shared by every [`crate::repo::ChunkReader`] of one open repository.
pub struct Recheck {
    cache_path: PathBuf,
    repo: RepoId,
    store: Arc<dyn Store>,
    keys: Arc<Keys>,
    /// Whether this process already rebuilt the cache; serialises the recovery of parallel readers.
    rebuilt: Mutex<bool>,
    /// A connection of its own for locating referenced chunks (opened on first use).
    lookups: Mutex<Option<Cache>>,
}

/// Errors worth a second look: the bytes at the cached location failed a check or are not there.
/// A transient I/O or network error is passed through as it is.
fn is_data_error(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. } | Error::ObjectNotFound { .. })
}

impl Recheck {
    /// Rechecks for the cache at `cache_path` of repository `repo`, reading through `store`.
    pub fn new(cache_path: PathBuf, repo: RepoId, store: Arc<dyn Store>, keys: Arc<Keys>) -> Self {
        Recheck { cache_path, repo, store, keys, rebuilt: Mutex::new(false), lookups: Mutex::new(None) }
    }

    fn cache(&self) -> Result<Cache> {
        Cache::open(&self.cache_path, self.repo)
    }

    /// Whether the pack's trailer places `id` exactly at `loc`.
    fn trailer_agrees(&self, id: &ChunkId, loc: &Location) -> bool {
        let h = Handle::Pack(loc.pack);
        let Ok(Some(size)) = self.store.size(h) else { return false };
        match read_trailer_with(size, &self.keys, &loc.pack, &|o, l| self.store.get_range(h, o, l)) {
            Ok((entries, _)) => entries.iter().any(|e| {
                e.id == *id && e.offset == loc.offset && e.stored_len == loc.stored_len && e.raw_len == loc.raw_len
            }),
            Err(_) => false,
        }
    }

    /// Rebuilds the cache from the index files unless this process already did.
    fn rebuild_once(&self, cache: &mut Cache, done: &mut bool, why: &str) -> Result<()> {
        if !*done {
            tracing::warn!("{why}; rebuilding the cache {} from the index files", self.cache_path.display());
            let r = cache.rebuild(self.store.as_ref(), &self.keys)?;
            for (id, e) in r.bad {
                tracing::warn!("skipping index file {id}: {e}");
            }
            *done = true;
        }
        Ok(())
    }

    /// After reading `id` at `loc` failed with `err`: finds out whether the cache row or the data
    /// is wrong, repairs the row or marks the pack damaged, and reads again where that helps.
    pub fn recover(
        &self,
        id: &ChunkId,
        loc: &Location,
        err: Error,
        read: &dyn Fn(&Location) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        if !is_data_error(&err) {
            return Err(err);
        }
        // The lock serialises the repair of the cache, never a read: reading a delta resolves its
        // base, which may come back here (or to `locate_missing`) on this same thread.
        let lock = || self.rebuilt.lock().unwrap_or_else(|p| p.into_inner());
        // Another reader may have repaired the row meanwhile.
        let repaired = {
            let _done = lock();
            self.cache()?.lookup(id)?
        };
        if let Some(now) = repaired.filter(|now| now != loc) {
            if let Ok(d) = read(&now) {
                return Ok(d);
            }
        }
        let (confirmed, after) = {
            let mut done = lock();
            let mut cache = self.cache()?;
            let confirmed = self.trailer_agrees(id, loc);
            if confirmed {
                // The pack's own trailer puts the chunk there: the data is damaged, not the row. A
                // rebuild after a new mark points chunks stored twice at their intact copy.
                if cache.mark_damaged(&loc.pack, &err.to_string())? {
                    tracing::error!(
                        "pack {} is damaged ({err}); marked in the cache: the next backup stores its chunks again",
                        loc.pack
                    );
                    self.rebuild_once(&mut cache, &mut done, "a pack was found damaged")?;
                }
            } else {
                self.rebuild_once(&mut cache, &mut done, &format!("chunk {} does not read back ({err})", id.short()))?;
            }
            let after = cache.lookup(id)?;
            if after.as_ref() == Some(loc) && !confirmed && cache.mark_damaged(&loc.pack, &err.to_string())? {
                // The index files agree with the row: the pack (or its trailer) is what is damaged.
                tracing::error!("pack {} is damaged ({err}); marked in the cache", loc.pack);
            }
            (confirmed, after)
        };
        match after {
            Some(now) if now != *loc => {
                let d = read(&now)?;
                if !confirmed {
                    tracing::warn!(
                        "the cache row of chunk {id} was wrong (pack {} offset {} length {}; the index files say pack {} offset {} length {}); repaired",
                        loc.pack, loc.offset, loc.stored_len, now.pack, now.offset, now.stored_len
                    );
                }
                Ok(d)
            }
            Some(_) => Err(err),
            None => Err(Error::corrupt(format!("chunk {id}"), "in no index file (missing data)")),
        }
    }

    /// Rebuilds the cache from the index files now.
    pub fn rebuild_now(&self) -> Result<crate::repo::cache::SyncReport> {
        let mut done = self.rebuilt.lock().unwrap_or_else(|p| p.into_inner());
        let r = self.cache()?.rebuild(self.store.as_ref(), &self.keys)?;
        *done = true;
        Ok(r)
    }

    /// Locates chunks (the references readers resolve) in one read transaction of a connection
    /// kept for the purpose; one the cache lacks is looked up again after a rebuild. A cache
    /// that cannot be written is replaced by one in memory, filled from the index files.
    pub fn locate_many(&self, ids: &[ChunkId]) -> Result<Vec<Option<Location>>> {
        let found = {
            let mut slot = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(match self.cache() {
                    Err(e) if e.is_unwritable() => {
                        let mut c = Cache::open_memory(self.repo)?;
                        c.sync(self.store.as_ref(), &self.keys)?;
                        c
                    }
                    r => r?,
                });
            }
            let c = slot.as_ref().expect("just set");
            c.lookup_many(ids)?
        };
        ids.iter()
            .zip(found)
            .map(|(id, l)| match l {
                Some(l) => Ok(Some(l)),
                None => self.locate_missing(id),
            })
            .collect()
    }

    /// Locates a chunk the cache does not know: rebuilds the cache once (a damaged row may have
    /// hidden it) and asks again.
    pub fn locate_missing(&self, id: &ChunkId) -> Result<Option<Location>> {
        let mut done = self.rebuilt.lock().unwrap_or_else(|p| p.into_inner());
        let mut cache = self.cache()?;
        if let Some(l) = cache.lookup(id)? {
            return Ok(Some(l));
        }
        self.rebuild_once(&mut cache, &mut done, &format!("chunk {} is not in the cache", id.short()))?;
        cache.lookup(id)
    }
}
