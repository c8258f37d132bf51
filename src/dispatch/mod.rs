//! The dispatcher: claims due deliveries from the store's outbox, sends them through their
//! channel, and records their attempts in batches: delivered, retry scheduled, or parked as
//! failed. At-least-once: a crash before the record leaves the claims to expire and be retried.
//! Once recorded, orders whose shopper messages reached an `on_delivery` subscriber are marked
//! read upstream, once per order.
//!
//! [`Dispatcher::deliver_next`] is one step (claim a batch, send it, record it); [`Dispatcher::run`]
//! pipelines the same pieces so sends never wait for each other: it claims ahead while sends are
//! in flight, `concurrency` send workers take the claimed sends from one queue in order, and
//! finished attempts are recorded in one write per batch that finished meanwhile (a group commit).

mod rate;
mod retry;
mod sends;

pub use retry::retry_delay;
use sends::sends;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, Mutex, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::channels::{ChannelSender, Channels, SendOutcome, Threading};
use crate::config::DeliverySettings;
use crate::domain::{AttemptRecord, AttemptResolution, ClaimedDelivery, MarkReadPolicy};
use crate::domain::{EventPayload, EventType, OrderId, SubscriberId};
use crate::outbox::Consumer;
use crate::store::{Store, StoreError};
use crate::talkback::Talkback;
use crate::telemetry::error_chain;
use crate::time;

/// The longest the loop sleeps without looking at the store (a safety net for missed wakes).
const MAX_IDLE: Duration = Duration::from_secs(1);
/// The most attempts recorded in one write.
const MAX_RECORDS: usize = 1024;
/// How many batches of `concurrency` deliveries one claim takes at most: enough that sends never
/// wait for the next claim to come back.
const CLAIM_BATCHES: usize = 32;

pub struct Dispatcher {
    store: Arc<dyn Store>,
    channels: Channels,
    /// Marks orders read for `on_delivery` subscribers.
    talkback: Talkback,
    settings: DeliverySettings,
    pace: rate::SendPace,
    /// The hand-overs, the room for what is held, and the wake-ups.
    outbox: Consumer,
}

/// A send waiting for a worker, with its share of the held room.
struct QueuedSend {
    group: Vec<ClaimedDelivery>,
    held: Option<OwnedSemaphorePermit>,
    /// Not sent after this: the lease would not cover the send and its record.
    start_by: tokio::time::Instant,
}

/// The send workers' queue, shared by all of them. A queue and long-lived workers rather than a
/// task per send: a backlog of thousands then costs no task, no semaphore wait and no
/// cancellation waiter per delivery.
type SendJobs = Arc<Mutex<mpsc::UnboundedReceiver<QueuedSend>>>;

/// One send's deliveries with the attempt record of each.
struct Attempted {
    group: Vec<ClaimedDelivery>,
    records: Vec<AttemptRecord>,
}

/// The orders to mark read after a batch, each with the `on_delivery` subscribers that just
/// received a shopper's chat message of it: however many messages, one request per order.
fn reads_to_request(attempted: &[Attempted]) -> HashMap<OrderId, Vec<SubscriberId>> {
    let mut orders: HashMap<OrderId, Vec<SubscriberId>> = HashMap::new();
    let delivered = attempted.iter().flat_map(|Attempted { group, records }| {
        group
            .iter()
            .zip(records)
            .filter(|(_, record)| record.resolution == AttemptResolution::Delivered)
            .map(|(delivery, _)| delivery)
    });
    for delivery in delivered {
        if delivery.subscriber.mark_read == MarkReadPolicy::OnDelivery
            && delivery.event_type == EventType::ChatMessageCreated
            && EventPayload::parse(&delivery.payload).is_ok_and(|event| event.sent_by_shopper())
        {
            let subscribers = orders.entry(delivery.order_id.clone()).or_default();
            if !subscribers.contains(&delivery.subscriber.id) {
                subscribers.push(delivery.subscriber.id.clone());
            }
        }
    }
    orders
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

/// A finished task of the dispatcher: a panic in it goes on unwinding here.
fn settle<T>(joined: Result<T, tokio::task::JoinError>) {
    if let Err(err) = joined {
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
    }
}

impl Dispatcher {
    /// `outbox` is the consumer half of the outbox whose producer the poller and the admin
    /// API commit and queue through.
    pub fn new(
        store: Arc<dyn Store>,
        channels: Channels,
        talkback: Talkback,
        settings: DeliverySettings,
        outbox: Consumer,
    ) -> Self {
        Self {
            store,
            channels,
            talkback,
            settings,
            pace: rate::SendPace::default(),
            outbox,
        }
    }

    /// The consumer half of its outbox: what the poller hands over, and the wake-ups.
    pub fn outbox(&self) -> &Consumer {
        &self.outbox
    }

    /// Claims one batch of due deliveries (up to `concurrency`), puts back those their
    /// subscriber's send rate does not allow yet, sends the rest concurrently and records their
    /// attempts in one store call, then marks read the orders that `on_delivery` subscribers
    /// just received shopper messages of (one request per order). Returns how many were
    /// attempted; 0 when none was due (or all were put back).
    #[tracing::instrument(skip_all)]
    pub async fn deliver_next(&self) -> Result<usize, StoreError> {
        let batch = self.claim(self.settings.concurrency).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        // Owned items: a closure over borrowed ones would make the future not `Send`.
        let attempted: Vec<Attempted> = stream::iter(sends(batch))
            .map(|group| self.attempt(group))
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        self.finish(attempted).await
    }

    /// Claims up to `limit` due deliveries and keeps those their subscriber's send rate allows
    /// now (the others are put back).
    ///
    /// The lease covers a wait for a send worker of up to one send timeout (a delivery that waited
    /// longer is not sent: see [`Dispatcher::run`]), the send, and its record.
    async fn claim(&self, limit: usize) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let now = Utc::now();
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let batch = self
            .store
            .claim_due_deliveries(now, time::after(now, self.outbox.lease()), limit)
            .await?;
        Ok(self.admit(batch, now).await)
    }

    /// Keeps the deliveries their subscriber's send rate allows now; the others are put back.
    async fn admit(&self, batch: Vec<ClaimedDelivery>, now: DateTime<Utc>) -> Vec<ClaimedDelivery> {
        self.pace
            .admit(self.store.as_ref(), batch, now, |d| {
                self.channels.send_interval(&d.subscriber.channel)
            })
            .await
    }

    /// Records the attempts in one store call, then marks read what `on_delivery` subscribers
    /// just received. Returns how many attempts there were.
    async fn finish(&self, attempted: Vec<Attempted>) -> Result<usize, StoreError> {
        let to_mark = reads_to_request(&attempted);
        let records: Vec<AttemptRecord> = attempted
            .into_iter()
            .flat_map(|attempted| attempted.records)
            .collect();
        self.store.record_attempts(&records).await?;
        stream::iter(to_mark)
            .for_each_concurrent(self.settings.concurrency, |(order_id, subscribers)| {
                self.mark_read(order_id, subscribers)
            })
            .await;
        Ok(records.len())
    }

    /// Marks the order's messages read upstream on behalf of `subscribers`, and remembers it
    /// so the readings are not announced back to them. A failure is logged and not retried: the
    /// next shopper message delivered to them asks again.
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    async fn mark_read(&self, order_id: OrderId, subscribers: Vec<SubscriberId>) {
        match self.talkback.mark_read(&order_id, None, &subscribers).await {
            Ok(read) => tracing::info!(
                messages_read = read.messages_read_count,
                "marked read on delivery"
            ),
            Err(error) => tracing::warn!(
                error = %error_chain(&error),
                "could not mark the order's messages read on delivery"
            ),
        }
    }

    /// One send of a group of deliveries to one subscriber; every delivery in it shares the
    /// outcome, and a retry time, so the group stays together (a digest e-mail keeps its
    /// Message-ID). The group's least-tried delivery sets that time: none is given up early.
    async fn attempt(&self, group: Vec<ClaimedDelivery>) -> Attempted {
        let at = Utc::now();
        let outcome = match self.thread_of(&group).await {
            Ok(thread) => {
                let outcome = self.channels.send(&group, thread.as_deref(), at).await;
                self.keep_thread(&group, &outcome).await;
                outcome
            }
            Err(unread) => unread,
        };
        let finished = Utc::now();
        let retry = RetryBasis {
            attempts_made: group.iter().map(|d| d.attempts_made).min().unwrap_or(0),
            spread: rand::thread_rng().gen_range(-1.0..=1.0),
        };
        let records = group
            .iter()
            .map(|delivery| {
                let record = self.record(delivery, at, finished, &retry, outcome.clone());
                log_attempt(delivery, &record);
                record
            })
            .collect();
        Attempted { group, records }
    }

    /// The conversation thread the group's order has with its subscriber, where the channel
    /// threads; one whose reference is known before the send is kept first, so sends made at
    /// once agree on it (a retry of the thread's first message finds itself there).
    async fn thread_of(&self, group: &[ClaimedDelivery]) -> Result<Option<String>, SendOutcome> {
        let Some(first) = group.first() else {
            return Ok(None);
        };
        let (subscriber_id, order_id) = (&first.subscriber.id, &first.order_id);
        let found = match self.channels.threading(group) {
            Threading::None => return Ok(None),
            Threading::FromSend => self.store.thread_ref(subscriber_id, order_id).await,
            Threading::StartsWith(root) => self
                .store
                .save_thread_ref(subscriber_id, order_id, &root)
                .await
                .map(Some),
        };
        found.map_err(|error| {
            tracing::warn!(error = %error_chain(&error), "cannot read the order's thread");
            SendOutcome::Retry {
                after: None,
                status: None,
                excerpt: None,
                error: Some("could not read the order's thread from the store".to_owned()),
            }
        })
    }

    /// Keeps the thread a send started. The message is out whatever happens here; without the
    /// reference, the order's next message starts a second thread rather than being held back.
    async fn keep_thread(&self, group: &[ClaimedDelivery], outcome: &SendOutcome) {
        let (
            Some(first),
            SendOutcome::Delivered {
                thread_started: Some(thread),
                ..
            },
        ) = (group.first(), outcome)
        else {
            return;
        };
        if let Err(error) = self
            .store
            .save_thread_ref(&first.subscriber.id, &first.order_id, thread)
            .await
        {
            tracing::warn!(error = %error_chain(&error), "cannot keep the order's thread");
        }
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
            SendOutcome::Delivered {
                status, excerpt, ..
            } => (AttemptResolution::Delivered, status, excerpt, None, None),
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

    /// Delivers until `cancel` fires; then takes nothing more and gives the sends in flight and
    /// their records `shutdown_grace` to finish (what does not finish is retried once its lease
    /// ends).
    ///
    /// `concurrency` send workers take sends from one queue in order, claimed from the store or
    /// handed over by the poller (see [`crate::outbox`]), within the held room. A claim is made
    /// whenever a whole batch fits, so sends overlap with claims and records, and one slow
    /// receiver holds only the workers sending to it. A delivery still queued one send timeout
    /// after its claim is not sent (its lease would not cover the send and the record): it is put
    /// back, due at once. Finished attempts go to a recorder that writes whatever has finished
    /// since its last write in one call.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let (finished, to_record) = mpsc::unbounded_channel();
        let (queue, jobs) = mpsc::unbounded_channel();
        let jobs: SendJobs = Arc::new(Mutex::new(jobs));
        let recorder = tokio::spawn(Arc::clone(&self).record_finished(to_record));
        let mut workers = JoinSet::new();
        for _ in 0..self.settings.concurrency.max(1) {
            let worker =
                Arc::clone(&self).send_worker(Arc::clone(&jobs), finished.clone(), cancel.clone());
            workers.spawn(worker);
        }
        drop(finished);

        {
            let feeding = async {
                tokio::join!(
                    self.claim_loop(&queue, &cancel),
                    self.intake_loop(&queue, &cancel)
                )
            };
            tokio::pin!(feeding);
            loop {
                tokio::select! {
                    _ = &mut feeding => break,
                    // Before cancellation a worker only ends by panicking, which goes on here.
                    Some(joined) = workers.join_next() => settle(joined),
                }
            }
        }
        drop(queue);
        let drained = async {
            // What no worker took goes back first; the workers finish the sends they started.
            let unsent: Vec<ClaimedDelivery> = {
                let mut jobs = jobs.lock().await;
                jobs.close();
                std::iter::from_fn(|| jobs.try_recv().ok())
                    .flat_map(|job| job.group)
                    .collect()
            };
            self.outbox.release(&unsent).await;
            while let Some(joined) = workers.join_next().await {
                settle(joined);
            }
            recorder.await
        };
        match tokio::time::timeout(self.settings.shutdown_grace, drained).await {
            Ok(recorded) => settle(recorded),
            Err(_) => tracing::warn!(
                "shutdown grace elapsed with deliveries in flight; \
                 they are retried when their lease ends"
            ),
        }
    }

    /// Claims due deliveries whenever a batch fits in the room, until cancelled, and queues
    /// their sends.
    async fn claim_loop(
        &self,
        queue: &mpsc::UnboundedSender<QueuedSend>,
        cancel: &CancellationToken,
    ) {
        let concurrency = self.settings.concurrency.max(1);
        while !cancel.is_cancelled() {
            let mut room = tokio::select! {
                room = Arc::clone(self.outbox.room()).acquire_many_owned(concurrency as u32) => {
                    room.expect("the held room is never closed")
                }
                () = cancel.cancelled() => break,
            };
            let more = self
                .outbox
                .room()
                .available_permits()
                .min((CLAIM_BATCHES - 1) * concurrency);
            if let Ok(more) = Arc::clone(self.outbox.room()).try_acquire_many_owned(more as u32) {
                room.merge(more);
            }
            let started = Utc::now();
            let start_by = tokio::time::Instant::now() + self.settings.timeout;
            match self.claim(room.num_permits()).await {
                Ok(batch) if batch.is_empty() => {
                    drop(room);
                    self.idle(started, cancel).await;
                }
                Ok(batch) => self.queue_sends(batch, room, start_by, queue).await,
                Err(err) => {
                    tracing::error!(error = ?err, "cannot claim deliveries");
                    tokio::select! {
                        () = tokio::time::sleep(MAX_IDLE) => {}
                        () = cancel.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Queues the sends of what the poller hands over, until cancelled; then refuses more and
    /// puts back what was already handed over.
    async fn intake_loop(
        &self,
        queue: &mpsc::UnboundedSender<QueuedSend>,
        cancel: &CancellationToken,
    ) {
        let Some(mut intake) = self.outbox.take_intake() else {
            return;
        };
        self.outbox.set_running(true);
        loop {
            let handed = tokio::select! {
                handed = intake.recv() => handed,
                () = cancel.cancelled() => break,
            };
            let Some(handed) = handed else { break };
            let batch = self.admit(handed.batch, Utc::now()).await;
            self.queue_sends(batch, handed.room, handed.start_by, queue)
                .await;
        }
        self.outbox.set_running(false);
        intake.close();
        while let Some(handed) = intake.recv().await {
            self.outbox.release(&handed.batch).await;
        }
    }

    /// Queues one send per group of `batch` for the workers, each with its share of `room`;
    /// what the queue refuses (only once closed) goes back in the store.
    async fn queue_sends(
        &self,
        batch: Vec<ClaimedDelivery>,
        mut room: OwnedSemaphorePermit,
        start_by: tokio::time::Instant,
        queue: &mpsc::UnboundedSender<QueuedSend>,
    ) {
        let mut unsent = Vec::new();
        for group in sends(batch) {
            let held = room.split(group.len());
            let job = QueuedSend {
                group,
                held,
                start_by,
            };
            if let Err(refused) = queue.send(job) {
                unsent.extend(refused.0.group);
            }
        }
        self.outbox.release(&unsent).await;
    }

    /// Sends what is queued, one send at a time, until cancelled or the queue closes. A send
    /// taken after its `start_by` is put back in the store unattempted.
    async fn send_worker(
        self: Arc<Self>,
        jobs: SendJobs,
        finished: mpsc::UnboundedSender<Attempted>,
        cancel: CancellationToken,
    ) {
        while !cancel.is_cancelled() {
            let job = {
                let mut jobs = jobs.lock().await;
                // Waiting on the cancellation only when the queue is empty keeps a busy
                // worker's loop free of waiter registrations.
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Disconnected) => return,
                    Err(TryRecvError::Empty) => tokio::select! {
                        biased;
                        () = cancel.cancelled() => return,
                        job = jobs.recv() => match job {
                            Some(job) => job,
                            None => return,
                        },
                    },
                }
            };
            if tokio::time::Instant::now() > job.start_by {
                tracing::warn!(
                    count = job.group.len(),
                    "no send worker within the send timeout; put back unattempted"
                );
                self.outbox.release(&job.group).await;
                continue;
            }
            // The recorder outlives every send; nothing is lost if it did not.
            let _ = finished.send(self.attempt(job.group).await);
            drop(job.held);
        }
    }

    /// Records finished attempts until every sender is gone: each write takes all that
    /// finished while the previous one was made. Wakes the claims when a retry was scheduled,
    /// so it is claimed when due.
    async fn record_finished(self: Arc<Self>, mut finished: mpsc::UnboundedReceiver<Attempted>) {
        let mut batch = Vec::new();
        while finished.recv_many(&mut batch, MAX_RECORDS).await > 0 {
            let retries = batch
                .iter()
                .flat_map(|a| &a.records)
                .any(|record| matches!(record.resolution, AttemptResolution::RetryAt(_)));
            if let Err(err) = self.finish(std::mem::take(&mut batch)).await {
                tracing::error!(
                    error = ?err,
                    "cannot record delivery attempts; they are retried when their lease ends"
                );
            }
            if retries {
                self.outbox.wake();
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
            () = self.outbox.ready() => {}
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => {}
        }
    }
}
