//! The whole data path: Connect (wiremock, or the built-in simulator) → poller → SQLite outbox →
//! dispatcher → a real axum receiver checking Standard Webhooks signatures.

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use wiremock::MockServer;

use shopper_bridge::channels::webhook::verify_headers;
use shopper_bridge::config::Settings;
use shopper_bridge::domain::{EventId, EventType, OrderId};
use shopper_bridge::instacart::models::OrderMessagesResponse;
use shopper_bridge::simulator::{SimulatorConfig, SimulatorHandle};

use crate::harness::{
    fixture, json_body, order_messages_path, serve_seed_order_messages, start_simulator,
    use_connect, wait_until, Receiver, RunningSimulator, Subscription, TestApp,
};

const ORDER: &str = "122233";

/// Connect answering the seed `order_messages` for [`ORDER`], which is watched, and a receiver
/// answering `script`, subscribed to `event_types` (every type when empty).
struct Pipeline {
    connect: MockServer,
    receiver: Receiver,
    subscription: Subscription,
    app: TestApp,
}

async fn pipeline(
    script: &[u16],
    event_types: &[&str],
    configure: impl FnOnce(&mut Settings),
) -> Pipeline {
    let connect = MockServer::start().await;
    serve_seed_order_messages(&connect, ORDER).await;
    let receiver = Receiver::start(script).await;
    let app = TestApp::builder()
        .configure(|s| {
            use_connect(s, &connect);
            configure(s);
        })
        .spawn()
        .await;
    let subscription = app.subscribe(&receiver.url, event_types).await;
    app.watch_order(ORDER).await;
    Pipeline {
        connect,
        receiver,
        subscription,
        app,
    }
}

fn retry_schedule(settings: &mut Settings, waits: usize) {
    settings.delivery.retry_schedule = vec![Duration::from_millis(10); waits];
    settings.delivery.retry_jitter = 0.0;
}

fn status_codes(delivery: &Value) -> Vec<u64> {
    delivery["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status_code"].as_u64().expect("status_code"))
        .collect()
}

/// How many times the receiver saw each `webhook-id`.
fn webhook_ids(receiver: &Receiver) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for request in receiver.requests() {
        *seen.entry(request.webhook_id().to_owned()).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn a_seed_message_reaches_the_receiver_signed_with_the_documented_body() {
    let Pipeline {
        receiver,
        subscription,
        app,
        ..
    } = pipeline(&[], &[], |_| {}).await;

    app.poll_once().await;
    assert_eq!(app.deliver_next().await, 2);

    let deliveries = app.deliveries("").await;
    assert!(deliveries
        .iter()
        .all(|d| d["status"] == "delivered" && d["subscriber_id"] == subscription.id.as_str()));
    let received = receiver.requests();
    assert_eq!(received.len(), 2);
    let seed = fixture("order_messages");
    let parties = &seed["metadata"];
    for request in &received {
        verify_headers(
            &subscription.secret,
            &request.headers,
            &request.body,
            Utc::now(),
        )
        .expect("the signature verifies with the subscriber's secret");
        let body = request.json();
        let delivery = deliveries
            .iter()
            .find(|d| d["event_type"] == body["type"])
            .expect("a delivery of this type");
        assert_eq!(request.webhook_id(), delivery["event_id"]);
        let expected = match body["type"].as_str().unwrap() {
            "chat_message.created" => json!({
                "order_id": ORDER,
                "message": seed["chat_messages"][0],
                "sender": {"id": 55655345, "display_name": "SomeFirstName", "avatar_url": "SomeURL"},
                "sent_by_retailer": false,
                "customer": parties["customer"],
                "current_shopper": parties["current_shopper"],
            }),
            "lifecycle_message.created" => json!({
                "order_id": ORDER,
                "notification": seed["lifecycle_messages"][0],
                "customer": parties["customer"],
                "current_shopper": parties["current_shopper"],
            }),
            other => panic!("unexpected event type {other}"),
        };
        assert_eq!(body["data"], expected);
    }
}

#[tokio::test]
async fn retry_after_two_failures_gives_one_event_three_attempts_and_one_webhook_id() {
    let Pipeline { receiver, app, .. } = pipeline(&[500, 500], &["chat_message.created"], |s| {
        retry_schedule(s, 3)
    })
    .await;
    app.poll_once().await;

    wait_until("the delivery succeeds", || async {
        app.deliver_next().await;
        app.deliveries("").await[0]["status"] == "delivered"
    })
    .await;

    let deliveries = app.deliveries("").await;
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery["attempt_count"], 3);
    assert_eq!(status_codes(delivery), [500, 500, 200]);
    let seen = webhook_ids(&receiver);
    let event_id = delivery["event_id"].as_str().unwrap();
    assert_eq!(seen, HashMap::from([(event_id.to_owned(), 3)]));
}

#[tokio::test]
async fn events_detected_before_a_crash_are_delivered_once_after_the_restart() {
    let Pipeline {
        connect,
        receiver,
        subscription,
        app,
    } = pipeline(&[], &[], |_| {}).await;
    assert_eq!(app.poll_once().await.deliveries_created, 2);

    let app = app
        .stop()
        .await
        .restart()
        .configure(|s| use_connect(s, &connect))
        .spawn()
        .await;
    assert!(receiver.requests().is_empty());
    assert_eq!(app.deliver_next().await, 2);
    assert_eq!(app.deliver_next().await, 0);

    let received = receiver.requests();
    let expected: HashSet<String> = app
        .deliveries("")
        .await
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_owned())
        .collect();
    let seen = webhook_ids(&receiver);
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), expected);
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    for request in &received {
        verify_headers(
            &subscription.secret,
            &request.headers,
            &request.body,
            Utc::now(),
        )
        .expect("signed with the secret created before the crash");
    }
}

#[tokio::test]
async fn a_parked_delivery_is_listed_as_failed_and_a_manual_retry_delivers_it() {
    let Pipeline { receiver, app, .. } = pipeline(&[500, 500], &["chat_message.created"], |s| {
        retry_schedule(s, 1)
    })
    .await;
    app.poll_once().await;

    wait_until("the delivery is parked as failed", || async {
        app.deliver_next().await;
        !app.deliveries("?status=failed").await.is_empty()
    })
    .await;
    let failed = app.deliveries("?status=failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(status_codes(&failed[0]), [500, 500]);
    let id = failed[0]["id"].as_str().unwrap();

    let retry = app
        .post(&format!("/v1/deliveries/{id}/retry"), &json!({}))
        .await;
    json_body(retry, StatusCode::ACCEPTED).await;
    assert_eq!(app.deliver_next().await, 1);

    let delivered = json_body(
        app.get(&format!("/v1/deliveries/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(delivered["status"], "delivered");
    assert_eq!(status_codes(&delivered), [500, 500, 200]);
    assert_eq!(receiver.requests().len(), 3);
    assert_eq!(webhook_ids(&receiver).len(), 1);
}

const SIMULATOR_TOKEN: &str = "simulator-static-token";
const SIMULATED_ORDER: &str = "500100";

/// Every event the simulator's current state of [`SIMULATED_ORDER`] should have produced.
/// The built-in simulator serving [`SIMULATED_ORDER`], until the guard is dropped: its URL and
/// handle.
async fn simulate() -> RunningSimulator {
    start_simulator(SimulatorConfig {
        orders: vec![SIMULATED_ORDER.to_owned()],
        static_token: Some(SIMULATOR_TOKEN.to_owned()),
        seed: Some(7),
        ..SimulatorConfig::default()
    })
    .await
}

/// Polls `sim` often, as `TestApp::builder().with_background_tasks()` runs it.
fn use_simulator(settings: &mut Settings, sim: &RunningSimulator) {
    settings.instacart.base_url = sim.base_url.parse().unwrap();
    settings.instacart.token = Some(SIMULATOR_TOKEN.to_owned().into());
    settings.poller.interval = Duration::from_millis(100);
}

/// The bridge running (as `configure` sets it up) with `receiver` subscribed to everything and
/// [`SIMULATED_ORDER`] watched, once that order's first poll has been delivered.
async fn polling_the_simulator(
    receiver: &Receiver,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let app = TestApp::builder()
        .with_background_tasks()
        .configure(configure)
        .spawn()
        .await;
    app.subscribe(&receiver.url, &[]).await;
    app.watch_order(SIMULATED_ORDER).await;
    wait_until("the order's first poll", || async {
        !webhook_ids(receiver).is_empty()
    })
    .await;
    app
}

/// Adds `count` chat messages to [`SIMULATED_ORDER`] at once.
fn add_messages(upstream: &SimulatorHandle, count: usize) {
    let bodies: Vec<String> = (0..count).map(|i| format!("burst {i}")).collect();
    let messages: Vec<(&str, &str)> = bodies
        .iter()
        .map(|body| (SIMULATED_ORDER, body.as_str()))
        .collect();
    upstream.add_chat_messages(&messages);
}

/// Waits until every event of the simulator's current state arrived, stops the app, and checks
/// that each arrived exactly once.
async fn assert_every_message_arrives_once(receiver: &Receiver, base_url: &str, app: TestApp) {
    let expected = simulated_event_ids(base_url).await;
    wait_until("every message arrives", || async {
        let seen = webhook_ids(receiver);
        expected.iter().all(|id| seen.contains_key(id))
    })
    .await;
    // Whatever was still in flight has landed once the app has stopped.
    app.stop().await;

    let seen = webhook_ids(receiver);
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), expected);
    let duplicates: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "delivered more than once: {duplicates:?}"
    );
}

async fn simulated_event_ids(base_url: &str) -> HashSet<String> {
    let order = OrderId::parse("order_id", SIMULATED_ORDER).unwrap();
    let state: OrderMessagesResponse = reqwest::Client::new()
        .get(format!(
            "{base_url}{}",
            order_messages_path(SIMULATED_ORDER)
        ))
        .bearer_auth(SIMULATOR_TOKEN)
        .send()
        .await
        .expect("simulator answers")
        .json()
        .await
        .expect("order messages");
    let chat = state
        .chat_messages
        .iter()
        .map(|m| (EventType::ChatMessageCreated, m.id));
    let lifecycle = state
        .lifecycle_messages
        .iter()
        .map(|n| (EventType::LifecycleMessageCreated, n.notification_id));
    chat.chain(lifecycle)
        .map(|(kind, id)| EventId::derive(kind, &order, Some(id)).as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn a_restart_mid_stream_delivers_every_message_exactly_once() {
    let sim = simulate().await;

    let receiver = Receiver::start(&[]).await;
    let configure = |s: &mut Settings| {
        use_simulator(s, &sim);
        retry_schedule(s, 3);
    };
    let app = TestApp::builder()
        .with_background_tasks()
        .configure(configure)
        .spawn()
        .await;
    app.subscribe(&receiver.url, &[]).await;
    app.watch_order(SIMULATED_ORDER).await;

    let order = OrderId::parse("order_id", SIMULATED_ORDER).unwrap();
    let add = |phase: &str| {
        (1..=3)
            .map(|i| {
                let message = sim
                    .handle
                    .add_chat_message(SIMULATED_ORDER, &format!("{phase} {i}"));
                EventId::derive(EventType::ChatMessageCreated, &order, Some(message.id))
                    .as_str()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    let before = add("before the restart");
    wait_until("a message added before the restart arrives", || async {
        webhook_ids(&receiver).contains_key(&before[0])
    })
    .await;

    let stopped = app.stop().await;
    let while_down = add("while the bridge is down");
    let app = stopped.restart().configure(configure).spawn().await;

    let expected = simulated_event_ids(&sim.base_url).await;
    assert!(before
        .iter()
        .chain(&while_down)
        .all(|id| expected.contains(id)));
    assert_every_message_arrives_once(&receiver, &sim.base_url, app).await;
}

#[tokio::test]
async fn a_burst_larger_than_the_dispatchers_room_is_delivered_exactly_once() {
    let sim = simulate().await;
    let receiver = Receiver::start(&[]).await;
    // One send at a time: the dispatcher holds 256 deliveries, so a poll creating 300 hands
    // over what fits and leaves the rest to the dispatcher's claims.
    let app = polling_the_simulator(&receiver, |s| {
        use_simulator(s, &sim);
        s.delivery.concurrency = 1;
    })
    .await;

    add_messages(&sim.handle, 300);

    assert_every_message_arrives_once(&receiver, &sim.base_url, app).await;
}

#[tokio::test]
async fn a_backlog_is_sent_exactly_delivery_concurrency_at_a_time() {
    let sim = simulate().await;
    // 50 ms per request: the three workers' sends overlap, and a fourth would show.
    let receiver = Receiver::start_slow(Duration::from_millis(50)).await;
    let app = polling_the_simulator(&receiver, |s| {
        use_simulator(s, &sim);
        s.delivery.concurrency = 3;
    })
    .await;

    add_messages(&sim.handle, 30);

    assert_every_message_arrives_once(&receiver, &sim.base_url, app).await;
    assert_eq!(receiver.most_in_flight(), 3);
}

#[tokio::test]
async fn deliveries_that_wait_past_the_send_timeout_for_a_worker_are_put_back_not_left_to_their_lease(
) {
    let sim = simulate().await;
    // A receiver taking 200 ms per request, one request at a time, a 1 s send timeout: of 20
    // deliveries claimed together, most cannot start in time. Left to their lease (2 s + 30 s)
    // they would outlast the wait below.
    let receiver = Receiver::start_slow(Duration::from_millis(200)).await;
    let app = polling_the_simulator(&receiver, |s| {
        use_simulator(s, &sim);
        s.delivery.concurrency = 1;
        s.delivery.timeout = Duration::from_secs(1);
    })
    .await;

    add_messages(&sim.handle, 20);

    assert_every_message_arrives_once(&receiver, &sim.base_url, app).await;
}

#[tokio::test]
async fn stopping_puts_back_what_waits_for_a_send_worker_and_a_restart_sends_it_at_once() {
    let sim = simulate().await;
    let receiver = Receiver::start_slow(Duration::from_millis(200)).await;
    // A short grace: a send still queued for a worker when it ends would otherwise be dropped
    // with its claim held for the lease (2 x 15 s + 30 s), longer than the wait below.
    let configure = |s: &mut Settings| {
        use_simulator(s, &sim);
        s.delivery.concurrency = 1;
        s.delivery.shutdown_grace = Duration::from_millis(300);
    };
    let app = polling_the_simulator(&receiver, configure).await;
    let arrived = webhook_ids(&receiver).len();
    add_messages(&sim.handle, 20);
    wait_until("the burst starts arriving", || async {
        webhook_ids(&receiver).len() > arrived
    })
    .await;

    let app = app
        .stop()
        .await
        .restart()
        .configure(configure)
        .spawn()
        .await;

    assert_every_message_arrives_once(&receiver, &sim.base_url, app).await;
}
