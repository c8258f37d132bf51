//! The outbox: the dispatcher claims due deliveries and records their attempts; the admin API
//! lists and retries them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::domain::{
    AttemptRecord, ClaimToken, ClaimedDelivery, Delivery, DeliveryId, DeliveryStatus, OrderId,
    SubscriberId,
};

/// What a manual retry of a delivery came to.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryOutcome {
    /// Pending and due now.
    Queued(Delivery),
    NotFound,
    /// Only active subscribers' deliveries are sent; queueing it would leave it pending forever.
    SubscriberDisabled(SubscriberId),
    SubscriberDeleted(SubscriberId),
    /// Claimed by the dispatcher and not yet recorded: queueing it again would send it twice.
    BeingAttempted,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub subscriber_id: Option<SubscriberId>,
    pub order_id: Option<OrderId>,
    pub limit: u32,
}

#[async_trait]
pub trait DeliveryStore: Send + Sync + 'static {
    /// Claims up to `limit` pending deliveries due at `now` of active subscribers, under one new
    /// [`ClaimToken`], pushing their `next_attempt_at` to `lease_until` so no one else claims
    /// them meanwhile; a crash leaves them to be claimed again when the lease ends
    /// (at-least-once).
    async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Records attempts and their resolutions in one transaction, each only if its delivery is
    /// still held by the record's claim (others are stale and dropped); releases the claims.
    async fn record_attempts(&self, records: &[AttemptRecord]) -> StoreResult<()>;
    /// When the next pending delivery falls due, if any.
    async fn next_delivery_due(&self) -> StoreResult<Option<DateTime<Utc>>>;
    async fn list_deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>>;
    async fn get_delivery(&self, id: &DeliveryId) -> StoreResult<Option<Delivery>>;
    /// Puts claimed deliveries back, unattempted and unclaimed, due at `until` (per-subscriber
    /// rate limits).
    async fn postpone_deliveries(
        &self,
        ids: &[DeliveryId],
        until: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Puts back claimed deliveries that were not attempted (no room or no send slot in time,
    /// or shutting down), due as when they were created, so they are claimed again at once and
    /// in order. A delivery whose claim expired and was claimed again is left to that claim; a
    /// paused one stays paused.
    async fn release_claims(&self, held: &[(DeliveryId, ClaimToken)]) -> StoreResult<()>;
    /// Makes a delivery pending and due at `now` again, whatever its status, unless its
    /// subscriber is disabled or deleted or its attempt is in flight (checked in the same
    /// transaction).
    async fn retry_delivery(
        &self,
        id: &DeliveryId,
        now: DateTime<Utc>,
    ) -> StoreResult<RetryOutcome>;
}
