//! The e-mail channel: one multipart/alternative message (plain text and HTML, rendered from the
//! templates) per event, or per digest of an order's events, through one pooled SMTP transport.
//! Its Message-ID is derived from the events, and an order's mails to a subscriber form one
//! thread: the first one's Message-ID is its root (kept by the dispatcher before the send) and
//! later ones reply to it.

mod message;
mod smtp;

pub use message::message_id;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, Mailboxes};
use lettre::AsyncTransport;
use std::fmt;

use super::{ChannelSender, SendOutcome, Threading};
use crate::config::{parse_mailbox, ConfigError, EmailSettings};
use crate::domain::{Channel, ClaimedDelivery};
use crate::templates::{EventContext, TemplateError, Templates};
use message::{compose, Addressing, Content};

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("e-mail is not configured: email.smtp_url is not set")]
    NotConfigured,
    #[error(transparent)]
    Address(#[from] ConfigError),
    #[error("cannot set up TLS towards the SMTP server")]
    Tls(#[source] lettre::transport::smtp::Error),
}

/// Sends e-mail through the process's one SMTP connection pool.
#[derive(Clone)]
pub struct EmailSender {
    transport: smtp::Transport,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    templates: Templates,
}

// By hand: nothing of the transport (which holds the credentials) is shown.
impl fmt::Debug for EmailSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailSender")
            .field("from", &self.from)
            .field("reply_to", &self.reply_to)
            .finish_non_exhaustive()
    }
}

impl EmailSender {
    /// Builds the sender for validated `settings`.
    pub fn new(settings: &EmailSettings, templates: Templates) -> Result<Self, EmailError> {
        let from = settings.from.as_deref().ok_or(EmailError::NotConfigured)?;
        Ok(Self {
            transport: smtp::transport(settings)?,
            from: parse_mailbox("email.from", from)?,
            reply_to: settings
                .reply_to
                .as_deref()
                .map(|reply_to| parse_mailbox("email.reply_to", reply_to))
                .transpose()?,
            templates,
        })
    }
}

fn permanent(error: impl Into<String>) -> SendOutcome {
    SendOutcome::Permanent {
        status: None,
        excerpt: None,
        error: Some(error.into()),
        disable_subscriber: None,
    }
}

#[async_trait]
impl ChannelSender for EmailSender {
    /// `deliveries` are one subscriber's, of one order (the dispatcher groups a digest so), in
    /// the order their events were detected.
    fn threading(&self, deliveries: &[ClaimedDelivery]) -> Threading {
        Threading::StartsWith(message_id(deliveries.iter().map(|d| &d.event_id)))
    }

    /// `thread` is the order's root Message-ID (this mail's own when it is the first).
    #[tracing::instrument(skip_all, fields(events = deliveries.len(), subscriber_id, order_id))]
    async fn send(
        &self,
        deliveries: &[ClaimedDelivery],
        thread: Option<&str>,
        _now: DateTime<Utc>,
    ) -> SendOutcome {
        let Some(first) = deliveries.first() else {
            return permanent("nothing to send");
        };
        let (subscriber, order_id) = (&first.subscriber, &first.order_id);
        let span = tracing::Span::current();
        span.record("subscriber_id", tracing::field::display(&subscriber.id));
        span.record("order_id", tracing::field::display(order_id));
        if deliveries
            .iter()
            .any(|d| d.subscriber.id != subscriber.id || &d.order_id != order_id)
        {
            return permanent("one e-mail carries events of one order to one subscriber");
        }
        let Channel::Email { to, .. } = &subscriber.channel else {
            return permanent("not an e-mail subscriber");
        };
        let to: Mailboxes = match to.iter().map(|a| a.parse::<Mailbox>()).collect() {
            Ok(to) => to,
            Err(_) => return permanent("a stored recipient is not a valid e-mail address"),
        };

        let content = match self.render(deliveries) {
            Ok(content) => content,
            Err(error) => return permanent(format!("cannot render the e-mail: {error}")),
        };
        let message_id = message_id(deliveries.iter().map(|d| &d.event_id));
        let addressing = Addressing {
            from: &self.from,
            reply_to: self.reply_to.as_ref(),
            to,
        };
        let thread_root = thread.filter(|root| *root != message_id);
        let message = match compose(addressing, content, &message_id, thread_root) {
            Ok(message) => message,
            Err(error) => return permanent(format!("cannot build the e-mail: {error}")),
        };
        match self.transport.send(message).await {
            Ok(response) => smtp::delivered(&response),
            Err(error) => smtp::failed(&error),
        }
    }
}

impl EmailSender {
    /// One event's mail, or a digest listing several.
    fn render(&self, deliveries: &[ClaimedDelivery]) -> Result<Content, TemplateError> {
        let contexts = deliveries
            .iter()
            .map(EventContext::from_delivery)
            .collect::<Result<Vec<_>, _>>()?;
        let rendered = match contexts.as_slice() {
            [single] => self.templates.email(single)?,
            many => self.templates.email_digest(many)?,
        };
        Ok(Content {
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        })
    }
}
