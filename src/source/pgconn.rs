//! PostgreSQL connection strings, parsed the way libpq parses them, so a password can be kept
//! out of every child's command line and out of everything cairn records.
//!
//! Accepted forms (libpq's "Connection Strings" grammar, PostgreSQL 15-17):
//! - URL: `postgresql://` or `postgres://`, `[user[:password]@][host][:port][,host[:port]...]`
//!   `[/dbname][?key=value&...]`; every part percent-decoded; IPv6 hosts in brackets; `ssl=true`
//!   means `sslmode=require`. A `%` not followed by two hex digits, or `%00`, is an error (as in
//!   libpq). The userinfo ends at the last `@` before the first `/`, so an unencoded `@` in a
//!   password is never shown as a host.
//! - keyword/value: `host=db password='a b\'c'`, values bare or single-quoted, `\` escaping the
//!   next character.
//! - a bare word: a service name (`service=NAME`, cairn's shorthand).
//!
//! Unknown keywords are errors. Error messages never contain a value: the input may hold a
//! password.
//!
//! API for every place that starts a PostgreSQL program:
//! ```
//! # fn main() -> cairn::Result<()> {
//! use cairn::PgConn;
//! let conn = PgConn::parse("postgresql://app:s3cret@db/shop")?; // Error::Invalid, never a panic
//! assert_eq!(conn.redacted(), "postgresql://app@db/shop");      // for facts, logs, `config check`
//! let cmd = conn.command("pg_dump"); // --dbname=<conninfo without password>, --no-password
//! assert!(!cmd.get_args().any(|a| a.to_string_lossy().contains("s3cret")));
//! assert!(cmd.get_envs().any(|(k, _)| k == "PGPASSWORD"));
//! let _scratch = conn.with("dbname", "scratch"); // the same server and role, another database
//! # Ok(())
//! # }
//! ```
//! The password goes through the child's environment (`PGPASSWORD`, readable only by the same
//! user through /proc), never its argv. `sslpassword` (a client key's passphrase) has no
//! environment variable in libpq: it is redacted but still reaches the child's argv.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::process::Command;

use crate::error::{Error, Result};

/// Every keyword libpq 15-17 knows.
const KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

/// Keywords whose value is a secret.
const SECRETS: &[&str] = &["password", "sslpassword"];

/// A parsed connection string.
#[derive(Clone, PartialEq, Eq)]
pub struct PgConn {
    /// Keyword/value pairs in order, the password left out.
    params: Vec<(String, String)>,
    /// The password (bytes: libpq takes it as given).
    password: Option<Vec<u8>>,
    /// The string as written with its secrets left out.
    shown: String,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

fn invalid(m: impl Into<String>) -> Error {
    Error::Invalid(m.into())
}

impl PgConn {
    /// Parses any form; never panics, and the error never quotes a value.
    pub fn parse(s: &str) -> Result<PgConn> {
        let t = s.trim();
        if t.is_empty() {
            return Err(invalid("empty connection string"));
        }
        if let Some(rest) = t.strip_prefix("postgresql://").or_else(|| t.strip_prefix("postgres://")) {
            let scheme = &t[..t.len() - rest.len()];
            return parse_url(scheme, rest);
        }
        if t.contains('=') {
            return parse_keyword_value(t);
        }
        if t.contains("://") {
            return Err(invalid("not a PostgreSQL URL: the scheme must be postgresql:// or postgres://"));
        }
        if t.chars().any(|c| c.is_whitespace() || c == '\'' || c == '\\') {
            return Err(invalid("neither a URL, keyword=value pairs nor a service name"));
        }
        Ok(PgConn { params: vec![("service".into(), t.into())], password: None, shown: t.into() })
    }

    /// The string as written, with the password (and `sslpassword`) left out.
    pub fn redacted(&self) -> String {
        self.shown.clone()
    }

    /// The password, if the string gives one.
    pub fn password(&self) -> Option<&[u8]> {
        self.password.as_deref()
    }

    /// A keyword's value (the password is not among them).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The same connection with `key` set to `value` (e.g. another `dbname`); `key` must be a
    /// libpq keyword other than `password`.
    pub fn with(&self, key: &str, value: &str) -> PgConn {
        debug_assert!(KEYWORDS.contains(&key) && key != "password");
        let mut c = self.clone();
        c.params.retain(|(k, _)| k != key);
        c.params.push((key.into(), value.into()));
        if key == "dbname" {
            c.shown = format!("{} (database {value})", self.shown);
        }
        c
    }

    /// The keyword/value string handed to a child: every parameter but the password, quoted.
    pub fn conninfo(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.params {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(k);
            out.push_str("='");
            for c in v.chars() {
                if c == '\'' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('\'');
        }
        out
    }

    /// `program` (pg_dump, pg_dumpall, pg_restore, psql, pg_basebackup) set to connect here:
    /// `--dbname=<conninfo>` and `--no-password` (never a prompt) on its command line, the
    /// password in its environment only.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        c.arg("--no-password");
        c.arg(format!("--dbname={}", self.conninfo()));
        if let Some(p) = &self.password {
            c.env("PGPASSWORD", OsString::from_vec(p.clone()));
        }
        c
    }
}

/// Collects pairs and the password, applying libpq's "later wins" to the password.
#[derive(Default)]
struct Builder {
    params: Vec<(String, String)>,
    password: Option<Vec<u8>>,
}

impl Builder {
    fn push(&mut self, key: String, value: Vec<u8>) -> Result<()> {
        if !KEYWORDS.contains(&key.as_str()) {
            if key.len() <= 40 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(invalid(format!("unknown connection option {key:?}")));
            }
            return Err(invalid("unknown connection option"));
        }
        if key == "password" {
            self.password = Some(value);
            return Ok(());
        }
        if value.contains(&0) {
            return Err(invalid(format!("a NUL byte in the value of {key}")));
        }
        let value = String::from_utf8(value).map_err(|_| invalid(format!("the value of {key} is not UTF-8")))?;
        self.params.retain(|(k, _)| *k != key);
        self.params.push((key, value));
        Ok(())
    }

    fn done(self, shown: String) -> PgConn {
        PgConn { params: self.params, password: self.password, shown }
    }
}

/// libpq's percent-decoding: `%` must be followed by two hex digits, `%00` is refused.
fn decode(s: &str, what: &str) -> Result<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let hex = |c: u8| (c as char).to_digit(16);
        match (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (Some(h), Some(l)) => {
                let v = (h * 16 + l) as u8;
                if v == 0 {
                    return Err(invalid(format!("%00 in the {what} of the URL")));
                }
                out.push(v);
                i += 3;
            }
            _ => return Err(invalid(format!("a '%' not followed by two hex digits in the {what} of the URL"))),
        }
    }
    Ok(out)
}

fn decode_str(s: &str, what: &str) -> Result<String> {
    String::from_utf8(decode(s, what)?).map_err(|_| invalid(format!("the {what} of the URL is not UTF-8")))
}

fn parse_url(scheme: &str, rest: &str) -> Result<PgConn> {
    let mut b = Builder::default();
    let mut shown = String::from(scheme);
    // The authority ends at the first '/', like libpq's look-ahead for '@'; the userinfo at the
    // last '@' in it.
    let auth_end = rest.find('/').unwrap_or(rest.len());
    // An '@' after that is a user name or password holding '/' that was not percent-encoded:
    // parsed as libpq does, the password would become the host and database name, shown and
    // passed on the command line. Refused, without quoting it.
    let path_end = rest[auth_end..].find('?').map_or(rest.len(), |q| auth_end + q);
    if rest[auth_end..path_end].contains('@') {
        return Err(invalid(
            "an '@' after the host in the URL: percent-encode '/' and '@' in the user name and password (%2F, %40)",
        ));
    }
    let mut p = match rest[..auth_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let (user, password) = match userinfo.split_once(':') {
                Some((u, pw)) => (u, Some(pw)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                b.push("user".into(), decode(user, "user name")?)?;
                shown.push_str(user);
                shown.push('@');
            }
            if let Some(pw) = password {
                b.password = Some(decode(pw, "password")?);
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    // Hosts and ports, up to '/' or '?'.
    let hosts_end = p.find(['/', '?']).unwrap_or(p.len());
    let hostlist = &p[..hosts_end];
    shown.push_str(hostlist);
    let (mut hosts, mut ports) = (Vec::new(), Vec::new());
    for item in hostlist.split(',') {
        let (host, port) = if let Some(v6) = item.strip_prefix('[') {
            let Some(close) = v6.find(']') else {
                return Err(invalid("an IPv6 host without its closing ']' in the URL"));
            };
            let after = &v6[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(invalid("unexpected text after an IPv6 host in the URL")),
            };
            (&v6[..close], port)
        } else {
            match item.split_once(':') {
                Some((h, port)) => (h, Some(port)),
                None => (item, None),
            }
        };
        if let Some(port) = port {
            if !port.is_empty() && !port.bytes().all(|c| c.is_ascii_digit()) {
                return Err(invalid("a port that is not a number in the URL"));
            }
        }
        hosts.push(decode_str(host, "host")?);
        ports.push(port.unwrap_or("").to_string());
    }
    if hosts.iter().any(|h| !h.is_empty()) || hosts.len() > 1 {
        b.push("host".into(), hosts.join(",").into_bytes())?;
    }
    if ports.iter().any(|p| !p.is_empty()) {
        b.push("port".into(), ports.join(",").into_bytes())?;
    }
    p = &p[hosts_end..];
    if let Some(db) = p.strip_prefix('/') {
        let end = db.find('?').unwrap_or(db.len());
        if end > 0 {
            b.push("dbname".into(), decode(&db[..end], "database name")?)?;
        }
        shown.push_str(&p[..end + 1]);
        p = &db[end..];
    }
    if let Some(query) = p.strip_prefix('?') {
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(invalid("a URL query parameter without '='"));
            };
            if v.contains('=') {
                return Err(invalid("a URL query parameter with two '='"));
            }
            let mut key = decode_str(k, "query")?;
            let mut value = decode(v, "query")?;
            if key == "ssl" && value == b"true" {
                (key, value) = ("sslmode".into(), b"require".to_vec());
            }
            if !SECRETS.contains(&key.as_str()) {
                kept.push(pair);
            }
            b.push(key, value)?;
        }
        if !kept.is_empty() {
            shown.push('?');
            shown.push_str(&kept.join("&"));
        }
    }
    Ok(b.done(shown))
}

fn parse_keyword_value(s: &str) -> Result<PgConn> {
    let mut b = Builder::default();
    let mut shown: Vec<&str> = Vec::new();
    let mut it = s.char_indices().peekable();
    loop {
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = it.peek() else { break };
        let mut key = String::new();
        while let Some((_, c)) = it.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if it.next_if(|(_, c)| *c == '=').is_none() {
            return Err(invalid(if KEYWORDS.contains(&key.as_str()) {
                format!("missing '=' after {key:?} in the connection string")
            } else {
                "missing '=' after a word in the connection string".to_string()
            }));
        }
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match it.next() {
                    None => return Err(invalid("unterminated quoted string in the connection string")),
                    Some((_, '\\')) => match it.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err(invalid("unterminated quoted string in the connection string")),
                    },
                    Some((_, '\'')) => break,
                    Some((_, c)) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = it.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some((_, n)) = it.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        let end = it.peek().map_or(s.len(), |&(i, _)| i);
        if !SECRETS.contains(&key.as_str()) {
            shown.push(s[start..end].trim_end());
        }
        b.push(key, value.into_bytes())?;
    }
    Ok(b.done(shown.join(" ")))
}

#[cfg(test)]
#[path = "pgconn_tests.rs"]
mod tests;
