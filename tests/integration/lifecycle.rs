//! The lifecycle around the snapshots: retention (`retention::apply` on synthetic histories, then
//! `forget` through the binary), `prune` (space freed, repacking, SIGKILL at many points, racing a
//! backup), schedules and catch-up (`schedule::due` in Europe/Berlin across DST nights), `backup`
//! running only due types, failures with retries and notifications delivered to a real local HTTP
//! server, `status` (FAILING, OVERDUE, Prometheus metrics), `mark-verified` and `daemon` signals.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::format::manifest::{NodeError, Snapshot, SnapshotKind};
use cairn::id::SnapshotId;
use cairn::{apply_retention, render_status, status, write_metrics};
use cairn::{due, next_round, run_backups, Clock, DaemonTiming, Due, ManualClock, RunOptions, Schedule};
use cairn::{Config, Decision, History, Retention, SnapshotSet};
use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::{Europe::Berlin, Tz};
use serde_json::{json, Value};

use crate::util::{assert_trees_equal, copy_dir, example_app, prng_bytes, write_config, ChildGuard, Env, Run};

// ================================================================================================
// Retention tables on synthetic snapshot histories
// ================================================================================================

/// A synthetic snapshot of type "db" (only what retention reads is meaningful).
fn mk(time: &str, kind: SnapshotKind, labels: &[(&str, &str)], errors: bool) -> (SnapshotId, Snapshot) {
    let s = Snapshot {
        time: time.into(),
        backup_type: "db".into(),
        kind,
        description: None,
        ticket: None,
        creator: None,
        purpose: None,
        host: "test-host".into(),
        paths: vec![],
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        stats: Default::default(),
        tree: vec![],
        tree_len: 0,
        parent: None,
        errors: if errors { vec![NodeError { path: "app.db".into(), message: "unreadable".into() }] } else { vec![] },
        source: Default::default(),
        program: "lifecycle test".into(),
        seq: 0,
    };
    let id = SnapshotId(*blake3::hash(format!("{time} {kind:?} {labels:?} {errors}").as_bytes()).as_bytes());
    (id, s)
}

fn daily(time: &str) -> (SnapshotId, Snapshot) {
    mk(time, SnapshotKind::Daily, &[], false)
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// Every day from `first` to `last` (inclusive), newest first, at `hm` UTC.
fn days_desc(first: &str, last: &str, hm: &str) -> Vec<String> {
    let (a, mut d) = (date(first), date(last));
    let mut v = Vec::new();
    while d >= a {
        v.push(format!("{d}T{hm}:00+00:00"));
        d = d.pred_opt().unwrap();
    }
    v
}

/// Two years of daily snapshots at 03:00 UTC (2024-06-16 .. 2026-06-15), plus three extra
/// same-day ones: Sunday 2026-06-14 15:00, the last evening of May and of 2025.
fn two_years_daily() -> Vec<(SnapshotId, Snapshot)> {
    let mut v: Vec<String> = days_desc("2024-06-16", "2026-06-15", "03:00");
    v.extend(["2026-06-14T15:00:00+00:00", "2026-05-31T22:00:00+00:00", "2025-12-31T23:30:00+00:00"].map(String::from));
    v.iter().map(|t| daily(t)).collect()
}

const NOW: &str = "2026-06-15T12:00:00+00:00";

fn fixed(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Expected decisions: kept snapshot time -> reasons, in the order the rules are applied
/// (newest complete, pre-change/manual, last, hourly..yearly, within).
#[derive(Default)]
struct Expect(BTreeMap<String, Vec<String>>);

impl Expect {
    fn add(&mut self, time: &str, reason: impl Into<String>) -> &mut Self {
        self.0.entry(time.to_string()).or_default().push(reason.into());
        self
    }
}

/// A readable table of expected against actual; empty when they agree.
fn diff_table(snaps: &[(SnapshotId, Snapshot)], decisions: &[Decision], exp: &Expect) -> String {
    let actual: BTreeMap<String, &Decision> = decisions.iter().map(|d| (d.time.clone(), d)).collect();
    let mut bad = Vec::new();
    for (_, s) in snaps {
        let d = actual.get(&s.time).unwrap_or_else(|| panic!("no decision for {}", s.time));
        let want = exp.0.get(&s.time);
        let ok = match want {
            Some(r) => d.keep && &d.reasons == r,
            None => !d.keep && d.reasons == vec!["no rule keeps it".to_string()],
        };
        if !ok {
            bad.push(s.time.clone());
        }
    }
    if bad.is_empty() {
        return String::new();
    }
    let mut out =
        format!("{} decisions differ (>> marks them); kept snapshots and mismatches, newest first:\n", bad.len());
    out.push_str(&format!(
        "   {:<27} {:<10} {:<6} {:<70} {}\n",
        "TIME", "KIND", "KEEP", "REASONS (actual)", "EXPECTED"
    ));
    for d in decisions {
        let mark = bad.contains(&d.time);
        let want = exp.0.get(&d.time);
        if !(mark || d.keep || want.is_some()) {
            continue;
        }
        out.push_str(&format!(
            "{} {:<27} {:<10} {:<6} {:<70} {}\n",
            if mark { ">>" } else { "  " },
            d.time,
            d.kind,
            d.keep,
            d.reasons.join("; "),
            want.map(|r| format!("keep: {}", r.join("; "))).unwrap_or_else(|| "remove".into())
        ));
    }
    out
}

fn check_policy(
    name: &str,
    snaps: &[(SnapshotId, Snapshot)],
    policy: Option<&Retention>,
    now: &str,
    exp: &Expect,
) -> Vec<Decision> {
    let decisions = apply_retention(snaps, policy, fixed(now));
    assert_eq!(decisions.len(), snaps.len(), "{name}: one decision per snapshot");
    // Newest first.
    for w in decisions.windows(2) {
        assert!(
            fixed(&w[0].time) >= fixed(&w[1].time),
            "{name}: decisions not newest first: {} before {}",
            w[0].time,
            w[1].time
        );
    }
    let t = diff_table(snaps, &decisions, exp);
    assert!(t.is_empty(), "policy {name}:\n{t}");
    decisions
}

fn keep_last(n: u32) -> Retention {
    Retention { keep_last: Some(n), ..Default::default() }
}

#[test]
fn retention_seed_000_keep_last_30_8_10() {
    // db: keep_last 30 over two years of dailies (plus same-day extras).
    let snaps = two_years_daily();
    let mut order: Vec<String> = vec!["2026-06-15T03:00:00+00:00".into(), "2026-06-14T15:00:00+00:00".into()];
    order.extend(days_desc("2026-06-01", "2026-06-14", "03:00"));
    order.push("2026-05-31T22:00:00+00:00".into());
    order.extend(days_desc("2026-05-19", "2026-05-31", "03:00"));
    assert_eq!(order.len(), 30);
    let mut e = Expect::default();
    e.add(&order[0], "newest complete snapshot");
    for (i, t) in order.iter().enumerate() {
        e.add(t, format!("last {}", i + 1));
    }
    let d = check_policy("db keep_last 30", &snaps, Some(&keep_last(30)), NOW, &e);
    assert_eq!(d.iter().filter(|d| !d.keep).count(), 733 - 30);

    // logs: weekly (Sunday 03:00) for two years, keep_last 8; an unverified pre-change snapshot
    // between them is kept on its own terms and does not use up one of the 8.
    let mut snaps = Vec::new();
    let mut d = date("2024-06-16");
    while d <= date("2026-06-14") {
        snaps.push(daily(&format!("{d}T03:00:00+00:00")));
        d += chrono::Duration::days(7);
    }
    snaps.push(mk("2026-06-10T09:00:00+00:00", SnapshotKind::PreChange, &[], false));
    let sundays = ["06-14", "06-07", "05-31", "05-24", "05-17", "05-10", "05-03", "04-26"];
    let mut e = Expect::default();
    e.add("2026-06-14T03:00:00+00:00", "newest complete snapshot");
    e.add("2026-06-10T09:00:00+00:00", "pre-change, not yet verified");
    for (i, s) in sundays.iter().enumerate() {
        e.add(&format!("2026-{s}T03:00:00+00:00"), format!("last {}", i + 1));
    }
    check_policy("logs keep_last 8", &snaps, Some(&keep_last(8)), NOW, &e);

    // config: irregular on-change snapshots with mixed offsets, keep_last 10. Order is by
    // instant: 2026-05-06T00:00+02:00 is 2026-05-05T22:00Z, older than 2026-05-05T23:59Z.
    let times = [
        "2026-01-03T10:12:00+01:00",
        "2026-01-20T08:00:00+01:00",
        "2026-02-02T19:45:00+01:00",
        "2026-02-03T07:30:00+01:00",
        "2026-03-15T12:00:00+01:00",
        "2026-03-29T01:59:00+01:00",
        "2026-04-01T09:00:00+02:00",
        "2026-04-01T09:05:00+02:00",
        "2026-05-05T23:59:00+00:00",
        "2026-05-06T00:00:00+02:00",
        "2026-05-20T14:00:00+02:00",
        "2026-06-01T06:30:00+02:00",
        "2026-06-12T18:00:00+02:00",
        "2026-06-15T11:00:00+02:00",
    ];
    let snaps: Vec<_> = times.iter().map(|t| daily(t)).collect();
    let newest_first = [
        "2026-06-15T11:00:00+02:00",
        "2026-06-12T18:00:00+02:00",
        "2026-06-01T06:30:00+02:00",
        "2026-05-20T14:00:00+02:00",
        "2026-05-05T23:59:00+00:00",
        "2026-05-06T00:00:00+02:00",
        "2026-04-01T09:05:00+02:00",
        "2026-04-01T09:00:00+02:00",
        "2026-03-29T01:59:00+01:00",
        "2026-03-15T12:00:00+01:00",
    ];
    let mut e = Expect::default();
    e.add(newest_first[0], "newest complete snapshot");
    for (i, t) in newest_first.iter().enumerate() {
        e.add(t, format!("last {}", i + 1));
    }
    let d = check_policy("config keep_last 10", &snaps, Some(&keep_last(10)), NOW, &e);
    let order: Vec<&str> = d.iter().map(|d| d.time.as_str()).collect();
    assert_eq!(&order[..10], &newest_first[..], "newest first by instant, not by text");
}

const MONTH_ENDS: [&str; 12] = [
    "2026-06-15T03:00:00+00:00",
    "2026-05-31T22:00:00+00:00",
    "2026-04-30T03:00:00+00:00",
    "2026-03-31T03:00:00+00:00",
    "2026-02-28T03:00:00+00:00",
    "2026-01-31T03:00:00+00:00",
    "2025-12-31T23:30:00+00:00",
    "2025-11-30T03:00:00+00:00",
    "2025-10-31T03:00:00+00:00",
    "2025-09-30T03:00:00+00:00",
    "2025-08-31T03:00:00+00:00",
    "2025-07-31T03:00:00+00:00",
];

#[test]
fn retention_seed_002_7_daily_4_weekly_12_monthly() {
    let snaps = two_years_daily();
    let policy = Retention { keep_daily: Some(7), keep_weekly: Some(4), keep_monthly: Some(12), ..Default::default() };
    let mut e = Expect::default();
    e.add("2026-06-15T03:00:00+00:00", "newest complete snapshot");
    for (t, day) in [
        ("2026-06-15T03:00:00+00:00", "2026-06-15"),
        ("2026-06-14T15:00:00+00:00", "2026-06-14"), // the later of two that day
        ("2026-06-13T03:00:00+00:00", "2026-06-13"),
        ("2026-06-12T03:00:00+00:00", "2026-06-12"),
        ("2026-06-11T03:00:00+00:00", "2026-06-11"),
        ("2026-06-10T03:00:00+00:00", "2026-06-10"),
        ("2026-06-09T03:00:00+00:00", "2026-06-09"),
    ] {
        e.add(t, format!("daily {day}"));
    }
    // ISO weeks: Monday 2026-06-15 opens W25; Sundays close W24, W23, W22.
    for (t, w) in [
        ("2026-06-15T03:00:00+00:00", "2026-W25"),
        ("2026-06-14T15:00:00+00:00", "2026-W24"),
        ("2026-06-07T03:00:00+00:00", "2026-W23"),
        ("2026-05-31T22:00:00+00:00", "2026-W22"),
    ] {
        e.add(t, format!("weekly {w}"));
    }
    for t in MONTH_ENDS {
        e.add(t, format!("monthly {}", &t[..7]));
    }
    let d = check_policy("7 daily + 4 weekly + 12 monthly", &snaps, Some(&policy), NOW, &e);
    assert_eq!(d.iter().filter(|d| d.keep).count(), 19);
}

#[test]
fn retention_seed_004_30_days_12_weeks_12_months_7_years() {
    let snaps = two_years_daily();
    let policy = Retention {
        keep_within: Some("30d".parse().unwrap()),
        keep_weekly: Some(12),
        keep_monthly: Some(12),
        keep_yearly: Some(7),
        ..Default::default()
    };
    let mut e = Expect::default();
    e.add("2026-06-15T03:00:00+00:00", "newest complete snapshot");
    let weeks = [
        ("2026-06-15T03:00:00+00:00", 25),
        ("2026-06-14T15:00:00+00:00", 24),
        ("2026-06-07T03:00:00+00:00", 23),
        ("2026-05-31T22:00:00+00:00", 22),
        ("2026-05-24T03:00:00+00:00", 21),
        ("2026-05-17T03:00:00+00:00", 20),
        ("2026-05-10T03:00:00+00:00", 19),
        ("2026-05-03T03:00:00+00:00", 18),
        ("2026-04-26T03:00:00+00:00", 17),
        ("2026-04-19T03:00:00+00:00", 16),
        ("2026-04-12T03:00:00+00:00", 15),
        ("2026-04-05T03:00:00+00:00", 14),
    ];
    for (t, w) in weeks {
        e.add(t, format!("weekly 2026-W{w}"));
    }
    for t in MONTH_ENDS {
        e.add(t, format!("monthly {}", &t[..7]));
    }
    // Only three calendar years have snapshots; 2025's last is the 23:30 one.
    for (t, y) in [
        ("2026-06-15T03:00:00+00:00", "2026"),
        ("2025-12-31T23:30:00+00:00", "2025"),
        ("2024-12-31T03:00:00+00:00", "2024"),
    ] {
        e.add(t, format!("yearly {y}"));
    }
    // Within 30 days of the newest snapshot (2026-06-15 03:00): from 2026-05-16 03:00 on.
    let mut within = days_desc("2026-05-16", "2026-06-15", "03:00");
    within.extend(["2026-06-14T15:00:00+00:00".to_string(), "2026-05-31T22:00:00+00:00".to_string()]);
    for t in &within {
        e.add(t, "within 30d");
    }
    let d = check_policy("30 days + 12 weeks + 12 months + 7 years", &snaps, Some(&policy), NOW, &e);
    assert_eq!(d.iter().filter(|d| d.keep).count(), 50);
}

/// Ten days of 15-minute snapshots thin out with `keep_within_hourly 24h` and
/// `keep_within_daily 7d` (restic's `--keep-within-hourly/daily`): every quarter-hour of the last
/// two hours (`keep_within 2h`), the newest of each hour for a day, the newest of each day for a
/// week, counted from the newest snapshot, not from now.
#[test]
fn retention_keep_within_hourly_and_daily_thin_out_15_minute_snapshots() {
    let newest = fixed("2026-06-15T03:00:00+00:00");
    let quarter = chrono::Duration::minutes(15);
    let times: Vec<DateTime<FixedOffset>> = (0..=960).map(|k| newest - quarter * k).collect();
    let snaps: Vec<_> = times.iter().rev().map(|t| daily(&t.to_rfc3339())).collect();
    let policy = Retention {
        keep_within: Some("2h".parse().unwrap()),
        keep_within_hourly: Some("24h".parse().unwrap()),
        keep_within_daily: Some("7d".parse().unwrap()),
        ..Default::default()
    };
    let mut e = Expect::default();
    e.add(&newest.to_rfc3339(), "newest complete snapshot");
    for t in &times {
        let age = newest - *t;
        if age <= chrono::Duration::hours(2) {
            e.add(&t.to_rfc3339(), "within 2h");
        }
        // The newest of each hour is the one at :45, or :00 for the newest snapshot's own hour.
        let newest_of_hour = t.format("%M").to_string() == "45" || *t == newest;
        if age <= chrono::Duration::hours(24) && newest_of_hour {
            e.add(&t.to_rfc3339(), format!("within 24h hourly {}", t.format("%Y-%m-%d %H:00")));
        }
        let newest_of_day = t.format("%H:%M").to_string() == "23:45" || *t == newest;
        if age <= chrono::Duration::days(7) && newest_of_day {
            e.add(&t.to_rfc3339(), format!("within 7d daily {}", t.format("%Y-%m-%d")));
        }
    }
    let d = check_policy("keep_within 2h + within_hourly 24h + within_daily 7d", &snaps, Some(&policy), NOW, &e);
    // 9 in the last two hours (03:00 back to 01:00); 25 hour buckets (03:00, 02:45, ... back to
    // 03:45 the day before), 3 of them already within 2h; 8 day buckets (06-15 back to 06-08),
    // 06-15 03:00 and 06-14 23:45 already kept.
    let kept = d.iter().filter(|d| d.keep).count();
    assert_eq!(kept, 9 + (25 - 3) + (8 - 2), "{kept}");
    let within_only = Retention { keep_within_daily: Some("7d".parse().unwrap()), ..Default::default() };
    assert!(within_only.validate().is_ok());
    assert!(Retention::default().validate().is_err());
}

#[test]
fn retention_pre_change_and_manual_follow_their_labels() {
    let pc = SnapshotKind::PreChange;
    let man = SnapshotKind::Manual;
    let v = ("verified_by", "alice");
    let snaps = vec![
        mk("2026-01-01T10:00:00+00:00", pc, &[], false),
        mk("2026-01-02T10:00:00+00:00", pc, &[("retention", "days_30")], false),
        mk("2026-06-01T10:00:00+00:00", pc, &[v], false),
        mk("2026-06-02T10:00:00+00:00", pc, &[v, ("retention", "until_verified")], false),
        mk("2026-06-03T10:00:00+00:00", pc, &[v, ("retention", "days_30")], false),
        mk("2026-04-01T10:00:00+00:00", pc, &[v, ("retention", "days_30")], false),
        mk("2020-01-01T10:00:00+00:00", pc, &[v, ("retention", "permanent")], false),
        mk("2019-05-05T10:00:00+00:00", man, &[], false),
        mk("2026-06-10T10:00:00+00:00", man, &[("retention", "days_7")], false),
        mk("2026-06-01T09:00:00+00:00", man, &[("retention", "days_7")], false),
        mk("2026-06-15T03:00:00+00:00", SnapshotKind::Daily, &[], false),
        mk("2026-06-14T03:00:00+00:00", SnapshotKind::Daily, &[], false),
    ];
    let mut e = Expect::default();
    e.add("2026-01-01T10:00:00+00:00", "pre-change, not yet verified");
    e.add("2026-01-02T10:00:00+00:00", "pre-change, not yet verified"); // days_30 counts only once verified
    e.add("2026-06-03T10:00:00+00:00", "pre-change, verified, retention days_30"); // 12 days old
                                                                                   // Verified without a retention of its own: kept until removed by name (`forget`).
    e.add("2026-06-01T10:00:00+00:00", "pre-change, verified, kept until forgotten by hand");
    e.add("2020-01-01T10:00:00+00:00", "pre-change, retention permanent");
    e.add("2019-05-05T10:00:00+00:00", "manual, retention permanent");
    e.add("2026-06-10T10:00:00+00:00", "manual, retention days_7");
    e.add("2026-06-15T03:00:00+00:00", "newest complete snapshot");
    e.add("2026-06-15T03:00:00+00:00", "last 1");
    // Removed: verified with an explicit until_verified, a verified days_30 from 75 days ago, a
    // days_7 manual from 14 days ago, an old daily.
    check_policy("pre-change and manual, keep_last 1", &snaps, Some(&keep_last(1)), NOW, &e);

    // Without any policy for the type: routine snapshots stay, labelled as such.
    let d = apply_retention(&snaps, None, fixed(NOW));
    let old_daily = d.iter().find(|d| d.time == "2026-06-14T03:00:00+00:00").unwrap();
    assert!(old_daily.keep && old_daily.reasons == ["no retention policy for this type"], "{old_daily:?}");
}

#[test]
fn retention_newest_complete_snapshot_is_never_removed() {
    // Five years old, and the policy would drop it: a manual snapshot whose days_1 has long
    // expired, with keep_within 1d. It is the only one: it stays.
    let snaps = vec![mk("2021-06-15T03:00:00+00:00", SnapshotKind::Manual, &[("retention", "days_1")], false)];
    let within = Retention { keep_within: Some("1d".parse().unwrap()), ..Default::default() };
    let mut e = Expect::default();
    e.add("2021-06-15T03:00:00+00:00", "newest complete snapshot");
    check_policy("lone 5-year-old snapshot, keep_within 1d", &snaps, Some(&within), NOW, &e);

    // A device away for years: keep_within counts from the newest snapshot, not from now.
    let snaps = vec![
        daily("2021-06-15T03:00:00+00:00"),
        daily("2021-06-14T02:00:00+00:00"),
        daily("2021-06-13T03:00:00+00:00"),
    ];
    let mut e = Expect::default();
    e.add("2021-06-15T03:00:00+00:00", "newest complete snapshot").add("2021-06-15T03:00:00+00:00", "within 1d");
    check_policy("old history, keep_within 1d", &snaps, Some(&within), NOW, &e);

    // The newest snapshot has unreadable files: it is not "complete"; the newest complete one
    // is the one before, kept although keep_last 1 is used up by the incomplete one.
    let snaps = vec![
        mk("2026-06-15T03:00:00+00:00", SnapshotKind::Daily, &[], true),
        daily("2026-06-14T03:00:00+00:00"),
        daily("2026-06-13T03:00:00+00:00"),
    ];
    let mut e = Expect::default();
    e.add("2026-06-15T03:00:00+00:00", "last 1");
    e.add("2026-06-14T03:00:00+00:00", "newest complete snapshot");
    check_policy("newest has errors, keep_last 1", &snaps, Some(&keep_last(1)), NOW, &e);

    // All incomplete: nothing is "newest complete"; the policy alone decides.
    let snaps = vec![
        mk("2026-06-15T03:00:00+00:00", SnapshotKind::Daily, &[], true),
        mk("2026-06-14T03:00:00+00:00", SnapshotKind::Daily, &[], true),
    ];
    let mut e = Expect::default();
    e.add("2026-06-15T03:00:00+00:00", "last 1");
    check_policy("all incomplete, keep_last 1", &snaps, Some(&keep_last(1)), NOW, &e);
}

// ================================================================================================
// Due / catch-up in Europe/Berlin
// ================================================================================================

/// A Berlin wall-clock time that exists exactly once.
fn berlin(s: &str) -> DateTime<Tz> {
    let n = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    Berlin.from_local_datetime(&n).single().unwrap_or_else(|| panic!("{s} is not a unique Berlin time"))
}

/// A UTC instant shown in Berlin (for the hours that happen twice or not at all).
fn utc(s: &str) -> DateTime<Tz> {
    Berlin.from_utc_datetime(&NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap())
}

fn due_at(schedule: &str, catch_up: Option<&str>, last: Option<DateTime<Tz>>, now: DateTime<Tz>) -> Due {
    let s = Schedule::parse(schedule).unwrap_or_else(|e| panic!("schedule {schedule:?}: {e}"));
    let c = catch_up.map(|c| c.parse::<cairn::Span>().unwrap().duration());
    due(Some(&s), c, last, &now)
}

#[track_caller]
fn assert_not_due(d: &Due, next: &str) {
    assert!(!d.due, "expected not due: {d:?}");
    assert_eq!(d.next, fixed(next), "next due: {d:?}");
    assert_eq!(d.next.to_rfc3339(), fixed(next).to_rfc3339(), "next due offset: {d:?}");
}

#[track_caller]
fn assert_due(d: &Due, reason: &str) {
    assert!(d.due, "expected due: {d:?}");
    assert!(d.reason.contains(reason), "reason {:?} should contain {reason:?}", d.reason);
}

#[test]
fn due_never_backed_up_and_no_schedule() {
    let now = berlin("2026-06-15 12:00");
    let d = due_at("daily 03:00", None, None, now);
    assert_due(&d, "never backed up");
    assert_eq!(d.next, now.fixed_offset());
    let d = due::<Tz>(None, None, Some(berlin("2020-01-01 00:00")), &now);
    assert!(!d.due && d.reason.contains("--now"), "{d:?}");
}

#[test]
fn due_around_midnight_uses_the_local_date() {
    // 23:10 UTC on Jan 1 is 00:10 on Jan 2 in Berlin: the 00:15 slot of Jan 2 is still ahead.
    let last = berlin("2026-01-01 00:20");
    assert_not_due(&due_at("daily 00:15", None, Some(last), utc("2026-01-01 23:10")), "2026-01-02T00:15:00+01:00");
    let d = due_at("daily 00:15", None, Some(last), utc("2026-01-01 23:20"));
    assert_due(&d, "slot 2026-01-02 00:15 passed");
    // Just after local midnight, "daily 03:00" waits for the 03:00 of the new local day.
    let d = due_at("daily 03:00", None, Some(berlin("2026-01-01 03:05")), utc("2026-01-01 23:30"));
    assert_not_due(&d, "2026-01-02T03:00:00+01:00");
    assert_due(
        &due_at("daily 03:00", None, Some(berlin("2026-01-01 03:05")), utc("2026-01-02 02:00")),
        "slot 2026-01-02 03:00",
    );
    // A success just before midnight does not cover the next day's slot.
    let d = due_at("daily 23:55", None, Some(berlin("2026-01-01 23:56")), berlin("2026-01-02 00:01"));
    assert_not_due(&d, "2026-01-02T23:55:00+01:00");
}

#[test]
fn due_on_the_spring_forward_night() {
    // 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST; 02:30 does not exist. Its slot
    // moves to the first valid instant after the gap, 03:00 CEST (01:00 UTC), and runs once.
    for sched in ["daily 02:30", "daily 03:00"] {
        let last = berlin("2026-03-28 03:01");
        let d = due_at(sched, None, Some(last), utc("2026-03-29 00:59"));
        assert_not_due(&d, "2026-03-29T03:00:00+02:00");
        let d = due_at(sched, None, Some(last), utc("2026-03-29 01:00"));
        assert_due(&d, "slot 2026-03-29 03:00");
        // After a success at 03:00:30 CEST: nothing until the next day.
        let ran = utc("2026-03-29 01:00") + chrono::Duration::seconds(30);
        let next = if sched == "daily 02:30" { "2026-03-30T02:30:00+02:00" } else { "2026-03-30T03:00:00+02:00" };
        assert_not_due(&due_at(sched, None, Some(ran), berlin("2026-03-29 03:40")), next);
        assert_not_due(&due_at(sched, None, Some(ran), berlin("2026-03-29 23:59")), next);
    }
    // "every 6h" counts real hours: from midnight CET, the next run is 07:00 CEST.
    let d = due_at("every 6h", None, Some(berlin("2026-03-29 00:00")), berlin("2026-03-29 06:30"));
    assert_not_due(&d, "2026-03-29T07:00:00+02:00");
}

#[test]
fn due_on_the_fall_back_night() {
    // 2026-10-25: Berlin goes from 03:00 CEST back to 02:00 CET; 02:30 happens at 00:30 UTC
    // (CEST) and again at 01:30 UTC (CET). "daily 02:30" takes the first and runs once.
    let last = berlin("2026-10-24 02:35");
    assert_not_due(&due_at("daily 02:30", None, Some(last), utc("2026-10-25 00:29")), "2026-10-25T02:30:00+02:00");
    assert_due(&due_at("daily 02:30", None, Some(last), utc("2026-10-25 00:30")), "slot 2026-10-25 02:30");
    let ran = utc("2026-10-25 00:31");
    for second_pass in ["2026-10-25 01:30", "2026-10-25 01:45", "2026-10-25 05:00"] {
        assert_not_due(&due_at("daily 02:30", None, Some(ran), utc(second_pass)), "2026-10-26T02:30:00+01:00");
    }
    // 03:00 happens once, in CET (02:00 UTC).
    let last = berlin("2026-10-24 03:05");
    assert_not_due(&due_at("daily 03:00", None, Some(last), utc("2026-10-25 00:30")), "2026-10-25T03:00:00+01:00");
    assert_not_due(&due_at("daily 03:00", None, Some(last), utc("2026-10-25 01:59")), "2026-10-25T03:00:00+01:00");
    assert_due(&due_at("daily 03:00", None, Some(last), utc("2026-10-25 02:00")), "slot 2026-10-25 03:00");
    assert_not_due(
        &due_at("daily 03:00", None, Some(utc("2026-10-25 02:01")), utc("2026-10-25 10:00")),
        "2026-10-26T03:00:00+01:00",
    );
    // "hourly": both 02:00s of the night are slots (00:00 and 01:00 UTC).
    let ran = utc("2026-10-25 00:05"); // 02:05 CEST
    assert_not_due(&due_at("hourly", None, Some(ran), utc("2026-10-25 00:50")), "2026-10-25T02:00:00+01:00");
    assert_due(&due_at("hourly", None, Some(ran), utc("2026-10-25 01:10")), "passed");
    let ran = utc("2026-10-25 01:05"); // 02:05 CET
    assert_not_due(&due_at("hourly", None, Some(ran), utc("2026-10-25 01:50")), "2026-10-25T03:00:00+01:00");
    // ... and on the spring night 02:00 does not exist: after 01:xx CET comes 03:00 CEST.
    assert_not_due(
        &due_at("hourly", None, Some(berlin("2026-03-29 01:05")), berlin("2026-03-29 01:30")),
        "2026-03-29T03:00:00+02:00",
    );
}

#[test]
fn due_after_a_week_off_runs_once() {
    // Last success Monday 03:02; the machine was off until the next Monday 10:00: due once...
    let last = berlin("2026-06-01 03:02");
    let now = berlin("2026-06-08 10:00");
    assert_due(&due_at("daily 03:00", None, Some(last), now), "slot 2026-06-08 03:00");
    // ... and after that run succeeds at T, not again until the next slot.
    let t = berlin("2026-06-08 10:01");
    for n in ["2026-06-08 10:02", "2026-06-08 23:59", "2026-06-09 02:59"] {
        assert_not_due(&due_at("daily 03:00", Some("2d"), Some(t), berlin(n)), "2026-06-09T03:00:00+02:00");
    }
    assert_due(&due_at("daily 03:00", Some("2d"), Some(t), berlin("2026-06-09 03:00")), "slot 2026-06-09 03:00");
    // Monthly: a month off runs once too.
    let d = due_at("monthly 1 04:30", None, Some(berlin("2026-04-01 04:31")), berlin("2026-06-20 12:00"));
    assert_due(&d, "slot 2026-06-01 04:30");
    assert_not_due(
        &due_at("monthly 1 04:30", None, Some(berlin("2026-06-20 12:01")), berlin("2026-06-20 12:02")),
        "2026-07-01T04:30:00+02:00",
    );
}

#[test]
fn due_catch_up_after_two_days_whatever_the_slot() {
    let last = berlin("2026-06-07 03:05"); // Sunday
                                           // Without catch-up: next Sunday.
    assert_not_due(
        &due_at("weekly sun 03:00", None, Some(last), berlin("2026-06-09 03:05")),
        "2026-06-14T03:00:00+02:00",
    );
    // With catch_up_after 2d: the catch-up time comes first, and is due once reached.
    assert_not_due(
        &due_at("weekly sun 03:00", Some("2d"), Some(last), berlin("2026-06-09 03:04")),
        "2026-06-09T03:05:00+02:00",
    );
    let d = due_at("weekly sun 03:00", Some("2d"), Some(last), berlin("2026-06-09 03:05"));
    assert_due(&d, "catch-up: last success 2d 0h ago");
    // A failing daily job: catch-up also fires for the "every" kind.
    let d = due_at("every 7d", Some("2d"), Some(last), berlin("2026-06-10 00:00"));
    assert_due(&d, "catch-up");
}

#[test]
fn due_weekly_across_the_week_boundary() {
    let last = berlin("2026-06-07 03:01"); // Sunday, ISO week 23
    assert_not_due(
        &due_at("weekly sun 03:00", None, Some(last), berlin("2026-06-13 23:59")),
        "2026-06-14T03:00:00+02:00",
    );
    assert_not_due(
        &due_at("weekly sun 03:00", None, Some(last), berlin("2026-06-14 02:59")),
        "2026-06-14T03:00:00+02:00",
    );
    assert_due(&due_at("weekly sun 03:00", None, Some(last), berlin("2026-06-14 03:00")), "slot 2026-06-14 03:00");
    // Monday of the next ISO week: the Sunday slot was missed, run now.
    assert_due(&due_at("weekly sun 03:00", None, Some(last), berlin("2026-06-15 00:10")), "slot 2026-06-14 03:00");
    // Ran Sunday 03:02: Monday is not due, the next slot is a week later.
    assert_not_due(
        &due_at("weekly sun 03:00", None, Some(berlin("2026-06-14 03:02")), berlin("2026-06-15 00:10")),
        "2026-06-21T03:00:00+02:00",
    );
}

#[test]
fn due_every_6h() {
    let last = berlin("2026-06-01 10:00");
    assert_not_due(&due_at("every 6h", None, Some(last), berlin("2026-06-01 15:59")), "2026-06-01T16:00:00+02:00");
    let d = due_at("every 6h", None, Some(last), berlin("2026-06-01 16:00"));
    assert!(d.due && d.reason == "every 6h 0m", "{d:?}");
    // Days off: due once, then 6 h after the new success.
    assert!(due_at("every 6h", None, Some(last), berlin("2026-06-05 08:00")).due);
    assert_not_due(
        &due_at("every 6h", None, Some(berlin("2026-06-05 08:01")), berlin("2026-06-05 08:02")),
        "2026-06-05T14:01:00+02:00",
    );
}

// ================================================================================================
// CLI: helpers
// ================================================================================================

/// `cairn ARGS` with fast retries.
fn cairn(env: &Env, args: &[&str]) -> Run {
    let mut c = env.cmd();
    c.env("CAIRN_RETRY_BASE_MS", "10").args(args);
    env.run_cmd(c)
}

/// `cairn --config CFG ARGS` (repository and password from the config), fast retries.
pub(crate) fn cairn_cfg(env: &Env, cfg: &Path, args: &[&str]) -> Run {
    let mut c = env.cfg_cmd(cfg, args);
    c.env("CAIRN_RETRY_BASE_MS", "10");
    env.run_cmd(c)
}

/// `snapshot --json ARGS`; returns the new id.
fn snap(env: &Env, args: &[&str]) -> String {
    let mut a = vec!["--json", "snapshot"];
    a.extend_from_slice(args);
    let r = cairn(env, &a).ok();
    r.json()["id"].as_str().unwrap().to_string()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Through a rename: a new inode, so the unchanged-file check can never be fooled.
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Ids in `snapshots --json`.
fn snapshot_ids(env: &Env, extra: &[&str]) -> BTreeSet<String> {
    let mut a = vec!["--json"];
    a.extend_from_slice(extra);
    a.push("snapshots");
    cairn(env, &a).ok().json().as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

/// Restores snapshot `id` and checks it equals `src` (content, modes, mtimes). `name` is the
/// snapshot's root (the source directory's name).
fn assert_restores(env: &Env, extra: &[&str], id: &str, src: &Path) {
    let target = env.path().join(format!("restore-{}-{}", &id[..12], rand_suffix()));
    let mut a: Vec<&str> = extra.to_vec();
    let t = target.to_str().unwrap();
    a.extend_from_slice(&["restore", id, "--target", t]);
    cairn(env, &a).ok();
    assert_trees_equal(src, &target.join(src.file_name().unwrap()));
    std::fs::remove_dir_all(&target).unwrap();
}

fn rand_suffix() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

#[track_caller]
fn verify_read_data(env: &Env, extra: &[&str]) {
    let mut a: Vec<&str> = extra.to_vec();
    a.extend_from_slice(&["verify", "--read-data"]);
    let r = cairn(env, &a);
    assert_eq!(r.code, 0, "verify --read-data failed\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("no errors found"), "{}", r.stdout);
}

/// Edits the `backup` section of the example app's config.json.
pub(crate) fn edit_backup(cfg: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(cfg).unwrap()).unwrap();
    f(&mut v["backup"]);
    std::fs::write(cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

pub(crate) fn history(env: &Env, cfg: &Path, ty: Option<&str>) -> Vec<Value> {
    let mut a = vec!["--json", "history"];
    if let Some(t) = ty {
        a.extend_from_slice(&["--type", t]);
    }
    cairn_cfg(env, cfg, &a).ok().json().as_array().unwrap().clone()
}

fn status_type(st: &Value, ty: &str) -> Value {
    st["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["backup_type"] == ty)
        .unwrap_or_else(|| panic!("no {ty} in {st}"))
        .clone()
}

// ================================================================================================
// CLI: forget and prune
// ================================================================================================

#[test]
fn cli_forget_dry_run_lists_everything_then_forget_removes_exactly_that() {
    let env = Env::new();
    write_config(
        env.path(),
        json!({"name": "t", "repository": "repo", "types": {
            "a": {"paths": ["states"], "retention": {"keep_last": 2}},
            "b": {"paths": ["states"], "retention": {"keep_last": 1}},
            "c": {"paths": ["states"]}
        }}),
    );
    env.init();
    let mut states: HashMap<String, PathBuf> = HashMap::new();
    let mut take = |ty: &str, n: u64, extra: &[&str]| -> String {
        let dir = env.path().join("states").join(format!("{ty}{n}"));
        write(&dir.join("data.bin"), &prng_bytes(n * 100 + ty.len() as u64 + ty.as_bytes()[0] as u64, 40_000));
        write(&dir.join("note.txt"), format!("{ty} {n}\n").as_bytes());
        let mut a = vec!["--type", ty];
        a.extend_from_slice(extra);
        let d = dir.to_str().unwrap().to_string();
        a.push(&d);
        let id = snap(&env, &a);
        states.insert(id.clone(), dir);
        id
    };
    let a_manual = take("a", 0, &["--kind", "manual", "--retention", "days_1", "--purpose", "before upgrade"]);
    let a1 = take("a", 1, &[]);
    let a2 = take("a", 2, &[]);
    let a3 = take("a", 3, &[]);
    let a4 = take("a", 4, &[]);
    let b_pre = take("b", 0, &["--kind", "pre-change", "--description", "migration", "--ticket", "T-9"]);
    let b1 = take("b", 1, &[]);
    let b2 = take("b", 2, &[]);
    let b3 = take("b", 3, &[]);
    let c1 = take("c", 1, &[]);
    let c2 = take("c", 2, &[]);
    let all = snapshot_ids(&env, &[]);
    assert_eq!(all.len(), 11);

    let expected: BTreeMap<&str, (bool, Vec<&str>)> = [
        (a_manual.as_str(), (true, vec!["manual, retention days_1"])),
        (a1.as_str(), (false, vec!["no rule keeps it"])),
        (a2.as_str(), (false, vec!["no rule keeps it"])),
        (a3.as_str(), (true, vec!["last 2"])),
        (a4.as_str(), (true, vec!["newest complete snapshot", "last 1"])),
        (b_pre.as_str(), (true, vec!["pre-change, not yet verified"])),
        (b1.as_str(), (false, vec!["no rule keeps it"])),
        (b2.as_str(), (false, vec!["no rule keeps it"])),
        (b3.as_str(), (true, vec!["newest complete snapshot", "last 1"])),
        (c1.as_str(), (true, vec!["no retention policy for this type"])),
        (c2.as_str(), (true, vec!["newest complete snapshot"])),
    ]
    .into_iter()
    .collect();

    let r = cairn(&env, &["--json", "forget", "--dry-run"]).ok();
    let v = r.json();
    assert_eq!(v["dry_run"], true);
    let decisions = v["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 11, "every snapshot listed: {v:#}");
    let mut got: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
    for d in decisions {
        let reasons = d["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
        got.insert(d["id"].as_str().unwrap().to_string(), (d["keep"].as_bool().unwrap(), reasons));
        assert!(["a", "b", "c"].contains(&d["backup_type"].as_str().unwrap()), "{d}");
        assert!(d["time"].as_str().is_some() && d["kind"].as_str().is_some(), "{d}");
    }
    let want: BTreeMap<String, (bool, Vec<String>)> = expected
        .iter()
        .map(|(k, (keep, r))| (k.to_string(), (*keep, r.iter().map(|s| s.to_string()).collect())))
        .collect();
    assert_eq!(got, want, "forget --dry-run decisions");
    assert_eq!(snapshot_ids(&env, &[]), all, "a dry run removes nothing");
    let text = cairn(&env, &["forget", "--dry-run"]).ok();
    assert!(
        text.stdout.contains("would remove") && text.stdout.contains("4 snapshots would be removed, 7 kept"),
        "{}",
        text.stdout
    );
    assert_eq!(snapshot_ids(&env, &[]), all);

    // The real thing removes exactly those four.
    let r = cairn(&env, &["--json", "forget"]).ok();
    assert_eq!(r.json()["dry_run"], false);
    let kept: BTreeSet<String> = want.iter().filter(|(_, (k, _))| *k).map(|(id, _)| id.clone()).collect();
    assert_eq!(snapshot_ids(&env, &[]), kept);
    // Idempotent: a second forget removes nothing more.
    let v = cairn(&env, &["--json", "forget"]).ok().json();
    assert!(v["decisions"].as_array().unwrap().iter().all(|d| d["keep"] == true), "{v:#}");
    // --type limits the scope.
    let v = cairn(&env, &["--json", "forget", "--dry-run", "--type", "b"]).ok().json();
    assert!(v["decisions"].as_array().unwrap().iter().all(|d| d["backup_type"] == "b"), "{v:#}");

    // Prune frees the space of the four, and everything left restores byte for byte.
    let p = cairn(&env, &["--json", "prune"]).ok().json();
    assert!(p["bytes_freed"].as_i64().unwrap() > 0, "{p:#}");
    assert!(p["packs_deleted"].as_u64().unwrap() + p["packs_repacked"].as_u64().unwrap() >= 1, "{p:#}");
    assert_eq!(p["dry_run"], false);
    verify_read_data(&env, &[]);
    for id in &kept {
        assert_restores(&env, &[], id, &states[id]);
    }
    // Nothing left to do.
    let p = cairn(&env, &["--json", "prune", "--dry-run"]).ok().json();
    assert_eq!(
        (p["packs_deleted"].as_u64(), p["packs_repacked"].as_u64(), p["bytes_deleted"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{p:#}"
    );
}

#[test]
fn cli_prune_repacks_a_mostly_dead_pack() {
    let env = Env::new();
    write_config(
        env.path(),
        json!({"name": "t", "repository": "repo", "types": {"r": {"paths": ["big"], "retention": {"keep_last": 1}}}}),
    );
    env.init();
    let big = env.path().join("big");
    for i in 0..6u64 {
        write(&big.join(format!("f{i}.bin")), &prng_bytes(9000 + i, 150_000));
    }
    let first = snap(&env, &["--type", "r", big.to_str().unwrap()]);
    let small = env.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::copy(big.join("f3.bin"), small.join("f3.bin")).unwrap();
    let second = snap(&env, &["--type", "r", small.to_str().unwrap()]);
    let v = cairn(&env, &["--json", "forget"]).ok().json();
    let removed: Vec<&str> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == false)
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(removed, vec![first.as_str()]);
    let packs_before = crate::util::repo_files(&env.repo(), "packs").len();

    let dry = cairn(&env, &["--json", "prune", "--dry-run"]).ok().json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(crate::util::repo_files(&env.repo(), "packs").len(), packs_before, "dry run changes nothing");
    let p = cairn(&env, &["--json", "prune"]).ok().json();
    assert!(p["packs_repacked"].as_u64().unwrap() >= 1 || p["packs_deleted"].as_u64().unwrap() >= 1, "{p:#}");
    // One file of six is live in the first snapshot's pack: it is repacked, not kept whole.
    assert_eq!(p["packs_repacked"], 1, "{p:#}");
    assert!(p["bytes_freed"].as_i64().unwrap() > 4 * 150_000, "{p:#}");
    assert_eq!(
        p["bytes_freed"].as_i64().unwrap(),
        p["bytes_deleted"].as_i64().unwrap() - p["bytes_written"].as_i64().unwrap()
    );
    // The dry run announced the same: what it deletes, less what repacking writes back (give
    // or take the new pack's header and trailer).
    assert_eq!(
        (dry["packs_repacked"].as_u64(), dry["bytes_deleted"].as_u64()),
        (p["packs_repacked"].as_u64(), p["bytes_deleted"].as_u64()),
        "{dry:#}\n{p:#}"
    );
    let (est, real) = (dry["bytes_freed"].as_i64().unwrap(), p["bytes_freed"].as_i64().unwrap());
    assert!(est >= real && est - real < 4096, "dry run said {est} bytes freed, prune freed {real}");
    verify_read_data(&env, &[]);
    assert_restores(&env, &[], &second, &small);
}

/// `ls`-style listing of the pack, index and snapshot files of a repository.
fn repo_state(repo: &Path) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    for d in ["packs", "index", "snapshots"] {
        for p in crate::util::repo_files(repo, d) {
            s.insert(format!("{d}/{}", p.file_name().unwrap().to_string_lossy()));
        }
    }
    s
}

/// When to SIGKILL a running prune.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// After a fixed delay.
    After(u64),
    /// As soon as a pack appears that was not there (step 1, repacking, has written).
    NewPack,
    /// As soon as a new index file appears (step 2).
    NewIndex,
    /// As soon as an old index file is gone (step 3).
    IndexGone,
    /// As soon as an old pack is gone (step 4).
    PackGone,
}

#[test]
fn cli_prune_survives_sigkill_at_any_point() {
    let env = Env::new();
    write_config(
        env.path(),
        json!({"name": "k", "repository": "repo", "types": {"k": {"paths": ["src"], "retention": {"keep_last": 4}}}}),
    );
    cairn(&env, &["init", "--pack-size-mib", "1"]).ok();
    // 16 snapshots of one directory: a shared file, one that changes every time and one that
    // changes every other time, so prune both deletes whole packs and repacks the first one.
    let src = env.path().join("src");
    let contents = |k: u64| -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("common.bin", prng_bytes(1, 120_000)),
            ("a.bin", prng_bytes(100 + k, 120_000)),
            ("b.bin", prng_bytes(200 + k / 2, 60_000)),
        ]
    };
    let mut ids = Vec::new();
    for k in 0..16u64 {
        for (name, bytes) in contents(k) {
            if k == 0 || name == "a.bin" || (name == "b.bin" && k % 2 == 0) {
                write(&src.join(name), &bytes);
            }
        }
        ids.push(snap(&env, &["--type", "k", src.to_str().unwrap()]));
    }
    cairn(&env, &["forget"]).ok();
    let kept: Vec<(String, u64)> = ids.iter().cloned().zip(0..).skip(12).collect();
    assert_eq!(snapshot_ids(&env, &[]), kept.iter().map(|(i, _)| i.clone()).collect());
    let pristine = env.path().join("pristine");
    copy_dir(&env.repo(), &pristine, &[]);
    let before = repo_state(&pristine);

    let check_restores = |repo: &Path| {
        let r = repo.to_str().unwrap();
        for (id, k) in &kept {
            let target = env.path().join(format!("r-{}", rand_suffix()));
            cairn(&env, &["--repo", r, "restore", id, "--target", target.to_str().unwrap()]).ok();
            let mut names: Vec<String> = std::fs::read_dir(target.join("src"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, ["a.bin", "b.bin", "common.bin"]);
            for (name, bytes) in contents(*k) {
                assert!(
                    std::fs::read(target.join("src").join(name)).unwrap() == bytes,
                    "snapshot {k} {name} differs after restore from {r}"
                );
            }
            std::fs::remove_dir_all(&target).unwrap();
        }
    };

    // An uninterrupted prune on a copy: what it does and how long it takes.
    let work = env.path().join("work-full");
    copy_dir(&pristine, &work, &[]);
    let t0 = Instant::now();
    let p = cairn(&env, &["--repo", work.to_str().unwrap(), "--json", "prune"]).ok().json();
    let full = t0.elapsed();
    assert!(p["packs_deleted"].as_u64().unwrap() >= 8 && p["packs_repacked"].as_u64().unwrap() >= 1, "{p:#}");
    let after = repo_state(&work);
    std::fs::remove_dir_all(&work).unwrap();

    // Kill it at fixed delays, and as soon as each of its four write steps shows on disk.
    let kills = [
        Kill::After(5),
        Kill::After(20),
        Kill::After(50),
        Kill::After(100),
        Kill::NewPack,
        Kill::NewIndex,
        Kill::IndexGone,
        Kill::PackGone,
    ];
    let mut outcomes = Vec::new();
    let mut hit_mid_way = 0;
    for (round, kill) in kills.iter().enumerate() {
        let work = env.path().join(format!("work-{round}"));
        copy_dir(&pristine, &work, &[]);
        let w = work.to_str().unwrap();
        let mut c = env.cmd();
        c.args(["--repo", w, "prune"]).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        let t = Instant::now();
        match kill {
            Kill::After(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            _ => loop {
                let now = repo_state(&work);
                let seen = match kill {
                    Kill::NewPack => now.iter().any(|f| f.starts_with("packs/") && !before.contains(f)),
                    Kill::NewIndex => now.iter().any(|f| f.starts_with("index/") && !before.contains(f)),
                    Kill::IndexGone => before.iter().any(|f| f.starts_with("index/") && !now.contains(f)),
                    _ => before.iter().any(|f| f.starts_with("packs/") && !now.contains(f)),
                };
                if seen || child.try_wait().unwrap().is_some() || t.elapsed() > Duration::from_secs(30) {
                    break;
                }
            },
        }
        let _ = child.kill();
        let st = child.wait().unwrap();
        let state = repo_state(&work);
        let phase = if st.code().is_some() {
            "finished before the kill"
        } else if state == before {
            "killed before changing anything"
        } else if state == after {
            "killed after its last file change"
        } else {
            "killed mid-way"
        };
        if st.code().is_none() && state != before {
            hit_mid_way += 1;
        }
        outcomes.push(format!(
            "{kill:?} ({} ms): {phase}, {} files differ from the start",
            t.elapsed().as_millis(),
            state.symmetric_difference(&before).count()
        ));
        verify_read_data(&env, &["--repo", w]);
        check_restores(&work);
        // A later prune completes the job and leaves nothing to do.
        cairn(&env, &["--repo", w, "prune"]).ok();
        let dry = cairn(&env, &["--repo", w, "--json", "prune", "--dry-run"]).ok().json();
        assert_eq!(
            (dry["packs_deleted"].as_u64(), dry["packs_repacked"].as_u64(), dry["unindexed_deleted"].as_u64()),
            (Some(0), Some(0), Some(0)),
            "after {kill:?}: {dry:#}"
        );
        if round + 1 == kills.len() {
            verify_read_data(&env, &["--repo", w]);
            check_restores(&work);
        }
        std::fs::remove_dir_all(&work).unwrap();
    }
    eprintln!("uninterrupted prune: {} ms; kills:\n  {}", full.as_millis(), outcomes.join("\n  "));
    assert!(hit_mid_way >= 1, "no kill landed while prune was changing the repository: {outcomes:#?}");
}

#[test]
fn cli_concurrent_snapshot_and_prune_never_corrupt() {
    let env = Env::new();
    write_config(
        env.path(),
        json!({"name": "c", "repository": "repo", "types": {"c": {"paths": ["states"], "retention": {"keep_last": 2}}}}),
    );
    env.init();
    let mut states: HashMap<String, PathBuf> = HashMap::new();
    let (mut snap_ok, mut snap_locked, mut prune_ok, mut prune_locked) = (0, 0, 0, 0);
    for round in 0..8u64 {
        // Each state re-adds the content of a snapshot that forget just made garbage, so a
        // prune that ignored the lock would delete data the new snapshot deduplicates against.
        let dir = env.path().join("states").join(format!("r{round}"));
        write(&dir.join("shared.bin"), &prng_bytes(7, 50_000));
        write(&dir.join("new.bin"), &prng_bytes(500 + round, 150_000));
        if round >= 2 {
            write(&dir.join("old.bin"), &prng_bytes(500 + round - 2, 150_000));
        }
        cairn(&env, &["forget"]).ok();
        let d = dir.to_str().unwrap().to_string();
        let mut p = env.cmd();
        p.args(["prune"]).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut s = env.cmd();
        s.args(["--json", "snapshot", "--type", "c", &d]).stdout(Stdio::piped()).stderr(Stdio::piped());
        let (pc, sc) = (p.spawn().unwrap(), s.spawn().unwrap());
        let (po, so) = (pc.wait_with_output().unwrap(), sc.wait_with_output().unwrap());
        for (what, o, ok, locked) in
            [("prune", &po, &mut prune_ok, &mut prune_locked), ("snapshot", &so, &mut snap_ok, &mut snap_locked)]
        {
            let err = String::from_utf8_lossy(&o.stderr);
            match o.status.code() {
                Some(0) => *ok += 1,
                Some(1) if err.contains("locked") => *locked += 1,
                c => panic!(
                    "round {round}: {what} exited {c:?}\nstdout: {}\nstderr: {err}",
                    String::from_utf8_lossy(&o.stdout)
                ),
            }
        }
        if so.status.success() {
            let v: Value = serde_json::from_slice(&so.stdout).unwrap();
            states.insert(v["id"].as_str().unwrap().to_string(), dir.clone());
        }
        if round == 7 && snap_ok == 0 {
            // Never let the test end without a single concurrent snapshot having worked.
            states.insert(snap(&env, &["--type", "c", &d]), dir);
        }
    }
    eprintln!("snapshot: {snap_ok} ok, {snap_locked} locked; prune: {prune_ok} ok, {prune_locked} locked");
    verify_read_data(&env, &[]);
    let ids = snapshot_ids(&env, &[]);
    assert!(!ids.is_empty());
    for id in &ids {
        assert_restores(&env, &[], id, &states[id]);
    }
    // A final forget + prune leaves a consistent repository too.
    cairn(&env, &["forget"]).ok();
    cairn(&env, &["prune"]).ok();
    verify_read_data(&env, &[]);
    for id in snapshot_ids(&env, &[]) {
        assert_restores(&env, &[], &id, &states[&id]);
    }
}

// ================================================================================================
// CLI: schedules, failures, notifications, status
// ================================================================================================

/// Next local `hh:00` strictly after now, optionally on a given weekday.
fn next_local(hour: u32, weekday: Option<chrono::Weekday>) -> DateTime<FixedOffset> {
    use chrono::{Datelike, Local};
    let now = Local::now();
    let mut d = now.date_naive();
    loop {
        let t = Local.from_local_datetime(&d.and_hms_opt(hour, 0, 0).unwrap()).earliest().unwrap();
        if t > now && weekday.is_none_or(|w| d.weekday() == w) {
            return t.fixed_offset();
        }
        d = d.succ_opt().unwrap();
    }
}

#[test]
fn cli_backup_without_now_runs_only_due_types() {
    let env = Env::new();
    let (_app, cfg) = example_app(env.path());
    // db "daily 03:00" (catch_up_after 2d), logs "weekly sun 03:00", config "on-change".
    let r = cairn_cfg(&env, &cfg, &["--json", "backup"]).ok();
    let v = r.json();
    let ran: Vec<(&str, &str, &str)> = v["ran"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["backup_type"].as_str().unwrap(), t["reason"].as_str().unwrap(), t["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ran,
        [
            ("db", "never backed up", "success"),
            ("logs", "never backed up", "success"),
            ("config", "never backed up", "success")
        ]
    );

    // Immediately again: only the on-change type runs (and finds nothing changed).
    let v = cairn_cfg(&env, &cfg, &["--json", "backup"]).ok().json();
    let ran: Vec<(&str, &str)> = v["ran"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["backup_type"].as_str().unwrap(), t["result"].as_str().unwrap()))
        .collect();
    assert_eq!(ran, [("config", "unchanged")], "{v:#}");
    let skipped: Vec<&str> = v["skipped"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(skipped, ["db", "logs"]);
    let r = cairn_cfg(&env, &cfg, &["backup"]).ok();
    assert!(
        r.stdout.contains("db: not due (next slot") && r.stdout.contains("logs: not due (next slot"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("config: unchanged since snapshot"), "{}", r.stdout);
    assert_eq!(crate::util::snapshot_count(&_app.join("backups/repo")), 3);

    // status: next due times and not due now.
    let st = cairn_cfg(&env, &cfg, &["--json", "status"]).verdict().json();
    let db = status_type(&st, "db");
    assert_eq!(
        (db["due_now"].as_bool(), db["overdue"].as_bool(), db["consecutive_failures"].as_u64()),
        (Some(false), Some(false), Some(0)),
        "{db:#}"
    );
    assert_eq!(fixed(db["next_due"].as_str().unwrap()), next_local(3, None), "{db:#}");
    let logs = status_type(&st, "logs");
    assert_eq!(logs["due_now"], false, "{logs:#}");
    assert_eq!(fixed(logs["next_due"].as_str().unwrap()), next_local(3, Some(chrono::Weekday::Sun)), "{logs:#}");
    let config = status_type(&st, "config");
    assert_eq!(config["due_now"], true, "on-change types are checked on every run: {config:#}");
    assert!(st["overdue"].as_array().unwrap().is_empty(), "{st:#}");
    // The history has the five runs, newest first.
    let h = history(&env, &cfg, None);
    let runs: Vec<(&str, &str)> =
        h.iter().map(|r| (r["backup_type"].as_str().unwrap(), r["result"].as_str().unwrap())).collect();
    assert_eq!(
        runs,
        [
            ("config", "unchanged"),
            ("config", "unchanged"),
            ("config", "success"),
            ("logs", "success"),
            ("db", "success")
        ]
    );
    // --now runs everything regardless.
    let v = cairn_cfg(&env, &cfg, &["--json", "backup", "--now", "--type", "db"]).ok().json();
    assert_eq!(v["ran"][0]["reason"], "--now");
}

/// A minimal HTTP server on 127.0.0.1 that records every request and answers 200.
pub(crate) struct HttpSink {
    port: u16,
    reqs: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone, Debug)]
pub(crate) struct Req {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Req {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn read_request(s: &mut TcpStream) -> Option<Req> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let mut body = buf[head_end + 4..].to_vec();
    if let Some(len) = get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        while body.len() < len {
            let n = s.read(&mut b).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&b[..n]);
        }
    } else if get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        while !body.windows(5).any(|w| w == b"0\r\n\r\n") {
            let n = s.read(&mut b).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&b[..n]);
        }
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..i]).trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[i + 2..i + 2 + size]);
            rest = &rest[i + 2 + size + 2..];
        }
        body = out;
    }
    Some(Req { method, path, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

impl HttpSink {
    pub(crate) fn start() -> HttpSink {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let reqs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (reqs.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for s in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = s else { continue };
                // Recorded before the answer, so the sender has been heard once it returns.
                if let Some(req) = read_request(&mut s) {
                    r.lock().unwrap().push(req);
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        HttpSink { port, reqs, stop, thread: Some(thread) }
    }
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    pub(crate) fn take(&self) -> Vec<Req> {
        std::mem::take(&mut *self.reqs.lock().unwrap())
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A local port with nothing listening.
pub(crate) fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// (ntfy, webhook) events among `reqs`: ntfy as (Title, body), webhook as JSON.
pub(crate) fn split_events(reqs: &[Req]) -> (Vec<(String, String)>, Vec<Value>) {
    let mut ntfy = Vec::new();
    let mut hook = Vec::new();
    for r in reqs {
        assert_eq!(r.method, "POST", "{r:?}");
        match r.path.as_str() {
            "/topic" => ntfy.push((r.header("Title").unwrap_or_default().to_string(), r.body.clone())),
            "/hook" => {
                assert!(r.header("Content-Type").is_some_and(|c| c.contains("json")), "{r:?}");
                hook.push(
                    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("webhook body not JSON ({e}): {}", r.body)),
                );
            }
            p => panic!("unexpected path {p}: {r:?}"),
        }
    }
    (ntfy, hook)
}

pub(crate) fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn cli_failures_retries_and_notifications() {
    let env = Env::new();
    let (app, cfg) = example_app(env.path());
    let sink = HttpSink::start();
    let events = env.path().join("events.txt");
    let notify = |ntfy: &str, hook: &str| json!({"ntfy": ntfy, "webhook": hook, "command": format!("echo \"$CAIRN_EVENT $CAIRN_TYPE\" >> '{}'", events.display()), "consecutive_failures": 3});
    let good = notify(&sink.url("/topic"), &sink.url("/hook"));
    let dead = closed_port();
    let bad = notify(&format!("http://127.0.0.1:{dead}/topic"), &format!("http://127.0.0.1:{dead}/hook"));
    let set = |n: &Value, db: &str| {
        edit_backup(&cfg, |b| {
            b["notify"] = n.clone();
            b["types"]["db"]["sqlite"] = json!(db);
        })
    };
    set(&good, "data/app.db");
    cairn_cfg(&env, &cfg, &["backup", "--now"]).ok();
    assert!(sink.take().is_empty() && lines(&events).is_empty(), "no event for a success");

    // Three failing runs: the database file is gone (a permanent error, not retried). Told once
    // at the first, escalated at the third (`consecutive_failures`), silent in between.
    set(&good, "data/missing.db");
    for run in 1..=3 {
        let r = cairn_cfg(&env, &cfg, &["backup", "--now"]).code(1);
        assert!(
            r.stdout.contains("db: FAILED: SQLite database") && r.stdout.contains("does not exist"),
            "{}",
            r.stdout
        );
        assert!(!r.stdout.contains("retries"), "a missing file is not retried: {}", r.stdout);
        assert!(
            r.stdout.contains("logs: snapshot") && r.stdout.contains("config: "),
            "the other types still run: {}",
            r.stdout
        );
        assert!(r.stderr.contains("1 of 3 backup types failed"), "{}", r.stderr);
        let (ntfy, hook) = split_events(&sink.take());
        let want: Vec<&str> = match run {
            1 => vec!["failure"],
            2 => vec![],
            _ => vec!["consecutive_failures"],
        };
        assert_eq!(hook.iter().map(|h| h["event"].as_str().unwrap()).collect::<Vec<_>>(), want, "run {run}: {hook:#?}");
        assert!(
            hook.iter().all(|h| h["type"] == "db" && h["message"].as_str().unwrap().contains("does not exist")),
            "{hook:#?}"
        );
        assert_eq!(ntfy.len(), want.len(), "{ntfy:?}");
        if run == 1 {
            assert!(ntfy[0].0.contains("db") && ntfy[0].0.contains("FAILED"), "ntfy title {:?}", ntfy[0].0);
            assert!(ntfy[0].1.contains("db backup failed"), "{:?}", ntfy[0].1);
        }
        if run == 3 {
            assert!(ntfy[0].0.contains("db backup failing repeatedly"), "{:?}", ntfy[0].0);
            assert!(ntfy[0].1.contains("failed 3 times in a row"), "{:?}", ntfy[0].1);
        }
    }
    assert_eq!(lines(&events), ["failure db", "consecutive_failures db"]);
    let h = history(&env, &cfg, Some("db"));
    let failed: Vec<&Value> = h.iter().filter(|r| r["result"] == "failed").collect();
    assert_eq!(failed.len(), 3, "{h:#?}");
    for r in &failed {
        assert!(r["error"].as_str().unwrap().contains("missing.db does not exist"), "{r}");
        assert_eq!(r["retries"], 0, "permanent errors are not retried: {r}");
        assert!(r["snapshot"].is_null());
    }
    let st = cairn_cfg(&env, &cfg, &["--json", "status"]).verdict().json();
    let db = status_type(&st, "db");
    assert_eq!(db["consecutive_failures"], 3, "{db:#}");
    assert!(db["last_error"].as_str().unwrap().contains("does not exist"), "{db:#}");
    assert_eq!(status_type(&st, "logs")["consecutive_failures"], 0);
    let text = cairn_cfg(&env, &cfg, &["status"]).verdict().stdout;
    let db_line = text.lines().find(|l| l.starts_with("db ")).unwrap_or_else(|| panic!("{text}"));
    assert!(db_line.contains("FAILING") && db_line.contains("does not exist"), "{text}");

    // A fourth failure within the day: nothing is sent at all (so unreachable URLs go unnoticed).
    set(&bad, "data/missing.db");
    let r = cairn_cfg(&env, &cfg, &["backup", "--now"]).code(1);
    assert!(!r.stderr.contains("notification not delivered"), "{}", r.stderr);
    assert!(sink.take().is_empty());
    assert_eq!(lines(&events).len(), 2);

    // Fixed: a recovery event.
    set(&good, "data/app.db");
    let r = cairn_cfg(&env, &cfg, &["backup", "--now"]).ok();
    assert!(r.stdout.contains("db: snapshot"), "{}", r.stdout);
    let (ntfy, hook) = split_events(&sink.take());
    assert_eq!(hook.len(), 1, "{hook:#?}");
    assert_eq!((hook[0]["event"].as_str(), hook[0]["type"].as_str()), (Some("recovery"), Some("db")));
    assert!(hook[0]["message"].as_str().unwrap().contains("after 4 failed runs"), "{}", hook[0]);
    assert!(ntfy[0].0.contains("db backup recovered"), "{ntfy:?}");
    let st = cairn_cfg(&env, &cfg, &["--json", "status"]).verdict().json();
    assert_eq!(status_type(&st, "db")["consecutive_failures"], 0);
    assert!(status_type(&st, "db")["last_error"].is_null());

    // A new failure is told at once; a recovery that cannot be told everywhere is still a
    // successful backup: warnings, exit 0.
    set(&good, "data/missing.db");
    cairn_cfg(&env, &cfg, &["backup", "--now", "--type", "db"]).code(1);
    set(&bad, "data/app.db");
    let r = cairn_cfg(&env, &cfg, &["backup", "--now", "--type", "db"]).ok();
    assert!(
        r.stderr.contains("notification not delivered: ntfy")
            && r.stderr.contains("notification not delivered: webhook"),
        "{}",
        r.stderr
    );
    assert_eq!(lines(&events), ["failure db", "consecutive_failures db", "recovery db", "failure db", "recovery db"]);
    let (_, hook) = split_events(&sink.take());
    assert_eq!(hook.iter().map(|h| h["event"].as_str().unwrap()).collect::<Vec<_>>(), ["failure"]);
    assert!(app.join("data/app.db").exists());
}

#[test]
fn cli_busy_database_is_retried() {
    let env = Env::new();
    let (app, cfg) = example_app(env.path());
    edit_backup(&cfg, |b| b["types"]["db"]["busy_timeout_s"] = json!(1));
    let db = app.join("data/app.db");
    let mut holder = ChildGuard::python(
        "import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('ready', flush=True)\ntime.sleep(60)\n",
        &[&db],
    );
    assert_eq!(holder.read_line(), "ready");
    let t0 = Instant::now();
    let r = cairn_cfg(&env, &cfg, &["backup", "--now", "--type", "db"]).code(1);
    let took = t0.elapsed();
    assert!(r.stdout.contains("db: FAILED after 3 retries") && r.stdout.contains("busy"), "{}\n{}", r.stdout, r.stderr);
    assert!(took >= Duration::from_secs(4), "four attempts of at least 1 s each: {took:?}");
    let h = history(&env, &cfg, Some("db"));
    assert_eq!(h.len(), 1);
    assert_eq!((h[0]["result"].as_str(), h[0]["retries"].as_u64()), (Some("failed"), Some(3)), "{:#}", h[0]);
    assert!(h[0]["error"].as_str().unwrap().contains("busy"), "{:#}", h[0]);
    drop(holder);
    // Released: the next run succeeds at once.
    cairn_cfg(&env, &cfg, &["backup", "--now", "--type", "db"]).ok();
    assert_eq!(history(&env, &cfg, Some("db"))[0]["retries"], 0);
}

/// Checks the Prometheus text format: each metric's HELP and TYPE come before its samples,
/// and its samples are contiguous. Returns samples by line.
/// The metrics file at `path` is well-formed and holds `overdue` plus the samples every status
/// of the one-db-snapshot fixture has.
fn assert_metrics(path: &Path, overdue: &[&str]) {
    let m = std::fs::read_to_string(path).unwrap();
    let samples = check_prometheus(&m);
    let common = ["cairn_consecutive_failures{type=\"db\"} 0", "cairn_snapshots{type=\"db\"} 1"];
    for s in overdue.iter().chain(common.iter()) {
        assert!(samples.contains(*s), "{s} missing:\n{m}");
    }
    assert!(samples.iter().any(|s| s.starts_with("cairn_last_success_timestamp_seconds{type=\"db\"} 1")), "{m}");
    assert!(samples.iter().any(|s| s.starts_with("cairn_repository_stored_bytes ")), "{m}");
}

fn check_prometheus(text: &str) -> BTreeSet<String> {
    let mut seen_type: BTreeSet<String> = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut samples = BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(!seen_type.contains(&name) && !finished.contains(&name), "HELP for {name} twice or late:\n{text}");
            if let Some(c) = current.take() {
                finished.insert(c);
            }
        } else if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut p = rest.split(' ');
            let name = p.next().unwrap().to_string();
            assert_eq!(p.next(), Some(if name.ends_with("_total") { "counter" } else { "gauge" }), "{l}");
            assert!(seen_type.insert(name.clone()), "TYPE for {name} twice:\n{text}");
            current = Some(name);
        } else {
            let name = l.split(['{', ' ']).next().unwrap();
            assert_eq!(current.as_deref(), Some(name), "sample {l:?} outside its metric's group:\n{text}");
            samples.insert(l.to_string());
        }
    }
    samples
}

/// The example app's configuration and repository (created by the binary), opened in this
/// process, for lifecycle calls at fixed instants.
fn open_app(cfg: &Path) -> (Config, cairn::Repo) {
    let mut c = Config::load(cfg).unwrap();
    // In-process runs keep their state outside the repository (notify.json) where the binary's
    // do with the Env's HOME (example_app puts the config at HOME/app/config.json), not under the
    // HOME of the test process.
    if c.backup.state_dir.is_none() {
        let home = cfg.parent().and_then(Path::parent).unwrap();
        let canon = std::fs::canonicalize(cfg).unwrap();
        let id = blake3::hash(std::os::unix::ffi::OsStrExt::as_bytes(canon.as_os_str())).to_hex();
        c.backup.state_dir = Some(home.join(".local/state/cairn").join(&id[..16]));
    }
    let pw = std::fs::read_to_string(c.backup.password_file.as_ref().unwrap()).unwrap();
    let repo = crate::util::open_repo_with(&c.backup.repository, pw.trim_end_matches(['\n', '\r']));
    (c, repo)
}

/// A local instant, `offset` after the newest success of `ty` in the history of `cfg`.
fn after_last_success(env: &Env, cfg: &Path, ty: &str, offset: chrono::Duration) -> DateTime<Local> {
    let h = history(env, cfg, Some(ty));
    let last = h.iter().find(|r| r["result"] == "success").unwrap_or_else(|| panic!("no {ty} success: {h:?}"));
    fixed(last["end"].as_str().unwrap()).with_timezone(&Local) + offset
}

#[test]
fn cli_overdue_status_and_metrics() {
    let env = Env::new();
    let (_app, cfg) = example_app(env.path());
    cairn_cfg(&env, &cfg, &["backup", "--now", "--type", "db"]).ok();
    let st = cairn_cfg(&env, &cfg, &["--json", "status"]).verdict().json();
    assert_eq!(status_type(&st, "db")["overdue"], false);
    assert_eq!(status_type(&st, "logs")["overdue"], true, "never backed up counts as overdue");
    edit_backup(&cfg, |b| b["types"]["db"]["rpo"] = json!("1s"));
    // The binary's metrics file and text: well-formed, written atomically, never-run types overdue.
    let metrics = env.path().join("cairn.prom");
    let st = cairn_cfg(&env, &cfg, &["--json", "status", "--metrics-file", metrics.to_str().unwrap()]).code(6).json();
    assert_eq!(status_type(&st, "db")["rpo_s"], 1, "{st:#}");
    let text = cairn_cfg(&env, &cfg, &["status"]).code(6).stdout;
    assert!(text.contains("\n  NEVER BACKED UP: logs ") && text.contains("\n  NEVER BACKED UP: config "), "{text}");
    assert_metrics(&metrics, &["cairn_overdue{type=\"logs\"} 1"]);

    // Two seconds after db's success, with its RPO of 1 s: overdue, at a fixed instant.
    let now = after_last_success(&env, &cfg, "db", chrono::Duration::seconds(2));
    let (config, repo) = open_app(&cfg);
    let set = SnapshotSet::load(&repo).unwrap();
    let st = status(&repo, Some(&config), set.all(), &now).unwrap();
    let db = st.types.iter().find(|t| t.backup_type == "db").unwrap();
    assert_eq!((db.overdue, db.rpo_s, db.age_s), (true, 1, Some(2)), "{db:#?}");
    assert_eq!(st.overdue, ["db", "logs", "config"], "{st:#?}");
    let text = render_status(&st);
    let db_line = text.lines().find(|l| l.starts_with("db ")).unwrap_or_else(|| panic!("{text}"));
    assert!(db_line.ends_with("OVERDUE"), "{text}");
    assert!(text.starts_with("needs attention (exit 6):\n") && text.contains("OVERDUE: db: last success 2s"));
    let metrics = env.path().join("fixed.prom");
    write_metrics(&metrics, &st).unwrap();
    assert_metrics(&metrics, &["cairn_overdue{type=\"db\"} 1", "cairn_overdue{type=\"logs\"} 1"]);
    // No temporary file left beside either.
    let left: Vec<_> = std::fs::read_dir(env.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn cli_mark_verified_releases_a_pre_change_snapshot() {
    let env = Env::new();
    write_config(
        env.path(),
        json!({"name": "m", "repository": "repo", "types": {"config": {"paths": ["cfg"], "retention": {"keep_last": 1}}}}),
    );
    env.init();
    let cfgdir = env.path().join("cfg");
    write(&cfgdir.join("app.conf"), b"version=1\n");
    let pre = snap(
        &env,
        &[
            "--type",
            "config",
            "--kind",
            "pre-change",
            "--description",
            "x",
            "--ticket",
            "T-1",
            cfgdir.to_str().unwrap(),
        ],
    );
    write(&cfgdir.join("app.conf"), b"version=2\n");
    let d1 = snap(&env, &["--type", "config", cfgdir.to_str().unwrap()]);
    write(&cfgdir.join("app.conf"), b"version=3\n");
    let d2 = snap(&env, &["--type", "config", cfgdir.to_str().unwrap()]);
    cairn(&env, &["forget"]).ok();
    assert_eq!(
        snapshot_ids(&env, &[]),
        BTreeSet::from([pre.clone(), d2.clone()]),
        "unverified pre-change survives keep_last 1"
    );
    let _ = d1;

    // Refused for a daily snapshot.
    let r = cairn(&env, &["mark-verified", &d2[..12], "--by", "alice"]).code(1);
    assert!(r.stderr.contains("only pre-change snapshots are verified"), "{}", r.stderr);

    let v = cairn(&env, &["--json", "mark-verified", &pre[..12], "--by", "alice"]).ok().json();
    assert_eq!(v["snapshot"], pre.as_str(), "the id stays");
    let list = cairn(&env, &["--json", "snapshots"]).ok().json();
    let s = list.as_array().unwrap().iter().find(|s| s["id"] == pre.as_str()).unwrap_or_else(|| panic!("{list:#}"));
    assert_eq!(
        (s["kind"].as_str(), s["ticket"].as_str(), s["labels"]["verified_by"].as_str()),
        (Some("pre-change"), Some("T-1"), Some("alice")),
        "{s:#}"
    );
    assert!(s["labels"]["verified_date"].as_str().is_some(), "{s:#}");

    // No retention given: verified, it stays until removed by hand (seed 001: "manual cleanup").
    cairn(&env, &["forget"]).ok();
    assert_eq!(snapshot_ids(&env, &[]), BTreeSet::from([pre.clone(), d2.clone()]));
    cairn(&env, &["forget", &pre[..12]]).ok();
    assert_eq!(snapshot_ids(&env, &[]), BTreeSet::from([d2.clone()]));

    // With --retention days_30 it stays 30 days after being verified.
    let pre2 = snap(
        &env,
        &[
            "--type",
            "config",
            "--kind",
            "pre-change",
            "--retention",
            "days_30",
            "--description",
            "y",
            cfgdir.to_str().unwrap(),
        ],
    );
    write(&cfgdir.join("app.conf"), b"version=4\n");
    let d3 = snap(&env, &["--type", "config", cfgdir.to_str().unwrap()]);
    cairn(&env, &["mark-verified", &pre2, "--by", "bob"]).ok();
    cairn(&env, &["forget"]).ok();
    assert_eq!(snapshot_ids(&env, &[]), BTreeSet::from([pre2, d3]));
}

#[test]
fn cli_daemon_stops_cleanly_on_sigterm_and_sigint() {
    let env = Env::new();
    let (_app, cfg) = example_app(env.path());
    // The first daemon runs every type (never backed up); the second finds db and logs not
    // due and runs only config (on-change), which is unchanged.
    for (expect_runs, sig, name) in [(3, libc::SIGTERM, "SIGTERM"), (4, libc::SIGINT, "SIGINT")] {
        let out = env.path().join(format!("daemon-{name}.out"));
        let err = env.path().join(format!("daemon-{name}.err"));
        let mut c = env.cfg_cmd(&cfg, &["daemon"]);
        c.stdout(std::fs::File::create(&out).unwrap()).stderr(std::fs::File::create(&err).unwrap());
        let mut child = ChildGuard(c.spawn().unwrap());
        // First round: every type never backed up (then only the on-change one) runs.
        let t0 = Instant::now();
        loop {
            let r = cairn_cfg(&env, &cfg, &["--json", "history"]);
            let h = if r.code == 0 { r.json().as_array().map_or(0, |a| a.len()) } else { 0 };
            if h >= expect_runs {
                break;
            }
            assert!(
                child.0.try_wait().unwrap().is_none(),
                "{name}: daemon exited early: {}",
                std::fs::read_to_string(&err).unwrap()
            );
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{name}: no runs recorded in 60 s: {}",
                std::fs::read_to_string(&err).unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: sending a signal to our own child process by its id.
        assert_eq!(unsafe { libc::kill(child.0.id() as libc::pid_t, sig) }, 0);
        let t1 = Instant::now();
        let status = loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(t1.elapsed() < Duration::from_secs(5), "{name}: daemon still running 5 s after the signal");
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = std::fs::read_to_string(&out).unwrap();
        assert_eq!(status.code(), Some(0), "{name}: {status:?}\n{stdout}\n{}", std::fs::read_to_string(&err).unwrap());
        assert!(stdout.contains("cairn daemon: stopping"), "{name}: {stdout}");
        let runs: Vec<(String, String)> = history(&env, &cfg, None)
            .iter()
            .map(|r| (r["backup_type"].as_str().unwrap().into(), r["result"].as_str().unwrap().into()))
            .collect();
        if expect_runs == 3 {
            assert!(stdout.contains("db: snapshot") && stdout.contains("logs: snapshot"), "{stdout}");
            assert_eq!(runs.len(), 3, "{runs:?}");
        } else {
            assert_eq!(runs.len(), 4, "{runs:?}");
            assert_eq!(runs[0], ("config".to_string(), "unchanged".to_string()), "{runs:?}");
        }
    }
}

/// Runs `types` (all when empty) with `--now` semantics at the instant `clock` shows, as the
/// binary's `backup --now` does, with no retry delay.
fn backup_at(cfg: &Config, repo: &mut cairn::Repo, types: &[&str], clock: &ManualClock) -> Vec<(String, String)> {
    let opts = RunOptions {
        now: true,
        types: types.iter().map(|t| t.to_string()).collect(),
        retry_base: Duration::ZERO,
        ..Default::default()
    };
    let r = run_backups(repo, cfg, &opts, &mut SnapshotSet::new(), clock).unwrap();
    r.ran.iter().map(|t| (t.backup_type.clone(), format!("{:?}", t.result).to_lowercase())).collect()
}

#[test]
fn cli_dead_man_alert_after_twice_the_rpo_once_a_day() {
    let env = Env::new();
    let (_app, cfg) = example_app(env.path());
    let events = env.path().join("events.txt");
    edit_backup(&cfg, |b| {
        b["notify"] = json!({"command": format!("echo \"$CAIRN_EVENT $CAIRN_TYPE\" >> '{}'", events.display())});
        b["types"]["db"]["sqlite"] = json!("data/missing.db");
        b["types"]["logs"]["rpo"] = json!("1s");
    });
    // db's very first run fails: a failure alert, not a dead-man alert as well (its limit, twice
    // its daily RPO, has not passed since it was first tried).
    cairn_cfg(&env, &cfg, &["backup", "--now"]).code(1);
    assert_eq!(lines(&events), ["failure db"]);
    // logs succeeded, then nothing for more than twice its 1 s RPO: any run raises the alarm.
    let (config, mut repo) = open_app(&cfg);
    let clock = ManualClock::at(after_last_success(&env, &cfg, "logs", chrono::Duration::milliseconds(2200)));
    assert_eq!(backup_at(&config, &mut repo, &["config"], &clock), [("config".into(), "unchanged".into())]);
    assert_eq!(lines(&events), ["failure db", "dead_man logs"]);
    // Once a day, not on every run.
    clock.advance(chrono::Duration::hours(23));
    backup_at(&config, &mut repo, &["config"], &clock);
    assert_eq!(lines(&events), ["failure db", "dead_man logs"]);
    let set = SnapshotSet::load(&repo).unwrap();
    let st = status(&repo, Some(&config), set.all(), &clock.now()).unwrap();
    assert!(st.types.iter().any(|t| t.backup_type == "logs" && t.overdue), "{st:#?}");
    // A day after the alert, still stale: told again. db, tried a day ago and never successful,
    // has now passed its own limit as well.
    clock.advance(chrono::Duration::hours(2));
    backup_at(&config, &mut repo, &["config"], &clock);
    assert_eq!(lines(&events), ["failure db", "dead_man logs", "dead_man logs"]);
    clock.advance(chrono::Duration::days(1));
    backup_at(&config, &mut repo, &["config"], &clock);
    assert_eq!(lines(&events), ["failure db", "dead_man logs", "dead_man logs", "dead_man db", "dead_man logs"]);
}

#[test]
fn cli_daemon_does_not_spin_on_a_failing_type() {
    // A type that fails every time (its database is gone) is due after every round: the daemon
    // must still pause between attempts, not retry in a tight loop with an alert each time.
    let env = Env::new();
    let (_app, cfg) = example_app(env.path());
    let events = env.path().join("events.txt");
    edit_backup(&cfg, |b| {
        b["notify"] = json!({"command": format!("echo \"$CAIRN_EVENT $CAIRN_TYPE\" >> '{}'", events.display())});
        b["types"]["db"]["sqlite"] = json!("data/missing.db");
    });
    let out = env.path().join("daemon.out");
    let mut c = env.cfg_cmd(&cfg, &["daemon"]);
    c.stdout(std::fs::File::create(&out).unwrap()).stderr(Stdio::null());
    let mut child = ChildGuard(c.spawn().unwrap());
    let t0 = Instant::now();
    while !lines(&events).iter().any(|l| l == "failure db") {
        assert!(t0.elapsed() < Duration::from_secs(60), "no failure recorded in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: sending a signal to our own child process by its id.
    assert_eq!(unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let t1 = Instant::now();
    while child.0.try_wait().unwrap().is_none() {
        assert!(t1.elapsed() < Duration::from_secs(5), "daemon still running 5 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let db_runs = history(&env, &cfg, Some("db")).len();
    let ev = lines(&events);
    assert_eq!(db_runs, 1, "db attempts before SIGTERM; alerts: {ev:?}");
    assert_eq!(ev.iter().filter(|l| *l == "failure db").count(), 1, "{ev:?}");

    // The pause itself, at fixed instants: after a round in which db failed, the next round is
    // the recheck interval away, not at once, and a round then tries db once more.
    let (config, mut repo) = open_app(&cfg);
    let runs = History::open(&config.backup.repository).unwrap();
    let clock = ManualClock::at(Local::now() + chrono::Duration::days(1));
    let timing = DaemonTiming { idle: chrono::Duration::minutes(60), recheck: chrono::Duration::minutes(7) };
    let mut set = SnapshotSet::new();
    let opts = RunOptions { retry_base: Duration::ZERO, ..Default::default() };
    let r = run_backups(&mut repo, &config, &opts, &mut set, &clock).unwrap();
    let ran: Vec<&str> = r.ran.iter().map(|t| t.backup_type.as_str()).collect();
    assert_eq!(ran, ["db", "config"], "db is due (never succeeded), config is on-change: {r:#?}");
    let next = next_round(&config, &runs, set.all(), &clock.now(), timing).unwrap();
    assert_eq!(next, clock.now().fixed_offset() + chrono::Duration::minutes(7));
    clock.set(next.with_timezone(&Local));
    run_backups(&mut repo, &config, &opts, &mut set, &clock).unwrap();
    assert_eq!(history(&env, &cfg, Some("db")).len(), 3);
    assert_eq!(lines(&events).iter().filter(|l| *l == "failure db").count(), 1, "told once, not every round");
}

#[test]
fn backup_runs_due_types_at_fixed_instants() {
    // db "daily 03:00" with catch_up_after 2d, logs "weekly sun 03:00", config "on-change": the
    // runner at chosen instants, no waiting. 2030-01-07 is a Monday.
    let env = Env::new();
    let (_app, cfg) = example_app(env.path());
    cairn_cfg(&env, &cfg, &["backup", "--now", "--type", "config"]).ok();
    let (config, mut repo) = open_app(&cfg);
    let at = |d: u32, h: u32, m: u32| Local.with_ymd_and_hms(2030, 1, d, h, m, 0).single().unwrap();
    let clock = ManualClock::at(at(7, 2, 0));
    let mut set = SnapshotSet::new();
    let opts = RunOptions { retry_base: Duration::ZERO, ..Default::default() };
    let mut round = |t: DateTime<Local>| {
        clock.set(t);
        let r = run_backups(&mut repo, &config, &opts, &mut set, &clock).unwrap();
        assert_eq!(r.failed(), 0, "{r:#?}");
        let ran: Vec<(String, String)> =
            r.ran.into_iter().filter(|t| t.backup_type != "config").map(|t| (t.backup_type, t.reason)).collect();
        (ran, r.skipped)
    };
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    let (ran, _) = round(at(7, 2, 0));
    assert_eq!(ran, [s("db", "never backed up"), s("logs", "never backed up")]);
    let (ran, skipped) = round(at(7, 2, 59));
    assert!(ran.is_empty(), "{ran:?}");
    assert_eq!(skipped, [s("db", "next slot 2030-01-07 03:00"), s("logs", "next slot 2030-01-13 03:00")]);
    let (ran, _) = round(at(7, 3, 0));
    assert_eq!(ran, [s("db", "slot 2030-01-07 03:00 passed since the last success")]);
    // Sunday's slot for logs; db, six days without a success, is past its catch-up limit first.
    let (ran, _) = round(at(13, 3, 0));
    assert_eq!(
        ran,
        [s("db", "catch-up: last success 6d 0h ago"), s("logs", "slot 2030-01-13 03:00 passed since the last success")]
    );
    // Off for almost three days, back before the day's slot: catch-up runs db at once.
    let (ran, skipped) = round(at(16, 2, 0));
    assert_eq!(ran, [s("db", "catch-up: last success 2d 23h ago")]);
    assert_eq!(skipped, [s("logs", "next slot 2030-01-20 03:00")]);
}
