//! The dispatcher: claims due deliveries from the store's outbox, sends them through their
//! channel, and records every attempt of a batch in one write: delivered, retry scheduled, or
//! parked as failed. At-least-once: a crash mid-batch leaves the claims to expire and be retried.

mod rate;
mod retry;

pub use retry::retry_delay;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::channels::{ChannelSender, Channels, SendOutcome};
use crate::config::DeliverySettings;
use crate::store::{AttemptRecord, AttemptResolution, ClaimedDelivery, Store, StoreError};
use crate::time;

/// How long past the send timeout a claim holds: room to record the batch's attempts.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// The longest the loop sleeps without looking at the store (a safety net for missed wakes).
const MAX_IDLE: Duration = Duration::from_secs(1);

pub struct Dispatcher {
    store: Arc<dyn Store>,
    channels: Channels,
    settings: DeliverySettings,
    waker: Arc<Notify>,
    pace: rate::SendPace,
}

/// Splits a claimed batch into sends: one delivery each.
fn sends(batch: Vec<ClaimedDelivery>) -> Vec<Vec<ClaimedDelivery>> {
    batch.into_iter().map(|delivery| vec![delivery]).collect()
}

fn log_attempt(delivery: &ClaimedDelivery, record: &AttemptRecord) {
    let attempt = delivery.attempts_made + 1;
    let (delivery_id, event_id, subscriber_id) =
        (&delivery.id, &delivery.event_id, &delivery.subscriber.id);
    let status = record.status_code;
    let error = record.error.as_deref();
    match &record.resolution {
        AttemptResolution::Delivered => tracing::debug!(
            %delivery_id, %event_id, %subscriber_id, attempt, status, "delivered"
        ),
        AttemptResolution::RetryAt(retry_at) => tracing::info!(
            %delivery_id, %event_id, %subscriber_id, attempt, status, error, %retry_at,
            "delivery attempt failed; will retry"
        ),
        AttemptResolution::Failed => tracing::warn!(
            %delivery_id, %event_id, %subscriber_id, attempt, status, error,
            disabled = record.disable_subscriber.is_some(),
            "delivery failed; parked"
        ),
    }
}

impl Dispatcher {
    /// `waker` is shared with whoever queues deliveries (the poller, the admin API's retry).
    pub fn new(
        store: Arc<dyn Store>,
        channels: Channels,
        settings: DeliverySettings,
        waker: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            channels,
            settings,
            waker,
            pace: rate::SendPace::default(),
        }
    }

    /// Call `notify_one()` on it after committing new deliveries: the wake is kept even when
    /// the dispatcher is busy at that moment.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.waker)
    }

    /// Claims one batch of due deliveries (up to `concurrency`), puts back those their
    /// subscriber's send rate does not allow yet, sends the rest concurrently and records their
    /// attempts in one store call. Returns how many were attempted; 0 when none was due (or all
    /// were put back).
    #[tracing::instrument(skip_all)]
    pub async fn deliver_next(&self) -> Result<usize, StoreError> {
        let now = Utc::now();
        let lease = self.settings.timeout + LEASE_MARGIN;
        let lease_until = time::after(now, lease);
        let limit = u32::try_from(self.settings.concurrency).unwrap_or(u32::MAX);
        let batch = self
            .store
            .claim_due_deliveries(now, lease_until, limit)
            .await?;
        let batch = self
            .pace
            .admit(self.store.as_ref(), batch, now, |d| {
                self.channels.send_interval(&d.subscriber.channel)
            })
            .await;
        if batch.is_empty() {
            return Ok(0);
        }
        // Owned items: a closure over borrowed ones would make `run`'s future not `Send`.
        let records: Vec<Vec<AttemptRecord>> = stream::iter(sends(batch))
            .map(|group| async move { self.attempt(&group).await })
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        let records: Vec<AttemptRecord> = records.into_iter().flatten().collect();
        self.store.record_attempts(&records).await?;
        Ok(records.len())
    }

    /// One send of a group of deliveries to one subscriber; every delivery in it shares the
    /// outcome.
    async fn attempt(&self, group: &[ClaimedDelivery]) -> Vec<AttemptRecord> {
        let at = Utc::now();
        let outcome = self.channels.send(group, at).await;
        let finished = Utc::now();
        group
            .iter()
            .map(|delivery| {
                let record = self.record(delivery, at, finished, outcome.clone());
                log_attempt(delivery, &record);
                record
            })
            .collect()
    }

    /// Turns a channel's verdict into what the store records, choosing the retry time.
    fn record(
        &self,
        delivery: &ClaimedDelivery,
        at: DateTime<Utc>,
        finished: DateTime<Utc>,
        outcome: SendOutcome,
    ) -> AttemptRecord {
        let (resolution, status_code, response_excerpt, error, disable) = match outcome {
            SendOutcome::Delivered { status, excerpt } => {
                (AttemptResolution::Delivered, status, excerpt, None, None)
            }
            SendOutcome::Retry {
                after,
                status,
                excerpt,
                error,
            } => {
                let spread = rand::thread_rng().gen_range(-1.0..=1.0);
                let resolution = match retry_delay(
                    &self.settings.retry_schedule,
                    self.settings.retry_jitter,
                    delivery.attempts_made + 1,
                    after,
                    spread,
                ) {
                    Some(wait) => AttemptResolution::RetryAt(time::after(finished, wait)),
                    None => AttemptResolution::Failed,
                };
                (resolution, status, excerpt, error, None)
            }
            SendOutcome::Permanent {
                status,
                excerpt,
                error,
                disable_subscriber,
            } => (
                AttemptResolution::Failed,
                status,
                excerpt,
                error,
                disable_subscriber,
            ),
        };
        AttemptRecord {
            delivery_id: delivery.id.clone(),
            claim: delivery.claim.clone(),
            at,
            resolution,
            status_code,
            response_excerpt,
            error,
            disable_subscriber: disable.map(|reason| (delivery.subscriber.id.clone(), reason)),
        }
    }

    /// Delivers until `cancel` fires; then claims nothing more and gives the batch in flight
    /// `shutdown_grace` to finish (what does not finish is retried once its lease ends).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let started = Utc::now();
            let work = self.deliver_next();
            tokio::pin!(work);
            let handled = tokio::select! {
                result = &mut work => result,
                () = cancel.cancelled() => {
                    match tokio::time::timeout(self.settings.shutdown_grace, work).await {
                        Ok(result) => result,
                        Err(_) => {
                            tracing::warn!(
                                "shutdown grace elapsed with deliveries in flight; \
                                 they are retried when their lease ends"
                            );
                            return;
                        }
                    }
                }
            };
            match handled {
                Ok(0) => self.idle(started, &cancel).await,
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(error = ?err, "delivery round failed");
                    tokio::select! {
                        () = tokio::time::sleep(MAX_IDLE) => {}
                        () = cancel.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Waits for a wake, the next due delivery, or cancellation; at most [`MAX_IDLE`].
    async fn idle(&self, claimed_from: DateTime<Utc>, cancel: &CancellationToken) {
        let wait = match self.store.next_delivery_due().await {
            // Due before the claim that found nothing, so not claimable (which the store should
            // not allow): waiting for it would spin.
            Ok(Some(due)) if due > claimed_from => (due - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(MAX_IDLE),
            Ok(_) => MAX_IDLE,
            Err(err) => {
                tracing::warn!(error = ?err, "cannot read the next delivery due time");
                MAX_IDLE
            }
        };
        tokio::select! {
            () = self.waker.notified() => {}
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => {}
        }
    }
}
