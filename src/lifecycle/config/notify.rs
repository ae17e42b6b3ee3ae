//! The `notify` section: channels, and how often an ongoing failure is told.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::span::{Span, SpanError};

/// When an ongoing failure is escalated: after N failed runs in a row (`3`, or `"3"`), or once it
/// has been failing for a span (`"1d"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureThreshold {
    /// Failed runs in a row.
    Runs(u32),
    /// Time since the first failed run of the streak.
    For(Span),
}

impl FromStr for FailureThreshold {
    type Err = SpanError;

    fn from_str(s: &str) -> Result<Self, SpanError> {
        match s.trim().parse::<u32>() {
            Ok(0) => Err(SpanError(s.to_string())),
            Ok(n) => Ok(FailureThreshold::Runs(n)),
            Err(_) => s.parse().map(FailureThreshold::For),
        }
    }
}

impl Serialize for FailureThreshold {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FailureThreshold::Runs(n) => s.serialize_u32(*n),
            FailureThreshold::For(d) => d.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for FailureThreshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let bad = |what: String| {
            serde::de::Error::custom(format!("{what} is neither a number of runs (3) nor a duration such as \"1d\""))
        };
        match Raw::deserialize(d).map_err(|_| bad("the value".into()))? {
            Raw::N(n) => match u32::try_from(n) {
                Ok(n) if n > 0 => Ok(FailureThreshold::Runs(n)),
                _ => Err(bad(n.to_string())),
            },
            Raw::S(s) => s.parse().map_err(|_| bad(format!("{s:?}"))),
        }
    }
}

/// How an SMTP connection is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same machine (port 25).
    None,
}

/// An SMTP server. The password comes from a file or an environment variable, never from the
/// configuration or the command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server host name.
    pub host: String,
    /// Port (default 587 for STARTTLS, 465 for TLS, 25 without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Connection security (default "starttls").
    #[serde(default)]
    pub tls: SmtpTls,
    /// Login name; without it no authentication is attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the password (first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

impl SmtpConfig {
    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        })
    }
}

/// Email notification settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Recipient.
    pub to: String,
    /// Sender (default: cairn@hostname).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// sendmail binary (default /usr/sbin/sendmail), when `smtp` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sendmail: Option<PathBuf>,
    /// Send through this SMTP server instead of sendmail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpConfig>,
}

/// Where failures are told, and how often.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// ntfy topic URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntfy: Option<String>,
    /// URL that receives a JSON POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Command run with the event in its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Email through sendmail or SMTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailConfig>,
    /// Escalate an ongoing failure once, after this many runs in a row or this long (default:
    /// never; the first failure is told at once anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<FailureThreshold>,
    /// Least time between reminders of an ongoing failure (default 1d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind_every: Option<Span>,
    /// Also tell every successful backup, with its size and duration (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_success: bool,
    /// Tell when a pre-change snapshot has waited longer than this for `mark-verified` ("7d";
    /// default: never), again each `remind_every` until it is verified or removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_overdue: Option<Span>,
}

impl NotifyConfig {
    /// Checks what serde cannot; errors are (key relative to `notify`, message). `abs` makes
    /// paths absolute.
    pub(super) fn resolve(&mut self, abs: &dyn Fn(&std::path::Path) -> PathBuf) -> Result<(), (String, String)> {
        let Some(email) = &mut self.email else { return Ok(()) };
        let Some(smtp) = &mut email.smtp else { return Ok(()) };
        if email.sendmail.is_some() {
            return Err(("email".into(), "give either \"sendmail\" or \"smtp\", not both".into()));
        }
        if smtp.host.is_empty() {
            return Err(("email.smtp.host".into(), "empty host".into()));
        }
        if smtp.password_file.is_some() && smtp.password_env.is_some() {
            return Err(("email.smtp".into(), "give either \"password_file\" or \"password_env\", not both".into()));
        }
        if smtp.username.is_some() != (smtp.password_file.is_some() || smtp.password_env.is_some()) {
            return Err((
                "email.smtp".into(),
                "\"username\" needs \"password_file\" or \"password_env\" (and they need \"username\")".into(),
            ));
        }
        if let Some(p) = &smtp.password_file {
            smtp.password_file = Some(abs(p));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_as_runs_or_durations() {
        let t = |v: serde_json::Value| serde_json::from_value::<FailureThreshold>(v);
        assert_eq!(t(serde_json::json!(3)).unwrap(), FailureThreshold::Runs(3));
        assert_eq!(t(serde_json::json!("1d")).unwrap(), FailureThreshold::For("1d".parse().unwrap()));
        assert_eq!(serde_json::to_value(t(serde_json::json!("36h")).unwrap()).unwrap(), serde_json::json!("36h"));
        for bad in [serde_json::json!(0), serde_json::json!("soon"), serde_json::json!(true)] {
            let e = t(bad.clone()).unwrap_err().to_string();
            assert!(e.contains("neither a number of runs"), "{bad}: {e}");
        }
    }
}
