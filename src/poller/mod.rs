//! Polling: which watched orders are due, one upstream call each (a bounded number in flight),
//! the differ, and the results committed in groups, each group in one store transaction.

pub mod differ;
pub mod schedule;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use rand::Rng;
use std::collections::HashMap;
use std::ops::AddAssign;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::PollerSettings;
use crate::domain::OrderId;
use crate::domain::{FallbackReason, Order, SeenState};
use crate::instacart::models::PollSnapshot;
use crate::instacart::{InstacartClient, InstacartError};
use crate::outbox::Producer;
use crate::store::{PollCommit, Store, StoreError};
use crate::telemetry::error_chain;

/// The longest the loop sleeps without checking for due orders, in case a wake-up is missed.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// After a round that did not fill up, the loop waits at least this long (unless an order is
/// added), so orders falling due one after another are polled and committed a few at a time
/// rather than each in a round of its own.
const MIN_ROUND_GAP: Duration = Duration::from_millis(10);
/// Results are committed in groups of at most this many...
const FLUSH_MAX: usize = 64;
/// ...gathered for at most this long after the group's first result arrived, so one slow
/// upstream answer holds back no one else's commit, and a busy poller pays one transaction per
/// group instead of one per order.
const FLUSH_WINDOW: Duration = Duration::from_millis(5);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollRound {
    pub orders_polled: usize,
    pub events_created: u64,
    pub deliveries_created: u64,
}

impl AddAssign for PollRound {
    fn add_assign(&mut self, other: Self) {
        self.orders_polled += other.orders_polled;
        self.events_created += other.events_created;
        self.deliveries_created += other.deliveries_created;
    }
}

/// One order's upstream answer (or failure), waiting to be diffed and committed.
struct Fetched {
    order: Order,
    fallback: Option<FallbackReason>,
    result: Result<PollSnapshot, InstacartError>,
    at: DateTime<Utc>,
}

pub struct Poller {
    store: Arc<dyn Store>,
    client: InstacartClient,
    settings: PollerSettings,
    /// Notified when an order is added, so it is polled at once.
    wake: Arc<Notify>,
    /// Where the results are committed, and delivery is told of them.
    outbox: Producer,
}

impl Poller {
    pub fn new(
        store: Arc<dyn Store>,
        client: InstacartClient,
        settings: PollerSettings,
        wake: Arc<Notify>,
        outbox: Producer,
    ) -> Self {
        Self {
            store,
            client,
            settings,
            wake,
            outbox,
        }
    }

    /// Polls every order due now, `settings.concurrency` at a time, committing the results in
    /// groups as they come in (see [`FLUSH_MAX`]); the dispatcher is woken after each group that
    /// created deliveries. On a store error the round ends there: the orders not committed keep
    /// their due time and are polled again.
    pub async fn poll_once(&self) -> Result<PollRound, StoreError> {
        let due = self.store.due_orders(Utc::now(), self.batch_size()).await?;
        if due.is_empty() {
            return Ok(PollRound::default());
        }
        let (results, fetched) = mpsc::channel(FLUSH_MAX);
        // Upstream calls go on while a group is being committed.
        let fetch_all = async move {
            let mut answers = stream::iter(due)
                .map(|order| self.fetch(order))
                .buffer_unordered(self.settings.concurrency);
            while let Some(answer) = answers.next().await {
                // Only fails once the committing side gave up on a store error.
                if results.send(answer).await.is_err() {
                    break;
                }
            }
        };
        let ((), round) = tokio::join!(fetch_all, self.commit_as_fetched(fetched));
        round
    }

    /// Polls until cancelled, sleeping until the next order is due or a new one is added.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let round = tokio::select! {
                _ = cancel.cancelled() => break,
                round = self.poll_once() => round,
            };
            match round {
                Ok(round) if round.orders_polled == self.batch_size() as usize => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(error = %error_chain(&error), "poll round failed");
                }
            }
            let idle = match self.store.next_poll_due().await {
                Ok(Some(due)) => (due - Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .clamp(MIN_ROUND_GAP, MAX_IDLE),
                Ok(None) | Err(_) => MAX_IDLE,
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
        tracing::info!("poller stopped");
    }

    /// Enough orders per round for two full groups, so a round's fetches go on while a group
    /// commits instead of the next round waiting for the last commit.
    fn batch_size(&self) -> u32 {
        u32::try_from((self.settings.concurrency * 8).max(2 * FLUSH_MAX)).unwrap_or(u32::MAX)
    }

    /// Commits the results in groups: whatever arrives within [`FLUSH_WINDOW`] of a group's
    /// first result, up to [`FLUSH_MAX`].
    async fn commit_as_fetched(
        &self,
        mut fetched: mpsc::Receiver<Fetched>,
    ) -> Result<PollRound, StoreError> {
        let mut round = PollRound::default();
        let mut group = Vec::with_capacity(FLUSH_MAX);
        while fetched.recv_many(&mut group, FLUSH_MAX).await > 0 {
            let window = tokio::time::sleep(FLUSH_WINDOW);
            tokio::pin!(window);
            while group.len() < FLUSH_MAX {
                let room = FLUSH_MAX - group.len();
                tokio::select! {
                    received = fetched.recv_many(&mut group, room) => if received == 0 {
                        break;
                    },
                    () = &mut window => break,
                }
            }
            round += self.commit_group(std::mem::take(&mut group)).await?;
        }
        Ok(round)
    }

    /// Diffs a group of answers against the seen state, read for all of them at once after they
    /// arrived (so it includes what the bridge itself did in their chats meanwhile), and commits
    /// them in one transaction through the outbox.
    #[tracing::instrument(skip_all, fields(orders = group.len()))]
    async fn commit_group(&self, group: Vec<Fetched>) -> Result<PollRound, StoreError> {
        let answered: Vec<OrderId> = group
            .iter()
            .filter(|fetched| fetched.result.is_ok())
            .map(|fetched| fetched.order.order_id.clone())
            .collect();
        let mut seen = self.store.seen_states(&answered).await?;
        let commits: Vec<PollCommit> = group
            .into_iter()
            .map(|fetched| self.commit_for(fetched, &mut seen))
            .collect();
        let order_ids: Vec<OrderId> = commits.iter().map(|c| c.order_id.clone()).collect();
        let summaries = self.outbox.commit(commits).await?;

        let mut round = PollRound::default();
        for (order_id, summary) in order_ids.iter().zip(&summaries) {
            if summary.events_inserted > 0 {
                tracing::info!(
                    order_id = %order_id,
                    events = summary.events_inserted,
                    "new events"
                );
            }
            round += PollRound {
                orders_polled: 1,
                events_created: summary.events_inserted,
                deliveries_created: summary.deliveries_created,
            };
        }
        Ok(round)
    }

    /// What one answer changes: the diff and the next poll, or the back-off after a failure.
    fn commit_for(&self, fetched: Fetched, seen: &mut HashMap<OrderId, SeenState>) -> PollCommit {
        let Fetched {
            order,
            fallback,
            result,
            at,
        } = fetched;
        let spread = rand::thread_rng().gen_range(-1.0..=1.0);
        match result {
            Ok(snapshot) => {
                let seen = seen.remove(&order.order_id).unwrap_or_default();
                let diff = differ::diff(&order.order_id, &seen, &snapshot, at);
                let progress = schedule::after_success(
                    &self.settings,
                    &order,
                    fallback,
                    diff.expired,
                    at,
                    spread,
                );
                PollCommit {
                    order_id: order.order_id,
                    new_chat: diff.new_chat,
                    newly_read: diff.newly_read,
                    new_lifecycle: diff.new_lifecycle,
                    events: diff.events,
                    progress,
                }
            }
            Err(error) => PollCommit {
                progress: schedule::after_failure(
                    &self.settings,
                    &order,
                    fallback,
                    &error,
                    at,
                    spread,
                ),
                order_id: order.order_id,
                new_chat: Vec::new(),
                newly_read: Vec::new(),
                new_lifecycle: Vec::new(),
                events: Vec::new(),
            },
        }
    }

    /// One upstream call: order_messages, or the chat-messages endpoint for orders whose
    /// order_messages are out of reach (4001, or 403 shopper PII), switching over on the spot.
    async fn fetch(&self, order: Order) -> Fetched {
        let span = tracing::info_span!("poll_order", order_id = %order.order_id);
        async {
            let (fallback, result) = self.call_upstream(&order).await;
            if let Err(error) = &result {
                tracing::warn!(error = %error_chain(error), "poll failed");
            }
            Fetched {
                order,
                fallback,
                result,
                at: Utc::now(),
            }
        }
        .instrument(span)
        .await
    }

    async fn call_upstream(
        &self,
        order: &Order,
    ) -> (Option<FallbackReason>, Result<PollSnapshot, InstacartError>) {
        let user = order.user_id.as_ref();
        let fallback = match order.fallback {
            Some(reason) => reason,
            None => match self.client.order_messages(&order.order_id, user).await {
                Ok(response) => return (None, Ok(response.into())),
                Err(InstacartError::UserIdNotFound) => FallbackReason::UserIdNotFound,
                Err(InstacartError::ShopperPiiRedacted) => FallbackReason::ShopperPiiRedacted,
                Err(error) => return (None, Err(error)),
            },
        };
        if order.fallback.is_none() {
            tracing::info!(
                reason = fallback.as_str(),
                "falling back to the chat-messages endpoint"
            );
        }
        let fetched = self
            .client
            .chat_messages(&order.order_id, user)
            .await
            .map(PollSnapshot::from);
        (Some(fallback), fetched)
    }
}
