//! Watched orders: what the admin API starts and stops, and what the poller finds due.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::domain::{Order, OrderCounts, OrderId, UserId};

#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
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
}
