//! The outbox: claims, attempts and their records, and the admin API's view of deliveries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use std::collections::HashMap;
use std::sync::Arc;

use super::subscribers::subscribers_by_id;
use super::{
    counter, id_list, invalid, json_error, ms, opt_time, time, to_json, Queue, SqliteStore,
};
use crate::domain::{
    Attempt, AttemptRecord, AttemptResolution, ClaimToken, ClaimedDelivery, Delivery, DeliveryId,
    DeliveryStatus, EventId, EventType, OrderId, Subscriber, SubscriberId, SubscriberStatus,
};
use crate::store::{DeliveryFilter, DeliveryStore, RetryOutcome, StoreError, StoreResult};

fn outcome_str(resolution: &AttemptResolution) -> &'static str {
    match resolution {
        AttemptResolution::Delivered => "delivered",
        AttemptResolution::RetryAt(_) => "retry",
        AttemptResolution::Failed => "failed",
    }
}

/// A claimed delivery: seq, id, event id, subscriber id, attempts made.
#[derive(serde::Deserialize)]
struct ClaimedRow(i64, String, String, String, i64);

/// What claimed deliveries need of their event: id, type, order id, creation time, payload.
#[derive(serde::Deserialize)]
struct ClaimedEventRow(String, String, String, i64, String);

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: String,
    event_id: String,
    event_type: String,
    order_id: String,
    subscriber_id: String,
    status: String,
    attempt_count: i64,
    next_attempt_at: Option<i64>,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    delivery_id: String,
    at: i64,
    outcome: String,
    status_code: Option<i64>,
    response_excerpt: Option<String>,
    error: Option<String>,
}

/// Deliveries matching `filter` (or the one with `id`), newest first, with their attempts.
async fn load_deliveries(
    conn: &mut SqliteConnection,
    id: Option<&DeliveryId>,
    filter: &DeliveryFilter,
) -> StoreResult<Vec<Delivery>> {
    let mut query = QueryBuilder::<Sqlite>::new(
        "SELECT d.id, e.id AS event_id, e.type AS event_type, e.order_id, d.subscriber_id, \
         d.status, d.attempt_count, d.next_attempt_at, d.created_at \
         FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE 1 = 1",
    );
    if let Some(id) = id {
        query.push(" AND d.id = ").push_bind(id.as_str());
    }
    if let Some(status) = filter.status {
        query.push(" AND d.status = ").push_bind(status.as_str());
    }
    if let Some(subscriber_id) = &filter.subscriber_id {
        query
            .push(" AND d.subscriber_id = ")
            .push_bind(subscriber_id.as_str());
    }
    if let Some(order_id) = &filter.order_id {
        query
            .push(" AND e.order_id = ")
            .push_bind(order_id.as_str());
    }
    // A zero limit means no limit (SQLite reads a negative LIMIT as unbounded).
    let limit = if filter.limit == 0 {
        -1
    } else {
        i64::from(filter.limit)
    };
    query.push(" ORDER BY d.seq DESC LIMIT ").push_bind(limit);
    let rows = query
        .build_query_as::<DeliveryRow>()
        .fetch_all(&mut *conn)
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }

    let ids = id_list(rows.iter().map(|r| r.id.as_str()));
    // Each delivery's latest attempt is in its own row, after the earlier ones in `attempts`.
    let attempt_rows = sqlx::query_as::<_, AttemptRow>(
        "SELECT delivery_id, at, outcome, status_code, response_excerpt, error FROM ( \
             SELECT delivery_id, at, outcome, status_code, response_excerpt, error, seq \
             FROM attempts WHERE delivery_id IN (SELECT value FROM json_each(?1)) \
             UNION ALL \
             SELECT id, last_attempt_at, last_outcome, last_status_code, \
                 last_response_excerpt, last_error, NULL \
             FROM deliveries \
             WHERE id IN (SELECT value FROM json_each(?1)) AND last_attempt_at IS NOT NULL) \
         ORDER BY at, seq IS NULL, seq",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut attempts: HashMap<String, Vec<Attempt>> = HashMap::new();
    for row in attempt_rows {
        let attempt = Attempt {
            at: time(row.at)?,
            outcome: row.outcome,
            status_code: row
                .status_code
                .map(|c| {
                    u16::try_from(c).map_err(|_| StoreError::Corrupt(format!("status code {c}")))
                })
                .transpose()?,
            response_excerpt: row.response_excerpt,
            error: row.error,
        };
        attempts.entry(row.delivery_id).or_default().push(attempt);
    }

    rows.into_iter()
        .map(|row| {
            Ok(Delivery {
                id: DeliveryId::parse("id", &row.id).map_err(invalid)?,
                event_id: EventId::from_stored(row.event_id),
                event_type: EventType::parse("type", &row.event_type).map_err(invalid)?,
                order_id: OrderId::parse("order_id", &row.order_id).map_err(invalid)?,
                subscriber_id: SubscriberId::parse("subscriber_id", &row.subscriber_id)
                    .map_err(invalid)?,
                status: DeliveryStatus::from_stored(&row.status)?,
                attempt_count: counter(row.attempt_count, "attempt_count")?,
                next_attempt_at: opt_time(row.next_attempt_at)?,
                created_at: time(row.created_at)?,
                attempts: attempts.remove(&row.id).unwrap_or_default(),
            })
        })
        .collect()
}

async fn load_delivery(
    conn: &mut SqliteConnection,
    id: &DeliveryId,
) -> StoreResult<Option<Delivery>> {
    Ok(load_deliveries(conn, Some(id), &DeliveryFilter::default())
        .await?
        .pop())
}

/// Pauses a disabled subscriber's pending deliveries: no due time, so no claim scans them.
pub(super) async fn pause_deliveries(
    conn: &mut SqliteConnection,
    subscriber: &SubscriberId,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE deliveries SET next_attempt_at = NULL \
         WHERE subscriber_id = ?1 AND status = 'pending'",
    )
    .bind(subscriber.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// The claimed batch as the dispatcher sends it, in `due`'s order, each payload shared by the
/// deliveries of its event.
fn assemble_claimed(
    claim: &ClaimToken,
    due: Vec<ClaimedRow>,
    events: &HashMap<String, ClaimedEventRow>,
    subscribers: &HashMap<String, Arc<Subscriber>>,
) -> StoreResult<Vec<ClaimedDelivery>> {
    let mut payloads: HashMap<&str, Arc<str>> = HashMap::with_capacity(events.len());
    let mut batch = Vec::with_capacity(due.len());
    for ClaimedRow(_, id, event_id, subscriber_id, attempt_count) in due {
        let (Some(subscriber), Some(event)) =
            (subscribers.get(&subscriber_id), events.get(&event_id))
        else {
            return Err(StoreError::Corrupt(format!(
                "delivery {id} lacks its event or subscriber"
            )));
        };
        let ClaimedEventRow(event_key, event_type, order_id, created_at, payload) = event;
        let payload = payloads
            .entry(event_key.as_str())
            .or_insert_with(|| Arc::from(payload.as_str()))
            .clone();
        batch.push(ClaimedDelivery {
            id: DeliveryId::parse("id", &id).map_err(invalid)?,
            claim: claim.clone(),
            event_id: EventId::from_stored(event_id),
            event_type: EventType::parse("type", event_type).map_err(invalid)?,
            order_id: OrderId::parse("order_id", order_id).map_err(invalid)?,
            event_created_at: time(*created_at)?,
            payload,
            attempts_made: counter(attempt_count, "attempt_count")?,
            subscriber: Arc::clone(subscriber),
        });
    }
    Ok(batch)
}

/// The batch of records as one JSON array: two statements however many records.
fn attempt_rows(records: &[AttemptRecord]) -> String {
    let rows: Vec<_> = records
        .iter()
        .map(|record| {
            let (status, next_attempt_at) = match record.resolution {
                AttemptResolution::Delivered => (DeliveryStatus::Delivered, None),
                AttemptResolution::RetryAt(at) => (DeliveryStatus::Pending, Some(ms(at))),
                AttemptResolution::Failed => (DeliveryStatus::Failed, None),
            };
            (
                record.delivery_id.as_str(),
                ms(record.at),
                outcome_str(&record.resolution),
                record.status_code,
                record.response_excerpt.as_deref(),
                record.error.as_deref(),
                status.as_str(),
                next_attempt_at,
                record.claim.as_str(),
            )
        })
        .collect();
    to_json(&rows)
}

/// Disables the subscribers whose receivers said they are gone, and pauses their deliveries.
async fn disable_gone_subscribers(
    conn: &mut SqliteConnection,
    records: &[AttemptRecord],
) -> StoreResult<()> {
    // Only records made under the claim that still holds their delivery count, so only such
    // a record speaks for the receiver.
    for record in records {
        let Some((subscriber_id, reason)) = &record.disable_subscriber else {
            continue;
        };
        let held: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM deliveries WHERE id = ?1 AND claim = ?2)",
        )
        .bind(record.delivery_id.as_str())
        .bind(record.claim.as_str())
        .fetch_one(&mut *conn)
        .await?;
        if !held {
            continue;
        }
        sqlx::query(
            "UPDATE subscribers SET status = 'disabled', disabled_reason = ?1, \
                 updated_at = ?2 \
             WHERE id = ?3",
        )
        .bind(reason)
        .bind(ms(record.at))
        .bind(subscriber_id.as_str())
        .execute(&mut *conn)
        .await?;
        pause_deliveries(&mut *conn, subscriber_id).await?;
        tracing::info!(subscriber_id = %subscriber_id, reason, "subscriber disabled");
    }
    Ok(())
}

#[async_trait]
impl DeliveryStore for SqliteStore {
    #[tracing::instrument(skip_all, fields(limit = limit))]
    async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let claim = ClaimToken::generate();
        // The writer's page cache is the warm one (a reader's starts cold after every write), so
        // the batch is read there too, right after the claim.
        let mut conn = self.writer.acquire().await?;
        // One statement, committed on its own: the claim is durable before anything is sent.
        // The (status, next_attempt_at) index yields the due rows in due order, seq included.
        // Only active subscribers' pending deliveries have a due time (a disable pauses them).
        let claimed = sqlx::query(
            "UPDATE deliveries SET next_attempt_at = ?1, claimed_until = ?1, claim = ?2 \
             WHERE seq IN (SELECT seq FROM deliveries \
                           WHERE status = 'pending' AND next_attempt_at <= ?3 \
                           ORDER BY next_attempt_at, seq LIMIT ?4)",
        )
        .bind(ms(lease_until))
        .bind(claim.as_str())
        .bind(ms(now))
        .bind(i64::from(limit))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Ok(Vec::new());
        }

        // The batch, found through the due index at its lease, in one row (a row each would cost
        // a hop between threads each). Each payload is read once per batch, however many
        // deliveries share it.
        let (due, events): (String, String) = sqlx::query_as(
            "WITH claimed AS ( \
                 SELECT d.seq, d.id, d.event_seq, e.id AS event_id, d.subscriber_id, \
                     d.attempt_count \
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                 WHERE d.status = 'pending' AND d.next_attempt_at = ?1 AND d.claim = ?2) \
             SELECT \
                 (SELECT json_group_array(json_array(seq, id, event_id, subscriber_id, \
                                                     attempt_count)) FROM claimed), \
                 (SELECT json_group_array(json_array(id, type, order_id, created_at, payload)) \
                  FROM events WHERE seq IN (SELECT event_seq FROM claimed))",
        )
        .bind(ms(lease_until))
        .bind(claim.as_str())
        .fetch_one(&mut *conn)
        .await?;
        let mut due: Vec<ClaimedRow> =
            serde_json::from_str(&due).map_err(json_error("claimed deliveries"))?;
        // Creation order: a subscriber's deliveries go out in the order their events came.
        due.sort_unstable_by_key(|row| row.0);
        let events: HashMap<String, ClaimedEventRow> =
            serde_json::from_str::<Vec<ClaimedEventRow>>(&events)
                .map_err(json_error("claimed events"))?
                .into_iter()
                .map(|event| (event.0.clone(), event))
                .collect();
        let subscribers = subscribers_by_id(&mut conn, due.iter().map(|d| d.3.as_str())).await?;
        drop(conn);

        assemble_claimed(&claim, due, &events, &subscribers)
    }

    #[tracing::instrument(skip_all, fields(records = records.len()))]
    async fn record_attempts(&self, records: &[AttemptRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let rows = attempt_rows(records);
        let mut tx = self.write_tx().await?;
        disable_gone_subscribers(&mut tx, records).await?;
        // Both statements go to the connection's thread in one hop; how many records applied
        // comes back as the last statement's one row. Each statement uses `?1` only: sqlx binds
        // a later statement's parameters by position once one skips a number. A delivery row
        // holds its latest attempt: the one it held before moves to `attempts`.
        // A retry never revives a delivery parked meanwhile (its subscriber was deleted while
        // the attempt was in flight), nor un-pauses one whose subscriber was disabled meanwhile
        // (by this very batch, too); a final outcome is always recorded.
        let applied: i64 = sqlx::query_scalar(
            "WITH r(v) AS MATERIALIZED (SELECT value FROM json_each(?1)) \
             INSERT INTO attempts \
                 (delivery_id, at, outcome, status_code, response_excerpt, error) \
             SELECT d.id, d.last_attempt_at, d.last_outcome, d.last_status_code, \
                 d.last_response_excerpt, d.last_error \
             FROM r JOIN deliveries d ON d.id = v ->> 0 AND d.claim = v ->> 8 \
             WHERE d.last_attempt_at IS NOT NULL; \
             WITH r(v) AS MATERIALIZED (SELECT value FROM json_each(?1)) \
             UPDATE deliveries SET attempt_count = attempt_count + 1, \
                 status = CASE WHEN rec.new_status = 'pending' AND deliveries.status <> 'pending' \
                               THEN deliveries.status ELSE rec.new_status END, \
                 next_attempt_at = CASE \
                     WHEN rec.new_status <> 'pending' THEN rec.next_at \
                     WHEN deliveries.status <> 'pending' THEN deliveries.next_attempt_at \
                     WHEN (SELECT status FROM subscribers WHERE id = deliveries.subscriber_id) \
                          = 'active' THEN rec.next_at \
                     ELSE NULL END, \
                 updated_at = rec.at, claim = NULL, claimed_until = NULL, \
                 last_attempt_at = rec.at, last_outcome = rec.outcome, \
                 last_status_code = rec.status_code, last_response_excerpt = rec.excerpt, \
                 last_error = rec.error \
             FROM (SELECT v ->> 0 AS id, v ->> 1 AS at, v ->> 2 AS outcome, \
                          v ->> 3 AS status_code, v ->> 4 AS excerpt, v ->> 5 AS error, \
                          v ->> 6 AS new_status, v ->> 7 AS next_at, v ->> 8 AS claim \
                   FROM r) AS rec \
             WHERE deliveries.id = rec.id AND deliveries.claim = rec.claim; \
             SELECT changes()",
        )
        .bind(&rows)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let stale = records.len() as u64 - applied.unsigned_abs();
        if stale > 0 {
            tracing::warn!(
                stale,
                "attempts of expired claims dropped: their deliveries were claimed again or \
                 retried meanwhile"
            );
        }
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn next_delivery_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.next_due(Queue::Deliveries).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        let mut conn = self.reader.acquire().await?;
        load_deliveries(&mut conn, None, filter).await
    }

    #[tracing::instrument(skip_all, fields(delivery_id = %id))]
    async fn get_delivery(&self, id: &DeliveryId) -> StoreResult<Option<Delivery>> {
        let mut conn = self.reader.acquire().await?;
        load_delivery(&mut conn, id).await
    }

    #[tracing::instrument(skip_all, fields(delivery_id = %id))]
    async fn retry_delivery(
        &self,
        id: &DeliveryId,
        now: DateTime<Utc>,
    ) -> StoreResult<RetryOutcome> {
        let mut tx = self.write_tx().await?;
        let found: Option<(String, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT d.subscriber_id, s.status, d.claimed_until \
             FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id \
             WHERE d.id = ?1",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((subscriber_id, status, claimed_until)) = found else {
            return Ok(RetryOutcome::NotFound);
        };
        let subscriber_id =
            SubscriberId::parse("subscriber_id", &subscriber_id).map_err(invalid)?;
        match status
            .as_deref()
            .map(SubscriberStatus::from_stored)
            .transpose()?
        {
            None => return Ok(RetryOutcome::SubscriberDeleted(subscriber_id)),
            Some(SubscriberStatus::Disabled) => {
                return Ok(RetryOutcome::SubscriberDisabled(subscriber_id))
            }
            Some(SubscriberStatus::Active) => {}
        }
        if claimed_until.is_some_and(|until| until > ms(now)) {
            return Ok(RetryOutcome::BeingAttempted);
        }
        // An expired claim is released: its late record, if any, no longer applies.
        sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = ?1, updated_at = ?1, \
                 claim = NULL, claimed_until = NULL \
             WHERE id = ?2",
        )
        .bind(ms(now))
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        let delivery = load_delivery(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("delivery {id} vanished")))?;
        tx.commit().await?;
        Ok(RetryOutcome::Queued(delivery))
    }

    #[tracing::instrument(skip_all, fields(deliveries = ids.len()))]
    async fn postpone_deliveries(
        &self,
        ids: &[DeliveryId],
        until: DateTime<Utc>,
    ) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        // A delivery paused meanwhile (its subscriber was disabled) stays paused.
        sqlx::query(
            "UPDATE deliveries SET claim = NULL, claimed_until = NULL, \
                 next_attempt_at = CASE WHEN next_attempt_at IS NULL THEN NULL ELSE ?1 END \
             WHERE status = 'pending' AND id IN (SELECT value FROM json_each(?2))",
        )
        .bind(ms(until))
        .bind(id_list(ids.iter().map(DeliveryId::as_str)))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(deliveries = held.len()))]
    async fn release_claims(&self, held: &[(DeliveryId, ClaimToken)]) -> StoreResult<()> {
        if held.is_empty() {
            return Ok(());
        }
        let held: Vec<(&str, &str)> = held
            .iter()
            .map(|(id, claim)| (id.as_str(), claim.as_str()))
            .collect();
        sqlx::query(
            "UPDATE deliveries SET claim = NULL, claimed_until = NULL, \
                 next_attempt_at = CASE WHEN next_attempt_at IS NULL THEN NULL ELSE created_at END \
             WHERE status = 'pending' AND (id, claim) IN \
                 (SELECT value ->> 0, value ->> 1 FROM json_each(?1))",
        )
        .bind(to_json(&held))
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}
