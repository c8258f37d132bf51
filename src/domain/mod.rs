//! Validated domain types. Each has private fields and a `parse()` that names the rule it enforces.

mod email_address;
mod event;
mod ids;
mod message;
mod secret;
mod webhook_url;

pub use email_address::EmailAddress;
pub use event::{EventId, EventType};
pub use ids::{DeliveryId, OrderId, SubscriberId, UserId};
pub use message::MessageBody;
pub use secret::SigningSecret;
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
