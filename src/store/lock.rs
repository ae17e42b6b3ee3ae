//! Repository locks (`locks/<random>`): a JSON file per holder. Backups and reads take shared
//! locks; `repair` (and later `prune`) an exclusive one. A lock whose holder is a dead process on
//! this host is stale and removed; any other conflicting lock is reported with who holds it.
//! Locks are local coordination, never synced to remotes (format-spec/layout.md, section Locks).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{FileKind, LocalStore};
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
    store: LocalStore,
    name: String,
}

impl Lock {
    /// Takes a lock, breaking stale ones.
    pub fn acquire(store: &LocalStore, exclusive: bool, purpose: &str) -> Result<Lock> {
        let mut r = [0u8; 32];
        crate::util::os_random(&mut r);
        let name = hex::encode(r);
        let me = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            exclusive,
            time: chrono::Local::now().to_rfc3339(),
            purpose: purpose.into(),
        };
        store.put(FileKind::Lock, &name, &serde_json::to_vec(&me).expect("serializable"))?;
        let lock = Lock { store: store.clone(), name };
        for other in store.list(FileKind::Lock)? {
            if other == lock.name {
                continue;
            }
            let info: Option<LockInfo> = match store.get(FileKind::Lock, &other) {
                Ok(b) => serde_json::from_slice(&b).ok(),
                // Released between listing and reading.
                Err(Error::Io { err: ref source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let Some(info) = info else {
                return Err(Error::Locked(format!(
                    "unreadable lock file {}; remove it if no cairn process is running",
                    store.path(FileKind::Lock, &other).display()
                )));
            };
            if info.host == me.host && !pid_alive(info.pid) {
                tracing::warn!(pid = info.pid, "removing stale lock of a dead process");
                store.remove(FileKind::Lock, &other)?;
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
                    store.path(FileKind::Lock, &other).display()
                )));
            }
        }
        Ok(lock)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.store.remove(FileKind::Lock, &self.name);
    }
}
