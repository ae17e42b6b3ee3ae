//! Repository locks (`locks/<random>`): a JSON file per holder. Backups and reads take shared
//! locks; `repair` (and later `prune`) an exclusive one. A lock whose holder is a dead process on
//! this host is stale and removed; any other conflicting lock is reported with who holds it.
//! Locks are local coordination, never synced to remotes (format-spec/layout.md, section Locks).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::LockId;
use crate::store::{FileKind, Handle, Store};
use crate::util::{hostname, pid_alive};

/// Content of a lock file.
#[derive(Debug, Serialize, Deserialize)]
pub struct LockInfo {
    /// Host holding the lock.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// Exclusive or shared.
    pub exclusive: bool,
    /// When taken (RFC 3339).
    pub time: String,
    /// What for ("snapshot", "repair index"...).
    pub purpose: String,
}

/// A held lock, released on drop.
pub struct Lock {
    store: Box<dyn Store>,
    handle: Handle,
}

impl Lock {
    /// Takes a lock in `store`, breaking stale ones.
    pub fn acquire<S: Store + Clone + 'static>(store: &S, exclusive: bool, purpose: &str) -> Result<Lock> {
        let mut r = [0u8; 32];
        crate::util::os_random(&mut r);
        let handle = Handle::Lock(LockId(r));
        let me = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            exclusive,
            time: chrono::Local::now().to_rfc3339(),
            purpose: purpose.into(),
        };
        store.put(handle, &serde_json::to_vec(&me).expect("serializable"))?;
        let lock = Lock { store: Box::new(store.clone()), handle };
        for other in store.list(FileKind::Lock)? {
            let other = other.handle;
            if other == lock.handle {
                continue;
            }
            let info: Option<LockInfo> = match store.get(other) {
                Ok(b) => serde_json::from_slice(&b).ok(),
                // Released between listing and reading.
                Err(Error::ObjectNotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let Some(info) = info else {
                return Err(Error::Locked(format!(
                    "unreadable lock file {}; remove it if no cairn process is running",
                    store.location(other)
                )));
            };
            if info.host == me.host && !pid_alive(info.pid) {
                tracing::warn!(pid = info.pid, "removing stale lock of a dead process");
                store.remove(other)?;
                continue;
            }
            if exclusive || info.exclusive {
                return Err(Error::Locked(format!(
                    "{} lock held by pid {} on {} since {} for {} ({}); if that process is gone, remove the file",
                    if info.exclusive { "exclusive" } else { "shared" },
                    info.pid,
                    info.host,
                    info.time,
                    info.purpose,
                    store.location(other)
                )));
            }
        }
        Ok(lock)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.store.remove(self.handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn plant(store: &MemoryStore, name: u8, pid: u32, host: &str, exclusive: bool) -> Handle {
        let h = Handle::Lock(LockId([name; 32]));
        let info = LockInfo { host: host.into(), pid, exclusive, time: "t".into(), purpose: "test".into() };
        store.put(h, &serde_json::to_vec(&info).unwrap()).unwrap();
        h
    }

    #[test]
    fn shared_locks_coexist_and_exclusive_ones_conflict() {
        let s = MemoryStore::new();
        let a = Lock::acquire(&s, false, "a").unwrap();
        let b = Lock::acquire(&s, false, "b").unwrap();
        assert_eq!(s.list(FileKind::Lock).unwrap().len(), 2);
        let e = Lock::acquire(&s, true, "prune").err().expect("conflict");
        assert!(matches!(e, Error::Locked(ref m) if m.contains("shared lock held by pid")), "{e}");
        // The refused lock is not left behind.
        assert_eq!(s.list(FileKind::Lock).unwrap().len(), 2);
        drop((a, b));
        assert!(s.list(FileKind::Lock).unwrap().is_empty(), "released on drop");
        let x = Lock::acquire(&s, true, "prune").unwrap();
        assert!(matches!(Lock::acquire(&s, false, "backup"), Err(Error::Locked(_))));
        drop(x);
    }

    #[test]
    fn a_dead_process_lock_on_this_host_is_removed_and_others_are_reported() {
        let s = MemoryStore::new();
        // Pid 0x7fff_fff0 is beyond pid_max on Linux: never alive.
        let stale = plant(&s, 1, 0x7fff_fff0, &hostname(), true);
        let l = Lock::acquire(&s, true, "repair").unwrap();
        assert_eq!(s.size(stale).unwrap(), None, "stale lock removed");
        drop(l);
        plant(&s, 2, 0x7fff_fff0, "another-host", false);
        let e = Lock::acquire(&s, true, "prune").err().expect("foreign host lock is kept");
        assert!(e.to_string().contains("another-host") && e.to_string().contains("memory:locks/"), "{e}");
        s.put(Handle::Lock(LockId([3; 32])), b"not json").unwrap();
        s.remove(Handle::Lock(LockId([2; 32]))).unwrap();
        let e = Lock::acquire(&s, false, "backup").err().expect("unreadable lock");
        assert!(e.to_string().contains("unreadable lock file"), "{e}");
    }

    #[test]
    fn a_failed_listing_fails_the_lock() {
        let s = MemoryStore::new();
        s.fail_listings(true);
        assert!(Lock::acquire(&s, false, "backup").is_err());
    }
}
