//! Durable state behind one trait, so a PostgreSQL backend can follow SQLite without touching
//! callers. Times are UTC; backends choose their own column types.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::{
    AttemptRecord, ClaimToken, ClaimedDelivery, Delivery, DeliveryId, DeliveryStatus, NewEvent,
    NewSubscriber, Order, OrderCounts, OrderId, PollProgress, SeenState, SigningSecret, Subscriber,
    SubscriberId, SubscriberPatch, UnknownVariant, UserId,
};

mod sqlite;
pub use sqlite::SqliteStore;

/// Opens the store named by `url` (`sqlite://path` or `sqlite:path`), creating the database if
/// missing and applying migrations.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    Ok(Arc::new(SqliteStore::open(url).await?))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<UnknownVariant> for StoreError {
    fn from(unknown: UnknownVariant) -> Self {
        StoreError::Corrupt(unknown.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything one poll of one order changes, written in one transaction: newly seen items, read
/// flags that turned true, the events, one delivery per matching subscriber, and the order's
/// polling state.
#[derive(Debug, Clone, PartialEq)]
pub struct PollCommit {
    pub order_id: OrderId,
    pub new_chat: Vec<(i64, bool)>,
    pub newly_read: Vec<i64>,
    pub new_lifecycle: Vec<i64>,
    pub events: Vec<NewEvent>,
    pub progress: PollProgress,
}

/// Asks [`Store::commit_polls`] to claim the deliveries it creates that are due at once (not an
/// e-mail digest's), as [`Store::claim_due_deliveries`] would, and return them: the committing
/// process sends them itself without reading them back. Up to `limit`, in creation order.
#[derive(Debug, Clone)]
pub struct ClaimAtCreation {
    pub claim: ClaimToken,
    pub lease_until: DateTime<Utc>,
    pub limit: usize,
}

/// What [`Store::commit_polls`] did: one summary per commit, and the deliveries it claimed.
#[derive(Debug, Default)]
pub struct CommittedPolls {
    pub summaries: Vec<CommitSummary>,
    pub claimed: Vec<ClaimedDelivery>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitSummary {
    pub events_inserted: u64,
    pub deliveries_created: u64,
}

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
pub trait Store: Send + Sync + 'static {
    // --- watched orders
    /// Starts watching; returns `false` if the order was already being watched (then unchanged).
    /// A stopped, expired or not-found order is watched again.
    async fn watch_order(
        &self,
        order_id: &OrderId,
        user_id: Option<&UserId>,
        now: DateTime<Utc>,
    ) -> StoreResult<(Order, bool)>;
    async fn get_order(&self, order_id: &OrderId) -> StoreResult<Option<(Order, OrderCounts)>>;
    async fn list_orders(&self) -> StoreResult<Vec<Order>>;
    /// Stops watching; returns `false` if the order is unknown.
    async fn stop_order(&self, order_id: &OrderId) -> StoreResult<bool>;
    /// Watched orders whose next poll is due at `now`, earliest first.
    async fn due_orders(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Order>>;
    /// When the next watched order falls due, if any.
    async fn next_poll_due(&self) -> StoreResult<Option<DateTime<Utc>>>;

    // --- diff memory and the outbox
    /// The seen state of each of `order_ids`, in one read; an order with nothing seen yet maps
    /// to an empty state.
    async fn seen_states(&self, order_ids: &[OrderId]) -> StoreResult<HashMap<OrderId, SeenState>>;
    /// [`Store::seen_states`] for one order.
    async fn seen_state(&self, order_id: &OrderId) -> StoreResult<SeenState> {
        Ok(self
            .seen_states(std::slice::from_ref(order_id))
            .await?
            .remove(order_id)
            .unwrap_or_default())
    }
    /// Applies many polls' results in one transaction (see [`PollCommit`]), returning one
    /// summary per commit, in order. Events already stored (same id) are skipped, and so are
    /// their deliveries; an event in two commits of the batch counts for the first. An order's
    /// progress is only written while it is still watched, so a concurrent stop wins; of two
    /// commits of the same order, the later one's progress is written. With `claim`, the new
    /// deliveries it allows are created claimed and returned.
    async fn commit_polls(
        &self,
        commits: &[PollCommit],
        claim: Option<&ClaimAtCreation>,
    ) -> StoreResult<CommittedPolls>;
    /// [`Store::commit_polls`] for one poll, claiming nothing.
    async fn commit_poll(&self, commit: &PollCommit) -> StoreResult<CommitSummary> {
        // One summary per commit: the batch of one yields exactly one.
        Ok(self
            .commit_polls(std::slice::from_ref(commit), None)
            .await?
            .summaries
            .pop()
            .unwrap_or_default())
    }

    // --- subscribers
    async fn create_subscriber(&self, new: NewSubscriber) -> StoreResult<Subscriber>;
    async fn get_subscriber(&self, id: &SubscriberId) -> StoreResult<Option<Subscriber>>;
    async fn list_subscribers(&self) -> StoreResult<Vec<Subscriber>>;
    async fn update_subscriber(
        &self,
        id: &SubscriberId,
        patch: SubscriberPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Subscriber>>;
    /// Deletes the subscriber; its pending deliveries are parked as failed.
    async fn delete_subscriber(&self, id: &SubscriberId) -> StoreResult<bool>;
    /// Adds `new_secret` as current; the previous current secret keeps signing until
    /// `old_expires_at`.
    async fn rotate_secret(
        &self,
        id: &SubscriberId,
        new_secret: SigningSecret,
        now: DateTime<Utc>,
        old_expires_at: DateTime<Utc>,
    ) -> StoreResult<Option<Subscriber>>;

    // --- deliveries
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

    // --- messages the bridge sent to the shopper
    /// Remembers a message sent upstream on the retailer's behalf, and which subscriber it came
    /// from (`None`: the admin API), so that when the poller sees it in the chat it is announced
    /// as sent by the retailer and not echoed back to its origin. Idempotent.
    async fn record_sent_message(
        &self,
        order_id: &OrderId,
        message_id: i64,
        origin: Option<&SubscriberId>,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Remembers that `subscribers` (with the `on_delivery` mark-read policy) had the order's
    /// messages marked read upstream at `at`: the chat messages seen unread then are read by
    /// their doing, so those readings are not announced back to them. Idempotent.
    async fn record_read_request(
        &self,
        order_id: &OrderId,
        subscribers: &[SubscriberId],
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    // --- Slack events acted on (Slack retries what it thinks went unacknowledged)
    /// Records the Slack event `event_id` as handled at `at`; `false` when it was recorded
    /// before (a retry, not to be acted on again). Records from before `forget_before` are
    /// dropped on the way.
    async fn record_slack_event(
        &self,
        event_id: &str,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> StoreResult<bool>;

    // --- conversation threads (an e-mail Message-ID, a Slack message ts)
    /// The thread one subscriber's messages about one order go into, if one was started.
    async fn thread_ref(
        &self,
        subscriber_id: &SubscriberId,
        order_id: &OrderId,
    ) -> StoreResult<Option<String>>;
    /// The order whose thread, for this subscriber, is `thread_ref` (a reply in a Slack thread
    /// goes to that order's shopper).
    async fn order_for_thread(
        &self,
        subscriber_id: &SubscriberId,
        thread_ref: &str,
    ) -> StoreResult<Option<OrderId>>;
    /// Records `thread_ref` as the order's thread for the subscriber unless one exists already;
    /// returns the one in force.
    async fn save_thread_ref(
        &self,
        subscriber_id: &SubscriberId,
        order_id: &OrderId,
        thread_ref: &str,
    ) -> StoreResult<String>;
}
