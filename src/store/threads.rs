//! Conversation threads (an e-mail Message-ID, a Slack message ts), one per subscriber and order.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::{OrderId, SubscriberId};

#[async_trait]
pub trait ThreadStore: Send + Sync + 'static {
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
