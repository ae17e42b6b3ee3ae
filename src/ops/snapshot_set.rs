//! The repository's snapshots, decrypted once and passed down. Reading the list decrypts every
//! snapshot file, which grows with every run on a device with years of history; one `backup`
//! (due decisions, parent lookups, dead-man check, retention, remote exclusions, status) works
//! on one set. Snapshot files are named by their content hash and never rewritten, so bringing
//! the set up to date is a directory listing plus decrypting only the files it has not seen.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::format::manifest::Snapshot;
use crate::format::verification::{self, Verification};
use crate::id::{SnapshotId, VerificationId};
use crate::repo::{snapshot_order, Repo};
use crate::store::{FileKind, Handle};

/// Snapshots of one repository, oldest first, and the files that could not be read.
#[derive(Debug, Default)]
pub struct SnapshotSet {
    snaps: Vec<(SnapshotId, Snapshot)>,
    unreadable: Vec<(SnapshotId, Error)>,
    decrypted: usize,
    verifications: Vec<(VerificationId, Verification)>,
}

impl SnapshotSet {
    /// An empty set; [`SnapshotSet::refresh`] fills it.
    pub fn new() -> SnapshotSet {
        SnapshotSet::default()
    }

    /// Reads every snapshot of `repo`.
    pub fn load(repo: &Repo) -> Result<SnapshotSet> {
        let mut s = SnapshotSet::new();
        s.refresh(repo)?;
        Ok(s)
    }

    /// Brings the set up to date with the repository: drops snapshots whose file is gone and
    /// reads only the files it has not seen (and those it could not read before). A listing error
    /// is an error, never "no snapshots".
    pub fn refresh(&mut self, repo: &Repo) -> Result<()> {
        let ids: HashSet<SnapshotId> = repo.snapshot_ids()?.into_iter().collect();
        self.snaps.retain(|(id, _)| ids.contains(id));
        // Unreadable files are tried again: the cause may have been a passing I/O error.
        self.unreadable.clear();
        let known: HashSet<SnapshotId> = self.snaps.iter().map(|(id, _)| *id).collect();
        let mut new = 0;
        for id in ids.into_iter().filter(|id| !known.contains(id)) {
            new += 1;
            match repo.load_snapshot(&id) {
                Ok(s) => self.snaps.push((id, s)),
                Err(e) => self.unreadable.push((id, e)),
            }
        }
        if new > 0 {
            self.sort();
        }
        self.refresh_verifications(repo)?;
        self.decrypted += new;
        tracing::debug!("snapshot set: {new} snapshot files decrypted, {} in all", self.decrypted);
        Ok(())
    }

    /// Verification files are few and small: listed each time, only new ones read; each shows
    /// on the snapshot it names (`format::verification::apply`).
    fn refresh_verifications(&mut self, repo: &Repo) -> Result<()> {
        let ids: HashSet<VerificationId> = repo
            .objects()
            .list(FileKind::Verification)?
            .into_iter()
            .filter_map(|s| match s.handle {
                Handle::Verification(id) => Some(id),
                _ => None,
            })
            .collect();
        self.verifications.retain(|(id, _)| ids.contains(id));
        for id in ids {
            if self.verifications.iter().any(|(v, _)| *v == id) {
                continue;
            }
            match repo.load_verification(&id) {
                Ok(v) => self.verifications.push((id, v)),
                Err(e) => tracing::warn!("{e}; the snapshot it verifies is treated as unverified"),
            }
        }
        let v: Vec<Verification> = self.verifications.iter().map(|(_, v)| v.clone()).collect();
        verification::apply(&mut self.snaps, &v);
        Ok(())
    }

    /// Adds a snapshot this process has just written (it is not read back).
    pub fn insert(&mut self, id: SnapshotId, snap: Snapshot) {
        if !self.snaps.iter().any(|(i, _)| *i == id) {
            self.snaps.push((id, snap));
            self.sort();
        }
    }

    /// Forgets snapshots this process has just removed.
    pub fn remove(&mut self, ids: &[SnapshotId]) {
        self.snaps.retain(|(id, _)| !ids.contains(id));
    }

    /// The readable snapshots, oldest first (the order of `Repo::snapshots`).
    pub fn all(&self) -> &[(SnapshotId, Snapshot)] {
        &self.snaps
    }

    /// Snapshot files that could not be read, with the reason.
    pub fn unreadable(&self) -> &[(SnapshotId, Error)] {
        &self.unreadable
    }

    /// The `seq` the next snapshot committed after this set records.
    pub fn next_seq(&self) -> u64 {
        crate::ops::snapshot::next_seq(&self.snaps)
    }

    /// How many snapshot files this set has decrypted since it was created.
    pub fn decrypted(&self) -> usize {
        self.decrypted
    }

    fn sort(&mut self) {
        self.snaps.sort_by(|a, b| snapshot_order(&a.1, &b.1).then(a.0.cmp(&b.0)));
    }
}
