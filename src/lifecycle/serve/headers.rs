//! The headers every response carries, and a download's file name.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// No script at all, styles only from `/style.css`, no framing, no referrer, nothing cached
/// (answers hold the state of backups and the content of snapshots).
const HEADERS: [(&str, &str); 7] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
    ("cross-origin-resource-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// The middleware that sets [`HEADERS`] on every response, errors included.
pub(super) async fn secure(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (k, v) in HEADERS {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    res
}

/// A `Content-Disposition: attachment` value whose file name is `name` with every byte other
/// than ASCII letters, digits, `.`, `-` and `_` replaced by `_` (no quote, slash or control
/// byte reaches the header; no leading dot).
pub(super) fn attachment(name: &str) -> HeaderValue {
    let mut safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    if safe.starts_with('.') || safe.is_empty() {
        safe.insert(0, '_');
    }
    HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")).unwrap_or(HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_are_plain_ascii() {
        assert_eq!(attachment("app.db.gz"), "attachment; filename=\"app.db.gz\"");
        assert_eq!(attachment("<script>\"a\";\r\n.txt"), "attachment; filename=\"_script__a____.txt\"");
        assert_eq!(attachment(".env"), "attachment; filename=\"_.env\"");
        assert_eq!(attachment("données.txt"), "attachment; filename=\"donn_es.txt\"");
    }
}
