//! Durable state behind one trait, so a PostgreSQL backend can follow SQLite without touching
//! callers. Times are UTC; backends choose their own column types.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::domain::{DeliveryId, EventId, EventType, OrderId, SigningSecret, SubscriberId, UserId};

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

pub type StoreResult<T> = Result<T, StoreError>;

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

    pub fn from_stored(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "watching" => OrderState::Watching,
            "not_found" => OrderState::NotFound,
            "expired" => OrderState::Expired,
            "stopped" => OrderState::Stopped,
            other => return Err(StoreError::Corrupt(format!("order state {other:?}"))),
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

    pub fn from_stored(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "user_id_not_found" => FallbackReason::UserIdNotFound,
            "shopper_pii_redacted" => FallbackReason::ShopperPiiRedacted,
            other => return Err(StoreError::Corrupt(format!("fallback reason {other:?}"))),
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

/// The differ's memory for one order: chat message ids with their read flag, notification ids,
/// and what the bridge itself did in the chat (sent messages, mark-read requests), so that its
/// own actions are not announced back to the subscriber behind them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenState {
    pub chat: HashMap<i64, bool>,
    pub lifecycle: HashSet<i64>,
    /// Messages the bridge sent on the retailer's behalf, with the subscriber each came from
    /// (`None`: the admin API).
    pub sent: HashMap<i64, Option<SubscriberId>>,
    /// Chat messages that were seen unread when an `on_delivery` subscriber had the order's
    /// messages marked read, with those subscribers: their reading is that subscriber's doing.
    pub read_requested: HashMap<i64, Vec<SubscriberId>>,
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

/// Where a Slack subscriber posts. Both forms are secrets (a webhook URL is a credential), so
/// `Debug` redacts them: a logged subscriber or delivery never shows one.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum SlackTarget {
    /// An incoming webhook: posts only, no threads.
    IncomingWebhook { webhook_url: String },
    /// The Web API (`chat.postMessage`): one thread per order.
    Bot { bot_token: String, channel: String },
}

impl std::fmt::Debug for SlackTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlackTarget::IncomingWebhook { .. } => f
                .debug_struct("IncomingWebhook")
                .field("webhook_url", &"[redacted]")
                .finish(),
            SlackTarget::Bot { channel, .. } => f
                .debug_struct("Bot")
                .field("bot_token", &"[redacted]")
                .field("channel", channel)
                .finish(),
        }
    }
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

    pub fn from_stored(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "never" => MarkReadPolicy::Never,
            "on_delivery" => MarkReadPolicy::OnDelivery,
            other => return Err(StoreError::Corrupt(format!("mark_read policy {other:?}"))),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriberStatus {
    Active,
    Disabled,
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

    pub fn from_stored(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            other => return Err(StoreError::Corrupt(format!("delivery status {other:?}"))),
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
