//! The snapshot list, a snapshot's tree and the charts page.

use maud::{html, Markup};

use super::charts::{bars, line, Point};
use super::data::{DirView, TypeSeries, DIR_LIMIT};
use super::pages::layout;
use crate::format::manifest::{NodeKind, SnapshotKind};
use crate::format::verification::verified;
use crate::repo::SnapshotList;
use crate::util::{human_bytes, show_time_str};

fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

pub(super) fn snapshots(list: &SnapshotList, need_token: bool) -> Markup {
    let (all, bad) = list;
    let body = html! {
        h1 { "Snapshots" }
        @if need_token { p.muted { "Downloads ask for the token (any user name, the token as password)." } }
        @for (id, e) in bad { p.error { "Snapshot " (id.short()) " is unreadable: " (e) } }
        table {
            thead { tr {
                th { "ID" } th { "Time" } th { "Type" } th { "Kind" } th.num { "Files" } th.num { "Size" }
                th.num { "Added" } th { "Verified" } th { "Ticket" } th { "Description" } th { "Export" }
            } }
            tbody {
                @for (id, s) in all.iter().rev() {
                    tr {
                        td { a href={ "/snapshots/" (id.to_hex()) } { code { (id.short()) } } }
                        td.nowrap { (show_time_str(&s.time)) }
                        td { (s.backup_type) }
                        td { (s.kind.as_str()) }
                        td.num { (s.stats.files) }
                        td.num { (human_bytes(s.stats.logical_bytes)) }
                        td.num { (human_bytes(s.stats.new_bytes)) }
                        td {
                            @match verified(s) {
                                Some((by, date)) => { span.badge.ok { "verified" } " " (by) " " (date.map(|d| d.get(..10).unwrap_or(d)).unwrap_or_default()) },
                                None if s.kind == SnapshotKind::PreChange => span.badge.overdue { "pending" },
                                None => span.muted { "-" },
                            }
                        }
                        td { (s.ticket.as_deref().unwrap_or("")) }
                        td { (s.description.as_deref().unwrap_or("")) @if let Some(p) = &s.purpose { br; small.muted { "purpose: " (p) } } }
                        td { a href={ "/snapshots/" (id.to_hex()) "/export" } download { "download" } }
                    }
                }
                @if all.is_empty() { tr { td.muted colspan="11" { "No snapshots yet." } } }
            }
        }
    };
    layout("Snapshots", "Snapshots", body)
}

pub(super) fn tree(d: &DirView) -> Markup {
    let id = d.id.to_hex();
    let crumbs: Vec<(&str, String)> = {
        let mut v = Vec::new();
        let mut acc = String::new();
        for part in d.path.split('/').filter(|p| !p.is_empty()) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            v.push((part, acc.clone()));
        }
        v
    };
    let body = html! {
        h1 { "Snapshot " code { (d.id.short()) } }
        p.muted { (d.snap.backup_type) " · " (d.snap.kind.as_str()) " · " (show_time_str(&d.snap.time)) " · " (d.snap.host)
            " · " a href={ "/snapshots/" (id) "/export" } { "download the export" } }
        nav.crumbs {
            a href={ "/snapshots/" (id) } { "/" }
            @for (name, p) in &crumbs { " " a href={ "/snapshots/" (id) "?" (query(&[("path", p)])) } { (name) } " /" }
        }
        table {
            thead { tr { th { "Name" } th.num { "Size" } th { "Modified" } th { "Mode" } th {} } }
            tbody {
                @for n in &d.entries {
                    @let full = n.path_str();
                    @let name = full.rsplit('/').next().unwrap_or(&full).to_string();
                    tr {
                        td {
                            @match n.kind {
                                NodeKind::Dir => a href={ "/snapshots/" (id) "?" (query(&[("path", &full)])) } { (name) "/" },
                                NodeKind::Symlink => { (name) span.muted { " → " (String::from_utf8_lossy(&n.target)) } },
                                NodeKind::File => (name),
                            }
                        }
                        td.num { @if n.kind == NodeKind::File { (human_bytes(n.size)) } }
                        td.nowrap { (chrono::DateTime::from_timestamp_nanos(n.mtime_ns).format("%Y-%m-%d %H:%M")) }
                        td { code { (format!("{:o}", n.mode & 0o7777)) } }
                        td { @if n.kind == NodeKind::File {
                            a href={ "/snapshots/" (id) "/file?" (query(&[("path", &full)])) } download { "download" }
                        } }
                    }
                }
                @if d.entries.is_empty() { tr { td.muted colspan="5" { "Empty directory." } } }
            }
        }
        @if d.truncated { p.muted { "Only the first " (DIR_LIMIT) " entries are shown (cairn ls lists them all)." } }
    };
    layout("Snapshot", "Snapshots", body)
}

pub(super) fn charts(series: &[TypeSeries]) -> Markup {
    let bytes = |v: f64| human_bytes(v as u64);
    let secs = |v: f64| format!("{v:.1} s");
    let body = html! {
        h1 { "Charts" }
        @for s in series {
            section.chartrow {
                h2 { (s.backup_type) }
                @let sizes: Vec<Point> = s.sizes.iter().map(|(t, l, _)| Point { t: t.timestamp(), v: *l as f64, bad: false }).collect();
                @let added: Vec<Point> = s.sizes.iter().map(|(t, _, n)| Point { t: t.timestamp(), v: *n as f64, bad: false }).collect();
                @let runs: Vec<Point> = s.runs.iter().map(|(t, d, bad)| Point { t: t.timestamp(), v: *d, bad: *bad }).collect();
                div.charts {
                    (line("Logical size per snapshot", &sizes, &bytes))
                    (bars("Bytes added per snapshot", &added, &bytes))
                    (bars("Run duration (red: failed)", &runs, &secs))
                }
            }
        }
        @if series.is_empty() { p.muted { "No types configured and no snapshots yet." } }
    };
    layout("Charts", "Charts", body)
}
