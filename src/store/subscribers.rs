//! Subscribers and their signing secrets, as the admin API manages them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use crate::domain::{NewSubscriber, SigningSecret, Subscriber, SubscriberId, SubscriberPatch};

#[async_trait]
pub trait SubscriberStore: Send + Sync + 'static {
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
}
