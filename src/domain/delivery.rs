//! Deliveries: one per event and matching subscriber, and the attempts made to send them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::{DeliveryId, EventId, EventType, OrderId, Subscriber, SubscriberId, UnknownVariant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn from_stored(s: &str) -> Result<Self, UnknownVariant> {
        Ok(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            other => return Err(UnknownVariant::new("delivery status", other)),
        })
    }
}

/// One claim of a batch of deliveries. An attempt is recorded only under the claim it was made
/// under, so the late record of a claim whose lease ran out (and whose delivery was claimed
/// again, or retried by hand) cannot overwrite a newer result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken(String);

impl ClaimToken {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A delivery the dispatcher has claimed: everything needed to send it without another read.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: DeliveryId,
    /// The claim its attempt is recorded under.
    pub claim: ClaimToken,
    pub event_id: EventId,
    pub event_type: EventType,
    pub order_id: OrderId,
    pub event_created_at: DateTime<Utc>,
    /// Shared by every subscriber's delivery of the same event.
    pub payload: Arc<str>,
    /// Attempts made before this one.
    pub attempts_made: u32,
    /// Shared by every delivery of the subscriber in a claim.
    pub subscriber: Arc<Subscriber>,
}

/// What one attempt ended in, as the dispatcher decided it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResolution {
    Delivered,
    RetryAt(DateTime<Utc>),
    /// Parked as failed; no further automatic attempts.
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub delivery_id: DeliveryId,
    /// The claim the attempt was made under ([`ClaimedDelivery::claim`]).
    pub claim: ClaimToken,
    pub at: DateTime<Utc>,
    pub resolution: AttemptResolution,
    pub status_code: Option<u16>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    /// Set when the receiver asked to be switched off (HTTP 410).
    pub disable_subscriber: Option<(SubscriberId, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub outcome: String,
    pub status_code: Option<u16>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub event_type: EventType,
    pub order_id: OrderId,
    pub subscriber_id: SubscriberId,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub attempts: Vec<Attempt>,
}
