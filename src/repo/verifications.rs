//! Reading and writing verification files (`format::verification`): the repository side.

use crate::error::{Error, Result};
use crate::format::verification::Verification;
use crate::id::{content_hash, SnapshotId, VerificationId};
use crate::repo::Repo;
use crate::store::{FileKind, Handle, Store};

impl Repo {
    /// Every readable verification file. One that cannot be read is skipped with a warning: the
    /// snapshot it names then looks unverified, which keeps it (the safe side).
    pub fn verifications(&self) -> Result<Vec<(VerificationId, Verification)>> {
        let mut out = Vec::new();
        for st in self.objects().list(FileKind::Verification)? {
            let Handle::Verification(id) = st.handle else { continue };
            match self.load_verification(&id) {
                Ok(v) => out.push((id, v)),
                Err(e) => tracing::warn!("{e}; the snapshot it verifies is treated as unverified"),
            }
        }
        Ok(out)
    }

    /// Reads and checks one verification file.
    pub fn load_verification(&self, id: &VerificationId) -> Result<Verification> {
        let bytes = self.objects().get(Handle::Verification(*id))?;
        let what = || format!("verification {id}");
        if content_hash(&bytes) != id.0 {
            return Err(Error::corrupt(what(), "content does not match its name (hash mismatch)"));
        }
        Verification::open(self.keys(), &bytes, &what)
    }

    /// Writes a verification file; returns its id.
    pub fn put_verification(&self, v: &Verification) -> Result<VerificationId> {
        let sealed = v.seal(self.keys());
        let id = VerificationId(content_hash(&sealed));
        self.store().put(Handle::Verification(id), &sealed)?;
        Ok(id)
    }

    /// Removes the verification files naming any of `snapshots` (after the snapshots themselves:
    /// a crash between leaves a verification of nothing, which nothing reads). Returns how many.
    pub fn remove_verifications_of(&self, snapshots: &[SnapshotId]) -> Result<usize> {
        let mut n = 0;
        for (id, v) in self.verifications()? {
            if snapshots.contains(&v.snapshot) {
                self.store().remove(Handle::Verification(id))?;
                n += 1;
            }
        }
        Ok(n)
    }
}
