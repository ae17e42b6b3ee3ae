//! Formatting shared by several commands.

use std::io::IsTerminal;

use crate::format::manifest::{NodeKind, Snapshot};
use crate::id::SnapshotId;

/// Prints a JSON value, pretty, on stdout.
pub(super) fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// Whether escape codes may be written to `stream`: only to a terminal, and not with `NO_COLOR`
/// set to anything but the empty string (<https://no-color.org>). Logs piped to a file or
/// journald must not carry them. Asked per stream: `cairn ... 2>log` still colours a terminal's
/// stdout.
pub(super) fn colour(stream: &impl IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// tracing's timestamps in the one convention of every time cairn prints: local time with its
/// offset (RFC 3339), whole milliseconds (tracing's default is UTC with a `Z`).
pub(super) struct LocalTimer;

impl tracing_subscriber::fmt::time::FormatTime for LocalTimer {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false))
    }
}

/// A spinner on stderr while a long step runs; only on a terminal (it redraws its line with
/// escape codes), not with `NO_COLOR`, and not with --json or -q.
pub(super) fn spinner(cli: &super::Cli, msg: &str) -> Option<indicatif::ProgressBar> {
    if cli.json || cli.quiet || !colour(&std::io::stderr()) {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(pb)
}

/// A snapshot as `snapshots --json` and `snapshot --json` show it.
pub(super) fn snapshot_json(id: &SnapshotId, s: &Snapshot) -> serde_json::Value {
    crate::lifecycle::browse::snapshot_json(id, s)
}

/// The VERIFIED column: "by NAME DATE" for a verified pre-change snapshot, "pending" for one
/// waiting, "-" for other kinds.
pub(super) fn verification_cell(s: &Snapshot) -> String {
    match crate::format::verification::verified(s) {
        Some((by, date)) => format!("{by} {}", date.map(|d| d.get(..10).unwrap_or(d)).unwrap_or_default()),
        None if s.kind == crate::format::manifest::SnapshotKind::PreChange => "pending".into(),
        None => "-".into(),
    }
}

/// Description and purpose as one cell (with the creator and retention when given).
pub(super) fn about(s: &Snapshot) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(d) = &s.description {
        parts.push(d.clone());
    }
    if let Some(p) = &s.purpose {
        parts.push(format!("purpose: {p}"));
    }
    if let Some(r) = s.labels.get("retention") {
        parts.push(format!("retention {r}"));
    }
    if s.kind != crate::format::manifest::SnapshotKind::Daily {
        if let Some(c) = &s.creator {
            parts.push(format!("by {c}"));
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

/// A snapshot's time in local time with its offset, or as stored when it does not parse.
pub(super) fn fmt_time(s: &Snapshot) -> String {
    crate::util::show_time_str(&s.time)
}

/// `drwxr-xr-x` as `ls -l` shows it.
pub(super) fn mode_string(kind: NodeKind, mode: u32) -> String {
    let t = match kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::File => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let b = (mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(NodeKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(NodeKind::File, 0o640), "-rw-r-----");
        assert_eq!(mode_string(NodeKind::Symlink, 0o777), "lrwxrwxrwx");
    }
}
