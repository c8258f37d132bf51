//! The SQLite store against real database files in a tempdir.

use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use tempfile::TempDir;

use shopper_bridge::domain::{
    AttemptRecord, AttemptResolution, Channel, ClaimToken, ClaimedDelivery, DeliveryStatus,
    MarkReadPolicy, NewEvent, NewSubscriber, OrderState, PollProgress, Subscriber,
    SubscriberFilter, SubscriberPatch, SubscriberStatus,
};
use shopper_bridge::domain::{
    DeliveryId, EventId, EventType, OrderId, SigningSecret, SubscriberId, UserId,
};
use shopper_bridge::store::{
    self, ClaimAtCreation, DeliveryFilter, PollCommit, RetryOutcome, Store,
};

const LEASE: Duration = Duration::seconds(30);

async fn open(dir: &TempDir) -> Arc<dyn Store> {
    open_as(dir, "sqlite://").await
}

/// `scheme` is either URL form the configuration accepts: `sqlite://` or `sqlite:`.
async fn open_as(dir: &TempDir, scheme: &str) -> Arc<dyn Store> {
    let url = format!("{scheme}{}", dir.path().join("bridge.db").display());
    store::open(&url).await.expect("open store")
}

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

/// A new store in `dir` watching order 122233.
async fn watching_order(dir: &TempDir) -> (Arc<dyn Store>, OrderId) {
    let store = open(dir).await;
    let order = watched(&*store, "122233").await;
    (store, order)
}

async fn watched(store: &dyn Store, id: &str) -> OrderId {
    let order = order_id(id);
    store.watch_order(&order, None, t(0)).await.unwrap();
    order
}

async fn subscriber(store: &dyn Store, filter: SubscriberFilter) -> Subscriber {
    store
        .create_subscriber(NewSubscriber {
            id: SubscriberId::generate(),
            channel: Channel::Webhook {
                url: "https://hooks.example.com/in".parse().unwrap(),
            },
            filter,
            description: Some("test receiver".to_owned()),
            mark_read: MarkReadPolicy::Never,
            secret: SigningSecret::generate(),
            created_at: t(0),
        })
        .await
        .unwrap()
}

async fn deliveries_of(
    store: &dyn Store,
    subscriber: &Subscriber,
) -> Vec<shopper_bridge::domain::Delivery> {
    store
        .list_deliveries(&DeliveryFilter {
            subscriber_id: Some(subscriber.id.clone()),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap()
}

/// A delivery's status, attempts made and next due time.
fn standing(
    delivery: &shopper_bridge::domain::Delivery,
) -> (DeliveryStatus, u32, Option<DateTime<Utc>>) {
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

#[tokio::test]
async fn committing_the_same_poll_twice_creates_events_and_deliveries_once() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    subscriber(&*store, SubscriberFilter::default()).await;
    subscriber(&*store, SubscriberFilter::default()).await;

    let commit = poll(&order, 11, 21, t(1));
    let first = store.commit_poll(&commit).await.unwrap();
    let second = store.commit_poll(&commit).await.unwrap();

    assert_eq!((first.events_inserted, first.deliveries_created), (2, 4));
    assert_eq!((second.events_inserted, second.deliveries_created), (0, 0));
    let all = store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|d| d.status == DeliveryStatus::Pending
        && d.next_attempt_at == Some(t(1))
        && d.order_id == order));

    let (stored, counts) = store.get_order(&order).await.unwrap().unwrap();
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

#[tokio::test]
async fn a_batch_with_an_order_never_watched_is_refused_whole() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    subscriber(&*store, SubscriberFilter::default()).await;
    let stranger = order_id("999999");

    let batch = [poll(&order, 11, 21, t(1)), poll(&stranger, 12, 22, t(1))];
    store
        .commit_polls(&batch, None)
        .await
        .expect_err("events of an unknown order break a foreign key");

    let (stored, counts) = store.get_order(&order).await.unwrap().unwrap();
    assert_eq!((counts.chat_messages, counts.events), (0, 0));
    assert_eq!(stored.last_polled_at, None);
    let seen = store
        .seen_states(std::slice::from_ref(&order))
        .await
        .unwrap();
    assert!(seen.values().all(|state| state.chat.is_empty()), "{seen:?}");
    let all = store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
    assert!(all.is_empty(), "{all:?}");
}

/// `(events_inserted, deliveries_created)` of each commit.
fn counted(summaries: &[store::CommitSummary]) -> Vec<(u64, u64)> {
    summaries
        .iter()
        .map(|s| (s.events_inserted, s.deliveries_created))
        .collect()
}

#[tokio::test]
async fn a_batch_of_polls_is_summarised_per_order_and_committed_once() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let a = watched(&*store, "1001").await;
    let b = watched(&*store, "1002").await;
    let quiet = watched(&*store, "1003").await;
    subscriber(&*store, SubscriberFilter::default()).await;
    let only_b = subscriber(
        &*store,
        SubscriberFilter {
            order_ids: Some(vec![b.clone()]),
            ..SubscriberFilter::default()
        },
    )
    .await;
    let nothing_new = PollCommit {
        new_chat: vec![],
        new_lifecycle: vec![],
        events: vec![],
        ..poll(&quiet, 0, 0, t(1))
    };
    let batch = [poll(&a, 11, 21, t(1)), poll(&b, 12, 22, t(1)), nothing_new];

    let first = store.commit_polls(&batch, None).await.unwrap().summaries;
    let again = store.commit_polls(&batch, None).await.unwrap().summaries;

    assert_eq!(counted(&first), [(2, 2), (2, 4), (0, 0)]);
    assert_eq!(counted(&again), [(0, 0); 3]);
    assert_eq!(deliveries_of(&*store, &only_b).await.len(), 2);
    for order in [&a, &b, &quiet] {
        let (stored, _) = store.get_order(order).await.unwrap().unwrap();
        assert_eq!(
            (stored.last_polled_at, stored.next_poll_at),
            (Some(t(1)), Some(t(6))),
            "{order}"
        );
    }
    let unknown = order_id("1004");
    let seen = store
        .seen_states(&[a.clone(), b.clone(), unknown.clone()])
        .await
        .unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[&a].chat.get(&11), Some(&false));
    assert_eq!(seen[&a].lifecycle.iter().collect::<Vec<_>>(), [&21]);
    assert_eq!(seen[&b].chat.keys().collect::<Vec<_>>(), [&12]);
    assert_eq!(seen[&unknown], shopper_bridge::domain::SeenState::default());
    assert!(store.seen_states(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn batches_larger_than_one_statement_commit_and_record_every_row() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    subscriber(&*store, SubscriberFilter::default()).await;
    subscriber(&*store, SubscriberFilter::default()).await;
    let messages: Vec<i64> = (1..=700).collect();
    let commit = PollCommit {
        new_chat: messages.iter().map(|&id| (id, false)).collect(),
        new_lifecycle: vec![],
        events: messages
            .iter()
            .map(|&id| event(&order, EventType::ChatMessageCreated, id, t(1)))
            .collect(),
        ..poll(&order, 0, 0, t(1))
    };

    let summary = store.commit_poll(&commit).await.unwrap();
    assert_eq!(
        (summary.events_inserted, summary.deliveries_created),
        (700, 1400)
    );
    assert_eq!(store.seen_state(&order).await.unwrap().chat.len(), 700);
    let claimed = store
        .claim_due_deliveries(t(1), t(1) + LEASE, 2000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1400);
    let records: Vec<_> = claimed
        .iter()
        .map(|d| attempt(d, AttemptResolution::Delivered, 200))
        .collect();
    store.record_attempts(&records).await.unwrap();

    let delivered = store
        .list_deliveries(&DeliveryFilter {
            status: Some(DeliveryStatus::Delivered),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1400);
    assert!(delivered.iter().all(|d| d.attempts.len() == 1));
}

#[tokio::test]
async fn each_event_of_a_batch_stores_its_own_payload_byte_for_byte() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let orders = [
        watched(&*store, "1001").await,
        watched(&*store, "1002").await,
    ];
    subscriber(&*store, SubscriberFilter::default()).await;
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
                    let id = EventId::derive(EventType::ChatMessageCreated, order, Some(message));
                    let payload = format!(r#"{{"order":"{order}","body":"{body}"}}"#);
                    sent.insert(id.clone(), payload.clone());
                    NewEvent::new(
                        id,
                        order.clone(),
                        EventType::ChatMessageCreated,
                        payload,
                        t(1),
                    )
                })
                .collect();
            PollCommit {
                new_chat: (1..=bodies.len() as i64).map(|id| (id, false)).collect(),
                new_lifecycle: vec![],
                events,
                ..poll(order, 0, 0, t(1))
            }
        })
        .collect();

    store.commit_polls(&commits, None).await.unwrap();

    let claimed = store
        .claim_due_deliveries(t(1), t(1) + LEASE, 100)
        .await
        .unwrap();
    let stored: HashMap<EventId, String> = claimed
        .iter()
        .map(|d| (d.event_id.clone(), d.payload.to_string()))
        .collect();
    assert_eq!(stored, sent);
}

#[tokio::test]
async fn readings_in_a_batch_touch_only_their_own_order() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let a = watched(&*store, "1001").await;
    let b = watched(&*store, "1002").await;
    let requester = subscriber(&*store, SubscriberFilter::default()).await;
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

    let read_a = PollCommit {
        new_chat: vec![],
        newly_read: vec![11],
        new_lifecycle: vec![],
        events: vec![],
        ..poll(&a, 0, 0, t(3))
    };
    let quiet_b = PollCommit {
        order_id: b.clone(),
        newly_read: vec![],
        ..read_a.clone()
    };
    store.commit_polls(&[read_a, quiet_b], None).await.unwrap();

    let seen = store.seen_states(&[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(seen[&a].chat.get(&11), Some(&true));
    assert!(seen[&a].read_requested.is_empty());
    assert_eq!(seen[&b].chat.get(&11), Some(&false));
    assert_eq!(
        seen[&b].read_requested.get(&11),
        Some(&vec![requester.id.clone()])
    );
}

#[tokio::test]
async fn an_event_twice_in_a_batch_counts_for_the_first_commit_and_the_last_progress_stands() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let order = watched(&*store, "1001").await;
    subscriber(&*store, SubscriberFilter::default()).await;
    let later = PollCommit {
        progress: PollProgress {
            last_error: Some("503 from upstream".to_owned()),
            consecutive_failures: 1,
            ..progress(t(2))
        },
        ..poll(&order, 11, 21, t(2))
    };

    let summaries = store
        .commit_polls(&[poll(&order, 11, 21, t(1)), later], None)
        .await
        .unwrap()
        .summaries;

    assert_eq!(counted(&summaries), [(2, 2), (0, 0)]);
    let (stored, counts) = store.get_order(&order).await.unwrap().unwrap();
    assert_eq!(counts.events, 2);
    assert_eq!(stored.next_poll_at, Some(t(7)));
    assert_eq!(stored.consecutive_failures, 1);
}

#[tokio::test]
async fn a_stopped_order_in_a_batch_keeps_its_state_while_the_others_progress() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let watching = watched(&*store, "1001").await;
    let stopped = watched(&*store, "1002").await;
    subscriber(&*store, SubscriberFilter::default()).await;
    assert!(store.stop_order(&stopped).await.unwrap());

    let summaries = store
        .commit_polls(
            &[poll(&watching, 11, 21, t(1)), poll(&stopped, 12, 22, t(1))],
            None,
        )
        .await
        .unwrap()
        .summaries;

    assert_eq!(counted(&summaries), [(2, 2), (2, 2)], "the events are kept");
    let (stored, _) = store.get_order(&stopped).await.unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.next_poll_at, stored.last_polled_at),
        (OrderState::Stopped, None, None)
    );
    let (polled, _) = store.get_order(&watching).await.unwrap().unwrap();
    assert_eq!(
        (polled.state, polled.next_poll_at),
        (OrderState::Watching, Some(t(6)))
    );
    assert_eq!(store.due_orders(t(100), 10).await.unwrap(), vec![polled]);
}

#[tokio::test]
async fn seen_state_remembers_items_and_read_flags() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    store
        .commit_poll(&poll(&order, 11, 21, t(1)))
        .await
        .unwrap();

    let read_poll = PollCommit {
        new_chat: vec![(12, true)],
        newly_read: vec![11],
        new_lifecycle: vec![],
        events: vec![],
        ..poll(&order, 0, 0, t(2))
    };
    store.commit_poll(&read_poll).await.unwrap();

    let seen = store.seen_state(&order).await.unwrap();
    assert_eq!(seen.chat.get(&11), Some(&true));
    assert_eq!(seen.chat.get(&12), Some(&true));
    assert_eq!(seen.lifecycle.iter().collect::<Vec<_>>(), vec![&21]);
    assert!(store
        .seen_state(&order_id("other"))
        .await
        .unwrap()
        .chat
        .is_empty());
}

#[tokio::test]
async fn seen_state_carries_sent_messages_and_mark_read_requests_until_the_reading() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    let requester = subscriber(&*store, SubscriberFilter::default()).await;
    let gone = subscriber(&*store, SubscriberFilter::default()).await;
    store.delete_subscriber(&gone.id).await.unwrap();
    store
        .record_sent_message(&order, 7, Some(&requester.id), t(1))
        .await
        .unwrap();
    store
        .record_sent_message(&order, 8, None, t(1))
        .await
        .unwrap();
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

    let read_poll = PollCommit {
        new_chat: vec![],
        newly_read: vec![11],
        new_lifecycle: vec![],
        events: vec![],
        ..poll(&order, 0, 0, t(3))
    };
    store.commit_poll(&read_poll).await.unwrap();
    let seen = store.seen_state(&order).await.unwrap();
    assert!(seen.read_requested.is_empty());
    assert_eq!(seen.sent.len(), 2);
}

#[tokio::test]
async fn an_excluded_subscriber_gets_no_delivery_of_the_event() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    let origin = subscriber(&*store, SubscriberFilter::default()).await;
    let other = subscriber(&*store, SubscriberFilter::default()).await;
    let mut commit = poll(&order, 11, 21, t(1));
    commit.events[0].exclude_subscribers = vec![origin.id.clone()];
    let summary = store.commit_poll(&commit).await.unwrap();
    assert_eq!(summary.deliveries_created, 3);
    let types = |deliveries: Vec<shopper_bridge::domain::Delivery>| {
        let mut types: Vec<_> = deliveries.iter().map(|d| d.event_type).collect();
        types.sort_by_key(|t| t.as_str());
        types
    };
    assert_eq!(
        types(deliveries_of(&*store, &origin).await),
        [EventType::LifecycleMessageCreated]
    );
    assert_eq!(
        types(deliveries_of(&*store, &other).await),
        [
            EventType::ChatMessageCreated,
            EventType::LifecycleMessageCreated
        ]
    );
}

#[tokio::test]
async fn fan_out_respects_filters_and_skips_disabled_subscribers() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    let everything = subscriber(&*store, SubscriberFilter::default()).await;
    let lifecycle_only = subscriber(
        &*store,
        SubscriberFilter {
            event_types: Some(vec![EventType::LifecycleMessageCreated]),
            order_ids: None,
        },
    )
    .await;
    let other_order = subscriber(
        &*store,
        SubscriberFilter {
            event_types: None,
            order_ids: Some(vec![order_id("999")]),
        },
    )
    .await;
    let disabled = subscriber(&*store, SubscriberFilter::default()).await;
    let patch = SubscriberPatch {
        status: Some(SubscriberStatus::Disabled),
        ..SubscriberPatch::default()
    };
    store
        .update_subscriber(&disabled.id, patch, t(0))
        .await
        .unwrap();

    let summary = store
        .commit_poll(&poll(&order, 11, 21, t(1)))
        .await
        .unwrap();

    assert_eq!(summary.deliveries_created, 3);
    assert_eq!(deliveries_of(&*store, &everything).await.len(), 2);
    let lifecycle = deliveries_of(&*store, &lifecycle_only).await;
    assert_eq!(lifecycle.len(), 1);
    assert_eq!(lifecycle[0].event_type, EventType::LifecycleMessageCreated);
    assert!(deliveries_of(&*store, &other_order).await.is_empty());
    assert!(deliveries_of(&*store, &disabled).await.is_empty());
}

#[tokio::test]
async fn a_concurrent_stop_wins_over_poll_progress_but_keeps_the_events() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    subscriber(&*store, SubscriberFilter::default()).await;

    assert!(store.stop_order(&order).await.unwrap());
    let summary = store
        .commit_poll(&poll(&order, 11, 21, t(1)))
        .await
        .unwrap();

    let (stopped, counts) = store.get_order(&order).await.unwrap().unwrap();
    assert_eq!(stopped.state, OrderState::Stopped);
    assert_eq!(stopped.next_poll_at, None);
    assert_eq!(stopped.last_polled_at, None);
    assert_eq!((summary.events_inserted, counts.events), (2, 2));
    assert!(store.due_orders(t(100), 10).await.unwrap().is_empty());
    assert!(!store.stop_order(&order_id("unknown")).await.unwrap());
}

#[tokio::test]
async fn watching_again_restarts_a_stopped_order_but_leaves_a_watched_one() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let order = order_id("122233");
    let user = UserId::parse("user_id", "u-1").unwrap();
    let (fresh, started) = store.watch_order(&order, Some(&user), t(0)).await.unwrap();
    assert!(started);
    assert_eq!(fresh.next_poll_at, Some(t(0)));
    assert_eq!(fresh.watched_since, t(0));

    let failing = PollCommit {
        progress: PollProgress {
            last_error: Some("503 from upstream".to_owned()),
            consecutive_failures: 3,
            ..progress(t(1))
        },
        ..poll(&order, 11, 21, t(1))
    };
    store.commit_poll(&failing).await.unwrap();
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

#[tokio::test]
async fn claiming_leases_deliveries_until_the_lease_ends() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    let first = subscriber(&*store, SubscriberFilter::default()).await;
    subscriber(&*store, SubscriberFilter::default()).await;
    store
        .commit_poll(&poll(&order, 11, 21, t(1)))
        .await
        .unwrap();

    assert!(store
        .claim_due_deliveries(t(0), t(30), 10)
        .await
        .unwrap()
        .is_empty());
    let claimed = store
        .claim_due_deliveries(t(1), t(1) + LEASE, 10)
        .await
        .unwrap();
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

    assert!(store
        .claim_due_deliveries(t(2), t(32), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(t(1) + LEASE));
    let reclaimed = store
        .claim_due_deliveries(t(1) + LEASE, t(100), 3)
        .await
        .unwrap();
    assert_eq!(reclaimed.len(), 3, "the limit applies");
}

#[tokio::test]
async fn a_commit_claims_what_is_due_at_once_up_to_its_limit_and_leaves_the_rest() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    let first = subscriber(&*store, SubscriberFilter::default()).await;
    subscriber(&*store, SubscriberFilter::default()).await;
    let digest = store
        .create_subscriber(NewSubscriber {
            id: SubscriberId::generate(),
            channel: Channel::Email {
                to: vec!["staff@store.example".to_owned()],
                digest_seconds: Some(60),
            },
            filter: SubscriberFilter::default(),
            description: None,
            mark_read: MarkReadPolicy::Never,
            secret: SigningSecret::generate(),
            created_at: t(0),
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
    // The claimed ones wait for their lease like any claim; the third webhook delivery is due
    // now, the digest's at the end of its window.
    let rest = store
        .claim_due_deliveries(t(1), t(1) + LEASE, 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert!(claimed.iter().all(|d| d.id != rest[0].id));
    assert_eq!(
        store.next_delivery_due().await.unwrap(),
        Some(t(1) + LEASE),
        "the lease ends before the digest window"
    );
    // An attempt under the commit's claim counts.
    store
        .record_attempts(&[attempt(&claimed[0], AttemptResolution::Delivered, 200)])
        .await
        .unwrap();
    let delivered = store.get_delivery(&claimed[0].id).await.unwrap().unwrap();
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(delivered.attempts.len(), 1);
    // Put back unsent, a claimed delivery is due at once.
    store
        .postpone_deliveries(&[claimed[1].id.clone()], t(2))
        .await
        .unwrap();
    let put_back = store
        .claim_due_deliveries(t(2), t(2) + LEASE, 10)
        .await
        .unwrap();
    assert_eq!(put_back.len(), 1);
    assert_eq!(put_back[0].id, claimed[1].id);
}

#[tokio::test]
async fn recorded_attempts_deliver_retry_or_park_deliveries() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    subscriber(&*store, SubscriberFilter::default()).await;
    let mut commit = poll(&order, 11, 21, t(1));
    commit
        .events
        .push(event(&order, EventType::ChatMessageRead, 11, t(1)));
    store.commit_poll(&commit).await.unwrap();
    let claimed = store.claim_due_deliveries(t(1), t(31), 10).await.unwrap();
    let [ok, again, broken] = &claimed[..] else {
        panic!("expected 3 deliveries, got {}", claimed.len())
    };

    store
        .record_attempts(&[
            attempt(ok, AttemptResolution::Delivered, 204),
            attempt(again, AttemptResolution::RetryAt(t(60)), 503),
            attempt(broken, AttemptResolution::Failed, 400),
        ])
        .await
        .unwrap();

    let delivered = store.get_delivery(&ok.id).await.unwrap().unwrap();
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(
        (delivered.attempt_count, delivered.next_attempt_at),
        (1, None)
    );
    assert_eq!(delivered.attempts[0].outcome, "delivered");
    assert_eq!(delivered.attempts[0].status_code, Some(204));
    let retrying = store.get_delivery(&again.id).await.unwrap().unwrap();
    assert_eq!(retrying.status, DeliveryStatus::Pending);
    assert_eq!(retrying.next_attempt_at, Some(t(60)));
    assert_eq!(retrying.attempts[0].outcome, "retry");
    let failed = store.get_delivery(&broken.id).await.unwrap().unwrap();
    assert_eq!(
        (failed.status, failed.next_attempt_at),
        (DeliveryStatus::Failed, None)
    );
    assert_eq!(failed.attempts[0].outcome, "failed");

    assert_eq!(store.next_delivery_due().await.unwrap(), Some(t(60)));
    let retried = store.claim_due_deliveries(t(60), t(90), 10).await.unwrap();
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
        .list_deliveries(&DeliveryFilter {
            status: Some(DeliveryStatus::Pending),
            order_id: Some(order),
            limit: 10,
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);
}

#[tokio::test]
async fn a_gone_receiver_disables_its_subscriber_until_re_enabled() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    let gone = subscriber(&*store, SubscriberFilter::default()).await;
    store
        .commit_poll(&poll(&order, 11, 21, t(1)))
        .await
        .unwrap();
    let claimed = store.claim_due_deliveries(t(1), t(2), 1).await.unwrap();

    let record = AttemptRecord {
        disable_subscriber: Some((gone.id.clone(), "receiver answered 410 Gone".to_owned())),
        ..attempt(&claimed[0], AttemptResolution::Failed, 410)
    };
    store.record_attempts(&[record]).await.unwrap();

    let disabled = store.get_subscriber(&gone.id).await.unwrap().unwrap();
    assert_eq!(disabled.status, SubscriberStatus::Disabled);
    assert_eq!(
        disabled.disabled_reason.as_deref(),
        Some("receiver answered 410 Gone")
    );
    assert!(store
        .claim_due_deliveries(t(5), t(35), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.next_delivery_due().await.unwrap(), None);
    let waiting: Vec<_> = deliveries_of(&*store, &gone)
        .await
        .into_iter()
        .filter(|d| d.status == DeliveryStatus::Pending)
        .collect();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].next_attempt_at, None, "paused, not scanned");

    let enable = SubscriberPatch {
        status: Some(SubscriberStatus::Active),
        ..SubscriberPatch::default()
    };
    let enabled = store
        .update_subscriber(&gone.id, enable, t(6))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((enabled.disabled_reason, enabled.updated_at), (None, t(6)));
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(t(6)));
    assert_eq!(
        store
            .claim_due_deliveries(t(6), t(36), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn disabling_a_subscriber_pauses_its_pending_deliveries_and_enabling_resumes_them() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    let paused = subscriber(&*store, SubscriberFilter::default()).await;
    let other = subscriber(&*store, SubscriberFilter::default()).await;
    store
        .commit_poll(&poll(&order, 11, 21, t(1)))
        .await
        .unwrap();
    let status = |status| SubscriberPatch {
        status: Some(status),
        ..SubscriberPatch::default()
    };

    store
        .update_subscriber(&paused.id, status(SubscriberStatus::Disabled), t(2))
        .await
        .unwrap();
    let of_paused = deliveries_of(&*store, &paused).await;
    assert_eq!(of_paused.len(), 2);
    assert!(of_paused
        .iter()
        .all(|d| d.status == DeliveryStatus::Pending && d.next_attempt_at.is_none()));
    assert!(deliveries_of(&*store, &other)
        .await
        .iter()
        .all(|d| d.next_attempt_at == Some(t(1))));
    let claimed = store.claim_due_deliveries(t(3), t(33), 10).await.unwrap();
    assert!(claimed.iter().all(|d| d.subscriber.id == other.id));
    assert_eq!(claimed.len(), 2);
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(t(33)));

    // Disabling again changes nothing; enabling makes them due at once.
    store
        .update_subscriber(&paused.id, status(SubscriberStatus::Disabled), t(4))
        .await
        .unwrap();
    store
        .update_subscriber(&paused.id, status(SubscriberStatus::Active), t(5))
        .await
        .unwrap();
    assert!(deliveries_of(&*store, &paused)
        .await
        .iter()
        .all(|d| d.next_attempt_at == Some(t(5))));
    let resumed = store.claim_due_deliveries(t(5), t(35), 10).await.unwrap();
    assert_eq!(resumed.len(), 2);
    assert!(resumed.iter().all(|d| d.subscriber.id == paused.id));
}

#[tokio::test]
async fn a_retry_recorded_after_its_subscriber_was_disabled_stays_paused() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    let sub = subscriber(&*store, SubscriberFilter::default()).await;
    store
        .commit_poll(&poll(&order, 11, 21, t(1)))
        .await
        .unwrap();
    let claimed = store.claim_due_deliveries(t(1), t(31), 1).await.unwrap();
    let disable = SubscriberPatch {
        status: Some(SubscriberStatus::Disabled),
        ..SubscriberPatch::default()
    };
    store
        .update_subscriber(&sub.id, disable, t(2))
        .await
        .unwrap();

    store
        .record_attempts(&[attempt(&claimed[0], AttemptResolution::RetryAt(t(60)), 503)])
        .await
        .unwrap();

    let delivery = store.get_delivery(&claimed[0].id).await.unwrap().unwrap();
    assert_eq!(standing(&delivery), (DeliveryStatus::Pending, 1, None));
    assert_eq!(store.next_delivery_due().await.unwrap(), None);
}

#[tokio::test]
async fn a_late_record_of_an_expired_claim_does_not_overwrite_the_newer_claim() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    subscriber(&*store, SubscriberFilter::default()).await;
    store
        .commit_poll(&poll(&order, 11, 21, t(1)))
        .await
        .unwrap();
    let first = store.claim_due_deliveries(t(1), t(31), 10).await.unwrap();
    // The lease ran out before the first attempts were recorded: claimed again.
    let second = store.claim_due_deliveries(t(31), t(61), 10).await.unwrap();
    assert_eq!(first[0].id, second[0].id);
    assert_ne!(first[0].claim, second[0].claim);

    store
        .record_attempts(&[attempt(&second[0], AttemptResolution::Delivered, 204)])
        .await
        .unwrap();
    store
        .record_attempts(&[attempt(&first[0], AttemptResolution::RetryAt(t(90)), 503)])
        .await
        .unwrap();

    let delivery = store.get_delivery(&first[0].id).await.unwrap().unwrap();
    assert_eq!(standing(&delivery), (DeliveryStatus::Delivered, 1, None));
    assert_eq!(delivery.attempts.len(), 1);
    assert_eq!(delivery.attempts[0].status_code, Some(204));
}

#[tokio::test]
async fn released_claims_are_due_as_created_unless_claimed_again_or_paused() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    let kept = subscriber(&*store, SubscriberFilter::default()).await;
    let paused = subscriber(&*store, SubscriberFilter::default()).await;
    store
        .commit_poll(&poll(&order, 11, 21, t(1)))
        .await
        .unwrap();
    let first = store.claim_due_deliveries(t(1), t(31), 10).await.unwrap();
    assert_eq!(first.len(), 4);
    let of = |claimed: &[ClaimedDelivery], subscriber: &Subscriber| -> Vec<ClaimedDelivery> {
        claimed
            .iter()
            .filter(|d| d.subscriber.id == subscriber.id)
            .cloned()
            .collect()
    };
    // One of `kept`'s deliveries outlived its lease and was claimed again.
    let (expired, held) = (of(&first, &kept)[0].clone(), of(&first, &kept)[1].clone());
    store
        .release_claims(&[(expired.id.clone(), expired.claim.clone())])
        .await
        .unwrap();
    let again = store.claim_due_deliveries(t(2), t(32), 1).await.unwrap();
    assert_eq!(again[0].id, expired.id);
    store
        .update_subscriber(
            &paused.id,
            SubscriberPatch {
                status: Some(SubscriberStatus::Disabled),
                ..SubscriberPatch::default()
            },
            t(2),
        )
        .await
        .unwrap();

    let stale = (expired.id.clone(), expired.claim.clone());
    let mut all: Vec<_> = of(&first, &paused)
        .into_iter()
        .chain([held.clone()])
        .map(|d| (d.id, d.claim))
        .collect();
    all.push(stale);
    store.release_claims(&all).await.unwrap();

    let due = store.claim_due_deliveries(t(3), t(33), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        [held.id],
        "only the one still held is due again: the re-claimed one keeps its claim, the paused \
         ones stay paused"
    );
    let record = attempt(&again[0], AttemptResolution::Delivered, 200);
    store.record_attempts(&[record]).await.unwrap();
    let delivered = store.get_delivery(&expired.id).await.unwrap().unwrap();
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
}

#[tokio::test]
async fn a_manual_retry_is_refused_while_the_delivery_is_claimed() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    let sub = subscriber(&*store, SubscriberFilter::default()).await;
    store
        .commit_poll(&poll(&order, 11, 21, t(1)))
        .await
        .unwrap();
    let claimed = store.claim_due_deliveries(t(1), t(31), 1).await.unwrap();
    let id = &claimed[0].id;

    assert_eq!(
        store.retry_delivery(id, t(2)).await.unwrap(),
        RetryOutcome::BeingAttempted
    );
    // Disabling and re-enabling the subscriber meanwhile does not cut the lease short.
    for status in [SubscriberStatus::Disabled, SubscriberStatus::Active] {
        let patch = SubscriberPatch {
            status: Some(status),
            ..SubscriberPatch::default()
        };
        store.update_subscriber(&sub.id, patch, t(3)).await.unwrap();
    }
    let reclaimed = store.claim_due_deliveries(t(4), t(34), 10).await.unwrap();
    assert!(reclaimed.iter().all(|d| &d.id != id), "still in flight");

    // A crashed dispatcher's claim ends with its lease; the retry then releases it, so a late
    // record of that claim no longer applies.
    let RetryOutcome::Queued(queued) = store.retry_delivery(id, t(31)).await.unwrap() else {
        panic!("an expired claim does not block a retry")
    };
    assert_eq!(queued.next_attempt_at, Some(t(31)));
    store
        .record_attempts(&[attempt(&claimed[0], AttemptResolution::Failed, 400)])
        .await
        .unwrap();
    let delivery = store.get_delivery(id).await.unwrap().unwrap();
    assert_eq!(
        (delivery.status, delivery.attempt_count),
        (DeliveryStatus::Pending, 0)
    );

    let id = delivery.id;
    let disable = SubscriberPatch {
        status: Some(SubscriberStatus::Disabled),
        ..SubscriberPatch::default()
    };
    store
        .update_subscriber(&sub.id, disable, t(40))
        .await
        .unwrap();
    assert_eq!(
        store.retry_delivery(&id, t(41)).await.unwrap(),
        RetryOutcome::SubscriberDisabled(sub.id.clone())
    );
    store.delete_subscriber(&sub.id).await.unwrap();
    assert_eq!(
        store.retry_delivery(&id, t(42)).await.unwrap(),
        RetryOutcome::SubscriberDeleted(sub.id.clone())
    );
    assert_eq!(
        store
            .retry_delivery(&DeliveryId::generate(), t(43))
            .await
            .unwrap(),
        RetryOutcome::NotFound
    );
}

#[tokio::test]
async fn a_rotated_secret_keeps_signing_until_it_expires() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let created = subscriber(&*store, SubscriberFilter::default()).await;
    let old = created.secrets[0].secret.clone();
    let new = SigningSecret::generate();

    let rotated = store
        .rotate_secret(&created.id, new.clone(), t(10), t(3600))
        .await
        .unwrap()
        .unwrap();

    assert_eq!(rotated.signing_secrets(t(11)), vec![new.clone(), old]);
    assert_eq!(rotated.signing_secrets(t(3600)), vec![new.clone()]);
    let newest = SigningSecret::generate();
    let again = store
        .rotate_secret(&created.id, newest.clone(), t(4000), t(5000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.secrets.len(), 2, "the expired secret is dropped");
    assert_eq!(again.signing_secrets(t(4001)), vec![newest, new]);
    let unknown = SubscriberId::generate();
    let rotate_unknown = store.rotate_secret(&unknown, SigningSecret::generate(), t(1), t(2));
    assert!(rotate_unknown.await.unwrap().is_none());
}

#[tokio::test]
async fn deleting_a_subscriber_parks_its_pending_deliveries_and_keeps_history() {
    let dir = TempDir::new().unwrap();
    let (store, order) = watching_order(&dir).await;
    let doomed = subscriber(&*store, SubscriberFilter::default()).await;
    store
        .commit_poll(&poll(&order, 11, 21, t(1)))
        .await
        .unwrap();
    let claimed = store.claim_due_deliveries(t(1), t(31), 10).await.unwrap();
    store
        .record_attempts(&[attempt(&claimed[0], AttemptResolution::Delivered, 200)])
        .await
        .unwrap();

    assert!(store.delete_subscriber(&doomed.id).await.unwrap());
    // The attempt in flight during the delete comes back asking for a retry.
    let late = attempt(&claimed[1], AttemptResolution::RetryAt(t(60)), 503);
    store.record_attempts(&[late]).await.unwrap();

    assert!(store.get_subscriber(&doomed.id).await.unwrap().is_none());
    assert!(!store.delete_subscriber(&doomed.id).await.unwrap());
    let history = deliveries_of(&*store, &doomed).await;
    let statuses: Vec<_> = history.iter().map(|d| d.status).collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.contains(&DeliveryStatus::Delivered));
    assert!(statuses.contains(&DeliveryStatus::Failed));
    assert!(history.iter().all(|d| d.attempts.len() == 1));
    assert_eq!(store.next_delivery_due().await.unwrap(), None);
}

#[tokio::test]
async fn everything_survives_reopening_the_file() {
    let dir = TempDir::new().unwrap();
    let (order, created, delivered) = {
        let store = open(&dir).await;
        let order = watched(&*store, "122233").await;
        let created = subscriber(&*store, SubscriberFilter::default()).await;
        store
            .commit_poll(&poll(&order, 11, 21, t(1)))
            .await
            .unwrap();
        let claimed = store.claim_due_deliveries(t(1), t(31), 1).await.unwrap();
        store
            .record_attempts(&[attempt(&claimed[0], AttemptResolution::Delivered, 200)])
            .await
            .unwrap();
        let delivered = store.get_delivery(&claimed[0].id).await.unwrap().unwrap();
        (order, created, delivered)
    };

    let store = open_as(&dir, "sqlite:").await;
    let (reopened, counts) = store.get_order(&order).await.unwrap().unwrap();
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
    assert_eq!(
        store
            .claim_due_deliveries(t(1), t(31), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn concurrent_writers_queue_instead_of_failing() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    subscriber(&*store, SubscriberFilter::default()).await;
    let polls = (0..32).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let order = watched(&*store, &format!("order-{i}")).await;
            store.commit_poll(&poll(&order, i, i, t(1))).await
        })
    });

    for handle in futures::future::join_all(polls).await {
        handle.unwrap().unwrap();
    }
    let claimed = store.claim_due_deliveries(t(1), t(31), 1000).await.unwrap();
    assert_eq!(claimed.len(), 64);
}

/// A database as the migrations before 0007 left it: deliveries named their event by its id.
async fn store_before_event_keys(dir: &TempDir) -> sqlx::SqlitePool {
    let earlier = dir.path().join("migrations");
    std::fs::create_dir(&earlier).unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/sqlite/migrations");
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
    let order = order_id("122233");
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

    let store = open(&dir).await;

    let listed = store
        .list_deliveries(&DeliveryFilter::default())
        .await
        .unwrap();
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
    let claimed = store
        .claim_due_deliveries(t(3), t(3) + LEASE, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (&claimed[0].id, &claimed[0].event_id, &*claimed[0].payload),
        (&pending, &waiting, r#"{"n":2}"#)
    );
    // An attempt made now is listed after the ones made before.
    store
        .record_attempts(&[attempt(&claimed[0], AttemptResolution::Delivered, 200)])
        .await
        .unwrap();
    let retried = &deliveries_of(&*store, &claimed[0].subscriber).await[0];
    let codes: Vec<_> = retried.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(
        (retried.status, codes),
        (DeliveryStatus::Delivered, vec![Some(503), Some(200)])
    );
    // New events fan out next to the migrated ones.
    let summary = store.commit_poll(&poll(&order, 3, 4, t(4))).await.unwrap();
    assert_eq!(summary.deliveries_created, 2);
    assert_eq!(
        store
            .list_deliveries(&DeliveryFilter::default())
            .await
            .unwrap()
            .len(),
        4
    );
}
