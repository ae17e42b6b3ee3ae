//! Notifications: failure, recovery, N consecutive failures, and the dead-man check ("no
//! successful backup of type T in X"). Channels: ntfy, a JSON webhook, a command (event in its
//! environment), email through sendmail. Delivery failures are logged and never fail a backup.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone};
use serde::Serialize;

use crate::lifecycle::config::NotifyConfig;

/// What happened.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// "failure", "recovery", "consecutive_failures", "dead_man".
    pub event: String,
    /// Backup type (or "sync:NAME").
    pub backup_type: String,
    /// Human text.
    pub message: String,
    /// Host.
    pub host: String,
    /// When.
    #[serde(serialize_with = "crate::lifecycle::rfc3339::one")]
    pub time: DateTime<FixedOffset>,
}

impl Event {
    /// A new event that happened at `time`.
    pub fn new<Tz: TimeZone>(event: &str, backup_type: &str, time: DateTime<Tz>, message: String) -> Self {
        Event {
            event: event.into(),
            backup_type: backup_type.into(),
            message,
            host: crate::util::hostname(),
            time: time.fixed_offset(),
        }
    }

    fn title(&self) -> String {
        let what = match self.event.as_str() {
            "failure" => "backup FAILED",
            "recovery" => "backup recovered",
            "consecutive_failures" => "backup failing repeatedly",
            "dead_man" => "backup OVERDUE",
            other => other,
        };
        format!("cairn on {}: {} {what}", self.host, self.backup_type)
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(15)).build()
}

/// Sends `ev` through every configured channel; returns the failures (already logged).
pub fn send(cfg: &NotifyConfig, ev: &Event) -> Vec<String> {
    let mut errors = Vec::new();
    let mut fail = |chan: &str, e: String| {
        tracing::warn!("notification through {chan} failed: {e}");
        errors.push(format!("{chan}: {e}"));
    };
    if let Some(url) = &cfg.ntfy {
        let prio = if ev.event == "recovery" { "default" } else { "high" };
        let r = agent()
            .post(url)
            .set("Title", &ev.title())
            .set("Priority", prio)
            .set("Tags", if ev.event == "recovery" { "white_check_mark" } else { "warning" })
            .send_string(&ev.message);
        if let Err(e) = r {
            fail("ntfy", e.to_string());
        }
    }
    if let Some(url) = &cfg.webhook {
        let body = serde_json::json!({"title": ev.title(), "event": ev.event, "type": ev.backup_type, "message": ev.message, "host": ev.host, "time": ev.time.to_rfc3339()});
        if let Err(e) = agent().post(url).send_json(body) {
            fail("webhook", e.to_string());
        }
    }
    if let Some(cmd) = &cfg.command {
        let r = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("CAIRN_EVENT", &ev.event)
            .env("CAIRN_TYPE", &ev.backup_type)
            .env("CAIRN_MESSAGE", &ev.message)
            .env("CAIRN_TITLE", ev.title())
            .env("CAIRN_HOST", &ev.host)
            .env("CAIRN_TIME", ev.time.to_rfc3339())
            .stdin(Stdio::null())
            .status();
        match r {
            Ok(s) if s.success() => {}
            Ok(s) => fail("command", format!("exited with {s}")),
            Err(e) => fail("command", e.to_string()),
        }
    }
    if let Some(mail) = &cfg.email {
        let sendmail = mail.sendmail.clone().unwrap_or_else(|| "/usr/sbin/sendmail".into());
        let from = mail.from.clone().unwrap_or_else(|| format!("cairn@{}", ev.host));
        let msg = format!(
            "From: {from}\r\nTo: {}\r\nSubject: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n\r\nevent: {}\r\ntype: {}\r\nhost: {}\r\ntime: {}\r\n",
            mail.to,
            ev.title(),
            ev.message,
            ev.event,
            ev.backup_type,
            ev.host,
            ev.time.to_rfc3339()
        );
        let r =
            Command::new(&sendmail).arg("-t").stdin(Stdio::piped()).stdout(Stdio::null()).spawn().and_then(|mut c| {
                c.stdin.take().expect("piped").write_all(msg.as_bytes())?;
                c.wait()
            });
        match r {
            Ok(s) if s.success() => {}
            Ok(s) => fail("email", format!("{} exited with {s}", sendmail.display())),
            Err(e) => fail("email", format!("{}: {e}", sendmail.display())),
        }
    }
    errors
}
