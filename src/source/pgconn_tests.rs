use proptest::prelude::*;

use super::PgConn;

fn p(s: &str) -> PgConn {
    PgConn::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err(s: &str) -> String {
    PgConn::parse(s).expect_err(s).to_string()
}

#[test]
fn url_passwords_are_split_out_and_redacted() {
    let c = p("postgresql://app:s3cret@db:5432/app");
    assert_eq!(c.redacted(), "postgresql://app@db:5432/app");
    assert_eq!(c.password(), Some(&b"s3cret"[..]));
    assert_eq!(c.conninfo(), "user='app' host='db' port='5432' dbname='app'");
    assert_eq!(p("postgresql://app:p%40ss@db/app").password(), Some(&b"p@ss"[..]));
    assert_eq!(p("postgresql://app@db/app").password(), None);
    assert_eq!(p("postgres://app:pw@[::1]:5432/app").redacted(), "postgres://app@[::1]:5432/app");
    assert_eq!(p("postgres://app:pw@[::1]:5432/app").get("host"), Some("::1"));
    // An unencoded '@' in the password never shows up as a host.
    let c = p("postgresql://app:p@ss@db/app");
    assert_eq!((c.redacted().as_str(), c.password()), ("postgresql://app@db/app", Some(&b"p@ss"[..])));
    // An '@' after the authority is not userinfo.
    let c = p("postgresql://db/app?options=a@b");
    assert_eq!((c.redacted().as_str(), c.password()), ("postgresql://db/app?options=a@b", None));
    // Host lists.
    let c = p("postgresql://app:s%3Acret@h1:5432,h2:5433/app?target_session_attrs=any");
    assert_eq!(c.redacted(), "postgresql://app@h1:5432,h2:5433/app?target_session_attrs=any");
    assert_eq!(c.password(), Some(&b"s:cret"[..]));
    assert_eq!((c.get("host"), c.get("port")), (Some("h1,h2"), Some("5432,5433")));
    assert_eq!(p("postgresql://h1,h2:6/x").get("port"), Some(",6"));
    // Socket directories, in the query or percent-encoded as the host.
    assert_eq!(p("postgresql:///app?host=/run/postgresql").redacted(), "postgresql:///app?host=/run/postgresql");
    assert_eq!(p("postgresql://%2Frun%2Fpg/app").get("host"), Some("/run/pg"));
    assert_eq!(p("postgresql://").conninfo(), "");
}

#[test]
fn query_passwords_are_split_out_and_later_ones_win() {
    let c = p("postgresql://app@/shop?host=/tmp/s&password=q%20pw&port=5&sslpassword=k");
    assert_eq!(c.redacted(), "postgresql://app@/shop?host=/tmp/s&port=5");
    assert_eq!(c.password(), Some(&b"q pw"[..]));
    assert!(!c.conninfo().contains("q pw") && p(&c.conninfo()).password().is_none());
    assert_eq!(p("postgresql://u:a@h/d?password=b").password(), Some(&b"b"[..]));
    assert_eq!(p("postgresql://h/d?password=x").redacted(), "postgresql://h/d");
    assert_eq!(p("postgresql://h/d?ssl=true").get("sslmode"), Some("require"));
}

#[test]
fn percent_encoding_follows_libpq_and_never_panics() {
    // Used to slice inside the 'é' and panic; libpq refuses these.
    for s in ["postgresql://app:%\u{e9}x@db/app", "postgresql://app:ab%\u{20ac}@db/app", "postgresql://a:%4@h/d"] {
        assert!(err(s).contains("not followed by two hex digits"), "{s}");
        assert!(!err(s).contains("app:"), "{s}");
    }
    assert!(err("postgresql://a:x%00y@h/d").contains("%00"));
    // Encoded multi-byte characters and bytes that are not UTF-8 reach the password as bytes.
    assert_eq!(p("postgresql://app:%C3%A9%FF@db/app").password(), Some(&[0xc3, 0xa9, 0xff][..]));
    assert!(err("postgresql://h/%FF").contains("dbname is not UTF-8"));
}

#[test]
fn keyword_value_strings_follow_libpq_quoting() {
    let c = p(r"host=db  port = 5432 password='a b\'c' user=app dbname=x\ y");
    assert_eq!(c.password(), Some(&br"a b'c"[..]));
    assert_eq!(c.redacted(), r"host=db port = 5432 user=app dbname=x\ y");
    assert_eq!(c.get("dbname"), Some("x y"));
    assert_eq!(c.conninfo(), r"host='db' port='5432' user='app' dbname='x y'");
    // As in libpq, blanks after "=" are skipped: the value is the next word.
    assert_eq!(p("password= host=h").password(), Some(&b"host=h"[..]));
    assert_eq!(p("host=h password=''").password(), Some(&b""[..]));
    assert_eq!(p(r"password='\\' host=h").password(), Some(&br"\"[..]));
    assert_eq!(p("host='x' sslpassword='k' user=u").redacted(), "host='x' user=u");
    // A quote or backslash in a value survives the trip to the child.
    let c = p(r"dbname='it\'s' host=a\\b");
    let back = p(&c.conninfo());
    assert_eq!((back.get("dbname"), back.get("host")), (Some("it's"), Some(r"a\b")));
}

#[test]
fn service_names() {
    let c = p("myservice");
    assert_eq!((c.redacted().as_str(), c.conninfo().as_str()), ("myservice", "service='myservice'"));
    assert_eq!(p("service=s password=x").redacted(), "service=s");
}

#[test]
fn hostile_strings_are_clear_errors_without_values() {
    assert!(err("host=h password='secret").contains("unterminated quoted string"));
    assert!(!err("host=h password='secret").contains("secret"));
    assert!(err("host=h bogus=1").contains("unknown connection option \"bogus\""));
    assert!(err("postgresql://h/d?bogus=1").contains("unknown connection option \"bogus\""));
    assert!(err("host=h secret").contains("missing '='"));
    assert!(!err("host=h secret").contains("secret"));
    assert!(err("mysql://u:p@h/d").contains("scheme"));
    assert!(err("postgresql://[::1/d").contains("IPv6"));
    assert!(err("postgresql://h:port/d").contains("port"));
    assert!(err("postgresql://h/d?a").contains("without '='"));
    assert!(err("  ").contains("empty"));
    assert!(err("two words").contains("service name"));
}

#[test]
fn command_keeps_the_password_out_of_argv() {
    for s in ["postgresql://u:hunter2@h/d", "host=h password=hunter2 dbname=d", "postgresql://h/d?password=hunter2"] {
        let c = p(s).command("pg_dump");
        let argv: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(!argv.join(" ").contains("hunter2"), "{s}: {argv:?}");
        let env: Vec<_> = c.get_envs().collect();
        assert_eq!(env, [(std::ffi::OsStr::new("PGPASSWORD"), Some(std::ffi::OsStr::new("hunter2")))], "{s}");
    }
}

proptest! {
    #[test]
    fn no_input_panics(s in ".{0,80}") {
        let _ = PgConn::parse(&s);
    }

    #[test]
    fn no_url_panics(s in "(postgres|postgresql)://[a-z%:@/?=&,\\[\\]0-9\u{e9}\u{20ac}. '\\\\]{0,60}") {
        let _ = PgConn::parse(&s);
    }

    #[test]
    fn no_keyword_value_panics(s in "([a-z_]{1,8} ?= ?('[^']{0,8}'?|[^ ]{0,8}) ?){0,5}") {
        let _ = PgConn::parse(&s);
    }

    /// Whatever the password, it is in neither the redacted form nor the child's conninfo, and
    /// it comes back byte for byte.
    #[test]
    fn a_password_never_leaks(pw in "[a-zA-Z0-9!#$^*()_+ ;'\\\\\u{e9}\u{20ac}]{8,20}") {
        let enc: String = percent_encoding::utf8_percent_encode(&pw, percent_encoding::NON_ALPHANUMERIC).to_string();
        let quoted = pw.replace('\\', "\\\\").replace('\'', "\\'");
        for s in [
            format!("postgresql://app:{enc}@db:5/x"),
            format!("postgresql://db/x?password={enc}&user=app"),
            format!("host=db password='{quoted}' user=app"),
        ] {
            let c = PgConn::parse(&s).unwrap();
            prop_assert_eq!(c.password(), Some(pw.as_bytes()));
            prop_assert!(!c.redacted().contains(&pw) && !c.redacted().contains(&enc));
            prop_assert!(!c.conninfo().contains(&pw));
            prop_assert_eq!(c.get("user"), Some("app"));
        }
    }

    /// The conninfo handed to a child parses back to the same parameters.
    #[test]
    fn conninfo_round_trips(v in "[^\u{0}]{0,20}") {
        let c = PgConn::parse("host=h").unwrap().with("dbname", &v);
        let back = PgConn::parse(&c.conninfo()).unwrap();
        prop_assert_eq!(back.get("dbname"), Some(v.as_str()));
    }
}

#[test]
fn an_unencoded_slash_in_a_url_password_is_refused_without_quoting_it() {
    for s in ["postgresql://app:1234/5678@db/prod", "postgres://u:/x@h/d", "postgresql://a:b/c@h?sslmode=require"] {
        let e = PgConn::parse(s).unwrap_err().to_string();
        assert!(e.contains("percent-encode"), "{s}: {e}");
        assert!(!e.contains("5678") && !e.contains("/x") && !e.contains("b/c"), "{s}: {e}");
    }
    let ok = PgConn::parse("postgresql://app:1234%2F5678@db/prod").unwrap();
    assert_eq!(ok.password(), Some(&b"1234/5678"[..]));
    assert!(!ok.redacted().contains("5678"), "{}", ok.redacted());
}
