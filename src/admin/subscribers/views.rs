//! What the subscriber routes take and return.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::domain::{Channel, MarkReadPolicy, SlackTarget, Subscriber, SubscriberStatus};
use crate::domain::{EventType, OrderId, SigningSecret, SubscriberId};

/// Longest accepted filter list and description.

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscriberRequest {
    /// How the subscriber is reached: `webhook`, `slack` or `email`.
    #[schema(example = "webhook")]
    pub kind: String,
    /// Required for `webhook`: an http(s) URL.
    #[schema(example = "https://hooks.example.com/instacart")]
    pub url: Option<String>,
    /// `slack` with an incoming webhook: its URL (https). A credential: shown masked.
    #[schema(value_type = Option<String>, example = "https://hooks.slack.com/services/T000/B000/XXXX")]
    pub webhook_url: Option<SecretString>,
    /// `slack` through the Web API: a bot token (`xoxb-...`), with `channel`. A credential:
    /// shown masked. With a bot token, each order gets its own thread.
    #[schema(value_type = Option<String>, example = "xoxb-1234-5678-abcd")]
    pub bot_token: Option<SecretString>,
    /// `slack` with `bot_token`: the channel ID (or `#name`) to post in.
    #[schema(example = "C0123ABCD")]
    pub channel: Option<String>,
    /// Required for `email`: the recipients' addresses.
    #[schema(example = json!(["staff@store.example"]))]
    pub to: Option<Vec<String>>,
    /// `email` only: events of one order within this many seconds go out as one e-mail.
    #[schema(example = 300)]
    pub digest_seconds: Option<u32>,
    /// Only these event types; leave out (or null) for every type.
    #[schema(example = json!(["chat_message.created"]))]
    pub event_types: Option<Vec<String>>,
    /// Only events of these orders; leave out (or null) for every order.
    pub order_ids: Option<Vec<String>>,
    pub description: Option<String>,
    /// `never` (the default: reading is a human act) or `on_delivery`: delivering a shopper's
    /// chat message to this subscriber marks the order's messages read at Connect.
    #[schema(example = "never")]
    pub mark_read: Option<String>,
}

/// A partial update: absent fields stay as they are; `null` clears a filter or the description.
/// A subscriber keeps its kind: only its own kind's target fields may change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscriberRequest {
    pub url: Option<String>,
    /// `slack`: switches to this incoming webhook.
    #[schema(value_type = Option<String>)]
    pub webhook_url: Option<SecretString>,
    /// `slack`: a new bot token (`channel` is kept unless given too).
    #[schema(value_type = Option<String>)]
    pub bot_token: Option<SecretString>,
    /// `slack`: a new channel for the bot (the token is kept unless given too).
    pub channel: Option<String>,
    /// `email`: replaces the recipients.
    pub to: Option<Vec<String>>,
    /// `email`; `null` sends one e-mail per event again.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>, nullable)]
    pub digest_seconds: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>, nullable)]
    pub event_types: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>, nullable)]
    pub order_ids: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable)]
    pub description: Option<Option<String>>,
    /// `active` or `disabled`; setting `active` re-enables a subscriber a receiver's 410 disabled.
    #[schema(example = "active")]
    pub status: Option<String>,
    /// `never` or `on_delivery`.
    #[schema(example = "on_delivery")]
    pub mark_read: Option<String>,
}

/// Tells `"field": null` (`Some(None)`) from an absent field (`None`, through `default`).
fn nullable<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChannelView {
    Webhook {
        url: String,
    },
    Email {
        to: Vec<String>,
        digest_seconds: Option<u32>,
    },
    /// Slack credentials are secrets: only their last characters are shown.
    Slack {
        webhook_url: Option<String>,
        bot_token: Option<String>,
        channel: Option<String>,
    },
}

impl From<Channel> for ChannelView {
    fn from(channel: Channel) -> Self {
        match channel {
            Channel::Webhook { url } => ChannelView::Webhook { url: url.into() },
            Channel::Email { to, digest_seconds } => ChannelView::Email { to, digest_seconds },
            Channel::Slack {
                target: SlackTarget::IncomingWebhook { webhook_url },
            } => ChannelView::Slack {
                webhook_url: Some(mask(&webhook_url)),
                bot_token: None,
                channel: None,
            },
            Channel::Slack {
                target: SlackTarget::Bot { bot_token, channel },
            } => ChannelView::Slack {
                webhook_url: None,
                bot_token: Some(mask(&bot_token)),
                channel: Some(channel),
            },
        }
    }
}

/// `****` and the last four characters: enough to tell two credentials apart.
fn mask(secret: &str) -> String {
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("****{tail}")
}

/// A secret that currently signs deliveries; its value is never shown here.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretInfo {
    pub created_at: DateTime<Utc>,
    /// Set on a rotated-out secret: it signs beside the new one until then.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriberView {
    #[schema(value_type = String, example = "sub_0192f0c1a8e47d3b9a6f2c5e8d1b4a70")]
    pub id: SubscriberId,
    #[serde(flatten)]
    pub channel: ChannelView,
    /// `null`: every event type.
    pub event_types: Option<Vec<EventType>>,
    /// `null`: every order.
    #[schema(value_type = Option<Vec<String>>)]
    pub order_ids: Option<Vec<OrderId>>,
    pub description: Option<String>,
    pub status: SubscriberStatus,
    /// Why it was disabled, e.g. its receiver answered 410 Gone.
    pub disabled_reason: Option<String>,
    /// Whether delivering a shopper's message to it marks the order's messages read.
    pub mark_read: MarkReadPolicy,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The secrets signing its deliveries now, newest first: two during a rotation's grace.
    /// Webhooks only (left out for other kinds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_secrets: Vec<SecretInfo>,
}

/// Whether the subscriber's deliveries are signed, so it has secrets to show and rotate.
pub(super) fn is_signed(channel: &Channel) -> bool {
    matches!(channel, Channel::Webhook { .. })
}

impl SubscriberView {
    pub(super) fn new(subscriber: Subscriber, now: DateTime<Utc>) -> Self {
        let signed = is_signed(&subscriber.channel);
        let signing_secrets = subscriber
            .secrets
            .iter()
            .filter(|s| signed && s.expires_at.is_none_or(|at| at > now))
            .map(|s| SecretInfo {
                created_at: s.created_at,
                expires_at: s.expires_at,
            })
            .collect();
        Self {
            id: subscriber.id,
            channel: subscriber.channel.into(),
            event_types: subscriber.filter.event_types,
            order_ids: subscriber.filter.order_ids,
            description: subscriber.description,
            status: subscriber.status,
            disabled_reason: subscriber.disabled_reason,
            mark_read: subscriber.mark_read,
            created_at: subscriber.created_at,
            updated_at: subscriber.updated_at,
            signing_secrets,
        }
    }
}

/// A subscriber with its newest secret: only returned on creation and rotation. `Debug` redacts
/// the secret.
#[derive(Serialize, ToSchema)]
pub struct SubscriberWithSecret {
    #[serde(flatten)]
    pub subscriber: SubscriberView,
    /// Verifies the `webhook-signature` header (Standard Webhooks). Shown only this once.
    /// Webhooks only (left out for other kinds).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: Option<String>,
}

impl std::fmt::Debug for SubscriberWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberWithSecret")
            .field("subscriber", &self.subscriber)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl SubscriberWithSecret {
    pub(super) fn new(subscriber: Subscriber, secret: &SigningSecret, now: DateTime<Utc>) -> Self {
        let secret = is_signed(&subscriber.channel).then(|| secret.expose().to_owned());
        Self {
            subscriber: SubscriberView::new(subscriber, now),
            secret,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriberList {
    pub data: Vec<SubscriberView>,
}
