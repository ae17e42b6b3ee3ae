//! Who may ask: the token (HTTP Basic password or Bearer), compared in constant time, and the
//! Host header on a loopback bind without a token.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::App;

/// Only these two are loopback here: any other address, 127.0.0.2 included, may be reached
/// through a forwarded port or a container's network, so it asks for the token.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => ip == std::net::Ipv4Addr::LOCALHOST,
        std::net::IpAddr::V6(ip) => ip == std::net::Ipv6Addr::LOCALHOST,
    }
}

/// The token and where it is asked for.
pub(super) struct Auth {
    token: Option<Zeroizing<String>>,
    download_token: bool,
    loopback: bool,
}

impl Auth {
    pub(super) fn new(token: Option<Zeroizing<String>>, download_token: bool, loopback: bool) -> Auth {
        Auth { token, download_token, loopback }
    }

    /// Whether a download link will ask for the token.
    pub(super) fn downloads_need_token(&self) -> bool {
        self.download_token || !self.loopback
    }

    /// Whether `headers` carry the token: `Authorization: Bearer TOKEN`, or Basic with TOKEN as
    /// the password (any user name), which a browser asks for by itself.
    fn presented(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else { return false };
        let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
        let given: Zeroizing<Vec<u8>> = if let Some(b) = v.strip_prefix("Bearer ") {
            Zeroizing::new(b.trim().as_bytes().to_vec())
        } else if let Some(b) = v.strip_prefix("Basic ") {
            let Some(raw) = base64_decode(b.trim()) else { return false };
            let raw = Zeroizing::new(raw);
            match raw.iter().position(|&c| c == b':') {
                Some(i) => Zeroizing::new(raw[i + 1..].to_vec()),
                None => return false,
            }
        } else {
            return false;
        };
        // Constant time in the content; the length of the token is not a secret worth hiding.
        given.as_slice().ct_eq(token.as_bytes()).into()
    }
}

fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"cairn\", charset=\"UTF-8\"")],
        super::page(super::pages::error_page(StatusCode::UNAUTHORIZED, why)),
    )
        .into_response()
}

/// Whether a Host header names this machine by loopback address or `localhost`.
fn local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// The middleware: every request on a non-loopback bind, and every download, shows the token.
pub(super) async fn check(State(app): State<App>, req: Request, next: Next) -> Response {
    let a = &app.auth;
    let path = req.uri().path();
    let download = path.starts_with("/snapshots/") && (path.ends_with("/file") || path.ends_with("/export"));
    let need = !a.loopback || (download && a.download_token);
    if need {
        if a.token.is_none() {
            return unauthorized("downloads are turned off: start serve with a token (--token-file or CAIRN_SERVE_TOKEN), or with --no-download-token");
        }
        if !a.presented(req.headers()) {
            return unauthorized(
                "a token is required: give it as the password (any user name) or as `Authorization: Bearer TOKEN`",
            );
        }
    } else if a.token.is_none() || !a.presented(req.headers()) {
        // A page of another site that rebinds its name to 127.0.0.1 must not read the answers.
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !local_host(host) {
            return super::Failure(
                StatusCode::FORBIDDEN,
                format!("host {host:?} is not this machine's loopback name (use http://127.0.0.1:PORT/ or http://localhost:PORT/)"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Standard base64 (RFC 4648), as HTTP Basic uses; `None` for anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_http_basic_sends_it() {
        assert_eq!(base64_decode("dXNlcjpzM2NyZXQ=").as_deref(), Some(&b"user:s3cret"[..]));
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(base64_decode("YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(base64_decode("!!!!"), None);
    }

    #[test]
    fn only_loopback_names_pass_the_host_check() {
        for ok in ["127.0.0.1:8377", "localhost:8377", "[::1]:8377", "localhost", "127.0.0.1"] {
            assert!(local_host(ok), "{ok}");
        }
        for bad in ["evil.example:8377", "", "127.0.0.1.evil.example", "[::2]:1", "localhost.evil:80"] {
            assert!(!local_host(bad), "{bad}");
        }
    }

    #[test]
    fn loopback_is_127_0_0_1_and_ipv6_one_only() {
        assert!(is_loopback(&"127.0.0.1:1".parse().expect("addr")));
        assert!(is_loopback(&"[::1]:1".parse().expect("addr")));
        assert!(!is_loopback(&"127.0.0.2:1".parse().expect("addr")));
        assert!(!is_loopback(&"0.0.0.0:1".parse().expect("addr")));
    }
}
