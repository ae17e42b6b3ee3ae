//! Notifications: failure, reminder, recovery, an optional escalation, optional successes, and
//! the dead-man check ("no successful backup of type T in X"); [`NotifyState`] decides what is
//! told when. Channels: ntfy, a JSON webhook, a command (event in its environment), email through
//! sendmail or SMTP. Delivery failures are logged and never fail a backup.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone};
use serde::Serialize;

use crate::lifecycle::config::{EmailConfig, NotifyConfig};

mod email;
mod state;
pub use state::{legacy_path, NotifyState, Policy, NOTIFY_FILE};

/// What happened.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// "failure", "reminder", "recovery", "consecutive_failures", "dead_man", "remote_behind",
    /// "success", "test", "capacity" (a low file system or remote), "anomaly" (a size far
    /// outside the history).
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
            "reminder" => "backup still FAILING",
            "dead_man" => "backup OVERDUE",
            "remote_behind" => "remote BEHIND its RPO",
            "success" => "backup ok",
            "test" => "test notification",
            "capacity" => "storage LOW",
            "anomaly" => "backup size ANOMALY",
            other => other,
        };
        format!("cairn on {}: {} {what}", self.host, self.backup_type)
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(15)).build()
}

/// Sends the events `state` decided on about `subject`, recording in it each one that reached the
/// owner through at least one channel (one that reached nobody is decided again on the next run);
/// returns the delivery failures.
pub fn deliver(cfg: &NotifyConfig, state: &mut NotifyState, subject: &str, events: Vec<Event>) -> Vec<String> {
    let mut errors = Vec::new();
    for ev in events {
        let results = send_each(cfg, &ev);
        if results.is_empty() || results.iter().any(|(_, r)| r.is_ok()) {
            state.told(subject, &ev);
        }
        errors.extend(results.into_iter().filter_map(|(chan, r)| r.err().map(|e| format!("{chan}: {e}"))));
    }
    errors
}

/// Sends `ev` through every configured channel: each channel's name and result. A failure is
/// not logged here: the caller reports it ("notification not delivered"), once.
pub fn send_each(cfg: &NotifyConfig, ev: &Event) -> Vec<(&'static str, std::result::Result<(), String>)> {
    let mut out = Vec::new();
    let mut done = |chan: &'static str, r: std::result::Result<(), String>| out.push((chan, r));
    let alarm = matches!(
        ev.event.as_str(),
        "failure" | "consecutive_failures" | "dead_man" | "remote_behind" | "capacity" | "anomaly"
    );
    if let Some(url) = &cfg.ntfy {
        let r = agent()
            .post(url)
            .set("Title", &ev.title())
            .set("Priority", if alarm { "high" } else { "default" })
            .set("Tags", if alarm || ev.event == "reminder" { "warning" } else { "white_check_mark" })
            .send_string(&ev.message);
        done("ntfy", r.map(|_| ()).map_err(|e| e.to_string()));
    }
    if let Some(url) = &cfg.webhook {
        let body = serde_json::json!({"title": ev.title(), "event": ev.event, "type": ev.backup_type, "message": ev.message, "host": ev.host, "time": ev.time.to_rfc3339()});
        done("webhook", agent().post(url).send_json(body).map(|_| ()).map_err(|e| e.to_string()));
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
        done(
            "command",
            match r {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(format!("exited with {s}")),
                Err(e) => Err(e.to_string()),
            },
        );
    }
    if let Some(mail) = &cfg.email {
        let from = mail.from.clone().unwrap_or_else(|| format!("cairn@{}", ev.host));
        let text = format!(
            "{}\r\n\r\nevent: {}\r\ntype: {}\r\nhost: {}\r\ntime: {}\r\n",
            ev.message,
            ev.event,
            ev.backup_type,
            ev.host,
            ev.time.to_rfc3339()
        );
        let r = match &mail.smtp {
            Some(smtp) => email::smtp(mail, smtp, &from, &ev.title(), text),
            None => sendmail(mail, &from, &ev.title(), &text),
        };
        done("email", r);
    }
    out
}

fn sendmail(mail: &EmailConfig, from: &str, subject: &str, text: &str) -> std::result::Result<(), String> {
    let sendmail = mail.sendmail.clone().unwrap_or_else(|| "/usr/sbin/sendmail".into());
    let msg = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}",
        mail.to
    );
    let r = Command::new(&sendmail).arg("-t").stdin(Stdio::piped()).stdout(Stdio::null()).spawn().and_then(|mut c| {
        c.stdin.take().expect("piped").write_all(msg.as_bytes())?;
        c.wait()
    });
    match r {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{} exited with {s}", sendmail.display())),
        Err(e) => Err(format!("{}: {e}", sendmail.display())),
    }
}
