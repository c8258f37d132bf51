//! The SQLite backend. SQLite allows one writer at a time, so every write goes through a pool of
//! exactly one connection: writers queue in-process instead of failing with `SQLITE_BUSY`, and
//! each write transaction starts with `BEGIN IMMEDIATE` so it never has to upgrade a read lock
//! (a write of one statement runs on its own: it takes the write lock as it starts).
//! Reads use a small separate pool; in WAL mode they run alongside the writer and see the last
//! committed state. Times are stored as INTEGER unix milliseconds.
//!
//! One file per aggregate implements its role trait; the helpers they share live here.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Sqlite, Transaction};
use std::str::FromStr;
use std::time::Duration;

use super::{StoreError, StoreResult};
use crate::domain::ValidationError;

mod deliveries;
mod orders;
mod polls;
mod subscribers;
mod talkback;
mod threads;

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

    /// When the first item of `queue` falls due, if any.
    async fn next_due(&self, queue: Queue) -> StoreResult<Option<DateTime<Utc>>> {
        let next: Option<i64> = sqlx::query_scalar(queue.next_due_query())
            .fetch_optional(&self.reader)
            .await?;
        opt_time(next)
    }
}

/// What waits for a due time: watched orders their next poll, pending deliveries their next
/// attempt. Each has a (status, due time) index that yields the earliest at once.
#[derive(Debug, Clone, Copy)]
enum Queue {
    Polls,
    Deliveries,
}

macro_rules! next_due_query {
    ($table:literal, $waiting:literal, $due:literal) => {
        concat!(
            "SELECT ",
            $due,
            " FROM ",
            $table,
            " WHERE ",
            $waiting,
            " AND ",
            $due,
            " IS NOT NULL ORDER BY ",
            $due,
            " LIMIT 1"
        )
    };
}

impl Queue {
    fn next_due_query(self) -> &'static str {
        match self {
            Queue::Polls => next_due_query!("orders", "state = 'watching'", "next_poll_at"),
            // Deliveries of disabled subscribers are paused (no due time): they wake no one.
            Queue::Deliveries => {
                next_due_query!("deliveries", "status = 'pending'", "next_attempt_at")
            }
        }
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
