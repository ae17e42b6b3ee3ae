//! Snapshot kinds beyond the routine ones: taking a type as pre-change or manual, verifying a
//! pre-change snapshot (a verification file; the snapshot keeps its id), removing named
//! snapshots, and the pre-change snapshots still waiting for their verification.

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::manifest::{Snapshot, SnapshotKind};
use crate::format::verification::{self, Verification};
use crate::id::{SnapshotId, VerificationId};
use crate::ops::snapshot::SnapshotOptions;
use crate::ops::snapshot_set::SnapshotSet;
use crate::repo::Repo;
use crate::store::lock::Lock;
use crate::store::{Handle, Store};

/// How a configured type is taken when it is not a routine snapshot (`backup --kind`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TakeAs {
    /// Pre-change or manual.
    pub kind: SnapshotKind,
    /// The change, or what the snapshot holds.
    pub description: Option<String>,
    /// Change ticket.
    pub ticket: Option<String>,
    /// Why it is kept (manual).
    pub purpose: Option<String>,
    /// `days_N`, `permanent` or `until_verified` (recorded as the `retention` label).
    pub retention: Option<String>,
    /// Who takes it (default: the account name).
    pub creator: Option<String>,
}

impl TakeAs {
    /// Checks the combination; the error says which option is wrong.
    pub fn validate(&self) -> Result<()> {
        if let Some(r) = &self.retention {
            check_retention_label(r)?;
            if self.kind == SnapshotKind::Manual && r == "until_verified" {
                return Err(Error::Invalid(
                    "--retention until_verified: manual snapshots are never verified; use days_N or permanent".into(),
                ));
            }
        }
        if self.kind == SnapshotKind::Daily && *self != (TakeAs { kind: SnapshotKind::Daily, ..Default::default() }) {
            return Err(Error::Invalid(
                "--description, --ticket, --purpose, --retention and --creator need --kind pre-change or manual".into(),
            ));
        }
        Ok(())
    }

    /// Puts the kind and its facts into the options of the type's own snapshot. Such a snapshot
    /// is always written, even when nothing changed since the last one: it is the named point
    /// before a change, not a routine copy.
    pub fn apply(&self, opts: &mut SnapshotOptions) {
        opts.kind = self.kind;
        opts.description = self.description.clone();
        opts.ticket = self.ticket.clone();
        opts.purpose = self.purpose.clone();
        if let Some(c) = &self.creator {
            opts.creator = Some(c.clone());
        }
        if let Some(r) = &self.retention {
            opts.labels.insert("retention".into(), r.clone());
        }
        opts.skip_if_unchanged_within = None;
    }
}

/// Checks a `retention` label: `permanent`, `until_verified` or `days_N` with N > 0.
pub fn check_retention_label(r: &str) -> Result<()> {
    let ok = r == "permanent"
        || r == "until_verified"
        || r.strip_prefix("days_").is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("--retention {r:?}: use permanent, until_verified or days_N")))
    }
}

/// Records that pre-change snapshot `id` was verified by `by` at `now`: a verification file
/// naming it. The snapshot file is not touched, so its id stays what tickets cite.
pub fn mark_verified(repo: &Repo, id: &SnapshotId, by: &str, now: DateTime<FixedOffset>) -> Result<VerificationId> {
    let _lock = Lock::acquire(repo.store(), false, "mark-verified")?;
    if by.trim().is_empty() {
        return Err(Error::Invalid("--by: give who verified the change".into()));
    }
    let mut one = vec![(*id, repo.load_snapshot(id)?)];
    let verifs: Vec<Verification> = repo.verifications()?.into_iter().map(|(_, v)| v).collect();
    verification::apply(&mut one, &verifs);
    let s = &one[0].1;
    if s.kind != SnapshotKind::PreChange {
        return Err(Error::Invalid(format!(
            "snapshot {} is a {} snapshot; only pre-change snapshots are verified",
            id.short(),
            s.kind.as_str()
        )));
    }
    if let Some((who, when)) = verification::verified(s) {
        return Err(Error::Invalid(format!(
            "snapshot {} was already verified by {who}{}",
            id.short(),
            when.map(|w| format!(" on {w}")).unwrap_or_default()
        )));
    }
    repo.put_verification(&Verification { snapshot: *id, by: by.to_string(), time: now.to_rfc3339() })
}

/// One snapshot `forget_named` removed.
#[derive(Clone, Debug, Serialize)]
pub struct Removed {
    /// Snapshot id.
    #[serde(serialize_with = "crate::id::as_hex::one")]
    pub id: SnapshotId,
    /// Its type.
    pub backup_type: String,
    /// Its kind.
    pub kind: String,
    /// Its time.
    pub time: String,
    /// Verification files removed with it.
    pub verifications: usize,
    /// Whether it needed `--force` (`protected_because`).
    pub forced: bool,
}

/// Why a snapshot may only be removed by name with `--force`, if it may not without.
pub fn protected_because(s: &Snapshot) -> Option<String> {
    let label = s.labels.get("retention").map(String::as_str);
    match s.kind {
        SnapshotKind::PreChange if !verification::is_verified(s) => {
            Some("a pre-change snapshot not yet verified".into())
        }
        SnapshotKind::PreChange | SnapshotKind::Manual if label == Some("permanent") => {
            Some(format!("a {} snapshot with retention permanent", s.kind.as_str()))
        }
        SnapshotKind::Manual if label.is_none() => Some("a manual snapshot kept permanently".into()),
        _ => None,
    }
}

/// Removes the named snapshots (each resolved by the caller) and their verification files.
/// Nothing is removed unless every one may go: a permanent snapshot or an unverified pre-change
/// one needs `force`. The data they alone referenced stays until `prune`.
pub fn forget_named(repo: &Repo, ids: &[SnapshotId], force: bool) -> Result<Vec<Removed>> {
    let _lock = Lock::acquire(repo.store(), true, "forget")?;
    let set = SnapshotSet::load(repo)?;
    let mut chosen = Vec::new();
    for id in ids {
        let (_, s) = set
            .all()
            .iter()
            .find(|(i, _)| i == id)
            .ok_or_else(|| Error::NotFound(format!("snapshot {} (already removed?)", id.short())))?;
        if let (Some(why), false) = (protected_because(s), force) {
            return Err(Error::Invalid(format!(
                "snapshot {} is {why}: add --force to remove it (nothing was removed)",
                id.short()
            )));
        }
        if !chosen.iter().any(|(i, _): &(SnapshotId, &Snapshot)| i == id) {
            chosen.push((*id, s));
        }
    }
    let mut out = Vec::new();
    for (id, s) in chosen {
        repo.store().remove(Handle::Snapshot(id))?;
        let verifications = repo.remove_verifications_of(&[id])?;
        out.push(Removed {
            id,
            backup_type: s.backup_type.clone(),
            kind: s.kind.as_str().into(),
            time: s.time.clone(),
            verifications,
            forced: protected_because(s).is_some(),
        });
    }
    Ok(out)
}

/// A pre-change snapshot waiting for its verification.
#[derive(Clone, Debug, Serialize)]
pub struct Pending {
    /// Snapshot id.
    #[serde(serialize_with = "crate::id::as_hex::one")]
    pub id: SnapshotId,
    /// Its type.
    pub backup_type: String,
    /// When it was taken.
    pub time: String,
    /// Whole days since then (by the clock given).
    pub age_days: i64,
    /// Seconds since then.
    pub age_s: i64,
    /// The change.
    pub description: Option<String>,
    /// Change ticket.
    pub ticket: Option<String>,
}

/// The pre-change snapshots in `snaps` (as a `SnapshotSet` or `Repo::snapshots` shows them)
/// not yet verified at `now`, oldest first.
pub fn pending_verification(snaps: &[(SnapshotId, Snapshot)], now: DateTime<FixedOffset>) -> Vec<Pending> {
    let mut out: Vec<Pending> = snaps
        .iter()
        .filter(|(_, s)| s.kind == SnapshotKind::PreChange && !verification::is_verified(s))
        .map(|(id, s)| {
            let age = s.datetime().map(|t| now - t).unwrap_or_default().max(chrono::Duration::zero());
            Pending {
                id: *id,
                backup_type: s.backup_type.clone(),
                time: s.time.clone(),
                age_days: age.num_days(),
                age_s: age.num_seconds(),
                description: s.description.clone(),
                ticket: s.ticket.clone(),
            }
        })
        .collect();
    out.sort_by(|a, b| b.age_s.cmp(&a.age_s).then(a.id.cmp(&b.id)));
    out
}
