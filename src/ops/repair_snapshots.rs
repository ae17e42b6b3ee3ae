//! `repair snapshots`: move snapshot files that cannot be decoded out of `snapshots/` into
//! `quarantine/snapshots/` (format-spec/layout.md), naming each one. An unreadable snapshot file
//! stops `forget`, `prune` and `latest` (it may be the newest snapshot, so nothing can be decided
//! without it); once it is set aside they work again. Nothing is deleted: the damaged bytes stay
//! in the quarantine for inspection or for a copy to be fetched from elsewhere.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::manifest::Snapshot;
use crate::id::{content_hash, SnapshotId};
use crate::repo::Repo;
use crate::store::local::fsync_dir;
use crate::store::lock::Lock;
use crate::store::{Handle, Store, StoreExt};

/// Directory, relative to the repository root, that holds quarantined snapshot files.
pub const QUARANTINE_SNAPSHOTS: &str = "quarantine/snapshots";

/// One snapshot file set aside.
#[derive(Debug, Serialize)]
pub struct Quarantined {
    /// The snapshot file's name (its id).
    #[serde(serialize_with = "crate::id::as_hex::one")]
    pub id: SnapshotId,
    /// Where the file is now.
    pub moved_to: PathBuf,
    /// Why it could not be decoded.
    pub reason: String,
}

/// What `repair snapshots` did.
#[derive(Debug, Default, Serialize)]
pub struct RepairSnapshotsReport {
    /// Snapshot files that decoded and stay.
    pub readable: usize,
    /// Files moved to the quarantine.
    pub quarantined: Vec<Quarantined>,
    /// Files that could not be read at all (an I/O error, not damage): left where they are.
    pub not_read: Vec<(String, String)>,
}

/// Checks every snapshot file (name against content, authentication, decoding) under the
/// exclusive lock and moves each undecodable one into `quarantine/snapshots/`. A file that
/// could not be read (I/O error) is left in place and reported: it may be fine.
pub fn repair_snapshots(repo: &Repo) -> Result<RepairSnapshotsReport> {
    let _lock = Lock::acquire(repo.store(), true, "repair snapshots")?;
    let store = repo.store();
    let dir = store.root().join(QUARANTINE_SNAPSHOTS);
    let mut report = RepairSnapshotsReport::default();
    for id in store.snapshot_ids()? {
        let h = Handle::Snapshot(id);
        let bytes = match store.get(h) {
            Ok(b) => b,
            Err(e) => {
                report.not_read.push((store.location(h), e.to_string()));
                continue;
            }
        };
        let what = || format!("snapshot {id}");
        let check = if content_hash(&bytes) != id.0 {
            Err(Error::corrupt(what(), "content does not match its name (hash mismatch)"))
        } else {
            Snapshot::open(repo.keys(), &bytes, &what).map(|_| ())
        };
        let Err(e) = check else {
            report.readable += 1;
            continue;
        };
        std::fs::create_dir_all(&dir).map_err(|err| Error::io(&dir, err))?;
        let from = store.handle_path(h);
        let to = link_unused(&from, &dir, &id.to_hex())?;
        // The copy's name is durable before the original goes: a crash leaves both, never neither.
        fsync_dir(&dir)?;
        store.remove(h)?;
        tracing::warn!("snapshot file {} is damaged ({e}); moved to {}", from.display(), to.display());
        report.quarantined.push(Quarantined { id, moved_to: to, reason: e.to_string() });
    }
    Ok(report)
}

/// Hard-links `from` into `dir` as `name`, or `name.1`, `name.2` ... when a file of that name
/// is already quarantined (the same name damaged again): `link(2)` never replaces a file.
fn link_unused(from: &std::path::Path, dir: &std::path::Path, name: &str) -> Result<PathBuf> {
    let mut n = 0u64;
    loop {
        let to = if n == 0 { dir.join(name) } else { dir.join(format!("{name}.{n}")) };
        match std::fs::hard_link(from, &to) {
            Ok(()) => return Ok(to),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(Error::io(&to, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::LocalStore;

    #[test]
    fn sync_keeps_the_remote_copy_of_a_quarantined_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let local = LocalStore::new(d.path().join("repo"));
        local.create_layout().unwrap();
        let (a, b) = (SnapshotId(content_hash(b"a")), SnapshotId(content_hash(b"b")));
        let (bad, gone) = (Handle::Snapshot(a), Handle::Snapshot(b));
        local.put(bad, b"a").unwrap();
        local.put(gone, b"b").unwrap();
        let remote = MemoryStore::new();
        crate::ops::sync::sync(&local, &remote, "mem", false, &HashSet::new()).unwrap();
        // `bad` is quarantined the way repair_snapshots does it; `gone` is forgotten.
        let dir = local.root().join(QUARANTINE_SNAPSHOTS);
        std::fs::create_dir_all(&dir).unwrap();
        link_unused(&local.handle_path(bad), &dir, &a.to_hex()).unwrap();
        local.remove(bad).unwrap();
        local.remove(gone).unwrap();
        let r = crate::ops::sync::sync(&local, &remote, "mem", false, &HashSet::new()).unwrap();
        assert_eq!(r.deleted, vec![gone.rel_path()]);
        assert_eq!(remote.get(bad).unwrap(), b"a");
    }
}
