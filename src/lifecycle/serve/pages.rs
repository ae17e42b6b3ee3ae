//! The pages, server-rendered with maud (every interpolated value is escaped), without script.

use axum::http::StatusCode;
use maud::{html, Markup, DOCTYPE};

use super::data::{HistoryPage, Overview};
use crate::lifecycle::schedule::human_duration;
use crate::lifecycle::status::TypeStatus;
use crate::util::{human_bytes, show_time, show_time_str};

pub(super) use super::browse_pages::{charts, snapshots, tree};

/// The one style sheet (`/style.css`; the CSP allows no inline style).
pub(super) const STYLE: &str = include_str!("style.css");

/// The frame every page shares.
pub(super) fn layout(title: &str, active: &str, body: Markup) -> Markup {
    let nav = [("/", "Overview"), ("/history", "History"), ("/charts", "Charts"), ("/snapshots", "Snapshots")];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · cairn" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                header {
                    span.brand { "cairn" }
                    nav {
                        @for (href, label) in nav {
                            a href=(href) class=[(label == active).then_some("active")] { (label) }
                        }
                        a href="/api/status" { "API" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// An error as a page (the text is escaped like everything else).
pub(super) fn error_page(code: StatusCode, msg: &str) -> Markup {
    layout(
        code.canonical_reason().unwrap_or("error"),
        "",
        html! {
            h1 { (code.as_u16()) " " (code.canonical_reason().unwrap_or("")) }
            p.error { (msg) }
        },
    )
}

/// ok / overdue / failing, as the status judges a type.
pub(super) fn state_of(t: &TypeStatus) -> &'static str {
    if t.overdue {
        "overdue"
    } else if t.consecutive_failures > 0 || t.last_run.as_ref().is_some_and(|r| r.result.failed()) {
        "failing"
    } else {
        "ok"
    }
}

fn ago(secs: i64) -> String {
    format!("{} ago", human_duration(chrono::Duration::seconds(secs)))
}

fn opt_time(t: Option<&str>) -> String {
    t.map_or_else(|| "never".into(), show_time_str)
}

pub(super) fn overview(o: &Overview) -> Markup {
    let st = &o.status;
    let first = st.problems.first();
    let body = html! {
        @match first {
            None => section.verdict.ok {
                h1 { "All backups are safe" }
                p { "Every type is within its recovery point objective; nothing failed, nothing is damaged." }
            },
            Some(p) => section.verdict.(format!("{:?}", p.severity).to_lowercase()) {
                h1 { "Needs attention: " (p.kind.label().to_lowercase()) }
                p.first { (p.message) }
                @if st.problems.len() > 1 {
                    details {
                        summary { (st.problems.len() - 1) " more" }
                        ul { @for q in &st.problems[1..] { li { b { (q.kind.label()) } " " (q.message) } } }
                    }
                }
            },
        }
        h2 { "Backup types" }
        table {
            thead { tr {
                th { "Type" } th { "State" } th { "Last success" } th { "RPO" } th { "Next due" }
                th.num { "Latest size" } th.num { "Snapshots" } th { "Restore test" }
            } }
            tbody {
                @for t in &st.types {
                    @let state = state_of(t);
                    tr {
                        td { a href={ "/history?type=" (t.backup_type) } { (t.backup_type) } }
                        td { span.badge.(state) { (state) } @if t.consecutive_failures > 0 { " " small { (t.consecutive_failures) "×" } } }
                        td {
                            (opt_time(t.last_success.map(|x| x.to_rfc3339()).as_deref()))
                            @if let Some(a) = t.age_s { br; small.(if t.overdue { "bad" } else { "muted" }) { (ago(a)) } }
                        }
                        td { (human_duration(chrono::Duration::seconds(t.rpo_s))) }
                        td { (show_time(&t.next_due)) @if t.due_now { br; small { "due now" } } }
                        td.num { (t.latest_logical_bytes.map_or_else(|| "-".into(), human_bytes)) }
                        td.num { (t.snapshots) }
                        td {
                            @match &t.restore_test {
                                Some(r) => { (show_time_str(&r.time)) br; small.muted { (human_bytes(r.bytes)) " in " (format!("{:.1}", r.seconds)) " s" } },
                                None => span.muted { "-" },
                            }
                        }
                    }
                    @if let (Some(e), true) = (&t.last_error, state != "ok") {
                        tr.errrow { td {} td colspan="7" { span.error { (e) } } }
                    }
                }
            }
        }
        @if !st.remotes.is_empty() {
            h2 { "Remotes" }
            table {
                thead { tr { th { "Remote" } th { "State" } th { "Last sync" } th.num { "Pending files" } th.num { "Pending bytes" } th { "Oldest pending" } } }
                tbody {
                    @for r in &st.remotes {
                        @let state = if r.failing { "failing" } else if r.behind { "overdue" } else { "ok" };
                        tr {
                            td { (r.name) br; small.muted { (r.target) } }
                            td { span.badge.(state) { (if r.behind && !r.failing { "behind" } else { state }) } }
                            td { (opt_time(r.last_sync.as_deref())) }
                            td.num { (r.pending_files) }
                            td.num { (human_bytes(r.pending_bytes)) }
                            td { (r.oldest_pending_age_s.map_or_else(|| "-".into(), ago)) }
                        }
                        @if let Some(e) = &r.last_error { tr.errrow { td {} td colspan="5" { span.error { (e) } } } }
                    }
                }
            }
        }
        div.cards {
            section.card {
                h2 { "Repository" }
                dl {
                    dt { "Stored" } dd { (human_bytes(st.stored_bytes)) }
                    dt { "Logical" } dd { (human_bytes(st.logical_bytes)) " (dedup " (format!("{:.1}", st.dedup_ratio)) "×)" }
                    dt { "Snapshots" } dd { (st.snapshots) }
                    @if let Some(fs) = &st.filesystem {
                        dt { "Free space" } dd { (human_bytes(fs.available_bytes)) " of " (human_bytes(fs.total_bytes)) }
                    }
                    dt { "Encryption" } dd { (st.encryption) }
                }
                p.path { (st.repository) }
            }
            section.card {
                h2 { "Verification" }
                @match &st.last_verify {
                    Some(v) => dl {
                        dt { "Last verify" } dd { (show_time(&v.time)) }
                        dt { "Result" } dd { span.badge.(if v.ok { "ok" } else { "failing" }) { (if v.ok { "no errors" } else { "failed" }) } }
                        @if let Some(e) = &v.error { dt { "Error" } dd.error { (e) } }
                        dt { "Restore test" } dd { (if v.restore_test { "included" } else { "not run" }) }
                        dt { "Next" } dd { (v.next_due.map_or_else(|| "not scheduled".into(), |t| show_time(&t))) }
                    },
                    None => p.muted { "The repository was never verified (cairn verify)." },
                }
                @if !st.pending_verification.is_empty() {
                    p { (st.pending_verification.len()) " pre-change snapshot(s) wait for verification." }
                }
            }
        }
    };
    layout("Overview", "Overview", body)
}

pub(super) fn history(h: &HistoryPage) -> Markup {
    let results = ["success", "unchanged", "failed", "partial"];
    let link = |page: usize| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("type", &h.backup_type).append_pair("result", &h.result).append_pair("page", &page.to_string());
        format!("/history?{}", q.finish())
    };
    let body = html! {
        h1 { "History" }
        form.filter method="get" action="/history" {
            label { "Type " select name="type" {
                option value="" { "all" }
                @for t in &h.types { option value=(t) selected[*t == h.backup_type] { (t) } }
                @if !h.backup_type.is_empty() && !h.types.contains(&h.backup_type) {
                    option value=(h.backup_type) selected { (h.backup_type) }
                }
            } }
            label { "Result " select name="result" {
                option value="" { "all" }
                @for r in results { option value=(r) selected[r == h.result] { (r) } }
            } }
            button type="submit" { "Filter" }
        }
        table {
            thead { tr {
                th { "Start" } th { "Type" } th { "Result" } th.num { "Duration" } th.num { "Files" }
                th.num { "Read" } th.num { "Added" } th { "Snapshot" } th { "Error" }
            } }
            tbody {
                @for r in &h.runs {
                    @let res = format!("{:?}", r.result).to_lowercase();
                    tr {
                        td.nowrap { (show_time_str(&r.start)) }
                        td { (r.backup_type) }
                        td { span.badge.(if r.result.failed() { "failing" } else { "ok" }) { (res) } }
                        td.num { (r.duration_s().map_or_else(|| "-".into(), |d| format!("{d:.1} s"))) }
                        td.num { (r.files) }
                        td.num { (human_bytes(r.bytes_read)) }
                        td.num { (human_bytes(r.bytes_added)) }
                        td { @if let Some(s) = &r.snapshot { a href={ "/snapshots/" (s) } { code { (s.get(..8).unwrap_or(s)) } } } }
                        td.error { (r.error.as_deref().unwrap_or("")) }
                    }
                }
                @if h.runs.is_empty() { tr { td.muted colspan="9" { "No runs match." } } }
            }
        }
        nav.pager {
            @if h.page > 1 { a href=(link(h.page - 1)) { "← newer" } }
            span { "page " (h.page) }
            @if h.more { a href=(link(h.page + 1)) { "older →" } }
        }
    };
    layout("History", "History", body)
}
