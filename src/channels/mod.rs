//! Channels: how a delivery reaches a subscriber. One module per channel, each behind
//! [`ChannelSender`]: send one delivery, classify the outcome. Retry timing is the dispatcher's.

pub mod email;
mod http;
pub mod slack;
pub mod webhook;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

use crate::config::Settings;
use crate::domain::{Channel, ClaimedDelivery};
use crate::templates::Templates;

/// What one attempt to send a delivery ended in. `status` and `excerpt` (the start of the
/// response body) go to the attempt log; so does `error`, which must never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Delivered {
        status: Option<u16>,
        excerpt: Option<String>,
        /// The reference of the conversation thread this send started (a Slack message's
        /// `ts`), for the dispatcher to keep: the order's next messages reply in it.
        thread_started: Option<String>,
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

/// How a channel keeps an order's messages to one subscriber in one conversation thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Threading {
    /// No threads (webhooks, Slack incoming webhooks).
    None,
    /// A new thread's reference is this first message's own (an e-mail's Message-ID): it is
    /// kept before sending, so messages sent at once agree on the thread's root.
    StartsWith(String),
    /// A new thread's reference comes back from the send (a Slack message's `ts`).
    FromSend,
}

/// Pure send-and-classify: a channel reads nothing and writes nothing but its receiver. Whatever
/// it needs from the store (the order's thread) comes with the call; whatever the store should
/// keep comes back in the outcome.
#[async_trait]
pub trait ChannelSender: Send + Sync {
    /// How `deliveries` (one subscriber's, one order's) are threaded.
    fn threading(&self, _deliveries: &[ClaimedDelivery]) -> Threading {
        Threading::None
    }

    /// Sends one attempt of `deliveries`, made at `now`: all to one subscriber, as one message
    /// (several only where the channel groups them, as an e-mail digest does), in `thread` when
    /// the order has one. The outcome applies to each.
    async fn send(
        &self,
        deliveries: &[ClaimedDelivery],
        thread: Option<&str>,
        now: DateTime<Utc>,
    ) -> SendOutcome;
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
    /// `templates` render what people read.
    pub fn new(settings: &Settings, templates: Templates) -> Result<Self, ChannelError> {
        let webhook =
            webhook::WebhookSender::new(&settings.delivery).map_err(ChannelError::WebhookClient)?;
        let email = match settings.email.smtp_url {
            Some(_) => Some(email::EmailSender::new(&settings.email, templates.clone())?),
            None => None,
        };
        let slack = slack::SlackSender::new(webhook.clone(), &settings.slack, templates)
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

impl Channels {
    /// The sender of `deliveries`' subscriber's channel; `None` for e-mail when it is not
    /// configured.
    fn sender(&self, deliveries: &[ClaimedDelivery]) -> Option<&dyn ChannelSender> {
        let first = deliveries.first()?;
        match &first.subscriber.channel {
            Channel::Webhook { .. } => Some(&self.webhook),
            Channel::Slack { .. } => Some(&self.slack),
            Channel::Email { .. } => self.email.as_ref().map(|email| email as &dyn ChannelSender),
        }
    }
}

#[async_trait]
impl ChannelSender for Channels {
    fn threading(&self, deliveries: &[ClaimedDelivery]) -> Threading {
        self.sender(deliveries)
            .map_or(Threading::None, |sender| sender.threading(deliveries))
    }

    async fn send(
        &self,
        deliveries: &[ClaimedDelivery],
        thread: Option<&str>,
        now: DateTime<Utc>,
    ) -> SendOutcome {
        match self.sender(deliveries) {
            Some(sender) => sender.send(deliveries, thread, now).await,
            None if deliveries.is_empty() => SendOutcome::Delivered {
                status: None,
                excerpt: None,
                thread_started: None,
            },
            None => SendOutcome::Permanent {
                status: None,
                excerpt: None,
                error: Some("e-mail is not configured: set email.smtp_url".to_owned()),
                disable_subscriber: None,
            },
        }
    }
}
