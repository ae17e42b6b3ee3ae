//! Email through an SMTP server (lettre's blocking transport over rustls): for the many small
//! servers that have no sendmail.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};

use crate::lifecycle::config::{EmailConfig, SmtpConfig, SmtpTls};

/// The SMTP password: the first line of `password_file`, or `password_env`'s value.
fn password(smtp: &SmtpConfig) -> Result<String, String> {
    if let Some(p) = &smtp.password_file {
        let text = std::fs::read_to_string(p).map_err(|e| format!("password_file {}: {e}", p.display()))?;
        return Ok(text.lines().next().unwrap_or_default().to_string());
    }
    if let Some(var) = &smtp.password_env {
        return std::env::var(var).map_err(|_| format!("password_env: ${var} is not set"));
    }
    Err("no password_file or password_env".into())
}

/// Sends one plain-text message.
pub(super) fn smtp(
    mail: &EmailConfig,
    smtp: &SmtpConfig,
    from: &str,
    subject: &str,
    text: String,
) -> Result<(), String> {
    let server = format!("smtp://{}:{}", smtp.host, smtp.port());
    let msg = Message::builder()
        .from(from.parse().map_err(|e| format!("from {from:?}: {e}"))?)
        .to(mail.to.parse().map_err(|e| format!("to {:?}: {e}", mail.to))?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(text)
        .map_err(|e| e.to_string())?;
    let builder = match smtp.tls {
        SmtpTls::Starttls => SmtpTransport::starttls_relay(&smtp.host),
        SmtpTls::Tls => SmtpTransport::relay(&smtp.host),
        SmtpTls::None => Ok(SmtpTransport::builder_dangerous(&smtp.host)),
    }
    .map_err(|e| format!("{server}: {e}"))?;
    let mut builder = builder.port(smtp.port()).timeout(Some(Duration::from_secs(30)));
    if let Some(user) = &smtp.username {
        builder = builder.credentials(Credentials::new(user.clone(), password(smtp)?));
    }
    builder.build().send(&msg).map(|_| ()).map_err(|e| format!("{server}: {e}"))
}
