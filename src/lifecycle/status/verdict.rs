//! What in a [`Status`] is not OK: one list of problems, and the one mapping from them to the
//! exit code of `cairn status`, so that cron, systemd `OnFailure=` and monitoring plugins see
//! the same verdict as the text, `--json` and the metrics.

use serde::Serialize;

use super::Status;
use crate::lifecycle::schedule::human_duration;

/// Nothing needs attention.
pub const EXIT_OK: i32 = 0;
/// Damage: unreadable snapshot files, packs marked damaged, the last verification failed. The
/// same code as every other command's damage exit (checked in `cli`).
pub const EXIT_DAMAGE: i32 = 3;
/// A type is past its RPO or was never backed up, or a remote is behind by more than the RPO.
pub const EXIT_OVERDUE: i32 = 6;
/// A type's last run failed (or saved a partial snapshot), or a remote's last sync failed,
/// while every RPO still holds.
pub const EXIT_FAILING: i32 = 7;
/// Only warnings: clock anomalies, capacity low.
pub const EXIT_WARNING: i32 = 8;

/// The exit codes as `cairn status --help` shows them (README has the same table).
pub const EXIT_CODES_HELP: &str = "\
Exit codes (the most serious problem wins):
  0  all OK
  1  error: the status could not be read (config, repository)
  3  damage: unreadable snapshot files, damaged packs, last verify failed    [critical]
  4  wrong password or none available
  6  overdue: a type past its RPO or never backed up, a remote behind        [critical]
  7  failing: a type's last run failed or was partial, a remote's last sync failed [warning]
  8  warning: clock anomalies, capacity low                                   [warning]";

/// What kind of problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A snapshot file that cannot be read.
    UnreadableSnapshot,
    /// A pack the cache knows to be damaged.
    DamagedPack,
    /// The last `verify` (or restore test) failed.
    VerifyFailed,
    /// A type with no success at all.
    NeverBackedUp,
    /// A type whose last success is older than its RPO.
    Overdue,
    /// A remote whose oldest pending file is older than the RPO.
    RemoteBehind,
    /// A type whose last run failed or was partial.
    Failing,
    /// A remote whose last sync failed.
    RemoteFailing,
    /// A snapshot dated after now, or before one committed earlier.
    ClockAnomaly,
    /// The repository's file system (or a remote's quota) is running out.
    CapacityLow,
}

impl Kind {
    /// The exit code this kind of problem alone gives.
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::UnreadableSnapshot | Kind::DamagedPack | Kind::VerifyFailed => EXIT_DAMAGE,
            Kind::NeverBackedUp | Kind::Overdue | Kind::RemoteBehind => EXIT_OVERDUE,
            Kind::Failing | Kind::RemoteFailing => EXIT_FAILING,
            Kind::ClockAnomaly | Kind::CapacityLow => EXIT_WARNING,
        }
    }

    /// Damage and a missed RPO are critical; the rest can wait for a person to look.
    pub fn severity(self) -> Severity {
        match self.exit_code() {
            EXIT_DAMAGE | EXIT_OVERDUE => Severity::Critical,
            _ => Severity::Warning,
        }
    }

    /// The word the text output starts a problem's line with.
    pub fn label(self) -> &'static str {
        match self {
            Kind::UnreadableSnapshot | Kind::DamagedPack => "DAMAGED",
            Kind::VerifyFailed => "VERIFY FAILED",
            Kind::NeverBackedUp => "NEVER BACKED UP",
            Kind::Overdue => "OVERDUE",
            Kind::RemoteBehind => "REMOTE BEHIND",
            Kind::Failing => "FAILING",
            Kind::RemoteFailing => "REMOTE FAILING",
            Kind::ClockAnomaly => "CLOCK",
            Kind::CapacityLow => "CAPACITY LOW",
        }
    }
}

/// How urgent, in monitoring terms (Nagios CRITICAL / WARNING).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Can wait for a person to look.
    Warning,
    /// Restores may fail, or the recovery point objective is already missed.
    Critical,
}

/// One thing that is not OK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What kind.
    pub kind: Kind,
    /// What it is about: a type, a remote (`sync:NAME`), a snapshot or pack file.
    pub subject: String,
    /// One line for a person.
    pub message: String,
    /// How urgent.
    pub severity: Severity,
}

impl Problem {
    fn new(kind: Kind, subject: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { kind, subject: subject.into(), message: message.into(), severity: kind.severity() }
    }
}

/// The exit code for `problems`: 0 when there are none, else the code of the most serious kind
/// (damage, then overdue, then failing, then warnings), whatever the codes' numbers.
pub fn exit_code(problems: &[Problem]) -> i32 {
    const RANK: [i32; 4] = [EXIT_DAMAGE, EXIT_OVERDUE, EXIT_FAILING, EXIT_WARNING];
    problems.iter().map(|p| p.kind.exit_code()).min_by_key(|c| RANK.iter().position(|r| r == c)).unwrap_or(EXIT_OK)
}

/// Every problem in `s`, most serious first (the order of `Kind`, then as found).
pub fn problems(s: &Status) -> Vec<Problem> {
    let mut p = Vec::new();
    for u in &s.unreadable_snapshots {
        p.push(Problem::new(
            Kind::UnreadableSnapshot,
            u.split(": ").next().unwrap_or(u),
            format!("unreadable snapshot file {u} (run `cairn repair snapshots`)"),
        ));
    }
    for d in &s.damaged_packs {
        p.push(Problem::new(
            Kind::DamagedPack,
            format!("packs/{}", d.pack),
            format!("pack {} is damaged: {} (run `cairn repair packs`)", d.pack, d.reason),
        ));
    }
    for t in &s.types {
        let rpo = human_duration(chrono::Duration::seconds(t.rpo_s));
        // `overdue` is false for a type nothing promises a next backup of (see `status`).
        match t.age_s {
            None if t.overdue => p.push(Problem::new(
                Kind::NeverBackedUp,
                &t.backup_type,
                format!("{} has never been backed up (RPO {rpo})", t.backup_type),
            )),
            Some(age) if t.overdue => p.push(Problem::new(
                Kind::Overdue,
                &t.backup_type,
                format!(
                    "{}: last success {} ago, older than its RPO of {rpo}",
                    t.backup_type,
                    human_duration(chrono::Duration::seconds(age))
                ),
            )),
            _ => {}
        }
        if t.consecutive_failures > 0 {
            p.push(Problem::new(
                Kind::Failing,
                &t.backup_type,
                format!(
                    "{}: {} failed run{} since the last success{}",
                    t.backup_type,
                    t.consecutive_failures,
                    if t.consecutive_failures == 1 { "" } else { "s" },
                    t.last_error.as_deref().map(|e| format!(", last: {e}")).unwrap_or_default()
                ),
            ));
        }
    }
    for a in &s.clock_anomalies {
        p.push(Problem::new(
            Kind::ClockAnomaly,
            format!("snapshots/{}", a.id.to_hex()),
            format!("snapshot {} ({}) dated {}: {}; kept", a.id.short(), a.backup_type, a.time, a.problem),
        ));
    }
    for r in &s.remotes {
        if r.failing || r.last_error.is_some() {
            p.push(Problem::new(
                Kind::RemoteFailing,
                format!("sync:{}", r.name),
                format!("remote {}: the last sync failed: {}", r.name, r.last_error.as_deref().unwrap_or("?")),
            ));
        }
        if r.behind {
            let age = human_duration(chrono::Duration::seconds(r.oldest_pending_age_s.unwrap_or(0)));
            p.push(Problem::new(
                Kind::RemoteBehind,
                format!("remote:{}", r.name),
                format!(
                    "remote {}: {} files pending, the oldest for {age}, longer than its RPO",
                    r.name, r.pending_files
                ),
            ));
        }
    }
    if let Some(v) = s.last_verify.as_ref().filter(|v| !v.ok) {
        p.push(Problem::new(
            Kind::VerifyFailed,
            "verify",
            format!("the last verify failed: {}", v.error.as_deref().unwrap_or("?")),
        ));
    }
    if let Some(c) = &s.capacity {
        let repo = c.repository.iter().filter(|r| r.low).map(|r| ("repository".to_string(), r.reason.clone()));
        let remotes = c.remotes.iter().filter(|r| r.low).map(|r| (format!("remote:{}", r.name), r.reason.clone()));
        for (subject, reason) in repo.chain(remotes) {
            let msg = format!("{subject}: {}", reason.as_deref().unwrap_or("low on space"));
            p.push(Problem::new(Kind::CapacityLow, subject, msg));
        }
    }
    p.sort_by_key(|x| x.kind);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: Kind) -> Problem {
        Problem::new(kind, "x", "m")
    }

    #[test]
    fn the_most_serious_kind_sets_the_exit_code() {
        assert_eq!(exit_code(&[]), EXIT_OK);
        assert_eq!(exit_code(&[p(Kind::ClockAnomaly)]), EXIT_WARNING);
        assert_eq!(exit_code(&[p(Kind::ClockAnomaly), p(Kind::Failing)]), EXIT_FAILING);
        assert_eq!(exit_code(&[p(Kind::RemoteFailing), p(Kind::Overdue), p(Kind::CapacityLow)]), EXIT_OVERDUE);
        assert_eq!(exit_code(&[p(Kind::NeverBackedUp), p(Kind::DamagedPack)]), EXIT_DAMAGE);
        assert_eq!(exit_code(&[p(Kind::Failing), p(Kind::VerifyFailed)]), EXIT_DAMAGE);
        assert_eq!(exit_code(&[p(Kind::RemoteBehind)]), EXIT_OVERDUE);
    }

    #[test]
    fn damage_and_missed_rpo_are_critical_the_rest_warnings() {
        for (k, sev) in [
            (Kind::UnreadableSnapshot, Severity::Critical),
            (Kind::VerifyFailed, Severity::Critical),
            (Kind::NeverBackedUp, Severity::Critical),
            (Kind::RemoteBehind, Severity::Critical),
            (Kind::Failing, Severity::Warning),
            (Kind::RemoteFailing, Severity::Warning),
            (Kind::CapacityLow, Severity::Warning),
            (Kind::ClockAnomaly, Severity::Warning),
        ] {
            assert_eq!(k.severity(), sev, "{k:?}");
        }
        assert_eq!(serde_json::to_value(Kind::RemoteFailing).unwrap(), "remote_failing");
        assert_eq!(serde_json::to_value(Kind::CapacityLow).unwrap(), "capacity_low");
    }
}
