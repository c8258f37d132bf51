//! The dispatcher: claims due deliveries from the store's outbox, sends them through their
//! channel, and records every attempt of a batch in one write: delivered, retry scheduled, or
//! parked as failed. At-least-once: a crash mid-batch leaves the claims to expire and be retried.

mod rate;
mod retry;

pub use retry::{retry_delay, MAX_RETRY_AFTER};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use rand::Rng;
use std::collections::hash_map::{Entry, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::channels::{ChannelSender, Channels, SendOutcome};
use crate::config::DeliverySettings;
use crate::domain::{OrderId, SubscriberId};
use crate::store::{AttemptRecord, AttemptResolution, Channel, ClaimedDelivery, Store, StoreError};

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

/// Splits a claimed batch into sends: an e-mail digest subscriber's deliveries of one order
/// go together (the fan-out made them due together), in the order their events were detected;
/// every other delivery goes alone.
fn sends(batch: Vec<ClaimedDelivery>) -> Vec<Vec<ClaimedDelivery>> {
    let mut sends: Vec<Vec<ClaimedDelivery>> = Vec::with_capacity(batch.len());
    let mut digests: HashMap<(SubscriberId, OrderId), usize> = HashMap::new();
    for delivery in batch {
        let is_digest = matches!(
            delivery.subscriber.channel,
            Channel::Email {
                digest_seconds: Some(_),
                ..
            }
        );
        if !is_digest {
            sends.push(vec![delivery]);
            continue;
        }
        match digests.entry((delivery.subscriber.id.clone(), delivery.order_id.clone())) {
            Entry::Occupied(entry) => sends[*entry.get()].push(delivery),
            Entry::Vacant(entry) => {
                entry.insert(sends.len());
                sends.push(vec![delivery]);
            }
        }
    }
    for &index in digests.values() {
        // Stable: events detected together keep the claim's (insertion) order.
        sends[index].sort_by_key(|delivery| delivery.event_created_at);
    }
    sends
}

/// What a group's retry time is computed from, shared by its deliveries.
struct RetryBasis {
    /// Attempts made before this one.
    attempts_made: u32,
    /// Where in the jitter band the wait falls, in `[-1, 1]`.
    spread: f64,
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
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
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
    /// outcome, and a retry time, so the group stays together (a digest e-mail keeps its
    /// Message-ID). The group's least-tried delivery sets that time: none is given up early.
    async fn attempt(&self, group: &[ClaimedDelivery]) -> Vec<AttemptRecord> {
        let at = Utc::now();
        let outcome = self.channels.send(group, at).await;
        let finished = Utc::now();
        let retry = RetryBasis {
            attempts_made: group.iter().map(|d| d.attempts_made).min().unwrap_or(0),
            spread: rand::thread_rng().gen_range(-1.0..=1.0),
        };
        group
            .iter()
            .map(|delivery| {
                let record = self.record(delivery, at, finished, &retry, outcome.clone());
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
        retry: &RetryBasis,
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
                let resolution = match retry_delay(
                    &self.settings.retry_schedule,
                    self.settings.retry_jitter,
                    retry.attempts_made + 1,
                    after,
                    retry.spread,
                ) {
                    Some(wait) => AttemptResolution::RetryAt(
                        finished
                            + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
                    ),
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
            // Due before the claim that found nothing, so not claimable (say, its subscriber is
            // disabled): waiting for it would spin.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeliveryId, EventId, EventType};
    use crate::store::{SubscriberFilter, SubscriberStatus};

    fn subscriber(channel: Channel) -> crate::store::Subscriber {
        crate::store::Subscriber {
            id: SubscriberId::generate(),
            channel,
            filter: SubscriberFilter::default(),
            description: None,
            status: SubscriberStatus::Active,
            disabled_reason: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            secrets: Vec::new(),
        }
    }

    fn delivery(
        subscriber: &crate::store::Subscriber,
        order: &str,
        message: i64,
        detected_secs_ago: i64,
    ) -> ClaimedDelivery {
        let order_id = OrderId::parse("order_id", order).unwrap();
        ClaimedDelivery {
            id: DeliveryId::generate(),
            event_id: EventId::derive(EventType::ChatMessageCreated, &order_id, Some(message)),
            event_type: EventType::ChatMessageCreated,
            order_id,
            event_created_at: Utc::now() - chrono::Duration::seconds(detected_secs_ago),
            payload: Arc::from("{}"),
            attempts_made: 0,
            subscriber: subscriber.clone(),
        }
    }

    #[test]
    fn a_digest_subscribers_deliveries_of_one_order_go_as_one_send_in_detection_order() {
        let digest = subscriber(Channel::Email {
            to: vec!["staff@store.example".to_owned()],
            digest_seconds: Some(60),
        });
        let plain = subscriber(Channel::Email {
            to: vec!["ops@store.example".to_owned()],
            digest_seconds: None,
        });
        let batch = vec![
            delivery(&digest, "1", 2, 5),
            delivery(&plain, "1", 1, 9),
            delivery(&digest, "2", 1, 9),
            delivery(&plain, "1", 2, 5),
            delivery(&digest, "1", 1, 9),
        ];
        let ids = |picks: &[usize]| -> Vec<EventId> {
            picks.iter().map(|&i| batch[i].event_id.clone()).collect()
        };
        let expected = [ids(&[4, 0]), ids(&[1]), ids(&[2]), ids(&[3])];
        let found: Vec<Vec<EventId>> = sends(batch.clone())
            .iter()
            .map(|send| send.iter().map(|d| d.event_id.clone()).collect())
            .collect();
        assert_eq!(found, expected);
    }
}
