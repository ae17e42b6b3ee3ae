//! Notifications a person can live with, through the binary: days of a 10-minute cron under
//! `faketime` against a real HTTP receiver (one failure, one reminder a day, one recovery),
//! success notifications, email through a real SMTP sink on 127.0.0.1, and `notify --test`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::lifecycle::{closed_port, split_events, HttpSink};
use crate::util::{ensure_package, have_program, under_faketime, write_config, Env, Run};

/// `cairn --config CFG ARGS` with the clock at `at` (UTC), through faketime.
fn cairn_at(env: &Env, cfg: &Path, at: &chrono::NaiveDateTime, args: &[&str]) -> Run {
    let mut base = Command::new(env!("CARGO_BIN_EXE_cairn"));
    base.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", env.path())
        .env("TZ", "UTC")
        .arg("--config")
        .arg(cfg)
        .args(args);
    env.run_cmd(under_faketime(&base, &at.format("%Y-%m-%d %H:%M:%S").to_string(), env.path()))
}

/// An unencrypted repository with one type whose database is missing: every run fails at once.
fn failing_config(env: &Env, notify: Value) -> std::path::PathBuf {
    write_config(
        &env.path().join("app"),
        json!({"name": "t", "repository": "repo", "encryption": "none",
               "types": {"db": {"sqlite": "missing.db", "schedule": "daily 03:00"}},
               "notify": notify}),
    )
}

/// A minimal SQLite file at `p`.
fn make_db(p: &Path) {
    let conn = rusqlite::Connection::open(p).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
}

/// The webhook events received, as (event, time).
fn hook_events(sink: &HttpSink) -> Vec<(String, String)> {
    let (_, hook) = split_events(&sink.take());
    hook.iter().map(|h| (h["event"].as_str().unwrap().to_string(), h["time"].as_str().unwrap().to_string())).collect()
}

#[test]
fn cli_cron_every_10_minutes_for_3_days_tells_once_a_day() {
    ensure_package("faketime", || have_program("faketime"));
    let env = Env::new();
    let sink = HttpSink::start();
    let cfg = failing_config(&env, json!({"webhook": sink.url("/hook")}));
    let t0 = chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
    let tick = chrono::Duration::minutes(10);
    // 3 days of a cron line every 10 minutes: 432 runs, each failing.
    let mut at = t0;
    while at < t0 + chrono::Duration::days(3) {
        let r = cairn_at(&env, &cfg, &at, &["backup"]);
        assert_eq!(r.code, 1, "{at}: {}\n{}", r.stdout, r.stderr);
        at += tick;
    }
    let ev = hook_events(&sink);
    let want = [("failure", "2030-01-01T00:00"), ("reminder", "2030-01-02T00:00"), ("reminder", "2030-01-03T00:00")];
    assert_eq!(ev.len(), 3, "1 failure + 2 reminders over 3 days of 432 failing runs: {ev:#?}");
    for ((e, t), (we, wt)) in ev.iter().zip(want) {
        assert!(e == we && t.starts_with(wt), "{ev:#?}");
    }
    // The history has every run; the owner heard of three.
    let h = cairn_at(&env, &cfg, &at, &["--json", "history", "--limit", "1000"]).ok().json();
    assert_eq!(h.as_array().unwrap().len(), 432);
    // Fixed: one recovery, then silence.
    make_db(&env.path().join("app/missing.db"));
    cairn_at(&env, &cfg, &at, &["backup"]).ok();
    cairn_at(&env, &cfg, &(at + tick), &["backup", "--now"]).ok();
    let ev = hook_events(&sink);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert!(ev[0].0 == "recovery" && ev[0].1.starts_with("2030-01-04T00:00"), "{ev:#?}");
}

#[test]
fn cli_reminder_period_and_failing_for_a_duration() {
    // "remind_every": "12h" and "consecutive_failures": "1d" (an escalation once the failure has
    // lasted a day, standing in for the reminder due then), over two days of hourly runs.
    ensure_package("faketime", || have_program("faketime"));
    let env = Env::new();
    let sink = HttpSink::start();
    let cfg = failing_config(
        &env,
        json!({"webhook": sink.url("/hook"), "remind_every": "12h", "consecutive_failures": "1d"}),
    );
    let t0 = chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
    for h in 0..48 {
        cairn_at(&env, &cfg, &(t0 + chrono::Duration::hours(h)), &["backup"]).code(1);
    }
    let ev: Vec<String> = hook_events(&sink).into_iter().map(|(e, _)| e).collect();
    assert_eq!(ev, ["failure", "reminder", "consecutive_failures", "reminder"]);
    let text = env.run_cfg(&cfg, &["config", "check"]).ok().stdout;
    assert!(text.contains("\"consecutive_failures\": \"1d\"") && text.contains("\"remind_every\": \"12h\""), "{text}");
}

#[test]
fn cli_success_notifications_are_opt_in_and_carry_size_and_duration() {
    let env = Env::new();
    let sink = HttpSink::start();
    let cfg = failing_config(&env, json!({"webhook": sink.url("/hook")}));
    make_db(&env.path().join("app/missing.db"));
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    assert!(sink.take().is_empty(), "no success notification by default");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["notify"]["on_success"] = json!(true);
    std::fs::write(&cfg, serde_json::to_vec(&v).unwrap()).unwrap();
    let conn = rusqlite::Connection::open(env.path().join("app/missing.db")).unwrap();
    conn.execute_batch("INSERT INTO t VALUES (2);").unwrap();
    drop(conn);
    env.run_cfg(&cfg, &["backup", "--now"]).ok();
    let (_, hook) = split_events(&sink.take());
    assert_eq!(hook.len(), 1, "{hook:#?}");
    let msg = hook[0]["message"].as_str().unwrap();
    assert_eq!(hook[0]["event"], "success");
    assert!(msg.starts_with("db backup: snapshot ") && msg.contains(" read, ") && msg.contains(" new, "), "{msg}");
    assert!(msg.ends_with('s') && msg.contains("B read"), "size and duration: {msg}");
}

/// One message received by [`SmtpSink`].
#[derive(Clone, Debug, Default)]
struct Mail {
    auth: Option<String>,
    from: String,
    to: Vec<String>,
    data: String,
}

/// A tiny SMTP server on 127.0.0.1 (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT) that keeps every
/// message it is given.
struct SmtpSink {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let m = mails.clone();
        // Runs until the test binary exits.
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut w) = s else { continue };
                let mut r = BufReader::new(w.try_clone().unwrap());
                let mut mail = Mail::default();
                let _ = w.write_all(b"220 sink ESMTP\r\n");
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let cmd = line.trim_end().to_string();
                    let verb = cmd.split(' ').next().unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250-sink\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n",
                        "AUTH" => {
                            mail.auth = cmd.split(' ').nth(2).map(String::from);
                            b"235 2.7.0 accepted\r\n"
                        }
                        "MAIL" => {
                            mail.from = cmd.clone();
                            b"250 ok\r\n"
                        }
                        "RCPT" => {
                            mail.to.push(cmd.clone());
                            b"250 ok\r\n"
                        }
                        "DATA" => {
                            let _ = w.write_all(b"354 go on\r\n");
                            let mut data = String::new();
                            loop {
                                line.clear();
                                if r.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                                    break;
                                }
                                data.push_str(&line);
                            }
                            mail.data = data;
                            m.lock().unwrap().push(std::mem::take(&mut mail));
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n");
                            break;
                        }
                        "RSET" | "NOOP" => b"250 ok\r\n",
                        _ => b"502 not implemented\r\n",
                    };
                    let _ = w.write_all(reply);
                }
            }
        });
        SmtpSink { port, mails }
    }
    fn take(&self) -> Vec<Mail> {
        std::mem::take(&mut *self.mails.lock().unwrap())
    }
}

#[test]
fn cli_email_over_smtp_and_notify_test_says_which_channel_worked() {
    let env = Env::new();
    let smtp = SmtpSink::start();
    let sink = HttpSink::start();
    std::fs::create_dir_all(env.path().join("app")).unwrap();
    std::fs::write(env.path().join("app/smtp-password"), "s3cret pass\n").unwrap();
    let email = json!({"to": "owner@example.org", "from": "cairn@example.org",
                       "smtp": {"host": "127.0.0.1", "port": smtp.port, "tls": "none",
                                "username": "cairn", "password_file": "smtp-password"}});
    let cfg = failing_config(&env, json!({"webhook": sink.url("/hook"), "email": email}));
    let r = env.run_cfg(&cfg, &["notify", "--test"]).ok();
    assert!(r.stdout.contains("webhook: ok") && r.stdout.contains("email: ok"), "{}", r.stdout);
    let mails = smtp.take();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    // The password from the file, in AUTH PLAIN ("\0cairn\0s3cret pass").
    assert_eq!(mails[0].auth.as_deref(), Some("AGNhaXJuAHMzY3JldCBwYXNz"), "{mails:#?}");
    assert!(mails[0].from.contains("<cairn@example.org>") && mails[0].to[0].contains("<owner@example.org>"));
    assert!(mails[0].data.contains("Subject: cairn on ") && mails[0].data.contains("test notification"), "{mails:#?}");
    assert_eq!(split_events(&sink.take()).1[0]["event"], "test");

    // A failing backup: the failure by email, once.
    env.run_cfg(&cfg, &["backup"]).code(1);
    env.run_cfg(&cfg, &["backup"]).code(1);
    let mails = smtp.take();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(mails[0].data.contains("db backup FAILED") && mails[0].data.contains("missing.db"), "{mails:#?}");

    // The password from the environment; a dead webhook: notify --test says which failed, exit 1.
    let mut v: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["notify"]["email"]["smtp"]["password_file"] = Value::Null;
    v["notify"]["email"]["smtp"].as_object_mut().unwrap().remove("password_file");
    v["notify"]["email"]["smtp"]["password_env"] = json!("SMTP_PASS");
    v["notify"]["webhook"] = json!(format!("http://127.0.0.1:{}/hook", closed_port()));
    std::fs::write(&cfg, serde_json::to_vec(&v).unwrap()).unwrap();
    let mut c = env.cfg_cmd(&cfg, &["notify", "--test"]);
    c.env("SMTP_PASS", "s3cret pass");
    let r = env.run_cmd(c).code(1);
    assert!(r.stdout.contains("webhook: FAILED") && r.stdout.contains("email: ok"), "{}", r.stdout);
    assert!(r.stderr.contains("1 of 2 notification channels failed"), "{}", r.stderr);
    assert_eq!(smtp.take()[0].auth.as_deref(), Some("AGNhaXJuAHMzY3JldCBwYXNz"));
    // Without the variable: the email channel fails and says why.
    let r = env.run_cfg(&cfg, &["notify", "--test"]).code(1);
    assert!(r.stdout.contains("email: FAILED: password_env: $SMTP_PASS is not set"), "{}", r.stdout);
}

#[test]
fn smtp_settings_are_checked_at_load() {
    let env = Env::new();
    for (smtp, why) in [
        (json!({"host": "mail.example.org", "username": "u"}), "\"username\" needs \"password_file\""),
        (json!({"host": "h", "password_env": "X", "password_file": "f", "username": "u"}), "not both"),
        (json!({"host": "h", "password": "secret"}), "unknown field `password`"),
    ] {
        let cfg = failing_config(&env, json!({"email": {"to": "a@b.c", "smtp": smtp}}));
        let r = env.run_cfg(&cfg, &["config", "check"]).code(1);
        assert!(r.stderr.contains("cairn.json: notify.email") && r.stderr.contains(why), "{}", r.stderr);
    }
}
