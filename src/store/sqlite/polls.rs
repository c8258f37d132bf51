//! A poll's results going in (seen items, events, their fan-out to subscribers, the order's
//! progress) and the diff memory read back.

use async_trait::async_trait;
use sqlx::SqliteConnection;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::subscribers::{decode_filter, subscribers_by_id};
use super::{id_list, invalid, json_error, ms, opt_ms, to_json, SqliteStore};
use crate::domain::{
    ClaimedDelivery, DeliveryId, FallbackReason, NewEvent, OrderId, SeenState, SubscriberFilter,
    SubscriberId,
};
use crate::store::{
    ClaimAtCreation, CommitSummary, CommittedPolls, PollCommit, PollStore, StoreError, StoreResult,
};

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

/// Id, filter and digest window of every active subscriber: all the fan-out needs.
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

/// A delivery row as `fan_out` writes it: id, event id, subscriber id, due time, creation
/// time, and the claim and lease it is created under, if any.
type NewDeliveryRow<'a> = (
    DeliveryId,
    &'a str,
    &'a str,
    i64,
    i64,
    Option<&'a str>,
    Option<i64>,
);

/// What the fan-out is about to write: its rows, and (row, event) of each delivery created
/// claimed.
struct Planned<'a> {
    rows: Vec<NewDeliveryRow<'a>>,
    claimed: Vec<(usize, &'a NewEvent)>,
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
    let targets = active_filters(&mut *conn).await?;
    let planned = plan_deliveries(&mut *conn, &targets, new_events, summaries, claim).await?;
    if planned.rows.is_empty() {
        return Ok(Vec::new());
    }
    insert_deliveries(&mut *conn, &planned.rows).await?;
    let Some(claim) = claim.filter(|_| !planned.claimed.is_empty()) else {
        return Ok(Vec::new());
    };
    claimed_at_creation(conn, &planned, claim).await
}

/// Which subscriber gets which new event when, and which of those deliveries the commit claims.
async fn plan_deliveries<'a>(
    conn: &mut SqliteConnection,
    targets: &'a [FanOutTarget],
    new_events: &[(usize, &'a NewEvent)],
    summaries: &mut [CommitSummary],
    claim: Option<&'a ClaimAtCreation>,
) -> StoreResult<Planned<'a>> {
    let mut digests = HashMap::new();
    let mut rows = Vec::new();
    let mut claimed: Vec<(usize, &NewEvent)> = Vec::new();
    let claim_limit = claim.map_or(0, |claim| claim.limit);
    for &(index, event) in new_events {
        let created = ms(event.created_at);
        for target in targets {
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
    Ok(Planned { rows, claimed })
}

async fn insert_deliveries(
    conn: &mut SqliteConnection,
    rows: &[NewDeliveryRow<'_>],
) -> StoreResult<()> {
    sqlx::query(
        "WITH r(v) AS MATERIALIZED (SELECT value FROM json_each(?1)) \
         INSERT INTO deliveries (id, event_seq, subscriber_id, status, \
             next_attempt_at, created_at, updated_at, claim, claimed_until) \
         SELECT v ->> 0, (SELECT seq FROM events WHERE id = v ->> 1), v ->> 2, 'pending', \
             v ->> 3, v ->> 4, v ->> 4, v ->> 5, v ->> 6 \
         FROM r",
    )
    .bind(to_json(rows))
    .execute(conn)
    .await?;
    Ok(())
}

/// The deliveries the commit created claimed, as the dispatcher sends them: their subscribers
/// read once, each payload shared by the deliveries of its event.
async fn claimed_at_creation(
    conn: &mut SqliteConnection,
    planned: &Planned<'_>,
    claim: &ClaimAtCreation,
) -> StoreResult<Vec<ClaimedDelivery>> {
    let rows = &planned.rows;
    let subscribers =
        subscribers_by_id(conn, planned.claimed.iter().map(|&(row, _)| rows[row].2)).await?;
    let mut payloads: HashMap<&str, Arc<str>> = HashMap::new();
    planned
        .claimed
        .iter()
        .map(|&(row, event)| {
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

/// A batch of polls as the rows its statements carry, each kind of change in one JSON array:
/// a poll with news costs rows, not statements.
struct PollRows<'a> {
    /// Order id, kind, upstream id, read.
    seen: Vec<(&'a str, &'static str, i64, bool)>,
    /// Order id and chat message id of each reading.
    read: Vec<(&'a str, i64)>,
    /// The ids of the batch's events, as an [`id_list`].
    event_ids: String,
    /// Id, order id, type, creation time, and where its payload lies in `payloads`.
    events: String,
    /// Payloads travel beside the JSON rows, as one blob the rows point into: inside a JSON
    /// string each would be escaped here, then parsed and unescaped again by SQLite.
    payloads: Vec<u8>,
    /// Each order's progress, once per order.
    progress: Vec<ProgressRow<'a>>,
}

/// Order id, state, fallback, next poll, polled at, last error, failures, not-found count.
type ProgressRow<'a> = (
    &'a str,
    &'static str,
    Option<&'static str>,
    Option<i64>,
    i64,
    Option<&'a str>,
    u32,
    u32,
);

impl<'a> PollRows<'a> {
    fn of(commits: &'a [PollCommit]) -> Self {
        let mut seen = Vec::new();
        let mut read = Vec::new();
        let mut events = Vec::new();
        let mut payloads = Vec::new();
        for commit in commits {
            let order_id = commit.order_id.as_str();
            seen.extend(
                commit
                    .new_chat
                    .iter()
                    .map(|&(id, read)| (order_id, "chat", id, read)),
            );
            seen.extend(
                commit
                    .new_lifecycle
                    .iter()
                    .map(|&id| (order_id, "lifecycle", id, false)),
            );
            read.extend(commit.newly_read.iter().map(|&id| (order_id, id)));
            for event in &commit.events {
                // 1-based, as SQLite's `substr` counts.
                let start = payloads.len() + 1;
                payloads.extend_from_slice(event.payload.as_bytes());
                events.push((
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
        let progress = commits
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
        PollRows {
            seen,
            read,
            event_ids,
            events: to_json(&events),
            payloads,
            progress,
        }
    }
}

async fn insert_seen_items(
    conn: &mut SqliteConnection,
    seen: &[(&str, &str, i64, bool)],
) -> StoreResult<()> {
    if seen.is_empty() {
        return Ok(());
    }
    // `WHERE true` keeps the upsert's ON from being parsed as a join constraint.
    sqlx::query(
        "INSERT INTO seen_items (order_id, kind, upstream_id, read) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 \
         FROM json_each(?1) WHERE true \
         ON CONFLICT DO NOTHING",
    )
    .bind(to_json(seen))
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks chat messages read and forgets who asked for those readings.
async fn apply_readings(conn: &mut SqliteConnection, read: &[(&str, i64)]) -> StoreResult<()> {
    if read.is_empty() {
        return Ok(());
    }
    let read_rows = to_json(read);
    sqlx::query(
        "UPDATE seen_items SET read = 1 \
         WHERE (order_id, kind, upstream_id) IN \
             (SELECT value ->> 0, 'chat', value ->> 1 FROM json_each(?1))",
    )
    .bind(&read_rows)
    .execute(&mut *conn)
    .await?;
    // A reading is announced once: who asked for it matters no more.
    sqlx::query(
        "DELETE FROM read_requests WHERE (order_id, message_id) IN \
             (SELECT value ->> 0, value ->> 1 FROM json_each(?1))",
    )
    .bind(&read_rows)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts the batch's events not stored yet, counting them into their commits' summaries;
/// returns them with the index of the commit each came from.
async fn insert_events<'a>(
    conn: &mut SqliteConnection,
    commits: &'a [PollCommit],
    rows: &PollRows<'_>,
    summaries: &mut [CommitSummary],
) -> StoreResult<Vec<(usize, &'a NewEvent)>> {
    // The events already stored come back as one row: a row per inserted event would cost a
    // hop between threads each.
    let stored: String = sqlx::query_scalar(
        "SELECT json_group_array(id) FROM events \
         WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(&rows.event_ids)
    .fetch_one(&mut *conn)
    .await?;
    let stored: Vec<String> =
        serde_json::from_str(&stored).map_err(json_error("stored event ids"))?;
    // A blob's `substr` counts bytes; the cast reads them back as the UTF-8 text they were.
    sqlx::query(
        "WITH r(v) AS MATERIALIZED (SELECT value FROM json_each(?1)) \
         INSERT INTO events (id, order_id, type, payload, created_at) \
         SELECT v ->> 0, v ->> 1, v ->> 2, \
             CAST(substr(?2, v ->> 4, v ->> 5) AS TEXT), v ->> 3 \
         FROM r WHERE true \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&rows.events)
    .bind(&rows.payloads)
    .execute(&mut *conn)
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
    Ok(new_events)
}

/// Writes each order's polling state, only while it is still watched: a concurrent stop wins.
async fn write_progress(
    conn: &mut SqliteConnection,
    progress: &[ProgressRow<'_>],
) -> StoreResult<()> {
    // `+state`: without it the planner walks every watched order by the (state, next_poll_at)
    // index and scans the batch for each, instead of looking the batch's orders up by key.
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
    .bind(to_json(progress))
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl PollStore for SqliteStore {
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
        let rows = PollRows::of(commits);
        let mut tx = self.write_tx().await?;
        insert_seen_items(&mut tx, &rows.seen).await?;
        apply_readings(&mut tx, &rows.read).await?;
        let mut summaries = vec![CommitSummary::default(); commits.len()];
        let mut claimed = Vec::new();
        if commits.iter().any(|commit| !commit.events.is_empty()) {
            let new_events = insert_events(&mut tx, commits, &rows, &mut summaries).await?;
            // Subscribers are only read when there is something new to fan out.
            if !new_events.is_empty() {
                claimed = fan_out(&mut tx, &new_events, &mut summaries, claim).await?;
            }
        }
        write_progress(&mut tx, &rows.progress).await?;
        tx.commit().await?;
        Ok(CommittedPolls { summaries, claimed })
    }
}
