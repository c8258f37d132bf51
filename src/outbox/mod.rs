//! The outbox: the hand-over between detection and delivery, as a producer half (the poller's
//! commits, the admin API's retries) and a consumer half (the dispatcher), made together by
//! [`new_pair`].
//!
//! A poll commit writes its events and deliveries in one transaction, so nothing detected is
//! lost; the producer then wakes the consumer. While the dispatcher runs, the commit also creates
//! the deliveries due at once already claimed and hands them over in memory, which saves the
//! claim's write and read-back per delivery. The consumer's room bounds what is held in memory;
//! what does not fit stays in the store for the dispatcher's own claims.

use chrono::Utc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

use crate::config::DeliverySettings;
use crate::domain::{ClaimToken, ClaimedDelivery};
use crate::store::{ClaimAtCreation, CommitSummary, PollCommit, Store, StoreError};
use crate::telemetry::error_chain;
use crate::time;

/// How long a claim holds past the send time it allows: room to record the attempts.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// How many batches of `delivery.concurrency` deliveries the consumer holds at once, claimed or
/// handed over, in flight or queued for a send worker (the memory bound of a backlog).
const HELD_BATCHES: usize = 256;

/// The two halves of one outbox, sharing the held room and the wake-up.
pub fn new_pair(store: Arc<dyn Store>, settings: &DeliverySettings) -> (Producer, Consumer) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        room: Arc::new(Semaphore::new(HELD_BATCHES * settings.concurrency.max(1))),
        sender,
        running: AtomicBool::new(false),
        lease: 2 * settings.timeout + LEASE_MARGIN,
        send_timeout: settings.timeout,
        ready: Notify::new(),
        store,
    });
    let consumer = Consumer {
        shared: Arc::clone(&shared),
        intake: Mutex::new(Some(receiver)),
    };
    (Producer { shared }, consumer)
}

/// Deliveries handed over, with their share of the held room.
pub struct HandedOff {
    pub batch: Vec<ClaimedDelivery>,
    pub room: OwnedSemaphorePermit,
    /// Not sent after this: the lease would not cover the send and its record.
    pub start_by: Instant,
}

struct Shared {
    store: Arc<dyn Store>,
    room: Arc<Semaphore>,
    sender: mpsc::UnboundedSender<HandedOff>,
    /// Set while the consumer takes hand-overs.
    running: AtomicBool,
    lease: Duration,
    send_timeout: Duration,
    /// Notified when deliveries are due that were not handed over; a wake is kept when the
    /// consumer is busy at that moment.
    ready: Notify,
}

/// The detecting side: poll commits and queued retries. Clones share one outbox.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

/// What one poll commit may claim for the consumer.
struct Offer {
    claim: ClaimAtCreation,
    start_by: Instant,
}

impl Producer {
    /// Commits a group of polls in one transaction (see
    /// [`crate::store::PollStore::commit_polls`]), returning one summary per commit. The
    /// deliveries due at once go straight to the running consumer when it has room; it is woken
    /// for the others.
    ///
    /// The commit and its hand-over run in a task of their own, so a shutdown dropping the
    /// caller cannot stop it in between: deliveries claimed for the consumer would wait out
    /// their lease.
    pub async fn commit(&self, commits: Vec<PollCommit>) -> Result<Vec<CommitSummary>, StoreError> {
        let producer = self.clone();
        tokio::spawn(async move {
            let offer = producer.offer();
            let committed = producer
                .shared
                .store
                .commit_polls(&commits, offer.as_ref().map(|offer| &offer.claim))
                .await?;
            let handed_over = match offer {
                Some(offer) if !committed.claimed.is_empty() => {
                    producer.hand_over(offer, committed.claimed).await
                }
                _ => 0,
            };
            let created: u64 = committed
                .summaries
                .iter()
                .map(|s| s.deliveries_created)
                .sum();
            if created > handed_over as u64 {
                producer.wake();
            }
            Ok(committed.summaries)
        })
        .await
        .unwrap_or_else(|joined| std::panic::resume_unwind(joined.into_panic()))
    }

    /// Tells the consumer that deliveries are due (a retry queued by hand).
    pub fn wake(&self) {
        self.shared.ready.notify_one();
    }

    /// The next commit may claim as many deliveries as the consumer has room for; none while
    /// it does not run (tests step through polls and deliveries by hand).
    fn offer(&self) -> Option<Offer> {
        let shared = &self.shared;
        let limit = shared.room.available_permits();
        if !shared.running.load(Ordering::Acquire) || limit == 0 {
            return None;
        }
        let now = Utc::now();
        Some(Offer {
            claim: ClaimAtCreation {
                claim: ClaimToken::generate(),
                lease_until: time::after(now, shared.lease),
                limit,
            },
            start_by: Instant::now() + shared.send_timeout,
        })
    }

    /// Passes what a commit claimed under `offer` to the consumer and returns how many it took.
    /// The rest (its own claims took the room meanwhile, the commit outlasted the send timeout,
    /// or it stopped) is put back in the store for the consumer to claim.
    async fn hand_over(&self, offer: Offer, mut claimed: Vec<ClaimedDelivery>) -> usize {
        let mut taken = 0;
        if Instant::now() < offer.start_by {
            if let Some(room) = self.take_room(claimed.len()) {
                let fits = room.num_permits();
                let rest = claimed.split_off(fits);
                let handed = HandedOff {
                    batch: std::mem::replace(&mut claimed, rest),
                    room,
                    start_by: offer.start_by,
                };
                match self.shared.sender.send(handed) {
                    Ok(()) => taken = fits,
                    Err(refused) => claimed.extend(refused.0.batch),
                }
            }
        }
        self.shared.release(&claimed).await;
        taken
    }

    /// Room for up to `wanted` deliveries, as much as is free.
    fn take_room(&self, wanted: usize) -> Option<OwnedSemaphorePermit> {
        let room = &self.shared.room;
        loop {
            let fits = u32::try_from(wanted.min(room.available_permits())).ok()?;
            if fits == 0 {
                return None;
            }
            match Arc::clone(room).try_acquire_many_owned(fits) {
                Ok(permit) => return Some(permit),
                // The claims took some meanwhile: ask for what is left.
                Err(TryAcquireError::NoPermits) => continue,
                Err(TryAcquireError::Closed) => return None,
            }
        }
    }
}

impl Shared {
    /// Puts claimed deliveries that will not be attempted back in the store, due at once (see
    /// [`crate::store::DeliveryStore::release_claims`]); if that fails, they are claimed again
    /// when their lease ends.
    async fn release(&self, deliveries: &[ClaimedDelivery]) {
        if deliveries.is_empty() {
            return;
        }
        let held: Vec<_> = deliveries
            .iter()
            .map(|d| (d.id.clone(), d.claim.clone()))
            .collect();
        if let Err(error) = self.store.release_claims(&held).await {
            tracing::warn!(
                error = %error_chain(&error),
                count = held.len(),
                "cannot put back claimed deliveries; they are sent when their lease ends"
            );
        }
    }
}

/// The delivering side, owned by the dispatcher: the hand-overs, the held room, the wake-ups
/// and the claims' lease.
pub struct Consumer {
    shared: Arc<Shared>,
    intake: Mutex<Option<mpsc::UnboundedReceiver<HandedOff>>>,
}

impl Consumer {
    /// The hand-overs, once: taking them opens the short way (see [`Consumer::set_running`]).
    pub fn take_intake(&self) -> Option<mpsc::UnboundedReceiver<HandedOff>> {
        self.intake
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Whether commits may hand deliveries over (only while something takes them).
    pub fn set_running(&self, running: bool) {
        self.shared.running.store(running, Ordering::Release);
    }

    /// Room for the deliveries held, claimed or handed over.
    pub fn room(&self) -> &Arc<Semaphore> {
        &self.shared.room
    }

    /// How long a claim holds: a wait for a send worker of up to one send timeout (a delivery
    /// that waited longer is not sent), the send, and its record.
    pub fn lease(&self) -> Duration {
        self.shared.lease
    }

    /// Wakes its own wait (a retry it scheduled falls due).
    pub fn wake(&self) {
        self.shared.ready.notify_one();
    }

    /// Resolves when a producer said deliveries are due (also for a wake made before the call).
    pub async fn ready(&self) {
        self.shared.ready.notified().await;
    }

    /// Puts back claimed deliveries that will not be attempted, due at once.
    pub async fn release(&self, deliveries: &[ClaimedDelivery]) {
        self.shared.release(deliveries).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Channel, MarkReadPolicy, NewEvent, NewSubscriber, OrderState, PollProgress,
        SubscriberFilter,
    };
    use crate::domain::{EventId, EventType, OrderId, SigningSecret, SubscriberId};
    use crate::store::PollCommit;

    const LEASE: Duration = Duration::from_secs(60);

    /// A store with one webhook subscriber and one watched order, and a poll of that order
    /// with two new messages.
    async fn store_and_poll(dir: &tempfile::TempDir) -> (Arc<dyn Store>, PollCommit) {
        let url = format!("sqlite://{}", dir.path().join("bridge.db").display());
        let store = crate::store::open(&url).await.unwrap();
        let now = Utc::now();
        let order = OrderId::parse("order_id", "122233").unwrap();
        store.watch_order(&order, None, now).await.unwrap();
        store
            .create_subscriber(NewSubscriber {
                id: SubscriberId::generate(),
                channel: Channel::Webhook {
                    url: "https://hooks.example.com/in".parse().unwrap(),
                },
                filter: SubscriberFilter::default(),
                description: None,
                mark_read: MarkReadPolicy::Never,
                secret: SigningSecret::generate(),
                created_at: now,
            })
            .await
            .unwrap();
        let events = [11, 12]
            .map(|message| {
                let id = EventId::derive(EventType::ChatMessageCreated, &order, Some(message));
                NewEvent::new(
                    id,
                    order.clone(),
                    EventType::ChatMessageCreated,
                    "{}".to_owned(),
                    now,
                )
            })
            .to_vec();
        let commit = PollCommit {
            order_id: order,
            new_chat: vec![(11, false), (12, false)],
            newly_read: Vec::new(),
            new_lifecycle: Vec::new(),
            events,
            progress: PollProgress {
                polled_at: now,
                state: OrderState::Watching,
                fallback: None,
                next_poll_at: None,
                last_error: None,
                consecutive_failures: 0,
                not_found_count: 0,
            },
        };
        (store, commit)
    }

    /// Commits `commit` claiming what the hand-over offers.
    /// An outbox over `store` whose consumer holds `room` deliveries at most, open for
    /// hand-overs.
    fn open_pair(store: &Arc<dyn Store>, room: usize) -> (Producer, Consumer) {
        let settings = DeliverySettings {
            concurrency: 1,
            timeout: LEASE,
            ..DeliverySettings::default()
        };
        let (producer, consumer) = new_pair(Arc::clone(store), &settings);
        let over = HELD_BATCHES - room;
        consumer.room().forget_permits(over);
        consumer.set_running(true);
        (producer, consumer)
    }

    async fn commit_under_offer(
        store: &dyn Store,
        producer: &Producer,
        commit: &PollCommit,
    ) -> (Offer, Vec<ClaimedDelivery>) {
        let offer = producer.offer().unwrap();
        let committed = store
            .commit_polls(std::slice::from_ref(commit), Some(&offer.claim))
            .await
            .unwrap();
        (offer, committed.claimed)
    }

    async fn due_now(store: &dyn Store) -> usize {
        let now = Utc::now();
        store
            .claim_due_deliveries(now, time::after(now, LEASE), 10)
            .await
            .unwrap()
            .len()
    }

    #[tokio::test]
    async fn nothing_is_offered_while_the_consumer_does_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_and_poll(&dir).await;
        let (producer, consumer) = open_pair(&store, 8);
        consumer.set_running(false);
        assert!(producer.offer().is_none());
        consumer.set_running(true);
        assert_eq!(producer.offer().map(|offer| offer.claim.limit), Some(8));
    }

    #[tokio::test]
    async fn what_no_longer_fits_the_room_is_put_back_due_now() {
        let dir = tempfile::tempdir().unwrap();
        let (store, commit) = store_and_poll(&dir).await;
        let (producer, consumer) = open_pair(&store, 2);
        let mut intake = consumer.take_intake().unwrap();

        let (offer, claimed) = commit_under_offer(store.as_ref(), &producer, &commit).await;
        assert_eq!(claimed.len(), 2);
        assert_eq!(due_now(store.as_ref()).await, 0, "both are claimed");
        // The consumer's own claim took one place meanwhile.
        let _taken = Arc::clone(consumer.room()).try_acquire_owned().unwrap();

        let taken = producer.hand_over(offer, claimed).await;

        assert_eq!(taken, 1);
        let handed = intake.try_recv().unwrap();
        assert_eq!((handed.batch.len(), handed.room.num_permits()), (1, 1));
        assert_eq!(due_now(store.as_ref()).await, 1, "the other is put back");
    }

    #[tokio::test]
    async fn a_stopped_consumer_takes_nothing_and_everything_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let (store, commit) = store_and_poll(&dir).await;
        let (producer, consumer) = open_pair(&store, 8);
        let intake = consumer.take_intake().unwrap();
        let (offer, claimed) = commit_under_offer(store.as_ref(), &producer, &commit).await;
        drop(intake);

        let taken = producer.hand_over(offer, claimed).await;

        assert_eq!(taken, 0);
        assert_eq!(due_now(store.as_ref()).await, 2);
    }
}
