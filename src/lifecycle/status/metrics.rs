//! Prometheus text format (version 0.0.4) for node_exporter's textfile collector, read from a
//! [`Status`]: per type (`type=`), per remote (`remote=`), the repository, and the verdict.

use std::fmt::Display;

use chrono::DateTime;

use super::{Status, TypeStatus};
use crate::error::Result;

/// One sample: its label set (already rendered, `{type="db"}`, or empty) and its value.
type Sample = (String, String);

/// Appends one metric family: HELP, TYPE and its samples form one group, as the format requires.
/// A family without samples still gets its HELP and TYPE, so a dashboard finds every name.
fn family(m: &mut String, name: &str, kind: &str, help: &str, samples: Vec<Sample>) {
    m.push_str(&format!("# HELP {name} {}\n# TYPE {name} {kind}\n", help.replace('\\', "\\\\").replace('\n', "\\n")));
    for (labels, v) in samples {
        m.push_str(&format!("{name}{labels} {v}\n"));
    }
}

/// `{key="value"}` with the value escaped as the text format requires.
fn label(key: &str, value: &str) -> String {
    format!("{{{key}=\"{}\"}}", value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

/// Unix seconds of a recorded RFC 3339 time.
fn unix(t: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(t).ok().map(|t| t.timestamp())
}

/// One sample per type that has a value.
fn per_type<V: Display>(s: &Status, f: impl Fn(&TypeStatus) -> Option<V>) -> Vec<Sample> {
    s.types.iter().filter_map(|t| f(t).map(|v| (label("type", &t.backup_type), v.to_string()))).collect()
}

fn one<V: Display>(v: Option<V>) -> Vec<Sample> {
    v.map(|v| (String::new(), v.to_string())).into_iter().collect()
}

/// The metrics text.
fn metrics(s: &Status) -> String {
    let mut m = String::new();
    let g = "gauge";
    // Per type. Names present before this list grew are kept as they were (dashboards use them).
    family(
        &mut m,
        "cairn_last_success_timestamp_seconds",
        g,
        "Unix time of the last successful backup of a type (0: never).",
        per_type(s, |t| Some(t.last_success.map_or(0, |x| x.timestamp()))),
    );
    family(
        &mut m,
        "cairn_overdue",
        g,
        "1 when a type's last success is older than its RPO (or it has none).",
        per_type(s, |t| Some(t.overdue as u8)),
    );
    family(
        &mut m,
        "cairn_consecutive_failures",
        g,
        "Failed runs since the last success.",
        per_type(s, |t| Some(t.consecutive_failures)),
    );
    family(&mut m, "cairn_snapshots", g, "Snapshots of a type.", per_type(s, |t| Some(t.snapshots)));
    family(
        &mut m,
        "cairn_failures_total",
        "counter",
        "Failed and partial runs of a type recorded in the history.",
        per_type(s, |t| Some(t.failures_total)),
    );
    family(
        &mut m,
        "cairn_last_run_timestamp_seconds",
        g,
        "Unix time the last run of a type ended.",
        per_type(s, |t| t.last_run.as_ref().and_then(|r| unix(&r.end))),
    );
    family(
        &mut m,
        "cairn_last_run_success",
        g,
        "1 when the last run of a type succeeded (or found nothing changed), 0 when it failed or was partial.",
        per_type(s, |t| t.last_run.as_ref().map(|r| !r.result.failed() as u8)),
    );
    family(
        &mut m,
        "cairn_last_run_duration_seconds",
        g,
        "Duration of the last run of a type.",
        per_type(s, |t| t.last_run.as_ref().and_then(|r| r.duration_s())),
    );
    family(
        &mut m,
        "cairn_last_run_read_bytes",
        g,
        "Bytes the last run of a type read from its source.",
        per_type(s, |t| t.last_run.as_ref().map(|r| r.bytes_read)),
    );
    family(
        &mut m,
        "cairn_last_run_added_bytes",
        g,
        "Bytes the last run of a type added to the repository.",
        per_type(s, |t| t.last_run.as_ref().map(|r| r.bytes_added)),
    );
    family(
        &mut m,
        "cairn_latest_snapshot_logical_bytes",
        g,
        "Logical size of the newest snapshot of a type (what a full restore reads).",
        per_type(s, |t| t.latest_logical_bytes),
    );
    family(
        &mut m,
        "cairn_restore_test_timestamp_seconds",
        g,
        "Unix time of the last successful restore test of a type.",
        per_type(s, |t| t.restore_test.as_ref().and_then(|r| unix(&r.time))),
    );
    family(
        &mut m,
        "cairn_restore_test_bytes_per_second",
        g,
        "Restore speed measured by the last successful restore test of a type.",
        per_type(s, |t| t.restore_test.as_ref().and_then(|r| r.bytes_per_s)),
    );
    family(
        &mut m,
        "cairn_estimated_restore_seconds",
        g,
        "The newest snapshot's logical size at the last measured restore speed.",
        per_type(s, |t| t.restore_test.as_ref().and_then(|r| r.estimated_restore_s)),
    );
    // Per remote.
    let per_remote = |f: &dyn Fn(&super::RemoteStatus) -> String| -> Vec<Sample> {
        s.remotes.iter().map(|r| (label("remote", &r.name), f(r))).collect()
    };
    family(
        &mut m,
        "cairn_remote_last_sync_timestamp_seconds",
        g,
        "Unix time the last successful sync to a remote ended (0: never).",
        per_remote(&|r| r.last_sync.as_deref().and_then(unix).unwrap_or(0).to_string()),
    );
    family(
        &mut m,
        "cairn_remote_last_sync_success",
        g,
        "0 when the last sync to a remote failed.",
        per_remote(&|r| (r.last_error.is_none() as u8).to_string()),
    );
    family(
        &mut m,
        "cairn_remote_pending_files",
        g,
        "Repository files not yet on a remote.",
        per_remote(&|r| r.pending_files.to_string()),
    );
    family(
        &mut m,
        "cairn_remote_pending_bytes",
        g,
        "Bytes of the files not yet on a remote.",
        per_remote(&|r| r.pending_bytes.to_string()),
    );
    // The repository.
    let verify = s.last_verify_run.as_ref();
    family(
        &mut m,
        "cairn_last_verify_success",
        g,
        "1 when the last verify of the repository passed, 0 when it failed.",
        one(verify.map(|r| !r.result.failed() as u8)),
    );
    family(
        &mut m,
        "cairn_last_verify_timestamp_seconds",
        g,
        "Unix time the last verify of the repository ended.",
        one(verify.and_then(|r| unix(&r.end))),
    );
    family(&mut m, "cairn_repository_stored_bytes", g, "Bytes the repository occupies.", one(Some(s.stored_bytes)));
    family(
        &mut m,
        "cairn_repository_logical_bytes",
        g,
        "Sum of the logical sizes of all snapshots.",
        one(Some(s.logical_bytes)),
    );
    let fs = s.filesystem.as_ref();
    family(
        &mut m,
        "cairn_repository_free_bytes",
        g,
        "Bytes available on the repository's file system.",
        one(fs.map(|f| f.available_bytes)),
    );
    family(
        &mut m,
        "cairn_repository_filesystem_size_bytes",
        g,
        "Size of the repository's file system.",
        one(fs.map(|f| f.total_bytes)),
    );
    // The verdict, as `cairn status` exits with it.
    family(&mut m, "cairn_status_ok", g, "1 when nothing needs attention.", one(Some(s.ok as u8)));
    family(
        &mut m,
        "cairn_status_problems",
        g,
        "Problems `cairn status` lists (overdue, failing, damage, clock, ...).",
        one(Some(s.problems.len())),
    );
    family(&mut m, "cairn_status_exit_code", g, "The exit code of `cairn status`.", one(Some(s.exit_code)));
    m
}

/// Writes metrics atomically (node_exporter must never read half a file).
pub fn write_metrics(path: &std::path::Path, s: &Status) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, metrics(s)).map_err(|e| crate::Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| crate::Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(label("type", "a\"b\\c\nd"), "{type=\"a\\\"b\\\\c\\nd\"}");
        let mut m = String::new();
        family(&mut m, "cairn_x", "gauge", "a \\ b\nc", vec![(label("remote", "r"), "1".into())]);
        assert_eq!(m, "# HELP cairn_x a \\\\ b\\nc\n# TYPE cairn_x gauge\ncairn_x{remote=\"r\"} 1\n");
    }
}
