//! Channels: how a delivery reaches a subscriber. One module per channel, each behind
//! [`ChannelSender`]: send one delivery, classify the outcome. Retry timing is the dispatcher's.

pub mod email;
mod http;
pub mod webhook;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

use crate::config::DeliverySettings;
use crate::store::{Channel, ClaimedDelivery};

/// What one attempt to send a delivery ended in. `status` and `excerpt` (the start of the
/// response body) go to the attempt log; so does `error`, which must never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Delivered {
        status: Option<u16>,
        excerpt: Option<String>,
    },
    /// Worth trying again; `after` is what the receiver asked for (`Retry-After`), if anything.
    Retry {
        after: Option<Duration>,
        status: Option<u16>,
        excerpt: Option<String>,
        error: Option<String>,
    },
    /// No point retrying. `disable_subscriber` carries the reason when the receiver asked to be
    /// switched off.
    Permanent {
        status: Option<u16>,
        excerpt: Option<String>,
        error: Option<String>,
        disable_subscriber: Option<String>,
    },
}

#[async_trait]
pub trait ChannelSender: Send + Sync {
    /// Sends one attempt of `deliveries`, made at `now`: all to one subscriber, as one message
    /// (several only where the channel groups them, as an e-mail digest does). The outcome
    /// applies to each.
    async fn send(&self, deliveries: &[ClaimedDelivery], now: DateTime<Utc>) -> SendOutcome;
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("cannot build the webhook HTTP client")]
    WebhookClient(#[source] reqwest::Error),
    #[error("cannot set up e-mail")]
    Email(#[from] email::EmailError),
}

/// Every channel's sender, built once per process; routes a delivery by its subscriber's channel.
#[derive(Debug, Clone)]
pub struct Channels {
    webhook: webhook::WebhookSender,
    /// Only when `email.smtp_url` is configured.
    email: Option<email::EmailSender>,
}

impl Channels {
    pub fn new(settings: &DeliverySettings) -> Result<Self, ChannelError> {
        Ok(Self {
            webhook: webhook::WebhookSender::new(settings).map_err(ChannelError::WebhookClient)?,
            email: None,
        })
    }

    /// Sends e-mail subscribers' deliveries through `email`.
    pub fn with_email(mut self, email: email::EmailSender) -> Self {
        self.email = Some(email);
        self
    }
}

#[async_trait]
impl ChannelSender for Channels {
    async fn send(&self, deliveries: &[ClaimedDelivery], now: DateTime<Utc>) -> SendOutcome {
        let Some(first) = deliveries.first() else {
            return SendOutcome::Delivered {
                status: None,
                excerpt: None,
            };
        };
        match &first.subscriber.channel {
            Channel::Webhook { .. } => self.webhook.send(deliveries, now).await,
            Channel::Email { .. } => match &self.email {
                Some(email) => email.send(deliveries, now).await,
                None => SendOutcome::Permanent {
                    status: None,
                    excerpt: None,
                    error: Some("e-mail is not configured: set email.smtp_url".to_owned()),
                    disable_subscriber: None,
                },
            },
            // Placeholder until the Slack channel lands (issue 3): the admin API does not
            // create such subscribers yet.
            Channel::Slack { .. } => SendOutcome::Permanent {
                status: None,
                excerpt: None,
                error: Some("this channel kind is not available in this build".to_owned()),
                disable_subscriber: None,
            },
        }
    }
}
