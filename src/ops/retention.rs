//! Retention: which snapshots a policy keeps, and why. Rules combine as restic's do: a snapshot
//! kept by any rule stays. `keep_last N` keeps the newest N; `keep_hourly/daily/weekly/monthly/
//! yearly N` keep the newest snapshot in each of the N most recent hours/days/... that have one;
//! `keep_within D` keeps everything within D of the newest snapshot (not of "now", so a device
//! away for weeks does not come back to an empty history); `keep_within_hourly/daily/weekly/
//! monthly/yearly D` keep the newest snapshot of each hour/day/... within D of the newest, so a
//! day of 15-minute snapshots thins out to hourly, then daily ones.
//!
//! Pre-change snapshots are kept until verified (`mark-verified`), then follow their own
//! `retention` label (`until_verified` = may go, `days_N` counted from the verification,
//! `permanent`; none: kept until removed by hand with `forget SNAPSHOT`). Manual snapshots follow
//! their `retention` label (`days_N`, default `permanent`). The newest complete snapshot of a
//! type is never removed, whatever the clock says.
//!
//! Clocks go wrong (a Raspberry Pi without RTC boots in 1970 or at its last shutdown until NTP
//! answers), so "newest" means newest by commit order (`Snapshot::commit_cmp`: the recorded
//! `seq`), never by the recorded time: the newest snapshot by commit order and the snapshots
//! taken by the current run are never removed. A snapshot whose time is later than `now`, or
//! earlier than a snapshot committed before it, is a clock anomaly: it is kept (with the reason
//! saying why) and left out of the time rules and of `keep_last`, so a snapshot dated years
//! ahead can neither push real ones out of `keep_last` nor make `keep_within` count from the
//! future.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, FixedOffset, Timelike};
use serde::{Deserialize, Serialize};

use crate::format::manifest::{Snapshot, SnapshotKind};
use crate::id::SnapshotId;
use crate::span::Span;

/// A retention policy (a type's, or a remote's own). Rules combine: a snapshot kept by any rule
/// stays.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep the newest N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest in each of the last N hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// ... days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// ... weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// ... months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// ... years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep everything within this of the newest snapshot ("30d", "12h", "2w").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<Span>,
    /// Keep the newest in each hour within this of the newest snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<Span>,
    /// ... each day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<Span>,
    /// ... each ISO week.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<Span>,
    /// ... each month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<Span>,
    /// ... each year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<Span>,
}

impl Retention {
    /// Checks what the types alone cannot: some rule is given, and `keep_last` is not 0.
    /// The error names the offending key relative to the policy ("" for the policy itself).
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let any = self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within.is_some()
            || self.within_buckets().any(|(_, w)| w.is_some());
        if !any {
            return Err((
                "",
                "retention keeps nothing: give keep_last, keep_daily, ..., keep_within or keep_within_daily, ...",
            ));
        }
        if self.keep_last == Some(0) {
            return Err(("keep_last", "must be at least 1 (the newest snapshot is always kept)"));
        }
        Ok(())
    }

    /// The `keep_within_<unit>` rules, by bucket unit.
    fn within_buckets(&self) -> impl Iterator<Item = (&'static str, Option<Span>)> {
        [
            ("hourly", self.keep_within_hourly),
            ("daily", self.keep_within_daily),
            ("weekly", self.keep_within_weekly),
            ("monthly", self.keep_within_monthly),
            ("yearly", self.keep_within_yearly),
        ]
        .into_iter()
    }
}

/// A decision about one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Snapshot id.
    #[serde(serialize_with = "crate::id::as_hex::one")]
    pub id: SnapshotId,
    /// Its time.
    pub time: String,
    /// Its type.
    pub backup_type: String,
    /// Its kind.
    pub kind: String,
    /// Kept?
    pub keep: bool,
    /// The rules that kept it (empty when removed), or why it goes.
    pub reasons: Vec<String>,
}

/// Parses a `days_N` / `permanent` / `until_verified` label.
fn label_days(label: &str) -> Option<i64> {
    label.strip_prefix("days_").and_then(|n| n.parse().ok())
}

fn bucket(t: &DateTime<FixedOffset>, unit: &str) -> (i32, u32, u32) {
    match unit {
        "hourly" => (t.year(), t.ordinal(), t.hour()),
        "daily" => (t.year(), t.ordinal(), 0),
        "weekly" => {
            let w = t.iso_week();
            (w.year(), w.week(), 0)
        }
        "monthly" => (t.year(), t.month(), 0),
        _ => (t.year(), 0, 0),
    }
}

/// A snapshot whose recorded time cannot be right.
#[derive(Debug, Clone, Serialize)]
pub struct ClockAnomaly {
    /// Snapshot id.
    #[serde(serialize_with = "crate::id::as_hex::one")]
    pub id: SnapshotId,
    /// Its type.
    pub backup_type: String,
    /// Its recorded time.
    pub time: String,
    /// What is wrong, e.g. "dated after now".
    pub problem: String,
}

/// The clock anomalies among `snaps` (one type's or a repository's, any order), judged at
/// `now`: a snapshot dated after `now`, or dated before a snapshot committed earlier (ignoring
/// earlier ones that are themselves dated after `now`, so that one future-dated snapshot does not
/// make every later real one look wrong). Oldest first by commit order.
pub fn clock_anomalies(snaps: &[(SnapshotId, Snapshot)], now: DateTime<FixedOffset>) -> Vec<ClockAnomaly> {
    let mut v: Vec<(&SnapshotId, &Snapshot, DateTime<FixedOffset>)> =
        snaps.iter().filter_map(|(id, s)| s.datetime().map(|t| (id, s, t))).collect();
    v.sort_by(|a, b| a.1.commit_cmp(b.1).then(a.0.cmp(b.0)));
    let mut newest: Option<(&SnapshotId, DateTime<FixedOffset>)> = None;
    let mut out = Vec::new();
    for (id, s, t) in v {
        let problem = if t > now {
            Some(format!("dated after now ({})", now.to_rfc3339()))
        } else if let Some((nid, nt)) = newest.filter(|(_, nt)| t < *nt) {
            Some(format!("dated before snapshot {} ({}), which was committed earlier", nid.short(), nt.to_rfc3339()))
        } else {
            None
        };
        if t <= now && newest.is_none_or(|(_, nt)| t > nt) {
            newest = Some((id, t));
        }
        if let Some(problem) = problem {
            out.push(ClockAnomaly { id: *id, backup_type: s.backup_type.clone(), time: s.time.clone(), problem });
        }
    }
    out
}

/// Applies `policy` to the snapshots of one type. `now` is used for the age of manual and
/// verified pre-change snapshots. Returns decisions newest first (by commit order).
pub fn apply(
    snaps: &[(SnapshotId, Snapshot)],
    policy: Option<&Retention>,
    now: DateTime<FixedOffset>,
) -> Vec<Decision> {
    apply_protecting(snaps, policy, now, &[])
}

/// [`apply`], never removing the snapshots in `protect` (those the current run took).
pub fn apply_protecting(
    snaps: &[(SnapshotId, Snapshot)],
    policy: Option<&Retention>,
    now: DateTime<FixedOffset>,
    protect: &[SnapshotId],
) -> Vec<Decision> {
    let mut v: Vec<(&SnapshotId, &Snapshot, DateTime<FixedOffset>)> =
        snaps.iter().filter_map(|(id, s)| s.datetime().map(|t| (id, s, t))).collect();
    v.sort_by(|a, b| b.1.commit_cmp(a.1).then(b.0.cmp(a.0)));
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); v.len()];
    let anomalies = clock_anomalies(snaps, now);
    let anomaly = |id: &SnapshotId| anomalies.iter().find(|a| a.id == *id);

    // Newest complete snapshot: never removed.
    if let Some(i) = v.iter().position(|(_, s, _)| s.errors.is_empty()) {
        reasons[i].push("newest complete snapshot".into());
    }
    for (i, (id, _, _)) in v.iter().enumerate() {
        if protect.contains(id) {
            reasons[i].push("taken by this run".into());
        }
        if let Some(a) = anomaly(id) {
            reasons[i].push(format!("clock anomaly: {}", a.problem));
        }
    }
    for (i, (_, s, t)) in v.iter().enumerate() {
        let label = s.labels.get("retention").map(String::as_str);
        match s.kind {
            SnapshotKind::PreChange => match crate::format::verification::verified(s) {
                None => reasons[i].push("pre-change, not yet verified".into()),
                Some(_) if label == Some("permanent") => reasons[i].push("pre-change, retention permanent".into()),
                Some((_, date)) => match label.and_then(label_days) {
                    // Counted from the verification: the change is done then, not when it began.
                    Some(d) => {
                        let from = date.and_then(|d| DateTime::parse_from_rfc3339(d).ok()).unwrap_or(*t);
                        if now - from < chrono::Duration::days(d) {
                            reasons[i].push(format!("pre-change, verified, retention days_{d}"));
                        }
                    }
                    // `until_verified`: the verification released it.
                    None if label == Some("until_verified") => {}
                    // No retention given: cleaned up by hand (`forget SNAPSHOT`), never by a rule.
                    None => reasons[i].push("pre-change, verified, kept until forgotten by hand".into()),
                },
            },
            SnapshotKind::Manual => match label.and_then(label_days) {
                Some(d) => {
                    if now - *t < chrono::Duration::days(d) {
                        reasons[i].push(format!("manual, retention days_{d}"));
                    }
                }
                None => reasons[i].push("manual, retention permanent".into()),
            },
            SnapshotKind::Daily => {}
        }
    }
    let Some(p) = policy else {
        for r in reasons.iter_mut() {
            if r.is_empty() {
                r.push("no retention policy for this type".into());
            }
        }
        return finish(&v, reasons);
    };
    // The time rules apply to routine snapshots; pre-change and manual ones have their own.
    // Clock anomalies are kept above and stay out of them: in commit order the others are also
    // in time order, which the bucket rules rely on.
    let routine: Vec<usize> =
        (0..v.len()).filter(|&i| v[i].1.kind == SnapshotKind::Daily && anomaly(v[i].0).is_none()).collect();
    if let Some(n) = p.keep_last {
        for (rank, &i) in routine.iter().take(n as usize).enumerate() {
            reasons[i].push(format!("last {}", rank + 1));
        }
    }
    let label = |t: &DateTime<FixedOffset>, unit: &str| {
        let b = bucket(t, unit);
        match unit {
            "hourly" => t.format("%Y-%m-%d %H:00").to_string(),
            "daily" => t.format("%Y-%m-%d").to_string(),
            "weekly" => format!("{}-W{:02}", b.0, b.1),
            "monthly" => t.format("%Y-%m").to_string(),
            _ => t.format("%Y").to_string(),
        }
    };
    // Bucket rules: walking newest first, the first snapshot met in each bucket is its newest.
    // `keep_<unit> N` stops after N buckets; `keep_within_<unit> D` after the first snapshot
    // more than D older than the newest.
    let newest = routine.first().map(|&i| v[i].2);
    let bucket_rule = |reasons: &mut [Vec<String>], unit: &str, n: Option<u32>, within: Option<Span>, name: &str| {
        let mut last = None;
        let mut count = 0;
        for &i in &routine {
            if n.is_some_and(|n| count >= n) || within.zip(newest).is_some_and(|(w, top)| top - v[i].2 > w.duration()) {
                break;
            }
            let b = bucket(&v[i].2, unit);
            if last != Some(b) {
                last = Some(b);
                count += 1;
                reasons[i].push(format!("{name} {}", label(&v[i].2, unit)));
            }
        }
    };
    for (unit, n) in [
        ("hourly", p.keep_hourly),
        ("daily", p.keep_daily),
        ("weekly", p.keep_weekly),
        ("monthly", p.keep_monthly),
        ("yearly", p.keep_yearly),
    ] {
        if n.is_some() {
            bucket_rule(&mut reasons, unit, n, None, unit);
        }
    }
    if let Some(within) = p.keep_within {
        if let Some(&first) = routine.first() {
            let newest = v[first].2;
            for &i in &routine {
                if newest - v[i].2 <= within.duration() {
                    reasons[i].push(format!("within {within}"));
                }
            }
        }
    }
    for (unit, within) in p.within_buckets() {
        if let Some(w) = within {
            bucket_rule(&mut reasons, unit, None, Some(w), &format!("within {w} {unit}"));
        }
    }
    finish(&v, reasons)
}

fn finish(v: &[(&SnapshotId, &Snapshot, DateTime<FixedOffset>)], mut reasons: Vec<Vec<String>>) -> Vec<Decision> {
    // The newest by commit order is never removed, whatever the rules and the clock say.
    if let Some(r) = reasons.first_mut().filter(|r| r.is_empty()) {
        r.push("newest snapshot (commit order)".into());
    }
    v.iter()
        .zip(reasons)
        .map(|((id, s, _), r)| Decision {
            id: **id,
            time: s.time.clone(),
            backup_type: s.backup_type.clone(),
            kind: s.kind.as_str().into(),
            keep: !r.is_empty(),
            reasons: if r.is_empty() { vec!["no rule keeps it".into()] } else { r },
        })
        .collect()
}

/// Applies `policy` to each type's snapshots in `snaps` (one repository's, oldest first) and
/// returns the ids it does not keep: what a remote with its own retention leaves out.
pub fn not_kept(snaps: &[(SnapshotId, Snapshot)], policy: &Retention, now: DateTime<FixedOffset>) -> Vec<SnapshotId> {
    let mut by_type: BTreeMap<&str, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
    for (id, s) in snaps {
        by_type.entry(s.backup_type.as_str()).or_default().push((*id, s.clone()));
    }
    by_type.values().flat_map(|v| apply(v, Some(policy), now)).filter(|d| !d.keep).map(|d| d.id).collect()
}
