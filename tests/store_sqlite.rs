//! The store's contract, written against [`Store`] so every backend runs the same tests: each
//! `contract` test takes a fresh store, and `store_contract!` stamps them all for one backend.
//! What only SQLite has (its files, its migrations) is tested apart, in `sqlite_only`.

use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use tempfile::TempDir;

use shopper_bridge::domain::{
    AttemptRecord, AttemptResolution, Channel, ClaimToken, ClaimedDelivery, Delivery,
    DeliveryStatus, MarkReadPolicy, NewEvent, NewSubscriber, Order, OrderCounts, OrderState,
    PollProgress, SeenState, Subscriber, SubscriberFilter, SubscriberPatch, SubscriberStatus,
};
use shopper_bridge::domain::{
    DeliveryId, EventId, EventType, OrderId, SigningSecret, SubscriberId, UserId,
};
use shopper_bridge::store::{
    self, ClaimAtCreation, CommitSummary, DeliveryFilter, PollCommit, RetryOutcome, Store,
};

/// Stamps every contract test as a test of one backend: `$open` makes a fresh store and
/// returns it with whatever keeps it alive (a temporary directory, a scratch database) until
/// the test ends.
macro_rules! store_contract {
    ($backend:ident, $open:path) => {
        contract_tests!($backend, $open;
            committing_the_same_poll_twice_creates_events_and_deliveries_once,
            a_batch_with_an_order_never_watched_is_refused_whole,
            a_batch_of_polls_is_summarised_per_order_and_committed_once,
            batches_larger_than_one_statement_commit_and_record_every_row,
            each_event_of_a_batch_stores_its_own_payload_byte_for_byte,
            readings_in_a_batch_touch_only_their_own_order,
            an_event_twice_in_a_batch_counts_for_the_first_commit_and_the_last_progress_stands,
            a_stopped_order_in_a_batch_keeps_its_state_while_the_others_progress,
            seen_state_remembers_items_and_read_flags,
            seen_state_carries_sent_messages_and_mark_read_requests_until_the_reading,
            an_excluded_subscriber_gets_no_delivery_of_the_event,
            fan_out_respects_filters_and_skips_disabled_subscribers,
            a_concurrent_stop_wins_over_poll_progress_but_keeps_the_events,
            watching_again_restarts_a_stopped_order_but_leaves_a_watched_one,
            claiming_leases_deliveries_until_the_lease_ends,
            a_commit_claims_what_is_due_at_once_up_to_its_limit_and_leaves_the_rest,
            recorded_attempts_deliver_retry_or_park_deliveries,
            a_gone_receiver_disables_its_subscriber_until_re_enabled,
            disabling_a_subscriber_pauses_its_pending_deliveries_and_enabling_resumes_them,
            a_retry_recorded_after_its_subscriber_was_disabled_stays_paused,
            a_late_record_of_an_expired_claim_does_not_overwrite_the_newer_claim,
            released_claims_are_due_as_created_unless_claimed_again_or_paused,
            a_manual_retry_is_refused_while_the_delivery_is_claimed,
            a_rotated_secret_keeps_signing_until_it_expires,
            deleting_a_subscriber_parks_its_pending_deliveries_and_keeps_history,
            concurrent_writers_queue_instead_of_failing,
        );
    };
}

macro_rules! contract_tests {
    ($backend:ident, $open:path; $($test:ident),+ $(,)?) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    let (store, _kept) = $open().await;
                    contract::$test(store).await;
                }
            )+
        }
    };
}

store_contract!(sqlite, open_sqlite);

/// A fresh SQLite store, in a directory that lives as long as it is kept.
async fn open_sqlite() -> (Arc<dyn Store>, TempDir) {
    let dir = TempDir::new().unwrap();
    (open_in(&dir, "sqlite://").await, dir)
}

/// `scheme` is either URL form the configuration accepts: `sqlite://` or `sqlite:`.
async fn open_in(dir: &TempDir, scheme: &str) -> Arc<dyn Store> {
    let url = format!("{scheme}{}", dir.path().join("bridge.db").display());
    store::open(&url).await.expect("open store")
}

const LEASE: Duration = Duration::seconds(30);

/// The order most tests watch.
const ORDER: &str = "122233";

/// A fixed clock: the store keeps milliseconds, so test times stay on whole seconds.
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

fn order_id(id: &str) -> OrderId {
    OrderId::parse("order_id", id).unwrap()
}

fn event(order: &OrderId, event_type: EventType, subject: i64, at: DateTime<Utc>) -> NewEvent {
    let id = EventId::derive(event_type, order, Some(subject));
    let payload = format!(r#"{{"id":"{id}","type":"{event_type}","subject":{subject}}}"#);
    NewEvent::new(id, order.clone(), event_type, payload, at)
}

fn progress(polled_at: DateTime<Utc>) -> PollProgress {
    PollProgress {
        polled_at,
        state: OrderState::Watching,
        fallback: None,
        next_poll_at: Some(polled_at + Duration::seconds(5)),
        last_error: None,
        consecutive_failures: 0,
        not_found_count: 0,
    }
}

/// A poll that saw chat message `chat` and notification `lifecycle`, with their events.
fn poll(order: &OrderId, chat: i64, lifecycle: i64, at: DateTime<Utc>) -> PollCommit {
    PollCommit {
        order_id: order.clone(),
        new_chat: vec![(chat, false)],
        newly_read: vec![],
        new_lifecycle: vec![lifecycle],
        events: vec![
            event(order, EventType::ChatMessageCreated, chat, at),
            event(order, EventType::LifecycleMessageCreated, lifecycle, at),
        ],
        progress: progress(at),
    }
}

/// A poll that saw nothing new.
fn quiet(order: &OrderId, at: DateTime<Utc>) -> PollCommit {
    PollCommit {
        new_chat: vec![],
        new_lifecycle: vec![],
        events: vec![],
        ..poll(order, 0, 0, at)
    }
}

/// A poll that saw only chat messages `read` turn read.
fn reading(order: &OrderId, read: Vec<i64>, at: DateTime<Utc>) -> PollCommit {
    PollCommit {
        newly_read: read,
        ..quiet(order, at)
    }
}

/// A poll whose progress records a failure to poll.
fn failing(order: &OrderId, failures: u32, at: DateTime<Utc>) -> PollCommit {
    PollCommit {
        progress: PollProgress {
            last_error: Some("503 from upstream".to_owned()),
            consecutive_failures: failures,
            ..progress(at)
        },
        ..poll(order, 11, 21, at)
    }
}

/// A webhook subscriber to `filter`.
fn new_subscriber(filter: SubscriberFilter) -> NewSubscriber {
    NewSubscriber {
        id: SubscriberId::generate(),
        channel: Channel::Webhook {
            url: "https://hooks.example.com/in".parse().unwrap(),
        },
        filter,
        description: Some("test receiver".to_owned()),
        mark_read: MarkReadPolicy::Never,
        secret: SigningSecret::generate(),
        created_at: t(0),
    }
}

fn of_orders(orders: &[&OrderId]) -> SubscriberFilter {
    SubscriberFilter {
        order_ids: Some(orders.iter().map(|&order| order.clone()).collect()),
        ..SubscriberFilter::default()
    }
}

/// `(events_inserted, deliveries_created)` of each commit.
fn counted(summaries: &[CommitSummary]) -> Vec<(u64, u64)> {
    summaries
        .iter()
        .map(|s| (s.events_inserted, s.deliveries_created))
        .collect()
}

/// A delivery's status, attempts made and next due time.
fn standing(delivery: &Delivery) -> (DeliveryStatus, u32, Option<DateTime<Utc>>) {
    (
        delivery.status,
        delivery.attempt_count,
        delivery.next_attempt_at,
    )
}

fn attempt(delivery: &ClaimedDelivery, resolution: AttemptResolution, code: u16) -> AttemptRecord {
    AttemptRecord {
        delivery_id: delivery.id.clone(),
        claim: delivery.claim.clone(),
        at: t(10),
        resolution,
        status_code: Some(code),
        response_excerpt: Some("body".to_owned()),
        error: None,
        disable_subscriber: None,
    }
}

fn ids(claimed: &[ClaimedDelivery]) -> Vec<DeliveryId> {
    claimed.iter().map(|d| d.id.clone()).collect()
}

/// The steps the tests share, on any backend's store; each fails the test if the store errs.
trait Steps {
    async fn watched(&self, id: &str) -> OrderId;
    async fn subscriber(&self, filter: SubscriberFilter) -> Subscriber;
    /// A subscriber to every event.
    async fn webhook(&self) -> Subscriber;
    /// Commits [`poll`]`(order, 11, 21, t(1))`: two events, one delivery each per subscriber.
    async fn polled(&self, order: &OrderId) -> CommitSummary;
    async fn claim(&self, now: DateTime<Utc>, until: DateTime<Utc>, n: u32)
        -> Vec<ClaimedDelivery>;
    async fn record(&self, records: &[AttemptRecord]);
    async fn set_status(
        &self,
        id: &SubscriberId,
        status: SubscriberStatus,
        now: DateTime<Utc>,
    ) -> Subscriber;
    async fn delivery(&self, id: &DeliveryId) -> Delivery;
    async fn deliveries(&self, filter: DeliveryFilter) -> Vec<Delivery>;
    async fn deliveries_of(&self, subscriber: &SubscriberId) -> Vec<Delivery>;
    async fn order(&self, id: &OrderId) -> (Order, OrderCounts);
    async fn seen(&self, orders: &[OrderId]) -> HashMap<OrderId, SeenState>;
    /// [`Store::next_delivery_due`].
    async fn delivery_due(&self) -> Option<DateTime<Utc>>;
}

impl Steps for dyn Store {
    async fn watched(&self, id: &str) -> OrderId {
        let order = order_id(id);
        self.watch_order(&order, None, t(0)).await.unwrap();
        order
    }

    async fn subscriber(&self, filter: SubscriberFilter) -> Subscriber {
        self.create_subscriber(new_subscriber(filter))
            .await
            .unwrap()
    }

    async fn webhook(&self) -> Subscriber {
        self.subscriber(SubscriberFilter::default()).await
    }

    async fn polled(&self, order: &OrderId) -> CommitSummary {
        self.commit_poll(&poll(order, 11, 21, t(1))).await.unwrap()
    }

    async fn claim(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        n: u32,
    ) -> Vec<ClaimedDelivery> {
        self.claim_due_deliveries(now, until, n).await.unwrap()
    }

    async fn record(&self, records: &[AttemptRecord]) {
        self.record_attempts(records).await.unwrap();
    }

    async fn set_status(
        &self,
        id: &SubscriberId,
        status: SubscriberStatus,
        now: DateTime<Utc>,
    ) -> Subscriber {
        let patch = SubscriberPatch {
            status: Some(status),
            ..SubscriberPatch::default()
        };
        self.update_subscriber(id, patch, now)
            .await
            .unwrap()
            .unwrap()
    }

    async fn delivery(&self, id: &DeliveryId) -> Delivery {
        self.get_delivery(id).await.unwrap().unwrap()
    }

    async fn deliveries(&self, filter: DeliveryFilter) -> Vec<Delivery> {
        self.list_deliveries(&filter).await.unwrap()
    }

    async fn deliveries_of(&self, subscriber: &SubscriberId) -> Vec<Delivery> {
        self.deliveries(DeliveryFilter {
            subscriber_id: Some(subscriber.clone()),
            ..DeliveryFilter::default()
        })
        .await
    }

    async fn order(&self, id: &OrderId) -> (Order, OrderCounts) {
        self.get_order(id).await.unwrap().unwrap()
    }

    async fn seen(&self, orders: &[OrderId]) -> HashMap<OrderId, SeenState> {
        self.seen_states(orders).await.unwrap()
    }

    async fn delivery_due(&self) -> Option<DateTime<Utc>> {
        self.next_delivery_due().await.unwrap()
    }
}

/// What every backend's store does, each test on a fresh store.
mod contract {
    use super::*;

    pub async fn committing_the_same_poll_twice_creates_events_and_deliveries_once(
        store: Arc<dyn Store>,
    ) {
        let order = store.watched(ORDER).await;
        store.webhook().await;
        store.webhook().await;

        let commit = poll(&order, 11, 21, t(1));
        let first = store.commit_poll(&commit).await.unwrap();
        let second = store.commit_poll(&commit).await.unwrap();

        assert_eq!(counted(&[first, second]), [(2, 4), (0, 0)]);
        let all = store.deliveries(DeliveryFilter::default()).await;
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|d| d.status == DeliveryStatus::Pending
            && d.next_attempt_at == Some(t(1))
            && d.order_id == order));

        let (stored, counts) = store.order(&order).await;
        assert_eq!(
            (
                counts.chat_messages,
                counts.lifecycle_messages,
                counts.events
            ),
            (1, 1, 2)
        );
        assert_eq!(stored.last_polled_at, Some(t(1)));
        assert_eq!(stored.next_poll_at, Some(t(6)));
    }

    pub async fn a_batch_with_an_order_never_watched_is_refused_whole(store: Arc<dyn Store>) {
        let order = store.watched(ORDER).await;
        store.webhook().await;
        let stranger = order_id("999999");

        let batch = [poll(&order, 11, 21, t(1)), poll(&stranger, 12, 22, t(1))];
        store
            .commit_polls(&batch, None)
            .await
            .expect_err("events of an unknown order break a foreign key");

        let (stored, counts) = store.order(&order).await;
        assert_eq!((counts.chat_messages, counts.events), (0, 0));
        assert_eq!(stored.last_polled_at, None);
        let seen = store.seen(std::slice::from_ref(&order)).await;
        assert!(seen.values().all(|state| state.chat.is_empty()), "{seen:?}");
        let all = store.deliveries(DeliveryFilter::default()).await;
        assert!(all.is_empty(), "{all:?}");
    }

    pub async fn a_batch_of_polls_is_summarised_per_order_and_committed_once(
        store: Arc<dyn Store>,
    ) {
        let a = store.watched("1001").await;
        let b = store.watched("1002").await;
        let silent = store.watched("1003").await;
        store.webhook().await;
        let only_b = store.subscriber(of_orders(&[&b])).await;
        let batch = [
            poll(&a, 11, 21, t(1)),
            poll(&b, 12, 22, t(1)),
            quiet(&silent, t(1)),
        ];

        let first = store.commit_polls(&batch, None).await.unwrap().summaries;
        let again = store.commit_polls(&batch, None).await.unwrap().summaries;

        assert_eq!(counted(&first), [(2, 2), (2, 4), (0, 0)]);
        assert_eq!(counted(&again), [(0, 0); 3]);
        assert_eq!(store.deliveries_of(&only_b.id).await.len(), 2);
        for order in [&a, &b, &silent] {
            let (stored, _) = store.order(order).await;
            assert_eq!(
                (stored.last_polled_at, stored.next_poll_at),
                (Some(t(1)), Some(t(6))),
                "{order}"
            );
        }
        let unknown = order_id("1004");
        let seen = store.seen(&[a.clone(), b.clone(), unknown.clone()]).await;
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[&a].chat.get(&11), Some(&false));
        assert_eq!(seen[&a].lifecycle.iter().collect::<Vec<_>>(), [&21]);
        assert_eq!(seen[&b].chat.keys().collect::<Vec<_>>(), [&12]);
        assert_eq!(seen[&unknown], SeenState::default());
        assert!(store.seen(&[]).await.is_empty());
    }

    pub async fn batches_larger_than_one_statement_commit_and_record_every_row(
        store: Arc<dyn Store>,
    ) {
        let order = store.watched(ORDER).await;
        store.webhook().await;
        store.webhook().await;
        let messages: Vec<i64> = (1..=700).collect();
        let commit = PollCommit {
            new_chat: messages.iter().map(|&id| (id, false)).collect(),
            events: messages
                .iter()
                .map(|&id| event(&order, EventType::ChatMessageCreated, id, t(1)))
                .collect(),
            ..quiet(&order, t(1))
        };

        let summary = store.commit_poll(&commit).await.unwrap();
        assert_eq!(counted(&[summary]), [(700, 1400)]);
        assert_eq!(store.seen_state(&order).await.unwrap().chat.len(), 700);
        let claimed = store.claim(t(1), t(1) + LEASE, 2000).await;
        assert_eq!(claimed.len(), 1400);
        let records: Vec<_> = claimed
            .iter()
            .map(|d| attempt(d, AttemptResolution::Delivered, 200))
            .collect();
        store.record(&records).await;

        let delivered = store
            .deliveries(DeliveryFilter {
                status: Some(DeliveryStatus::Delivered),
                ..DeliveryFilter::default()
            })
            .await;
        assert_eq!(delivered.len(), 1400);
        assert!(delivered.iter().all(|d| d.attempts.len() == 1));
    }

    pub async fn each_event_of_a_batch_stores_its_own_payload_byte_for_byte(store: Arc<dyn Store>) {
        let orders = [store.watched("1001").await, store.watched("1002").await];
        store.webhook().await;
        // Multi-byte characters and different lengths: each payload must come back whole, from
        // its own bytes, not its neighbour's.
        let bodies = ["é", "Bananas — ça va? 🍌", "", "🥛🥛🥛 oat milk", "plain"];
        let mut sent = HashMap::new();
        let commits: Vec<PollCommit> = orders
            .iter()
            .map(|order| {
                let events = bodies
                    .iter()
                    .zip(1..)
                    .map(|(body, message)| {
                        let kind = EventType::ChatMessageCreated;
                        let id = EventId::derive(kind, order, Some(message));
                        let payload = format!(r#"{{"order":"{order}","body":"{body}"}}"#);
                        sent.insert(id.clone(), payload.clone());
                        NewEvent::new(id, order.clone(), kind, payload, t(1))
                    })
                    .collect();
                PollCommit {
                    new_chat: (1..=bodies.len() as i64).map(|id| (id, false)).collect(),
                    events,
                    ..quiet(order, t(1))
                }
            })
            .collect();

        store.commit_polls(&commits, None).await.unwrap();

        let claimed = store.claim(t(1), t(1) + LEASE, 100).await;
        let stored: HashMap<EventId, String> = claimed
            .iter()
            .map(|d| (d.event_id.clone(), d.payload.to_string()))
            .collect();
        assert_eq!(stored, sent);
    }

    pub async fn readings_in_a_batch_touch_only_their_own_order(store: Arc<dyn Store>) {
        let a = store.watched("1001").await;
        let b = store.watched("1002").await;
        let requester = store.webhook().await;
        // Both orders saw a chat message 11, unread; the bridge had both marked read.
        store
            .commit_polls(&[poll(&a, 11, 21, t(1)), poll(&b, 11, 21, t(1))], None)
            .await
            .unwrap();
        for order in [&a, &b] {
            store
                .record_read_request(order, std::slice::from_ref(&requester.id), t(2))
                .await
                .unwrap();
        }

        let batch = [reading(&a, vec![11], t(3)), quiet(&b, t(3))];
        store.commit_polls(&batch, None).await.unwrap();

        let seen = store.seen(&[a.clone(), b.clone()]).await;
        assert_eq!(seen[&a].chat.get(&11), Some(&true));
        assert!(seen[&a].read_requested.is_empty());
        assert_eq!(seen[&b].chat.get(&11), Some(&false));
        assert_eq!(
            seen[&b].read_requested.get(&11),
            Some(&vec![requester.id.clone()])
        );
    }

    pub async fn an_event_twice_in_a_batch_counts_for_the_first_commit_and_the_last_progress_stands(
        store: Arc<dyn Store>,
    ) {
        let order = store.watched("1001").await;
        store.webhook().await;
        let later = failing(&order, 1, t(2));

        let batch = [poll(&order, 11, 21, t(1)), later];
        let summaries = store.commit_polls(&batch, None).await.unwrap().summaries;

        assert_eq!(counted(&summaries), [(2, 2), (0, 0)]);
        let (stored, counts) = store.order(&order).await;
        assert_eq!(counts.events, 2);
        assert_eq!(stored.next_poll_at, Some(t(7)));
        assert_eq!(stored.consecutive_failures, 1);
    }

    pub async fn a_stopped_order_in_a_batch_keeps_its_state_while_the_others_progress(
        store: Arc<dyn Store>,
    ) {
        let watching = store.watched("1001").await;
        let stopped = store.watched("1002").await;
        store.webhook().await;
        assert!(store.stop_order(&stopped).await.unwrap());

        let batch = [poll(&watching, 11, 21, t(1)), poll(&stopped, 12, 22, t(1))];
        let summaries = store.commit_polls(&batch, None).await.unwrap().summaries;

        assert_eq!(counted(&summaries), [(2, 2), (2, 2)], "the events are kept");
        let (stored, _) = store.order(&stopped).await;
        assert_eq!(
            (stored.state, stored.next_poll_at, stored.last_polled_at),
            (OrderState::Stopped, None, None)
        );
        let (polled, _) = store.order(&watching).await;
        assert_eq!(
            (polled.state, polled.next_poll_at),
            (OrderState::Watching, Some(t(6)))
        );
        assert_eq!(store.due_orders(t(100), 10).await.unwrap(), vec![polled]);
    }

    pub async fn seen_state_remembers_items_and_read_flags(store: Arc<dyn Store>) {
        let order = store.watched(ORDER).await;
        store.polled(&order).await;

        let read_poll = PollCommit {
            new_chat: vec![(12, true)],
            ..reading(&order, vec![11], t(2))
        };
        store.commit_poll(&read_poll).await.unwrap();

        let seen = store.seen_state(&order).await.unwrap();
        assert_eq!(seen.chat.get(&11), Some(&true));
        assert_eq!(seen.chat.get(&12), Some(&true));
        assert_eq!(seen.lifecycle.iter().collect::<Vec<_>>(), vec![&21]);
        let other = store.seen_state(&order_id("other")).await.unwrap();
        assert!(other.chat.is_empty());
    }

    pub async fn seen_state_carries_sent_messages_and_mark_read_requests_until_the_reading(
        store: Arc<dyn Store>,
    ) {
        let order = store.watched(ORDER).await;
        let requester = store.webhook().await;
        let gone = store.webhook().await;
        store.delete_subscriber(&gone.id).await.unwrap();
        for (message, origin) in [(7, Some(&requester.id)), (8, None)] {
            store
                .record_sent_message(&order, message, origin, t(1))
                .await
                .unwrap();
        }
        // 11 unread, 12 already read: only 11 is read by the request.
        let first = PollCommit {
            new_chat: vec![(11, false), (12, true)],
            ..poll(&order, 0, 21, t(1))
        };
        store.commit_poll(&first).await.unwrap();
        for _ in 0..2 {
            store
                .record_read_request(&order, &[requester.id.clone(), gone.id.clone()], t(2))
                .await
                .unwrap();
        }

        let seen = store.seen_state(&order).await.unwrap();
        assert_eq!(seen.sent.get(&7), Some(&Some(requester.id.clone())));
        assert_eq!(seen.sent.get(&8), Some(&None));
        assert_eq!(seen.read_requested.len(), 1);
        assert_eq!(
            seen.read_requested.get(&11),
            Some(&vec![requester.id.clone()])
        );

        store
            .commit_poll(&reading(&order, vec![11], t(3)))
            .await
            .unwrap();
        let seen = store.seen_state(&order).await.unwrap();
        assert!(seen.read_requested.is_empty());
        assert_eq!(seen.sent.len(), 2);
    }

    pub async fn an_excluded_subscriber_gets_no_delivery_of_the_event(store: Arc<dyn Store>) {
        let order = store.watched(ORDER).await;
        let origin = store.webhook().await;
        let other = store.webhook().await;
        let mut commit = poll(&order, 11, 21, t(1));
        commit.events[0].exclude_subscribers = vec![origin.id.clone()];
        let summary = store.commit_poll(&commit).await.unwrap();
        assert_eq!(summary.deliveries_created, 3);
        let types = |deliveries: Vec<Delivery>| {
            let mut types: Vec<_> = deliveries.iter().map(|d| d.event_type).collect();
            types.sort_by_key(|t| t.as_str());
            types
        };
        assert_eq!(
            types(store.deliveries_of(&origin.id).await),
            [EventType::LifecycleMessageCreated]
        );
        assert_eq!(
            types(store.deliveries_of(&other.id).await),
            [
                EventType::ChatMessageCreated,
                EventType::LifecycleMessageCreated
            ]
        );
    }

    pub async fn fan_out_respects_filters_and_skips_disabled_subscribers(store: Arc<dyn Store>) {
        let order = store.watched(ORDER).await;
        let everything = store.webhook().await;
        let lifecycle_only = store
            .subscriber(SubscriberFilter {
                event_types: Some(vec![EventType::LifecycleMessageCreated]),
                order_ids: None,
            })
            .await;
        let other_order = store.subscriber(of_orders(&[&order_id("999")])).await;
        let disabled = store.webhook().await;
        store
            .set_status(&disabled.id, SubscriberStatus::Disabled, t(0))
            .await;

        let summary = store.polled(&order).await;

        assert_eq!(summary.deliveries_created, 3);
        assert_eq!(store.deliveries_of(&everything.id).await.len(), 2);
        let lifecycle = store.deliveries_of(&lifecycle_only.id).await;
        assert_eq!(lifecycle.len(), 1);
        assert_eq!(lifecycle[0].event_type, EventType::LifecycleMessageCreated);
        assert!(store.deliveries_of(&other_order.id).await.is_empty());
        assert!(store.deliveries_of(&disabled.id).await.is_empty());
    }

    pub async fn a_concurrent_stop_wins_over_poll_progress_but_keeps_the_events(
        store: Arc<dyn Store>,
    ) {
        let order = store.watched(ORDER).await;
        store.webhook().await;

        assert!(store.stop_order(&order).await.unwrap());
        let summary = store.polled(&order).await;

        let (stopped, counts) = store.order(&order).await;
        assert_eq!(stopped.state, OrderState::Stopped);
        assert_eq!(stopped.next_poll_at, None);
        assert_eq!(stopped.last_polled_at, None);
        assert_eq!((summary.events_inserted, counts.events), (2, 2));
        assert!(store.due_orders(t(100), 10).await.unwrap().is_empty());
        assert!(!store.stop_order(&order_id("unknown")).await.unwrap());
    }

    pub async fn watching_again_restarts_a_stopped_order_but_leaves_a_watched_one(
        store: Arc<dyn Store>,
    ) {
        let order = order_id(ORDER);
        let user = UserId::parse("user_id", "u-1").unwrap();
        let (fresh, started) = store.watch_order(&order, Some(&user), t(0)).await.unwrap();
        assert!(started);
        assert_eq!(fresh.next_poll_at, Some(t(0)));
        assert_eq!(fresh.watched_since, t(0));

        store.commit_poll(&failing(&order, 3, t(1))).await.unwrap();
        let (again, started) = store.watch_order(&order, None, t(2)).await.unwrap();
        assert!(!started);
        assert_eq!(again.consecutive_failures, 3);
        assert_eq!(again.next_poll_at, Some(t(6)));
        assert_eq!(again.watched_since, t(0));

        store.stop_order(&order).await.unwrap();
        let (restarted, started) = store.watch_order(&order, None, t(3)).await.unwrap();
        assert!(started);
        assert_eq!(restarted.state, OrderState::Watching);
        assert_eq!(restarted.next_poll_at, Some(t(3)));
        assert_eq!(
            (restarted.created_at, restarted.watched_since),
            (t(0), t(3)),
            "a restart starts a new watch"
        );
        assert_eq!(restarted.consecutive_failures, 0);
        assert_eq!(restarted.last_error, None);
        assert_eq!(restarted.user_id, Some(user));
        assert_eq!(store.next_poll_due().await.unwrap(), Some(t(3)));
        assert_eq!(store.due_orders(t(3), 10).await.unwrap(), vec![restarted]);
        assert!(store.due_orders(t(2), 10).await.unwrap().is_empty());
    }

    pub async fn claiming_leases_deliveries_until_the_lease_ends(store: Arc<dyn Store>) {
        let order = store.watched(ORDER).await;
        let first = store.webhook().await;
        store.webhook().await;
        store.polled(&order).await;

        assert!(store.claim(t(0), t(30), 10).await.is_empty());
        let claimed = store.claim(t(1), t(1) + LEASE, 10).await;
        assert_eq!(claimed.len(), 4);
        let same_event: Vec<_> = claimed
            .iter()
            .filter(|d| d.event_id == claimed[0].event_id)
            .collect();
        assert_eq!(same_event.len(), 2);
        assert!(Arc::ptr_eq(&same_event[0].payload, &same_event[1].payload));
        let of_first = claimed
            .iter()
            .find(|d| d.subscriber.id == first.id)
            .unwrap();
        assert_eq!(*of_first.subscriber, first);
        assert_eq!(of_first.attempts_made, 0);

        assert!(store.claim(t(2), t(32), 10).await.is_empty());
        assert_eq!(store.delivery_due().await, Some(t(1) + LEASE));
        let reclaimed = store.claim(t(1) + LEASE, t(100), 3).await;
        assert_eq!(reclaimed.len(), 3, "the limit applies");
    }

    pub async fn a_commit_claims_what_is_due_at_once_up_to_its_limit_and_leaves_the_rest(
        store: Arc<dyn Store>,
    ) {
        let order = store.watched(ORDER).await;
        let first = store.webhook().await;
        store.webhook().await;
        let digest = store
            .create_subscriber(NewSubscriber {
                channel: Channel::Email {
                    to: vec!["staff@store.example".to_owned()],
                    digest_seconds: Some(60),
                },
                description: None,
                ..new_subscriber(SubscriberFilter::default())
            })
            .await
            .unwrap();
        let claim = ClaimAtCreation {
            claim: ClaimToken::generate(),
            lease_until: t(1) + LEASE,
            limit: 3,
        };

        let committed = store
            .commit_polls(&[poll(&order, 11, 21, t(1))], Some(&claim))
            .await
            .unwrap();

        assert_eq!(counted(&committed.summaries), [(2, 6)]);
        let claimed = committed.claimed;
        assert_eq!(claimed.len(), 3, "the limit applies");
        assert!(claimed.iter().all(|d| d.claim == claim.claim
            && d.attempts_made == 0
            && d.order_id == order
            && d.subscriber.id != digest.id));
        // Creation order: both webhook deliveries of the first event, then the second event's.
        assert_eq!(claimed[0].event_id, claimed[1].event_id);
        assert!(Arc::ptr_eq(&claimed[0].payload, &claimed[1].payload));
        assert_eq!(*claimed[0].subscriber, first);
        assert_eq!(
            claimed[0].payload.as_ref(),
            poll(&order, 11, 21, t(1)).events[0].payload
        );
        // The claimed ones wait for their lease like any claim; the third webhook delivery is
        // due now, the digest's at the end of its window.
        let rest = store.claim(t(1), t(1) + LEASE, 10).await;
        assert_eq!(rest.len(), 1);
        assert!(claimed.iter().all(|d| d.id != rest[0].id));
        assert_eq!(
            store.delivery_due().await,
            Some(t(1) + LEASE),
            "the lease ends before the digest window"
        );
        // An attempt under the commit's claim counts.
        store
            .record(&[attempt(&claimed[0], AttemptResolution::Delivered, 200)])
            .await;
        let delivered = store.delivery(&claimed[0].id).await;
        assert_eq!(delivered.status, DeliveryStatus::Delivered);
        assert_eq!(delivered.attempts.len(), 1);
        // Put back unsent, a claimed delivery is due at once.
        store
            .postpone_deliveries(&[claimed[1].id.clone()], t(2))
            .await
            .unwrap();
        let put_back = store.claim(t(2), t(2) + LEASE, 10).await;
        assert_eq!(ids(&put_back), [claimed[1].id.clone()]);
    }

    pub async fn recorded_attempts_deliver_retry_or_park_deliveries(store: Arc<dyn Store>) {
        let order = store.watched(ORDER).await;
        store.webhook().await;
        let mut commit = poll(&order, 11, 21, t(1));
        commit
            .events
            .push(event(&order, EventType::ChatMessageRead, 11, t(1)));
        store.commit_poll(&commit).await.unwrap();
        let claimed = store.claim(t(1), t(31), 10).await;
        let [ok, again, broken] = &claimed[..] else {
            panic!("expected 3 deliveries, got {}", claimed.len())
        };

        store
            .record(&[
                attempt(ok, AttemptResolution::Delivered, 204),
                attempt(again, AttemptResolution::RetryAt(t(60)), 503),
                attempt(broken, AttemptResolution::Failed, 400),
            ])
            .await;

        let delivered = store.delivery(&ok.id).await;
        assert_eq!(standing(&delivered), (DeliveryStatus::Delivered, 1, None));
        assert_eq!(delivered.attempts[0].outcome, "delivered");
        assert_eq!(delivered.attempts[0].status_code, Some(204));
        let retrying = store.delivery(&again.id).await;
        assert_eq!(retrying.status, DeliveryStatus::Pending);
        assert_eq!(retrying.next_attempt_at, Some(t(60)));
        assert_eq!(retrying.attempts[0].outcome, "retry");
        let failed = store.delivery(&broken.id).await;
        assert_eq!(
            (failed.status, failed.next_attempt_at),
            (DeliveryStatus::Failed, None)
        );
        assert_eq!(failed.attempts[0].outcome, "failed");

        assert_eq!(store.delivery_due().await, Some(t(60)));
        let retried = store.claim(t(60), t(90), 10).await;
        assert_eq!(retried.len(), 1);
        assert_eq!(
            (retried[0].id.clone(), retried[0].attempts_made),
            (again.id.clone(), 1)
        );

        let RetryOutcome::Queued(revived) = store.retry_delivery(&broken.id, t(70)).await.unwrap()
        else {
            panic!("a parked delivery of an active subscriber is queued again")
        };
        assert_eq!(revived.status, DeliveryStatus::Pending);
        assert_eq!(revived.next_attempt_at, Some(t(70)));
        let pending = store
            .deliveries(DeliveryFilter {
                status: Some(DeliveryStatus::Pending),
                order_id: Some(order),
                limit: 10,
                ..DeliveryFilter::default()
            })
            .await;
        assert_eq!(pending.len(), 2);
    }

    pub async fn a_gone_receiver_disables_its_subscriber_until_re_enabled(store: Arc<dyn Store>) {
        let order = store.watched(ORDER).await;
        let gone = store.webhook().await;
        store.polled(&order).await;
        let claimed = store.claim(t(1), t(2), 1).await;

        let record = AttemptRecord {
            disable_subscriber: Some((gone.id.clone(), "receiver answered 410 Gone".to_owned())),
            ..attempt(&claimed[0], AttemptResolution::Failed, 410)
        };
        store.record(&[record]).await;

        let disabled = store.get_subscriber(&gone.id).await.unwrap().unwrap();
        assert_eq!(disabled.status, SubscriberStatus::Disabled);
        assert_eq!(
            disabled.disabled_reason.as_deref(),
            Some("receiver answered 410 Gone")
        );
        assert!(store.claim(t(5), t(35), 10).await.is_empty());
        assert_eq!(store.delivery_due().await, None);
        let waiting: Vec<_> = store
            .deliveries_of(&gone.id)
            .await
            .into_iter()
            .filter(|d| d.status == DeliveryStatus::Pending)
            .collect();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].next_attempt_at, None, "paused, not scanned");

        let enabled = store
            .set_status(&gone.id, SubscriberStatus::Active, t(6))
            .await;
        assert_eq!((enabled.disabled_reason, enabled.updated_at), (None, t(6)));
        assert_eq!(store.delivery_due().await, Some(t(6)));
        assert_eq!(store.claim(t(6), t(36), 10).await.len(), 1);
    }

    pub async fn disabling_a_subscriber_pauses_its_pending_deliveries_and_enabling_resumes_them(
        store: Arc<dyn Store>,
    ) {
        let order = store.watched(ORDER).await;
        let paused = store.webhook().await;
        let other = store.webhook().await;
        store.polled(&order).await;
        let all_due_at = |deliveries: Vec<Delivery>, due: Option<DateTime<Utc>>| {
            deliveries
                .iter()
                .all(|d| d.status == DeliveryStatus::Pending && d.next_attempt_at == due)
        };

        store
            .set_status(&paused.id, SubscriberStatus::Disabled, t(2))
            .await;
        let of_paused = store.deliveries_of(&paused.id).await;
        assert_eq!(of_paused.len(), 2);
        assert!(all_due_at(of_paused, None));
        assert!(all_due_at(store.deliveries_of(&other.id).await, Some(t(1))));
        let claimed = store.claim(t(3), t(33), 10).await;
        assert!(claimed.iter().all(|d| d.subscriber.id == other.id));
        assert_eq!(claimed.len(), 2);
        assert_eq!(store.delivery_due().await, Some(t(33)));

        // Disabling again changes nothing; enabling makes them due at once.
        store
            .set_status(&paused.id, SubscriberStatus::Disabled, t(4))
            .await;
        store
            .set_status(&paused.id, SubscriberStatus::Active, t(5))
            .await;
        assert!(all_due_at(
            store.deliveries_of(&paused.id).await,
            Some(t(5))
        ));
        let resumed = store.claim(t(5), t(35), 10).await;
        assert_eq!(resumed.len(), 2);
        assert!(resumed.iter().all(|d| d.subscriber.id == paused.id));
    }

    pub async fn a_retry_recorded_after_its_subscriber_was_disabled_stays_paused(
        store: Arc<dyn Store>,
    ) {
        let order = store.watched(ORDER).await;
        let sub = store.webhook().await;
        store.polled(&order).await;
        let claimed = store.claim(t(1), t(31), 1).await;
        store
            .set_status(&sub.id, SubscriberStatus::Disabled, t(2))
            .await;

        store
            .record(&[attempt(&claimed[0], AttemptResolution::RetryAt(t(60)), 503)])
            .await;

        let delivery = store.delivery(&claimed[0].id).await;
        assert_eq!(standing(&delivery), (DeliveryStatus::Pending, 1, None));
        assert_eq!(store.delivery_due().await, None);
    }

    pub async fn a_late_record_of_an_expired_claim_does_not_overwrite_the_newer_claim(
        store: Arc<dyn Store>,
    ) {
        let order = store.watched(ORDER).await;
        store.webhook().await;
        store.polled(&order).await;
        let first = store.claim(t(1), t(31), 10).await;
        // The lease ran out before the first attempts were recorded: claimed again.
        let second = store.claim(t(31), t(61), 10).await;
        assert_eq!(first[0].id, second[0].id);
        assert_ne!(first[0].claim, second[0].claim);

        store
            .record(&[attempt(&second[0], AttemptResolution::Delivered, 204)])
            .await;
        store
            .record(&[attempt(&first[0], AttemptResolution::RetryAt(t(90)), 503)])
            .await;

        let delivery = store.delivery(&first[0].id).await;
        assert_eq!(standing(&delivery), (DeliveryStatus::Delivered, 1, None));
        assert_eq!(delivery.attempts.len(), 1);
        assert_eq!(delivery.attempts[0].status_code, Some(204));
    }

    pub async fn released_claims_are_due_as_created_unless_claimed_again_or_paused(
        store: Arc<dyn Store>,
    ) {
        let order = store.watched(ORDER).await;
        let kept = store.webhook().await;
        let paused = store.webhook().await;
        store.polled(&order).await;
        let first = store.claim(t(1), t(31), 10).await;
        assert_eq!(first.len(), 4);
        let of = |subscriber: &Subscriber| -> Vec<(DeliveryId, ClaimToken)> {
            first
                .iter()
                .filter(|d| d.subscriber.id == subscriber.id)
                .map(|d| (d.id.clone(), d.claim.clone()))
                .collect()
        };
        // One of `kept`'s deliveries outlived its lease and was claimed again.
        let [expired, held] = &of(&kept)[..] else {
            panic!("two deliveries per subscriber")
        };
        store
            .release_claims(std::slice::from_ref(expired))
            .await
            .unwrap();
        let again = store.claim(t(2), t(32), 1).await;
        assert_eq!(again[0].id, expired.0);
        store
            .set_status(&paused.id, SubscriberStatus::Disabled, t(2))
            .await;

        let mut all = of(&paused);
        all.extend([held.clone(), expired.clone()]);
        store.release_claims(&all).await.unwrap();

        let due = store.claim(t(3), t(33), 10).await;
        assert_eq!(
            ids(&due),
            std::slice::from_ref(&held.0),
            "only the one still held is due again: the re-claimed one keeps its claim, the \
             paused ones stay paused"
        );
        store
            .record(&[attempt(&again[0], AttemptResolution::Delivered, 200)])
            .await;
        let delivered = store.delivery(&expired.0).await;
        assert_eq!(delivered.status, DeliveryStatus::Delivered);
    }

    pub async fn a_manual_retry_is_refused_while_the_delivery_is_claimed(store: Arc<dyn Store>) {
        let order = store.watched(ORDER).await;
        let sub = store.webhook().await;
        store.polled(&order).await;
        let claimed = store.claim(t(1), t(31), 1).await;
        let id = &claimed[0].id;

        assert_eq!(
            store.retry_delivery(id, t(2)).await.unwrap(),
            RetryOutcome::BeingAttempted
        );
        // Disabling and re-enabling the subscriber meanwhile does not cut the lease short.
        for status in [SubscriberStatus::Disabled, SubscriberStatus::Active] {
            store.set_status(&sub.id, status, t(3)).await;
        }
        let reclaimed = store.claim(t(4), t(34), 10).await;
        assert!(reclaimed.iter().all(|d| &d.id != id), "still in flight");

        // A crashed dispatcher's claim ends with its lease; the retry then releases it, so a
        // late record of that claim no longer applies.
        let RetryOutcome::Queued(queued) = store.retry_delivery(id, t(31)).await.unwrap() else {
            panic!("an expired claim does not block a retry")
        };
        assert_eq!(queued.next_attempt_at, Some(t(31)));
        store
            .record(&[attempt(&claimed[0], AttemptResolution::Failed, 400)])
            .await;
        let delivery = store.delivery(id).await;
        assert_eq!(
            (delivery.status, delivery.attempt_count),
            (DeliveryStatus::Pending, 0)
        );

        store
            .set_status(&sub.id, SubscriberStatus::Disabled, t(40))
            .await;
        let retry = |at| store.retry_delivery(id, at);
        assert_eq!(
            retry(t(41)).await.unwrap(),
            RetryOutcome::SubscriberDisabled(sub.id.clone())
        );
        store.delete_subscriber(&sub.id).await.unwrap();
        assert_eq!(
            retry(t(42)).await.unwrap(),
            RetryOutcome::SubscriberDeleted(sub.id.clone())
        );
        let unknown = DeliveryId::generate();
        assert_eq!(
            store.retry_delivery(&unknown, t(43)).await.unwrap(),
            RetryOutcome::NotFound
        );
    }

    pub async fn a_rotated_secret_keeps_signing_until_it_expires(store: Arc<dyn Store>) {
        let created = store.webhook().await;
        let old = created.secrets[0].secret.clone();
        let new = SigningSecret::generate();
        let rotate = |secret, now, old_expires_at| {
            store.rotate_secret(&created.id, secret, now, old_expires_at)
        };

        let rotated = rotate(new.clone(), t(10), t(3600)).await.unwrap().unwrap();

        assert_eq!(rotated.signing_secrets(t(11)), vec![new.clone(), old]);
        assert_eq!(rotated.signing_secrets(t(3600)), vec![new.clone()]);
        let newest = SigningSecret::generate();
        let again = rotate(newest.clone(), t(4000), t(5000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.secrets.len(), 2, "the expired secret is dropped");
        assert_eq!(again.signing_secrets(t(4001)), vec![newest, new]);
        let unknown = SubscriberId::generate();
        let rotate_unknown = store.rotate_secret(&unknown, SigningSecret::generate(), t(1), t(2));
        assert!(rotate_unknown.await.unwrap().is_none());
    }

    pub async fn deleting_a_subscriber_parks_its_pending_deliveries_and_keeps_history(
        store: Arc<dyn Store>,
    ) {
        let order = store.watched(ORDER).await;
        let doomed = store.webhook().await;
        store.polled(&order).await;
        let claimed = store.claim(t(1), t(31), 10).await;
        store
            .record(&[attempt(&claimed[0], AttemptResolution::Delivered, 200)])
            .await;

        assert!(store.delete_subscriber(&doomed.id).await.unwrap());
        // The attempt in flight during the delete comes back asking for a retry.
        store
            .record(&[attempt(&claimed[1], AttemptResolution::RetryAt(t(60)), 503)])
            .await;

        assert!(store.get_subscriber(&doomed.id).await.unwrap().is_none());
        assert!(!store.delete_subscriber(&doomed.id).await.unwrap());
        let history = store.deliveries_of(&doomed.id).await;
        let statuses: Vec<_> = history.iter().map(|d| d.status).collect();
        assert_eq!(statuses.len(), 2);
        assert!(statuses.contains(&DeliveryStatus::Delivered));
        assert!(statuses.contains(&DeliveryStatus::Failed));
        assert!(history.iter().all(|d| d.attempts.len() == 1));
        assert_eq!(store.delivery_due().await, None);
    }

    pub async fn concurrent_writers_queue_instead_of_failing(store: Arc<dyn Store>) {
        store.webhook().await;
        let polls = (0..32).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let order = store.watched(&format!("order-{i}")).await;
                store.commit_poll(&poll(&order, i, i, t(1))).await
            })
        });

        for handle in futures::future::join_all(polls).await {
            handle.unwrap().unwrap();
        }
        assert_eq!(store.claim(t(1), t(31), 1000).await.len(), 64);
    }
}

/// What only the SQLite backend has: a database file, reopened by either URL form, and the
/// migrations that upgrade an older one.
mod sqlite_only {
    use super::*;

    #[tokio::test]
    async fn everything_survives_reopening_the_file() {
        let (store, dir) = open_sqlite().await;
        let order = store.watched(ORDER).await;
        let created = store.webhook().await;
        store.polled(&order).await;
        let claimed = store.claim(t(1), t(31), 1).await;
        store
            .record(&[attempt(&claimed[0], AttemptResolution::Delivered, 200)])
            .await;
        let delivered = store.delivery(&claimed[0].id).await;
        drop(store);

        let store = open_in(&dir, "sqlite:").await;
        let (reopened, counts) = store.order(&order).await;
        assert_eq!(reopened.state, OrderState::Watching);
        assert_eq!(counts.events, 2);
        assert_eq!(store.seen_state(&order).await.unwrap().lifecycle.len(), 1);
        assert_eq!(
            store.get_subscriber(&created.id).await.unwrap(),
            Some(created)
        );
        assert_eq!(
            store.get_delivery(&delivered.id).await.unwrap(),
            Some(delivered)
        );
        assert_eq!(store.claim(t(1), t(31), 10).await.len(), 1);
    }

    /// A database as the migrations before 0007 left it: deliveries named their event by its id.
    async fn store_before_event_keys(dir: &TempDir) -> sqlx::SqlitePool {
        let earlier = dir.path().join("migrations");
        std::fs::create_dir(&earlier).unwrap();
        let all =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/sqlite/migrations");
        for entry in std::fs::read_dir(all).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.as_str() < "0007" {
                std::fs::copy(&path, earlier.join(name)).unwrap();
            }
        }
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bridge.db").display()
        );
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(earlier)
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        pool
    }

    #[tokio::test]
    async fn a_store_from_before_event_keys_keeps_its_events_deliveries_and_attempts() {
        let dir = TempDir::new().unwrap();
        let old = store_before_event_keys(&dir).await;
        let order = order_id(ORDER);
        let subscriber = SubscriberId::generate();
        let (sent, waiting) = (
            EventId::derive(EventType::ChatMessageCreated, &order, Some(1)),
            EventId::derive(EventType::ChatMessageCreated, &order, Some(2)),
        );
        let (delivered, pending) = (DeliveryId::generate(), DeliveryId::generate());
        let at = |secs: i64| t(secs).timestamp_millis();
        sqlx::raw_sql(&format!(
            "INSERT INTO orders (order_id, state, created_at, watched_since, next_poll_at) \
                 VALUES ('{order}', 'watching', {t0}, {t0}, {t0}); \
             INSERT INTO subscribers (id, config, status, created_at, updated_at) \
                 VALUES ('{subscriber}', '{{\"kind\":\"webhook\",\"url\":\"https://hooks.example.com/in\"}}', \
                         'active', {t0}, {t0}); \
             INSERT INTO subscriber_secrets (subscriber_id, secret, created_at) \
                 VALUES ('{subscriber}', '{secret}', {t0}); \
             INSERT INTO events (id, order_id, type, payload, created_at) VALUES \
                 ('{sent}', '{order}', '{kind}', '{{\"n\":1}}', {t1}), \
                 ('{waiting}', '{order}', '{kind}', '{{\"n\":2}}', {t2}); \
             INSERT INTO deliveries (id, event_id, subscriber_id, status, attempt_count, \
                     next_attempt_at, created_at, updated_at) VALUES \
                 ('{delivered}', '{sent}', '{subscriber}', 'delivered', 1, NULL, {t1}, {t2}), \
                 ('{pending}', '{waiting}', '{subscriber}', 'pending', 1, {t2}, {t2}, {t2}); \
             INSERT INTO attempts (delivery_id, at, outcome, status_code) VALUES \
                 ('{delivered}', {t2}, 'delivered', 200), ('{pending}', {t2}, 'retry', 503);",
            kind = EventType::ChatMessageCreated,
            secret = SigningSecret::generate().expose(),
            t0 = at(0),
            t1 = at(1),
            t2 = at(2),
        ))
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        let store = open_in(&dir, "sqlite://").await;

        let listed = store.deliveries(DeliveryFilter::default()).await;
        let seen: Vec<_> = listed
            .iter()
            .map(|d| (&d.id, &d.event_id, &d.order_id, d.status, d.attempts.len()))
            .collect();
        assert_eq!(
            seen,
            [
                (&pending, &waiting, &order, DeliveryStatus::Pending, 1),
                (&delivered, &sent, &order, DeliveryStatus::Delivered, 1),
            ]
        );
        let claimed = store.claim(t(3), t(3) + LEASE, 10).await;
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (&claimed[0].id, &claimed[0].event_id, &*claimed[0].payload),
            (&pending, &waiting, r#"{"n":2}"#)
        );
        // An attempt made now is listed after the ones made before.
        store
            .record(&[attempt(&claimed[0], AttemptResolution::Delivered, 200)])
            .await;
        let retried = &store.deliveries_of(&claimed[0].subscriber.id).await[0];
        let codes: Vec<_> = retried.attempts.iter().map(|a| a.status_code).collect();
        assert_eq!(
            (retried.status, codes),
            (DeliveryStatus::Delivered, vec![Some(503), Some(200)])
        );
        // New events fan out next to the migrated ones.
        let summary = store.commit_poll(&poll(&order, 3, 4, t(4))).await.unwrap();
        assert_eq!(summary.deliveries_created, 2);
        assert_eq!(store.deliveries(DeliveryFilter::default()).await.len(), 4);
    }
}
