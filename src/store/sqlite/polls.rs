//! A poll's results going in (seen items, events, their fan-out to subscribers, the order's
//! progress) and the diff memory read back.

use async_trait::async_trait;
use sqlx::SqliteConnection;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::subscribers::{decode_filter, load_subscribers};
use super::{id_list, invalid, json_error, ms, opt_ms, to_json, SqliteStore};
use crate::domain::{
    ClaimedDelivery, DeliveryId, FallbackReason, NewEvent, OrderId, SeenState, Subscriber,
    SubscriberFilter, SubscriberId,
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
}
