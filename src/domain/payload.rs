//! An event's body, defined once: the differ builds it and serializes it once (the exact bytes
//! every webhook is signed over), the store keeps that JSON, and templates and the dispatcher
//! read it back as this type, through its accessors.

use serde::{Deserialize, Serialize};

use super::{EventType, OrderId};
use crate::instacart::models::{ChatMessage, ChatUser, LifecycleMessage, ParticipantType};

/// `{"type","timestamp","data"}`, as Standard Webhooks suggests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPayload {
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When the bridge detected it (RFC 3339, milliseconds, UTC).
    pub timestamp: String,
    pub data: EventData,
}

/// What every event carries: the order, what the event is about, and the order's people as
/// the Connect metadata names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    pub order_id: OrderId,
    #[serde(flatten)]
    pub subject: EventSubject,
    pub customer: ChatUser,
    #[serde(default)]
    pub current_shopper: Option<ChatUser>,
}

/// The part of `data` that depends on the event type. Untagged: the body's `type` says which,
/// and a body lacking its part reads as [`EventSubject::Order`] (readers check it against the
/// type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventSubject {
    /// `chat_message.created`, `chat_message.read`.
    Chat {
        message: ChatMessage,
        /// The sender's display name and avatar, when the metadata knows them.
        #[serde(default)]
        sender: Option<ChatUser>,
        /// Sent through the bridge on the retailer's behalf (upstream shows it as the
        /// customer's).
        #[serde(default)]
        sent_by_retailer: bool,
    },
    /// `lifecycle_message.created`.
    Lifecycle { notification: LifecycleMessage },
    /// `order.chat_expired`: about the order alone.
    Order {},
}

impl EventPayload {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The bytes stored, and signed for every subscriber.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("event payloads always serialize")
    }

    pub fn chat_message(&self) -> Option<&ChatMessage> {
        match &self.data.subject {
            EventSubject::Chat { message, .. } => Some(message),
            _ => None,
        }
    }

    /// Whether it is about a message the shopper sent (only those are marked read upstream).
    pub fn sent_by_shopper(&self) -> bool {
        self.chat_message()
            .is_some_and(|message| message.sender_type == ParticipantType::Driver)
    }
}
