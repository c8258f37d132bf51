//! Validated domain types. Each has private fields and a `parse()` that names the rule it enforces.

mod delivery;
mod email_address;
mod event;
mod ids;
mod message;
mod order;
mod payload;
mod secret;
mod seen;
mod slack_target;
mod subscriber;
mod webhook_url;

pub use delivery::{
    Attempt, AttemptRecord, AttemptResolution, ClaimToken, ClaimedDelivery, Delivery,
    DeliveryStatus,
};
pub use email_address::EmailAddress;
pub use event::{EventId, EventType, NewEvent};
pub use ids::{DeliveryId, OrderId, SubscriberId, UserId};
pub use message::MessageBody;
pub use order::{FallbackReason, Order, OrderCounts, OrderState, PollProgress};
pub use payload::{EventData, EventPayload, EventSubject};
pub use secret::SigningSecret;
pub use seen::SeenState;
pub use slack_target::{SlackTarget, TargetFields};
pub use subscriber::{
    Channel, MarkReadPolicy, NewSubscriber, StoredSecret, Subscriber, SubscriberFilter,
    SubscriberPatch, SubscriberStatus,
};
pub use webhook_url::{is_public_ip, WebhookUrl};

/// A value that failed validation: which field, and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {rule}")]
pub struct ValidationError {
    pub field: String,
    pub rule: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// A stored word that names none of a type's values: the data was written by something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value:?}")]
pub struct UnknownVariant {
    kind: &'static str,
    value: String,
}

impl UnknownVariant {
    pub fn new(kind: &'static str, value: &str) -> Self {
        Self {
            kind,
            value: value.to_owned(),
        }
    }
}
