//! Talking back to the shopper: what the bridge sent or marked read upstream on a subscriber's
//! behalf (so it is not announced back to them), and the Slack events it acted on.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::domain::{OrderId, SubscriberId};

#[async_trait]
pub trait TalkbackStore: Send + Sync + 'static {
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
    /// Records the Slack event `event_id` as handled at `at`; `false` when it was recorded
    /// before (a retry, not to be acted on again: Slack retries what it thinks went
    /// unacknowledged). Records from before `forget_before` are dropped on the way.
    async fn record_slack_event(
        &self,
        event_id: &str,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> StoreResult<bool>;
}
