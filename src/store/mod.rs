//! Durable state behind role-sized traits, one per aggregate, so a PostgreSQL backend can follow
//! SQLite without touching callers; [`Store`] is all of them, what the bridge passes around.
//! Times are UTC; backends choose their own column types.

use std::sync::Arc;

use crate::domain::UnknownVariant;

mod deliveries;
mod orders;
mod polls;
mod sqlite;
mod subscribers;
mod talkback;
mod threads;

pub use deliveries::{DeliveryFilter, DeliveryStore, RetryOutcome};
pub use orders::OrderStore;
pub use polls::{ClaimAtCreation, CommitSummary, CommittedPolls, PollCommit, PollStore};
pub use sqlite::SqliteStore;
pub use subscribers::SubscriberStore;
pub use talkback::TalkbackStore;
pub use threads::ThreadStore;

/// Every role at once: what one backend implements and `Arc<dyn Store>` hands to each caller,
/// which imports the roles it calls.
pub trait Store:
    OrderStore + PollStore + SubscriberStore + DeliveryStore + ThreadStore + TalkbackStore
{
}

impl<T> Store for T where
    T: OrderStore + PollStore + SubscriberStore + DeliveryStore + ThreadStore + TalkbackStore
{
}

/// Opens the store named by `url` (`sqlite://path` or `sqlite:path`), creating the database if
/// missing and applying migrations.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    Ok(Arc::new(SqliteStore::open(url).await?))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<UnknownVariant> for StoreError {
    fn from(unknown: UnknownVariant) -> Self {
        StoreError::Corrupt(unknown.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
