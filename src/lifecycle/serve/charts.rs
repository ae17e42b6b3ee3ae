//! Inline SVG charts: a series over time as a line or as bars, with its range labelled.

use maud::{html, Markup};

const W: f64 = 560.0;
const H: f64 = 140.0;
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 18.0;

/// One point: when, how much, whether it marks a failure.
pub(super) struct Point {
    pub t: i64,
    pub v: f64,
    pub bad: bool,
}

fn scale(points: &[Point]) -> (i64, i64, f64) {
    let t0 = points.iter().map(|p| p.t).min().unwrap_or(0);
    let t1 = points.iter().map(|p| p.t).max().unwrap_or(0).max(t0 + 1);
    let vmax = points.iter().map(|p| p.v).fold(0.0, f64::max);
    (t0, t1, if vmax > 0.0 { vmax } else { 1.0 })
}

fn x_of(t: i64, t0: i64, t1: i64) -> f64 {
    LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (W - LEFT - 8.0)
}

fn y_of(v: f64, vmax: f64) -> f64 {
    (H - BOTTOM) - v / vmax * (H - BOTTOM - 8.0)
}

fn frame(title: &str, points: &[Point], label: &dyn Fn(f64) -> String, inner: Markup) -> Markup {
    let (t0, t1, vmax) = scale(points);
    let day =
        |t: i64| chrono::DateTime::from_timestamp(t, 0).map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default();
    html! {
        figure {
            figcaption { (title) }
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(title) {
                line x1=(LEFT) y1=(H - BOTTOM) x2=(W - 8.0) y2=(H - BOTTOM) class="axis" {}
                line x1=(LEFT) y1="8" x2=(LEFT) y2=(H - BOTTOM) class="axis" {}
                text x=(LEFT - 4.0) y="14" text-anchor="end" class="lbl" { (label(vmax)) }
                text x=(LEFT - 4.0) y=(H - BOTTOM) text-anchor="end" class="lbl" { (label(0.0)) }
                text x=(LEFT) y=(H - 4.0) class="lbl" { (day(t0)) }
                text x=(W - 8.0) y=(H - 4.0) text-anchor="end" class="lbl" { (day(t1)) }
                (inner)
            }
        }
    }
}

/// A line through the points (a dot each), for sizes that grow.
pub(super) fn line(title: &str, points: &[Point], label: &dyn Fn(f64) -> String) -> Markup {
    if points.is_empty() {
        return html! { figure { figcaption { (title) } p.muted { "no data yet" } } };
    }
    let (t0, t1, vmax) = scale(points);
    let pts: Vec<String> = points.iter().map(|p| format!("{:.1},{:.1}", x_of(p.t, t0, t1), y_of(p.v, vmax))).collect();
    frame(
        title,
        points,
        label,
        html! {
            polyline points=(pts.join(" ")) class="series" {}
            @for p in points {
                circle cx=(format!("{:.1}", x_of(p.t, t0, t1))) cy=(format!("{:.1}", y_of(p.v, vmax))) r="2.5" class=(if p.bad { "dot bad" } else { "dot" }) {
                    title { (label(p.v)) }
                }
            }
        },
    )
}

/// A bar per point (red where it failed), for amounts per run or per snapshot.
pub(super) fn bars(title: &str, points: &[Point], label: &dyn Fn(f64) -> String) -> Markup {
    if points.is_empty() {
        return html! { figure { figcaption { (title) } p.muted { "no data yet" } } };
    }
    let (t0, t1, vmax) = scale(points);
    let bw = ((W - LEFT - 8.0) / points.len() as f64 * 0.7).clamp(1.5, 12.0);
    frame(
        title,
        points,
        label,
        html! {
            @for p in points {
                @let y = y_of(p.v, vmax);
                rect x=(format!("{:.1}", (x_of(p.t, t0, t1) - bw / 2.0).max(LEFT))) y=(format!("{y:.1}")) width=(format!("{bw:.1}"))
                    height=(format!("{:.1}", (H - BOTTOM - y).max(1.0))) class=(if p.bad { "bar bad" } else { "bar" }) {
                    title { (label(p.v)) }
                }
            }
        },
    )
}
