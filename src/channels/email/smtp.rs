//! The SMTP side: one pooled transport built from the settings, and what a server's answer means
//! for the delivery.

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::response::{Code, Response};
use lettre::transport::smtp::{Error as SmtpError, PoolConfig};
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use secrecy::ExposeSecret;
use std::error::Error as _;
use url::Host;

use super::EmailError;
use crate::channels::SendOutcome;
use crate::config::{EmailSettings, SmtpTls};

pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// The transport for `settings` (validated, `smtp_url` set). Connections open lazily and are
/// pooled, so building it needs no server.
pub fn transport(settings: &EmailSettings) -> Result<Transport, EmailError> {
    let url = settings
        .smtp_url
        .as_ref()
        .ok_or(EmailError::NotConfigured)?;
    // Unbracketed, as a socket address and a TLS server name want an IPv6 host.
    let host = match url.host() {
        Some(Host::Domain(domain)) => domain.to_owned(),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(EmailError::NotConfigured),
    };
    let mode = settings.tls_mode();
    let tls = match mode {
        SmtpTls::None => Tls::None,
        SmtpTls::Starttls => {
            Tls::Required(TlsParameters::new(host.clone()).map_err(EmailError::Tls)?)
        }
        SmtpTls::Tls => Tls::Wrapper(TlsParameters::new(host.clone()).map_err(EmailError::Tls)?),
    };
    let port = url.port().unwrap_or(match mode {
        SmtpTls::None => 25,
        SmtpTls::Starttls => 587,
        SmtpTls::Tls => 465,
    });
    let mut builder = Transport::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(settings.timeout))
        .pool_config(PoolConfig::new());
    if let (Some(username), Some(password)) = (&settings.username, &settings.password) {
        builder = builder.credentials(Credentials::new(
            username.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    Ok(builder.build())
}

fn code_number(code: Code) -> u16 {
    u16::from(code.severity as u8) * 100
        + u16::from(code.category as u8) * 10
        + u16::from(code.detail as u8)
}

/// The server accepted the message: its reply goes to the attempt log.
pub fn delivered(response: &Response) -> SendOutcome {
    let text: Vec<&str> = response.message().collect();
    SendOutcome::Delivered {
        status: Some(code_number(response.code())),
        excerpt: Some(text.join(" ")).filter(|t| !t.is_empty()),
        thread_started: None,
    }
}

/// 5xx replies are permanent (a bad recipient stays bad); 4xx replies and connection trouble are
/// worth retrying. The server's reply is kept as the excerpt and in the error text. Nothing here
/// can hold the password: lettre's errors carry the server's replies and I/O causes only.
pub fn failed(error: &SmtpError) -> SendOutcome {
    let status = error.status().map(code_number);
    // For a negative reply, the source is the server's text.
    let excerpt = status.and(error.source()).map(ToString::to_string);
    let mut text = format!("SMTP: {error}");
    if status.is_none() {
        let mut source = error.source();
        // The first source is already in lettre's Display.
        source = source.and_then(|s| s.source());
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
    }
    if error.is_permanent() {
        SendOutcome::Permanent {
            status,
            excerpt,
            error: Some(text),
            disable_subscriber: None,
        }
    } else {
        SendOutcome::Retry {
            after: None,
            status,
            excerpt,
            error: Some(text),
        }
    }
}
