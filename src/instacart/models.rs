//! The Instacart Connect post-checkout payloads, field for field as the reference pages
//! (`shared/seeds/`) document them. Optional fields may be absent or null; unknown fields are
//! ignored. Absent optionals are not serialized, so the simulator reproduces the seeds exactly.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Who sent or received a chat message: the customer (`user`) or the shopper (`driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantType {
    User,
    Driver,
}

/// `OrderChatMessage` (order_messages) and `Message` (chat messages): the same fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub id: i64,
    pub order_id: i64,
    pub created_at: DateTime<Utc>,
    pub recipient_id: i64,
    pub recipient_type: ParticipantType,
    pub sender_id: i64,
    pub sender_type: ParticipantType,
    pub read: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<DateTime<Utc>>,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// An automated order notification (`LifecycleMessage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleMessage {
    pub notification_id: i64,
    /// sms, push, email, call, in_app_message, ... (an open set upstream).
    pub medium: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_from: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: DateTime<Utc>,
    pub delivered_at: DateTime<Utc>,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// `ChatUser` / `OrderMessageUser`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatUser {
    pub id: i64,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// `OrderMessagesMetadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderMessagesMetadata {
    pub customer: ChatUser,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_shopper: Option<ChatUser>,
    #[serde(default)]
    pub shoppers: Vec<ChatUser>,
    pub is_expired: bool,
}

/// `GET /v2/post_checkout/orders/{order_id}/order_messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderMessagesResponse {
    pub chat_messages: Vec<ChatMessage>,
    pub lifecycle_messages: Vec<LifecycleMessage>,
    pub metadata: OrderMessagesMetadata,
}

/// `ChatMessagesMetadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessagesMetadata {
    pub customer: ChatUser,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_shopper: Option<ChatUser>,
    #[serde(default)]
    pub shoppers: Vec<ChatUser>,
}

/// `GET /v2/post_checkout/chat/{order_id}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessagesResponse {
    pub chat_messages: Vec<ChatMessage>,
    pub metadata: ChatMessagesMetadata,
}

/// Body of `POST /v2/post_checkout/chat/{order_id}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendMessageRequest {
    pub body: String,
}

/// Answer of `POST /v2/post_checkout/chat/{order_id}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendMessageResponse {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub timezone: String,
}

/// Answer of `PUT /v2/post_checkout/chat/{order_id}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkReadResponse {
    pub messages_read_count: i64,
}

/// Body of `POST /v2/oauth/token`. `Debug` redacts the client secret.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRequest {
    pub client_id: String,
    pub client_secret: String,
    pub grant_type: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<String>,
}

/// Answer of `POST /v2/oauth/token`. `Debug` redacts the access token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default = "bearer")]
    pub token_type: String,
    pub expires_in: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
}

fn bearer() -> String {
    "Bearer".to_owned()
}

const REDACTED: &str = "[redacted]";

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest")
            .field("client_id", &self.client_id)
            .field("client_secret", &REDACTED)
            .field("grant_type", &self.grant_type)
            .field("scope", &self.scope)
            .field("assertion", &self.assertion)
            .finish()
    }
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &REDACTED)
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Instacart's error envelope: `{"error":{"message","code"},"meta":{...}}`, or the multi-error form
/// `{"error":{"message","code":9999,"errors":[{"error":{...},"meta":{...}}]}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    /// Numeric (4000, 4001, 1001, 9999) or null (the 403s).
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorEnvelope>,
}

/// The common shape the poller works from, whichever endpoint answered. The chat-messages
/// fallback carries no lifecycle messages and no expiry flag.
#[derive(Debug, Clone, PartialEq)]
pub struct PollSnapshot {
    pub chat_messages: Vec<ChatMessage>,
    pub lifecycle_messages: Vec<LifecycleMessage>,
    pub customer: ChatUser,
    pub current_shopper: Option<ChatUser>,
    pub shoppers: Vec<ChatUser>,
    pub is_expired: Option<bool>,
}

impl From<OrderMessagesResponse> for PollSnapshot {
    fn from(r: OrderMessagesResponse) -> Self {
        Self {
            chat_messages: r.chat_messages,
            lifecycle_messages: r.lifecycle_messages,
            customer: r.metadata.customer,
            current_shopper: r.metadata.current_shopper,
            shoppers: r.metadata.shoppers,
            is_expired: Some(r.metadata.is_expired),
        }
    }
}

impl From<ChatMessagesResponse> for PollSnapshot {
    fn from(r: ChatMessagesResponse) -> Self {
        Self {
            chat_messages: r.chat_messages,
            lifecycle_messages: Vec::new(),
            customer: r.metadata.customer,
            current_shopper: r.metadata.current_shopper,
            shoppers: r.metadata.shoppers,
            is_expired: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER_MESSAGES_SEED: &str = include_str!("../../tests/fixtures/order_messages.json");
    const CHAT_MESSAGES_SEED: &str = include_str!("../../tests/fixtures/chat_messages.json");

    #[test]
    fn seed_payloads_round_trip_exactly() {
        for seed in [ORDER_MESSAGES_SEED, CHAT_MESSAGES_SEED] {
            let original: serde_json::Value = serde_json::from_str(seed).unwrap();
            let reserialized = if original.get("lifecycle_messages").is_some() {
                serde_json::to_value(serde_json::from_str::<OrderMessagesResponse>(seed).unwrap())
            } else {
                serde_json::to_value(serde_json::from_str::<ChatMessagesResponse>(seed).unwrap())
            }
            .unwrap();
            assert_eq!(reserialized, original);
        }
    }

    #[test]
    fn optional_fields_may_be_null_and_unknown_fields_are_ignored() {
        let json = r#"{"id":1,"order_id":2,"created_at":"2021-01-01T00:00:00Z","recipient_id":3,
            "recipient_type":"driver","sender_id":4,"sender_type":"user","read":true,
            "read_at":null,"image":null,"body":"hi","something_new":42}"#;
        let m: ChatMessage = serde_json::from_str(json).unwrap();
        assert_eq!(m.read_at, None);
        assert_eq!(m.sender_type, ParticipantType::User);
    }

    #[test]
    fn token_payloads_never_show_their_secrets_in_debug() {
        let request = TokenRequest {
            client_id: "client-1".to_owned(),
            client_secret: "very-secret-value".to_owned(),
            grant_type: "client_credentials".to_owned(),
            scope: "connect:fulfillment".to_owned(),
            assertion: None,
        };
        let shown = format!("{request:?}");
        assert!(
            shown.contains("client-1") && shown.contains("[redacted]"),
            "{shown}"
        );
        assert!(!shown.contains("very-secret-value"), "{shown}");

        let response = TokenResponse {
            access_token: "access-token-value".to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: 3600,
            scope: None,
            created_at: None,
        };
        let shown = format!("{response:?}");
        assert!(
            shown.contains("3600") && shown.contains("[redacted]"),
            "{shown}"
        );
        assert!(!shown.contains("access-token-value"), "{shown}");
    }
}
