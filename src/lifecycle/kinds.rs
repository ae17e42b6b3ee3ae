//! The lifecycle side of snapshot kinds: removing named snapshots with a record of who and why
//! in the history, and telling the owner about pre-change snapshots that wait too long for
//! their verification.

use chrono::{DateTime, Local};

use crate::error::Result;
use crate::format::manifest::Snapshot;
use crate::id::SnapshotId;
use crate::lifecycle::config::Config;
use crate::lifecycle::history::{History, Removal};
use crate::lifecycle::notify::{self, Event, NotifyState, Policy};
use crate::ops::kinds::{self, Pending, Removed};
use crate::repo::Repo;

/// Removes the named snapshots (`ops::kinds::forget_named`) and records each in the history
/// with `by` and `reason`. A history that cannot be written does not undo the removal; the
/// error is returned after it, naming what was removed.
pub fn forget_named(
    repo: &Repo,
    ids: &[SnapshotId],
    force: bool,
    by: &str,
    reason: Option<&str>,
    now: DateTime<Local>,
) -> Result<Vec<Removed>> {
    let removed = kinds::forget_named(repo, ids, force)?;
    let history = History::open(repo.store().root())?;
    for r in &removed {
        history.record_removal(&Removal {
            time: now.to_rfc3339(),
            snapshot: r.id.to_hex(),
            backup_type: r.backup_type.clone(),
            kind: r.kind.clone(),
            by: by.to_string(),
            reason: reason.map(String::from),
            forced: r.forced,
        })?;
    }
    Ok(removed)
}

/// Notifies each pre-change snapshot that has waited longer than the configured
/// `notify.verification_overdue`, at most once per `remind_every`, recorded in `state` as
/// `verification:ID` (cleared once it is verified or gone). Returns the delivery failures.
pub fn verification_alerts(
    cfg: &Config,
    state: &mut NotifyState,
    snaps: &[(SnapshotId, Snapshot)],
    now: &DateTime<Local>,
) -> Vec<String> {
    let notify_cfg = cfg.backup.notify.clone().unwrap_or_default();
    let Some(limit) = notify_cfg.verification_overdue else { return Vec::new() };
    let every = Policy::of(&notify_cfg).remind_every;
    let now_f = now.fixed_offset();
    let pending = kinds::pending_verification(snaps, now_f);
    let mut errors = Vec::new();
    for p in &pending {
        if p.age_s <= limit.duration().num_seconds() {
            continue;
        }
        let key = format!("verification:{}", p.id.to_hex());
        let msg = format!(
            "pre-change snapshot {} ({}{}{}) has waited {} days for verification (limit {limit}): \
             `cairn mark-verified {} --by NAME` once the change is checked",
            p.id.short(),
            p.backup_type,
            p.description.as_deref().map(|d| format!(", {d}")).unwrap_or_default(),
            p.ticket.as_deref().map(|t| format!(", {t}")).unwrap_or_default(),
            p.age_days,
            p.id.short()
        );
        if !state.condition_due(&key, now_f, every, &msg) {
            continue;
        }
        errors.extend(notify::deliver(
            &notify_cfg,
            state,
            &key,
            vec![Event::new("verification_overdue", &p.backup_type, *now, msg)],
        ));
    }
    // Conditions of snapshots verified or removed since: cleared, so they are not told again.
    let waiting: Vec<String> = pending.iter().map(|p| format!("verification:{}", p.id.to_hex())).collect();
    for (id, _) in snaps {
        let key = format!("verification:{}", id.to_hex());
        if !waiting.contains(&key) {
            state.condition_cleared(&key);
        }
    }
    errors
}

/// The `status` lines for pre-change snapshots awaiting verification ("" when none).
pub fn render_pending(pending: &[Pending]) -> String {
    let mut out = String::new();
    for p in pending {
        out.push_str(&format!(
            "\nAWAITING VERIFICATION: pre-change snapshot {} ({}) taken {}, {} days ago{}{}",
            p.id.short(),
            p.backup_type,
            crate::util::show_time_str(&p.time),
            p.age_days,
            p.description.as_deref().map(|d| format!(": {d}")).unwrap_or_default(),
            p.ticket.as_deref().map(|t| format!(" [{t}]")).unwrap_or_default(),
        ));
    }
    if !out.is_empty() {
        out.push_str("\n  (`cairn mark-verified ID --by NAME` once the change is checked)\n");
    }
    out
}
