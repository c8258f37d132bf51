//! Watched orders: where each one's polling stands.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{OrderId, UnknownVariant, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Watching,
    NotFound,
    Expired,
    Stopped,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Watching => "watching",
            OrderState::NotFound => "not_found",
            OrderState::Expired => "expired",
            OrderState::Stopped => "stopped",
        }
    }

    pub fn from_stored(s: &str) -> Result<Self, UnknownVariant> {
        Ok(match s {
            "watching" => OrderState::Watching,
            "not_found" => OrderState::NotFound,
            "expired" => OrderState::Expired,
            "stopped" => OrderState::Stopped,
            other => return Err(UnknownVariant::new("order state", other)),
        })
    }
}

/// Why an order is polled through the chat-messages endpoint instead of order_messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    /// order_messages answered 400 / 4001 "User ID not found".
    UserIdNotFound,
    /// order_messages answered 403 "Shopper PII".
    ShopperPiiRedacted,
}

impl FallbackReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::UserIdNotFound => "user_id_not_found",
            FallbackReason::ShopperPiiRedacted => "shopper_pii_redacted",
        }
    }

    pub fn from_stored(s: &str) -> Result<Self, UnknownVariant> {
        Ok(match s {
            "user_id_not_found" => FallbackReason::UserIdNotFound,
            "shopper_pii_redacted" => FallbackReason::ShopperPiiRedacted,
            other => return Err(UnknownVariant::new("fallback reason", other)),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub order_id: OrderId,
    pub user_id: Option<UserId>,
    pub state: OrderState,
    pub fallback: Option<FallbackReason>,
    pub created_at: DateTime<Utc>,
    /// When the current watch started: the first registration, or the latest restart of an
    /// order that was no longer watched. `poller.max_watch` counts from here.
    pub watched_since: DateTime<Utc>,
    pub next_poll_at: Option<DateTime<Utc>>,
    pub last_polled_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    /// Consecutive 404 answers; the order is given up after a few confirmations.
    pub not_found_count: u32,
}

/// What an order has produced so far, for the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderCounts {
    pub chat_messages: u64,
    pub lifecycle_messages: u64,
    pub events: u64,
}

/// Where an order's polling stands after one poll (successful or not).
#[derive(Debug, Clone, PartialEq)]
pub struct PollProgress {
    pub polled_at: DateTime<Utc>,
    pub state: OrderState,
    pub fallback: Option<FallbackReason>,
    /// `None` once the order is no longer watched.
    pub next_poll_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub not_found_count: u32,
}
