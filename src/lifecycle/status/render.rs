//! The human rendering of a [`Status`]: what needs attention first, then the per-type table,
//! remotes and the restore-time inputs.

use super::Status;
use crate::lifecycle::schedule::human_duration;
use crate::util::human_bytes;

/// Human rendering.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    // A cron mail or a journal line shows its first lines: they carry the verdict.
    if !s.problems.is_empty() {
        out.push_str(&format!("needs attention (exit {}):\n", s.exit_code));
        for p in &s.problems {
            out.push_str(&format!("  {}: {}\n", p.kind.label(), p.message));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "repository {} ({})\n",
        s.repository,
        if s.encryption == "none" { "NOT encrypted" } else { "encrypted" }
    ));
    out.push_str(&format!(
        "{} snapshots, {} stored for {} of snapshots (dedup ratio {:.1}x){}\n\n",
        s.snapshots,
        human_bytes(s.stored_bytes),
        human_bytes(s.logical_bytes),
        s.dedup_ratio,
        s.filesystem
            .as_ref()
            .map(|f| format!("; {} free of {}", human_bytes(f.available_bytes), human_bytes(f.total_bytes)))
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "{:<10} {:<18} {:<25} {:>10} {:>8} {:<25} {:>5}  {}\n",
        "TYPE", "SCHEDULE", "LAST SUCCESS", "AGE", "RPO", "NEXT DUE", "FAILS", "STATE"
    ));
    for t in &s.types {
        let last = t.last_success.map(|x| crate::util::show_time(&x)).unwrap_or_else(|| "never".into());
        let age = t.age_s.map(|a| human_duration(chrono::Duration::seconds(a))).unwrap_or_else(|| "-".into());
        let next = if t.due_now { "now".to_string() } else { crate::util::show_time(&t.next_due) };
        let state = if t.consecutive_failures > 0 {
            format!("FAILING: {}", t.last_error.clone().unwrap_or_default())
        } else if t.overdue {
            "OVERDUE".to_string()
        } else {
            "ok".to_string()
        };
        out.push_str(&format!(
            "{:<10} {:<18} {:<25} {:>10} {:>8} {:<25} {:>5}  {}\n",
            t.backup_type,
            t.schedule.map_or_else(|| "-".into(), |s| s.to_string()),
            last,
            age,
            human_duration(chrono::Duration::seconds(t.rpo_s)),
            next,
            t.consecutive_failures,
            state
        ));
    }
    for r in &s.remotes {
        let last = r.last_sync.as_deref().map(crate::util::show_time_str).unwrap_or_else(|| "never".into());
        out.push_str(&format!(
            "\nremote {} ({}): last sync {last}, {} files ({}) pending{}",
            r.name,
            r.target,
            r.pending_files,
            human_bytes(r.pending_bytes),
            r.last_error.as_deref().map(|e| format!("; last sync FAILED: {e}")).unwrap_or_default()
        ));
        if r.failing {
            let since = r.failing_since.as_deref().map(crate::util::show_time_str);
            out.push_str(&format!("\n  FAILING since {}", since.unwrap_or_else(|| "?".into())));
        }
        if r.behind {
            let age = human_duration(chrono::Duration::seconds(r.oldest_pending_age_s.unwrap_or(0)));
            out.push_str(&format!("\n  BEHIND: the oldest pending file has waited {age}, longer than its RPO"));
        }
    }
    if !s.remotes.is_empty() {
        out.push('\n');
    }
    out.push_str(&crate::lifecycle::verify_runs::render_status(s.last_verify.as_ref()));
    out.push_str(&crate::lifecycle::kinds::render_pending(&s.pending_verification));
    if let Some(c) = &s.capacity {
        out.push_str(&crate::lifecycle::capacity::render(c));
    }
    out.push_str("\nrestore points (achieved RPO):\n");
    for t in &s.types {
        out.push_str(&format!("  {}: {}\n", t.backup_type, achieved_line(t)));
    }
    out.push_str("\nrestore time (RTO inputs):\n");
    for t in &s.types {
        out.push_str(&format!("  {}: {}\n", t.backup_type, rto_line(t)));
    }
    if s.problems.is_empty() {
        out.push_str("\nall types are within their RPO; nothing needs attention\n");
    }
    out
}

/// The gaps between one type's snapshots.
fn achieved_line(t: &super::TypeStatus) -> String {
    let d = |s: i64| human_duration(chrono::Duration::seconds(s));
    match &t.achieved_rpo {
        None => format!("{} snapshot{}, no gap to measure yet", t.snapshots, if t.snapshots == 1 { "" } else { "s" }),
        Some(a) => format!(
            "last gap {}; {} snapshot{} in the last 24 h{}",
            d(a.last_gap_s),
            a.snapshots_24h,
            if a.snapshots_24h == 1 { "" } else { "s" },
            a.widest_gap_24h_s.map(|w| format!(", widest gap {}", d(w))).unwrap_or_default()
        ),
    }
}

/// One type's latest size, measured restore speed and the estimate they give.
fn rto_line(t: &super::TypeStatus) -> String {
    let size = match t.latest_logical_bytes {
        Some(b) => format!("latest snapshot {}", human_bytes(b)),
        None => "no snapshot".to_string(),
    };
    let test = match &t.restore_test {
        None => "no restore test yet".to_string(),
        Some(r) => match r.bytes_per_s {
            None => format!(
                "last restore test {} restored {} (no measurable time)",
                short_time(&r.time),
                human_bytes(r.bytes)
            ),
            Some(v) => format!(
                "last restore test {} restored {} at {}/s{}",
                short_time(&r.time),
                human_bytes(r.bytes),
                human_bytes(v as u64),
                r.estimated_restore_s
                    .map(|e| format!(": restoring the latest takes about {}", seconds(e)))
                    .unwrap_or_default()
            ),
        },
    };
    format!("{size}; {test}")
}

/// A recorded RFC 3339 time as every human line shows one (local, with its offset).
fn short_time(t: &str) -> String {
    crate::util::show_time_str(t)
}

/// Seconds for a person: "0.4 s", "42 s", or the schedule's "2h 5m" form above a minute.
fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 60.0 {
        format!("{s:.0} s")
    } else {
        human_duration(chrono::Duration::seconds(s.round() as i64))
    }
}
