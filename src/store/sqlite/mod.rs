//! The SQLite backend. SQLite allows one writer at a time, so every write goes through a pool of
//! exactly one connection: writers queue in-process instead of failing with `SQLITE_BUSY`, and
//! each write transaction starts with `BEGIN IMMEDIATE` so it never has to upgrade a read lock
//! (a write of one statement runs on its own: it takes the write lock as it starts).
//! Reads use a small separate pool; in WAL mode they run alongside the writer and see the last
//! committed state. Times are stored as INTEGER unix milliseconds.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite, SqliteConnection, Transaction};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::{
    ClaimAtCreation, CommitSummary, CommittedPolls, DeliveryFilter, PollCommit, RetryOutcome,
    Store, StoreError, StoreResult,
};
use crate::domain::{
    Attempt, AttemptRecord, AttemptResolution, Channel, ClaimToken, ClaimedDelivery, Delivery,
    DeliveryStatus, FallbackReason, MarkReadPolicy, NewEvent, NewSubscriber, Order, OrderCounts,
    OrderState, SeenState, StoredSecret, Subscriber, SubscriberFilter, SubscriberPatch,
    SubscriberStatus,
};
use crate::domain::{
    DeliveryId, EventId, EventType, OrderId, SigningSecret, SubscriberId, UserId, ValidationError,
};

/// Readers only ever run short indexed queries; a few cover the admin API next to the poller.
const READ_CONNECTIONS: u32 = 4;
/// How long a connection waits on a lock held by another process before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or `sqlite:path`) and
    /// applies pending migrations.
    #[tracing::instrument(skip_all)]
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        migrate(&options).await?;
        // The one writer connection serves every write: keep it open rather than reconnect.
        // A local file's connection cannot go stale: no ping before each use (each costs a hop to
        // the connection's thread).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        // `query_only` makes a write sent to the wrong pool fail loudly instead of contending
        // with the writer for the lock.
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .test_before_acquire(false)
            .connect_with(options.clone().pragma("query_only", "ON"))
            .await?;
        // The file, not the URL: a store URL may carry credentials.
        tracing::info!(file = %options.get_filename().display(), "store opened");
        Ok(Self { writer, reader })
    }

    async fn write_tx(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Applies pending migrations on a connection of their own with foreign-key enforcement off, as
/// SQLite's recipe for rebuilding a table requires (enforcement would refuse to drop a table that
/// others point at, even one replaced in the same transaction); every reference is checked once
/// they are done.
async fn migrate(options: &SqliteConnectOptions) -> StoreResult<()> {
    let mut conn = options.clone().foreign_keys(false).connect().await?;
    sqlx::migrate!("./src/store/sqlite/migrations")
        .run(&mut conn)
        .await?;
    let dangling: Option<(String, Option<i64>, String)> =
        sqlx::query_as("SELECT \"table\", rowid, parent FROM pragma_foreign_key_check LIMIT 1")
            .fetch_optional(&mut conn)
            .await?;
    conn.close().await?;
    match dangling {
        Some((table, rowid, parent)) => Err(StoreError::Corrupt(format!(
            "row {} of {table} points at a missing {parent} row",
            rowid.map_or_else(|| "?".to_owned(), |rowid| rowid.to_string())
        ))),
        None => Ok(()),
    }
}

// --- conversions between stored values and domain types

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn opt_ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ms)
}

fn time(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}

fn opt_time(ms: Option<i64>) -> StoreResult<Option<DateTime<Utc>>> {
    ms.map(time).transpose()
}

fn counter(value: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value}")))
}

fn invalid(e: ValidationError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn json_error(what: &str) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

/// serde_json only fails on maps with non-string keys or failing `Serialize` impls; the values
/// stored here (channels, filter lists, ids, batches of plain tuples) have neither.
/// A batch's statement reads its rows through `WITH r(v) AS MATERIALIZED (SELECT value FROM
/// json_each(?1))`: each row's text is then produced once, not once per `v ->> n`.
fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("stored JSON values always serialize")
}

/// A JSON array of ids, bound as one parameter and expanded with `json_each` so a batch needs no
/// dynamically built `IN (?, ?, ...)` list.
fn id_list<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    to_json(&ids.into_iter().collect::<Vec<_>>())
}

fn outcome_str(resolution: &AttemptResolution) -> &'static str {
    match resolution {
        AttemptResolution::Delivered => "delivered",
        AttemptResolution::RetryAt(_) => "retry",
        AttemptResolution::Failed => "failed",
    }
}

fn decode_filter(
    event_types: Option<&str>,
    order_ids: Option<&str>,
) -> StoreResult<SubscriberFilter> {
    Ok(SubscriberFilter {
        event_types: event_types
            .map(serde_json::from_str)
            .transpose()
            .map_err(json_error("subscriber event_types"))?,
        order_ids: order_ids
            .map(serde_json::from_str)
            .transpose()
            .map_err(json_error("subscriber order_ids"))?,
    })
}

// --- rows

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

#[derive(sqlx::FromRow)]
struct SubscriberRow {
    id: String,
    config: String,
    event_types: Option<String>,
    order_ids: Option<String>,
    description: Option<String>,
    status: String,
    disabled_reason: Option<String>,
    mark_read: String,
    created_at: i64,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct SecretRow {
    subscriber_id: String,
    secret: String,
    created_at: i64,
    expires_at: Option<i64>,
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

// --- shared loaders (usable inside a transaction or on a pooled connection)

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

/// Subscribers with their secrets (newest first): those named in `ids` (an [`id_list`]), or all.
async fn load_subscribers(
    conn: &mut SqliteConnection,
    ids: Option<&str>,
) -> StoreResult<Vec<Subscriber>> {
    macro_rules! subscribers {
        ($rest:literal) => {
            concat!(
                "SELECT id, config, event_types, order_ids, description, status, \
                 disabled_reason, mark_read, created_at, updated_at FROM subscribers ",
                $rest
            )
        };
    }
    macro_rules! secrets {
        ($rest:literal) => {
            concat!(
                "SELECT subscriber_id, secret, created_at, expires_at FROM subscriber_secrets ",
                $rest
            )
        };
    }
    let (rows, secret_rows) = match ids {
        None => (
            sqlx::query_as::<_, SubscriberRow>(subscribers!("ORDER BY created_at, id"))
                .fetch_all(&mut *conn)
                .await?,
            sqlx::query_as::<_, SecretRow>(secrets!("ORDER BY created_at DESC, seq DESC"))
                .fetch_all(&mut *conn)
                .await?,
        ),
        Some(ids) => (
            sqlx::query_as::<_, SubscriberRow>(subscribers!(
                "WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY created_at, id"
            ))
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?,
            sqlx::query_as::<_, SecretRow>(secrets!(
                "WHERE subscriber_id IN (SELECT value FROM json_each(?1)) \
                 ORDER BY created_at DESC, seq DESC"
            ))
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?,
        ),
    };

    let mut secrets: HashMap<String, Vec<StoredSecret>> = HashMap::new();
    for row in secret_rows {
        let secret = StoredSecret {
            secret: SigningSecret::parse("secret", &row.secret).map_err(invalid)?,
            created_at: time(row.created_at)?,
            expires_at: opt_time(row.expires_at)?,
        };
        secrets.entry(row.subscriber_id).or_default().push(secret);
    }
    rows.into_iter()
        .map(|row| {
            Ok(Subscriber {
                id: SubscriberId::parse("id", &row.id).map_err(invalid)?,
                channel: serde_json::from_str::<Channel>(&row.config)
                    .map_err(json_error("subscriber config"))?,
                filter: decode_filter(row.event_types.as_deref(), row.order_ids.as_deref())?,
                description: row.description,
                status: SubscriberStatus::from_stored(&row.status)?,
                disabled_reason: row.disabled_reason,
                mark_read: MarkReadPolicy::from_stored(&row.mark_read)?,
                created_at: time(row.created_at)?,
                updated_at: time(row.updated_at)?,
                secrets: secrets.remove(&row.id).unwrap_or_default(),
            })
        })
        .collect()
}

/// Id and filter of every active subscriber: all the fan-out needs.
/// An active subscriber as the fan-out sees it.
struct FanOutTarget {
    id: String,
    filter: SubscriberFilter,
    /// An e-mail digest's window, in milliseconds.
    digest_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct FanOutRow {
    id: String,
    event_types: Option<String>,
    order_ids: Option<String>,
    digest_seconds: Option<i64>,
}

async fn active_filters(conn: &mut SqliteConnection) -> StoreResult<Vec<FanOutTarget>> {
    let rows: Vec<FanOutRow> = sqlx::query_as(
        "SELECT id, event_types, order_ids, \
             CASE WHEN config ->> '$.kind' = 'email' THEN config ->> '$.digest_seconds' END \
                 AS digest_seconds \
         FROM subscribers WHERE status = 'active'",
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(FanOutTarget {
                id: row.id,
                filter: decode_filter(row.event_types.as_deref(), row.order_ids.as_deref())?,
                digest_ms: row.digest_seconds.map(|s| s.saturating_mul(1000)),
            })
        })
        .collect()
}

/// When a digest subscriber's new delivery of an event of `order_id` detected at `created` falls
/// due: with the subscriber's pending delivery of that order already due within the window (so
/// the events go out together), else at the window's end. `chosen` remembers this commit's
/// choices, whose rows are not written yet.
async fn digest_due_at(
    conn: &mut SqliteConnection,
    chosen: &mut HashMap<(String, String), i64>,
    subscriber_id: &str,
    order_id: &str,
    created: i64,
    window_ms: i64,
) -> StoreResult<i64> {
    let window_end = created.saturating_add(window_ms);
    let key = (subscriber_id.to_owned(), order_id.to_owned());
    let existing = match chosen.get(&key) {
        Some(due) => Some(*due),
        // Through the order's few events rather than the subscriber's many deliveries.
        None => {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MIN(d.next_attempt_at) FROM events e \
                 JOIN deliveries d ON d.event_seq = e.seq \
                 WHERE e.order_id = ?1 AND d.subscriber_id = ?2 AND d.status = 'pending' \
                     AND d.next_attempt_at > ?3 AND d.next_attempt_at <= ?4",
            )
            .bind(order_id)
            .bind(subscriber_id)
            .bind(created)
            .bind(window_end)
            .fetch_one(&mut *conn)
            .await?
        }
    };
    let due = existing
        .filter(|due| (created + 1..=window_end).contains(due))
        .unwrap_or(window_end);
    chosen.insert(key, due);
    Ok(due)
}

/// One pending delivery per matching active subscriber of each new event (with the index of the
/// commit it came from), all in one statement; counts them into that commit's summary. With
/// `claim`, the deliveries due at once are created claimed (up to its limit) and returned.
async fn fan_out(
    conn: &mut SqliteConnection,
    new_events: &[(usize, &NewEvent)],
    summaries: &mut [CommitSummary],
    claim: Option<&ClaimAtCreation>,
) -> StoreResult<Vec<ClaimedDelivery>> {
    let subscribers = active_filters(&mut *conn).await?;
    let mut digests = HashMap::new();
    let mut rows = Vec::new();
    // (row, event) of each delivery created claimed.
    let mut claimed: Vec<(usize, &NewEvent)> = Vec::new();
    let claim_limit = claim.map_or(0, |claim| claim.limit);
    for &(index, event) in new_events {
        let created = ms(event.created_at);
        for target in &subscribers {
            let excluded = event
                .exclude_subscribers
                .iter()
                .any(|id| id.as_str() == target.id);
            if excluded || !target.filter.matches(event.event_type, &event.order_id) {
                continue;
            }
            let due = match target.digest_ms {
                None => created,
                Some(window_ms) => {
                    digest_due_at(
                        &mut *conn,
                        &mut digests,
                        &target.id,
                        event.order_id.as_str(),
                        created,
                        window_ms,
                    )
                    .await?
                }
            };
            // Claimed as `claim_due_deliveries` would: due again (and claimable) when the
            // lease ends.
            let (due, claimed_by) = match claim {
                Some(claim) if due == created && claimed.len() < claim_limit => {
                    claimed.push((rows.len(), event));
                    (ms(claim.lease_until), Some(claim))
                }
                _ => (due, None),
            };
            rows.push((
                DeliveryId::generate(),
                event.id.as_str(),
                target.id.as_str(),
                due,
                created,
                claimed_by.map(|claim| claim.claim.as_str()),
                claimed_by.map(|claim| ms(claim.lease_until)),
            ));
            summaries[index].deliveries_created += 1;
        }
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query(
        "WITH r(v) AS MATERIALIZED (SELECT value FROM json_each(?1)) \
         INSERT INTO deliveries (id, event_seq, subscriber_id, status, \
             next_attempt_at, created_at, updated_at, claim, claimed_until) \
         SELECT v ->> 0, (SELECT seq FROM events WHERE id = v ->> 1), v ->> 2, 'pending', \
             v ->> 3, v ->> 4, v ->> 4, v ->> 5, v ->> 6 \
         FROM r",
    )
    .bind(to_json(&rows))
    .execute(&mut *conn)
    .await?;
    let Some(claim) = claim.filter(|_| !claimed.is_empty()) else {
        return Ok(Vec::new());
    };

    let mut subscriber_ids: Vec<&str> = claimed.iter().map(|&(row, _)| rows[row].2).collect();
    subscriber_ids.sort_unstable();
    subscriber_ids.dedup();
    let subscribers: HashMap<String, Arc<Subscriber>> =
        load_subscribers(&mut *conn, Some(&id_list(subscriber_ids)))
            .await?
            .into_iter()
            .map(|s| (s.id.as_str().to_owned(), Arc::new(s)))
            .collect();
    let mut payloads: HashMap<&str, Arc<str>> = HashMap::new();
    claimed
        .into_iter()
        .map(|(row, event)| {
            let (id, _, subscriber_id, ..) = &rows[row];
            let subscriber = subscribers.get(*subscriber_id).ok_or_else(|| {
                StoreError::Corrupt(format!("subscriber {subscriber_id} vanished in a commit"))
            })?;
            Ok(ClaimedDelivery {
                id: id.clone(),
                claim: claim.claim.clone(),
                event_id: event.id.clone(),
                event_type: event.event_type,
                order_id: event.order_id.clone(),
                event_created_at: event.created_at,
                payload: payloads
                    .entry(event.id.as_str())
                    .or_insert_with(|| Arc::from(event.payload.as_str()))
                    .clone(),
                attempts_made: 0,
                subscriber: Arc::clone(subscriber),
            })
        })
        .collect()
}

async fn load_subscriber(
    conn: &mut SqliteConnection,
    id: &SubscriberId,
) -> StoreResult<Option<Subscriber>> {
    let ids = id_list([id.as_str()]);
    Ok(load_subscribers(conn, Some(&ids)).await?.pop())
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
async fn pause_deliveries(
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

#[async_trait]
impl Store for SqliteStore {
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
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT next_poll_at FROM orders \
             WHERE state = 'watching' AND next_poll_at IS NOT NULL \
             ORDER BY next_poll_at LIMIT 1",
        )
        .fetch_optional(&self.reader)
        .await?;
        opt_time(next)
    }

    #[tracing::instrument(skip_all, fields(orders = order_ids.len()))]
    async fn seen_states(&self, order_ids: &[OrderId]) -> StoreResult<HashMap<OrderId, SeenState>> {
        if order_ids.is_empty() {
            return Ok(HashMap::new());
        }
        // One read over three tables, each by its primary key's leading `order_id`.
        let rows: Vec<(String, String, i64, bool, Option<String>)> = sqlx::query_as(
            "SELECT order_id, kind, upstream_id, read, NULL FROM seen_items \
                 WHERE order_id IN (SELECT value FROM json_each(?1)) \
             UNION ALL \
             SELECT order_id, 'sent', message_id, 0, origin_subscriber_id FROM sent_messages \
                 WHERE order_id IN (SELECT value FROM json_each(?1)) \
             UNION ALL \
             SELECT order_id, 'read_request', message_id, 0, subscriber_id FROM read_requests \
                 WHERE order_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(id_list(order_ids.iter().map(OrderId::as_str)))
        .fetch_all(&self.reader)
        .await?;
        let subscriber = |id: Option<String>| {
            id.map(|id| SubscriberId::parse("subscriber_id", &id).map_err(invalid))
                .transpose()
        };
        let mut states: HashMap<&str, SeenState> = order_ids
            .iter()
            .map(|id| (id.as_str(), SeenState::default()))
            .collect();
        for (order_id, kind, upstream_id, read, subscriber_id) in rows {
            // Only the orders asked for are read.
            let Some(seen) = states.get_mut(order_id.as_str()) else {
                continue;
            };
            match kind.as_str() {
                "chat" => {
                    seen.chat.insert(upstream_id, read);
                }
                "lifecycle" => {
                    seen.lifecycle.insert(upstream_id);
                }
                "sent" => {
                    seen.sent.insert(upstream_id, subscriber(subscriber_id)?);
                }
                "read_request" => {
                    let requester = subscriber(subscriber_id)?.ok_or_else(|| {
                        StoreError::Corrupt("read request without a subscriber".to_owned())
                    })?;
                    seen.read_requested
                        .entry(upstream_id)
                        .or_default()
                        .push(requester);
                }
                other => return Err(StoreError::Corrupt(format!("seen item kind {other:?}"))),
            }
        }
        Ok(order_ids
            .iter()
            .filter_map(|id| Some((id.clone(), states.remove(id.as_str())?)))
            .collect())
    }

    #[tracing::instrument(skip_all, fields(commits = commits.len()))]
    async fn commit_polls(
        &self,
        commits: &[PollCommit],
        claim: Option<&ClaimAtCreation>,
    ) -> StoreResult<CommittedPolls> {
        if commits.is_empty() {
            return Ok(CommittedPolls::default());
        }
        // Each kind of change goes in with one statement for the whole batch, its rows carried
        // by one JSON array: a poll with news costs rows, not statements.
        let mut seen_rows = Vec::new();
        let mut read_rows = Vec::new();
        let mut event_rows = Vec::new();
        // Payloads travel beside the JSON rows, as one blob the rows point into: inside a JSON
        // string each would be escaped here, then parsed and unescaped again by SQLite.
        let mut payloads = Vec::new();
        for commit in commits {
            let order_id = commit.order_id.as_str();
            seen_rows.extend(
                commit
                    .new_chat
                    .iter()
                    .map(|&(id, read)| (order_id, "chat", id, read)),
            );
            seen_rows.extend(
                commit
                    .new_lifecycle
                    .iter()
                    .map(|&id| (order_id, "lifecycle", id, false)),
            );
            read_rows.extend(commit.newly_read.iter().map(|&id| (order_id, id)));
            for event in &commit.events {
                // 1-based, as SQLite's `substr` counts.
                let start = payloads.len() + 1;
                payloads.extend_from_slice(event.payload.as_bytes());
                event_rows.push((
                    event.id.as_str(),
                    event.order_id.as_str(),
                    event.event_type.as_str(),
                    ms(event.created_at),
                    start,
                    event.payload.len(),
                ));
            }
        }
        // Of two commits of the same order, the later one's progress stands.
        let mut progressed = HashSet::new();
        let progress_rows: Vec<_> = commits
            .iter()
            .rev()
            .filter(|commit| progressed.insert(commit.order_id.as_str()))
            .map(|commit| {
                let progress = &commit.progress;
                (
                    commit.order_id.as_str(),
                    progress.state.as_str(),
                    progress.fallback.map(FallbackReason::as_str),
                    opt_ms(progress.next_poll_at),
                    ms(progress.polled_at),
                    progress.last_error.as_deref(),
                    progress.consecutive_failures,
                    progress.not_found_count,
                )
            })
            .collect();
        let event_ids = id_list(
            commits
                .iter()
                .flat_map(|commit| &commit.events)
                .map(|event| event.id.as_str()),
        );
        let event_rows = to_json(&event_rows);
        let mut tx = self.write_tx().await?;
        if !seen_rows.is_empty() {
            // `WHERE true` keeps the upsert's ON from being parsed as a join constraint.
            sqlx::query(
                "INSERT INTO seen_items (order_id, kind, upstream_id, read) \
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 \
                 FROM json_each(?1) WHERE true \
                 ON CONFLICT DO NOTHING",
            )
            .bind(to_json(&seen_rows))
            .execute(&mut *tx)
            .await?;
        }
        if !read_rows.is_empty() {
            let read_rows = to_json(&read_rows);
            sqlx::query(
                "UPDATE seen_items SET read = 1 \
                 WHERE (order_id, kind, upstream_id) IN \
                     (SELECT value ->> 0, 'chat', value ->> 1 FROM json_each(?1))",
            )
            .bind(&read_rows)
            .execute(&mut *tx)
            .await?;
            // A reading is announced once: who asked for it matters no more.
            sqlx::query(
                "DELETE FROM read_requests WHERE (order_id, message_id) IN \
                     (SELECT value ->> 0, value ->> 1 FROM json_each(?1))",
            )
            .bind(&read_rows)
            .execute(&mut *tx)
            .await?;
        }

        let mut summaries = vec![CommitSummary::default(); commits.len()];
        let mut claimed = Vec::new();
        if commits.iter().any(|commit| !commit.events.is_empty()) {
            // The events already stored come back as one row: a row per inserted event would
            // cost a hop between threads each.
            let stored: String = sqlx::query_scalar(
                "SELECT json_group_array(id) FROM events \
                 WHERE id IN (SELECT value FROM json_each(?1))",
            )
            .bind(&event_ids)
            .fetch_one(&mut *tx)
            .await?;
            let stored: Vec<String> =
                serde_json::from_str(&stored).map_err(json_error("stored event ids"))?;
            // A blob's `substr` counts bytes; the cast reads them back as the UTF-8 text they
            // were.
            sqlx::query(
                "WITH r(v) AS MATERIALIZED (SELECT value FROM json_each(?1)) \
                 INSERT INTO events (id, order_id, type, payload, created_at) \
                 SELECT v ->> 0, v ->> 1, v ->> 2, \
                     CAST(substr(?2, v ->> 4, v ->> 5) AS TEXT), v ->> 3 \
                 FROM r WHERE true \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&event_rows)
            .bind(&payloads)
            .execute(&mut *tx)
            .await?;
            // An event is new where it was neither stored before nor earlier in this batch.
            let mut known: HashSet<&str> = stored.iter().map(String::as_str).collect();
            let mut new_events = Vec::new();
            for (index, commit) in commits.iter().enumerate() {
                for event in &commit.events {
                    if known.insert(event.id.as_str()) {
                        summaries[index].events_inserted += 1;
                        new_events.push((index, event));
                    }
                }
            }
            // Subscribers are only read when there is something new to fan out.
            if !new_events.is_empty() {
                claimed = fan_out(&mut tx, &new_events, &mut summaries, claim).await?;
            }
        }

        // `+state`: without it the planner walks every watched order by the (state,
        // next_poll_at) index and scans the batch for each, instead of looking the batch's
        // orders up by key.
        sqlx::query(
            "UPDATE orders SET state = p.state, fallback = p.fallback, \
                 next_poll_at = p.next_poll_at, last_polled_at = p.polled_at, \
                 last_error = p.last_error, consecutive_failures = p.failures, \
                 not_found_count = p.not_found \
             FROM (SELECT value ->> 0 AS order_id, value ->> 1 AS state, \
                          value ->> 2 AS fallback, value ->> 3 AS next_poll_at, \
                          value ->> 4 AS polled_at, value ->> 5 AS last_error, \
                          value ->> 6 AS failures, value ->> 7 AS not_found \
                   FROM json_each(?1)) AS p \
             WHERE orders.order_id = p.order_id AND +orders.state = 'watching'",
        )
        .bind(to_json(&progress_rows))
        .execute(&mut *tx)
        .await?;

        tx.commit().await?;
        Ok(CommittedPolls { summaries, claimed })
    }

    #[tracing::instrument(skip_all, fields(subscriber_id = %new.id))]
    async fn create_subscriber(&self, new: NewSubscriber) -> StoreResult<Subscriber> {
        let mut tx = self.write_tx().await?;
        let now = ms(new.created_at);
        sqlx::query(
            "INSERT INTO subscribers \
             (id, config, event_types, order_ids, description, status, mark_read, created_at, \
              updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?7, ?7)",
        )
        .bind(new.id.as_str())
        .bind(to_json(&new.channel))
        .bind(new.filter.event_types.as_ref().map(to_json))
        .bind(new.filter.order_ids.as_ref().map(to_json))
        .bind(new.description.as_deref())
        .bind(new.mark_read.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO subscriber_secrets (subscriber_id, secret, created_at) VALUES (?1, ?2, ?3)",
        )
        .bind(new.id.as_str())
        .bind(new.secret.expose())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let subscriber = load_subscriber(&mut tx, &new.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("subscriber {} vanished", new.id)))?;
        tx.commit().await?;
        Ok(subscriber)
    }

    #[tracing::instrument(skip_all, fields(subscriber_id = %id))]
    async fn get_subscriber(&self, id: &SubscriberId) -> StoreResult<Option<Subscriber>> {
        let mut conn = self.reader.acquire().await?;
        load_subscriber(&mut conn, id).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_subscribers(&self) -> StoreResult<Vec<Subscriber>> {
        let mut conn = self.reader.acquire().await?;
        load_subscribers(&mut conn, None).await
    }

    #[tracing::instrument(skip_all, fields(subscriber_id = %id))]
    async fn update_subscriber(
        &self,
        id: &SubscriberId,
        patch: SubscriberPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Subscriber>> {
        let mut tx = self.write_tx().await?;
        let Some(mut subscriber) = load_subscriber(&mut tx, id).await? else {
            return Ok(None);
        };
        if let Some(channel) = patch.channel {
            subscriber.channel = channel;
        }
        if let Some(event_types) = patch.event_types {
            subscriber.filter.event_types = event_types;
        }
        if let Some(order_ids) = patch.order_ids {
            subscriber.filter.order_ids = order_ids;
        }
        if let Some(description) = patch.description {
            subscriber.description = description;
        }
        if let Some(mark_read) = patch.mark_read {
            subscriber.mark_read = mark_read;
        }
        let was = subscriber.status;
        if let Some(status) = patch.status {
            // Re-enabling clears why it was switched off; the reason of a disable stays.
            if status == SubscriberStatus::Active {
                subscriber.disabled_reason = None;
            }
            subscriber.status = status;
        }
        sqlx::query(
            "UPDATE subscribers SET config = ?1, event_types = ?2, order_ids = ?3, \
                 description = ?4, status = ?5, disabled_reason = ?6, updated_at = ?7, \
                 mark_read = ?9 \
             WHERE id = ?8",
        )
        .bind(to_json(&subscriber.channel))
        .bind(subscriber.filter.event_types.as_ref().map(to_json))
        .bind(subscriber.filter.order_ids.as_ref().map(to_json))
        .bind(subscriber.description.as_deref())
        .bind(SubscriberStatus::as_str(subscriber.status))
        .bind(subscriber.disabled_reason.as_deref())
        .bind(ms(now))
        .bind(id.as_str())
        .bind(subscriber.mark_read.as_str())
        .execute(&mut *tx)
        .await?;
        match (was, subscriber.status) {
            (SubscriberStatus::Active, SubscriberStatus::Disabled) => {
                pause_deliveries(&mut tx, id).await?;
            }
            (SubscriberStatus::Disabled, SubscriberStatus::Active) => {
                // One whose attempt is still in flight stays leased until its claim ends.
                sqlx::query(
                    "UPDATE deliveries SET next_attempt_at = MAX(?1, COALESCE(claimed_until, ?1)) \
                     WHERE subscriber_id = ?2 AND status = 'pending' \
                         AND next_attempt_at IS NULL",
                )
                .bind(ms(now))
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
            }
            _ => {}
        }
        tx.commit().await?;
        subscriber.updated_at = time(ms(now))?;
        Ok(Some(subscriber))
    }

    #[tracing::instrument(skip_all, fields(subscriber_id = %id))]
    async fn delete_subscriber(&self, id: &SubscriberId) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        // Its secrets go with it (ON DELETE CASCADE); its deliveries stay as history.
        let deleted = sqlx::query("DELETE FROM subscribers WHERE id = ?1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        let parked = sqlx::query(
            "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, updated_at = ?1 \
             WHERE subscriber_id = ?2 AND status = 'pending'",
        )
        .bind(ms(Utc::now()))
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        tracing::debug!(parked, "subscriber deleted");
        Ok(true)
    }

    #[tracing::instrument(skip_all, fields(subscriber_id = %id))]
    async fn rotate_secret(
        &self,
        id: &SubscriberId,
        new_secret: SigningSecret,
        now: DateTime<Utc>,
        old_expires_at: DateTime<Utc>,
    ) -> StoreResult<Option<Subscriber>> {
        let mut tx = self.write_tx().await?;
        let touched = sqlx::query("UPDATE subscribers SET updated_at = ?1 WHERE id = ?2")
            .bind(ms(now))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if touched == 0 {
            return Ok(None);
        }
        // Secrets past their grace period sign nothing any more: drop the key material.
        sqlx::query(
            "DELETE FROM subscriber_secrets \
             WHERE subscriber_id = ?1 AND expires_at IS NOT NULL AND expires_at <= ?2",
        )
        .bind(id.as_str())
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE subscriber_secrets SET expires_at = ?1 \
             WHERE subscriber_id = ?2 AND expires_at IS NULL",
        )
        .bind(ms(old_expires_at))
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO subscriber_secrets (subscriber_id, secret, created_at) VALUES (?1, ?2, ?3)",
        )
        .bind(id.as_str())
        .bind(new_secret.expose())
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        let subscriber = load_subscriber(&mut tx, id).await?;
        tx.commit().await?;
        Ok(subscriber)
    }

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
        let mut subscriber_ids: Vec<&str> = due.iter().map(|d| d.3.as_str()).collect();
        subscriber_ids.sort_unstable();
        subscriber_ids.dedup();
        let subscribers: HashMap<String, Arc<Subscriber>> =
            load_subscribers(&mut conn, Some(&id_list(subscriber_ids)))
                .await?
                .into_iter()
                .map(|s| (s.id.as_str().to_owned(), Arc::new(s)))
                .collect();
        drop(conn);

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

    #[tracing::instrument(skip_all, fields(records = records.len()))]
    async fn record_attempts(&self, records: &[AttemptRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        // One JSON array carries the whole batch: two statements however many records.
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
        let rows = to_json(&rows);
        let mut tx = self.write_tx().await?;
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
            .fetch_one(&mut *tx)
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
            .execute(&mut *tx)
            .await?;
            pause_deliveries(&mut tx, subscriber_id).await?;
            tracing::info!(subscriber_id = %subscriber_id, reason, "subscriber disabled");
        }
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
        // Deliveries of disabled subscribers are paused (no due time): they wake no one.
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT next_attempt_at FROM deliveries \
             WHERE status = 'pending' AND next_attempt_at IS NOT NULL \
             ORDER BY next_attempt_at LIMIT 1",
        )
        .fetch_optional(&self.reader)
        .await?;
        opt_time(next)
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
