//! Channels: how a delivery reaches a subscriber. One module per channel, each behind
//! [`ChannelSender`]: send one delivery, classify the outcome. Retry timing is the dispatcher's.

pub mod email;
mod http;
pub mod slack;
pub mod webhook;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::domain::{Channel, ClaimedDelivery};
use crate::store::Store;
use crate::templates::Templates;

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
    #[error("`slack.api_base_url` cannot locate the Web API's methods")]
    SlackApiUrl(#[source] url::ParseError),
    #[error("cannot set up e-mail")]
    Email(#[from] email::EmailError),
}

/// Every channel's sender, built once per process; routes a delivery by its subscriber's channel.
#[derive(Debug, Clone)]
pub struct Channels {
    webhook: webhook::WebhookSender,
    slack: slack::SlackSender,
    /// Only when `email.smtp_url` is configured.
    email: Option<email::EmailSender>,
}

impl Channels {
    /// `templates` render what people read; `store` keeps the conversation threads (Slack
    /// `thread_ts`, e-mail Message-IDs) the channels start.
    pub fn new(
        settings: &Settings,
        templates: Templates,
        store: Arc<dyn Store>,
    ) -> Result<Self, ChannelError> {
        let webhook =
            webhook::WebhookSender::new(&settings.delivery).map_err(ChannelError::WebhookClient)?;
        let email = match settings.email.smtp_url {
            Some(_) => Some(email::EmailSender::new(
                &settings.email,
                templates.clone(),
                store.clone(),
            )?),
            None => None,
        };
        let slack = slack::SlackSender::new(webhook.clone(), &settings.slack, templates, store)
            .map_err(ChannelError::SlackApiUrl)?;
        Ok(Self {
            webhook,
            slack,
            email,
        })
    }

    /// Slack's Web API and response URLs, through the deliveries' pooled client.
    pub fn slack_api(&self) -> slack::SlackApi {
        self.slack.api().clone()
    }

    /// The least time between two sends to one subscriber on `channel`, where the channel
    /// limits the rate (the dispatcher holds back what comes sooner).
    pub fn send_interval(&self, channel: &Channel) -> Option<Duration> {
        match channel {
            Channel::Slack { .. } => Some(self.slack.interval()),
            Channel::Webhook { .. } | Channel::Email { .. } => None,
        }
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
            Channel::Slack { .. } => self.slack.send(deliveries, now).await,
            Channel::Email { .. } => match &self.email {
                Some(email) => email.send(deliveries, now).await,
                None => SendOutcome::Permanent {
                    status: None,
                    excerpt: None,
                    error: Some("e-mail is not configured: set email.smtp_url".to_owned()),
                    disable_subscriber: None,
                },
            },
        }
    }
}
