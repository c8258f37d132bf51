//! What the poller remembers of each order (the diff memory) and how one poll's results go in:
//! seen items, events, and the outbox's deliveries, in one transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

use super::StoreResult;
use crate::domain::{ClaimToken, ClaimedDelivery, NewEvent, OrderId, PollProgress, SeenState};

/// Everything one poll of one order changes, written in one transaction: newly seen items, read
/// flags that turned true, the events, one delivery per matching subscriber, and the order's
/// polling state.
#[derive(Debug, Clone, PartialEq)]
pub struct PollCommit {
    pub order_id: OrderId,
    pub new_chat: Vec<(i64, bool)>,
    pub newly_read: Vec<i64>,
    pub new_lifecycle: Vec<i64>,
    pub events: Vec<NewEvent>,
    pub progress: PollProgress,
}

/// Asks [`PollStore::commit_polls`] to claim the deliveries it creates that are due at once (not
/// an e-mail digest's), as [`DeliveryStore::claim_due_deliveries`] would, and return them: the
/// committing process sends them itself without reading them back. Up to `limit`, in creation
/// order.
///
/// [`DeliveryStore::claim_due_deliveries`]: super::DeliveryStore::claim_due_deliveries
#[derive(Debug, Clone)]
pub struct ClaimAtCreation {
    pub claim: ClaimToken,
    pub lease_until: DateTime<Utc>,
    pub limit: usize,
}

/// What [`PollStore::commit_polls`] did: one summary per commit, and the deliveries it claimed.
#[derive(Debug, Default)]
pub struct CommittedPolls {
    pub summaries: Vec<CommitSummary>,
    pub claimed: Vec<ClaimedDelivery>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitSummary {
    pub events_inserted: u64,
    pub deliveries_created: u64,
}

#[async_trait]
pub trait PollStore: Send + Sync + 'static {
    /// The seen state of each of `order_ids`, in one read; an order with nothing seen yet maps
    /// to an empty state.
    async fn seen_states(&self, order_ids: &[OrderId]) -> StoreResult<HashMap<OrderId, SeenState>>;
    /// [`PollStore::seen_states`] for one order.
    async fn seen_state(&self, order_id: &OrderId) -> StoreResult<SeenState> {
        Ok(self
            .seen_states(std::slice::from_ref(order_id))
            .await?
            .remove(order_id)
            .unwrap_or_default())
    }
    /// Applies many polls' results in one transaction (see [`PollCommit`]), returning one
    /// summary per commit, in order. Events already stored (same id) are skipped, and so are
    /// their deliveries; an event in two commits of the batch counts for the first. An order's
    /// progress is only written while it is still watched, so a concurrent stop wins; of two
    /// commits of the same order, the later one's progress is written. With `claim`, the new
    /// deliveries it allows are created claimed and returned.
    async fn commit_polls(
        &self,
        commits: &[PollCommit],
        claim: Option<&ClaimAtCreation>,
    ) -> StoreResult<CommittedPolls>;
    /// [`PollStore::commit_polls`] for one poll, claiming nothing.
    async fn commit_poll(&self, commit: &PollCommit) -> StoreResult<CommitSummary> {
        // One summary per commit: the batch of one yields exactly one.
        Ok(self
            .commit_polls(std::slice::from_ref(commit), None)
            .await?
            .summaries
            .pop()
            .unwrap_or_default())
    }
}
