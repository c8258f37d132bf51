//! Subscribers and their signing secrets.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use std::collections::HashMap;
use std::sync::Arc;

use super::deliveries::pause_deliveries;
use super::{id_list, invalid, json_error, ms, opt_time, time, to_json, SqliteStore};
use crate::domain::{
    Channel, MarkReadPolicy, NewSubscriber, SigningSecret, StoredSecret, Subscriber,
    SubscriberFilter, SubscriberId, SubscriberPatch, SubscriberStatus,
};
use crate::store::{StoreError, StoreResult, SubscriberStore};

pub(super) fn decode_filter(
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

/// The subscribers named in `ids` (repeats allowed), by id, each shared by the deliveries that
/// go to it.
pub(super) async fn subscribers_by_id<'a>(
    conn: &mut SqliteConnection,
    ids: impl IntoIterator<Item = &'a str>,
) -> StoreResult<HashMap<String, Arc<Subscriber>>> {
    let mut ids: Vec<&str> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(load_subscribers(conn, Some(&id_list(ids)))
        .await?
        .into_iter()
        .map(|s| (s.id.as_str().to_owned(), Arc::new(s)))
        .collect())
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

async fn load_subscriber(
    conn: &mut SqliteConnection,
    id: &SubscriberId,
) -> StoreResult<Option<Subscriber>> {
    let ids = id_list([id.as_str()]);
    Ok(load_subscribers(conn, Some(&ids)).await?.pop())
}

#[async_trait]
impl SubscriberStore for SqliteStore {
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
}
