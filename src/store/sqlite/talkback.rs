//! What the bridge said or marked read upstream, and the Slack events it acted on.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{id_list, ms, SqliteStore};
use crate::domain::{OrderId, SubscriberId};
use crate::store::{StoreResult, TalkbackStore};

#[async_trait]
impl TalkbackStore for SqliteStore {
    #[tracing::instrument(skip_all, fields(order_id = %order_id, message_id))]
    async fn record_sent_message(
        &self,
        order_id: &OrderId,
        message_id: i64,
        origin: Option<&SubscriberId>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO sent_messages (order_id, message_id, origin_subscriber_id, sent_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (order_id, message_id) DO NOTHING",
        )
        .bind(order_id.as_str())
        .bind(message_id)
        .bind(origin.map(SubscriberId::as_str))
        .bind(ms(at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(order_id = %order_id, subscribers = subscribers.len()))]
    async fn record_read_request(
        &self,
        order_id: &OrderId,
        subscribers: &[SubscriberId],
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        if subscribers.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        // The messages the request read are those still unread as far as the bridge knows: a
        // message it has not seen yet will first be seen read, which announces no reading.
        sqlx::query(
            "INSERT INTO read_requests (order_id, message_id, subscriber_id, requested_at) \
             SELECT s.order_id, s.upstream_id, r.value, ?3 \
             FROM seen_items s, json_each(?2) r \
             WHERE s.order_id = ?1 AND s.kind = 'chat' AND s.read = 0 \
                 AND r.value IN (SELECT id FROM subscribers) \
             ON CONFLICT DO NOTHING",
        )
        .bind(order_id.as_str())
        .bind(id_list(subscribers.iter().map(SubscriberId::as_str)))
        .bind(ms(at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(event_id = %event_id))]
    async fn record_slack_event(
        &self,
        event_id: &str,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM slack_events WHERE received_at < ?1")
            .bind(ms(forget_before))
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO slack_events (event_id, received_at) VALUES (?1, ?2) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(ms(at))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(inserted == 1)
    }
}
