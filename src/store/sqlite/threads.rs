//! Conversation threads, one per subscriber and order.

use async_trait::async_trait;

use super::{invalid, SqliteStore};
use crate::domain::{OrderId, SubscriberId};
use crate::store::{StoreResult, ThreadStore};

#[async_trait]
impl ThreadStore for SqliteStore {
    #[tracing::instrument(skip_all, fields(subscriber_id = %subscriber_id, order_id = %order_id))]
    async fn thread_ref(
        &self,
        subscriber_id: &SubscriberId,
        order_id: &OrderId,
    ) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT thread_ref FROM threads WHERE subscriber_id = ?1 AND order_id = ?2",
        )
        .bind(subscriber_id.as_str())
        .bind(order_id.as_str())
        .fetch_optional(&self.reader)
        .await?)
    }

    #[tracing::instrument(skip_all, fields(subscriber_id = %subscriber_id, order_id = %order_id))]
    async fn save_thread_ref(
        &self,
        subscriber_id: &SubscriberId,
        order_id: &OrderId,
        thread_ref: &str,
    ) -> StoreResult<String> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO threads (subscriber_id, order_id, thread_ref) VALUES (?1, ?2, ?3) \
             ON CONFLICT (subscriber_id, order_id) DO NOTHING",
        )
        .bind(subscriber_id.as_str())
        .bind(order_id.as_str())
        .bind(thread_ref)
        .execute(&mut *tx)
        .await?;
        let in_force: String = sqlx::query_scalar(
            "SELECT thread_ref FROM threads WHERE subscriber_id = ?1 AND order_id = ?2",
        )
        .bind(subscriber_id.as_str())
        .bind(order_id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(in_force)
    }

    #[tracing::instrument(skip_all, fields(subscriber_id = %subscriber_id))]
    async fn order_for_thread(
        &self,
        subscriber_id: &SubscriberId,
        thread_ref: &str,
    ) -> StoreResult<Option<OrderId>> {
        let order: Option<String> = sqlx::query_scalar(
            "SELECT order_id FROM threads WHERE subscriber_id = ?1 AND thread_ref = ?2",
        )
        .bind(subscriber_id.as_str())
        .bind(thread_ref)
        .fetch_optional(&self.reader)
        .await?;
        order
            .map(|id| OrderId::parse("order_id", &id).map_err(invalid))
            .transpose()
    }
}
