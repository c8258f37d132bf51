//! The short way from the poller to the send queue. A poll commit creates the deliveries due at
//! once already claimed (in the same transaction as their events: still committed before they
//! are sent) and hands them to the running dispatcher in memory, which saves the claim's write
//! and read-back per delivery. The dispatcher's claim room bounds what is held in memory; what
//! does not fit stays in the store for the dispatcher's own claims, as before.

use chrono::Utc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

use crate::domain::{ClaimToken, ClaimedDelivery};
use crate::store::{ClaimAtCreation, Store};
use crate::telemetry::error_chain;
use crate::time;

/// Puts claimed deliveries that will not be attempted back in the store, due at once (see
/// [`Store::release_claims`]); if that fails, they are claimed again when their lease ends.
pub(super) async fn release(store: &dyn Store, deliveries: &[ClaimedDelivery]) {
    if deliveries.is_empty() {
        return;
    }
    let held: Vec<_> = deliveries
        .iter()
        .map(|d| (d.id.clone(), d.claim.clone()))
        .collect();
    if let Err(error) = store.release_claims(&held).await {
        tracing::warn!(
            error = %error_chain(&error),
            count = held.len(),
            "cannot put back claimed deliveries; they are sent when their lease ends"
        );
    }
}

/// Deliveries handed over, with their share of the claim room.
pub(super) struct HandedOff {
    pub batch: Vec<ClaimedDelivery>,
    pub room: OwnedSemaphorePermit,
    /// Not sent after this: the lease would not cover the send and its record.
    pub start_by: Instant,
}

struct Shared {
    room: Arc<Semaphore>,
    sender: mpsc::UnboundedSender<HandedOff>,
    /// Taken by [`super::Dispatcher::run`]; while it runs, hand-offs are accepted.
    receiver: Mutex<Option<mpsc::UnboundedReceiver<HandedOff>>>,
    running: AtomicBool,
    lease: Duration,
    send_timeout: Duration,
}

/// The poller's side of the hand-off; clones share one dispatcher.
#[derive(Clone)]
pub struct Handoff {
    shared: Arc<Shared>,
}

/// What one poll commit may claim for the dispatcher.
pub struct Offer {
    claim: ClaimAtCreation,
    start_by: Instant,
}

impl Offer {
    pub fn claim(&self) -> &ClaimAtCreation {
        &self.claim
    }
}

impl Handoff {
    pub(super) fn new(room: Arc<Semaphore>, lease: Duration, send_timeout: Duration) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            shared: Arc::new(Shared {
                room,
                sender,
                receiver: Mutex::new(Some(receiver)),
                running: AtomicBool::new(false),
                lease,
                send_timeout,
            }),
        }
    }

    /// The next commit may claim as many deliveries as the dispatcher has room for; none
    /// while the dispatcher is not running (tests step through polls and deliveries by hand).
    pub fn offer(&self) -> Option<Offer> {
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

    /// Passes what a commit claimed under `offer` to the dispatcher and returns how many it
    /// took. The rest (its own claims took the room meanwhile, the commit outlasted the send
    /// timeout, or it stopped) is put back in the store for the dispatcher to claim: the caller
    /// should wake it.
    pub async fn hand_over(
        &self,
        store: &dyn Store,
        offer: Offer,
        mut claimed: Vec<ClaimedDelivery>,
    ) -> usize {
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
        release(store, &claimed).await;
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

    /// The dispatcher's side: the queue, once.
    pub(super) fn take_intake(&self) -> Option<mpsc::UnboundedReceiver<HandedOff>> {
        self.shared
            .receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub(super) fn set_running(&self, running: bool) {
        self.shared.running.store(running, Ordering::Release);
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
    async fn commit_under_offer(
        store: &dyn Store,
        handoff: &Handoff,
        commit: &PollCommit,
    ) -> (Offer, Vec<ClaimedDelivery>) {
        let offer = handoff.offer().unwrap();
        let committed = store
            .commit_polls(std::slice::from_ref(commit), Some(offer.claim()))
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
    async fn nothing_is_offered_while_the_dispatcher_does_not_run() {
        let handoff = Handoff::new(Arc::new(Semaphore::new(8)), LEASE, LEASE);
        assert!(handoff.offer().is_none());
        handoff.set_running(true);
        assert_eq!(handoff.offer().map(|offer| offer.claim().limit), Some(8));
    }

    #[tokio::test]
    async fn what_no_longer_fits_the_room_is_put_back_due_now() {
        let dir = tempfile::tempdir().unwrap();
        let (store, commit) = store_and_poll(&dir).await;
        let room = Arc::new(Semaphore::new(2));
        let handoff = Handoff::new(Arc::clone(&room), LEASE, LEASE);
        let mut intake = handoff.take_intake().unwrap();
        handoff.set_running(true);

        let (offer, claimed) = commit_under_offer(store.as_ref(), &handoff, &commit).await;
        assert_eq!(claimed.len(), 2);
        assert_eq!(due_now(store.as_ref()).await, 0, "both are claimed");
        // The dispatcher's own claim took one place meanwhile.
        let _taken = Arc::clone(&room).try_acquire_owned().unwrap();

        let taken = handoff.hand_over(store.as_ref(), offer, claimed).await;

        assert_eq!(taken, 1);
        let handed = intake.try_recv().unwrap();
        assert_eq!((handed.batch.len(), handed.room.num_permits()), (1, 1));
        assert_eq!(due_now(store.as_ref()).await, 1, "the other is put back");
    }

    #[tokio::test]
    async fn a_stopped_dispatcher_takes_nothing_and_everything_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let (store, commit) = store_and_poll(&dir).await;
        let handoff = Handoff::new(Arc::new(Semaphore::new(8)), LEASE, LEASE);
        let intake = handoff.take_intake().unwrap();
        handoff.set_running(true);
        let (offer, claimed) = commit_under_offer(store.as_ref(), &handoff, &commit).await;
        drop(intake);

        let taken = handoff.hand_over(store.as_ref(), offer, claimed).await;

        assert_eq!(taken, 0);
        assert_eq!(due_now(store.as_ref()).await, 2);
    }
}
