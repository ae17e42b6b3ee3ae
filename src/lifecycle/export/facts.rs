//! What the dated layout's metadata says about a snapshot beyond its files: its status under the
//! retention as configured now, when that retention is expected to remove it, and whether a
//! verification exists.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, FixedOffset, Months};

use crate::error::Result;
use crate::format::manifest::{Snapshot, SnapshotKind};
use crate::id::SnapshotId;
use crate::lifecycle::config::{Config, TypeConfig};
use crate::ops::export::dated::{Facts, Verification};
use crate::ops::retention;
use crate::repo::Repo;

/// The verifications of `snaps`, by snapshot: the one place the export reads verification.
/// Snapshots read through the repository carry their verification files' facts
/// (`format::verification`), and older repositories' rewritten snapshots the same labels.
pub fn verifications(_repo: &Repo, snaps: &[(SnapshotId, Snapshot)]) -> Result<BTreeMap<SnapshotId, Verification>> {
    Ok(snaps
        .iter()
        .filter_map(|(id, s)| {
            let (by, date) = crate::format::verification::verified(s)?;
            Some((*id, Verification { by: by.to_string(), date: date.unwrap_or_default().to_string() }))
        })
        .collect())
}

/// How long after a routine snapshot the type's retention is expected to remove it, at the
/// type's schedule: the longest any of its rules keeps one. A bucket rule (`keep_daily N`) keeps
/// N snapshots of distinct buckets, so it spans N buckets or N runs, whichever is longer.
/// None when nothing removes routine snapshots by time (no retention policy).
pub fn expiry(t: &TypeConfig, created: DateTime<FixedOffset>) -> Option<DateTime<FixedOffset>> {
    let r = t.retention.as_ref()?;
    let every = t.schedule.map_or_else(|| Duration::days(1), |s| s.interval());
    let span = |n: Option<u32>, unit: Duration| n.map(|n| created + unit.max(every) * n as i32);
    let months = |n: Option<u32>, per: u32| {
        n.and_then(|n| created.checked_add_months(Months::new(n.saturating_mul(per))))
            .map(|t| t.max(created + every * n.unwrap_or(0) as i32))
    };
    [
        r.keep_last.map(|n| created + every * n as i32),
        span(r.keep_hourly, Duration::hours(1)),
        span(r.keep_daily, Duration::days(1)),
        span(r.keep_weekly, Duration::weeks(1)),
        months(r.keep_monthly, 1),
        months(r.keep_yearly, 12),
        r.keep_within.map(|w| created + w.duration()),
        r.keep_within_hourly.map(|w| created + w.duration()),
        r.keep_within_daily.map(|w| created + w.duration()),
        r.keep_within_weekly.map(|w| created + w.duration()),
        r.keep_within_monthly.map(|w| created + w.duration()),
        r.keep_within_yearly.map(|w| created + w.duration()),
    ]
    .into_iter()
    .flatten()
    .max()
}

fn label_days(s: &Snapshot) -> Option<i64> {
    s.labels.get("retention")?.strip_prefix("days_")?.parse().ok()
}

/// The facts of every snapshot in `all` (one repository's), judged at `now` with the
/// configuration's retention (none without a configuration: nothing expires).
pub fn facts(
    cfg: Option<&Config>,
    all: &[(SnapshotId, Snapshot)],
    verified: &BTreeMap<SnapshotId, Verification>,
    now: DateTime<FixedOffset>,
) -> BTreeMap<SnapshotId, Facts> {
    let type_cfg = |ty: &str| cfg.and_then(|c| c.type_config(ty));
    let mut by_type: BTreeMap<&str, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
    for (id, s) in all {
        by_type.entry(&s.backup_type).or_default().push((*id, s.clone()));
    }
    let mut keep = BTreeMap::new();
    for (ty, snaps) in &by_type {
        let policy = type_cfg(ty).and_then(|t| t.retention.as_ref());
        for d in retention::apply(snaps, policy, now) {
            keep.insert(d.id, d.keep);
        }
    }
    let mut out = BTreeMap::new();
    for (id, s) in all {
        let kept = keep.get(id).copied().unwrap_or(true);
        let v = verified.get(id).cloned();
        let created = s.datetime();
        let (status, expires) = match s.kind {
            SnapshotKind::Daily => (
                match (kept, v.is_some()) {
                    (false, _) => "expired",
                    (true, true) => "verified",
                    (true, false) => "active",
                },
                type_cfg(&s.backup_type).zip(created).and_then(|(t, c)| expiry(t, c)),
            ),
            SnapshotKind::PreChange => {
                // Kept until verified, then its own retention counted from the verification.
                let at = v.as_ref().and_then(|v| DateTime::parse_from_rfc3339(&v.date).ok());
                // Without a label it stays after its verification until forgotten by hand, as
                // retention keeps it (ops::retention): no date removes it.
                let expires = match s.labels.get("retention").map(String::as_str) {
                    Some("permanent") | None => None,
                    _ => at.map(|t| t + Duration::days(label_days(s).unwrap_or(0))),
                };
                let status = match (&v, kept) {
                    (None, _) => "pending_verification",
                    (Some(_), true) => "verified",
                    (Some(_), false) => "retired",
                };
                (status, expires)
            }
            SnapshotKind::Manual => (
                if kept { "active" } else { "expired" },
                label_days(s).zip(created).map(|(d, c)| c + Duration::days(d)),
            ),
        };
        out.insert(*id, Facts { status, expires, verification: v });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(schedule: &str, retention: serde_json::Value) -> TypeConfig {
        TypeConfig {
            source: crate::lifecycle::config::SourceSpec::Paths(vec!["/x".into()]),
            exclude: Vec::new(),
            schedule: Some(crate::lifecycle::schedule::Schedule::parse(schedule).unwrap()),
            on_change_fallback: None,
            catch_up_after: None,
            rpo: None,
            retention: Some(serde_json::from_value(retention).unwrap()),
            chunker: None,
            pg_format: Default::default(),
        }
    }

    #[test]
    fn expiry_follows_the_types_own_retention() {
        let c = DateTime::parse_from_rfc3339("2026-03-01T03:00:00+00:00").unwrap();
        let days = |t: &TypeConfig| (expiry(t, c).unwrap() - c).num_days();
        assert_eq!(days(&ty("weekly sun 03:00", serde_json::json!({"keep_last": 8}))), 56);
        assert_eq!(days(&ty("daily 03:00", serde_json::json!({"keep_weekly": 8}))), 56);
        assert_eq!(days(&ty("daily 03:00", serde_json::json!({"keep_daily": 30}))), 30);
        assert_eq!(days(&ty("weekly sun 03:00", serde_json::json!({"keep_daily": 7}))), 49);
        assert_eq!(days(&ty("hourly", serde_json::json!({"keep_within": "2w", "keep_last": 3}))), 14);
        assert_eq!(days(&ty("daily 03:00", serde_json::json!({"keep_monthly": 2}))), 61);
    }
}
