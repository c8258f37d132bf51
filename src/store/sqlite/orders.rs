//! Watched orders and their polling schedule.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::{counter, invalid, ms, opt_time, time, Queue, SqliteStore};
use crate::domain::{FallbackReason, Order, OrderCounts, OrderId, OrderState, UserId};
use crate::store::{OrderStore, StoreError, StoreResult};

macro_rules! order_columns {
    () => {
        "order_id, user_id, state, fallback, created_at, watched_since, next_poll_at, \
         last_polled_at, last_error, consecutive_failures, not_found_count"
    };
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    order_id: String,
    user_id: Option<String>,
    state: String,
    fallback: Option<String>,
    created_at: i64,
    watched_since: i64,
    next_poll_at: Option<i64>,
    last_polled_at: Option<i64>,
    last_error: Option<String>,
    consecutive_failures: i64,
    not_found_count: i64,
}

impl OrderRow {
    fn into_order(self) -> StoreResult<Order> {
        Ok(Order {
            order_id: OrderId::parse("order_id", &self.order_id).map_err(invalid)?,
            user_id: self
                .user_id
                .map(|u| UserId::parse("user_id", &u))
                .transpose()
                .map_err(invalid)?,
            state: OrderState::from_stored(&self.state)?,
            fallback: self
                .fallback
                .as_deref()
                .map(FallbackReason::from_stored)
                .transpose()?,
            created_at: time(self.created_at)?,
            watched_since: time(self.watched_since)?,
            next_poll_at: opt_time(self.next_poll_at)?,
            last_polled_at: opt_time(self.last_polled_at)?,
            last_error: self.last_error,
            consecutive_failures: counter(self.consecutive_failures, "consecutive_failures")?,
            not_found_count: counter(self.not_found_count, "not_found_count")?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct OrderWithCountsRow {
    #[sqlx(flatten)]
    order: OrderRow,
    chat_messages: i64,
    lifecycle_messages: i64,
    events: i64,
}

async fn load_order(conn: &mut SqliteConnection, order_id: &str) -> StoreResult<Option<Order>> {
    sqlx::query_as::<_, OrderRow>(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE order_id = ?1"
    ))
    .bind(order_id)
    .fetch_optional(conn)
    .await?
    .map(OrderRow::into_order)
    .transpose()
}

#[async_trait]
impl OrderStore for SqliteStore {
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    async fn watch_order(
        &self,
        order_id: &OrderId,
        user_id: Option<&UserId>,
        now: DateTime<Utc>,
    ) -> StoreResult<(Order, bool)> {
        let mut tx = self.write_tx().await?;
        // Inserts a new order, or restarts one that is no longer watched from a clean slate
        // (the fallback is rediscovered: a new user id may make order_messages usable again).
        // An order being watched matches the WHERE of the upsert and stays untouched.
        let started = sqlx::query(
            "INSERT INTO orders \
                 (order_id, user_id, state, created_at, watched_since, next_poll_at) \
             VALUES (?1, ?2, 'watching', ?3, ?3, ?3) \
             ON CONFLICT (order_id) DO UPDATE SET \
                 state = 'watching', user_id = COALESCE(excluded.user_id, orders.user_id), \
                 fallback = NULL, watched_since = excluded.watched_since, \
                 next_poll_at = excluded.next_poll_at, last_error = NULL, \
                 consecutive_failures = 0, not_found_count = 0 \
             WHERE orders.state <> 'watching'",
        )
        .bind(order_id.as_str())
        .bind(user_id.map(UserId::as_str))
        .bind(ms(now))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        let order = load_order(&mut tx, order_id.as_str())
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("order {order_id} vanished")))?;
        tx.commit().await?;
        Ok((order, started))
    }

    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    async fn get_order(&self, order_id: &OrderId) -> StoreResult<Option<(Order, OrderCounts)>> {
        let row = sqlx::query_as::<_, OrderWithCountsRow>(concat!(
            "SELECT ",
            order_columns!(),
            ", (SELECT COUNT(*) FROM seen_items WHERE order_id = ?1 AND kind = 'chat') \
                 AS chat_messages, \
               (SELECT COUNT(*) FROM seen_items WHERE order_id = ?1 AND kind = 'lifecycle') \
                 AS lifecycle_messages, \
               (SELECT COUNT(*) FROM events WHERE order_id = ?1) AS events \
             FROM orders WHERE order_id = ?1"
        ))
        .bind(order_id.as_str())
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            let counts = OrderCounts {
                chat_messages: row.chat_messages.unsigned_abs(),
                lifecycle_messages: row.lifecycle_messages.unsigned_abs(),
                events: row.events.unsigned_abs(),
            };
            Ok((row.order.into_order()?, counts))
        })
        .transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn list_orders(&self) -> StoreResult<Vec<Order>> {
        sqlx::query_as::<_, OrderRow>(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders ORDER BY created_at, order_id"
        ))
        .fetch_all(&self.reader)
        .await?
        .into_iter()
        .map(OrderRow::into_order)
        .collect()
    }

    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    async fn stop_order(&self, order_id: &OrderId) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let found = sqlx::query(
            "UPDATE orders SET state = 'stopped', next_poll_at = NULL WHERE order_id = ?1",
        )
        .bind(order_id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        tx.commit().await?;
        Ok(found)
    }

    #[tracing::instrument(skip_all)]
    async fn due_orders(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Order>> {
        sqlx::query_as::<_, OrderRow>(concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders WHERE state = 'watching' AND next_poll_at <= ?1 \
              ORDER BY next_poll_at LIMIT ?2"
        ))
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?
        .into_iter()
        .map(OrderRow::into_order)
        .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn next_poll_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.next_due(Queue::Polls).await
    }
}
