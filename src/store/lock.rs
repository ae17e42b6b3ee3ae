//! Repository locks (`locks/<random>`): a JSON file per holder (format-spec/lock.md). Backups and
//! reads take shared locks; `forget`, `prune` and `repair` an exclusive one. A lock of this host
//! whose holder is gone (another boot, no such pid, or the pid reused by a process that started
//! later) is stale and removed; any other conflicting lock is reported with who holds it. A pid
//! is only judged where it means the same process: same host name, machine id and pid namespace
//! (two containers, or two machines of one name sharing a repository over NFS, cannot see each
//! other's processes).
//! Locks are local coordination, never synced to remotes.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::LockId;
use crate::store::{FileKind, Handle, Store};
use crate::util::{boot_id, hostname, machine_id, pid_alive, pid_namespace, process_start_time};

/// Content of a lock file (format-spec/lock.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The holder's boot id (absent in locks written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The holder's start time, clock ticks after boot (absent in older locks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// The holder's machine id, `/etc/machine-id` (absent where there is none, and in older locks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// The inode of the holder's pid namespace (absent without `/proc`, and in older locks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<u64>,
}

impl LockInfo {
    /// This process's lock content.
    fn mine(exclusive: bool, purpose: &str) -> LockInfo {
        let pid = std::process::id();
        LockInfo {
            host: hostname(),
            pid,
            exclusive,
            time: chrono::Local::now().to_rfc3339(),
            purpose: purpose.into(),
            boot_id: boot_id(),
            start_time: process_start_time(pid),
            machine_id: machine_id(),
            pid_ns: pid_namespace(),
        }
    }

    /// Why this lock is stale (its holder is gone), or `None` while it may be held. Only locks of
    /// this host (name and machine id) are judged: the holder is gone if the host restarted since
    /// (boot id differs), or, within the same pid namespace, no process has the pid or the process
    /// with that pid started at another time (a pid reused). A lock of another pid namespace (a
    /// restarted container included) is never stale: see [`LockInfo::out_of_sight`].
    pub fn stale_reason(&self) -> Option<String> {
        if self.host != hostname() {
            return None;
        }
        let older = self.is_older_lock();
        if !older && self.machine_id != machine_id() {
            return None;
        }
        if let (Some(theirs), Some(ours)) = (&self.boot_id, boot_id()) {
            if *theirs != ours {
                // Another boot proves a restart only where the machine is known to be this one
                // (whatever the namespace: a restart ends them all); two machines of one name
                // without machine ids differ in boot id too.
                return (older || self.machine_id.is_some())
                    .then(|| format!("taken before this host restarted (boot id {theirs}, now {ours})"));
            }
        }
        if !older && self.pid_ns != pid_namespace() {
            return None;
        }
        if !pid_alive(self.pid) {
            return Some(format!("no process {} is running", self.pid));
        }
        if let (Some(theirs), Some(now)) = (self.start_time, process_start_time(self.pid)) {
            if theirs != now {
                return Some(format!(
                    "pid {} now belongs to another process (started at tick {now}, the holder at {theirs})",
                    self.pid
                ));
            }
        }
        None
    }

    /// Written before machine id and pid namespace were recorded: judged by host name and pid.
    fn is_older_lock(&self) -> bool {
        self.machine_id.is_none() && self.pid_ns.is_none()
    }

    /// Why a lock with this host's name cannot be judged from here: the holder is on another
    /// machine of the same name, or in another pid namespace (another container), where its pid
    /// names a process this one cannot see. Only `cairn unlock --force` removes such a lock.
    /// `None` for locks that can be judged, and for older locks (see [`LockInfo::is_older_lock`]).
    pub fn out_of_sight(&self) -> Option<String> {
        if self.host != hostname() || self.is_older_lock() {
            return None;
        }
        let ours = machine_id();
        if self.machine_id != ours {
            return Some(format!(
                "held on another machine named {} (machine id {}, this one {})",
                self.host,
                self.machine_id.as_deref().unwrap_or("unknown"),
                ours.as_deref().unwrap_or("unknown")
            ));
        }
        let ours = pid_namespace();
        if self.pid_ns != ours {
            let ns = |n: Option<u64>| n.map_or("unknown".to_string(), |n| format!("pid:[{n}]"));
            return Some(format!(
                "held in another pid namespace (a container?): {}, this process {}",
                ns(self.pid_ns),
                ns(ours)
            ));
        }
        None
    }

    /// "exclusive lock of pid 42 on pi since T for prune".
    pub fn describe(&self) -> String {
        format!(
            "{} lock of pid {} on {} since {} for {}",
            if self.exclusive { "exclusive" } else { "shared" },
            self.pid,
            self.host,
            self.time,
            self.purpose
        )
    }
}

/// A held lock, released on drop.
pub struct Lock {
    // `None`: no lock file could be written on a read-only repository (shared locks only).
    held: Option<(Box<dyn Store>, Handle)>,
}

/// One lock file as found in `locks/`.
pub struct FoundLock {
    /// Its name.
    pub handle: Handle,
    /// Where it is, for messages.
    pub location: String,
    /// Its content; `None` if it is empty or not a lock (`cairn unlock --force` removes it).
    pub info: Option<LockInfo>,
}

/// Every lock file in `store`.
pub fn list_locks(store: &dyn Store) -> Result<Vec<FoundLock>> {
    let mut out = Vec::new();
    for st in store.list(FileKind::Lock)? {
        let info = match store.get(st.handle) {
            Ok(b) => serde_json::from_slice(&b).ok(),
            // Released between listing and reading.
            Err(Error::ObjectNotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        out.push(FoundLock { handle: st.handle, location: store.location(st.handle), info });
    }
    Ok(out)
}

/// What `unlock` did: locks removed (with why) and locks kept.
pub type Unlocked = (Vec<(FoundLock, String)>, Vec<FoundLock>);

/// Removes stale locks, or with `force` every lock; returns what was removed (with why) and what
/// was kept.
pub fn unlock(store: &dyn Store, force: bool) -> Result<Unlocked> {
    let (mut removed, mut kept) = (Vec::new(), Vec::new());
    for l in list_locks(store)? {
        let why = match (&l.info, force) {
            (Some(i), _) => i.stale_reason().or_else(|| force.then(|| "removed by --force".into())),
            (None, true) => Some("unreadable lock file, removed by --force".into()),
            (None, false) => None,
        };
        match why {
            Some(w) => {
                store.remove(l.handle)?;
                removed.push((l, w));
            }
            None => kept.push(l),
        }
    }
    Ok((removed, kept))
}

impl Lock {
    /// Takes a lock in `store`, breaking stale ones.
    pub fn acquire<S: Store + Clone + 'static>(store: &S, exclusive: bool, purpose: &str) -> Result<Lock> {
        let mut r = [0u8; 32];
        crate::util::os_random(&mut r);
        let handle = Handle::Lock(LockId(r));
        let me = LockInfo::mine(exclusive, purpose);
        if let Err(e) = store.put(handle, &serde_json::to_vec(&me).expect("serializable")) {
            match write_without_space(store, handle, &e)? {
                Some(()) => {}
                // A read-only repository cannot change under a reader: no lock is needed.
                None if !exclusive && e.is_unwritable() => {
                    tracing::warn!("cannot write a lock ({e}); reading without one");
                    return Ok(Lock { held: None });
                }
                None => return Err(e),
            }
        }
        let lock = Lock { held: Some((Box::new(store.clone()), handle)) };
        for other in list_locks(store)? {
            if other.handle == handle {
                continue;
            }
            let Some(info) = other.info else {
                return Err(Error::Locked(format!(
                    "unreadable lock file {}; if no cairn process is running, remove it with `cairn unlock --force`",
                    other.location
                )));
            };
            if let Some(why) = info.stale_reason() {
                tracing::warn!("breaking stale {} ({}): {why}", info.describe(), other.location);
                store.remove(other.handle)?;
                continue;
            }
            if exclusive || info.exclusive {
                if let Some(why) = info.out_of_sight() {
                    return Err(Error::Locked(format!(
                        "{} ({}), {why}: cairn cannot tell from here whether it still runs; if it is gone, remove the lock with `cairn unlock --force`",
                        info.describe(),
                        other.location
                    )));
                }
                return Err(Error::Locked(format!(
                    "{} ({}); if that process is gone, run `cairn unlock`",
                    info.describe(),
                    other.location
                )));
            }
        }
        Ok(lock)
    }
}

/// On a full local file system, a lock file is created empty: it needs no data block, only a
/// directory entry, so `forget` and `prune` can lock and then free space. Other processes read an
/// empty lock as held by an unknown process (format-spec/lock.md). `Ok(None)` if `e` is not a full
/// disk or the store is not a directory.
fn write_without_space(store: &dyn Store, h: Handle, e: &Error) -> Result<Option<()>> {
    let (Error::NoSpace { .. }, Some(root)) = (e, store.local_dir()) else { return Ok(None) };
    let p = root.join(h.rel_path());
    std::fs::OpenOptions::new().write(true).create_new(true).open(&p).map_err(|e| Error::io(&p, e))?;
    tracing::warn!("{e}: took the lock as an empty file {}", p.display());
    Ok(Some(()))
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some((store, h)) = &self.held {
            let _ = store.remove(*h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn plant(store: &MemoryStore, name: u8, pid: u32, host: &str, exclusive: bool) -> Handle {
        let h = Handle::Lock(LockId([name; 32]));
        let info = LockInfo {
            host: host.into(),
            pid,
            exclusive,
            time: "t".into(),
            purpose: "test".into(),
            boot_id: None,
            start_time: None,
            machine_id: None,
            pid_ns: None,
        };
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
        assert!(matches!(e, Error::Locked(ref m) if m.contains("shared lock of pid")), "{e}");
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
    fn a_reused_pid_or_another_boot_makes_a_lock_stale_and_old_locks_still_read() {
        let me = LockInfo::mine(true, "test");
        assert_eq!(me.stale_reason(), None, "this live process");
        let reused = LockInfo { start_time: me.start_time.map(|t| t + 1), ..me.clone() };
        assert!(reused.stale_reason().is_some_and(|r| r.contains("another process")));
        let rebooted = LockInfo { boot_id: Some("not-this-boot".into()), ..me.clone() };
        assert!(rebooted.stale_reason().is_some_and(|r| r.contains("restarted")));
        let old = format!(r#"{{"host":"{}","pid":{},"exclusive":false,"time":"t","purpose":"p"}}"#, me.host, me.pid);
        let old: LockInfo = serde_json::from_str(&old).unwrap();
        assert_eq!((old.boot_id.as_deref(), old.start_time, old.stale_reason()), (None, None, None));
        let foreign = LockInfo { host: "another-host".into(), ..rebooted };
        assert_eq!(foreign.stale_reason(), None, "other hosts' locks are never judged");
    }

    #[test]
    fn a_lock_of_another_pid_namespace_or_machine_is_never_stale_by_pid() {
        let me = LockInfo::mine(true, "test");
        // A pid beyond pid_max, or a start time not matching: stale when in sight.
        let dead = LockInfo { pid: 0x7fff_fff0, ..me.clone() };
        assert!(dead.stale_reason().is_some_and(|r| r.contains("no process")), "{dead:?}");
        assert_eq!(dead.out_of_sight(), None);
        let other_ns = LockInfo { pid_ns: Some(me.pid_ns.unwrap_or(0) + 1), ..dead.clone() };
        assert_eq!(other_ns.stale_reason(), None, "another container's pid");
        assert!(other_ns.out_of_sight().is_some_and(|w| w.contains("pid namespace")));
        let other_machine = LockInfo { machine_id: Some("0123456789abcdef0123456789abcdef".into()), ..dead.clone() };
        assert_eq!(other_machine.stale_reason(), None, "another machine's pid");
        assert!(other_machine.out_of_sight().is_some_and(|w| w.contains("another machine")));
        // Not even another boot id makes them stale: another machine has another boot.
        let rebooted = LockInfo { boot_id: Some("not-this-boot".into()), ..other_machine.clone() };
        assert_eq!(rebooted.stale_reason(), None);
        let reused = LockInfo { start_time: me.start_time.map(|t| t + 1), ..other_ns.clone() };
        assert_eq!(reused.stale_reason(), None);
        // Without machine ids on both sides another boot id may be another machine too.
        let no_ids =
            LockInfo { machine_id: None, pid_ns: me.pid_ns.or(Some(1)), boot_id: Some("x".into()), ..me.clone() };
        assert_eq!(no_ids.stale_reason(), None);
        // An exclusive one is refused with the way out, and `unlock` keeps it without --force.
        let s = MemoryStore::new();
        let h = Handle::Lock(LockId([9; 32]));
        s.put(h, &serde_json::to_vec(&other_ns).unwrap()).unwrap();
        let e = Lock::acquire(&s, false, "backup").err().expect("held in another namespace");
        assert!(e.to_string().contains("pid namespace") && e.to_string().contains("unlock --force"), "{e}");
        let (removed, kept) = unlock(&s, false).unwrap();
        assert_eq!((removed.len(), kept.len()), (0, 1));
        let (removed, _) = unlock(&s, true).unwrap();
        assert_eq!(removed.len(), 1);
    }

    #[test]
    fn a_failed_listing_fails_the_lock() {
        let s = MemoryStore::new();
        s.fail_listings(true);
        assert!(Lock::acquire(&s, false, "backup").is_err());
    }
}
