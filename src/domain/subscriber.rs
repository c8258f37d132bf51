//! Subscribers: how each is reached, what it wants, and its signing secrets.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{EventType, OrderId, SigningSecret, SlackTarget, SubscriberId, UnknownVariant};

/// How a subscriber is reached. Stored as JSON so new channel kinds need no schema change.
/// Values are validated by the admin API before they get here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Channel {
    Webhook {
        /// Parsed when the subscriber is loaded, not at every send.
        url: url::Url,
    },
    Email {
        to: Vec<String>,
        /// Events of one order within this window go out as one e-mail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest_seconds: Option<u32>,
    },
    Slack {
        target: SlackTarget,
    },
}

/// Whether delivering a shopper's chat message to a subscriber marks the order's messages read
/// upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MarkReadPolicy {
    /// Reading is a human act: the bridge never marks anything read by itself.
    #[default]
    Never,
    /// A successful delivery of a shopper's message marks the order's messages read.
    OnDelivery,
}

impl MarkReadPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            MarkReadPolicy::Never => "never",
            MarkReadPolicy::OnDelivery => "on_delivery",
        }
    }

    pub fn from_stored(s: &str) -> Result<Self, UnknownVariant> {
        Ok(match s {
            "never" => MarkReadPolicy::Never,
            "on_delivery" => MarkReadPolicy::OnDelivery,
            other => return Err(UnknownVariant::new("mark_read policy", other)),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriberStatus {
    Active,
    Disabled,
}

impl SubscriberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriberStatus::Active => "active",
            SubscriberStatus::Disabled => "disabled",
        }
    }

    pub fn from_stored(s: &str) -> Result<Self, UnknownVariant> {
        match s {
            "active" => Ok(SubscriberStatus::Active),
            "disabled" => Ok(SubscriberStatus::Disabled),
            other => Err(UnknownVariant::new("subscriber status", other)),
        }
    }
}

/// Which events a subscriber wants; `None` means all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriberFilter {
    pub event_types: Option<Vec<EventType>>,
    pub order_ids: Option<Vec<OrderId>>,
}

impl SubscriberFilter {
    pub fn matches(&self, event_type: EventType, order_id: &OrderId) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|types| types.contains(&event_type))
            && self
                .order_ids
                .as_ref()
                .is_none_or(|ids| ids.contains(order_id))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredSecret {
    pub secret: SigningSecret,
    pub created_at: DateTime<Utc>,
    /// Set when a rotation retires it: it keeps signing until then.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subscriber {
    pub id: SubscriberId,
    pub channel: Channel,
    pub filter: SubscriberFilter,
    pub description: Option<String>,
    pub status: SubscriberStatus,
    pub disabled_reason: Option<String>,
    pub mark_read: MarkReadPolicy,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Newest first.
    pub secrets: Vec<StoredSecret>,
}

impl Subscriber {
    /// The secrets that sign a delivery made at `now`: the current one and any still in grace.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<SigningSecret> {
        self.secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|at| at > now))
            .map(|s| s.secret.clone())
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct NewSubscriber {
    pub id: SubscriberId,
    pub channel: Channel,
    pub filter: SubscriberFilter,
    pub description: Option<String>,
    pub mark_read: MarkReadPolicy,
    pub secret: SigningSecret,
    pub created_at: DateTime<Utc>,
}

/// A partial update: `None` leaves a field as it is; `Some(None)` clears a filter.
#[derive(Debug, Clone, Default)]
pub struct SubscriberPatch {
    pub channel: Option<Channel>,
    pub event_types: Option<Option<Vec<EventType>>>,
    pub order_ids: Option<Option<Vec<OrderId>>>,
    pub description: Option<Option<String>>,
    pub status: Option<SubscriberStatus>,
    pub mark_read: Option<MarkReadPolicy>,
}
