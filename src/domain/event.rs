use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

use chrono::{DateTime, Utc};

use super::{OrderId, SubscriberId, ValidationError};

/// The kinds of event the bridge emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    #[serde(rename = "chat_message.created")]
    ChatMessageCreated,
    #[serde(rename = "lifecycle_message.created")]
    LifecycleMessageCreated,
    #[serde(rename = "chat_message.read")]
    ChatMessageRead,
    #[serde(rename = "order.chat_expired")]
    OrderChatExpired,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::ChatMessageCreated,
        EventType::LifecycleMessageCreated,
        EventType::ChatMessageRead,
        EventType::OrderChatExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ChatMessageCreated => "chat_message.created",
            EventType::LifecycleMessageCreated => "lifecycle_message.created",
            EventType::ChatMessageRead => "chat_message.read",
            EventType::OrderChatExpired => "order.chat_expired",
        }
    }

    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == value)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|t| t.as_str()).collect();
                ValidationError::new(field, format!("must be one of {}", known.join(", ")))
            })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event id derived from what the event is about, so the same upstream fact always yields the
/// same id: across retries, restarts and re-polls. Receivers use it as their idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// `subject` is the upstream id the event is about (message or notification id); `None` for
    /// order-level events.
    pub fn derive(event_type: EventType, order_id: &OrderId, subject: Option<i64>) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(event_type.as_str());
        hasher.update([0]);
        hasher.update(order_id.as_str());
        hasher.update([0]);
        if let Some(subject) = subject {
            hasher.update(subject.to_string());
        }
        let digest = hasher.finalize();
        Self(format!("evt_{}", hex::encode(&digest[..16])))
    }

    /// Wraps an id read back from the store.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event ready to be stored: its payload is the exact webhook body, serialized once.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: EventId,
    pub order_id: OrderId,
    pub event_type: EventType,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    /// Subscribers that get no delivery of it although their filter matches: the event only
    /// echoes what they did themselves.
    pub exclude_subscribers: Vec<SubscriberId>,
}

impl NewEvent {
    /// An event for every matching subscriber.
    pub fn new(
        id: EventId,
        order_id: OrderId,
        event_type: EventType,
        payload: String,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            order_id,
            event_type,
            payload,
            created_at,
            exclude_subscribers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_and_dotless() {
        let order = OrderId::parse("order_id", "122233").unwrap();
        let a = EventId::derive(EventType::ChatMessageCreated, &order, Some(123456789));
        let b = EventId::derive(EventType::ChatMessageCreated, &order, Some(123456789));
        let read = EventId::derive(EventType::ChatMessageRead, &order, Some(123456789));
        assert_eq!(a, b);
        assert_ne!(a, read);
        assert!(!a.as_str().contains('.'));
    }

    #[test]
    fn event_type_parse_names_the_choices() {
        let err = EventType::parse("event_types[0]", "chat.created").unwrap_err();
        assert!(err.rule.contains("chat_message.created"));
        assert_eq!(
            EventType::parse("t", "order.chat_expired").unwrap(),
            EventType::OrderChatExpired
        );
    }
}
