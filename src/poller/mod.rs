//! Polling: which watched orders are due, one upstream call each, the differ, and one store
//! transaction per poll result.

pub mod differ;
pub mod schedule;

use chrono::Utc;
use futures::stream::{self, StreamExt};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::PollerSettings;
use crate::instacart::models::PollSnapshot;
use crate::instacart::{InstacartClient, InstacartError};
use crate::store::{CommitSummary, FallbackReason, Order, PollCommit, Store, StoreError};
use crate::telemetry::error_chain;

/// The longest the loop sleeps without checking for due orders, in case a wake-up is missed.
const MAX_IDLE: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollRound {
    pub orders_polled: usize,
    pub events_created: u64,
    pub deliveries_created: u64,
}

pub struct Poller {
    store: Arc<dyn Store>,
    client: InstacartClient,
    settings: PollerSettings,
    /// Notified when an order is added, so it is polled at once.
    wake: Arc<Notify>,
    /// Notified when new deliveries are committed.
    deliveries_ready: Arc<Notify>,
}

impl Poller {
    pub fn new(
        store: Arc<dyn Store>,
        client: InstacartClient,
        settings: PollerSettings,
        wake: Arc<Notify>,
        deliveries_ready: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            client,
            settings,
            wake,
            deliveries_ready,
        }
    }

    /// Polls every order due now, `settings.concurrency` at a time.
    pub async fn poll_once(&self) -> Result<PollRound, StoreError> {
        let due = self.store.due_orders(Utc::now(), self.batch_size()).await?;
        let results: Vec<_> = stream::iter(due)
            .map(|order| self.poll_order(order))
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        let mut round = PollRound::default();
        for summary in results {
            let summary = summary?;
            round.orders_polled += 1;
            round.events_created += summary.events_inserted;
            round.deliveries_created += summary.deliveries_created;
        }
        if round.deliveries_created > 0 {
            self.deliveries_ready.notify_one();
        }
        Ok(round)
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
                    .min(MAX_IDLE),
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

    fn batch_size(&self) -> u32 {
        u32::try_from(self.settings.concurrency * 8).unwrap_or(u32::MAX)
    }

    async fn poll_order(&self, order: Order) -> Result<CommitSummary, StoreError> {
        let span = tracing::info_span!("poll_order", order_id = %order.order_id);
        async {
            let (fallback, fetched) = self.fetch(&order).await;
            let now = Utc::now();
            let spread = rand::thread_rng().gen_range(-1.0..=1.0);
            let commit = match fetched {
                Ok(snapshot) => {
                    let seen = self.store.seen_state(&order.order_id).await?;
                    let diff = differ::diff(&order.order_id, &seen, &snapshot, now);
                    let progress = schedule::after_success(
                        &self.settings,
                        &order,
                        fallback,
                        diff.expired,
                        now,
                        spread,
                    );
                    PollCommit {
                        order_id: order.order_id.clone(),
                        new_chat: diff.new_chat,
                        newly_read: diff.newly_read,
                        new_lifecycle: diff.new_lifecycle,
                        events: diff.events,
                        progress,
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "poll failed");
                    PollCommit {
                        order_id: order.order_id.clone(),
                        new_chat: Vec::new(),
                        newly_read: Vec::new(),
                        new_lifecycle: Vec::new(),
                        events: Vec::new(),
                        progress: schedule::after_failure(
                            &self.settings,
                            &order,
                            fallback,
                            &error,
                            now,
                            spread,
                        ),
                    }
                }
            };
            let summary = self.store.commit_poll(&commit).await?;
            if summary.events_inserted > 0 {
                tracing::info!(events = summary.events_inserted, "new events");
            }
            Ok(summary)
        }
        .instrument(span)
        .await
    }

    /// One upstream call: order_messages, or the chat-messages endpoint for orders whose
    /// order_messages are out of reach (4001, or 403 shopper PII), switching over on the spot.
    async fn fetch(
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
